"""The `graph` dialect: tensor ops with ONNX semantics, value semantics, static shapes.

The frontend imports an ONNX graph into this dialect one node at a time (a few ONNX ops map to
several graph ops, e.g. Gemm, Sum, Flatten). Weights are never stored in attributes: a
`graph.constant` names an entry of the `WeightStore` carried by the `EmberContext`.

Each op with numpy semantics says so itself with an `evaluate(self, inputs)` method (the
kernels are in dialects/numpy_eval.py, which says why this and not xDSL's fold interface):
constant folding and the reference interpreter ask the op.

Conv and MatMul carry an optional fused epilogue (bias, residual add, activation) that the
fusion passes fill in; the epilogue is applied in the order bias -> residual -> activation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    I64,
    ArrayAttr,
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
    UnitAttr,
    f32,
    i64,
)
from xdsl.ir import Attribute, Dialect, Operation, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    AttrSizedResultSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    opt_result_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import HasParent, IsTerminator, Pure, RecursiveMemoryEffect
from xdsl.utils.exceptions import VerifyException

from ember.dialects import numpy_eval, small_types
from ember.dialects.assembly import TypeIfPresent
from ember.dialects.numpy_eval import Inputs, elementwise
from ember.dialects.twins import TwinSpec, tensor_format
from ember.dialects.weights import WeightRef

# Activations a Conv/MatMul epilogue (and the kernel dialect) understands. Their parameters
# travel in `activation_params`: clip -> (min, max); leaky_relu -> (alpha,).
ACTIVATIONS = ("relu", "clip", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh")


def shape_of(value: SSAValue | Attribute) -> tuple[int, ...]:
    """Static shape of a tensor or memref value (or type)."""
    ty = value if isinstance(value, Attribute) else value.type
    return tuple(ty.get_shape())  # type: ignore[attr-defined]


def element_type_of(value: SSAValue | Attribute) -> Attribute:
    ty = value if isinstance(value, Attribute) else value.type
    return ty.get_element_type()  # type: ignore[attr-defined]


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """Numpy/ONNX multidirectional broadcasting; raises ValueError when incompatible."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ValueError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def broadcasts_to(shape: Sequence[int], target: Sequence[int]) -> bool:
    """Whether `shape` broadcasts (numpy/ONNX rules) to exactly `target`."""
    try:
        return broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def i64_array(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, list(values))


def f32_array(values: Sequence[float]) -> DenseArrayBase:
    return DenseArrayBase.from_list(f32, list(values))


def int_values(attr: DenseArrayBase | None, default: Sequence[int] = ()) -> tuple[int, ...]:
    return tuple(attr.get_values()) if attr is not None else tuple(default)  # type: ignore[arg-type]


def _verify_same_shape(op: Operation, a: SSAValue, b: SSAValue) -> None:
    if shape_of(a) != shape_of(b):
        raise VerifyException(f"{op.name}: shape {shape_of(a)} != {shape_of(b)}")


def verify_enum(op: Operation, prop: str, allowed: Sequence[str]) -> None:
    """An enum-like string property (`activation`, `kind`, `reduction`, ...) holds one of
    `allowed`, or is absent when optional. The IR keeps plain strings (`kind = "max"`)."""
    attr = op.properties.get(prop)
    if isinstance(attr, StringAttr) and attr.data not in allowed:
        raise VerifyException(
            f"{op.name}: unknown {prop} '{attr.data}' (expected one of {', '.join(allowed)})"
        )


def verify_epilogue(op: Operation) -> None:
    """Checks shared by every op carrying a fused epilogue (graph and kernel level)."""
    verify_enum(op, "activation", ACTIVATIONS)
    residual = op.residual  # type: ignore[attr-defined]
    if residual is not None and shape_of(residual) != shape_of(op.output):  # type: ignore[attr-defined]
        raise VerifyException(
            f"{op.name}: residual shape {shape_of(residual)} != output {shape_of(op.output)}"  # type: ignore[attr-defined]
        )


def activation_of(op: Operation) -> tuple[str | None, tuple[float, ...]]:
    """The epilogue activation of a conv/matmul and its parameters ((None, ()) if none)."""
    name, params = op.properties.get("activation"), op.properties.get("activation_params")
    values = () if params is None else tuple(float(v) for v in params.get_values())  # type: ignore[attr-defined]
    return (name.data if isinstance(name, StringAttr) else None), values


def _value(attr: IntegerAttr | FloatAttr | None) -> int | float | None:
    """The number an optional integer or float property holds, None when absent."""
    return None if attr is None else attr.value.data


class _InOutOp(IRDLOperation):
    """An op computing `output` from `input` alone."""

    input = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = tensor_format("input")


class _DataIndicesOp(IRDLOperation):
    """An op reading `data` at `indices`."""

    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = tensor_format("data", "indices")


class _ScatterOp(IRDLOperation):
    """An op writing `updates` into a copy of `data` at `indices`."""

    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    updates = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = tensor_format("data", "indices", "updates")


# ---------------------------------------------------------------------------------------------
# Constants


@irdl_op_definition
class ConstantOp(WeightRef, IRDLOperation):
    """A weight or folded constant: `ref` names an entry of the WeightStore."""

    name = "graph.constant"
    output = result_def(TensorType)
    traits = traits_def(Pure())


# ---------------------------------------------------------------------------------------------
# Elementwise


class UnaryElementwiseOp(IRDLOperation):
    """x -> f(x), same shape and element type."""

    input = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = tensor_format("input")

    def __init__(self, input: SSAValue | Operation, **props: Attribute):
        value = SSAValue.get(input)
        super().__init__(operands=[value], result_types=[value.type], properties=props)

    def verify_(self) -> None:
        _verify_same_shape(self, self.input, self.output)


@irdl_op_definition
class ReluOp(UnaryElementwiseOp):
    name = "graph.relu"
    evaluate = elementwise(numpy_eval.relu)


@irdl_op_definition
class SigmoidOp(UnaryElementwiseOp):
    name = "graph.sigmoid"
    evaluate = elementwise(numpy_eval.sigmoid)


@irdl_op_definition
class TanhOp(UnaryElementwiseOp):
    name = "graph.tanh"
    evaluate = elementwise(np.tanh)


@irdl_op_definition
class ExpOp(UnaryElementwiseOp):
    name = "graph.exp"
    evaluate = elementwise(np.exp)


@irdl_op_definition
class LogOp(UnaryElementwiseOp):
    name = "graph.log"
    evaluate = elementwise(np.log)


@irdl_op_definition
class SqrtOp(UnaryElementwiseOp):
    name = "graph.sqrt"
    evaluate = elementwise(np.sqrt)


@irdl_op_definition
class ErfOp(UnaryElementwiseOp):
    name = "graph.erf"
    evaluate = elementwise(numpy_eval.erf)


@irdl_op_definition
class NegOp(UnaryElementwiseOp):
    name = "graph.neg"
    evaluate = elementwise(np.negative)


@irdl_op_definition
class AbsOp(UnaryElementwiseOp):
    name = "graph.abs"
    evaluate = elementwise(np.abs)


@irdl_op_definition
class ReciprocalOp(UnaryElementwiseOp):
    name = "graph.reciprocal"
    evaluate = elementwise(numpy_eval.reciprocal)


@irdl_op_definition
class IdentityOp(UnaryElementwiseOp):
    name = "graph.identity"
    evaluate = elementwise(numpy_eval.identity)


@irdl_op_definition
class ClipOp(UnaryElementwiseOp):
    """min(max(x, min), max), NaN-propagating. A missing bound of a float clip is the element
    type's lowest / largest finite value (ONNX's numeric_limits defaults, as onnxruntime does),
    so +-inf become +-max; of an integer clip, no bound (`numpy_eval.clip_bounds`)."""

    name = "graph.clip"
    min = opt_prop_def(FloatAttr)
    max = opt_prop_def(FloatAttr)
    irdl_options = (ParsePropInAttrDict(),)

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.clip(inputs[0], _value(self.min), _value(self.max))  # type: ignore[arg-type]


@irdl_op_definition
class LeakyReluOp(UnaryElementwiseOp):
    name = "graph.leaky_relu"
    alpha = prop_def(FloatAttr)
    irdl_options = (ParsePropInAttrDict(),)

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.leaky_relu(inputs[0], self.alpha.value.data)  # type: ignore[arg-type]


# A graph.cast<int32> whose float32 input the frontend could not prove exact (MatMulInteger
# sums that may pass 2^24): quantize-ops replaces the pair by the integer kernel; one left for
# the float fallback is refused when lowered, with the frontend's reason. The value is
# [op_type, node name, opset, detail].
INTEGER_ONLY = "ember.integer_only"


def mark_integer_only(op: Operation, op_type: str, node_name: str, opset: int, detail: str) -> None:
    op.attributes[INTEGER_ONLY] = ArrayAttr(
        [StringAttr(op_type), StringAttr(node_name), StringAttr(str(opset)), StringAttr(detail)]
    )


def integer_only_reason(op: Operation) -> tuple[str, str, int, str] | None:
    """(op_type, node name, opset, detail) of a mark_integer_only op, else None."""
    marked = op.attributes.get(INTEGER_ONLY)
    if not isinstance(marked, ArrayAttr):
        return None
    op_type, node_name, opset, detail = (a.data for a in marked.data)  # type: ignore[attr-defined]
    return op_type, node_name, int(opset), detail


