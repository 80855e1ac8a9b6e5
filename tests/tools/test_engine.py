"""Config / Predictor: the docs walk-through, the on-disk compile cache, tensor-handle checks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import ember
import ember.engine.aot
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tests.runtime.util import save, small_convnet

DOCS = Path(__file__).resolve().parents[2] / "docs" / "engine_api.md"
# Float32 kernels vs onnxruntime: different summation orders, same math.
REL_TOL = 1e-4


def _snippet() -> str:
    match = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert match, f"no python snippet in {DOCS}"
    return match.group(1)


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Counts calls of the AOT compiler behind the cache."""
    calls: list[Path] = []
    real = ember.engine.aot.compile_artifact

    def counting(model: object, output: object, **kwargs: object) -> object:
        calls.append(Path(str(output)))
        return real(model, output, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ember.engine.aot, "compile_artifact", counting)
    return calls


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    save(small_convnet(), tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_readme_shows_the_tested_walkthrough() -> None:
    assert _snippet() in (DOCS.parents[1] / "README.md").read_text()


def test_docs_walkthrough_runs_and_matches_onnxruntime(workdir: Path, compiles: list) -> None:
    namespace: dict[str, object] = {}
    exec(compile(_snippet(), str(DOCS), "exec"), namespace)
    predictor = namespace["predictor"]
    assert isinstance(predictor, ember.Predictor)
    feeds = {n: predictor.get_input_handle(n).copy_to_cpu() for n in predictor.get_input_names()}
    expected = onnxruntime_outputs(small_convnet(), feeds)
    assert_close({"logits": namespace["result"]}, {"logits": expected["logits"]}, rel=REL_TOL)
    assert len(compiles) == 1 and compiles[0].parent == workdir / "cache" / "artifacts"


_SECOND_PROCESS = r"""
import sys, time
import numpy as np
import ember, ember.engine.aot

def no_compiling(*args, **kwargs):
    raise SystemExit("compiled although the artifact is cached")

ember.engine.aot.compile_artifact = no_compiling
start = time.perf_counter()
config = ember.Config(sys.argv[1])
config.set_cpu_math_library_num_threads(2)
predictor = ember.create_predictor(config)
x = np.load(sys.argv[2])
(logits, features) = predictor.run([x])
np.save(sys.argv[3], logits)
print(f"{time.perf_counter() - start:.3f}")
"""


def test_second_process_loads_the_cached_artifact(workdir: Path, compiles: list) -> None:
    config = ember.Config("model.onnx")
    config.set_cpu_math_library_num_threads(2)
    x = np.random.default_rng(5).standard_normal((2, 8, 10, 10)).astype(np.float32)
    first = ember.create_predictor(config).run([x])
    assert first is not None and len(compiles) == 1
    # Same process, same options: a hit.
    ember.create_predictor(config)
    assert len(compiles) == 1

    np.save(workdir / "x.npy", x)
    result = subprocess.run(
        [sys.executable, "-c", _SECOND_PROCESS, "model.onnx", "x.npy", "logits.npy"],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(workdir / "logits.npy"), first[0])


def test_cache_key_covers_options(workdir: Path, compiles: list) -> None:
    for threads, ir_optim in [(1, True), (2, True), (1, False), (1, True)]:
        config = ember.Config("model.onnx")
        config.set_cpu_math_library_num_threads(threads)
        config.switch_ir_optim(ir_optim)
        ember.create_predictor(config)
    assert len(compiles) == 3 and len(set(compiles)) == 3


def test_ir_optim_off_compiles_without_graph_passes(workdir: Path) -> None:
    config = ember.Config("model.onnx")
    config.switch_ir_optim(False)
    predictor = ember.create_predictor(config)
    pipeline = json.loads((config.artifact_path() / "manifest.json").read_text())["pipeline"]
    assert "fuse-conv-activation" not in pipeline and "fold-constants" not in pipeline
    assert "lower-kernels-to-loops" in pipeline
    x = np.random.default_rng(6).standard_normal((2, 8, 10, 10)).astype(np.float32)
    outputs = predictor.run([x])
    assert outputs is not None
    expected = onnxruntime_outputs(small_convnet(), {"x": x})
    assert_close(dict(zip(predictor.get_output_names(), outputs)), expected, rel=REL_TOL)


def test_corrupt_cache_entry_is_recompiled(workdir: Path, compiles: list) -> None:
    config = ember.Config("model.onnx")
    ember.create_predictor(config)
    library = config.artifact_path() / "model.so"
    data = library.read_bytes()
    # A new file, as a crash or a copy would leave: rewriting the mapped one would SIGBUS us.
    library.unlink()
    library.write_bytes(data[:100])
    predictor = ember.create_predictor(config)
    assert len(compiles) == 2
    assert predictor.get_output_names() == ["logits", "features"]


def test_config_from_an_artifact_directory(small_artifact: Path, compiles: list) -> None:
    config = ember.Config(small_artifact)
    assert config.is_artifact()
    assert ember.Predictor(config).executable.threads == 2  # as compiled
    config.set_cpu_math_library_num_threads(1)
    predictor = ember.Predictor(config)
    assert predictor.executable.threads == 1
    x = np.random.default_rng(7).standard_normal((2, 8, 10, 10)).astype(np.float32)
    predictor.get_input_tensor("x").copy_from_cpu(x)
    predictor.run()
    logits = predictor.get_output_tensor("logits").copy_to_cpu()
    expected = onnxruntime_outputs(small_convnet(), {"x": x})
    assert_close({"logits": logits}, {"logits": expected["logits"]}, rel=REL_TOL)
    assert compiles == []


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model not found: .*nothing.onnx"):
        ember.create_predictor(ember.Config(tmp_path / "nothing.onnx"))
    with pytest.raises(ValueError, match="Config has no model"):
        ember.create_predictor(ember.Config())
    with pytest.raises(ValueError, match="threads must be >= 1"):
        ember.Config("m.onnx").set_cpu_math_library_num_threads(0)


def test_tensor_handles_check_against_the_manifest(small_artifact: Path) -> None:
    predictor = ember.create_predictor(ember.Config(small_artifact))
    x = predictor.get_input_handle("x")
    assert x.name() == "x" and x.shape() == [2, 8, 10, 10] and x.type() == np.float32
    with pytest.raises(ValueError, match="tensor 'x': expected dtype float32, given float64"):
        x.copy_from_cpu(np.zeros((2, 8, 10, 10)))
    with pytest.raises(ValueError, match=r"tensor 'x': expected shape \[2, 8, 10, 10\], given"):
        x.copy_from_cpu(np.zeros((1, 8, 10, 10), np.float32))
    with pytest.raises(ValueError, match=r"tensor 'x': the model was compiled for shape"):
        x.reshape([4, 8, 10, 10])
    x.reshape([2, 8, 10, 10])
    with pytest.raises(KeyError, match="no input named 'y'; its inputs: \\['x'\\]"):
        predictor.get_input_handle("y")
    with pytest.raises(ValueError, match=r"inputs not set .*\['x'\]"):
        predictor.run()
    logits = predictor.get_output_handle("logits")
    with pytest.raises(ValueError, match="tensor 'logits' holds no data: run"):
        logits.copy_to_cpu()
    with pytest.raises(ValueError, match="tensor 'logits' is an output"):
        logits.copy_from_cpu(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"expected 1 inputs \['x'\], given 2"):
        predictor.run([np.zeros((2, 8, 10, 10), np.float32)] * 2)


def test_copy_from_cpu_copies(small_artifact: Path) -> None:
    predictor = ember.create_predictor(ember.Config(small_artifact))
    x = np.random.default_rng(8).standard_normal((2, 8, 10, 10)).astype(np.float32)
    predictor.get_input_handle("x").copy_from_cpu(x)
    expected = x.copy()
    x[:] = 0  # the caller reuses its buffer before run()
    predictor.run()
    reference = predictor.executable.run({"x": expected})
    np.testing.assert_array_equal(
        predictor.get_output_handle("logits").copy_to_cpu(), reference["logits"]
    )


def test_clones_run_concurrently(small_artifact: Path) -> None:
    predictor = ember.create_predictor(ember.Config(small_artifact))
    inputs = [
        np.random.default_rng(200 + i).standard_normal((2, 8, 10, 10)).astype(np.float32)
        for i in range(4)
    ]
    expected = [predictor.executable.run({"x": x})["logits"] for x in inputs]
    failures: list[int] = []

    def worker(i: int) -> None:
        clone = predictor.clone()
        for _ in range(20):
            clone.get_input_handle("x").copy_from_cpu(inputs[i])
            clone.run()
            if not np.array_equal(clone.get_output_handle("logits").copy_to_cpu(), expected[i]):
                failures.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_ir_optim_off_runs_an_unfolded_batch_norm(tmp_path: Path, monkeypatch) -> None:
    """Issue 15: switch_ir_optim(False) on a model with a BatchNormalization failed with "has
    no kernel form; run the graph pipeline (canonicalize) first" although canonicalize ran."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    stats = [
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 3).astype(np.float32), name)
        for name in ("scale", "bias", "mean", "var")
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("BatchNormalization", ["r", *(t.name for t in stats)], ["y"]),
        ],
        "bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
        stats,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "bn.onnx"))
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path / "cache"))
    config = ember.Config(str(tmp_path / "bn.onnx"))
    config.switch_ir_optim(False)
    predictor = ember.create_predictor(config)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    outputs = predictor.run([x])
    assert outputs is not None
    expected = onnxruntime_outputs(model, {"x": x})
    assert_close(dict(zip(predictor.get_output_names(), outputs)), expected, rel=REL_TOL)
