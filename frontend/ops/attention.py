"""ONNX -> graph dialect: Attention (opset 23+): matmuls around the softmax kernel, with every
mask folded into one additive bias. onnxruntime's com.microsoft Attention, MultiHeadAttention
and GroupQueryAttention (below) are decomposed into ONNX ops around it, their masks and KV
caches built as onnxruntime's CPU kernels build them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx

from ember.dialects import graph
from ember.frontend.context import (
    Const,
    ImportContext,
    Node,
    Value,
    dtype_of,
    i64_attr,
    scalar,
    shape_of,
)
from ember.frontend.ops.sampling import OnnxNodes
from ember.frontend.registry import converts


def _heads_first(imp: ImportContext, x: Value, heads: int) -> Value:
    """[B, S, heads * H] -> [B, heads, S, H] (4-D inputs are already in that layout)."""
    if len(shape_of(x)) == 4:
        return x
    b, s, hidden = shape_of(x)
    split = imp.reshape(x, [b, s, heads, hidden // heads])
    perm = [0, 2, 1, 3]
    return imp.emit(
        graph.TransposeOp, [split], [b, heads, s, hidden // heads], perm=graph.i64_array(perm)
    )


def _allowed_bias(allowed: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.where(allowed, 0.0, -np.inf).astype(dtype)


@converts("Attention")
def _attention(imp: ImportContext, node: Node) -> Sequence[Value]:

    q, k, v = (imp.required(node, i) for i in range(3))
    mask, past_k, past_v = (imp.input(node, i) for i in range(3, 6))
    nonpad = imp.input(node, 6)
    a = node.attrs
    rank = len(shape_of(q))
    dtype = dtype_of(q)
    f32 = np.dtype(np.float32)
    if dtype.itemsize > f32.itemsize:
        # The matmul kernels compute in float32: float64 inputs would silently lose precision.
        raise node.unsupported(f"inputs of type {dtype} (Attention computes in float32 only)")
    if dtype != f32:  # 16-bit inputs compute in float32, rounded once at the end
        q, k, v = (imp.emit(graph.CastOp, [t], shape_of(t), f32) for t in (q, k, v))
        past_k, past_v = (
            None if t is None else imp.emit(graph.CastOp, [t], shape_of(t), f32)
            for t in (past_k, past_v)
        )
    if rank == 3:
        q = _heads_first(imp, q, int(a["q_num_heads"]))
        k = _heads_first(imp, k, int(a["kv_num_heads"]))
        v = _heads_first(imp, v, int(a["kv_num_heads"]))
    if past_k is not None and past_v is not None:
        k, v = imp.concat([past_k, k], 2), imp.concat([past_v, v], 2)
    present_k, present_v = k, v
    batch, q_heads, q_len, head = shape_of(q)
    kv_heads, kv_len = shape_of(k)[1], shape_of(k)[2]
    if kv_len == 0 and batch * q_heads * q_len > 0:
        # A softmax over no keys is undefined (onnxruntime and onnx.reference fail too).
        raise node.error(f"no keys to attend to: key {list(shape_of(k))} (sequence length 0)")
    past = shape_of(past_k)[2] if past_k is not None else 0

    # One additive bias [.., q_len, kv_len]: the mask, then causal/window limits (constants).
    bias: Value | None = None
    if mask is not None:
        is_bool = dtype_of(mask) == np.bool_
        short = kv_len - shape_of(mask)[-1]
        if short > 0:  # a mask shorter than the keys leaves the rest masked
            fill = Const(
                np.full(
                    [*shape_of(mask)[:-1], short], False if is_bool else -np.inf, dtype_of(mask)
                )
            )
            mask = imp.concat([mask, fill], len(shape_of(mask)) - 1)
        if is_bool:
            mask = imp.where(node, mask, scalar(0.0, q), scalar(-np.inf, q))
        elif dtype_of(mask) != f32:
            mask = imp.emit(graph.CastOp, [mask], shape_of(mask), f32)
        bias = mask
    # Query i sits at position i + offset among the keys: offset = the past length, or with
    # an external cache (nonpad_kv_seqlen) valid_length[b] - q_len, known only at run time.
    # Each limit is a comparison of a constant table (in j - i) with the offset.
    i_idx, j_idx = np.arange(q_len)[:, None], np.arange(kv_len)[None, :]
    left, right = int(a.get("left_window_size", -1)), int(a.get("right_window_size", -1))
    limits: list[tuple[np.ndarray, str]] = []  # allowed iff table <pred> offset
    if a.get("is_causal", 0):
        limits.append((j_idx - i_idx, "le"))  # j <= i + offset
    if left >= 0:
        limits.append((j_idx - i_idx + left, "ge"))  # i + offset - j <= left
    if right >= 0:
        limits.append((j_idx - i_idx - right, "le"))  # j - (i + offset) <= right
    if nonpad is None:
        allowed = np.ones((q_len, kv_len), bool)
        for table, predicate in limits:
            allowed &= table <= past if predicate == "le" else table >= past
        if not allowed.all():
            fixed = Const(_allowed_bias(allowed, f32))
            bias = fixed if bias is None else imp.binary(node, graph.AddOp, bias, fixed)
    else:
        lengths = imp.reshape(nonpad, [batch, 1, 1, 1])
        index_type = dtype_of(nonpad)
        positions = Const(np.arange(kv_len, dtype=index_type))
        tests = [imp.compare(node, "lt", positions, lengths)]  # keys past the valid length
        for table, predicate in limits:
            shifted = Const((table + q_len).astype(index_type))  # offset + q_len = length
            tests.append(imp.compare(node, predicate, shifted, lengths))
        inside = tests[0]
        for t in tests[1:]:
            inside = imp.emit(
                graph.AndOp, [inside, t], graph.broadcast_shapes(shape_of(inside), shape_of(t))
            )
        padding = imp.where(node, inside, scalar(0.0, q), scalar(-np.inf, q))
        bias = padding if bias is None else imp.binary(node, graph.AddOp, bias, padding)

    if q_heads != kv_heads:  # grouped-query attention: each kv head serves q_heads/kv_heads
        repeat = np.repeat(np.arange(kv_heads), q_heads // kv_heads)
        k, v = imp.gather_axis(k, 1, repeat), imp.gather_axis(v, 1, repeat)
    scale = float(a["scale"]) if "scale" in a else 1.0 / math.sqrt(head)
    k_t = imp.emit(
        graph.TransposeOp, [k], [batch, q_heads, head, kv_len], perm=graph.i64_array([0, 1, 3, 2])
    )
    scaled_q = imp.binary(node, graph.MulOp, q, scalar(scale, q))
    scores = imp.emit(graph.MatMulOp, [scaled_q, k_t, None, None], [batch, q_heads, q_len, kv_len])
    softcap = float(a.get("softcap", 0.0))
    if softcap > 0:
        capped = imp.unary(
            graph.TanhOp, imp.binary(node, graph.MulOp, scores, scalar(1 / softcap, q))
        )
        scores = imp.binary(node, graph.MulOp, capped, scalar(softcap, q))
    biased = scores
    keep: Value | None = None
    if bias is not None:
        # -inf becomes the lowest finite value: a partly masked row still gets exact zeros
        # from exp, a fully masked one no NaN; such rows are then zeroed, as ONNX specifies.
        lowest = scalar(float(np.finfo(np.float32).min), q)
        finite = imp.binary(node, graph.MaxOp, bias, lowest)
        biased = imp.binary(node, graph.AddOp, scores, finite)
        last = len(shape_of(bias)) - 1
        row_best = imp.reduce(node, bias, "max", [last], True)
        open_row = imp.compare(node, "gt", row_best, scalar(-np.inf, q))
        keep = imp.emit(graph.CastOp, [open_row], shape_of(open_row), f32)
    probs = imp.emit(graph.SoftmaxOp, [biased], shape_of(biased), axis=i64_attr(3))
    if keep is not None:
        probs = imp.binary(node, graph.MulOp, probs, keep)
    hv = shape_of(v)[3]
    y = imp.emit(graph.MatMulOp, [probs, v, None, None], [batch, q_heads, q_len, hv])
    if rank == 3:
        y = imp.emit(
            graph.TransposeOp, [y], [batch, q_len, q_heads, hv], perm=graph.i64_array([0, 2, 1, 3])
        )
        y = imp.reshape(y, [batch, q_len, q_heads * hv])
    mode = int(a.get("qk_matmul_output_mode", 0))
    with_bias = scores if bias is None else imp.binary(node, graph.AddOp, scores, bias)
    qk = {0: scores, 1: scores, 2: with_bias, 3: probs}.get(mode)
    if qk is None:
        raise node.error(f"unknown qk_matmul_output_mode {mode}")
    outputs = [y, present_k, present_v, qk]
    if dtype != f32:
        outputs = [imp.emit(graph.CastOp, [t], shape_of(t), dtype) for t in outputs]
    return outputs


# ---------------------------------------------------------------------------------------------
# onnxruntime's com.microsoft Attention and MultiHeadAttention (what onnxruntime.transformers'
# optimizer writes for BERT/GPT-2-style models), decomposed into ONNX ops around the ai.onnx
# Attention above: the Q/K/V projections, onnxruntime's masks as one additive bias, and
# Attention at opset 23.

_MS = "com.microsoft"
# onnxruntime's default mask_filter_value: a masked key's score is *added* this (finite), so a
# row whose every key is padding still gets a (uniform-ish) softmax, as onnxruntime computes.
_MASK_FILTER_DEFAULT = -10000.0
_LOWEST = float(np.finfo(np.float32).min)  # onnxruntime's causal fill (numeric_limits::lowest)


def _ms_mask_bias(
    nodes: OnnxNodes,
    node: Node,
    mask_name: str,
    mask: Value | None,
    attention_bias: str,
    dims: tuple[int, int, int, int],
    causal: bool,
) -> str:
    """onnxruntime's PrepareMask as ONNX ops: one float bias [B|1, 1|N, S, T] added to the
    scaled scores ("" when there is none). `dims` = (batch, query length S, past length P,
    total key length T). Padding (mask_index) positions get mask_filter_value; causal ones
    (unidirectional) the lowest float, which replaces the padding value there as in
    onnxruntime."""
    batch, q_len, past, total = dims
    f32 = nodes.typed(np.dtype(np.float32))
    filter_value = float(node.attrs.get("mask_filter_value", _MASK_FILTER_DEFAULT))
    allowed = ""  # bool, broadcastable to [B, 1, S, T]
    if mask is not None:
        shape = shape_of(mask)
        if not np.issubdtype(dtype_of(mask), np.integer):
            raise node.unsupported(f"mask of type {dtype_of(mask)} (onnxruntime takes int32)")
        if len(shape) == 1 and shape[0] in (batch, 2 * batch):
            # Key lengths (right padding), then for [2B] start positions (left padding).
            positions = nodes.const(np.arange(total, dtype=dtype_of(mask)))
            ends = mask_name
            if shape[0] == 2 * batch:
                ends = nodes.add("Slice", [mask_name, nodes.i64([0]), nodes.i64([batch])])
                starts = nodes.add("Slice", [mask_name, nodes.i64([batch]), nodes.i64([2 * batch])])
                starts = nodes.add("Reshape", [starts, nodes.i64([batch, 1, 1, 1])])
            ends = nodes.add("Reshape", [ends, nodes.i64([batch, 1, 1, 1])])
            allowed = nodes.add("Less", [positions, ends])
            if shape[0] == 2 * batch:
                after_start = nodes.add("GreaterOrEqual", [positions, starts])
                allowed = nodes.add("And", [allowed, after_start])
        elif len(shape) == 2 and shape[0] in (1, batch) and shape[1] == 1 and total != 1:
            pass  # onnxruntime's "dummy" 2-D mask: no mask at all
        elif len(shape) == 2 and shape[0] == batch and shape[1] == total:
            raw = nodes.add("Greater", [mask_name, nodes.const(np.zeros((), dtype_of(mask)))])
            allowed = nodes.add("Reshape", [raw, nodes.i64([batch, 1, 1, total])])
        elif len(shape) == 3 and tuple(shape) == (batch, q_len, total):
            raw = nodes.add("Greater", [mask_name, nodes.const(np.zeros((), dtype_of(mask)))])
            allowed = nodes.add("Unsqueeze", [raw, nodes.i64([1])])
        else:
            raise node.unsupported(
                f"mask_index of shape {list(shape)} (batch {batch}, sequence {q_len}, total "
                f"sequence {total}; supported: [B] or [2B] lengths, [B, T] and [B, S, T] 0/1 "
                "masks; onnxruntime's CPU kernel has no 4-D Megatron mask either)"
            )
    bias = ""
    if allowed:
        bias = nodes.add("Where", [allowed, f32(0.0), f32(filter_value)])
    if causal and q_len > 1:
        visible = np.arange(total)[None, :] <= np.arange(q_len)[:, None] + past
        if bias:
            bias = nodes.add("Where", [nodes.const(visible), bias, f32(_LOWEST)])
        else:
            bias = nodes.const(np.where(visible, 0.0, _LOWEST).astype(np.float32))
    if attention_bias:
        bias = nodes.add("Add", [bias, attention_bias]) if bias else attention_bias
    return bias


def _ms_attend(
    imp: ImportContext,
    node: Node,
    nodes: OnnxNodes,
    qkv: tuple[str, str, str],
    past_kv: tuple[str, str],
    mask_index: int,
    dims: tuple[int, int, int, int],
    heads: int,
    head_size: int,
) -> tuple[Value, str, str]:
    """ai.onnx Attention (opset 23) of 3-D Q [B, S, N*H] and K/V [B, L, N*H] or [B, N, L, H],
    with past K/V [B, N, P, H], onnxruntime's mask (input `mask_index`), attention_bias (input
    5) and `unidirectional`: the output value and the names of present K and V.
    `dims` as for _ms_mask_bias."""
    names = [*node.proto.input, *[""] * 6]
    mask_name, attention_bias = names[mask_index], names[5]  # input 5 in both ops
    mask = imp.input(node, mask_index) if mask_name else None
    causal = bool(node.attrs.get("unidirectional", 0))
    bias = _ms_mask_bias(nodes, node, mask_name, mask, attention_bias, dims, causal)
    scale = float(node.attrs.get("scale", 0.0)) or 1.0 / math.sqrt(head_size)
    past_k, past_v = past_kv
    outputs = ["y", "present_key", "present_value"] if past_k else ["y"]
    y, *presents = nodes.add_node(
        "Attention",
        [*qkv, bias, past_k, past_v],
        outputs,
        q_num_heads=heads,
        kv_num_heads=heads,
        scale=scale,
    )
    presents += ["", ""]
    return nodes.import_at(imp, node, y, 23), presents[0], presents[1]


def _heads_attr(node: Node) -> int:
    heads = int(node.attrs.get("num_heads", 0))
    if heads <= 0:
        raise node.error(f"num_heads={heads} (a positive count is required)")
    return heads


def _refuse_attrs(node: Node, **unsupported_defaults: int) -> None:
    for attr, default in unsupported_defaults.items():
        value = node.attrs.get(attr, default)
        if value != default:
            raise node.unsupported(f"attribute {attr}={value} (ember supports {attr}={default})")


def _divisible(node: Node, what: str, size: int, heads: int) -> int:
    if size % heads:
        raise node.error(f"{what} hidden size {size} is not a multiple of num_heads={heads}")
    return size // heads


@converts("Attention", domain=_MS)
def _ms_attention(imp: ImportContext, node: Node) -> Sequence[Value]:
    """com.microsoft Attention: input [B, S, D_in] @ packed weights [D_in, Dq + Dk + Dv]
    (+ bias), multi-head attention with onnxruntime's mask_index forms, past [2, B, N, P, H]
    and attention_bias; outputs the context [B, S, Dv] and present [2, B, N, P + S, H]."""
    _refuse_attrs(node, do_rotary=0, past_present_share_buffer=0)
    x = imp.required(node, 0)
    weights = imp.required(node, 1)
    names = [*node.proto.input, "", "", "", "", "", ""]
    bias_name, past_name = names[2], names[4]
    if names[6]:
        raise node.unsupported("input past_sequence_length (only with a shared past buffer)")
    heads = _heads_attr(node)
    if len(shape_of(x)) != 3 or len(shape_of(weights)) != 2:
        raise node.error(
            f"input {list(shape_of(x))} and weights {list(shape_of(weights))}: 3-D input and "
            "2-D weights expected"
        )
    batch, q_len, _ = shape_of(x)
    packed = shape_of(weights)[1]
    sizes = [int(s) for s in node.attrs.get("qkv_hidden_sizes", [])] or [packed // 3] * 3
    if len(sizes) != 3 or sum(sizes) != packed or sizes[0] != sizes[1]:
        raise node.error(
            f"qkv_hidden_sizes {sizes} do not split weights of width {packed} into Q, K, V "
            "(Q and K of one size)"
        )
    head_size = _divisible(node, "Q", sizes[0], heads)
    v_head = _divisible(node, "V", sizes[2], heads)
    nodes = OnnxNodes(f"{node.proto.output[0]}/Attention")
    bounds = np.cumsum([0, *sizes])
    qkv = []
    for part in range(3):  # slices of constant weights fold: three plain projections
        lo, hi = nodes.i64([bounds[part]]), nodes.i64([bounds[part + 1]])
        w = nodes.add("Slice", [names[1], lo, hi, nodes.i64([1])])
        y = nodes.add("MatMul", [names[0], w])
        if bias_name:
            y = nodes.add("Add", [y, nodes.add("Slice", [bias_name, lo, hi, nodes.i64([0])])])
        qkv.append(y)
    past_k = past_v = ""
    past_len = 0
    if past_name:
        past_shape = shape_of(imp.required(node, 4))
        if len(past_shape) != 5 or (
            (past_shape[0], past_shape[1], past_shape[2], past_shape[4], v_head)
            != (2, batch, heads, head_size, head_size)
        ):
            raise node.error(
                f"past of shape {list(past_shape)}; [2, {batch}, {heads}, P, {head_size}] "
                "expected (and V's head size equal to K's)"
            )
        past_len = past_shape[3]
        past_k, past_v = (
            nodes.add("Squeeze", [nodes.add("Gather", [past_name, nodes.i64([i])]), nodes.i64([0])])
            for i in (0, 1)
        )
    dims = (batch, q_len, past_len, past_len + q_len)
    y, present_k, present_v = _ms_attend(
        imp, node, nodes, (qkv[0], qkv[1], qkv[2]), (past_k, past_v), 3, dims, heads, head_size
    )
    results = [y]
    if len(node.proto.output) > 1 and node.proto.output[1]:
        if not past_name:
            raise node.unsupported("output present without input past")
        stacked = OnnxNodes(f"{node.proto.output[0]}/Attention/present")
        parts = [
            stacked.add("Unsqueeze", [name, stacked.i64([0])]) for name in (present_k, present_v)
        ]
        concat = stacked.add("Concat", parts, axis=0)
        results.append(stacked.import_at(imp, node, concat, 13))
    return results


@converts("MultiHeadAttention", domain=_MS)
def _ms_multi_head_attention(imp: ImportContext, node: Node) -> Sequence[Value]:
    """com.microsoft MultiHeadAttention: separate query [B, S, D], key and value [B, L, D]
    (or already split into heads, [B, N, L, H]), an optional packed bias [Dq + Dk + Dv],
    key_padding_mask, attention_bias and past_key/past_value [B, N, P, H]; outputs the context
    [B, S, Dv] and present_key/present_value [B, N, P + L, H]."""
    names = [*node.proto.input, *[""] * 10][:10]
    query, key, value, bias_name = names[:4]  # then key_padding_mask, attention_bias
    past_k, past_v = names[6], names[7]
    for index, what in ((8, "past_sequence_length"), (9, "cache_indirection")):
        if names[index]:
            raise node.unsupported(f"input {what} (the decoder-masked, shared-buffer form)")
    heads = _heads_attr(node)
    q = imp.required(node, 0)
    if len(shape_of(q)) != 3 or not key or not value:
        raise node.unsupported(
            f"query of shape {list(shape_of(q))} without separate key and value (packed QKV "
            "or KV forms); 3-D query, key and value are supported"
        )
    k, v = imp.required(node, 1), imp.required(node, 2)
    batch, q_len, q_hidden = shape_of(q)
    head_size = _divisible(node, "Q", q_hidden, heads)
    kv_rank = len(shape_of(k))
    if kv_rank != len(shape_of(v)) or kv_rank not in (3, 4):
        raise node.unsupported(
            f"key {list(shape_of(k))} with value {list(shape_of(v))} (both [B, L, D] or both "
            "[B, N, L, H] supported)"
        )
    if kv_rank == 4 and (bias_name or past_k):
        raise node.unsupported("bias or past_key with key/value already split into heads")
    if bool(past_k) != bool(past_v):
        raise node.error("past_key and past_value must be given together")
    k_head = shape_of(k)[2] // heads if kv_rank == 3 else shape_of(k)[3]
    if (kv_rank == 3 and shape_of(k)[2] != q_hidden) or k_head != head_size:
        raise node.error(
            f"key of shape {list(shape_of(k))} for query {list(shape_of(q))} and "
            f"num_heads={heads}: its head size must be the query's ({head_size})"
        )
    kv_len = shape_of(k)[1] if kv_rank == 3 else shape_of(k)[2]
    v_hidden = shape_of(v)[2] if kv_rank == 3 else shape_of(v)[1] * shape_of(v)[3]
    nodes = OnnxNodes(f"{node.proto.output[0]}/MultiHeadAttention")
    qkv = [query, key, value]
    if bias_name:
        bounds = np.cumsum([0, q_hidden, shape_of(k)[2], v_hidden])
        for part in range(3):
            lo, hi = nodes.i64([bounds[part]]), nodes.i64([bounds[part + 1]])
            part_bias = nodes.add("Slice", [bias_name, lo, hi, nodes.i64([0])])
            qkv[part] = nodes.add("Add", [qkv[part], part_bias])
    past_len = shape_of(imp.required(node, 6))[2] if past_k else 0
    dims = (batch, q_len, past_len, past_len + kv_len)
    y, present_k, present_v = _ms_attend(
        imp, node, nodes, (qkv[0], qkv[1], qkv[2]), (past_k, past_v), 4, dims, heads, head_size
    )
    if len(node.proto.output) > 3 and node.proto.output[3]:
        raise node.unsupported("output qk (the scores before softmax)")
    results = [y]
    wanted = [name for name in node.proto.output[1:3] if name]
    if wanted:
        if not past_k:
            # Without a past, present is the key/value split into heads.
            present = OnnxNodes(f"{node.proto.output[0]}/MultiHeadAttention/present")
            split = [
                present.add(
                    "Transpose",
                    [present.add("Reshape", [qkv[i], present.i64([batch, kv_len, heads, -1])])],
                    perm=[0, 2, 1, 3],
                )
                if kv_rank == 3
                else qkv[i]
                for i in (1, 2)
            ]
            first = present.import_at(imp, node, split[0], 13)
            return [y, first, imp.env[split[1]]][: len(node.proto.output)]
        results += [imp.env[present_k], imp.env[present_v]]
    return results[: len(node.proto.output)]


# GroupQueryAttention's inputs past total_sequence_length that ember does not compute, by index.
_GQA_REFUSED_INPUTS = {
    9: "position_ids",
    10: "attention_bias",
    11: "head_sink",
    12: "k_scale",
    13: "v_scale",
    14: "q_norm_weight",
    15: "k_norm_weight",
    16: "query_seqlens",
}


@converts("GroupQueryAttention", domain=_MS)
def _group_query_attention(imp: ImportContext, node: Node) -> Sequence[Value]:
    """com.microsoft GroupQueryAttention as onnxruntime's CPU kernel computes it (LLMs written
    by onnxruntime-genai's builder): causal grouped-query attention over a KV cache. Batch row
    b holds T_b = seqlens_k[b] + 1 tokens after this step; its new tokens sit at positions
    P_b = T_b - S .. T_b - 1 (P_b = 0 on the first prompt, S > 1 == total_sequence_length),
    present_key/value [B, kv_heads, max(total_sequence_length, past length), H] hold the past
    before P_b, the new keys from P_b and zeros after; query s sees keys j <= P_b + s (and
    j > P_b + s - local_window_size: a window of local_window_size keys, itself included, as
    onnxruntime 1.32 counts); do_rotary rotates Q and K at positions P_b + s first.
    total_sequence_length is read as a compile-time value (a graph input is compiled per
    value); seqlens_k stays a run-time input."""
    names = [*node.proto.input, *[""] * 17][:17]
    for index, what in _GQA_REFUSED_INPUTS.items():
        if names[index]:
            raise node.unsupported(f"input {what}")
    _refuse_attrs(node, causal=1, smooth_softmax=0, sliding_window_cache=0, qk_output=0)
    for attr in ("k_quant_type", "v_quant_type"):
        value = node.attrs.get(attr, b"NONE")
        text = value.decode() if isinstance(value, bytes) else str(value)
        if text != "NONE":
            raise node.unsupported(f"attribute {attr}={text} (a quantized KV cache)")
    heads = _heads_attr(node)
    kv_heads = int(node.attrs.get("kv_num_heads", 0))
    if kv_heads <= 0 or heads % kv_heads:
        raise node.error(f"kv_num_heads={kv_heads} must divide num_heads={heads}")
    query, key, value, past_k, past_v, seqlens_name, total_name, cos, sin = names[:9]
    q = imp.required(node, 0)
    if len(shape_of(q)) != 3:
        raise node.error(f"query of shape {list(shape_of(q))}; [B, S, D] expected")
    batch, seq, width = shape_of(q)
    packed = not key
    head = width // (heads + 2 * kv_heads) if packed else width // heads
    if packed and (value or width % (heads + 2 * kv_heads)):
        raise node.error(f"packed QKV of width {width} for {heads} + 2 x {kv_heads} heads")
    if bool(past_k) != bool(past_v):
        raise node.error("past_key and past_value must be given together")
    if tuple(shape_of(imp.required(node, 5))) != (batch,):
        raise node.error(
            f"seqlens_k of shape {list(shape_of(imp.required(node, 5)))}; [{batch}] expected"
        )
    total_array = imp.constant(node, 6, "total_sequence_length")
    assert total_array is not None
    total = int(total_array.reshape(-1)[0])
    past_len = shape_of(imp.required(node, 3))[2] if past_k else 0
    present_len = max(total, past_len)
    first_prompt = seq > 1 and seq == total
    nodes = OnnxNodes(f"{node.proto.output[0]}/GroupQueryAttention")
    if packed:
        bounds = np.cumsum([0, heads * head, kv_heads * head, kv_heads * head])
        query, key, value = (
            nodes.add("Slice", [names[0], nodes.i64([lo]), nodes.i64([hi]), nodes.i64([2])])
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        )
    # P_b = T_b - S per batch row ([B, 1]), 0 on the first prompt.
    lengths = nodes.add("Cast", [seqlens_name], to=onnx.TensorProto.INT64)
    starts = nodes.add("Sub", [lengths, nodes.i64(seq - 1)])
    if first_prompt:
        starts = nodes.add("Mul", [starts, nodes.i64(0)])
    starts = nodes.add("Reshape", [starts, nodes.i64([batch, 1])])
    if node.attrs.get("do_rotary", 0):
        if not (cos and sin):
            raise node.error("do_rotary=1 needs cos_cache and sin_cache")
        rotary_dim = 2 * shape_of(imp.required(node, 7))[1]
        positions = nodes.add("Add", [starts, nodes.i64(np.arange(seq)[None, :])])
        interleaved = int(node.attrs.get("rotary_interleaved", 0))
        query, key = (
            nodes.add(
                "RotaryEmbedding",
                [name, cos, sin, positions],
                interleaved=interleaved,
                num_heads=count,
                rotary_embedding_dim=rotary_dim,
            )
            for name, count in ((query, heads), (key, kv_heads))
        )
    # present = past before P_b, the new keys at P_b .. P_b + S - 1, zeros after.
    slots = nodes.i64(np.arange(present_len)[None, :])
    offsets = nodes.add("Sub", [slots, starts])  # [B, T]: slot - P_b
    is_new = nodes.add(
        "And",
        [
            nodes.add("GreaterOrEqual", [offsets, nodes.i64(0)]),
            nodes.add("Less", [offsets, nodes.i64(seq)]),
        ],
    )
    is_new = nodes.add("Reshape", [is_new, nodes.i64([batch, 1, present_len, 1])])
    from_new = nodes.add("Clip", [offsets, nodes.i64(0), nodes.i64(seq - 1)])
    from_new = nodes.add("Reshape", [from_new, nodes.i64([batch, 1, present_len, 1])])
    from_new = nodes.add("Expand", [from_new, nodes.i64([batch, kv_heads, present_len, head])])
    is_past = nodes.add("Less", [slots, starts])
    is_past = nodes.add("Reshape", [is_past, nodes.i64([batch, 1, present_len, 1])])
    from_past = np.minimum(np.arange(present_len), max(past_len - 1, 0))[None, None, :, None]
    from_past = nodes.add(
        "Expand", [nodes.i64(from_past), nodes.i64([batch, kv_heads, present_len, head])]
    )
    presents = []
    for new, past in ((key, past_k), (value, past_v)):
        split = nodes.add("Reshape", [new, nodes.i64([batch, seq, kv_heads, head])])
        split = nodes.add("Transpose", [split], perm=[0, 2, 1, 3])
        placed = nodes.add("GatherElements", [split, from_new], axis=2)
        zeros = nodes.const(np.zeros((), dtype_of(q)))
        rest = zeros
        if past_len:
            rest = nodes.add(
                "Where", [is_past, nodes.add("GatherElements", [past, from_past], axis=2), zeros]
            )
        presents.append(nodes.add("Where", [is_new, placed, rest]))
    # Query s of row b (position P_b + s) sees keys j <= P_b + s, within the local window.
    query_positions = nodes.add("Add", [starts, nodes.i64(np.arange(seq)[None, :])])
    query_positions = nodes.add("Reshape", [query_positions, nodes.i64([batch, 1, seq, 1])])
    key_positions = nodes.i64(np.arange(present_len)[None, None, None, :])
    allowed = nodes.add("LessOrEqual", [key_positions, query_positions])
    window = int(node.attrs.get("local_window_size", -1))
    if window > 0:
        earliest = nodes.add("Sub", [query_positions, nodes.i64(window - 1)])
        allowed = nodes.add(
            "And", [allowed, nodes.add("GreaterOrEqual", [key_positions, earliest])]
        )
    f32 = nodes.typed(np.dtype(np.float32))
    bias = nodes.add("Where", [allowed, f32(0.0), f32(-np.inf)])
    attrs: dict[str, object] = {"q_num_heads": heads, "kv_num_heads": kv_heads}
    attrs["scale"] = float(node.attrs.get("scale", 0.0)) or 1.0 / math.sqrt(head)
    if float(node.attrs.get("softcap", 0.0)) > 0:
        attrs["softcap"] = float(node.attrs["softcap"])
    out = nodes.add("Attention", [query, presents[0], presents[1], bias], **attrs)
    y = nodes.import_at(imp, node, out, 23)
    return [y, imp.env[presents[0]], imp.env[presents[1]]][: len(node.proto.output)]
