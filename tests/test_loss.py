"""The loss link: branch weights, percent_train_keeps, main-only loss."""
import chainer
import chainer.functions as F
import numpy
import pytest
from helpers import make_tiny_net, tiny_batch

from branchynet import entropy
from branchynet.loss import BranchyLoss, joint_loss, main_loss


def test_loss_link_wraps_the_network_like_a_classifier():
    net = make_tiny_net(dropout_ratio=None)
    loss = BranchyLoss(net)
    assert loss.net is net
    assert {n for n, _ in loss.namedparams()} == {
        '/net' + n for n, _ in net.namedparams()}
    assert loss.branch_weights == (1.0, 1.0, 1.0)
    x, t = tiny_batch(8)
    # the link computes what the plain functions compute
    numpy.testing.assert_allclose(
        loss(x, t).array,
        joint_loss(net, x, t, net.branch_weights).array, rtol=1e-6)
    numpy.testing.assert_allclose(loss.main_loss(x, t).array,
                                  main_loss(net, x, t).array, rtol=1e-6)


def test_loss_link_weights_override_the_declared_ones():
    net = make_tiny_net(dropout_ratio=None)
    x, t = tiny_batch(8)
    with chainer.using_config('train', False):
        ys = net(x)
    expected = sum(w * float(F.softmax_cross_entropy(y, t).array)
                   for w, y in zip([1.0, 0.5, 0.3], ys))
    loss = BranchyLoss(net, branch_weights=[1.0, 0.5, 0.3])
    with chainer.using_config('train', False):
        assert float(loss(x, t).array) == pytest.approx(expected, rel=1e-5)
    assert net.branch_weights == (1.0, 1.0, 1.0)


def test_loss_link_reports_under_its_observer_name():
    loss = BranchyLoss(make_tiny_net())
    x, t = tiny_batch(8)
    reporter = chainer.Reporter()
    reporter.add_observer('main', loss)
    observation = {}
    with reporter.scope(observation):
        loss(x, t)
    assert {'main/loss', 'main/exit2/accuracy'} <= set(observation)
    observation = {}
    with reporter.scope(observation):
        loss.main_loss(x, t)
    assert set(observation) == {'main/loss', 'main/accuracy'}


def test_percent_train_keeps_trains_deeper_exits_on_uncertain_samples():
    net = make_tiny_net(batchnorm=False, dropout_ratio=None)
    loss = BranchyLoss(net, percent_train_keeps=0.5)
    x, t = tiny_batch(8)
    ys = [y.array for y in net(x)]
    # exit 1 trains on all 8; the 4 with highest entropy go on; of those
    # the 2 with highest exit-2 entropy train exit 3.
    kept1 = numpy.sort(numpy.argsort(entropy(F.softmax(ys[0]).array),
                                     kind='stable')[4:])
    e2 = entropy(F.softmax(ys[1][kept1]).array)
    kept2 = kept1[numpy.sort(numpy.argsort(e2, kind='stable')[2:])]
    expected = sum(float(F.softmax_cross_entropy(y[idx], t[idx]).array)
                   for y, idx in [(ys[0], numpy.arange(8)), (ys[1], kept1),
                                  (ys[2], kept2)])
    assert float(loss(x, t).array) == pytest.approx(expected, rel=1e-5)


def test_percent_train_keeps_rounds_like_percent_mode():
    # 10 samples, keeps 0.7: floor(0.3 * 10) = 3 stop, 7 go on (ties of equal
    # entropy are broken by sample order)
    net = make_tiny_net(batchnorm=False, dropout_ratio=None)
    loss = BranchyLoss(net, percent_train_keeps=0.7)
    seen = []
    original = loss.keep_rule.takes

    def record(n, e):
        mask = original(n, e)
        seen.append((len(e), int(mask.sum())))
        return mask
    loss.keep_rule.takes = record
    loss(*tiny_batch(10))
    assert seen == [(10, 3), (7, 2)]


def test_percent_train_keeps_one_uses_every_sample():
    x, t = tiny_batch(8)
    net = make_tiny_net(batchnorm=False, dropout_ratio=None)
    plain = sum(F.softmax_cross_entropy(y, t) for y in net(x))
    loss = BranchyLoss(net, percent_train_keeps=1.0)
    assert loss.keep_rule is None
    assert float(loss(x, t).array) == pytest.approx(float(plain.array),
                                                    rel=1e-6)


@pytest.mark.parametrize('keeps', [0, -0.1, 1.5, float('nan'), True])
def test_bad_percent_train_keeps(keeps):
    with pytest.raises(ValueError, match='percent_train_keeps'):
        BranchyLoss(make_tiny_net(), percent_train_keeps=keeps)


def test_bad_loss_weights():
    with pytest.raises(ValueError, match='expected 3, got 2'):
        BranchyLoss(make_tiny_net(), branch_weights=[1, 1])
