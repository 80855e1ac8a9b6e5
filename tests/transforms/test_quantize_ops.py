"""quantize-ops on hand-written IR: the QDQ conv pattern becomes graph.qconv with the folded
constants, and every pattern it cannot prove stays in float (FileCheck before and after)."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser

from ember.core.context import make_context
from ember.dialects.weights import WeightStore
from ember.passes.transforms.dce import DeadCodeElimination
from ember.passes.transforms.fold_constants import FoldConstants
from ember.passes.transforms.quantize_ops import QuantizeOps
from ember.tests.filecheck_util import assert_filecheck

X_SCALE, Y_SCALE = np.float32(0.02), np.float32(0.05)


def _ir(
    *,
    x_type: str = "ui8",
    w_zero_point_type: str = "i8",
    group: int = 1,
    relu: bool = False,
    extra_use: bool = False,
) -> str:
    conv_out = "%conv"
    relu_line = ""
    if relu:
        relu_line = "    %relu = graph.relu %conv : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>\n"
        conv_out = "%relu"
    x_in = 3 if group == 1 else 4
    cin = x_in // group
    extra = (
        "    %extra = graph.relu %conv : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>\n"
        if extra_use
        else ""
    )
    conv_props = (
        "{strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, "
        f"dilations = array<i64: 1, 1>, group = {group} : i64}}"
    )
    # A second reader of the conv result stays live as a second function result.
    results = "tensor<1x4x5x5xui8>" + (", tensor<1x4x5x5xf32>" if extra_use else "")
    returned = "%y" + (", %extra" if extra_use else "")
    return f"""builtin.module {{
  func.func @main(%xq: tensor<1x{x_in}x5x5x{x_type}>) -> ({results}) {{
    %xs = graph.constant "xs" : tensor<f32>
    %xz = graph.constant "xz" : tensor<{x_type}>
    %x = graph.dequantize_linear %xq, %xs, %xz : tensor<1x{x_in}x5x5x{x_type}>, tensor<f32>, tensor<{x_type}> -> tensor<1x{x_in}x5x5xf32>
    %wq = graph.constant "wq" : tensor<4x{cin}x3x3xi8>
    %ws = graph.constant "ws" : tensor<4x1x1x1xf32>
    %wz = graph.constant "wz" : tensor<4x1x1x1x{w_zero_point_type}>
    %w = graph.dequantize_linear %wq, %ws, %wz : tensor<4x{cin}x3x3xi8>, tensor<4x1x1x1xf32>, tensor<4x1x1x1x{w_zero_point_type}> -> tensor<4x{cin}x3x3xf32>
    %b = graph.constant "b" : tensor<4xf32>
    %conv = graph.conv %x, %w bias %b {conv_props} : tensor<1x{x_in}x5x5xf32>, tensor<4x{cin}x3x3xf32>, tensor<4xf32> -> tensor<1x4x5x5xf32>
{relu_line}{extra}    %ys = graph.constant "ys" : tensor<f32>
    %yz = graph.constant "yz" : tensor<ui8>
    %y = graph.quantize_linear {conv_out}, %ys, %yz : tensor<1x4x5x5xf32>, tensor<f32>, tensor<ui8> -> tensor<1x4x5x5xui8>
    func.return {returned} : {results}
  }}
}}"""


def _weights(
    x_dtype: type = np.uint8, w_zero: int = 0, cin: int = 3, bias: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    w_scale = rng.uniform(0.001, 0.01, (4, 1, 1, 1)).astype(np.float32)
    if bias is None:  # int32 quantized at x_scale * w_scale, as the quantization tool writes
        bias = (np.array([100, -2000, 0, 7], np.float32) * (X_SCALE * w_scale.reshape(4))).astype(
            np.float32
        )
    return {
        "xs": np.array(X_SCALE),
        "xz": np.array(5, x_dtype),
        "wq": rng.integers(-127, 128, (4, cin, 3, 3)).astype(np.int8),
        "ws": w_scale,
        "wz": np.full((4, 1, 1, 1), w_zero, np.int8),
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


def test_qdq_conv_becomes_qconv_with_folded_constants() -> None:
    weights = _weights()
    before = _ir()
    assert_filecheck(
        before,
        """
        CHECK: graph.dequantize_linear %xq
        CHECK: graph.conv
        CHECK: graph.quantize_linear %conv
        """,
    )
    text, store = _run(before, weights)
    assert_filecheck(
        text,
        """
        CHECK-DAG:  %[[W:.*]] = graph.constant "wq" : tensor<4x3x3x3xi8>
        CHECK-DAG:  %[[OFF:.*]] = graph.constant "qconv.offset" : tensor<4xi32>
        CHECK-DAG:  %[[MUL:.*]] = graph.constant "qconv.multiplier" : tensor<4xf32>
        CHECK-DAG:  %[[B:.*]] = graph.constant "qconv.bias" : tensor<4xf32>
        CHECK:      %y = graph.qconv %xq, %[[W]], %[[OFF]], %[[MUL]], %[[B]] {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, input_zero_point = 5 : i64, output_zero_point = 128 : i64, output_min = 0 : i64, output_max = 255 : i64} : tensor<1x3x5x5xui8>, tensor<4x3x3x3xi8>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<1x4x5x5xui8>
        CHECK-NOT:  graph.conv
        CHECK-NOT:  graph.dequantize_linear
        CHECK-NOT:  graph.quantize_linear
        """,
    )
    # The int32 bias is recovered exactly; nothing is left for the float bias.
    np.testing.assert_array_equal(store["qconv.offset"], [100, -2000, 0, 7])
    np.testing.assert_array_equal(store["qconv.bias"], np.zeros(4, np.float32))
    expected = (
        np.float64(X_SCALE) * weights["ws"].reshape(4).astype(np.float64) / np.float64(Y_SCALE)
    ).astype(np.float32)
    np.testing.assert_array_equal(store["qconv.multiplier"], expected)


@pytest.mark.parametrize("group", [4, 2])
def test_depthwise_and_grouped_qdq_convs_become_qconvs_with_their_group(group: int) -> None:
    """Depthwise (group 4 = channels) and grouped (two groups of two channels): graph.qconv
    with `group`, the filter unchanged (graph_to_kernel packs it for the depthwise kernel or
    per group for the group-1 kernel)."""
    cin = 4 // group
    text, store = _run(_ir(group=group), _weights(cin=cin))
    assert_filecheck(
        text,
        f"""
        CHECK:      %y = graph.qconv %xq
        CHECK-SAME: group = {group} : i64
        CHECK-SAME: tensor<1x4x5x5xui8>, tensor<4x{cin}x3x3xi8>
        CHECK-NOT:  graph.conv
        """,
    )
    np.testing.assert_array_equal(store["qconv.offset"], [100, -2000, 0, 7])


def test_relu_between_conv_and_quantize_raises_the_lower_bound_to_the_zero_point() -> None:
    text, _ = _run(_ir(relu=True), _weights())
    assert_filecheck(
        text,
        """
        CHECK:      graph.qconv
        CHECK-SAME: output_zero_point = 128 : i64, output_min = 128 : i64, output_max = 255 : i64
        CHECK-NOT:  graph.relu
        """,
    )


def test_a_float_bias_that_is_no_int32_stays_in_float() -> None:
    weights = _weights(bias=np.array([0.1234567, -1.0, 2.5, 0.0], np.float32))
    _, store = _run(_ir(), weights)
    assert np.any(store["qconv.bias"] != 0)


@pytest.mark.parametrize(
    "case",
    ["weight_zero_point", "conv_read_twice"],
)
def test_patterns_it_cannot_prove_stay_in_float(case: str) -> None:
    if case == "weight_zero_point":
        ir, weights = _ir(), _weights(w_zero=3)
    else:
        ir, weights = _ir(extra_use=True), _weights()
    text, _ = _run(ir, weights)
    assert_filecheck(
        text,
        """
        CHECK-NOT: graph.qconv
        CHECK:     graph.conv
        CHECK:     graph.quantize_linear
        """,
    )


def _residual_ir() -> str:
    """A graph.qconv whose output is dequantized, added to a dequantized uint8 residual,
    relu'd and quantized (as quantize-ops leaves a QDQ residual block)."""
    props = (
        "{strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = "
        "array<i64: 1, 1>, input_zero_point = 0 : i64, output_zero_point = 7 : i64, "
        "output_min = 0 : i64, output_max = 255 : i64}"
    )
    t8 = "tensor<1x4x5x5xui8>"
    tf = "tensor<1x4x5x5xf32>"
    return f"""builtin.module {{
  func.func @main(%xq: {t8}, %rq: {t8}) -> ({t8}) {{
    %w = graph.constant "w" : tensor<4x4x1x1xi8>
    %off = graph.constant "off" : tensor<4xi32>
    %mul = graph.constant "mul" : tensor<4xf32>
    %b = graph.constant "b" : tensor<4xf32>
    %cq = graph.qconv %xq, %w, %off, %mul, %b {props} : {t8}, tensor<4x4x1x1xi8>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> {t8}
    %cs = graph.constant "cs" : tensor<f32>
    %cz = graph.constant "cz" : tensor<ui8>
    %c = graph.dequantize_linear %cq, %cs, %cz : {t8}, tensor<f32>, tensor<ui8> -> {tf}
    %rs = graph.constant "rs" : tensor<f32>
    %rz = graph.constant "rz" : tensor<ui8>
    %r = graph.dequantize_linear %rq, %rs, %rz : {t8}, tensor<f32>, tensor<ui8> -> {tf}
    %sum = graph.add %r, %c : {tf}, {tf} -> {tf}
    %relu = graph.relu %sum : {tf} -> {tf}
    %ys = graph.constant "ys" : tensor<f32>
    %yz = graph.constant "yz" : tensor<ui8>
    %y = graph.quantize_linear %relu, %ys, %yz : {tf}, tensor<f32>, tensor<ui8> -> {t8}
    func.return %y : {t8}
  }}
}}"""


