"""A run carried across sittings: packed into a relay folder, restored, resumed.

``tests/data/relay_b_lenet_2ranks`` is a relay saved by an earlier commit
(see its relay.json: the commit and how it was made): a 2-rank B-LeNet run
on synthetic MNIST (``write_mnist(train=256, test=64)``), 2 + 3 epochs at
batch 64, killed in the joint phase. It stays as it was made, so that the
code of every later commit must still resume it.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import (Interrupted, assert_same_models, interrupt_training,
                     run_main)
from branchynet.loss import BranchyLoss
from branchynet.runs import cli, relay
from branchynet.utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, 'tests', 'data', 'relay_b_lenet_2ranks')
MPIEXEC = shutil.which('mpiexec', path=os.path.dirname(sys.executable)) or \
    shutil.which('mpiexec')
LENET = os.path.join(ROOT, 'experiments', 'run_b_lenet.py')
FLAGS = ['--epoch-main', '2', '--epoch-joint', '3', '-b', '64',
         '--no-timing', '--smoke', '--no-progress', '--unofficial-data']


DATA_SIZES = {'mnist': (256, 64), 'cifar10_per_batch': None}


def interrupt_in_joint_epoch_2(monkeypatch):
    # 4 steps per epoch: the joint phase's 6th
    return interrupt_training(monkeypatch, 6)


def test_a_relayed_run_ends_as_one_that_never_stopped(data, tmp_path,
                                                      monkeypatch):
    """Saved in the joint phase, restored elsewhere, resumed: the same
    weights, bit for bit, and the same logs."""
    flags = ['--data-dir', data] + FLAGS
    straight = cli.main('b_lenet', ['-o', str(tmp_path / 'straight')] + flags)
    forward = interrupt_in_joint_epoch_2(monkeypatch)
    with pytest.raises(Interrupted):
        cli.main('b_lenet', ['-o', str(tmp_path / 'first')] + flags)
    monkeypatch.setattr(BranchyLoss, 'forward', forward)

    # as a sitting does it: the script's save, then its restore elsewhere
    saved = run_main('relay', ['save', str(tmp_path / 'first'),
                               str(tmp_path / 'relay'), '--note', 'one'])
    assert saved['phase'] == 'joint'
    assert saved['epochs_done'] == {'main': 2, 'joint': 1}
    assert saved['sittings'][-1]['note'] == 'one'
    run_main('relay', ['restore', str(tmp_path / 'relay'),
                       str(tmp_path / 'second')])
    assert not (tmp_path / 'second' / 'main_phase' / 'snapshot_epoch_2').exists()
    resumed = cli.main('b_lenet', ['-o', str(tmp_path / 'second'),
                                   '--resume'] + flags)

    assert_same_models(str(tmp_path / 'straight'), str(tmp_path / 'second'))
    strip = [{k: v for k, v in e.items() if k != 'elapsed_time'}
             for p in ('main', 'joint') for e in straight['training'][p]]
    assert strip == [{k: v for k, v in e.items() if k != 'elapsed_time'}
                     for p in ('main', 'joint')
                     for e in resumed['training'][p]]


def test_a_relay_keeps_one_snapshot_and_every_sitting(data, tmp_path):
    run = str(tmp_path / 'run')
    cli.main('b_lenet', ['-o', run, '--data-dir', data] + FLAGS)
    relay.save(run, str(tmp_path / 'relay'), note='first')
    relay.save(run, str(tmp_path / 'relay'), note='second')
    names = os.listdir(str(tmp_path / 'relay'))
    assert [n for n in names if n.endswith('.npz') and 'snapshot' in n] == [
        relay.SNAPSHOT]
    saved = relay.read(str(tmp_path / 'relay'))
    assert [s['note'] for s in saved['sittings']] == ['first', 'second']
    progress = (tmp_path / 'relay' / 'PROGRESS.md').read_text()
    assert 'TRAINING FINISHED' in progress and 'IN PROGRESS' not in progress
    assert 'Saved 2 time(s) so far, the last at {} UTC'.format(
        saved['sittings'][-1]['saved_utc']) in progress
    with pytest.raises(UserError, match='holds a run already'):
        relay.restore(str(tmp_path / 'relay'), run)
    # as its page says: restored and resumed, the finished run trains
    # nothing more and writes the same models
    relay.restore(str(tmp_path / 'relay'), str(tmp_path / 'again'))
    cli.main('b_lenet', ['-o', str(tmp_path / 'again'), '--resume',
                         '--data-dir', data] + FLAGS)
    assert_same_models(run, str(tmp_path / 'again'))


PAGE_RUN = {'protocol': 'b_lenet', 'epoch_main': 2, 'epoch_joint': 3}


def progress_page(logs):
    """PROGRESS.md's text for a relay of PAGE_RUN with these logs, saved in
    the joint phase (its first snapshot may come before its first log
    entry)."""
    saved = dict(relay.progress(PAGE_RUN, logs), run=PAGE_RUN, phase='joint',
                 sittings=[{'saved_utc': '2026-12-05T02:08:51'}])
    return relay.progress_text(saved, 'figures/x')


def test_progress_names_the_phase_of_the_latest_test_accuracy():
    main_log = [{'epoch': e, 'validation/main/accuracy': a}
                for e, a in ((1, 0.5), (2, 0.75))]
    joint_log = [{'epoch': 1, 'validation/main/exit0/accuracy': 0.25,
                  'validation/main/exit1/accuracy': 0.875}]
    text = progress_page({'main': main_log, 'joint': None})
    assert 'Epochs done: main 2 of 2, joint 0 of 3.' in text
    assert 'Latest test accuracy (epoch 2 of the main phase): main ' \
        'network: 75.00 %.' in text
    text = progress_page({'main': main_log, 'joint': joint_log})
    assert 'Latest test accuracy (epoch 1 of the joint phase): exit0: ' \
        '25.00 %, exit1: 87.50 %.' in text


def test_progress_says_whether_training_is_finished():
    one = [{'epoch': 1}]
    unfinished = progress_page({'main': one + [{'epoch': 2}], 'joint': one})
    assert unfinished.startswith('# b_lenet — IN PROGRESS')
    assert 'Not a result yet' in unfinished
    assert 'relay.py save /tmp/b_lenet figures/x' in unfinished
    done = progress_page({'main': one + [{'epoch': 2}],
                          'joint': one + [{'epoch': 2}, {'epoch': 3}]})
    assert done.startswith('# b_lenet — TRAINING FINISHED')
    assert 'Not a result yet' not in done and 'relay.py save' not in done
    assert 'run_b_lenet.py --resume -o /tmp/b_lenet' in done


def test_progress_gives_the_pace_and_the_time_left():
    main_log = [{'epoch': 1, 'elapsed_time': 600.0},
                {'epoch': 2, 'elapsed_time': 1200.0}]
    assert 'Pace so far (an epoch, its test pass included): main 10.0 ' \
        'min. Left: 3 joint epoch(s) (the joint phase not timed yet).' in \
        progress_page({'main': main_log, 'joint': None})
    # 2 joint epochs in 2400 s: 20 minutes each, one left
    two_joint = [{'epoch': 1, 'elapsed_time': 1300.0},
                 {'epoch': 2, 'elapsed_time': 2400.0}]
    assert 'main 10.0 min, joint 20.0 min. Left: 1 joint epoch(s), about ' \
        '0.3 hours at that pace.' in \
        progress_page({'main': main_log, 'joint': two_joint})
    all_joint = [{'epoch': e, 'elapsed_time': 100.0 * e} for e in (1, 2, 3)]
    assert 'No epoch is left.' in \
        progress_page({'main': main_log, 'joint': all_joint})
    # a log entry without a usable time gives no pace
    assert 'none measured yet. Left: 1 main epoch(s) and 3 joint epoch(s) ' \
        '(the main phase and the joint phase not timed yet).' in \
        progress_page({'main': [{'epoch': 1, 'elapsed_time': 'soon'}],
                       'joint': None})


def test_the_committed_fixture_is_a_joint_phase_relay_of_two_ranks():
    saved = relay.read(FIXTURE)
    assert saved['phase'] == 'joint' and saved['run']['protocol'] == 'b_lenet'
    assert saved['run']['distributed']['ranks'] == 2
    assert saved['epochs_done'] == {'main': 2, 'joint': 2}


@pytest.mark.skipif(MPIEXEC is None, reason='MPI is not installed '
                    '(pip install -e ".[mpi]")')
def test_two_ranks_resume_a_relay_saved_by_an_earlier_commit(data, tmp_path):
    run = str(tmp_path / 'run')
    relay.restore(FIXTURE, run)
    command = [MPIEXEC, '-n', '2', sys.executable, LENET, '--resume', '-o',
               run, '--data-dir', data, '--no-progress']
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ,
                                                OPENBLAS_NUM_THREADS='1'))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.load(open(os.path.join(run, 'results.json')))
    assert [e['epoch'] for e in results['training']['main']] == [1, 2]
    assert [e['epoch'] for e in results['training']['joint']] == [1, 2, 3]
    assert results['distributed']['ranks'] == 2
    # on one process instead, it is refused: the run started on two
    relay.restore(FIXTURE, str(tmp_path / 'again'))
    one = subprocess.run([sys.executable, LENET, '--resume', '-o',
                          str(tmp_path / 'again'), '--data-dir', data],
                         capture_output=True, text=True, timeout=120)
    assert one.returncode != 0
    assert 'was trained on 2 rank(s); resume it on 2' in one.stderr
