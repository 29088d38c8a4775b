"""Threshold sweep: every threshold combination, exact, without re-running the net.

A sample's output and entropy at exit ``n`` do not depend on the thresholds,
so the test set is run once through every exit (:func:`exit_outputs`), and
each threshold combination is then scored exactly by applying the exit rule
to those stored entropies (:func:`evaluate`). Runtime per combination is
predicted from measured per-exit path costs: ``sum_n share_n * cost_n``
(the reference code combines its per-exit times the same way); the chosen
knee point is then confirmed with a real batch-1 run.

Frontier (Fig. 3): points sorted by runtime, keeping a point when its
accuracy exceeds the last kept point's minus a tolerance: 0.0001 as a
fraction (0.01 points), what every reference experiment passes as
``inc_amt`` to its ``get_inc_points``.

The knee (Table I) is chosen from the frontier by
:func:`branchynet.selection.select_knee`, beside the other selection rules.
"""
import dataclasses
import itertools

import chainer
import chainer.functions as F
import numpy

from branchynet.entropy import entropy
from branchynet.exit_rule import EntropyThresholds, assign_exits
from branchynet.utils.files import writing

# Every reference experiment calls its frontier function with inc_amt=-0.0001
# on accuracy fractions: 0.01 percentage points.
FRONTIER_TOLERANCE = 0.0001


@dataclasses.dataclass
class ExitOutputs:
    """What every exit says about every test sample.

    Attributes:
        predictions: ``(N, B)`` int, argmax class at each exit.
        entropies: ``(N, B)`` float32, softmax entropy at each exit.
        labels: ``(B,)`` int, the true classes.
    """
    predictions: numpy.ndarray
    entropies: numpy.ndarray
    labels: numpy.ndarray

    def save(self, target):
        """Write the three arrays (compressed npz) to ``target``: a path
        (written atomically) or an open file."""
        with writing(target) as f:
            numpy.savez_compressed(f, **dataclasses.asdict(self))

    @classmethod
    def load(cls, path):
        """The outputs saved by :meth:`save`."""
        with numpy.load(path) as npz:
            return cls(**{f.name: npz[f.name] for f in dataclasses.fields(cls)})

    def subset(self, count):
        """The first ``count`` samples."""
        return ExitOutputs(self.predictions[:, :count],
                           self.entropies[:, :count], self.labels[:count])


def exit_outputs(net, x, t, batchsize=1000):
    """Run ``x`` through every exit of ``net`` in test mode, batch by batch.

    Args:
        net: a BranchyNet on any device.
        x, t: host arrays of samples and labels.
        batchsize: samples per forward pass (the outputs do not depend on it).

    Returns:
        An :class:`ExitOutputs`.
    """
    predictions, entropies = [], []
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for start in range(0, len(x), batchsize):
            ys = net(net.device.send(x[start:start + batchsize]))
            predictions.append(numpy.stack(
                [chainer.backends.cuda.to_cpu(y.array.argmax(axis=1))
                 for y in ys]))
            entropies.append(numpy.stack(
                [chainer.backends.cuda.to_cpu(entropy(F.softmax(y).array))
                 for y in ys]))
    return ExitOutputs(numpy.concatenate(predictions, axis=1),
                       numpy.concatenate(entropies, axis=1),
                       numpy.asarray(t))


def evaluate(outputs, thresholds):
    """Accuracy and exit statistics of one threshold vector, exactly.

    Returns a dict with ``thresholds``, ``accuracy``, ``exit_counts``,
    ``exit_shares`` and ``exit_accuracy`` (accuracy among the samples
    that took each exit; ``None`` where none did).
    """
    num_exits, size = outputs.predictions.shape
    rule = EntropyThresholds(thresholds, num_exits)
    exits = assign_exits(outputs.entropies[:-1], rule)
    correct = outputs.predictions[exits, numpy.arange(size)] == outputs.labels
    counts = numpy.bincount(exits, minlength=num_exits)
    right = numpy.bincount(exits, weights=correct, minlength=num_exits)
    return {
        'thresholds': list(rule.values),
        'accuracy': float(correct.mean()),
        'exit_counts': counts.tolist(),
        'exit_shares': (counts / size).tolist(),
        'exit_accuracy': [float(r / c) if c else None
                          for r, c in zip(right, counts)],
    }


def threshold_grid(threshold_list, num_exits):
    """Every combination of ``threshold_list`` over the non-final exits.

    Returns:
        A list of threshold vectors (lists), the last exit varying fastest.
    """
    return [list(c) for c in itertools.product(threshold_list,
                                               repeat=num_exits - 1)]


def predicted_ms(exit_shares, path_costs_ms):
    """Expected ms per sample: ``sum_n share_n * cost_n``.

    Args:
        exit_shares: share of samples leaving at each exit.
        path_costs_ms: measured cost of the whole path to each exit.

    Returns:
        A float.
    """
    return float(numpy.dot(exit_shares, path_costs_ms))


def run_sweep(outputs, threshold_list):
    """:func:`evaluate` for every combination of ``threshold_list``.

    Returns:
        One point (dict) per combination, in :func:`threshold_grid` order.
    """
    num_exits = outputs.predictions.shape[0]
    return [evaluate(outputs, combo)
            for combo in threshold_grid(threshold_list, num_exits)]


def frontier(accuracies, times, tolerance=FRONTIER_TOLERANCE):
    """Indices of the points whose accuracy rises with runtime (Fig. 3 curve).

    Points are visited fastest first; a point is kept when its accuracy is
    above the last kept point's accuracy minus ``tolerance``. Ties in time
    are visited in input order.
    """
    order = numpy.argsort(times, kind='stable')
    kept = [int(order[0])]
    for i in order[1:]:
        if accuracies[i] > accuracies[kept[-1]] - tolerance:
            kept.append(int(i))
    return kept


def exit1_curve(outputs, points=101):
    """Fig. 4: vary exit 1's threshold, nothing exits at other non-final exits.

    The samples exiting at exit 1 are then the ``k`` with the lowest exit-1
    entropy (ties broken by sample order, as the threshold rule would take a
    tied group together or not at all; with continuous entropies ties do
    not occur). Returns ``k/B``, overall accuracy and the largest entropy
    among the exited samples for ``points`` evenly spaced ``k``.
    """
    num_exits, size = outputs.predictions.shape
    order = numpy.argsort(outputs.entropies[0], kind='stable')
    first = outputs.predictions[0, order] == outputs.labels[order]
    last = outputs.predictions[-1, order] == outputs.labels[order]
    # correct(k) = correct at exit 1 among the first k + at the end for the rest
    correct = numpy.concatenate([[0], numpy.cumsum(first)]) + \
        numpy.concatenate([numpy.cumsum(last[::-1])[::-1], [0]])
    ks = numpy.unique(numpy.linspace(0, size, points).round().astype(int))
    sorted_entropy = outputs.entropies[0, order]
    return {
        'exit_share': (ks / size).tolist(),
        'accuracy': (correct[ks] / size).tolist(),
        'max_exited_entropy': [float(sorted_entropy[k - 1]) if k else 0.0
                               for k in ks],
    }
