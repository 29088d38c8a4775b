"""Writing files so that they appear only when complete."""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode='wb'):
    """Open a temporary file beside ``path``; move it there on success.

    On any error the temporary file is removed and ``path`` is untouched, so
    an interrupted run never leaves a half-written result behind.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix='.tmp')
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
