"""The validation split: a seeded, class-stratified share of the training
set, held out before anything is fitted on it."""
import numpy


def stratified_split(labels, size, seed):
    """Sorted indices of a seeded, class-stratified sample of ``size`` labels.

    Each class gets ``size * count / total`` places rounded down; the places
    left over go to the classes with the largest remainders (ties: the
    smaller class label). Within a class the samples are drawn with
    ``numpy.random.RandomState(seed)``, class by class in label order, so
    the split depends only on the labels, ``size`` and ``seed``.

    Raises:
        ValueError: ``size`` is negative or leaves no training sample.
    """
    labels = numpy.asarray(labels)
    if not 0 <= size < len(labels):
        raise ValueError('a validation split of {} samples needs 0 <= size < '
                         'the {} training samples'.format(size, len(labels)))
    classes, counts = numpy.unique(labels, return_counts=True)
    places = size * counts // len(labels)
    remainders = size * counts % len(labels)
    order = numpy.argsort(-remainders, kind='stable')
    places[order[:size - places.sum()]] += 1
    rng = numpy.random.RandomState(seed)
    chosen = [rng.permutation(numpy.flatnonzero(labels == c))[:k]
              for c, k in zip(classes, places)]
    return numpy.sort(numpy.concatenate(chosen).astype(numpy.int64))


def carve_validation(x, t, size, seed):
    """``(train_x, train_t, valid_x, valid_t, info)`` with ``size`` held out."""
    held = stratified_split(t, size, seed)
    keep = numpy.ones(len(t), bool)
    keep[held] = False
    info = {'size': int(size), 'seed': int(seed),
            'rule': 'class-stratified, seeded, carved from the training set '
                    'before training; training uses the rest',
            'class_counts': numpy.bincount(t[held], minlength=10).tolist()}
    return x[keep], t[keep], x[held], t[held], info
