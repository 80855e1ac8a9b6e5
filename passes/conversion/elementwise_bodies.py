"""Scalar bodies of the elementwise graph ops, as arith/math ops in a `kernel.elementwise` region.

One table maps each elementwise graph op to the scalar computation it performs; bufferization
builds `kernel.elementwise` regions from it, and the kernel lowering vectorizes those regions.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.dialects import arith, math
from xdsl.dialects.builtin import AnyFloat, FloatAttr, IntegerAttr, IntegerType
from xdsl.ir import Attribute, Operation, SSAValue

from ember.dialects import graph

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


def _binary(float_op: type, int_op: type | None) -> BodyBuilder:
    def build(
        op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]
    ) -> SSAValue:
        if _is_float(out):
            return _emit(ops, float_op(args[0], args[1]))
        if int_op is None:
            raise NotImplementedError(f"{op.name} on integer type {out}")
        return _emit(ops, int_op(args[0], args[1]))

    return build


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
    return _emit(ops, math.AbsIOp(args[0]))


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
    lo, hi = op.min, op.max  # type: ignore[attr-defined]
    if lo is not None:
        value = _emit(ops, arith.MaximumfOp(value, _const(ops, lo.value.data, out)))
    if hi is not None:
        value = _emit(ops, arith.MinimumfOp(value, _const(ops, hi.value.data, out)))
    return value


def _leaky_relu(
    op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]
) -> SSAValue:
    alpha = _const(ops, op.alpha.value.data, out)  # type: ignore[attr-defined]
    negative = _emit(ops, arith.CmpfOp(args[0], _const(ops, 0.0, out), "olt"))
    return _emit(ops, arith.SelectOp(negative, _emit(ops, arith.MulfOp(args[0], alpha)), args[0]))


def _cast(op: Operation, args: list[SSAValue], out: Attribute, ops: list[Operation]) -> SSAValue:
    source = args[0].type
    if source == out:
        return args[0]
    if _is_float(source) and _is_float(out):
        wider = source.bitwidth < out.bitwidth  # type: ignore[attr-defined]
        return _emit(ops, (arith.ExtFOp if wider else arith.TruncFOp)(args[0], out))
    if _is_float(source):
        if out == IntegerType(1):
            return _emit(ops, arith.CmpfOp(args[0], _const(ops, 0.0, source), "une"))
        return _emit(ops, arith.FPToSIOp(args[0], out))
    if _is_float(out):
        convert = arith.UIToFPOp if source == IntegerType(1) else arith.SIToFPOp
        return _emit(ops, convert(args[0], out))
    if source.bitwidth < out.bitwidth:  # type: ignore[attr-defined]
        extend = arith.ExtUIOp if source == IntegerType(1) else arith.ExtSIOp
        return _emit(ops, extend(args[0], out))
    if out == IntegerType(1):
        return _emit(ops, arith.CmpiOp(args[0], _const(ops, 0, source), "ne"))
    return _emit(ops, arith.TruncIOp(args[0], out))


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
    graph.DivOp: _binary(arith.DivfOp, arith.DivSIOp),
    graph.PowOp: _binary(math.PowFOp, None),
    graph.MaxOp: _binary(arith.MaximumfOp, arith.MaxSIOp),
    graph.MinOp: _binary(arith.MinimumfOp, arith.MinSIOp),
}
