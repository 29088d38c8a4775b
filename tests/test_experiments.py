"""End-to-end smoke runs of the experiment scripts on tiny synthetic data."""
import csv
import json
import os
import subprocess
import sys

import chainer
import numpy
import pytest

from helpers import Interrupted, assert_same_models, interrupt_training
from branchynet import sweep
from branchynet.loss import BranchyLoss
from branchynet.paper import protocols
from branchynet.runs import cli, figures, report
from branchynet.utils import files, ownership

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MNIST = os.path.join(ROOT, '..', 'shared', 'data', 'mnist')
# synthetic sets of 128-256 training images: a batch that fits them
FAST = ['--smoke', '--no-progress', '--unofficial-data', '-b', '64']


SCRIPTS = ['run_b_lenet', 'run_b_alexnet', 'run_b_resnet110',
           'run_alexnet_branch_layers', 'make_figures', 'benchmark',
           'reproduce_paper', 'make_table1', 'export_port_kit', 'compare_port',
           'run_elastic']


@pytest.mark.parametrize('name', SCRIPTS)
def test_every_script_runs_and_explains_its_flags(name):
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'experiments', name + '.py'),
         '--help'], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '--out' in done.stdout
    # a default is shown where there is one, never as "None"
    assert '(default: None)' not in ' '.join(done.stdout.split())
    if name.startswith('run_'):
        assert '--device' in done.stdout and '(default: ' in done.stdout


DATA_SIZES = {'mnist': (256, 64), 'cifar10_per_batch': 40}


@pytest.fixture(scope='module')
def lenet_run(data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('runs') / 'b_lenet')
    results = cli.main('b_lenet', ['--data-dir', data, '-o', out,
                                   '--thresholds', '0.5'] + FAST)
    return out, results


def test_lenet_run_writes_every_result_file(lenet_run):
    out, results = lenet_run
    for name in ('baseline.npz', 'branchynet.npz', 'exit_outputs.npz',
                 'results.json', 'sweep.csv', 'table1.csv', 'table1.md',
                 'figures/fig3_b_lenet_cpu.png', 'figures/fig3_b_lenet_cpu.pdf',
                 'figures/fig4_b_lenet.png', 'figures/training_b_lenet.pdf'):
        assert os.path.isfile(os.path.join(out, name)), name
    assert not [n for n in os.listdir(out) if n.endswith('.tmp')]
    assert files.read_json(os.path.join(out, 'results.json')) == results


def test_lenet_results_content(lenet_run):
    out, results = lenet_run
    assert results['network'] == 'B-LeNet' and results['baseline_name'] == 'LeNet'
    assert results['data']['test'] == 't10k-images-idx3-ubyte'
    assert results['data']['test_size'] == 64
    assert results['config']['epoch_main'] == 1 and results['config']['seed'] == 0
    assert results['environment']['chainer'] == '7.8.1'
    assert [len(results['training'][p]) for p in ('main', 'joint')] == [1, 1]
    points = results['sweep']['points']
    assert len(points) == 17  # the LeNet threshold list over one exit
    cpu = results['timing']['cpu']
    assert len(cpu['predicted_ms']) == 17 and len(cpu['exit_path_ms']) == 2
    knee = cpu['knee']
    assert knee['thresholds'] == points[knee['index']]['thresholds']
    assert knee['index'] in cpu['frontier']
    assert knee['measured']['median_ms'] > 0 and knee['predicted_ms'] > 0
    assert cpu['user']['thresholds'] == [0.5]
    assert 'trunk_to_exit' in cpu['reference_style']


