"""Elastic networks: each backbone trained with and without an output after every block.

    .venv/bin/python experiments/run_elastic.py --data-dir ../shared/data --test-batch data_batch_5 --out results/elastic
    .venv/bin/python experiments/run_elastic.py --smoke --data-dir ../shared/data --test-batch data_batch_5   # minutes

From one seed, each backbone trains its main network (the stand-in for the
Elastic paper's ImageNet pretraining); one arm trains on without elastic
outputs, the other trains the heads with the backbone frozen and then
everything. Writes study.json, table.md (the paper's Table I in its form)
and one figure per backbone (every output's error against its
multiply-adds; the entropy early-exit frontier). The schedules are far
shorter than the paper's (ImageNet pretraining, 224x224 inputs): every
result is labelled SHORTENED. An interrupted study continues with the same
command and --resume, with the settings it started with (config.json). How
each phase trains: branchynet/runs/elastic_study.py.
"""
import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.data import datasets
from branchynet.runs import cli, elastic_study
from branchynet.runs.elastic_study import Schedule, StudyConfig
from networks import elastic_cifar10

# a smoke run's test set is 1000 images: with all 10000, each of its eight
# evaluations took minutes and the run about a quarter of an hour
SMOKE = {'train_size': 256, 'test_size': 1000, 'epoch_backbone': 1,
         'epoch_heads': 1, 'epoch_joint': 1, 'batchsize': 64,
         'timing_samples': 8}


def parse(argv=None):
    """The command line as ``(parser, config, resume)``."""
    defaults = StudyConfig(out='')
    parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=cli.HelpFormatter)
    parser.add_argument('--backbones', nargs='+',
                        choices=elastic_cifar10.BACKBONES,
                        default=list(defaults.backbones),
                        help='backbones to study')
    parser.add_argument('--data-dir', help='folder with the CIFAR-10 batches '
                        '(default: ${})'.format(datasets.DATA_DIR_ENV))
    parser.add_argument('--test-batch', choices=datasets.CIFAR10_BATCHES +
                        [datasets.CIFAR10_TEST],
                        help='the batch held out for testing, training on '
                             'the others (default: the official test_batch, '
                             'as in the run scripts)')
    parser.add_argument('--train-size', type=cli.positive_int,
                        default=defaults.train_size,
                        help='first training images used')
    parser.add_argument('--test-size', type=cli.positive_int, default=None,
                        help='first test images used (default: all)')
    parser.add_argument('--epoch-backbone', '--epochs-backbone', type=cli.positive_int,
                        default=Schedule.backbone,
                        help='epochs of the backbone phase')
    parser.add_argument('--epoch-heads', '--epochs-heads', type=cli.positive_int,
                        default=Schedule.heads,
                        help='epochs of the heads-only phase (the backbone '
                             'frozen)')
    parser.add_argument('--epoch-joint', '--epochs-joint', type=cli.positive_int,
                        default=Schedule.joint,
                        help='epochs of the joint phase (--epochs-<phase>: '
                             'the old spellings)')
    parser.add_argument('--batchsize', '-b', type=cli.positive_int,
                        default=Schedule.batchsize,
                        help='training batch size')
    parser.add_argument('--timing-samples', type=cli.count,
                        default=defaults.timing_samples,
                        help='test images on which each output alone is '
                             'timed at batch 1, for budgets in ms; 0: none')
    parser.add_argument('--width', type=cli.real, default=defaults.width,
                        help='MobileNet width multiplier')
    parser.add_argument('--resnet-n', type=cli.positive_int,
                        default=defaults.resnet_n,
                        help='residual blocks per stage (3: ResNet-20)')
    parser.add_argument('--preprocessing', choices=sorted(
                            datasets.PREPROCESSINGS),
                        default=defaults.preprocessing,
                        help='CIFAR-10 preprocessing: pixels / 255 (the '
                        'Elastic paper whitens nothing), or another of '
                        'branchynet/data/datasets.py (BranchyNet\'s ZCA, fitted '
                        'without epsilon on 10000 images, generalises '
                        'poorly: MobileNet reached 50 %% on training and '
                        '22 %% on test images after 6 epochs)')
    parser.add_argument('--cache-dir', help='where preprocessed data are '
                        'cached (default: $BRANCHYNET_CACHE_DIR or '
                        '~/.cache/branchynet)')
    cli.add_device_flags(parser)
    parser.add_argument('--seed', type=cli.seed, default=defaults.seed,
                        help='seeds the weights and the shuffling')
    parser.add_argument('--smoke', action='store_true',
                        help='a run of minutes: {}, into results/smoke/'
                             'elastic unless --out says otherwise; flags '
                             'given explicitly win'.format(', '.join(
                                 '{} {}'.format(k.replace('_', ' '), v)
                                 for k, v in SMOKE.items())))
    parser.add_argument('--unofficial-data', action='store_true',
                        help='accept dataset files that are not the '
                             'official ones')
    parser.add_argument('--resume', '-r', action='store_true',
                        help='continue the study in --out, with the '
                             'settings it started with')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress bars or per-epoch tables')
    parser.add_argument('--out', '-o', help='output folder (default: '
                        'results/elastic, results/smoke/elastic with '
                        '--smoke)')
    args = parser.parse_args(argv)
    if args.smoke:
        cli.apply_smoke(parser, argv, args, SMOKE)
    if args.out is None:
        args.out = 'results/smoke/elastic' if args.smoke else \
            'results/elastic'
    try:
        config = StudyConfig(
            out=args.out, data_dir=args.data_dir, backbones=args.backbones,
            test_batch=args.test_batch, train_size=args.train_size,
            test_size=args.test_size,
            schedule=Schedule(args.epoch_backbone, args.epoch_heads,
                              args.epoch_joint, args.batchsize),
            width=args.width, resnet_n=args.resnet_n,
            preprocessing=args.preprocessing, seed=args.seed,
            timing_samples=args.timing_samples, cache_dir=args.cache_dir,
            official=not args.unofficial_data, device=args.device,
            progress=not args.no_progress)
    except ValueError as e:
        parser.error(str(e))
    return parser, config, args.resume


def main(argv=None):
    parser, config, resume = parse(argv)
    with cli.one_line_errors(
            parser.prog, interrupted='interrupted: finished phases are kept '
            'in {}; continue with the same command and --resume'.format(
                config.out)):
        study = elastic_study.run(
            config, resume, say=lambda text: print(text, flush=True))
    print(elastic_study.table(study['backbones']))
    return study


if __name__ == '__main__':
    main()
