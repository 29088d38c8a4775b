"""Data-parallel training over MPI with ChainerMN, equivalent to one process.

Launched as ``mpiexec -n N python experiments/run_<network>.py ...`` (with
``--communicator``, or under any MPI launcher), the two training phases run
on ``N`` ranks:

- the protocol's batch size stays the *global* batch: each rank takes
  ``batch / N`` samples per step (an ``N`` that does not divide the batch is
  refused on every rank before any communication);
- every rank loads the data files itself and keeps the shard ChainerMN's
  ``scatter_index`` gives it (what ``scatter_dataset`` does, without
  broadcasting the arrays), so every training sample is seen exactly once
  per epoch across ranks; the test set is sharded the same way for the
  per-epoch evaluation (ChainerMN's multi-node evaluator);
- the optimizer is ChainerMN's multi-node optimizer: gradients are averaged
  across ranks, so with equal shards the update is the one a single process
  makes on the union of the ranks' batches;
- BatchNorm statistics are synchronised across ranks by default
  (the networks' :class:`branchynet.batch_norm.BatchNormalization` average
  them themselves; other networks' ``L.BatchNormalization`` become
  ChainerMN's ``MultiNodeBatchNormalization``): a distributed B-ResNet-110 step is then
  mathematically the single-process step; ``--no-sync-batchnorm`` keeps
  per-rank statistics (faster, not equivalent);
- rank 0 alone writes: logs, snapshots (ChainerMN's multi-node snapshot:
  rank 0 saves, every rank resumes from it), models, results, figures;
  batch-1 timing and the sweep run on rank 0 after training.

Without MPI nothing of this is used: :data:`SINGLE` stands for one process.
"""
import os

import chainer
import chainer.links as L
import numpy
from chainer import training
from chainer.backends import cuda
from chainer.datasets import TupleDataset

from branchynet import batch_norm
from branchynet.utils.errors import UserError

GPU_COMMUNICATORS = ('pure_nccl', 'flat', 'non_cuda_aware')
COMMUNICATORS = ('naive',) + GPU_COMMUNICATORS
# Variables that MPI launchers (MPICH/Hydra, Open MPI, PMIx) set in ranks.
_LAUNCHER_VARIABLES = ('PMI_SIZE', 'OMPI_COMM_WORLD_SIZE', 'PMIX_RANK',
                       'MPI_LOCALNRANKS')


def launched_by_mpi():
    """Whether this process was started by an MPI launcher with several ranks."""
    for name in _LAUNCHER_VARIABLES:
        value = os.environ.get(name)
        if value is not None:
            return name == 'PMIX_RANK' or int(value) > 1
    return False


def _launcher_number(names):
    """The integer in the first of the environment variables ``names`` that
    the launcher set, or ``None``."""
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            return int(value)
    return None


def launch_size():
    """How many ranks the MPI launcher started (from the environment), or
    ``None`` where it does not say (no launcher, or PMIx alone)."""
    return _launcher_number(('PMI_SIZE', 'OMPI_COMM_WORLD_SIZE'))


_RANK_VARIABLES = ('PMI_RANK', 'OMPI_COMM_WORLD_RANK', 'PMIX_RANK')


def launch_rank():
    """This process's rank as the MPI launcher set it; 0 without a launcher.

    Read from the environment, so it is known before any communicator
    exists (``reproduce_paper.py`` decides with it which parts a rank runs).
    """
    rank = _launcher_number(_RANK_VARIABLES)
    return 0 if rank is None else rank


def communicator_for(config):
    """The communicator a run uses: ``config.communicator``; under an MPI
    launcher without one, ``pure_nccl`` on a GPU (``flat`` if NCCL is not
    usable) and ``naive`` on the CPU; else ``None`` (one process)."""
    if config.communicator is not None:
        return config.communicator
    if launched_by_mpi():
        return 'pure_nccl' if config.uses_gpu else 'naive'
    return None


