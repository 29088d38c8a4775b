"""The entropy bound on depth (EBCLE), tested by a depth sweep.

After Gowdra et al. (arXiv 2106.14190): the entropy of the training images
(:mod:`branchynet.depth.entropy_bound`) bounds how many convolutional layers
are worth having; deeper, the layers are close to identity maps. The mapping
from entropy to depth is not known, so the bound is drawn by our named rules
(:data:`~branchynet.depth.entropy_bound.BOUND_RULES`), and the claim is
tested instead of the rule:

1. the data set's entropy, exactly as the authors' code computes it, on the
   whole official training set (uint8);
2. a depth sweep: sequential residual stacks (``networks/residual_stack.py``)
   of 0 to 12 residual layers at one width, trained with the shared recipe
   (:class:`branchynet.depth.trials.Recipe`, shortened); validation accuracy,
   training time and how far each layer is from an identity map
   (``|F_k| / |h_k|``) against depth, the bound marked, and the depth where
   accuracy stops improving (within :data:`SATURATION_POINTS` of the best);
3. BranchyNet beside it: for trained B-LeNet / B-AlexNet run folders, where
   the test samples exit at the paper's thresholds, each exit's depth in
   convolutional layers, and the entropy of the images that leave there.

Its folder (kind ``ebcle-study``): ``study.json``, ``trials/``,
``results.json``, ``results.md``, ``depth_sweep.png``, ``exits_entropy.png``.
"""
import dataclasses

import chainer
import chainer.links as L
import numpy

from branchynet.data import datasets
from branchynet.depth import entropy_bound, trials as trials_
from branchynet.exit_rule import EntropyThresholds, assign_exits, exit_shares
from branchynet.paper import protocols
from branchynet.runs.run_folder import EXIT_OUTPUTS, RunFolder
from branchynet.sweep import ExitOutputs
from branchynet.utils import environment, markdown
from branchynet.utils.errors import UserError
from branchynet.utils.study_folder import open_study

KIND = 'ebcle-study'
SATURATION_POINTS = 0.5  # accuracy points below the sweep's best
CIFAR10_TRAINING = ('data_batch_1', 'data_batch_2', 'data_batch_3',
                    'data_batch_4', 'data_batch_5')


@dataclasses.dataclass(frozen=True)
class StudyConfig(trials_.StudySettings):
    """The sweep and the runs it is compared with: the settings every
    depth study has (:class:`branchynet.depth.trials.StudySettings`), and:

    Attributes:
        depths: numbers of residual layers swept (after the input layer).
        filters, ksize: the width and kernel size of every layer.
        rule: the bound rule drawn (:data:`entropy_bound.BOUND_RULES`).
        runs: trained BranchyNet run folders (B-LeNet, B-AlexNet) to place
            beside the bound.
    """
    depths: tuple = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12)
    filters: int = 16
    ksize: int = 3
    rule: str = entropy_bound.DEFAULT_BOUND_RULE
    runs: tuple = ()

    def __post_init__(self):
        super().__post_init__()
        for name in ('depths', 'runs'):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.depths or min(self.depths) < 0 or \
                len(set(self.depths)) != len(self.depths):
            raise ValueError('--depths: distinct values >= 0, got {}'.format(
                self.depths))
        entropy_bound.depth_bound(0.0, self.rule)  # a known rule

    def trials(self):
        return [trials_.Trial(d, 'sequential', n, self.filters, self.ksize)
                for d in self.datasets for n in sorted(self.depths)]

    def stored(self):
        return dict(super().stored(), depths=list(self.depths),
                    filters=self.filters, ksize=self.ksize)


def raw_training_images(dataset, data_dir, official=True):
    """The whole official training set as uint8 images: MNIST's 60000
    (pixels / 255 undone exactly), CIFAR-10's five batches."""
    if dataset == 'mnist':
        data = datasets.load_mnist(data_dir, test_size=1, official=official)
        return numpy.rint(data.train_x * 255).astype(numpy.uint8)
    return numpy.concatenate([
        datasets.raw_cifar10(data_dir, batch, official)[0]
        for batch in CIFAR10_TRAINING])


