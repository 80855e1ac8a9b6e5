"""ONNX -> graph dialect: Conv and ConvTranspose in 1, 2 and 3 dims, on the 2-D (NCHW) kernel.

A 1-D problem runs as 2-D of height 1 (`window.on_2d_kernel`); a 3-D Conv gathers the KD input
slices each output depth reads beside each other as channels and runs one 2-D convolution; a
strided ConvTranspose is one stride-1 convolution whose output channels are the stride phases
(sub-pixel form), interleaved back by a reshape-transpose; dilated ones convolve the
zero-stuffed input with the flipped filter (docs/architecture.md, "Kernels").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ember.dialects import graph
from ember.frontend.context import (
    ImportContext,
    Node,
    Value,
    dtype_of,
    i64_attr,
    shape_of,
)
from ember.frontend.ops.sampling import OnnxNodes
from ember.frontend.ops.shape import pad_constant
from ember.frontend.ops.window import Window, in_float32, on_2d_kernel, window_geometry
from ember.frontend.registry import converts


def _spatial_rank(node: Node, x: Value, w: Value) -> int:
    """The number of spatial axes of a convolution of x by w: 1, 2 or 3, else refused."""
    xs, ws = shape_of(x), shape_of(w)
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


def _float32_operands(
    imp: ImportContext, node: Node
) -> tuple[Value, Value, Value | None, int, Callable[[Value], Value]]:
    """A Conv or ConvTranspose node's X, W and optional B in float32, its number of spatial
    axes (checked) and the cast of a float32 result back to the operands' type."""
    x, w, bias = imp.required(node, 0), imp.required(node, 1), imp.input(node, 2)
    spatial = _spatial_rank(node, x, w)
    (x, w, bias), restore = in_float32(imp, node, [x, w, bias])
    assert x is not None and w is not None
    return x, w, bias, spatial, restore


def _conv2d(
    imp: ImportContext,
    x: Value,
    w: Value,
    bias: Value | None,
    window: Window,
    group: int,
    out: Sequence[int],
) -> Value:
    return imp.emit(
        graph.ConvOp,
        [x, w, bias, None],
        [shape_of(x)[0], shape_of(w)[0], *out],
        strides=graph.i64_array(window.strides),
        pads=graph.i64_array(window.pads),
        dilations=graph.i64_array(window.dilations),
        group=i64_attr(group),
    )


