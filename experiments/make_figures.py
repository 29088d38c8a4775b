"""Regenerate figures from result files alone (no model, no training).

    python experiments/make_figures.py results/b_lenet results/b_alexnet --out figures

Each argument is a run folder or JSON file: a runner's results.json (Fig. 3
per timed device, Fig. 4, training curves) or run_alexnet_branch_layers.py's
summary.json (Fig. 5).
"""
import argparse
import os

from branchynet import figures, report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('results', nargs='+',
                        help='results.json / summary.json or their folders')
    parser.add_argument('--out', '-o', default='figures',
                        help='folder for the PNG and PDF files')
    args = parser.parse_args(argv)
    for path in args.results:
        if os.path.isdir(path):
            found = [os.path.join(path, name) for name in
                     ('results.json', 'summary.json')
                     if os.path.isfile(os.path.join(path, name))]
            if not found:
                parser.error('{} holds no results.json or summary.json'.format(
                    path))
            path = found[0]
        for written in figures.run_figures(report.read_json(path), args.out):
            print(written)


if __name__ == '__main__':
    main()