@irdl_op_definition
class CastOp(IRDLOperation):
    """Element type conversion (ONNX Cast); the target type is the result's element type.
    `no_saturate` (ONNX saturate=0) and `round_mode` ("up", "nearest", "down"; absent is "up")
    matter only for a float8 result, resp. a float8e8m0 one (dialects/small_types.py)."""

    name = "graph.cast"
    ROUND_MODES: ClassVar[tuple[str, ...]] = small_types.ROUND_MODES
    input = operand_def(TensorType)
    output = result_def(TensorType)
    no_saturate = opt_prop_def(UnitAttr)
    round_mode = opt_prop_def(StringAttr)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = tensor_format("input")

    def verify_(self) -> None:
        _verify_same_shape(self, self.input, self.output)
        verify_enum(self, "round_mode", self.ROUND_MODES)

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        round_mode = "up" if self.round_mode is None else self.round_mode.data
        saturate = self.no_saturate is None
        to = numpy_eval.result_dtype(self.output)
        return small_types.cast_array(inputs[0], to, saturate, round_mode)  # type: ignore[arg-type]


class BinaryElementwiseOp(IRDLOperation):
    """f(lhs, rhs) with ONNX multidirectional broadcasting."""

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = tensor_format("lhs", "rhs")

    def __init__(self, lhs: SSAValue | Operation, rhs: SSAValue | Operation):
        lhs, rhs = SSAValue.get(lhs), SSAValue.get(rhs)
        shape = broadcast_shapes(shape_of(lhs), shape_of(rhs))
        out_type = TensorType(element_type_of(lhs), shape)
        super().__init__(operands=[lhs, rhs], result_types=[out_type])

    def verify_(self) -> None:
        try:
            expected = broadcast_shapes(shape_of(self.lhs), shape_of(self.rhs))
        except ValueError as err:
            raise VerifyException(f"{self.name}: {err}") from err
        if expected != shape_of(self.output):
            raise VerifyException(
                f"{self.name}: result shape {shape_of(self.output)} != broadcast {expected}"
            )


@irdl_op_definition
class AddOp(BinaryElementwiseOp):
    name = "graph.add"
    evaluate = elementwise(np.add)


@irdl_op_definition
class SubOp(BinaryElementwiseOp):
    name = "graph.sub"
    evaluate = elementwise(np.subtract)


@irdl_op_definition
class MulOp(BinaryElementwiseOp):
    name = "graph.mul"
    evaluate = elementwise(np.multiply)


@irdl_op_definition
class DivOp(BinaryElementwiseOp):
    name = "graph.div"
    evaluate = elementwise(numpy_eval.div)


@irdl_op_definition
class PowOp(BinaryElementwiseOp):
    name = "graph.pow"
    evaluate = elementwise(np.power)


@irdl_op_definition
class MaxOp(BinaryElementwiseOp):
    name = "graph.max"
    evaluate = elementwise(np.maximum)


@irdl_op_definition
class MinOp(BinaryElementwiseOp):
    name = "graph.min"
    evaluate = elementwise(np.minimum)


# Elementwise ops of the comparison/logic/integer family. Logical ops on i1 and bitwise ops on
# integers are the same arith op, so graph.and/or/xor/not serve both ONNX families.


@irdl_op_definition
class CompareOp(BinaryElementwiseOp):
    """lhs <predicate> rhs -> i1; predicate is eq, lt, le, gt or ge."""

    name = "graph.compare"
    PREDICATES: ClassVar[tuple[str, ...]] = ("eq", "lt", "le", "gt", "ge")
    predicate = prop_def(StringAttr)
    irdl_options = (ParsePropInAttrDict(),)

    def verify_(self) -> None:
        super().verify_()
        verify_enum(self, "predicate", self.PREDICATES)

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.compare(*inputs, self.predicate.data)  # type: ignore[misc]


@irdl_op_definition
class AndOp(BinaryElementwiseOp):
    name = "graph.and"
    evaluate = elementwise(np.bitwise_and)


@irdl_op_definition
class OrOp(BinaryElementwiseOp):
    name = "graph.or"
    evaluate = elementwise(np.bitwise_or)


@irdl_op_definition
class XorOp(BinaryElementwiseOp):
    name = "graph.xor"
    evaluate = elementwise(np.bitwise_xor)


@irdl_op_definition
class ModOp(BinaryElementwiseOp):
    """Remainder: fmod=1 takes the dividend's sign (C fmod), fmod=0 the divisor's (Python %)."""

    name = "graph.mod"
    fmod = prop_def(IntegerAttr[I64])
    irdl_options = (ParsePropInAttrDict(),)

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.mod(*inputs, bool(self.fmod.value.data))  # type: ignore[misc]


@irdl_op_definition
class BitShiftOp(BinaryElementwiseOp):
    """lhs shifted by rhs bits; direction is left or right (logical: ONNX shifts unsigned ints)."""

    name = "graph.bitshift"
    DIRECTIONS: ClassVar[tuple[str, ...]] = ("left", "right")
    direction = prop_def(StringAttr)
    irdl_options = (ParsePropInAttrDict(),)

    def verify_(self) -> None:
        super().verify_()
        verify_enum(self, "direction", self.DIRECTIONS)

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.bitshift(*inputs, self.direction.data)  # type: ignore[misc]


@irdl_op_definition
class NotOp(UnaryElementwiseOp):
    """Logical not on i1, bitwise not on integers."""

    name = "graph.not"
    evaluate = elementwise(np.invert)


@irdl_op_definition
class SignOp(UnaryElementwiseOp):
    name = "graph.sign"
    evaluate = elementwise(np.sign)


@irdl_op_definition
class FloorOp(UnaryElementwiseOp):
    name = "graph.floor"
    evaluate = elementwise(np.floor)


@irdl_op_definition
class CeilOp(UnaryElementwiseOp):
    name = "graph.ceil"
    evaluate = elementwise(np.ceil)


@irdl_op_definition
class RoundOp(UnaryElementwiseOp):
    """Round half to even (ONNX Round)."""

    name = "graph.round"
    evaluate = elementwise(np.round)


@irdl_op_definition
class SoftplusOp(UnaryElementwiseOp):
    name = "graph.softplus"
    evaluate = elementwise(numpy_eval.softplus)


@irdl_op_definition
class TrigOp(UnaryElementwiseOp):
    """A trigonometric or hyperbolic function of a float: `fn` is sin, cos, tan, asin, acos,
    atan, sinh, cosh, asinh, acosh or atanh."""

    name = "graph.trig"
    FUNCTIONS: ClassVar[tuple[str, ...]] = (
        *("sin", "cos", "tan", "asin", "acos", "atan"),
        *("sinh", "cosh", "asinh", "acosh", "atanh"),
    )
    fn = prop_def(StringAttr)
    irdl_options = (ParsePropInAttrDict(),)

    def verify_(self) -> None:
        super().verify_()
        verify_enum(self, "fn", self.FUNCTIONS)

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.trig(inputs[0], self.fn.data)  # type: ignore[arg-type]


@irdl_op_definition
class IsNaNOp(UnaryElementwiseOp):
    """x != x -> i1."""

    name = "graph.isnan"
    evaluate = elementwise(np.isnan)


@irdl_op_definition
class IsInfOp(UnaryElementwiseOp):
    """|x| == inf -> i1, restricted to one sign when detect_positive/detect_negative is 0."""

    name = "graph.isinf"
    detect_positive = prop_def(IntegerAttr[I64])
    detect_negative = prop_def(IntegerAttr[I64])
    irdl_options = (ParsePropInAttrDict(),)

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        positive, negative = self.detect_positive.value.data, self.detect_negative.value.data
        return numpy_eval.isinf(inputs[0], bool(positive), bool(negative))  # type: ignore[arg-type]


@irdl_op_definition
class BitcastOp(UnaryElementwiseOp):
    """Reinterprets each element's bits as the result's element type of the same width."""

    name = "graph.bitcast"

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return inputs[0].view(numpy_eval.result_dtype(self.output))  # type: ignore[union-attr]


@irdl_op_definition
class WhereOp(IRDLOperation):
    """cond ? lhs : rhs (i1 condition), all three broadcast together (ONNX Where)."""

    name = "graph.where"
    condition = operand_def(TensorType)
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = tensor_format("condition", "lhs", "rhs")
    evaluate = elementwise(np.where)

    def verify_(self) -> None:
        _verify_broadcast_result(self, [self.condition, self.lhs, self.rhs], self.output)


def _verify_broadcast_result(op: Operation, operands: Sequence[SSAValue], result: SSAValue) -> None:
    """The result's shape is the operands' shapes broadcast together."""
    try:
        expected = broadcast_shapes(*(shape_of(v) for v in operands))
    except ValueError as err:
        raise VerifyException(f"{op.name}: {err}") from err
    if expected != shape_of(result):
        raise VerifyException(f"{op.name}: result shape {shape_of(result)} != broadcast {expected}")


class _TernaryBroadcastOp(IRDLOperation):
    """Three operands broadcast together to the result's shape."""

    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    zero_point = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = tensor_format("input", "scale", "zero_point")

    def verify_(self) -> None:
        _verify_broadcast_result(self, [self.input, self.scale, self.zero_point], self.output)


@irdl_op_definition
class QuantizeLinearOp(_TernaryBroadcastOp):
    """saturate(round_half_even(input / scale) + zero_point) in the result's integer type,
    computed in float32; NaN gives the type's minimum (as onnxruntime). A graph op of its own
    so that no rewrite turns the division into a multiplication by 1 / scale."""

    name = "graph.quantize_linear"

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.quantize_linear(*inputs, numpy_eval.result_dtype(self.output))  # type: ignore[misc]


@irdl_op_definition
class DequantizeLinearOp(_TernaryBroadcastOp):
    """(input - zero_point) * scale in float32 (the subtraction in int32 for int32 input),
    rounded once to the result's float type; exact in the differences, unlike the
    (x - zp) * s -> x * s - zp * s rewrite of separate ops."""

    name = "graph.dequantize_linear"

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.dequantize_linear(*inputs, numpy_eval.result_dtype(self.output))  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Contractions (with fusable epilogue)


