"""Write the port kit of a network: model.onnx, weights.npz, reference.npz, manifest.json.

    python experiments/export_port_kit.py --network b_alexnet --out kits/b_alexnet
    python experiments/export_port_kit.py --network b_lenet --model figures/b_lenet/branchynet.npz --data-dir DATA --out figures/b_lenet/port_kit --replace

Without --model, the network as initialised with --seed. What each file holds:
branchynet/deploy/port_kit.py; what a port must compute: PORTING.md.
"""
import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.data import datasets
from branchynet.deploy import port_kit
from branchynet.paper import protocols
from branchynet.runs import cli, config


def main(argv=None):
    parser = cli.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=cli.HelpFormatter)
    parser.add_argument('--network', required=True,
                        choices=list(protocols.PROTOCOLS))
    parser.add_argument('--model', help='a saved model (branchynet.npz); '
                                        'default: the seeded initial weights')
    parser.add_argument('--out', '-o', required=True,
                        help='the kit folder (new, empty, or a kit written '
                             'before)')
    parser.add_argument('--data-dir', help='real test images for the '
                        'reference batch (default: seeded noise)')
    parser.add_argument('--test-batch', choices=datasets.CIFAR10_BATCHES +
                        [datasets.CIFAR10_TEST],
                        help='CIFAR-10 test batch, as for the run scripts')
    parser.add_argument('--batch', type=cli.int_between(1, port_kit.MAX_BATCH),
                        default=16, help='samples in the reference batch')
    parser.add_argument('--seed', type=cli.seed, default=0,
                        help='seeds the initial weights and the synthetic batch')
    parser.add_argument('--replace', action='store_true',
                        help='rewrite the kit this program wrote in --out '
                             'before (refused without it)')
    args = parser.parse_args(argv)
    with cli.one_line_errors(parser.prog):
        try:
            config.check_data_dir(args.data_dir)
            config.check_writable(args.out)
        except ValueError as e:
            parser.error(str(e))
        try:
            manifest = port_kit.export(args.network, args.out, args.model,
                                       args.data_dir, args.batch, args.seed,
                                       args.test_batch, args.replace)
        except ImportError as e:
            raise SystemExit('{}: error: {} (pip install onnx onnxruntime, '
                             'or pip install -e ".[test]")'.format(
                                 parser.prog, e))
    print('port kit of {} in {}: {}'.format(manifest['network'], args.out,
                                            ', '.join(manifest['files'])))


if __name__ == '__main__':
    main()
