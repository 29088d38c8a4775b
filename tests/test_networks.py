"""The three paper networks match docs/reference.md's layer lists exactly."""
import chainer
import chainer.links as L
import numpy
import pytest

from branchynet.layers import FunctionLayer
from branchynet.paper import protocols
from networks import alex_cifar10, lenet_mnist, resnet_cifar10
from networks.resnet_cifar10 import ResBlock


def describe(layer):
    if isinstance(layer, L.Convolution2D):
        return 'conv({}->{},k{},s{},p{})'.format(
            layer.W.shape[1], layer.out_channels, layer.ksize, layer.stride[0],
            layer.pad[0])
    if isinstance(layer, L.Linear):
        return 'linear({}->{})'.format(layer.W.shape[1], layer.W.shape[0])
    if isinstance(layer, L.BatchNormalization):
        return 'bn({})'.format(layer.avg_mean.size)
    if isinstance(layer, ResBlock):
        return 'res({}->{},s{})'.format(layer.conv1.W.shape[1],
                                        layer.conv1.out_channels, layer.stride)
    assert isinstance(layer, FunctionLayer), layer
    return {'relu()': 'relu',
            'lrn(n=3, k=2, alpha=5e-05, beta=0.75)': 'lrn',
            'dropout(ratio=0.5)': 'dropout'}.get(repr(layer), repr(layer))


def pool(k, s):
    return 'max_pool(ksize={}, stride={}, cover_all=True)'.format(k, s)


def structure(net):
    return ([[describe(layer) for layer in stage.layers()] for stage in net.trunk],
            [[describe(layer) for layer in head.layers()] for head in net.heads])


def stage_output_shapes(net, batch=2):
    h = numpy.zeros((batch,) + net.input_shape, numpy.float32)
    shapes = []
    with chainer.using_config('train', False):
        for stage in net.trunk:
            h = stage(h)
            shapes.append(h.shape[1:])
    return shapes


def test_b_lenet():
    net = lenet_mnist.get_network()
    trunk, heads = structure(net)
    assert trunk == [
        ['conv(1->5,k5,s1,p3)'],
        [pool(2, 2), 'relu', 'conv(5->10,k5,s1,p3)', pool(2, 2), 'relu',
         'conv(10->20,k5,s1,p3)', pool(2, 2), 'relu', 'linear(720->84)'],
    ]
    assert heads == [
        [pool(2, 2), 'relu', 'conv(5->10,k3,s1,p1)', pool(2, 2), 'relu',
         'linear(640->10)'],
        ['linear(84->10)'],
    ]
    assert stage_output_shapes(net) == [(5, 30, 30), (84,)]
    assert net.input_shape == (1, 28, 28) and net.num_exits == 2


ALEX_TRUNK = [
    ['conv(3->32,k5,s1,p2)', 'relu', pool(3, 2), 'lrn', 'conv(32->64,k5,s1,p2)'],
    ['relu', pool(3, 2), 'lrn', 'conv(64->96,k3,s1,p1)'],
    ['relu', 'conv(96->96,k3,s1,p1)', 'relu', 'conv(96->64,k3,s1,p1)', 'relu',
     pool(3, 2), 'linear(1024->256)', 'relu', 'dropout', 'linear(256->128)',
     'relu', 'dropout'],
]


def test_b_alexnet():
    net = alex_cifar10.get_network()
    trunk, heads = structure(net)
    assert trunk == ALEX_TRUNK
    assert heads == [
        ['relu', pool(3, 2), 'lrn', 'conv(64->32,k3,s1,p1)', 'relu',
         'conv(32->32,k3,s1,p1)', 'relu', pool(3, 2), 'linear(512->10)'],
        ['relu', pool(3, 2), 'lrn', 'conv(96->32,k3,s1,p1)', 'relu', pool(3, 2),
         'linear(128->10)'],
        ['linear(128->10)'],
    ]
    assert stage_output_shapes(net) == [(64, 16, 16), (96, 8, 8), (128,)]


@pytest.mark.parametrize('convs', range(5))
def test_b_alexnet_fig5_variants(convs):
    net = alex_cifar10.get_network(branch1_convs=convs)
    trunk, heads = structure(net)
    assert net.num_exits == 2
    assert trunk == [ALEX_TRUNK[0], ALEX_TRUNK[1] + ALEX_TRUNK[2]]
    exit1 = heads[0]
    expected_convs = (['conv(64->32,k3,s1,p1)', 'relu'] +
                      ['conv(32->32,k3,s1,p1)', 'relu'] * (convs - 1)
                      if convs else [])
    assert exit1 == ['relu', pool(3, 2), 'lrn'] + expected_convs + [
        pool(3, 2), 'linear({}->10)'.format(512 if convs else 1024)]
    assert heads[1] == ['linear(128->10)']
    ys = net(numpy.zeros((2, 3, 32, 32), numpy.float32))
    assert [y.shape for y in ys] == [(2, 10), (2, 10)]


@pytest.mark.parametrize('bad', [5, -1, 2.0, True, 'two'])
def test_b_alexnet_rejects_bad_variant(bad):
    with pytest.raises(ValueError, match='branch1_convs must be None or an int'):
        alex_cifar10.get_network(branch1_convs=bad)


