"""Data-parallel training on 2 ranks (ChainerMN, naive communicator, CPU).

Every test launches mpiexec from the virtual environment (the mpich wheel)
and skips, saying why, when MPI is not installed.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import chainer
import numpy
import pytest

from branchynet.deploy import port_kit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = shutil.which('mpiexec', path=os.path.dirname(sys.executable)) or \
    shutil.which('mpiexec')
LENET = os.path.join(ROOT, 'experiments', 'run_b_lenet.py')
SCENARIOS = os.path.join(ROOT, 'tests', 'mpi_scenarios.py')
REPRODUCE = os.path.join(ROOT, 'experiments', 'reproduce_paper.py')
pytestmark = pytest.mark.skipif(
    MPIEXEC is None, reason='MPI is not installed (pip install -e ".[mpi]")')
# MPICH runs as root without flags; Open MPI needs these
EXTRA = ['--allow-run-as-root', '--oversubscribe'] if MPIEXEC and b'Open MPI' \
    in subprocess.run([MPIEXEC, '--version'], capture_output=True).stdout \
    else []


def mpiexec(args, ranks=2, timeout=300, **kwargs):
    return subprocess.run([MPIEXEC] + EXTRA + ['-n', str(ranks)] + args,
                          capture_output=True, text=True, timeout=timeout,
                          **kwargs)


DATA_SIZES = {'mnist': (256, 64), 'cifar10_per_batch': None}


@pytest.fixture(scope='module')
def equivalence(tmp_path_factory):
    out = tmp_path_factory.mktemp('equivalence')
    done = mpiexec([sys.executable, SCENARIOS, 'equivalence', str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def replay(kind, out):
    """One process, the same initial weights, the ranks' global batches."""
    import mpi_scenarios as s
    net, policy, optimizer = s.build(kind)
    x, t = s.dataset(net.input_shape)
    ranks = [numpy.load(out / '{}_rank{}.npy'.format(kind, r))
             for r in range(2)]
    batches = [numpy.concatenate(step) for step in zip(*ranks)]
    for batch in batches:
        optimizer.update(policy, x[batch], t[batch])
    return port_kit.weights(net), batches


def disagreement(name, got, expected, steps, batchnorm, alpha=0.001):
    """How ``got`` (the ranks' array after ``steps`` Adam steps) differs from
    ``expected`` (one process's) beyond float32 rounding: ``''`` if not.
    ``batchnorm``: whether the network has BatchNorm (B-ResNet's does).

    The ranks average two half-batch gradients where one process takes the
    mean over the whole batch: equal up to float32 rounding. Two kinds of
    arrays cannot agree closely: a convolution bias followed by BatchNorm
    has a gradient that is zero in exact arithmetic, and Adam turns its
    rounding noise into steps of up to alpha in any two implementations;
    the BatchNorm running means include those biases. And ChainerMN's
    synchronised BatchNorm makes the running variance unbiased with the
    rank's sample count m, not the global one (a factor 1 + 1/m in each
    update's new term; here m = 512).

    Other weights agree closely overall, but not element by element: Adam
    normalises each element's gradient, so an element whose gradient is
    near zero, or that lies behind a max-pooling window whose two largest
    values are within rounding, turns rounding into a sizeable part of a
    step. Measured over 8 steps of B-LeNet on an AMD EPYC host: 9 % of one
    layer's elements more than alpha/100 apart, one element 0.38 alpha
    apart, but the root mean square difference of every array at most
    8e-6 (alpha/125). So: the root mean square within alpha/50 and every
    element within 2 alpha. A wrong batch moves whole arrays by steps
    (root mean square 1e-3 or more; see the test that replays one).
    """
    diff = numpy.abs(got.astype(numpy.float64) - expected)
    bias_before_batchnorm = name.endswith('/b') and (
        'conv' in name or name.startswith('trunk/0/'))
    if batchnorm and (bias_before_batchnorm or name.endswith('avg_mean')):
        limit = 2 * steps * alpha
        return '' if diff.max() <= limit else '{}: {:.3g} > {:.3g}'.format(
            name, diff.max(), limit)
    if batchnorm and name.endswith('avg_var'):
        limit = 1e-6 + 5e-3 * numpy.abs(expected)
        return '' if (diff <= limit).all() else '{}: {:.3g} off'.format(
            name, diff.max())
    rms = float(numpy.sqrt((diff ** 2).mean()))
    if rms > alpha / 50 or diff.max() > 2 * alpha:
        return '{}: root mean square {:.3g}, largest {:.3g}'.format(
            name, rms, diff.max())
    return ''


@pytest.mark.parametrize('kind', ['lenet', 'resnet'])
def test_two_ranks_train_as_one_process(equivalence, kind):
    expected, batches = replay(kind, equivalence)
    with numpy.load(equivalence / '{}_params.npz'.format(kind)) as got:
        assert set(got.files) == set(expected)
        problems = [disagreement(name, got[name], expected[name],
                                 len(batches), batchnorm=kind == 'resnet')
                    for name in expected]
    assert not any(problems), [p for p in problems if p]


def test_the_tolerance_sees_a_wrong_batch(equivalence):
    """The same replay with two steps' batches swapped fails it in every
    array."""
    import mpi_scenarios as s
    _, batches = replay('lenet', equivalence)
    net, policy, optimizer = s.build('lenet')
    x, t = s.dataset(net.input_shape)
    batches[0], batches[1] = batches[1], batches[0]
    for batch in batches:
        optimizer.update(policy, x[batch], t[batch])
    swapped = port_kit.weights(net)
    with numpy.load(equivalence / 'lenet_params.npz') as got:
        outside = [name for name in swapped if disagreement(
            name, got[name], swapped[name], len(batches), batchnorm=False)]
    assert outside == list(swapped)  # every array, by whole steps


