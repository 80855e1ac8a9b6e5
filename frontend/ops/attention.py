"""ONNX -> graph dialect: Attention (opset 23+): matmuls around the softmax kernel, with every
mask folded into one additive bias.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

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
