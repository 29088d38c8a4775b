"""BranchyNet in PyTorch, built only from a port kit and PORTING.md.

This module knows nothing of Chainer or of the ``branchynet`` package: it
reads a kit's ``manifest.json`` (the layers and their attributes) and
``weights.npz`` (the parameters, by path), and follows PORTING.md for every
computation that frameworks disagree on. It is the proof that the kit and
PORTING.md are complete: its outputs match the kit's ``reference.npz`` and
its training steps match this project's (``experiments/compare_port.py``,
``tests/test_port.py``).

    net = BranchyNetPort.from_kit('kits/b_lenet')
    logits = net(x)                                  # one tensor per exit
    label, exit_ = net.predict_sample(x[:1], [0.025])
    optimizer = ChainerAdam(net.parameters(), alpha=0.001)
"""
import json
import math
import os

import numpy
import torch
from torch import nn
from torch.nn import functional as F


class ResBlock(nn.Module):
    """PORTING.md, residual block: relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut)."""

    def __init__(self, spec, weights):
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2 = (
            build_layer(s, weights) for s in spec['layers'])
        self.extra = spec['out_channels'] - spec['in_channels']
        self.stride = spec['stride']

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        shortcut = x
        if self.extra:  # zero channels in front
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.extra, 0))
        if self.stride != 1:  # average_pool(1, stride): take every stride-th
            shortcut = shortcut[:, :, ::self.stride, ::self.stride]
        return F.relu(h + shortcut)


def _tensor(weights, name):
    return torch.from_numpy(numpy.ascontiguousarray(weights[name]))


def build_layer(spec, weights):
    """One layer of the manifest as a PyTorch module, with its weights loaded."""
    kind = spec['type']
    if kind == 'conv2d':
        layer = nn.Conv2d(spec['in_channels'], spec['out_channels'],
                          tuple(spec['kernel']), tuple(spec['stride']),
                          tuple(spec['pad']), bias=spec['bias'] is not None)
        with torch.no_grad():
            layer.weight.copy_(_tensor(weights, spec['weight']))
            if spec['bias'] is not None:
                layer.bias.copy_(_tensor(weights, spec['bias']))
        return layer
    if kind == 'linear':
        linear = nn.Linear(spec['in_features'], spec['out_features'],
                           bias=spec['bias'] is not None)
        with torch.no_grad():
            linear.weight.copy_(_tensor(weights, spec['weight']))
            if spec['bias'] is not None:
                linear.bias.copy_(_tensor(weights, spec['bias']))
        return nn.Sequential(nn.Flatten(1), linear)  # C-order, as NCHW
    if kind == 'batch_norm':
        # PORTING.md: momentum = 1 - decay; the running variance is updated
        # with the unbiased batch variance in both frameworks
        bn = nn.BatchNorm2d(spec['channels'], eps=spec['eps'],
                            momentum=1 - spec['decay'])
        with torch.no_grad():
            bn.weight.copy_(_tensor(weights, spec['gamma']))
            bn.bias.copy_(_tensor(weights, spec['beta']))
            bn.running_mean.copy_(_tensor(weights, spec['mean']))
            bn.running_var.copy_(_tensor(weights, spec['var']))
        return bn
    if kind == 'relu':
        return nn.ReLU()
    if kind == 'max_pool':  # cover_all=True is ceil mode (PORTING.md)
        return nn.MaxPool2d(tuple(spec['kernel']), tuple(spec['stride']),
                            tuple(spec['pad']), ceil_mode=spec['cover_all'])
    if kind == 'average_pool':
        return nn.AvgPool2d(tuple(spec['kernel']), tuple(spec['stride']),
                            tuple(spec['pad']))
    if kind == 'lrn':  # PyTorch divides alpha by n, Chainer does not
        return nn.LocalResponseNorm(spec['n'], alpha=spec['alpha'] * spec['n'],
                                    beta=spec['beta'], k=spec['k'])
    if kind == 'dropout':
        return nn.Dropout(spec['ratio'])
    if kind == 'res_block':
        return ResBlock(spec, weights)
    raise ValueError('unknown layer type {!r}'.format(kind))