def data_entropy(dataset, data_dir, official=True):
    """The data set's entropy (nats) and what each bound rule makes of it."""
    entropies = entropy_bound.image_entropies(
        raw_training_images(dataset, data_dir, official))
    mean = float(entropies.mean())
    return {'entropy_nats': mean, 'entropy_std': float(entropies.std()),
            'images': len(entropies),
            'bounds': {rule: entropy_bound.depth_bound(mean, rule)
                       for rule in entropy_bound.BOUND_RULES}}


def saturation(rows):
    """The smallest depth whose validation accuracy is within
    :data:`SATURATION_POINTS` of the sweep's best."""
    best = max(r['validation_accuracy'] for r in rows)
    return min(r['layers'] for r in rows if 100 * r['validation_accuracy'] >=
               100 * best - SATURATION_POINTS)


def sweep_rows(results, dataset):
    return sorted(({'layers': r['trial']['layers'],
                    'conv_layers': r['trial']['layers'] + 1,
                    'params': r['params'],
                    'validation_accuracy': r['validation_accuracy'],
                    'validation_loss': r['validation_loss'],
                    'train_loss': r['train_loss'],
                    'seconds': r['seconds'],
                    'residual_ratios': r['residual_ratios']}
                   for r in results if r['trial']['dataset'] == dataset),
                  key=lambda row: row['layers'])


# --- BranchyNet beside the bound -------------------------------------------


def exit_depths(net):
    """Convolutional layers on the path to each exit of a BranchyNet."""
    def convs(chain):
        return sum(isinstance(link, L.Convolution2D)
                   for link in chain.links())
    trunk = [convs(stage) for stage in net.trunk]
    return [sum(trunk[:n + 1]) + convs(head)
            for n, head in enumerate(net.heads)]


def test_images(config, data_dir, official=True):
    """The uint8 test images a run was scored on, in its order."""
    protocol = protocols.get(config.protocol)
    if protocol.dataset == 'mnist':
        data = datasets.load_mnist(data_dir, train_size=1,
                                   test_size=config.test_size,
                                   official=official)
        return numpy.rint(data.test_x * 255).astype(numpy.uint8)
    images, _ = datasets.raw_cifar10(
        data_dir, config.test_batch or datasets.CIFAR10_TEST, official)
    return images[:config.test_size]


def evaluated_run(run_path):
    """``(RunFolder, its configuration)`` of a run folder that holds its
    exit outputs.

    Raises:
        UserError: it is not one.
    """
    folder = RunFolder(run_path)
    config = folder.stored
    if config is None or EXIT_OUTPUTS not in folder.entries:
        raise UserError('--runs {}: not an evaluated run folder (no run.json '
                        'or {})'.format(run_path, EXIT_OUTPUTS))
    return folder, config


def branchynet_exits(run_path, data_dir, official=True):
    """For a trained run: per exit, its depth, the share of test samples
    leaving there at the paper's thresholds, and the mean (EBCLE) entropy of
    those samples' images."""
    folder, config = evaluated_run(run_path)
    protocol = protocols.get(config.protocol)
    outputs = ExitOutputs.load(folder.file(EXIT_OUTPUTS))
    images = test_images(config, data_dir, official)
    if outputs.entropies.shape != (protocol.num_exits, len(images)):
        raise UserError('{}: exit outputs of shape {} do not fit {} exits '
                        'and {} test images'.format(
                            folder.file(EXIT_OUTPUTS),
                            outputs.entropies.shape, protocol.num_exits,
                            len(images)))
    thresholds = protocol.paper.thresholds
    exits = assign_exits(outputs.entropies[:-1],
                         EntropyThresholds(thresholds, protocol.num_exits))
    entropies = entropy_bound.image_entropies(images)
    return {'run': run_path, 'network': protocol.title,
            'dataset': protocol.dataset, 'thresholds': list(thresholds),
            'exit_depths': exit_depths(protocol.network()),
            'exit_shares': exit_shares(exits, protocol.num_exits),
            'paper_exit_percent': list(protocol.paper.exit_percent),
            'exit_entropy': [float(entropies[exits == n].mean())
                             if (exits == n).any() else None
                             for n in range(protocol.num_exits)],
            'test_entropy': float(entropies.mean()),
            'rank_correlation_exit1': rank_correlation(
                entropies, outputs.entropies[0])}


