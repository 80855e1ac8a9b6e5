"""Post-training quantization: a float ONNX model -> a QDQ (or dynamic) quantized ONNX model.

This is model compression in the optimisation stage, an ONNX-to-ONNX transformation; it writes
the forms onnxruntime's quantization tool writes, so the result runs in onnxruntime and in
ember (frontend/ops_quantization.py), whose int8 pass turns DQ -> Conv/MatMul/Gemm -> Q into
integer kernels:

    model = prepare(model)                              # BatchNormalization folded into Conv
    plan = plan_static(model, options)                  # which tensors get Q/DQ pairs
    ranges = calibrate(model, plan.calibration_tensors, feeds, run_model)   (calibrate.py)
    quantized = quantize_static(model, ranges, options)
    quantized = quantize_dynamic(model, options)        # no calibration: MatMulInteger form

Static (QDQ) form:

- Conv, MatMul and Gemm: each float activation input and the output pass through
  QuantizeLinear -> DequantizeLinear (u8 or s8, asymmetric: the calibrated range, widened to
  contain 0, spread over the type's 256 levels). A constant weight is stored as s8 with
  DequantizeLinear: symmetric in [-127, 127], per output channel (axis 0 for Conv and Gemm
  with transB, axis 1 for MatMul and Gemm without) or per tensor. A constant bias (Conv's B,
  Gemm's 1-D C when alpha = beta = 1) is int32 with scale x_scale * w_scale per channel and
  zero point 0; one that would overflow int32 stays float.
- A Relu, or a Clip with constant bounds [0, b], that alone consumes a quantized op's output is
  removed, the output quantized with the activation's calibrated range: that range starts at 0
  with the zero point at the type's minimum, so the saturating QuantizeLinear clips exactly as
  the activation did (onnxruntime removes them the same way).
- MaxPool, Relu, Reshape, Transpose, Flatten, Squeeze, Unsqueeze whose input is quantized:
  output re-quantized with the input's scale and zero point. They only move or select values,
  so this is exact, and an integer kernel may run them on the quantized values directly.
- Concat whose inputs are all quantized: output quantized with its own range.
- A graph output that is quantized keeps its name on the DequantizeLinear.

Dynamic form (onnxruntime's quantize_dynamic): a MatMul with a constant 2-D weight becomes
DynamicQuantizeLinear(A) -> MatMulInteger(A_q, W_q, A_zp, W_zp) -> Cast -> Mul(A_scale *
W_scale); the activation is quantized (u8) per run from its own range, so no calibration.

Only float32 tensors are quantized; nodes on other types, nodes named in
`QuantizeOptions.keep_float_nodes` and ops in `keep_float_op_types` stay float.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ember.frontend.calibrate import TensorRange
from ember.runtime.errors import InputError, InternalCompilerError, ModelError

QUANTIZED_OPS = frozenset({"Conv", "MatMul", "Gemm"})
# Ops whose output holds values of their quantized input (moved, selected or clipped at 0).
SCALE_KEEPING_OPS = frozenset(
    {"MaxPool", "Relu", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze"}
)
ACTIVATION_TYPES = {"u8": (TensorProto.UINT8, 0, 255), "s8": (TensorProto.INT8, -128, 127)}
# Symmetric s8 weights use [-127, 127] (as onnxruntime does): -w is always representable.
# With `reduce_range`, 7-bit weights in [-64, 64] (onnxruntime's reduce_range): on CPUs
# without VNNI, vpmaddubsw's int16 pair sums then never saturate (255 * 64 * 2 < 32768), so
# the AVX2 kernel multiplies each weight once instead of as two 7-bit halves.
_WEIGHT_LEVEL = 127
_REDUCED_WEIGHT_LEVEL = 64
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class QuantizeOptions:
    """What to quantize and how (see the module docstring)."""

    per_channel: bool = True
    activation_type: str = "u8"
    reduce_range: bool = False  # 7-bit weights, [-64, 64]
    keep_float_nodes: frozenset[str] = field(default_factory=frozenset)
    keep_float_op_types: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.activation_type not in ACTIVATION_TYPES:
            raise InputError(
                f"activation type '{self.activation_type}': expected one of "
                f"{list(ACTIVATION_TYPES)}"
            )
        object.__setattr__(self, "keep_float_nodes", frozenset(self.keep_float_nodes))
        object.__setattr__(self, "keep_float_op_types", frozenset(self.keep_float_op_types))

    @property
    def weight_level(self) -> int:
        return _REDUCED_WEIGHT_LEVEL if self.reduce_range else _WEIGHT_LEVEL

    def keeps_float(self, node: onnx.NodeProto) -> bool:
        return node.name in self.keep_float_nodes or node.op_type in self.keep_float_op_types


# ---------------------------------------------------------------------------------------------
# Preparation: BatchNormalization folded into the Conv before it (as onnxruntime's optimizer
# does before quantizing), so the weights quantized are the ones that run.


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with each Conv -> BatchNormalization (constant weights and statistics,
    the Conv output used by nothing else) folded into one Conv that writes the BN's output."""
    model = _copy(model)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses = _use_counts(graph)
    producer = {out: node for node in graph.node for out in node.output}
    names = _Names(graph)
    removed: list[onnx.NodeProto] = []
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        conv = producer.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or uses[bn.input[0]] != 1:
            continue
        if bn.input[0] in {o.name for o in graph.output}:
            continue
        constants = [*bn.input[1:5], *conv.input[1:]]
        if not all(name in inits for name in constants if name):
            continue
        scale, bias, mean, var = (numpy_helper.to_array(inits[n]) for n in bn.input[1:5])
        weight = numpy_helper.to_array(inits[conv.input[1]])
        if weight.dtype != np.float32 or uses[conv.input[1]] != 1:
            continue
        epsilon = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        factor = (scale / np.sqrt(var + epsilon)).astype(np.float32)
        old_bias = (
            numpy_helper.to_array(inits[conv.input[2]])
            if len(conv.input) > 2 and conv.input[2]
            else np.zeros(weight.shape[0], np.float32)
        )
        new_weight = weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))
        new_bias = ((old_bias - mean) * factor + bias).astype(np.float32)
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array(new_weight, conv.input[1]))
        bias_name = names.initializer(f"{conv.input[1]}_folded_bias", new_bias)
        inits[bias_name] = graph.initializer[-1]
        del conv.input[2:]
        conv.input.append(bias_name)
        conv.output[0] = bn.output[0]
        removed.append(bn)
    for node in removed:
        graph.node.remove(node)
    _drop_unused_initializers(graph)
    return model


