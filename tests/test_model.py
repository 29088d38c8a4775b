import math

import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest
from helpers import (
    exit_entropies,
    grads,
    make_tiny_net,
    mixing_thresholds,
    tiny_batch,
)

from branchynet import Branch, BranchyNet, assign_exits
from branchynet.exit_rule import EntropyThresholds, LowestEntropyFractions
from branchynet.loss import BranchyLoss
from branchynet.paper.reference import ReferenceTrainer

# --- structure -------------------------------------------------------------

def test_layer_list_is_cut_into_stages_and_heads():
    net = make_tiny_net()
    assert net.num_exits == 3
    assert [len(s) for s in net.trunk] == [1, 4, 4]
    assert [len(h) for h in net.heads] == [2, 2, 1]
    assert net.branch_weights == (1.0, 1.0, 1.0)
    # checkpoint keys name the stage and the position in it
    names = {name for name, _ in net.namedparams()}
    assert '/trunk/1/l2/W' in names and '/heads/2/l0/b' in names


def test_trunk_is_shared_not_copied():
    net = make_tiny_net()
    n_params = sum(p.size for p in net.params())
    stage_params = sum(p.size for s in net.trunk for p in s.params())
    head_params = sum(p.size for h in net.heads for p in h.params())
    assert n_params == stage_params + head_params


def test_layer_list_must_end_with_final_branch():
    with pytest.raises(ValueError, match='must end with a Branch'):
        BranchyNet([L.Linear(4, 4), Branch([L.Linear(4, 2)]), F.relu],
                   input_shape=(4,))
    with pytest.raises(ValueError, match='at least one layer'):
        Branch([])


def test_forward_returns_one_logit_per_exit():
    net = make_tiny_net()
    x, _ = tiny_batch(5)
    with chainer.using_config('train', False):
        ys = net(x)
        main = net.main_forward(x)
    assert [y.shape for y in ys] == [(5, 4)] * 3
    numpy.testing.assert_array_equal(main.array, ys[-1].array)


# --- joint training ----------------------------------------------------------

@pytest.mark.parametrize('weights', [None, [1.0, 0.5, 0.3]])
def test_joint_gradient_is_weighted_sum_of_exit_gradients(weights):
    net = make_tiny_net(branch_weights=weights)
    w = net.branch_weights
    x, t = tiny_batch()
    expected = {}
    for n in range(net.num_exits):
        net.cleargrads()
        numpy.random.seed(7)  # the same dropout mask in every pass
        F.softmax_cross_entropy(net(x)[n], t).backward()
        for name, g in grads(net).items():
            expected[name] = expected.get(name, 0) + w[n] * g
    net.cleargrads()
    numpy.random.seed(7)
    BranchyLoss(net)(x, t).backward()
    got = grads(net)
    assert set(got) == set(expected) == {n for n, _ in net.namedparams()}
    for name in expected:
        numpy.testing.assert_allclose(got[name], expected[name], rtol=1e-5,
                                      atol=1e-6, err_msg=name)


def test_joint_gradient_equals_reference_copy_and_add_scheme():
    """The reference keeps one trunk copy per exit and adds their gradients."""
    net = make_tiny_net(branch_weights=[0.7, 1.0, 0.3])
    x, t = tiny_batch()
    reference = ReferenceTrainer(net)
    numpy.random.seed(7)
    reference.accumulate_gradients(x, t)
    net.cleargrads()
    numpy.random.seed(7)
    BranchyLoss(net)(x, t).backward()
    got = grads(net)
    parts = [('trunk', reference.trunk()), ('heads', reference.heads())]
    for prefix, links in parts:
        for k, link in enumerate(links):
            for name, p in link.namedparams():
                key = '/{}/{}{}'.format(prefix, k, name)
                numpy.testing.assert_allclose(got[key], p.grad, rtol=1e-5,
                                              atol=1e-6, err_msg=key)


def test_main_loss_trains_trunk_and_final_exit_only():
    net = make_tiny_net()
    x, t = tiny_batch()
    net.cleargrads()
    BranchyLoss(net).main_loss(x, t).backward()
    assert all(p.grad is not None for p in net.trunk.params())
    assert all(p.grad is not None for p in net.heads[2].params())
    assert all(p.grad is None for h in net.heads[:2] for p in h.params())


