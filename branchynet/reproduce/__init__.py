"""The whole paper on one machine: its parts, their plan and estimates,
and the GPU check."""
from branchynet.reproduce.parts import (DEFAULT_PARTS, PARTS, Plan,  # noqa
                                        estimate, estimate_text, run)
