from setuptools import find_packages, setup

setup(
    name='branchynet',
    version='0.1.0',
    description='BranchyNet (ICPR 2016) early-exit networks on Chainer 7.8.1 '
                'and CuPy, for NumPy 2 and Python 3.11/3.12',
    packages=find_packages(include=['branchynet', 'branchynet.*',
                                    'networks']),
    python_requires='>=3.11',
    # Chainer 7.8.1 is only on PyPI as an sdist whose setup.py needs
    # pkg_resources: install it first as install.sh does (see README).
    # numba: the compiled loops of branchynet/kernels.py (max pooling, the
    # convolution's input gradient; NumPy loops where it is missing);
    # threadpoolctl: holds BLAS to one thread while the convolution shares
    # its chunks of samples among threads
    install_requires=['chainer==7.8.1', 'numpy>=2.0,<3', 'matplotlib>=3.8',
                      'numba>=0.60', 'threadpoolctl>=3.1'],
    extras_require={
        # onnx and onnxruntime: the port kit's ONNX export and its parity tests
        # openvino, tract: the runtime matrix (tests/test_runtimes.py)
        # pytest-xdist: the suite runs on every core (pytest.ini)
        'test': ['pytest>=8', 'pytest-xdist>=3.5', 'scipy>=1.12', 'onnx>=1.14', 'onnxruntime>=1.16',
                 'openvino>=2024.0', 'tract>=0.21'],
        # the PyTorch port (experiments/ports); on a CPU-only machine install
        # the CPU build first: pip install torch==2.13.0+cpu --index-url
        # https://download.pytorch.org/whl/cpu
        'port': ['torch>=2.0', 'onnx>=1.14', 'onnxruntime>=1.16'],
        # distributed training (ChainerMN over MPI): MPI from ordinary wheels
        'mpi': ['mpi4py>=4', 'mpich>=4'],
        # CuPy 13/14 for NVIDIA GPUs; pick the wheel that matches your CUDA.
        # A plain CuPy 14 wheel ships no CUDA libraries: without cuBLAS and
        # NVRTC Chainer silently reports CUDA as unavailable. The [ctk]
        # extra installs them from PyPI.
        'gpu': ['cupy-cuda12x[ctk]>=13'],
    },
)
