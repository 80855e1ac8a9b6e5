"""ONNX -> graph dialect: comparisons, logic, bitwise and integer ops, rounding, trigonometry,
and the activations ONNX defines as functions of those (Elu, Selu, Gelu, Mish, PRelu, ...).

An activation with a function body becomes the few elementwise graph ops of that body; the
fuse-elementwise pass later merges them into one kernel, so a decomposition costs no extra
memory traffic. Scalar parameters become 0-d constants, which the kernel splats once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from xdsl.dialects.builtin import StringAttr
from xdsl.irdl import IRDLOperation

from ember.dialects import graph, numpy_eval
from ember.dialects.dtypes import FLOAT_TYPES
from ember.frontend.onnx_importer import (
    Value,
    _Const,
    _converts,
    _dtype,
    _f32,
    _i64,
    _Importer,
    _Node,
    _shape,
)

# ---------------------------------------------------------------------------------------------
# Shared building blocks


def _scalar(value: float, like: Value) -> _Const:
    """A 0-d constant of `like`'s dtype."""
    return _Const(np.array(value, _dtype(like)))


def _elementwise(
    imp: _Importer,
    node: _Node,
    op_type: type[IRDLOperation],
    operands: Sequence[Value],
    dtype: np.dtype | None = None,
    **props: object,
) -> Value:
    """One broadcasting elementwise op; `dtype` overrides the result dtype (i1 comparisons)."""
    try:
        shape = graph.broadcast_shapes(*(_shape(v) for v in operands))
    except ValueError as err:
        raise node.error(str(err)) from err
    return imp.emit(op_type, list(operands), shape, dtype, **props)  # type: ignore[arg-type]


def _binary(
    imp: _Importer,
    node: _Node,
    op_type: type[IRDLOperation],
    lhs: Value,
    rhs: Value,
    dtype: np.dtype | None = None,
    **props: object,
) -> Value:
    lhs, rhs = imp._unify_dtypes(node, lhs, rhs)
    return _elementwise(imp, node, op_type, [lhs, rhs], dtype, **props)


def _unary(imp: _Importer, node: _Node, op_type: type[IRDLOperation], x: Value, **props: object):
    return _elementwise(imp, node, op_type, [x], None, **props)


def _compare(imp: _Importer, node: _Node, predicate: str, lhs: Value, rhs: Value) -> Value:
    return _binary(
        imp, node, graph.CompareOp, lhs, rhs, np.dtype(np.bool_), predicate=StringAttr(predicate)
    )


def _where(imp: _Importer, node: _Node, cond: Value, lhs: Value, rhs: Value) -> Value:
    lhs, rhs = imp._unify_dtypes(node, lhs, rhs)
    return _elementwise(imp, node, graph.WhereOp, [cond, lhs, rhs], _dtype(lhs))


def _float_input(imp: _Importer, node: _Node, index: int = 0) -> Value:
    x = imp.required(node, index)
    if not isinstance(numpy_eval.element_type(_dtype(x)), FLOAT_TYPES):
        raise node.unsupported(f"input #{index} of type {_dtype(x)} (a float type is required)")
    return x


def _attr(node: _Node, name: str, default: float) -> float:
    return float(node.attrs.get(name, default))


# ---------------------------------------------------------------------------------------------
# Comparisons, logic, bitwise


_PREDICATES = {
    "Equal": "eq",
    "Less": "lt",
    "LessOrEqual": "le",
    "Greater": "gt",
    "GreaterOrEqual": "ge",
}


@_converts(*_PREDICATES)
def _comparison(imp: _Importer, node: _Node) -> Sequence[Value]:
    lhs, rhs = imp.required(node, 0), imp.required(node, 1)
    return [_compare(imp, node, _PREDICATES[node.op_type], lhs, rhs)]


_LOGIC: dict[str, type[IRDLOperation]] = {
    "And": graph.AndOp,
    "Or": graph.OrOp,
    "Xor": graph.XorOp,
    "BitwiseAnd": graph.AndOp,
    "BitwiseOr": graph.OrOp,
    "BitwiseXor": graph.XorOp,
}


