"""Where a result was measured: machine, library versions, code version."""
import datetime
import os
import platform
import subprocess
import sys

import chainer
import numpy


def _cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit():
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))  # the repository
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root,
                                capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain',
                                '--untracked-files=no'], cwd=root,
                               capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ('-dirty' if dirty else '')


def gpu_info(device):
    """Name and versions of the CUDA device ``device`` uses, else ``None``.

    Args:
        device: a Chainer device; ``None`` or a CPU device gives ``None``,
            so a CPU run never touches CUDA (CuPy may be installed on a
            machine without a driver).
    """
    if device is None or device.xp is numpy:
        return None
    cupy = chainer.backends.cuda.cupy
    props = cupy.cuda.runtime.getDeviceProperties(device.device.id)
    name = props['name']
    return {'name': name.decode() if isinstance(name, bytes) else name,
            'cupy': cupy.__version__,
            'cuda_runtime': cupy.cuda.runtime.runtimeGetVersion(),
            'cudnn': bool(chainer.backends.cuda.cudnn_enabled)}


def describe(device=None):
    """A JSON-ready description of this machine and software.

    Args:
        device: the Chainer device the run used; its GPU (if any) is
            described under ``gpu``.
    """
    return {
        'date_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'python': sys.version.split()[0],
        'platform': platform.platform(),
        'cpu': _cpu_model(),
        'cpu_count': os.cpu_count(),
        'numpy': numpy.__version__,
        'chainer': chainer.__version__,
        'gpu': gpu_info(device),
        'git_commit': _git_commit(),
    }
