"""Ops that ONNX defines as functions of other ops are imported through their function body."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.frontend.onnx_importer import has_function_body, supported_ops


def _single_node_model(
    node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]], out_shape: list[int], opsets: dict
) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in shapes.items()]
    output = helper.make_tensor_value_info("Y", TensorProto.FLOAT, out_shape)
    return helper.make_model(
        helper.make_graph([node], "g", inputs, [output]),
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
    )


def _assert_matches_reference(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> None:
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    expected = ReferenceEvaluator(model).run(None, feeds)[0]
    actual = ember.compile(model).run(feeds)["Y"]
    # float32 products and sums in a different order: 1e-5 relative to max |ref|.
    assert np.max(np.abs(actual - expected)) <= 1e-5 * np.max(np.abs(expected))


def test_rotary_embedding_compiles_through_its_function_body() -> None:
    # Rotating half of each head keeps both halves of the body's Split non-empty.
    shapes = {"X": (1, 2, 4, 8), "cos": (1, 4, 2), "sin": (1, 4, 2)}
    node = helper.make_node(
        "RotaryEmbedding", list(shapes), ["Y"], name="rope", rotary_embedding_dim=4
    )
    model = _single_node_model(node, shapes, [1, 2, 4, 8], {"": 23})
    assert "RotaryEmbedding" not in supported_ops() and has_function_body("RotaryEmbedding", 23)
    _assert_matches_reference(model, shapes)


def test_ops_without_a_body_are_still_unsupported() -> None:
    assert not has_function_body("DFT", 20)
    assert not has_function_body("NoSuchOp", 20)


def test_preview_domain_op_compiles_through_its_function_body() -> None:
    """ai.onnx.preview.FlexAttention: its body imports only its own domain, so its ai.onnx ops
    run at the model's ai.onnx opset (they were refused at opset 1)."""
    shapes = {"Q": (1, 2, 4, 8), "K": (1, 2, 6, 8), "V": (1, 2, 6, 8)}
    node = helper.make_node("FlexAttention", list(shapes), ["Y"], domain="ai.onnx.preview")
    model = _single_node_model(node, shapes, [1, 2, 4, 8], {"": 26, "ai.onnx.preview": 1})
    assert has_function_body("FlexAttention", 1, "ai.onnx.preview")
    _assert_matches_reference(model, shapes)


def test_unknown_domain_ops_stay_unsupported() -> None:
    assert not has_function_body("FlexAttention", 1, "com.example")
