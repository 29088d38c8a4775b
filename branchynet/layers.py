"""Function layers for network definitions: named, configured Chainer functions.

These play the role of the reference code's ``FL(F.max_pooling_2d, 3, 2)``:
a parameter-free step in a layer list. Each prints as what it is, so
``print(net)`` reads like the network's definition.
"""
import chainer.functions as F


class FunctionLayer:
    """A Chainer function with fixed keyword arguments, applied to one input."""

    def __init__(self, name, function, **kwargs):
        self.name = name
        self.function = function
        self.kwargs = kwargs

    def __call__(self, x):
        return self.function(x, **self.kwargs)

    def __repr__(self):
        args = ', '.join('{}={}'.format(k, v) for k, v in self.kwargs.items())
        return '{}({})'.format(self.name, args)


relu = FunctionLayer('relu', F.relu)


def max_pool(ksize, stride):
    """Max pooling with Chainer's default ``cover_all=True``, as the reference."""
    return FunctionLayer('max_pool', F.max_pooling_2d, ksize=ksize,
                         stride=stride, cover_all=True)


def average_pool(ksize, stride):
    """Average pooling, no padding (ResNet-110's final pooling and shortcuts)."""
    return FunctionLayer('average_pool', F.average_pooling_2d, ksize=ksize,
                         stride=stride)


def lrn():
    """Local response normalisation with the reference's n=3, alpha=5e-5, beta=0.75."""
    return FunctionLayer('lrn', F.local_response_normalization, n=3,
                         k=2, alpha=5e-5, beta=0.75)


def dropout(ratio=0.5):
    """Dropout, active only while ``chainer.config.train`` is True."""
    return FunctionLayer('dropout', F.dropout, ratio=ratio)
