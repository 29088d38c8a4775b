"""BranchyNet on Chainer 7.8.1: early-exit networks, their training and inference."""
from branchynet import _compat

_compat.apply()  # must run before anything imports chainer

from branchynet.entropy import entropy  # noqa: E402
from branchynet.exit_rule import (  # noqa: E402
           EntropyThresholds,
           LowestEntropyFractions,
           assign_exits,
)
from branchynet.loss import BranchyLoss  # noqa: E402
from branchynet.model import Branch, BranchyNet  # noqa: E402
from branchynet.selection import choose_thresholds  # noqa: E402
from branchynet.serialization import load_model, save_model  # noqa: E402

__all__ = ['Branch', 'BranchyLoss', 'BranchyNet', 'EntropyThresholds',
           'LowestEntropyFractions', 'assign_exits', 'choose_thresholds',
           'entropy', 'load_model', 'save_model']
__version__ = '0.1.0'
