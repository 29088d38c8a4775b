"""Selection rules on small sweeps whose right answer is known exactly."""
import numpy
import pytest

from branchynet import selection, sweep
from branchynet.selection import NoFeasiblePoint, Rule
from branchynet.sweep import ExitOutputs


def sweep_of(accuracies, last_exit_shares=None):
    shares = last_exit_shares or [0.5] * len(accuracies)
    return [{'accuracy': a, 'exit_shares': [1 - s, s],
             'thresholds': [float(i)]}
            for i, (a, s) in enumerate(zip(accuracies, shares))]


#               0     1     2     3     4     5
ACCURACIES = [0.90, 0.95, 0.97, 0.97, 0.99, 0.985]
TIMES = [1.0, 2.0, 3.0, 2.5, 5.0, 4.0]
LAST_SHARES = [0.1, 0.3, 0.5, 0.5, 0.9, 0.6]
POINTS = sweep_of(ACCURACIES, LAST_SHARES)


@pytest.mark.parametrize('text, expected', [
    ('knee', Rule('knee')), ('accuracy-drop:0.2', Rule('accuracy-drop', 0.2)),
    ('latency:1.5', Rule('latency', 1.5)), ('exit-share:1', Rule('exit-share', 1)),
])
def test_rules_parse_and_print_back(text, expected):
    assert Rule.parse(text) == expected
    assert str(Rule.parse(text)) == text


@pytest.mark.parametrize('text, message', [
    ('fastest', 'unknown selection rule'), ('knee:1', 'takes no value'),
    ('latency', 'needs a number'), ('latency:x', 'needs a number'),
    ('latency:-1', 'finite number >= 0'), ('accuracy-drop:nan', 'finite'),
    ('exit-share:1.5', 'at most 1'), ('latency:inf', 'finite'),
])
def test_bad_rules_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        Rule.parse(text)


def test_accuracy_drop_takes_the_fastest_within_the_drop():
    # baseline 0.98: within 1 point -> 0.97 (indices 2, 3) and up; fastest
    # is index 3 (2.5 ms)
    assert selection.select('accuracy-drop:1', POINTS, TIMES, 0.98) == 3
    # within 0 points -> only 0.99 and 0.985; fastest is 5 (4.0 ms)
    assert selection.select('accuracy-drop:0', POINTS, TIMES, 0.98) == 5


def test_latency_takes_the_most_accurate_within_the_budget():
    assert selection.select('latency:3', POINTS, TIMES, 0.98) == 3  # tie: faster
    assert selection.select('latency:2.5', POINTS, TIMES, 0.98) == 3
    assert selection.select('latency:1', POINTS, TIMES, 0.98) == 0  # exactly 1
    assert selection.select('latency:100', POINTS, TIMES, 0.98) == 4


def test_exit_share_takes_the_most_accurate_sending_enough_out():
    # early shares: 0.9, 0.7, 0.5, 0.5, 0.1, 0.4
    assert selection.select('exit-share:0.5', POINTS, TIMES, 0.98) == 3
    assert selection.select('exit-share:0.9', POINTS, TIMES, 0.98) == 0
    assert selection.select('exit-share:0', POINTS, TIMES, 0.98) == 4


def test_exact_ties_go_to_the_earlier_point():
    points = sweep_of([0.9, 0.9, 0.9])
    assert selection.select('latency:5', points, [1.0, 1.0, 1.0], 0.9) == 0
    assert selection.select('accuracy-drop:0', points, [2.0, 1.0, 1.0],
                            0.9) == 1


def test_knee_is_the_sweep_module_rule():
    frontier = sweep.frontier(ACCURACIES, TIMES)
    assert selection.select('knee', POINTS, TIMES, 0.98, knee_tolerance=0.1) \
        == selection.select_knee(ACCURACIES, TIMES, frontier, 0.98, 0.1)


@pytest.mark.parametrize('rule, message', [
    ('latency:0.5', 'no combination is predicted at or below 0.5 ms per '
                    'sample; the cheapest takes 1 ms'),
    ('accuracy-drop:0.5', 'no combination is within 0.5 points of the '
                          'baseline\'s 99.90 %; the best reaches 99.00 %'),
    ('exit-share:0.95', 'no combination sends 0.95 of the samples out early; '
                        'the most any sends is 0.9'),
])
def test_empty_feasible_sets_say_what_is_possible(rule, message):
    with pytest.raises(NoFeasiblePoint, match=message):
        selection.select(rule, POINTS, TIMES, 0.999)


def test_choose_compares_validation_choice_with_the_test_oracle():
    valid = sweep_of([0.96, 0.99, 0.95])
    test = sweep_of([0.97, 0.96, 0.98])
    times = [1.0, 2.0, 3.0]
    chosen = selection.choose('latency:2', test, times, 0.97, valid, times,
                              0.97)
    assert chosen['selected_on'] == 'validation'
    assert (chosen['index'], chosen['oracle_index']) == (1, 0)
    alone = selection.choose('latency:2', test, times, 0.97)
    assert alone['selected_on'] == 'test'
    assert alone['index'] == alone['oracle_index'] == 0
    infeasible = selection.choose('latency:0.1', test, times, 0.97, valid,
                                  times, 0.97)
    assert infeasible['index'] is None and infeasible['oracle_index'] is None
    assert 'cheapest takes 1 ms' in infeasible['infeasible']['index']


def test_choose_thresholds_from_saved_exit_outputs():
    # exit 1 right on samples 0-2 (entropies 0.1, 0.2, 0.3), wrong on 3
    # (0.4); the last exit right on every sample
    outputs = ExitOutputs(numpy.array([[0, 1, 2, 9], [0, 1, 2, 3]]),
                          numpy.array([[0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0]],
                                      numpy.float32),
                          numpy.array([0, 1, 2, 3]))
    kwargs = dict(threshold_list=[0.15, 0.35, 1.0], path_costs_ms=[1.0, 3.0],
                  baseline_accuracy=1.0)
    # latency <= 1.5 ms: T=0.35 sends 3 out (1.5 ms, all right)
    choice = selection.choose_thresholds(outputs, 'latency:1.5', **kwargs)
    assert choice['thresholds'] == [0.35]
    assert choice['point']['accuracy'] == 1.0
    assert choice['predicted_ms'] == pytest.approx(0.75 * 1 + 0.25 * 3)
    # everything out early costs the wrong answer on sample 3
    choice = selection.choose_thresholds(outputs, 'exit-share:1', **kwargs)
    assert choice['thresholds'] == [1.0] and choice['point']['accuracy'] == 0.75
