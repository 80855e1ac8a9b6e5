"""Whole models through ember.compile, checked against onnxruntime on seeded random inputs.

Tolerance: max abs error <= 1e-4 x max |reference| per output (float32 accumulation order
differs from onnxruntime's, nothing more).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import ember
from ember.tests.oracle import assert_close, onnxruntime_outputs, random_inputs
from ember.tools import model_zoo as models
from ember.tools.model_zoo import LIGHT_MODELS, light_model_path

REL_TOL = 1e-4


def _check(model: onnx.ModelProto, threads: int = 1, seed: int = 0) -> ember.CompiledModel:
    compiled = ember.compile(model, threads=threads)
    feeds = random_inputs(model, seed)
    assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)
    return compiled


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_onnxruntime(name: str) -> None:
    _check(onnx.load(light_model_path(name)))


def test_resnet18_matches_onnxruntime() -> None:
    _check(models.resnet18(seed=0), threads=2)


def test_mobilenet_v2_matches_onnxruntime() -> None:
    _check(models.mobilenet_v2(seed=0))


def test_bert_encoder_matches_onnxruntime() -> None:
    _check(models.bert_encoder(layers=2, seq=16, hidden=64, heads=4, vocab=100, seed=0))


def test_resnet50_arena_is_smaller_than_intermediates() -> None:
    compiled = ember.compile(onnx.load(light_model_path("resnet50")))
    report = compiled.report
    assert report.arena_bytes < 0.5 * report.intermediate_bytes, report


def test_positional_call_and_names() -> None:
    model = models.resnet18(seed=1)
    compiled = ember.compile(model)
    feeds = random_inputs(model, seed=3)
    (out,) = compiled(*feeds.values())
    ref = onnxruntime_outputs(model, feeds)
    assert compiled.input_names == list(feeds)
    assert_close({compiled.output_names[0]: out}, ref, REL_TOL)
    assert np.isfinite(out).all()
