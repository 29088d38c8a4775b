"""Result files: the run's JSON, the sweep CSV and Table I (CSV and Markdown).

Everything here reads the results dictionary (the content of
``results.json``) and nothing else, so tables can be rebuilt from files.
"""
import csv
import io
import math
import os

from branchynet.paper import protocols
from branchynet.runs.run_folder import FIGURES_DIR, RESULT_FILES, RESULTS
from branchynet.utils import markdown
from branchynet.utils.ownership import OutputFolder

# The reference's baseline figure: the main path after joint training.
AFTER_JOINT_SUFFIX = ' (main path after joint training: the reference\'s figure)'
TABLE1_COLUMNS = ['Device', 'Network', 'Acc. (%)', 'Time (ms)', 'Gain',
                  'Thrshld. T', 'Exit (%)']
# The CSV files also say which data each number comes from.
SPLIT_COLUMNS = ['Test set', 'Train set']


# Files a run writes from its models; a new evaluation replaces them all.


def non_finite(value, path=''):
    """Paths (``'training/joint[3]/main/loss'``) of every NaN or infinity."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [path]
    if isinstance(value, dict):
        return [p for k, v in value.items()
                for p in non_finite(v, '{}/{}'.format(path, k) if path else k)]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value)
                for p in non_finite(v, '{}[{}]'.format(path, i))]
    return []


def remove_results(folder):
    """Remove what an earlier evaluation wrote into a run's folder.

    Models, snapshots, logs and ``run.json`` stay; result files and figures
    go (only those this program wrote, unchanged since: anything else in
    the way stops the run before a file is removed), so that new results
    never lie beside files of an earlier state.

    Args:
        folder: the run's :class:`~branchynet.utils.ownership.OutputFolder`.
    """
    folder.remove_partial_files(RESULT_FILES)
    folder.remove(list(RESULT_FILES))
    if os.path.isdir(folder.file(FIGURES_DIR)):
        with figures_folder(folder) as figures:
            figures.remove_partial_files()
            figures.remove(figures.owned())


def figures_folder(folder):
    """The ``figures/`` sub-folder of a run's folder, an output folder of
    its own (so that ``make_figures.py --out <run>/figures`` redraws in
    place); use it as a context manager."""
    folder.make_folder(FIGURES_DIR)
    return OutputFolder.open(folder.file(FIGURES_DIR), 'files')


def schedule(results):
    """``'full (50+100 epochs)'`` or what was shortened, against the run's
    reference protocol."""
    config = results['config']
    protocol = protocols.get(config['protocol'])
    short = []
    if (config['epoch_main'], config['epoch_joint']) != (
            protocol.epoch_main, protocol.epoch_joint):
        short.append('epochs {}+{} of {}+{}'.format(
            config['epoch_main'], config['epoch_joint'], protocol.epoch_main,
            protocol.epoch_joint))
    if config.get('train_size') is not None:
        short.append('first {} training samples'.format(config['train_size']))
    if config.get('test_size') is not None:
        short.append('first {} test samples'.format(config['test_size']))
    if config.get('quick'):
        short.append('--smoke')
    if not short:
        return 'full ({}+{} epochs)'.format(config['epoch_main'],
                                            config['epoch_joint'])
    return 'SHORTENED: ' + ', '.join(short)


def official_data(results):
    """Whether the run read the official dataset files."""
    return results['data'].get('official_files', True) is not False


def caveat(results):
    """What a reader must know before trusting a run's figure or table row:
    ``''``, or e.g. ``'SHORTENED, UNOFFICIAL DATA'``."""
    words = []
    if schedule(results).startswith('SHORTENED'):
        words.append('SMOKE RUN' if results['config'].get('quick')
                     else 'SHORTENED')
    if not official_data(results):
        words.append('UNOFFICIAL DATA')
    return ', '.join(words)


def divergence_note(results):
    """A sentence saying where non-finite values occurred, or ``''``."""
    bad = non_finite({k: results.get(k) for k in
                      ('training', 'baseline', 'exit_accuracy')})
    if not bad:
        return ''
    return ('WARNING: training diverged: {} non-finite value(s) (recorded as '
            'null), first at {}.'.format(len(bad), bad[0]))


def _format_thresholds(thresholds):
    return ', '.join('{:g}'.format(t) for t in thresholds)


def _format_exits(shares):
    return ', '.join('{:.3g}'.format(100 * s) for s in shares)


def selections(timing):
    """One device's threshold selections as ``results.json`` records them
    (the knee first); results written before selection rules existed hold
    only the knee, chosen on the test set."""
    return timing.get('selections') or [{'rule': 'knee',
                                         'selected_on': 'test'}]


def chosen_points(timing, paper_thresholds=None):
    """The timed choices of one device in Table I order: ``(label, point)``.

    The knee first (Table I's B-network row), then every other selection
    rule, each chosen on validation followed by its oracle (the same rule
    applied to the test set) when there is a validation split, then the
    thresholds given with ``--thresholds``: labelled "at the paper's T"
    when they are ``paper_thresholds``, else "at --thresholds". Results
    written before selection rules existed hold only ``knee`` and
    ``user``.
    """
    labelled = []
    for chosen in selections(timing):
        rule, where = chosen['rule'], chosen['selected_on']
        if where == 'test':
            label = '' if rule == 'knee' else ' [{}, chosen on test]'.format(
                rule)
            labelled.append((label, timing.get(rule)))
        else:
            labelled.append((' [{}, chosen on validation]'.format(rule),
                             timing.get(rule)))
            labelled.append((' [{}, oracle: chosen on test]'.format(rule),
                             timing.get(rule + ' oracle')))
    given = timing.get('user')
    if given is not None:
        labelled.append((" at the paper's T" if paper_thresholds is not None
                         and list(given['thresholds']) ==
                         list(paper_thresholds) else ' at --thresholds',
                         given))
    return [(label, point) for label, point in labelled if point is not None]


def table1_rows(results):
    """Table I rows (dicts keyed by :data:`TABLE1_COLUMNS`), per timed device.

    For each device: the baseline row (the main network as the main phase
    left it), the reference's baseline figure (the main path of the jointly
    trained network; accuracy only, it is the same computation as the
    baseline), then the B-network at each timed choice
    (:func:`chosen_points`: the knee, other selection rules and their
    oracles, the user's thresholds). Accuracy and exit shares are over the
    whole test set; time is the measured batch-1 time per sample on the
    timing subset.

    Args:
        results: a results dictionary (the content of ``results.json``).

    Returns:
        A list of dicts, one per row.
    """
    rows = []
    baseline = results['baseline']
    for device, timing in results['timing'].items():
        base_ms = timing['baseline']['median_ms']
        rows.append({'Device': device.upper(),
                     'Network': results['baseline_name'],
                     'Acc. (%)': _percent(baseline['accuracy']),
                     'Time (ms)': '{:.3g}'.format(base_ms),
                     'Gain': '-', 'Thrshld. T': '-', 'Exit (%)': '-'})
        after_joint = results.get('baseline_after_joint')
        if after_joint is not None:
            rows.append({'Device': device.upper(),
                         'Network': results['baseline_name'] +
                         AFTER_JOINT_SUFFIX,
                         'Acc. (%)': _percent(after_joint['accuracy']),
                         'Time (ms)': '-', 'Gain': '-', 'Thrshld. T': '-',
                         'Exit (%)': '-'})
        paper = protocols.get(results['protocol']).paper
        for label, point in chosen_points(
                timing, paper.thresholds if paper else None):
            measured = point['measured']['median_ms']
            rows.append({
                'Device': device.upper(),
                'Network': results['network'] + label,
                'Acc. (%)': _percent(point['accuracy']),
                'Time (ms)': '{:.3g}'.format(measured),
                'Gain': '{:.1f}x'.format(base_ms / measured),
                'Thrshld. T': _format_thresholds(point['thresholds']),
                'Exit (%)': _format_exits(point['exit_shares']),
            })
    return rows


def _percent(fraction):
    return 'n/a' if fraction is None else '{:.2f}'.format(100 * fraction)


def split_names(results):
    """The data a run used, for table columns.

    Returns:
        ``{'Test set': ..., 'Train set': ...}``, each with its sample count.
    """
    data = results['data']
    train = data['train'] if isinstance(data['train'], str) else \
        '+'.join(data['train'])
    return {'Test set': '{} ({} samples)'.format(data['test'],
                                                 data['test_size']),
            'Train set': '{} ({} samples)'.format(train, data['train_size'])}


def table1_csv(results):
    """Table I rows (:func:`table1_rows`) and the split as CSV text."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, TABLE1_COLUMNS + SPLIT_COLUMNS,
                            lineterminator='\n')
    writer.writeheader()
    split = split_names(results)
    writer.writerows(dict(row, **split) for row in table1_rows(results))
    return buffer.getvalue()


