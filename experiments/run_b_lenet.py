"""B-LeNet on MNIST: Table I rows, Fig. 3/4 and training curves.

    python experiments/run_b_lenet.py --data-dir ../shared/data        # CPU
    python experiments/run_b_lenet.py --data-dir ../shared/data -g 0   # GPU (+ CPU timing)

Run with --help for every option; --smoke is a one-minute smoke test.
"""
import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.runs import cli

if __name__ == '__main__':
    cli.main('b_lenet')
