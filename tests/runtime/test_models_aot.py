"""Real networks compiled ahead of time, then run in a process that cannot import the compiler."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from ember.tests.oracle import assert_close, onnxruntime_outputs, random_inputs
from ember.tests.runtime.util import compile_model, run_without_compiler
from ember.tools.model_zoo import light_model_path, resnet18

# max |ember - onnxruntime| <= REL_TOL * max |onnxruntime| per output: float32 end to end, the
# engines differ only in summation order (measured ~1e-6 on ResNet-18).
REL_TOL = 1e-4


def _check(model: onnx.ModelProto, tmp_path: Path, threads: int) -> None:
    artifact = compile_model(model, tmp_path / "compiled", threads=threads)
    feeds = random_inputs(model, seed=0)
    results = run_without_compiler(artifact, feeds, tmp_path)
    assert_close(results, onnxruntime_outputs(model, feeds), rel=REL_TOL)


# ~16 s on an idle 2-core machine: left in the default run so CI checks a real network's numerics.
def test_resnet18_seeded_weights(tmp_path: Path) -> None:
    _check(resnet18(seed=0), tmp_path, threads=2)


@pytest.mark.slow
def test_light_resnet50(tmp_path: Path) -> None:
    _check(onnx.load(str(light_model_path("resnet50"))), tmp_path, threads=2)
