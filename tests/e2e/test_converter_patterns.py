"""What the other converters (tf2onnx, paddle2onnx) and older or hand-edited ONNX files contain,
as small onnx.helper graphs with seeded weights, checked against onnxruntime.

Each test reproduces a pattern that ember once refused, crashed on or computed differently;
tests/e2e/test_exporter_patterns.py has the torch.onnx / transformers ones.
Tolerance: assert_close's default, max |ember - onnxruntime| <= 1e-4 x max |onnxruntime|.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.tests.oracle import assert_close, onnxruntime_outputs


def _graph(
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: tuple[str, ...] = ("y",),
) -> onnx.GraphProto:
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    return helper.make_graph(nodes, "pattern", inputs, outs, inits)


def _model(graph: onnx.GraphProto, opset: int, ir_version: int = 7) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def _input(shape: list[int] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)


def _dense(rng: np.random.Generator) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """y = x @ W + B (x [2, 4]), the body of the file-level tests."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["m"]),
        helper.make_node("Add", ["m", "B"], ["y"]),
    ]
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "B"),
    ]
    return nodes, weights


@pytest.mark.parametrize("nearest_mode", ["floor", "round_prefer_floor", "ceil"])
def test_resize_tf_crop_and_resize_nearest(nearest_mode: str) -> None:
    """tf2onnx's CropAndResize: Resize with coordinate_transformation_mode tf_crop_and_resize.
    onnxruntime computes the source coordinate in float32, where row 3 of 9 (exactly 2.0) is
    1.9999999: floor takes row 1 there. ember computed it in float64 and took row 2 (a wrong
    row in 3 of 9 output rows)."""
    roi = np.array([0, 0, 0.1, 0.2, 1, 1, 0.9, 0.7], np.float32)
    inits = [
        numpy_helper.from_array(roi, "roi"),
        numpy_helper.from_array(np.array([1, 1, 1.5, 0.75], np.float32), "scales"),
    ]
    resize = helper.make_node(
        "Resize",
        ["x", "roi", "scales"],
        ["y"],
        mode="nearest",
        coordinate_transformation_mode="tf_crop_and_resize",
        nearest_mode=nearest_mode,
        extrapolation_value=-1.0,
    )
    model = _model(_graph([resize], inits, [_input([1, 3, 6, 8])]), 13)
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 8)).astype(np.float32)
    assert_close(ember.compile(model).run({"x": x}), onnxruntime_outputs(model, {"x": x}))


def test_default_domain_spelled_ai_onnx() -> None:
    """ONNX's default domain written out as "ai.onnx" (opset import and nodes), as some
    hand-edited and converter-written files have it: onnxruntime runs it, ember refused it
    ("No Op registered for MatMul with domain_version of 11", from onnx's checker)."""
    rng = np.random.default_rng(1)
    nodes, weights = _dense(rng)
    for node in nodes:
        node.domain = "ai.onnx"
    graph = _graph(nodes, weights, [_input([2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx", 11)])
    model.ir_version = 6
    x = rng.standard_normal((2, 4)).astype(np.float32)
    assert_close(ember.compile(model).run({"x": x}), onnxruntime_outputs(model, {"x": x}))


def test_default_domain_imported_twice_with_two_versions_is_a_model_error() -> None:
    nodes, weights = _dense(np.random.default_rng(2))
    model = helper.make_model(
        _graph(nodes, weights, [_input([2, 4])]),
        opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx", 11)],
    )
    with pytest.raises(ember.ModelError, match=r"as '' and as 'ai.onnx'.*\[11, 13\]"):
        ember.compile(model)


def test_graph_input_without_a_shape() -> None:
    """A graph input whose type has no shape field (unknown rank): onnxruntime takes the fed
    array's shape; ember refused it (onnx's checker: "Field 'shape' of 'type' is required"),
    then, given shapes, took its rank to be 0."""
    model = _model(_graph([helper.make_node("Relu", ["x"], ["y"])], [], [_input(None)]), 9)
    session = ember.InferenceSession(model.SerializeToString())
    compiled = ember.compile(model)
    rng = np.random.default_rng(3)
    for shape in [(2, 3), (5,), (2, 3, 4)]:
        x = rng.standard_normal(shape).astype(np.float32)
        expected = onnxruntime_outputs(model, {"x": x})
        assert_close({"y": session.run(None, {"x": x})[0]}, expected)
        assert_close(compiled.run({"x": x}), expected)


@pytest.mark.parametrize("ir_version", [3, 7])
def test_initializer_listed_as_graph_input(ir_version: int) -> None:
    """Old Model Zoo files list every initializer as a graph input too. Unfed, the stored
    value is used (as onnxruntime does); fed, onnxruntime (IR >= 4) overrides the weight with
    it, which ember cannot do: it refuses naming the initializer, never silently ignoring the
    fed value."""
    rng = np.random.default_rng(4)
    nodes, weights = _dense(rng)
    inputs = [
        _input([2, 4]),
        helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3]),
        helper.make_tensor_value_info("B", TensorProto.FLOAT, [3]),
    ]
    model = _model(_graph(nodes, weights, inputs), 8, ir_version)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    session = ember.InferenceSession(model.SerializeToString())
    assert [i.name for i in session.get_inputs()] == ["x"]
    assert_close({"y": session.run(None, {"x": x})[0]}, onnxruntime_outputs(model, {"x": x}))
    with pytest.raises(ember.InputError, match=r"\['B'\]: initializer\(s\) that the model also"):
        session.run(None, {"x": x, "B": np.ones(3, np.float32)})


def test_layer_normalization_in_the_default_domain_below_opset_17() -> None:
    """onnxruntime's optimizer saves LayerNormalization in the default domain at the model's
    opset (12 here), where ONNX does not define it yet; onnxruntime runs it, ember refused it
    ("No Op registered for LayerNormalization with domain_version of 12")."""
    rng = np.random.default_rng(5)
    inits = [
        numpy_helper.from_array(rng.standard_normal(9).astype(np.float32), name)
        for name in ("gamma", "beta")
    ]
    norm = helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], epsilon=1e-5)
    model = _model(_graph([norm], inits, [_input([2, 7, 9])]), 12)
    x = rng.standard_normal((2, 7, 9)).astype(np.float32)
    assert_close(ember.compile(model).run({"x": x}), onnxruntime_outputs(model, {"x": x}))


