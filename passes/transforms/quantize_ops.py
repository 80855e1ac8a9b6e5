"""quantize-ops: DequantizeLinear -> Conv (-> Relu) -> QuantizeLinear becomes one integer conv.

The QDQ form that onnxruntime's quantization tool writes (and the QOperator forms the importer
decomposes into it) computes a quantized convolution in float: dequantize the uint8/int8
activations and the int8 weights, convolve in float32, add the bias, quantize the result.
This pass rewrites exactly that pattern into `graph.qconv`, which accumulates
(x - x_zero_point) * w in int32 and requantizes once in its epilogue:

    q = clamp(round_half_even(float(acc + offset[c]) * multiplier[c] + bias[c]) + y_zero_point)

with multiplier[c] = x_scale * w_scale[c] / y_scale. The integer part is exact; the float
part differs from the float fallback only in rounding, by at most one quantization step
where the float result lands next to a rounding tie (as onnxruntime's own integer kernels).
A bias that is an int32 quantized at x_scale * w_scale[c] (what the tool writes) is recovered
exactly and added in int32 (`offset`); any other float bias stays in `bias`.

It matches only what it can prove: constant per-tensor scales and zero points for x and y,
a constant int8 weight with zero points 0 (per tensor or per output channel), any group
(depthwise and grouped convs have integer kernels too), a conv result used only by the
QuantizeLinear (or a Relu that only it reads), and sums that fit int32. Anything else keeps the float fallback, which is correct. Runs before
fold-constants, which would fold the weight's DequantizeLinear into a float weight.

MatMulInteger with a constant int8 weight (what dynamic quantization writes after
DynamicQuantizeLinear, imported as Cast<int32>(MatMul(x - x_zero_point, w))) becomes a
graph.qconv with an int32 output holding sum x * w exactly, minus x_zero_point * colsum(w) as an
int32 elementwise op: the zero point is a run-time value there, colsum(w) a constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, ModuleOp, TensorType, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern

from ember.dialects import graph
from ember.dialects.dtypes import numpy_dtype_for
from ember.dialects.weights import WeightStore
from ember.passes.transforms.graph_utils import (
    apply_patterns,
    constant_array,
    new_constant,
    only_user,
    per_channel,
    weights_of,
)

_EIGHT_BIT = (np.dtype(np.uint8), np.dtype(np.int8))
# |acc + offset| <= 2 * K * 255 * 128 + 2^24 must stay an int32: the kernel shifts int8
# inputs to uint8, so the zero-point correction can be as large as the sum, and the
# recovered int32 bias is below 2^24.
_INT32_MAX = (1 << 31) - 1


def _dtype_of(value: SSAValue) -> np.dtype:
    return numpy_dtype_for(graph.element_type_of(value))


def _scalar(value: SSAValue, weights: WeightStore) -> np.ndarray | None:
    array = constant_array(value, weights)
    return None if array is None or array.size != 1 else array.reshape(())


@dataclass(frozen=True)
class _Dequantized:
    """x of a graph.dequantize_linear(x, scale, zero_point) with constant parameters."""

    x: SSAValue
    scale: np.ndarray
    zero_point: np.ndarray


def _dequantized(value: SSAValue, weights: WeightStore) -> _Dequantized | None:
    op = value.owner
    if not isinstance(op, graph.DequantizeLinearOp) or graph.element_type_of(op.output) != (
        graph.element_type_of(op.scale)
    ):
        return None
    scale = constant_array(op.scale, weights)
    zero_point = constant_array(op.zero_point, weights)
    if scale is None or zero_point is None or scale.dtype != np.float32:
        return None
    return _Dequantized(op.input, scale, zero_point)


@dataclass(frozen=True)
class _Contraction:
    """A float conv/matmul/gemm on a dequantized input and a dequantized int8 constant,
    seen as a 2-D convolution: `weight` OIHW, per-output-channel weight scales and bias."""

    x: _Dequantized
    weight: np.ndarray
    weight_name: SSAValue | None  # the int8 constant itself, when usable as OIHW unchanged
    w_scale: np.ndarray
    bias: np.ndarray
    strides: DenseArrayBase
    pads: DenseArrayBase
    dilations: DenseArrayBase
    rows: int  # matmul/gemm: rows of A (the conv's pixels); 0 for a conv
    group: int = 1  # the conv's


def _int8_weight(
    value: SSAValue, weights: WeightStore, axis: int
) -> tuple[_Dequantized, np.ndarray, np.ndarray] | None:
    """The int8 constant behind a DequantizeLinear with zero points 0, and its scale per
    slice along `axis` (per tensor or per axis)."""
    wq = _dequantized(value, weights)
    if wq is None:
        return None
    weight = constant_array(wq.x, weights)
    if weight is None or weight.dtype != np.int8 or np.any(wq.zero_point != 0):
        return None
    w_scale = per_channel(wq.scale, weight.shape, axis)
    if w_scale is None or not np.all(np.isfinite(w_scale) & (w_scale > 0)):
        return None
    return wq, weight, w_scale


def _bias(
    value: SSAValue | None, weights: WeightStore, out_shape: tuple[int, ...]
) -> np.ndarray | None:
    """A constant float32 bias as one value per output channel (a conv's is [Cout]; a gemm's
    C must vary along N only), zeros when absent."""
    channels = out_shape[1]
    if value is None:
        return np.zeros(channels, np.float32)
    given = constant_array(value, weights)
    if given is None or given.dtype != np.float32:
        return None
    if given.shape == (channels,):
        return given
    return per_channel(given, out_shape, 1)


_UNIT = graph.i64_array([1, 1])
_NO_PADS = graph.i64_array([0, 0, 0, 0])


def _contraction(producer: object, weights: WeightStore) -> _Contraction | None:
    """The conv, matmul ([M, K] @ [K, N]) or gemm (alpha = beta = 1, A not transposed) that
    quantize-ops can run as an integer convolution, else None."""
    if isinstance(producer, graph.ConvOp):
        group = producer.group.value.data
        if producer.residual is not None or producer.activation is not None:
            return None
        w_shape = graph.shape_of(producer.weight)
        if graph.shape_of(producer.input)[1] != group * w_shape[1] or w_shape[0] % group:
            return None
        found = _int8_weight(producer.weight, weights, 0)
        bias = _bias(producer.bias, weights, graph.shape_of(producer.output))
        x = _dequantized(producer.input, weights)
        if found is None or bias is None or x is None:
            return None
        wq, weight, w_scale = found
        return _Contraction(
            x, weight, wq.x, w_scale, bias,
            producer.strides, producer.pads, producer.dilations, 0, group,
        )  # fmt: skip
    if isinstance(producer, graph.MatMulOp):
        if producer.residual is not None or producer.activation is not None:
            return None
        a, b, c, trans_b = producer.a, producer.b, producer.bias, False
    elif isinstance(producer, graph.GemmOp):
        if producer.alpha.value.data != 1.0 or producer.trans_a.value.data:
            return None
        if producer.c is not None and producer.beta.value.data != 1.0:
            return None
        a, b, c, trans_b = producer.a, producer.b, producer.c, bool(producer.trans_b.value.data)
    else:
        return None
    out_shape = graph.shape_of(producer.output)
    if len(graph.shape_of(a)) != 2 or len(graph.shape_of(b)) != 2 or len(out_shape) != 2:
        return None
    found = _int8_weight(b, weights, 0 if trans_b else 1)
    bias = _bias(c, weights, out_shape)
    x = _dequantized(a, weights)
    if found is None or bias is None or x is None:
        return None
    _, weight, w_scale = found
    oihw = (weight if trans_b else weight.T)[:, :, None, None]
    return _Contraction(
        x, np.ascontiguousarray(oihw), None, w_scale, bias, _UNIT, _NO_PADS, _UNIT, out_shape[0]
    )


def _output_quantization(
    op: graph.QuantizeLinearOp, weights: WeightStore
) -> tuple[np.dtype, np.ndarray, np.ndarray, Operation | None, bool] | None:
    """(output dtype, scale, zero point, producer, relu) of an 8-bit QuantizeLinear with a
    positive float32 scalar scale; a Relu used only by it is looked through (relu=True)."""
    out_dtype = _dtype_of(op.output)
    y_scale, y_zero = _scalar(op.scale, weights), _scalar(op.zero_point, weights)
    if out_dtype not in _EIGHT_BIT or y_scale is None or y_zero is None:
        return None
    if y_scale.dtype != np.float32 or not (np.isfinite(y_scale) and y_scale > 0):
        return None
    producer, relu = op.input.owner, False
    if isinstance(producer, graph.ReluOp) and only_user(producer.output) is op:
        producer, relu = producer.input.owner, True
    return out_dtype, y_scale, y_zero, producer if isinstance(producer, Operation) else None, relu


@dataclass
class QuantizeContraction(RewritePattern):
    weights: WeightStore

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.QuantizeLinearOp, rewriter: PatternRewriter) -> None:
        w = self.weights
        quantized = _output_quantization(op, w)
        if quantized is None:
            return
        out_dtype, y_scale, y_zero, producer, relu = quantized
        if not isinstance(producer, graph.ConvOp | graph.MatMulOp | graph.GemmOp):
            return
        if not producer.output.has_one_use() or _dtype_of(producer.output) != np.float32:
            return
        found = _contraction(producer, w)
        if found is None:
            return
        x = found.x
        x_scale, x_zero = x.scale.reshape(-1), x.zero_point.reshape(-1)
        if _dtype_of(x.x) not in _EIGHT_BIT or x_scale.size != 1 or x_zero.size != 1:
            return
        if not (np.isfinite(x_scale[0]) and x_scale[0] > 0):
            return
        w_scale, bias = found.w_scale, found.bias
        depth = int(np.prod(found.weight.shape[1:]))
        if 2 * depth * 255 * 128 + (1 << 24) > _INT32_MAX:
            return

        # The bias the quantization tool wrote is int32 at scale x_scale * w_scale[c]: recover
        # it where that is exact and add it in int32; keep the rest in float.
        accumulator_scale = (x_scale[0] * w_scale).astype(np.float32)
        bias_int = np.rint(bias.astype(np.float64) / accumulator_scale)
        exact = (np.abs(bias_int) < 1 << 24) & (
            (bias_int.astype(np.float32) * accumulator_scale) == bias
        )
        offset = np.where(exact, bias_int, 0).astype(np.int32)
        float_bias = np.where(exact, 0.0, bias.astype(np.float64) / float(y_scale))
        multiplier = (
            np.float64(x_scale[0]) * w_scale.astype(np.float64) / np.float64(y_scale)
        ).astype(np.float32)
        info = np.iinfo(out_dtype)
        output_min = max(int(info.min), int(y_zero)) if relu else int(info.min)

        def int_attr(value: int) -> IntegerAttr:
            return IntegerAttr(int(value), i64)

        element = graph.element_type_of(op.output)
        x_value, out_shape = x.x, graph.shape_of(op.output)
        weight_value = found.weight_name
        if found.rows:  # [M, K] @ [K, N] as a 1x1 conv over M pixels: x^T [1, K, 1, M]
            rows, cols = graph.shape_of(x.x)
            if rows > 1:
                x_value = _insert(rewriter, _transpose(x_value, (cols, rows)))
            x_value = _insert(rewriter, _reshape(x_value, (1, cols, 1, rows)))
            weight_value = new_constant(rewriter, w, found.weight, "qgemm.weight")
            conv_shape = (1, out_shape[1], 1, rows)
        else:
            conv_shape = out_shape
        assert weight_value is not None
        operands = [
            x_value,
            weight_value,
            new_constant(rewriter, w, offset, "qconv.offset"),
            new_constant(rewriter, w, multiplier, "qconv.multiplier"),
            new_constant(rewriter, w, float_bias.astype(np.float32), "qconv.bias"),
            None,  # residual: FuseQuantizedResidual adds one
        ]
        qconv = graph.QConvOp.build(
            operands=operands,
            result_types=[TensorType(element, conv_shape)],
            properties={
                "strides": found.strides,
                "pads": found.pads,
                "dilations": found.dilations,
                "input_zero_point": int_attr(int(x_zero[0])),
                "output_zero_point": int_attr(int(y_zero)),
                "output_min": int_attr(output_min),
                "output_max": int_attr(int(info.max)),
                **({"group": int_attr(found.group)} if found.group != 1 else {}),
            },
        )
        if not found.rows:
            rewriter.replace(op, [qconv])
            return
        rows, cols = out_shape
        ops: list[Operation] = [qconv]
        if rows > 1:  # [1, N, 1, M] -> [N, M] -> [M, N]
            ops.append(_reshape(qconv.results[0], (cols, rows)))
            ops.append(_transpose(ops[-1].results[0], (rows, cols)))
        else:
            ops.append(_reshape(qconv.results[0], (rows, cols)))
        rewriter.replace(op, ops)


def _runtime_dequantized(value: SSAValue, weights: WeightStore) -> tuple[SSAValue, SSAValue] | None:
    """(x, zero_point) of a graph.dequantize_linear(x, 1, zero_point) of 8-bit x whose zero
    point is one value, constant or computed at run time (DynamicQuantizeLinear's): x minus
    its zero point, as the frontend writes MatMulInteger's operands."""
    op = value.owner
    if not isinstance(op, graph.DequantizeLinearOp) or _dtype_of(op.input) not in _EIGHT_BIT:
        return None
    scale = _scalar(op.scale, weights)
    if scale is None or scale.dtype != np.float32 or float(scale) != 1.0:
        return None
    if _dtype_of(op.zero_point) != _dtype_of(op.input):
        return None
    if int(np.prod(graph.shape_of(op.zero_point))) != 1:
        return None
    return op.input, op.zero_point


@dataclass
class IntegerMatMul(RewritePattern):
    """Cast<int32>(MatMul(x - x_zero_point, w)) of 8-bit x and a constant int8 w [K, N] with
    zero points 0 (MatMulInteger as the frontend writes it) -> graph.qconv with an int32
    output (the exact sum of x * w) minus x_zero_point * colsum(w). The zero point may be a
    run-time value (DynamicQuantizeLinear computes it): the correction is an int32
    elementwise op, colsum(w) a constant."""

    weights: WeightStore

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.CastOp, rewriter: PatternRewriter) -> None:
        w = self.weights
        if _dtype_of(op.output) != np.int32:
            return
        matmul = op.input.owner
        if not isinstance(matmul, graph.MatMulOp) or not matmul.output.has_one_use():
            return
        if matmul.residual is not None or matmul.activation is not None or matmul.bias is not None:
            return
        x = _runtime_dequantized(matmul.a, w)
        found = _int8_weight(matmul.b, w, 1)
        if x is None or found is None or np.any(found[2] != 1.0):
            return
        x_value, x_zero = x
        weight = found[1]
        x_shape, out_shape = graph.shape_of(x_value), graph.shape_of(op.output)
        if len(x_shape) < 2 or weight.ndim != 2 or x_shape[-1] != weight.shape[0]:
            return
        depth, cols = weight.shape
        if out_shape != (*x_shape[:-1], cols):
            return
        # |sum x * w| and |x_zero_point * colsum(w)| are below K * 255 * 128 each.
        if 2 * depth * 255 * 128 > _INT32_MAX:
            return
        rows = int(np.prod(x_shape[:-1]))
        if len(x_shape) != 2:
            x_value = _insert(rewriter, _reshape(x_value, (rows, depth)))
        if rows > 1:  # [M, K] @ [K, N] as a 1x1 conv over M pixels: x^T [1, K, 1, M]
            x_value = _insert(rewriter, _transpose(x_value, (depth, rows)))
        x_value = _insert(rewriter, _reshape(x_value, (1, depth, 1, rows)))
        int32 = graph.element_type_of(op.output)
        info = np.iinfo(np.int32)
        zero = IntegerAttr(0, i64)
        qconv = graph.QConvOp.build(
            operands=[
                x_value,
                new_constant(rewriter, w, weight.T[:, :, None, None], "qmatmul.weight"),
                new_constant(rewriter, w, np.zeros(cols, np.int32), "qconv.offset"),
                new_constant(rewriter, w, np.ones(cols, np.float32), "qconv.multiplier"),
                new_constant(rewriter, w, np.zeros(cols, np.float32), "qconv.bias"),
                None,
            ],
            result_types=[TensorType(int32, (1, cols, 1, rows))],
            properties={
                "strides": _UNIT,
                "pads": _NO_PADS,
                "dilations": _UNIT,
                "input_zero_point": zero,
                "output_zero_point": zero,
                "output_min": IntegerAttr(int(info.min), i64),
                "output_max": IntegerAttr(int(info.max), i64),
            },
        )
        rewriter.insert(qconv)
        product = qconv.results[0]
        if rows > 1:  # [1, N, 1, M] -> [N, M] -> [M, N]
            product = _insert(rewriter, _reshape(product, (cols, rows)))
            product = _insert(rewriter, _transpose(product, (rows, cols)))
        if graph.shape_of(product) != out_shape:
            product = _insert(rewriter, _reshape(product, out_shape))
        zero_point = graph.CastOp.build(
            operands=[x_zero], result_types=[TensorType(int32, graph.shape_of(x_zero))]
        )
        column_sums = weight.astype(np.int64).sum(axis=0).astype(np.int32)
        correction = graph.MulOp(
            _insert(rewriter, zero_point), new_constant(rewriter, w, column_sums, "qmatmul.colsum")
        )
        rewriter.insert(correction)
        rewriter.replace(op, [graph.SubOp(product, correction.output)])


