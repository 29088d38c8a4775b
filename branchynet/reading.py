"""Reading this project's own files, checked: one boundary for all of them.

``run.json``, ``results.json``, a Fig. 5 ``summary.json``, a Trainer log and
a Trainer snapshot are read here and nowhere else. What is read is checked
against what the readers of the rest of the project rely on (tables,
figures, resume), so that a damaged, tampered or foreign file stops with
one :class:`~branchynet.errors.FileProblem` naming the file, the key and
what was expected — never a ``KeyError`` deep inside a figure.

The expected shapes are written as small schemas: a dict of required keys
(:class:`Optional` for keys that may be missing), :class:`ListOf`,
:class:`DictOf`, :class:`Nullable`, a type, or :class:`Equal`.
"""
import numbers
import os

from branchynet import files, protocols
from branchynet.errors import FileProblem

RUN_FILE = 'run.json'
RUN_KIND = 'branchynet-run'
SUMMARY_KIND = 'branch-layers'


# --- the schema language -------------------------------------------------------

class _Around:
    """A schema word around one inner ``spec``."""

    def __init__(self, spec):
        self.spec = spec


class Optional(_Around):
    """A dict key that may be missing (its value, when there, is ``spec``)."""


class Nullable(_Around):
    """``None`` or ``spec`` (JSON null: a diverged run's number)."""


class ListOf(_Around):
    """A list whose items are ``spec``."""

    def __init__(self, spec, min_length=0):
        super().__init__(spec)
        self.min_length = min_length


class DictOf(_Around):
    """A dict with any string keys whose values are ``spec``."""


class Equal:
    """Exactly ``value``."""

    def __init__(self, value):
        self.value = value


class Number:
    """A real number (not a bool)."""


class Integer:
    """An integer (not a bool)."""


_NAMES = {str: 'a string', bool: 'true or false', dict: 'an object',
          list: 'a list'}


def _describe(spec):
    if spec is Number:
        return 'a number'
    if spec is Integer:
        return 'an integer'
    if isinstance(spec, Nullable):
        return '{} or null'.format(_describe(spec.spec))
    if isinstance(spec, ListOf):
        return 'a list'
    if isinstance(spec, (dict, DictOf)):
        return 'an object'
    if isinstance(spec, Equal):
        return repr(spec.value)
    if isinstance(spec, tuple):
        return ' or '.join(_describe(s) for s in spec)
    return _NAMES.get(spec, getattr(spec, '__name__', str(spec)))


def _matches(value, spec):
    """Whether ``value`` has the top-level type ``spec`` asks for."""
    if spec is Number:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if spec is Integer:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(spec, Nullable):
        return value is None or _matches(value, spec.spec)
    if isinstance(spec, ListOf):
        return isinstance(value, list)
    if isinstance(spec, (dict, DictOf)):
        return isinstance(value, dict)
    if isinstance(spec, Equal):
        return value == spec.value
    if isinstance(spec, tuple):
        return any(_matches(value, s) for s in spec)
    return isinstance(value, spec)


def check(value, spec, path, where=''):
    """Raise :class:`FileProblem` unless ``value`` fits ``spec``.

    Args:
        value: what was read.
        spec: the schema.
        path: the file, for the message.
        where: the key path inside the file (``'timing/cpu/knee'``).
    """
    if not _matches(value, spec):
        raise FileProblem('{}: {}expected {}, got {}'.format(
            path, where + ': ' if where else '', _describe(spec),
            _shown(value)))
    if isinstance(spec, Nullable):
        if value is not None:
            check(value, spec.spec, path, where)
    elif isinstance(spec, tuple):
        check(value, next(s for s in spec if _matches(value, s)), path, where)
    elif isinstance(spec, ListOf):
        if len(value) < spec.min_length:
            raise FileProblem('{}: {}: expected at least {} item(s), got {}'
                              .format(path, where or 'the file',
                                      spec.min_length, len(value)))
        for i, item in enumerate(value):
            check(item, spec.spec, path, '{}[{}]'.format(where, i))
    elif isinstance(spec, DictOf):
        for key, item in value.items():
            check(item, spec.spec, path, _join(where, key))
    elif isinstance(spec, dict):
        for key, item_spec in spec.items():
            optional = isinstance(item_spec, Optional)
            if key not in value:
                if optional:
                    continue
                raise FileProblem('{}: {}missing key {!r}'.format(
                    path, where + ': ' if where else '', key))
            check(value[key], item_spec.spec if optional else item_spec,
                  path, _join(where, key))


