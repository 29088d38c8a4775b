"""Every command and Python snippet of README.md and docs/ runs as written.

Each page is followed as a new user would, in order, in a folder of its own
holding a copy of the committed ``figures/`` and a small synthetic dataset
in the standard formats (``DATA``, ``../shared/data`` and ``/tmp/data`` name
it; ``/tmp/`` names a folder inside). A command runs in its quick form:

- the run scripts with ``--smoke`` and a few dozen images, on the CPU, for
  real (their results are what later commands of the page read);
- work that takes minutes and has tests of its own elsewhere (the whole
  paper, the benchmark, deploy's measurements, the port comparison, the
  elastic, preprocessing and depth studies, Fig. 5, Fig. 6, and continuing or evaluating a
  committed run) up to the library call that starts it, which is recorded
  instead: its flags are accepted and its configuration is valid;
- everything else (figures, tables, relays, kits, exports) for real.

``mpiexec -n N`` runs one process; a GPU becomes the CPU. A Python snippet
runs in the page's folder after the commands above it. A block that cannot
run yet is marked ``<!-- docs-test: skip (why) -->`` right above it, and
the reason is part of the page. docs/gpu_windows.md has its own test
(tests/test_gpu_windows.py).
"""
import glob
import os
import re
import runpy
import shlex
import shutil
import sys

import pytest

from branchynet.runs import fig5, fig6
from branchynet import reproduce
from branchynet.bench import benchmark
from branchynet.data import datasets
from branchynet.data.synthetic import write_cifar10, write_mnist
from branchynet.deploy import deploy_report, port_compare
from branchynet.depth import deep_shallow, ebcle
from branchynet.runs import elastic_study, pipeline, preprocessing_study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ['README.md'] + sorted(
    p for p in glob.glob(os.path.join(ROOT, 'docs', '*.md'))
    if not p.endswith('gpu_windows.md'))
RUN_SCRIPTS = ('run_b_lenet', 'run_b_alexnet', 'run_b_resnet110')
# the quick form of a run script, unless the command gives the flag
QUICK = {'--smoke': None, '--unofficial-data': None, '--no-progress': None,
         '--train-size': '128', '--test-size': '32', '-b': '64',
         '--timing-samples': '4', '--timing-repeats': '1',
         '--timing-warmup': '0'}
DATA_NAMES = ('DATA', '../shared/data', '/tmp/data')
# scripts that need the optional PyTorch build (CI installs it)
NEEDS_PYTORCH = ('compare_port',)


def _has_pytorch():
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True
DEVICE_FLAGS = ('-d', '--device', '-g', '--gpu')


def _page_items(path):
    """``(kind, text)`` of a page, in order: ``command`` for each line that
    runs ``experiments/<script>.py`` (in a fenced block or a code span),
    ``shell`` for ``git rm``, ``python`` for each fenced Python block."""
    with open(path) as f:
        text = f.read()
    # a block that cannot run yet says why, just before it
    text = re.sub(r'<!-- docs-test: skip \(.+?\) -->\n```\w*\n.*?```', '',
                  text, flags=re.S)
    items = []
    for block in re.finditer(r'```(\w*)\n(.*?)```|`([^`\n]+)`', text, re.S):
        language, body, span = block.groups()
        if span is not None:
            if re.search(r'experiments/\w+\.py ', span):
                items.append(('command', span))
            continue
        if language == 'python':
            items.append(('python', body))
            continue
        for line in body.splitlines():
            if re.search(r'experiments/\w+\.py', line):
                items.append(('command', line))
            elif line.startswith('git rm '):
                items.append(('shell', line))
    return items


def _page_id(path):
    return os.path.relpath(path, ROOT)


@pytest.fixture(scope='module')
def page_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    write_mnist(str(root / 'mnist'), train=256, test=64)
    write_cifar10(str(root / 'cifar10' / 'cifar-10-batches-bin'),
                  per_batch=64)
    return str(root)


