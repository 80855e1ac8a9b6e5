"""Whole models through ember.compile, checked against onnxruntime on seeded random inputs.

Tolerance: max abs error <= 1e-4 x max |reference| per output (float32 accumulation order
differs from onnxruntime's, nothing more).

One of the onnx wheel's nine light models (SqueezeNet) runs by default and the other eight
with --runslow: under branch coverage of ember, compiling and running those eight reached no
line or branch that SqueezeNet, MobileNetV2, the BERT encoder, DBNet, the AOT ResNet-18 and
the kernel tests do not also reach, once tests/kernels gained the two cases that five of
them alone reached (an average pool of one output column, a direct conv whose rows are whole
tiles). They cost ~100 s of CPU a run; docs/testing.md has the measurement.
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
# The light models whose code paths the default suite covers without them (module docstring).
SLOW_LIGHT_MODELS = set(LIGHT_MODELS) - {"squeezenet"}


def _check(model: onnx.ModelProto, threads: int = 1, seed: int = 0) -> ember.CompiledModel:
    compiled = ember.compile(model, threads=threads)
    _check_compiled(model, compiled, seed)
    return compiled


def _check_compiled(model: onnx.ModelProto, compiled: ember.CompiledModel, seed: int = 0) -> None:
    feeds = random_inputs(model, seed)
    assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW_LIGHT_MODELS else name
        for name in LIGHT_MODELS
    ],
)
def test_light_model_matches_onnxruntime(name: str) -> None:
    _check(onnx.load(light_model_path(name)))


# The same model, threads and pipeline as tests/runtime/test_models_aot.py's ResNet-18, which
# runs by default (compiled ahead of time, run without the compiler); JIT-compiling whole
# networks is checked by default on the light models and MobileNetV2. 4.4 s of CPU a run.
@pytest.mark.slow
def test_resnet18_matches_onnxruntime() -> None:
    _check(models.resnet18(seed=0), threads=2)


@pytest.fixture(scope="module")
def mobilenet_v2() -> tuple[onnx.ModelProto, ember.CompiledModel]:
    """Compiled once for the two tests that read it (tests/conftest.py puts the tests of a
    module fixture on one xdist worker)."""
    model = models.mobilenet_v2(seed=0)
    return model, ember.compile(model, threads=1)


def test_mobilenet_v2_matches_onnxruntime(
    mobilenet_v2: tuple[onnx.ModelProto, ember.CompiledModel],
) -> None:
    _check_compiled(*mobilenet_v2)


def test_arena_is_smaller_than_intermediates(
    mobilenet_v2: tuple[onnx.ModelProto, ember.CompiledModel],
) -> None:
    """Memory planning shares the arena between values whose lifetimes do not overlap
    (MobileNetV2: 0.21 of the intermediates' sum; this test read the light ResNet-50 before
    that moved behind --runslow)."""
    report = mobilenet_v2[1].report
    assert report.arena_bytes < 0.5 * report.intermediate_bytes, report


def test_bert_encoder_matches_onnxruntime() -> None:
    _check(models.bert_encoder(layers=2, seq=16, hidden=64, heads=4, vocab=100, seed=0))


def test_dbnet_text_detector_matches_onnxruntime() -> None:
    """DBNet's FPN neck (nearest Resize x2/x4/x8, Concat) and head (ConvTranspose 2x2/2 with
    BatchNorm and ReLU, Sigmoid) on a narrow ResNet-18 at 32x64: the probability map stays
    unsaturated (model_zoo.dbnet), so a wrong value would show."""
    model = models.dbnet(seed=0, height=32, width=64, channels=0.125)
    compiled = _check(model)
    assert compiled.run(random_inputs(model, 0))[compiled.output_names[0]].shape == (1, 1, 32, 64)


def test_positional_call_and_names() -> None:
    # The calling convention is the point, not the network: a small CNN with two inputs of
    # different shapes, so arguments taken in the wrong order would be refused.
    b = models.GraphBuilder(seed=1)
    logits = b.classifier(b.node("Relu", [b.conv_bn("image", 3, 8, 3)]), 8, 5)
    out = b.node("Add", [logits, "offset"])
    model = b.model(
        "two_inputs",
        [
            onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 3, 12, 12]),
            onnx.helper.make_tensor_value_info("offset", onnx.TensorProto.FLOAT, [1, 5]),
        ],
        [onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, [1, 5])],
        17,
    )
    compiled = ember.compile(model)
    feeds = random_inputs(model, seed=3)
    (result,) = compiled(*feeds.values())
    ref = onnxruntime_outputs(model, feeds)
    assert compiled.input_names == list(feeds) == ["image", "offset"]
    assert_close({compiled.output_names[0]: result}, ref, REL_TOL)
    assert np.isfinite(result).all()
