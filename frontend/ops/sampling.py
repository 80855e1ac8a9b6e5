"""ONNX -> graph dialect: GridSample, imported as the ONNX graph of gathers it amounts to.

Spatial transformers (text rectification in OCR, optical flow, deformable detectors) sample
an image at positions a grid gives. For an input X [N, C, *spatial] (4-D or 5-D) and a grid
[N, *out, r] of coordinates in [-1, 1] (x first), each output reads the input at a few integer
taps per axis (1 nearest, 2 linear, 4 cubic) with weights: the converter writes those taps as
ONNX nodes (coordinates, floor/round, a flat index, GatherElements over the flattened image,
a weighted sum) and imports them as any other nodes (`ImportContext.import_nodes`), so the
result runs on ember's elementwise and gather kernels. Padding applies to each tap, as
onnxruntime does: a tap outside the image reads 0 (zeros), the nearest border pixel (border)
or its mirror image (reflection). Every index is clamped into the image before it is
gathered, so the gathers never go out of bounds, and a masked tap contributes exactly 0
(never NaN * 0).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

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

    def add_node(
        self,
        op: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        domain: str = "",
        **attrs: object,
    ) -> list[str]:
        """A node of several outputs (named `prefix/<output>`, "" kept as an absent output),
        trailing absent inputs dropped; returns the output names."""
        inputs = list(inputs)
        while inputs and not inputs[-1]:
            inputs.pop()
        names = [f"{self.prefix}/{o}" if o else "" for o in outputs]
        self.nodes.append(
            helper.make_node(
                op, inputs, names, name=f"{self.prefix}/{op}", domain=domain or None, **attrs
            )
        )
        return names

    def import_at(self, imp: ImportContext, node: Node, output: str, opset: int) -> Value:
        """`import_as` with ai.onnx at `opset` (the version the decomposition is written
        for); other domains import at the model's versions."""
        outer, imp.opset = imp.opset, opset
        try:
            return self.import_as(imp, node, output)
        finally:
            imp.opset = outer

    def const(self, array: np.ndarray) -> str:
        self.count += 1
        out = f"{self.prefix}/const_{self.count}"
        tensor = numpy_helper.from_array(np.asarray(array), out)
        self.nodes.append(helper.make_node("Constant", [], [out], name=out, value=tensor))
        return out

    def i64(self, value: object) -> str:
        """An int64 constant: indices, shapes, axes."""
        return self.const(np.asarray(value, np.int64))

    def typed(self, dtype: np.dtype) -> Callable[[object], str]:
        """A maker of constants of element type `dtype` (the data type the decomposition
        computes in)."""
        return lambda value: self.const(np.asarray(value, dtype))


def _text(node: Node, key: str, default: str) -> str:
    value = node.attrs.get(key, default)
    return value.decode() if isinstance(value, bytes) else value


# Cubic convolution coefficients onnxruntime's GridSample uses (A = -0.75), as polynomials in
# the fractional offset t of the sample from its floor tap, for the taps at floor - 1 .. floor + 2:
# each is (offset of t it is evaluated at, Horner coefficients from the highest power).
_CUBIC_A = -0.75
_CUBIC_TAPS: tuple[tuple[float, float, tuple[float, ...]], ...] = (
    # coefficient 0 at |t + 1|: ((A u - 5A) u + 8A) u - 4A
    (1.0, 1.0, (_CUBIC_A, -5 * _CUBIC_A, 8 * _CUBIC_A, -4 * _CUBIC_A)),
    # coefficient 1 at t: ((A + 2) u - (A + 3)) u u + 1
    (0.0, 1.0, (_CUBIC_A + 2, -(_CUBIC_A + 3), 0.0, 1.0)),
    # coefficient 2 at 1 - t
    (1.0, -1.0, (_CUBIC_A + 2, -(_CUBIC_A + 3), 0.0, 1.0)),
    # coefficient 3 at 2 - t
    (2.0, -1.0, (_CUBIC_A, -5 * _CUBIC_A, 8 * _CUBIC_A, -4 * _CUBIC_A)),
)


