"""ONNX -> graph dialect: ops that address data by index: Gather, GatherElements, GatherND,
ScatterElements (Scatter), ScatterND, OneHot, Compress and ReverseSequence.

Kernels that read indices from a tensor check them at run time (docs/architecture.md, "The
status record"); ReverseSequence needs its lengths known at compile time. Compress with a
condition known only at run time is staged (engine/staging.py) and imported in its bounded
form (frontend/ops/data_dependent.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from xdsl.dialects.builtin import StringAttr

from ember.dialects import graph
from ember.frontend.context import (
    Const,
    ImportContext,
    Node,
    Value,
    dtype_of,
    i64_attr,
    normalize_axis,
    shape_of,
)
from ember.frontend.ops.data_dependent import BOUNDED_DOMAIN, nonzero_coordinates
from ember.frontend.ops.sampling import OnnxNodes
from ember.frontend.registry import converts


@converts("Gather")
def _gather(imp: ImportContext, node: Node) -> Sequence[Value]:
    data, indices = imp.required(node, 0), imp.required(node, 1)
    shape = shape_of(data)
    axis = normalize_axis(node, node.attrs.get("axis", 0), len(shape))
    if dtype_of(indices).kind not in "iu":
        raise node.error("indices must be an integer tensor")
    out = [*shape[:axis], *shape_of(indices), *shape[axis + 1 :]]
    if shape[axis] == 0 and math.prod(out) > 0:
        raise node.error(
            f"indices {list(shape_of(indices))} into axis {axis} of size 0 (data {list(shape)})"
        )
    return [imp.emit(graph.GatherOp, [data, indices], out, axis=i64_attr(axis))]


def gather_elements(
    imp: ImportContext, data: Value, indices: Value, axis: int, ignore: int | None = None
) -> Value:
    props = {"axis": i64_attr(axis), "ignore_index": None if ignore is None else i64_attr(ignore)}
    return imp.emit(
        graph.GatherElementsOp, [data, indices], shape_of(indices), dtype_of(data), **props
    )


@converts("GatherElements")
def _gather_elements_op(imp: ImportContext, node: Node) -> Sequence[Value]:
    data, indices = imp.required(node, 0), imp.required(node, 1)
    rank = len(shape_of(data))
    axis = normalize_axis(node, node.attrs.get("axis", 0), rank)
    if dtype_of(indices).kind not in "iu":
        raise node.error("indices must be an integer tensor")
    ds, ix = shape_of(data), shape_of(indices)
    if len(ix) != rank or any(d != axis and ds[d] not in (1, ix[d]) for d in range(rank)):
        raise node.error(f"indices {ix} do not fit data {ds} along axis {axis}")
    return [gather_elements(imp, data, indices, axis)]


@converts("ScatterElements", "Scatter")
def _scatter_elements(imp: ImportContext, node: Node) -> Sequence[Value]:
    data, indices, updates = (imp.required(node, i) for i in range(3))
    rank = len(shape_of(data))
    axis = normalize_axis(node, node.attrs.get("axis", 0), rank)
    reduction = node.attrs.get("reduction", b"none")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    if reduction not in graph.ScatterElementsOp.REDUCTIONS:
        raise node.unsupported(f"reduction '{reduction}'")
    d, i = shape_of(data), shape_of(indices)
    if (
        i != shape_of(updates)
        or len(i) != rank
        or any(k != axis and i[k] > d[k] for k in range(rank))
    ):
        raise node.error(f"indices {i} / updates {shape_of(updates)} do not fit data {d}")
    if 0 in i:  # no updates: the data as it is
        return [data]
    return [
        imp.emit(
            graph.ScatterElementsOp,
            [data, indices, updates],
            d,
            axis=i64_attr(axis),
            reduction=StringAttr(reduction),
        )
    ]


@converts("GatherND")
def _gather_nd(imp: ImportContext, node: Node) -> Sequence[Value]:
    data, indices = imp.required(node, 0), imp.required(node, 1)
    d, i = shape_of(data), shape_of(indices)
    batch = int(node.attrs.get("batch_dims", 0))
    if not i or d[:batch] != i[:batch] or batch + i[-1] > len(d):
        raise node.error(f"indices {i} do not fit data {d} with batch_dims {batch}")
    out = [*i[:-1], *d[batch + i[-1] :]]
    return [imp.emit(graph.GatherNDOp, [data, indices], out, batch_dims=i64_attr(batch))]


@converts("ScatterND")
def _scatter_nd(imp: ImportContext, node: Node) -> Sequence[Value]:
    data, indices, updates = (imp.required(node, i) for i in range(3))
    reduction = node.attrs.get("reduction", b"none")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    d, i, u = shape_of(data), shape_of(indices), shape_of(updates)
    if not i or i[-1] > len(d) or u != (*i[:-1], *d[i[-1] :]):
        raise node.error(f"indices {i} and updates {u} do not fit data {d}")
    if reduction not in graph.ScatterElementsOp.REDUCTIONS:
        raise node.unsupported(f"reduction '{reduction}'")
    if 0 in i[:-1]:  # no updates: the data as it is
        return [data]
    return [
        imp.emit(graph.ScatterNDOp, [data, indices, updates], d, reduction=StringAttr(reduction))
    ]


def one_hot(imp: ImportContext, indices: Value, values: Value, depth: int, axis: int) -> Value:
    if dtype_of(indices) != np.int64:
        indices = imp.emit(graph.CastOp, [indices], shape_of(indices), np.dtype(np.int64))
    out = list(shape_of(indices))
    out.insert(axis, depth)
    return imp.emit(graph.OneHotOp, [indices, values], out, dtype_of(values), axis=i64_attr(axis))


@converts("OneHot")
def _one_hot_op(imp: ImportContext, node: Node) -> Sequence[Value]:
    indices, values = imp.required(node, 0), imp.required(node, 2)
    depth_in = imp.constant(node, 1, "depth")
    assert depth_in is not None
    depth = int(depth_in.reshape(-1)[0])
    if depth < 1 or shape_of(values) != (2,):
        raise node.error(f"depth {depth} and values of shape {shape_of(values)}")
    axis = normalize_axis(node, node.attrs.get("axis", -1), len(shape_of(indices)) + 1)
    return [one_hot(imp, indices, values, depth, axis)]


@converts("Compress")
def _compress(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    condition = imp.constant(node, 1, "condition")
    assert condition is not None
    axis = node.attrs.get("axis")
    if axis is None:  # the flattened input
        x = imp.reshape(x, [math.prod(shape_of(x))])
        axis = 0
    axis = normalize_axis(node, int(axis), len(shape_of(x)))
    keep = np.flatnonzero(condition.reshape(-1)[: shape_of(x)[axis]])
    return [imp.gather_axis(x, axis, keep)]


@converts("Compress", domain=BOUNDED_DOMAIN)
def _bounded_compress(imp: ImportContext, node: Node) -> Sequence[Value]:
    """Compress with a run-time condition, bounded (frontend/ops/data_dependent.py): the
    whole axis, the kept slices first, and their count."""
    x, condition = imp.required(node, 0), imp.required(node, 1)
    if len(shape_of(condition)) != 1 or dtype_of(condition) != np.bool_:
        raise node.error(f"condition must be a 1-D bool tensor, given {shape_of(condition)}")
    axis = node.attrs.get("axis")
    if axis is None:  # the flattened input
        x = imp.reshape(x, [math.prod(shape_of(x))])
        axis = 0
    axis = normalize_axis(node, int(axis), len(shape_of(x)))
    # Entries past the axis's end select nothing (onnxruntime ignores them too).
    length = min(shape_of(condition)[0], shape_of(x)[axis])
    if length == 0:
        shape = list(shape_of(x))
        shape[axis] = 0
        return [Const(np.zeros(shape, dtype_of(x))), Const(np.array(0, np.int64))]
    condition = imp.slice_axis(condition, 0, 0, length)
    coordinates, count = nonzero_coordinates(imp, node, condition)
    positions = imp.reshape(coordinates, [length])
    shape = list(shape_of(x))
    shape[axis] = length
    return [imp.emit(graph.GatherOp, [x, positions], shape, axis=i64_attr(axis)), count]


@converts("ReverseSequence")
def _reverse_sequence(imp: ImportContext, node: Node) -> Sequence[Value]:

    x, lengths = imp.required(node, 0), imp.required(node, 1)
    shape = shape_of(x)
    batch_axis = int(node.attrs.get("batch_axis", 1))
    time_axis = int(node.attrs.get("time_axis", 0))
    if {batch_axis, time_axis} != {0, 1} or len(shape) < 2:
        raise node.error(f"batch_axis {batch_axis} and time_axis {time_axis} must be 0 and 1")
    # Source time step of each (time, batch): len - 1 - t inside the sequence, t after it.
    grid = [1, 1] + [1] * (len(shape) - 2)
    grid[batch_axis] = shape[batch_axis]
    lengths = imp.reshape(lengths, grid)
    if dtype_of(lengths) != np.int64:
        lengths = imp.emit(graph.CastOp, [lengths], shape_of(lengths), np.dtype(np.int64))
    steps = [1] * len(shape)
    steps[time_axis] = shape[time_axis]
    t = Const(np.arange(shape[time_axis], dtype=np.int64).reshape(steps))
    inside = imp.compare(node, "lt", t, lengths)
    last = imp.binary(node, graph.SubOp, lengths, Const(np.array(1, np.int64)))
    flipped = imp.binary(node, graph.SubOp, last, t)
    source = imp.where(node, inside, flipped, t)
    source = imp.emit(graph.ExpandOp, [source], shape) if shape_of(source) != shape else source
    return [gather_elements(imp, x, source, time_axis)]


# --- TensorScatter (opset 24; signalops block) --------------------------------------------------


@converts("TensorScatter")
def _tensor_scatter(imp: ImportContext, node: Node) -> Sequence[Value]:
    """A KV-cache write: update's `seq` steps go to each batch row's cache at write_indices[b]
    + i (mod the cache length in circular mode), as one ScatterElements whose indices are
    computed from write_indices at run time. A linear write past the cache end, or a negative
    write index, is an index the scatter kernel checks (KernelError), not a wrapped write."""
    cache, update = imp.required(node, 0), imp.required(node, 1)
    cache_shape, update_shape = shape_of(cache), shape_of(update)
    rank = len(cache_shape)
    axis = int(node.attrs.get("axis", -2))
    if rank < 2 or not -rank <= axis < rank or axis % rank == 0:
        raise node.error(
            f"axis {axis} for a cache of shape {list(cache_shape)} (the sequence axis must be "
            "an axis after the batch axis 0)"
        )
    axis %= rank
    if len(update_shape) != rank or any(
        (u > c) if i == axis else (u != c)
        for i, (u, c) in enumerate(zip(update_shape, cache_shape, strict=True))
    ):
        raise node.error(
            f"update of shape {list(update_shape)} for a cache of shape {list(cache_shape)} "
            f"(same dims, at most as long on axis {axis})"
        )
    mode = node.attrs.get("mode", "linear")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("linear", "circular"):
        raise node.unsupported(f"mode '{mode}' (linear and circular are defined)")
    batch, steps, length = cache_shape[0], update_shape[axis], cache_shape[axis]
    writes = imp.input(node, 2)
    if writes is not None and shape_of(writes) != (batch,):
        raise node.error(f"write_indices of shape {list(shape_of(writes))} for batch {batch}")
    b = OnnxNodes(f"{node.name}/TensorScatter")
    if writes is None:
        starts = b.const(np.zeros(batch, np.int64))
    else:
        starts = b.add("Cast", [node.proto.input[2]], to=onnx.TensorProto.INT64)
    per_row = [batch] + [1] * (rank - 1)
    along_axis = [1] * rank
    along_axis[axis] = steps
    position = b.add(
        "Add",
        [
            b.add("Reshape", [starts, b.const(np.array(per_row, np.int64))]),
            b.const(np.arange(steps, dtype=np.int64).reshape(along_axis)),
        ],
    )
    if mode == "circular":
        position = b.add("Mod", [position, b.const(np.array(length, np.int64))])
    else:  # a negative start is out of range, not a position counted from the end
        negative = b.add("Less", [position, b.const(np.array(0, np.int64))])
        position = b.add("Where", [negative, b.const(np.array(length, np.int64)), position])
    index = b.add("Expand", [position, b.const(np.array(update_shape, np.int64))])
    out = b.add("ScatterElements", [node.proto.input[0], index, node.proto.input[1]], axis=axis)
    return [b.import_as(imp, node, out)]
