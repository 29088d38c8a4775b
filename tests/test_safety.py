"""Nothing a user made is lost; nothing this project reads is trusted unchecked.

One test per defect of the probe against 97d3ad6 (the issue's numbering:
1-3 data loss, 4-8 silently wrong results), then one per class of fault
that used to end in a traceback or a misleading message. The fault matrix
in docs/faults.md points here.
"""
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy
import pytest

from branchynet.runs import cli, reading
from branchynet.utils import files, ownership
from branchynet.utils.errors import FileProblem, OwnershipError
from branchynet.utils.ownership import OutputFolder
from helpers import copy_of, one_line, script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, 'experiments')
Q = ['--smoke', '--no-progress', '--unofficial-data', '-b', '64',
     '--no-timing', '--train-size', '128', '--test-size', '32']


def tree(path):
    """Every file under ``path`` with the SHA-256 of its content."""
    found = {}
    for folder, _, names in os.walk(path):
        for name in names:
            full = os.path.join(folder, name)
            with open(full, 'rb') as f:
                found[os.path.relpath(full, path)] = hashlib.sha256(
                    f.read()).hexdigest()
    return found




@pytest.fixture(scope='module')
def finished(data, tmp_path_factory):
    """A finished quick B-LeNet run with its tables and figures."""
    out = str(tmp_path_factory.mktemp('finished') / 'run')
    cli.main('b_lenet', ['--data-dir', data, '-o', out, '--smoke',
                         '--no-progress', '--unofficial-data', '-b', '64',
                         '--timing-samples', '4', '--timing-repeats', '1'])
    return out


# --- 1-3. data loss ------------------------------------------------------------

def test_1_a_users_files_in_out_survive_and_the_run_is_refused(
        stops, data, tmp_path):
    thesis = tmp_path / 'u' / 'figures' / 'thesis.png'
    thesis.parent.mkdir(parents=True)
    thesis.write_text('x')
    stops(['--data-dir', data, '--out', str(tmp_path / 'u')] + Q,
          'is not empty and was not made by this program', 'figures')
    assert thesis.read_text() == 'x'


def test_1_out_dot_in_a_repository_changes_nothing(
        stops, data, finished, tmp_path, monkeypatch):
    """``--out .`` from the repository root deleted the committed figures."""
    repo = tmp_path / 'repo'
    shutil.copytree(finished, str(repo / 'figures' / 'b_lenet'))
    (repo / 'README.md').write_text('mine')
    before = tree(str(repo))
    monkeypatch.chdir(repo)
    stops(['--data-dir', data, '--out', '.'] + Q, 'not empty')
    assert tree(str(repo)) == before


def test_1_a_file_this_program_wrote_and_a_user_changed_is_left_alone(
        stops, finished, data, tmp_path):
    run = copy_of(finished, tmp_path)
    with open(os.path.join(run, 'table1.md'), 'a') as f:
        f.write('my notes\n')
    before = tree(run)
    stops(['--data-dir', data, '-o', run, '--resume', '--no-progress',
           '--no-timing'], 'table1.md was changed since this program '
          'wrote it')
    assert tree(run) == before  # the record of outputs too: nothing written


def test_1_reproduce_paper_never_writes_over_a_users_table(tmp_path):
    out = tmp_path / 'paper'
    out.mkdir()
    (out / 'table1.md').write_text('my table')
    done = script('reproduce_paper.py', '--smoke', '--only', 'lenet',
                  '--out', out, '--no-progress')
    one_line(done, 'table1.md exists and was not written by this program')
    assert (out / 'table1.md').read_text() == 'my table'
    assert not (out / 'b_lenet').exists()  # refused before any part ran


def test_2_resume_of_a_folder_without_snapshots_deletes_nothing(
        stops, finished, data, tmp_path):
    run = copy_of(finished, tmp_path)
    for phase in ('main_phase', 'joint_phase'):
        shutil.rmtree(os.path.join(run, phase))  # as committed under figures/
    before = tree(run)
    stops(['--data-dir', data, '-o', run, '--resume', '--no-progress'],
          'no training snapshot', '--models')
    assert tree(run) == before


