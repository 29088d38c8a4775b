"""The PyTorch port measured against this project: parity, lockstep, speed.

The library half of ``experiments/compare_port.py`` (and of the PyTorch rows
of ``experiments/deploy.py``):

- :func:`parity`: the port's logits and exit decisions, and ONNX Runtime's,
  against a port kit's ``reference.npz``;
- :func:`lockstep`: joint training steps of both from the same weights on
  the same batches, and how far their losses and parameters drift;
- :func:`speed`: batch-1 early exit and the joint training step of both,
  timed in turns (Chainer with its own functions and with
  :mod:`branchynet.kernels`);
- :func:`markdown`: the report.

The port itself is ``experiments/ports/pytorch_branchynet.py``, written from
the port kit and PORTING.md alone (:func:`load_port`).
"""
import importlib.util
import os
import shutil
import tempfile
import time

import chainer
import numpy

from branchynet import timing
from branchynet.data import datasets, synthetic
from branchynet.deploy import port_kit
from branchynet.exit_rule import EntropyThresholds
from branchynet.loss import BranchyLoss
from branchynet.paper import protocols
from branchynet.utils import environment
from branchynet.utils import markdown as md

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))  # the repository
PORT = os.path.join(ROOT, 'experiments', 'ports', 'pytorch_branchynet.py')
LOCKSTEP_NETWORK_SEED = 0


