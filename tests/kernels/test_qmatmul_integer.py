"""MatMulInteger with a constant int8 weight on the integer kernel (quantize-ops' IntegerMatMul:
graph.qconv with an int32 output, minus the run-time x_zero_point * colsum(w)): the int32
result is exact, so it is compared with numpy's int64 product for equality; and dynamically
quantized MatMuls (onnxruntime's quantize_dynamic) against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.tests.oracle import onnxruntime_outputs
from ember.tools.model_zoo import graph_op_counts

ort_quantization = pytest.importorskip("onnxruntime.quantization")


def _matmul_integer(x_shape: tuple[int, ...], w: np.ndarray, x_type: int) -> onnx.ModelProto:
    """MatMulInteger(x, w, x_zero_point) with the zero point a graph input (a run-time value,
    as DynamicQuantizeLinear's)."""
    out_shape = [*x_shape[:-1], w.shape[1]]
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w", "x_zp"], ["y"])],
        "matmul_integer",
        [
            helper.make_tensor_value_info("x", x_type, list(x_shape)),
            helper.make_tensor_value_info("x_zp", x_type, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, out_shape)],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "x_shape,n,zero_points",
    [
        ((1, 1), 1, (0, 255)),
        ((2, 7, 13), 33, (0, 255, 37)),
        ((37, 64), 17, (0, 128, 255)),
        ((3, 5, 200), 19, (255, 1)),
    ],
)
def test_int32_result_is_exact(x_shape: tuple[int, ...], n: int, zero_points: tuple) -> None:
    rng = np.random.default_rng(sum(x_shape) + n)
    depth = x_shape[-1]
    # Full-range weights (AVX2 runs them as two 7-bit terms); K <= 518 keeps them within
    # what the frontend accepts for MatMulInteger.
    w = rng.integers(-128, 128, (depth, n)).astype(np.int8)
    model = _matmul_integer(x_shape, w, TensorProto.UINT8)
    assert graph_op_counts(model)["graph.qconv"] == 1
    compiled = ember.compile(model)
    for zero_point in zero_points:
        x = rng.integers(0, 256, x_shape).astype(np.uint8)
        x.reshape(-1)[:3] = [0, 255, zero_point][: x.size]
        (got,) = compiled(x, np.array(zero_point, np.uint8))
        expected = (x.astype(np.int64) - zero_point) @ w.astype(np.int64)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, expected)


def test_int8_activations_are_exact() -> None:
    rng = np.random.default_rng(3)
    w = rng.integers(-128, 128, (21, 10)).astype(np.int8)
    compiled = ember.compile(_matmul_integer((4, 21), w, TensorProto.INT8))
    for zero_point in (-128, 0, 127):
        x = rng.integers(-128, 128, (4, 21)).astype(np.int8)
        (got,) = compiled(x, np.array(zero_point, np.int8))
        np.testing.assert_array_equal(got, (x.astype(np.int64) - zero_point) @ w.astype(np.int64))


@pytest.mark.parametrize("x_shape,n", [((2, 9, 48), 40), ((1, 5, 31), 7)])
def test_quantize_dynamic_matmul_matches_onnxruntime(
    x_shape: tuple[int, ...], n: int, tmp_path: object
) -> None:
    rng = np.random.default_rng(7)
    w = rng.standard_normal((x_shape[-1], n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*x_shape[:-1], n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    source, target = f"{tmp_path}/float.onnx", f"{tmp_path}/dynamic.onnx"
    onnx.save(model, source)
    ort_quantization.quantize_dynamic(source, target, weight_type=ort_quantization.QuantType.QInt8)
    quantized = onnx.load(target)
    assert graph_op_counts(quantized)["graph.qconv"] == 1
    x = rng.standard_normal(x_shape).astype(np.float32)
    expected = onnxruntime_outputs(quantized, {"x": x})["y"]
    (got,) = ember.compile(quantized)(x)
    # Both compute the same DynamicQuantizeLinear and the same exact int32 sum; what is left
    # is float32 rounding of scale products (x_scale * w_scale, then * the sum) taken in
    # another order: a few ulps of the largest output.
    tolerance = 4 * np.finfo(np.float32).eps * float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)
