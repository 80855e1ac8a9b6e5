"""Shared by the runtime and tools tests: small models, AOT compiling, a compiler-free subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ember.engine.aot import compile_artifact, resolve_target


def small_convnet(seed: int = 0, batch: int = 2) -> onnx.ModelProto:
    """Conv -> Relu -> residual Add -> GlobalAveragePool -> Flatten -> Gemm, two outputs.

    Small enough to compile in about a second, but with intermediates in the arena, weights in
    the blob and a multi-output signature.
    """
    rng = np.random.default_rng(seed)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Add", ["relu", "x"], ["features"]),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "small_convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8, 10, 10])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, 8, 10, 10]),
        ],
        [init("w", 8, 8, 3, 3), init("b", 8), init("fc_w", 5, 8), init("fc_b", 5)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, directory: Path, name: str = "model.onnx") -> Path:
    path = directory / name
    onnx.save(model, str(path))
    return path


def compile_model(
    model: onnx.ModelProto, directory: Path, threads: int = 2, cpu: str = "host"
) -> Path:
    """Save `model` to directory/model.onnx and AOT-compile it to directory/artifact."""
    directory.mkdir(parents=True, exist_ok=True)
    source = save(model, directory)
    build = compile_artifact(
        source, directory / "artifact", target=resolve_target(cpu, threads), opt_level=3
    )
    return build.path


@pytest.fixture(scope="session")
def small_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`small_convnet()` compiled for 2 threads, once per session (~1 s)."""
    return compile_model(small_convnet(), tmp_path_factory.mktemp("small"), threads=2)


# Makes importing xdsl, llvmlite or onnx raise ImportError in a fresh interpreter, as on a
# machine with only numpy and the ember runtime installed (the start of a `python -c` script).
BLOCK_COMPILER_IMPORTS = r"""
import importlib.abc, sys

class Blocker(importlib.abc.MetaPathFinder):
    BLOCKED = ("xdsl", "llvmlite", "onnx", "onnxruntime")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Blocker())
for blocked in Blocker.BLOCKED:
    try:
        __import__(blocked)
    except ImportError:
        pass
    else:
        raise SystemExit(f"blocking {blocked} failed")
"""

_BLOCKED_SCRIPT = (
    BLOCK_COMPILER_IMPORTS
    + r"""
import json
import numpy as np
import ember
import ember.runtime

artifact, inputs, outputs, api = sys.argv[1:5]
feeds = dict(np.load(inputs))
if api == "load":
    results = ember.runtime.load(artifact).run(feeds)
else:  # the engine API on an artifact needs no compiler either
    predictor = ember.create_predictor(ember.Config(artifact))
    for name in predictor.get_input_names():
        predictor.get_input_handle(name).copy_from_cpu(feeds[name])
    predictor.run()
    results = {n: predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()}
np.savez(outputs, **results)
compiler = sorted(m for m in sys.modules if m.split(".")[0] in Blocker.BLOCKED)
print(json.dumps({"compiler_modules": compiler}))
"""
)


def run_without_compiler(
    artifact: Path, feeds: dict[str, np.ndarray], scratch: Path, api: str = "load"
) -> dict[str, np.ndarray]:
    """Run `artifact` in a subprocess that cannot import xdsl, llvmlite or onnx."""
    inputs, outputs = scratch / "inputs.npz", scratch / "outputs.npz"
    np.savez(inputs, **feeds)
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKED_SCRIPT, str(artifact), str(inputs), str(outputs), api],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stderr}"
    assert json.loads(result.stdout.splitlines()[-1]) == {"compiler_modules": []}
    return dict(np.load(outputs))
