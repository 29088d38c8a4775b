"""Every deployed graph runs the same in every ONNX runtime installed here.

For each network, the early-exit model in the form each runtime runs
(:data:`branchynet.deploy.runtimes.FORMS`) gives ONNX Runtime's labels and exits at
batch 1 and batch 64, at the paper's thresholds, at 0 (nothing leaves
early) and at a large value (everything leaves at exit 1). B-LeNet and
B-AlexNet are the committed trained runs on real test images where the
data are here (B-AlexNet's images scaled to [0, 1]: the runtimes are
compared, not the accuracy); B-ResNet-110 has seeded weights and noise.
A runtime that is not installed skips, saying so.
"""
import os

import numpy
import onnx
import pytest

from branchynet import deploy
from branchynet.data import datasets
from branchynet.deploy import deploy_check, onnx_graph, runtimes
from branchynet.paper import protocols
from branchynet.serialization import load_model
from helpers import run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, '..', 'shared', 'data')
BATCH = 64


def _images(key):
    """64 test images of the network's dataset (seeded noise without data)."""
    protocol = protocols.get(key)
    if key == 'b_lenet' and os.path.isdir(os.path.join(SHARED, 'mnist')):
        return datasets.load_mnist(SHARED, test_size=BATCH).test_x
    cifar = os.path.join(SHARED, 'cifar10')
    if key == 'b_alexnet' and os.path.isdir(cifar):
        raw = datasets.raw_cifar10(cifar, 'data_batch_5')[0][:BATCH]
        return raw.astype(numpy.float32) / 255
    return numpy.random.RandomState(0).rand(
        BATCH, *protocol.input_shape).astype(numpy.float32)


def _network(key):
    net = deploy_check.seeded_network(key)
    model = os.path.join(ROOT, 'figures', key, 'branchynet.npz')
    if os.path.isfile(model):
        load_model(model, net)
    return net


@pytest.fixture(scope='module', params=sorted(protocols.PROTOCOLS))
def deployed(request, tmp_path_factory):
    """``(key, x, thresholds sets, {form: path}, ONNX Runtime's answers)``."""
    key = request.param
    net, x = _network(key), _images(key)
    folder = tmp_path_factory.mktemp(key)
    paths = {}
    for form in deploy.FORMS:
        paths[form] = str(folder / '{}.onnx'.format(form))
        deploy.export(net, paths[form], x[:1], form=form)
    others = net.num_exits - 1
    sets = {'paper': list(protocols.get(key).paper.thresholds),
            'zero': [0.0] * others, 'large': [1e9] * others}
    session = deploy.EarlyExitSession(paths['batched'])
    answers = {name: session.predict(x, t) for name, t in sets.items()}
    return key, x, sets, paths, answers


def test_every_graph_is_valid_by_the_spec_in_what_the_checker_misses(
        deployed):
    for path in deployed[3].values():
        assert onnx_graph.spec_problems(onnx.load(path)) == []


def test_the_committed_graphs_are_valid_by_the_spec():
    found = []
    for folder, _, names in os.walk(os.path.join(ROOT, 'figures')):
        found += [os.path.join(folder, n) for n in names
                  if n.endswith('.onnx')]
    assert found
    for path in found:
        assert onnx_graph.spec_problems(onnx.load(path)) == [], path


def test_the_checker_finds_what_it_should():
    from onnx import TensorProto, helper
    inner = helper.make_graph(
        [helper.make_node('Identity', ['nowhere'], ['y'], name='a')], 'b',
        [], [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node('Identity', ['x'], ['c'], name='a'),
         helper.make_node('If', ['x'], ['d'], name='', then_branch=inner,
                          else_branch=inner)], 'g',
        [helper.make_tensor_value_info('x', TensorProto.BOOL, [])],
        [helper.make_tensor_value_info('d', TensorProto.FLOAT, None)])
    problems = onnx_graph.spec_problems(helper.make_model(graph))
    assert any("'a' is used twice" in p for p in problems)
    assert any('If node has no name' in p for p in problems)
    assert any("reads 'nowhere'" in p for p in problems)
    renamed = onnx_graph.unique_node_names(helper.make_model(graph))
    names = [n.name for n in onnx_graph.nodes(renamed.graph)]
    assert len(set(names)) == len(names) and all(names)


