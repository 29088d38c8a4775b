"""BranchyNet: a network with early exits, built from a flat list of layers.

A network is written as the reference code writes it: a flat list of layers
(Chainer links or plain functions) in which ``Branch([...])`` marks the point
where an exit leaves the trunk; the list ends with the ``Branch`` of the final
exit::

    BranchyNet([
        L.Convolution2D(1, 5, 5, pad=3),
        Branch([max_pool(2, 2), relu, L.Linear(None, 10)]),    # exit 1
        max_pool(2, 2), relu, L.Linear(None, 84),
        Branch([L.Linear(84, 10)]),                            # final exit
    ], input_shape=(1, 28, 28))

The trunk is cut at the branch points into stages; exit ``n`` is
``heads[n](trunk[n](...trunk[0](x)))``. The trunk is shared: a forward pass
computes every stage once and every head forks off the stage that precedes
it, so the joint loss has one backward pass and the trunk's gradient is
``sum_n w_n dL_n/dtheta``, the quantity the reference code assembles from
per-exit copies of the trunk.

The network is a function from inputs to logits; the training loss (branch
weights, ``percent_train_keeps``, main-only or joint) is the job of
:class:`branchynet.loss.BranchyLoss`, which wraps it.
"""
import chainer
import chainer.functions as F
import numpy
from chainer.backends import cuda

from branchynet import exit_rule, loss
from branchynet.entropy import entropy


class Branch:
    """Marks an exit: the layers of its head and the weight of its loss.

    Args:
        layers: links or functions applied to the trunk's activation at this
            point; the last one produces the class logits.
        weight: weight of this exit's loss in the joint loss (the reference
            code accepts this argument and ignores it, using 1.0).
    """

    def __init__(self, layers, weight=1.0):
        self.layers = list(layers)
        if not self.layers:
            raise ValueError('a Branch needs at least one layer (its classifier)')
        self.weight = weight


class Stage(chainer.Chain):
    """Layers applied in order; a link is registered as ``l<position>``.

    Chainer's ``Sequential`` would do, but it numbers its links by an
    insertion rule that can disagree with their order; naming each link by
    its position keeps checkpoint keys readable (``trunk/1/l4/W``).
    """

    def __init__(self, layers):
        super().__init__()
        self._steps = []
        with self.init_scope():
            for position, layer in enumerate(layers):
                if isinstance(layer, chainer.Link):
                    name = 'l{}'.format(position)
                    setattr(self, name, layer)
                    self._steps.append(name)
                elif callable(layer):
                    self._steps.append(layer)
                else:
                    raise TypeError(
                        'layers must be links or callables, got {!r}'.format(
                            layer))

    def __len__(self):
        return len(self._steps)

    def layers(self):
        """The layers in order (links and functions)."""
        return [getattr(self, s) if isinstance(s, str) else s
                for s in self._steps]

    def forward(self, h):
        """The layers applied in order."""
        for layer in self.layers():
            h = layer(h)
        return h

    def __str__(self):
        return ''.join('  ({}): {}\n'.format(position, layer)
                       for position, layer in enumerate(self.layers()))


