"""ONNX -> graph dialect: ops that move data without computing: Reshape, Flatten, Squeeze,
Unsqueeze, Transpose, Concat, Split, Slice, Expand, Tile, Pad, CenterCropPad, DepthToSpace and
SpaceToDepth.

Reshapes are views; Split and Slice of a runtime tensor and negative pads are `graph.slice`;
Tile is a broadcast (`graph.expand`) between reshapes, so its cost is one kernel whatever the
repeats; Pad's reflect/edge/wrap modes are per-axis gathers with constant index tables;
DepthToSpace/SpaceToDepth a reshape-transpose-reshape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ember.dialects import graph
from ember.frontend.context import (
    KEEP_EXACT_SLICES,
    Const,
    ImportContext,
    Node,
    Value,
    dtype_of,
    i64_attr,
    normalize_axis,
    shape_of,
)
from ember.frontend.ops.control_flow import slice_at_loop_index
from ember.frontend.registry import converts


def _reshape_target(node: Node, in_shape: Sequence[int], spec: Sequence[int]) -> list[int]:
    allowzero = node.attrs.get("allowzero", 0)
    if any(int(d) < -1 for d in spec):
        raise node.error(f"shape {list(spec)} has a negative size other than -1")
    if not allowzero and any(d == 0 and i >= len(in_shape) for i, d in enumerate(spec)):
        raise node.error(
            f"shape {list(spec)} copies (0) a dim that the rank-{len(in_shape)} input lacks"
        )
    out = [(in_shape[i] if d == 0 and not allowzero else int(d)) for i, d in enumerate(spec)]
    if out.count(-1) > 1:
        raise node.error(f"shape {list(spec)} has more than one -1")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or math.prod(in_shape) % known:
            raise node.error(f"cannot reshape {tuple(in_shape)} to {list(spec)}")
        out[out.index(-1)] = math.prod(in_shape) // known
    if math.prod(out) != math.prod(in_shape):
        raise node.error(f"cannot reshape {tuple(in_shape)} to {list(spec)}")
    return out


@converts("Reshape")
def _reshape(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    if "shape" in node.attrs:  # opset < 5
        spec = list(node.attrs["shape"])
    else:
        spec_array = imp.constant(node, 1, "shape")
        assert spec_array is not None
        spec = [int(d) for d in spec_array]
    return [imp.reshape(x, _reshape_target(node, shape_of(x), spec))]


@converts("Flatten")
def _flatten(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = shape_of(x)
    axis = node.attrs.get("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    return [imp.reshape(x, [math.prod(shape[:axis]), math.prod(shape[axis:])])]


@converts("Squeeze")
def _squeeze(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = shape_of(x)
    axes = imp.axes(node, 13)
    if axes is None:
        drop = {i for i, d in enumerate(shape) if d == 1}
    else:
        drop = {normalize_axis(node, a, len(shape)) for a in axes}
        if any(shape[a] != 1 for a in drop):
            raise node.error(f"cannot squeeze axes {axes} of shape {shape}")
    return [imp.reshape(x, [d for i, d in enumerate(shape) if i not in drop])]


@converts("Unsqueeze")
def _unsqueeze(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = list(shape_of(x))
    axes = imp.axes(node, 13)
    if axes is None:
        raise node.error("missing axes")
    rank = len(shape) + len(axes)
    for axis in sorted(normalize_axis(node, a, rank) for a in axes):
        shape.insert(axis, 1)
    return [imp.reshape(x, shape)]


@converts("Transpose")
def _transpose(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = shape_of(x)
    perm = list(node.attrs.get("perm", reversed(range(len(shape)))))
    if sorted(perm) != list(range(len(shape))):
        raise node.error(f"perm {perm} is not a permutation of rank {len(shape)}")
    out = [shape[p] for p in perm]
    return [imp.emit(graph.TransposeOp, [x], out, perm=graph.i64_array(perm))]


@converts("Concat")
def _concat(imp: ImportContext, node: Node) -> Sequence[Value]:
    values = [imp.required(node, i) for i in range(len(node.proto.input))]
    first = shape_of(values[0])
    axis = normalize_axis(node, node.attrs["axis"], max(len(first), 1))
    for v in values:
        s = shape_of(v)
        if len(s) != len(first) or any(s[i] != first[i] for i in range(len(s)) if i != axis):
            raise node.error(f"cannot concatenate shapes {[shape_of(v) for v in values]}")
    # Zero-sized pieces (shape arithmetic leftovers) contribute nothing.
    values = [v for v in values if shape_of(v)[axis] > 0] or values[:1]
    if len(values) == 1:
        return [values[0]]
    out = list(first)
    out[axis] = sum(shape_of(v)[axis] for v in values)
    return [imp.emit(graph.ConcatOp, [list(values)], out, axis=i64_attr(axis))]


def _slice_bounds(
    node: Node,
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
        a = normalize_axis(node, int(axis), rank)
        if int(step) == 0:
            raise node.error("slice step must not be 0")
        begin, stop, inc = slice(int(start), int(end), int(step)).indices(shape[a])
        first[a], stride[a], count[a] = begin, inc, len(range(begin, stop, inc))
    return first, stride, count


@converts("Slice")
def _slice_op(imp: ImportContext, node: Node) -> Sequence[Value]:
    data = imp.required(node, 0)
    shape = shape_of(data)
    if node.opset < 10:
        starts, ends = list(node.attrs["starts"]), list(node.attrs["ends"])
        axes = list(node.attrs.get("axes", range(len(starts))))
        steps: list[int] = [1] * len(starts)
    else:
        # control flow: x[i + a : i + b] at a Loop's iteration counter i
        at_loop_index = slice_at_loop_index(imp, node)
        if at_loop_index is not None:
            return at_loop_index
        starts = [int(v) for v in imp.constant(node, 1, "starts")]  # type: ignore[union-attr]
        ends = [int(v) for v in imp.constant(node, 2, "ends")]  # type: ignore[union-attr]
        axes_in, steps_in = imp.constant(node, 3, "axes"), imp.constant(node, 4, "steps")
        axes = list(range(len(starts))) if axes_in is None else [int(a) for a in axes_in]
        steps = [1] * len(starts) if steps_in is None else [int(s) for s in steps_in]
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise node.error("starts, ends, axes and steps differ in length")
    first, stride, count = _slice_bounds(node, shape, starts, ends, axes, steps)
    if isinstance(data, Const):
        index = tuple(
            slice(f, f + s * c if f + s * c >= 0 else None, s) if c else slice(0, 0)
            for f, s, c in zip(first, stride, count)
        )
        return [Const(data.array[index])]
    # An end equal to the axis' size may have been read from a shape (compile once's probes).
    exact = KEEP_EXACT_SLICES.get() and any(
        int(end) == shape[normalize_axis(node, int(axis), len(shape))]
        for axis, end in zip(axes, ends, strict=True)
    )
    return [imp.slice(data, first, stride, count, keep_whole=exact)]


@converts("Split")
def _split(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = shape_of(x)
    axis = normalize_axis(node, node.attrs.get("axis", 0), len(shape))
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
        results.append(imp.slice_axis(x, axis, start, size))
        start += size
    return results


@converts("Expand")
def _expand(imp: ImportContext, node: Node) -> Sequence[Value]:
    data, shape = imp.required(node, 0), imp.constant(node, 1, "shape")
    assert shape is not None
    try:
        out = graph.broadcast_shapes(shape_of(data), tuple(int(d) for d in shape))
    except ValueError as err:
        raise node.error(str(err)) from err
    if out == shape_of(data):
        return [data]
    # Folded when `data` is known and the result small; a kernel otherwise.
    return [imp.emit(graph.ExpandOp, [data], out)]


@converts("Tile")
def _tile(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    repeats = imp.constant(node, 1, "repeats")
    assert repeats is not None
    shape = shape_of(x)
    if len(repeats) != len(shape) or any(r < 1 for r in repeats):
        raise node.error(f"repeats {list(repeats)} do not fit input shape {shape}")
    out = [d * int(r) for d, r in zip(shape, repeats, strict=True)]
    imp.check_size(out, dtype_of(x), "the Tile result")  # before any step
    return [_tiled(imp, x, [int(r) for r in repeats])]


def _tiled(imp: ImportContext, x: Value, repeats: Sequence[int]) -> Value:
    """x repeated repeats[d] times along each axis d: one broadcast, whatever the repeats.

    An axis of size n tiled r times is a new axis of r in front of it, broadcast, then
    merged with it."""
    shape = shape_of(x)
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


def _crop(
    imp: ImportContext, x: Value, axis: int, before: int, after: int
) -> tuple[Value, int, int]:
    """Apply the negative ones of `before`/`after` (pads that crop); returns what is left to pad."""
    if before >= 0 and after >= 0:
        return x, before, after
    size = shape_of(x)[axis]
    if size + min(before, 0) + min(after, 0) < 0:
        assert imp.node is not None  # converters run with their node set
        raise imp.node.error(
            f"cannot crop {-min(before, 0)} + {-min(after, 0)} elements of an axis of {size}"
        )
    start = max(0, -before)
    x = imp.slice_axis(x, axis, start, size - start - max(0, -after))
    return x, max(0, before), max(0, after)


def pad_constant(
    imp: ImportContext, x: Value, axis: int, before: int, after: int, value: float | Value = 0.0
) -> Value:
    """x with `before`/`after` elements of `value` around `axis` (negative counts crop).

    The padding is a graph.expand of the fill value: folded when small, a fill kernel when
    large (so wide pads cost no compile time), and the only way for a run-time fill value."""
    x, before, after = _crop(imp, x, axis, before, after)
    pieces: list[Value] = []
    for width in (before, after):
        block = list(shape_of(x))
        block[axis] = width
        imp.check_size(block, dtype_of(x), "padding")
        if width == 0:  # dropped by _concat
            pieces.append(Const(np.zeros(block, dtype_of(x))))
            continue
        ones = [1] * len(block)
        if isinstance(value, float | int):
            scalar: Value = Const(np.full(ones, value, dtype_of(x)))
        else:
            scalar = imp.reshape(value, ones)
        pieces.append(scalar if block == ones else imp.emit(graph.ExpandOp, [scalar], block))
    return imp.concat([pieces[0], x, pieces[1]], axis)


@converts("Pad")
def _pad(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = shape_of(x)
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
        if fill is None or math.prod(shape_of(fill)) == 0:
            value: float | Value = 0.0
        elif isinstance(fill, Const):
            value = fill.array.reshape(-1)[0].item()
        else:
            value = fill
        axes_in = imp.constant(node, 3, "axes")
        axes = (
            list(range(rank))
            if axes_in is None
            else [normalize_axis(node, int(a), rank) for a in axes_in]
        )
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise node.unsupported(f"mode '{mode}'")
    if len(pads) != 2 * len(axes):
        raise node.error(f"{len(pads)} pads for {len(axes)} axes")
    for k, axis in enumerate(axes):
        # Negative pads crop first.
        x, before, after = _crop(imp, x, axis, pads[k], pads[k + len(axes)])
        size = shape_of(x)[axis]
        if before == 0 and after == 0:
            continue
        if mode != "constant" and size == 0:
            # onnxruntime fails too: there is no element to repeat.
            raise node.error(f"{mode} pads {before},{after} on axis {axis}, which is empty")
        if mode == "reflect" and (before >= size or after >= size) and size > 1:
            raise node.error(f"reflect pads {before},{after} exceed axis {axis} of {size}")
        # Reflecting one element repeats it (for this axis only).
        axis_mode = "edge" if mode == "reflect" and size == 1 else mode
        if axis_mode == "constant":
            x = pad_constant(imp, x, axis, before, after, value)
        elif before + after <= size:
            x = imp.gather_axis(x, axis, _pad_indices(axis_mode, size, before, after))
        # Wider pads would make the index table grow with them: edges are broadcast, wraps
        # are a slice of the axis tiled.
        elif axis_mode == "edge":
            x = _pad_edge(imp, x, axis, before, after)
        else:
            x = _pad_wrap(imp, x, axis, before, after)
    return [x]


def _pad_edge(imp: ImportContext, x: Value, axis: int, before: int, after: int) -> Value:
    size = shape_of(x)[axis]
    pieces = [x]
    for width, at in ((before, 0), (after, size - 1)):
        if width == 0:
            continue
        block = list(shape_of(x))
        block[axis] = width
        edge = imp.slice_axis(x, axis, at, 1)
        edge = edge if width == 1 else imp.emit(graph.ExpandOp, [edge], block)
        pieces.insert(0 if at == 0 else len(pieces), edge)
    return imp.concat(pieces, axis)


def _pad_wrap(imp: ImportContext, x: Value, axis: int, before: int, after: int) -> Value:
    size = shape_of(x)[axis]
    total = before + size + after
    first = -before % size  # the input position the padded axis starts at
    repeats = [1] * len(shape_of(x))
    repeats[axis] = -(-(first + total) // size)
    return imp.slice_axis(_tiled(imp, x, repeats), axis, first, total)


@converts("DepthToSpace", "SpaceToDepth")
def _depth_space(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    n, c, h, w = shape_of(x)
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


@converts("CenterCropPad")
def _center_crop_pad(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    target = imp.constant(node, 1, "shape")
    assert target is not None
    rank = len(shape_of(x))
    axes = [normalize_axis(node, int(a), rank) for a in node.attrs.get("axes", range(rank))]
    if len(axes) != target.size:
        raise node.error(f"shape {list(target)} does not match axes {axes}")
    for axis, want in zip(axes, (int(t) for t in target.reshape(-1))):
        size = shape_of(x)[axis]
        if want < size:  # crop, the extra element (odd difference) taken from the end
            x = imp.slice_axis(x, axis, (size - want) // 2, want)
        elif want > size:  # pad with zeros, the extra element at the end
            before = (want - size) // 2
            x = pad_constant(imp, x, axis, before, want - size - before)
    return [x]
