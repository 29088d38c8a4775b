"""Speed, measured: this project against the reference design, same machine, same run.

The measuring steps behind ``experiments/benchmark.py``::

    python experiments/benchmark.py               # CPU, quick profile (minutes)
    python experiments/benchmark.py --device 0    # GPU, full profile (paper sizes)

For each network (B-LeNet, B-AlexNet, B-ResNet-110) it measures:

1. Joint training step (ms per step, peak GPU memory) of the shared-trunk
   trainer against the reference's per-exit trunk copies with parameter
   copying and gradient adding (:class:`branchynet.paper.reference.ReferenceTrainer`),
   from the same weights on the same batch; and checks that both make the
   same update (:func:`one_step_each`). Peak memory is measured for each
   design alone, built and stepped under a CuPy memory hook.
2. Threshold sweep wall time for the full grid: one pass of the test set
   through every exit plus exact scoring of every combination, against the
   reference protocol (a batch-1 run of the test set per combination), which
   is timed on a subset and extrapolated linearly (said so in the output);
   accuracy and exit shares are checked equal on that subset. Both run
   untimed on a few samples first, so that first-use work (kernel
   compilation on a GPU) stays out of the clock.
3. Batch-1 latency per sample at "knee" thresholds and for the baseline:
   ``predict_sample`` against the reference's inference algorithm
   (:func:`branchynet.paper.reference.reference_predict`), both timed whole and
   synchronised.
4. Batched early exit at batch 256: samples/s of ``predict`` (only remaining
   samples continue) against the full main network, next to the ideal
   speed-up implied by the exit shares and per-stage multiply-adds.

Weights (the networks' own initialisation) and inputs are random: the
timings depend on the exit shares, not on what was learned, so the "knee"
thresholds are set to give the exit shares of the paper's Table I (the
protocol registry's ``paper.exit_shares``) on the latency samples.
Networks, training batch sizes and threshold lists are the protocols'
(:mod:`branchynet.paper.protocols`).

:func:`run` writes ``benchmark_<device>.json`` and ``.md``. Medians and
spreads are over repeats; warm-up runs are discarded; GPU work is
synchronised.

It is longer than 500 lines because the four measurements share one setup
(the same weights, batch, timer and profile) and one report; each
measurement is its own function, and apart they would repeat that setup.
"""
import time

import chainer
import numpy
from chainer.backends import cuda

from branchynet import exit_rule, loss, sweep, timing
from branchynet.costs import ideal_speedup, multiply_adds, path_costs  # noqa
from branchynet.data import synthetic
from branchynet.paper import protocols
from branchynet.paper.reference import ReferenceTrainer, reference_predict
from branchynet.utils import environment
from branchynet.utils import markdown as md
from branchynet.utils.ownership import OutputFolder

NETWORKS = tuple(protocols.PROTOCOLS)

# quick: fits in minutes on a 2-core CPU; full: the paper's sizes.
PROFILES = {
    'quick': dict(train_batch={'b_lenet': 128, 'b_alexnet': 32,
                               'b_resnet110': 8},
                  train_steps=2, train_warmup=1, test_size=500,
                  reference_sweep_samples={'b_lenet': 10, 'b_alexnet': 4,
                                           'b_resnet110': 1},
                  latency_samples=40, repeats=3, warmup=5, batched_size=256,
                  batched_repeats=2),
    # smoke: the CPU test that the benchmark runs end to end (seconds)
    'smoke': dict(train_batch={'b_lenet': 8, 'b_alexnet': 4,
                               'b_resnet110': 2},
                  train_steps=1, train_warmup=0, test_size=12,
                  reference_sweep_samples={'b_lenet': 1, 'b_alexnet': 1,
                                           'b_resnet110': 1},
                  latency_samples=3, repeats=1, warmup=1, batched_size=8,
                  batched_repeats=1),
    'full': dict(train_batch=None, train_steps=10, train_warmup=3,
                 test_size=10000,
                 reference_sweep_samples={'b_lenet': 200, 'b_alexnet': 100,
                                          'b_resnet110': 20},
                 latency_samples=500, repeats=5, warmup=20, batched_size=256,
                 batched_repeats=20),
}


# --- helpers -----------------------------------------------------------------

def timed(functions, device, repeats, warmup=1):
    """Median/min/max ms of each ``function()``, called in turns.

    Each function first runs ``warmup`` times untimed; then each repeat
    calls every function once, one after the other, so that the machine's
    slow spells fall on all of them alike.
    """
    for function in functions:
        for _ in range(warmup):
            function()
    return timing.time_in_turns([lambda _, f=f: f() for f in functions],
                                [None], device, repeats, warmup=0)


