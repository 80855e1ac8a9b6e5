"""fuse-layer-norm on a BERT encoder with decomposed LayerNorms, against onnxruntime (max
|error| <= 1e-4 x max |reference|). The IR before and after, and the near misses it leaves
alone: tests/transforms/fuse-layer-norm.mlir."""

from __future__ import annotations

import ember
from ember.core.context import make_context
from ember.frontend.onnx_importer import import_model
from ember.passes.pipeline import run_graph_passes
from ember.tests.oracle import assert_close, onnxruntime_outputs, random_inputs
from ember.tools import model_zoo as models


def test_bert_with_decomposed_layer_norms_matches_onnxruntime() -> None:
    model = models.bert_encoder(layers=2, seq=11, hidden=40, heads=2, layer_norm="decomposed")
    module, weights = import_model(model)
    run_graph_passes(module, make_context(weights))
    names = [op.name for op in module.walk()]
    assert names.count("graph.layer_norm") == 5 and "graph.reduce" not in names
    feeds = random_inputs(model, seed=0)
    actual = ember.compile(model, threads=1).run(feeds)
    assert_close(actual, onnxruntime_outputs(model, feeds), rel=1e-4)
