"""Fig. 6: cache-miss rate against runtime for a trained B-AlexNet, from valgrind's cache simulator.

    .venv/bin/python experiments/make_fig6.py --run figures/b_alexnet --data-dir ../shared/data --out figures/fig6
    .venv/bin/python experiments/make_fig6.py --smoke --data-dir ../shared/data   # about a minute

For the main network and each threshold (the sweep list's values given to
every branch exit, and the paper's thresholds), runs batch-1 early-exit
inference over the same test samples under valgrind with this machine's
cache sizes (read from /sys, recorded) and counts only that inference
(callgrind's client requests; cachegrind's simulator); times the same
inference natively. Writes fig6.json, fig6.md and fig6.png, labelled
"simulated caches (cachegrind), not hardware counters". Needs valgrind
(apt-get install valgrind) and a C compiler. How: branchynet/runs/fig6.py.
"""
import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.data import datasets
from branchynet.runs import cli, fig6
from branchynet.runs.fig6 import Fig6Config

SMOKE = {'run': 'figures/b_lenet', 'samples': 4, 'warmup': 1,
         'thresholds': [0.025], 'timing_repeats': 1,
         'out': 'results/smoke/fig6'}


def parse(argv=None):
    defaults = Fig6Config(run='', out='')
    parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=cli.HelpFormatter)
    parser.add_argument('--run', default='figures/b_alexnet',
                        help='a trained run folder')
    parser.add_argument('--data-dir', help='where the run\'s data are '
                        '(default: the run\'s own, else ${})'.format(
                            datasets.DATA_DIR_ENV))
    parser.add_argument('--out', '-o', default='results/fig6',
                        help='output folder')
    parser.add_argument('--samples', type=cli.positive_int,
                        default=defaults.samples,
                        help='measured test samples')
    parser.add_argument('--warmup', type=cli.count, default=defaults.warmup,
                        help='samples run before each threshold\'s measured '
                             'ones (they fill the simulated caches)')
    parser.add_argument('--thresholds', type=float, nargs='+',
                        help='values, each given to every branch exit '
                             '(default: the protocol\'s sweep list)')
    parser.add_argument('--timing-repeats', type=cli.positive_int,
                        default=defaults.timing_repeats,
                        help='native timing repeats')
    parser.add_argument('--unofficial-data', action='store_true',
                        help='accept files that are not the official ones')
    parser.add_argument('--smoke', action='store_true',
                        help='about a minute: ' + ', '.join(
                            '{} {}'.format(k, v) for k, v in SMOKE.items()))
    args = parser.parse_args(argv)
    if args.smoke:
        cli.apply_smoke(parser, argv, args, SMOKE)
    try:
        return Fig6Config(
            run=args.run, out=args.out,
            data_dir=datasets.resolve_data_dir(args.data_dir),
            samples=args.samples, warmup=args.warmup,
            thresholds=tuple(args.thresholds) if args.thresholds else None,
            timing_repeats=args.timing_repeats,
            unofficial_data=args.unofficial_data)
    except ValueError as e:
        parser.error(str(e))


def main(argv=None):
    config = parse(argv)
    with cli.one_line_errors('make_fig6.py'):
        results = fig6.run(config)
    print(fig6.fig6_markdown(results))


if __name__ == '__main__':
    main()