class PeakCounter:
    """Bytes taken from CuPy's memory pool, and their peak, since start.

    The bookkeeping of :func:`peak_memory_mb`'s memory hook: CuPy calls
    ``malloc_postprocess`` when the pool hands out a block and
    ``free_postprocess`` when it takes one back.
    """
    name = 'PeakCounter'

    def __init__(self):
        self.in_use = 0
        self.peak = 0

    def malloc_postprocess(self, **kwargs):
        self.in_use += kwargs['mem_size']
        self.peak = max(self.peak, self.in_use)

    def free_postprocess(self, **kwargs):
        self.in_use -= kwargs['mem_size']


def peak_memory_mb(build_and_run, device):
    """Peak GPU memory (MB) of what ``build_and_run()`` allocates, alone.

    Only blocks taken from CuPy's pool while ``build_and_run`` runs count,
    so a design built inside it is measured with its parameters, optimizer
    state and activations, and nothing that other designs hold. ``None``
    on the CPU.
    """
    if device.xp is numpy:
        return None
    hook_class = type('PeakMemoryHook',
                      (PeakCounter, cuda.cupy.cuda.MemoryHook), {})
    hook = hook_class()
    timing.synchronize(device)
    with hook:
        build_and_run()
        timing.synchronize(device)
    return hook.peak / 2 ** 20


# --- 1. training step --------------------------------------------------------

def updates_agree(net_before, net_after, reference, gradients, alpha):
    """Did both designs make the same update from the same state?

    Adam's first step is ``alpha * g / (|g| + eps)``: about ``alpha`` times
    the sign of ``g``, whatever its size. Where a gradient is zero up to
    rounding (a conv bias followed by BatchNorm has a mathematically zero
    gradient), that quotient is rounding noise in any implementation. Such
    elements (|g| below 1e-6 of the largest gradient, or the two designs'
    gradients differing by more than 1 % of |g|) are only checked to have
    moved by at most ``alpha``; all others must agree to float tolerance.
    The gradients themselves must agree to 1e-5 of the largest gradient
    everywhere, which is what catches a real difference.
    """
    ours = dict(net_after.namedparams())
    theirs = {}
    for k, stage in enumerate(reference.trunk()):
        theirs.update({'/trunk/{}{}'.format(k, n): p
                       for n, p in stage.namedparams()})
    for k, head in enumerate(reference.heads()):
        theirs.update({'/heads/{}{}'.format(k, n): p
                       for n, p in head.namedparams()})
    before = {n: cuda.to_cpu(p.array) for n, p in net_before.namedparams()}
    scale = max(float(numpy.abs(cuda.to_cpu(g)).max()) for g in
                gradients.values())
    worst_param, worst_grad, noise_floor_elements = 0.0, 0.0, 0
    for name, param in ours.items():
        mine, other = cuda.to_cpu(param.array), cuda.to_cpu(theirs[name].array)
        grad = cuda.to_cpu(gradients[name])
        other_grad = cuda.to_cpu(theirs[name].grad)
        worst_grad = max(worst_grad, float(numpy.abs(grad - other_grad).max())
                         / scale)
        noisy = ((numpy.abs(grad) < 1e-6 * scale) |
                 (numpy.abs(grad - other_grad) > 1e-2 * numpy.abs(grad)))
        noise_floor_elements += int(noisy.sum())
        step = numpy.abs(numpy.stack([mine, other]) - before[name])
        if (step[:, noisy] > alpha * (1 + 1e-3)).any():
            worst_param = float('inf')
        diff = numpy.abs(mine - other)[~noisy]
        if diff.size:
            worst_param = max(worst_param, float(
                (diff / (1e-5 * numpy.abs(other[~noisy]) + 1e-6)).max()))
    return {'same_update': worst_param <= 1 and worst_grad <= 1e-5,
            'max_param_error_in_tolerances': worst_param,
            'max_gradient_error_relative': worst_grad,
            'noise_floor_elements': noise_floor_elements}


def one_step_each(net, reference, x, t, seed=0, alpha=0.001):
    """One Adam step of both designs from the state they share.

    Both draw the same dropout masks (the generator is re-seeded before
    each). ``net`` and ``reference`` are updated in place.

    Returns:
        What :func:`updates_agree` says about the two updates.
    """
    start = net.copy(mode='copy')
    optimizer = chainer.optimizers.Adam(alpha=alpha)
    optimizer.setup(net)
    net.device.xp.random.seed(seed)
    net.cleargrads()
    loss.BranchyLoss(net)(x, t).backward()
    gradients = {n: p.grad.copy() for n, p in net.namedparams()}
    optimizer.update()
    net.device.xp.random.seed(seed)
    reference.step(x, t)
    return updates_agree(start, net, reference, gradients, optimizer.alpha)


