"""The paper's figures, drawn from result files alone (no model, no training).

- Fig. 3: accuracy vs runtime per network and device: the B-network's
  frontier (points whose accuracy rises with runtime), the knee, and the
  baseline as a diamond.
- Fig. 4: overall accuracy and the largest exited entropy vs the share of
  samples leaving at exit 1 (the other non-final exits take nothing).
- Fig. 5: final-exit accuracy vs the number of conv layers in exit 1.
- Training curves: training loss and per-exit test accuracy per epoch,
  both phases.

Each figure is written as PNG and PDF. Matplotlib is used through its
object-oriented API (``Figure``), so no backend is set globally. Matplotlib
is imported when a figure is drawn: a machine without it (a bare GPU host)
still runs experiments and writes result files (:func:`available`).
"""
import os
import re

from branchynet.runs import reading, report
from branchynet.utils.errors import UserError
from branchynet.utils.ownership import OutputFolder

FORMATS = ('png', 'pdf')
EXIT_COLOURS = ['tab:blue', 'tab:orange', 'tab:green', 'tab:red', 'tab:purple']
# not red (the knee) nor blue (the frontier)
SELECTION_COLOURS = ['tab:green', 'tab:purple', 'tab:orange', 'tab:brown',
                     'tab:pink', 'tab:olive', 'tab:cyan', 'tab:gray']


def available():
    """Whether matplotlib can be imported here."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(**kwargs):
    from matplotlib.figure import Figure
    return Figure(**kwargs)


def slug(name):
    """``name`` for file names: lower case, runs of other characters as ``_``."""
    return re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')


def _save(figure, folder, stem):
    paths = []
    for extension in FORMATS:
        name = '{}.{}'.format(stem, extension)
        with folder.open_file(name) as f:
            figure.savefig(f, format=extension, bbox_inches='tight', dpi=150)
        paths.append(folder.file(name))
    return paths


def title(results, text):
    """``text``, with the run's caveat (:func:`branchynet.runs.report.caveat`)
    in front when it has one, over a line naming the run (its output
    folder) and its schedule: a quick run's figure must not pass for the
    full run's, nor one run's for another's."""
    warning = report.caveat(results)
    head = '[{}] {}'.format(warning, text) if warning else text
    out = os.path.normpath(results['config']['out'])
    if results.get('kind') == reading.SUMMARY_KIND:
        out = os.path.dirname(out)  # Fig. 5: the folder of its variants
    run = os.path.basename(out)
    return '{}\n{}: {}'.format(head, run, report.schedule(results))


def fig3(results, device):
    """Fig. 3: accuracy (%) vs runtime (ms per sample) on ``device``.

    Args:
        results: a run's results dictionary.
        device: ``'cpu'`` or ``'gpu'`` (a key of ``results['timing']``).

    Returns:
        A matplotlib ``Figure``.
    """
    timing = results['timing'][device]
    points = results['sweep']['points']
    frontier = sorted(timing['frontier'],
                      key=lambda i: timing['predicted_ms'][i])
    figure = _figure(figsize=(5, 3.6))
    ax = figure.add_subplot()
    ax.plot([timing['predicted_ms'][i] for i in frontier],
            [100 * points[i]['accuracy'] for i in frontier],
            '-o', color='tab:blue', markersize=4, label=results['network'])
    knee = timing['knee']
    selections = timing.get('selections') or []
    on_validation = any(c['selected_on'] == 'validation' for c in selections)
    # markers beyond the knee's (other rules, oracles): the legend goes
    # beside the axes
    many = any(c['rule'] != 'knee' or c['selected_on'] == 'validation'
               for c in selections)
    if many:
        figure.set_size_inches(8.5, 3.6)
    ax.plot(timing['predicted_ms'][knee['index']], 100 * knee['accuracy'],
            '*', color='tab:red', markersize=14, label='knee{} T = {}'.format(
                ' (chosen on validation)' if on_validation else '',
                ', '.join('{:g}'.format(t) for t in knee['thresholds'])))
    ax.plot(knee['measured']['median_ms'], 100 * knee['accuracy'], 'x',
            color='tab:red', markersize=8, label='knee, measured end to end')
    _mark_selections(ax, timing, selections, {knee['index']: 1})
    ax.plot(timing['baseline']['median_ms'],
            100 * results['baseline']['accuracy'], 'D', color='black',
            markersize=7, label=results['baseline_name'])
    ax.set_xlabel('Runtime (ms per sample, batch 1)')
    ax.set_ylabel('Classification accuracy (%)')
    ax.set_title(title(results, '{} ({})'.format(results['network'],
                                                 device.upper())), fontsize=9)
    ax.grid(alpha=0.3)
    if many:
        ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.02, 0.5))
    else:
        ax.legend(fontsize=8, loc='best')
    return figure