def test_lenet_tables(lenet_run):
    out, results = lenet_run
    with open(os.path.join(out, 'table1.csv')) as f:
        rows = list(csv.DictReader(f))
    assert [r['Network'] for r in rows] == [
        'LeNet', 'LeNet' + report.AFTER_JOINT_SUFFIX, 'B-LeNet',
        'B-LeNet at --thresholds']  # 0.5, not the paper's 0.025
    # the reference's baseline: the final exit of the jointly trained net
    assert rows[1]['Acc. (%)'] == '{:.2f}'.format(
        100 * results['exit_accuracy'][-1])
    assert results['baseline_after_joint']['model'] == 'branchynet.npz'
    assert results['baseline_after_joint']['accuracy'] == \
        results['exit_accuracy'][-1]
    assert list(rows[0]) == report.TABLE1_COLUMNS + ['Test set', 'Train set']
    assert {r['Test set'] for r in rows} == {'t10k-images-idx3-ubyte (64 samples)'}
    knee = results['timing']['cpu']['knee']
    assert rows[2]['Acc. (%)'] == '{:.2f}'.format(100 * knee['accuracy'])
    assert rows[3]['Thrshld. T'] == '0.5'
    gain = results['timing']['cpu']['baseline']['median_ms'] / \
        knee['measured']['median_ms']
    assert rows[2]['Gain'] == '{:.1f}x'.format(gain)
    markdown = open(os.path.join(out, 'table1.md')).read()
    assert '| CPU | LeNet |' in markdown
    assert 'test = t10k-images-idx3-ubyte (64 samples)' in markdown
    with open(os.path.join(out, 'sweep.csv')) as f:
        sweep_rows = list(csv.DictReader(f))
    assert len(sweep_rows) == 17 and float(sweep_rows[0]['T1']) == 0.0001
    assert sweep_rows[0]['test_set'] == 't10k-images-idx3-ubyte (64 samples)'
    assert float(sweep_rows[3]['cpu_predicted_ms']) == pytest.approx(
        results['timing']['cpu']['predicted_ms'][3])


def test_figures_regenerate_from_the_results_file_alone(lenet_run, tmp_path):
    out, _ = lenet_run
    alone = tmp_path / 'copy'
    alone.mkdir()
    (alone / 'results.json').write_text(open(os.path.join(out,
                                                          'results.json')).read())
    figures.figures_from_files([str(alone)], str(tmp_path / 'figs'))
    assert sorted(os.listdir(tmp_path / 'figs')) == sorted(
        [ownership.RECORD] + ['{}.{}'.format(stem, ext)
         for stem in ('fig3_b_lenet_cpu', 'fig4_b_lenet', 'training_b_lenet')
         for ext in ('png', 'pdf')])


def test_reference_protocols():
    lenet, alex, resnet = (protocols.PROTOCOLS[key] for key in (
        'b_lenet', 'b_alexnet', 'b_resnet110'))
    assert (lenet.epoch_main, lenet.epoch_joint, lenet.batchsize) == (50, 100, 512)
    assert (alex.epoch_main, alex.epoch_joint, alex.batchsize) == (50, 100, 512)
    assert (resnet.epoch_main, resnet.epoch_joint, resnet.batchsize) == (100, 100, 64)
    assert len(lenet.threshold_list) == len(resnet.threshold_list) == 17
    assert resnet.threshold_list == lenet.threshold_list
    assert len(alex.threshold_list) == 11


def test_alexnet_run_on_a_held_out_batch(data, tmp_path):
    results = cli.main('b_alexnet', FAST + [
        '--data-dir', data, '-o', str(tmp_path / 'alex'), '--test-batch',
        'data_batch_5', '--preprocessing', 'scale', '--cache-dir',
        str(tmp_path / 'cache'), '--train-size', '32', '--test-size', '16',
        '--timing-samples', '4', '-b', '16'])
    assert results['data']['test'] == 'data_batch_5'
    assert results['data']['held_out_training_batch']
    assert len(results['sweep']['points']) == 121
    assert 'data_batch_5' in open(tmp_path / 'alex' / 'table1.md').read()


def test_resnet_run(data, tmp_path):
    results = cli.main('b_resnet110', FAST + [
        '--data-dir', data, '-o', str(tmp_path / 'resnet'), '--test-batch',
        'data_batch_5', '--preprocessing', 'scale', '--train-size', '16',
        '--test-size', '4', '-b', '16', '--timing-samples', '2',
        '--timing-warmup', '0', '--cache-dir', str(tmp_path / 'cache')])
    assert results['network'] == 'B-ResNet-110'
    # the reference ResNet experiment sweeps the 17-value list over 2 exits
    assert len(results['sweep']['points']) == 17 ** 2
    assert len(results['timing']['cpu']['exit_path_ms']) == 3


def test_branch_layers_run(data, tmp_path):
    out = tmp_path / 'layers'
    summary = cli.fig5_main(FAST + [
        '--data-dir', data, '-o', str(out), '--test-batch', 'data_batch_5',
        '--preprocessing', 'scale', '--convs', '0', '3', '--cache-dir',
        str(tmp_path / 'cache'), '--train-size', '32', '--test-size', '16',
        '-b', '16'])
    assert [v['branch1_convs'] for v in summary['variants']] == [0, 3]
    assert (out / 'figures' / 'fig5_alexnet_branch_layers.png').is_file()
    saved = files.read_json(str(out / 'summary.json'))
    assert saved['variants'][1]['final_exit_accuracy'] == \
        files.read_json(saved['variants'][1]['results'])['exit_accuracy'][-1]


