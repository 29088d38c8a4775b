"""Training residual stacks one configuration at a time, resumably.

What both depth studies share: a :class:`Trial` (one network of
``networks/residual_stack.py`` on one dataset), a :class:`Recipe` (how every
trial trains: AdamW, a shortened schedule, a training subset and a
validation set that is never the test set), the data, and
:func:`run_trials`, which trains the trials of a study in order in its
folder::

    trials/<name>/log, snapshot_epoch_<n>   Chainer's Trainer (while it trains)
    trials/<name>.json                      the finished trial's results

A trial whose results are written is never trained again; an interrupted
one continues from its last epoch's snapshot.
"""
import dataclasses
import os

import chainer
import chainer.functions as F
import chainer.links as L
import numpy

from branchynet.data import datasets
from branchynet.training import latest_snapshot, train_phase
from branchynet.utils import files

DATASETS = ('mnist', 'cifar10')
IN_CHANNELS = {'mnist': 1, 'cifar10': 3}
NUM_CLASSES = 10
# CIFAR-10: trained on the first images of these, validated on the first
# of the next; data_batch_5 (our test batch) is never opened
CIFAR10_TRAIN = ('data_batch_1', 'data_batch_2', 'data_batch_3')
CIFAR10_VALIDATION = 'data_batch_4'
TRIALS_DIR = 'trials'


