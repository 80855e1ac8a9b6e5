"""kernel.qconv2d (int8 GEMM-based convolution) bit-exact against numpy doing the same integer
arithmetic, on both instruction-set paths (AVX-512 VNNI vpdpbusd, AVX2 vpmaddubsw+vpmaddwd),
and the AVX2 path compiled for an AVX2-only CPU with its assembly checked."""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
import pytest
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.ir import Block

from ember.codegen.jit import JitModule
from ember.core.target import Target, named_target
from ember.dialects import kernel
from ember.dialects.graph import f32_array, i64_array
from ember.dialects.weight_layouts import (
    ISAS,
    QConvGeometry,
    int8_isa,
    pack_qconv_depthwise_weight,
    pack_qconv_weight,
    qconv_workspace_words,
)
from ember.passes.conversion.kernel_to_loops.qconv import lower_qconv
from ember.tests.kernels.harness import memref_type, run_kernel_op

# Small shapes still take the threaded path (see simd.PARALLEL_MIN_FLOPS).
pytestmark = pytest.mark.usefixtures("threads_at_any_size")

_FEATURES = llvm.get_host_cpu_features()
_RUNNABLE = {
    "avx2": bool(_FEATURES.get("avx2")),
    "vnni256": bool(_FEATURES.get("avxvnni")),
    "vnni512": bool(_FEATURES.get("avx512vnni")) and bool(_FEATURES.get("avx512f")),
}


