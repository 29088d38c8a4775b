"""The command line of the experiment scripts: flags in, a RunConfig out, one run.

``experiments/run_<network>.py`` is ``cli.main('<protocol key>')``;
``experiments/run_alexnet_branch_layers.py`` is :func:`fig5_main`. The flags
follow Chainer's examples (``--device/-d`` with ``--gpu/-g`` kept as an
alias, ``--batchsize/-b``, ``--out/-o``, ``--resume/-r``); defaults come
from the configuration (``RunConfig.defaults``) and are shown by ``--help``.
argparse only converts text to numbers; :class:`~branchynet.runs.config.RunConfig`
checks every value, before anything is loaded or written; a user's mistake ends with one line
naming it, not a traceback. (The module is longer than 500 lines because
every run script's flags and their checks are kept in this one place.)
"""
import argparse
import contextlib
import errno
import os
import shlex
import sys

from branchynet.runs import fig5
from branchynet import distributed, kernels
from branchynet.data import datasets
from branchynet.paper import protocols
from branchynet.runs import config as config_module
from branchynet.runs import pipeline, run_folder
from branchynet.runs.config import QUICK, RunConfig
from branchynet.utils.errors import UserError

# Smoke runs go to results/smoke/<network> by default, apart from real runs.
SMOKE_FOLDER = 'smoke'
# argparse's sentinel for "this flag was not on the command line".
_UNSET = object()


def _number(kind, low=None, low_open=False, high=None):
    """An argparse ``type=`` converting to ``kind`` and checking its bounds."""
    def convert(text):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError('not a{} {}: {!r}'.format(
                'n' if kind is int else '', kind.__name__, text)) from None
        if kind is float and value != value:
            raise argparse.ArgumentTypeError('not a number: {!r}'.format(text))
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError('must be {} {}, got {}'.format(
                'above' if low_open else 'at least', low, text))
        if high is not None and value > high:
            raise argparse.ArgumentTypeError('must be at most {}, got {}'
                                             .format(high, text))
        return value
    convert.__name__ = kind.__name__
    return convert


def int_between(low, high):
    """An argparse ``type=`` for an integer from ``low`` to ``high``."""
    return _number(int, low, high=high)


positive_int = _number(int, 1)
count = _number(int, 0)
integer = _number(int)  # converts only: a RunConfig field checks its value
real = _number(float)
seed = _number(int, 0, high=config_module.MAX_SEED)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line, without the usage block.

    ``--help`` still prints the usage and every flag.
    """

    def error(self, message):
        self.exit(2, '{}: error: {} (--help lists the flags)\n'.format(
            self.prog, message))


# What a failed operating-system call means for the user, by errno.
_OS_ADVICE = {
    errno.ENOSPC: 'the disk is full: free space there, or choose another '
                  'folder',
    errno.EDQUOT: 'the disk quota is used up: free space there, or choose '
                  'another folder',
    errno.EROFS: 'the file system is read-only: choose another folder',
    errno.EACCES: 'permission denied: choose a folder you may write to',
    errno.EPERM: 'permission denied: choose a folder you may write to',
    errno.ENOENT: 'not found',
}


def describe_os_error(e):
    """An ``OSError`` as one sentence naming the path and the way out."""
    where = ' '.join('{}'.format(f) for f in (e.filename, e.filename2) if f)
    advice = _OS_ADVICE.get(e.errno, e.strerror or str(e))
    return '{}{}'.format(where + ': ' if where else '', advice)


@contextlib.contextmanager
def one_line_errors(prog, interrupted=None):
    """Every error a user can act on ends the program with one line.

    The project's errors (:class:`~branchynet.utils.errors.UserError`: data,
    folders, damaged files) and operating-system errors (a full or read-only
    disk, a missing path) become ``<prog>: error: ...`` and exit status 1;
    Ctrl-C (``KeyboardInterrupt``) prints ``<prog>: <what was kept and how
    to continue>`` and exits with 130, as a shell reports it. Anything else
    is a defect and keeps its traceback.

    Args:
        prog: the program's name, for the message.
        interrupted: the message after Ctrl-C (default: ``interrupted``),
            or a function that writes it then.
    """
    try:
        yield
    except UserError as e:
        _stop(prog, str(e))
    except OSError as e:
        _stop(prog, describe_os_error(e))
    except KeyboardInterrupt:
        if callable(interrupted):
            interrupted = interrupted()
        sys.stderr.flush()
        print('\n{}: {}'.format(prog, interrupted or 'interrupted'),
              file=sys.stderr, flush=True)
        raise SystemExit(130) from None  # a shell's status after Ctrl-C


def _stop(prog, message):
    sys.stderr.flush()
    raise SystemExit('{}: error: {}'.format(prog, message)) from None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: ...)" suffix, left off where there is no default.

    A flag whose default is ``None``, and a switch (``--no-sync-batchnorm``
    stores False into a setting that is True by default), says in its own
    help what happens without it. A list or tuple default is shown as the
    command line would give it (``a b``), a comma-separated option's as
    ``a,b``.
    """

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool) or \
                action.nargs == 0:
            return action.help
        if isinstance(action.default, (list, tuple)):
            separator = ' ' if action.nargs in ('+', '*') else ','
            return '{} (default: {})'.format(action.help, separator.join(
                str(v) for v in action.default))
        return super()._get_help_string(action)


