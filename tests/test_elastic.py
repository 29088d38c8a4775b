"""Elastic networks: the builder, the frozen-backbone phase, budgets."""
import math

import chainer
import numpy
import pytest

from branchynet import BranchyLoss, deploy, elastic, sweep
from branchynet.deploy import port_kit
from networks import elastic_cifar10


def small(backbone='mobilenet', **kwargs):
    numpy.random.seed(0)
    sizes = {'width': 0.125} if backbone == 'mobilenet' else {'n': 1}
    return elastic_cifar10.get_network(backbone, **sizes, **kwargs)


def batch(size=6, seed=1):
    rng = numpy.random.RandomState(seed)
    return (rng.rand(size, 3, 32, 32).astype(numpy.float32),
            rng.randint(0, 10, size).astype(numpy.int32))


@pytest.mark.parametrize('count, at, every, expected', [
    (5, None, None, [0, 1, 2, 3]),
    (5, None, 2, [1, 3]),
    (7, None, 3, [2, 5]),
    (5, [3, 0, 3], None, [0, 3]),
    (1, None, None, []),
])
def test_heads_go_where_asked_and_never_after_the_last_block(
        count, at, every, expected):
    assert elastic.head_positions(count, at, every) == expected


@pytest.mark.parametrize('at, every, message', [
    ([4], None, 'follow blocks 0 .. 3'),
    ([-1], None, 'follow blocks 0 .. 3'),
    ([1], 2, 'not both'),
    (None, 0, 'at least 1'),
])
def test_impossible_places_are_refused(at, every, message):
    with pytest.raises(ValueError, match=message):
        elastic.head_positions(5, at, every)


@pytest.mark.parametrize('backbone, blocks', [('mobilenet', 8),
                                              ('resnet', 4)])
def test_an_exit_after_every_block_each_with_the_papers_head(backbone,
                                                             blocks):
    net = small(backbone)
    assert net.num_exits == blocks and net.branch_weights == (1.0,) * blocks
    for head in net.heads:
        names = [repr(layer) for layer in head.layers()]
        assert names[0].startswith('global_average_pool')
        assert names[1].startswith('dropout(ratio=0.5)')
    x, _ = batch(2)
    with chainer.using_config('train', False):
        ys = net(x)
    assert [y.shape for y in ys] == [(2, 10)] * blocks


def test_the_plain_backbone_is_the_elastic_networks_main_network():
    plain, full = small(elastic_outputs=False), small()
    assert plain.num_exits == 1

    def arrays(links):
        return [p.array for link in links for p in link.params()]
    for got, expected in zip(arrays(plain.trunk) + arrays(plain.heads),
                             arrays(full.trunk) + arrays(full.heads[-1:])):
        numpy.testing.assert_array_equal(got, expected)
    x, _ = batch(2)
    with chainer.using_config('train', False):  # same seed, same weights
        numpy.testing.assert_array_equal(plain.main_forward(x).array,
                                         full.main_forward(x).array)


def test_every_kth_block_and_a_chosen_list():
    assert small(every=3).num_exits == 3  # after blocks 2 and 5, and final
    assert small(at=[0, 6]).num_exits == 3


def snapshot(links):
    return {name: p.copy() for link in links
            for name, p in port_kit.weights(link).items()}


def test_the_frozen_phase_changes_nothing_of_the_backbone_but_trains_heads():
    net = small('resnet')  # BatchNorm everywhere: its statistics must stay
    policy = elastic.FrozenBackboneLoss(net)
    optimizer = chainer.optimizers.Adam()
    optimizer.setup(policy)
    policy.freeze()
    backbone = snapshot(policy.backbone())
    heads = snapshot(net.heads[:-1])
    x, t = batch(8)
    with chainer.using_config('train', True):
        for _ in range(3):
            optimizer.update(policy, x, t)
    after = snapshot(policy.backbone())
    for name, value in backbone.items():
        numpy.testing.assert_array_equal(after[name], value, err_msg=name)
    moved = snapshot(net.heads[:-1])
    for name, value in heads.items():
        if name.endswith('/W'):
            assert not numpy.array_equal(moved[name], value), name
    # Adam did not even count steps for the frozen parameters
    assert all(p.update_rule.t == 0 for link in policy.backbone()
               for p in link.params())
    assert all(p.update_rule.t == 3 for p in net.heads[0].params())


@pytest.mark.parametrize('loss', ['joint', 'frozen'])
def test_every_head_gets_gradient(loss):
    net = small('mobilenet')
    policy = BranchyLoss(net) if loss == 'joint' else \
        elastic.FrozenBackboneLoss(net)
    x, t = batch(4)
    net.cleargrads()
    with chainer.using_config('train', True):
        policy(x, t).backward()
    trained = net.heads if loss == 'joint' else net.heads[:-1]
    for n, head in enumerate(trained):
        W = [p for p in head.params()][0]
        assert W.grad is not None and numpy.abs(W.grad).max() > 0, n
    if loss == 'frozen':
        assert all(p.grad is None for p in net.trunk.params())


def test_a_budget_picks_the_deepest_exit_that_fits():
    assert elastic.exit_for_budget([10, 20, 35, 50], 34) == \
        (1, [0.0, math.inf, 0.0])
    assert elastic.exit_for_budget([10, 20, 35, 50], 50) == \
        (3, [0.0, 0.0, 0.0])
    assert elastic.exit_for_budget([10, 20], 10) == (0, [math.inf])
    with pytest.raises(ValueError, match='cheapest costs 10'):
        elastic.exit_for_budget([10, 20], 9.5)


