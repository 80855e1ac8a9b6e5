"""Scalar bodies of casts from and to the 8-, 4- and 2-bit types, in integer arithmetic.

Below the graph dialect a tensor of one of these types is bytes (dialects/dtypes.py STORAGE);
the graph types of the cast's operand and result say what the bytes mean (formats:
dialects/small_types.py). A cast decodes the source byte to float32 (a small float: exact) or to
an 8-bit integer (int4/int2: sign- or zero-extended), converts that with the ordinary cast
(`convert`, from elementwise_bodies), and encodes into the target's byte:

- float -> float8/float4: round half to even on the float32 bits, subnormals included;
  overflow saturates to +-max or becomes inf/NaN (saturate=0) as the format allows; NaN -> the
  format's NaN (float4e2m1 has none: ml_dtypes' code, the zero of the opposite sign, as
  onnx.reference); FNUZ has no -0. Like ml_dtypes, float64 and integers are rounded to
  float32 first (so twice).
- float -> float8e8m0: the float32 exponent, rounded up/nearest/down by the mantissa (Cast-24).
- float -> int4/int2: truncated toward zero through int32 and wrapped (ml_dtypes); NaN and
  magnitudes >= 2^31 give 0, as ml_dtypes does on x86.
- integer -> int4/int2: the low bits (wrapping).
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.dialects import arith
from xdsl.dialects.builtin import (
    AnyFloat,
    FloatAttr,
    IntegerAttr,
    f32,
    f64,
    i1,
    i8,
    i32,
)
from xdsl.ir import Attribute, Operation, SSAValue

from ember.dialects.dtypes import STORAGE, is_unsigned, signless
from ember.dialects.small_types import E8M0, FloatFormat, float_format, narrow_int

# (value, from_unsigned, to_unsigned, target type, ops) -> value: the cast between ordinary
# types (float, integer, bool) that the small-type conversions wrap.
Convert = Callable[[SSAValue, bool, bool, Attribute, list[Operation]], SSAValue]


class _Body:
    """Appends scalar arith ops to a body's op list."""

    def __init__(self, ops: list[Operation]) -> None:
        self.ops = ops

    def emit(self, op: Operation) -> SSAValue:
        self.ops.append(op)
        return op.results[0]

    def int(self, value: int, type: Attribute) -> SSAValue:
        return self.emit(arith.ConstantOp(IntegerAttr(value, type)))  # type: ignore[arg-type]

    def float(self, value: float, type: Attribute) -> SSAValue:
        return self.emit(arith.ConstantOp(FloatAttr(value, type)))  # type: ignore[arg-type]

    def cmp(self, lhs: SSAValue, predicate: str, rhs: SSAValue | int) -> SSAValue:
        if isinstance(rhs, int):
            rhs = self.int(rhs, lhs.type)
        return self.emit(arith.CmpiOp(lhs, rhs, predicate))

    def select(self, cond: SSAValue, a: SSAValue | int, b: SSAValue | int) -> SSAValue:
        type = b.type if isinstance(b, SSAValue) else a.type  # type: ignore[union-attr]
        a = self.int(a, type) if isinstance(a, int) else a
        b = self.int(b, type) if isinstance(b, int) else b
        return self.emit(arith.SelectOp(cond, a, b))

    def binary(self, op_type: type, lhs: SSAValue, rhs: SSAValue | int) -> SSAValue:
        if isinstance(rhs, int):
            rhs = self.int(rhs, lhs.type)
        return self.emit(op_type(lhs, rhs))

    def and_(self, lhs: SSAValue, rhs: SSAValue | int) -> SSAValue:
        return self.binary(arith.AndIOp, lhs, rhs)

    def or_(self, lhs: SSAValue, rhs: SSAValue | int) -> SSAValue:
        return self.binary(arith.OrIOp, lhs, rhs)

    def shl(self, lhs: SSAValue, rhs: SSAValue | int) -> SSAValue:
        return self.binary(arith.ShLIOp, lhs, rhs)

    def shr(self, lhs: SSAValue, rhs: SSAValue | int) -> SSAValue:
        return self.binary(arith.ShRUIOp, lhs, rhs)

    def add(self, lhs: SSAValue, rhs: SSAValue | int) -> SSAValue:
        return self.binary(arith.AddiOp, lhs, rhs)

    def sub(self, lhs: SSAValue, rhs: SSAValue | int) -> SSAValue:
        return self.binary(arith.SubiOp, lhs, rhs)


