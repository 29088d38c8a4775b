"""MNIST and CIFAR-10 from their standard files, checked, preprocessed and cached.

Where the files are: ``data_dir`` (the ``--data-dir`` flag) or else the
``BRANCHYNET_DATA_DIR`` environment variable. Files are looked for in that
directory and in the standard sub-folders (``mnist/``, ``cifar10/``,
``cifar-10-batches-bin/``, ``cifar-10-batches-py/``), so one root such as
``../shared/data`` serves both datasets. With neither set, Chainer's own
downloaders fetch the data (``chainer.datasets.get_mnist`` / ``get_cifar10``).

It is longer than 500 lines because both datasets' readers share one set of
checks (official names, sizes and MD5s, decompression limits, pickles
refused) and one cache; splitting them would spread one boundary over
several files.

Every file is checked before use: its structure (idx headers, record sizes,
label range) always. A file named like one of the official files must be
that file: the official sample count and, where this module knows it, the
official MD5 (all MNIST files, the five CIFAR-10 binary training batches),
so that a file cut short at a record boundary cannot pass. Other data in
the same formats (synthetic sets for smoke tests, say) is read only when
asked for with ``official=False`` (``--unofficial-data``), and the result
files say so. A missing, truncated or corrupt file raises
:class:`DataError` naming the file and what was expected.

CIFAR-10 preprocessing (:data:`PREPROCESSINGS`): ``'zca'`` follows the
reference's "pcifar10" (ZCA whitening fitted on the training images, then
each image min-max scaled to [0, 1]); ``'gcn'`` its second loader,
"cifar10gcn" (the training images' per-pixel mean subtracted, then global
contrast normalisation per image); ``'zca-eps'`` is ZCA with a
regularising epsilon; ``'scale'`` divides by 255. Every statistic is fitted
on the training images alone. Preprocessed
arrays are cached (``cache_dir``, ``BRANCHYNET_CACHE_DIR`` or
``~/.cache/branchynet``) under a key made of the source files' checksums,
the split and the preprocessing, so a second run loads them directly.
"""
import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import sys
import tokenize
import zipfile
import zlib

import numpy

from branchynet.data.preprocessing import (PREPROCESSINGS,  # noqa: F401
                                           ZCA_EPS_EPSILON, gcn,
                                           global_contrast_normalise,
                                           minmax_per_image, pixel_mean,
                                           preprocess, zca_whiten)
from branchynet.data.splits import carve_validation, stratified_split  # noqa
from branchynet.utils.errors import UserError
from branchynet.utils.files import atomic_write, remove_partial_files

DATA_DIR_ENV = 'BRANCHYNET_DATA_DIR'
CACHE_DIR_ENV = 'BRANCHYNET_CACHE_DIR'
_CACHE_VERSION = 1

