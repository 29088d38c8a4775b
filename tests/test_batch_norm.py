"""The fused CPU BatchNorm computes what Chainer's BatchNorm, the residual
addition and ReLU compute.

Every BatchNorm shape of B-ResNet-110 and the elastic networks and odd
shapes, with and without the ReLU and the residual, both inner loops:
forward within 1e-6 and gradients within 1e-5 of the largest magnitude,
the running statistics as Chainer updates them; two ranks sharing the
statistics; then one joint training step of B-ResNet-110, and 50 of a
network of its residual blocks, in lockstep with the stock functions.
"""
import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

from branchynet import batch_norm, distributed, kernels
from branchynet.data.synthetic import random_batch
from branchynet.deploy.port_kit import relative_error as relative
from branchynet.paper import protocols
from tests.test_kernels import FORWARD, GRADIENT, lockstep


class Shapes(chainer.LinkHook):
    """Records the input shape of every BatchNorm link called."""
    name = 'batchnorm-shapes'

    def __init__(self):
        self.seen = set()

    def forward_preprocess(self, args):
        if isinstance(args.link, L.BatchNormalization):
            self.seen.add(args.args[0].shape)


def network_shapes():
    """The input shapes of the BatchNorms of B-ResNet-110 and the elastic
    backbones (batch 2)."""
    from networks import elastic_cifar10
    hook = Shapes()
    nets = [protocols.get('b_resnet110').network()] + [
        elastic_cifar10.get_network(backbone)
        for backbone in elastic_cifar10.BACKBONES]
    for net in nets:
        x = numpy.zeros((2,) + net.input_shape, numpy.float32)
        with hook, chainer.using_config('train', False):
            net(x)
    return sorted(hook.seen)


NETWORK_SHAPES = network_shapes()
# (a batch of two single values is left out: its input gradient is zero
# in exact arithmetic, so both sides are rounding noise)
ODD_SHAPES = [(1, 3, 5, 7), (4, 2, 1, 1), (3, 5, 2, 9), (5, 4)]


def case(shape, seed=0):
    rng = numpy.random.RandomState(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + rng.standard_normal(
        (1, c) + (1,) * (len(shape) - 2))).astype(numpy.float32)
    gamma = (rng.rand(c) + 0.5).astype(numpy.float32)
    beta = rng.standard_normal(c).astype(numpy.float32)
    residual = rng.standard_normal(shape).astype(numpy.float32)
    gy = rng.standard_normal(shape).astype(numpy.float32)
    return x, gamma, beta, residual, gy


def run(kind, x, gamma, beta, residual, gy, relu):
    """Output, gradients (x, gamma, beta, residual) and running statistics
    of one training-mode call of a link on ``kind`` kernels."""
    link = batch_norm.BatchNormalization(len(gamma))
    link.gamma.array[...] = gamma
    link.beta.array[...] = beta
    link.avg_mean[...] = 0.5
    link.avg_var[...] = 2.0
    link.cleargrads()
    xs = [chainer.Variable(x.copy())]
    if residual is not None:
        xs.append(chainer.Variable(residual.copy()))
    with chainer.using_config('branchynet_kernels', kind), \
            chainer.using_config('train', True):
        y = link(xs[0], relu=relu,
                 residual=xs[1] if residual is not None else None)
    y.grad = gy
    y.backward()
    grads = [xs[0].grad, link.gamma.grad, link.beta.grad] + [
        v.grad for v in xs[1:]]
    return y, grads, (link.avg_mean, link.avg_var)


