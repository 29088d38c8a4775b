"""A stack of residual convolutions in two layouts: deep (sequential) and shallow (parallel).

The network of the deep-vs-shallow study (docs/deep_shallow.md), after
Bermeitinger, Hrycej and Handschuh, *Make Deep Networks Shallow Again*
(KDIR 2023). Both layouts hold the same links, so the same parameters:

- an input convolution (``in_channels`` -> ``filters``, stride 2, same
  padding) and ReLU, then 2x2 max pooling: 32x32 CIFAR-10 images become
  8x8 maps, 28x28 MNIST images 7x7 (our choice, to keep a CPU grid
  affordable);
- ``layers`` residual layers ``F_k(h) = relu(conv_k(h))`` (``filters`` ->
  ``filters``, ``ksize`` x ``ksize``, stride 1, same padding):

  * ``'sequential'``: ``h_{k+1} = h_k + F_k(h_k)`` (the deep network);
  * ``'parallel'``: ``y = h_0 + sum_k F_k(h_0)`` (its first-order
    truncation: one broad layer of all ``F_k`` side by side);

- global average pooling and a linear classifier.

The layer ``F_k`` (convolution + activation, no normalisation), the stem
and the head are assumptions (the paper's layer is not known in detail);
docs/deep_shallow.md names them.
"""
import chainer
import chainer.functions as F
import chainer.links as L

from branchynet.layers import Convolution2D

LAYOUTS = ('sequential', 'parallel')


class ResidualStack(chainer.Chain):
    """The residual stack in one of :data:`LAYOUTS`.

    Args:
        in_channels: channels of the input images (1 MNIST, 3 CIFAR-10).
        filters: channels of every residual layer.
        layers: number of residual layers (at least 0; 0 is the stem and the
            classifier alone, the same network in both layouts).
        ksize: kernel size of the residual layers (odd).
        layout: ``'sequential'`` or ``'parallel'``.
        n_out: classes.
    """

    def __init__(self, in_channels, filters, layers, ksize=3,
                 layout='sequential', n_out=10):
        if layout not in LAYOUTS:
            raise ValueError('layout must be one of {}, got {!r}'.format(
                ', '.join(LAYOUTS), layout))
        if ksize < 1 or ksize % 2 == 0:
            raise ValueError('ksize must be odd, got {}'.format(ksize))
        if layers < 0 or filters < 1:
            raise ValueError('layers >= 0 and filters >= 1, got {} and {}'
                             .format(layers, filters))
        super().__init__()
        self.layout = layout
        self.shape = {'in_channels': in_channels, 'filters': filters,
                      'layers': layers, 'ksize': ksize, 'n_out': n_out}
        with self.init_scope():
            self.stem = Convolution2D(in_channels, filters, ksize, stride=2,
                                      pad=ksize // 2)
            self.residuals = chainer.ChainList(*[
                Convolution2D(filters, filters, ksize, pad=ksize // 2)
                for _ in range(layers)])
            self.head = L.Linear(filters, n_out)

    def trunk(self, x):
        """The stem's output ``h_0`` (after pooling)."""
        return F.max_pooling_2d(F.relu(self.stem(x)), 2, 2)

    def residual_steps(self, h0):
        """Each residual layer's input and what it adds, in order (sequential:
        ``(h_k, F_k(h_k))``; parallel: ``(h_0, F_k(h_0))``), and the features
        before the classifier: ``h_0`` plus everything added."""
        steps, h = [], h0
        for conv in self.residuals:
            read = h if self.layout == 'sequential' else h0
            added = F.relu(conv(read))
            steps.append((read, added))
            h = h + added
        return steps, h

    def classify(self, h):
        """The classifier on the features ``h``: logits."""
        return self.head(F.average(h, axis=(2, 3)))

    def forward(self, x):
        return self.classify(self.residual_steps(self.trunk(x))[1])

    @property
    def num_params(self):
        return sum(p.size for p in self.params())


def get_network(in_channels, filters, layers, ksize=3, layout='sequential',
                n_out=10):
    """A freshly initialised :class:`ResidualStack` (Chainer's default
    initialisers, drawn from NumPy's global generator)."""
    return ResidualStack(in_channels, filters, layers, ksize, layout, n_out)
