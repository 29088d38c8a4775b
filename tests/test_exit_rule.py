import math

import numpy
import pytest

from branchynet import EntropyThresholds, LowestEntropyFractions, assign_exits
from branchynet.exit_rule import make_rule, thresholds_at_widest_gaps

ENTROPIES = numpy.array([[0.1, 0.5, 0.01, 0.9, 0.3],     # exit 0
                         [0.2, 0.05, 0.7, 0.04, 0.6]])   # exit 1


def test_threshold_rule_is_strict_and_ordered():
    exits = assign_exits(ENTROPIES, EntropyThresholds([0.1, 0.6], 3))
    # sample 0: 0.1 is not < 0.1, goes on; 0.2 < 0.6 -> exit 1
    numpy.testing.assert_array_equal(exits, [1, 1, 0, 1, 2])


def test_threshold_extremes():
    b = ENTROPIES.shape[1]
    zero = assign_exits(ENTROPIES, EntropyThresholds([0, 0], 3))
    numpy.testing.assert_array_equal(zero, [2] * b)
    huge = assign_exits(ENTROPIES, EntropyThresholds([math.inf, 0], 3))
    numpy.testing.assert_array_equal(huge, [0] * b)


def test_thresholds_compare_in_float32_strictly():
    """float32(1e-4) is just below 1e-4. Compared in float32, an entropy of
    exactly that value ties with the rounded threshold and stays (a float64
    comparison would let it leave: OpenVINO and ONNX Runtime would then
    disagree); a quarter of a float32 step above it rounds to the same
    threshold; the next float32 below leaves."""
    tie = numpy.float32(1e-4)
    assert float(tie) < 1e-4
    below = numpy.nextafter(tie, numpy.float32(0))
    e = numpy.array([[tie, below, tie]], dtype=numpy.float32)
    quarter_above = float(tie) + float(numpy.spacing(tie)) / 4
    for threshold in (1e-4, float(tie), quarter_above):
        numpy.testing.assert_array_equal(
            assign_exits(e, EntropyThresholds([threshold], 2)), [1, 0, 1])


def test_fraction_rule_takes_share_of_remaining_lowest_first():
    exits = assign_exits(ENTROPIES, LowestEntropyFractions([0.4, 0.5], 3))
    # exit 0: 2 of 5 lowest -> samples 2 (0.01), 0 (0.1)
    # exit 1: of samples 1, 3, 4 -> floor(1.5) = 1 lowest: sample 3 (0.04)
    numpy.testing.assert_array_equal(exits, [0, 2, 0, 1, 2])


def test_fraction_count_is_robust_to_binary_rounding():
    e = numpy.linspace(0, 1, 100)[None]
    exits = assign_exits(e, LowestEntropyFractions([0.29], 2))
    assert (exits == 0).sum() == 29  # int(0.29 * 100) would give 28


def test_no_non_final_exits():
    exits = assign_exits(numpy.zeros((0, 4)), EntropyThresholds([], 1))
    numpy.testing.assert_array_equal(exits, [0, 0, 0, 0])


@pytest.mark.parametrize('values, error, message', [
    ([0.1], ValueError, 'expected 2, got 1'),
    ([0.1, 0.2, 0.3], ValueError, 'expected 2, got 3'),
    ([0.1, -0.5], ValueError, 'non-negative'),
    ([0.1, float('nan')], ValueError, 'non-negative'),
    (0.1, TypeError, 'sequence of 2'),
    ('ab', TypeError, 'sequence of 2'),
    ([0.1, None], TypeError, 'real numbers'),
])
def test_bad_thresholds(values, error, message):
    with pytest.raises(error, match=message):
        EntropyThresholds(values, 3)


def test_bad_fractions_and_rule_choice():
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        LowestEntropyFractions([0.5, 1.5], 3)
    with pytest.raises(TypeError, match='exactly one'):
        make_rule(3)
    with pytest.raises(TypeError, match='exactly one'):
        make_rule(3, [0.1, 0.1], [0.5, 0.5])


def test_widest_gap_thresholds_split_in_the_middle_half_only():
    """Eight entropies: the widest gap overall (1.0 -> 5.0) lies outside
    the middle half, so the threshold falls in the widest gap inside it
    (0.3 -> 0.7): the samples split 4 / 4, far from both neighbours."""
    e = [0.0, 0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 5.0]
    shuffled = numpy.array(e)[[5, 0, 7, 2, 4, 1, 6, 3]]
    assert thresholds_at_widest_gaps([shuffled, [1.0, 1.0, 3.0, 3.0]]) == \
        [pytest.approx(0.5), pytest.approx(2.0)]
