"""This project against the reference design: training step, sweep, latency, batched exit.

    python experiments/benchmark.py              # CPU, quick profile (minutes)
    python experiments/benchmark.py --device 0   # GPU, full profile (paper sizes)

Writes benchmark_<cpu|gpu>.json and .md to --out (default results/benchmarks).

What is measured and how: branchynet/bench/benchmark.py.
"""
import os

import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
import chainer

from branchynet.bench import benchmark
from branchynet.runs import cli, config


def main(argv=None):
    parser = cli.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=cli.HelpFormatter)
    cli.add_device_flags(parser)
    parser.add_argument('--out', '-o', default=os.path.join('results',
                                                            'benchmarks'),
                        help='folder for the JSON and Markdown')
    parser.add_argument('--networks', nargs='+', choices=benchmark.NETWORKS,
                        default=list(benchmark.NETWORKS),
                        help='networks to measure')
    parser.add_argument('--profile', choices=sorted(benchmark.PROFILES),
                        help='sizes: quick (default on CPU) or full (default '
                             'on a GPU: the paper\'s batch sizes)')
    parser.add_argument('--smoke', action='store_true',
                        help='the smoke profile (seconds; a test that the '
                             'command works): --profile smoke')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress messages')
    args = parser.parse_args(argv)
    if args.smoke:
        if args.profile not in (None, 'smoke'):
            parser.error('--smoke is --profile smoke, not --profile {}'
                         .format(args.profile))
        args.profile = 'smoke'
    try:
        spec = config.usable_device(args.device)
        config.check_writable(args.out)
    except ValueError as e:
        parser.error(str(e))
    device = chainer.get_device(spec)
    device.use()
    profile = args.profile or ('quick' if spec == '@numpy' else 'full')

    def say(text):
        if not args.no_progress:
            print('[benchmark {}] {}'.format(spec, text), flush=True)

    with cli.one_line_errors(parser.prog):
        results = benchmark.run(args.networks, profile, device, args.out, say)
    print(benchmark.markdown(results))
    return results


if __name__ == '__main__':
    main()
