"""Function layers for network definitions: named, configured Chainer functions.

These play the role of the reference code's ``FL(F.max_pooling_2d, 3, 2)``:
a parameter-free step in a layer list. Each prints as what it is, so
``print(net)`` reads like the network's definition.
"""
import chainer.functions as F
import chainer.links as L

from branchynet import kernels


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
    """Max pooling with Chainer's default ``cover_all=True``, as the reference
    (:func:`branchynet.kernels.max_pooling_2d`: Chainer's function, or the
    same computation without its copies on the CPU)."""
    return FunctionLayer('max_pool', kernels.max_pooling_2d, ksize=ksize,
                         stride=stride, cover_all=True)


class Convolution2D(L.Convolution2D):
    """Chainer's ``L.Convolution2D`` (the same parameters, initialisers and
    checkpoint keys) computed with :func:`branchynet.kernels.convolution_2d`:
    Chainer's function, or the same computation without its copies on the
    CPU."""

    def forward(self, x):
        if self.W.array is None or self.dilate != (1, 1):
            return super().forward(x)
        if self.groups == 1:
            return kernels.convolution_2d(x, self.W, self.b, self.stride,
                                          self.pad)
        if self.groups == self.W.shape[0] and self.W.shape[1] == 1:
            return kernels.depthwise_convolution_2d(x, self.W, self.b,
                                                    self.stride, self.pad)
        return super().forward(x)


def average_pool(ksize, stride):
    """Average pooling, no padding (ResNet-110's final pooling and shortcuts)."""
    return FunctionLayer('average_pool', F.average_pooling_2d, ksize=ksize,
                         stride=stride)


def _global_average(x):
    # a mean, not F.average_pooling_2d: Chainer pools on the CPU through
    # im2col, a copy of the input
    return F.mean(x, axis=(2, 3), keepdims=True)


# Average over each feature map, (N, C, H, W) -> (N, C, 1, 1): the Elastic
# heads' pooling (branchynet/elastic.py)
global_average_pool = FunctionLayer('global_average_pool', _global_average)


def lrn():
    """Local response normalisation with the reference's n=3, alpha=5e-5, beta=0.75."""
    return FunctionLayer('lrn', F.local_response_normalization, n=3,
                         k=2, alpha=5e-5, beta=0.75)


def dropout(ratio=0.5):
    """Dropout, active only while ``chainer.config.train`` is True."""
    return FunctionLayer('dropout', F.dropout, ratio=ratio)