_MS = "com.microsoft"


def _contrib_model(
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    shape: list[int],
    outputs: tuple[str, ...] = ("y",),
) -> onnx.ModelProto:
    model = helper.make_model(
        _graph(nodes, inits, [_input(shape)], outputs),
        opset_imports=[helper.make_opsetid("", 12), helper.make_opsetid(_MS, 1)],
    )
    model.ir_version = 7
    return model


def _weights(rng: np.random.Generator, **shapes: tuple[int, ...]) -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
        for name, shape in shapes.items()
    ]


@pytest.mark.parametrize(
    "case",
    [
        "FusedConv-Relu-Z",
        "FusedConv-Clip",
        "FusedConv-HardSigmoid",
        "FusedGemm-LeakyRelu",
        "FusedMatMul",
        "Gelu",
        "BiasGelu",
        "FastGelu",
        "SkipLayerNormalization",
        "SimplifiedLayerNormalization",
    ],
)
def test_onnxruntime_optimizer_ops(case: str) -> None:
    """The com.microsoft fusions onnxruntime's optimizer saves into a model (and its default-
    domain SimplifiedLayerNormalization): ember refused each as an unsupported op."""
    rng = np.random.default_rng(6)
    shape = [2, 3, 7, 9]
    outputs: tuple[str, ...] = ("y",)
    if case.startswith("FusedConv"):
        activation = case.split("-")[1]
        params = {"Clip": [0.0, 6.0], "HardSigmoid": [0.3, 0.4]}.get(activation, [])
        inits = _weights(rng, w=(4, 3, 3, 3), b=(4,), z=(2, 4, 7, 9))
        inputs = ["x", "w", "b", "z"] if case.endswith("-Z") else ["x", "w", "b"]
        node = helper.make_node(
            "FusedConv",
            inputs,
            ["y"],
            domain=_MS,
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            activation=activation,
            **({"activation_params": params} if params else {}),
        )
    elif case == "FusedGemm-LeakyRelu":
        shape, inits = [3, 4], _weights(rng, w=(5, 4), c=(5,))
        node = helper.make_node(
            "FusedGemm",
            ["x", "w", "c"],
            ["y"],
            domain=_MS,
            transB=1,
            alpha=0.5,
            activation="LeakyRelu",
            activation_alpha=0.1,
        )
    elif case == "FusedMatMul":
        shape, inits = [2, 9, 7], _weights(rng, w=(2, 5, 9))
        node = helper.make_node(
            "FusedMatMul", ["x", "w"], ["y"], domain=_MS, transA=1, transB=1, alpha=2.0
        )
    elif case in ("Gelu", "BiasGelu", "FastGelu"):
        shape, inits = [2, 7, 9], _weights(rng, bias=(9,))
        node = helper.make_node(case, ["x"] if case == "Gelu" else ["x", "bias"], ["y"], domain=_MS)
    elif case == "SkipLayerNormalization":
        shape = [2, 7, 9]
        inits = _weights(rng, skip=(2, 7, 9), gamma=(9,), beta=(9,), bias=(9,))
        node = helper.make_node(
            case,
            ["x", "skip", "gamma", "beta", "bias"],
            ["y", "", "", "sum"],
            domain=_MS,
            epsilon=1e-5,
        )
        outputs = ("y", "sum")
    else:
        shape, inits = [2, 7, 9], _weights(rng, scale=(9,))
        node = helper.make_node(case, ["x", "scale"], ["y"], epsilon=1e-6)
    model = _contrib_model([node], inits, shape, outputs)
    x = rng.standard_normal(shape).astype(np.float32)
    assert_close(ember.compile(model).run({"x": x}), onnxruntime_outputs(model, {"x": x}))


