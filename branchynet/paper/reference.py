"""The reference code's design, re-implemented for comparison only.

Nothing in the library uses this module to train or to infer: it exists so
that the benchmark (:mod:`branchynet.bench.benchmark`) and the tests can compare
this project with the design of the authors' Chainer 1 code
(kunglab/branchynet, ``branchynet/net.py``), on the same machine, with the
same weights. It mirrors that design's work, step by step, on today's
Chainer:

- :class:`ReferenceTrainer` — the joint training step: the main network plus
  one deep copy of the trunk (up to its branch point) per exit. Each step
  copies the main trunk's parameters into every copy, runs every copy on the
  batch (the trunk is recomputed once per exit), computes each non-final
  exit's softmax entropy row by row on the host and moves the remaining
  inputs to the host and back (as its ``percentTrainKeeps`` filter does even
  when it keeps everything), backpropagates each exit's loss through its own
  copy, adds the copies' trunk gradients into the main trunk, updates the
  main network and every copy with their own Adam optimizers, and copies the
  parameters out again.
- :func:`reference_predict` — the inference algorithm of its ``test`` at
  batch size 1: per exit, the trunk segment and the head, softmax, entropy
  (row by row on the CPU, a kernel plus a host read on the GPU), the exit
  mask on the host, the activation copied to the host and the kept rows
  copied back, and the exiting rows' head computed a second time.

The reference ignores branch weights; both classes use the network's weights,
which with the default 1.0 everywhere is the reference's behaviour.
"""
import copy

import chainer
import chainer.functions as F
import numpy
from chainer.backends import cuda

from branchynet import entropy


def _host_row_entropies(probabilities):
    """Per-row entropy in a Python loop, as the reference's scipy calls."""
    rows = cuda.to_cpu(probabilities)
    return numpy.array([-(p * numpy.log(numpy.where(p > 0, p, 1))).sum()
                        for p in rows / rows.sum(axis=1, keepdims=True)])


class ReferenceTrainer:
    """The reference's joint training step, for timing and equivalence checks.

    Args:
        net: a BranchyNet whose current parameters are copied (it is not
            modified).
        alpha: Adam step size of every optimizer.
    """

    def __init__(self, net, alpha=0.001):
        self.weights = net.branch_weights
        trunk = [copy.deepcopy(stage) for stage in net.trunk]
        self.main = chainer.ChainList(*trunk, copy.deepcopy(net.heads[-1]))
        self.models = [chainer.ChainList(
            *[copy.deepcopy(stage) for stage in net.trunk[:n + 1]],
            copy.deepcopy(net.heads[n])) for n in range(net.num_exits)]
        self.optimizers = []
        for link in [self.main] + self.models:
            optimizer = chainer.optimizers.Adam(alpha=alpha)
            optimizer.setup(link)
            self.optimizers.append(optimizer)
        self.device = net.device

    def _scatter(self):
        for model in self.models:
            for k, stage in enumerate(model[:-1]):
                stage.copyparams(self.main[k])

    def accumulate_gradients(self, x, t):
        """Forward and backward through every copy; gather trunk gradients."""
        self._scatter()
        for link in [self.main] + self.models:
            link.cleargrads()
        xp = self.device.xp
        remaining_x, remaining_t = x, t
        losses = []
        for n, model in enumerate(self.models):
            h = remaining_x
            for link in model:
                h = link(h)
            losses.append(F.softmax_cross_entropy(h, remaining_t))
            if n < len(self.models) - 1:
                _host_row_entropies(F.softmax(h).array)
                keep = numpy.ones(len(remaining_t), dtype=bool)  # keeps = 1
                remaining_x = xp.array(cuda.to_cpu(remaining_x)[keep])
                remaining_t = xp.array(cuda.to_cpu(remaining_t)[keep])
        for weight, loss in zip(self.weights, losses):
            (weight * loss).backward()
        for model in self.models:
            for k, stage in enumerate(model[:-1]):
                self.main[k].addgrads(stage)

    def step(self, x, t):
        """One training step on ``(x, t)`` (arrays on the net's device)."""
        self.accumulate_gradients(x, t)
        for optimizer in self.optimizers:
            optimizer.update()
        self._scatter()

    def trunk(self):
        """The main trunk's stages (what ``net.trunk`` holds in this project)."""
        return self.main[:-1]

    def heads(self):
        """Each exit's head as trained (the last model's head for the final exit)."""
        return [model[-1] for model in self.models]


def reference_predict(net, x, thresholds):
    """The reference's inference algorithm on one sample: ``(label, exit)``."""
    xp = net.xp
    remaining = net.device.send(x)
    last = net.num_exits - 1
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for n, (stage, head) in enumerate(zip(net.trunk, net.heads)):
            h = stage(remaining).array
            probabilities = F.softmax(head(h)).array
            if xp is numpy:
                entropies = _host_row_entropies(probabilities)
            else:
                entropies = cuda.to_cpu(entropy(probabilities))
            leaving = numpy.ones(len(entropies), bool) if n == last else \
                entropies < thresholds[n]
            host_h = cuda.to_cpu(h)
            if (~leaving).any():
                remaining = xp.array(host_h[~leaving])
            if leaving.any():
                exit_logits = head(xp.array(host_h[leaving])).array
                return int(cuda.to_cpu(exit_logits.argmax(axis=1))[0]), n
