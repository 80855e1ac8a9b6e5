"""ONNX -> graph dialect: Resize (and the older Upsample).

Per axis, y = sum over taps t of gather(x, index[:, t]) * weight[:, t], with index tables and
weights computed here with numpy: every coordinate transformation and mode (nearest, linear,
cubic, antialiased) shares this one mechanism; wide antialiased filters gather all taps at once
and sum them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, f32, i64
from xdsl.ir import Attribute

from ember.dialects import graph
from ember.frontend.context import (
    Const,
    ImportContext,
    Node,
    Value,
    dtype_of,
    importing_probe,
    normalize_axis,
    scalar,
    shape_of,
)
from ember.frontend.registry import converts

_COORDINATE_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
    "tf_crop_and_resize",
)
_NEAREST_MODES = ("floor", "ceil", "round_prefer_ceil", "round_prefer_floor")


def _source_coordinates(
    mode: str, out_size: int, in_size: int, scale: float, roi: tuple[float, float]
) -> np.ndarray:
    """The input coordinate each output position samples (ONNX coordinate_transformation_mode).

    In float32 and in onnxruntime's order of operations: a coordinate that is an integer or a
    half in exact arithmetic lands just beside it in float32, and nearest's rounding follows
    that (computed in float64, ~1 output row in 10 took another source row at scales such as
    2.5 or 0.7).
    """
    f32 = np.float32
    i = np.arange(out_size, dtype=f32)
    s = f32(scale)
    if mode == "half_pixel":
        return ((i + f32(0.5)) / s - f32(0.5)).astype(np.float64)
    if mode == "half_pixel_symmetric":
        adjustment = f32(out_size) / (s * f32(in_size))
        offset = f32(in_size) / f32(2) * (f32(1) - adjustment)
        x = float(offset) + (i.astype(np.float64) + 0.5) / float(s) - 0.5
        return x.astype(f32).astype(np.float64)
    if mode == "pytorch_half_pixel":
        if out_size == 1:
            return np.zeros(out_size)
        return ((i + f32(0.5)) / s - f32(0.5)).astype(np.float64)
    if mode == "align_corners":
        if out_size == 1:
            return np.zeros(out_size)
        span = scale * in_size - 1
        if abs(span - (out_size - 1)) > 1e-3:  # not float32 rounding (sizes given: out/in)
            # ONNX divides by the unrounded output length scale * in_size - 1 (its conformance
            # cases); onnxruntime by the output length - 1: they differ here, ember follows ONNX.
            return i.astype(np.float64) * (in_size - 1) / span
        return (i * f32(in_size - 1) / f32(out_size - 1)).astype(np.float64)
    if mode == "asymmetric":
        return (i / s).astype(np.float64)
    if mode == "tf_half_pixel_for_nn":
        # Opset 11's TensorFlow nearest mode (dropped from the spec in 13; onnxruntime and
        # tf2onnx-converted models still use it).
        return ((i + f32(0.5)) / s).astype(np.float64)
    if mode == "tf_crop_and_resize":
        start, end = f32(roi[0]), f32(roi[1])
        last = f32(in_size - 1)
        if out_size > 1:
            step = i * (end - start) * last / f32(out_size - 1)
            return (start * last + step).astype(np.float64)
        return np.full(out_size, f32(0.5 * float(start + end) * float(last)), np.float64)
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


def _modes(node: Node) -> tuple[str, str, str]:
    """(mode, coordinate_transformation_mode, nearest_mode) of a Resize, checked."""

    def text(key: str, default: str) -> str:
        value = node.attrs.get(key, default)
        return value.decode() if isinstance(value, bytes) else value

    mode, coord = text("mode", "nearest"), text("coordinate_transformation_mode", "half_pixel")
    rule = "floor"
    if node.opset < 11:
        coord = "asymmetric"
    if coord not in _COORDINATE_MODES:
        known = ", ".join(_COORDINATE_MODES)
        raise node.error(f"coordinate_transformation_mode '{coord}' is not one of {known}")
    if mode == "nearest" and node.opset >= 11:
        rule = text("nearest_mode", "round_prefer_floor")
        if rule not in _NEAREST_MODES:
            known = ", ".join(_NEAREST_MODES)
            raise node.error(f"nearest_mode '{rule}' is not one of {known}")
    return mode, coord, rule


def _repeats_at_every_size(node: Node, factor: int, scale: float) -> bool:
    """Whether a nearest Resize by the whole factor k (its scale exactly k) reads input
    o // k for output o at every size, not only at the one imported (o = k m + r, 0 <= r < k):
    half_pixel (and its pytorch and symmetric forms, the same at a whole factor) samples
    x = m + (r + 1/2) / k - 1/2, within 1/2 - 1/(2k) of m, rounded to m either way;
    asymmetric x = m + r / k, floored to m, rounded to m by round_prefer_floor only when k = 2
    (r / k <= 1/2); tf_half_pixel_for_nn x = m + (r + 1/2) / k, floored to m. The rest
    (align_corners, ceil, other roundings) is not proven here."""
    mode, coord, rule = _modes(node)
    if mode != "nearest" or scale != factor:
        return False
    if coord in ("half_pixel", "pytorch_half_pixel", "half_pixel_symmetric"):
        return rule in ("round_prefer_floor", "round_prefer_ceil")
    if coord == "asymmetric":
        return rule == "floor" or (rule == "round_prefer_floor" and factor == 2)
    return coord == "tf_half_pixel_for_nn" and rule == "floor"


def _resize_taps(
    node: Node, in_size: int, out_size: int, scale: float, roi: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(index [out, taps], weight [out, taps], extrapolated positions or None) of one axis."""
    a = node.attrs
    mode, coord, rule = _modes(node)
    x = _source_coordinates(coord, out_size, in_size, scale, roi)
    outside = None
    if coord == "tf_crop_and_resize":
        outside = (x < 0) | (x > in_size - 1)
    if mode == "nearest":
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