def test_fig5_variants_share_a_finished_runs_main_network(data, tmp_path):
    from branchynet.serialization import load_model
    common = FAST + ['--data-dir', data, '--test-batch', 'data_batch_5',
                     '--preprocessing', 'scale', '--cache-dir',
                     str(tmp_path / 'cache'), '--train-size', '32',
                     '--test-size', '16', '-b', '16', '--no-timing']
    alexnet = tmp_path / 'alex'
    cli.main('b_alexnet', common + ['-o', str(alexnet), '--epoch-joint', '0'])
    out = tmp_path / 'layers'
    summary = cli.fig5_main(common + ['-o', str(out), '--convs', '1',
                                      '--main-from', str(alexnet)])
    variant = out / 'exit1_1conv'
    assert not (variant / 'main_phase').exists()  # no main phase trained
    taken = load_model(str(variant / 'baseline.npz'),
                       protocols.fig5_variant(1).network())
    source = load_model(str(alexnet / 'baseline.npz'),
                        protocols.get('b_alexnet').network())
    x = numpy.random.RandomState(0).rand(4, 3, 32, 32).astype(numpy.float32)
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(taken.main_forward(x).array,
                                         source.main_forward(x).array)
    results = files.read_json(str(variant / 'results.json'))
    assert results['config']['main_from'] == str(alexnet)
    assert [e['epoch'] for e in results['training']['main']] == [1]
    assert summary['variants'][0]['branch1_convs'] == 1
    with pytest.raises(SystemExit):  # a network with another main network
        cli.main('b_lenet', FAST + ['--data-dir', data, '-o',
                                    str(tmp_path / 'lenet'),
                                    '--main-from', str(alexnet)])
    assert not (tmp_path / 'lenet').exists()  # refused before any output


def test_missing_test_batch_fails_clearly_and_writes_nothing(data, tmp_path,
                                                            capsys):
    out = tmp_path / 'alex'
    with pytest.raises(SystemExit, match='test batch .* not found.*--test-batch'):
        cli.main('b_alexnet', ['--data-dir', data, '-o', str(out)] + FAST)
    assert not out.exists() or os.listdir(out) == []


@pytest.mark.parametrize('flags, message', [
    (['--thresholds', '0.1', '0.2'], 'expected 1, got 2'),
    (['--thresholds', '-1'], 'non-negative'),
    (['--branch-weights', '1'], 'expected 2, got 1'),
    (['--threshold-list', '0.1', 'nan'], "--threshold-list: not a number: 'nan'"),
    (['--timing-samples', '-3'], '--timing-samples must be at least 0'),
])
def test_bad_arguments_stop_before_any_work(data, tmp_path, capsys, flags,
                                            message):
    out = tmp_path / 'run'
    with pytest.raises(SystemExit) as stop:
        cli.main('b_lenet', ['--data-dir', data, '-o', str(out)] +
                   FAST + flags)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_refuses_to_overwrite_a_run_without_resume(lenet_run, data):
    out, _ = lenet_run
    with pytest.raises(SystemExit, match='already holds a b_lenet run '
                                         r'\(finished\): pass --resume'):
        cli.main('b_lenet', ['--data-dir', data, '-o', out] + FAST)


