"""Sequences and optionals (frontend/ops/sequence.py, engine/structured.py): each op against
onnxruntime and onnx.reference on seeded inputs (exact: the ops only move data, and the
element ops here are exact in float32), sequence/optional graph inputs and outputs from
Python, torch's exported split -> loop -> cat pattern, and the refusals."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.engine.compile import compile_program
from ember.runtime.errors import InputError, ModelError, ResourceLimitError, UnsupportedOpError
from ember.tests.oracle import onnxruntime_outputs
from ember.tools.conformance.runner import assert_similar_outputs

DOCS = Path(__file__).resolve().parents[2] / "docs" / "engine_api.md"
F = TensorProto.FLOAT
SEQ_F = helper.make_sequence_type_proto(helper.make_tensor_type_proto(F, None))


def _tensor(name: str, shape: list[Any] | None = None, elem: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _seq(name: str, elem: int = F) -> onnx.ValueInfoProto:
    return helper.make_value_info(
        name, helper.make_sequence_type_proto(helper.make_tensor_type_proto(elem, None))
    )


def _model(nodes, inputs, outputs, inits=(), opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _int(name: str, value: Any) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, np.int64), name)


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _same(got: Any, ref: Any) -> None:
    if isinstance(ref, list):
        assert isinstance(got, list) and len(got) == len(ref)
        for g, r in zip(got, ref):
            _same(g, r)
    elif ref is None:
        assert got is None
    else:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
        assert np.asarray(got).dtype == np.asarray(ref).dtype


def _check(model: onnx.ModelProto, feeds: dict[str, Any], oracles=("ort", "ref")) -> dict:
    got = ember.compile(model).run(feeds)
    names = [o.name for o in model.graph.output]
    if "ort" in oracles:
        ort = onnxruntime_outputs(model, feeds)
        for name in names:
            _same(got[name], ort[name])
    if "ref" in oracles:
        ref = dict(zip(names, ReferenceEvaluator(model).run(None, feeds)))
        for name in names:
            _same(got[name], ref[name])
    return got


def _three(x: str = "x") -> list[onnx.NodeProto]:
    """seq = [x, 2x, 3x] (three distinct tensors of x's shape)."""
    return [
        helper.make_node("Add", [x, x], ["x2"]),
        helper.make_node("Add", ["x2", x], ["x3"]),
        helper.make_node("SequenceConstruct", [x, "x2", "x3"], ["seq"]),
    ]


@pytest.mark.parametrize("position", [0, 2, -1, -3])
def test_sequence_at_and_length(position: int) -> None:
    nodes = [
        *_three(),
        helper.make_node("SequenceAt", ["seq", "p"], ["y"]),
        helper.make_node("SequenceLength", ["seq"], ["n"]),
    ]
    model = _model(
        nodes, [_tensor("x", [2, 3])], [_tensor("y"), _tensor("n", elem=7)], [_int("p", position)]
    )
    _check(model, {"x": _rand(2, 3)})


@pytest.mark.parametrize("position", [None, 0, 3, -1])
def test_sequence_insert_and_erase(position: int | None) -> None:
    inits = [] if position is None else [_int("p", position)]
    pos = [] if position is None else ["p"]
    nodes = [
        *_three(),
        helper.make_node("Neg", ["x"], ["t"]),
        helper.make_node("SequenceInsert", ["seq", "t", *pos], ["inserted"]),
        helper.make_node("SequenceErase", ["seq", *(["q"] if position else [])], ["erased"]),
    ]
    inits += [_int("q", -(position or 1) % 3)] if position else []
    model = _model(nodes, [_tensor("x", [4])], [_seq("inserted"), _seq("erased")], inits)
    # onnx.reference inserts at position len(seq) (append, by the spec) at the front instead:
    # `(position + len) % len`; onnxruntime appends.
    oracles = ("ort",) if position == 3 else ("ort", "ref")
    got = _check(model, {"x": _rand(4)}, oracles)
    assert len(got["inserted"]) == 4 and len(got["erased"]) == 2
    if position == 3:
        np.testing.assert_array_equal(got["inserted"][3], -got["inserted"][0])


@pytest.mark.parametrize(
    ("split", "keepdims", "axis"),
    [(None, 1, 1), (None, 0, 1), (None, 0, -1), (np.array(4), 1, 1), (np.array([1, 0, 9]), 0, 1)],
)
def test_split_to_sequence(split: np.ndarray | None, keepdims: int, axis: int) -> None:
    inputs = ["x"] if split is None else ["x", "split"]
    inits = [] if split is None else [numpy_helper.from_array(split.astype(np.int64), "split")]
    node = helper.make_node("SplitToSequence", inputs, ["seq"], axis=axis, keepdims=keepdims)
    model = _model([node], [_tensor("x", [2, 10])], [_seq("seq")], inits)
    _check(model, {"x": _rand(2, 10)})


@pytest.mark.parametrize(("axis", "new_axis"), [(0, 0), (1, 0), (-1, 0), (0, 1), (2, 1), (-1, 1)])
def test_concat_from_sequence(axis: int, new_axis: int) -> None:
    nodes = [
        *_three(),
        helper.make_node("ConcatFromSequence", ["seq"], ["y"], axis=axis, new_axis=new_axis),
    ]
    _check(_model(nodes, [_tensor("x", [2, 3])], [_tensor("y")]), {"x": _rand(2, 3)})


def test_concat_from_sequence_of_empty_pieces() -> None:
    """Pieces empty along the axis (a split of sizes 0 and 0) concatenate to an empty tensor."""
    nodes = [
        helper.make_node("Slice", ["x", "zero", "zero", "one"], ["none"]),
        helper.make_node("SequenceConstruct", ["none", "none"], ["seq"]),
        helper.make_node("ConcatFromSequence", ["seq"], ["y"], axis=1),
        helper.make_node("Add", ["x", "x"], ["z"]),
    ]
    inits = [_int("zero", [0]), _int("one", [1])]
    model = _model(nodes, [_tensor("x", [2, 3])], [_tensor("y"), _tensor("z")], inits)
    _check(model, {"x": _rand(2, 3)})


def test_sequence_map_one_and_several_inputs() -> None:
    relu = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["b"])], "relu", [_tensor("a")], [_tensor("b")]
    )
    add = helper.make_graph(
        [
            helper.make_node("Add", ["a", "c"], ["s"]),
            helper.make_node("Mul", ["a", "d"], ["m"]),
            helper.make_node("Shape", ["a"], ["shape"]),
        ],
        "add",
        [_tensor("a"), _tensor("c"), _tensor("d")],
        [_tensor("s"), _tensor("m"), _tensor("shape", elem=7)],
    )
    nodes = [
        helper.make_node("SplitToSequence", ["x", "two"], ["parts"], axis=1),
        helper.make_node("SequenceMap", ["parts"], ["relus"], body=relu),
        helper.make_node("SequenceMap", ["relus", "w", "parts"], ["s", "m", "shapes"], body=add),
    ]
    outputs = [_seq("relus"), _seq("s"), _seq("m"), _seq("shapes", elem=7)]
    model = _model(nodes, [_tensor("x", [3, 5]), _tensor("w", [3, 1])], outputs, [_int("two", 2)])
    # onnx.reference's SequenceMap takes no tensor beside the sequences (a TypeError).
    got = _check(model, {"x": _rand(3, 5), "w": _rand(3, 1, seed=1)}, oracles=("ort",))
    assert [list(s) for s in got["shapes"]] == [[3, 2], [3, 2], [3, 1]]


