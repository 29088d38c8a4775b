"""The runner under faults: bad values, resumes of another run, divergence, interrupts.

Each test reproduces one defect found by trying the runner as a new user
would (see the fault matrix in docs/faults.md) and checks the fix.
"""
import json
import os
import shlex

import chainer
import numpy
import pytest

from helpers import interrupt_training
from branchynet.data import datasets
from branchynet.loss import BranchyLoss
from branchynet.runs import cli, pipeline, report, run_folder
from branchynet.utils.ownership import OutputFolder

# synthetic sets of 128-256 training images: a batch that fits them
FAST = ['--smoke', '--no-progress', '--unofficial-data', '-b', '64']


DATA_SIZES = {'cifar10_per_batch': None}


def lenet(argv):
    return cli.main('b_lenet', argv)


# --- 1. divergence ------------------------------------------------------------

@pytest.mark.parametrize('flags, message', [
    (['--alpha', '1e20'], '--alpha must be a finite number in (0, 1]'),
    (['--alpha', 'nan'], "--alpha: not a number: 'nan'"),
    (['--knee-tolerance', 'nan'], "--knee-tolerance: not a number"),
    (['--knee-tolerance', 'inf'], '--knee-tolerance must be a finite number'),
    (['--adam-beta1', '1'], '--adam-beta1 must be a finite number in [0, 1)'),
    (['--percent-train-keeps', '1.5'], '--percent-train-keeps must be'),
    (['--train-size', '-59000'], '--train-size must be at least 1'),
    (['--train-size', '0'], '--train-size must be at least 1'),
    (['--test-size', '0'], '--test-size must be at least 1'),
    (['--batchsize', '0'], '--batchsize must be at least 1, got 0'),
    (['--epoch-main', '-1'], '--epoch-main must be between 0 and 10000, got -1'),
    (['--alpha', '0'], '--alpha must be a finite number in (0, 1]'),
    (['--timing-repeats', '100000000000000000000'],
     '--timing-repeats must be between 1 and 1000'),
    (['--validation-size', '64', '--train-size', '64'],
     '--validation-size 64 leaves no training sample'),
    (['--seed', '4294967296'], '--seed must be between 0 and 4294967295'),
    (['--device', 'gpu'], '--device must be @numpy, @cupy:<id> or an integer'),
])
def test_absurd_values_are_refused_before_anything_is_done(
        data, tmp_path, capsys, monkeypatch, flags, message, stops):
    def must_not_load(*args, **kwargs):
        raise AssertionError('data loaded despite a bad value')
    monkeypatch.setattr(datasets, 'load_mnist', must_not_load)
    out = tmp_path / 'run'
    stops(['--data-dir', data, '-o', str(out)] + FAST + flags,
               message, code=2)
    assert not out.exists()


def diverging(monkeypatch):
    """Training whose every batch holds NaN: what a diverged run reports."""
    forward, main_loss = BranchyLoss.forward, BranchyLoss.main_loss
    monkeypatch.setattr(BranchyLoss, 'forward',
                        lambda self, x, t: forward(self, x * numpy.nan, t))
    monkeypatch.setattr(BranchyLoss, 'main_loss',
                        lambda self, x, t: main_loss(self, x * numpy.nan, t))


def test_a_diverged_run_still_writes_its_results(data, tmp_path, monkeypatch,
                                                 capsys):
    """Defect: a NaN in the training log made results.json unwritable."""
    diverging(monkeypatch)
    out = tmp_path / 'nan'
    flags = ['--data-dir', data, '-o', str(out), '--timing-samples', '4',
             '--thresholds', '0.5'] + FAST
    results = lenet(flags)
    console = capsys.readouterr().out
    assert 'WARNING: training diverged' in console
    saved = json.loads((out / 'results.json').read_text())
    assert saved['training']['main'][0]['main/loss'] is None
    assert numpy.isnan(results['training']['main'][0]['main/loss'])
    assert 'WARNING: training diverged' in (out / 'table1.md').read_text()
    # and --resume rewrites them, instead of failing as before
    monkeypatch.undo()
    lenet(flags + ['--resume'])
    assert 'WARNING: training diverged' in capsys.readouterr().out


