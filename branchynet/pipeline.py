"""The paper's experiment for one network, end to end, from a RunConfig.

:func:`run` goes through the steps in order; each step is a function of the
configuration and of what earlier steps returned:

1. :func:`check_output`, :func:`load_data` — the output folder is checked,
   then the dataset loaded and split; only then is anything written
   (:func:`record_config`: the folder and its ``run.json``);
3. :func:`train` (or :func:`load_trained` with ``--models``) — both
   training phases: ``baseline.npz`` (main network) and ``branchynet.npz``;
4. :func:`evaluate` — baseline accuracy, every exit's outputs on the test
   set, the threshold sweep;
5. per timed device: :func:`measure_paths` (batch-1 cost of every exit's
   path), :func:`select_thresholds` (the knee, and ``--thresholds``) and
   :func:`measure_choices` (baseline and choices end to end, in turns);
6. result files (:mod:`branchynet.report`) and figures
   (:mod:`branchynet.figures`).

Everything a run produces lies in its output folder::

    run.json                    the configuration (resume reads it)
    main_phase/, joint_phase/   Chainer Trainer logs and the latest snapshot
    baseline.npz                main network after phase 1 (scored from this)
    branchynet.npz              all exits after phase 2
    exit_outputs.npz            every exit's prediction and entropy per test sample
    results.json                everything (config, split, versions, curves, sweep, ...)
    sweep.csv, table1.csv, table1.md, figures/
"""
import dataclasses
import functools
import os

import chainer
import numpy

from branchynet import (datasets, distributed, environment, figures, loss,
                        ownership, protocols, reading, report, selection,
                        sweep, timing)
from branchynet.config import RunConfig
from branchynet.errors import FileProblem, OwnershipError, UserError
from branchynet.exit_rule import EntropyThresholds
from branchynet.serialization import load_model, save_model
from branchynet.training import (PHASES, fresh_optimizer_state, has_snapshot,
                                 latest_snapshot,
                                 read_log, train_phase)

RUN_FILE = reading.RUN_FILE
RUN_KIND = 'run'  # the kind of output folder a run writes
VALIDATION_OUTPUTS = 'exit_outputs_validation.npz'
MODEL_FILES = {'main': 'baseline.npz', 'joint': 'branchynet.npz'}


class RunError(UserError):
    """A run cannot go on as asked (its launch, its training set)."""


@dataclasses.dataclass
class TrainedModels:
    """The two models of a run and how they were trained.

    Attributes:
        baseline: the main network as the main phase left it.
        branchynet: every exit after the joint phase.
        training: per-phase lists of per-epoch log entries.
    """
    baseline: chainer.Link
    branchynet: chainer.Link
    training: dict

    def to_device(self, device):
        """Copies of both models on ``device`` (the originals stay)."""
        return TrainedModels(_copy_to(self.baseline, device),
                             _copy_to(self.branchynet, device), self.training)


def _copy_to(net, device):
    copy = net.copy(mode='copy')
    copy.to_device(device)
    return copy


class Progress:
    """Prints ``[run] message`` lines unless the run is quiet."""

    def __init__(self, config):
        self.enabled = not config.no_progress
        self.prefix = '[{}]'.format(os.path.basename(os.path.normpath(
            config.out)))

    def __call__(self, *words):
        if self.enabled:
            print(self.prefix, *words, flush=True)


# --- 1. the output folder -----------------------------------------------------

# What a run folder written before folders kept a record of their outputs
# may hold; such a folder is adopted (recorded as this program's) when it is
# resumed or re-evaluated, if it holds nothing else.
LEGACY_ENTRIES = (RUN_FILE, 'main_phase', 'joint_phase', 'figures',
                  'port_kit') + tuple(MODEL_FILES.values()) + \
    report.RESULT_FILES
# Sub-folders whose contents Chainer's Trainer manages.
PHASE_FOLDERS = tuple(phase + '_phase' for phase in PHASES)


def stored_config(folder):
    """The configuration a run in ``folder`` was made with, or ``None``.

    Raises:
        FileProblem: ``run.json`` is damaged or holds values no run has.
    """
    values = reading.read_run_file(folder)
    if values is None:
        return None
    try:
        return RunConfig.from_dict(values)
    except (ValueError, TypeError) as e:
        raise FileProblem('{}: not a configuration this program can run ({})'
                          .format(os.path.join(folder, RUN_FILE), e)) from None