def _residual_weights(conv_zero_point: int) -> dict[str, np.ndarray]:
    return {
        "w": np.ones((4, 4, 1, 1), np.int8),
        "off": np.zeros(4, np.int32),
        "mul": np.full(4, 0.01, np.float32),
        "b": np.zeros(4, np.float32),
        "cs": np.array(0.5, np.float32),
        "cz": np.array(conv_zero_point, np.uint8),
        "rs": np.array(0.25, np.float32),
        "rz": np.array(3, np.uint8),
        "ys": np.array(0.75, np.float32),
        "yz": np.array(9, np.uint8),
    }


def test_quantized_residual_add_fuses_into_the_qconv() -> None:
    text, _ = _run(_residual_ir(), _residual_weights(7))
    assert_filecheck(
        text,
        """
        CHECK:      %y = graph.qconv %xq, %w, %off, %mul, %b residual %rq
        CHECK-SAME: residual_params = array<f32: 5.000000e-01, 2.500000e-01, 3.000000e+00, 7.500000e-01, 9.000000e+00, 9.000000e+00, 2.550000e+02>
        CHECK-NOT:  graph.add
        CHECK-NOT:  graph.quantize_linear
        """,
    )


def test_residual_add_stays_float_when_the_dequantize_disagrees_with_the_conv() -> None:
    """The conv's output dequantized with another zero point than it was quantized with."""
    text, _ = _run(_residual_ir(), _residual_weights(8))
    assert_filecheck(
        text,
        """
        CHECK-NOT: residual
        CHECK:     graph.add
        CHECK:     graph.quantize_linear
        """,
    )