@pytest.mark.parametrize("present", [True, False])
def test_optional_with_and_without_element(present: bool) -> None:
    nodes = [
        helper.make_node(
            "Optional", ["x"] if present else [], ["opt"], type=SEQ_F.sequence_type.elem_type
        )
        if not present
        else helper.make_node("Optional", ["x"], ["opt"]),
        helper.make_node("OptionalHasElement", ["opt"], ["has"]),
        helper.make_node("Identity", ["opt"], ["same"]),
    ]
    opt_type = helper.make_optional_type_proto(helper.make_tensor_type_proto(F, None))
    outputs = [_tensor("has", elem=TensorProto.BOOL), helper.make_value_info("same", opt_type)]
    if present:
        nodes.append(helper.make_node("OptionalGetElement", ["opt"], ["y"]))
        outputs.append(_tensor("y"))
    model = _model(nodes, [_tensor("x", [3])], outputs)
    # onnxruntime gives an empty optional output as None too, onnx.reference differently.
    got = _check(model, {"x": _rand(3)}, oracles=("ort",))
    assert bool(got["has"]) is present and (got["same"] is None) is not present


def test_sequence_and_optional_graph_inputs_are_compiled_per_structure() -> None:
    """A list in, a list out; None for an empty optional; one compile per structure."""
    opt = helper.make_value_info(
        "o", helper.make_optional_type_proto(helper.make_tensor_type_proto(F, [3]))
    )
    nodes = [
        helper.make_node("SequenceInsert", ["s", "t"], ["longer"]),
        helper.make_node("ConcatFromSequence", ["longer"], ["cat"], axis=0),
        helper.make_node("OptionalHasElement", ["o"], ["has"]),
    ]
    outputs = [_seq("longer"), _tensor("cat"), _tensor("has", elem=TensorProto.BOOL)]
    model = _model(nodes, [_seq("s"), _tensor("t", [1, 3]), opt], outputs)
    compiled = ember.compile(model)
    assert compiled.input_names == ["s", "t", "o"]
    assert compiled.output_names == ["longer", "cat", "has"]
    t = _rand(1, 3, seed=2)
    for length, o in [(2, None), (3, _rand(3)), (2, None), (0, _rand(3))]:
        s = [_rand(length - k, 3, seed=k) for k in range(length)]
        feeds = {"s": s, "t": t, "o": o}
        got = compiled.run(feeds)
        ref = onnxruntime_outputs(model, feeds)
        for name in ("longer", "cat", "has"):
            _same(got[name], ref[name])
    assert compiled.compiles == 3  # (2, None) ran twice
    with pytest.raises(InputError, match="input 's' is a sequence: give a list"):
        compiled.run({"s": _rand(3), "t": t, "o": None})
    with pytest.raises(InputError, match="element 0 must have dtype float32"):
        compiled.run({"s": [np.zeros(3, np.int64)], "t": t, "o": None})