def _out_size(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    return (size + pad - dilation * (k - 1) - 1) // stride + 1


def reference_sum(
    x: np.ndarray, w: np.ndarray, g: QConvGeometry, zero_point: int, offset: np.ndarray
) -> np.ndarray:
    """int64 sums of (x - zero_point) * w (padding is the zero point) + offset."""
    (pt, pl, pb, pr), (sh, sw), (dh, dw) = g.pads, g.strides, g.dilations
    centred = np.pad(x.astype(np.int64) - zero_point, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    acc = np.zeros((g.n, g.cout, g.oh, g.ow), np.int64)
    for ki in range(g.kh):
        for kj in range(g.kw):
            window = centred[
                :,
                :,
                ki * dh : ki * dh + sh * (g.oh - 1) + 1 : sh,
                kj * dw : kj * dw + sw * (g.ow - 1) + 1 : sw,
            ]
            if g.depthwise:  # w [C, 1, kh, kw]: each channel its own filter
                acc += window * w[:, 0, ki, kj].astype(np.int64)[None, :, None, None]
                continue
            cin, cout = g.c // g.group, g.cout // g.group
            for group in range(g.group):  # grouped: each group its channels
                acc[:, group * cout : (group + 1) * cout] += np.einsum(
                    "nchw,oc->nohw",
                    window[:, group * cin : (group + 1) * cin],
                    w[group * cout : (group + 1) * cout, :, ki, kj].astype(np.int64),
                )
    return acc + offset[None, :, None, None]


def reference(
    x: np.ndarray,
    w: np.ndarray,
    g: QConvGeometry,
    zero_point: int,
    offset: np.ndarray,
    multiplier: np.ndarray,
    bias_with_zero_point: np.ndarray,
    lo: int,
    hi: int,
) -> np.ndarray:
    """The kernel's arithmetic in numpy: `reference_sum` to float32 (correctly rounded), one
    fma-like rounding of * multiplier + bias, clamp, round half to even."""
    total = reference_sum(x, w, g, zero_point, offset).astype(np.float32)
    # float64 holds the f32 x f32 product exactly: one rounding to f32 after the add, as fma.
    v = total.astype(np.float64) * multiplier.astype(np.float64)[None, :, None, None]
    v = (v + bias_with_zero_point.astype(np.float64)[None, :, None, None]).astype(np.float32)
    return np.rint(np.clip(v, lo, hi))


def _case(
    shape: tuple[int, int, int, int],
    cout: int,
    kernel_hw: tuple[int, int],
    stride: int | tuple[int, int],
    pad: int | tuple[int, int, int, int],
    dilation: int,
    seed: int,
    weight_range: int = 128,
) -> tuple[np.ndarray, np.ndarray, QConvGeometry]:
    rng = np.random.default_rng(seed)
    n, c, h, w_ = shape
    kh, kw = kernel_hw
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    pads = (pad,) * 4 if isinstance(pad, int) else pad
    oh = _out_size(h, kh, sh, pads[0] + pads[2], dilation)
    ow = _out_size(w_, kw, sw, pads[1] + pads[3], dilation)
    g = QConvGeometry(n, c, h, w_, cout, oh, ow, kh, kw, (sh, sw), pads, (dilation, dilation))
    weights = rng.integers(-weight_range, weight_range, (cout, c, kh, kw)).astype(np.int8)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    return x, weights, g


def run_qconv(
    x: np.ndarray,
    weights: np.ndarray,
    g: QConvGeometry,
    isa_name: str,
    *,
    input_zero_point: int,
    signed: bool,
    lo: int,
    hi: int,
    seed: int = 0,
    threads: int = 1,
    residual: tuple[np.ndarray, list[float]] | None = None,
    int32_output: bool = False,
    target: Target | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's output and the reference's, for x given as stored (uint8 bytes, read as
    int8 when `signed`); with `int32_output`, the exact sums (no requantize)."""
    rng = np.random.default_rng(seed + 100)
    isa = ISAS[isa_name]
    if g.depthwise:
        packed, layout = pack_qconv_depthwise_weight(weights, isa)
    else:
        packed, layout = pack_qconv_weight(weights, isa, g.group)
    given_offset = rng.integers(-5000, 5000, g.cout).astype(np.int32)
    multiplier = rng.uniform(1e-4, 3e-3, g.cout).astype(np.float32)
    bias = rng.uniform(-20, 20, g.cout).astype(np.float32)
    values = x.view(np.int8) if signed else x
    shifted_zero_point = input_zero_point + (128 if signed else 0)
    row_sums = weights.reshape(g.cout, -1).astype(np.int64).sum(axis=1)
    offset = (given_offset - shifted_zero_point * row_sums).astype(np.int32)
    # Guard bytes after the output: a tail store past its last lane fails the test.
    out_size = g.n * g.cout * g.oh * g.ow
    guarded = np.full(out_size + 64, -91, np.int32 if int32_output else np.int8)
    out = guarded[:out_size].reshape(g.n, g.cout, g.oh, g.ow)
    workspace = np.zeros(qconv_workspace_words(g, isa), np.int32)
    extra = [] if residual is None else [residual[0].view(np.int8)]
    arrays = [x.view(np.int8), packed, offset, multiplier, bias, *extra, workspace, out]

    def make(args: list) -> kernel.QConv2dOp:
        def attr(value: int) -> IntegerAttr:
            return IntegerAttr(value, i64)

        fused = {} if residual is None else {"residual_params": f32_array(residual[1])}
        if g.group > 1:
            fused["group"] = attr(g.group)
        return kernel.QConv2dOp(
            operands=[*args[:5], args[5:-2], *args[-2:]],
            properties={
                "kernel_shape": i64_array([g.kh, g.kw]),
                "strides": i64_array(g.strides),
                "pads": i64_array(g.pads),
                "dilations": i64_array(g.dilations),
                "input_zero_point": attr(shifted_zero_point),
                "input_signed": attr(int(signed)),
                "output_zero_point": attr(0),
                "output_min": attr(lo),
                "output_max": attr(hi),
                "weight_layout": StringAttr(layout),
                **fused,
            },
        )

    run_kernel_op(make, arrays, threads=threads, target=target)
    assert np.all(guarded[out_size:] == -91), "a store past the output's end"
    if int32_output:
        return out.astype(np.int64), reference_sum(
            values, weights, g, input_zero_point, given_offset
        )
    expected = reference(
        values, weights, g, input_zero_point, given_offset, multiplier, bias, lo, hi
    )
    if residual is not None:
        expected = reference_residual(expected, residual[0], residual[1])
        lo = int(residual[1][5])
    got = out.astype(np.int64) if signed or lo < 0 else out.view(np.uint8).astype(np.int64)
    return got, expected.astype(np.int64)


def reference_residual(q: np.ndarray, r: np.ndarray, params: list[float]) -> np.ndarray:
    """The fused QDQ Add in float32, as the elementwise kernels compute it: dequantize both,
    add, divide by the scale, round half to even, add the zero point, clamp."""
    conv_scale, r_scale, r_zero, sum_scale, sum_zero, sum_min, sum_max, _ = params
    f = np.float32
    conv = (q.astype(f) - f(0)) * f(conv_scale)  # output zero point 0 in these tests
    res = (r.astype(f) - f(r_zero)) * f(r_scale)
    return np.clip(np.rint((conv + res) / f(sum_scale)) + sum_zero, sum_min, sum_max)


# (input NCHW, Cout, kernel, stride, pad, dilation): channel counts not multiples of 4, Cout
# not a multiple of MR, pixel counts not multiples of NR, widths below and above the 16-pixel
# interleave vector, the direct 1x1 path and the im2col path, batch 2.
SHAPES = [
    ((1, 8, 10, 10), 16, (3, 3), 1, 1, 1),
    ((1, 13, 7, 9), 20, (1, 1), 1, 0, 1),
    ((2, 5, 9, 37), 7, (3, 3), 2, 1, 1),
    ((1, 3, 15, 15), 6, (7, 7), 2, 3, 1),
    ((1, 16, 6, 6), 33, (1, 1), 2, 0, 1),
    ((1, 12, 11, 19), 29, (3, 3), 1, 2, 2),
    ((1, 64, 8, 8), 64, (1, 1), 1, 0, 1),
    # A pixel tail of one lane: LLVM 22 turned its masked byte store into a 4-byte store
    # that overwrote the next channel's first pixels (the tail is now stored byte by byte).
    ((1, 4, 5, 5), 14, (1, 1), 1, 2, 1),
    # Asymmetric pads and strides, a non-square filter.
    ((1, 7, 13, 18), 17, (3, 2), (2, 1), (0, 1, 2, 0), 1),
    # Stride 2 on rows of 35 outputs: panels of one row copied as the even words of vectors.
    ((1, 6, 9, 70), 10, (3, 3), 2, 1, 1),
    # Stride 1 at padded-row positions (16 or more input channels): 14x14 (a block is one
    # padded row of 16), 7x7 (a block reaches three output rows), 2x2 outputs; 5x5 (25 taps:
    # panels) on rows wider than a block.
    ((1, 16, 14, 14), 24, (3, 3), 1, 1, 1),
    ((2, 17, 7, 7), 40, (3, 3), 1, 1, 1),
    ((1, 16, 4, 4), 29, (3, 3), 1, 0, 1),
    ((1, 8, 6, 40), 16, (5, 5), 1, 2, 1),
    # Stride 2 on four phase planes: ResNet's 3x3 (14x14 -> 7x7), dilation 2 on an odd width
    # written 16 columns at a time (33: a vector + tail); a 1x1 stride 2 keeps its panels.
    ((1, 16, 14, 14), 20, (3, 3), 2, 1, 1),
    ((1, 32, 14, 14), 18, (1, 1), 2, 0, 1),
    ((1, 18, 11, 33), 12, (3, 3), 2, (1, 2, 0, 1), 2),
]


@pytest.mark.parametrize("isa_name", ["vnni512", "avx2"])
@pytest.mark.parametrize("case", range(len(SHAPES)))
def test_qconv_is_bit_exact_uint8(isa_name: str, case: int) -> None:
    if not _RUNNABLE[isa_name]:
        pytest.skip(f"this host cannot run {isa_name}")
    shape, cout, k, stride, pad, dilation = SHAPES[case]
    x, w, g = _case(shape, cout, k, stride, pad, dilation, seed=case)
    got, expected = run_qconv(x, w, g, isa_name, input_zero_point=131, signed=False, lo=0, hi=255)
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(expected)) > 10  # the test sees more than the clamp bounds


@pytest.mark.parametrize("isa_name", ["vnni512", "vnni256", "avx2"])
@pytest.mark.parametrize("case", [1, 4, 6, 7])
def test_qconv_int32_output_is_the_exact_sum(isa_name: str, case: int) -> None:
    # MatMulInteger's form (graph.qconv with an int32 output): no requantize, the pixel
    # tails stored masked as int32 lanes; int8 inputs too (their shift folded in the offset).
    if not _RUNNABLE[isa_name]:
        pytest.skip(f"this host cannot run {isa_name}")
    shape, cout, k, stride, pad, dilation = SHAPES[case]
    x, w, g = _case(shape, cout, k, stride, pad, dilation, seed=case)
    for signed, zero_point in ((False, 0), (False, 255), (True, -128)):
        got, expected = run_qconv(
            x, w, g, isa_name, input_zero_point=zero_point, signed=signed, lo=0, hi=0,
            int32_output=True,
        )  # fmt: skip
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("isa_name", ["vnni512", "vnni256", "avx2"])
def test_qconv_int8_input_and_output_bit_exact(isa_name: str) -> None:
    if not _RUNNABLE[isa_name]:
        pytest.skip(f"this host cannot run {isa_name}")
    x, w, g = _case((1, 10, 9, 21), 18, (3, 3), 1, 1, 1, seed=7)
    got, expected = run_qconv(x, w, g, isa_name, input_zero_point=-3, signed=True, lo=-128, hi=127)
    np.testing.assert_array_equal(got, expected)


def test_qconv_on_two_threads_is_bit_exact() -> None:
    """Both parallel loops (interleave over channel groups, pixel blocks with per-thread
    panels) split across threads."""
    isa_name = "vnni512" if _RUNNABLE["vnni512"] else "avx2"
    x, w, g = _case((1, 24, 23, 29), 19, (3, 3), 1, 1, 1, seed=11)
    got, expected = run_qconv(
        x, w, g, isa_name, input_zero_point=77, signed=False, lo=0, hi=255, threads=2
    )
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("isa_name", ["vnni512", "avx2"])
def test_qconv_with_fused_residual_add(isa_name: str) -> None:
    """A QDQ Add in the epilogue: float arithmetic after the exact int32 part, so the
    reference is float32 numpy; the fused multiply-adds LLVM may form can move a result that
    lands on a rounding tie by one step, never more."""
    if not _RUNNABLE[isa_name]:
        pytest.skip(f"this host cannot run {isa_name}")
    x, w, g = _case((1, 10, 9, 21), 18, (3, 3), 1, 1, 1, seed=13)  # 189 pixels: a tail
    check_fused_residual(x, w, g, isa_name)


def check_fused_residual(x: np.ndarray, w: np.ndarray, g: QConvGeometry, isa_name: str) -> None:
    """The conv with a residual add fused, within one step of the float32 reference."""
    r = np.random.default_rng(14).integers(0, 256, (g.n, g.cout, g.oh, g.ow)).astype(np.uint8)
    # conv_scale, residual_scale, residual_zero_point, sum_scale, sum_zero_point, min, max,
    # residual signed
    params = [0.05, 0.03, 120.0, 0.07, 10.0, 10.0, 255.0, 0.0]
    got, expected = run_qconv(
        x, w, g, isa_name, input_zero_point=131, signed=False, lo=0, hi=255,
        residual=(r, params),
    )  # fmt: skip
    assert np.abs(got - expected).max() <= 1
    assert np.mean(got == expected) > 0.999
    assert got.min() == 10 and len(np.unique(got)) > 50


def test_qconv_relu_bound_and_seven_bit_weights_on_avx2() -> None:
    """Weights within [-64, 64] take AVX2's single-product path (no split)."""
    if not _RUNNABLE["avx2"]:
        pytest.skip("this host cannot run avx2")
    x, w, g = _case((1, 9, 8, 17), 11, (3, 3), 1, 1, 1, seed=3, weight_range=64)
    assert pack_qconv_weight(w, ISAS["avx2"])[1].endswith("_t1")
    got, expected = run_qconv(x, w, g, "avx2", input_zero_point=0, signed=False, lo=90, hi=255)
    np.testing.assert_array_equal(got, expected)
    assert got.min() == 90


def test_avx2_weights_outside_seven_bits_are_split_exactly() -> None:
    w = np.array([[-128, 127, 65, -65, 64, -64, 3, 0]], np.int8).reshape(1, 8, 1, 1)
    packed, layout = pack_qconv_weight(w, ISAS["avx2"])
    assert layout.endswith("_t2")
    terms = packed.view(np.int8).reshape(2, -1)
    assert np.abs(terms.astype(np.int16)).max() <= 64
    # term bytes of output channel 0, channels 0..7 (two words of 4 channels)
    mr = ISAS["avx2"].mr
    first = terms.reshape(2, 1, 2, mr, 4)[:, 0, :, 0, :].reshape(2, 8)
    np.testing.assert_array_equal(first.astype(np.int16).sum(axis=0), w.reshape(8))


def qconv_asm(x: np.ndarray, w: np.ndarray, g: QConvGeometry, isa_name: str, cpu: str) -> str:
    """The assembly of kernel.qconv2d for this conv (3x3, its strides and pads), packed for
    `isa_name` (depthwise when `g` is) and compiled for the LLVM cpu `cpu`."""
    isa = ISAS[isa_name]
    if g.depthwise:
        packed, layout = pack_qconv_depthwise_weight(w, isa)
    else:
        packed, layout = pack_qconv_weight(w, isa, g.group)
    arrays = [
        x.view(np.int8),
        packed,
        np.zeros(g.cout, np.int32),
        np.ones(g.cout, np.float32),
        np.zeros(g.cout, np.float32),
        np.zeros(qconv_workspace_words(g, isa), np.int32),
        np.zeros((g.n, g.cout, g.oh, g.ow), np.int8),
    ]
    block = Block(arg_types=[memref_type(a) for a in arrays])

    def attr(value: int) -> IntegerAttr:
        return IntegerAttr(value, i64)

    op = kernel.QConv2dOp(
        operands=[*block.args[:5], [], *block.args[5:]],
        properties={
            "kernel_shape": i64_array([3, 3]),
            "strides": i64_array(g.strides),
            "pads": i64_array(g.pads),
            "dilations": i64_array(g.dilations),
            "input_zero_point": attr(0),
            "input_signed": attr(0),
            "output_zero_point": attr(0),
            "output_min": attr(0),
            "output_max": attr(255),
            "weight_layout": StringAttr(layout),
            **({"group": attr(g.group)} if g.group > 1 else {}),
        },
    )
    block.add_op(op)
    target = named_target(cpu, threads=1)
    module = ModuleOp([lower_qconv(op, target, "qconv_under_test")])
    module.verify()
    return JitModule(module, target).asm()


def _asm_for(isa_name: str, cpu: str) -> str:
    x, w, g = _case((1, 8, 10, 10), 16, (3, 3), 1, 1, 1, seed=0)
    return qconv_asm(x, w, g, isa_name, cpu)


def test_avx2_path_compiles_for_an_avx2_only_cpu_to_vpmaddubsw() -> None:
    asm = _asm_for("avx2", "x86-64-v3")
    assert "vpmaddubsw" in asm and "vpmaddwd" in asm
    assert "vpdpbusd" not in asm and "zmm" not in asm


def test_stride_two_phase_planes_compile_for_both_isas() -> None:
    """The phase-plane (stride 2) path on an AVX2-only cpu and on AVX-512 VNNI."""
    x, w, g = _case((1, 16, 14, 14), 16, (3, 3), 2, 1, 1, seed=0)
    avx2 = qconv_asm(x, w, g, "avx2", "x86-64-v3")
    assert "vpmaddubsw" in avx2 and "vpdpbusd" not in avx2 and "zmm" not in avx2
    vnni = qconv_asm(x, w, g, "vnni512", "icelake-server")
    assert "vpdpbusd" in vnni and "zmm" in vnni


def test_vnni_path_compiles_to_vpdpbusd_on_zmm() -> None:
    asm = _asm_for("vnni512", "icelake-server")
    assert "vpdpbusd" in asm and "zmm" in asm


def test_avx_vnni_path_compiles_to_vex_vpdpbusd_on_ymm() -> None:
    assert int8_isa(named_target("alderlake", threads=1)).name == "vnni256"
    asm = _asm_for("vnni256", "alderlake")
    assert "{vex}\tvpdpbusd" in asm and "ymm" in asm and "zmm" not in asm
