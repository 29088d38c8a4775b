"""What a network costs per sample, in multiply-adds, known without timing.

The multiply-adds of every trunk stage and exit head
(:func:`multiply_adds`, counted by a link hook on one sample), the cost of
answering at each exit under the exit rule (:func:`path_costs`) and the
gain that exit shares imply (:func:`ideal_speedup`): the yardstick beside
every measured time (the benchmark, deployment, the elastic study's
budgets, a run's estimate of its time left).
"""
import chainer
import chainer.links as L
import numpy


class MultiplyAddCounter(chainer.LinkHook):
    """Counts multiply-adds of convolution and linear layers."""
    name = 'MultiplyAddCounter'

    def __init__(self):
        self.count = 0

    def forward_postprocess(self, args):
        link, out = args.link, args.out
        if isinstance(link, L.Convolution2D):
            per_output = link.W.shape[1] * link.W.shape[2] * link.W.shape[3]
        elif isinstance(link, L.Linear):
            per_output = link.W.shape[1]
        else:
            return
        self.count += out.size * per_output // out.shape[0]


def multiply_adds(net):
    """Per-sample multiply-adds of each trunk stage and each head.

    Returns:
        ``(stages, heads)``: two lists of ints, one per exit.
    """
    h = net.xp.zeros((1,) + net.input_shape, numpy.float32)
    stages, heads = [], []
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for stage, head in zip(net.trunk, net.heads):
            for part, into in ((stage, stages), (head, heads)):
                with MultiplyAddCounter() as counter:
                    out = part(h)
                into.append(counter.count)
                if part is stage:
                    h = out
    return stages, heads


def ideal_speedup(stages, heads, exit_shares):
    """Main-network cost over the expected early-exit cost (multiply-adds).

    Args:
        stages, heads: from :func:`multiply_adds`.
        exit_shares: the share of samples leaving at each exit.

    Returns:
        A float (1 means no gain).
    """
    main = sum(stages) + heads[-1]
    return main / float(numpy.dot(exit_shares, path_costs(stages, heads)))


def path_costs(stages, heads):
    """The cost of answering at each exit with the exit rule: the trunk up
    to it and every head up to it (each earlier head runs to decide that
    the sample goes on)."""
    return [sum(stages[:n + 1]) + sum(heads[:n + 1])
            for n in range(len(stages))]
