"""The channel-lanes direct conv (layout conv_lanes_panel{NR}) against a float64 reference.

Output channels across the vector lanes, output columns in registers, activations read in
place. Cases cover odd channel counts (a partial last channel block), widths that leave a
narrow last tile, stride 2, asymmetric padding, dilation, batch 2 and 2 threads, on the
host ISA (AVX-512 here) and on an AVX2 target (8 lanes, 16 registers), which runs on any
AVX-512 host too. Tolerance: max |out - ref| <= 1e-4 * max(1, max |ref|).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from xdsl.dialects.builtin import MemRefType, ModuleOp, f32
from xdsl.ir import Block

from ember.core.target import Target, host_target
from ember.dialects.numpy_eval import from_blocked, to_blocked
from ember.dialects.weight_layouts import (
    BLOCKED_MAX_ACCUMULATORS,
    blocked_conv_blocking,
    blocked_max_accumulators,
    conv_lanes_blocking,
    conv_lanes_layout,
    lanes_row_tile,
    pack_conv_lanes_weight,
    pack_depthwise_blocked_weight,
)
from ember.passes.conversion.kernel_to_loops.registry import lowering_for
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.kernels.harness import run_kernel_op
from ember.tests.kernels.test_conv import conv_reference
from ember.tests.kernels.test_matmul import ACTIVATIONS, RTOL
from ember.tools.kernel_ops import conv_op
from ember.tools.kernel_ops import conv_out_size as out_size

# Small shapes still take the threaded path (see simd.PARALLEL_MIN_FLOPS).
pytestmark = pytest.mark.usefixtures("threads_at_any_size")

AVX2 = Target(cpu="x86-64-v3", vector_width=8, vector_registers=16, threads=2)


def run_lanes_conv(
    x_shape: tuple[int, int, int, int],
    cout: int,
    kernel_shape: tuple[int, int],
    *,
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    nvec: int = 2,
    bias: bool = True,
    residual: bool = False,
    activation: str | None = "relu",
    threads: int = 1,
    target: Target | None = None,
    seed: int = 0,
    blocked: bool = False,
) -> None:
    rng = np.random.default_rng(seed)
    batch, cin, h, wd = x_shape
    kh, kw = kernel_shape
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal((cout, cin, kh, kw), dtype=np.float32)
    ho = out_size(h, kh, strides[0], pads[0] + pads[2], dilations[0])
    wo = out_size(wd, kw, strides[1], pads[1] + pads[3], dilations[1])
    out_shape = (batch, cout, ho, wo)
    bias_arr = rng.standard_normal((cout,), dtype=np.float32) if bias else None
    res_arr = rng.standard_normal(out_shape, dtype=np.float32) if residual else None
    target = target or host_target(threads)
    packed, layout = pack_conv_lanes_weight(w, nvec * target.vector_width)
    out = np.full(out_shape, np.nan, dtype=np.float32)
    vw = target.vector_width
    if blocked:  # [N, C/VW, H, W, VW] input, residual and output
        out = to_blocked(out, vw)
    x_in = to_blocked(x, vw) if blocked else x
    res_in = to_blocked(res_arr, vw) if blocked and res_arr is not None else res_arr
    arrays = [x_in, packed, *(a for a in (bias_arr, res_in) if a is not None), out]
    make = conv_op(kernel_shape, strides, pads, dilations, 1, layout, bias, residual, activation)
    run_kernel_op(make, arrays, target, threads)
    if blocked:
        out = from_blocked(out)
    ref = conv_reference(x, w, 1, strides, pads, dilations)
    if bias_arr is not None:
        ref = ref + bias_arr[None, :, None, None]
    if res_arr is not None:
        ref = ref + res_arr
    if activation is not None:
        ref = ACTIVATIONS[activation][1](ref)
    err = np.max(np.abs(out - ref))
    assert err <= RTOL * max(1.0, np.max(np.abs(ref))), f"max error {err}"


# (input NCHW, Cout, kernel, strides, pads, dilations)
LANES_CASES = [
    ((1, 40, 7, 7), 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # ResNet 7x7 stage
    ((1, 24, 14, 14), 37, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # partial channel block
    ((1, 19, 29, 23), 35, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),  # stride 2, odd sizes
    ((2, 21, 10, 19), 18, (3, 3), (1, 1), (0, 2, 1, 0), (1, 1)),  # asymmetric pads, batch 2
    ((1, 17, 13, 30), 33, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),  # dilation, several tiles
    ((1, 300, 9, 9), 20, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),  # pointwise, unrolled channels
    ((1, 130, 14, 13), 48, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),  # strided pointwise
    ((1, 9, 11, 11), 16, (5, 3), (2, 1), (2, 1, 2, 1), (1, 1)),  # non-square kernel
    ((1, 33, 5, 3), 17, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # width < kernel reach
    ((1, 263, 9, 37), 61, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),  # reducing 1x1, wide rows
    ((1, 70, 17, 35), 45, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),  # strided 1x1, 18-col rows
]


def _case_id(case: tuple) -> str:
    x_shape, cout, ks, strides, pads, dilations = case
    return f"{x_shape}->{cout}k{ks}s{strides}p{pads}d{dilations}"


@pytest.mark.parametrize("case", LANES_CASES, ids=_case_id)
@pytest.mark.parametrize("isa", ["host", "avx2"])
def test_conv_lanes(case: tuple, isa: str) -> None:
    x_shape, cout, ks, strides, pads, dilations = case
    target = AVX2 if isa == "avx2" else None
    run_lanes_conv(
        x_shape, cout, ks, strides=strides, pads=pads, dilations=dilations, target=target
    )


# Channel-blocked input and output (the blocked-layout pass): channel counts multiples of
# 16 (so of the AVX2 width 8 too); Cout 80 leaves the last two-vector block half empty.
BLOCKED_CASES = [
    ((1, 64, 7, 7), 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((1, 32, 15, 13), 80, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    ((2, 48, 9, 11), 32, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((1, 64, 14, 13), 48, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
    ((1, 16, 13, 30), 32, (3, 3), (1, 1), (2, 0, 1, 2), (2, 2)),
    # Wide odd rows in two-vector tiles of 11 columns on AVX-512 (53 = 4 x 11 + 9), a
    # half-empty last channel block.
    ((1, 32, 9, 53), 96, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
]


@pytest.mark.parametrize("case", BLOCKED_CASES, ids=_case_id)
@pytest.mark.parametrize("isa", ["host", "avx2"])
def test_conv_lanes_blocked(case: tuple, isa: str) -> None:
    x_shape, cout, ks, strides, pads, dilations = case
    target = AVX2 if isa == "avx2" else host_target(2)
    run_lanes_conv(
        x_shape,
        cout,
        ks,
        strides=strides,
        pads=pads,
        dilations=dilations,
        residual=True,
        threads=2,
        target=target,
        blocked=True,
    )


@pytest.mark.parametrize("nvec", [3, 4])
def test_conv_lanes_wider_channel_blocks(nvec: int) -> None:
    run_lanes_conv((1, 20, 9, 9), 50, (3, 3), pads=(1, 1, 1, 1), nvec=nvec)


@pytest.mark.parametrize("isa", ["host", "avx2"])
def test_conv_lanes_two_threads_residual(isa: str) -> None:
    """Units split over threads; the residual aliases nothing and is added before relu."""
    target = AVX2 if isa == "avx2" else host_target(2)
    run_lanes_conv(
        (2, 32, 15, 15),
        40,
        (3, 3),
        strides=(2, 2),
        pads=(1, 1, 1, 1),
        residual=True,
        threads=2,
        target=target,
    )


@pytest.mark.parametrize("activation", [None, "sigmoid", "leaky_relu"])
def test_conv_lanes_epilogues(activation: str | None) -> None:
    run_lanes_conv(
        (1, 30, 7, 7),
        33,
        (3, 3),
        pads=(1, 1, 1, 1),
        bias=activation is None,
        residual=True,
        activation=activation,
    )


def test_conv_lanes_weights_first_order() -> None:
    """Weights over the rows-first limit: units walk channel blocks outermost."""
    run_lanes_conv((1, 256, 7, 7), 96, (3, 3), pads=(1, 1, 1, 1), threads=2)


@pytest.mark.parametrize("isa", ["host", "avx2"])
def test_conv_lanes_blocked_rows_first_by_input(isa: str) -> None:
    """Blocked, weights over the rows-first limit (3x3 256->64: 576 KiB) but an input over
    BLOCKED_ROWS_FIRST_MIN_INPUT_PER_WEIGHT times larger (256x49x50: 2.4 MiB): units walk
    rows outermost. A width (50) of no whole tile or vector, a residual, two threads."""
    target = AVX2 if isa == "avx2" else host_target(2)
    run_lanes_conv(
        (1, 256, 49, 50),
        64,
        (3, 3),
        pads=(1, 1, 1, 1),
        nvec=1,
        residual=True,
        threads=2,
        target=target,
        blocked=True,
    )


def test_pack_conv_lanes_weight_layout() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 2, 4), dtype=np.float32)
    packed, layout = pack_conv_lanes_weight(w, 8)
    assert layout == conv_lanes_layout(8) == "conv_lanes_panel8"
    assert packed.shape == (1, 2 * 3 * 4, 8)
    for co, ci, r, s in [(0, 0, 0, 0), (4, 2, 1, 3), (2, 1, 0, 2)]:
        assert packed[0, (r * 3 + ci) * 4 + s, co] == w[co, ci, r, s]
    assert not packed[0, :, 5:].any()  # padded channels are zero


def test_conv_lanes_choice() -> None:
    """Which convs take the channel-lanes kernel (see conv_lanes_blocking)."""
    avx512 = Target(vector_width=16, vector_registers=32)
    choose = conv_lanes_blocking
    assert choose(512, 512, 1, (7, 7), (3, 3), (1, 1), avx512) is not None  # ResNet 7x7
    assert choose(128, 128, 1, (28, 28), (3, 3), (1, 1), avx512) is not None
    assert choose(128, 128, 1, (56, 56), (3, 3), (2, 2), avx512) is not None  # strided
    assert choose(64, 64, 1, (56, 56), (3, 3), (1, 1), avx512) is None  # wide: GEMM
    assert choose(512, 2048, 1, (7, 7), (1, 1), (1, 1), avx512) is not None
    assert choose(256, 1024, 1, (14, 14), (1, 1), (1, 1), avx512) is None  # widening
    assert choose(256, 64, 1, (56, 56), (1, 1), (1, 1), avx512) is not None  # 4-fold reducing
    assert choose(192, 64, 1, (28, 28), (1, 1), (1, 1), avx512) is None  # 3-fold: GEMM
    assert choose(64, 128, 1, (28, 28), (1, 1), (2, 2), avx512) is not None  # strided 1x1
    assert choose(32, 64, 1, (28, 28), (1, 1), (2, 2), avx512) is None  # too few taps
    assert choose(8, 16, 1, (7, 7), (3, 3), (1, 1), avx512) is None  # short reduction
    assert choose(64, 64, 2, (7, 7), (3, 3), (1, 1), avx512) is None  # groups
    blocking = choose(512, 512, 1, (7, 7), (3, 3), (1, 1), AVX2)
    assert blocking is not None and blocking.vw == 8 and blocking.nvec == 2
    assert blocking.mr == 4  # 6 columns of 2 ymm vectors at most: 7 = 4 + 3
    assert lanes_row_tile(56, 2, avx512) == 12 and lanes_row_tile(14, 2, avx512) == 7


def test_blocked_conv_choice_wide_rows() -> None:
    """Blocked convs with 32 registers (AVX-512) keep two vectors of channels however wide
    their rows, in 12-column tiles when the kernel has more than one tap (and every tap's
    weights fit the registers beside them), 8-column ones for 1x1; with 16 (AVX2) wide rows of
    a 3x3 keep one vector of 8-column tiles (see blocked_conv_blocking)."""
    avx512 = Target(vector_width=16, vector_registers=32)
    choose = blocked_conv_blocking

    def tile(*args: object) -> tuple[int, int]:
        blocking = choose(*args)  # type: ignore[arg-type]
        assert blocking is not None
        return blocking.nvec, blocking.mr

    assert tile(64, 64, 1, (160, 160), (3, 3), avx512) == (2, 12)  # 14 tiles: 12 = 160/14
    assert tile(64, 128, 1, (80, 80), (3, 3), avx512, (2, 2)) == (2, 12)
    assert tile(512, 512, 1, (20, 20), (3, 3), avx512) == (2, 10)
    assert tile(64, 256, 1, (160, 160), (1, 1), avx512) == (2, 8)  # 1x1: 16 accumulators
    assert tile(64, 64, 1, (56, 56), (5, 5), avx512) == (2, 8)  # 2 x (5 + 12) + 1 > 32
    assert tile(64, 80, 1, (80, 80), (3, 3), avx512, (2, 2)) == (1, 16)  # 80: odd vectors
    assert tile(128, 128, 1, (28, 28), (3, 3), AVX2, (2, 2)) == (1, 7)  # 28 >= 2 x 8: wide
    assert tile(128, 128, 1, (7, 7), (3, 3), AVX2) == (2, 4)
    assert blocked_max_accumulators((3, 3), 2, AVX2) == BLOCKED_MAX_ACCUMULATORS


def _lowered(make, shapes: Sequence[tuple[int, ...]], target: Target) -> str:  # noqa: ANN001
    block = Block(arg_types=[MemRefType(f32, s) for s in shapes])
    op = make(block.args)
    block.add_op(op)
    module = ModuleOp([lowering_for(op)(op, target, "conv")])
    module.verify()
    return str(module)


def test_conv_ir_lanes() -> None:
    """Broadcast activations x vector weights into MR x nvec accumulators, masked stores."""
    make = conv_op(
        (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "conv_lanes_panel16", True, False, "relu"
    )
    text = _lowered(make, [(1, 32, 7, 7), (2, 288, 16), (32,), (1, 32, 7, 7)], AVX2)
    assert_filecheck(
        text,
        """
        CHECK: scf.parallel
        CHECK: scf.for
        CHECK: vector.load {{.*}} vector<8xf32>
        CHECK: vector.broadcast {{.*}} vector<8xf32>
        CHECK: vector.fma
        CHECK: vector.shuffle {{.*}} [0, 8, 1, 9, 2, 10, 3, 11]
        CHECK: vector.maskedstore
        """,
    )
    # The tile is turned around in registers (3 rounds of 8 shuffles per vector of channels,
    # 2 per tile), not by one scalar copy per output through scratch.
    shuffles = text.count("vector.shuffle")
    assert shuffles > 0 and shuffles % 48 == 0


def test_conv_ir_lanes_blocked_stores_accumulators_directly() -> None:
    """Channel-blocked: each accumulator is 8 channels of one pixel, stored as one vector
    into the [N, C/8, H, W, 8] output (no shuffles, no masked stores, no scratch)."""
    make = conv_op(
        (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "conv_lanes_panel16", True, False, "relu"
    )
    shapes = [(1, 4, 7, 7, 8), (2, 288, 16), (32,), (1, 4, 7, 7, 8)]
    text = _lowered(make, shapes, AVX2)
    assert_filecheck(
        text,
        """
        CHECK: scf.parallel
        CHECK: vector.load {{.*}} vector<8xf32>
        CHECK: vector.broadcast {{.*}} vector<8xf32>
        CHECK: vector.fma
        CHECK: vector.store {{.*}} memref<1x4x7x7x8xf32>, vector<8xf32>
        """,
    )
    assert "vector.shuffle" not in text and "vector.maskedstore" not in text
    assert "memref.alloca" not in text


def test_conv_ir_lanes_blocked_prefetches_residual() -> None:
    """Channel-blocked with a residual: each tile asks for its residual's lines (one per
    column and channel vector) before the reduction; without one, only the input's next
    channel block is prefetched. (Values: test_conv_lanes_blocked, whose cases all add a
    residual, Cout 80 with a half-empty last block among them.)"""
    shapes = [(1, 4, 7, 7, 8), (2, 288, 16), (32,), (1, 4, 7, 7, 8)]
    counts = {}
    for residual in (False, True):
        make = conv_op(
            (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "conv_lanes_panel16", True, residual, "relu"
        )
        text = _lowered(make, shapes[:3] + [shapes[3]] * (2 if residual else 1), AVX2)
        counts[residual] = text.count("llvm.prefetch")
        # Flat views: the input's, and the residual's the prefetches read.
        assert text.count("to memref<1568xf32>") == 1 + residual
    # 7 columns: one edge tile of 7 (both edges at once) per row; 2 vectors of 8 channels.
    assert counts[True] - counts[False] == 7 * 2


# 1-D filters wider than LANES_MAX_UNROLLED_TAPS: taps looped in blocks; edge tiles read 0
# where a column's window leaves the row (the clamped, selected loads).
LONG_FILTER_CASES = [
    ((2, 1, 1, 4000), 32, (1, 320), (1, 80), (0, 120, 0, 120), (1, 1)),  # STFT-like framing
    # Odd taps (5 looped blocks of 8 and a remainder tap), stride 3, edge tiles on both
    # sides (a 1x257 over 700 columns checked the same code at 2.5 s of CPU per ISA).
    ((1, 2, 1, 120), 20, (1, 41), (1, 3), (0, 20, 0, 16), (1, 1)),
    ((1, 3, 1, 300), 16, (1, 40), (1, 2), (0, 30, 0, 30), (1, 2)),  # dilated
]


@pytest.mark.parametrize("case", LONG_FILTER_CASES, ids=_case_id)
@pytest.mark.parametrize("isa", ["host", "avx2"])
def test_conv_lanes_long_filter(case: tuple, isa: str) -> None:
    x_shape, cout, ks, strides, pads, dilations = case
    target = AVX2 if isa == "avx2" else None
    run_lanes_conv(
        x_shape, cout, ks, strides=strides, pads=pads, dilations=dilations, target=target
    )


def test_conv_ir_lanes_long_filter_is_looped() -> None:
    """A 1x320 stride-80 filter loops over its taps: every tap unrolled into every tile
    was ~50k ops (~10 s of LLVM); looped it is a few thousand."""
    make = conv_op(
        (1, 320), (1, 80), (0, 120, 0, 120), (1, 1), 1, "conv_lanes_panel16", True, False, None
    )
    text = _lowered(make, [(2, 1, 1, 4000), (2, 320, 16), (32,), (2, 32, 1, 50)], AVX2)
    assert text.count("vector.fma") < 2000, text.count("vector.fma")


def test_conv_lanes_weight_mismatch_is_clear() -> None:
    make = conv_op(
        (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "conv_lanes_panel16", False, False, None
    )
    with pytest.raises(ValueError, match="conv_lanes_weight"):
        _lowered(make, [(1, 32, 7, 7), (2, 280, 16), (1, 32, 7, 7)], AVX2)


# Blocked depthwise convs: (input NCHW, kernel, strides, pads, dilations). Channels are
# multiples of 16; ResNet-style 3x3 with stride 1 and 2, a 5x5, asymmetric pads, dilation,
# rows narrower than the interior step.
DEPTHWISE_BLOCKED_CASES = [
    ((1, 32, 14, 14), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((2, 16, 15, 17), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    ((1, 32, 11, 9), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
    ((1, 16, 10, 13), (3, 3), (2, 1), (0, 2, 1, 0), (1, 1)),
    ((1, 16, 9, 9), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),
    ((1, 16, 3, 3), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
]


@pytest.mark.parametrize("case", DEPTHWISE_BLOCKED_CASES, ids=lambda c: f"{c[0]}k{c[1]}s{c[2]}")
@pytest.mark.parametrize("c", [8, 16])
def test_depthwise_blocked(case: tuple, c: int) -> None:
    """Against a float64 reference, bias + residual + relu, 2 threads; 8-channel blocks on
    an AVX2 target."""
    x_shape, ks, strides, pads, dilations = case
    rng = np.random.default_rng(0)
    channels = x_shape[1]
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal((channels, 1, *ks), dtype=np.float32)
    ho = out_size(x_shape[2], ks[0], strides[0], pads[0] + pads[2], dilations[0])
    wo = out_size(x_shape[3], ks[1], strides[1], pads[1] + pads[3], dilations[1])
    out_shape = (x_shape[0], channels, ho, wo)
    bias = rng.standard_normal((channels,), dtype=np.float32)
    res = rng.standard_normal(out_shape, dtype=np.float32)
    packed, layout = pack_depthwise_blocked_weight(w, c)
    out = to_blocked(np.full(out_shape, np.nan, np.float32), c)
    make = conv_op(ks, strides, pads, dilations, channels, layout, True, True, "relu")
    target = AVX2 if c == 8 else host_target(2)
    run_kernel_op(make, [to_blocked(x, c), packed, bias, to_blocked(res, c), out], target, 2)
    ref = conv_reference(x, w, channels, strides, pads, dilations)
    ref = np.maximum(ref + bias[None, :, None, None] + res, 0)
    err = np.max(np.abs(from_blocked(out) - ref))
    assert err <= RTOL * max(1.0, np.max(np.abs(ref))), f"max error {err}"
