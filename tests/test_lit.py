"""The .mlir test runner (tests/lit.py): RUN lines, continuations, substitutions."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

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
