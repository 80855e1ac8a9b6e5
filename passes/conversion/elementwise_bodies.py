"""Scalar bodies of the elementwise graph ops, as arith/math ops in a `kernel.elementwise` region.

One table maps each elementwise graph op to the scalar computation it performs; bufferization
builds `kernel.elementwise` regions from it, and the kernel lowering vectorizes those regions.

Body values are signless (arith's rule): a builder reads the signedness of unsigned integers
from the graph op's operand types and picks the unsigned arith variant (divui, cmpi ult, ...).
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.dialects import arith, math
from xdsl.dialects.builtin import (
    AnyFloat,
    BFloat16Type,
    Float16Type,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    f32,
    f64,
)
from xdsl.ir import Attribute, Operation, SSAValue

from ember.dialects import graph
from ember.dialects.dtypes import is_small_type, is_unsigned, numpy_dtype_for
from ember.dialects.numpy_eval import clip_bounds
from ember.passes.conversion import small_type_casts

BodyBuilder = Callable[[Operation, list[SSAValue], Attribute, list[Operation]], SSAValue]


def _emit(ops: list[Operation], op: Operation) -> SSAValue:
    ops.append(op)
    return op.results[0]


def _const(ops: list[Operation], value: float, type: Attribute) -> SSAValue:
    if isinstance(type, AnyFloat):
        return _emit(ops, arith.ConstantOp(FloatAttr(value, type)))
    return _emit(ops, arith.ConstantOp(IntegerAttr(int(value), type)))  # type: ignore[arg-type]


def _is_float(type: Attribute) -> bool:
    return isinstance(type, AnyFloat)


def _unsigned(op: Operation) -> bool:
    """Whether the graph op reads unsigned integers (its first operand decides)."""
    return is_unsigned(graph.element_type_of(op.operands[0]))


def _binary(float_op: type | None, int_op: type | None, uint_op: type | None = None) -> BodyBuilder:
    def build(
        op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]
    ) -> SSAValue:
        if _is_float(args[0].type):
            chosen = float_op
        else:
            chosen = uint_op if uint_op is not None and _unsigned(op) else int_op
        if chosen is None:
            raise NotImplementedError(f"{op.name} on element type {args[0].type}")
        return _emit(ops, chosen(args[0], args[1]))

    return build


def _nonzero_divisor(args: list[SSAValue], ops: list[Operation]) -> SSAValue:
    """The divisor with 0 replaced by 1: an integer division by zero traps on x86, and a
    user's data must never kill the process (numpy gives 0 there; this gives x / 1 or 0)."""
    zero, one = _const(ops, 0, args[1].type), _const(ops, 1, args[1].type)
    is_zero = _emit(ops, arith.CmpiOp(args[1], zero, "eq"))
    return _emit(ops, arith.SelectOp(is_zero, one, args[1]))


