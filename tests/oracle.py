"""The oracles ember is checked against: onnxruntime and onnx.reference, on seeded inputs."""

from __future__ import annotations

import os

import numpy as np
import onnx

from ember.engine.feeds import seeded_inputs


def random_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for every real graph input (not initializers): floats ~ N(0,1), index
    inputs within the range the model accepts, other ints in [0, 16) (`ember.engine.feeds`)."""
    return seeded_inputs(model, seed)


def onnxruntime_outputs(
    model: onnx.ModelProto | str | os.PathLike[str], feeds: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def assert_close(
    actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], rel: float = 1e-4
) -> None:
    """max |actual - expected| <= rel * max |expected| for every output (and same shapes)."""
    assert set(actual) == set(expected), f"outputs {sorted(actual)} != {sorted(expected)}"
    for name, ref in expected.items():
        got = actual[name]
        assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
        scale = max(float(np.max(np.abs(ref))), 1e-30) if ref.size else 1.0
        err = float(np.max(np.abs(got.astype(np.float64) - ref))) if ref.size else 0.0
        assert err <= rel * scale, f"{name}: max abs error {err:.3g} > {rel} x {scale:.3g}"