def test_fused_conv_unknown_activation_is_refused_by_name() -> None:
    rng = np.random.default_rng(7)
    node = helper.make_node(
        "FusedConv", ["x", "w"], ["y"], domain=_MS, kernel_shape=[3, 3], activation="Swish"
    )
    model = _contrib_model([node], _weights(rng, w=(4, 3, 3, 3)), [1, 3, 5, 5])
    with pytest.raises(ember.UnsupportedOpError, match="FusedConv.*activation 'Swish'"):
        ember.compile(model)


def test_model_saved_by_onnxruntimes_optimizer(tmp_path: pytest.TempPathFactory) -> None:
    """A model as onnxruntime saves it at ORT_ENABLE_EXTENDED (FusedConv, FusedGemm, Gelu,
    default-domain LayerNormalization at opset 12), run as a user would: ember.compile(path)."""
    import onnxruntime as ort

    rng = np.random.default_rng(8)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["gm"], transB=1),
        helper.make_node("Relu", ["gm"], ["h"]),
        helper.make_node("Div", ["h", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["h", "e1"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["gelu"]),
        helper.make_node("ReduceMean", ["gelu"], ["mu"], axes=[-1]),
        helper.make_node("Sub", ["gelu", "mu"], ["dev"]),
        helper.make_node("Pow", ["dev", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["dev", "sd"], ["normed"]),
        helper.make_node("Mul", ["normed", "gamma"], ["scaled"]),
        helper.make_node("Add", ["scaled", "beta"], ["y"]),
    ]
    scalars = {"sqrt2": 1.4142135, "one": 1.0, "half": 0.5, "two": 2.0, "eps": 1e-5}
    inits = _weights(rng, w=(4, 3, 3, 3), b=(4,), fw=(8, 4), fb=(8,), gamma=(8,), beta=(8,)) + [
        numpy_helper.from_array(np.float32(v), k) for k, v in scalars.items()
    ]
    model = _model(_graph(nodes, inits, [_input([2, 3, 7, 9])]), 12)
    path = str(tmp_path / "optimized.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = path
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    saved = {n.op_type for n in onnx.load(path).graph.node}
    assert {"FusedConv", "FusedGemm", "Gelu", "LayerNormalization"} <= saved, saved
    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    assert_close(ember.compile(path).run({"x": x}), onnxruntime_outputs(path, {"x": x}))


@pytest.mark.parametrize(
    ("mode", "scales"),
    [
        ("half_pixel", [1, 1, 2.5, 3.3]),
        ("asymmetric", [1, 1, 0.4, 0.7]),
        ("pytorch_half_pixel", [1, 1, 1.2, 1.9]),
        ("align_corners", [1, 1, 1.5, 1.2]),  # 6 x 1.5, 10 x 1.2: whole output lengths
    ],
)
@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor"])
def test_resize_nearest_source_rows_in_float32(
    mode: str, scales: list[float], nearest_mode: str
) -> None:
    """Nearest Resize at scales such as 2.5 or 0.7 (tf2onnx and paddle2onnx write them as
    scales): onnxruntime computes each source coordinate in float32, where e.g. 1 / 0.4 is just
    below 2.5, and rounds that. ember computed in float64 and picked another source row for
    several outputs; the output length 10 x 0.7 (7 in float32) was 6."""
    resize = helper.make_node(
        "Resize",
        ["x", "", "scales"],
        ["y"],
        mode="nearest",
        coordinate_transformation_mode=mode,
        nearest_mode=nearest_mode,
    )
    inits = [numpy_helper.from_array(np.array(scales, np.float32), "scales")]
    model = _model(_graph([resize], inits, [_input([1, 2, 6, 10])]), 13)
    x = np.random.default_rng(9).standard_normal((1, 2, 6, 10)).astype(np.float32)
    assert_close(ember.compile(model).run({"x": x}), onnxruntime_outputs(model, {"x": x}))


def test_batch_normalization_spatial_0() -> None:
    """BatchNormalization-7 with spatial=0 (statistics per activation, of shape [C, H, W]), as
    old converters wrote it: ember failed with 'imported graph does not verify'."""
    rng = np.random.default_rng(10)
    shape = (3, 5, 6)
    inits = [
        numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
        for name in ("scale", "bias", "mean")
    ] + [numpy_helper.from_array((rng.random(shape) + 0.5).astype(np.float32), "var")]
    norm = helper.make_node(
        "BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], spatial=0
    )
    model = _model(_graph([norm], inits, [_input([2, 3, 5, 6])]), 7)
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    assert_close(ember.compile(model).run({"x": x}), onnxruntime_outputs(model, {"x": x}))


def test_batch_normalization_parameter_of_the_wrong_size_is_a_model_error() -> None:
    inits = [numpy_helper.from_array(np.ones(4, np.float32), n) for n in ("s", "b", "m", "v")]
    norm = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])
    model = _model(_graph([norm], inits, [_input([2, 3, 5, 6])]), 9)
    with pytest.raises(ember.ModelError, match=r"scale of shape \[4\] for 3 channels"):
        ember.compile(model)


# ---------------------------------------------------------------------------------------------
# paddle2onnx (Paddle 3.x PIR exporter): patterns found exporting PaddleOCR / PaddleDetection /
# PaddleClas-style nets with seeded weights (reproducers: the report of branch hunt-paddle).


def _paddle_while_loop(steps_from_width: bool, data_condition: bool = False) -> onnx.ModelProto:
    """paddle2onnx's `while i < T:` greedy decoder (PaddleOCR's attention heads): a Loop with no
    trip count, the condition computed outside and again in the body, every outer value the
    body uses passed as a carried value, the counter `i` an int64 [1] counted through
    paddle's float `scale` op (Cast, Mul, Add, Cast back), and the output grown by a Concat
    each iteration; the argmax token is carried too. T is the feature width: known once the
    input shape is (x [N, 4, W])."""
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    body_nodes = [
        # h = tanh(h @ Wh + mean(x, axis=2) + E[tok]); tok = argmax(h)
        # out = concat([out, h[:, None]], 1)
        helper.make_node("MatMul", ["h", "Wh"], ["hw"]),
        helper.make_node("Add", ["hw", "xmean"], ["hx"]),
        helper.make_node("Gather", ["E", "tok"], ["emb"]),
        helper.make_node("Add", ["hx", "emb"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["h_next"]),
        helper.make_node("ArgMax", ["h_next"], ["tok_next"], axis=1, keepdims=0),
        helper.make_node("Unsqueeze", ["h_next", "ax1"], ["h_row"]),
        helper.make_node("Concat", ["out", "h_row"], ["out_next"], axis=1),
        # paddle's scale(i, 1.0, 1.0): on float, then back to int64
        helper.make_node("Cast", ["i"], ["i_f"], to=f32),
        helper.make_node("Mul", ["i_f", "one_f"], ["i_m"]),
        helper.make_node("Add", ["i_m", "one_f"], ["i_a"]),
        helper.make_node("Cast", ["i_a"], ["i_next"], to=i64),
    ]
    if data_condition:  # stop when the state's sum goes negative: data-dependent
        body_nodes += [
            helper.make_node("ReduceSum", ["h_next"], ["h_sum"], keepdims=0),
            helper.make_node("Less", ["zero_f", "h_sum"], ["cond_next"]),
        ]
    else:
        body_nodes.append(helper.make_node("Less", ["i_next", "T"], ["cond_next1"]))
        body_nodes.append(helper.make_node("Squeeze", ["cond_next1"], ["cond_next"]))
    body = helper.make_graph(
        body_nodes,
        "while_body",
        [
            helper.make_tensor_value_info("iter", i64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h", f32, None),
            helper.make_tensor_value_info("out", f32, None),
            helper.make_tensor_value_info("i", i64, [1]),
            helper.make_tensor_value_info("tok", i64, None),
        ],
        [
            helper.make_tensor_value_info("cond_next", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_next", f32, None),
            helper.make_tensor_value_info("out_next", f32, None),
            helper.make_tensor_value_info("i_next", i64, [1]),
            helper.make_tensor_value_info("tok_next", i64, None),
        ],
        [
            numpy_helper.from_array(np.array(1.0, np.float32), "one_f"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero_f"),
            numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        ],
    )
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["xmean"], axes=[2], keepdims=0),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Slice", ["x_shape", "two", "three"], ["T"]),  # [W], int64 [1]
        helper.make_node("Less", ["i0", "T"], ["cond0_1"]),
        helper.make_node("Squeeze", ["cond0_1"], ["cond0"]),
        helper.make_node("Slice", ["x_shape", "zero_i", "one_i"], ["n_shape"]),
        helper.make_node("Concat", ["n_shape", "zero_one_four"], ["out_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["out_shape"], ["out0"]),
        helper.make_node("Mul", ["xmean", "zero_f"], ["h0"]),
        helper.make_node(
            "ConstantOfShape",
            ["n_shape"],
            ["tok0"],
            value=numpy_helper.from_array(np.zeros(1, np.int64)),
        ),
        helper.make_node(
            "Loop", ["", "cond0", "h0", "out0", "i0", "tok0"], ["h", "y", "i", "tok"], body=body
        ),
    ]
    inits = [
        numpy_helper.from_array((0.5 * rng.standard_normal((4, 4))).astype(np.float32), "Wh"),
        numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "E"),
        numpy_helper.from_array(np.array([2], np.int64), "two"),
        numpy_helper.from_array(np.array([3], np.int64), "three"),
        numpy_helper.from_array(np.array([0], np.int64), "i0"),
        numpy_helper.from_array(np.array([0], np.int64), "zero_i"),
        numpy_helper.from_array(np.array([1], np.int64), "one_i"),
        numpy_helper.from_array(np.array([0, 4], np.int64), "zero_one_four"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero_f"),
    ]
    width = "W" if steps_from_width else 5
    x = helper.make_tensor_value_info("x", f32, ["N", 4, width])
    return _model(_graph(nodes, inits, [x]), 13)


@pytest.mark.parametrize("width", [1, 6, 9])
def test_paddle_while_loop_counted_through_float_scale(width: int) -> None:
    """ember unrolls a Loop that grows a carried value, which needs every iteration's condition
    at compile time; paddle2onnx counts `i` through float ops, which the importer keeps as ops,
    so the condition was 'computed at run time' and the model refused. Now an integer carried
    value (and the condition) computed from constants alone is evaluated each iteration."""
    model = _paddle_while_loop(steps_from_width=True)
    x = np.random.default_rng(width).standard_normal((2, 4, width)).astype(np.float32)
    expected = onnxruntime_outputs(model, {"x": x})
    result = ember.compile(model).run({"x": x})
    assert result["y"].shape == (2, width, 4)  # one row per iteration, W iterations
    assert_close(result, expected)


def test_paddle_while_loop_long_chain_does_not_overflow_the_stack() -> None:
    """Each iteration's integer carried values are evaluated if constants alone feed them: the
    token (ArgMax of the state) is not, and finding that walks the chain of all the bodies
    before it. Walked recursively that raised RecursionError past ~150 iterations (and,
    remembering only the values it could compute, took exponential time on the
    state's diamonds); 200 iterations here."""
    model = _paddle_while_loop(steps_from_width=True)
    x = np.random.default_rng(1).standard_normal((1, 4, 200)).astype(np.float32)
    expected = onnxruntime_outputs(model, {"x": x})
    assert_close(ember.compile(model).run({"x": x}), expected)


def test_paddle_while_loop_with_a_data_dependent_condition_is_refused() -> None:
    """A `while` whose condition reads the data (stop when the state's sum goes negative)
    grows its output a data-dependent number of times: refused, naming the Loop."""
    model = _paddle_while_loop(steps_from_width=False, data_condition=True)
    with pytest.raises(ember.UnsupportedOpError, match=r"Loop.*opset 13.*computed at run time"):
        ember.compile(model).run({"x": np.ones((1, 4, 5), np.float32)})


def test_paddle_nms_tail_failing_for_a_batch_names_the_graph_inputs() -> None:
    """paddle2onnx's multiclass_nms3 is written for batch 1: the ops after NonMaxSuppression
    concatenate a [1, k, 1] with the [N, k, 4] boxes, so batch 3 fails (onnxruntime too).
    ember compiles those ops per run-time size; its error named only intermediate tensors
    ('the model does not compile for input shapes {nms.selected_index.0: ...}'): now it
    names the graph inputs the run was given and the data-dependent node. Batch 1 is checked
    against onnxruntime (tolerance: assert_close's default)."""
    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "top"], ["selected"]),
        helper.make_node("Gather", ["selected", "two"], ["box_index"], axis=1),  # [K]
        helper.make_node("Gather", ["boxes", "box_index"], ["picked"], axis=1),  # [N, K, 4]
        helper.make_node("Gather", ["selected", "zero"], ["batch_index"], axis=1),  # [K]
        helper.make_node("Cast", ["batch_index"], ["batch_f"], to=f32),
        helper.make_node("Unsqueeze", ["batch_f", "zero_two"], ["label"]),  # [1, K, 1]
        helper.make_node("Concat", ["label", "picked"], ["y"], axis=2),
    ]
    inits = [
        numpy_helper.from_array(np.array([3], np.int64), "top"),
        numpy_helper.from_array(np.array(2, np.int64), "two"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0, 2], np.int64), "zero_two"),
    ]
    inputs = [
        helper.make_tensor_value_info("boxes", f32, ["N", 6, 4]),
        helper.make_tensor_value_info("scores", f32, ["N", 1, 6]),
    ]
    model = _model(_graph(nodes, inits, inputs), 13)
    rng = np.random.default_rng(0)

    def feeds(batch: int) -> dict[str, np.ndarray]:
        corner = rng.uniform(0, 10, (batch, 6, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(1, 5, (batch, 6, 2))], 2)
        scores = rng.uniform(0, 1, (batch, 1, 6))
        return {"boxes": boxes.astype(np.float32), "scores": scores.astype(np.float32)}

    compiled = ember.compile(model)
    one = feeds(1)
    assert_close(compiled.run(one), onnxruntime_outputs(model, one))
    with pytest.raises(
        ember.InputError,
        match=r"input shapes \{'boxes': \[3, 6, 4\].*"
        r"NonMaxSuppression.*Concat",
    ):
        compiled.run(feeds(3))