def test_b_resnet110():
    net = resnet_cifar10.get_network()
    trunk, heads = structure(net)
    assert trunk[0] == ['conv(3->16,k3,s1,p0)', 'bn(16)', 'relu']
    assert trunk[1] == ['res(16->16,s1)'] * 18
    assert trunk[2] == (['res(16->32,s2)'] + ['res(32->32,s1)'] * 17 +
                        ['res(32->64,s2)'] + ['res(64->64,s1)'] * 17 +
                        ['average_pool(ksize=6, stride=1)'])
    assert heads == [
        ['conv(16->64,k5,s1,p2)', 'relu', 'lrn', 'conv(64->32,k3,s1,p1)',
         'relu', 'conv(32->32,k3,s1,p1)', 'relu', 'linear(28800->10)'],
        ['res(16->16,s1)', 'linear(14400->10)'],
        ['linear(576->10)'],
    ]
    main_path = list(net.trunk.links()) + list(net.heads[-1].links())
    assert sum(isinstance(link, L.Convolution2D) for link in main_path) == 109
    assert sum(isinstance(link, L.Linear) for link in main_path) == 1
    assert stage_output_shapes(net) == [(16, 30, 30), (16, 30, 30), (64, 3, 3)]


def test_resblock_shortcut_pads_channels_in_front_and_subsamples():
    block = ResBlock(2, 4, stride=2)
    for link in (block.conv1, block.conv2):
        link.W.array[...] = 0
        link.b.array[...] = 0
    x = numpy.random.RandomState(0).rand(1, 2, 5, 5).astype(numpy.float32)
    with chainer.using_config('train', False):
        y = block(x).array  # residual branch is zero: y = relu(shortcut)
    assert y.shape == (1, 4, 3, 3)
    numpy.testing.assert_array_equal(y[:, :2], 0)
    numpy.testing.assert_array_equal(y[:, 2:], x[:, :, ::2, ::2])


@pytest.mark.parametrize('module', [lenet_mnist, alex_cifar10, resnet_cifar10])
def test_networks_declare_weight_one_for_every_exit(module):
    net = module.get_network()
    assert net.branch_weights == (1.0,) * net.num_exits


# --- initialisation (Chainer 1's wscale, as the reference drew it) -----------

LECUN, RESIDUAL = 1.0, 2 ** 0.25  # std * sqrt(fan_in)


def expected_scales(net):
    """Every weighted layer's name and its expected ``std * sqrt(fan_in)``.

    B-LeNet, B-AlexNet, every Linear and ResNet's exit-1 convs: wscale 1
    (LeCun). ResNet's stem and residual-block convs: wscale sqrt(2), i.e.
    std = 2**0.25 / sqrt(fan_in).
    """
    scales = {}
    resnet = net.title == 'B-ResNet-110'
    for name, link in net.namedlinks():
        if isinstance(link, L.Linear):
            scales[name] = LECUN
        elif isinstance(link, L.Convolution2D):
            residual = name.startswith('/trunk/0/') or '/conv' in name
            scales[name] = RESIDUAL if resnet and residual else LECUN
    return scales


def drawn_scale(param, samples=60000):
    """``std * sqrt(fan_in)`` of a weight, pooled over redraws of its initializer.

    The network's own draw is included; small layers are redrawn with the
    same initializer until ``samples`` values are pooled, so the relative
    sampling error of the estimate is about ``1 / sqrt(2 * samples)`` (0.3 %).
    """
    draws = [param.array.ravel()]
    while sum(d.size for d in draws) < samples:
        fresh = numpy.empty(param.shape, numpy.float32)
        param.initializer(fresh)
        draws.append(fresh.ravel())
    values = numpy.concatenate(draws).astype(numpy.float64)
    fan_in = int(numpy.prod(param.shape[1:]))
    std = values.std()
    # the mean in units of its own standard error: a zero-mean draw stays small
    mean_z = values.mean() / std * numpy.sqrt(values.size)
    return float(std * numpy.sqrt(fan_in)), float(mean_z)


@pytest.mark.parametrize('factory', [
    lenet_mnist.get_network, alex_cifar10.get_network,
    lambda: alex_cifar10.get_network(branch1_convs=0),
    resnet_cifar10.get_network])
def test_every_layer_is_initialised_as_the_reference(factory):
    net = factory()
    scales = expected_scales(net)
    assert len(scales) >= 7
    for name, expected in scales.items():
        link = dict(net.namedlinks())[name]
        scale, mean_z = drawn_scale(link.W)
        # He (sqrt 2) and LeCun (1) differ by 41 %, the ResNet scale from
        # either by 19 %: a 3 % band cannot confuse them.
        assert scale == pytest.approx(expected, rel=0.03), name
        assert abs(mean_z) < 5, name
        numpy.testing.assert_array_equal(link.b.array, 0, err_msg=name)


def test_resnet_scales_cover_stem_blocks_and_exits():
    scales = expected_scales(resnet_cifar10.get_network())
    residual = [n for n, s in scales.items() if s == RESIDUAL]
    assert len(residual) == 1 + 2 * 54 + 2  # stem, 54 blocks, exit 2's block
    assert '/trunk/0/l0' in residual and '/heads/1/l0/conv2' in residual
    assert scales['/heads/0/l0'] == LECUN and scales['/heads/2/l0'] == LECUN


def test_batchnorm_starts_at_identity():
    net = resnet_cifar10.get_network()
    norms = [link for _, link in net.namedlinks()
             if isinstance(link, L.BatchNormalization)]
    assert len(norms) == 1 + 2 * 55
    for bn in norms:
        numpy.testing.assert_array_equal(bn.gamma.array, 1)
        numpy.testing.assert_array_equal(bn.beta.array, 0)
        assert bn.eps == 2e-5 and bn.decay == 0.9


@pytest.mark.parametrize('key', sorted(protocols.PROTOCOLS) + [
    'b_alexnet_exit1_{}conv'.format(k) for k in protocols.FIG5_CONVS])
def test_a_protocol_knows_its_networks_constants(key):
    """Title, input shape and exits are read from the registry without
    building a network; they must be the built network's."""
    protocol = protocols.get(key)
    net = protocol.network()
    assert (protocol.title, protocol.input_shape, protocol.num_exits) == (
        net.title, net.input_shape, net.num_exits)