@irdl_op_definition
class ConvOp(IRDLOperation):
    """2-D convolution, NCHW input, OIHW weight (ONNX Conv), with an optional fused epilogue.
    Rank-5 input, output and residual are channel-blocked [N, C/c, H, W, c] (blocked-layout
    pass)."""

    name = "graph.conv"
    traits = traits_def(Pure())
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    residual = opt_operand_def(TensorType)
    output = result_def(TensorType)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)  # [top, left, bottom, right]
    dilations = prop_def(DenseArrayBase)
    group = prop_def(IntegerAttr[I64])
    activation = opt_prop_def(StringAttr)
    activation_params = opt_prop_def(DenseArrayBase)
    irdl_options = (ParsePropInAttrDict(), AttrSizedOperandSegments(as_property=True))
    custom_directives = (TypeIfPresent,)
    assembly_format = (
        "$input `,` $weight (`bias` $bias^)? (`residual` $residual^)? attr-dict `:` "
        "type($input) `,` type($weight) custom<TypeIfPresent>(ref($bias), type($bias)) "
        "custom<TypeIfPresent>(ref($residual), type($residual)) "
        "`->` type($output)"
    )

    def verify_(self) -> None:
        x, w, y = shape_of(self.input), shape_of(self.weight), shape_of(self.output)
        if len(x) == len(y) == 5:  # channel-blocked [N, C/c, H, W, c] (blocked-layout pass)
            if x[4] != y[4] or self.group.value.data not in (1, x[1] * x[4]):
                raise VerifyException(
                    f"graph.conv: channel-blocked input {x} and output {y} need one block "
                    "size and group 1 or depthwise"
                )
            x, y = (x[0], x[1] * x[4], x[2], x[3]), (y[0], y[1] * y[4], y[2], y[3])
        if len(x) != 4 or len(w) != 4 or len(y) != 4:
            raise VerifyException("graph.conv: only 2-D convolution (rank-4 NCHW) is supported")
        group = self.group.value.data
        if x[1] != w[1] * group:
            raise VerifyException(
                f"graph.conv: input channels {x[1]} != weight in-channels {w[1]} x group {group}"
            )
        if y[1] != w[0] or y[0] != x[0]:
            raise VerifyException(f"graph.conv: output shape {y} does not match weight {w}")
        if self.bias is not None and shape_of(self.bias) != (w[0],):
            raise VerifyException(f"graph.conv: bias shape {shape_of(self.bias)} != ({w[0]},)")
        verify_epilogue(self)

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        x, w, bias, residual = inputs
        out = shape_of(self.output)
        if len(out) == 5:  # channel-blocked: the NCHW conv between reorders
            nchw = [None if v is None else numpy_eval.from_blocked(v) for v in (x, residual)]
            y = self.nchw_evaluate([nchw[0], w, bias, nchw[1]], out[2:4])
            return numpy_eval.to_blocked(y, out[4])
        return self.nchw_evaluate(inputs, out[2:])

    def nchw_evaluate(self, inputs: Inputs, out_hw: Sequence[int]) -> np.ndarray:
        x, w, bias, residual = inputs
        y = numpy_eval.conv2d(
            x,  # type: ignore[arg-type]
            w,  # type: ignore[arg-type]
            int_values(self.strides),
            int_values(self.pads),
            int_values(self.dilations),
            self.group.value.data,
            out_hw,
        )
        bias = None if bias is None else bias.reshape(-1, 1, 1)
        return numpy_eval.epilogue(y, bias, residual, *activation_of(self))


@irdl_op_definition
class GemmOp(IRDLOperation):
    """ONNX Gemm: alpha * op(A) @ op(B) + beta * C. Canonicalized to graph.matmul."""

    name = "graph.gemm"
    traits = traits_def(Pure())
    a = operand_def(TensorType)
    b = operand_def(TensorType)
    c = opt_operand_def(TensorType)
    output = result_def(TensorType)
    alpha = prop_def(FloatAttr)
    beta = prop_def(FloatAttr)
    trans_a = prop_def(IntegerAttr[I64])
    trans_b = prop_def(IntegerAttr[I64])
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$a `,` $b (`,` $c^)? attr-dict `:` type($a) `,` type($b) (`,` type($c)^)? "
        "`->` type($output)"
    )

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        alpha, beta = self.alpha.value.data, self.beta.value.data
        transposed = bool(self.trans_a.value.data), bool(self.trans_b.value.data)
        return numpy_eval.gemm(*inputs, alpha, beta, *transposed)  # type: ignore[misc]


@irdl_op_definition
class MatMulOp(IRDLOperation):
    """Batched matmul with numpy broadcasting of batch dims, optional fused epilogue.

    `bias` broadcasts against the output (typically shape [N]).
    """

    name = "graph.matmul"
    traits = traits_def(Pure())
    a = operand_def(TensorType)
    b = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    residual = opt_operand_def(TensorType)
    output = result_def(TensorType)
    activation = opt_prop_def(StringAttr)
    activation_params = opt_prop_def(DenseArrayBase)
    irdl_options = (ParsePropInAttrDict(), AttrSizedOperandSegments(as_property=True))
    custom_directives = (TypeIfPresent,)
    assembly_format = (
        "$a `,` $b (`bias` $bias^)? (`residual` $residual^)? attr-dict `:` "
        "type($a) `,` type($b) custom<TypeIfPresent>(ref($bias), type($bias)) "
        "custom<TypeIfPresent>(ref($residual), type($residual)) "
        "`->` type($output)"
    )

    def verify_(self) -> None:
        a, b, y = shape_of(self.a), shape_of(self.b), shape_of(self.output)
        if len(a) < 2 or len(b) < 2:
            raise VerifyException("graph.matmul: operands must have rank >= 2")
        if a[-1] != b[-2]:
            raise VerifyException(f"graph.matmul: contraction mismatch {a} @ {b}")
        try:
            batch = broadcast_shapes(a[:-2], b[:-2])
        except ValueError as err:
            raise VerifyException(f"graph.matmul: {err}") from err
        if y != (*batch, a[-2], b[-1]):
            raise VerifyException(f"graph.matmul: output {y} != {(*batch, a[-2], b[-1])}")
        verify_epilogue(self)

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        a, b, bias, residual = inputs
        y = numpy_eval.matmul(a, b)  # type: ignore[arg-type]
        return numpy_eval.epilogue(y, bias, residual, *activation_of(self))


# ---------------------------------------------------------------------------------------------
# Normalization, pooling, reductions


@irdl_op_definition
class BatchNormOp(IRDLOperation):
    """Inference-mode BatchNormalization over axis 1."""

    name = "graph.batch_norm"
    traits = traits_def(Pure())
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    bias = operand_def(TensorType)
    mean = operand_def(TensorType)
    var = operand_def(TensorType)
    output = result_def(TensorType)
    epsilon = prop_def(FloatAttr)
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = tensor_format("input", "scale", "bias", "mean", "var")

    def verify_(self) -> None:
        _verify_same_shape(self, self.input, self.output)
        channels = shape_of(self.input)[1]
        for operand in (self.scale, self.bias, self.mean, self.var):
            if shape_of(operand) != (channels,):
                raise VerifyException(f"graph.batch_norm: parameter shape != ({channels},)")

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.batch_norm(*inputs, eps=self.epsilon.value.data)  # type: ignore[misc]


class SameShapeSpec(TwinSpec):
    """A twin whose output has its input's shape."""

    def verify_(self) -> None:
        _verify_same_shape(self, self.input, self.output)  # type: ignore[attr-defined, arg-type]


class LayerNormSpec(SameShapeSpec):
    """LayerNormalization over axes [axis, rank) (graph.layer_norm, kernel.layer_norm)."""

    axis = prop_def(IntegerAttr[I64])
    epsilon = prop_def(FloatAttr)

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        x, scale, bias = inputs[:3]
        axis, eps = self.axis.value.data, self.epsilon.value.data
        return numpy_eval.layer_norm(x, scale, bias, axis, eps)  # type: ignore[arg-type]


@irdl_op_definition
class LayerNormOp(LayerNormSpec, IRDLOperation):
    """LayerNormalization over axes [axis, rank)."""

    name = "graph.layer_norm"
    traits = traits_def(Pure())
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$input `,` $scale (`,` $bias^)? attr-dict `:` type($input) `,` type($scale) "
        "(`,` type($bias)^)? `->` type($output)"
    )


class LRNSpec(SameShapeSpec):
    """Local response normalization across channels (graph.lrn, kernel.lrn)."""

    size = prop_def(IntegerAttr[I64])
    alpha = prop_def(FloatAttr)
    beta = prop_def(FloatAttr)
    bias = prop_def(FloatAttr)

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        alpha, beta, bias = (a.value.data for a in (self.alpha, self.beta, self.bias))
        return numpy_eval.lrn(inputs[0], self.size.value.data, alpha, beta, bias)  # type: ignore[arg-type]


@irdl_op_definition
class LRNOp(LRNSpec, _InOutOp):
    """Local response normalization across channels (ONNX LRN)."""

    name = "graph.lrn"


class SoftmaxSpec(SameShapeSpec):
    """Softmax (or, with `log`, LogSoftmax) along one axis (graph.softmax, kernel.softmax)."""

    axis = prop_def(IntegerAttr[I64])
    log = opt_prop_def(UnitAttr)  # LogSoftmax

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.softmax(inputs[0], self.axis.value.data, self.log is not None)  # type: ignore[arg-type]


@irdl_op_definition
class SoftmaxOp(SoftmaxSpec, _InOutOp):
    """Softmax along one axis (opset-13 semantics; older opsets are rewritten by the frontend)."""

    name = "graph.softmax"


