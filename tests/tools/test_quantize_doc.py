"""docs/quantization.md's walk-through runs: every ```python and ```bash block, in order, in an
empty directory (```text blocks are sample output). A bash line `ember ARGS` runs
`python -m ember.tools.cli ARGS` with this interpreter; any non-zero exit fails the test."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "quantization.md"


def walkthrough_blocks() -> list[tuple[str, str]]:
    return re.findall(r"^```(python|bash)\n(.*?)^```", DOC.read_text(), re.M | re.S)


def test_walkthrough_has_the_commands_it_documents() -> None:
    blocks = walkthrough_blocks()
    commands = [line for lang, body in blocks if lang == "bash" for line in body.splitlines()]
    assert any(line.startswith("ember quantize ") for line in commands)
    assert any("--int8" in line for line in commands)
    assert any("enable_int8" in body for lang, body in blocks if lang == "python")


def test_walkthrough_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # The blocks' code reads and writes files relative to the walk-through's directory.
    namespace: dict[str, object] = {}
    for lang, body in walkthrough_blocks():
        if lang == "python":
            exec(compile(body, f"{DOC.name} (python block)", "exec"), namespace)
            continue
        for line in body.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            argv = shlex.split(line, comments=True)
            assert argv[0] == "ember", f"{DOC.name}: a bash line that is not `ember ...`: {line}"
            result = subprocess.run(
                [sys.executable, "-m", "ember.tools.cli", *argv[1:]],
                capture_output=True,
                text=True,
                env=os.environ.copy(),
                timeout=300,
            )
            assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
            if argv[1] == "quantize":
                assert "cosine" in result.stdout and "wrote model.int8.onnx" in result.stdout
    assert (tmp_path / "model.int8.onnx").is_file() and (tmp_path / "model.int8.ember").is_dir()
