"""The combined Table I: every network, CPU and GPU, ours beside the paper's.

Built from result files alone (each run's ``results.json``), so that runs
made on different machines — training on a CPU, timing on a GPU — meet in
one table. Every row of ours says where it comes from: the split, the
machine and device, the training schedule and the date; a row of a
schedule shorter than the reference protocol (fewer epochs, fewer training
samples, a ``--quick`` run) is marked as such.

    python experiments/make_table1.py results/ figures/ --out figures/table1
"""
import csv
import io
import os

from branchynet.paper import protocols
from branchynet.runs import reading, report
from branchynet.utils.errors import FileProblem
from branchynet.utils.markdown import table as markdown_table
from branchynet.utils.ownership import OutputFolder

COLUMNS = ['Network', 'Run', 'Device', 'Source', 'Row', 'Acc. (%)', 'Time (ms)',
           'Gain', 'Thrshld. T', 'Exit (%)', 'Schedule', 'Split', 'Machine',
           'Date']
ORDER = tuple(protocols.PROTOCOLS)


REPORTS = ('results.json', 'deploy.json')


def find_results(paths):
    """Every runner ``results.json`` and deployment ``deploy.json`` in
    ``paths`` (files, run folders, or folders of run folders, searched one
    level down), in a stable order, each with whether it was named
    (``False``: found in a sub-folder).

    Raises:
        FileProblem: a path that holds no results.
    """
    found = []
    for path in paths:
        if not os.path.exists(path):
            raise FileProblem('{}: not found'.format(path))
        if not os.path.isdir(path):
            found.append((path, True))
            continue
        here = [os.path.join(path, name) for name in REPORTS
                if os.path.isfile(os.path.join(path, name))]
        if here:
            found += [(p, True) for p in here]
            continue
        below = sorted(os.path.join(path, d, name)
                       for d in os.listdir(path) for name in REPORTS
                       if os.path.isfile(os.path.join(path, d, name)))
        if not below:
            raise FileProblem('{} holds no results.json or deploy.json (nor '
                              'do its sub-folders)'.format(path))
        found += [(p, False) for p in below]
    return found


def read_report(path):
    """A ``results.json`` or ``deploy.json``, read and checked."""
    if os.path.basename(path) == 'deploy.json':
        return reading.read_deployment(path)
    return reading.read_results(path)


def run_name(path):
    """The name of the run a ``results.json`` belongs to: its folder's."""
    return os.path.basename(os.path.dirname(os.path.abspath(path)))


def _machine(results, device):
    env = results['environment']
    if device == 'gpu' and env.get('gpu'):
        return '{} (CuPy {}, cuDNN {})'.format(
            env['gpu']['name'], env['gpu'].get('cupy'),
            'on' if env['gpu'].get('cudnn') else 'off')
    return env['cpu']


def paper_rows(protocol):
    """The paper's Table I rows of one protocol (CPU and GPU)."""
    paper, rows = protocol.paper, []
    name = protocol.title
    for device in ('cpu', 'gpu'):
        common = {'Network': name, 'Run': 'paper', 'Device': device.upper(),
                  'Source': 'paper', 'Schedule': 'paper', 'Split': 'paper',
                  'Machine': '3.0 GHz CPU' if device == 'cpu'
                  else 'GTX Titan X', 'Date': '2016'}
        rows.append(dict(common, **{
            'Row': protocol.baseline_name,
            'Acc. (%)': '{:.2f}'.format(paper.baseline_accuracy),
            'Time (ms)': '{:g}'.format(paper.baseline_ms[device]),
            'Gain': '-', 'Thrshld. T': '-', 'Exit (%)': '-'}))
        rows.append(dict(common, **{
            'Row': name, 'Acc. (%)': '{:.2f}'.format(paper.accuracy),
            'Time (ms)': '{:g}'.format(paper.ms[device]),
            'Gain': '{:g}x'.format(paper.gains[device]),
            'Thrshld. T': ', '.join('{:g}'.format(t)
                                    for t in paper.thresholds),
            'Exit (%)': ', '.join('{:g}'.format(p)
                                  for p in paper.exit_percent)}))
    return rows


def split_text(results):
    """The run's test, training and (if any) validation sets, in words."""
    text = 'test {Test set}; train {Train set}'.format(
        **report.split_names(results))
    if not report.official_data(results):
        text += '; NOT the official dataset files (--unofficial-data)'

    validation = results['data'].get('validation')
    if validation and validation.get('size'):
        text += '; validation {} samples held out of training (seed {})'.format(
            validation['size'], validation['seed'])
    return text


def our_rows(results, run):
    """Every Table I row of one run, with its provenance columns.

    Args:
        results: the run's ``results.json`` content.
        run: the run's name in the table (its folder's name).
    """
    rows = []
    for row in report.table1_rows(results):
        device = row['Device'].lower()
        rows.append({
            'Network': results['network'], 'Run': run,
            'Device': row['Device'],
            'Source': 'ours', 'Row': row['Network'],
            'Acc. (%)': row['Acc. (%)'], 'Time (ms)': row['Time (ms)'],
            'Gain': row['Gain'], 'Thrshld. T': row['Thrshld. T'],
            'Exit (%)': row['Exit (%)'], 'Schedule': report.schedule(results),
            'Split': split_text(results),
            'Machine': _machine(results, device),
            'Date': results['environment']['date_utc'][:10]})
    return rows