@dataclass
class FuseQuantizedResidual(RewritePattern):
    """QuantizeLinear(Add(DequantizeLinear(qconv), DequantizeLinear(r)) [-> Relu]) -> one
    graph.qconv with `residual`: the add runs in the conv's epilogue instead of as a float
    elementwise kernel, with the same arithmetic (the conv's output is still quantized first,
    as the model says)."""

    weights: WeightStore

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.QuantizeLinearOp, rewriter: PatternRewriter) -> None:
        w = self.weights
        quantized = _output_quantization(op, w)
        if quantized is None:
            return
        out_dtype, y_scale, y_zero, add, relu = quantized
        if not isinstance(add, graph.AddOp) or not add.output.has_one_use():
            return
        shape = graph.shape_of(add.output)
        if any(graph.shape_of(v) != shape for v in (add.lhs, add.rhs)):
            return
        for conv_side, residual_side in ((add.lhs, add.rhs), (add.rhs, add.lhs)):
            fused = self._fused(conv_side, residual_side, add)
            if fused is None:
                continue
            qconv, conv_scale, residual = fused
            info = np.iinfo(out_dtype)
            params = [
                conv_scale,
                float(residual.scale.reshape(())),
                float(residual.zero_point.reshape(())),
                float(y_scale),
                float(y_zero),
                float(max(int(info.min), int(y_zero)) if relu else int(info.min)),
                float(info.max),
            ]
            properties = dict(qconv.properties)
            properties.pop("operandSegmentSizes", None)
            properties["residual_params"] = graph.f32_array(params)
            new = graph.QConvOp.build(
                operands=[*qconv.operands[:5], residual.x],
                result_types=[op.output.type],
                properties=properties,
            )
            rewriter.replace(op, [new])
            return

    def _fused(
        self, conv_side: SSAValue, residual_side: SSAValue, add: graph.AddOp
    ) -> tuple[graph.QConvOp, float, _Dequantized] | None:
        conv_dq, residual = (
            _dequantized(conv_side, self.weights),
            _dequantized(residual_side, self.weights),
        )
        if conv_dq is None or residual is None:
            return None
        qconv = conv_dq.x.owner
        if not isinstance(qconv, graph.QConvOp) or qconv.residual is not None:
            return None
        # The conv's result is read only through this dequantize, which only the add reads.
        if not (conv_dq.x.has_one_use() and conv_side.has_one_use()):
            return None
        if conv_dq.scale.size != 1 or conv_dq.zero_point.size != 1:
            return None
        if int(conv_dq.zero_point.reshape(())) != qconv.output_zero_point.value.data:
            return None
        if residual.scale.size != 1 or residual.zero_point.size != 1:
            return None
        if _dtype_of(residual.x) not in _EIGHT_BIT:
            return None
        scales = (float(conv_dq.scale.reshape(())), float(residual.scale.reshape(())))
        if not all(np.isfinite(s) and s > 0 for s in scales):
            return None
        return qconv, scales[0], residual


def _reshape(value: SSAValue, shape: tuple[int, ...]) -> Operation:
    element = graph.element_type_of(value)
    return graph.ReshapeOp.build(operands=[value], result_types=[TensorType(element, shape)])


def _transpose(value: SSAValue, shape: tuple[int, int]) -> Operation:
    element = graph.element_type_of(value)
    return graph.TransposeOp.build(
        operands=[value],
        result_types=[TensorType(element, shape)],
        properties={"perm": graph.i64_array([1, 0])},
    )


def _insert(rewriter: PatternRewriter, op: Operation) -> SSAValue:
    rewriter.insert(op)
    return op.results[0]


class QuantizeOps(ModulePass):
    """Rewrites DequantizeLinear -> Conv/MatMul/Gemm -> QuantizeLinear into graph.qconv."""

    name = "quantize-ops"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        weights = weights_of(ctx)
        apply_patterns(
            op,
            [QuantizeContraction(weights), FuseQuantizedResidual(weights), IntegerMatMul(weights)],
        )
