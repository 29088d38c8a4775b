"""CIFAR-10 preprocessings, each fitted on the training images alone.

:data:`PREPROCESSINGS` names them: ``zca`` (the reference's "pcifar10":
ZCA whitening fitted on the training images, then each image min-max
scaled to [0, 1]), ``gcn`` (its second loader, "cifar10gcn": the
training images' per-pixel mean subtracted, then global contrast
normalisation per image), ``zca-eps`` (ZCA with a regularising epsilon)
and ``scale`` (pixels / 255). :func:`preprocess` applies one to training
and test images; :func:`pixel_mean` gives the statistic a port needs.
"""
import numpy


def zca_whiten(train, test, epsilon=0.0):
    """ZCA whitening fitted on ``train`` (N x D), applied to both; float32 out.

    As the reference: mean-centre, covariance over samples,
    ``W = U diag(1/sqrt(S + epsilon)) U^T`` with ``U, S`` its eigenvectors
    and eigenvalues (the reference takes them from an SVD, which for a
    covariance matrix is the same decomposition; ``eigh`` is faster). The
    reference uses ``epsilon = 0``; directions without variance (eigenvalues
    below NumPy's matrix-rank tolerance, e.g. when there are fewer samples
    than dimensions) are left at zero instead of being amplified.
    """
    train = train.astype(numpy.float64)
    mean = train.mean(axis=0)
    train -= mean
    sigma = train.T @ train / len(train)
    s, u = numpy.linalg.eigh(sigma)
    kept = s > s.max() * len(s) * numpy.finfo(s.dtype).eps
    s = s + epsilon
    scale = numpy.zeros_like(s)
    scale[kept] = 1 / numpy.sqrt(s[kept])
    components = (u * scale) @ u.T
    white_train = (train @ components.T).astype(numpy.float32)
    white_test = ((test.astype(numpy.float64) - mean) @ components.T).astype(
        numpy.float32)
    return white_train, white_test


def minmax_per_image(x):
    """Scale each image (row) to [0, 1] by its own min and max.

    A constant image becomes all zeros.
    """
    x = x - x.min(axis=1, keepdims=True)
    peak = x.max(axis=1, keepdims=True)
    return x / numpy.where(peak > 0, peak, 1)


def global_contrast_normalise(x, min_divisor=1e-8):
    """Per-image global contrast normalisation, as the reference's
    ``datasets/cifar10gcn.py`` calls it (``use_std=True``, scale 1, no
    sqrt bias): subtract each image's (row's) mean over its pixels, then
    divide by its standard deviation with ``ddof=1``; a standard deviation
    below ``min_divisor`` leaves the image undivided. In ``x``'s dtype."""
    x = x - x.mean(axis=1, keepdims=True)
    divisor = numpy.sqrt(x.var(axis=1, ddof=1 if x.shape[1] > 1 else 0))
    divisor[divisor < min_divisor] = 1
    return x / divisor[:, None]


def gcn(train, test):
    """The reference's second CIFAR-10 loader (``cifar10gcn.py``), in
    float32 as it computes: pixels / 255, minus the per-pixel mean of the
    *training* images (the same mean subtracted from the test images), then
    :func:`global_contrast_normalise` per image. Its ZCA step is commented
    out there and is not applied."""
    train = train.astype(numpy.float32) / 255
    test = test.astype(numpy.float32) / 255
    mean = train.mean(axis=0)
    return (global_contrast_normalise(train - mean),
            global_contrast_normalise(test - mean))


# The regularised ZCA candidate: epsilon added to the covariance's
# eigenvalues of pixels / 255 (whose per-pixel variance is about 0.06), so
# that directions of little variance are damped instead of amplified.
ZCA_EPS_EPSILON = 0.01

PREPROCESSINGS = {
    'zca': 'ZCA whitening fitted on the training set, then per-image '
           'min-max to [0, 1] (reference "pcifar10")',
    'scale': 'pixels / 255',
    'gcn': 'pixels / 255 minus the training set\'s per-pixel mean, then '
           'per-image global contrast normalisation (reference '
           '"cifar10gcn")',
    'zca-eps': 'pixels / 255, ZCA whitening with epsilon {} fitted on the '
               'training set, then per-image min-max to [0, 1] (this '
               'project\'s regularised variant of "pcifar10")'.format(
                   ZCA_EPS_EPSILON),
}


def preprocess(train, test, preprocessing):
    """``train`` and ``test`` (uint8 images) preprocessed as
    ``preprocessing`` (a key of :data:`PREPROCESSINGS`) says, with every
    statistic fitted on ``train`` alone; float32, shapes kept."""
    flat_train = train.reshape(len(train), -1)
    flat_test = test.reshape(len(test), -1)
    if preprocessing in ('zca', 'zca-eps'):
        epsilon = 0.0
        if preprocessing == 'zca-eps':
            flat_train = flat_train.astype(numpy.float64) / 255
            flat_test = flat_test.astype(numpy.float64) / 255
            epsilon = ZCA_EPS_EPSILON
        flat_train, flat_test = zca_whiten(flat_train, flat_test, epsilon)
        flat_train, flat_test = (minmax_per_image(flat_train),
                                 minmax_per_image(flat_test))
    elif preprocessing == 'gcn':
        flat_train, flat_test = gcn(flat_train, flat_test)
    else:
        flat_train = flat_train.astype(numpy.float32) / 255
        flat_test = flat_test.astype(numpy.float32) / 255
    return (flat_train.reshape(train.shape).astype(numpy.float32),
            flat_test.reshape(test.shape).astype(numpy.float32))


def pixel_mean(raw_train, preprocessing):
    """The per-pixel mean that ``preprocessing`` subtracts, fitted on the
    uint8 training images ``raw_train`` ``(N, C, H, W)`` as
    :func:`preprocess` fits it (in its scale and precision), or ``None``
    for a preprocessing without one."""
    flat = raw_train.reshape(len(raw_train), -1)
    if preprocessing == 'gcn':
        return (flat.astype(numpy.float32) / 255).mean(axis=0).reshape(
            raw_train.shape[1:])
    if preprocessing in ('zca', 'zca-eps'):
        scale = 255.0 if preprocessing == 'zca-eps' else 1.0
        return (flat.astype(numpy.float64) / scale).mean(axis=0).reshape(
            raw_train.shape[1:])
    return None
