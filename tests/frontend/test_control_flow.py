"""`If` with a compile-time condition (the exporters' `If` on a shape) imports the taken branch;
a run-time condition whose branches disagree on an output's shape is refused naming the op
(run-time If itself: tests/e2e/test_control_flow.py). Values checked against onnxruntime
(exact: the branches here are elementwise)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.runtime.errors import UnsupportedOpError
from ember.tests.oracle import onnxruntime_outputs

X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def _branch(name: str, nodes: list[onnx.NodeProto], out: str, inits=()) -> onnx.GraphProto:
    info = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
    return helper.make_graph(nodes, name, [], [info], list(inits))


def _if_on_dim(axis: int, size: int, then_g: onnx.GraphProto, else_g: onnx.GraphProto):
    """y = If(Shape(x)[axis] == size) — the way exporters guard a shape-specific path."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        _const("axis", np.array(axis, np.int64)),
        helper.make_node("Gather", ["s", "axis"], ["d"], axis=0),
        _const("size", np.array(size, np.int64)),
        helper.make_node("Equal", ["d", "size"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "if_on_shape", [X], [y])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("x.y", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _check(model: onnx.ModelProto) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    got = ember.compile(model).run({"x": x})["y"]
    np.testing.assert_array_equal(got, onnxruntime_outputs(model, {"x": x})["y"])
    return got


@pytest.mark.parametrize(("size", "expect_then"), [(3, True), (5, False)])
def test_if_on_a_shape_imports_the_taken_branch(size: int, expect_then: bool) -> None:
    scale = numpy_helper.from_array(np.full((4,), 2.0, np.float32), "scale")
    then_g = _branch("then", [helper.make_node("Mul", ["x", "scale"], ["t"])], "t", [scale])
    # The untaken branch may use an op ember does not support (here one of another domain).
    else_g = _branch("else", [helper.make_node("Neg", ["x"], ["e"])], "e")
    if expect_then:
        else_g = _branch("else", [helper.make_node("Foo", ["x"], ["e"], domain="x.y")], "e")
    model = _if_on_dim(1, size, then_g, else_g)
    if not expect_then:
        _check(model)
        return
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(ember.compile(model).run({"x": x})["y"], x * 2.0)


def test_nested_if_reads_outer_scope_values() -> None:
    inner = helper.make_node(
        "If",
        ["c2"],
        ["t"],
        then_branch=_branch("t2", [helper.make_node("Relu", ["x"], ["r"])], "r"),
        else_branch=_branch("e2", [helper.make_node("Neg", ["x"], ["n"])], "n"),
    )
    then_g = _branch("then", [_const("c2", np.array(True)), inner], "t")
    else_g = _branch("else", [helper.make_node("Abs", ["x"], ["e"])], "e")
    got = _check(_if_on_dim(2, 4, then_g, else_g))
    assert (got >= 0).all()


def test_if_on_a_runtime_condition_with_branches_of_two_shapes_is_refused() -> None:
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    flat = _const("flat", np.array([-1], np.int64))
    node = helper.make_node(
        "If",
        ["c"],
        ["y"],
        name="guard",
        then_branch=_branch("then", [helper.make_node("Relu", ["x"], ["t"])], "t"),
        else_branch=_branch("else", [flat, helper.make_node("Reshape", ["x", "flat"], ["e"])], "e"),
    )
    graph = helper.make_graph([node], "g", [X, c], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOpError, match=r"If \(node 'guard', opset 17\).*one static"):
        ember.compile(model)
