"""The depth studies: EBCLE's entropy, the residual stack's two layouts,
Table 2's grouping, the resumable grid and BranchyNet's exits beside the
bound."""
import json
import math
import os

import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

from helpers import Interrupted, ROOT, run_main
from branchynet.depth import deep_shallow, ebcle, entropy_bound, trials
from branchynet.depth.deep_shallow import StudyConfig
from branchynet.depth.trials import Recipe, determination_ratio
from branchynet.paper import protocols
from branchynet.utils.errors import UserError
from networks.residual_stack import ResidualStack

# synthetic MNIST: 128 training images; CIFAR-10: 24 per batch
SMALL = Recipe(epochs=2, batchsize=16, train_size=48, validation_size=16)


# --- EBCLE's entropy ----------------------------------------------------------

@pytest.mark.parametrize('values, expected', [
    ([7] * 16, 0.0),
    ([0, 255] * 8, math.log(2)),
    ([1, 2, 3, 4] * 4, math.log(4)),
    ([0, 0, 0, 9], -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))),
    (list(range(256)), math.log(256)),
])
def test_image_entropy_by_hand(values, expected):
    image = numpy.array(values, dtype=numpy.uint8)
    assert entropy_bound.image_entropy(image) == pytest.approx(expected,
                                                               abs=1e-12)
    # the batched form: the same, with the channels pooled
    stacked = numpy.stack([image.reshape(1, -1), image[::-1].reshape(1, -1)])
    assert entropy_bound.image_entropies(stacked) == pytest.approx(
        [expected, expected], abs=1e-12)


def test_batched_entropy_equals_the_definition_and_pools_channels():
    rng = numpy.random.RandomState(0)
    images = rng.randint(0, 40, size=(9, 3, 5, 5)).astype(numpy.uint8)
    images[2] = 200  # one flat image
    expected = [entropy_bound.image_entropy(image) for image in images]
    assert entropy_bound.image_entropies(images, chunk=4) == pytest.approx(
        expected, abs=1e-12)
    assert expected[2] == 0.0
    assert entropy_bound.dataset_entropy(images) == pytest.approx(
        numpy.mean(expected))
    with pytest.raises(ValueError, match='uint8'):
        entropy_bound.image_entropies(images.astype(numpy.float32))


def test_the_bound_rules():
    h = 2.5 * math.log(2)  # 2.5 bits, 1.73 nats
    assert entropy_bound.depth_bound(h, 'bits') == 3
    assert entropy_bound.depth_bound(h, 'nats') == 2
    assert entropy_bound.depth_bound(math.log(256), 'bits') == 8
    with pytest.raises(ValueError, match='bound rule'):
        entropy_bound.depth_bound(h, 'layers')


# --- the two layouts ------------------------------------------------------------

def _pair(layers, filters=3, ksize=3, in_channels=2):
    numpy.random.seed(4)
    deep = ResidualStack(in_channels, filters, layers, ksize, 'sequential')
    shallow = ResidualStack(in_channels, filters, layers, ksize, 'parallel')
    for (name, a), (_, b) in zip(sorted(deep.namedparams()),
                                 sorted(shallow.namedparams())):
        b.array[...] = a.array  # the same parameters
    return deep, shallow


def test_both_layouts_have_the_same_parameters():
    for layers, filters, ksize in ((1, 4, 3), (4, 8, 5), (8, 32, 3)):
        deep = ResidualStack(3, filters, layers, ksize, 'sequential')
        shallow = ResidualStack(3, filters, layers, ksize, 'parallel')
        assert deep.num_params == shallow.num_params == (
            3 * filters * ksize ** 2 + filters +
            layers * (filters * filters * ksize ** 2 + filters) +
            filters * 10 + 10)
        assert sorted(n for n, _ in deep.namedparams()) == \
            sorted(n for n, _ in shallow.namedparams())


