"""Parity and speed of the PyTorch port against this project, on this machine.

    python experiments/compare_port.py                 # every network, seeded weights
    python experiments/compare_port.py --networks b_lenet --kit figures/b_lenet/port_kit

For each network it writes a port kit of the seeded initial weights (to a
temporary folder) or reads --kit, then measures:

- parity: the port's logits against the kit's reference.npz (max error
  relative to the largest logit, per exit) and its exit decisions at every
  threshold set; ONNX Runtime on model.onnx likewise;
- lockstep training (B-LeNet, no dropout; others with dropout off): the
  first --lockstep-steps joint steps of both from the same weights on the
  same batches: loss and parameter differences;
- speed, in turns on this machine: batch-1 latency with early exit at the
  kit's "split" thresholds, and the joint training step at the protocol's
  batch size (--train-batch to change it).

The report goes to --out as compare_port.json and compare_port.md.
"""
import os
import shutil
import tempfile
import time

import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet import cli, datasets, environment, port_kit, protocols
from branchynet.ownership import OutputFolder
from branchynet.port_compare import lockstep, markdown, parity, speed

def main(argv=None):
    parser = cli.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=cli.HelpFormatter)
    parser.add_argument('--networks', nargs='+', default=list(protocols.PROTOCOLS),
                        choices=list(protocols.PROTOCOLS),
                        help='networks to compare')
    parser.add_argument('--kit', help='an existing kit folder (one network); '
                                      'default: export seeded kits to a '
                                      'temporary folder')
    parser.add_argument('--out', '-o', default=os.path.join('results', 'port'),
                        help='folder for the report (and the kits)')
    parser.add_argument('--lockstep-steps', type=cli.positive_int, default=50,
                        help='joint training steps run in lockstep')
    parser.add_argument('--lockstep-batch', type=cli.positive_int, default=64,
                        help='batch size of the lockstep steps')
    parser.add_argument('--train-batch', type=cli.positive_int,
                        help='training batch for the speed comparison '
                             '(default: each protocol\'s)')
    parser.add_argument('--repeats', type=cli.positive_int, default=5,
                        help='timed repeats of each speed measurement (median)')
    parser.add_argument('--data-dir', help='real MNIST for the B-LeNet kit\'s '
                        'reference batch and lockstep batches (default: '
                        'seeded noise)')
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        parser.error('PyTorch is not installed (the CPU build: pip install '
                     'torch==2.13.0+cpu --index-url '
                     'https://download.pytorch.org/whl/cpu)')
    if args.kit and len(args.networks) != 1:
        parser.error('--kit applies to one network: give --networks too')
    with cli.one_line_errors(parser.prog), \
            OutputFolder.open(args.out, 'files') as folder:
        folder.check_replaceable(REPORT_FILES)  # before minutes of work
        results = compare(args, torch)
        folder.write_json(REPORT_FILES[0], results)
        text = markdown(results)
        folder.write_text(REPORT_FILES[1], text)
    print(text)
    return results


REPORT_FILES = ('compare_port.json', 'compare_port.md')


def compare(args, torch):
    """Every comparison the command line asks for: the report's dict."""
    results = {'kind': 'port-comparison', 'torch': torch.__version__,
               'torch_threads': torch.get_num_threads(),
               'environment': environment.describe(), 'networks': {}}
    scratch = tempfile.mkdtemp(prefix='branchynet-kits-')
    try:
        for key in args.networks:
            results['networks'][key] = compare_network(args, key, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # made above, scratch
    return results


def compare_network(args, key, scratch):
    """Parity, lockstep training and speed of one network's port."""
    kit = args.kit or os.path.join(scratch, key)
    mnist = args.data_dir if protocols.get(key).dataset == 'mnist' else None
    if not args.kit:
        print('[compare_port] {}: exporting a seeded kit to {}'.format(
            key, kit), flush=True)
        port_kit.export(key, kit, data_dir=mnist)
    start = time.perf_counter()
    entry = {'kit': args.kit or 'seeded initial weights (seed 0)',
             'kit_files': port_kit.read(kit)[0]['files'],
             'parity': parity(kit)}
    # ResNet-110 trains slowly on a CPU: fewer, smaller steps
    steps, lock_batch = ((args.lockstep_steps, args.lockstep_batch)
                         if key != 'b_resnet110' else
                         (min(args.lockstep_steps, 10), 16))
    print('[compare_port] {}: lockstep training, {} steps at batch {}'
          .format(key, steps, lock_batch), flush=True)
    data = None
    if mnist is not None:
        train = datasets.load_mnist(mnist, train_size=4096, test_size=1)
        data = (train.train_x, train.train_t)
    entry['lockstep'] = lockstep(kit, steps, lock_batch, data=data,
                                 data_name='real MNIST')
    batch = args.train_batch or protocols.get(key).batchsize
    print('[compare_port] {}: speed at batch 1 and {}'.format(key, batch),
          flush=True)
    entry['speed'] = speed(kit, batch, args.repeats)
    entry['seconds'] = time.perf_counter() - start
    return entry


if __name__ == '__main__':
    main()
