"""Validation at import (frontend/validate.py): every malformed model is refused with an ember
error naming the node, the op, the opset and the rule, never an internal exception; and the
valid corner cases that used to crash (a value returned twice, float16 through float32-only
kernels, external data next to the model) run and match onnxruntime."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.frontend.onnx_importer import import_onnx
from ember.runtime.errors import (
    EmberError,
    ModelError,
    ResourceLimitError,
    UnsupportedOpError,
)

OPSET = 17


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto] = (),  # type: ignore[assignment]
    opset: int = OPSET,
) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _info(name: str, elem: int, shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _ort_refuses(model: onnx.ModelProto) -> bool:
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:
        return True
    return False


def _ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


# -- element types against the ONNX type constraints ------------------------------------------

_W = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")


def test_conv_with_double_input_and_float_weights_is_refused() -> None:
    model = _model(
        [helper.make_node("Conv", ["x", "W"], ["y"], name="conv1")],
        [_info("x", TensorProto.DOUBLE, [1, 3, 8, 8])],
        [_info("y", TensorProto.DOUBLE, [1, 4, 6, 6])],
        [_W],
    )
    assert _ort_refuses(model)
    with pytest.raises(ModelError) as info:
        ember.compile(model)
    message = str(info.value)
    for part in ("Conv node 'conv1'", "opset 17", "'W'", "tensor(float)", "'x'", "tensor(double)"):
        assert part in message, message
    assert "tensor(float16)" in message  # the allowed types


def test_matmul_with_int64_input_and_float_weights_is_refused() -> None:
    b = numpy_helper.from_array(np.ones((4, 3), np.float32), "B")
    model = _model(
        [helper.make_node("MatMul", ["x", "B"], ["y"], name="mm")],
        [_info("x", TensorProto.INT64, [2, 4])],
        [_info("y", TensorProto.INT64, [2, 3])],
        [b],
    )
    assert _ort_refuses(model)
    with pytest.raises(ModelError, match=r"MatMul node 'mm' \(opset 17\).*'B'.*tensor\(int64\)"):
        import_onnx(model)


def test_input_type_outside_the_constraint_names_the_allowed_types() -> None:
    model = _model(
        [helper.make_node("BitShift", ["a", "b"], ["y"], direction="LEFT", name="shift")],
        [_info("a", TensorProto.INT32, [4]), _info("b", TensorProto.INT32, [4])],
        [_info("y", TensorProto.INT32, [4])],
        opset=18,
    )
    pattern = r"BitShift node 'shift' \(opset 18\): input #0 'a' \(X\) has type tensor\(int32\)"
    with pytest.raises(ModelError, match=pattern + r".*tensor\(uint8\)"):
        import_onnx(model)


# -- attributes of windowed ops (one table: frontend/validate.py _WINDOW_RULES) ----------------

_WT = numpy_helper.from_array(np.ones((3, 4, 3, 3), np.float32), "Wt")
_BAD_ATTRIBUTES = [
    ("Conv", {"strides": [0, 0]}, r"strides=\[0, 0\] must be >= 1"),
    ("Conv", {"strides": [1]}, r"strides=\[1\] must have 2 values"),
    ("Conv", {"pads": [1, 1]}, r"pads=\[1, 1\] must have 4 values"),
    ("Conv", {"pads": [-1, 0, 0, 0]}, r"pads=\[-1, 0, 0, 0\] must be >= 0"),
    ("Conv", {"dilations": [-1, 1]}, r"dilations=\[-1, 1\] must be >= 1"),
    ("Conv", {"kernel_shape": [3, 3, 3]}, "kernel_shape=.* must have 2 values"),
    ("Conv", {"kernel_shape": [2, 2]}, "differs from the weight's spatial dims"),
    ("Conv", {"group": 0}, "group=0 must be >= 1"),
    ("Conv", {"group": 3}, "group=3 do not fit"),
    ("Conv", {"auto_pad": "SAME"}, "auto_pad='SAME' is not one of"),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [0, 0]}, "strides=.* must be >= 1"),
    ("MaxPool", {"kernel_shape": [2]}, "kernel_shape=.* must have 2 values"),
    ("AveragePool", {"kernel_shape": [2, 2], "pads": [1, 1]}, "pads=.* must have 4 values"),
    ("LpPool", {"kernel_shape": [0, 2]}, r"kernel_shape=\[0, 2\] must be >= 1"),
    ("ConvTranspose", {"strides": [0, 0]}, "strides=.* must be >= 1"),
    ("ConvTranspose", {"strides": [1]}, "strides=.* must have 2 values"),
    ("ConvTranspose", {"group": 2}, "group=2 do not fit"),
    ("ConvTranspose", {"output_padding": [2, 2]}, "output_padding=.* must be less than"),
]


@pytest.mark.parametrize(
    ("op_type", "attrs", "rule"),
    _BAD_ATTRIBUTES,
    ids=[f"{o}-{r[:24]}" for o, _, r in _BAD_ATTRIBUTES],
)
def test_window_attributes_are_checked_against_the_rules(
    op_type: str, attrs: dict[str, object], rule: str
) -> None:
    weight = {"Conv": ["W"], "ConvTranspose": ["Wt"]}.get(op_type, [])
    model = _model(
        [helper.make_node(op_type, ["x", *weight], ["y"], name="win", **attrs)],
        [_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])],
        [{"W": _W, "Wt": _WT}[w] for w in weight],
    )
    with pytest.raises(ModelError, match=rf"{op_type} node 'win' \(opset 17\): .*{rule}"):
        import_onnx(model)


def _const(name: str, values: list[float] | list[int] | int, dtype: type = np.int64):
    return numpy_helper.from_array(np.array(values, dtype), name)


_X4 = _info("x", TensorProto.FLOAT, [1, 4, 4, 4])
_BAD_NODES = {
    "LRN size 0": (helper.make_node("LRN", ["x"], ["y"], size=0), [], 17, "size=0 must be >= 1"),
    "DepthToSpace blocksize 0": (
        helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=0),
        [],
        17,
        "blocksize=0 must be >= 1",
    ),
    "Flatten axis past the rank": (
        helper.make_node("Flatten", ["x"], ["y"], axis=9),
        [],
        17,
        r"axis=9 is outside \[-4, 4\]",
    ),
    "Split into 0 outputs": (
        helper.make_node("Split", ["x"], ["y"], num_outputs=0, axis=1),
        [],
        18,
        "num_outputs=0 must be >= 1",
    ),
    "GroupNormalization 0 groups": (
        helper.make_node("GroupNormalization", ["x", "s", "s"], ["y"], num_groups=0),
        [_const("s", [1.0] * 4, np.float32)],
        21,
        "num_groups=0 must be >= 1",
    ),
    "Resize to size 0": (
        helper.make_node("Resize", ["x", "", "sc"], ["y"]),
        [_const("sc", [1, 1, 0, 0], np.float32)],
        17,
        "must be positive",
    ),
    "Pad crops more than the axis": (
        helper.make_node("Pad", ["x", "p"], ["y"]),
        [_const("p", [0, -100, 0, 0, 0, 0, 0, 0])],
        17,
        "cannot crop 100 \\+ 0 elements of an axis of 4",
    ),
}


@pytest.mark.parametrize("case", list(_BAD_NODES))
def test_node_rules_are_checked(case: str) -> None:
    node, initializers, opset, rule = _BAD_NODES[case]
    node.name = "bad"
    model = _model(
        [node], [_X4], [_info("y", TensorProto.FLOAT, ["a", "b", "c", "d"])], initializers, opset
    )
    with pytest.raises(ModelError, match=rf"{node.op_type} node 'bad' \(opset {opset}\): .*{rule}"):
        import_onnx(model)


def test_rank_0_matmul_input_is_refused() -> None:
    model = _model(
        [helper.make_node("MatMul", ["x", "b"], ["y"], name="mm")],
        [_info("x", TensorProto.FLOAT, []), _info("b", TensorProto.FLOAT, [3])],
        [_info("y", TensorProto.FLOAT, ["n"])],
    )
    with pytest.raises(ModelError, match=r"MatMul node 'mm' \(opset 17\): input #0 'x' has rank 0"):
        import_onnx(model)


# -- graph structure ---------------------------------------------------------------------------


def _relu_model() -> onnx.ModelProto:
    return _model(
        [helper.make_node("Relu", ["x"], ["yyyy"], name="nnnn")],
        [_info("x", TensorProto.FLOAT, [2, 3])],
        [_info("yyyy", TensorProto.FLOAT, [2, 3])],
    )


@pytest.mark.parametrize(("marker", "what"), [(b"nnnn", "name"), (b"yyyy", "output name")])
def test_non_utf8_names_are_refused(tmp_path: Path, marker: bytes, what: str) -> None:
    # protobuf hands invalid UTF-8 back as bytes; the names used to reach re.sub and str ops.
    data = _relu_model().SerializeToString().replace(marker, marker[:1] + b"\xff\xfe" + marker[3:])
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelError, match=rf"{what} b'.\\xff\\xfe.' is not valid UTF-8"):
        import_onnx(path)


@pytest.mark.parametrize("where", ["input", "output", "initializer"])
def test_unknown_element_type_enum_is_refused(where: str) -> None:
    model = _model(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        [_info("x", TensorProto.FLOAT, [2])],
        [_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.ones(2, np.float32), "c")],
    )
    if where == "input":
        model.graph.input[0].type.tensor_type.elem_type = 99
    elif where == "output":
        model.graph.output[0].type.tensor_type.elem_type = 99
    else:
        model.graph.initializer[0].data_type = 99
    with pytest.raises(ModelError, match="element type 99, which ONNX does not define"):
        import_onnx(model)


def _relu(x: str, y: str, name: str = "") -> onnx.NodeProto:
    return helper.make_node("Relu", [x], [y], name=name)


_X = _info("x", TensorProto.FLOAT, [2, 3])
_Y = _info("y", TensorProto.FLOAT, [2, 3])
_C = numpy_helper.from_array(np.ones((2, 3), np.float32), "c")
_MALFORMED = {
    "two nodes write one name": (
        _model([_relu("x", "y", "a"), _relu("x", "y", "b")], [_X], [_Y]),
        "value 'y' is defined twice: by Relu node 'a' (opset 17) and by Relu node 'b' (opset 17)",
    ),
    "a node writes a graph input": (
        _model([_relu("x", "x", "a")], [_X], [_info("x", TensorProto.FLOAT, [2, 3])]),
        "value 'x' is defined twice: by a graph input and by Relu node 'a' (opset 17)",
    ),
    "a node writes an initializer": (
        _model([_relu("x", "c", "a")], [_X], [_info("c", TensorProto.FLOAT, [2, 3])], [_C]),
        "value 'c' is defined twice: by an initializer and by Relu node 'a' (opset 17)",
    ),
    "an input listed twice": (
        _model([_relu("x", "y")], [_X, _X], [_Y]),
        "value 'x' is defined twice: by a graph input and by a graph input",
    ),
    "an initializer listed twice": (
        _model([_relu("x", "y")], [_X], [_Y], [_C, _C]),
        "value 'c' is defined twice: by an initializer and by an initializer",
    ),
    "an input whose initializer has another type": (
        _model([_relu("c", "y")], [_info("c", TensorProto.INT64, [2, 3])], [_Y], [_C]),
        "graph input 'c' is declared INT64 [2, 3] but its initializer is FLOAT [2, 3]",
    ),
    "an input whose initializer has another shape": (
        _model([_relu("c", "y")], [_info("c", TensorProto.FLOAT, [3, "n"])], [_Y], [_C]),
        "graph input 'c' is declared FLOAT [3, '?'] but its initializer is FLOAT [2, 3]",
    ),
    "a dangling input": (
        _model([_relu("q", "y", "a")], [_X], [_Y]),
        "Relu node 'a' (opset 17) reads 'q', which no graph input, initializer or earlier node produces",
    ),
    "no outputs": (_model([_relu("x", "y")], [_X], []), "the graph has no outputs"),
    "an output nothing produces": (
        _model([_relu("x", "y")], [_X], [_info("z", TensorProto.FLOAT, [2, 3])]),
        "graph output 'z' is not produced by any node",
    ),
}


@pytest.mark.parametrize("case", list(_MALFORMED))
def test_malformed_graphs_are_refused(case: str) -> None:
    model, message = _MALFORMED[case]
    with pytest.raises(ModelError) as info:
        import_onnx(model)
    assert message in str(info.value)


# -- one value listed as several outputs -------------------------------------------------------


def _outputs_case(case: str) -> onnx.ModelProto:
    nodes = [_relu("x", "y"), helper.make_node("Identity", ["y"], ["z"])]
    outputs = {
        "relu and its identity": ["y", "z"],
        "an input as output": ["y", "x"],
        "an initializer as output": ["y", "c"],
        "the identity of an input": ["w", "y"],
    }[case]
    if case == "the identity of an input":
        nodes.append(helper.make_node("Identity", ["x"], ["w"]))
    initializers = [_C] if "initializer" in case else []
    return _model(nodes, [_X], [_info(n, TensorProto.FLOAT, [2, 3]) for n in outputs], initializers)


@pytest.mark.parametrize(
    "case",
    [
        "relu and its identity",
        "an input as output",
        "an initializer as output",
        "the identity of an input",
    ],
)
def test_one_value_as_several_outputs_matches_onnxruntime(case: str) -> None:
    model = _outputs_case(case)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    expected = _ort_run(model, {"x": x})
    got = ember.compile(model)(x)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)


def test_same_name_twice_in_outputs_is_refused() -> None:
    # Results are returned by name (run() gives a dict); one name cannot stand for two outputs.
    model = _model([_relu("x", "y")], [_X], [_Y, _Y])
    with pytest.raises(ModelError, match="graph output 'y' is listed twice"):
        ember.compile(model)


# -- element types the kernels compute ---------------------------------------------------------


def _matmul_softmax(elem: int) -> onnx.ModelProto:
    return _model(
        [
            helper.make_node("MatMul", ["x", "b"], ["t"], name="mm"),
            helper.make_node("Softmax", ["t"], ["y"]),
        ],
        [_info("x", elem, [2, 4]), _info("b", elem, [4, 3])],
        [_info("y", elem, [2, 3])],
    )


def test_float16_matmul_softmax_runs_in_float32_and_matches_onnxruntime() -> None:
    # It used to fail in LLVM ("instruction forward referenced"): the GEMM kernel is f32-only.
    model = _matmul_softmax(TensorProto.FLOAT16)
    rng = np.random.default_rng(2)
    feeds = {
        "x": rng.standard_normal((2, 4)).astype(np.float16),
        "b": rng.standard_normal((4, 3)).astype(np.float16),
    }
    (expected,) = _ort_run(model, feeds)
    got = ember.compile(model).run(feeds)["y"]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), atol=2e-3)


def test_float64_matmul_softmax_runs_in_float64() -> None:
    # MatMul has a float64 GEMM (it was refused: widening float64 to float32 is not exact).
    model = _matmul_softmax(TensorProto.DOUBLE)
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((2, 4)), "b": rng.standard_normal((4, 3))}
    (expected,) = _ort_run(model, feeds)
    got = ember.compile(model).run(feeds)["y"]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_float64_conv_is_refused_naming_the_dtype() -> None:
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="cv")],
        [
            _info("x", TensorProto.DOUBLE, [1, 2, 5, 5]),
            _info("w", TensorProto.DOUBLE, [3, 2, 3, 3]),
        ],
        [_info("y", TensorProto.DOUBLE, [1, 3, 3, 3])],
    )
    with pytest.raises(UnsupportedOpError, match=r"Conv \(node 'cv', opset 17\).*float64"):
        import_onnx(model)


def test_float16_conv_with_constant_weights_matches_onnxruntime() -> None:
    # The weights were packed as float32 under a float16 input: NaNs came out.
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float16), "W")
    model = _model(
        [helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])],
        [_info("x", TensorProto.FLOAT16, [1, 2, 6, 6])],
        [_info("y", TensorProto.FLOAT16, [1, 4, 6, 6])],
        [w],
    )
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float16)
    (expected,) = _ort_run(model, {"x": x})
    got = ember.compile(model)(x)[0]
    np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), atol=2e-2)


def test_int8_max_pool_matches_onnxruntime() -> None:
    model = _model(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])],
        [_info("x", TensorProto.INT8, [1, 2, 6, 6])],
        [_info("y", TensorProto.INT8, [1, 2, 5, 5])],
    )
    x = np.random.default_rng(4).integers(-128, 128, (1, 2, 6, 6)).astype(np.int8)
    (expected,) = _ort_run(model, {"x": x})
    np.testing.assert_array_equal(ember.compile(model)(x)[0], expected)


@pytest.mark.parametrize("params", ["constant", "runtime"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_batch_norm_in_each_float_type_matches_onnxruntime(dtype: type, params: str) -> None:
    # Runtime parameters used to leave a graph.batch_norm with no kernel form; float16/float64
    # constant ones reached the float32 affine rewrite.
    rng = np.random.default_rng(5)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    values = {n: (np.abs(rng.standard_normal(3)) + 0.5).astype(dtype) for n in "sbmv"}
    inputs = [_info("x", elem, [2, 3, 4, 4])]
    initializers = []
    if params == "constant":
        initializers = [numpy_helper.from_array(a, n) for n, a in values.items()]
    else:
        inputs += [_info(n, elem, [3]) for n in values]
    model = _model(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])],
        inputs,
        [_info("y", elem, [2, 3, 4, 4])],
        initializers,
        opset=15,
    )
    feeds = {"x": rng.standard_normal((2, 3, 4, 4)).astype(dtype)}
    if params == "runtime":
        feeds |= values
    (expected,) = _ort_run(model, feeds)
    got = ember.compile(model).run(feeds)["y"]
    assert got.dtype == dtype
    tolerance = {np.float16: 1e-2, np.float32: 1e-5, np.float64: 1e-10}[dtype]
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)


# -- external data -----------------------------------------------------------------------------

_WEIGHT = np.arange(12, dtype=np.float32).reshape(3, 4)


def _external_model(location: str, offset: int | None = None, length: int | None = None):
    tensor = onnx.TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[3, 4])
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    return _model(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        [_info("x", TensorProto.FLOAT, [2, 3])],
        [_info("y", TensorProto.FLOAT, [2, 4])],
        [tensor],
    )


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "W.bin").write_bytes(_WEIGHT.tobytes())
    (tmp_path / "outside.bin").write_bytes(_WEIGHT.tobytes())
    os.symlink(tmp_path / "outside.bin", folder / "link.bin")
    return folder


def test_external_data_resolves_against_base_dir_not_the_working_directory(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = np.ones((2, 3), np.float32)
    # A decoy W.bin in the working directory must never be read.
    decoy = tmp_path / "cwd"
    decoy.mkdir()
    (decoy / "W.bin").write_bytes(np.full((3, 4), 7, np.float32).tobytes())
    monkeypatch.chdir(decoy)
    model = _external_model("W.bin")
    with pytest.raises(
        ModelError, match=r"tensor 'W' keeps its data in the external file 'W.bin'.*base_dir="
    ):
        ember.compile(model)
    got = ember.compile(model, base_dir=model_dir)(x)[0]
    np.testing.assert_array_equal(got, x @ _WEIGHT)
    assert onnx.external_data_helper.uses_external_data(model.graph.initializer[0])
    onnx.save(model, model_dir / "model.onnx")
    np.testing.assert_array_equal(ember.compile(model_dir / "model.onnx")(x)[0], x @ _WEIGHT)


_ESCAPES = {
    "parent": (("../outside.bin",), "points outside the directory"),
    "absolute": ((None,), "should be a relative path"),
    "symlink out": (("link.bin",), "symbolic link"),
    "device": (("/dev/zero",), "should be a relative path"),
    "huge offset": (("W.bin", 10**15), "offset"),
    "huge length": (("W.bin", None, 10**15), "length"),
}


@pytest.mark.parametrize("case", list(_ESCAPES))
@pytest.mark.parametrize("given", ["path", "base_dir"])
def test_external_data_cannot_leave_the_model_folder(
    model_dir: Path, case: str, given: str
) -> None:
    args, message = _ESCAPES[case]
    location = args[0] if args[0] is not None else str(model_dir.parent / "outside.bin")
    model = _external_model(location, *args[1:])
    with pytest.raises(ModelError, match=message):
        if given == "path":
            onnx.save(model, model_dir / "model.onnx")
            import_onnx(model_dir / "model.onnx")
        else:
            import_onnx(model, base_dir=model_dir)


# -- sizes -------------------------------------------------------------------------------------


def test_a_tensor_bigger_than_memory_is_refused_at_import_naming_it() -> None:
    # 100000 x 250000 float32 = 93.1 GiB: run() used to fail in numpy naming no tensor.
    model = _model(
        [
            helper.make_node("MatMul", ["x", "b"], ["big"], name="outer"),
            helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0),
        ],
        [_info("x", TensorProto.FLOAT, [100000, 1]), _info("b", TensorProto.FLOAT, [1, 250000])],
        [_info("y", TensorProto.FLOAT, [])],
    )
    with pytest.raises(
        ResourceLimitError, match=r"MatMul node 'outer' \(opset 17\): output 'big'.*93.1 GiB"
    ):
        import_onnx(model)


@pytest.mark.parametrize("op_type", ["Pad", "ConvTranspose"])
def test_a_huge_intermediate_is_refused_before_numpy_allocates_it(op_type: str) -> None:
    if op_type == "Pad":
        node = helper.make_node("Pad", ["x", "p"], ["y"], name="big")
        initializers = [_const("p", [0, 0, 0, 10**12, 0, 0, 0, 0])]
    else:
        # Strides of a million: a (3e6 x 3e6) output from a 4x4 input.
        node = helper.make_node(
            "ConvTranspose", ["x", "w"], ["y"], name="big", strides=[10**6, 10**6]
        )
        initializers = [_const("w", np.ones((4, 3, 3, 3)).tolist(), np.float32)]
    model = _model(
        [node], [_X4], [_info("y", TensorProto.FLOAT, ["a", "b", "c", "d"])], initializers
    )
    with pytest.raises(ResourceLimitError, match=rf"{op_type} node 'big' \(opset 17\): .*GiB"):
        import_onnx(model)


def test_a_tensor_whose_size_overflows_int64_is_refused() -> None:
    model = _model(
        [_relu("x", "y")],
        [_info("x", TensorProto.FLOAT, [2**40, 2**40])],
        [_info("y", TensorProto.FLOAT, [2**40, 2**40])],
    )
    with pytest.raises(ResourceLimitError, match="graph input 'x'.*more than int64 can count"):
        import_onnx(model)


def test_arena_over_the_memory_limit_names_the_biggest_tensor() -> None:
    # 256 KiB intermediates alive at once: each fits a 400 KiB limit, the arena does not.
    model = _model(
        [
            helper.make_node("Softmax", ["x"], ["a"]),
            helper.make_node("Transpose", ["x"], ["b"]),
            helper.make_node("MatMul", ["a", "b"], ["s"]),
            helper.make_node("ReduceSum", ["s"], ["y"], keepdims=0),
        ],
        [_info("x", TensorProto.FLOAT, [256, 256])],
        [_info("y", TensorProto.FLOAT, [])],
    )
    with pytest.raises(
        ResourceLimitError,
        match=r"arena of .*more than the limit of 400.0 KiB.*its biggest tensor is '\w+' \(256, 256\) float32",
    ):
        ember.compile(model, memory_limit=400 * 1024)
    # And the same model compiles under the default limit (the machine's memory).
    assert ember.compile(model).report.arena_bytes >= 2 * 256 * 256 * 4


def test_weights_over_the_memory_limit_are_refused() -> None:
    # Two 128 KiB weights: each fits a 200 KiB limit, together they do not.
    w1 = numpy_helper.from_array(np.ones((128, 256), np.float32), "w1")
    w2 = numpy_helper.from_array(np.ones((256, 128), np.float32), "w2")
    model = _model(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("MatMul", ["h", "w2"], ["y"]),
        ],
        [_info("x", TensorProto.FLOAT, [1, 128])],
        [_info("y", TensorProto.FLOAT, [1, 128])],
        [w1, w2],
    )
    with pytest.raises(ResourceLimitError, match="weights need .*the biggest is 'w"):
        ember.compile(model, memory_limit=200 * 1024)


def test_every_refusal_is_an_ember_error() -> None:
    for model, _ in _MALFORMED.values():
        with pytest.raises(EmberError):
            import_onnx(model)


# -- found by the fuzzer (tools/fuzz.py): list operands, reshape sizes, Gemm's C -----------------


def _tensor(name: str, array: np.ndarray) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(array, name)


@pytest.mark.parametrize(
    ("op", "inputs", "initializers", "message"),
    [
        (
            "Slice",
            ["x", "starts", "ends"],
            [_tensor("starts", np.zeros((1, 1), np.int64)), _tensor("ends", np.ones(1, np.int64))],
            r"Slice node 'n' .*input #1 'starts' has shape \[1, 1\]; Slice takes it as a 1-D list",
        ),
        (
            "Reshape",
            ["x", "shape"],
            [_tensor("shape", np.array([[3], [2]], np.int64))],
            r"input #1 'shape' has shape \[2, 1\]",
        ),
        (
            "Slice",
            ["x", "starts", "ends"],
            [_tensor("starts", np.array(0, np.int64)), _tensor("ends", np.ones(1, np.int64))],
            r"input #1 'starts' has shape \[\]; Slice takes it as a 1-D list",
        ),
        (
            "Reshape",
            ["x", "shape"],
            [_tensor("shape", np.array([-2, -3], np.int64))],
            r"shape \[-2, -3\] has a negative size other than -1",
        ),
        (
            "Reshape",
            ["x", "shape"],
            [_tensor("shape", np.array([6, 1, 0], np.int64))],
            r"copies \(0\) a dim that the rank-2 input lacks",
        ),
    ],
)
def test_malformed_list_operands_are_model_errors(
    op: str, inputs: list[str], initializers: list[onnx.TensorProto], message: str
) -> None:
    model = _model(
        [helper.make_node(op, inputs, ["y"], name="n")],
        [_X],
        [_info("y", TensorProto.FLOAT, None)],  # type: ignore[arg-type]
        initializers,
    )
    with pytest.raises(Exception, match="ONNXRuntimeError"):  # onnxruntime refuses it when run
        _ort_run(model, {"x": np.ones((2, 3), np.float32)})
    with pytest.raises(ModelError, match=message):
        import_onnx(model)


def test_gemm_c_must_broadcast_to_the_output_one_way() -> None:
    # C [3, 1] against an output of (1, 3) would widen the result to (3, 3).
    model = _model(
        [helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="fc", transB=1)],
        [_info("x", TensorProto.FLOAT, [1, 2])],
        [_info("y", TensorProto.FLOAT, [1, 3])],
        [
            _tensor("w", np.ones((3, 2), np.float32)),
            _tensor("c", np.ones((3, 1), np.float32)),
        ],
    )
    with pytest.raises(Exception, match="bias shape"):  # onnxruntime refuses it when run
        _ort_run(model, {"x": np.ones((1, 2), np.float32)})
    with pytest.raises(ModelError, match=r"Gemm node 'fc' .*C \(3, 1\) does not broadcast"):
        import_onnx(model)


def test_scalar_unsqueeze_axes_are_a_one_element_list() -> None:
    # ONNX's own AffineGrid function body writes Unsqueeze axes as a scalar.
    model = _model(
        [helper.make_node("Unsqueeze", ["x", "axes"], ["y"])],
        [_X],
        [_info("y", TensorProto.FLOAT, [1, 2, 3])],
        [_tensor("axes", np.array(0, np.int64))],
    )
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(ember.compile(model).run({"x": x})["y"], x[None])
