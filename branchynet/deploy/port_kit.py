"""The port kit: everything another framework needs to reproduce a BranchyNet exactly.

One folder per network (``experiments/export_port_kit.py``):

- ``model.onnx`` — the whole network, every exit's logits an output
  (``exit1`` ... ``exitN``), input ``x`` of shape ``(batch, C, H, W)`` with
  a free batch size; exported by the ONNX exporter inside Chainer 7.8.1
  (``onnx_chainer``, opset 11) in test mode and checked by
  ``onnx.checker``;
- ``weights.npz`` — every parameter and BatchNorm statistic, named by its
  path in the network (``trunk/0/l0/W``, ``heads/1/l0/bn1/avg_var``); the
  layouts are Chainer's: convolution W ``(out, in, kh, kw)``, linear W
  ``(out, in)`` with ``y = x W^T + b``, BatchNorm ``gamma``, ``beta``,
  ``avg_mean``, ``avg_var`` (and ``N``, the count of batches seen);
- ``reference.npz`` — a fixed input batch ``x`` (real test images when the
  data is given, else seeded uniform noise) and its labels ``t``; per exit
  ``k``: ``logits_k``, ``softmax_k``, ``entropy_k``; per threshold set
  ``s`` (``paper``, ``split`` — thresholds that send samples out at every
  exit — and ``knee`` when the model's run has one): ``thresholds_s``,
  ``exits_s`` (0-based) and ``labels_s``;
- ``manifest.json`` — the network as a framework-neutral list of layers
  with their attributes, the training protocol and optimizer, the library
  versions, and the SHA-256 of every file.

What each attribute means and how a port must compute it is PORTING.md.
"""
import os
import platform
import sys

import chainer
import chainer.functions as F
import chainer.links as L
import numpy
from chainer import serializers

from branchynet import _compat, entropy, sweep
from branchynet.data import datasets, synthetic
from branchynet.deploy import onnx_graph
from branchynet.exit_rule import EntropyThresholds
from branchynet.layers import FunctionLayer
from branchynet.paper import protocols
from branchynet.runs import reading, run_folder
from branchynet.serialization import load_model
from branchynet.utils import environment, files
from branchynet.utils.errors import FileProblem, UserError
from branchynet.utils.ownership import OutputFolder

OPSET = 11
KIT_FILES = ('model.onnx', 'weights.npz', 'reference.npz')
MANIFEST = 'manifest.json'
MAX_BATCH = 10000  # a reference batch larger than a test set is a typo
# A port passes a kit when every exit's logits are within this share of the
# largest reference logit (PORTING.md: honest float32 ports measured at most
# 1.3e-6; ONNX's LRN alpha/n mistake 6.6e-6 to 1.9e-5).
PASS_TOLERANCE = 5e-6
ADAM = {'name': 'Adam (Chainer 7)', 'alpha': 0.001, 'beta1': 0.9,
        'beta2': 0.999, 'eps': 1e-8,
        'update': 'm += (1 - beta1) * (g - m); v += (1 - beta2) * (g*g - v); '
                  'param -= alpha_t * m / (sqrt(v) + eps) with alpha_t = '
                  'alpha * sqrt(1 - beta2**t) / (1 - beta1**t), t counted '
                  'per parameter from 1'}


# --- the network, framework-neutral ---------------------------------------------

def relative_error(got, expected):
    """``max |got - expected| / max |expected|`` in float64 (divided by 1
    when ``expected`` is all zeros): how PORTING.md judges a port, and how
    this project compares any two computations of one array."""
    expected = numpy.asarray(expected, numpy.float64)
    return float(numpy.abs(numpy.asarray(got, numpy.float64) - expected).max()
                 / (numpy.abs(expected).max() or 1.0))


def _path(prefix, name):
    return '{}/{}'.format(prefix, name).lstrip('/')


def describe_layer(layer, prefix):
    """One layer as a JSON-ready dict (weights named by path in weights.npz).

    Raises:
        TypeError: a layer this description does not know.
    """
    if hasattr(layer, 'port_description'):  # a block that describes itself
        return layer.port_description(prefix, describe_layer)
    if isinstance(layer, L.Convolution2D) and layer.groups != 1:
        return dict(_describe_plain(layer, prefix),
                    in_channels=int(layer.W.shape[1] * layer.groups),
                    groups=int(layer.groups))
    return _describe_plain(layer, prefix)


