import branchynet  # noqa: F401  (first: makes Chainer importable on NumPy 2)

import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

from branchynet import Branch, BranchyNet, entropy, exit_rule
from branchynet.layers import dropout, max_pool, relu
from branchynet.synthetic import write_cifar10, write_mnist

TINY_SHAPE = (1, 6, 6)
TINY_CLASSES = 4


def make_tiny_net(seed=0, batchnorm=True, dropout_ratio=0.5, **kwargs):
    """A 3-exit BranchyNet small enough for exact checks.

    Stage 2 carries BatchNorm and the last stage dropout, so train/test
    behaviour matters; ``batchnorm=False, dropout_ratio=None`` removes both.
    """
    numpy.random.seed(seed)
    stage2 = [L.Convolution2D(3, 4, 3, pad=1)]
    if batchnorm:
        stage2.append(L.BatchNormalization(4))
    last = [relu, L.Linear(36, 8), relu]
    if dropout_ratio:
        last.append(dropout(dropout_ratio))
    layers = [
        L.Convolution2D(1, 3, 3, pad=1),
        Branch([relu, L.Linear(3 * 6 * 6, TINY_CLASSES)]),
        relu, max_pool(2, 2),
        *stage2,
        Branch([relu, L.Linear(4 * 3 * 3, TINY_CLASSES)]),
        *last,
        Branch([L.Linear(8, TINY_CLASSES)]),
    ]
    return BranchyNet(layers, TINY_SHAPE, name='tiny', **kwargs)


def tiny_batch(size=16, seed=1):
    rng = numpy.random.RandomState(seed)
    x = rng.randn(size, *TINY_SHAPE).astype(numpy.float32)
    t = rng.randint(0, TINY_CLASSES, size).astype(numpy.int32)
    return x, t


def synthetic_data_dir(tmp_path_factory, mnist, cifar10_per_batch=None):
    """A data folder in the layout ``--data-dir`` expects: synthetic MNIST
    (``mnist`` = (training, test) sizes) and, if asked, CIFAR-10 training
    batches of ``cifar10_per_batch`` images (no test batch)."""
    root = tmp_path_factory.mktemp('data')
    write_mnist(str(root / 'mnist'), train=mnist[0], test=mnist[1])
    if cifar10_per_batch:
        write_cifar10(str(root / 'cifar10' / 'cifar-10-batches-bin'),
                      per_batch=cifar10_per_batch, test=False)
    return str(root)


def exit_entropies(net, x):
    """Entropy of every sample at every non-final exit, shape (N-1, B)."""
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        ys = net(net.device.send(x))
    return numpy.stack([chainer.backends.cuda.to_cpu(
        entropy(F.softmax(y).array)) for y in ys[:-1]])


def mixing_thresholds(net, x):
    """One threshold per non-final exit that splits the samples near the median.

    Each is the midpoint of the widest gap between neighbouring entropies in
    the middle half, so that rounding differences between code paths or
    devices cannot move a sample across it.
    """
    return exit_rule.thresholds_at_widest_gaps(exit_entropies(net, x))


def grads(net):
    return {name: p.grad.copy() for name, p in net.namedparams()
            if p.grad is not None}


def cuda_unusable_reason():
    """Why CUDA cannot be used here, or ``None`` when it can.

    ``chainer.backends.cuda.available`` only says that CuPy and cuBLAS
    import; a machine with CuPy but no driver or device still fails at the
    first kernel, so ``cupy.cuda.is_available()`` is asked as well.
    """
    try:
        import cupy
    except ImportError:
        return 'CuPy is not installed'
    if not chainer.backends.cuda.available:
        return 'Chainer cannot use CuPy: {}'.format(
            getattr(chainer.backends.cuda, '_resolution_error', 'unknown'))
    if not cupy.cuda.is_available():
        return 'CuPy is installed but finds no CUDA driver or device'
    return None


@pytest.fixture
def cupy():
    """CuPy with a usable CUDA device, or skip the test saying why."""
    reason = cuda_unusable_reason()
    if reason is not None:
        pytest.skip(reason)
    import cupy
    return cupy