@dataclasses.dataclass
class FolderState:
    """What an output folder holds, as far as a run cares (read only).

    Attributes:
        path: the folder.
        entries: what is in it (the record of outputs aside).
        record: its record of outputs (:mod:`branchynet.ownership`), or
            ``None``.
        stored: the configuration in its ``run.json``, or ``None``.
        snapshots: whether a training phase left a snapshot.
        models: whether it holds a saved model.
    """
    path: str
    entries: list
    record: dict
    stored: RunConfig
    snapshots: bool
    models: bool

    @classmethod
    def of(cls, path):
        exists = os.path.isdir(path)
        return cls(
            path=path,
            entries=ownership.visible_entries(path) if exists else [],
            record=ownership.read_record(path) if exists else None,
            stored=stored_config(path) if exists else None,
            snapshots=any(has_snapshot(os.path.join(path, p))
                          for p in PHASE_FOLDERS),
            models=any(os.path.isfile(os.path.join(path, m))
                       for m in MODEL_FILES.values()))

    @property
    def legacy(self):
        """A run folder of an earlier version: no record, only a run's files."""
        return self.record is None and self.stored is not None and \
            set(self.entries) <= set(LEGACY_ENTRIES)

    @property
    def is_run(self):
        """Whether the folder holds a run of this program's."""
        return self.stored is not None and (
            self.legacy or (self.record or {}).get('kind') == RUN_KIND)

    def describe(self):
        """``'a b_lenet run (finished)'`` and the like, for messages."""
        what = 'an evaluation of {}'.format(self.stored.models) \
            if self.stored.models else 'a {} run'.format(self.stored.protocol)
        state = 'finished' if (self.record or {}).get('complete') or \
            (self.legacy and os.path.isfile(os.path.join(self.path,
                                                         'results.json'))) \
            else 'trained, not evaluated' if self.models \
            else 'in progress' if self.snapshots else 'not started'
        return '{} ({})'.format(what, state)


def check_output_once(config, cluster):
    """:func:`check_output` on rank 0, its verdict on every rank.

    Rank 0 alone looks at the folder: a rank that looked after rank 0 had
    opened it would find rank 0's record there and refuse the run (a race
    seen in CI, which then hung the other rank). Returns the folder state on
    rank 0, ``None`` elsewhere; a refusal is raised on every rank.
    """
    state, refusal = None, None
    if cluster.is_root:
        try:
            state = check_output(config)
        except (UserError, OSError) as e:
            refusal = e
    message = cluster.agree(None if refusal is None else str(refusal))
    if refusal is not None:
        raise refusal
    if message is not None:
        raise UserError(message)
    return state


def check_output(config):
    """Refuse, before anything is loaded or written, an output folder the run
    may not use; nothing a user made is ever replaced or removed.

    - a new run needs an empty or new folder;
    - ``--resume`` needs a run of the same network that can continue: one
      with a training snapshot (the snapshot and logs are checked now), or
      one that never finished an epoch;
    - ``--models A`` writes into an empty or new folder, into ``A`` itself,
      or into an earlier evaluation of ``A``.

    Returns:
        The :class:`FolderState` of ``config.out``.

    Raises:
        UserError: naming what is in the folder and the way out.
    """
    ownership.check_out_path(config.out)
    state = FolderState.of(config.out)
    if config.models:
        _check_evaluation_target(config, state)
    elif config.resume:
        _check_resumable(config, state)
    elif state.entries:
        if state.is_run:
            raise OwnershipError(
                '--out {} already holds {}: pass --resume to continue it (or '
                'to evaluate it again), or choose another --out'.format(
                    config.out, state.describe()))
        raise OwnershipError(
            '--out {} is not empty and was not made by this program (it '
            'holds {}): choose an empty or new folder'.format(
                config.out, ownership.listing(config.out)))
    return state


def _check_resumable(config, state):
    if not state.entries and (state.record or {}).get('kind') == RUN_KIND:
        return  # a run killed before it wrote anything: it starts afresh
    if not state.is_run:
        raise UserError(
            '--resume: {} holds no run of this program{}'.format(
                config.out, ' (it holds {})'.format(ownership.listing(
                    config.out)) if state.entries else ''))
    if state.stored.protocol != config.protocol:
        raise UserError('--resume: {} holds {}, not a {} run'.format(
            config.out, state.describe(), config.protocol))
    if not state.snapshots and (state.models or any(
            os.path.isfile(os.path.join(config.out, name))
            for name in report.RESULT_FILES)):
        raise UserError(
            '--resume: {} holds {} but no training snapshot: there is '
            'nothing to continue. Evaluate its models again with --models {} '
            '(into another --out, or --out {} to replace its results)'.format(
                config.out, state.describe(), config.out, config.out))
    for phase in PHASE_FOLDERS:
        folder = os.path.join(config.out, phase)
        latest = latest_snapshot(folder)
        if latest is not None:
            reading.check_snapshot(latest)
        reading.read_log(os.path.join(folder, 'log'))


