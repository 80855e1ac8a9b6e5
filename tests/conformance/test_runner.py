"""The conformance machinery: test-data writing, per-case classification, the crash-proof worker
pool, and the report (checked on hand-made cases, so these tests need no suite data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.backend.test.case.test_case import TestCase

from ember.tools import conformance as conf


def _case(name: str, op: str, x: np.ndarray, y: np.ndarray) -> TestCase:
    """A one-node case whose model declares y with x's shape; the expected data is `y`."""
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"])],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return TestCase(name, name, None, None, model, [([x], [y])], "node", 1e-3, 1e-7)


def _reshape_case(x: np.ndarray) -> TestCase:
    """Reshape with its shape operand as a graph input, the way ONNX's node tests give it."""
    shape = np.array([16, 3], dtype=np.int64)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "reshape",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    name = "test_reshape_runtime_shape"
    return TestCase(
        name, name, None, None, model, [([x, shape], [x.reshape(16, 3)])], "node", 1e-3, 1e-7
    )


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x = np.random.default_rng(0).standard_normal((3, 16), dtype=np.float32)
    wrong = np.maximum(x, 0)
    wrong[1, 2] += 0.5
    dest = tmp_path_factory.mktemp("suite")
    conf.write_node_tests(
        dest,
        [
            _case("test_relu_ok", "Relu", x, np.maximum(x, 0)),
            _case("test_relu_ok_expanded", "Relu", x, np.maximum(x, 0)),
            _case("test_relu_wrong", "Relu", x, wrong),
            _case("test_relu_shape", "Relu", x, np.maximum(x, 0)[:2]),
            _case("test_stringnormalizer", "StringNormalizer", x, x),
            _reshape_case(x),
        ],
    )
    return dest


def test_writer_round_trips_models_data_and_catalogue(suite: Path) -> None:
    catalogue = conf.load_catalogue(suite)
    assert catalogue["test_relu_ok"] == {
        "op": "Relu",
        "expanded": False,
        "rtol": 1e-3,
        "atol": 1e-7,
    }
    assert catalogue["test_relu_ok_expanded"]["expanded"]
    model, data_sets = conf.load_case(suite / "test_relu_wrong")
    assert model.graph.node[0].op_type == "Relu"
    ((inputs, outputs),) = data_sets
    assert inputs[0].shape == (3, 16) and outputs[0][1, 2] > 0


@pytest.mark.parametrize(
    ("name", "status", "category", "outcome"),
    [
        ("test_relu_ok", "passed", None, "passed"),
        ("test_relu_wrong", "failed", "value-mismatch", "values differ"),
        ("test_relu_shape", "failed", "shape-mismatch", "wrong output"),
        ("test_stringnormalizer", "errored", "unsupported-op", "refused"),
    ],
)
def test_run_case_classifies_outcomes(
    suite: Path, name: str, status: str, category: str, outcome: str
) -> None:
    result = conf.run_case(str(suite / name), conf.RTOL, conf.ATOL, {"backend": {"threads": 1}})
    assert result["status"] == status, result
    assert result.get("category") == category
    assert conf.outcome(result) == outcome
    if status == "passed":
        assert result["folded"] is False  # relu reads its input at run time
    if category == "value-mismatch":
        assert result["message"].startswith("1/48 elements differ")


def test_pool_survives_segfaults_hangs_and_exits(tmp_path: Path) -> None:
    names = ["ok_1", "segv_1", "ok_2", "hang_1", "ok_3", "exit_1", "ok_4", "ok_5"]
    options = conf.RunOptions(
        jobs=2,
        timeout=5.0,
        recycle=2,
        backend={"tag": 7},
        runner="ember.tests.conformance.fake_cases:run",
    )
    results = conf.run_cases(names, tmp_path, None, options)
    assert set(results) == set(names)
    assert [results[n]["status"] for n in names if n.startswith("ok")] == ["passed"] * 5
    assert results["segv_1"]["status"] == "crashed" and "SIGSEGV" in results["segv_1"]["message"]
    assert results["hang_1"]["category"] == "timeout"
    assert (
        results["exit_1"]["status"] == "crashed" and "exit code 3" in results["exit_1"]["message"]
    )
    assert results["ok_1"]["options"] == {"backend": {"tag": 7}, "freeze": True}
    # recycle=2: no worker process runs more than two cases
    pids = [results[n]["pid"] for n in names if n.startswith("ok")]
    assert max(pids.count(p) for p in pids) <= 2


