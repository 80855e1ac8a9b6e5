"""kernel.conv2d -> GEMM-formulated SIMD loops (and a direct kernel for depthwise convs).

Per group, C[Cout/G, Ho*Wo] = W[Cout/G, K] @ im2col(x)[K, Ho*Wo] with K = Cin/G*kh*kw.
The packed weights are the A operand ("conv_a_panel{MR}", see dialects/weight_layouts.py) so each A element
is one broadcast; the activations are B, N = Ho*Wo runs across vector lanes. Work units
(batch, group, N panel, M chunk) run under scf.parallel; inside a unit the k loop is blocked
(gemm_common.gemm_panel). A 1x1 stride-1 unpadded conv with a single k block reads B
straight from the input; every other conv packs each k block of its NR-wide panel into an
L1-sized scratch panel just before the MR-row tiles sweep it: implicit im2col (zeros where
the window hits padding), or a plain row copy for pointwise convs.

Activations are addressed as the flattened [B, C, H*W] view of NCHW: the emitter linearizes
indices row-major from the static shape, so [b, c, 0, n] names element n of plane (b, c).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from math import prod

from xdsl.dialects import arith, func, vector
from xdsl.dialects.builtin import BoolAttr, DenseArrayBase, VectorType, f32, i1, i64
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.weight_layouts import (
    DEPTHWISE_LAYOUT,
    LANES_MAX_ACCUMULATORS,
    blocked_max_accumulators,
    conv_lanes_layout,
    conv_layout,
    depthwise_blocked_layout,
    gemm_blocking,
    lanes_row_tile,
)
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, Value, kernel_function
from ember.passes.conversion.kernel_to_loops.flat_access import shuffle
from ember.passes.conversion.kernel_to_loops.gemm_common import (
    K_UNROLL,
    SCRATCH_LIMIT_BYTES,
    Epilogue,
    GemmPanel,
    activation_of,
    alloca,
    ceil_div,
    decode,
    describe_kernel,
    epilogue_summary,
    gemm_panel,
    gemm_panels,
    if_else,
    k_block,
    load_lanes,
    m_chunking,
    m_tile_loop,
    memref_shape,
    pack_rows,
    prefetch,
    split_static,
    store_lanes,
)
from ember.passes.conversion.kernel_to_loops.registry import lowering
from ember.passes.conversion.kernel_to_loops.simd import view, work_units


def _ints(attr: DenseArrayBase) -> list[int]:
    return [int(v) for v in attr.get_values()]


def nchw_shape(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """[N, C, H, W] of an NCHW shape or of a channel-blocked [N, C/c, H, W, c] one."""
    if len(shape) == 5:
        n, blocks, h, w, c = shape
        return n, blocks * c, h, w
    n, c, h, w = shape
    return n, c, h, w


# Addresses this far apart share an L1 set on every x86-64 core ember targets.
L1_SET_STRIDE_BYTES = 4096


@dataclass(frozen=True)
class ConvGeometry:
    batch: int
    cin: int
    h: int
    w: int
    cout: int
    ho: int
    wo: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int
    group: int

    @staticmethod
    def of(op: kernel.Conv2dOp) -> ConvGeometry:
        batch, cin, h, w = nchw_shape(memref_shape(op.input))
        out_batch, cout, ho, wo = nchw_shape(memref_shape(op.output))
        kh, kw = _ints(op.kernel_shape)
        sh, sw = _ints(op.strides)
        dh, dw = _ints(op.dilations)
        pt, pl, pb, pr = _ints(op.pads)
        group = op.group.value.data
        expect_h = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        expect_w = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
        if out_batch != batch or (ho, wo) != (expect_h, expect_w):
            raise ValueError(
                f"kernel.conv2d: output {memref_shape(op.output)} does not match input "
                f"{memref_shape(op.input)} with kernel {kh}x{kw}, strides {sh}x{sw}, "
                f"pads {[pt, pl, pb, pr]}, dilations {dh}x{dw} (expected {expect_h}x{expect_w})"
            )
        if cin % group or cout % group:
            raise ValueError(
                f"kernel.conv2d: channels {cin}->{cout} not divisible by group {group}"
            )
        if min(sh, sw, dh, dw) < 1 or min(pt, pl, pb, pr) < 0:
            raise ValueError("kernel.conv2d: strides/dilations must be >= 1 and pads >= 0")
        return ConvGeometry(batch, cin, h, w, cout, ho, wo, kh, kw, sh, sw, dh, dw, pt, pl, group)

    @property
    def flops(self) -> int:
        taps = self.cin // self.group * self.kh * self.kw
        return 2 * self.batch * self.cout * self.ho * self.wo * taps

    def summary(self) -> str:
        """E.g. "conv 3x3 s2 64->128 @56x56 -> 28x28" (dw: depthwise, gN: N groups)."""
        kind = "dw" if self.group == self.cin == self.cout else f"g{self.group}"
        text = f"conv {self.kh}x{self.kw} s{self.sh}"
        if self.sw != self.sh:
            text += f"x{self.sw}"
        if self.dh > 1 or self.dw > 1:
            text += f" d{self.dh}x{self.dw}"
        text += f" {self.cin}->{self.cout}" + ("" if self.group == 1 else f" {kind}")
        text += f" @{self.h}x{self.w}"
        if (self.ho, self.wo) != (self.h, self.w):
            text += f" -> {self.ho}x{self.wo}"
        return text if self.batch == 1 else f"{text} b{self.batch}"

    @property
    def pointwise(self) -> bool:
        """1x1, stride 1, no padding: the input planes are already the GEMM's B matrix."""
        return (self.kh, self.kw, self.sh, self.sw, self.pt, self.pl) == (1, 1, 1, 1, 0, 0) and (
            self.ho,
            self.wo,
        ) == (self.h, self.w)


def _function(
    op: kernel.Conv2dOp, name: str
) -> tuple[func.FuncOp, LoopBuilder, dict[str, SSAValue]]:
    names = ["input", "weight", "bias", "residual", "output"]
    present = [(n, getattr(op, n)) for n in names if getattr(op, n) is not None]
    fn, body = kernel_function(name, [v.type for _, v in present])
    return fn, body, {n: arg for (n, _), arg in zip(present, fn.args, strict=True)}


@lowering(kernel.Conv2dOp)
def lower_conv2d(op: kernel.Conv2dOp, target: Target, name: str) -> func.FuncOp:
    geo = ConvGeometry.of(op)
    if op.bias is not None and memref_shape(op.bias) != (geo.cout,):
        raise ValueError(f"kernel.conv2d: bias shape {memref_shape(op.bias)} != ({geo.cout},)")
    blocked = len(memref_shape(op.input)) == 5
    layout = op.weight_layout.data
    blocked_layouts = (conv_lanes_layout(0)[:-1], depthwise_blocked_layout(0)[:-1])
    if blocked and not layout.startswith(blocked_layouts):
        raise ValueError(
            f"kernel.conv2d: a channel-blocked conv ({memref_shape(op.input)} -> "
            f"{memref_shape(op.output)}) runs only the channel-lanes or the blocked depthwise "
            f"kernel, not weight layout '{layout}'"
        )
    if blocked and layout.startswith(blocked_layouts[1]):
        fn = _lower_depthwise_blocked(op, geo, target, name)
    elif op.weight_layout.data == DEPTHWISE_LAYOUT:
        fn = _lower_depthwise(op, geo, target, name)
    elif op.weight_layout.data.startswith(conv_lanes_layout(0)[:-1]):
        fn = _lower_channel_lanes(op, geo, target, name)
    else:
        planes = _direct_planes(geo, target)
        if planes is not None:
            _check_gemm_weight(op, geo)
            fn = _lower_direct(op, geo, planes, target, name)
        else:
            fn = _lower_gemm_conv(op, geo, target, name)
    describe_kernel(fn, geo.summary() + epilogue_summary(op), geo.flops)
    return fn


def _im2col_columns(
    b: LoopBuilder, n0: SSAValue, cols: int, geo: ConvGeometry
) -> list[tuple[SSAValue, SSAValue]]:
    """Top-left input coordinate of the window of each output column n0 + j of a panel."""
    corners = []
    for j in range(cols):
        n = b.add(n0, j)
        row = b.sub(b.mul(b.floordiv(n, geo.wo), geo.sh), geo.pt)
        col = b.sub(b.mul(b.rem(n, geo.wo), geo.sw), geo.pl)
        corners.append((row, col))
    return corners