def test_joint_loss_reports_per_exit():
    net = make_tiny_net()
    x, t = tiny_batch()
    policy = BranchyLoss(net)
    reporter = chainer.Reporter()
    reporter.add_observer('main', policy)
    observation = {}
    with reporter.scope(observation):
        loss = policy(x, t)
    keys = set(observation)
    assert {'main/loss', 'main/exit1/loss', 'main/exit3/accuracy'} <= keys
    parts = sum(float(observation['main/exit{}/loss'.format(k)].array)
                for k in (1, 2, 3))
    assert float(loss.array) == pytest.approx(parts, rel=1e-6)


# --- train / test behaviour ------------------------------------------------

def test_dropout_active_only_in_train_mode():
    net = make_tiny_net(batchnorm=False)
    x, _ = tiny_batch(4)
    a, b = net(x)[-1].array, net(x)[-1].array
    assert not numpy.allclose(a, b)  # fresh dropout masks
    with chainer.using_config('train', False):
        c, d = net(x)[-1].array, net(x)[-1].array
    numpy.testing.assert_array_equal(c, d)


def test_batchnorm_uses_batch_statistics_only_in_train_mode():
    net = make_tiny_net(dropout_ratio=None)
    x, _ = tiny_batch(6)
    one_by_one = numpy.concatenate([net(x[i:i + 1])[1].array for i in range(6)])
    assert not numpy.allclose(net(x)[1].array, one_by_one, atol=1e-3)
    with chainer.using_config('train', False):
        alone = numpy.concatenate([net(x[i:i + 1])[1].array
                                   for i in range(6)])
        numpy.testing.assert_allclose(net(x)[1].array, alone, rtol=1e-5,
                                      atol=1e-6)


def test_batchnorm_statistics_update_only_in_train_mode():
    net = make_tiny_net()
    bn = net.trunk[1].l3
    x, _ = tiny_batch()
    with chainer.using_config('train', False):
        net(x)
    numpy.testing.assert_array_equal(bn.avg_mean, 0)
    net(x)
    assert numpy.abs(bn.avg_mean).sum() > 0


# --- early-exit inference --------------------------------------------------

def test_predict_routing_invariants():
    net = make_tiny_net()
    x, _ = tiny_batch(32)
    labels, exits = net.predict(x, thresholds=mixing_thresholds(net, x))
    assert labels.shape == exits.shape == (32,)
    assert labels.dtype == exits.dtype == numpy.int64
    assert numpy.bincount(exits, minlength=3).sum() == 32
    assert set(numpy.unique(exits)) == {0, 1, 2}

    _, exits = net.predict(x, thresholds=[0, 0])
    numpy.testing.assert_array_equal(exits, 2)
    _, exits = net.predict(x, thresholds=[1e9, 1e9])
    numpy.testing.assert_array_equal(exits, 0)


def test_predict_labels_are_argmax_of_the_exit_taken():
    net = make_tiny_net()
    x, _ = tiny_batch(32)
    labels, exits = net.predict(x, thresholds=mixing_thresholds(net, x))
    with chainer.using_config('train', False):
        logits = numpy.stack([y.array for y in net(x)])
    numpy.testing.assert_array_equal(
        labels, logits[exits, numpy.arange(32)].argmax(axis=1))


def test_predict_equals_offline_rule_on_full_outputs():
    net = make_tiny_net()
    x, _ = tiny_batch(40, seed=3)
    entropies = exit_entropies(net, x)
    thresholds = mixing_thresholds(net, x)
    _, exits = net.predict(x, thresholds=thresholds)
    numpy.testing.assert_array_equal(
        exits, assign_exits(entropies, EntropyThresholds(thresholds, 3)))
    _, exits = net.predict(x, exit_fractions=[0.25, 0.5])
    numpy.testing.assert_array_equal(
        exits, assign_exits(entropies, LowestEntropyFractions([0.25, 0.5], 3)))
    assert numpy.bincount(exits).tolist() == [10, 15, 15]


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_batched_and_per_sample_paths_agree(seed):
    net = make_tiny_net(seed=seed)
    x, _ = tiny_batch(48, seed=10 + seed)
    thresholds = mixing_thresholds(net, x)
    labels, exits = net.predict(x, thresholds=thresholds)
    one_by_one = [net.predict_sample(x[i:i + 1], thresholds) for i in range(48)]
    numpy.testing.assert_array_equal(labels, [label for label, _ in one_by_one])
    numpy.testing.assert_array_equal(exits, [e for _, e in one_by_one])
    assert len(set(exits)) == 3