def words_of(line, data, home):
    """The argv of a documented command line, as it runs in ``home``:
    ``(script, argv)``."""
    line = line.split(' # ')[0].strip()
    line = re.sub(r'^\./install\.sh && ', '', line)
    line = re.sub(r'\[([^\]]*)\]', r'\1', line)  # optional flags: given
    words = shlex.split(line)
    while words and (re.fullmatch(r'\w+=\S*', words[0]) or
                     words[0] == 'nice'):
        words.pop(0)
    if words and words[0].endswith('mpiexec'):
        words = words[3:]  # -n N: one process here
    script = next(w for w in words if re.search(r'experiments/\w+\.py$', w))
    argv = words[words.index(script) + 1:]
    name = os.path.basename(script)[:-len('.py')]
    out = []
    for i, word in enumerate(argv):
        previous = argv[i - 1] if i else ''
        if word in DEVICE_FLAGS or previous in DEVICE_FLAGS:
            continue  # the CPU, the default
        if word in DATA_NAMES:
            word = data
        elif word.startswith('/tmp/'):
            word = os.path.join(home, 'tmp', word[len('/tmp/'):])
        out.append(word)
    if '--communicator' in out:  # one process: no communicator
        at = out.index('--communicator')
        del out[at:at + 2]
    return name, out


def quick_form(name, argv):
    """``argv`` with the quick form's flags added where the command runs a
    network for real: into the folder the command names, or its real
    default (``--smoke`` alone would go to ``results/smoke/``), and a
    validation split that the quick form's training set can hold."""
    if name not in RUN_SCRIPTS or '--resume' in argv or '--models' in argv:
        return argv
    argv = list(argv)
    added = []
    for flag, value in QUICK.items():
        if flag not in argv:
            added += [flag] + ([value] if value else [])
    if name == 'run_b_resnet110':  # its steps take seconds
        added = [{'64': '32', '128': '64', '32': '16'}.get(w, w)
                 for w in added]
    if not {'-o', '--out'} & set(argv):
        added += ['-o', os.path.join('results', name[len('run_'):])]
    if '--validation-size' in argv:
        at = argv.index('--validation-size') + 1
        argv[at] = '64'
        added[added.index('--train-size') + 1] = '192'
    return argv + added


class Recorder:
    """Stands for the library calls that start minutes of work."""

    def __init__(self, monkeypatch):
        self.calls = []
        for module, name in ((reproduce, 'run'), (benchmark, 'run'),
                             (deploy_report, 'measure'),
                             (deploy_report, 'runtimes_report'),
                             (port_compare, 'run'),
                             (elastic_study, 'run'),
                             (preprocessing_study, 'run'),
                             (deep_shallow, 'run'), (ebcle, 'run'),
                             (fig6, 'run'),
                             (fig5, 'run_fig5')):
            monkeypatch.setattr(module, name, self.recording(module, name))
        self.real_run = pipeline.run
        monkeypatch.setattr(pipeline, 'run', self.pipeline_run)
        monkeypatch.setattr(benchmark, 'markdown', lambda results: '')
        monkeypatch.setattr(deploy_report, 'markdown', lambda results: '')
        monkeypatch.setattr(deploy_report, 'runtimes_markdown',
                            lambda measured: '')
        monkeypatch.setattr(port_compare, 'markdown', lambda results: '')
        monkeypatch.setattr(elastic_study, 'table', lambda results: '')
        monkeypatch.setattr(deep_shallow, 'table2_markdown',
                            lambda summary: '')
        monkeypatch.setattr(ebcle, 'results_markdown', lambda summary: '')
        monkeypatch.setattr(fig6, 'fig6_markdown', lambda results: '')

    def recording(self, module, name):
        def record(*args, **kwargs):
            self.calls.append('{}.{}'.format(module.__name__, name))
            return {'backbones': []} if module is elastic_study else None
        return record

    def pipeline_run(self, config, *args, **kwargs):
        """A run of a committed (or restored) run's models, or a resume:
        recorded, its configuration already merged and checked; any other
        run for real."""
        if config.resume or config.models:
            self.calls.append('pipeline.run ' + config.out)
            return {}
        return self.real_run(config, *args, **kwargs)


