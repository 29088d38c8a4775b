"""The CPU kernels' inner loops compiled with Numba, if installed.

Each loop does in one pass over memory what the NumPy version in
:mod:`branchynet.kernels` does in ``kh * kw`` passes over whole arrays: the
value and the position of the first maximum in one sweep of each window
(the element Chainer's ``argmax`` picks, NaN included), and the gradient sent back to it
(summed in output order: equal to Chainer's to float32 rounding where
windows overlap). Measured on B-AlexNet's largest pooling, forward and
backward: 0.19 s against 0.87 s for the NumPy loops (this CPU, 1 thread).
The convolution's input gradient adds each chunk's columns back in one
compiled sweep (:func:`_add_columns`): as fast as the NumPy additions on
B-ResNet-110's first stage, twice as fast on its last (8x8 maps, where
NumPy's per-call cost shows).

``AVAILABLE`` is False without Numba (a GPU host, say); the NumPy loops then
run. Compiled code is cached beside this file (``__pycache__``).
"""
import numpy

try:
    import numba
except ImportError:  # the NumPy loops of kernels.py run instead
    numba = None

AVAILABLE = numba is not None


def _jit(function):
    return numba.njit(cache=True, nogil=True)(function) if AVAILABLE \
        else None


def _pool_forward(x, kh, kw, sy, sx, ph, pw, y, offset):
    n, c, h, w = x.shape
    oh, ow = y.shape[2:]
    for a in range(n):
        for b in range(c):
            for i in range(oh):
                r0 = i * sy - ph  # the window's rows inside x (padding is -inf)
                di0, di1 = max(0, -r0), min(kh, h - r0)
                for j in range(ow):
                    q0 = j * sx - pw
                    dj0, dj1 = max(0, -q0), min(kw, w - q0)
                    best = -numpy.inf
                    chosen = 0
                    for di in range(di0, di1):
                        for dj in range(dj0, dj1):
                            v = x[a, b, r0 + di, q0 + dj]
                            # the first NaN wins, as in numpy's argmax
                            if v > best or (v != v and best == best):
                                best = v
                                chosen = di * kw + dj
                    y[a, b, i, j] = best
                    offset[a, b, i, j] = chosen


def _pool_backward(gy, offset, kh, kw, sy, sx, ph, pw, gx):
    n, c, h, w = gx.shape
    oh, ow = gy.shape[2:]
    for a in range(n):
        for b in range(c):
            for i in range(oh):
                for j in range(ow):
                    k = offset[a, b, i, j]
                    r = i * sy - ph + k // kw
                    q = j * sx - pw + k % kw
                    if 0 <= r < h and 0 <= q < w:
                        gx[a, b, r, q] += gy[a, b, i, j]


def _depthwise_forward(xp, W, sy, sx, y):
    """``y`` (zeros on entry) += the depthwise convolution of the padded
    input ``xp``; the innermost loop runs along a row, so it vectorises."""
    n, c, oh, ow = y.shape
    kh, kw = W.shape[2:]
    for a in range(n):
        for b in range(c):
            for di in range(kh):
                for dj in range(kw):
                    w = W[b, 0, di, dj]
                    for i in range(oh):
                        for j in range(ow):
                            y[a, b, i, j] += xp[a, b, i * sy + di,
                                                j * sx + dj] * w


def _depthwise_backward(xp, W, gy, sy, sx, gW, gxp):
    """The weight gradient into ``gW`` (float64 zeros on entry: sums over
    the batch) and the padded input gradient into ``gxp`` (zeros on
    entry)."""
    n, c, oh, ow = gy.shape
    kh, kw = W.shape[2:]
    for a in range(n):
        for b in range(c):
            for di in range(kh):
                for dj in range(kw):
                    w = W[b, 0, di, dj]
                    total = 0.0
                    for i in range(oh):
                        for j in range(ow):
                            g = gy[a, b, i, j]
                            total += g * xp[a, b, i * sy + di, j * sx + dj]
                            gxp[a, b, i * sy + di, j * sx + dj] += g * w
                    gW[b, 0, di, dj] += total