def _weighted(imp: ImportContext, node: Node, term: Value, weight: np.ndarray) -> Value:
    """term * weight, and exactly 0 where the weight is 0: a tap that does not count reads no
    NaN or inf into the result (NaN * 0 is NaN). Which zero-weight taps an implementation
    reads is arbitrary (onnxruntime's and onnx.reference's differ), so only this rule makes a
    NaN reach just the outputs that weigh it."""
    y = term
    if not np.all((weight == 0) | (weight == 1)):
        y = imp.binary(node, graph.MulOp, term, Const(weight.astype(dtype_of(term))))
    if np.any(weight == 0):
        zero = scalar(0.0, term)
        y = imp.emit(graph.WhereOp, [Const(weight != 0), y, zero], shape_of(y), dtype_of(term))
    return y


def _repeat_factor(
    index: np.ndarray, weight: np.ndarray, outside: np.ndarray | None, in_size: int
) -> int | None:
    """k when the axis' taps copy each input position k times in order (nearest upsampling by a
    whole factor: output i reads input i // k), else None."""
    out_size = index.shape[0]
    if index.shape[1] != 1 or outside is not None or out_size % in_size or not np.all(weight == 1):
        return None
    k = out_size // in_size
    return k if k > 1 and np.array_equal(index[:, 0], np.arange(out_size) // k) else None


def _repeat_axes(imp: ImportContext, x: Value, repeats: dict[int, int]) -> Value:
    """x with each axis a in `repeats` repeated element by element repeats[a] times, as
    Reshape -> Expand -> Reshape: a size-1 axis after each, broadcast to the factor. The
    elementwise lowering sweeps such a broadcast with vector shuffles, where a gather of a
    constant index table along the last axis moves one element at a time."""
    split: list[int] = []
    grown: list[int] = []
    for axis, size in enumerate(shape_of(x)):
        split.append(size)
        grown.append(size)
        if axis in repeats:
            split.append(1)
            grown.append(repeats[axis])
    out = [size * repeats.get(axis, 1) for axis, size in enumerate(shape_of(x))]
    expanded = imp.emit(graph.ExpandOp, [imp.reshape(x, split)], grown)
    return imp.reshape(expanded, out)


def _resize_axis(
    imp: ImportContext,
    node: Node,
    x: Value,
    axis: int,
    out_size: int,
    taps: tuple[np.ndarray, np.ndarray, np.ndarray | None],
) -> Value:
    shape = shape_of(x)
    index, weight, outside = taps
    trailing = [1] * (len(shape) - axis - 1)
    dtype = dtype_of(x)
    taps = [t for t in range(index.shape[1]) if weight[:, t].any()]
    y: Value | None = None
    if len(taps) > _MAX_UNROLLED_TAPS:
        # Antialiased downsampling widens the filter with the ratio: gather every tap at once
        # into a new axis, weight and sum it, so that the op count does not grow with it.
        gathered = imp.gather_axis(x, axis, index[:, taps].reshape(-1))
        split = [*shape[:axis], out_size, len(taps), *shape[axis + 1 :]]
        w = weight[:, taps].reshape(out_size, len(taps), *trailing)
        y = _weighted(imp, node, imp.reshape(gathered, split), w)
        y = imp.reduce(node, y, "sum", [axis + 1], False)
        taps = []
    for t in taps:
        term = imp.gather_axis(x, axis, index[:, t])
        term = _weighted(imp, node, term, weight[:, t].reshape(-1, *trailing))
        y = term if y is None else imp.binary(node, graph.AddOp, y, term)
    if y is None or outside is not None:
        fill = np.where(outside if outside is not None else True, 1.0, 0.0)
        value = float(node.attrs.get("extrapolation_value", 0.0))
        extra = Const((fill * value).astype(dtype).reshape(-1, *trailing))
        if y is None:  # every position extrapolated: the fill, in the output's shape
            grown = [*shape[:axis], out_size, *shape[axis + 1 :]]
            return imp.emit(graph.ExpandOp, [extra], grown)
        y = imp.binary(node, graph.AddOp, y, extra)
    return y


# Longest repeating column pattern kernel.resize_linear computes with shuffles.
_MAX_COLUMN_FACTOR = 8
# Widest output whose column taps are listed on the op for the kernel to unroll one block of
# shuffles per vector of output columns (its code grows with the width).
_MAX_LISTED_COLUMNS = 2048
_Taps = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def _two_tap(taps: _Taps) -> bool:
    """Whether an axis' taps fit graph.resize_linear: two taps, nothing extrapolated."""
    index, weight, outside = taps
    return index.shape[1] == 2 and outside is None


def _identity_taps(size: int) -> _Taps:
    index = np.repeat(np.arange(size)[:, None], 2, axis=1)
    return index, np.tile([1.0, 0.0], (size, 1)), None


_NO_PATTERN = (0, 0, 0, np.zeros((0, 2), np.int64), np.zeros((0, 2), np.float32))


def _column_pattern(
    index: np.ndarray, weight: np.ndarray, in_size: int
) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    """(k, lo, hi, offsets [k, 2], weights [k, 2]): for input columns i in [lo, hi), output
    column i * k + j reads columns i + offsets[j] with weights[j] (float32, as the tables
    hold them), the longest such run around the middle column; k 0 when there is none."""
    none = _NO_PATTERN
    out_size = index.shape[0]
    if out_size % in_size or out_size // in_size > _MAX_COLUMN_FACTOR:
        return none
    k = out_size // in_size
    offsets = (index - (np.arange(out_size) // k)[:, None]).reshape(in_size, k, 2)
    weights = weight.astype(np.float32).reshape(in_size, k, 2)
    mid = in_size // 2
    same = np.all(offsets == offsets[mid], axis=(1, 2)) & np.all(
        weights == weights[mid], axis=(1, 2)
    )
    lo, hi = mid, mid + 1
    while lo > 0 and same[lo - 1]:
        lo -= 1
    while hi < in_size and same[hi]:
        hi += 1
    return k, lo, hi, offsets[mid], weights[mid]


def _resize_last_two(
    imp: ImportContext, x: Value, out: tuple[int, int], rows: _Taps, columns: _Taps
) -> Value:
    """graph.resize_linear of x's last two axes to `out` (rows and columns: two taps each)."""
    shape = shape_of(x)
    # Up to _MAX_LISTED_COLUMNS output columns, every column's taps are listed (measured
    # faster than the pattern even for whole factors: 0.53 against 0.65 ms at x2, the
    # pattern's edges and remainder reading the tables); wider outputs use the pattern.
    listing = out[1] <= _MAX_LISTED_COLUMNS
    pattern = _NO_PATTERN if listing else _column_pattern(columns[0], columns[1], shape[-1])
    k, lo, hi, offsets, phase_weights = pattern
    indices = np.concatenate([rows[0], columns[0]]).astype(np.int32)
    weights = np.concatenate([rows[1], columns[1]]).astype(np.float32)
    listed: dict[str, Attribute | None] = {"column_taps": None, "column_tap_weights": None}
    if listing:
        listed = {
            "column_taps": DenseArrayBase.from_list(i64, [int(v) for v in columns[0].reshape(-1)]),
            "column_tap_weights": DenseArrayBase.from_list(
                f32, [float(v) for v in columns[1].astype(np.float32).reshape(-1)]
            ),
        }
    return imp.emit(
        graph.ResizeLinearOp,
        [x, Const(indices), Const(weights)],
        [*shape[:-2], *out],
        column_factor=IntegerAttr(k, i64),
        column_interior=DenseArrayBase.from_list(i64, [lo, hi]),
        column_offsets=DenseArrayBase.from_list(i64, [int(v) for v in offsets.reshape(-1)]),
        column_weights=DenseArrayBase.from_list(f32, [float(v) for v in phase_weights.reshape(-1)]),
        **listed,
    )


@converts("Resize", "Upsample")
def _resize(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = shape_of(x)
    rank = len(shape)
    if node.opset < 9 and "scales" in node.attrs:
        # Upsample-7 carries its scales as an attribute (opset 9 made them an input).
        roi, sizes = None, None
        scales = np.asarray(node.attrs["scales"], dtype=np.float32)
    elif node.opset < 11:
        roi, scales, sizes = None, imp.constant(node, 1, "scales"), None
    else:
        roi, scales = imp.constant(node, 1, "roi"), imp.constant(node, 2, "scales")
        sizes = imp.constant(node, 3, "sizes")
    axes = [normalize_axis(node, int(v), rank) for v in node.attrs.get("axes", range(rank))]
    if scales is not None and scales.size:
        factors = [float(s) for s in scales]
        # The product in float32, as onnxruntime takes it: 10 x 3.3 is 33, not 32.
        out = [
            int(math.floor(np.float32(shape[a]) * np.float32(f)))
            for a, f in zip(axes, factors, strict=True)
        ]
        in_float64 = [int(math.floor(shape[a] * f)) for a, f in zip(axes, factors, strict=True)]
        if in_float64 != out and node.proto.output[0]:
            onnx_shape = list(shape)
            for a, size in zip(axes, in_float64, strict=True):
                onnx_shape[a] = size
            imp.onnx_infers_instead(node.proto.output[0], onnx_shape)
    elif sizes is not None and sizes.size:
        out = [int(s) for s in sizes]
        factors = [
            float(np.float32(o) / np.float32(shape[a])) for a, o in zip(axes, out, strict=True)
        ]
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
    repeats: dict[int, int] = {}
    gathers: list[tuple[int, int, tuple[np.ndarray, np.ndarray, np.ndarray | None]]] = []
    for k, axis in enumerate(axes):
        if roi_values:
            box = (roi_values[k], roi_values[k + len(axes)])
        else:
            box = (0.0, 1.0)
        if out[k] == shape[axis] and factors[k] == 1.0 and not roi_values:
            continue
        taps = _resize_taps(node, shape[axis], out[k], factors[k], box)
        factor = _repeat_factor(*taps, shape[axis])
        if (
            factor is not None
            and importing_probe()
            and not _repeats_at_every_size(node, factor, factors[k])
        ):
            # Compile once would run this repeat at every shape (engine/compile_once.py).
            mode, coord, rule = _modes(node)
            raise node.unsupported(
                f"a {mode} Resize by {factor} with coordinate_transformation_mode '{coord}' "
                f"and nearest_mode '{rule}' reads input o // {factor} for output o at this "
                "size only, not provably at every size (compiled per shape instead)"
            )
        if factor is not None:
            repeats[axis] = factor
        else:
            gathers.append((axis, out[k], taps))
    # Each axis is resized on its own, so the repeated axes can go first, all in one op.
    y = _repeat_axes(imp, x, repeats) if repeats else x
    last_two: dict[int, tuple[int, _Taps]] = {}
    if rank >= 2 and dtype_of(x) == np.float32:
        last_two = {
            axis: (size, taps)
            for axis, size, taps in gathers
            if axis >= rank - 2 and _two_tap(taps)
        }
    for axis, size, taps in gathers:
        if axis not in last_two:
            y = _resize_axis(imp, node, y, axis, size, taps)
    if last_two:
        # Two-tap (linear) rows and columns in one kernel: a blend of two rows, then of two
        # columns of it, where a gather per tap and axis moved one element at a time.
        sizes = shape_of(y)
        rows = last_two.get(rank - 2, (sizes[-2], _identity_taps(sizes[-2])))
        columns = last_two.get(rank - 1, (sizes[-1], _identity_taps(sizes[-1])))
        y = _resize_last_two(imp, y, (rows[0], columns[0]), rows[1], columns[1])
    return [y]
