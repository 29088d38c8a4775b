"""CPU convolution and max pooling without Chainer's copies.

Chainer 7's CPU path convolves by ``im2col`` into a ``(N, C, kh, kw, oh,
ow)`` array, lets ``numpy.tensordot`` copy it again into a matrix, and
copies the result from ``(N, oh, ow, O)`` into ``(N, O, oh, ow)``; its
backward pass builds the columns a second time. Max pooling builds the
same ``kh * kw`` times larger window array only to take an ``argmax``.
On a CPU those copies, not the arithmetic, take most of a training step.

Here, on NumPy arrays:

- **convolution**: the columns ``(C*kh*kw, oh*ow)`` of each sample read
  straight from a strided view of the (padded) input, a few samples at a
  time so that they are still in the cache when the matrix product reads
  them; each sample's product lands in the output in NCHW order (no layout
  change); the weight gradient sums the chunks' products, and the input
  gradient's columns are added back window offset by window offset, chunk
  by chunk (compiled where Numba is installed);
- **depthwise convolution** (``groups`` = channels, MobileNet's): one
  compiled sweep per pass instead of a column matrix per channel;
- **max pooling**: the maximum is taken window offset by window offset
  over strided views of the input (``kh * kw`` comparisons of output-sized
  arrays), recording the offset of the first maximum, which is the element
  Chainer's ``argmax`` picks (ties go to the first in row-major window
  order); backward adds the gradient at those offsets.

Both are Chainer ``FunctionNode``s with the parameters and results of
Chainer's own functions (``F.convolution_2d``, ``F.max_pooling_2d``; tested
against them on every layer shape of the three networks and on odd
shapes). Which runs is chosen by ``chainer.config.branchynet_kernels``:
``'fast'`` (the default) uses these on NumPy arrays; ``'stock'`` uses
Chainer's everywhere. On a GPU Chainer's always run. Double backpropagation
is not supported by these nodes (nothing in this project needs it).
The module is longer than 500 lines because each kernel's forward and
backward nodes, and the helpers they share, are read best side by side.
"""
import concurrent.futures
import os

import chainer
import chainer.functions as F
import numpy
import threadpoolctl
from chainer import function_node
from chainer.utils import conv, type_check

from branchynet import _jit

KERNELS = ('fast', 'stock')
# The compiled inner loops (branchynet/_jit.py) where Numba is installed;
# otherwise, or with this set to False, the NumPy loops below.
USE_JIT = _jit.AVAILABLE
chainer.global_config.branchynet_kernels = 'fast'


def _pair(value):
    return value if isinstance(value, tuple) else (value, value)


def use_fast(*arrays):
    """Whether the fast CPU kernels apply to ``arrays`` under the current
    configuration."""
    if chainer.config.branchynet_kernels == 'stock':
        return False
    return all(isinstance(getattr(a, 'array', a), numpy.ndarray)
               for a in arrays if a is not None)


def check_kernels(name):
    """Raise ValueError unless ``name`` is one of :data:`KERNELS`."""
    if name not in KERNELS:
        raise ValueError('kernels must be one of {}, got {!r}'.format(
            ', '.join(KERNELS), name))


def _padded(x, pad_h, pad_w, fill=0.0, extra_h=0, extra_w=0):
    """``x`` padded on both sides (and by ``extra`` at the bottom/right)."""
    if not (pad_h or pad_w or extra_h or extra_w):
        return x
    n, c, h, w = x.shape
    out = numpy.full((n, c, h + 2 * pad_h + extra_h, w + 2 * pad_w + extra_w),
                     fill, dtype=x.dtype)
    out[:, :, pad_h:pad_h + h, pad_w:pad_w + w] = x
    return out


# Columns are laid out and multiplied a few samples at a time, so that a
# chunk's columns are still in the core's cache when the matrix product reads
# them (a B-ResNet-110 layer's whole column matrix is 33 MB, nine times its
# input). Each sample's product writes its output in place in NCHW order:
# no layout change afterwards.
CHUNK_BYTES = 2 ** 20


