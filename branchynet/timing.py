"""Honest batch-1 timing: milliseconds per sample over the whole path.

What is timed, per sample, starting from a host (NumPy) sample and ending
with the predicted class on the host:

- the transfer of the sample to the device,
- every trunk stage and exit head the sample passes through,
- softmax, entropy and the exit decision (entropy read back to the host),
- the transfer of the predicted class back.

GPU work is synchronised before the clock stops. ``warmup`` samples are run
first and not timed; then the whole sample set is timed ``repeats`` times.
Each repeat gives a mean per sample; we report the median over repeats and
their min and max. Things that will be compared (the baseline and a
B-network, the paths to each exit) are timed in turns, block by block, so
that the machine's slow and fast spells fall on all of them alike.

For comparison, :func:`time_reference_style` reproduces how the reference code
timed: only the trunk stages, inputs already on the device, no head,
softmax, entropy or transfer, and no synchronisation. Its figures are
labelled as such wherever they appear.
"""
import time

import chainer
import numpy

from branchynet.exit_rule import EntropyThresholds


def synchronize(device):
    """Wait for the queued work of ``device`` (a Chainer device; no-op on the CPU).

    The given device is synchronised, not whichever CUDA device is current.
    """
    if device.xp is not numpy:
        device.device.synchronize()


def summarize(per_sample_ms):
    """Median, min and max of the per-repeat means (ms per sample).

    Returns:
        ``{'median_ms', 'min_ms', 'max_ms', 'repeats_ms'}``.
    """
    values = [float(v) for v in per_sample_ms]
    return {'median_ms': float(numpy.median(values)), 'min_ms': min(values),
            'max_ms': max(values), 'repeats_ms': values}


def _in_turns(functions, samples, repeats, warmup, block, clock):
    """Run ``functions`` over ``samples`` in turns; mean ms per sample each.

    Each repeat walks the samples in blocks of ``block``, and every function
    runs each block in turn, so a slow spell of the machine (frequency
    scaling, a busy neighbour on a shared host) falls on all of them alike
    instead of on whichever happened to be timed then: their ratios stay
    honest. ``clock(function, chunk)`` returns the seconds to attribute.
    """
    if not len(samples):
        raise ValueError('no samples to time')
    if block < 1:
        raise ValueError('block must be at least 1, got {}'.format(block))
    for function in functions:
        for sample in samples[:warmup]:
            function(sample)
    seconds = [[0.0] * repeats for _ in functions]
    for r in range(repeats):
        for start in range(0, len(samples), block):
            chunk = samples[start:start + block]
            for i, function in enumerate(functions):
                seconds[i][r] += clock(function, chunk)
    return [summarize([s * 1000 / len(samples) for s in row])
            for row in seconds]


def time_in_turns(functions, samples, device, repeats=3, warmup=10,
                  block=50):
    """Mean ms per sample of each ``function(sample)``, timed in turns.

    Args:
        functions: each called with one sample (a ``(1, ...)`` host array).
        samples: list of such samples.
        device: the Chainer device the work runs on; it is synchronised
            before the clock starts and before it stops.
        block: samples each function runs before the next one's turn.

    Returns one summary (see :func:`summarize`) per function, in order.
    """
    def clock(function, chunk):
        synchronize(device)
        start = time.perf_counter()
        for sample in chunk:
            function(sample)
        synchronize(device)
        return time.perf_counter() - start
    return _in_turns(functions, samples, repeats, warmup, block, clock)


def time_reference_style(functions, samples, repeats=3, warmup=10, block=50):
    """As the reference timed: a clock around each call, no synchronisation.

    ``samples`` should already be on the device, as the reference's were.
    On a GPU this mostly measures kernel launches. Functions are run in
    turns as in :func:`time_in_turns`; one summary per function.
    """
    def clock(function, chunk):
        total = 0.0
        for sample in chunk:
            start = time.perf_counter()
            function(sample)
            total += time.perf_counter() - start
        return total
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        return _in_turns(functions, samples, repeats, warmup, block, clock)


def as_samples(x):
    """Split a host array into a list of ``(1, ...)`` samples (views)."""
    return [x[i:i + 1] for i in range(len(x))]


def forced_thresholds(num_exits, exit_index):
    """Thresholds that send every sample out at ``exit_index``.

    Returns:
        ``inf`` at ``exit_index``, 0 before it (a list of floats; the final
        exit's index gives all zeros).
    """
    return [float('inf') if n == exit_index else 0.0
            for n in range(num_exits - 1)]


def baseline_classifier(net):
    """The main network as a batch-1 classifier: host sample -> host label.

    Returns:
        A function of one ``(1, ...)`` host array returning an int.
    """
    def classify(x):
        with chainer.using_config('train', False), \
                chainer.no_backprop_mode():
            y = net.main_forward(net.device.send(x)).array
        return int(y[0].argmax())
    return classify


def exit_path_costs(net, samples, repeats=3, warmup=10):
    """Cost of the whole path of a sample that leaves at each exit.

    The path to exit ``n`` includes the heads, softmax, entropy and host
    reads of exits ``0..n-1``, where the sample was considered and kept.
    The paths are timed in turns (:func:`time_in_turns`).
    """
    def leaving_at(n):
        rule = EntropyThresholds(forced_thresholds(net.num_exits, n),
                                 net.num_exits)  # checked once, not per call
        return lambda x: net.predict_sample(x, rule)
    return time_in_turns([leaving_at(n) for n in range(net.num_exits)],
                         samples, net.device, repeats, warmup)


def reference_style_costs(net, baseline, samples, repeats=3, warmup=10):
    """The reference code's figures: trunk stages only, unsynchronised.

    Returns ``{'baseline': ..., 'trunk_to_exit': [...]}``: the whole main
    network of ``baseline`` (the reference timed its baseline whole), and
    for each exit ``n`` of ``net`` the trunk stages up to that exit.
    """
    on_device = [net.device.send(x) for x in samples]

    def trunk_to(n):
        def run(h):
            for stage in net.trunk[:n + 1]:
                h = stage(h)
        return run

    timed = time_reference_style(
        [baseline.main_forward] + [trunk_to(n) for n in range(net.num_exits)],
        on_device, repeats, warmup)
    return {'baseline': timed[0], 'trunk_to_exit': timed[1:]}


def duration_text(seconds):
    """``seconds`` as a person reads a duration: ``'40 s'``, ``'48 min'``,
    ``'5.3 h'``, ``'341 days'``."""
    if seconds < 90:
        return '{:.0f} s'.format(seconds)
    if seconds < 90 * 60:
        return '{:.0f} min'.format(seconds / 60)
    if seconds < 48 * 3600:
        return '{:.1f} h'.format(seconds / 3600)
    return '{:.0f} days'.format(seconds / 86400)
