"""The whole paper on one machine: every part in order, resumable, with estimates.

Parts, each into its own folder under ``--out``:

============  ====================  =========================================
part          folder                what
============  ====================  =========================================
check         check/                the GPU check (:mod:`branchynet.reproduce.gpu_check`);
                                    only when asked for (``--only check``)
lenet         b_lenet/              B-LeNet, reference protocol
alexnet       b_alexnet/            B-AlexNet, reference protocol
resnet        b_resnet110/          B-ResNet-110, reference protocol
fig5          alexnet_branch_layers/  the five Fig. 5 variants, then Fig. 5
benchmark     benchmarks/           this project against the reference design
============  ====================  =========================================

A part is complete when its folder says so (a run marks its folder complete
last, after its figures) and its configuration is the plan's: then it is
skipped; one that was interrupted is resumed. A part folder that holds
another network's run, or a run made with another configuration (a smoke
run in a real plan, say), stops the plan with the difference named: nothing
is overwritten. Before starting, the duration of each part on this
device is estimated from a few timed training steps (:func:`estimate`).
The combined Table I of everything under ``--out`` is written last
(:mod:`branchynet.table1`).

The smoke profile (``smoke=True``) runs every part on tiny data with the
shortest schedules — the CPU test that the command works end to end.
"""
import atexit
import dataclasses
import os
import shutil
import tempfile

import chainer
import numpy

from branchynet import distributed, timing
from branchynet.bench import benchmark
from branchynet.data import synthetic
from branchynet.paper import protocols
from branchynet.reproduce import gpu_check
from branchynet.runs import config as config_module
from branchynet.runs import fig5, pipeline, run_folder, table1
from branchynet.runs.config import QUICK, RunConfig
from branchynet.utils import ownership
from branchynet.utils.errors import UserError

PARTS = ('check', 'lenet', 'alexnet', 'resnet', 'fig5', 'benchmark')
DEFAULT_PARTS = ('lenet', 'alexnet', 'resnet', 'fig5', 'benchmark')
# Parts that do not train: under mpiexec, rank 0 runs them alone.
ROOT_ONLY_PARTS = ('check', 'benchmark')
NETWORK_PARTS = {'lenet': 'b_lenet', 'alexnet': 'b_alexnet',
                 'resnet': 'b_resnet110'}
FOLDERS = {'check': 'check', 'lenet': 'b_lenet', 'alexnet': 'b_alexnet',
           'resnet': 'b_resnet110', 'fig5': 'alexnet_branch_layers',
           'benchmark': 'benchmarks'}
# What a stored run must share with the plan to count as the plan's part:
# what shaped its models, and whether it was a smoke run.
PLAN_FIELDS = config_module.shaping_fields() + ('quick',)
# The smoke profile: --quick, and smaller still.
SMOKE = dict(QUICK, train_size=8, test_size=4, batchsize=4,
             timing_samples=2, timing_warmup=1)
SMOKE_FIG5_CONVS = (0, 1)
TABLE_FILES = ('table1.md', 'table1.csv')


@dataclasses.dataclass(frozen=True)
class Plan:
    """What ``reproduce_paper.py`` was asked to do.

    Attributes:
        out: the folder holding every part's folder.
        device: Chainer device specifier (``'@numpy'``, ``'@cupy:0'``).
        data_dir, test_batch, cache_dir, unofficial_data: the data, as for
            the run scripts; ``test_batch`` applies to the CIFAR-10 parts.
        parts: the parts to run, in :data:`PARTS` order.
        smoke: the tiny smoke profile (CPU tests).
        no_progress: no progress bars.
    """
    out: str
    device: str = '@numpy'
    data_dir: str = None
    test_batch: str = None
    cache_dir: str = None
    unofficial_data: bool = False
    parts: tuple = DEFAULT_PARTS
    smoke: bool = False
    no_progress: bool = False

    def folder(self, part):
        """The output folder of ``part``."""
        return os.path.join(self.out, FOLDERS[part])


def planned_config(plan, key, out):
    """The :class:`RunConfig` the plan starts one network part (or a Fig. 5
    variant) with."""
    dataset = protocols.get(key).dataset
    values = dict(out=out, device=plan.device, data_dir=plan.data_dir,
                  unofficial_data=plan.unofficial_data,
                  no_progress=plan.no_progress)
    if dataset == 'cifar10':
        values.update(test_batch=plan.test_batch, cache_dir=plan.cache_dir)
    if plan.smoke:
        values.update(SMOKE, quick=True)
    if key.startswith('b_alexnet_exit1_'):
        values.update(skip_timing=True)
    return RunConfig.for_protocol(key, **values)


def run_config(plan, key, out):
    """The :class:`RunConfig` to run one network part (or a Fig. 5 variant)
    with: the planned one, or, in a folder that holds a run of the plan's
    already (:func:`check_part`), that run's as it was started, resumed."""
    config = planned_config(plan, key, out)
    stored = check_part(config)
    if stored is not None:
        config = stored.replace(resume=True, out=out,
                                no_progress=plan.no_progress,
                                device=plan.device, data_dir=plan.data_dir)
    return config