# MD5 of the official files: MNIST as distributed (.gz) and decompressed,
# CIFAR-10 binary training batches as extracted from the official archive.
OFFICIAL_MD5 = {
    'train-images-idx3-ubyte.gz': 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
    'train-labels-idx1-ubyte.gz': 'd53e105ee54ea40749a09fcbcd1e9432',
    't10k-images-idx3-ubyte.gz': '9fb629c4189551a2d022fa330f9573f3',
    't10k-labels-idx1-ubyte.gz': 'ec29112dd5afa0611ce80d1b7f02629c',
    'train-images-idx3-ubyte': '6bbc9ace898e44ae57da46a324031adb',
    'train-labels-idx1-ubyte': 'a25bea736e30d166cdddb491f175f624',
    't10k-images-idx3-ubyte': '2646ac647ad5339dbf082846283269ea',
    't10k-labels-idx1-ubyte': '27ae3e4e09519cfbb04c329615203637',
    'data_batch_1.bin': '5dd7e06a14cb22eb9f671a540d1b7c25',
    'data_batch_2.bin': '5ea93a67294ea407fff1d09f752e9692',
    'data_batch_3.bin': '942cd6a4bcdd0dd3c604fbe906cb4421',
    'data_batch_4.bin': 'ae636b3ba5c66a11e91e8cb52e771fcb',
    'data_batch_5.bin': '53f37980c15c3d472c316c40844f3f0d',
    # the python version's batches, as extracted from cifar-10-python.tar.gz
    'data_batch_1': 'c99cafc152244af753f735de768cd75f',
    'data_batch_2': 'd4bba439e000b95fd0a9bffe97cbabec',
    'data_batch_3': '54ebc095f3ab1f0389bbae665268c751',
    'data_batch_4': '634d18415352ddfa80567beed471001a',
    'data_batch_5': '482c414d41f54cd18b22e5b47cb7c3cb',
    'test_batch': '40351d587109b95175f43aff81a1287e',
}
MNIST_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 60000),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte', 10000),
}
CIFAR10_BATCHES = ['data_batch_{}'.format(i) for i in range(1, 6)]
CIFAR10_TEST = 'test_batch'
CIFAR10_RECORDS = 10000
_CIFAR10_RECORD = 1 + 3 * 32 * 32
_SUBDIRS = {
    'mnist': ['', 'mnist'],
    'cifar10': ['', 'cifar-10-batches-bin', 'cifar-10-batches-py',
                os.path.join('cifar10', 'cifar-10-batches-bin'),
                os.path.join('cifar10', 'cifar-10-batches-py')],
}