def test_the_layouts_compute_what_they_say():
    deep, shallow = _pair(layers=3)
    x = numpy.random.RandomState(1).rand(2, 2, 12, 12).astype(numpy.float32)
    with chainer.using_config('train', False):
        h0 = F.max_pooling_2d(F.relu(F.convolution_2d(
            x, deep.stem.W, deep.stem.b, stride=2, pad=1)), 2, 2)

        def layer(k, h):
            conv = deep.residuals[k]
            return F.relu(F.convolution_2d(h, conv.W, conv.b, pad=1))
        h = h0
        for k in range(3):
            h = h + layer(k, h)
        sequential = deep.head(F.average(h, axis=(2, 3))).array
        parallel = deep.head(F.average(
            h0 + sum(layer(k, h0) for k in range(3)), axis=(2, 3))).array
        numpy.testing.assert_allclose(deep(x).array, sequential, rtol=1e-5,
                                      atol=1e-6)
        numpy.testing.assert_allclose(shallow(x).array, parallel, rtol=1e-5,
                                      atol=1e-6)
        assert not numpy.allclose(sequential, parallel)
        # one layer: the truncation is exact
        one_deep, one_shallow = _pair(layers=1)
        numpy.testing.assert_array_equal(one_deep(x).array,
                                         one_shallow(x).array)


def test_a_bad_stack_is_refused():
    with pytest.raises(ValueError, match='layout'):
        ResidualStack(1, 4, 2, 3, 'wide')
    with pytest.raises(ValueError, match='odd'):
        ResidualStack(1, 4, 2, 4)


# --- Table 2's form ---------------------------------------------------------------

def test_q_and_its_intervals():
    assert determination_ratio(10000, 50000) == 2.0
    assert [deep_shallow.interval(q) for q in (0, 0.99, 1, 2.9, 3, 9.9, 10,
                                               1e6)] == [0, 0, 1, 1, 2, 2,
                                                         3, 3]


def _result(dataset, layout, layers, q, train, val, acc=0.5):
    return {'trial': {'dataset': dataset, 'layout': layout, 'layers': layers,
                      'filters': 4, 'ksize': 3},
            'Q': q, 'train_loss': train, 'validation_loss': val,
            'validation_accuracy': acc}


def test_table2_means_by_interval_and_the_paired_comparison():
    results = [_result('mnist', 'sequential', 1, 0.5, 0.1, 0.3),
               _result('mnist', 'sequential', 2, 0.7, 0.3, 0.5),
               _result('mnist', 'sequential', 4, 20, 1.0, 1.2, 0.4),
               _result('mnist', 'parallel', 1, 0.5, 0.2, 0.2),
               _result('mnist', 'parallel', 2, 0.7, 0.4, 0.4),
               _result('mnist', 'parallel', 4, 20, 1.1, 1.0, 0.6)]
    rows = deep_shallow.table2(results)
    assert [(r['dataset'], r['layout']) for r in rows] == [
        ('mnist', 'sequential'), ('mnist', 'parallel')]
    first = rows[0]['cells']
    assert [c['trials'] for c in first] == [2, 0, 0, 1]
    assert first[0]['train_loss'] == pytest.approx(0.2)
    assert first[0]['validation_loss'] == pytest.approx(0.4)
    assert first[1]['train_loss'] is None
    assert first[3]['paper_validation_loss'] == 0.13550
    c = deep_shallow.paired(results)['mnist']
    assert c['pairs'] == 3
    assert c['parallel_lower_validation_loss'] == 3
    assert c['parallel_lower_train_loss'] == 0
    assert c['mean_validation_loss_difference'] == pytest.approx(-0.1333333)
    assert c['mean_validation_accuracy_difference'] == pytest.approx(0.2 / 3)


# --- the resumable grid -------------------------------------------------------------

def _grid(data, tmp_path, **values):
    return StudyConfig(**dict(dict(
        out=str(tmp_path / 'grid'), data_dir=data, datasets=('mnist',),
        layers=(1, 2), filters=(2,), ksizes=(3,), recipe=SMALL,
        progress=False, official=False,
        cache_dir=str(tmp_path / 'cache')), **values))


def _interrupt_steps(monkeypatch, at_step):
    """Make the ``at_step``-th training step of any trial raise."""
    original = L.Classifier.forward
    steps = []

    def counted(self, *args, **kwargs):
        if chainer.config.train:
            steps.append(1)
            if len(steps) == at_step:
                raise Interrupted()
        return original(self, *args, **kwargs)
    monkeypatch.setattr(L.Classifier, 'forward', counted)
    return original


