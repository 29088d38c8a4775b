"""Scenarios run under mpiexec by tests/test_distributed.py (not a test module).

    mpiexec -n 2 python tests/mpi_scenarios.py equivalence OUT

``equivalence``: for B-LeNet and a small residual network with BatchNorm,
two epochs of joint training through ``training.train_phase`` on the ranks,
recording which samples each rank trained on at every step (the first pixel
of every image holds its index) and, on rank 0, the final parameters. The
test replays the same global batches in one process and compares.
"""
import os
import sys

import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
import chainer
import chainer.links as L
import chainermn
import numpy

from branchynet import Branch, BranchyNet, distributed
from branchynet.deploy import port_kit
from branchynet.layers import average_pool, relu
from branchynet.loss import BranchyLoss
from branchynet.training import train_phase
from networks import lenet_mnist
from networks.resnet_cifar10 import ResBlock

SAMPLES, GLOBAL_BATCH, EPOCHS = 64, 16, 2


def small_resnet():
    """Stem with BatchNorm, two residual blocks (one strided), two exits."""
    return BranchyNet([
        L.Convolution2D(3, 4, 3, pad=1), L.BatchNormalization(4), relu,
        Branch([L.Linear(4 * 8 * 8, 10)]),
        ResBlock(4, 8, stride=2), ResBlock(8, 8), average_pool(4, 1),
        Branch([L.Linear(8, 10)]),
    ], (3, 8, 8), name='small-resnet')


NETWORKS = {'lenet': lenet_mnist.get_network, 'resnet': small_resnet}


def dataset(shape):
    """Learnable images whose first pixel is the sample's index / SAMPLES."""
    rng = numpy.random.RandomState(7)
    x = rng.rand(SAMPLES, *shape).astype(numpy.float32)
    t = rng.randint(0, 10, SAMPLES).astype(numpy.int32)
    x[:, 0, 0, 0] = numpy.arange(SAMPLES) / SAMPLES
    return x, t


def build(kind, cluster=distributed.SINGLE):
    numpy.random.seed(0)
    net = cluster.network(NETWORKS[kind]())
    policy = BranchyLoss(net)
    optimizer = cluster.optimizer(chainer.optimizers.Adam())
    optimizer.setup(policy)
    cluster.broadcast_weights(optimizer)
    return net, policy, optimizer


def equivalence(out):
    comm = chainermn.create_communicator('naive')
    cluster = distributed.Cluster(comm, 'naive', sync_batchnorm=True)
    for kind in NETWORKS:
        net, policy, optimizer = build(kind, cluster)
        x, t = dataset(net.input_shape)
        seen = []

        def recording(xs, ts):
            if chainer.config.train:
                seen.append(numpy.rint(xs[:, 0, 0, 0] * SAMPLES).astype(int))
            return policy(xs, ts)
        train_phase(policy, optimizer, recording, (x, t), (x[:8], t[:8]),
                    EPOCHS, os.path.join(out, kind), GLOBAL_BATCH,
                    chainer.get_device('@numpy'), seed=1, progress=False,
                    cluster=cluster)
        numpy.save(os.path.join(out, '{}_rank{}.npy'.format(kind, comm.rank)),
                   numpy.stack(seen))
        if comm.rank == 0:
            numpy.savez(os.path.join(out, '{}_params.npz'.format(kind)),
                        **port_kit.weights(net))


if __name__ == '__main__':
    {'equivalence': equivalence}[sys.argv[1]](sys.argv[2])
