"""The exit rule: which samples leave the network at which exit.

Exit ``n`` (0-based) of an ``N``-exit network may take a sample; exit ``N-1``
takes every sample still left. Two rules decide, at each non-final exit,
from the softmax entropy of the samples that reached it:

- :class:`EntropyThresholds` (the paper's rule): entropy < threshold, strict.
- :class:`LowestEntropyFractions` (the reference code's "percent" mode): the
  given fraction of the samples that reached the exit, lowest entropy first.

The model's early-exit inference (batched and batch-1), the offline
threshold sweep and the training loss's ``percent_train_keeps`` (which
samples go on to train deeper exits) all ask these rule objects, so there is
exactly one definition of each rule. A rule is validated once, when it is
made.
"""
import math
import numbers

import numpy
from chainer.backends import cuda


def _check_values(values, num_exits, what):
    expected = num_exits - 1
    if isinstance(values, (str, bytes)) or not hasattr(values, '__len__'):
        raise TypeError(
            '{} must be a sequence of {} numbers (one per non-final exit), '
            'got {!r}'.format(what, expected, values))
    values = list(values)
    if len(values) != expected:
        raise ValueError(
            '{} must have one value per non-final exit: expected {}, got {} '
            '({!r})'.format(what, expected, len(values), values))
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError('{} must be real numbers, got {!r}'.format(
                what, value))
        if math.isnan(value) or value < 0:
            raise ValueError('{} must be non-negative numbers, got {!r}'.format(
                what, values))
    return tuple(float(v) for v in values)


class EntropyThresholds:
    """Exit ``n`` takes a sample whose softmax entropy is below ``thresholds[n]``.

    The comparison is made in float32, strictly: the entropy (a float32)
    against the threshold rounded to the nearest float32. That is what the
    deployed ONNX graph computes, and what every runtime that follows the
    ONNX spec computes from it (OpenVINO, for one, compares in float32
    whatever the input's type), so a sample cannot leave in one runtime and
    stay in another because of the comparison. A sample whose entropy
    equals the rounded threshold stays.

    Args:
        thresholds: one non-negative number per non-final exit. ``0`` sends
            nothing out of that exit; ``inf`` sends everything.
        num_exits: number of exits of the network, the final one included.
    """

    def __init__(self, thresholds, num_exits):
        self.values = _check_values(thresholds, num_exits, 'thresholds')
        self.num_exits = num_exits
        self.compared = numpy.asarray(self.values, numpy.float32)

    def takes(self, n, entropy):
        """Which samples leave at exit ``n``.

        Args:
            n: 0-based index of a non-final exit.
            entropy: numpy or cupy array ``(B,)``, the softmax entropy of the
                samples that reached exit ``n``.

        Returns:
            Boolean mask ``(B,)`` of the same array module.
        """
        return entropy.astype(numpy.float32) < self.compared[n]

    def __repr__(self):
        return 'EntropyThresholds({})'.format(list(self.values))


class LowestEntropyFractions:
    """At exit ``n``, the ``fractions[n]`` share of the samples that reached it exits.

    The samples with the lowest entropy exit first; the count is
    ``floor(fraction * reached)`` (as the reference's ``int(...)``, made robust
    to binary rounding such as ``0.29 * 100 = 28.999...``). Ties are broken
    by sample order.

    Args:
        fractions: one share in [0, 1] per non-final exit.
        num_exits: number of exits of the network, the final one included.
    """

    def __init__(self, fractions, num_exits):
        self.values = _check_values(fractions, num_exits, 'exit_fractions')
        if any(f > 1 for f in self.values):
            raise ValueError('exit_fractions must lie in [0, 1], got {!r}'
                             .format(list(self.values)))
        self.num_exits = num_exits

    def takes(self, n, entropy):
        """Which samples leave at exit ``n``: see :meth:`EntropyThresholds.takes`."""
        count = math.floor(self.values[n] * entropy.shape[0] + 1e-9)
        xp = cuda.get_array_module(entropy)
        order = (numpy.argsort(entropy, kind='stable') if xp is numpy
                 else xp.argsort(entropy))
        mask = xp.zeros(entropy.shape[0], dtype=bool)
        mask[order[:count]] = True
        return mask

    def __repr__(self):
        return 'LowestEntropyFractions({})'.format(list(self.values))


EXIT_RULES = (EntropyThresholds, LowestEntropyFractions)


def make_rule(num_exits, thresholds=None, exit_fractions=None):
    """The rule asked for by exactly one of ``thresholds``/``exit_fractions``.

    Args:
        num_exits: number of exits of the network.
        thresholds: a sequence (or an :class:`EntropyThresholds`) for the
            threshold rule.
        exit_fractions: a sequence (or a :class:`LowestEntropyFractions`)
            for percent mode.

    Returns:
        A rule object; one given ready-made is returned as it is after
        checking that it was made for ``num_exits`` exits.
    """
    if (thresholds is None) == (exit_fractions is None):
        raise TypeError('give exactly one of thresholds= or exit_fractions=')
    given, kind = ((thresholds, EntropyThresholds) if thresholds is not None
                   else (exit_fractions, LowestEntropyFractions))
    if isinstance(given, EXIT_RULES):
        if not isinstance(given, kind):
            raise TypeError('expected {} values or a {}, got {!r}'.format(
                'thresholds=' if kind is EntropyThresholds else
                'exit_fractions=', kind.__name__, given))
        if given.num_exits != num_exits:
            raise ValueError('{!r} was made for {} exits, this network has {}'
                             .format(given, given.num_exits, num_exits))
        return given
    return kind(given, num_exits)


