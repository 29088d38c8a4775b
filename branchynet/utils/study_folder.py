"""A study's folder: new with its settings, or resumed with the same settings."""
from branchynet.utils import files
from branchynet.utils.errors import UserError
from branchynet.utils.ownership import OutputFolder

SETTINGS = 'study.json'


def open_study(out, kind, settings, resume, what, opaque=()):
    """Open (making it) the study folder ``out`` of ``kind``.

    A new study needs a new or empty folder and records ``settings`` (a
    JSON-ready dict of everything that shapes its results) in
    :data:`SETTINGS`; a resumed one (``resume``) must hold a study of the
    same kind made with the same settings.

    Args:
        what: the study's name in messages (``'deep-vs-shallow study'``).
        opaque: sub-folders whose contents Chainer's Trainer manages.

    Raises:
        UserError: naming the folder, what differs and the way out.
    """
    folder = OutputFolder.open(out, kind, foreign_ok=False, opaque=opaque)
    try:
        if SETTINGS not in folder:
            if resume:
                raise UserError('--resume: {} holds no {}'.format(out, what))
            folder.write_json(SETTINGS, settings)
            return folder
        if not resume:
            raise UserError('--out {} already holds a {}: pass --resume to '
                            'continue it, or choose another --out'.format(
                                out, what))
        stored = files.read_json(folder.file(SETTINGS))
        changed = sorted(k for k in set(stored) | set(settings)
                         if stored.get(k) != settings.get(k))
        if changed:
            raise UserError('--resume: the {} in {} was made with other '
                            'settings: {}; resume it with its own'.format(
                                what, out, '; '.join(
                                    '{} {!r} (the study has {!r})'.format(
                                        k, settings.get(k), stored.get(k))
                                    for k in changed)))
    except BaseException:
        folder.discard()  # what this opening made, nothing else
        raise
    return folder
