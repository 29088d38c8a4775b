"""The paper's experiment, end to end: the runner behind ``experiments/run_*.py``.

For one network: load the data, train the main network alone, save it as the
baseline, train all exits jointly, then evaluate: baseline accuracy, every
exit's outputs on the test set, honest batch-1 timing on each device, the
threshold sweep with predicted runtimes, the knee point confirmed by a real
batch-1 run, Table I rows, result files and figures.

Everything a run produces lies in ``--out``::

    main_phase/, joint_phase/   Chainer Trainer logs and the latest snapshot
    baseline.npz                main network after phase 1 (scored from this)
    branchynet.npz              all exits after phase 2
    exit_outputs.npz            every exit's prediction and entropy per test sample
    results.json                everything (config, split, versions, curves, sweep, ...)
    sweep.csv, table1.csv, table1.md, figures/
"""
import argparse
import dataclasses
import functools
import os
import typing

import chainer
import numpy

from branchynet import datasets, environment, figures, report, sweep, timing
from branchynet.exit_rule import EntropyThresholds
from branchynet.serialization import load_model, save_model
from branchynet.training import fresh_optimizer_state, train_phase


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The defaults of one paper experiment (SPEC.md's reference protocol).

    Attributes:
        key: default output folder name, e.g. ``'b_alexnet'``.
        network: ``get_network`` of a ``networks`` module.
        dataset: ``'mnist'`` or ``'cifar10'``.
        baseline_name: Table I name of the main network, e.g. ``'AlexNet'``.
        threshold_list: thresholds combined over the non-final exits.
        batchsize: training batch size.
        epoch_main, epoch_joint: epochs of the two training phases.
        network_kwargs: extra arguments for ``network`` (Fig. 5 variants).
    """
    key: str
    network: typing.Callable
    dataset: str
    baseline_name: str
    threshold_list: tuple
    batchsize: int = 512
    epoch_main: int = 50
    epoch_joint: int = 100
    network_kwargs: dict = dataclasses.field(default_factory=dict)


# Defaults of the timing flags, and what --quick changes unless the flag is
# also given explicitly.
TIMING_DEFAULTS = {'timing_samples': 1000, 'timing_repeats': 3,
                   'timing_warmup': 20}
QUICK = {'epoch_main': 1, 'epoch_joint': 1, 'train_size': 1024,
         'test_size': 256, 'timing_samples': 16, 'timing_repeats': 1,
         'timing_warmup': 2}


def build_parser(protocol):
    d = ' (default: %(default)s)'
    p = argparse.ArgumentParser(
        description='Train and evaluate {} as in the BranchyNet paper; '
                    'defaults reproduce the reference protocol.'.format(
                        protocol.key))
    p.add_argument('--gpu', '-g', type=int, default=-1,
                   help='GPU id; negative: CPU only' + d)
    p.add_argument('--out', '-o', default=os.path.join('results', protocol.key),
                   help='output folder' + d)
    p.add_argument('--resume', '-r', action='store_true',
                   help='continue the run in --out from its latest snapshots')
    p.add_argument('--batchsize', '-b', type=int, default=protocol.batchsize,
                   help='training batch size' + d)
    p.add_argument('--epoch-main', type=int,
                   help='epochs of the main-network phase (default: {})'.format(
                       protocol.epoch_main))
    p.add_argument('--epoch-joint', type=int,
                   help='epochs of the joint phase (default: {})'.format(
                       protocol.epoch_joint))
    p.add_argument('--data-dir',
                   help='folder with the dataset files (default: ${}, else '
                        'download with Chainer)'.format(datasets.DATA_DIR_ENV))
    if protocol.dataset == 'cifar10':
        p.add_argument('--test-batch',
                       help='hold out this training batch (e.g. data_batch_5) '
                            'as the test set instead of the official test_batch')
        p.add_argument('--preprocessing', choices=sorted(datasets.PREPROCESSINGS),
                       default='zca', help='zca: the reference\'s ZCA + per-'
                       'image min-max; scale: pixels / 255' + d)
        p.add_argument('--cache-dir',
                       help='cache for preprocessed arrays (default: ${} or '
                            '~/.cache/branchynet)'.format(datasets.CACHE_DIR_ENV))
    p.add_argument('--seed', type=int, default=0,
                   help='seeds initialisation, shuffling and dropout' + d)
    p.add_argument('--alpha', type=float, default=0.001,
                   help='Adam step size' + d)
    p.add_argument('--adam-beta1', type=float, default=0.9,
                   help='Adam beta1; the reference code uses 0.9, the paper '
                        'says 0.99' + d)
    p.add_argument('--branch-weights', type=float, nargs='+',
                   help='loss weight per exit (default: all 1.0, as the code; '
                        'the paper reports 1.0 for exit 1 and 0.3 for the last '
                        'as better)')
    p.add_argument('--percent-train-keeps', type=float, default=1.0,
                   help='share of samples kept for deeper exits in training'
                        + d)
    p.add_argument('--thresholds', type=float, nargs='+',
                   help='also evaluate and time this threshold vector')
    p.add_argument('--threshold-list', type=float, nargs='+',
                   default=list(protocol.threshold_list),
                   help='values combined over the non-final exits in the '
                        'sweep' + d)
    p.add_argument('--knee-tolerance', type=float, default=0.1,
                   help='knee: the fastest frontier point within this many '
                        'accuracy points of the baseline (of the best point if '
                        'that is lower)' + d)
    p.add_argument('--timing-samples', type=int,
                   help='test samples timed at batch size 1; 0 = all '
                        '(default: {timing_samples})'.format(**TIMING_DEFAULTS))
    p.add_argument('--timing-repeats', type=int,
                   help='timed passes over those samples (default: '
                        '{timing_repeats})'.format(**TIMING_DEFAULTS))
    p.add_argument('--timing-warmup', type=int,
                   help='untimed samples run first (default: {timing_warmup})'
                        .format(**TIMING_DEFAULTS))
    p.add_argument('--no-cpu-timing', action='store_true',
                   help='with --gpu, time on the GPU only')
    p.add_argument('--skip-timing', action='store_true',
                   help='no timing: accuracy and exit shares only, no Table I')
    p.add_argument('--train-size', type=int,
                   help='use only the first N training samples')
    p.add_argument('--test-size', type=int,
                   help='use only the first N test samples')
    p.add_argument('--validation-size', type=int, default=0,
                   help='hold out N training samples (class-stratified, '
                        'seeded by --seed) as a validation set for choosing '
                        'thresholds; 0 keeps the paper\'s protocol' + d)
    p.add_argument('--quick', action='store_true',
                   help='smoke test: ' + ', '.join(
                       '{}={}'.format(k, v) for k, v in QUICK.items()))
    p.add_argument('--no-progress', action='store_true',
                   help='no progress bar or per-epoch table')
    return p


def resolve_args(protocol, args):
    """Fill what the user left open: --quick values, then protocol defaults."""
    defaults = dict(TIMING_DEFAULTS, epoch_main=protocol.epoch_main,
                    epoch_joint=protocol.epoch_joint)
    for key in set(QUICK) | set(defaults):
        if getattr(args, key, None) is None:
            value = QUICK[key] if args.quick and key in QUICK else \
                defaults.get(key)
            setattr(args, key, value)
    return args


def check_args(protocol, args):
    """Raise ValueError/TypeError for bad values before any work is done."""
    net = make_network(protocol, args)  # checks weights and keeps
    if args.thresholds is not None:
        EntropyThresholds(args.thresholds, net.num_exits)
    if not args.threshold_list or not all(t >= 0 for t in args.threshold_list):
        raise ValueError('--threshold-list needs non-negative values, got '
                         '{}'.format(args.threshold_list))
    for name in ('batchsize', 'timing_repeats'):
        if getattr(args, name) < 1:
            raise ValueError('--{} must be at least 1'.format(
                name.replace('_', '-')))
    for name in ('epoch_main', 'epoch_joint', 'timing_samples',
                 'timing_warmup', 'knee_tolerance'):
        if getattr(args, name) < 0:
            raise ValueError('--{} must not be negative'.format(
                name.replace('_', '-')))


def load_data(protocol, args):
    if protocol.dataset == 'mnist':
        return datasets.load_mnist(args.data_dir, args.train_size,
                                   args.test_size, args.validation_size,
                                   args.seed)
    return datasets.load_cifar10(args.data_dir, args.test_batch,
                                 args.preprocessing, args.train_size,
                                 args.test_size, args.cache_dir,
                                 validation_size=args.validation_size,
                                 seed=args.seed)


def make_network(protocol, args):
    return protocol.network(branch_weights=args.branch_weights,
                            percent_train_keeps=args.percent_train_keeps,
                            **protocol.network_kwargs)


def _say(args, *words):
    if not args.no_progress:
        print('[{}]'.format(os.path.basename(os.path.normpath(args.out))),
              *words, flush=True)


def train(protocol, args, data, device):
    """Both training phases; returns their logs. Saves both models."""
    numpy.random.seed(args.seed)
    if device.xp is not numpy:
        device.xp.random.seed(args.seed)
    net = make_network(protocol, args)
    net.to_device(device)
    optimizer = chainer.optimizers.Adam(alpha=args.alpha, beta1=args.adam_beta1)
    optimizer.setup(net)
    logs = {}
    for phase, epochs, model_file in (('main', args.epoch_main, 'baseline.npz'),
                                      ('joint', args.epoch_joint,
                                       'branchynet.npz')):
        if phase == 'joint':
            # As the reference: new optimizer state for the exit heads; the
            # trunk and the final head keep theirs. A resumed joint phase
            # then loads the saved state over this.
            fresh_optimizer_state(net.heads[:-1])
        _say(args, 'training phase "{}": {} epochs'.format(phase, epochs))
        logs[phase] = train_phase(
            net, optimizer, phase, (data.train_x, data.train_t),
            (data.test_x, data.test_t), epochs,
            os.path.join(args.out, phase + '_phase'), args.batchsize, device,
            seed=args.seed, resume=args.resume, progress=not args.no_progress)
        save_model(os.path.join(args.out, model_file), net)
    return logs


def _load(protocol, args, model_file, device):
    net = make_network(protocol, args)
    load_model(os.path.join(args.out, model_file), net)
    return net.to_device(device)


def main_accuracy(net, x, t, batchsize=1000):
    """Accuracy of the main network (trunk + final exit) in test mode."""
    correct = 0
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for start in range(0, len(x), batchsize):
            y = net.main_forward(net.device.send(x[start:start + batchsize]))
            correct += int((chainer.backends.cuda.to_cpu(y.array.argmax(axis=1))
                            == t[start:start + batchsize]).sum())
    return correct / len(x)


def time_device(protocol, args, device, outputs, points, baseline_accuracy,
                samples):
    """Timing, predicted sweep times, frontier and knee on one device."""
    net = _load(protocol, args, 'branchynet.npz', device)
    baseline = _load(protocol, args, 'baseline.npz', device)
    repeats, warmup = args.timing_repeats, args.timing_warmup
    _say(args, 'timing on {}: exit paths'.format(device))
    result = {'device': str(device),
              'exit_path_ms': timing.exit_path_costs(net, samples, repeats,
                                                     warmup)}
    result['reference_style'] = timing.reference_style_costs(
        net, baseline, samples, repeats, warmup)
    path_ms = [c['median_ms'] for c in result['exit_path_ms']]
    trunk_ms = [c['median_ms']
                for c in result['reference_style']['trunk_to_exit']]
    result['predicted_ms'] = [sweep.predicted_ms(p['exit_fractions'], path_ms)
                              for p in points]
    result['reference_style_predicted_ms'] = [
        sweep.predicted_ms(p['exit_fractions'], trunk_ms) for p in points]
    accuracies = [p['accuracy'] for p in points]
    result['frontier'] = sweep.frontier(accuracies, result['predicted_ms'])
    knee = sweep.select_knee(accuracies, result['predicted_ms'],
                             result['frontier'], baseline_accuracy,
                             args.knee_tolerance / 100)
    choices = {'knee': points[knee]['thresholds']}
    if args.thresholds is not None:
        choices['user'] = args.thresholds
    # The baseline and the chosen thresholds are timed in turns, so that
    # Table I's gain compares like with like.
    _say(args, 'timing on {}: baseline and {}, end to end'.format(
        device, ', '.join('{} thresholds {}'.format(c, t)
                          for c, t in choices.items())))
    measured = timing.time_in_turns(
        [timing.baseline_classifier(baseline)] +
        [functools.partial(net.predict_sample, thresholds=t)
         for t in choices.values()], samples, device, repeats, warmup)
    result['baseline'] = measured[0]
    subset = outputs.subset(len(samples))
    for (choice, thresholds), timed in zip(choices.items(), measured[1:]):
        point = sweep.evaluate(outputs, thresholds)
        on_subset = sweep.evaluate(subset, thresholds)
        point['measured'] = timed
        point['predicted_ms'] = sweep.predicted_ms(
            on_subset['exit_fractions'], path_ms)
        point['timing_subset_exit_fractions'] = on_subset['exit_fractions']
        result[choice] = point
    result['knee']['index'] = knee
    return result


def evaluate(protocol, args, data, device):
    """Everything after training, from the saved models only."""
    baseline = _load(protocol, args, 'baseline.npz', device)
    net = _load(protocol, args, 'branchynet.npz', device)
    _say(args, 'evaluating on {} test samples'.format(len(data.test_t)))
    baseline_accuracy = main_accuracy(baseline, data.test_x, data.test_t)
    outputs = sweep.exit_outputs(net, data.test_x, data.test_t)
    outputs.save(os.path.join(args.out, 'exit_outputs.npz'))
    points = sweep.run_sweep(outputs, args.threshold_list)
    results = {
        'network': net.name,
        'baseline': {'accuracy': baseline_accuracy},
        # What the reference reports as its baseline: the main path
        # evaluated once joint training is done (its notebook tests with
        # main=True at the end), not the main-phase model.
        'baseline_after_joint': {
            'accuracy': main_accuracy(net, data.test_x, data.test_t),
            'model': 'branchynet.npz'},
        'exit_accuracy': [float(a) for a in
                          (outputs.predictions == outputs.labels).mean(axis=1)],
        'sweep': {'threshold_list': list(args.threshold_list),
                  'points': points},
        'exit1_curve': sweep.exit1_curve(outputs),
        'timing': {},
    }
    if args.skip_timing:
        return results
    count = args.timing_samples or len(data.test_t)
    samples = timing.as_samples(data.test_x[:count])
    results['timing_samples'] = len(samples)
    devices = [device]
    if device.xp is not numpy and not args.no_cpu_timing:
        devices.append(chainer.get_device('@numpy'))
    for d in devices:
        name = 'cpu' if d.xp is numpy else 'gpu'
        results['timing'][name] = time_device(
            protocol, args, d, outputs, points, baseline_accuracy, samples)
    return results


def run(protocol, args):
    """Train (or resume), evaluate, write result files and figures.

    ``args`` are parsed, resolved (:func:`resolve_args`) and checked.
    """
    device = chainer.get_device('@cupy:{}'.format(args.gpu) if args.gpu >= 0
                                else '@numpy')
    device.use()
    os.makedirs(args.out, exist_ok=True)
    data = load_data(protocol, args)
    logs = train(protocol, args, data, device)
    results = {
        'kind': 'branchynet-run',
        'baseline_name': protocol.baseline_name,
        'protocol': protocol.key,
        'config': {k: v for k, v in vars(args).items()},
        'data': data.info,
        'environment': environment.describe(),
        'training': logs,
    }
    results.update(evaluate(protocol, args, data, device))
    report.write_reports(results, args.out)
    if results['timing']:
        figures.run_figures(results, os.path.join(args.out, 'figures'))
    _say(args, 'results in', args.out)
    if results['timing']:
        print(report.table1_markdown(results))
    return results


def main(protocol, argv=None):
    parser = build_parser(protocol)
    args = resolve_args(protocol, parser.parse_args(argv))
    try:
        check_args(protocol, args)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    try:
        return run(protocol, args)
    except (datasets.DataError, FileExistsError) as e:
        raise SystemExit('error: {}'.format(e))
