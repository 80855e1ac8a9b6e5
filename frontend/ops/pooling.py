"""ONNX -> graph dialect: pooling: MaxPool (with its Indices output), AveragePool, LpPool,
GlobalAveragePool, GlobalMaxPool, GlobalLpPool and MaxUnpool.

1-D pooling runs on the 2-D kernel (`window.on_2d_kernel`), 3-D pooling is separable (a 2-D pool
over H, W, then one over D); dilated pooling folds per-tap gathers with max/add; global pools
are reductions over every spatial axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import StringAttr

from ember.dialects import graph
from ember.frontend.context import (
    Const,
    ImportContext,
    Node,
    Value,
    dtype_of,
    i64_attr,
    scalar,
    shape_of,
)
from ember.frontend.ops.shape import pad_constant
from ember.frontend.ops.window import Window, in_float32, on_2d_kernel, window_geometry
from ember.frontend.registry import converts


@converts("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    kind = "mean" if node.op_type == "GlobalAveragePool" else "max"
    spatial = list(range(2, len(shape_of(x))))
    if any(shape_of(x)[axis] == 0 for axis in spatial):
        # A reduction's identity (-inf, or 0/0) is no pooled value: onnxruntime and the ONNX
        # reference both fail here.
        raise node.error(f"pools an empty spatial area (input shape {list(shape_of(x))})")
    return [imp.reduce(node, x, kind, spatial, True)]


def _pool2d(
    imp: ImportContext,
    x: Value,
    kind: str,
    window: Window,
    out_hw: Sequence[int],
    include_pad: bool,
) -> Value:
    """graph.max_pool or graph.average_pool over the 2 trailing dims (window undilated)."""
    props = {
        "kernel_shape": graph.i64_array(window.kernel),
        "strides": graph.i64_array(window.strides),
        "pads": graph.i64_array(window.pads),
    }
    out = [*shape_of(x)[:2], *out_hw]
    if kind == "max":
        return imp.emit(graph.MaxPoolOp, [x], out, **props)
    return imp.emit(
        graph.AveragePoolOp, [x], out, count_include_pad=i64_attr(int(include_pad)), **props
    )


def _pool_nd(
    imp: ImportContext, x: Value, kind: str, window: Window, out: Sequence[int], include_pad: bool
) -> Value:
    """Max or average pooling over the 1, 2 or 3 trailing dims of x (window undilated).

    Both are separable: a max (or, with per-axis counts, an average) over a box is the same
    over one axis of the same over the others, padding and clipped windows included.
    """
    xs = shape_of(x)
    n, c, spatial = xs[0], xs[1], len(xs) - 2
    if spatial == 2:
        return _pool2d(imp, x, kind, window, out, include_pad)
    if spatial == 1:
        return on_2d_kernel(
            imp, [x], window, lambda v, win: _pool2d(imp, v[0], kind, win, [1, *out], include_pad)
        )
    d, h, w = xs[2:]
    planes = imp.reshape(x, [n, c * d, h, w])
    y = _pool2d(imp, planes, kind, window.axes(1, 2), out[1:], include_pad)
    depth = imp.reshape(y, [n, c, d, out[1] * out[2]])
    first = window.axes(0, 1)  # the depth axis, pooled as a 2-D window of width 1
    begin, end = first.pads
    depth_window = Window.of([*first.kernel, 1], [*first.strides, 1], [1, 1], [begin, 0, end, 0])
    y = _pool2d(imp, depth, kind, depth_window, [out[0], out[1] * out[2]], include_pad)
    return imp.reshape(y, [n, c, *out])


def _dilated_pool(
    imp: ImportContext, x: Value, kind: str, window: Window, out: Sequence[int], include_pad: bool
) -> Value:
    """Pooling with dilated windows, one spatial axis at a time: each of the k taps is a
    gather of the padded input, folded by max or add; averages divide by each output's
    per-axis count of taps inside the input (or its padding, with count_include_pad)."""
    spatial = len(out)
    fill = -np.inf if kind == "max" else 0.0
    combine = graph.MaxOp if kind == "max" else graph.AddOp
    for a in range(spatial):
        axis, size = 2 + a, shape_of(x)[2 + a]
        k, s, d = window.kernel[a], window.strides[a], window.dilations[a]
        begin, end = window.pads[a], window.pads[a + spatial]
        taps = np.arange(out[a])[:, None] * s + np.arange(k)[None, :] * d  # padded coords
        # Ceil-mode windows may reach past the end padding: extend it with the fill too.
        beyond = max(0, int(taps.max()) + 1 - (size + begin + end))
        padded = pad_constant(imp, x, axis, begin, end + beyond, fill)
        acc: Value | None = None
        for j in range(k):
            tap = imp.gather_axis(padded, axis, taps[:, j])
            acc = tap if acc is None else imp.emit(combine, [acc, tap], shape_of(tap))
        assert acc is not None
        if kind == "avg":
            lo, hi = (-begin, size + end) if include_pad else (0, size)
            inside = ((taps - begin >= lo) & (taps - begin < hi)).sum(axis=1)
            scale = (1.0 / np.maximum(inside, 1)).astype(dtype_of(x))
            trailing = [1] * (spatial - a - 1)
            acc = imp.emit(graph.MulOp, [acc, Const(scale.reshape(-1, *trailing))], shape_of(acc))
        x = acc
    return x


def _power(imp: ImportContext, node: Node, x: Value, p: float) -> Value:
    if p == 1:
        return imp.unary(graph.AbsOp, x)
    if p == 2:
        return imp.binary(node, graph.MulOp, x, x)
    return imp.binary(node, graph.PowOp, imp.unary(graph.AbsOp, x), scalar(p, x))


def _root(imp: ImportContext, node: Node, x: Value, p: float) -> Value:
    if p == 1:
        return x
    if p == 2:
        return imp.unary(graph.SqrtOp, x)
    return imp.binary(node, graph.PowOp, x, scalar(1.0 / p, x))


def _max_pool_with_indices(
    imp: ImportContext, node: Node, x: Value, window: Window, out: Sequence[int], column_major: bool
) -> tuple[Value, Value]:
    """MaxPool's values and Indices output: the taps of every window gathered side by side
    into one trailing axis (padding as -inf), its max the value and its first argmax (ONNX's
    and onnxruntime's tie rule) mapped by constant tables to the flat index into x, over
    N, C and the spatial dims row-major (or, with storage_order=1, spatial dims
    column-major)."""
    xs = shape_of(x)
    n, c, sizes = xs[0], xs[1], xs[2:]
    spatial = len(sizes)
    taps = x
    origins = []
    for a in range(spatial):
        k, s, d = window.kernel[a], window.strides[a], window.dilations[a]
        begin, end = window.pads[a], window.pads[a + spatial]
        coords = np.arange(out[a])[:, None] * s + np.arange(k) * d  # in the padded input
        beyond = max(0, int(coords.max()) + 1 - (sizes[a] + begin + end))
        padded = pad_constant(imp, taps, 2 + a, begin, end + beyond, -np.inf)
        taps = imp.gather_axis(padded, 2 + a, coords.reshape(-1))
        origins.append(np.arange(out[a]) * s - begin)
    # [N, C, o1*k1, ..] -> [N, C, o1, k1, ..] -> [N, C, o.., k..] -> [N, C, o.., K]
    taps = imp.reshape(
        taps, [n, c, *[v for a in range(spatial) for v in (out[a], window.kernel[a])]]
    )
    perm = [0, 1, *[2 + 2 * a for a in range(spatial)], *[3 + 2 * a for a in range(spatial)]]
    taps = imp.reshape(imp.transpose(taps, perm), [n, c, *out, math.prod(window.kernel)])
    last = 2 + spatial
    values = imp.reduce(node, taps, "max", [last], False)
    tap = imp.emit(
        graph.ArgReduceOp,
        [taps],
        [n, c, *out, 1],
        np.dtype(np.int64),
        kind=StringAttr("max"),
        axis=i64_attr(last),
        select_last_index=i64_attr(0),
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
        [Const(np.asarray(tap_offsets, np.int64)), tap],
        [n, c, *out],
        axis=i64_attr(0),
    )
    index = imp.binary(node, graph.AddOp, index, Const(origin + planes))
    return values, index


def _accept_onnx_ceil_sizes(
    imp: ImportContext,
    node: Node,
    xs: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int],
    out: Sequence[int],
) -> None:
    """ceil_mode drops a last window that would start in the end padding (onnxruntime,
    PyTorch and window_geometry); ONNX's shape inference (onnx 1.23) keeps it, one more
    output per such axis. Where that is the only difference, ONNX's shape is accepted for
    this node's outputs: ember's is onnxruntime's."""
    spatial = len(out)
    onnx_out = []
    for a in range(spatial):
        extent = (kernel[a] - 1) * dilations[a] + 1
        span = xs[2 + a] + pads[a] + pads[a + spatial] - extent
        onnx_out.append(-(-span // strides[a]) + 1)
    if onnx_out != list(out):
        for name in node.proto.output:
            if name:
                imp.onnx_infers_instead(name, [*xs[:2], *onnx_out])


@converts("MaxPool", "AveragePool", "LpPool")
def _pool(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    xs = shape_of(x)
    spatial = len(xs) - 2
    if spatial not in (1, 2, 3):
        raise node.unsupported(
            f"{node.op_type} over {spatial} spatial dims (input rank {len(xs)}, shape {xs}); "
            "1-D, 2-D and 3-D are supported"
        )
    (x,), restore = in_float32(imp, node, [x], exact_ints=node.op_type == "MaxPool")
    assert x is not None
    kernel = list(node.attrs["kernel_shape"])
    strides = list(node.attrs.get("strides", [1] * spatial))
    dilations = list(node.attrs.get("dilations", [1] * spatial))
    ceil = bool(node.attrs.get("ceil_mode", 0))
    out, pads = window_geometry(node, xs[2:], kernel, strides, dilations, ceil)
    auto_pad = node.attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if ceil and auto_pad == "NOTSET":
        _accept_onnx_ceil_sizes(imp, node, xs, kernel, strides, dilations, pads, out)
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
    pool = _dilated_pool if any(d != 1 for d in dilations) else _pool_nd
    window = Window.of(kernel, strides, dilations, pads)
    if node.op_type == "MaxPool" and len(node.proto.output) > 1 and node.proto.output[1]:
        column_major = bool(node.attrs.get("storage_order", 0))
        values, indices = _max_pool_with_indices(imp, node, x, window, out, column_major)
        return [restore(values), indices]
    if node.op_type == "MaxPool":
        return [restore(pool(imp, x, "max", window, out, False))]
    if node.op_type == "AveragePool":
        include = bool(node.attrs.get("count_include_pad", 0))
        return [restore(pool(imp, x, "avg", window, out, include))]
    # LpPool: (sum of |x|^p over the window)^(1/p); padding adds zeros to the sum. The sum is
    # the padding-inclusive mean times the window's taps inside the padded input: all of
    # them, except in ceil-mode windows that reach past the end padding.
    p = float(node.attrs.get("p", 2))
    powered = _power(imp, node, x, p)
    mean = pool(imp, powered, "avg", window, out, True)
    counts = np.ones(out, dtype_of(mean))
    for a in range(spatial):
        padded_size = xs[2 + a] + pads[a] + pads[a + spatial]
        taps = np.arange(out[a])[:, None] * strides[a] + np.arange(kernel[a]) * dilations[a]
        inside = (taps < padded_size).sum(axis=1)
        counts = counts * inside.reshape(-1, *[1] * (spatial - a - 1))
    scale = scalar(float(counts.flat[0]), mean) if np.all(counts == counts.flat[0]) else None
    total = imp.binary(node, graph.MulOp, mean, scale or Const(counts))
    return [restore(_root(imp, node, total, p))]


@converts("GlobalLpPool")
def _global_lp_pool(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    p = float(node.attrs.get("p", 2))
    spatial = list(range(2, len(shape_of(x))))
    return [_root(imp, node, imp.reduce(node, _power(imp, node, x, p), "sum", spatial, True), p)]


@converts("MaxUnpool")
def _max_unpool(imp: ImportContext, node: Node) -> Sequence[Value]:
    """Zeros with x scattered to the flat positions of `indices` (MaxPool's Indices output)
    in the shape the pooling came from, padded at the end to `output_shape` if larger."""
    x, indices = imp.required(node, 0), imp.required(node, 1)
    xs = shape_of(x)
    spatial = len(xs) - 2
    if spatial < 1 or shape_of(indices) != xs:
        raise node.error(f"input {xs} and indices {shape_of(indices)} must be N×C×spatial alike")
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
    if (
        len(out) != len(pooled)
        or out[:2] != pooled[:2]
        or any(o < p for o, p in zip(out[2:], pooled[2:]))
    ):
        raise node.error(
            f"output_shape {out} must keep N, C of {pooled[:2]} and be at least the unpooled "
            f"spatial shape {pooled[2:]}"
        )
    flat = [math.prod(xs)]
    y = imp.emit(
        graph.ScatterElementsOp,
        [
            Const(np.zeros(math.prod(pooled), dtype_of(x))),
            imp.reshape(indices, flat),
            imp.reshape(x, flat),
        ],
        [math.prod(pooled)],
        axis=i64_attr(0),
        reduction=StringAttr("none"),
    )
    # A larger output_shape pads the unpooled tensor with zeros at the end of each spatial
    # dim, the indices staying relative to the unpooled shape: the ONNX reference and the
    # node suite's expected output (onnxruntime, like PyTorch, reads them in output_shape).
    y = imp.reshape(y, pooled)
    for axis in range(2, len(pooled)):
        y = pad_constant(imp, y, axis, 0, out[axis] - pooled[axis])
    return [y]
