"""ember.InferenceSession: an onnxruntime snippet runs unchanged with `ember` in place of `ort`."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest

import ember
from ember.tests.oracle import assert_close
from ember.tests.runtime.util import small_convnet
from ember.tools.symbolic_zoo import symbolic_model

# Float32 kernels vs onnxruntime: different summation orders, same math.
REL_TOL = 1e-4
README = Path(__file__).resolve().parents[2] / "README.md"


def typical_snippet(ort: ModuleType, model_path: str, batch: int) -> dict[str, Any]:
    """What onnxruntime users write, word for word; `ort` is onnxruntime or ember."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in arg.shape]
        assert arg.type == "tensor(float)"
        feeds[arg.name] = rng.standard_normal(shape).astype(np.float32)
    names = [o.name for o in session.get_outputs()]
    all_outputs = session.run(None, feeds)
    first_only = session.run(names[:1], feeds)
    reversed_order = session.run(names[::-1], feeds)
    return {
        "all": dict(zip(names, all_outputs)),
        "first": first_only,
        "reversed": dict(zip(names[::-1], reversed_order)),
        "providers": session.get_providers(),
    }


def _describe(session: Any) -> list[tuple[str, list[Any], str]]:
    return [
        (a.name, list(a.shape), a.type) for a in [*session.get_inputs(), *session.get_outputs()]
    ]


@pytest.fixture(params=["static", "symbolic_batch"])
def model_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    model = small_convnet() if request.param == "static" else symbolic_model()
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path


def test_onnxruntime_snippet_runs_unchanged(model_path: Path) -> None:
    # Symbolic dims (the symbolic model's batch and seq) are given size 3.
    expected = typical_snippet(onnxruntime, str(model_path), 3)
    actual = typical_snippet(ember, str(model_path), 3)
    assert_close(actual["all"], expected["all"], rel=REL_TOL)
    assert_close(actual["reversed"], expected["reversed"], rel=REL_TOL)
    assert len(actual["first"]) == 1
    first = next(iter(expected["all"]))
    assert_close({first: actual["first"][0]}, {first: expected["all"][first]}, rel=REL_TOL)
    assert actual["providers"] == expected["providers"] == ["CPUExecutionProvider"]


def test_inputs_and_outputs_described_as_onnxruntime_does(model_path: Path) -> None:
    reference = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    session = ember.InferenceSession(str(model_path))
    assert _describe(session) == _describe(reference)


