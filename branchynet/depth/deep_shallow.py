"""Deep (sequential) against shallow (parallel) residual stacks, by Q.

After Bermeitinger, Hrycej and Handschuh, *Make Deep Networks Shallow
Again* (KDIR 2023): a residual stack ``x_{k+1} = x_k + F_k(x_k)`` against its
first-order truncation ``y = x + sum_k F_k(x)`` with the same parameters
(``networks/residual_stack.py``), over a grid of depths, widths and kernel
sizes on MNIST and CIFAR-10. Their Table 2 groups the mean training and
validation loss by the determination ratio ``Q = K * M / P``
(:func:`branchynet.depth.trials.determination_ratio`); we give ours in its
form beside theirs, a scatter of validation loss against Q, and a paired
comparison of the two layouts at equal parameters.

The study's folder (kind ``deep-shallow-study``)::

    study.json          the settings (a resumed study must have the same)
    trials/             per trial: its results (and, while it trains, the
                        Trainer's log and snapshot)
    results.json        every trial, Table 2 and the paired comparison
    table2.md, loss_vs_q.png
"""
import dataclasses
import itertools
import math

import chainer
import numpy

from branchynet.depth import trials as trials_
from branchynet.utils import environment, markdown
from branchynet.utils.study_folder import open_study
from networks.residual_stack import LAYOUTS

KIND = 'deep-shallow-study'
Q_INTERVALS = ((0, 1), (1, 3), (3, 10), (10, math.inf))
SHORTENED = 'SHORTENED'

# Their Table 2: mean (training, validation) loss per Q interval
PAPER_TABLE2 = {
    ('mnist', 'sequential'): ((0.00013, 0.05201), (0.01702, 0.12449),
                              (0.03620, 0.11743), (0.11246, 0.13550)),
    ('mnist', 'parallel'): ((0.00009, 0.07551), (0.02679, 0.11468),
                            (0.05238, 0.11467), (0.13310, 0.14900)),
    ('cifar10', 'sequential'): ((0.25326, 2.03107), (0.72510, 1.31691),
                                (1.07333, 1.34721), (1.58608, 1.65354)),
    ('cifar10', 'parallel'): ((0.52658, 1.32386), (0.88701, 1.24884),
                              (1.17085, 1.34227), (1.63449, 1.68879)),
}
PAPER_SCHEDULE = '100 epochs on the full training sets (seed notes: assumed)'


@dataclasses.dataclass(frozen=True)
class StudyConfig(trials_.StudySettings):
    """The grid and how it trains: the settings every depth study has
    (:class:`branchynet.depth.trials.StudySettings`) and the grid's axes,
    ``layers``, ``filters`` and ``ksizes`` (every combination, both
    layouts)."""
    layers: tuple = (1, 2, 4, 8)
    filters: tuple = (4, 8, 16, 32)
    ksizes: tuple = (3, 5)

    def __post_init__(self):
        super().__post_init__()
        for name in ('layers', 'filters', 'ksizes'):
            values = tuple(getattr(self, name))
            if not values or len(set(values)) != len(values):
                raise ValueError('--{}: distinct values, got {}'.format(
                    name, values))
            object.__setattr__(self, name, values)
        if min(self.layers) < 1 or min(self.filters) < 1 or \
                any(k < 1 or k % 2 == 0 for k in self.ksizes):
            raise ValueError('layers and filters at least 1, kernel sizes '
                             'odd')

    def trials(self):
        """Every trial, the two layouts of one configuration side by side."""
        return [trials_.Trial(d, layout, n, f, k) for d, k, f, n, layout in
                itertools.product(self.datasets, self.ksizes, self.filters,
                                  self.layers, LAYOUTS)]

    def stored(self):
        return dict(super().stored(), layers=list(self.layers),
                    filters=list(self.filters), ksizes=list(self.ksizes))


def interval(q):
    """Index of the :data:`Q_INTERVALS` interval holding ``q``."""
    return next(i for i, (low, high) in enumerate(Q_INTERVALS)
                if low <= q < high)


def interval_name(i):
    low, high = Q_INTERVALS[i]
    return '[{}, {})'.format(low, '∞' if high == math.inf else high)


def table2(results):
    """Table 2 in its form: per dataset and layout, per Q interval, the
    mean training and validation loss of our trials (and how many)."""
    rows = []
    for dataset, layout in itertools.product(trials_.DATASETS, LAYOUTS):
        mine = [r for r in results if r['trial']['dataset'] == dataset and
                r['trial']['layout'] == layout]
        if not mine:
            continue
        cells = []
        for i in range(len(Q_INTERVALS)):
            inside = [r for r in mine if interval(r['Q']) == i]
            cells.append({
                'interval': interval_name(i), 'trials': len(inside),
                'train_loss': _mean([r['train_loss'] for r in inside]),
                'validation_loss': _mean([r['validation_loss']
                                          for r in inside]),
                'paper_train_loss': PAPER_TABLE2[dataset, layout][i][0],
                'paper_validation_loss': PAPER_TABLE2[dataset, layout][i][1],
            })
        rows.append({'dataset': dataset, 'layout': layout, 'cells': cells})
    return rows


def _mean(values):
    return float(numpy.mean(values)) if values else None


