"""Early exit where models are deployed: one ONNX file with the exit decision inside.

:func:`export` writes a BranchyNet as one ONNX model that ONNX Runtime (or
any ONNX runtime with opset 11) runs as BranchyNet runs:

- inputs ``images`` (``(batch, C, H, W)`` float32, any batch size) and
  ``thresholds`` (``(num_exits - 1,)`` float32: the entropy threshold of
  each non-final exit, rounded to float32, a runtime input, so thresholds
  change without exporting again);
- outputs ``label`` and ``exit`` (``(batch,)`` int64: the predicted class
  and the 0-based index of the exit that answered).

Inside, trunk stage ``n`` and exit head ``n`` run, then ``entropy = -sum
p ln p`` of ``p = softmax(logits)`` (``0 ln 0 = 0``, float32), compared
with ``thresholds[n]`` strictly (``<``) in float32, as
:class:`~branchynet.exit_rule.EntropyThresholds` compares: the samples
below leave with ``argmax(logits)`` (the first maximum on ties). The others
are gathered, and only they run through the next stage, inside an ``If``
node that runs nothing when none is left: for a batch of one, nothing past
the exit taken runs. The last exit answers for every sample still there.
The stages and heads are traced by Chainer's own ONNX exporter
(:func:`branchynet.deploy.port_kit.trace_onnx`), so each is the port kit's
computation.

:func:`export_main_path` writes the main network alone (every stage, the
final head, ``label`` and ``exit``), the deployed baseline. Both carry
``metadata_props``: network, exits, input shape, classes.

:class:`EarlyExitSession` runs either with ONNX Runtime on the CPU.
"""
import json
import os

import chainer
import numpy

from branchynet.deploy import onnx_graph
from branchynet.deploy.port_kit import OPSET, trace_onnx
from branchynet.exit_rule import EntropyThresholds
from branchynet.utils import environment, files

IMAGES, THRESHOLDS, LABEL, EXIT = 'images', 'thresholds', 'label', 'exit'


class _Builder:
    """Nodes and initializers of the graph being built, with unique names."""

    def __init__(self):
        import onnx
        self.helper = onnx.helper
        self.TensorProto = onnx.TensorProto
        self.initializers = []
        self.count = 0

    def name(self, stem):
        self.count += 1
        return '{}_{}'.format(stem, self.count)

    def node(self, nodes, op, inputs, stem, outputs=1, **attributes):
        names = [self.name(stem) for _ in range(outputs)]
        nodes.append(self.helper.make_node(op, inputs, names,
                                           name=self.name(op), **attributes))
        return names[0] if outputs == 1 else names

    def constant(self, nodes, value, dtype, stem='const'):
        """A ``Constant`` node in ``nodes``: inside the (sub)graph that
        reads it, not an initializer of the outer graph (tract read an
        outer scalar initializer inside an ``If`` branch as another
        one's value)."""
        from onnx import numpy_helper
        name = self.name(stem)
        nodes.append(self.helper.make_node(
            'Constant', [], [name], name=self.name('Constant'),
            value=numpy_helper.from_array(numpy.asarray(value, dtype=dtype),
                                          name)))
        return name

    def inline(self, nodes, model, input_name, prefix):
        """The nodes of a traced one-input, one-output ``model``, reading
        ``input_name``; returns the name of its output."""
        import onnx
        model = onnx.compose.add_prefix(model, prefix)
        nodes.append(self.helper.make_node(
            'Identity', [input_name], [model.graph.input[0].name],
            name=self.name('Identity')))
        nodes.extend(model.graph.node)
        self.initializers.extend(model.graph.initializer)
        return model.graph.output[0].name


def _traces(net, sample):
    """Every trunk stage and head of ``net`` traced on ``sample``'s activations."""
    stages, heads = [], []
    h = sample
    with chainer.using_config('train', False), chainer.no_backprop_mode(), \
            chainer.using_config('branchynet_kernels', 'stock'):
        for stage, head in zip(net.trunk, net.heads):
            stages.append(trace_onnx(stage, h, ['in'], ['out']))
            h = stage(h).array
            heads.append(trace_onnx(head, h, ['in'], ['out']))
    return stages, heads