def _device(text):
    try:
        return config_module.parse_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_device_flags(parser):
    """Chainer's ``--device/-d``, with ``--gpu/-g`` as an alias.

    Args:
        parser: an ``argparse.ArgumentParser``; its namespace gains
            ``device``, normalised to ``'@numpy'`` or ``'@cupy:<id>'``.
    """
    parser.add_argument('--device', '-d', type=_device, default='@numpy',
                        help='Chainer device: @numpy, @cupy:<id>, or an '
                             'integer (negative: CPU)')
    parser.add_argument('--gpu', '-g', dest='device', type=_device,
                        default=argparse.SUPPRESS,
                        help='GPU id (negative: CPU); an alias of --device')


def add_timing_flags(parser, timing_by_default=True):
    """``--timing`` and ``--no-timing`` (into ``skip_timing``), every
    script's one pair of timing flags, with the old spellings
    ``--skip-timing`` and ``--with-timing`` kept."""
    parser.add_argument('--timing', '--with-timing', dest='skip_timing',
                        action='store_false',
                        help='time the models at batch 1 (Table I, Fig. 3){}'
                        .format(' (the default)' if timing_by_default
                                else '; slow on a CPU'))
    parser.add_argument('--no-timing', '--skip-timing', dest='skip_timing',
                        action='store_true',
                        help='no timing: accuracy and exit shares only, no '
                             'Table I{}'.format('' if timing_by_default
                                                else ' (the default)'))
    parser.set_defaults(skip_timing=not timing_by_default)


