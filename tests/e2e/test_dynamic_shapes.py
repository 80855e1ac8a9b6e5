"""Models with symbolic input dims from Python: pinning with `input_shapes`, and the shape
specialisation `ember.compile` falls back to without pins (one compile per distinct shape)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.engine.compile import compile_program
from ember.engine.specialize import SpecializingModel
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tools.symbolic_zoo import feeds, fixed_reshape_model, symbolic_model

# Float32 MatMul and ReduceSum vs onnxruntime: different summation orders, same math.
REL_TOL = 1e-5


@pytest.fixture(scope="module")
def specializing() -> SpecializingModel:
    # Specialisation itself (the model would compile once: tests/e2e/test_compile_once.py).
    model = ember.compile(symbolic_model(), threads=1, compile_once=False)
    assert isinstance(model, SpecializingModel)
    return model


def test_pinned_compile_is_static_and_matches_onnxruntime() -> None:
    compiled = ember.compile(symbolic_model(), input_shapes={"x": [3, 5]}, threads=1)
    assert isinstance(compiled, ember.CompiledModel)
    # `batch` is pinned through x, so y needs no pin of its own.
    assert {s.name: s.shape for s in compiled.manifest.inputs} == {"x": (3, 5), "y": (3, 6)}
    inputs = feeds(3, 5, seed=1)
    assert_close(compiled.run(inputs), onnxruntime_outputs(symbolic_model(), inputs), REL_TOL)
    with pytest.raises(ember.InputError, match=r"input 'x': expected shape \[3, 5\], given"):
        compiled.run(feeds(2, 5))


def test_specializes_once_per_distinct_shape(specializing: SpecializingModel) -> None:
    assert specializing.input_names == ["x", "y"] and specializing.output_names == ["out"]
    assert specializing.input_dims == {"x": ["batch", "seq"], "y": ["batch", 6]}
    before = specializing.compiles
    for batch, seq in [(1, 3), (4, 7), (1, 3), (4, 7), (2, 3)]:
        inputs = feeds(batch, seq, seed=batch * 10 + seq)
        expected = onnxruntime_outputs(symbolic_model(), inputs)
        assert_close(specializing.run(inputs), expected, REL_TOL)
        (out,) = specializing(inputs["x"], inputs["y"])
        np.testing.assert_array_equal(out, specializing.run(inputs)["out"])
    # The model is batch-separable: one compile per sequence length serves every batch
    # (tests/e2e/test_batch_polymorphic.py).
    assert specializing.compiles - before == 2
    assert {"x": [1, 3], "y": [1, 6]} in specializing.specialized_shapes
    assert specializing.report is not None and specializing.report.arena_bytes >= 0


def test_shared_named_dim_must_agree(specializing: SpecializingModel) -> None:
    inputs = feeds(2, 3)
    inputs["y"] = np.zeros((3, 6), np.float32)
    message = "inputs 'x' and 'y' share dim 'batch' but were given 2 (axis 0 of [2, 3]) and 3"
    with pytest.raises(ember.InputError, match=re.escape(message)):
        specializing.run(inputs)


@pytest.mark.parametrize(
    ("x_shape", "y_shape", "message"),
    [
        ((2, 3), (2, 5), "input 'y': expected shape [batch, 6], given [2, 5]"),
        ((2, 3, 1), (2, 6), "input 'x': expected shape [batch, seq], given [2, 3, 1] (rank 3)"),
    ],
)
def test_shapes_against_declared_dims(
    specializing: SpecializingModel, x_shape: tuple, y_shape: tuple, message: str
) -> None:
    before = specializing.compiles
    with pytest.raises(ember.InputError, match=re.escape(message)):
        specializing.run({"x": np.zeros(x_shape, np.float32), "y": np.zeros(y_shape, np.float32)})
    assert specializing.compiles == before  # refused before compiling


def test_run_checks_names_and_dtypes(specializing: SpecializingModel) -> None:
    with pytest.raises(ember.InputError, match=r"missing \['y'\], unexpected \['z'\]"):
        specializing.run({"x": np.zeros((1, 1), np.float32), "z": np.zeros(1)})
    with pytest.raises(ember.InputError, match="input 'x': expected dtype float32, given float64"):
        specializing.run({"x": np.zeros((1, 1)), "y": np.zeros((1, 6), np.float32)})
    with pytest.raises(ember.InputError, match=r"expected 2 inputs \['x', 'y'\], given 1"):
        specializing(np.zeros((1, 1), np.float32))


def test_partial_pins_specialise_the_rest() -> None:
    model = ember.compile(symbolic_model(), input_shapes={"y": [2, 6]}, threads=1)
    assert isinstance(model, SpecializingModel)
    assert model.input_dims == {"x": [2, "seq"], "y": [2, 6]}
    inputs = feeds(2, 9, seed=3)
    assert_close(model.run(inputs), onnxruntime_outputs(symbolic_model(), inputs), REL_TOL)
    message = "input 'x': expected shape [batch, seq], given [3, 9]: dim 'batch' (axis 0) is pinned"
    with pytest.raises(ember.InputError, match=re.escape(message)):
        # batch 3 would be a fine shape for the model, but y's pin fixed batch at 2.
        model.run(feeds(3, 9))


def test_shapes_the_graph_cannot_take_are_refused_with_the_compile_error() -> None:
    model = ember.compile(fixed_reshape_model(), threads=1)
    assert isinstance(model, SpecializingModel)
    x = np.random.default_rng(4).standard_normal((2, 6)).astype(np.float32)
    np.testing.assert_array_equal(model(x)[0], np.maximum(x.reshape(4, 3), 0))
    for _ in range(2):  # the failure is remembered: a repeat does not compile again
        with pytest.raises(ember.InputError) as info:
            model(np.zeros((3, 6), np.float32))
        assert "does not compile for input shapes {'x': [3, 6]}" in str(info.value)
        assert "Reshape" in str(info.value)
        assert isinstance(info.value.__cause__, ember.ModelError)
    assert model.compiles == 2


@pytest.mark.parametrize(
    ("input_shapes", "message"),
    [
        ({"z": [1, 2]}, "input_shapes names 'z', which is not an input of the model; its inputs: "),
        ({"x": [2]}, "input_shapes['x'] = [2] has rank 1, but input 'x' declared [batch, seq]"),
        ({"y": [2, 5]}, "input_shapes['y'] = [2, 5] contradicts input 'y' declared [batch, 6]: "),
        (
            {"x": [-1, 3]},
            "input_shapes['x'] = [-1, 3]: sizes must not be negative (input 'x' declared",
        ),
        (
            {"x": [2, 3], "y": [5, 6]},
            "input_shapes['y'] = [5, 6] pins dim 'batch' to 5 at axis 0, but input_shapes['x'] "
            "pins it to 2",
        ),
        ({"x": [2.5, 3]}, "the shape given for input 'x', [2.5, 3], is not a list of integer"),
    ],
)
def test_bad_pins_are_model_errors_naming_input_and_shapes(
    input_shapes: dict, message: str
) -> None:
    with pytest.raises(ember.ModelError, match=re.escape(message)):
        ember.compile(symbolic_model(), input_shapes=input_shapes)


def test_unpinned_refusal_names_the_dims_and_how_to_pin() -> None:
    with pytest.raises(ember.ModelError) as info:
        compile_program(symbolic_model())
    text = str(info.value)
    assert "'x' [batch, seq] ('batch' at axis 0, 'seq' at axis 1)" in text
    assert "'y' [batch, 6] ('batch' at axis 0)" in text
    # y's only symbolic dim is pinned through x, so the examples pin x alone.
    assert "ember.compile(model, input_shapes={'x': [1, 1]})" in text
    assert "Config.set_input_shape('x', [1, 1])" in text
    assert "--input-shape x=1x1 " in text


def test_static_models_take_matching_pins_only() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "static",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert isinstance(ember.compile(model, input_shapes={"x": [2, 3]}), ember.CompiledModel)
    with pytest.raises(ember.ModelError, match=r"axis 0 is fixed at 2"):
        ember.compile(model, input_shapes={"x": [4, 3]})


def _with_symbolic_dims(model: onnx.ModelProto, dims: dict[str, list[str | int]]) -> None:
    """Declare graph inputs with these dims (names for symbolic ones), as exporters write them;
    outputs get unknown dims."""
    for info in model.graph.input:
        if info.name in dims:
            shape = info.type.tensor_type.shape
            del shape.dim[:]
            for d in dims[info.name]:
                if isinstance(d, str):
                    shape.dim.add().dim_param = d
                else:
                    shape.dim.add().dim_value = d
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")


def test_convnet_with_a_symbolic_batch_matches_onnxruntime_per_batch() -> None:
    from ember.tests.runtime.util import small_convnet

    model = small_convnet()
    _with_symbolic_dims(model, {"x": ["N", 8, 10, 10]})
    specializing = ember.compile(model, threads=1)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 8, 10, 10)).astype(np.float32)
        expected = onnxruntime_outputs(model, {"x": x})
        # Conv + Gemm in float32: summation order differs from onnxruntime's.
        assert_close(specializing.run({"x": x}), expected, rel=1e-4)
    assert specializing.compiles == 1  # batch-polymorphic: one program at batch 1


def test_bert_with_batch_baked_into_a_reshape_refuses_other_batches() -> None:
    from ember.tools.model_zoo import bert_encoder

    model = bert_encoder(layers=1)
    _with_symbolic_dims(model, {"input_ids": ["batch", "seq"]})
    specializing = ember.compile(model, threads=1)
    ids = np.random.default_rng(0).integers(0, 100, (1, 16)).astype(np.int64)
    expected = onnxruntime_outputs(model, {"input_ids": ids})
    assert_close(specializing.run({"input_ids": ids}), expected, rel=1e-4)
    # The exporter wrote Reshape(ctx, [1, 16, 64]): batch 2 cannot run (onnxruntime fails too).
    with pytest.raises(ember.InputError) as info:
        specializing.run({"input_ids": np.zeros((2, 16), np.int64)})
    assert "does not compile for input shapes {'input_ids': [2, 16]}" in str(info.value)


def test_empty_inputs_run_like_any_other_shape(specializing: SpecializingModel) -> None:
    # An empty batch gives an empty output; an empty `seq` sums nothing (ReduceSum gives 0),
    # so the output is Relu(y @ W): each compiles as a variant like any other shape.
    for batch, seq in [(0, 3), (2, 0)]:
        inputs = feeds(batch, seq, seed=5)
        expected = onnxruntime_outputs(symbolic_model(), inputs)
        assert_close(specializing.run(inputs), expected, REL_TOL)
        assert specializing.run(inputs)["out"].shape == (batch, 4)


def test_what_no_shape_fixes_fails_at_compile_not_at_the_first_run() -> None:
    # A map input (sequences and optionals of tensors are compiled per structure instead).
    mapping = helper.make_value_info(
        "s",
        helper.make_map_type_proto(
            TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, ["N"])
        ),
    )
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "with_a_map_input",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"]), mapping],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ember.ModelError, match="graph input 's' is not a tensor"):
        ember.compile(model)