def _mark_selections(ax, timing, selections, drawn):
    """Each selection rule's point on the test sweep: chosen (filled), oracle (hollow).

    The knee chosen on the test set is the star already drawn; its oracle
    (and every other rule) gets a marker of its own colour. ``drawn``
    counts the markers already at each sweep point: a later one there is
    drawn hollow and larger, a ring around them, so that none hides another.
    """
    colours = iter(SELECTION_COLOURS)
    for chosen in selections:
        rule = chosen['rule']
        marks = []
        if rule != 'knee' and timing.get(rule) is not None:
            marks.append((timing[rule], 'o', 'full', '{}, chosen on {}'.format(
                rule, chosen['selected_on'])))
        oracle = timing.get(rule + ' oracle')
        if oracle is not None:
            marks.append((oracle, 's', 'none',
                          '{}, oracle (chosen on test)'.format(rule)))
        if not marks:
            continue
        colour = next(colours)
        for point, marker, fill, label in marks:
            index = point['index']
            under = drawn.get(index, 0)
            drawn[index] = under + 1
            ax.plot(timing['predicted_ms'][index], 100 * point['accuracy'],
                    marker, color=colour,
                    fillstyle='none' if under else fill,
                    markersize=9 + 6 * under, markeredgewidth=1.5,
                    label=label)


def fig4(results):
    """Fig. 4: overall accuracy and max exited entropy vs % exited at exit 1.

    Returns:
        A matplotlib ``Figure``.
    """
    curve = results['exit1_curve']
    share = [100 * f for f in curve['exit_share']]
    figure = _figure(figsize=(5, 3.6))
    ax = figure.add_subplot()
    ax.plot(share, [100 * a for a in curve['accuracy']], color='tab:blue')
    ax.set_xlabel('Samples exited at exit 1 (%)')
    ax.set_ylabel('Overall accuracy (%)', color='tab:blue')
    entropy_ax = ax.twinx()
    entropy_ax.plot(share, curve['max_exited_entropy'], color='tab:orange',
                    linestyle='--')
    entropy_ax.set_ylabel('Max entropy of exited samples', color='tab:orange')
    ax.set_title(title(results, '{}: exit 1 threshold varied'.format(
        results['network'])), fontsize=9)
    ax.grid(alpha=0.3)
    return figure


def training_curves(results):
    """Training loss and per-exit test accuracy per epoch, both phases.

    Returns:
        A matplotlib ``Figure``.
    """
    return curves(results['training']['main'], results['training']['joint'],
                  title(results, '{}: training'.format(results['network'])),
                  len(results['exit_accuracy']))


def curves(main, joint, heading, num_exits=None):
    """The training curves of two phase logs (Trainer ``log`` lists).

    Args:
        main, joint: the per-epoch entries of each phase (either may be
            empty, as in a run still training).
        heading: the figure's title.
        num_exits: exits to plot in the joint phase (default: as many as
            the joint log reports).

    Returns:
        A matplotlib ``Figure``.
    """
    figure = _figure(figsize=(10, 3.6))
    loss_ax, acc_ax = figure.subplots(1, 2)
    offset = len(main)
    main_epochs = [e['epoch'] for e in main]
    joint_epochs = [offset + e['epoch'] for e in joint]
    style = {'marker': 'o', 'markersize': 2}
    loss_ax.plot(main_epochs, [e['main/loss'] for e in main], color='black',
                 label='main network', **style)
    acc_ax.plot(main_epochs, [_percent(e.get('validation/main/accuracy'))
                              for e in main],
                color='black', label='main network', **style)
    if joint:
        loss_ax.plot(joint_epochs, [e['main/loss'] for e in joint],
                     color='gray', label='joint (weighted sum)', **style)
    if num_exits is None:
        num_exits = sum(1 for key in (joint[0] if joint else {})
                        if key.startswith('validation/main/exit') and
                        key.endswith('/accuracy'))
    for n in range(num_exits if joint else 0):
        key = 'validation/main/exit{}/accuracy'.format(n + 1)
        acc_ax.plot(joint_epochs, [_percent(e.get(key)) for e in joint],
                    color=EXIT_COLOURS[n % len(EXIT_COLOURS)],
                    label='exit {}'.format(n + 1), **style)
    for ax, label in ((loss_ax, 'Training loss'),
                      (acc_ax, 'Test accuracy (%)')):
        if joint:
            ax.axvline(offset + 0.5, color='gray', linestyle=':', linewidth=1)
        ax.set_xlabel('Epoch (main phase, then joint phase)')
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(heading, fontsize=10, y=1.03)  # above the axes
    return figure