def test_3_models_into_a_folder_of_another_run_is_refused(
        stops, finished, data, tmp_path):
    other = copy_of(finished, tmp_path, 'other')
    source = copy_of(finished, tmp_path, 'source')
    before = tree(other)
    stops(['--data-dir', data, '--models', source, '-o', other,
           '--no-progress', '--no-timing'], 'already holds a b_lenet run')
    assert tree(other) == before


def test_3_models_in_place_and_again_into_its_own_evaluation(
        finished, data, tmp_path):
    source = copy_of(finished, tmp_path, 'source')
    models = {n: files.sha256(os.path.join(source, n))
              for n in ('baseline.npz', 'branchynet.npz')}
    evaluation = str(tmp_path / 'evaluation')
    flags = ['--data-dir', data, '--models', source, '--no-progress',
             '--no-timing']
    first = cli.main('b_lenet', flags + ['-o', evaluation])
    again = cli.main('b_lenet', flags + ['-o', evaluation])  # the same again
    in_place = cli.main('b_lenet', flags + ['-o', source])
    link = tmp_path / 'link'
    link.symlink_to(source)  # --models LINK --out DIR, LINK -> DIR
    via_link = cli.main('b_lenet', ['--data-dir', data, '--models',
                                    str(link), '-o', source, '--no-progress',
                                    '--no-timing'])
    # each evaluated the same models, which stayed as they were
    for results in (again, in_place, via_link):
        assert results['exit_accuracy'] == first['exit_accuracy']
        assert results['sweep'] == first['sweep']
    for folder in (evaluation, source):
        for name, digest in models.items():
            assert files.sha256(os.path.join(folder, name)) == digest
    assert reading.read_results(os.path.join(evaluation, 'results.json'))[
        'config']['models'] == source


def test_no_script_writes_into_the_committed_figures_by_default():
    for name in ('benchmark.py', 'compare_port.py', 'make_figures.py',
                 'make_table1.py', 'reproduce_paper.py'):
        text = ' '.join(script(name, '--help').stdout.split())
        assert '(default: figures' not in text, name
        assert 'default: results' in text, name


def test_smoke_runs_go_apart_from_real_runs():
    runs = {}
    for argv in (['--smoke'], ['--quick'], []):  # --quick: the old spelling
        parser = cli.build_parser(cli.protocols.get('b_lenet'))
        runs[' '.join(argv)], _, _ = cli.parse(parser, 'b_lenet', argv)
    assert runs['--smoke'].out == os.path.join('results', 'smoke', 'b_lenet')
    assert runs['--quick'] == runs['--smoke'] and runs['--smoke'].quick
    assert runs[''].out == os.path.join('results', 'b_lenet')
    assert 'results/smoke' in script('reproduce_paper.py', '--help').stdout


def test_a_quick_run_says_so_in_its_figures_and_table(finished):
    results = reading.read_results(os.path.join(finished, 'results.json'))
    from branchynet.runs import figures, table1
    head, run = figures.title(results, 'x').split('\n')
    assert head == '[SMOKE RUN, UNOFFICIAL DATA] x'
    # the run's folder and schedule: one run's figure is not another's
    assert run.startswith(os.path.basename(finished) + ': SHORTENED: ')
    rows = table1.our_rows(results, 'run')
    assert all(r['Schedule'].startswith('SHORTENED') for r in rows)
    assert all('NOT the official dataset' in r['Split'] for r in rows)


def test_a_second_run_into_a_locked_folder_is_refused(stops, data, tmp_path):
    out = tmp_path / 'busy'
    with OutputFolder.open(str(out), 'run', foreign_ok=False):
        stops(['--data-dir', data, '-o', str(out)] + Q,
              'another program of this project is writing into it')


# --- 4-8. silently wrong results ------------------------------------------------

def test_4_reproduce_refuses_another_networks_run_in_a_part_folder(
        data, tmp_path):
    out = tmp_path / 'paper'
    cli.main('b_alexnet', ['--data-dir', data, '-o', str(out / 'b_lenet'),
                           '--test-batch', 'data_batch_5', '-b', '16',
                           '--smoke', '--no-progress', '--unofficial-data',
                           '--no-timing', '--train-size', '32',
                           '--test-size', '8'])
    done = script('reproduce_paper.py', '--smoke', '--only', 'lenet',
                  '--out', out, '--no-progress')
    err = one_line(done, 'b_lenet', 'protocol', 'b_alexnet')
    assert '--resume' not in err  # reproduce_paper.py has no such flag


