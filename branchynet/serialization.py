"""Saving and loading whole BranchyNets (all exits, BatchNorm statistics).

Files are Chainer npz checkpoints (``DictionarySerializer`` output written
with ``numpy.savez_compressed``, exactly what ``chainer.serializers.save_npz``
writes) plus one extra key naming the network, so that loading a file made
for another network fails with a message instead of a ``KeyError`` deep in
Chainer.
"""
import os

import numpy
import chainer
from chainer import serializers

from branchynet.utils import files
from branchynet.utils.errors import FileProblem
from branchynet.utils.files import writing

NETWORK_KEY = '_branchynet/network'


def _state(net):
    serializer = serializers.DictionarySerializer()
    serializer.save(net)
    return serializer.target


def save_model(target, net):
    """Write ``net`` as npz; a path appears only when complete.

    Args:
        target: the file to write, or an open file.
        net: a BranchyNet on any device (saved with its title, so that
            :func:`load_model` can refuse another network's file).
    """
    state = _state(net)
    state[NETWORK_KEY] = numpy.asarray(net.title)
    with writing(target) as f:
        numpy.savez_compressed(f, **state)


def load_model(path, net):
    """Load parameters and statistics saved by :func:`save_model` into ``net``.

    The file's members are checked from their headers first (names,
    shapes, no pickled objects), so a foreign or tampered file is refused
    before any array is read.

    Raises:
        FileProblem: (a ``ValueError``) the file is missing, damaged, not a
            saved model, or was made for a different network (other name,
            missing or extra parameters, or other shapes); the message
            names the file.
    """
    expected = {k: v.shape for k, v in _state(net).items()}
    if not os.path.isfile(path):
        raise FileProblem('{}: not found'.format(path) if not
                          os.path.exists(path) else
                          '{}: not a file'.format(path))
    members = files.npz_members(path, 'saved model')
    _check_fits(path, net, members, expected)
    try:
        with numpy.load(path) as npz:
            serializers.NpzDeserializer(npz).load(net)
    except (OSError, EOFError, ValueError, KeyError, AttributeError) as e:
        raise FileProblem('{}: not a readable saved model ({}: {}); the file '
                          'is damaged or of another kind'.format(
                              path, type(e).__name__, e)) from None
    return net


def _check_fits(path, net, members, expected):
    pickled = sorted(k for k, (_, dtype) in members.items()
                     if dtype.hasobject)
    if pickled:
        raise FileProblem('{}: member {} holds Python objects (a pickle); '
                          'a saved model holds numbers only'.format(
                              path, pickled[0]))
    saved_name = None
    if NETWORK_KEY in members:
        with numpy.load(path) as npz:
            saved_name = str(npz[NETWORK_KEY])
    found = {k: shape for k, (shape, _) in members.items()
             if k != NETWORK_KEY}
    problems = []
    if saved_name is not None and saved_name != net.title:
        problems.append('it holds network {!r}, this is {!r}'.format(
            saved_name, net.title))
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        problems.append('{} missing key(s), e.g. {!r}'.format(
            len(missing), missing[0]))
    if extra:
        problems.append('{} unexpected key(s), e.g. {!r}'.format(
            len(extra), extra[0]))
    for key in sorted(set(expected) & set(found)):
        if expected[key] != found[key]:
            problems.append('{!r} has shape {}, expected {}'.format(
                key, found[key], expected[key]))
            break
    if problems:
        raise FileProblem('{} does not fit {}: {}'.format(
            path, net.title, '; '.join(problems)))


def _main_links(net):
    """The links of ``net``'s main network (the trunk and the final head),
    in order."""
    return [layer for chain in list(net.trunk) + [net.heads[-1]]
            for layer in chain.layers() if isinstance(layer, chainer.Link)]


def copy_main_network(source, target):
    """Copy the main network (trunk and final head: parameters and
    statistics) of the BranchyNet ``source`` into ``target``, link by link
    in order; their other exits may differ (B-AlexNet into its Fig. 5
    variants).

    Raises:
        ValueError: the two main networks are not the same layers.
    """
    ours, theirs = _main_links(source), _main_links(target)
    pairs = list(zip(ours, theirs))
    same = len(ours) == len(theirs) and all(
        type(a) is type(b) and
        [(n, p.shape) for n, p in sorted(a.namedparams())] ==
        [(n, p.shape) for n, p in sorted(b.namedparams())]
        for a, b in pairs)
    if not same:
        raise ValueError('{} and {} do not share their main network (trunk '
                         'and final head)'.format(source.title, target.title))
    for a, b in pairs:
        # Chainer's own copy: parameters and statistics of the link and of
        # every link inside it (a residual block's BatchNorms), across
        # devices too (a CPU-loaded source into a GPU network)
        b.copyparams(a)
    return target
