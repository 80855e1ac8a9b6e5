"""Casts and (de)quantization on the 8-, 4- and 2-bit types, compiled, against onnx.reference.

One model per source type casts its input to every other type (float8 targets with saturate 1
and 0, float8e8m0 with each round_mode), so a test compiles once. Inputs are seeded random
values of several magnitudes plus the values where conversions go wrong: NaN, +-inf, +-0,
subnormals of every target, the largest finite values and just above them, and the exact
midpoints between neighbouring values of every target (round half to even). Outputs must match
onnx.reference bit for bit (any NaN equals any NaN; FNUZ and float4 have one NaN code, or none).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.runtime.errors import InputError, ModelError, UnsupportedOpError

SMALL_FLOATS = ["FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT4E2M1"]
NARROW_INTS = ["INT4", "UINT4", "INT2", "UINT2"]
SMALL = [*SMALL_FLOATS, "FLOAT8E8M0", *NARROW_INTS]
FLOAT8 = SMALL_FLOATS[:4]
ORDINARY = ["FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE", "INT8", "UINT8", "INT32", "INT64", "BOOL"]
# Targets of a small type's cast besides the small types: a decoded small float is a float32
# and a narrow int an int8/uint8, whose further conversion is the ordinary cast's (bfloat16,
# float64 and int64 targets take the same paths as float16 and int32 ones).
ORDINARY_FROM_SMALL = ["FLOAT", "FLOAT16", "INT8", "UINT8", "INT32", "BOOL"]
OPSET = 25
# onnx.reference's numpy casts warn on the NaN, inf and overflowing inputs chosen on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in cast:RuntimeWarning")


def _np(name: str) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(getattr(TensorProto, name)))


def _targets(source: str) -> list[tuple[str, dict[str, object]]]:
    """(target type, Cast attributes) for every cast the spec allows from `source`."""
    targets: list[tuple[str, dict[str, object]]] = []
    for target in [*SMALL, *ORDINARY] if source not in SMALL else [*SMALL, *ORDINARY_FROM_SMALL]:
        if target == source or (source not in SMALL and target not in SMALL):
            continue
        targets.append((target, {}))
        if target in FLOAT8:
            targets.append((target, {"saturate": 0}))
        if target == "FLOAT8E8M0":
            targets += [(target, {"round_mode": m}) for m in ("nearest", "down")]
            targets.append((target, {"saturate": 0, "round_mode": "nearest"}))
    return targets


def _cast_model(source: str, n: int) -> tuple[onnx.ModelProto, list[str]]:
    nodes, outputs, labels = [], [], []
    for k, (target, attrs) in enumerate(_targets(source)):
        name = f"y{k}"
        nodes.append(
            helper.make_node("Cast", ["x"], [name], to=getattr(TensorProto, target), **attrs)
        )
        outputs.append(helper.make_tensor_value_info(name, getattr(TensorProto, target), [n]))
        labels.append(f"{source}->{target} {attrs}")
    x = helper.make_tensor_value_info("x", getattr(TensorProto, source), [n])
    graph = helper.make_graph(nodes, "casts", [x], outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), labels


def _hard_floats() -> np.ndarray:
    """float64 values where a conversion to some small float is delicate."""
    values = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 1e-45, 2.0**-127]
    for name in [*SMALL_FLOATS, "FLOAT8E8M0"]:
        codes = np.arange(256 if name != "FLOAT4E2M1" else 16, dtype=np.uint8)
        grid = np.unique(codes.view(_np(name)).astype(np.float64))
        grid = grid[np.isfinite(grid) & (grid > 0)]
        midpoints = (grid[:-1] + grid[1:]) / 2  # ties: round half to even
        biggest = grid[-1]
        values += [*grid, *midpoints, *np.nextafter(midpoints, 0), *np.nextafter(midpoints, 1)]
        values += [biggest * 1.03, biggest * 1.0625, biggest * 1.07, biggest * 2, grid[0] / 2]
        values += [grid[0] / 2 * 1.01, grid[0] / 3]
    values = np.array(values)
    return np.concatenate([values, -values])


def _inputs(source: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = _np(source)
    if source in NARROW_INTS or dtype.kind in "iub":
        if source == "BOOL":
            return rng.integers(0, 2, 512).astype(bool)
        lo, hi = (-200, 300) if dtype.kind in "iu" and dtype.itemsize > 1 else (-128, 256)
        info = ml_dtypes.iinfo(dtype) if source in NARROW_INTS else np.iinfo(dtype)
        ints = rng.integers(max(lo, info.min), min(hi, info.max) + 1, 512)
        return ints.astype(np.int64).astype(dtype)
    hard = _hard_floats()
    scales = rng.choice([1e-3, 0.1, 1.0, 10.0, 300.0, 1e5], 1024)
    randoms = rng.standard_normal(1024) * scales
    values = np.concatenate([hard, randoms])
    if source in SMALL:
        with np.errstate(over="ignore", invalid="ignore"):
            values = np.unique(values.astype(dtype).view(np.uint8)).view(dtype)
        return np.concatenate(
            [values, np.arange(256 if source != "FLOAT4E2M1" else 16, dtype=np.uint8).view(dtype)]
        )
    with np.errstate(over="ignore"):
        return values.astype(dtype)


def _reference(model: onnx.ModelProto, node: onnx.NodeProto, x: np.ndarray) -> np.ndarray:
    """onnx.reference's Cast; where ml_dtypes lacks a direct cast (uint4 -> int4, float8 ->
    int4 ...) the source goes through float32 (small floats) or int64 (narrow ints) first,
    which is exact."""
    single = helper.make_model(
        helper.make_graph(
            [node],
            "one",
            list(model.graph.input),
            [o for o in model.graph.output if o.name == node.output[0]],
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    try:
        return ReferenceEvaluator(single).run(None, {"x": x})[0]
    except (TypeError, ValueError):
        wide = np.int64 if x.dtype in [_np(t) for t in NARROW_INTS] else np.float32
        return ReferenceEvaluator(single).run(None, {"x": x.astype(wide)})[0]


def _same(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Elementwise: same bits, or both NaN."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if expected.dtype.kind == "b":
        return got == expected
    same = got.view(np.uint8).reshape(got.shape + (-1,)) == expected.view(np.uint8).reshape(
        expected.shape + (-1,)
    )
    same = same.all(axis=-1)
    if (
        expected.dtype.kind == "f"
        or expected.dtype.kind == "V"
        and not _is_narrow_int(expected.dtype)
    ):
        with np.errstate(invalid="ignore"):
            same |= np.isnan(got.astype(np.float64)) & np.isnan(expected.astype(np.float64))
    return same


def _is_narrow_int(dtype: np.dtype) -> bool:
    return dtype in [_np(t) for t in NARROW_INTS]


def _float_to_int_defined(x: np.ndarray, target: np.dtype) -> np.ndarray:
    """Inputs where a float -> integer cast is defined: finite and, truncated, inside the
    target's range (int32's for int4/int2, which wrap). Elsewhere C, numpy and LLVM leave the
    result open."""
    narrow = _is_narrow_int(target)
    info = np.iinfo(np.int32) if narrow else np.iinfo(target)
    with np.errstate(invalid="ignore", over="ignore"):
        wide = np.trunc(x.astype(np.float64))
        return np.isfinite(wide) & (wide >= info.min) & (wide <= info.max)


def _target(node: onnx.NodeProto) -> np.dtype:
    to = next(a.i for a in node.attribute if a.name == "to")
    return _np(TensorProto.DataType.Name(to))


@pytest.mark.parametrize(
    "source",
    [*SMALL, "FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE", "INT8", "UINT8", "INT32", "BOOL"],
)
def test_cast_matches_onnx_reference(source: str) -> None:
    x = _inputs(source, seed=len(source))
    model, labels = _cast_model(source, len(x))
    results = ember.compile(model)(x)
    results = results if isinstance(results, list | tuple) else [results]
    failures = []
    for node, label, got in zip(model.graph.node, labels, results, strict=True):
        expected = _reference(model, node, x)
        same = _same(np.asarray(got), expected)
        target = _target(node)
        if x.dtype.kind == "f" or source in [*SMALL_FLOATS, "FLOAT8E8M0"]:
            if target.kind in "iu" or _is_narrow_int(target):
                same |= ~_float_to_int_defined(x, target)
        if not same.all():
            bad = np.nonzero(~same)[0][:4]
            failures.append(
                f"{label}: {(~same).sum()} differ, e.g. x={x[bad].astype(np.float64)} "
                f"ember={np.asarray(got)[bad].view(np.uint8)} reference={expected[bad].view(np.uint8)}"
            )
    assert not failures, "\n".join(failures)


def _model(nodes: list[onnx.NodeProto], inputs: list, outputs: list, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def _info(name: str, type_name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, getattr(TensorProto, type_name), shape)


def _assert_same(outputs: list, expected: list, labels: list[str]) -> None:
    failures = []
    for label, got, want in zip(labels, outputs, expected, strict=True):
        same = _same(np.asarray(got), want)
        if not same.all():
            bad = np.nonzero(~same.reshape(-1))[0][:4]
            failures.append(
                f"{label}: {(~same).sum()} differ, ember={np.asarray(got).reshape(-1)[bad]} "
                f"reference={want.reshape(-1)[bad]}"
            )
    assert not failures, "\n".join(failures)


def test_quantize_linear_matches_onnx_reference() -> None:
    """x / scale (per channel) rounded into every small type, with run-time zero points for
    the integers and float4e2m1, and saturate=0 for float8."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, 256)) * rng.choice([0.01, 1, 30, 1e4], (3, 256))).astype(
        np.float32
    )
    x[0, :8] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-9, 3e5, -3e5]
    x[1, :4] = [2.5, 3.5, -2.5, 0.5]  # ties of x / 1
    scale = np.array([0.5, 1.0, 0.03], np.float32)
    feeds: dict[str, np.ndarray] = {"x": x, "scale": scale}
    nodes, outputs, labels = [], [], []
    for k, target in enumerate([*FLOAT8, "FLOAT4E2M1", *NARROW_INTS]):
        dtype = _np(target)
        for saturate in (1, 0) if target in FLOAT8 else (1,):
            name = f"q{len(nodes)}"
            zero = f"zero{k}"
            if target in FLOAT8:
                feeds[zero] = np.zeros(3, np.float32).astype(dtype)
            else:
                info = ml_dtypes.iinfo(dtype) if target in NARROW_INTS else None
                values = rng.integers(info.min, info.max + 1, 3) if info else [0.5, -1, 2]
                feeds[zero] = np.asarray(values).astype(dtype)
            attrs = {} if saturate else {"saturate": 0}
            nodes.append(
                helper.make_node("QuantizeLinear", ["x", "scale", zero], [name], axis=0, **attrs)
            )
            outputs.append(_info(name, target, [3, 256]))
            labels.append(f"QuantizeLinear -> {target} saturate={saturate}")
    inputs = [_info("x", "FLOAT", [3, 256]), _info("scale", "FLOAT", [3])]
    inputs += [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), [3])
        for k, v in feeds.items()
        if k.startswith("zero")
    ]
    model = _model(nodes, inputs, outputs)
    expected = ReferenceEvaluator(model).run(None, feeds)
    got = ember.compile(model)(*[feeds[i.name] for i in inputs])
    # np.rint(x / scale).astype(int32) is undefined for NaN and beyond int32 (onnx.reference):
    # compare the integer results where x / scale is finite and inside int32.
    quotient = x / scale[:, None]
    defined = np.isfinite(quotient) & (np.abs(quotient) < 2**31)
    for index, label in enumerate(labels):
        if any(t in label for t in NARROW_INTS):
            expected[index] = np.where(defined, expected[index], got[index])
    _assert_same(got, expected, labels)