# ---------------------------------------------------------------------------------------------
# Planning: which tensors get Q/DQ pairs and where their scale comes from


@dataclass
class StaticPlan:
    """`activations[t]` names the tensor whose calibrated range quantizes tensor t (t itself, or
    the input of a scale-keeping op); `nodes` are the Conv/MatMul/Gemm nodes quantized (by
    index in the graph); `fused[i]` the Relu/Clip removed after node i."""

    activations: dict[str, str]
    nodes: list[int]
    fused: dict[int, int]

    @property
    def calibration_tensors(self) -> list[str]:
        return sorted(set(self.activations.values()))


def plan_static(model: onnx.ModelProto, options: QuantizeOptions) -> StaticPlan:
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    types = _float32_tensors(model)
    uses = _use_counts(graph)
    outputs = {o.name for o in graph.output}
    passed_through = outputs & {i.name for i in graph.input}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(i)

    activations: dict[str, str] = {}
    nodes: list[int] = []
    fused: dict[int, int] = {}
    fused_away: set[int] = set()
    for i, node in enumerate(graph.node):
        if i in fused_away or options.keeps_float(node):
            continue
        if node.op_type in QUANTIZED_OPS:
            acts = _activation_inputs(node, inits, types)
            if acts is None or node.output[0] not in types:
                continue
            if any(name in passed_through for name in acts):
                continue  # a graph input that is also an output keeps its name: no DQ for it
            for name in acts:
                activations.setdefault(name, name)
            out = node.output[0]
            after = consumers.get(out, [])
            if len(after) == 1 and uses[out] == 1 and out not in outputs:
                j = after[0]
                activation = graph.node[j]
                if not options.keeps_float(activation) and _removable(activation, inits):
                    fused[i] = j
                    fused_away.add(j)
                    out = activation.output[0]
            activations[out] = out
            nodes.append(i)
        elif node.op_type in SCALE_KEEPING_OPS:
            source = activations.get(node.input[0]) if node.input else None
            if source is not None and node.output[0] in types:
                activations[node.output[0]] = source
        elif node.op_type == "Concat":
            if all(name in activations for name in node.input) and node.output[0] in types:
                activations[node.output[0]] = node.output[0]
    return StaticPlan(activations, nodes, fused)


