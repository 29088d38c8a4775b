"""The deployed models in four ONNX runtimes, behind one call.

:func:`load` opens an exported model (:mod:`branchynet.deploy`) in one of
:data:`RUNTIMES` and returns a runner whose ``predict(x, thresholds)``
gives ``(labels, exits)`` as :class:`~branchynet.deploy.EarlyExitSession`
does. Which runtime runs which form (PORTING.md lists what each form asks
of a runtime):

- ``onnxruntime``: both forms;
- ``reference``: ONNX's own reference evaluator (``onnx.reference``), both
  forms, with two operators replaced by the spec's definition: its
  ``LRN`` loops over the batch instead of the channels (onnx/onnx#7805,
  fixed upstream after onnx 1.23), and its opset-9 ``BatchNormalization``
  takes the schema's default momentum as training mode and normalises
  with the batch's statistics (onnx/onnx#8442); either would silently
  change B-AlexNet's or B-ResNet-110's answers;
- ``openvino``: both forms, with its inference precision pinned to f32 (on
  a CPU with bfloat16 support its default is bf16, which changed 36 of 2000
  B-AlexNet decisions);
- ``tract``: the portable form only (the batched form's ``NonZero``-shaped
  index inside an ``If`` has no shape tract can infer).

A runtime that is not installed is named by :func:`unavailable` with the
reason, so that tests can skip.
"""
import importlib
import importlib.metadata
import json

import chainer
import numpy

from branchynet import exit_rule, timing

from branchynet.deploy import (
    EXIT,
    IMAGES,
    LABEL,
    THRESHOLDS,
    EarlyExitSession,
    threshold_feed,
)
from branchynet.utils import markdown as md

RUNTIMES = ('onnxruntime', 'reference', 'openvino', 'tract')
MODULES = {'onnxruntime': 'onnxruntime', 'reference': 'onnx.reference',
           'openvino': 'openvino', 'tract': 'tract'}
# the forms each runtime runs
FORMS = {'onnxruntime': ('batched', 'portable'),
         'reference': ('batched', 'portable'),
         'openvino': ('batched', 'portable'), 'tract': ('portable',)}


def unavailable(name):
    """Why runtime ``name`` cannot run here, or ``None`` when it can."""
    try:
        importlib.import_module(MODULES[name])
    except ImportError as e:
        return '{} is not installed ({}); pip install -e ".[test]"'.format(
            name, e)
    return None


def version(name):
    """The installed version of runtime ``name`` (its package's)."""
    return importlib.metadata.version(MODULES[name].split('.')[0])


def _metadata(path):
    import onnx
    model = onnx.load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    return {'num_exits': int(meta['num_exits']),
            'input_shape': tuple(json.loads(meta['input_shape'])),
            'form': meta.get('form', 'batched'), 'kind': meta['kind']}


class _Runner:
    """What every runtime's runner shares: the thresholds' checks, the
    batch handling of the portable form (one sample a call)."""

    def __init__(self, path):
        meta = _metadata(path)
        self.path = path
        self.num_exits, self.form = meta['num_exits'], meta['form']
        self.takes_thresholds = meta['kind'] == 'early_exit' and \
            self.num_exits > 1

    def predict(self, x, thresholds=None):
        """``(labels, exits)`` of the images ``x`` (any batch)."""
        x = numpy.ascontiguousarray(x, numpy.float32)
        feed = {}
        if self.takes_thresholds:
            feed[THRESHOLDS] = threshold_feed(thresholds, self.num_exits,
                                              self.path)
        if self.form == 'portable':
            answers = [self._run(dict(feed, **{IMAGES: x[i:i + 1]}))
                       for i in range(len(x))]
            return tuple(numpy.concatenate(a) for a in zip(*answers))
        return self._run(dict(feed, **{IMAGES: x}))

    def _run(self, feed):
        raise NotImplementedError


class _OnnxRuntime(_Runner):
    def __init__(self, path):
        super().__init__(path)
        self.session = EarlyExitSession(path).session

    def _run(self, feed):
        return tuple(self.session.run([LABEL, EXIT], feed))


def _channel_lrn():
    """ONNX's LRN as its spec defines it, over the channels, for the
    reference evaluator (whose own loops over the batch: onnx#7805)."""
    from onnx.reference.op_run import OpRun

    class LRN(OpRun):
        def _run(self, x, alpha=None, beta=None, bias=None, size=None):
            square = numpy.zeros_like(x)
            below, above = (size - 1) // 2, size // 2 + 1
            channels = x.shape[1]
            for c in range(channels):
                window = x[:, max(0, c - below):min(channels, c + above)]
                square[:, c] = (window ** 2).sum(axis=1)
            return ((x / (bias + alpha / size * square) ** beta).astype(
                x.dtype),)
    return LRN


def _inference_batchnorm():
    """ONNX's opset-9 BatchNormalization with one output, as its spec
    defines it: the running statistics, not the batch's (onnx#8442)."""
    from onnx.reference.op_run import OpRun

    class BatchNormalization(OpRun):
        op_domain = ''

        def _run(self, x, scale, bias, mean, var, epsilon=None,
                 momentum=None, training_mode=None):
            shape = (1, -1) + (1,) * (x.ndim - 2)
            y = scale.reshape(shape) * (x - mean.reshape(shape)) / numpy.sqrt(
                var.reshape(shape) + epsilon) + bias.reshape(shape)
            return (y.astype(x.dtype),)
    return BatchNormalization


