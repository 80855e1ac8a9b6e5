"""kernel.conv2d lowering (GEMM conv, pointwise, im2col, grouped, depthwise) against numpy.

Reference: float64 im2col + einsum. Tolerance: max |out - ref| <= 1e-4 * max(1, max |ref|).
"""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects.builtin import (
    MemRefType,
    ModuleOp,
    f32,
)
from xdsl.ir import Block

from ember.core.target import Target, host_target, named_target
from ember.dialects.weight_layouts import pack_conv_weight
from ember.passes.conversion.kernel_to_loops import (
    conv,  # noqa: F401  (registers lowering)
    simd,
)
from ember.passes.conversion.kernel_to_loops.registry import lowering_for
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.kernels.harness import run_kernel_op
from ember.tests.kernels.test_matmul import ACTIVATIONS, RTOL
from ember.tools.kernel_ops import conv_op, conv_out_size

# Small shapes still take the threaded path (see simd.PARALLEL_MIN_FLOPS).
pytestmark = pytest.mark.usefixtures("threads_at_any_size")
DEFAULT_PARALLEL_MIN_FLOPS = simd.PARALLEL_MIN_FLOPS

AVX2 = Target(cpu="x86-64-v3", vector_width=8, vector_registers=16, threads=2)


def conv_reference(
    x: np.ndarray,
    w: np.ndarray,
    group: int,
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
) -> np.ndarray:
    batch, cin, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    pt, pl, pb, pr = pads
    sh, sw = strides
    dh, dw = dilations
    ho = conv_out_size(h, kh, sh, pt + pb, dh)
    wo = conv_out_size(wd, kw, sw, pl + pr, dw)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    cols = np.empty((batch, cin, kh, kw, ho, wo))
    for r in range(kh):
        for s in range(kw):
            rows = slice(r * dh, r * dh + sh * (ho - 1) + 1, sh)
            colsl = slice(s * dw, s * dw + sw * (wo - 1) + 1, sw)
            cols[:, :, r, s] = xp[:, :, rows, colsl]
    cols = cols.reshape(batch, group, cin_g * kh * kw, ho * wo)
    wg = w.astype(np.float64).reshape(group, cout // group, cin_g * kh * kw)
    return np.einsum("gok,bgkn->bgon", wg, cols).reshape(batch, cout, ho, wo)


def run_conv(
    x_shape: tuple[int, int, int, int],
    cout: int,
    kernel_shape: tuple[int, int],
    *,
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    group: int = 1,
    bias: bool = False,
    residual: bool = False,
    activation: str | None = None,
    threads: int = 1,
    seed: int = 0,
    expect_layout: str | None = None,
    target: Target | None = None,
    in_place: bool = False,
    out_byte_offset: int | None = None,
) -> None:
    """`out_byte_offset`: the output starts that many bytes past a 64-byte boundary."""
    rng = np.random.default_rng(seed)
    batch, cin, h, wd = x_shape
    kh, kw = kernel_shape
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal((cout, cin // group, kh, kw), dtype=np.float32)
    ho = conv_out_size(h, kh, strides[0], pads[0] + pads[2], dilations[0])
    wo = conv_out_size(wd, kw, strides[1], pads[1] + pads[3], dilations[1])
    out_shape = (batch, cout, ho, wo)
    bias_arr = rng.standard_normal((cout,), dtype=np.float32) if bias else None
    res_arr = rng.standard_normal(out_shape, dtype=np.float32) if residual else None
    target = target or host_target(threads)
    packed, layout = pack_conv_weight(w, group, target)
    if expect_layout is not None:
        assert layout.startswith(expect_layout)
    out = np.full(out_shape, np.nan, dtype=np.float32)
    if out_byte_offset is not None:
        count = int(np.prod(out_shape))
        raw = np.full(count + 32, np.nan, dtype=np.float32)
        start = ((-raw.ctypes.data % 64) + out_byte_offset) // 4
        out = raw[start : start + count].reshape(out_shape)
        assert out.ctypes.data % 64 == out_byte_offset
    if in_place:  # the output overwrites the residual, as after buffer planning
        assert res_arr is not None
        out = res_arr.copy()
    arrays = [x, packed, *(a for a in (bias_arr, res_arr) if a is not None), out]
    if in_place:
        arrays[-2] = out
    make = conv_op(
        kernel_shape, strides, pads, dilations, group, layout, bias, residual, activation
    )
    run_kernel_op(make, arrays, target, threads)
    ref = conv_reference(x, w, group, strides, pads, dilations)
    if bias_arr is not None:
        ref = ref + bias_arr[None, :, None, None]
    if res_arr is not None:
        ref = ref + res_arr
    if activation is not None:
        ref = ACTIVATIONS[activation][1](ref)
    err = np.max(np.abs(out - ref))
    assert err <= RTOL * max(1.0, np.max(np.abs(ref))), f"max error {err}"


# (input NCHW, Cout, kernel, strides, pads, dilations, group)
GEMM_CASES = [
    ((1, 16, 7, 7), 24, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # pointwise, N tail 49
    ((2, 5, 4, 4), 7, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # pointwise, N = 16 exactly
    ((1, 16, 32, 32), 24, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # 4 KiB planes: copied
    ((1, 3, 3, 3), 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # N = 9 < VW
    ((1, 16, 14, 14), 32, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),  # ResNet downsample
    ((1, 8, 10, 10), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((2, 6, 11, 9), 13, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    ((1, 3, 32, 32), 8, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),  # stem
    ((1, 4, 12, 12), 5, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),  # dilation
    ((1, 3, 9, 8), 4, (3, 2), (1, 2), (0, 1, 2, 0), (1, 1), 1),  # asymmetric everything
    ((1, 3, 6, 6), 2, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # no padding
    ((1, 8, 9, 9), 12, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),  # groups
    ((1, 16, 5, 5), 8, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 4),  # grouped pointwise
    ((1, 4, 8, 8), 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),  # channel multiplier 2
    # Wo >= NR with unit column stride: vectorized im2col (masked row segments).
    ((1, 3, 20, 20), 7, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((2, 5, 19, 17), 6, (3, 3), (2, 1), (0, 2, 1, 0), (1, 1), 1),  # N tail, asymmetric pads
    ((1, 3, 21, 22), 4, (3, 5), (1, 1), (2, 2, 2, 2), (2, 2), 1),  # dilation
    ((1, 40, 18, 18), 9, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),  # two k blocks
    ((1, 8, 16, 16), 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),  # groups
]


@pytest.fixture
def gemm_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep stride-1 convs over wide maps on the im2col GEMM (off the wide direct conv)."""
    monkeypatch.setattr(conv, "DIRECT_WIDE_MAX_WEIGHT_BYTES", 0)


@pytest.mark.parametrize("case", GEMM_CASES, ids=lambda c: f"{c[0]}->{c[1]}k{c[2]}s{c[3]}g{c[6]}")
def test_conv_gemm(gemm_only: None, case: tuple) -> None:
    x_shape, cout, ks, strides, pads, dilations, group = case
    run_conv(
        x_shape,
        cout,
        ks,
        strides=strides,
        pads=pads,
        dilations=dilations,
        group=group,
        expect_layout="conv_a_panel",
    )


# Few input channels (stems): direct conv from band planes, no im2col. (input, Cout, kernel,
# strides, pads, dilations)
DIRECT_CASES = [
    ((1, 3, 40, 40), 32, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),  # MobileNet stem
    ((1, 3, 41, 39), 64, (3, 3), (2, 2), (0, 0, 0, 0), (1, 1)),  # SqueezeNet stem, W tails
    ((2, 3, 38, 36), 13, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1)),  # ResNet stem, M tail
    ((1, 1, 9, 25), 7, (3, 5), (1, 1), (2, 1, 0, 3), (2, 1)),  # dilation, asymmetric pads
    ((1, 2, 12, 13), 6, (2, 3), (3, 2), (1, 0, 1, 2), (1, 2)),  # stride 3 rows, dilation 2
    ((1, 3, 150, 150), 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # several bands
    # 96 output columns: whole NR-column tiles (NR = 8, 16 or 32) and no tail, as in VGG's
    # 224-wide stem (light VGG-19 runs only with --runslow)
    ((1, 3, 20, 96), 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
]


# Every case on 2 threads; on 1 the ResNet stem (M tail) and the several bands, the other
# five with --runslow (tests/kernels reached the same arcs without them, docs/testing.md).
DIRECT_ONE_THREAD_DEFAULT = {2, 5}


@pytest.mark.parametrize(
    "threads, case",
    [
        pytest.param(
            threads,
            case,
            marks=() if threads == 2 or k in DIRECT_ONE_THREAD_DEFAULT else pytest.mark.slow,
            id=f"{threads}-{case[0]}->{case[1]}k{case[2]}s{case[3]}",
        )
        for threads in (1, 2)
        for k, case in enumerate(DIRECT_CASES)
    ],
)
def test_conv_direct_small_cin(case: tuple, threads: int) -> None:
    x_shape, cout, ks, strides, pads, dilations = case
    assert x_shape[1] <= conv.DIRECT_MAX_CIN
    run_conv(
        x_shape,
        cout,
        ks,
        strides=strides,
        pads=pads,
        dilations=dilations,
        bias=True,
        residual=True,
        activation="clip",
        threads=threads,
        expect_layout="conv_a_panel",
    )


@pytest.mark.parametrize("out_byte_offset", [0, 4], ids=["aligned", "misaligned"])
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_direct_streamed_output(
    monkeypatch: pytest.MonkeyPatch, out_byte_offset: int, threads: int
) -> None:
    """Non-temporal output stores (VGG's 3->64 3x3 stem, at 20x96): taken on a 64-byte
    aligned output, plain stores on a misaligned one, masked stores at the W tail."""
    monkeypatch.setattr(conv, "STREAM_MIN_OUTPUT_BYTES", 0)
    for x_shape in [(1, 3, 20, 96), (1, 3, 9, 37)]:
        run_conv(
            x_shape,
            64,
            (3, 3),
            pads=(1, 1, 1, 1),
            bias=True,
            activation="relu",
            threads=threads,
            expect_layout="conv_a_panel",
            out_byte_offset=out_byte_offset,
        )


@pytest.mark.parametrize(
    "case",
    [c for c in GEMM_CASES if c[0][1] <= conv.DIRECT_MAX_CIN and c[6] == 1],
    ids=lambda c: f"{c[0]}->{c[1]}k{c[2]}s{c[3]}",
)
def test_conv_small_cin_through_gemm(monkeypatch: pytest.MonkeyPatch, case: tuple) -> None:
    """The im2col GEMM path still handles few input channels (the direct path turned off)."""
    monkeypatch.setattr(conv, "DIRECT_MAX_CIN", 0)
    x_shape, cout, ks, strides, pads, dilations, group = case
    run_conv(x_shape, cout, ks, strides=strides, pads=pads, dilations=dilations, group=group)


# Stride-1 convs over maps at least a vector wide: the direct conv for any Cin, no im2col.
# Flat bands (output rows run as one column sequence) when Wo is not a multiple of the
# vector width, one row per chunk otherwise. (input, Cout, kernel, pads, dilations, group)
DIRECT_WIDE_CASES = [
    ((1, 16, 20, 20), 24, (3, 3), (1, 1, 1, 1), (1, 1), 1),  # flat, one band, M tail
    ((1, 64, 56, 56), 64, (3, 3), (1, 1, 1, 1), (1, 1), 1),  # ResNet-50: flat, 7 bands
    ((1, 16, 55, 55), 64, (3, 3), (1, 1, 1, 1), (1, 1), 1),  # SqueezeNet 1.1 expand3x3
    ((2, 8, 17, 19), 14, (3, 3), (0, 2, 1, 1), (1, 1), 2),  # groups, asymmetric pads, batch
    ((1, 8, 32, 32), 8, (3, 3), (1, 1, 1, 1), (1, 1), 1),  # whole vectors: row chunks
    ((1, 6, 21, 23), 5, (5, 5), (2, 2, 2, 2), (2, 2), 1),  # 5x5, dilation 2
    ((1, 5, 40, 17), 30, (2, 3), (0, 1, 1, 0), (1, 1), 1),  # 2x3, no left pad
    ((1, 4, 18, 18), 16, (3, 3), (0, 0, 0, 0), (1, 1), 4),  # unpadded, 4 groups
]


# By default every case on the host's ISA at 2 threads and on AVX2 (whose Target is built
# for 2 threads, so `threads` there changes only how many run the same code) at 2; one thread
# on the host for one flat band, the grouped batch and the row chunks. The other 13 with
# --runslow: under branch coverage they reached nothing the default cases of this file do
# not (docs/testing.md).
DIRECT_WIDE_ONE_THREAD_DEFAULT = {0, 3, 4}
DIRECT_WIDE_PARAMS = [
    pytest.param(
        case,
        isa,
        threads,
        marks=()
        if threads == 2 or (isa == "host" and k in DIRECT_WIDE_ONE_THREAD_DEFAULT)
        else pytest.mark.slow,
        id=f"{threads}-{isa}-{case[0]}->{case[1]}k{case[2]}g{case[5]}",
    )
    for threads in (1, 2)
    for isa in ("host", "avx2")
    for k, case in enumerate(DIRECT_WIDE_CASES)
]


@pytest.mark.parametrize("case, isa, threads", DIRECT_WIDE_PARAMS)
def test_conv_direct_wide(
    monkeypatch: pytest.MonkeyPatch, case: tuple, isa: str, threads: int
) -> None:
    monkeypatch.setattr(conv, "DIRECT_WIDE_MIN_LANES", 8)  # the kernel is ISA-generic
    x_shape, cout, ks, pads, dilations, group = case
    target = AVX2 if isa == "avx2" else host_target(threads)
    geo = _geometry(x_shape, cout, ks, pads, dilations, group)
    assert conv._direct_planes(geo, target) is not None
    run_conv(
        x_shape,
        cout,
        ks,
        pads=pads,
        dilations=dilations,
        group=group,
        bias=True,
        residual=True,
        activation="clip",
        threads=threads,
        expect_layout="conv_a_panel",
        target=target,
    )


@pytest.mark.parametrize("isa", ["host", "avx2"])
def test_conv_direct_wide_bands_in_place(monkeypatch: pytest.MonkeyPatch, isa: str) -> None:
    """Several flat bands, the output overwriting the residual: a band must not store the
    vectors past its last row (partial sums into the next band's first row, which that
    band then read as its residual; a race at 2 threads, wrong at any)."""
    monkeypatch.setattr(conv, "DIRECT_WIDE_MIN_LANES", 8)
    target = AVX2 if isa == "avx2" else host_target(1)
    x_shape, cout, ks, pads = (1, 40, 60, 17), 8, (3, 3), (1, 1, 1, 1)
    geo = _geometry(x_shape, cout, ks, pads, (1, 1), 1)
    planes = conv._direct_planes(geo, target)
    assert planes is not None and planes.flat and planes.bands > 1
    assert planes.band_rows * planes.width % target.vector_width  # a partial last vector
    run_conv(x_shape, cout, ks, pads=pads, bias=True, residual=True, in_place=True, target=target)


def test_conv_direct_wide_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flat bands only where whole vectors per row would idle more lanes than the columns
    between rows; strided, 1xk and heavy-weight convs, and AVX2 targets, stay on the GEMM."""
    avx512, avx2 = named_target("x86-64-v4"), AVX2
    resnet = ((1, 64, 56, 56), 64, (3, 3), (1, 1, 1, 1), (1, 1), 1)
    assert conv._direct_planes(_geometry(*resnet), avx2) is None
    monkeypatch.setattr(conv, "DIRECT_WIDE_MIN_LANES", 8)

    def planes(target: Target, *args: object) -> conv.BandPlanes | None:
        return conv._direct_planes(_geometry(*args), target)  # type: ignore[arg-type]

    flat = planes(avx512, *resnet)
    assert flat is not None and flat.flat and flat.width == 58
    rows = planes(avx2, *resnet)  # 56 = 7 vectors of 8
    assert rows is not None and not rows.flat
    assert planes(avx512, (1, 64, 15, 15), 64, (3, 3), (1, 1, 1, 1), (1, 1), 1) is None
    assert planes(avx512, (1, 16, 56, 56), 16, (1, 7), (0, 3, 0, 3), (1, 1), 1) is None
    assert planes(avx512, (1, 256, 56, 56), 256, (3, 3), (1, 1, 1, 1), (1, 1), 1) is None


@pytest.mark.parametrize(
    ("case", "threads", "bands", "rows"),
    [
        # ResNet's 3x3 64->64 at 56x56 (flat): 7 bands of 8 rows are the fewest vectors on
        # one thread; on two, 7 would leave one thread 4 bands against 3: 8 bands of 7.
        (((1, 64, 56, 56), 64, (3, 3), (1, 1, 1, 1), (1, 1), 1), 1, 7, 8),
        (((1, 64, 56, 56), 64, (3, 3), (1, 1, 1, 1), (1, 1), 1), 2, 8, 7),
        # Row bands (not flat) keep the most rows: VGG's 3->64 at 224x224, 25 bands of 9.
        (((1, 3, 224, 224), 64, (3, 3), (1, 1, 1, 1), (1, 1), 1), 2, 25, 9),
    ],
)
def test_conv_direct_bands_balance_the_threads(
    case: tuple, threads: int, bands: int, rows: int
) -> None:
    planes = conv._direct_planes(_geometry(*case), named_target("x86-64-v4", threads=threads))
    assert planes is not None
    assert (planes.bands, planes.band_rows) == (bands, rows)


def test_balanced_band_rows_keeps_one_thread_plan() -> None:
    """One thread: the fewest total cost (then the most rows); more threads: the least cost
    of the busiest thread first."""
    vectors = lambda rows: -(-rows * 58 // 16)  # noqa: E731  (ResNet's flat 56x56 band)
    assert conv.balanced_band_rows(56, 9, 1, vectors) == 8
    assert conv.balanced_band_rows(56, 9, 2, vectors) == 7
    assert conv.balanced_band_rows(20, 20, 2, vectors) == 10


def _geometry(
    x_shape: tuple, cout: int, ks: tuple, pads: tuple, dilations: tuple, group: int
) -> conv.ConvGeometry:
    batch, cin, h, w = x_shape
    ho = conv_out_size(h, ks[0], 1, pads[0] + pads[2], dilations[0])
    wo = conv_out_size(w, ks[1], 1, pads[1] + pads[3], dilations[1])
    return conv.ConvGeometry(
        batch, cin, h, w, cout, ho, wo, *ks, 1, 1, *dilations, pads[0], pads[1], group
    )


DEPTHWISE_CASES = [
    ((1, 8, 10, 10), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((1, 5, 11, 13), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),  # MobileNet stride 2, odd sizes
    ((2, 3, 7, 7), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((1, 4, 40, 37), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # several row chunks + tail
    ((1, 4, 40, 40), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    ((1, 6, 9, 9), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
    ((1, 4, 12, 12), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),  # dilation
    ((1, 3, 8, 9), (3, 3), (2, 1), (0, 1, 1, 0), (1, 1)),  # asymmetric
    ((1, 3, 9, 8), (3, 3), (1, 3), (1, 0, 0, 2), (1, 2)),  # stride 3 phases + dilation
    ((1, 2, 150, 150), (3, 3), (1, 1), (1, 1, 2, 1), (1, 1)),  # 4 bands of output rows
    ((1, 2, 150, 151), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),  # 4 bands, stride 2
]


@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=lambda c: f"{c[0]}k{c[1]}s{c[2]}d{c[4]}")
def test_conv_depthwise(case: tuple) -> None:
    x_shape, ks, strides, pads, dilations = case
    run_conv(
        x_shape,
        x_shape[1],
        ks,
        strides=strides,
        pads=pads,
        dilations=dilations,
        group=x_shape[1],
        expect_layout="depthwise",
    )


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_conv_epilogue(activation: str) -> None:
    run_conv(
        (1, 6, 9, 9),
        10,
        (3, 3),
        pads=(1, 1, 1, 1),
        bias=True,
        residual=True,
        activation=activation,
    )


@pytest.mark.parametrize("group", [1, 6], ids=["gemm", "depthwise"])
def test_conv_bias_residual_relu(group: int) -> None:
    run_conv(
        (1, 6, 9, 11),
        6,
        (3, 3),
        strides=(2, 2),
        pads=(1, 1, 1, 1),
        group=group,
        bias=True,
        residual=True,
        activation="clip",
    )


def test_conv_pointwise_epilogue() -> None:
    run_conv((2, 12, 5, 5), 9, (1, 1), bias=True, residual=True, activation="gelu")


@pytest.mark.parametrize("ks,pads", [((1, 1), (0, 0, 0, 0)), ((3, 3), (1, 1, 1, 1))])
def test_conv_k_blocked_epilogue(ks: tuple, pads: tuple) -> None:
    """K = Cin*kh*kw > one L1 block (pointwise panel copy / im2col), full epilogue."""
    run_conv((1, 300, 5, 5), 10, ks, pads=pads, bias=True, residual=True, activation="leaky_relu")


@pytest.mark.parametrize(
    "x_shape,cout,ks,strides,pads,group",
    [
        ((1, 16, 7, 7), 64, (3, 3), (1, 1), (1, 1, 1, 1), 1),  # late-ResNet 7x7 plane
        ((2, 8, 15, 15), 20, (3, 3), (2, 2), (1, 1, 1, 1), 1),
        ((1, 32, 13, 13), 32, (3, 3), (1, 1), (1, 1, 1, 1), 32),  # depthwise
        ((1, 64, 7, 7), 96, (1, 1), (1, 1), (0, 0, 0, 0), 1),
    ],
)
def test_conv_two_threads(
    x_shape: tuple, cout: int, ks: tuple, strides: tuple, pads: tuple, group: int
) -> None:
    run_conv(
        x_shape,
        cout,
        ks,
        strides=strides,
        pads=pads,
        group=group,
        bias=True,
        residual=True,
        activation="relu",
        threads=2,
    )


@pytest.mark.parametrize(
    "x_shape,cout,ks,strides,pads",
    [
        ((1, 64, 56, 56), 64, (3, 3), (1, 1), (1, 1, 1, 1)),
        ((1, 256, 56, 56), 64, (1, 1), (1, 1), (0, 0, 0, 0)),
        ((1, 512, 28, 28), 256, (1, 1), (2, 2), (0, 0, 0, 0)),
        ((1, 3, 224, 224), 64, (7, 7), (2, 2), (3, 3, 3, 3)),
    ],
    ids=["3x3-64", "1x1-256-64", "1x1s2-512-256", "stem"],
)
def test_conv_resnet_layers(
    x_shape: tuple, cout: int, ks: tuple, strides: tuple, pads: tuple
) -> None:
    run_conv(x_shape, cout, ks, strides=strides, pads=pads, bias=True, activation="relu", threads=2)


@pytest.mark.parametrize(
    "x_shape,cout,ks,pads,group,threads",
    [
        ((1, 16, 7, 7), 64, (3, 3), (1, 1, 1, 1), 1, 1),  # 4 panels, last one 1 column
        ((2, 300, 7, 7), 13, (3, 3), (1, 1, 1, 1), 1, 1),  # k blocks, M tail, batch 2
        ((1, 64, 7, 7), 96, (1, 1), (0, 0, 0, 0), 1, 1),  # pointwise read in place
        ((1, 600, 6, 5), 20, (1, 1), (0, 0, 0, 0), 1, 1),  # pointwise, k blocks copied
        ((1, 16, 6, 6), 24, (3, 3), (1, 1, 1, 1), 2, 2),  # groups, 2 threads, M chunks
    ],
)
def test_conv_shared_a_panels(
    monkeypatch: pytest.MonkeyPatch,
    x_shape: tuple,
    cout: int,
    ks: tuple,
    pads: tuple,
    group: int,
    threads: int,
) -> None:
    """All the column panels of a unit swept by each A tile (forced on for small weights)."""
    monkeypatch.setattr(conv, "SHARED_A_MIN_BYTES", 0)
    run_conv(
        x_shape,
        cout,
        ks,
        pads=pads,
        group=group,
        bias=True,
        residual=True,
        activation="relu",
        threads=threads,
    )


def test_conv_ir_shared_a_for_large_weights() -> None:
    """A 3x3 512->512 conv at 7x7 (9.4 MB of weights, 4 panels): one unit per M chunk that
    packs all four panels; the 14x14 one (13 panels) keeps one panel per unit."""

    def scratch_panels(size: int) -> int:
        # Lowering only looks at shapes; zero weights keep the packing cheap.
        ir = _lowered((1, 512, size, size), 512, (3, 3), (1, 1, 1, 1), 1)
        return ir.count("memref.alloca")

    assert scratch_panels(7) == 4
    assert scratch_panels(14) == 2  # one panel per unit: a full-width and a tail variant


def test_pack_conv_weight_layout() -> None:
    target = Target(vector_width=8, vector_registers=16)
    w = np.arange(2 * 7 * 3 * 1 * 1, dtype=np.float32).reshape(14, 3, 1, 1)
    packed, layout = pack_conv_weight(w, 2, Target())
    assert layout == "conv_a_panel6"
    assert packed.shape == (2, 2, 3, 6)  # [G, ceil(7/6), K, MR]
    np.testing.assert_array_equal(packed[1, 0, :, 2], w[9, :, 0, 0])
    np.testing.assert_array_equal(packed[1, 1, :, 0], w[13, :, 0, 0])
    assert not packed[1, 1, :, 1:].any()
    dw, dw_layout = pack_conv_weight(np.ones((4, 1, 3, 3), np.float32), 4, target)
    assert dw_layout == "depthwise_c_kk" and dw.shape == (4, 9)


def _lowered(
    x_shape: tuple, cout: int, ks: tuple, pads: tuple, group: int, target: Target | None = None
) -> str:
    target = target or Target(vector_width=8, vector_registers=16, threads=2)
    w = np.zeros((cout, x_shape[1] // group, *ks), np.float32)
    packed, layout = pack_conv_weight(w, group, target)
    ho = conv_out_size(x_shape[2], ks[0], 1, pads[0] + pads[2], 1)
    wo = conv_out_size(x_shape[3], ks[1], 1, pads[1] + pads[3], 1)
    types = [MemRefType(f32, s) for s in (x_shape, packed.shape, (1, cout, ho, wo))]
    block = Block(arg_types=types)
    op = conv_op(ks, (1, 1), pads, (1, 1), group, layout, False, False, None)(block.args)
    module = ModuleOp([lowering_for(op)(op, target, "conv")])
    module.verify()
    return str(module)


def test_conv_ir_pointwise_reads_input_directly() -> None:
    """1x1 conv: no im2col scratch; B rows are vector loads of the input planes."""
    ir = _lowered((1, 16, 7, 7), 24, (1, 1), (0, 0, 0, 0), 1)
    assert "memref.alloca" not in ir
    assert_filecheck(
        ir,
        """
        CHECK: func.func @conv(%0: memref<1x16x7x7xf32>, %1: memref<1x4x16x6xf32>, %2: memref<1x24x7x7xf32>)
        CHECK: scf.parallel
        CHECK: vector.load %0[{{.*}}] : memref<1x16x7x7xf32>, vector<8xf32>
        CHECK-COUNT-12: vector.fma
        CHECK: vector.maskedload %0
        CHECK: vector.maskedstore
        """,
    )


def test_conv_ir_im2col_panel(gemm_only: None) -> None:
    """3x3 conv: a K x NR im2col panel in scratch, zero-selected at the padding."""
    ir = _lowered((1, 4, 8, 8), 8, (3, 3), (1, 1, 1, 1), 1)
    assert_filecheck(
        ir,
        """
        CHECK: scf.parallel
        CHECK: memref.alloca() : memref<36x16xf32>
        CHECK: arith.cmpi ult
        CHECK: arith.select
        CHECK: memref.store {{.*}} : memref<36x16xf32>
        CHECK: vector.load {{.*}} : memref<36x16xf32>, vector<8xf32>
        CHECK: vector.fma
        """,
    )


def test_conv_ir_direct_streams_large_stem_outputs() -> None:
    """VGG's 3->64 stem at 224x224 (12.8 MB of output) stores whole output vectors
    non-temporally; a stem with a small output (64 x 40x40) keeps plain stores."""
    target = host_target(1)
    large = _lowered((1, 3, 224, 224), 64, (3, 3), (1, 1, 1, 1), 1, target)
    assert "nontemporal = true" in large
    small = _lowered((1, 3, 40, 40), 64, (3, 3), (1, 1, 1, 1), 1, target)
    assert "nontemporal = true" not in small


def test_conv_ir_wide_direct_streams_large_outputs() -> None:
    """The wide-map direct conv (16-lane targets) streams an output of 8 MB or more too:
    VGG's 64->64 at 224x224 (12.8 MB) does, a 64->64 at 56x56 (0.8 MB) does not."""
    avx512 = named_target("x86-64-v4", 1)
    large = _lowered((1, 64, 224, 224), 64, (3, 3), (1, 1, 1, 1), 1, avx512)
    assert "nontemporal = true" in large
    small = _lowered((1, 64, 56, 56), 64, (3, 3), (1, 1, 1, 1), 1, avx512)
    assert "nontemporal = true" not in small


def test_conv_ir_direct_small_cin() -> None:
    """3 input channels: band planes (3 channels x 1 phase) and a K = 27 reduction of
    6 x 2 vector tiles (then 6 x 1 for the 4 output columns left of each row) looped over
    the 9 (channel, kernel row) pairs, the 3 taps of each unrolled; no im2col panel."""
    ir = _lowered((1, 3, 20, 20), 12, (3, 3), (1, 1, 1, 1), 1)
    assert "memref<27x16xf32>" not in ir
    assert_filecheck(
        ir,
        """
        CHECK: scf.parallel
        CHECK: memref.alloca() : memref<3x22x32xf32>
        CHECK: scf.for
        CHECK-COUNT-36: vector.fma {{.*}} : vector<8xf32>
        CHECK-NOT: vector.fma
        CHECK: scf.yield
        CHECK: vector.store
        CHECK: scf.for
        CHECK-COUNT-18: vector.fma {{.*}} : vector<8xf32>
        CHECK-NOT: vector.fma
        CHECK: scf.yield
        CHECK: vector.maskedstore
        """,
    )


@pytest.mark.parametrize(
    "isa,vw,mr,slack", [("x86-64-v4", 16, 14, 1), ("x86-64-v3", 8, 6, 1)], ids=["avx512", "avx2"]
)
def test_conv_ir_direct_wide_flat(
    monkeypatch: pytest.MonkeyPatch, isa: str, vw: int, mr: int, slack: int
) -> None:
    """16 -> 24 channels, 3x3 at 20x20 on either ISA at 2 threads: two flat bands (one per
    thread) of zero-bordered planes 22 wide (10 rows + 2 halo + slack), a loop over the 48 (channel, kernel row) pairs of
    MR x 2 vector tiles with the 3 taps unrolled, and every output vector stored as two
    masked parts (the end of one output row, the start of the next)."""
    monkeypatch.setattr(conv, "DIRECT_WIDE_MIN_LANES", 8)  # AVX2 runs the GEMM by default
    ir = _lowered((1, 16, 20, 20), 24, (3, 3), (1, 1, 1, 1), 1, named_target(isa, threads=2))
    assert "memref<144x" not in ir  # no im2col panel
    fmas = 3 * mr * 2
    assert_filecheck(
        ir,
        f"""
        CHECK: scf.parallel
        CHECK: memref.alloca() : memref<16x{12 + slack}x22xf32>
        CHECK: scf.for
        CHECK: vector.create_mask {{{{.*}}}} : vector<{vw}xi1>
        CHECK: scf.for
        CHECK-COUNT-{fmas}: vector.fma {{{{.*}}}} : vector<{vw}xf32>
        CHECK-NOT: vector.fma
        CHECK: scf.yield
        CHECK: vector.maskedstore %2[{{{{.*}}}} : memref<1x24x20x20xf32>, vector<{vw}xi1>
        CHECK-NEXT: vector.maskedstore %2[{{{{.*}}}} : memref<1x24x20x20xf32>, vector<{vw}xi1>
        """,
    )


@pytest.mark.parametrize(
    ("x_shape", "cout", "group", "parallel"),
    [
        ((1, 8, 10, 10), 8, 1, False),  # 0.12 MFLOP
        ((1, 32, 15, 15), 32, 32, False),  # depthwise, 0.13 MFLOP
        ((1, 16, 20, 20), 24, 1, True),  # 2.8 MFLOP
    ],
)
def test_conv_below_the_threshold_runs_on_the_calling_thread(
    monkeypatch: pytest.MonkeyPatch, x_shape: tuple, cout: int, group: int, parallel: bool
) -> None:
    """At 2 threads a conv below simd.PARALLEL_MIN_FLOPS is one scf.for over its work units
    (a thread team cost the VAD model's 0.1 MFLOP convs ~55 us each, ~2 us on one thread);
    a larger one keeps its scf.parallel."""
    monkeypatch.setattr(simd, "PARALLEL_MIN_FLOPS", DEFAULT_PARALLEL_MIN_FLOPS)
    ir = _lowered(x_shape, cout, (3, 3), (1, 1, 1, 1), group)
    if parallel:
        assert_filecheck(ir, "CHECK: scf.parallel")
    else:
        assert_filecheck(ir, "CHECK-NOT: scf.parallel\nCHECK: scf.for")


def test_narrow_depthwise_conv_is_parallel_by_its_lane_flops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A depthwise conv over 7-wide rows fills 7 of 16 lanes: 0.45 MFLOP of real work (below
    simd.PARALLEL_MIN_FLOPS) but 1.0 M flops of vector FMAs, which is what its time follows
    (a 512 @7x7 depthwise conv: 14 us on one thread, 8 on two). It takes the thread team."""
    monkeypatch.setattr(simd, "PARALLEL_MIN_FLOPS", DEFAULT_PARALLEL_MIN_FLOPS)
    target = Target(vector_width=16, vector_registers=32, threads=2)
    ir = _lowered((1, 512, 7, 7), 512, (3, 3), (1, 1, 1, 1), 512, target)
    assert 2 * 512 * 49 * 9 < DEFAULT_PARALLEL_MIN_FLOPS
    assert_filecheck(ir, "CHECK: scf.parallel")
    # On 8 lanes (7 of 8 busy) the same conv is 0.52 M lane-flops: still one thread.
    ir = _lowered((1, 512, 7, 7), 512, (3, 3), (1, 1, 1, 1), 512)
    assert_filecheck(ir, "CHECK-NOT: scf.parallel\nCHECK: scf.for")


def test_conv_ir_depthwise() -> None:
    ir = _lowered((1, 8, 10, 10), 8, (3, 3), (1, 1, 1, 1), 8)
    assert_filecheck(
        ir,
        """
        CHECK: scf.parallel
        CHECK: memref.alloca() : memref<1x12x24xf32>
        CHECK-COUNT-9: vector.fma
        """,
    )


def test_conv_ir_avx512(gemm_only: None) -> None:
    """A 16-lane target: 14 x 32 GEMM tiles and 16-lane depthwise vectors."""
    target = named_target("x86-64-v4", threads=2)
    ir = _lowered((1, 8, 20, 20), 30, (3, 3), (1, 1, 1, 1), 1, target)
    assert_filecheck(
        ir,
        """
        CHECK: func.func @conv(%0: memref<1x8x20x20xf32>, %1: memref<1x3x72x14xf32>
        CHECK: memref.alloca() : memref<72x32xf32>
        CHECK: arith.select
        CHECK-COUNT-28: vector.fma {{.*}} : vector<16xf32>
        """,
    )
    ir = _lowered((1, 8, 20, 20), 8, (3, 3), (1, 1, 1, 1), 8, target)
    assert_filecheck(ir, "CHECK-COUNT-9: vector.fma {{.*}} : vector<16xf32>")


def test_conv_shape_mismatch_is_clear() -> None:
    block = Block(
        arg_types=[
            MemRefType(f32, (1, 4, 8, 8)),
            MemRefType(f32, (1, 2, 36, 6)),
            MemRefType(f32, (1, 8, 7, 7)),
        ]
    )
    op = conv_op((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "conv_a_panel6", False, False, None)(
        block.args
    )
    with pytest.raises(ValueError, match="kernel.conv2d: output"):
        lowering_for(op)(op, Target(), "conv")


@pytest.mark.parametrize("threads", [1, 2])
def test_vgg_stem_model_against_onnxruntime(threads: int) -> None:
    """VGG's stem, Conv 3->64 3x3 pad 1 + Relu at 224x224, compiled whole: its 12.8 MB
    output takes the streamed (non-temporal) stores. Tolerance: assert_close, 1e-4 of the
    largest |output|."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import ember
    from ember.tests.oracle import assert_close, onnxruntime_outputs, random_inputs

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((64, 3, 3, 3), np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(64, np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="stem"),
            helper.make_node("Relu", ["c"], ["y"], name="relu"),
        ],
        "vgg_stem",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 224, 224])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    assert 4 * 64 * 224 * 224 >= conv.STREAM_MIN_OUTPUT_BYTES
    feeds = random_inputs(model)
    got = ember.compile(model, threads=threads).run(feeds)
    assert_close(got, onnxruntime_outputs(model, feeds))
