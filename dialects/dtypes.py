"""One mapping between numpy dtypes and xDSL element types (ONNX's element types: frontend/dtypes.py)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
from xdsl.dialects.builtin import (
    BFloat16Type,
    Float16Type,
    Float32Type,
    Float64Type,
    IntegerType,
    Signedness,
    bf16,
    f16,
    f32,
    f64,
    i1,
    i8,
    i16,
    i32,
    i64,
)
from xdsl.ir import Attribute

# Unsigned ints are carried as signless integers of the same width plus this table's dtype.
_NUMPY_TO_XDSL: dict[np.dtype, Attribute] = {
    np.dtype(np.float32): f32,
    np.dtype(np.float64): f64,
    np.dtype(np.float16): f16,
    np.dtype(ml_dtypes.bfloat16): bf16,
    np.dtype(np.int64): i64,
    np.dtype(np.int32): i32,
    np.dtype(np.int16): i16,
    np.dtype(np.int8): i8,
    np.dtype(np.uint8): IntegerType(8, Signedness.UNSIGNED),
    np.dtype(np.uint16): IntegerType(16, Signedness.UNSIGNED),
    np.dtype(np.uint32): IntegerType(32, Signedness.UNSIGNED),
    np.dtype(np.uint64): IntegerType(64, Signedness.UNSIGNED),
    np.dtype(np.bool_): i1,
}
_XDSL_TO_NUMPY: dict[Attribute, np.dtype] = {v: k for k, v in _NUMPY_TO_XDSL.items()}


def element_type_for(dtype: np.dtype | type) -> Attribute:
    """xDSL element type of a numpy dtype."""
    try:
        return _NUMPY_TO_XDSL[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"element type {np.dtype(dtype)} is not supported") from None


def numpy_dtype_for(element_type: Attribute) -> np.dtype:
    """numpy dtype of an xDSL element type."""
    try:
        return _XDSL_TO_NUMPY[element_type]
    except KeyError:
        raise TypeError(f"element type {element_type} has no numpy dtype") from None


FLOAT_TYPES = (Float16Type, BFloat16Type, Float32Type, Float64Type)


def is_unsigned(element_type: Attribute) -> bool:
    """True for the unsigned integer types the graph dialect carries (ui8 ... ui64)."""
    return isinstance(element_type, IntegerType) and (
        element_type.signedness.data == Signedness.UNSIGNED
    )


def signless(element_type: Attribute) -> Attribute:
    """The element type arith and memrefs use: unsigned integers lose their signedness there,
    and the ops that read them pick the unsigned variant (divui, cmpi ult, uitofp ...)."""
    if (
        isinstance(element_type, IntegerType)
        and element_type.signedness.data != Signedness.SIGNLESS
    ):
        return IntegerType(element_type.width.data)
    return element_type
