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
a constant int8 weight with zero points 0 (per tensor or per output channel), group 1, a
conv result used only by the QuantizeLinear (or a Relu that only it reads), and sums that
fit int32. Anything else keeps the float fallback, which is correct. Runs before
fold-constants, which would fold the weight's DequantizeLinear into a float weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, TensorType, i64
from xdsl.ir import SSAValue
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
# |acc + offset| <= 2 * K * 255 * 128 must stay an int32 (the kernel shifts int8 inputs to
# uint8, so the zero-point correction can be as large as the sum).
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


@dataclass
class QuantizeConv(RewritePattern):
    weights: WeightStore

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.QuantizeLinearOp, rewriter: PatternRewriter) -> None:
        w = self.weights
        out_dtype = _dtype_of(op.output)
        y_scale, y_zero = _scalar(op.scale, w), _scalar(op.zero_point, w)
        if out_dtype not in _EIGHT_BIT or y_scale is None or y_zero is None:
            return
        if y_scale.dtype != np.float32 or not (np.isfinite(y_scale) and y_scale > 0):
            return
        producer, relu = op.input.owner, False
        if isinstance(producer, graph.ReluOp) and only_user(producer.output) is op:
            producer, relu = producer.input.owner, True
        if not isinstance(producer, graph.ConvOp) or not producer.output.has_one_use():
            return
        conv = producer
        if (
            conv.group.value.data != 1
            or conv.residual is not None
            or conv.activation is not None
            or _dtype_of(conv.output) != np.float32
        ):
            return
        x, wq = _dequantized(conv.input, w), _dequantized(conv.weight, w)
        if x is None or wq is None:
            return
        x_dtype = _dtype_of(x.x)
        x_scale, x_zero = x.scale.reshape(-1), x.zero_point.reshape(-1)
        if x_dtype not in _EIGHT_BIT or x_scale.size != 1 or x_zero.size != 1:
            return
        if not (np.isfinite(x_scale[0]) and x_scale[0] > 0):
            return
        weight = constant_array(wq.x, w)
        w_shape = graph.shape_of(wq.x)
        if weight is None or weight.dtype != np.int8 or np.any(wq.zero_point != 0):
            return
        w_scale = per_channel(wq.scale, w_shape, 0)
        if w_scale is None or not np.all(np.isfinite(w_scale) & (w_scale > 0)):
            return
        bias = np.zeros(w_shape[0], np.float32)
        if conv.bias is not None:
            given = constant_array(conv.bias, w)
            if given is None or given.dtype != np.float32:
                return
            bias = given
        depth = int(np.prod(w_shape[1:]))
        if 2 * depth * 255 * 128 > _INT32_MAX:
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

        operands = [
            x.x,
            wq.x,
            new_constant(rewriter, w, offset, "qconv.offset"),
            new_constant(rewriter, w, multiplier, "qconv.multiplier"),
            new_constant(rewriter, w, float_bias.astype(np.float32), "qconv.bias"),
        ]
        qconv = graph.QConvOp.build(
            operands=operands,
            result_types=[TensorType(graph.element_type_of(op.output), graph.shape_of(op.output))],
            properties={
                "strides": conv.strides,
                "pads": conv.pads,
                "dilations": conv.dilations,
                "input_zero_point": int_attr(int(x_zero[0])),
                "output_zero_point": int_attr(int(y_zero)),
                "output_min": int_attr(output_min),
                "output_max": int_attr(int(info.max)),
            },
        )
        rewriter.replace(op, [qconv])


class QuantizeOps(ModulePass):
    """Rewrites DequantizeLinear -> Conv -> QuantizeLinear patterns into integer graph.qconv."""

    name = "quantize-ops"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        apply_patterns(op, [QuantizeConv(weights_of(ctx))])