def test_every_sample_once_per_epoch_across_ranks(equivalence):
    import mpi_scenarios as s
    _, batches = replay('lenet', equivalence)
    steps = s.SAMPLES // s.GLOBAL_BATCH
    assert len(batches) == steps * s.EPOCHS
    assert all(len(b) == s.GLOBAL_BATCH for b in batches)
    for epoch in range(s.EPOCHS):
        seen = numpy.concatenate(batches[epoch * steps:(epoch + 1) * steps])
        assert sorted(seen) == list(range(s.SAMPLES))
    ranks = [numpy.load(equivalence / 'lenet_rank{}.npy'.format(r))
             for r in range(2)]
    assert not set(ranks[0].ravel()) & set(ranks[1].ravel())  # disjoint shards


def test_only_rank_0_writes(data, tmp_path):
    """Each rank runs in its own working folder with the same relative --out."""
    folders = [tmp_path / 'rank0', tmp_path / 'rank1']
    for folder in folders:
        folder.mkdir()
    flags = ['--data-dir', data, '-o', 'run', '--smoke', '--no-progress',
             '--unofficial-data', '-b', '64', '--timing-samples', '4',
             '--communicator', 'naive']
    command = [MPIEXEC] + EXTRA
    for i, folder in enumerate(folders):
        command += (['-n', '1', '-wdir', str(folder), sys.executable, LENET] +
                    flags + ([':'] if i == 0 else []))
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((folders[0] / 'run' / 'results.json').read_text())
    assert results['distributed'] == {'communicator': 'naive', 'ranks': 2,
                                      'sync_batchnorm': True}
    assert results['config']['communicator'] == 'naive'
    assert (folders[0] / 'run' / 'figures').is_dir()
    assert os.listdir(folders[1]) == []


def test_a_killed_distributed_run_resumes_and_finishes(data, tmp_path):
    out = tmp_path / 'run'
    flags = ['--data-dir', data, '-o', str(out), '--unofficial-data',
             '--no-progress', '--no-timing', '-b', '64', '--epoch-main',
             '4', '--epoch-joint', '2', '--communicator', 'naive']
    process = subprocess.Popen([MPIEXEC] + EXTRA + ['-n', '2', sys.executable,
                                                    LENET] + flags,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL,
                               start_new_session=True)
    snapshot = out / 'main_phase' / 'snapshot_epoch_1.0'
    deadline = time.time() + 240
    while not snapshot.exists() and time.time() < deadline and \
            process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert snapshot.exists()
    assert not (out / 'branchynet.npz').exists()
    done = mpiexec([sys.executable, LENET] + flags + ['--resume'])
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / 'results.json').read_text())
    assert [e['epoch'] for e in results['training']['main']] == [1, 2, 3, 4]
    assert [e['epoch'] for e in results['training']['joint']] == [1, 2]
    # the epoch resumed from keeps its evaluation: the snapshot is taken
    # after the log has its entry (it was once taken before, and the resumed
    # run logged that epoch again without its validation keys)
    assert all('validation/main/accuracy' in e
               for e in results['training']['main'])


@pytest.mark.parametrize('flags, message', [
    (['-b', '63'], 'the global batch of 63 does not divide among 2 ranks'),
    (['--communicator', 'pure_nccl'], '--communicator pure_nccl needs a GPU'),
])
def test_a_bad_launch_fails_clearly_on_every_rank(data, tmp_path, flags,
                                                  message):
    done = mpiexec([sys.executable, LENET, '--data-dir', data, '-o',
                    str(tmp_path / 'run'), '--smoke', '--no-progress',
                    '--unofficial-data', '-b', '64', '--communicator', 'naive']
                   + flags,
                   timeout=120)
    assert done.returncode != 0
    assert done.stderr.count(message) == 2, done.stderr[-2000:]
    assert 'Traceback' not in done.stderr
    assert not (tmp_path / 'run').exists()


def test_without_mpi_nothing_changes(data, tmp_path):
    """The same script without mpiexec trains in one process, as always."""
    from branchynet.runs import cli
    results = cli.main('b_lenet', ['--data-dir', data, '-o',
                                   str(tmp_path / 'one'), '--smoke',
                                   '--no-progress', '--unofficial-data',
                                   '--no-timing', '-b', '64'])
    assert results['distributed'] == {'communicator': None, 'ranks': 1,
                                      'sync_batchnorm': False}
    assert chainer.config.train


def test_reproduce_paper_trains_on_every_rank_and_reports_once(tmp_path):
    """``mpiexec -n 2 reproduce_paper.py``: the training parts run on both
    ranks; the estimates, the benchmark, the table and the messages are
    rank 0's alone."""
    out = tmp_path / 'paper'
    done = mpiexec([sys.executable, REPRODUCE, '--smoke', '--only',
                    'lenet,benchmark', '--out', str(out)], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / 'b_lenet' / 'results.json').read_text())
    assert results['distributed'] == {'communicator': 'naive', 'ranks': 2,
                                      'sync_batchnorm': True}
    assert (out / 'benchmarks' / 'benchmark_cpu.json').is_file()
    assert (out / 'table1.md').is_file()
    assert done.stdout.count('part        estimate') == 1
    assert done.stdout.count('lenet: running into') == 1