def test_4_a_part_killed_before_its_figures_is_run_again(tmp_path):
    out = tmp_path / 'paper'
    args = ['--smoke', '--only', 'lenet', '--out', out, '--no-progress']
    assert script('reproduce_paper.py', *args).returncode == 0
    part = out / 'b_lenet'
    with OutputFolder.open(str(part / 'figures'), 'files') as figures:
        figures.remove(figures.owned())  # killed after results.json
    with OutputFolder.open(str(part), 'run') as folder:
        folder.set(complete=False)
    done = script('reproduce_paper.py', *args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'complete in' not in done.stdout
    assert (part / 'figures' / 'fig3_b_lenet_cpu.png').is_file()
    assert ownership.read_record(str(part))['complete']


def test_4_a_smoke_part_is_not_taken_for_a_real_one(tmp_path, data):
    out = tmp_path / 'paper'
    assert script('reproduce_paper.py', '--smoke', '--only', 'lenet', '--out',
                  out, '--no-progress').returncode == 0
    done = script('reproduce_paper.py', '--only', 'lenet', '--out', out,
                  '--data-dir', data, '--unofficial-data', '--estimate')
    one_line(done, 'another configuration', 'quick')


@pytest.mark.parametrize('content', [{}, {'kind': 'benchmark', 'device': 'cpu'},
                                     []])
def test_5_make_table1_refuses_what_is_not_a_run(tmp_path, content):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'results.json').write_text(json.dumps(content))
    one_line(script('make_table1.py', run, '--out', tmp_path / 't'),
             str(run / 'results.json'))
    assert not (tmp_path / 't').exists()


def test_6_a_training_set_smaller_than_the_batch_is_refused(
        stops, data, tmp_path):
    out = tmp_path / 'run'
    stops(['--data-dir', data, '-o', str(out), '--smoke', '--no-progress',
           '--unofficial-data', '--train-size', '128', '--validation-size',
           '127', '-b', '64'], 'the training set has 1 sample(s), fewer than '
          'the batch of 64')
    stops(['--data-dir', data, '-o', str(out), '--smoke', '--no-progress',
           '--unofficial-data'], 'fewer than the batch of 512')
    assert not out.exists()


@pytest.mark.parametrize('rules, message', [
    (['knee:'], 'the knee rule takes no value'),
    (['knee', 'knee'], 'each rule once'),
    (['latency:1', 'latency:1.0'], 'each rule once'),
])
def test_7_a_selection_rule_is_given_once_and_as_written(
        stops, data, tmp_path, rules, message):
    stops(['--data-dir', data, '-o', str(tmp_path / 'r')] + Q +
          ['--select'] + rules, message, code=2)


def test_8_a_sweep_too_large_is_refused_with_its_size(stops, data, tmp_path):
    values = [str(v / 1000) for v in range(2000)]
    stops(['--data-dir', data, '-o', str(tmp_path / 'r'), '--test-batch',
           'data_batch_5'] + Q + ['--threshold-list'] + values,
          'a sweep of 4000000 threshold combinations', 'MB', key='b_alexnet')
    stops(['--data-dir', data, '-o', str(tmp_path / 'r')] + Q +
          ['--threshold-list', '1', '1'], 'each value once')


# --- classes of faults: one line, the path named -------------------------------

