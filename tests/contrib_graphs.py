"""One-graph ONNX models of com.microsoft (onnxruntime contrib) ops for the tests that check
them against onnxruntime: graph inputs typed and shaped from their feeds, initializers from
arrays, outputs of the given element types."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS = "com.microsoft"


def contrib_model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    inits: dict[str, np.ndarray],
    outputs: dict[str, int],
    opset: int,
) -> onnx.ModelProto:
    """A model of `nodes` at ai.onnx `opset` and com.microsoft 1 (IR 8, which onnxruntime
    reads); `outputs` maps each output name to its TensorProto element type."""

    def info(name: str, array: np.ndarray) -> onnx.ValueInfoProto:
        elem = helper.np_dtype_to_tensor_dtype(array.dtype)
        return helper.make_tensor_value_info(name, elem, array.shape)

    graph = helper.make_graph(
        nodes,
        "contrib",
        [info(n, a) for n, a in inputs.items()],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs.items()],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in inits.items()],
    )
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model
