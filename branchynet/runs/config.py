"""One run's configuration: a frozen dataclass, validated whole when it is made.

The command line (:mod:`branchynet.runs.cli`) builds a :class:`RunConfig` once;
the pipeline (:mod:`branchynet.runs.pipeline`) reads it and nothing else. Every
value is checked here — types, ranges, finiteness, names — before any data
is loaded or any file written, so that a bad value never costs a training
run. :func:`check_paths` adds the checks that look at the machine (folders,
the device).

A run writes its configuration to ``run.json`` in its output folder; a
resumed run (or an evaluation of saved models) starts from that stored
configuration: :func:`merge_stored` applies what the command line changed
and refuses what may not change.
"""
import dataclasses
import functools
import math
import numbers
import os
import typing

from branchynet import exit_rule, kernels, loss, selection
from branchynet.data import datasets
from branchynet.paper import protocols
from branchynet.utils import ownership
from branchynet.utils.errors import UserError

# What a resumed run may change: how it is evaluated, timed and shown, and
# where the data and the device are. Everything else shaped the models.
CHANGEABLE_ON_RESUME = (
    'resume', 'models', 'out', 'device', 'data_dir', 'cache_dir', 'thresholds',
    'threshold_list', 'knee_tolerance', 'select', 'timing_samples',
    'timing_repeats',
    'timing_warmup', 'no_cpu_timing', 'skip_timing', 'no_progress', 'quick',
    'communicator', 'kernels')
# Everything else shaped the models: a run made with other values of these
# is another run (a resume refuses it; reproduce_paper.py does not take it
# for its part).
def shaping_fields():
    """The fields of :class:`RunConfig` that shaped a run's models."""
    return tuple(f.name for f in dataclasses.fields(RunConfig)
                 if f.name not in CHANGEABLE_ON_RESUME)


# On/off switches of how a run is shown and evaluated: a command line cannot
# switch them off explicitly, so a resumed run takes them from the command
# line as given, not from the stored configuration.
SWITCHES = ('skip_timing', 'no_cpu_timing', 'no_progress')
# What --quick (a smoke run of minutes) changes, unless given explicitly.
QUICK = {'epoch_main': 1, 'epoch_joint': 1, 'train_size': 1024,
         'test_size': 256, 'timing_samples': 16, 'timing_repeats': 1,
         'timing_warmup': 2}