def test_runtime_position_is_compiled_per_value() -> None:
    nodes = [*_three(), helper.make_node("SequenceAt", ["seq", "p"], ["y"])]
    model = _model(nodes, [_tensor("x", [2]), _tensor("p", [], elem=7)], [_tensor("y")])
    compiled = ember.compile(model)
    x = _rand(2)
    for p in (1, -1, 1):
        np.testing.assert_array_equal(
            compiled.run({"x": x, "p": np.array(p)})["y"], x * (3 if p < 0 else 2)
        )
    assert compiled.compiles == 2
    with pytest.raises(InputError, match="position 3 is out of range"):
        compiled.run({"x": x, "p": np.array(3)})


def _torch_split_loop_cat() -> onnx.ModelProto:
    """What torch.onnx.export (TorchScript) writes for
    `torch.cat([torch.relu(p) * 2 for p in torch.split(x, 2, dim=1)], dim=1)`: the list is a
    SequenceEmpty filled by a Loop of SequenceLength iterations (SequenceAt, SequenceInsert)."""
    body = helper.make_graph(
        [
            helper.make_node("SequenceAt", ["parts", "i"], ["p"]),
            helper.make_node("Relu", ["p"], ["r"]),
            helper.make_node(
                "Constant", [], ["two_f"], value=numpy_helper.from_array(np.float32(2))
            ),
            helper.make_node("Mul", ["r", "two_f"], ["m"]),
            helper.make_node("SequenceInsert", ["acc_in", "m"], ["acc_out"]),
            helper.make_node("Identity", ["true"], ["cond_out"]),
        ],
        "body",
        [_tensor("i", [], elem=7), _tensor("cond_in", [], elem=TensorProto.BOOL), _seq("acc_in")],
        [_tensor("cond_out", [], elem=TensorProto.BOOL), _seq("acc_out")],
    )
    nodes = [
        helper.make_node("SplitToSequence", ["x", "two"], ["parts"], axis=1),
        helper.make_node("SequenceEmpty", [], ["empty"], dtype=F),
        helper.make_node("SequenceLength", ["parts"], ["n"]),
        helper.make_node("Loop", ["n", "true", "empty"], ["mapped"], body=body),
        helper.make_node("ConcatFromSequence", ["mapped"], ["y"], axis=1),
    ]
    true = numpy_helper.from_array(np.array(True), "true")
    return _model(nodes, [_tensor("x", [3, 7])], [_tensor("y")], [_int("two", 2), true], 17)


