"""The benchmark's correctness checks on tiny networks (not its timings)."""

import numpy
import pytest
from helpers import make_tiny_net, mixing_thresholds, tiny_batch

from branchynet import EntropyThresholds, assign_exits, costs, exit_rule
from branchynet.bench import benchmark
from branchynet.bench.benchmark import one_step_each
from branchynet.loss import BranchyLoss
from branchynet.paper.reference import ReferenceTrainer, reference_predict
from networks import lenet_mnist


@pytest.mark.parametrize('weights', [None, [0.7, 1.0, 0.3]])
def test_reference_design_makes_the_same_update(weights):
    net = make_tiny_net(branch_weights=weights)
    x, t = tiny_batch(32)
    agreement = one_step_each(net, ReferenceTrainer(net), x, t)
    assert agreement['same_update'], agreement
    assert agreement['max_gradient_error_relative'] < 1e-6
    # the conv bias before BatchNorm has a zero gradient up to rounding
    assert agreement['noise_floor_elements'] >= 4


def test_update_check_notices_a_different_update():
    net = make_tiny_net()
    x, t = tiny_batch(32)
    reference = ReferenceTrainer(net, alpha=0.002)
    assert not one_step_each(net, reference, x, t)['same_update']


def test_update_check_notices_different_gradients():
    net = make_tiny_net(batchnorm=False, dropout_ratio=None)
    x, t = tiny_batch(32)
    reference = ReferenceTrainer(net)
    reference.weights = (1.0, 1.0, 0.5)  # the reference losing a weight
    assert not one_step_each(net, reference, x, t)['same_update']


def test_reference_gradients_equal_the_shared_trunk_gradients():
    net = make_tiny_net(batchnorm=False, dropout_ratio=None,
                        branch_weights=[0.5, 1.0, 2.0])
    x, t = tiny_batch(16)
    reference = ReferenceTrainer(net)
    reference.accumulate_gradients(x, t)
    net.cleargrads()
    BranchyLoss(net)(x, t).backward()
    for k, stage in enumerate(reference.trunk()):
        for name, p in stage.namedparams():
            numpy.testing.assert_allclose(
                p.grad, dict(net.trunk[k].namedparams())[name].grad,
                rtol=1e-5, atol=1e-7)


def test_reference_inference_gives_our_predictions():
    net = make_tiny_net()
    x, _ = tiny_batch(40)
    thresholds = mixing_thresholds(net, x)
    ours = [net.predict_sample(x[i:i + 1], thresholds) for i in range(40)]
    theirs = [reference_predict(net, x[i:i + 1], thresholds) for i in range(40)]
    assert ours == theirs
    assert len({e for _, e in ours}) == 3


def test_sweep_benchmark_results_are_identical():
    net = make_tiny_net()
    x, t = tiny_batch(30)
    result = benchmark.bench_sweep(net, x, t, [0.5, 1.0, 1.2, 10], 30)
    assert result['identical_on_measured_subset']
    assert result['combinations'] == 16
    assert result['reference_s_extrapolated'] == result['reference_measured_s']


def test_latency_benchmark_predictions_agree():
    net = make_tiny_net()
    x, _ = tiny_batch(12)
    result = benchmark.bench_latency(net, [x[i:i + 1] for i in range(12)],
                                     mixing_thresholds(net, x), repeats=1,
                                     warmup=0)
    assert result['same_predictions']
    assert sum(result['exit_shares']) == pytest.approx(1)


def test_thresholds_for_shares_give_those_shares():
    rng = numpy.random.RandomState(0)
    entropies = rng.rand(3, 200).astype(numpy.float32)
    thresholds = exit_rule.thresholds_for_shares(entropies, [0.6, 0.25, 0.15])
    exits = assign_exits(entropies[:-1], EntropyThresholds(thresholds, 3))
    assert numpy.bincount(exits).tolist() == [120, 50, 30]


def test_multiply_adds_of_b_lenet():
    stages, heads = costs.multiply_adds(lenet_mnist.get_network())
    # conv 1->5 k5 on 30x30
    assert stages[0] == 30 * 30 * 5 * 25
    # conv 5->10 k5 on 17x17, conv 10->20 k5 on 11x11, linear 720->84
    assert stages[1] == 17 * 17 * 10 * 125 + 11 * 11 * 20 * 250 + 720 * 84
    # conv 5->10 k3 on 15x15, linear 640->10; final linear 84->10
    assert heads == [15 * 15 * 10 * 45 + 640 * 10, 840]


def test_ideal_speedup():
    # main = 10 + 20 + 1 = 31; path 0 = 10 + 5, path 1 = 30 + 6
    assert costs.ideal_speedup([10, 20], [5, 1], [1.0, 0.0]) == 31 / 15
    assert costs.ideal_speedup([10, 20], [5, 1], [0.5, 0.5]) == \
        31 / (0.5 * 15 + 0.5 * 36)
