"""The errors a user can act on: every script prints them as one line.

Each names what is wrong (a path, a flag, a key) and the way out. Anything
else that escapes a script is a defect of this project, and shows as a
traceback.
"""


class UserError(Exception):
    """A run cannot go on as asked; the message says why and what to do."""


class FileProblem(UserError, ValueError):
    """One of this project's own files is missing, damaged or not what it
    should be (a results file of another kind, a truncated snapshot, ...).

    A ``ValueError`` too: the file's content is the wrong value."""


class OwnershipError(UserError):
    """A file or folder this program did not make stands where it would write."""