def _join(where, key):
    return '{}/{}'.format(where, key) if where else str(key)


def _shown(value):
    text = 'null' if value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + '...'


# --- the files -----------------------------------------------------------------

NUMBERS = ListOf(Number)
OPTIONAL_NUMBERS = ListOf(Nullable(Number))
POINT = {'thresholds': NUMBERS, 'accuracy': Nullable(Number),
         'exit_shares': NUMBERS, 'exit_accuracy': OPTIONAL_NUMBERS}
MEASURED = {'median_ms': Number}
CHOICE = dict(POINT, measured=MEASURED, index=Optional(Integer))
TIMING = {
    'baseline': MEASURED,
    'predicted_ms': NUMBERS,
    'reference_style_predicted_ms': NUMBERS,
    'frontier': ListOf(Integer),
    'knee': CHOICE,
    'selections': Optional(ListOf({'rule': str, 'selected_on': str})),
}
EPOCH = DictOf(Nullable((Number, str)))
CONFIG = {'protocol': str, 'epoch_main': Integer, 'epoch_joint': Integer,
          'train_size': Optional(Nullable(Integer)),
          'test_size': Optional(Nullable(Integer)), 'quick': Optional(bool)}
DATA = {'train': (str, ListOf(str)), 'test': str,
        'train_size': Integer, 'test_size': Integer,
        'official_files': Optional(bool),
        'validation': Optional(Nullable({'size': Integer,
                                         'seed': Optional(Integer)}))}
ENVIRONMENT = {'cpu': str, 'date_utc': str, 'gpu': Nullable({'name': str})}
RESULTS = {
    'kind': Equal(RUN_KIND),
    'protocol': str,
    'network': str,
    'baseline_name': str,
    'config': CONFIG,
    'data': DATA,
    'environment': ENVIRONMENT,
    'baseline': {'accuracy': Nullable(Number)},
    'baseline_after_joint': Optional({'accuracy': Nullable(Number)}),
    'exit_accuracy': ListOf(Nullable(Number), min_length=1),
    'sweep': {'points': ListOf(POINT, min_length=1)},
    'exit1_curve': {'exit_share': NUMBERS, 'accuracy': OPTIONAL_NUMBERS,
                    'max_exited_entropy': OPTIONAL_NUMBERS},
    'training': {'main': ListOf(EPOCH), 'joint': ListOf(EPOCH)},
    'timing': DictOf(TIMING),
    'timing_samples': Optional(Integer),
}
SUMMARY = {
    'kind': Equal(SUMMARY_KIND),
    'variants': ListOf({'branch1_convs': Integer,
                        'final_exit_accuracy': Nullable(Number),
                        'exit1_accuracy': Nullable(Number),
                        'baseline_accuracy': Nullable(Number),
                        'results': str}, min_length=1),
    'config': CONFIG,
    'data': DATA,
    'environment': ENVIRONMENT,
}


DEPLOYMENT_KIND = 'deployment'
DEPLOYED = {
    'weights': str,
    'images': str,
    'timing': {'batch1_ms': {'deployed_early_exit': MEASURED,
                             'deployed_main_path': MEASURED},
               'deployed_gain': Number, 'ideal_gain': Number},
    'test': Optional({'samples': Integer, 'thresholds': NUMBERS,
                      'early_exit_accuracy': Number,
                      'main_path_accuracy': Number, 'exit_shares': NUMBERS}),
    'schedule': Optional(str),
    'thresholds_rule': Optional(str),
    'thresholds_selected_on': Optional(str),
}
DEPLOYMENT = {'kind': Equal(DEPLOYMENT_KIND), 'environment': ENVIRONMENT,
              'onnxruntime': str, 'networks': DictOf(DEPLOYED)}


def read_deployment(path):
    """A ``deploy.json`` of ``experiments/deploy.py measure``, checked."""
    deployment = _read_kind(path, DEPLOYMENT_KIND, DEPLOYMENT,
                            'a deployment report')
    for key in deployment['networks']:
        _check_protocol(key, path, 'networks')
    return deployment


