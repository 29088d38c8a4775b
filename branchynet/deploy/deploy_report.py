"""What ``experiments/deploy.py measure`` does: every network exported to
ONNX, its deployed early exit checked against Chainer's predict at every
threshold of the sweep and timed against the deployed main path, Chainer
and the PyTorch port (if installed), batch 1 and batched, one thread each,
in turns; the report is ``deploy.json`` and ``deploy.md``. And what
``experiments/deploy.py runtimes`` does: a run's deployed models timed in
every ONNX runtime of :mod:`branchynet.deploy.runtimes`
(:func:`runtime_latency`).

A network is deployed with a run's trained models (``--run``) on that run's
test images, at the paper's thresholds or at the run's knee (``--at``), or
with seeded initial weights on noise, with thresholds that give the
paper's exit shares. The model's contract: :mod:`branchynet.deploy`
and PORTING.md; the checks: :mod:`branchynet.deploy.deploy_check`.
"""
import dataclasses
import functools
import itertools
import math
import os
import tempfile

from branchynet import deploy, timing
from branchynet.data import synthetic
from branchynet.deploy import deploy_check, port_compare, port_kit, runtimes
from branchynet.exit_rule import EntropyThresholds
from branchynet.paper import protocols
from branchynet.runs import pipeline, reading, report, run_folder
from branchynet.serialization import load_model
from branchynet.utils import environment
from branchynet.utils import markdown as md
from branchynet.utils.errors import UserError
from branchynet.utils.ownership import OutputFolder

REPORT = ('deploy.json', 'deploy.md')
RUNTIMES_REPORT = ('runtimes.json', 'runtimes.md')


def model_file(key, kind):
    return '{}_{}.onnx'.format(key, kind)


def trained(run_dir):
    """The protocol key and jointly trained network of a run folder."""
    stored = run_folder.stored_config(run_dir)
    if stored is None:
        raise UserError('{} holds no run (no run.json)'.format(run_dir))
    net = load_model(run_folder.RunFolder(run_dir).model('joint'),
                     protocols.get(stored.protocol).network())
    return stored, net


def test_images(key, config, data_dir, size, seed=0, official=True):
    """``(images, labels, source)``: the first ``size`` test images of the
    run ``config`` describes, read from ``data_dir`` and preprocessed as
    that run's were (for CIFAR-10 its preprocessing, with the ZCA fitted on
    its own training images); seeded noise (labels ``None``) without a run
    or without ``data_dir``."""
    if config is None or data_dir is None:
        x, _ = synthetic.random_batch(protocols.get(key).input_shape, size,
                                      seed)
        return x, None, 'uniform noise, seed {}'.format(seed)
    data = pipeline.load_data(protocols.get(key), config.replace(
        data_dir=data_dir, test_size=size, unofficial_data=not official))
    return data.test_x, data.test_t, data.info['test']


def port_functions(key, net, thresholds, scratch):
    """The PyTorch port's early exit and main path, or none without PyTorch."""
    try:
        import torch
    except ImportError:
        return [], None
    torch.set_num_threads(1)
    kit = os.path.join(scratch, key)
    port_kit.export(key, kit)
    port = port_compare.load_port()
    manifest, weights, _ = port_kit.read(kit)
    torch_net = port.BranchyNetPort(manifest, port_kit.weights(net))
    torch_net.eval()

    @torch.no_grad()
    def main_path(sample):
        h = torch.from_numpy(sample)
        for stage in torch_net.trunk:
            h = stage(h)
        return int(torch_net.heads[-1](h)[0].argmax())
    return [('pytorch_predict_sample', lambda s: torch_net.predict_sample(
        torch.from_numpy(s), thresholds)),
        ('pytorch_main_path', main_path)], torch.__version__


@dataclasses.dataclass(frozen=True)
class Measurement:
    """What ``experiments/deploy.py measure`` measures (its flags'
    defaults are these).

    Attributes:
        out: the report's folder.
        runs: run folders whose trained models to deploy (one per network);
            the other networks get seeded weights.
        networks: the networks measured (``None``: all).
        at: ``'paper'`` (the paper's thresholds) or ``'knee'`` (each run's
            knee from its results.json).
        data_dir, official: the runs' test images (``None``: noise).
        test_size: test images of a run (its parity check and accuracy).
        parity_sizes: ``(network, n)`` pairs: that network's parity check
            on its first ``n`` test images only (every threshold vector runs
            the deployed model again); the others check all of them.
        noise_size: noise images of a network without a run.
        timing_samples: images timed at batch size 1.
        repeats: timed passes (the median is reported).
        batch: the batched comparison's batch size.
        keep_models: keep the measured ONNX models in ``out``.
    """
    out: str
    runs: tuple = ()
    networks: tuple = None
    at: str = 'paper'
    data_dir: str = None
    official: bool = True
    test_size: int = 10000
    parity_sizes: tuple = ()
    noise_size: int = 256
    timing_samples: int = 500
    repeats: int = 3
    batch: int = 256
    keep_models: bool = False