@converts("GridSample")
def _grid_sample(imp: ImportContext, node: Node) -> Sequence[Value]:
    x, grid = imp.required(node, 0), imp.required(node, 1)
    x_shape, grid_shape = shape_of(x), shape_of(grid)
    rank = len(x_shape)
    if rank not in (4, 5):
        raise node.unsupported(f"a {rank}-D input (ember samples 4-D and 5-D inputs)")
    spatial = list(x_shape[2:])  # [H, W] or [D, H, W]
    n, c = x_shape[0], x_shape[1]
    if len(grid_shape) != rank or grid_shape[0] != n or grid_shape[-1] != len(spatial):
        raise node.error(f"grid of shape {list(grid_shape)} for an input of {list(x_shape)}")
    mode = _text(node, "mode", "linear" if node.opset >= 20 else "bilinear")
    padding = _text(node, "padding_mode", "zeros")
    if mode not in ("bilinear", "linear", "nearest", "bicubic", "cubic"):
        raise node.unsupported(f"mode '{mode}' (ember samples linear, nearest and cubic)")
    cubic = mode in ("bicubic", "cubic")
    if cubic and len(spatial) != 2:
        raise node.error(f"mode '{mode}' on a {rank}-D input (ONNX defines it for 4-D only)")
    if padding not in ("zeros", "border", "reflection"):
        raise node.unsupported(
            f"padding_mode '{padding}' (ember pads with zeros, the border or reflection)"
        )
    align = bool(node.attrs.get("align_corners", 0))
    dtype = dtype_of(x)
    out_spatial = list(grid_shape[1:-1])
    points = int(np.prod(out_spatial))
    names = node.proto.input
    b = OnnxNodes(f"{node.name}/GridSample")

    f, i64 = b.typed(dtype), b.i64

    # Grid component k addresses the k-th spatial axis from the last (x -> W, y -> H, z -> D).
    sizes = spatial[::-1]
    # The span a coordinate may take before padding applies, as onnxruntime bounds it.
    bounds = [(0.0, s - 1.0) if align else (-0.5, s - 0.5) for s in sizes]

    def unnormalize(component: int, size: int) -> str:
        """Grid values in [-1, 1] -> pixel coordinates along one axis."""
        g = b.add("Gather", [names[1], i64(component)], axis=rank - 1)  # [N, *out]
        shifted = b.add("Add", [g, f(1.0)])
        if align:  # -1 and 1 are the centres of the corner pixels
            return b.add("Mul", [shifted, f((size - 1) / 2)])
        return b.add("Sub", [b.add("Mul", [shifted, f(size / 2)]), f(0.5)])

    def reflect(coord: str, low: float, high: float) -> str:
        """onnxruntime's GsReflect: fold a coordinate into [low, high] by mirroring at the
        bounds as often as it takes (d = distance past a bound, n = whole spans in d, r = the
        rest; an even n mirrors at the bound it crossed, an odd one at the other)."""
        span = high - low
        below = b.add("Less", [coord, f(low)])
        above = b.add("Greater", [coord, f(high)])
        past = b.add(
            "Where", [below, b.add("Sub", [f(low), coord]), b.add("Sub", [coord, f(high)])]
        )
        spans = b.add("Floor", [b.add("Div", [past, f(span)])])
        rest = b.add("Sub", [past, b.add("Mul", [spans, f(span)])])
        half = b.add("Floor", [b.add("Mul", [spans, f(0.5)])])
        odd = b.add("Equal", [b.add("Sub", [spans, b.add("Mul", [half, f(2.0)])]), f(1.0)])
        from_low = b.add("Xor", [below, odd])  # the result is measured from `low`
        folded = b.add(
            "Where", [from_low, b.add("Add", [f(low), rest]), b.add("Sub", [f(high), rest])]
        )
        return b.add("Where", [b.add("Or", [below, above]), folded, coord])

    coords = [unnormalize(k, s) for k, s in enumerate(sizes)]
    if mode == "nearest":
        # Round half to even, as onnxruntime (std::nearbyint) and ONNX's Round.
        coords = [b.add("Round", [co]) for co in coords]

    def horner(u: str, coefficients: Sequence[float]) -> str:
        value = f(coefficients[0])
        for coefficient in coefficients[1:]:
            value = b.add("Add", [b.add("Mul", [value, u]), f(coefficient)])
        return value

    # Per axis: the taps (float index, weight or None) a sample reads.
    axis_taps: list[list[tuple[str, str | None]]] = []
    for co in coords:
        if mode == "nearest":
            axis_taps.append([(co, None)])
            continue
        floor = b.add("Floor", [co])
        frac = b.add("Sub", [co, floor])
        if cubic:
            taps = []
            for offset, (shift, sign, coefficients) in zip(range(-1, 3), _CUBIC_TAPS, strict=True):
                u = b.add("Add", [f(shift), b.add("Mul", [f(sign), frac])])
                taps.append((b.add("Add", [floor, f(float(offset))]), horner(u, coefficients)))
            axis_taps.append(taps)
        else:
            upper = b.add("Sub", [f(1.0), frac])
            axis_taps.append([(floor, upper), (b.add("Add", [floor, f(1.0)]), frac)])

    # Integer indices of each tap, in bounds, and whether the tap was inside the image.
    axis_indices: list[list[tuple[str, str, str | None]]] = []
    for taps, s, (low, high) in zip(axis_taps, sizes, bounds, strict=True):
        indices = []
        for index_f, weight in taps:
            if padding == "reflection" and s > 1:
                # Padding applies to the taps, not to the coordinate the weights come from
                # (as onnxruntime and PyTorch): a tap's index is mirrored into the image, then
                # truncated to an integer. One pixel has no span to mirror in: the clamp below
                # sends every tap to it.
                index_f = reflect(index_f, low, high)
            raw = b.add("Cast", [index_f], to=onnx.TensorProto.INT64)
            clamped = b.add("Min", [b.add("Max", [raw, i64(0)]), i64(s - 1)])
            inside = b.add("Equal", [clamped, raw]) if padding == "zeros" else None
            indices.append((clamped, weight, inside))
        axis_indices.append(indices)

    flat_x = b.add(
        "Reshape", [names[0], b.const(np.array([n, c, int(np.prod(spatial))], np.int64))]
    )
    index_shape = b.const(np.array([n, 1, points], np.int64))
    expanded_shape = b.const(np.array([n, c, points], np.int64))
    strides = [int(np.prod(sizes[:k])) for k in range(len(sizes))]  # x stride 1, y stride W, ...
    total: str | None = None
    for combo in itertools.product(*axis_indices):
        flat: str | None = None
        weight: str | None = None
        inside: str | None = None
        for (index, w_k, in_k), stride in zip(combo, strides, strict=True):
            term = index if stride == 1 else b.add("Mul", [index, i64(stride)])
            flat = term if flat is None else b.add("Add", [flat, term])
            if w_k is not None:
                weight = w_k if weight is None else b.add("Mul", [weight, w_k])
            if in_k is not None:
                inside = in_k if inside is None else b.add("And", [inside, in_k])
        assert flat is not None
        index = b.add("Expand", [b.add("Reshape", [flat, index_shape]), expanded_shape])
        value = b.add("GatherElements", [flat_x, index], axis=2)  # [N, C, points]
        if weight is not None:
            value = b.add("Mul", [value, b.add("Reshape", [weight, index_shape])])
        if inside is not None:
            # A masked tap contributes exactly 0, never NaN * 0.
            value = b.add("Where", [b.add("Reshape", [inside, index_shape]), value, f(0.0)])
        total = value if total is None else b.add("Add", [total, value])
    assert total is not None
    out = b.add("Reshape", [total, b.const(np.array([n, c, *out_spatial], np.int64))])
    return [b.import_as(imp, node, out)]