def _add_columns(gcol, sy, sx, gxp):
    """``gxp`` ``(n, C, hp, wp)`` += the columns ``gcol``
    ``(n, C, kh, kw, oh, ow)`` at their windows (a convolution's input
    gradient); the innermost loop runs along a row."""
    n, c, kh, kw, oh, ow = gcol.shape
    for a in range(n):
        for b in range(c):
            for di in range(kh):
                for dj in range(kw):
                    for i in range(oh):
                        r = i * sy + di
                        for j in range(ow):
                            gxp[a, b, r, j * sx + dj] += gcol[a, b, di, dj,
                                                              i, j]


def _bn_sums(x):
    """Per channel of ``x`` ``(n, C, hw)``: the sum and the sum of squares
    (float64), in one pass."""
    n, c, hw = x.shape
    total = numpy.zeros(c)
    squares = numpy.zeros(c)
    for a in range(n):
        for b in range(c):
            s = 0.0
            q = 0.0
            for k in range(hw):
                v = numpy.float64(x[a, b, k])
                s += v
                q += v * v
            total[b] += s
            squares[b] += q
    return total, squares


def _bn_forward(x, mean, scale, shift, residual, relu, y):
    """``y = (x - mean) * scale + shift`` per channel (in float64), plus
    ``residual`` when it has ``x``'s shape (else it is ignored), then ReLU
    if ``relu``; every array ``(n, C, hw)``."""
    n, c, hw = x.shape
    add = residual.shape == x.shape
    for a in range(n):
        for b in range(c):
            m = mean[b]
            sc = scale[b]
            sh = shift[b]
            for k in range(hw):
                v = (x[a, b, k] - m) * sc + sh
                if add:
                    v += residual[a, b, k]
                if relu and not v > 0:
                    v = 0.0
                y[a, b, k] = v


def _bn_grad_sums(gy, y, x, mean, relu):
    """Per channel: the sums of ``gz`` and of ``gz * (x - mean)`` (float64),
    ``gz`` being ``gy`` where ``y > 0`` if ``relu``, else ``gy``."""
    n, c, hw = x.shape
    total = numpy.zeros(c)
    centred = numpy.zeros(c)
    for a in range(n):
        for b in range(c):
            m = mean[b]
            s = 0.0
            t = 0.0
            for k in range(hw):
                g = numpy.float64(gy[a, b, k])
                if relu and not y[a, b, k] > 0:
                    g = 0.0
                s += g
                t += g * (x[a, b, k] - m)
            total[b] += s
            centred[b] += t
    return total, centred


def _bn_backward(gy, y, x, mean, ca, cb, cc, relu, gx, gz):
    """``gx = ca * gz - cb * (x - mean) - cc`` per channel, and ``gz`` (the
    gradient before the normalisation: the residual's) when it has ``x``'s
    shape."""
    n, c, hw = x.shape
    keep = gz.shape == x.shape
    for a in range(n):
        for b in range(c):
            m = mean[b]
            p = ca[b]
            q = cb[b]
            r = cc[b]
            for k in range(hw):
                g = gy[a, b, k]
                if relu and not y[a, b, k] > 0:
                    g = 0.0
                if keep:
                    gz[a, b, k] = g
                gx[a, b, k] = p * g - q * (x[a, b, k] - m) - r


bn_sums = _jit(_bn_sums)
bn_forward = _jit(_bn_forward)
bn_grad_sums = _jit(_bn_grad_sums)
bn_backward = _jit(_bn_backward)
pool_forward = _jit(_pool_forward)
pool_backward = _jit(_pool_backward)
depthwise_forward = _jit(_depthwise_forward)
depthwise_backward = _jit(_depthwise_backward)
add_columns = _jit(_add_columns)
