"""Choosing the thresholds to deploy: selection rules over a threshold sweep.

A rule picks one point of a sweep (every threshold combination with its
accuracy, exit shares and predicted time per sample):

- ``knee`` — the fastest frontier point whose accuracy is within the knee
  tolerance of the baseline's (of the best frontier point if that is lower);
  what Table I reports (see :mod:`branchynet.sweep`);
- ``accuracy-drop:D`` — the fastest point whose accuracy is at most ``D``
  percentage points below the baseline's;
- ``latency:MS`` — the most accurate point whose predicted time per sample
  is at most ``MS`` milliseconds;
- ``exit-share:F`` — the most accurate point that sends at least the share
  ``F`` (0 to 1) of the samples out before the last exit.

Ties are broken the same way everywhere: for "fastest", the more accurate,
then the earlier point; for "most accurate", the faster, then the earlier
point. A rule that no point satisfies raises :class:`NoFeasiblePoint` with
what the closest point offers.

Applied to a sweep on a validation split, a rule chooses honestly; applied to
the test sweep it is an oracle, and the difference between the two on the
test set is what test-set selection flatters (:func:`choose`).
"""
import dataclasses

from branchynet import sweep

SELECTION_RULES = ('knee', 'accuracy-drop', 'latency', 'exit-share')


