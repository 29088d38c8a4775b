import subprocess
import sys

import numpy


def test_chainer_imports_and_sctypes_restored():
    import chainer
    import chainer.functions as F
    assert chainer.__version__ == '7.8.1'
    assert numpy.int64 in numpy.sctypes['int']
    # as_strided reads numpy.sctypes in its backward pass
    x = chainer.Variable(numpy.arange(6, dtype=numpy.float32))
    y = F.as_strided(x, (2, 2), (1, 1))  # overlapping views
    F.sum(y).backward()
    numpy.testing.assert_array_equal(x.grad, [1, 2, 1, 0, 0, 0])


def test_importing_networks_alone_is_enough():
    # A fresh interpreter that never imports branchynet itself.
    code = ('from networks import lenet_mnist; import sys; '
            'assert "chainer" in sys.modules; '
            'print(lenet_mnist.get_network().num_exits)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == '2'