def _read_kind(path, kind, spec, what):
    """The JSON file ``path``, refused unless its kind is ``kind`` (saying
    it is not ``what``), checked against ``spec``."""
    data = files.read_json(path)
    check(data, dict, path)
    if data.get('kind') != kind:
        raise FileProblem('{}: not {} (kind {!r}, expected {!r})'.format(
            path, what, data.get('kind'), kind))
    check(data, spec, path)
    return data


def read_results(path):
    """A runner's ``results.json``, checked.

    Raises:
        FileProblem: not JSON, not a runner's results (an empty object, a
            benchmark's JSON), or a key missing or of the wrong type.
    """
    results = files.read_json(path)
    check(results, dict, path)
    kind = results.get('kind')
    if kind != RUN_KIND:
        raise FileProblem('{}: not the results of a network run ({}); the '
                          'runner writes kind {!r}'.format(
                              path, 'kind {!r}'.format(kind) if kind
                              else 'no kind', RUN_KIND))
    check(results, RESULTS, path)
    _check_consistent(results, path)
    return results


def _check_protocol(key, path, where):
    if key not in protocols.PROTOCOLS:
        raise FileProblem('{}: {}: unknown protocol {!r}'.format(
            path, where, key))


def _check_consistent(results, path):
    _check_protocol(results['protocol'], path, 'protocol')
    _check_protocol(results['config']['protocol'], path, 'config/protocol')
    points = results['sweep']['points']
    exits = len(results['exit_accuracy'])
    for i, point in enumerate(points):
        if len(point['exit_shares']) != exits or \
                len(point['thresholds']) != exits - 1:
            raise FileProblem('{}: sweep/points[{}]: expected {} exit '
                              'shares and {} thresholds'.format(
                                  path, i, exits, exits - 1))
    if results['timing'] and 'timing_samples' not in results:
        raise FileProblem("{}: missing key 'timing_samples' (the results "
                          "hold timing)".format(path))
    for device, timing in results['timing'].items():
        where = 'timing/{}'.format(device)
        for key in ('predicted_ms', 'reference_style_predicted_ms'):
            if len(timing[key]) != len(points):
                raise FileProblem('{}: {}/{}: {} values for {} sweep points'
                                  .format(path, where, key, len(timing[key]),
                                          len(points)))
        indices = list(timing['frontier'])
        for name, choice in timing.items():
            if isinstance(choice, dict) and 'index' in choice and \
                    isinstance(choice['index'], int):
                indices.append(choice['index'])
        if any(not 0 <= i < len(points) for i in indices):
            raise FileProblem('{}: {}: a point index outside the {} sweep '
                              'points'.format(path, where, len(points)))


def read_summary(path):
    """A Fig. 5 ``summary.json``, checked."""
    summary = _read_kind(path, SUMMARY_KIND, SUMMARY, 'a Fig. 5 summary')
    _check_protocol(summary['config']['protocol'], path, 'config/protocol')
    return summary


def read_result_file(path):
    """A ``results.json`` or a Fig. 5 ``summary.json``, by its kind."""
    data = files.read_json(path)
    if isinstance(data, dict) and data.get('kind') == SUMMARY_KIND:
        return read_summary(path)
    return read_results(path)


def read_run_file(folder):
    """The content of a run folder's ``run.json``, checked, or ``None``.

    Returns:
        The dict (configuration fields and ``distributed``), or ``None``
        when the folder has no ``run.json``. Turning it into a
        :class:`~branchynet.config.RunConfig` is :mod:`branchynet.config`'s.
    """
    path = os.path.join(folder, RUN_FILE)
    if not os.path.lexists(path):
        return None
    values = files.read_json(path)
    check(values, {'protocol': str, 'out': str,
                   'distributed': Optional({'ranks': Integer}),
                   'training_distributed': Optional(Nullable(
                       {'ranks': Integer})),
                   'kernels_by_epoch': Optional(Nullable(ListOf(
                       {'phase': str, 'first_epoch': Integer,
                        'kernels': str})))}, path)
    _check_protocol(values['protocol'], path, 'protocol')
    return values


def read_log(path):
    """A Trainer ``log`` (a list of per-epoch dicts), or ``None`` if absent."""
    if not os.path.lexists(path):
        return None
    log = files.read_json(path)
    check(log, ListOf({'epoch': Integer}), path)
    return log


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
