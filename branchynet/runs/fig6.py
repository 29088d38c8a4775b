"""Fig. 6: cache-miss rate against runtime, from a cache simulator.

The paper read B-AlexNet's CPU cache-miss rate from hardware counters at
several entropy thresholds. These virtual machines expose no counters, so
valgrind's cache simulator (the one cachegrind runs) measures it instead,
with this machine's cache sizes read from ``/sys`` (a level whose set count
is not a power of two, which the simulator needs, keeps its associativity
and line size and is rounded down to the next power-of-two set count; both
are recorded). The simulator is run by callgrind, valgrind's call-graph
tool, because it alone has client requests that switch the counting on and
off in valgrind 3.19: the program (:mod:`branchynet.runs.fig6_worker`)
counts only the batch-1 inference of the measured samples, not the
interpreter's start, the imports or the loading; a tiny C helper, compiled
here, issues the requests.

For each threshold vector (the sweep list's values given to every branch
exit, the paper's thresholds) and for the main network: the simulated
first-level data (D1) and last-level (LL) miss rates of the same test
samples, beside the runtime measured natively (batch 1, in turns) and the
exit shares. Written to an output folder of kind ``fig6``: ``fig6.json``,
``fig6.md``, ``fig6.png``.
"""
import dataclasses
import glob
import math
import os
import shutil
import subprocess
import sys
import tempfile

import chainer
import numpy

from branchynet import exit_rule, timing
from branchynet.paper import protocols
from branchynet.runs import fig6_worker, pipeline
from branchynet.runs.run_folder import MODEL_FILES, RunFolder
from branchynet.serialization import load_model
from branchynet.utils import environment, files, markdown
from branchynet.utils.errors import UserError
from branchynet.utils.ownership import OutputFolder

KIND = 'fig6'
LABEL = 'simulated caches (cachegrind), not hardware counters'
CACHE_ROOT = '/sys/devices/system/cpu/cpu0/cache'
HELPER_C = r'''
#include <valgrind/callgrind.h>
void fig6_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void fig6_dump(const char *label) { CALLGRIND_DUMP_STATS_AT(label); }
void fig6_stop(const char *label) {
    CALLGRIND_STOP_INSTRUMENTATION;
    CALLGRIND_DUMP_STATS_AT(label);
}
'''
TRIGGER = 'desc: Trigger: Client Request: '
EVENTS = ('Ir', 'Dr', 'Dw', 'I1mr', 'D1mr', 'D1mw', 'ILmr', 'DLmr', 'DLmw')


def missing_tools():
    """Why Fig. 6 cannot be simulated here (``None``: it can)."""
    for tool, why in (('valgrind', 'valgrind is not installed (Debian/'
                       'Ubuntu: apt-get install valgrind)'),
                      ('cc', 'no C compiler (cc) for the helper that switches '
                       'the counting on and off')):
        if shutil.which(tool) is None:
            return why
    if not os.path.isfile('/usr/include/valgrind/callgrind.h'):
        return 'valgrind/callgrind.h is missing (it comes with valgrind)'
    return None


# --- the caches ------------------------------------------------------------------

