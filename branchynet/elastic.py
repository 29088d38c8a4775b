"""Elastic networks: an exit after every block of any trunk.

Zhou, Bai, Bhattacharyya and Huttunen, *Elastic Neural Networks for
Classification* (AICAS 2019), put an output after every layer or block of an
existing network, each with the same small head, and train all of them with
equal loss weights. :func:`build` makes such a network from any trunk given as
a sequence of Chainer blocks. The result is an ordinary
:class:`~branchynet.BranchyNet`: joint loss, early exit, the sweep, timing,
the port kit and the ONNX export all apply to it.

The paper's protocol starts from an ImageNet-pretrained backbone, trains the
new heads with the backbone frozen, then trains everything. ImageNet weights
cannot be downloaded here, so a backbone phase on the task itself stands in
for the pretraining (:data:`PHASES`). :class:`FrozenBackboneLoss` is the loss
of the middle phase: the trunk and the final head run in test mode without a
graph, so neither their parameters nor their BatchNorm statistics change,
and only the non-final heads learn.

:func:`exit_for_budget` answers within a compute budget instead of by
entropy: the deepest exit whose whole path costs no more than the budget
(multiply-adds, or measured milliseconds), expressed as a threshold vector
of the ordinary exit rule.
"""
import chainer
import chainer.functions as F
import chainer.links as L
import numpy

from branchynet import costs, layers, timing
from branchynet.model import Branch, BranchyNet

# backbone: the main network alone (our stand-in for ImageNet pretraining);
# heads: the non-final heads with the backbone frozen; joint: everything,
# every exit's loss weighted 1
PHASES = ('backbone', 'heads', 'joint')


def paper_head(channels, classes, dropout=0.5):
    """The Elastic paper's head: global average pooling, dropout, a linear
    layer to the classes (the softmax is in the loss)."""
    return [layers.global_average_pool, layers.dropout(dropout),
            L.Linear(channels, classes)]


def head_positions(count, at=None, every=None):
    """Indices of the blocks that an elastic head follows.

    Args:
        count: the number of blocks.
        at: a list of block indices (0-based), or
        every: ``k``: after blocks ``k - 1, 2k - 1, ...``.
        Neither: after every block. The last block is followed by the final
        exit, never by an elastic head.

    Raises:
        ValueError: both given, ``every`` below 1, or an index outside
            ``0 .. count - 2``.
    """
    if at is not None and every is not None:
        raise ValueError('give the heads\' places by at= or by every=, not '
                         'both')
    if at is None:
        every = 1 if every is None else every
        if not isinstance(every, int) or every < 1:
            raise ValueError('every must be a whole number of blocks, at '
                             'least 1, got {!r}'.format(every))
        return list(range(every - 1, count - 1, every))
    chosen = sorted(set(at))
    wrong = [i for i in chosen if not 0 <= i < count - 1]
    if wrong:
        raise ValueError('elastic heads can follow blocks 0 .. {} (the last '
                         'block is followed by the final exit), got {}'.format(
                             count - 2, wrong))
    return chosen


def output_shapes(blocks, input_shape):
    """The shape of one sample after each block (a list of tuples)."""
    h = numpy.zeros((1,) + tuple(input_shape), numpy.float32)
    shapes = []
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for block in blocks:
            h = block(h)
            shapes.append(tuple(h.shape[1:]))
    return shapes


def build(blocks, input_shape, classes=10, at=None, every=None,
          head=paper_head, final_head=None, name='Elastic network'):
    """A BranchyNet with an elastic head after the chosen blocks of a trunk.

    Args:
        blocks: the trunk, a sequence of Chainer links or callables, each
            taking and returning a ``(batch, C, H, W)`` array.
        input_shape: one sample's shape.
        classes: the number of classes.
        at, every: where the heads go (:func:`head_positions`); by default
            after every block but the last.
        head: ``head(channels, classes)`` gives one head's layer list
            (default: the paper's, :func:`paper_head`).
        final_head: the final exit's layer list (default: ``head`` after
            the last block, as the paper's backbones end with global
            pooling and a classifier).
        name: the network's title.

    Returns:
        A :class:`~branchynet.BranchyNet` with one exit per chosen block and
        the final exit; every loss weight 1.
    """
    blocks = list(blocks)
    if not blocks:
        raise ValueError('an elastic network needs at least one block')
    shapes = output_shapes(blocks, input_shape)
    positions = set(head_positions(len(blocks), at, every))
    # the final head is made first: from one seed, the network with and
    # without elastic heads has the same main network
    final = Branch(final_head if final_head is not None
                   else head(shapes[-1][0], classes))
    flat = []
    for i, (block, shape) in enumerate(zip(blocks, shapes)):
        flat.append(block)
        if i in positions:
            flat.append(Branch(head(shape[0], classes)))
    return BranchyNet(flat + [final], input_shape, name=name)