@pytest.mark.parametrize('snapshot_minutes', [None, 0])
def test_resume_after_interruption_gives_the_same_weights(
        data, tmp_path, monkeypatch, snapshot_minutes):
    """Interrupted in the joint phase's second epoch, resumed: the same
    weights as a run that never stopped, from the epoch's start (snapshots
    at epoch ends) or from the last iteration before the interrupt (a
    snapshot after every iteration: minutes 0)."""
    from branchynet import training
    if snapshot_minutes is not None:
        monkeypatch.setattr(training, 'SNAPSHOT_MINUTES', snapshot_minutes)
    flags = ['--data-dir', data, '--epoch-main', '2', '--epoch-joint', '3',
             '-b', '64', '--no-timing'] + FAST  # 4 steps per epoch
    cli.main('b_lenet', ['-o', str(tmp_path / 'straight')] + flags)

    joint_loss = interrupt_training(monkeypatch, 6)  # joint epoch 2
    with pytest.raises(Interrupted):
        cli.main('b_lenet', ['-o', str(tmp_path / 'resumed')] + flags)
    assert not (tmp_path / 'resumed' / 'branchynet.npz').exists()
    snapshot, = (tmp_path / 'resumed' / 'joint_phase').glob('snapshot_*')
    with numpy.load(snapshot) as saved:  # 5 joint steps were made, or 4
        assert int(saved['updater/iteration']) == (
            5 if snapshot_minutes == 0 else 4)
    monkeypatch.setattr(BranchyLoss, 'forward', joint_loss)
    results = cli.main('b_lenet', ['-o', str(tmp_path / 'resumed'),
                                          '--resume'] + flags)

    assert_same_models(str(tmp_path / 'straight'), str(tmp_path / 'resumed'))
    assert [e['epoch'] for e in results['training']['joint']] == [1, 2, 3]
    straight = json.load(open(tmp_path / 'straight' / 'results.json'))
    assert straight['sweep'] == results['sweep']

    # Adam's step counts in the final snapshot: 8 main + 12 joint steps; the
    # exit-1 head started the joint phase with a fresh state (as the
    # reference's new per-branch optimizer), the trunk and final head did not.
    for run in ('straight', 'resumed'):
        snapshot, = (tmp_path / run / 'joint_phase').glob('snapshot_epoch_*')
        with numpy.load(snapshot) as saved:
            def steps(param):
                return int(saved['updater/optimizer:main/net/{}/t'.format(
                    param)])
            assert steps('heads/0/l2/W') == steps('heads/0/l5/b') == 12
            assert steps('trunk/0/l0/W') == steps('heads/1/l0/W') == 20


@pytest.mark.skipif(not os.path.isdir(SHARED_MNIST),
                    reason='real MNIST (../shared/data/mnist) not present')
def test_b_lenet_learns_real_mnist(tmp_path):
    results = cli.main('b_lenet', [
        '--data-dir', SHARED_MNIST, '-o', str(tmp_path / 'real'),
        '--train-size', '10000', '--test-size', '1000', '--epoch-main', '1',
        '--epoch-joint', '1', '-b', '32', '--no-timing', '--no-progress'])
    # chance is 10 %; one pass over 10000 images gives about 92 and 95 %
    assert results['baseline']['accuracy'] > 0.9
    assert results['exit_accuracy'][-1] > 0.9
    assert results['exit_accuracy'][0] > 0.8


def test_thresholds_chosen_on_a_validation_split(data, tmp_path):
    out = tmp_path / 'valid'
    results = cli.main('b_lenet', FAST + [
        '--data-dir', data, '-o', str(out), '--validation-size', '64',
        '--timing-samples', '8', '--select', 'accuracy-drop:100',
        'latency:0.000001', 'exit-share:0'])
    assert results['data']['validation']['size'] == 64
    assert results['data']['train_size'] == 256 - 64
    validation = results['validation']
    assert len(validation['sweep']['points']) == 17
    assert (out / 'exit_outputs_validation.npz').is_file()
    cpu = results['timing']['cpu']
    rules = [s['rule'] for s in cpu['selections']]
    assert rules == ['knee', 'accuracy-drop:100', 'latency:1e-06',
                     'exit-share:0']
    drop = cpu['selections'][1]
    assert drop['selected_on'] == 'validation'
    # within 100 points of the baseline: every point; the fastest on the
    # validation sweep, and separately on the test sweep
    valid_times = [sweep.predicted_ms(p['exit_shares'],
                                      [c['median_ms'] for c in
                                       cpu['exit_path_ms']])
                   for p in validation['sweep']['points']]
    assert drop['index'] == min(range(17), key=lambda i: (
        valid_times[i], -validation['sweep']['points'][i]['accuracy'], i))
    assert cpu['accuracy-drop:100']['index'] == drop['index']
    assert cpu['accuracy-drop:100 oracle']['index'] == drop['oracle_index']
    # a budget below the cheapest path has no point; it is said, not timed
    assert cpu['selections'][2]['index'] is None
    assert 'latency:1e-06' not in cpu
    with open(out / 'table1.csv') as f:
        names = [r['Network'] for r in csv.DictReader(f)]
    assert 'B-LeNet [knee, chosen on validation]' in names
    assert 'B-LeNet [knee, oracle: chosen on test]' in names
    assert 'B-LeNet [accuracy-drop:100, oracle: chosen on test]' in names
    assert (out / 'figures' / 'fig3_b_lenet_cpu.png').is_file()
