"""Small models whose inputs have symbolic dims, shared by the pinning and specialisation tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper


def symbolic_model() -> onnx.ModelProto:
    """x [batch, seq] and y [batch, 6] share the named dim `batch`; `seq` is x's alone.

    out = Relu((ReduceSum(x, axis 1, keepdims) + y) @ W): [batch, 4].
    """
    rng = np.random.default_rng(0)
    weight = onnx.numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "w")
    axes = onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
        helper.make_node("Add", ["s", "y"], ["a"]),
        helper.make_node("MatMul", ["a", "w"], ["m"]),
        helper.make_node("Relu", ["m"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "symbolic",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
        [weight, axes],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def fixed_reshape_model() -> onnx.ModelProto:
    """x [N, 6] reshaped to a constant [4, 3]: only N = 2 fits (a batch baked in by export)."""
    shape = onnx.numpy_helper.from_array(np.array([4, 3], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "shape"], ["r"]),
            helper.make_node("Relu", ["r"], ["y"]),
        ],
        "fixed_reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])],
        [shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feeds(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((batch, seq)).astype(np.float32),
        "y": rng.standard_normal((batch, 6)).astype(np.float32),
    }