def test_torch_split_loop_cat_pattern() -> None:
    model = _torch_split_loop_cat()
    x = _rand(3, 7)
    got = _check(model, {"x": x})
    np.testing.assert_array_equal(got["y"], np.maximum(x, 0) * 2)


def test_torch_split_loop_accumulate_and_stack_pattern() -> None:
    """torch.onnx.export (TorchScript) of `acc = zeros; for p in split(x, 2, 1): acc = acc +
    sigmoid(p)` and `stack(parts)`: a Loop that carries a tensor and reads the outer sequence
    (unrolled: no region can capture a sequence), and ConcatFromSequence with new_axis."""
    body = helper.make_graph(
        [
            helper.make_node("SequenceAt", ["parts", "i"], ["p"]),
            helper.make_node("Sigmoid", ["p"], ["s"]),
            helper.make_node("Add", ["acc_in", "s"], ["acc_out"]),
            helper.make_node("Identity", ["true"], ["cond_out"]),
        ],
        "body",
        [_tensor("i", [], elem=7), _tensor("cond_in", [], elem=TensorProto.BOOL)]
        + [_tensor("acc_in", [3, 2])],
        [_tensor("cond_out", [], elem=TensorProto.BOOL), _tensor("acc_out")],
    )
    nodes = [
        helper.make_node("SplitToSequence", ["x", "two"], ["parts"], axis=1),
        helper.make_node("SequenceLength", ["parts"], ["n"]),
        helper.make_node("Loop", ["n", "true", "zeros"], ["y"], body=body),
        helper.make_node("ConcatFromSequence", ["parts"], ["z"], axis=0, new_axis=1),
    ]
    inits = [
        _int("two", 2),
        numpy_helper.from_array(np.array(True), "true"),
        numpy_helper.from_array(np.zeros((3, 2), np.float32), "zeros"),
    ]
    model = _model(nodes, [_tensor("x", [3, 6])], [_tensor("y"), _tensor("z")], inits, 17)
    x = _rand(3, 6)
    got = ember.compile(model).run({"x": x})
    ref = onnxruntime_outputs(model, {"x": x})
    # Sigmoid in float32 by different code: a few ulps.
    np.testing.assert_allclose(got["y"], ref["y"], rtol=1e-6, atol=1e-6)
    _same(got["z"], ref["z"])


def test_constant_if_returning_a_sequence() -> None:
    then_g = helper.make_graph(
        [helper.make_node("SplitToSequence", ["x"], ["ts"], axis=0)], "then", [], [_seq("ts")]
    )
    else_g = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["es"])], "else", [], [_seq("es")]
    )
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("ReduceProd", ["shape"], ["size"], keepdims=0),
        helper.make_node("Greater", ["size", "one"], ["cond"]),
        helper.make_node("If", ["cond"], ["s"], then_branch=then_g, else_branch=else_g),
    ]
    model = _model(nodes, [_tensor("x", [2, 2])], [_seq("s")], [_int("one", 1)])
    assert len(_check(model, {"x": _rand(2, 2)})["s"]) == 2


def test_if_on_a_runtime_condition_over_sequences_is_compiled_per_condition() -> None:
    """Branches that read an outer sequence, or give one: a sequence exists at import only,
    so the condition (a graph input) selects a compiled variant."""
    pick = [
        helper.make_graph(
            [helper.make_node("SequenceAt", ["seq", f"i{k}"], [f"t{k}"])],
            f"pick{k}",
            [],
            [_tensor(f"t{k}")],
        )
        for k in (0, 1)
    ]
    give = [
        helper.make_graph(
            [helper.make_node("SequenceErase", ["seq", f"i{k}"], [f"s{k}"])],
            f"give{k}",
            [],
            [_seq(f"s{k}")],
        )
        for k in (0, 1)
    ]
    nodes = [
        *_three(),
        helper.make_node("If", ["c"], ["y"], then_branch=pick[0], else_branch=pick[1]),
        helper.make_node("If", ["c"], ["rest"], then_branch=give[0], else_branch=give[1]),
    ]
    inputs = [_tensor("x", [3]), _tensor("c", [], elem=TensorProto.BOOL)]
    model = _model(nodes, inputs, [_tensor("y"), _seq("rest")], [_int("i0", 0), _int("i1", -1)])
    compiled = ember.compile(model)
    x = _rand(3)
    for c in (True, False, True):
        feeds = {"x": x, "c": np.array(c)}
        got, ref = compiled.run(feeds), onnxruntime_outputs(model, feeds)
        _same(got["y"], ref["y"])
        _same(got["rest"], ref["rest"])
    assert compiled.compiles == 2


