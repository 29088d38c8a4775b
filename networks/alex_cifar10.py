"""B-AlexNet for CIFAR-10 (3x32x32): 3 exits, or the Fig. 5 two-exit variant.

Layer lists as in the reference code (docs/reference.md). The reference places the
branches after conv2 and conv3; the paper's text says after conv1 and conv2.
We follow the code. Every weight is LeCun-normal (std ``1 / sqrt(fan_in)``),
biases zero: what Chainer 1 drew for the reference's links, which pass no
``wscale``.
"""
import chainer.links as L
from chainer.initializers import LeCunNormal

from branchynet import Branch, BranchyNet
from branchynet.layers import Convolution2D, dropout, lrn, max_pool, relu

INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10
MAX_BRANCH1_CONVS = 4


def _conv(in_channels, out_channels, ksize, pad):
    return Convolution2D(in_channels, out_channels, ksize, pad=pad,
                           initialW=LeCunNormal())


def _linear(in_size, out_size):
    return L.Linear(in_size, out_size, initialW=LeCunNormal())


def _conv3x3(in_channels, out_channels):
    return [_conv(in_channels, out_channels, 3, 1), relu]


def _exit1(num_convs):
    """Exit 1 head on the 64x16x16 conv2 output: ``num_convs`` 3x3 convs."""
    layers = [relu, max_pool(3, 2), lrn()]
    if num_convs == 0:
        return layers + [max_pool(3, 2),
                         _linear(64 * 4 * 4, NUM_CLASSES)]
    layers += _conv3x3(64, 32)
    for _ in range(num_convs - 1):
        layers += _conv3x3(32, 32)
    return layers + [max_pool(3, 2),
                     _linear(32 * 4 * 4, NUM_CLASSES)]


def get_network(branch1_convs=None):
    """B-AlexNet.

    Args:
        branch1_convs: ``None`` for the paper's 3-exit B-AlexNet (exit 1 with
            two convs, exit 2 with one). An int ``k`` in 0..4 builds the
            Fig. 5 variant instead: exit 1 with ``k`` convs and no exit 2.

    Returns:
        A :class:`branchynet.BranchyNet` on the CPU, freshly initialised
        (from NumPy's global generator).
    """
    if branch1_convs is None:
        exit1, name = _exit1(2), 'B-AlexNet'
    elif isinstance(branch1_convs, int) and not isinstance(branch1_convs, bool) \
            and 0 <= branch1_convs <= MAX_BRANCH1_CONVS:
        exit1, name = _exit1(branch1_convs), \
            'B-AlexNet-exit1-{}conv'.format(branch1_convs)
    else:
        raise ValueError('branch1_convs must be None or an int in 0..{}, got '
                         '{!r}'.format(MAX_BRANCH1_CONVS, branch1_convs))
    exit2 = [Branch([relu, max_pool(3, 2), lrn()] + _conv3x3(96, 32) + [
        max_pool(3, 2), _linear(32 * 2 * 2, NUM_CLASSES)])]
    layers = [
        _conv(3, 32, 5, 2),
        relu, max_pool(3, 2), lrn(),
        _conv(32, 64, 5, 2),
        Branch(exit1),
        relu, max_pool(3, 2), lrn(),
        _conv(64, 96, 3, 1),
    ] + (exit2 if branch1_convs is None else []) + [
        relu,
        _conv(96, 96, 3, 1), relu,
        _conv(96, 64, 3, 1), relu,
        max_pool(3, 2),
        _linear(64 * 4 * 4, 256), relu, dropout(0.5),
        _linear(256, 128), relu, dropout(0.5),
        Branch([_linear(128, NUM_CLASSES)]),
    ]
    return BranchyNet(layers, INPUT_SHAPE, name=name)