def _pack_im2col(
    b: LoopBuilder,
    panel: SSAValue,
    x: SSAValue,
    bi: SSAValue,
    ch0: SSAValue,
    corners: list[tuple[SSAValue, SSAValue]],
    width: int,
    channels: tuple[Value, Value],
    geo: ConvGeometry,
) -> None:
    """panel[(ci-c_lo)*kh*kw + r*kw + s, j] = x[bi, ch0+ci, window(j) + (r*dh, s*dw)] for the
    channels c_lo <= ci < c_hi of one k block; 0 where the window hits padding.

    The window offset and its validity are computed once per (r, s); the innermost channel
    loop is then a load/select/store per element.
    """
    zero = b.const(0.0)
    # The last window's last tap decides whether the end padding is read (not ho*sh > h:
    # pads [0, 0, 2, 0] with a 3-row kernel over 4 rows read rows 4 and 5 unchecked).
    last_row = (geo.ho - 1) * geo.sh - geo.pt + (geo.kh - 1) * geo.dh
    last_col = (geo.wo - 1) * geo.sw - geo.pl + (geo.kw - 1) * geo.dw
    padded = geo.pt > 0 or geo.pl > 0 or last_row >= geo.h or last_col >= geo.w
    cols = len(corners)
    taps = geo.kh * geo.kw
    c_lo, c_hi = channels

    def window(b: LoopBuilder, r: SSAValue, s: SSAValue) -> None:
        dr = b.mul(r, geo.dh)
        ds = b.mul(s, geo.dw)
        offsets: list[SSAValue] = []
        valid: list[SSAValue | None] = []
        for row0, col0 in corners:
            ih = b.add(row0, dr)
            iw = b.add(col0, ds)
            offset = b.add(b.mul(ih, geo.w), iw)
            if padded:
                # Negative coordinates wrap to huge unsigned values: one compare per axis.
                ok = b.insert(
                    arith.AndIOp(b.cmp_index("ult", ih, geo.h), b.cmp_index("ult", iw, geo.w))
                ).results[0]
                offsets.append(b.select(ok, offset, b.index(0)))
                valid.append(ok)
            else:
                offsets.append(offset)
                valid.append(None)
        tap = b.add(b.mul(r, geo.kw), s)

        def channel(b: LoopBuilder, ci: SSAValue) -> None:
            k = b.add(b.mul(b.sub(ci, c_lo), taps), tap)
            ch = b.add(ch0, ci)
            for j in range(cols):
                value = b.load(x, [bi, ch, 0, offsets[j]])
                ok = valid[j]
                b.store(value if ok is None else b.select(ok, value, zero), panel, [k, j])
            for j in range(cols, width):
                b.store(zero, panel, [k, j])

        b.for_range(c_lo, c_hi, 1, channel)

    b.for_range(
        0, geo.kh, 1, lambda b, r: b.for_range(0, geo.kw, 1, lambda b2, s: window(b2, r, s))
    )


def _pack_im2col_rows(
    b: LoopBuilder,
    panel: SSAValue,
    x: SSAValue,
    bi: SSAValue,
    ch0: SSAValue,
    n0: SSAValue,
    cols: int,
    vw: int,
    channels: tuple[Value, Value],
    geo: ConvGeometry,
) -> None:
    """Vectorized implicit im2col for unit column stride and Wo >= panel width.

    The panel's output columns then cover at most two output rows (segments A and B), and
    within a segment consecutive columns read consecutive input elements. Every panel row
    is two masked vector loads per vector (one per segment, padding lanes masked off and
    zero) instead of a scalar load/select/store per element.
    """
    nv = ceil_div(cols, vw)
    oh_a = b.floordiv(n0, geo.wo)
    ow_a = b.rem(n0, geo.wo)
    split = b.min_index(b.sub(geo.wo, ow_a), cols)  # first lane of segment B
    # Input column of lane 0 (before the s*dw shift) and the lanes of each segment.
    segments = [
        (oh_a, b.sub(ow_a, geo.pl), b.index(0), split),
        (b.add(oh_a, 1), b.sub(b.sub(0, split), geo.pl), split, b.index(cols)),
    ]
    c_lo, c_hi = channels
    taps = geo.kh * geo.kw
    zero = b.splat(0.0, vw)
    mask_type = VectorType(i1, [vw])

    def mask(b: LoopBuilder, lo: SSAValue, hi: SSAValue, v: int) -> SSAValue:
        """Lanes lo <= v*VW + lane < hi (prefix(hi) xor prefix(lo), with lo <= hi)."""
        below_hi = b.insert(vector.CreateMaskOp([b.sub(hi, v * vw)], mask_type)).results[0]
        below_lo = b.insert(vector.CreateMaskOp([b.sub(lo, v * vw)], mask_type)).results[0]
        return b.insert(arith.XOrIOp(below_hi, below_lo)).results[0]

    def window(b: LoopBuilder, r: SSAValue, s: SSAValue) -> None:
        loads: list[tuple[SSAValue, list[SSAValue]]] = []
        for oh, col0, first, last in segments:
            ih = b.add(b.sub(b.mul(oh, geo.sh), geo.pt), b.mul(r, geo.dh))
            col = b.add(col0, b.mul(s, geo.dw))
            # Valid lanes: inside the segment and 0 <= col + lane < W; none if ih is outside.
            lo = b.max_index(first, b.sub(0, col))
            hi = b.min_index(last, b.sub(geo.w, col))
            hi = b.select(b.cmp_index("ult", ih, geo.h), b.max_index(hi, lo), lo)
            offset = b.add(b.mul(ih, geo.w), col)
            loads.append((offset, [mask(b, lo, hi, v) for v in range(nv)]))
        tap = b.add(b.mul(r, geo.kw), s)

        def channel(b: LoopBuilder, ci: SSAValue) -> None:
            k = b.add(b.mul(b.sub(ci, c_lo), taps), tap)
            ch = b.add(ch0, ci)
            for v in range(nv):
                parts = []
                for offset, masks in loads:
                    idx = [bi, ch, b.index(0), b.add(offset, v * vw)]
                    parts.append(
                        b.insert(
                            vector.MaskedLoadOp(x, idx, masks[v], zero, VectorType(f32, [vw]))
                        ).results[0]
                    )
                # Disjoint masks with zero pass-through: the sum is the union.
                b.vstore(b.addf(parts[0], parts[1]), panel, [k, v * vw])

        b.for_range(c_lo, c_hi, 1, channel)

    b.for_range(
        0, geo.kh, 1, lambda b, r: b.for_range(0, geo.kw, 1, lambda b2, s: window(b2, r, s))
    )


def _check_gemm_weight(op: kernel.Conv2dOp, geo: ConvGeometry) -> int:
    """Validate the packed [G, ceil(M/MR), K, MR] weight; returns MR."""
    w_shape = memref_shape(op.weight)
    mr = w_shape[-1]
    m = geo.cout // geo.group
    k_extent = geo.cin // geo.group * geo.kh * geo.kw
    layout = op.weight_layout.data
    if layout != conv_layout(mr) or w_shape != (geo.group, ceil_div(m, mr), k_extent, mr):
        raise ValueError(
            f"kernel.conv2d: weight {w_shape} with layout '{layout}' does not match a "
            f"{geo.kh}x{geo.kw} conv {geo.cin}->{geo.cout}, group {geo.group} "
            f"(expected [G, ceil(M/MR), K, MR] from pack_conv_weight)"
        )
    return mr


