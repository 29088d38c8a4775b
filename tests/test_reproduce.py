"""The whole of reproduce_paper.py, and the combined Table I, on tiny data (CPU)."""
import csv
import json
import os
import subprocess
import sys

import pytest

from branchynet import reproduce
from branchynet.runs import table1

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'experiments', 'reproduce_paper.py')


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp('reproduce')
    done = subprocess.run(
        [sys.executable, SCRIPT, '--smoke', '--no-progress', '--out', str(out),
         '--only', ','.join(reproduce.PARTS)],
        capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


def test_every_part_writes_its_results(smoke):
    out, stdout = smoke
    for path in ('check/check.json', 'check/check.md',
                 'b_lenet/results.json', 'b_alexnet/results.json',
                 'b_resnet110/results.json',
                 'alexnet_branch_layers/summary.json',
                 'alexnet_branch_layers/figures/fig5_alexnet_branch_layers.png',
                 'benchmarks/benchmark_cpu.json', 'table1.md', 'table1.csv'):
        assert (out / path).is_file(), path
    check = json.loads((out / 'check' / 'check.json').read_text())
    assert check['ok'], check
    # the resume check did interrupt its run, and resumed it bit for bit
    assert check['trainer_resume']['interrupted']
    assert check['trainer_resume']['bit_identical']
    # the estimate comes first, from timed training steps
    assert stdout.index('part        estimate') < stdout.index('lenet: running')
    assert 'epochs at' in stdout


def test_complete_parts_are_skipped_and_the_table_rewritten(smoke):
    out, _ = smoke
    before = (out / 'b_lenet' / 'results.json').stat().st_mtime
    done = subprocess.run(
        [sys.executable, SCRIPT, '--smoke', '--no-progress', '--out', str(out),
         '--only', 'lenet,alexnet'], capture_output=True, text=True,
        timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'lenet: complete in' in done.stdout
    assert (out / 'b_lenet' / 'results.json').stat().st_mtime == before


def test_an_interrupted_part_resumes(smoke, tmp_path):
    out, _ = smoke
    copy = tmp_path / 'copy'
    subprocess.run(['cp', '-r', str(out), str(copy)], check=True)
    (copy / 'b_lenet' / 'results.json').unlink()  # as if killed while evaluating
    done = subprocess.run(
        [sys.executable, SCRIPT, '--smoke', '--no-progress', '--out',
         str(copy), '--only', 'lenet'], capture_output=True, text=True,
        timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((copy / 'b_lenet' / 'results.json').read_text())
    assert results['config']['resume']
    # the training was not repeated: the logs are the first run's
    first = json.loads((out / 'b_lenet' / 'results.json').read_text())
    assert results['training'] == first['training']


def test_combined_table1_marks_shortened_rows_and_holds_the_paper(smoke):
    out, _ = smoke
    with open(out / 'table1.csv') as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == table1.COLUMNS
    paper = [r for r in rows if r['Source'] == 'paper']
    assert len(paper) == 3 * 2 * 2  # 3 networks x CPU/GPU x (baseline, B)
    lenet_gpu = [r for r in paper if r['Network'] == 'B-LeNet' and
                 r['Device'] == 'GPU' and r['Row'] == 'B-LeNet'][0]
    assert (lenet_gpu['Time (ms)'], lenet_gpu['Gain']) == ('0.34', '4.7x')
    ours = [r for r in rows if r['Source'] == 'ours']
    assert {r['Network'] for r in ours} == {'B-LeNet', 'B-AlexNet',
                                            'B-ResNet-110'}
    assert all(r['Schedule'].startswith('SHORTENED: epochs 1+1 of')
               for r in ours)
    resnet = [r for r in ours if r['Network'] == 'B-ResNet-110'][0]
    assert '1+1 of 100+100' in resnet['Schedule']
    assert all(r['Date'] and r['Machine'] for r in ours)
    # each row names its run, and each run's split is tied to that name
    assert {r['Run'] for r in ours} == {'b_lenet', 'b_alexnet', 'b_resnet110'}
    text = (out / 'table1.md').read_text()
    assert 'Split of `b_alexnet`: test ' in text
    assert '## B-ResNet-110' in text and 'SHORTENED' in text


def test_split_names_a_validation_set_only_when_there_is_one():
    results = {'data': {'train': 'train', 'test': 'test', 'train_size': 55,
                        'test_size': 10,
                        'validation': {'size': 5, 'seed': 3}}}
    assert table1.split_text(results) == (
        'test test (10 samples); train train (55 samples); validation 5 '
        'samples held out of training (seed 3)')
    results['data']['validation'] = {'size': 0, 'seed': 0}
    assert table1.split_text(results) == \
        'test test (10 samples); train train (55 samples)'


def test_make_table1_command(smoke, tmp_path):
    out, _ = smoke
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'experiments', 'make_table1.py'),
         str(out), '--out', str(tmp_path)], capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / 'table1.md').read_text() == (out / 'table1.md').read_text()


def test_estimate_only_runs_nothing(tmp_path):
    done = subprocess.run(
        [sys.executable, SCRIPT, '--smoke', '--no-progress', '--out',
         str(tmp_path / 'est'), '--only', 'lenet', '--estimate'],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert 'lenet ' in done.stdout and 'min' in done.stdout
    assert not (tmp_path / 'est' / 'b_lenet').exists()


def test_estimates_read_as_durations_with_a_total():
    from branchynet import reproduce, timing
    assert [timing.duration_text(60 * m)
            for m in (0.4, 89, 90, 2879, 491094)] \
        == ['24 s', '89 min', '1.5 h', '48.0 h', '341 days']
    text = reproduce.estimate_text({
        'lenet': {'minutes': 100.0, 'how': 'a'},
        'check': {'minutes': None, 'how': 'b'},
        'alexnet': {'minutes': 20.0, 'how': 'c'}})
    assert text.splitlines()[-1].split()[:3] == ['total', '2.0', 'h']
    assert 'the others not included' in text
