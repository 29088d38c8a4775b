import math

import numpy
import pytest
import scipy.stats

from branchynet import entropy


def test_matches_scipy_on_random_distributions():
    rng = numpy.random.RandomState(0)
    p = rng.dirichlet(numpy.ones(10), size=50)
    expected = scipy.stats.entropy(p, axis=1)  # natural log
    numpy.testing.assert_allclose(entropy(p), expected, rtol=1e-12)
    numpy.testing.assert_allclose(entropy(p.astype(numpy.float32)), expected,
                                  rtol=1e-5)


def test_exact_small_cases_with_zeros():
    p = numpy.array([[1.0, 0.0, 0.0],
                     [0.5, 0.5, 0.0],
                     [0.25, 0.25, 0.5],
                     [1 / 3, 1 / 3, 1 / 3]])
    with numpy.errstate(all='raise'):  # 0 ln 0 must not warn or give NaN
        h = entropy(p)
    numpy.testing.assert_allclose(
        h, [0.0, math.log(2), 1.5 * math.log(2), math.log(3)], rtol=1e-15)
    numpy.testing.assert_allclose(h, scipy.stats.entropy(p, axis=1))


def test_keeps_dtype_and_reduces_last_axis():
    p = numpy.full((2, 5, 4), 0.25, dtype=numpy.float32)
    h = entropy(p)
    assert h.shape == (2, 5) and h.dtype == numpy.float32
    numpy.testing.assert_allclose(h, math.log(4), rtol=1e-6)


@pytest.mark.parametrize('bad', [[[0.5, 0.5]], numpy.array([[1, 0]]),
                                 numpy.float32(0.5)])
def test_rejects_non_float_arrays(bad):
    with pytest.raises(TypeError):
        entropy(bad)


def test_gpu_kernel_matches_numpy(cupy):
    rng = numpy.random.RandomState(0)
    p = rng.dirichlet(numpy.ones(10), size=64).astype(numpy.float32)
    p[:8, 3] = 0
    p[:8] /= p[:8].sum(axis=1, keepdims=True)
    h = entropy(cupy.asarray(p))
    assert isinstance(h, cupy.ndarray) and h.dtype == numpy.float32
    numpy.testing.assert_allclose(h.get(), entropy(p), rtol=1e-5, atol=1e-7)
