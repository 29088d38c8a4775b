"""One training phase with Chainer's Trainer: resumable and repeatable.

The reference protocol has two phases, each a :func:`train_phase` call with
its own output folder: the main network alone (the loss link's
``main_loss``), then all exits jointly (the loss link itself). Everything is Chainer's stock machinery
(``StandardUpdater``, ``Evaluator``, ``LogReport``, ``PrintReport``,
``ProgressBar``, ``snapshot``); the one addition is :class:`RandomStates`,
which puts the random generators into the snapshot so that a resumed run
continues exactly where an uninterrupted one would be.
"""
import glob
import os
import re
import shutil
import tempfile
import time

import chainer
import numpy
from chainer import training
from chainer.iterators import SerialIterator, ShuffleOrderSampler
from chainer.training import extensions

from branchynet.distributed import SINGLE
from branchynet.utils import files
from branchynet.utils.errors import FileProblem
from branchynet.utils.schema import Integer, ListOf, check

SNAPSHOT = 'snapshot_epoch_{.updater.epoch}'
# the names SNAPSHOT gives (the epoch may print as 8 or as 8.0)
SNAPSHOT_NAME = re.compile(r'snapshot_epoch_[0-9]+(\.[0-9]+)?')
# A snapshot is also taken within an epoch once this many minutes have
# passed since the last one, so that an interrupted run repeats at most
# that much work (a B-ResNet-110 epoch takes most of an hour on a CPU).
SNAPSHOT_MINUTES = 10


class SnapshotTrigger:
    """Fires at the end of every epoch, and within an epoch when
    ``minutes`` have passed since it last fired. The snapshot then holds
    the iterator's position, so a resumed run goes on from that iteration
    (a mid-epoch snapshot takes the name of the epochs completed; the
    newest file is the one resumed)."""

    def __init__(self, minutes=None):
        self.seconds = 60 * (SNAPSHOT_MINUTES if minutes is None
                             else minutes)
        self.last = time.monotonic()

    def __call__(self, trainer):
        now = time.monotonic()
        if trainer.updater.is_new_epoch or now - self.last >= self.seconds:
            self.last = now
            return True
        return False


class EveryEpoch:
    """Fires at the end of every epoch and keeps no state, unlike Chainer's
    ``(1, 'epoch')``: an extension that only reports (the progress table,
    the run's estimate) then adds nothing to the snapshot, so a run resumes
    whether it was started with it or not (``--no-progress``, or by a
    version of this program that did not have it)."""

    def __call__(self, trainer):
        return trainer.updater.is_new_epoch


class EveryIteration:
    """Fires after every iteration and keeps no state (see
    :class:`EveryEpoch`)."""

    def __call__(self, trainer):
        return True


class RandomStates(training.Extension):
    """Saves and restores random generators with the trainer's snapshot.

    Shuffling (the iterator's order sampler) and dropout (NumPy's global
    generator on CPU) draw from these; with them restored, a run resumed
    from a snapshot makes the same updates as one that never stopped.
    """
    trigger = (1, 'epoch')

    def __init__(self, generators):
        self.generators = generators  # name -> object with get/set_state

    def __call__(self, trainer):
        pass  # nothing to do per epoch; the state travels in serialize()

    def serialize(self, serializer):
        for name, generator in self.generators.items():
            _, keys, position, has_gauss, cached = generator.get_state()
            keys = numpy.array(keys, dtype=numpy.uint32)
            rest = numpy.array([position, has_gauss, cached], numpy.float64)
            serializer(name + '_keys', keys)
            serializer(name + '_rest', rest)
            if isinstance(serializer, chainer.serializer.Deserializer):
                generator.set_state(('MT19937', keys, int(rest[0]),
                                     int(rest[1]), float(rest[2])))


def fresh_optimizer_state(links):
    """Give every parameter of ``links`` the state of a newly made optimizer.

    Step count 0 and, for Adam, zero moments. The reference gives each exit
    head its own new Adam when joint training starts. Here one optimizer
    serves both phases, and Chainer 7 advances an update rule's step count
    even for a parameter without a gradient: a head that sat through the
    main phase would enter the joint phase with a step count in the
    thousands and zero moments, so Adam's bias correction would be skipped
    and its first steps would be several times ``alpha``.
    """
    for link in links:
        for param in link.params():
            rule = param.update_rule
            if rule is None:
                continue
            rule.t = 0
            if rule.state is not None:
                rule.init_state(param)


PHASES = ('main', 'joint')


def latest_snapshot(out):
    """The snapshot a resumed phase in ``out`` continues from, or ``None``.

    Every name with the snapshots' prefix counts, as Chainer's autoload
    takes the newest of them.
    """
    found = glob.glob(os.path.join(glob.escape(out), 'snapshot_epoch_*'))
    return max(found, key=os.path.getmtime) if found else None


def has_snapshot(out):
    """Whether ``out`` holds a trainer snapshot of this module."""
    return latest_snapshot(out) is not None


