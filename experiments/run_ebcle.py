"""EBCLE's entropy bound on depth, tested by a depth sweep and set beside BranchyNet's exits.

    .venv/bin/python experiments/run_ebcle.py --data-dir ../shared/data --out results/ebcle --runs figures/b_lenet figures/b_alexnet
    .venv/bin/python experiments/run_ebcle.py --smoke --data-dir ../shared/data   # minutes

After Gowdra et al. (EBCLE, arXiv 2106.14190). Computes each data set's
entropy as the authors' code does (mean per-image Shannon entropy of the
uint8 training images, nats), marks the depth bound of a named rule (our
assumption: --rule), trains sequential residual stacks of every --depths,
and places the exits of trained BranchyNet runs (--runs) beside the bound.
Writes results.json, results.md, depth_sweep.png and exits_entropy.png. The
schedule is SHORTENED and labelled so; an interrupted sweep continues with
--resume. How: branchynet/depth/ebcle.py; docs/ebcle.md.
"""
import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.depth import cli as depth_cli, ebcle, entropy_bound
from branchynet.depth.ebcle import StudyConfig
from branchynet.runs import cli

SMOKE = {'epochs': 1, 'train_size': 256, 'validation_size': 128,
         'batchsize': 64, 'depths': [0, 1, 2]}


def parse(argv=None):
    defaults = StudyConfig(out='', data_dir='')
    p = depth_cli.parser(__doc__)
    p.add_argument('--depths', nargs='+', type=cli.int_between(0, 64),
                   default=list(defaults.depths),
                   help='residual layers after the input layer, swept')
    p.add_argument('--filters', type=cli.positive_int,
                   default=defaults.filters, help='filters of every layer')
    p.add_argument('--ksize', type=cli.positive_int, default=defaults.ksize,
                   help='kernel size of every layer')
    p.add_argument('--rule', choices=sorted(entropy_bound.BOUND_RULES),
                   default=defaults.rule,
                   help='how the entropy becomes a depth bound (our '
                        'assumption; the paper\'s mapping is not known): ' +
                        '; '.join('{}: {}'.format(k, v[0]) for k, v in
                                  sorted(entropy_bound.BOUND_RULES.items())))
    p.add_argument('--runs', nargs='*', default=[],
                   help='trained BranchyNet run folders to place beside the '
                        'bound (e.g. figures/b_lenet figures/b_alexnet)')
    args, common = depth_cli.parse(p, argv, SMOKE, 'ebcle')
    try:
        return StudyConfig(depths=args.depths, filters=args.filters,
                           ksize=args.ksize, rule=args.rule, runs=args.runs,
                           **common), args.resume
    except ValueError as e:
        p.error(str(e))


def main(argv=None):
    depth_cli.main('run_ebcle.py', parse, ebcle.run, ebcle.results_markdown,
                   argv)


if __name__ == '__main__':
    main()
