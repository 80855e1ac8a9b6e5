"""Quantized models from onnxruntime's own quantization tool, run by ember (integer convs via
quantize-ops + kernel.qconv2d, the rest in the float fallback) against onnxruntime running
the same int8 model: outputs within one quantization step of the output."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.dialects.weights import make_context
from ember.frontend.onnx_importer import import_model
from ember.passes.transforms.graph_pipeline import run_graph_passes
from ember.tests.models import GraphBuilder
from ember.tests.oracle import onnxruntime_outputs

ort_quantization = pytest.importorskip("onnxruntime.quantization")


def resnet_block_model(seed: int = 0) -> onnx.ModelProto:
    """A small ResNet-style CNN: stem, a basic block, a strided block with a 1x1 shortcut, a
    depthwise conv (float fallback), global pooling and a classifier."""
    b = GraphBuilder(seed)
    x = b.node("Relu", [b.conv_bn("input", 3, 16, 3)])
    y = b.node("Relu", [b.conv_bn(x, 16, 16, 3)])
    x = b.node("Relu", [b.node("Add", [b.conv_bn(y, 16, 16, 3), x])])
    y = b.node("Relu", [b.conv_bn(x, 16, 24, 3, stride=2)])
    y = b.conv_bn(y, 24, 24, 3)
    x = b.node("Relu", [b.node("Add", [y, b.conv_bn(x, 16, 24, 1, stride=2)])])
    x = b.node("Relu", [b.conv_bn(x, 24, 24, 3, group=24)])
    logits = b.classifier(x, 24, 10)
    out = helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, 10])
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 20, 20])
    return b.model("resnet_block", [image], [out], 17)


class _Reader(ort_quantization.CalibrationDataReader):
    def __init__(self, name: str, shape: tuple[int, ...], count: int = 4) -> None:
        rng = np.random.default_rng(1)
        self._feeds = iter(
            [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_static(
    model: onnx.ModelProto,
    shape: tuple[int, ...],
    quant_format: str,
    per_channel: bool,
    act: str,
    input_name: str = "input",
    reduce_range: bool = False,
) -> onnx.ModelProto:
    """onnxruntime's quant_pre_process (folds BatchNorm) then quantize_static
    (`reduce_range`: 7-bit weights, onnxruntime's advice for AVX2's vpmaddubsw)."""
    q = ort_quantization
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("f.onnx", "pre.onnx", "q.onnx"))
        onnx.save(model, src)
        q.shape_inference.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        q.quantize_static(
            str(pre),
            str(dst),
            _Reader(input_name, shape),
            quant_format=getattr(q.QuantFormat, quant_format),
            per_channel=per_channel,
            activation_type=getattr(q.QuantType, act),
            weight_type=q.QuantType.QInt8,
            reduce_range=reduce_range,
        )
        return onnx.load(dst)


def _output_scale(model: onnx.ModelProto) -> float:
    """The scale of the quantization step in front of the (dequantized) model output."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    output = model.graph.output[0].name
    for node in model.graph.node:
        if output in node.output and node.op_type == "DequantizeLinear":
            return float(inits[node.input[1]])
    raise AssertionError("the model output is not dequantized")


def graph_ops(model: onnx.ModelProto) -> Counter[str]:
    """How many of each graph op the model has after the graph passes."""
    module, weights = import_model(model)
    run_graph_passes(module, make_context(weights))
    return Counter(op.name for op in module.walk())


def integer_convs(model: onnx.ModelProto) -> int:
    return graph_ops(model)["graph.qconv"]


def _count(model: onnx.ModelProto, op_type: str) -> int:
    return sum(node.op_type == op_type for node in model.graph.node)


@pytest.mark.parametrize(
    "quant_format,per_channel,act",
    [
        ("QDQ", True, "QUInt8"),
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
    # Every conv but the depthwise one, and the classifier's Gemm, run as integer kernels,
    # not in the float fallback; both residual adds run in a conv's epilogue.
    ops = graph_ops(model)
    assert ops["graph.qconv"] == 7 and ops["graph.add"] == 0
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
    assert integer_convs(model) == 2
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