@pytest.mark.parametrize('page', PAGES, ids=[_page_id(p) for p in PAGES])
def test_a_page_runs_as_written(page, page_data, tmp_path, monkeypatch):
    items = _page_items(page)
    if not items:
        pytest.skip('no command or snippet on this page')
    home = tmp_path / 'home'
    home.mkdir()
    (home / 'tmp').mkdir()
    shutil.copytree(os.path.join(ROOT, 'figures'), str(home / 'figures'))
    monkeypatch.chdir(home)
    monkeypatch.setenv(datasets.CACHE_DIR_ENV, str(tmp_path / 'cache'))
    monkeypatch.setenv('OPENBLAS_NUM_THREADS', '1')
    Recorder(monkeypatch)
    for kind, text in items:
        where = '{}: {}'.format(_page_id(page), text.strip()[:200])
        if kind == 'shell':  # git rm -rq FOLDER: the folder goes
            shutil.rmtree(str(home / shlex.split(text)[-1]))
            continue
        if kind == 'python':
            code = compile(text, where, 'exec')
            exec(code, {'__name__': '__doc__'})
            continue
        name, argv = words_of(text, page_data, str(home))
        if name == 'pytest' or name not in _scripts():
            continue
        if name in NEEDS_PYTORCH and not _has_pytorch():
            continue  # it stops with a line saying so (test_port.py)
        argv = quick_form(name, argv)
        if _done_before(name, argv):
            continue
        monkeypatch.setattr(sys, 'argv', [name + '.py'] + argv)
        try:
            runpy.run_path(os.path.join(ROOT, 'experiments', name + '.py'),
                           run_name='__main__')
        except SystemExit as e:
            assert e.code in (None, 0), '{}\nstopped: {}'.format(where,
                                                                 e.code)
        _remember(name, argv, tmp_path)


# A network run in its quick form that an earlier page ran with the same
# flags is copied from there instead of trained again (the same seed, the
# same data: the same files): a page still finds its results where the
# command puts them.
_RUNS = {}


def _run_key(name, argv):
    out = next((argv[i + 1] for i, w in enumerate(argv)
                if w in ('-o', '--out')), None)
    rest = [w for i, w in enumerate(argv)
            if w not in ('-o', '--out') and (i == 0 or argv[i - 1] not in
                                             ('-o', '--out'))]
    return (name, tuple(rest)), out


def _done_before(name, argv):
    if name not in RUN_SCRIPTS or '--resume' in argv or '--models' in argv:
        return False
    key, out = _run_key(name, argv)
    if key not in _RUNS or os.path.exists(out):
        return False
    shutil.copytree(_RUNS[key], out, symlinks=True)
    return True


def _remember(name, argv, tmp_path):
    if name not in RUN_SCRIPTS or '--resume' in argv or '--models' in argv:
        return
    key, out = _run_key(name, argv)
    if key not in _RUNS and os.path.isdir(out):
        kept = str(tmp_path / 'runs' / str(len(_RUNS)))
        shutil.copytree(out, kept, symlinks=True)
        _RUNS[key] = kept


def _scripts():
    return {os.path.basename(p)[:-len('.py')] for p in
            glob.glob(os.path.join(ROOT, 'experiments', '*.py'))}


def test_every_page_with_commands_is_followed():
    """The pages hold the commands this test runs: a page that stops
    showing its commands in a form this test finds would pass unread."""
    found = {_page_id(p): [k for k, _ in _page_items(p)] for p in PAGES}
    assert found['README.md'].count('command') >= 5
    assert found['docs/reproducing.md'].count('command') >= 10
    assert 'python' in found['docs/api.md']
    for page in ('docs/deploying.md', 'docs/elastic.md',
                 'docs/distributed.md', 'docs/deep_shallow.md',
                 'docs/ebcle.md'):
        assert 'command' in found[page], page
