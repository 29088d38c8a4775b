"""The command line the depth studies share: data, recipe, --smoke, --resume."""
import dataclasses
import os

from branchynet.data import datasets
from branchynet.depth.trials import DATASETS, Recipe
from branchynet.runs import cli


def parser(doc):
    """An argument parser with the flags both studies take."""
    defaults = Recipe()
    p = cli.ArgumentParser(description=doc.split('\n\n')[0],
                           formatter_class=cli.HelpFormatter)
    p.add_argument('--data-dir', help='folder with MNIST and the CIFAR-10 '
                   'batches (default: ${})'.format(datasets.DATA_DIR_ENV))
    p.add_argument('--out', '-o', help='output folder (default: results/'
                   '<study>, or results/smoke/<study> with --smoke)')
    p.add_argument('--resume', '-r', action='store_true',
                   help='continue the study in --out (finished trials are '
                        'never trained again)')
    p.add_argument('--datasets', nargs='+', choices=DATASETS,
                   default=list(DATASETS), help='datasets studied')
    p.add_argument('--epochs', type=cli.positive_int, default=defaults.epochs,
                   help='epochs of every trial (SHORTENED against the '
                        'papers\' 100)')
    p.add_argument('--batchsize', type=cli.positive_int,
                   default=defaults.batchsize, help='training batch size')
    p.add_argument('--train-size', type=cli.positive_int,
                   default=defaults.train_size,
                   help='training images per dataset (K of Q)')
    p.add_argument('--validation-size', type=cli.positive_int,
                   default=defaults.validation_size,
                   help='validation images per dataset (never the test set)')
    p.add_argument('--alpha', type=float, default=defaults.alpha,
                   help='AdamW learning rate')
    p.add_argument('--weight-decay', type=float,
                   default=defaults.weight_decay,
                   help='AdamW decoupled weight decay (PyTorch/Keras units)')
    p.add_argument('--seed', type=cli.seed, default=defaults.seed,
                   help='seeds the weights, the shuffling and the split')
    p.add_argument('--cache-dir', help='where preprocessed CIFAR-10 arrays '
                   'are cached (default: $BRANCHYNET_CACHE_DIR or '
                   '~/.cache/branchynet)')
    p.add_argument('--unofficial-data', action='store_true',
                   help='accept files that are not the official ones')
    p.add_argument('--no-progress', action='store_true',
                   help='no progress bar or per-epoch table')
    cli.add_device_flags(p)
    return p


def parse(p, argv, smoke, default_out):
    """``(args, common)``: the parsed flags, ``--smoke``'s values applied
    where no flag was given, and the config fields both studies share;
    ``--out`` defaults to ``results/<default_out>`` (``results/smoke/...``
    with ``--smoke``)."""
    p.add_argument('--smoke', action='store_true', help='a run of minutes: '
                   + ', '.join('{} {}'.format(k.replace('_', ' '), v)
                               for k, v in smoke.items()))
    args = p.parse_args(argv)
    if args.smoke:
        cli.apply_smoke(p, argv, args, smoke)
    if args.out is None:  # a smoke run apart from real ones, as elsewhere
        args.out = os.path.join('results', *(
            [cli.SMOKE_FOLDER] if args.smoke else []), default_out)
    data_dir = datasets.resolve_data_dir(args.data_dir)
    if data_dir is None:
        p.error('--data-dir (or ${}) must name the folder with MNIST and '
                'the CIFAR-10 batches'.format(datasets.DATA_DIR_ENV))
    try:
        recipe = Recipe(**{f.name: getattr(args, f.name)
                           for f in dataclasses.fields(Recipe)})
    except ValueError as e:
        p.error(str(e))
    return args, dict(out=args.out, data_dir=data_dir,
                      datasets=tuple(args.datasets), recipe=recipe,
                      device=args.device, progress=not args.no_progress,
                      cache_dir=args.cache_dir,
                      official=not args.unofficial_data)


def main(script, parse, run, markdown, argv=None):
    """A study script's body: parse, run (resumable), print its table."""
    config, resume = parse(argv)
    with cli.one_line_errors(script, interrupted='interrupted: continue '
                             'with the same command and --resume'):
        summary = run(config, resume)
    print(markdown(summary))
