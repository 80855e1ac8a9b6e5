"""Dynamic models through `ember.compile` (issue 10): the three model shapes of the issue built
with symbolic dims, compiled once (a SpecializingModel) and compared with onnxruntime at several
shapes, sizes that are no multiple of the vector width included; shape operands fed as runtime
inputs (value specialisation); ranges and shared-dim checks."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.engine.specialize import (
    MAX_VALUE_ELEMENTS,
    SpecializationCache,
    SpecializationWarning,
    SpecializingModel,
)
from ember.runtime.errors import RuntimeOperandError
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tools.symbolic_zoo import (
    VOCAB,
    bert_encoder_model,
    feeds,
    recognizer_model,
    symbolic_model,
    text_detector_model,
)

# Float32 convolutions, matmuls and softmax vs onnxruntime: different summation orders.
REL_TOL = 1e-4


def _check_shapes(
    model: onnx.ModelProto, inputs_of_shape: list[dict[str, np.ndarray]], once: bool = False
) -> None:
    """Matches onnxruntime at every shape; compiled once (`once`: engine/compile_once.py) or
    once per shape."""
    compiled = ember.compile(model, threads=1)
    assert isinstance(compiled, SpecializingModel)
    for inputs in inputs_of_shape:
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    assert compiled.compiled_once == once, compiled.compile_once_refusal
    shapes = len({tuple(a.shape for a in i.values()) for i in inputs_of_shape})
    assert compiled.compiles == (1 if once else shapes)


def test_text_detector_matches_onnxruntime_at_every_shape() -> None:
    rng = np.random.default_rng(10)
    shapes = [(1, 16, 16), (2, 20, 28), (1, 33, 17), (1, 9, 40), (3, 13, 7)]
    _check_shapes(
        text_detector_model(),
        [{"x": rng.standard_normal((n, 3, h, w)).astype(np.float32)} for n, h, w in shapes],
    )


def test_bert_encoder_matches_onnxruntime_at_every_shape() -> None:
    rng = np.random.default_rng(11)
    inputs = []
    for batch, seq in [(1, 5), (2, 7), (1, 16), (3, 33), (2, 64)]:
        mask = np.ones((batch, seq), np.int64)
        mask[:, seq - seq // 3 :] = 0  # padded tail
        ids = rng.integers(0, VOCAB, (batch, seq), dtype=np.int64)
        inputs.append({"input_ids": ids, "attention_mask": mask})
    _check_shapes(bert_encoder_model(), inputs, once=True)


def test_recognizer_matches_onnxruntime_at_every_width() -> None:
    rng = np.random.default_rng(12)
    shapes = [(1, 16), (2, 24), (1, 37), (1, 9), (3, 100)]
    _check_shapes(
        recognizer_model(),
        [{"x": rng.standard_normal((n, 1, 32, w)).astype(np.float32)} for n, w in shapes],
        once=True,
    )


# -- shape operands given at run time: one variant per distinct value --------------------------


def _one_node(
    op: str, inputs: list[tuple[str, int, list]], *output_types: int, **attrs: object
) -> onnx.ModelProto:
    outputs = [f"y{i}" for i in range(len(output_types))]
    node = helper.make_node(op, [name for name, _, _ in inputs], outputs, **attrs)
    graph = helper.make_graph(
        [node],
        op.lower(),
        [helper.make_tensor_value_info(n, t, dims) for n, t, dims in inputs],
        [helper.make_tensor_value_info(o, t, None) for o, t in zip(outputs, output_types)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


F, I64 = TensorProto.FLOAT, TensorProto.INT64
X = np.random.default_rng(13).standard_normal((4, 6)).astype(np.float32)
IMAGE = np.random.default_rng(14).standard_normal((1, 2, 3, 5)).astype(np.float32)

SHAPE_OPERAND_CASES = {
    "reshape_shape": (
        _one_node("Reshape", [("x", F, [4, 6]), ("shape", I64, [2])], F),
        [{"x": X, "shape": np.array(s, np.int64)} for s in ([3, 8], [-1, 2], [24, 1], [3, 8])],
    ),
    "slice_starts": (
        _one_node(
            "Slice",
            [("x", F, [4, 6]), ("starts", I64, [1]), ("ends", I64, [1]), ("axes", I64, [1])],
            F,
        ),
        [
            {
                "x": X,
                "starts": np.array([s], np.int64),
                "ends": np.array([5], np.int64),
                "axes": np.array([a], np.int64),
            }
            for s, a in ((0, 1), (2, 1), (-3, 0), (1, 0))
        ],
    ),  # fmt: skip
    "reduce_axes": (  # axes=[] (all axes): an empty integer operand is a constant too
        _one_node("ReduceSum", [("x", F, [4, 6]), ("axes", I64, ["n"])], F, keepdims=0),
        [{"x": X, "axes": np.array(a, np.int64)} for a in ([1], [], [0, 1], [-2])],
    ),
    "topk_k": (
        _one_node("TopK", [("x", F, [4, 6]), ("k", I64, [1])], F, I64, axis=1),
        [{"x": X, "k": np.array([k], np.int64)} for k in (1, 3, 6)],
    ),
    "resize_sizes": (
        _one_node(
            "Resize",
            [("x", F, [1, 2, 3, 5]), ("", F, []), ("", F, []), ("sizes", I64, [4])],
            F,
            mode="nearest",
        ),
        [
            {"x": IMAGE, "sizes": np.array(s, np.int64)}
            for s in ([1, 2, 6, 10], [1, 2, 5, 7], [1, 2, 2, 3])
        ],
    ),  # fmt: skip
    "range_bounds": (
        _one_node("Range", [("start", I64, []), ("limit", I64, []), ("delta", I64, [])], I64),
        [
            {
                "start": np.array(a, np.int64),
                "limit": np.array(b, np.int64),
                "delta": np.array(c, np.int64),
            }
            for a, b, c in ((0, 5, 1), (3, 20, 4), (10, 1, -3))
        ],
    ),  # fmt: skip
}


def _without_empty_names(model: onnx.ModelProto) -> onnx.ModelProto:
    # Resize's skipped roi/scales are "" in the node, never graph inputs.
    inputs = [i for i in model.graph.input if i.name]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return model


@pytest.mark.parametrize("case", sorted(SHAPE_OPERAND_CASES))
def test_shape_operands_given_at_run_time_match_onnxruntime(case: str) -> None:
    model, runs = SHAPE_OPERAND_CASES[case]
    model = _without_empty_names(model)
    compiled = ember.compile(model, threads=1)
    assert isinstance(compiled, SpecializingModel)
    for index, inputs in enumerate(runs):
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), 1e-6)
        if index == 0:
            # The first run also learns which inputs are operands (one refused compile per
            # input the importer names); each further distinct value compiles once.
            learnt = compiled.compiles
    assert compiled.value_inputs  # the operands that selected the variants
    distinct = {tuple(v.tobytes() for v in i.values()) for i in runs}
    assert compiled.compiles - learnt == len(distinct) - 1  # a repeated value compiles nothing


def test_the_importer_names_the_inputs_a_shape_operand_is_computed_from() -> None:
    # shape = s + one: the operand is computed from graph input 's', not 'x'.
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["s", "one"], ["s2"]),
            helper.make_node("Reshape", ["x", "s2"], ["y"]),
        ],
        "computed_shape",
        [
            helper.make_tensor_value_info("x", F, [2, 6]),
            helper.make_tensor_value_info("s", I64, [2]),
        ],
        [helper.make_tensor_value_info("y", F, None)],
        [onnx.numpy_helper.from_array(np.zeros(2, np.int64), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    from ember.frontend.onnx_importer import import_model

    with pytest.raises(RuntimeOperandError, match="computed from graph input.s. 's'") as info:
        import_model(model)
    assert info.value.inputs == ("s",) and info.value.op_type == "Reshape"
    compiled = ember.compile(model, threads=1)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    assert compiled.run({"x": x, "s": np.array([3, 4], np.int64)})["y"].shape == (3, 4)
    with pytest.raises(ember.InputError, match=r"input values \{'s': \[5, 4\]\}.*cannot reshape"):
        compiled.run({"x": x, "s": np.array([5, 4], np.int64)})


def test_a_shape_operand_from_a_large_input_is_refused_with_the_reason() -> None:
    # ReduceMax(x) as a Range bound: the value depends on every element of x.
    size = MAX_VALUE_ELEMENTS + 1
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
            helper.make_node("Range", ["zero", "m", "one"], ["y"]),
        ],
        "data_dependent",
        [helper.make_tensor_value_info("x", I64, [size])],
        [helper.make_tensor_value_info("y", I64, None)],
        [
            onnx.numpy_helper.from_array(np.array(0, np.int64), "zero"),
            onnx.numpy_helper.from_array(np.array(1, np.int64), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    message = f"graph input 'x', whose values ember cannot specialise on \\(it has {size} elements"
    with pytest.raises(ember.UnsupportedOpError, match=message):
        ember.compile(model, threads=1)


def test_a_thrashing_cache_warns_once() -> None:
    cache: SpecializationCache[str] = SpecializationCache(lambda shapes: "compiled", capacity=1)
    a, b = (("x", (1,)),), (("x", (2,)),)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.get(a)
        cache.get(b)  # drops a: no warning yet
    with pytest.warns(SpecializationWarning, match=r"dropped from the cache of 1 compiled"):
        cache.get(a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.get(b)  # thrashing again, but said once


# -- ranges and shared dims: refused before anything compiles or runs ---------------------------


def test_dim_ranges_refuse_sizes_outside_them_before_compiling() -> None:
    model = ember.compile(symbolic_model(), threads=1, dynamic_dims={"batch": (1, 4)})
    assert isinstance(model, SpecializingModel) and model.dim_ranges == {"batch": (1, 4)}
    message = "input 'x' given [5, 3]: dim 'batch' is 5, outside its range 1..4"
    with pytest.raises(ember.InputError, match=re.escape(message)):
        model.run(feeds(5, 3))
    inputs = feeds(2, 3)
    inputs["y"] = np.zeros((3, 6), np.float32)
    with pytest.raises(ember.InputError, match="share dim 'batch' but were given 2"):
        model.run(inputs)
    with pytest.raises(ember.InputError, match=r"given \[2\] \(rank 1\)"):
        model.run({"x": np.zeros(2, np.float32), "y": np.zeros((2, 6), np.float32)})
    assert model.compiles == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dynamic_dims": {"bogus": (1, 2)}}, "names dim 'bogus', which no input"),
        ({"dynamic_dims": {"batch": (3, 2)}}, r"0 <= smallest <= largest"),
        (
            {"dynamic_dims": {"batch": (1, 4)}, "input_shapes": {"x": [9, 3]}},
            r"input_shapes\['x'\] = \[9, 3\] \(axis 0\): dim 'batch' is 9, outside its range",
        ),
    ],
)
def test_bad_ranges_and_pins_outside_them_are_model_errors(options: dict, message: str) -> None:
    with pytest.raises(ember.ModelError, match=message):
        ember.compile(symbolic_model(), threads=1, **options)


def test_config_dim_ranges_check_pins_and_arrays(tmp_path: Path) -> None:
    onnx.save(symbolic_model(), tmp_path / "model.onnx")
    config = ember.Config(str(tmp_path / "model.onnx"))
    config.set_cache_dir(tmp_path / "cache")
    config.set_dim_range("batch", 1, 4)
    config.set_input_shape("x", [7, 3])
    with pytest.raises(ember.ModelError, match=r"dim 'batch' is 7, outside its range 1\.\.4"):
        ember.create_predictor(config)
    config.set_input_shape("x", [2, 3])
    predictor = ember.create_predictor(config)
    with pytest.raises(ember.InputError, match=r"input 'x' given \[5, 3\]: dim 'batch' is 5"):
        predictor.get_input_handle("x").copy_from_cpu(np.zeros((5, 3), np.float32))


def test_cli_dim_ranges_refuse_pins_outside_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ember.tools import cli

    onnx.save(symbolic_model(), tmp_path / "model.onnx")
    argv = ["run", str(tmp_path / "model.onnx"), "--random-inputs", "--dim", "batch=1:4"]
    assert cli.main([*argv, "--input-shape", "x=9x3"]) == 1
    assert "dim 'batch' is 9, outside its range 1..4" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a usage error
        cli.main([*argv, "--dim", "batch=2:3"])
    assert "--dim gives dim 'batch' twice" in capsys.readouterr().err
