"""How much depth an input needs: the two seed studies beside BranchyNet.

- :mod:`~branchynet.depth.deep_shallow`: deep (sequential) against shallow
  (parallel) residual stacks with the same parameters, by the determination
  ratio Q (Bermeitinger et al., KDIR 2023);
- :mod:`~branchynet.depth.ebcle`: the data set's entropy as a bound on
  depth, tested by a depth sweep and set beside BranchyNet's exits (Gowdra
  et al., EBCLE);
- :mod:`~branchynet.depth.entropy_bound`: EBCLE's entropy and our named
  bound rules; :mod:`~branchynet.depth.trials`: training one residual stack
  at a time, resumably (what both studies share).
"""
from branchynet.depth.entropy_bound import (BOUND_RULES,  # noqa: F401
                                            dataset_entropy, depth_bound,
                                            image_entropies, image_entropy)
from branchynet.depth.trials import (Recipe, Trial,  # noqa: F401
                                     determination_ratio)
