"""Writing files so that they appear only when complete; reading JSON checked.

Every file this project writes goes through :func:`atomic_write` (directly,
or through :class:`branchynet.utils.ownership.OutputFolder`, which also records
what it wrote). JSON is read through :func:`read_json`, whose errors name
the file.
"""
import contextlib
import glob
import hashlib
import json
import math
import os
import tempfile
import time
import tokenize
import zipfile
import zlib

from branchynet.utils.errors import FileProblem

PARTIAL_PREFIX = '.partial-'
PARTIAL_SUFFIX = '.tmp'


def crash_point(step):
    """Called right after each step that changes what a folder holds (a
    file moved into place, a record saved). Does nothing; the crash tests
    replace it with a function that kills the process at the n-th step, so
    that every instant a crash could hit is tried."""


@contextlib.contextmanager
def atomic_write(path, mode='wb', before_replace=None):
    """Open a temporary file beside ``path``; move it there on success.

    On any error the temporary file is removed and ``path`` is untouched, so
    an interrupted run never leaves a half-written result behind. A process
    killed outright cannot remove it: such files are named
    ``.partial-<name>-*.tmp`` and :func:`remove_partial_files` clears them.

    Args:
        path: the file to write.
        mode: ``'wb'`` or ``'w'`` (text, no newline translation).
        before_replace: called with the complete temporary file's path
            just before it is moved into place (a record of outputs notes
            its hash then, so that a crash right after the move leaves a
            file it knows).

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
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and \
                e.errno is not None and e.strerror:
            e.filename = path  # a full disk's error names no file
        raise
    crash_point('replaced ' + path)


@contextlib.contextmanager
def writing(target, mode='wb'):
    """``target`` if it is an open file, else :func:`atomic_write` of that path.

    Lets a saving function take either a path or a file that an
    :class:`~branchynet.utils.ownership.OutputFolder` opened.
    """
    if hasattr(target, 'write'):
        yield target
    else:
        with atomic_write(target, mode) as f:
            yield f


def write_text(path, text):
    """Write ``text`` to ``path``; the file appears only when complete."""
    with atomic_write(path, 'w') as f:
        f.write(text)


def json_safe(value):
    """``value`` with every NaN or infinity replaced by ``None`` (JSON null).

    JSON has no NaN; a diverged training run must still write its results.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_text(data):
    """``data`` as the JSON text this project writes (non-finite as null)."""
    return json.dumps(json_safe(data), indent=1, allow_nan=False) + '\n'


def write_json(path, data):
    """Write ``data`` as JSON (non-finite numbers as null), atomically."""
    write_text(path, json_text(data))


def read_json(path):
    """The content of a JSON file.

    Raises:
        FileProblem: the file is missing, unreadable or not JSON; the
            message names it.
    """
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileProblem('{}: not found'.format(path)) from None
    except IsADirectoryError:
        raise FileProblem('{}: is a folder, expected a JSON file'.format(
            path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FileProblem('{}: not valid JSON ({}); the file is damaged'
                          .format(path, e)) from None
    except OSError as e:
        raise FileProblem('{}: cannot be read ({})'.format(
            path, e.strerror or e)) from None


def sha256(path):
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def remove_partial_files(folder, names=('*',), older_than_s=0):
    """Remove what killed writers left in ``folder``; return the paths removed.

    Only the temporary files :func:`atomic_write` makes for ``names``
    (``.partial-<name>-*.tmp``), so that a file of someone else's is never
    taken for one.

    Args:
        folder: where to look (not recursively); a missing folder is fine.
        names: the names (or glob patterns) of the files whose temporary
            files go.
        older_than_s: only files not modified for this many seconds (in a
            folder that other processes may be writing to, such as a cache).
    """
    removed = []
    now = time.time()
    for name in names:
        pattern = os.path.join(glob.escape(folder), '{}{}-*{}'.format(
            PARTIAL_PREFIX, name, PARTIAL_SUFFIX))
        for path in glob.glob(pattern):
            try:
                if now - os.path.getmtime(path) >= older_than_s:
                    os.remove(path)
                    removed.append(path)
            except OSError:
                pass  # another process removed or finished it meanwhile
    return removed


def npz_members(path, what='npz archive'):
    """``{member: (shape, dtype)}`` of an npz file, read from the members'
    headers alone: no array is loaded, nothing is unpickled.

    Args:
        path: the file.
        what: what the file should be, for messages.

    Raises:
        FileProblem: the file is not a whole npz archive (every member's
            CRC is checked) or a member is not an npy array.
    """
    from numpy.lib import format as npy
    members = {}
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise FileProblem('{}: member {} fails its check: the file '
                                  'is damaged'.format(path, bad))
            for info in archive.infolist():
                if not info.filename.endswith('.npy'):
                    raise FileProblem('{}: member {} is not an array'.format(
                        path, info.filename))
                with archive.open(info) as member:
                    version = npy.read_magic(member)
                    read_header = {(1, 0): npy.read_array_header_1_0,
                                   (2, 0): npy.read_array_header_2_0}.get(
                                       version)
                    if read_header is None:
                        raise ValueError('npy format {}'.format(version))
                    shape, _, dtype = read_header(member)
                members[info.filename[:-len('.npy')]] = (shape, dtype)
    except FileProblem:
        raise
    except (OSError, EOFError, ValueError, SyntaxError, tokenize.TokenError,
            zipfile.BadZipFile, zlib.error) as e:
        # SyntaxError, TokenError: NumPy parses a header as Python (ast,
        # then tokenize); damaged header bytes raise either
        raise FileProblem('{}: not a readable {} ({}); the file is damaged '
                          'or of another kind'.format(path, what, e)) \
            from None
    return members