class BranchyNet(chainer.Chain):
    """A trunk with several exits (classifiers), trained jointly.

    Args:
        layers: flat list of links/functions with ``Branch`` markers; it must
            end with the ``Branch`` of the final exit.
        input_shape: shape of one sample, e.g. ``(3, 32, 32)``; inputs are
            checked against it.
        name: the network's title for messages and checkpoints, e.g.
            ``'B-AlexNet'`` (kept as :attr:`title`: ``Link.name`` is Chainer's
            name of a link inside its parent).
        branch_weights: loss weight per exit, overriding the weights given
            in the ``Branch`` markers; the defaults of
            :class:`~branchynet.loss.BranchyLoss`.

    Attributes:
        trunk: ``ChainList`` of ``num_exits`` stages.
        heads: ``ChainList`` of ``num_exits`` exit heads.
        title: the network's title.

    Example:
        >>> net = BranchyNet([L.Linear(4, 8), Branch([L.Linear(8, 3)]),
        ...                   F.relu, Branch([L.Linear(8, 3)])], (4,))
        >>> net.num_exits
        2
    """

    def __init__(self, layers, input_shape, name='BranchyNet',
                 branch_weights=None):
        super().__init__()
        stages, heads, weights, pending = [], [], [], []
        for layer in layers:
            if isinstance(layer, Branch):
                stages.append(Stage(pending))
                heads.append(Stage(layer.layers))
                weights.append(layer.weight)
                pending = []
            else:
                pending.append(layer)
        if pending or not heads:
            raise ValueError(
                'the layer list must end with a Branch holding the final '
                'exit\'s head; found {} layer(s) after the last Branch'.format(
                    len(pending)))
        with self.init_scope():
            self.trunk = chainer.ChainList(*stages)
            self.heads = chainer.ChainList(*heads)
        self.input_shape = tuple(input_shape)
        self.title = name
        self.branch_weights = weights if branch_weights is None else branch_weights

    def __str__(self):
        text = '{} ({} exits, input {})\n'.format(
            self.title, self.num_exits, 'x'.join(map(str, self.input_shape)))
        for n, (stage, head) in enumerate(zip(self.trunk, self.heads)):
            text += 'trunk[{}]:\n{}heads[{}] (exit {}, weight {}):\n{}'.format(
                n, stage, n, n + 1, self.branch_weights[n], head)
        return text

    @property
    def num_exits(self):
        """Number of exits, the final one included."""
        return len(self.heads)

    @property
    def branch_weights(self):
        """Declared loss weight of each exit, in order (a tuple of floats)."""
        return self._branch_weights

    @branch_weights.setter
    def branch_weights(self, weights):
        self._branch_weights = loss.check_branch_weights(weights,
                                                         self.num_exits)

    def check_input(self, x):
        """Return ``x`` if it is a float32 batch of ``input_shape`` samples.

        Raises:
            TypeError: not an array or Variable, or not float32.
            ValueError: another sample shape.
        """
        array = x.array if isinstance(x, chainer.Variable) else x
        shape = getattr(array, 'shape', None)
        if shape is None:
            raise TypeError('{} expects a numpy/cupy array or Variable, got '
                            '{}'.format(self.title, type(x).__name__))
        if tuple(shape[1:]) != self.input_shape or len(shape) != 1 + len(
                self.input_shape):
            raise ValueError(
                '{} expects input of shape (batch, {}), got {}'.format(
                    self.title, ', '.join(map(str, self.input_shape)),
                    tuple(shape)))
        if array.dtype != numpy.float32:
            raise TypeError('{} expects float32 input, got {}'.format(
                self.title, array.dtype))
        return x

    def forward(self, x):
        """Logits of every exit, in order: a list of ``(B, classes)`` Variables."""
        h = self.check_input(x)
        outputs = []
        for stage, head in zip(self.trunk, self.heads):
            h = stage(h)
            outputs.append(head(h))
        return outputs

    def main_forward(self, x):
        """Logits of the main network alone: the trunk and the final exit."""
        h = self.check_input(x)
        for stage in self.trunk:
            h = stage(h)
        return self.heads[-1](h)

    def predict(self, x, thresholds=None, exit_fractions=None):
        """Early-exit inference on a batch.

        Only the samples still remaining run through each deeper stage.
        Runs in test mode without building a graph.

        Args:
            x: numpy or cupy float32 array of shape ``(B,) + input_shape``;
                it is moved to the model's device.
            thresholds: entropy threshold per non-final exit (strict ``<``),
                or an :class:`~branchynet.EntropyThresholds`.
            exit_fractions: or, instead, the share of the samples reaching
                each non-final exit that leaves there, lowest entropy first
                (or a :class:`~branchynet.LowestEntropyFractions`).

        Returns:
            ``(labels, exits)``: numpy int64 arrays of shape ``(B,)``, the
            predicted class and the 0-based index of the exit taken (two
            empty arrays for an empty batch).

        Raises:
            ValueError: images holding NaN or infinity (the timed
                :meth:`predict_sample` does not look).
        """
        rule = exit_rule.make_rule(self.num_exits, thresholds, exit_fractions)
        h = self.device.send(self.check_input(x))
        if len(h) == 0:
            return (numpy.zeros(0, numpy.int64),) * 2
        xp = self.xp
        if not bool(xp.isfinite(h).all()):
            raise ValueError('{}: the images hold NaN or infinite values; no '
                             'label of theirs would mean anything'.format(
                                 self.title))
        labels = xp.zeros(len(h), dtype=numpy.int64)
        exits = xp.full(len(h), self.num_exits - 1, dtype=numpy.int64)
        remaining = xp.arange(len(h))
        last = self.num_exits - 1
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            for n, (stage, head) in enumerate(zip(self.trunk, self.heads)):
                h = stage(h).array
                y = head(h).array
                if n == last:
                    labels[remaining] = y.argmax(axis=1)
                    break
                take = rule.takes(n, entropy(F.softmax(y).array))
                labels[remaining[take]] = y[take].argmax(axis=1)
                exits[remaining[take]] = n
                remaining, h = remaining[~take], h[~take]
                if len(remaining) == 0:
                    break
        return cuda.to_cpu(labels), cuda.to_cpu(exits)

    def predict_sample(self, x, thresholds):
        """Early-exit inference on one sample, the latency path.

        At each exit the entropy is brought to the host and the exit rule
        decides there; no index bookkeeping is done. Gives the same answer
        as :meth:`predict` on a batch of one.

        Args:
            x: array of shape ``(1,) + input_shape`` on any device.
            thresholds: entropy threshold per non-final exit, or an
                :class:`~branchynet.EntropyThresholds` made once beforehand
                (what a timed loop should pass: it is not checked again).

        Returns:
            ``(label, exit)`` as Python ints.
        """
        rule = exit_rule.make_rule(self.num_exits, thresholds=thresholds)
        if len(x) != 1:
            raise ValueError('predict_sample takes a batch of one sample, got '
                             '{}'.format(len(x)))
        h = self.device.send(self.check_input(x))
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            for n, (stage, head) in enumerate(zip(self.trunk, self.heads)):
                h = stage(h)
                y = head(h).array
                if n == self.num_exits - 1:
                    break
                on_host = cuda.to_cpu(entropy(F.softmax(y).array))
                if rule.takes(n, on_host)[0]:
                    break
        return int(y[0].argmax()), n