def test_an_interrupted_grid_continues_and_never_retrains(data, tmp_path,
                                                          monkeypatch):
    config = _grid(data, tmp_path)
    # 3 steps an epoch, 2 epochs a trial: the second trial's second epoch
    original = _interrupt_steps(monkeypatch, 6 + 4)
    with pytest.raises(Interrupted):
        deep_shallow.run(config, say=lambda *a: None)
    names = [t.name for t in config.trials()]
    assert names == ['mnist-sequential-L1-F2-k3', 'mnist-parallel-L1-F2-k3',
                     'mnist-sequential-L2-F2-k3', 'mnist-parallel-L2-F2-k3']
    first = os.path.join(config.out, 'trials', names[0] + '.json')
    assert os.path.isfile(first)
    before = open(first).read()
    assert not os.path.exists(os.path.join(config.out, 'trials',
                                           names[1] + '.json'))
    with pytest.raises(UserError, match='pass --resume'):
        deep_shallow.run(config, say=lambda *a: None)

    monkeypatch.setattr(L.Classifier, 'forward', original)
    trained = []
    real = trials.train_trial

    def counting(trial, *args):
        trained.append(trial.name)
        return real(trial, *args)
    monkeypatch.setattr(trials, 'train_trial', counting)
    summary = deep_shallow.run(config, resume=True, say=lambda *a: None)
    assert trained == names[1:]  # the first was finished
    assert open(first).read() == before
    resumed = summary['trials'][1]
    assert [e['epoch'] for e in resumed['log']] == [1, 2]
    for r in summary['trials']:
        assert r['Q'] == pytest.approx(48 * 10 / r['params'])
        assert r['train_size'] == 48 and r['validation_size'] == 16
        assert len(r['residual_ratios']) == r['trial']['layers']
        # finished: the log stays, the snapshot goes
        assert os.listdir(os.path.join(config.out, 'trials', r['name'])) == [
            'log']
    # both layouts of one layer: the same network, the same numbers
    assert summary['trials'][0]['validation_loss'] == pytest.approx(
        summary['trials'][1]['validation_loss'], rel=1e-6)
    written = json.load(open(os.path.join(config.out, 'results.json')))
    assert written['table2'] == summary['table2']
    text = open(os.path.join(config.out, 'table2.md')).read()
    assert 'SHORTENED: 2 epochs on 48 training images' in text
    assert os.path.isfile(os.path.join(config.out, 'loss_vs_q.png'))

    changed = _grid(data, tmp_path, layers=(1, 3))
    with pytest.raises(UserError, match='other settings.*layers'):
        deep_shallow.run(changed, resume=True)


def test_resume_needs_a_study(data, tmp_path):
    with pytest.raises(UserError, match='holds no deep-vs-shallow study'):
        deep_shallow.run(_grid(data, tmp_path), resume=True)


def test_cifar10_trials_never_open_the_test_batch(data, tmp_path,
                                                  monkeypatch):
    opened = []
    from branchynet.data import datasets
    real = datasets._cifar10_path

    def spy(data_dir, batch):
        opened.append(batch)
        return real(data_dir, batch)
    monkeypatch.setattr(datasets, '_cifar10_path', spy)
    train, validation = trials.load('cifar10', data, SMALL,
                                    str(tmp_path / 'cache'), official=False)
    assert len(train[1]) == 48 and len(validation[1]) == 16
    assert sorted(set(opened)) == ['data_batch_1', 'data_batch_2',
                                   'data_batch_3', 'data_batch_4']
    assert float(train[0].max()) <= 1.0  # pixels / 255


# --- the EBCLE study and BranchyNet's exits -------------------------------------------

def test_exit_depths_count_the_convolutions_on_each_path():
    assert ebcle.exit_depths(protocols.get('b_lenet').network()) == [2, 3]
    assert ebcle.exit_depths(protocols.get('b_alexnet').network()) == [4, 4, 5]


