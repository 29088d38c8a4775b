"""B-ResNet-110 on CIFAR-10: Table I rows, Fig. 3/4, curves.

The reference ResNet experiment: batch size 64, 100 main-network epochs
(LeNet and AlexNet: 50) and 100 joint epochs; it sweeps the 17-value LeNet
threshold list (289 combinations).

    python experiments/run_b_resnet110.py --data-dir ../shared/data --test-batch data_batch_5 -g 0

Long: use --resume to continue an interrupted run. Run with --help for
every option.
"""
import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.experiment import Protocol, main
from branchynet.sweep import LENET_THRESHOLDS
from networks import resnet_cifar10

PROTOCOL = Protocol(key='b_resnet110', network=resnet_cifar10.get_network,
                    dataset='cifar10', baseline_name='ResNet-110',
                    threshold_list=LENET_THRESHOLDS, batchsize=64,
                    epoch_main=100)

if __name__ == '__main__':
    main(PROTOCOL)
