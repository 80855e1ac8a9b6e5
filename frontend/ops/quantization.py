"""ONNX -> graph dialect: quantized models, lowered to float (dequantize -> float op -> quantize).

Both formats onnxruntime's quantization tool writes import here:

- QDQ: `DequantizeLinear -> Conv/MatMul/Add/... -> QuantizeLinear`. Each Q/DQ becomes a few
  elementwise graph ops that the fuse-elementwise pass merges into one vectorized kernel; a DQ
  of a constant weight is folded while importing, so the op between runs ember's packed float
  kernel on a float weight.
- QOperator: QLinearConv, QLinearMatMul, MatMulInteger, ConvInteger (ai.onnx) and onnxruntime's
  com.microsoft QLinearAdd/Mul/Sigmoid/LeakyRelu/AveragePool/GlobalAveragePool/Concat/
  Softmax/Where, QGemm and MatMulIntegerToFloat are decomposed into dequantize -> the float
  op's own converter -> quantize. DynamicQuantizeMatMul is DynamicQuantizeLinear ->
  MatMulIntegerToFloat; QAttention and QEmbedLayerNormalization (quantize_dynamic of an
  optimized transformer) dequantize their inputs into com.microsoft Attention /
  EmbedLayerNormalization. MatMulNBits (2/4/8-bit block-quantized constant weights, as
  onnxruntime's MatMulNBitsQuantizer writes them) is dequantized at compile time into a
  float32 MatMul weight; GatherBlockQuantized's constant table likewise into a float table.

This is the simplest correct lowering; integer (VNNI) kernels are planned. A quantized output of
a float-fallback op may differ from onnxruntime's integer kernels by one quantization step where
the float result lands next to a rounding tie. MatMulInteger and ConvInteger promise an exact
int32: float32 accumulation is exact only while every partial sum stays within 2^24, which is
proved from the shapes, the constant operands and the zero points at compile time, or the node
is refused.

Quantize is round-half-to-even(x / scale) + zero_point saturated to the type's range, with
NaN -> the type's minimum as onnxruntime's kernels give; dequantize is (x - zero_point) * scale.
Both compute in float32 (float16/bfloat16 scales are widened, the result rounded once).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import ml_dtypes
import numpy as np
import onnx

from ember.dialects import graph, small_types
from ember.frontend.context import (
    Const,
    ImportContext,
    Node,
    Value,
    dtype_of,
    normalize_axis,
    shape_of,
)
from ember.frontend.dtypes import numpy_dtype_for_onnx
from ember.frontend.ops.sampling import OnnxNodes
from ember.frontend.ops.tensor import emit_cast
from ember.frontend.registry import CONVERTERS, converts
from ember.frontend.validate import NodeInfo, validate_node

_F32 = np.dtype(np.float32)


_I32 = np.dtype(np.int32)


# The quantized element types the quantize/dequantize kernels compute in.
_QUANTIZED = frozenset(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16))
# The 4- and 2-bit integers: quantized as int8/uint8 clamped to their range, then narrowed
# (exact), and widened to 8 bits before dequantizing.
_NARROW_INTS: dict[np.dtype, tuple[np.dtype, int, int]] = {
    np.dtype(ml_dtypes.int4): (np.dtype(np.int8), -8, 7),
    np.dtype(ml_dtypes.uint4): (np.dtype(np.uint8), 0, 15),
    np.dtype(ml_dtypes.int2): (np.dtype(np.int8), -2, 1),
    np.dtype(ml_dtypes.uint2): (np.dtype(np.uint8), 0, 3),
}
# The small floats: quantized as Cast(x / scale) (float8 saturating unless saturate=0; the zero
# point, which must be 0, is not read, as onnx.reference; float4e2m1 adds its zero point) and
# dequantized as float32(x) * scale.
_SMALL_FLOATS = small_types.FLOAT8_DTYPES | {small_types.FLOAT4_DTYPE}
_FLOAT4 = small_types.FLOAT4_DTYPE
_QUANTIZED_SMALL = frozenset(_NARROW_INTS) | _SMALL_FLOATS
_QUANTIZE_TO = (
    "QuantizeLinear gives int8, uint8, int16, uint16, int4, uint4, int2, uint2, float8 (e4m3fn, "
    "e4m3fnuz, e5m2, e5m2fnuz) and float4e2m1 only"
)


_MS = "com.microsoft"


# Float32 represents every integer of magnitude up to 2^24 exactly.
_EXACT_F32_INTEGERS = 1 << 24


def _type_name(onnx_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(onnx_type).lower()
    except ValueError:
        return f"#{onnx_type}"


def _quantized_dtype(node: Node, dtype: np.dtype, what: str) -> np.dtype:
    if dtype not in _QUANTIZED:
        raise node.unsupported(
            f"{what} of type {dtype}: ember quantizes to int8, uint8, int16 and uint16 only"
        )
    return dtype


def _as_f32(imp: ImportContext, value: Value) -> Value:
    if dtype_of(value) == _F32:
        return value
    if isinstance(value, Const):
        return Const(value.array.astype(_F32))
    return imp.emit(graph.CastOp, [value], shape_of(value), _F32)


def _cast(imp: ImportContext, value: Value, dtype: np.dtype) -> Value:
    return (
        value
        if dtype_of(value) == dtype
        else imp.emit(graph.CastOp, [value], shape_of(value), dtype)
    )


def _broadcastable(
    imp: ImportContext,
    node: Node,
    param: Value,
    x_shape: Sequence[int],
    axis: int,
    block_size: int,
    what: str,
) -> Value:
    """A scale or zero point reshaped to broadcast against x: per tensor (one element), per
    axis (1-D of x's size along `axis`) or blocked (x's rank, ceil(size / block_size) along
    `axis`, expanded along it by a Gather)."""
    shape, rank = shape_of(param), len(x_shape)
    if block_size > 0:
        axis = normalize_axis(node, axis, rank)
        blocks = -(-x_shape[axis] // block_size)
        expected = (*x_shape[:axis], blocks, *x_shape[axis + 1 :])
        if shape != expected:
            raise node.error(
                f"{what} has shape {shape}; block_size {block_size} along axis {axis} of x "
                f"{tuple(x_shape)} needs {expected}"
            )
        # Element i along the axis reads block i // block_size: one Gather (folded when the
        # parameter is a constant).
        blocks_of = Const(np.arange(x_shape[axis], dtype=np.int64) // block_size)
        return _float_op(imp, node, "Gather", [param, blocks_of], {"axis": axis})
    if math.prod(shape) == 1 and len(shape) <= 1:
        return imp.reshape(param, [])
    if len(shape) == 1 and rank > 0:
        axis = normalize_axis(node, axis, rank)
        if shape[0] == x_shape[axis]:
            return imp.reshape(param, [shape[0] if i == axis else 1 for i in range(rank)])
    raise node.error(
        f"{what} has shape {shape}: it must have one element, or be 1-D with x's size along "
        f"axis {axis} (x has shape {tuple(x_shape)})"
    )


def _broadcast_shape(node: Node, *values: Value) -> tuple[int, ...]:
    try:
        return graph.broadcast_shapes(*(shape_of(v) for v in values))
    except ValueError as err:
        raise node.error(str(err)) from err


def quantize(
    imp: ImportContext,
    node: Node,
    x: Value,
    scale: Value,
    zero_point: Value | None,
    dtype: np.dtype,
) -> Value:
    """saturate(round_half_even(x / scale) + zero_point) as `dtype` (graph.quantize_linear);
    scale and zero point broadcast against x."""
    if zero_point is None:
        zero_point = Const(np.zeros((), dtype))
    shape = _broadcast_shape(node, x, scale, zero_point)
    return imp.emit(graph.QuantizeLinearOp, [x, scale, zero_point], shape, dtype)


def dequantize(
    imp: ImportContext,
    node: Node,
    x: Value,
    scale: Value,
    zero_point: Value | None,
    dtype: np.dtype,
) -> Value:
    """(x - zero_point) * scale as `dtype` (graph.dequantize_linear)."""
    if zero_point is None:
        zero_point = Const(np.zeros((), dtype_of(x)))
    shape = _broadcast_shape(node, x, scale, zero_point)
    if isinstance(x, Const) and dtype_of(x).itemsize == 1:
        # An 8-bit constant (a quantized weight) stays a graph.dequantize_linear: the
        # quantize-ops pass reads its integers; fold-constants folds it where that pass did not.
        fold, imp.fold_node = imp.fold_node, False
        try:
            return imp.emit(graph.DequantizeLinearOp, [x, scale, zero_point], shape, dtype)
        finally:
            imp.fold_node = fold
    return imp.emit(graph.DequantizeLinearOp, [x, scale, zero_point], shape, dtype)


def _scale_dtype(node: Node, scale: Value) -> np.dtype:
    dtype = dtype_of(scale)
    if dtype.kind != "f" or dtype.itemsize > 4:
        raise node.unsupported(f"scale of type {dtype} (float, float16 or bfloat16 is required)")
    return dtype


def _axis_and_block(node: Node) -> tuple[int, int]:
    block_size = int(node.attrs.get("block_size", 0))
    if block_size < 0:
        raise node.error(f"block_size must be >= 0, not {block_size}")
    return int(node.attrs.get("axis", 1)), block_size


@converts("QuantizeLinear")
@converts("QuantizeLinear", domain=_MS)
def _quantize_linear(imp: ImportContext, node: Node) -> Sequence[Value]:
    x, scale, zero_point = imp.required(node, 0), imp.required(node, 1), imp.input(node, 2)
    _scale_dtype(node, scale)
    output_dtype = int(node.attrs.get("output_dtype", 0))
    if output_dtype:
        try:
            dtype = numpy_dtype_for_onnx(output_dtype)
        except (TypeError, ValueError):
            dtype = None
        if dtype is None or dtype not in _QUANTIZED | _QUANTIZED_SMALL:
            raise node.unsupported(f"output_dtype {_type_name(output_dtype)}: {_QUANTIZE_TO}")
        if zero_point is not None and dtype_of(zero_point) != dtype:
            raise node.error(
                f"output_dtype {_type_name(output_dtype)} differs from the zero point's type "
                f"{dtype_of(zero_point)}"
            )
    else:
        dtype = np.dtype(np.uint8) if zero_point is None else dtype_of(zero_point)
    if dtype not in _QUANTIZED | _QUANTIZED_SMALL:
        raise node.unsupported(f"output of type {dtype}: {_QUANTIZE_TO}")
    precision = int(node.attrs.get("precision", 0))
    if precision not in (0, onnx.TensorProto.FLOAT):
        raise node.unsupported(
            f"precision {_type_name(precision)}: ember divides by the scale in float32"
        )
    if dtype_of(x).kind not in "fi":
        raise node.unsupported(f"input of type {dtype_of(x)}")
    scale, zero_point = _scale_and_zero_point(imp, node, x, scale, zero_point, "y")
    if dtype in _QUANTIZED_SMALL:
        return [_quantize_small(imp, node, x, scale, zero_point, dtype)]
    return [quantize(imp, node, x, scale, zero_point, dtype)]


def _quantize_small(
    imp: ImportContext,
    node: Node,
    x: Value,
    scale: Value,
    zero_point: Value | None,
    dtype: np.dtype,
) -> Value:
    """QuantizeLinear to a 4-/2-bit integer or a small float (see _NARROW_INTS, _SMALL_FLOATS)."""
    narrow = _NARROW_INTS.get(dtype)
    if narrow is not None:
        wide, lowest, highest = narrow
        wide_zero = None if zero_point is None else _cast(imp, zero_point, wide)
        q = quantize(imp, node, x, scale, wide_zero, wide)
        q = imp.binary(node, graph.MaxOp, q, Const(np.array(lowest, wide)))
        q = imp.binary(node, graph.MinOp, q, Const(np.array(highest, wide)))
        return _cast(imp, q, dtype)
    # x / scale in the type numpy's division gives (onnx.reference): float16 and bfloat16
    # quotients are computed in float32 and rounded once, integers are divided in float64.
    quotient_dtype = np.result_type(dtype_of(x), dtype_of(scale))
    compute = np.dtype(np.float64) if quotient_dtype == np.float64 else _F32
    shape = _broadcast_shape(node, x, scale)
    q = imp.emit(graph.DivOp, [_cast(imp, x, compute), _cast(imp, scale, compute)], shape)
    if dtype == _FLOAT4 and zero_point is not None:
        q = imp.binary(node, graph.AddOp, q, _cast(imp, zero_point, compute))
    elif quotient_dtype != compute:
        q = _cast(imp, q, quotient_dtype)
    saturate = bool(node.attrs.get("saturate", 1))
    return emit_cast(imp, q, dtype, saturate or dtype == _FLOAT4)


def _scale_and_zero_point(
    imp: ImportContext, node: Node, x: Value, scale: Value, zero_point: Value | None, prefix: str
) -> tuple[Value, Value | None]:
    """Scale and zero point broadcastable against `x` (per tensor, per axis or blocked);
    `prefix` names them as the spec does ("y_scale" for QuantizeLinear, "x_scale" for
    DequantizeLinear)."""
    axis, block_size = _axis_and_block(node)
    x_shape = shape_of(x)
    scale = _broadcastable(imp, node, scale, x_shape, axis, block_size, f"{prefix}_scale")
    if zero_point is not None:
        zero_point = _broadcastable(
            imp, node, zero_point, x_shape, axis, block_size, f"{prefix}_zero_point"
        )
    return scale, zero_point


@converts("DequantizeLinear")
@converts("DequantizeLinear", domain=_MS)
def _dequantize_linear(imp: ImportContext, node: Node) -> Sequence[Value]:
    x, scale, zero_point = imp.required(node, 0), imp.required(node, 1), imp.input(node, 2)
    narrow, given = _NARROW_INTS.get(dtype_of(x)), dtype_of(x)
    if narrow is not None:  # widened to 8 bits (exact), zero point alike
        if zero_point is not None and dtype_of(zero_point) == dtype_of(x):
            zero_point = _cast(imp, zero_point, narrow[0])
        x = _cast(imp, x, narrow[0])
    elif dtype_of(x) in _SMALL_FLOATS or dtype_of(x) == small_types.E8M0_DTYPE:
        # float32(x) * scale; a float8 zero point must be 0 and float4e2m1's is not read
        # (onnx.reference), so neither is subtracted. A constant one is checked; one given at
        # run time is taken to be 0, as the spec requires.
        if (
            dtype_of(x) != _FLOAT4
            and isinstance(zero_point, Const)
            and np.any(zero_point.array.view(np.uint8))
        ):
            raise node.error(f"x_zero_point of {dtype_of(x)} must be 0, not {zero_point.array}")
        x, zero_point = _cast(imp, x, _F32), None
    if given not in _QUANTIZED | _QUANTIZED_SMALL | {_I32, small_types.E8M0_DTYPE}:
        raise node.unsupported(
            f"input of type {given}: ember dequantizes int8, uint8, int16, uint16, int32, "
            "int4, uint4, int2, uint2, float8 and float4e2m1"
        )
    if zero_point is not None and dtype_of(zero_point) != dtype_of(x):
        raise node.error(f"zero point of type {dtype_of(zero_point)} for an input of {dtype_of(x)}")
    dtype = _scale_dtype(node, scale)
    output_dtype = int(node.attrs.get("output_dtype", 0))
    if output_dtype:
        try:
            dtype = numpy_dtype_for_onnx(output_dtype)
        except (TypeError, ValueError) as err:
            raise node.unsupported(f"output_dtype {_type_name(output_dtype)}") from err
    scale, zero_point = _scale_and_zero_point(imp, node, x, scale, zero_point, "x")
    return [dequantize(imp, node, x, scale, zero_point, dtype)]


def _float_op(
    imp: ImportContext,
    node: Node,
    op_type: str,
    inputs: Sequence[Value | None],
    attrs: dict[str, object] | None = None,
    opset: int | None = None,
) -> Value:
    """Run the converter of the float ONNX op `op_type` on `inputs` (validated as that op), as
    part of `node` (at ai.onnx `opset`, the node's by default): the float op keeps one
    implementation of its attributes and shapes."""
    opset = node.opset if opset is None else opset
    attrs = dict(attrs or {})
    prefix = f"{node.proto.output[0]}/{node.op_type}/{op_type}"
    names = []
    for index, value in enumerate(inputs):
        if value is None:
            names.append("")
            continue
        names.append(f"{prefix}/input{index}")
        imp.env[names[-1]] = value
    proto = onnx.helper.make_node(
        op_type, names, [f"{prefix}/output"], name=f"{node.name}/{op_type}", **attrs
    )
    inner = Node(proto, opset, attrs)
    validate_node(
        NodeInfo(op_type, inner.name, opset),
        names,
        [None if v is None else dtype_of(v) for v in inputs],
        [None if v is None else shape_of(v) for v in inputs],
        attrs,
    )
    outer, imp.node = imp.node, inner
    try:
        return list(CONVERTERS[op_type](imp, inner))[0]
    finally:
        imp.node = outer


def _dequantized(imp: ImportContext, node: Node, index: int, axis: int | None = None) -> Value:
    """The (x, scale, zero point) triple at inputs index..index+2 dequantized to float32."""
    x, scale = imp.required(node, index), imp.required(node, index + 1)
    return _dequantize_with(
        imp, node, x, scale, imp.input(node, index + 2), axis, f"input #{index}"
    )


def _dequantize_with(
    imp: ImportContext,
    node: Node,
    x: Value,
    scale: Value,
    zero_point: Value | None,
    axis: int | None,
    what: str,
) -> Value:
    """x dequantized to float32, per tensor or (`axis` given) per axis when the scale is 1-D."""
    _quantized_dtype(node, dtype_of(x), what)
    _scale_dtype(node, scale)
    if zero_point is not None and dtype_of(zero_point) != dtype_of(x):
        raise node.error(
            f"{what}'s zero point has type {dtype_of(zero_point)}, x has {dtype_of(x)}"
        )

    def shaped(param: Value, name: str) -> Value:
        if axis is None and math.prod(shape_of(param)) != 1:
            raise node.error(f"{what}'s {name} has shape {shape_of(param)}; one element expected")
        return _broadcastable(imp, node, param, shape_of(x), axis or 0, 0, f"{what}'s {name}")

    scale = shaped(scale, "scale")
    zero_point = None if zero_point is None else shaped(zero_point, "zero point")
    return dequantize(imp, node, x, scale, zero_point, _F32)


def _requantized(imp: ImportContext, node: Node, y: Value, index: int, like: Value) -> Value:
    """Float y quantized with the per-tensor (scale, zero point) at inputs index, index+1; the
    output type is the zero point's, else `like`'s."""
    scale, zero_point = imp.required(node, index), imp.input(node, index + 1)
    _scale_dtype(node, scale)
    dtype = dtype_of(like) if zero_point is None else dtype_of(zero_point)
    _quantized_dtype(node, dtype, "output")
    for param, name in ((scale, "scale"), (zero_point, "zero point")):
        if param is not None and math.prod(shape_of(param)) != 1:
            raise node.error(f"output {name} has shape {shape_of(param)}; one element expected")
    scale = imp.reshape(scale, [])
    zero_point = None if zero_point is None else imp.reshape(zero_point, [])
    return quantize(imp, node, y, scale, zero_point, dtype)


def _window_attrs(node: Node, names: Sequence[str]) -> dict[str, object]:
    return {k: v for k, v in node.attrs.items() if k in names}


_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


_POOL_ATTRS = ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides")


def _dequantized_bias(imp: ImportContext, node: Node, index: int) -> Value | None:
    """The int32 bias at input `index` in float32: it is quantized with scale
    input_scale * weight_scale (inputs #1 and #4, the weight's per channel) and zero point 0."""
    bias = imp.input(node, index)
    if bias is None:
        return None
    if dtype_of(bias) != _I32:
        raise node.error(f"input #{index} (bias) has type {dtype_of(bias)}; int32 is required")
    input_scale, weight_scale = imp.required(node, 1), imp.required(node, 4)
    if math.prod(shape_of(weight_scale)) == 1:
        weight_scale = imp.reshape(weight_scale, [])
    scale = imp.binary(
        node, graph.MulOp, _as_f32(imp, imp.reshape(input_scale, [])), _as_f32(imp, weight_scale)
    )
    return dequantize(imp, node, bias, scale, None, _F32)


@converts("QLinearConv")
def _qlinear_conv(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = _dequantized(imp, node, 0)
    w = _dequantized(imp, node, 3, axis=0)
    bias = _dequantized_bias(imp, node, 8)
    y = _float_op(imp, node, "Conv", [x, w, bias], _window_attrs(node, _CONV_ATTRS))
    return [_requantized(imp, node, y, 6, imp.required(node, 0))]


@converts("QLinearMatMul")
def _qlinear_matmul(imp: ImportContext, node: Node) -> Sequence[Value]:
    # A 1-D scale or zero point runs along A's rows and B's columns.
    a = _dequantized(imp, node, 0, axis=-2)
    b = _dequantized(imp, node, 3, axis=-1)
    y = _float_op(imp, node, "MatMul", [a, b])
    return [_requantized(imp, node, y, 6, imp.required(node, 0))]


def _centered(x: Value, zero_point: Value | None) -> np.ndarray | None:
    """|x - zero_point| when both are compile-time constants (zero point broadcast)."""
    if not isinstance(x, Const) or not (zero_point is None or isinstance(zero_point, Const)):
        return None
    offset = x.array.astype(np.int64)
    if zero_point is not None:
        offset = offset - zero_point.array.astype(np.int64)
    return np.abs(offset)


def _offset_bound(x: Value, zero_point: Value | None) -> int:
    """The largest |x - zero_point| any run can see."""
    known = _centered(x, zero_point)
    if known is not None:
        return int(known.max(initial=0))
    info = np.iinfo(dtype_of(x))
    if zero_point is None:
        return max(-int(info.min), int(info.max))
    if isinstance(zero_point, Const):
        zp = zero_point.array.astype(np.int64)
        return int(max((zp - info.min).max(initial=0), (info.max - zp).max(initial=0)))
    return int(info.max) - int(info.min)


def _check_exact(
    node: Node,
    depth: int,
    x: tuple[Value, Value | None, str],
    w: tuple[Value, Value | None, str],
    weight_sums: Callable[[np.ndarray], np.ndarray],
) -> None:
    """Refuse an integer contraction whose float32 sums may be inexact (`_inexact`)."""
    reason = _inexact(depth, x, w, weight_sums)
    if reason is not None:
        raise node.unsupported(reason)


def _inexact(
    depth: int,
    x: tuple[Value, Value | None, str],
    w: tuple[Value, Value | None, str],
    weight_sums: Callable[[np.ndarray], np.ndarray],
) -> str | None:
    """Why an integer contraction of `depth` terms has float32 partial sums that could leave
    the integers float32 holds exactly, else None. With w constant, the bound is max|x - x_zp|
    times the largest sum of |w - w_zp| over one output (`weight_sums`), else depth * both
    maxima."""
    (x_value, x_zp, x_name), (w_value, w_zp, w_name) = x, w
    x_max, w_max = _offset_bound(x_value, x_zp), _offset_bound(w_value, w_zp)
    bound = depth * x_max * w_max
    detail = f"K {depth} * max|{x_name} - zero point| {x_max} * max|{w_name} - zero point| {w_max}"
    w_known = _centered(w_value, w_zp)
    if w_known is not None:
        largest = int(weight_sums(w_known).max(initial=0))
        if x_max * largest < bound:
            bound = x_max * largest
            detail = (
                f"max|{x_name} - zero point| {x_max} * the largest sum of |{w_name} - zero "
                f"point| over one output {largest}"
            )
    if bound <= _EXACT_F32_INTEGERS:
        return None
    return (
        f"its int32 result would be computed with float32 accumulation, exact only while "
        f"every partial sum stays within 2^24, and {detail} = {bound} > 2^24"
    )


def _column_sums(b: np.ndarray) -> np.ndarray:
    """Sums over K of a MatMul's B: its rows (a 1-D B is one column)."""
    return b.sum(axis=-2 if b.ndim >= 2 else 0)


def _filter_sums(w: np.ndarray) -> np.ndarray:
    """Sums over K of a convolution weight: one per output channel."""
    return w.reshape(len(w), -1).sum(axis=1)


def _integer_operand(
    imp: ImportContext, node: Node, x: Value, zero_point: Value | None, axis: int, what: str
) -> tuple[Value, Value | None]:
    """x and its zero point broadcastable against it (1-D: along `axis`), type-checked."""
    _quantized_dtype(node, dtype_of(x), what)
    if zero_point is None:
        return x, None
    if dtype_of(zero_point) != dtype_of(x):
        raise node.error(
            f"{what}'s zero point has type {dtype_of(zero_point)}, {what} has {dtype_of(x)}"
        )
    return x, _broadcastable(imp, node, zero_point, shape_of(x), axis, 0, f"{what}'s zero point")


def _minus_zero_point(imp: ImportContext, node: Node, x: Value, zero_point: Value | None) -> Value:
    """x - zero_point in float32 (exact for 8-bit values)."""
    return dequantize(imp, node, x, Const(np.ones((), _F32)), zero_point, _F32)


@converts("MatMulInteger")
def _matmul_integer(imp: ImportContext, node: Node) -> Sequence[Value]:
    a, a_zp = _integer_operand(
        imp, node, imp.required(node, 0), imp.input(node, 2), -2, "A (input #0)"
    )
    b, b_zp = _integer_operand(
        imp, node, imp.required(node, 1), imp.input(node, 3), -1, "B (input #1)"
    )
    # Sums that float32 may not hold exactly are refused later, unless quantize-ops runs the
    # product on its integer kernel (a constant int8 B with zero point 0).
    inexact = _inexact(shape_of(a)[-1], (a, a_zp, "A"), (b, b_zp, "B"), _column_sums)
    y = _float_op(
        imp,
        node,
        "MatMul",
        [_minus_zero_point(imp, node, a, a_zp), _minus_zero_point(imp, node, b, b_zp)],
    )
    result = imp.emit(graph.CastOp, [y], shape_of(y), _I32)
    if inexact is not None:
        if isinstance(result, Const):  # folded in float32 here: no integer kernel to take it
            raise node.unsupported(inexact)
        graph.mark_integer_only(result.owner, node.op_type, node.name, node.opset, inexact)
    return [result]


@converts("ConvInteger")
def _conv_integer(imp: ImportContext, node: Node) -> Sequence[Value]:
    x, x_zp = _integer_operand(
        imp, node, imp.required(node, 0), imp.input(node, 2), 1, "x (input #0)"
    )
    w, w_zp = _integer_operand(
        imp, node, imp.required(node, 1), imp.input(node, 3), 0, "w (input #1)"
    )
    if x_zp is not None and math.prod(shape_of(x_zp)) != 1:
        raise node.error(f"x_zero_point has shape {shape_of(x_zp)}; one element expected")
    _check_exact(node, math.prod(shape_of(w)[1:]), (x, x_zp, "x"), (w, w_zp, "w"), _filter_sums)
    # Padding the centered input with 0 is ONNX's padding with the zero point.
    y = _float_op(
        imp,
        node,
        "Conv",
        [_minus_zero_point(imp, node, x, x_zp), _minus_zero_point(imp, node, w, w_zp)],
        _window_attrs(node, _CONV_ATTRS),
    )
    return [imp.emit(graph.CastOp, [y], shape_of(y), _I32)]


@converts("QLinearAdd", "QLinearMul", domain=_MS)
def _qlinear_binary(imp: ImportContext, node: Node) -> Sequence[Value]:
    a, b = _dequantized(imp, node, 0), _dequantized(imp, node, 3)
    y = _float_op(imp, node, node.op_type.removeprefix("QLinear"), [a, b])
    return [_requantized(imp, node, y, 6, imp.required(node, 0))]


@converts("QLinearSigmoid", "QLinearLeakyRelu", domain=_MS)
def _qlinear_unary(imp: ImportContext, node: Node) -> Sequence[Value]:
    attrs = {"alpha": node.attrs["alpha"]} if "alpha" in node.attrs else {}
    y = _float_op(
        imp, node, node.op_type.removeprefix("QLinear"), [_dequantized(imp, node, 0)], attrs
    )
    return [_requantized(imp, node, y, 3, imp.required(node, 0))]


def _channel_perms(rank: int) -> tuple[list[int], list[int]]:
    """The permutations NHWC -> NCHW and back for a tensor of `rank` (onnxruntime's
    channels_last=1 forms, which its ORT_ENABLE_ALL layout transformer writes)."""
    return [0, rank - 1, *range(1, rank - 1)], [0, *range(2, rank), 1]


def _pooled(imp: ImportContext, node: Node, op_type: str, attrs: dict[str, object]) -> Value:
    """The float `op_type` pool of the dequantized input, NCHW or (channels_last=1) NHWC."""
    x = _dequantized(imp, node, 0)
    to_nchw, to_nhwc = _channel_perms(len(shape_of(x)))
    channels_last = bool(node.attrs.get("channels_last", 0))
    if channels_last:
        x = imp.transpose(x, to_nchw)
    y = _float_op(imp, node, op_type, [x], attrs)
    return imp.transpose(y, to_nhwc) if channels_last else y


@converts("QLinearGlobalAveragePool", domain=_MS)
def _qlinear_global_average_pool(imp: ImportContext, node: Node) -> Sequence[Value]:
    y = _pooled(imp, node, "GlobalAveragePool", {})
    return [_requantized(imp, node, y, 3, imp.required(node, 0))]


@converts("QLinearAveragePool", domain=_MS)
def _qlinear_average_pool(imp: ImportContext, node: Node) -> Sequence[Value]:
    y = _pooled(imp, node, "AveragePool", _window_attrs(node, _POOL_ATTRS))
    return [_requantized(imp, node, y, 3, imp.required(node, 0))]


def _nhwc_wrapped(imp: ImportContext, node: Node, op_type: str, attrs: dict[str, object]) -> Value:
    """The ai.onnx `op_type` on `node`'s inputs, its input 0 and output in NHWC (transposed
    to NCHW and back around it)."""
    names = list(node.proto.input)
    to_nchw, to_nhwc = _channel_perms(len(shape_of(imp.required(node, 0))))
    nodes = OnnxNodes(f"{node.proto.output[0]}/{node.op_type}")
    names[0] = nodes.add("Transpose", [names[0]], perm=to_nchw)
    y = nodes.add("Transpose", [nodes.add(op_type, names, **attrs)], perm=to_nhwc)
    return nodes.import_at(imp, node, y, 13)


@converts("QLinearConv", domain=_MS)
def _ms_qlinear_conv(imp: ImportContext, node: Node) -> Sequence[Value]:
    """onnxruntime's QLinearConv: ai.onnx QLinearConv's inputs and attributes, with
    channels_last=1 for NHWC input and output (the weight stays [M, C/group, kH, kW])."""
    attrs = _window_attrs(node, _CONV_ATTRS)
    if not node.attrs.get("channels_last", 0):
        nodes = OnnxNodes(f"{node.proto.output[0]}/QLinearConv")
        y = nodes.add("QLinearConv", list(node.proto.input), **attrs)
        return [nodes.import_at(imp, node, y, 13)]
    return [_nhwc_wrapped(imp, node, "QLinearConv", attrs)]


@converts("NhwcMaxPool", domain=_MS)
def _nhwc_max_pool(imp: ImportContext, node: Node) -> Sequence[Value]:
    """MaxPool of an NHWC 8-bit tensor (onnxruntime's layout transformer)."""
    attrs = _window_attrs(node, (*_POOL_ATTRS, "dilations", "storage_order"))
    attrs.pop("count_include_pad", None)
    return [_nhwc_wrapped(imp, node, "MaxPool", attrs)]


@converts("QLinearConcat", domain=_MS)
def _qlinear_concat(imp: ImportContext, node: Node) -> Sequence[Value]:
    # Inputs: Y_scale, Y_zero_point, then one (X, X_scale, X_zero_point) triple per input.
    count = len(node.proto.input) - 2
    if count <= 0 or count % 3:
        raise node.error(f"has {count + 2} inputs; 2 + 3 per concatenated tensor expected")
    parts = [_dequantized(imp, node, index) for index in range(2, count + 2, 3)]
    y = _float_op(imp, node, "Concat", parts, {"axis": node.attrs.get("axis", 0)})
    return [_requantized(imp, node, y, 0, imp.required(node, 2))]


@converts("MatMulIntegerToFloat", domain=_MS)
def _matmul_integer_to_float(imp: ImportContext, node: Node) -> Sequence[Value]:
    # Inputs: A, B, a_scale, b_scale, a_zero_point, b_zero_point, bias.
    a = _dequantize_with(
        imp, node, imp.required(node, 0), imp.required(node, 2), imp.input(node, 4), -2, "A"
    )
    b = _dequantize_with(
        imp, node, imp.required(node, 1), imp.required(node, 3), imp.input(node, 5), -1, "B"
    )
    y = _float_op(imp, node, "MatMul", [a, b])
    bias = imp.input(node, 6)
    if bias is not None:
        y = imp.binary(node, graph.AddOp, y, _as_f32(imp, bias))
    return [_cast(imp, y, dtype_of(imp.required(node, 2)))]


@converts("QGemm", domain=_MS)
def _qgemm(imp: ImportContext, node: Node) -> Sequence[Value]:
    # Inputs: A, a_scale, a_zero_point, B, b_scale, b_zero_point, C (int32 at scale
    # a_scale * b_scale), y_scale, y_zero_point. onnxruntime computes
    # alpha * a_scale * b_scale * (C + sum (a - a_zp)(b - b_zp)), requantized when y_zero_point
    # is given, else float.
    trans_b = int(node.attrs.get("transB", 0))
    a = _dequantized(imp, node, 0)
    b = _dequantized(imp, node, 3, axis=0 if trans_b else 1)
    alpha = float(node.attrs.get("alpha", 1.0))
    bias = _dequantized_bias(imp, node, 6)
    attrs = {
        "alpha": alpha,
        "beta": alpha,
        "transA": int(node.attrs.get("transA", 0)),
        "transB": trans_b,
    }
    y = _float_op(imp, node, "Gemm", [a, b, bias], attrs)
    y_scale, y_zero_point = imp.input(node, 7), imp.input(node, 8)
    if y_zero_point is None:
        if y_scale is not None:
            raise node.unsupported("y_scale without y_zero_point")
        return [y]
    return [_requantized(imp, node, y, 7, imp.required(node, 0))]


@converts("QLinearSoftmax", domain=_MS)
def _qlinear_softmax(imp: ImportContext, node: Node) -> Sequence[Value]:
    """Softmax of the dequantized input, requantized. `opset` is the ai.onnx Softmax's it
    replaced (below 13 the input is coerced to 2-D at `axis`). onnxruntime's kernel computes
    exp(x_scale * (x - max)) from a table in float and divides by the row sum: the same
    values up to float32 rounding, so a result next to a rounding tie may differ by 1."""
    attrs = {"axis": int(node.attrs.get("axis", -1))}
    opset = int(node.attrs.get("opset", 13))
    y = _float_op(imp, node, "Softmax", [_dequantized(imp, node, 0)], attrs, opset=opset)
    return [_requantized(imp, node, y, 3, imp.required(node, 0))]


@converts("QLinearWhere", domain=_MS)
def _qlinear_where(imp: ImportContext, node: Node) -> Sequence[Value]:
    # Inputs: condition, X, x_scale, x_zero_point, Y, y_scale, y_zero_point, z_scale,
    # z_zero_point. onnxruntime requantizes X and Y to Z's parameters (a table of
    # quantize(dequantize(v))) and selects: the same as selecting in float, then quantizing.
    condition = imp.required(node, 0)
    y = _float_op(
        imp, node, "Where", [condition, _dequantized(imp, node, 1), _dequantized(imp, node, 4)]
    )
    return [_requantized(imp, node, y, 7, imp.required(node, 1))]


def _dequantized_contrib(
    imp: ImportContext,
    node: Node,
    nodes: OnnxNodes,
    op_type: str,
    inputs: Sequence[str],
    **attrs: object,
) -> list[Value]:
    """Import `nodes` (the dequantized operands) and the com.microsoft float `op_type` on
    `inputs` in place of `node`, with `node`'s outputs."""
    outputs = nodes.add_node(op_type, inputs, list(node.proto.output), domain=_MS, **attrs)
    wanted = [name for name in outputs if name]
    first = nodes.import_at(imp, node, wanted[0], 13)
    return [first, *(imp.env[name] for name in wanted[1:])]


@converts("DynamicQuantizeMatMul", domain=_MS)
def _dynamic_quantize_matmul(imp: ImportContext, node: Node) -> Sequence[Value]:
    """Float A quantized at run time to uint8 as DynamicQuantizeLinear does (onnxruntime's
    kernel computes the same scale and zero point), then MatMulIntegerToFloat with B."""
    a, b, b_scale, b_zero_point, bias = [*node.proto.input, "", ""][:5]
    nodes = OnnxNodes(f"{node.proto.output[0]}/DynamicQuantizeMatMul")
    a_q, a_scale, a_zp = nodes.add_node("DynamicQuantizeLinear", [a], ["a_q", "a_scale", "a_zp"])
    inputs = [a_q, b, a_scale, b_scale, a_zp, b_zero_point, bias]
    (y,) = nodes.add_node("MatMulIntegerToFloat", inputs, ["y"], domain=_MS)
    return [nodes.import_at(imp, node, y, 13)]


def _dequantize_node(nodes: OnnxNodes, names: Sequence[str], axis: int | None = None) -> str:
    """A DequantizeLinear node of (x, scale[, zero point]) names; `axis` for a 1-D scale."""
    present = [name for name in names if name]  # only the zero point may be absent
    return nodes.add("DequantizeLinear", present, **({} if axis is None else {"axis": axis}))


@converts("QAttention", domain=_MS)
def _qattention(imp: ImportContext, node: Node) -> Sequence[Value]:
    """onnxruntime's quantized Attention (quantize_dynamic of an optimized transformer):
    input and weights dequantized, then com.microsoft Attention (attention.py) with the same
    attributes. onnxruntime accumulates the products in int32 and scales once: the same
    values up to float32 rounding."""
    names = [*node.proto.input, *[""] * 9][:9]
    x, weight, bias, x_scale, w_scale, mask, x_zp, w_zp, past = names
    w_scale_shape = shape_of(imp.required(node, 4))
    columns = shape_of(imp.required(node, 1))[-1]
    if math.prod(w_scale_shape) not in (1, columns):
        raise node.unsupported(
            f"weight_scale of shape {list(w_scale_shape)} (per tensor or per column of the "
            f"{columns} weight columns)"
        )
    per_column = math.prod(w_scale_shape) != 1 and columns != 1
    nodes = OnnxNodes(f"{node.proto.output[0]}/QAttention")
    x_float = _dequantize_node(nodes, [x, x_scale, x_zp])
    w_float = _dequantize_node(nodes, [weight, w_scale, w_zp], 1 if per_column else None)
    inputs = [x_float, w_float, bias, mask, past]
    return _dequantized_contrib(imp, node, nodes, "Attention", inputs, **node.attrs)


@converts("QEmbedLayerNormalization", domain=_MS)
def _qembed_layer_norm(imp: ImportContext, node: Node) -> Sequence[Value]:
    """onnxruntime's quantized EmbedLayerNormalization: the embedding tables, gamma and beta
    dequantized (constants: folded at compile time), then EmbedLayerNormalization
    (contrib.py)."""
    names = [*node.proto.input, *[""] * 18][:18]
    ids, segment_ids = names[0], names[1]
    tables = names[2:7]  # word, position, segment, gamma, beta (quantized)
    mask = names[7]
    scales, zero_points = names[8:13], names[13:18]
    nodes = OnnxNodes(f"{node.proto.output[0]}/QEmbedLayerNormalization")
    floats = [
        _dequantize_node(nodes, [t, s, z]) if t else ""
        for t, s, z in zip(tables, scales, zero_points, strict=True)
    ]
    inputs = [ids, segment_ids, *floats, mask]
    epsilon = float(node.attrs.get("epsilon", 1e-12))
    return _dequantized_contrib(
        imp, node, nodes, "EmbedLayerNormalization", inputs, epsilon=epsilon
    )


def _unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first `count` `bits`-bit unsigned values along the last axis of uint8 bytes, each
    byte's lowest bits first (MatMulNBits' packing)."""
    per_byte = 8 // bits
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    values = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return values.reshape(*packed.shape[:-1], -1)[..., :count]


@converts("MatMulNBits", domain=_MS)
def _matmul_nbits(imp: ImportContext, node: Node) -> Sequence[Value]:
    """A @ W^T [+ bias] with W [N, K] quantized in blocks of block_size along K to `bits`
    bits (onnxruntime's matmul_nbits_quantizer, int4 LLMs): the constant B, scales and zero
    points are dequantized at compile time into a float32 weight, so a MatMul kernel runs on
    it. onnxruntime's accuracy_level=4 also quantizes A to int8 at run time; ember computes
    the op's definition in float32 (what accuracy_level 0/1 computes)."""
    a = imp.required(node, 0)
    if dtype_of(a) != _F32:
        raise node.unsupported(f"input A of type {dtype_of(a)} (float32 is supported)")
    attrs = node.attrs
    k, n = int(attrs.get("K", 0)), int(attrs.get("N", 0))
    bits, block = int(attrs.get("bits", 4)), int(attrs.get("block_size", 0))
    if int(attrs.get("weight_prepacked", 0)):
        raise node.unsupported(f"attribute weight_prepacked={attrs['weight_prepacked']}")
    if bits not in (2, 4, 8) or block < 16 or block & (block - 1) or k <= 0 or n <= 0:
        raise node.unsupported(
            f"bits={bits}, block_size={block}, K={k}, N={n} (bits 2, 4 or 8; block_size a "
            "power of two >= 16; K, N positive)"
        )
    if imp.input(node, 4) is not None:
        raise node.unsupported("input g_idx (deprecated act-order quantization)")
    blocks = -(-k // block)
    blob = block * bits // 8
    packed = imp.constant(node, 1, "B")
    scales = imp.constant(node, 2, "scales")
    assert packed is not None and scales is not None
    if packed.dtype != np.uint8 or packed.size != n * blocks * blob:
        raise node.error(
            f"B of type {packed.dtype} and shape {list(packed.shape)}; uint8 [{n}, {blocks}, "
            f"{blob}] expected for K={k}, N={n}, bits={bits}, block_size={block}"
        )
    if scales.size != n * blocks:
        raise node.error(f"scales of shape {list(scales.shape)}; [{n}, {blocks}] expected")
    quantized = _unpack_bits(packed.reshape(n, blocks, blob), bits, block).astype(np.float32)
    zero_points = imp.constant(node, 3, "zero_points")
    if zero_points is None:
        zp = np.full((n, blocks), 1 << (bits - 1), np.float32)
    elif zero_points.dtype == np.uint8:
        row_bytes = -(-blocks * bits // 8)
        if zero_points.size != n * row_bytes:
            raise node.error(
                f"packed zero_points of shape {list(zero_points.shape)}; [{n}, {row_bytes}] "
                "expected"
            )
        zp = _unpack_bits(zero_points.reshape(n, row_bytes), bits, blocks).astype(np.float32)
    elif zero_points.size == n * blocks:
        zp = zero_points.reshape(n, blocks).astype(np.float32)
    else:
        raise node.error(f"zero_points of shape {list(zero_points.shape)}; [{n}, {blocks}]")
    scale = scales.reshape(n, blocks).astype(np.float32)
    weight = ((quantized - zp[..., None]) * scale[..., None]).reshape(n, blocks * block)[:, :k]
    if shape_of(a)[-1] != k:
        raise node.error(f"A of shape {list(shape_of(a))}: its last axis must be K={k}")
    y = _float_op(imp, node, "MatMul", [a, Const(np.ascontiguousarray(weight.T))])
    bias = imp.input(node, 5)
    if bias is not None:
        y = imp.binary(node, graph.AddOp, y, bias)
    return [y]


def _block_expanded(params: np.ndarray, axis: int, block: int, size: int) -> np.ndarray:
    """Per-block `params` repeated `block` times along `axis`, cut to `size` elements."""
    return np.take(np.repeat(params, block, axis=axis), np.arange(size), axis=axis)


@converts("GatherBlockQuantized", domain=_MS)
def _gather_block_quantized(imp: ImportContext, node: Node) -> Sequence[Value]:
    """A Gather of a constant table quantized in blocks of block_size along quantize_axis
    (onnxruntime's quantizers and onnxruntime-genai write it for int4 embeddings): the table is
    dequantized at compile time, then gathered; as onnxruntime's kernel, an index out of range
    gives a zero slice (not an error). uint8 data holds 2-, 4- or 8-bit values packed along
    its last axis (lowest bits first; zero point 2^(bits-1) by default), int4/uint4 data its
    values (zero point 0 by default). FP8/FP4 tables are refused."""
    data = imp.constant(node, 0, "data")
    scales = imp.constant(node, 2, "scales")
    zero_points = imp.constant(node, 3, "zero_points")
    indices = imp.required(node, 1)
    assert data is not None and scales is not None
    bits = int(node.attrs.get("bits", 4))
    block = int(node.attrs.get("block_size", 128))
    rank = data.ndim
    gather_axis = normalize_axis(node, int(node.attrs.get("gather_axis", 0)), rank)
    quantize_axis = normalize_axis(node, int(node.attrs.get("quantize_axis", 1)), rank)
    if block < 16 or block & (block - 1):
        raise node.unsupported(f"block_size={block} (a power of two >= 16)")
    if data.dtype == np.uint8:
        if bits not in (2, 4, 8):
            raise node.unsupported(f"bits={bits} (2, 4 or 8)")
        if bits < 8 and gather_axis == rank - 1:
            raise node.error("gather_axis is the packed (last) axis of uint8 data")
        per_byte = 8 // bits
        values = _unpack_bits(data, bits, data.shape[-1] * per_byte).astype(np.float32)
        if zero_points is None:
            zp = np.full(scales.shape, 1 << (bits - 1), np.float32)
        else:
            zp = _unpack_bits(zero_points, bits, zero_points.shape[-1] * per_byte)
            zp = zp[..., : scales.shape[-1]].astype(np.float32)
    elif data.dtype in (np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4)):
        values = data.astype(np.float32)
        zp = np.zeros(scales.shape, np.float32) if zero_points is None else zero_points
        zp = zp.astype(np.float32)
    else:
        raise node.unsupported(f"data of type {data.dtype} (uint8, int4 and uint4 tables)")
    blocks = -(-values.shape[quantize_axis] // block)
    expected = [blocks if d == quantize_axis else n for d, n in enumerate(values.shape)]
    if list(scales.shape) != expected or zp.shape != scales.shape:
        raise node.error(
            f"scales {list(scales.shape)} / zero_points {list(zp.shape)} for data of logical "
            f"shape {list(values.shape)}: {expected} expected"
        )
    size = values.shape[quantize_axis]
    table = (values - _block_expanded(zp, quantize_axis, block, size)) * _block_expanded(
        scales.astype(np.float32), quantize_axis, block, size
    )
    table = table.astype(scales.dtype)
    extent = table.shape[gather_axis]
    nodes = OnnxNodes(f"{node.proto.output[0]}/GatherBlockQuantized")
    index = node.proto.input[1]
    index_type = dtype_of(indices)
    inside = nodes.add(
        "And",
        [
            nodes.add("GreaterOrEqual", [index, nodes.const(np.asarray(-extent, index_type))]),
            nodes.add("Less", [index, nodes.const(np.asarray(extent, index_type))]),
        ],
    )
    safe = nodes.add("Where", [inside, index, nodes.const(np.zeros((), index_type))])
    gathered = nodes.add("Gather", [nodes.const(table), safe], axis=gather_axis)
    # inside: indices' shape; aligned with the gathered axes by trailing unit axes.
    trailing = rank - 1 - gather_axis
    if trailing:
        inside = nodes.add("Unsqueeze", [inside, nodes.i64(list(range(-trailing, 0)))])
    zero = nodes.const(np.zeros((), table.dtype))
    y = nodes.add("Where", [inside, gathered, zero])
    return [nodes.import_at(imp, node, y, 13)]