class Cluster:
    """The ranks of a run (one process: ``SINGLE``).

    Args:
        comm: a ChainerMN communicator, or ``None`` for one process.
        name: the communicator's name.
        sync_batchnorm: synchronise BatchNorm statistics across ranks.
    """

    def __init__(self, comm=None, name=None, sync_batchnorm=True):
        self.comm = comm
        self.name = name
        self.sync_batchnorm = sync_batchnorm

    @property
    def rank(self):
        return 0 if self.comm is None else self.comm.rank

    @property
    def size(self):
        return 1 if self.comm is None else self.comm.size

    @property
    def is_root(self):
        """Whether this rank writes (rank 0, or the only process)."""
        return self.rank == 0

    @property
    def distributed(self):
        return self.comm is not None

    def describe(self):
        """JSON-ready: communicator, ranks, BatchNorm synchronisation."""
        return {'communicator': self.name, 'ranks': self.size,
                'sync_batchnorm': bool(self.sync_batchnorm and
                                       self.distributed)}

    def local_batchsize(self, batchsize):
        """This rank's share of the global batch.

        Raises:
            ValueError: the ranks do not divide the batch.
        """
        if batchsize % self.size:
            divisors = [n for n in range(2, min(batchsize, 16) + 1)
                        if batchsize % n == 0]
            raise ValueError(
                'the global batch of {} does not divide among {} ranks: '
                'launch a number of ranks that divides it{}'.format(
                    batchsize, self.size, ' ({})'.format(', '.join(
                        map(str, divisors))) if divisors else ''))
        return batchsize // self.size

    def shard(self, x, t, equal=True):
        """This rank's part of ``(x, t)`` as a dataset.

        Args:
            equal: require equal shards (training: every sample exactly
                once, every rank the same number of steps).

        Raises:
            ValueError: ``equal`` and the samples do not split evenly.
        """
        if not self.distributed:
            return TupleDataset(x, t)
        if equal and len(t) % self.size:
            raise ValueError(
                'the training set of {} samples does not split into {} '
                'equal shards: every sample must be seen exactly once per '
                'epoch; choose --train-size or --validation-size so that '
                'the ranks divide it'.format(len(t), self.size))
        from chainermn.datasets.scatter import scatter_index
        begin, end = scatter_index(len(t), self.comm,
                                   force_equal_length=False)
        return TupleDataset(x[begin:end], t[begin:end])

    def agree(self, value):
        """Rank 0's ``value`` on every rank (a decision all must share)."""
        if not self.distributed:
            return value
        return self.comm.mpi_comm.bcast(value, root=0)

    def optimizer(self, optimizer):
        """ChainerMN's multi-node optimizer around ``optimizer`` (or it)."""
        if not self.distributed:
            return optimizer
        import chainermn
        return chainermn.create_multi_node_optimizer(optimizer, self.comm)

    def broadcast_weights(self, optimizer):
        """Give every rank rank 0's parameters now, once ``optimizer`` is set up.

        ChainerMN's multi-node optimizer otherwise spends its first update
        (after every start, a resume included) on that broadcast and updates
        nothing: a distributed run would make one step fewer per start
        than a single process on the same batches.
        """
        if self.distributed:
            self.comm.bcast_data(optimizer.target)
            optimizer.is_changed(optimizer.target)  # it now knows them

    def evaluator(self, evaluator):
        """ChainerMN's multi-node evaluator around ``evaluator`` (or it)."""
        if not self.distributed:
            return evaluator
        import chainermn
        return chainermn.create_multi_node_evaluator(evaluator, self.comm)

    def snapshot(self, snapshot):
        """Saved by rank 0 alone; on resume every rank gets rank 0's state."""
        if not self.distributed:
            return snapshot
        from chainermn.extensions import multi_node_snapshot
        wrapped = multi_node_snapshot(self.comm, snapshot, [])
        # ChainerMN's wrapper has the default priority, LogReport's: it ran
        # first and saved a log without the epoch just ended, which a
        # resumed run then logged again without its evaluation. The
        # snapshot's own priority makes it run after every other extension.
        wrapped.priority = snapshot.priority
        return wrapped

    def aggregated(self, keys):
        """Extensions averaging the training observations ``keys`` across ranks."""
        if not self.distributed:
            return []
        return [AveragedObservations(self.comm, keys)]

    def network(self, net):
        """``net``, with BatchNorm synchronised across ranks if asked for."""
        if not (self.distributed and self.sync_batchnorm):
            return net
        return _synchronised(net, self.comm)

    def seed(self, seed):
        """A seed of this rank's own (its shuffling must differ from the others')."""
        return seed + 1000003 * self.rank

    def device(self, spec):
        """The device of this rank: on a GPU, one CUDA device per rank of a node."""
        if self.distributed and spec.startswith('@cupy'):
            return '@cupy:{}'.format(self.comm.intra_rank)
        return spec