# -- refusals ---------------------------------------------------------------------------------


def test_loop_whose_condition_is_data_dependent_is_refused() -> None:
    body = helper.make_graph(
        [
            helper.make_node("SequenceInsert", ["acc_in", "x"], ["acc_out"]),
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
            helper.make_node("Less", ["total", "zero"], ["cond_out"]),
        ],
        "body",
        [_tensor("i", [], elem=7), _tensor("cond_in", [], elem=TensorProto.BOOL), _seq("acc_in")],
        [_tensor("cond_out", [], elem=TensorProto.BOOL), _seq("acc_out")],
    )
    nodes = [
        helper.make_node("SequenceEmpty", [], ["empty"]),
        helper.make_node("Loop", ["n", "", "empty"], ["seq"], body=body, name="grow"),
        helper.make_node("ConcatFromSequence", ["seq"], ["y"], axis=0),
    ]
    zero = numpy_helper.from_array(np.float32(0), "zero")
    model = _model(nodes, [_tensor("x", [2])], [_tensor("y")], [_int("n", 4), zero])
    with pytest.raises(
        UnsupportedOpError, match="Loop.*'grow'.*computed at run time.*depend on data"
    ):
        ember.compile(model)


def test_refusals_name_the_node() -> None:
    def build(node: onnx.NodeProto, shape=(2, 3)) -> onnx.ModelProto:
        return _model(
            [*_three(), node], [_tensor("x", list(shape))], [_tensor("y")], [_int("p", 3)]
        )

    with pytest.raises(ModelError, match="SequenceAt node 'at'.*position 3 is out of range"):
        ember.compile(build(helper.make_node("SequenceAt", ["seq", "p"], ["y"], name="at")))
    with pytest.raises(ModelError, match="input #0 'seq' is a sequence, not a tensor"):
        ember.compile(build(helper.make_node("Relu", ["seq"], ["y"])))
    empty = _model(
        [
            helper.make_node("SequenceEmpty", [], ["e"]),
            helper.make_node("ConcatFromSequence", ["e"], ["y"], axis=0, name="cat"),
        ],
        [],
        [_tensor("y")],
    )
    with pytest.raises(ModelError, match="'cat'.*cannot concatenate an empty sequence"):
        ember.compile(empty)
    opt_type = helper.make_tensor_type_proto(F, [2])
    get = _model(
        [
            helper.make_node("Optional", [], ["o"], type=opt_type),
            helper.make_node("OptionalGetElement", ["o"], ["y"], name="get"),
        ],
        [],
        [_tensor("y")],
    )
    with pytest.raises(
        ModelError, match="OptionalGetElement node 'get'.*the optional 'o' is empty"
    ):
        ember.compile(get)


def test_sequences_longer_than_the_limit_are_refused() -> None:
    node = helper.make_node("SplitToSequence", ["x"], ["seq"], axis=0, name="split")
    model = _model([node], [_tensor("x", [2000])], [_seq("seq")])
    with pytest.raises(ResourceLimitError, match="SplitToSequence node 'split'.*2000 tensors"):
        ember.compile(model)


def test_sequences_of_sequences_are_refused_by_name() -> None:
    nested = helper.make_sequence_type_proto(SEQ_F)
    node = helper.make_node("SequenceLength", ["s"], ["n"])
    model = _model([node], [helper.make_value_info("s", nested)], [_tensor("n", elem=7)])
    with pytest.raises(ModelError, match=r"'s' is a seq\(seq\(tensor\(float\)\)\)"):
        ember.compile(model)


