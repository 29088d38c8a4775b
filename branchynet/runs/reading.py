"""Reading this project's own files, checked: one boundary for all of them.

``run.json``, ``results.json``, a Fig. 5 ``summary.json``, a Trainer log and
a Trainer snapshot are read here and nowhere else. What is read is checked
against what the readers of the rest of the project rely on (tables,
figures, resume), so that a damaged, tampered or foreign file stops with
one :class:`~branchynet.utils.errors.FileProblem` naming the file, the key and
what was expected — never a ``KeyError`` deep inside a figure.

The expected shapes are written as small schemas: a dict of required keys
(:class:`Optional` for keys that may be missing), :class:`ListOf`,
:class:`DictOf`, :class:`Nullable`, a type, or :class:`Equal`.
"""
import os

from branchynet.paper import protocols
from branchynet.utils import files
from branchynet.utils.errors import FileProblem
from branchynet.utils.schema import (  # noqa: F401
    DictOf,
    Equal,
    Integer,
    ListOf,
    Nullable,
    Number,
    Optional,
    check,
)

RUN_FILE = 'run.json'
RESULTS_KIND = 'branchynet-run'  # the kind field of a run's results.json
SUMMARY_KIND = 'branch-layers'


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
    'kind': Equal(RESULTS_KIND),
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
    if kind != RESULTS_KIND:
        raise FileProblem('{}: not the results of a network run ({}); the '
                          'runner writes kind {!r}'.format(
                              path, 'kind {!r}'.format(kind) if kind
                              else 'no kind', RESULTS_KIND))
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
        :class:`~branchynet.runs.config.RunConfig` is :mod:`branchynet.runs.config`'s.
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
