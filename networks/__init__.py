"""The paper's three BranchyNets, as the reference code defines them.

Importing this package imports ``branchynet`` first, which makes Chainer
importable on NumPy 2 / Python 3.12 before the network modules import it.
"""
import branchynet  # noqa: F401