def _div(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    if _is_float(out):
        return _emit(ops, arith.DivfOp(args[0], args[1]))
    divide = arith.DivUIOp if _unsigned(op) else arith.DivSIOp
    return _emit(ops, divide(args[0], _nonzero_divisor(args, ops)))


def _mod(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    x, y = args
    if _is_float(out):
        # fmod as x - trunc(x / y) * y, in f64 for narrower types so that the quotient's
        # rounding cannot push trunc() off by one (xdsl 0.74 has no arith.remf).
        if out.bitwidth < 64:  # type: ignore[attr-defined]
            x, y = (_emit(ops, arith.ExtFOp(v, f64)) for v in (x, y))
        q = _emit(ops, math.TruncOp(_emit(ops, arith.DivfOp(x, y))))
        r = _emit(ops, arith.SubfOp(x, _emit(ops, arith.MulfOp(q, y))))
        # fmod(x, +-inf) = x for a finite x, where the formula computes x - 0 * inf = NaN
        # (fmod(+-inf, y) stays NaN).
        inf = _const(ops, float("inf"), x.type)
        infinite = _emit(ops, arith.CmpfOp(_emit(ops, math.AbsFOp(y)), inf, "oeq"))
        finite = _emit(ops, arith.CmpfOp(_emit(ops, math.AbsFOp(x)), inf, "olt"))
        keep_x = _emit(ops, arith.AndIOp(infinite, finite))
        r = _emit(ops, arith.SelectOp(keep_x, x, r))
        if not op.fmod.value.data:  # type: ignore[attr-defined]
            r = _divisor_sign(r, y, ops, float_type=True)
        return r if r.type == out else _emit(ops, arith.TruncFOp(r, out))
    y = _nonzero_divisor(args, ops)
    if _unsigned(op):
        return _emit(ops, arith.RemUIOp(x, y))
    r = _emit(ops, arith.RemSIOp(x, y))
    return r if op.fmod.value.data else _divisor_sign(r, y, ops, float_type=False)  # type: ignore[attr-defined]


def _divisor_sign(r: SSAValue, y: SSAValue, ops: list[Operation], float_type: bool) -> SSAValue:
    """Python's %: a nonzero remainder r of a C-style fmod takes the divisor's sign."""
    zero = _const(ops, 0, r.type)

    def compare(a: SSAValue, predicate: str) -> SSAValue:
        if float_type:
            return _emit(ops, arith.CmpfOp(a, zero, {"slt": "olt", "ne": "une"}[predicate]))
        return _emit(ops, arith.CmpiOp(a, zero, predicate))

    signs_differ = _emit(ops, arith.XOrIOp(compare(r, "slt"), compare(y, "slt")))
    fix = _emit(ops, arith.AndIOp(signs_differ, compare(r, "ne")))
    add = arith.AddfOp if float_type else arith.AddiOp
    return _emit(ops, arith.SelectOp(fix, _emit(ops, add(r, y)), r))


def _bitshift(
    op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]
) -> SSAValue:
    x, y = args
    # ONNX defines shifts by >= width (and by negative amounts, which compare as huge unsigned
    # values) as shifting everything out; LLVM leaves them poison, so clamp explicitly.
    width = out.width.data  # type: ignore[attr-defined]
    out_of_range = _emit(ops, arith.CmpiOp(y, _const(ops, width, out), "uge"))
    if op.direction.data == "right" and not _unsigned(op):  # type: ignore[attr-defined]
        amount = _emit(ops, arith.SelectOp(out_of_range, _const(ops, width - 1, out), y))
        return _emit(ops, arith.ShRSIOp(x, amount))
    shift = arith.ShLIOp if op.direction.data == "left" else arith.ShRUIOp  # type: ignore[attr-defined]
    shifted = _emit(ops, shift(x, y))
    return _emit(ops, arith.SelectOp(out_of_range, _const(ops, 0, out), shifted))


_FLOAT_PREDICATES = {"eq": "oeq", "lt": "olt", "le": "ole", "gt": "ogt", "ge": "oge"}
_SIGNED_PREDICATES = {"eq": "eq", "lt": "slt", "le": "sle", "gt": "sgt", "ge": "sge"}
_UNSIGNED_PREDICATES = {"eq": "eq", "lt": "ult", "le": "ule", "gt": "ugt", "ge": "uge"}


def _compare(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    predicate = op.predicate.data  # type: ignore[attr-defined]
    if _is_float(args[0].type):
        return _emit(ops, arith.CmpfOp(args[0], args[1], _FLOAT_PREDICATES[predicate]))
    table = _UNSIGNED_PREDICATES if _unsigned(op) else _SIGNED_PREDICATES
    return _emit(ops, arith.CmpiOp(args[0], args[1], table[predicate]))


def _not(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    return _emit(ops, arith.XOrIOp(args[0], _const(ops, -1, out)))


def _where(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    return _emit(ops, arith.SelectOp(args[0], args[1], args[2]))


def _sign(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    x, zero, one = args[0], _const(ops, 0, out), _const(ops, 1, out)
    if _is_float(out):
        # x itself where it is neither > 0 nor < 0: keeps -0, +0 and NaN as numpy does.
        positive = _emit(ops, arith.CmpfOp(x, zero, "ogt"))
        negative = _emit(ops, arith.CmpfOp(x, zero, "olt"))
        rest = _emit(ops, arith.SelectOp(negative, _const(ops, -1, out), x))
        return _emit(ops, arith.SelectOp(positive, one, rest))
    if _unsigned(op):
        return _emit(ops, arith.ExtUIOp(_emit(ops, arith.CmpiOp(x, zero, "ne")), out))
    positive = _emit(ops, arith.ExtUIOp(_emit(ops, arith.CmpiOp(x, zero, "sgt")), out))
    negative = _emit(ops, arith.ExtUIOp(_emit(ops, arith.CmpiOp(x, zero, "slt")), out))
    return _emit(ops, arith.SubiOp(positive, negative))


def _rounding(math_op: type) -> BodyBuilder:
    def build(
        op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]
    ) -> SSAValue:
        return _emit(ops, math_op(args[0])) if _is_float(out) else args[0]

    return build


def _softplus(
    op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]
) -> SSAValue:
    # max(x, 0) + log1p(exp(-|x|)): exp never overflows, log's argument stays in (1, 2].
    # log1p(d) as log(u) * d / (u - 1) with u = 1 + d (u - 1 is exact): log(1 + d) alone lost
    # the low bits of a small d (2.6e-3 relative error at x = -11.3); u == 1 means d itself.
    x = args[0]
    one = _const(ops, 1.0, out)
    decay = _emit(ops, math.ExpOp(_emit(ops, arith.NegfOp(_emit(ops, math.AbsFOp(x))))))
    u = _emit(ops, arith.AddfOp(one, decay))
    ratio = _emit(ops, arith.DivfOp(decay, _emit(ops, arith.SubfOp(u, one))))
    scaled = _emit(ops, arith.MulfOp(_emit(ops, math.LogOp(u)), ratio))
    tail = _emit(ops, arith.SelectOp(_emit(ops, arith.CmpfOp(u, one, "oeq")), decay, scaled))
    return _emit(ops, arith.AddfOp(_emit(ops, arith.MaximumfOp(x, _const(ops, 0.0, out))), tail))


_TRIG_OPS: dict[str, type] = {
    "sin": math.SinOp,
    "cos": math.CosOp,
    "tan": math.TanOp,
    "asin": math.AsinOp,
    "acos": math.AcosOp,
    "atan": math.AtanOp,
    "sinh": math.SinhOp,
    "cosh": math.CoshOp,
    "asinh": math.AsinhOp,
    "acosh": math.AcoshOp,
    "atanh": math.AtanhOp,
}


def _trig(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    if not _is_float(out):
        raise NotImplementedError(f"{op.name} on integer type {out}")
    return _emit(ops, _TRIG_OPS[op.fn.data](args[0]))  # type: ignore[attr-defined]


def _isnan(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    if not _is_float(args[0].type):
        return _const(ops, 0, out)
    return _emit(ops, arith.CmpfOp(args[0], args[0], "uno"))


def _isinf(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    x = args[0]
    positive = op.detect_positive.value.data  # type: ignore[attr-defined]
    negative = op.detect_negative.value.data  # type: ignore[attr-defined]
    if not _is_float(x.type) or not (positive or negative):
        return _const(ops, 0, out)
    inf = _const(ops, float("inf"), x.type)
    if positive and negative:
        return _emit(ops, arith.CmpfOp(_emit(ops, math.AbsFOp(x)), inf, "oeq"))
    target = inf if positive else _const(ops, float("-inf"), x.type)
    return _emit(ops, arith.CmpfOp(x, target, "oeq"))


def _unary_math(math_op: type) -> BodyBuilder:
    def build(
        op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]
    ) -> SSAValue:
        if not _is_float(out):
            raise NotImplementedError(f"{op.name} on integer type {out}")
        return _emit(ops, math_op(args[0]))

    return build


def _relu(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    zero = _const(ops, 0, out)
    if _is_float(out):
        return _emit(ops, arith.MaximumfOp(args[0], zero))
    if _unsigned(op):
        return args[0]
    return _emit(ops, arith.MaxSIOp(args[0], zero))


def _sigmoid(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    one = _const(ops, 1.0, out)
    e = _emit(ops, math.ExpOp(_emit(ops, arith.NegfOp(args[0]))))
    return _emit(ops, arith.DivfOp(one, _emit(ops, arith.AddfOp(one, e))))


def _neg(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    if _is_float(out):
        return _emit(ops, arith.NegfOp(args[0]))
    return _emit(ops, arith.SubiOp(_const(ops, 0, out), args[0]))


def _abs(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    if _is_float(out):
        return _emit(ops, math.AbsFOp(args[0]))
    if _unsigned(op):
        return args[0]
    # select(x < 0, -x, x) rather than math.absi, which codegen does not lower.
    zero = _const(ops, 0, out)
    negative = _emit(ops, arith.CmpiOp(args[0], zero, "slt"))
    return _emit(ops, arith.SelectOp(negative, _emit(ops, arith.SubiOp(zero, args[0])), args[0]))


def _pow(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    if _is_float(out):
        return _emit(ops, math.PowFOp(args[0], args[1]))
    # Integer powers through f64: exact while the result fits in 53 bits.
    to_float = arith.UIToFPOp if _unsigned(op) else arith.SIToFPOp
    base, exponent = (_emit(ops, to_float(v, f64)) for v in args)
    result = _emit(ops, math.PowFOp(base, exponent))
    return _emit(ops, (arith.FPToUIOp if _unsigned(op) else arith.FPToSIOp)(result, out))


def _reciprocal(
    op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]
) -> SSAValue:
    return _emit(ops, arith.DivfOp(_const(ops, 1.0, out), args[0]))


def _identity(
    op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]
) -> SSAValue:
    return args[0]


def _clip(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    value = args[0]
    lo, hi = (None if b is None else b.value.data for b in (op.min, op.max))  # type: ignore[attr-defined]
    if _is_float(out):
        # maximumf/minimumf: NaN stays NaN. A missing float bound is the type's finite limit
        # (graph.clip), so +-inf clip to +-max like in onnxruntime.
        maximum, minimum = arith.MaximumfOp, arith.MinimumfOp
        lo, hi = clip_bounds(lo, hi, numpy_dtype_for(out))
    elif _unsigned(op):
        maximum, minimum = arith.MaxUIOp, arith.MinUIOp
    else:
        maximum, minimum = arith.MaxSIOp, arith.MinSIOp
    if lo is not None:
        value = _emit(ops, maximum(value, _const(ops, lo, out)))
    if hi is not None:
        value = _emit(ops, minimum(value, _const(ops, hi, out)))
    return value


def _leaky_relu(
    op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]
) -> SSAValue:
    alpha = _const(ops, op.alpha.value.data, out)  # type: ignore[attr-defined]
    negative = _emit(ops, arith.CmpfOp(args[0], _const(ops, 0.0, out), "olt"))
    return _emit(ops, arith.SelectOp(negative, _emit(ops, arith.MulfOp(args[0], alpha)), args[0]))


def _convert(
    value: SSAValue, from_unsigned: bool, to_unsigned: bool, out: Attribute, ops: list[Operation]
) -> SSAValue:
    """`value` (a float, integer or bool scalar) converted to `out`."""
    source = value.type
    boolean = IntegerType(1)
    if source == out:
        return value
    if _is_float(source) and _is_float(out):
        wider = source.bitwidth < out.bitwidth  # type: ignore[attr-defined]
        return _emit(ops, (arith.ExtFOp if wider else arith.TruncFOp)(value, out))
    if out == boolean:
        if _is_float(source):
            return _emit(ops, arith.CmpfOp(value, _const(ops, 0.0, source), "une"))
        return _emit(ops, arith.CmpiOp(value, _const(ops, 0, source), "ne"))
    if _is_float(source):
        return _emit(ops, (arith.FPToUIOp if to_unsigned else arith.FPToSIOp)(value, out))
    zero_extend = from_unsigned or source == boolean
    if _is_float(out):
        return _emit(ops, (arith.UIToFPOp if zero_extend else arith.SIToFPOp)(value, out))
    if source.bitwidth < out.bitwidth:  # type: ignore[attr-defined]
        return _emit(ops, (arith.ExtUIOp if zero_extend else arith.ExtSIOp)(value, out))
    return _emit(ops, arith.TruncIOp(value, out))


def _cast(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    source, target = graph.element_type_of(op.operands[0]), graph.element_type_of(op.results[0])
    if is_small_type(source) or is_small_type(target):
        round_mode = op.round_mode  # type: ignore[attr-defined]
        return small_type_casts.cast(
            args[0],
            source,
            target,
            op.no_saturate is None,  # type: ignore[attr-defined]
            "up" if round_mode is None else round_mode.data,
            _convert,
            ops,
        )
    return _convert(args[0], is_unsigned(source), is_unsigned(target), out, ops)


def _bitcast(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    if args[0].type == out:  # e.g. int8 -> uint8: both are i8 below the graph dialect
        return args[0]
    if args[0].type == IntegerType(1):  # a bool is one byte holding 0 or 1
        return _emit(ops, arith.ExtUIOp(args[0], out))
    return _emit(ops, arith.BitcastOp(args[0], out))


def _to_f32(value: SSAValue, unsigned: bool, ops: list[Operation]) -> SSAValue:
    """An integer (signed or not) or float scalar as f32."""
    if value.type == f32:
        return value
    if _is_float(value.type):
        return _emit(ops, arith.ExtFOp(value, f32))
    return _emit(ops, (arith.UIToFPOp if unsigned else arith.SIToFPOp)(value, f32))


def _quantize_linear(
    op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]
) -> SSAValue:
    x, scale, zero_point = args
    unsigned = is_unsigned(graph.element_type_of(op.results[0]))
    q = _emit(ops, arith.DivfOp(_to_f32(x, False, ops), _to_f32(scale, False, ops)))
    q = _emit(ops, math.RoundEvenOp(q))
    q = _emit(ops, arith.AddfOp(q, _to_f32(zero_point, unsigned, ops)))
    width = out.width.data  # type: ignore[attr-defined]
    lowest, highest = (
        (0, (1 << width) - 1) if unsigned else (-(1 << width - 1), (1 << width - 1) - 1)
    )
    lo, hi = _const(ops, lowest, f32), _const(ops, highest, f32)
    # An ordered >= is false for NaN, which so saturates to the minimum like onnxruntime's
    # max_ps(v, lo) (SSE returns the second operand when one is NaN).
    above = _emit(ops, arith.CmpfOp(q, lo, "oge"))
    q = _emit(ops, arith.MinimumfOp(_emit(ops, arith.SelectOp(above, q, lo)), hi))
    return _emit(ops, (arith.FPToUIOp if unsigned else arith.FPToSIOp)(q, out))


def _dequantize_linear(
    op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]
) -> SSAValue:
    x, scale, zero_point = args
    unsigned = _unsigned(op)
    if x.type == IntegerType(32):  # int32 - zero point in int32 (wrapping), as onnxruntime
        difference = _emit(ops, arith.SIToFPOp(_emit(ops, arith.SubiOp(x, zero_point)), f32))
    else:  # 8- and 16-bit values and their differences are exact in f32
        difference = _emit(
            ops, arith.SubfOp(_to_f32(x, unsigned, ops), _to_f32(zero_point, unsigned, ops))
        )
    y = _emit(ops, arith.MulfOp(difference, _to_f32(scale, False, ops)))
    return y if y.type == out else _emit(ops, arith.TruncFOp(y, out))


BODIES: dict[type[Operation], BodyBuilder] = {
    graph.ReluOp: _relu,
    graph.SigmoidOp: _sigmoid,
    graph.TanhOp: _unary_math(math.TanhOp),
    graph.ExpOp: _unary_math(math.ExpOp),
    graph.LogOp: _unary_math(math.LogOp),
    graph.SqrtOp: _unary_math(math.SqrtOp),
    graph.ErfOp: _unary_math(math.ErfOp),
    graph.NegOp: _neg,
    graph.AbsOp: _abs,
    graph.ReciprocalOp: _reciprocal,
    graph.IdentityOp: _identity,
    graph.ClipOp: _clip,
    graph.LeakyReluOp: _leaky_relu,
    graph.CastOp: _cast,
    graph.AddOp: _binary(arith.AddfOp, arith.AddiOp),
    graph.SubOp: _binary(arith.SubfOp, arith.SubiOp),
    graph.MulOp: _binary(arith.MulfOp, arith.MuliOp),
    graph.DivOp: _div,
    graph.PowOp: _pow,
    graph.MaxOp: _binary(arith.MaximumfOp, arith.MaxSIOp, arith.MaxUIOp),
    graph.MinOp: _binary(arith.MinimumfOp, arith.MinSIOp, arith.MinUIOp),
    graph.CompareOp: _compare,
    graph.AndOp: _binary(None, arith.AndIOp),
    graph.OrOp: _binary(None, arith.OrIOp),
    graph.XorOp: _binary(None, arith.XOrIOp),
    graph.ModOp: _mod,
    graph.BitShiftOp: _bitshift,
    graph.NotOp: _not,
    graph.SignOp: _sign,
    graph.FloorOp: _rounding(math.FloorOp),
    graph.CeilOp: _rounding(math.CeilOp),
    graph.RoundOp: _rounding(math.RoundEvenOp),
    graph.SoftplusOp: _softplus,
    graph.TrigOp: _trig,
    graph.IsNaNOp: _isnan,
    graph.IsInfOp: _isinf,
    graph.WhereOp: _where,
    graph.BitcastOp: _bitcast,
    graph.QuantizeLinearOp: _quantize_linear,
    graph.DequantizeLinearOp: _dequantize_linear,
}


# Conversions keep their own types: widening a float64 -> float16 Cast through float32 would
# round twice.
_EXACT_TYPES = (graph.CastOp, graph.BitcastOp, graph.QuantizeLinearOp, graph.DequantizeLinearOp)


def build_body(
    op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]
) -> SSAValue:
    """The scalar body of `op` on `args`. 16-bit float values are widened to f32 around it
    and the result rounded back once: an ONNX op's result is rounded to its element type,
    the steps inside it are not (Sigmoid's exp(-x) overflowed float16 for x < -11, Softplus
    and Mish lost thousands of ulps). bf16 must be widened anyway: LLVM's bf16 arithmetic
    calls helpers the JIT cannot resolve."""
    build = BODIES[type(op)]
    types = [out, *(a.type for a in args)]
    if any(isinstance(t, BFloat16Type) for t in types):
        narrow: tuple[type, ...] = (BFloat16Type,)
    elif any(isinstance(t, Float16Type) for t in types) and not isinstance(op, _EXACT_TYPES):
        narrow = (Float16Type,)
    else:
        return build(op, args, out, ops)
    wide = [_emit(ops, arith.ExtFOp(a, f32)) if isinstance(a.type, narrow) else a for a in args]
    result = build(op, wide, f32 if isinstance(out, narrow) else out, ops)
    return result if result.type == out else _emit(ops, arith.TruncFOp(result, out))