def _check_evaluation_target(config, state):
    source = os.path.realpath(config.models)
    if os.path.realpath(config.out) == source:
        if not state.is_run:
            raise UserError('--models {}: holds no run of this program'.format(
                config.models))
        return
    if not state.entries:
        return
    earlier = state.stored.models if state.is_run and state.stored else None
    if earlier is not None and os.path.realpath(earlier) == source:
        return  # an earlier evaluation of the same models: results replaced
    raise OwnershipError(
        '--out {} already holds {}: choose an empty or new --out for the '
        'evaluation of {}'.format(
            config.out, state.describe() if state.is_run else
            'files this program did not write ({})'.format(
                ownership.listing(config.out)), config.models))


def open_run_folder(path, state, flag='--out'):
    """Open and lock the run folder ``path`` (its :class:`FolderState`
    ``state``); one of an earlier version is adopted first: its files are
    recorded as this program's (and those of its ``figures/``), so that
    whatever writes into it next (a run, an export) keeps it a run that
    resumes."""
    folder = ownership.OutputFolder.open(
        path, RUN_KIND, flag=flag, foreign_ok=False,
        adopt=LEGACY_ENTRIES if state.legacy else (),
        opaque=PHASE_FOLDERS + ('port_kit', report.FIGURES_DIR))
    figures_path = folder.file(report.FIGURES_DIR)
    if state.legacy and os.path.isdir(figures_path) and \
            not os.path.islink(figures_path):
        ownership.OutputFolder.open(figures_path, 'files',
                                    adopt=os.listdir(figures_path)).close()
    return folder


def open_output(config, state):
    """Open and lock the run's folder (rank 0); it records what the run writes.

    A run folder of an earlier version is adopted: its files are recorded
    as this program's.
    """
    folder = open_run_folder(config.out, state)
    try:
        # everything the run will replace, before it writes anything
        folder.check_replaceable([RUN_FILE] + list(MODEL_FILES.values()) +
                                 list(report.RESULT_FILES))
    except BaseException:
        folder.close()
        raise
    if folder.get('complete') is not False:
        folder.set(complete=False)
    return folder


def record_config(folder, config, cluster=distributed.SINGLE):
    """Write the configuration to the run folder's ``run.json``.

    ``run.json`` also records the ranks of this process's launch, those
    the models were trained on (an evaluation of saved models runs on one
    process), and which kernels trained which epochs
    (:func:`kernel_history`); these are ignored when the configuration is
    read back.

    Returns:
        The kernel history.
    """
    source = reading.read_run_file(config.models or config.out) or {}
    history = source.get(KERNEL_HISTORY)
    launch = cluster.describe()
    trained_on = launch
    if config.models:
        # an evaluation's own launch says nothing of the training's
        trained_on = source.get(TRAINED_ON)
        if trained_on is None and not source.get('models'):
            trained_on = source.get('distributed')
    else:
        history = kernel_history(config, history)
    folder.write_json(RUN_FILE, dict(config.to_dict(),
                                     distributed=launch,
                                     **{TRAINED_ON: trained_on,
                                        KERNEL_HISTORY: history}))
    return history


TRAINED_ON = 'training_distributed'


KERNEL_HISTORY = 'kernels_by_epoch'


def kernel_history(config, previous):
    """Which kernels (``--kernels``) train which epochs of each phase.

    Args:
        config: the run's configuration (its ``kernels`` trains the epochs
            still to come).
        previous: the history ``run.json`` holds, or ``None``: a run
            started before the history was kept trained with Chainer's own
            functions.

    Returns:
        A list of ``{'phase', 'first_epoch', 'kernels'}``, each entry
        holding from its first epoch to the next entry of its phase. An
        entry of epochs that were never trained (the run stopped first) is
        dropped.
    """
    history = []
    for phase, epochs in (('main', config.epoch_main),
                          ('joint', config.epoch_joint)):
        done = len(read_log(os.path.join(config.out, phase + '_phase')) or [])
        history += [h for h in previous or [] if h['phase'] == phase and
                    h['first_epoch'] <= done]
        if previous is None and done:
            history.append({'phase': phase, 'first_epoch': 1,
                            'kernels': 'stock'})
        entries = [h for h in history if h['phase'] == phase]
        if done < epochs and (not entries or
                              entries[-1]['kernels'] != config.kernels):
            history.append({'phase': phase, 'first_epoch': done + 1,
                            'kernels': config.kernels})
    return history


def holds_work(out):
    """Whether ``out`` holds anything a run would want back: a snapshot or a model."""
    state = FolderState.of(out)
    return state.snapshots or state.models


# --- 2. data ------------------------------------------------------------------

