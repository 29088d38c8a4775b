"""The training loss of a BranchyNet, as a link that wraps the network.

:class:`BranchyLoss` is to a BranchyNet what ``L.Classifier`` is to a
classifier: the network stays a function from inputs to every exit's logits,
and the loss policy lives here — the weight of each exit's loss, which
samples go on to train deeper exits (``percent_train_keeps``), and the
main-network-only loss of the protocol's first phase. Set the optimizer up
on the loss link; it reports under its observer name (``main`` in a
Trainer)::

    loss = BranchyLoss(net, branch_weights=[1.0, 0.3])
    optimizer.setup(loss)
    optimizer.update(loss, x, t)              # joint: sum_n w_n * L_n
    optimizer.update(loss.main_loss, x, t)    # main network alone

:func:`joint_loss` and :func:`main_loss` are the same computations as plain
functions.
"""
import math

import chainer
import chainer.functions as F

from branchynet import exit_rule
from branchynet.entropy import entropy


def check_branch_weights(weights, num_exits):
    """``weights`` as a tuple of floats, one finite non-negative value per exit.

    Raises:
        ValueError: wrong length, or a negative, infinite or NaN weight.
    """
    weights = list(weights)
    if len(weights) != num_exits:
        raise ValueError(
            'branch_weights must have one weight per exit: expected {}, '
            'got {} ({!r})'.format(num_exits, len(weights), weights))
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) \
                or not math.isfinite(w) or w < 0:
            raise ValueError('branch_weights must be finite non-negative '
                             'numbers, got {!r}'.format(weights))
    return tuple(float(w) for w in weights)


def joint_loss(net, x, t, branch_weights, keep_rule=None, observer=None):
    """``sum_n w_n * softmax_cross_entropy(exit_n(x), t)`` in one pass.

    Args:
        net: a :class:`~branchynet.BranchyNet`.
        x, t: a batch of inputs and integer labels.
        branch_weights: one weight per exit (see :func:`check_branch_weights`).
        keep_rule: ``None`` (every sample trains every exit) or the rule
            of :func:`branchynet.exit_rule.keep_for_training`: the samples
            it takes at an exit train no deeper exit.
        observer: the link to report under, or ``None`` for no report.

    Returns:
        The loss Variable. Reports ``loss`` and ``exit<k>/loss``,
        ``exit<k>/accuracy`` (k from 1).
    """
    h = net.check_input(x)
    total = 0
    observations = {}
    for n, (stage, head) in enumerate(zip(net.trunk, net.heads)):
        h = stage(h)
        y = head(h)
        loss = F.softmax_cross_entropy(y, t)
        total += branch_weights[n] * loss
        observations['exit{}/loss'.format(n + 1)] = loss
        observations['exit{}/accuracy'.format(n + 1)] = F.accuracy(y, t)
        if keep_rule is not None and n < net.num_exits - 1:
            stops = keep_rule.takes(n, entropy(F.softmax(y).array))
            goes_on = net.xp.flatnonzero(~stops)
            h, t = F.get_item(h, goes_on), t[goes_on]
    observations['loss'] = total
    if observer is not None:
        chainer.report(observations, observer)
    return total


def main_loss(net, x, t, observer=None):
    """Softmax cross-entropy of the main network: the trunk and the final exit.

    Reports ``loss`` and ``accuracy`` under ``observer`` (if given).
    """
    y = net.main_forward(x)
    loss = F.softmax_cross_entropy(y, t)
    if observer is not None:
        chainer.report({'loss': loss, 'accuracy': F.accuracy(y, t)}, observer)
    return loss


class BranchyLoss(chainer.Chain):
    """The loss policy of BranchyNet training, wrapping the network.

    Args:
        net: the :class:`~branchynet.BranchyNet` to train (registered as the
            child link ``net``).
        branch_weights: loss weight per exit; default: the weights given in
            the network's ``Branch`` markers (1.0 unless stated, as the
            reference behaves).
        percent_train_keeps: at each non-final exit, the share of the
            samples that reached it which goes on to train deeper exits (the
            highest-entropy ones); ``1.0``, the reference experiments'
            setting, trains every exit on every sample.

    Calling the link computes the joint loss; :meth:`main_loss` is the loss
    of the protocol's first phase.
    """

    def __init__(self, net, branch_weights=None, percent_train_keeps=1.0):
        super().__init__()
        with self.init_scope():
            self.net = net
        self.branch_weights = check_branch_weights(
            net.branch_weights if branch_weights is None else branch_weights,
            net.num_exits)
        self.keep_rule = exit_rule.keep_for_training(percent_train_keeps,
                                                     net.num_exits)
        self.percent_train_keeps = float(percent_train_keeps)

    def forward(self, x, t):
        """The joint loss of every exit (see :func:`joint_loss`)."""
        return joint_loss(self.net, x, t, self.branch_weights, self.keep_rule,
                          observer=self)

    def main_loss(self, x, t):
        """The main network's loss alone (see :func:`main_loss`)."""
        return main_loss(self.net, x, t, observer=self)
