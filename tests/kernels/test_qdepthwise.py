"""kernel.qconv2d on depthwise and grouped filters, bit-exact against numpy doing the same
integer arithmetic (test_qgemm's reference), guard bytes after every output.

Depthwise (layout qconv_dw_<isa>: int16 pairs of two kernel rows over output columns,
vpdpwssd with VNNI, else vpmaddwd + vpaddd): the 16-lane (AVX-512) and 8-lane (AVX2) paths,
the AVX2 one also compiled for an AVX2-only CPU, the instructions checked in the assembly.
Grouped convs (1 < group < channels) run the dense kernel once per group. Both also end to
end: models quantized by `ember quantize`, within one step of onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.core.target import host_target, named_target
from ember.dialects.weight_layouts import (
    QConvGeometry,
)
from ember.tests.kernels.test_qgemm import (
    _RUNNABLE,
    _out_size,
    check_fused_residual,
    qconv_asm,
    run_qconv,
)
from ember.tests.kernels.test_qgemm_models import _output_scale
from ember.tests.oracle import onnxruntime_outputs
from ember.tools.model_zoo import GraphBuilder, graph_op_counts, inverted_residual_model

# Small shapes still take the threaded path (see simd.PARALLEL_MIN_FLOPS).
pytestmark = pytest.mark.usefixtures("threads_at_any_size")

ISA_NAMES = ["vnni512", "avx2"]  # 16 and 8 int32 lanes; vpdpwssd and vpmaddwd


def _case(
    shape: tuple[int, int, int, int],
    k: int,
    stride: int,
    pad: int | tuple[int, int, int, int],
    dilation: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, QConvGeometry]:
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    pads = (pad,) * 4 if isinstance(pad, int) else pad
    oh = _out_size(h, k, stride, pads[0] + pads[2], dilation)
    ow = _out_size(w, k, stride, pads[1] + pads[3], dilation)
    g = QConvGeometry(
        n, c, h, w, c, oh, ow, k, k, (stride, stride), pads, (dilation, dilation), group=c
    )
    weights = rng.integers(-128, 128, (c, 1, k, k)).astype(np.int8)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    return x, weights, g


# (input NCHW, kernel, stride, pad, dilation): channel counts that are not multiples of the
# lanes, output widths below one vector, with a tail of every kind, and above the 4-vector
# column block; stride 2 through the vector de-interleave (rows of >= 2 vectors) and the
# scalar one; MobileNet's asymmetric TF-style stride-2 pads; 5x5; batch 2; dilation 2.
SHAPES = [
    ((1, 16, 12, 12), 3, 1, 1, 1),
    ((1, 13, 9, 37), 3, 2, 1, 1),
    ((2, 7, 11, 19), 5, 1, 2, 1),
    ((1, 9, 10, 70), 5, 2, 2, 1),
    ((1, 5, 7, 7), 3, 1, 1, 1),
    ((1, 6, 8, 8), 3, 2, (0, 0, 1, 1), 1),
    ((1, 3, 6, 17), 3, 1, 0, 1),
    ((1, 4, 9, 80), 3, 1, 1, 1),
    ((1, 11, 10, 12), 3, 1, 2, 2),
    ((1, 3, 11, 40), 3, 3, 1, 1),  # stride 3: the planes copied column by column
]


@pytest.mark.parametrize("isa_name", ISA_NAMES)
@pytest.mark.parametrize("case", range(len(SHAPES)))
def test_depthwise_qconv_is_bit_exact(isa_name: str, case: int) -> None:
    if not _RUNNABLE[isa_name]:
        pytest.skip(f"this host cannot run {isa_name}")
    x, w, g = _case(*SHAPES[case], seed=case)
    got, expected = run_qconv(x, w, g, isa_name, input_zero_point=131, signed=False, lo=0, hi=255)
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(expected)) > 10  # the test sees more than the clamp bounds


@pytest.mark.parametrize("width", [21, 13])  # 13: one masked load per row on AVX-512
@pytest.mark.parametrize("isa_name", [*ISA_NAMES, "vnni256"])
def test_depthwise_qconv_int8_input_output_and_relu_bound(isa_name: str, width: int) -> None:
    """int8 activations (flipped to uint8, the padding their shifted zero point), an int8
    output with a Relu-raised lower bound, extreme weights (-128 and 127)."""
    if not _RUNNABLE[isa_name]:
        pytest.skip(f"this host cannot run {isa_name}")
    x, w, g = _case((1, 19, 9, width), 3, 1, 1, 1, seed=7)
    w[0] = -128
    w[1] = 127
    got, expected = run_qconv(x, w, g, isa_name, input_zero_point=-3, signed=True, lo=-20, hi=127)
    np.testing.assert_array_equal(got, expected)
    assert got.min() == -20


def test_depthwise_qconv_on_two_threads_is_bit_exact() -> None:
    x, w, g = _case((2, 21, 15, 23), 3, 2, 1, 1, seed=11)
    got, expected = run_qconv(
        x, w, g, "avx2", input_zero_point=77, signed=False, lo=0, hi=255, threads=2
    )
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("isa_name", ISA_NAMES)
def test_depthwise_qconv_with_fused_residual_add(isa_name: str) -> None:
    """The residual epilogue is the dense kernel's: float after the exact int32 part (a tie
    may move by one step, as in test_qgemm)."""
    if not _RUNNABLE[isa_name]:
        pytest.skip(f"this host cannot run {isa_name}")
    x, w, g = _case((1, 10, 9, 21), 3, 1, 1, 1, seed=13)
    check_fused_residual(x, w, g, isa_name)


def test_depthwise_avx2_path_compiled_for_an_avx2_only_cpu_is_bit_exact() -> None:
    if not _RUNNABLE["avx2"]:
        pytest.skip("this host cannot run avx2")
    x, w, g = _case((1, 13, 9, 37), 3, 2, 1, 1, seed=5)
    got, expected = run_qconv(
        x, w, g, "avx2", input_zero_point=5, signed=False, lo=0, hi=255,
        target=named_target("x86-64-v3", threads=1),
    )  # fmt: skip
    np.testing.assert_array_equal(got, expected)


def _asm_for(isa_name: str, cpu: str, size: int = 10) -> str:
    x, w, g = _case((1, 16, size, size), 3, 1, 1, 1, seed=0)
    return qconv_asm(x, w, g, isa_name, cpu)


def test_depthwise_avx2_path_compiles_to_vpmaddwd_on_ymm() -> None:
    asm = _asm_for("avx2", "x86-64-v3")
    assert "vpmaddwd" in asm and "ymm" in asm and "zmm" not in asm
    assert "vpdpwssd" not in asm and "vpmulld" not in asm


def test_depthwise_vnni_paths_compile_to_vpdpwssd() -> None:
    asm = _asm_for("vnni512", "znver5")
    assert "vpdpwssd" in asm and "zmm" in asm
    assert "vpmaddwd" not in asm and "vpmulld" not in asm
    asm = _asm_for("vnni256", "alderlake")  # AVX-VNNI: VEX-encoded on ymm
    assert "vpdpwssd" in asm and "zmm" not in asm
    # Outputs of at most 8 columns run on 8 lanes (ymm) on AVX-512 too.
    asm = _asm_for("vnni512", "znver5", size=7)
    assert "vpdpwssd" in asm and "ymm" in asm and "zmm" not in asm


# (input NCHW, group, Cout, kernel, stride, pad): input channels per group a multiple of 4
# and not, output channels per group below and above MR, the direct 1x1 path and im2col,
# a depthwise conv with a channel multiplier of 2 (one input channel per group), batch 2.
GROUPED = [
    ((1, 8, 10, 37), 2, 12, 3, 1, 1),
    ((1, 12, 9, 13), 3, 9, 3, 2, 1),
    ((2, 10, 7, 9), 5, 10, 1, 1, 0),
    ((1, 64, 8, 8), 2, 40, 3, 1, 1),
    ((1, 4, 8, 11), 4, 8, 3, 1, 1),
]


@pytest.mark.parametrize("isa_name", ISA_NAMES)
@pytest.mark.parametrize("case", range(len(GROUPED)))
def test_grouped_qconv_is_bit_exact(isa_name: str, case: int) -> None:
    if not _RUNNABLE[isa_name]:
        pytest.skip(f"this host cannot run {isa_name}")
    (n, c, h, w), group, cout, k, stride, pad = GROUPED[case]
    rng = np.random.default_rng(case)
    oh, ow = (_out_size(size, k, stride, 2 * pad, 1) for size in (h, w))
    g = QConvGeometry(n, c, h, w, cout, oh, ow, k, k, (stride,) * 2, (pad,) * 4, (1, 1), group)
    weights = rng.integers(-128, 128, (cout, c // group, k, k)).astype(np.int8)
    x = rng.integers(0, 256, (n, c, h, w)).astype(np.uint8)
    got, expected = run_qconv(
        x, weights, g, isa_name, input_zero_point=9, signed=True, lo=-128, hi=127
    )
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(expected)) > 10


@pytest.fixture(scope="module")
def inverted_residual_blocks() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The quantized model and the feeds of the test below, quantized once for both targets
    (the calibration compiles the float model: ~1 s of CPU)."""
    size = 19  # odd: stride-2 and column tails
    model = inverted_residual_model(size=size, blocks=((6, 24, 3, 1), (4, 32, 5, 2)))
    rng = np.random.default_rng(3)
    shape = (1, 24, size, size)
    batches = [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(4)]
    quantized = ember.quantize(model, calibration=batches)
    return quantized, {"input": rng.standard_normal(shape).astype(np.float32)}


