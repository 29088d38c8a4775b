"""One run's folder: its layout, what it holds, and the rules for using it.

Every name of a run folder is spelled here and nowhere else
(:class:`RunFolder`)::

    run.json                    the configuration (resume reads it)
    main_phase/, joint_phase/   Chainer Trainer logs and the latest snapshot
    baseline.npz                main network after phase 1 (scored from this)
    branchynet.npz              all exits after phase 2
    exit_outputs.npz            every exit's prediction and entropy per test sample
    results.json                everything (config, split, versions, curves, sweep, ...)
    sweep.csv, table1.csv, table1.md, figures/, port_kit/

and the rules a run follows before it writes anything (:func:`check_output`):
a new run needs an empty or new folder, ``--resume`` a run of the same
network, ``--models A`` an empty folder, ``A`` itself or an earlier
evaluation of ``A``; a folder written before folders kept a record is
adopted. The folder is then opened (:func:`open_output`) as an
:class:`~branchynet.utils.ownership.OutputFolder` of kind :data:`KIND`.
"""
import functools
import os

from branchynet import distributed
from branchynet.paper import protocols
from branchynet.runs import reading
from branchynet.runs.config import RunConfig
from branchynet.training import (
    PHASES,
    check_snapshot,
    has_snapshot,
    latest_snapshot,
    phase_log,
)
from branchynet.serialization import copy_main_network, load_model
from branchynet.utils import ownership
from branchynet.utils.errors import FileProblem, OwnershipError, UserError

RUN_FILE = 'run.json'
KIND = 'run'  # the kind of output folder (ownership) a run writes
MODEL_FILES = {'main': 'baseline.npz', 'joint': 'branchynet.npz'}
RESULTS = 'results.json'
EXIT_OUTPUTS = 'exit_outputs.npz'
VALIDATION_OUTPUTS = 'exit_outputs_validation.npz'
# what an evaluation writes (and an evaluation again replaces)
RESULT_FILES = (RESULTS, 'sweep.csv', 'table1.csv', 'table1.md',
                EXIT_OUTPUTS, VALIDATION_OUTPUTS)
FIGURES_DIR = 'figures'
PORT_KIT = 'port_kit'
# sub-folders whose contents Chainer's Trainer manages
PHASE_FOLDERS = {phase: phase + '_phase' for phase in PHASES}
# What a run folder written before folders kept a record of their outputs
# may hold; such a folder is adopted (recorded as this program's) when it is
# resumed or re-evaluated, if it holds nothing else.
LEGACY_ENTRIES = (RUN_FILE, FIGURES_DIR, PORT_KIT) + tuple(
    PHASE_FOLDERS.values()) + tuple(MODEL_FILES.values()) + RESULT_FILES
TRAINED_ON = 'training_distributed'
KERNEL_HISTORY = 'kernels_by_epoch'


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


