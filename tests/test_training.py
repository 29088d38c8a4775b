"""Training-phase machinery: the optimizer state the exit heads start from."""
import chainer
import numpy
import pytest
from helpers import make_tiny_net, tiny_batch

from branchynet.distributed import SINGLE
from branchynet.loss import BranchyLoss
from branchynet.training import (fresh_optimizer_state, has_snapshot,
                                 latest_snapshot, train_phase)


def test_exit_heads_start_joint_training_with_fresh_adam_state():
    net = make_tiny_net(dropout_ratio=None)
    x, t = tiny_batch(16)
    optimizer = chainer.optimizers.Adam()
    optimizer.setup(net)
    main_steps = 3
    for _ in range(main_steps):
        optimizer.update(BranchyLoss(net).main_loss, x, t)
    head = net.heads[0].l1.W
    # Chainer 7 counts steps even for a parameter that had no gradient
    assert head.update_rule.t == main_steps

    fresh_optimizer_state(net.heads[:-1])
    net.cleargrads()
    BranchyLoss(net)(x, t).backward()
    grad = head.grad.copy()
    before = head.array.copy()
    optimizer.update()

    rule = head.update_rule
    assert rule.t == 1
    beta1, beta2 = rule.hyperparam.beta1, rule.hyperparam.beta2
    numpy.testing.assert_allclose(rule.state['m'], (1 - beta1) * grad,
                                  rtol=1e-6)
    numpy.testing.assert_allclose(rule.state['v'], (1 - beta2) * grad ** 2,
                                  rtol=1e-5)
    # a bias-corrected first step moves each weight by about alpha, not more
    step = numpy.abs(head.array - before)
    assert step.max() == pytest.approx(rule.hyperparam.alpha, rel=1e-2)
    # the trunk and the final head keep counting from the main phase
    assert net.trunk[0].l0.W.update_rule.t == main_steps + 1
    assert net.heads[-1].l0.W.update_rule.t == main_steps + 1


def test_fresh_state_before_any_update_is_harmless():
    net = make_tiny_net()
    optimizer = chainer.optimizers.Adam()
    optimizer.setup(net)
    fresh_optimizer_state(net.heads)
    assert all(p.update_rule.t == 0 and p.update_rule.state is None
               for p in net.heads.params())


def _tiny_phase(out, epochs, resume=False, progress=False,
                cluster=SINGLE):
    """Train the tiny network for ``epochs`` epochs in ``out``; returns
    the log and its parameters."""
    net = make_tiny_net(dropout_ratio=None)
    policy = BranchyLoss(net)
    optimizer = chainer.optimizers.Adam()
    optimizer.setup(policy)
    x, t = tiny_batch(16)
    log = train_phase(policy, optimizer, policy, (x, t), (x, t), epochs,
                      out, 4, chainer.get_device('@numpy'), seed=0,
                      resume=resume, progress=progress, cluster=cluster)
    return log, {name: p.array.copy() for name, p in net.namedparams()}


class _WrappedSnapshot(chainer.training.Extension):
    """Wraps a snapshot as ChainerMN's multi-node snapshot does: no trigger
    of its own, so Chainer's default (every iteration) applies unless the
    caller gives one."""

    def __init__(self, snapshot):
        self.snapshot = snapshot
        self.iterations = []

    def __call__(self, trainer):
        self.iterations.append(trainer.updater.iteration)
        self.snapshot(trainer)


def test_a_wrapped_snapshot_is_taken_once_per_epoch(tmp_path):
    """Defect: under mpiexec the snapshot was written after every iteration
    (6 MB for B-AlexNet, each step), named after an epoch it was in the middle
    of."""
    from branchynet import distributed

    class Cluster(distributed.Cluster):
        def snapshot(self, snapshot):
            self.wrapped = _WrappedSnapshot(snapshot)
            return self.wrapped

    cluster = Cluster()
    _tiny_phase(str(tmp_path / 'phase'), 2, cluster=cluster)
    assert cluster.wrapped.iterations == [4, 8]


@pytest.mark.parametrize('name', ['run', 'run[1]', 'run*'])
def test_a_snapshot_is_found_whatever_the_folder_is_called(tmp_path, name):
    # glob characters in the folder's name once hid its snapshot from the
    # check that refuses to start a new run over an old one ('run[1]'), or
    # found a sibling's ('run*' matches 'run1')
    out, sibling = tmp_path / name, tmp_path / 'run1'
    out.mkdir()
    sibling.mkdir()
    (sibling / 'snapshot_epoch_5').write_bytes(b'')
    assert not has_snapshot(str(out))
    assert latest_snapshot(str(out)) is None
    (out / 'snapshot_epoch_3').write_bytes(b'')
    assert has_snapshot(str(out))
    assert latest_snapshot(str(out)) == str(out / 'snapshot_epoch_3')


def test_a_run_resumes_whether_it_showed_its_progress_or_not(tmp_path):
    """Defect: a run started with --no-progress had no state of the
    progress table in its snapshot, and resuming it without the flag (as a
    relay's page says) stopped with 'not a snapshot of this training'; the
    same for a snapshot of a version without the run's estimate. Report-only
    extensions now keep no state: either way the run ends as one that never
    stopped."""
    _, straight = _tiny_phase(str(tmp_path / 'straight'), 3)
    for first, then in ((False, True), (True, False)):
        out = str(tmp_path / 'run{}'.format(first))
        _tiny_phase(out, 2, progress=first)
        log, resumed = _tiny_phase(out, 3, resume=True, progress=then)
        assert [e['epoch'] for e in log] == [1, 2, 3]
        for name in straight:
            numpy.testing.assert_array_equal(straight[name], resumed[name],
                                             err_msg=name)
