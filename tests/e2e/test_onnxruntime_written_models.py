"""Models written by onnxruntime's own tools, as published models often are:
onnxruntime.transformers' optimizer (HF optimum's model_optimized.onnx: EmbedLayerNormalization,
Attention / MultiHeadAttention, SkipLayerNormalization, BiasGelu, FastGelu) and its quantizer
(quantize_static in QOperator format: QLinearConv, QLinearAdd, QLinearMul, QLinearSigmoid,
QLinearLeakyRelu, QLinearConcat, QLinearAveragePool, QLinearGlobalAveragePool, QGemm,
QLinearSoftmax; quantize_dynamic of an optimized transformer: QEmbedLayerNormalization,
QAttention, DynamicQuantizeLinear -> MatMulInteger; MatMulNBitsQuantizer: MatMulNBits), run
by ember and by onnxruntime on seeded inputs.

The quantized CNN (onnx.helper, no torch) is the fast representative; the transformers need
torch to export and are marked slow.

Tolerances: the quantized CNN's float output (its last DequantizeLinear) within one
quantization step of the output (each QOperator op computed in float and requantized may
round a value next to a tie the other way; seen: 0 steps); the float transformers within
assert_close's 1e-4 x max |onnxruntime| (float32 sums in another order; the dynamically
quantized one quantizes the same float activations, so the integer parts agree).
"""

from __future__ import annotations

import collections
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.tests.oracle import assert_close, onnxruntime_outputs


