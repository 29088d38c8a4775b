"""Training-mode BatchNorm on the CPU in two passes each way, with the ReLU
and the residual addition that follow it folded in.

Chainer's CPU BatchNorm makes several passes over its input forward (mean,
variance, centring, scaling) and more backward, each a whole-array NumPy
operation; in B-ResNet-110 (109 BatchNorms of 16-64 channels, each
followed by a ReLU or by the residual addition and a ReLU) those passes
weigh more than the convolutions' arithmetic. Here, on NumPy arrays in
training mode:

- **forward**: one pass sums each channel and its squares (in float64), one
  pass writes ``relu((x - mean) / sqrt(var + eps) * gamma + beta +
  residual)``; the running statistics are updated as Chainer updates them;
- **backward**: one pass sums the gradient (masked by the ReLU) and its
  product with the centred input, one pass writes the input's gradient
  (and the residual's).

With a ChainerMN communicator (``link.comm``, set by
:meth:`branchynet.distributed.Cluster.network`) the per-channel sums are
averaged across ranks between the two passes, as ChainerMN's
``MultiNodeBatchNormalization`` averages them: the statistics are the
global batch's. On a GPU, in evaluation mode, or with
``chainer.config.branchynet_kernels == 'stock'``, Chainer's (or
ChainerMN's) functions run, followed by ``+ residual`` and ``F.relu``.
Tested against them on every BatchNorm shape of the networks
(``tests/test_batch_norm.py``).
"""
import chainer
import chainer.functions as F
import chainer.links as L
import numpy
from chainer import function_node
from chainer.functions.normalization import batch_normalization as chainer_bn

from branchynet import _jit, kernels


def _numpy_sums(x3):
    return x3.sum(axis=(0, 2), dtype=numpy.float64), \
        numpy.square(x3, dtype=numpy.float64).sum(axis=(0, 2))


def _mask(gy, y, relu):
    return numpy.where(y > 0, gy, 0).astype(gy.dtype) if relu else gy


class BatchNormalizationReLU(function_node.FunctionNode):
    """``relu(batch_norm(x, gamma, beta) + residual)`` in training mode.

    Inputs ``(x, gamma, beta)`` or ``(x, gamma, beta, residual)``; updates
    ``running_mean`` and ``running_var`` in place (Chainer's rule: decay,
    and the variance scaled by ``m / (m - 1)``) when given.
    """

    def __init__(self, eps, running_mean, running_var, decay, relu,
                 comm=None):
        self.eps = eps
        self.running_mean = running_mean
        self.running_var = running_var
        self.decay = decay
        self.relu = relu
        self.comm = comm

    def _mean(self, values):
        """``values`` averaged across ranks (ChainerMN's way), or as given."""
        if self.comm is None or self.comm.size == 1:
            return values
        return self.comm.mpi_comm.allreduce(values) / self.comm.size

    def forward(self, inputs):
        self.retain_inputs((0, 1))
        x, gamma, beta = inputs[:3]
        residual = inputs[3] if len(inputs) == 4 else None
        if residual is not None and residual.shape != x.shape:
            raise ValueError('residual of shape {} for BatchNorm output of '
                             'shape {}'.format(residual.shape, x.shape))
        n, c = x.shape[:2]
        x3 = x.reshape(n, c, -1)
        m = x3.shape[0] * x3.shape[2]
        sums = _jit.bn_sums(x3) if kernels.USE_JIT else _numpy_sums(x3)
        mean, square = self._mean(numpy.stack(sums) / m)
        var = numpy.maximum(square - mean * mean, 0)
        self.mean = mean
        self.inv_std = 1 / numpy.sqrt(var + self.eps)
        scale = self.inv_std * gamma
        y3 = numpy.empty_like(x3)
        res3 = x3[:0] if residual is None else residual.reshape(x3.shape)
        if kernels.USE_JIT:
            _jit.bn_forward(x3, mean, scale, beta.astype(numpy.float64),
                            res3, self.relu, y3)
        else:
            z = (x3 - mean[:, None]) * scale[:, None] + beta[:, None]
            if residual is not None:
                z += res3
            y3[...] = numpy.maximum(z, 0) if self.relu else z
        if self.running_mean is not None:
            adjust = m / max(m - 1., 1.)
            dtype = self.running_mean.dtype
            self.running_mean *= self.decay
            self.running_mean += ((1 - self.decay) * mean).astype(dtype)
            self.running_var *= self.decay
            self.running_var += ((1 - self.decay) * adjust * var).astype(
                dtype)
        if self.relu:
            self.retain_outputs((0,))
        return y3.reshape(x.shape),

    def backward(self, indexes, grad_outputs):
        x, gamma = self.get_retained_inputs()
        y = self.get_retained_outputs()[0] if self.relu else None
        grads = _BatchNormalizationReLUGrad(self, len(self.inputs)).apply(
            (x, gamma, grad_outputs[0]) + (() if y is None else (y,)))
        return tuple(grads[i] for i in indexes)