@dataclasses.dataclass(frozen=True)
class Trial:
    """One network of the residual-stack family on one dataset."""
    dataset: str
    layout: str
    layers: int
    filters: int
    ksize: int

    @property
    def name(self):
        return '{}-{}-L{}-F{}-k{}'.format(self.dataset, self.layout,
                                          self.layers, self.filters,
                                          self.ksize)

    def network(self):
        from networks import residual_stack
        return residual_stack.get_network(
            IN_CHANNELS[self.dataset], self.filters, self.layers, self.ksize,
            self.layout, NUM_CLASSES)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How every trial of a study trains (the seed notes' recipe: AdamW,
    learning rate 1e-3, weight decay 1e-4, batch 256; the epochs and the
    training set shortened for this CPU).

    ``weight_decay`` is the decoupled decay as PyTorch and Keras give it
    (each step multiplies the weights by ``1 - alpha * weight_decay``);
    Chainer's AdamW takes the product as its ``weight_decay_rate``.
    """
    epochs: int = 10
    batchsize: int = 256
    alpha: float = 0.001
    weight_decay: float = 0.0001
    train_size: int = 10000
    validation_size: int = 2000
    seed: int = 0

    def __post_init__(self):
        for name in ('epochs', 'batchsize', 'train_size', 'validation_size'):
            if getattr(self, name) < 1:
                raise ValueError('{} must be at least 1, got {}'.format(
                    name.replace('_', ' '), getattr(self, name)))

    def optimizer(self, link):
        optimizer = chainer.optimizers.AdamW(
            alpha=self.alpha, weight_decay_rate=self.alpha * self.weight_decay)
        optimizer.setup(link)
        return optimizer


@dataclasses.dataclass(frozen=True)
class StudySettings:
    """What both depth studies' configurations hold: where a study writes
    (``out``) and reads (``data_dir``, ``cache_dir``, ``official``), its
    ``datasets`` (of :data:`DATASETS`), how every trial trains
    (``recipe``), and where and how it runs (``device``, ``progress``).
    Each study adds its grid (``trials()``) and extends :meth:`stored`."""
    out: str
    data_dir: str
    datasets: tuple = DATASETS
    recipe: Recipe = Recipe()
    device: str = '@numpy'
    progress: bool = True
    cache_dir: str = None
    official: bool = True

    def __post_init__(self):
        datasets = tuple(self.datasets)
        if not datasets or len(set(datasets)) != len(datasets) or \
                not set(datasets) <= set(DATASETS):
            raise ValueError('--datasets: distinct values of {}, got {}'
                             .format(DATASETS, datasets))
        object.__setattr__(self, 'datasets', datasets)

    def stored(self):
        """What the study's settings file keeps: everything that shapes
        its results."""
        return {'datasets': list(self.datasets),
                'recipe': dataclasses.asdict(self.recipe),
                'official': self.official}


def load(dataset, data_dir, recipe, cache_dir=None, official=True):
    """``(train, validation)`` ``(x, t)`` pairs of ``dataset``: pixels / 255.

    MNIST: the first ``train_size + validation_size`` training images, the
    validation set carved from them (stratified, the recipe's seed).
    CIFAR-10: the first ``train_size`` images of :data:`CIFAR10_TRAIN`, the
    first ``validation_size`` of :data:`CIFAR10_VALIDATION`. No test set is
    read.
    """
    if dataset == 'mnist':
        data = datasets.load_mnist(
            data_dir, train_size=recipe.train_size + recipe.validation_size,
            test_size=1, validation_size=recipe.validation_size,
            seed=recipe.seed, official=official)
        return (data.train_x, data.train_t), (data.valid_x, data.valid_t)
    if dataset == 'cifar10':
        data = datasets.load_cifar10(
            data_dir, CIFAR10_VALIDATION, 'scale',
            train_size=recipe.train_size, test_size=recipe.validation_size,
            cache_dir=cache_dir, official=official,
            train_batches=CIFAR10_TRAIN)
        return (data.train_x, data.train_t), (data.test_x, data.test_t)
    raise ValueError('dataset must be one of {}, got {!r}'.format(
        DATASETS, dataset))


def determination_ratio(train_size, params, outputs=NUM_CLASSES):
    """Q = K * M / P: training examples times outputs over parameters
    (Q < 1: more parameters than the data determine)."""
    return train_size * outputs / params


def measure(net, x, t, batchsize=1000):
    """Mean cross-entropy, accuracy and, per residual layer, the mean over
    samples of ``|F_k| / |h|`` (what the layer adds against what it adds to:
    near 0, the layer is close to an identity map), in test mode."""
    loss = correct = 0.0
    ratios = numpy.zeros(len(net.residuals))
    with chainer.using_config('train', False), \
            chainer.no_backprop_mode():
        for first in range(0, len(t), batchsize):
            xb, tb = x[first:first + batchsize], t[first:first + batchsize]
            steps, h = net.residual_steps(net.trunk(xb))
            for k, (read, added) in enumerate(steps):
                ratios[k] += float(numpy.sum(
                    _norms(added.array) / numpy.maximum(_norms(read.array),
                                                        1e-12)))
            y = net.classify(h)
            loss += float(F.softmax_cross_entropy(y, tb).array) * len(tb)
            correct += float((y.array.argmax(axis=1) == tb).sum())
    return {'loss': loss / len(t), 'accuracy': correct / len(t),
            'residual_ratios': [float(r) for r in ratios / len(t)]}


def _norms(a):
    return numpy.sqrt((a.reshape(len(a), -1) ** 2).sum(axis=1))


def train_trial(trial, recipe, train, validation, out, device, progress):
    """Train one trial in the folder ``out`` (continuing from its snapshot
    if one is there); its results."""
    numpy.random.seed(recipe.seed)
    net = trial.network()
    model = L.Classifier(net)
    model.to_device(device)
    optimizer = recipe.optimizer(model)
    resume = latest_snapshot(out) is not None
    log = train_phase(model, optimizer, model, train, validation,
                      recipe.epochs, out, recipe.batchsize, device,
                      seed=recipe.seed, resume=resume, progress=progress,
                      phase='main')
    params = int(sum(p.size for p in net.params()))
    result = {
        'trial': dataclasses.asdict(trial), 'name': trial.name,
        'params': params,
        'Q': determination_ratio(len(train[1]), params),
        'train_size': len(train[1]), 'validation_size': len(validation[1]),
        'seconds': log[-1]['elapsed_time'],
        'log': log,
    }
    for part, (x, t) in (('train', train), ('validation', validation)):
        values = measure(net, x, t)
        result[part + '_loss'] = values['loss']
        result[part + '_accuracy'] = values['accuracy']
        if part == 'validation':
            result['residual_ratios'] = values['residual_ratios']
    return result


def trial_file(trial):
    return '{}/{}.json'.format(TRIALS_DIR, trial.name)


def finished(folder, trial):
    """The results of ``trial`` if the study in ``folder`` finished it."""
    if trial_file(trial) not in folder:
        return None
    return files.read_json(folder.file(trial_file(trial)))


def run_trials(folder, study, device, say=print):
    """Train every trial of ``study`` (a study's configuration: its
    ``trials()``, ``recipe``, data settings and ``progress``) that the study
    in ``folder`` has not finished, in order; the results of all, in order.
    A dataset's images are loaded once, when a trial needs them."""
    results, loaded = [], {}
    trials, recipe = study.trials(), study.recipe
    for number, trial in enumerate(trials, 1):
        result = finished(folder, trial)
        if result is None:
            if trial.dataset not in loaded:
                loaded[trial.dataset] = load(
                    trial.dataset, study.data_dir, recipe, study.cache_dir,
                    study.official)
            out = folder.make_folder('{}/{}'.format(TRIALS_DIR, trial.name))
            say('[{}/{}] {}{}'.format(number, len(trials), trial.name,
                                      ' (resumed)' if latest_snapshot(out)
                                      else ''))
            result = train_trial(trial, recipe, *loaded[trial.dataset], out,
                                 device, study.progress)
            folder.write_json(trial_file(trial), result)
            os.remove(latest_snapshot(out))  # finished: the results stay
            say('    validation loss {:.4f}, accuracy {:.2f} %, {:.0f} s'
                .format(result['validation_loss'],
                        100 * result['validation_accuracy'],
                        result['seconds']))
        results.append(result)
    return results


def write_results(folder, summary, report_name, report, draw):
    """A finished study's ``results.json``, its Markdown report
    (``report(summary)`` into ``report_name``) and its figures
    (``draw(summary, folder)``); the folder is then marked complete."""
    folder.write_json('results.json', summary)
    folder.write_text(report_name, report(summary))
    draw(summary, folder)
    folder.set(complete=True)