def load_port():
    """The PyTorch port module (experiments/ports/pytorch_branchynet.py)."""
    spec = importlib.util.spec_from_file_location('pytorch_branchynet', PORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parity(kit):
    """The port's and ONNX Runtime's outputs against reference.npz."""
    import torch
    _, manifest, reference, _, net = both_networks(kit)
    net.eval()
    x = torch.from_numpy(reference['x'])
    with torch.no_grad():
        logits = [y.numpy() for y in net(x)]
    result = {'pytorch_logits_error': [
        port_kit.relative_error(y, reference['logits_{}'.format(k + 1)])
        for k, y in enumerate(logits)]}
    decisions = {}
    port = load_port()
    entropies = [reference['entropy_{}'.format(k + 1)]
                 for k in range(len(logits) - 1)]
    for name, thresholds in manifest['threshold_sets'].items():
        if name in port_kit.RULE_ONLY_SETS:  # the port's rule, our entropies
            exits = [next((n for n, e in enumerate(entropies)
                           if port.leaves(e[i], thresholds[n])),
                          len(entropies)) for i in range(len(x))]
            decisions[name] = exits == reference['exits_' + name].tolist()
            continue
        chosen = [net.predict_sample(x[i:i + 1], thresholds)
                  for i in range(len(x))]
        decisions[name] = bool(
            [c[1] for c in chosen] == reference['exits_' + name].tolist() and
            [c[0] for c in chosen] == reference['labels_' + name].tolist())
    result['pytorch_decisions_equal'] = decisions
    import onnxruntime
    onnxruntime.set_default_logger_severity(3)
    session = onnxruntime.InferenceSession(
        os.path.join(kit, 'model.onnx'), providers=['CPUExecutionProvider'])
    outputs = session.run(None, {'x': reference['x']})
    result['onnx_logits_error'] = [
        port_kit.relative_error(y, reference['logits_{}'.format(k + 1)])
        for k, y in enumerate(outputs)]
    return result


def lockstep(kit, steps=50, batch=64, seed=1, data=None, data_name='given'):
    """Both implementations trained side by side from the kit's weights.

    Dropout is switched off in both (B-LeNet has none); every other layer
    trains as in the protocol (BatchNorm in training mode). Each step uses
    the same batch, drawn in a seeded order from ``data`` (``(x, t)``
    arrays, e.g. real MNIST, named by ``data_name``); by default seeded
    uniform noise with random labels. Not the synthetic pattern images: their saturated pixels make
    uniform regions whose convolution outputs are equal in exact arithmetic
    but not in float32, and rounding then decides which element of a
    max-pooling window receives the gradient (PORTING.md).

    Returns:
        Per-step losses of both, the largest relative loss difference, the
        largest parameter difference after the last step (also in units of
        Adam's step size) and the share of parameter elements more than a
        tenth of a step apart.
    """
    import torch
    # one thread: PyTorch's multi-threaded convolutions sum in an order that
    # depends on the CPU; on an AMD EPYC with 2 threads B-LeNet's losses
    # drifted 1.9e-4 apart in 50 steps (the test allows 1e-4), with one
    # thread they stayed within it there, as on the Intel Xeon
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _lockstep(torch, kit, steps, batch, seed, data, data_name)
    finally:
        torch.set_num_threads(threads)


def _lockstep(torch, kit, steps, batch, seed, data, data_name):
    port, manifest, _, net, torch_net = both_networks(kit)
    policy = BranchyLoss(net)
    chainer_adam = chainer.optimizers.Adam()
    chainer_adam.setup(policy)
    for module in torch_net.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    torch_adam = port.ChainerAdam(torch_net.parameters())
    rng = numpy.random.RandomState(seed)
    source = data_name if data is not None else 'seeded uniform noise'
    if data is None:
        data = synthetic.random_batch(net.input_shape, 4096, rng)
    losses = []
    with chainer.using_config('train', True):
        for _ in range(steps):
            pick = rng.choice(len(data[1]), batch, replace=False)
            x, t = data[0][pick], data[1][pick]
            chainer_adam.update(_no_dropout(policy), x, t)
            ours = float(policy.observation_loss)
            torch_adam.zero_grad()
            theirs = torch_net.joint_loss(torch.from_numpy(x),
                                          torch.from_numpy(t.astype(numpy.int64)))
            theirs.backward()
            torch_adam.step()
            losses.append((ours, float(theirs.detach())))
    state = {k: v.detach().numpy() for k, v in torch_net.state_dict().items()}
    mapping = _torch_names(manifest)
    params = port_kit.weights(net)
    differences = numpy.concatenate([
        numpy.abs(params[ours] - state[theirs]).ravel()
        for theirs, ours in mapping.items() if ours in params and
        not ours.endswith(('avg_mean', 'avg_var', '/N'))])
    worst_param = float(differences.max())
    worst_stat = max([port_kit.relative_error(state[theirs], params[ours])
                      for theirs, ours in mapping.items()
                      if ours.endswith(('avg_mean', 'avg_var'))] or [0.0])
    return {'steps': steps, 'batch': batch,
            'data': source,
            'losses': losses,
            'max_loss_relative_difference': max(
                abs(a - b) / abs(a) for a, b in losses),
            'max_parameter_difference': worst_param,
            'in_units_of_alpha': worst_param / chainer_adam.alpha,
            # Adam steps every element by about alpha whatever its gradient's
            # size: where rounding decides a gradient's sign, the two sides
            # step apart by up to 2 alpha. How many elements that touches:
            'share_beyond_tenth_of_alpha': float(
                (differences > 0.1 * chainer_adam.alpha).mean()),
            'parameter_elements': int(differences.size),
            'max_batchnorm_statistic_relative_difference': worst_stat}


def both_networks(kit):
    """The kit's network in both frameworks: ``(port module, manifest,
    reference, Chainer net, PyTorch net)``, the same weights in each."""
    port = load_port()
    manifest, weights, reference = port_kit.read(kit)
    numpy.random.seed(LOCKSTEP_NETWORK_SEED)
    net = protocols.get(manifest['protocol_key']).network()
    chainer.serializers.NpzDeserializer(weights).load(net)
    return port, manifest, reference, net, port.BranchyNetPort(manifest,
                                                               weights)


def _no_dropout(policy):
    """The joint loss with every dropout ratio at 0, recording the loss value."""
    def loss(x, t):
        layers = [layer for stage in list(policy.net.trunk) +
                  list(policy.net.heads) for layer in stage.layers()
                  if getattr(layer, 'name', None) == 'dropout']
        saved = [layer.kwargs['ratio'] for layer in layers]
        for layer in layers:
            layer.kwargs['ratio'] = 0.0
        try:
            value = policy(x, t)
        finally:
            for layer, ratio in zip(layers, saved):
                layer.kwargs['ratio'] = ratio
        policy.observation_loss = value.array
        return value
    return loss


def _torch_names(manifest):
    """PyTorch state_dict names -> weights.npz names, from the manifest."""
    mapping = {}

    def visit(spec, prefix):
        kind = spec['type']
        if kind == 'conv2d':
            mapping[prefix + 'weight'] = spec['weight']
            if spec['bias']:
                mapping[prefix + 'bias'] = spec['bias']
        elif kind == 'linear':
            mapping[prefix + '1.weight'] = spec['weight']
            if spec['bias']:
                mapping[prefix + '1.bias'] = spec['bias']
        elif kind == 'batch_norm':
            mapping.update({prefix + 'weight': spec['gamma'],
                            prefix + 'bias': spec['beta'],
                            prefix + 'running_mean': spec['mean'],
                            prefix + 'running_var': spec['var']})
        elif kind == 'res_block':
            for name, sub in zip(('conv1', 'bn1', 'conv2', 'bn2'),
                                 spec['layers']):
                visit(sub, prefix + name + '.')

    for part in ('trunk', 'heads'):
        for n, layers in enumerate(manifest['layers'][part]):
            for i, spec in enumerate(layers):
                visit(spec, '{}.{}.{}.'.format(part, n, i))
    return mapping


def speed(kit, train_batch, repeats=5, latency_samples=50):
    """Batch-1 early-exit latency and joint training step, both frameworks, in turns."""
    import torch
    port, manifest, _, net, torch_net = both_networks(kit)
    torch_net.eval()
    thresholds = manifest['threshold_sets']['split']
    rule = EntropyThresholds(thresholds, net.num_exits)
    rng = numpy.random.RandomState(3)
    samples = [rng.rand(1, *net.input_shape).astype(numpy.float32)
               for _ in range(latency_samples)]
    cpu = chainer.get_device('@numpy')

    def on(kernels, function):
        def run(argument):
            with chainer.using_config('branchynet_kernels', kernels):
                return function(argument)
        return run
    latency = timing.time_in_turns(
        [on('stock', lambda s: net.predict_sample(s, rule)),
         on('fast', lambda s: net.predict_sample(s, rule)),
         lambda s: torch_net.predict_sample(torch.from_numpy(s), thresholds)],
        samples, cpu, repeats, warmup=5)
    x, t = synthetic.random_batch(net.input_shape, train_batch, rng)
    policy = BranchyLoss(net)
    adam = chainer.optimizers.Adam()
    adam.setup(policy)
    torch_net.train()
    torch_adam = port.ChainerAdam(torch_net.parameters())
    tx, tt = torch.from_numpy(x), torch.from_numpy(t.astype(numpy.int64))

    def torch_step():
        torch_adam.zero_grad()
        torch_net.joint_loss(tx, tt).backward()
        torch_adam.step()

    steps = timing.time_in_turns(
        [on('stock', lambda _: adam.update(policy, x, t)),
         on('fast', lambda _: adam.update(policy, x, t)),
         lambda _: torch_step()], [None], cpu, repeats, warmup=1)
    return {'latency_ms': {'chainer': latency[0], 'chainer_fast': latency[1],
                           'pytorch': latency[2]},
            'latency_thresholds': thresholds,
            'train_step_ms': {'chainer': steps[0], 'chainer_fast': steps[1],
                              'pytorch': steps[2]},
            'train_batch': train_batch, 'torch_threads': torch.get_num_threads()}


# What ``--kernels fast`` replaced when a comparison was made (recorded in
# its JSON; reports from before the fused BatchNorm say what they measured).
FAST_KERNELS = ('convolution and max pooling of branchynet/kernels.py, '
                'training-mode BatchNorm (with the ReLU and residual addition '
                'after it) of branchynet/batch_norm.py')
_FAST_KERNELS_BEFORE = 'convolution and max pooling of branchynet/kernels.py'


def markdown(results):
    lines = ['# The PyTorch port against this project ({})'.format(
        results['environment']['cpu']), '',
        'PyTorch {}, Chainer {}, {} threads; {}.'.format(
            results['torch'], results['environment']['chainer'],
            results['torch_threads'], results['environment']['date_utc']),
        '', '## Parity (max error relative to the largest logit)', '']
    lines += md.table(['network', 'PyTorch, per exit', 'ONNX Runtime, per exit',
                       'PyTorch exit decisions equal'])
    for key, r in results['networks'].items():
        p = r['parity']
        lines.append(md.row([
            key, ', '.join('{:.1e}'.format(e)
                           for e in p['pytorch_logits_error']),
            ', '.join('{:.1e}'.format(e) for e in p['onnx_logits_error']),
            ', '.join('{}: {}'.format(k, 'yes' if v else 'NO')
                      for k, v in p['pytorch_decisions_equal'].items())]))
    lines += ['', '## Lockstep training (joint steps, same weights and batches)',
              ''] + md.table([
                  'network', 'data', 'steps x batch', 'loss difference '
                  '(relative): first step, max', 'max parameter difference '
                  '(in units of alpha)', 'parameters more than alpha/10 apart',
                  'BatchNorm statistics (relative)'])
    for key, r in results['networks'].items():
        s = r.get('lockstep')
        if s:
            first = abs(s['losses'][0][0] - s['losses'][0][1]) / abs(
                s['losses'][0][0])
            lines.append(md.row([
                key, s['data'], '{} x {}'.format(s['steps'], s['batch']),
                '{:.1e}, {:.1e}'.format(first,
                                        s['max_loss_relative_difference']),
                '{:.2e} ({:.2g})'.format(s['max_parameter_difference'],
                                         s['in_units_of_alpha']),
                '{:.2g} % of {}'.format(100 * s['share_beyond_tenth_of_alpha'],
                                        s['parameter_elements']),
                '{:.1e}'.format(
                    s['max_batchnorm_statistic_relative_difference'])]))
    lines += ['', 'Adam moves every parameter element by about alpha per step '
              'whatever the size of its gradient. Where a gradient is zero in '
              'exact arithmetic or nearly so (a max-pooling tie between equal '
              'inputs, a convolution bias before BatchNorm, noise inputs with '
              'random labels), float32 rounding decides its sign, and the two '
              'implementations step apart by up to 2 alpha per step on those '
              'elements; the divergence then grows. PORTING.md, "Lockstep '
              'training", says how to read these figures.']
    lines += ['', '## Speed on this CPU (median ms, timed in turns)', '',
              'Chainer stock: its own functions (`--kernels stock`); fast: '
              '{} (`--kernels fast`, the default).'.format(results.get(
                  'fast_kernels', _FAST_KERNELS_BEFORE)), ''] + md.table([
                  'network', 'batch-1 early exit: Chainer stock', 'fast',
                  'PyTorch', 'joint training step (batch): Chainer stock',
                  'fast', 'PyTorch', 'stock / fast', 'fast / PyTorch'])
    for key, r in results['networks'].items():
        v = r['speed']
        lat = {k: m['median_ms'] for k, m in v['latency_ms'].items()}
        step = {k: m['median_ms'] for k, m in v['train_step_ms'].items()}
        fast = step.get('chainer_fast', step['chainer'])
        lines.append(md.row([
            key, '{:.3g}'.format(lat['chainer']),
            '{:.3g}'.format(lat['chainer_fast'])
            if 'chainer_fast' in lat else '-',
            '{:.3g}'.format(lat['pytorch']),
            '{:.4g} ({})'.format(step['chainer'], v['train_batch']),
            '{:.4g}'.format(fast) if 'chainer_fast' in step else '-',
            '{:.4g}'.format(step['pytorch']),
            '{:.2f}x'.format(step['chainer'] / fast)
            if 'chainer_fast' in step else '-',
            '{:.1f}x'.format(fast / step['pytorch'])]))
    return '\n'.join(lines) + '\n'


def run(networks, kit=None, data_dir=None, lockstep_steps=50,
        lockstep_batch=64, train_batch=None, repeats=5, say=print):
    """Every comparison of ``experiments/compare_port.py``: the report's
    dict. ``kit``: an existing kit of the one network in ``networks``
    (``None``: seeded kits exported to a scratch folder); ``data_dir``:
    real MNIST for B-LeNet's kit and lockstep batches."""
    import torch
    results = {'kind': 'port-comparison', 'torch': torch.__version__,
               'fast_kernels': FAST_KERNELS,
               'torch_threads': torch.get_num_threads(),
               'environment': environment.describe(), 'networks': {}}
    scratch = tempfile.mkdtemp(prefix='branchynet-kits-')
    try:
        for key in networks:
            results['networks'][key] = compare_network(
                key, kit or os.path.join(scratch, key), kit is not None,
                data_dir, lockstep_steps, lockstep_batch, train_batch,
                repeats, say)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # made above, scratch
    return results


def compare_network(key, kit, given, data_dir, lockstep_steps,
                    lockstep_batch, train_batch, repeats, say):
    """Parity, lockstep training and speed of one network's port."""
    mnist = data_dir if protocols.get(key).dataset == 'mnist' else None
    if not given:
        say('[compare_port] {}: exporting a seeded kit to {}'.format(key,
                                                                     kit))
        port_kit.export(key, kit, data_dir=mnist)
    start = time.perf_counter()
    entry = {'kit': kit if given else 'seeded initial weights (seed 0)',
             'kit_files': port_kit.read(kit)[0]['files'],
             'parity': parity(kit)}
    # ResNet-110 trains slowly on a CPU: fewer, smaller steps
    steps, lock_batch = ((lockstep_steps, lockstep_batch)
                         if key != 'b_resnet110' else
                         (min(lockstep_steps, 10), 16))
    say('[compare_port] {}: lockstep training, {} steps at batch {}'.format(
        key, steps, lock_batch))
    data = None
    if mnist is not None:
        train = datasets.load_mnist(mnist, train_size=4096, test_size=1)
        data = (train.train_x, train.train_t)
    entry['lockstep'] = lockstep(kit, steps, lock_batch, data=data,
                                 data_name='real MNIST')
    batch = train_batch or protocols.get(key).batchsize
    say('[compare_port] {}: speed at batch 1 and {}'.format(key, batch))
    entry['speed'] = speed(kit, batch, repeats)
    entry['seconds'] = time.perf_counter() - start
    return entry
