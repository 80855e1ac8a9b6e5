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
