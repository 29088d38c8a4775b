"""Result files: the run's JSON, the sweep CSV and Table I (CSV and Markdown).

Everything here reads the results dictionary (the content of
``results.json``) and nothing else, so tables can be rebuilt from files.
"""
import csv
import io
import json
import os

from branchynet.files import atomic_write

TABLE1_COLUMNS = ['Device', 'Network', 'Acc. (%)', 'Time (ms)', 'Gain',
                  'Thrshld. T', 'Exit (%)']
# The reference's baseline figure: the main path after joint training.
AFTER_JOINT_SUFFIX = ' (main path after joint training: the reference\'s figure)'
# The CSV files also say which data each number comes from.
SPLIT_COLUMNS = ['Test set', 'Train set']


def write_atomic(path, text):
    """Write ``text`` to ``path``; the file appears only when complete."""
    with atomic_write(path, 'w') as f:
        f.write(text)


def write_json(path, data):
    write_atomic(path, json.dumps(data, indent=1, allow_nan=False) + '\n')


def read_json(path):
    with open(path) as f:
        return json.load(f)


def _format_thresholds(thresholds):
    return ', '.join('{:g}'.format(t) for t in thresholds)


def _format_exits(fractions):
    return ', '.join('{:.3g}'.format(100 * f) for f in fractions)


def table1_rows(results):
    """Table I rows (dicts keyed by :data:`TABLE1_COLUMNS`), per timed device.

    For each device: the baseline row (the main network as the main phase
    left it), the reference's baseline figure (the main path of the jointly
    trained network; accuracy only, it is the same computation as the
    baseline), the B-network at the knee, and the B-network at the user's
    thresholds if any were given. Accuracy and exit
    shares are over the whole test set; time is the measured batch-1 time
    per sample on the timing subset.
    """
    rows = []
    baseline = results['baseline']
    for device, timing in results['timing'].items():
        base_ms = timing['baseline']['median_ms']
        rows.append({'Device': device.upper(),
                     'Network': results['baseline_name'],
                     'Acc. (%)': '{:.2f}'.format(100 * baseline['accuracy']),
                     'Time (ms)': '{:.3g}'.format(base_ms),
                     'Gain': '-', 'Thrshld. T': '-', 'Exit (%)': '-'})
        after_joint = results.get('baseline_after_joint')
        if after_joint is not None:
            rows.append({'Device': device.upper(),
                         'Network': results['baseline_name'] +
                         AFTER_JOINT_SUFFIX,
                         'Acc. (%)': '{:.2f}'.format(
                             100 * after_joint['accuracy']),
                         'Time (ms)': '-', 'Gain': '-', 'Thrshld. T': '-',
                         'Exit (%)': '-'})
        for choice in ('knee', 'user'):
            point = timing.get(choice)
            if point is None:
                continue
            measured = point['measured']['median_ms']
            rows.append({
                'Device': device.upper(),
                'Network': results['network'] + (' (user T)' if choice == 'user'
                                                 else ''),
                'Acc. (%)': '{:.2f}'.format(100 * point['accuracy']),
                'Time (ms)': '{:.3g}'.format(measured),
                'Gain': '{:.1f}x'.format(base_ms / measured),
                'Thrshld. T': _format_thresholds(point['thresholds']),
                'Exit (%)': _format_exits(point['exit_fractions']),
            })
    return rows


def split_names(results):
    """``{'Test set': ..., 'Train set': ...}`` with sample counts."""
    data = results['data']
    train = data['train'] if isinstance(data['train'], str) else \
        '+'.join(data['train'])
    return {'Test set': '{} ({} samples)'.format(data['test'],
                                                 data['test_size']),
            'Train set': '{} ({} samples)'.format(train, data['train_size'])}


def table1_csv(results):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, TABLE1_COLUMNS + SPLIT_COLUMNS,
                            lineterminator='\n')
    writer.writeheader()
    split = split_names(results)
    writer.writerows(dict(row, **split) for row in table1_rows(results))
    return buffer.getvalue()


def describe_run(results):
    """One line: split, epochs and machine of a run, for table captions."""
    config, env = results['config'], results['environment']
    split = 'test = {Test set}, train = {Train set}'.format(
        **split_names(results))
    machine = env['cpu'] + (' / ' + env['gpu']['name'] if env['gpu'] else '')
    return '{}; epochs main {} + joint {}; {}; timing on {} test samples'.format(
        split, config['epoch_main'], config['epoch_joint'], machine,
        results['timing_samples'])


def table1_markdown(results):
    rows = table1_rows(results)
    lines = ['| ' + ' | '.join(TABLE1_COLUMNS) + ' |',
             '|' + '---|' * len(TABLE1_COLUMNS)]
    lines += ['| ' + ' | '.join(row[c] for c in TABLE1_COLUMNS) + ' |'
              for row in rows]
    return ('{} (Table I format)\n\n{}\n\n{}\n'.format(
        results['network'], '\n'.join(lines), describe_run(results)))


def sweep_csv(results):
    """One row per threshold combination, with predicted time per device."""
    devices = list(results['timing'])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    num_exits = len(results['sweep']['points'][0]['exit_fractions'])
    test_set = split_names(results)['Test set']
    header = (['test_set'] +
              ['T{}'.format(n + 1) for n in range(num_exits - 1)] +
              ['accuracy'] +
              ['exit{}_fraction'.format(n + 1) for n in range(num_exits)] +
              ['exit{}_accuracy'.format(n + 1) for n in range(num_exits)])
    for device in devices:
        header += ['{}_predicted_ms'.format(device),
                   '{}_reference_style_ms'.format(device),
                   '{}_frontier'.format(device)]
    writer.writerow(header)
    for i, point in enumerate(results['sweep']['points']):
        row = ([test_set] + point['thresholds'] + [point['accuracy']] +
               point['exit_fractions'] +
               ['' if a is None else a for a in point['exit_accuracy']])
        for device in devices:
            timing = results['timing'][device]
            row += [timing['predicted_ms'][i],
                    timing['reference_style_predicted_ms'][i],
                    int(i in timing['frontier'])]
        writer.writerow(row)
    return buffer.getvalue()


def write_reports(results, out):
    """results.json, sweep.csv, and (if anything was timed) table1.csv/.md."""
    write_json(os.path.join(out, 'results.json'), results)
    write_atomic(os.path.join(out, 'sweep.csv'), sweep_csv(results))
    if results['timing']:
        write_atomic(os.path.join(out, 'table1.csv'), table1_csv(results))
        write_atomic(os.path.join(out, 'table1.md'), table1_markdown(results))
