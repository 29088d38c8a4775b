"""B-AlexNet on CIFAR-10: Table I rows, Fig. 3/4 and training curves.

    python experiments/run_b_alexnet.py --data-dir ../shared/data --test-batch data_batch_5 -g 0

Without the official test batch, --test-batch names the training batch held
out for testing. Run with --help for every option.
"""
import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.experiment import Protocol, main
from branchynet.sweep import ALEXNET_THRESHOLDS
from networks import alex_cifar10

PROTOCOL = Protocol(key='b_alexnet', network=alex_cifar10.get_network,
                    dataset='cifar10', baseline_name='AlexNet',
                    threshold_list=ALEXNET_THRESHOLDS)

if __name__ == '__main__':
    main(PROTOCOL)