def _decide(b, nodes, logits, n, thresholds):
    """Label, exit index and the 'leaves here' mask of exit ``n``."""
    def const(value, dtype):
        return b.constant(nodes, value, dtype)
    label = b.node(nodes, 'ArgMax', [logits], 'label', axis=1, keepdims=0)
    exit_ = b.node(nodes, 'Expand', [const(n, numpy.int64),
                                     b.node(nodes, 'Shape', [label], 'n')],
                   'exit')
    if thresholds is None:
        return label, exit_, None
    p = b.node(nodes, 'Softmax', [logits], 'p', axis=1)
    positive = b.node(nodes, 'Greater', [p, const(0, numpy.float32)],
                      'positive')
    safe = b.node(nodes, 'Where', [positive, p, const(1, numpy.float32)],
                  'safe')
    terms = b.node(nodes, 'Mul', [p, b.node(nodes, 'Log', [safe], 'log')],
                   'terms')
    entropy = b.node(nodes, 'Neg', [b.node(nodes, 'ReduceSum', [terms],
                                           'sum', axes=[1], keepdims=0)],
                     'entropy')
    threshold = b.node(nodes, 'Gather', [thresholds, const(n, numpy.int64)],
                       't')
    leaves = b.node(nodes, 'Less', [entropy, threshold], 'leaves')
    return label, exit_, leaves


def _exit(b, nodes, h, n, stages, heads, thresholds):
    """Stage ``n`` and head ``n`` on ``h``, and exit ``n``'s decision:
    ``(h after the stage, label, exit, leaves)``; ``leaves`` is ``None`` at
    the last exit, which takes every sample left."""
    h = b.inline(nodes, stages[n], h, 's{}_'.format(n))
    logits = b.inline(nodes, heads[n], h, 'h{}_'.format(n))
    last = n == len(stages) - 1
    label, exit_, leaves = _decide(b, nodes, logits, n,
                                   None if last else thresholds)
    return h, label, exit_, leaves


def _level(b, nodes, h, n, stages, heads, thresholds):
    """Exit ``n`` and, for the samples it does not take, the deeper ones.

    Returns:
        The names of this level's ``label`` and ``exit`` tensors (one entry
        per sample of ``h``).
    """
    helper = b.helper
    h, label, exit_, leaves = _exit(b, nodes, h, n, stages, heads,
                                    thresholds)
    if leaves is None:
        return label, exit_
    stay = b.node(nodes, 'NonZero', [b.node(nodes, 'Not', [leaves], 'stay')],
                  'where')
    index = b.node(nodes, 'Squeeze', [stay], 'index', axes=[0])
    left = b.node(nodes, 'Greater', [
        b.node(nodes, 'Size', [index], 'left'),
        b.constant(nodes, 0, numpy.int64)], 'any')
    deeper = []
    rest = b.node(deeper, 'Gather', [h, index], 'rest', axis=0)
    rest_label, rest_exit = _level(b, deeper, rest, n + 1, stages, heads,
                                   thresholds)
    at = b.node(deeper, 'Unsqueeze', [index], 'at', axes=[1])
    merged = [b.node(deeper, 'ScatterND', [label, at, rest_label], 'label'),
              b.node(deeper, 'ScatterND', [exit_, at, rest_exit], 'exit')]
    kept = []
    same = [b.node(kept, 'Identity', [label], 'label'),
            b.node(kept, 'Identity', [exit_], 'exit')]

    def branch(branch_nodes, outputs, stem):
        return helper.make_graph(branch_nodes, b.name(stem), [], [
            helper.make_tensor_value_info(o, b.TensorProto.INT64, None)
            for o in outputs])
    return b.node(nodes, 'If', [left], 'out', outputs=2,
                  then_branch=branch(deeper, merged, 'deeper'),
                  else_branch=branch(kept, same, 'kept'))


def _level_portable(b, nodes, h, n, stages, heads, thresholds):
    """Exit ``n`` of the portable form (one sample): if it takes the sample,
    its answer; else the deeper levels', inside the ``else`` branch of an
    ``If`` on a scalar condition. No shape depends on the data. An answer
    is one ``(1, 2)`` int64 tensor, ``[[label, exit]]``: an ``If`` with one
    output (tract gave the second output of a two-output ``If`` from the
    wrong branch)."""
    helper = b.helper
    h, label, exit_, leaves = _exit(b, nodes, h, n, stages, heads,
                                    thresholds)
    answer = b.node(nodes, 'Concat', [
        b.node(nodes, 'Unsqueeze', [label], 'label', axes=[1]),
        b.node(nodes, 'Unsqueeze', [exit_], 'exit', axes=[1])], 'answer',
        axis=1)
    if leaves is None:
        return answer
    here = b.node(nodes, 'Squeeze', [leaves], 'here', axes=[0])
    taken = []
    same = b.node(taken, 'Identity', [answer], 'answer')
    deeper = []
    deeper_answer = _level_portable(b, deeper, h, n + 1, stages, heads,
                                    thresholds)

    def branch(branch_nodes, output, stem):
        return helper.make_graph(branch_nodes, b.name(stem), [], [
            helper.make_tensor_value_info(output, b.TensorProto.INT64,
                                          [1, 2])])
    return b.node(nodes, 'If', [here], 'answer',
                  then_branch=branch(taken, same, 'taken'),
                  else_branch=branch(deeper, deeper_answer, 'deeper'))


