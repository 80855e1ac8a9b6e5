"""quantize-ops on hand-written IR with weights of particular values: the constants it folds
(an int32 bias recovered exactly, the multipliers, MatMulInteger's column sums). The IR before
and after, and every pattern it cannot prove left in float: tests/transforms/quantize-ops.mlir."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser

from ember.core.context import make_context
from ember.dialects.weights import WeightStore
from ember.passes.transforms.dce import DeadCodeElimination
from ember.passes.transforms.quantize_ops import QuantizeOps

X_SCALE, Y_SCALE = np.float32(0.02), np.float32(0.05)


def _ir(*, group: int = 1) -> str:
    """DequantizeLinear(uint8 x) -> Conv(dequantized int8 w, bias) -> QuantizeLinear(uint8)."""
    x_in = 3 if group == 1 else 4
    cin = x_in // group
    conv_props = (
        "{strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, "
        f"dilations = array<i64: 1, 1>, group = {group} : i64}}"
    )
    return f"""builtin.module {{
  func.func @main(%xq: tensor<1x{x_in}x5x5xui8>) -> tensor<1x4x5x5xui8> {{
    %xs = graph.constant "xs" : tensor<f32>
    %xz = graph.constant "xz" : tensor<ui8>
    %x = graph.dequantize_linear %xq, %xs, %xz : tensor<1x{x_in}x5x5xui8>, tensor<f32>, tensor<ui8> -> tensor<1x{x_in}x5x5xf32>
    %wq = graph.constant "wq" : tensor<4x{cin}x3x3xi8>
    %ws = graph.constant "ws" : tensor<4x1x1x1xf32>
    %wz = graph.constant "wz" : tensor<4x1x1x1xi8>
    %w = graph.dequantize_linear %wq, %ws, %wz : tensor<4x{cin}x3x3xi8>, tensor<4x1x1x1xf32>, tensor<4x1x1x1xi8> -> tensor<4x{cin}x3x3xf32>
    %b = graph.constant "b" : tensor<4xf32>
    %conv = graph.conv %x, %w bias %b {conv_props} : tensor<1x{x_in}x5x5xf32>, tensor<4x{cin}x3x3xf32>, tensor<4xf32> -> tensor<1x4x5x5xf32>
    %ys = graph.constant "ys" : tensor<f32>
    %yz = graph.constant "yz" : tensor<ui8>
    %y = graph.quantize_linear %conv, %ys, %yz : tensor<1x4x5x5xf32>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xui8>
    func.return %y : tensor<1x4x5x5xui8>
  }}
}}"""


def _weights(cin: int = 3, bias: np.ndarray | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    w_scale = rng.uniform(0.001, 0.01, (4, 1, 1, 1)).astype(np.float32)
    if bias is None:  # int32 quantized at x_scale * w_scale, as the quantization tool writes
        bias = (np.array([100, -2000, 0, 7], np.float32) * (X_SCALE * w_scale.reshape(4))).astype(
            np.float32
        )
    return {
        "xs": np.array(X_SCALE),
        "xz": np.array(5, np.uint8),
        "wq": rng.integers(-127, 128, (4, cin, 3, 3)).astype(np.int8),
        "ws": w_scale,
        "wz": np.zeros((4, 1, 1, 1), np.int8),
        "b": bias,
        "ys": np.array(Y_SCALE),
        "yz": np.array(128, np.uint8),
    }


def _run(ir: str, weights: dict[str, np.ndarray]) -> tuple[str, WeightStore]:
    store = WeightStore(weights)
    ctx = make_context(store)
    module: ModuleOp = Parser(ctx, ir).parse_module()
    module.verify()
    QuantizeOps().apply(ctx, module)
    DeadCodeElimination().apply(ctx, module)
    module.verify()
    return str(module), store


def test_qdq_conv_recovers_the_int32_bias_and_the_multipliers() -> None:
    # Needs a bias that is an int32 at x_scale * w_scale (weights built here); the IR before
    # and after: tests/transforms/quantize-ops.mlir.
    weights = _weights()
    _, store = _run(_ir(), weights)
    # The int32 bias is recovered exactly; nothing is left for the float bias.
    np.testing.assert_array_equal(store["qconv.offset"], [100, -2000, 0, 7])
    np.testing.assert_array_equal(store["qconv.bias"], np.zeros(4, np.float32))
    expected = (
        np.float64(X_SCALE) * weights["ws"].reshape(4).astype(np.float64) / np.float64(Y_SCALE)
    ).astype(np.float32)
    np.testing.assert_array_equal(store["qconv.multiplier"], expected)


@pytest.mark.parametrize("group", [4, 2])
def test_depthwise_and_grouped_qconvs_recover_the_int32_bias(group: int) -> None:
    """Depthwise (group 4 = channels) and grouped (two groups of two channels) recover the
    int32 bias too (the IR after: tests/transforms/quantize-ops.mlir)."""
    cin = 4 // group
    _, store = _run(_ir(group=group), _weights(cin=cin))
    np.testing.assert_array_equal(store["qconv.offset"], [100, -2000, 0, 7])


def test_a_float_bias_that_is_no_int32_stays_in_float() -> None:
    weights = _weights(bias=np.array([0.1234567, -1.0, 2.5, 0.0], np.float32))
    _, store = _run(_ir(), weights)
    assert np.any(store["qconv.bias"] != 0)


def _matmul_integer_ir() -> str:
    # MatMulInteger as the frontend writes it: (x - zp) * 1 @ dequantized int8 w, cast to i32;
    # the zero point is a function argument (DynamicQuantizeLinear's is computed at run time).
    return """builtin.module {
  func.func @main(%xq: tensor<2x3x5xui8>, %xz: tensor<ui8>) -> tensor<2x3x4xi32> {
    %one = graph.constant "one" : tensor<f32>
    %x = graph.dequantize_linear %xq, %one, %xz : tensor<2x3x5xui8>, tensor<f32>, tensor<ui8> -> tensor<2x3x5xf32>
    %wq = graph.constant "wq" : tensor<5x4xi8>
    %ws = graph.constant "ws" : tensor<f32>
    %wz = graph.constant "wz" : tensor<1x4xi8>
    %w = graph.dequantize_linear %wq, %ws, %wz : tensor<5x4xi8>, tensor<f32>, tensor<1x4xi8> -> tensor<5x4xf32>
    %mm = graph.matmul %x, %w : tensor<2x3x5xf32>, tensor<5x4xf32> -> tensor<2x3x4xf32>
    %y = graph.cast %mm : tensor<2x3x4xf32> -> tensor<2x3x4xi32>
    func.return %y : tensor<2x3x4xi32>
  }
}"""


def _matmul_integer_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "one": np.array(1.0, np.float32),
        "wq": rng.integers(-128, 128, (5, 4)).astype(np.int8),
        "ws": np.array(1.0, np.float32),
        "wz": np.zeros((1, 4), np.int8),
    }


def test_matmul_integer_subtracts_the_zero_point_times_the_column_sums() -> None:
    # The column sums of particular int8 weights (the IR before and after:
    # tests/transforms/quantize-ops.mlir).
    weights = _matmul_integer_weights()
    _, store = _run(_matmul_integer_ir(), weights)
    sums = next(store[name] for name in store if name.startswith("qmatmul.colsum"))
    np.testing.assert_array_equal(sums, weights["wq"].astype(np.int32).sum(axis=0))
