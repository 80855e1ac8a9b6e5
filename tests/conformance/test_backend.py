"""EmberBackend: ONNX's backend interface over ember.compile (checked against numpy)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ember.engine.onnx_backend import EmberBackend, UnsupportedOpsError, node_model


def _model(
    nodes: list[onnx.NodeProto], inputs: dict[str, list[int]], outputs: dict[str, list[int]]
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_prepare_and_run_positional_and_by_name() -> None:
    model = _model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "b"], ["y"])],
        {"x": [2, 3, 8], "b": [8]},
        {"y": [2, 3, 8], "r": [2, 3, 8]},
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8), dtype=np.float32)
    b = rng.standard_normal(8, dtype=np.float32)
    rep = EmberBackend.prepare(model)
    y, r = rep.run([x, b])
    np.testing.assert_array_equal(r, np.maximum(x, 0))  # exact: relu is a select
    np.testing.assert_allclose(y, np.maximum(x, 0) + b, rtol=0, atol=0)
    y2, _ = rep.run({"b": b, "x": x})
    np.testing.assert_array_equal(y2, y)
    with pytest.raises(ValueError, match="takes 2 input"):
        rep.run([x])


def test_run_node_types_the_model_after_its_inputs() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 16), dtype=np.float32)
    b = rng.standard_normal((1, 16), dtype=np.float32)
    (y,) = EmberBackend.run_node(helper.make_node("Mul", ["a", "b"], ["y"]), [a, b])
    np.testing.assert_allclose(y, a * b, rtol=1e-6, atol=0)
    model = node_model(helper.make_node("Mul", ["a", "b"], ["y"]), [a, b], None, 13)
    assert [d.dim_value for d in model.graph.input[1].type.tensor_type.shape.dim] == [1, 16]
    assert model.opset_import[0].version == 13


def test_unsupported_ops_fail_at_prepare_naming_every_op() -> None:
    model = _model(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("StringNormalizer", ["r"], ["s"], name="norm"),
            helper.make_node("RegexFullMatch", ["s"], ["y"], name="match"),
        ],
        {"x": [4]},
        {"y": [4]},
    )
    with pytest.raises(UnsupportedOpsError) as info:
        EmberBackend.prepare(model)
    assert info.value.op_types == ["StringNormalizer", "RegexFullMatch"]
    assert "'norm'" in str(info.value) and "'match'" in str(info.value)


def test_supports_only_the_cpu() -> None:
    assert EmberBackend.supports_device("CPU")
    assert not EmberBackend.supports_device("CUDA")
    with pytest.raises(ValueError, match="CPU only"):
        EmberBackend.prepare(
            _model([helper.make_node("Relu", ["x"], ["y"])], {"x": [4]}, {"y": [4]}), "CUDA"
        )


@pytest.mark.slow
def test_onnx_runner_drives_the_backend() -> None:
    """ONNX's own BackendTest runs cases through EmberBackend (collecting them takes ~30 s)."""
    import unittest

    from onnx.backend.test import BackendTest

    backend_test = BackendTest(EmberBackend, __name__)
    backend_test.include(r"^test_(relu|gemm_default_no_bias|softmax_axis_0)_cpu$")
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(backend_test.tests)
    result = unittest.TextTestRunner(verbosity=0).run(suite)
    assert result.testsRun - len(result.skipped) == 3
    assert result.wasSuccessful(), result.failures + result.errors
