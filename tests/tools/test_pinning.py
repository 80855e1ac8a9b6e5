"""Pinning symbolic input dims everywhere a model is set up: AOT, Config/Predictor (reshape),
the `ember` command line (--input-shape), `ember opt`, the profiler, the ONNX backend and the
conformance runner; and the specialisation cache behind them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
import ember.engine.aot
import ember.runtime
from ember.engine.aot import compile_artifact, resolve_target
from ember.engine.onnx_backend import EmberBackend
from ember.engine.specialize import (
    SpecializationCache,
    SpecializationWarning,
    SpecializingModel,
)
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tools import conformance as conf
from ember.tools.cli import main
from ember.tools.opt import main as opt_main
from ember.tools.options import parse_input_shape
from ember.tools.symbolic_zoo import feeds, fixed_reshape_model, symbolic_model

DOCS = Path(__file__).resolve().parents[2] / "docs" / "engine_api.md"
# Float32 MatMul and ReduceSum vs onnxruntime: different summation orders, same math.
REL_TOL = 1e-5
# A portable target: artifacts load on any AVX2 machine the tests run on.
CPU = "x86-64-v3"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    onnx.save(symbolic_model(), tmp_path / "dynamic.onnx")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The input_shapes of each AOT compile behind the engine's cache."""
    calls: list[dict] = []
    real = ember.engine.aot.compile_artifact

    def counting(model: object, output: object, **kwargs: object) -> object:
        build = real(model, output, **kwargs)  # type: ignore[arg-type]
        calls.append(dict(kwargs.get("input_shapes") or {}))  # type: ignore[call-overload]
        return build

    monkeypatch.setattr(ember.engine.aot, "compile_artifact", counting)
    return calls


def _config(pins: dict[str, list[int]] | None = None) -> ember.Config:
    config = ember.Config("dynamic.onnx")
    config.set_target_cpu(CPU)
    config.set_cpu_math_library_num_threads(1)
    for name, shape in (pins or {}).items():
        config.set_input_shape(name, shape)
    return config


# -- ahead of time -----------------------------------------------------------------------------


def test_aot_artifact_is_compiled_for_the_pinned_shapes(tmp_path: Path) -> None:
    build = compile_artifact(
        symbolic_model(),
        tmp_path / "out",
        target=resolve_target(CPU, 1),
        input_shapes={"x": [3, 5]},
    )
    exe = ember.runtime.load(build.path)
    assert {s.name: s.shape for s in exe.manifest.inputs} == {"x": (3, 5), "y": (3, 6)}
    assert exe.info["input_shapes"] == {"x": [3, 5]}
    inputs = feeds(3, 5, seed=2)
    assert_close(exe.run(inputs), onnxruntime_outputs(symbolic_model(), inputs), REL_TOL)


def test_aot_refuses_unpinned_dims_saying_how_to_pin(tmp_path: Path) -> None:
    with pytest.raises(ember.ModelError, match=r"symbolic input dimensions: 'x' \[batch, seq\]"):
        compile_artifact(symbolic_model(), tmp_path / "out", target=resolve_target(CPU, 1))
    assert not (tmp_path / "out").exists()


# -- Config / Predictor ------------------------------------------------------------------------


