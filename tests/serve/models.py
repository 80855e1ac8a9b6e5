"""Tiny models for the serving tests (onnx.helper, seeded weights, a symbolic batch axis).

dense_model()        x [batch, 4] f32, ids [batch, 2] i64 -> y [batch, 3] f32, picked [batch, 2, 3]
masked_mean_model()  tokens [batch, seq, 4] f32, mask [batch, seq] f32 -> pooled [batch, 4]
batch_mixing_model() x [batch, 4] -> x - mean over the batch (rows depend on each other)
with_symbolic_batch(model) -> the model with axis 0 of its inputs and outputs named 'batch'
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


def with_symbolic_batch(model: onnx.ModelProto, name: str = "batch") -> onnx.ModelProto:
    """A copy of `model` whose inputs and outputs declare axis 0 as the symbolic dim `name`
    (for builders that write a batch of 1, when the graph itself takes any batch)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for info in (*copy.graph.input, *copy.graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = name
    return copy


def bert_with_symbolic_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """`ember.tests.models.bert_encoder`'s graph with `input_ids` [batch, seq]: the position
    table is sliced to the input's length, and the one Reshape to a constant [1, seq, hidden]
    keeps axis 0 (0) and infers the length (-1). Sequences up to the built `seq` are valid."""
    copy = with_symbolic_batch(model)
    graph = copy.graph
    graph.input[0].type.tensor_type.shape.dim[1].dim_param = "seq"
    graph.output[0].type.tensor_type.shape.dim[1].dim_param = "seq"
    position = next(t.name for t in graph.initializer if t.name.startswith("position_embeddings"))
    sliced = position + "_sliced"
    extra = [
        numpy_helper.from_array(np.array([1], np.int64), "seq_axis_start"),
        numpy_helper.from_array(np.array([2], np.int64), "seq_axis_end"),
        numpy_helper.from_array(np.array([0], np.int64), "seq_zero"),
        numpy_helper.from_array(np.array([1], np.int64), "seq_axis"),
    ]
    slicing = [
        helper.make_node("Shape", ["input_ids"], ["ids_shape"]),
        helper.make_node("Slice", ["ids_shape", "seq_axis_start", "seq_axis_end"], ["ids_seq"]),
        helper.make_node("Slice", [position, "seq_zero", "ids_seq", "seq_axis"], [sliced]),
    ]
    for node in graph.node:
        node.input[:] = [sliced if name == position else name for name in node.input]
    for tensor in graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.int64 and array.ndim == 1 and len(array) == 3 and array[0] == 1:
            tensor.CopyFrom(
                numpy_helper.from_array(np.array([0, -1, array[2]], np.int64), tensor.name)
            )
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(slicing + nodes)
    graph.initializer.extend(extra)
    onnx.checker.check_model(copy)
    return copy
