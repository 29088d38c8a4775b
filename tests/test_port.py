"""The port kit, PORTING.md's statements, ONNX parity and the PyTorch port."""
import json
import math
import os

import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

from branchynet.deploy import port_kit
from branchynet.paper import protocols

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_MNIST = os.path.join(ROOT, '..', 'shared', 'data', 'mnist')


@pytest.fixture(scope='module')
def kits(tmp_path_factory):
    root = tmp_path_factory.mktemp('kits')
    return {key: (str(root / key), port_kit.export(key, str(root / key),
                                                   batch=12))
            for key in protocols.PROTOCOLS}


# --- the kit ----------------------------------------------------------------------

def test_kit_files_are_complete_and_consistent(kits):
    for key, (folder, manifest) in kits.items():
        read_manifest, weights, reference = port_kit.read(folder)
        assert read_manifest == json.loads(json.dumps(manifest))
        net = protocols.get(key).network()
        expected = set(port_kit.weights(net))
        assert set(weights) == expected  # every parameter and statistic
        n = manifest['num_exits']
        for k in range(1, n + 1):
            p = F.softmax(reference['logits_{}'.format(k)]).array
            numpy.testing.assert_allclose(reference['softmax_{}'.format(k)], p,
                                          rtol=1e-6)
        assert len(set(reference['exits_split'].tolist())) >= 2


def test_kit_hashes_are_checked(kits, tmp_path):
    folder, _ = kits['b_lenet']
    copy = tmp_path / 'kit'
    copy.mkdir()
    for name in os.listdir(folder):
        (copy / name).write_bytes(open(os.path.join(folder, name), 'rb').read())
    with numpy.load(copy / 'weights.npz') as w:
        changed = dict(w)
    changed['trunk/0/l0/b'] = changed['trunk/0/l0/b'] + 1
    numpy.savez(copy / 'weights.npz', **changed)
    with pytest.raises(ValueError, match='weights.npz: SHA-256 differs'):
        port_kit.read(str(copy))


@pytest.mark.parametrize('key', list(protocols.PROTOCOLS))
def test_onnx_runtime_reproduces_every_exit(kits, key):
    onnxruntime = pytest.importorskip('onnxruntime')
    onnxruntime.set_default_logger_severity(3)
    folder, manifest = kits[key]
    _, _, reference = port_kit.read(folder)
    session = onnxruntime.InferenceSession(
        os.path.join(folder, 'model.onnx'), providers=['CPUExecutionProvider'])
    assert [o.name for o in session.get_outputs()] == [
        'exit{}'.format(k + 1) for k in range(manifest['num_exits'])]
    for x in (reference['x'], reference['x'][:3]):  # the batch size is free
        outputs = session.run(None, {'x': x})
        for k, y in enumerate(outputs, start=1):
            expected = reference['logits_{}'.format(k)][:len(x)]
            assert numpy.abs(y - expected).max() <= \
                1e-5 * numpy.abs(expected).max(), (key, k)
    # the exits chosen from ONNX's outputs are ours
    outputs = session.run(None, {'x': reference['x']})
    from branchynet import EntropyThresholds, assign_exits, entropy
    entropies = numpy.stack([entropy(F.softmax(y).array) for y in outputs])
    # not the rule-only sets: their thresholds are a sample's entropy
    # exactly, which another runtime's forward pass puts a few float32 steps
    # either side (ONNX Runtime on an AMD EPYC did, on an Intel Xeon not);
    # they test the rule on the kit's own entropies (below)
    for name in [s for s in manifest['threshold_sets']
                 if s not in port_kit.RULE_ONLY_SETS]:
        rule = EntropyThresholds(reference['thresholds_' + name],
                                 manifest['num_exits'])
        numpy.testing.assert_array_equal(
            assign_exits(entropies[:-1], rule), reference['exits_' + name],
            err_msg=name)


# --- PORTING.md, point by point -------------------------------------------------------