def bench_training(protocol, batchsize, device, steps, warmup, seed=0):
    """Training-step time of both designs, their peak memory and agreement."""
    numpy.random.seed(seed)
    initial = protocol.network()
    x, t = synthetic.random_batch(initial.input_shape, batchsize, seed)
    x, t = device.send(x), device.send(t)

    def build():
        net = initial.copy(mode='copy')
        net.to_device(device)
        reference = ReferenceTrainer(net)
        optimizer = chainer.optimizers.Adam()
        optimizer.setup(net)
        return net, reference, optimizer

    net, reference, _ = build()
    agreement = one_step_each(net, reference, x, t, seed)
    net, reference, optimizer = build()

    policy = loss.BranchyLoss(net)

    def ours():
        optimizer.update(policy, x, t)

    def theirs():
        reference.step(x, t)

    ours_ms, reference_ms = timed([ours, theirs], device, steps, warmup)

    def ours_alone():
        n, _, o = build()
        for _ in range(2):
            o.update(loss.BranchyLoss(n), x, t)

    def theirs_alone():
        _, r, _ = build()
        for _ in range(2):
            r.step(x, t)

    return {
        'batchsize': batchsize,
        'ours_ms': ours_ms,
        'reference_ms': reference_ms,
        'ours_peak_mb': peak_memory_mb(ours_alone, device),
        'reference_peak_mb': peak_memory_mb(theirs_alone, device),
        'agreement': agreement,
    }


# --- 2. threshold sweep ------------------------------------------------------

def bench_sweep(net, x, t, threshold_list, reference_samples):
    """Full-grid sweep time: ours against the reference protocol (see above)."""
    device = net.device
    grid = sweep.threshold_grid(threshold_list, net.num_exits)

    def ours(x=x, t=t):
        outputs = sweep.exit_outputs(net, x, t)
        return outputs, [sweep.evaluate(outputs, combo) for combo in grid]

    # first use (kernel compilation, test-mode BatchNorm) outside the clock
    ours(x[:2], t[:2])
    reference_predict(net, x[:1], grid[0])
    timing.synchronize(device)
    start = time.perf_counter()
    outputs, points = ours()
    ours_s = time.perf_counter() - start

    subset = x[:reference_samples]
    start = time.perf_counter()
    reference_points = []
    for combo in grid:
        results = [reference_predict(net, subset[i:i + 1], combo)
                   for i in range(len(subset))]
        labels = numpy.array([label for label, _ in results])
        exits = numpy.array([e for _, e in results])
        reference_points.append({
            'accuracy': float((labels == t[:len(subset)]).mean()),
            'exit_shares': (numpy.bincount(exits, minlength=net.num_exits)
                               / len(subset)).tolist()})
    reference_subset_s = time.perf_counter() - start
    ours_on_subset = [sweep.evaluate(outputs.subset(len(subset)), combo)
                      for combo in grid]
    identical = all(a['accuracy'] == b['accuracy'] and
                    a['exit_shares'] == b['exit_shares']
                    for a, b in zip(ours_on_subset, reference_points))
    reference_s = reference_subset_s * len(x) / len(subset)
    return {
        'combinations': len(grid), 'test_samples': len(x),
        'ours_s': ours_s,
        'reference_s_extrapolated': reference_s,
        'reference_measured_on_samples': len(subset),
        'reference_measured_s': reference_subset_s,
        'speedup': reference_s / ours_s,
        'identical_on_measured_subset': identical,
        'mean_exit_shares': numpy.mean(
            [p['exit_shares'] for p in points], axis=0).tolist(),
    }


# --- 3. batch-1 latency ------------------------------------------------------

def bench_latency(net, samples, thresholds, repeats, warmup):
    """Batch-1 latency of ours, the reference algorithm and the baseline."""
    device = net.device
    labels_ours = [net.predict_sample(s, thresholds) for s in samples]
    labels_ref = [reference_predict(net, s, thresholds) for s in samples]
    exits = numpy.array([e for _, e in labels_ours])
    baseline_ms, ours_ms, reference_ms = timing.time_in_turns(
        [timing.baseline_classifier(net),
         lambda s: net.predict_sample(s, thresholds),
         lambda s: reference_predict(net, s, thresholds)],
        samples, device, repeats, warmup)
    return {
        'thresholds': thresholds,
        'exit_shares': (numpy.bincount(exits, minlength=net.num_exits) /
                        len(samples)).tolist(),
        'same_predictions': labels_ours == labels_ref,
        'baseline_ms': baseline_ms,
        'ours_ms': ours_ms,
        'reference_ms': reference_ms,
    }


