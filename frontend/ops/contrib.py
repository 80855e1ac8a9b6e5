"""onnxruntime's own ops that its graph optimizer writes into saved models (a model saved with
`SessionOptions.optimized_model_filepath`, or by onnxruntime.transformers' optimizer): the
com.microsoft fusions FusedConv, FusedGemm, FusedMatMul, BiasGelu, FastGelu,
SkipLayerNormalization, EmbedLayerNormalization, SkipSimplifiedLayerNormalization, QuickGelu,
RotaryEmbedding and the CUDA-only BiasSplitGelu, BiasAdd, GemmFastGelu (Attention and
MultiHeadAttention are in attention.py). (com.microsoft Gelu is ONNX's Gelu, in
activation.py; the default-domain SimplifiedLayerNormalization onnxruntime registers is
RMSNormalization, in normalization.py.)
Each is imported as its ONNX ops (`OnnxNodes`), so it runs on ember's kernels and ember's
passes fuse it again; what a converter does not know (another activation, FusedMatMul's batch
transposes) is refused naming the attribute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from ember.frontend.context import ImportContext, Node, Value, dtype_of, shape_of
from ember.frontend.ops.sampling import OnnxNodes
from ember.frontend.registry import converts

_MS = "com.microsoft"


def _text(node: Node, key: str, default: str) -> str:
    value = node.attrs.get(key, default)
    return value.decode() if isinstance(value, bytes) else value


def _activation(
    nodes: OnnxNodes, node: Node, value: str, kind: str, params: Sequence[float]
) -> str:
    """`kind` applied to `value` as onnxruntime's fused kernels do (activation_params for
    FusedConv; activation_alpha/beta for FusedGemm), or a refusal naming it."""
    if kind in ("", "Identity"):
        return value
    if kind in ("Relu", "Sigmoid", "Tanh"):
        return nodes.add(kind, [value])
    if kind == "LeakyRelu":
        return nodes.add(kind, [value], alpha=float(params[0]) if params else 0.01)
    if kind == "HardSigmoid":
        alpha, beta = (float(params[0]), float(params[1])) if len(params) >= 2 else (0.2, 0.5)
        return nodes.add(kind, [value], alpha=alpha, beta=beta)
    if kind == "Clip":
        low, high = (float(params[0]), float(params[1])) if len(params) >= 2 else (-3.4e38, 3.4e38)
        return nodes.add(
            "Clip",
            [value, nodes.const(np.float32(low)), nodes.const(np.float32(high))],
        )
    raise node.unsupported(
        f"activation '{kind}' (known: Relu, Sigmoid, Tanh, LeakyRelu, HardSigmoid, Clip)"
    )


@converts("FusedConv", domain=_MS)
def _fused_conv(imp: ImportContext, node: Node) -> Sequence[Value]:
    # Inputs X, W, B, Z (added before the activation: a fused residual sum).
    x, w, b, z = (node.proto.input[i] if i < len(node.proto.input) else "" for i in range(4))
    nodes = OnnxNodes(f"{node.proto.output[0]}/FusedConv")
    conv_attrs = {
        a: node.attrs[a]
        for a in ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
        if a in node.attrs
    }
    y = nodes.add("Conv", [x, w, b] if b else [x, w], **conv_attrs)
    if z:
        y = nodes.add("Add", [y, z])
    params = [float(p) for p in node.attrs.get("activation_params", [])]
    y = _activation(nodes, node, y, _text(node, "activation", ""), params)
    return [nodes.import_at(imp, node, y, 13)]


@converts("FusedGemm", domain=_MS)
def _fused_gemm(imp: ImportContext, node: Node) -> Sequence[Value]:
    nodes = OnnxNodes(f"{node.proto.output[0]}/FusedGemm")
    gemm_attrs = {
        a: node.attrs[a] for a in ("alpha", "beta", "transA", "transB") if a in node.attrs
    }
    y = nodes.add("Gemm", list(node.proto.input), **gemm_attrs)
    kind = _text(node, "activation", "")
    params = [
        float(node.attrs[a]) for a in ("activation_alpha", "activation_beta") if a in node.attrs
    ]
    y = _activation(nodes, node, y, kind, params)
    return [nodes.import_at(imp, node, y, 13)]


@converts("FusedMatMul", domain=_MS)
def _fused_matmul(imp: ImportContext, node: Node) -> Sequence[Value]:
    """alpha * op(A) @ op(B), op transposing the last two axes when transA/transB is set."""
    for attr in ("transBatchA", "transBatchB"):
        if node.attrs.get(attr, 0):
            raise node.unsupported(f"{attr}=1 (only transA, transB and alpha are supported)")
    a, b = node.proto.input[0], node.proto.input[1]
    nodes = OnnxNodes(f"{node.proto.output[0]}/FusedMatMul")
    for index, attr in ((0, "transA"), (1, "transB")):
        if node.attrs.get(attr, 0):
            rank = len(shape_of(imp.required(node, index)))
            if rank < 2:
                raise node.error(f"{attr}=1 on input {index} of rank {rank}")
            perm = [*range(rank - 2), rank - 1, rank - 2]
            name = nodes.add("Transpose", [a if index == 0 else b], perm=perm)
            a, b = (name, b) if index == 0 else (a, name)
    y = nodes.add("MatMul", [a, b])
    alpha = float(node.attrs.get("alpha", 1.0))
    if alpha != 1.0:
        dtype = dtype_of(imp.required(node, 0))
        y = nodes.add("Mul", [y, nodes.const(np.asarray(alpha, dtype))])
    return [nodes.import_at(imp, node, y, 13)]


def _gelu(imp: ImportContext, node: Node, approximate: str) -> Sequence[Value]:
    """ONNX's Gelu (opset 20) of x [+ bias]: exact (BiasGelu) or tanh-approximated (FastGelu)."""
    nodes = OnnxNodes(f"{node.proto.output[0]}/{node.op_type}")
    v = node.proto.input[0]
    if len(node.proto.input) > 1 and node.proto.input[1]:
        v = nodes.add("Add", [v, node.proto.input[1]])
    y = nodes.add("Gelu", [v], approximate=approximate)
    return [nodes.import_at(imp, node, y, 20)]