@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('with_residual', [False, True])
@pytest.mark.parametrize('shape', NETWORK_SHAPES + ODD_SHAPES, ids=repr)
def test_batch_norm_matches_chainer(shape, with_residual, relu, loops):
    x, gamma, beta, residual, gy = case(shape)
    if not with_residual:
        residual = None
    y0, g0, stats0 = run('stock', x, gamma, beta, residual, gy, relu)
    y1, g1, stats1 = run('fast', x, gamma, beta, residual, gy, relu)
    assert isinstance(y1.creator, batch_norm.BatchNormalizationReLU)
    assert not isinstance(y0.creator, batch_norm.BatchNormalizationReLU)
    assert relative(y1.array, y0.array) <= FORWARD
    for a, b in zip(g1, g0):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert relative(a, b) <= GRADIENT
    for a, b in zip(stats1, stats0):
        assert relative(a, b) <= FORWARD


def test_the_networks_batch_norm_shapes_are_covered():
    assert (2, 16, 30, 30) in NETWORK_SHAPES  # B-ResNet-110's first stage
    assert len(NETWORK_SHAPES) >= 3


def test_a_small_exact_case():
    """Two samples of one channel, values 1 and 3: mean 2, variance 1."""
    x = numpy.array([[1.], [3.]], numpy.float32)
    link = batch_norm.BatchNormalization(1, eps=0)
    link.gamma.array[...] = 2
    link.beta.array[...] = 1
    with chainer.using_config('train', True):
        y = link(x, residual=numpy.array([[0.5], [0.5]], numpy.float32),
                 relu=True)
    # 2 * (-1) + 1 + 0.5 = -0.5 -> 0; 2 * 1 + 1 + 0.5 = 3.5
    numpy.testing.assert_allclose(y.array, [[0.], [3.5]])
    # running statistics: 0.9 * 0 + 0.1 * 2; 0.9 * 1 + 0.1 * 1 * 2 / 1
    numpy.testing.assert_allclose(link.avg_mean, [0.2], rtol=1e-6)
    numpy.testing.assert_allclose(link.avg_var, [1.1], rtol=1e-6)


def test_evaluation_and_stock_run_chainers_functions():
    x, gamma, beta, residual, _ = case((2, 3, 4, 4))
    link = batch_norm.BatchNormalization(3)
    with chainer.using_config('train', False):
        y = link(x, relu=True, residual=residual)
        expected = F.relu(F.fixed_batch_normalization(
            x, link.gamma, link.beta, link.avg_mean, link.avg_var,
            link.eps) + residual)
    numpy.testing.assert_array_equal(y.array, expected.array)
    with chainer.using_config('train', True), \
            chainer.using_config('branchynet_kernels', 'stock'):
        y = link(x)
    assert y.creator.label == 'BatchNormalization'


def test_the_checkpoint_keys_are_chainers():
    ours, chainers = batch_norm.BatchNormalization(4), L.BatchNormalization(4)
    keys = []
    for link in (ours, chainers):
        target = {}
        link.serialize(chainer.serializers.DictionarySerializer(target))
        keys.append(sorted(target))
    assert keys[0] == keys[1] and 'avg_mean' in keys[0]


class PairComm:
    """One of two ranks simulated by two threads: ``allreduce`` sums what
    both threads hand in."""
    size = 2

    def __init__(self, rank, slots, barrier):
        self.rank, self.slots, self.barrier = rank, slots, barrier
        self.mpi_comm = self

    def allreduce(self, values):
        self.slots[self.rank] = values.copy()
        self.barrier.wait()
        total = self.slots[0] + self.slots[1]
        self.barrier.wait()
        return total