# The chunks are shared among as many threads as BLAS was given (its
# default: the cores; OPENBLAS_NUM_THREADS=1 in the distributed runs), with
# BLAS held to one thread meanwhile: a chunk's products are too small for
# BLAS's own threads to help, and its threads and these would contend.
# NumPy and the compiled loops let go of the GIL while they work.
_BLAS = threadpoolctl.ThreadpoolController()
THREADS = max([1] + [lib['num_threads'] for lib in _BLAS.info()
                     if lib['user_api'] == 'blas'])
_POOL = []
# a forked child has the pool but not its threads: it makes its own
os.register_at_fork(after_in_child=_POOL.clear)


def _chunks(n, sample_bytes):
    """``(first, end)`` sample ranges whose columns take about CHUNK_BYTES."""
    step = max(1, CHUNK_BYTES // max(1, sample_bytes))
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def _each_chunk(work, chunks):
    """``[work(first, end) for first, end in chunks]``, on :data:`THREADS`
    threads; the results in the chunks' order."""
    if THREADS == 1 or len(chunks) == 1:
        return [work(first, end) for first, end in chunks]
    if not _POOL or _POOL[0][0] != THREADS:
        _POOL[:] = [(THREADS, concurrent.futures.ThreadPoolExecutor(
            THREADS, thread_name_prefix='branchynet-kernels'))]
    with _BLAS.limit(limits=1, user_api='blas'):
        return list(_POOL[0][1].map(lambda chunk: work(*chunk), chunks))


def _columns(xp, first, end, kh, kw, sy, sx, oh, ow):
    """The columns of samples ``first:end`` of the padded input ``xp``,
    ``(end - first, C*kh*kw, oh*ow)`` (one copy)."""
    c = xp.shape[1]
    s_n, s_c, s_h, s_w = xp.strides
    view = numpy.lib.stride_tricks.as_strided(
        xp[first:end], shape=(end - first, c, kh, kw, oh, ow),
        strides=(s_n, s_c, s_h, s_w, s_h * sy, s_w * sx), writeable=False)
    return view.reshape(end - first, c * kh * kw, oh * ow)


def _add_columns(gcol, sy, sx, gxp):
    """Add the columns ``gcol`` ``(n, C, kh, kw, oh, ow)`` back into the
    windows of the padded input gradient ``gxp`` ``(n, C, hp, wp)``."""
    if USE_JIT:
        _jit.add_columns(gcol, sy, sx, gxp)
        return
    kh, kw, oh, ow = gcol.shape[2:]
    for i in range(kh):
        for j in range(kw):
            _windows(gxp, i, j, sy, sx, oh, ow)[...] += gcol[:, :, i, j]


class _ConvolutionNode(function_node.FunctionNode):
    """What both convolutions share: stride and padding, the input checks
    (``x``, ``W`` and an optional ``b``; each subclass adds how the channels
    of ``x`` and ``W`` must agree) and the output size."""

    def __init__(self, stride=1, pad=0):
        self.sy, self.sx = _pair(stride)
        self.ph, self.pw = _pair(pad)

    def check_type_forward(self, in_types):
        type_check._argname(in_types, ('x', 'W', 'b')[:len(in_types)])
        x_type, w_type = in_types[:2]
        type_check.expect(x_type.dtype.kind == 'f', x_type.ndim == 4,
                          w_type.ndim == 4)
        self.check_channels(x_type, w_type)

    def output_size(self, x_shape, w_shape):
        return (conv.get_conv_outsize(x_shape[2], w_shape[2], self.sy,
                                      self.ph),
                conv.get_conv_outsize(x_shape[3], w_shape[3], self.sx,
                                      self.pw))


class Convolution2D(_ConvolutionNode):
    """2-D convolution on NumPy arrays (no dilation, one group)."""

    def check_channels(self, x_type, w_type):
        type_check.expect(x_type.shape[1] == w_type.shape[1])

    def forward(self, inputs):
        x, W = inputs[:2]
        b = inputs[2] if len(inputs) == 3 else None
        n = x.shape[0]
        out_c, c, kh, kw = W.shape
        oh, ow = self.output_size(x.shape, W.shape)
        xp = _padded(x, self.ph, self.pw)
        W2 = W.reshape(out_c, -1)
        y = numpy.empty((n, out_c, oh * ow), dtype=x.dtype)

        def work(first, end):
            numpy.matmul(W2, _columns(xp, first, end, kh, kw, self.sy,
                                      self.sx, oh, ow), out=y[first:end])
            if b is not None:  # while the chunk is in the cache
                y[first:end] += b.reshape(out_c, 1)
        chunks = _chunks(n, c * kh * kw * oh * ow * x.itemsize)
        _each_chunk(work, chunks)
        if chainer.config.enable_backprop:
            self.shapes = (x.shape, W.shape, oh, ow)
            self.xp, self.chunks = xp, chunks
            self.retain_inputs((1,))
        return y.reshape(n, out_c, oh, ow),

    def backward(self, indexes, grad_outputs):
        W, = self.get_retained_inputs()
        gy, = grad_outputs
        grads = ConvolutionGrad(self, indexes).apply((W, gy))
        return tuple(grads[indexes.index(i)] if i in indexes else None
                     for i in range(len(self.inputs)))


class ConvolutionGrad(function_node.FunctionNode):
    """Gradients of :class:`Convolution2D` with respect to the inputs
    ``indexes`` asks for (0: x, 1: W, 2: b), in that order.

    Chunk by chunk of samples, as the forward pass: the columns laid out
    again (cheaper than keeping them), the weight gradient's products summed,
    the input gradient's columns added back into the padded input gradient.
    The input gradient, the costliest, is not computed when x needs none
    (the first layer's input is data).
    """

    def __init__(self, conv_node, indexes):
        self.node = conv_node
        self.indexes = tuple(indexes)

    def forward(self, inputs):
        W, gy = inputs
        node = self.node
        xp, node.xp = node.xp, None  # needed once
        x_shape, w_shape, oh, ow = node.shapes
        n, c, h, w = x_shape
        out_c, _, kh, kw = w_shape
        gy3 = numpy.ascontiguousarray(gy).reshape(n, out_c, oh * ow)
        W2 = W.reshape(out_c, -1)
        need_W, need_x = 1 in self.indexes, 0 in self.indexes
        # With stride 1 the input gradient is itself a convolution: of the
        # output gradient, padded by k - 1 - pad, with the weights flipped
        # and their channels swapped. Its columns are gathered as the
        # forward pass's are (a copy), instead of a (C*kh*kw, oh*ow) product
        # of only O terms per element scattered back window by window.
        gather = need_x and node.sy == node.sx == 1 and \
            node.ph < kh and node.pw < kw
        gx = gxp = gyp = Wt = None
        if gather:
            gyp = _padded(gy3.reshape(n, out_c, oh, ow), kh - 1 - node.ph,
                          kw - 1 - node.pw)
            Wt = numpy.ascontiguousarray(
                W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c, -1)
            gx = numpy.empty((n, c, h * w), dtype=gy.dtype)
        elif need_x:
            gxp = numpy.zeros(xp.shape, dtype=gy.dtype)

        def work(first, end):
            gW = None
            if need_W:
                cols = _columns(xp, first, end, kh, kw, node.sy, node.sx,
                                oh, ow)
                gW = numpy.zeros(W2.shape, dtype=W.dtype)
                for i in range(end - first):  # faster than one matmul
                    gW += gy3[first + i].dot(cols[i].T)
            if gather:
                numpy.matmul(Wt, _columns(gyp, first, end, kh, kw, 1, 1, h,
                                          w), out=gx[first:end])
            elif need_x:
                gcol = numpy.matmul(W2.T, gy3[first:end])
                _add_columns(gcol.reshape(end - first, c, kh, kw, oh, ow),
                             node.sy, node.sx, gxp[first:end])
            return gW
        parts = _each_chunk(work, node.chunks)
        gW = sum(parts[1:], parts[0]) if need_W else None
        grads = {}
        if gW is not None:
            grads[1] = gW.reshape(w_shape)
        if 2 in self.indexes:
            grads[2] = gy.sum(axis=(0, 2, 3))
        if gx is not None:
            grads[0] = gx.reshape(x_shape)
        elif gxp is not None:
            grads[0] = gxp if gxp.shape == x_shape else \
                numpy.ascontiguousarray(gxp[:, :, node.ph:node.ph + h,
                                            node.pw:node.pw + w])
        return tuple(grads[i] for i in self.indexes)

    def backward(self, indexes, grad_outputs):
        raise NotImplementedError('double backpropagation through the fast '
                                  'CPU convolution; use '
                                  'branchynet_kernels="stock"')


def _windows(xp, i, j, sy, sx, oh, ow):
    """The input seen at kernel offset ``(i, j)`` by every output position:
    a strided view of the padded input, shaped like the output."""
    return xp[:, :, i:i + sy * (oh - 1) + 1:sy, j:j + sx * (ow - 1) + 1:sx]


class DepthwiseConvolution2D(_ConvolutionNode):
    """Depthwise 2-D convolution on NumPy arrays: each channel convolved with
    its own ``kh x kw`` filter, ``F.convolution_2d`` with ``groups`` equal
    to the channels and ``W`` of shape ``(C, 1, kh, kw)`` (MobileNet's).

    Chainer's CPU path lays out the columns of every group and multiplies
    ``C`` tiny matrices. Here the forward pass and the backward pass (both
    gradients at once) are each one compiled sweep over the padded input
    (``branchynet/_jit.py``); without Numba, ``kh * kw`` multiply-adds of
    output-sized arrays over strided views of it. Measured on the seven
    depthwise layers of :mod:`networks.elastic_cifar10`'s MobileNet (width
    0.5, batch 128, forward and backward, this CPU, 1 thread): 0.70 s with
    Chainer's grouped convolution, 0.33 s with the NumPy loops, 0.13 s
    compiled.
    """

    def check_channels(self, x_type, w_type):
        type_check.expect(w_type.shape[1] == 1,
                          x_type.shape[1] == w_type.shape[0])

    def forward(self, inputs):
        x, W = inputs[:2]
        b = inputs[2] if len(inputs) == 3 else None
        c = W.shape[0]
        oh, ow = self.output_size(x.shape, W.shape)
        xp = _padded(x, self.ph, self.pw)
        y = numpy.zeros((x.shape[0], c, oh, ow), dtype=x.dtype)
        if USE_JIT:
            _jit.depthwise_forward(numpy.ascontiguousarray(xp), W, self.sy,
                                   self.sx, y)
        else:
            self._forward_numpy(xp, W, y)
        if b is not None:
            y += b.reshape(c, 1, 1)
        self.retain_inputs((0, 1))
        return y,

    def _forward_numpy(self, xp, W, y):
        c, _, kh, kw = W.shape
        oh, ow = y.shape[2:]
        term = numpy.empty_like(y)
        for i in range(kh):
            for j in range(kw):
                numpy.multiply(_windows(xp, i, j, self.sy, self.sx, oh, ow),
                               W[:, 0, i, j].reshape(c, 1, 1), out=term)
                y += term

    def backward(self, indexes, grad_outputs):
        x, W = self.get_retained_inputs()
        gy, = grad_outputs
        grads = DepthwiseConvolutionGrad(self, indexes).apply((x, W, gy))
        return tuple(grads[indexes.index(i)] if i in indexes else None
                     for i in range(len(self.inputs)))


class DepthwiseConvolutionGrad(function_node.FunctionNode):
    """Gradients of :class:`DepthwiseConvolution2D` with respect to the
    inputs ``indexes`` asks for (0: x, 1: W, 2: b), in that order."""

    def __init__(self, conv_node, indexes):
        self.node = conv_node
        self.indexes = tuple(indexes)

    def forward(self, inputs):
        x, W, gy = inputs
        node = self.node
        c, _, kh, kw = W.shape
        n, _, h, w = x.shape
        oh, ow = gy.shape[2:]
        sy, sx, ph, pw = node.sy, node.sx, node.ph, node.pw
        grads = {}
        if 2 in self.indexes:
            grads[2] = gy.sum(axis=(0, 2, 3))
        if USE_JIT:  # both gradients in one pass
            gW = numpy.zeros(W.shape, dtype=numpy.float64)
            gxp = numpy.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=gy.dtype)
            _jit.depthwise_backward(
                numpy.ascontiguousarray(_padded(x, ph, pw)), W,
                numpy.ascontiguousarray(gy), sy, sx, gW, gxp)
            grads[1] = gW.astype(W.dtype)
            grads[0] = numpy.ascontiguousarray(gxp[:, :, ph:ph + h,
                                                   pw:pw + w])
            return tuple(grads[i] for i in self.indexes)
        if 1 in self.indexes:
            xp = _padded(x, ph, pw)
            gW = numpy.empty(W.shape, dtype=W.dtype)
            for i in range(kh):
                for j in range(kw):
                    gW[:, 0, i, j] = numpy.einsum(
                        'nchw,nchw->c', _windows(xp, i, j, sy, sx, oh, ow),
                        gy)
            grads[1] = gW
        if 0 in self.indexes:
            gxp = numpy.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=gy.dtype)
            term = numpy.empty_like(gy)
            for i in range(kh):
                for j in range(kw):
                    numpy.multiply(gy, W[:, 0, i, j].reshape(c, 1, 1),
                                   out=term)
                    _windows(gxp, i, j, sy, sx, oh, ow)[...] += term
            grads[0] = numpy.ascontiguousarray(gxp[:, :, ph:ph + h,
                                                   pw:pw + w])
        return tuple(grads[i] for i in self.indexes)

    def backward(self, indexes, grad_outputs):
        raise NotImplementedError('double backpropagation through the fast '
                                  'CPU depthwise convolution; use '
                                  'branchynet_kernels="stock"')