def load_data(protocol, config, say=None, keep_raw=False):
    """The protocol's dataset as the configuration splits it (see
    :func:`branchynet.datasets.load_cifar10` for ``say`` and
    ``keep_raw``)."""
    if protocol.dataset == 'mnist':
        return datasets.load_mnist(config.data_dir, config.train_size,
                                   config.test_size, config.validation_size,
                                   config.seed,
                                   official=not config.unofficial_data)
    return datasets.load_cifar10(config.data_dir, config.test_batch,
                                 config.preprocessing, config.train_size,
                                 config.test_size, config.cache_dir,
                                 validation_size=config.validation_size,
                                 seed=config.seed,
                                 official=not config.unofficial_data,
                                 keep_raw=keep_raw, say=say)


# --- 3. training ----------------------------------------------------------------

def seed_generators(device, seed):
    """Seed NumPy's global generator and, on a GPU, CuPy's."""
    numpy.random.seed(seed)
    if device.xp is not numpy:
        device.xp.random.seed(seed)


class RunEstimate(chainer.training.Extension):
    """After every epoch, the time left for the whole run, both phases.

    A phase's epoch takes what its epochs so far took (Chainer's
    ``elapsed_time``, restored on resume); a joint epoch not yet timed is
    estimated from a main epoch by the ratio of their multiply-adds (every
    exit's forward and backward against the main network's).
    """
    trigger = (1, 'epoch')
    priority = chainer.training.PRIORITY_READER

    def __init__(self, phase, epochs, done, joint_ratio, say):
        self.phase, self.epochs, self.done = phase, epochs, done
        self.joint_ratio, self.say = joint_ratio, say
        self.seconds = {}  # per epoch, by phase, once measured

    def __call__(self, trainer):
        self.done[self.phase] = trainer.updater.epoch
        self.seconds[self.phase] = trainer.elapsed_time / max(
            trainer.updater.epoch_detail, 1e-9)
        main = self.seconds.get('main')
        joint = self.seconds.get('joint') or (
            main * self.joint_ratio if main else None)
        if joint is None:
            return
        left = sum(max(self.epochs[p] - self.done[p], 0) * rate for p, rate
                   in (('main', main or 0), ('joint', joint)))
        self.say('whole run: main {} of {}, joint {} of {} epochs done; '
                 'about {} left{}'.format(
                     self.done['main'], self.epochs['main'],
                     self.done['joint'], self.epochs['joint'],
                     timing.duration_text(left), '' if 'joint' in self.seconds else
                     ' (a joint epoch estimated at {:.1f} main epochs until '
                     'one is timed)'.format(self.joint_ratio)))


def joint_cost_ratio(net):
    """A joint step's multiply-adds over a main step's (the main network is
    the trunk and the final head; a joint step runs every head too)."""
    from branchynet import benchmark
    stages, heads = benchmark.multiply_adds(net)
    return (sum(stages) + sum(heads)) / max(sum(stages) + heads[-1], 1)


def trainable(protocol, device, cluster, seed, alpha, adam_beta1,
              branch_weights=None, percent_train_keeps=1.0):
    """The protocol's network drawn with ``seed``, on ``device``, in its
    loss link, and the Adam optimizer set up on it: ``(policy, optimizer)``.
    Every rank of ``cluster`` starts from the same weights."""
    seed_generators(device, seed)
    net = cluster.network(protocol.network())  # the same weights everywhere
    if cluster.distributed:
        # dropout masks of the ranks' own (the weights are drawn already)
        seed_generators(device, cluster.seed(seed))
    net.to_device(device)
    policy = loss.BranchyLoss(net, branch_weights, percent_train_keeps)
    optimizer = cluster.optimizer(chainer.optimizers.Adam(
        alpha=alpha, beta1=adam_beta1))
    optimizer.setup(policy)
    cluster.broadcast_weights(optimizer)
    return policy, optimizer