# ---------------------------------------------------------------------------------------------
# Patterns found exporting Keras 3 / TF 2.21 models with tf2onnx 1.17 (opsets 13 and 17).


def _tf_while_loop_model(
    data_dependent_condition: bool = False, limit: int | None = None, trip_count: bool = True
) -> onnx.ModelProto:
    """tf2onnx's Loop for a TF while_loop over time (Keras 3's masked LSTM/GRU/SimpleRNN;
    TimeDistributed's pfor loop has no trip count): trip count n = Shape(x)[1], and a body
    that computes its condition
    `int32(iter) < n and time + 1 < limit` from the iteration index, a carried int32 time
    counter and a carried bound, while it stacks each step's hidden state (a scan output)."""
    rng = np.random.default_rng(11)
    i64 = TensorProto.INT64
    i32 = TensorProto.INT32
    body_nodes = [
        helper.make_node("Gather", ["xt", "time"], ["xk"]),
        helper.make_node("MatMul", ["xk", "W"], ["xw"]),
        helper.make_node("MatMul", ["h", "U"], ["hu"]),
        helper.make_node("Add", ["xw", "hu"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["h_next"]),
        helper.make_node("Identity", ["h_next"], ["h_step"]),
        helper.make_node("Add", ["time", "one"], ["time_next"]),
        helper.make_node("Cast", ["iter"], ["iter32"], to=i32),
        helper.make_node("Less", ["iter32", "n32"], ["below_n"]),
        helper.make_node("Less", ["time_next", "limit"], ["below_limit"]),
    ]
    if data_dependent_condition:
        body_nodes += [
            helper.make_node("ReduceSum", ["h_next"], ["total"], keepdims=0),
            helper.make_node("Less", ["total", "big"], ["small"]),
            helper.make_node("And", ["below_limit", "small"], ["cond_out"]),
        ]
    else:
        body_nodes.append(helper.make_node("And", ["below_n", "below_limit"], ["cond_out"]))
    body = helper.make_graph(
        body_nodes,
        "while_body",
        [
            helper.make_tensor_value_info("iter", i64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("time", i32, []),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("limit", i32, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("time_next", i32, []),
            helper.make_tensor_value_info("h_next", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("limit", i32, []),
            helper.make_tensor_value_info("h_step", TensorProto.FLOAT, [2, 3]),
        ],
        [numpy_helper.from_array(np.array(1, np.int32), "one")]
        + [numpy_helper.from_array(np.array(8.0, np.float32), "big")] * data_dependent_condition,
    )
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "axis1"], ["n"]),
        helper.make_node("Cast", ["n"], ["n32"], to=i32),
        helper.make_node("Less", ["time0", "n32"], ["cond0"]),
        helper.make_node(
            "Loop",
            [
                "n" if trip_count else "",
                "cond0",
                "time0",
                "h0",
                "n32" if limit is None else "limit0",
            ],
            ["time_end", "h_end", "limit_end", "hs"],
            body=body,
        ),
        helper.make_node("Transpose", ["hs"], ["y"], perm=[1, 0, 2]),
    ]
    inits = [
        numpy_helper.from_array(np.array(1, np.int64), "axis1"),
        numpy_helper.from_array(np.array(0, np.int32), "time0"),
        numpy_helper.from_array(np.zeros((2, 3), np.float32), "h0"),
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), "U"),
    ]
    if limit is not None:
        inits.append(numpy_helper.from_array(np.array(limit, np.int32), "limit0"))
    return _model(_graph(nodes, inits, [_input([2, 5, 4])], ("y", "h_end")), 13)


