"""Regenerate figures from result files alone (no model, no training).

    python experiments/make_figures.py results/b_lenet results/b_alexnet --out results/figures

Each argument is a run folder or JSON file: a runner's results.json (Fig. 3
per timed device, Fig. 4, training curves) or run_alexnet_branch_layers.py's
summary.json (Fig. 5). A file of the same name that this program did not
write in --out is never replaced.
"""
import os

import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.runs import cli, figures


def main(argv=None):
    parser = cli.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=cli.HelpFormatter)
    parser.add_argument('results', nargs='+',
                        help='results.json / summary.json or their folders')
    parser.add_argument('--out', '-o', default=os.path.join('results',
                                                            'figures'),
                        help='folder for the PNG and PDF files')
    args = parser.parse_args(argv)
    with cli.one_line_errors(parser.prog):
        if not figures.available():
            raise SystemExit('{}: error: matplotlib is not installed (pip '
                             'install matplotlib)'.format(parser.prog))
        written = figures.figures_from_files(args.results, args.out)
    for path in written:
        print(path)


if __name__ == '__main__':
    main()
