"""Quantized models (QDQ and QOperator formats) through `ember.compile`, against onnxruntime.

ember runs them in float (dequantize -> float op -> quantize, frontend/ops_quantization.py).
Tolerances: QuantizeLinear/DequantizeLinear alone are exact (the same float32 division and
round-half-to-even); MatMulInteger/ConvInteger are exact (int32); an op computed in float and
requantized may differ from onnxruntime's integer kernels by at most one quantization step
(a float result next to a rounding tie), so quantized outputs are compared with an absolute
tolerance of 1 (in integer steps) and float outputs of a quantized model with one step of the
output's scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.frontend.onnx_importer import import_model
from ember.runtime.errors import ModelError, UnsupportedOpError

RNG = np.random.default_rng(13)
MS = "com.microsoft"


def _model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    outputs: dict[str, type],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 21,
) -> onnx.ModelProto:
    infos = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in inputs.items()
    ]
    graph = helper.make_graph(
        nodes,
        "quantized",
        infos,
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(t)), None)
            for n, t in outputs.items()
        ],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()],
    )
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9 if opset <= 21 else onnx.IR_VERSION  # onnxruntime reads IR 9
    return model


def _run_both(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimize: bool = True
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """ember's and onnxruntime's outputs; `optimize=False` runs onnxruntime's plain kernels
    (its graph optimizer turns DQ -> MatMul into MatMulNBits, which quantizes the float
    activation too and is ~10% off the model's own arithmetic)."""
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    expected = session.run(None, feeds)
    compiled = ember.compile(model)
    actual = compiled.run(feeds)
    return [actual[o.name] for o in model.graph.output], expected


def _assert_within_one_step(actual: np.ndarray, expected: np.ndarray) -> None:
    """Quantized outputs: equal dtype and shape, at most one quantization step apart."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    steps = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
    assert steps.max(initial=0) <= 1, f"{int(steps.max())} steps apart"


def _quantized(dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min, int(info.max) + 1, shape).astype(dtype)


# ---------------------------------------------------------------------------------------------
# QuantizeLinear / DequantizeLinear


def _edge_values(shape: tuple[int, ...]) -> np.ndarray:
    """Random values plus the cases that matter: NaN, +-inf, out-of-range, exact .5 ties."""
    x = (RNG.standard_normal(shape) * 3).astype(np.float32)
    flat = x.reshape(-1)
    specials = [np.nan, np.inf, -np.inf, 1e10, -1e10, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.0]
    flat[: len(specials)] = specials
    return x


@pytest.mark.parametrize(
    ("dtype", "opset", "per_axis"),
    [
        (np.uint8, 10, False),
        (np.int8, 13, True),
        (np.uint8, 13, True),
        (np.int16, 21, True),
        (np.uint16, 21, False),
        (np.int8, 19, False),
    ],
)
def test_quantize_dequantize_match_onnxruntime(dtype: type, opset: int, per_axis: bool) -> None:
    # 3 x 21 channels-on-axis-1: a vector main loop and a scalar tail per row.
    x = _edge_values((3, 21))
    # Scale 1 on channel 0 keeps the .5 ties of the first row exact ties.
    scale = np.where(np.arange(21) == 0, 1.0, RNG.uniform(0.01, 0.2, 21)).astype(np.float32)
    info = np.iinfo(dtype)
    zero_point = RNG.integers(info.min // 4, info.max // 4, 21).astype(dtype)
    if not per_axis:
        scale, zero_point = np.float32(1.0), zero_point[:1].reshape(())
    q_attrs: dict[str, Any] = {"axis": 1} if per_axis else {}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q", **q_attrs),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq", **q_attrs),
        helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wf"], name="dq_in", **q_attrs),
    ]
    feeds = {"x": x, "w": _quantized(dtype, (3, 21))}
    model = _model(
        nodes,
        feeds,
        {"q": dtype, "y": np.float32, "wf": np.float32},
        {"s": scale, "z": zero_point},
        opset,
    )
    (q, y, wf), (q_ref, y_ref, wf_ref) = _run_both(model, feeds)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(wf, wf_ref)
    # NaN -> the type's minimum, +-inf and out-of-range values saturate (as onnxruntime).
    assert q[0, 0] == info.min and q[0, 1] == info.max and q[0, 2] == info.min


def test_quantize_without_zero_point_is_uint8_or_output_dtype() -> None:
    x = _edge_values((2, 16))
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s"], ["u"], name="default"),
        helper.make_node(
            "QuantizeLinear", ["x", "s"], ["i"], name="typed", output_dtype=TensorProto.INT8
        ),
    ]
    model = _model(
        nodes, {"x": x}, {"u": np.uint8, "i": np.int8}, {"s": np.float32(0.05)}, opset=21
    )
    (u, i), (u_ref, i_ref) = _run_both(model, {"x": x})
    assert u.dtype == np.uint8 and i.dtype == np.int8
    np.testing.assert_array_equal(u, u_ref)
    np.testing.assert_array_equal(i, i_ref)


@pytest.mark.parametrize("scale_at_run_time", [False, True])
def test_blocked_quantize_dequantize(scale_at_run_time: bool) -> None:
    # Blocks of 4 along axis 1 of a 10-wide tensor: the last block is partial.
    x = (RNG.standard_normal((3, 10)) * 2).astype(np.float32)
    scale = RNG.uniform(0.01, 0.1, (3, 3)).astype(np.float32)
    zero_point = RNG.integers(-20, 20, (3, 3)).astype(np.int8)
    attrs = {"axis": 1, "block_size": 4}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs),
    ]
    feeds = {"x": x, "s": scale} if scale_at_run_time else {"x": x}
    inits = {"z": zero_point} if scale_at_run_time else {"s": scale, "z": zero_point}
    model = _model(nodes, feeds, {"q": np.int8, "y": np.float32}, inits, opset=21)
    expected_scale = np.repeat(scale, 4, axis=1)[:, :10]
    expected_zp = np.repeat(zero_point, 4, axis=1)[:, :10].astype(np.float32)
    expected_q = np.clip(np.rint(x / expected_scale) + expected_zp, -128, 127).astype(np.int8)
    (q, y), (q_ref, y_ref) = _run_both(model, feeds)
    np.testing.assert_array_equal(q, expected_q)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_dequantized_constant_weight_is_folded() -> None:
    """A DQ of a constant weight becomes a float32 weight at import: no int8 weight and no
    elementwise op remain before the MatMul."""
    w = _quantized(np.int8, (16, 8))
    w_scale = RNG.uniform(0.01, 0.05, 8).astype(np.float32)
    nodes = [
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=1),
        helper.make_node("MatMul", ["x", "wf"], ["y"]),
    ]
    inits = {"w": w, "ws": w_scale, "wz": np.zeros(8, np.int8)}
    x = RNG.standard_normal((4, 16)).astype(np.float32)
    model = _model(nodes, {"x": x}, {"y": np.float32}, inits, opset=13)
    module, _ = import_model(model)
    ops = [op.name for op in module.walk()]
    assert "graph.matmul" in ops and "graph.cast" not in ops and "graph.mul" not in ops, ops
    (y,), (y_ref,) = _run_both(model, {"x": x}, optimize=False)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# QOperator ops, one at a time


def _scalars(**params: tuple[float, type]) -> dict[str, np.ndarray]:
    return {name: np.array(value, dtype) for name, (value, dtype) in params.items()}


def test_qlinear_conv_per_channel_with_bias() -> None:
    x = _quantized(np.uint8, (1, 4, 9, 9))
    w = _quantized(np.int8, (6, 2, 3, 3))
    inits = {
        "w": w,
        "ws": RNG.uniform(0.002, 0.01, 6).astype(np.float32),
        "wz": np.zeros(6, np.int8),
        "b": RNG.integers(-2000, 2000, 6).astype(np.int32),
        **_scalars(xs=(0.02, np.float32), xz=(128, np.uint8), ys=(0.05, np.float32)),
        **_scalars(yz=(120, np.uint8)),
    }
    node = helper.make_node(
        "QLinearConv",
        ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
        ["y"],
        name="qconv",
        group=2,
        pads=[1, 0, 1, 2],
        strides=[2, 1],
    )
    model = _model([node], {"x": x}, {"y": np.uint8}, inits, opset=13)
    (y,), (y_ref,) = _run_both(model, {"x": x})
    _assert_within_one_step(y, y_ref)


@pytest.mark.parametrize(("a_type", "b_type"), [(np.uint8, np.int8), (np.int8, np.int8)])
def test_qlinear_matmul(a_type: type, b_type: type) -> None:
    a = _quantized(a_type, (2, 5, 12))
    inits = {
        "b": _quantized(b_type, (12, 7)),
        **_scalars(as_=(0.03, np.float32), az=(3, a_type), bs=(0.02, np.float32)),
        **_scalars(
            bz=(5, b_type), ys=(0.4, np.float32), yz=(-7 if a_type == np.int8 else 100, a_type)
        ),
    }
    node = helper.make_node(
        "QLinearMatMul", ["a", "as_", "az", "b", "bs", "bz", "ys", "yz"], ["y"], name="qmm"
    )
    model = _model([node], {"a": a}, {"y": a_type}, inits, opset=10)
    (y,), (y_ref,) = _run_both(model, {"a": a})
    _assert_within_one_step(y, y_ref)


def test_matmul_integer_is_exact() -> None:
    a = _quantized(np.uint8, (3, 4, 40))
    b = _quantized(np.int8, (40, 9))
    inits = {"b": b, "az": np.array(7, np.uint8), "bz": RNG.integers(-3, 3, 9).astype(np.int8)}
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"], name="mmi")
    model = _model([node], {"a": a}, {"y": np.int32}, inits, opset=10)
    (y,), (y_ref,) = _run_both(model, {"a": a})
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, y_ref)


def test_conv_integer_is_exact() -> None:
    x = _quantized(np.uint8, (1, 3, 8, 8))
    inits = {"w": _quantized(np.uint8, (4, 3, 3, 3)), "xz": np.array(9, np.uint8)}
    node = helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], name="ci", pads=[1, 1, 1, 1])
    model = _model([node], {"x": x}, {"y": np.int32}, inits, opset=10)
    (y,), (y_ref,) = _run_both(model, {"x": x})
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, y_ref)


def test_matmul_integer_with_constant_b_is_proved_exact_from_its_column_sums() -> None:
    # K = 1024 would exceed 2^24 for arbitrary int8 B (1024 * 255 * 128), but this constant
    # B's largest column sum of |b| times 255 stays below it: compiled, and exact.
    a = _quantized(np.uint8, (3, 1024))
    b = RNG.integers(-40, 41, (1024, 4)).astype(np.int8)
    assert 255 * np.abs(b.astype(np.int64)).sum(axis=0).max() <= 1 << 24
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"], name="wide_mmi")
    model = _model([node], {"a": a}, {"y": np.int32}, {"b": b}, opset=10)
    (y,), (y_ref,) = _run_both(model, {"a": a})
    np.testing.assert_array_equal(y, y_ref)


def test_matmul_integer_refused_when_float32_is_not_exact() -> None:
    # K = 1024 with both operands at run time: 1024 * 255 * 128 > 2^24.
    a, b = _quantized(np.uint8, (2, 1024)), _quantized(np.int8, (1024, 3))
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"], name="big_mmi")
    model = _model([node], {"a": a, "b": b}, {"y": np.int32}, opset=10)
    with pytest.raises(UnsupportedOpError, match=r"MatMulInteger.*big_mmi.*opset 10.*2\^24"):
        ember.compile(model)


def _ms_model(
    node: onnx.NodeProto, inputs: dict[str, np.ndarray], inits: dict[str, Any], out: type
) -> onnx.ModelProto:
    return _model([node], inputs, {"y": out}, inits, opset=13)


_Q_PARAMS = {
    **_scalars(xs=(0.05, np.float32), xz=(100, np.uint8), ys=(0.03, np.float32)),
    **_scalars(yz=(90, np.uint8), bs=(0.04, np.float32), bz=(140, np.uint8)),
}


@pytest.mark.parametrize(
    ("op_type", "inputs", "attrs"),
    [
        ("QLinearAdd", ["x", "xs", "xz", "b", "bs", "bz", "ys", "yz"], {}),
        ("QLinearMul", ["x", "xs", "xz", "b", "bs", "bz", "ys", "yz"], {}),
        ("QLinearSigmoid", ["x", "xs", "xz", "ys", "yz"], {}),
        ("QLinearLeakyRelu", ["x", "xs", "xz", "ys", "yz"], {"alpha": 0.1}),
        ("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"], {}),
        ("QLinearAveragePool", ["x", "xs", "xz", "ys", "yz"], {"kernel_shape": [3, 3]}),
        ("QLinearConcat", ["ys", "yz", "x", "xs", "xz", "b", "bs", "bz"], {"axis": 1}),
    ],
)
def test_com_microsoft_qlinear_ops(op_type: str, inputs: list[str], attrs: dict[str, Any]) -> None:
    feeds = {"x": _quantized(np.uint8, (1, 3, 6, 6)), "b": _quantized(np.uint8, (1, 3, 6, 6))}
    node = helper.make_node(op_type, inputs, ["y"], name="qop", domain=MS, **attrs)
    model = _ms_model(node, feeds, _Q_PARAMS, np.uint8)
    (y,), (y_ref,) = _run_both(model, feeds)
    _assert_within_one_step(y, y_ref)


@pytest.mark.parametrize("quantized_output", [True, False])
def test_qgemm(quantized_output: bool) -> None:
    a = _quantized(np.uint8, (5, 16))
    inits = {
        "b": _quantized(np.int8, (6, 16)),  # transB=1: B is N x K, per-column scales
        "bs": RNG.uniform(0.005, 0.01, 6).astype(np.float32),
        "bz": np.zeros(6, np.int8),
        "c": RNG.integers(-3000, 3000, 6).astype(np.int32),
        **_scalars(as_=(0.03, np.float32), az=(128, np.uint8)),
        **_scalars(ys=(0.08, np.float32), yz=(110, np.uint8)),
    }
    outputs = ["ys", "yz"] if quantized_output else []
    node = helper.make_node(
        "QGemm",
        ["a", "as_", "az", "b", "bs", "bz", "c", *outputs],
        ["y"],
        domain=MS,
        alpha=0.75,
        transB=1,
    )
    model = _ms_model(node, {"a": a}, inits, np.uint8 if quantized_output else np.float32)
    (y,), (y_ref,) = _run_both(model, {"a": a})
    if quantized_output:
        _assert_within_one_step(y, y_ref)
    else:  # float sums in another order than onnxruntime's int32 sum
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)


def test_matmul_integer_to_float() -> None:
    a = _quantized(np.uint8, (5, 16))
    inits = {
        "b": _quantized(np.int8, (16, 6)),
        "bias": RNG.standard_normal(6).astype(np.float32),
        "bs": RNG.uniform(0.01, 0.02, 6).astype(np.float32),
        **_scalars(as_=(0.03, np.float32), az=(128, np.uint8)),
    }
    node = helper.make_node(
        "MatMulIntegerToFloat", ["a", "b", "as_", "bs", "az", "", "bias"], ["y"], domain=MS
    )
    model = _ms_model(node, {"a": a}, inits, np.float32)
    (y,), (y_ref,) = _run_both(model, {"a": a})
    # Float sums of the products in another order than onnxruntime's int32 sum.
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)


def test_dynamic_quantize_linear() -> None:
    x = (RNG.standard_normal((4, 10)) * 3).astype(np.float32)
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    model = _model([node], {"x": x}, {"y": np.uint8, "s": np.float32, "z": np.uint8}, opset=13)
    (y, s, z), (y_ref, s_ref, z_ref) = _run_both(model, {"x": x})
    np.testing.assert_allclose(s, s_ref, rtol=1e-6)
    assert z.dtype == np.uint8 and abs(int(z) - int(z_ref)) <= 1
    _assert_within_one_step(y, y_ref)


# ---------------------------------------------------------------------------------------------
# Refusals name the op, the node, the opset and the reason


@pytest.mark.parametrize(
    ("node", "inits", "message"),
    [
        (
            helper.make_node(
                "QuantizeLinear", ["x", "s"], ["y"], name="q4", output_dtype=TensorProto.BOOL
            ),
            {"s": np.float32(0.1)},
            r"QuantizeLinear.*'q4'.*opset 21.*output_dtype bool",
        ),
        (
            helper.make_node(
                "QLinearSigmoid",
                ["x", "s", "z", "s", "z"],
                ["y"],
                name="nhwc",
                domain=MS,
                channels_last=1,
            ),
            {"s": np.float32(0.1), "z": np.uint8(3)},
            None,
        ),
    ],
)
def test_refusals_name_op_node_and_opset(
    node: onnx.NodeProto, inits: dict[str, Any], message: str | None
) -> None:
    if message is None:  # (channels_last=1 pools are supported now): a prepacked MatMulNBits
        node = helper.make_node(
            "MatMulNBits",
            ["x", "b", "s"],
            ["y"],
            name="prepacked",
            domain=MS,
            K=16,
            N=4,
            bits=4,
            block_size=16,
            weight_prepacked=1,
        )
        inits = {"b": np.zeros((4, 1, 8), np.uint8), "s": np.ones((4, 1), np.float32)}
        message = r"MatMulNBits.*'prepacked'.*opset 21.*weight_prepacked=1"
        x = RNG.standard_normal((2, 16)).astype(np.float32)
    else:
        x = RNG.standard_normal((2, 3)).astype(np.float32)
    out = {"QuantizeLinear": np.int8, "MatMulNBits": np.float32}.get(node.op_type, np.uint8)
    model = _model([node], {"x": x}, {"y": out}, inits, opset=21)
    with pytest.raises(UnsupportedOpError, match=message):
        ember.compile(model)


def test_blocked_scale_of_wrong_shape_is_a_model_error() -> None:
    x = RNG.standard_normal((3, 10)).astype(np.float32)
    node = helper.make_node(
        "QuantizeLinear", ["x", "s", "z"], ["y"], name="qb", axis=1, block_size=4
    )
    inits = {"s": np.ones((3, 2), np.float32), "z": np.zeros((3, 2), np.int8)}
    model = _model([node], {"x": x}, {"y": np.int8}, inits, opset=21)
    with pytest.raises(ModelError, match=r"QuantizeLinear node 'qb'.*block_size 4.*\(3, 3\)"):
        ember.compile(model)


# ---------------------------------------------------------------------------------------------
# Models written by onnxruntime's quantize_static


def _float_conv_matmul_model() -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> MatMul -> Add, seeded weights."""
    rng = np.random.default_rng(5)
    inits = {
        "w": (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
        "wb": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "m": (rng.standard_normal((8, 5)) * 0.5).astype(np.float32),
        "mb": (rng.standard_normal(5) * 0.1).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "wb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "m"], ["mm"]),
        helper.make_node("Add", ["mm", "mb"], ["y"]),
    ]
    x = np.zeros((1, 3, 10, 10), np.float32)
    model = _model(nodes, {"x": x}, {"y": np.float32}, inits, opset=13)
    del model.opset_import[1:]  # only ai.onnx: quantize_static adds com.microsoft itself
    return model


class _SeededCalibration:
    """quantize_static's CalibrationDataReader protocol over 8 seeded batches."""

    def __init__(self) -> None:
        rng = np.random.default_rng(11)
        self.batches = iter(
            [{"x": rng.standard_normal((1, 3, 10, 10)).astype(np.float32)} for _ in range(8)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


@pytest.mark.parametrize("quant_format", ["QDQ", "QOperator"])
def test_quantize_static_model_matches_onnxruntime(quant_format: str, tmp_path: Any) -> None:
    from onnxruntime import quantization

    float_path, quantized_path = tmp_path / "float.onnx", tmp_path / "quantized.onnx"
    onnx.save(_float_conv_matmul_model(), float_path)
    quantization.quantize_static(
        str(float_path),
        str(quantized_path),
        _SeededCalibration(),
        quant_format=getattr(quantization.QuantFormat, quant_format),
        per_channel=True,
        activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8,
    )
    model = onnx.load(quantized_path)
    op_types = {n.op_type for n in model.graph.node}
    if quant_format == "QOperator":
        assert {"QLinearConv", "QLinearMatMul", "QLinearGlobalAveragePool"} <= op_types, op_types
    else:
        assert {"QuantizeLinear", "DequantizeLinear", "Conv", "MatMul"} <= op_types, op_types
    # The output's quantization step: the scale of the DequantizeLinear that produces it.
    producer = next(n for n in model.graph.node if n.output[0] == model.graph.output[0].name)
    assert producer.op_type == "DequantizeLinear"
    step = float(
        numpy_helper.to_array(
            next(t for t in model.graph.initializer if t.name == producer.input[1])
        )
    )
    rng = np.random.default_rng(17)
    for _ in range(3):
        x = rng.standard_normal((1, 3, 10, 10)).astype(np.float32)
        (y,), (y_ref,) = _run_both(model, {"x": x})
        # At most one quantization step of the output apart (see the module docstring).
        assert np.max(np.abs(y - y_ref)) <= step * 1.001, (np.max(np.abs(y - y_ref)), step)


def test_quantize_dynamic_model_matches_onnxruntime(tmp_path: Any) -> None:
    """DynamicQuantizeLinear -> ConvInteger/MatMulInteger -> Cast -> Mul, per-channel weights."""
    from onnxruntime import quantization

    float_path, quantized_path = tmp_path / "float.onnx", tmp_path / "dynamic.onnx"
    onnx.save(_float_conv_matmul_model(), float_path)
    quantization.quantize_dynamic(
        str(float_path),
        str(quantized_path),
        weight_type=quantization.QuantType.QInt8,
        per_channel=True,
    )
    model = onnx.load(quantized_path)
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= {
        n.op_type for n in model.graph.node
    }
    x = np.random.default_rng(19).standard_normal((1, 3, 10, 10)).astype(np.float32)
    (y,), (y_ref,) = _run_both(model, {"x": x})
    # The integer ops are exact and the dynamic quantization identical; what is left is
    # float32 arithmetic in another order: 1e-5 relative to max |y|.
    assert np.max(np.abs(y - y_ref)) <= 1e-5 * np.max(np.abs(y_ref))


def test_int4_weight_dequantizes_like_onnxruntime() -> None:
    """An INT4 initializer (packed two per byte in the proto) unpacks at import and
    dequantizes exactly (formerly refused)."""
    weight = helper.make_tensor("w", TensorProto.INT4, [4, 2], [1, 2, 3, 4, -1, -2, -3, -8])
    nodes = [
        helper.make_node("DequantizeLinear", ["w", "s"], ["wf"], name="dq4"),
        helper.make_node("MatMul", ["x", "wf"], ["y"]),
    ]
    x = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    model = _model(nodes, {"x": x}, {"y": np.float32}, {"s": np.float32(0.1)}, opset=21)
    model.graph.initializer.append(weight)
    (y,), (y_ref,) = _run_both(model, {"x": x}, optimize=False)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
