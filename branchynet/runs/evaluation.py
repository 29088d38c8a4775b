"""A run's evaluation and timing steps, after training.

:func:`evaluate`: baseline accuracy, every exit's outputs on the test set
(and the validation set), the threshold sweep. :func:`time_on_device`, per
timed device: :func:`measure_paths` (batch-1 cost of every exit's path),
:func:`select_thresholds` (the knee and every other selection rule, and
``--thresholds``) and :func:`measure_choices` (the baseline and every
choice end to end, in turns). The results are dicts of the run's
``results.json``.
"""
import functools

import chainer
import numpy

from branchynet import selection, sweep, timing
from branchynet.exit_rule import EntropyThresholds
from branchynet.runs.run_folder import (EXIT_OUTPUTS, MODEL_FILES,
                                        VALIDATION_OUTPUTS)


def main_accuracy(net, x, t, batchsize=1000):
    """Accuracy of the main network (trunk + final exit) in test mode."""
    correct = 0
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for start in range(0, len(x), batchsize):
            y = net.main_forward(net.device.send(x[start:start + batchsize]))
            correct += int((chainer.backends.cuda.to_cpu(y.array.argmax(axis=1))
                            == t[start:start + batchsize]).sum())
    return correct / len(x)


def evaluate(models, data, config, say, folder):
    """Accuracies, every exit's test outputs and the threshold sweep.

    Writes ``exit_outputs.npz`` into ``folder``. Returns the part of the
    results that does not depend on timing.
    """
    net = models.branchynet
    say('evaluating on {} test samples'.format(len(data.test_t)))
    outputs = sweep.exit_outputs(net, data.test_x, data.test_t)
    with folder.open_file(EXIT_OUTPUTS) as f:
        outputs.save(f)
    evaluation = {
        'network': net.title,
        'baseline': {'accuracy': main_accuracy(models.baseline, data.test_x,
                                               data.test_t)},
        # What the reference reports as its baseline: the main path
        # evaluated once joint training is done (its notebook tests with
        # main=True at the end), not the main-phase model.
        'baseline_after_joint': {
            'accuracy': main_accuracy(net, data.test_x, data.test_t),
            'model': MODEL_FILES['joint']},
        'exit_accuracy': [float(a) for a in
                          (outputs.predictions == outputs.labels).mean(axis=1)],
        'sweep': {'threshold_list': list(config.threshold_list),
                  'points': sweep.run_sweep(outputs, config.threshold_list)},
        'exit1_curve': sweep.exit1_curve(outputs),
        'timing': {},
    }
    if len(data.valid_t):
        say('evaluating on {} validation samples'.format(len(data.valid_t)))
        valid = sweep.exit_outputs(net, data.valid_x, data.valid_t)
        with folder.open_file(VALIDATION_OUTPUTS) as f:
            valid.save(f)
        evaluation['validation'] = {
            'size': len(data.valid_t),
            'baseline': {'accuracy': main_accuracy(
                models.baseline, data.valid_x, data.valid_t)},
            'exit_accuracy': [float(a) for a in
                              (valid.predictions == valid.labels).mean(axis=1)],
            'sweep': {'points': sweep.run_sweep(valid, config.threshold_list)},
        }
    return evaluation, outputs


def timing_devices(config, device):
    """The devices to time on: the run's, and the CPU as well after a GPU."""
    devices = [device]
    if device.xp is not numpy and not config.no_cpu_timing:
        devices.append(chainer.get_device('@numpy'))
    return devices


def measure_paths(models, samples, config):
    """Batch-1 cost of each exit's whole path, and the reference's figures."""
    net = models.branchynet
    return {
        'device': str(net.device),
        'exit_path_ms': timing.exit_path_costs(
            net, samples, config.timing_repeats, config.timing_warmup),
        'reference_style': timing.reference_style_costs(
            net, models.baseline, samples, config.timing_repeats,
            config.timing_warmup),
    }


def predict_times(points, paths):
    """Predicted ms per sample of every sweep point, and the frontier.

    Args:
        points: the sweep's points.
        paths: what :func:`measure_paths` returned.

    Returns:
        ``predicted_ms`` and ``reference_style_predicted_ms`` (one per
        point) and ``frontier`` (indices of the Fig. 3 curve).
    """
    path_ms = [c['median_ms'] for c in paths['exit_path_ms']]
    trunk_ms = [c['median_ms']
                for c in paths['reference_style']['trunk_to_exit']]
    predicted = [sweep.predicted_ms(p['exit_shares'], path_ms)
                 for p in points]
    return {
        'predicted_ms': predicted,
        'reference_style_predicted_ms': [
            sweep.predicted_ms(p['exit_shares'], trunk_ms) for p in points],
        'frontier': sweep.frontier([p['accuracy'] for p in points], predicted),
    }