def test_dequantize_linear_matches_onnx_reference() -> None:
    """Every code of every small type times a per-channel float16 scale, with run-time zero
    points for the integers."""
    rng = np.random.default_rng(8)
    scale = np.array([0.5, -3.0], np.float16)
    feeds: dict[str, np.ndarray] = {"scale": scale}
    nodes, inputs, outputs, labels = [], [_info("scale", "FLOAT16", [2])], [], []
    for k, source in enumerate([*FLOAT8, "FLOAT4E2M1", *NARROW_INTS]):
        dtype = _np(source)
        codes = (
            16 if source in ("FLOAT4E2M1", "INT4", "UINT4") else 4 if source in NARROW_INTS else 256
        )
        x = np.tile(np.arange(codes, dtype=np.uint8), (2, 1)).view(dtype)
        feeds[f"x{k}"] = x
        inputs.append(_info(f"x{k}", source, list(x.shape)))
        operands = [f"x{k}", "scale"]
        if source in NARROW_INTS:
            info = ml_dtypes.iinfo(dtype)
            feeds[f"zero{k}"] = rng.integers(info.min, info.max + 1, 2).astype(dtype)
            inputs.append(_info(f"zero{k}", source, [2]))
            operands.append(f"zero{k}")
        nodes.append(helper.make_node("DequantizeLinear", operands, [f"y{k}"], axis=0))
        outputs.append(_info(f"y{k}", "FLOAT16", list(x.shape)))
        labels.append(f"DequantizeLinear {source}")
    model = _model(nodes, inputs, outputs)
    expected = ReferenceEvaluator(model).run(None, feeds)
    got = ember.compile(model)(*[feeds[i.name] for i in inputs])
    _assert_same(got, expected, labels)