def _activation_inputs(
    node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto], types: set[str]
) -> list[str] | None:
    """The inputs quantized as activations, or None if the node stays float (a non-float32
    input, a Conv/Gemm weight that is not a constant)."""
    a, b = node.input[0], node.input[1]
    if a in inits or a not in types:
        return None
    if b in inits:
        return [a] if inits[b].data_type == TensorProto.FLOAT else None
    if node.op_type == "MatMul" and b in types:
        return [a, b]
    return None


def _removable(activation: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]) -> bool:
    """A Relu, or a Clip to [0, b] with constant bounds: the quantized output clips as it does."""
    if activation.op_type == "Relu":
        return True
    if activation.op_type != "Clip" or len(activation.input) < 3:
        return False
    bounds = activation.input[1:3]
    if not all(name in inits for name in bounds):
        return False
    low, high = (float(numpy_helper.to_array(inits[name])) for name in bounds)
    return low == 0.0 and high >= 0.0


# ---------------------------------------------------------------------------------------------
# Static quantization


@dataclass(frozen=True)
class _QParams:
    scale: str
    zero_point: str
    scale_value: float


def quantize_static(
    model: onnx.ModelProto,
    ranges: Mapping[str, TensorRange],
    options: QuantizeOptions | None = None,
) -> onnx.ModelProto:
    """The QDQ model of `model` (already `prepare`d) with activations quantized from `ranges`
    (calibrate.calibrate over `plan_static(model, options).calibration_tensors`)."""
    options = options or QuantizeOptions()
    _require_opset(model, 10, "QuantizeLinear")
    options = _per_tensor_below_opset_13(model, options)
    plan = plan_static(model, options)
    missing = [t for t in plan.calibration_tensors if t not in ranges]
    if missing:
        raise ModelError(f"no calibrated range for tensors {missing[:5]}: calibrate them first")
    model = _copy(model)
    graph = model.graph
    old_nodes = list(graph.node)
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    elem_type, qmin, qmax = ACTIVATION_TYPES[options.activation_type]

    # The fused activation's output is written by the quantized op itself.
    for i, j in plan.fused.items():
        old_nodes[i].output[0] = old_nodes[j].output[0]
    dropped = set(plan.fused.values())

    names = _Names(graph)
    params: dict[str, _QParams] = {}
    for source in plan.calibration_tensors:
        scale, zero_point = _activation_params(ranges[source], qmin, qmax)
        params[source] = _QParams(
            names.initializer(f"{source}_scale", np.array(scale, np.float32)),
            names.initializer(f"{source}_zero_point", np.array(zero_point, _np(elem_type))),
            scale,
        )
    tensor_params = {t: params[source] for t, source in plan.activations.items()}

    weight_nodes: list[onnx.NodeProto] = []
    dequantized: dict[str, str] = {}  # tensor -> its DequantizeLinear output
    for t in tensor_params:
        dequantized[t] = t if t in outputs else names.fresh(f"{t}_DequantizeLinear_Output")

    new_nodes: list[onnx.NodeProto] = []
    graph_inputs = {i.name for i in graph.input}
    for t, p in tensor_params.items():
        if t in graph_inputs:
            new_nodes += _qdq(names, t, t, p, dequantized[t])
    weights_done: dict[tuple[str, int | None], tuple[str, np.ndarray]] = {}
    quantized = set(plan.nodes)
    for i, node in enumerate(old_nodes):
        if i in dropped:
            continue
        # Activation inputs read the dequantized tensor.
        for k, name in enumerate(node.input):
            if name in dequantized and name not in outputs:
                node.input[k] = dequantized[name]
        if i in quantized:
            weight_nodes += _quantize_weights(names, node, inits, tensor_params, weights_done,
                                              options)  # fmt: skip
        for k, name in enumerate(node.output):
            if name not in tensor_params:
                continue
            source = name
            if name in outputs:
                source = names.fresh(f"{name}_QuantizeLinear_Input")
                node.output[k] = source
            new_nodes.append(node)
            new_nodes += _qdq(names, name, source, tensor_params[name], dequantized[name])
            break
        else:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(weight_nodes + new_nodes)
    _drop_unused_initializers(graph)
    _check_written(model)
    return model