# -- decoding ----------------------------------------------------------------------------------


def _decode_e8m0(b: _Body, code: SSAValue) -> SSAValue:
    """2^(code - 127) as float32: the code is the float32 exponent field; 0 is the float32
    subnormal 2^-127, 0xFF NaN."""
    bits = b.shl(code, 23)
    bits = b.select(b.cmp(code, "eq", 0), 0x00400000, bits)
    bits = b.select(b.cmp(code, "eq", 0xFF), 0x7FC00000, bits)
    return b.emit(arith.BitcastOp(bits, f32))


def _decode_float(b: _Body, code: SSAValue, fmt: FloatFormat) -> SSAValue:
    """The float32 value of a small float's code (i32): exact, as sig * 2^exponent."""
    m, magnitude_bits = fmt.mantissa_bits, fmt.sign_shift
    magnitude = b.and_(code, (1 << magnitude_bits) - 1)
    exponent = b.shr(magnitude, m)
    mantissa = b.and_(magnitude, (1 << m) - 1)
    subnormal = b.cmp(exponent, "eq", 0)
    significand = b.select(subnormal, mantissa, b.or_(mantissa, 1 << m))
    scale_exponent = b.select(subnormal, 1, exponent)  # subnormals share the least exponent
    # 2^(exponent - bias - m) as float32 bits: always a normal float32 for these formats.
    scale = b.shl(b.add(scale_exponent, 127 - fmt.bias - m), 23)
    value = b.emit(
        arith.MulfOp(b.emit(arith.UIToFPOp(significand, f32)), b.emit(arith.BitcastOp(scale, f32)))
    )
    sign = b.shl(b.and_(b.shr(code, magnitude_bits), 1), 31)
    bits = b.or_(b.emit(arith.BitcastOp(value, i32)), sign)
    quiet_nan = b.or_(sign, 0x7FC00000)
    if fmt.specials == "ieee":
        special = b.cmp(exponent, "eq", (1 << fmt.exponent_bits) - 1)
        infinite = b.or_(sign, 0x7F800000)
        bits = b.select(special, b.select(b.cmp(mantissa, "eq", 0), infinite, quiet_nan), bits)
    elif fmt.specials == "all_ones":
        bits = b.select(b.cmp(magnitude, "eq", (1 << magnitude_bits) - 1), quiet_nan, bits)
    elif fmt.specials == "negative_zero":
        bits = b.select(b.cmp(code, "eq", 1 << magnitude_bits), quiet_nan, bits)  # -NaN
    return b.emit(arith.BitcastOp(bits, f32))


def _widen_narrow_int(b: _Body, byte: SSAValue, bits: int, signed: bool) -> SSAValue:
    """An int4/int2 byte as the int8 (signed) or uint8 value it holds."""
    if signed:
        spare = 8 - bits
        return b.binary(arith.ShRSIOp, b.shl(byte, spare), spare)
    return b.and_(byte, (1 << bits) - 1)


# -- encoding ----------------------------------------------------------------------------------


def _round_shift(b: _Body, value: SSAValue, shift: SSAValue | int) -> SSAValue:
    """value / 2^shift rounded half to even (unsigned value, 1 <= shift < its width)."""
    half_minus_one = b.sub(b.shl(b.int(1, value.type), shift), 1)
    half_minus_one = b.binary(arith.ShRUIOp, half_minus_one, 1)
    odd = b.and_(b.shr(value, shift), 1)
    return b.shr(b.add(b.add(value, half_minus_one), odd), shift)