def measure_network(key, args, run_dir, at, folder, scratch, say):
    """One network's entry of the report: ``run_dir`` its run (or
    ``None``: seeded weights), ``at`` that run's
    :func:`run_thresholds`."""
    stored, net = trained(run_dir) if run_dir else (None, None)
    if net is None:
        net = deploy_check.seeded_network(key)
    data_dir = args.data_dir if run_dir else None
    x, t, source = test_images(key, stored, data_dir,
                               args.test_size if run_dir else args.noise_size,
                               official=args.official)
    weights = 'trained: ' + run_dir if run_dir else \
        'initial, numpy.random.seed(0)' + (
            ', BatchNorm calibrated on noise'
            if deploy_check.has_batchnorm(net) else '')
    say('{}: exporting ({})'.format(key, weights))
    paths = {}
    for kind, write in (('early_exit', deploy.export),
                        ('main_path', deploy.export_main_path)):
        # the models measured are scratch files unless --keep-models
        if args.keep_models:
            with folder.open_file(model_file(key, kind)) as f:
                write(net, f, x[:2])
            paths[kind] = folder.file(model_file(key, kind))
        else:
            paths[kind] = os.path.join(scratch, model_file(key, kind))
            with open(paths[kind], 'wb') as f:
                write(net, f, x[:2])
    early = deploy.EarlyExitSession(paths['early_exit'])
    main = deploy.EarlyExitSession(paths['main_path'])
    protocol = protocols.get(key)
    vectors = [list(v) for v in itertools.product(
        protocol.threshold_list, repeat=net.num_exits - 1)]
    checked_x = x[:dict(args.parity_sizes).get(key, len(x))]
    say('{}: parity on {} images at {} threshold vectors'.format(
        key, len(checked_x), len(vectors)))
    checked = deploy_check.parity(net, early, checked_x, vectors)
    if run_dir:
        thresholds, chosen, selected_on = at
    else:
        thresholds = deploy_check.shares_thresholds(
            net, x[:args.timing_samples], protocols.get(key).paper.exit_shares)
        chosen = 'thresholds giving the paper\'s exit shares on these images'
    samples = timing.as_samples(x[:args.timing_samples])
    extra, torch_version = port_functions(key, net, thresholds, scratch)
    say('{}: timing {} samples, {} repeats'.format(key, len(samples),
                                                   args.repeats))
    timed = deploy_check.time_deployed(
        net, early, main, samples, thresholds, args.repeats, extra=extra,
        batch=x[:args.batch])
    result = {'weights': weights, 'images': source,
            'thresholds_chosen': chosen, 'parity': summarize(checked),
              'parity_detail': checked, 'timing': timed,
              'torch': torch_version}
    if run_dir:
        result['thresholds_rule'] = args.at
        if selected_on:
            result['thresholds_selected_on'] = selected_on
    if t is not None:
        result['test'] = deploy_check.test_accuracy(early, main, x, t,
                                                    thresholds)
        result['schedule'] = run_schedule(run_dir)
    return result


def run_thresholds(run_dir, protocol, at):
    """``(thresholds, description, selected_on)``: the thresholds a run's
    early exit is deployed at, the paper's (``at='paper'``; selected on
    ``None``) or the run's knee (``'knee'``) as its ``results.json``
    records it from the CPU timing (the B row of its Table I), selected on
    the split that file names (``'test'`` or ``'validation'``)."""
    if at == 'paper':
        return list(protocol.paper.thresholds), 'the paper\'s thresholds', \
            None
    path = run_folder.RunFolder(run_dir).file(run_folder.RESULTS)
    if not os.path.isfile(path):
        raise UserError('--at knee: {} has no results.json to take the knee '
                        'from'.format(run_dir))
    results = reading.read_results(path)
    if results['protocol'] != protocol.key:
        raise UserError('--at knee: {} holds a {} run\'s results, not the '
                        '{} run of its folder'.format(path,
                                                      results['protocol'],
                                                      protocol.key))
    timed = results['timing'].get('cpu')
    if not timed or not timed.get('knee'):
        raise UserError('--at knee: {} records no CPU knee (a run with '
                        '--skip-timing has none); use --at paper'.format(path))
    knee = timed['knee'].get('thresholds') if isinstance(
        timed['knee'], dict) else None
    try:
        EntropyThresholds(knee, protocol.num_exits)
        if not all(math.isfinite(t) for t in knee):
            raise ValueError('not finite')
    except (TypeError, ValueError) as e:
        raise UserError('--at knee: {}: the knee\'s thresholds {!r} are not '
                        '{} finite non-negative numbers ({})'.format(
                            path, knee, protocol.num_exits - 1, e)) from None
    on = next(s['selected_on'] for s in report.selections(timed)
              if s['rule'] == 'knee')
    return list(knee), \
        'the run\'s knee, chosen on its {} images ({})'.format(on, path), on


