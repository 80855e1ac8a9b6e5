"""`ember compile | run | bench | opt`: artifacts written, outputs saved, errors named."""

from __future__ import annotations

import io
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import ember.runtime
import ember.tools
from ember.engine.aot import Progress
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tests.runtime.util import save, small_convnet
from ember.tools.cli import main

# Float32 kernels vs onnxruntime: different summation orders, same math.
REL_TOL = 1e-4


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 8, 10, 10)).astype(np.float32)


def test_compile_writes_an_artifact(tmp_path: Path) -> None:
    model = save(small_convnet(), tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "ember.tools.cli", "compile", str(model), "-o", "out"]
        + ["--threads", "1", "--opt-level", "2", "--target-cpu", "x86-64-v3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {tmp_path / 'out'} (model.so ")
    assert result.stderr == ""  # not a terminal: no progress display
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ember.h",
        "manifest.json",
        "model.so",
        "weights.bin",
    ]
    exe = ember.runtime.load(tmp_path / "out")
    info = exe.info
    assert info["threads"] == 1 and info["opt_level"] == 2
    assert info["target"]["cpu"] == "x86-64-v3"
    assert "avx512f" not in info["target"]["required_features"]
    assert_close(exe.run({"x": _x(1)}), onnxruntime_outputs(small_convnet(), {"x": _x(1)}), REL_TOL)


