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
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def gpu_info():
    """Name and versions of the current CUDA device, or None without one."""
    if not chainer.backends.cuda.available:
        return None
    cupy = chainer.backends.cuda.cupy
    device = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(device.id)
    name = props['name']
    return {'name': name.decode() if isinstance(name, bytes) else name,
            'cupy': cupy.__version__,
            'cuda_runtime': cupy.cuda.runtime.runtimeGetVersion(),
            'cudnn': bool(chainer.backends.cuda.cudnn_enabled)}


def describe():
    """A JSON-ready description of this machine and software."""
    return {
        'date_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'python': sys.version.split()[0],
        'platform': platform.platform(),
        'cpu': _cpu_model(),
        'cpu_count': os.cpu_count(),
        'numpy': numpy.__version__,
        'chainer': chainer.__version__,
        'gpu': gpu_info(),
        'git_commit': _git_commit(),
    }
