"""docs/quantization.md's walk-through runs: every ```python and ```bash block, in order, in an
empty directory (```text blocks are sample output). A bash line `ember ARGS` runs
`ember.tools.cli.main(ARGS)` in this process (what the `ember` script calls; a subprocess per
line cost ~1.2 s of CPU importing ember again, and tests/tools/test_cli.py runs the entry
point itself); any non-zero exit fails the test."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ember.tools.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "quantization.md"


def walkthrough_blocks() -> list[tuple[str, str]]:
    return re.findall(r"^```(python|bash)\n(.*?)^```", DOC.read_text(), re.M | re.S)


def test_walkthrough_has_the_commands_it_documents() -> None:
    blocks = walkthrough_blocks()
    commands = [line for lang, body in blocks if lang == "bash" for line in body.splitlines()]
    assert any(line.startswith("ember quantize ") for line in commands)
    assert any("--int8" in line for line in commands)
    assert any("enable_int8" in body for lang, body in blocks if lang == "python")


def test_walkthrough_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
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
            capsys.readouterr()  # what the python blocks printed
            status = main(argv[1:])
            out, err = capsys.readouterr()
            assert status == 0, f"{line}\n{out}\n{err}"
            if argv[1] == "quantize":
                assert "cosine" in out and "wrote model.int8.onnx" in out
    assert (tmp_path / "model.int8.onnx").is_file() and (tmp_path / "model.int8.ember").is_dir()
