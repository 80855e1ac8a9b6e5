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
from ember.runtime.errors import UnsupportedOpError
from ember.tests.oracle import onnxruntime_outputs
from ember.tools.model_zoo import bert_encoder, graph_op_counts

ort_quantization = pytest.importorskip("onnxruntime.quantization")


def _matmul_integer(
    x_shape: tuple[int, ...], w: np.ndarray, x_type: int, w_zero_point: int | None = None
) -> onnx.ModelProto:
    """MatMulInteger(x, w, x_zero_point) with the zero point a graph input (a run-time value,
    as DynamicQuantizeLinear's)."""
    out_shape = [*x_shape[:-1], w.shape[1]]
    inits = [numpy_helper.from_array(w, "w")]
    inputs = ["x", "w", "x_zp"]
    if w_zero_point is not None:
        inits.append(numpy_helper.from_array(np.array(w_zero_point, np.int8), "w_zp"))
        inputs.append("w_zp")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", inputs, ["y"], name="mmi")],
        "matmul_integer",
        [
            helper.make_tensor_value_info("x", x_type, list(x_shape)),
            helper.make_tensor_value_info("x_zp", x_type, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, out_shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "x_shape,n,zero_points",
    [
        ((1, 1), 1, (0, 255)),
        ((2, 7, 13), 33, (0, 255, 37)),
        ((37, 64), 17, (0, 128, 255)),
        ((3, 5, 200), 19, (255, 1)),
        # Sums float32 cannot hold (1031 * 255 * 128 > 2^24): the importer defers its refusal
        # to the integer kernel, which takes it.
        ((2, 3, 1031), 5, (0, 255)),
    ],
)
def test_int32_result_is_exact(x_shape: tuple[int, ...], n: int, zero_points: tuple) -> None:
    rng = np.random.default_rng(sum(x_shape) + n)
    depth = x_shape[-1]
    # Full-range weights (AVX2 runs them as two 7-bit terms).
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


def test_inexact_float_sums_off_the_integer_kernel_are_still_refused() -> None:
    # A weight zero point 3 keeps it off the integer kernel; its float32 sums may pass 2^24.
    w = np.random.default_rng(4).integers(-128, 128, (1031, 5)).astype(np.int8)
    model = _matmul_integer((2, 1031), w, TensorProto.UINT8, w_zero_point=3)
    with pytest.raises(UnsupportedOpError, match=r"MatMulInteger.*mmi.*2\^24.*integer kernel"):
        ember.compile(model)


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


def test_bert_base_dynamic_compiles_and_matches_onnxruntime() -> None:
    # Hidden 768: its MatMulIntegers' sums may pass 2^24 (refused before the integer kernel).
    quantized = ember.quantize(bert_encoder(layers=1, hidden=768, heads=12), dynamic=True)
    assert graph_op_counts(quantized)["graph.qconv"] == 7  # Q, K, V, output, FFN x2, pooler
    ids = np.random.default_rng(0).integers(0, 100, (1, 16)).astype(np.int64)
    expected = onnxruntime_outputs(quantized, {"input_ids": ids})
    for got, reference in zip(ember.compile(quantized)(ids), expected.values(), strict=True):
        # The integer sums are exact; ulp-level differences in the float ops around them can
        # break a DynamicQuantizeLinear tie the other way, moving one activation by one step
        # (1/255 of its range) and the outputs behind it by that step's share: 1% of the
        # largest output (measured 0.46% on the sequence output, 2.4e-7 on the pooled one).
        np.testing.assert_allclose(got, reference, rtol=0, atol=0.01 * np.abs(reference).max())
