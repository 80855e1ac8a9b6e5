"""The blocked-layout pass end to end: seeded conv chains with pools, residual adds, channel
concats and channel counts that are not multiples of the block, against onnxruntime
(max |error| <= 1e-4 x max |reference|), with the host's block (16 on AVX-512, 8 on AVX2) and
with 8 (`blocked-layout{vector-width=8}`, which any x86-64 host runs). The IR before and
after: tests/transforms/blocked-layout.mlir."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.core.context import make_context
from ember.core.target import named_target
from ember.frontend.onnx_importer import import_model
from ember.passes.pipeline import DEFAULT_PIPELINE, GRAPH_STAGE, build_pipeline
from ember.tests.oracle import assert_close, onnxruntime_outputs, random_inputs
from ember.tools.model_zoo import resnet_block_model

BLOCK_OPTIONS = {"host": "", "c8": "{vector-width=8}"}


def _with_block(spec: str, option: str) -> str:
    return spec.replace("blocked-layout", f"blocked-layout{option}")


class _Chain:
    """An ONNX graph under construction: seeded conv weights, ops by name."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def op(self, op_type: str, inputs: list[str], **attrs: object) -> str:
        out = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1) -> str:
        w = f"w{len(self.inits)}"
        scale = 1.0 / np.sqrt(cin // group * k * k)
        self.inits.append(
            numpy_helper.from_array(
                (self.rng.standard_normal((cout, cin // group, k, k)) * scale).astype(np.float32),
                w,
            )
        )
        b = f"b{len(self.inits)}"
        self.inits.append(
            numpy_helper.from_array(self.rng.standard_normal(cout).astype(np.float32), b)
        )
        return self.op(
            "Conv",
            [x, w, b],
            kernel_shape=[k, k],
            strides=[stride] * 2,
            pads=[k // 2] * 4,
            group=group,
        )

    def relu6(self, x: str) -> str:
        if not any(t.name == "six" for t in self.inits):
            self.inits.append(numpy_helper.from_array(np.float32(0.0), "zero"))
            self.inits.append(numpy_helper.from_array(np.float32(6.0), "six"))
        return self.op("Clip", [x, "zero", "six"])

    def model(self, shape: list[int], outputs: list[str]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "chain",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        return model


def chain_model(seed: int = 0) -> onnx.ModelProto:
    """conv -> relu -> max pool -> conv + residual conv -> relu -> average pool (ceil mode)
    -> concat of two convs -> a conv to 20 channels (not blocked) and a global average pool."""
    g = _Chain(seed)
    x = g.op("Relu", [g.conv("x", 32, 32, 3)])
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    y = g.op("Add", [g.conv(g.op("Relu", [g.conv(x, 32, 48, 1)]), 48, 48, 3), g.conv(x, 32, 48, 1)])
    y = g.op("Relu", [y])
    y = g.op("AveragePool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    cat = g.op("Concat", [g.conv(y, 48, 16, 3), g.conv(y, 48, 32, 1)], axis=1)
    narrow = g.op("Relu", [g.conv(cat, 48, 20, 3)])
    pooled = g.op("GlobalAveragePool", [cat])
    return g.model([1, 32, 15, 15], [narrow, pooled])


def _graph_ir(model: onnx.ModelProto, option: str) -> str:
    module, store = import_model(model)
    build_pipeline(_with_block(GRAPH_STAGE, option)).apply(make_context(store), module)
    return str(module)


@pytest.mark.parametrize("block", list(BLOCK_OPTIONS))
def test_chain_matches_onnxruntime(block: str) -> None:
    model = chain_model()
    option = BLOCK_OPTIONS[block]
    feeds = random_inputs(model, seed=0)
    compiled = ember.compile(model, threads=2, pipeline=_with_block(DEFAULT_PIPELINE, option))
    assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), rel=1e-4)


def test_chain_runs_blocked_from_one_reorder_in() -> None:
    """With 8-channel blocks: one to_blocked (the input); convs, pools and the concat on
    rank-5 tensors; the 20-channel conv reads NCHW behind one from_blocked (the global pool
    reads the concat through the same one)."""
    text = _graph_ir(chain_model(), BLOCK_OPTIONS["c8"])
    assert text.count("graph.to_blocked") == 1
    assert text.count("graph.from_blocked") == 1
    assert "graph.max_pool" in text and "tensor<1x4x8x8x8xf32>" in text
    assert "graph.concat" in text and "-> tensor<1x6x4x4x8xf32>" in text
    assert "-> tensor<1x20x4x4xf32>" in text  # the narrow conv stays NCHW


# The host's block with --runslow: under branch coverage both blocks reached nothing that the
# other tests of this file, tests/lowering/test_pass_options.py (the same model, int8 and
# narrow), tests/kernels/test_conv.py and test_conv_extents.py and canonicalize.mlir do not;
# the 8-wide block keeps its reorder count check.
@pytest.mark.parametrize(
    "block", [pytest.param(b, marks=pytest.mark.slow) if b == "host" else b for b in BLOCK_OPTIONS]
)
def test_resnet_block_matches_onnxruntime(block: str) -> None:
    """Stem (3 channels) and depthwise convs stay NCHW; the 16- and 24-channel blocks run
    blocked where the block divides them."""
    model = resnet_block_model()
    feeds = random_inputs(model, seed=1)
    pipeline = _with_block(DEFAULT_PIPELINE, BLOCK_OPTIONS[block])
    compiled = ember.compile(model, threads=1, pipeline=pipeline)
    assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), rel=1e-4)
    if block == "c8":
        assert _graph_ir(model, BLOCK_OPTIONS[block]).count("graph.to_blocked") == 1


def inverted_residual_model(seed: int = 0) -> onnx.ModelProto:
    """MobileNet-v2 blocks: 1x1 expand -> Clip -> depthwise 3x3 (stride 1 with a residual
    add, then stride 2) -> 1x1 project."""
    g = _Chain(seed)
    x = g.conv("x", 16, 32, 1)
    e = g.relu6(g.conv(x, 32, 96, 1))
    d = g.relu6(g.conv(e, 96, 96, 3, group=96))
    x = g.op("Add", [g.conv(d, 96, 32, 1), x])
    e = g.relu6(g.conv(x, 32, 96, 1))
    d = g.relu6(g.conv(e, 96, 96, 3, stride=2, group=96))
    return g.model([1, 16, 13, 13], [g.conv(d, 96, 48, 1)])


@pytest.mark.parametrize("block", list(BLOCK_OPTIONS))
def test_inverted_residual_matches_onnxruntime(block: str) -> None:
    """Depthwise convs run blocked between the 1x1 convs: one reorder in, one out."""
    model = inverted_residual_model()
    feeds = random_inputs(model, seed=2)
    pipeline = _with_block(DEFAULT_PIPELINE, BLOCK_OPTIONS[block])
    compiled = ember.compile(model, threads=2, pipeline=pipeline)
    assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), rel=1e-4)
    text = _graph_ir(model, BLOCK_OPTIONS[block])
    assert text.count("graph.to_blocked") == 1 and text.count("graph.from_blocked") == 1


def strided_wide_rows_model(seed: int = 0) -> onnx.ModelProto:
    """A ResNet downsampling block with wide odd rows: 3x3/2 32->64 (35 output columns, the
    stride-2 conv that keeps two channel vectors on AVX-512) -> relu -> 3x3 64->64, plus
    the 1x1/2 shortcut, then relu."""
    g = _Chain(seed)
    x = g.op("Relu", [g.conv("x", 16, 32, 3)])
    y = g.conv(g.op("Relu", [g.conv(x, 32, 64, 3, stride=2)]), 64, 64, 3)
    return g.model([1, 16, 67, 69], [g.op("Relu", [g.op("Add", [y, g.conv(x, 32, 64, 1, 2)])])])


@pytest.mark.parametrize("block", list(BLOCK_OPTIONS))
def test_strided_wide_rows_match_onnxruntime(block: str) -> None:
    model = strided_wide_rows_model()
    feeds = random_inputs(model, seed=3)
    pipeline = _with_block(DEFAULT_PIPELINE, BLOCK_OPTIONS[block])
    compiled = ember.compile(model, threads=2, pipeline=pipeline)
    assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), rel=1e-4)


