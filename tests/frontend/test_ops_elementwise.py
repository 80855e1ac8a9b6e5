"""The comparison/logic/integer/activation family, one-node models through `ember.compile`
(native code), against onnxruntime on seeded inputs, for the dtypes the ONNX cases use.

Tolerance: exact for bool and integer results; rtol 1e-4, atol 1e-5 for float32/float64
(the polynomial exp/log/tanh/erf of the kernels), rtol 2e-3 and atol 1e-3 for float16.
Dtypes are limited to those onnxruntime has kernels for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import ember
from ember.core.context import make_context
from ember.frontend.onnx_importer import import_model
from ember.passes.pipeline import build_pipeline
from ember.runtime.errors import ModelError
from ember.tests.filecheck_util import assert_filecheck

RNG = np.random.default_rng(7)
SHAPE = (3, 21)  # 63 elements: a vector main loop and a scalar tail


def _model(op: str, inputs: list[np.ndarray], attrs: dict[str, Any], opset: int):
    infos = [
        helper.make_tensor_value_info(f"x{i}", helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for i, a in enumerate(inputs)
    ]
    node = helper.make_node(op, [f"x{i}" for i in range(len(inputs))], ["y"], **attrs)
    graph = helper.make_graph([node], op, infos, [helper.make_tensor_value_info("y", 0, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9 if opset <= 21 else onnx.IR_VERSION  # onnxruntime reads IR 9
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _data(dtype: str, shape: tuple[int, ...] = SHAPE, low: int = -9, high: int = 9) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return RNG.integers(0, 2, shape).astype(bool)
    if dt.kind == "f":
        return (RNG.standard_normal(shape) * 2).astype(dt)
    if dt.kind == "u":
        return RNG.integers(max(low, 0), high if high > 0 else 9, shape).astype(dt)
    return RNG.integers(low, high, shape).astype(dt)


def _check(
    op: str,
    inputs: list[np.ndarray],
    attrs: dict[str, Any] | None = None,
    opset=18,
    atol: np.ndarray | float | None = None,
):
    model = _model(op, inputs, attrs or {}, opset)
    feeds = {f"x{i}": a for i, a in enumerate(inputs)}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, feeds)
    got = ember.compile(model).run(feeds)["y"]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if expected.dtype.kind in "biu":
        np.testing.assert_array_equal(got, expected)
    else:
        half = expected.dtype == np.float16
        if atol is None:
            atol = 1e-3 if half else 1e-5
        rtol = 2e-3 if half else 1e-4
        close = np.isclose(got, expected, rtol=rtol, atol=atol, equal_nan=True)  # type: ignore[arg-type]
        assert close.all(), f"{op}: {got[~close]} != {expected[~close]} (rtol {rtol})"


INT_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


@pytest.mark.parametrize("op", ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "uint8", "uint64"])
def test_comparisons(op: str, dtype: str) -> None:
    # The rhs broadcasts along rows; small integer ranges make ties (eq, le, ge) frequent.
    _check(op, [_data(dtype, low=-3, high=3), _data(dtype, SHAPE[1:], low=-3, high=3)])


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic(op: str) -> None:
    _check(op, [_data("bool"), _data("bool", (1, SHAPE[1]))])


def test_not() -> None:
    _check("Not", [_data("bool")])


@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot"])
@pytest.mark.parametrize("dtype", ["int8", "uint16", "int32", "uint64"])
def test_bitwise(op: str, dtype: str) -> None:
    args = [_data(dtype, low=-100, high=100)]
    if op != "BitwiseNot":
        args.append(_data(dtype, low=-100, high=100))
    _check(op, args)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "uint64"])
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift(dtype: str, direction: str) -> None:
    x = _data(dtype, high=200)
    _check("BitShift", [x, _data(dtype, high=4)], {"direction": direction})


@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "uint32", "int64"])
def test_where(dtype: str) -> None:
    _check("Where", [_data("bool", SHAPE[1:]), _data(dtype), _data(dtype, (SHAPE[0], 1))])


@pytest.mark.parametrize("dtype", INT_TYPES)
def test_integer_mod(dtype: str) -> None:
    divisor = _data(dtype, low=1, high=7)
    if np.dtype(dtype).kind == "i":
        divisor = divisor * RNG.choice(np.array([-1, 1], dtype), SHAPE)
    for fmod in (0, 1):
        _check("Mod", [_data(dtype, low=-50, high=50), divisor], {"fmod": fmod})


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_float_mod(dtype: str) -> None:
    _check("Mod", [_data(dtype) * 4, _data(dtype) + 3], {"fmod": 1})


def test_integer_division_by_zero_does_not_trap() -> None:
    x = np.array([7, -7, 3], np.int32)
    model = _model("Div", [x, x], {}, 18)
    y = ember.compile(model).run({"x0": x, "x1": np.array([0, 2, 0], np.int32)})["y"]
    np.testing.assert_array_equal(y[1], -3)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint32", "int64", "uint64"])
def test_integer_arithmetic(op: str, dtype: str) -> None:
    if (op == "Pow" and dtype not in ("int64",)) or (op in ("Max", "Min") and dtype == "int16"):
        pytest.skip("onnxruntime has no kernel")
    x = _data(dtype, low=-20, high=20)
    y = _data(dtype, low=1, high=4) if op in ("Div", "Pow") else _data(dtype, low=-20, high=20)
    _check(op, [x, y])


@pytest.mark.parametrize("op", ["Neg", "Abs", "Sign", "Relu"])
@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "float32", "float64"])
def test_signed_unary(op: str, dtype: str) -> None:
    if op == "Relu" and dtype in ("int16", "uint32"):
        pytest.skip("onnxruntime has no kernel")
    x = _data(dtype, low=-20, high=20)
    x.reshape(-1)[:3] = 0
    _check(op, [x])


@pytest.mark.parametrize("dtype", ["uint8", "uint64"])
def test_unsigned_sign_and_abs(dtype: str) -> None:
    for op in ("Sign", "Abs"):
        _check(op, [_data(dtype, high=255)])


@pytest.mark.parametrize(
    "op", ["Floor", "Ceil", "Round", "Sin", "Cos", "Tan", "Atan", "Sinh", "Cosh", "Asinh"]
)
def test_float_unary(op: str) -> None:
    x = _data("float32")
    if op == "Round":
        x.reshape(-1)[:4] = [0.5, 1.5, -2.5, 2.5]  # halves go to even
    _check(op, [x])


@pytest.mark.parametrize("op", ["Asin", "Acos", "Atanh"])
def test_inverse_trig_on_unit_interval(op: str) -> None:
    _check(op, [RNG.uniform(-0.99, 0.99, SHAPE).astype(np.float32)])


def test_acosh() -> None:
    _check("Acosh", [RNG.uniform(1.0, 5.0, SHAPE).astype(np.float32)])


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_isnan_isinf(dtype: str) -> None:
    x = _data(dtype)
    x.reshape(-1)[:6] = [np.nan, np.inf, -np.inf, 0, np.nan, -np.inf]
    _check("IsNaN", [x])
    if dtype == "float16":
        return  # onnxruntime has no float16 IsInf
    _check("IsInf", [x])
    _check("IsInf", [x], {"detect_negative": 0})
    _check("IsInf", [x], {"detect_positive": 0})


@pytest.mark.parametrize(
    ("op", "attrs"),
    [
        ("Elu", {"alpha": 0.7}),
        ("Selu", {}),
        ("Celu", {"alpha": 1.5}),
        ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
        ("HardSwish", {}),
        ("Softsign", {}),
        ("Softplus", {}),
        ("Mish", {}),
        ("ThresholdedRelu", {"alpha": 0.5}),
        ("Shrink", {"bias": 0.25, "lambd": 0.6}),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activations(op: str, attrs: dict[str, Any], dtype: str) -> None:
    if dtype == "float64" and op in ("Celu", "Mish", "Shrink"):
        pytest.skip("onnxruntime has no float64 kernel")
    _check(op, [_data(dtype) * 3], attrs)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate: str) -> None:
    _check("Gelu", [_data("float32") * 3], {"approximate": approximate}, opset=20)


def test_prelu_broadcasts_slope() -> None:
    _check("PRelu", [_data("float32"), _data("float32", (SHAPE[1],))])


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("float32", "uint8"),
        ("float32", "int64"),
        ("float64", "float16"),
        ("uint8", "float32"),
        ("uint64", "float64"),
        ("int8", "uint16"),
        ("uint16", "int64"),
        ("bool", "float32"),
        ("float32", "bool"),
        ("int32", "bool"),
    ],
)
def test_cast_like(source: str, target: str) -> None:
    x = _data(source, low=0, high=100) if source[0] != "f" else np.abs(_data(source)) * 20
    _check("CastLike", [x, _data(target, (1,))])


@pytest.mark.parametrize("dtype", ["float16", "float64", "int8", "uint64", "int64"])
def test_variadic_min_max_sum(dtype: str) -> None:
    args = [_data(dtype, low=-20, high=20) for _ in range(3)]
    _check("Min", args)
    _check("Max", args)
    if dtype in ("float16", "float64"):
        # onnxruntime rounds each float16 partial sum to float16, ember rounds once (ONNX op
        # boundaries): they may differ by half a float16 ULP of every partial, 2^-11 |partial|.
        partials = np.abs(args[0].astype(np.float64) + args[1].astype(np.float64))
        half_ulps = 2.0**-11 * (partials + np.abs(sum(a.astype(np.float64) for a in args)))
        _check("Sum", args, atol=1e-3 + half_ulps if dtype == "float16" else None)


def test_unsigned_compare_uses_unsigned_predicates_on_signless_buffers() -> None:
    x = _data("uint8")
    module, weights = import_model(_model("Less", [x, x], {}, 18))
    ctx = make_context(weights)
    build_pipeline("convert-graph-to-kernel").apply(ctx, module)
    assert_filecheck(
        str(module),
        """
        CHECK: func.func @main(%{{.*}}: memref<3x21xi8>, %{{.*}}: memref<3x21xi8>, %{{.*}}: memref<3x21xi1>)
        CHECK-SAME: ember.input_dtypes = ["uint8", "uint8"]
        CHECK-SAME: ember.output_dtypes = ["bool"]
        CHECK: kernel.elementwise
        CHECK: arith.cmpi ult, %{{.*}}, %{{.*}} : i8
        """,
    )


def _compiled(
    op: str, inputs: list[np.ndarray], attrs: dict[str, Any] | None = None, opset: int = 18
) -> np.ndarray:
    model = _model(op, inputs, attrs or {}, opset)
    return ember.compile(model).run({f"x{i}": a for i, a in enumerate(inputs)})["y"]


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift_out_of_range_shifts_everything_out(direction: str) -> None:
    # ONNX's rule for unsigned types (the only ones BitShift takes): shifting by the width or
    # more leaves 0.
    x = np.array([8, 4, 0xFFFFFFFF, 5], np.uint32)
    y = np.array([32, 33, 200, 1], np.uint32)
    expected = np.array([0, 0, 0, 2 if direction == "RIGHT" else 10], np.uint32)
    np.testing.assert_array_equal(_compiled("BitShift", [x, y], {"direction": direction}), expected)


@pytest.mark.parametrize("fmod", [0, 1])
def test_float_mod_by_infinity_and_nan(fmod: int) -> None:
    x = np.array([-3.0, 3.0, 1.0, np.inf, np.nan, 5.5], np.float32)
    y = np.array([np.inf, -np.inf, 0.0, 2.0, 2.0, -2.0], np.float32)
    with np.errstate(all="ignore"):
        expected = np.fmod(x, y) if fmod else np.mod(x, y)
    np.testing.assert_array_equal(_compiled("Mod", [x, y], {"fmod": fmod}), expected)


def test_bfloat16_elu_computes_in_float32_and_rounds_once() -> None:
    """Elu's function body (Exp, Sub, Mul, Where) runs in float32 on a bfloat16 input and its
    result is rounded once, as onnxruntime computes these activations (rounding after every
    op of the body gave -0.0293 for -0.0284, 3% off)."""
    import ml_dtypes

    bf16 = ml_dtypes.bfloat16
    x = _data("float32").astype(bf16)
    y = _compiled("Elu", [x], {"alpha": 0.5}, opset=22)  # Elu takes bfloat16 since opset 22
    wide = x.astype(np.float64)
    expected = np.where(wide < 0, np.expm1(wide) * 0.5, wide).astype(np.float32).astype(bf16)
    assert y.dtype == bf16
    np.testing.assert_array_equal(y.astype(np.float32), expected.astype(np.float32))


@pytest.mark.parametrize("source", ["float32", "float64"])
def test_cast_to_bfloat16_rounds_to_nearest_even(source: str) -> None:
    """Exact ties go to the even neighbour, overflow to infinity, NaN stays NaN: what
    onnxruntime's BFloat16(float) and ml_dtypes do (truncation was off by one ulp)."""
    import ml_dtypes

    ties = ((np.arange(0, 1 << 16, 7, dtype=np.uint32) << 16) | 0x8000).view(np.float32)
    near = ((np.arange(0, 1 << 16, 7, dtype=np.uint32) << 16) | 0x7FFF).view(np.float32)
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 3.4e38, 1e-45], np.float32)
    with np.errstate(all="ignore"):  # NaN payloads among the bit patterns
        x = np.concatenate([ties, near, special, _data("float32").ravel()]).astype(source)
        expected = x.astype(ml_dtypes.bfloat16)
    to = helper.np_dtype_to_tensor_dtype(np.dtype(ml_dtypes.bfloat16))
    y = _compiled("Cast", [x], {"to": to}, opset=21)
    nan = np.isnan(x)
    assert y.dtype == ml_dtypes.bfloat16 and np.isnan(y[nan].astype(np.float32)).all()
    np.testing.assert_array_equal(y[~nan].view(np.uint16), expected[~nan].view(np.uint16))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_celu_on_16_bit_floats_is_refused_by_its_type_constraint(dtype: str) -> None:
    """Celu's schema allows tensor(float) only; onnxruntime has no 16-bit Celu either (the node
    suite's test_celu_float16 runs only in onnx.reference). Its expanded form is 16-bit Elu-style
    ops, which do allow these types (test_celu_float16_expanded passes)."""
    import ml_dtypes

    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    x = (np.random.default_rng(5).standard_normal(512) * 3).astype(dt)
    model = _model("Celu", [x], {"alpha": 2.0}, 24)
    with pytest.raises(ModelError, match=r"Celu node .*T allows tensor\(float\)"):
        ember.compile(model)