FORMS = ('batched', 'portable')


def _model(net, sample, early_exit, form='batched'):
    import onnx
    helper = onnx.helper
    sample = numpy.asarray(sample if sample is not None else numpy.zeros(
        (1,) + tuple(net.input_shape), numpy.float32), numpy.float32)
    stages, heads = _traces(net, sample)
    b = _Builder()
    nodes = []
    thresholds = THRESHOLDS if early_exit and net.num_exits > 1 else None
    if form not in FORMS:
        raise ValueError('form must be one of {}, got {!r}'.format(
            ', '.join(FORMS), form))
    if early_exit and form == 'portable':
        answer = _level_portable(b, nodes, IMAGES, 0, stages, heads,
                                 thresholds)
        label, exit_ = (b.node(nodes, 'Gather', [
            answer, b.constant(nodes, k, numpy.int64)], stem, axis=1)
            for k, stem in ((0, 'label'), (1, 'exit')))
    elif early_exit:
        label, exit_ = _level(b, nodes, IMAGES, 0, stages, heads, thresholds)
    else:  # the main path: every stage, then the final head
        h = IMAGES
        for n, stage in enumerate(stages):
            h = b.inline(nodes, stage, h, 's{}_'.format(n))
        logits = b.inline(nodes, heads[-1], h, 'h{}_'.format(len(heads) - 1))
        label, exit_, _ = _decide(b, nodes, logits, net.num_exits - 1, None)
    nodes.append(helper.make_node('Identity', [label], [LABEL]))
    nodes.append(helper.make_node('Identity', [exit_], [EXIT]))
    batch = 'batch' if form == 'batched' else 1
    inputs = [helper.make_tensor_value_info(
        IMAGES, onnx.TensorProto.FLOAT, [batch] + list(net.input_shape))]
    if thresholds:
        inputs.append(helper.make_tensor_value_info(
            THRESHOLDS, onnx.TensorProto.FLOAT, [net.num_exits - 1]))
    outputs = [helper.make_tensor_value_info(name, onnx.TensorProto.INT64,
                                             [batch])
               for name in (LABEL, EXIT)]
    graph = helper.make_graph(nodes, '{}_{}'.format(
        net.title, 'early_exit' if early_exit else 'main_path'), inputs,
        outputs, initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid('', OPSET)], producer_name='branchynet')
    model.ir_version = min(model.ir_version, 7)  # opset 11's IR version
    helper.set_model_props(model, {
        'network': net.title, 'num_exits': str(net.num_exits),
        'input_shape': json.dumps(list(net.input_shape)),
        'classes': str(_classes(net)),
        'kind': 'early_exit' if early_exit else 'main_path',
        'form': form,
        'branchynet_commit': str(environment.describe()['git_commit'])})
    onnx_graph.unique_node_names(model)
    onnx.checker.check_model(model)
    return model


def _classes(net):
    return int(net.heads[-1].layers()[-1].W.shape[0])


def export(net, target, sample=None, form='batched'):
    """Write ``net`` as one early-exit ONNX model (the module's contract).

    Args:
        net: a BranchyNet (on the CPU).
        target: a path or an open binary file.
        sample: an input batch to trace the stages with (default: zeros).
        form: ``'batched'`` (any batch: the samples that go on are
            gathered with ``NonZero`` and run on in an ``If``) or
            ``'portable'`` (one sample: an ``If`` on a scalar at each exit,
            no shape that depends on the data, for runtimes that cannot
            run the batched form, such as tract).

    Returns:
        The ``onnx.ModelProto``.
    """
    model = _model(net, sample, early_exit=True, form=form)
    with files.writing(target) as f:
        f.write(model.SerializeToString())
    return model


def export_main_path(net, target, sample=None):
    """Write the main network of ``net`` (the deployed baseline) as ONNX."""
    model = _model(net, sample, early_exit=False)
    with files.writing(target) as f:
        f.write(model.SerializeToString())
    return model


