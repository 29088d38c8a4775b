"""Choose B-AlexNet's CIFAR-10 preprocessing on validation, never on the test batch.

    OPENBLAS_NUM_THREADS=1 mpiexec -n 2 .venv/bin/python experiments/compare_preprocessing.py \\
        --data-dir ../shared/data --out results/preprocessing
    .venv/bin/python experiments/compare_preprocessing.py --smoke --data-dir ../shared/data

Trains the main network (the protocol's main phase) once per candidate
preprocessing on data_batch_1-3 and validates it after every epoch on
data_batch_4; data_batch_5 is never opened. Writes comparison.json,
comparison.md and validation_curves.png. An interrupted study continues with
the same command and --resume, never training a finished candidate again.
How it trains: branchynet/runs/preprocessing_study.py.
"""
import os

import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.data import datasets
from branchynet.runs import cli, preprocessing_study
from branchynet.runs.preprocessing_study import StudyConfig

SMOKE = {'epoch_main': 1, 'train_size': 1024, 'validation_size': 256}


def parse(argv=None):
    defaults = StudyConfig(out='', data_dir='')
    parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=cli.HelpFormatter)
    parser.add_argument('--data-dir', help='folder with the CIFAR-10 batches '
                        '(default: ${})'.format(datasets.DATA_DIR_ENV))
    parser.add_argument('--out', '-o', help='output folder (default: '
                        'results/preprocessing, or results/smoke/'
                        'preprocessing with --smoke)')
    parser.add_argument('--resume', '-r', action='store_true',
                        help='continue the study in --out')
    parser.add_argument('--candidates', nargs='+',
                        choices=sorted(datasets.PREPROCESSINGS),
                        default=list(defaults.candidates),
                        help='preprocessings to compare, in this order')
    parser.add_argument('--epoch-main', type=cli.positive_int,
                        default=defaults.epochs,
                        help='main-network epochs per candidate')
    parser.add_argument('--train-size', type=cli.positive_int,
                        help='first training images used (default: all '
                             '30000)')
    parser.add_argument('--validation-size', type=cli.positive_int,
                        help='first validation images used (default: all '
                             '10000)')
    parser.add_argument('--seed', type=cli.seed, default=defaults.seed,
                        help='seeds the weights and the shuffling')
    parser.add_argument('--cache-dir', help='where preprocessed arrays are '
                        'cached (default: $BRANCHYNET_CACHE_DIR or '
                        '~/.cache/branchynet)')
    parser.add_argument('--unofficial-data', action='store_true',
                        help='accept files that are not the official ones')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress bar or per-epoch table')
    cli.add_device_flags(parser)
    parser.add_argument('--smoke', action='store_true',
                        help='a run of minutes: {}'.format(', '.join(
                            '{} {}'.format(k.replace('_', ' '), v)
                            for k, v in SMOKE.items())))
    args = parser.parse_args(argv)
    values = dict(out=args.out, data_dir=datasets.resolve_data_dir(
                      args.data_dir),
                  candidates=args.candidates, epochs=args.epoch_main,
                  train_size=args.train_size,
                  validation_size=args.validation_size, seed=args.seed,
                  device=args.device, cache_dir=args.cache_dir,
                  official=not args.unofficial_data,
                  progress=not args.no_progress)
    if args.smoke:
        given = cli.explicit_flags(parser, argv)
        values.update({k: v for k, v in SMOKE.items() if k not in given})
    if values['out'] is None:
        values['out'] = os.path.join(
            'results', *(['smoke'] if args.smoke else []), 'preprocessing')
    if values['data_dir'] is None:
        parser.error('--data-dir (or ${}) must name the folder of the '
                     'CIFAR-10 batches'.format(datasets.DATA_DIR_ENV))
    try:
        return StudyConfig(**values), args.resume
    except ValueError as e:
        parser.error(str(e))


def main(argv=None):
    config, resume = parse(argv)
    with cli.one_line_errors(
            'compare_preprocessing.py',
            interrupted='interrupted: continue with the same command and '
                        '--resume'):
        summary = preprocessing_study.run(config, resume)
    if summary is not None:
        print(preprocessing_study.comparison_markdown(summary))


if __name__ == '__main__':
    main()
