"""Make Chainer 7.8.1 importable on NumPy 2 and Python 3.12.

Chainer 7.8.1 (2020) is the last Chainer release and predates both. Two
things break, and both are handled here, once, before the package first
imports Chainer (``branchynet/__init__.py`` calls :func:`apply`):

1. ``numpy.sctypes`` was removed in NumPy 2.0. Chainer reads it when
   ``chainer.functions.array.as_strided`` is imported and in that function's
   backward pass. We restore the attribute with the NumPy 1.x contents.
2. Chainer's start-up check (``chainer._environment_check``) imports
   ``numpy.distutils`` (gone on Python 3.12) and ``pkg_resources`` (gone from
   setuptools >= 70 and absent from fresh 3.12 environments), only to warn
   about macOS BLAS builds and optional-dependency versions. We register an
   empty stand-in module before Chainer imports it, on every Python, so that
   start-up behaves the same everywhere. The one warning that goes missing is
   Chainer's "CuPy version may not be compatible" notice, which would fire
   for CuPy 13/14, the versions this project supports on purpose.

A third shim is applied on demand (:func:`apply_onnx`, by the port kit
before it imports ``onnx_chainer``, the ONNX exporter inside Chainer 7.8.1):
``onnx.mapping`` was removed from ``onnx`` (1.15 and later), and
``onnx_chainer`` imports it — failing with a misleading "ONNX is not
installed". A stand-in built from ``onnx._mapping`` provides the two tables
it reads.

Nothing else in this project works around Chainer's age. If Chainer was
imported before this module ran, only the NumPy attribute is restored.
"""
import sys
import types

import numpy

_CHECK_MODULE = 'chainer._environment_check'


def _numpy1_sctypes():
    return {
        'int': [numpy.int8, numpy.int16, numpy.int32, numpy.int64],
        'uint': [numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64],
        'float': [numpy.float16, numpy.float32, numpy.float64,
                  numpy.longdouble],
        'complex': [numpy.complex64, numpy.complex128, numpy.clongdouble],
        'others': [bool, object, bytes, str, numpy.void],
    }


def apply():
    """Install both shims; safe to call more than once."""
    if not hasattr(numpy, 'sctypes'):
        numpy.sctypes = _numpy1_sctypes()
    if 'chainer' not in sys.modules and _CHECK_MODULE not in sys.modules:
        stand_in = types.ModuleType(_CHECK_MODULE)
        stand_in.__doc__ = 'Empty stand-in installed by branchynet._compat.'
        stand_in.check = lambda: None
        sys.modules[_CHECK_MODULE] = stand_in


def apply_onnx():
    """Give ``onnx`` the ``onnx.mapping`` tables ``onnx_chainer`` reads.

    ``NP_TYPE_TO_TENSOR_TYPE`` (NumPy dtype -> ONNX tensor type) and
    ``STORAGE_TENSOR_TYPE_TO_FIELD`` (tensor type -> TensorProto field),
    as onnx 1.14 defined them. Safe to call more than once; does nothing
    when ``onnx.mapping`` exists.

    Raises:
        ImportError: ``onnx`` is not installed.
    """
    import onnx
    if hasattr(onnx, 'mapping') or 'onnx.mapping' in sys.modules:
        return
    from onnx import TensorProto, _mapping
    stand_in = types.ModuleType('onnx.mapping')
    stand_in.__doc__ = 'Stand-in installed by branchynet._compat.apply_onnx.'
    by_numpy = {}
    for tensor_type in sorted(_mapping.TENSOR_TYPE_MAP):
        np_dtype = _mapping.TENSOR_TYPE_MAP[tensor_type].np_dtype
        by_numpy.setdefault(numpy.dtype(np_dtype), tensor_type)
    stand_in.NP_TYPE_TO_TENSOR_TYPE = by_numpy
    stand_in.TENSOR_TYPE_TO_NP_TYPE = {
        t: numpy.dtype(m.np_dtype) for t, m in _mapping.TENSOR_TYPE_MAP.items()}
    stand_in.STORAGE_TENSOR_TYPE_TO_FIELD = {
        TensorProto.FLOAT: 'float_data', TensorProto.INT32: 'int32_data',
        TensorProto.INT64: 'int64_data', TensorProto.UINT8: 'int32_data',
        TensorProto.UINT16: 'int32_data', TensorProto.DOUBLE: 'double_data',
        TensorProto.COMPLEX64: 'float_data',
        TensorProto.COMPLEX128: 'double_data',
        TensorProto.UINT32: 'uint64_data', TensorProto.UINT64: 'uint64_data',
        TensorProto.STRING: 'string_data', TensorProto.BOOL: 'int32_data'}
    sys.modules['onnx.mapping'] = stand_in
    onnx.mapping = stand_in