def test_cast_like_target_of_unknown_shape_is_not_an_argument() -> None:
    x = _data("float32")
    model = _model("CastLike", [x, np.zeros(1, np.float64)], {}, 18)
    dim = model.graph.input[1].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_param = "n"
    compiled = ember.compile(model)
    assert compiled.input_names == ["x0"]
    np.testing.assert_array_equal(compiled.run({"x0": x})["y"], x.astype(np.float64))


def test_float64_to_float16_cast_rounds_through_float32() -> None:
    x = (_data("float64") * 1000).astype(np.float64)
    np.testing.assert_array_equal(
        _compiled("CastLike", [x, np.zeros(1, np.float16)]), x.astype(np.float16)
    )


@pytest.mark.parametrize(
    ("source", "target"),
    [("float32", "int32"), ("int64", "float64"), ("int8", "uint8"), ("bool", "uint8")],
)
def test_bitcast_reinterprets_bits(source: str, target: str) -> None:
    # numpy reference: a view of the same bytes.
    x = _data(source, low=-100, high=100)
    to = helper.np_dtype_to_tensor_dtype(np.dtype(target))
    np.testing.assert_array_equal(_compiled("BitCast", [x], {"to": to}, opset=26), x.view(target))


def _dropout_model(opset: int, constants: dict[str, np.ndarray], runtime: list[str]):
    """Dropout(x, ratio?, training_mode?) -> (y, mask): named inputs as initializers or as
    graph inputs, x always a graph input."""
    x = RNG.standard_normal(SHAPE).astype(np.float32)
    given = set(constants) | set(runtime)
    names = ["x"] + [n if n in given else "" for n in ("ratio", "training_mode")]
    while not names[-1]:
        names.pop()
    infos = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, SHAPE)]
    feeds = {"x": x}
    for name in runtime:
        value = {"ratio": np.array(0.0, np.float32), "training_mode": np.array(True)}[name]
        infos.append(
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), [])
        )
        feeds[name] = value
    node = helper.make_node("Dropout", names, ["y", "mask"])
    # The mask has the data's type before opset 10 and is bool from then on.
    mask_type = onnx.TensorProto.FLOAT if opset < 10 else onnx.TensorProto.BOOL
    graph = helper.make_graph(
        [node],
        "dropout",
        infos,
        [
            helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, SHAPE),
            helper.make_tensor_value_info("mask", mask_type, SHAPE),
        ],
        [onnx.numpy_helper.from_array(v, n) for n, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True), feeds


