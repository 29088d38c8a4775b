"""The exit rule: which samples leave the network at which exit.

Exit ``n`` (0-based) of an ``N``-exit network may take a sample; exit ``N-1``
takes every sample still left. Two rules decide, at each non-final exit,
from the softmax entropy of the samples that reached it:

- :class:`EntropyThresholds` (the paper's rule): entropy < threshold, strict.
- :class:`LowestEntropyFractions` (the reference code's "percent" mode): the
  given fraction of the samples that reached the exit, lowest entropy first.

The model's early-exit inference and the offline threshold sweep both ask the
same rule objects, so there is exactly one definition of the rule.
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

    Thresholds are compared in double precision.

    Args:
        thresholds: one non-negative number per non-final exit. ``0`` sends
            nothing out of that exit; ``inf`` sends everything.
        num_exits: number of exits of the network, the final one included.
    """

    def __init__(self, thresholds, num_exits):
        self.values = _check_values(thresholds, num_exits, 'thresholds')

    def takes(self, n, entropy):
        """Boolean mask over ``entropy`` (samples at exit ``n``) that exit."""
        # In double precision, as a Python float on the host compares: a
        # float32 entropy must not exit in one path and stay in another.
        return entropy.astype(numpy.float64) < self.values[n]

    def __repr__(self):
        return 'EntropyThresholds({})'.format(list(self.values))


class LowestEntropyFractions:
    """At exit ``n``, the ``fractions[n]`` share of the samples that reached it exits.

    The samples with the lowest entropy exit first; the count is
    ``floor(fraction * reached)`` (as the reference's ``int(...)``, made robust
    to binary rounding such as ``0.29 * 100 = 28.999...``). Ties are broken
    by sample order.
    """

    def __init__(self, fractions, num_exits):
        self.values = _check_values(fractions, num_exits, 'exit_fractions')
        if any(f > 1 for f in self.values):
            raise ValueError('exit_fractions must lie in [0, 1], got {!r}'
                             .format(list(self.values)))

    def takes(self, n, entropy):
        count = math.floor(self.values[n] * entropy.shape[0] + 1e-9)
        xp = cuda.get_array_module(entropy)
        order = (numpy.argsort(entropy, kind='stable') if xp is numpy
                 else xp.argsort(entropy))
        mask = xp.zeros(entropy.shape[0], dtype=bool)
        mask[order[:count]] = True
        return mask

    def __repr__(self):
        return 'LowestEntropyFractions({})'.format(list(self.values))


def make_rule(num_exits, thresholds=None, exit_fractions=None):
    """The rule asked for by exactly one of ``thresholds``/``exit_fractions``."""
    if (thresholds is None) == (exit_fractions is None):
        raise TypeError('give exactly one of thresholds= or exit_fractions=')
    if thresholds is not None:
        return EntropyThresholds(thresholds, num_exits)
    return LowestEntropyFractions(exit_fractions, num_exits)


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