@pytest.mark.parametrize('runtime', runtimes.RUNTIMES)
def test_every_runtime_decides_as_onnx_runtime(deployed, runtime):
    reason = runtimes.unavailable(runtime)
    if reason:
        pytest.skip(reason)
    key, x, sets, paths, answers = deployed
    runner = runtimes.load(runtime, paths[runtimes.FORMS[runtime][0]])
    for name, thresholds in sets.items():
        labels, exits = runner.predict(x, thresholds)
        numpy.testing.assert_array_equal(labels, answers[name][0],
                                         err_msg=(runtime, name))
        numpy.testing.assert_array_equal(exits, answers[name][1],
                                         err_msg=(runtime, name))
        one = runner.predict(x[:1], thresholds)
        assert (one[0][0], one[1][0]) == (answers[name][0][0],
                                          answers[name][1][0])
    assert set(answers['zero'][1]) == {len(sets['zero'])}
    assert set(answers['large'][1]) == {0}


def test_tract_refuses_the_batched_form_with_a_reason(deployed):
    reason = runtimes.unavailable('tract')
    if reason:
        pytest.skip(reason)
    with pytest.raises(ValueError, match='portable form only'):
        runtimes.load('tract', deployed[3]['batched'])


def test_the_portable_form_is_the_batched_one_in_onnx_runtime(deployed):
    key, x, sets, paths, answers = deployed
    portable = deploy.EarlyExitSession(paths['portable'])
    for name, thresholds in sets.items():
        got = portable.predict(x, thresholds)
        numpy.testing.assert_array_equal(got[0], answers[name][0])
        numpy.testing.assert_array_equal(got[1], answers[name][1])
    model = onnx.load(paths['portable'])
    assert not any(n.op_type == 'NonZero'
                   for n in onnx_graph.nodes(model.graph))


def test_runtime_timing_reports_each_runtime_in_turns(monkeypatch):
    """The committed B-LeNet models, timed in the runtimes installed: each
    entry's gain is its main path's median over its early exit's, its
    answers are ONNX Runtime's, and a runtime that is not here is named
    with the reason instead of timed."""
    figures = os.path.join(ROOT, 'figures', 'b_lenet')
    models = {'batched': os.path.join(figures, 'b_lenet_early_exit.onnx'),
              'portable': os.path.join(
                  figures, 'b_lenet_early_exit_portable.onnx'),
              'main_path': os.path.join(figures, 'b_lenet_main_path.onnx')}
    real = runtimes.unavailable
    monkeypatch.setattr(runtimes, 'unavailable', lambda name: (
        'not here (test)' if name == 'reference' else real(name)))
    samples = [numpy.random.RandomState(i).rand(1, 1, 28, 28).astype(
        numpy.float32) for i in range(6)]
    timed = runtimes.time_runtimes(models, samples, [0.025],
                                   ['onnxruntime', 'tract', 'reference'],
                                   repeats=2, warmup=1)
    assert timed['reference'] == {'unavailable': 'not here (test)'}
    for name in ('onnxruntime', 'tract'):
        if real(name):
            continue
        entry = timed[name]
        assert entry['form'] == runtimes.FORMS[name][0]
        assert entry['gain'] == pytest.approx(
            entry['main_path']['median_ms'] /
            entry['early_exit']['median_ms'])
        assert len(entry['early_exit']['repeats_ms']) == 2
        assert entry['differences_from_onnxruntime'] == 0
        assert sum(entry['exit_shares']) == pytest.approx(1)
    table = runtimes.markdown(timed)
    assert 'not installed: not here (test)' in table
    assert table.count('\n') == 4  # header, rule, three runtimes


def test_the_runtimes_command_writes_its_report(tmp_path):
    out = tmp_path / 'runtimes'
    measured = run_main('deploy', [
        'runtimes', '--run', os.path.join(ROOT, 'figures', 'b_lenet'),
        '--runtimes', 'onnxruntime', '--samples', '3', '--repeats', '1',
        '--out', str(out)])
    assert [m['network'] for m in measured] == ['b_lenet']
    assert measured[0]['thresholds'] == [0.025]  # the paper's T
    assert measured[0]['images'].startswith('uniform noise')
    entry = measured[0]['runtimes']['onnxruntime']
    assert entry['differences_from_onnxruntime'] == 0
    assert sorted(os.listdir(out)) == ['.branchynet-outputs.json',
                                       'runtimes.json', 'runtimes.md']
    assert 'onnxruntime ' + entry['version'] in (out / 'runtimes.md').read_text()
