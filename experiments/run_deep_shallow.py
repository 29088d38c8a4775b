"""Deep (sequential) vs shallow (parallel) residual stacks with the same parameters, by Q.

    .venv/bin/python experiments/run_deep_shallow.py --data-dir ../shared/data --out results/deep_shallow
    .venv/bin/python experiments/run_deep_shallow.py --smoke --data-dir ../shared/data   # minutes

After Bermeitinger et al., Make Deep Networks Shallow Again (KDIR 2023). Trains
every combination of --layers, --filters and --ksizes in both layouts on
MNIST and CIFAR-10 (a training subset, validation never on the test set),
then writes results.json, table2.md (their Table 2 in its form beside
theirs) and loss_vs_q.png. The schedule is SHORTENED against theirs and
labelled so. An interrupted grid continues with the same command and
--resume and never trains a finished configuration again. How it trains:
branchynet/depth/deep_shallow.py; docs/deep_shallow.md.
"""
import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.depth import cli as depth_cli, deep_shallow
from branchynet.depth.deep_shallow import StudyConfig
from branchynet.runs import cli

SMOKE = {'epochs': 1, 'train_size': 256, 'validation_size': 128,
         'batchsize': 64, 'layers': [1, 2], 'filters': [4], 'ksizes': [3]}


def parse(argv=None):
    defaults = StudyConfig(out='', data_dir='')
    p = depth_cli.parser(__doc__)
    p.add_argument('--layers', nargs='+', type=cli.positive_int,
                   default=list(defaults.layers),
                   help='residual layers (the grid\'s depths)')
    p.add_argument('--filters', nargs='+', type=cli.positive_int,
                   default=list(defaults.filters),
                   help='filters of every layer (the grid\'s widths)')
    p.add_argument('--ksizes', nargs='+', type=cli.positive_int,
                   default=list(defaults.ksizes), help='kernel sizes (odd)')
    args, common = depth_cli.parse(p, argv, SMOKE, 'deep_shallow')
    try:
        return StudyConfig(layers=args.layers, filters=args.filters,
                           ksizes=args.ksizes, **common), args.resume
    except ValueError as e:
        p.error(str(e))


def main(argv=None):
    depth_cli.main('run_deep_shallow.py', parse, deep_shallow.run,
                   deep_shallow.table2_markdown, argv)


if __name__ == '__main__':
    main()