class FrozenBackboneLoss(chainer.Chain):
    """The heads-only phase: the non-final heads learn on a frozen backbone.

    The trunk runs in test mode without building a graph (BatchNorm uses and
    keeps its running statistics, dropout is off), so no backbone parameter
    or statistic can change; the final head is not run. The loss is the sum
    of the non-final exits' softmax cross-entropies, every weight 1. Reports
    ``loss``, ``exit<k>/loss`` and ``exit<k>/accuracy`` as
    :class:`~branchynet.loss.BranchyLoss` does (non-final exits only).

    Call :meth:`freeze` after the optimizer is set up on this link: it
    disables the backbone's update rules, so that Adam does not even
    advance their step counts.
    """

    def __init__(self, net):
        super().__init__()
        with self.init_scope():
            self.net = net

    def backbone(self):
        """The links that stay fixed: every trunk stage and the final head."""
        return list(self.net.trunk) + [self.net.heads[-1]]

    def freeze(self):
        for link in self.backbone():
            link.disable_update()

    def unfreeze(self):
        for link in self.backbone():
            link.enable_update()

    def forward(self, x, t):
        net = self.net
        h = net.check_input(x)
        features = []
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            for stage in net.trunk[:-1]:
                h = stage(h)
                features.append(h.array)
        total, observations = 0, {}
        for n, (head, feature) in enumerate(zip(net.heads[:-1], features)):
            y = head(feature)
            loss = F.softmax_cross_entropy(y, t)
            total += loss
            observations['exit{}/loss'.format(n + 1)] = loss
            observations['exit{}/accuracy'.format(n + 1)] = F.accuracy(y, t)
        observations['loss'] = total
        chainer.report(observations, self)
        return total


def exit_for_budget(path_costs, budget):
    """The deepest exit whose whole path costs no more than ``budget``.

    Args:
        path_costs: the cost of answering at each exit, in exit order
            (:func:`path_multiply_adds`, or measured ms per exit path).
        budget: the most one sample may cost, in the same unit.

    Returns:
        ``(exit, thresholds)``: the 0-based exit, and the threshold vector
        of the entropy rule that sends every sample out there (0 before it:
        nothing leaves, since entropies are never below 0; infinity at it).

    Raises:
        ValueError: even the first exit costs more than the budget.
    """
    costs = [float(c) for c in path_costs]
    within = [n for n, cost in enumerate(costs) if cost <= budget]
    if not within:
        raise ValueError('no exit fits a budget of {:g}: the cheapest costs '
                         '{:g}'.format(budget, min(costs)))
    chosen = max(within)
    return chosen, timing.forced_thresholds(len(costs), chosen)


def time_each_output(net, samples, repeats=3, warmup=10):
    """Measured cost of answering at each output alone, for
    :func:`exit_for_budget`: the trunk up to it and its head, batch 1, test
    mode, each output timed in turns with the others
    (:func:`branchynet.timing.time_in_turns`).

    Args:
        samples: ``(1, ...)`` host arrays (:func:`branchynet.timing.as_samples`).

    Returns:
        One timing summary per exit (``median_ms`` and the rest).
    """
    def alone(n):
        stages, head = net.trunk[:n + 1], net.heads[n]

        def answer(x):
            with chainer.using_config('train', False), \
                    chainer.no_backprop_mode():
                h = net.device.send(x)
                for stage in stages:
                    h = stage(h)
                return int(head(h).array[0].argmax())
        return answer
    return timing.time_in_turns([alone(n) for n in range(net.num_exits)],
                                samples, net.device, repeats, warmup)


def path_multiply_adds(net):
    """Per-sample multiply-adds of answering at each exit with the exit
    rule (:func:`branchynet.costs.path_costs`)."""
    return costs.path_costs(*costs.multiply_adds(net))


def shared_threshold_sweep(outputs, threshold_list):
    """The entropy rule with one threshold shared by every non-final exit.

    With an exit after every block the full grid of
    :func:`branchynet.sweep.run_sweep` has ``len(threshold_list) ** (N - 1)``
    points (17 values over 7 heads: 410 million); one shared threshold is
    the usual rule for many exits.

    Returns:
        One :func:`branchynet.sweep.evaluate` point per threshold.
    """
    from branchynet import sweep
    num_exits = outputs.predictions.shape[0]
    return [sweep.evaluate(outputs, [t] * (num_exits - 1))
            for t in threshold_list]


def each_exit_alone(outputs):
    """The accuracy of every exit answering for every sample (a list)."""
    return [float((outputs.predictions[n] == outputs.labels).mean())
            for n in range(outputs.predictions.shape[0])]
