"""ONNX converters of the structural ops: slicing, padding, resizing, the convolution family
(Conv, ConvTranspose, pooling in 1-3 dims), normalizations, reductions, index ops and losses.

Most of these ops are exact compositions of a few graph ops whose index tables or weights are
computed here, at compile time, with numpy:

- Pad (reflect/edge/wrap) and Resize are per-axis gathers with constant index tables; Resize's
  linear/cubic (and antialiased) taps add weighted gathers, so every coordinate mode shares
  one mechanism (wide antialiased filters gather all taps at once and sum them); dilated
  pooling is the same idea with max/add folds;
- Split, Slice of a runtime tensor and negative pads are `graph.slice`;
- Tile is a broadcast (graph.expand) between reshapes, so its cost is one kernel whatever
  the repeats; DepthToSpace/SpaceToDepth a reshape-transpose-reshape, 1-D and 3-D pooling
  are 2-D poolings of reshaped views (pooling is separable);
- ConvTranspose is a stride-1 convolution of the zero-stuffed input with the flipped filter;
- the L1/L2/log-sum(-exp)/sum-square reductions are `graph.reduce` around elementwise ops,
  and the normalizations (instance, group, mean-variance, Lp, RMS, LayerNorm's extra outputs)
  reduce + elementwise, or `graph.layer_norm` on a reshaped view;
- Hardmax is one_hot(argmax); TopK's values are a gather_elements of its indices; the losses
  (NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss) are gather_elements with an ignored
  index, around the log-softmax kernel;
- Einsum takes diagonals by gathers, contracts float32 pairs with one batched matmul and
  anything else by broadcast products summed as early as possible.

Ops that need loops of their own have graph ops with kernels: slice, expand, arg_reduce,
cumsum, gather_elements, scatter_elements, one_hot, top_k (and softmax's `log` form).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from onnx.helper import tensor_dtype_to_np_dtype as onnx_dtype
from xdsl.dialects.builtin import StringAttr, UnitAttr
from xdsl.irdl import IRDLOperation

from ember.core import limits
from ember.dialects import graph, numpy_eval
from ember.dialects.dtypes import FLOAT_TYPES
from ember.frontend.onnx_importer import (
    Value,
    _axes_of,
    _axis,
    _Const,
    _converts,
    _dtype,
    _f32,
    _i64,
    _Importer,
    _Node,
    _reduce,
    _shape,
    _window_geometry,
)

# ---------------------------------------------------------------------------------------------
# Small shared builders


def _unary(imp: _Importer, op: type[IRDLOperation], x: Value) -> Value:
    return imp.emit(op, [x], _shape(x))


def _scalar(value: float, like: Value) -> _Const:
    return _Const(np.array(value, _dtype(like)))


def _slice(
    imp: _Importer, x: Value, starts: Sequence[int], steps: Sequence[int], out: Sequence[int]
) -> Value:
    """x[starts[d] :: steps[d]] with out[d] elements per axis (starts already in range)."""
    if tuple(out) == _shape(x) and all(s == 0 for s in starts) and all(s == 1 for s in steps):
        return x
    return imp.emit(
        graph.SliceOp,
        [x],
        out,
        starts=graph.i64_array(starts),
        steps=graph.i64_array(steps),
    )


def _slice_axis(imp: _Importer, x: Value, axis: int, start: int, count: int) -> Value:
    shape = list(_shape(x))
    starts, steps = [0] * len(shape), [1] * len(shape)
    starts[axis], shape[axis] = start, count
    return _slice(imp, x, starts, steps, shape)


def _gather_axis(imp: _Importer, x: Value, axis: int, indices: np.ndarray) -> Value:
    """x taken at constant `indices` along `axis` (the identity table costs nothing)."""
    shape = _shape(x)
    if len(indices) == shape[axis] and np.array_equal(indices, np.arange(shape[axis])):
        return x
    out = [*shape[:axis], len(indices), *shape[axis + 1 :]]
    return imp.emit(graph.GatherOp, [x, _Const(indices.astype(np.int64))], out, axis=_i64(axis))


def _concat(imp: _Importer, values: Sequence[Value], axis: int) -> Value:
    values = [v for v in values if _shape(v)[axis] > 0]
    if len(values) == 1:
        return values[0]
    out = list(_shape(values[0]))
    out[axis] = sum(_shape(v)[axis] for v in values)
    return imp.emit(graph.ConcatOp, [list(values)], out, axis=_i64(axis))


# ---------------------------------------------------------------------------------------------
# Slice, Split, Expand, Tile, Pad


def _slice_bounds(
    node: _Node,
    shape: Sequence[int],
    starts: Sequence[int],
    ends: Sequence[int],
    axes: Sequence[int],
    steps: Sequence[int],
) -> tuple[list[int], list[int], list[int]]:
    """Per-axis first index, step and count; ONNX clamps like Python's slice.indices."""
    rank = len(shape)
    first, stride, count = [0] * rank, [1] * rank, list(shape)
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        a = _axis(node, int(axis), rank)
        if int(step) == 0:
            raise node.error("slice step must not be 0")
        begin, stop, inc = slice(int(start), int(end), int(step)).indices(shape[a])
        first[a], stride[a], count[a] = begin, inc, len(range(begin, stop, inc))
    return first, stride, count


@_converts("Slice")
def _slice_op(imp: _Importer, node: _Node) -> Sequence[Value]:
    data = imp.required(node, 0)
    shape = _shape(data)
    if node.opset < 10:
        starts, ends = list(node.attrs["starts"]), list(node.attrs["ends"])
        axes = list(node.attrs.get("axes", range(len(starts))))
        steps: list[int] = [1] * len(starts)
    else:
        starts = [int(v) for v in imp.constant(node, 1, "starts")]  # type: ignore[union-attr]
        ends = [int(v) for v in imp.constant(node, 2, "ends")]  # type: ignore[union-attr]
        axes_in, steps_in = imp.constant(node, 3, "axes"), imp.constant(node, 4, "steps")
        axes = list(range(len(starts))) if axes_in is None else [int(a) for a in axes_in]
        steps = [1] * len(starts) if steps_in is None else [int(s) for s in steps_in]
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise node.error("starts, ends, axes and steps differ in length")
    first, stride, count = _slice_bounds(node, shape, starts, ends, axes, steps)
    if isinstance(data, _Const):
        index = tuple(
            slice(f, f + s * c if f + s * c >= 0 else None, s) if c else slice(0, 0)
            for f, s, c in zip(first, stride, count)
        )
        return [_Const(data.array[index])]
    if 0 in count:
        raise node.unsupported(f"Slice with an empty result {count}")
    return [_slice(imp, data, first, stride, count)]