def _synthetic_report() -> dict:
    catalogue = {
        "test_a1": {"op": "A", "expanded": False},
        "test_a2": {"op": "A", "expanded": False},
        "test_a1_expanded": {"op": "A", "expanded": True},
        "test_b1": {"op": "B", "expanded": False},
        "test_b2": {"op": "B", "expanded": False},
        "test_c1": {"op": "C", "expanded": False},
    }
    results = {
        "test_a1": {"status": "passed", "folded": True},
        "test_a2": {"status": "passed"},
        "test_a1_expanded": {
            "status": "errored",
            "category": "unsupported-op",
            "unsupported_ops": ["Where", "CastLike"],
        },
        "test_b1": {"status": "passed"},
        "test_b2": {
            "status": "errored",
            "category": "compile-error",
            "where": "passes/x.py:f",
            "message": "no kernel for 'n1' tensor<3x4xi8>",
            "dtypes": ["int8"],
        },
        "test_c1": {
            "status": "errored",
            "category": "compile-error",
            "where": "passes/x.py:f",
            "message": "no kernel for 'n2' tensor<5xi8>",
            "dtypes": ["int8"],
        },
    }
    return conf.build_report(results, catalogue, {"jobs": 2})


def test_report_counts_per_op_and_groups_alike_failures() -> None:
    report = _synthetic_report()
    assert report["totals"] == {
        "passed": 3,
        "failed": 0,
        "errored": 3,
        "crashed": 0,
        "total": 6,
        "passed_folded": 1,
        "passed_frozen": 0,
        "outcomes": {
            "passed": 3,
            "refused": 1,
            "values differ": 0,
            "wrong output": 0,
            "internal error": 2,
            "crashed": 0,
        },
    }
    assert report["ops"]["A"]["direct"]["passed"] == 2
    assert report["ops"]["A"]["expanded"]["errored"] == 1
    groups = conf.failure_groups(report)
    assert groups[0]["count"] == 2 and groups[0]["message"] == "no kernel for '…' tensor<Nxi8>"
    assert dict(groups[0]["ops"]) == {"B": 1, "C": 1}
    assert conf.unsupported_ranking(report) == [("Where", 1), ("CastLike", 1)]
    text = conf.format_report(report)
    assert "total: 3 passed, 0 failed, 3 errored, 0 crashed of 6 cases (1 of the passes" in text
    json.dumps(report)  # the report is what the CLI writes


def test_docs_list_supported_ops_with_counts() -> None:
    docs = conf.render_docs(_synthetic_report())
    supported = docs.split("## Supported")[1].split("## Mostly")[0]
    assert "| A | 2/2 (1 at compile time) | 0/1 |" in supported
    mostly = docs.split("## Mostly")[1].split("## Partly")[0]
    assert "| B | 1/2 | - | b2 |  |" in mostly  # no reason recorded for B
    not_supported = docs.split("## Not supported: no node test passes")[1].split("## ")[0]
    assert "| C | 1 |  |" in not_supported