class PoolOp(_InOutOp):
    kernel_shape = prop_def(DenseArrayBase)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)  # [top, left, bottom, right]

    def verify_(self) -> None:
        x, y = shape_of(self.input), shape_of(self.output)
        blocked = len(x) == len(y) == 5 and x[4] == y[4]  # [N, C/c, H, W, c]: blocked-layout
        if (len(x) != 4 and not blocked) or len(y) != len(x) or x[:2] != y[:2]:
            raise VerifyException(f"{self.name}: expected NCHW in/out with equal N, C: {x} {y}")

    def pool(self, x: np.ndarray, kind: str, count_include_pad: bool = False) -> np.ndarray:
        """numpy_eval.pool2d with this op's window (of the NCHW form of a blocked input)."""
        window = (int_values(a) for a in (self.kernel_shape, self.strides, self.pads))
        out = shape_of(self.output)
        nchw = numpy_eval.from_blocked(x) if len(out) == 5 else x
        y = numpy_eval.pool2d(nchw, kind, *window, out[2:4], count_include_pad)
        return numpy_eval.to_blocked(y, out[4]) if len(out) == 5 else y


@irdl_op_definition
class MaxPoolOp(PoolOp):
    name = "graph.max_pool"

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return self.pool(inputs[0], "max")  # type: ignore[arg-type]


@irdl_op_definition
class AveragePoolOp(PoolOp):
    name = "graph.average_pool"
    count_include_pad = prop_def(IntegerAttr[I64])

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return self.pool(inputs[0], "avg", bool(self.count_include_pad.value.data))  # type: ignore[arg-type]


@irdl_op_definition
class ReduceOp(_InOutOp):
    """Reduction over `axes` (kind: sum, mean, max, min, prod); GlobalAveragePool is a mean."""

    name = "graph.reduce"
    KINDS: ClassVar[tuple[str, ...]] = ("sum", "mean", "max", "min", "prod")
    reduction = prop_def(StringAttr)
    axes = prop_def(DenseArrayBase)
    keepdims = prop_def(IntegerAttr[I64])

    def verify_(self) -> None:
        verify_enum(self, "reduction", self.KINDS)

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        reduction, keepdims = self.reduction.data, bool(self.keepdims.value.data)
        return numpy_eval.reduce(inputs[0], reduction, int_values(self.axes), keepdims)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Data movement


@irdl_op_definition
class ReshapeOp(IRDLOperation):
    """Reshape to the (static) result type; covers Reshape, Flatten, Squeeze, Unsqueeze."""

    name = "graph.reshape"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = tensor_format("input")

    def verify_(self) -> None:
        import math

        if math.prod(shape_of(self.input)) != math.prod(shape_of(self.output)):
            raise VerifyException(
                f"graph.reshape: {shape_of(self.input)} -> {shape_of(self.output)} "
                "changes the element count"
            )

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return inputs[0].reshape(shape_of(self.output))  # type: ignore[union-attr]


class TransposeSpec(TwinSpec):
    """graph.transpose and kernel.transpose: output = input with its axes permuted."""

    perm = prop_def(DenseArrayBase)

    def verify_(self) -> None:
        x, y, perm = shape_of(self.input), shape_of(self.output), int_values(self.perm)
        if sorted(perm) != list(range(len(x))) or tuple(x[p] for p in perm) != y:
            raise VerifyException(f"{self.name}: perm {perm} maps {x} not to {y}")

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return np.transpose(inputs[0], int_values(self.perm))  # type: ignore[arg-type]


@irdl_op_definition
class TransposeOp(TransposeSpec, _InOutOp):
    name = "graph.transpose"


class ConcatSpec(TwinSpec):
    """graph.concat and kernel.concat: the inputs joined along `axis`."""

    axis = prop_def(IntegerAttr[I64])

    def verify_(self) -> None:
        axis = self.axis.value.data
        y = shape_of(self.output)
        total = 0
        for operand in self.inputs:
            s = shape_of(operand)
            if len(s) != len(y) or any(s[i] != y[i] for i in range(len(y)) if i != axis):
                raise VerifyException(f"{self.name}: input {s} incompatible with output {y}")
            total += s[axis]
        if total != y[axis]:
            raise VerifyException(f"{self.name}: inputs sum to {total} along axis {axis}")

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return np.concatenate(list(inputs), axis=self.axis.value.data)  # type: ignore[arg-type]


@irdl_op_definition
class ConcatOp(ConcatSpec, IRDLOperation):
    name = "graph.concat"
    inputs = var_operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$inputs attr-dict `:` type($inputs) `->` type($output)"


class GatherSpec(TwinSpec):
    """ONNX Gather: out = take(data, indices, axis) (graph.gather, kernel.gather)."""

    axis = prop_def(IntegerAttr[I64])

    def verify_(self) -> None:
        d, i, y = shape_of(self.data), shape_of(self.indices), shape_of(self.output)  # type: ignore[attr-defined]
        axis = self.axis.value.data
        if y != (*d[:axis], *i, *d[axis + 1 :]):
            raise VerifyException(f"{self.name}: output {y} != data {d} gathered by {i}")  # type: ignore[attr-defined]

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.gather(inputs[0], inputs[1], self.axis.value.data)  # type: ignore[arg-type]


@irdl_op_definition
class GatherOp(GatherSpec, _DataIndicesOp):
    """ONNX Gather: out = take(data, indices, axis); indices are i64 (or i32)."""

    name = "graph.gather"


# ---------------------------------------------------------------------------------------------
# Structural ops (slices, broadcasts, index reductions, scans)


class SliceSpec(TwinSpec):
    """graph.slice and kernel.slice (see SliceOp)."""

    starts = prop_def(DenseArrayBase)
    steps = prop_def(DenseArrayBase)

    def verify_(self) -> None:
        verify_slice(self, shape_of(self.input), shape_of(self.output), self.starts, self.steps)

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        starts, steps = int_values(self.starts), int_values(self.steps)
        return numpy_eval.strided_slice(inputs[0], starts, steps, shape_of(self.output))  # type: ignore[arg-type]


@irdl_op_definition
class SliceOp(SliceSpec, _InOutOp):
    """out[i] = input[starts + i * steps] per axis; the result type gives the counts."""

    name = "graph.slice"


def verify_slice(
    op: Operation,
    x: tuple[int, ...],
    y: tuple[int, ...],
    starts_attr: DenseArrayBase,
    steps_attr: DenseArrayBase,
) -> None:
    """Every index a slice reads lies inside the input (shared by graph and kernel slices)."""
    starts, steps = int_values(starts_attr), int_values(steps_attr)
    if not len(x) == len(y) == len(starts) == len(steps):
        raise VerifyException(f"{op.name}: starts/steps/shapes differ in rank")
    for d, (size, count, start, step) in enumerate(zip(x, y, starts, steps)):
        last = start + (count - 1) * step
        if step == 0 or count < 1 or not (0 <= start < size and 0 <= last < size):
            raise VerifyException(
                f"{op.name}: axis {d} reads {count} elements from {start} by {step} "
                f"outside size {size}"
            )


@irdl_op_definition
class ExpandOp(IRDLOperation):
    """Broadcast the input to the result shape (ONNX Expand)."""

    name = "graph.expand"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = tensor_format("input")

    def verify_(self) -> None:
        if not broadcasts_to(shape_of(self.input), shape_of(self.output)):
            raise VerifyException(
                f"graph.expand: {shape_of(self.input)} does not broadcast to "
                f"{shape_of(self.output)}"
            )

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return np.broadcast_to(inputs[0], shape_of(self.output)).copy()  # type: ignore[arg-type]


class RangeSpec(TwinSpec):
    """graph.range and kernel.range (see RangeOp)."""

    def verify_(self) -> None:
        if len(shape_of(self.output)) != 1:
            raise VerifyException(f"{self.name}: output {shape_of(self.output)} is not 1-D")
        for operand in (self.start, self.delta):
            if shape_of(operand) != (1,) or element_type_of(operand) != element_type_of(
                self.output
            ):
                raise VerifyException(
                    f"{self.name}: start and delta must be 1-element tensors of the output's type"
                )

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.arange(inputs[0], inputs[1], shape_of(self.output)[0])  # type: ignore[arg-type]


@irdl_op_definition
class RangeOp(RangeSpec, IRDLOperation):
    """output[i] = start + i * delta (ONNX Range with its length known): a kernel, so that
    a long range costs its length in memory at run time, not at compile time."""

    name = "graph.range"
    start = operand_def(TensorType)
    delta = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = tensor_format("start", "delta")


class ArgReduceSpec(TwinSpec):
    """graph.arg_reduce and kernel.arg_reduce (see ArgReduceOp)."""

    KINDS: ClassVar[tuple[str, ...]] = ("max", "min")
    kind = prop_def(StringAttr)
    axis = prop_def(IntegerAttr[I64])
    select_last_index = prop_def(IntegerAttr[I64])

    def verify_(self) -> None:
        x, y, axis = shape_of(self.input), shape_of(self.output), self.axis.value.data
        verify_enum(self, "kind", self.KINDS)  # type: ignore[arg-type]
        if not 0 <= axis < len(x) or y != tuple(1 if i == axis else d for i, d in enumerate(x)):
            raise VerifyException(f"{self.name}: output {y} != {x} reduced along {axis}")
        if element_type_of(self.output) != i64:
            raise VerifyException(f"{self.name}: result must be i64")

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        axis, last = self.axis.value.data, bool(self.select_last_index.value.data)
        return numpy_eval.arg_reduce(inputs[0], self.kind.data, axis, last)  # type: ignore[arg-type]


@irdl_op_definition
class ArgReduceOp(ArgReduceSpec, _InOutOp):
    """ArgMax/ArgMin (kind max|min) along `axis`; the i64 result keeps the axis as size 1."""

    name = "graph.arg_reduce"


class CumSumSpec(TwinSpec):
    """graph.cumsum and kernel.cumsum (see CumSumOp)."""

    axis = prop_def(IntegerAttr[I64])
    exclusive = prop_def(IntegerAttr[I64])
    reverse = prop_def(IntegerAttr[I64])
    product = opt_prop_def(UnitAttr)

    def verify_(self) -> None:
        _verify_same_shape(self, self.input, self.output)
        if not 0 <= self.axis.value.data < len(shape_of(self.input)):
            raise VerifyException(f"{self.name}: axis {self.axis.value.data} out of range")

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        flags = (bool(a.value.data) for a in (self.exclusive, self.reverse))
        product = self.product is not None
        return numpy_eval.cumsum(inputs[0], self.axis.value.data, *flags, product)  # type: ignore[arg-type]


