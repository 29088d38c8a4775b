"""B-LeNet for MNIST (1x28x28): LeNet with one early exit after the first conv.

Layer list as in the reference code (docs/reference.md); pooling uses Chainer's
``cover_all=True``, which is why the flattened sizes are 720 and 640.
Every weight is LeCun-normal (std ``1 / sqrt(fan_in)``), biases zero: what
Chainer 1 drew for the reference's links, which pass no ``wscale``.
"""
import chainer.links as L
from chainer.initializers import LeCunNormal

from branchynet import Branch, BranchyNet
from branchynet.layers import Convolution2D, max_pool, relu

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


def get_network():
    """B-LeNet: 2 exits, freshly initialised (from NumPy's global generator).

    Returns:
        A :class:`branchynet.BranchyNet` on the CPU.
    """
    lecun = LeCunNormal()
    layers = [
        Convolution2D(1, 5, 5, pad=3, initialW=lecun),
        Branch([
            max_pool(2, 2), relu,
            Convolution2D(5, 10, 3, pad=1, initialW=lecun),
            max_pool(2, 2), relu,
            L.Linear(10 * 8 * 8, NUM_CLASSES, initialW=lecun),  # 10 maps, 8x8
        ]),
        max_pool(2, 2), relu,
        Convolution2D(5, 10, 5, pad=3, initialW=lecun),
        max_pool(2, 2), relu,
        Convolution2D(10, 20, 5, pad=3, initialW=lecun),
        max_pool(2, 2), relu,
        L.Linear(20 * 6 * 6, 84, initialW=lecun),  # 20 maps, 6x6
        Branch([L.Linear(84, NUM_CLASSES, initialW=lecun)]),
    ]
    return BranchyNet(layers, INPUT_SHAPE, name='B-LeNet')
