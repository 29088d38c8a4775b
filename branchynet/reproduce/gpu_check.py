"""The GPU check: is this device computing what the CPU computes, and how fast?

One prepared pass (about two minutes on an H100) over everything that a GPU
run depends on, each item measured against the CPU:

- versions: CuPy, CUDA runtime and driver, the device, whether cuDNN is used;
- the GPU test suite (``tests/test_gpu.py``, ``tests/test_entropy.py``), when
  the tests are present;
- for B-LeNet, B-AlexNet and B-ResNet-110: forward of every exit, gradients
  of the joint loss (test mode, so that dropout masks cannot differ), and
  early-exit ``predict`` / ``predict_sample`` decisions, GPU against CPU;
- the training-mode joint gradient of B-LeNet (no dropout) and the backward
  pass of ``percent_train_keeps < 1``;
- the CuPy entropy kernel against NumPy;
- a model saved on the GPU and loaded on the CPU;
- training through the Trainer with snapshot and resume: an interrupted and
  resumed B-LeNet run against an uninterrupted one (B-LeNet has no dropout,
  so the two should be bit-identical);
- ``run_b_lenet.py --quick`` on the device (timing both halves);
- the benchmark's quick profile on B-LeNet;
- B-ResNet-110's training time per epoch at batch 64, for planning.

Run on the CPU (``--device @numpy``) every comparison is trivially exact:
that only exercises the code, as the CI smoke run does.

Writes ``check.json`` and ``check.md``.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import chainer
import chainer.functions as F
import numpy
from chainer.backends import cuda

from branchynet import entropy, exit_rule, loss
from branchynet.bench import benchmark
from branchynet.data import datasets, synthetic
from branchynet.deploy import port_kit
from branchynet.paper import protocols
from branchynet.runs import pipeline, run_folder
from branchynet.runs.config import QUICK, RunConfig
from branchynet.serialization import load_model, save_model
from branchynet.utils import environment
from branchynet.utils import markdown as md
from branchynet.utils.ownership import OutputFolder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))  # the repository
# float32 on different kernels: relative to the largest magnitude compared
FORWARD_TOLERANCE = 1e-4
GRADIENT_TOLERANCE = 1e-3
PARITY_BATCH = {'b_lenet': 32, 'b_alexnet': 32, 'b_resnet110': 8}


def relative_error(got, expected):
    """:func:`branchynet.deploy.port_kit.relative_error` of arrays on any device."""
    return port_kit.relative_error(cuda.to_cpu(got), cuda.to_cpu(expected))


def _pair(key, device, seed=0):
    numpy.random.seed(seed)
    cpu = protocols.get(key).network()
    gpu = cpu.copy(mode='copy')
    gpu.to_device(device)
    return cpu, gpu


def network_parity(key, device, size=None):
    """Forward, joint-loss gradients and early-exit decisions, device vs CPU.

    Args:
        key: a protocol key.
        device: the Chainer device compared with the CPU.
        size: batch size (default :data:`PARITY_BATCH`).
    """
    cpu, gpu = _pair(key, device)
    x, t = synthetic.random_batch(cpu.input_shape,
                                  size or PARITY_BATCH[key], seed=1)
    result = {}
    with chainer.using_config('train', False):
        ys_cpu, ys_gpu = cpu(x), gpu(device.send(x))
        result['forward_error'] = max(relative_error(b.array, a.array)
                                      for a, b in zip(ys_cpu, ys_gpu))
        for net, xs, ts in ((cpu, x, t), (gpu, device.send(x),
                                          device.send(t))):
            net.cleargrads()
            loss.BranchyLoss(net)(xs, ts).backward()
    result['gradient_error'] = max(
        relative_error(dict(gpu.namedparams())[name].grad, p.grad)
        for name, p in cpu.namedparams())
    entropies = [cuda.to_cpu(entropy(F.softmax(y).array)) for y in ys_cpu[:-1]]
    thresholds = exit_rule.thresholds_at_widest_gaps(entropies)
    expected = cpu.predict(x, thresholds=thresholds)
    got = gpu.predict(x, thresholds=thresholds)
    samples = [gpu.predict_sample(x[i:i + 1], thresholds)
               for i in range(min(size, 8))]
    result['predict_equal'] = bool(
        (got[0] == expected[0]).all() and (got[1] == expected[1]).all() and
        samples == [(int(a), int(b)) for a, b in
                    zip(expected[0][:8], expected[1][:8])])
    result['exits_used'] = sorted(set(int(e) for e in expected[1]))
    result['ok'] = (result['forward_error'] <= FORWARD_TOLERANCE and
                    result['gradient_error'] <= GRADIENT_TOLERANCE and
                    result['predict_equal'])
    return result


def training_parity(device):
    """Train-mode joint gradients (B-LeNet) and ``percent_train_keeps=0.5``."""
    result = {}
    for keeps in (1.0, 0.5):
        cpu, gpu = _pair('b_lenet', device)
        x, t = synthetic.random_batch(cpu.input_shape, 64, seed=2)
        for net, xs, ts in ((cpu, x, t), (gpu, device.send(x),
                                          device.send(t))):
            policy = loss.BranchyLoss(net, percent_train_keeps=keeps)
            net.cleargrads()
            policy(xs, ts).backward()
        result['keeps_{:g}_gradient_error'.format(keeps)] = max(
            relative_error(dict(gpu.namedparams())[name].grad, p.grad)
            for name, p in cpu.namedparams())
    result['ok'] = all(v <= GRADIENT_TOLERANCE for v in result.values())
    return result


def entropy_kernel(device):
    """The device's entropy against NumPy's, zeros included."""
    rng = numpy.random.RandomState(3)
    p = rng.dirichlet(numpy.ones(10), 1000).astype(numpy.float32)
    p[:10, 0], p[:10, 1:] = 1, 0
    error = relative_error(entropy(device.send(p)), entropy(p))
    return {'relative_error': error, 'ok': error <= FORWARD_TOLERANCE}


def save_load_round_trip(device, folder):
    """A model saved from the device and loaded on the CPU computes the same."""
    cpu, gpu = _pair('b_alexnet', device)
    path = os.path.join(folder, 'roundtrip.npz')
    save_model(path, gpu)
    numpy.random.seed(9)
    loaded = load_model(path, protocols.get('b_alexnet').network())
    x = numpy.random.RandomState(4).rand(4, 3, 32, 32).astype(numpy.float32)
    with chainer.using_config('train', False):
        error = relative_error(loaded(x)[-1].array, cpu(x)[-1].array)
    os.remove(path)
    return {'relative_error': error, 'ok': error <= FORWARD_TOLERANCE}


def _interrupt_after(iterations):
    """A trainer extension that stops the run as Ctrl-C would, after
    ``iterations`` updates."""
    @chainer.training.make_extension(trigger=(iterations, 'iteration'))
    def interrupt(trainer):
        raise KeyboardInterrupt
    return interrupt


def resume_identity(device, folder, data_dir):
    """An interrupted and resumed B-LeNet run against an uninterrupted one."""
    config = RunConfig.for_protocol(
        'b_lenet', out=os.path.join(folder, 'straight'), data_dir=data_dir,
        device=device_spec(device), epoch_main=2, epoch_joint=2, batchsize=64,
        train_size=256, test_size=64, skip_timing=True, no_progress=True,
        unofficial_data=True)
    pipeline.run(config)
    resumed = config.replace(out=os.path.join(folder, 'resumed'))
    interrupted = False
    try:  # interrupted in the main phase's second epoch
        pipeline.run(resumed, extra_extensions=[_interrupt_after(5)])
    except KeyboardInterrupt:
        interrupted = True
    pipeline.run(resumed.replace(resume=True))
    worst = 0.0
    for name in run_folder.MODEL_FILES.values():
        with numpy.load(os.path.join(folder, 'straight', name)) as a, \
                numpy.load(os.path.join(folder, 'resumed', name)) as b:
            for key in a.files:
                if a[key].dtype.kind == 'f':
                    worst = max(worst, relative_error(b[key], a[key]))
    return {'interrupted': interrupted, 'max_relative_difference': worst,
            'bit_identical': worst == 0.0,
            'ok': interrupted and worst <= GRADIENT_TOLERANCE}


def device_spec(device):
    """The ``--device`` text of a Chainer device."""
    return '@numpy' if device.xp is numpy else '@cupy:{}'.format(
        device.device.id)


def quick_run(device, folder, data_dir):
    """``run_b_lenet.py --quick`` on the device: the whole pipeline, both halves."""
    config = RunConfig.for_protocol(
        'b_lenet', out=os.path.join(folder, 'quick_b_lenet'),
        data_dir=data_dir, device=device_spec(device), quick=True,
        no_progress=True, unofficial_data=True, **QUICK)
    results = pipeline.run(config)
    return {'timed_devices': sorted(results['timing']),
            'ok': bool(results['timing'])}


def resnet_epoch_time(device, steps=5, batchsize=64):
    """Seconds per main-phase and joint-phase step of B-ResNet-110 at batch 64."""
    seconds = benchmark.step_seconds('b_resnet110', device, batchsize, steps)
    result = {phase + '_step_s': s for phase, s in seconds.items()}
    # data_batch_5 held out of training
    steps_per_epoch = (protocols.DATASET_SIZES['cifar10']['train'] -
                       datasets.CIFAR10_RECORDS) // batchsize
    result['epoch_s'] = {p: result[p + '_step_s'] * steps_per_epoch
                         for p in ('main', 'joint')}
    protocol = protocols.get('b_resnet110')
    result['full_protocol_training_min'] = (
        protocol.epoch_main * result['epoch_s']['main'] +
        protocol.epoch_joint * result['epoch_s']['joint']) / 60
    result['ok'] = True
    return result


def gpu_test_suite():
    """The GPU tests, run by pytest in a subprocess: its summary line."""
    tests = [os.path.join(ROOT, 'tests', name)
             for name in ('test_gpu.py', 'test_entropy.py')]
    if not all(os.path.isfile(t) for t in tests):
        return {'summary': 'tests not present', 'ok': True}
    done = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rs'] +
                          tests, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return {'summary': lines[-1] if lines else done.stderr[-500:],
            'skipped': [line for line in lines if 'SKIPPED' in line],
            'ok': done.returncode == 0}


def versions(device):
    """CuPy, CUDA and device facts, or the CPU's."""
    info = {'environment': environment.describe(device)}
    if device.xp is not numpy:
        cupy = cuda.cupy
        info.update({
            'cupy': cupy.__version__,
            'cuda_runtime': cupy.cuda.runtime.runtimeGetVersion(),
            'cuda_driver': cupy.cuda.runtime.driverGetVersion(),
            'cudnn_available': bool(cuda.cudnn_enabled),
            'chainer_uses_cudnn': bool(cuda.cudnn_enabled and
                                       chainer.config.use_cudnn != 'never'),
        })
    return info