class RunFolder:
    """A run's folder: where each of its files lies, and what it holds.

    What it holds is read when first asked (and kept): make a new
    ``RunFolder(path)`` to look again. Reading never writes.

    Args:
        path: the folder (it need not exist).
    """

    def __init__(self, path):
        self.path = path

    # --- the layout ------------------------------------------------------------

    def file(self, name):
        """The path of ``name`` in the folder."""
        return os.path.join(self.path, name)

    def phase_folder(self, phase):
        """The Trainer's folder of ``phase`` (``'main'`` or ``'joint'``)."""
        return self.file(PHASE_FOLDERS[phase])

    def model(self, phase):
        """The path of the model ``phase`` left."""
        return self.file(MODEL_FILES[phase])

    def log(self, phase):
        """The per-epoch log of ``phase`` (a list), or ``None``."""
        return phase_log(self.phase_folder(phase))

    def latest_snapshot(self, phase):
        """The snapshot ``phase`` resumes from, or ``None``."""
        return latest_snapshot(self.phase_folder(phase))

    # --- what it holds -----------------------------------------------------------

    @functools.cached_property
    def entries(self):
        """What is in the folder (the record of outputs and the temporary
        files of killed writers aside)."""
        return ownership.visible_entries(self.path) \
            if os.path.isdir(self.path) else []

    @functools.cached_property
    def record(self):
        """Its record of outputs (:mod:`branchynet.utils.ownership`), or
        ``None``."""
        return ownership.read_record(self.path) \
            if os.path.isdir(self.path) else None

    @functools.cached_property
    def stored(self):
        """The configuration in its ``run.json``, or ``None``."""
        return stored_config(self.path) if os.path.isdir(self.path) else None

    @property
    def snapshots(self):
        """Whether a training phase left a snapshot."""
        return any(has_snapshot(self.phase_folder(p)) for p in PHASES)

    @property
    def models(self):
        """Whether it holds a saved model."""
        return any(os.path.isfile(self.model(p)) for p in PHASES)

    @property
    def legacy(self):
        """A run folder of an earlier version: no record, only a run's files."""
        return self.record is None and self.stored is not None and \
            set(self.entries) <= set(LEGACY_ENTRIES)

    @property
    def is_run(self):
        """Whether the folder holds a run of this program's."""
        return self.stored is not None and (
            self.legacy or (self.record or {}).get('kind') == KIND)

    @property
    def holds_work(self):
        """Whether it holds anything a run would want back: a snapshot or
        a model."""
        return self.snapshots or self.models

    def main_phase_done(self):
        """Whether the run finished its main phase and began the joint one
        (a snapshot of it is there)."""
        return os.path.isfile(self.model('main')) and \
            has_snapshot(self.phase_folder('joint')) and \
            self.log('main') is not None

    def describe(self):
        """``'a b_lenet run (finished)'`` and the like, for messages."""
        what = 'an evaluation of {}'.format(self.stored.models) \
            if self.stored.models else 'a {} run'.format(self.stored.protocol)
        state = 'finished' if (self.record or {}).get('complete') or \
            (self.legacy and os.path.isfile(self.file(RESULTS))) \
            else 'trained, not evaluated' if self.models \
            else 'in progress' if self.snapshots else 'not started'
        return '{} ({})'.format(what, state)


# --- the rules -----------------------------------------------------------------

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
        The :class:`RunFolder` of ``config.out``.

    Raises:
        UserError: naming what is in the folder and the way out.
    """
    ownership.check_out_path(config.out)
    state = RunFolder(config.out)
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
    if not state.entries and (state.record or {}).get('kind') == KIND:
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
            for name in RESULT_FILES)):
        raise UserError(
            '--resume: {} holds {} but no training snapshot: there is '
            'nothing to continue. Evaluate its models again with --models {} '
            '(into another --out, or --out {} to replace its results)'.format(
                config.out, state.describe(), config.out, config.out))
    for phase in PHASES:
        latest = state.latest_snapshot(phase)
        if latest is not None:
            check_snapshot(latest)
        state.log(phase)


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
    """Open and lock the run folder ``path`` (its :class:`RunFolder`
    ``state``); one of an earlier version is adopted first: its files are
    recorded as this program's (and those of its ``figures/``), so that
    whatever writes into it next (a run, an export) keeps it a run that
    resumes."""
    folder = ownership.OutputFolder.open(
        path, KIND, flag=flag, foreign_ok=False,
        adopt=LEGACY_ENTRIES if state.legacy else (),
        opaque=tuple(PHASE_FOLDERS.values()) + (PORT_KIT, FIGURES_DIR))
    figures_path = folder.file(FIGURES_DIR)
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
                                 list(RESULT_FILES))
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
        done = len(RunFolder(config.out).log(phase) or [])
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


def main_network_from(path, net):
    """Copy the main network of the run in ``path`` (its saved main-phase
    model) into ``net``; that run's main-phase log (``[]`` if it has none).

    Raises:
        UserError: ``path`` is not such a run, or its main network is not
            ``net``'s.
    """
    source = RunFolder(path)
    if source.stored is None:
        raise UserError('--main-from {}: not a run folder'.format(path))
    trained = load_model(source.model('main'),
                         protocols.get(source.stored.protocol).network())
    try:
        copy_main_network(trained, net)
    except ValueError as e:
        raise UserError('--main-from {}: {}'.format(path, e)) from None
    return source.log('main') or []