@irdl_op_definition
class CumSumOp(CumSumSpec, _InOutOp):
    """Running sum (or, with `product`, product) along `axis` (ONNX CumSum/CumProd with their
    exclusive/reverse flags)."""

    name = "graph.cumsum"


class GatherElementsSpec(TwinSpec):
    """graph.gather_elements and kernel.gather_elements (see GatherElementsOp)."""

    axis = prop_def(IntegerAttr[I64])
    ignore_index = opt_prop_def(IntegerAttr[I64])

    def verify_(self) -> None:
        verify_gather_elements(self, shape_of(self.data), shape_of(self.indices))  # type: ignore[attr-defined, arg-type]
        _verify_same_shape(self, self.indices, self.output)  # type: ignore[attr-defined, arg-type]

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        ignore = _value(self.ignore_index)
        return numpy_eval.gather_elements(*inputs[:2], self.axis.value.data, ignore)  # type: ignore[arg-type, misc]


@irdl_op_definition
class GatherElementsOp(GatherElementsSpec, _DataIndicesOp):
    """out[i] = data[i with axis coordinate indices[i]] (ONNX GatherElements).

    Data dims of size 1 broadcast against the indices. With `ignore_index`, positions whose
    index equals it produce 0 (the masking NegativeLogLikelihoodLoss needs).
    """

    name = "graph.gather_elements"


def verify_gather_elements(op: Operation, data: tuple[int, ...], indices: tuple[int, ...]) -> None:
    axis = op.axis.value.data  # type: ignore[attr-defined]
    if len(data) != len(indices) or not 0 <= axis < len(data):
        raise VerifyException(f"{op.name}: data {data} and indices {indices} with axis {axis}")
    for d, (n, m) in enumerate(zip(data, indices)):
        if d != axis and n not in (1, m):
            raise VerifyException(f"{op.name}: data dim {d} ({n}) does not fit indices ({m})")


class OneHotSpec(TwinSpec):
    """graph.one_hot and kernel.one_hot (see OneHotOp)."""

    axis = prop_def(IntegerAttr[I64])

    def verify_(self) -> None:
        x, y, axis = shape_of(self.indices), shape_of(self.output), self.axis.value.data  # type: ignore[attr-defined]
        if not 0 <= axis < len(y) or y[:axis] + y[axis + 1 :] != x:
            raise VerifyException(f"{self.name}: output {y} is not indices {x} + axis {axis}")  # type: ignore[attr-defined]
        if shape_of(self.values) != (2,) or element_type_of(self.indices) != i64:  # type: ignore[attr-defined]
            raise VerifyException(f"{self.name}: needs i64 indices and values of shape (2,)")  # type: ignore[attr-defined]

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        axis = self.axis.value.data
        depth = shape_of(self.output)[axis]  # type: ignore[attr-defined]
        return numpy_eval.one_hot(*inputs[:2], depth, axis)  # type: ignore[arg-type, misc]


@irdl_op_definition
class OneHotOp(OneHotSpec, IRDLOperation):
    """values[1] where the position along `axis` equals the (i64) index, values[0] elsewhere.

    The result has the index shape with a `depth`-long axis inserted at `axis`; negative
    indices count from the end, out-of-range ones match nothing.
    """

    name = "graph.one_hot"
    indices = operand_def(TensorType)
    values = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = tensor_format("indices", "values")


class ScatterElementsSpec(TwinSpec):
    """graph.scatter_elements and kernel.scatter_elements (see ScatterElementsOp)."""

    REDUCTIONS: ClassVar[tuple[str, ...]] = ("none", "add", "mul", "max", "min")
    axis = prop_def(IntegerAttr[I64])
    reduction = prop_def(StringAttr)

    def verify_(self) -> None:
        _verify_same_shape(self, self.data, self.output)  # type: ignore[attr-defined, arg-type]
        _verify_same_shape(self, self.indices, self.updates)  # type: ignore[attr-defined, arg-type]
        verify_enum(self, "reduction", self.REDUCTIONS)  # type: ignore[arg-type]
        d, i = shape_of(self.data), shape_of(self.indices)  # type: ignore[attr-defined]
        axis = self.axis.value.data
        if len(d) != len(i) or any(k != axis and i[k] > d[k] for k in range(len(d))):
            raise VerifyException(f"{self.name}: indices {i} do not fit data {d}")  # type: ignore[attr-defined]

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        axis, reduction = self.axis.value.data, self.reduction.data
        return numpy_eval.scatter_elements(*inputs[:3], axis, reduction)  # type: ignore[arg-type, misc]


@irdl_op_definition
class ScatterElementsOp(ScatterElementsSpec, _ScatterOp):
    """data with updates[i] written (or combined: add|mul|max|min) at i's position, its axis
    coordinate replaced by indices[i] (ONNX ScatterElements); updates apply in order."""

    name = "graph.scatter_elements"


class TopKSpec(TwinSpec):
    """graph.top_k and kernel.top_k (see TopKOp)."""

    axis = prop_def(IntegerAttr[I64])
    largest = prop_def(IntegerAttr[I64])

    def verify_(self) -> None:
        x, y, axis = shape_of(self.input), shape_of(self.output), self.axis.value.data
        if len(x) != len(y) or not 0 <= axis < len(x) or not 1 <= y[axis] <= x[axis]:
            raise VerifyException(f"{self.name}: output {y} does not select from {x}")
        if any(x[d] != y[d] for d in range(len(x)) if d != axis):
            raise VerifyException(f"{self.name}: output {y} does not select from {x}")
        if element_type_of(self.output) != i64:
            raise VerifyException(f"{self.name}: result must be i64")

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        axis, largest = self.axis.value.data, bool(self.largest.value.data)
        k = shape_of(self.output)[axis]
        return numpy_eval.top_k_indices(inputs[0], k, axis, largest)  # type: ignore[arg-type]


@irdl_op_definition
class TopKOp(TopKSpec, _InOutOp):
    """i64 indices of the k largest (or smallest) elements along `axis`, best first, ties by
    lower index (ONNX TopK's indices; its values are a gather_elements of these)."""

    name = "graph.top_k"


class GatherNDSpec(TwinSpec):
    """graph.gather_nd and kernel.gather_nd (see GatherNDOp)."""

    batch_dims = prop_def(IntegerAttr[I64])

    def verify_(self) -> None:
        d, i, y = shape_of(self.data), shape_of(self.indices), shape_of(self.output)  # type: ignore[attr-defined]
        b = self.batch_dims.value.data
        if not i or d[:b] != i[:b] or b + i[-1] > len(d) or y != (*i[:-1], *d[b + i[-1] :]):
            raise VerifyException(f"{self.name}: data {d}, indices {i} -> output {y}")  # type: ignore[attr-defined]

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.gather_nd(*inputs[:2], self.batch_dims.value.data)  # type: ignore[arg-type, misc]


@irdl_op_definition
class GatherNDOp(GatherNDSpec, _DataIndicesOp):
    """ONNX GatherND: each index tuple (the last indices dim) picks a slice of data."""

    name = "graph.gather_nd"


class ScatterNDSpec(TwinSpec):
    """graph.scatter_nd and kernel.scatter_nd (see ScatterNDOp)."""

    reduction = prop_def(StringAttr)

    def verify_(self) -> None:
        _verify_same_shape(self, self.data, self.output)  # type: ignore[attr-defined, arg-type]
        d, i, u = shape_of(self.data), shape_of(self.indices), shape_of(self.updates)  # type: ignore[attr-defined]
        if not i or i[-1] > len(d) or u != (*i[:-1], *d[i[-1] :]):
            raise VerifyException(f"{self.name}: data {d}, indices {i}, updates {u}")  # type: ignore[attr-defined]
        verify_enum(self, "reduction", ScatterElementsSpec.REDUCTIONS)  # type: ignore[arg-type]

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.scatter_nd(*inputs[:3], self.reduction.data)  # type: ignore[arg-type, misc]


@irdl_op_definition
class ScatterNDOp(ScatterNDSpec, _ScatterOp):
    """ONNX ScatterND: data with each index tuple's slice replaced (or combined) by updates."""

    name = "graph.scatter_nd"


# ---------------------------------------------------------------------------------------------
# Recurrent layers

# Gates per cell (ONNX order: LSTM i, o, f, c; GRU z, r, h; RNN one) and activations per direction
# (LSTM f, g, h; GRU f, g; RNN f).
RECURRENT_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
RECURRENT_ACTIVATIONS = {"lstm": 3, "gru": 2, "rnn": 1}
RECURRENT_DIRECTIONS = ("forward", "reverse", "bidirectional")