class DataError(UserError):
    """A dataset file is missing, truncated or corrupt, or a split is impossible."""


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 python batch and nothing else: dicts, lists,
    strings, numbers and NumPy arrays. Every other global a pickle names (a
    function to call, such as ``os.system``) is refused, so a batch a user
    hands over cannot run code."""
    _ALLOWED = {('numpy', 'ndarray'), ('numpy', 'dtype'),
                ('numpy.core.multiarray', '_reconstruct'),
                ('numpy._core.multiarray', '_reconstruct'),
                ('_codecs', 'encode'), ('copy_reg', '_reconstructor'),
                ('copyreg', '_reconstructor'), ('__builtin__', 'object'),
                ('builtins', 'object')}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                'it names {}.{}, which a CIFAR-10 batch never holds'.format(
                    module, name))
        return super().find_class(module, name)


@dataclasses.dataclass
class Dataset:
    """Train, validation and test arrays plus a record of where they came from.

    ``info`` is JSON-ready: dataset name, files used for training and for
    testing, sample counts, preprocessing, the validation split. Result
    files embed it. Without a validation split, ``valid_x`` and ``valid_t``
    hold zero samples.
    """
    train_x: numpy.ndarray
    train_t: numpy.ndarray
    test_x: numpy.ndarray
    test_t: numpy.ndarray
    info: dict
    valid_x: numpy.ndarray = None
    valid_t: numpy.ndarray = None

    def __post_init__(self):
        if self.valid_x is None:
            self.valid_x = self.train_x[:0]
            self.valid_t = self.train_t[:0]


def _first(x, t, count):
    """The first ``count`` samples (all of them for ``None`` or a larger count).

    The sizes actually used are recorded in the dataset's ``info``.
    """
    return x[:count], t[:count]


# --- locating and checking files ---------------------------------------------

def resolve_data_dir(data_dir):
    """``data_dir``, else ``$BRANCHYNET_DATA_DIR``, else None (download)."""
    return data_dir or os.environ.get(DATA_DIR_ENV) or None


def _md5(data):
    return hashlib.md5(data).hexdigest()


def _find(data_dir, dataset, names):
    """First existing path among ``names`` in ``data_dir`` and its sub-folders."""
    searched = [os.path.join(data_dir, sub) for sub in _SUBDIRS[dataset]]
    for folder in searched:
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


# The largest dataset file this module reads is MNIST's training images,
# 47 MB decompressed; a gzip that inflates far beyond is not a dataset file
# (a "decompression bomb" would fill the memory).
MAX_DECOMPRESSED = 256 * 2 ** 20


def _read(path):
    """File contents, decompressed if gzip; a corrupt gzip is a DataError."""
    try:
        with open(path, 'rb') as f:
            raw = f.read()
        if not path.endswith('.gz'):
            return raw, raw
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as g:
            data = g.read(MAX_DECOMPRESSED + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError('{}: cannot read ({}): the file is truncated or '
                        'corrupt'.format(path, e)) from e
    if len(data) > MAX_DECOMPRESSED:
        raise DataError('{}: decompresses to more than {} MB, which no MNIST '
                        'file does'.format(path, MAX_DECOMPRESSED >> 20))
    return raw, data


UNOFFICIAL_HINT = ('a file named like an official one must be that file; '
                   'to use other data in this format, pass --unofficial-data')


def _check_official(path, raw, count, official_count, official):
    """Official name -> official sample count and MD5, unless ``official`` is off."""
    if not official:
        return
    if count != official_count:
        raise DataError('{}: {} samples, the official file has {}: {}'.format(
            path, count, official_count, UNOFFICIAL_HINT))
    expected = OFFICIAL_MD5.get(os.path.basename(path))
    if expected and _md5(raw) != expected:
        raise DataError('{}: MD5 {} differs from the official file\'s {}: '
                        'the file is corrupt ({})'.format(
                            path, _md5(raw), expected, UNOFFICIAL_HINT))


# --- MNIST -----------------------------------------------------------------

def _read_idx(path, magic, item_shape, official_count, official):
    raw, data = _read(path)
    header = 4 * (1 + 1 + len(item_shape))
    if len(data) < header:
        raise DataError('{}: {} bytes, too short for an idx header of {} '
                        'bytes'.format(path, len(data), header))
    fields = numpy.frombuffer(data[:header], dtype='>u4')
    if fields[0] != magic or tuple(fields[2:]) != item_shape:
        raise DataError('{}: idx header says magic {} and item shape {}, '
                        'expected magic {} and {}'.format(
                            path, fields[0], tuple(fields[2:]), magic,
                            item_shape))
    count = int(fields[1])
    expected = header + count * int(numpy.prod(item_shape, dtype=int))
    if len(data) != expected:
        raise DataError('{}: {} bytes of data, expected {} for {} items: the '
                        'file is truncated or corrupt'.format(
                            path, len(data), expected, count))
    _check_official(path, raw, count, official_count, official)
    return numpy.frombuffer(data, dtype=numpy.uint8, offset=header).reshape(
        (count,) + item_shape)


def _mnist_part(data_dir, part, official):
    image_name, label_name, official_count = MNIST_FILES[part]
    arrays = []
    for name, magic, shape in ((image_name, 2051, (28, 28)),
                               (label_name, 2049, ())):
        path = _find(data_dir, 'mnist', [name + '.gz', name])
        if path is None:
            raise DataError('MNIST file {}(.gz) not found in {} or its mnist/ '
                            'folder'.format(name, data_dir))
        arrays.append(_read_idx(path, magic, shape, official_count, official))
    images, labels = arrays
    if len(images) != len(labels):
        raise DataError('MNIST {} set: {} images but {} labels'.format(
            part, len(images), len(labels)))
    if labels.max(initial=0) > 9:
        raise DataError('MNIST {} labels: values above 9'.format(part))
    return (images.astype(numpy.float32)[:, None] / 255,
            labels.astype(numpy.int32))


def load_mnist(data_dir=None, train_size=None, test_size=None,
               validation_size=0, seed=0, official=True):
    """MNIST as float32 ``(N, 1, 28, 28)`` in [0, 1] (pixels / 255).

    Args:
        data_dir: folder with the four idx files (gzipped or not), directly
            or in ``mnist/``; ``None``: ``$BRANCHYNET_DATA_DIR`` or download.
        train_size, test_size: use only the first samples.
        validation_size: hold out this many of the (first ``train_size``)
            training samples as a validation set (:func:`stratified_split`
            with ``seed``).
        official: require the official files (see the module docstring).

    Returns:
        A :class:`Dataset`.

    Raises:
        DataError: a file is missing, damaged or (with ``official``) not
            the official one.
    """
    data_dir = resolve_data_dir(data_dir)
    if data_dir is None:
        train_x, train_t, test_x, test_t = _download('mnist')
        source = 'chainer.datasets.get_mnist'
    else:
        train_x, train_t = _mnist_part(data_dir, 'train', official)
        test_x, test_t = _mnist_part(data_dir, 'test', official)
        source = data_dir  # as given: no machine's absolute path
    train_x, train_t = _first(train_x, train_t, train_size)
    test_x, test_t = _first(test_x, test_t, test_size)
    train_x, train_t, valid_x, valid_t, validation = carve_validation(
        train_x, train_t, validation_size, seed)
    info = {'dataset': 'mnist', 'source': source,
            'train': 'train-images-idx3-ubyte', 'test': 't10k-images-idx3-ubyte',
            'train_size': len(train_t), 'test_size': len(test_t),
            'validation': validation, 'preprocessing': 'pixels / 255',
            'official_files': bool(official)}
    return Dataset(train_x, train_t, test_x, test_t, info, valid_x, valid_t)


# --- CIFAR-10 ----------------------------------------------------------------

def _cifar10_batch(path, official=True):
    """Images (uint8, N x 3 x 32 x 32), labels and the raw file's MD5."""
    raw, data = _read(path)
    if path.endswith('.bin'):
        if len(data) == 0 or len(data) % _CIFAR10_RECORD:
            raise DataError('{}: {} bytes is not a whole number of {}-byte '
                            'records: the file is truncated or corrupt'.format(
                                path, len(data), _CIFAR10_RECORD))
        records = numpy.frombuffer(data, numpy.uint8).reshape(
            -1, _CIFAR10_RECORD)
        labels, images = records[:, 0], records[:, 1:]
    else:
        # an official name is checked before anything is unpickled
        _check_official(path, raw, CIFAR10_RECORDS, CIFAR10_RECORDS, official)
        try:
            batch = _BatchUnpickler(io.BytesIO(data),
                                    encoding='bytes').load()
            images = numpy.asarray(batch[b'data'])
            labels = numpy.asarray(batch[b'labels'])
            if images.dtype.hasobject or labels.dtype.hasobject or \
                    labels.dtype.kind not in 'iu' or \
                    images.dtype.kind not in 'iu':
                raise TypeError('data of dtype {} and labels of dtype {}, '
                                'expected integers'.format(images.dtype,
                                                           labels.dtype))
            if images.size and (images.min() < 0 or images.max() > 255):
                raise ValueError('pixel values outside 0-255')
            images = images.astype(numpy.uint8)
        except Exception as e:
            raise DataError('{}: not a CIFAR-10 python batch ({})'.format(
                path, e)) from e
        if images.ndim != 2 or images.shape[1] != 3072 or \
                len(labels) != len(images):
            raise DataError('{}: data of shape {} with {} labels, expected '
                            '(N, 3072) with N labels'.format(
                                path, images.shape, len(labels)))
    _check_official(path, raw, len(labels), CIFAR10_RECORDS, official)
    if labels.max(initial=0) > 9:
        raise DataError('{}: labels above 9: the file is corrupt'.format(path))
    return images.reshape(-1, 3, 32, 32), labels.astype(numpy.int32), _md5(raw)


