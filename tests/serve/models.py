"""Tiny models for the serving tests (onnx.helper, seeded weights, a symbolic batch axis).

dense_model()        x [batch, 4] f32, ids [batch, 2] i64 -> y [batch, 3] f32, picked [batch, 2, 3]
masked_mean_model()  tokens [batch, seq, 4] f32, mask [batch, seq] f32 -> pooled [batch, 4]
batch_mixing_model() x [batch, 4] -> x - mean over the batch (rows depend on each other)
(with_symbolic_batch and bert_with_symbolic_shapes, for the benchmark's models, are in
ember.tools.symbolic_zoo.)
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, name, inputs, outputs, initializers) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def dense_model(seed: int = 0) -> onnx.ModelProto:
    """y = Relu(x @ W + b); picked = table[ids] (a Gather: ids must be in [0, 5))."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((5, 3)).astype(np.float32), "table"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
        helper.make_node("Gather", ["table", "ids"], ["picked"], axis=0),
    ]
    return _model(
        nodes,
        "dense",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 2]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("picked", TensorProto.FLOAT, ["batch", 2, 3]),
        ],
        weights,
    )


def masked_mean_model() -> onnx.ModelProto:
    """pooled = sum(tokens * mask, seq) / sum(mask, seq): padding with mask 0 changes nothing."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    last = numpy_helper.from_array(np.array([2], np.int64), "last")
    nodes = [
        helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
        helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axes"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axes"], ["count"], keepdims=0),
        helper.make_node("Div", ["total", "count"], ["pooled"]),
    ]
    return _model(
        nodes,
        "masked_mean",
        [
            helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "seq", 4]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 4])],
        [axes, last],
    )


def batch_mixing_model() -> onnx.ModelProto:
    """y = x - mean(x over the batch): each row's answer depends on the other rows."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[0], keepdims=1),
        helper.make_node("Sub", ["x", "mean"], ["y"]),
    ]
    return _model(
        nodes,
        "mixing",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [],
    )


def dense_feeds(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((rows, 4)).astype(np.float32),
        "ids": rng.integers(0, 5, size=(rows, 2)).astype(np.int64),
    }