def check_part(config):
    """The stored configuration of the run in ``config.out`` (or ``None``),
    after checking that it is the run ``config`` plans.

    Raises:
        UserError: the folder holds another network's run, a run made with
            another configuration, or files this program did not write.
    """
    state = run_folder.RunFolder(config.out)
    if not state.entries:
        return None
    if not state.is_run:
        raise UserError(
            '{} is not empty and holds no run of this program ({}): move it '
            'away or choose another --out'.format(
                config.out, ownership.listing(config.out)))
    stored = state.stored
    differences = ['{} {!r} (the plan has {!r})'.format(
        name, getattr(stored, name), getattr(config, name))
        for name in PLAN_FIELDS if getattr(stored, name) != getattr(config,
                                                                    name)]
    if differences:
        raise UserError(
            '{} holds {} made with another configuration than this plan\'s: '
            '{}. Move it away or choose another --out'.format(
                config.out, state.describe(), '; '.join(differences)))
    return stored


def is_complete(plan, part):
    """Whether ``part``'s results are all there, marked complete, and the plan's.

    Raises:
        UserError: a network part's folder holds a run that is not the
            plan's (:func:`check_part`).
    """
    folder = plan.folder(part)
    record = ownership.read_record(folder) if os.path.isdir(folder) else None
    if record is None:
        return False
    if part in NETWORK_PARTS:
        check_part(planned_config(plan, NETWORK_PARTS[part], folder))
    if part in NETWORK_PARTS or part == 'fig5':
        return bool(record.get('complete')) and all(
            os.path.isfile(os.path.join(folder, *name.split('/')))
            for name in record['files'])
    names = {'check': gpu_check.CHECK_FILES,
             'benchmark': benchmark.report_files(
                 'cpu' if plan.device == '@numpy' else 'gpu')}[part]
    return all(name in record['files'] and
               os.path.isfile(os.path.join(folder, name)) for name in names)


def run_part(plan, part, device, say, root=True):
    """Run one part into its folder; returns what it wrote (a dict).

    ``root`` is False on the further ranks of an MPI launch: they train
    with rank 0 and write nothing (:func:`run`).
    """
    folder = plan.folder(part)
    if part == 'check':
        return gpu_check.run(device, folder, light=plan.smoke, say=say)
    if part in NETWORK_PARTS:
        return pipeline.run(run_config(plan, NETWORK_PARTS[part], folder))
    if part == 'fig5':
        convs = SMOKE_FIG5_CONVS if plan.smoke else protocols.FIG5_CONVS
        return fig5.run_fig5([run_config(
            plan, protocols.fig5_variant(k).key,
            os.path.join(folder, fig5.FIG5_FOLDER.format(k)))
            for k in convs], folder) or {}
    profile = 'smoke' if plan.smoke else (
        'quick' if device.xp is numpy else 'full')
    return benchmark.run(benchmark.NETWORKS, profile, device, folder, say)


# --- estimates ------------------------------------------------------------------