class SnapshotCheck(training.Extension):
    """Checks the snapshot a resumed phase loads, before Chainer loads it.

    Initialised before the snapshot extension (a higher priority), once the
    trainer has started: :func:`check_snapshot_fits` on rank 0, its verdict
    on every rank (the others would otherwise wait for rank 0's state).
    """
    priority = training.PRIORITY_WRITER + 1

    @staticmethod
    def trigger(trainer):
        return False  # nothing per epoch, and no state in the snapshot

    def __init__(self, path, optimizer, cluster):
        self.path = path
        self.optimizer = optimizer
        self.cluster = cluster

    def initialize(self, trainer):
        problem = None
        if self.cluster.is_root:
            try:
                check_snapshot_fits(self.path, trainer, self.optimizer)
            except FileProblem as e:
                problem = str(e)
        problem = self.cluster.agree(problem)
        if problem is not None:
            raise FileProblem(problem)

    def __call__(self, trainer):
        pass


def check_snapshot_fits(path, trainer, optimizer):
    """Raise :class:`FileProblem` unless the snapshot ``path`` holds what
    ``trainer`` (started) loads from it: every member it needs, each of the
    shape and kind of the value it is loaded into; members that only a
    trained state has (an optimizer's state: its parameter's shape or a
    scalar; a log's running sums: scalars) of those shapes; none of them a
    pickle. Chainer's loader would otherwise broadcast a wrong shape into a
    parameter, or unpickle an object member. Members the trainer does not
    load (of an extension this version no longer has) are left unread."""
    members = check_snapshot(path)
    serializer = chainer.serializers.DictionarySerializer()
    serializer.save(trainer)
    expected = {name: numpy.asarray(value)
                for name, value in serializer.target.items()}
    params = {'updater/optimizer:main' + name: param.shape
              for name, param in optimizer.target.namedparams()}
    problems = []
    for name, (shape, dtype) in sorted(members.items()):
        owner, _, key = name.rpartition('/')
        if name in expected:
            want = expected[name]
            numbers = dtype.kind in 'biuf' and want.dtype.kind in 'biuf'
            if shape != want.shape or not (numbers or
                                           dtype.kind == want.dtype.kind):
                problems.append('{} is {} {}, the trainer holds {} {}'.format(
                    name, dtype, shape, want.dtype, want.shape))
        elif owner in params:
            if dtype.kind not in 'iuf' or shape not in ((), params[owner]):
                problems.append('{} is {} {}, not optimizer state of its '
                                'parameter {}'.format(name, dtype, shape,
                                                      params[owner]))
        elif '/_summary/_summaries/' in name:
            if dtype.kind not in 'iuf' or shape != () or \
                    key not in ('_x', '_x2', '_n'):
                problems.append('{} is {} {}, not a running sum'.format(
                    name, dtype, shape))
    missing = sorted(set(expected) - set(members))
    if missing:
        problems.append('{} is missing ({} member(s) in all)'.format(
            missing[0], len(missing)))
    if problems:
        raise FileProblem(
            '{}: not a snapshot of this training: {}{}; restore the file, or '
            'start the run again in another folder'.format(
                path, problems[0], ' (and {} more problem(s))'.format(
                    len(problems) - 1) if len(problems) > 1 else ''))


LOG = 'log'  # the file LogReport writes in a phase's folder


def read_log(path):
    """A Trainer log file (a list of per-epoch dicts), or ``None`` if absent.

    Raises:
        FileProblem: the log is damaged.
    """
    if not os.path.lexists(path):
        return None
    log = files.read_json(path)
    check(log, ListOf({'epoch': Integer}), path)
    return log


def phase_log(out):
    """The per-epoch log a phase wrote to its folder ``out``, or ``None``."""
    return read_log(os.path.join(out, LOG))