def read_caches(root=CACHE_ROOT):
    """This CPU's caches as ``/sys`` describes them: a list of dicts with
    ``level``, ``type``, ``size`` (bytes), ``ways`` and ``line``."""
    caches = []
    for index in sorted(glob.glob(os.path.join(root, 'index*'))):
        def value(name):
            with open(os.path.join(index, name)) as f:
                return f.read().strip()
        size = value('size')
        factor = {'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30}.get(size[-1], 1)
        caches.append({'level': int(value('level')), 'type': value('type'),
                       'size': int(size.rstrip('KMG')) * factor,
                       'ways': int(value('ways_of_associativity')),
                       'line': int(value('coherency_line_size'))})
    return caches


def simulated_caches(caches):
    """The I1, D1 and LL caches to simulate: first-level instruction and
    data caches and the highest level, each with its set count rounded
    down to a power of two where it is not one."""
    def pick(level, kinds):
        found = [c for c in caches if c['level'] == level and
                 c['type'] in kinds]
        if not found:
            raise UserError('no level-{} {} cache in {}'.format(
                level, '/'.join(kinds), CACHE_ROOT))
        c = found[0]
        sets = c['size'] // (c['ways'] * c['line'])
        power = 2 ** int(math.log2(sets))
        return {'level': c['level'], 'type': c['type'], 'size': c['size'],
                'ways': c['ways'], 'line': c['line'], 'sets': sets,
                'simulated_size': power * c['ways'] * c['line'],
                'rounded': power != sets}
    last = max(c['level'] for c in caches)
    return {'I1': pick(1, ('Instruction',)), 'D1': pick(1, ('Data',)),
            'LL': pick(last, ('Unified', 'Data'))}


def valgrind_flags(simulated):
    return ['--{}={},{},{}'.format(name, c['simulated_size'], c['ways'],
                                   c['line'])
            for name, c in simulated.items()]


# --- callgrind's output ---------------------------------------------------------------

def read_dump(path):
    """``(label, {event: count})`` of one callgrind dump file."""
    label, events, totals = None, None, None
    with open(path, errors='replace') as f:
        for line in f:
            if line.startswith(TRIGGER):
                label = line[len(TRIGGER):].strip()
            elif line.startswith('events:'):
                events = line.split()[1:]
            elif line.startswith(('summary:', 'totals:')):
                totals = [int(v) for v in line.split()[1:]]
    if events is None or totals is None:
        raise UserError('{}: not a callgrind dump with totals'.format(path))
    counts = dict(zip(events, totals))
    return label, {e: counts.get(e, 0) for e in EVENTS}


def miss_rates(counts):
    """Cachegrind's miss rates from the event counts (fractions)."""
    data = counts['Dr'] + counts['Dw']
    refs = counts['Ir'] + data
    return {
        'D1': (counts['D1mr'] + counts['D1mw']) / data if data else None,
        'LLd': (counts['DLmr'] + counts['DLmw']) / data if data else None,
        'LL': (counts['ILmr'] + counts['DLmr'] + counts['DLmw']) / refs
        if refs else None}


# --- the measurement ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Fig6Config:
    """What Fig. 6 measures.

    Attributes:
        run: a trained run folder (its models, configuration and data).
        out: the output folder.
        data_dir: where the run's data are (default: the run's own).
        samples: measured test samples (the first ones of the test set,
            after ``warmup`` more).
        warmup: samples run (counted, then the counters zeroed) before each
            threshold's measured ones.
        thresholds: per-exit values, each given to every branch exit
            (default: the protocol's sweep list), besides the paper's.
        timing_repeats: native timing repeats (batch 1, in turns).
        unofficial_data: accept data files that are not the official ones.
    """
    run: str
    out: str
    data_dir: str = None
    unofficial_data: bool = False
    samples: int = 50  # each takes seconds under valgrind
    warmup: int = 5
    thresholds: tuple = None
    timing_repeats: int = 5

    def __post_init__(self):
        if self.samples < 1 or self.warmup < 0 or self.timing_repeats < 1:
            raise ValueError('--samples and --timing-repeats at least 1, '
                             '--warmup at least 0')


def threshold_vectors(protocol, values):
    """``[(label, thresholds or None)]``: the main network, each value for
    every branch exit, and the paper's thresholds."""
    branches = protocol.num_exits - 1
    vectors = [('main network', None)]
    for value in values:
        vectors.append(('T={:g}'.format(value), [float(value)] * branches))
    paper = [float(t) for t in protocol.paper.thresholds]
    if paper not in [v for _, v in vectors]:
        vectors.append(("paper's T=({})".format(', '.join(
            '{:g}'.format(t) for t in paper)), paper))
    return vectors


def _helper(folder):
    source = os.path.join(folder, 'fig6_helper.c')
    library = os.path.join(folder, 'fig6_helper.so')
    with open(source, 'w') as f:
        f.write(HELPER_C)
    subprocess.run(['cc', '-shared', '-fPIC', '-O1', '-o', library, source],
                   check=True, capture_output=True)
    return library


def simulate(plan, simulated, scratch):
    """Run the worker under valgrind; ``{label: counts}``."""
    plan_path = os.path.join(scratch, 'plan.json')
    files.write_json(plan_path, plan)
    out_file = os.path.join(scratch, 'callgrind.out')
    command = ['valgrind', '--tool=callgrind', '--cache-sim=yes',
               '--instr-atstart=no', '--callgrind-out-file=' + out_file] + \
        valgrind_flags(simulated) + [sys.executable, '-m',
                                     'branchynet.runs.fig6_worker', plan_path]
    env = dict(os.environ, OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(
                   [os.path.dirname(os.path.dirname(os.path.dirname(
                       os.path.abspath(__file__))))] +
                   [p for p in os.environ.get('PYTHONPATH', '').split(
                       os.pathsep) if p]))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise UserError('the program under valgrind failed: {}'.format(
            done.stderr.strip().splitlines()[-1] if done.stderr.strip()
            else 'exit status {}'.format(done.returncode)))
    counts = {}
    for path in glob.glob(out_file + '*'):
        label, events = read_dump(path)
        if label is not None:
            counts[label] = events
    return counts


def measure(config, say=print):
    """Simulate and time every threshold vector; the results."""
    why = missing_tools()
    if why is not None:
        raise UserError('Fig. 6 needs valgrind: ' + why)
    run = RunFolder(config.run)
    stored = run.stored
    if stored is None or not all(os.path.isfile(run.model(p))
                                 for p in MODEL_FILES):
        raise UserError('--run {}: not a trained run folder (run.json, {})'
                        .format(config.run, ', '.join(MODEL_FILES.values())))
    protocol = protocols.get(stored.protocol)
    count = config.warmup + config.samples
    data_config = dataclasses.replace(
        stored, data_dir=config.data_dir or stored.data_dir,
        test_size=count,
        unofficial_data=stored.unofficial_data or config.unofficial_data)
    data = pipeline.load_data(protocol, data_config)
    if len(data.test_t) < count:
        raise UserError('the test set holds {} samples, {} asked for'.format(
            len(data.test_t), count))
    values = config.thresholds or protocol.threshold_list
    vectors = threshold_vectors(protocol, values)
    simulated = simulated_caches(read_caches())
    say('[fig6] caches simulated: ' + ' '.join(valgrind_flags(simulated)))
    scratch = tempfile.mkdtemp(prefix='branchynet-fig6-')
    try:
        samples_path = os.path.join(scratch, 'samples.npy')
        numpy.save(samples_path, data.test_x[:count])
        plan = {'protocol': protocol.key, 'model': run.model('joint'),
                'baseline': run.model('main'), 'samples': samples_path,
                'warmup': config.warmup, 'samples_count': config.samples,
                'labels': [label for label, _ in vectors],
                'thresholds': [t for _, t in vectors],
                'helper': _helper(scratch)}
        say('[fig6] {} programs of {} samples under valgrind (slow)'.format(
            len(vectors), config.samples))
        counts = simulate(plan, simulated, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    missing = [label for label, _ in vectors if label not in counts]
    if missing:
        raise UserError('valgrind wrote no counts for {}'.format(
            ', '.join(missing)))
    say('[fig6] native timing, batch 1, {} repeats'.format(
        config.timing_repeats))
    net = load_model(run.model('joint'), protocol.network())
    baseline = load_model(run.model('main'), protocol.network())
    measured_x = data.test_x[config.warmup:count]
    functions = [fig6_worker.inference(net, baseline, t) for _, t in vectors]
    times = timing.time_in_turns(functions, timing.as_samples(measured_x),
                                 chainer.get_device('@numpy'),
                                 config.timing_repeats, warmup=config.warmup)
    points = []
    for (label, thresholds), timed in zip(vectors, times):
        point = {'label': label, 'thresholds': thresholds,
                 'ms_per_sample': timed['median_ms'], 'timing': timed,
                 'events': counts[label],
                 'miss_rates': miss_rates(counts[label])}
        if thresholds is not None:
            _, exits = net.predict(measured_x, thresholds)
            point['exit_shares'] = exit_rule.exit_shares(exits,
                                                         net.num_exits)
        points.append(point)
    return {'kind': KIND, 'label': LABEL, 'network': protocol.title,
            'run': config.run, 'samples': config.samples,
            'warmup': config.warmup, 'first_sample': config.warmup,
            'test_set': data.info.get('test', 'test'),
            'caches': {'read': read_caches(), 'simulated': simulated},
            'counted': 'callgrind client requests around the measured '
                       'samples only (start, imports and loading not counted)',
            'points': points,
            'environment': environment.describe(chainer.get_device('@numpy'))}


def fig6_markdown(results):
    caches = results['caches']['simulated']
    lines = ['# Fig. 6: {} cache-miss rate against runtime ({})'.format(
        results['network'], results['label']), '',
        '{} test samples (after {} warm-up samples), batch 1. Simulated: {}.'
        .format(results['samples'], results['warmup'], '; '.join(
            '{} {} KiB {}-way {} B lines{}'.format(
                name, c['simulated_size'] // 1024, c['ways'], c['line'],
                ' (this CPU: {} KiB, set count rounded down to a power of '
                'two)'.format(c['size'] // 1024) if c['rounded'] else '')
            for name, c in caches.items())), '']
    lines.extend(markdown.table(
        ['thresholds', 'ms / sample (measured)', 'D1 miss rate (%)',
         'LL miss rate (%)', 'LLd miss rate (%)', 'exit shares (%)'],
        [[p['label'], '{:.3f}'.format(p['ms_per_sample']),
          '{:.3f}'.format(100 * p['miss_rates']['D1']),
          '{:.4f}'.format(100 * p['miss_rates']['LL']),
          '{:.4f}'.format(100 * p['miss_rates']['LLd']),
          ' / '.join('{:.0f}'.format(100 * s) for s in p['exit_shares'])
          if 'exit_shares' in p else '–'] for p in results['points']]))
    return '\n'.join(lines) + '\n'


def draw(results, folder):
    from branchynet.runs import figures
    if not figures.available():
        return None
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, name in ((axes[0], 'LL', 'last-level (LL)'),
                          (axes[1], 'D1', 'first-level data (D1)')):
        for p in results['points']:
            main = p['thresholds'] is None
            ax.scatter(p['ms_per_sample'], 100 * p['miss_rates'][key],
                       marker='*' if main else 'o', s=90 if main else 30,
                       color='tab:red' if main else 'tab:blue')
            ax.annotate(p['label'], (p['ms_per_sample'],
                                     100 * p['miss_rates'][key]),
                        fontsize=6, xytext=(3, 3),
                        textcoords='offset points')
        ax.set(xlabel='runtime, ms per sample (measured natively, batch 1)',
               ylabel='{} miss rate (%)'.format(name))
        ax.grid(alpha=0.3)
    fig.suptitle('Fig. 6, {}: {}; red star: the main network'.format(
        results['network'], results['label']), fontsize=9)
    fig.tight_layout()
    with folder.open_file('fig6.png') as f:
        fig.savefig(f, format='png', dpi=110)
    plt.close(fig)
    return folder.file('fig6.png')


def run(config, say=print):
    """Measure and write ``fig6.json``, ``fig6.md`` and ``fig6.png``."""
    with OutputFolder.open(config.out, KIND, foreign_ok=False) as folder:
        with folder.discarded_on_failure():
            results = measure(config, say)
            folder.write_json('fig6.json', results)
            folder.write_text('fig6.md', fig6_markdown(results))
            draw(results, folder)
    return results
