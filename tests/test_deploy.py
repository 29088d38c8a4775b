"""The deployed early-exit model: its contract, its parity with Chainer, its early exit."""
import itertools
import json
import os
import shutil

import numpy
import pytest

onnx = pytest.importorskip('onnx')
onnxruntime = pytest.importorskip('onnxruntime')

from helpers import synthetic_data_dir, script_module  # noqa: E402

from branchynet import deploy  # noqa: E402
from branchynet.deploy import deploy_check
from branchynet.paper import protocols
from branchynet.serialization import load_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = os.path.join(ROOT, 'figures', 'b_lenet')
MNIST = os.path.join(ROOT, '..', 'shared', 'data', 'mnist')
SIZES = {'b_lenet': 64, 'b_alexnet': 32, 'b_resnet110': 6}


def images(net, size, seed=1):
    return numpy.random.RandomState(seed).rand(
        size, *net.input_shape).astype(numpy.float32)


@pytest.fixture(scope='module', params=sorted(SIZES))
def exported(request, tmp_path_factory):
    key = request.param
    net = deploy_check.seeded_network(key)
    x = images(net, SIZES[key])
    folder = tmp_path_factory.mktemp(key)
    deploy.export(net, str(folder / 'ee.onnx'), x[:2])
    deploy.export_main_path(net, str(folder / 'main.onnx'), x[:2])
    return key, net, x, folder


def test_the_model_keeps_its_contract(exported):
    key, net, _, folder = exported
    model = onnx.load(str(folder / 'ee.onnx'))
    onnx.checker.check_model(model)
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(inputs) == ['images', 'thresholds']
    assert inputs['images'].elem_type == onnx.TensorProto.FLOAT
    assert inputs['images'].shape.dim[0].dim_param == 'batch'
    assert inputs['thresholds'].elem_type == onnx.TensorProto.FLOAT
    assert inputs['thresholds'].shape.dim[0].dim_value == net.num_exits - 1
    from branchynet.deploy import onnx_graph
    assert onnx_graph.spec_problems(model) == []
    outputs = {o.name: o.type.tensor_type.elem_type
               for o in model.graph.output}
    assert outputs == {'label': onnx.TensorProto.INT64,
                       'exit': onnx.TensorProto.INT64}
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta['network'] == net.title
    assert int(meta['num_exits']) == net.num_exits
    assert json.loads(meta['input_shape']) == list(net.input_shape)


def test_labels_and_exits_are_chainers_at_every_threshold_of_the_sweep(
        exported):
    key, net, x, folder = exported
    session = deploy.EarlyExitSession(str(folder / 'ee.onnx'))
    values = protocols.get(key).threshold_list
    if key == 'b_resnet110':
        values = values[::4]
    vectors = [list(v) for v in itertools.product(values,
                                                  repeat=net.num_exits - 1)]
    checked = deploy_check.parity(net, session, x, vectors)
    assert all(c['unexplained'] == [] for c in checked)
    differences = sum(len(c['within_rounding']) for c in checked)
    assert differences <= len(x) * len(vectors) // 1000  # rare, and named
    # the sweep sends samples out at every exit somewhere
    assert all(any(c['exit_shares'][n] > 0 for c in checked)
               for n in range(net.num_exits))


def test_the_main_path_is_chainers_main_network(exported):
    key, net, x, folder = exported
    session = deploy.EarlyExitSession(str(folder / 'main.onnx'))
    labels, exits = session.predict(x)
    expected = net.predict(x, thresholds=[0.0] * (net.num_exits - 1))
    numpy.testing.assert_array_equal(labels, expected[0])
    assert set(exits) == {net.num_exits - 1}
    with pytest.raises(ValueError, match='takes no thresholds'):
        session.predict(x, [0.1] * (net.num_exits - 1))


def test_for_one_sample_nothing_past_the_exit_taken_runs(exported, tmp_path):
    """ONNX Runtime's profile lists the nodes that ran."""
    key, net, x, folder = exported
    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / 'profile')
    session = onnxruntime.InferenceSession(str(folder / 'ee.onnx'), options,
                                           providers=['CPUExecutionProvider'])
    every = numpy.full(net.num_exits - 1, numpy.inf, numpy.float32)
    label, exit_ = session.run(['label', 'exit'], {'images': x[:1],
                                                   'thresholds': every})
    assert exit_[0] == 0
    with open(session.end_profiling()) as f:
        ran = {e['name'] for e in json.load(f) if e.get('cat') == 'Node'}
    assert any(name.startswith('s0_') for name in ran)
    assert not any(name.startswith(('s1_', 'h1_')) for name in ran)


def test_thresholds_are_a_runtime_input_checked_as_predict_checks(exported):
    key, net, x, folder = exported
    session = deploy.EarlyExitSession(str(folder / 'ee.onnx'))
    none_out = session.predict(x, [0.0] * (net.num_exits - 1))[1]
    all_out = session.predict(x, [float('inf')] * (net.num_exits - 1))[1]
    assert set(none_out) == {net.num_exits - 1} and set(all_out) == {0}
    with pytest.raises(ValueError, match='one value per non-final exit'):
        session.predict(x, [0.1] * net.num_exits)
    with pytest.raises(ValueError, match='non-negative'):
        session.predict(x, [-1.0] * (net.num_exits - 1))
    with pytest.raises(ValueError, match='takes images of shape'):
        session.predict(x[:, :, 1:], [0.1] * (net.num_exits - 1))
    empty = session.predict(x[:0], [0.1] * (net.num_exits - 1))
    assert [a.shape for a in empty] == [(0,), (0,)]