def rank_correlation(a, b):
    """Spearman's rank correlation of ``a`` and ``b`` (ties ranked in
    their order): how far one image's entropy goes with how unsure exit 1
    is of it."""
    ranks = [numpy.argsort(numpy.argsort(v, kind='stable'), kind='stable')
             for v in (a, b)]
    return float(numpy.corrcoef(*ranks)[0, 1])


# --- reporting -----------------------------------------------------------------


def results_markdown(summary):
    recipe = summary['settings']['recipe']
    rule = summary['rule']
    lines = ['# EBCLE: the entropy bound on depth, tested', '',
             'SHORTENED: {} epochs on {} training images, batch {}, AdamW '
             '(alpha {}, weight decay {}); sequential residual stacks of {} '
             'filters, kernel {}. Bound rule (our assumption): **{}** — {}.'
             .format(recipe['epochs'], recipe['train_size'],
                     recipe['batchsize'], recipe['alpha'],
                     recipe['weight_decay'], summary['settings']['filters'],
                     summary['settings']['ksize'], rule,
                     entropy_bound.BOUND_RULES[rule][0]), '']
    for dataset, part in summary['datasets'].items():
        lines += ['## {}'.format(dataset), '',
                  'Entropy {:.4f} nats (std {:.4f}) over {} training images; '
                  'bounds: {}. Accuracy stops improving (within {} points of '
                  'the best) at {} residual layers.'.format(
                      part['entropy']['entropy_nats'],
                      part['entropy']['entropy_std'],
                      part['entropy']['images'],
                      ', '.join('{} {}'.format(k, v) for k, v in
                                part['entropy']['bounds'].items()),
                      SATURATION_POINTS, part['saturation_layers']), '']
        lines.extend(markdown.table(
            ['residual layers', 'parameters', 'validation acc. (%)',
             'validation loss', 'training loss', 'seconds',
             'mean |F_k| / |h_k|'],
            [[r['layers'], r['params'],
              '{:.2f}'.format(100 * r['validation_accuracy']),
              '{:.4f}'.format(r['validation_loss']),
              '{:.4f}'.format(r['train_loss']), '{:.0f}'.format(r['seconds']),
              '{:.3f}'.format(numpy.mean(r['residual_ratios']))
              if r['residual_ratios'] else '–']
             for r in part['sweep']]))
        lines.append('')
    if summary['branchynet']:
        lines += ['## BranchyNet\'s exits beside the bound', '']
        lines.extend(markdown.table(
            ['network', 'exit', 'conv layers', 'share (%)', 'paper (%)',
             'mean image entropy (nats)', 'bound ({})'.format(rule)],
            [[b['network'], n + 1, b['exit_depths'][n],
              '{:.1f}'.format(100 * b['exit_shares'][n]),
              '{:g}'.format(b['paper_exit_percent'][n]),
              '–' if b['exit_entropy'][n] is None else
              '{:.3f}'.format(b['exit_entropy'][n]),
              summary['datasets'].get(b['dataset'], {}).get(
                  'entropy', {}).get('bounds', {}).get(rule, '–')]
             for b in summary['branchynet']
             for n in range(len(b['exit_depths']))]))
        lines += [''] + ['{}: rank correlation of an image\'s entropy with '
                         'exit 1\'s softmax entropy on it: {:+.3f}.'.format(
                             b['network'], b['rank_correlation_exit1'])
                         for b in summary['branchynet']]
    return '\n'.join(lines) + '\n'


