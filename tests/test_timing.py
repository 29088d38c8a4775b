"""The timer's bookkeeping (not its figures): turns, warm-up, repeats."""
import time

import chainer
import numpy
import pytest

from branchynet import timing


def _recorder(name, calls):
    return lambda sample: calls.append((name, int(sample[0])))


def test_functions_take_turns_block_by_block_after_their_warmup():
    calls = []
    samples = [numpy.array([i]) for i in range(5)]
    timed = timing.time_in_turns(
        [_recorder('a', calls), _recorder('b', calls)], samples,
        chainer.get_device('@numpy'), repeats=2, warmup=1, block=2)
    assert calls[:2] == [('a', 0), ('b', 0)]  # warm-up, one sample each
    one_repeat = [('a', 0), ('a', 1), ('b', 0), ('b', 1),
                  ('a', 2), ('a', 3), ('b', 2), ('b', 3),
                  ('a', 4), ('b', 4)]
    assert calls[2:] == one_repeat * 2
    assert len(timed) == 2
    for summary in timed:
        assert len(summary['repeats_ms']) == 2
        assert summary['min_ms'] <= summary['median_ms'] <= summary['max_ms']


def test_reference_style_times_every_function_over_every_sample():
    calls = []
    samples = [numpy.array([i]) for i in range(3)]
    timed = timing.time_reference_style(
        [_recorder('a', calls), _recorder('b', calls)], samples, repeats=3,
        warmup=0, block=50)
    assert calls == [(n, i) for n in 'ab' for i in range(3)] * 3
    assert [len(s['repeats_ms']) for s in timed] == [3, 3]


def test_a_slower_function_is_measured_slower():
    samples = [numpy.zeros(1)] * 4
    fast, slow = timing.time_in_turns(
        [lambda s: None, lambda s: time.sleep(0.002)], samples,
        chainer.get_device('@numpy'), repeats=1, warmup=0)
    assert slow['median_ms'] >= 2.0 > fast['median_ms']


@pytest.mark.parametrize('samples, block, message', [
    ([], 50, 'no samples'), ([numpy.zeros(1)], 0, 'block')])
def test_bad_arguments_are_refused(samples, block, message):
    with pytest.raises(ValueError, match=message):
        timing.time_in_turns([lambda s: None], samples,
                             chainer.get_device('@numpy'), block=block)