def train_phase(target, optimizer, loss_func, train, test, epochs, out,
                batchsize, device, seed, resume=False, progress=True,
                phase='joint', eval_batchsize=1000, cluster=SINGLE,
                extra_extensions=()):
    """Train for ``epochs`` epochs: one phase of the protocol.

    Args:
        target: the loss link the optimizer is set up on (its reports
            appear as ``main/...`` and ``validation/main/...``).
        optimizer: a set-up Chainer optimizer.
        loss_func: what a training step and the evaluation compute, e.g.
            the loss link itself (joint) or its ``main_loss``.
        train, test: ``(x, t)`` array pairs; ``test`` is evaluated in test
            mode after every epoch.
        epochs: epochs of this phase; 0 skips it (an empty log).
        out: folder for the log and the per-epoch snapshot.
        batchsize: training batch size.
        device: the Chainer device to train on.
        seed: seeds the shuffling of the training set.
        resume: continue from the latest snapshot in ``out`` (a finished
            phase then returns at once, with its final state loaded).
        progress: show a progress bar and a per-epoch table.
        phase: ``'main'`` or ``'joint'``: which columns the table shows.
        eval_batchsize: batch size of the per-epoch evaluation.
        cluster: the ranks of a distributed run
            (:class:`branchynet.distributed.Cluster`): ``batchsize`` is then
            the global batch, each rank trains on its shard and rank 0
            alone logs and saves snapshots.
        extra_extensions: further trainer extensions (each with its own trigger).

    Returns:
        The log: a list of per-epoch dicts from ``LogReport`` (``None`` on
        ranks other than 0).

    Raises:
        FileExistsError: ``out`` holds a snapshot and ``resume`` is False.
    """
    if phase not in PHASES:
        raise ValueError('phase must be one of {}, got {!r}'.format(PHASES,
                                                                   phase))
    if not resume and has_snapshot(out):
        raise FileExistsError(
            '{} already holds a training run; pass --resume to continue it or '
            'choose another --out'.format(out))
    if epochs == 0:  # the phase is skipped: the network stays as it is
        return [] if cluster.is_root else None
    shuffle = numpy.random.RandomState(cluster.seed(seed))
    train_iter = SerialIterator(cluster.shard(*train),
                                cluster.local_batchsize(batchsize),
                                order_sampler=ShuffleOrderSampler(shuffle))
    test_iter = SerialIterator(cluster.shard(*test, equal=False),
                               eval_batchsize, repeat=False, shuffle=False)
    updater = training.StandardUpdater(train_iter, optimizer, device=device,
                                       loss_func=loss_func)
    # Chainer's Trainer creates its folder: ranks other than 0 get a
    # temporary one and write nothing where the run's files are
    trainer_out = out if cluster.is_root else tempfile.mkdtemp(
        prefix='branchynet-rank{}-'.format(cluster.rank))
    trainer = training.Trainer(updater, (epochs, 'epoch'), out=trainer_out)
    trainer.extend(cluster.evaluator(extensions.Evaluator(
        test_iter, target, eval_func=loss_func, device=device)))
    if phase == 'main':
        observed = ['main/loss', 'main/accuracy']
    else:
        observed = ['main/loss'] + [
            'main/exit{}/{}'.format(n + 1, what)
            for n in range(target.net.num_exits) for what in ('loss',
                                                              'accuracy')]
    for aggregator in cluster.aggregated(observed):
        trainer.extend(aggregator)
    # On GPU, dropout draws from CuPy's generator, which has no state export:
    # GPU runs resume correctly but not bit-identically.
    trainer.extend(RandomStates({'shuffle': shuffle,
                                 'numpy_global': numpy.random}))
    # The trigger is given here: ChainerMN's multi-node snapshot wraps the
    # snapshot without taking over its trigger, and would otherwise run after
    # every iteration.
    trainer.extend(cluster.snapshot(extensions.snapshot(
        filename=SNAPSHOT, n_retains=1, autoload=resume)),
        trigger=SnapshotTrigger())
    if cluster.is_root:
        trainer.extend(extensions.LogReport())
    if progress and cluster.is_root:
        if phase == 'main':
            keys = ['main/loss', 'validation/main/accuracy']
        else:
            exits = range(1, target.net.num_exits + 1)
            if len(exits) > 3:  # a line per epoch, not 300 characters
                exits = [1, len(exits)]
            keys = ['main/loss'] + ['validation/main/exit{}/accuracy'.format(
                n) for n in exits]
        trainer.extend(extensions.PrintReport(['epoch'] + keys +
                                              ['elapsed_time']),
                       trigger=EveryEpoch())
        # every iteration: a B-ResNet-110 step takes seconds on a CPU
        trainer.extend(extensions.ProgressBar(update_interval=1),
                       trigger=EveryIteration())
    for extension in extra_extensions:
        trainer.extend(extension)
    snapshot = cluster.agree(latest_snapshot(out) if resume and
                             cluster.is_root else None)
    if snapshot is not None:
        trainer.extend(SnapshotCheck(snapshot, optimizer, cluster))
    try:
        trainer.run()
    finally:
        if not cluster.is_root:
            shutil.rmtree(trainer_out, ignore_errors=True)
    return phase_log(out) if cluster.is_root else None


def check_snapshot(path):
    """Raise :class:`FileProblem` unless ``path`` is a whole Trainer snapshot
    that loads without unpickling anything.

    Reads every member (CRC-checked), so a truncated or corrupted file is
    found before any data is loaded. Chainer's loader allows pickles; a
    snapshot this program wrote holds numbers and strings only, so a member
    of object dtype (a pickle, which could run code) is refused here before
    Chainer ever opens the file. Which members and shapes a snapshot must
    hold is checked against the trainer when it is loaded
    (:func:`branchynet.training.check_snapshot_fits`).

    Returns:
        ``{member: (shape, dtype)}``.
    """
    advice = ('resume cannot continue from it: restore the file, or start '
              'the run again in another folder')
    try:
        members = files.npz_members(path, 'training snapshot')
    except FileProblem as e:
        raise FileProblem('{}; {}'.format(e, advice)) from None
    pickled = sorted(name for name, (_, dtype) in members.items()
                     if dtype.hasobject)
    if pickled:
        raise FileProblem('{}: member {} holds Python objects (a pickle, '
                          'which could run code); this program never writes '
                          'one: the snapshot is refused'.format(path,
                                                                pickled[0]))
    if 'updater/iteration' not in members:
        raise FileProblem('{}: not a Trainer snapshot (no updater state)'
                          .format(path))
    return members
