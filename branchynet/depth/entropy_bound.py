"""EBCLE's data-set entropy, and the depth bounds we derive from it.

Gowdra et al. (arXiv 2106.14190) bound the convolutional depth of a network
by the entropy of its training images. Their public code computes that
entropy with ``skimage.measure.shannon_entropy(image, base=e)`` for each
image and averages it over the training set: a histogram over the distinct
values of the whole image array (every channel pooled, no fixed bins),
Shannon's entropy of it in nats. On uint8 images it lies in
``[0, ln 256 = 5.545]``. :func:`image_entropy` is that definition;
:func:`image_entropies` computes the same for many uint8 images at once.

How the paper turns the entropy into a number of layers is not known. The
rules in :data:`BOUND_RULES` are ours, named and chosen by a flag; the
study (:mod:`branchynet.depth.ebcle`) tests the paper's claim, that layers
beyond the bound add little, by sweeping the depth, whichever rule marks it.
"""
import math

import numpy

MAX_ENTROPY = math.log(256)  # nats, uint8 images


def image_entropy(image):
    """Shannon entropy (nats) of the distinct values of ``image`` (any
    shape, any dtype), as ``skimage.measure.shannon_entropy(image,
    base=numpy.e)`` computes it."""
    _, counts = numpy.unique(numpy.asarray(image), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * numpy.log(p)).sum())


def image_entropies(images, chunk=4096):
    """:func:`image_entropy` of every uint8 image of ``images`` (first axis:
    the images), float64 ``(N,)``; a 256-bin histogram per image, chunk by
    chunk."""
    images = numpy.asarray(images)
    if images.dtype != numpy.uint8:
        raise ValueError('image_entropies takes the raw uint8 images (the '
                         'entropy depends on the dtype), got {}'.format(
                             images.dtype))
    flat = images.reshape(len(images), -1)
    out = numpy.empty(len(images))
    for first in range(0, len(images), chunk):
        part = flat[first:first + chunk]
        offsets = 256 * numpy.arange(len(part))[:, None]
        counts = numpy.bincount((part + offsets).ravel(),
                                minlength=256 * len(part)).reshape(-1, 256)
        p = counts / part.shape[1]
        with numpy.errstate(divide='ignore', invalid='ignore'):
            terms = numpy.where(counts > 0, p * numpy.log(p), 0.0)
        out[first:first + chunk] = -terms.sum(axis=1)
    return out


def dataset_entropy(images):
    """The data set's entropy as EBCLE defines it: the mean over the uint8
    ``images`` of each one's entropy (nats)."""
    return float(image_entropies(images).mean())


# Our rules from the entropy H (nats) to a bound on the number of layers
# after the input layer; each is an assumption, named in the results.
BOUND_RULES = {
    'bits': ('one layer per bit of entropy per image: ceil(H / ln 2)',
             lambda h: math.ceil(h / math.log(2))),
    'nats': ('one layer per nat of entropy per image: ceil(H)',
             lambda h: math.ceil(h)),
}
DEFAULT_BOUND_RULE = 'bits'


def depth_bound(entropy, rule=DEFAULT_BOUND_RULE):
    """The depth bound the named ``rule`` gives for ``entropy`` (nats).

    Raises:
        ValueError: no such rule.
    """
    if rule not in BOUND_RULES:
        raise ValueError('bound rule must be one of {}, got {!r}'.format(
            ', '.join(BOUND_RULES), rule))
    return BOUND_RULES[rule][1](entropy)