def damaged_models(source, tmp_path):
    """Model folders whose branchynet.npz is damaged in each way seen."""
    good = os.path.join(source, 'branchynet.npz')
    raw = open(good, 'rb').read()
    kinds = {
        'truncated': raw[:len(raw) // 2],
        'corrupted': raw[:200] + bytes(200) + raw[400:],
        'empty': b'',
        'text': b'hello\n',
    }
    folders = {}
    for kind, content in kinds.items():
        folder = copy_of(source, tmp_path, kind)
        with open(os.path.join(folder, 'branchynet.npz'), 'wb') as f:
            f.write(content)
        folders[kind] = folder
    foreign = copy_of(source, tmp_path, 'foreign')
    numpy.savez(os.path.join(foreign, 'branchynet.npz'), a=numpy.zeros(3))
    folders['foreign'] = foreign
    folders['array'] = copy_of(source, tmp_path, 'array')
    with open(os.path.join(folders['array'], 'branchynet.npz'), 'wb') as f:
        numpy.save(f, numpy.zeros(3))
    return folders


def test_damaged_or_foreign_models_are_one_line_naming_the_file(
        stops, finished, data, tmp_path):
    for kind, folder in damaged_models(finished, tmp_path).items():
        out = tmp_path / ('out_' + kind)
        stops(['--data-dir', data, '--models', folder, '-o', str(out),
               '--no-progress', '--no-timing'],
              os.path.join(folder, 'branchynet.npz'))
        assert not out.exists(), kind


def test_another_networks_models_are_refused(stops, finished, data, tmp_path):
    stops(['--data-dir', data, '--models', finished, '-o',
           str(tmp_path / 'o'), '--test-batch', 'data_batch_5',
           '--no-progress', '--no-timing'], 'holds a b_lenet run, not '
          'b_alexnet', key='b_alexnet')


def test_export_port_kit_faults_are_one_line_and_leave_no_folder(
        finished, tmp_path):
    bad = damaged_models(finished, tmp_path)['truncated']
    for args, message in [
            (['--model', os.path.join(bad, 'branchynet.npz')],
             'not a readable saved model'),
            (['--batch', '0'], 'must be at least 1'),
            (['--batch', '-1'], 'must be at least 1')]:
        out = tmp_path / 'kit'
        one_line(script('export_port_kit.py', '--network', 'b_lenet',
                        '--out', out, *args), message)
        assert not out.exists()


def test_a_knee_from_another_networks_results_is_named(finished, tmp_path):
    from branchynet.deploy import port_kit
    folder = copy_of(finished, tmp_path)
    results = json.load(open(os.path.join(folder, 'results.json')))
    results['protocol'] = results['config']['protocol'] = 'b_alexnet'
    with open(os.path.join(folder, 'results.json'), 'w') as f:
        json.dump(results, f)
    with pytest.raises(FileProblem, match='results file of a b_alexnet run'):
        port_kit.knee_of_run(os.path.join(folder, 'branchynet.npz'),
                             'b_lenet')


def test_a_damaged_snapshot_or_log_stops_resume_before_loading(
        stops, finished, data, tmp_path, monkeypatch):
    from branchynet.data import datasets
    monkeypatch.setattr(datasets, 'load_mnist', lambda *a, **k: 1 / 0)
    run = copy_of(finished, tmp_path, 'snap')
    snapshot = [n for n in os.listdir(os.path.join(run, 'joint_phase'))
                if n.startswith('snapshot')][0]
    path = os.path.join(run, 'joint_phase', snapshot)
    raw = open(path, 'rb').read()
    open(path, 'wb').write(raw[:len(raw) // 2])
    stops(['-o', run, '--resume', '--data-dir', data], path, 'damaged')
    run = copy_of(finished, tmp_path, 'log')
    log = os.path.join(run, 'joint_phase', 'log')
    open(log, 'w').write('[{"epoch": 1,')
    stops(['-o', run, '--resume', '--data-dir', data], log, 'not valid JSON')


@pytest.mark.parametrize('change', [
    ('drop', 'timing'), ('set', 'sweep', None), ('set', 'sweep', []),
    ('set', 'exit_accuracy', 'x'), ('set', 'config', {}),
    ('whole', []), ('whole', None), ('text', '{"kind": '),
])
def test_tampered_results_are_one_line_in_every_reader(
        finished, tmp_path, change):
    folder = copy_of(finished, tmp_path)
    path = os.path.join(folder, 'results.json')
    results = json.load(open(path))
    if change[0] == 'drop':
        del results[change[1]]
    elif change[0] == 'set':
        results[change[1]] = change[2]
    elif change[0] == 'whole':
        results = change[1]
    with open(path, 'w') as f:
        f.write(change[1] if change[0] == 'text' else json.dumps(results))
    for name, args in (('make_table1.py', [folder, '--out', tmp_path / 't']),
                       ('make_figures.py', [folder, '--out', tmp_path / 'f'])):
        one_line(script(name, *args), path)
    assert not (tmp_path / 't').exists() and not (tmp_path / 'f').exists()


def test_a_tampered_run_json_is_one_line(stops, finished, data, tmp_path):
    for content in ('[]', '{"protocol": 3}', '{"protocol": "b_lenet", '
                    '"out": "x", "batchsize": "big"}', '{'):
        run = copy_of(finished, tmp_path, 'r{}'.format(len(content)))
        with open(os.path.join(run, 'run.json'), 'w') as f:
            f.write(content)
        stops(['-o', run, '--resume', '--data-dir', data],
              os.path.join(run, 'run.json'))


def test_a_results_json_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / 'run' / 'results.json').mkdir(parents=True)
    one_line(script('make_table1.py', tmp_path / 'run', '--out',
                    tmp_path / 't'), 'results.json')


@pytest.mark.parametrize('target', ['', 'dangling', 'loop'])
def test_an_out_no_folder_can_be_made_at_is_refused_before_data(
        stops, data, tmp_path, monkeypatch, target):
    from branchynet.data import datasets
    monkeypatch.setattr(datasets, 'load_mnist', lambda *a, **k: 1 / 0)
    if target == 'dangling':
        out = tmp_path / 'dangling'
        out.symlink_to(tmp_path / 'nowhere')
        message = 'a link to'
    elif target == 'loop':
        out = tmp_path / 'loop'
        out.symlink_to(out)
        message = 'a link in a loop'
    else:
        out, message = '', '--out is empty'
    stops(['--data-dir', data, '-o', str(out)] + Q, message)


def test_an_unwritable_cache_is_found_before_preprocessing(
        stops, data, tmp_path, monkeypatch):
    from branchynet.data import datasets
    monkeypatch.setattr(datasets, 'load_cifar10', lambda *a, **k: 1 / 0)
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    stops(['--data-dir', data, '-o', str(tmp_path / 'r'), '--test-batch',
           'data_batch_5', '--cache-dir', str(blocker / 'cache')] + Q,
          '--cache-dir', 'not writable', key='b_alexnet')


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(
        stops, data, tmp_path, monkeypatch):
    from branchynet import serialization

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(serialization.numpy, 'savez_compressed', full)
    out = tmp_path / 'run'
    stops(['--data-dir', data, '-o', str(out)] + Q, 'the disk is full')
    leftovers = [n for n in os.listdir(str(out))
                 if n.startswith(files.PARTIAL_PREFIX)]
    assert leftovers == []


def test_a_distributed_run_without_mpi4py_is_one_line(data, tmp_path):
    code = ('import sys; sys.modules["mpi4py"] = None; '
            'from branchynet.runs import cli; '
            'cli.main("b_lenet", sys.argv[1:])')
    done = subprocess.run(
        [sys.executable, '-c', code, '--data-dir', data, '-o',
         str(tmp_path / 'r'), '--communicator', 'naive'] + Q,
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    one_line(done, 'needs ChainerMN with mpi4py', '.[mpi]')


def test_fig5_refuses_a_variant_twice_before_any_run(tmp_path, data):
    one_line(script('run_alexnet_branch_layers.py', '--data-dir', data,
                    '--convs', '0', '0', '-o', tmp_path / 'f5'),
             'each variant once')
    assert not (tmp_path / 'f5').exists()


def test_errors_are_one_line_without_the_usage_block(data, tmp_path):
    done = script('run_b_lenet.py', '--data-dir', data, '-o', tmp_path / 'r',
                  '--alpha', '1e20')
    one_line(done, '--alpha must be a finite number')
    assert done.returncode == 2


# --- the folder record and the reading boundary, directly ----------------------

def test_an_output_folder_replaces_only_its_own_unchanged_files(tmp_path):
    path = str(tmp_path / 'f')
    with OutputFolder.open(path, 'files') as folder:
        folder.write_text('a.txt', 'one')
        folder.write_text('sub/b.txt', 'two')
        folder.write_text('a.txt', 'three')  # its own: replaced
    (tmp_path / 'f' / 'mine.txt').write_text('mine')
    with OutputFolder.open(path, 'files') as folder:
        with pytest.raises(OwnershipError, match='not written by this'):
            folder.write_text('mine.txt', 'x')
        (tmp_path / 'f' / 'sub' / 'b.txt').write_text('edited')
        with pytest.raises(OwnershipError, match='changed since'):
            folder.remove(['a.txt', 'sub/b.txt'])
        assert (tmp_path / 'f' / 'a.txt').read_text() == 'three'  # all or none
        folder.remove(['a.txt'])
    assert sorted(os.listdir(path)) == sorted(
        [ownership.RECORD, 'mine.txt', 'sub'])
    with pytest.raises(OwnershipError, match='holds files output'):
        OutputFolder.open(path, 'run')


def test_a_folder_that_failed_before_work_is_discarded_whole(tmp_path):
    path = str(tmp_path / 'new')
    folder = OutputFolder.open(path, 'run', foreign_ok=False)
    folder.write_text('run.json', '{}')
    folder.make_folder('main_phase')
    folder.discard()
    assert not os.path.exists(path)
    existing = tmp_path / 'existing'
    existing.mkdir()
    folder = OutputFolder.open(str(existing), 'run', foreign_ok=False)
    folder.write_text('run.json', '{}')
    folder.discard()
    assert existing.is_dir() and os.listdir(str(existing)) == []


def test_a_refused_call_leaves_the_folder_record_untouched(tmp_path):
    path = str(tmp_path / 'run')
    with OutputFolder.open(path, 'run', foreign_ok=False) as folder:
        folder.write_text('run.json', '{}')
    record = os.path.join(path, ownership.RECORD)
    os.utime(record, ns=(0, 0))
    before = open(record, 'rb').read()
    folder = OutputFolder.open(path, 'run', foreign_ok=False)
    folder.discard()  # as relay.restore does when it refuses the folder
    assert open(record, 'rb').read() == before
    assert os.stat(record).st_mtime_ns == 0
    assert open(os.path.join(path, 'run.json')).read() == '{}'


def test_partial_files_are_removed_only_for_names_this_program_writes(
        tmp_path):
    for name in ('.partial-results.json-x.tmp', '.partial-thesis.tex-x.tmp'):
        (tmp_path / name).write_text('')
    removed = files.remove_partial_files(str(tmp_path), ['results.json'])
    assert [os.path.basename(p) for p in removed] == [
        '.partial-results.json-x.tmp']
    assert (tmp_path / '.partial-thesis.tex-x.tmp').exists()


def test_the_committed_runs_pass_the_reading_boundary():
    figures = os.path.join(ROOT, 'figures')
    for run in ('b_lenet', 'b_lenet_validation'):
        reading.read_results(os.path.join(figures, run, 'results.json'))
        assert reading.read_run_file(os.path.join(figures, run))


def test_every_committed_output_is_recorded_unchanged():
    """So that the committed results can be redrawn in place, and nothing
    else under figures/ (its README, say) can be written over."""
    folders = [folder for folder, _, names in os.walk(
        os.path.join(ROOT, 'figures')) if ownership.RECORD in names]
    assert len(folders) >= 6
    for path in folders:
        folder = OutputFolder(path, ownership.read_record(path))
        for name in folder.record['files']:
            assert folder.owns(name), os.path.join(path, name)
    assert 'README.md' not in ownership.read_record(
        os.path.join(ROOT, 'figures'))['files']


def test_committed_reports_redraw_byte_identically_from_their_json(tmp_path):
    """The Markdown of the committed benchmark, port comparison and Table I
    comes back byte for byte from the JSON beside it: report code can be
    reorganised without changing a committed number or its layout."""
    import json

    from branchynet.bench import benchmark
    from branchynet.deploy import port_compare
    from branchynet.runs import report, table1
    figures = os.path.join(ROOT, 'figures')

    def load(path):
        with open(os.path.join(figures, path)) as f:
            return json.load(f)

    def committed(path):
        with open(os.path.join(figures, path)) as f:
            return f.read()
    drawn = {'benchmarks/benchmark_cpu.md': benchmark.markdown(
        load('benchmarks/benchmark_cpu.json')),
        'port/compare_port.md': port_compare.markdown(
            load('port/compare_port.json')),
        'port/b_resnet110_fused_batchnorm/compare_port.md':
            port_compare.markdown(load(
                'port/b_resnet110_fused_batchnorm/compare_port.json'))}
    runs = ('b_lenet', 'b_lenet_validation', 'b_lenet_gpu', 'b_alexnet',
            'b_alexnet_gpu', 'b_alexnet_zca', 'b_resnet110')
    for run in runs:
        drawn[run + '/table1.md'] = report.table1_markdown(
            load(run + '/results.json'))
    # as documented: every finished run under figures/
    table1.write([figures], str(tmp_path))
    for name in ('table1.md', 'table1.csv'):
        drawn[name] = (tmp_path / name).read_text()
    for path, text in drawn.items():
        assert text == committed(path), path


def test_every_recorded_value_comes_back_unchanged(tmp_path):
    """A run that can be started can be resumed: each configuration field,
    set away from its default, survives run.json."""
    from branchynet.runs.config import RunConfig
    config = RunConfig.for_protocol(
        'b_alexnet', out='runs/a b', device='@numpy', data_dir='data dir',
        unofficial_data=True, test_batch='data_batch_5',
        preprocessing='scale', cache_dir='c', train_size=1000,
        test_size=100, validation_size=10, batchsize=7, epoch_main=3,
        epoch_joint=4, seed=2 ** 32 - 1, alpha=1e-4, adam_beta1=0.99,
        branch_weights=(1.0, 0.5, 0.3), percent_train_keeps=0.5,
        thresholds=(0.1, 1e-300), threshold_list=(0.0, 0.5, 1e-7, 3),
        knee_tolerance=0.25, select=('knee', 'latency:0.5', 'exit-share:1'),
        timing_samples=0, timing_repeats=1000, timing_warmup=0,
        no_cpu_timing=True, skip_timing=True, quick=True, no_progress=True,
        communicator='naive', sync_batchnorm=False)
    with OutputFolder.open(str(tmp_path / 'run'), 'run') as folder:
        folder.write_json('run.json', config.to_dict())
    from branchynet.runs import run_folder
    assert run_folder.stored_config(str(tmp_path / 'run')) == config


def test_only_rank_0_looks_at_the_output_folder_and_every_rank_hears_it(
        tmp_path, monkeypatch):
    """Defect seen in CI: rank 1 checked --out after rank 0 had opened it,
    found rank 0's record, refused the run and left rank 0 waiting."""
    from branchynet.runs import run_folder
    from branchynet.runs.config import RunConfig
    from branchynet.utils.errors import UserError

    class Rank:
        def __init__(self, root, told=None):
            self.is_root, self.told = root, told

        def agree(self, value):
            return value if self.is_root else self.told

    looked = []
    monkeypatch.setattr(run_folder, 'check_output',
                        lambda config: looked.append(config.out) or 'state')
    config = RunConfig.for_protocol('b_lenet', out=str(tmp_path / 'run'))
    assert run_folder.check_output_once(config, Rank(root=False)) is None
    assert looked == []  # rank 1 never looks
    assert run_folder.check_output_once(config, Rank(root=True)) == 'state'
    assert looked == [config.out]
    with pytest.raises(UserError, match='holds another run'):
        run_folder.check_output_once(config, Rank(False, 'holds another run'))


def test_a_kit_is_rewritten_only_when_asked(tmp_path):
    from branchynet.deploy import port_kit
    from branchynet.utils.errors import UserError
    out = str(tmp_path / 'kit')
    port_kit.export('b_lenet', out, batch=2)
    written = os.path.getmtime(os.path.join(out, port_kit.MANIFEST))
    with pytest.raises(UserError, match='pass --replace'):
        port_kit.export('b_lenet', out, batch=2)
    assert os.path.getmtime(os.path.join(out, port_kit.MANIFEST)) == written
    port_kit.export('b_lenet', out, batch=3, replace=True)
    with numpy.load(os.path.join(out, 'reference.npz')) as reference:
        assert reference['x'].shape[0] == 3


def test_a_folder_of_runs_leaves_out_what_is_not_a_finished_run(tmp_path):
    """make_table1 over a folder of runs: a sub-folder still training (a
    results.json that is not yet a run's) is named and left out; named
    directly, it stops the table."""
    from branchynet.runs import table1
    runs = tmp_path / 'runs'
    shutil.copytree(os.path.join(ROOT, 'figures', 'b_lenet'), runs / 'b_lenet',
                    ignore=shutil.ignore_patterns('*.npz', 'figures',
                                                  'port_kit'))
    (runs / 'training').mkdir()
    (runs / 'training' / 'results.json').write_text('{}')
    done = script('make_table1.py', runs, '-o', tmp_path / 'table')
    assert done.returncode == 0, done.stderr
    assert 'B-LeNet' in done.stdout
    assert 'left out {}'.format(runs / 'training' / 'results.json') in \
        done.stdout
    with pytest.raises(FileProblem, match='not the results of a network run'):
        table1.write([str(runs / 'training')], str(tmp_path / 'other'))