def test_compile_refuses_to_overwrite_other_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save(small_convnet(), tmp_path)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    assert main(["compile", str(model), "-o", str(tmp_path / "precious"), "-q"]) == 1
    assert "is not an ember artifact; not overwriting it" in capsys.readouterr().err
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_compile_reports_frontend_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    assert main(["compile", str(tmp_path / "broken.onnx"), "-o", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.startswith("ember compile: error: ")
    assert not (tmp_path / "out").exists()


def test_run_writes_outputs(
    small_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", _x(2))
    out = tmp_path / "outputs"
    argv = [
        "run",
        str(small_artifact),
        "--input",
        f"x={tmp_path / 'x.npy'}",
        "--output-dir",
        str(out),
    ]
    assert main([*argv, "--npz", str(tmp_path / "all.npz")]) == 0
    printed = capsys.readouterr().out.splitlines()
    expected = onnxruntime_outputs(small_convnet(), {"x": _x(2)})
    logits = expected["logits"]
    assert printed[0].startswith("logits: shape [2, 5] float32  min ")
    # The preview's statistics and first values are ember's outputs, printed with 6 digits.
    words = printed[0].replace(",", " ").replace("[", " ").replace("]", " ").split()
    stats = {
        words[i]: float(words[i + 1])
        for i in range(len(words) - 1)
        if words[i] in {"min", "max", "mean"}
    }
    np.testing.assert_allclose(
        [stats["min"], stats["max"], stats["mean"]],
        [logits.min(), logits.max(), logits.mean()],
        rtol=1e-4,
        atol=1e-5,
    )
    np.testing.assert_allclose([float(w) for w in words[-7:-1]], logits.reshape(-1)[:6], rtol=1e-4)
    assert words[-1] == "..."
    assert printed[1] == f"  -> {out / 'logits.npy'}"
    assert printed[2].startswith("features: shape [2, 8, 10, 10] float32  min ")
    assert printed[-1] == f"wrote 2 outputs to {tmp_path / 'all.npz'}"
    written = {name: np.load(out / f"{name}.npy") for name in expected}
    assert_close(written, expected, rel=REL_TOL)
    with np.load(tmp_path / "all.npz") as archive:
        assert_close(dict(archive), expected, rel=REL_TOL)


def test_run_accepts_a_bare_file_for_a_single_input(
    small_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", _x(3))
    assert main(["run", str(small_artifact), "--input", str(tmp_path / "x.npy")]) == 0
    assert "logits: shape [2, 5]" in capsys.readouterr().out
    assert main(["run", str(small_artifact), "--random-inputs"]) == 0


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda d: ["--input", f"y={d / 'x.npy'}"], "the model has no input 'y'; inputs: ['x']"),
        (lambda d: [], "no --input for ['x'] (or pass --random-inputs)"),
        (lambda d: ["--input", f"x={d / 'small.npy'}"], "input 'x': expected shape [2, 8, 10, 10]"),
        (lambda d: ["--input", f"x={d / 'absent.npy'}"], "cannot read"),
    ],
)
def test_run_errors_name_the_input(
    small_artifact: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_input: object,
    message: str,
) -> None:
    np.save(tmp_path / "x.npy", _x(4))
    np.save(tmp_path / "small.npy", _x(4)[:1])
    assert main(["run", str(small_artifact), *make_input(tmp_path)]) == 1  # type: ignore[operator]
    err = capsys.readouterr().err
    assert err.startswith("ember run: error: ") and message in err


def test_run_rejects_a_corrupt_artifact(
    small_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    copy = Path(shutil.copytree(small_artifact, tmp_path / "copy"))
    (copy / "weights.bin").write_bytes(b"\0" * 64)
    assert main(["run", str(copy), "--random-inputs"]) == 1
    assert "weights.bin: 64 bytes, but the manifest's weights_bytes" in capsys.readouterr().err


def test_bench_compares_with_onnxruntime(
    small_artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", str(small_artifact), "--runs", "5", "--warmup", "1", "--threads", "1"]
    assert main([*argv, "--compare", "onnxruntime"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("host: ") and ", LLVM cpu " in lines[1]
    assert lines[2].split()[:8] == ["engine", "threads", "runs", "p50", "ms", "p90", "ms", "p99"]
    assert lines[3].split()[:3] == ["ember", "1", "5"]
    assert lines[4].split()[:3] == ["onnxruntime", "1", "5"]
    assert lines[5].startswith("p50 ratio ember/onnxruntime: ")


def test_bench_compiles_an_onnx_model_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save(small_convnet(), tmp_path)
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path / "cache"))
    np.save(tmp_path / "x.npy", _x(5))
    argv = ["bench", str(model), "--runs", "3", "--warmup", "0", "--input", str(tmp_path / "x.npy")]
    assert main(argv) == 0
    assert main(argv) == 0
    assert len(list((tmp_path / "cache" / "artifacts").iterdir())) == 1
    assert capsys.readouterr().out.count("\nember ") == 2


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("opt", ["model.onnx", "--print-ir-after-all", "-p", "dce"]),
        ("conformance", ["--op", "Relu"]),
    ],
)
def test_delegated_commands_get_their_arguments_untouched(
    monkeypatch: pytest.MonkeyPatch, command: str, args: list[str]
) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType(f"ember.tools.{command}")
    fake.main = lambda argv: seen.append(list(argv)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, f"ember.tools.{command}", fake)
    monkeypatch.setattr(ember.tools, command, fake, raising=False)
    assert main([command, *args]) == 0
    assert seen == [args]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_stages_on_a_terminal_only() -> None:
    terminal = _Terminal()
    progress = Progress(terminal)
    with progress.stage("LLVM codegen (O3)"):
        pass
    assert "LLVM codegen (O3)" in terminal.getvalue() and " s\n" in terminal.getvalue()
    assert set(progress.seconds) == {"LLVM codegen (O3)"}

    for stream, quiet in [(io.StringIO(), False), (_Terminal(), True)]:
        silent = Progress(stream, quiet=quiet)
        with silent.stage("import"):
            pass
        assert stream.getvalue() == "" and "import" in silent.seconds


def test_unknown_target_cpu_is_refused_before_compiling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save(small_convnet(), tmp_path)
    argv = ["compile", str(model), "-o", str(tmp_path / "out"), "--target-cpu", "pentium9"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "unknown target cpu 'pentium9'; use host or one of: x86-64, x86-64-v2" in err
    assert not (tmp_path / "out").exists()


def test_bench_warns_when_compare_model_is_not_the_source(
    small_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = save(small_convnet(seed=3), tmp_path, "other.onnx")
    argv = ["bench", str(small_artifact), "--runs", "2", "--warmup", "0", "--threads", "1"]
    assert main([*argv, "--compare", "onnxruntime", "--onnx", str(other)]) == 0
    assert f"warning: {other} is not the model" in capsys.readouterr().err
