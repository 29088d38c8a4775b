"""Output folders: this program replaces or removes only what it wrote.

Every folder a script writes into is an :class:`OutputFolder`. It keeps a
record, ``.branchynet-outputs.json`` in the folder, of every file it wrote
there (with its SHA-256) and of the sub-folders it made. The rules:

- a file that is not there is written;
- a file this program wrote, and that nobody changed since, may be replaced
  or removed;
- any other file in the way stops the program before it writes anything,
  with the path named (:class:`~branchynet.utils.errors.OwnershipError`);
- one program at a time: the folder is locked (``flock`` on the folder)
  while it is open, so a second run into it is refused, not interleaved;
- a record is a file a user may hand over: every name in it must lie inside
  the folder (relative, no ``..``), and no write or removal follows a link
  (a linked sub-folder or file inside the folder is refused);
- crash-consistent: a file's new hash is recorded (beside its old one)
  before the file is moved into place, so a crash at any instant leaves
  every file the program wrote recognised as its own;
- :meth:`OutputFolder.discard` removes only what this opening of the folder
  wrote, so a failed ``--resume`` leaves the run as it was.

Run folders add their own rules on top (:mod:`branchynet.runs.pipeline`): a new
run needs an empty or new folder, ``--resume`` a run of the same network.

It is longer than 500 lines because the record's reading, its checks and its
crash-consistent writing are one contract: split, each half would have to
trust the other's rules instead of holding them.
"""
import contextlib
import errno
import os
import shutil

from branchynet.utils import files
from branchynet.utils.errors import FileProblem, OwnershipError, UserError

RECORD = '.branchynet-outputs.json'
MADE_BY = 'branchynet'

try:
    import fcntl
except ImportError:  # no flock (Windows): folders are not locked
    fcntl = None


def check_out_path(path, flag='--out'):
    """Refuse, before anything is done, a path no folder can be written at.

    Raises:
        UserError: an empty path, a link that leads nowhere or in a loop, a
            path that exists and is not a folder, or a folder that cannot
            be written (or made) there.
    """
    if not path:
        raise UserError('{} is empty: name a folder'.format(flag))
    if os.path.islink(path) and not os.path.exists(path):
        try:
            os.stat(path)
        except OSError as e:
            reason = 'a link in a loop' if e.errno == errno.ELOOP else \
                'a link to {} that does not exist'.format(os.readlink(path))
        raise UserError('{} {}: {}; remove the link or choose another folder'
                        .format(flag, path, reason))
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError('{} {}: exists and is not a folder'.format(flag, path))
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or \
            not os.access(existing, os.W_OK | os.X_OK):
        raise UserError('{} {}: {} is not writable; choose another folder'
                        .format(flag, path, existing))


def listing(path, limit=5):
    """The first entries of a folder, for messages: ``'a, b, c (and 4 more)'``."""
    entries = sorted(os.listdir(path))
    text = ', '.join(entries[:limit])
    if len(entries) > limit:
        text += ' (and {} more)'.format(len(entries) - limit)
    return text


def read_record(path):
    """The record of the folder ``path`` as a dict, or ``None`` if it has none.

    Raises:
        FileProblem: a record that is damaged or not this program's.
    """
    record_path = os.path.join(path, RECORD)
    if not os.path.lexists(record_path):
        return None
    record = files.read_json(record_path)
    if not isinstance(record, dict) or record.get('made_by') != MADE_BY or \
            not isinstance(record.get('files'), dict) or \
            not isinstance(record.get('folders'), list):
        raise FileProblem(
            '{}: not a record of this program\'s outputs (expected made_by '
            '{!r}, files and folders); the folder cannot be trusted'.format(
                record_path, MADE_BY))
    for name, digest in record['files'].items():
        _check_digests(record_path, name, digest)
    for name in list(record['files']) + record['folders']:
        if not inside_name(name):
            raise FileProblem(
                '{}: names {!r}, which is not a path inside its folder; the '
                'folder cannot be trusted'.format(record_path, name))
    return record


def inside_name(name):
    """Whether ``name`` is a relative ``/``-separated path that stays inside
    its folder: no absolute path, no empty, ``.`` or ``..`` part."""
    return isinstance(name, str) and bool(name) and \
        not name.startswith('/') and '\\' not in name and '\0' not in name \
        and all(part not in ('', '.', '..') for part in name.split('/'))


