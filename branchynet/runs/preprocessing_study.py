"""Which CIFAR-10 preprocessing B-AlexNet trains best on, chosen on validation.

The reference's AlexNet experiment loads a preprocessed file that is no
longer available; its repository holds two loaders that could have made it
(``zca``: "pcifar10"; ``gcn``: "cifar10gcn"). This study trains the main
network (trunk and final exit, the protocol's main phase) once per
candidate preprocessing of :data:`branchynet.data.datasets.PREPROCESSINGS`, on
the training batches it is given, and validates after every epoch on one
more training batch. The test batch is never opened: the choice it makes
cannot have seen the images the finished run is scored on.

Its folder (an :class:`~branchynet.utils.ownership.OutputFolder` of kind
``preprocessing-study``)::

    study.json                   the configuration (a resumed study checks it)
    <candidate>/log, snapshot    Chainer's Trainer: per-epoch log, latest snapshot
    comparison.json              per candidate: every epoch, the final and best
    comparison.md, validation_curves.png

A candidate whose epochs are done keeps its log and loses its snapshot;
``--resume`` continues the first unfinished candidate from its snapshot and
never trains a finished one again.
"""
import dataclasses
import os

import chainer

from branchynet import distributed
from branchynet.data import datasets
from branchynet.paper import protocols
from branchynet.runs import pipeline
from branchynet.training import latest_snapshot, phase_log, train_phase
from branchynet.utils import environment, markdown
from branchynet.utils.errors import UserError
from branchynet.utils.study_folder import open_study

