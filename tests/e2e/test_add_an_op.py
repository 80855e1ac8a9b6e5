"""docs/architecture.md's "How to add an op", followed at test time: a toy op `ToyCube`
(y = x * x * x, domain "ember.toy") registered in the three places an elementwise op needs
(converter, op definition with its numpy semantics, kernel body), then compiled and run; the
op's semantics let the importer fold it on constant inputs with no table to register in.

Oracle: numpy, x ** 3 in float32; tolerance rtol 1e-6 (two float32 multiplies)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects import arith
from xdsl.irdl import irdl_op_definition

import ember
from ember.core.context import make_context
from ember.dialects import graph, numpy_eval
from ember.frontend import registry
from ember.frontend.context import ImportContext, Node, Value, shape_of
from ember.frontend.onnx_importer import import_onnx
from ember.passes.conversion import elementwise_bodies
from ember.passes.pipeline import run_graph_passes


# 2. The op definition (dialects/graph.py) with its numpy semantics (constant folding, the
# reference interpreter): kernels from dialects/numpy_eval.py, or a numpy expression.
@irdl_op_definition
class ToyCubeOp(graph.UnaryElementwiseOp):
    name = "graph.toy_cube"
    evaluate = numpy_eval.elementwise(lambda x: x**3)


def _cube_body(op, args, out, ops):  # 3. the kernel body (elementwise_bodies.py)
    square = arith.MulfOp(args[0], args[0])
    cube = arith.MulfOp(square.result, args[0])
    ops += [square, cube]
    return cube.result


def _toy_cube(imp: ImportContext, node: Node) -> list[Value]:  # 1. the converter (frontend/ops/)
    x = imp.float_input(node)
    return [imp.emit(ToyCubeOp, [x], shape_of(x))]


@pytest.fixture
def toy_cube_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    # What `@converts("ToyCube", domain="ember.toy")` does at import, undone after the test.
    monkeypatch.setitem(
        registry.CONVERTERS, registry.converter_key("ToyCube", "ember.toy"), _toy_cube
    )
    monkeypatch.setitem(elementwise_bodies.BODIES, ToyCubeOp, _cube_body)


def _model(shape: list[int], constant: np.ndarray | None = None):
    """y = ToyCube(x), or with `constant`: y = ToyCube(constant) + x."""
    node = helper.make_node("ToyCube", ["x"], ["y"], name="cube", domain="ember.toy")
    nodes, initializers = [node], []
    if constant is not None:
        node = helper.make_node("ToyCube", ["c"], ["k"], name="cube", domain="ember.toy")
        nodes = [node, helper.make_node("Add", ["k", "x"], ["y"], name="add")]
        initializers = [numpy_helper.from_array(constant, "c")]
    g = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        initializers,
    )
    return helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ember.toy", 1)]
    )


def test_a_toy_op_added_in_three_places_compiles_and_runs(toy_cube_registered: None) -> None:
    x = np.random.default_rng(0).standard_normal((2, 37), dtype=np.float32)
    (y,) = ember.compile(_model([2, 37]))(x)
    np.testing.assert_allclose(y, x * x * x, rtol=1e-6)


def test_without_its_converter_the_toy_op_is_refused() -> None:
    with pytest.raises(ember.UnsupportedOpError, match="ToyCube"):
        ember.compile(_model([2, 3]))


def test_the_toy_op_folds_on_constants_through_its_semantics(toy_cube_registered: None) -> None:
    # fold-constants and the reference interpreter ask the op: no table names ToyCubeOp.
    c = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)
    x = np.random.default_rng(1).standard_normal((2, 3), dtype=np.float32)
    imported = import_onnx(_model([2, 3], constant=c))
    fn = imported.module.body.block.first_op
    assert "graph.toy_cube" in str(imported.module)  # the importer folds shape ops only
    (unfolded,) = numpy_eval.evaluate_function(fn, imported.weights, [x])  # type: ignore[arg-type]
    run_graph_passes(imported.module, make_context(imported.weights))
    assert "graph.toy_cube" not in str(imported.module)
    (folded,) = numpy_eval.evaluate_function(fn, imported.weights, [x])  # type: ignore[arg-type]
    for y in (unfolded, folded):
        np.testing.assert_allclose(y, x + c**3, rtol=1e-6)
