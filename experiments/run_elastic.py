"""Elastic networks: each backbone trained with and without an output after every block.

    .venv/bin/python experiments/run_elastic.py --data-dir ../shared/data --out results/elastic
    .venv/bin/python experiments/run_elastic.py --smoke --data-dir ../shared/data   # minutes

From one seed, each backbone trains its main network (the stand-in for the
Elastic paper's ImageNet pretraining); one arm trains on without elastic
outputs, the other trains the heads with the backbone frozen and then
everything. Writes study.json, table.md (the paper's Table I in its form)
and one figure per backbone (every output's error against its
multiply-adds; the entropy early-exit frontier). The schedules are far
shorter than the paper's (ImageNet pretraining, 224x224 inputs): every
result is labelled SHORTENED. How each phase trains:
branchynet/elastic_study.py.
"""
import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
import chainer
from branchynet import cli, datasets, elastic_study, environment
from branchynet.ownership import OutputFolder
from networks import elastic_cifar10

# a smoke run's test set is 1000 images: with all 10000, each of its eight
# evaluations took minutes and the run about a quarter of an hour
SMOKE = {'train_size': 256, 'test_size': 1000, 'epochs_backbone': 1,
         'epochs_heads': 1, 'epochs_joint': 1, 'batchsize': 64,
         'timing_samples': 8}


def parse(argv=None):
    parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=cli.HelpFormatter)
    parser.add_argument('--backbones', nargs='+',
                        choices=elastic_cifar10.BACKBONES,
                        default=list(elastic_cifar10.BACKBONES),
                        help='backbones to study')
    parser.add_argument('--data-dir', help='folder with the CIFAR-10 batches '
                        '(default: ${})'.format(datasets.DATA_DIR_ENV))
    parser.add_argument('--test-batch', default='data_batch_5',
                        help='the batch held out for testing (training uses '
                             'the others)')
    parser.add_argument('--train-size', type=cli.positive_int, default=10000,
                        help='first training images used')
    parser.add_argument('--test-size', type=cli.positive_int, default=None,
                        help='first test images used (default: all)')
    parser.add_argument('--epochs-backbone', type=cli.positive_int,
                        default=elastic_study.Schedule.backbone,
                        help='epochs of the backbone phase')
    parser.add_argument('--epochs-heads', type=cli.positive_int,
                        default=elastic_study.Schedule.heads,
                        help='epochs of the heads-only phase (the backbone '
                             'frozen)')
    parser.add_argument('--epochs-joint', type=cli.positive_int,
                        default=elastic_study.Schedule.joint,
                        help='epochs of the joint phase')
    parser.add_argument('--batchsize', '-b', type=cli.positive_int,
                        default=elastic_study.Schedule.batchsize,
                        help='training batch size')
    parser.add_argument('--timing-samples', type=cli.count, default=300,
                        help='test images on which each output alone is '
                             'timed at batch 1, for budgets in ms; 0: none')
    parser.add_argument('--width', type=float, default=0.5,
                        help='MobileNet width multiplier')
    parser.add_argument('--resnet-n', type=cli.positive_int, default=3,
                        help='residual blocks per stage (3: ResNet-20)')
    parser.add_argument('--preprocessing', choices=['zca', 'scale'],
                        default='scale', help='CIFAR-10 preprocessing: '
                        'pixels / 255 (the Elastic paper whitens nothing), or '
                        'BranchyNet\'s ZCA whitening (fitted without epsilon '
                        'on 10000 images it generalises poorly: MobileNet '
                        'reached 50 %% on training and 22 %% on test images '
                        'after 6 epochs)')
    parser.add_argument('--cache-dir', help='where the ZCA-whitened data are '
                        'cached (default: $BRANCHYNET_CACHE_DIR or '
                        '~/.cache/branchynet)')
    cli.add_device_flags(parser)
    parser.add_argument('--seed', type=cli.seed, default=0,
                        help='seeds the weights and the shuffling')
    parser.add_argument('--smoke', action='store_true',
                        help='256 training and 1000 test images, one epoch '
                             'per phase, into '
                             'results/quick/elastic unless --out says '
                             'otherwise')
    parser.add_argument('--unofficial-data', action='store_true',
                        help='accept dataset files that are not the '
                             'official ones')
    parser.add_argument('--resume', action='store_true',
                        help='continue the study in --out')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress bars or per-epoch tables')
    parser.add_argument('--out', '-o', help='output folder (default: '
                        'results/elastic, results/quick/elastic with '
                        '--smoke)')
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    if args.out is None:
        args.out = 'results/quick/elastic' if args.smoke else 'results/elastic'
    if not 0 < args.width <= 4:
        parser.error('--width must lie in (0, 4], got {}'.format(args.width))
    return parser, args


def main(argv=None):
    parser, args = parse(argv)
    with cli.one_line_errors(parser.prog):
        return run(args)


def run(args):
    schedule = elastic_study.Schedule(
        args.epochs_backbone, args.epochs_heads, args.epochs_joint,
        args.batchsize)
    results = []
    # the output folder is checked before the data are loaded
    with OutputFolder.open(args.out, 'elastic-study') as top:
        if not args.resume:
            top.check_replaceable(('study.json', 'table.md'))
        data = datasets.load_cifar10(
            args.data_dir, test_batch=args.test_batch,
            preprocessing=args.preprocessing, train_size=args.train_size,
            test_size=args.test_size, cache_dir=args.cache_dir,
            official=not args.unofficial_data)
        print('[elastic] train {} ({} images), test {} ({} images); epochs: '
              'backbone {}, heads {}, joint {}'.format(
                  data.info['train'], len(data.train_t), data.info['test'],
                  len(data.test_t), schedule.backbone, schedule.heads,
                  schedule.joint), flush=True)
        for key in args.backbones:
            sizes = {'width': args.width} if key == 'mobilenet' else \
                {'n': args.resnet_n}
            top.make_folder(key)
            with OutputFolder.open(top.file(key), 'elastic-backbone',
                                   foreign_ok=False) as folder:
                without, net, logs = elastic_study.train_arms(
                    lambda: elastic_cifar10.get_network(key, **sizes), data,
                    schedule, folder, chainer.get_device(args.device),
                    seed=args.seed, resume=args.resume,
                    progress=not args.no_progress,
                    say=lambda text: print('[elastic] {}: {}'.format(
                        key, text), flush=True))
                result = elastic_study.evaluate(
                    key, without, net, data, logs, schedule,
                    timing_samples=args.timing_samples)
                result['sizes'] = sizes
                elastic_study.draw(result, folder)
            results.append(result)
        study = {'kind': 'elastic-study', 'schedule_label': 'SHORTENED',
                 'environment': environment.describe(),
                 'data': {'train': data.info['train'],
                          'train_size': len(data.train_t),
                          'test': data.info['test'],
                          'test_size': len(data.test_t)},
                 'seed': args.seed, 'device': args.device,
                 'preprocessing': args.preprocessing, 'backbones': results}
        top.write_json('study.json', study)
        text = '# Elastic outputs, SHORTENED schedules ({})\n\n{}'.format(
            environment.describe()['cpu'], elastic_study.table(results))
        top.write_text('table.md', text)
    print(text)
    return study


if __name__ == '__main__':
    main()