def test_the_committed_deployed_model_is_the_committed_runs():
    path = os.path.join(COMMITTED, 'b_lenet_early_exit.onnx')
    net = load_model(os.path.join(COMMITTED, 'branchynet.npz'),
                     protocols.get('b_lenet').network())
    with numpy.load(os.path.join(COMMITTED, 'port_kit',
                                 'reference.npz')) as kit:
        x = kit['x']
    session = deploy.EarlyExitSession(path)
    for thresholds in ([0.025], [0.0001], [0.75]):
        ours = net.predict(x, thresholds=thresholds)
        theirs = session.predict(x, thresholds)
        numpy.testing.assert_array_equal(theirs[0], ours[0])
        numpy.testing.assert_array_equal(theirs[1], ours[1])


@pytest.mark.skipif(not os.path.isdir(MNIST), reason='real MNIST is not in '
                    '../shared/data/mnist')
def test_the_committed_model_on_all_of_mnist():
    from branchynet.data import datasets
    x = datasets.load_mnist(MNIST, train_size=1).test_x
    net = load_model(os.path.join(COMMITTED, 'branchynet.npz'),
                     protocols.get('b_lenet').network())
    session = deploy.EarlyExitSession(
        os.path.join(COMMITTED, 'b_lenet_early_exit.onnx'))
    checked = deploy_check.parity(net, session, x, [[0.0001], [0.025], [0.5]])
    assert all(c['unexplained'] == [] for c in checked)


@pytest.mark.parametrize('preprocessing', ['scale', 'zca', 'gcn'])
def test_a_runs_images_are_preprocessed_as_that_run_preprocessed_them(
        tmp_path_factory, preprocessing):
    """The deployed rows' accuracy is on the images the run was tested on:
    its preprocessing, its ZCA fitted on its own training images (here
    without the 20 held out for validation)."""
    from branchynet.data import datasets
    from branchynet.deploy import deploy_report
    from branchynet.runs.config import RunConfig
    data_dir = synthetic_data_dir(tmp_path_factory, mnist=(16, 8),
                                  cifar10_per_batch=40)
    run = RunConfig.for_protocol(
        'b_alexnet', out='run', test_batch='data_batch_5',
        preprocessing=preprocessing, validation_size=20,
        unofficial_data=True)
    x, t, _ = deploy_report.test_images('b_alexnet', run, data_dir, 12,
                                        official=False)
    expected = datasets.load_cifar10(data_dir, 'data_batch_5', preprocessing,
                                     validation_size=20, official=False)
    numpy.testing.assert_array_equal(x, expected.test_x[:12])
    numpy.testing.assert_array_equal(t, expected.test_t[:12])


def deploy_experiment():
    return script_module('deploy')


@pytest.mark.parametrize('at, thresholds, label', [
    ('paper', [0.025], ''),
    # the committed run's knee (its results.json), chosen on its test set
    ('knee', [0.75], ' at its knee [chosen on test]')])
def test_measure_reports_the_deployed_rows_of_table1(tmp_path, at,
                                                     thresholds, label):
    """The experiment end to end on the committed run and synthetic MNIST:
    its test accuracy is Chainer's at the thresholds asked for, and Table I
    gets both deployed rows."""
    from branchynet.data import datasets
    from branchynet.data.synthetic import write_mnist
    from branchynet.runs import table1
    write_mnist(str(tmp_path / 'data' / 'mnist'), train=16, test=40)
    report = deploy_experiment().main([
        'measure', '--run', COMMITTED, '--networks', 'b_lenet', '--at', at,
        '--data-dir', str(tmp_path / 'data'), '--unofficial-data',
        '--timing-samples', '4', '--parity-size', 'b_lenet=10',
        '--repeats', '1', '--batch', '8', '--out', str(tmp_path / 'out')])
    test = report['networks']['b_lenet']['test']
    # the parity check on the first 10 images, at every vector of the sweep
    parity = report['networks']['b_lenet']['parity']
    assert (parity['samples'], parity['vectors']) == (10, 17)
    assert test['thresholds'] == thresholds
    data = datasets.load_mnist(str(tmp_path / 'data' / 'mnist'),
                               train_size=1, official=False)
    net = load_model(os.path.join(COMMITTED, 'branchynet.npz'),
                     protocols.get('b_lenet').network())
    labels, exits = net.predict(data.test_x, thresholds=test['thresholds'])
    assert test['samples'] == 40
    assert test['early_exit_accuracy'] == pytest.approx(
        100 * (labels == data.test_t).mean())
    assert test['exit_shares'] == pytest.approx(
        numpy.bincount(exits, minlength=2) / 40)
    # the measured models were scratch files: only the report is written
    assert sorted(os.listdir(tmp_path / 'out')) == [
        '.branchynet-outputs.json', 'deploy.json', 'deploy.md']
    rows = table1.write([str(tmp_path / 'out')], str(tmp_path / 'table'))
    deployed = [r for r in rows if 'deployed' in r['Row']]
    assert [r['Row'].split(' (')[0] for r in deployed] == [
        'LeNet deployed: main path after joint training',
        'B-LeNet deployed early exit' + label]
    assert deployed[1]['Acc. (%)'] == '{:.2f}'.format(
        test['early_exit_accuracy'])
    assert 'ONNX Runtime ' + onnxruntime.__version__ in deployed[1]['Row']


def test_a_run_without_a_knee_stops_before_any_work(tmp_path):
    """``--at knee`` needs the run's results.json: without it the command
    ends with one line, having written nothing."""
    run = tmp_path / 'run'
    run.mkdir()
    for name in ('run.json', 'baseline.npz', 'branchynet.npz'):
        shutil.copy(os.path.join(COMMITTED, name), str(run / name))
    with pytest.raises(SystemExit, match='--at knee: .* has no results.json'):
        deploy_experiment().main(['measure', '--run', str(run), '--at',
                                  'knee', '--out', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()