@pytest.mark.parametrize("cpu", ["host", "x86-64-v3"])
def test_inverted_residual_blocks_quantized_by_ember_match_onnxruntime(
    cpu: str, inverted_residual_blocks: tuple[onnx.ModelProto, dict[str, np.ndarray]]
) -> None:
    """MobileNetV2 blocks (1x1 expand, 3x3 depthwise, 1x1 project + residual; then a 5x5
    stride-2 depthwise block) quantized by `ember quantize`: every conv, the depthwise ones
    too, runs as an integer kernel, and the output is within one quantization step of
    onnxruntime running the same QDQ model (its own QLinearConv kernels), on the host's
    int8 path and on the AVX2 one."""
    quantized, feeds = inverted_residual_blocks
    ops = graph_op_counts(quantized)
    assert ops["graph.qconv"] == 6 and ops["graph.conv"] == 0
    target = host_target(1) if cpu == "host" else named_target(cpu, threads=1)
    compiled = ember.compile(quantized, target=target)
    (got,) = compiled(feeds["input"])
    (expected,) = onnxruntime_outputs(quantized, feeds).values()
    step = _output_scale(quantized)
    assert np.abs(got - expected).max() <= step * 1.001, (np.abs(got - expected).max(), step)


def test_grouped_convs_quantized_by_ember_match_onnxruntime() -> None:
    """ResNeXt-style grouped 3x3 convs (4 groups; 8 groups at stride 2) between 1x1 convs,
    quantized by `ember quantize`: all integer, within one step of onnxruntime."""
    b = GraphBuilder(5)
    y = b.node("Relu", [b.conv_bn("input", 16, 32, 1)])
    y = b.node("Relu", [b.conv_bn(y, 32, 32, 3, group=4)])
    y = b.node("Relu", [b.conv_bn(y, 32, 48, 3, stride=2, group=8)])
    y = b.conv_bn(y, 48, 24, 1)
    shape = (1, 16, 13, 13)
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))
    out = helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 24, 7, 7])
    model = b.model("grouped", [image], [out], 13)
    rng = np.random.default_rng(4)
    batches = [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(4)]
    quantized = ember.quantize(model, calibration=batches)
    ops = graph_op_counts(quantized)
    assert ops["graph.qconv"] == 4 and ops["graph.conv"] == 0
    feeds = {"input": rng.standard_normal(shape).astype(np.float32)}
    (got,) = ember.compile(quantized)(feeds["input"])
    (expected,) = onnxruntime_outputs(quantized, feeds).values()
    step = _output_scale(quantized)
    assert np.abs(got - expected).max() <= step * 1.001, (np.abs(got - expected).max(), step)