def run_schedule(run_dir):
    """The training schedule of a run, as Table I states it."""
    results = run_folder.RunFolder(run_dir).file(run_folder.RESULTS)
    if not os.path.isfile(results):
        return 'unknown (no results.json in {})'.format(run_dir)
    return report.schedule(reading.read_results(results))


def summarize(checked):
    return {'vectors': len(checked), 'samples': checked[0]['samples'],
            'label_differences': sum(c['label_differences'] for c in checked),
            'exit_differences': sum(c['exit_differences'] for c in checked),
            'within_rounding': sum(len(c['within_rounding']) for c in checked),
            'unexplained': sum(len(c['unexplained']) for c in checked)}


def markdown(results):
    import onnxruntime
    lines = ['# Early exit deployed: ONNX Runtime {} on {}'.format(
        onnxruntime.__version__, results['environment']['cpu']), '',
        'One thread each (ONNX Runtime intra-op 1, PyTorch 1, '
        'OPENBLAS_NUM_THREADS={} for Chainer); ms per sample, medians, '
        'timed in turns; {}.'.format(results['openblas_threads'],
                                     results['environment']['date_utc']), '']
    lines += md.table([
        'network', 'weights', 'deployed early exit', 'deployed main path',
        'deployed gain', 'ideal gain (multiply-adds)', 'share of ideal',
        'Chainer predict_sample', 'Chainer stock predict_sample',
        'Chainer main', 'PyTorch early exit', 'PyTorch main', 'over Chainer',
        'exit shares (%)'])
    for key, r in results['networks'].items():
        t = r['timing']
        ms = {k: v['median_ms'] for k, v in t['batch1_ms'].items()}
        lines.append(md.row([
            key, r['weights'].split(':')[0],
            _ms(ms['deployed_early_exit']), _ms(ms['deployed_main_path']),
            '{:.2f}x'.format(t['deployed_gain']),
            '{:.2f}x'.format(t['ideal_gain']),
            '{:.2f}'.format(t['share_of_ideal']),
            _ms(ms['chainer_predict_sample']),
            _ms(ms.get('chainer_stock_predict_sample')),
            _ms(ms['chainer_main_path']),
            _ms(ms.get('pytorch_predict_sample')),
            _ms(ms.get('pytorch_main_path')),
            '{:.1f}x'.format(t['over_chainer_predict_sample']),
            ', '.join('{:.1f}'.format(100 * s) for s in t['exit_shares'])]))
    lines += [''] + md.table(['network', 'batched (per sample): early exit',
                              'main path', 'gain'])
    for key, r in results['networks'].items():
        b = r['timing'].get('batched')
        if b:
            lines.append(md.row([
                '{} (batch {})'.format(key, b['batch']),
                _ms(b['early_exit_ms_per_sample']),
                _ms(b['main_path_ms_per_sample']),
                '{:.2f}x'.format(b['main_path_ms_per_sample'] /
                                 b['early_exit_ms_per_sample'])]))
    tested = {k: r for k, r in results['networks'].items() if 'test' in r}
    if tested:
        lines += ['', '## Trained models on their test set', ''] + md.table([
            'network', 'test images', 'thresholds', 'chosen',
            'deployed early exit accuracy (%)',
            'deployed main path accuracy (%)', 'exit shares (%)',
            'training schedule'])
        for key, r in tested.items():
            test = r['test']
            lines.append(md.row([
                key, '{} ({})'.format(test['samples'], r['images']),
                ', '.join('{:g}'.format(v) for v in test['thresholds']),
                r['thresholds_chosen'],
                '{:.2f}'.format(test['early_exit_accuracy']),
                '{:.2f}'.format(test['main_path_accuracy']),
                ', '.join('{:.2f}'.format(100 * f)
                          for f in test['exit_shares']),
                r['schedule']]))
    lines += ['', '## Parity with Chainer\'s predict', ''] + md.table([
        'network', 'images', 'threshold vectors', 'label differences',
        'exit differences', 'within float32 rounding', 'unexplained'])
    for key, r in results['networks'].items():
        p = r['parity']
        lines.append(md.row([
            key, '{} ({})'.format(p['samples'], r['images']), p['vectors'],
            p['label_differences'], p['exit_differences'],
            p['within_rounding'], p['unexplained']]))
    return '\n'.join(lines) + '\n'


