"""onnxruntime's com.microsoft transformer ops (what onnxruntime.transformers' optimizer writes:
Attention, MultiHeadAttention, EmbedLayerNormalization, SkipSimplifiedLayerNormalization,
QuickGelu), each decomposed into ONNX ops, checked against onnxruntime's CPU kernels on seeded
inputs. Several variants of an op share one model (one compile) as separate outputs.

Tolerance: assert_close's default, max |ember - onnxruntime| <= 1e-4 x max |onnxruntime| per
output (float32 sums in another order; the mask values are the same additive constants
onnxruntime uses, so masked positions agree exactly).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.runtime.errors import ModelError, UnsupportedOpError
from ember.tests.contrib_graphs import MS as _MS
from ember.tests.contrib_graphs import contrib_model
from ember.tests.oracle import assert_close, onnxruntime_outputs


def _model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    inits: dict[str, np.ndarray],
    outputs: list[str],
    int_outputs: tuple[str, ...] = (),
) -> onnx.ModelProto:
    types = {o: TensorProto.INT32 if o in int_outputs else TensorProto.FLOAT for o in outputs}
    return contrib_model(nodes, inputs, inits, types, opset=17)


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    expected = onnxruntime_outputs(model, feeds)
    assert_close(ember.compile(model).run(feeds), expected)


def _normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def test_attention_mask_forms() -> None:
    """Packed-QKV Attention with each mask_index form onnxruntime's CPU kernel takes: key
    lengths [B], end and start positions [2B], a raw [B, T] 0/1 mask (one row fully masked:
    onnxruntime's finite -10000 fill keeps it a softmax, not NaN or zeros), a [B, S, T] mask,
    a "dummy" [B, 1] mask, unidirectional with and without a mask, attention_bias,
    qkv_hidden_sizes with V wider than Q/K, scale and mask_filter_value."""
    rng = np.random.default_rng(0)
    batch, seq, hidden, heads = 2, 5, 16, 4
    x = _normal(rng, batch, seq, hidden)
    inits = {
        "w": _normal(rng, hidden, 3 * hidden),
        "b": _normal(rng, 3 * hidden),
        "w_wide_v": _normal(rng, hidden, 2 * hidden + 24),
        "b_wide_v": _normal(rng, 2 * hidden + 24),
        "lengths": np.array([3, 5], np.int32),
        "end_start": np.array([4, 5, 1, 2], np.int32),
        "raw": np.array([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0]], np.int32),
        "mask3d": rng.integers(0, 2, (batch, seq, seq)).astype(np.int32),
        "dummy": np.ones((batch, 1), np.int32),
        "attn_bias": _normal(rng, 1, heads, seq, seq),
    }
    variants: list[tuple[list[str], dict[str, object]]] = [
        (["x", "w", "b", "lengths"], {}),
        (["x", "w", "b", "end_start"], {}),
        (["x", "w", "b", "raw"], {}),
        (["x", "w", "b", "mask3d"], {"mask_filter_value": -50.0}),
        (["x", "w", "b", "dummy"], {}),
        (["x", "w", "b"], {"unidirectional": 1}),
        (["x", "w", "b", "raw"], {"unidirectional": 1}),
        (["x", "w", "", "lengths", "", "attn_bias"], {"scale": 0.3}),
        (["x", "w_wide_v", "b_wide_v", "lengths"], {"qkv_hidden_sizes": [16, 16, 24]}),
    ]
    nodes = [
        helper.make_node(
            "Attention", inputs, [f"y{i}"], name=f"att{i}", domain=_MS, num_heads=heads, **attrs
        )
        for i, (inputs, attrs) in enumerate(variants)
    ]
    model = _model(nodes, {"x": x}, inits, [f"y{i}" for i in range(len(variants))])
    _check(model, {"x": x})


def test_attention_past_and_present() -> None:
    """GPT-2's Attention with a cache: past [2, B, N, P, H] in, present [2, B, N, P + S, H]
    out, unidirectional offset by the past length, with a [B, P + S] mask."""
    rng = np.random.default_rng(1)
    batch, seq, past_len, hidden, heads = 2, 3, 4, 8, 2
    feeds = {
        "x": _normal(rng, batch, seq, hidden),
        "past": _normal(rng, 2, batch, heads, past_len, hidden // heads),
        "mask": np.array([[0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]], np.int32),
    }
    inits = {"w": _normal(rng, hidden, 3 * hidden), "b": _normal(rng, 3 * hidden)}
    node = helper.make_node(
        "Attention",
        ["x", "w", "b", "mask", "past"],
        ["y", "present"],
        domain=_MS,
        num_heads=heads,
        unidirectional=1,
    )
    _check(_model([node], feeds, inits, ["y", "present"]), feeds)


def test_multi_head_attention() -> None:
    """MultiHeadAttention: cross-attention with a packed bias and key lengths; self-attention
    with a [B, T] key_padding_mask, past_key/past_value and present outputs (unidirectional);
    key/value already split into heads [B, N, L, H]."""
    rng = np.random.default_rng(2)
    batch, seq, kv_len, past_len, hidden, heads = 2, 3, 6, 2, 8, 2
    head = hidden // heads
    feeds = {
        "q": _normal(rng, batch, seq, hidden),
        "k": _normal(rng, batch, kv_len, hidden),
        "v": _normal(rng, batch, kv_len, hidden),
        "ks": _normal(rng, batch, seq, hidden),
        "vs": _normal(rng, batch, seq, hidden),
        "past_k": _normal(rng, batch, heads, past_len, head),
        "past_v": _normal(rng, batch, heads, past_len, head),
        "k4": _normal(rng, batch, heads, kv_len, head),
        "v4": _normal(rng, batch, heads, kv_len, head),
    }
    inits = {
        "bias": _normal(rng, 3 * hidden),
        "lengths": np.array([4, 6], np.int32),
        "pad": np.array([[1, 1, 1, 1, 0], [0, 1, 1, 1, 1]], np.int32),
    }
    nodes = [
        helper.make_node(
            "MultiHeadAttention",
            ["q", "k", "v", "bias", "lengths"],
            ["y0"],
            domain=_MS,
            num_heads=heads,
        ),
        helper.make_node(
            "MultiHeadAttention",
            ["q", "ks", "vs", "", "pad", "", "past_k", "past_v"],
            ["y1", "present_k", "present_v"],
            domain=_MS,
            num_heads=heads,
            unidirectional=1,
        ),
        helper.make_node(
            "MultiHeadAttention", ["q", "k4", "v4"], ["y2"], domain=_MS, num_heads=heads
        ),
    ]
    outputs = ["y0", "y1", "present_k", "present_v", "y2"]
    _check(_model(nodes, feeds, inits, outputs), feeds)


def test_attention_refuses_what_it_does_not_compute() -> None:
    rng = np.random.default_rng(3)
    x = _normal(rng, 1, 4, 8)
    inits = {"w": _normal(rng, 8, 24), "mask4d": np.ones((1, 1, 4, 4), np.int32)}
    cases = [
        (["x", "w", "", "mask4d"], {}, "mask_index of shape \\[1, 1, 4, 4\\]"),
        (["x", "w"], {"do_rotary": 1}, "do_rotary=1"),
    ]
    for inputs, attrs, message in cases:
        node = helper.make_node(
            "Attention", inputs, ["y"], name="att", domain=_MS, num_heads=2, **attrs
        )
        with pytest.raises(UnsupportedOpError, match=f"Attention.*att.*{message}"):
            ember.compile(_model([node], {"x": x}, inits, ["y"]))
    seqlens, total = np.array([3], np.int32), np.array(4, np.int32)
    gqa = helper.make_node(
        "GroupQueryAttention",
        ["x", "x", "x", "", "", "seqlens", "total"],
        ["y"],
        name="gqa",
        domain=_MS,
        num_heads=2,
        kv_num_heads=2,
        causal=0,
    )
    inits = {"seqlens": seqlens, "total": total}
    with pytest.raises(UnsupportedOpError, match="GroupQueryAttention.*gqa.*causal=0"):
        ember.compile(_model([gqa], {"x": x}, inits, ["y"]))


def test_embed_layer_norm_and_the_small_fusions() -> None:
    """EmbedLayerNormalization with segment embeddings, a mask (mask_index counts its 1s) and
    position_ids, and without them (mask_index 0); SkipSimplifiedLayerNormalization with its
    sum output; QuickGelu with its default and another alpha."""
    rng = np.random.default_rng(4)
    batch, seq, hidden, vocab = 2, 5, 16, 30
    feeds = {
        "ids": rng.integers(0, vocab, (batch, seq)).astype(np.int32),
        "segments": rng.integers(0, 2, (batch, seq)).astype(np.int32),
        "mask": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32),
        "positions": np.array([[4, 3, 2, 1, 0]], np.int32),
        "x": _normal(rng, batch, seq, hidden),
        "skip": _normal(rng, batch, seq, hidden),
    }
    inits = {
        "word": _normal(rng, vocab, hidden),
        "position": _normal(rng, 8, hidden),
        "segment": _normal(rng, 2, hidden),
        "gamma": _normal(rng, hidden),
        "beta": _normal(rng, hidden),
        "bias": _normal(rng, hidden),
    }
    nodes = [
        helper.make_node(
            "EmbedLayerNormalization",
            [
                "ids",
                "segments",
                "word",
                "position",
                "segment",
                "gamma",
                "beta",
                "mask",
                "positions",
            ],
            ["emb0", "mask_index0", "sum0"],
            domain=_MS,
            epsilon=1e-5,
        ),
        helper.make_node(
            "EmbedLayerNormalization",
            ["ids", "", "word", "position", "", "gamma", "beta"],
            ["emb1", "mask_index1"],
            domain=_MS,
        ),
        helper.make_node(
            "SkipSimplifiedLayerNormalization",
            ["x", "skip", "gamma", "bias"],
            ["rms", "", "", "rms_sum"],
            domain=_MS,
            epsilon=1e-6,
        ),
        helper.make_node("QuickGelu", ["x"], ["quick0"], domain=_MS),
        helper.make_node("QuickGelu", ["x"], ["quick1"], domain=_MS, alpha=1.0),
    ]
    outputs = ["emb0", "mask_index0", "sum0", "emb1", "mask_index1", "rms", "rms_sum"]
    outputs += ["quick0", "quick1"]
    model = _model(nodes, feeds, inits, outputs, int_outputs=("mask_index0", "mask_index1"))
    _check(model, feeds)


def test_rotary_embedding() -> None:
    """com.microsoft RotaryEmbedding: a 3-D input with [B, S] position ids (num_heads from
    the cache width), a 4-D interleaved input with a one-element offset, and a partial
    rotation (rotary_embedding_dim) of a 3-D input with num_heads."""
    rng = np.random.default_rng(5)
    batch, seq, heads, head, max_pos = 2, 3, 2, 8, 10
    angles = rng.random((max_pos, head // 2)) * 3
    inits = {
        "cos": np.cos(angles).astype(np.float32),
        "sin": np.sin(angles).astype(np.float32),
        "cos4": np.cos(angles[:, :2]).astype(np.float32),
        "sin4": np.sin(angles[:, :2]).astype(np.float32),
    }
    feeds = {
        "x3": _normal(rng, batch, seq, heads * head),
        "x4": _normal(rng, batch, heads, seq, head),
        "positions": rng.integers(0, max_pos, (batch, seq)).astype(np.int64),
        "offset": np.array([4], np.int64),
    }
    nodes = [
        helper.make_node("RotaryEmbedding", ["x3", "positions", "cos", "sin"], ["y0"], domain=_MS),
        helper.make_node(
            "RotaryEmbedding", ["x4", "offset", "cos", "sin"], ["y1"], domain=_MS, interleaved=1
        ),
        helper.make_node(
            "RotaryEmbedding",
            ["x3", "positions", "cos4", "sin4"],
            ["y2"],
            domain=_MS,
            num_heads=heads,
            rotary_embedding_dim=4,
        ),
    ]
    _check(_model(nodes, feeds, inits, ["y0", "y1", "y2"]), feeds)


def test_cuda_only_fusions_as_contrib_operators_defines_them() -> None:
    """BiasSplitGelu, BiasAdd and GemmFastGelu have no onnxruntime CPU kernel: checked
    against ContribOperators.md's definitions in numpy (float64), within 1e-5 x max."""
    rng = np.random.default_rng(6)
    feeds = {
        "x": _normal(rng, 2, 3, 8),
        "skip": _normal(rng, 2, 3, 8),
        "a": _normal(rng, 2, 3, 6),
    }
    inits = {"bias": _normal(rng, 8), "w": _normal(rng, 6, 8)}
    nodes = [
        helper.make_node("BiasSplitGelu", ["x", "bias"], ["split_gelu"], domain=_MS),
        helper.make_node("BiasAdd", ["x", "bias", "skip"], ["bias_add"], domain=_MS),
        helper.make_node("GemmFastGelu", ["a", "w", "bias"], ["gemm_gelu"], domain=_MS),
        helper.make_node("GemmFastGelu", ["a", "w"], ["gemm_gelu_no_bias"], domain=_MS),
    ]
    outputs = ["split_gelu", "bias_add", "gemm_gelu", "gemm_gelu_no_bias"]
    actual = ember.compile(_model(nodes, feeds, inits, outputs)).run(feeds)

    from math import erf

    x, bias, skip = (np.float64(v) for v in (feeds["x"], inits["bias"], feeds["skip"]))
    total = x + bias
    right = total[..., 4:]
    exact_gelu = 0.5 * right * (1 + np.vectorize(erf)(right / np.sqrt(2)))

    def fast_gelu(v: np.ndarray) -> np.ndarray:
        return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))

    product = np.float64(feeds["a"]) @ np.float64(inits["w"])
    expected = {
        "split_gelu": total[..., :4] * exact_gelu,
        "bias_add": total + skip,
        "gemm_gelu": fast_gelu(product + bias),
        "gemm_gelu_no_bias": fast_gelu(product),
    }
    assert_close(actual, expected, rel=1e-5)


