"""B-AlexNet on CIFAR-10: Table I rows, Fig. 3/4 and training curves.

    python experiments/run_b_alexnet.py --data-dir ../shared/data --test-batch data_batch_5 -g 0

Without the official test batch, --test-batch names the training batch held
out for testing. Run with --help for every option.
"""
import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.runs import cli

if __name__ == '__main__':
    cli.main('b_alexnet')