def train(protocol, config, data, device, say, folder,
          cluster=distributed.SINGLE, extra_extensions=()):
    """Both training phases; saves and returns both models.

    One Adam optimizer serves both phases, set up on the loss link
    (:class:`~branchynet.loss.BranchyLoss`); the non-final exit heads get a
    fresh optimizer state when the joint phase starts, as the reference's
    new per-branch optimizers. In a distributed run (``cluster``) every
    rank trains, rank 0 alone saves into ``folder`` (the run's
    :class:`~branchynet.ownership.OutputFolder`; ``None`` on other ranks,
    which return ``None``). ``extra_extensions`` join both phases' trainers.
    """
    policy, optimizer = trainable(
        protocol, device, cluster, config.seed, config.alpha,
        config.adam_beta1, config.branch_weights, config.percent_train_keeps)
    net = policy.net
    logs, models = {}, {}
    epochs = {'main': config.epoch_main, 'joint': config.epoch_joint}
    done = {phase: len(read_log(os.path.join(config.out, phase + '_phase'))
                       or []) if cluster.is_root else 0 for phase in PHASES}
    ratio = joint_cost_ratio(net) if cluster.is_root and \
        not config.no_progress else None
    # A joint phase that has begun needs nothing of the main phase but its
    # model and log (the joint snapshot holds the whole state): a relay
    # (branchynet.relay) carries one snapshot only.
    skip_main = cluster.agree(config.resume and main_phase_done(config.out))
    if skip_main and cluster.is_root:
        logs['main'] = read_log(os.path.join(config.out, 'main_phase'))
        models['main'] = load_model(os.path.join(
            config.out, MODEL_FILES['main']), protocol.network())
        models['main'].to_device(device)
        say('training phase "main": done (its model and log are kept)')
    for phase, phase_epochs in epochs.items():
        if phase == 'main' and skip_main:
            continue
        if phase == 'joint':
            # The trunk and the final head keep their state; a resumed joint
            # phase then loads the saved state over this.
            fresh_optimizer_state(net.heads[:-1])
        say('training phase "{}": {} epochs'.format(phase, phase_epochs))
        loss_func = policy.main_loss if phase == 'main' else policy
        phase_out = os.path.join(config.out, phase + '_phase')
        if cluster.is_root:
            folder.make_folder(phase + '_phase')
        estimate = [RunEstimate(phase, epochs, done, ratio, say)] \
            if ratio is not None else []
        logs[phase] = train_phase(
            policy, optimizer, loss_func, (data.train_x, data.train_t),
            (data.test_x, data.test_t), phase_epochs, phase_out,
            config.batchsize, device, seed=config.seed, resume=config.resume,
            progress=not config.no_progress, phase=phase, cluster=cluster,
            extra_extensions=tuple(extra_extensions) + tuple(estimate))
        if cluster.is_root:
            with folder.open_file(MODEL_FILES[phase]) as f:
                save_model(f, net)
            models[phase] = net.copy(mode='copy')
    if not cluster.is_root:
        return None
    return TrainedModels(models['main'], models['joint'], logs)


def main_phase_done(out):
    """Whether the run in ``out`` finished its main phase and began the
    joint one (a snapshot of it is there)."""
    return os.path.isfile(os.path.join(out, MODEL_FILES['main'])) and \
        has_snapshot(os.path.join(out, 'joint_phase')) and \
        read_log(os.path.join(out, 'main_phase')) is not None


def load_trained(protocol, config, device, folder):
    """The saved models of ``config.models``, and their training logs.

    The logs come from the run's phase folders or its ``results.json``
    (empty if it has neither). The models are copied into the run's
    ``folder`` so that it holds what its results were made from.
    """
    nets = {}
    for phase, name in MODEL_FILES.items():
        path = os.path.join(config.models, name)
        nets[phase] = load_model(path, protocol.network())
        nets[phase].to_device(device)
    logs = {phase: read_log(os.path.join(config.models, phase + '_phase'))
            for phase in PHASES}
    old_results = os.path.join(config.models, 'results.json')
    if not all(logs.values()) and os.path.isfile(old_results):
        logs = reading.read_results(old_results)['training']
    for name in MODEL_FILES.values():
        folder.copy_in(os.path.join(config.models, name), name)
    return TrainedModels(nets['main'], nets['joint'], logs)


# --- 4. evaluation ------------------------------------------------------------

def main_accuracy(net, x, t, batchsize=1000):
    """Accuracy of the main network (trunk + final exit) in test mode."""
    correct = 0
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for start in range(0, len(x), batchsize):
            y = net.main_forward(net.device.send(x[start:start + batchsize]))
            correct += int((chainer.backends.cuda.to_cpu(y.array.argmax(axis=1))
                            == t[start:start + batchsize]).sum())
    return correct / len(x)


def evaluate(models, data, config, say, folder):
    """Accuracies, every exit's test outputs and the threshold sweep.

    Writes ``exit_outputs.npz`` into ``folder``. Returns the part of the
    results that does not depend on timing.
    """
    net = models.branchynet
    say('evaluating on {} test samples'.format(len(data.test_t)))
    outputs = sweep.exit_outputs(net, data.test_x, data.test_t)
    with folder.open_file('exit_outputs.npz') as f:
        outputs.save(f)
    evaluation = {
        'network': net.title,
        'baseline': {'accuracy': main_accuracy(models.baseline, data.test_x,
                                               data.test_t)},
        # What the reference reports as its baseline: the main path
        # evaluated once joint training is done (its notebook tests with
        # main=True at the end), not the main-phase model.
        'baseline_after_joint': {
            'accuracy': main_accuracy(net, data.test_x, data.test_t),
            'model': MODEL_FILES['joint']},
        'exit_accuracy': [float(a) for a in
                          (outputs.predictions == outputs.labels).mean(axis=1)],
        'sweep': {'threshold_list': list(config.threshold_list),
                  'points': sweep.run_sweep(outputs, config.threshold_list)},
        'exit1_curve': sweep.exit1_curve(outputs),
        'timing': {},
    }
    if len(data.valid_t):
        say('evaluating on {} validation samples'.format(len(data.valid_t)))
        valid = sweep.exit_outputs(net, data.valid_x, data.valid_t)
        with folder.open_file(VALIDATION_OUTPUTS) as f:
            valid.save(f)
        evaluation['validation'] = {
            'size': len(data.valid_t),
            'baseline': {'accuracy': main_accuracy(
                models.baseline, data.valid_x, data.valid_t)},
            'exit_accuracy': [float(a) for a in
                              (valid.predictions == valid.labels).mean(axis=1)],
            'sweep': {'points': sweep.run_sweep(valid, config.threshold_list)},
        }
    return evaluation, outputs