def describe_run(results):
    """One line: split, epochs and machine of a run, for table captions.

    Returns:
        A string.
    """
    config, env = results['config'], results['environment']
    split = 'test = {Test set}, train = {Train set}'.format(
        **split_names(results))
    validation = results['data'].get('validation') or {}
    if validation.get('size'):
        split += ', validation = {} samples held out of training'.format(
            validation['size'])
    machine = env['cpu'] + (' / ' + env['gpu']['name'] if env['gpu'] else '')
    return '{}; epochs main {} + joint {}; {}; timing on {} test samples'.format(
        split, config['epoch_main'], config['epoch_joint'], machine,
        results['timing_samples'])


def table1_markdown(results):
    """Table I of one run as Markdown, with its caption and any warning."""
    rows = table1_rows(results)
    lines = markdown.table(TABLE1_COLUMNS, [[row[c] for c in TABLE1_COLUMNS]
                                            for row in rows])
    note = divergence_note(results)
    return ('{} (Table I format)\n\n{}\n\n{}\n{}'.format(
        results['network'], '\n'.join(lines), describe_run(results),
        '\n' + note + '\n' if note else ''))


def sweep_csv(results):
    """One row per threshold combination, with predicted time per device.

    Returns:
        CSV text: thresholds, accuracy, exit shares and accuracies, and per
        timed device the predicted and reference-style ms and whether the
        point is on the frontier.
    """
    devices = list(results['timing'])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    num_exits = len(results['sweep']['points'][0]['exit_shares'])
    test_set = split_names(results)['Test set']
    header = (['test_set'] +
              ['T{}'.format(n + 1) for n in range(num_exits - 1)] +
              ['accuracy'] +
              ['exit{}_share'.format(n + 1) for n in range(num_exits)] +
              ['exit{}_accuracy'.format(n + 1) for n in range(num_exits)])
    for device in devices:
        header += ['{}_predicted_ms'.format(device),
                   '{}_reference_style_ms'.format(device),
                   '{}_frontier'.format(device)]
    writer.writerow(header)
    for i, point in enumerate(results['sweep']['points']):
        row = ([test_set] + point['thresholds'] + [point['accuracy']] +
               point['exit_shares'] +
               ['' if a is None else a for a in point['exit_accuracy']])
        for device in devices:
            timing = results['timing'][device]
            row += [timing['predicted_ms'][i],
                    timing['reference_style_predicted_ms'][i],
                    int(i in timing['frontier'])]
        writer.writerow(row)
    return buffer.getvalue()


def write_reports(results, folder):
    """Write results.json, sweep.csv, and (if anything was timed) table1.csv/.md.

    Args:
        results: the results dictionary.
        folder: the run's :class:`~branchynet.utils.ownership.OutputFolder`.
    """
    folder.write_json(RESULTS, results)
    folder.write_text('sweep.csv', sweep_csv(results))
    if results['timing']:
        folder.write_text('table1.csv', table1_csv(results))
        folder.write_text('table1.md', table1_markdown(results))
