"""The paper's experiment for one network, end to end, from a RunConfig.

:func:`run` goes through the steps in order; each step is a function of the
configuration and of what earlier steps returned:

1. the output folder is checked
   (:func:`branchynet.runs.run_folder.check_output`), then :func:`load_data`
   loads and splits the dataset; only then is anything written (the
   folder and its ``run.json``: :func:`~branchynet.runs.run_folder.record_config`);
2. :func:`train` (or :func:`load_trained` with ``--models``) — both
   training phases: the main network's model and every exit's;
3. evaluation and timing (:mod:`branchynet.runs.evaluation`): accuracies,
   every exit's outputs, the threshold sweep, per timed device the cost of
   each exit's path, the selected thresholds and their measured time;
4. result files (:mod:`branchynet.runs.report`) and figures
   (:mod:`branchynet.runs.figures`).

The folder's layout: :mod:`branchynet.runs.run_folder`.
"""
import dataclasses
import os

import chainer
import numpy

from branchynet import costs, distributed, loss, timing
from branchynet.data import datasets
from branchynet.runs import evaluation as steps
from branchynet.runs import figures, reading, report
from branchynet.runs.run_folder import (
    MODEL_FILES,
    PHASE_FOLDERS,
    RunFolder,
    check_output_once,
    main_network_from,
    open_output,
    record_config,
)
from branchynet.serialization import load_model, save_model
from branchynet.training import (
    PHASES,
    EveryEpoch,
    fresh_optimizer_state,
    train_phase,
)
from branchynet.utils import environment
from branchynet.utils.errors import UserError


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


# --- 2. data ------------------------------------------------------------------

def load_data(protocol, config, say=None, keep_raw=False):
    """The protocol's dataset as the configuration splits it (see
    :func:`branchynet.data.datasets.load_cifar10` for ``say`` and
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
    priority = chainer.training.PRIORITY_READER

    def __init__(self, phase, epochs, done, joint_ratio, say):
        # keeps no state in the snapshot: a run that did not have this
        # extension when it was saved resumes with it
        self.trigger = EveryEpoch()
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
    stages, heads = costs.multiply_adds(net)
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
    :class:`~branchynet.utils.ownership.OutputFolder`; ``None`` on other ranks,
    which return ``None``). ``extra_extensions`` join both phases' trainers.
    """
    policy, optimizer = trainable(
        protocol, device, cluster, config.seed, config.alpha,
        config.adam_beta1, config.branch_weights, config.percent_train_keeps)
    net = policy.net
    logs, models = {}, {}
    epochs = {'main': config.epoch_main, 'joint': config.epoch_joint}
    run = RunFolder(config.out)
    done = {phase: len(run.log(phase)
                       or []) if cluster.is_root else 0 for phase in PHASES}
    ratio = joint_cost_ratio(net) if cluster.is_root and \
        not config.no_progress else None
    # A joint phase that has begun needs nothing of the main phase but its
    # model and log (the joint snapshot holds the whole state): a relay
    # (branchynet.runs.relay) carries one snapshot only.
    skip_main = cluster.agree(config.resume and run.main_phase_done())
    if config.main_from is not None and not skip_main:
        # every rank takes the same weights; the joint phase starts from them
        taken_log = main_network_from(config.main_from, net)
        if cluster.is_root:
            logs['main'] = taken_log
            with folder.open_file(MODEL_FILES['main']) as f:
                save_model(f, net)
            models['main'] = net.copy(mode='copy')
            say('training phase "main": not trained; the main network of {} '
                '({} epochs)'.format(config.main_from, len(taken_log)))
        skip_main = True
    elif skip_main and cluster.is_root:
        logs['main'] = run.log('main')
        models['main'] = load_model(run.model('main'), protocol.network())
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
        phase_out = run.phase_folder(phase)
        if cluster.is_root:
            folder.make_folder(PHASE_FOLDERS[phase])
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
    logs = {phase: RunFolder(config.models).log(phase)
            for phase in PHASES}
    old_results = os.path.join(config.models, 'results.json')
    if not all(logs.values()) and os.path.isfile(old_results):
        logs = reading.read_results(old_results)['training']
    for name in MODEL_FILES.values():
        folder.copy_in(os.path.join(config.models, name), name)
    return TrainedModels(nets['main'], nets['joint'], logs)


# --- the run ------------------------------------------------------------------

def run(config, extra_extensions=()):
    """Train (or resume, or load), evaluate, write result files and figures.

    Args:
        config: a checked :class:`~branchynet.runs.config.RunConfig`.
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
        if folder is not None and not RunFolder(config.out).holds_work:
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
        'kind': reading.RESULTS_KIND,
        'baseline_name': protocol.baseline_name,
        'protocol': protocol.key,
        'config': config.to_dict(),
        'data': data.info,
        'environment': environment.describe(device),
        'distributed': cluster.describe(),
        'training': models.training,
        'kernels': {'training': history, 'evaluation': config.kernels},
    }
    evaluation, outputs = steps.evaluate(models, data, config, say,
                                         folder)
    results.update(evaluation)
    if not config.skip_timing:
        count = config.timing_samples or len(data.test_t)
        samples = timing.as_samples(data.test_x[:count])
        results['timing_samples'] = len(samples)
        for d in steps.timing_devices(config, device):
            name = 'cpu' if d.xp is numpy else 'gpu'
            results['timing'][name] = steps.time_on_device(
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