def _check_digests(record_path, name, digest):
    digests = digest if isinstance(digest, list) else [digest]
    if not digests or not all(isinstance(d, str) and len(d) == 64 and
                              set(d) <= set('0123456789abcdef')
                              for d in digests):
        raise FileProblem('{}: the hash recorded for {!r} is not a SHA-256; '
                          'the folder cannot be trusted'.format(record_path,
                                                                 name))


def visible_entries(path):
    """Entries of the folder ``path`` other than the record and the
    temporary files of this program's killed writers."""
    return [e for e in os.listdir(path) if e != RECORD and not (
        e.startswith(files.PARTIAL_PREFIX) and
        e.endswith(files.PARTIAL_SUFFIX))]


class OutputFolder:
    """A folder this program writes into, with the record of what it wrote.

    Made by :meth:`open`; use as a context manager, or call :meth:`close`
    (which releases the lock).

    Attributes:
        path: the folder.
        record: the record (``kind``, ``files``, ``folders``, ``created``
            and whatever :meth:`set` added). A file's entry is its SHA-256,
            or, while it is being replaced, the list of its old and new
            hashes.
    """

    def __init__(self, path, record, lock_fd=None, created=False,
                 new_record=False):
        self.path = path
        self.record = record
        self._lock_fd = lock_fd
        self._created = created  # the folder, by this opening
        self._new_record = new_record  # the record, by this opening
        self._new_files = set()  # written by this opening, absent before
        self._new_folders = set()

    # --- opening and closing -------------------------------------------------

    @classmethod
    def open(cls, path, kind, flag='--out', foreign_ok=True, lock=True,
             adopt=(), opaque=()):
        """Open (making it if needed) and lock the folder ``path``.

        Args:
            path: the folder.
            kind: what the folder holds (``'run'``, ``'files'``, ...); a
                folder recorded as another kind is refused.
            flag: the command-line flag that named the folder, for messages.
            foreign_ok: whether files this program did not write may lie in
                the folder (they are never touched). ``False`` for run
                folders: such a folder is refused.
            lock: lock the folder while it is open.
            adopt: names of files to record as this program's when the
                folder has no record yet (folders written by versions
                before the record existed); only with ``foreign_ok=False``
                when every entry is among them. A folder is adopted with
                everything in it, unless it is among ``opaque``
                (folders whose contents another writer manages, such as
                Chainer's Trainer). Links are never adopted.
            opaque: see ``adopt``.

        Raises:
            UserError: the path cannot be a folder here.
            OwnershipError: the folder holds another kind of output, or
                (``foreign_ok=False``) files this program did not write, or
                another program has it locked.
            FileProblem: its record is damaged or names paths outside it.
        """
        check_out_path(path, flag)
        existed = os.path.isdir(path)
        record = read_record(path) if existed else None
        if record is not None and record.get('kind') != kind:
            raise OwnershipError(
                '{} {} holds {} output of this program, not {}: choose '
                'another folder'.format(flag, path, record.get('kind'), kind))
        if record is None and existed and not foreign_ok:
            entries = visible_entries(path)
            if entries and not (adopt and set(entries) <= set(adopt) and
                                not any(os.path.islink(os.path.join(path, e))
                                        for e in entries)):
                raise OwnershipError(
                    '{} {} is not empty and was not made by this program (it '
                    'holds {}): choose an empty or new folder'.format(
                        flag, path, listing(path)))
        os.makedirs(path, exist_ok=True)
        lock_fd = _lock(path, flag) if lock else None
        if record is None:
            record = {'made_by': MADE_BY, 'kind': kind, 'created': not existed,
                      'files': {}, 'folders': []}
            folder = cls(path, record, lock_fd, created=not existed,
                         new_record=True)
            adopted = [n for n in adopt if os.path.lexists(folder.file(n))]
            for name in adopted:
                folder._adopt(name, opaque)
            if adopted:
                folder._save_record()
        else:
            folder = cls(path, record, lock_fd)
        return folder

    def close(self):
        """Release the lock (the record stays)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextlib.contextmanager
    def discarded_on_failure(self):
        """Within it, a failure (an error, Ctrl-C) first discards what this
        opening wrote (:meth:`discard`): a call that fails leaves no
        half-made output behind."""
        try:
            yield self
        except BaseException:
            self.discard()
            raise

    def discard(self):
        """Remove what this opening of the folder wrote that was not there
        before (and nobody changed since), and the folder if this opening
        made it and nothing else is left (the record too, if this opening
        made it and it names nothing any more). For a call that failed before it
        made anything worth keeping: an earlier run's files, a resumed
        run's own included, stay."""
        written = sorted(n for n in self._new_files if self.owns(n))
        if written:
            self.remove(written)
        for folder in sorted(self._new_folders, reverse=True):
            if folder in self.record['folders'] and \
                    _remove_if_empty(self.file(folder)):
                self.record['folders'].remove(folder)
        if self._new_record and not self.record['files']:
            record_path = os.path.join(self.path, RECORD)
            if os.path.isfile(record_path):
                os.remove(record_path)
        elif self._record_on_disk() != self.record:
            self._save_record()  # only if it changed: a refusal writes nothing
        self.close()
        if self._created:
            _remove_if_empty(self.path)

    # --- what is ours --------------------------------------------------------

    def file(self, name):
        """The path of ``name`` (relative, ``/``-separated) in this folder.

        Raises:
            OwnershipError: ``name`` is not a path inside the folder.
        """
        if not inside_name(name):
            raise OwnershipError('{!r} is not a path inside {}: refused'
                                 .format(name, self.path))
        return os.path.join(self.path, *name.split('/'))

    def _link_on_the_way(self, name):
        """The first part of ``name``'s path in this folder that is a link
        (its own path), or ``None``."""
        path = self.path
        for part in name.split('/'):
            path = os.path.join(path, part)
            if os.path.islink(path):
                return path
            if not os.path.lexists(path):
                return None
        return None

    def owns(self, name):
        """Whether ``name`` is a file this program wrote and nobody changed
        (a link is never this program's)."""
        digest = self.record['files'].get(name)
        if digest is None or self._link_on_the_way(name) is not None:
            return False
        path = self.file(name)
        return os.path.isfile(path) and files.sha256(path) in (
            digest if isinstance(digest, list) else [digest])

    def check_replaceable(self, names):
        """Raise unless every one of ``names`` is absent or replaceable.

        Raises:
            OwnershipError: naming the first file in the way and why.
        """
        for name in names:
            link = self._link_on_the_way(name)
            if link is not None:
                raise OwnershipError(
                    '{} is a link: this program neither writes nor removes '
                    'through links; remove the link or choose another folder'
                    .format(link))
            path = self.file(name)
            if not os.path.lexists(path):
                continue
            if name not in self.record['files']:
                raise OwnershipError(
                    '{} exists and was not written by this program: it is '
                    'left alone; move it away or choose another folder'
                    .format(path))
            if not self.owns(name):
                raise OwnershipError(
                    '{} was changed since this program wrote it: it is left '
                    'alone; move it away or choose another folder'.format(path))

    def __contains__(self, name):
        return name in self.record['files']

    # --- writing -------------------------------------------------------------

    @contextlib.contextmanager
    def open_file(self, name, mode='wb'):
        """Write ``name`` atomically (see :func:`branchynet.utils.files.atomic_write`)
        and record it: its new hash is recorded before it is moved into
        place, so that a crash at any instant leaves it known.

        Raises:
            OwnershipError: a file of someone else's (or a link) is in the
                way.
        """
        self.check_replaceable([name])
        self._make_parents(name)
        path = self.file(name)
        absent = not os.path.lexists(path)
        old = self.record['files'].get(name)
        old = [] if absent or old is None else \
            old if isinstance(old, list) else [old]

        def note_pending(tmp):
            self.record['files'][name] = old + [files.sha256(tmp)]
            if absent:
                self._new_files.add(name)
            self._save_record()
        with files.atomic_write(path, mode, before_replace=note_pending) as f:
            yield f
        self._remember(name)

    def write_text(self, name, text):
        """Write the text file ``name``; returns its path."""
        with self.open_file(name, 'w') as f:
            f.write(text)
        return self.file(name)

    def write_json(self, name, data):
        """Write ``data`` as JSON to ``name``; returns its path."""
        return self.write_text(name, files.json_text(data))

    def copy_in(self, source, name):
        """Copy the file ``source`` to ``name`` (nothing if it is that file)."""
        target = self.file(name)
        if os.path.exists(target) and os.path.samefile(source, target):
            return target
        with self.open_file(name) as f, open(source, 'rb') as src:
            shutil.copyfileobj(src, f)
        return target

    def make_folder(self, name):
        """Make the sub-folder ``name`` (whose contents another writer, such
        as Chainer's Trainer, manages) and record it; returns its path.

        Raises:
            OwnershipError: something of someone else's (a file, a folder
                with files, a link) stands there.
        """
        link = self._link_on_the_way(name)
        if link is not None:
            raise OwnershipError(
                '{} is a link: this program does not write through links; '
                'remove the link or choose another folder'.format(link))
        path = self.file(name)
        if os.path.lexists(path) and name not in self.record['folders']:
            if not os.path.isdir(path) or os.listdir(path):
                raise OwnershipError(
                    '{} exists and was not made by this program: it is left '
                    'alone; move it away or choose another folder'.format(path))
        if name not in self.record['folders']:
            self._make_parents(name)
            self.record['folders'].append(name)
            if not os.path.isdir(path):
                self._new_folders.add(name)
            self._save_record()
        os.makedirs(path, exist_ok=True)
        return path

    def remove(self, names):
        """Remove the files ``names`` that are there (all or none).

        Raises:
            OwnershipError: one of them is not this program's, or changed,
                or lies behind a link.
        """
        present = [n for n in names if os.path.lexists(self.file(n))]
        self.check_replaceable(present)
        for name in present:
            os.remove(self.file(name))
            files.crash_point('removed ' + self.file(name))
        for name in names:
            self.record['files'].pop(name, None)
            self._new_files.discard(name)
        for name in present:
            parent = name.rpartition('/')[0]
            if parent and parent in self.record['folders']:
                _remove_if_empty(self.file(parent))
        self._save_record()

    def owned(self, prefix=''):
        """Names of the recorded files that start with ``prefix``."""
        return sorted(n for n in self.record['files'] if n.startswith(prefix))

    def remove_partial_files(self, names=()):
        """Remove the temporary files that killed writers of this folder
        left for its recorded files and for ``names``."""
        by_folder = {}
        for name in set(self.record['files']) | set(names):
            folder, _, base = name.rpartition('/')
            by_folder.setdefault(folder, []).append(base)
        for folder, bases in by_folder.items():
            if folder and self._link_on_the_way(folder) is not None:
                continue
            files.remove_partial_files(
                self.file(folder) if folder else self.path, bases)

    def set(self, **values):
        """Store ``values`` in the record (e.g. ``complete=True``)."""
        self.record.update(values)
        self._save_record()

    def get(self, key, default=None):
        """A value stored with :meth:`set`."""
        return self.record.get(key, default)

    # --- internals -----------------------------------------------------------

    def _make_parents(self, name):
        parent = name.rpartition('/')[0]
        if parent:
            self.make_folder(parent)

    def _remember(self, name):
        self.record['files'][name] = files.sha256(self.file(name))
        self._save_record()

    def _adopt(self, name, opaque):
        path = self.file(name)
        if os.path.islink(path):
            return
        if os.path.isdir(path):
            self.record['folders'].append(name)
            if name not in opaque:
                for entry in sorted(os.listdir(path)):
                    self._adopt(name + '/' + entry, opaque)
        elif os.path.isfile(path):
            self.record['files'][name] = files.sha256(path)

    def _record_on_disk(self):
        try:
            return read_record(self.path)
        except (FileProblem, OSError, ValueError):
            return None

    def _save_record(self):
        files.write_json(os.path.join(self.path, RECORD), self.record)


def _remove_if_empty(path):
    """Remove the folder ``path`` if it is empty; whether it is gone."""
    if os.path.islink(path):
        return False
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # not empty: someone else's files stay
    return True


def _lock(path, flag):
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise OwnershipError(
                '{} {}: another program of this project is writing into it '
                'now; wait for it to finish or choose another folder'.format(
                    flag, path)) from None
        raise
    return fd