def keep_for_training(percent_train_keeps, num_exits):
    """The rule of ``percent_train_keeps``: who stops training at each exit.

    At each non-final exit, the ``1 - percent_train_keeps`` share of the
    samples that reached it with the lowest entropy stops there (it trains
    no deeper exit); the rest, the most uncertain, go on. That is percent
    mode with that share, so it is a :class:`LowestEntropyFractions`.

    Returns:
        The rule, or ``None`` for ``percent_train_keeps == 1`` (every sample
        trains every exit, the reference experiments' setting).
    """
    if isinstance(percent_train_keeps, bool) or \
            not isinstance(percent_train_keeps, numbers.Real) or \
            not 0 < percent_train_keeps <= 1:
        raise ValueError('percent_train_keeps must lie in (0, 1], got '
                         '{!r}'.format(percent_train_keeps))
    if percent_train_keeps == 1:
        return None
    return LowestEntropyFractions([1 - percent_train_keeps] * (num_exits - 1),
                                  num_exits)


def samples_left(percent_train_keeps, batch, num_exits):
    """How many of ``batch`` samples reach the final exit in training under
    :func:`keep_for_training` (the counts do not depend on the entropies)."""
    rule = keep_for_training(percent_train_keeps, num_exits)
    left = batch
    for n in range(num_exits - 1 if rule is not None else 0):
        left -= math.floor(rule.values[n] * left + 1e-9)
    return left


def assign_exits(entropies, rule):
    """Exit index of every sample, given its entropy at every non-final exit.

    This is the rule applied offline to precomputed entropies (as the
    threshold sweep does); it gives the same answer as running the network
    with early exits, because a sample's entropy at exit ``n`` does not depend
    on which other samples reached it.

    Args:
        entropies: array of shape ``(N-1, B)``: the entropy of every sample
            at each non-final exit (numpy or cupy).
        rule: an :class:`EntropyThresholds` or :class:`LowestEntropyFractions`.

    Returns:
        numpy int array of shape ``(B,)`` with values in ``0..N-1``.
    """
    entropies = cuda.to_cpu(entropies)
    if entropies.ndim != 2:
        raise ValueError('entropies must have shape (exits - 1, samples), '
                         'got {}'.format(entropies.shape))
    num_branches, size = entropies.shape
    exits = numpy.full(size, num_branches, dtype=numpy.int64)
    remaining = numpy.arange(size)
    for n in range(num_branches):
        take = rule.takes(n, entropies[n, remaining])
        exits[remaining[take]] = n
        remaining = remaining[~take]
    return exits


def exit_shares(exits, num_exits):
    """The share of the samples each exit took (0-based exit per sample), a
    list of ``num_exits`` floats."""
    return [float(s) for s in numpy.bincount(
        numpy.asarray(exits), minlength=num_exits) / len(exits)]


def thresholds_for_shares(entropies, shares):
    """Thresholds under which the given shares of all samples leave each exit.

    Each threshold lies halfway between the last entropy taken and the
    next, so that batch-1 runs (whose entropies may differ from the batched
    ones in the last bits) route the samples the same way.

    Args:
        entropies: ``(N, B)`` entropies of every sample at every exit.
        shares: the wanted share of all ``B`` samples per exit.

    Returns:
        One threshold per non-final exit (a list of floats).
    """
    num_exits, size = entropies.shape
    thresholds = [0.0] * (num_exits - 1)
    for n, share in enumerate(shares[:-1]):
        # the samples still there under the thresholds chosen so far
        exits = assign_exits(entropies[:-1],
                             EntropyThresholds(thresholds, num_exits))
        e = numpy.sort(entropies[n, exits >= n].astype(numpy.float64))
        count = min(int(round(share * size)), len(e))
        if count == 0:
            thresholds[n] = 0.0
        elif count == len(e):
            thresholds[n] = float(e[-1]) * 2 + 1
        else:
            thresholds[n] = float(e[count - 1] + e[count]) / 2
    return thresholds


def thresholds_at_widest_gaps(entropies):
    """Per non-final exit, the midpoint of the widest gap between neighbouring
    entropies in the middle half of its samples.

    Such thresholds send some samples out and keep others, far from any
    sample's entropy, so that rounding between code paths or devices cannot
    move a sample across them (the GPU check's and the tests' choice).

    Args:
        entropies: per non-final exit, the entropies of all samples.
    """
    thresholds = []
    for e in entropies:
        e = numpy.sort(numpy.asarray(cuda.to_cpu(e), numpy.float64))
        lo, hi = len(e) // 4, max(len(e) // 4 + 1, 3 * len(e) // 4)
        i = lo + int(numpy.argmax(numpy.diff(e[lo:hi + 1])))
        thresholds.append(float(e[i] + e[i + 1]) / 2)
    return thresholds
