"""The deployed early-exit model checked and timed against Chainer.

- :func:`parity`: labels and exits of the ONNX model (ONNX Runtime) against
  ``BranchyNet.predict`` at every threshold vector of a sweep. A sample may
  differ only where the two computations cannot agree in float32: its
  entropy at the exit where they part lies within :data:`ROUNDING` of that
  exit's threshold, or the two largest logits of the exit that answered lie
  within :data:`ROUNDING` of each other. Such samples are counted and
  listed; any other difference is a defect.
- :func:`time_deployed`: per sample, in turns (:func:`branchynet.timing.time_in_turns`),
  on the CPU: the deployed early exit and the deployed main path (ONNX
  Runtime), Chainer's ``predict_sample`` and main path, and any further
  functions given (the PyTorch port); batched, the deployed early exit
  against the deployed main path; and the gain that the multiply-adds of
  each exit's path predict (:func:`branchynet.costs.ideal_speedup`), so
  that the overhead left is visible.
"""
import chainer
import numpy

from branchynet import costs, exit_rule, sweep, timing
from branchynet.exit_rule import EntropyThresholds
from branchynet.paper import protocols

# float32 rounding of an entropy or a logit computed by two runtimes, in
# absolute terms (entropies are at most ln 10 = 2.3; logits a few tens).
ROUNDING = 1e-5


def seeded_network(key, seed=0, calibration=32, passes=20):
    """A protocol's network at seeded initial weights, BatchNorm calibrated.

    What the deployment is checked and timed on when no trained run is
    given. With BatchNorm's running statistics at their initial values
    (mean 0, variance 1) B-ResNet-110's trunk saturates: every sample past
    the first exit has entropy 0, and no threshold reaches the last exit.
    ``passes`` training-mode passes over ``calibration`` uniform-noise
    images (no gradient, no weight change) give it the statistics of such
    inputs. Networks without BatchNorm are returned as built.
    """
    numpy.random.seed(seed)
    net = protocols.get(key).network()
    if has_batchnorm(net):
        noise = numpy.random.RandomState(seed + 1).rand(
            calibration, *net.input_shape).astype(numpy.float32)
        with chainer.using_config('train', True), \
                chainer.no_backprop_mode():
            for _ in range(passes):
                net(noise)
    return net


def has_batchnorm(net):
    return any(isinstance(link, chainer.links.BatchNormalization)
               for link in net.links())


def parity(net, session, x, threshold_vectors):
    """Compare the deployed model with Chainer's early exit on ``x``.

    Chainer's side is one pass over every exit
    (:func:`branchynet.sweep.exit_outputs`) with the exit rule applied per
    threshold vector (:func:`branchynet.exit_rule.assign_exits`), the
    sweep's own computation and ``BranchyNet.predict``'s answer (a sample's
    entropy does not depend on the other samples; ``tests/test_model.py``).
    The deployed model runs once per vector.

    Args:
        net: the BranchyNet (CPU).
        session: a :class:`~branchynet.deploy.EarlyExitSession` of it.
        x: test images.
        threshold_vectors: the threshold vectors to compare at.

    Returns:
        A list, per vector: the number of samples, of label and of exit
        differences, the explained ones (sample indices listed), the
        unexplained ones (which must be none) and the deployed exit shares.
    """
    outputs = sweep.exit_outputs(net, x, numpy.zeros(len(x), numpy.int32))
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        chunks = [net(x[i:i + 1000])
                  for i in range(0, len(x), 1000)]
    gaps = [_top_gap(numpy.concatenate([c[n].array for c in chunks]))
            for n in range(net.num_exits)]
    samples = numpy.arange(len(x))
    results = []
    for thresholds in threshold_vectors:
        rule = EntropyThresholds(thresholds, net.num_exits)
        exits = exit_rule.assign_exits(outputs.entropies[:-1], rule)
        ours = outputs.predictions[exits, samples], exits
        theirs = session.predict(x, rule)
        differ = numpy.flatnonzero((ours[0] != theirs[0]) |
                                   (ours[1] != theirs[1]))
        explained, unexplained = [], []
        for i in differ:
            first = int(min(ours[1][i], theirs[1][i]))
            near_threshold = first < net.num_exits - 1 and abs(
                float(outputs.entropies[first, i]) - rule.values[first]) \
                <= ROUNDING
            near_tie = ours[1][i] == theirs[1][i] and \
                gaps[ours[1][i]][i] <= ROUNDING
            (explained if near_threshold or near_tie
             else unexplained).append(int(i))
        results.append({'thresholds': [float(t) for t in rule.values],
                        'samples': len(x),
                        'label_differences': int((ours[0] != theirs[0]).sum()),
                        'exit_differences': int((ours[1] != theirs[1]).sum()),
                        'within_rounding': explained,
                        'unexplained': unexplained,
                        'exit_shares': exit_rule.exit_shares(
                            theirs[1], net.num_exits)})
    return results