@pytest.mark.parametrize(
    ("limit", "trip_count"), [(None, True), (3, True), (None, False)], ids=["M", "early", "no-M"]
)
def test_loop_with_a_counter_condition(limit: int | None, trip_count: bool) -> None:
    """Keras 3's masked LSTM/GRU through tf2onnx: a Loop with a scan output whose body
    computes its condition from the iteration index and a carried counter (ending at the trip
    count, or at iteration 3 of 5, or with no trip count M at all). ember refused it ('the
    outputs' size depends on data'); running the condition's scalar part at compile time
    gives the number of iterations."""
    model = _tf_while_loop_model(limit=limit, trip_count=trip_count)
    x = np.random.default_rng(12).standard_normal((2, 5, 4)).astype(np.float32)
    expected = onnxruntime_outputs(model, {"x": x})
    assert expected["y"].shape == (2, limit or 5, 3)
    assert_close(ember.compile(model).run({"x": x}), expected)


@pytest.mark.parametrize("trip_count", [True, False], ids=["M", "no-M"])
def test_loop_whose_condition_reads_data_is_refused(trip_count: bool) -> None:
    """The same Loop whose condition reads the hidden state: the scan output's size depends
    on data, so it stays a clear refusal."""
    model = _tf_while_loop_model(data_dependent_condition=True, trip_count=trip_count)
    with pytest.raises(ember.UnsupportedOpError, match=r"Loop .*opset 13.*the outputs' size"):
        ember.compile(model)


