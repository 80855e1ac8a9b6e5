"""verify-each: with it on (the tests' default, EMBER_VERIFY_EACH=1) a pass that leaves invalid
IR is named at once by an InternalCompilerError, instead of failing later in another stage."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

import ember.passes.pipeline as pipeline_module
from ember.engine.compile import compile_program
from ember.passes.pipeline import DEFAULT_PIPELINE
from ember.runtime.errors import InternalCompilerError
from ember.tests.tools.test_opt import BreakShapes


def _relu_model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def with_break_shapes(monkeypatch: pytest.MonkeyPatch) -> str:
    passes = pipeline_module.available_passes()
    monkeypatch.setattr(
        pipeline_module,
        "available_passes",
        lambda: {**passes, BreakShapes.name: lambda: BreakShapes},
    )
    return f"break-shapes,{DEFAULT_PIPELINE}"


def test_verify_each_names_the_pass_that_broke_the_ir(with_break_shapes: str) -> None:
    with pytest.raises(InternalCompilerError, match="after pass 'break-shapes'"):
        compile_program(_relu_model(), pipeline=with_break_shapes, verify_each=True)


def test_the_tests_verify_after_every_pass_by_default(with_break_shapes: str) -> None:
    with pytest.raises(InternalCompilerError, match="after pass 'break-shapes'"):
        compile_program(_relu_model(), pipeline=with_break_shapes)