def _describe_plain(layer, prefix):
    """:func:`describe_layer` of one plain layer (a grouped convolution is
    described as its groups' convolution, then completed)."""
    if isinstance(layer, L.Convolution2D):
        return {'type': 'conv2d', 'in_channels': int(layer.W.shape[1]),
                'out_channels': int(layer.out_channels),
                'kernel': list(layer.ksize if isinstance(layer.ksize, tuple)
                               else (layer.ksize,) * 2),
                'stride': list(layer.stride), 'pad': list(layer.pad),
                'weight': _path(prefix, 'W'),
                'bias': None if layer.b is None else _path(prefix, 'b')}
    if isinstance(layer, L.Linear):
        return {'type': 'linear', 'in_features': int(layer.W.shape[1]),
                'out_features': int(layer.W.shape[0]),
                'flatten_input': 'C-order (N, C, H, W) -> (N, C*H*W)',
                'weight': _path(prefix, 'W'),
                'bias': None if layer.b is None else _path(prefix, 'b')}
    if isinstance(layer, L.BatchNormalization):
        return {'type': 'batch_norm', 'channels': int(layer.avg_mean.size),
                'eps': float(layer.eps), 'decay': float(layer.decay),
                'gamma': _path(prefix, 'gamma'), 'beta': _path(prefix, 'beta'),
                'mean': _path(prefix, 'avg_mean'),
                'var': _path(prefix, 'avg_var')}
    if isinstance(layer, FunctionLayer):
        kwargs = layer.kwargs
        if layer.name == 'relu':
            return {'type': 'relu'}
        if layer.name in ('max_pool', 'average_pool'):
            return {'type': layer.name, 'kernel': [kwargs['ksize']] * 2,
                    'stride': [kwargs['stride']] * 2, 'pad': [0, 0],
                    'cover_all': bool(kwargs.get('cover_all', False))}
        if layer.name == 'lrn':
            return {'type': 'lrn', 'n': kwargs['n'], 'k': kwargs['k'],
                    'alpha': kwargs['alpha'], 'beta': kwargs['beta']}
        if layer.name == 'dropout':
            return {'type': 'dropout', 'ratio': kwargs['ratio']}
        if layer.name == 'global_average_pool':
            return {'type': 'global_average_pool',
                    'output': '(N, C, 1, 1): the mean of each feature map'}
    if hasattr(layer, 'conv1') and hasattr(layer, 'bn2'):  # a residual block
        return {'type': 'res_block',
                'in_channels': int(layer.conv1.W.shape[1]),
                'out_channels': int(layer.conv1.out_channels),
                'stride': int(layer.stride),
                'layers': [describe_layer(getattr(layer, name),
                                          _path(prefix, name))
                           for name in ('conv1', 'bn1', 'conv2', 'bn2')],
                'shortcut': 'the input, with out - in zero channels '
                            'concatenated in front, then subsampled with '
                            'average_pool(kernel 1, stride) when stride > 1',
                'output': 'relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut)'}
    raise TypeError('no framework-neutral description for {!r}'.format(layer))


def describe_network(net):
    """``{'trunk': [[layer, ...] per stage], 'heads': [...]}``."""
    def stage_layers(stage, prefix):
        described, positions = [], {}
        for name in stage._steps:
            if isinstance(name, str):
                positions[id(getattr(stage, name))] = name
        for position, layer in enumerate(stage.layers()):
            link_name = positions.get(id(layer), 'l{}'.format(position))
            described.append(describe_layer(layer, _path(prefix, link_name)))
        return described
    return {'trunk': [stage_layers(s, 'trunk/{}'.format(n))
                      for n, s in enumerate(net.trunk)],
            'heads': [stage_layers(h, 'heads/{}'.format(n))
                      for n, h in enumerate(net.heads)]}


# --- the files --------------------------------------------------------------------

def weights(net):
    """Every parameter and persistent value of ``net``, by path (numpy)."""
    serializer = serializers.DictionarySerializer()
    serializer.save(net)
    return {k: numpy.asarray(chainer.backends.cuda.to_cpu(v))
            for k, v in serializer.target.items()}


