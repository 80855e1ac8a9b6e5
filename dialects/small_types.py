"""The 8-, 4- and 2-bit element types: their encodings, and ONNX Cast's numpy semantics on them.

Tensors of these types hold one byte per element, the byte numpy's ml_dtypes arrays hold (a
4-bit integer is its low nibble, zero-extended; see docs/architecture.md, "Element types").
Only casts and (de)quantization compute on them: the cast kernels decode a byte to float32 (or
an 8-bit integer) and encode a float back with integer arithmetic
(passes/conversion/small_type_casts.py), from the formats below. `cast_array` is the same
conversion in numpy, for compile-time folding; it follows onnx.reference's Cast.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
from xdsl.dialects.builtin import (
    Float4E2M1FNType,
    Float8E4M3FNType,
    Float8E4M3FNUZType,
    Float8E5M2FNUZType,
    Float8E5M2Type,
    Float8E8M0FNUType,
    IntegerType,
)
from xdsl.ir import Attribute

from ember.dialects.dtypes import is_unsigned


@dataclass(frozen=True)
class FloatFormat:
    """A sign-exponent-mantissa float narrower than float16, stored in the low bits of a byte.

    `specials` says which codes are not finite numbers:
    - "ieee": exponent all ones is inf (mantissa 0) or NaN (float8e5m2);
    - "all_ones": only S.1111.111 is NaN, there is no inf (float8e4m3fn);
    - "negative_zero": the code of -0 (0x80) is the only NaN, there is no inf and no -0 (FNUZ);
    - "none": every code is a number (float4e2m1): NaN and inf cannot be represented.
    """

    exponent_bits: int
    mantissa_bits: int
    bias: int
    specials: str

    @property
    def sign_shift(self) -> int:
        return self.exponent_bits + self.mantissa_bits

    @property
    def max_magnitude(self) -> int:
        """Code (without sign) of the largest finite value."""
        all_ones = (1 << self.sign_shift) - 1
        if self.specials == "ieee":
            return all_ones - (1 << self.mantissa_bits)
        if self.specials == "all_ones":
            return all_ones - 1
        return all_ones

    @property
    def inf_magnitude(self) -> int:
        """Code (without sign) of inf ("ieee" formats only)."""
        return ((1 << self.exponent_bits) - 1) << self.mantissa_bits


# float8e8m0 (an exponent only: 2^(code - 127), 0xFF is NaN) has its own encoder and decoder.
E8M0 = "e8m0"

FLOAT_FORMATS: dict[type[Attribute], FloatFormat | str] = {
    Float8E4M3FNType: FloatFormat(4, 3, 7, "all_ones"),
    Float8E4M3FNUZType: FloatFormat(4, 3, 8, "negative_zero"),
    Float8E5M2Type: FloatFormat(5, 2, 15, "ieee"),
    Float8E5M2FNUZType: FloatFormat(5, 2, 16, "negative_zero"),
    Float4E2M1FNType: FloatFormat(2, 1, 1, "none"),
    Float8E8M0FNUType: E8M0,
}

# The float8 types whose Cast has a `saturate` attribute (ONNX: it applies to them only).
SATURABLE = (Float8E4M3FNType, Float8E4M3FNUZType, Float8E5M2Type, Float8E5M2FNUZType)

ROUND_MODES = ("up", "nearest", "down")


def float_format(element_type: Attribute) -> FloatFormat | str | None:
    """The format of an 8- or 4-bit float type (E8M0 for float8e8m0), else None."""
    return FLOAT_FORMATS.get(type(element_type))


def narrow_int(element_type: Attribute) -> tuple[int, bool] | None:
    """(bits, signed) of a 4- or 2-bit integer type, else None."""
    if isinstance(element_type, IntegerType) and element_type.width.data in (2, 4):
        return element_type.width.data, not is_unsigned(element_type)
    return None


# ---------------------------------------------------------------------------------------------
# numpy (compile-time folding)

# Their numpy dtypes (ml_dtypes'), for the frontend and for folding.
FLOAT8_DTYPES = frozenset(
    np.dtype(t)
    for t in (
        ml_dtypes.float8_e4m3fn,
        ml_dtypes.float8_e4m3fnuz,
        ml_dtypes.float8_e5m2,
        ml_dtypes.float8_e5m2fnuz,
    )
)
FLOAT4_DTYPE = np.dtype(ml_dtypes.float4_e2m1fn)
E8M0_DTYPE = np.dtype(ml_dtypes.float8_e8m0fnu)
SMALL_FLOAT_DTYPES = FLOAT8_DTYPES | {FLOAT4_DTYPE, E8M0_DTYPE}
NARROW_INT_DTYPES = frozenset(
    np.dtype(t) for t in (ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2)
)


def _widened(x: np.ndarray) -> np.ndarray:
    """`x` in a numpy-native type holding it exactly (small floats: float32; narrow ints:
    int64): ml_dtypes has no casts between some pairs of its types."""
    if x.dtype in SMALL_FLOAT_DTYPES:
        return x.astype(np.float32)
    if x.dtype in NARROW_INT_DTYPES:
        return x.astype(np.int64)
    return x


def to_e8m0(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    """float8e8m0 codes of `x` (read as float32): the exponent, rounded up / to nearest /
    down by the mantissa (ONNX Cast-24; onnx.numpy_helper.to_float8e8m0)."""
    bits = np.asarray(_widened(x), dtype=np.float32).view(np.uint32)
    exponent = ((bits >> 23) & 0xFF).astype(np.uint16)
    if round_mode == "up":
        round_up = (bits & 0x7FFFFF) != 0
    elif round_mode == "nearest":
        guard, rest = (bits & 0x400000) != 0, (bits & 0x200000) != 0
        sticky = (bits & 0x1FFFFF) != 0
        round_up = guard & (rest | sticky | (exponent > 0))
    else:
        round_up = np.zeros(bits.shape, bool)
    if saturate:
        round_up &= exponent != 0xFE
    codes = np.where(exponent == 0xFF, 0xFF, exponent + round_up).astype(np.uint8)
    return codes.view(ml_dtypes.float8_e8m0fnu)


def cast_array(
    x: np.ndarray, dtype: np.dtype, saturate: bool = True, round_mode: str = "up"
) -> np.ndarray:
    """ONNX Cast of `x` to `dtype` in numpy, with onnx.reference's semantics for the small
    types: float8 saturates to +-max (inf too) unless saturate=0; float8e8m0 rounds by
    `round_mode`; everything else is ml_dtypes' conversion (round half to even; a float to
    int4 truncates and wraps)."""
    dtype = np.dtype(dtype)
    if dtype == E8M0_DTYPE:
        return to_e8m0(x, saturate, round_mode)
    small = SMALL_FLOAT_DTYPES | NARROW_INT_DTYPES
    if dtype not in small and x.dtype not in small:
        return x.astype(dtype)
    x = _widened(x)
    if dtype in FLOAT8_DTYPES and saturate:
        info = ml_dtypes.finfo(dtype)
        x = np.clip(x.astype(np.float64) if x.dtype.kind in "iub" else x, info.min, info.max)
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(dtype)
