"""Fig. 5: B-AlexNet with 0-4 conv layers in exit 1 (and no exit 2).

Trains each variant with the full protocol (main network, then joint), then
writes ``summary.json`` (final-exit and exit-1 test accuracy per variant)
and the figure into ``--out``. Every flag of run_b_alexnet.py applies to
each variant; timing is skipped unless --with-timing is given.

    python experiments/run_alexnet_branch_layers.py --data-dir ../shared/data --test-batch data_batch_5 -g 0
"""
import copy
import os

import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet import experiment, figures, report
from networks import alex_cifar10
from run_b_alexnet import PROTOCOL


def variant(convs):
    return experiment.Protocol(
        key='b_alexnet_exit1_{}conv'.format(convs),
        network=alex_cifar10.get_network, dataset='cifar10',
        baseline_name='AlexNet', threshold_list=PROTOCOL.threshold_list,
        network_kwargs={'branch1_convs': convs})


def main(argv=None):
    parser = experiment.build_parser(PROTOCOL)
    parser.description = __doc__.split('\n\n')[0]
    parser.set_defaults(out=os.path.join('results', 'alexnet_branch_layers'))
    parser.add_argument('--convs', type=int, nargs='+', default=[0, 1, 2, 3, 4],
                        choices=range(alex_cifar10.MAX_BRANCH1_CONVS + 1),
                        help='conv layers in exit 1, one run each')
    parser.add_argument('--with-timing', action='store_true',
                        help='also time each variant (slow on CPU)')
    args = parser.parse_args(argv)
    args.skip_timing = not args.with_timing
    summary = {'kind': 'branch-layers', 'variants': []}
    for convs in args.convs:
        protocol = variant(convs)
        run_args = copy.copy(args)
        run_args.out = os.path.join(args.out, 'exit1_{}conv'.format(convs))
        run_args = experiment.resolve_args(protocol, run_args)
        try:
            experiment.check_args(protocol, run_args)
        except (ValueError, TypeError) as e:
            parser.error(str(e))
        results = experiment.run(protocol, run_args)
        summary['variants'].append({
            'branch1_convs': convs,
            'final_exit_accuracy': results['exit_accuracy'][-1],
            'exit1_accuracy': results['exit_accuracy'][0],
            'baseline_accuracy': results['baseline']['accuracy'],
            'results': os.path.join(run_args.out, 'results.json'),
        })
    summary['data'] = results['data']
    summary['config'] = results['config']
    summary['environment'] = results['environment']
    report.write_json(os.path.join(args.out, 'summary.json'), summary)
    figures.run_figures(summary, os.path.join(args.out, 'figures'))
    for v in summary['variants']:
        print('exit 1 with {} conv: final exit {:.2f} %, exit 1 {:.2f} %'.format(
            v['branch1_convs'], 100 * v['final_exit_accuracy'],
            100 * v['exit1_accuracy']))
    return summary


if __name__ == '__main__':
    main()