def trace_onnx(link, x, input_names, output_names):
    """``link`` applied to ``x`` as a checked ONNX model with a free batch size.

    Chainer's exporter (``onnx_chainer``, opset :data:`OPSET`, test mode,
    Chainer's own functions) fixes the batch size of the trace into every
    flattening ``Reshape``; those shapes are rewritten to ``0`` (copy the
    input's batch dimension), and the parameters are listed as initializers
    only, not as graph inputs.

    Returns:
        The ``onnx.ModelProto``.
    """
    _compat.apply_onnx()
    import onnx
    import onnx_chainer
    from onnx import numpy_helper
    # the exporter knows Chainer's own functions only
    with chainer.using_config('train', False), \
            chainer.using_config('branchynet_kernels', 'stock'):
        model = onnx_chainer.export(link, x, opset_version=OPSET,
                                    input_names=input_names,
                                    output_names=output_names)
    batch = len(x)
    producers = {n.output[0]: n for n in model.graph.node
                 if n.op_type == 'Constant'}
    for node in model.graph.node:
        if node.op_type != 'Reshape':
            continue
        constant = producers[node.input[1]]
        shape = numpy_helper.to_array(constant.attribute[0].t).copy()
        if shape[0] == batch:
            shape[0] = 0
            constant.attribute[0].t.CopyFrom(numpy_helper.from_array(
                shape, constant.attribute[0].t.name))
    onnx_graph.unique_node_names(model)
    initializers = {i.name for i in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = 'batch'
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[0].dim_param = 'batch'
    onnx.checker.check_model(model)
    return model


def export_onnx(net, x, target):
    """Write ``net`` as ONNX (all exits as outputs, free batch size); check it.

    Returns:
        The ``onnx.ModelProto`` (see :func:`trace_onnx`).
    """
    names = ['exit{}'.format(n + 1) for n in range(net.num_exits)]
    model = trace_onnx(net, x, ['x'], names)
    with files.writing(target) as f:
        f.write(model.SerializeToString())
    return model


def reference_batch(protocol, data_dir, size, seed, test_batch=None,
                    run=None):
    """The reference batch: real test images if ``data_dir``, preprocessed
    as the run ``run`` (a :class:`~branchynet.runs.config.RunConfig`, or
    ``None``: the protocol's defaults) preprocessed its own, else seeded
    noise.

    Returns:
        ``(x, t, source, preprocessing)``: ``preprocessing`` holds, for
        CIFAR-10, what a port needs to check its own preprocessing (the
        rule, the training batches it was fitted on, the raw uint8 images
        of the batch and, where the rule subtracts one, the per-pixel
        mean), else ``None``.
    """
    from branchynet.runs import pipeline
    from branchynet.runs.config import RunConfig
    if data_dir is None:
        return synthetic.random_batch(protocol.input_shape, size, seed) + (
            'uniform noise in [0, 1), seed {}'.format(seed), None)
    if protocol.dataset == 'mnist':
        data = datasets.load_mnist(data_dir, test_size=size)
        return data.test_x, data.test_t, 'the first {} images of {} ({})'.format(
            size, data.info['test'], data.info['preprocessing']), None
    run = run or RunConfig.for_protocol(protocol.key, out='')
    data = pipeline.load_data(protocol, run.replace(
        data_dir=data_dir, test_size=size,
        test_batch=test_batch or run.test_batch), keep_raw=True)
    mean = datasets.pixel_mean(data.raw_train_x, run.preprocessing)
    preprocessing = {
        'key': run.preprocessing,
        'rule': datasets.PREPROCESSINGS[run.preprocessing],
        'fitted_on': {'batches': data.info['train'],
                      'images': len(data.train_t),
                      'validation_held_out': data.info['validation']},
        'arrays': {'x_raw': data.raw_test_x,
                   **({'pixel_mean': mean} if mean is not None else {})}}
    return data.test_x, data.test_t, 'the first {} images of {} ({})'.format(
        size, data.info['test'], data.info['preprocessing']), preprocessing


def exit_arrays(net, x, threshold_sets):
    """What reference.npz holds for ``x``: per exit and per threshold set."""
    arrays = {}
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        ys = [y.array for y in net(x)]
    for k, y in enumerate(ys, start=1):
        p = F.softmax(y).array
        arrays['logits_{}'.format(k)] = y
        arrays['softmax_{}'.format(k)] = p
        arrays['entropy_{}'.format(k)] = entropy(p)
    for name, thresholds in threshold_sets.items():
        labels, exits = net.predict(x, thresholds=thresholds)
        arrays['thresholds_' + name] = numpy.asarray(thresholds, numpy.float64)
        arrays['exits_' + name] = exits
        arrays['labels_' + name] = labels
    return arrays


def lower_third_thresholds(net, x):
    """Thresholds at the lower third of each exit's entropies: every exit is used."""
    outputs = sweep.exit_outputs(net, x, numpy.zeros(len(x), numpy.int32))
    thresholds, remaining = [], numpy.ones(len(x), bool)
    for n in range(net.num_exits - 1):
        e = numpy.sort(outputs.entropies[n, remaining].astype(numpy.float64))
        if len(e) < 2:
            thresholds.append(0.0)
        else:
            i = max(0, len(e) // 3 - 1)
            thresholds.append(float(e[i] + e[i + 1]) / 2)
        rule = EntropyThresholds(thresholds + [0.0] * (
            net.num_exits - 2 - n), net.num_exits)
        remaining &= ~rule.takes(n, outputs.entropies[n])
    return thresholds


# Threshold sets that test a port's exit rule alone, on the kit's own
# entropies: a port's entropies differ from these in the last bits, and a
# tie may then fall either way through its own forward pass.
RULE_ONLY_SETS = ('ties', 'above_ties')


def tie_thresholds(net, x, above=False):
    """Thresholds that tie: at each non-final exit, the entropy (a float32)
    of the median sample of those that reach it, exactly; with ``above``, a
    quarter of a float32 step above it, which rounds back to it. Under the
    exit rule (strictly below, in float32) that sample stays in both sets,
    so a port that compares with ``<=``, or in float64, fails them."""
    outputs = sweep.exit_outputs(net, x, numpy.zeros(len(x), numpy.int32))
    thresholds, remaining = [], numpy.ones(len(x), bool)
    for n in range(net.num_exits - 1):
        reaching = numpy.flatnonzero(remaining)
        e = outputs.entropies[n, reaching].astype(numpy.float32)
        tie = e[numpy.argsort(e, kind='stable')[(len(e) - 1) // 2]] \
            if len(e) else numpy.float32(0)
        value = float(tie)
        if above:
            value += float(numpy.spacing(tie)) / 4
        thresholds.append(value)
        rule = EntropyThresholds(thresholds + [0.0] * (
            net.num_exits - 2 - n), net.num_exits)
        remaining &= ~rule.takes(n, outputs.entropies[n])
    return thresholds


def knee_of_run(model_path, key):
    """The knee thresholds in the ``results.json`` beside a saved model, or None.

    Raises:
        FileProblem: that ``results.json`` is damaged, or belongs to
            another network's run.
    """
    if model_path is None:
        return None
    path = run_folder.RunFolder(os.path.dirname(os.path.abspath(
        model_path))).file(run_folder.RESULTS)
    if not os.path.isfile(path):
        return None
    results = reading.read_results(path)
    if results['protocol'] != key:
        raise FileProblem(
            '{}: beside the model {} lies the results file of a {} run, not '
            'of {}: its knee thresholds do not apply; move one of them'
            .format(path, model_path, results['protocol'], key))
    for device in ('cpu', 'gpu'):
        if device in results['timing']:
            return results['timing'][device]['knee']['thresholds']
    return None


def export(key, out, model_path=None, data_dir=None, batch=16, seed=0,
           test_batch=None, replace=False):
    """Write the port kit of protocol ``key`` into ``out``.

    Args:
        key: a protocol key (``'b_lenet'``, ``'b_alexnet'``, ``'b_resnet110'``).
        out: the kit's folder.
        model_path: a saved model (``branchynet.npz``); ``None``: the
            network as initialised with ``numpy.random.seed(seed)``.
        data_dir: real test images for the reference batch (else noise).
        batch: size of the reference batch.
        seed: seeds the initial weights and the noise batch.
        test_batch: CIFAR-10's test batch, as for the run scripts.
        replace: rewrite a kit this program wrote into ``out`` before
            (without it such a folder is refused: a committed kit is not
            rewritten by accident).

    Returns:
        The manifest (a dict).

    Raises:
        UserError: ``out`` holds a kit already and ``replace`` is false.
    """
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError('the reference batch needs 1 to {} samples (a test '
                         'set holds 10000), got {}'.format(MAX_BATCH, batch))
    protocol = protocols.get(key)
    numpy.random.seed(seed)
    net = protocol.network()
    if model_path is not None:
        load_model(model_path, net)
    knee = knee_of_run(model_path, key)
    x, t, source, preprocessing = reference_batch(
        protocol, data_dir, batch, seed, test_batch, run_of_model(model_path))
    # a kit is Chainer's own computation: the reference a port must meet
    with OutputFolder.open(out, 'port-kit', foreign_ok=False) as folder, \
            chainer.using_config('branchynet_kernels', 'stock'):
        if MANIFEST in folder and not replace:
            raise UserError('{} holds a port kit already: pass --replace to '
                            'rewrite it, or choose another --out'.format(out))
        return _write_kit(folder, key, net, x, t, source, model_path, seed,
                          knee, preprocessing)


def run_of_model(model_path):
    """The configuration of the run whose folder holds ``model_path``
    (its ``run.json``), or ``None``."""
    if model_path is None:
        return None
    return run_folder.stored_config(os.path.dirname(os.path.abspath(
        model_path)))


def _write_kit(folder, key, net, x, t, source, model_path, seed, knee,
               preprocessing=None):
    protocol = protocols.get(key)
    with folder.open_file('model.onnx') as f:
        export_onnx(net, x, f)
    with folder.open_file('weights.npz') as f:
        numpy.savez(f, **weights(net))
    sets = {'paper': list(protocol.paper.thresholds),
            'split': lower_third_thresholds(net, x),
            'ties': tie_thresholds(net, x),
            'above_ties': tie_thresholds(net, x, above=True)}
    if knee is not None:
        sets['knee'] = knee
    extra = preprocessing['arrays'] if preprocessing else {}
    with folder.open_file('reference.npz') as f:
        numpy.savez(f, x=x, t=t, **extra, **exit_arrays(net, x, sets))
    import onnx
    manifest = {
        'kind': 'branchynet-port-kit',
        'network': net.title, 'protocol_key': key,
        'input_shape': list(net.input_shape), 'classes': 10,
        'num_exits': net.num_exits,
        'layers': describe_network(net),
        'weights': 'model file {} (trained)'.format(model_path) if model_path
                   else 'initial weights, numpy.random.seed({})'.format(seed),
        'reference_batch': source,
        'preprocessing': None if preprocessing is None else {
            k: v for k, v in preprocessing.items() if k != 'arrays'},
        'threshold_sets': sets,
        'protocol': {
            'epochs': {'main': protocol.epoch_main,
                       'joint': protocol.epoch_joint},
            'batchsize': protocol.batchsize, 'optimizer': ADAM,
            'fresh_optimizer_state': 'non-final exit heads start the joint '
                                     'phase with t = 0 and zero moments',
            'loss': 'sum over exits of weight * softmax cross-entropy '
                    '(mean over the batch); weights all 1.0',
            'branch_weights': list(net.branch_weights),
            'threshold_list': list(protocol.threshold_list),
            'exit_rule': 'exit n takes a sample when entropy(softmax(logits)) '
                         '< T_n, both in float32 (T_n rounded to the '
                         'nearest float32), strictly; the last exit takes '
                         'the rest',
            'initialisation': 'see PORTING.md (LeCun-normal; ResNet stem '
                              'and residual convs scaled by 2**0.25)'},
        'versions': {'branchynet_commit': environment.describe()['git_commit'],
                     'chainer': chainer.__version__,
                     'numpy': numpy.__version__, 'onnx': onnx.__version__,
                     'onnx_opset': OPSET,
                     'python': sys.version.split()[0],
                     'platform': platform.platform()},
        'files': {name: files.sha256(folder.file(name))
                  for name in KIT_FILES},
    }
    folder.write_json(MANIFEST, manifest)
    return manifest


def read(folder):
    """``(manifest, weights, reference)`` of a kit, after checking its hashes.

    Raises:
        FileProblem: the manifest is damaged, or a file's SHA-256 differs
            from the manifest's.
    """
    path = os.path.join(folder, MANIFEST)
    manifest = files.read_json(path)
    reading.check(manifest, {'kind': reading.Equal('branchynet-port-kit'),
                             'files': reading.DictOf(str)}, path)
    if set(manifest['files']) != set(KIT_FILES):
        raise FileProblem('{}: names the files {}, a kit holds {}'.format(
            path, sorted(manifest['files']), sorted(KIT_FILES)))
    for name, digest in manifest['files'].items():
        member = os.path.join(folder, name)
        if os.path.islink(member) or not os.path.isfile(member):
            raise FileProblem('{}: not a file of the kit (missing, or a '
                              'link)'.format(member))
        if files.sha256(member) != digest:
            raise FileProblem('{}: SHA-256 differs from the manifest'.format(
                member))
    with numpy.load(os.path.join(folder, 'weights.npz')) as w, \
            numpy.load(os.path.join(folder, 'reference.npz')) as r:
        return manifest, dict(w), dict(r)