def test_constant_casts_fold_like_onnx_reference() -> None:
    """Casts of an initializer fold at compile time (dialects/small_types.cast_array): the same
    saturate / round_mode semantics as the kernels."""
    x = _inputs("FLOAT", seed=3)
    model, labels = _cast_model("FLOAT", len(x))
    expected = [_reference(model, node, x) for node in model.graph.node]
    model.graph.initializer.append(onnx.numpy_helper.from_array(x, "x"))
    model.graph.input.pop()
    _assert_same(ember.compile(model)(), expected, labels)


def test_data_movement_and_io_of_small_types() -> None:
    """int4 and float8 tensors (run-time and Constant) pass through Identity, Reshape,
    Flatten, Unsqueeze, Squeeze and Transpose bit for bit; a wrong input dtype names both."""
    constant = np.array([1.5, -2, 448, 0.001], np.float32).astype(ml_dtypes.float8_e4m3fn)
    nodes = [
        helper.make_node("Constant", [], ["k"], value=onnx.numpy_helper.from_array(constant)),
        helper.make_node("Identity", ["k"], ["k_out"]),
        helper.make_node("Identity", ["x"], ["same"]),
        helper.make_node("Reshape", ["x", "shape"], ["reshaped"]),
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("Unsqueeze", ["x", "axes"], ["wide"]),
        helper.make_node("Squeeze", ["wide", "axes"], ["narrow"]),
        helper.make_node("Transpose", ["x"], ["turned"], perm=[2, 0, 1]),
        helper.make_node("Shape", ["x"], ["shape_of_x"]),
    ]
    outputs = [_info("k_out", "FLOAT8E4M3FN", [4])]
    outputs += [_info(n, "INT4", None) for n in ("same", "reshaped", "flat", "narrow", "turned")]
    outputs.append(_info("shape_of_x", "INT64", [3]))
    model = _model(
        nodes,
        [_info("x", "INT4", [2, 3, 2])],
        outputs,
        [
            onnx.numpy_helper.from_array(np.array([3, 4], np.int64), "shape"),
            onnx.numpy_helper.from_array(np.array([0], np.int64), "axes"),
        ],
    )
    compiled = ember.compile(model)
    x = np.arange(-6, 6).reshape(2, 3, 2).astype(ml_dtypes.int4)
    expected = ReferenceEvaluator(model).run(None, {"x": x})
    got = compiled(x)
    assert [g.dtype for g in got] == [e.dtype for e in expected]
    _assert_same(got, expected, [o.name for o in outputs])
    with pytest.raises(InputError, match="expected dtype int4, given int8"):
        compiled(x.astype(np.int8))


