"""The Python API's contract: names, positional calls, clear errors for bad input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.passes.pipeline import KERNEL_STAGE, LOOPS_STAGE


def _small_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 37])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 37])
    scale = onnx.numpy_helper.from_array(np.linspace(-1, 1, 37).astype(np.float32), "s")
    nodes = [
        helper.make_node("Mul", ["x", "s"], ["m"]),
        helper.make_node("Relu", ["m"], ["r"]),
        helper.make_node("Softmax", ["r"], ["y"], axis=1),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], [scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def compiled() -> ember.CompiledModel:
    return ember.compile(_small_model(), threads=1)


def _reference(x: np.ndarray) -> np.ndarray:
    r = np.maximum(x * np.linspace(-1, 1, 37).astype(np.float32), 0)
    e = np.exp(r - r.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_run_and_call_agree_with_numpy(compiled: ember.CompiledModel) -> None:
    x = np.random.default_rng(0).standard_normal((2, 37)).astype(np.float32)
    assert compiled.input_names == ["x"] and compiled.output_names == ["y"]
    (y,) = compiled(x)
    np.testing.assert_allclose(compiled.run({"x": x})["y"], y)
    np.testing.assert_allclose(y, _reference(x), rtol=1e-5, atol=1e-7)


def test_minimal_pipeline_gives_the_same_answer() -> None:
    x = np.random.default_rng(1).standard_normal((2, 37)).astype(np.float32)
    minimal = ember.compile(_small_model(), pipeline=f"{KERNEL_STAGE},{LOOPS_STAGE}")
    np.testing.assert_allclose(minimal(x)[0], _reference(x), rtol=1e-5, atol=1e-7)


def test_wrong_shape_names_input_and_both_shapes(compiled: ember.CompiledModel) -> None:
    with pytest.raises(ValueError, match=r"input 'x': expected shape \[2, 37\], given \[2, 36\]"):
        compiled.run({"x": np.zeros((2, 36), np.float32)})


def test_wrong_dtype_names_input_and_both_dtypes(compiled: ember.CompiledModel) -> None:
    with pytest.raises(ValueError, match="input 'x': expected dtype float32, given float64"):
        compiled.run({"x": np.zeros((2, 37))})


def test_missing_and_extra_inputs_are_named(compiled: ember.CompiledModel) -> None:
    with pytest.raises(ValueError, match=r"missing \['x'\], unexpected \['z'\]"):
        compiled.run({"z": np.zeros((2, 37), np.float32)})
    with pytest.raises(ValueError, match="expected 1 inputs"):
        compiled()


def test_non_contiguous_input_is_accepted(compiled: ember.CompiledModel) -> None:
    x = np.random.default_rng(2).standard_normal((37, 2)).astype(np.float32).T
    np.testing.assert_allclose(compiled(x)[0], _reference(x), rtol=1e-5, atol=1e-7)


def test_unsupported_op_is_named_before_codegen() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    node = helper.make_node("RandomNormalLike", ["x"], ["y"], name="the_rng")  # ember lacks it
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    with pytest.raises(ValueError, match=r"RandomNormalLike.*the_rng.*17"):
        ember.compile(model)


def test_corrupt_model_file_is_rejected(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "broken.onnx"
    path.write_bytes(_small_model().SerializeToString()[:-20])
    with pytest.raises(ValueError):
        ember.compile(str(path))