@_converts("Split")
def _split(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = _shape(x)
    axis = _axis(node, node.attrs.get("axis", 0), len(shape))
    outputs = len(node.proto.output)
    if node.opset < 13:
        sizes = list(node.attrs.get("split", []))
    else:
        given = imp.constant(node, 1, "split")
        sizes = [] if given is None else [int(s) for s in given]
    if not sizes:
        parts = node.attrs.get("num_outputs", outputs)
        chunk = -(-shape[axis] // parts)
        sizes = [min(chunk, shape[axis] - k * chunk) for k in range(parts)]
    if sum(sizes) != shape[axis] or any(s < 0 for s in sizes):
        raise node.error(f"split sizes {sizes} do not add up to {shape[axis]} along {axis}")
    results, start = [], 0
    for size in sizes:
        if size == 0:
            raise node.unsupported("Split with an empty output")
        results.append(_slice_axis(imp, x, axis, start, size))
        start += size
    return results


@_converts("Expand")
def _expand(imp: _Importer, node: _Node) -> Sequence[Value]:
    data, shape = imp.required(node, 0), imp.constant(node, 1, "shape")
    assert shape is not None
    try:
        out = graph.broadcast_shapes(_shape(data), tuple(int(d) for d in shape))
    except ValueError as err:
        raise node.error(str(err)) from err
    if out == _shape(data):
        return [data]
    # Folded when `data` is known and the result small; a kernel otherwise.
    return [imp.emit(graph.ExpandOp, [data], out)]


@_converts("Tile")
def _tile(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    repeats = imp.constant(node, 1, "repeats")
    assert repeats is not None
    shape = _shape(x)
    if len(repeats) != len(shape) or any(r < 1 for r in repeats):
        raise node.error(f"repeats {list(repeats)} do not fit input shape {shape}")
    out = [d * int(r) for d, r in zip(shape, repeats, strict=True)]
    imp.check_size(out, _dtype(x), "the Tile result")  # before any step
    return [_tiled(imp, x, [int(r) for r in repeats])]


def _tiled(imp: _Importer, x: Value, repeats: Sequence[int]) -> Value:
    """x repeated repeats[d] times along each axis d: one broadcast, whatever the repeats.

    An axis of size n tiled r times is a new axis of r in front of it, broadcast, then
    merged with it."""
    shape = _shape(x)
    split: list[int] = []
    grown: list[int] = []
    for d, r in zip(shape, repeats, strict=True):
        split += [1, d] if r > 1 else [d]
        grown += [r, d] if r > 1 else [d]
    if split == grown:
        return x
    tiled = imp.emit(graph.ExpandOp, [imp.reshape(x, split)], grown)
    return imp.reshape(tiled, [d * r for d, r in zip(shape, repeats, strict=True)])


def _pad_indices(mode: str, size: int, before: int, after: int) -> np.ndarray:
    """Source index of each padded position along one axis (reflect/edge/wrap)."""
    p = np.arange(-before, size + after)
    if mode == "edge":
        return np.clip(p, 0, size - 1)
    if mode == "wrap":
        return p % size
    period = 2 * (size - 1)  # reflect excludes the edge element itself
    if period == 0:
        return np.zeros_like(p)
    q = p % period
    return np.where(q < size, q, period - q)


def _crop(imp: _Importer, x: Value, axis: int, before: int, after: int) -> tuple[Value, int, int]:
    """Apply the negative ones of `before`/`after` (pads that crop); returns what is left to pad."""
    if before >= 0 and after >= 0:
        return x, before, after
    size = _shape(x)[axis]
    if size + min(before, 0) + min(after, 0) < 0:
        assert imp.node is not None  # converters run with their node set
        raise imp.node.error(
            f"cannot crop {-min(before, 0)} + {-min(after, 0)} elements of an axis of {size}"
        )
    start = max(0, -before)
    x = _slice_axis(imp, x, axis, start, size - start - max(0, -after))
    return x, max(0, before), max(0, after)


def _pad_constant(
    imp: _Importer, x: Value, axis: int, before: int, after: int, value: float | Value = 0.0
) -> Value:
    """x with `before`/`after` elements of `value` around `axis` (negative counts crop).

    The padding is a graph.expand of the fill value: folded when small, a fill kernel when
    large (so wide pads cost no compile time), and the only way for a run-time fill value."""
    x, before, after = _crop(imp, x, axis, before, after)
    pieces: list[Value] = []
    for width in (before, after):
        block = list(_shape(x))
        block[axis] = width
        imp.check_size(block, _dtype(x), "padding")
        if width == 0:  # dropped by _concat
            pieces.append(_Const(np.zeros(block, _dtype(x))))
            continue
        ones = [1] * len(block)
        if isinstance(value, float | int):
            scalar: Value = _Const(np.full(ones, value, _dtype(x)))
        else:
            scalar = imp.reshape(value, ones)
        pieces.append(scalar if block == ones else imp.emit(graph.ExpandOp, [scalar], block))
    return _concat(imp, [pieces[0], x, pieces[1]], axis)


@_converts("Pad")
def _pad(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = _shape(x)
    rank = len(shape)
    mode = node.attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if node.opset < 11:
        pads = list(node.attrs.get("pads", node.attrs.get("paddings", [])))
        value = float(node.attrs.get("value", 0.0))
        axes = list(range(rank))
    else:
        pads = [int(p) for p in imp.constant(node, 1, "pads")]  # type: ignore[union-attr]
        fill = imp.input(node, 2)
        if fill is None or math.prod(_shape(fill)) == 0:
            value: float | Value = 0.0
        elif isinstance(fill, _Const):
            value = fill.array.reshape(-1)[0].item()
        else:
            value = fill
        axes_in = imp.constant(node, 3, "axes")
        axes = (
            list(range(rank)) if axes_in is None else [_axis(node, int(a), rank) for a in axes_in]
        )
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise node.unsupported(f"mode '{mode}'")
    if len(pads) != 2 * len(axes):
        raise node.error(f"{len(pads)} pads for {len(axes)} axes")
    for k, axis in enumerate(axes):
        # Negative pads crop first.
        x, before, after = _crop(imp, x, axis, pads[k], pads[k + len(axes)])
        size = _shape(x)[axis]
        if before == 0 and after == 0:
            continue
        if mode == "reflect" and (before >= size or after >= size) and size > 1:
            raise node.error(f"reflect pads {before},{after} exceed axis {axis} of {size}")
        if mode == "reflect" and size == 1:
            mode = "edge"  # reflecting one element repeats it
        if mode == "constant":
            x = _pad_constant(imp, x, axis, before, after, value)
        elif before + after <= size:
            x = _gather_axis(imp, x, axis, _pad_indices(mode, size, before, after))
        # Wider pads would make the index table grow with them: edges are broadcast, wraps
        # are a slice of the axis tiled.
        elif mode == "edge":
            x = _pad_edge(imp, x, axis, before, after)
        else:
            x = _pad_wrap(imp, x, axis, before, after)
    return [x]


def _pad_edge(imp: _Importer, x: Value, axis: int, before: int, after: int) -> Value:
    size = _shape(x)[axis]
    pieces = [x]
    for width, at in ((before, 0), (after, size - 1)):
        if width == 0:
            continue
        block = list(_shape(x))
        block[axis] = width
        edge = _slice_axis(imp, x, axis, at, 1)
        edge = edge if width == 1 else imp.emit(graph.ExpandOp, [edge], block)
        pieces.insert(0 if at == 0 else len(pieces), edge)
    return _concat(imp, pieces, axis)


def _pad_wrap(imp: _Importer, x: Value, axis: int, before: int, after: int) -> Value:
    size = _shape(x)[axis]
    total = before + size + after
    first = -before % size  # the input position the padded axis starts at
    repeats = [1] * len(_shape(x))
    repeats[axis] = -(-(first + total) // size)
    return _slice_axis(imp, _tiled(imp, x, repeats), axis, first, total)


# ---------------------------------------------------------------------------------------------
# Layout shuffles


@_converts("DepthToSpace", "SpaceToDepth")
def _depth_space(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    n, c, h, w = _shape(x)
    bs = int(node.attrs["blocksize"])
    mode = node.attrs.get("mode", b"DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if node.op_type == "SpaceToDepth":
        if h % bs or w % bs:
            raise node.error(f"blocksize {bs} does not divide {h}x{w}")
        split = [n, c, h // bs, bs, w // bs, bs]
        perm = [0, 1, 3, 5, 2, 4] if mode == "CRD" else [0, 3, 5, 1, 2, 4]
        out = [n, c * bs * bs, h // bs, w // bs]
    else:
        if c % (bs * bs):
            raise node.error(f"blocksize {bs}^2 does not divide {c} channels")
        if mode == "CRD":
            split, perm = [n, c // (bs * bs), bs, bs, h, w], [0, 1, 4, 2, 5, 3]
        else:
            split, perm = [n, bs, bs, c // (bs * bs), h, w], [0, 3, 4, 1, 5, 2]
        out = [n, c // (bs * bs), h * bs, w * bs]
    y = imp.reshape(x, split)
    y = imp.emit(graph.TransposeOp, [y], [split[p] for p in perm], perm=graph.i64_array(perm))
    return [imp.reshape(y, out)]


@_converts("Trilu")
def _trilu(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = _shape(x)
    if len(shape) < 2:
        raise node.error(f"input of rank {len(shape)} has no matrix dims")
    k_in = imp.constant(node, 1, "k")
    k = 0 if k_in is None else int(k_in.reshape(-1)[0])
    ones = np.ones(shape[-2:], bool)
    keep = np.triu(ones, k) if node.attrs.get("upper", 1) else np.tril(ones, k)
    if keep.all():
        return [x]
    # Multiplying by a 0/1 mask keeps every finite value exactly.
    return [imp.binary(node, graph.MulOp, x, _Const(keep.astype(_dtype(x))))]


# ---------------------------------------------------------------------------------------------
# Reductions


def _reduce_axes(imp: _Importer, node: _Node, attr_until: int) -> list[int] | None:
    """The reduced axes, or None for 'leave the input as it is' (noop_with_empty_axes)."""
    axes = _axes_of(imp, node, attr_until)
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return None
        return list(range(len(_shape(imp.required(node, 0)))))
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


@_converts(*_COMPOSED_REDUCTIONS)
def _composed_reduction(imp: _Importer, node: _Node) -> Sequence[Value]:
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
        return _reduce(imp, node, value, kind, axes, keepdims)

    if op in ("ReduceProd", "ReduceMin"):
        return [reduce(x, "prod" if op == "ReduceProd" else "min")]
    if op == "ReduceL1":
        return [reduce(_unary(imp, graph.AbsOp, x), "sum")]
    if op in ("ReduceL2", "ReduceSumSquare"):
        total = reduce(imp.binary(node, graph.MulOp, x, x), "sum")
        return [_unary(imp, graph.SqrtOp, total) if op == "ReduceL2" else total]
    if not isinstance(numpy_eval.element_type(_dtype(x)), FLOAT_TYPES):
        # exp/log kernels compute in float types only; onnxruntime truncates the float result
        raise node.unsupported(f"input of type {_dtype(x)} (exp/log need a float type)")
    if op == "ReduceLogSum":
        return [_unary(imp, graph.LogOp, reduce(x, "sum"))]
    # ReduceLogSumExp, shifted by the maximum so that exp cannot overflow. Only by a finite
    # maximum: a row's +inf or NaN maximum is replaced by 0, as is a row of only -inf, whose
    # shift would be inf - inf = NaN; unshifted, those rows give +inf, NaN and -inf, as in
    # onnxruntime.
    peak = reduce(x, "max", True)
    finite = imp.emit(
        graph.CompareOp,
        [_unary(imp, graph.AbsOp, peak), _scalar(np.inf, peak)],
        _shape(peak),
        np.dtype(np.bool_),
        predicate=StringAttr("lt"),
    )
    peak = imp.emit(graph.WhereOp, [finite, peak, _scalar(0.0, peak)], _shape(peak), _dtype(peak))
    shifted = _unary(imp, graph.ExpOp, imp.binary(node, graph.SubOp, x, peak))
    y = imp.binary(node, graph.AddOp, _unary(imp, graph.LogOp, reduce(shifted, "sum", True)), peak)
    if keep or identity:
        return [y]
    dropped = {_axis(node, a, len(_shape(x))) for a in axes}
    return [imp.reshape(y, [d for i, d in enumerate(_shape(y)) if i not in dropped])]


@_converts("ReduceMean", "ReduceSum", "ReduceMax")
def _plain_reduction(imp: _Importer, node: _Node) -> Sequence[Value]:
    kind, since = {"ReduceMean": ("mean", 18), "ReduceSum": ("sum", 13), "ReduceMax": ("max", 18)}[
        node.op_type
    ]
    x = imp.required(node, 0)
    axes = _reduce_axes(imp, node, since)
    if axes is None:
        return [x]
    return [_reduce(imp, node, x, kind, axes, bool(node.attrs.get("keepdims", 1)))]


@_converts("ArgMax", "ArgMin")
def _arg_reduce(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = _shape(x)
    axis = _axis(node, node.attrs.get("axis", 0), len(shape))
    keep = bool(node.attrs.get("keepdims", 1))
    kept = [1 if i == axis else d for i, d in enumerate(shape)]
    y = imp.emit(
        graph.ArgReduceOp,
        [x],
        kept,
        np.dtype(np.int64),
        kind=StringAttr("max" if node.op_type == "ArgMax" else "min"),
        axis=_i64(axis),
        select_last_index=_i64(node.attrs.get("select_last_index", 0)),
    )
    return [y if keep else imp.reshape(y, [d for i, d in enumerate(shape) if i != axis])]


@_converts("CumSum", "CumProd")
def _cumsum(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    axis_in = imp.constant(node, 1, "axis")
    assert axis_in is not None
    axis = _axis(node, int(axis_in.reshape(-1)[0]), len(_shape(x)))
    return [
        imp.emit(
            graph.CumSumOp,
            [x],
            _shape(x),
            axis=_i64(axis),
            exclusive=_i64(node.attrs.get("exclusive", 0)),
            reverse=_i64(node.attrs.get("reverse", 0)),
            product=UnitAttr() if node.op_type == "CumProd" else None,
        )
    ]


# ---------------------------------------------------------------------------------------------
# Normalizations


@_converts("LogSoftmax")
def _log_softmax(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = _shape(x)
    if node.opset >= 13:
        axis = _axis(node, node.attrs.get("axis", -1), len(shape))
        return [imp.emit(graph.SoftmaxOp, [x], shape, axis=_i64(axis), log=UnitAttr())]
    axis = _axis(node, node.attrs.get("axis", 1), len(shape))
    rows = [math.prod(shape[:axis]), math.prod(shape[axis:])]
    y = imp.emit(graph.SoftmaxOp, [imp.reshape(x, rows)], rows, axis=_i64(1), log=UnitAttr())
    return [imp.reshape(y, shape)]


def _moments(imp: _Importer, node: _Node, x: Value, axes: list[int]) -> tuple[Value, Value]:
    """(x - mean, variance) over `axes`, both with the reduced dims kept."""
    mean = _reduce(imp, node, x, "mean", axes, True)
    centered = imp.binary(node, graph.SubOp, x, mean)
    variance = _reduce(
        imp, node, imp.binary(node, graph.MulOp, centered, centered), "mean", axes, True
    )
    return centered, variance


def _inv_std(imp: _Importer, node: _Node, variance: Value, eps: float) -> Value:
    shifted = imp.binary(node, graph.AddOp, variance, _scalar(eps, variance))
    return _unary(imp, graph.ReciprocalOp, _unary(imp, graph.SqrtOp, shifted))


@_converts("LayerNormalization")
def _layer_norm(imp: _Importer, node: _Node) -> Sequence[Value]:
    x, scale, bias = imp.required(node, 0), imp.required(node, 1), imp.input(node, 2)
    shape = _shape(x)
    axis = _axis(node, node.attrs.get("axis", -1), len(shape))
    eps = float(node.attrs.get("epsilon", 1e-5))
    y = imp.emit(graph.LayerNormOp, [x, scale, bias], shape, axis=_i64(axis), epsilon=_f32(eps))
    wanted = [name for name in node.proto.output[1:] if name in imp.used]
    if not wanted:
        return [y]
    # Mean and inverse std-dev are separate (cheap) reductions; the fused kernel stays intact.
    axes = list(range(axis, len(shape)))
    mean = _reduce(imp, node, x, "mean", axes, True)
    _, variance = _moments(imp, node, x, axes)
    return [y, mean, _inv_std(imp, node, variance, eps)]


@_converts("RMSNormalization")
def _rms_norm(imp: _Importer, node: _Node) -> Sequence[Value]:
    x, scale = imp.required(node, 0), imp.required(node, 1)
    shape = _shape(x)
    axis = _axis(node, node.attrs.get("axis", -1), len(shape))
    eps = float(node.attrs.get("epsilon", 1e-5))
    squares = imp.binary(node, graph.MulOp, x, x)
    mean_square = _reduce(imp, node, squares, "mean", list(range(axis, len(shape))), True)
    y = imp.binary(node, graph.MulOp, x, _inv_std(imp, node, mean_square, eps))
    return [imp.binary(node, graph.MulOp, y, scale)]


@_converts("MeanVarianceNormalization")
def _mvn(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    rank = len(_shape(x))
    axes = [_axis(node, a, rank) for a in node.attrs.get("axes", [0, 2, 3])]
    centered, variance = _moments(imp, node, x, axes)
    return [imp.binary(node, graph.MulOp, centered, _inv_std(imp, node, variance, 1e-9))]


@_converts("LpNormalization")
def _lp_norm(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    axis = _axis(node, node.attrs.get("axis", -1), len(_shape(x)))
    p = node.attrs.get("p", 2)
    if p == 1:
        norm = _reduce(imp, node, _unary(imp, graph.AbsOp, x), "sum", [axis], True)
    elif p == 2:
        squares = imp.binary(node, graph.MulOp, x, x)
        norm = _unary(imp, graph.SqrtOp, _reduce(imp, node, squares, "sum", [axis], True))
    else:
        raise node.error(f"p must be 1 or 2, got {p}")
    # An all-zero row stays zero (0 / tiny) instead of becoming NaN (0 / 0), as in ONNX.
    tiny = _scalar(float(np.finfo(_dtype(x)).tiny), x)
    return [imp.binary(node, graph.DivOp, x, imp.binary(node, graph.MaxOp, norm, tiny))]


def _channel_affine(
    imp: _Importer, node: _Node, y: Value, scale: Value, bias: Value, channels: int
) -> Value:
    """y * scale[c] + bias[c] over axis 1 of y."""
    rank = len(_shape(y))
    per_channel = [channels] + [1] * (rank - 2)
    y = imp.binary(node, graph.MulOp, y, imp.reshape(scale, per_channel))
    return imp.binary(node, graph.AddOp, y, imp.reshape(bias, per_channel))


def _grouped_norm(imp: _Importer, node: _Node, x: Value, groups: int, eps: float) -> Value:
    """Normalize each (n, group) slice of x to zero mean, unit variance via graph.layer_norm."""
    shape = _shape(x)
    rows = [shape[0], groups, math.prod(shape[1:]) // groups]
    ones = _Const(np.ones(rows[2:], _dtype(x)))
    y = imp.emit(
        graph.LayerNormOp,
        [imp.reshape(x, rows), ones, None],
        rows,
        axis=_i64(2),
        epsilon=_f32(eps),
    )
    return imp.reshape(y, shape)


@_converts("InstanceNormalization")
def _instance_norm(imp: _Importer, node: _Node) -> Sequence[Value]:
    x, scale, bias = (imp.required(node, i) for i in range(3))
    c = _shape(x)[1]
    y = _grouped_norm(imp, node, x, c, float(node.attrs.get("epsilon", 1e-5)))
    return [_channel_affine(imp, node, y, scale, bias, c)]


@_converts("GroupNormalization")
def _group_norm(imp: _Importer, node: _Node) -> Sequence[Value]:
    x, scale, bias = (imp.required(node, i) for i in range(3))
    c = _shape(x)[1]
    groups = int(node.attrs["num_groups"])
    if c % groups:
        raise node.error(f"{c} channels do not split into {groups} groups")
    y = _grouped_norm(imp, node, x, groups, float(node.attrs.get("epsilon", 1e-5)))
    if node.opset < 21 and _shape(scale) != (c,):
        # Opset 18 scales per group; repeat each group's value over its channels.
        scale = _gather_axis(imp, scale, 0, np.repeat(np.arange(groups), c // groups))
        bias = _gather_axis(imp, bias, 0, np.repeat(np.arange(groups), c // groups))
    return [_channel_affine(imp, node, y, scale, bias, c)]


# ---------------------------------------------------------------------------------------------
# Resize: per axis, y = sum over taps t of gather(x, index[:, t]) * weight[:, t]


def _source_coordinates(
    mode: str, out_size: int, in_size: int, scale: float, roi: tuple[float, float]
) -> np.ndarray:
    """The input coordinate each output position samples (ONNX coordinate_transformation_mode)."""
    i = np.arange(out_size, dtype=np.float64)
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = out_size / (scale * in_size)
        center = in_size / 2
        return center * (1 - adjustment) + (i + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if out_size > 1 else np.zeros(out_size)
    if mode == "align_corners":
        # ONNX divides by the unrounded output length scale * in_size.
        span = scale * in_size - 1
        return i * (in_size - 1) / span if out_size > 1 else np.zeros(out_size)
    if mode == "asymmetric":
        return i / scale
    if mode == "tf_crop_and_resize":
        start, end = roi
        if out_size > 1:
            return start * (in_size - 1) + i * (end - start) * (in_size - 1) / (out_size - 1)
        return np.full(out_size, 0.5 * (start + end) * (in_size - 1))
    raise ValueError(f"coordinate_transformation_mode '{mode}'")


def _nearest(x: np.ndarray, rule: str) -> np.ndarray:
    if rule == "floor":
        return np.floor(x)
    if rule == "ceil":
        return np.ceil(x)
    half = x - np.floor(x) == 0.5
    if rule == "round_prefer_ceil":
        return np.where(half, np.ceil(x), np.round(x))
    if rule == "round_prefer_floor":
        return np.where(half, np.floor(x), np.round(x))
    raise ValueError(f"nearest_mode '{rule}'")


def _filter_taps(
    mode: str, ratio: np.ndarray, shrink: float, a: float
) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from floor(x), weights [out, taps]) of the linear or Keys-cubic filter.

    `shrink` < 1 widens the filter by 1/shrink (antialiased downsampling); the weights are
    then renormalized, as ONNX does.
    """
    reach = 1 if mode == "linear" else 2
    start = int(np.floor(-reach / shrink) + 1)
    offsets = np.arange(start, 2 - start)
    t = np.abs((offsets[None, :] - ratio[:, None]) * shrink)
    if mode == "linear":
        weight = np.clip(1 - t, 0, 1)
    else:
        near = ((a + 2) * t - (a + 3)) * t * t + 1
        far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
        weight = np.where(t <= 1, near, np.where(t < 2, far, 0.0))
    if shrink < 1:
        weight = weight / weight.sum(axis=1, keepdims=True)
    return offsets, weight


def _resize_taps(
    node: _Node, in_size: int, out_size: int, scale: float, roi: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(index [out, taps], weight [out, taps], extrapolated positions or None) of one axis."""
    a = node.attrs

    def text(key: str, default: str) -> str:
        value = a.get(key, default)
        return value.decode() if isinstance(value, bytes) else value

    mode, coord = text("mode", "nearest"), text("coordinate_transformation_mode", "half_pixel")
    if node.opset < 11:
        coord = "asymmetric"
    x = _source_coordinates(coord, out_size, in_size, scale, roi)
    outside = None
    if coord == "tf_crop_and_resize":
        outside = (x < 0) | (x > in_size - 1)
    if mode == "nearest":
        rule = "floor" if node.opset < 11 else text("nearest_mode", "round_prefer_floor")
        index = np.clip(_nearest(x, rule), 0, in_size - 1).astype(np.int64)[:, None]
        weight = np.ones((out_size, 1))
    else:
        base = np.floor(x)
        # A coordinate on a sample point takes ratio 1 from its left neighbour (as ONNX does).
        exact = base == x
        base = np.where(exact, base - 1, base)
        ratio = x - base
        if mode not in ("linear", "cubic"):
            raise node.unsupported(f"mode '{mode}'")
        shrink = min(scale, 1.0) if a.get("antialias", 0) else 1.0
        offsets, weight = _filter_taps(mode, ratio, shrink, float(a.get("cubic_coeff_a", -0.75)))
        raw = base.astype(np.int64)[:, None] + offsets[None, :]
        if a.get("exclude_outside", 0):
            weight = np.where((raw < 0) | (raw >= in_size), 0.0, weight)
            weight = weight / weight.sum(axis=1, keepdims=True)
        index = np.clip(raw, 0, in_size - 1)
    if outside is not None:
        weight = np.where(outside[:, None], 0.0, weight)
    return index, weight, outside if outside is not None and outside.any() else None


# Per-tap gathers (fused into one elementwise sum) up to this many taps per output; beyond,
# one gather of all taps and a reduction.
_MAX_UNROLLED_TAPS = 8


def _weighted(imp: _Importer, node: _Node, term: Value, weight: np.ndarray) -> Value:
    """term * weight, and exactly 0 where the weight is 0: a tap that does not count reads no
    NaN or inf into the result (NaN * 0 is NaN). Which zero-weight taps an implementation
    reads is arbitrary (onnxruntime's and onnx.reference's differ), so only this rule makes a
    NaN reach just the outputs that weigh it."""
    y = term
    if not np.all((weight == 0) | (weight == 1)):
        y = imp.binary(node, graph.MulOp, term, _Const(weight.astype(_dtype(term))))
    if np.any(weight == 0):
        zero = _scalar(0.0, term)
        y = imp.emit(graph.WhereOp, [_Const(weight != 0), y, zero], _shape(y), _dtype(term))
    return y


def _resize_axis(
    imp: _Importer,
    node: _Node,
    x: Value,
    axis: int,
    out_size: int,
    scale: float,
    roi: tuple[float, float],
) -> Value:
    shape = _shape(x)
    index, weight, outside = _resize_taps(node, shape[axis], out_size, scale, roi)
    trailing = [1] * (len(shape) - axis - 1)
    dtype = _dtype(x)
    taps = [t for t in range(index.shape[1]) if weight[:, t].any()]
    y: Value | None = None
    if len(taps) > _MAX_UNROLLED_TAPS:
        # Antialiased downsampling widens the filter with the ratio: gather every tap at once
        # into a new axis, weight and sum it, so that the op count does not grow with it.
        gathered = _gather_axis(imp, x, axis, index[:, taps].reshape(-1))
        split = [*shape[:axis], out_size, len(taps), *shape[axis + 1 :]]
        w = weight[:, taps].reshape(out_size, len(taps), *trailing)
        y = _weighted(imp, node, imp.reshape(gathered, split), w)
        y = _reduce(imp, node, y, "sum", [axis + 1], False)
        taps = []
    for t in taps:
        term = _gather_axis(imp, x, axis, index[:, t])
        term = _weighted(imp, node, term, weight[:, t].reshape(-1, *trailing))
        y = term if y is None else imp.binary(node, graph.AddOp, y, term)
    if y is None or outside is not None:
        fill = np.where(outside if outside is not None else True, 1.0, 0.0)
        value = float(node.attrs.get("extrapolation_value", 0.0))
        extra = _Const((fill * value).astype(dtype).reshape(-1, *trailing))
        if y is None:  # every position extrapolated: the fill, in the output's shape
            grown = [*shape[:axis], out_size, *shape[axis + 1 :]]
            return imp.emit(graph.ExpandOp, [extra], grown)
        y = imp.binary(node, graph.AddOp, y, extra)
    return y


@_converts("Resize", "Upsample")
def _resize(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = _shape(x)
    rank = len(shape)
    if node.opset < 11:
        roi, scales, sizes = None, imp.constant(node, 1, "scales"), None
    else:
        roi, scales = imp.constant(node, 1, "roi"), imp.constant(node, 2, "scales")
        sizes = imp.constant(node, 3, "sizes")
    axes = [_axis(node, int(v), rank) for v in node.attrs.get("axes", range(rank))]
    if scales is not None and scales.size:
        factors = [float(s) for s in scales]
        out = [int(math.floor(shape[a] * f)) for a, f in zip(axes, factors, strict=True)]
    elif sizes is not None and sizes.size:
        out = [int(s) for s in sizes]
        factors = [o / shape[a] for a, o in zip(axes, out, strict=True)]
        policy = node.attrs.get("keep_aspect_ratio_policy", b"stretch")
        policy = policy.decode() if isinstance(policy, bytes) else policy
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            factor = pick(factors)
            factors = [factor] * len(axes)
            # ONNX rounds half away from zero here (std::round in the reference kernels).
            out = [int(math.floor(shape[a] * factor + 0.5)) for a in axes]
    else:
        raise node.error("one of scales and sizes must be given")
    if len(out) != len(axes):
        raise node.error(f"{len(out)} scales/sizes for {len(axes)} axes")
    if any(n <= 0 for n in out) or any(not f > 0 for f in factors):
        raise node.error(f"scales {factors} / sizes {out} must be positive")
    roi_values = [] if roi is None or roi.size == 0 else [float(v) for v in roi]
    y = x
    for k, axis in enumerate(axes):
        if roi_values:
            box = (roi_values[k], roi_values[k + len(axes)])
        else:
            box = (0.0, 1.0)
        if out[k] == shape[axis] and factors[k] == 1.0 and not roi_values:
            continue
        y = _resize_axis(imp, node, y, axis, out[k], factors[k], box)
    return [y]


# ---------------------------------------------------------------------------------------------
# GatherElements and the losses built on it


def _gather_elements(
    imp: _Importer, data: Value, indices: Value, axis: int, ignore: int | None = None
) -> Value:
    props = {"axis": _i64(axis), "ignore_index": None if ignore is None else _i64(ignore)}
    return imp.emit(graph.GatherElementsOp, [data, indices], _shape(indices), _dtype(data), **props)


@_converts("GatherElements")
def _gather_elements_op(imp: _Importer, node: _Node) -> Sequence[Value]:
    data, indices = imp.required(node, 0), imp.required(node, 1)
    rank = len(_shape(data))
    axis = _axis(node, node.attrs.get("axis", 0), rank)
    if _dtype(indices).kind not in "iu":
        raise node.error("indices must be an integer tensor")
    ds, ix = _shape(data), _shape(indices)
    if len(ix) != rank or any(d != axis and ds[d] not in (1, ix[d]) for d in range(rank)):
        raise node.error(f"indices {ix} do not fit data {ds} along axis {axis}")
    return [_gather_elements(imp, data, indices, axis)]


def _nll_loss(
    imp: _Importer, node: _Node, log_prob: Value, target: Value, weight: Value | None
) -> Value:
    """NegativeLogLikelihoodLoss: -log_prob[n, target[n, ...], ...] * weight[target], reduced."""
    shape = _shape(log_prob)
    n, c, rest = shape[0], shape[1], list(shape[2:])
    if _shape(target) != (n, *rest):
        raise node.error(f"target {_shape(target)} does not match input {shape}")
    reduction = node.attrs.get("reduction", b"mean")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    if reduction not in ("none", "sum", "mean"):
        raise node.error(f"unknown reduction '{reduction}'")
    ignore = node.attrs.get("ignore_index")
    picked_shape = [n, 1, *rest]
    chosen = imp.reshape(target, picked_shape)
    picked = _gather_elements(imp, log_prob, chosen, 1, ignore)
    per_class = [1, c] + [1] * len(rest)
    weights: Value | None = None
    if weight is not None:
        weights = _gather_elements(imp, imp.reshape(weight, per_class), chosen, 1, ignore)
    elif ignore is not None:  # weight 1, or 0 where the target is ignored
        ones = _Const(np.ones(per_class, _dtype(log_prob)))
        weights = _gather_elements(imp, ones, chosen, 1, ignore)
    terms = picked if weights is None else imp.binary(node, graph.MulOp, picked, weights)
    terms = imp.reshape(_unary(imp, graph.NegOp, terms), [n, *rest])
    if reduction == "none":
        return terms
    everything = list(range(len(rest) + 1))
    total = _reduce(imp, node, terms, "sum", everything, False)
    if reduction == "sum":
        return total
    if weights is None:
        count: Value = _scalar(float(math.prod([n, *rest])), total)
    else:
        count = _reduce(imp, node, weights, "sum", list(range(len(rest) + 2)), False)
    return imp.binary(node, graph.DivOp, total, count)


@_converts("NegativeLogLikelihoodLoss")
def _nll_loss_op(imp: _Importer, node: _Node) -> Sequence[Value]:
    log_prob, target = imp.required(node, 0), imp.required(node, 1)
    return [_nll_loss(imp, node, log_prob, target, imp.input(node, 2))]


@_converts("SoftmaxCrossEntropyLoss")
def _softmax_cross_entropy(imp: _Importer, node: _Node) -> Sequence[Value]:
    scores, labels = imp.required(node, 0), imp.required(node, 1)
    shape = _shape(scores)
    if len(shape) < 2:
        raise node.error(f"scores of shape {shape} have no class axis")
    log_prob = imp.emit(graph.SoftmaxOp, [scores], shape, axis=_i64(1), log=UnitAttr())
    return [_nll_loss(imp, node, log_prob, labels, imp.input(node, 2)), log_prob]


# ---------------------------------------------------------------------------------------------
# OneHot and Hardmax


def _one_hot(imp: _Importer, indices: Value, values: Value, depth: int, axis: int) -> Value:
    if _dtype(indices) != np.int64:
        indices = imp.emit(graph.CastOp, [indices], _shape(indices), np.dtype(np.int64))
    out = list(_shape(indices))
    out.insert(axis, depth)
    return imp.emit(graph.OneHotOp, [indices, values], out, _dtype(values), axis=_i64(axis))


@_converts("OneHot")
def _one_hot_op(imp: _Importer, node: _Node) -> Sequence[Value]:
    indices, values = imp.required(node, 0), imp.required(node, 2)
    depth_in = imp.constant(node, 1, "depth")
    assert depth_in is not None
    depth = int(depth_in.reshape(-1)[0])
    if depth < 1 or _shape(values) != (2,):
        raise node.error(f"depth {depth} and values of shape {_shape(values)}")
    axis = _axis(node, node.attrs.get("axis", -1), len(_shape(indices)) + 1)
    return [_one_hot(imp, indices, values, depth, axis)]


@_converts("Hardmax")
def _hardmax(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = _shape(x)
    if node.opset < 13:  # coerced to 2-D at `axis`, as Softmax was
        axis = _axis(node, node.attrs.get("axis", 1), len(shape))
        rows = [math.prod(shape[:axis]), math.prod(shape[axis:])]
        return [imp.reshape(_hardmax_along(imp, imp.reshape(x, rows), 1), shape)]
    return [_hardmax_along(imp, x, _axis(node, node.attrs.get("axis", -1), len(shape)))]


def _hardmax_along(imp: _Importer, x: Value, axis: int) -> Value:
    """1 at the first maximum along `axis`, 0 elsewhere: one_hot(argmax)."""
    shape = _shape(x)
    kept = [1 if i == axis else d for i, d in enumerate(shape)]
    first = imp.emit(
        graph.ArgReduceOp,
        [x],
        kept,
        np.dtype(np.int64),
        kind=StringAttr("max"),
        axis=_i64(axis),
        select_last_index=_i64(0),
    )
    first = imp.reshape(first, [d for i, d in enumerate(shape) if i != axis])
    return _one_hot(imp, first, _Const(np.array([0, 1], _dtype(x))), shape[axis], axis)


@_converts("ScatterElements", "Scatter")
def _scatter_elements(imp: _Importer, node: _Node) -> Sequence[Value]:
    data, indices, updates = (imp.required(node, i) for i in range(3))
    rank = len(_shape(data))
    axis = _axis(node, node.attrs.get("axis", 0), rank)
    reduction = node.attrs.get("reduction", b"none")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    if reduction not in graph.ScatterElementsOp.REDUCTIONS:
        raise node.unsupported(f"reduction '{reduction}'")
    d, i = _shape(data), _shape(indices)
    if (
        i != _shape(updates)
        or len(i) != rank
        or any(k != axis and i[k] > d[k] for k in range(rank))
    ):
        raise node.error(f"indices {i} / updates {_shape(updates)} do not fit data {d}")
    return [
        imp.emit(
            graph.ScatterElementsOp,
            [data, indices, updates],
            d,
            axis=_i64(axis),
            reduction=StringAttr(reduction),
        )
    ]


@_converts("TopK")
def _top_k(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = _shape(x)
    axis = _axis(node, node.attrs.get("axis", -1), len(shape))
    if node.opset < 10:
        k = int(node.attrs["k"])
    else:
        k_in = imp.constant(node, 1, "K")
        assert k_in is not None
        k = int(k_in.reshape(-1)[0])
    if not 1 <= k <= shape[axis]:
        raise node.unsupported(f"k = {k} for an axis of {shape[axis]}")
    out = [k if d == axis else n for d, n in enumerate(shape)]
    largest = node.attrs.get("largest", 1)
    indices = imp.emit(
        graph.TopKOp, [x], out, np.dtype(np.int64), axis=_i64(axis), largest=_i64(largest)
    )
    # Always sorted (sorted=0 leaves the order unspecified); values are gathered by index.
    return [_gather_elements(imp, x, indices, axis), indices]


# ---------------------------------------------------------------------------------------------
# The convolution family in 1, 2 and 3 dims, on the 2-D (NCHW) kernels
#
# - 1-D: a problem over N×C×L is the 2-D one over N×C×1×L with a neutral leading window axis;
#   `_on_2d_kernel` lifts the operands and drops the unit axis of the result, for Conv,
#   ConvTranspose and pooling alike (reshapes of constant weights fold at compile time).
# - 3-D convolution folds its depth taps into channels: the KD input slices that each output
#   depth reads are gathered beside each other, and one 2-D convolution with a
#   [Cout, KD*Cin/g, KH, KW] filter runs over all N*OD output slices at once (`_conv3d`): the
#   real kernel's FLOPs, in one GEMM-shaped call, for a KD-fold copy of the input.
# - 3-D pooling is separable: a 2-D pool over (H, W), then one over D (`_pool_nd`).
# - ConvTranspose: strided and undilated, one convolution over the stride phases
#   (`_conv_transpose_by_phases`); otherwise a stride-1 convolution of the zero-stuffed input
#   with the flipped filter.


@dataclass(frozen=True)
class _Window:
    """A sliding window's geometry, one entry per spatial axis; pads are begins then ends."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]

    @staticmethod
    def of(
        kernel: Sequence[int],
        strides: Sequence[int],
        dilations: Sequence[int],
        pads: Sequence[int],
    ) -> _Window:
        return _Window(
            tuple(int(k) for k in kernel),
            tuple(int(s) for s in strides),
            tuple(int(d) for d in dilations),
            tuple(int(p) for p in pads),
        )

    def axes(self, first: int, count: int) -> _Window:
        """The window over spatial axes first .. first + count - 1."""
        rank, last = len(self.kernel), first + count
        return _Window(
            self.kernel[first:last],
            self.strides[first:last],
            self.dilations[first:last],
            self.pads[first:last] + self.pads[rank + first : rank + last],
        )

    def lifted(self) -> _Window:
        """This 1-D window as a 2-D one of height 1."""
        (k,), (s,), (d,), (begin, end) = self.kernel, self.strides, self.dilations, self.pads
        return _Window((1, k), (1, s), (1, d), (0, begin, 0, end))


def _on_2d_kernel(
    imp: _Importer,
    operands: Sequence[Value],
    window: _Window,
    emit_2d: Callable[[Sequence[Value], _Window], Value],
) -> Value:
    """emit_2d (a 2-D windowed op on NCHW operands) applied to 2-D or 1-D operands: 1-D ones
    (N×C×L inputs, O×I×K filters) are viewed with a unit height and the result without it."""
    if len(window.kernel) == 2:
        return emit_2d(operands, window)
    assert len(window.kernel) == 1, window
    lifted = [imp.reshape(v, [*_shape(v)[:2], 1, *_shape(v)[2:]]) for v in operands]
    y = emit_2d(lifted, window.lifted())
    ys = _shape(y)
    return imp.reshape(y, [ys[0], ys[1], ys[3]])


def _transpose(imp: _Importer, x: Value, perm: Sequence[int]) -> Value:
    shape = _shape(x)
    return imp.emit(
        graph.TransposeOp, [x], [shape[p] for p in perm], perm=graph.i64_array(list(perm))
    )


def _in_float32(
    imp: _Importer, node: _Node, operands: Sequence[Value | None], exact_ints: bool = False
) -> tuple[list[Value | None], Callable[[Value], Value]]:
    """The operands as float32 (the windowed kernels' only type) and the cast of a float32
    result back to the operands' type. 16-bit floats widen (and are rounded once, at the end);
    small integers, which float32 holds exactly, only where `exact_ints` (max pooling); any
    other type is refused rather than silently rounded."""
    dtype = _dtype(next(v for v in operands if v is not None))
    if dtype == np.float32:
        return list(operands), lambda y: y
    widens = dtype.kind in "fV" and dtype.itemsize < 4
    if not (widens or (exact_ints and dtype.kind in "iu" and dtype.itemsize <= 2)):
        raise node.unsupported(
            f"{node.op_type} on {dtype} tensors (its kernel computes in float32, which does "
            f"not hold {dtype} exactly)"
        )
    f32 = np.dtype(np.float32)
    widened = [None if v is None else imp.emit(graph.CastOp, [v], _shape(v), f32) for v in operands]
    return widened, lambda y: imp.emit(graph.CastOp, [y], _shape(y), dtype)


def _spatial_rank(node: _Node, x: Value, w: Value) -> int:
    """The number of spatial axes of a convolution of x by w: 1, 2 or 3, else refused."""
    xs, ws = _shape(x), _shape(w)
    spatial = len(xs) - 2
    if spatial not in (1, 2, 3):
        raise node.unsupported(
            f"{node.op_type} over {spatial} spatial dims (input rank {len(xs)}, shape {xs}); "
            "1-D, 2-D and 3-D are supported"
        )
    if len(ws) != len(xs):
        raise node.error(f"weight {ws} and input {xs} differ in rank")
    kernel = node.attrs.get("kernel_shape")
    if kernel is not None and tuple(kernel) != ws[2:]:
        raise node.error(f"kernel_shape {list(kernel)} does not match weight {ws}")
    return spatial


def _conv2d(
    imp: _Importer,
    x: Value,
    w: Value,
    bias: Value | None,
    window: _Window,
    group: int,
    out: Sequence[int],
) -> Value:
    return imp.emit(
        graph.ConvOp,
        [x, w, bias, None],
        [_shape(x)[0], _shape(w)[0], *out],
        strides=graph.i64_array(window.strides),
        pads=graph.i64_array(window.pads),
        dilations=graph.i64_array(window.dilations),
        group=_i64(group),
    )


def _conv3d(
    imp: _Importer,
    x: Value,
    w: Value,
    bias: Value | None,
    window: _Window,
    group: int,
    out: Sequence[int],
) -> Value:
    """A 3-D convolution as one 2-D convolution over the output depth slices (see above)."""
    n, c, _, h, wd = _shape(x)
    cout, per_group, kd = _shape(w)[:3]
    depth = window.axes(0, 1)
    od = out[0]
    padded = _pad_constant(imp, x, 2, depth.pads[0], depth.pads[1])
    taps = np.arange(od)[:, None] * depth.strides[0] + np.arange(kd) * depth.dilations[0]
    slices = _gather_axis(imp, padded, 2, taps.reshape(-1))  # N, C, OD*KD, H, W
    # Input channels of a group g become g's KD taps of its C/g channels, in that order.
    split = imp.reshape(slices, [n, group, c // group, od, kd, h * wd])
    stacked = _transpose(imp, split, [0, 3, 1, 4, 2, 5])  # N, OD, g, KD, C/g, H*W
    planes = imp.reshape(stacked, [n * od, group * kd * (c // group), h, wd])
    filt = _transpose(imp, w, [0, 2, 1, 3, 4])  # Cout, KD, C/g, KH, KW
    filt = imp.reshape(filt, [cout, kd * per_group, *_shape(w)[3:]])
    y = _conv2d(imp, planes, filt, bias, window.axes(1, 2), group, out[1:])
    y = _transpose(imp, imp.reshape(y, [n, od, cout, out[1] * out[2]]), [0, 2, 1, 3])
    return imp.reshape(y, [n, cout, *out])


def _conv_nd(
    imp: _Importer,
    x: Value,
    w: Value,
    bias: Value | None,
    window: _Window,
    group: int,
    out: Sequence[int],
) -> Value:
    """Convolution of N×C×spatial x by O×(C/group)×kernel w over 1, 2 or 3 spatial dims."""
    if len(window.kernel) == 3:
        return _conv3d(imp, x, w, bias, window, group, out)
    spatial_out = [1, *out][-2:]
    return _on_2d_kernel(
        imp,
        [x, w],
        window,
        lambda xw, win: _conv2d(imp, xw[0], xw[1], bias, win, group, spatial_out),
    )


@_converts("Conv")
def _conv(imp: _Importer, node: _Node) -> Sequence[Value]:
    x, w, bias = imp.required(node, 0), imp.required(node, 1), imp.input(node, 2)
    spatial = _spatial_rank(node, x, w)
    (x, w, bias), restore = _in_float32(imp, node, [x, w, bias])
    assert x is not None and w is not None
    xs, ws = _shape(x), _shape(w)
    group = int(node.attrs.get("group", 1))
    if group <= 0 or xs[1] != ws[1] * group or ws[0] % group:
        raise node.error(f"input {xs}, weight {ws} and group {group} do not match")
    kernel = list(ws[2:])
    strides = list(node.attrs.get("strides", [1] * spatial))
    dilations = list(node.attrs.get("dilations", [1] * spatial))
    out, pads = _window_geometry(node, xs[2:], kernel, strides, dilations)
    window = _Window.of(kernel, strides, dilations, pads)
    return [restore(_conv_nd(imp, x, w, bias, window, group, out))]


def _stuff_zeros(imp: _Importer, x: Value, strides: Sequence[int]) -> Value:
    """Insert stride-1 zeros between neighbours along each spatial axis of NCHW x."""
    for k, stride in enumerate(strides):
        if stride == 1:
            continue
        axis = 2 + k
        shape = list(_shape(x))
        size = shape[axis]
        # [.., size, ..] -> [.., size, 1, ..] ++ zeros [.., size, stride-1, ..] -> [.., size*stride, ..]
        wide = [*shape[: axis + 1], 1, *shape[axis + 1 :]]
        y = _pad_constant(imp, imp.reshape(x, wide), axis + 1, 0, stride - 1)
        shape[axis] = size * stride
        x = _slice_axis(imp, imp.reshape(y, shape), axis, 0, (size - 1) * stride + 1)
    return x


def _conv_transpose_by_phases(
    imp: _Importer,
    x: Value,
    w: Value,
    bias: Value | None,
    group: int,
    strides: Sequence[int],
    begin: Sequence[int],
    out: Sequence[int],
) -> Value:
    """A strided, undilated ConvTranspose as one stride-1 convolution whose output channels
    are the stride phases (sub-pixel convolution).

    Position q*s + r of the full result only meets filter taps k = j*s + r, so phase r is
    y_r[q] = sum_j x[q - j] * w[j*s + r]: a convolution of x with those J = ceil(K/s) taps,
    flipped. All phases of all axes are the output channels of one convolution (ordered group,
    phases, channel so that groups stay contiguous), interleaved back by a reshape-transpose.
    This does the transposed convolution's FLOPs, where zero-stuffing multiplies s-1 of every
    s inputs by zero.
    """
    xs, ws = _shape(x), _shape(w)
    spatial = len(xs) - 2
    cin, per_group, kernel = ws[0], ws[1], ws[2:]
    taps = [-(-k // s) for k, s in zip(kernel, strides)]
    phases = math.prod(strides)
    # Filter [Cin, Cout/g, K..] -> [g * phases * Cout/g, Cin/g, J..], taps flipped.
    filt = w
    for a in range(spatial):
        filt = _pad_constant(imp, filt, 2 + a, 0, taps[a] * strides[a] - kernel[a])
    per_axis = [d for a in range(spatial) for d in (taps[a], strides[a])]
    filt = imp.reshape(filt, [group, cin // group, per_group, *per_axis])
    for a in range(spatial):
        filt = _gather_axis(imp, filt, 3 + 2 * a, np.arange(taps[a])[::-1].copy())
    phase_axes = [4 + 2 * a for a in range(spatial)]
    tap_axes = [3 + 2 * a for a in range(spatial)]
    filt = _transpose(imp, filt, [0, *phase_axes, 2, 1, *tap_axes])
    filt = imp.reshape(filt, [group * phases * per_group, cin // group, *taps])
    if bias is not None:  # the bias of channel (g, c) for every phase of it
        grouped_bias = imp.reshape(bias, [group, 1, per_group])
        bias = imp.reshape(_concat(imp, [grouped_bias] * phases, 1), [group * phases * per_group])
    # Stride-1 convolution padded J-1 before (full correlation) and J after (room for
    # output_padding): Q = L + J outputs per phase and axis.
    window = _Window.of(taps, [1] * spatial, [1] * spatial, [t - 1 for t in taps] + taps)
    sizes = [n + t for n, t in zip(xs[2:], taps)]
    y = _conv_nd(imp, x, filt, bias, window, group, sizes)
    # [N, g * phases * C/g, Q..] -> [N, g, s.., C/g, Q..] -> [N, g, C/g, Q1, s1, ..] -> [N, C, Q*s..]
    y = imp.reshape(y, [xs[0], group, *strides, per_group, *sizes])
    interleaved = [d for a in range(spatial) for d in (3 + spatial + a, 2 + a)]
    y = _transpose(imp, y, [0, 1, 2 + spatial, *interleaved])
    y = imp.reshape(y, [xs[0], group * per_group, *[q * s for q, s in zip(sizes, strides)]])
    for a in range(spatial):
        y = _slice_axis(imp, y, 2 + a, begin[a], out[a])
    return y


@_converts("ConvTranspose")
def _conv_transpose(imp: _Importer, node: _Node) -> Sequence[Value]:
    x, w, bias = imp.required(node, 0), imp.required(node, 1), imp.input(node, 2)
    spatial = _spatial_rank(node, x, w)
    (x, w, bias), restore = _in_float32(imp, node, [x, w, bias])
    assert x is not None and w is not None
    xs, ws = _shape(x), _shape(w)
    a = node.attrs
    group = int(a.get("group", 1))
    kernel = list(ws[2:])
    strides = list(a.get("strides", [1] * spatial))
    dilations = list(a.get("dilations", [1] * spatial))
    extra = list(a.get("output_padding", [0] * spatial))
    cin = xs[1]
    if group <= 0 or ws[0] != cin or cin % group:
        raise node.error(f"input {xs}, weight {ws} and group {group} do not match")
    cout = ws[1] * group
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    full = [s * (n - 1) + e + o for s, n, e, o in zip(strides, xs[2:], extent, extra)]
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if "output_shape" in a or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        wanted = list(a["output_shape"])[-spatial:] if "output_shape" in a else None
        if wanted is None:
            wanted = [n * s for n, s in zip(xs[2:], strides)]
        totals = [f - o for f, o in zip(full, wanted)]
        same = auto_pad in ("SAME_UPPER", "SAME_LOWER")
        if same and any(t < 0 for t in totals):
            # A kernel extent below the stride: onnxruntime (and ONNX shape inference) clamp
            # the padding to 0 and shrink the output, the ONNX reference keeps the size and
            # places the extra outputs elsewhere. No answer is safe.
            raise node.unsupported(
                f"auto_pad {auto_pad} with an output of {wanted} beyond the {full} that input "
                f"{xs} and kernel extent {extent} reach (onnxruntime and the ONNX reference "
                "disagree on such outputs)"
            )
        if any(-t >= s for t, s in zip(totals, strides)):
            raise node.error(
                f"output_shape {wanted} is beyond the {full} that input {xs}, strides "
                f"{strides} and kernel extent {extent} reach with an output_padding below the "
                "stride"
            )
        upper = auto_pad == "SAME_UPPER"
        # An output_shape beyond the full result extends it at the end (negative end pads).
        begin = [0 if t < 0 else t // 2 if upper else t - t // 2 for t in totals]
        end = [t - b for t, b in zip(totals, begin)]
    else:
        pads = list(a.get("pads", [0] * 2 * spatial))
        begin, end = pads[:spatial], pads[spatial:]
    wanted = [f - b - e for f, b, e in zip(full, begin, end)]
    if any(n <= 0 for n in wanted):
        raise node.error(f"output size {wanted} is not positive")
    # The phase form covers outputs up to (L + ceil(K/s)) * s, past any output_padding < s.
    reach = [(n + -(-k // s)) * s for n, k, s in zip(xs[2:], kernel, strides)]
    covered = all(0 <= b and b + n <= r for b, n, r in zip(begin, wanted, reach))
    if any(s > 1 for s in strides) and all(d == 1 for d in dilations) and covered:
        return [restore(_conv_transpose_by_phases(imp, x, w, bias, group, strides, begin, wanted))]
    # Filter: [Cin, Cout/g, k..] -> [Cout, Cin/g, k..], flipped in space.
    grouped = imp.reshape(w, [group, cin // group, cout // group, *kernel])
    swapped = _transpose(imp, grouped, [0, 2, 1, *range(3, 3 + spatial)])
    filt = imp.reshape(swapped, [cout, cin // group, *kernel])
    for k in range(spatial):
        filt = _gather_axis(imp, filt, 2 + k, np.arange(kernel[k])[::-1].copy())
    # Input: zero-stuffed, then padded so that a stride-1 convolution yields the output.
    y = _stuff_zeros(imp, x, strides)
    for k in range(spatial):
        y = _pad_constant(
            imp, y, 2 + k, extent[k] - 1 - begin[k], extent[k] - 1 - end[k] + extra[k]
        )
    window = _Window.of(kernel, [1] * spatial, dilations, [0] * 2 * spatial)
    return [restore(_conv_nd(imp, y, filt, bias, window, group, wanted))]


# ---------------------------------------------------------------------------------------------
# Pooling (1-D and 3-D as above)


def _pool2d(
    imp: _Importer,
    x: Value,
    kind: str,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    out_hw: Sequence[int],
    include_pad: bool,
) -> Value:
    props = {
        "kernel_shape": graph.i64_array(kernel),
        "strides": graph.i64_array(strides),
        "pads": graph.i64_array(pads),
    }
    out = [*_shape(x)[:2], *out_hw]
    if kind == "max":
        return imp.emit(graph.MaxPoolOp, [x], out, **props)
    return imp.emit(
        graph.AveragePoolOp, [x], out, count_include_pad=_i64(int(include_pad)), **props
    )


def _pool_nd(
    imp: _Importer,
    x: Value,
    kind: str,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    out: Sequence[int],
    include_pad: bool,
    dilations: Sequence[int] = (),
) -> Value:
    """Max or average pooling over the 1, 2 or 3 trailing dims of x (pads: begins, ends).

    Both are separable: a max (or, with per-axis counts, an average) over a box is the same
    over one axis of the same over the others, padding and clipped windows included.
    """
    xs = _shape(x)
    n, c, spatial = xs[0], xs[1], len(xs) - 2
    if spatial == 2:
        return _pool2d(imp, x, kind, kernel, strides, pads, out, include_pad)
    if spatial == 1:
        return _on_2d_kernel(
            imp,
            [x],
            _Window.of(kernel, strides, [1], pads),
            lambda v, win: _pool2d(
                imp, v[0], kind, win.kernel, win.strides, win.pads, [1, *out], include_pad
            ),
        )
    d, h, w = xs[2:]
    planes = imp.reshape(x, [n, c * d, h, w])
    hw = [pads[1], pads[2], pads[4], pads[5]]
    y = _pool2d(imp, planes, kind, kernel[1:], strides[1:], hw, out[1:], include_pad)
    depth = imp.reshape(y, [n, c, d, out[1] * out[2]])
    y = _pool2d(
        imp,
        depth,
        kind,
        [kernel[0], 1],
        [strides[0], 1],
        [pads[0], 0, pads[3], 0],
        [out[0], out[1] * out[2]],
        include_pad,
    )
    return imp.reshape(y, [n, c, *out])


def _dilated_pool(
    imp: _Importer,
    x: Value,
    kind: str,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    out: Sequence[int],
    include_pad: bool,
    dilations: Sequence[int],
) -> Value:
    """Pooling with dilated windows, one spatial axis at a time: each of the k taps is a
    gather of the padded input, folded by max or add; averages divide by each output's
    per-axis count of taps inside the input (or its padding, with count_include_pad)."""
    spatial = len(out)
    fill = -np.inf if kind == "max" else 0.0
    combine = graph.MaxOp if kind == "max" else graph.AddOp
    for a in range(spatial):
        axis, size = 2 + a, _shape(x)[2 + a]
        k, s, d, begin, end = kernel[a], strides[a], dilations[a], pads[a], pads[a + spatial]
        taps = np.arange(out[a])[:, None] * s + np.arange(k)[None, :] * d  # padded coords
        # Ceil-mode windows may reach past the end padding: extend it with the fill too.
        beyond = max(0, int(taps.max()) + 1 - (size + begin + end))
        padded = _pad_constant(imp, x, axis, begin, end + beyond, fill)
        acc: Value | None = None
        for j in range(k):
            tap = _gather_axis(imp, padded, axis, taps[:, j])
            acc = tap if acc is None else imp.emit(combine, [acc, tap], _shape(tap))
        assert acc is not None
        if kind == "avg":
            lo, hi = (-begin, size + end) if include_pad else (0, size)
            inside = ((taps - begin >= lo) & (taps - begin < hi)).sum(axis=1)
            scale = (1.0 / np.maximum(inside, 1)).astype(_dtype(x))
            trailing = [1] * (spatial - a - 1)
            acc = imp.emit(graph.MulOp, [acc, _Const(scale.reshape(-1, *trailing))], _shape(acc))
        x = acc
    return x


def _power(imp: _Importer, node: _Node, x: Value, p: float) -> Value:
    if p == 1:
        return _unary(imp, graph.AbsOp, x)
    if p == 2:
        return imp.binary(node, graph.MulOp, x, x)
    return imp.binary(node, graph.PowOp, _unary(imp, graph.AbsOp, x), _scalar(p, x))


def _root(imp: _Importer, node: _Node, x: Value, p: float) -> Value:
    if p == 1:
        return x
    if p == 2:
        return _unary(imp, graph.SqrtOp, x)
    return imp.binary(node, graph.PowOp, x, _scalar(1.0 / p, x))


def _max_pool_with_indices(
    imp: _Importer, node: _Node, x: Value, window: _Window, out: Sequence[int], column_major: bool
) -> tuple[Value, Value]:
    """MaxPool's values and Indices output: the taps of every window gathered side by side
    into one trailing axis (padding as -inf), its max the value and its first argmax (ONNX's
    and onnxruntime's tie rule) mapped by constant tables to the flat index into x, over
    N, C and the spatial dims row-major (or, with storage_order=1, spatial dims
    column-major)."""
    xs = _shape(x)
    n, c, sizes = xs[0], xs[1], xs[2:]
    spatial = len(sizes)
    taps = x
    origins = []
    for a in range(spatial):
        k, s, d = window.kernel[a], window.strides[a], window.dilations[a]
        begin, end = window.pads[a], window.pads[a + spatial]
        coords = np.arange(out[a])[:, None] * s + np.arange(k) * d  # in the padded input
        beyond = max(0, int(coords.max()) + 1 - (sizes[a] + begin + end))
        padded = _pad_constant(imp, taps, 2 + a, begin, end + beyond, -np.inf)
        taps = _gather_axis(imp, padded, 2 + a, coords.reshape(-1))
        origins.append(np.arange(out[a]) * s - begin)
    # [N, C, o1*k1, ..] -> [N, C, o1, k1, ..] -> [N, C, o.., k..] -> [N, C, o.., K]
    taps = imp.reshape(
        taps, [n, c, *[v for a in range(spatial) for v in (out[a], window.kernel[a])]]
    )
    perm = [0, 1, *[2 + 2 * a for a in range(spatial)], *[3 + 2 * a for a in range(spatial)]]
    taps = imp.reshape(_transpose(imp, taps, perm), [n, c, *out, math.prod(window.kernel)])
    last = 2 + spatial
    values = _reduce(imp, node, taps, "max", [last], False)
    tap = imp.emit(
        graph.ArgReduceOp,
        [taps],
        [n, c, *out, 1],
        np.dtype(np.int64),
        kind=StringAttr("max"),
        axis=_i64(last),
        select_last_index=_i64(0),
    )
    tap = imp.reshape(tap, [n, c, *out])
    # Flat index = plane (n, c) + window origin + the tap's offset in the window.
    order = range(spatial) if column_major else range(spatial - 1, -1, -1)
    step, steps = 1, [0] * spatial
    for a in order:
        steps[a], step = step, step * sizes[a]
    tap_offsets = sum(
        j * window.dilations[a] * steps[a]
        for a, j in enumerate(np.indices(window.kernel).reshape(spatial, -1))
    )
    origin = np.zeros(out, np.int64)
    for a in range(spatial):
        origin = origin + (origins[a] * steps[a]).reshape(-1, *[1] * (spatial - a - 1))
    planes = (np.arange(n * c, dtype=np.int64) * math.prod(sizes)).reshape(n, c, *[1] * spatial)
    index = imp.emit(
        graph.GatherOp,
        [_Const(np.asarray(tap_offsets, np.int64)), tap],
        [n, c, *out],
        axis=_i64(0),
    )
    index = imp.binary(node, graph.AddOp, index, _Const(origin + planes))
    return values, index


@_converts("MaxPool", "AveragePool", "LpPool")
def _pool(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    xs = _shape(x)
    spatial = len(xs) - 2
    if spatial not in (1, 2, 3):
        raise node.unsupported(
            f"{node.op_type} over {spatial} spatial dims (input rank {len(xs)}, shape {xs}); "
            "1-D, 2-D and 3-D are supported"
        )
    (x,), restore = _in_float32(imp, node, [x], exact_ints=node.op_type == "MaxPool")
    assert x is not None
    kernel = list(node.attrs["kernel_shape"])
    strides = list(node.attrs.get("strides", [1] * spatial))
    dilations = list(node.attrs.get("dilations", [1] * spatial))
    ceil = bool(node.attrs.get("ceil_mode", 0))
    out, pads = _window_geometry(node, xs[2:], kernel, strides, dilations, ceil)
    auto_pad = node.attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER") and any(d != 1 for d in dilations):
        # onnxruntime sizes these outputs without the dilation, the ONNX reference with it
        # and fills them differently from the spec's padding.
        raise node.unsupported(
            f"dilated pooling (dilations {dilations}) with auto_pad {auto_pad}: onnxruntime "
            "and the ONNX reference disagree on its output"
        )
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
        short = [(n - 1) * s + e - size for n, s, e, size in zip(out, strides, extents, xs[2:])]
        if any(t < 0 for t in short):
            # SAME windows that do not reach the input's end: onnxruntime shifts average
            # pools by the negative padding and refuses max pools, the ONNX reference shifts
            # max pools and fails on average pools. No answer is safe.
            raise node.unsupported(
                f"auto_pad {auto_pad} where kernel {kernel} with strides {strides} leaves "
                f"input {xs} partly unread (negative SAME padding {short})"
            )
    if any(d != 1 for d in dilations):
        pool = _dilated_pool
    else:
        pool = _pool_nd  # type: ignore[assignment]
    if node.op_type == "MaxPool" and len(node.proto.output) > 1 and node.proto.output[1]:
        column_major = bool(node.attrs.get("storage_order", 0))
        window = _Window.of(kernel, strides, dilations, pads)
        values, indices = _max_pool_with_indices(imp, node, x, window, out, column_major)
        return [restore(values), indices]
    if node.op_type == "MaxPool":
        return [restore(pool(imp, x, "max", kernel, strides, pads, out, False, dilations))]
    if node.op_type == "AveragePool":
        include = bool(node.attrs.get("count_include_pad", 0))
        return [restore(pool(imp, x, "avg", kernel, strides, pads, out, include, dilations))]
    # LpPool: (sum of |x|^p over the window)^(1/p); padding adds zeros to the sum. The sum is
    # the padding-inclusive mean times the window's taps inside the padded input: all of
    # them, except in ceil-mode windows that reach past the end padding.
    p = float(node.attrs.get("p", 2))
    powered = _power(imp, node, x, p)
    mean = pool(imp, powered, "avg", kernel, strides, pads, out, True, dilations)
    counts = np.ones(out, _dtype(mean))
    for a in range(spatial):
        padded_size = xs[2 + a] + pads[a] + pads[a + spatial]
        taps = np.arange(out[a])[:, None] * strides[a] + np.arange(kernel[a]) * dilations[a]
        inside = (taps < padded_size).sum(axis=1)
        counts = counts * inside.reshape(-1, *[1] * (spatial - a - 1))
    scale = _scalar(float(counts.flat[0]), mean) if np.all(counts == counts.flat[0]) else None
    total = imp.binary(node, graph.MulOp, mean, scale or _Const(counts))
    return [restore(_root(imp, node, total, p))]


@_converts("GlobalLpPool")
def _global_lp_pool(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    p = float(node.attrs.get("p", 2))
    spatial = list(range(2, len(_shape(x))))
    return [_root(imp, node, _reduce(imp, node, _power(imp, node, x, p), "sum", spatial, True), p)]


# ---------------------------------------------------------------------------------------------
# Einsum: diagonals by gathers, then operands multiplied with broadcasting and summed over the
# letters nothing later needs


def _einsum_terms(node: _Node, equation: str, ranks: Sequence[int]) -> tuple[list[str], str]:
    """Operand and output subscripts with '...' spelled out as fresh letters."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise node.error(f"equation '{equation}' names {len(terms)} operands, got {len(ranks)}")
    fresh = [chr(0x3B1 + i) for i in range(16)]  # greek letters cannot clash with ONNX's
    ellipsis_rank = 0
    for term, rank in zip(terms, ranks):
        if "..." in term:
            ellipsis_rank = max(ellipsis_rank, rank - (len(term) - 3))
    broadcast = "".join(fresh[:ellipsis_rank])
    spelled = []
    for term, rank in zip(terms, ranks):
        if "..." in term:
            n = rank - (len(term) - 3)
            term = term.replace("...", broadcast[ellipsis_rank - n :])
        if len(term) != rank:
            raise node.error(f"subscripts '{term}' do not fit an operand of rank {rank}")
        spelled.append(term)
    if arrow:
        out = rhs.replace("...", broadcast)
    else:  # implicit output: the broadcast dims, then letters used once, alphabetically
        counts = {c: "".join(spelled).count(c) for c in "".join(spelled)}
        out = broadcast + "".join(
            sorted(c for c, k in counts.items() if k == 1 and c not in broadcast)
        )
    return spelled, out


def _diagonal(imp: _Importer, x: Value, term: str) -> tuple[Value, str]:
    """Collapse every repeated subscript of one operand to its diagonal."""
    while len(set(term)) < len(term):
        letter = next(c for c in term if term.count(c) > 1)
        a = term.index(letter)
        b = term.index(letter, a + 1)
        rest = [i for i in range(len(term)) if i not in (a, b)]
        shape = _shape(x)
        perm = [*rest, a, b]
        moved = imp.emit(
            graph.TransposeOp, [x], [shape[p] for p in perm], perm=graph.i64_array(perm)
        )
        n = shape[a]
        flat = imp.reshape(moved, [*(shape[i] for i in rest), n * n])
        x = _gather_axis(imp, flat, len(rest), np.arange(n) * (n + 1))
        term = "".join(term[i] for i in rest) + letter
    return x, term


def _align(imp: _Importer, x: Value, term: str, order: str, sizes: dict[str, int]) -> Value:
    """x (subscripts `term`) transposed and reshaped to `order`, size 1 where it lacks a letter."""
    kept = [c for c in order if c in term]
    perm = [term.index(c) for c in kept]
    if perm != list(range(len(perm))):
        shape = _shape(x)
        x = imp.emit(graph.TransposeOp, [x], [shape[p] for p in perm], perm=graph.i64_array(perm))
    return imp.reshape(x, [sizes[c] if c in term else 1 for c in order])


def _contract(
    imp: _Importer,
    a: Value,
    a_term: str,
    b: Value,
    b_term: str,
    summed: str,
    sizes: dict[str, int],
) -> tuple[Value, str]:
    """A contraction over `summed` as one batched graph.matmul [B, M, K] @ [B, K, N]."""
    batch = "".join(c for c in a_term if c in b_term and c not in summed)
    left = "".join(c for c in a_term if c not in b_term)
    right = "".join(c for c in b_term if c not in a_term)

    def size(letters: str) -> int:
        return math.prod(sizes[c] for c in letters)

    lhs = imp.reshape(
        _align(imp, a, a_term, batch + left + summed, sizes),
        [size(batch), size(left), size(summed)],
    )
    rhs = imp.reshape(
        _align(imp, b, b_term, batch + summed + right, sizes),
        [size(batch), size(summed), size(right)],
    )
    product = imp.emit(
        graph.MatMulOp, [lhs, rhs, None, None], [size(batch), size(left), size(right)]
    )
    term = batch + left + right
    return imp.reshape(product, [sizes[c] for c in term]), term


@_converts("Einsum")
def _einsum(imp: _Importer, node: _Node) -> Sequence[Value]:
    operands = [imp.required(node, i) for i in range(len(node.proto.input))]
    dtype = _dtype(operands[0])
    if dtype.itemsize < 4 and dtype.kind in "fV":
        # 16-bit floats accumulate in float32 (and are rounded once, at the end).
        f32 = np.dtype(np.float32)
        operands = [imp.emit(graph.CastOp, [v], _shape(v), f32) for v in operands]
    equation = node.attrs["equation"]
    equation = equation.decode() if isinstance(equation, bytes) else equation
    terms, out = _einsum_terms(node, equation, [len(_shape(v)) for v in operands])
    sizes: dict[str, int] = {}
    for value, term in zip(operands, terms):
        for c, n in zip(term, _shape(value)):
            if sizes.setdefault(c, n) != n and 1 not in (n, sizes[c]):
                raise node.error(f"subscript '{c}' has sizes {sizes[c]} and {n}")
            sizes[c] = max(sizes[c], n)
    if any(c not in sizes for c in out):
        raise node.error(f"output subscripts '{out}' name letters no operand has")
    acc, acc_term = _diagonal(imp, operands[0], terms[0])
    for k in range(1, len(operands) + 1):
        later = out + "".join(terms[k:])
        # Sum out what neither the output nor a later operand needs, as early as possible.
        drop = [i for i, c in enumerate(acc_term) if c not in later]
        if drop:
            acc = _reduce(imp, node, acc, "sum", drop, False)
            acc_term = "".join(c for i, c in enumerate(acc_term) if i not in drop)
        if k == len(operands):
            break
        rhs, rhs_term = _diagonal(imp, operands[k], terms[k])
        needed = out + "".join(terms[k + 1 :])
        private = [i for i, c in enumerate(rhs_term) if c not in needed and c not in acc_term]
        if private:
            rhs = _reduce(imp, node, rhs, "sum", private, False)
            rhs_term = "".join(c for i, c in enumerate(rhs_term) if i not in private)
        summed = "".join(c for c in acc_term if c in rhs_term and c not in needed)
        if summed and _dtype(acc) == np.float32 and _dtype(rhs) == np.float32:
            acc, acc_term = _contract(imp, acc, acc_term, rhs, rhs_term, summed, sizes)
            continue
        order = acc_term + "".join(c for c in dict.fromkeys(rhs_term) if c not in acc_term)
        acc = imp.binary(
            node,
            graph.MulOp,
            _align(imp, acc, acc_term, order, sizes),
            _align(imp, rhs, rhs_term, order, sizes),
        )
        acc_term = order
    if acc_term != out:
        perm = [acc_term.index(c) for c in out]
        shape = _shape(acc)
        acc = imp.emit(
            graph.TransposeOp, [acc], [shape[p] for p in perm], perm=graph.i64_array(perm)
        )
    if _dtype(acc) != dtype:
        acc = imp.emit(graph.CastOp, [acc], _shape(acc), dtype)
    return [acc]


@_converts("GatherND")
def _gather_nd(imp: _Importer, node: _Node) -> Sequence[Value]:
    data, indices = imp.required(node, 0), imp.required(node, 1)
    d, i = _shape(data), _shape(indices)
    batch = int(node.attrs.get("batch_dims", 0))
    if not i or d[:batch] != i[:batch] or batch + i[-1] > len(d):
        raise node.error(f"indices {i} do not fit data {d} with batch_dims {batch}")
    out = [*i[:-1], *d[batch + i[-1] :]]
    return [imp.emit(graph.GatherNDOp, [data, indices], out, batch_dims=_i64(batch))]


@_converts("ScatterND")
def _scatter_nd(imp: _Importer, node: _Node) -> Sequence[Value]:
    data, indices, updates = (imp.required(node, i) for i in range(3))
    reduction = node.attrs.get("reduction", b"none")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    d, i, u = _shape(data), _shape(indices), _shape(updates)
    if not i or i[-1] > len(d) or u != (*i[:-1], *d[i[-1] :]):
        raise node.error(f"indices {i} and updates {u} do not fit data {d}")
    if reduction not in graph.ScatterElementsOp.REDUCTIONS:
        raise node.unsupported(f"reduction '{reduction}'")
    return [
        imp.emit(graph.ScatterNDOp, [data, indices, updates], d, reduction=StringAttr(reduction))
    ]


# ---------------------------------------------------------------------------------------------
# Attention (opset 23+): matmuls around the log-free softmax kernel, with every mask folded
# into one additive bias


def _heads_first(imp: _Importer, x: Value, heads: int) -> Value:
    """[B, S, heads * H] -> [B, heads, S, H] (4-D inputs are already in that layout)."""
    if len(_shape(x)) == 4:
        return x
    b, s, hidden = _shape(x)
    split = imp.reshape(x, [b, s, heads, hidden // heads])
    perm = [0, 2, 1, 3]
    return imp.emit(
        graph.TransposeOp, [split], [b, heads, s, hidden // heads], perm=graph.i64_array(perm)
    )


def _allowed_bias(allowed: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.where(allowed, 0.0, -np.inf).astype(dtype)


@_converts("Attention")
def _attention(imp: _Importer, node: _Node) -> Sequence[Value]:
    from ember.frontend.ops_elementwise import _compare, _where

    q, k, v = (imp.required(node, i) for i in range(3))
    mask, past_k, past_v = (imp.input(node, i) for i in range(3, 6))
    nonpad = imp.input(node, 6)
    a = node.attrs
    rank = len(_shape(q))
    dtype = _dtype(q)
    f32 = np.dtype(np.float32)
    if dtype.itemsize > f32.itemsize:
        # The matmul kernels compute in float32: float64 inputs would silently lose precision.
        raise node.unsupported(f"inputs of type {dtype} (Attention computes in float32 only)")
    if dtype != f32:  # 16-bit inputs compute in float32, rounded once at the end
        q, k, v = (imp.emit(graph.CastOp, [t], _shape(t), f32) for t in (q, k, v))
        past_k, past_v = (
            None if t is None else imp.emit(graph.CastOp, [t], _shape(t), f32)
            for t in (past_k, past_v)
        )
    if rank == 3:
        q = _heads_first(imp, q, int(a["q_num_heads"]))
        k = _heads_first(imp, k, int(a["kv_num_heads"]))
        v = _heads_first(imp, v, int(a["kv_num_heads"]))
    if past_k is not None and past_v is not None:
        k, v = _concat(imp, [past_k, k], 2), _concat(imp, [past_v, v], 2)
    present_k, present_v = k, v
    batch, q_heads, q_len, head = _shape(q)
    kv_heads, kv_len = _shape(k)[1], _shape(k)[2]
    past = _shape(past_k)[2] if past_k is not None else 0

    # One additive bias [.., q_len, kv_len]: the mask, then causal/window limits (constants).
    bias: Value | None = None
    if mask is not None:
        is_bool = _dtype(mask) == np.bool_
        short = kv_len - _shape(mask)[-1]
        if short > 0:  # a mask shorter than the keys leaves the rest masked
            fill = _Const(
                np.full([*_shape(mask)[:-1], short], False if is_bool else -np.inf, _dtype(mask))
            )
            mask = _concat(imp, [mask, fill], len(_shape(mask)) - 1)
        if is_bool:
            mask = _where(imp, node, mask, _scalar(0.0, q), _scalar(-np.inf, q))
        elif _dtype(mask) != f32:
            mask = imp.emit(graph.CastOp, [mask], _shape(mask), f32)
        bias = mask
    # Query i sits at position i + offset among the keys: offset = the past length, or with
    # an external cache (nonpad_kv_seqlen) valid_length[b] - q_len, known only at run time.
    # Each limit is a comparison of a constant table (in j - i) with the offset.
    i_idx, j_idx = np.arange(q_len)[:, None], np.arange(kv_len)[None, :]
    left, right = int(a.get("left_window_size", -1)), int(a.get("right_window_size", -1))
    limits: list[tuple[np.ndarray, str]] = []  # allowed iff table <pred> offset
    if a.get("is_causal", 0):
        limits.append((j_idx - i_idx, "le"))  # j <= i + offset
    if left >= 0:
        limits.append((j_idx - i_idx + left, "ge"))  # i + offset - j <= left
    if right >= 0:
        limits.append((j_idx - i_idx - right, "le"))  # j - (i + offset) <= right
    if nonpad is None:
        allowed = np.ones((q_len, kv_len), bool)
        for table, predicate in limits:
            allowed &= table <= past if predicate == "le" else table >= past
        if not allowed.all():
            fixed = _Const(_allowed_bias(allowed, f32))
            bias = fixed if bias is None else imp.binary(node, graph.AddOp, bias, fixed)
    else:
        lengths = imp.reshape(nonpad, [batch, 1, 1, 1])
        index_type = _dtype(nonpad)
        positions = _Const(np.arange(kv_len, dtype=index_type))
        tests = [_compare(imp, node, "lt", positions, lengths)]  # keys past the valid length
        for table, predicate in limits:
            shifted = _Const((table + q_len).astype(index_type))  # offset + q_len = length
            tests.append(_compare(imp, node, predicate, shifted, lengths))
        inside = tests[0]
        for t in tests[1:]:
            inside = imp.emit(
                graph.AndOp, [inside, t], graph.broadcast_shapes(_shape(inside), _shape(t))
            )
        padding = _where(imp, node, inside, _scalar(0.0, q), _scalar(-np.inf, q))
        bias = padding if bias is None else imp.binary(node, graph.AddOp, bias, padding)

    if q_heads != kv_heads:  # grouped-query attention: each kv head serves q_heads/kv_heads
        repeat = np.repeat(np.arange(kv_heads), q_heads // kv_heads)
        k, v = _gather_axis(imp, k, 1, repeat), _gather_axis(imp, v, 1, repeat)
    scale = float(a["scale"]) if "scale" in a else 1.0 / math.sqrt(head)
    k_t = imp.emit(
        graph.TransposeOp, [k], [batch, q_heads, head, kv_len], perm=graph.i64_array([0, 1, 3, 2])
    )
    scaled_q = imp.binary(node, graph.MulOp, q, _scalar(scale, q))
    scores = imp.emit(graph.MatMulOp, [scaled_q, k_t, None, None], [batch, q_heads, q_len, kv_len])
    softcap = float(a.get("softcap", 0.0))
    if softcap > 0:
        capped = _unary(
            imp, graph.TanhOp, imp.binary(node, graph.MulOp, scores, _scalar(1 / softcap, q))
        )
        scores = imp.binary(node, graph.MulOp, capped, _scalar(softcap, q))
    biased = scores
    keep: Value | None = None
    if bias is not None:
        # -inf becomes the lowest finite value: a partly masked row still gets exact zeros
        # from exp, a fully masked one no NaN; such rows are then zeroed, as ONNX specifies.
        lowest = _scalar(float(np.finfo(np.float32).min), q)
        finite = imp.binary(node, graph.MaxOp, bias, lowest)
        biased = imp.binary(node, graph.AddOp, scores, finite)
        last = len(_shape(bias)) - 1
        row_best = _reduce(imp, node, bias, "max", [last], True)
        open_row = _compare(imp, node, "gt", row_best, _scalar(-np.inf, q))
        keep = imp.emit(graph.CastOp, [open_row], _shape(open_row), f32)
    probs = imp.emit(graph.SoftmaxOp, [biased], _shape(biased), axis=_i64(3))
    if keep is not None:
        probs = imp.binary(node, graph.MulOp, probs, keep)
    hv = _shape(v)[3]
    y = imp.emit(graph.MatMulOp, [probs, v, None, None], [batch, q_heads, q_len, hv])
    if rank == 3:
        y = imp.emit(
            graph.TransposeOp, [y], [batch, q_len, q_heads, hv], perm=graph.i64_array([0, 2, 1, 3])
        )
        y = imp.reshape(y, [batch, q_len, q_heads * hv])
    mode = int(a.get("qk_matmul_output_mode", 0))
    with_bias = scores if bias is None else imp.binary(node, graph.AddOp, scores, bias)
    qk = {0: scores, 1: scores, 2: with_bias, 3: probs}.get(mode)
    if qk is None:
        raise node.error(f"unknown qk_matmul_output_mode {mode}")
    outputs = [y, present_k, present_v, qk]
    if dtype != f32:
        outputs = [imp.emit(graph.CastOp, [t], _shape(t), dtype) for t in outputs]
    return outputs


# ---------------------------------------------------------------------------------------------
# Ops whose data-dependent part is known at compile time


@_converts("Compress")
def _compress(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    condition = imp.constant(node, 1, "condition")
    assert condition is not None
    axis = node.attrs.get("axis")
    if axis is None:  # the flattened input
        x = imp.reshape(x, [math.prod(_shape(x))])
        axis = 0
    axis = _axis(node, int(axis), len(_shape(x)))
    keep = np.flatnonzero(condition.reshape(-1)[: _shape(x)[axis]])
    if keep.size == 0:
        raise node.unsupported("Compress with an empty result")
    return [_gather_axis(imp, x, axis, keep)]


@_converts("CenterCropPad")
def _center_crop_pad(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    target = imp.constant(node, 1, "shape")
    assert target is not None
    rank = len(_shape(x))
    axes = [_axis(node, int(a), rank) for a in node.attrs.get("axes", range(rank))]
    if len(axes) != target.size:
        raise node.error(f"shape {list(target)} does not match axes {axes}")
    for axis, want in zip(axes, (int(t) for t in target.reshape(-1))):
        size = _shape(x)[axis]
        if want < size:  # crop, the extra element (odd difference) taken from the end
            x = _slice_axis(imp, x, axis, (size - want) // 2, want)
        elif want > size:  # pad with zeros, the extra element at the end
            before = (want - size) // 2
            x = _pad_constant(imp, x, axis, before, want - size - before)
    return [x]


@_converts("EyeLike")
def _eye_like(imp: _Importer, node: _Node) -> Sequence[Value]:
    shape = _shape(imp.required(node, 0))
    if len(shape) != 2:
        raise node.error(f"input of rank {len(shape)}; EyeLike needs a matrix")
    to = node.attrs.get("dtype")
    dtype = _dtype(imp.required(node, 0)) if to is None else onnx_dtype(to)
    k = int(node.attrs.get("k", 0))
    if limits.tensor_bytes(shape, dtype) <= limits.FOLD_LIMIT_BYTES:
        return [_Const(np.eye(shape[0], shape[1], k, dtype=dtype))]
    # Too big to store: computed at run time as (row + k == column).
    from ember.frontend.ops_elementwise import _compare

    def iota(count: int, first: int) -> Value:
        bounds = [_Const(np.array([v], np.int64)) for v in (first, 1)]
        return imp.emit(graph.RangeOp, bounds, [count], np.dtype(np.int64))

    rows = imp.reshape(iota(shape[0], k), [shape[0], 1])
    on_diagonal = _compare(imp, node, "eq", rows, imp.reshape(iota(shape[1], 0), [1, shape[1]]))
    return [imp.emit(graph.CastOp, [on_diagonal], shape, dtype)]


@_converts("ReverseSequence")
def _reverse_sequence(imp: _Importer, node: _Node) -> Sequence[Value]:
    from ember.frontend.ops_elementwise import _compare, _where

    x, lengths = imp.required(node, 0), imp.required(node, 1)
    shape = _shape(x)
    batch_axis = int(node.attrs.get("batch_axis", 1))
    time_axis = int(node.attrs.get("time_axis", 0))
    if {batch_axis, time_axis} != {0, 1} or len(shape) < 2:
        raise node.error(f"batch_axis {batch_axis} and time_axis {time_axis} must be 0 and 1")
    # Source time step of each (time, batch): len - 1 - t inside the sequence, t after it.
    grid = [1, 1] + [1] * (len(shape) - 2)
    grid[batch_axis] = shape[batch_axis]
    lengths = imp.reshape(lengths, grid)
    if _dtype(lengths) != np.int64:
        lengths = imp.emit(graph.CastOp, [lengths], _shape(lengths), np.dtype(np.int64))
    steps = [1] * len(shape)
    steps[time_axis] = shape[time_axis]
    t = _Const(np.arange(shape[time_axis], dtype=np.int64).reshape(steps))
    inside = _compare(imp, node, "lt", t, lengths)
    last = imp.binary(node, graph.SubOp, lengths, _Const(np.array(1, np.int64)))
    flipped = imp.binary(node, graph.SubOp, last, t)
    source = _where(imp, node, inside, flipped, t)
    source = imp.emit(graph.ExpandOp, [source], shape) if _shape(source) != shape else source
    return [_gather_elements(imp, x, source, time_axis)]


@_converts("MaxUnpool")
def _max_unpool(imp: _Importer, node: _Node) -> Sequence[Value]:
    """Zeros with x scattered to the flat positions of `indices` (MaxPool's Indices output)
    in the shape the pooling came from."""
    x, indices = imp.required(node, 0), imp.required(node, 1)
    xs = _shape(x)
    spatial = len(xs) - 2
    if spatial < 1 or _shape(indices) != xs:
        raise node.error(f"input {xs} and indices {_shape(indices)} must be N×C×spatial alike")
    kernel = list(node.attrs["kernel_shape"])
    strides = list(node.attrs.get("strides", [1] * spatial))
    pads = list(node.attrs.get("pads", [0] * 2 * spatial))
    pooled = [
        *xs[:2],
        *[
            (n - 1) * s + k - pads[a] - pads[a + spatial]
            for a, (n, s, k) in enumerate(zip(xs[2:], strides, kernel))
        ],
    ]
    wanted = imp.constant(node, 2, "output_shape")
    out = pooled if wanted is None else [int(d) for d in wanted.reshape(-1)]
    if min(pooled) <= 0:
        raise node.error(f"input {xs} unpools to an empty shape {pooled}")
    if out != pooled:
        # The ONNX reference scatters into the unpooled shape and pads it to output_shape;
        # onnxruntime (and PyTorch, whose exports use it) read the indices in output_shape.
        raise node.unsupported(
            f"output_shape {out} other than the unpooled {pooled} (onnxruntime and the ONNX "
            "reference place the values differently)"
        )
    flat = [math.prod(xs)]
    y = imp.emit(
        graph.ScatterElementsOp,
        [
            _Const(np.zeros(math.prod(pooled), _dtype(x))),
            imp.reshape(indices, flat),
            imp.reshape(x, flat),
        ],
        [math.prod(pooled)],
        axis=_i64(0),
        reduction=StringAttr("none"),
    )
    return [imp.reshape(y, pooled)]