# --- 4. batched early exit ---------------------------------------------------

def bench_batched(net, x, thresholds, repeats):
    """Batched early exit against the full network, beside the ideal gain."""
    device = net.device
    x = device.send(x)

    def full():
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            cuda.to_cpu(net.main_forward(x).array.argmax(axis=1))

    def early():
        net.predict(x, thresholds=thresholds)

    full_ms, early_ms = (t['median_ms']
                         for t in timed([full, early], device, repeats))
    _, exits = net.predict(x, thresholds=thresholds)
    shares = numpy.bincount(exits, minlength=net.num_exits) / len(x)
    stages, heads = multiply_adds(net)
    ideal = ideal_speedup(stages, heads, shares)
    measured = full_ms / early_ms
    return {
        'batch': len(x), 'exit_shares': shares.tolist(),
        'full_samples_per_s': len(x) / full_ms * 1000,
        'early_exit_samples_per_s': len(x) / early_ms * 1000,
        'measured_speedup': measured, 'ideal_speedup': ideal,
        'fraction_of_ideal': measured / ideal,
        'multiply_adds': {'stages': stages, 'heads': heads},
    }


# --- the run -------------------------------------------------------------------

def run_network(key, profile, device, say):
    """Every measurement of one network (a protocol key) with a profile."""
    protocol = protocols.get(key)
    shares = protocol.paper.exit_shares
    batchsize = (profile['train_batch'] or {}).get(key, protocol.batchsize)
    say('{}: training step at batch {}'.format(key, batchsize))
    result = {'training': bench_training(protocol, batchsize, device,
                                         profile['train_steps'],
                                         profile['train_warmup'])}
    numpy.random.seed(1)
    net = protocol.network()
    net.to_device(device)
    x, t = synthetic.random_batch(net.input_shape,
                                  profile['test_size'], seed=2)
    say('{}: threshold sweep on {} samples'.format(key, len(x)))
    result['sweep'] = bench_sweep(net, x, t, protocol.threshold_list,
                                  profile['reference_sweep_samples'][key])
    samples = timing.as_samples(x[:profile['latency_samples']])
    entropies = sweep.exit_outputs(net, x[:len(samples)], t[:len(samples)]) \
        .entropies
    thresholds = exit_rule.thresholds_for_shares(entropies, shares)
    say('{}: batch-1 latency on {} samples'.format(key, len(samples)))
    result['latency'] = bench_latency(net, samples, thresholds,
                                      profile['repeats'], profile['warmup'])
    batch = x[:profile['batched_size']]
    batch_entropies = sweep.exit_outputs(net, batch, t[:len(batch)]).entropies
    batch_thresholds = exit_rule.thresholds_for_shares(batch_entropies, shares)
    say('{}: batched early exit at batch {}'.format(key, len(batch)))
    result['batched'] = bench_batched(net, batch, batch_thresholds,
                                      profile['batched_repeats'])
    return result


def _table_head(title, columns):
    """Markdown lines opening a section with a table, one row per network."""
    return ['', '## ' + title, ''] + md.table(['network'] + columns)


