"""A small schema language for the JSON files this project reads.

The expected shape of a file is written as a schema: a dict of required
keys (:class:`Optional` for keys that may be missing), :class:`ListOf`,
:class:`DictOf`, :class:`Nullable`, a type, :class:`Equal`,
:class:`Number` or :class:`Integer`; :func:`check` compares a value with
it and raises :class:`~branchynet.utils.errors.FileProblem` naming the
file, the key and what was expected.
"""
import numbers

from branchynet.utils.errors import FileProblem


class _Around:
    """A schema word around one inner ``spec``."""

    def __init__(self, spec):
        self.spec = spec


class Optional(_Around):
    """A dict key that may be missing (its value, when there, is ``spec``)."""


class Nullable(_Around):
    """``None`` or ``spec`` (JSON null: a diverged run's number)."""


class ListOf(_Around):
    """A list whose items are ``spec``."""

    def __init__(self, spec, min_length=0):
        super().__init__(spec)
        self.min_length = min_length


class DictOf(_Around):
    """A dict with any string keys whose values are ``spec``."""


class Equal:
    """Exactly ``value``."""

    def __init__(self, value):
        self.value = value


class Number:
    """A real number (not a bool)."""


class Integer:
    """An integer (not a bool)."""


_NAMES = {str: 'a string', bool: 'true or false', dict: 'an object',
          list: 'a list'}


def _describe(spec):
    if spec is Number:
        return 'a number'
    if spec is Integer:
        return 'an integer'
    if isinstance(spec, Nullable):
        return '{} or null'.format(_describe(spec.spec))
    if isinstance(spec, ListOf):
        return 'a list'
    if isinstance(spec, (dict, DictOf)):
        return 'an object'
    if isinstance(spec, Equal):
        return repr(spec.value)
    if isinstance(spec, tuple):
        return ' or '.join(_describe(s) for s in spec)
    return _NAMES.get(spec, getattr(spec, '__name__', str(spec)))


def _matches(value, spec):
    """Whether ``value`` has the top-level type ``spec`` asks for."""
    if spec is Number:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if spec is Integer:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(spec, Nullable):
        return value is None or _matches(value, spec.spec)
    if isinstance(spec, ListOf):
        return isinstance(value, list)
    if isinstance(spec, (dict, DictOf)):
        return isinstance(value, dict)
    if isinstance(spec, Equal):
        return value == spec.value
    if isinstance(spec, tuple):
        return any(_matches(value, s) for s in spec)
    return isinstance(value, spec)


def check(value, spec, path, where=''):
    """Raise :class:`FileProblem` unless ``value`` fits ``spec``.

    Args:
        value: what was read.
        spec: the schema.
        path: the file, for the message.
        where: the key path inside the file (``'timing/cpu/knee'``).
    """
    if not _matches(value, spec):
        raise FileProblem('{}: {}expected {}, got {}'.format(
            path, where + ': ' if where else '', _describe(spec),
            _shown(value)))
    if isinstance(spec, Nullable):
        if value is not None:
            check(value, spec.spec, path, where)
    elif isinstance(spec, tuple):
        check(value, next(s for s in spec if _matches(value, s)), path, where)
    elif isinstance(spec, ListOf):
        if len(value) < spec.min_length:
            raise FileProblem('{}: {}: expected at least {} item(s), got {}'
                              .format(path, where or 'the file',
                                      spec.min_length, len(value)))
        for i, item in enumerate(value):
            check(item, spec.spec, path, '{}[{}]'.format(where, i))
    elif isinstance(spec, DictOf):
        for key, item in value.items():
            check(item, spec.spec, path, _join(where, key))
    elif isinstance(spec, dict):
        for key, item_spec in spec.items():
            optional = isinstance(item_spec, Optional)
            if key not in value:
                if optional:
                    continue
                raise FileProblem('{}: {}missing key {!r}'.format(
                    path, where + ': ' if where else '', key))
            check(value[key], item_spec.spec if optional else item_spec,
                  path, _join(where, key))


def _join(where, key):
    return '{}/{}'.format(where, key) if where else str(key)


def _shown(value):
    text = 'null' if value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + '...'