# --- 5. timing ------------------------------------------------------------------

def timing_devices(config, device):
    """The devices to time on: the run's, and the CPU as well after a GPU."""
    devices = [device]
    if device.xp is not numpy and not config.no_cpu_timing:
        devices.append(chainer.get_device('@numpy'))
    return devices


def measure_paths(models, samples, config):
    """Batch-1 cost of each exit's whole path, and the reference's figures."""
    net = models.branchynet
    return {
        'device': str(net.device),
        'exit_path_ms': timing.exit_path_costs(
            net, samples, config.timing_repeats, config.timing_warmup),
        'reference_style': timing.reference_style_costs(
            net, models.baseline, samples, config.timing_repeats,
            config.timing_warmup),
    }


def predict_times(points, paths):
    """Predicted ms per sample of every sweep point, and the frontier.

    Args:
        points: the sweep's points.
        paths: what :func:`measure_paths` returned.

    Returns:
        ``predicted_ms`` and ``reference_style_predicted_ms`` (one per
        point) and ``frontier`` (indices of the Fig. 3 curve).
    """
    path_ms = [c['median_ms'] for c in paths['exit_path_ms']]
    trunk_ms = [c['median_ms']
                for c in paths['reference_style']['trunk_to_exit']]
    predicted = [sweep.predicted_ms(p['exit_shares'], path_ms)
                 for p in points]
    return {
        'predicted_ms': predicted,
        'reference_style_predicted_ms': [
            sweep.predicted_ms(p['exit_shares'], trunk_ms) for p in points],
        'frontier': sweep.frontier([p['accuracy'] for p in points], predicted),
    }


def select_thresholds(evaluation, predicted, path_ms, config):
    """Apply every selection rule; name the threshold vectors to time.

    The knee is always among the rules (Table I's row); ``--select`` adds
    others. Each rule is applied to the validation sweep when there is one
    (and, as an oracle, to the test sweep), else to the test sweep.

    Args:
        evaluation: what :func:`evaluate` returned.
        predicted: what :func:`predict_times` returned for the test sweep.
        path_ms: measured cost of each exit's path (ms).
        config: the run configuration.

    Returns:
        ``(selections, choices)``: one dict per rule from
        :func:`branchynet.selection.choose`, and the threshold vectors to
        time, by name: ``knee``, ``user`` (``--thresholds``), and
        ``<rule>`` / ``<rule> oracle`` for the other rules.
    """
    test_points = evaluation['sweep']['points']
    validation = evaluation.get('validation')
    if validation is not None:
        valid_points = validation['sweep']['points']
        valid_times = [sweep.predicted_ms(p['exit_shares'], path_ms)
                       for p in valid_points]
        valid_baseline = validation['baseline']['accuracy']
    else:
        valid_points = valid_times = valid_baseline = None
    rules = ['knee'] + [r for r in config.select if r != 'knee']
    selections, choices = [], {}
    for rule in rules:
        chosen = selection.choose(
            rule, test_points, predicted['predicted_ms'],
            evaluation['baseline']['accuracy'], valid_points, valid_times,
            valid_baseline, config.knee_tolerance)
        if valid_points is not None and chosen['index'] is not None:
            chosen['validation'] = dict(
                valid_points[chosen['index']],
                predicted_ms=valid_times[chosen['index']])
        selections.append(chosen)
        for key, label in (('index', rule), ('oracle_index', rule + ' oracle')):
            index = chosen.get(key)
            if index is not None and not (key == 'oracle_index' and
                                          chosen['selected_on'] == 'test'):
                choices[label] = {'thresholds': test_points[index]['thresholds'],
                                  'index': index}
    if config.thresholds is not None:
        choices['user'] = {'thresholds': list(config.thresholds),
                           'index': None}
    return selections, choices


