"""Backbones for elastic networks at CIFAR-10 scale (3x32x32, from scratch).

The Elastic paper (Zhou et al., AICAS 2019) adds an output after every block
of ImageNet networks resized to 224x224 inputs. Its largest gain was on
MobileNet (depthwise separable convolutions) and its clearest loss on
ResNet-50. These are the two families at the scale this project can train on
a CPU:

- :func:`mobilenet_blocks`: a MobileNet (v1) stem and depthwise separable
  blocks, width ``width`` of the original's channels, strides placed for
  32x32 inputs (three halvings: 32 -> 4).
- :func:`resnet_blocks`: the CIFAR ResNet of He et al. (``6n + 2`` layers:
  ResNet-20 for ``n = 3``), with this project's B-ResNet-110 residual
  blocks (option-A shortcuts).

:func:`get_network` makes the elastic network (a head after every block, or
after every ``k``-th) or, with ``elastic=False``, the plain backbone: the
same blocks and final head, one exit.
"""
import chainer

from branchynet import elastic
from branchynet.batch_norm import BatchNormalization
from branchynet.layers import Convolution2D
from networks.resnet_cifar10 import ResBlock

INPUT_SHAPE = (3, 32, 32)
CLASSES = 10
# (output channels at width 1, stride) of each separable block; MobileNet
# v1's first seven blocks with strides for 32x32 inputs
MOBILENET = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1))
BACKBONES = ('mobilenet', 'resnet')


class ConvBN(chainer.Chain):
    """Convolution (no bias), BatchNorm, ReLU."""

    def __init__(self, in_channels, out_channels, ksize, stride=1, pad=0,
                 groups=1):
        super().__init__()
        with self.init_scope():
            self.conv = Convolution2D(in_channels, out_channels, ksize,
                                      stride, pad, nobias=True, groups=groups)
            self.bn = BatchNormalization(out_channels)

    def forward(self, x):
        return self.bn(self.conv(x), relu=True)

    def port_description(self, prefix, describe):
        return {'type': 'sequence', 'layers': [
            describe(self.conv, prefix + '/conv'),
            describe(self.bn, prefix + '/bn'), {'type': 'relu'}]}


class Separable(chainer.Chain):
    """A depthwise separable block: 3x3 depthwise, then 1x1 pointwise, each
    with BatchNorm and ReLU (MobileNet v1)."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        with self.init_scope():
            self.depthwise = ConvBN(in_channels, in_channels, 3, stride, 1,
                                    groups=in_channels)
            self.pointwise = ConvBN(in_channels, out_channels, 1)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))

    def port_description(self, prefix, describe):
        return {'type': 'sequence', 'layers': [
            describe(self.depthwise, prefix + '/depthwise'),
            describe(self.pointwise, prefix + '/pointwise')]}


def mobilenet_blocks(width=0.5):
    """The stem (3x3 convolution, 32 * width channels) and seven separable
    blocks."""
    def channels(c):
        return max(8, int(c * width))
    blocks = [ConvBN(3, channels(32), 3, 1, 1)]
    previous = channels(32)
    for out, stride in MOBILENET:
        blocks.append(Separable(previous, channels(out), stride))
        previous = channels(out)
    return blocks


def resnet_blocks(n=3):
    """The stem (3x3 convolution to 16 channels) and ``3n`` residual blocks
    in three stages of 16, 32 and 64 channels."""
    blocks = [ConvBN(3, 16, 3, 1, 1)]
    for in_c, out_c, stride in ((16, 16, 1), (16, 32, 2), (32, 64, 2)):
        blocks.append(ResBlock(in_c, out_c, stride))
        blocks += [ResBlock(out_c, out_c) for _ in range(n - 1)]
    return blocks


def get_network(backbone='mobilenet', elastic_outputs=True, every=None,
                at=None, **sizes):
    """An elastic network on a backbone, or the plain backbone.

    Args:
        backbone: ``'mobilenet'`` or ``'resnet'``.
        elastic_outputs: False: the backbone alone (one exit).
        every, at: where the heads go (:func:`branchynet.elastic.build`);
            by default after every block.
        sizes: ``width`` (MobileNet) or ``n`` (ResNet).
    """
    if backbone not in BACKBONES:
        raise ValueError('backbone must be one of {}, got {!r}'.format(
            ', '.join(BACKBONES), backbone))
    blocks = (mobilenet_blocks if backbone == 'mobilenet'
              else resnet_blocks)(**sizes)
    title = '{}{}'.format('Elastic-' if elastic_outputs else '',
                          {'mobilenet': 'MobileNet', 'resnet': 'ResNet'}[
                              backbone])
    if not elastic_outputs:
        at, every = [], None
    return elastic.build(blocks, INPUT_SHAPE, CLASSES, at=at, every=every,
                         name=title)
