"""AOT artifacts: what `compile_artifact` writes, and every way `ember.runtime.load` rejects one."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import ember.runtime
from ember.runtime import ArtifactError
from ember.runtime.cpu_features import (
    LLVM_TO_CPUINFO,
    host_cpu_flags,
    missing_features,
    required_features,
)
from tests.oracle import assert_close, onnxruntime_outputs
from tests.runtime.util import run_without_compiler, small_convnet

# Float32 kernels vs onnxruntime: different summation orders, same math.
REL_TOL = 1e-4


def _feeds(seed: int, batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, 8, 10, 10)).astype(np.float32)}


@pytest.fixture
def artifact(small_artifact: Path, tmp_path: Path) -> Path:
    """A private copy to tamper with."""
    return Path(shutil.copytree(small_artifact, tmp_path / "artifact"))


def _edit_manifest(artifact: Path, **changes: object) -> None:
    path = artifact / "manifest.json"
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


def _never_dlopen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rejections must come before any of the artifact's code is loaded."""

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the library was loaded before the artifact was validated")

    monkeypatch.setattr("ember.runtime.artifact.ctypes.CDLL", fail)


def test_manifest_records_what_the_runtime_checks(small_artifact: Path) -> None:
    document = json.loads((small_artifact / "manifest.json").read_text())
    source = (small_artifact.parent / "model.onnx").read_bytes()
    assert document["source"]["sha256"] == hashlib.sha256(source).hexdigest()
    assert document["ember_version"] == ember.__version__
    assert document["threads"] == 2
    assert [s["name"] for s in document["inputs"]] == ["x"]
    assert [(s["name"], s["shape"]) for s in document["outputs"]] == [
        ("logits", [2, 5]),
        ("features", [2, 8, 10, 10]),
    ]
    assert document["target"]["cpu"] and "avx2" in document["target"]["required_features"]
    for name in ("model.so", "weights.bin"):
        data = (small_artifact / name).read_bytes()
        assert document["files"][name] == {
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    assert document["files"]["weights.bin"]["bytes"] == document["weights_bytes"]


def test_loaded_artifact_matches_onnxruntime(small_artifact: Path) -> None:
    exe = ember.runtime.load(small_artifact)
    assert exe.input_names == ["x"] and exe.output_names == ["logits", "features"]
    feeds = _feeds(1)
    assert_close(exe.run(feeds), onnxruntime_outputs(small_convnet(), feeds), rel=REL_TOL)


@pytest.mark.parametrize("api", ["load", "predictor"])
def test_artifact_runs_where_the_compiler_cannot_be_imported(
    small_artifact: Path, tmp_path: Path, api: str
) -> None:
    feeds = _feeds(2)
    results = run_without_compiler(small_artifact, feeds, tmp_path, api)
    assert_close(results, onnxruntime_outputs(small_convnet(), feeds), rel=REL_TOL)


def test_one_model_from_many_threads(small_artifact: Path) -> None:
    exe = ember.runtime.load(small_artifact)
    inputs = [_feeds(100 + i) for i in range(6)]
    expected = [exe.run(feeds) for feeds in inputs]
    failures: list[str] = []
    barrier = threading.Barrier(len(inputs))

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(30):
            got = exe.run(inputs[i])
            for name, ref in expected[i].items():
                # Same code, same threads: a run that shared its arena would differ bitwise.
                if not np.array_equal(got[name], ref):
                    failures.append(f"thread {i}: {name} differs")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    assert_close(expected[3], onnxruntime_outputs(small_convnet(), inputs[3]), rel=REL_TOL)


def test_threads_override(small_artifact: Path) -> None:
    exe = ember.runtime.load(small_artifact, threads=1)
    assert exe.threads == 1
    feeds = _feeds(3)
    one = exe.run(feeds)
    exe.set_num_threads(2)
    assert_close(exe.run(feeds), one, rel=1e-6)


# -- rejections --------------------------------------------------------------------------------


def test_rejects_missing_cpu_features(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flags = host_cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo on this machine")
    absent = next(f for f, flag in LLVM_TO_CPUINFO.items() if flag not in flags)
    document = json.loads((artifact / "manifest.json").read_text())
    document["target"]["required_features"].append(absent)
    (artifact / "manifest.json").write_text(json.dumps(document))
    _never_dlopen(monkeypatch)
    with pytest.raises(ArtifactError, match=f"needs features this CPU lacks: {absent}"):
        ember.runtime.load(artifact)


def test_rejects_other_architecture(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = json.loads((artifact / "manifest.json").read_text())
    document["target"]["arch"] = "aarch64"
    (artifact / "manifest.json").write_text(json.dumps(document))
    _never_dlopen(monkeypatch)
    with pytest.raises(ArtifactError, match="compiled for aarch64"):
        ember.runtime.load(artifact)


def test_rejects_corrupt_library(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray((artifact / "model.so").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (artifact / "model.so").write_bytes(bytes(data))
    _never_dlopen(monkeypatch)
    with pytest.raises(ArtifactError, match=r"model.so: sha256 checksum mismatch"):
        ember.runtime.load(artifact)


def test_rejects_truncated_library(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = (artifact / "model.so").read_bytes()
    (artifact / "model.so").write_bytes(data[: len(data) // 3])
    _never_dlopen(monkeypatch)
    with pytest.raises(ArtifactError, match=r"model.so: \d+ bytes, .* truncated or corrupt"):
        ember.runtime.load(artifact)


def test_rejects_corrupt_weights(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray((artifact / "weights.bin").read_bytes())
    data[7] ^= 0x01
    (artifact / "weights.bin").write_bytes(bytes(data))
    _never_dlopen(monkeypatch)
    with pytest.raises(ArtifactError, match=r"weights.bin: sha256 checksum mismatch"):
        ember.runtime.load(artifact)


def test_rejects_weights_of_the_wrong_size(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = (artifact / "weights.bin").read_bytes()
    (artifact / "weights.bin").write_bytes(data[:-64])
    _never_dlopen(monkeypatch)
    with pytest.raises(ArtifactError, match=r"weights.bin: \d+ bytes, but the manifest's"):
        ember.runtime.load(artifact)


def test_rejects_manifest_weights_size_mismatch(
    artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = json.loads((artifact / "manifest.json").read_text())
    _edit_manifest(artifact, weights_bytes=document["weights_bytes"] + 4096)
    _never_dlopen(monkeypatch)
    with pytest.raises(ArtifactError, match=r"weights_bytes is \d+; the weights do not belong"):
        ember.runtime.load(artifact)


def test_rejects_missing_weights(artifact: Path) -> None:
    (artifact / "weights.bin").unlink()
    with pytest.raises(ArtifactError, match=r"weights.bin: missing"):
        ember.runtime.load(artifact)


def test_rejects_bad_json(artifact: Path) -> None:
    text = (artifact / "manifest.json").read_text()
    (artifact / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(ArtifactError, match=r"manifest.json: not valid JSON"):
        ember.runtime.load(artifact)


def test_rejects_missing_manifest(artifact: Path) -> None:
    (artifact / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"manifest.json: missing"):
        ember.runtime.load(artifact)


def test_rejects_manifest_without_required_fields(artifact: Path) -> None:
    document = json.loads((artifact / "manifest.json").read_text())
    del document["inputs"]
    (artifact / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match=r"lacks a required field \(KeyError\('inputs'\)\)"):
        ember.runtime.load(artifact)


def test_rejects_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not an artifact directory"):
        ember.runtime.load(tmp_path / "nowhere")
    (tmp_path / "manifest.json").write_text('{"hello": 1}')
    with pytest.raises(ArtifactError, match="not an ember artifact manifest"):
        ember.runtime.load(tmp_path)


def test_rejects_incompatible_ember_version(artifact: Path) -> None:
    major, minor, *_ = ember.__version__.split(".")
    _edit_manifest(artifact, ember_version=f"{major}.{int(minor) + 1}.0")
    with pytest.raises(ArtifactError, match=r"incompatible with this ember .*major.minor"):
        ember.runtime.load(artifact)


def test_accepts_other_patch_version(artifact: Path) -> None:
    major, minor, *_ = ember.__version__.split(".")
    _edit_manifest(artifact, ember_version=f"{major}.{minor}.99")
    assert ember.runtime.load(artifact).output_names == ["logits", "features"]


def test_artifact_errors_are_value_errors() -> None:
    assert issubclass(ArtifactError, ValueError)


# -- cpu features ------------------------------------------------------------------------------


def test_required_features_expand_portable_levels() -> None:
    v3 = required_features("x86-64-v3", "")
    assert {"avx2", "fma", "f16c", "bmi2"} <= set(v3) and "avx512f" not in v3
    v4 = required_features("x86-64-v4", "")
    assert {"avx512f", "avx512vl", "avx512bw"} <= set(v4)
    assert {"avx2", "fma"} <= set(required_features("haswell", ""))
    assert "avx512vnni" in required_features("icelake-server", "")
    # Disabled and unknown (tuning-only) features impose nothing.
    assert required_features("generic", "+avx2,-avx512f,+64bit,+fma") == ["avx2", "fma"]
    # Regression: Linux hides rdseed on Zen 5 while cpuid reports it, and ember never emits it;
    # requiring it made host builds unloadable on the machine that compiled them.
    assert required_features("znver5", "+avx2,+rdseed,+rdrnd") == ["avx2"]


def test_missing_features_translates_llvm_names_to_cpuinfo_flags() -> None:
    flags = {"sse4_1", "avx2", "fma", "abm"}
    assert missing_features(["sse4.1", "avx2", "fma", "lzcnt"], flags) == []
    assert missing_features(["avx512f", "sse4.2", "avx2"], flags) == ["avx512f", "sse4.2"]


def test_host_cpu_flags_parses_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nflags\t: other\n")
    assert host_cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx2", "fma"}
    # Where cpuinfo cannot be read there is nothing to check against (not Linux).
    assert host_cpu_flags(str(tmp_path / "absent")) is None


def test_recompiling_into_a_loaded_directory_loads_the_new_code(tmp_path: Path) -> None:
    """dlopen would hand back the old library for the same path; load must not."""
    from tests.runtime.util import compile_model

    artifact = compile_model(small_convnet(seed=1), tmp_path, threads=1)
    first = ember.runtime.load(artifact)
    compile_model(small_convnet(seed=2, batch=1), tmp_path, threads=1)
    second = ember.runtime.load(artifact)
    feeds = _feeds(9, batch=1)
    assert_close(second.run(feeds), onnxruntime_outputs(small_convnet(2, 1), feeds), rel=REL_TOL)
    feeds = _feeds(9, batch=2)
    assert_close(first.run(feeds), onnxruntime_outputs(small_convnet(1, 2), feeds), rel=REL_TOL)


def test_each_load_has_its_own_thread_count(small_artifact: Path) -> None:
    import ctypes

    one, two = ember.runtime.load(small_artifact, threads=1), ember.runtime.load(small_artifact)
    two.set_num_threads(2)

    def global_threads(exe: ember.runtime.LoadedArtifact) -> int:
        return ctypes.c_int32.in_dll(exe._keepalive, "ember_num_threads").value

    assert (global_threads(one), global_threads(two)) == (1, 2)


def test_rewriting_a_loaded_artifact_does_not_affect_it(artifact: Path) -> None:
    exe = ember.runtime.load(artifact)
    feeds = _feeds(10)
    before = exe.run(feeds)
    with open(artifact / "model.so", "r+b") as f:  # in place: the same inode
        f.truncate(100)
    after = exe.run(feeds)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