def run(device, out, data_dir=None, light=False, say=print):
    """Every check on ``device``; writes ``check.json`` and ``check.md`` to ``out``.

    Args:
        device: a Chainer device (the CPU works too: every comparison is
            then exact, which exercises the code only).
        out: output folder.
        data_dir: MNIST for the training checks; default: a synthetic set
            in a temporary folder.
        light: batches of 4 for parity, and no benchmark nor ResNet-110
            step timing (the CPU smoke profile).
        say: called with progress messages.

    Returns:
        The check's results; ``results['ok']`` is True when every item is.
    """
    with OutputFolder.open(out, 'gpu-check') as folder:
        folder.check_replaceable(CHECK_FILES)  # before minutes of checks
        work = tempfile.mkdtemp(prefix='branchynet-check-')
        try:
            results = _checks(device, work, data_dir, light, say)
        finally:
            shutil.rmtree(work, ignore_errors=True)  # made above, scratch
        folder.write_json(CHECK_FILES[0], results)
        folder.write_text(CHECK_FILES[1], markdown(results))
    return results


CHECK_FILES = ('check.json', 'check.md')


def _checks(device, work, data_dir, light, say):
    """Every check, with scratch files under ``work``; the results."""
    if data_dir is None:
        data_dir = os.path.join(work, 'synthetic')
        synthetic.write_mnist(os.path.join(data_dir, 'mnist'), train=512,
                              test=128)
    results = {'kind': 'gpu-check', 'device': str(device),
               'tolerances': {'forward': FORWARD_TOLERANCE,
                              'gradient': GRADIENT_TOLERANCE}}
    steps = [('versions', lambda: versions(device)),
             ('gpu_test_suite', gpu_test_suite)]
    steps += [('parity_' + key, lambda key=key: network_parity(
        key, device, size=4 if light else None))
        for key in protocols.PROTOCOLS]
    steps += [('training_parity', lambda: training_parity(device)),
              ('entropy_kernel', lambda: entropy_kernel(device)),
              ('save_on_device_load_on_cpu',
               lambda: save_load_round_trip(device, work)),
              ('trainer_resume', lambda: resume_identity(
                  device, os.path.join(work, 'resume'), data_dir)),
              ('quick_run_b_lenet', lambda: quick_run(device, work, data_dir))]
    if not light:
        steps += [('benchmark_quick_b_lenet', lambda: benchmark.run(
            ['b_lenet'], 'quick', device, os.path.join(work, 'benchmark'),
            say)['networks']['b_lenet']),
            ('resnet110_step_time', lambda: resnet_epoch_time(device))]
    for name, step in steps:
        say('check: {}'.format(name))
        start = time.perf_counter()
        try:
            results[name] = step()
        except Exception as e:  # a check that fails is a result, not a crash
            results[name] = {'ok': False, 'error': '{}: {}'.format(
                type(e).__name__, e)}
        results[name]['seconds'] = time.perf_counter() - start
    results['ok'] = all(results[name].get('ok', True) for name, _ in steps)
    return results


