"""plan-memory places a concat's inputs inside its output and erases the kernel.concat when the
inputs are contiguous ranges of the output (dims before the axis all 1): results against
onnxruntime (rel 1e-4 of the largest output magnitude), and the IR after plan-memory."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.core.context import make_context
from ember.frontend.onnx_importer import import_model
from ember.passes.pipeline import GRAPH_STAGE, build_pipeline
from ember.tests.oracle import assert_close, onnxruntime_outputs, random_inputs


def fire_model(batch: int = 1, share: bool = False, odd: bool = False) -> onnx.ModelProto:
    """SqueezeNet's fire module: squeeze 1x1 -> (expand 1x1, expand 3x3) -> Concat -> conv.
    `share`: the 3x3 branch is also read after the concat; `odd`: 7 + 5 channels of 3x3 maps
    (36 and 45 floats: ranges not 64-byte aligned)."""
    rng = np.random.default_rng(7)
    c1, c3, hw = (7, 5, 3) if odd else (16, 32, 8)

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    inits = [
        weight("ws", (8, 6, 1, 1)),
        weight("w1", (c1, 8, 1, 1)),
        weight("w3", (c3, 8, 3, 3)),
        weight("wo", (4, c1 + c3, 1, 1)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "ws"], ["s"]),
        helper.make_node("Relu", ["s"], ["sr"]),
        helper.make_node("Conv", ["sr", "w1"], ["e1"]),
        helper.make_node("Relu", ["e1"], ["e1r"]),
        helper.make_node("Conv", ["sr", "w3"], ["e3"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["e3"], ["e3r"]),
        helper.make_node("Concat", ["e1r", "e3r"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "wo"], ["y0"]),
    ]
    if share:  # e3r is read again after the concat: its range must stay intact until then
        nodes.append(helper.make_node("ReduceMean", ["e3r"], ["m"], axes=[1], keepdims=1))
        nodes.append(helper.make_node("Add", ["y0", "m"], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", ["y0"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "fire",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 6, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def planned_ir(model: onnx.ModelProto) -> str:
    module, weights = import_model(model)
    build_pipeline(f"{GRAPH_STAGE},convert-graph-to-kernel,fuse-elementwise,plan-memory").apply(
        make_context(weights), module
    )
    module.verify()
    return str(module)


@pytest.mark.parametrize(
    ("batch", "share", "odd", "elided"),
    [
        (1, False, False, True),
        (1, True, False, True),
        (2, False, False, False),  # batch 2: each input is two strided ranges of the output
        (1, False, True, False),  # unaligned ranges stay a copy
    ],
)
def test_concat_in_place_matches_onnxruntime(
    batch: int, share: bool, odd: bool, elided: bool
) -> None:
    model = fire_model(batch, share, odd)
    assert ("kernel.concat" not in planned_ir(model)) == elided
    feeds = random_inputs(model, seed=batch)
    for threads in (1, 2):
        got = ember.compile(model, threads=threads).run(feeds)
        assert_close(got, onnxruntime_outputs(model, feeds), rel=1e-4)


def test_concat_of_a_graph_input_stays_a_copy() -> None:
    """A function argument has no arena range to move into the output."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 4, 4])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 16, 4, 4])
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["z"], ["r"]),
            helper.make_node("Concat", ["x", "r"], ["c"], axis=1),
            helper.make_node("Sigmoid", ["c"], ["y"]),
        ],
        "cat",
        [x, z],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert "kernel.concat" in planned_ir(model)
    feeds = random_inputs(model)
    assert_close(ember.compile(model, threads=1).run(feeds), onnxruntime_outputs(model, feeds))


def test_concat_of_reshaped_buffers_is_in_place() -> None:
    """A nearest upsampling is an Expand reshaped back to NCHW (DBNet's FPN levels): the
    concat still places the Expand's buffer inside its output, through the reshape."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node(
                "Resize",
                ["r", "", "scales"],
                ["up"],
                mode="nearest",
                coordinate_transformation_mode="asymmetric",
                nearest_mode="floor",
            ),
            helper.make_node("Sigmoid", ["z"], ["s"]),
            helper.make_node("Concat", ["up", "s"], ["c"], axis=1),
            helper.make_node("Tanh", ["c"], ["y"]),
        ],  # fmt: skip
        "upsample_cat",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 4, 6]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 8, 12]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [scales],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ir = planned_ir(model)
    assert "kernel.reshape" in ir and "kernel.concat" not in ir
    feeds = random_inputs(model, seed=4)
    assert_close(ember.compile(model, threads=1).run(feeds), onnxruntime_outputs(model, feeds))