def _conv3d(
    imp: ImportContext,
    x: Value,
    w: Value,
    bias: Value | None,
    window: Window,
    group: int,
    out: Sequence[int],
) -> Value:
    """A 3-D convolution as one 2-D convolution over the output depth slices (see above)."""
    n, c, _, h, wd = shape_of(x)
    cout, per_group, kd = shape_of(w)[:3]
    depth = window.axes(0, 1)
    od = out[0]
    padded = pad_constant(imp, x, 2, depth.pads[0], depth.pads[1])
    taps = np.arange(od)[:, None] * depth.strides[0] + np.arange(kd) * depth.dilations[0]
    slices = imp.gather_axis(padded, 2, taps.reshape(-1))  # N, C, OD*KD, H, W
    # Input channels of a group g become g's KD taps of its C/g channels, in that order.
    split = imp.reshape(slices, [n, group, c // group, od, kd, h * wd])
    stacked = imp.transpose(split, [0, 3, 1, 4, 2, 5])  # N, OD, g, KD, C/g, H*W
    planes = imp.reshape(stacked, [n * od, group * kd * (c // group), h, wd])
    filt = imp.transpose(w, [0, 2, 1, 3, 4])  # Cout, KD, C/g, KH, KW
    filt = imp.reshape(filt, [cout, kd * per_group, *shape_of(w)[3:]])
    y = _conv2d(imp, planes, filt, bias, window.axes(1, 2), group, out[1:])
    y = imp.transpose(imp.reshape(y, [n, od, cout, out[1] * out[2]]), [0, 2, 1, 3])
    return imp.reshape(y, [n, cout, *out])


def _conv_nd(
    imp: ImportContext,
    x: Value,
    w: Value,
    bias: Value | None,
    window: Window,
    group: int,
    out: Sequence[int],
) -> Value:
    """Convolution of N×C×spatial x by O×(C/group)×kernel w over 1, 2 or 3 spatial dims."""
    if len(window.kernel) == 3:
        return _conv3d(imp, x, w, bias, window, group, out)
    spatial_out = [1, *out][-2:]
    return on_2d_kernel(
        imp,
        [x, w],
        window,
        lambda xw, win: _conv2d(imp, xw[0], xw[1], bias, win, group, spatial_out),
    )


@converts("Conv")
def _conv(imp: ImportContext, node: Node) -> Sequence[Value]:
    x, w, bias, spatial, restore = _float32_operands(imp, node)
    xs, ws = shape_of(x), shape_of(w)
    group = int(node.attrs.get("group", 1))
    if group <= 0 or xs[1] != ws[1] * group or ws[0] % group:
        raise node.error(f"input {xs}, weight {ws} and group {group} do not match")
    kernel = list(ws[2:])
    strides = list(node.attrs.get("strides", [1] * spatial))
    dilations = list(node.attrs.get("dilations", [1] * spatial))
    out, pads = window_geometry(node, xs[2:], kernel, strides, dilations)
    window = Window.of(kernel, strides, dilations, pads)
    return [restore(_conv_nd(imp, x, w, bias, window, group, out))]


def _stuff_zeros(imp: ImportContext, x: Value, strides: Sequence[int]) -> Value:
    """Insert stride-1 zeros between neighbours along each spatial axis of NCHW x."""
    for k, stride in enumerate(strides):
        if stride == 1:
            continue
        axis = 2 + k
        shape = list(shape_of(x))
        size = shape[axis]
        # [.., size, ..] -> [.., size, 1, ..] ++ zeros [.., size, stride-1, ..] -> [.., size*stride, ..]
        wide = [*shape[: axis + 1], 1, *shape[axis + 1 :]]
        y = pad_constant(imp, imp.reshape(x, wide), axis + 1, 0, stride - 1)
        shape[axis] = size * stride
        x = imp.slice_axis(imp.reshape(y, shape), axis, 0, (size - 1) * stride + 1)
    return x


def _conv_transpose_by_phases(
    imp: ImportContext,
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
    xs, ws = shape_of(x), shape_of(w)
    spatial = len(xs) - 2
    cin, per_group, kernel = ws[0], ws[1], ws[2:]
    taps = [-(-k // s) for k, s in zip(kernel, strides)]
    phases = math.prod(strides)
    # Filter [Cin, Cout/g, K..] -> [g * phases * Cout/g, Cin/g, J..], taps flipped.
    filt = w
    for a in range(spatial):
        filt = pad_constant(imp, filt, 2 + a, 0, taps[a] * strides[a] - kernel[a])
    per_axis = [d for a in range(spatial) for d in (taps[a], strides[a])]
    filt = imp.reshape(filt, [group, cin // group, per_group, *per_axis])
    for a in range(spatial):
        filt = imp.gather_axis(filt, 3 + 2 * a, np.arange(taps[a])[::-1].copy())
    phase_axes = [4 + 2 * a for a in range(spatial)]
    tap_axes = [3 + 2 * a for a in range(spatial)]
    filt = imp.transpose(filt, [0, *phase_axes, 2, 1, *tap_axes])
    filt = imp.reshape(filt, [group * phases * per_group, cin // group, *taps])
    if bias is not None:  # the bias of channel (g, c) for every phase of it
        grouped_bias = imp.reshape(bias, [group, 1, per_group])
        bias = imp.reshape(imp.concat([grouped_bias] * phases, 1), [group * phases * per_group])
    # Stride-1 convolution padded J-1 before (full correlation) and up to J after (room for
    # output_padding): Q = L + after outputs per phase and axis, as many as the kept outputs
    # reach (a 2x2/2 ConvTranspose, kernel = stride, needs Q = L: nothing computed to be cut).
    after = [
        min(t, max(0, -(-(b + n) // s) - length))
        for t, b, n, s, length in zip(taps, begin, out, strides, xs[2:])
    ]
    window = Window.of(taps, [1] * spatial, [1] * spatial, [t - 1 for t in taps] + after)
    sizes = [length + a for length, a in zip(xs[2:], after)]
    y = _conv_nd(imp, x, filt, bias, window, group, sizes)
    # [N, g * phases * C/g, Q..] -> [N, g, s.., C/g, Q..] -> [N, g, C/g, Q1, s1, ..] -> [N, C, Q*s..]
    y = imp.reshape(y, [xs[0], group, *strides, per_group, *sizes])
    interleaved = [d for a in range(spatial) for d in (3 + spatial + a, 2 + a)]
    y = imp.transpose(y, [0, 1, 2 + spatial, *interleaved])
    y = imp.reshape(y, [xs[0], group * per_group, *[q * s for q, s in zip(sizes, strides)]])
    for a in range(spatial):
        y = imp.slice_axis(y, 2 + a, begin[a], out[a])
    return y


@converts("ConvTranspose")
def _conv_transpose(imp: ImportContext, node: Node) -> Sequence[Value]:
    x, w, bias, spatial, restore = _float32_operands(imp, node)
    xs, ws = shape_of(x), shape_of(w)
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
    swapped = imp.transpose(grouped, [0, 2, 1, *range(3, 3 + spatial)])
    filt = imp.reshape(swapped, [cout, cin // group, *kernel])
    for k in range(spatial):
        filt = imp.gather_axis(filt, 2 + k, np.arange(kernel[k])[::-1].copy())
    # Input: zero-stuffed, then padded so that a stride-1 convolution yields the output.
    y = _stuff_zeros(imp, x, strides)
    for k in range(spatial):
        y = pad_constant(imp, y, 2 + k, extent[k] - 1 - begin[k], extent[k] - 1 - end[k] + extra[k])
    window = Window.of(kernel, [1] * spatial, dilations, [0] * 2 * spatial)
    return [restore(_conv_nd(imp, y, filt, bias, window, group, wanted))]


# --- Col2Im (signalops block) -------------------------------------------------------------------


@converts("Col2Im")
def _col2im(imp: ImportContext, node: Node) -> Sequence[Value]:
    """Col2Im is a ConvTranspose with a constant one-hot filter: input channel c·K + k (K
    blocks per channel) adds its column into output channel c at block position k, with
    group = C, the op's strides, dilations and pads, and the output_padding that reaches
    image_shape exactly. So the overlapping sums run on ember's conv kernel (it also does the
    K-fold multiply-by-zero work a scatter-add would skip; Col2Im's are small)."""
    x = imp.float_input(node, 0)
    image = imp.constant(node, 1, "image_shape")
    block = imp.constant(node, 2, "block_shape")
    assert image is not None and block is not None  # required inputs, checked by validation
    image_dims, block_dims = (
        [int(v) for v in image.reshape(-1)],
        [int(v) for v in block.reshape(-1)],
    )
    shape = shape_of(x)
    rank = len(image_dims)
    if len(shape) != 3 or len(block_dims) != rank:
        raise node.error(
            f"input of shape {list(shape)}, image_shape {image_dims}, block_shape {block_dims}"
        )
    if rank not in (1, 2, 3):
        raise node.unsupported(f"{rank} spatial dims (1-D, 2-D and 3-D are supported)")
    dilations = [int(v) for v in node.attrs.get("dilations", [1] * rank)]
    strides = [int(v) for v in node.attrs.get("strides", [1] * rank)]
    pads = [int(v) for v in node.attrs.get("pads", [0] * 2 * rank)]
    if len(dilations) != rank or len(strides) != rank or len(pads) != 2 * rank:
        raise node.error(
            f"dilations {dilations}, strides {strides}, pads {pads} for {rank} spatial dims"
        )
    blocks_per_channel = math.prod(block_dims)
    if min(image_dims + block_dims + dilations + strides) < 1 or min(pads) < 0:
        raise node.error(
            f"image_shape {image_dims}, block_shape {block_dims}, dilations {dilations}, "
            f"strides {strides}, pads {pads} (sizes must be positive, pads non-negative)"
        )
    reach = [dilations[i] * (block_dims[i] - 1) + 1 for i in range(rank)]
    padded = [image_dims[i] + pads[i] + pads[i + rank] for i in range(rank)]
    counts = [(padded[i] - reach[i]) // strides[i] + 1 for i in range(rank)]
    if shape[1] % blocks_per_channel or min(counts) < 1 or math.prod(counts) != shape[2]:
        raise node.error(
            f"input of shape {list(shape)} does not hold blocks of {block_dims} over image "
            f"{image_dims} (pads {pads}, strides {strides}, dilations {dilations}: "
            f"{counts} block positions, {blocks_per_channel} values per channel)"
        )
    channels = shape[1] // blocks_per_channel
    output_padding = [padded[i] - ((counts[i] - 1) * strides[i] + reach[i]) for i in range(rank)]
    one_hot = np.eye(blocks_per_channel, dtype=dtype_of(x)).reshape(
        blocks_per_channel, 1, *block_dims
    )
    b = OnnxNodes(f"{node.name}/Col2Im")
    grid = b.add("Reshape", [node.proto.input[0], b.const(np.array([shape[0], shape[1], *counts]))])
    attrs: dict[str, object] = {
        "group": channels,
        "kernel_shape": block_dims,
        "strides": strides,
        "dilations": dilations,
        "pads": pads,
    }
    if any(output_padding):
        attrs["output_padding"] = output_padding
    weight = b.const(np.tile(one_hot, (channels,) + (1,) * (rank + 1)))
    out = b.add("ConvTranspose", [grid, weight], **attrs)
    return [b.import_as(imp, node, out)]