def test_layouts_and_flatten_order():
    rng = numpy.random.RandomState(0)
    x = rng.randn(2, 3, 4, 5).astype(numpy.float32)
    linear = L.Linear(60, 7)
    numpy.testing.assert_allclose(
        linear(x).array, x.reshape(2, -1) @ linear.W.array.T + linear.b.array,
        rtol=1e-5, atol=1e-6)
    conv = L.Convolution2D(3, 2, 3, pad=1)
    y = conv(x).array
    padded = numpy.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    manual = (padded[0, :, 1:4, 2:5] * conv.W.array[1]).sum() + conv.b.array[1]
    assert y[0, 1, 1, 2] == pytest.approx(manual, rel=1e-5)  # no kernel flip


@pytest.mark.parametrize('size, k, s', [(30, 2, 2), (17, 2, 2), (11, 2, 2),
                                        (15, 2, 2), (32, 3, 2), (16, 3, 2),
                                        (8, 3, 2)])
def test_pooling_cover_all_is_ceil_mode(size, k, s):
    x = numpy.random.RandomState(size).randn(1, 1, size, size).astype(
        numpy.float32)
    y = F.max_pooling_2d(x, k, s, cover_all=True).array
    out = math.ceil((size - k) / s) + 1
    assert y.shape[2:] == (out, out) == ((size - k + s - 1) // s + 1,) * 2
    assert (out - 1) * s < size  # no window starts outside the input
    last = x[0, 0, (out - 1) * s:, (out - 1) * s:].max()  # partial window
    assert y[0, 0, -1, -1] == last


def test_lrn_alpha_multiplies_the_sum():
    x = numpy.random.RandomState(1).rand(2, 5, 3, 3).astype(numpy.float32) * 50
    y = F.local_response_normalization(x, n=3, k=2, alpha=5e-5,
                                       beta=0.75).array
    squares = numpy.pad(x ** 2, ((0, 0), (1, 1), (0, 0), (0, 0)))
    window = squares[:, :-2] + squares[:, 1:-1] + squares[:, 2:]
    numpy.testing.assert_allclose(y, x / (2 + 5e-5 * window) ** 0.75,
                                  rtol=1e-5)


def test_dropout_scales_kept_elements():
    x = numpy.ones((1000,), numpy.float32)
    with chainer.using_config('train', True):
        y = F.dropout(x, 0.5).array
    assert set(numpy.unique(y)) == {0.0, 2.0}
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(F.dropout(x, 0.5).array, x)


def test_batchnorm_constants_and_unbiased_running_variance():
    bn = L.BatchNormalization(2)
    assert (bn.eps, bn.decay) == (2e-5, 0.9)
    x = numpy.random.RandomState(2).randn(4, 2, 3, 3).astype(numpy.float32)
    with chainer.using_config('train', True):
        y = bn(x).array
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    m = 4 * 3 * 3
    numpy.testing.assert_allclose(bn.avg_var, 0.9 * 1 + 0.1 * var * m / (m - 1),
                                  rtol=1e-5)
    numpy.testing.assert_allclose(bn.avg_mean, 0.1 * mean, rtol=1e-5)
    numpy.testing.assert_allclose(
        y, (x - mean[:, None, None]) / numpy.sqrt(var[:, None, None] + 2e-5),
        rtol=1e-4, atol=1e-5)


def test_softmax_cross_entropy_is_the_batch_mean():
    rng = numpy.random.RandomState(3)
    y = rng.randn(5, 10).astype(numpy.float32)
    t = rng.randint(0, 10, 5).astype(numpy.int32)
    log_p = y - numpy.log(numpy.exp(y).sum(axis=1, keepdims=True))
    assert float(F.softmax_cross_entropy(y, t).array) == pytest.approx(
        -log_p[numpy.arange(5), t].mean(), rel=1e-5)


def test_adam_update_is_chainers():
    param = chainer.Parameter(numpy.array([1.0, -2.0, 3.0], numpy.float32))
    optimizer = chainer.optimizers.Adam()
    link = chainer.Link()
    with link.init_scope():
        link.p = param
    optimizer.setup(link)
    p, m, v = param.array.astype(numpy.float64).copy(), 0.0, 0.0
    alpha, b1, b2, eps = 0.001, 0.9, 0.999, 1e-8
    for t, g in enumerate(([0.5, -1e-9, 2.0], [0.1, 3.0, -0.2]), start=1):
        g = numpy.array(g)
        param.grad = g.astype(numpy.float32)
        optimizer.update()
        m = m + (1 - b1) * (g - m)
        v = v + (1 - b2) * (g * g - v)
        alpha_t = alpha * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        p = p - alpha_t * m / (numpy.sqrt(v) + eps)
        numpy.testing.assert_allclose(param.array, p, rtol=1e-6)


def test_the_tie_sets_fail_a_rule_with_another_comparison(kits):
    """On the kit's own entropies: the exit rule gives exits_ties and
    exits_above_ties; comparing with <=, or in float64, does not."""
    def exits(reference, thresholds, leaves):
        entropies = [reference['entropy_{}'.format(k + 1)]
                     for k in range(len(thresholds))]
        return [next((n for n, e in enumerate(entropies)
                      if leaves(e[i], thresholds[n])), len(entropies))
                for i in range(len(reference['x']))]
    rules = {'float32 <': lambda e, t: numpy.float32(e) < numpy.float32(t),
             'float32 <=': lambda e, t: numpy.float32(e) <= numpy.float32(t),
             'float64 <': lambda e, t: float(e) < t}
    for key, (folder, manifest) in kits.items():
        _, _, reference = port_kit.read(folder)
        agrees = {name: [exits(reference, manifest['threshold_sets'][s],
                               rule) == reference['exits_' + s].tolist()
                         for s in port_kit.RULE_ONLY_SETS]
                  for name, rule in rules.items()}
        assert agrees == {'float32 <': [True, True],
                          'float32 <=': [False, False],
                          'float64 <': [True, False]}, (key, agrees)


# --- the PyTorch port ------------------------------------------------------------------

@pytest.fixture(scope='module')
def port():
    pytest.importorskip('torch', reason='PyTorch is not installed: pip '
                                        'install torch==2.13.0+cpu (CPU build)')
    from branchynet.deploy import port_compare
    return port_compare.load_port()


@pytest.fixture(scope='module')
def compare(port):
    from branchynet.deploy import port_compare
    return port_compare


@pytest.mark.parametrize('key', list(protocols.PROTOCOLS))
def test_pytorch_port_reproduces_the_reference(kits, compare, key):
    folder, manifest = kits[key]
    result = compare.parity(folder)
    assert max(result['pytorch_logits_error']) <= port_kit.PASS_TOLERANCE, \
        result
    assert max(result['onnx_logits_error']) <= port_kit.PASS_TOLERANCE, result
    assert all(result['pytorch_decisions_equal'].values()), result


def test_pytorch_port_trains_in_lockstep(kits, compare):
    """50 joint steps of B-LeNet from the same weights on the same batches."""
    data = None
    if os.path.isdir(SHARED_MNIST):
        from branchynet.data import datasets
        train = datasets.load_mnist(SHARED_MNIST, train_size=4096, test_size=1)
        data = (train.train_x, train.train_t)
    result = compare.lockstep(kits['b_lenet'][0], steps=50, batch=64,
                              data=data)
    assert result['max_loss_relative_difference'] <= 1e-4, result
    # Adam moves every element by about alpha per step whatever the size of
    # its gradient; float32 rounding may tilt those steps, a real difference
    # (a wrong formula, LRN alpha, bias correction) moves them by ~alpha
    assert result['max_parameter_difference'] <= 0.1 * 0.001, result
    assert result['losses'][-1][0] < result['losses'][0][0]  # it trained


def test_chainer_adam_in_the_port_matches_chainer(port):
    import torch
    rng = numpy.random.RandomState(4)
    start = rng.randn(6).astype(numpy.float32)
    link = chainer.Link()
    with link.init_scope():
        link.p = chainer.Parameter(start.copy())
    chainer_adam = chainer.optimizers.Adam()
    chainer_adam.setup(link)
    tensor = torch.nn.Parameter(torch.from_numpy(start.copy()))
    torch_adam = port.ChainerAdam([tensor])
    for _ in range(5):
        g = rng.randn(6).astype(numpy.float32)
        link.p.grad = g
        chainer_adam.update()
        tensor.grad = torch.from_numpy(g.copy())
        torch_adam.step()
    numpy.testing.assert_allclose(tensor.detach().numpy(), link.p.array,
                                  rtol=1e-6, atol=1e-9)