def _ms(value):
    return '-' if value is None else '{:.3g}'.format(value)


def measure(args, say=print):
    """Export, check and time every network; write deploy.json/.md.

    Args:
        args: a :class:`Measurement`.
        say: called with progress messages.

    Returns:
        The results, as written to deploy.json.
    """
    runs, at = {}, {}
    for run in args.runs:
        key = trained(run)[0].protocol
        runs[key] = run
        # a missing knee stops the command before any work
        at[key] = run_thresholds(run, protocols.get(key), args.at)
    networks = args.networks or list(protocols.PROTOCOLS)
    with OutputFolder.open(args.out, 'files') as folder, \
            folder.discarded_on_failure():
        folder.check_replaceable(REPORT)
        import onnxruntime
        results = {'kind': reading.DEPLOYMENT_KIND, 'environment': environment.describe(),
                   'onnxruntime': onnxruntime.__version__,
                   'openblas_threads': os.environ.get('OPENBLAS_NUM_THREADS',
                                                      'unset'),
                   'networks': {}}
        with tempfile.TemporaryDirectory(prefix='branchynet-deploy-') as tmp:
            for key in networks:
                results['networks'][key] = measure_network(
                    key, args, runs.get(key), at.get(key), folder, tmp, say)
        folder.write_json(REPORT[0], results)
        folder.write_text(REPORT[1], markdown(results))
    return results


def runtime_latency(run_dir, names, data_dir=None, samples=200, repeats=3,
                    at='paper', official=True, say=print):
    """Batch-1 time of a run's deployed early exit and main path in each
    runtime of ``names`` (:func:`branchynet.deploy.runtimes.time_runtimes`),
    on its first ``samples`` test images (seeded noise without
    ``data_dir``), at the paper's thresholds or its knee (``at``)."""
    stored, net = trained(run_dir)
    protocol = protocols.get(stored.protocol)
    thresholds, chosen, _ = run_thresholds(run_dir, protocol, at)
    x, _, source = test_images(stored.protocol, stored, data_dir, samples,
                               official=official)
    with tempfile.TemporaryDirectory() as scratch:
        models = {}
        for kind, write in (
                ('batched', deploy.export),
                ('portable', functools.partial(deploy.export,
                                               form='portable')),
                ('main_path', deploy.export_main_path)):
            models[kind] = os.path.join(scratch, kind + '.onnx')
            with open(models[kind], 'wb') as f:
                write(net, f, x[:2])
        say('{}: timing {} in turns, {} samples, {} repeats'.format(
            protocol.key, ', '.join(names), len(x), repeats))
        timed = runtimes.time_runtimes(models, timing.as_samples(x),
                                       thresholds, names, repeats)
    return {'network': protocol.key, 'run': run_dir, 'images': source,
            'thresholds': list(thresholds), 'thresholds_chosen': chosen,
            'runtimes': timed, 'environment': environment.describe()}


def runtimes_markdown(measured):
    """:func:`runtime_latency` entries (a list) as Markdown."""
    lines = []
    for entry in measured:
        lines += ['## {} at T = {} ({})'.format(
            protocols.get(entry['network']).title,
            ', '.join('{:g}'.format(t) for t in entry['thresholds']),
            entry['thresholds_chosen']), '',
            'Run `{}`; {}; ms per sample at batch 1 (median of the '
            'repeats), one thread each, timed in turns; {}.'.format(
                entry['run'], entry['images'],
                entry['environment'].get('cpu', 'CPU')), '',
            runtimes.markdown(entry['runtimes']), '']
    return '\n'.join(lines)


def runtimes_report(runs, names, out, data_dir=None, samples=200, repeats=3,
                    at='paper', official=True, say=print):
    """:func:`runtime_latency` of each run folder in ``runs``, written to
    ``runtimes.json`` and ``runtimes.md`` in ``out``; the list."""
    with OutputFolder.open(out, 'files') as folder:
        folder.check_replaceable(list(RUNTIMES_REPORT))
        measured = [runtime_latency(run, names, data_dir, samples, repeats,
                                    at, official, say) for run in runs]
        folder.write_json(RUNTIMES_REPORT[0], measured)
        folder.write_text(RUNTIMES_REPORT[1], runtimes_markdown(measured))
    return measured
