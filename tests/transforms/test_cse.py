"""cse on ONNX models, against onnxruntime (max |error| <= 1e-5 x max |reference|): the light
Inception v2's pattern (sibling 1x1 convs on one input whose weights are equal fills under
other names, each with its own BatchNormalization, concatenated), and merged values that
end up as two graph outputs or twice in one concat. The IR before and after:
tests/transforms/cse.mlir."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.core.context import make_context
from ember.frontend.onnx_importer import import_model
from ember.passes.pipeline import run_graph_passes
from ember.tests.oracle import assert_close, onnxruntime_outputs, random_inputs


def _model(nodes: list[onnx.NodeProto], weights: dict[str, np.ndarray], outputs: list[str]):
    graph = helper.make_graph(
        nodes,
        "cse",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 5, 7, 7])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(array, name) for name, array in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _batch_norm(prefix: str, channels: int, seed: int) -> tuple[onnx.NodeProto, dict]:
    rng = np.random.default_rng(seed)
    params = {
        f"{prefix}_scale": rng.uniform(0.5, 1.5, channels),
        f"{prefix}_bias": rng.standard_normal(channels),
        f"{prefix}_mean": rng.standard_normal(channels),
        f"{prefix}_var": rng.uniform(0.5, 1.5, channels),
    }
    node = helper.make_node(
        "BatchNormalization", [f"{prefix}_in", *params], [f"{prefix}_out"], name=prefix
    )
    return node, {k: v.astype(np.float32) for k, v in params.items()}


def _graph_op_names(model: onnx.ModelProto) -> list[str]:
    module, weights = import_model(model)
    run_graph_passes(module, make_context(weights))
    return [op.name for op in module.walk()]


def test_sibling_convs_with_equal_filled_weights_run_once() -> None:
    # Three 1x1 convs 5 -> 6 read X: two with weights 0.25 under two names, one with 0.5;
    # each has its own BatchNormalization and Relu, the three are concatenated.
    weights = {
        "w_a": np.full((6, 5, 1, 1), 0.25, np.float32),
        "w_b": np.full((6, 5, 1, 1), 0.25, np.float32),
        "w_c": np.full((6, 5, 1, 1), 0.5, np.float32),
    }
    nodes = []
    for i, branch in enumerate("abc"):
        bn, params = _batch_norm(f"bn_{branch}", 6, seed=i)
        weights.update(params)
        nodes += [
            helper.make_node("Conv", ["X", f"w_{branch}"], [f"bn_{branch}_in"], name=f"c{i}"),
            bn,
            helper.make_node("Relu", [f"bn_{branch}_out"], [f"r_{branch}"]),
        ]
    nodes.append(helper.make_node("Concat", ["r_a", "r_b", "r_c"], ["Y"], axis=1))
    model = _model(nodes, weights, ["Y"])
    assert _graph_op_names(model).count("graph.conv") == 2
    feeds = random_inputs(model, seed=0)
    assert_close(
        ember.compile(model, threads=1).run(feeds), onnxruntime_outputs(model, feeds), 1e-5
    )


def test_merged_values_as_two_outputs_and_twice_in_a_concat() -> None:
    # Y1 and Y2 are one Relu after cse; Y3 concatenates it with itself and a third copy;
    # Y4 / Y5 divide by -0.0 and 0.0 fills: equal as floats, not merged (the signs of the
    # infinities differ).
    weights = {
        "neg_zero": np.full((1, 5, 1, 1), -0.0, np.float32),
        "zero": np.full((1, 5, 1, 1), 0.0, np.float32),
    }
    nodes = [
        helper.make_node("Relu", ["X"], ["Y1"]),
        helper.make_node("Relu", ["X"], ["Y2"]),
        helper.make_node("Relu", ["X"], ["r"]),
        helper.make_node("Concat", ["r", "Y1", "r"], ["Y3"], axis=1),
        helper.make_node("Div", ["X", "neg_zero"], ["Y4"]),
        helper.make_node("Div", ["X", "zero"], ["Y5"]),
    ]
    model = _model(nodes, weights, ["Y1", "Y2", "Y3", "Y4", "Y5"])
    assert _graph_op_names(model).count("graph.relu") == 1
    feeds = random_inputs(model, seed=1)
    actual = ember.compile(model, threads=1).run(feeds)
    expected = onnxruntime_outputs(model, feeds)
    for name, ref in expected.items():
        np.testing.assert_array_equal(actual[name], ref, err_msg=name)
    assert not np.shares_memory(actual["Y1"], actual["Y2"])


def test_canonicalized_gemm_and_batch_norm_keep_their_onnx_node() -> None:
    """The matmul a Gemm becomes and the mul/add of a BatchNormalization no conv absorbs name
    their ONNX node (`ember.origin`: errors and benchmarks/per_node.py's rows)."""
    from ember.engine.compile import annotate_origins
    from ember.passes.program import origin_of

    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((5, 4)).astype(np.float32)}
    bn, params = _batch_norm("bn", 5, seed=0)
    weights.update(params)
    nodes = [
        helper.make_node("Flatten", ["X"], ["flat"]),
        helper.make_node("Slice", ["flat", "s0", "s1", "s_axis"], ["cut"]),
        helper.make_node("Gemm", ["cut", "w"], ["bn_in"], name="fc", transB=1),
        bn,
        helper.make_node("Unsqueeze", ["bn_out", "axes"], ["Y"]),
    ]
    weights.update(
        s0=np.array([0], np.int64),
        s1=np.array([4], np.int64),
        s_axis=np.array([1], np.int64),
        axes=np.array([2, 3], np.int64),
    )
    model = _model(nodes, weights, ["Y"])
    module, store = import_model(model)
    annotate_origins(module, model)
    run_graph_passes(module, make_context(store))
    nodes_of = {op.name: origin_of(op).get("node") for op in module.walk()}
    assert nodes_of["graph.matmul"] == "fc"
    assert nodes_of["graph.mul"] == nodes_of["graph.add"] == "bn"