def build_parser(protocol, timing_by_default=True):
    """The argument parser of one protocol's run script, with its defaults.

    Its types only convert text to numbers: the configuration checks every
    value (:class:`~branchynet.runs.config.RunConfig`), and :func:`parse` turns
    its complaint into the parser's error.

    Args:
        protocol: a :class:`~branchynet.paper.protocols.Protocol`.
        timing_by_default: time unless --no-timing (Fig. 5: only with
            --timing).

    Returns:
        An ``argparse.ArgumentParser`` whose parsed namespace has one
        attribute per :class:`~branchynet.runs.config.RunConfig` field except
        ``protocol``.
    """
    d = config_module.RunConfig.defaults(protocol)
    p = ArgumentParser(
        description='Train and evaluate {} as in the BranchyNet paper; the '
                    'defaults reproduce the reference protocol.'.format(
                        protocol.key),
        formatter_class=HelpFormatter)
    add_device_flags(p)
    p.add_argument('--out', '-o', default=os.path.join('results', protocol.key),
                   help='output folder')
    p.add_argument('--resume', '-r', action='store_true',
                   help='continue the run in --out from its latest snapshots, '
                        'with its stored configuration')
    p.add_argument('--models', metavar='RUN_DIR',
                   help='do not train: evaluate and time the saved models '
                        '(baseline.npz, branchynet.npz) of this run folder on '
                        'this device, writing into --out')
    p.add_argument('--batchsize', '-b', type=integer,
                   default=d['batchsize'], help='training batch size')
    p.add_argument('--epoch-main', type=integer, default=d['epoch_main'],
                   help='epochs of the main-network phase (0: none; the '
                   'joint phase starts from the initial weights)')
    p.add_argument('--epoch-joint', type=integer, default=d['epoch_joint'],
                   help='epochs of the joint phase (0: none; the main '
                   'network alone is trained)')
    p.add_argument('--main-from', metavar='RUN_DIR', help='no main phase: '
                   'the main network of this run (whose main phase is done)')
    p.add_argument('--data-dir',
                   help='folder with the dataset files (default: ${}, else '
                        'download with Chainer)'.format(datasets.DATA_DIR_ENV))
    p.add_argument('--unofficial-data', action='store_true',
                   help='accept dataset files that are not the official ones '
                        '(a file named like an official file must otherwise '
                        'have its size and checksum)')
    if protocol.dataset == 'cifar10':
        p.add_argument('--test-batch',
                       choices=datasets.CIFAR10_BATCHES + [datasets.CIFAR10_TEST],
                       help='test on this batch; a training batch (e.g. '
                            'data_batch_5) is then held out of training. '
                            'Default: the official test_batch')
        p.add_argument('--preprocessing', default=d['preprocessing'],
                       choices=sorted(datasets.PREPROCESSINGS),
                       help='zca: the reference\'s ZCA + per-image min-max; '
                            'scale: pixels / 255')
        p.add_argument('--cache-dir',
                       help='cache for preprocessed arrays (default: ${} or '
                            '~/.cache/branchynet)'.format(datasets.CACHE_DIR_ENV))
    p.add_argument('--seed', type=integer, default=d['seed'],
                   help='seeds initialisation, shuffling, dropout and the '
                        'validation split')
    p.add_argument('--alpha', type=real,
                   default=d['alpha'], help='Adam step size')
    p.add_argument('--adam-beta1', type=real,
                   default=d['adam_beta1'],
                   help='Adam beta1; the reference code uses 0.9, the paper '
                        'says 0.99')
    p.add_argument('--branch-weights', type=real, nargs='+',
                   help='loss weight per exit (default: all 1.0, as the code; '
                        'the paper reports 1.0 for exit 1 and 0.3 for the last '
                        'as better)')
    p.add_argument('--percent-train-keeps', type=real,
                   default=d['percent_train_keeps'],
                   help='share of the samples reaching a non-final exit that '
                        'go on to train deeper exits (the most uncertain)')
    p.add_argument('--thresholds', type=real, nargs='+',
                   help='also evaluate and time this threshold vector')
    p.add_argument('--threshold-list', type=real, nargs='+',
                   default=list(d['threshold_list']),
                   help='values combined over the non-final exits in the '
                        'sweep')
    p.add_argument('--knee-tolerance', type=real,
                   default=d['knee_tolerance'],
                   help='knee: the fastest frontier point within this many '
                        'accuracy points of the baseline (of the best point if '
                        'that is lower)')
    p.add_argument('--select', nargs='+', default=list(d['select']),
                   metavar='RULE',
                   help='threshold selection rules, each a Table I row: knee, '
                        'accuracy-drop:POINTS (fastest within POINTS of the '
                        'baseline), latency:MS (most accurate at or below MS '
                        'per sample), exit-share:F (most accurate sending at '
                        'least F of the samples out early). With '
                        '--validation-size they choose on the validation set '
                        'and are compared with the test-set choice (oracle). '
                        'The knee is always reported')
    p.add_argument('--timing-samples', type=integer,
                   default=d['timing_samples'],
                   help='test samples timed at batch size 1; 0 = all')
    p.add_argument('--timing-repeats', type=integer,
                   default=d['timing_repeats'],
                   help='timed passes over those samples (at most {})'.format(
                       config_module.MAX_TIMING_REPEATS))
    p.add_argument('--timing-warmup', type=integer,
                   default=d['timing_warmup'],
                   help='untimed samples run first')
    p.add_argument('--no-cpu-timing', action='store_true',
                   help='with a GPU, time on the GPU only')
    add_timing_flags(p, timing_by_default)
    p.add_argument('--train-size', type=integer,
                   help='use only the first N training samples (default: all)')
    p.add_argument('--test-size', type=integer,
                   help='use only the first N test samples (default: all)')
    p.add_argument('--validation-size', type=integer,
                   default=d['validation_size'],
                   help='hold out N training samples (class-stratified, '
                        'seeded by --seed) as a validation set; 0 keeps the '
                        'paper\'s protocol')
    p.add_argument('--smoke', '--quick', dest='quick', action='store_true',
                   help='a smoke run of minutes, into results/smoke/ unless '
                        '--out says otherwise; flags given explicitly win: '
                        + ', '.join('--{} {}'.format(k.replace('_', '-'), v)
                                    for k, v in QUICK.items()) +
                        ' (--quick: the old spelling)')
    p.add_argument('--no-progress', action='store_true',
                   help='no progress bar or per-epoch table')
    p.add_argument('--communicator', choices=distributed.COMMUNICATORS,
                   help='data-parallel training over MPI (mpiexec -n N ...) '
                        'with this ChainerMN communicator; under mpiexec the '
                        'default is pure_nccl on a GPU, naive on the CPU')
    p.add_argument('--kernels', choices=kernels.KERNELS,
                   default=d['kernels'],
                   help='fast: convolution and max pooling without Chainer\'s '
                        'copies on the CPU (same results to float rounding); '
                        'stock: Chainer\'s own functions. May change when '
                        'resuming; results record each phase\'s')
    p.add_argument('--no-sync-batchnorm', dest='sync_batchnorm',
                   action='store_false',
                   help='distributed: per-rank BatchNorm statistics instead '
                        'of statistics over the global batch')
    return p