def test_two_ranks_normalise_with_the_global_batch_statistics():
    """A batch split in halves over two (simulated) ranks gives each half
    what one process gives it: the output, and the input gradient scaled by
    2 (each rank's loss is the mean over its own half)."""
    import threading
    x, gamma, beta, residual, gy = case((8, 3, 4, 4))
    whole, grads, stats = run('fast', x, gamma, beta, residual, gy, True)
    slots, barrier = [None, None], threading.Barrier(2, timeout=60)
    halves = [None, None]

    def rank(r):
        part = slice(4 * r, 4 * r + 4)
        link = batch_norm.BatchNormalization(3)
        link.gamma.array[...] = gamma
        link.beta.array[...] = beta
        link.comm = PairComm(r, slots, barrier)
        link.cleargrads()
        xv = chainer.Variable(x[part].copy())
        with chainer.using_config('train', True):
            y = link(xv, relu=True, residual=residual[part])
        y.grad = gy[part] * 2
        y.backward()
        halves[r] = y.array, xv.grad, link.gamma.grad

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert relative(numpy.concatenate([h[0] for h in halves]),
                    whole.array) <= FORWARD
    assert relative(numpy.concatenate([h[1] for h in halves]),
                    2 * grads[0]) <= GRADIENT
    # ChainerMN's convention: the ranks' parameter gradients are averaged
    for h in halves:
        assert relative(h[2], grads[1]) <= GRADIENT


def test_a_distributed_network_shares_statistics_in_both_kinds(monkeypatch):
    """``Cluster.network`` gives our links the communicator and replaces
    Chainer's by ChainerMN's, in place."""
    from tests.mpi_scenarios import small_resnet
    cluster = distributed.Cluster.__new__(distributed.Cluster)
    cluster.comm, cluster.sync_batchnorm = PairComm(0, None, None), True
    monkeypatch.setattr(distributed.Cluster, 'distributed', True)
    net = cluster.network(small_resnet())
    kinds = [type(link).__name__ for link in net.links()
             if isinstance(link, (L.BatchNormalization,))
             or 'BatchNormalization' in type(link).__name__]
    assert kinds.count('MultiNodeBatchNormalization') == 1
    ours = [link for link in net.links()
            if isinstance(link, batch_norm.BatchNormalization)]
    assert len(ours) == 4 and all(link.comm is cluster.comm for link in ours)


def test_b_resnet110_steps_in_lockstep_with_the_stock_functions():
    """One joint step of B-ResNet-110 at batch 4 on noise: the loss agrees
    to 1e-5 and few parameters part. The loss's bound is B-AlexNet's times
    ten: 110 layers round more than 8 (measured 1.1e-6, and 1.2e-6 with
    the stock BatchNorm and the fast convolutions). Longer runs on noise
    diverge with both kernels (the loss 16 -> 96 in three steps), so the
    50 steps are the residual network's below."""
    data = random_batch((3, 32, 32), 16, seed=0)
    first = lockstep('b_resnet110', 1, 4, data)
    assert first['max_loss_relative_difference'] <= 1e-5, first
    assert first['share_beyond_tenth_of_alpha'] <= 0.01, first


def test_a_residual_network_trains_in_lockstep_with_the_stock_functions():
    """50 joint steps of B-ResNet-110's blocks (a stem, a strided block that
    pads its shortcut, an identity block; two exits) on learnable images:
    losses within 1e-4 (PORTING.md's bound) and parameters within alpha
    (measured: 0.55 alpha at most). Not compared: the biases of the
    convolutions that BatchNorm follows, whose gradient is zero in exact
    arithmetic and rounding noise in any implementation, which Adam turns
    into steps of up to alpha (measured: 15 alpha apart after 50 steps)."""
    from tests.mpi_scenarios import dataset, small_resnet
    data = dataset((3, 8, 8))
    before_batch_norm = {'/trunk/0/l0/b'} | {
        '/trunk/1/l{}/conv{}/b'.format(block, conv)
        for block in (0, 1) for conv in (1, 2)}
    result = lockstep(small_resnet, 50, 16, data, ignore=before_batch_norm)
    assert result['max_loss_relative_difference'] <= 1e-4, result
    assert result['in_units_of_alpha'] <= 1, result


def test_the_fast_path_is_chosen_only_for_numpy_arrays():
    assert kernels.use_fast(numpy.zeros(1))
    with chainer.using_config('branchynet_kernels', 'stock'):
        assert not kernels.use_fast(numpy.zeros(1))
