"""The program Fig. 6 runs under valgrind (:mod:`branchynet.runs.fig6`).

    python -m branchynet.runs.fig6_worker PLAN.json

The plan names the protocol, the two saved models, the samples (a ``.npy``
file), the warm-up and measured sample counts, the threshold vectors
(``null``: the main network) and the compiled helper whose functions issue
callgrind's client requests. For each vector: instrumentation on, the
warm-up samples (they fill the simulated caches with this threshold's
working set) and a dump of their counts under ``warm-up: <label>``, the
measured samples one at a time (batch-1 early exit), instrumentation off
and a dump under the vector's label: each dump holds the counts since the
one before, so the label's holds the measured samples alone. Nothing else
the program does is counted.
"""
import ctypes
import sys

import numpy


def inference(net, baseline, thresholds):
    """What one threshold vector runs on a ``(1, ...)`` sample: the main
    network ``baseline`` alone (``thresholds`` ``None``) or ``net``'s
    batch-1 early exit."""
    from branchynet import exit_rule, timing
    if thresholds is None:
        return timing.baseline_classifier(baseline)
    rule = exit_rule.EntropyThresholds(thresholds, net.num_exits)
    return lambda x: net.predict_sample(x, rule)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
    from branchynet import timing
    from branchynet.paper import protocols
    from branchynet.serialization import load_model
    from branchynet.utils import files
    plan = files.read_json(argv[0])
    protocol = protocols.get(plan['protocol'])
    net = load_model(plan['model'], protocol.network())
    baseline = load_model(plan['baseline'], protocol.network())
    samples = timing.as_samples(numpy.load(plan['samples'],
                                           allow_pickle=False))
    helper = ctypes.CDLL(plan['helper'])
    helper.fig6_stop.argtypes = [ctypes.c_char_p]
    helper.fig6_dump.argtypes = [ctypes.c_char_p]
    warm = samples[:plan['warmup']]
    measured = samples[plan['warmup']:plan['warmup'] + plan['samples_count']]
    for label, thresholds in zip(plan['labels'], plan['thresholds']):
        run = inference(net, baseline, thresholds)
        run(samples[0])  # any first-call work, uncounted
        helper.fig6_start()
        for x in warm:
            run(x)
        helper.fig6_dump(('warm-up: ' + label).encode('ascii'))
        for x in measured:
            run(x)
        helper.fig6_stop(label.encode('ascii'))


if __name__ == '__main__':
    main()