def _qdq(names: _Names, name: str, source: str, p: _QParams, output: str) -> list[onnx.NodeProto]:
    """QuantizeLinear(source) -> DequantizeLinear -> output, named after tensor `name`."""
    q = names.fresh(f"{name}_QuantizeLinear_Output")
    return [
        helper.make_node("QuantizeLinear", [source, p.scale, p.zero_point], [q],
                         name=names.fresh(f"{name}_QuantizeLinear")),
        helper.make_node("DequantizeLinear", [q, p.scale, p.zero_point], [output],
                         name=names.fresh(f"{name}_DequantizeLinear")),
    ]  # fmt: skip


def _activation_params(r: TensorRange, qmin: int, qmax: int) -> tuple[float, int]:
    """Asymmetric scale and zero point of a range (widened to contain 0)."""
    lo, hi = min(float(r.lo), 0.0), max(float(r.hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ModelError(f"calibrated range [{lo}, {hi}] is not finite")
    if hi == lo:
        return 1.0, qmin
    scale = float(np.float32((hi - lo) / (qmax - qmin)))
    if scale < np.finfo(np.float32).tiny:
        scale = float(np.finfo(np.float32).tiny)
    zero_point = int(np.clip(np.rint(qmin - lo / scale), qmin, qmax))
    return scale, zero_point


def _weight_axis(node: onnx.NodeProto, rank: int) -> int:
    """The output-channel axis of a Conv/MatMul/Gemm weight."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return rank - 1


def quantize_weight(
    weight: np.ndarray, axis: int | None, level: int = _WEIGHT_LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric s8 values in [-level, level] (127, or 64 for 7-bit weights) and float32
    scales (per `axis`, or one scale)."""
    if axis is None:
        magnitude = np.array(np.max(np.abs(weight)) if weight.size else 0.0)
    else:
        others = tuple(d for d in range(weight.ndim) if d != axis)
        magnitude = np.max(np.abs(weight), axis=others) if weight.size else np.zeros(0)
    scale = (magnitude / level).astype(np.float32)
    # An all-zero channel quantizes to zeros with any positive scale.
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    shape = [1] * weight.ndim
    if axis is not None:
        shape[axis] = -1
    values = np.clip(np.rint(weight / scale.reshape(shape)), -level, level)
    return values.astype(np.int8), scale


def _quantize_weights(
    names: _Names,
    node: onnx.NodeProto,
    inits: Mapping[str, onnx.TensorProto],
    tensor_params: Mapping[str, _QParams],
    done: dict[tuple[str, int | None], tuple[str, np.ndarray]],
    options: QuantizeOptions,
) -> list[onnx.NodeProto]:
    """Weight (and bias) of a quantized node through DequantizeLinear; returns the new nodes."""
    new_nodes: list[onnx.NodeProto] = []
    name = node.input[1]
    if name not in inits:  # MatMul of two activations
        return new_nodes
    weight = numpy_helper.to_array(inits[name])
    axis: int | None = _weight_axis(node, weight.ndim)
    if not options.per_channel or weight.ndim < 2 or (node.op_type == "MatMul" and weight.ndim > 2):
        axis = None
    key = (name, axis)
    if key not in done:
        values, scale = quantize_weight(weight, axis, options.weight_level)
        q = names.initializer(f"{name}_quantized", values)
        s = names.initializer(f"{name}_scale", scale)
        zp = names.initializer(f"{name}_zero_point", np.zeros(scale.shape, np.int8))
        out = names.fresh(f"{name}_DequantizeLinear_Output")
        attrs = {"axis": axis} if axis is not None else {}
        new_nodes.append(helper.make_node("DequantizeLinear", [q, s, zp], [out], name=out, **attrs))
        done[key] = (out, scale)
    node.input[1], w_scale = done[key]

    # The bias (Conv's B; Gemm's 1-D C when alpha = beta = 1): int32 at x_scale * w_scale.
    if len(node.input) < 3 or not node.input[2] or node.input[2] not in inits:
        return new_nodes
    if node.op_type == "Gemm" and any(
        a.name in ("alpha", "beta") and a.f != 1.0 for a in node.attribute
    ):
        return new_nodes
    if node.op_type not in ("Conv", "Gemm"):
        return new_nodes
    bias = numpy_helper.to_array(inits[node.input[2]])
    channels = weight.shape[axis if axis is not None else _weight_axis(node, weight.ndim)]
    if bias.dtype != np.float32 or bias.shape != (channels,):
        return new_nodes
    x_params = tensor_params.get(_undequantized(node.input[0]))
    if x_params is None:
        return new_nodes
    # Per channel with per-channel weights (axis 0 of the bias), else one scale.
    bias_scale = (np.float32(x_params.scale_value) * w_scale).astype(np.float32)
    values = np.rint(bias.astype(np.float64) / bias_scale.astype(np.float64))
    if np.any(np.abs(values) > _INT32_MAX) or not np.all(np.isfinite(values)):
        return new_nodes  # kept float: still a valid (and correct) model
    bias_name = node.input[2]
    q = names.initializer(f"{bias_name}_quantized", values.astype(np.int32))
    s = names.initializer(f"{bias_name}_quantized_scale", bias_scale)
    zp = names.initializer(
        f"{bias_name}_quantized_zero_point", np.zeros(bias_scale.shape, np.int32)
    )
    out = names.fresh(f"{bias_name}_DequantizeLinear_Output")
    attrs = {"axis": 0} if bias_scale.ndim else {}
    new_nodes.append(helper.make_node("DequantizeLinear", [q, s, zp], [out], name=out, **attrs))
    node.input[2] = out
    return new_nodes


def _undequantized(name: str) -> str:
    suffix = "_DequantizeLinear_Output"
    return name[: -len(suffix)] if name.endswith(suffix) else name


# ---------------------------------------------------------------------------------------------
# Dynamic quantization (MatMulInteger form)


def quantize_dynamic(
    model: onnx.ModelProto, options: QuantizeOptions | None = None
) -> onnx.ModelProto:
    """`model` with each MatMul of a float32 activation by a constant float32 2-D weight in
    onnxruntime's dynamic form (see the module docstring). Weights: symmetric s8, per column
    with `options.per_channel`."""
    options = options or QuantizeOptions()
    _require_opset(model, 11, "DynamicQuantizeLinear")
    model = _copy(model)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    types = _float32_tensors(model)
    names = _Names(graph)
    new_nodes: list[onnx.NodeProto] = []
    dynamic: dict[str, tuple[str, str, str]] = {}  # activation -> (quantized, scale, zero point)
    weights: dict[str, tuple[str, str, str]] = {}
    for node in list(graph.node):
        b = node.input[1] if node.op_type == "MatMul" else ""
        if (
            node.op_type != "MatMul"
            or options.keeps_float(node)
            or node.input[0] not in types
            or b not in inits
            or inits[b].data_type != TensorProto.FLOAT
            or len(inits[b].dims) != 2
        ):
            new_nodes.append(node)
            continue
        a, out = node.input[0], node.output[0]
        if a not in dynamic:
            quantized = tuple(names.fresh(f"{a}_{part}") for part in ("quantized", "scale",
                                                                        "zero_point"))  # fmt: skip
            new_nodes.append(
                helper.make_node("DynamicQuantizeLinear", [a], list(quantized),
                                 name=names.fresh(f"{a}_quantize"))
            )  # fmt: skip
            dynamic[a] = quantized
        if b not in weights:
            values, scale = quantize_weight(
                numpy_helper.to_array(inits[b]),
                1 if options.per_channel else None,
                options.weight_level,
            )
            weights[b] = (
                names.initializer(f"{b}_quantized", values),
                names.initializer(f"{b}_scale", scale),
                names.initializer(f"{b}_zero_point", np.zeros(scale.shape, np.int8)),
            )
        a_q, a_scale, a_zp = dynamic[a]
        b_q, b_scale, b_zp = weights[b]
        scales = names.fresh(f"{a_scale}_{b_scale}_mul")
        product = names.fresh(f"{out}_output_quantized")
        cast = names.fresh(f"{out}_output_quantized_cast_output")
        new_nodes += [
            helper.make_node("Mul", [a_scale, b_scale], [scales], name=scales),
            helper.make_node("MatMulInteger", [a_q, b_q, a_zp, b_zp], [product],
                             name=names.fresh(f"{node.name or out}_quant")),
            helper.make_node("Cast", [product], [cast], name=cast, to=TensorProto.FLOAT),
            helper.make_node("Mul", [cast, scales], [out], name=names.fresh(f"{out}_scaled")),
        ]  # fmt: skip
    del graph.node[:]
    graph.node.extend(new_nodes)
    _drop_unused_initializers(graph)
    _check_written(model)
    return model


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy to rewrite, of a model onnx's checker accepts (ModelError otherwise)."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        raise ModelError(f"the float model is not valid ONNX: {error}") from None
    result = onnx.ModelProto()
    result.CopyFrom(model)
    return result


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _require_opset(model: onnx.ModelProto, minimum: int, what: str) -> None:
    if opset_of(model) < minimum:
        raise ModelError(
            f"model opset {opset_of(model)}: {what} needs opset >= {minimum}; convert the "
            f"model first (onnx.version_converter.convert_version(model, {minimum}))"
        )


def _per_tensor_below_opset_13(model: onnx.ModelProto, options: QuantizeOptions) -> QuantizeOptions:
    """Per-axis DequantizeLinear needs opset 13: older models get per-tensor weights."""
    if options.per_channel and opset_of(model) < 13:
        warnings.warn(
            f"model opset {opset_of(model)} < 13 has no per-axis DequantizeLinear: weights are "
            "quantized per tensor (convert the model to opset 13 for per-channel weights)",
            stacklevel=3,
        )
        return dataclasses.replace(options, per_channel=False)
    return options


def _check_written(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        raise InternalCompilerError(f"quantization wrote an invalid model: {error}") from None


def _use_counts(graph: onnx.GraphProto) -> Counter[str]:
    """How often each tensor is read: by nodes (and the subgraphs of If/Loop/Scan, which may
    read the outer graph's tensors) and as a graph output."""
    uses: Counter[str] = Counter()
    for node in graph.node:
        uses.update(node.input)
        for attribute in node.attribute:
            for body in (attribute.g, *attribute.graphs):
                uses.update(_use_counts(body))
    uses.update(o.name for o in graph.output)
    return uses


def _float32_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of the tensors known to be float32 (shape inference; unknown ones are skipped)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as error:  # onnx raises several types of its own
        raise ModelError(f"shape inference failed, cannot tell tensor types: {error}") from None
    graph = inferred.graph
    infos = [*graph.input, *graph.value_info, *graph.output]
    result = {v.name for v in infos if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    result |= {t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT}
    return result


class _Names:
    """Fresh names for tensors and nodes added to a graph: the base name, else base_1, base_2..."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.taken = _all_names(graph)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    def initializer(self, base: str, array: np.ndarray) -> str:
        name = self.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        return name


def _all_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor and node name of the graph and its subgraphs."""
    names = {t.name for t in graph.initializer}
    names |= {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
        for attribute in node.attribute:
            for body in (attribute.g, *attribute.graphs):
                names |= _all_names(body)
    return names


def _np(elem_type: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Initializers nothing reads any more (the float weights quantized) go, with the graph
    inputs that named them (models of IR < 4 list initializers as inputs too)."""
    used = set(_use_counts(graph))
    dropped = {t.name for t in graph.initializer if t.name not in used}
    keep = [t for t in graph.initializer if t.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    inputs = [i for i in graph.input if i.name not in dropped]
    del graph.input[:]
    graph.input.extend(inputs)


__all__: Sequence[str] = [
    "QUANTIZED_OPS",
    "QuantizeOptions",
    "StaticPlan",
    "plan_static",
    "prepare",
    "quantize_dynamic",
    "quantize_static",
    "quantize_weight",
]