def _matmul_integer_ir(w_scale: str = "1.0") -> str:
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


def _matmul_integer_weights(w_scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "one": np.array(1.0, np.float32),
        "wq": rng.integers(-128, 128, (5, 4)).astype(np.int8),
        "ws": np.array(w_scale, np.float32),
        "wz": np.zeros((1, 4), np.int8),
    }


def test_matmul_integer_with_a_runtime_zero_point_becomes_an_int32_qconv() -> None:
    before = _matmul_integer_ir()
    assert_filecheck(
        before,
        """
        CHECK: graph.dequantize_linear %xq, %one, %xz
        CHECK: graph.matmul
        CHECK: graph.cast %mm
        """,
    )
    weights = _matmul_integer_weights()
    text, store = _run(before, weights)
    assert_filecheck(
        text,
        """
        CHECK:      %[[XT:.*]] = graph.transpose
        CHECK:      %[[X4:.*]] = graph.reshape %[[XT]] {{.*}} -> tensor<1x5x1x6xui8>
        CHECK:      %[[Q:.*]] = graph.qconv %[[X4]], {{.*}} input_zero_point = 0 : i64, {{.*}} -> tensor<1x4x1x6xi32>
        CHECK:      %[[ZP:.*]] = graph.cast %xz : tensor<ui8> -> tensor<i32>
        CHECK:      %[[SUMS:.*]] = graph.constant "qmatmul.colsum" : tensor<4xi32>
        CHECK:      %[[C:.*]] = graph.mul %[[ZP]], %[[SUMS]]
        CHECK:      %y = graph.sub %{{.*}}, %[[C]] : tensor<2x3x4xi32>, tensor<4xi32> -> tensor<2x3x4xi32>
        CHECK-NOT:  graph.matmul
        """,
    )
    sums = next(store[name] for name in store if name.startswith("qmatmul.colsum"))
    np.testing.assert_array_equal(sums, weights["wq"].astype(np.int32).sum(axis=0))


def test_matmul_integer_with_a_scaled_weight_stays_in_float() -> None:
    # Not MatMulInteger: a dequantized weight with scale != 1 is a float product.
    text, _ = _run(_matmul_integer_ir(), _matmul_integer_weights(w_scale=0.5))
    assert_filecheck(text, "CHECK: graph.matmul\nCHECK-NOT: graph.qconv")


def test_an_integer_only_cast_is_not_folded_in_float() -> None:
    # The frontend marks MatMulInteger's cast when float32 may not hold its sums: folding it
    # with numpy would compute exactly that inexact float product.
    ir = """builtin.module {
  func.func @main() -> tensor<2xi32> {
    %c = graph.constant "c" : tensor<2xf32>
    %y = graph.cast %c {"ember.integer_only" = ["MatMulInteger", "mmi", "17", "sums"]} : tensor<2xf32> -> tensor<2xi32>
    func.return %y : tensor<2xi32>
  }
}"""
    store = WeightStore({"c": np.array([1.0, 2.0], np.float32)})
    ctx = make_context(store)
    module: ModuleOp = Parser(ctx, ir).parse_module()
    FoldConstants().apply(ctx, module)
    assert_filecheck(str(module), 'CHECK: graph.cast %c {ember.integer_only = ["MatMulInteger"')
