"""The combined Table I: every network, CPU and GPU rows, beside the paper's.

    python experiments/make_table1.py results/ figures/b_lenet --out results/table1

Each argument is a run folder, a results.json, or a folder of run folders;
in the last, a sub-folder whose results cannot be read (a run still
training, another study) is left out and named.
Writes table1.md and table1.csv to --out (a file of the same name that this
program did not write there is never replaced). How rows are built:
branchynet/table1.py.
"""
import os

import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.runs import cli, table1


def main(argv=None):
    parser = cli.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=cli.HelpFormatter)
    parser.add_argument('results', nargs='+',
                        help='run folders, results.json files, or folders of '
                             'run folders')
    parser.add_argument('--out', '-o', default=os.path.join('results',
                                                            'table1'),
                        help='folder for table1.md and table1.csv')
    args = parser.parse_args(argv)
    with cli.one_line_errors(parser.prog):
        skipped = []
        rows = table1.write(args.results, args.out, skipped)
    print(table1.markdown(rows))
    for path, reason in skipped:
        print('left out {}: {}'.format(path, reason))


if __name__ == '__main__':
    main()
