"""ONNX -> graph dialect: broadcasting arithmetic (Add, Sub, Mul, Div, Pow, Mod; Sum, Max,
Min, Mean), comparisons, logic and bitwise ops, BitShift and Where: one graph op each (a
variadic op a chain of binary ones).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import StringAttr
from xdsl.irdl import IRDLOperation

from ember.dialects import graph
from ember.frontend.context import (
    Const,
    ImportContext,
    Node,
    Value,
    dtype_of,
    i64_attr,
)
from ember.frontend.registry import converts

_BINARY: dict[str, type[IRDLOperation]] = {
    "Add": graph.AddOp,
    "Sub": graph.SubOp,
    "Mul": graph.MulOp,
    "Div": graph.DivOp,
    "Pow": graph.PowOp,
}


@converts(*_BINARY)
def _binary(imp: ImportContext, node: Node) -> Sequence[Value]:
    if node.opset < 7 and node.attrs.get("broadcast") and "axis" in node.attrs:
        raise node.unsupported("legacy axis-aligned broadcasting")
    lhs, rhs = imp.required(node, 0), imp.required(node, 1)
    return [imp.binary(node, _BINARY[node.op_type], lhs, rhs)]


@converts("Sum", "Max", "Min", "Mean")
def _variadic(imp: ImportContext, node: Node) -> Sequence[Value]:
    op_type = {"Sum": graph.AddOp, "Mean": graph.AddOp, "Max": graph.MaxOp, "Min": graph.MinOp}
    values = [imp.required(node, i) for i in range(len(node.proto.input))]
    acc = values[0]
    for v in values[1:]:
        acc = imp.binary(node, op_type[node.op_type], acc, v)
    if node.op_type == "Mean" and len(values) > 1:
        acc = imp.binary(node, graph.DivOp, acc, Const(np.array(len(values), dtype_of(acc))))
    return [acc]


_PREDICATES = {
    "Equal": "eq",
    "Less": "lt",
    "LessOrEqual": "le",
    "Greater": "gt",
    "GreaterOrEqual": "ge",
}


@converts(*_PREDICATES)
def _comparison(imp: ImportContext, node: Node) -> Sequence[Value]:
    lhs, rhs = imp.required(node, 0), imp.required(node, 1)
    return [imp.compare(node, _PREDICATES[node.op_type], lhs, rhs)]


_LOGIC: dict[str, type[IRDLOperation]] = {
    "And": graph.AndOp,
    "Or": graph.OrOp,
    "Xor": graph.XorOp,
    "BitwiseAnd": graph.AndOp,
    "BitwiseOr": graph.OrOp,
    "BitwiseXor": graph.XorOp,
}


@converts(*_LOGIC)
def _logic(imp: ImportContext, node: Node) -> Sequence[Value]:
    lhs, rhs = imp.required(node, 0), imp.required(node, 1)
    if dtype_of(lhs).kind not in "iub":
        raise node.error(f"operands must be bool or integer, not {dtype_of(lhs)}")
    return [imp.binary(node, _LOGIC[node.op_type], lhs, rhs)]


@converts("Not", "BitwiseNot")
def _not(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    if dtype_of(x).kind not in "iub":
        raise node.error(f"input must be bool or integer, not {dtype_of(x)}")
    return [imp.unary(graph.NotOp, x)]


@converts("BitShift")
def _bitshift(imp: ImportContext, node: Node) -> Sequence[Value]:
    direction = node.attrs.get("direction", b"")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("LEFT", "RIGHT"):
        raise node.error(f"direction must be LEFT or RIGHT, not '{direction}'")
    lhs, rhs = imp.required(node, 0), imp.required(node, 1)
    return [imp.binary(node, graph.BitShiftOp, lhs, rhs, direction=StringAttr(direction.lower()))]


@converts("Mod")
def _mod(imp: ImportContext, node: Node) -> Sequence[Value]:
    lhs, rhs = imp.required(node, 0), imp.required(node, 1)
    # The spec asks for fmod=1 on floats; its own tests also use fmod=0 there, as numpy.mod.
    fmod = int(node.attrs.get("fmod", 0))
    return [imp.binary(node, graph.ModOp, lhs, rhs, fmod=i64_attr(fmod))]


@converts("Where")
def _where_op(imp: ImportContext, node: Node) -> Sequence[Value]:
    cond = imp.required(node, 0)
    if dtype_of(cond) != np.bool_:
        raise node.error(f"condition must be bool, not {dtype_of(cond)}")
    return [imp.where(node, cond, imp.required(node, 1), imp.required(node, 2))]