class MaxPooling2D(function_node.FunctionNode):
    """2-D max pooling on NumPy arrays, as ``F.max_pooling_2d``."""

    def __init__(self, ksize, stride, pad, cover_all):
        self.kh, self.kw = _pair(ksize)
        self.sy, self.sx = _pair(ksize if stride is None else stride)
        self.ph, self.pw = _pair(pad)
        self.cover_all = cover_all

    def check_type_forward(self, in_types):
        type_check._argname(in_types, ('x',))
        type_check.expect(in_types[0].dtype.kind == 'f',
                          in_types[0].ndim == 4)

    def forward(self, inputs):
        x, = inputs
        n, c, h, w = x.shape
        kh, kw, sy, sx = self.kh, self.kw, self.sy, self.sx
        oh = conv.get_conv_outsize(h, kh, sy, self.ph, self.cover_all)
        ow = conv.get_conv_outsize(w, kw, sx, self.pw, self.cover_all)
        self.x_shape = x.shape
        if USE_JIT:
            y = numpy.empty((n, c, oh, ow), dtype=x.dtype)
            self.offset = numpy.empty((n, c, oh, ow), dtype=numpy.uint8)
            _jit.pool_forward(numpy.ascontiguousarray(x), kh, kw, sy, sx,
                              self.ph, self.pw, y, self.offset)
            return y,
        hp, wp = (oh - 1) * sy + kh, (ow - 1) * sx + kw
        xp = _padded(x, self.ph, self.pw, -numpy.inf,
                     max(0, hp - h - 2 * self.ph), max(0, wp - w - 2 * self.pw))
        y = xp[:, :, 0:sy * (oh - 1) + 1:sy, 0:sx * (ow - 1) + 1:sx].copy()
        offset = numpy.zeros(y.shape, dtype=numpy.uint8)
        greater = numpy.empty(y.shape, dtype=bool)
        for i in range(kh):
            for j in range(kw):
                if i == j == 0:
                    continue
                window = xp[:, :, i:i + sy * (oh - 1) + 1:sy,
                            j:j + sx * (ow - 1) + 1:sx]
                # replace unless y >= window, or y is NaN: the first NaN
                # wins, as in Chainer's argmax
                numpy.greater_equal(y, window, out=greater)
                numpy.logical_not(greater, out=greater)
                greater &= ~numpy.isnan(y)
                numpy.copyto(y, window, where=greater)
                numpy.copyto(offset, i * kw + j, where=greater)
        self.offset = offset
        return y,

    def backward(self, indexes, grad_outputs):
        return MaxPoolingGrad(self).apply(grad_outputs)


