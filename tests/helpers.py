"""What the tests share: tiny networks and batches, synthetic data folders,
and one way to run a script (its ``main`` in this process, or the script
in a subprocess where the process matters). Fixtures live in conftest.py.
"""
import branchynet  # noqa: F401  (first: makes Chainer importable on NumPy 2)
import importlib.util
import os
import shutil
import subprocess
import sys

import chainer
import chainer.functions as F
import chainer.links as L
import numpy

from branchynet import Branch, BranchyNet, entropy, exit_rule
from branchynet.data.synthetic import write_cifar10, write_mnist
from branchynet.layers import dropout, max_pool, relu

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


def assert_same_models(run_a, run_b):
    """The two run folders hold the same saved models, bit for bit."""
    for name in ('baseline.npz', 'branchynet.npz'):
        with numpy.load(os.path.join(run_a, name)) as a, \
                numpy.load(os.path.join(run_b, name)) as b:
            assert a.files == b.files, name
            for key in a.files:
                numpy.testing.assert_array_equal(a[key], b[key], err_msg=key)


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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, 'experiments')
_LOADED = {}


def script_module(name):
    """The experiment script ``experiments/<name>.py`` as a module (loaded
    once, under its own name; nothing is added to ``sys.path``)."""
    if name not in _LOADED:
        spec = importlib.util.spec_from_file_location(
            'experiment_' + name, os.path.join(SCRIPTS, name + '.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LOADED[name] = module
    return _LOADED[name]


def run_main(name, argv):
    """``experiments/<name>.py``'s ``main(argv)`` in this process."""
    return script_module(name).main(list(argv))


def script(name, *args, cwd=None, timeout=300):
    """Run an experiment script in a subprocess; the finished process."""
    return subprocess.run([sys.executable, os.path.join(SCRIPTS, name)] +
                          [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def one_line(done, *messages):
    """A script that failed with one line on stderr, no traceback, no usage."""
    assert done.returncode != 0, done.stdout[-2000:]
    err = done.stderr.strip()
    assert 'Traceback' not in err, err
    assert len(err.splitlines()) == 1, err
    for message in messages:
        assert message in err, err
    return err


def copy_of(folder, tmp_path, name='copy'):
    """A copy of ``folder`` (links kept as links) in ``tmp_path``."""
    target = str(tmp_path / name)
    shutil.copytree(folder, target, symlinks=True)
    return target


class Interrupted(Exception):
    """Raised by :func:`interrupt_training` in place of a Ctrl-C."""


def interrupt_training(monkeypatch, at_step, method='forward',
                       raising=Interrupted):
    """Make the ``at_step``-th training call of ``BranchyLoss.<method>``
    (``'forward'``: a joint step; ``'main_loss'``: a main-phase step) raise
    ``raising`` (``KeyboardInterrupt``: a Ctrl-C); evaluation calls are not
    counted. Returns the original method."""
    from branchynet.loss import BranchyLoss
    original = getattr(BranchyLoss, method)
    steps = []

    def counted(self, x, t):
        if chainer.config.train:
            steps.append(1)
            if len(steps) == at_step:
                raise raising()
        return original(self, x, t)
    monkeypatch.setattr(BranchyLoss, method, counted)
    return original
