"""onnxruntime's com.microsoft quantized ops that its quantization tool (QOperator format,
quantize_dynamic of a transformer) and graph optimizer write, not covered by
test_quantization.py: QLinearSoftmax, QLinearWhere, DynamicQuantizeMatMul, QAttention,
QEmbedLayerNormalization. Each is decomposed into dequantize -> float op -> quantize (or the
float op alone) and checked against onnxruntime's CPU kernels on seeded inputs.

Tolerances: a quantized output at most one quantization step from onnxruntime's (its kernels
compute the float result in another order, e.g. QLinearSoftmax from an exp table divided by a
float sum; a value next to a rounding tie may then round the other way); a float output of an
op whose integer part is exact (DynamicQuantizeMatMul: the same dynamic quantization, exact
int32 sums) within 1e-5 x max |onnxruntime|; QAttention / QEmbedLayerNormalization (float
attention and LayerNorm after dequantizing) within 1e-4 x max |onnxruntime|.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.runtime.errors import UnsupportedOpError
from ember.tests.contrib_graphs import MS as _MS
from ember.tests.contrib_graphs import contrib_model
from ember.tests.oracle import assert_close, onnxruntime_outputs


def _model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    inits: dict[str, np.ndarray],
    outputs: dict[str, int],
) -> onnx.ModelProto:
    return contrib_model(nodes, inputs, inits, outputs, opset=13)


def _scalar(value: float, dtype: type) -> np.ndarray:
    return np.array(value, dtype)


def _steps_apart(actual: np.ndarray, expected: np.ndarray) -> int:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    return int(np.abs(actual.astype(np.int64) - expected.astype(np.int64)).max(initial=0))


def test_qlinear_softmax_where_and_dynamic_quantize_matmul() -> None:
    """QLinearSoftmax uint8 at opset 13 (one axis) and int8 at opset 11 (coerced to 2-D at
    axis 1), QLinearWhere requantizing both branches to the output's parameters, and
    DynamicQuantizeMatMul with and without a bias, one model."""
    rng = np.random.default_rng(0)
    feeds = {
        "xu": rng.integers(0, 256, (2, 3, 7)).astype(np.uint8),
        "xs": rng.integers(-128, 128, (2, 3, 7)).astype(np.int8),
        "cond": rng.integers(0, 2, (2, 3, 7)).astype(bool),
        "a": rng.standard_normal((4, 3, 16)).astype(np.float32),
    }
    inits = {
        "sx": _scalar(0.08, np.float32),
        "zx_u": _scalar(120, np.uint8),
        "zx_s": _scalar(-5, np.int8),
        "sy": _scalar(1 / 256, np.float32),
        "zy_u": _scalar(0, np.uint8),
        "zy_s": _scalar(-128, np.int8),
        "sw": _scalar(0.05, np.float32),
        "zw": _scalar(7, np.uint8),
        "sz": _scalar(0.06, np.float32),
        "zz": _scalar(130, np.uint8),
        "b": rng.integers(-128, 128, (16, 5)).astype(np.int8),
        "b_scale": (rng.random(5) * 0.05 + 0.01).astype(np.float32),
        "b_zp": np.zeros(5, np.int8),
        "bias": rng.standard_normal(5).astype(np.float32),
    }
    nodes = [
        helper.make_node(
            "QLinearSoftmax",
            ["xu", "sx", "zx_u", "sy", "zy_u"],
            ["soft_u"],
            domain=_MS,
            axis=-1,
            opset=13,
        ),
        helper.make_node(
            "QLinearSoftmax",
            ["xs", "sx", "zx_s", "sy", "zy_s"],
            ["soft_s"],
            domain=_MS,
            axis=1,
            opset=11,
        ),
        helper.make_node(
            "QLinearWhere",
            ["cond", "xu", "sx", "zx_u", "xu", "sw", "zw", "sz", "zz"],
            ["where"],
            domain=_MS,
        ),
        helper.make_node(
            "DynamicQuantizeMatMul",
            ["a", "b", "b_scale", "b_zp", "bias"],
            ["dqmm"],
            domain=_MS,
        ),
        helper.make_node(
            "DynamicQuantizeMatMul", ["a", "b", "b_scale"], ["dqmm_no_bias"], domain=_MS
        ),
    ]
    outputs = {
        "soft_u": TensorProto.UINT8,
        "soft_s": TensorProto.INT8,
        "where": TensorProto.UINT8,
        "dqmm": TensorProto.FLOAT,
        "dqmm_no_bias": TensorProto.FLOAT,
    }
    model = _model(nodes, feeds, inits, outputs)
    expected = onnxruntime_outputs(model, feeds)
    actual = ember.compile(model).run(feeds)
    for name in ("soft_u", "soft_s", "where"):
        assert _steps_apart(actual[name], expected[name]) <= 1, name
    assert_close(
        {k: actual[k] for k in ("dqmm", "dqmm_no_bias")},
        {k: expected[k] for k in ("dqmm", "dqmm_no_bias")},
        rel=1e-5,
    )


def test_qattention_and_qembed_layer_norm() -> None:
    """What quantize_dynamic writes for an optimized BERT: QEmbedLayerNormalization (uint8
    tables) feeding DynamicQuantizeLinear -> QAttention (int8 weights) with a key-length
    mask_index, and a unidirectional QAttention without a mask."""
    rng = np.random.default_rng(1)
    batch, seq, hidden, heads, vocab = 2, 5, 16, 4, 20

    def table(*shape: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            rng.integers(0, 256, shape).astype(np.uint8),
            _scalar(0.02, np.float32),
            _scalar(128, np.uint8),
        )

    inits: dict[str, np.ndarray] = {}
    for name, shape in (("word", (vocab, hidden)), ("pos", (8, hidden)), ("seg", (2, hidden))):
        inits[f"{name}_q"], inits[f"{name}_s"], inits[f"{name}_z"] = table(*shape)
    inits["gamma_q"], inits["gamma_s"], inits["gamma_z"] = table(hidden)
    inits["beta_q"], inits["beta_s"], inits["beta_z"] = table(hidden)
    inits["w_q"] = rng.integers(-128, 128, (hidden, 3 * hidden)).astype(np.int8)
    inits["w_s"] = _scalar(0.01, np.float32)
    inits["w_z"] = _scalar(0, np.int8)
    inits["qkv_bias"] = rng.standard_normal(3 * hidden).astype(np.float32)
    feeds = {
        "ids": rng.integers(0, vocab, (batch, seq)).astype(np.int32),
        "segments": rng.integers(0, 2, (batch, seq)).astype(np.int32),
        "mask": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32),
    }
    embed_inputs = ["ids", "segments", "word_q", "pos_q", "seg_q", "gamma_q", "beta_q", "mask"]
    embed_inputs += ["word_s", "pos_s", "seg_s", "gamma_s", "beta_s"]
    embed_inputs += ["word_z", "pos_z", "seg_z", "gamma_z", "beta_z"]
    nodes = [
        helper.make_node(
            "QEmbedLayerNormalization",
            embed_inputs,
            ["emb", "mask_index"],
            domain=_MS,
            epsilon=1e-12,
        ),
        helper.make_node("DynamicQuantizeLinear", ["emb"], ["emb_q", "emb_s", "emb_z"]),
        helper.make_node(
            "QAttention",
            ["emb_q", "w_q", "qkv_bias", "emb_s", "w_s", "mask_index", "emb_z", "w_z"],
            ["att"],
            domain=_MS,
            num_heads=heads,
        ),
        helper.make_node(
            "QAttention",
            ["emb_q", "w_q", "qkv_bias", "emb_s", "w_s", "", "emb_z", "w_z"],
            ["att_causal"],
            domain=_MS,
            num_heads=heads,
            unidirectional=1,
        ),
    ]
    outputs = {
        "emb": TensorProto.FLOAT,
        "mask_index": TensorProto.INT32,
        "att": TensorProto.FLOAT,
        "att_causal": TensorProto.FLOAT,
    }
    model = _model(nodes, feeds, inits, outputs)
    assert_close(ember.compile(model).run(feeds), onnxruntime_outputs(model, feeds))


def test_qattention_refuses_a_weight_scale_it_cannot_apply() -> None:
    x = np.zeros((1, 4, 8), np.uint8)
    inits = {
        "w": np.zeros((8, 24), np.int8),
        "s": _scalar(0.1, np.float32),
        "ws": np.ones((2, 3), np.float32),
    }
    node = helper.make_node(
        "QAttention", ["x", "w", "", "s", "ws"], ["y"], name="qatt", domain=_MS, num_heads=2
    )
    model = _model([node], {"x": x}, inits, {"y": TensorProto.FLOAT})
    with pytest.raises(UnsupportedOpError, match=r"QAttention.*qatt.*weight_scale of shape"):
        ember.compile(model)


def test_unsigned_integers_order_as_unsigned() -> None:
    """Regression: ArgMax/ArgMin/ReduceMax/ReduceMin/TopK of uint8 (quantize_static writes
    ArgMax on the uint8 tensor) compared the values as int8: argmax([237, 238, 188, 86, 206])
    was 3 (86). Exact: ember's outputs equal onnx.reference's (onnxruntime has no uint32
    ReduceMax)."""
    x = np.array([[237, 238, 188, 86, 206], [1, 200, 3, 4, 255]], np.uint8)
    feeds = {
        "x": x,
        "x32": x.astype(np.uint32) * np.uint32(1 << 24),
        "x64": x.astype(np.uint64) * np.uint64(1 << 56),
    }
    nodes = [
        helper.make_node("ArgMax", ["x"], ["argmax"], axis=1),
        helper.make_node("ArgMin", ["x"], ["argmin"], axis=1, select_last_index=1),
        helper.make_node("ReduceMax", ["x"], ["max"], axes=[1]),
        helper.make_node("ReduceMin", ["x"], ["min"], axes=[1], keepdims=0),
        helper.make_node("TopK", ["x", "k"], ["top", "top_index"], axis=1),
        helper.make_node("ReduceMax", ["x32"], ["max32"], axes=[1]),
        helper.make_node("ArgMax", ["x64"], ["argmax64"], axis=1),
    ]
    outputs = {
        "argmax": TensorProto.INT64,
        "argmin": TensorProto.INT64,
        "max": TensorProto.UINT8,
        "min": TensorProto.UINT8,
        "top": TensorProto.UINT8,
        "top_index": TensorProto.INT64,
        "max32": TensorProto.UINT32,
        "argmax64": TensorProto.INT64,
    }
    model = _model(nodes, feeds, {"k": np.array([2], np.int64)}, outputs)
    reference = ReferenceEvaluator(model).run(None, feeds)
    actual = ember.compile(model).run(feeds)
    for name, ref in zip(outputs, reference, strict=True):
        np.testing.assert_array_equal(actual[name], ref, err_msg=name)


def _pack(values: np.ndarray, bits: int) -> np.ndarray:
    """MatMulNBits' packing of unsigned `bits`-bit values along the last axis."""
    per_byte = 8 // bits
    padded = np.zeros((*values.shape[:-1], -(-values.shape[-1] // per_byte) * per_byte), np.uint8)
    padded[..., : values.shape[-1]] = values
    grouped = padded.reshape(*values.shape[:-1], -1, per_byte).astype(np.uint16)
    shifted = grouped << (np.arange(per_byte, dtype=np.uint16) * bits)
    return shifted.sum(axis=-1).astype(np.uint8)


def test_matmul_nbits() -> None:
    """MatMulNBits (accuracy_level 0: onnxruntime dequantizes B and runs a float GEMM): 4-bit
    with packed zero points, an odd block count and K not a multiple of the block, and a
    bias; 4-bit without zero points (default 8) on a 3-D A; 8-bit; 2-bit with float zero
    points. Within 1e-5 x max |onnxruntime| (float32 sums in another order)."""
    rng = np.random.default_rng(7)
    feeds = {
        "a": rng.standard_normal((3, 40)).astype(np.float32),
        "a3": rng.standard_normal((2, 3, 32)).astype(np.float32),
    }
    inits: dict[str, np.ndarray] = {}
    nodes = []
    cases = [  # name, A, K, N, bits, block, zero points
        ("y4", "a", 40, 6, 4, 16, "packed"),
        ("y4_default_zp", "a3", 32, 5, 4, 16, None),
        ("y8", "a", 40, 4, 8, 32, "packed"),
        ("y2", "a3", 32, 3, 2, 16, "float"),
    ]
    for name, a, k, n, bits, block, zp_kind in cases:
        blocks = -(-k // block)
        q = rng.integers(0, 1 << bits, (n, blocks, block)).astype(np.uint8)
        inits[f"{name}_b"] = _pack(q, bits)
        inits[f"{name}_scales"] = (rng.random((n, blocks)) * 0.1 + 0.01).astype(np.float32)
        inputs = [a, f"{name}_b", f"{name}_scales"]
        if zp_kind == "packed":
            zp = rng.integers(0, 1 << bits, (n, blocks)).astype(np.uint8)
            inits[f"{name}_zp"] = _pack(zp, bits)
            inputs.append(f"{name}_zp")
        elif zp_kind == "float":
            inits[f"{name}_zp"] = rng.integers(0, 1 << bits, (n, blocks)).astype(np.float32)
            inputs.append(f"{name}_zp")
        if name == "y4":
            inits["bias"] = rng.standard_normal(n).astype(np.float32)
            inputs += ["", "bias"]
        nodes.append(
            helper.make_node(
                "MatMulNBits", inputs, [name], domain=_MS, K=k, N=n, bits=bits, block_size=block
            )
        )
    model = _model(nodes, feeds, inits, {c[0]: TensorProto.FLOAT for c in cases})
    assert_close(ember.compile(model).run(feeds), onnxruntime_outputs(model, feeds), rel=1e-5)


def test_gather_block_quantized() -> None:
    """GatherBlockQuantized: 4-bit values packed in uint8 with packed zero points, 8-bit
    without, and an int4 table with int4 zero points; indices negative and out of range
    (onnxruntime gives a zero row, not an error). Exact up to float32 rounding (1e-6)."""
    import ml_dtypes

    rng = np.random.default_rng(9)
    indices = np.array([[0, 5, -1], [6, -7, 3]], np.int64)  # 6 and -7: out of range of 6 rows
    q4 = rng.integers(0, 16, (6, 32)).astype(np.uint8)
    zp4 = rng.integers(0, 16, (6, 2)).astype(np.uint8)
    inits = {
        "packed4": _pack(q4, 4),
        "zp4": _pack(zp4, 4),
        "scales": (rng.random((6, 2)) * 0.1 + 0.01).astype(np.float32),
        "table8": rng.integers(0, 256, (6, 32)).astype(np.uint8),
        "table_int4": rng.integers(-8, 8, (6, 32)).astype(ml_dtypes.int4),
        "zp_int4": rng.integers(-8, 8, (6, 2)).astype(ml_dtypes.int4),
    }
    attrs = {"gather_axis": 0, "quantize_axis": 1, "block_size": 16}
    nodes = [
        helper.make_node(
            "GatherBlockQuantized",
            ["packed4", "i", "scales", "zp4"],
            ["y4"],
            domain=_MS,
            bits=4,
            **attrs,
        ),
        helper.make_node(
            "GatherBlockQuantized", ["table8", "i", "scales"], ["y8"], domain=_MS, bits=8, **attrs
        ),
        helper.make_node(
            "GatherBlockQuantized",
            ["table_int4", "i", "scales", "zp_int4"],
            ["y_int4"],
            domain=_MS,
            **attrs,
        ),
    ]
    outputs = {name: TensorProto.FLOAT for name in ("y4", "y8", "y_int4")}
    model = _model(nodes, {"i": indices}, inits, outputs)
    expected = onnxruntime_outputs(model, {"i": indices})
    assert not expected["y4"][1, 0].any()  # the out-of-range row
    assert_close(ember.compile(model).run({"i": indices}), expected, rel=1e-6)


def test_nhwc_forms_of_onnxruntimes_layout_transformer() -> None:
    """What a model saved at ORT_ENABLE_ALL holds: com.microsoft QLinearConv with
    channels_last=1 (NHWC input and output, OIHW weight) and 0, NhwcMaxPool, and
    QLinearAveragePool / QLinearGlobalAveragePool with channels_last=1; within one step."""
    rng = np.random.default_rng(11)
    feeds = {"x": rng.integers(0, 256, (1, 6, 6, 3)).astype(np.uint8)}
    inits = {
        "xs": _scalar(0.05, np.float32),
        "xz": _scalar(120, np.uint8),
        "w": rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8),
        "ws": (rng.random(4) * 0.02 + 0.005).astype(np.float32),
        "wz": np.zeros(4, np.int8),
        "ys": _scalar(0.08, np.float32),
        "yz": _scalar(100, np.uint8),
        "bias": rng.integers(-500, 500, 4).astype(np.int32),
    }
    conv_inputs = ["xs", "xz", "w", "ws", "wz", "ys", "yz", "bias"]
    nodes = [
        helper.make_node(
            "QLinearConv",
            ["x", *conv_inputs],
            ["conv_nhwc"],
            domain=_MS,
            channels_last=1,
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node(
            "QLinearConv",
            ["x_nchw", *conv_inputs],
            ["conv_nchw"],
            domain=_MS,
            kernel_shape=[3, 3],
            strides=[2, 2],
        ),
        helper.make_node(
            "NhwcMaxPool",
            ["conv_nhwc"],
            ["max_pool"],
            domain=_MS,
            kernel_shape=[2, 2],
            strides=[2, 2],
        ),
        helper.make_node(
            "QLinearAveragePool",
            ["conv_nhwc", "ys", "yz", "xs", "xz"],
            ["avg_pool"],
            domain=_MS,
            channels_last=1,
            kernel_shape=[3, 3],
            count_include_pad=1,
        ),
        helper.make_node(
            "QLinearGlobalAveragePool",
            ["conv_nhwc", "ys", "yz", "xs", "xz"],
            ["global_pool"],
            domain=_MS,
            channels_last=1,
        ),
    ]
    outputs = {
        name: TensorProto.UINT8
        for name in ("conv_nhwc", "conv_nchw", "max_pool", "avg_pool", "global_pool")
    }
    model = _model(nodes, feeds, inits, outputs)
    expected = onnxruntime_outputs(model, feeds)
    actual = ember.compile(model).run(feeds)
    for name in outputs:
        assert _steps_apart(actual[name], expected[name]) <= 1, name