@converts("BiasGelu", domain=_MS)
def _bias_gelu(imp: ImportContext, node: Node) -> Sequence[Value]:
    return _gelu(imp, node, "none")


@converts("FastGelu", domain=_MS)
def _fast_gelu(imp: ImportContext, node: Node) -> Sequence[Value]:
    return _gelu(imp, node, "tanh")


@converts("SkipLayerNormalization", domain=_MS)
def _skip_layer_norm(imp: ImportContext, node: Node) -> Sequence[Value]:
    """LayerNormalization(input + skip [+ bias]) over the last axis; outputs Y, mean,
    inv_std_var, and the sum input + skip + bias (which the next layer's skip reads)."""
    x, skip, gamma, beta, bias = [*node.proto.input, "", "", ""][:5]
    nodes = OnnxNodes(f"{node.proto.output[0]}/SkipLayerNormalization")
    total = nodes.add("Add", [x, skip])
    if bias:
        total = nodes.add("Add", [total, bias])
    outs = [f"{nodes.prefix}/LayerNormalization{s}" for s in ("", "/mean", "/inv_std")]
    nodes.nodes.append(
        helper.make_node(
            "LayerNormalization",
            [total, gamma, beta] if beta else [total, gamma],
            outs,
            name=outs[0],
            axis=-1,
            epsilon=float(node.attrs.get("epsilon", 1e-12)),
        )
    )
    wanted = list(node.proto.output)
    if any(name in imp.used for name in wanted[1:3]):
        imp.used |= set(outs[1:])  # LayerNormalization computes them only when read
    y = nodes.import_at(imp, node, outs[0], 17)
    results = [y, *(imp.env.get(name, y) for name in outs[1:])][: min(len(wanted), 3)]
    if len(wanted) > 3:
        results.append(imp.env[total])
    return results