@_converts(*_LOGIC)
def _logic(imp: _Importer, node: _Node) -> Sequence[Value]:
    lhs, rhs = imp.required(node, 0), imp.required(node, 1)
    if _dtype(lhs).kind not in "iub":
        raise node.error(f"operands must be bool or integer, not {_dtype(lhs)}")
    return [_binary(imp, node, _LOGIC[node.op_type], lhs, rhs)]


@_converts("Not", "BitwiseNot")
def _not(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    if _dtype(x).kind not in "iub":
        raise node.error(f"input must be bool or integer, not {_dtype(x)}")
    return [_unary(imp, node, graph.NotOp, x)]


@_converts("BitShift")
def _bitshift(imp: _Importer, node: _Node) -> Sequence[Value]:
    direction = node.attrs.get("direction", b"")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("LEFT", "RIGHT"):
        raise node.error(f"direction must be LEFT or RIGHT, not '{direction}'")
    lhs, rhs = imp.required(node, 0), imp.required(node, 1)
    return [_binary(imp, node, graph.BitShiftOp, lhs, rhs, direction=StringAttr(direction.lower()))]


@_converts("Mod")
def _mod(imp: _Importer, node: _Node) -> Sequence[Value]:
    lhs, rhs = imp.required(node, 0), imp.required(node, 1)
    # The spec asks for fmod=1 on floats; its own tests also use fmod=0 there, as numpy.mod.
    fmod = int(node.attrs.get("fmod", 0))
    return [_binary(imp, node, graph.ModOp, lhs, rhs, fmod=_i64(fmod))]


@_converts("Where")
def _where_op(imp: _Importer, node: _Node) -> Sequence[Value]:
    cond = imp.required(node, 0)
    if _dtype(cond) != np.bool_:
        raise node.error(f"condition must be bool, not {_dtype(cond)}")
    return [_where(imp, node, cond, imp.required(node, 1), imp.required(node, 2))]


@_converts("CastLike")
def _cast_like(imp: _Importer, node: _Node) -> Sequence[Value]:
    x, like = imp.required(node, 0), imp.required(node, 1)
    if _dtype(x) == _dtype(like):
        return [x]
    return [imp.emit(graph.CastOp, [x], _shape(x), _dtype(like))]


@_converts("BitCast")
def _bitcast(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"]))
        numpy_eval.element_type(dtype)
    except (KeyError, ValueError) as err:
        raise node.unsupported(f"bitcast to type {node.attrs.get('to')}") from err
    if dtype.itemsize != _dtype(x).itemsize:
        raise node.unsupported(f"bitcast between widths ({_dtype(x)} -> {dtype})")
    if dtype == _dtype(x):
        return [x]
    return [imp.emit(graph.BitcastOp, [x], _shape(x), dtype)]


# ---------------------------------------------------------------------------------------------
# Unary math

_UNARY: dict[str, type[IRDLOperation]] = {
    "Sign": graph.SignOp,
    "Floor": graph.FloorOp,
    "Ceil": graph.CeilOp,
    "Round": graph.RoundOp,
    "Softplus": graph.SoftplusOp,
}


@_converts(*_UNARY)
def _unary_op(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    if node.op_type == "Softplus":
        x = _float_input(imp, node)
    return [_unary(imp, node, _UNARY[node.op_type], x)]


_TRIG = ("Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh")


@_converts(*_TRIG)
def _trig(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = _float_input(imp, node)
    return [_unary(imp, node, graph.TrigOp, x, fn=StringAttr(node.op_type.lower()))]


@_converts("IsNaN")
def _isnan(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    return [imp.emit(graph.IsNaNOp, [x], _shape(x), np.dtype(np.bool_))]


@_converts("IsInf")
def _isinf(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    props = {
        "detect_positive": _i64(node.attrs.get("detect_positive", 1)),
        "detect_negative": _i64(node.attrs.get("detect_negative", 1)),
    }
    return [imp.emit(graph.IsInfOp, [x], _shape(x), np.dtype(np.bool_), **props)]


# ---------------------------------------------------------------------------------------------
# Activations, as the elementwise ops of their ONNX function bodies


def _mul(imp: _Importer, node: _Node, a: Value, b: Value) -> Value:
    return _binary(imp, node, graph.MulOp, a, b)


def _add(imp: _Importer, node: _Node, a: Value, b: Value) -> Value:
    return _binary(imp, node, graph.AddOp, a, b)


def _exp_minus_one(imp: _Importer, node: _Node, x: Value, scale: float) -> Value:
    """scale * (exp(x) - 1), the negative branch of Elu/Selu/Celu."""
    e = _unary(imp, node, graph.ExpOp, x)
    return _mul(imp, node, _add(imp, node, e, _scalar(-1.0, x)), _scalar(scale, x))


@_converts("Elu")
def _elu(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = _float_input(imp, node)
    negative = _compare(imp, node, "lt", x, _scalar(0.0, x))
    return [_where(imp, node, negative, _exp_minus_one(imp, node, x, _attr(node, "alpha", 1.0)), x)]


@_converts("Selu")
def _selu(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = _float_input(imp, node)
    alpha = _attr(node, "alpha", 1.67326319217681884765625)
    gamma = _attr(node, "gamma", 1.05070102214813232421875)
    positive = _compare(imp, node, "gt", x, _scalar(0.0, x))
    y = _where(imp, node, positive, x, _exp_minus_one(imp, node, x, alpha))
    return [_mul(imp, node, y, _scalar(gamma, x))]


@_converts("Celu")
def _celu(imp: _Importer, node: _Node) -> Sequence[Value]:
    # 16-bit floats compute in float32 and are rounded once, as ONNX's reference does:
    # rounding x / alpha, exp, - 1 and the sum to bf16 one by one was an ulp or more off on
    # about a third of the negative inputs.
    x = _float_input(imp, node)
    dtype, f32 = _dtype(x), np.dtype(np.float32)
    if dtype.itemsize < 4:
        x = imp.emit(graph.CastOp, [x], _shape(x), f32)
    alpha = _attr(node, "alpha", 1.0)
    scaled = _binary(imp, node, graph.DivOp, x, _scalar(alpha, x))
    negative = _binary(
        imp, node, graph.MinOp, _exp_minus_one(imp, node, scaled, alpha), _scalar(0.0, x)
    )
    positive = _binary(imp, node, graph.MaxOp, x, _scalar(0.0, x))
    y = _add(imp, node, positive, negative)
    return [y if dtype == _dtype(y) else imp.emit(graph.CastOp, [y], _shape(y), dtype)]


def _hard_sigmoid(imp: _Importer, node: _Node, x: Value, alpha: float, beta: float) -> Value:
    y = _add(imp, node, _mul(imp, node, x, _scalar(alpha, x)), _scalar(beta, x))
    return imp.emit(graph.ClipOp, [y], _shape(y), min=_f32(0.0), max=_f32(1.0))


@_converts("HardSigmoid")
def _hardsigmoid(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = _float_input(imp, node)
    return [_hard_sigmoid(imp, node, x, _attr(node, "alpha", 0.2), _attr(node, "beta", 0.5))]


@_converts("HardSwish")
def _hardswish(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = _float_input(imp, node)
    return [_mul(imp, node, x, _hard_sigmoid(imp, node, x, 1.0 / 6.0, 0.5))]


@_converts("Softsign")
def _softsign(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = _float_input(imp, node)
    denominator = _add(imp, node, _unary(imp, node, graph.AbsOp, x), _scalar(1.0, x))
    return [_binary(imp, node, graph.DivOp, x, denominator)]


@_converts("Shrink")
def _shrink(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    bias, lambd = _attr(node, "bias", 0.0), _attr(node, "lambd", 0.5)
    below = _compare(imp, node, "lt", x, _scalar(-lambd, x))
    above = _compare(imp, node, "gt", x, _scalar(lambd, x))
    shifted_up = _add(imp, node, x, _scalar(bias, x))
    shifted_down = _binary(imp, node, graph.SubOp, x, _scalar(bias, x))
    inner = _where(imp, node, above, shifted_down, _scalar(0, x))
    return [_where(imp, node, below, shifted_up, inner)]


@_converts("ThresholdedRelu")
def _thresholded_relu(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = _float_input(imp, node)
    above = _compare(imp, node, "gt", x, _scalar(_attr(node, "alpha", 1.0), x))
    return [_where(imp, node, above, x, _scalar(0.0, x))]


@_converts("Mish")
def _mish(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = _float_input(imp, node)
    softplus = _unary(imp, node, graph.SoftplusOp, x)
    return [_mul(imp, node, x, _unary(imp, node, graph.TanhOp, softplus))]


@_converts("Gelu")
def _gelu(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = _float_input(imp, node)
    approximate = node.attrs.get("approximate", b"none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    if approximate == "tanh":
        cube = _mul(imp, node, _mul(imp, node, x, x), x)
        inner = _add(imp, node, x, _mul(imp, node, cube, _scalar(0.044715, x)))
        inner = _mul(imp, node, inner, _scalar(math.sqrt(2.0 / math.pi), x))
        curve = _unary(imp, node, graph.TanhOp, inner)
    elif approximate == "none":
        curve = _unary(imp, node, graph.ErfOp, _mul(imp, node, x, _scalar(math.sqrt(0.5), x)))
    else:
        raise node.error(f"approximate must be 'none' or 'tanh', not '{approximate}'")
    half_x = _mul(imp, node, x, _scalar(0.5, x))
    return [_mul(imp, node, half_x, _add(imp, node, curve, _scalar(1.0, x)))]


@_converts("PRelu")
def _prelu(imp: _Importer, node: _Node) -> Sequence[Value]:
    x, slope = imp.required(node, 0), imp.required(node, 1)
    negative = _compare(imp, node, "lt", x, _scalar(0, x))
    return [_where(imp, node, negative, _mul(imp, node, x, slope), x)]


# ---------------------------------------------------------------------------------------------
# Dropout


@_converts("Dropout")
def _dropout(imp: _Importer, node: _Node) -> Sequence[Value]:
    """Inference-mode Dropout: the data unchanged and an all-true mask. Training mode (opset
    12+'s training_mode input, is_test=0 before opset 7) drops random elements, which compiled
    inference does not do; it is accepted only with a ratio of 0, where nothing is dropped."""
    x = imp.required(node, 0)
    if node.opset < 7 and not node.attrs.get("is_test", 0):
        raise node.unsupported(
            "is_test 0 (the default before opset 7) asks for training-mode dropout, which is "
            "random: ember compiles inference, set is_test=1"
        )
    if node.opset >= 12 and imp.input(node, 2) is not None:
        training = imp.input(node, 2)
        if not isinstance(training, _Const):
            raise node.unsupported(
                "training_mode (input #2) given at run time: ember compiles inference and "
                "training-mode dropout is random, so training_mode must be a compile-time constant"
            )
        ratio = imp.input(node, 1)
        drop = 0.5 if ratio is None else ratio.array if isinstance(ratio, _Const) else None
        if bool(training.array) and (drop is None or float(drop) != 0.0):
            given = "given at run time" if drop is None else f"{float(drop):g}"
            raise node.unsupported(
                f"training_mode true with ratio {given}: random dropout is not supported "
                "(ember compiles inference; only ratio 0, which drops nothing, is)"
            )
    # The mask has the data's type before opset 10 and is bool from then on.
    mask_dtype = _dtype(x) if node.opset < 10 else np.dtype(np.bool_)
    return [x, _Const(np.ones(_shape(x), mask_dtype))]
