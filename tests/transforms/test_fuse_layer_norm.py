"""fuse-layer-norm: the decomposed LayerNorm -> graph.layer_norm (FileCheck, and the numpy
interpreter gives the same values before and after: rtol 1e-5, atol 1e-6, as in
test_graph_passes), near misses left alone, and a BERT encoder with decomposed LayerNorms
against onnxruntime (max |error| <= 1e-4 x max |reference|)."""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.core.context import make_context
from ember.frontend.onnx_importer import import_model
from ember.passes.pipeline import run_graph_passes
from ember.passes.transforms.fuse_layer_norm import FuseLayerNorm
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.oracle import assert_close, onnxruntime_outputs, random_inputs
from ember.tests.transforms.test_graph_passes import apply, func, rand
from ember.tools import model_zoo as models

X, R = "tensor<2x5x8xf32>", "tensor<2x5x1xf32>"


def layer_norm_ir(square: str = "mul", axes: str = "2", mean_shape: str = R) -> str:
    squares = {
        "mul": f"%sq = graph.mul %d, %d : {X}, {X} -> {X}",
        "pow": f"%sq = graph.pow %d, %two : {X}, tensor<f32> -> {X}",
    }
    body = f"""
    %two = graph.constant "two" : tensor<f32>
    %eps = graph.constant "eps" : tensor<f32>
    %g = graph.constant "g" : tensor<8xf32>
    %b = graph.constant "b" : tensor<8xf32>
    %m = graph.reduce %x {{reduction = "mean", axes = array<i64: {axes}>, keepdims = 1 : i64}} : {X} -> {mean_shape}
    %d = graph.sub %x, %m : {X}, {mean_shape} -> {X}
    {squares[square]}
    %v = graph.reduce %sq {{reduction = "mean", axes = array<i64: {axes}>, keepdims = 1 : i64}} : {X} -> {mean_shape}
    %ve = graph.add %v, %eps : {mean_shape}, tensor<f32> -> {mean_shape}
    %s = graph.sqrt %ve : {mean_shape} -> {mean_shape}
    %n = graph.div %d, %s : {X}, {mean_shape} -> {X}
    %y = graph.mul %n, %g : {X}, tensor<8xf32> -> {X}
    %z = graph.add %y, %b : {X}, tensor<8xf32> -> {X}"""
    return body


WEIGHTS = {
    "two": np.array(2.0, np.float32),
    "eps": np.array(1e-5, np.float32),
    "g": rand(8, low=0.5),
    "b": rand(8, seed=1),
}


@pytest.mark.parametrize("square", ["mul", "pow"])
def test_fuse_layer_norm_replaces_the_chain(square: str) -> None:
    ir = func(f"%x: {X}", layer_norm_ir(square) + f"\n    func.return %z : {X}", X)
    text, store = apply(ir, WEIGHTS, FuseLayerNorm())
    assert_filecheck(
        text,
        """
        CHECK:     %[[G:.*]] = graph.constant "g.ln_scale" : tensor<8xf32>
        CHECK:     %[[B:.*]] = graph.constant "b.ln_bias" : tensor<8xf32>
        CHECK:     %z = graph.layer_norm %x, %[[G]], %[[B]] {axis = 2 : i64, epsilon = 1.000000e-05 : f32}
        CHECK-NOT: graph.reduce
        CHECK-NOT: graph.div
        """,
    )
    np.testing.assert_array_equal(store["g.ln_scale"], WEIGHTS["g"])


def test_fuse_layer_norm_leaves_near_misses_alone() -> None:
    # Reduced over axis 1 (not the trailing axes) while scaling over axis 2.
    rows = "tensor<2x1x8xf32>"
    ir = func(
        f"%x: {X}", layer_norm_ir(axes="1", mean_shape=rows) + f"\n    func.return %z : {X}", X
    )
    text, _ = apply(ir, WEIGHTS, FuseLayerNorm())
    assert_filecheck(text, "CHECK-NOT: graph.layer_norm\nCHECK: graph.reduce\n")
    # The centered values escape.
    ir = func(f"%x: {X}", layer_norm_ir() + f"\n    func.return %z, %d : {X}, {X}", f"{X}, {X}")
    text, _ = apply(ir, WEIGHTS, FuseLayerNorm())
    assert_filecheck(text, "CHECK-NOT: graph.layer_norm\n")


def test_bert_with_decomposed_layer_norms_matches_onnxruntime() -> None:
    model = models.bert_encoder(layers=2, seq=11, hidden=40, heads=2, layer_norm="decomposed")
    module, weights = import_model(model)
    run_graph_passes(module, make_context(weights))
    names = [op.name for op in module.walk()]
    assert names.count("graph.layer_norm") == 5 and "graph.reduce" not in names
    feeds = random_inputs(model, seed=0)
    actual = ember.compile(model, threads=1).run(feeds)
    assert_close(actual, onnxruntime_outputs(model, feeds), rel=1e-4)
