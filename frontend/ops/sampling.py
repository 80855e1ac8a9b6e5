"""ONNX -> graph dialect: GridSample, imported as the ONNX graph of gathers it amounts to.

Spatial transformers (text rectification in OCR, optical flow, deformable detectors) sample
an image at positions a grid gives. For a 4-D input X [N, C, H, W] and a grid [N, Ho, Wo, 2]
of (x, y) in [-1, 1], each output reads the input at a few integer taps (4 for bilinear, 1 for
nearest) with weights: the converter writes those taps as ONNX nodes (coordinates,
floor/round, a flat index y * W + x, GatherElements over the flattened image, a weighted
sum) and imports them as any other nodes (`ImportContext.import_nodes`), so the result runs on ember's elementwise and
gather kernels. Taps outside the image read 0 (padding_mode zeros) or the nearest border pixel
(border): every index is clamped into the image before it is gathered, so the gathers never
go out of bounds, and a masked tap contributes exactly 0 (never NaN * 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ember.frontend.context import ImportContext, Node, Value, dtype_of, shape_of
from ember.frontend.errors import RuntimeOperandError, UnsupportedOpError
from ember.frontend.registry import converts


class OnnxNodes:
    """Builds a converter's decomposition into ONNX nodes (imported with
    `ImportContext.import_nodes`), with names unique to the node it stands in for."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.count = 0

    def add(self, op: str, inputs: Sequence[str], **attrs: object) -> str:
        self.count += 1
        out = f"{self.prefix}/{op}_{self.count}"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def reduce(self, op: str, value: str, axes: Sequence[int], opset: int, keepdims: int) -> str:
        """A ReduceMean/Max/... over `axes`, spelled as `opset` takes them (an input from 18)."""
        if opset >= 18:
            return self.add(op, [value, self.const(np.array(axes, np.int64))], keepdims=keepdims)
        return self.add(op, [value], axes=list(axes), keepdims=keepdims)

    def import_as(self, imp: ImportContext, node: Node, output: str) -> Value:
        """Import the nodes in place of `node` and return the value of `output`. A node of the
        decomposition ember refuses (e.g. a float64 MatMul) is refused in `node`'s name, since
        the user wrote `node`, not the decomposition."""
        try:
            imp.import_nodes(self.nodes)
        except RuntimeOperandError:
            raise
        except UnsupportedOpError as err:
            raise node.unsupported(
                f"ember computes it as ONNX ops, one of which is refused: {err}"
            ) from err
        return imp.env[output]

    def const(self, array: np.ndarray) -> str:
        self.count += 1
        out = f"{self.prefix}/const_{self.count}"
        tensor = numpy_helper.from_array(np.asarray(array), out)
        self.nodes.append(helper.make_node("Constant", [], [out], name=out, value=tensor))
        return out


def _text(node: Node, key: str, default: str) -> str:
    value = node.attrs.get(key, default)
    return value.decode() if isinstance(value, bytes) else value