def test_predict_runs_in_test_mode_and_restores_config():
    net = make_tiny_net()
    x, _ = tiny_batch(16)
    first = net.predict(x, thresholds=[0.5, 0.5])
    second = net.predict(x, thresholds=[0.5, 0.5])
    numpy.testing.assert_array_equal(first, second)  # no dropout masks
    numpy.testing.assert_array_equal(net.trunk[1].l3.avg_mean, 0)  # BN untouched
    assert chainer.config.train and chainer.config.enable_backprop


# --- bad input ---------------------------------------------------------------

@pytest.mark.parametrize('shape, message', [
    ((4, 3, 6, 6), r'expects input of shape \(batch, 1, 6, 6\), got \(4, 3, 6, 6\)'),
    ((4, 1, 7, 6), r'got \(4, 1, 7, 6\)'),
    ((1, 6, 6), r'got \(1, 6, 6\)'),
    ((4, 1, 6, 6, 1), r'got \(4, 1, 6, 6, 1\)'),
])
def test_wrong_input_shape(shape, message):
    net = make_tiny_net()
    x = numpy.zeros(shape, numpy.float32)
    for call in (net, net.main_forward,
                 lambda v: net.predict(v, thresholds=[0.1, 0.1])):
        with pytest.raises(ValueError, match=message):
            call(x)


def test_wrong_input_dtype_and_type():
    net = make_tiny_net()
    with pytest.raises(TypeError, match='float32 input, got float64'):
        net(numpy.zeros((2, 1, 6, 6)))
    with pytest.raises(TypeError, match='numpy/cupy array'):
        net([[0.0]])


def test_bad_thresholds_for_predict():
    net = make_tiny_net()
    x, _ = tiny_batch(2)
    with pytest.raises(ValueError, match='expected 2, got 1'):
        net.predict(x, thresholds=[0.1])
    with pytest.raises(ValueError, match='non-negative'):
        net.predict(x, thresholds=[0.1, math.nan])
    with pytest.raises(ValueError, match='non-negative'):
        net.predict_sample(x[:1], [-1, 0.1])
    with pytest.raises(TypeError, match='sequence'):
        net.predict(x, thresholds=0.1)
    with pytest.raises(ValueError, match='batch of one'):
        net.predict_sample(x, [0.1, 0.1])


@pytest.mark.parametrize('weights, message', [
    ([1.0, 1.0], 'expected 3, got 2'),
    ([1.0] * 4, 'expected 3, got 4'),
    ([1.0, -1.0, 1.0], 'non-negative'),
    ([1.0, math.nan, 1.0], 'non-negative'),
])
def test_bad_branch_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        make_tiny_net(branch_weights=weights)
    net = make_tiny_net()
    with pytest.raises(ValueError, match=message):
        net.branch_weights = weights


def test_printing_a_network_lists_every_layer_in_order():
    text = str(make_tiny_net(branch_weights=[1, 0.5, 0.3]))
    assert text.startswith('tiny (3 exits, input 1x6x6)')
    assert text.index('trunk[1]') < text.index('max_pool(ksize=2, stride=2, '
                                               'cover_all=True)')
    assert 'heads[2] (exit 3, weight 0.3)' in text


def test_predict_on_an_empty_batch_returns_empty_arrays():
    """Defect: an empty batch raised Chainer's InvalidType."""
    net = make_tiny_net()
    empty = numpy.zeros((0, 1, 6, 6), numpy.float32)
    for kwargs in ({'thresholds': [0.5, 0.5]}, {'exit_fractions': [0.5, 0.5]}):
        labels, exits = net.predict(empty, **kwargs)
        assert labels.shape == exits.shape == (0,)
        assert labels.dtype == exits.dtype == numpy.int64
