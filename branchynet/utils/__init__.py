"""Small utilities under everything: errors a user can act on, atomic files,
output folders that replace only their own files, the machine's
description, Markdown tables."""
from branchynet.utils.errors import (FileProblem, OwnershipError,  # noqa
                                     UserError)
from branchynet.utils.files import (atomic_write, read_json,  # noqa
                                    write_json)
from branchynet.utils.ownership import OutputFolder  # noqa
