"""Fig. 5: B-AlexNet with 0-4 conv layers in exit 1 (and no exit 2).

Trains each variant with the full protocol (main network, then joint) into
``--out/exit1_<k>conv``, then writes ``summary.json`` (final-exit and exit-1
test accuracy per variant) and the figure into ``--out``. Every flag of
run_b_alexnet.py applies to each variant; timing is skipped unless
--timing is given.

    python experiments/run_alexnet_branch_layers.py --data-dir ../shared/data --test-batch data_batch_5 -g 0
"""
import branchynet  # noqa: F401  (first: prepares Chainer for NumPy 2)
from branchynet.runs import cli

if __name__ == '__main__':
    cli.fig5_main()
