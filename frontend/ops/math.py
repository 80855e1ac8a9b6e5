"""ONNX -> graph dialect: unary math, one graph op each (Exp, Log, Sqrt, Erf, Neg, Abs,
Reciprocal, Sign, Floor, Ceil, Round, and the activations Relu, Sigmoid and Tanh, which are
one graph op the same way), trigonometry (one `graph.trig` with the function's name), IsNaN
and IsInf."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import StringAttr
from xdsl.irdl import IRDLOperation

from ember.dialects import graph
from ember.frontend.context import (
    ImportContext,
    Node,
    Value,
    i64_attr,
    shape_of,
)
from ember.frontend.registry import converts

_UNARY: dict[str, type[IRDLOperation]] = {
    "Exp": graph.ExpOp,
    "Log": graph.LogOp,
    "Sqrt": graph.SqrtOp,
    "Erf": graph.ErfOp,
    "Neg": graph.NegOp,
    "Abs": graph.AbsOp,
    "Reciprocal": graph.ReciprocalOp,
    "Sign": graph.SignOp,
    "Floor": graph.FloorOp,
    "Ceil": graph.CeilOp,
    "Round": graph.RoundOp,
    "Relu": graph.ReluOp,
    "Sigmoid": graph.SigmoidOp,
    "Tanh": graph.TanhOp,
}


@converts(*_UNARY)
def _unary(imp: ImportContext, node: Node) -> Sequence[Value]:
    return [imp.unary(_UNARY[node.op_type], imp.required(node, 0))]


_TRIG = ("Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh")


@converts(*_TRIG)
def _trig(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.float_input(node)
    return [imp.unary(graph.TrigOp, x, fn=StringAttr(node.op_type.lower()))]


@converts("IsNaN")
def _isnan(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    return [imp.emit(graph.IsNaNOp, [x], shape_of(x), np.dtype(np.bool_))]


@converts("IsInf")
def _isinf(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    props = {
        "detect_positive": i64_attr(node.attrs.get("detect_positive", 1)),
        "detect_negative": i64_attr(node.attrs.get("detect_negative", 1)),
    }
    return [imp.emit(graph.IsInfOp, [x], shape_of(x), np.dtype(np.bool_), **props)]