MAX_TIMING_REPEATS = 1000
MAX_TIMING_WARMUP = 100000
MAX_SEED = 2 ** 32 - 1  # NumPy's RandomState takes seeds below 2**32
# Ten thousand epochs of the smallest network is weeks of a CPU: a larger
# number is a typo, not a plan.
MAX_EPOCHS = 10000
# The sweep evaluates every combination of the threshold list over the
# non-final exits: the reference's largest is 17**2 = 289. Beyond this the
# sweep takes minutes and its results hundreds of megabytes.
MAX_SWEEP_POINTS = 20000
SWEEP_POINT_BYTES = 700  # one point in results.json and sweep.csv, measured


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run of a paper experiment.

    Attributes:
        protocol: key of a :mod:`branchynet.paper.protocols` entry.
        out: output folder.
        device: ``'@numpy'`` or ``'@cupy:<id>'`` (normalised from Chainer's
            device specifiers, e.g. ``-1`` or ``0``).
        resume: continue the run in ``out``.
        models: evaluate the saved models of this run folder instead of
            training (``None``: train).
        data_dir, test_batch, preprocessing, cache_dir: the data (see
            :mod:`branchynet.data.datasets`).
        unofficial_data: accept dataset files that are not the official
            ones (synthetic data for smoke runs, other data in the formats).
        train_size, test_size: use only the first samples (``None``: all).
        validation_size: training samples held out for threshold selection.
        batchsize, epoch_main, epoch_joint, seed, alpha, adam_beta1: training.
        branch_weights, percent_train_keeps: the loss policy.
        thresholds: an extra threshold vector to evaluate and time.
        threshold_list: values combined over the non-final exits.
        knee_tolerance: knee rule tolerance, in accuracy points.
        select: threshold selection rules (:mod:`branchynet.selection`),
            e.g. ``('knee', 'latency:0.8')``; the knee is always applied.
        timing_samples, timing_repeats, timing_warmup: batch-1 timing
            (``timing_samples = 0``: the whole test set).
        no_cpu_timing: with a GPU, time on the GPU only.
        skip_timing: no timing (no Table I).
        quick: the values were shortened for a smoke run.
        no_progress: no progress bar or per-epoch table.
        communicator: ChainerMN communicator of a distributed run (see
            :mod:`branchynet.distributed`); ``None``: one process, or the
            default communicator under an MPI launcher.
        kernels: ``'fast'`` (convolution and max pooling without Chainer's
            copies on the CPU, :mod:`branchynet.kernels`) or ``'stock'``
            (Chainer's own functions everywhere).
        sync_batchnorm: in a distributed run, BatchNorm statistics over
            every rank's batch (the single-process computation).
        main_from: a run folder whose main phase is done: its main network
            (trunk and final head) is this run's, and no main phase is
            trained (Fig. 5's variants share B-AlexNet's).
    """
    protocol: str
    out: str
    device: str = '@numpy'
    resume: bool = False
    models: typing.Optional[str] = None
    data_dir: typing.Optional[str] = None
    unofficial_data: bool = False
    test_batch: typing.Optional[str] = None
    preprocessing: str = 'zca'  # what a run.json without the key had
    cache_dir: typing.Optional[str] = None
    train_size: typing.Optional[int] = None
    test_size: typing.Optional[int] = None
    validation_size: int = 0
    batchsize: int = 512
    epoch_main: int = 50
    epoch_joint: int = 100
    seed: int = 0
    alpha: float = 0.001
    adam_beta1: float = 0.9
    branch_weights: typing.Optional[tuple] = None
    percent_train_keeps: float = 1.0
    thresholds: typing.Optional[tuple] = None
    threshold_list: tuple = ()
    knee_tolerance: float = 0.1
    select: tuple = ('knee',)
    timing_samples: int = 1000
    timing_repeats: int = 3
    timing_warmup: int = 20
    no_cpu_timing: bool = False
    skip_timing: bool = False
    quick: bool = False
    no_progress: bool = False
    communicator: typing.Optional[str] = None
    sync_batchnorm: bool = True
    kernels: str = 'fast'
    main_from: typing.Optional[str] = None

    def __post_init__(self):
        for name in ('branch_weights', 'thresholds', 'threshold_list',
                     'select'):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, bytes)) \
                    and hasattr(value, '__iter__'):
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, 'device', parse_device(self.device))
        _validate(self)

    @classmethod
    def defaults(cls, protocol):
        """Every field's default for ``protocol`` (a
        :class:`~branchynet.paper.protocols.Protocol`): the one source of the run
        options' defaults, the command line's included."""
        values = {f.name: f.default for f in dataclasses.fields(cls)
                  if f.default is not dataclasses.MISSING}
        values.update(batchsize=protocol.batchsize,
                      epoch_main=protocol.epoch_main,
                      epoch_joint=protocol.epoch_joint,
                      threshold_list=protocol.threshold_list,
                      preprocessing=protocol.preprocessing)
        return values

    @classmethod
    def for_protocol(cls, key, **values):
        """A configuration with the protocol's defaults, then ``values``."""
        defaults = cls.defaults(protocols.get(key))
        defaults.update(values)
        return cls(protocol=key, **defaults)

    @functools.cached_property
    def spec(self):
        """The :class:`~branchynet.paper.protocols.Protocol` named by
        ``protocol``, looked up once per configuration: what a run knows of
        its network without building it."""
        return protocols.get(self.protocol)

    def to_dict(self):
        """JSON-ready fields (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values):
        """The inverse of :meth:`to_dict`. A field that a run's file lacks
        (it was added later: the relay's run began before some) takes its
        default; a key that is not a field is ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def replace(self, **values):
        """A copy with ``values`` changed (validated again)."""
        return dataclasses.replace(self, **values)

    @property
    def uses_gpu(self):
        """Whether the device is a CUDA device."""
        return self.device.startswith('@cupy')


def parse_device(spec):
    """Chainer's device specifier as ``'@numpy'`` or ``'@cupy:<id>'``.

    Accepts what ``chainer.get_device`` accepts for these two backends:
    an int or int string (negative: CPU), ``'@numpy'``, ``'@cupy:<id>'``.

    Raises:
        ValueError: anything else (ChainerX and iDeep are not supported).
    """
    text = str(spec).strip()
    if text == '@numpy':
        return text
    if text.startswith('@cupy:'):
        number = text[len('@cupy:'):]
    else:
        number = text
    try:
        device_id = int(number)
    except ValueError:
        raise ValueError('--device must be @numpy, @cupy:<id> or an integer '
                         '(negative: CPU), got {!r}'.format(spec)) from None
    if device_id < 0:
        if text.startswith('@cupy:'):
            raise ValueError('--device {!r}: a CUDA device id is 0 or more'
                             .format(spec))
        return '@numpy'
    return '@cupy:{}'.format(device_id)


def _flag(name):
    return '--' + name.replace('_', '-')


def _check_int(config, name, low, high=None, optional=False):
    value = getattr(config, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError('{} must be an integer, got {!r}'.format(_flag(name),
                                                                value))
    if value < low or (high is not None and value > high):
        raise ValueError('{} must be {}, got {}'.format(
            _flag(name), 'at least {}'.format(low) if high is None else
            'between {} and {}'.format(low, high), value))


def _check_real(config, name, low, high, low_open=False, high_open=False):
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(value) or value < low or value > high or \
            (low_open and value == low) or (high_open and value == high):
        raise ValueError('{} must be a finite number in {}{}, {}{}, got {!r}'
                         .format(_flag(name), '(' if low_open else '[', low,
                                 high, ')' if high_open else ']', value))


def _validate(config):
    try:
        protocol = config.spec
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    exits = protocol.num_exits
    _check_int(config, 'batchsize', 1)
    _check_int(config, 'epoch_main', 0, MAX_EPOCHS)
    _check_int(config, 'epoch_joint', 0, MAX_EPOCHS)
    _check_int(config, 'seed', 0, MAX_SEED)
    _check_int(config, 'train_size', 1, optional=True)
    _check_int(config, 'test_size', 1, optional=True)
    _check_int(config, 'validation_size', 0)
    _check_int(config, 'timing_samples', 0)
    _check_int(config, 'timing_repeats', 1, MAX_TIMING_REPEATS)
    _check_int(config, 'timing_warmup', 0, MAX_TIMING_WARMUP)
    _check_real(config, 'alpha', 0, 1, low_open=True)
    _check_real(config, 'adam_beta1', 0, 1, high_open=True)
    _check_real(config, 'knee_tolerance', 0, 100)
    _check_real(config, 'percent_train_keeps', 0, 1, low_open=True)
    if config.train_size is not None and \
            config.validation_size >= config.train_size:
        raise ValueError('--validation-size {} leaves no training sample of '
                         '--train-size {}'.format(config.validation_size,
                                                  config.train_size))
    if exit_rule.samples_left(config.percent_train_keeps, config.batchsize,
                              exits) < 1:
        raise ValueError(
            '--percent-train-keeps {!r} leaves no sample of a batch of {} to '
            'train the final exit; keep a share that leaves at least one'
            .format(config.percent_train_keeps, config.batchsize))
    if config.branch_weights is not None:
        loss.check_branch_weights(config.branch_weights, exits)
    if config.thresholds is not None:
        exit_rule.EntropyThresholds(config.thresholds, exits)
        if not all(math.isfinite(t) for t in config.thresholds):
            raise ValueError(
                '--thresholds must be finite (run.json could not keep an '
                'infinity; an entropy never exceeds ln(classes), so a '
                'threshold of 1e9 sends every sample out), got {}'.format(
                    list(config.thresholds)))
    if not config.threshold_list or not all(
            isinstance(t, numbers.Real) and not isinstance(t, bool) and
            math.isfinite(t) and t >= 0 for t in config.threshold_list):
        raise ValueError('--threshold-list needs finite non-negative '
                         'numbers, got {}'.format(
                             list(config.threshold_list)))
    if len(set(config.threshold_list)) != len(config.threshold_list):
        raise ValueError('--threshold-list: each value once, got {}'.format(
            list(config.threshold_list)))
    points = len(config.threshold_list) ** (exits - 1)
    if points > MAX_SWEEP_POINTS:
        raise ValueError(
            '--threshold-list of {} values over {} non-final exits makes a '
            'sweep of {} threshold combinations (about {:.0f} MB of results '
            'and as many evaluations); at most {} are allowed: give fewer '
            'values'.format(len(config.threshold_list), exits - 1, points,
                            points * SWEEP_POINT_BYTES / 1e6,
                            MAX_SWEEP_POINTS))
    if not config.select:
        raise ValueError('--select needs at least one rule')
    rules = [str(selection.Rule.parse(rule)) for rule in config.select]
    if len(set(rules)) != len(rules):
        raise ValueError('--select: each rule once, got {}'.format(
            ' '.join(config.select)))
    kernels.check_kernels(config.kernels)
    if config.preprocessing not in datasets.PREPROCESSINGS:
        raise ValueError('--preprocessing must be one of {}, got {!r}'.format(
            sorted(datasets.PREPROCESSINGS), config.preprocessing))
    if config.communicator is not None:
        from branchynet.distributed import COMMUNICATORS, GPU_COMMUNICATORS
        if config.communicator not in COMMUNICATORS:
            raise ValueError('--communicator must be one of {}, got {!r}'
                             .format(', '.join(COMMUNICATORS),
                                     config.communicator))
        if config.communicator in GPU_COMMUNICATORS and not config.uses_gpu:
            raise ValueError('--communicator {} needs a GPU (--device); on '
                             'the CPU use naive'.format(config.communicator))
    if config.test_batch is not None:
        if protocol.dataset != 'cifar10':
            raise ValueError('--test-batch applies to CIFAR-10 only')
        allowed = datasets.CIFAR10_BATCHES + [datasets.CIFAR10_TEST]
        if config.test_batch not in allowed:
            raise ValueError('--test-batch must be one of {}, got {!r}'.format(
                ', '.join(allowed), config.test_batch))


def check_paths(config):
    """Checks on the machine, made before any data is loaded or file written.

    The data folder must exist; the output folder must be creatable and
    writable (or exist and be writable), and so must the CIFAR-10 cache;
    with ``models``, that folder must hold both saved models; a CUDA device
    must be usable when one is asked for.

    Raises:
        ValueError: naming the path or device and what is wrong.
    """
    check_data_dir(config.data_dir)
    check_writable(config.out)
    if config.spec.dataset == 'cifar10':
        check_writable(datasets.cache_folder(config.cache_dir), '--cache-dir')
    if config.models is not None:
        from branchynet.runs.run_folder import MODEL_FILES
        for name in MODEL_FILES.values():
            if not os.path.isfile(os.path.join(config.models, name)):
                raise ValueError('--models {}: {} not found there'.format(
                    config.models, name))
    if config.main_from is not None:
        from branchynet.runs.run_folder import (MODEL_FILES, RUN_FILE,
                                                main_network_from)
        for name in (RUN_FILE, MODEL_FILES['main']):
            if not os.path.isfile(os.path.join(config.main_from, name)):
                raise ValueError('--main-from {}: no {} there (a run whose '
                                 'main phase is done)'.format(
                                     config.main_from, name))
        try:  # its main network fits this one: known before any data loads
            main_network_from(config.main_from, config.spec.network())
        except UserError as e:
            raise ValueError(str(e)) from None
    if config.uses_gpu:
        check_gpu(config.device)


def check_data_dir(data_dir):
    """Raise ValueError if ``data_dir`` is given and is not a folder."""
    if data_dir is not None and not os.path.isdir(data_dir):
        raise ValueError('--data-dir {}: no such folder'.format(data_dir))


def check_writable(path, flag='--out'):
    """Raise ValueError unless ``path`` is (or can be made) a writable folder."""
    try:
        ownership.check_out_path(path, flag)
    except UserError as e:
        raise ValueError(str(e)) from None


def usable_device(spec):
    """``spec`` normalised (:func:`parse_device`) and, for a GPU, checked usable.

    Raises:
        ValueError: an unknown specifier or an unusable GPU.
    """
    device = parse_device(spec)
    if device != '@numpy':
        check_gpu(device)
    return device


def check_gpu(device):
    """Raise ValueError unless CuPy and the CUDA device ``device`` are usable."""
    from chainer.backends import cuda
    if not cuda.available:
        reason = getattr(cuda, '_resolution_error', None)
        raise ValueError(
            '--device {}: CuPy is not usable ({}). Install CuPy for your CUDA '
            'version with its CUDA libraries, e.g. pip install '
            '"cupy-cuda12x[ctk]"'.format(device, reason or 'not installed'))
    device_id = int(device.split(':')[1])
    try:
        count = cuda.cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError without a driver
        raise ValueError('--device {}: no CUDA driver or device ({})'.format(
            device, e)) from None
    if device_id >= count:
        raise ValueError('--device {}: this machine has {} CUDA device(s)'
                         .format(device, count))


def merge_stored(stored, given, explicit):
    """The configuration of a resumed run (or of an evaluation of its models).

    Args:
        stored: the :class:`RunConfig` the run was started with.
        given: the configuration the command line asks for now.
        explicit: names of the fields given explicitly on the command line.

    Returns:
        ``stored`` with the explicitly given values of
        :data:`CHANGEABLE_ON_RESUME` taken from ``given``, and the
        :data:`SWITCHES` as ``given`` has them; when evaluating saved models,
        the communicator as ``given`` has it (a distributed training's
        models are evaluated on one process).

    Raises:
        ValueError: an explicitly given value that may not change differs
            from the stored one; the message names each difference.
    """
    conflicts = ['{} {!r} (the run has {!r})'.format(
        _flag(name), getattr(given, name), getattr(stored, name))
        for name in sorted(explicit)
        if name not in CHANGEABLE_ON_RESUME and
        getattr(given, name) != getattr(stored, name)]
    if conflicts:
        raise ValueError(
            'the run in {} was made with another configuration: {}. Only '
            'evaluation, timing, data location and device options may change '
            'when resuming or evaluating saved models ({})'.format(
                given.models or given.out, '; '.join(conflicts),
                ', '.join(_flag(n) for n in CHANGEABLE_ON_RESUME)))
    changes = {name: getattr(given, name) for name in explicit
               if name in CHANGEABLE_ON_RESUME}
    changes.update({name: getattr(given, name) for name in SWITCHES})
    changes.update(out=given.out, resume=given.resume, models=given.models)
    if given.models:
        # saved models are evaluated on one process, whatever the training
        # was launched on: its communicator is the training's, not this one's
        changes.update(communicator=given.communicator)
    return stored.replace(**changes)