def markdown(results):
    """The check as a short Markdown report."""
    env = results['versions']
    lines = ['# GPU check on {}'.format(results['device']), '',
             'Overall: **{}**'.format('PASS' if results['ok'] else 'FAIL'), '']
    gpu = env.get('environment', {}).get('gpu')
    if gpu:
        lines.append('Device: {}; CuPy {}; CUDA runtime {}, driver {}; cuDNN '
                     'used by Chainer: {}.'.format(
                         gpu['name'], env.get('cupy'), env.get('cuda_runtime'),
                         env.get('cuda_driver'), env.get('chainer_uses_cudnn')))
    else:
        lines.append('Device: the CPU; every comparison below is exact by '
                     'construction (code path check only).')
    lines += [''] + md.table(['check', 'result', 'seconds'])
    for name, value in results.items():
        if not isinstance(value, dict) or 'ok' not in value or \
                name == 'versions':
            continue
        detail = {k: v for k, v in value.items()
                  if k not in ('ok', 'seconds') and not isinstance(v, dict)}
        lines.append(md.row([
            name, '{} {}'.format('ok' if value['ok'] else 'FAIL', ', '.join(
                '{}={}'.format(k, '{:.3g}'.format(v)
                               if isinstance(v, float) else v)
                for k, v in detail.items())),
            '{:.1f}'.format(value['seconds'])]))
    return '\n'.join(lines) + '\n'