def measure_choices(models, samples, choices, outputs, paths, config):
    """Time the baseline and every choice end to end, in turns.

    Choices with the same thresholds are timed once.

    Returns:
        ``{'baseline': summary, name: point, ...}`` where each point is the
        sweep's evaluation of the choice on the whole test set, with its
        measured time, its predicted time on the timed subset and that
        subset's exit shares.
    """
    net = models.branchynet
    distinct = []
    for choice in choices.values():
        if choice['thresholds'] not in distinct:
            distinct.append(choice['thresholds'])
    rules = [EntropyThresholds(t, net.num_exits) for t in distinct]
    measured = timing.time_in_turns(
        [timing.baseline_classifier(models.baseline)] +
        [functools.partial(net.predict_sample, thresholds=rule)
         for rule in rules], samples, net.device, config.timing_repeats,
        config.timing_warmup)
    path_ms = [c['median_ms'] for c in paths['exit_path_ms']]
    subset = outputs.subset(len(samples))
    result = {'baseline': measured[0]}
    for name, choice in choices.items():
        point = sweep.evaluate(outputs, choice['thresholds'])
        on_subset = sweep.evaluate(subset, choice['thresholds'])
        point['measured'] = measured[1 + distinct.index(choice['thresholds'])]
        point['predicted_ms'] = sweep.predicted_ms(
            on_subset['exit_shares'], path_ms)
        point['timing_subset_exit_shares'] = on_subset['exit_shares']
        if choice['index'] is not None:
            point['index'] = choice['index']
        result[name] = point
    return result


def time_on_device(models, device, evaluation, outputs, samples, config, say):
    """Every timing figure of one device (``results['timing'][...]``)."""
    models = models.to_device(device)
    say('timing on {}: exit paths'.format(device))
    result = measure_paths(models, samples, config)
    result.update(predict_times(evaluation['sweep']['points'], result))
    path_ms = [c['median_ms'] for c in result['exit_path_ms']]
    selections, choices = select_thresholds(evaluation, result, path_ms,
                                            config)
    for chosen in selections:
        for reason in chosen['infeasible'].values():
            print('warning:', reason, flush=True)
    say('timing on {}: baseline and {}, end to end'.format(device, ', '.join(
        '{} thresholds {}'.format(name, c['thresholds'])
        for name, c in choices.items())))
    result.update(measure_choices(models, samples, choices, outputs, result,
                                  config))
    result['selections'] = selections
    return result


# --- the run ------------------------------------------------------------------

def run(config, extra_extensions=()):
    """Train (or resume, or load), evaluate, write result files and figures.

    Args:
        config: a checked :class:`~branchynet.config.RunConfig`.
        extra_extensions: further trainer extensions for both training phases
            (the GPU check interrupts a run with one).

    Returns:
        The results dictionary, as written to ``results.json``.

    Raises:
        UserError: the run cannot go on as asked (its folder, its data, its
            launch); nothing of anyone else's was touched.
    """
    protocol = config.spec
    say = Progress(config)
    try:
        cluster = distributed.connect(config)
        if config.models and cluster.distributed:
            raise ValueError('--models evaluates on one process: run it '
                             'without mpiexec or --communicator')
        device = chainer.get_device(cluster.device(config.device))
        device.use()
        if cluster.distributed:
            cluster.local_batchsize(config.batchsize)  # refused on every rank
        state = check_output_once(config, cluster)
        check_ranks(config, cluster)
        if config.models:
            for name in MODEL_FILES.values():  # readable, and this network's
                load_model(os.path.join(config.models, name),
                           protocol.network())
    except ValueError as e:
        raise RunError(str(e)) from None
    if not cluster.is_root:
        say.enabled = False
    folder = open_output(config, state) if cluster.is_root else None
    try:
        data = load_data(protocol, config, say)
        check_training_set(config, data, cluster)
        with chainer.using_config('branchynet_kernels', config.kernels):
            return _run_steps(protocol, config, data, device, say, cluster,
                              folder, extra_extensions)
    except BaseException:
        # a run that failed before it had trained anything leaves nothing
        if folder is not None and not holds_work(config.out):
            folder.discard()
        raise
    finally:
        if folder is not None:
            folder.close()


def check_training_set(config, data, cluster):
    """Refuse a training set the protocol cannot run on, before anything is
    written: one smaller than a batch (Chainer would count several epochs
    per step), or one the ranks cannot share equally.

    Raises:
        RunError: naming the sizes and the way out.
    """
    count = len(data.train_t)
    if config.models:
        return
    if count < config.batchsize:
        raise RunError(
            'the training set has {} sample(s), fewer than the batch of {}: '
            'every step would hold some samples more than once and an epoch '
            'would not be an epoch. Use a larger --train-size (or a smaller '
            '--validation-size), or a smaller --batchsize'.format(
                count, config.batchsize))
    if count % cluster.size:
        raise RunError(
            'the training set of {} samples does not split into {} equal '
            'shards: every sample must be seen exactly once per epoch; choose '
            '--train-size or --validation-size so that the {} ranks divide '
            'it'.format(count, cluster.size, cluster.size))