def draw(summary, folder):
    """``depth_sweep.png``: accuracy and training time against depth with
    the bound; ``exits_entropy.png``: BranchyNet's exits."""
    from branchynet.runs import figures
    if not figures.available():
        return []
    import matplotlib.pyplot as plt
    rule = summary['rule']
    parts = summary['datasets']
    fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 4.2),
                             squeeze=False)
    for ax, (dataset, part) in zip(axes[0], parts.items()):
        rows = part['sweep']
        depth = [r['layers'] for r in rows]
        ax.plot(depth, [100 * r['validation_accuracy'] for r in rows], 'o-',
                label='validation accuracy')
        bound = part['entropy']['bounds'][rule]
        ax.axvline(bound, color='tab:red', ls='--',
                   label='bound ({}): {}'.format(rule, bound))
        ax.axvline(part['saturation_layers'], color='grey', ls=':',
                   label='accuracy saturates: {}'.format(
                       part['saturation_layers']))
        ax.set(xlabel='residual layers after the input layer',
               ylabel='validation accuracy (%)',
               title='{} (H = {:.2f} nats)'.format(
                   dataset, part['entropy']['entropy_nats']))
        twin = ax.twinx()
        twin.plot(depth, [r['seconds'] for r in rows], 's:', color='tab:green',
                  label='training time')
        twin.set_ylabel('training seconds', color='tab:green')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc='lower right')
    fig.suptitle('EBCLE depth sweep, SHORTENED ({} epochs on {} images)'
                 .format(summary['settings']['recipe']['epochs'],
                         summary['settings']['recipe']['train_size']),
                 fontsize=9)
    fig.tight_layout()
    drawn = []
    with folder.open_file('depth_sweep.png') as f:
        fig.savefig(f, format='png', dpi=110)
    plt.close(fig)
    drawn.append(folder.file('depth_sweep.png'))
    if summary['branchynet']:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for b in summary['branchynet']:
            ax.plot(b['exit_depths'], [e if e is not None else numpy.nan
                                       for e in b['exit_entropy']], 'o-',
                    label='{} (exit shares {})'.format(b['network'], ' / '.join(
                        '{:.0f} %'.format(100 * s) for s in b['exit_shares'])))
            bound = parts.get(b['dataset'], {}).get('entropy', {}).get(
                'bounds', {}).get(rule)
            if bound is not None:
                ax.axvline(bound + 1, ls='--', lw=0.8,
                           color=ax.lines[-1].get_color())
        ax.set(xlabel='convolutional layers on the path to the exit',
               ylabel='mean image entropy of the samples leaving there '
               '(nats)', title='BranchyNet exits at the paper\'s T; dashed: '
               'bound + input layer')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        with folder.open_file('exits_entropy.png') as f:
            fig.savefig(f, format='png', dpi=110)
        plt.close(fig)
        drawn.append(folder.file('exits_entropy.png'))
    return drawn


def run(config, resume=False, say=print):
    """Measure the entropies, train the sweep's unfinished trials, place
    the runs, write the results; the summary (``results.json``'s)."""
    device = chainer.get_device(config.device)
    device.use()
    for path in config.runs:  # before hours of training, not after
        evaluated_run(path)
    with open_study(config.out, KIND, config.stored(), resume,
                    'EBCLE study', opaque=(trials_.TRIALS_DIR,)) as folder:
        results = trials_.run_trials(folder, config, device, say)
        parts = {}
        for dataset in config.datasets:
            say('[ebcle] entropy of the {} training images'.format(dataset))
            rows = sweep_rows(results, dataset)
            parts[dataset] = {
                'entropy': data_entropy(dataset, config.data_dir,
                                        config.official),
                'sweep': rows, 'saturation_layers': saturation(rows)}
        summary = {'kind': KIND, 'settings': config.stored(),
                   'rule': config.rule,
                   'rules': {k: v[0] for k, v in
                             entropy_bound.BOUND_RULES.items()},
                   'datasets': parts,
                   'branchynet': [branchynet_exits(path, config.data_dir,
                                                   config.official)
                                  for path in config.runs],
                   'trials': results,
                   'environment': environment.describe(device)}
        trials_.write_results(folder, summary, 'results.md', results_markdown, draw)
    return summary
