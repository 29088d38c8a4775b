"""The prepared GPU commands of docs/gpu_windows.md still run on this code.

A GPU window is too short to find out there that a flag was renamed. Every
``python3 experiments/...`` command of the document is run here as its CPU
form (the device flag set to ``@numpy``, ``$OUT`` and ``/tmp/data`` on
temporary folders) up to the point where the work would start: the
library call that trains, evaluates or measures is replaced by a recorder.
So each command's flags are accepted, its configuration is valid (with
``--models``, merged with the committed run's ``run.json``) and it writes
under ``$OUT`` alone.
"""
import os
import re
import runpy
import shlex
import sys

import pytest

from branchynet.runs import fig5
from branchynet import reproduce
from branchynet.bench import benchmark
from branchynet.data import datasets
from branchynet.runs import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, 'docs', 'gpu_windows.md')
# the number of epochs that fits a window, measured by the check part
PLACEHOLDERS = {'E': '1'}


def prepared_commands():
    """``(script, argv)`` of every ``python3 experiments/<script>.py`` in the
    document's code spans, with shell variables defined there (``A="..."``)
    expanded; ``$OUT`` is left for the test."""
    with open(DOC) as f:
        text = f.read()
    commands = []
    text = re.sub(r'```.*?```', '', text, flags=re.S)  # fenced blocks
    for span in re.findall(r'`([^`]+)`', text):
        variables = {}
        for part in span.split(';'):
            part = part.strip()
            defined = re.fullmatch(r'(\w+)="([^"]*)"', part)
            if defined:
                variables[defined.group(1)] = defined.group(2)
                continue
            if not re.match(r'python3 experiments/\w+\.py\b', part):
                continue
            for name, value in variables.items():
                part = part.replace('$' + name, value)
            words = shlex.split(part)
            script = os.path.basename(words[1])[:-len('.py')]
            commands.append((script, words[2:]))
    return commands


COMMANDS = prepared_commands()


def cpu_form(argv, out, data):
    """The command as it first runs on the CPU."""
    words = []
    for i, word in enumerate(argv):
        if i and argv[i - 1] in ('-d', '--device'):
            word = '@numpy'
        word = PLACEHOLDERS.get(word, word)
        words.append(word.replace('$OUT', out).replace('/tmp/data', data))
    return words


class Reached(Exception):
    """The point where an elastic study starts its work."""


def test_the_document_holds_every_window():
    scripts = [script for script, _ in COMMANDS]
    for needed in ('reproduce_paper', 'run_b_lenet', 'run_b_alexnet',
                   'benchmark', 'run_alexnet_branch_layers', 'run_elastic',
                   'run_b_resnet110'):
        assert needed in scripts
    models = [argv[argv.index('--models') + 1] for _, argv in COMMANDS
              if '--models' in argv]
    assert sorted(models) == ['figures/b_lenet']


@pytest.mark.parametrize('script, argv', COMMANDS,
                         ids=['{}-{}'.format(i, s)
                              for i, (s, _) in enumerate(COMMANDS)])
def test_a_prepared_command_reaches_its_work_on_the_cpu(
        script, argv, tmp_path, monkeypatch):
    out, data = str(tmp_path / 'OUT'), str(tmp_path / 'data')
    os.makedirs(data)
    monkeypatch.chdir(ROOT)  # --models names committed folders
    monkeypatch.setenv(datasets.CACHE_DIR_ENV, str(tmp_path / 'cache'))
    reached = []

    def recorder(*outs):
        def record(*args, **kwargs):
            reached.append([outs_of(args, kwargs) for outs_of in outs])
            return {}
        return record

    monkeypatch.setattr(pipeline, 'run', recorder(lambda a, k: a[0].out))
    monkeypatch.setattr(fig5, 'run_fig5', recorder(
        lambda a, k: a[1], lambda a, k: [c.out for c in a[0]]))
    monkeypatch.setattr(reproduce, 'run', recorder(lambda a, k: a[0].out))
    monkeypatch.setattr(benchmark, 'run', recorder(lambda a, k: a[3]))
    monkeypatch.setattr(benchmark, 'markdown', lambda results: '')

    def load_cifar10(*args, **kwargs):
        raise Reached()
    monkeypatch.setattr(datasets, 'load_cifar10', load_cifar10)
    monkeypatch.setattr(sys, 'argv', [script + '.py'] +
                        cpu_form(argv, out, data))
    path = os.path.join(ROOT, 'experiments', script + '.py')
    if script == 'run_elastic':
        with pytest.raises(Reached):
            runpy.run_path(path, run_name='__main__')
        # its output folder is opened before the data are read
        assert os.listdir(out) == ['r']
        return
    runpy.run_path(path, run_name='__main__')
    assert len(reached) == 1
    written = [p for ps in reached[0] for p in
               (ps if isinstance(ps, list) else [ps])]
    for path in written:
        assert os.path.abspath(path).startswith(out + os.sep), path
