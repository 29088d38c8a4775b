"""B-ResNet-110 on CIFAR-10: Table I rows, Fig. 3/4, curves.

The reference ResNet experiment: batch size 64, 100 main-network epochs
(LeNet and AlexNet: 50) and 100 joint epochs; it sweeps the 17-value LeNet
threshold list (289 combinations).

    python experiments/run_b_resnet110.py --data-dir ../shared/data --test-batch data_batch_5 -g 0

Long: use --resume to continue an interrupted run. Run with --help for
every option.
"""
import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.runs import cli

if __name__ == '__main__':
    cli.main('b_resnet110')