@converts("EmbedLayerNormalization", domain=_MS)
def _embed_layer_norm(imp: ImportContext, node: Node) -> Sequence[Value]:
    """BERT's embeddings: LayerNormalization(word[input_ids] + position[position_ids] +
    segment[segment_ids]) over the hidden axis; outputs Y, mask_index (per batch row the count
    of mask entries equal to 1, as onnxruntime's kernel counts; 0 without a mask) and the sum
    before normalization."""
    names = [*node.proto.input, *[""] * 9][:9]
    ids, segment_ids, word, position, segment, gamma, beta, mask, position_ids = names
    input_ids = imp.required(node, 0)
    if len(shape_of(input_ids)) != 2:
        raise node.error(
            f"input_ids of shape {list(shape_of(input_ids))}; [batch, sequence] expected"
        )
    batch, seq = shape_of(input_ids)
    if bool(segment_ids) != bool(segment):
        raise node.error("segment_ids and segment_embedding must be given together")
    nodes = OnnxNodes(f"{node.proto.output[0]}/EmbedLayerNormalization")
    if not position_ids:
        position_ids = nodes.i64(np.arange(seq)[None, :])
    total = nodes.add(
        "Add", [nodes.add("Gather", [word, ids]), nodes.add("Gather", [position, position_ids])]
    )
    if segment:
        total = nodes.add("Add", [total, nodes.add("Gather", [segment, segment_ids])])
    out = nodes.add(
        "LayerNormalization",
        [total, gamma, beta] if beta else [total, gamma],
        axis=-1,
        epsilon=float(node.attrs.get("epsilon", 1e-12)),
    )
    results = [nodes.import_at(imp, node, out, 17)]
    wanted = list(node.proto.output)
    if len(wanted) > 1:
        counts = OnnxNodes(f"{node.proto.output[0]}/EmbedLayerNormalization/mask_index")
        if mask:
            ones = counts.add(
                "Equal", [mask, counts.const(np.ones((), dtype_of(imp.required(node, 7))))]
            )
            per_row = counts.reduce(
                "ReduceSum", counts.add("Cast", [ones], to=onnx.TensorProto.INT32), [1], 18, 0
            )
            results.append(counts.import_at(imp, node, per_row, 18))
        else:
            zeros = counts.const(np.zeros(batch, np.int32))
            results.append(counts.import_at(imp, node, zeros, 13))
    if len(wanted) > 2:
        results.append(imp.env[total])
    return results


@converts("SkipSimplifiedLayerNormalization", domain=_MS)
def _skip_simplified_layer_norm(imp: ImportContext, node: Node) -> Sequence[Value]:
    """RMSNormalization(input + skip [+ bias]) over the last axis (T5/LLaMA's residual RMS
    norm); outputs Y, mean and inv_std_var (not computed: refused if read), and the sum."""
    x, skip, gamma, bias = [*node.proto.input, "", ""][:4]
    wanted = list(node.proto.output)
    for index in (1, 2):
        if len(wanted) > index and wanted[index] in imp.used:
            raise node.unsupported(f"output #{index} '{wanted[index]}' (mean / inv_std_var)")
    nodes = OnnxNodes(f"{node.proto.output[0]}/SkipSimplifiedLayerNormalization")
    total = nodes.add("Add", [x, skip])
    if bias:
        total = nodes.add("Add", [total, bias])
    epsilon = float(node.attrs.get("epsilon", 1e-12))
    y = nodes.add("RMSNormalization", [total, gamma], axis=-1, epsilon=epsilon)
    result = nodes.import_at(imp, node, y, 23)
    results = [result, result, result][: min(len(wanted), 3)]  # unread (checked above)
    if len(wanted) > 3:
        results.append(imp.env[total])
    return results


@converts("QuickGelu", domain=_MS)
def _quick_gelu(imp: ImportContext, node: Node) -> Sequence[Value]:
    """x * sigmoid(alpha * x) (CLIP's GELU approximation; alpha 1.702 by default)."""
    nodes = OnnxNodes(f"{node.proto.output[0]}/QuickGelu")
    x = node.proto.input[0]
    dtype = dtype_of(imp.required(node, 0))
    alpha = float(node.attrs.get("alpha", 1.702))
    scaled = nodes.add("Mul", [x, nodes.const(np.asarray(alpha, dtype))])
    y = nodes.add("Mul", [x, nodes.add("Sigmoid", [scaled])])
    return [nodes.import_at(imp, node, y, 13)]