# --- 2. resume ------------------------------------------------------------------

@pytest.fixture(scope='module')
def finished(data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('finished') / 'run')
    lenet(['--data-dir', data, '-o', out, '--epoch-main', '2',
           '--epoch-joint', '1', '-b', '64', '--no-timing'] + FAST)
    return out


def test_resume_refuses_another_configuration_naming_each_difference(
        finished, data, capsys, stops):
    """Defect: resuming with other settings rewrote the results silently."""
    before = open(os.path.join(finished, 'results.json')).read()
    err = stops(FAST + ['--data-dir', data, '-o', finished,
                                     '--resume', '--epoch-main', '1', '-b',
                                     '32', '--seed', '7', '--alpha', '0.5',
                                     '--train-size', '100'],
                     'was made with another configuration',
                     "--epoch-main 1 (the run has 2)",
                     "--batchsize 32 (the run has 64)",
                     "--seed 7 (the run has 0)",
                     "--alpha 0.5 (the run has 0.001)",
                     "--train-size 100 (the run has 1024)",
                     '--timing-repeats', code=2)
    assert 'Traceback' not in err
    assert open(os.path.join(finished, 'results.json')).read() == before


def test_resume_uses_the_stored_configuration_and_replaces_old_results(
        finished, data):
    # what an earlier evaluation of this program wrote (a GPU timing, say)
    stale = os.path.join(finished, 'figures', 'fig3_b_lenet_gpu.png')
    with OutputFolder.open(finished, 'run') as folder:
        folder.write_text('table1.md', '')
        with report.figures_folder(folder) as figures:
            figures.write_text('fig3_b_lenet_gpu.png', '')
    # no training flags: the stored 2 + 1 epochs at batch 64 are kept; a
    # timing option may change
    results = lenet(['-o', finished, '--resume', '--no-progress',
                     '--data-dir', data, '--timing-samples', '4',
                     '--timing-repeats', '2'])
    config = results['config']
    assert (config['epoch_main'], config['epoch_joint'],
            config['batchsize']) == (2, 1, 64)
    assert config['timing_repeats'] == 2 and not config['skip_timing']
    assert [len(results['training'][p]) for p in ('main', 'joint')] == [2, 1]
    assert not os.path.exists(stale)
    assert 'B-LeNet' in open(os.path.join(finished, 'table1.md')).read()
    stored = run_folder.stored_config(finished)
    assert stored.timing_repeats == 2 and stored.epoch_main == 2


def test_models_of_a_run_are_evaluated_without_training(finished, data,
                                                        tmp_path,
                                                        monkeypatch):
    def must_not_train(*args, **kwargs):
        raise AssertionError('trained despite --models')
    monkeypatch.setattr(pipeline, 'train', must_not_train)
    out = tmp_path / 'evaluated'
    results = lenet(['--models', finished, '-o', str(out), '--no-progress',
                     '--data-dir', data, '--no-timing'])
    assert results['config']['models'] == finished
    assert results['config']['epoch_main'] == 2  # the run's, from run.json
    assert [len(results['training'][p]) for p in ('main', 'joint')] == [2, 1]
    for name in ('baseline.npz', 'branchynet.npz'):
        assert (out / name).read_bytes() == open(
            os.path.join(finished, name), 'rb').read()
    original = json.load(open(os.path.join(finished, 'results.json')))
    assert results['exit_accuracy'] == original['exit_accuracy']
    # a folder holding only models, run.json and results.json (as committed
    # under figures/) can be evaluated in place: its logs survive
    assert not (out / 'main_phase').exists()
    again = lenet(['--models', str(out), '-o', str(out), '--no-progress',
                   '--data-dir', data, '--no-timing'])
    assert again['training'] == results['training']


