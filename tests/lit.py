"""IR tests as files, the way MLIR's and xDSL's lit tests are written: `tests/**/*.mlir`.

Each file holds IR and the commands that check it, on `// RUN:` lines (a line ending in `\\`
continues on the next RUN line):

    // RUN: ember-opt %s --random-weights --pipeline canonicalize,dce | filecheck %s

`%s` is the file's path. `ember-opt` runs `python -m ember.tools.opt` and `filecheck` the
`filecheck` package, both with the interpreter running pytest (so the checkout under test, not
whatever is on PATH). The commands run in bash with `pipefail`: a test passes when every RUN
line exits 0. tests/conftest.py collects each file as one test item.

The usual line, `ember-opt ARGS | filecheck ARGS`, runs both in the pytest process
(`ember.tools.opt.main`, output captured, then the `filecheck` package on it through
filecheck_util.run_filecheck): an ember-opt subprocess would spend ~0.8 s of its ~1 s
importing xDSL and ember again, a filecheck one ~0.12 s of CPU, for each of ~50 RUN lines.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ember.tests.filecheck_util import run_filecheck

RUN_PREFIX = re.compile(r"^\s*//\s*RUN:\s?(.*)$")
TOOLS = {
    "ember-opt": [sys.executable, "-m", "ember.tools.opt"],
    "filecheck": [sys.executable, "-m", "filecheck"],
}
TIMEOUT_SECONDS = 120


def run_lines(text: str) -> list[str]:
    """The commands of a file's RUN lines, continuations joined."""
    commands: list[str] = []
    pending: list[str] = []
    for line in text.splitlines():
        match = RUN_PREFIX.match(line)
        if match is None:
            continue
        part = match.group(1).strip()
        continued = part.endswith("\\")
        pending.append(part[:-1].strip() if continued else part)
        if not continued:
            commands.append(" ".join(pending))
            pending = []
    if pending:
        commands.append(" ".join(pending))
    return commands


def expand(command: str, path: Path) -> str:
    """`command` with `%s` replaced by `path` and each pipeline stage's tool by its command."""
    stages = []
    for stage in command.replace("%s", shlex.quote(str(path))).split("|"):
        words = stage.strip().split(maxsplit=1)
        if words and words[0] in TOOLS:
            words[0] = shlex.join(TOOLS[words[0]])
        stages.append(" ".join(words))
    return " | ".join(stages)


def pipelines(text: str) -> list[str]:
    """The `--pipeline` of each RUN line that has one (for tests that also evaluate the IR)."""
    found = [re.search(r"--pipeline[= ](\S+)", c) for c in run_lines(text)]
    return [m.group(1).strip("'\"") for m in found if m]


def filled_weights(text: str) -> list[tuple[str, float]]:
    """The `--weight NAME=VALUE` settings of a file's RUN lines (weights of one value each)."""
    found = re.findall(r"--weight[= ](\S+?)=(\S+)", " ".join(run_lines(text)))
    return [(name, float(value)) for name, value in found]


def opt_then_filecheck(command: str, path: Path) -> tuple[list[str], list[str]] | None:
    """The arguments of ember-opt and of filecheck when `command` is exactly
    `ember-opt ARGS | filecheck ARGS`, else None (such lines run in bash)."""
    stages = [shlex.split(stage) for stage in command.replace("%s", str(path)).split("|")]
    if len(stages) != 2 or not all(stages):
        return None
    (opt, *opt_args), (check, *check_args) = stages
    if opt != "ember-opt" or check != "filecheck":
        return None
    return opt_args, check_args


def run_in_process(opt_args: list[str], check_args: list[str]) -> subprocess.CompletedProcess[str]:
    """ember-opt in this process, its output checked by filecheck in this process too."""
    from ember.tools.opt import main as ember_opt
    from ember.tools.verbosity import restored_logging

    out, err = io.StringIO(), io.StringIO()
    with restored_logging(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = ember_opt(opt_args)
        except SystemExit as exit:  # argparse on a bad RUN line
            status = exit.code if isinstance(exit.code, int) else 2
    if status != 0:
        return subprocess.CompletedProcess(
            ["ember-opt", *opt_args], status, out.getvalue(), err.getvalue()
        )
    status, diagnostics = run_filecheck(check_args, out.getvalue())
    return subprocess.CompletedProcess(["filecheck", *check_args], status, "", diagnostics)


class LitFailure(Exception):
    def __init__(self, command: str, result: subprocess.CompletedProcess[str]):
        super().__init__(command)
        self.command, self.result = command, result


class MlirTestFile(pytest.File):
    def collect(self) -> list[pytest.Item]:
        return [MlirTestItem.from_parent(self, name=self.path.name)]


class MlirTestItem(pytest.Item):
    def runtest(self) -> None:
        commands = run_lines(self.path.read_text())
        if not commands:
            raise pytest.fail.Exception(f"{self.path}: no // RUN: line", pytrace=False)
        for command in commands:
            split = opt_then_filecheck(command, self.path)
            if split is not None:
                result = run_in_process(*split)
                if result.returncode != 0:
                    raise LitFailure(command, result)
                continue
            shell_command = expand(command, self.path)
            result = subprocess.run(
                ["bash", "-o", "pipefail", "-c", shell_command],
                capture_output=True,
                text=True,
                timeout=TIMEOUT_SECONDS,
                cwd=self.path.parent,
            )
            if result.returncode != 0:
                raise LitFailure(command, result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:  # type: ignore[no-untyped-def, override]
        if isinstance(excinfo.value, LitFailure):
            failure = excinfo.value
            return (
                f"RUN: {failure.command}\nexit status {failure.result.returncode}\n"
                f"--- stderr ---\n{failure.result.stderr}\n--- stdout ---\n{failure.result.stdout}"
            )
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"mlir test: {self.path.name}"
