"""Writing files so that they appear only when complete."""
import contextlib
import glob
import os
import tempfile
import time

PARTIAL_PREFIX = '.partial-'
PARTIAL_SUFFIX = '.tmp'


@contextlib.contextmanager
def atomic_write(path, mode='wb'):
    """Open a temporary file beside ``path``; move it there on success.

    On any error the temporary file is removed and ``path`` is untouched, so
    an interrupted run never leaves a half-written result behind. A process
    killed outright cannot remove it: such files are named
    ``.partial-<name>-*.tmp`` and :func:`remove_partial_files` clears them.

    Args:
        path: the file to write.
        mode: ``'wb'`` or ``'w'`` (text, no newline translation).

    Yields:
        The open temporary file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=directory, suffix=PARTIAL_SUFFIX,
        prefix='{}{}-'.format(PARTIAL_PREFIX, os.path.basename(path)))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual mode
    try:
        with os.fdopen(fd, mode, **({} if 'b' in mode else {'newline': ''})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def remove_partial_files(folder, older_than_s=0):
    """Remove what killed writers left in ``folder``; return the paths removed.

    Args:
        folder: where to look (not recursively); a missing folder is fine.
        older_than_s: only files not modified for this many seconds (in a
            folder that other processes may be writing to, such as a cache).
    """
    removed = []
    now = time.time()
    pattern = os.path.join(folder, PARTIAL_PREFIX + '*' + PARTIAL_SUFFIX)
    for path in glob.glob(pattern):
        try:
            if now - os.path.getmtime(path) >= older_than_s:
                os.remove(path)
                removed.append(path)
        except OSError:
            pass  # another process removed or finished it meanwhile
    return removed
