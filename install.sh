#!/usr/bin/env bash
# Set up this project on a fresh machine: a virtual environment in .venv with
# Chainer 7.8.1, this package (editable), the test tools, ONNX Runtime and MPI
# (the mpich wheel, for ChainerMN). Safe to re-run.
#
# Chainer 7.8.1 exists on PyPI only as an sdist whose setup.py imports
# pkg_resources, which pip's isolated build environment no longer provides.
# The recipe: put setuptools<70 (which still has pkg_resources) and wheel in
# the environment, then build Chainer without build isolation. That pin is
# made only while Chainer is built and undone right after, so neither a first
# run nor a re-run leaves setuptools below what an extra (PyTorch: >=77) needs.
#
#   PYTHON=python3.12 ./install.sh     choose the interpreter (default python3)
#   CHAINER_WHEEL=path/to.whl ./install.sh   use a prebuilt Chainer wheel
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if ! "$VENV/bin/python" -m pip show chainer 2>/dev/null | grep -q '^Version: 7.8.1$'; then
    if [ -n "${CHAINER_WHEEL:-}" ]; then
        pip install --no-deps "$CHAINER_WHEEL"
    else
        pip install "setuptools<70" wheel
        pip install --no-build-isolation "chainer==7.8.1"
        # the pin was for the build only: put back a setuptools that
        # extras can live with (PyTorch requires >=77; branchynet's shims
        # stand in for the pkg_resources that newer ones lack)
        pip install "setuptools>=77.0.3"
    fi
fi
pip install wheel
# the tests include the ONNX parity checks, the runtime matrix (ONNX's
# reference evaluator, OpenVINO, tract) and 2-rank MPI runs (ChainerMN)
pip install --no-build-isolation -e ".[test,mpi]"
# an extra installed before (PyTorch, say) must still have what it needs
"$VENV/bin/python" -m pip check
"$VENV/bin/python" -c "import branchynet, chainer, numpy; print('branchynet ready: chainer', chainer.__version__, '| numpy', numpy.__version__)"
