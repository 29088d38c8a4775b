import numpy
import pytest
from helpers import make_tiny_net, mixing_thresholds, tiny_batch

from branchynet.selection import select_knee
from branchynet import sweep
from branchynet.paper import protocols
from branchynet.sweep import ExitOutputs


@pytest.fixture(scope='module')
def tiny():
    net = make_tiny_net(seed=4)
    x, t = tiny_batch(60, seed=8)
    return net, x, t, sweep.exit_outputs(net, x, t, batchsize=16)


def brute_force(net, x, t, thresholds):
    """The reference protocol: run every sample at batch size 1."""
    results = [net.predict_sample(x[i:i + 1], thresholds) for i in range(len(x))]
    labels = numpy.array([label for label, _ in results])
    exits = numpy.array([e for _, e in results])
    return float((labels == t).mean()), numpy.bincount(
        exits, minlength=net.num_exits) / len(x)


def test_sweep_matches_batch1_runs_exactly(tiny):
    net, x, t, outputs = tiny
    vectors = [[0, 0], [1e9, 0], [0, 1e9]] + [
        mixing_thresholds(net, x), [0.9 * v for v in mixing_thresholds(net, x)],
        [mixing_thresholds(net, x)[0], 0]]
    seen_shares = set()
    for thresholds in vectors:
        point = sweep.evaluate(outputs, thresholds)
        accuracy, shares = brute_force(net, x, t, thresholds)
        assert point['accuracy'] == accuracy, thresholds
        numpy.testing.assert_array_equal(point['exit_shares'], shares)
        assert sum(point['exit_counts']) == 60
        seen_shares.add(tuple(shares))
    assert len(seen_shares) >= 5  # the vectors really route differently


def test_exit_outputs_are_batch_size_independent(tiny):
    net, x, t, outputs = tiny
    whole = sweep.exit_outputs(net, x, t, batchsize=60)
    numpy.testing.assert_array_equal(whole.predictions, outputs.predictions)
    numpy.testing.assert_allclose(whole.entropies, outputs.entropies, rtol=1e-5)
    assert outputs.predictions.shape == outputs.entropies.shape == (3, 60)


def test_exit_accuracy_is_per_exit_taken(tiny):
    _, _, t, outputs = tiny
    point = sweep.evaluate(outputs, [1e9, 0])  # everything at exit 1
    assert point['exit_accuracy'][0] == pytest.approx(
        (outputs.predictions[0] == t).mean())
    assert point['exit_accuracy'][1:] == [None, None]


def test_grid_is_every_combination():
    grid = sweep.threshold_grid([0.1, 1, 10], num_exits=3)
    assert len(grid) == 9 and grid[0] == [0.1, 0.1] and grid[-1] == [10, 10]
    assert len(sweep.threshold_grid(protocols.ALEXNET_THRESHOLDS, 3)) == 121
    assert len(sweep.threshold_grid(protocols.LENET_THRESHOLDS, 2)) == 17
    assert len(sweep.run_sweep(ExitOutputs(numpy.zeros((3, 4), int),
                                           numpy.ones((3, 4)), numpy.zeros(4)),
                               [0.5, 2])) == 4


def test_save_load_and_subset(tiny, tmp_path):
    outputs = tiny[3]
    path = str(tmp_path / 'outputs.npz')
    outputs.save(path)
    loaded = ExitOutputs.load(path)
    numpy.testing.assert_array_equal(loaded.entropies, outputs.entropies)
    part = loaded.subset(10)
    assert part.predictions.shape == (3, 10) and len(part.labels) == 10


def test_predicted_time_combines_exit_costs():
    assert sweep.predicted_ms([0.5, 0.25, 0.25], [1.0, 2.0, 4.0]) == 2.0


def test_frontier_keeps_points_whose_accuracy_rises():
    times = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    accuracies = [0.90, 0.95, 0.94995, 0.9496, 0.94, 0.97, 0.96]
    # the reference's inc_amt = -0.0001 (0.01 points): 0.94995 > 0.95 - 0.0001
    # stays; 0.9496 is 0.04 points below the last kept point and drops
    # (the function's unused default, 0.0005, would keep it); 0.96 drops
    assert sweep.FRONTIER_TOLERANCE == 0.0001
    assert sweep.frontier(accuracies, times) == [0, 1, 2, 5]
    assert sweep.frontier(accuracies, times, tolerance=0) == [0, 1, 5]
    # order follows time, not input position
    assert sweep.frontier([0.97, 0.9], [2.0, 1.0]) == [1, 0]


def test_knee_is_fastest_point_near_baseline():
    times = [1.0, 2.0, 3.0, 4.0]
    accuracies = [0.90, 0.975, 0.985, 0.99]
    frontier = [0, 1, 2, 3]
    # baseline 0.98: fastest within 0.001 of it
    assert select_knee(accuracies, times, frontier, 0.98, 0.1) == 2
    assert select_knee(accuracies, times, frontier, 0.98, 1) == 1
    # a BranchyNet that never reaches a 0.999 baseline: judged by its best
    assert select_knee(accuracies, times, frontier, 0.999, 0.0) == 3


def test_exit1_curve_matches_threshold_sweep(tiny):
    _, _, t, outputs = tiny
    curve = sweep.exit1_curve(outputs, points=61)
    ordered = numpy.sort(outputs.entropies[0])
    for k in (0, 1, 17, 30, 59, 60):
        i = curve['exit_share'].index(k / 60)
        threshold = numpy.nextafter(ordered[k - 1], numpy.inf) if k else 0.0
        point = sweep.evaluate(outputs, [float(threshold), 0])
        assert point['exit_counts'][0] == k
        assert curve['accuracy'][i] == pytest.approx(point['accuracy'])
        assert curve['max_exited_entropy'][i] == (ordered[k - 1] if k else 0)