def markdown(results):
    """The benchmark's results as a Markdown report."""
    device = results['device']
    lines = ['# Benchmark: this project vs the reference design ({})'.format(
        device), '',
        'Machine: {}{}; profile `{}`; {}.'.format(
            results['environment']['cpu'],
            ' / ' + results['environment']['gpu']['name']
            if results['environment']['gpu'] else '',
            results['profile'], results['environment']['date_utc'])]
    lines += _table_head('Joint training step (ms per step; median [min-max])', [
        'batch', 'ours', 'reference design', 'speed-up', 'peak MB ours / ref',
        'same update'])

    def span(s):
        return '{:.3g} [{:.3g}-{:.3g}]'.format(s['median_ms'], s['min_ms'],
                                               s['max_ms'])
    for key, r in results['networks'].items():
        tr = r['training']
        peak = '-' if tr['ours_peak_mb'] is None else '{:.0f} / {:.0f}'.format(
            tr['ours_peak_mb'], tr['reference_peak_mb'])
        lines.append(md.row([
            key, tr['batchsize'], span(tr['ours_ms']), span(tr['reference_ms']),
            '{:.2f}x'.format(tr['reference_ms']['median_ms'] /
                             tr['ours_ms']['median_ms']), peak,
            'yes' if tr['agreement']['same_update'] else 'NO']))
    lines += _table_head('Threshold sweep, full grid (seconds)', [
        'combinations', 'test samples', 'ours',
        'reference protocol (extrapolated from N samples)', 'speed-up',
        'identical'])
    for key, r in results['networks'].items():
        s = r['sweep']
        lines.append(md.row([
            key, s['combinations'], s['test_samples'],
            '{:.3g}'.format(s['ours_s']),
            '{:.4g} (N = {})'.format(s['reference_s_extrapolated'],
                                     s['reference_measured_on_samples']),
            '{:.0f}x'.format(s['speedup']),
            'yes' if s['identical_on_measured_subset'] else 'NO']))
    lines += _table_head('Batch-1 latency (ms per sample; median [min-max])', [
        'exit shares (%)', 'baseline', 'ours (early exit)',
        'reference algorithm', 'speed-up vs reference', 'same predictions'])
    for key, r in results['networks'].items():
        lat = r['latency']
        lines.append(md.row([
            key, ', '.join('{:.1f}'.format(100 * f) for f in lat['exit_shares']),
            span(lat['baseline_ms']), span(lat['ours_ms']),
            span(lat['reference_ms']),
            '{:.2f}x'.format(lat['reference_ms']['median_ms'] /
                             lat['ours_ms']['median_ms']),
            'yes' if lat['same_predictions'] else 'NO']))
    lines += _table_head('Batched early exit (batch 256)', [
        'exit shares (%)', 'full network (samples/s)',
        'early exit (samples/s)', 'measured speed-up', 'ideal (multiply-adds)',
        'fraction of ideal'])
    for key, r in results['networks'].items():
        b = r['batched']
        lines.append(md.row([
            key, ', '.join('{:.1f}'.format(100 * f) for f in b['exit_shares']),
            '{:.0f}'.format(b['full_samples_per_s']),
            '{:.0f}'.format(b['early_exit_samples_per_s']),
            '{:.2f}x'.format(b['measured_speedup']),
            '{:.2f}x'.format(b['ideal_speedup']),
            '{:.2f}'.format(b['fraction_of_ideal'])]))
    lines += ['', 'Random weights and inputs; knee thresholds set to give the '
              'paper\'s Table I exit shares. The reference protocol\'s sweep '
              'time is measured on N samples for every combination and scaled '
              'to the test-set size. Fast path (CUDA graphs): not implemented.',
              '']
    return '\n'.join(lines)


def run(networks, profile_name, device, out, say):
    """Benchmark ``networks`` on ``device``; write JSON and Markdown to ``out``.

    Args:
        networks: protocol keys.
        profile_name: a key of :data:`PROFILES`.
        device: a Chainer device.
        out: folder for ``benchmark_<cpu|gpu>.json`` and ``.md``.
        say: called with progress messages.

    Returns:
        The results dictionary.
    """
    name = 'cpu' if device.xp is numpy else 'gpu'
    profile = PROFILES[profile_name]
    files = report_files(name)
    with OutputFolder.open(out, 'files') as folder:
        folder.check_replaceable(files)  # before minutes of measuring
        results = {'kind': 'benchmark', 'device': name,
                   'profile': profile_name, 'profile_settings': profile,
                   'environment': environment.describe(device),
                   'networks': {}}
        for key in networks:
            results['networks'][key] = run_network(key, profile, device, say)
        folder.write_json(files[0], results)
        folder.write_text(files[1], markdown(results))
    return results


def report_files(device_name):
    """The benchmark's two files for ``'cpu'`` or ``'gpu'``: JSON, Markdown."""
    return ('benchmark_{}.json'.format(device_name),
            'benchmark_{}.md'.format(device_name))


def step_seconds(key, device, batchsize, steps=3):
    """Seconds per main-phase and joint-phase training step, measured.

    Args:
        key: a protocol key (:mod:`branchynet.paper.protocols`).
        device: a Chainer device.
        batchsize: the training batch (random images and labels).
        steps: timed steps per phase, after one untimed step.

    Returns:
        ``{'main': seconds, 'joint': seconds}``.
    """
    numpy.random.seed(0)
    net = protocols.get(key).network()
    net.to_device(device)
    policy = loss.BranchyLoss(net)
    optimizer = chainer.optimizers.Adam()
    optimizer.setup(policy)
    x, t = (device.send(a) for a in synthetic.random_batch(
        net.input_shape, batchsize, seed=0))
    seconds = {}
    for phase, func in (('main', policy.main_loss), ('joint', policy)):
        optimizer.update(func, x, t)  # first use outside the clock
        timing.synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.update(func, x, t)
        timing.synchronize(device)
        seconds[phase] = (time.perf_counter() - start) / steps
    return seconds