def _cifar10_path(data_dir, batch):
    path = _find(data_dir, 'cifar10', [batch + '.bin', batch])
    if path is None and batch == CIFAR10_TEST:
        raise DataError(
            'CIFAR-10 test batch (test_batch.bin or test_batch) not found in {} '
            'or its CIFAR-10 folders. To evaluate on a held-out training batch '
            'instead, pass --test-batch data_batch_5 (trains on the other '
            'four).'.format(data_dir))
    if path is None:
        raise DataError('CIFAR-10 batch {}(.bin) not found in {} or its '
                        'CIFAR-10 folders'.format(batch, data_dir))
    return path


def raw_cifar10(data_dir, batch, official=True):
    """One CIFAR-10 batch as it is stored, checked: ``(images, labels)``,
    uint8 ``(N, 3, 32, 32)`` and int32 ``(N,)``, not preprocessed."""
    images, labels, _ = _cifar10_batch(
        _cifar10_path(resolve_data_dir(data_dir), batch), official)
    return images, labels


def _read_cache(path, train_count, held_count):
    """The cached arrays, or ``None``; a damaged entry is named and removed."""
    if not os.path.isfile(path):
        return None
    try:
        with numpy.load(path) as cached:
            train_x, held_x = cached['train_x'], cached['test_x']
        if len(train_x) != train_count or len(held_x) != held_count:
            raise ValueError('{} + {} samples, expected {} + {}'.format(
                len(train_x), len(held_x), train_count, held_count))
    except (OSError, ValueError, KeyError, EOFError, SyntaxError,
            tokenize.TokenError, zipfile.BadZipFile, zlib.error) as e:
        print('warning: cache entry {} is damaged ({}); discarding it and '
              'preprocessing again'.format(path, e), file=sys.stderr)
        os.remove(path)
        return None
    return train_x, held_x


