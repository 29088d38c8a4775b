"""The tests' fixtures; what they share besides is in helpers.py."""
import os

# A worker of a parallel run (pytest-xdist) has a core to itself: BLAS
# threads, and the convolution threads sized to them, would contend with the
# other workers. Set before NumPy loads OpenBLAS.
if os.environ.get('PYTEST_XDIST_WORKER'):
    os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')

import branchynet  # noqa: F401  (first: makes Chainer importable on NumPy 2)
import pytest

from helpers import cuda_unusable_reason, synthetic_data_dir

# the synthetic data of a test module, unless it sets DATA_SIZES
DATA_SIZES = {'mnist': (128, 32), 'cifar10_per_batch': 24}


@pytest.fixture(scope='module')
def data(request, tmp_path_factory):
    """A data folder in the layout ``--data-dir`` expects: synthetic MNIST
    and CIFAR-10 training batches (no test batch), of the sizes the test
    module's ``DATA_SIZES`` gives (else :data:`DATA_SIZES`)."""
    sizes = dict(DATA_SIZES, **getattr(request.module, 'DATA_SIZES', {}))
    return synthetic_data_dir(tmp_path_factory, sizes['mnist'],
                              sizes['cifar10_per_batch'])


@pytest.fixture
def cupy():
    """CuPy with a usable CUDA device, or skip the test saying why."""
    reason = cuda_unusable_reason()
    if reason is not None:
        pytest.skip(reason)
    import cupy
    return cupy


@pytest.fixture
def stops(capsys):
    """Run a script's main in this process; it must stop with one line.

    A flag's error is printed (exit status 2); any other ends the program
    with its message (status 1).
    """
    from branchynet.runs import cli

    def run(argv, *messages, key='b_lenet', code=None):
        with pytest.raises(SystemExit) as stop:
            cli.main(key, argv)
        printed = capsys.readouterr().err.strip()
        text = printed if stop.value.code == 2 else str(stop.value.code)
        if code is not None:
            assert (stop.value.code == 2) == (code == 2), text
        assert text and '\n' not in text.strip(), text
        for message in messages:
            assert message in text, text
        return text
    return run


@pytest.fixture(params=['numba', 'numpy'])
def loops(request, monkeypatch):
    """Both inner loops of the CPU kernels: Numba's (when installed) and
    NumPy's."""
    from branchynet import kernels
    if request.param == 'numba' and not kernels._jit.AVAILABLE:
        pytest.skip('Numba is not installed')
    monkeypatch.setattr(kernels, 'USE_JIT', request.param == 'numba')
    return request.param
