"""Deploy early exit: one ONNX file per network, checked and timed under ONNX Runtime.

    python experiments/deploy.py export figures/b_lenet            # -> figures/b_lenet/b_lenet_early_exit.onnx
    python experiments/deploy.py export figures/b_lenet --form portable   # -> b_lenet_early_exit_portable.onnx
    OPENBLAS_NUM_THREADS=1 python experiments/deploy.py measure --run figures/b_lenet --data-dir ../shared/data --out results/deploy
    python experiments/deploy.py runtimes --run figures/b_lenet --data-dir ../shared/data --out results/runtimes

export writes a run's early-exit model (thresholds a runtime input) and its
main path into the run folder. measure exports every network (to a scratch
folder, or into --out with --keep-models), checks the deployed labels and
exits against Chainer's predict at every threshold of the sweep and times
them: branchynet/deploy/deploy_report.py. runtimes times a run's deployed
early exit and main path in every ONNX runtime installed (ONNX Runtime,
OpenVINO, tract; ONNX's reference evaluator on request), in turns. The
model's contract:
branchynet/deploy/onnx_export.py and PORTING.md.
"""
import argparse
import os

import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet import deploy
from branchynet.bench import benchmark
from branchynet.deploy import deploy_report
from branchynet.deploy import runtimes as runtimes_module
from branchynet.runs import cli, run_folder
from branchynet.utils.errors import UserError


def export(args):
    stored, net = deploy_report.trained(args.run)
    state = run_folder.RunFolder(args.run)
    if not state.is_run:
        raise UserError('RUN_DIR {} holds no run of this program'.format(
            args.run))
    early = 'early_exit' if args.form == 'batched' else 'early_exit_portable'
    writers = {deploy_report.model_file(stored.protocol, early):
               lambda n, f: deploy.export(n, f, form=args.form),
               deploy_report.model_file(stored.protocol, 'main_path'):
               deploy.export_main_path}
    with run_folder.open_run_folder(args.run, state, 'RUN_DIR') as folder:
        folder.check_replaceable(list(writers))
        present = [n for n in writers if os.path.lexists(folder.file(n))]
        model = next(iter(writers))
        if model in present and not args.replace:
            raise UserError('{} exists already: pass --replace to write it '
                            '(and the main path) again'.format(
                                folder.file(model)))
        for name, write in writers.items():
            if name in present and not args.replace:
                print('{} (kept)'.format(folder.file(name)))
                continue
            with folder.open_file(name) as f:
                write(net, f)
            print(folder.file(name))


def measure(args):
    measurement = deploy_report.Measurement(
        out=args.out, runs=tuple(args.run or ()),
        networks=tuple(args.networks) if args.networks else None,
        at=args.at, data_dir=args.data_dir,
        official=not args.unofficial_data, test_size=args.test_size,
        parity_sizes=tuple(args.parity_size or ()),
        noise_size=args.noise_size, timing_samples=args.timing_samples,
        repeats=args.repeats, batch=args.batch, keep_models=args.keep_models)
    results = deploy_report.measure(
        measurement,
        say=lambda text: print('[deploy] {}'.format(text), flush=True))
    print(deploy_report.markdown(results))
    return results


DEFAULTS = deploy_report.Measurement(out='')


def network_size(text):
    """``NETWORK=N`` (``--parity-size``) as ``(network, n)``."""
    key, _, size = text.partition('=')
    if key not in benchmark.NETWORKS:
        raise argparse.ArgumentTypeError('{!r}: not NETWORK=N with NETWORK '
                                         'one of {}'.format(
                                             text, ', '.join(benchmark.NETWORKS)))
    return key, cli.positive_int(size)


def runtimes(args):
    measured = deploy_report.runtimes_report(
        args.run, args.runtimes, args.out, args.data_dir, args.samples,
        args.repeats, args.at, not args.unofficial_data,
        say=lambda text: print('[runtimes] {}'.format(text), flush=True))
    print(deploy_report.runtimes_markdown(measured))
    return measured


