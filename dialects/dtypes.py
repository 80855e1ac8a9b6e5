"""One mapping between numpy dtypes and xDSL element types (ONNX's element types: frontend/dtypes.py)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
from xdsl.dialects.builtin import (
    BFloat16Type,
    Float4E2M1FNType,
    Float8E4M3FNType,
    Float8E4M3FNUZType,
    Float8E5M2FNUZType,
    Float8E5M2Type,
    Float8E8M0FNUType,
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
    # The 8-, 4- and 2-bit types: tensors of them are one byte per element (the `STORAGE`
    # type below the graph dialect); only casts and quantize/dequantize compute on them.
    np.dtype(ml_dtypes.float8_e4m3fn): Float8E4M3FNType(),
    np.dtype(ml_dtypes.float8_e4m3fnuz): Float8E4M3FNUZType(),
    np.dtype(ml_dtypes.float8_e5m2): Float8E5M2Type(),
    np.dtype(ml_dtypes.float8_e5m2fnuz): Float8E5M2FNUZType(),
    np.dtype(ml_dtypes.float8_e8m0fnu): Float8E8M0FNUType(),
    np.dtype(ml_dtypes.float4_e2m1fn): Float4E2M1FNType(),
    np.dtype(ml_dtypes.int4): IntegerType(4),
    np.dtype(ml_dtypes.uint4): IntegerType(4, Signedness.UNSIGNED),
    np.dtype(ml_dtypes.int2): IntegerType(2),
    np.dtype(ml_dtypes.uint2): IntegerType(2, Signedness.UNSIGNED),
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
SMALL_FLOAT_TYPES = (
    Float8E4M3FNType,
    Float8E4M3FNUZType,
    Float8E5M2Type,
    Float8E5M2FNUZType,
    Float8E8M0FNUType,
    Float4E2M1FNType,
)
# The byte each element of an 8-, 4- or 2-bit type occupies in buffers and in arith.
STORAGE = i8


def is_small_type(element_type: Attribute) -> bool:
    """True for the 8-, 4- and 2-bit floats and the 4- and 2-bit integers: element types that
    are stored one byte per element and that only casts and (de)quantization compute on."""
    if isinstance(element_type, IntegerType):
        return element_type.width.data in (2, 4)
    return isinstance(element_type, SMALL_FLOAT_TYPES)


def is_unsigned(element_type: Attribute) -> bool:
    """True for the unsigned integer types the graph dialect carries (ui8 ... ui64)."""
    return isinstance(element_type, IntegerType) and (
        element_type.signedness.data == Signedness.UNSIGNED
    )


def signless(element_type: Attribute) -> Attribute:
    """The element type arith and memrefs use: unsigned integers lose their signedness there,
    and the ops that read them pick the unsigned variant (divui, cmpi ult, uitofp ...); the
    8-, 4- and 2-bit types are bytes (`STORAGE`), decoded by the casts that read them."""
    if is_small_type(element_type):
        return STORAGE
    if (
        isinstance(element_type, IntegerType)
        and element_type.signedness.data != Signedness.SIGNLESS
    ):
        return IntegerType(element_type.width.data)
    return element_type
