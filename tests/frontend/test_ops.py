"""One-node (or few-node) ONNX models: import, interpret the graph IR with numpy, and compare
with onnxruntime; then run the graph passes and compare again.

Tolerance: rtol 1e-4, atol 1e-5 (float32 kernels vs the float64-accumulating interpreter).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ember.core.context import make_context
from ember.dialects.numpy_eval import evaluate_function
from ember.frontend.onnx_importer import import_onnx, io_names
from ember.passes.pipeline import run_graph_passes

RTOL, ATOL = 1e-4, 1e-5
F = TensorProto.FLOAT


def make(
    nodes: list[onnx.NodeProto],
    inputs: list[tuple[str, int, list[int]]],
    outputs: list[str],
    opset: int,
    initializers: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, F, None) for n in outputs],
        [numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    # Graph outputs are declared without shapes; let ONNX fill them in so the checker passes.
    return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)


def check(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    imported = import_onnx(model)
    fn = imported.module.body.block.first_op
    assert io_names(fn) == (imported.input_names, imported.output_names)  # type: ignore[arg-type]
    args = [feeds[n] for n in imported.input_names]
    for stage in ("imported", "optimized"):
        got = evaluate_function(fn, imported.weights, args)  # type: ignore[arg-type]
        for e, g in zip(expected, got, strict=True):
            assert g.shape == e.shape, stage
            np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL, err_msg=stage)
        run_graph_passes(imported.module, make_context(imported.weights))
        imported.module.verify()


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(
    "attrs",
    [
        dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
        dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1], count_include_pad=0),
        dict(kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
        dict(kernel_shape=[2, 3], strides=[2, 1], auto_pad="SAME_LOWER"),
        dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID", ceil_mode=0),
    ],
)
@pytest.mark.parametrize("op", ["AveragePool", "MaxPool"])
def test_pooling_geometry(op: str, attrs: dict) -> None:
    if op == "MaxPool":
        attrs = {k: v for k, v in attrs.items() if k != "count_include_pad"}
    model = make([helper.make_node(op, ["x"], ["y"], **attrs)], [("x", F, [1, 3, 8, 7])], ["y"], 12)
    check(model, {"x": rand(1, 3, 8, 7)})


@pytest.mark.parametrize(
    "attrs",
    [
        dict(strides=[2, 2], auto_pad="SAME_UPPER"),
        dict(strides=[1, 2], auto_pad="SAME_LOWER"),
        dict(strides=[1, 2], pads=[2, 1, 2, 1], dilations=[2, 1]),
        dict(pads=[1, 0, 2, 1], group=2),
    ],
)
def test_conv_padding_then_bias_relu_fusion(attrs: dict) -> None:
    group = attrs.get("group", 1)
    w, b = rand(6, 4 // group, 3, 3, seed=1), rand(6, seed=2)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    model = make(nodes, [("x", F, [1, 4, 9, 8])], ["y"], 13, {"w": w, "b": b})
    check(model, {"x": rand(1, 4, 9, 8)})


@pytest.mark.parametrize("opset,axis", [(11, 1), (11, 2), (11, -1), (13, 1), (13, -1)])
def test_softmax_axis_semantics_per_opset(opset: int, axis: int) -> None:
    model = make(
        [helper.make_node("Softmax", ["x"], ["y"], axis=axis)], [("x", F, [2, 3, 4])], ["y"], opset
    )
    check(model, {"x": rand(2, 3, 4) * 4})


@pytest.mark.parametrize("opset", [6, 13])
def test_clip_bounds_as_attributes_or_inputs(opset: int) -> None:
    if opset < 11:
        node = helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.7)
        inits = {}
    else:
        node = helper.make_node("Clip", ["x", "lo", "", ], ["y"])  # fmt: skip
        inits = {"lo": np.array(-0.5, np.float32)}
    check(make([node], [("x", F, [3, 5])], ["y"], opset, inits), {"x": rand(3, 5)})


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze_flatten(opset: int) -> None:
    axes = {"axes": [0, 3]} if opset < 13 else {}
    inputs = ["x", "ax"] if opset >= 13 else ["x"]
    nodes = [
        helper.make_node("Unsqueeze", inputs, ["u"], **axes),
        helper.make_node("Squeeze", ["u"], ["s"]),
        helper.make_node("Flatten", ["s"], ["y"], axis=-1),
    ]
    inits = {"ax": np.array([0, 3], np.int64)} if opset >= 13 else {}
    check(make(nodes, [("x", F, [2, 3, 4])], ["y"], opset, inits), {"x": rand(2, 3, 4)})


@pytest.mark.parametrize("opset", [13, 18])
def test_reductions_with_axes_attribute_or_input(opset: int) -> None:
    nodes, inits = [], {"ax": np.array([1, -1], np.int64)}
    if opset < 18:
        nodes.append(helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, -1], keepdims=0))
        nodes.append(helper.make_node("ReduceMax", ["x"], ["mx"], axes=[1]))
    else:
        nodes.append(helper.make_node("ReduceMean", ["x", "ax"], ["m"], keepdims=0))
        nodes.append(helper.make_node("ReduceMax", ["x", "ax"], ["mx"]))
    nodes.append(helper.make_node("ReduceSum", ["x", "ax"], ["s"]))
    model = make(nodes, [("x", F, [2, 3, 4])], ["m", "mx", "s"], opset, inits)
    check(model, {"x": rand(2, 3, 4)})


def test_variadic_elementwise_and_unary_ops() -> None:
    nodes = [
        helper.make_node("Sum", ["a", "b", "c"], ["s"]),
        helper.make_node("Mean", ["a", "b", "c"], ["m"]),
        helper.make_node("Max", ["a", "b", "c"], ["mx"]),
        helper.make_node("Min", ["a", "b"], ["mn"]),
        helper.make_node("Abs", ["s"], ["abs"]),
        helper.make_node("Sqrt", ["abs"], ["sq"]),
        helper.make_node("Log", ["sq"], ["lg"]),
        helper.make_node("Exp", ["m"], ["ex"]),
        helper.make_node("Neg", ["ex"], ["ng"]),
        helper.make_node("Reciprocal", ["ng"], ["rc"]),
        helper.make_node("Sigmoid", ["mx"], ["sg"]),
        helper.make_node("Tanh", ["mn"], ["th"]),
        helper.make_node("LeakyRelu", ["th"], ["lr"], alpha=0.2),
        helper.make_node("Erf", ["lr"], ["er"]),
        helper.make_node("Sub", ["er", "rc"], ["d1"]),
        helper.make_node("Div", ["d1", "sg"], ["d2"]),
        helper.make_node("Pow", ["sg", "two"], ["pw"]),
        helper.make_node("Add", ["d2", "pw"], ["y"]),
    ]
    inputs = [(n, F, [2, 3]) for n in "abc"]
    model = make(nodes, inputs, ["y", "lg"], 13, {"two": np.array(2, np.int64)})
    check(model, {n: rand(2, 3, seed=i) for i, n in enumerate("abc")})


@pytest.mark.parametrize(
    "attrs,a_shape,b_shape",
    [
        (dict(), [3, 4], [4, 5]),
        (dict(transA=1, transB=1, alpha=0.5, beta=2.0), [4, 3], [5, 4]),
    ],
)
def test_gemm_to_matmul(attrs: dict, a_shape: list[int], b_shape: list[int]) -> None:
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], **attrs)
    inits = {"b": rand(*b_shape, seed=1), "c": rand(1, 5, seed=2)}
    check(make([node], [("a", F, a_shape)], ["y"], 13, inits), {"a": rand(*a_shape)})


def test_gemm_with_runtime_operands_and_full_c() -> None:
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=1, alpha=0.5, beta=3.0)
    inputs = [("a", F, [4, 3]), ("b", F, [4, 5]), ("c", F, [3, 5])]
    feeds = {"a": rand(4, 3), "b": rand(4, 5, seed=1), "c": rand(3, 5, seed=2)}
    check(make([node], inputs, ["y"], 13), feeds)


def test_gemm_with_runtime_operands_and_constant_row_c() -> None:
    # Regression: a constant per-column C went into the matmul's epilogue bias, and the
    # alpha applied after the matmul then scaled it too (alpha * beta * C).
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transB=1, alpha=0.75, beta=0.75)
    inputs = [("a", F, [5, 16]), ("b", F, [6, 16])]
    model = make([node], inputs, ["y"], 13, {"c": rand(6, seed=2)})
    check(model, {"a": rand(5, 16), "b": rand(6, 16, seed=1)})


@pytest.mark.parametrize(
    "a_shape,b_shape", [([4], [4, 3]), ([2, 3, 4], [4]), ([2, 1, 3, 4], [5, 4, 2])]
)
def test_matmul_numpy_rank_rules(a_shape: list[int], b_shape: list[int]) -> None:
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    inputs = [("a", F, a_shape), ("b", F, b_shape)]
    check(make([node], inputs, ["y"], 13), {"a": rand(*a_shape), "b": rand(*b_shape, seed=1)})


def test_shape_computation_is_folded_to_a_static_reshape() -> None:
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero1"], ["batch1"]),
        helper.make_node("ConstantOfShape", ["two"], ["fill"], value=helper.make_tensor("v", TensorProto.INT64, [1], [3])),
        helper.make_node("Range", ["start", "limit", "delta"], ["rng"]),
        helper.make_node("Cast", ["rng"], ["rngf"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["batch1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Mul", ["r", "rngf"], ["y"]),
        helper.make_node("Constant", [], ["k"], value_floats=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]),
        helper.make_node("Add", ["y", "k"], ["z"]),
    ]  # fmt: skip
    inits = {
        "zero": np.array(0, np.int64),
        "zero1": np.array([0], np.int64),
        "two": np.array([2], np.int64),
        "minus1": np.array([-1], np.int64),
        "start": np.array(0, np.int64),
        "limit": np.array(12, np.int64),
        "delta": np.array(1, np.int64),
    }
    model = make(nodes, [("x", F, [2, 3, 4])], ["z"], 13, inits)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("z", F, [2, 12]))
    check(model, {"x": rand(2, 3, 4)})
    text = str(import_onnx(model).module)
    assert "graph.reshape" in text and "i64" not in text  # every integer computation folded


def test_normalizations_lrn_gather_transpose_concat() -> None:
    nodes = [
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"], epsilon=1e-3),
        helper.make_node("LRN", ["bn"], ["lrn"], size=3, alpha=1e-2, beta=0.75, bias=2.0),
        helper.make_node("Transpose", ["lrn"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("LayerNormalization", ["t", "ls", "lb"], ["ln"], axis=-1),
        helper.make_node("Gather", ["ln", "idx"], ["g"], axis=1),
        helper.make_node("Concat", ["g", "g"], ["y"], axis=-1),
    ]
    rng = np.random.default_rng(3)
    inits = {
        "s": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "b": rand(4, seed=4),
        "m": rand(4, seed=5),
        "v": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "ls": rand(4, seed=6),
        "lb": rand(4, seed=7),
        "idx": np.array([[0, -1], [2, 1]], np.int64),
    }
    model = make(nodes, [("x", F, [1, 4, 3, 5])], ["y"], 17, inits)
    check(model, {"x": rand(1, 4, 3, 5)})