def test_unrolled_loops_are_capped() -> None:
    body = helper.make_graph(
        [
            helper.make_node("SequenceInsert", ["acc_in", "x"], ["acc_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [_tensor("i", [], elem=7), _tensor("cond_in", [], elem=TensorProto.BOOL), _seq("acc_in")],
        [_tensor("cond_out", [], elem=TensorProto.BOOL), _seq("acc_out")],
    )
    nodes = [
        helper.make_node("SequenceEmpty", [], ["empty"]),
        helper.make_node("Loop", ["n", "", "empty"], ["seq"], body=body, name="many"),
    ]
    model = _model(nodes, [_tensor("x", [2])], [_seq("seq")], [_int("n", 5000)])
    with pytest.raises(ResourceLimitError, match="Loop node 'many'.*more than 1024 iterations"):
        ember.compile(model)


def test_ahead_of_time_refuses_sequence_inputs_by_name() -> None:
    model = _model(
        [helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0)], [_seq("s")], [_tensor("y")]
    )
    with pytest.raises(ModelError, match="graph input 's' is a sequence: a compiled program"):
        compile_program(model)


def test_an_input_read_only_inside_a_subgraph_is_a_value() -> None:
    """Regression: an input with a symbolic dim that only a Loop/SequenceMap body reads was
    taken for a dtype-only (CastLike) input and bound to an empty constant."""
    body = helper.make_graph(
        [helper.make_node("Add", ["a", "w"], ["b"])], "body", [_tensor("a")], [_tensor("b")]
    )
    nodes = [
        helper.make_node("SplitToSequence", ["x"], ["parts"], axis=0),
        helper.make_node("SequenceMap", ["parts"], ["sums"], body=body),
    ]
    model = _model(nodes, [_tensor("x", [2, 4]), _tensor("w", ["N"])], [_seq("sums")])
    x, w = _rand(2, 4), _rand(4, seed=3)
    got = ember.compile(model).run({"x": x, "w": w})["sums"]
    _same(got, [x[:1] + w, x[1:] + w])


def test_scalar_shape_operand_keeps_its_rank_when_specialised() -> None:
    """Regression: the value key made a 0-d split 1-D (np.ascontiguousarray), so a scalar split
    became a list of one size."""
    node = helper.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=0)
    model = _model([node], [_tensor("x", [5]), _tensor("split", [], elem=7)], [_seq("seq")])
    feeds = {"x": _rand(5), "split": np.array(2, np.int64)}
    _same(ember.compile(model).run(feeds)["seq"], onnxruntime_outputs(model, feeds)["seq"])


def test_conformance_comparison_of_sequences() -> None:
    scalar = [np.array(1.0, np.float32), np.ones(2, np.float32)]
    assert_similar_outputs([scalar, None], [list(scalar), None], 1e-3, 1e-7)
    with pytest.raises(AssertionError):
        assert_similar_outputs([scalar], [scalar[:1]], 1e-3, 1e-7)
    with pytest.raises(AssertionError):
        assert_similar_outputs([None], [scalar], 1e-3, 1e-7)


def test_docs_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    relu = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["b"])], "relu", [_tensor("a")], [_tensor("b")]
    )
    nodes = [
        helper.make_node("SequenceMap", ["s"], ["parts"], body=relu),
        helper.make_node("ConcatFromSequence", ["parts"], ["y"], axis=0),
    ]
    model = _model(nodes, [_seq("s")], [_seq("parts"), _tensor("y")])
    onnx.save(model, tmp_path / "relu_cat.onnx")
    monkeypatch.chdir(tmp_path)
    text = DOCS.read_text()
    section = text[text.index("## Sequences and optionals") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert snippet is not None
    namespace: dict[str, Any] = {}
    exec(compile(snippet.group(1), str(DOCS), "exec"), namespace)
    s, out = namespace["s"], namespace["out"]
    _same(out["parts"], [np.maximum(a, 0) for a in s])
    _same(out["y"], np.maximum(np.concatenate(s), 0))
    assert namespace["compiled"].compiles == 2


def test_artifact_outputs_are_the_flat_tensors(tmp_path: Path) -> None:
    """At the native boundary a sequence output is its tensors, `y[0]` .. (the manifest says
    how they group); an artifact loads without the compiler and runs them."""
    from ember.engine.aot import compile_artifact
    from ember.runtime.artifact import load

    node = helper.make_node("SplitToSequence", ["x"], ["parts"], axis=0, keepdims=0)
    model = _model([node], [_tensor("x", [2, 3])], [_seq("parts")])
    build = compile_artifact(model, tmp_path / "artifact")
    loaded = load(build.path)
    assert loaded.output_names == ["parts[0]", "parts[1]"]
    assert loaded.manifest.extra["graph_outputs"] == [
        {"name": "parts", "kind": "sequence", "length": 2}
    ]
    x = _rand(2, 3)
    got = loaded.run({"x": x})
    np.testing.assert_array_equal(got["parts[0]"], x[0])
    np.testing.assert_array_equal(got["parts[1]"], x[1])
