"""The default thread count honours OMP_NUM_THREADS and the process's CPU affinity."""

from __future__ import annotations

import os

import pytest

from ember.core.target import host_target, named_target
from ember.runtime.threads import default_threads


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("3", 3), ("2,1", 2)])
def test_omp_num_threads_sets_the_default(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: int
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert default_threads() == expected
    assert host_target().threads == expected
    assert named_target("x86-64-v3").threads == expected
    assert host_target(threads=4).threads == 4  # an explicit count wins


@pytest.mark.parametrize("value", ["", "0", "many", "-2"])
def test_unusable_omp_num_threads_falls_back_to_the_usable_cores(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert default_threads() == len(os.sched_getaffinity(0))


def test_compiled_model_defaults_to_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from onnx import TensorProto, helper

    import ember

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    compiled = ember.compile(model)
    assert compiled.threads == 1
    np.testing.assert_array_equal(compiled.run({"x": -np.ones((4, 8), np.float32)})["y"], 0)
