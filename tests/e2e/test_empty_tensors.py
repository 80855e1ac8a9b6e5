"""Tensors with a dim of size 0, end to end against onnxruntime (seeded inputs).

An empty value has no elements to compute, so the importer makes it a constant, and a result
computed from one (a sum over an empty axis, a matmul with K = 0) folds at compile time: no
kernel ever runs on size 0 (frontend/context.py, `ImportContext.emit`). The pattern that
matters most: a decoder exported with a KV cache, whose past has sequence length 0 on its
first step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.tests.oracle import assert_close, onnxruntime_outputs

FLOAT = TensorProto.FLOAT
# Float32 matmuls and softmax against onnxruntime: same math, different summation order.
REL_TOL = 1e-5


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[tuple[str, int, list[int | str]]],
    outputs: list[str],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    output_type: int = FLOAT,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "empty",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, output_type, None) for n in outputs],
        [onnx.numpy_helper.from_array(a, n) for n, a in (initializers or {}).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _feeds(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def _i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def _kv_cache_decoder() -> onnx.ModelProto:
    """One attention step of a decoder with a KV cache: the new token's key is appended to
    the past keys (Concat on the sequence axis), the query attends over all of them."""
    rng = np.random.default_rng(7)
    weights = {
        "wq": rng.standard_normal((8, 8)).astype(np.float32),
        "wk": rng.standard_normal((8, 8)).astype(np.float32),
        "wv": rng.standard_normal((8, 8)).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Concat", ["past_key", "k"], ["present_key"], axis=2),
        helper.make_node("Concat", ["past_value", "v"], ["present_value"], axis=2),
        helper.make_node("Transpose", ["present_key"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "present_value"], ["y"]),
    ]
    return _model(
        nodes,
        [
            ("x", FLOAT, [1, 4, 1, 8]),
            ("past_key", FLOAT, [1, 4, "past", 8]),
            ("past_value", FLOAT, [1, 4, "past", 8]),
        ],
        ["y", "present_key", "present_value"],
        weights,
    )


def test_kv_cache_decoder_runs_from_an_empty_past() -> None:
    model = _kv_cache_decoder()
    compiled = ember.compile(model, threads=1)
    for past in (0, 1, 5):
        shapes = {"x": (1, 4, 1, 8), "past_key": (1, 4, past, 8), "past_value": (1, 4, past, 8)}
        inputs = _feeds(shapes, seed=past)
        outputs = compiled.run(inputs)
        assert_close(outputs, onnxruntime_outputs(model, inputs), REL_TOL)
        assert outputs["present_key"].shape == (1, 4, past + 1, 8)


def test_kv_cache_artifact_has_a_variant_for_the_empty_past(tmp_path: Path) -> None:
    # `ember compile --shapes past=0,1,5`: the thin runtime dispatches an empty past too.
    from ember.engine.aot import compile_variants
    from ember.runtime.artifact import load

    model = _kv_cache_decoder()
    onnx.save(model, tmp_path / "decoder.onnx")
    out = tmp_path / "decoder.ember"
    compile_variants(
        tmp_path / "decoder.onnx", out, {"past": [0, 1, 5]}, dim_ranges={"past": (0, 8)}
    )
    loaded = load(out, threads=1)
    for past in (0, 1, 5):
        shapes = {"x": (1, 4, 1, 8), "past_key": (1, 4, past, 8), "past_value": (1, 4, past, 8)}
        inputs = _feeds(shapes, seed=10 + past)
        assert_close(loaded.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)


def test_input_declared_empty_compiles_statically() -> None:
    # A static 0 in the declared shape: a CompiledModel whose program takes (and ignores) it.
    model = _kv_cache_decoder()
    for info in model.graph.input[1:]:
        info.type.tensor_type.shape.dim[2].dim_value = 0
    compiled = ember.compile(model, threads=1)
    assert isinstance(compiled, ember.CompiledModel)
    inputs = _feeds({"x": (1, 4, 1, 8), "past_key": (1, 4, 0, 8), "past_value": (1, 4, 0, 8)}, 3)
    assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)


_X34 = [("x", FLOAT, [3, 4])]
# name: (nodes, inputs, outputs, initializers, input shapes of the run)
_GRAPHS = {
    "slice_to_empty": (
        [helper.make_node("Slice", ["x", "s", "e"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        _X34,
        ["y", "z"],
        {"s": _i64(2), "e": _i64(2)},
        {"x": (3, 4)},
    ),
    "split_with_empty_parts": (
        [helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], axis=1)],
        _X34,
        ["a", "b", "c"],
        {"sizes": _i64(0, 4, 0)},
        {"x": (3, 4)},
    ),
    "elementwise_transpose_reshape_of_empty_input": (
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Add", ["r", "b"], ["a"]),
            helper.make_node("Transpose", ["a"], ["t"]),
            helper.make_node("Reshape", ["t", "shape"], ["y"]),
        ],
        [("x", FLOAT, [2, "n", 3]), ("b", FLOAT, [1, 1, 3])],
        ["y"],
        {"shape": _i64(3, -1)},
        {"x": (2, 0, 3), "b": (1, 1, 3)},
    ),
    "matmul_k0_then_add": (
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
        [("x", FLOAT, [3, "k"]), ("w", FLOAT, ["k", 5]), ("b", FLOAT, [3, 5])],
        ["y"],
        {},
        {"x": (3, 0), "w": (0, 5), "b": (3, 5)},
    ),
    "gemm_k0_is_beta_c": (
        [helper.make_node("Gemm", ["x", "w", "c"], ["y"], alpha=2.0, beta=0.5)],
        [("x", FLOAT, [3, "k"]), ("w", FLOAT, ["k", 5]), ("c", FLOAT, [5])],
        ["y"],
        {},
        {"x": (3, 0), "w": (0, 5), "c": (5,)},
    ),
    "concat_of_only_empty_pieces": (
        [helper.make_node("Concat", ["x", "x"], ["y"], axis=0)],
        [("x", FLOAT, ["n", 4])],
        ["y"],
        {},
        {"x": (0, 4)},
    ),
    "softmax_and_layer_norm_of_empty_rows": (
        [
            helper.make_node("Softmax", ["x"], ["p"], axis=-1),
            helper.make_node("LayerNormalization", ["p", "s", "o"], ["y"], axis=-1),
        ],
        [("x", FLOAT, ["n", 4])],
        ["y"],
        {"s": np.ones(4, np.float32), "o": np.zeros(4, np.float32)},
        {"x": (0, 4)},
    ),
    "pad_of_empty_is_the_pad_value": (
        [helper.make_node("Pad", ["x", "pads", "value"], ["y"])],
        [("x", FLOAT, ["n", 4])],
        ["y"],
        {"pads": _i64(1, 0, 2, 0), "value": np.array(1.5, np.float32)},
        {"x": (0, 4)},
    ),
    "conv_of_an_empty_batch": (
        [helper.make_node("Conv", ["x", "w", "b"], ["y"])],
        [("x", FLOAT, ["n", 2, 5, 5])],
        ["y"],
        {
            "w": np.random.default_rng(1).standard_normal((3, 2, 3, 3)).astype(np.float32),
            "b": np.ones(3, np.float32),
        },
        {"x": (0, 2, 5, 5)},
    ),
    "top_k_of_zero": (
        [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1)],
        _X34,
        ["v"],
        {"k": _i64(0)},
        {"x": (3, 4)},
    ),
    "attention_op_with_an_empty_past": (
        [
            helper.make_node(
                "Attention",
                ["q", "k", "v", "", "past_k", "past_v"],
                ["y", "present_k", "present_v"],
            )
        ],
        [
            ("q", FLOAT, [1, 2, 3, 4]),
            ("k", FLOAT, [1, 2, 3, 4]),
            ("v", FLOAT, [1, 2, 3, 4]),
            ("past_k", FLOAT, [1, 2, "past", 4]),
            ("past_v", FLOAT, [1, 2, "past", 4]),
        ],
        ["y", "present_k", "present_v"],
        {},
        {
            "q": (1, 2, 3, 4),
            "k": (1, 2, 3, 4),
            "v": (1, 2, 3, 4),
            "past_k": (1, 2, 0, 4),
            "past_v": (1, 2, 0, 4),
        },
    ),
    "scatters_of_no_updates_are_the_data": (
        [
            helper.make_node("ScatterND", ["x", "nd_indices", "nd_updates"], ["a"]),
            helper.make_node("ScatterElements", ["x", "indices", "updates"], ["b"]),
        ],
        _X34,
        ["a", "b"],
        {
            "nd_indices": np.zeros((0, 1), np.int64),
            "nd_updates": np.zeros((0, 4), np.float32),
            "indices": np.zeros((0, 4), np.int64),
            "updates": np.zeros((0, 4), np.float32),
        },
        {"x": (3, 4)},
    ),
    "hardmax_and_mean_variance_normalization_of_empty_values": (
        [
            helper.make_node("Hardmax", ["x"], ["h"], axis=-1),
            helper.make_node("MeanVarianceNormalization", ["batch"], ["m"]),
        ],
        [("x", FLOAT, [3, "n"]), ("batch", FLOAT, ["n", 3, 2, 2])],
        ["h", "m"],
        {},
        {"x": (3, 0), "batch": (0, 3, 2, 2)},
    ),
    "compress_to_nothing": (
        [helper.make_node("Compress", ["x", "keep"], ["y"], axis=1)],
        _X34,
        ["y"],
        {"keep": np.zeros(4, np.bool_)},
        {"x": (3, 4)},
    ),
}


@pytest.mark.parametrize("name", list(_GRAPHS))
def test_empty_values_match_onnxruntime(name: str) -> None:
    nodes, inputs, outputs, initializers, shapes = _GRAPHS[name]
    model = _model(nodes, inputs, outputs, initializers, opset=23)
    feeds = _feeds(shapes, seed=len(name))
    expected = onnxruntime_outputs(model, feeds)
    assert_close(ember.compile(model, threads=1).run(feeds), expected, REL_TOL)


_REDUCTIONS = [
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSumExp",
]


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("op", _REDUCTIONS)
def test_reductions_over_an_empty_axis_give_their_identity(op: str, dtype: type) -> None:
    """ReduceSum 0, ReduceProd 1, ReduceMax the least value (-inf), ReduceMin the greatest,
    ReduceLogSumExp log(0) = -inf: exactly as onnxruntime (and onnx.reference)."""
    if op == "ReduceLogSumExp" and dtype is np.int32:
        pytest.skip("exp/log of integers are refused by ember whatever the shape")
    onnx_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node(op, ["x", "axes"], ["y"], keepdims=1)]
    model = _model(nodes, [("x", onnx_type, [2, "n", 3])], ["y"], {"axes": _i64(1)}, 18, onnx_type)
    feeds = {"x": np.zeros((2, 0, 3), dtype)}
    expected = onnxruntime_outputs(model, feeds)["y"]
    got = ember.compile(model, threads=1).run(feeds)["y"]
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_reduce_max_of_an_empty_initializer_folds_to_minus_infinity() -> None:
    # Constant folding leaked numpy's "zero-size array to reduction operation" ValueError.
    from onnx.reference import ReferenceEvaluator

    nodes = [helper.make_node("ReduceMax", ["d", "axes"], ["y"], keepdims=1)]
    initializers = {"d": np.zeros((2, 0, 4), np.float32), "axes": _i64(1)}
    model = _model(nodes, [], ["y"], initializers, opset=18)
    got = ember.compile(model).run({})["y"]
    np.testing.assert_array_equal(got, np.full((2, 1, 4), -np.inf, np.float32))
    np.testing.assert_array_equal(got, ReferenceEvaluator(model).run(None, {})[0])
    np.testing.assert_array_equal(got, onnxruntime_outputs(model, {})["y"])


@pytest.mark.parametrize(
    ("node", "message"),
    [
        # ONNX leaves a mean over nothing undefined (onnxruntime 0, onnx.reference NaN).
        (
            helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean"),
            "ReduceMean node 'mean' (opset 18): ReduceMean over an empty axis of shape [2, 0, 3]",
        ),
        # No index to return: onnxruntime fails too.
        (
            helper.make_node("ArgMax", ["x"], ["y"], axis=1, name="arg"),
            "ArgMax node 'arg' (opset 18): ArgMax along axis 1 of size 0 (shape [2, 0, 3])",
        ),
    ],
)
def test_undefined_reductions_over_nothing_are_model_errors(
    node: onnx.NodeProto, message: str
) -> None:
    output_type = TensorProto.INT64 if node.op_type == "ArgMax" else FLOAT
    model = _model([node], [("x", FLOAT, [2, 0, 3])], ["y"], {"axes": _i64(1)}, 18, output_type)
    with pytest.raises(ember.ModelError) as info:
        ember.compile(model)
    assert message in str(info.value)


def test_what_onnxruntime_refuses_on_empty_axes_is_a_model_error() -> None:
    # Nothing to reflect (Pad), no key to attend to (Attention), nothing to gather from:
    # onnxruntime fails on each.
    gather = helper.make_node("Gather", ["x", "i"], ["y"], name="gather")
    inputs = [("x", FLOAT, [0, 6]), ("i", TensorProto.INT64, [3])]
    with pytest.raises(ember.ModelError, match=r"'gather'.*indices \[3\] into axis 0 of size 0"):
        ember.compile(_model([gather], inputs, ["y"]))
    pad = helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect", name="pad")
    model = _model([pad], [("x", FLOAT, [2, 0])], ["y"], {"pads": _i64(0, 1, 0, 1)}, 18)
    with pytest.raises(ember.ModelError, match="'pad'.*reflect pads 1,1 on axis 1, which is empty"):
        ember.compile(model)
    attention = helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attention")
    qkv = [("q", FLOAT, [1, 2, 3, 4]), ("k", FLOAT, [1, 2, 0, 4]), ("v", FLOAT, [1, 2, 0, 4])]
    with pytest.raises(ember.ModelError, match=r"'attention'.*no keys to attend to: key \[1, 2, 0"):
        ember.compile(_model([attention], qkv, ["y"], {}, 23))


def test_a_run_time_result_from_an_empty_operand_is_refused_naming_it() -> None:
    # A convolution of no input channels is its bias: with the bias given at run time that
    # needs a kernel of C = 0, which ember does not run; it says so instead.
    weight = np.zeros((2, 0, 2, 2), np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")]
    inputs = [("x", FLOAT, [1, 0, 3, 3]), ("b", FLOAT, [2])]
    model = _model(nodes, inputs, ["y"], {"w": weight})
    with pytest.raises(ember.UnsupportedOpError) as info:
        ember.compile(model)
    text = str(info.value)
    assert "Conv" in text and "'conv'" in text
    assert "of an empty operand (shapes [[1, 0, 3, 3], [2, 0, 2, 2], [2]])" in text


def test_a_result_from_an_empty_operand_over_the_fold_limit_is_refused() -> None:
    # 100 MB of zeros from a sum over nothing: more than ember folds (limits.FOLD_LIMIT_BYTES).
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0, name="sum")]
    model = _model(nodes, [("x", FLOAT, [5000, 0, 5000])], ["y"], {"axes": _i64(1)}, 18)
    with pytest.raises(
        ember.UnsupportedOpError, match=r"'sum'.*\[5000, 5000\]: its 100000000 bytes"
    ):
        ember.compile(model)


@pytest.mark.parametrize("op_type", ["GlobalMaxPool", "GlobalAveragePool"])
def test_global_pool_over_an_empty_area_is_refused(op_type: str) -> None:
    # onnxruntime and onnx.reference both fail; the reduction's identity (-inf) is no answer.
    node = helper.make_node(op_type, ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 0, 0])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ember.ModelError, match="empty spatial area"):
        ember.compile(model)
