"""ONNX element types as numpy dtypes: the ones ember has tensors for (see dialects/dtypes.py)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import TensorProto

_ONNX_TO_NUMPY: dict[int, np.dtype] = {
    TensorProto.FLOAT: np.dtype(np.float32),
    TensorProto.DOUBLE: np.dtype(np.float64),
    TensorProto.FLOAT16: np.dtype(np.float16),
    TensorProto.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    TensorProto.INT64: np.dtype(np.int64),
    TensorProto.INT32: np.dtype(np.int32),
    TensorProto.INT16: np.dtype(np.int16),
    TensorProto.INT8: np.dtype(np.int8),
    TensorProto.UINT8: np.dtype(np.uint8),
    TensorProto.UINT16: np.dtype(np.uint16),
    TensorProto.UINT32: np.dtype(np.uint32),
    TensorProto.UINT64: np.dtype(np.uint64),
    TensorProto.BOOL: np.dtype(np.bool_),
}
# 8-, 4- and 2-bit types (docs/architecture.md, "Element types"): ml_dtypes' numpy types, one
# byte per element, as onnx.numpy_helper.to_array and onnx.reference give them. Looked up by
# name: onnx releases before 1.19 lack some of the enums.
_SMALL_TYPES = {
    "FLOAT8E4M3FN": ml_dtypes.float8_e4m3fn,
    "FLOAT8E4M3FNUZ": ml_dtypes.float8_e4m3fnuz,
    "FLOAT8E5M2": ml_dtypes.float8_e5m2,
    "FLOAT8E5M2FNUZ": ml_dtypes.float8_e5m2fnuz,
    "FLOAT8E8M0": ml_dtypes.float8_e8m0fnu,
    "FLOAT4E2M1": ml_dtypes.float4_e2m1fn,
    "INT4": ml_dtypes.int4,
    "UINT4": ml_dtypes.uint4,
    "INT2": ml_dtypes.int2,
    "UINT2": ml_dtypes.uint2,
}
_ONNX_TO_NUMPY.update(
    {
        getattr(TensorProto, name): np.dtype(numpy_type)
        for name, numpy_type in _SMALL_TYPES.items()
        if hasattr(TensorProto, name)
    }
)


def numpy_dtype_for_onnx(elem_type: int) -> np.dtype:
    """numpy dtype of an ONNX TensorProto element type."""
    try:
        return _ONNX_TO_NUMPY[elem_type]
    except KeyError:
        name = TensorProto.DataType.Name(elem_type)
        raise TypeError(f"ONNX element type {name} is not supported") from None
