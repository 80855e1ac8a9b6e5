"""Declared graph-output shapes are the exporter's claim: -1, stale sizes and missing shapes
compile with the computed shape (a warning where they disagree), as onnxruntime runs them."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.frontend.onnx_importer import DeclaredShapeWarning
from ember.tests.oracle import onnxruntime_outputs


def _relu_model(declared: list[int | str] | None) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, declared)
    # A stale value_info for the intermediate, as exporters leave after graph surgery.
    stale = helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 1])
    nodes = [helper.make_node("Neg", ["x"], ["t"]), helper.make_node("Relu", ["t"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], value_info=[stale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize(
    ("declared", "warns"),
    [([-1, 8], False), (["N", 8], False), (None, False), ([3, 8], True), ([4, 8, 1], True)],
)
def test_declared_output_shape_is_not_trusted(declared: list | None, warns: bool) -> None:
    model = _relu_model(declared)
    before = model.SerializeToString()
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = ember.compile(model)
    messages = [str(w.message) for w in caught if issubclass(w.category, DeclaredShapeWarning)]
    assert bool(messages) == warns, messages
    if warns:
        assert "graph output 'y'" in messages[0] and "[4, 8]" in messages[0]
    np.testing.assert_array_equal(
        compiled.run({"x": x})["y"], onnxruntime_outputs(model, {"x": x})["y"]
    )
    assert model.SerializeToString() == before  # the caller's proto is left as it was
