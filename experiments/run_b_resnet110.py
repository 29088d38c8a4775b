"""B-ResNet-110 on CIFAR-10 (batch size 64): Table I rows, Fig. 3/4, curves.

    python experiments/run_b_resnet110.py --data-dir ../shared/data --test-batch data_batch_5 -g 0

Long: use --resume to continue an interrupted run. Run with --help for
every option.
"""
import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.experiment import Protocol, main
from branchynet.sweep import CIFAR_THRESHOLDS
from networks import resnet_cifar10

PROTOCOL = Protocol(key='b_resnet110', network=resnet_cifar10.get_network,
                    dataset='cifar10', baseline_name='ResNet-110',
                    threshold_list=CIFAR_THRESHOLDS, batchsize=64)

if __name__ == '__main__':
    main(PROTOCOL)
