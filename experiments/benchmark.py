"""This project against the reference design: training step, sweep, latency, batched exit.

    python experiments/benchmark.py              # CPU, quick profile (minutes)
    python experiments/benchmark.py --device 0   # GPU, full profile (paper sizes)

What is measured and how: branchynet/benchmark.py.
"""
import argparse
import os

import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
import chainer
from branchynet import benchmark, cli, config


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=cli.HelpFormatter)
    cli.add_device_flags(parser)
    parser.add_argument('--out', '-o', default=os.path.join('figures',
                                                            'benchmarks'),
                        help='folder for the JSON and Markdown')
    parser.add_argument('--networks', nargs='+', choices=benchmark.NETWORKS,
                        default=list(benchmark.NETWORKS))
    parser.add_argument('--profile', choices=sorted(benchmark.PROFILES),
                        help='sizes: quick (default on CPU) or full (default '
                             'on a GPU: the paper\'s batch sizes)')
    parser.add_argument('--no-progress', action='store_true')
    args = parser.parse_args(argv)
    try:
        spec = config.usable_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    device = chainer.get_device(spec)
    device.use()
    profile = args.profile or ('quick' if spec == '@numpy' else 'full')

    def say(text):
        if not args.no_progress:
            print('[benchmark {}] {}'.format(spec, text), flush=True)

    results = benchmark.run(args.networks, profile, device, args.out, say)
    print(benchmark.markdown(results))
    return results


if __name__ == '__main__':
    main()