def verify_recurrent(op: Operation, y: SSAValue, y_h: SSAValue, y_c: SSAValue | None) -> None:
    """Checks shared by graph.recurrent and kernel.recurrent (see RecurrentOp)."""
    verify_enum(op, "cell", tuple(RECURRENT_GATES))
    verify_enum(op, "direction", RECURRENT_DIRECTIONS)
    cell, direction = op.cell.data, op.direction.data  # type: ignore[attr-defined]
    gates = RECURRENT_GATES[cell]
    seq, dirs, batch, hidden = shape_of(y)
    if dirs != (2 if direction == "bidirectional" else 1):
        raise VerifyException(f"{op.name}: {dirs} directions in y for '{direction}'")
    expected = {
        "x_proj": (seq, batch, dirs * gates * hidden),
        "r": (dirs, gates, hidden, hidden),
        "recurrent_bias": (dirs, hidden),
        "sequence_lens": (batch,),
        "initial_h": (dirs, batch, hidden),
        "initial_c": (dirs, batch, hidden),
        "peepholes": (dirs, 3 * hidden),
    }
    for name, shape in expected.items():
        value = getattr(op, name)
        if value is not None and name != "r" and shape_of(value) != shape:
            raise VerifyException(f"{op.name}: {name} {shape_of(value)}, expected {shape}")
    r_shape = shape_of(op.r)  # type: ignore[attr-defined]
    if r_shape[:2] != (dirs, gates):
        raise VerifyException(f"{op.name}: r {r_shape} does not hold {dirs}x{gates} gates")
    if shape_of(y_h) != (dirs, batch, hidden):
        raise VerifyException(f"{op.name}: y_h {shape_of(y_h)} != {(dirs, batch, hidden)}")
    if (y_c is not None) != (cell == "lstm") or (
        y_c is not None and shape_of(y_c) != shape_of(y_h)
    ):
        raise VerifyException(f"{op.name}: y_c is the LSTM cell state, shaped like y_h")
    if (op.initial_c is not None or op.peepholes is not None) and cell != "lstm":  # type: ignore[attr-defined]
        raise VerifyException(f"{op.name}: initial_c and peepholes belong to an LSTM")
    per_direction = RECURRENT_ACTIVATIONS[cell]
    names = op.activations.data  # type: ignore[attr-defined]
    params = op.activation_params.get_values()  # type: ignore[attr-defined]
    if len(names) != dirs * per_direction or len(params) != 2 * len(names):
        raise VerifyException(
            f"{op.name}: {len(names)} activations and {len(params)} params for {dirs} "
            f"direction(s) of {per_direction} activation(s), each with (alpha, beta)"
        )


class RecurrentSpec(TwinSpec):
    """graph.recurrent and kernel.recurrent (see RecurrentOp)."""

    cell = prop_def(StringAttr)
    direction = prop_def(StringAttr)
    activations = prop_def(ArrayAttr)
    activation_params = prop_def(DenseArrayBase)
    clip = opt_prop_def(FloatAttr)
    input_forget = opt_prop_def(UnitAttr)
    linear_before_reset = opt_prop_def(UnitAttr)

    def verify_(self) -> None:
        verify_recurrent(self, self.y, self.y_h, self.y_c)


@irdl_op_definition
class RecurrentOp(RecurrentSpec, IRDLOperation):
    """ONNX LSTM / GRU / RNN after the input projection (layout 0: time major).

    `x_proj[t, b, (d, gate, j)]` is X @ W^T plus the biases that add before the recurrence;
    `r[d, gate]` is that gate's R^T ([hidden, hidden], rows = reduction index);
    `recurrent_bias[d]` is GRU's Rbh, applied inside r * (...) when linear_before_reset.
    Results: y [T, D, B, H] (zero past a sequence's length), y_h and y_c [D, B, H].
    `activation_params` holds (alpha, beta) per activation, defaults resolved.
    """

    name = "graph.recurrent"
    traits = traits_def(Pure())
    x_proj = operand_def(TensorType)
    r = operand_def(TensorType)
    recurrent_bias = opt_operand_def(TensorType)
    sequence_lens = opt_operand_def(TensorType)
    initial_h = opt_operand_def(TensorType)
    initial_c = opt_operand_def(TensorType)
    peepholes = opt_operand_def(TensorType)
    y = result_def(TensorType)
    y_h = result_def(TensorType)
    y_c = opt_result_def(TensorType)
    irdl_options = (
        ParsePropInAttrDict(),
        AttrSizedOperandSegments(as_property=True),
        AttrSizedResultSegments(as_property=True),
    )


# ---------------------------------------------------------------------------------------------
# Fused attention (built by passes/transforms/fuse_attention.py, never by the importer)


def attention_dims(
    op_name: str,
    q: Sequence[int],
    k_t: Sequence[int],
    v: Sequence[int],
    mask: Sequence[int] | None,
    out: Sequence[int],
    seq_major: Sequence[int],
) -> tuple[int, int, int, int, int, int]:
    """(B, H, Sq, Sk, D, Dv) of an attention op's operand shapes, or VerifyException.

    `seq_major` flags q, v and the output: 1 = stored [B, S, H, D], 0 = [B, H, S, D]."""

    def logical(shape: Sequence[int], flag: int) -> tuple[int, ...]:
        shape = tuple(shape)
        return (shape[0], shape[2], shape[1], shape[3]) if flag else shape

    if len(seq_major) != 3 or any(f not in (0, 1) for f in seq_major):
        raise VerifyException(f"{op_name}: seq_major must be 3 flags of 0/1, not {seq_major}")
    if any(len(s) != 4 for s in (q, k_t, v, out)) or (mask is not None and len(mask) != 4):
        raise VerifyException(f"{op_name}: operands must have rank 4")
    b, h, sq, d = logical(q, seq_major[0])
    sk, dv = logical(v, seq_major[1])[2:]
    if tuple(k_t) != (b, h, d, sk) or logical(v, seq_major[1])[:2] != (b, h):
        raise VerifyException(f"{op_name}: q {q}, k_t {k_t}, v {v} do not agree")
    if logical(out, seq_major[2]) != (b, h, sq, dv):
        raise VerifyException(f"{op_name}: output {out} != {(b, h, sq, dv)} (logical)")
    if mask is not None and (mask[3] != sk or not broadcasts_to(mask, (b, h, sq, sk))):
        raise VerifyException(f"{op_name}: mask {mask} does not broadcast to {(b, h, sq, sk)}")
    return b, h, sq, sk, d, dv


class AttentionSpec(TwinSpec):
    """graph.attention and kernel.attention (see AttentionOp)."""

    scale = prop_def(FloatAttr)
    seq_major = prop_def(DenseArrayBase)

    def verify_(self) -> None:
        mask = None if self.mask is None else shape_of(self.mask)
        attention_dims(
            self.name,
            *(shape_of(v) for v in (self.q, self.k_t, self.v)),
            mask,
            shape_of(self.output),
            int_values(self.seq_major),
        )

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        q, k_t, v, mask = inputs[:4]
        scale, seq_major = self.scale.value.data, int_values(self.seq_major)
        return numpy_eval.attention(q, k_t, v, mask, scale, seq_major)  # type: ignore[arg-type]


@irdl_op_definition
class AttentionOp(AttentionSpec, IRDLOperation):
    """softmax(scale * Q @ K^T + mask) @ V over the keys, per batch and head, as one op.

    q [B, H, Sq, D]; k_t [B, H, D, Sk] (K transposed, as exporters write it); v [B, H, Sk, Dv];
    `mask` (optional, added to the scaled scores) broadcasts to [B, H, Sq, Sk] and has Sk as
    its last dim; output [B, H, Sq, Dv]. `seq_major` flags q, v and the output stored as
    [B, S, H, D] instead (the head split's reshape, before its transpose).
    """

    name = "graph.attention"
    traits = traits_def(Pure())
    q = operand_def(TensorType)
    k_t = operand_def(TensorType)
    v = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    output = result_def(TensorType)
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$q `,` $k_t `,` $v (`mask` $mask^)? attr-dict `:` type($q) `,` type($k_t) `,` "
        "type($v) (`,` type($mask)^)? `->` type($output)"
    )


GRAPH_OPS: list[type[IRDLOperation]] = [
    ConstantOp,
    ReluOp,
    SigmoidOp,
    TanhOp,
    ExpOp,
    LogOp,
    SqrtOp,
    ErfOp,
    NegOp,
    AbsOp,
    ReciprocalOp,
    IdentityOp,
    ClipOp,
    LeakyReluOp,
    CastOp,
    AddOp,
    SubOp,
    MulOp,
    DivOp,
    PowOp,
    MaxOp,
    MinOp,
    CompareOp,
    AndOp,
    OrOp,
    XorOp,
    ModOp,
    BitShiftOp,
    NotOp,
    SignOp,
    FloorOp,
    CeilOp,
    RoundOp,
    SoftplusOp,
    TrigOp,
    IsNaNOp,
    IsInfOp,
    BitcastOp,
    WhereOp,
    QuantizeLinearOp,
    DequantizeLinearOp,
    ConvOp,
    GemmOp,
    MatMulOp,
    BatchNormOp,
    LayerNormOp,
    LRNOp,
    SoftmaxOp,
    MaxPoolOp,
    AveragePoolOp,
    ReduceOp,
    ReshapeOp,
    TransposeOp,
    ConcatOp,
    GatherOp,
    SliceOp,
    ExpandOp,
    RangeOp,
    ArgReduceOp,
    CumSumOp,
    GatherElementsOp,
    OneHotOp,
    ScatterElementsOp,
    TopKOp,
    GatherNDOp,
    ScatterNDOp,
    RecurrentOp,
    AttentionOp,
]
# --- int8: integer convolution (the quantize-ops pass; kernel_to_loops/qconv.py) -------------


RESIDUAL_PARAMS = (
    "conv_scale",
    "residual_scale",
    "residual_zero_point",
    "sum_scale",
    "sum_zero_point",
    "sum_min",
    "sum_max",
)