def network_estimate(plan, key, device, steps=3):
    """Estimated minutes of one network run, from timed training steps.

    Training: epochs x steps per epoch x measured step time; evaluation
    after every epoch adds about a third of a step per test batch of the
    same size; batch-1 timing is not included (it is minutes at most).
    """
    config = planned_config(plan, key, os.path.join(plan.out, 'estimate'))
    protocol = protocols.get(key)
    train = config.train_size or (
        protocols.DATASET_SIZES[protocol.dataset]['train'] -
        (10000 if config.test_batch not in (None, 'test_batch') else 0))
    train -= config.validation_size
    test = config.test_size or protocols.DATASET_SIZES[protocol.dataset][
        'test']
    batch = min(config.batchsize, train)
    seconds = benchmark.step_seconds(key, device, batch, steps)
    per_epoch = {phase: -(-train // batch) * s + (test / batch) * s / 3
                 for phase, s in seconds.items()}
    total = (config.epoch_main * per_epoch['main'] +
             config.epoch_joint * per_epoch['joint'])
    return {'network': key, 'batchsize': batch, 'step_s': seconds,
            'epoch_s': per_epoch, 'epochs': (config.epoch_main,
                                             config.epoch_joint),
            'minutes': total / 60}


def estimate(plan, device, say=print):
    """Estimated minutes per part on ``device`` (``None``: not estimated).

    Returns:
        ``{part: {'minutes': ..., 'how': ...}}`` for the plan's parts.
    """
    estimates = {}
    measured = {}
    for part in plan.parts:
        if part in NETWORK_PARTS or part == 'fig5':
            key = NETWORK_PARTS.get(part, 'b_alexnet')
            if key not in measured:
                say('estimating {}: timing a few training steps (this takes '
                    'a minute or more on a CPU)'.format(key))
                measured[key] = network_estimate(plan, key, device,
                                                 steps=1 if plan.smoke else 3)
                say('estimated {}: {} ({:.3g} s a main step, {:.3g} s a '
                    'joint step)'.format(
                        key, timing.duration_text(
                            60 * measured[key]['minutes']),
                        measured[key]['step_s']['main'],
                        measured[key]['step_s']['joint']))
            guess = dict(measured[key])
            if part == 'fig5':
                count = len(SMOKE_FIG5_CONVS if plan.smoke
                            else protocols.FIG5_CONVS)
                guess['minutes'] *= count
                guess['how'] = '{} x the B-AlexNet estimate'.format(count)
            else:
                guess['how'] = ('{} + {} epochs at {:.3g} / {:.3g} s per '
                                'epoch'.format(guess['epochs'][0],
                                               guess['epochs'][1],
                                               guess['epoch_s']['main'],
                                               guess['epoch_s']['joint']))
            estimates[part] = guess
        elif part == 'check':
            estimates[part] = {'minutes': None,
                               'how': 'not estimated (the GPU tests, a quick '
                                      'run and one timed B-ResNet-110 '
                                      'epoch; never measured yet)'}
        else:
            estimates[part] = {'minutes': None,
                               'how': 'not estimated (minutes on a GPU, '
                                      'about 3 on a 2-core CPU, quick profile)'}
        if is_complete(plan, part):
            estimates[part]['how'] += '; complete, will be skipped'
    return estimates


def _quiet(*_):
    """``say`` of the further ranks of an MPI launch."""


def estimate_text(estimates):
    """The estimates as a short table, with the total of those estimated."""
    lines = ['part        estimate    how']
    for part, e in estimates.items():
        shown = '-' if e['minutes'] is None else \
            timing.duration_text(60 * e['minutes'])
        lines.append('{:<11} {:<11} {}'.format(part, shown, e['how']))
    known = [e['minutes'] for e in estimates.values()
             if e['minutes'] is not None]
    if known:
        lines.append('{:<11} {:<11} {}'.format(
            'total', timing.duration_text(60 * sum(known)),
            'of the parts estimated'
            + (', the others not included' if len(known) < len(estimates)
               else '')))
    return '\n'.join(lines)


def run(plan, estimate_only=False, say=print):
    """Run the plan's parts in order, then the combined Table I.

    Args:
        plan: a :class:`Plan`.
        estimate_only: print the estimates and stop.
        say: called with progress messages.

    Returns:
        ``{'estimates': ..., 'parts': {part: 'skipped' | 'done'},
        'table1': rows}``.
    """
    # Under mpiexec every rank runs this: the training parts run on all
    # ranks (data-parallel, see branchynet.distributed); estimates, the
    # GPU check, the benchmark, the table and every message are rank 0's.
    root = distributed.launch_rank() == 0
    if not root:
        say = _quiet
    device = chainer.get_device(plan.device)
    if root:
        device.use()
        with ownership.OutputFolder.open(plan.out, 'files') as folder:
            return _run_plan(plan, estimate_only, say, device, root, folder)
    return _run_plan(plan, estimate_only, say, device, root, None)


def _run_plan(plan, estimate_only, say, device, root, folder):
    if root:
        folder.check_replaceable(TABLE_FILES)  # before hours of work
    if plan.smoke and plan.data_dir is None:
        if root:
            data = smoke_data(folder)
        else:  # the same seeded files, written where rank 0 cannot collide
            scratch = tempfile.mkdtemp(prefix='branchynet-smoke-')
            atexit.register(shutil.rmtree, scratch, True)
            data = smoke_data(ownership.OutputFolder.open(scratch, 'files',
                                                          lock=False))
        plan = dataclasses.replace(plan, data_dir=data, unofficial_data=True,
                                   test_batch='data_batch_5')
    estimates = estimate(plan, device, say) if root else {}
    say(estimate_text(estimates))
    summary = {'estimates': estimates, 'parts': {}}
    if estimate_only:
        return summary
    for part in plan.parts:
        if is_complete(plan, part):
            say('{}: complete in {}, skipped'.format(part, plan.folder(part)))
            summary['parts'][part] = 'skipped'
            continue
        if not root and part in ROOT_ONLY_PARTS:
            summary['parts'][part] = 'rank 0'
            continue
        say('{}: running into {}'.format(part, plan.folder(part)))
        if root:
            folder.make_folder(FOLDERS[part])
        run_part(plan, part, device, say, root)
        summary['parts'][part] = 'done'
    runs = [plan.folder(p) for p in ('lenet', 'alexnet', 'resnet')
            if is_complete(plan, p)]
    if runs and root:
        summary['table1'] = table1.write(runs, folder)
        say('combined Table I: {}'.format(os.path.join(plan.out,
                                                       'table1.md')))
    return summary


def smoke_data(folder):
    """Tiny synthetic MNIST and CIFAR-10 for the smoke profile, in the
    sub-folder ``smoke_data`` of ``folder`` (an
    :class:`~branchynet.utils.ownership.OutputFolder`); returns its path."""
    root = folder.file('smoke_data')
    if 'smoke_data' not in folder.record['folders']:
        folder.make_folder('smoke_data')
        synthetic.write_mnist(os.path.join(root, 'mnist'), train=128,
                              test=32)
        synthetic.write_cifar10(os.path.join(root, 'cifar-10-batches-bin'),
                                per_batch=24, test=False)
    return root
