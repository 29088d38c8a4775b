"""The whole paper on one machine: B-LeNet, B-AlexNet, B-ResNet-110, Fig. 5, the benchmark.

    python experiments/reproduce_paper.py --data-dir DATA --device @cupy:0 --test-batch data_batch_5 --out results/
    python experiments/reproduce_paper.py --data-dir DATA --device @cupy:0 --only check
    python experiments/reproduce_paper.py --data-dir DATA --estimate

Each part runs into its own folder under --out with its reference protocol;
a complete part is skipped, an interrupted one resumed. The combined Table I
of everything under --out is written last (table1.md, table1.csv). What
each part does: branchynet/reproduce/parts.py.
"""
import argparse
import os
import sys

import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet import reproduce
from branchynet.data import datasets
from branchynet.runs import cli, config


def parts(text):
    chosen = [p.strip() for p in text.split(',') if p.strip()]
    unknown = [p for p in chosen if p not in reproduce.PARTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError('parts are {}; got {!r}'.format(
            ', '.join(reproduce.PARTS), text))
    return tuple(p for p in reproduce.PARTS if p in chosen)


def main(argv=None):
    parser = cli.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=cli.HelpFormatter)
    parser.add_argument('--data-dir', help='folder with the MNIST and '
                        'CIFAR-10 files (default: ${})'.format(
                            datasets.DATA_DIR_ENV))
    cli.add_device_flags(parser)
    parser.add_argument('--out', '-o',
                        help='folder holding one folder per part (default: '
                             'results, or results/smoke with --smoke)')
    parser.add_argument('--only', type=parts, default=reproduce.DEFAULT_PARTS,
                        help='comma-separated parts among {}'.format(
                            ', '.join(reproduce.PARTS)))
    parser.add_argument('--test-batch',
                        choices=datasets.CIFAR10_BATCHES + [
                            datasets.CIFAR10_TEST],
                        help='CIFAR-10 test batch (default: the official '
                             'test_batch); a training batch is held out')
    parser.add_argument('--cache-dir', help='cache for preprocessed CIFAR-10')
    parser.add_argument('--unofficial-data', action='store_true',
                        help='accept dataset files that are not the '
                             'official ones')
    parser.add_argument('--estimate', action='store_true',
                        help='print the estimated duration of each part and '
                             'stop')
    parser.add_argument('--smoke', action='store_true',
                        help='every part on tiny data with the shortest '
                             'schedules (a test that the command works; '
                             'without --data-dir, synthetic data)')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress bars or per-epoch tables')
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = os.path.join('results', 'smoke') if args.smoke \
            else 'results'
    try:
        device = config.usable_device(args.device)
        config.check_data_dir(args.data_dir)
        config.check_writable(args.out)
    except ValueError as e:
        parser.error(str(e))
    plan = reproduce.Plan(out=args.out, device=device, data_dir=args.data_dir,
                          test_batch=args.test_batch, cache_dir=args.cache_dir,
                          unofficial_data=args.unofficial_data,
                          parts=args.only, smoke=args.smoke,
                          no_progress=args.no_progress)
    again = cli.same_command(sys.argv[1:] if argv is None else argv,
                             resume=False)
    with cli.one_line_errors(parser.prog, 'interrupted; the same command '
                             'continues where it stopped: ' + again):
        return reproduce.run(plan, estimate_only=args.estimate)


if __name__ == '__main__':
    main()