def _synchronised(link, comm):
    """``link`` with the statistics of its BatchNorms shared across ranks:
    :class:`branchynet.batch_norm.BatchNormalization` links are given the
    communicator (they average the statistics themselves); other
    ``L.BatchNormalization`` links are replaced, in their parent, by
    ChainerMN's ``MultiNodeBatchNormalization`` (what
    ``chainermn.links.create_mnbn_model`` does, without copying the rest)."""
    if isinstance(link, batch_norm.BatchNormalization):
        link.comm = comm
        return link
    if isinstance(link, L.BatchNormalization):
        import chainermn.links
        return chainermn.links.create_mnbn_model(link, comm)
    if isinstance(link, chainer.Sequential):
        for i, child in enumerate(list(link)):
            link[i] = _synchronised(child, comm)
    elif isinstance(link, chainer.ChainList):
        for i, child in enumerate(link._children):
            link._children[i] = _synchronised(child, comm)
    elif isinstance(link, chainer.Chain):
        for name in link._children:
            link.__dict__[name] = _synchronised(link.__dict__[name], comm)
    return link


class AveragedObservations(training.Extension):
    """Every iteration, replace ``keys`` of the observation by their mean over ranks.

    So that the training loss and accuracy that rank 0 logs are those of the
    global batch. (ChainerMN's ``ObservationAggregator`` does this per key,
    but in Chainer 7.8.1 it moves values to the ChainerX device "native",
    which fails without ChainerX.) One collective call per iteration.
    """
    trigger = 1, 'iteration'
    priority = training.PRIORITY_EDITOR

    def __init__(self, comm, keys):
        self.comm = comm
        self.keys = list(keys)

    def __call__(self, trainer):
        observation = trainer.observation
        present = [k for k in self.keys if k in observation]
        values = numpy.array([float(cuda.to_cpu(getattr(
            observation[k], 'array', observation[k]))) for k in present])
        total = self.comm.mpi_comm.allreduce(values)
        for key, value in zip(present, total / self.comm.size):
            observation[key] = value


SINGLE = Cluster()


def connect(config):
    """The cluster of a run: ChainerMN's communicator when distributed.

    ``config`` is a validated RunConfig: a GPU communicator named for a CPU
    run was refused when it was made.
    """
    name = communicator_for(config)
    if name is None:
        return SINGLE
    try:
        import chainermn
        import mpi4py  # noqa: F401  (ChainerMN finds it only when used)
    except ImportError as e:
        raise UserError('a distributed run (--communicator, or mpiexec) '
                        'needs ChainerMN with mpi4py: pip install -e '
                        '".[mpi]" ({})'.format(e)) from None
    try:
        comm = chainermn.create_communicator(name)
    except Exception as e:  # no NCCL for CuPy: the default falls back
        if config.communicator is not None or name != 'pure_nccl':
            raise
        print('note: pure_nccl is not usable here ({}); using flat'.format(e),
              flush=True)
        name = 'flat'
        comm = chainermn.create_communicator(name)
    return Cluster(comm, name, config.sync_batchnorm)