def main(argv=None):
    parser = cli.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=cli.HelpFormatter)
    commands = parser.add_subparsers(dest='command', required=True)
    one = commands.add_parser('export', help='write a run\'s early-exit and '
                              'main-path models into its folder')
    one.add_argument('run', metavar='RUN_DIR')
    one.add_argument('--form', choices=deploy.FORMS, default='batched',
                     help='batched: any batch (ONNX Runtime, OpenVINO, '
                          'ONNX\'s reference evaluator); portable: one sample, '
                          'no data-dependent shape (tract too); see '
                          'PORTING.md')
    one.add_argument('--replace', action='store_true',
                     help='write the models again where this program '
                          'exported them before (a committed run\'s models '
                          'would change in git only by the recorded commit)')
    many = commands.add_parser('measure', help='export, check and time '
                               'every network', formatter_class=cli.HelpFormatter)
    many.add_argument('--run', action='append', metavar='RUN_DIR',
                      help='a run folder whose models to deploy (repeat for '
                           'several networks); other networks use seeded '
                           'initial weights')
    many.add_argument('--networks', nargs='+', choices=benchmark.NETWORKS,
                      help='default: all three')
    many.add_argument('--at', choices=('paper', 'knee'), default='paper',
                      help='thresholds of a run\'s early exit: the paper\'s '
                           'T, or the run\'s knee as its results.json '
                           'records it (its Table I B row)')
    many.add_argument('--data-dir', help='the runs\' test images (default: '
                      'seeded noise)')
    many.add_argument('--unofficial-data', action='store_true',
                      help='accept data files that are not the official '
                           'ones (a subset, synthetic data)')
    many.add_argument('--test-size', type=cli.positive_int, default=DEFAULTS.test_size,
                      help='test images of a run (its parity check and '
                           'accuracy)')
    many.add_argument('--parity-size', type=network_size, action='append',
                      metavar='NETWORK=N',
                      help='check that network\'s parity on its first N '
                           'test images only (repeat for several): every '
                           'threshold vector runs the deployed model again, '
                           'and B-ResNet-110\'s 289 vectors on 10000 images '
                           'take hours on a CPU')
    many.add_argument('--noise-size', type=cli.positive_int, default=DEFAULTS.noise_size,
                      help='noise images for a network without a run')
    many.add_argument('--timing-samples', type=cli.positive_int,
                      default=DEFAULTS.timing_samples,
                      help='images timed at batch size 1')
    many.add_argument('--repeats', type=cli.positive_int, default=DEFAULTS.repeats,
                      help='timed passes (the median is reported)')
    many.add_argument('--batch', type=cli.positive_int, default=DEFAULTS.batch,
                      help='batch size of the batched comparison')
    many.add_argument('--out', '-o', default=os.path.join('results',
                                                          'deploy'),
                      help='folder for deploy.json/.md (and the models, '
                           'with --keep-models)')
    many.add_argument('--keep-models', action='store_true',
                      help='keep the measured ONNX models in --out (the '
                           'export command writes a run\'s models beside it)')
    timed = commands.add_parser(
        'runtimes', help='time a run\'s deployed models in every ONNX '
        'runtime installed', formatter_class=cli.HelpFormatter)
    timed.add_argument('--run', action='append', required=True,
                       metavar='RUN_DIR', help='a run folder (repeat for '
                       'several)')
    timed.add_argument('--runtimes', nargs='+', choices=runtimes_module.RUNTIMES,
                       default=['onnxruntime', 'openvino', 'tract'],
                       help='ONNX\'s reference evaluator (reference) is a '
                            'specification, slow by design: timed only '
                            'when named')
    timed.add_argument('--at', choices=('paper', 'knee'), default='paper',
                       help='the thresholds, as for measure')
    timed.add_argument('--data-dir', help='the runs\' test images (default: '
                       'seeded noise)')
    timed.add_argument('--unofficial-data', action='store_true',
                       help='accept data files that are not the official '
                            'ones')
    timed.add_argument('--samples', type=cli.positive_int, default=200,
                       help='images timed at batch size 1')
    timed.add_argument('--repeats', type=cli.positive_int, default=3,
                       help='timed passes (the median is reported)')
    timed.add_argument('--out', '-o', default=os.path.join('results',
                                                           'runtimes'),
                       help='folder for runtimes.json/.md')
    args = parser.parse_args(argv)
    with cli.one_line_errors(parser.prog):
        return {'export': export, 'measure': measure,
                'runtimes': runtimes}[args.command](args)


if __name__ == '__main__':
    main()