def check_ranks(config, cluster):
    """A resumed run continues on as many ranks as it started on.

    Raises:
        ValueError: ``run.json`` records another number of ranks.
    """
    values = reading.read_run_file(config.out) if config.resume else None
    if values is not None:
        started = values.get('distributed', {}).get('ranks', 1)
        if started != cluster.size:
            raise ValueError('{} was trained on {} rank(s); resume it on {}, '
                             'not {}'.format(config.out, started, started,
                                             cluster.size))


def _run_steps(protocol, config, data, device, say, cluster, folder,
               extra_extensions):
    if config.models:
        # read before earlier results go: --models may name --out itself,
        # and a run folder may hold its logs only in its results.json
        say('evaluating the saved models of', config.models)
        models = load_trained(protocol, config, device, folder)
    if cluster.is_root:
        history = record_config(folder, config, cluster)
        report.remove_results(folder)
    if not config.models:
        models = train(protocol, config, data, device, say, folder, cluster,
                       extra_extensions)
    if not cluster.is_root:
        return None  # evaluation, timing and files are rank 0's
    results = {
        'kind': reading.RUN_KIND,
        'baseline_name': protocol.baseline_name,
        'protocol': protocol.key,
        'config': config.to_dict(),
        'data': data.info,
        'environment': environment.describe(device),
        'distributed': cluster.describe(),
        'training': models.training,
        'kernels': {'training': history, 'evaluation': config.kernels},
    }
    evaluation, outputs = evaluate(models, data, config, say, folder)
    results.update(evaluation)
    if not config.skip_timing:
        count = config.timing_samples or len(data.test_t)
        samples = timing.as_samples(data.test_x[:count])
        results['timing_samples'] = len(samples)
        for d in timing_devices(config, device):
            name = 'cpu' if d.xp is numpy else 'gpu'
            results['timing'][name] = time_on_device(
                models, d, results, outputs, samples, config, say)
    report.write_reports(results, folder)
    if results['timing']:
        draw_figures(results, folder)
    folder.set(complete=True)  # last: a part is complete only with this
    note = report.divergence_note(results)
    if note:
        print(note, flush=True)
    say('results in', config.out)
    if results['timing']:
        print(report.table1_markdown(results))
    return results


def draw_figures(results, folder):
    """The figures of ``results`` into the ``figures/`` sub-folder of the
    run's ``folder``, or a note when matplotlib is missing."""
    if not figures.available():
        print('note: matplotlib is not installed here: no figures; draw them '
              'from the result files with experiments/make_figures.py',
              flush=True)
        return []
    with report.figures_folder(folder) as figures_out:
        return figures.run_figures(results, figures_out)


FIG5_FOLDER = 'exit1_{}conv'


def run_fig5(configs, out):
    """Run the Fig. 5 variants (``configs``) into their folders under ``out``,
    then write the summary and the figure.

    ``out`` is an output folder of its own (kind ``branch-layers``); each
    variant's folder inside it is a run folder. Under ``mpiexec`` the
    variants train on every rank and rank 0 alone writes.

    Returns:
        The summary dictionary (``None`` on ranks other than 0).
    """
    if distributed.launch_rank() != 0:
        for config in configs:
            run(config)
        return None
    with ownership.OutputFolder.open(out, 'branch-layers',
                                     foreign_ok=False) as folder:
        folder.set(complete=False)
        for config in configs:
            folder.make_folder(os.path.basename(config.out))
        results = [run(config) for config in configs]
        return write_fig5_summary(results, folder)


def write_fig5_summary(runs, folder):
    """``summary.json`` and Fig. 5 from the results of the variant runs.

    Args:
        runs: results dictionaries of the Fig. 5 variants.
        folder: the :class:`~branchynet.ownership.OutputFolder` holding their
            run folders.

    Returns:
        The summary dictionary.
    """
    summary = {'kind': reading.SUMMARY_KIND, 'variants': []}
    for results in runs:
        convs = protocols.get(results['protocol']).network.keywords[
            'branch1_convs']
        summary['variants'].append({
            'branch1_convs': convs,
            'final_exit_accuracy': results['exit_accuracy'][-1],
            'exit1_accuracy': results['exit_accuracy'][0],
            'baseline_accuracy': results['baseline']['accuracy'],
            'results': os.path.join(results['config']['out'], 'results.json'),
        })
    for key in ('data', 'config', 'environment'):
        summary[key] = runs[-1][key]
    folder.write_json('summary.json', summary)
    draw_figures(summary, folder)
    folder.set(complete=True)
    for v in summary['variants']:
        print('exit 1 with {} conv: final exit {:.2f} %, exit 1 {:.2f} %'.format(
            v['branch1_convs'], 100 * v['final_exit_accuracy'],
            100 * v['exit1_accuracy']))
    return summary