class NoFeasiblePoint(ValueError):
    """No point of the sweep satisfies the rule."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """A selection rule and its parameter.

    Attributes:
        kind: one of :data:`SELECTION_RULES`.
        value: ``None`` for ``knee``; points (``accuracy-drop``), ms
            (``latency``) or a share in [0, 1] (``exit-share``).
    """
    kind: str
    value: float = None

    @classmethod
    def parse(cls, text):
        """``'knee'``, ``'accuracy-drop:0.2'``, ``'latency:0.8'`` or ``'exit-share:0.9'``.

        Raises:
            ValueError: an unknown rule, a missing or extra value, or a value
                out of range.
        """
        kind, colon, value = str(text).partition(':')
        if kind not in SELECTION_RULES:
            raise ValueError('unknown selection rule {!r}: use knee, '
                             'accuracy-drop:POINTS, latency:MS or '
                             'exit-share:FRACTION'.format(text))
        if kind == 'knee':
            if colon:
                raise ValueError('the knee rule takes no value (its tolerance '
                                 'is --knee-tolerance), got {!r}'.format(text))
            return cls('knee')
        try:
            number = float(value)
        except ValueError:
            raise ValueError('selection rule {!r} needs a number after the '
                             'colon'.format(text)) from None
        if not number >= 0 or number == float('inf') or \
                (kind == 'exit-share' and number > 1):
            raise ValueError('selection rule {!r}: the value must be a finite '
                             'number >= 0{}'.format(
                                 text, ', at most 1' if kind == 'exit-share'
                                 else ''))
        return cls(kind, number)

    def __str__(self):
        return self.kind if self.value is None else '{}:{:g}'.format(
            self.kind, self.value)


def _fastest(candidates, accuracies, times):
    return min(candidates, key=lambda i: (times[i], -accuracies[i], i))


def _most_accurate(candidates, accuracies, times):
    return min(candidates, key=lambda i: (-accuracies[i], times[i], i))


def select_knee(accuracies, times, frontier_indices, baseline_accuracy,
                tolerance):
    """Index of the knee point: the fastest frontier point whose accuracy is
    within ``tolerance`` of a target accuracy; the target is the baseline's
    accuracy, or the frontier's best accuracy if that is lower (a
    BranchyNet that never reaches its baseline is then judged against its
    own best).

    Args:
        accuracies, times: of every point (accuracies as fractions).
        frontier_indices: the frontier (:func:`branchynet.sweep.frontier`).
        baseline_accuracy: the main network's accuracy (a fraction).
        tolerance: in accuracy points (0.1 = 0.001 as a fraction), the unit
            of ``--knee-tolerance``.

    Returns:
        An index into ``accuracies``.
    """
    best = max(accuracies[i] for i in frontier_indices)
    target = min(baseline_accuracy, best) - tolerance / 100
    eligible = [i for i in frontier_indices if accuracies[i] >= target]
    return min(eligible, key=lambda i: (times[i], -accuracies[i]))


def select(rule, points, times, baseline_accuracy, knee_tolerance=0.1):
    """Index of the point ``rule`` picks.

    Args:
        rule: a :class:`Rule` or its text.
        points: sweep points (dicts with ``accuracy`` and ``exit_shares``,
            as :func:`branchynet.sweep.evaluate` returns).
        times: predicted ms per sample of each point.
        baseline_accuracy: the main network's accuracy (a fraction) on the
            same samples as ``points``.
        knee_tolerance: the knee rule's tolerance, in accuracy points.

    Returns:
        An index into ``points``.

    Raises:
        NoFeasiblePoint: no point satisfies the rule.
    """
    rule = rule if isinstance(rule, Rule) else Rule.parse(rule)
    if len(points) != len(times) or not points:
        raise ValueError('need one time per point and at least one point, got '
                         '{} points and {} times'.format(len(points),
                                                         len(times)))
    accuracies = [p['accuracy'] for p in points]
    everything = range(len(points))
    if rule.kind == 'knee':
        return select_knee(accuracies, times,
                           sweep.frontier(accuracies, times),
                           baseline_accuracy, knee_tolerance)
    if rule.kind == 'accuracy-drop':
        floor = baseline_accuracy - rule.value / 100
        feasible = [i for i in everything if accuracies[i] >= floor]
        if not feasible:
            raise NoFeasiblePoint(
                'rule {}: no combination is within {:g} points of the '
                'baseline\'s {:.2f} %; the best reaches {:.2f} %'.format(
                    rule, rule.value, 100 * baseline_accuracy,
                    100 * max(accuracies)))
        return _fastest(feasible, accuracies, times)
    if rule.kind == 'latency':
        feasible = [i for i in everything if times[i] <= rule.value]
        if not feasible:
            raise NoFeasiblePoint(
                'rule {}: no combination is predicted at or below {:g} ms per '
                'sample; the cheapest takes {:.4g} ms'.format(
                    rule, rule.value, min(times)))
        return _most_accurate(feasible, accuracies, times)
    shares = [1 - p['exit_shares'][-1] for p in points]
    feasible = [i for i in everything if shares[i] >= rule.value]
    if not feasible:
        raise NoFeasiblePoint(
            'rule {}: no combination sends {:g} of the samples out early; the '
            'most any sends is {:.4g}'.format(rule, rule.value, max(shares)))
    return _most_accurate(feasible, accuracies, times)


def choose(rule, test_points, test_times, test_baseline_accuracy,
           validation_points=None, validation_times=None,
           validation_baseline_accuracy=None, knee_tolerance=0.1):
    """Apply ``rule`` honestly (on validation) and as an oracle (on test).

    Args:
        rule: a :class:`Rule` or its text.
        test_points, test_times, test_baseline_accuracy: the test sweep.
        validation_points, validation_times, validation_baseline_accuracy:
            the validation sweep over the same threshold grid, or ``None``.
        knee_tolerance: see :func:`select`.

    Returns:
        A dict: ``rule``; ``selected_on`` (``'validation'`` or ``'test'``);
        ``index`` of the chosen point in the grid; ``oracle_index``, the
        point the rule picks on the test sweep (equal to ``index`` without a
        validation split). A rule no point satisfies gives ``index`` (or
        ``oracle_index``) ``None`` and the reason under ``infeasible``.
    """
    rule = rule if isinstance(rule, Rule) else Rule.parse(rule)
    result = {'rule': str(rule), 'infeasible': {}}
    for name, points, times, baseline in (
            ('oracle_index', test_points, test_times, test_baseline_accuracy),
            ('index', validation_points, validation_times,
             validation_baseline_accuracy)):
        if points is None:
            continue
        try:
            result[name] = select(rule, points, times, baseline,
                                  knee_tolerance)
        except NoFeasiblePoint as e:
            result[name] = None
            result['infeasible'][name] = str(e)
    if validation_points is None:
        result['index'] = result['oracle_index']
        result['selected_on'] = 'test'
    else:
        result['selected_on'] = 'validation'
    return result


def choose_thresholds(outputs, rule, threshold_list, path_costs_ms,
                      baseline_accuracy, knee_tolerance=0.1):
    """The thresholds ``rule`` picks from saved exit outputs, without re-running.

    Args:
        outputs: a :class:`branchynet.sweep.ExitOutputs` (e.g. loaded from a
            run's ``exit_outputs_validation.npz`` or ``exit_outputs.npz``).
        rule: a :class:`Rule` or its text, e.g. ``'latency:0.8'``.
        threshold_list: the values combined over the non-final exits.
        path_costs_ms: the measured cost of the path to each exit (a run's
            ``results['timing'][device]['exit_path_ms'][n]['median_ms']``).
        baseline_accuracy: the main network's accuracy on those samples.
        knee_tolerance: see :func:`select`.

    Returns:
        ``{'thresholds': [...], 'point': the sweep point, 'predicted_ms': ...}``.

    Raises:
        NoFeasiblePoint: no combination satisfies the rule.
    """
    points = sweep.run_sweep(outputs, threshold_list)
    times = [sweep.predicted_ms(p['exit_shares'], path_costs_ms)
             for p in points]
    index = select(rule, points, times, baseline_accuracy, knee_tolerance)
    return {'thresholds': points[index]['thresholds'], 'point': points[index],
            'predicted_ms': times[index]}
