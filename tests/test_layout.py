"""The package's floors, as docs/layout.md draws them: each module imports
only from its own floor and the floors below it (imports inside functions
included), so the method at the package root stands on its own."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'branchynet')
# lowest first; the package root (the method) is ''
FLOORS = ['utils', '', 'data', 'paper', 'bench', 'runs', 'depth',
          'deploy', 'reproduce']
# without a stated reason in its docstring, no module is longer than this
MAX_LINES = 500


def modules():
    """``{dotted name: path}`` of every module of the package."""
    found = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, ROOT)[:-len('.py')]
                dotted = relative.replace(os.sep, '.')
                found[dotted[:-len('.__init__')] if dotted.endswith(
                    '.__init__') else dotted] = path
    return found


MODULES = modules()


def floor(dotted):
    """The floor of a module of the package (or of a subpackage)."""
    parts = dotted.split('.')
    if len(parts) > 1 and parts[1] in FLOORS:
        return FLOORS.index(parts[1])
    return FLOORS.index('')


def imported(path):
    """The package's modules that the module at ``path`` imports."""
    with open(path) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.level == 0:
            for alias in node.names:
                full = '{}.{}'.format(node.module, alias.name)
                names.add(full if full in MODULES else node.module)
    return {n for n in names if n == 'branchynet' or
            n.startswith('branchynet.')}


@pytest.mark.parametrize('module', sorted(MODULES))
def test_a_module_imports_nothing_from_the_floors_above_it(module):
    if module == 'branchynet':
        return  # the package's face: it re-exports the method's names
    above = sorted(n for n in imported(MODULES[module])
                   if n != 'branchynet' and floor(n) > floor(module))
    assert not above, '{} (floor {!r}) imports {}'.format(
        module, FLOORS[floor(module)], above)


def test_the_networks_stand_on_the_method_alone():
    folder = os.path.join(ROOT, 'networks')
    for name in os.listdir(folder):
        if name.endswith('.py'):
            for dotted in imported(os.path.join(folder, name)):
                assert floor(dotted) <= FLOORS.index(''), (name, dotted)


def test_a_long_module_says_why_in_its_docstring():
    for module, path in MODULES.items():
        with open(path) as f:
            text = f.read()
        if text.count('\n') > MAX_LINES:
            docstring = ast.get_docstring(ast.parse(text)) or ''
            assert 'longer than' in docstring and 'lines' in docstring, \
                '{}: {} lines, no reason given'.format(module,
                                                       text.count('\n'))


def test_the_layout_page_names_every_module():
    with open(os.path.join(ROOT, 'docs', 'layout.md')) as f:
        page = f.read()
    for module, path in MODULES.items():
        if not path.endswith('__init__.py'):
            name = os.path.relpath(path, ROOT)
            assert os.path.basename(name) in page, name