def _counter_slice_loop_model(trip_count: int | None, width: int = 5) -> onnx.ModelProto:
    """tf2onnx's TimeDistributed pfor loop and its Cumprod: a Loop whose body Slices at a
    counter it carries (not the iteration index), `acc *= x[:, j:j+1]`, and computes its
    condition `j + 1 < n`; n is a ReduceMax of shape values (an op the importer keeps) and the
    pfor form has no trip count M."""
    i64 = TensorProto.INT64
    body = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["j", "axis0"], ["start"]),
            helper.make_node("Add", ["j", "one"], ["j_next"]),
            helper.make_node("Unsqueeze", ["j_next", "axis0"], ["end"]),
            helper.make_node("Slice", ["x", "start", "end", "axis1"], ["column"]),
            helper.make_node("Mul", ["acc", "column"], ["acc_next"]),
            helper.make_node("Identity", ["acc_next"], ["acc_step"]),
            helper.make_node("Less", ["j_next", "n"], ["cond_out"]),
        ],
        "counter_body",
        [
            helper.make_tensor_value_info("iter", i64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("j", i64, []),
            helper.make_tensor_value_info("acc", TensorProto.FLOAT, [2, 1]),
            helper.make_tensor_value_info("n", i64, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("j_next", i64, []),
            helper.make_tensor_value_info("acc_next", TensorProto.FLOAT, [2, 1]),
            helper.make_tensor_value_info("n", i64, []),
            helper.make_tensor_value_info("acc_step", TensorProto.FLOAT, [2, 1]),
        ],
        [
            numpy_helper.from_array(np.array(1, np.int64), "one"),
            numpy_helper.from_array(np.array([0], np.int64), "axis0"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        ],
    )
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "axis1", "two", "axis0"], ["n_1d"]),
        helper.make_node("ReduceMax", ["n_1d"], ["n"], keepdims=0),
        helper.make_node("Less", ["j0", "n"], ["cond0"]),
        helper.make_node(
            "Loop",
            ["M" if trip_count is not None else "", "cond0", "j0", "acc0", "n"],
            ["j_end", "y", "n_end", "steps"],
            body=body,
        ),
    ]
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], np.int64), "two"),
        numpy_helper.from_array(np.array(0, np.int64), "j0"),
        numpy_helper.from_array(np.ones((2, 1), np.float32), "acc0"),
    ]
    if trip_count is not None:
        inits.append(numpy_helper.from_array(np.array(trip_count, np.int64), "M"))
    return _model(_graph(nodes, inits, [_input([2, width])], ("y", "steps")), 13)


