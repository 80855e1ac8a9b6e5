"""`ember check` / ember.check: every problem of a model listed at once, before compiling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.tests.runtime.util import small_convnet
from ember.tools.cli import main
from ember.tools.symbolic_zoo import symbolic_model


def many_problems() -> onnx.ModelProto:
    """A symbolic batch, an op with no converter, an op of an unknown domain, an op whose ONNX
    function body uses an unsupported op, a string tensor and a Conv with a bad kernel_shape."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("RandomNormalLike", ["r"], ["d"], name="rng0"),
        helper.make_node("FancyOp", ["r"], ["f"], domain="my.domain", name="fancy"),
        helper.make_node("Bernoulli", ["r"], ["b"], name="coin"),
        helper.make_node("Cast", ["r"], ["s"], to=TensorProto.STRING, name="to_text"),
        helper.make_node("Conv", ["x4", "w"], ["c"], kernel_shape=[3], name="conv"),
    ]
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 2, 3, 3], [0.0] * 36)
    outputs = [("d", TensorProto.FLOAT), ("f", TensorProto.FLOAT), ("b", TensorProto.FLOAT)]
    outputs += [("s", TensorProto.STRING), ("c", TensorProto.FLOAT)]
    graph = helper.make_graph(
        nodes,
        "many_problems",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 3]),
            helper.make_tensor_value_info("x4", TensorProto.FLOAT, [1, 2, 5, 5]),
        ],
        [helper.make_tensor_value_info(name, t, None) for name, t in outputs],
        [weight],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.domain", 1)]
    )


def test_every_problem_is_listed() -> None:
    report = ember.check(many_problems())
    assert not report.ok and not report.imported
    (dim,) = report.of_kind("symbolic-dim")
    assert dim.details == {"input": "x", "axis": 0, "dim_param": "batch"}
    assert "--input-shape x=1x3x3" in dim.fix
    ops = {p.details["node"]: p.details for p in report.of_kind("unsupported-op")}
    assert ops == {
        "rng0": {"op": "RandomNormalLike", "node": "rng0", "opset": 17, "domain": "ai.onnx"},
        "fancy": {"op": "FancyOp", "node": "fancy", "opset": 1, "domain": "my.domain"},
        "coin": {"op": "Bernoulli", "node": "coin", "opset": 17, "domain": "ai.onnx"},
    }
    assert "function body" in next(
        p.message for p in report.of_kind("unsupported-op") if p.details["node"] == "coin"
    )
    (text,) = report.of_kind("unsupported-type")
    assert text.details["tensor"] == "s" and text.details["type"] == "STRING"
    (conv,) = report.of_kind("invalid-node")
    assert conv.details["node"] == "conv" and "kernel_shape" in conv.message
    assert len(report.problems) == 6
    shown = str(report)
    assert all(p.message in shown for p in report.problems)


def test_cli_lists_them_as_json_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.onnx"
    onnx.save(many_problems(), str(path))
    assert main(["check", str(path), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    kinds = [p["kind"] for p in document["problems"]]
    assert kinds.count("unsupported-op") == 3 and "symbolic-dim" in kinds


def test_clean_model_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(small_convnet(), str(path))
    assert main(["check", str(path)]) == 0
    assert "no problems" in capsys.readouterr().out
    assert ember.check(path).imported


def test_pinned_symbolic_model_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(symbolic_model(), str(path))
    assert main(["check", str(path)]) == 1
    assert len(ember.check(path).of_kind("symbolic-dim")) == 3  # x: batch, seq; y: batch
    assert main(["check", str(path), "--input-shape", "x=2x5"]) == 0
    # A pin that does not fit is a problem, not a crash.
    assert [p.kind for p in ember.check(path, {"x": [2, 5, 1]}).problems] == ["invalid-model"]


def test_unreadable_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00not a protobuf\xff" * 10)
    assert main(["check", str(path)]) == 2
    assert main(["check", str(tmp_path / "missing.onnx")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_import_stage_finds_what_only_converters_see() -> None:
    """An If on a run-time condition whose branches give two shapes: no table says so, the
    import does."""
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y_then"])],
        "then",
        [],
        [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, [2])],
    )
    other = helper.make_graph(
        [helper.make_node("Concat", ["x", "x"], ["y_else"], axis=0)],
        "else",
        [],
        [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, [4])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
            helper.make_node("Greater", ["total", "zero"], ["positive"]),
            helper.make_node(
                "If", ["positive"], ["y"], then_branch=branch, else_branch=other, name="choice"
            ),
        ],
        "runtime_if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    report = ember.check(model)
    assert report.imported
    (problem,) = report.problems
    assert problem.kind == "unsupported-op" and problem.details["node"] == "choice"
    assert "one static type" in problem.message


def test_malformed_models_are_reported_not_crashed_on() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    relu = helper.make_node("Relu", ["x"], ["y"])
    opsets = [helper.make_opsetid("", 17)]
    undefined = helper.make_graph([helper.make_node("Add", ["x", "nope"], ["y"])], "g", [x], [y])
    unknown_type = helper.make_graph(
        [relu], "g", [helper.make_tensor_value_info("x", 99, [2])], [y]
    )
    sequence = helper.make_graph(
        [helper.make_node("SequenceLength", ["s"], ["n"])],
        "g",
        [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
    )
    reports = {
        name: ember.check(helper.make_model(graph, opset_imports=opsets))
        for name, graph in [
            ("undefined", undefined),
            ("unknown_type", unknown_type),
            ("sequence", sequence),
        ]
    }
    assert "'nope'" in reports["undefined"].problems[0].message
    assert {p.kind for p in reports["unknown_type"].problems} == {
        "invalid-model",
        "unsupported-type",
    }
    # A sequence input is compiled per structure by ember.compile, never into an artifact.
    assert [p.kind for p in reports["sequence"].problems] == ["symbolic-dim"]
    assert "input 's' is a sequence" in reports["sequence"].problems[0].message