class _BatchNormalizationReLUGrad(function_node.FunctionNode):
    """Gradients of :class:`BatchNormalizationReLU`: ``x``, ``gamma``,
    ``beta`` (and ``residual``)."""

    def __init__(self, node, inputs):
        self.node = node
        self.residual = inputs == 4

    def forward(self, inputs):
        node = self.node
        x, gamma, gy = inputs[:3]
        y = inputs[3] if node.relu else x
        n, c = x.shape[:2]
        x3, gy3, y3 = (a.reshape(n, c, -1) for a in (x, gy, y))
        m = x3.shape[0] * x3.shape[2]
        mean, inv_std = node.mean, node.inv_std
        if kernels.USE_JIT:
            sums = _jit.bn_grad_sums(gy3, y3, x3, mean, node.relu)
        else:
            gz = _mask(gy3, y3, node.relu)
            sums = (gz.sum(axis=(0, 2), dtype=numpy.float64),
                    (gz * (x3 - mean[:, None])).sum(axis=(0, 2),
                                                    dtype=numpy.float64))
        gbeta, centred = node._mean(numpy.stack(sums))
        ggamma = centred * inv_std
        ca = gamma * inv_std
        cb = ca * inv_std * ggamma / m
        cc = ca * gbeta / m
        gx3 = numpy.empty_like(x3)
        gz3 = numpy.empty_like(x3) if self.residual else x3[:0]
        if kernels.USE_JIT:
            _jit.bn_backward(gy3, y3, x3, mean, ca, cb, cc, node.relu, gx3,
                             gz3)
        else:  # gz: the masked gradient of the sums' pass above
            gx3[...] = ca[:, None] * gz - cb[:, None] * (
                x3 - mean[:, None]) - cc[:, None]
            if self.residual:
                gz3[...] = gz
        dtype = gamma.dtype
        grads = (gx3.reshape(x.shape), ggamma.astype(dtype),
                 gbeta.astype(dtype))
        return grads + ((gz3.reshape(x.shape),) if self.residual else ())

    def backward(self, indexes, grad_outputs):
        raise NotImplementedError('double backpropagation through the fast '
                                  'CPU BatchNorm; use '
                                  'branchynet_kernels="stock"')


class BatchNormalization(L.BatchNormalization):
    """Chainer's ``L.BatchNormalization`` (the same parameters, statistics
    and checkpoint keys) that can fold in the ReLU and the residual addition
    after it: ``bn(x, relu=True, residual=r)`` is ``F.relu(bn(x) + r)``.

    In training mode on NumPy arrays it runs :class:`BatchNormalizationReLU`;
    otherwise Chainer's function (ChainerMN's when ``comm`` is set) and then
    the addition and the ReLU. ``comm``: a ChainerMN communicator whose
    ranks share the batch statistics, or None.
    """

    comm = None

    def forward(self, x, relu=False, residual=None, **kwargs):
        """The normalised ``x`` (plus ``residual``, then ReLU if ``relu``)."""
        fast = chainer.config.train and not kwargs and \
            not chainer.config.in_recomputing and \
            getattr(self, 'gamma', None) is not None and \
            getattr(self, 'beta', None) is not None and \
            self.avg_mean is not None and kernels.use_fast(x, residual)
        if not fast:
            y = self._stock(x, **kwargs)
            if residual is not None:
                y = y + residual
            return F.relu(y) if relu else y
        node = BatchNormalizationReLU(self.eps, self.avg_mean, self.avg_var,
                                      self.decay, relu, self.comm)
        inputs = (x, self.gamma, self.beta)
        return node.apply(inputs + (() if residual is None
                                    else (residual,)))[0]

    def _stock(self, x, **kwargs):
        if self.comm is None or not chainer.config.train:
            return super().forward(x, **kwargs)
        # ChainerMN's MultiNodeBatchNormalization, on this link's statistics
        from chainermn.functions import batch_normalization as mn_bn
        finetune = kwargs.get('finetune', False)
        if finetune:
            self.N += 1
        decay = 1. - 1. / self.N if finetune else self.decay
        node = chainer_bn.BatchNormalization(
            self.eps, self.avg_mean, self.avg_var, decay,
            impl_selector=mn_bn.MultiNodeBNImplSelector(self.comm, 'mpi'))
        y, = node.apply((x, self.gamma, self.beta))
        self.avg_mean[...] = node.running_mean
        self.avg_var[...] = node.running_var
        return y