def _percent(fraction):
    return None if fraction is None else 100 * fraction


def fig5(summary):
    """Fig. 5: final-exit accuracy vs conv layers in exit 1.

    Args:
        summary: a Fig. 5 ``summary.json`` dictionary.

    Returns:
        A matplotlib ``Figure``.
    """
    variants = sorted(summary['variants'], key=lambda v: v['branch1_convs'])
    figure = _figure(figsize=(5, 3.6))
    ax = figure.add_subplot()
    ax.plot([v['branch1_convs'] for v in variants],
            [100 * v['final_exit_accuracy'] for v in variants], '-o',
            label='final exit')
    ax.plot([v['branch1_convs'] for v in variants],
            [100 * v['exit1_accuracy'] for v in variants], '--s',
            color='tab:orange', label='exit 1')
    ax.set_xticks([v['branch1_convs'] for v in variants])
    ax.set_xlabel('Conv layers in exit 1')
    ax.set_ylabel('Test accuracy (%)')
    ax.set_title(title(summary, 'B-AlexNet: exit 1 depth'), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure


def run_figures(results, folder):
    """All figures of one results (or Fig. 5 summary) dictionary, PNG and PDF.

    Args:
        results: the dictionary.
        folder: the :class:`~branchynet.utils.ownership.OutputFolder` to write into.

    Returns:
        The written paths.
    """
    drawers = figure_stems(results)
    return [path for stem, draw in drawers.items()
            for path in _save(draw(), folder, stem)]


def figure_stems(results):
    """``{file stem: function drawing that figure}`` of one results (or
    Fig. 5 summary) dictionary: what :func:`run_figures` writes."""
    if results.get('kind') == reading.SUMMARY_KIND:
        return {'fig5_alexnet_branch_layers': lambda: fig5(results)}
    name = slug(results['network'])
    drawers = {'fig3_{}_{}'.format(name, device):
               (lambda device=device: fig3(results, device))
               for device in results['timing']}
    drawers['fig4_{}'.format(name)] = lambda: fig4(results)
    drawers['training_{}'.format(name)] = lambda: training_curves(results)
    return drawers


def result_file(path):
    """``path`` if it is a file, else the results.json or summary.json in it.

    Raises:
        FileProblem: a path that is neither.
    """
    if not os.path.isdir(path):
        if not os.path.exists(path):
            raise reading.FileProblem('{}: not found'.format(path))
        return path
    for name in ('results.json', 'summary.json'):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise reading.FileProblem('{} holds no results.json or summary.json'
                              .format(path))


def figures_from_files(paths, out_dir):
    """Every figure of each result file (or run folder) in ``paths``.

    Every file is read and checked before the first figure is drawn.

    Returns:
        The written paths.
    """
    every = [reading.read_result_file(result_file(path)) for path in paths]
    drawn = {}
    for path, results in zip(paths, every):
        for stem in figure_stems(results):
            if stem in drawn:
                raise UserError(
                    '{} and {} both make {}: one call would overwrite one '
                    'run\'s figure with the other\'s; draw them into '
                    'separate --out folders'.format(drawn[stem], path, stem))
            drawn[stem] = path
    with OutputFolder.open(out_dir, 'files') as folder:
        return [p for results in every for p in run_figures(results, folder)]