@converts("GridSample")
def _grid_sample(imp: ImportContext, node: Node) -> Sequence[Value]:
    x, grid = imp.required(node, 0), imp.required(node, 1)
    x_shape, grid_shape = shape_of(x), shape_of(grid)
    if len(x_shape) != 4:
        raise node.unsupported(f"a {len(x_shape)}-D input (ember samples 4-D NCHW inputs)")
    n, c, h, w = x_shape
    if len(grid_shape) != 4 or grid_shape[0] != n or grid_shape[3] != 2:
        raise node.error(f"grid of shape {list(grid_shape)} for an input of {list(x_shape)}")
    mode = _text(node, "mode", "linear" if node.opset >= 20 else "bilinear")
    padding = _text(node, "padding_mode", "zeros")
    if mode not in ("bilinear", "linear", "nearest"):
        raise node.unsupported(f"mode '{mode}' (ember samples bilinear and nearest)")
    if padding not in ("zeros", "border"):
        raise node.unsupported(f"padding_mode '{padding}' (ember pads with zeros or the border)")
    align = bool(node.attrs.get("align_corners", 0))
    dtype = dtype_of(x)
    ho, wo = grid_shape[1], grid_shape[2]
    names = node.proto.input
    b = OnnxNodes(f"{node.name}/GridSample")

    def f(value: float) -> str:
        return b.const(np.array(value, dtype))

    def i64(value: int) -> str:
        return b.const(np.array(value, np.int64))

    def unnormalize(axis: int, size: int) -> str:
        """Grid values in [-1, 1] -> pixel coordinates along one axis."""
        g = b.add("Gather", [names[1], i64(axis)], axis=3)  # [N, Ho, Wo]
        shifted = b.add("Add", [g, f(1.0)])
        if align:  # -1 and 1 are the centres of the corner pixels
            return b.add("Mul", [shifted, f((size - 1) / 2)])
        return b.add("Sub", [b.add("Mul", [shifted, f(size / 2)]), f(0.5)])

    ix, iy = unnormalize(0, w), unnormalize(1, h)
    flat_x = b.add("Reshape", [names[0], b.const(np.array([n, c, h * w], np.int64))])
    taps: list[tuple[str, str, str | None]] = []  # (x index, y index, weight or None)
    if mode == "nearest":
        # Round half to even, as onnxruntime (std::nearbyint) and ONNX's Round.
        rx = b.add("Cast", [b.add("Round", [ix])], to=onnx.TensorProto.INT64)
        ry = b.add("Cast", [b.add("Round", [iy])], to=onnx.TensorProto.INT64)
        taps.append((rx, ry, None))
    else:
        x0f, y0f = b.add("Floor", [ix]), b.add("Floor", [iy])
        wx1, wy1 = b.add("Sub", [ix, x0f]), b.add("Sub", [iy, y0f])
        wx0, wy0 = b.add("Sub", [f(1.0), wx1]), b.add("Sub", [f(1.0), wy1])
        x0 = b.add("Cast", [x0f], to=onnx.TensorProto.INT64)
        y0 = b.add("Cast", [y0f], to=onnx.TensorProto.INT64)
        x1, y1 = b.add("Add", [x0, i64(1)]), b.add("Add", [y0, i64(1)])
        for xi, wx in ((x0, wx0), (x1, wx1)):
            for yi, wy in ((y0, wy0), (y1, wy1)):
                taps.append((xi, yi, b.add("Mul", [wx, wy])))

    index_shape = b.const(np.array([n, 1, ho * wo], np.int64))
    expanded_shape = b.const(np.array([n, c, ho * wo], np.int64))
    total: str | None = None
    for xi, yi, weight in taps:
        xc = b.add("Min", [b.add("Max", [xi, i64(0)]), i64(w - 1)])
        yc = b.add("Min", [b.add("Max", [yi, i64(0)]), i64(h - 1)])
        flat = b.add("Add", [b.add("Mul", [yc, i64(w)]), xc])  # [N, Ho, Wo]
        index = b.add("Expand", [b.add("Reshape", [flat, index_shape]), expanded_shape])
        value = b.add("GatherElements", [flat_x, index], axis=2)  # [N, C, Ho * Wo]
        if weight is not None:
            value = b.add("Mul", [value, b.add("Reshape", [weight, index_shape])])
        if padding == "zeros":
            # A tap inside the image is one that clamping left alone.
            inside = b.add("And", [b.add("Equal", [xc, xi]), b.add("Equal", [yc, yi])])
            inside = b.add("Reshape", [inside, index_shape])
            value = b.add("Where", [inside, value, f(0.0)])
        total = value if total is None else b.add("Add", [total, value])
    assert total is not None
    out = b.add("Reshape", [total, b.const(np.array([n, c, ho, wo], np.int64))])
    return [b.import_as(imp, node, out)]