@irdl_op_definition
class QConvOp(IRDLOperation):
    """Quantized 2-D convolution with a fused requantize epilogue (NCHW, OIHW; `group` as
    ONNX Conv's, absent = 1; depthwise when group == input channels == output channels).

    `input` is uint8 or int8 with zero point `input_zero_point`; `weight` is a constant int8
    filter whose zero point is 0. With acc = sum over taps of (x - input_zero_point) * w in
    int32 (padding reads the zero point, i.e. a real 0), each output channel c is
    `clamp(round_half_even(float(acc + offset[c]) * multiplier[c] + bias[c])
    + output_zero_point, output_min, output_max)` in the output's 8-bit type; `offset` is an
    int32 correction folded at compile time, `multiplier` = x_scale * w_scale[c] / y_scale and
    `bias` the float bias / y_scale; `output_min`/`output_max` are the type's range narrowed by a
    fused Relu (max(q, output_zero_point)).

    With a `residual` (a fused QDQ Add, optionally followed by Relu), that q is the conv's
    quantized output as the model computes it, and the result is
    `clamp(round_half_even(((q - output_zero_point) * conv_scale + (residual -
    residual_zero_point) * residual_scale) / sum_scale) + sum_zero_point, sum_min, sum_max)`
    in the result's 8-bit type (`residual_params`).

    With an int32 output (no residual) there is no requantize: the result is acc + offset[c]
    itself (MatMulInteger; quantize-ops subtracts a run-time input zero point after it).
    """

    name = "graph.qconv"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    offset = operand_def(TensorType)
    multiplier = operand_def(TensorType)
    bias = operand_def(TensorType)
    residual = opt_operand_def(TensorType)
    output = result_def(TensorType)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)  # [top, left, bottom, right]
    dilations = prop_def(DenseArrayBase)
    input_zero_point = prop_def(IntegerAttr[I64])
    output_zero_point = prop_def(IntegerAttr[I64])
    output_min = prop_def(IntegerAttr[I64])
    output_max = prop_def(IntegerAttr[I64])
    # With `residual`: [conv_scale, residual_scale, residual_zero_point, sum_scale,
    # sum_zero_point, sum_min, sum_max] (RESIDUAL_PARAMS).
    residual_params = opt_prop_def(DenseArrayBase)
    group = opt_prop_def(IntegerAttr[I64])  # absent: 1
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(), AttrSizedOperandSegments(as_property=True))
    custom_directives = (TypeIfPresent,)
    assembly_format = (
        "$input `,` $weight `,` $offset `,` $multiplier `,` $bias (`residual` $residual^)? "
        "attr-dict `:` type($input) `,` type($weight) `,` type($offset) `,` "
        "type($multiplier) `,` type($bias) "
        "custom<TypeIfPresent>(ref($residual), type($residual)) `->` type($output)"
    )

    def verify_(self) -> None:
        x, w, y = shape_of(self.input), shape_of(self.weight), shape_of(self.output)
        group = self.group_count
        if len(x) != 4 or len(w) != 4 or len(y) != 4 or x[1] != w[1] * group or y[1] != w[0]:
            raise VerifyException(f"graph.qconv: shapes x {x}, w {w}, y {y} do not fit")
        if group < 1 or w[0] % group:
            raise VerifyException(f"graph.qconv: {w[0]} output channels in {group} groups")
        for operand in (self.offset, self.multiplier, self.bias):
            if shape_of(operand) != (w[0],):
                raise VerifyException(f"graph.qconv: per-channel operands must be ({w[0]},)")
        has_params = self.residual_params is not None
        if (self.residual is not None) != has_params or (
            self.residual is not None and shape_of(self.residual) != y
        ):
            raise VerifyException("graph.qconv: a residual has the output's shape and its params")
        if has_params and len(self.residual_params.get_values()) != len(RESIDUAL_PARAMS):
            raise VerifyException(f"graph.qconv: residual_params are {RESIDUAL_PARAMS}")

    @property
    def group_count(self) -> int:
        return 1 if self.group is None else self.group.value.data


GRAPH_OPS.append(QConvOp)

# --- channel-blocked layout (passes/transforms/blocked_layout.py) -----------------------------


def _check_blocked_pair(op: Operation, nchw: tuple[int, ...], blocked: tuple[int, ...]) -> None:
    """`blocked` is [N, C/c, H, W, c] of the NCHW shape `nchw`."""
    if len(nchw) != 4 or len(blocked) != 5:
        raise VerifyException(f"{op.name}: expects NCHW {nchw} and [N, C/c, H, W, c] {blocked}")
    n, blocks, h, w, c = blocked
    if c < 1 or (n, blocks * c, h, w) != nchw:
        raise VerifyException(f"{op.name}: {blocked} is not {nchw} in blocks of channels")


@irdl_op_definition
class ToBlockedOp(_InOutOp):
    """NCHW -> channel-blocked [N, C/c, H, W, c] (C a multiple of c): the entry of a chain
    the blocked-layout pass runs in NCHW[c]."""

    name = "graph.to_blocked"

    def verify_(self) -> None:
        _check_blocked_pair(self, shape_of(self.input), shape_of(self.output))

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.to_blocked(inputs[0], shape_of(self.output)[4])  # type: ignore[arg-type]


@irdl_op_definition
class FromBlockedOp(_InOutOp):
    """Channel-blocked [N, C/c, H, W, c] -> NCHW: where a blocked chain meets an op that
    reads NCHW."""

    name = "graph.from_blocked"

    def verify_(self) -> None:
        _check_blocked_pair(self, shape_of(self.output), shape_of(self.input))

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.from_blocked(inputs[0])  # type: ignore[arg-type]


GRAPH_OPS += [ToBlockedOp, FromBlockedOp]

# --- data-dependent output sizes (frontend/ops/data_dependent.py) ----------------------------


class NonMaxSuppressionSpec(TwinSpec):
    """graph.non_max_suppression and kernel.non_max_suppression (see NonMaxSuppressionOp)."""

    center_point_box = prop_def(IntegerAttr[I64])
    max_per_class = prop_def(IntegerAttr[I64])
    iou_threshold = prop_def(FloatAttr)
    score_threshold = opt_prop_def(FloatAttr)

    def verify_(self) -> None:
        verify_non_max_suppression(
            self.name,
            shape_of(self.boxes),
            shape_of(self.scores),
            shape_of(self.output),
            self.max_per_class.value.data,
        )

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        center_point_box, max_per_class = (
            a.value.data for a in (self.center_point_box, self.max_per_class)
        )
        iou, score = self.iou_threshold.value.data, _value(self.score_threshold)
        boxes, scores = inputs[:2]
        return numpy_eval.non_max_suppression(
            boxes,
            scores,
            center_point_box,
            max_per_class,
            iou,
            score,  # type: ignore[arg-type]
        )


@irdl_op_definition
class NonMaxSuppressionOp(NonMaxSuppressionSpec, IRDLOperation):
    """ONNX NonMaxSuppression with its output bounded: boxes f32 [B, N, 4], scores f32
    [B, C, N] -> i64 [1 + B * C * max_per_class, 3]. Row 0 is [count, 0, 0]; rows 1 .. count
    are the selected (batch, class, box) triples, batch by batch, class by class, in the order
    selected (greedy, as onnxruntime); later rows are unspecified. `max_per_class` <= N."""

    name = "graph.non_max_suppression"
    boxes = operand_def(TensorType)
    scores = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = tensor_format("boxes", "scores")


def verify_non_max_suppression(
    name: str,
    boxes: Sequence[int],
    scores: Sequence[int],
    output: Sequence[int],
    max_per_class: int,
) -> None:
    if len(boxes) != 3 or boxes[2] != 4 or len(scores) != 3:
        raise VerifyException(f"{name}: boxes {boxes} and scores {scores} must be 3-D, [B, N, 4]")
    if scores[0] != boxes[0] or scores[2] != boxes[1] or not 1 <= max_per_class <= boxes[1]:
        raise VerifyException(f"{name}: scores {scores} do not match boxes {boxes}")
    if tuple(output) != (1 + scores[0] * scores[1] * max_per_class, 3):
        raise VerifyException(f"{name}: output {output} is not [1 + B * C * max_per_class, 3]")


GRAPH_OPS.append(NonMaxSuppressionOp)


class NonZeroSpec(TwinSpec):
    """graph.nonzero and kernel.nonzero (see NonZeroOp)."""

    def verify_(self) -> None:
        dims = shape_of(self.input)
        size = 1 + len(dims) * int(np.prod(dims))
        if not dims or shape_of(self.output) != (size,) or element_type_of(self.output) != i64:
            raise VerifyException(f"{self.name}: output must be i64 [{size}], input not 0-d")

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        return numpy_eval.nonzero(inputs[0])  # type: ignore[arg-type]


@irdl_op_definition
class NonZeroOp(NonZeroSpec, _InOutOp):
    """ONNX NonZero, bounded: the coordinates of the nonzero elements of `input` (NaN is
    nonzero) in row-major order, packed in i64 [1 + rank * numel]: element 0 is their count,
    then one row of numel per dimension, each holding the count coordinates then zeros."""

    name = "graph.nonzero"


GRAPH_OPS.append(NonZeroOp)


UNARY_OPS: tuple[type[UnaryElementwiseOp], ...] = tuple(
    op for op in GRAPH_OPS if issubclass(op, UnaryElementwiseOp)
)
BINARY_OPS: tuple[type[BinaryElementwiseOp], ...] = tuple(
    op for op in GRAPH_OPS if issubclass(op, BinaryElementwiseOp)
)


# ---------------------------------------------------------------------------------------------
# Control flow: ops with regions (ONNX Loop, Scan, If)
#
# Each body is one block isolated from above: every outer value it reads is an explicit
# `captures` operand and a trailing block argument (constants are materialized inside), so
# that no graph rewrite can move an op across a region boundary. Bodies end in `graph.yield`.


def _check_yield(op: Operation, region_name: str, block_types: Sequence[Attribute]) -> None:
    block = getattr(op, region_name).block
    terminator = block.last_op
    if not isinstance(terminator, YieldOp):
        raise VerifyException(f"{op.name}: the {region_name} must end in graph.yield")
    got = [v.type for v in terminator.values]
    if got != list(block_types):
        raise VerifyException(f"{op.name}: the {region_name} yields {got}, expected {block_types}")