def parse(parser, key, argv=None, extra=()):
    """Parse ``argv`` into a :class:`RunConfig` for protocol ``key``.

    ``--smoke`` (or its old spelling ``--quick``) is read first and changes
    the defaults it names (and the default ``--out``:
    ``results/smoke/<network>``), so an explicit flag still wins over it.

    Args:
        parser: from :func:`build_parser`, possibly with more flags.
        key: the protocol's registry key.
        argv: the arguments (default: ``sys.argv[1:]``).
        extra: destinations of flags added to the parser that are not
            configuration fields.

    Returns:
        ``(config, explicit, extras)``: the configuration, the set of field
        names given explicitly on the command line, and a dict of the
        ``extra`` values.
    """
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument('--smoke', '--quick', dest='quick',
                       action='store_true')
    if early.parse_known_args(argv)[0].quick:
        # a smoke run goes apart from the real runs unless told otherwise
        out = parser.get_default('out')
        parser.set_defaults(out=os.path.join(
            os.path.dirname(out), SMOKE_FOLDER, os.path.basename(out)),
            **QUICK)
    values = vars(parser.parse_args(argv))
    extras = {name: values.pop(name) for name in extra}
    explicit = explicit_flags(parser, argv) - set(extra)
    try:
        config = RunConfig(protocol=key, **values)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    return config, explicit, extras


def explicit_flags(parser, argv):
    """The destinations of the flags given on the command line ``argv``."""
    # argparse fills in defaults only where a namespace has no value yet
    namespace = argparse.Namespace(**{
        action.dest: _UNSET for action in parser._actions
        if action.dest != 'help'})
    parsed = parser.parse_args(argv, namespace=namespace)
    return {k for k, v in vars(parsed).items() if v is not _UNSET}


def apply_smoke(parser, argv, args, smoke):
    """Give ``args`` the ``--smoke`` values ``smoke`` (``{dest: value}``)
    of every flag that ``argv`` does not give."""
    given = explicit_flags(parser, argv)
    for name, value in smoke.items():
        if name not in given:
            setattr(args, name, value)


