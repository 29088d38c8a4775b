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

import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.deploy import port_compare
from branchynet.paper import protocols
from branchynet.runs import cli
from branchynet.utils.ownership import OutputFolder


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
        import torch  # noqa: F401  (the comparison needs it)
    except ImportError:
        parser.error('PyTorch is not installed (the CPU build: pip install '
                     'torch==2.13.0+cpu)')
    if args.kit and len(args.networks) != 1:
        parser.error('--kit applies to one network: give --networks too')
    with cli.one_line_errors(parser.prog), \
            OutputFolder.open(args.out, 'files') as folder:
        folder.check_replaceable(REPORT_FILES)  # before minutes of work
        results = port_compare.run(
            args.networks, args.kit, args.data_dir, args.lockstep_steps,
            args.lockstep_batch, args.train_batch, args.repeats,
            say=lambda text: print(text, flush=True))
        folder.write_json(REPORT_FILES[0], results)
        text = port_compare.markdown(results)
        folder.write_text(REPORT_FILES[1], text)
    print(text)
    return results


REPORT_FILES = ('compare_port.json', 'compare_port.md')


if __name__ == '__main__':
    main()