def _lower_gemm_conv(
    op: kernel.Conv2dOp, geo: ConvGeometry, target: Target, name: str
) -> func.FuncOp:
    blocking = gemm_blocking(target)
    vw = blocking.vw
    nr = blocking.nr
    mr = _check_gemm_weight(op, geo)
    groups = geo.group
    m = geo.cout // groups
    cin_g = geo.cin // groups
    k_extent = cin_g * geo.kh * geo.kw
    n = geo.ho * geo.wo
    taps = geo.kh * geo.kw
    # k blocks hold whole input channels (all kh*kw taps of each) so that im2col can pack
    # one block at a time into an L1-sized scratch panel right before it is used.
    panels = ceil_div(n, nr)
    # Few columns (late layers: 7x7 outputs) against a weight matrix far larger than L2: one
    # unit takes all the panels, so that each A tile serves all of them while in L1 instead
    # of the whole of A being streamed from memory once per panel. (With a smaller A, B
    # panels that stay in L1 are worth more: measured on resnet 3x3 layers at 7x7.)
    shared_a = 1 < panels <= SHARED_A_MAX_PANELS and m * k_extent * 4 >= SHARED_A_MIN_BYTES
    # k blocks hold whole input channels (all kh*kw taps of each) so that im2col can pack
    # one block at a time into an L1-sized scratch panel right before it is used.
    kc = k_block(k_extent, nr, taps if taps > 1 else K_UNROLL)
    # A pointwise conv reads B rows straight from the input planes, unless the k loop is
    # blocked: rows H*W floats apart then thrash L1 sets, so each block is copied (no im2col).
    # Planes whose byte size is a multiple of 4 KiB put every row in the same L1 set (the set
    # index is address bits 6-11), so those are copied too: 1x1 64->256 at 160x160 167 -> 205
    # GFLOP/s, at 64x64 228 -> 253 (znver5, 1 thread); 56x56 and 80x80 unchanged.
    direct = geo.pointwise and kc == k_extent and geo.h * geo.w * 4 % L1_SET_STRIDE_BYTES != 0
    units = geo.batch * groups * (1 if shared_a else panels)
    chunks = m_chunking(units, m, mr, target.threads)
    fn, body, args = _function(op, name)
    x, w, out = args["input"], args["weight"], args["output"]
    bias_buf = args.get("bias")
    activation = activation_of(op)

    def unit(b: LoopBuilder, u: SSAValue) -> None:
        if shared_a:
            bi, g, c = decode(b, u, [geo.batch, groups, chunks])
        else:
            # M chunks inside the panels: the threads, claiming units in turn, work on the
            # same columns of different rows. (Chunks outside would have them write
            # neighbouring panels of the same rows at once, whose boundary cache lines
            # they share where a row is not a whole number of lines: 14x14 maps.)
            bi, g, p, c = decode(b, u, [geo.batch, groups, panels, chunks])
        ch0 = b.mul(g, cin_g)
        co0 = b.mul(g, m)
        epi = Epilogue(out, args.get("residual"), activation, vw)

        def make_panel(b: LoopBuilder, n0: SSAValue, cols: int) -> GemmPanel:
            panel_buf = None if direct else alloca(b, [kc, nr])
            nv = ceil_div(cols, vw)
            rows_vectorized = geo.sw == 1 and geo.wo >= nr

            def input_row(b: LoopBuilder, k: SSAValue, j: int, lanes: int) -> SSAValue:
                return load_lanes(b, x, [bi, b.add(ch0, k), 0, b.add(n0, j * vw)], lanes, vw)

            corners = [] if geo.pointwise or rows_vectorized else _im2col_columns(b, n0, cols, geo)

            def pack_block(b: LoopBuilder, k_lo: Value, k_hi: Value) -> None:
                assert panel_buf is not None
                if geo.pointwise:
                    pack_rows(b, panel_buf, k_lo, k_hi, cols, vw, input_row)
                    return
                channels = (b.floordiv(k_lo, taps), b.floordiv(k_hi, taps))
                if rows_vectorized:
                    _pack_im2col_rows(b, panel_buf, x, bi, ch0, n0, cols, vw, channels, geo)
                else:
                    _pack_im2col(b, panel_buf, x, bi, ch0, corners, nv * vw, channels, geo)

            def load_b(b: LoopBuilder, k: SSAValue, j: int, k_lo: Value) -> SSAValue:
                if panel_buf is not None:
                    return b.vload(panel_buf, [b.sub(k, k_lo), j * vw], vw)
                return input_row(b, k, j, min(vw, cols - j * vw))

            col_idx = [b.add(n0, j * vw) for j in range(nv)]

            def load_a(b: LoopBuilder, m0: SSAValue, k: SSAValue, i: int) -> SSAValue:
                return b.load(w, [g, b.floordiv(m0, mr), k, i])

            def channel(b: LoopBuilder, m0: SSAValue, i: int) -> SSAValue:
                return b.add(co0, b.add(m0, i))

            def bias(b: LoopBuilder, m0: SSAValue, i: int, j: int) -> SSAValue | None:
                if bias_buf is None:
                    return None
                return b.splat(b.load(bias_buf, [channel(b, m0, i)]), vw)

            return GemmPanel(
                k_extent=k_extent,
                kc=kc,
                m=m,
                mr=mr,
                cols=cols,
                vw=vw,
                epilogue=epi,
                load_a=load_a,
                load_b=load_b,
                out_index=lambda b, m0, i, j: [bi, channel(b, m0, i), 0, col_idx[j]],
                bias=bias,
                pack_block=None if direct else pack_block,
            )

        if shared_a:
            specs = [make_panel(b, b.index(q * nr), min(nr, n - q * nr)) for q in range(panels)]
            gemm_panels(b, specs, c, chunks)
            return

        def panel(b: LoopBuilder, cols: int) -> None:
            gemm_panel(b, make_panel(b, b.mul(p, nr), cols), c, chunks)

        split_static(b, p, n // nr, panels, panel, nr, n % nr)

    work_units(body, target, geo.flops, units * chunks, unit)
    body.ret()
    return fn


# Most column panels one unit sweeps with each A tile, and the least weight bytes (per
# group) for which it pays (see shared_a in _lower_gemm_conv).
SHARED_A_MAX_PANELS = 4
SHARED_A_MIN_BYTES = 2 * 1024 * 1024

# Scratch for one band of a depthwise conv (or of all the input channels of a direct conv):
# rows of the padded input planes kept in L1.
BAND_BYTES = 32 * 1024

# Output vectors computed together per depthwise row chunk: independent FMA chains hide
# the FMA latency, and 4 accumulators + weights + loads fit in any x86 register file.
DEPTHWISE_ROW_VECTORS = 4

# Convs with at most this many input channels (per group 1: network stems, 3 -> 32/64) run
# as a direct conv: K = Cin*kh*kw is too small for im2col packing to be amortized.
DIRECT_MAX_CIN = 3

# The direct conv used to unroll its whole reduction (Cin*kh*kw taps) into every tile
# variant; measured then (AVX2, 1 thread, cold cache; compile / run): 3->32 5x5 (75 taps)
# direct 2.6 s / 0.38 ms, GEMM 0.6 s / 0.65 ms; 3->64 7x7 (147) direct 8 s / 1.45 ms, GEMM
# 0.7 s / 1.37 ms; 3->64 11x11 (363) direct 101 s / 1.21 ms, GEMM 0.5 s / 0.84 ms. It now
# loops over (channel, kernel row) and unrolls only the kw taps of a row, which compiles in
# a fraction of that and runs faster (ResNet-50's 7x7/2 stem on AVX-512: 157 -> 244 GFLOP/s,
# its LLVM time ~20 s -> under 1 s); the limit is kept from the run-time measurements.
DIRECT_MAX_TAPS = 160

# Direct convs with at least this many bytes of output store it with non-temporal stores:
# an output much larger than L2 is written back to memory anyway, and a streaming store
# skips reading each line for ownership first. Stems (a few FMAs per output element) gain
# most: VGG's 3->64 at 224x224 (12.8 MB) with its output out of cache (as in a model run),
# AVX-512: 1277 -> 708 us (1 thread), 548 -> 386 (2 threads); docs/performance.md, "VGG's
# stem". The wide-map conv after it (64->64 at 224x224, 12.8 MB, 576 FMAs per element)
# still gains: 16.3-16.5 -> 15.2-15.4 ms at 1 thread, 8.3-8.4 -> 7.8-8.0 ms at 2 (light
# VGG-19, `ember profile --statistic min`, two rounds each, idle).
STREAM_MIN_OUTPUT_BYTES = 8 * 1024 * 1024

# Stride-1 convs over maps at least a vector wide also run as a direct conv, where the
# im2col copy (kh*kw copies of the input per column panel, ~13% of a 3x3 64->64 conv at
# 56x56) cost more than re-reading the weights per tile: kernels of 2x2 up to this many
# taps (the kw taps of a kernel row are unrolled), and at most this many bytes of weights
# per group, which every tile streams whole (from L2; larger ones fall out of it: VGG's
# 3x3 256->256 at 56x56, 2.4 MB, 217 GFLOP/s on the GEMM, 200 direct).
DIRECT_WIDE_MAX_KERNEL_TAPS = 25
DIRECT_WIDE_MAX_WEIGHT_BYTES = 384 * 1024
# On 16-lane (AVX-512) targets only: with 8-lane FMAs the copy is half the share of the
# work, and on AVX2 (x86-64-v3 code on the same znver5 host, 1 thread) the GEMM stayed
# ahead on ResNet-50's 3x3 64->64 at 56x56 (1881 vs 1927 us) and SqueezeNet's 16->64 at
# 55x55 (434 vs 452 us); only VGG's 64->64 at 224x224 gained (33.7 -> 30.6 ms).
DIRECT_WIDE_MIN_LANES = 16

# Planes of one band of a flat direct conv (all input channels of a group; L2-resident):
# larger bands copy the kh - 1 halo rows less often.
FLAT_BAND_BYTES = 160 * 1024


@dataclass(frozen=True)
class BandPlanes:
    """Output rows in bands; the input rows a band reads, copied into zero-bordered planes.

    The copy is de-interleaved by column phase for strided convs (plane[slot*sw + q, i, t] =
    x[ih0 + i, t*sw + q - pl], rows outside the input are zero), so that every (r, s) tap of
    VW consecutive outputs of a row is one contiguous, in-bounds vector load. Bands keep the
    planes of `slots` channels within BAND_BYTES for any image size.

    `flat` planes (`plan_flat`, row stride 1) are exactly as wide as the columns the outputs
    read, so that a band's output rows can run as one sequence of columns: output (i, ow) of
    the band reads plane position i*width + ow + shift of each tap, and the width - Wo
    positions between rows are computed and never stored. `slack_rows` of zeros after the
    rows keep the vectors past a band's last column inside the planes.
    """

    geo: ConvGeometry
    vw: int
    slots: int
    width: int
    rows: int
    band_rows: int
    bands: int
    copy_cols: int
    slack_rows: int = 0
    flat: bool = False

    @staticmethod
    def plan(geo: ConvGeometry, vw: int, slots: int) -> BandPlanes:
        """Bands of as many rows as BAND_BYTES of planes hold, at any thread count: a band
        costs about the same with a row less (VGG's 3->64 at 224x224, one core: 46.5 us
        for 9 rows, 45.8 for 8), so 13 bands of 9 per thread beat 14 of 8."""
        shift_max = ((geo.kw - 1) * geo.dw) // geo.sw
        width = ceil_div(ceil_div(geo.wo, vw) * vw + shift_max, vw) * vw
        halo = (geo.kh - 1) * geo.dh + 1
        row_bytes = slots * geo.sw * width * 4
        band_rows = max(1, (BAND_BYTES // row_bytes - halo) // geo.sh + 1)
        band_rows = min(geo.ho, band_rows)
        rows = (band_rows - 1) * geo.sh + halo
        copy_cols = min(geo.w, width * geo.sw - geo.pl)
        bands = ceil_div(geo.ho, band_rows)
        return BandPlanes(geo, vw, slots, width, rows, band_rows, bands, copy_cols)

    @staticmethod
    def plan_flat(geo: ConvGeometry, vw: int, slots: int, threads: int = 1) -> BandPlanes:
        """Flat planes (row stride 1): width = Wo + the widest tap shift, bands of at most
        FLAT_BAND_BYTES of planes, as many rows as compute the fewest vectors in all (every
        band computes whole vectors of band_rows*width positions, the last one too), or
        on `threads` threads the fewest vectors of the busiest thread."""
        assert geo.sh == 1
        shift_max = ((geo.kw - 1) * geo.dw) // geo.sw
        width = geo.wo + shift_max
        halo = (geo.kh - 1) * geo.dh + 1
        row_bytes = slots * geo.sw * width * 4
        most = min(geo.ho, max(1, FLAT_BAND_BYTES // row_bytes - (halo - 1)))

        band_rows = balanced_band_rows(
            geo.ho, most, threads, lambda rows: ceil_div(rows * width, vw)
        )
        bands = ceil_div(geo.ho, band_rows)
        copy_cols = min(geo.w, width * geo.sw - geo.pl)
        # A band's last vector starts before band_rows*width and reads up to VW - 1 + shift_max
        # positions past it.
        slack = ceil_div(vw + shift_max, width)
        return BandPlanes(
            geo, vw, slots, width, band_rows + halo - 1, band_rows, bands, copy_cols, slack, True
        )

    @property
    def fits(self) -> bool:
        rows = self.rows + self.slack_rows
        return self.slots * self.geo.sw * rows * self.width * 4 <= SCRATCH_LIMIT_BYTES

    def allocate(self, b: LoopBuilder) -> SSAValue:
        """The planes, zeroed: the border stays zero as fills only write the interior."""
        plane = alloca(b, [self.slots * self.geo.sw, self.rows + self.slack_rows, self.width])
        zero = b.splat(0.0, self.vw)

        def clear(b: LoopBuilder, q: SSAValue) -> None:
            def clear_row(b: LoopBuilder, r: SSAValue) -> None:
                for t in range(0, self.width, self.vw):
                    store_lanes(b, zero, plane, [q, r, t], min(self.vw, self.width - t), self.vw)

            b.for_range(0, self.rows + self.slack_rows, 1, clear_row)

        b.for_range(0, self.slots * self.geo.sw, 1, clear)
        return plane

    def first_output_row(self, b: LoopBuilder, band: SSAValue) -> SSAValue:
        return b.mul(band, self.band_rows)

    def fill(
        self,
        b: LoopBuilder,
        plane: SSAValue,
        x: SSAValue,
        bi: SSAValue,
        ch: SSAValue,
        slot: Value,
        band: SSAValue,
    ) -> None:
        """Copy the input rows of output band `band` of channel `ch` into plane slot `slot`."""
        geo, vw, sw, copy_cols = self.geo, self.vw, self.geo.sw, self.copy_cols
        zero = b.splat(0.0, vw)
        base = b.mul(slot, sw)

        def zero_row(b: LoopBuilder, row: SSAValue) -> None:
            for q in range(sw):
                for t in range(0, self.width, vw):
                    store_lanes(
                        b, zero, plane, [b.add(base, q), row, t], min(vw, self.width - t), vw
                    )

        def copy_row(b: LoopBuilder, ih: SSAValue, row: SSAValue) -> None:
            if sw == 1:
                full = copy_cols - copy_cols % vw
                for t in range(0, full, vw):
                    b.vstore(b.vload(x, [bi, ch, ih, t], vw), plane, [base, row, t + geo.pl])
                if full < copy_cols:
                    lanes = copy_cols - full
                    tail = load_lanes(b, x, [bi, ch, ih, full], lanes, vw)
                    store_lanes(b, tail, plane, [base, row, full + geo.pl], lanes, vw)
                return

            vector_cols = 0
            if sw == 2:
                # Two input vectors -> even and odd columns by two shuffles.
                vector_cols = copy_cols - copy_cols % (2 * vw)
                even = DenseArrayBase.from_list(i64, list(range(0, 2 * vw, 2)))
                odd = DenseArrayBase.from_list(i64, list(range(1, 2 * vw, 2)))

                def copy_pair(b: LoopBuilder, iw: SSAValue) -> None:
                    lo = b.vload(x, [bi, ch, ih, iw], vw)
                    hi = b.vload(x, [bi, ch, ih, b.add(iw, vw)], vw)
                    t = b.floordiv(iw, 2)
                    for e, mask in enumerate((even, odd)):
                        lanes = b.insert(
                            vector.ShuffleOp(lo, hi, mask, result_type=VectorType(f32, [vw]))
                        ).results[0]
                        phase = b.add(base, (e + geo.pl) % 2)
                        b.vstore(lanes, plane, [phase, row, b.add(t, (e + geo.pl) // 2)])

                if vector_cols:
                    b.for_range(0, vector_cols, 2 * vw, copy_pair)

            def copy_col(b: LoopBuilder, iw: SSAValue) -> None:
                col = b.add(iw, geo.pl)
                dest = [b.add(base, b.rem(col, sw)), row, b.floordiv(col, sw)]
                b.store(b.load(x, [bi, ch, ih, iw]), plane, dest)

            if vector_cols < copy_cols:
                b.for_range(vector_cols, copy_cols, 1, copy_col)

        ih0 = b.sub(b.mul(self.first_output_row(b, band), geo.sh), geo.pt)

        def fill_row(b: LoopBuilder, row: SSAValue) -> None:
            ih = b.add(ih0, row)
            inside = b.cmp_index("ult", ih, geo.h)  # negative rows wrap around
            if_else(b, inside, lambda t: copy_row(t, ih, row), lambda e: zero_row(e, row))

        b.for_range(0, self.rows, 1, fill_row)

    def output_rows(
        self,
        b: LoopBuilder,
        band: SSAValue,
        emit: Callable[[LoopBuilder, SSAValue, SSAValue], None],
    ) -> None:
        """emit(b, oh, row) for each output row oh of the band; `row` is the plane row of
        its (r = 0) taps."""
        oh0 = self.first_output_row(b, band)

        def emit_row(b: LoopBuilder, oh: SSAValue) -> None:
            emit(b, oh, b.mul(b.sub(oh, oh0), self.geo.sh))

        b.for_range(oh0, b.min_index(b.add(oh0, self.band_rows), self.geo.ho), 1, emit_row)

    def tap(self, s: int) -> tuple[int, int]:
        """(column phase, column shift in the phase plane) of kernel column s."""
        col = s * self.geo.dw
        return col % self.geo.sw, col // self.geo.sw


def balanced_band_rows(ho: int, most: int, threads: int, cost: Callable[[int], int]) -> int:
    """Rows per band (at most `most`) of an output of `ho` rows cut into bands that are work
    units (`cost(rows)` each): on one thread the least total cost, else the least cost of
    the busiest thread, ceil(bands / threads) bands (ResNet's 3x3 64->64 at 56x56 on 2
    threads: 7 bands of 8 rows, 4 against 3, became 8 bands of 7), then the least total
    cost, then the most rows."""

    def rank(rows: int) -> tuple[int, int, int]:
        bands = ceil_div(ho, rows)
        busiest = ceil_div(bands, threads) * cost(rows) if threads > 1 else 0
        return busiest, bands * cost(rows), -rows

    return min(range(1, most + 1), key=rank)


def width_chunks(
    b: LoopBuilder, wo: int, chunk_w: int, emit: Callable[[LoopBuilder, SSAValue, int], None]
) -> None:
    """emit(b, ow0, cols) over an output row: full chunks in a loop, the static tail last."""
    full = wo // chunk_w
    if full:
        b.for_range(0, full * chunk_w, chunk_w, lambda b2, ow0: emit(b2, ow0, chunk_w))
    if wo % chunk_w:
        emit(b, b.index(full * chunk_w), wo % chunk_w)


def _lower_depthwise(
    op: kernel.Conv2dOp, geo: ConvGeometry, target: Target, name: str
) -> func.FuncOp:
    """Direct depthwise conv vectorized over output width, one channel's BandPlanes at a time."""
    vw = target.vector_width
    channels = geo.cout
    if memref_shape(op.weight) != (channels, geo.kh * geo.kw) or geo.cin != channels:
        raise ValueError(
            f"kernel.conv2d: depthwise weight {memref_shape(op.weight)} does not match "
            f"{channels} channels of {geo.kh}x{geo.kw}"
        )
    planes = BandPlanes.plan(geo, vw, 1)
    if not planes.fits:
        raise NotImplementedError(
            f"kernel.conv2d: depthwise window of {planes.rows}x{planes.width} rows exceeds "
            "the scratch limit"
        )
    chunks = min(channels, 4 * max(target.threads, 1))
    per_chunk = ceil_div(channels, chunks)
    chunks = ceil_div(channels, per_chunk)
    fn, body, args = _function(op, name)
    x, w, out = args["input"], args["weight"], args["output"]
    bias_buf = args.get("bias")
    activation = activation_of(op)
    chunk_w = DEPTHWISE_ROW_VECTORS * vw

    def unit(b: LoopBuilder, u: SSAValue) -> None:
        plane = planes.allocate(b)
        epi = Epilogue(out, args.get("residual"), activation, vw)
        zero = b.splat(0.0, vw)
        bi, c = decode(b, u, [geo.batch, chunks])
        first = b.mul(c, per_chunk)
        last = b.min_index(b.add(first, per_chunk), channels)

        def channel(b: LoopBuilder, ch: SSAValue) -> None:
            taps = [b.splat(b.load(w, [ch, t]), vw) for t in range(geo.kh * geo.kw)]
            bias = None if bias_buf is None else b.splat(b.load(bias_buf, [ch]), vw)

            def out_row(b: LoopBuilder, oh: SSAValue, base: SSAValue) -> None:
                def chunk(b: LoopBuilder, ow0: SSAValue, cols: int) -> None:
                    nv = ceil_div(cols, vw)
                    acc = [bias if bias is not None else zero] * nv
                    for r in range(geo.kh):
                        row = b.add(base, r * geo.dh)
                        for s in range(geo.kw):
                            phase, shift = planes.tap(s)
                            for j in range(nv):
                                col = b.add(ow0, j * vw + shift)
                                v = b.vload(plane, [phase, row, col], vw)
                                acc[j] = b.fma(v, taps[r * geo.kw + s], acc[j])
                    for j in range(nv):
                        lanes = min(vw, cols - j * vw)
                        epi.finish(b, acc[j], [bi, ch, oh, b.add(ow0, j * vw)], lanes, None)

                width_chunks(b, geo.wo, chunk_w, chunk)

            def band(b: LoopBuilder, index: SSAValue) -> None:
                planes.fill(b, plane, x, bi, ch, 0, index)
                planes.output_rows(b, index, out_row)

            b.for_range(0, planes.bands, 1, band)

        b.for_range(first, last, 1, channel)

    work_units(body, target, depthwise_lane_flops(geo, vw), geo.batch * chunks, unit)
    body.ret()
    return fn


# Output columns per step of the blocked depthwise conv's interior loop: independent
# accumulators over which each tap's weight vector is reused.
DEPTHWISE_BLOCKED_COLUMNS = 4


def check_depthwise_blocked_weight(
    op: kernel.Conv2dOp, cin: int, cout: int, group: int, kh: int, kw: int, c: int
) -> None:
    """A blocked depthwise conv's weight is packed [C/c, kh*kw, c] in its layout (the static
    and the run-time-extent kernels read it so)."""
    if (
        not group == cin == cout
        or memref_shape(op.weight) != (cout // c, kh * kw, c)
        or op.weight_layout.data != depthwise_blocked_layout(c)
    ):
        raise ValueError(
            f"kernel.conv2d: blocked depthwise weight {memref_shape(op.weight)} with layout "
            f"'{op.weight_layout.data}' does not match {cout} channels of {kh}x{kw} in "
            f"blocks of {c} (group {group})"
        )


def _lower_depthwise_blocked(
    op: kernel.Conv2dOp, geo: ConvGeometry, target: Target, name: str
) -> func.FuncOp:
    """Depthwise conv on channel-blocked [N, C/c, H, W, c] maps (the blocked-layout pass):
    each tap is one vector FMA of c channels, the input pixel's vector times the tap's
    weight vector (packed [C/c, kh*kw, c]), with no broadcasts and no plane copies. Units
    are output rows of one channel block; a kernel row outside the input runs zero times;
    border columns are emitted statically without their out-of-row taps, interior ones
    DEPTHWISE_BLOCKED_COLUMNS at a time."""
    c = memref_shape(op.input)[-1]
    blocks = geo.cout // c
    check_depthwise_blocked_weight(op, geo.cin, geo.cout, geo.group, geo.kh, geo.kw, c)
    fn, body, args = _function(op, name)
    x, w, out = args["input"], args["weight"], args["output"]
    bias_buf = args.get("bias")
    activation = activation_of(op)

    def column_ok(ow: int, s: int) -> bool:
        return 0 <= ow * geo.sw - geo.pl + s * geo.dw < geo.w

    interior = [ow for ow in range(geo.wo) if all(column_ok(ow, s) for s in range(geo.kw))]
    start = interior[0] if interior else 0
    step = DEPTHWISE_BLOCKED_COLUMNS
    main_stop = start + len(interior) // step * step

    def unit(b: LoopBuilder, u: SSAValue) -> None:
        bi, cb, oh = decode(b, u, [geo.batch, blocks, geo.ho])
        epi = Epilogue(out, args.get("residual"), activation, c)
        bias = None if bias_buf is None else b.vload(bias_buf, [b.mul(cb, c)], c)
        zero = b.splat(0.0, c)
        rows = []  # (input row, 1 if inside the input else 0) of each kernel row
        for r in range(geo.kh):
            ih = b.add(b.mul(oh, geo.sh), r * geo.dh - geo.pt)
            inside = b.cmp_index("ult", ih, geo.h)
            rows.append((ih, b.select(inside, b.index(1), b.index(0))))

        def columns(b: LoopBuilder, ow0: SSAValue, count: int, static: int | None) -> None:
            """`count` outputs from column ow0 (`static`: its value, at the border)."""
            iw0 = b.sub(b.mul(ow0, geo.sw), geo.pl)
            accs = [zero] * count
            for r, (ih, trips) in enumerate(rows):

                def kernel_row(
                    b: LoopBuilder, _: SSAValue, *sums: SSAValue, r: int = r, ih: SSAValue = ih
                ) -> list[SSAValue]:
                    current = list(sums)
                    for s in range(geo.kw):
                        weight = b.vload(w, [cb, r * geo.kw + s, 0], c)
                        for t in range(count):
                            if static is not None and not column_ok(static + t, s):
                                continue
                            iw = b.add(iw0, t * geo.sw + s * geo.dw)
                            pixel = b.vload(x, [bi, cb, ih, iw, 0], c)
                            current[t] = b.fma(pixel, weight, current[t])
                    return current

                accs = b.for_range(0, trips, 1, kernel_row, accs)
            for t, acc in enumerate(accs):
                epi.finish(b, acc, [bi, cb, oh, b.add(ow0, t), 0], c, bias)

        for ow in [*range(start), *range(main_stop, geo.wo)]:
            columns(b, b.index(ow), 1, ow)
        if main_stop > start:
            b.for_range(start, main_stop, step, lambda lb, ow0: columns(lb, ow0, step, None))

    work_units(body, target, geo.flops, geo.batch * blocks * geo.ho, unit)
    body.ret()
    return fn


def depthwise_lane_flops(geo: ConvGeometry, vw: int) -> int:
    """The flops a depthwise conv's vector FMAs compute, idle lanes included: each output row
    is ceil(wo / vw) vectors. What its time follows on narrow maps, where simd.work_units'
    threshold would keep it on one thread by its real flops: MobileNet-v2's 3x3/2 576 @14x14
    -> 7x7 (0.51 MFLOP, 7 of 16 lanes busy) took 24 us on one thread (21 GFLOP/s), 13 on two
    (benchmarks/kernels.py conv_case, AVX-512 znver5, quiet; docs/performance.md)."""
    row_lanes = ceil_div(geo.wo, vw) * vw
    return 2 * geo.batch * geo.cout * geo.ho * row_lanes * geo.kh * geo.kw


def _wide_direct(geo: ConvGeometry, target: Target) -> bool:
    """Whether a stride-1 conv over wide maps runs as a direct conv (see DIRECT_WIDE_*)."""
    m = geo.cout // geo.group
    weight_bytes = m * geo.cin // geo.group * geo.kh * geo.kw * 4
    return (
        (geo.sh, geo.sw) == (1, 1)
        and min(geo.kh, geo.kw) >= 2
        and geo.kh * geo.kw <= DIRECT_WIDE_MAX_KERNEL_TAPS
        and target.vector_width >= DIRECT_WIDE_MIN_LANES
        and geo.wo >= target.vector_width
        and weight_bytes <= DIRECT_WIDE_MAX_WEIGHT_BYTES
    )


def _direct_planes(geo: ConvGeometry, target: Target) -> BandPlanes | None:
    """The band planes of a direct (no im2col) conv, if this conv should run as one."""
    vw = target.vector_width
    if (
        geo.group == 1
        and geo.cin <= DIRECT_MAX_CIN
        and geo.cin * geo.kh * geo.kw <= DIRECT_MAX_TAPS
    ):
        planes = BandPlanes.plan(geo, vw, geo.cin)
    elif _wide_direct(geo, target):
        slots = geo.cin // geo.group
        # Flat planes when whole vectors per output row would idle more lanes than the
        # width - Wo columns between a flat band's rows (56 wide: 64 lanes a row vs 58).
        shift_max = (geo.kw - 1) * geo.dw
        flat = geo.wo + shift_max < ceil_div(geo.wo, vw) * vw
        if flat:
            planes = BandPlanes.plan_flat(geo, vw, slots, target.threads)
        else:
            planes = BandPlanes.plan(geo, vw, slots)
    else:
        return None
    return planes if planes.fits else None


@dataclass(frozen=True)
class SplitVector:
    """The output elements of one vector of flat band columns: lanes [0, p) end output row
    oh at column col, lanes [p, VW) start row oh + 1 (p = width - col); lanes on the
    width - Wo columns between rows, or on rows past the band, are masked off. Each part
    is one masked access at its own base (the second base is p before row oh + 1 starts)."""

    bi: SSAValue
    parts: tuple[tuple[SSAValue, SSAValue], ...]  # (flat output index of lane 0, mask)

    @staticmethod
    def of(
        b: LoopBuilder, planes: BandPlanes, bi: SSAValue, oh0: SSAValue, flat: SSAValue
    ) -> SplitVector:
        geo, vw, width = planes.geo, planes.vw, planes.width
        mask_type = VectorType(i1, [vw])
        size = geo.ho * geo.wo
        row, col = b.floordiv(flat, width), b.rem(flat, width)
        oh = b.add(oh0, row)
        # The band's rows only: the vectors past its last row would write the next band's
        # first row with partial sums (its units may run before or after this one).
        end = b.min_index(b.add(oh0, planes.band_rows), geo.ho)
        # Row oh: lanes [0, Wo - col), none if col >= Wo or the row is past the band.
        count = b.max_index(b.min_index(b.sub(geo.wo, col), vw), 0)
        count = b.select(b.cmp_index("ult", oh, end), count, b.index(0))
        mask_a = b.insert(vector.CreateMaskOp([count], mask_type)).results[0]
        # Row oh + 1: lanes [p, VW) (Wo >= VW, so they never reach its end); base >= Wo - VW.
        start = b.min_index(b.sub(width, col), vw)
        stop = b.select(b.cmp_index("ult", b.add(oh, 1), end), b.index(vw), start)
        below_end = b.insert(vector.CreateMaskOp([stop], mask_type)).results[0]
        below_start = b.insert(vector.CreateMaskOp([start], mask_type)).results[0]
        mask_b = b.insert(arith.XOrIOp(below_end, below_start)).results[0]
        # Bases of masked-off parts are clamped into the buffer (one past its end at most).
        base_a = b.min_index(b.add(b.mul(oh, geo.wo), col), size)
        base_b = b.min_index(b.sub(b.mul(b.add(oh, 1), geo.wo), start), size)
        return SplitVector(bi, ((base_a, mask_a), (base_b, mask_b)))

    def load(self, b: LoopBuilder, buf: SSAValue, ch: SSAValue) -> SSAValue:
        element = buf.type.get_element_type()  # type: ignore[attr-defined]
        vw = self.parts[0][1].type.get_shape()[0]  # type: ignore[attr-defined]
        zero = b.splat(0.0, vw, element)
        parts = [
            b.insert(
                vector.MaskedLoadOp(
                    buf, [self.bi, ch, b.index(0), base], mask, zero, VectorType(element, [vw])
                )
            ).results[0]
            for base, mask in self.parts
        ]
        # Disjoint masks with zero pass-through: the sum is the union.
        return b.addf(parts[0], parts[1])

    def store(
        self, b: LoopBuilder, v: SSAValue, buf: SSAValue, ch: SSAValue, stream: bool = False
    ) -> None:
        for base, mask in self.parts:
            b.insert(vector.MaskedStoreOp(buf, [self.bi, ch, b.index(0), base], mask, v))


@dataclass(frozen=True)
class RowVector:
    """The output elements of one vector of an output row: `lanes` columns from `col`."""

    bi: SSAValue
    oh: SSAValue
    col: SSAValue
    lanes: int
    vw: int

    def load(self, b: LoopBuilder, buf: SSAValue, ch: SSAValue) -> SSAValue:
        return load_lanes(b, buf, [self.bi, ch, self.oh, self.col], self.lanes, self.vw)

    def store(
        self, b: LoopBuilder, v: SSAValue, buf: SSAValue, ch: SSAValue, stream: bool = False
    ) -> None:
        """`stream`: a whole vector is stored non-temporally (see STREAM_MIN_OUTPUT_BYTES)."""
        indices = [self.bi, ch, self.oh, self.col]
        if stream and self.lanes == self.vw:
            nontemporal = BoolAttr.from_bool(True)
            b.insert(vector.StoreOp(v, buf, [b.index(i) for i in indices], nontemporal))
            return
        store_lanes(b, v, buf, indices, self.lanes, self.vw)


def _lower_direct(
    op: kernel.Conv2dOp, geo: ConvGeometry, planes: BandPlanes, target: Target, name: str
) -> func.FuncOp:
    """Direct conv: the GEMM micro-kernel with B read from the band planes (no im2col).

    Each MR x NR tile of C (MR output channels, NR consecutive output columns of one row,
    or of a flat band's rows) runs the reduction over K = Cin/G*kh*kw as a loop over
    (ci, r) with the kw taps of each kernel row unrolled: for every (ci, r, s) the B row is
    `nvec` vector loads from the planes at that tap's offset and the A column MR broadcasts
    of the packed weights. Work units are (batch, group, band of output rows, M chunk); a
    band's input rows are copied once (each input element about (rows + halo) / rows
    times, against kh*kw times for im2col), then all of its rows computed.
    """
    blocking = gemm_blocking(target)
    vw, nr = blocking.vw, blocking.nr
    mr = memref_shape(op.weight)[-1]
    groups = geo.group
    m = geo.cout // groups
    cin_g = geo.cin // groups
    units = geo.batch * groups * planes.bands
    chunks = m_chunking(units, m, mr, target.threads)
    fn, body, args = _function(op, name)
    x, w, out = args["input"], args["weight"], args["output"]
    bias_buf = args.get("bias")
    residual = args.get("residual")
    activation = activation_of(op)
    stream = 4 * prod(memref_shape(out)) >= STREAM_MIN_OUTPUT_BYTES

    def unit(b: LoopBuilder, u: SSAValue) -> None:
        plane = planes.allocate(b)
        zero = b.splat(0.0, vw)
        bi, g, band, chunk = decode(b, u, [geo.batch, groups, planes.bands, chunks])
        ch0, co0 = b.mul(g, cin_g), b.mul(g, m)

        if cin_g <= DIRECT_MAX_CIN:
            for ci in range(cin_g):
                planes.fill(b, plane, x, bi, b.add(ch0, ci), ci, band)
        else:

            def fill(b: LoopBuilder, ci: SSAValue) -> None:
                planes.fill(b, plane, x, bi, b.add(ch0, ci), ci, band)

            b.for_range(0, cin_g, 1, fill)

        def tile(
            b: LoopBuilder,
            m0: SSAValue,
            rows: int,
            row0: SSAValue,
            col0: SSAValue,
            outs: list[RowVector] | list[SplitVector],
        ) -> None:
            """Output rows m0.. of the columns `outs`, B from plane row row0 (the r = 0
            taps) and columns col0 + j*VW."""
            nv = len(outs)
            panel = b.floordiv(m0, mr)

            def kernel_row(b: LoopBuilder, q: SSAValue, *values: SSAValue) -> list[SSAValue]:
                """Taps (ci, r, 0..kw-1) of q = ci*kh + r: k = q*kw + s."""
                accs = list(values)
                ci, r = b.floordiv(q, geo.kh), b.rem(q, geo.kh)
                row = b.add(row0, b.mul(r, geo.dh))
                for s in range(geo.kw):
                    phase, shift = planes.tap(s)
                    slot = b.add(b.mul(ci, geo.sw), phase)
                    k = b.add(b.mul(q, geo.kw), s)
                    vs = [
                        b.vload(plane, [slot, row, b.add(col0, j * vw + shift)], vw)
                        for j in range(nv)
                    ]
                    for i in range(rows):
                        a = b.splat(b.load(w, [g, panel, k, i]), vw)
                        for j in range(nv):
                            accs[i * nv + j] = b.fma(a, vs[j], accs[i * nv + j])
                return accs

            acc = b.for_range(0, cin_g * geo.kh, 1, kernel_row, [zero] * (rows * nv))
            for i in range(rows):
                co = b.add(co0, b.add(m0, i))
                bias = None if bias_buf is None else b.splat(b.load(bias_buf, [co]), vw)
                for j in range(nv):
                    v = acc[i * nv + j] if bias is None else b.addf(acc[i * nv + j], bias)
                    if residual is not None:
                        v = b.addf(v, outs[j].load(b, residual, co))
                    if activation is not None:
                        v = activation(b, v)
                    outs[j].store(b, v, out, co, stream)

        def out_row(b: LoopBuilder, oh: SSAValue, base: SSAValue) -> None:
            def row_tiles(b: LoopBuilder, ow0: SSAValue, cols: int) -> None:
                nv = ceil_div(cols, vw)
                outs = [
                    RowVector(bi, oh, b.add(ow0, j * vw), min(vw, cols - j * vw), vw)
                    for j in range(nv)
                ]
                m_tile_loop(
                    b,
                    chunk,
                    chunks,
                    m,
                    mr,
                    lambda b2, m0, rows: tile(b2, m0, rows, base, ow0, outs),
                )

            width_chunks(b, geo.wo, nr, row_tiles)

        def flat_tiles(b: LoopBuilder, f0: SSAValue, cols: int) -> None:
            oh0 = planes.first_output_row(b, band)
            outs = [
                SplitVector.of(b, planes, bi, oh0, b.add(f0, j * vw))
                for j in range(ceil_div(cols, vw))
            ]
            m_tile_loop(
                b,
                chunk,
                chunks,
                m,
                mr,
                lambda b2, m0, rows: tile(b2, m0, rows, b2.index(0), f0, outs),
            )

        if planes.flat:
            width_chunks(b, planes.band_rows * planes.width, nr, flat_tiles)
        else:
            planes.output_rows(b, band, out_row)

    work_units(body, target, geo.flops, units * chunks, unit)
    body.ret()
    return fn


# Below this many bytes of packed weights, units walk output rows outermost (each input row
# is read by all channel blocks while in L1, the weights stay in L2); above it, channel
# blocks outermost, so that each thread streams its share of the weights once.
LANES_ROWS_FIRST_MAX_WEIGHT_BYTES = 512 * 1024
# Blocked convs whose input is at least this many times their weights walk rows outermost
# whatever the weights' size: channel blocks outermost re-read an input larger than L2 once
# per block from L3/DRAM, rows outermost re-read each row's weights from L2 (znver5, 1
# thread, A/B in one process, ms blocks-first -> rows-first: 3x3 256->64 @160 42.8 -> 34.4,
# @80 10.2 -> 8.2, 128->128 @80 8.5 -> 7.7, @112 20.0 -> 15.4; at input/weights under 4
# blocks-first stays 2-4% ahead: 256->64 @40 (2.8x), 3x3/2 128->256 @80, 256 @56, 512 @28).
BLOCKED_ROWS_FIRST_MIN_INPUT_PER_WEIGHT = 4

# Channel-lanes filters up to this wide have every tap unrolled; wider ones (1-D audio
# front ends) loop over blocks of TAP_BLOCK unrolled taps, so the IR stays bounded.
LANES_MAX_UNROLLED_TAPS = 32
TAP_BLOCK = 8


# An input channel of the channel-lanes conv: its index, or (block, lane) when blocked.
Channel = SSAValue | tuple[SSAValue, SSAValue]


def transpose_square(b: LoopBuilder, rows: list[SSAValue]) -> list[SSAValue]:
    """The transpose of n vectors of n lanes (n a power of two): log2(n) rounds of n two-input
    shuffles, each pairing row m with row m + n/2 and interleaving their low, then high halves
    (after log2(n) rounds lane i of row c has come from lane c of row i)."""
    n = len(rows)
    if n & (n - 1) or any(r.type.get_shape() != (n,) for r in rows):  # type: ignore[attr-defined]
        raise ValueError(f"transpose_square: {n} rows are not {n} vectors of {n} lanes")
    low = [j for k in range(n // 2) for j in (k, n + k)]
    high = [j for k in range(n // 2, n) for j in (k, n + k)]
    for _ in range(n.bit_length() - 1):
        pairs = [(rows[m], rows[m + n // 2]) for m in range(n // 2)]
        rows = [shuffle(b, x, y, mask) for x, y in pairs for mask in (low, high)]
    return rows


def column_stores(
    b: LoopBuilder, cols: int, count: SSAValue | None, store: Callable[[LoopBuilder, int], None]
) -> None:
    """store(b, i) for each column of a tile; checked, columns past `count` are skipped."""
    for i in range(cols):
        if count is None or i == 0:
            store(b, i)
        else:
            b.if_(b.cmp_index("ult", b.index(i), count), lambda sb, i=i: store(sb, i))


@dataclass(frozen=True)
class LanesTile:
    """What the channel-lanes reduction and epilogue of one unit need, shared by the static
    kernel (_lower_channel_lanes) and the runtime-extent one (conv_extents._channel_lanes):
    `blocked` input/output [N, C/vw, H, W, vw] or NCHW, NR = nvec x vw output channels from
    `co0` (channel block `cb`) of output row `oh` of image `bi`."""

    blocked: bool
    vw: int
    nvec: int
    nr: int
    cout: int
    unroll: int  # NCHW: input channels per unrolled reduction step
    lane_unroll: int  # blocked: lanes per step through one channel block
    bi: SSAValue
    oh: SSAValue
    cb: SSAValue
    co0: SSAValue
    zero: SSAValue
    epi: Epilogue
    bias_buf: SSAValue | None
    rows_scratch: SSAValue | None  # NCHW: [NR, vw] where the transposed tile goes


def reduce_lanes_channels(
    b: LoopBuilder,
    t: LanesTile,
    channels: SSAValue,
    accs: list[SSAValue],
    step: Callable[[LoopBuilder, Channel, list[SSAValue]], None],
    before_block: Callable[[LoopBuilder, SSAValue], None] | None = None,
) -> list[SSAValue]:
    """The accumulators after step(b, ci, values) over `channels` input channels (blocked:
    channel blocks, each VW lanes in steps of lane_unroll, after before_block(b, block))."""

    def unrolled(b: LoopBuilder, ci: SSAValue, *values: SSAValue) -> list[SSAValue]:
        current = list(values)
        for q in range(t.unroll):
            step(b, ci if q == 0 else b.add(ci, q), current)
        return current

    def single(b: LoopBuilder, ci: SSAValue, *values: SSAValue) -> list[SSAValue]:
        current = list(values)
        step(b, ci, current)
        return current

    if t.blocked:
        # Per input channel block, its VW lanes in steps of `lane_unroll`.
        def lanes_of(b: LoopBuilder, cib: SSAValue, *values: SSAValue) -> list[SSAValue]:
            if before_block is not None:
                before_block(b, cib)

            def lanes(b: LoopBuilder, lane: SSAValue, *sums: SSAValue) -> list:
                current = list(sums)
                for q in range(t.lane_unroll):
                    step(b, (cib, lane if q == 0 else b.add(lane, q)), current)
                return current

            return b.for_range(0, t.vw, t.lane_unroll, lanes, list(values))

        return b.for_range(0, channels, 1, lanes_of, accs)
    if t.unroll > 1:
        main = b.sub(channels, b.rem(channels, t.unroll))
        accs = b.for_range(0, main, t.unroll, unrolled, accs)
        return b.for_range(main, channels, 1, single, accs)
    return b.for_range(0, channels, 1, single, accs)


def store_lanes_tile(
    b: LoopBuilder,
    t: LanesTile,
    accs: list[SSAValue],
    ow0: Value,
    cols: int,
    count: SSAValue | None,
) -> None:
    """Bias, residual, activation and store of a tile's `cols` x NR accumulators at output
    column ow0 (checked: only the first `count` columns)."""
    nvec, vw, nr = t.nvec, t.vw, t.nr
    if t.blocked:
        # Each accumulator is VW channels of one pixel: the blocked layout's vector.
        for j in range(nvec):
            cb_out = b.add(b.mul(t.cb, nvec), j)

            def store(b: LoopBuilder, j: int = j, cb_out: SSAValue = cb_out) -> None:
                bias = None
                if t.bias_buf is not None:
                    bias = b.vload(t.bias_buf, [b.add(t.co0, j * vw)], vw)

                def column(b: LoopBuilder, i: int) -> None:
                    at = [t.bi, cb_out, t.oh, b.add(ow0, i), 0]
                    t.epi.finish(b, accs[i * nvec + j], at, vw, bias)

                column_stores(b, cols, count, column)

            if j and t.cout % nr:  # the last block's padding channels
                in_range = b.cmp_index("ult", b.add(t.co0, j * vw), t.cout)
                if_else(b, in_range, store, lambda b: None)
            else:
                store(b)
        return

    rows_scratch = t.rows_scratch
    assert rows_scratch is not None
    # Channel c's columns as one vector: transpose each vector of channels in registers.
    for j in range(nvec):
        columns = [accs[i * nvec + j] for i in range(cols)] + [t.zero] * (vw - cols)
        for c, row in enumerate(transpose_square(b, columns)):
            b.vstore(row, rows_scratch, [j * vw + c, 0])

    def channel(b: LoopBuilder, c: SSAValue) -> None:
        co = b.add(t.co0, c)
        bias = None if t.bias_buf is None else b.splat(b.load(t.bias_buf, [co]), vw)
        lanes = b.vload(rows_scratch, [c, 0], vw)
        t.epi.finish(b, lanes, [t.bi, co, t.oh, ow0], cols if count is None else count, bias)

    if t.cout % nr:
        b.for_range(0, b.min_index(nr, b.sub(t.cout, t.co0)), 1, channel)
    else:
        b.for_range(0, nr, 1, channel)


def _lower_channel_lanes(
    op: kernel.Conv2dOp, geo: ConvGeometry, target: Target, name: str
) -> func.FuncOp:
    """Direct conv with output channels across the vector lanes (layout conv_lanes_panel).

    A tile is `mr` consecutive output columns of one output row x NR = nvec x VW output
    channels, accumulated in registers over k = (r, ci, s): per k, nvec vector loads of
    the packed weights and one broadcast of the input element under each column, read in
    place (no im2col copy; strides and dilations only change the broadcast addresses).
    Padding costs nothing in the loop: a kernel row outside the input runs no channels, and
    tiles at the left/right edge are emitted statically without their out-of-bounds taps;
    interior tiles run in a loop without checks. The epilogue turns the tile around with
    register shuffles (`transpose_square`; it was one scalar copy per output through scratch)
    so that each channel's `mr` columns are one vector for bias, residual, activation and a
    (masked) store into NCHW.
    Work units are (batch, channel block, output row), all of the row's tiles per unit.
    Filters wider than LANES_MAX_UNROLLED_TAPS loop over blocks of TAP_BLOCK taps instead of
    unrolling every tap (edge tiles then clamp and zero their out-of-row reads).
    Blocked, each input channel block first prefetches the tile's pixels of the next one
    (znver5, 1 thread, A/B in one process, ms: 3x3 256->64 @160 34.8 -> 31.9, @80 8.3 ->
    7.9, 64->64 @160 8.4 -> 7.9, 64->64 @224 16.9 -> 16.2; maps of 40x40 and less +-1%).
    """
    # Channel-blocked [N, C/c, H, W, c] input and output (the blocked-layout pass): vectors
    # are c lanes wide whatever the target's width (LLVM splits wider ones), so a block size
    # chosen for another width still runs.
    blocked = len(memref_shape(op.input)) == 5
    vw = memref_shape(op.input)[-1] if blocked else target.vector_width
    w_shape = memref_shape(op.weight)
    nr = w_shape[-1]
    k_extent = geo.kh * geo.cin * geo.kw
    blocks = ceil_div(geo.cout, nr)
    layout = op.weight_layout.data
    if (
        geo.group != 1
        or nr % vw
        or layout != conv_lanes_layout(nr)
        or w_shape != (blocks, k_extent, nr)
    ):
        raise ValueError(
            f"kernel.conv2d: weight {w_shape} with layout '{layout}' does not match a "
            f"{geo.kh}x{geo.kw} conv {geo.cin}->{geo.cout}, group {geo.group} (expected "
            f"group 1 and [ceil(O/NR), kh*I*kw, NR] from pack_conv_lanes_weight, NR a "
            f"multiple of {vw})"
        )
    # Blocked, the accumulators are already c output channels of one pixel: they are stored
    # as they are, with no transpose; input channels are read as (block, lane).
    out_shape = memref_shape(op.output)
    if len(out_shape) != len(memref_shape(op.input)) or (blocked and out_shape[-1] != vw):
        raise ValueError(
            f"kernel.conv2d: input {memref_shape(op.input)} and output {out_shape} must "
            f"both be NCHW or both channel-blocked [N, C/{vw}, H, W, {vw}]"
        )
    nvec = nr // vw
    kernel_hw = (geo.kh, geo.kw)
    tile_limit = (
        blocked_max_accumulators(kernel_hw, nvec, target) if blocked else LANES_MAX_ACCUMULATORS
    )
    mr = lanes_row_tile(geo.wo, nvec, target, tile_limit)
    fn, body, args = _function(op, name)
    x, w, out = args["input"], args["weight"], args["output"]
    flat_x = view(body, x, (prod(memref_shape(op.input)),)) if blocked else None
    # Blocked: each tile first asks for its residual's lines, which the epilogue reads after
    # the whole reduction (znver5, 1 thread, caches evicted before each call, ms: 1x1
    # 64->256 @160 6.32 -> 4.62, 1x1 64->256 @56 0.85 -> 0.59, 3x3 64->64 @160 8.10 -> 7.59;
    # with the residual in cache within +-1%).
    residual = args.get("residual")
    flat_residual = view(body, residual, (prod(out_shape),)) if blocked and residual else None
    bias_buf = args.get("bias")
    activation = activation_of(op)
    weight_bytes = blocks * k_extent * nr * 4
    image_bytes = prod(memref_shape(op.input)[1:]) * 4  # one image: units walk batch outermost
    rows_first = weight_bytes <= LANES_ROWS_FIRST_MAX_WEIGHT_BYTES or (
        blocked and image_bytes >= BLOCKED_ROWS_FIRST_MIN_INPUT_PER_WEIGHT * weight_bytes
    )
    # Taps unrolled column by column when every tap's weights, the accumulators and one
    # broadcast fit the registers: tap by tap, LLVM shares each input column's broadcast
    # across the taps that read it and keeps all of them live (AVX2, 3x3, 8 columns: 8
    # accumulators + 10 broadcasts + a weight > 16 ymm, spilled); AVX-512 runs as fast.
    by_column = nvec * (geo.kw + mr) + 1 <= target.vector_registers
    # Channels per unrolled reduction step: enough FMAs per iteration for short kernels.
    unroll = max(1, K_UNROLL // geo.kw)
    lane_unroll = math.gcd(unroll, vw)  # blocked: steps through one channel block's lanes
    lanes_shape = (blocked, vw, nvec, nr, geo.cout, unroll, lane_unroll)

    def column_ok(ow: int, s: int) -> bool:
        iw = ow * geo.sw - geo.pl + s * geo.dw
        return 0 <= iw < geo.w

    def unit(b: LoopBuilder, u: SSAValue) -> None:
        if rows_first:
            bi, oh, cb = decode(b, u, [geo.batch, geo.ho, blocks])
        else:
            bi, cb, oh = decode(b, u, [geo.batch, blocks, geo.ho])
        rows_scratch = None if blocked else alloca(b, [nr, vw])
        epi = Epilogue(out, args.get("residual"), activation, vw)
        zero = b.splat(0.0, vw)
        co0 = b.mul(cb, nr)
        # Input row of each kernel row, and the channels (blocked: channel blocks) to run
        # for it (none if outside).
        reduced = geo.cin // vw if blocked else geo.cin
        kernel_rows = []
        for r in range(geo.kh):
            ih = b.add(b.mul(oh, geo.sh), r * geo.dh - geo.pt)
            inside = b.cmp_index("ult", ih, geo.h)
            kernel_rows.append((ih, b.select(inside, b.index(reduced), b.index(0))))
        lanes_tile = LanesTile(*lanes_shape, bi, oh, cb, co0, zero, epi, bias_buf, rows_scratch)

        def x_at(b: LoopBuilder, ci: Channel, ih: SSAValue, iw: SSAValue) -> list[SSAValue]:
            """Indices of input channel `ci` (blocked: its (block, lane)) at (ih, iw)."""
            if isinstance(ci, tuple):
                return [bi, ci[0], ih, iw, ci[1]]
            return [bi, ci, ih, iw]

        def tile(b: LoopBuilder, ow0: Value, cols: int, static_ow0: int | None) -> None:
            iw0 = b.sub(b.mul(ow0, geo.sw), geo.pl)

            def valid(i: int, s: int) -> bool:
                return static_ow0 is None or column_ok(static_ow0 + i, s)

            def looped_tap(
                b: LoopBuilder,
                row: SSAValue,
                s: SSAValue,
                ci: Channel,
                ih: SSAValue,
                values: list[SSAValue],
            ) -> None:
                """Tap s (dynamic) of every column: an edge tile's columns whose window
                leaves the row at some tap read 0 there (index clamped, value selected)."""
                weights = [b.vload(w, [cb, b.add(row, s), j * vw], vw) for j in range(nvec)]
                shifted = b.add(iw0, b.mul(s, geo.dw))
                for i in range(cols):
                    inside = [t for t in range(geo.kw) if valid(i, t)]
                    if not inside:
                        continue
                    iw = b.add(shifted, i * geo.sw)
                    lo, hi = inside[0], inside[-1] + 1  # the valid taps are contiguous
                    if (lo, hi) == (0, geo.kw):
                        a = b.load(x, x_at(b, ci, ih, iw))
                    else:
                        ok = b.cmp_index("ult", b.sub(s, lo), hi - lo)
                        a = b.load(x, x_at(b, ci, ih, b.select(ok, iw, b.index(0))))
                        a = b.select(ok, a, b.const(0.0))
                    a = b.splat(a, vw)
                    for j in range(nvec):
                        values[i * nvec + j] = b.fma(a, weights[j], values[i * nvec + j])

            # The input columns the tile reads (edge tiles: inside the row), from iw0.
            reach = sorted(
                {i * geo.sw + s * geo.dw for i in range(cols) for s in range(geo.kw) if valid(i, s)}
            )

            def prefetch_next_block(b: LoopBuilder, cib: SSAValue, ih: SSAValue) -> None:
                """Blocked: ask for the tile's pixels of input row ih in channel block cib + 1
                (the last block: itself again), one line each, a block's lanes ahead of use:
                blocks lie a whole plane apart, a stride the hardware prefetchers miss."""
                assert flat_x is not None
                ahead = b.min_index(b.add(cib, 1), reduced - 1)
                plane = b.add(b.mul(bi, reduced), ahead)
                row_at = b.mul(b.add(b.mul(plane, geo.h), ih), geo.w)
                for offset in reach:
                    prefetch(b, flat_x, b.mul(b.add(row_at, b.add(iw0, offset)), vw))

            if flat_residual is not None:
                for j in range(nvec):
                    # The last block's padding channels (cout % NR): its last vector again.
                    cb_out = b.min_index(b.add(b.mul(cb, nvec), j), out_shape[1] - 1)
                    plane = b.add(b.mul(bi, out_shape[1]), cb_out)
                    row_at = b.add(b.mul(b.add(b.mul(plane, geo.ho), oh), geo.wo), ow0)
                    for i in range(cols):
                        prefetch(b, flat_residual, b.mul(b.add(row_at, i), vw))
            accs = [zero] * (cols * nvec)
            for r, (ih, channels) in enumerate(kernel_rows):

                def step(
                    b: LoopBuilder,
                    ci: Channel,
                    values: list[SSAValue],
                    r: int = r,
                    ih: SSAValue = ih,
                ) -> None:
                    flat = b.add(b.mul(ci[0], vw), ci[1]) if isinstance(ci, tuple) else ci
                    row = b.mul(b.add(flat, r * geo.cin), geo.kw)
                    # Long filters (1-D audio front ends: 1x320) loop over blocks of taps:
                    # unrolled, a 1x320 conv was 50k ops and ~10 s of LLVM.
                    looped = 0 if geo.kw <= LANES_MAX_UNROLLED_TAPS else geo.kw - geo.kw % TAP_BLOCK
                    if looped:

                        def taps(b: LoopBuilder, s0: SSAValue, *sums: SSAValue) -> list[SSAValue]:
                            current = list(sums)
                            for q in range(TAP_BLOCK):
                                s = s0 if q == 0 else b.add(s0, q)
                                looped_tap(b, row, s, ci, ih, current)
                            return current

                        values[:] = b.for_range(0, looped, TAP_BLOCK, taps, values)
                    taps = range(looped, geo.kw)
                    if by_column:
                        # Every tap's weights first, then input column by column: each
                        # broadcast feeds its FMAs at once and dies (per accumulator the taps
                        # still come in order, so the sums are the same).
                        weights_of = {
                            t: [b.vload(w, [cb, b.add(row, t), j * vw], vw) for j in range(nvec)]
                            for t in taps
                        }
                        uses: dict[int, list[tuple[int, int]]] = {}
                        for i in range(cols):
                            for t in taps:
                                if valid(i, t):
                                    uses.setdefault(i * geo.sw + t * geo.dw, []).append((i, t))
                        for offset in sorted(uses):
                            iw = b.add(iw0, offset)
                            a = b.splat(b.load(x, x_at(b, ci, ih, iw)), vw)
                            for i, t in uses[offset]:
                                for j in range(nvec):
                                    at = i * nvec + j
                                    values[at] = b.fma(a, weights_of[t][j], values[at])
                        return
                    for s in taps:
                        k = b.add(row, s)
                        weights = [b.vload(w, [cb, k, j * vw], vw) for j in range(nvec)]
                        for i in range(cols):
                            if not valid(i, s):
                                continue
                            iw = b.add(iw0, i * geo.sw + s * geo.dw)
                            a = b.splat(b.load(x, x_at(b, ci, ih, iw)), vw)
                            for j in range(nvec):
                                values[i * nvec + j] = b.fma(a, weights[j], values[i * nvec + j])

                accs = reduce_lanes_channels(
                    b,
                    lanes_tile,
                    channels,
                    accs,
                    step,
                    lambda b, cib, ih=ih: prefetch_next_block(b, cib, ih),
                )

            store_lanes_tile(b, lanes_tile, accs, ow0, cols, None)

        # Row tiles: edge tiles (some tap outside the row) static, runs of interior ones looped.
        starts = list(range(0, geo.wo, mr))
        interior = [
            min(mr, geo.wo - ow0) == mr
            and all(column_ok(ow0 + i, s) for i in range(mr) for s in range(geo.kw))
            for ow0 in starts
        ]
        t = 0
        while t < len(starts):
            if not interior[t]:
                cols = min(mr, geo.wo - starts[t])
                tile(b, b.index(starts[t]), cols, starts[t])
                t += 1
                continue
            end = t
            while end < len(starts) and interior[end]:
                end += 1
            if end - t == 1:
                tile(b, b.index(starts[t]), mr, None)
            else:
                b.for_range(
                    starts[t], starts[end - 1] + mr, mr, lambda b2, ow0: tile(b2, ow0, mr, None)
                )
            t = end

    work_units(body, target, geo.flops, geo.batch * blocks * geo.ho, unit)
    body.ret()
    return fn