def test_accuracy(early_exit, main_path, x, t, thresholds, chunk=1000):
    """Accuracy (%) and exit shares of the deployed models on a test set.

    Args:
        early_exit, main_path: the two deployed models
            (:class:`~branchynet.deploy.EarlyExitSession`).
        x, t: the test images and labels.
        thresholds: the early exit's threshold vector.
    """
    parts = [(early_exit.predict(x[i:i + chunk], thresholds),
              main_path.predict(x[i:i + chunk])[0])
             for i in range(0, len(x), chunk)]
    labels = numpy.concatenate([p[0][0] for p in parts])
    exits = numpy.concatenate([p[0][1] for p in parts])
    main = numpy.concatenate([p[1] for p in parts])
    t = numpy.asarray(t)
    return {'samples': len(x), 'thresholds': [float(v) for v in thresholds],
            'early_exit_accuracy': float(100 * (labels == t).mean()),
            'main_path_accuracy': float(100 * (main == t).mean()),
            'exit_shares': exit_rule.exit_shares(exits,
                                                 early_exit.num_exits)}


def _top_gap(z):
    """The gap between the two largest logits of each row."""
    top = numpy.sort(z, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0]


def time_deployed(net, early_exit, main_path, samples, thresholds, repeats=3,
           warmup=20, extra=(), batch=None):
    """Batch-1 (and batched) time of every way to run ``net``, in turns.

    Args:
        net: the BranchyNet (CPU).
        early_exit, main_path: its two :class:`~branchynet.deploy.EarlyExitSession`.
        samples: ``(1, ...)`` host arrays.
        thresholds: the threshold vector timed.
        extra: further ``(name, function of one sample)`` pairs (the
            PyTorch port), timed in the same turns.
        batch: a batch of images for the batched comparison (``None``: none).

    Returns:
        A dict of summaries (:func:`branchynet.timing.summarize`) by name,
        the exit shares of the timed samples, the multiply-adds of each
        path and the ideal gain they predict.
    """
    rule = EntropyThresholds(thresholds, net.num_exits)
    cpu = chainer.get_device('@numpy')
    functions = [
        ('deployed_early_exit', lambda s: early_exit.predict(s, rule)),
        ('deployed_main_path', lambda s: main_path.predict(s)),
        ('chainer_predict_sample', lambda s: net.predict_sample(s, rule)),
        ('chainer_stock_predict_sample', lambda s: _stock(
            net.predict_sample, s, rule)),
        ('chainer_main_path', timing.baseline_classifier(net)),
    ] + list(extra)
    measured = timing.time_in_turns([f for _, f in functions], samples, cpu,
                                    repeats, warmup)
    result = {'batch1_ms': {name: m for (name, _), m in
                            zip(functions, measured)}}
    exits = numpy.array([early_exit.predict(s, rule)[1][0] for s in samples])
    shares = numpy.bincount(exits, minlength=net.num_exits) / len(samples)
    stages, heads = costs.multiply_adds(net)
    result.update(thresholds=list(rule.values),
                  exit_shares=[float(s) for s in shares],
                  multiply_adds={'stages': stages, 'heads': heads},
                  ideal_gain=costs.ideal_speedup(stages, heads, shares))
    ms = {k: v['median_ms'] for k, v in result['batch1_ms'].items()}
    result['deployed_gain'] = ms['deployed_main_path'] / \
        ms['deployed_early_exit']
    result['share_of_ideal'] = result['deployed_gain'] / result['ideal_gain']
    result['over_chainer_predict_sample'] = \
        ms['chainer_predict_sample'] / ms['deployed_early_exit']
    if batch is not None:
        batched = timing.time_in_turns(
            [lambda b: early_exit.predict(b, rule),
             lambda b: main_path.predict(b)], [batch], cpu, repeats, 1)
        result['batched'] = {'batch': len(batch),
                             'early_exit_ms_per_sample':
                                 batched[0]['median_ms'] / len(batch),
                             'main_path_ms_per_sample':
                                 batched[1]['median_ms'] / len(batch)}
    return result


def _stock(function, *args):
    """``function`` on Chainer's own functions (``--kernels stock``)."""
    with chainer.using_config('branchynet_kernels', 'stock'):
        return function(*args)


def shares_thresholds(net, x, shares):
    """Thresholds that send the given shares of ``x`` out at each exit."""
    outputs = sweep.exit_outputs(net, x, numpy.zeros(len(x), numpy.int32))
    return exit_rule.thresholds_for_shares(outputs.entropies, shares)