class EarlyExitSession:
    """An exported model run by ONNX Runtime on the CPU.

    Args:
        path: an ``.onnx`` file from :func:`export` or
            :func:`export_main_path` (or its bytes).
        threads: ONNX Runtime's intra-op threads (1: one core, as a batch-1
            deployment is timed here).

    Example:
        >>> session = EarlyExitSession('b_lenet_early_exit.onnx')
        >>> labels, exits = session.predict(images, [0.025])
    """

    def __init__(self, path, threads=1):
        import onnxruntime
        name = '<bytes>' if isinstance(path, bytes) else path
        if not isinstance(path, bytes) and not os.path.isfile(path):
            raise ValueError('{}: not a file (an .onnx model exported by '
                             'this project is expected)'.format(path))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = onnxruntime.InferenceSession(
                path, options, providers=['CPUExecutionProvider'])
        except Exception as e:  # onnxruntime's own error types
            raise ValueError('{}: ONNX Runtime cannot load it ({})'.format(
                name, str(e).splitlines()[0] if str(e) else type(e).__name__)
                ) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.network = meta['network']
            self.num_exits = int(meta['num_exits'])
            self.input_shape = tuple(json.loads(meta['input_shape']))
            self.kind = meta['kind']
            self.form = meta.get('form', 'batched')
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError('{}: not a model exported by branchynet.deploy '
                             '(its metadata lacks or garbles {})'.format(
                                 name, e)) from None
        types = {i.name: i.type for i in self.session.get_inputs()}
        self.takes_thresholds = THRESHOLDS in types
        # models exported before the comparison was float32 take float64
        # thresholds: fed the float32-rounded values, they decide alike
        self._threshold_dtype = numpy.float64 if types.get(
            THRESHOLDS) == 'tensor(double)' else numpy.float32
        self._checked = (None, None)

    def predict(self, x, thresholds=None):
        """Labels and exits of a batch, as ``BranchyNet.predict`` gives them.

        Args:
            x: ``(batch,) + input_shape`` images (cast to float32).
            thresholds: the entropy threshold of each non-final exit (an
                early-exit model needs them; a main-path model takes none).

        Returns:
            ``(labels, exits)``: int64 arrays of shape ``(batch,)``.

        Raises:
            ValueError: a wrong shape, or thresholds of the wrong length or
                value (checked as ``BranchyNet.predict`` checks them).
        """
        x = numpy.ascontiguousarray(x, dtype=numpy.float32)
        if x.ndim != len(self.input_shape) + 1 or \
                tuple(x.shape[1:]) != self.input_shape:
            raise ValueError('{} takes images of shape (batch,) + {}, got {}'
                             .format(self.network, self.input_shape, x.shape))
        if len(x) == 0:  # as BranchyNet.predict; the graph needs a sample
            return (numpy.zeros(0, numpy.int64),) * 2
        if not numpy.isfinite(x).all():
            raise ValueError('{}: the images hold NaN or infinite values; no '
                             'label of theirs would mean anything'.format(
                                 self.network))
        feed = {IMAGES: x}
        if self.takes_thresholds:
            feed[THRESHOLDS] = self._thresholds(thresholds)
        elif thresholds is not None:
            raise ValueError('a main-path model takes no thresholds')
        if self.form == 'portable':  # one sample a call
            answers = [self.session.run([LABEL, EXIT], dict(
                feed, **{IMAGES: x[i:i + 1]})) for i in range(len(x))]
            return tuple(numpy.concatenate(a) for a in zip(*answers))
        label, exit_ = self.session.run([LABEL, EXIT], feed)
        return label, exit_

    def _thresholds(self, thresholds):
        """The thresholds as the model's input, checked once per vector."""
        key = tuple(getattr(thresholds, 'values', numpy.atleast_1d(
            thresholds) if thresholds is not None else ()))
        if key != self._checked[0] or thresholds is None:
            self._checked = (key, threshold_feed(
                thresholds, self.num_exits, self.network,
                self._threshold_dtype))
        return self._checked[1]


def threshold_feed(thresholds, num_exits, network, dtype=numpy.float32):
    """``thresholds`` as an early-exit model's ``thresholds`` input: one
    float32-rounded value per non-final exit, checked as
    ``BranchyNet.predict`` checks them.

    Raises:
        ValueError: none given, a scalar, or values of the wrong length or
            value (or an :class:`EntropyThresholds` for another number of
            exits).
    """
    if thresholds is None:
        raise ValueError('an early-exit model needs thresholds')
    if isinstance(thresholds, EntropyThresholds):
        if thresholds.num_exits != num_exits:
            raise ValueError('{} has {} exits; these thresholds are for '
                             '{}'.format(network, num_exits,
                                         thresholds.num_exits))
        rule = thresholds
    elif numpy.ndim(thresholds) != 1:
        raise ValueError('thresholds: one value per non-final exit of {} '
                         '({}), got {!r}'.format(network, num_exits - 1,
                                                 thresholds))
    else:
        rule = EntropyThresholds(thresholds, num_exits)
    return rule.compared.astype(dtype)