class MaxPoolingGrad(function_node.FunctionNode):
    """The gradient of :class:`MaxPooling2D` with respect to x."""

    def __init__(self, pool):
        self.pool = pool

    def forward(self, inputs):
        gy, = inputs
        p = self.pool
        n, c, h, w = p.x_shape
        oh, ow = gy.shape[2:]
        if USE_JIT:
            gx = numpy.zeros(p.x_shape, dtype=gy.dtype)
            _jit.pool_backward(numpy.ascontiguousarray(gy), p.offset, p.kh,
                               p.kw, p.sy, p.sx, p.ph, p.pw, gx)
            return gx,
        gxp = numpy.zeros((n, c, max(h + 2 * p.ph, (oh - 1) * p.sy + p.kh),
                           max(w + 2 * p.pw, (ow - 1) * p.sx + p.kw)),
                          dtype=gy.dtype)
        at = numpy.empty(gy.shape, dtype=bool)
        for i in range(p.kh):
            for j in range(p.kw):
                numpy.equal(p.offset, i * p.kw + j, out=at)
                gxp[:, :, i:i + p.sy * (oh - 1) + 1:p.sy,
                    j:j + p.sx * (ow - 1) + 1:p.sx] += numpy.where(at, gy, 0)
        return numpy.ascontiguousarray(
            gxp[:, :, p.ph:p.ph + h, p.pw:p.pw + w]),

    def backward(self, indexes, grad_outputs):
        raise NotImplementedError('double backpropagation through the fast '
                                  'CPU max pooling; use '
                                  'branchynet_kernels="stock"')


