"""BatchNormalization with training_mode=1 (frontend/ops/normalization.py): the batch's own
mean and biased variance normalise x, and the running statistics are updated with momentum.
Compared with onnx.reference and a float64 numpy formula (onnxruntime's inference build has
no training mode); tolerance 1e-5 x max |expected| (float32 reductions of up to 120 values).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.tests.oracle import assert_close


@pytest.mark.parametrize(
    ("shape", "attrs"),
    [([2, 3, 4, 5], {}), ([6, 4, 7], {"epsilon": 1e-2, "momentum": 0.7}), ([5, 3], {})],
)
def test_batch_norm_training_mode_matches_reference(
    shape: list[int], attrs: dict[str, float]
) -> None:
    channels = shape[1]
    names = ["x", "scale", "bias", "mean", "var"]
    node = helper.make_node(
        "BatchNormalization", names, ["y", "running_mean", "running_var"], training_mode=1, **attrs
    )
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)] + [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [channels]) for n in names[1:]
    ]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
        for n in ("y", "running_mean", "running_var")
    ]
    model = helper.make_model(
        helper.make_graph([node], "bn", inputs, outputs),
        opset_imports=[helper.make_opsetid("", 15)],
    )
    rng = np.random.default_rng(0)
    feeds = {
        "x": (3 * rng.standard_normal(shape) + 1).astype(np.float32),
        "scale": rng.standard_normal(channels).astype(np.float32),
        "bias": rng.standard_normal(channels).astype(np.float32),
        "mean": rng.standard_normal(channels).astype(np.float32),
        "var": rng.uniform(0.5, 2, channels).astype(np.float32),
    }
    got = dict(zip(("y", "running_mean", "running_var"), ember.compile(model)(*feeds.values())))
    reference = ReferenceEvaluator(model).run(None, feeds)
    assert_close(got, dict(zip(("y", "running_mean", "running_var"), reference)), rel=1e-5)
    x = feeds["x"].astype(np.float64)
    axes = tuple(a for a in range(len(shape)) if a != 1)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    momentum = attrs.get("momentum", 0.9)
    expected_var = feeds["var"] * momentum + var * (1 - momentum)
    assert_close({"v": got["running_var"]}, {"v": expected_var}, rel=1e-5)
    expected_mean = feeds["mean"] * momentum + mean * (1 - momentum)
    assert_close({"m": got["running_mean"]}, {"m": expected_mean}, rel=1e-5)
