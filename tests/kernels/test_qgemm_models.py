"""Quantized models from onnxruntime's own quantization tool, run by ember (integer convs via
quantize-ops + kernel.qconv2d, the rest in the float fallback) against onnxruntime running
the same int8 model: outputs within one quantization step of the output."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.tests.oracle import onnxruntime_outputs
from ember.tools.model_zoo import (
    GraphBuilder,
    graph_op_counts,
    quantize_static,
    resnet_block_model,
)

ort_quantization = pytest.importorskip("onnxruntime.quantization")


def _output_scale(model: onnx.ModelProto) -> float:
    """The scale of the quantization step in front of the (dequantized) model output."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    output = model.graph.output[0].name
    for node in model.graph.node:
        if output in node.output and node.op_type == "DequantizeLinear":
            return float(inits[node.input[1]])
    raise AssertionError("the model output is not dequantized")


def _integer_convs(model: onnx.ModelProto) -> int:
    return graph_op_counts(model)["graph.qconv"]


def _count(model: onnx.ModelProto, op_type: str) -> int:
    return sum(node.op_type == op_type for node in model.graph.node)


@pytest.mark.parametrize(
    "quant_format,per_channel,act",
    [
        # With --runslow: QDQ, per-channel weights and uint8 activations each run in another
        # case; tests/kernels reached the same arcs without it (docs/testing.md).
        pytest.param("QDQ", True, "QUInt8", marks=pytest.mark.slow),
        ("QDQ", False, "QInt8"),
        ("QOperator", True, "QUInt8"),
        ("QOperator", False, "QUInt8"),
    ],
)
def test_quantize_static_models_match_onnxruntime(
    quant_format: str, per_channel: bool, act: str
) -> None:
    shape = (1, 3, 20, 20)
    model = quantize_static(resnet_block_model(), shape, quant_format, per_channel, act)
    if quant_format == "QOperator":
        assert _count(model, "QLinearConv") >= 6
    feeds = {"input": np.random.default_rng(7).standard_normal(shape).astype(np.float32)}
    # Every conv (the depthwise one too) and the classifier's Gemm run as integer kernels,
    # not in the float fallback; both residual adds run in a conv's epilogue.
    ops = graph_op_counts(model)
    assert ops["graph.qconv"] == 8 and ops["graph.add"] == 0
    (got,) = ember.compile(model)(feeds["input"])
    (expected,) = onnxruntime_outputs(model, feeds).values()
    step = _output_scale(model)
    assert np.abs(got - expected).max() <= step * 1.001, (np.abs(got - expected).max(), step)


def mlp_model(rows: int, seed: int = 3) -> onnx.ModelProto:
    b = GraphBuilder(seed)
    hidden = b.node("MatMul", ["input", b.normal((32, 48), 0.2)])
    hidden = b.node("Relu", [b.node("Add", [hidden, b.normal((48,), 0.1)])])
    logits = b.node("Gemm", [hidden, b.normal((8, 48), 0.2), b.normal((8,), 0.1)], transB=1)
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [rows, 32])
    out = helper.make_tensor_value_info(logits, TensorProto.FLOAT, [rows, 8])
    return b.model("mlp", [image], [out], 17)


@pytest.mark.parametrize("rows", [1, 5])
def test_quantize_static_matmul_and_gemm_match_onnxruntime(rows: int) -> None:
    """MatMul (+ Add + Relu) and Gemm as integer 1x1 convs over the rows (transposed views
    when there is more than one row)."""
    model = quantize_static(mlp_model(rows), (rows, 32), "QDQ", True, "QUInt8")
    assert _integer_convs(model) == 2
    feeds = {"input": np.random.default_rng(9).standard_normal((rows, 32)).astype(np.float32)}
    (got,) = ember.compile(model)(feeds["input"])
    (expected,) = onnxruntime_outputs(model, feeds).values()
    step = _output_scale(model)
    assert np.abs(got - expected).max() <= step * 1.001, (np.abs(got - expected).max(), step)


def test_quantize_dynamic_matmul_matches_onnxruntime() -> None:
    """quantize_dynamic's MatMulInteger + DynamicQuantizeLinear (the float fallback)."""
    b = GraphBuilder(3)
    hidden = b.node("MatMul", ["input", b.normal((32, 48), 0.2)])
    hidden = b.node("Relu", [b.node("Add", [hidden, b.normal((48,), 0.1)])])
    logits = b.node("MatMul", [hidden, b.normal((48, 8), 0.2)])
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 32])
    out = helper.make_tensor_value_info(logits, TensorProto.FLOAT, [4, 8])
    model = b.model("mlp", [image], [out], 17)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        onnx.save(model, src)
        ort_quantization.quantize_dynamic(
            str(src), str(dst), weight_type=ort_quantization.QuantType.QInt8
        )
        quantized = onnx.load(dst)
    assert _count(quantized, "MatMulInteger") == 2
    feeds = {"input": np.random.default_rng(5).standard_normal((4, 32)).astype(np.float32)}
    (got,) = ember.compile(quantized)(feeds["input"])
    (expected,) = onnxruntime_outputs(quantized, feeds).values()
    # Dynamic quantization's output is float: the int32 sums are exact in both, the scales
    # are computed in float32 by both.
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
