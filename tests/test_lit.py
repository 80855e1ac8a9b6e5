"""The .mlir test runner (tests/lit.py): RUN lines, continuations, substitutions; every pass has
its IR test file (tests/conftest.py collects tests/**/*.mlir, one test item per file)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ember.passes.pipeline import available_passes
from ember.tests.lit import expand, filled_weights, pipelines, run_lines

TEXT = """// RUN: ember-opt %s --random-weights \\
// RUN:   --pipeline canonicalize,dce | filecheck %s
// CHECK: graph.relu
// RUN: ember-opt %s --pipeline=dce
builtin.module {}
"""


def test_run_lines_join_continuations_and_ignore_checks() -> None:
    assert run_lines(TEXT) == [
        "ember-opt %s --random-weights --pipeline canonicalize,dce | filecheck %s",
        "ember-opt %s --pipeline=dce",
    ]
    assert pipelines(TEXT) == ["canonicalize,dce", "dce"]


def test_expand_runs_the_tools_with_this_interpreter() -> None:
    path = Path("/tmp/a b.mlir")
    command = expand("ember-opt %s --pipeline dce | filecheck %s", path)
    python = shlex.quote(sys.executable)
    assert command == (
        f"{python} -m ember.tools.opt '/tmp/a b.mlir' --pipeline dce"
        f" | {python} -m filecheck '/tmp/a b.mlir'"
    )


def test_filled_weights_are_read_from_the_run_lines() -> None:
    text = "// RUN: ember-opt %s --random-weights --weight two=2 \\\n// RUN:   --weight=wz=0.5 --pipeline dce\n"
    assert filled_weights(text) == [("two", 2.0), ("wz", 0.5)]


def test_every_pass_has_an_ir_test_file() -> None:
    """Each registered pass has `<name>.mlir` in tests/transforms (graph passes) or
    tests/lowering (kernel and loops stages) whose RUN lines run it."""
    tests = Path(__file__).parent
    missing = []
    for name in available_passes():
        files = [tests / stage / f"{name}.mlir" for stage in ("transforms", "lowering")]
        found = [f for f in files if f.is_file()]
        if not found or not any(
            name in spec.split(",") for spec in pipelines(found[0].read_text())
        ):
            missing.append(name)
    assert not missing, f"passes without an IR test file that runs them: {missing}"