def _encode_float(b: _Body, value: SSAValue, fmt: FloatFormat, saturate: bool) -> SSAValue:
    """The code (i8) of a float32 value, rounded half to even."""
    int_type, width, source_m, source_bias = i32, 32, 23, 127
    m = fmt.mantissa_bits
    bits = b.emit(arith.BitcastOp(value, int_type))
    sign = b.shr(bits, width - 1)
    magnitude = b.and_(bits, (1 << (width - 1)) - 1)
    infinite_bits = ((1 << (width - 1 - source_m)) - 1) << source_m
    is_nan = b.cmp(magnitude, "ugt", infinite_bits)
    is_inf = b.cmp(magnitude, "eq", infinite_bits)
    exponent = b.shr(magnitude, source_m)
    # The source's biased exponent of the target's least normal value.
    least_normal = source_bias + 1 - fmt.bias
    normal = b.cmp(exponent, "uge", least_normal)
    # Normal: rebias the exponent in place and drop the extra mantissa bits.
    rebased = b.sub(magnitude, (source_bias - fmt.bias) << source_m)
    as_normal = _round_shift(b, rebased, source_m - m)
    # Subnormal (and zero): the significand with its implicit bit, shifted by how far the
    # exponent is below the least normal one. Capped at source_m + 2, which leaves less than
    # a quarter of the least subnormal (rounds to 0) and keeps the shift below the width.
    significand = b.or_(b.and_(magnitude, (1 << source_m) - 1), 1 << source_m)
    shift = b.sub(b.int(source_m - m + least_normal, int_type), exponent)
    shift = b.binary(arith.MinUIOp, shift, source_m + 2)
    as_subnormal = _round_shift(b, significand, shift)
    code = b.select(normal, as_normal, as_subnormal)
    overflow = b.cmp(code, "ugt", fmt.max_magnitude)
    if saturate or fmt.specials == "none":
        code = b.select(b.or_(overflow, is_inf), fmt.max_magnitude, code)
    elif fmt.specials == "ieee":
        code = b.select(b.or_(overflow, is_inf), fmt.inf_magnitude, code)
    signed = b.or_(code, b.shl(sign, fmt.sign_shift))
    if fmt.specials == "negative_zero":
        signed = b.select(b.cmp(code, "eq", 0), 0, signed)  # no -0: its code is NaN
    if fmt.specials == "ieee":
        nan = b.or_(b.shl(sign, fmt.sign_shift), fmt.inf_magnitude | (1 << (m - 1)))
    elif fmt.specials == "all_ones":
        nan = b.or_(b.shl(sign, fmt.sign_shift), (1 << fmt.sign_shift) - 1)
    elif fmt.specials == "negative_zero":
        nan = b.int(1 << fmt.sign_shift, int_type)
    else:  # no NaN code: ml_dtypes gives the zero of the other sign
        nan = b.shl(b.binary(arith.XOrIOp, sign, 1), fmt.sign_shift)
    becomes_nan = is_nan
    if not saturate and fmt.specials in ("all_ones", "negative_zero"):
        becomes_nan = b.or_(becomes_nan, b.or_(overflow, is_inf))
    signed = b.select(becomes_nan, nan, signed)
    return b.emit(arith.TruncIOp(signed, i8))