def deployed_rows(deployment, run):
    """The rows of a deployment report: for each trained network in it, its
    deployed main path and deployed early exit (ONNX Runtime, batch 1)."""
    rows = []
    runtime = 'ONNX Runtime {}, 1 thread'.format(deployment['onnxruntime'])
    for key, deployed in deployment['networks'].items():
        test = deployed.get('test')
        if test is None:  # seeded weights: timed, but no Table I accuracy
            continue
        protocol = protocols.get(key)
        title = protocol.title
        ms = deployed['timing']['batch1_ms']
        common = {'Network': title, 'Run': run, 'Device': 'CPU',
                  'Source': 'ours', 'Schedule': deployed.get('schedule', '-'),
                  'Split': 'test {} ({} samples); models: {}'.format(
                      deployed['images'], test['samples'],
                      deployed['weights']),
                  'Machine': deployment['environment']['cpu'],
                  'Date': deployment['environment']['date_utc'][:10]}
        rows.append(dict(common, **{
            'Row': '{} deployed: main path after joint training ({})'.format(
                protocol.baseline_name, runtime),
            'Acc. (%)': '{:.2f}'.format(test['main_path_accuracy']),
            'Time (ms)': '{:.3g}'.format(ms['deployed_main_path']['median_ms']),
            'Gain': '-', 'Thrshld. T': '-', 'Exit (%)': '-'}))
        at = ' at its knee [chosen on {}]'.format(
            deployed['thresholds_selected_on']) \
            if deployed.get('thresholds_rule') == 'knee' else ''
        rows.append(dict(common, **{
            'Row': '{} deployed early exit{} ({})'.format(title, at, runtime),
            'Acc. (%)': '{:.2f}'.format(test['early_exit_accuracy']),
            'Time (ms)': '{:.3g}'.format(
                ms['deployed_early_exit']['median_ms']),
            'Gain': '{:.1f}x'.format(deployed['timing']['deployed_gain']),
            'Thrshld. T': ', '.join('{:g}'.format(v)
                                    for v in test['thresholds']),
            'Exit (%)': ', '.join('{:.3g}'.format(100 * f)
                                  for f in test['exit_shares'])}))
    return rows


def combined_rows(runs):
    """Paper rows and ours, network by network, CPU before GPU.

    Args:
        runs: ``(name, results)`` pairs of checked run results
            (:func:`branchynet.runs.reading.read_results`) or deployment reports
            (:func:`branchynet.runs.reading.read_deployment`).
    """
    by_protocol = {}
    for run, results in runs:
        if results['kind'] == reading.DEPLOYMENT_KIND:
            for key, deployed in results['networks'].items():
                if 'test' in deployed:  # seeded weights give no rows
                    by_protocol.setdefault(key, []).append((run, results))
        else:
            by_protocol.setdefault(results['protocol'], []).append(
                (run, results))
    keys = [k for k in ORDER if k in by_protocol] + sorted(
        k for k in by_protocol if k not in ORDER)
    rows = []
    for key in keys:
        protocol = protocols.get(key)
        if protocol.paper is not None:
            rows += paper_rows(protocol)
        ours = [r for run, results in by_protocol[key]
                for r in (deployed_rows(_only(results, key), run)
                          if results['kind'] == reading.DEPLOYMENT_KIND
                          else our_rows(results, run))]
        rows += sorted(ours, key=lambda r: r['Device'])  # stable: CPU, GPU
    return rows


def _only(deployment, key):
    return dict(deployment, networks={key: deployment['networks'][key]})


def markdown(rows):
    """The rows as Markdown: one table per network, provenance beside."""
    shown = ['Run', 'Device', 'Source', 'Row', 'Acc. (%)', 'Time (ms)', 'Gain',
             'Thrshld. T', 'Exit (%)', 'Schedule', 'Machine', 'Date']
    lines = ['# Table I, combined', '',
             'Batch size 1; accuracy and exit shares over the test set; time '
             'per sample measured end to end (branchynet/timing.py). "paper" '
             'rows are the paper\'s Table I. Rows marked SHORTENED were '
             'trained on a shorter schedule than the reference protocol.']
    for network in dict.fromkeys(r['Network'] for r in rows):
        these = [r for r in rows if r['Network'] == network]
        lines += ['', '## ' + network, '']
        lines += markdown_table(shown, [[r[c] for c in shown] for r in these])
        splits = {r['Run']: r['Split'] for r in these if r['Source'] == 'ours'}
        if splits:
            lines += [''] + ['- Split of `{}`: {}.'.format(run, text)
                             for run, text in splits.items()]
    return '\n'.join(lines) + '\n'


def to_csv(rows):
    """The rows as CSV, every column."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write(paths, out, skipped=None):
    """Find the results in ``paths``; write ``table1.md`` and ``table1.csv`` to ``out``.

    ``out`` is a folder, or an open :class:`~branchynet.utils.ownership.OutputFolder`.

    Every results file is read and checked before anything is written. A
    file named in ``paths`` (or found in a run folder named there) must be
    a finished run's; one found in a sub-folder of a folder of runs that
    cannot be read (a run still training, another kind of study) is left
    out, and ``(path, reason)`` appended to ``skipped`` if given.

    Returns:
        The rows.

    Raises:
        FileProblem: a named results file that is damaged or not a run's,
            or no results at all.
    """
    reports = []
    for path, named in find_results(paths):
        try:
            reports.append((run_name(path), read_report(path)))
        except FileProblem as e:
            if named:
                raise
            if skipped is not None:
                skipped.append((path, str(e)))
    rows = combined_rows(reports)
    if not rows:
        raise FileProblem('no run results in {}'.format(', '.join(paths)))
    if isinstance(out, OutputFolder):
        _write(out, rows)
    else:
        with OutputFolder.open(out, 'files') as folder:
            _write(folder, rows)
    return rows


def _write(folder, rows):
    folder.write_text('table1.md', markdown(rows))
    folder.write_text('table1.csv', to_csv(rows))
