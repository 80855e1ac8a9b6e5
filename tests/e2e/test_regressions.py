"""Models that once gave silent wrong answers, checked against onnxruntime.

Tolerance: max |ember - onnxruntime| <= 1e-4 x max |onnxruntime| per output (float32 GEMM
reassociation stays far below it; every bug kept here was off by order 1).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.tests.oracle import assert_close, onnxruntime_outputs


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], c: int, out: str):
    graph = helper.make_graph(
        nodes,
        "regression",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 8, 8])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, c, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("kernel", [1, 3])
def test_residual_add_of_the_conv_input(kernel: int) -> None:
    """y = x + Conv(x), chained: the residual is also the conv's input (issue 11)."""
    c, rng = 16, np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(4):
        w = (rng.standard_normal((c, c, kernel, kernel)) * 0.3).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        pads = [kernel // 2] * 4
        nodes += [
            helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=pads),
            helper.make_node("Add", [prev, f"c{i}"], [f"a{i}"]),
        ]
        prev = f"a{i}"
    model = _model(nodes, inits, c, prev)
    x = rng.standard_normal((1, c, 8, 8)).astype(np.float32)
    assert_close(ember.compile(model).run({"x": x}), onnxruntime_outputs(model, {"x": x}))


def test_residual_add_of_the_matmul_input() -> None:
    """y = x + x @ W with a square W: the residual is also the matmul's A operand."""
    rng = np.random.default_rng(1)
    nodes, inits, prev = [], [], "x"
    for i in range(3):
        w = (rng.standard_normal((8, 8)) * 0.3).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", prev], [f"a{i}"]),
        ]
        prev = f"a{i}"
    model = _model(nodes, inits, 16, prev)
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    assert_close(ember.compile(model).run({"x": x}), onnxruntime_outputs(model, {"x": x}))


@pytest.mark.parametrize("view_first", [True, False])
@pytest.mark.parametrize("op", ["Unsqueeze", "Reshape"])
def test_an_output_and_a_view_of_it_both_returned(op: str, view_first: bool) -> None:
    """r and Reshape/Unsqueeze(r) both graph outputs (found by the differential fuzzer): the
    view's placement used to leave r naming an erased buffer ("Cannot detach ...")."""
    info = helper.make_tensor_value_info
    target = [0] if op == "Unsqueeze" else [3, 4]
    k = numpy_helper.from_array(np.array(target, np.int64), "k")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node(op, ["r", "k"], ["v"]),
    ]
    v_shape = [1, 12] if op == "Unsqueeze" else [3, 4]
    outputs = [info("v", TensorProto.FLOAT, v_shape), info("r", TensorProto.FLOAT, [12])]
    graph = helper.make_graph(
        nodes,
        "g",
        [info("x", TensorProto.FLOAT, [12])],
        outputs if view_first else outputs[::-1],
        [k],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(2).standard_normal(12).astype(np.float32)
    got = ember.compile(model).run({"x": x})
    expected = onnxruntime_outputs(model, {"x": x})
    for name, array in expected.items():
        np.testing.assert_array_equal(got[name], array)


@pytest.mark.parametrize("in_rnn", [False, True])  # an elementwise kernel; an RNN's gate
def test_float32_softplus_keeps_its_relative_precision_for_negative_inputs(in_rnn: bool) -> None:
    """Softplus(x) = max(x, 0) + log(1 + exp(-|x|)) lost the low bits of exp(-|x|) in 1 + d:
    2.6e-3 relative error at x = -11.3 (and Mish, x * tanh(softplus(x)), with it). Within
    1e-6 relative of the float64 result down to x = -80, as an op and as the activation of a
    recurrent layer (an RNN with W = 1, R = 0: Y = Softplus(X))."""
    x = np.linspace(-80, 30, 4096).astype(np.float32)
    if in_rnn:
        one, zero = (np.full((1, 1, 1), v, np.float32) for v in (1.0, 0.0))
        inits = [numpy_helper.from_array(one, "w"), numpy_helper.from_array(zero, "r")]
        node = helper.make_node(
            "RNN", ["x", "w", "r"], ["y"], hidden_size=1, activations=["Softplus"]
        )
        shape, out_shape = [1, x.size, 1], [1, 1, x.size, 1]
    else:
        inits, node = [], helper.make_node("Softplus", ["x"], ["y"])
        shape = out_shape = [x.size]
    graph = helper.make_graph(
        [node],
        "softplus",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    got = ember.compile(model).run({"x": x.reshape(shape)})["y"].reshape(-1).astype(np.float64)
    exact = np.logaddexp(0.0, x.astype(np.float64))
    assert np.max(np.abs(got / exact - 1.0)) < 1e-6
