"""The elastic study: each backbone with and without elastic outputs.

For each backbone (``networks/elastic_cifar10.py``), from one seed:

1. **backbone**: the main network alone (trunk and final head), our stand-in
   for the Elastic paper's ImageNet pretraining; saved as ``backbone.npz``.
2. **without**: the backbone trained on as it is for ``heads + joint``
   epochs: the network without elastic outputs (``without.npz``).
3. **heads**: from the same backbone, the elastic heads alone with the
   backbone frozen (:class:`branchynet.elastic.FrozenBackboneLoss`).
4. **joint**: everything, every exit's loss weighted 1 (``elastic.npz``).

Both arms start from the same backbone weights and train the same number of
epochs after it, on the same split. Every phase starts a fresh Adam, as the
paper's Keras models were compiled anew for each phase. The results hold the
paper's Table I in its form (test error without and with elastic outputs,
relative improvement), the error of every output against its depth,
parameters and multiply-adds (the paper's Fig. 6), the entropy early-exit
frontier with one threshold shared by all exits, and the exit a compute
budget picks.
"""
from dataclasses import asdict, dataclass

import chainer
import numpy

from branchynet import costs, elastic, sweep, timing
from branchynet.data import datasets
from branchynet.elastic import FrozenBackboneLoss
from branchynet.loss import BranchyLoss
from branchynet.runs import figures
from branchynet.serialization import load_model, save_model
from branchynet.training import phase_log, train_phase
from branchynet.utils import environment, files, markdown
from branchynet.utils.errors import UserError
from branchynet.utils.ownership import OutputFolder

# the Elastic paper's Table I, CIFAR-10 test error (%) without -> with
# elastic outputs, for the families of our backbones (ImageNet-pretrained,
# 224x224 inputs)
PAPER = {'mobilenet': {'network': 'MobileNet', 'without': 10.37,
                       'with': 7.82},
         'resnet': {'network': 'ResNet-50', 'without': 5.54, 'with': 6.19}}
# one threshold shared by every exit; dense up to ln(10) = 2.30, the largest
# entropy over 10 classes (above it every sample leaves at the first exit)
THRESHOLDS = (0.0001, 0.001, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0,
              1.25, 1.5, 1.75, 1.9, 2.0, 2.1, 2.2, 2.25, 2.3, 2.5)
BUDGET_SHARES = (0.25, 0.5, 0.75, 1.0)  # of the final output's cost
MODELS = {'backbone': 'backbone.npz', 'without': 'without.npz',
          'joint': 'elastic.npz'}


@dataclass(frozen=True)
class Schedule:
    """Epochs of each phase, and the optimiser's settings."""
    backbone: int = 8
    heads: int = 2
    joint: int = 6
    batchsize: int = 128
    alpha: float = 0.001


@dataclass(frozen=True)
class StudyConfig:
    """Everything one elastic study trains and how it is evaluated.

    Attributes:
        out: the study's folder.
        data_dir, test_batch, train_size, test_size, preprocessing,
            cache_dir, official: the CIFAR-10 data
            (:func:`branchynet.data.datasets.load_cifar10`); ``test_batch``
            ``None`` is the official test batch, as in the run scripts.
        backbones: keys of ``networks/elastic_cifar10.py``.
        schedule: the epochs of each phase and the batch size.
        width, resnet_n: the backbones' sizes.
        seed: seeds the weights and the shuffling.
        timing_samples: test images each output is timed on (0: none).
        device, progress: where and how it runs.
    """
    out: str
    data_dir: str = None
    backbones: tuple = ('mobilenet', 'resnet')
    test_batch: str = None
    train_size: int = 10000
    test_size: int = None
    schedule: Schedule = Schedule()
    width: float = 0.5
    resnet_n: int = 3
    preprocessing: str = 'scale'
    seed: int = 0
    timing_samples: int = 300
    cache_dir: str = None
    official: bool = True
    device: str = '@numpy'
    progress: bool = True

    # what a resumed study may change: where and how it runs, and the
    # timing (it changes no model)
    CHANGEABLE = ('out', 'data_dir', 'cache_dir', 'device', 'progress',
                  'timing_samples')

    def __post_init__(self):
        from networks.elastic_cifar10 import BACKBONES
        object.__setattr__(self, 'backbones', tuple(self.backbones))
        if isinstance(self.schedule, dict):
            object.__setattr__(self, 'schedule', Schedule(**self.schedule))
        if not self.backbones or len(set(self.backbones)) != len(
                self.backbones) or not set(self.backbones) <= set(BACKBONES):
            raise ValueError('--backbones: distinct names among {}, got {}'
                             .format(', '.join(BACKBONES),
                                     ' '.join(self.backbones)))
        batches = datasets.CIFAR10_BATCHES + [datasets.CIFAR10_TEST]
        if self.test_batch not in [None] + batches:
            raise ValueError('--test-batch must be one of {}, got {!r}'.format(
                ', '.join(batches), self.test_batch))
        if self.preprocessing not in datasets.PREPROCESSINGS:
            raise ValueError('--preprocessing must be one of {}, got {!r}'
                             .format(', '.join(datasets.PREPROCESSINGS),
                                     self.preprocessing))
        for name in ('train_size', 'test_size', 'resnet_n'):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or
                                      not isinstance(value, int) or
                                      value < 1):
                raise ValueError('--{} must be a positive integer, got {!r}'
                                 .format(name.replace('_', '-'), value))
        if not isinstance(self.timing_samples, int) or \
                self.timing_samples < 0:
            raise ValueError('--timing-samples must be 0 or more, got {!r}'
                             .format(self.timing_samples))
        if not 0 < self.width <= 4:
            raise ValueError('--width must lie in (0, 4], got {}'.format(
                self.width))
        for name in ('backbone', 'heads', 'joint', 'batchsize'):
            value = getattr(self.schedule, name)
            if isinstance(value, bool) or not isinstance(value, int) or \
                    value < 1:
                raise ValueError('--{} must be a positive integer, got {!r}'
                                 .format({'batchsize': 'batchsize'}.get(
                                     name, 'epochs-' + name), value))

    def stored(self):
        """What ``config.json`` keeps: everything that shapes the models."""
        values = asdict(self)
        for name in self.CHANGEABLE:
            values.pop(name)
        return json_ready(values)