def resolve(config, explicit):
    """The configuration to run: the stored one when resuming or evaluating.

    With ``--resume`` (or ``--models``) the run's stored configuration is
    the base and only what may change is taken from the command line
    (:func:`branchynet.runs.config.merge_stored`). Then the machine is checked
    (:func:`branchynet.runs.config.check_paths`).

    Raises:
        ValueError: a conflict with the stored configuration, or a path or
            device problem.
    """
    source = config.models or (config.out if config.resume else None)
    if source is not None:
        stored = run_folder.stored_config(source)
        if stored is not None:
            if stored.protocol != config.protocol:
                raise ValueError('{} holds a {} run, not {}'.format(
                    source, stored.protocol, config.protocol))
            config = config_module.merge_stored(stored, config, explicit)
    config_module.check_paths(config)
    return config


def same_command(argv, resume):
    """This program's command line again, with or without ``--resume``; the
    interpreter as a path relative to the working folder where it lies
    below it (``.venv/bin/python``), under ``mpiexec -n <ranks>`` where an
    MPI launcher started it."""
    python = os.path.relpath(sys.executable)
    if python.startswith(os.pardir):
        python = sys.executable
    words = [python, sys.argv[0]] + [a for a in argv if a != '--resume']
    command = shlex.join(words + ['--resume'] * resume)
    if distributed.launched_by_mpi():
        size = distributed.launch_size()
        command = 'mpiexec -n {} {}'.format(size or 'N', command)
    return command


def _interrupted(config, argv):
    """The message after Ctrl-C, written then: what was kept and the command
    that goes on."""
    def message():
        if not os.path.isdir(config.out):
            return ('interrupted before anything was kept; start again '
                    'with: {}'.format(same_command(argv, resume=False)))
        return ('interrupted. Finished epochs are kept in {}; continue with '
                'the same command and --resume: {}'.format(
                    config.out, same_command(argv, resume=True)))
    return message


def main(key, argv=None):
    """Run protocol ``key`` as the command line ``argv`` asks.

    Args:
        key: a :mod:`branchynet.paper.protocols` key, e.g. ``'b_lenet'``.
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The results dictionary (the content of ``results.json``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(protocols.get(key))
    config, explicit, _ = parse(parser, key, argv)
    with one_line_errors(parser.prog, _interrupted(config, argv)):
        return pipeline.run(_resolved(parser, config, explicit))


def _resolved(parser, config, explicit):
    """:func:`resolve`, with a conflict on the command line as a flag error."""
    try:
        return resolve(config, explicit)
    except UserError:
        raise
    except (ValueError, TypeError) as e:
        parser.error(str(e))


def fig5_main(argv=None):
    """Fig. 5: every B-AlexNet variant with 0-4 convs in exit 1, then the figure.

    Every flag of ``run_b_alexnet.py`` applies to each variant; each runs in
    ``--out/exit1_<k>conv``; timing is skipped unless ``--timing``.

    Returns:
        The summary dictionary (the content of ``summary.json``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    base = protocols.PROTOCOLS['b_alexnet']
    parser = build_parser(base, timing_by_default=False)
    parser.description = ('Fig. 5: B-AlexNet with 0-4 conv layers in exit 1 '
                          '(and no exit 2), each with the full protocol.')
    parser.set_defaults(out=os.path.join('results', 'alexnet_branch_layers'))
    parser.add_argument('--convs', type=int, nargs='+',
                        default=list(protocols.FIG5_CONVS),
                        choices=protocols.FIG5_CONVS,
                        help='conv layers in exit 1, one run each')
    # every variant has two exits: flags are checked against variant 0
    common, explicit, extras = parse(parser, protocols.fig5_variant(0).key,
                                     argv, extra=('convs',))
    if len(set(extras['convs'])) != len(extras['convs']):
        parser.error('--convs {}: each variant once'.format(
            ' '.join(map(str, extras['convs']))))
    with one_line_errors(parser.prog, _interrupted(common, argv)):
        configs = [_resolved(parser, common.replace(
            protocol=protocols.fig5_variant(convs).key,
            out=os.path.join(common.out, fig5.FIG5_FOLDER.format(convs))),
            explicit | {'out', 'skip_timing'}) for convs in extras['convs']]
        return fig5.run_fig5(configs, common.out)
