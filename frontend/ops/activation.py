"""ONNX -> graph dialect: activations and the softmax family.

LeakyRelu, Clip and Softplus are one graph op each (Relu, Sigmoid and Tanh too, converted
by math.py's table of unary ops); Softmax and LogSoftmax one `graph.softmax` (with `log`),
Hardmax one_hot(ArgMax). The activations ONNX
defines as functions (Elu, Selu, Celu, HardSigmoid, HardSwish, Softsign, Shrink,
ThresholdedRelu, Mish, Gelu, PRelu) become the few elementwise graph ops of that body; the
fuse-elementwise pass later merges them into one kernel, so a decomposition costs no extra
memory traffic. Scalar parameters become 0-d constants, which the kernel splats once. On
16-bit floats the bodies of Elu, Selu, Celu, HardSigmoid, HardSwish, Mish and Gelu compute
in float32 and round once, as onnxruntime does (`_in_float32`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from xdsl.dialects.builtin import UnitAttr

from ember.dialects import graph
from ember.frontend.context import (
    Const,
    ImportContext,
    Node,
    Value,
    dtype_of,
    f32_attr,
    i64_attr,
    normalize_axis,
    scalar,
    shape_of,
)
from ember.frontend.ops.indexing import one_hot
from ember.frontend.ops.reduction import arg_reduce
from ember.frontend.registry import converts


@converts("Softplus")
def _softplus(imp: ImportContext, node: Node) -> Sequence[Value]:
    imp.required(node, 0)
    return [imp.unary(graph.SoftplusOp, imp.float_input(node))]


@converts("LeakyRelu")
def _leaky_relu(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    alpha = f32_attr(node.attrs.get("alpha", 0.01))
    return [imp.emit(graph.LeakyReluOp, [x], shape_of(x), alpha=alpha)]


@converts("Clip")
def _clip(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    if node.opset < 11:
        bounds: list[Value | None] = [
            None if k not in node.attrs else Const(np.array(node.attrs[k], dtype_of(x)))
            for k in ("min", "max")
        ]
    else:
        bounds = [imp.input(node, 1), imp.input(node, 2)]
    if all(b is None or (isinstance(b, Const) and b.array.size == 1) for b in bounds):
        lo, hi = (None if b is None else f32_attr(b.array.reshape(-1)[0]) for b in bounds)  # type: ignore[union-attr]
        return [imp.emit(graph.ClipOp, [x], shape_of(x), min=lo, max=hi)]
    # Tensor-valued bounds: Clip is max-then-min.
    y = x
    if bounds[0] is not None:
        y = imp.binary(node, graph.MaxOp, y, bounds[0])
    if bounds[1] is not None:
        y = imp.binary(node, graph.MinOp, y, bounds[1])
    return [y]


@converts("Softmax", "LogSoftmax")
def _softmax(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = shape_of(x)
    log = UnitAttr() if node.op_type == "LogSoftmax" else None
    if node.opset >= 13:
        axis = normalize_axis(node, node.attrs.get("axis", -1), len(shape))
        return [imp.emit(graph.SoftmaxOp, [x], shape, axis=i64_attr(axis), log=log)]
    # Before opset 13 the input is coerced to 2-D at `axis` and normalized per row.
    axis = normalize_axis(node, node.attrs.get("axis", 1), len(shape))
    rows = [math.prod(shape[:axis]), math.prod(shape[axis:])]
    y = imp.emit(graph.SoftmaxOp, [imp.reshape(x, rows)], rows, axis=i64_attr(1), log=log)
    return [imp.reshape(y, shape)]


@converts("Hardmax")
def _hardmax(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = shape_of(x)
    if 0 in shape:  # nothing to pick a maximum from (an ArgMax over no elements is an error)
        return [x]
    if node.opset < 13:  # coerced to 2-D at `axis`, as Softmax was
        axis = normalize_axis(node, node.attrs.get("axis", 1), len(shape))
        rows = [math.prod(shape[:axis]), math.prod(shape[axis:])]
        return [imp.reshape(_hardmax_along(imp, imp.reshape(x, rows), 1), shape)]
    return [_hardmax_along(imp, x, normalize_axis(node, node.attrs.get("axis", -1), len(shape)))]


def _hardmax_along(imp: ImportContext, x: Value, axis: int) -> Value:
    """1 at the first maximum along `axis`, 0 elsewhere: one_hot(argmax)."""
    shape = shape_of(x)
    first = arg_reduce(imp, x, "max", axis, 0)
    first = imp.reshape(first, [d for i, d in enumerate(shape) if i != axis])
    return one_hot(imp, first, Const(np.array([0, 1], dtype_of(x))), shape[axis], axis)


def _in_float32(imp: ImportContext, x: Value, compute: Callable[[Value], Value]) -> Value:
    """compute(x), on a 16-bit float x widened to float32 and the result rounded once (as
    onnxruntime and ONNX's reference compute these function-defined activations): rounding
    every step of the body to float16 lost small results (Gelu(-3.67) gave -0.0, not
    -0.000445) and was an ulp or more off on many inputs."""
    dtype = dtype_of(x)
    if dtype.itemsize >= 4:
        return compute(x)
    y = compute(imp.emit(graph.CastOp, [x], shape_of(x), np.dtype(np.float32)))
    return imp.emit(graph.CastOp, [y], shape_of(y), dtype)


def _mul(imp: ImportContext, node: Node, a: Value, b: Value) -> Value:
    return imp.binary(node, graph.MulOp, a, b)


def _add(imp: ImportContext, node: Node, a: Value, b: Value) -> Value:
    return imp.binary(node, graph.AddOp, a, b)


def _exp_minus_one(imp: ImportContext, node: Node, x: Value, scale: float) -> Value:
    """scale * (exp(x) - 1), the negative branch of Elu/Selu/Celu."""
    e = imp.unary(graph.ExpOp, x)
    return _mul(imp, node, _add(imp, node, e, scalar(-1.0, x)), scalar(scale, x))


@converts("Elu")
def _elu(imp: ImportContext, node: Node) -> Sequence[Value]:
    alpha = node.float_attr("alpha", 1.0)

    def elu(x: Value) -> Value:
        negative = imp.compare(node, "lt", x, scalar(0.0, x))
        return imp.where(node, negative, _exp_minus_one(imp, node, x, alpha), x)

    return [_in_float32(imp, imp.float_input(node), elu)]


@converts("Selu")
def _selu(imp: ImportContext, node: Node) -> Sequence[Value]:
    alpha = node.float_attr("alpha", 1.67326319217681884765625)
    gamma = node.float_attr("gamma", 1.05070102214813232421875)

    def selu(x: Value) -> Value:
        positive = imp.compare(node, "gt", x, scalar(0.0, x))
        y = imp.where(node, positive, x, _exp_minus_one(imp, node, x, alpha))
        return _mul(imp, node, y, scalar(gamma, x))

    return [_in_float32(imp, imp.float_input(node), selu)]


@converts("Celu")
def _celu(imp: ImportContext, node: Node) -> Sequence[Value]:
    # In float32 for 16-bit floats: rounding x / alpha, exp, - 1 and the sum to bf16 one by
    # one was an ulp or more off on about a third of the negative inputs.
    alpha = node.float_attr("alpha", 1.0)

    def celu(x: Value) -> Value:
        scaled = imp.binary(node, graph.DivOp, x, scalar(alpha, x))
        negative = imp.binary(
            node, graph.MinOp, _exp_minus_one(imp, node, scaled, alpha), scalar(0.0, x)
        )
        positive = imp.binary(node, graph.MaxOp, x, scalar(0.0, x))
        return _add(imp, node, positive, negative)

    return [_in_float32(imp, imp.float_input(node), celu)]


def _hard_sigmoid(imp: ImportContext, node: Node, x: Value, alpha: float, beta: float) -> Value:
    y = _add(imp, node, _mul(imp, node, x, scalar(alpha, x)), scalar(beta, x))
    return imp.emit(graph.ClipOp, [y], shape_of(y), min=f32_attr(0.0), max=f32_attr(1.0))


@converts("HardSigmoid")
def _hardsigmoid(imp: ImportContext, node: Node) -> Sequence[Value]:
    alpha, beta = node.float_attr("alpha", 0.2), node.float_attr("beta", 0.5)
    return [
        _in_float32(imp, imp.float_input(node), lambda x: _hard_sigmoid(imp, node, x, alpha, beta))
    ]


@converts("HardSwish")
def _hardswish(imp: ImportContext, node: Node) -> Sequence[Value]:
    def hardswish(x: Value) -> Value:
        return _mul(imp, node, x, _hard_sigmoid(imp, node, x, 1.0 / 6.0, 0.5))

    return [_in_float32(imp, imp.float_input(node), hardswish)]


@converts("Softsign")
def _softsign(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.float_input(node)
    denominator = _add(imp, node, imp.unary(graph.AbsOp, x), scalar(1.0, x))
    return [imp.binary(node, graph.DivOp, x, denominator)]


@converts("Shrink")
def _shrink(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    bias, lambd = node.float_attr("bias", 0.0), node.float_attr("lambd", 0.5)
    below = imp.compare(node, "lt", x, scalar(-lambd, x))
    above = imp.compare(node, "gt", x, scalar(lambd, x))
    shifted_up = _add(imp, node, x, scalar(bias, x))
    shifted_down = imp.binary(node, graph.SubOp, x, scalar(bias, x))
    inner = imp.where(node, above, shifted_down, scalar(0, x))
    return [imp.where(node, below, shifted_up, inner)]


@converts("ThresholdedRelu")
def _thresholded_relu(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.float_input(node)
    above = imp.compare(node, "gt", x, scalar(node.float_attr("alpha", 1.0), x))
    return [imp.where(node, above, x, scalar(0.0, x))]


@converts("Mish")
def _mish(imp: ImportContext, node: Node) -> Sequence[Value]:
    def mish(x: Value) -> Value:
        return _mul(imp, node, x, imp.unary(graph.TanhOp, imp.unary(graph.SoftplusOp, x)))

    return [_in_float32(imp, imp.float_input(node), mish)]


@converts("Gelu")
@converts("Gelu", domain="com.microsoft")  # onnxruntime's (its optimizer saves it): the same
def _gelu(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.float_input(node)
    approximate = node.attrs.get("approximate", b"none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    if approximate not in ("none", "tanh"):
        raise node.error(f"approximate must be 'none' or 'tanh', not '{approximate}'")

    def gelu(x: Value) -> Value:
        if approximate == "tanh":
            cube = _mul(imp, node, _mul(imp, node, x, x), x)
            inner = _add(imp, node, x, _mul(imp, node, cube, scalar(0.044715, x)))
            inner = _mul(imp, node, inner, scalar(math.sqrt(2.0 / math.pi), x))
            curve = imp.unary(graph.TanhOp, inner)
        else:
            curve = imp.unary(graph.ErfOp, _mul(imp, node, x, scalar(math.sqrt(0.5), x)))
        half_x = _mul(imp, node, x, scalar(0.5, x))
        return _mul(imp, node, half_x, _add(imp, node, curve, scalar(1.0, x)))

    return [_in_float32(imp, x, gelu)]


@converts("PRelu")
def _prelu(imp: ImportContext, node: Node) -> Sequence[Value]:
    x, slope = imp.required(node, 0), imp.required(node, 1)
    negative = imp.compare(node, "lt", x, scalar(0, x))
    return [imp.where(node, negative, _mul(imp, node, x, slope), x)]
