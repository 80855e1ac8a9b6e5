"""ONNX -> graph dialect: BatchNormalization, LRN, LayerNormalization, RMSNormalization,
MeanVarianceNormalization, LpNormalization, InstanceNormalization, GroupNormalization and
ImageScaler (an experimental per-channel affine map of opsets 1-9).

BatchNormalization with constant float32 parameters is `graph.batch_norm` (for the passes that
fold it into a conv); the others are reductions + elementwise ops, or `graph.layer_norm` on a
reshaped view.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ml_dtypes
import numpy as np
from onnx import TensorProto

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
from ember.frontend.registry import converts


@converts("BatchNormalization")
def _batch_norm(imp: ImportContext, node: Node) -> Sequence[Value]:
    if node.attrs.get("training_mode", 0):
        return batch_norm_training(imp, node)
    x = imp.required(node, 0)
    params = [imp.required(node, i) for i in range(1, 5)]
    shape = shape_of(x)
    channels = shape[1]
    epsilon = node.attrs.get("epsilon", 1e-5)
    names = ("scale", "B", "mean", "var")
    if node.opset < 9 and not node.attrs.get("spatial", 1):
        # spatial=0 (opsets 1-8): statistics per activation, of x's shape without the batch.
        per_activation = math.prod(shape[1:])
        for name, p in zip(names, params, strict=True):
            if math.prod(shape_of(p)) != per_activation:
                raise node.error(
                    f"spatial=0 needs {name} of {list(shape[1:])} (per activation), given "
                    f"{list(shape_of(p))}"
                )
        return [_normalized(imp, node, x, params, epsilon, list(shape[1:]))]
    for name, p in zip(names, params, strict=True):
        if math.prod(shape_of(p)) != channels:
            raise node.error(f"{name} of shape {list(shape_of(p))} for {channels} channels")
    if dtype_of(x) != np.float32 or not all(isinstance(p, Const) for p in params):
        # graph.batch_norm exists for the passes that fold constant float32 parameters (into a
        # conv, or an affine map); otherwise compute it elementwise, in any float type.
        per_channel = [channels] + [1] * (len(shape) - 2)
        return [_normalized(imp, node, x, params, epsilon, per_channel)]
    params = [imp.reshape(p, [channels]) for p in params]
    return [imp.emit(graph.BatchNormOp, [x, *params], shape, epsilon=f32_attr(epsilon))]


def _normalized(
    imp: ImportContext,
    node: Node,
    x: Value,
    params: Sequence[Value],
    epsilon: float,
    param_shape: list[int],
) -> Value:
    """(x - mean) / sqrt(var + eps) * scale + bias, the parameters reshaped to `param_shape`
    (broadcast against x from its second axis)."""
    scale, bias, mean, var = (imp.reshape(p, param_shape) for p in params)
    var_eps = imp.binary(node, graph.AddOp, var, Const(np.array(epsilon, dtype_of(var))))
    std = imp.emit(graph.SqrtOp, [var_eps], shape_of(var_eps))
    normalized = imp.binary(node, graph.DivOp, imp.binary(node, graph.SubOp, x, mean), std)
    return imp.binary(node, graph.AddOp, imp.binary(node, graph.MulOp, normalized, scale), bias)


def batch_norm_training(imp: ImportContext, node: Node) -> Sequence[Value]:
    """training_mode=1 (opset 14+): normalise by the batch's own statistics (mean and biased
    variance over every axis but the channels) and return the running statistics updated
    with `momentum`: running = input · momentum + batch · (1 - momentum), as ONNX's reference
    and onnxruntime's training kernel compute them. Elementwise ops and reductions, any float
    type."""
    x = imp.float_input(node, 0)
    scale, bias, mean, var = (imp.required(node, i) for i in range(1, 5))
    shape = shape_of(x)
    if len(shape) < 2:
        raise node.error(f"input of shape {list(shape)} has no channel axis")
    channels = shape[1]
    for name, value in (("scale", scale), ("B", bias), ("input_mean", mean), ("input_var", var)):
        if shape_of(value) != (channels,):
            raise node.error(f"{name} of shape {list(shape_of(value))} for {channels} channels")
    epsilon = node.attrs.get("epsilon", 1e-5)
    momentum = node.attrs.get("momentum", 0.9)
    dtype = dtype_of(x)
    axes = [a for a in range(len(shape)) if a != 1]
    per_channel = [channels] + [1] * (len(shape) - 2)
    batch_mean = imp.reduce(node, x, "mean", axes, keep=True)
    centered = imp.binary(node, graph.SubOp, x, batch_mean)
    squares = imp.binary(node, graph.MulOp, centered, centered)
    batch_var = imp.reduce(node, squares, "mean", axes, keep=True)
    var_eps = imp.binary(node, graph.AddOp, batch_var, Const(np.array(epsilon, dtype)))
    std = imp.emit(graph.SqrtOp, [var_eps], shape_of(var_eps))
    normalized = imp.binary(node, graph.DivOp, centered, std)
    scaled = imp.binary(node, graph.MulOp, normalized, imp.reshape(scale, per_channel))
    y = imp.binary(node, graph.AddOp, scaled, imp.reshape(bias, per_channel))

    def running(given: Value, batch: Value) -> Value:
        kept = imp.binary(node, graph.MulOp, given, Const(np.array(momentum, dtype)))
        new = imp.binary(
            node, graph.MulOp, imp.reshape(batch, [channels]), Const(np.array(1 - momentum, dtype))
        )
        return imp.binary(node, graph.AddOp, kept, new)

    return [y, running(mean, batch_mean), running(var, batch_var)]


@converts("LRN")
def _lrn(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    return [
        imp.emit(
            graph.LRNOp,
            [x],
            shape_of(x),
            size=i64_attr(node.attrs["size"]),
            alpha=f32_attr(node.attrs.get("alpha", 1e-4)),
            beta=f32_attr(node.attrs.get("beta", 0.75)),
            bias=f32_attr(node.attrs.get("bias", 1.0)),
        )
    ]


def _moments(imp: ImportContext, node: Node, x: Value, axes: list[int]) -> tuple[Value, Value]:
    """(x - mean, variance) over `axes`, both with the reduced dims kept."""
    mean = imp.reduce(node, x, "mean", axes, True)
    centered = imp.binary(node, graph.SubOp, x, mean)
    variance = imp.reduce(
        node, imp.binary(node, graph.MulOp, centered, centered), "mean", axes, True
    )
    return centered, variance


def _inv_std(imp: ImportContext, node: Node, variance: Value, eps: float) -> Value:
    shifted = imp.binary(node, graph.AddOp, variance, scalar(eps, variance))
    return imp.unary(graph.ReciprocalOp, imp.unary(graph.SqrtOp, shifted))


@converts("LayerNormalization")
def _layer_norm(imp: ImportContext, node: Node) -> Sequence[Value]:
    x, scale, bias = imp.required(node, 0), imp.required(node, 1), imp.input(node, 2)
    shape = shape_of(x)
    axis = normalize_axis(node, node.attrs.get("axis", -1), len(shape))
    eps = float(node.attrs.get("epsilon", 1e-5))
    y = imp.emit(
        graph.LayerNormOp, [x, scale, bias], shape, axis=i64_attr(axis), epsilon=f32_attr(eps)
    )
    wanted = [name for name in node.proto.output[1:] if name in imp.used]
    if not wanted:
        return [y]
    # Mean and inverse std-dev are separate (cheap) reductions; the fused kernel stays intact.
    # They are of the stash type (float32 for 16-bit x, as ONNX infers and onnxruntime gives).
    axes = list(range(axis, len(shape)))
    stashed = _stashed(imp, node, x)
    mean = imp.reduce(node, stashed, "mean", axes, True)
    _, variance = _moments(imp, node, stashed, axes)
    return [y, mean, _inv_std(imp, node, variance, eps)]


def _stashed(imp: ImportContext, node: Node, x: Value) -> Value:
    """x in the type LayerNormalization/RMSNormalization compute their statistics in: their
    function bodies cast 16-bit x to `stash_type` (float32 by default) first, so that x * x
    neither overflows (|x| > 256 in float16) nor is summed in the 16-bit type."""
    sixteen_bit = dtype_of(x) in (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))
    if sixteen_bit and node.attrs.get("stash_type", 1) == TensorProto.FLOAT:
        return imp.widen_to_float32(x)
    return x


@converts("RMSNormalization")
@converts("SimplifiedLayerNormalization")  # onnxruntime's RMS norm (its optimizer writes it)
def _rms_norm(imp: ImportContext, node: Node) -> Sequence[Value]:
    x, scale = imp.required(node, 0), imp.required(node, 1)
    shape = shape_of(x)
    axis = normalize_axis(node, node.attrs.get("axis", -1), len(shape))
    eps = float(node.attrs.get("epsilon", 1e-5))
    stashed = _stashed(imp, node, x)
    squares = imp.binary(node, graph.MulOp, stashed, stashed)
    mean_square = imp.reduce(node, squares, "mean", list(range(axis, len(shape))), True)
    y = imp.binary(node, graph.MulOp, stashed, _inv_std(imp, node, mean_square, eps))
    if dtype_of(y) != dtype_of(x):  # the body's Cast back to x's type, before the scale
        y = imp.emit(graph.CastOp, [y], shape, dtype_of(x))
    return [imp.binary(node, graph.MulOp, y, scale)]


@converts("MeanVarianceNormalization")
def _mvn(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    rank = len(shape_of(x))
    axes = [normalize_axis(node, a, rank) for a in node.attrs.get("axes", [0, 2, 3])]
    if 0 in shape_of(x):  # an empty result (its mean over no elements is never needed)
        return [x]
    centered, variance = _moments(imp, node, x, axes)
    return [imp.binary(node, graph.MulOp, centered, _inv_std(imp, node, variance, 1e-9))]


@converts("LpNormalization")
def _lp_norm(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    axis = normalize_axis(node, node.attrs.get("axis", -1), len(shape_of(x)))
    p = node.attrs.get("p", 2)
    if p == 1:
        norm = imp.reduce(node, imp.unary(graph.AbsOp, x), "sum", [axis], True)
    elif p == 2:
        squares = imp.binary(node, graph.MulOp, x, x)
        norm = imp.unary(graph.SqrtOp, imp.reduce(node, squares, "sum", [axis], True))
    else:
        raise node.error(f"p must be 1 or 2, got {p}")
    # An all-zero row stays zero (0 / tiny) instead of becoming NaN (0 / 0), as in ONNX.
    tiny = scalar(float(np.finfo(dtype_of(x)).tiny), x)
    return [imp.binary(node, graph.DivOp, x, imp.binary(node, graph.MaxOp, norm, tiny))]


def _channel_affine(
    imp: ImportContext, node: Node, y: Value, scale: Value, bias: Value, channels: int
) -> Value:
    """y * scale[c] + bias[c] over axis 1 of y."""
    rank = len(shape_of(y))
    per_channel = [channels] + [1] * (rank - 2)
    y = imp.binary(node, graph.MulOp, y, imp.reshape(scale, per_channel))
    return imp.binary(node, graph.AddOp, y, imp.reshape(bias, per_channel))


def _grouped_norm(imp: ImportContext, node: Node, x: Value, groups: int, eps: float) -> Value:
    """Normalize each (n, group) slice of x to zero mean, unit variance via graph.layer_norm."""
    shape = shape_of(x)
    rows = [shape[0], groups, math.prod(shape[1:]) // groups]
    ones = Const(np.ones(rows[2:], dtype_of(x)))
    y = imp.emit(
        graph.LayerNormOp,
        [imp.reshape(x, rows), ones, None],
        rows,
        axis=i64_attr(2),
        epsilon=f32_attr(eps),
    )
    return imp.reshape(y, shape)


@converts("InstanceNormalization")
def _instance_norm(imp: ImportContext, node: Node) -> Sequence[Value]:
    x, scale, bias = (imp.required(node, i) for i in range(3))
    c = shape_of(x)[1]
    y = _grouped_norm(imp, node, x, c, float(node.attrs.get("epsilon", 1e-5)))
    return [_channel_affine(imp, node, y, scale, bias, c)]


@converts("ImageScaler")
def _image_scaler(imp: ImportContext, node: Node) -> Sequence[Value]:
    """x * scale + bias[c]: an experimental op of opsets 1-9, still in Model Zoo models
    (tiny YOLOv2) and run by onnxruntime; onnx itself no longer has a schema for it."""
    x = imp.required(node, 0)
    shape = shape_of(x)
    if len(shape) != 4:
        raise node.error(f"input must be NCHW (rank 4), got shape {list(shape)}")
    bias = np.asarray(node.attrs.get("bias", [0.0] * shape[1]), dtype=dtype_of(x))
    if bias.shape != (shape[1],):
        raise node.error(f"bias has {bias.size} values for {shape[1]} channels")
    scale = np.full(shape[1], float(node.attrs.get("scale", 1.0)), dtype=dtype_of(x))
    return [_channel_affine(imp, node, x, Const(scale), Const(bias), shape[1])]


@converts("GroupNormalization")
def _group_norm(imp: ImportContext, node: Node) -> Sequence[Value]:
    x, scale, bias = (imp.required(node, i) for i in range(3))
    c = shape_of(x)[1]
    groups = int(node.attrs["num_groups"])
    if c % groups:
        raise node.error(f"{c} channels do not split into {groups} groups")
    y = _grouped_norm(imp, node, x, groups, float(node.attrs.get("epsilon", 1e-5)))
    if node.opset < 21 and shape_of(scale) != (c,):
        # Opset 18 scales per group; repeat each group's value over its channels.
        scale = imp.gather_axis(scale, 0, np.repeat(np.arange(groups), c // groups))
        bias = imp.gather_axis(bias, 0, np.repeat(np.arange(groups), c // groups))
    return [_channel_affine(imp, node, y, scale, bias, c)]