def test_unknown_dims_and_types_described_as_onnxruntime_does() -> None:
    """A dim with neither size nor name, a -1, no declared output shape, a double output."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, -1, 3])
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Relu", ["x"], ["y"]),
            onnx.helper.make_node("Cast", ["y"], ["z"], to=onnx.TensorProto.DOUBLE),
        ],
        "dims",
        [x],
        [
            onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None),
            onnx.helper.make_tensor_value_info("z", onnx.TensorProto.DOUBLE, ["a", "b", 3]),
        ],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    reference = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    session = ember.InferenceSession(model.SerializeToString())
    assert _describe(session) == _describe(reference)
    assert _describe(session)[0] == ("x", [None, None, 3], "tensor(float)")


def test_model_metadata_as_onnxruntime() -> None:
    model = small_convnet()
    model.producer_name = "exporter"
    model.doc_string = "a test model"
    onnx.helper.set_model_props(model, {"author": "tests"})
    reference = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).get_modelmeta()
    meta = ember.InferenceSession(model).get_modelmeta()
    for name in ("producer_name", "graph_name", "domain", "description", "version"):
        assert getattr(meta, name) == getattr(reference, name), name
    assert meta.custom_metadata_map == reference.custom_metadata_map == {"author": "tests"}


def test_unknown_output_name_is_named() -> None:
    session = ember.InferenceSession(small_convnet())
    feeds = {"x": np.zeros((2, 8, 10, 10), np.float32)}
    with pytest.raises(ember.InputError, match="'no_such_output'.*logits"):
        session.run(["logits", "no_such_output"], feeds)
    with pytest.raises(ember.InputError, match="'extra'"):
        session.run(None, {**feeds, "extra": feeds["x"]})
    with pytest.raises(ember.InputError, match="dtype"):
        session.run(None, {"x": feeds["x"].astype(np.float64)})


def test_free_dimension_override_pins_the_batch() -> None:
    options = ember.SessionOptions()
    options.add_free_dimension_override_by_name("batch", 3)
    options.add_free_dimension_override_by_name("seq", 5)
    session = ember.InferenceSession(symbolic_model(), options)
    assert isinstance(session._model, ember.CompiledModel)  # static: compiled once, up front
    assert session.get_inputs()[0].shape == [3, 5]
    rng = np.random.default_rng(1)
    feeds = {
        "x": rng.standard_normal((3, 5)).astype(np.float32),
        "y": rng.standard_normal((3, 6)).astype(np.float32),
    }
    reference = onnxruntime.InferenceSession(
        symbolic_model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    assert_close(
        {"out": session.run(None, feeds)[0]}, {"out": reference.run(None, feeds)[0]}, REL_TOL
    )
    options.add_free_dimension_override_by_name("not_a_dim", 2)
    with pytest.raises(ember.ModelError, match="not_a_dim"):
        ember.InferenceSession(symbolic_model(), options)


def test_disable_all_compiles_without_graph_optimisations(monkeypatch: pytest.MonkeyPatch) -> None:
    import ember.engine.compile
    from ember.passes.pipeline import MINIMAL_PIPELINE

    pipelines = []
    real = ember.engine.compile.compile_program

    def recording(*args: Any, **kwargs: Any) -> Any:
        pipelines.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(ember.engine.compile, "compile_program", recording)
    options = ember.SessionOptions()
    options.graph_optimization_level = ember.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ember.InferenceSession(small_convnet(), options)
    assert pipelines == [MINIMAL_PIPELINE]
    x = np.random.default_rng(2).standard_normal((2, 8, 10, 10)).astype(np.float32)
    reference = onnxruntime.InferenceSession(
        small_convnet().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    assert_close(
        dict(zip(["logits", "features"], session.run(None, {"x": x}))),
        dict(zip(["logits", "features"], reference.run(None, {"x": x}))),
        REL_TOL,
    )
    # onnxruntime's own enum members are accepted too (same values).
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.graph_optimization_level == ember.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with pytest.raises(ValueError, match="graph_optimization_level"):
        options.graph_optimization_level = 7
    with pytest.raises(AttributeError):
        options.no_such_option = 1  # type: ignore[attr-defined]


def test_artifact_directory(small_artifact: Path) -> None:
    session = ember.InferenceSession(str(small_artifact))
    assert _describe(session) == _describe(
        onnxruntime.InferenceSession(
            small_convnet().SerializeToString(), providers=["CPUExecutionProvider"]
        )
    )
    x = np.random.default_rng(3).standard_normal((2, 8, 10, 10)).astype(np.float32)
    expected = ember.InferenceSession(small_convnet()).run(["features"], {"x": x})
    np.testing.assert_array_equal(session.run(["features"], {"x": x})[0], expected[0])


def test_unavailable_provider_warns_and_runs_on_cpu() -> None:
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        session = ember.InferenceSession(
            small_convnet(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert ember.get_available_providers() == ["CPUExecutionProvider"]


def test_unreadable_bytes_are_a_model_error() -> None:
    with pytest.raises(ember.ModelError, match="cannot parse"):
        ember.InferenceSession(b"not a model")


def test_unsupported_op_of_a_symbolic_model_is_refused_at_creation() -> None:
    """As onnxruntime refuses it when the session is created, not at the first run."""
    model = symbolic_model()
    model.graph.node.append(
        onnx.helper.make_node("RandomNormalLike", ["out"], ["rng"], name="rng0")
    )
    with pytest.raises(
        ember.UnsupportedOpError, match=r"RandomNormalLike \(node 'rng0', opset 17\)"
    ):
        ember.InferenceSession(model)


def test_readme_snippet_runs_with_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's "Coming from onnxruntime" snippet, on onnxruntime and on ember."""
    section = README.read_text().split("## Coming from onnxruntime", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match and "import ember as ort" in match.group(1)
    snippet = match.group(1)
    onnx.save(small_convnet(), str(tmp_path / "model.onnx"))  # input x, outputs logits, features
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(4).standard_normal((2, 8, 10, 10)).astype(np.float32)
    results = {}
    for engine in ("ember", "onnxruntime"):
        namespace: dict[str, Any] = {"x": x}
        code = snippet.replace("import ember as ort", f"import {engine} as ort")
        exec(compile(code, str(README), "exec"), namespace)
        results[engine] = namespace
    names = ["logits", "features"]
    assert_close(
        dict(zip(names, results["ember"]["outputs"])),
        dict(zip(names, results["onnxruntime"]["outputs"])),
        REL_TOL,
    )
    assert_close(
        {"logits": results["ember"]["logits"]}, {"logits": results["onnxruntime"]["logits"]}
    )