def cache_folder(cache_dir=None):
    """The folder of preprocessed CIFAR-10 arrays: ``cache_dir``, else
    ``$BRANCHYNET_CACHE_DIR``, else ``~/.cache/branchynet``."""
    return cache_dir or os.environ.get(CACHE_DIR_ENV) or os.path.join(
        os.path.expanduser('~'), '.cache', 'branchynet')


def load_cifar10(data_dir=None, test_batch=None, preprocessing='zca',
                 train_size=None, test_size=None, cache_dir=None,
                 validation_size=0, seed=0, official=True,
                 train_batches=None, keep_raw=False, say=None):
    """CIFAR-10 as float32 ``(N, 3, 32, 32)``, preprocessed and cached.

    Args:
        data_dir: folder with the binary (``*.bin``) or python batches.
        test_batch: ``None`` to test on the official ``test_batch``; or the
            name of a training batch (e.g. ``'data_batch_5'``) to hold out
            for testing, training on the other four.
        preprocessing: ``'zca'`` (reference) or ``'scale'``.
        train_size, test_size: use only the first samples (before
            preprocessing, so ZCA is fitted on what is trained on).
        validation_size, seed: hold out a validation set from those
            training samples (:func:`stratified_split`), before ZCA is
            fitted: the validation images are preprocessed as test images.
        official: require the official files (see the module docstring).
        train_batches: the training batches to train on (default: every
            one but ``test_batch``); no other file is read, so a study can
            validate on one training batch without opening the one held
            out for testing.
        keep_raw: also keep the uint8 images before preprocessing, as the
            dataset's ``raw_train_x`` and ``raw_test_x``: what a port kit
            needs to let a port check its preprocessing.
        say: called with a line before a preprocessing of more than a few
            seconds and after a cache entry is written (its path and size).

    Returns:
        A :class:`Dataset`.

    Raises:
        DataError: as :func:`load_mnist`.
    """
    if preprocessing not in PREPROCESSINGS:
        raise ValueError('preprocessing must be one of {}, got {!r}'.format(
            sorted(PREPROCESSINGS), preprocessing))
    if test_batch not in (None, CIFAR10_TEST) + tuple(CIFAR10_BATCHES):
        raise ValueError('test_batch must be None or one of {}, got {!r}'
                         .format(CIFAR10_BATCHES, test_batch))
    test_name = test_batch or CIFAR10_TEST
    if train_batches is None:
        train_names = [b for b in CIFAR10_BATCHES if b != test_name]
    else:
        train_names = list(train_batches)
        if not train_names or test_name in train_names or \
                len(set(train_names)) != len(train_names) or \
                not set(train_names) <= set(CIFAR10_BATCHES):
            raise ValueError(
                'train_batches must be distinct training batches ({}) '
                'without the test batch {}, got {}'.format(
                    ', '.join(CIFAR10_BATCHES), test_name, train_names))
    data_dir = resolve_data_dir(data_dir)
    info = {'dataset': 'cifar10', 'train': train_names, 'test': test_name,
            'held_out_training_batch': test_name != CIFAR10_TEST,
            'official_files': bool(official),
            'preprocessing': preprocessing + ': ' + PREPROCESSINGS[preprocessing]}
    if data_dir is None:
        if test_name != CIFAR10_TEST or train_batches is not None:
            raise DataError('a held-out test batch or a choice of training '
                            'batches needs --data-dir with the CIFAR-10 '
                            'batches')
        raw_train_x, train_t, raw_test_x, test_t = _download('cifar10')
        info['source'], checksums = 'chainer.datasets.get_cifar10', ['download']
    else:
        parts = [_cifar10_batch(_cifar10_path(data_dir, name), official)
                 for name in train_names + [test_name]]
        raw_train_x = numpy.concatenate([p[0] for p in parts[:-1]])
        train_t = numpy.concatenate([p[1] for p in parts[:-1]])
        raw_test_x, test_t, _ = parts[-1]
        info['source'], checksums = data_dir, [
            p[2] for p in parts]
    raw_train_x, train_t = _first(raw_train_x, train_t, train_size)
    raw_test_x, test_t = _first(raw_test_x, test_t, test_size)
    raw_train_x, train_t, raw_valid_x, valid_t, validation = \
        carve_validation(raw_train_x, train_t, validation_size, seed)
    info.update(train_size=len(train_t), test_size=len(test_t),
                validation=validation)

    key = hashlib.sha1(repr((_CACHE_VERSION, checksums, train_names, test_name,
                             preprocessing, len(train_t),
                             len(test_t), validation_size,
                             seed)).encode()).hexdigest()[:16]
    path = os.path.join(cache_folder(cache_dir),
                        'cifar10-{}.npz'.format(key))
    # a preprocessing killed while writing leaves a partial file (~700 MB)
    remove_partial_files(os.path.dirname(path), ['cifar10-*.npz'],
                         older_than_s=3600)
    cached = _read_cache(path, len(train_t), len(valid_t) + len(test_t))
    say = say or (lambda text: None)
    if cached is not None:
        train_x, held_x = cached
    else:
        say('preprocessing CIFAR-10 ({}) for {} training and {} other '
            'images{}'.format(preprocessing, len(train_t),
                              len(valid_t) + len(test_t),
                              ' (ZCA of 40000 images: about a minute)'
                              if 'zca' in preprocessing and
                              len(train_t) > 10000 else ''))
        # validation and test images are preprocessed alike, with what was
        # fitted on the training images
        train_x, held_x = preprocess(
            raw_train_x, numpy.concatenate([raw_valid_x, raw_test_x]),
            preprocessing)
        with atomic_write(path) as f:
            numpy.savez(f, train_x=train_x, test_x=held_x)
        say('cached the preprocessed images in {} ({:.0f} MB; a later run '
            'loads them from there, and they may be deleted)'.format(
                path, os.path.getsize(path) / 1e6))
    info['cache'] = path
    valid_x, test_x = held_x[:len(valid_t)], held_x[len(valid_t):]
    data = Dataset(train_x, train_t, test_x, test_t, info, valid_x, valid_t)
    if keep_raw:
        data.raw_train_x, data.raw_test_x = raw_train_x, raw_test_x
    return data


# --- download fallback ---------------------------------------------------------

def _download(dataset):
    """Chainer's downloaders: MNIST in [0, 1], CIFAR-10 as raw uint8 pixels."""
    import chainer
    from chainer.dataset import concat_examples
    if dataset == 'mnist':
        train, test = chainer.datasets.get_mnist(ndim=3)
    else:
        train, test = chainer.datasets.get_cifar10(scale=255.)
    arrays = []
    for part in (train, test):
        x, t = concat_examples(part)
        if dataset == 'cifar10':
            x = x.round().astype(numpy.uint8)
        arrays += [x, t.astype(numpy.int32)]
    return arrays
