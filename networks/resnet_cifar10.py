"""B-ResNet-110 for CIFAR-10 (3x32x32): 3 exits, 109 conv + 1 linear on the main path.

Layer list as in the reference code (docs/reference.md): the branches leave after the
stem's convolution block and after the first 18 residual blocks (the 37th
convolution). The paper's text places exit 1 after the 2nd convolution; we
follow the code.

Initialisation, as Chainer 1 drew it for the reference: the stem and the
residual-block convolutions pass ``wscale=sqrt(2)``, which Chainer 1 turns
into std ``sqrt(wscale / fan_in) = 2**0.25 / sqrt(fan_in)`` (LeCun-normal
scaled by ``2**0.25``; not He-normal, which would be ``sqrt(2 / fan_in)``);
exit 1's convolutions and every linear layer pass nothing: LeCun-normal.
Biases zero; BatchNorm gamma 1, beta 0.
"""
import chainer
import chainer.functions as F
import chainer.links as L
from chainer.initializers import LeCunNormal

from branchynet import Branch, BranchyNet
from branchynet.batch_norm import BatchNormalization
from branchynet.layers import Convolution2D, average_pool, lrn, relu

INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10
BLOCKS_PER_STAGE = 18
# Chainer 1's wscale=sqrt(2): std = sqrt(sqrt(2) / fan_in) = 2**0.25 / sqrt(fan_in)
RESIDUAL_INIT_SCALE = 2 ** 0.25


def _residual_init():
    return LeCunNormal(scale=RESIDUAL_INIT_SCALE)


class ResBlock(chainer.Chain):
    """Basic residual block: conv3x3-BN-relu-conv3x3-BN plus the shortcut.

    When the block changes the channel count, the shortcut is the input with
    zero channels concatenated in front; when it also strides, the shortcut
    is subsampled by ``average_pooling_2d(1, stride)`` (the reference's
    parameter-free "option A" shortcut).
    """

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.extra_channels = out_channels - in_channels
        self.stride = stride
        with self.init_scope():
            self.conv1 = Convolution2D(in_channels, out_channels, 3, stride,
                                         1, initialW=_residual_init())
            self.bn1 = BatchNormalization(out_channels)
            self.conv2 = Convolution2D(out_channels, out_channels, 3, 1, 1,
                                         initialW=_residual_init())
            self.bn2 = BatchNormalization(out_channels)

    def forward(self, x):
        """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        h = self.bn1(self.conv1(x), relu=True)
        h = self.conv2(h)
        shortcut = x
        if self.extra_channels:
            # zero channels in front (a pad, not a concat with an array of
            # zeros, so that an exported graph keeps a free batch size)
            shortcut = F.pad(shortcut, ((0, 0), (self.extra_channels, 0),
                                        (0, 0), (0, 0)), 'constant')
        if self.stride != 1:
            # the reference's average_pooling_2d(1, stride), as a strided
            # slice: the same values without Chainer's im2col copy
            shortcut = shortcut[:, :, ::self.stride, ::self.stride]
        # relu(bn2(h) + shortcut), in one pass each way on the CPU
        return self.bn2(h, relu=True, residual=shortcut)


def _stage(in_channels, out_channels, stride):
    return [ResBlock(in_channels, out_channels, stride)] + [
        ResBlock(out_channels, out_channels)
        for _ in range(BLOCKS_PER_STAGE - 1)]


def get_network():
    """B-ResNet-110: 3 exits, freshly initialised (from NumPy's global generator).

    Returns:
        A :class:`branchynet.BranchyNet` on the CPU.
    """
    lecun = LeCunNormal()
    layers = [
        Convolution2D(3, 16, 3, 1, 0, initialW=_residual_init()),  # 30x30
        BatchNormalization(16), relu,
        Branch([
            Convolution2D(16, 64, 5, pad=2, initialW=lecun), relu, lrn(),
            Convolution2D(64, 32, 3, pad=1, initialW=lecun), relu,
            Convolution2D(32, 32, 3, pad=1, initialW=lecun), relu,
            L.Linear(32 * 30 * 30, NUM_CLASSES, initialW=lecun),
        ]),
        *_stage(16, 16, 1),
        Branch([ResBlock(16, 16),
                L.Linear(16 * 30 * 30, NUM_CLASSES, initialW=lecun)]),
        *_stage(16, 32, 2),
        *_stage(32, 64, 2),
        average_pool(6, 1),  # 8x8 -> 3x3
        Branch([L.Linear(64 * 3 * 3, NUM_CLASSES, initialW=lecun)]),
    ]
    return BranchyNet(layers, INPUT_SHAPE, name='B-ResNet-110')