def test_other_ops_on_small_types_are_refused_by_name() -> None:
    model = _model(
        [helper.make_node("Pad", ["x", "pads"], ["y"], name="grow")],
        [_info("x", "FLOAT8E4M3FN", [2, 3])],
        [_info("y", "FLOAT8E4M3FN", [4, 3])],
        [onnx.numpy_helper.from_array(np.array([1, 0, 1, 0], np.int64), "pads")],
    )
    with pytest.raises(UnsupportedOpError, match=r"Pad.*grow.*opset 25.*float8_e4m3fn"):
        ember.compile(model)
    add = _model(  # not even valid ONNX: Add has no float8
        [helper.make_node("Add", ["x", "x"], ["y"], name="sum")],
        [_info("x", "INT4", [2])],
        [_info("y", "INT4", [2])],
    )
    with pytest.raises(ModelError, match=r"Add.*sum.*int4"):
        ember.compile(add)


def test_float8_dequantize_refuses_a_nonzero_constant_zero_point() -> None:
    zero = np.array(0.5, np.float32).astype(ml_dtypes.float8_e4m3fn)
    model = _model(
        [helper.make_node("DequantizeLinear", ["x", "scale", "zero"], ["y"], name="dq8")],
        [_info("x", "FLOAT8E4M3FN", [4])],
        [_info("y", "FLOAT", [4])],
        [
            onnx.numpy_helper.from_array(np.array(2.0, np.float32), "scale"),
            helper.make_tensor(
                "zero", TensorProto.FLOAT8E4M3FN, [], zero.view(np.uint8).tobytes(), raw=True
            ),
        ],
    )
    with pytest.raises(ModelError, match=r"DequantizeLinear.*dq8.*x_zero_point.*must be 0"):
        ember.compile(model)


def test_runtime_tables_name_every_small_type() -> None:
    """The manifest's dtype names load as ml_dtypes' types, one byte each, and the
    onnxruntime-style session spells them as ONNX does."""
    from ember.engine.cheader import C_TYPES
    from ember.engine.session import _ORT_TYPES
    from ember.runtime.executable import DTYPE_BYTES, SMALL_DTYPES, numpy_dtype

    for name in SMALL_DTYPES:
        dtype = numpy_dtype(name)
        assert dtype == np.dtype(getattr(ml_dtypes, name)) and DTYPE_BYTES[name] == 1
        enum = helper.np_dtype_to_tensor_dtype(dtype)
        assert _ORT_TYPES[name] == TensorProto.DataType.Name(enum).lower()
        assert C_TYPES[name] == "uint8_t"
    assert {_np(t) for t in SMALL} == {numpy_dtype(n) for n in SMALL_DTYPES}