@irdl_op_definition
class LoopOp(IRDLOperation):
    """ONNX Loop (and Scan): `while (iter < trip_count && cond)` runs the body, whose block
    arguments are (iter: tensor<i64>, cond: tensor<i1>, carried..., captures...) and which
    yields (cond, carried..., per-iteration scan values...). Results: the final carried values,
    then each scan value stacked along a new leading axis (its size: the iterations run, which
    the frontend knows at compile time whenever there are scan values)."""

    name = "graph.loop"
    trip_count = opt_operand_def(TensorType)
    cond = opt_operand_def(TensorType)
    inits = var_operand_def(TensorType)
    captures = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    body = region_def("single_block")
    traits = traits_def(RecursiveMemoryEffect())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    assembly_format = (
        "(`trip_count` $trip_count^ `:` type($trip_count))? (`cond` $cond^ `:` type($cond))? "
        "`inits` `(` $inits `)` `captures` `(` $captures `)` `:` `(` type($inits) `)` `,` "
        "`(` type($captures) `)` `->` `(` type($outputs) `)` $body attr-dict"
    )

    def verify_(self) -> None:
        scalar_types = [TensorType(i64, []), TensorType(IntegerType(1), [])]
        for name, operand, expected in (
            ("trip count", self.trip_count, scalar_types[0]),
            ("condition", self.cond, scalar_types[1]),
        ):
            if operand is not None and operand.type != expected:
                raise VerifyException(f"graph.loop: the {name} must be a {expected}")
        carried = [v.type for v in self.inits]
        args = [a.type for a in self.body.block.args]
        captured = [v.type for v in self.captures]
        if args != [*scalar_types, *carried, *captured]:
            raise VerifyException(
                f"graph.loop: body arguments {args} are not (iter, cond, carried, captures)"
            )
        if [r.type for r in self.outputs[: len(carried)]] != carried:
            raise VerifyException("graph.loop: the carried results differ from their inits")
        scans = self.outputs[len(carried) :]
        if any(not shape_of(r) for r in scans):
            raise VerifyException("graph.loop: a scan result needs a leading iteration axis")
        trips = {shape_of(r)[0] for r in scans}
        if len(trips) > 1:
            raise VerifyException(f"graph.loop: scan results disagree on the trip count {trips}")
        scan_types = [TensorType(element_type_of(r), shape_of(r)[1:]) for r in scans]
        _check_yield(self, "body", [scalar_types[1], *carried, *scan_types])

    @property
    def num_carried(self) -> int:
        return len(self.inits)


@irdl_op_definition
class IfOp(IRDLOperation):
    """ONNX If on a condition computed at run time: both branches take the captures as block
    arguments and yield values of the results' (one static) types."""

    name = "graph.if"
    cond = operand_def(TensorType)
    captures = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    then_region = region_def("single_block")
    else_region = region_def("single_block")
    traits = traits_def(RecursiveMemoryEffect())
    assembly_format = (
        "$cond `captures` `(` $captures `)` `:` type($cond) `,` `(` type($captures) `)` `->` "
        "`(` type($outputs) `)` $then_region `else` $else_region attr-dict"
    )

    def verify_(self) -> None:
        if self.cond.type != TensorType(IntegerType(1), []):
            raise VerifyException("graph.if: the condition must be a tensor<i1> scalar")
        captured = [v.type for v in self.captures]
        results = [r.type for r in self.outputs]
        for region_name in ("then_region", "else_region"):
            args = [a.type for a in getattr(self, region_name).block.args]
            if args != captured:
                raise VerifyException(f"graph.if: {region_name} arguments {args} != captures")
            _check_yield(self, region_name, results)


@irdl_op_definition
class YieldOp(IRDLOperation):
    """The values a graph.loop body or graph.if branch hands back."""

    name = "graph.yield"
    values = var_operand_def(TensorType)
    traits = traits_def(IsTerminator(), HasParent(LoopOp, IfOp), Pure())
    assembly_format = "($values^ `:` type($values))? attr-dict"


GRAPH_OPS.extend([LoopOp, IfOp, YieldOp])


# --- RoiAlign with the adaptive sampling grid (kernel_to_loops/selection.py) ------------------


def verify_roi_align_adaptive(
    name: str,
    x: Sequence[int],
    rois: Sequence[int],
    batch_indices: Sequence[int],
    output: Sequence[int],
) -> None:
    if len(x) != 4 or len(rois) != 2 or rois[1] != 4 or tuple(batch_indices) != (rois[0],):
        raise VerifyException(
            f"{name}: x {x}, rois {rois}, batch_indices {batch_indices} are not "
            "[N, C, H, W], [R, 4], [R]"
        )
    if len(output) != 4 or tuple(output[:2]) != (rois[0], x[1]):
        raise VerifyException(f"{name}: output {output} is not [R, C, out_h, out_w]")


class RoiAlignAdaptiveSpec(TwinSpec):
    """graph.roi_align_adaptive and kernel.roi_align_adaptive (see RoiAlignAdaptiveOp)."""

    max_mode = prop_def(IntegerAttr[I64])
    half_pixel = prop_def(IntegerAttr[I64])
    spatial_scale = prop_def(FloatAttr)

    def verify_(self) -> None:
        verify_roi_align_adaptive(
            self.name,
            shape_of(self.x),
            shape_of(self.rois),
            shape_of(self.batch_indices),
            shape_of(self.output),
        )


@irdl_op_definition
class RoiAlignAdaptiveOp(RoiAlignAdaptiveSpec, IRDLOperation):
    """ONNX RoiAlign with sampling_ratio 0: x f32 [N, C, H, W], rois f32 [R, 4] (x1, y1, x2,
    y2), batch_indices i64 [R] -> f32 [R, C, out_h, out_w]. Each box takes ceil(box size /
    output size) samples per bin along each axis, a count known only at run time (as
    onnxruntime). `max_mode` 1 maxes the weighted taps, 0 averages; `half_pixel` 1 shifts box
    coordinates by -0.5 (coordinate_transformation_mode half_pixel)."""

    name = "graph.roi_align_adaptive"
    x = operand_def(TensorType)
    rois = operand_def(TensorType)
    batch_indices = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$x `,` $rois `,` $batch_indices attr-dict `:` type($x) `,` type($rois) `,` "
        "type($batch_indices) `->` type($output)"
    )


GRAPH_OPS.append(RoiAlignAdaptiveOp)


# --- Linear Resize over the last two axes (frontend/ops/resize.py; kernel_to_loops/resize.py) --


class ResizeLinearSpec(TwinSpec):
    """graph.resize_linear and kernel.resize_linear (see ResizeLinearOp)."""

    column_factor = prop_def(IntegerAttr[I64])
    column_interior = prop_def(DenseArrayBase)  # [lo, hi): input columns
    column_offsets = prop_def(DenseArrayBase)  # i64 [factor, 2]: tap columns minus i
    column_weights = prop_def(DenseArrayBase)  # f32 [factor, 2]
    # Without a pattern: every output column's taps and weights (i64 / f32 [OW, 2]), for
    # shuffles of a few loaded vectors in place of one element at a time.
    column_taps = opt_prop_def(DenseArrayBase)
    column_tap_weights = opt_prop_def(DenseArrayBase)

    def verify_(self) -> None:
        x, y = shape_of(self.data), shape_of(self.output)  # type: ignore[attr-defined]
        table, w = shape_of(self.indices), shape_of(self.weights)  # type: ignore[attr-defined]
        name = self.name  # type: ignore[attr-defined]
        if len(x) < 2 or len(y) != len(x) or tuple(y[:-2]) != tuple(x[:-2]):
            raise VerifyException(f"{name}: output {y} is not data {x} resized on its last axes")
        if tuple(table) != (y[-2] + y[-1], 2) or tuple(w) != tuple(table):
            raise VerifyException(
                f"{name}: tables {table} / {w}, expected [{y[-2] + y[-1]}, 2] for output {y}"
            )
        k = self.column_factor.value.data
        interior = self.column_interior.get_values()
        if len(interior) != 2:
            raise VerifyException(f"{name}: column interior {list(interior)} is not [lo, hi)")
        lo, hi = interior
        if k < 0 or not 0 <= lo <= hi or hi * k > y[-1]:
            raise VerifyException(f"{name}: column factor {k}, interior [{lo}, {hi}) for {y}")
        if len(self.column_offsets.get_values()) != 2 * k:
            raise VerifyException(f"{name}: {2 * k} column offsets expected")
        if len(self.column_weights.get_values()) != 2 * k:
            raise VerifyException(f"{name}: {2 * k} column weights expected")
        for listed in (self.column_taps, self.column_tap_weights):
            if listed is not None and len(listed.get_values()) != 2 * y[-1]:
                raise VerifyException(f"{name}: {2 * y[-1]} column taps/weights expected")

    def evaluate(self, inputs: Inputs) -> np.ndarray:
        x, indices, weights = (np.asarray(v) for v in inputs[:3])
        out_h = shape_of(self.output)[-2]  # type: ignore[attr-defined]
        return numpy_eval.resize_linear(x, indices, weights, out_h)


@irdl_op_definition
class ResizeLinearOp(ResizeLinearSpec, IRDLOperation):
    """Linear (bilinear) Resize of the last two axes: data [..., H, W] -> [..., OH, OW].
    Row r of `indices`/`weights` (i32/f32 [OH + OW, 2]) gives the two taps of output row r
    (r < OH) or of output column r - OH; a tap of weight 0 contributes exactly 0. Output
    row o = a0 * data[.., i0, :] + a1 * data[.., i1, :], then likewise along the columns.

    The columns may repeat a pattern (a whole upsampling factor): for input columns i in
    `column_interior` [lo, hi), output column i * column_factor + j reads input columns
    i + column_offsets[j, t] with weights column_weights[j, t] (the tables agree there), so
    the kernel computes them with vector loads and shuffles; column_factor 0: no pattern.
    `column_taps` / `column_tap_weights` (optional) repeat the tables' columns, so that the
    kernel can shuffle each block of output columns out of the input vectors it spans."""

    name = "graph.resize_linear"
    data = operand_def(TensorType)
    indices = operand_def(TensorType)
    weights = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = tensor_format("data", "indices", "weights")


GRAPH_OPS.append(ResizeLinearOp)


Graph = Dialect("graph", GRAPH_OPS, [])
