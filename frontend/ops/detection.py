"""ONNX -> graph dialect: RoiAlign and DeformConv, imported as the ONNX graph of bilinear
gathers they amount to (as GridSample, `sampling.py`).

Both sample an image at fractional positions computed at run time (from the boxes, from the
offsets): the converter writes each position's integer taps, their weights and flat indices
as ONNX nodes, gathers the taps (Gather / GatherElements, which check every index at run
time) and combines them with elementwise ops, reductions and, for DeformConv, one batched
MatMul of the filter with the sampled columns (im2col with data-dependent positions).
RoiAlign with sampling_ratio 0 (a per-box sample count) is the one exception: a graph op with
its own kernel, `graph.roi_align_adaptive`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ember.dialects import graph
from ember.frontend.context import (
    ImportContext,
    Node,
    Value,
    dtype_of,
    f32_attr,
    i64_attr,
    shape_of,
)
from ember.frontend.ops.sampling import OnnxNodes
from ember.frontend.registry import converts


def _text(node: Node, key: str, default: str) -> str:
    value = node.attrs.get(key, default)
    return value.decode() if isinstance(value, bytes) else value


@converts("RoiAlign")
def _roi_align(imp: ImportContext, node: Node) -> Sequence[Value]:
    """onnxruntime's RoiAlign (and ONNX's reference; the nodes are spelled for opset 10,
    RoiAlign's first, so no comparison or integer Min newer than it): per box and output bin, a
    sampling_ratio x sampling_ratio grid of bilinear samples, averaged (avg) or maxed (max;
    as onnxruntime, each sample is the largest of its four weighted taps). Samples past the
    image by more than one pixel are 0; others are clamped to the border."""
    x, rois, indices = (imp.required(node, i) for i in range(3))
    x_shape, rois_shape, index_shape = shape_of(x), shape_of(rois), shape_of(indices)
    if len(x_shape) != 4:
        raise node.error(f"input of shape {list(x_shape)} (RoiAlign takes N x C x H x W)")
    n, c, h, w = x_shape
    boxes = rois_shape[0] if rois_shape else 0
    if len(rois_shape) != 2 or rois_shape[1] != 4 or index_shape != (boxes,):
        raise node.error(
            f"rois of shape {list(rois_shape)} and batch_indices of shape {list(index_shape)} "
            "(expected [R, 4] and [R])"
        )
    mode = _text(node, "mode", "avg")
    # Opset 10 had no coordinate_transformation_mode: its behaviour is output_half_pixel.
    transform = _text(
        node,
        "coordinate_transformation_mode",
        "half_pixel" if node.opset >= 16 else "output_half_pixel",
    )
    if mode not in ("avg", "max"):
        raise node.unsupported(f"mode '{mode}' (avg and max are defined)")
    if transform not in ("half_pixel", "output_half_pixel"):
        raise node.unsupported(f"coordinate_transformation_mode '{transform}'")
    out_h = int(node.attrs.get("output_height", 1))
    out_w = int(node.attrs.get("output_width", 1))
    ratio = int(node.attrs.get("sampling_ratio", 0))
    scale = node.float_attr("spatial_scale", 1.0)
    if out_h < 1 or out_w < 1:
        raise node.error(f"output_height {out_h} and output_width {out_w} must be positive")
    dtype = dtype_of(x)
    if ratio <= 0:
        return [_roi_align_adaptive(imp, node, mode, transform, (out_h, out_w), scale)]
    half_pixel = transform == "half_pixel"
    names = node.proto.input
    b = OnnxNodes(f"{node.name}/RoiAlign")

    f, i64 = b.typed(dtype), b.i64

    def coordinate(index: int) -> str:  # rois[:, index] * spatial_scale - offset, as [R, 1]
        value = b.add("Mul", [b.add("Gather", [names[1], i64([index])], axis=1), f(scale)])
        return b.add("Sub", [value, f(0.5)]) if half_pixel else value

    def samples(start: str, end: str, bins: int, size: int) -> tuple[str, str, str, str]:
        """Along one axis: the low and high tap (int64) and their weights, [R, bins·ratio]."""
        extent = b.add("Sub", [end, start])
        if not half_pixel:  # malformed boxes are forced to 1x1
            extent = b.add("Max", [extent, f(1.0)])
        bin_size = b.add("Div", [extent, f(bins)])
        steps = (np.arange(bins)[:, None] + (np.arange(ratio)[None, :] + 0.5) / ratio).reshape(
            1, -1
        )
        pos = b.add("Add", [start, b.add("Mul", [bin_size, f(steps)])])
        inside = b.add(
            "And",
            [
                b.add("Not", [b.add("Less", [pos, f(-1.0)])]),
                b.add("Not", [b.add("Greater", [pos, f(float(size))])]),
            ],
        )
        clamped = b.add("Min", [b.add("Max", [pos, f(0.0)]), f(float(size - 1))])
        low_f = b.add("Floor", [clamped])
        high_weight = b.add("Where", [inside, b.add("Sub", [clamped, low_f]), f(0.0)])
        low_weight = b.add("Where", [inside, b.add("Sub", [f(1.0), high_weight]), f(0.0)])
        low = b.add("Cast", [low_f], to=7)
        high = b.add(
            "Cast", [b.add("Min", [b.add("Add", [low_f, f(1.0)]), f(float(size - 1))])], to=7
        )
        return low, high, low_weight, high_weight

    x1, y1, x2, y2 = (coordinate(i) for i in range(4))
    ys = samples(y1, y2, out_h, h)  # [R, out_h·ratio]
    xs = samples(x1, x2, out_w, w)  # [R, out_w·ratio]
    sy, sx = out_h * ratio, out_w * ratio
    # Row of each box's image in X viewed as [N·H·W, C]; an index outside [0, N) becomes N, which
    # the gather refuses (a negative one must not count from the end).
    batch = b.add("Cast", [names[2]], to=7)
    valid = b.add(
        "And", [b.add("Not", [b.add("Less", [batch, i64(0)])]), b.add("Less", [batch, i64(n)])]
    )
    batch = b.add("Where", [valid, batch, i64(n)])
    base = b.add("Reshape", [b.add("Mul", [batch, i64(h * w)]), i64([boxes, 1, 1])])
    pixels = b.add(
        "Reshape",
        [b.add("Transpose", [names[0]], perm=[0, 2, 3, 1]), i64([n * h * w, c])],
    )
    taps = []
    for y_index, y_weight in ((ys[0], ys[2]), (ys[1], ys[3])):
        for x_index, x_weight in ((xs[0], xs[2]), (xs[1], xs[3])):
            row = b.add("Mul", [b.add("Reshape", [y_index, i64([boxes, sy, 1])]), i64(w)])
            flat = b.add(
                "Add", [b.add("Add", [base, row]), b.add("Reshape", [x_index, i64([boxes, 1, sx])])]
            )
            weight = b.add(
                "Mul",
                [
                    b.add("Reshape", [y_weight, i64([boxes, sy, 1, 1])]),
                    b.add("Reshape", [x_weight, i64([boxes, 1, sx, 1])]),
                ],
            )
            taps.append(
                b.add("Mul", [b.add("Gather", [pixels, flat], axis=0), weight])
            )  # [R, sy, sx, C]
    if mode == "avg":
        total = b.add("Add", [b.add("Add", [taps[0], taps[1]]), b.add("Add", [taps[2], taps[3]])])
        reduce = "ReduceMean"
    else:
        total = b.add("Max", taps)
        reduce = "ReduceMax"
    grid = b.add("Reshape", [total, i64([boxes, out_h, ratio, out_w, ratio, c])])
    pooled = b.reduce(reduce, grid, [2, 4], node.opset, keepdims=0)  # [R, out_h, out_w, C]
    out = b.add("Transpose", [pooled], perm=[0, 3, 1, 2])
    return [b.import_as(imp, node, out)]


def _roi_align_adaptive(
    imp: ImportContext,
    node: Node,
    mode: str,
    transform: str,
    output_size: tuple[int, int],
    scale: float,
) -> Value:
    """sampling_ratio 0: each box takes ceil(box size / output size) samples per bin along each
    axis, a count known only from the box values at run time, so it is one graph op whose
    kernel loops over a per-box number of samples (`kernel_to_loops/selection.py`)."""
    x, rois, indices = (imp.required(node, i) for i in range(3))
    if dtype_of(x) != np.float32 or dtype_of(rois) != np.float32:
        raise node.unsupported(
            f"sampling_ratio 0 on {dtype_of(x)} (ember's adaptive-grid kernel takes float32)"
        )
    if dtype_of(indices) != np.int64:
        raise node.error(f"batch_indices of type {dtype_of(indices)} (RoiAlign takes int64)")
    boxes, channels = shape_of(rois)[0], shape_of(x)[1]
    return imp.emit(
        graph.RoiAlignAdaptiveOp,
        [x, rois, indices],
        [boxes, channels, *output_size],
        np.dtype(np.float32),
        max_mode=i64_attr(int(mode == "max")),
        half_pixel=i64_attr(int(transform == "half_pixel")),
        spatial_scale=f32_attr(scale),
    )


@converts("DeformConv")
def _deform_conv(imp: ImportContext, node: Node) -> Sequence[Value]:
    """2-D deformable convolution: each output pixel's kernel taps sit at the regular grid
    position plus a learned offset; each tap is a bilinear sample (zero outside the image),
    times the mask when given. The sampled columns [N, C·kh·kw, Ho·Wo] are gathered with
    GatherElements (4 taps), then one batched MatMul per group applies the filter."""
    x, weight, offset = (imp.required(node, i) for i in range(3))
    bias, mask = imp.input(node, 3), imp.input(node, 4)
    x_shape, w_shape, o_shape = shape_of(x), shape_of(weight), shape_of(offset)
    if len(x_shape) != 4:
        raise node.unsupported(f"input of shape {list(x_shape)} (ember deforms 2-D convolutions)")
    n, c, h, w = x_shape
    group = int(node.attrs.get("group", 1))
    offset_group = int(node.attrs.get("offset_group", 1))
    kernel = [int(k) for k in node.attrs.get("kernel_shape", w_shape[2:])]
    strides = [int(s) for s in node.attrs.get("strides", [1, 1])]
    dilations = [int(d) for d in node.attrs.get("dilations", [1, 1])]
    pads = [int(p) for p in node.attrs.get("pads", [0, 0, 0, 0])]
    out_c = w_shape[0] if len(w_shape) == 4 else 0
    if (
        len(w_shape) != 4
        or list(w_shape[2:]) != kernel
        or group < 1
        or offset_group < 1
        or c != w_shape[1] * group
        or out_c % group
        or c % offset_group
    ):
        raise node.error(
            f"input {list(x_shape)}, weight {list(w_shape)}, kernel_shape {kernel}, group {group}, "
            f"offset_group {offset_group} do not fit together"
        )
    taps = kernel[0] * kernel[1]
    out_h = (h + pads[0] + pads[2] - dilations[0] * (kernel[0] - 1) - 1) // strides[0] + 1
    out_w = (w + pads[1] + pads[3] - dilations[1] * (kernel[1] - 1) - 1) // strides[1] + 1
    if tuple(o_shape) != (n, offset_group * taps * 2, out_h, out_w):
        raise node.error(
            f"offset of shape {list(o_shape)}, expected {[n, offset_group * taps * 2, out_h, out_w]}"
        )
    if mask is not None and shape_of(mask) != (n, offset_group * taps, out_h, out_w):
        raise node.error(
            f"mask of shape {list(shape_of(mask))}, expected {[n, offset_group * taps, out_h, out_w]}"
        )
    if bias is not None and shape_of(bias) != (out_c,):
        raise node.error(f"bias of shape {list(shape_of(bias))} for {out_c} output channels")
    dtype = dtype_of(x)
    names = node.proto.input
    b = OnnxNodes(f"{node.name}/DeformConv")
    pixels = out_h * out_w
    per_group = c // offset_group

    f, i64 = b.typed(dtype), b.i64

    # Regular grid position of each tap of each output pixel: [1, 1, kh·kw, Ho, Wo] per axis.
    ky, kx = np.meshgrid(
        np.arange(kernel[0]) * dilations[0], np.arange(kernel[1]) * dilations[1], indexing="ij"
    )
    oy, ox = np.meshgrid(
        np.arange(out_h) * strides[0] - pads[0],
        np.arange(out_w) * strides[1] - pads[1],
        indexing="ij",
    )
    grid_y = (ky.reshape(-1, 1, 1) + oy[None]).reshape(1, 1, taps, out_h, out_w)
    grid_x = (kx.reshape(-1, 1, 1) + ox[None]).reshape(1, 1, taps, out_h, out_w)
    moved = b.add("Reshape", [names[2], i64([n, offset_group, taps, 2, out_h, out_w])])

    def position(axis: int, grid: np.ndarray) -> str:  # [N, G, kh·kw, Ho, Wo]
        shift = b.add(
            "Reshape",
            [
                b.add("Gather", [moved, i64(axis)], axis=3),
                i64([n, offset_group, taps, out_h, out_w]),
            ],
        )
        return b.add("Add", [shift, f(grid)])

    py, px = position(0, grid_y), position(1, grid_x)
    y0f, x0f = b.add("Floor", [py]), b.add("Floor", [px])
    wy1, wx1 = b.add("Sub", [py, y0f]), b.add("Sub", [px, x0f])
    wy0, wx0 = b.add("Sub", [f(1.0), wy1]), b.add("Sub", [f(1.0), wx1])
    y0, x0 = b.add("Cast", [y0f], to=7), b.add("Cast", [x0f], to=7)
    y1, x1 = b.add("Add", [y0, i64(1)]), b.add("Add", [x0, i64(1)])
    flat_x = b.add("Reshape", [names[0], i64([n, offset_group, per_group, h * w])])
    columns_shape = [n, offset_group, per_group, taps * pixels]
    mask_weight = None
    if mask is not None:
        mask_weight = b.add("Reshape", [names[4], i64([n, offset_group, 1, taps * pixels])])
    total = None
    for yi, wy in ((y0, wy0), (y1, wy1)):
        for xi, wx in ((x0, wx0), (x1, wx1)):
            yc = b.add("Min", [b.add("Max", [yi, i64(0)]), i64(h - 1)])
            xc = b.add("Min", [b.add("Max", [xi, i64(0)]), i64(w - 1)])
            inside = b.add("And", [b.add("Equal", [yc, yi]), b.add("Equal", [xc, xi])])
            flat = b.add("Add", [b.add("Mul", [yc, i64(w)]), xc])
            index = b.add(
                "Expand",
                [
                    b.add("Reshape", [flat, i64([n, offset_group, 1, taps * pixels])]),
                    i64(columns_shape),
                ],
            )
            value = b.add("GatherElements", [flat_x, index], axis=3)
            tap_weight = b.add(
                "Reshape", [b.add("Mul", [wy, wx]), i64([n, offset_group, 1, taps * pixels])]
            )
            value = b.add("Mul", [value, tap_weight])
            inside = b.add("Reshape", [inside, i64([n, offset_group, 1, taps * pixels])])
            value = b.add("Where", [inside, value, f(0.0)])  # a tap outside reads 0, never NaN·0
            total = value if total is None else b.add("Add", [total, value])
    assert total is not None
    if mask_weight is not None:
        total = b.add("Mul", [total, mask_weight])
    # [N, C, kh·kw, Ho·Wo] -> per conv group [N, group, C/group·kh·kw, Ho·Wo]
    columns = b.add("Reshape", [total, i64([n, group, (c // group) * taps, pixels])])
    filters = b.add("Reshape", [names[1], i64([group, out_c // group, (c // group) * taps])])
    product = b.add("MatMul", [filters, columns])  # [N, group, out_c / group, Ho·Wo]
    out = b.add("Reshape", [product, i64([n, out_c, out_h, out_w])])
    if bias is not None:
        out = b.add("Add", [out, b.add("Reshape", [names[3], i64([1, out_c, 1, 1])])])
    return [b.import_as(imp, node, out)]