@pytest.mark.parametrize(
    ("opset", "constants", "runtime"),
    [
        (9, {}, []),
        (13, {}, []),
        (13, {"ratio": np.array(0.3, np.float32)}, []),
        (13, {"training_mode": np.array(False)}, ["ratio"]),
        (22, {"ratio": np.array(0.0, np.float32), "training_mode": np.array(True)}, []),
        # Given at run time (ratio 0, training_mode true): compiled for their values.
        (22, {"training_mode": np.array(True)}, ["ratio"]),
        (22, {"ratio": np.array(0.0, np.float32)}, ["training_mode"]),
        (22, {}, ["ratio", "training_mode"]),
    ],
)
def test_dropout_in_inference_is_identity_with_all_true_mask(
    opset: int, constants: dict[str, np.ndarray], runtime: list[str]
) -> None:
    model, feeds = _dropout_model(opset, constants, runtime)
    out = ember.compile(model).run(feeds)
    np.testing.assert_array_equal(out["y"], feeds["x"])
    mask_dtype = np.float32 if opset < 10 else np.bool_
    assert out["mask"].dtype == mask_dtype and out["mask"].shape == SHAPE
    assert (out["mask"] == 1).all()


def test_dropout_before_opset_7_needs_is_test() -> None:
    """Before opset 7, is_test=0 (the default) is training mode: refused; is_test=1 runs."""
    x = _data("float32")
    with pytest.raises(ember.UnsupportedOpError, match="opset 6.*is_test 0"):
        ember.compile(_model("Dropout", [x], {}, 6))
    np.testing.assert_array_equal(_compiled("Dropout", [x], {"is_test": 1}, 6), x)


@pytest.mark.parametrize(
    ("constants", "runtime", "detail"),
    [
        ({"training_mode": np.array(True)}, [], "training_mode true with ratio 0.5"),
        (
            {"ratio": np.array(0.75, np.float32), "training_mode": np.array(True)},
            [],
            "training_mode true with ratio 0.75",
        ),
        # training_mode true given at run time, ratio the default 0.5.
        ({}, ["training_mode"], "training_mode true with ratio 0.5"),
    ],
)
def test_training_mode_dropout_is_refused(
    constants: dict[str, np.ndarray], runtime: list[str], detail: str
) -> None:
    """Training-mode dropout drops random elements: refused, never run as the identity."""
    model, feeds = _dropout_model(22, constants, runtime)
    with pytest.raises(ember.EmberError) as info:
        ember.compile(model).run(feeds)
    error = info.value if isinstance(info.value, ember.UnsupportedOpError) else info.value.__cause__
    assert isinstance(error, ember.UnsupportedOpError)
    assert detail in str(error) and "Dropout" in str(error) and "opset 22" in str(error)
