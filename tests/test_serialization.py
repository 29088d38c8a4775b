import os

import chainer
import numpy
import pytest
from chainer import optimizers, serializers
from helpers import make_tiny_net, tiny_batch

from branchynet import load_model, save_model
from branchynet.loss import BranchyLoss
from networks import alex_cifar10, lenet_mnist


def trained_tiny_net(steps=3):
    """A tiny net after a few Adam steps: weights and BN statistics moved."""
    net = make_tiny_net()
    optimizer = optimizers.Adam()
    optimizer.setup(net)
    for step in range(steps):
        x, t = tiny_batch(seed=step)
        optimizer.update(BranchyLoss(net), x, t)
    return net


def test_round_trip_reproduces_outputs_exactly(tmp_path):
    net = trained_tiny_net()
    path = str(tmp_path / 'tiny.npz')
    save_model(path, net)
    fresh = make_tiny_net(seed=123)
    x, _ = tiny_batch(8, seed=99)
    with chainer.using_config('train', False):
        before = [y.array for y in fresh(x)]
        load_model(path, fresh)
        expected = [y.array for y in net(x)]
        got = [y.array for y in fresh(x)]
    assert not numpy.allclose(before[0], expected[0])
    for a, b in zip(got, expected):
        numpy.testing.assert_array_equal(a, b)
    bn, fresh_bn = net.trunk[1].l3, fresh.trunk[1].l3
    assert numpy.abs(bn.avg_mean).sum() > 0
    numpy.testing.assert_array_equal(bn.avg_mean, fresh_bn.avg_mean)
    numpy.testing.assert_array_equal(bn.avg_var, fresh_bn.avg_var)
    numpy.testing.assert_array_equal(
        net.predict(x, thresholds=[0.3, 0.3]),
        fresh.predict(x, thresholds=[0.3, 0.3]))


def test_file_is_a_chainer_npz_with_the_network_name(tmp_path):
    path = str(tmp_path / 'tiny.npz')
    save_model(path, make_tiny_net())
    with numpy.load(path) as npz:
        assert str(npz['_branchynet/network']) == 'tiny'
        assert 'trunk/1/l3/avg_mean' in npz.files
    serializers.load_npz(path, make_tiny_net(seed=5))  # plain Chainer reads it


def test_plain_chainer_checkpoint_loads(tmp_path):
    net = trained_tiny_net()
    path = str(tmp_path / 'plain.npz')
    serializers.save_npz(path, net)
    fresh = load_model(path, make_tiny_net(seed=4))
    numpy.testing.assert_array_equal(fresh.heads[2].l0.W.array,
                                     net.heads[2].l0.W.array)


def test_loading_another_network_names_the_problem(tmp_path):
    path = str(tmp_path / 'lenet.npz')
    save_model(path, lenet_mnist.get_network())
    with pytest.raises(ValueError, match="holds network 'B-LeNet', this is "
                                         "'B-AlexNet'.*missing key"):
        load_model(path, alex_cifar10.get_network())


def test_same_name_different_shapes(tmp_path):
    path = str(tmp_path / 'variant.npz')
    net = alex_cifar10.get_network(branch1_convs=1)
    net.title = 'B-AlexNet'  # pretend: names alone must not be trusted
    save_model(path, net)
    with pytest.raises(ValueError, match='unexpected key|missing key|shape'):
        load_model(path, alex_cifar10.get_network())


def test_shape_mismatch_reports_key_and_shapes(tmp_path):
    path = str(tmp_path / 'plain.npz')
    net = make_tiny_net()
    serializers.save_npz(path, net)
    other = make_tiny_net()
    with numpy.load(path) as npz:
        state = dict(npz)
    state['heads/2/l0/W'] = numpy.zeros((4, 9), numpy.float32)
    numpy.savez(path, **state)
    with pytest.raises(ValueError, match=r"'heads/2/l0/W' has shape \(4, 9\), "
                                         r"expected \(4, 8\)"):
        load_model(path, other)


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError('disk full')
    monkeypatch.setattr(numpy, 'savez_compressed', broken)
    with pytest.raises(OSError, match='disk full'):
        save_model(str(tmp_path / 'tiny.npz'), make_tiny_net())
    assert os.listdir(tmp_path) == []


def test_a_model_whose_array_header_is_damaged_is_named(tmp_path):
    """NumPy parses an array's header as Python (ast, then tokenize): a
    non-printable byte in an unclosed header raises tokenize.TokenError,
    which must end as the one-line FileProblem too (a damaged file once
    escaped as a traceback, depending on where the damage fell)."""
    import zipfile

    from branchynet.utils.errors import FileProblem
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (\x1b"
    header += b' ' * (63 - len(header)) + b'\n'
    npy = b'\x93NUMPY\x01\x00' + len(header).to_bytes(2, 'little') + header
    path = str(tmp_path / 'damaged.npz')
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('trunk/0/l0/W.npy', npy + bytes(64))
    with pytest.raises(FileProblem, match='damaged.npz: not a readable '
                                          'saved model'):
        load_model(path, make_tiny_net())


def test_the_main_network_is_copied_with_every_statistic_inside_it():
    """B-ResNet-110's main network is residual blocks whose BatchNorms are
    links inside links: their statistics come along, not only the
    parameters."""
    from branchynet.paper import protocols
    from branchynet.serialization import copy_main_network
    make = protocols.get('b_resnet110').network
    source, target = make(), make()
    for link in source.links():
        if isinstance(link, chainer.links.BatchNormalization):
            link.avg_mean[...] = 7.0
            link.N = 3
        for param in link.params(include_uninit=False):
            param.array[...] = 0.5
    copy_main_network(source, target)
    main = [link for layer in list(target.trunk) + [target.heads[-1]]
            for link in layer.links()]
    norms = [link for link in main
             if isinstance(link, chainer.links.BatchNormalization)]
    assert len(norms) > 100
    assert all((n.avg_mean == 7.0).all() and n.N == 3 for n in norms)
    assert all((p.array == 0.5).all() for link in main
               for p in link.params(include_uninit=False))
    # the other exits are left as they were
    assert not any((p.array == 0.5).all() for p in target.heads[0].params())