class _Reference(_Runner):
    def __init__(self, path):
        super().__init__(path)
        from onnx.reference import ReferenceEvaluator
        self.evaluator = ReferenceEvaluator(
            path, new_ops=[_channel_lrn(), _inference_batchnorm()])

    def _run(self, feed):
        return tuple(numpy.asarray(o, numpy.int64) for o in
                     self.evaluator.run([LABEL, EXIT], feed))


class _OpenVINO(_Runner):
    def __init__(self, path):
        super().__init__(path)
        import openvino
        core = openvino.Core()
        self.model = core.compile_model(path, 'CPU', {
            'INFERENCE_PRECISION_HINT': 'f32', 'INFERENCE_NUM_THREADS': 1})
        self.request = self.model.create_infer_request()

    def _run(self, feed):
        results = self.request.infer(feed)
        by_name = {port.get_any_name(): value
                   for port, value in results.items()}
        return (numpy.asarray(by_name[LABEL], numpy.int64),
                numpy.asarray(by_name[EXIT], numpy.int64))


class _Tract(_Runner):
    def __init__(self, path):
        super().__init__(path)
        if self.takes_thresholds and self.form != 'portable':
            raise ValueError('tract runs the portable form only (export '
                             'with form="portable"): {}'.format(path))
        import tract
        self.model = tract.onnx().load(path).into_model().into_runnable()
        self.inputs = [IMAGES] + ([THRESHOLDS] if self.takes_thresholds
                                  else [])

    def _run(self, feed):
        outputs = self.model.run([feed[name] for name in self.inputs])
        return tuple(numpy.asarray(o.to_numpy(), numpy.int64)
                     for o in outputs[:2])


_RUNNERS = {'onnxruntime': _OnnxRuntime, 'reference': _Reference,
            'openvino': _OpenVINO, 'tract': _Tract}


def load(name, path):
    """A runner of the model at ``path`` in runtime ``name``.

    Raises:
        ValueError: an unknown runtime, or a form the runtime cannot run.
        ImportError: the runtime is not installed.
    """
    if name not in _RUNNERS:
        raise ValueError('runtime must be one of {}, got {!r}'.format(
            ', '.join(RUNTIMES), name))
    return _RUNNERS[name](path)


def time_runtimes(models, samples, thresholds, names, repeats=3, warmup=10):
    """Batch-1 time of the deployed early exit and main path in each runtime.

    All the runtimes' models are timed in turns in one loop, so that their
    figures share the machine's state; each runtime's answers on the timed
    samples are compared with ONNX Runtime's.

    Args:
        models: paths by kind: ``'batched'`` and ``'portable'`` (the
            early-exit model in each form) and ``'main_path'``.
        samples: ``(1, ...)`` float32 arrays.
        thresholds: the threshold vector of the early exit.
        names: the runtimes to time (of :data:`RUNTIMES`); one that is not
            installed is reported with the reason, not timed.
        repeats, warmup: as :func:`branchynet.timing.time_in_turns`.

    Returns:
        ``{runtime: entry}``: ``form``, ``early_exit`` and ``main_path``
        (timing summaries, ms per sample), ``gain`` (main path over early
        exit, medians), ``exit_shares``, ``differences_from_onnxruntime``
        (samples whose label or exit differ); or ``{'unavailable': why}``.
    """
    results, runners = {}, []
    for name in names:
        why = unavailable(name)
        if why:
            results[name] = {'unavailable': why}
            continue
        form = FORMS[name][0]
        runners.append((name, form, load(name, models[form]),
                        load(name, models['main_path'])))
    functions = []
    for _, _, early, main in runners:
        functions += [lambda s, e=early: e.predict(s, thresholds),
                      lambda s, m=main: m.predict(s)]
    measured = timing.time_in_turns(functions, samples,
                                    chainer.get_device('@numpy'), repeats,
                                    warmup)
    x = numpy.concatenate(samples)
    expected = load('onnxruntime', models['batched']).predict(x, thresholds)
    for i, (name, form, early, _) in enumerate(runners):
        labels, exits = early.predict(x, thresholds)
        early_ms, main_ms = measured[2 * i], measured[2 * i + 1]
        results[name] = {
            'version': version(name),
            'form': form, 'early_exit': early_ms, 'main_path': main_ms,
            'gain': main_ms['median_ms'] / early_ms['median_ms'],
            'exit_shares': exit_rule.exit_shares(exits, early.num_exits),
            'differences_from_onnxruntime': int(numpy.sum(
                (labels != expected[0]) | (exits != expected[1])))}
    return results


def markdown(results):
    """One network's :func:`time_runtimes` as a Markdown table."""
    rows = []
    for name, entry in results.items():
        if 'unavailable' in entry:
            rows.append([name, '-', 'not installed: ' + entry['unavailable'],
                         '', '', '', ''])
            continue
        rows.append(['{} {}'.format(name, entry['version']), entry['form'],
                     '{:.3g}'.format(entry['early_exit']['median_ms']),
                     '{:.3g}'.format(entry['main_path']['median_ms']),
                     '{:.2f}x'.format(entry['gain']),
                     ', '.join('{:.1f}'.format(100 * s)
                               for s in entry['exit_shares']),
                     str(entry['differences_from_onnxruntime'])])
    return '\n'.join(md.table(
        ['runtime', 'form', 'early exit (ms)', 'main path (ms)', 'gain',
         'exits (%)', 'answers unlike ONNX Runtime'], rows))
