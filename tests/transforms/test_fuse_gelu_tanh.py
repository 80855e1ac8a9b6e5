"""fuse-conv-activation on ONNX Gelu(approximate="tanh") after a matmul, against onnxruntime
(max |error| <= 1e-4 x max |reference|). The IR before and after, and a near miss left alone:
tests/transforms/fuse-conv-activation.mlir."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.core.context import make_context
from ember.frontend.onnx_importer import import_model
from ember.passes.pipeline import run_graph_passes
from ember.tests.oracle import assert_close, onnxruntime_outputs, random_inputs


def test_onnx_gelu_tanh_after_matmul_matches_onnxruntime() -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((24, 40)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Gelu", ["h"], ["y"], approximate="tanh"),
        ],
        "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 40])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    module, store = import_model(model)
    run_graph_passes(module, make_context(store))
    assert 'activation = "gelu_tanh"' in str(module)
    feeds = random_inputs(model, seed=0)
    actual = ember.compile(model, threads=1).run(feeds)
    assert_close(actual, onnxruntime_outputs(model, feeds), rel=1e-4)
