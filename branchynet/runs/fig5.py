"""Fig. 5: B-AlexNet with 0-4 conv layers in exit 1, each a run of its own.

:func:`run_fig5` runs the variants (their :class:`RunConfig` s) into
``<out>/exit1_<k>conv`` and writes ``summary.json`` and the figure.
"""
import os

from branchynet import distributed
from branchynet.paper import protocols
from branchynet.runs import pipeline, reading
from branchynet.utils import ownership


FIG5_FOLDER = 'exit1_{}conv'


def run_fig5(configs, out):
    """Run the Fig. 5 variants (``configs``) into their folders under ``out``,
    then write the summary and the figure.

    ``out`` is an output folder of its own (kind ``branch-layers``); each
    variant's folder inside it is a run folder. Under ``mpiexec`` the
    variants train on every rank and rank 0 alone writes.

    Returns:
        The summary dictionary (``None`` on ranks other than 0).
    """
    if distributed.launch_rank() != 0:
        for config in configs:
            pipeline.run(config)
        return None
    with ownership.OutputFolder.open(out, 'branch-layers',
                                     foreign_ok=False) as folder:
        folder.set(complete=False)
        for config in configs:
            folder.make_folder(os.path.basename(config.out))
        results = [pipeline.run(config) for config in configs]
        return write_fig5_summary(results, folder)


def write_fig5_summary(runs, folder):
    """``summary.json`` and Fig. 5 from the results of the variant runs.

    Args:
        runs: results dictionaries of the Fig. 5 variants.
        folder: the :class:`~branchynet.utils.ownership.OutputFolder` holding their
            run folders.

    Returns:
        The summary dictionary.
    """
    summary = {'kind': reading.SUMMARY_KIND, 'variants': []}
    for results in runs:
        convs = protocols.get(results['protocol']).network.keywords[
            'branch1_convs']
        summary['variants'].append({
            'branch1_convs': convs,
            'final_exit_accuracy': results['exit_accuracy'][-1],
            'exit1_accuracy': results['exit_accuracy'][0],
            'baseline_accuracy': results['baseline']['accuracy'],
            'results': os.path.join(results['config']['out'], 'results.json'),
        })
    for key in ('data', 'config', 'environment'):
        summary[key] = runs[-1][key]
    folder.write_json('summary.json', summary)
    pipeline.draw_figures(summary, folder)
    folder.set(complete=True)
    for v in summary['variants']:
        print('exit 1 with {} conv: final exit {:.2f} %, exit 1 {:.2f} %'.format(
            v['branch1_convs'], 100 * v['final_exit_accuracy'],
            100 * v['exit1_accuracy']))
    return summary