def _cnn_float_model() -> onnx.ModelProto:
    """conv-relu, conv-relu + residual add, a sigmoid gate (mul), leaky relu, concat, average
    pool, global pool, flatten, gemm, softmax: every op the QOperator quantizer rewrites."""
    rng = np.random.default_rng(5)

    def weights(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    inits = {
        "w1": weights(8, 3, 3, 3),
        "b1": weights(8, scale=0.1),
        "w2": weights(8, 8, 3, 3, scale=0.2),
        "b2": weights(8, scale=0.1),
        "w3": weights(8, 8, 1, 1),
        "b3": weights(8, scale=0.1),
        "fc": weights(10, 16),
        "fcb": weights(10, scale=0.1),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["a"]),
        helper.make_node("Conv", ["a", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Add", ["r2", "a"], ["res"]),
        helper.make_node("Conv", ["res", "w3", "b3"], ["c3"]),
        helper.make_node("Sigmoid", ["c3"], ["gate"]),
        helper.make_node("Mul", ["gate", "res"], ["gated"]),
        helper.make_node("LeakyRelu", ["gated"], ["leaky"], alpha=0.1),
        helper.make_node("Concat", ["res", "leaky"], ["cat"], axis=1),
        helper.make_node("AveragePool", ["cat"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["pool"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


class _Calibration:
    """quantize_static's CalibrationDataReader protocol over 8 seeded batches."""

    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        rng = np.random.default_rng(11)
        batches = [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(8)]
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


_QOPERATOR_OPS = {
    "QLinearConv",
    "QLinearAdd",
    "QLinearMul",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearConcat",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QGemm",
    "QLinearSoftmax",
}


def _quantize_static_qoperator(
    model: onnx.ModelProto, tmp_path: Path, activation: str, per_channel: bool
) -> onnx.ModelProto:
    from onnxruntime import quantization

    float_path, quantized_path = tmp_path / "float.onnx", tmp_path / "qoperator.onnx"
    onnx.save(model, float_path)
    quantization.quantize_static(
        str(float_path),
        str(quantized_path),
        _Calibration("x", (1, 3, 8, 8)),
        quant_format=quantization.QuantFormat.QOperator,
        activation_type=getattr(quantization.QuantType, activation),
        weight_type=quantization.QuantType.QInt8,
        per_channel=per_channel,
    )
    return onnx.load(quantized_path)


def _check_quantized(model: onnx.ModelProto, exact: tuple[str, ...] = ()) -> None:
    """Output y (a DequantizeLinear's) within one quantization step of onnxruntime's on three
    seeded inputs; the `exact` outputs equal."""
    producer = next(n for n in model.graph.node if n.output[0] == "y")
    assert producer.op_type == "DequantizeLinear"
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    step = float(inits[producer.input[1]])
    compiled = ember.compile(model)
    rng = np.random.default_rng(17)
    for _ in range(3):
        feeds = {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
        actual, expected = compiled.run(feeds), onnxruntime_outputs(model, feeds)
        error = float(np.max(np.abs(actual["y"] - expected["y"])))
        assert error <= step * 1.001, (error, step)
        for name in exact:
            np.testing.assert_array_equal(actual[name], expected[name])


def _check_quantized_cnn(tmp_path: Path, activation: str, per_channel: bool) -> None:
    model = _quantize_static_qoperator(_cnn_float_model(), tmp_path, activation, per_channel)
    written = {n.op_type for n in model.graph.node}
    assert _QOPERATOR_OPS <= written, _QOPERATOR_OPS - written
    _check_quantized(model)


def test_quantize_static_qoperator_cnn(tmp_path: Path) -> None:
    _check_quantized_cnn(tmp_path, "QUInt8", per_channel=False)


@pytest.mark.slow
def test_quantize_static_qoperator_cnn_int8_per_channel(tmp_path: Path) -> None:
    _check_quantized_cnn(tmp_path, "QInt8", per_channel=True)


def _cnn_data_movement_model() -> onnx.ModelProto:
    """The ops quantize_static's QOperator format leaves as ai.onnx ops on the 8-bit tensors
    (MaxPool, Resize, Pad, Split, Transpose, Reshape, Gather, Unsqueeze, Squeeze, Flatten,
    ArgMax) between QLinearConv, QLinearAdd and QLinearMatMul."""
    rng = np.random.default_rng(6)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    inits = {
        "w1": weights(8, 3, 3, 3),
        "b1": weights(8),
        "w2": weights(8, 8, 3, 3),
        "b2": weights(8),
        "scales": np.array([1, 1, 2, 2], np.float32),
        "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
        "split": np.array([4, 4], np.int64),
        "shape": np.array([1, 8, -1], np.int64),
        "index": np.array([0, 2], np.int64),
        "axes": np.array([0], np.int64),
        "m": weights(16, 5),
        "mb": weights(5),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["pool", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Pad", ["up", "pads"], ["padded"]),
        helper.make_node("Conv", ["padded", "w2", "b2"], ["c2"]),
        helper.make_node("Split", ["c2", "split"], ["s1", "s2"], axis=1),
        helper.make_node("Add", ["s1", "s2"], ["sum"]),
        helper.make_node("Transpose", ["sum"], ["t"], perm=[0, 1, 3, 2]),
        helper.make_node("Reshape", ["t", "shape"], ["rows"]),
        helper.make_node("Gather", ["rows", "index"], ["picked"], axis=2),
        helper.make_node("Unsqueeze", ["picked", "axes"], ["u"]),
        helper.make_node("Squeeze", ["u", "axes"], ["sq"]),
        helper.make_node("Flatten", ["sq"], ["flat"]),
        helper.make_node("MatMul", ["flat", "m"], ["mm"]),
        helper.make_node("Add", ["mm", "mb"], ["y"]),
        helper.make_node("ArgMax", ["y"], ["label"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn_data_movement",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("label", TensorProto.INT64, None),
        ],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["QUInt8", "QInt8"])
def test_quantize_static_qoperator_data_movement(tmp_path: Path, activation: str) -> None:
    """Exact: the data-movement ops copy 8-bit values and ArgMax reads them (it compared
    uint8 as int8 once); the float output within one step as above (seen: 0)."""
    model = _quantize_static_qoperator(_cnn_data_movement_model(), tmp_path, activation, False)
    written = {n.op_type for n in model.graph.node}
    assert {"QLinearConv", "QLinearAdd", "QLinearMatMul", "MaxPool", "ArgMax"} <= written
    _check_quantized(model, exact=("label",))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["cnn", "data_movement"])
def test_qoperator_cnn_saved_by_onnxruntime_at_enable_all(tmp_path: Path, which: str) -> None:
    """The QOperator CNNs as onnxruntime saves them optimized at ORT_ENABLE_ALL (its layout
    transformer's com.microsoft QLinearConv channels_last=1, NhwcMaxPool, Transposes); the
    same tolerances as above."""
    import onnxruntime as ort

    build = _cnn_float_model if which == "cnn" else _cnn_data_movement_model
    quantized = _quantize_static_qoperator(build(), tmp_path, "QUInt8", False)
    source, saved = tmp_path / "qoperator.onnx", tmp_path / "enable_all.onnx"
    onnx.save(quantized, source)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(saved)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    model = onnx.load(saved)
    channels_last = [n for n in model.graph.node if n.op_type == "QLinearConv" and n.domain]
    assert channels_last, "onnxruntime wrote no NHWC QLinearConv"
    _check_quantized(model, exact=() if which == "cnn" else ("label",))


@pytest.mark.slow
@pytest.mark.parametrize("symmetric", [True, False])
def test_matmul_nbits_quantizer_mlp(symmetric: bool) -> None:
    """onnxruntime's MatMulNBitsQuantizer (int4 weights in blocks of 32, zero points when
    asymmetric) on a MatMul -> Relu -> MatMul -> Add MLP; within 1e-5 x max |onnxruntime|
    (both dequantize to the same float32 weights; seen: 0)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    rng = np.random.default_rng(8)
    inits = {
        "w1": rng.standard_normal((64, 96)).astype(np.float32),
        "w2": rng.standard_normal((96, 40)).astype(np.float32),
        "b2": rng.standard_normal(40).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["m"]),
        helper.make_node("Add", ["m", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    quantizer = MatMulNBitsQuantizer(model, block_size=32, is_symmetric=symmetric)
    quantizer.process()
    quantized = quantizer.model.model
    assert [n.op_type for n in quantized.graph.node].count("MatMulNBits") == 2
    feeds = {"x": rng.standard_normal((2, 5, 64)).astype(np.float32)}
    assert_close(ember.compile(quantized).run(feeds), onnxruntime_outputs(quantized, feeds), 1e-5)


def _genai_style_decoder(vocab: int, hidden: int, heads: int, kv_heads: int) -> onnx.ModelProto:
    """One decoder layer as onnxruntime-genai's model builder writes an int4 LLM:
    SimplifiedLayerNormalization, MatMulNBits (packed QKV, output, MLP), GroupQueryAttention
    with rotary and a KV cache, SkipSimplifiedLayerNormalization, QuickGelu."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    rng = np.random.default_rng(9)
    head = hidden // heads
    qkv_width = (heads + 2 * kv_heads) * head

    def weights(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    angles = np.arange(64)[:, None] * (1e-2 ** (np.arange(head // 2) / (head // 2)))
    inits = {
        "embedding": weights(vocab, hidden, scale=1.0),
        "ln1": weights(hidden) + 1,
        "ln2": weights(hidden) + 1,
        "w_qkv": weights(hidden, qkv_width),
        "w_o": weights(heads * head, hidden),
        "w_up": weights(hidden, 2 * hidden),
        "w_down": weights(2 * hidden, hidden),
        "cos": np.cos(angles).astype(np.float32),
        "sin": np.sin(angles).astype(np.float32),
    }
    ms = "com.microsoft"
    nodes = [
        helper.make_node("Gather", ["embedding", "input_ids"], ["x"]),
        helper.make_node("SimplifiedLayerNormalization", ["x", "ln1"], ["n1"], epsilon=1e-6),
        helper.make_node("MatMul", ["n1", "w_qkv"], ["qkv"]),
        helper.make_node(
            "GroupQueryAttention",
            [
                "qkv",
                "",
                "",
                "past_key",
                "past_value",
                "seqlens_k",
                "total_sequence_length",
                "cos",
                "sin",
            ],
            ["attn", "present_key", "present_value"],
            domain=ms,
            num_heads=heads,
            kv_num_heads=kv_heads,
            do_rotary=1,
        ),
        helper.make_node("MatMul", ["attn", "w_o"], ["o"]),
        helper.make_node(
            "SkipSimplifiedLayerNormalization",
            ["o", "x", "ln2"],
            ["n2", "", "", "residual"],
            domain=ms,
            epsilon=1e-6,
        ),
        helper.make_node("MatMul", ["n2", "w_up"], ["up"]),
        helper.make_node("QuickGelu", ["up"], ["act"], domain=ms),
        helper.make_node("MatMul", ["act", "w_down"], ["down"]),
        helper.make_node("Add", ["down", "residual"], ["y"]),
    ]
    f32, i32 = TensorProto.FLOAT, TensorProto.INT32
    graph = helper.make_graph(
        nodes,
        "genai_layer",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
            helper.make_tensor_value_info("past_key", f32, ["b", kv_heads, "p", head]),
            helper.make_tensor_value_info("past_value", f32, ["b", kv_heads, "p", head]),
            helper.make_tensor_value_info("seqlens_k", i32, ["b"]),
            helper.make_tensor_value_info("total_sequence_length", i32, []),
        ],
        [
            helper.make_tensor_value_info("y", f32, None),
            helper.make_tensor_value_info("present_key", f32, None),
            helper.make_tensor_value_info("present_value", f32, None),
        ],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    quantizer = MatMulNBitsQuantizer(model, block_size=16, is_symmetric=False)
    quantizer.process()
    return quantizer.model.model


@pytest.mark.slow
def test_genai_style_int4_decoder_prompt_then_tokens() -> None:
    """A prompt of 5 tokens, then 3 generated tokens, each step feeding the previous
    present_key/value back as the past (onnxruntime-genai's loop, without a shared buffer):
    ember's outputs and caches within 1e-4 x max |onnxruntime| at every step."""
    vocab, hidden, heads, kv_heads = 50, 64, 4, 2
    model = _genai_style_decoder(vocab, hidden, heads, kv_heads)
    written = collections.Counter(n.op_type for n in model.graph.node)
    assert written["MatMulNBits"] == 4 and written["GroupQueryAttention"] == 1, written
    compiled = ember.compile(model)
    rng = np.random.default_rng(10)
    batch, head = 1, hidden // heads
    past = np.zeros((batch, kv_heads, 0, head), np.float32)
    caches = {"past_key": past, "past_value": past}
    tokens = rng.integers(0, vocab, (batch, 5))
    length = 0
    for _step in range(4):
        length += tokens.shape[1]
        feeds = {
            "input_ids": tokens,
            **caches,
            "seqlens_k": np.full(batch, length - 1, np.int32),
            "total_sequence_length": np.array(length, np.int32),
        }
        expected = onnxruntime_outputs(model, feeds)
        actual = compiled.run(feeds)
        assert_close(actual, expected)
        caches = {"past_key": expected["present_key"], "past_value": expected["present_value"]}
        tokens = rng.integers(0, vocab, (batch, 1))


# ---------------------------------------------------------------------------------------------
# Transformers through onnxruntime.transformers' optimizer (torch to export them)

_BATCH, _SEQ, _VOCAB, _HIDDEN, _HEADS = 2, 8, 100, 32, 4


def _bert_module() -> Any:
    """A 2-layer BERT encoder written as HF BERT (v4) is: the graph shape the optimizer's
    EmbedLayerNormalization and Attention fusions match (additive -10000 mask)."""
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d = _HIDDEN
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-12), nn.LayerNorm(d, eps=1e-12)
            self.f1, self.f2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

        def heads(self, x: Any) -> Any:
            b, n, d = x.shape
            return x.view(b, n, _HEADS, d // _HEADS).permute(0, 2, 1, 3)

        def forward(self, x: Any, mask: Any) -> Any:
            q, k, v = self.heads(self.q(x)), self.heads(self.k(x)), self.heads(self.v(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(_HIDDEN // _HEADS)
            context = torch.matmul(torch.softmax(scores + mask, -1), v).permute(0, 2, 1, 3)
            context = context.contiguous().view(x.shape)
            x = self.ln1(self.o(context) + x)
            return self.ln2(self.f2(nn.functional.gelu(self.f1(x))) + x)

    class Bert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word, self.pos = nn.Embedding(_VOCAB, _HIDDEN), nn.Embedding(64, _HIDDEN)
            self.segment, self.ln = nn.Embedding(2, _HIDDEN), nn.LayerNorm(_HIDDEN, eps=1e-12)
            self.register_buffer("position_ids", torch.arange(64).expand((1, -1)))
            self.layers = nn.ModuleList(Layer() for _ in range(2))

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            positions = self.position_ids[:, : input_ids.shape[1]]
            x = self.word(input_ids) + self.pos(positions) + self.segment(token_type_ids)
            x = self.ln(x)
            mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
            for layer in self.layers:
                x = layer(x, mask)
            return x

    torch.manual_seed(0)
    model = Bert().eval()
    with torch.no_grad():  # LayerNorm's gamma/beta away from 1/0, so they are exercised
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


def _bert_feeds(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((_BATCH, _SEQ), np.int64)
    mask[1, 5:] = 0  # right padding in the second row
    return {
        "input_ids": rng.integers(0, _VOCAB, (_BATCH, _SEQ)).astype(np.int64),
        "attention_mask": mask,
        "token_type_ids": rng.integers(0, 2, (_BATCH, _SEQ)).astype(np.int64),
    }


@pytest.fixture(scope="module")
def exported_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("bert") / "bert.onnx"
    feeds = {k: torch.from_numpy(v) for k, v in _bert_feeds(0).items()}
    torch.onnx.export(
        _bert_module(),
        tuple(feeds.values()),
        str(path),
        input_names=list(feeds),
        output_names=["out"],
        opset_version=17,
        dynamo=False,
        # As exporters write them (a fixed length would fold the position ids into a
        # constant and the optimizer would not fuse EmbedLayerNormalization).
        dynamic_axes={name: {0: "batch", 1: "sequence"} for name in feeds},
    )
    return path


def _optimized(path: Path, variant: str) -> onnx.ModelProto:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    if variant == "raw_mask":
        options.use_raw_attention_mask(True)
    elif variant == "multi_head_attention":
        options.use_multi_head_attention = True
    optimized = optimize_model(
        str(path),
        model_type="bert",
        num_heads=_HEADS,
        hidden_size=_HIDDEN,
        optimization_options=options,
    )
    return optimized.model


def _check_bert(model: onnx.ModelProto, expected_ops: set[str]) -> None:
    written = collections.Counter(n.op_type for n in model.graph.node if n.domain)
    assert expected_ops <= set(written), (expected_ops, written)
    compiled = ember.compile(model)
    for seed in (1, 2):
        feeds = _bert_feeds(seed)
        assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variant", "attention"),
    [
        ("mask_index", "Attention"),  # 1-D key lengths from EmbedLayerNormalization
        ("raw_mask", "Attention"),  # the 2-D 0/1 mask
        ("multi_head_attention", "MultiHeadAttention"),
    ],
)
def test_transformers_optimizer_bert(exported_bert: Path, variant: str, attention: str) -> None:
    model = _optimized(exported_bert, variant)
    expected = {"EmbedLayerNormalization", attention, "SkipLayerNormalization", "BiasGelu"}
    _check_bert(model, expected)


@pytest.mark.slow
@pytest.mark.parametrize(("weight_type", "per_channel"), [("QInt8", False), ("QUInt8", True)])
def test_quantize_dynamic_of_optimized_bert(
    exported_bert: Path, tmp_path: Path, weight_type: str, per_channel: bool
) -> None:
    """QAttention's weights per tensor, or per column (weight_scale [3 * hidden])."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    optimized_path, quantized_path = tmp_path / "optimized.onnx", tmp_path / "dynamic.onnx"
    onnx.save(_optimized(exported_bert, "mask_index"), optimized_path)
    quantize_dynamic(
        str(optimized_path),
        str(quantized_path),
        weight_type=getattr(QuantType, weight_type),
        per_channel=per_channel,
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )
    model = onnx.load(quantized_path)
    _check_bert(model, {"QEmbedLayerNormalization", "QAttention", "SkipLayerNormalization"})