KIND = 'preprocessing-study'
TRAIN_BATCHES = ('data_batch_1', 'data_batch_2', 'data_batch_3')
VALIDATION_BATCH = 'data_batch_4'


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What one preprocessing study trains.

    Attributes:
        out: the study's folder.
        data_dir: the CIFAR-10 batches.
        candidates: preprocessing keys, trained in this order.
        epochs: main-phase epochs per candidate.
        train_batches, validation_batch: where training and validation
            images come from (never the test batch).
        train_size, validation_size: the first images only (``None``: all).
        protocol: the network's protocol key (its batch size and network).
        seed, alpha, adam_beta1, batchsize: as the run's flags.
        device, cache_dir, official, progress: as the run's flags.
        communicator, sync_batchnorm: as the run's (a distributed study).
    """
    out: str
    data_dir: str
    candidates: tuple = ('zca', 'scale', 'gcn', 'zca-eps')
    epochs: int = 20
    train_batches: tuple = TRAIN_BATCHES
    validation_batch: str = VALIDATION_BATCH
    train_size: int = None
    validation_size: int = None
    protocol: str = 'b_alexnet'
    seed: int = 0
    alpha: float = 0.001
    adam_beta1: float = 0.9
    batchsize: int = None
    device: str = '@numpy'
    cache_dir: str = None
    official: bool = True
    progress: bool = True
    communicator: str = None
    sync_batchnorm: bool = True

    def __post_init__(self):
        object.__setattr__(self, 'candidates', tuple(self.candidates))
        object.__setattr__(self, 'train_batches', tuple(self.train_batches))
        if self.batchsize is None:
            object.__setattr__(self, 'batchsize',
                               protocols.get(self.protocol).batchsize)
        unknown = [c for c in self.candidates
                   if c not in datasets.PREPROCESSINGS]
        if not self.candidates or unknown or \
                len(set(self.candidates)) != len(self.candidates):
            raise ValueError('--candidates: distinct names among {}, got {}'
                             .format(', '.join(datasets.PREPROCESSINGS),
                                     ' '.join(self.candidates)))
        if self.epochs < 1:
            raise ValueError('--epochs must be at least 1, got {}'.format(
                self.epochs))
        if self.validation_batch in self.train_batches:
            raise ValueError('the validation batch {} is among the training '
                             'batches'.format(self.validation_batch))

    @property
    def uses_gpu(self):
        return self.device.startswith('@cupy')

    def stored(self):
        """What ``study.json`` keeps: everything that shapes the results."""
        values = dataclasses.asdict(self)
        for name in ('out', 'data_dir', 'device', 'cache_dir', 'progress',
                     'communicator'):
            values.pop(name)
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in values.items()}


def load(config, candidate):
    """The training and validation images of one candidate."""
    return datasets.load_cifar10(
        config.data_dir, config.validation_batch, candidate,
        train_size=config.train_size, test_size=config.validation_size,
        cache_dir=config.cache_dir, official=config.official,
        train_batches=config.train_batches)


def train_candidate(config, candidate, cluster, device, say):
    """Train the main network on one candidate's images; its log.

    Trains from scratch (the same seed for every candidate), or resumes
    from the candidate's snapshot. Every rank trains; rank 0 writes.
    """
    out = os.path.join(config.out, candidate)
    resume = cluster.agree(latest_snapshot(out) is not None
                           if cluster.is_root else None)
    data = load(config, candidate)
    say('{}: {} training images ({}), {} validation images ({}); '
        '{} epochs{}'.format(candidate, len(data.train_t),
                             ', '.join(config.train_batches),
                             len(data.test_t), config.validation_batch,
                             config.epochs, ', resumed' if resume else ''))
    policy, optimizer = pipeline.trainable(
        protocols.get(config.protocol), device, cluster, config.seed,
        config.alpha, config.adam_beta1)
    return train_phase(
        policy, optimizer, policy.main_loss, (data.train_x, data.train_t),
        (data.test_x, data.test_t), config.epochs, out, config.batchsize,
        device, seed=config.seed, resume=resume, progress=config.progress,
        phase='main', cluster=cluster)


def summarise(config, logs):
    """``comparison.json``'s content from each candidate's log."""
    rows = []
    for candidate in config.candidates:
        log = logs[candidate]
        best = max(log, key=lambda e: e['validation/main/accuracy'])
        rows.append({
            'preprocessing': candidate,
            'description': datasets.PREPROCESSINGS[candidate],
            'epochs': len(log),
            'validation_accuracy': log[-1]['validation/main/accuracy'],
            'validation_loss': log[-1]['validation/main/loss'],
            'best_validation_accuracy': best['validation/main/accuracy'],
            'best_epoch': best['epoch'],
            'training_accuracy': log[-1]['main/accuracy'],
            'training_loss': log[-1]['main/loss'],
            'minutes': log[-1]['elapsed_time'] / 60,
            'log': log,
        })
    chosen = max(rows, key=lambda r: r['validation_accuracy'])
    return {'kind': KIND, 'config': config.stored(),
            'rule': 'the highest validation accuracy after the last epoch',
            'chosen': chosen['preprocessing'], 'candidates': rows}


def comparison_markdown(summary):
    """The comparison as a Markdown table, the choice and the rule."""
    config = summary['config']
    lines = ['# CIFAR-10 preprocessing for {}, chosen on validation'.format(
        protocols.get(config['protocol']).title), '',
        'Main network only (the main phase), {} epochs, batch {}, seed {}, '
        'Adam alpha {}; trained on {}, validated on {}; the test batch was '
        'not read. Chosen: **{}** ({}).'.format(
            config['epochs'], config['batchsize'], config['seed'],
            config['alpha'], ', '.join(config['train_batches']),
            config['validation_batch'], summary['chosen'], summary['rule']),
        '']
    lines.extend(markdown.table(
        ['preprocessing', 'validation acc. (%)', 'best (%) at epoch',
         'validation loss', 'training acc. (%)', 'training loss', 'minutes',
         'what it does'],
        [[r['preprocessing'],
          '{:.2f}'.format(100 * r['validation_accuracy']),
          '{:.2f} at {}'.format(100 * r['best_validation_accuracy'],
                                r['best_epoch']),
          '{:.4f}'.format(r['validation_loss']),
          '{:.2f}'.format(100 * r['training_accuracy']),
          '{:.4f}'.format(r['training_loss']),
          '{:.0f}'.format(r['minutes']), r['description']]
         for r in summary['candidates']]))
    return '\n'.join(lines) + '\n'


def draw(summary, folder):
    """Validation (and training) accuracy per epoch, one line per candidate."""
    from branchynet.runs import figures
    if not figures.available():
        return None
    import matplotlib.pyplot as plt
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in summary['candidates']:
        epochs = [e['epoch'] for e in row['log']]
        line, = acc.plot(epochs, [100 * e['validation/main/accuracy']
                                  for e in row['log']],
                         label=row['preprocessing'])
        acc.plot(epochs, [100 * e['main/accuracy'] for e in row['log']],
                 ls=':', color=line.get_color())
        loss.plot(epochs, [e['validation/main/loss'] for e in row['log']],
                  color=line.get_color(), label=row['preprocessing'])
        loss.plot(epochs, [e['main/loss'] for e in row['log']], ls=':',
                  color=line.get_color())
    config = summary['config']
    acc.set(xlabel='epoch', ylabel='accuracy (%)',
            title='validation (solid) and training (dotted)')
    loss.set(xlabel='epoch', ylabel='cross-entropy loss',
             title='validation (solid) and training (dotted)')
    acc.legend()
    acc.grid(alpha=0.3)
    loss.grid(alpha=0.3)
    fig.suptitle('{}: main network on {} preprocessings, validated on {} '
                 '(chosen: {})'.format(
                     protocols.get(config['protocol']).title,
                     len(summary['candidates']), config['validation_batch'],
                     summary['chosen']), fontsize=10)
    fig.tight_layout()
    with folder.open_file('validation_curves.png') as f:
        fig.savefig(f, format='png', dpi=110)
    plt.close(fig)
    return folder.file('validation_curves.png')


def run(config, resume=False):
    """Train every candidate not yet finished, then write the comparison.

    Returns:
        The summary (rank 0; ``None`` on other ranks).
    """
    cluster = distributed.connect(config)
    device = chainer.get_device(cluster.device(config.device))
    device.use()
    cluster.local_batchsize(config.batchsize)
    folder, refusal = None, None
    if cluster.is_root:
        try:
            folder = open_study(config.out, KIND, config.stored(), resume,
                                'preprocessing study',
                                opaque=tuple(config.candidates))
        except UserError as e:
            refusal = str(e)
    refusal = cluster.agree(refusal)
    if refusal is not None:
        raise UserError(refusal)

    def say(*words):
        if cluster.is_root and config.progress:
            print('[preprocessing]', *words, flush=True)
    try:
        logs = {}
        for candidate in config.candidates:
            out = os.path.join(config.out, candidate)
            done = cluster.agree(
                len(phase_log(out) or []) >= config.epochs and
                latest_snapshot(out) is None if cluster.is_root else None)
            if not done:
                if cluster.is_root:
                    folder.make_folder(candidate)
                train_candidate(config, candidate, cluster, device, say)
                if cluster.is_root:
                    # finished: the log is what the comparison needs
                    os.remove(latest_snapshot(out))
            if cluster.is_root:
                logs[candidate] = phase_log(out)
                say('{}: validation accuracy {:.2f} % after {} epochs'.format(
                    candidate, 100 * logs[candidate][-1][
                        'validation/main/accuracy'], len(logs[candidate])))
        if not cluster.is_root:
            return None
        summary = summarise(config, logs)
        summary['environment'] = environment.describe(device)
        summary['distributed'] = cluster.describe()
        folder.write_json('comparison.json', summary)
        folder.write_text('comparison.md', comparison_markdown(summary))
        draw(summary, folder)
        folder.set(complete=True)
        return summary
    finally:
        if folder is not None:
            folder.close()