def paired(results):
    """The layouts compared configuration by configuration (same dataset,
    depth, width and kernel: the same parameters), per dataset."""
    by_key = {}
    for r in results:
        t = r['trial']
        key = (t['dataset'], t['layers'], t['filters'], t['ksize'])
        by_key.setdefault(key, {})[t['layout']] = r
    out = {}
    for dataset in trials_.DATASETS:
        pairs = [v for k, v in sorted(by_key.items())
                 if k[0] == dataset and len(v) == 2]
        if not pairs:
            continue
        val = numpy.array([p['parallel']['validation_loss'] -
                           p['sequential']['validation_loss'] for p in pairs])
        train = numpy.array([p['parallel']['train_loss'] -
                             p['sequential']['train_loss'] for p in pairs])
        acc = numpy.array([p['parallel']['validation_accuracy'] -
                           p['sequential']['validation_accuracy']
                           for p in pairs])
        out[dataset] = {
            'pairs': len(pairs),
            'parallel_lower_validation_loss': int((val < 0).sum()),
            'parallel_lower_train_loss': int((train < 0).sum()),
            'mean_validation_loss_difference': float(val.mean()),
            'median_validation_loss_difference': float(numpy.median(val)),
            'mean_train_loss_difference': float(train.mean()),
            'mean_validation_accuracy_difference': float(acc.mean()),
        }
    return out


def conclusion(comparison):
    """One sentence per dataset: does the shallow layout match the deep
    one at equal parameters here?"""
    lines = []
    for dataset, c in comparison.items():
        lines.append(
            '{}: over {} configurations of equal parameters, the parallel '
            '(shallow) layout has the lower validation loss in {} and the '
            'lower training loss in {}; parallel minus sequential: '
            'validation loss {:+.4f} on average (median {:+.4f}), training '
            'loss {:+.4f}, validation accuracy {:+.2f} points.'.format(
                dataset, c['pairs'], c['parallel_lower_validation_loss'],
                c['parallel_lower_train_loss'],
                c['mean_validation_loss_difference'],
                c['median_validation_loss_difference'],
                c['mean_train_loss_difference'],
                100 * c['mean_validation_accuracy_difference']))
    return lines


def schedule_label(recipe):
    return '{}: {} epochs on {} training images (the paper: {})'.format(
        SHORTENED, recipe['epochs'], recipe['train_size'], PAPER_SCHEDULE)


def table2_markdown(summary):
    recipe = summary['settings']['recipe']
    lines = ['# Deep (sequential) vs shallow (parallel) residual stacks', '',
             schedule_label(recipe) + '; batch {}, AdamW (alpha {}, weight '
             'decay {}), seed {}; validation: {} images never trained on.'
             .format(recipe['batchsize'], recipe['alpha'],
                     recipe['weight_decay'], recipe['seed'],
                     recipe['validation_size']),
             '', 'Mean training / validation loss (cross-entropy) by Q '
             'interval, ours (trials) beside the paper\'s Table 2:', '']
    header = ['data', 'layout'] + [
        'Q ∈ {}'.format(interval_name(i)) for i in range(len(Q_INTERVALS))]
    rows = []
    for row in summary['table2']:
        rows.append([row['dataset'], row['layout']] + [
            '{} / {} (n={}); paper {:.4f} / {:.4f}'.format(
                _fmt(c['train_loss']), _fmt(c['validation_loss']),
                c['trials'], c['paper_train_loss'],
                c['paper_validation_loss']) for c in row['cells']])
    lines.extend(markdown.table(header, rows))
    lines += ['', '## Paired comparison at equal parameters', '']
    lines += ['- ' + line for line in conclusion(summary['paired'])]
    return '\n'.join(lines) + '\n'


def _fmt(value):
    return '–' if value is None else '{:.4f}'.format(value)


def draw(summary, folder):
    """Validation (filled) and training (hollow) loss against Q, one panel
    per dataset, one colour per layout."""
    from branchynet.runs import figures
    if not figures.available():
        return None
    import matplotlib.pyplot as plt
    datasets_ = [d for d in trials_.DATASETS
                 if any(r['trial']['dataset'] == d
                        for r in summary['trials'])]
    fig, axes = plt.subplots(1, len(datasets_), figsize=(5.5 * len(datasets_),
                                                         4.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets_):
        for layout, colour in zip(LAYOUTS, ('tab:blue', 'tab:orange')):
            mine = [r for r in summary['trials']
                    if r['trial']['dataset'] == dataset and
                    r['trial']['layout'] == layout]
            q = [r['Q'] for r in mine]
            ax.scatter(q, [r['validation_loss'] for r in mine], s=18,
                       color=colour, label=layout + ' (validation)')
            ax.scatter(q, [r['train_loss'] for r in mine], s=18,
                       facecolors='none', edgecolors=colour,
                       label=layout + ' (training)')
        for low, _ in Q_INTERVALS[1:]:
            ax.axvline(low, color='grey', lw=0.6, ls=':')
        ax.set(xscale='log', xlabel='Q = training examples x outputs / '
               'parameters', ylabel='cross-entropy loss', title=dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle('Deep vs shallow residual stacks, ' + schedule_label(
        summary['settings']['recipe']), fontsize=8)
    fig.tight_layout()
    with folder.open_file('loss_vs_q.png') as f:
        fig.savefig(f, format='png', dpi=110)
    plt.close(fig)
    return folder.file('loss_vs_q.png')


def run(config, resume=False, say=print):
    """Train the grid's unfinished trials, then write the results.

    Returns:
        The summary (``results.json``'s content).
    """
    device = chainer.get_device(config.device)
    device.use()
    with open_study(config.out, KIND, config.stored(), resume,
                    'deep-vs-shallow study',
                    opaque=(trials_.TRIALS_DIR,)) as folder:
        results = trials_.run_trials(folder, config, device, say)
        summary = {'kind': KIND, 'settings': config.stored(),
                   'schedule': schedule_label(dataclasses.asdict(
                       config.recipe)),
                   'table2': table2(results), 'paired': paired(results),
                   'trials': results,
                   'environment': environment.describe(device)}
        trials_.write_results(folder, summary, 'table2.md', table2_markdown, draw)
    return summary