def test_equal_constants_of_differently_grouped_or_quantized_convs() -> None:
    """Filters merged by cse (or one shared initializer) pack once per group count: a group-1
    and a group-2 conv with one filter array failed to compile (the second took the first's
    packing); int8 convs whose zero int32 offsets merge keep each filter's own zero-point
    correction (offset - input zero point x the filter's row sums)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["X1", "w"], ["Y1"], pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["X2", "w_copy"], ["Y2"], pads=[1, 1, 1, 1], group=2),
        ],
        "groups",
        [
            helper.make_tensor_value_info("X1", TensorProto.FLOAT, [1, 4, 9, 9]),
            helper.make_tensor_value_info("X2", TensorProto.FLOAT, [1, 8, 9, 9]),
        ],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y1", "Y2")],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w.copy(), "w_copy")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = random_inputs(model, seed=2)
    assert_close(
        ember.compile(model, threads=1).run(feeds), onnxruntime_outputs(model, feeds), 1e-5
    )

    # Two QDQ convs, other int8 filters, zero biases (equal int32 offsets), input zero point 128.
    weights = {
        "xs": np.array(0.02, np.float32),
        "xz": np.array(128, np.uint8),
        "ys": np.array(0.05, np.float32),
        "yz": np.array(128, np.uint8),
        "ws": np.array(0.01, np.float32),
        "wz": np.array(0, np.int8),
        "bias": np.zeros(6, np.float32),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["X", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
    ]
    for i in (1, 2):
        weights[f"w{i}q"] = rng.integers(-127, 128, (6, 5, 3, 3)).astype(np.int8)
        nodes += [
            helper.make_node("DequantizeLinear", [f"w{i}q", "ws", "wz"], [f"w{i}"]),
            helper.make_node("Conv", ["xf", f"w{i}", "bias"], [f"c{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("QuantizeLinear", [f"c{i}", "ys", "yz"], [f"q{i}"]),
            helper.make_node("DequantizeLinear", [f"q{i}", "ys", "yz"], [f"Y{i}"]),
        ]
    model = _model(nodes, weights, ["Y1", "Y2"])
    assert _graph_op_names(model).count("graph.qconv") == 2
    feeds = {"X": np.random.default_rng(3).uniform(0, 4, (1, 5, 7, 7)).astype(np.float32)}
    actual = ember.compile(model, threads=1).run(feeds)
    expected = onnxruntime_outputs(model, feeds)
    for name in ("Y1", "Y2"):  # integer requantization may round one step (0.05) apart
        np.testing.assert_allclose(actual[name], expected[name], atol=0.05 + 1e-6, err_msg=name)