@pytest.mark.parametrize("trip_count", [None, 3], ids=["no-M", "M"])
def test_loop_slicing_at_a_carried_counter_is_unrolled(trip_count: int | None) -> None:
    """ember refused the Slice ('starts must be a compile-time constant'); the Loop is now
    unrolled at import, each iteration with constant counters."""
    model = _counter_slice_loop_model(trip_count)
    x = np.random.default_rng(13).standard_normal((2, 5)).astype(np.float32)
    expected = onnxruntime_outputs(model, {"x": x})
    assert expected["steps"].shape == (trip_count or 5, 2, 1)
    assert_close(ember.compile(model).run({"x": x}), expected)


def test_loop_slicing_at_a_carried_counter_too_long_to_unroll_is_refused() -> None:
    """Past 256 iterations the Loop is not unrolled: the Slice's refusal names it."""
    model = _counter_slice_loop_model(None, width=300)
    with pytest.raises(ember.UnsupportedOpError, match=r"Slice .*opset 13.*compile-time constant"):
        ember.compile(model)


def test_crop_and_resize_loop_with_scalar_slice_operands() -> None:
    """tf2onnx's CropAndResize with a computed box index: a Loop over the boxes whose body
    declares the iteration number of shape [1] (onnxruntime feeds it so) and Slices the
    box-index tensor at it (ember gave it 0-d and refused the Slice's starts as not a 1-D
    list), then the image at that index (a run-time Slice start: the Loop is unrolled)."""
    i64 = TensorProto.INT64
    body = helper.make_graph(
        [
            helper.make_node("Add", ["i", "one"], ["i_next"]),
            helper.make_node("Slice", ["box_ind", "i", "i_next", "zero_1d"], ["b"]),
            helper.make_node("Add", ["b", "one_1d"], ["b_next"]),
            helper.make_node("Slice", ["x", "b", "b_next", "zero_1d"], ["image"]),
            helper.make_node("Mul", ["image", "gain"], ["crop"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "crop_body",
        [
            helper.make_tensor_value_info("i", i64, [1]),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("crop", TensorProto.FLOAT, [1, 3, 4]),
        ],
        [
            numpy_helper.from_array(np.array([1], np.int64), "one"),
            numpy_helper.from_array(np.array([1], np.int64), "one_1d"),
            numpy_helper.from_array(np.array([0], np.int64), "zero_1d"),
        ],
    )
    nodes = [helper.make_node("Loop", ["M", "true"], ["y"], body=body)]
    inits = [
        numpy_helper.from_array(np.array(3, np.int64), "M"),
        numpy_helper.from_array(np.array(True), "true"),
        numpy_helper.from_array(np.array([1, 0, 1], np.int64), "box_ind"),
        numpy_helper.from_array(np.array([[[2.0]]], np.float32), "gain"),
    ]
    model = _model(_graph(nodes, inits, [_input([2, 3, 4])]), 13)
    x = np.random.default_rng(14).standard_normal((2, 3, 4)).astype(np.float32)
    expected = onnxruntime_outputs(model, {"x": x})
    assert expected["y"].shape == (3, 1, 3, 4)
    assert_close(ember.compile(model).run({"x": x}), expected)