def json_ready(values):
    """Tuples as lists, recursively: what JSON gives back."""
    if isinstance(values, dict):
        return {k: json_ready(v) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return [json_ready(v) for v in values]
    return values


CONFIG_FILE = 'config.json'
KIND = 'elastic-study'


def open_study(config, resume):
    """Open the study's folder: a new study needs an empty or new folder, a
    resumed one its own study with the same settings (the models in it
    were trained with them).

    Raises:
        UserError: naming the folder and the way out (every setting that
            differs, for a resume).
    """
    folder = OutputFolder.open(config.out, KIND, foreign_ok=False)
    try:
        path = folder.file(CONFIG_FILE)
        if CONFIG_FILE not in folder:
            if resume:
                raise UserError('--resume: {} holds no elastic study'.format(
                    config.out))
            if folder.record['files']:
                raise UserError('--out {} holds an elastic study made before '
                                'studies recorded their settings: choose '
                                'another --out'.format(config.out))
            folder.write_json(CONFIG_FILE, config.stored())
        else:
            if not resume:
                raise UserError('--out {} already holds an elastic study: '
                                'pass --resume to continue it, or choose '
                                'another --out'.format(config.out))
            stored = files.read_json(path)
            wanted = config.stored()
            changed = sorted(k for k in set(stored) | set(wanted)
                             if stored.get(k) != wanted.get(k))
            if changed:
                raise UserError(
                    '--resume: the study in {} was trained with other '
                    'settings: {}. Only {} may change'.format(
                        config.out, '; '.join('{} {!r} (the study has {!r})'
                                              .format(k, wanted.get(k),
                                                      stored.get(k))
                                              for k in changed),
                        ', '.join(config.CHANGEABLE)))
    except BaseException:
        folder.discard()
        raise
    return folder


def run(config, resume=False, say=print):
    """Train (or continue) every backbone's two arms, evaluate them, and
    write ``study.json``, ``table.md`` and one figure per backbone.

    Returns:
        The study's results (the content of ``study.json``).
    """
    from networks import elastic_cifar10
    top = open_study(config, resume)
    try:
        data = datasets.load_cifar10(
            config.data_dir, test_batch=config.test_batch,
            preprocessing=config.preprocessing, train_size=config.train_size,
            test_size=config.test_size, cache_dir=config.cache_dir,
            official=config.official)
    except BaseException:
        if not resume:
            top.discard()
        else:
            top.close()
        raise
    schedule = config.schedule
    with top:
        say('[elastic] train {} ({} images), test {} ({} images); epochs: '
            'backbone {}, heads {}, joint {}'.format(
                data.info['train'], len(data.train_t), data.info['test'],
                len(data.test_t), schedule.backbone, schedule.heads,
                schedule.joint))
        results = []
        for key in config.backbones:
            sizes = {'width': config.width} if key == 'mobilenet' else \
                {'n': config.resnet_n}
            top.make_folder(key)
            with OutputFolder.open(top.file(key), 'elastic-backbone',
                                   foreign_ok=False) as folder:
                without, net, logs = train_arms(
                    lambda: elastic_cifar10.get_network(key, **sizes), data,
                    schedule, folder, chainer.get_device(config.device),
                    seed=config.seed, resume=resume,
                    progress=config.progress,
                    say=lambda text: say('[elastic] {}: {}'.format(key,
                                                                   text)))
                result = evaluate(key, without, net, data, logs, schedule,
                                  timing_samples=config.timing_samples)
                result['sizes'] = sizes
                draw(result, folder)
            results.append(result)
        study = {'kind': KIND, 'schedule_label': 'SHORTENED',
                 'environment': environment.describe(),
                 'config': config.stored(),
                 'data': {'train': data.info['train'],
                          'train_size': len(data.train_t),
                          'test': data.info['test'],
                          'test_size': len(data.test_t)},
                 'seed': config.seed, 'device': config.device,
                 'preprocessing': config.preprocessing,
                 'backbones': results}
        top.write_json('study.json', study)
        top.write_text('table.md', '# Elastic outputs, SHORTENED schedules '
                       '({})\n\n{}'.format(environment.describe()['cpu'],
                                            table(results)))
    return study


def _adam(target, schedule):
    optimizer = chainer.optimizers.Adam(alpha=schedule.alpha)
    optimizer.setup(target)
    return optimizer


def train_arms(make_network, data, schedule, folder, device, seed=0,
               resume=False, progress=True, say=print):
    """The four phases; returns ``(without, elastic_net, logs)``.

    ``make_network()`` gives the elastic network; its main network is what
    the backbone and without phases train. A phase whose model file is in
    ``folder`` is loaded (with its logs) instead of trained.
    """
    logs = {}

    def phase(name, target, optimizer, loss_func, epochs, kind='joint'):
        say('phase "{}": {} epochs'.format(name, epochs))
        folder.make_folder(name)
        logs[name] = train_phase(
            target, optimizer, loss_func, (data.train_x, data.train_t),
            (data.test_x, data.test_t), epochs, folder.file(name),
            schedule.batchsize, device, seed=seed, resume=resume,
            progress=progress, phase=kind)

    def main_network(name, net, epochs):
        policy = BranchyLoss(net)
        phase(name, policy, _adam(policy, schedule), policy.main_loss, epochs,
              kind='main')

    def heads_then_joint(net):
        frozen = FrozenBackboneLoss(net)
        optimizer = _adam(frozen, schedule)
        frozen.freeze()
        phase('heads', frozen, optimizer, frozen, schedule.heads)
        frozen.unfreeze()
        policy = BranchyLoss(net)
        phase('joint', policy, _adam(policy, schedule), policy,
              schedule.joint)

    def load_or_train(key, phases, net, train):
        if MODELS[key] in folder:
            load_model(folder.file(MODELS[key]), net)
            for name in phases:
                logs[name] = phase_log(folder.file(name))
            say('{}: done ({} kept)'.format(' and '.join(phases),
                                            MODELS[key]))
            return
        train()
        with folder.open_file(MODELS[key]) as f:
            save_model(f, net)

    numpy.random.seed(seed)
    net = make_network()
    net.to_device(device)
    load_or_train('backbone', ['backbone'], net,
                  lambda: main_network('backbone', net, schedule.backbone))
    without = net.copy(mode='copy')
    load_or_train('without', ['without'], without,
                  lambda: main_network('without', without,
                                       schedule.heads + schedule.joint))
    load_or_train('joint', ['heads', 'joint'], net,
                  lambda: heads_then_joint(net))
    return without, net, logs


def _error(correct_share):
    return 100.0 * (1.0 - correct_share)


def conv_layers(link):
    """The number of convolution layers inside ``link``."""
    return sum(isinstance(child, chainer.links.Convolution2D)
               for child in link.links())


def describe_outputs(net):
    """Per exit: the block it follows, conv layers and parameters on its
    path (trunk up to it and its own head), and multiply-adds of the exit
    alone and of its early-exit path (every earlier head included)."""
    stages, heads = costs.multiply_adds(net)
    paths = costs.path_costs(stages, heads)
    rows, convs, params = [], 0, 0
    for n, (stage, head) in enumerate(zip(net.trunk, net.heads)):
        convs += conv_layers(stage)
        params += sum(p.size for p in stage.params())
        rows.append({
            'exit': n,
            'conv_layers': convs,
            'parameters': params + sum(p.size for p in head.params()),
            'multiply_adds_alone': sum(stages[:n + 1]) + heads[n],
            'multiply_adds_path': paths[n]})
    return rows


def budget_choices(costs, unit):
    """The exit :func:`branchynet.elastic.exit_for_budget` picks for each
    of :data:`BUDGET_SHARES` of the main network's cost (``costs[-1]``)."""
    choices = []
    for share in BUDGET_SHARES:
        choice = {'share': share, 'budget': share * costs[-1], 'unit': unit}
        try:
            choice['exit'], _ = elastic.exit_for_budget(costs,
                                                        choice['budget'])
        except ValueError as e:
            choice.update(exit=None, why=str(e))
        choices.append(choice)
    return choices


def evaluate(key, without, net, data, logs, schedule, timing_samples=0):
    """The backbone's results (a JSON-ready dict); with ``timing_samples``,
    each output alone is also timed at batch 1 on that many test images
    and the budgets are chosen in measured ms as well."""
    outputs = sweep.exit_outputs(net, data.test_x, data.test_t)
    plain = sweep.exit_outputs(without, data.test_x, data.test_t)
    alone = elastic.each_exit_alone(outputs)
    error_without = _error(float(
        (plain.predictions[-1] == plain.labels).mean()))
    error_with = _error(alone[-1])
    rows = describe_outputs(net)
    for row, accuracy in zip(rows, alone):
        row['error'] = _error(accuracy)
    paths = [r['multiply_adds_path'] for r in rows]
    alone_costs = [r['multiply_adds_alone'] for r in rows]
    main_cost = alone_costs[-1]  # the trunk and the final head
    frontier = []
    for point in elastic.shared_threshold_sweep(outputs, THRESHOLDS):
        point['multiply_adds'] = float(numpy.dot(point['exit_shares'],
                                                 paths))
        frontier.append(point)
    # answering at one output runs its path and its head only
    budgets = budget_choices(alone_costs, 'multiply-adds')
    if timing_samples:
        measured = elastic.time_each_output(
            net, timing.as_samples(data.test_x[:timing_samples]))
        for row, summary in zip(rows, measured):
            row['ms_alone'] = summary['median_ms']
        budgets += budget_choices([r['ms_alone'] for r in rows], 'ms')
    for choice in budgets:
        if choice['exit'] is not None:
            choice['error'] = rows[choice['exit']]['error']
    return {
        'backbone': key, 'network': net.title,
        'exits': net.num_exits,
        'error_without': error_without, 'error_with': error_with,
        'improvement_percent': 100.0 * (error_without - error_with) /
        error_without if error_without else None,
        'paper': PAPER[key],
        'outputs': rows, 'frontier': frontier, 'budgets': budgets,
        'main_network_multiply_adds': main_cost,
        'timing_samples': timing_samples,
        'schedule': asdict(schedule),
        'training': {phase: log for phase, log in logs.items()},
    }


def table(results):
    """The Elastic paper's Table I in its form, ours beside the paper's."""
    rows = []
    for r in results:
        paper = r['paper']
        rows.append([
            r['network'].replace('Elastic-', ''), r['exits'],
            '{:.2f}'.format(r['error_without']),
            '{:.2f}'.format(r['error_with']),
            '{:+.1f} %'.format(r['improvement_percent']),
            '{}: {:.2f} -> {:.2f} ({:+.1f} %)'.format(
                paper['network'], paper['without'], paper['with'],
                100 * (paper['without'] - paper['with']) / paper['without'])])
    return '\n'.join(markdown.table(
        ['backbone', 'exits', 'error without (%)', 'error with (%)',
         'improvement', 'paper: network, without -> with (%)'], rows)) + '\n'


def draw(result, folder):
    """Error of every output against its multiply-adds (the paper's Fig. 6)
    and the shared-threshold early-exit frontier, one figure."""
    if not figures.available():
        return []
    figure = figures._figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2)
    rows = result['outputs']
    left.plot([r['multiply_adds_alone'] / 1e6 for r in rows],
              [r['error'] for r in rows], 'o-', label='each output alone')
    left.axhline(result['error_without'], color='tab:red', ls='--',
                 label='backbone without elastic outputs')
    for r in rows:
        left.annotate('{} conv'.format(r['conv_layers']),
                      (r['multiply_adds_alone'] / 1e6, r['error']),
                      textcoords='offset points', xytext=(4, 4), fontsize=7)
    left.set_xlabel('multiply-adds per sample (millions)')
    left.set_ylabel('test error (%)')
    left.set_title('{}: every output'.format(result['network']))
    left.legend(fontsize=8)
    points = result['frontier']
    right.plot([p['multiply_adds'] / 1e6 for p in points],
               [100 * (1 - p['accuracy']) for p in points], 's-',
               label='entropy rule, one threshold for all exits')
    right.plot([result['main_network_multiply_adds'] / 1e6],
               [result['error_without']], 'D', color='tab:red',
               label='without elastic outputs')
    right.set_xlabel('expected multiply-adds per sample (millions)')
    right.set_ylabel('test error (%)')
    right.set_title('{}: early exit'.format(result['network']))
    right.legend(fontsize=8)
    figure.suptitle('SHORTENED schedule (epochs: backbone {backbone}, heads '
                    '{heads}, joint {joint}; batch {batchsize})'.format(
                        **result['schedule']), fontsize=10, y=1.03)
    return figures._save(figure, folder, 'elastic_{}'.format(
        result['backbone']))