def test_models_trained_on_two_ranks_are_evaluated_on_one_process(
        finished, data, tmp_path):
    """Defect: --models took the training's communicator from run.json and
    then refused to evaluate without mpiexec."""
    run = tmp_path / 'two_ranks'
    run.mkdir()
    for name in ('baseline.npz', 'branchynet.npz', 'results.json'):
        (run / name).write_bytes(open(os.path.join(finished, name),
                                      'rb').read())
    # as a 2-rank training recorded it before run.json also held
    # training_distributed (the B-AlexNet relay's)
    stored = json.load(open(os.path.join(finished, 'run.json')))
    assert stored.pop('training_distributed')['ranks'] == 1
    stored.update(communicator='naive', distributed={
        'communicator': 'naive', 'ranks': 2, 'sync_batchnorm': True})
    (run / 'run.json').write_text(json.dumps(stored))
    results = lenet(['--models', str(run), '-o', str(tmp_path / 'evaluated'),
                     '--no-progress', '--data-dir', data, '--no-timing'])
    assert results['config']['communicator'] is None
    assert results['distributed']['ranks'] == 1
    recorded = json.load(open(tmp_path / 'evaluated' / 'run.json'))
    assert recorded['distributed']['ranks'] == 1
    assert recorded['training_distributed']['ranks'] == 2
    # evaluated again from that evaluation: still the training's ranks
    lenet(['--models', str(tmp_path / 'evaluated'), '-o',
           str(tmp_path / 'again'), '--no-progress', '--data-dir', data,
           '--no-timing'])
    again = json.load(open(tmp_path / 'again' / 'run.json'))
    assert again['training_distributed']['ranks'] == 2
    # an evaluation recorded before the key existed: unknown, not its own
    del recorded['training_distributed']
    (tmp_path / 'evaluated' / 'run.json').write_text(json.dumps(recorded))
    lenet(['--models', str(tmp_path / 'evaluated'), '-o',
           str(tmp_path / 'third'), '--no-progress', '--data-dir', data,
           '--no-timing'])
    third = json.load(open(tmp_path / 'third' / 'run.json'))
    assert third['training_distributed'] is None
    original = json.load(open(os.path.join(finished, 'results.json')))
    assert results['exit_accuracy'] == original['exit_accuracy']


# --- 5, 6. folders, devices, interruptions --------------------------------------

def test_unwritable_out_is_found_before_loading_data(data, tmp_path, capsys,
                                                     monkeypatch, stops):
    """Defect: a read-only --out was found only after an epoch of training."""
    folder = tmp_path / 'readonly'
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, 'access', lambda path, mode: (
        False if os.path.abspath(path) == str(folder) else
        real_access(path, mode)))
    monkeypatch.setattr(datasets, 'load_mnist', lambda *a, **k: 1 / 0)
    stops(['--data-dir', data, '-o', str(folder / 'run')] + FAST,
               'is not writable', code=2)
    a_file = tmp_path / 'file'
    a_file.write_text('')
    stops(['--data-dir', data, '-o', str(a_file)] + FAST,
               'exists and is not a folder', code=2)


def test_gpu_without_cupy_is_one_line(data, tmp_path, capsys, stops):
    if chainer.backends.cuda.available:
        pytest.skip('a usable GPU is present')
    err = stops(['--data-dir', data, '-o', str(tmp_path / 'g'),
                              '--gpu', '0'] + FAST, 'CuPy is not usable', code=2)
    assert 'Traceback' not in err and not (tmp_path / 'g').exists()


def test_unknown_test_batch_is_refused_and_leaves_nothing(data, tmp_path,
                                                          capsys):
    out = tmp_path / 'alex'
    with pytest.raises(SystemExit):
        cli.main('b_alexnet', ['--data-dir', data, '-o', str(out),
                               '--test-batch', 'data_batch_9'] + FAST)
    assert "invalid choice: 'data_batch_9'" in capsys.readouterr().err
    assert not out.exists()


def test_failed_data_leaves_no_out_folder(tmp_path, capsys, stops):
    empty = tmp_path / 'nodata'
    empty.mkdir()
    out = tmp_path / 'run'
    stops(['--data-dir', str(empty), '-o', str(out)] + FAST,
               'not found')
    assert not out.exists()


