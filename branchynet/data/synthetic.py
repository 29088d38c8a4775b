"""Small datasets written in the standard file formats, for tests and smoke runs.

Each file's images have one mean pattern per class plus noise, so a network
fits the training file in a few steps. The patterns are drawn per file, so
the test file's classes look different from the training file's: test
accuracy stays near chance. These data exercise the code (loaders, runs,
the GPU check), not learning; result files made from them say
``official_files: false``.
"""
import gzip
import os
import pickle

import numpy


def _images(rng, labels, shape):
    patterns = rng.randint(0, 256, (10,) + shape)
    noise = rng.randint(-40, 41, (len(labels),) + shape)
    return numpy.clip(patterns[labels] + noise, 0, 255).astype(numpy.uint8)


def idx_bytes(array, magic):
    """``array`` (uint8) as an idx file with the given magic number."""
    header = numpy.array([magic, len(array)] + list(array.shape[1:]), '>u4')
    return header.tobytes() + array.astype(numpy.uint8).tobytes()


def write_mnist(folder, train=300, test=100, gz=True, seed=0):
    """The four MNIST idx files (gzipped unless ``gz`` is False) in ``folder``.

    Returns:
        ``folder``.
    """
    rng = numpy.random.RandomState(seed)
    os.makedirs(folder, exist_ok=True)
    for prefix, count in (('train', train), ('t10k', test)):
        labels = rng.randint(0, 10, count)
        for kind, magic, array in (
                ('images-idx3-ubyte', 2051, _images(rng, labels, (28, 28))),
                ('labels-idx1-ubyte', 2049, labels)):
            data = idx_bytes(array, magic)
            name = '{}-{}'.format(prefix, kind)
            if gz:
                name, data = name + '.gz', gzip.compress(data)
            with open(os.path.join(folder, name), 'wb') as f:
                f.write(data)
    return folder


def write_cifar10(folder, per_batch=60, test=True, python=False, seed=0):
    """Five CIFAR-10 training batches (and ``test_batch``) of ``per_batch`` images.

    Binary ``.bin`` files, or python pickles with ``python=True``.

    Returns:
        ``folder``.
    """
    rng = numpy.random.RandomState(seed)
    os.makedirs(folder, exist_ok=True)
    names = ['data_batch_{}'.format(i) for i in range(1, 6)]
    names += ['test_batch'] if test else []
    for name in names:
        labels = rng.randint(0, 10, per_batch)
        images = _images(rng, labels, (3, 32, 32)).reshape(per_batch, -1)
        if python:
            with open(os.path.join(folder, name), 'wb') as f:
                pickle.dump({b'data': images, b'labels': labels.tolist()}, f)
        else:
            records = numpy.concatenate([labels[:, None].astype(numpy.uint8),
                                         images], axis=1)
            with open(os.path.join(folder, name + '.bin'), 'wb') as f:
                f.write(records.tobytes())
    return folder


def random_batch(shape, size, seed, classes=10):
    """``(x, t)``: ``size`` float32 samples of ``shape``, uniform in [0, 1),
    and int32 labels below ``classes`` (both datasets here have 10), drawn
    in that order from ``seed`` (an int, or a ``RandomState`` to draw on
    from): the stand-in batch of timing, parity and port checks that need
    no real data."""
    rng = seed if isinstance(seed, numpy.random.RandomState) else \
        numpy.random.RandomState(seed)
    x = rng.rand(size, *shape).astype(numpy.float32)
    return x, rng.randint(0, classes, size).astype(numpy.int32)