def _encode_e8m0(b: _Body, value: SSAValue, saturate: bool, round_mode: str) -> SSAValue:
    """The float8e8m0 code (i8) of a float32: its exponent field, rounded by the mantissa as
    ONNX Cast-24's round_mode says (onnx.numpy_helper.to_float8e8m0)."""
    bits = b.emit(arith.BitcastOp(value, i32))
    exponent = b.and_(b.shr(bits, 23), 0xFF)
    if round_mode == "up":
        round_up = b.cmp(b.and_(bits, 0x7FFFFF), "ne", 0)
    elif round_mode == "nearest":
        guard = b.cmp(b.and_(bits, 0x400000), "ne", 0)
        rest = b.cmp(b.and_(bits, 0x200000), "ne", 0)
        sticky = b.cmp(b.and_(bits, 0x1FFFFF), "ne", 0)
        odd = b.cmp(exponent, "ne", 0)  # onnx's rule: a normal exponent breaks ties upwards
        round_up = b.and_(guard, b.or_(rest, b.or_(sticky, odd)))
    else:
        round_up = b.int(0, i1)
    if saturate:
        round_up = b.and_(round_up, b.cmp(exponent, "ne", 0xFE))
    code = b.select(round_up, b.add(exponent, 1), exponent)
    code = b.select(b.cmp(exponent, "eq", 0xFF), 0xFF, code)
    return b.emit(arith.TruncIOp(code, i8))


def _encode_narrow_int(b: _Body, value: SSAValue, bits: int, convert: Convert) -> SSAValue:
    """The int4/int2 byte (the low `bits` bits) of an integer or float value."""
    if isinstance(value.type, AnyFloat):
        if value.type not in (f32, f64):
            value = convert(value, False, False, f32, b.ops)
        # fptosi is undefined outside int32; ml_dtypes (x86's cvttss2si) gives 0x80000000,
        # whose low bits are 0, for NaN and those.
        limit = b.float(2.0**31, value.type)
        inside = b.emit(arith.CmpfOp(value, limit, "olt"))
        inside = b.and_(inside, b.emit(arith.CmpfOp(value, b.emit(arith.NegfOp(limit)), "ogt")))
        value = b.emit(arith.SelectOp(inside, value, b.float(0.0, value.type)))
        value = b.emit(arith.FPToSIOp(value, i32))
    if value.type != i8:
        value = convert(value, False, False, i8, b.ops)
    return b.and_(value, (1 << bits) - 1)


# -- the cast ----------------------------------------------------------------------------------


def cast(
    value: SSAValue,
    source: Attribute,
    target: Attribute,
    saturate: bool,
    round_mode: str,
    convert: Convert,
    ops: list[Operation],
) -> SSAValue:
    """Scalar cast of `value` (the signless form of graph type `source`) to graph type
    `target`, where one of the two (or both) is an 8-, 4- or 2-bit type."""
    b = _Body(ops)
    from_unsigned = is_unsigned(source) or source == i1
    source_format, source_int = float_format(source), narrow_int(source)
    if source_format is not None:
        code = b.emit(arith.ExtUIOp(value, i32))
        value = (
            _decode_e8m0(b, code)
            if source_format == E8M0
            else _decode_float(b, code, source_format)  # type: ignore[arg-type]
        )
        from_unsigned = False
    elif source_int is not None:
        value = _widen_narrow_int(b, value, *source_int)
        from_unsigned = not source_int[1]
    target_format, target_int = float_format(target), narrow_int(target)
    if target_format == E8M0:
        value = convert(value, from_unsigned, False, f32, ops)
        return _encode_e8m0(b, value, saturate, round_mode)
    if target_format is not None:
        # Through float32, as ml_dtypes (onnx.reference) converts: exact from float16 and
        # bfloat16, rounded once more from float64 and wide integers.
        value = convert(value, from_unsigned, False, f32, ops)
        return _encode_float(b, value, target_format, saturate)  # type: ignore[arg-type]
    if target_int is not None:
        if not isinstance(value.type, AnyFloat) and value.type != STORAGE:
            value = convert(value, from_unsigned, False, i32, ops)
        return _encode_narrow_int(b, value, target_int[0], convert)
    if value.type == signless(target):
        return value
    return convert(value, from_unsigned, is_unsigned(target), signless(target), ops)
