"""fuse-attention on whole models against onnxruntime (seeded inputs, max |error| <= 1e-4 x max |reference|; rows whose keys are
all masked with -inf must be NaN where onnxruntime's are). The IR before and after, and the
near misses it leaves alone: tests/transforms/fuse-attention.mlir."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.core.context import make_context
from ember.frontend.onnx_importer import import_model
from ember.passes.pipeline import run_graph_passes
from ember.tests.oracle import assert_close, onnxruntime_outputs, random_inputs
from ember.tools import model_zoo as models

# ---------------------------------------------------------------------------------------------
# Whole models against onnxruntime


def attention_model(
    sq: int, sk: int, heads: int, dh: int, mask_shape: tuple[int, ...], axis: int = -1
) -> onnx.ModelProto:
    """Inputs q [1, sq, heads, dh], k and v [1, sk, heads, dh], a float additive mask; the
    exporter's transposes, Div by sqrt(dh), Softmax(axis), MatMul, transpose back."""
    nodes = [
        helper.make_node("Transpose", ["q"], ["qh"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v"], ["vh"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["qh", "kt"], ["scores"]),
        helper.make_node("Div", ["scores", "root"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=axis),
        helper.make_node("MatMul", ["probs", "vh"], ["context"]),
        helper.make_node("Transpose", ["context"], ["out"], perm=[0, 2, 1, 3]),
    ]
    root = onnx.numpy_helper.from_array(np.array(np.sqrt(dh), np.float32), "root")
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "attention",
        [
            helper.make_tensor_value_info("q", f, [1, sq, heads, dh]),
            helper.make_tensor_value_info("k", f, [1, sk, heads, dh]),
            helper.make_tensor_value_info("v", f, [1, sk, heads, dh]),
            helper.make_tensor_value_info("mask", f, list(mask_shape)),
        ],
        [helper.make_tensor_value_info("out", f, None)],
        [root],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def fused_count(model: onnx.ModelProto) -> int:
    module, weights = import_model(model)
    run_graph_passes(module, make_context(weights))
    return collections.Counter(op.name for op in module.walk())["graph.attention"]


def compare(model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int) -> None:
    expected = onnxruntime_outputs(model, feeds)
    actual = ember.compile(model, threads=threads).run(feeds)
    for name, ref in expected.items():
        np.testing.assert_array_equal(np.isnan(actual[name]), np.isnan(ref), err_msg=name)
        finite = ~np.isnan(ref)
        assert_close({name: actual[name][finite]}, {name: ref[finite]}, rel=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_masked_attention_matches_onnxruntime(threads: int) -> None:
    """Odd lengths (13 queries, 37 keys), a -inf mask on some keys, large negative values on
    others, one fully -inf row (NaN in both engines) and one row of float32's lowest."""
    sq, sk, heads, dh = 13, 37, 3, 16
    model = attention_model(sq, sk, heads, dh, (1, heads, sq, sk))
    assert fused_count(model) == 1
    feeds = random_inputs(model, seed=0)
    mask = np.zeros((1, heads, sq, sk), np.float32)
    mask[..., 30:] = -np.inf
    mask[0, 0, :, :5] = -1e9
    mask[0, 1, 4, :] = -np.inf
    mask[0, 2, 6, :] = np.finfo(np.float32).min
    feeds["mask"] = mask
    compare(model, feeds, threads)


def test_softmax_over_another_axis_is_not_fused_and_still_right() -> None:
    model = attention_model(9, 9, 2, 8, (1, 1, 1, 9), axis=2)
    assert fused_count(model) == 0
    compare(model, random_inputs(model, seed=1), 1)


@pytest.mark.parametrize(
    "gelu, layer_norm, mask_value",
    [("erf", "op", -10000.0), ("tanh", "decomposed", float(np.finfo(np.float32).min))],
)
def test_bert_encoder_with_padding_mask_matches_onnxruntime(
    gelu: str, layer_norm: str, mask_value: float
) -> None:
    """The exporter's form: attention_mask -> Unsqueeze/Cast/Sub/Mul, Shape-Gather-Concat head
    split; 19 tokens of which the last 6 are padding."""
    model = models.bert_encoder(
        layers=2, seq=19, hidden=48, heads=3, attention_mask=True, gelu=gelu,
        layer_norm=layer_norm, mask_value=mask_value,
    )  # fmt: skip
    assert fused_count(model) == 2
    feeds = random_inputs(model, seed=2)
    feeds["attention_mask"] = (np.arange(19) < 13).astype(np.int64)[None]
    compare(model, feeds, 2)


def test_a_two_dimensional_causal_mask_is_fused_and_matches_onnxruntime() -> None:
    """A [Sq, Sk] mask (rank 2) is viewed as [1, 1, Sq, Sk] by the fused op."""
    sq, heads, dh = 21, 2, 8
    model = attention_model(sq, sq, heads, dh, (sq, sq))
    assert fused_count(model) == 1
    feeds = random_inputs(model, seed=3)
    feeds["mask"] = np.triu(np.full((sq, sq), -np.inf, np.float32), k=1)
    compare(model, feeds, 1)