def _gqa_case(
    rng: np.random.Generator,
    name: str,
    seq: int,
    past_len: int,
    seqlens: list[int],
    total: int,
    attrs: dict[str, object],
    packed: bool = False,
) -> tuple[onnx.NodeProto, dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    batch, heads, kv_heads, head = len(seqlens), 4, 2, 16
    feeds = {f"{name}_seqlens": np.array(seqlens, np.int32)}
    inits = {f"{name}_total": np.array(total, np.int32)}
    if packed:
        feeds[f"{name}_q"] = _normal(rng, batch, seq, (heads + 2 * kv_heads) * head)
        inputs = [f"{name}_q", "", ""]
    else:
        feeds[f"{name}_q"] = _normal(rng, batch, seq, heads * head)
        feeds[f"{name}_k"] = _normal(rng, batch, seq, kv_heads * head)
        feeds[f"{name}_v"] = _normal(rng, batch, seq, kv_heads * head)
        inputs = [f"{name}_q", f"{name}_k", f"{name}_v"]
    if past_len:
        feeds[f"{name}_pk"] = _normal(rng, batch, kv_heads, past_len, head)
        feeds[f"{name}_pv"] = _normal(rng, batch, kv_heads, past_len, head)
        inputs += [f"{name}_pk", f"{name}_pv"]
    else:
        inputs += ["", ""]
    inputs += [f"{name}_seqlens", f"{name}_total"]
    if attrs.get("do_rotary"):
        angles = rng.random((16, head // 2)) * 3
        inits["cos"], inits["sin"] = (
            np.cos(angles).astype(np.float32),
            np.sin(angles).astype(np.float32),
        )
        inputs += ["cos", "sin"]
    outputs = [f"{name}_y", f"{name}_present_k", f"{name}_present_v"]
    node = helper.make_node(
        "GroupQueryAttention",
        inputs,
        outputs,
        domain=_MS,
        num_heads=heads,
        kv_num_heads=kv_heads,
        **attrs,
    )
    return node, feeds, inits, outputs


def test_group_query_attention() -> None:
    """GroupQueryAttention as onnxruntime's CPU kernel computes it: a first prompt (with
    rotary), token generation from pasts of two lengths in one batch (seqlens_k [5, 3] in a
    past buffer of 5: the second row's new key lands at slot 3, zeros after), a second prompt
    chunk with a local window and softcap, packed QKV, and a right-padded first prompt."""
    rng = np.random.default_rng(7)
    cases = [
        _gqa_case(rng, "prompt", 4, 0, [3, 3], 4, {"do_rotary": 1}),
        _gqa_case(rng, "token", 1, 5, [5, 3], 6, {"do_rotary": 1, "rotary_interleaved": 1}),
        _gqa_case(rng, "chunk", 2, 3, [4], 5, {"local_window_size": 2, "softcap": 2.0}),
        _gqa_case(rng, "packed", 1, 2, [2, 2], 3, {"scale": 0.2}, packed=True),
        _gqa_case(rng, "padded", 4, 0, [1, 3], 4, {"do_rotary": 1}),
    ]
    nodes = [case[0] for case in cases]
    feeds = {k: v for case in cases for k, v in case[1].items()}
    inits = {k: v for case in cases for k, v in case[2].items()}
    outputs = [name for case in cases for name in case[3]]
    model = _model(nodes, feeds, inits, outputs)
    expected = onnxruntime_outputs(model, feeds)
    actual = ember.compile(model).run(feeds)
    # A right-padded first prompt (row 0 holds 2 of 4 tokens): onnxruntime leaves the padded
    # query rows unspecified (its softmax reads scores it never wrote); the rest must agree.
    for values in (expected, actual):
        values["padded_y"][0, 2:] = 0.0
    assert_close(actual, expected)


@pytest.mark.parametrize(
    ("node", "inits", "message"),
    [
        (
            helper.make_node("MultiHeadAttention", ["x", "k", "x"], ["y"], domain=_MS, num_heads=2),
            {"k": np.ones((1, 4, 6), np.float32)},
            r"MultiHeadAttention node 'y'.*key of shape \[1, 4, 6\].*head size",
        ),
        (
            helper.make_node(
                "GroupQueryAttention",
                ["x", "x", "x", "", "", "seqlens", "total"],
                ["y"],
                domain=_MS,
                num_heads=2,
                kv_num_heads=2,
            ),
            {"seqlens": np.array([3, 3], np.int32), "total": np.array(4, np.int32)},
            r"GroupQueryAttention node 'y'.*seqlens_k of shape \[2\]; \[1\] expected",
        ),
        (
            helper.make_node(
                "MatMulNBits", ["x", "b", "s"], ["y"], domain=_MS, K=8, N=4, bits=4, block_size=16
            ),
            {"b": np.ones((4, 1, 3), np.uint8), "s": np.ones((4, 1), np.float32)},
            r"MatMulNBits node 'y'.*B of type uint8 and shape \[4, 1, 3\]",
        ),
        (
            helper.make_node("Attention", ["x", "w"], ["y"], domain=_MS, num_heads=3),
            {"w": np.ones((8, 24), np.float32)},
            r"Attention node 'y'.*not a multiple of num_heads=3",
        ),
    ],
)
def test_malformed_contrib_nodes_are_model_errors(
    node: onnx.NodeProto, inits: dict[str, np.ndarray], message: str
) -> None:
    """Inputs that do not fit the op: a ModelError naming the node and the shapes, not an
    error from inside the decomposition."""
    x = np.ones((1, 4, 8), np.float32)
    with pytest.raises(ModelError, match=message):
        ember.compile(_model([node], {"x": x}, inits, ["y"]))
