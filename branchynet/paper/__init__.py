"""What the paper and the reference code fix: the protocol of each network
(its network, data, schedule, threshold list and Table I figures) and the
reference's design, re-implemented for comparison."""
from branchynet.paper.protocols import (PROTOCOLS, PaperResult,  # noqa
                                        Protocol)