def test_a_phase_of_zero_epochs_is_skipped(data, tmp_path):
    """--epoch-joint 0 trains the main network alone: the joint log is
    empty and the final exit is the main network, untouched; --epoch-main 0
    trains jointly from the initial weights."""
    args = ['--data-dir', data, '--no-timing'] + FAST
    main_only = lenet(args + ['-o', str(tmp_path / 'a'), '--epoch-joint', '0'])
    assert [e['epoch'] for e in main_only['training']['main']] == [1]
    assert main_only['training']['joint'] == []
    assert main_only['exit_accuracy'][-1] == main_only['baseline']['accuracy']
    joint_only = lenet(args + ['-o', str(tmp_path / 'b'), '--epoch-main', '0'])
    assert joint_only['training']['main'] == []
    assert [e['epoch'] for e in joint_only['training']['joint']] == [1]


@pytest.mark.parametrize('steps_before', [0, 2])
def test_interrupt_says_how_to_go_on(data, tmp_path, monkeypatch, capsys,
                                     steps_before):
    """Ctrl-C ends with the command to paste: the same one again when
    nothing was kept, with --resume when an epoch was (2 steps: one epoch
    of 128 samples at batch 64), and that command finishes the run."""
    interrupt_training(monkeypatch, steps_before + 1, 'main_loss',
                       raising=KeyboardInterrupt)
    out = tmp_path / 'run'
    args = (['--data-dir', data, '-o', str(out), '--no-timing',
             '--epoch-main', '2'] + FAST)
    with pytest.raises(SystemExit) as stop:
        lenet(args)
    assert stop.value.code == 130  # as a shell reports Ctrl-C, not an error
    message = capsys.readouterr().err.strip()
    assert 'error' not in message.split(':')[1]
    if steps_before == 0:
        assert 'before anything was kept' in message
        assert message.endswith(shlex.join(args))
        assert not out.exists()
        return
    assert 'Finished epochs are kept in {}'.format(out) in message
    assert message.endswith(shlex.join(args + ['--resume']))
    monkeypatch.undo()
    results = lenet(args + ['--resume'])
    # epoch 1 from before the interrupt, epoch 2 after it
    assert [e['epoch'] for e in results['training']['main']] == [1, 2]
    assert (out / 'results.json').is_file()


def test_the_command_to_go_on_keeps_the_mpi_launch(monkeypatch):
    monkeypatch.setenv('PMI_SIZE', '2')
    command = cli.same_command(['-o', 'my run'], resume=True)
    assert command.startswith('mpiexec -n 2 ')
    assert command.endswith(" -o 'my run' --resume")
    monkeypatch.delenv('PMI_SIZE')
    assert not cli.same_command([], resume=False).startswith('mpiexec')


def test_partial_files_of_a_killed_run_are_cleared(finished, data):
    leftover = os.path.join(finished, '.partial-results.json-x1.tmp')
    open(leftover, 'w').close()
    lenet(['-o', finished, '--resume', '--no-progress', '--data-dir', data,
           '--no-timing'])
    assert not os.path.exists(leftover)


def test_a_machine_without_matplotlib_still_writes_results(data, tmp_path,
                                                           monkeypatch,
                                                           capsys):
    """A bare GPU host may lack matplotlib: results first, figures later."""
    from branchynet.runs import figures
    monkeypatch.setattr(figures, 'available', lambda: False)
    out = tmp_path / 'bare'
    lenet(['--data-dir', data, '-o', str(out), '--timing-samples', '4'] + FAST)
    assert (out / 'results.json').is_file() and (out / 'table1.md').is_file()
    assert not (out / 'figures').exists()
    assert 'make_figures.py' in capsys.readouterr().out


def test_the_command_line_defaults_are_the_configurations():
    """One source of truth: every flag of a run script that names a
    RunConfig field defaults to that field's default for the protocol."""
    from branchynet.paper import protocols
    from branchynet.runs import cli
    from branchynet.runs.config import RunConfig
    for key in protocols.PROTOCOLS:
        protocol = protocols.get(key)
        parser = cli.build_parser(protocol)
        defaults = RunConfig.defaults(protocol)
        parsed = vars(parser.parse_args([]))
        shared = set(parsed) & set(defaults)
        assert len(shared) >= 25
        for name in shared - {'out'}:
            value = parsed[name]
            assert (tuple(value) if isinstance(value, list) else value) == \
                defaults[name], name