def leaves(sample_entropy, threshold):
    """PORTING.md's exit rule: the entropy and the threshold both rounded
    to float32, strictly below."""
    return numpy.float32(sample_entropy) < numpy.float32(threshold)


def entropy(p):
    """PORTING.md: -sum p ln p over classes, with 0 ln 0 = 0."""
    return -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(-1)


class BranchyNetPort(nn.Module):
    """A BranchyNet from a port kit: trunk stages and exit heads.

    Args:
        manifest: the kit's ``manifest.json`` (a dict).
        weights: the kit's ``weights.npz`` (a mapping of arrays).
    """

    def __init__(self, manifest, weights):
        super().__init__()
        self.trunk = nn.ModuleList(nn.Sequential(*[
            build_layer(s, weights) for s in stage])
            for stage in manifest['layers']['trunk'])
        self.heads = nn.ModuleList(nn.Sequential(*[
            build_layer(s, weights) for s in head])
            for head in manifest['layers']['heads'])
        self.branch_weights = manifest['protocol']['branch_weights']

    @classmethod
    def from_kit(cls, folder):
        """The network of a kit folder."""
        with open(os.path.join(folder, 'manifest.json')) as f:
            manifest = json.load(f)
        with numpy.load(os.path.join(folder, 'weights.npz')) as weights:
            return cls(manifest, dict(weights))

    @property
    def num_exits(self):
        return len(self.heads)

    def forward(self, x):
        """Logits of every exit (a list of ``(B, classes)`` tensors)."""
        outputs = []
        for stage, head in zip(self.trunk, self.heads):
            x = stage(x)
            outputs.append(head(x))
        return outputs

    @torch.no_grad()
    def predict_sample(self, x, thresholds):
        """Early exit on one sample: ``(label, exit)``, PORTING.md's exit rule."""
        for n, (stage, head) in enumerate(zip(self.trunk, self.heads)):
            x = stage(x)
            y = head(x)
            if n == self.num_exits - 1:
                break
            if leaves(entropy(F.softmax(y, dim=1))[0].item(), thresholds[n]):
                break
        return int(y[0].argmax()), n

    def joint_loss(self, x, t):
        """Sum of each exit's weighted softmax cross-entropy (batch mean)."""
        return sum(w * F.cross_entropy(y, t)
                   for w, y in zip(self.branch_weights, self(x)))


class ChainerAdam(torch.optim.Optimizer):
    """Adam exactly as Chainer 7 updates (PORTING.md), not as torch.optim.Adam.

    ``m += (1 - b1) (g - m)``, ``v += (1 - b2) (g^2 - v)``,
    ``p -= alpha_t m / (sqrt(v) + eps)``, ``alpha_t = alpha sqrt(1 - b2^t) /
    (1 - b1^t)``: eps is added to ``sqrt(v)`` before the bias correction is
    applied, where PyTorch adds it after.
    """

    def __init__(self, params, alpha=0.001, beta1=0.9, beta2=0.999,
                 eps=1e-8):
        super().__init__(params, dict(alpha=alpha, beta1=beta1, beta2=beta2,
                                      eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group['params']:
                state = self.state[p]
                if not state:
                    state['t'] = 0
                    state['m'] = torch.zeros_like(p)
                    state['v'] = torch.zeros_like(p)
                state['t'] += 1  # Chainer counts a step even without grad
                if p.grad is None:
                    continue
                g, m, v = p.grad, state['m'], state['v']
                m += (1 - group['beta1']) * (g - m)
                v += (1 - group['beta2']) * (g * g - v)
                t = state['t']
                alpha_t = group['alpha'] * math.sqrt(
                    1 - group['beta2'] ** t) / (1 - group['beta1'] ** t)
                p -= alpha_t / (torch.sqrt(v) + group['eps']) * m