def select_thresholds(evaluation, predicted, path_ms, config):
    """Apply every selection rule; name the threshold vectors to time.

    The knee is always among the rules (Table I's row); ``--select`` adds
    others. Each rule is applied to the validation sweep when there is one
    (and, as an oracle, to the test sweep), else to the test sweep.

    Args:
        evaluation: what :func:`evaluate` returned.
        predicted: what :func:`predict_times` returned for the test sweep.
        path_ms: measured cost of each exit's path (ms).
        config: the run configuration.

    Returns:
        ``(selections, choices)``: one dict per rule from
        :func:`branchynet.selection.choose`, and the threshold vectors to
        time, by name: ``knee``, ``user`` (``--thresholds``), and
        ``<rule>`` / ``<rule> oracle`` for the other rules.
    """
    test_points = evaluation['sweep']['points']
    validation = evaluation.get('validation')
    if validation is not None:
        valid_points = validation['sweep']['points']
        valid_times = [sweep.predicted_ms(p['exit_shares'], path_ms)
                       for p in valid_points]
        valid_baseline = validation['baseline']['accuracy']
    else:
        valid_points = valid_times = valid_baseline = None
    rules = ['knee'] + [r for r in config.select if r != 'knee']
    selections, choices = [], {}
    for rule in rules:
        chosen = selection.choose(
            rule, test_points, predicted['predicted_ms'],
            evaluation['baseline']['accuracy'], valid_points, valid_times,
            valid_baseline, config.knee_tolerance)
        if valid_points is not None and chosen['index'] is not None:
            chosen['validation'] = dict(
                valid_points[chosen['index']],
                predicted_ms=valid_times[chosen['index']])
        selections.append(chosen)
        for key, label in (('index', rule), ('oracle_index', rule + ' oracle')):
            index = chosen.get(key)
            if index is not None and not (key == 'oracle_index' and
                                          chosen['selected_on'] == 'test'):
                choices[label] = {'thresholds': test_points[index]['thresholds'],
                                  'index': index}
    if config.thresholds is not None:
        choices['user'] = {'thresholds': list(config.thresholds),
                           'index': None}
    return selections, choices


def measure_choices(models, samples, choices, outputs, paths, config):
    """Time the baseline and every choice end to end, in turns.

    Choices with the same thresholds are timed once.

    Returns:
        ``{'baseline': summary, name: point, ...}`` where each point is the
        sweep's evaluation of the choice on the whole test set, with its
        measured time, its predicted time on the timed subset and that
        subset's exit shares.
    """
    net = models.branchynet
    distinct = []
    for choice in choices.values():
        if choice['thresholds'] not in distinct:
            distinct.append(choice['thresholds'])
    rules = [EntropyThresholds(t, net.num_exits) for t in distinct]
    measured = timing.time_in_turns(
        [timing.baseline_classifier(models.baseline)] +
        [functools.partial(net.predict_sample, thresholds=rule)
         for rule in rules], samples, net.device, config.timing_repeats,
        config.timing_warmup)
    path_ms = [c['median_ms'] for c in paths['exit_path_ms']]
    subset = outputs.subset(len(samples))
    result = {'baseline': measured[0]}
    for name, choice in choices.items():
        point = sweep.evaluate(outputs, choice['thresholds'])
        on_subset = sweep.evaluate(subset, choice['thresholds'])
        point['measured'] = measured[1 + distinct.index(choice['thresholds'])]
        point['predicted_ms'] = sweep.predicted_ms(
            on_subset['exit_shares'], path_ms)
        point['timing_subset_exit_shares'] = on_subset['exit_shares']
        if choice['index'] is not None:
            point['index'] = choice['index']
        result[name] = point
    return result


def time_on_device(models, device, evaluation, outputs, samples, config, say):
    """Every timing figure of one device (``results['timing'][...]``)."""
    models = models.to_device(device)
    say('timing on {}: exit paths'.format(device))
    result = measure_paths(models, samples, config)
    result.update(predict_times(evaluation['sweep']['points'], result))
    path_ms = [c['median_ms'] for c in result['exit_path_ms']]
    selections, choices = select_thresholds(evaluation, result, path_ms,
                                            config)
    for chosen in selections:
        for reason in chosen['infeasible'].values():
            print('warning:', reason, flush=True)
    say('timing on {}: baseline and {}, end to end'.format(device, ', '.join(
        '{} thresholds {}'.format(name, c['thresholds'])
        for name, c in choices.items())))
    result.update(measure_choices(models, samples, choices, outputs, result,
                                  config))
    result['selections'] = selections
    return result