def convolution_2d(x, W, b=None, stride=1, pad=0):
    """``F.convolution_2d(x, W, b, stride, pad)``, fast on NumPy arrays."""
    if not use_fast(x, W, b):
        return F.convolution_2d(x, W, b, stride, pad)
    inputs = (x, W) if b is None else (x, W, b)
    return Convolution2D(stride, pad).apply(inputs)[0]


def depthwise_convolution_2d(x, W, b=None, stride=1, pad=0):
    """``F.convolution_2d(x, W, b, stride, pad, groups=C)`` for ``W`` of
    shape ``(C, 1, kh, kw)``, fast on NumPy arrays."""
    if not use_fast(x, W, b):
        return F.convolution_2d(x, W, b, stride, pad, groups=W.shape[0])
    inputs = (x, W) if b is None else (x, W, b)
    return DepthwiseConvolution2D(stride, pad).apply(inputs)[0]


def max_pooling_2d(x, ksize, stride=None, pad=0, cover_all=True):
    """``F.max_pooling_2d(x, ksize, stride, pad, cover_all)``, fast on NumPy
    arrays."""
    if not use_fast(x):
        return F.max_pooling_2d(x, ksize, stride, pad, cover_all)
    return MaxPooling2D(ksize, stride, pad, cover_all).apply((x,))[0]
