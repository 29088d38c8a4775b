"""Softmax entropy, the confidence measure of BranchyNet's exit rule.

``entropy(y) = -sum_c y_c ln y_c`` over the last axis, with ``0 ln 0 = 0``.
The paper prints the formula without the minus sign; the reference code (and
this module) use the correct, non-negative one.
"""
import numpy
from chainer.backends import cuda

_gpu_kernel = None


def _entropy_kernel():
    # Built on first use so that importing this module never needs CuPy.
    global _gpu_kernel
    if _gpu_kernel is None:
        _gpu_kernel = cuda.cupy.ReductionKernel(
            'T p', 'T h',
            'p > 0 ? -p * log(p) : (T)0',
            'a + b', 'h = a', '0', 'branchynet_entropy')
    return _gpu_kernel


def entropy(p):
    """Entropy of each row of a probability array (natural log).

    Args:
        p: numpy or cupy array of probabilities, classes on the last axis,
            e.g. shape ``(B, C)``. Zeros are allowed and contribute 0.

    Returns:
        An array of the same module and dtype as ``p`` with the last axis
        reduced, e.g. shape ``(B,)``.

    >>> entropy(numpy.array([[0.5, 0.5, 0.0]])).round(4)
    array([0.6931])
    """
    xp = cuda.get_array_module(p)
    if not isinstance(p, xp.ndarray):
        raise TypeError(
            'entropy expects a numpy or cupy array, got {}'.format(type(p)))
    if p.ndim < 1 or p.dtype.kind != 'f':
        raise TypeError(
            'entropy expects a floating-point array with classes on the last '
            'axis, got dtype {} and shape {}'.format(p.dtype, p.shape))
    if xp is numpy:
        # log(1) = 0 where p == 0: no warnings, and 0 * 0 gives 0 ln 0 = 0.
        return -(p * numpy.log(numpy.where(p > 0, p, 1))).sum(axis=-1)
    return _entropy_kernel()(p, axis=-1)