def _snippet() -> str:
    text = DOCS.read_text()
    section = text[text.index("## Models with symbolic dims") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, f"no python snippet in the symbolic-dims section of {DOCS}"
    return match.group(1)


def test_docs_reshape_walkthrough_runs_and_matches_onnxruntime(
    workdir: Path, compiles: list
) -> None:
    namespace: dict[str, object] = {}
    exec(compile(_snippet(), str(DOCS), "exec"), namespace)
    predictor = namespace["predictor"]
    assert isinstance(predictor, ember.Predictor)
    inputs = {n: predictor.get_input_handle(n).copy_to_cpu() for n in ("x", "y")}
    assert inputs["x"].shape == (4, 16)
    expected = onnxruntime_outputs(symbolic_model(), inputs)
    assert_close({"out": namespace["out"]}, expected, REL_TOL)  # type: ignore[dict-item]
    # One compile at create_predictor (the pin), one for batch 4.
    assert compiles == [{"x": (1, 16)}, {"x": (4, 16), "y": (4, 6)}]


def test_unpinned_predictor_compiles_per_shape_and_clones_share_them(
    workdir: Path, compiles: list
) -> None:
    predictor = ember.create_predictor(_config())
    x, y = predictor.get_input_handle("x"), predictor.get_input_handle("y")
    assert x.shape() == [-1, -1] and y.shape() == [-1, 6] and x.type() == np.float32
    assert predictor.get_output_handle("out").shape() == [-1, 4]
    assert compiles == []  # nothing to compile before the shapes are known
    for batch, seq in [(2, 3), (5, 3), (2, 3)]:
        inputs = feeds(batch, seq, seed=batch)
        outputs = predictor.run([inputs["x"], inputs["y"]])
        assert outputs is not None
        assert_close({"out": outputs[0]}, onnxruntime_outputs(symbolic_model(), inputs), REL_TOL)
        assert predictor.get_output_handle("out").shape() == [batch, 4]
    assert len(compiles) == 2
    predictor.clone().run([feeds(5, 3)["x"], feeds(5, 3)["y"]])
    assert len(compiles) == 2
    # A new predictor (a later process alike) finds the specialisation in the disk cache.
    ember.create_predictor(_config()).run([feeds(2, 3)["x"], feeds(2, 3)["y"]])
    assert len(compiles) == 2


def test_reshape_checks_the_declared_dims(workdir: Path) -> None:
    x = ember.create_predictor(_config()).get_input_handle("x")
    y = ember.create_predictor(_config()).get_input_handle("y")
    with pytest.raises(ember.ModelError, match=re.escape("tensor 'y': reshape to [2, 5] contra")):
        y.reshape([2, 5])
    with pytest.raises(
        ember.ModelError, match=r"has rank 3, but input 'x' declared \[batch, seq\]"
    ):
        x.reshape([2, 3, 1])
    with pytest.raises(ember.ModelError, match=r"sizes must not be negative"):
        x.reshape([-1, 3])
    x.reshape([2, 3])
    assert x.shape() == [2, 3]
    with pytest.raises(ember.InputError, match=r"input 'y': expected shape \[batch, 6\], given"):
        y.copy_from_cpu(np.zeros((2, 7), np.float32))


def test_run_refuses_disagreeing_shared_dims_and_shapes_the_graph_cannot_take(
    workdir: Path,
) -> None:
    predictor = ember.create_predictor(_config())
    message = "inputs 'x' and 'y' share dim 'batch' but were given 2 (axis 0 of [2, 3]) and 3"
    with pytest.raises(ember.InputError, match=re.escape(message)):
        predictor.run([np.zeros((2, 3), np.float32), np.zeros((3, 6), np.float32)])
    onnx.save(fixed_reshape_model(), workdir / "fixed.onnx")
    config = ember.Config("fixed.onnx")
    config.set_target_cpu(CPU)
    fixed = ember.create_predictor(config)
    with pytest.raises(
        ember.InputError, match=r"does not compile for input shapes \{'x': \[3, 6\]\}"
    ):
        fixed.run([np.zeros((3, 6), np.float32)])


def test_set_input_shape_is_checked_against_the_model(workdir: Path) -> None:
    pinned = ember.create_predictor(_config({"x": [3, 5]}))
    assert pinned.executable is not None  # compiled at creation
    assert pinned.get_input_handle("y").shape() == [3, 6]  # batch follows x
    partly = ember.create_predictor(_config({"y": [3, 6]}))
    assert partly.executable is None  # seq stays open: compiled at the first run
    assert partly.get_input_handle("x").shape() == [3, -1]
    assert "input_shapes: {'y': [3, 6]}" in _config({"y": [3, 6]}).summary()
    with pytest.raises(ember.ModelError, match=re.escape("input_shapes['y'] = [3, 7] contradicts")):
        ember.create_predictor(_config({"y": [3, 7]}))
    with pytest.raises(ember.ModelError, match="'z', which is not an input of the model"):
        ember.create_predictor(_config({"z": [1]}))
    with pytest.raises(ember.ModelError, match="is not a list of integer sizes"):
        _config({"x": ["a", 2]})  # type: ignore[dict-item]


def test_an_artifact_takes_only_its_own_shapes(tmp_path: Path) -> None:
    out = tmp_path / "art"
    compile_artifact(
        symbolic_model(), out, target=resolve_target(CPU, 1), input_shapes={"x": [2, 3]}
    )
    config = ember.Config(out)
    config.set_input_shape("x", [2, 3])
    predictor = ember.create_predictor(config)
    with pytest.raises(ember.ModelError, match="the model was compiled for shape"):
        predictor.get_input_handle("x").reshape([4, 3])
    config.set_input_shape("x", [4, 3])
    with pytest.raises(ember.ModelError, match=r"compiled for input 'x' of shape \[2, 3\]"):
        ember.create_predictor(config)


# -- the command line --------------------------------------------------------------------------


def test_parse_input_shape() -> None:
    assert parse_input_shape("x=1x3x224x224") == ("x", (1, 3, 224, 224))
    assert parse_input_shape("input:0=2,8") == ("input:0", (2, 8))
    assert parse_input_shape("a=b=4") == ("a=b", (4,))
    for bad in ("x", "=2x3", "x=2xa"):
        with pytest.raises(Exception, match="e.g."):
            parse_input_shape(bad)


def test_cli_compile_pins_and_refuses_unpinned(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compile", "dynamic.onnx", "-o", "out", "-q", "--target-cpu", CPU, "--threads", "1"]
    assert main([*argv, "--input-shape", "x=2x3"]) == 0
    manifest = json.loads((workdir / "out" / "manifest.json").read_text())
    assert [i["shape"] for i in manifest["inputs"]] == [[2, 3], [2, 6]]
    capsys.readouterr()
    # Unpinned, the model compiles once (its ReduceSum over `seq` has a run-time-extent
    # kernel): one artifact for every shape.
    assert main([*argv, "-o", "once"]) == 0
    manifest = json.loads((workdir / "once" / "manifest.json").read_text())
    assert manifest["extra"]["compile_once"]["symbols"] == ["batch", "seq"]
    # With a CumSum along `seq` (no such kernel yet) it cannot: unpinned is refused.
    model = symbolic_model()
    axis = onnx.numpy_helper.from_array(np.array(1, np.int64), "cumsum_axis")
    model.graph.initializer.append(axis)
    model.graph.node.insert(0, helper.make_node("CumSum", ["x", "cumsum_axis"], ["xc"]))
    model.graph.node[1].input[0] = "xc"
    onnx.save(model, workdir / "dynamic.onnx")
    capsys.readouterr()
    assert main([*argv, "-o", "other"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ember compile: error: the model has symbolic input dimensions")
    assert "--input-shape x=1x1" in err
    with pytest.raises(SystemExit):
        main([*argv, "--input-shape", "x=2x3", "--input-shape", "x=4x3"])
    assert "gives input 'x' twice" in capsys.readouterr().err


def test_cli_run_pins_from_flags_or_from_the_input_arrays(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--target-cpu", CPU, "--threads", "1"]
    assert main(["run", "dynamic.onnx", "--input-shape", "x=3x4", "--random-inputs", *common]) == 0
    assert "out: shape [3, 4] float32" in capsys.readouterr().out
    inputs = feeds(2, 7, seed=5)
    for name, array in inputs.items():
        np.save(workdir / f"{name}.npy", array)
    argv = ["run", "dynamic.onnx", "--input", "x=x.npy", "--input", "y=y.npy"]
    assert main([*argv, "--output-dir", "res", *common]) == 0
    result = {"out": np.load(workdir / "res" / "out.npy")}
    assert_close(result, onnxruntime_outputs(symbolic_model(), inputs), REL_TOL)
    assert main(["run", "dynamic.onnx", "--random-inputs", *common]) == 1
    assert "--input-shape x=1x1" in capsys.readouterr().err


def test_cli_bench_with_input_shape(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "dynamic.onnx", "--input-shape", "x=2x3", "--runs", "2", "--warmup", "0"]
    assert main([*argv, "--target-cpu", CPU, "--threads", "1"]) == 0
    assert "inputs x 2x3, y 2x6" in capsys.readouterr().out


def test_opt_with_input_shape(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert opt_main(["dynamic.onnx", "--input-shape", "x=2x3", "--emit", "graph"]) == 0
    assert "tensor<2x3xf32>" in capsys.readouterr().out
    assert opt_main(["dynamic.onnx", "--emit", "graph"]) == 2
    assert "ember opt: error: the model has symbolic input dimensions" in capsys.readouterr().err
    argv = ["dynamic.onnx", "--input-shape", "y=2x6", "--input-shape", "x=2x3"]
    assert opt_main([*argv, "--compare-intermediates", "--threads", "1"]) == 0
    assert "every intermediate matches" in capsys.readouterr().out


def test_profile_with_input_shape(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ember.tools.profile import main as profile_main

    argv = ["dynamic.onnx", "--runs", "1", "--warmup", "0"]
    assert profile_main([*argv, "--input-shape", "x=2x3"]) == 0
    assert "median wall time of a run" in capsys.readouterr().out
    assert profile_main(argv) == 1
    assert "error: the model has symbolic input dimensions" in capsys.readouterr().err


# -- the ONNX backend and the conformance runner -----------------------------------------------


def test_backend_pins_from_the_first_run_or_from_input_shapes() -> None:
    rep = EmberBackend.prepare(symbolic_model(), threads=1)
    assert isinstance(rep.compiled, SpecializingModel)
    for batch, seq in [(2, 3), (1, 8)]:
        inputs = feeds(batch, seq, seed=seq)
        (out,) = rep.run([inputs["x"], inputs["y"]])
        assert_close({"out": out}, onnxruntime_outputs(symbolic_model(), inputs), REL_TOL)
    pinned = EmberBackend.prepare(symbolic_model(), input_shapes={"x": [1, 8]}, threads=1)
    assert isinstance(pinned.compiled, ember.CompiledModel)
    with pytest.raises(ember.ModelError, match="'z', which is not an input"):
        EmberBackend.prepare(symbolic_model(), input_shapes={"z": [1]})


@pytest.fixture(scope="module")
def symbolic_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnx.backend.test.case.test_case import TestCase

    x = np.random.default_rng(0).standard_normal((3, 16), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu_symbolic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    name = "test_relu_symbolic"
    case = TestCase(name, name, None, None, model, [([x], [np.maximum(x, 0)])], "node", 1e-3, 1e-7)
    dest = tmp_path_factory.mktemp("suite")
    conf.write_node_tests(dest, [case])
    return dest


@pytest.mark.parametrize(
    ("pins", "status"),
    [
        ({}, "passed"),
        ({"x": [3, 16]}, "passed"),
        ({"other": [1]}, "passed"),
        ({"x": [4, 16]}, "errored"),
    ],
)
def test_conformance_cases_with_symbolic_inputs(
    symbolic_suite: Path, pins: dict, status: str
) -> None:
    options = {"backend": {"threads": 1, "input_shapes": pins}}
    result = conf.run_case(str(symbolic_suite / "test_relu_symbolic"), 1e-3, 1e-7, options)
    assert result["status"] == status, result
    if status == "errored":
        assert "expected shape [4, 16], given [3, 16]" in result["message"]


def test_conformance_command_takes_input_shape(
    symbolic_suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conf.data, "data_dir", lambda root=None, regenerate=False: symbolic_suite)
    report_path = tmp_path / "report.json"
    argv = ["-k", "relu_symbolic", "-j", "1", "-q", "--json", str(report_path)]
    assert conf.main([*argv, "--input-shape", "x=3x16"]) == 0
    report = json.loads(report_path.read_text())
    assert report["settings"]["input_shapes"] == {"x": [3, 16]}
    assert report["cases"]["test_relu_symbolic"]["status"] == "passed"


# -- the specialisation cache ------------------------------------------------------------------


def test_specialization_cache_is_a_bounded_lru_that_remembers_failures() -> None:
    built: list[dict] = []

    def build(shapes: dict[str, list[int]]) -> str:
        built.append(shapes)
        if shapes["x"][0] == 7:
            raise ember.ModelError("Reshape node 'r' cannot reshape 42 elements to [4, 3]")
        if shapes["x"][0] == 8:
            raise ember.UnsupportedOpError("Foo", "f", 17)
        return f"compiled {shapes['x']}"

    cache: SpecializationCache[str] = SpecializationCache(build, capacity=2)
    key = {n: (("x", (n, 3)),) for n in range(1, 9)}
    assert cache.get(key[1]) == "compiled [1, 3]"
    cache.get(key[2])
    cache.get(key[1])  # now 2 is the least recently used
    cache.get(key[3])
    assert [k for k, _ in cache.items()] == [key[1], key[3]]
    with pytest.warns(SpecializationWarning, match="dropped from the cache of 2"):
        cache.get(key[2])  # dropped, so compiled again
    assert cache.builds == 4
    for _ in range(2):
        with pytest.raises(ember.InputError, match=r"for input shapes \{'x': \[7, 3\]\}: Reshape"):
            cache.get(key[7])
    assert cache.builds == 5
    with pytest.raises(ember.UnsupportedOpError):  # not about the shapes: raised as it is
        cache.get(key[8])