def test_the_budgets_thresholds_send_every_sample_to_that_exit():
    net = small()
    costs = elastic.path_multiply_adds(net)
    assert costs == sorted(costs) and len(set(costs)) == len(costs)
    x, _ = batch(5)
    for budget, expected in ((costs[2], 2), (costs[4] + 1, 4),
                             (costs[-1], net.num_exits - 1)):
        chosen, thresholds = elastic.exit_for_budget(costs, budget)
        assert chosen == expected
        assert set(net.predict(x, thresholds=thresholds)[1]) == {expected}


def test_sweeps_for_many_exits():
    net = small()
    x, t = batch(12)
    outputs = sweep.exit_outputs(net, x, t)
    alone = elastic.each_exit_alone(outputs)
    assert len(alone) == net.num_exits
    points = elastic.shared_threshold_sweep(outputs, [0.0, 0.5, 10.0])
    assert points[0]['exit_shares'][-1] == 1.0  # T = 0: all at the end
    assert points[-1]['exit_shares'][0] == 1.0  # T = 10 > ln 10: exit 1
    assert points[-1]['accuracy'] == alone[0]


def test_the_port_kit_and_the_deployed_model_work_on_it(tmp_path):
    net = small()
    described = port_kit.describe_network(net)
    grouped = described['trunk'][1][0]['layers'][0]['layers'][0]
    assert grouped['type'] == 'conv2d' and grouped['groups'] == \
        grouped['in_channels'] == grouped['out_channels']
    assert described['heads'][0][0]['type'] == 'global_average_pool'
    x, _ = batch(6)
    deploy.export(net, str(tmp_path / 'elastic.onnx'), x[:2])
    session = deploy.EarlyExitSession(str(tmp_path / 'elastic.onnx'))
    outputs = sweep.exit_outputs(net, x, numpy.zeros(6, numpy.int32))
    for t in (0.0, float(numpy.median(outputs.entropies[:-1])), 10.0):
        thresholds = [t] * (net.num_exits - 1)
        labels, exits = net.predict(x, thresholds=thresholds)
        got = session.predict(x, thresholds)
        numpy.testing.assert_array_equal(got[1], exits)
        numpy.testing.assert_array_equal(got[0], labels)


def test_the_study_runs_end_to_end_and_resumes(tmp_path):
    """The script on synthetic CIFAR-10: both arms, the table, the figure;
    run again with --resume it loads every phase's model instead."""
    import json

    from branchynet.data.synthetic import write_cifar10
    from helpers import script_module
    run_elastic = script_module('run_elastic')
    write_cifar10(str(tmp_path / 'data' / 'cifar10' / 'cifar-10-batches-bin'),
                  per_batch=64,
                  test=False)
    flags = ['--smoke', '--unofficial-data', '--preprocessing', 'scale',
             '--test-batch', 'data_batch_5',
             '--data-dir', str(tmp_path / 'data'), '--cache-dir',
             str(tmp_path / 'cache'), '--backbones', 'mobilenet', 'resnet',
             '--width', '0.125', '--resnet-n', '1', '--no-progress',
             '--out', str(tmp_path / 'study')]
    study = run_elastic.main(flags)
    mobilenet, resnet = study['backbones']
    assert (mobilenet['exits'], resnet['exits']) == (8, 4)
    for result in study['backbones']:
        rows = result['outputs']
        assert [r['conv_layers'] for r in rows] == sorted(
            r['conv_layers'] for r in rows)
        assert rows[-1]['error'] == result['error_with']
        assert set(result['training']) == {'backbone', 'without', 'heads',
                                           'joint'}
        for unit in ('multiply-adds', 'ms'):  # a larger budget, deeper
            chosen = [b['exit'] for b in result['budgets']
                      if b['exit'] is not None and b['unit'] == unit]
            assert chosen == sorted(chosen)
        # the whole main network's cost affords the final exit, in
        # multiply-adds and in measured ms
        assert {b['unit'] for b in result['budgets']} == {'multiply-adds',
                                                          'ms'}
        for unit in ('multiply-adds', 'ms'):
            assert [b for b in result['budgets'] if b['unit'] == unit][-1][
                'exit'] == result['exits'] - 1
        assert all(r['ms_alone'] > 0 for r in rows)
    written = json.loads((tmp_path / 'study' / 'study.json').read_text())
    assert written['schedule_label'] == 'SHORTENED'
    assert '| MobileNet | 8 |' in (tmp_path / 'study' / 'table.md').read_text()
    assert (tmp_path / 'study' / 'mobilenet' / 'elastic_mobilenet.png').exists()
    again = run_elastic.main(flags + ['--resume'])
    assert again['backbones'][0]['error_with'] == mobilenet['error_with']
    # nothing trained again: the logs are read back
    assert again['backbones'][0]['training'] == mobilenet['training']


def test_a_folder_it_may_not_write_is_refused_before_any_data_is_read(
        tmp_path):
    """Another program's run folder: one line, before the data are read
    (the data folder here does not even exist), and nothing touched."""
    import os

    from branchynet.utils.ownership import OutputFolder
    from helpers import script_module
    run_elastic = script_module('run_elastic')
    taken = tmp_path / 'a_run'
    with OutputFolder.open(str(taken), 'run', foreign_ok=False) as folder:
        folder.write_text('results.json', '{}')
    before = sorted(os.listdir(taken))
    with pytest.raises(SystemExit, match='holds run output of this program, '
                                         'not elastic-study'):
        run_elastic.main(['--smoke', '--data-dir', str(tmp_path / 'none'),
                          '--out', str(taken)])
    assert sorted(os.listdir(taken)) == before
    assert (taken / 'results.json').read_text() == '{}'