def _evaluated_lenet_run(tmp_path, entropies):
    """A B-LeNet run folder (the committed run's settings) scored on the
    first test images, with the given exit entropies."""
    folder = tmp_path / 'run'
    folder.mkdir(parents=True)
    with open(os.path.join(ROOT, 'figures', 'b_lenet', 'run.json')) as f:
        stored = json.load(f)
    stored['test_size'] = entropies.shape[1]
    (folder / 'run.json').write_text(json.dumps(stored))
    size = entropies.shape[1]
    numpy.savez_compressed(
        folder / 'exit_outputs.npz', entropies=entropies.astype('float32'),
        predictions=numpy.zeros((2, size), numpy.int64),
        labels=numpy.zeros(size, numpy.int32))
    return str(folder)


def test_branchynet_exits_share_and_image_entropy(data, tmp_path):
    # B-LeNet's paper threshold is 0.025: samples 0, 2, 3 leave at exit 1
    entropies = numpy.array([[0.01, 0.5, 0.0, 0.02] + [1.0] * 28,
                             [0.0] * 32])
    run = _evaluated_lenet_run(tmp_path, entropies)
    placed = ebcle.branchynet_exits(run, data, official=False)
    assert placed['exit_depths'] == [2, 3]
    assert placed['exit_shares'] == [3 / 32, 29 / 32]
    # the paper's Table I percentages as printed, not renormalised to 100
    assert placed['paper_exit_percent'] == [94.3, 5.63]
    from branchynet.data import datasets
    images = numpy.rint(datasets.load_mnist(
        data, train_size=1, test_size=32, official=False).test_x *
        255).astype(numpy.uint8)
    each = entropy_bound.image_entropies(images)
    assert placed['exit_entropy'][0] == pytest.approx(each[[0, 2, 3]].mean())
    assert placed['exit_entropy'][1] == pytest.approx(
        numpy.delete(each, [0, 2, 3]).mean())
    assert placed['rank_correlation_exit1'] == pytest.approx(
        ebcle.rank_correlation(each, entropies[0]))
    assert ebcle.rank_correlation(numpy.arange(5), numpy.arange(5) ** 2) == \
        pytest.approx(1.0)
    assert ebcle.rank_correlation(numpy.arange(5), -numpy.arange(5)) == \
        pytest.approx(-1.0)
    with pytest.raises(UserError, match='do not fit'):
        ebcle.branchynet_exits(_evaluated_lenet_run(
            tmp_path / 'other', numpy.zeros((3, 32))), data, official=False)


def test_a_run_that_cannot_be_placed_is_refused_before_training(
        data, tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(trials, 'train_trial',
                        lambda *args: trained.append(args))
    with pytest.raises(UserError, match='not an evaluated run folder'):
        ebcle.run(ebcle.StudyConfig(
            out=str(tmp_path / 'ebcle'), data_dir=data, datasets=('mnist',),
            depths=(0,), recipe=SMALL, official=False, progress=False,
            runs=(str(tmp_path),)), say=lambda *a: None)
    assert trained == []
    assert not os.path.exists(str(tmp_path / 'ebcle'))


def test_the_ebcle_smoke_run_end_to_end(data, tmp_path, capsys):
    out = str(tmp_path / 'ebcle')
    run_main('run_ebcle', ['--smoke', '--data-dir', data, '--out', out,
                           '--datasets', 'mnist', '--train-size', '48',
                           '--validation-size', '16', '--batchsize', '16',
                           '--unofficial-data', '--no-progress'])
    summary = json.load(open(os.path.join(out, 'results.json')))
    part = summary['datasets']['mnist']
    assert [r['layers'] for r in part['sweep']] == [0, 1, 2]
    assert part['entropy']['images'] == 128  # the whole training set
    assert part['entropy']['bounds']['bits'] == math.ceil(
        part['entropy']['entropy_nats'] / math.log(2))
    assert part['saturation_layers'] in (0, 1, 2)
    assert 'SHORTENED: 1 epochs' in capsys.readouterr().out
    assert os.path.isfile(os.path.join(out, 'depth_sweep.png'))