@converts("RotaryEmbedding", domain=_MS)
def _rotary_embedding(imp: ImportContext, node: Node) -> Sequence[Value]:
    """ai.onnx RotaryEmbedding (opset 23, the same computation on the same [B, N, S, H] or
    [B, S, hidden] layouts) with onnxruntime's input order (input, position_ids, cos_cache,
    sin_cache); a position_ids of one element is the offset of position 0 (positions offset +
    0 .. S-1 in every batch row), and num_heads of a 3-D input defaults to what the cache
    width implies, as onnxruntime derives it."""
    if node.attrs.get("is_packed_batching", 0):
        raise node.unsupported("attribute is_packed_batching=1 (ember supports 0)")
    x_name, positions, cos, sin = [*node.proto.input, "", "", ""][:4]
    x, position_ids = imp.required(node, 0), imp.required(node, 1)
    cos_shape = shape_of(imp.required(node, 2))
    x_shape = shape_of(x)
    if len(x_shape) not in (3, 4) or len(cos_shape) != 2:
        raise node.error(
            f"input {list(x_shape)} with cos_cache {list(cos_shape)}: a 3-D or 4-D input and "
            "a 2-D cache expected"
        )
    batch, seq = x_shape[0], x_shape[2 if len(x_shape) == 4 else 1]
    rotary_dim = int(node.attrs.get("rotary_embedding_dim", 0))
    heads = int(node.attrs.get("num_heads", 0))
    if len(x_shape) == 3 and heads == 0:
        if rotary_dim:
            raise node.error("num_heads is required with rotary_embedding_dim on a 3-D input")
        head_size = 2 * cos_shape[1]
        if head_size == 0 or x_shape[2] % head_size:
            raise node.error(f"hidden size {x_shape[2]} is not a multiple of {head_size}")
        heads = x_shape[2] // head_size
    nodes = OnnxNodes(f"{node.proto.output[0]}/RotaryEmbedding")
    if math.prod(shape_of(position_ids)) == 1 and (batch, seq) != (1, 1):
        offset = nodes.add("Reshape", [positions, nodes.i64([1, 1])])
        offset = nodes.add("Cast", [offset], to=onnx.TensorProto.INT64)
        positions = nodes.add("Add", [offset, nodes.i64(np.arange(seq)[None, :])])
        positions = nodes.add("Expand", [positions, nodes.i64([batch, seq])])
    attrs: dict[str, object] = {"interleaved": int(node.attrs.get("interleaved", 0))}
    if heads:
        attrs["num_heads"] = heads
    if rotary_dim:
        attrs["rotary_embedding_dim"] = rotary_dim
    y = nodes.add("RotaryEmbedding", [x_name, cos, sin, positions], **attrs)
    return [nodes.import_at(imp, node, y, 23)]


# onnxruntime's CUDA-only fusions (no CPU kernel: its CPU session refuses them), which its
# optimizer writes into models optimized for GPU (stable diffusion's UNet); computed here as
# ContribOperators.md defines them.


@converts("BiasSplitGelu", domain=_MS)
def _bias_split_gelu(imp: ImportContext, node: Node) -> Sequence[Value]:
    """(x + bias) split in two halves on the last axis: left * Gelu(right) (exact Gelu)."""
    x = imp.required(node, 0)
    width = shape_of(x)[-1] if shape_of(x) else 0
    if len(shape_of(x)) != 3 or width % 2:
        raise node.error(f"input of shape {list(shape_of(x))}; [N, S, D] with D even expected")
    nodes = OnnxNodes(f"{node.proto.output[0]}/BiasSplitGelu")
    total = nodes.add("Add", [node.proto.input[0], node.proto.input[1]])
    half = width // 2
    axis = nodes.i64([2])
    left = nodes.add("Slice", [total, nodes.i64([0]), nodes.i64([half]), axis])
    right = nodes.add("Slice", [total, nodes.i64([half]), nodes.i64([width]), axis])
    y = nodes.add("Mul", [left, nodes.add("Gelu", [right], approximate="none")])
    return [nodes.import_at(imp, node, y, 20)]


@converts("BiasAdd", domain=_MS)
def _bias_add(imp: ImportContext, node: Node) -> Sequence[Value]:
    """x + bias + skip."""
    nodes = OnnxNodes(f"{node.proto.output[0]}/BiasAdd")
    x, bias, skip = [*node.proto.input, "", ""][:3]
    if not (x and bias and skip):
        raise node.error("inputs X, bias and skip are all required")
    y = nodes.add("Add", [nodes.add("Add", [x, bias]), skip])
    return [nodes.import_at(imp, node, y, 13)]


@converts("GemmFastGelu", domain=_MS)
def _gemm_fast_gelu(imp: ImportContext, node: Node) -> Sequence[Value]:
    """FastGelu(X @ W [+ bias]): MatMul, then the tanh-approximated Gelu."""
    nodes = OnnxNodes(f"{node.proto.output[0]}/GemmFastGelu")
    x, w, bias = [*node.proto.input, ""][:3]
    y = nodes.add("MatMul", [x, w])
    if bias:
        y = nodes.add("Add", [y, bias])
    y = nodes.add("Gelu", [y], approximate="tanh")
    return [nodes.import_at(imp, node, y, 20)]
