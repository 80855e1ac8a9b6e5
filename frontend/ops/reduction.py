"""ONNX -> graph dialect: reductions (ReduceSum, ReduceMean, ReduceMax and the composed
ones: ReduceMin, ReduceProd, L1, L2, LogSum, LogSumExp, SumSquare), ArgMax/ArgMin,
CumSum/CumProd and TopK.

The composed reductions are `graph.reduce` around elementwise ops; TopK's values are a
gather_elements of its indices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import StringAttr, UnitAttr

from ember.dialects import graph, numpy_eval
from ember.dialects.dtypes import FLOAT_TYPES
from ember.frontend.context import (
    ImportContext,
    Node,
    Value,
    dtype_of,
    i64_attr,
    normalize_axis,
    scalar,
    shape_of,
)
from ember.frontend.ops.indexing import gather_elements
from ember.frontend.registry import converts


def _reduce_axes(imp: ImportContext, node: Node, attr_until: int) -> list[int] | None:
    """The reduced axes, or None for 'leave the input as it is' (noop_with_empty_axes)."""
    axes = imp.axes(node, attr_until)
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return None
        return list(range(len(shape_of(imp.required(node, 0)))))
    return axes


_COMPOSED_REDUCTIONS = {
    "ReduceL1": 18,
    "ReduceL2": 18,
    "ReduceLogSum": 18,
    "ReduceLogSumExp": 18,
    "ReduceSumSquare": 18,
    "ReduceProd": 18,
    "ReduceMin": 18,
}


@converts(*_COMPOSED_REDUCTIONS)
def _composed_reduction(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    axes = _reduce_axes(imp, node, _COMPOSED_REDUCTIONS[node.op_type])
    keep = bool(node.attrs.get("keepdims", 1))
    op = node.op_type
    if axes is None:
        # No reduction: the elementwise part still applies (ReduceL1 of x is |x|).
        axes, identity = [], True
    else:
        identity = False

    def reduce(value: Value, kind: str, keepdims: bool = keep) -> Value:
        if identity:
            return value
        return imp.reduce(node, value, kind, axes, keepdims)

    if op in ("ReduceProd", "ReduceMin"):
        return [reduce(x, "prod" if op == "ReduceProd" else "min")]
    if op == "ReduceL1":
        return [reduce(imp.unary(graph.AbsOp, x), "sum")]
    if op in ("ReduceL2", "ReduceSumSquare"):
        total = reduce(imp.binary(node, graph.MulOp, x, x), "sum")
        return [imp.unary(graph.SqrtOp, total) if op == "ReduceL2" else total]
    if not isinstance(numpy_eval.element_type(dtype_of(x)), FLOAT_TYPES):
        # exp/log kernels compute in float types only; onnxruntime truncates the float result
        raise node.unsupported(f"input of type {dtype_of(x)} (exp/log need a float type)")
    if op == "ReduceLogSum":
        return [imp.unary(graph.LogOp, reduce(x, "sum"))]
    # ReduceLogSumExp, shifted by the maximum so that exp cannot overflow. Only by a finite
    # maximum: a row's +inf or NaN maximum is replaced by 0, as is a row of only -inf, whose
    # shift would be inf - inf = NaN; unshifted, those rows give +inf, NaN and -inf, as in
    # onnxruntime.
    peak = reduce(x, "max", True)
    finite = imp.emit(
        graph.CompareOp,
        [imp.unary(graph.AbsOp, peak), scalar(np.inf, peak)],
        shape_of(peak),
        np.dtype(np.bool_),
        predicate=StringAttr("lt"),
    )
    peak = imp.emit(
        graph.WhereOp, [finite, peak, scalar(0.0, peak)], shape_of(peak), dtype_of(peak)
    )
    shifted = imp.unary(graph.ExpOp, imp.binary(node, graph.SubOp, x, peak))
    y = imp.binary(node, graph.AddOp, imp.unary(graph.LogOp, reduce(shifted, "sum", True)), peak)
    if keep or identity:
        return [y]
    dropped = {normalize_axis(node, a, len(shape_of(x))) for a in axes}
    return [imp.reshape(y, [d for i, d in enumerate(shape_of(y)) if i not in dropped])]


@converts("ReduceMean", "ReduceSum", "ReduceMax")
def _plain_reduction(imp: ImportContext, node: Node) -> Sequence[Value]:
    kind, since = {"ReduceMean": ("mean", 18), "ReduceSum": ("sum", 13), "ReduceMax": ("max", 18)}[
        node.op_type
    ]
    x = imp.required(node, 0)
    axes = _reduce_axes(imp, node, since)
    if axes is None:
        return [x]
    return [imp.reduce(node, x, kind, axes, bool(node.attrs.get("keepdims", 1)))]


@converts("ArgMax", "ArgMin")
def _arg_reduce(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = shape_of(x)
    axis = normalize_axis(node, node.attrs.get("axis", 0), len(shape))
    keep = bool(node.attrs.get("keepdims", 1))
    kind = "max" if node.op_type == "ArgMax" else "min"
    ordered = imp.ordered_as_signed(node, x)
    y = arg_reduce(imp, ordered, kind, axis, node.attrs.get("select_last_index", 0))
    return [y if keep else imp.reshape(y, [d for i, d in enumerate(shape) if i != axis])]


def arg_reduce(imp: ImportContext, x: Value, kind: str, axis: int, select_last: int) -> Value:
    """The i64 index of the first (select_last: last) max or min along `axis`, which the
    result keeps as size 1 (graph.arg_reduce)."""
    kept = [1 if i == axis else d for i, d in enumerate(shape_of(x))]
    return imp.emit(
        graph.ArgReduceOp,
        [x],
        kept,
        np.dtype(np.int64),
        kind=StringAttr(kind),
        axis=i64_attr(axis),
        select_last_index=i64_attr(select_last),
    )


@converts("CumSum", "CumProd")
def _cumsum(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    axis_in = imp.constant(node, 1, "axis")
    assert axis_in is not None
    axis = normalize_axis(node, int(axis_in.reshape(-1)[0]), len(shape_of(x)))
    return [
        imp.emit(
            graph.CumSumOp,
            [x],
            shape_of(x),
            axis=i64_attr(axis),
            exclusive=i64_attr(node.attrs.get("exclusive", 0)),
            reverse=i64_attr(node.attrs.get("reverse", 0)),
            product=UnitAttr() if node.op_type == "CumProd" else None,
        )
    ]


@converts("TopK")
def _top_k(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = shape_of(x)
    axis = normalize_axis(node, node.attrs.get("axis", -1), len(shape))
    if node.opset < 10:
        k = int(node.attrs["k"])
    else:
        k_in = imp.constant(node, 1, "K")
        assert k_in is not None
        k = int(k_in.reshape(-1)[0])
    if not 0 <= k <= shape[axis]:
        raise node.unsupported(f"k = {k} for an axis of {shape[axis]}")
    out = [k if d == axis else n for d, n in enumerate(shape)]
    largest = node.attrs.get("largest", 1)
    ordered = imp.ordered_as_signed(node, x)
    indices = imp.emit(
        graph.TopKOp,
        [ordered],
        out,
        np.dtype(np.int64),
        axis=i64_attr(axis),
        largest=i64_attr(largest),
    )
    # Always sorted (sorted=0 leaves the order unspecified); values are gathered by index.
    return [gather_elements(imp, x, indices, axis), indices]
