"""The same model on a CUDA device (CuPy 13/14, no cuDNN needed).

Every test takes the ``cupy`` fixture, which skips with a reason when CuPy or
a device is missing.
"""
import chainer
import numpy
from helpers import grads, make_tiny_net, mixing_thresholds, tiny_batch

from branchynet import load_model, save_model
from branchynet.loss import BranchyLoss
from networks import alex_cifar10


def on_gpu(net):
    return net.to_device('@cupy:0')


def test_forward_and_joint_gradient_match_cpu(cupy):
    cpu = make_tiny_net(dropout_ratio=None)
    gpu = on_gpu(make_tiny_net(dropout_ratio=None))
    x, t = tiny_batch()
    for net, xs, ts in ((cpu, x, t), (gpu, cupy.asarray(x), cupy.asarray(t))):
        net.cleargrads()
        BranchyLoss(net)(xs, ts).backward()
    expected = grads(cpu)
    for name, g in grads(gpu).items():
        numpy.testing.assert_allclose(cupy.asnumpy(g), expected[name],
                                      rtol=1e-4, atol=1e-5, err_msg=name)


def test_predict_on_gpu_equals_cpu_for_numpy_and_cupy_input(cupy):
    cpu = alex_cifar10.get_network()
    gpu = on_gpu(alex_cifar10.get_network())
    gpu.copyparams(cpu)
    x = numpy.random.RandomState(0).rand(64, 3, 32, 32).astype(numpy.float32)
    thresholds = mixing_thresholds(cpu, x)
    expected = cpu.predict(x, thresholds=thresholds)
    assert len(set(expected[1])) == 3
    for given in (x, cupy.asarray(x)):
        labels, exits = gpu.predict(given, thresholds=thresholds)
        assert isinstance(labels, numpy.ndarray)
        numpy.testing.assert_array_equal(labels, expected[0])
        numpy.testing.assert_array_equal(exits, expected[1])
    for i in range(0, 64, 8):
        assert gpu.predict_sample(x[i:i + 1], thresholds) == (
            expected[0][i], expected[1][i])


def test_save_on_gpu_load_on_cpu_and_back(cupy, tmp_path):
    net = on_gpu(make_tiny_net())
    x, t = tiny_batch()
    BranchyLoss(net)(cupy.asarray(x), cupy.asarray(t))  # moves BN statistics
    path = str(tmp_path / 'gpu.npz')
    save_model(path, net)
    cpu = load_model(path, make_tiny_net(seed=3))
    with chainer.using_config('train', False):
        expected = cupy.asnumpy(net(cupy.asarray(x))[-1].array)
        numpy.testing.assert_allclose(cpu(x)[-1].array, expected, rtol=1e-4,
                                      atol=1e-5)
        back = on_gpu(cpu)
        numpy.testing.assert_allclose(
            cupy.asnumpy(back(cupy.asarray(x))[-1].array), expected,
            rtol=1e-6, atol=1e-6)
