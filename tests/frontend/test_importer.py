"""Whole-model import: the nine light models of the onnx wheel, the three built models
(numerics vs onnxruntime through the numpy interpreter, before and after the graph passes),
print -> parse -> print stability, and the errors users can trigger."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser

from ember.core.context import make_context
from ember.dialects import graph
from ember.dialects.numpy_eval import evaluate_function
from ember.dialects.weights import WeightStore
from ember.frontend.errors import ModelError, UnsupportedOpError
from ember.frontend.onnx_importer import import_model, import_onnx, io_names
from ember.passes.pipeline import run_graph_passes
from ember.tools import model_zoo as models
from ember.tools.model_zoo import LIGHT_MODELS, light_model_path


def op_counts(module: ModuleOp) -> collections.Counter[str]:
    return collections.Counter(op.name for op in module.walk())


def check_weights_match_types(module: ModuleOp, weights: WeightStore) -> None:
    for op in module.walk():
        if isinstance(op, graph.ConstantOp):
            array = weights[op.ref.data]
            if graph.shape_of(op.output) == ():
                continue  # WeightStore stores 0-d arrays as 1-d (reported to its owner)
            assert array.shape == graph.shape_of(op.output), op.ref.data


# Expected op counts after the graph passes: every batch_norm and gemm is gone, and the
# activations/residual adds that follow a single-use conv are fused into it. Inception v2's 69
# convs become 60: its weights are constant fills, so cse merges 9 sibling convs (same input,
# bit-equal weights), as onnxruntime does; 6 of their BatchNormalizations, now reading a conv
# with several users, stay a mul, an add and their relu instead of folding into it.
LIGHT_AFTER_PIPELINE = {
    "resnet50": {"graph.conv": 53, "graph.relu": 0, "graph.add": 0, "graph.matmul": 1},
    "squeezenet": {"graph.conv": 26, "graph.relu": 0},
    "vgg19": {"graph.conv": 16, "graph.matmul": 3, "graph.relu": 0},
    "bvlc_alexnet": {"graph.matmul": 3, "graph.relu": 0, "graph.lrn": 2},
    "inception_v2": {"graph.conv": 60, "graph.mul": 6, "graph.relu": 6},
}


# VGG-19 and ZFNet-512 (the largest weights: ~3.5 s of CPU together, most of it memory) with
# --runslow: under branch coverage this file reached the same arcs without them
# (docs/testing.md); the other seven light models import by default.
SLOW_IMPORTS = ("vgg19", "zfnet512")


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_IMPORTS else n for n in LIGHT_MODELS],
)
def test_light_model_imports_and_optimizes(name: str) -> None:
    path = light_model_path(name)
    onnx_model = onnx.load(path)
    imported = import_onnx(path)
    module, weights = imported.module, imported.weights
    module.verify()
    before = op_counts(module)
    onnx_counts = collections.Counter(n.op_type for n in onnx_model.graph.node)
    assert before["graph.conv"] == onnx_counts["Conv"]
    assert before["graph.batch_norm"] == onnx_counts["BatchNormalization"]
    assert before["graph.gemm"] == onnx_counts["Gemm"]
    fn = module.body.block.first_op
    assert isinstance(fn, graph.Operation)
    inputs, outputs = io_names(fn)  # type: ignore[arg-type]
    assert inputs == imported.input_names and len(inputs) == 1
    assert outputs == [o.name for o in onnx_model.graph.output]
    check_weights_match_types(module, weights)

    run_graph_passes(module, make_context(weights))
    module.verify()
    after = op_counts(module)
    assert after["graph.batch_norm"] == 0 and after["graph.gemm"] == 0
    assert after["graph.identity"] == 0
    for op_name, count in LIGHT_AFTER_PIPELINE.get(name, {}).items():
        assert after[op_name] == count, (op_name, dict(after))
    referenced = {op.ref.data for op in module.walk() if isinstance(op, graph.ConstantOp)}
    assert set(weights) == referenced  # dce dropped every unreferenced weight
    check_weights_match_types(module, weights)


def test_resnet50_convs_carry_relu_and_residual() -> None:
    module, weights = import_model(light_model_path("resnet50"))
    run_graph_passes(module, make_context(weights))
    convs = [op for op in module.walk() if isinstance(op, graph.ConvOp)]
    assert sum(op.activation is not None and op.activation.data == "relu" for op in convs) == 49
    assert sum(op.residual is not None for op in convs) == 16
    assert all(op.bias is not None for op in convs)


BUILT = {
    "resnet18": (lambda: models.resnet18(seed=0, image_size=64), 1e-4),
    "mobilenet_v2": (lambda: models.mobilenet_v2(seed=0, image_size=64), 1e-4),
    "bert": (lambda: models.bert_encoder(layers=2, seq=16, hidden=64, heads=4), 1e-4),
}


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    feeds = {}
    for info in model.graph.input:
        shape = [d.dim_value for d in info.type.tensor_type.shape.dim]
        if info.type.tensor_type.elem_type == TensorProto.INT64:
            feeds[info.name] = rng.integers(0, 100, shape).astype(np.int64)
        else:
            feeds[info.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


@pytest.mark.parametrize("name", BUILT)
def test_built_model_matches_onnxruntime_before_and_after_passes(name: str) -> None:
    build, rtol = BUILT[name]
    model = build()
    feeds = _feeds(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    imported = import_onnx(model)
    fn = imported.module.body.block.first_op
    args = [feeds[n] for n in imported.input_names]
    ctx = make_context(imported.weights)
    for stage in ("imported", "optimized"):
        got = evaluate_function(fn, ctx.weights, args)  # type: ignore[arg-type]
        for e, g in zip(expected, got, strict=True):
            # Relative to the output's scale: logits and hidden states are O(1)..O(10).
            err = np.abs(g - e).max() / np.abs(e).max()
            assert err < rtol, (stage, err)
        run_graph_passes(imported.module, ctx)
        imported.module.verify()


def test_built_models_fuse_as_expected() -> None:
    module, weights = import_model(models.resnet18(seed=0, image_size=64))
    run_graph_passes(module, make_context(weights))
    counts = op_counts(module)
    assert counts["graph.conv"] == 20 and counts["graph.batch_norm"] == 0
    assert counts["graph.relu"] == 0 and counts["graph.add"] == 0

    module, weights = import_model(models.mobilenet_v2(seed=0, image_size=64))
    run_graph_passes(module, make_context(weights))
    counts = op_counts(module)
    convs = [op for op in module.walk() if isinstance(op, graph.ConvOp)]
    assert counts["graph.clip"] == 0 and counts["graph.add"] == 0
    assert sum(op.residual is not None for op in convs) == 10
    assert sum(op.group.value.data > 1 for op in convs) == 17

    module, weights = import_model(models.bert_encoder(layers=2))
    run_graph_passes(module, make_context(weights))
    matmuls = [op for op in module.walk() if isinstance(op, graph.MatMulOp)]
    acts = collections.Counter(op.activation.data for op in matmuls if op.activation)
    assert acts == {"gelu": 2, "tanh": 1}
    assert sum(op.residual is not None for op in matmuls) == 4
    assert sum(op.bias is not None for op in matmuls) == 13
    assert op_counts(module)["graph.erf"] == 0


@pytest.mark.parametrize("optimize", [False, True])
def test_print_parse_print_is_stable(optimize: bool) -> None:
    module, weights = import_model(models.bert_encoder(layers=1))
    ctx = make_context(weights)
    if optimize:
        run_graph_passes(module, ctx)
    text = str(module)
    reparsed = Parser(ctx, text).parse_module()
    reparsed.verify()
    assert str(reparsed) == text


def test_import_is_fast_for_a_100mb_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5000, 5000)).astype(np.float32)  # 100 MB
    graph_proto = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5000])],
        [onnx.numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "big.onnx"
    onnx.save(model, path)
    module, weights = import_model(path)
    assert np.array_equal(weights["w"], w)
    assert "5000x5000xf32" in str(module)


# ---------------------------------------------------------------------------------------------
# Errors


def _one_node_model(node: onnx.NodeProto, opset: int = 13, **input_kw) -> onnx.ModelProto:
    inputs = input_kw.get("inputs") or [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    ]
    graph_proto = helper.make_graph(
        [node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])]
    )
    return helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", opset)])


def test_unsupported_op_names_type_node_and_opset() -> None:
    # RandomNormalLike: a real ONNX op that ember does not compile.
    model = _one_node_model(helper.make_node("RandomNormalLike", ["x"], ["y"], name="my_rng"), 17)
    with pytest.raises(UnsupportedOpError, match=r"RandomNormalLike.*'my_rng'.*opset 17") as info:
        import_model(model)
    assert isinstance(info.value, ValueError)
    assert (info.value.op_type, info.value.node_name, info.value.opset) == (
        "RandomNormalLike",
        "my_rng",
        17,
    )


def test_unsupported_op_variant_and_used_extra_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """A converter that yields fewer outputs than the node lists is refused when the model uses
    the missing one. Every converter now yields all it is asked for, so this one is a stand-in:
    Dropout without its mask."""
    from ember.frontend import registry

    monkeypatch.setitem(registry.CONVERTERS, "Dropout", lambda imp, node: [imp.required(node, 0)])
    node = helper.make_node("Dropout", ["x"], ["y", "mask"], name="dp")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 3])]
    graph_proto = helper.make_graph(
        [node],
        "g",
        inputs,
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 3]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 1, 2, 3]),
        ],
    )
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedOpError, match=r"Dropout.*'dp'.*output #1"):
        import_model(model)


@pytest.mark.parametrize("waived_shape", [None, (3, 3)])
def test_a_shape_onnx_infers_otherwise_is_refused(
    monkeypatch: pytest.MonkeyPatch, waived_shape: tuple[int, ...] | None
) -> None:
    """Each computed shape is cross-checked against ONNX's shape inference (a stand-in Relu
    converter that drops a row). `onnx_infers_instead` accepts only the very shape it names
    for ONNX: a waiver naming another one does not silence the check."""
    from ember.frontend import registry
    from ember.frontend.context import ImportContext, Node, Value

    def wrong_relu(imp: ImportContext, node: Node) -> list[Value]:
        x = imp.slice_axis(imp.required(node, 0), 0, 0, 1)
        if waived_shape is not None:
            imp.onnx_infers_instead(node.proto.output[0], waived_shape)
        return [imp.emit(graph.ReluOp, [x], (1, 3))]

    monkeypatch.setitem(registry.CONVERTERS, "Relu", wrong_relu)
    model = _one_node_model(helper.make_node("Relu", ["x"], ["y"], name="relu"))
    with pytest.raises(
        ModelError, match=r"computed shape \(1, 3\) for 'y' but ONNX infers \(2, 3\)"
    ):
        import_model(model)


def test_shapes_after_a_ceil_mode_pool_are_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past a ceil-mode MaxPool whose shape ONNX gets wrong (4x4 for onnxruntime's 3x3), ONNX's
    inference runs again from ember's 3x3: a stand-in Relu that drops a row is refused against
    3x3, not let through (nor refused against the stale 4x4)."""
    from ember.frontend import registry
    from ember.frontend.context import ImportContext, Node, Value

    def wrong_relu(imp: ImportContext, node: Node) -> list[Value]:
        x = imp.slice_axis(imp.required(node, 0), 2, 0, 2)
        return [imp.emit(graph.ReluOp, [x], (1, 1, 2, 3))]

    monkeypatch.setitem(registry.CONVERTERS, "Relu", wrong_relu)
    window = {"kernel_shape": [2, 2], "strides": [3, 3], "pads": [1, 1, 1, 1], "ceil_mode": 1}
    graph_proto = helper.make_graph(
        [
            helper.make_node("MaxPool", ["x"], ["p"], **window),
            helper.make_node("Relu", ["p"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 7, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(ModelError, match=r"\(1, 1, 2, 3\) for 'y' but ONNX infers \(1, 1, 3, 3\)"):
        import_model(model)


def test_corrupt_file_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.onnx"
    good = _one_node_model(helper.make_node("Relu", ["x"], ["y"])).SerializeToString()
    path.write_bytes(good[: len(good) // 2] + b"\xff\xfe garbage \x00" * 10)
    with pytest.raises(ModelError, match="corrupt.onnx"):
        import_model(path)
    with pytest.raises(ModelError, match="cannot read"):
        import_model(tmp_path / "missing.onnx")


def test_missing_input_is_a_model_error() -> None:
    model = _one_node_model(helper.make_node("Add", ["x", "nowhere"], ["y"]))
    with pytest.raises(ModelError, match="nowhere"):
        import_model(model)


def test_dynamic_shape_needs_input_shapes() -> None:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])]
    model = _one_node_model(helper.make_node("Relu", ["x"], ["y"]), inputs=inputs)
    model.graph.output[0].CopyFrom(
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    )
    with pytest.raises(ModelError, match=r"'x' has dynamic dimension 'batch' at axis 0"):
        import_model(model)
    module, _ = import_model(model, input_shapes={"x": [4, 3]})
    assert "tensor<4x3xf32>" in str(module)
    with pytest.raises(ModelError, match="unknown graph inputs"):
        import_model(model, input_shapes={"nope": [1]})


def test_input_shapes_may_not_override_a_fixed_dim() -> None:
    # Regression: a pin of [4, 5] for an input declared [batch, 3] compiled as 4x5.
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])]
    model = _one_node_model(helper.make_node("Relu", ["x"], ["y"]), inputs=inputs)
    with pytest.raises(
        ModelError, match=r"input_shapes\['x'\] = \[4, 5\] does not fit .*\['\?', 3\]"
    ):
        import_model(model, input_shapes={"x": [4, 5]})


def test_unsupported_input_element_type() -> None:
    inputs = [helper.make_tensor_value_info("x", TensorProto.COMPLEX64, [2, 3])]
    model = _one_node_model(helper.make_node("Identity", ["x"], ["y"]), inputs=inputs)
    model.graph.output[0].CopyFrom(
        helper.make_tensor_value_info("y", TensorProto.COMPLEX64, [2, 3])
    )
    with pytest.raises(ModelError, match="input 'x': ONNX element type COMPLEX64 is not supp"):
        import_model(model)


def test_runtime_value_where_a_constant_is_required() -> None:
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
        helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
    ]
    model = _one_node_model(
        helper.make_node("Reshape", ["x", "shape"], ["y"], name="r"), inputs=inputs
    )
    with pytest.raises(
        UnsupportedOpError,
        match=r"Reshape.*'r'.*shape \(input #1\) must be a compile-time constant",
    ):
        import_model(model)


def test_conv_over_four_spatial_dims_is_unsupported() -> None:
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3, 3, 5]),
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 2, 1, 1, 1, 3]),
    ]
    graph_proto = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="c4d")],
        "g",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 3, 3, 3, 3])],
    )
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedOpError, match=r"Conv.*'c4d'.*4 spatial dims"):
        import_model(model)