def test_docs_give_the_reason_each_unsupported_op_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reasons come from tools/conformance/unsupported.py: in the failing ops' rows, and for
    the ONNX ops without node tests that ember neither converts nor expands."""
    from ember.tools.conformance import unsupported

    monkeypatch.setitem(unsupported.REASONS, "B", "b2 needs int8")
    monkeypatch.setitem(unsupported.REASONS, "C", "C is out of scope")
    docs = conf.render_docs(_synthetic_report())
    assert "| B | 1/2 | - | b2 | b2 needs int8 |" in docs
    assert "| C | 1 | C is out of scope |" in docs
    untested = docs.split("## Not supported, no node test")[1]
    assert "| RandomUniform | random numbers:" in untested
    assert "| ai.onnx.ml.SVMClassifier | ai.onnx.ml domain" in untested
    # Converted ops and ops a function body defines (expanded by the importer) are not listed.
    assert "| Relu |" not in untested and "| HannWindow |" not in untested


def test_every_recorded_reason_names_an_onnx_op_and_every_unconverted_op_has_one() -> None:
    from ember.tools.conformance.unsupported import REASONS, unconverted_ops

    schemas = {f"{s.domain}.{s.name}" if s.domain else s.name for s in onnx.defs.get_all_schemas()}
    assert set(REASONS) <= schemas, sorted(set(REASONS) - schemas)
    missing = [op for op in unconverted_ops(set()) if op not in REASONS]
    assert not missing, f"ops ember refuses without a reason in docs/ops.md: {missing}"


def test_data_dir_is_keyed_by_onnx_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[Path] = []

    def fake_write(dest: Path) -> dict:
        writes.append(dest)
        (dest / conf.CATALOGUE).write_text(json.dumps({"cases": {}}))
        return {}

    monkeypatch.setattr(conf.data, "write_node_tests", fake_write)
    stale = tmp_path / "onnx-0.0.1"
    stale.mkdir()
    first = conf.data_dir(tmp_path)
    assert first == tmp_path / f"onnx-{onnx.__version__}" and (first / conf.CATALOGUE).exists()
    assert conf.data_dir(tmp_path) == first and len(writes) == 1  # cached
    assert not stale.exists()
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert conf.cache_root() == tmp_path / "elsewhere" / "onnx-node-tests"


def test_shape_operands_become_initializers(suite: Path) -> None:
    model, [(inputs, _)] = conf.load_case(suite / "test_reshape_runtime_shape")
    frozen_model, rest, frozen = conf.freeze_shape_operands(model, inputs)
    assert frozen == ["shape"] and len(rest) == 1 and rest[0] is inputs[0]
    assert [i.name for i in frozen_model.graph.input] == ["x"]
    assert [t.name for t in frozen_model.graph.initializer] == ["shape"]
    assert len(model.graph.input) == 2  # the loaded model is left alone

    case = str(suite / "test_reshape_runtime_shape")
    result = conf.run_case(case, conf.RTOL, conf.ATOL, {"backend": {"threads": 1}})
    assert result["status"] == "passed" and result["frozen_inputs"] == ["shape"], result
    # Unfrozen, the runtime shape operand is value-specialised (engine/specialize.py).
    strict = conf.run_case(case, conf.RTOL, conf.ATOL, {"backend": {}, "freeze": False})
    assert strict["status"] == "passed" and "frozen_inputs" not in strict, strict


def test_values_differ_is_counted_apart_from_refusals_and_internal_errors() -> None:
    """A wrong answer is the worst outcome: counted and listed on its own, never mixed with a
    refusal (a clear error) or with an internal error (a crash inside ember)."""
    catalogue = {f"test_{n}": {"op": "X", "expanded": False} for n in "abcdefg"}
    results = {
        "test_a": {"status": "passed"},
        "test_b": {"status": "failed", "category": "value-mismatch", "message": "3/8 differ"},
        "test_c": {"status": "failed", "category": "dtype-mismatch", "message": "dtype(...)"},
        "test_d": {"status": "errored", "category": "unsupported-variant", "message": "m"},
        "test_e": {"status": "errored", "category": "run-refused", "message": "KernelError"},
        "test_f": {"status": "errored", "category": "compile-error", "message": "TypeError"},
        "test_g": {"status": "crashed", "category": "crash", "message": "SIGSEGV"},
    }
    report = conf.build_report(results, catalogue)
    assert report["totals"]["outcomes"] == {
        "passed": 1,
        "refused": 2,
        "values differ": 1,
        "wrong output": 1,
        "internal error": 1,
        "crashed": 1,
    }
    assert conf.values_differ(report) == ["test_b"]
    text = conf.format_report(report)
    assert "outcomes: 1 passed, 2 refused, 1 values differ, 1 wrong output" in text
    assert "values differ (1 cases: ran, but computed wrong numbers):\n  test_b: 3/8 differ" in text
    assert "1 values differ" in conf.render_docs(report)


def test_docs_list_every_contrib_op_ember_converts() -> None:
    """docs/ops.md's com.microsoft table (tools/conformance/contrib_ops.py) names exactly the
    com.microsoft ops the registry converts."""
    import ember.frontend  # noqa: F401  (registers every converter)
    from ember.frontend import registry
    from ember.tools.conformance.contrib_ops import CONTRIB_OPS

    converted = {
        key.removeprefix("com.microsoft.")
        for key in registry.CONVERTERS
        if key.startswith("com.microsoft.")
    }
    assert set(CONTRIB_OPS) == converted
    docs = conf.render_docs(_synthetic_report())
    section = docs.split("## onnxruntime contrib ops")[1]
    assert "| GroupQueryAttention | genai |" in section