@pytest.mark.parametrize("isa,panel", [("x86-64-v4", 32), ("x86-64-v3", 8)])
def test_strided_wide_rows_weight_layout(isa: str, panel: int) -> None:
    """The 3x3 convs' weights are packed for the kernel blocked_conv_blocking picks: two
    vectors of channels with 32 registers, one with 16 (wide rows), strided or not."""
    module, store = import_model(strided_wide_rows_model())
    target = named_target(isa, threads=1)
    pipeline = build_pipeline(f"{GRAPH_STAGE},convert-graph-to-kernel")
    pipeline.apply(make_context(store, target), module)
    convs = [op for op in module.walk() if op.name == "kernel.conv2d"]
    layouts = {
        (tuple(op.strides.get_values()), tuple(op.kernel_shape.get_values())): op.weight_layout.data
        for op in convs
    }
    assert layouts[((2, 2), (3, 3))] == f"conv_lanes_panel{panel}"
    assert layouts[((1, 1), (3, 3))] == f"conv_lanes_panel{panel}"


def upsample_model(seed: int = 0) -> onnx.ModelProto:
    """A DBNet-style FPN on odd sizes: a coarse level (max pool 2x3/2x3 of a conv, 5x5)
    upsampled by Resize nearest x2 rows x3 columns (the asymmetric/floor form exporters
    write) and added to a lateral 1x1 conv at 10x15; a 3x3 conv of the coarse level
    upsampled the same way and concatenated along channels with a 3x3 conv of the sum and
    the sum itself; a 3x3 conv over the concat. Two outputs NCHW consumers read: an upsampled
    level itself, and a Resize by 1.5 (not an integer upsample: stays NCHW behind a reorder)."""
    g = _Chain(seed)

    def resize(x: str, scales: list[float]) -> str:
        name = f"s{len(g.inits)}"
        g.inits.append(numpy_helper.from_array(np.array(scales, np.float32), name))
        return g.op("Resize", [x, "", name], mode="nearest",
                    coordinate_transformation_mode="asymmetric", nearest_mode="floor")  # fmt: skip

    x = g.op("Relu", [g.conv("x", 16, 32, 3)])
    coarse = g.op("MaxPool", [x], kernel_shape=[2, 3], strides=[2, 3])
    merged = g.op("Add", [resize(coarse, [1, 1, 2, 3]), g.conv(x, 32, 32, 1)])
    level = resize(g.conv(coarse, 32, 16, 3), [1, 1, 2, 3])
    fused = g.op("Concat", [level, g.conv(merged, 32, 16, 3), merged], axis=1)
    out = g.op("Relu", [g.conv(fused, 64, 32, 3)])
    fractional = resize(g.conv(out, 32, 16, 1), [1, 1, 1.5, 1.5])
    return g.model([1, 16, 10, 15], [out, fractional, level])


@pytest.mark.parametrize("block", list(BLOCK_OPTIONS))
def test_upsample_matches_onnxruntime(block: str) -> None:
    model = upsample_model()
    feeds = random_inputs(model, seed=4)
    pipeline = _with_block(DEFAULT_PIPELINE, BLOCK_OPTIONS[block])
    compiled = ember.compile(model, threads=2, pipeline=pipeline)
    assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), rel=1e-4)


def test_upsample_runs_blocked() -> None:
    """With 8-channel blocks, both integer upsamples run on rank-5 values (lanes innermost,
    [1, 4, 5, 1, 5, 1, 8] -> [1, 4, 5, 2, 5, 3, 8]): one reorder in (the input) and
    reorders out only to the graph outputs' NCHW readers (the upsampled level, the
    fractional Resize and the last conv)."""
    text = _graph_ir(upsample_model(), BLOCK_OPTIONS["c8"])
    assert text.count("graph.to_blocked") == 1
    assert "-> tensor<1x4x5x2x5x3x8xf32>" in text and "-> tensor<1x2x5x2x5x3x8xf32>" in text
    assert text.count("graph.from_blocked") == 3
