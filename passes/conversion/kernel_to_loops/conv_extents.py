"""kernel.conv2d and kernel.pool with runtime extents (issue 10): `?` in N, H and W.

The input is [N, C, H, W] or channel-blocked [N, C/c, H, W, c] and the output [N, K, Ho, Wo]
(or [N, K/c, Ho, Wo, c]) with N, H, W, Ho and Wo `?`; channels, weights (their compile-time
packing), bias, kernel size, strides, pads and dilations are static. Sizes are read with
memref.dim: N, H, W from the input, Ho, Wo from the output (the caller's contract is that they
are the conv's output size; the kernels read the input only inside [0, H) x [0, W) whatever
they are, so a wrong Ho/Wo gives wrong values, never a read or write out of bounds).

The kernels are the static ones' (conv.py, pooling.py) with the geometry decided at run
time. An output row is cut into ceil(Wo / widest) balanced tiles as the static kernels cut
theirs, their width chosen at run time among compiled versions (`tile_widths`: from the
widest that fits the registers down to half of it). The static kernel decides per tile, at
compile time, which taps fall in the padding; here the columns whose windows lie inside
the input, [interior_lo, interior_hi), are computed once per call, and each tile runs its
unchecked version (plain loads, the static interior's code) where all its columns are
interior, else its checked version with a column count (the row's last tile may be
narrower): each column's tap reads a clamped address and keeps 0 / the pool's identity
outside the row, the validity hoisted out of the channel loops; the blocked conv's checked
tile instead copies each channel block's pixels under it into a zero-bordered strip and
reads that unchecked. Kernel rows outside the input run zero times, as in the static
kernels.

Kernels: the channel-lanes direct conv (layout conv_lanes_panel{NR}; NCHW or blocked), the
blocked depthwise conv (depthwise_blocked{c}), the NCHW im2col GEMM conv (conv_a_panel{MR})
and the max/average pools (blocked or NCHW). Units (batch x channel blocks x output rows;
the GEMM's column panels) run under scf.parallel, as the static kernels'. NCHW depthwise
convs with `?` dims are refused with the op's types.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xdsl.dialects import arith, func, vector
from xdsl.dialects.builtin import VectorType, f32, i1
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.extents import is_dynamic
from ember.dialects.graph import int_values
from ember.dialects.weight_layouts import (
    BLOCKED_MAX_ACCUMULATORS,
    DEPTHWISE_LAYOUT,
    LANES_MAX_ACCUMULATORS,
    conv_lanes_layout,
    conv_layout,
    depthwise_blocked_layout,
    gemm_blocking,
    lanes_row_tile_max,
)
from ember.passes.conversion.kernel_to_loops import simd
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, Value, kernel_function
from ember.passes.conversion.kernel_to_loops.conv import (
    DEPTHWISE_BLOCKED_COLUMNS,
    DEPTHWISE_ROW_VECTORS,
    LANES_MAX_UNROLLED_TAPS,
    LANES_ROWS_FIRST_MAX_WEIGHT_BYTES,
    LanesTile,
    check_depthwise_blocked_weight,
    column_stores,
    reduce_lanes_channels,
    store_lanes_tile,
)
from ember.passes.conversion.kernel_to_loops.flat_access import index_to_f32, shuffle
from ember.passes.conversion.kernel_to_loops.gemm_common import (
    K_UNROLL,
    Epilogue,
    GemmPanel,
    activation_of,
    alloca,
    ceil_div,
    describe_kernel,
    epilogue_summary,
    gemm_panel,
    if_else,
    k_block,
    load_lanes,
    memref_shape,
    runtime_work_units,
)
from ember.passes.conversion.kernel_to_loops.pooling import BLOCKED_POOL_COLUMNS
from ember.passes.conversion.kernel_to_loops.registry import lowering


@dataclass(frozen=True)
class Window:
    """One spatial axis of a conv or pool: static kernel taps, stride, dilation and pads;
    the sizes are index values read at run time."""

    taps: int
    stride: int
    dilation: int
    pad_lo: int
    pad_hi: int

    @property
    def reach(self) -> int:
        """Input positions between a window's first and last tap."""
        return (self.taps - 1) * self.dilation

    def interior(
        self, b: LoopBuilder, size: Value, out: Value, extra: int = 0
    ) -> tuple[Value, Value]:
        """[lo, hi): the outputs (of `out`) whose windows (`extra` inputs longer) lie inside
        [0, size). Computed with non-negative operands only (index division is unsigned)."""
        lo = b.min_index(ceil_div(self.pad_lo, self.stride), out)
        # o*stride - pad_lo + reach <= size - 1  <=>  o < (size + pad_lo - reach - 1) / s + 1
        reach = self.reach + extra
        shifted = b.max_index(b.add(size, self.pad_lo + self.stride - 1), reach)
        hi = b.floordiv(b.sub(shifted, reach), self.stride)
        return lo, b.min_index(b.max_index(hi, lo), out)


def decode_runtime(b: LoopBuilder, flat: SSAValue, extents: Sequence[Value]) -> list[SSAValue]:
    """gemm_common.decode over extents that may be index values (outermost first)."""
    coords: list[SSAValue] = []
    rest = flat
    for extent in reversed(extents[1:]):
        if isinstance(extent, int) and extent == 1:
            coords.append(b.index(0))
            continue
        coords.append(b.rem(rest, extent))
        rest = b.floordiv(rest, extent)
    coords.append(rest)
    return coords[::-1]


# (builder, first column, columns, count) -> None: one tile of an output row; `count` None
# for the unchecked version (all columns interior), else the columns that exist (1..columns).
Tile = Callable[[LoopBuilder, SSAValue, int, SSAValue | None], None]


def tile_widths(most: int) -> list[int]:
    """Tile widths a row is cut into, widest first: every width from `most` down to half of
    it (a row of more than `most` columns cut into balanced tiles gets at least half),
    every other one when `most` is above 8 (a tile then wastes at most one column), to
    bound the versions compiled."""
    step = 1 if most <= 8 else 2
    return list(range(most, max(1, (most + 1) // 2) - 1, -step))


def row_tiles(
    b: LoopBuilder, wo: Value, interior: tuple[Value, Value], widths: Sequence[int], tile: Tile
) -> None:
    """An output row of `wo` columns in ceil(wo / widths[0]) balanced tiles, as the static
    kernels cut theirs: the tiles' width is the narrowest of `widths` that is at least
    ceil(wo / tiles) (a run-time choice among the versions); each tile is unchecked where
    its columns are all interior, else checked with its column count (the last one may be
    narrower than the others)."""
    lo, hi = interior
    most = widths[0]
    tiles = b.max_index(b.floordiv(b.add(wo, most - 1), most), 1)
    want = b.floordiv(b.add(wo, b.sub(tiles, 1)), tiles)  # ceil(wo / tiles)

    def sweep(sb: LoopBuilder, width: int) -> None:
        def one(fb: LoopBuilder, ow0: SSAValue) -> None:
            count = fb.min_index(fb.sub(wo, ow0), width)
            after_lo = fb.cmp_index("sge", ow0, lo)
            inside = fb.insert(
                arith.AndIOp(after_lo, fb.cmp_index("sle", fb.add(ow0, width), hi))
            ).results[0]
            if_else(
                fb,
                inside,
                lambda ib: tile(ib, ow0, width, None),
                lambda cb: tile(cb, ow0, width, count),
            )

        sb.for_range(0, wo, width, one)

    def choose(cb: LoopBuilder, options: Sequence[int]) -> None:
        """The narrowest of `options` (ascending) at least `want` wide."""
        if len(options) == 1:
            sweep(cb, options[0])
            return
        fits = cb.cmp_index("sle", want, options[0])
        if_else(cb, fits, lambda tb: sweep(tb, options[0]), lambda eb: choose(eb, options[1:]))

    choose(b, sorted(widths))


def tap_columns(
    b: LoopBuilder,
    first: SSAValue,
    cols: int,
    stride: int,
    taps: Sequence[int],
    size: Value,
    count: SSAValue | None,
) -> list[list[tuple[SSAValue, SSAValue | None]]]:
    """[column][tap] input position (first + column*stride + tap offset) of a tile and,
    checked (`count` given), the position clamped to 0 with whether it is inside [0, size)
    and the column exists (column < count): hoisted out of the reduction loops."""
    columns = []
    for i in range(cols):
        row = []
        for offset in taps:
            at = b.add(first, i * stride + offset)
            if count is None:
                row.append((at, None))
                continue
            ok = b.cmp_index("ult", at, size)
            if i:
                exists = b.cmp_index("ult", b.index(i), count)
                ok = b.insert(arith.AndIOp(ok, exists)).results[0]
            row.append((b.select(ok, at, b.index(0)), ok))
        columns.append(row)
    return columns


# -- conv --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuntimeConv:
    """A conv's static geometry and the operands' run-time sizes."""

    cin: int
    cout: int
    group: int
    rows: Window
    cols: Window
    blocked: bool
    lanes: int  # channels per block (blocked), else 0

    @staticmethod
    def of(op: kernel.Conv2dOp) -> RuntimeConv:
        in_shape, out_shape = memref_shape(op.input), memref_shape(op.output)
        blocked = len(in_shape) == 5
        static_dims = [1, 4] if blocked else [1]
        fixed = [op.weight, *(v for v in (op.bias,) if v is not None)]
        if (
            len(in_shape) not in (4, 5)
            or len(out_shape) != len(in_shape)
            or any(is_dynamic(in_shape[d]) or is_dynamic(out_shape[d]) for d in static_dims)
            or any(is_dynamic(n) for v in fixed for n in memref_shape(v))
            or (op.residual is not None and op.residual.type != op.output.type)
        ):
            raise NotImplementedError(
                "kernel.conv2d with runtime extents takes `?` in N, H, W only (channels, "
                f"weight and bias static, a residual of the output's type): {op.input.type} "
                f"-> {op.output.type}, weight {op.weight.type}"
            )
        c = in_shape[-1] if blocked else 1
        cout_static = out_shape[1] * (out_shape[-1] if blocked else 1)
        if op.bias is not None and memref_shape(op.bias) != (cout_static,):
            raise ValueError(
                f"kernel.conv2d: bias shape {memref_shape(op.bias)} != ({cout_static},)"
            )
        kh, kw = int_values(op.kernel_shape)
        sh, sw = int_values(op.strides)
        dh, dw = int_values(op.dilations)
        pt, pl, pb, pr = int_values(op.pads)
        if min(sh, sw, dh, dw, kh, kw) < 1 or min(pt, pl, pb, pr) < 0:
            raise ValueError("kernel.conv2d: strides/dilations/kernel must be >= 1 and pads >= 0")
        group = op.group.value.data
        cin, cout = in_shape[1] * c, out_shape[1] * c
        if cin % group or cout % group:
            raise ValueError(f"kernel.conv2d: channels {cin}->{cout} not divisible by {group}")
        return RuntimeConv(
            cin,
            cout,
            group,
            Window(kh, sh, dh, pt, pb),
            Window(kw, sw, dw, pl, pr),
            blocked,
            c if blocked else 0,
        )

    def summary(self) -> str:
        r, c = self.rows, self.cols
        text = f"conv {r.taps}x{c.taps} s{r.stride}"
        if c.stride != r.stride:
            text += f"x{c.stride}"
        text += f" {self.cin}->{self.cout}"
        if self.group > 1:
            text += " dw" if self.group == self.cin == self.cout else f" g{self.group}"
        return text + " @?x? (runtime extents)"

    def flops_per_output(self) -> int:
        return 2 * self.cin // self.group * self.rows.taps * self.cols.taps


@dataclass(frozen=True)
class Sizes:
    """N, H, W of the input and Ho, Wo of the output (index values, or ints where static)."""

    batch: Value
    h: Value
    w: Value
    ho: Value
    wo: Value

    @staticmethod
    def read(b: LoopBuilder, x: SSAValue, out: SSAValue) -> Sizes:
        return Sizes(b.dim(x, 0), b.dim(x, 2), b.dim(x, 3), b.dim(out, 2), b.dim(out, 3))


def _function(
    op: kernel.Conv2dOp, name: str
) -> tuple[func.FuncOp, LoopBuilder, dict[str, SSAValue]]:
    names = ["input", "weight", "bias", "residual", "output"]
    present = [(n, getattr(op, n)) for n in names if getattr(op, n) is not None]
    fn, body = kernel_function(name, [v.type for _, v in present])
    memrefs = fn.args[: len(present)]  # the `?` dims' sizes follow them
    return fn, body, {n: arg for (n, _), arg in zip(present, memrefs, strict=True)}


@lowering(kernel.Conv2dOp, runtime_extents=True)
def lower_conv2d_runtime(op: kernel.Conv2dOp, target: Target, name: str) -> func.FuncOp:
    geo = RuntimeConv.of(op)
    layout = op.weight_layout.data
    if geo.blocked and layout == depthwise_blocked_layout(geo.lanes):
        fn = _depthwise_blocked(op, geo, target, name)
    elif layout.startswith(conv_lanes_layout(0)[:-1]):
        fn = _channel_lanes(op, geo, target, name)
    elif not geo.blocked and layout.startswith(conv_layout(0)[:-1]):
        fn = _gemm_conv(op, geo, target, name)
    elif not geo.blocked and layout == DEPTHWISE_LAYOUT and geo.cols.stride in (1, 2):
        fn = _depthwise_nchw(op, geo, target, name)
    else:
        raise NotImplementedError(
            f"kernel.conv2d with runtime extents runs the channel-lanes, GEMM and depthwise "
            f"(column stride 1 or 2) kernels only, not weight layout '{layout}' with strides "
            f"{geo.rows.stride}x{geo.cols.stride}: {op.input.type} -> {op.output.type}"
        )
    describe_kernel(fn, geo.summary() + epilogue_summary(op), 0)
    return fn


def _channel_lanes(op: kernel.Conv2dOp, geo: RuntimeConv, target: Target, name: str) -> func.FuncOp:
    """conv.py's _lower_channel_lanes with N, H, W, Ho, Wo read at run time: a tile is `mr`
    output columns x NR output channels in registers, each k = (r, ci, s) nvec weight
    vector loads and one broadcast per column; tiles of the most columns that fit the
    registers (lanes_row_tile_max), checked or not per tile at run time (row_tiles)."""
    vw = geo.lanes if geo.blocked else target.vector_width
    w_shape = memref_shape(op.weight)
    nr = w_shape[-1]
    kh, kw = geo.rows.taps, geo.cols.taps
    k_extent = kh * geo.cin * kw
    blocks = ceil_div(geo.cout, nr)
    layout = op.weight_layout.data
    if (
        geo.group != 1
        or nr % vw
        or layout != conv_lanes_layout(nr)
        or w_shape
        != (
            blocks,
            k_extent,
            nr,
        )
    ):
        raise ValueError(
            f"kernel.conv2d: weight {w_shape} with layout '{layout}' does not match a "
            f"{kh}x{kw} conv {geo.cin}->{geo.cout}, group {geo.group} (expected group 1 and "
            f"[ceil(O/NR), kh*I*kw, NR], NR a multiple of {vw})"
        )
    if kw > LANES_MAX_UNROLLED_TAPS:
        raise NotImplementedError(
            f"kernel.conv2d with runtime extents: a {kh}x{kw} filter is wider than "
            f"{LANES_MAX_UNROLLED_TAPS} taps (the static kernel's looped taps are not built)"
        )
    nvec = nr // vw
    limit = BLOCKED_MAX_ACCUMULATORS if geo.blocked else LANES_MAX_ACCUMULATORS
    mr = max(1, lanes_row_tile_max(nvec, target, limit))
    fn, body, args = _function(op, name)
    x, w, out = args["input"], args["weight"], args["output"]
    bias_buf = args.get("bias")
    activation = activation_of(op)
    rows_first = blocks * k_extent * nr * 4 <= LANES_ROWS_FIRST_MAX_WEIGHT_BYTES
    unroll = max(1, K_UNROLL // kw)
    lane_unroll = math.gcd(unroll, vw)
    lanes_shape = (geo.blocked, vw, nvec, nr, geo.cout, unroll, lane_unroll)
    size = Sizes.read(body, x, out)
    interior = geo.cols.interior(body, size.w, size.wo)
    sh, dh, pt = geo.rows.stride, geo.rows.dilation, geo.rows.pad_lo
    sw, dw, pl = geo.cols.stride, geo.cols.dilation, geo.cols.pad_lo

    def unit(b: LoopBuilder, u: SSAValue) -> None:
        if rows_first:
            bi, oh, cb = decode_runtime(b, u, [size.batch, size.ho, blocks])
        else:
            bi, cb, oh = decode_runtime(b, u, [size.batch, blocks, size.ho])
        rows_scratch = None if geo.blocked else alloca(b, [nr, vw])
        epi = Epilogue(out, args.get("residual"), activation, vw)
        zero = b.splat(0.0, vw)
        scalar_zero = b.const(0.0)
        co0 = b.mul(cb, nr)
        reduced = geo.cin // vw if geo.blocked else geo.cin
        kernel_rows = []
        for r in range(kh):
            ih = b.add(b.mul(oh, sh), r * dh - pt)
            inside = b.cmp_index("ult", ih, size.h)
            kernel_rows.append((ih, b.select(inside, b.index(reduced), b.index(0))))
        lanes_tile = LanesTile(*lanes_shape, bi, oh, cb, co0, zero, epi, bias_buf, rows_scratch)

        def x_at(ci: SSAValue | tuple[SSAValue, SSAValue], ih: SSAValue, iw: Value) -> list:
            if isinstance(ci, tuple):
                return [bi, ci[0], ih, iw, ci[1]]
            return [bi, ci, ih, iw]

        def tile(b: LoopBuilder, ow0: SSAValue, cols: int, count: SSAValue | None) -> None:
            iw0 = b.sub(b.mul(ow0, sw), pl)
            tap_offsets = [s * dw for s in range(kw)]
            # Blocked, a checked tile copies each channel block's input pixels under it into
            # a zero-bordered strip (one vector per pixel, hoisted out of the lane loop) and
            # reads the strip unchecked: a select per broadcast made edge tiles ~1.7x slower.
            strip = None
            if geo.blocked and count is not None:
                span = (cols - 1) * sw + geo.cols.reach + 1
                strip = alloca(b, [span, vw])
                pixels = tap_columns(b, iw0, 1, 0, list(range(span)), size.w, count)[0]
                columns = [[(b.index(i * sw + t), None) for t in tap_offsets] for i in range(cols)]
            else:
                columns = tap_columns(b, iw0, cols, sw, tap_offsets, size.w, count)
            accs = [zero] * (cols * nvec)
            for r, (ih, channels) in enumerate(kernel_rows):

                def step(
                    b: LoopBuilder,
                    ci: SSAValue | tuple[SSAValue, SSAValue],
                    values: list[SSAValue],
                    r: int = r,
                    ih: SSAValue = ih,
                ) -> None:
                    flat = b.add(b.mul(ci[0], vw), ci[1]) if isinstance(ci, tuple) else ci
                    row = b.mul(b.add(flat, r * geo.cin), kw)
                    for s in range(kw):
                        k = b.add(row, s)
                        weights = [b.vload(w, [cb, k, j * vw], vw) for j in range(nvec)]
                        for i in range(cols):
                            iw, ok = columns[i][s]
                            if strip is not None:
                                assert isinstance(ci, tuple)
                                a = b.load(strip, [iw, ci[1]])
                            else:
                                a = b.load(x, x_at(ci, ih, iw))
                            if ok is not None:
                                a = b.select(ok, a, scalar_zero)
                            a = b.splat(a, vw)
                            for j in range(nvec):
                                values[i * nvec + j] = b.fma(a, weights[j], values[i * nvec + j])

                def copy_strip(b: LoopBuilder, cib: SSAValue, ih: SSAValue = ih) -> None:
                    for p, (iw, ok) in enumerate(pixels):
                        pixel = b.vload(x, [bi, cib, ih, iw, 0], vw)
                        if ok is not None:
                            pixel = b.select(ok, pixel, zero)
                        b.vstore(pixel, strip, [p, 0])

                copy = copy_strip if strip is not None else None
                accs = reduce_lanes_channels(b, lanes_tile, channels, accs, step, copy)

            store_lanes_tile(b, lanes_tile, accs, ow0, cols, count)

        row_tiles(b, size.wo, interior, tile_widths(mr), tile)

    units = body.mul(body.mul(size.batch, size.ho), blocks)
    outputs = body.mul(units, size.wo)
    runtime_work_units(body, target, outputs, geo.flops_per_output() * nr, units, unit)
    body.ret()
    return fn


# Largest packed B panel (K x NR floats) the runtime GEMM conv keeps as one k block.
SINGLE_K_BLOCK_BYTES = 24 * 1024


def _gemm_conv(op: kernel.Conv2dOp, geo: RuntimeConv, target: Target, name: str) -> func.FuncOp:
    """conv.py's _lower_gemm_conv (weights packed as GEMM A panels [G, M/MR, K, MR]) over
    N = Ho x Wo output columns known at run time: per (batch, group, NR-column panel) unit,
    each k block of whole input channels packed into an L1-sized scratch panel (implicit
    im2col: a load at a clamped address, 0 where the window hits padding; a pointwise conv
    copies rows with vector loads), then gemm_common's MR-row tiles sweep it. Full panels
    store whole vectors; the last one (N mod NR columns) the same tiles with run-time lane
    masks. This is also the run-time kernel of the convs the static pipeline runs as direct
    band-plane convs (stems: 3 input channels), which share the packed weight."""
    blocking = gemm_blocking(target)
    vw, nr = blocking.vw, blocking.nr
    w_shape = memref_shape(op.weight)
    mr = w_shape[-1]
    groups = geo.group
    m = geo.cout // groups
    cin_g = geo.cin // groups
    kh, kw = geo.rows.taps, geo.cols.taps
    taps = kh * kw
    k_extent = cin_g * taps
    if op.weight_layout.data != conv_layout(mr) or w_shape != (
        groups,
        ceil_div(m, mr),
        k_extent,
        mr,
    ):
        raise ValueError(
            f"kernel.conv2d: weight {w_shape} with layout '{op.weight_layout.data}' does not "
            f"match a {kh}x{kw} conv {geo.cin}->{geo.cout}, group {groups} (expected "
            "[G, ceil(M/MR), K, MR] from pack_conv_weight)"
        )
    kc = k_block(k_extent, nr, taps if taps > 1 else K_UNROLL)
    # One k block when the whole panel fits half of L1 (48 KiB on znver5): ResNet's stem
    # (K = 147) in two blocks of 98 was 1.76x of the static direct conv, in one 1.24x.
    if k_extent * nr * 4 <= SINGLE_K_BLOCK_BYTES:
        kc = k_extent
    even = list(range(0, 2 * vw, 2))
    pointwise = (kh, kw, geo.rows.stride, geo.cols.stride) == (1, 1, 1, 1) and (
        geo.rows.pad_lo,
        geo.cols.pad_lo,
    ) == (0, 0)
    fn, body, args = _function(op, name)
    x, w, out = args["input"], args["weight"], args["output"]
    bias_buf = args.get("bias")
    activation = activation_of(op)
    size = Sizes.read(body, x, out)
    n = body.mul(size.ho, size.wo)
    full_panels = body.floordiv(n, nr)
    same_planes = body.insert(
        arith.AndIOp(body.cmp_index("eq", size.ho, size.h), body.cmp_index("eq", size.wo, size.w))
    ).results[0]
    panels = body.floordiv(body.add(n, nr - 1), nr)
    sh, dh, pt = geo.rows.stride, geo.rows.dilation, geo.rows.pad_lo
    sw, dw, pl = geo.cols.stride, geo.cols.dilation, geo.cols.pad_lo

    def unit(b: LoopBuilder, u: SSAValue) -> None:
        bi, g, p = decode_runtime(b, u, [size.batch, groups, panels])
        ch0 = b.mul(g, cin_g)
        co0 = b.mul(g, m)
        n0 = b.mul(p, nr)
        epi = Epilogue(out, args.get("residual"), activation, vw)
        panel_buf = alloca(b, [kc, nr])
        # Columns of this panel that exist (NR but in the last panel).
        cols_here = b.min_index(b.sub(n, n0), nr)

        def pack_pointwise(b: LoopBuilder, k_lo: Value, k_hi: Value, tail: bool) -> None:
            def copy(b: LoopBuilder, k: SSAValue) -> None:
                for j in range(nr // vw):
                    at = [bi, b.add(ch0, k), 0, b.add(n0, j * vw)]
                    lanes = vector_lanes(b, cols_here, j, vw) if tail else vw
                    row = load_lanes(b, x, at, lanes, vw)
                    b.vstore(row, panel_buf, [b.sub(k, k_lo), j * vw])

            b.for_range(k_lo, k_hi, 1, copy)

        def pack_im2col(b: LoopBuilder, k_lo: Value, k_hi: Value) -> None:
            # Top-left input corner of each column's window (columns past N: any rows, they
            # are never stored; their reads are clamped like the padding's).
            corners = []
            for j in range(nr):
                col = b.add(n0, j)
                row0 = b.sub(b.mul(b.floordiv(col, size.wo), sh), pt)
                col0 = b.sub(b.mul(b.rem(col, size.wo), sw), pl)
                corners.append((row0, col0))
            zero = b.const(0.0)

            def window(b: LoopBuilder, r: SSAValue, s: SSAValue) -> None:
                offsets, valid = [], []
                for row0, col0 in corners:
                    ih = b.add(row0, b.mul(r, dh))
                    iw = b.add(col0, b.mul(s, dw))
                    ok = b.insert(
                        arith.AndIOp(b.cmp_index("ult", ih, size.h), b.cmp_index("ult", iw, size.w))
                    ).results[0]
                    offsets.append(b.select(ok, b.add(b.mul(ih, size.w), iw), b.index(0)))
                    valid.append(ok)
                tap = b.add(b.mul(r, kw), s)

                def channel(b: LoopBuilder, ci: SSAValue) -> None:
                    k = b.add(b.mul(b.sub(ci, b.floordiv(k_lo, taps)), taps), tap)
                    ch = b.add(ch0, ci)
                    for j in range(nr):
                        value = b.load(x, [bi, ch, 0, offsets[j]])
                        b.store(b.select(valid[j], value, zero), panel_buf, [k, j])

                b.for_range(b.floordiv(k_lo, taps), b.floordiv(k_hi, taps), 1, channel)

            b.for_range(
                0, kh, 1, lambda b, r: b.for_range(0, kw, 1, lambda b2, s: window(b2, r, s))
            )

        def pack_im2col_rows(b: LoopBuilder, k_lo: Value, k_hi: Value) -> None:
            """conv.py's _pack_im2col_rows at run-time sizes, also for column stride 2:
            the panel's columns are segment A (the rest of output row oh_a) and B (the
            start of the next row); lane l of a segment reads input column col0 + l*sw.
            Each panel row is, per vector and segment, sw masked loads of the raw inputs
            (lanes outside the segment or the input masked off, zero), stride 2 keeping
            the even lanes, the two segments' disjoint lanes summed."""
            nv = nr // vw
            oh_a = b.floordiv(n0, size.wo)
            ow_a = b.rem(n0, size.wo)
            split = b.min_index(b.sub(size.wo, ow_a), nr)
            segments = [
                (oh_a, b.sub(b.mul(ow_a, sw), pl), b.index(0), split),
                (b.add(oh_a, 1), b.sub(b.mul(b.sub(0, split), sw), pl), split, b.index(nr)),
            ]
            zero = b.splat(0.0, vw)
            mask_type = VectorType(i1, [vw])

            def prefix(b: LoopBuilder, count: SSAValue) -> SSAValue:
                return b.insert(vector.CreateMaskOp([count], mask_type)).results[0]

            def window(b: LoopBuilder, r: SSAValue, s: SSAValue) -> None:
                loads = []
                for oh, col_lane0, first, last in segments:
                    ih = b.add(b.sub(b.mul(oh, sh), pt), b.mul(r, dh))
                    col0 = b.add(col_lane0, b.mul(s, dw))
                    # Raw inputs q (from col0) to read: the segment's, inside [0, W).
                    lo = b.max_index(b.mul(first, sw), b.sub(0, col0))
                    hi = b.min_index(b.mul(last, sw), b.sub(size.w, col0))
                    hi = b.select(b.cmp_index("ult", ih, size.h), b.max_index(hi, lo), lo)
                    masks = [
                        b.insert(
                            arith.XOrIOp(prefix(b, b.sub(hi, q * vw)), prefix(b, b.sub(lo, q * vw)))
                        ).results[0]
                        for q in range(sw * nv)
                    ]
                    loads.append((b.add(b.mul(ih, size.w), col0), masks))
                tap = b.add(b.mul(r, kw), s)

                def channel(b: LoopBuilder, ci: SSAValue) -> None:
                    k = b.add(b.mul(b.sub(ci, b.floordiv(k_lo, taps)), taps), tap)
                    ch = b.add(ch0, ci)
                    for v in range(nv):
                        parts = []
                        for offset, masks in loads:
                            raw = [
                                b.insert(
                                    vector.MaskedLoadOp(
                                        x,
                                        [bi, ch, b.index(0), b.add(offset, q * vw)],
                                        masks[q],
                                        zero,
                                        VectorType(f32, [vw]),
                                    )
                                ).results[0]
                                for q in range(sw * v, sw * (v + 1))
                            ]
                            parts.append(raw[0] if sw == 1 else shuffle(b, raw[0], raw[1], even))
                        b.vstore(b.addf(parts[0], parts[1]), panel_buf, [k, v * vw])

                b.for_range(b.floordiv(k_lo, taps), b.floordiv(k_hi, taps), 1, channel)

            b.for_range(
                0, kh, 1, lambda b, r: b.for_range(0, kw, 1, lambda b2, s: window(b2, r, s))
            )

        def panel(b: LoopBuilder, tail: bool) -> None:
            def pack_block(b: LoopBuilder, k_lo: Value, k_hi: Value) -> None:
                if pointwise:
                    # Rows copied as they are only when the output's planes are the input's
                    # (else the general packing, which never reads outside the input).
                    if_else(
                        b,
                        same_planes,
                        lambda pb: pack_pointwise(pb, k_lo, k_hi, tail),
                        lambda gb: pack_im2col(gb, k_lo, k_hi),
                    )
                elif sw in (1, 2):
                    # Rows at least a panel wide: the panel's columns lie on two output rows.
                    if_else(
                        b,
                        b.cmp_index("sge", size.wo, nr),
                        lambda vb: pack_im2col_rows(vb, k_lo, k_hi),
                        lambda sb: pack_im2col(sb, k_lo, k_hi),
                    )
                else:
                    pack_im2col(b, k_lo, k_hi)

            def load_b(b: LoopBuilder, k: SSAValue, j: int, k_lo: Value) -> SSAValue:
                return b.vload(panel_buf, [b.sub(k, k_lo), j * vw], vw)

            def load_a(b: LoopBuilder, m0: SSAValue, k: SSAValue, i: int) -> SSAValue:
                return b.load(w, [g, b.floordiv(m0, mr), k, i])

            def channel(b: LoopBuilder, m0: SSAValue, i: int) -> SSAValue:
                return b.add(co0, b.add(m0, i))

            def bias(b: LoopBuilder, m0: SSAValue, i: int, j: int) -> SSAValue | None:
                if bias_buf is None:
                    return None
                return b.splat(b.load(bias_buf, [channel(b, m0, i)]), vw)

            spec = GemmPanel(
                k_extent=k_extent,
                kc=kc,
                m=m,
                mr=mr,
                cols=nr,
                vw=vw,
                epilogue=epi,
                load_a=load_a,
                load_b=load_b,
                out_index=lambda b, m0, i, j: [bi, channel(b, m0, i), 0, b.add(n0, j * vw)],
                bias=bias,
                pack_block=pack_block,
                lanes_of=(lambda b, j: vector_lanes(b, cols_here, j, vw)) if tail else None,
            )
            gemm_panel(b, spec, b.index(0), 1)

        if_else(
            b,
            b.cmp_index("ult", p, full_panels),
            lambda fb: panel(fb, False),
            lambda tb: panel(tb, True),
        )

    units = body.mul(body.mul(size.batch, groups), panels)
    outputs = body.mul(units, nr)
    runtime_work_units(body, target, outputs, geo.flops_per_output() * m, units, unit)
    body.ret()
    return fn


def vector_lanes(b: LoopBuilder, columns: Value, j: int, vw: int) -> SSAValue:
    """Lanes of vector j (columns j*vw on) among the first `columns`: in [0, vw]."""
    return b.max_index(b.min_index(b.sub(columns, j * vw), vw), 0)


def _depthwise_blocked(
    op: kernel.Conv2dOp, geo: RuntimeConv, target: Target, name: str
) -> func.FuncOp:
    """conv.py's _lower_depthwise_blocked with N, H, W, Ho, Wo read at run time: each tap
    one vector FMA of c channels (pixel vector x the tap's weight vector), units output rows
    of one channel block, DEPTHWISE_BLOCKED_COLUMNS columns per tile (row_tiles)."""
    c = geo.lanes
    kh, kw = geo.rows.taps, geo.cols.taps
    blocks, taps = geo.cout // c, kh * kw
    check_depthwise_blocked_weight(op, geo.cin, geo.cout, geo.group, kh, kw, c)
    fn, body, args = _function(op, name)
    x, w, out = args["input"], args["weight"], args["output"]
    bias_buf = args.get("bias")
    activation = activation_of(op)
    size = Sizes.read(body, x, out)
    interior = geo.cols.interior(body, size.w, size.wo)
    sh, dh, pt = geo.rows.stride, geo.rows.dilation, geo.rows.pad_lo
    sw, dw, pl = geo.cols.stride, geo.cols.dilation, geo.cols.pad_lo

    def unit(b: LoopBuilder, u: SSAValue) -> None:
        bi, cb, oh = decode_runtime(b, u, [size.batch, blocks, size.ho])
        epi = Epilogue(out, args.get("residual"), activation, c)
        bias = None if bias_buf is None else b.vload(bias_buf, [b.mul(cb, c)], c)
        zero = b.splat(0.0, c)
        rows = []
        for r in range(kh):
            ih = b.add(b.mul(oh, sh), r * dh - pt)
            inside = b.cmp_index("ult", ih, size.h)
            rows.append((ih, b.select(inside, b.index(1), b.index(0))))

        def tile(b: LoopBuilder, ow0: SSAValue, cols: int, count: SSAValue | None) -> None:
            iw0 = b.sub(b.mul(ow0, sw), pl)
            columns = tap_columns(b, iw0, cols, sw, [s * dw for s in range(kw)], size.w, count)
            accs = [zero] * cols
            for r, (ih, trips) in enumerate(rows):

                def kernel_row(
                    b: LoopBuilder, _: SSAValue, *sums: SSAValue, r: int = r, ih: SSAValue = ih
                ) -> list[SSAValue]:
                    current = list(sums)
                    for s in range(kw):
                        weight = b.vload(w, [cb, r * kw + s, 0], c)
                        for t in range(cols):
                            iw, ok = columns[t][s]
                            pixel = b.vload(x, [bi, cb, ih, iw, 0], c)
                            if ok is not None:
                                pixel = b.select(ok, pixel, zero)
                            current[t] = b.fma(pixel, weight, current[t])
                    return current

                accs = b.for_range(0, trips, 1, kernel_row, accs)

            def column(b: LoopBuilder, t: int) -> None:
                epi.finish(b, accs[t], [bi, cb, oh, b.add(ow0, t), 0], c, bias)

            column_stores(b, cols, count, column)

        row_tiles(b, size.wo, interior, [DEPTHWISE_BLOCKED_COLUMNS], tile)

    units = body.mul(body.mul(size.batch, size.ho), blocks)
    outputs = body.mul(units, size.wo)
    runtime_work_units(body, target, outputs, 2 * taps * c, units, unit)
    body.ret()
    return fn


def _depthwise_nchw(
    op: kernel.Conv2dOp, geo: RuntimeConv, target: Target, name: str
) -> func.FuncOp:
    """Depthwise conv of NCHW planes (weight [C, kh*kw]) at run-time sizes, vectorized over
    output columns: units are planes; an output row's columns in chunks of
    DEPTHWISE_ROW_VECTORS vectors (independent FMA chains), then single vectors, each tap
    one FMA of the input vector (stride 2: the even lanes of 2 x VW inputs) and the tap's
    weight splat. A chunk whose windows all lie inside the row loads plainly; else each
    load is masked to the inputs inside the row (zero elsewhere) and the row's last vector
    stores its columns only. Rows with every kernel row inside the input unroll them (the
    weights in registers), others loop over the rows inside. Measured 1.6-3.1x of the
    static band-plane kernel (docs/architecture.md)."""
    vw = target.vector_width
    channels = geo.cout
    kh, kw = geo.rows.taps, geo.cols.taps
    if (
        geo.group != channels
        or geo.cin != channels
        or memref_shape(op.weight)
        != (
            channels,
            kh * kw,
        )
    ):
        raise ValueError(
            f"kernel.conv2d: depthwise weight {memref_shape(op.weight)} does not match "
            f"{channels} channels of {kh}x{kw} (group {geo.group})"
        )
    fn, body, args = _function(op, name)
    x, w, out = args["input"], args["weight"], args["output"]
    bias_buf = args.get("bias")
    activation = activation_of(op)
    size = Sizes.read(body, x, out)
    sw, dw, pl = geo.cols.stride, geo.cols.dilation, geo.cols.pad_lo
    # Stride 2 loads 2 x VW inputs per tap: one past the last window's last input.
    lo, hi = geo.cols.interior(body, size.w, size.wo, 1 if sw == 2 else 0)
    even = list(range(0, 2 * vw, 2))

    sh, dh, pt = geo.rows.stride, geo.rows.dilation, geo.rows.pad_lo

    def plane(b: LoopBuilder, u: SSAValue) -> None:
        nb, ch = decode_runtime(b, u, [size.batch, channels])
        taps = [b.splat(b.load(w, [ch, t]), vw) for t in range(kh * kw)]
        bias = None if bias_buf is None else b.splat(b.load(bias_buf, [ch]), vw)
        epi = Epilogue(out, args.get("residual"), activation, vw)
        zero = b.splat(0.0, vw)

        def row(b: LoopBuilder, oh: SSAValue) -> None:
            # Kernel rows inside the input: r in [r_lo, r_hi) (h0 may be negative).
            h0 = b.sub(b.mul(oh, sh), pt)
            above = b.max_index(b.sub(0, h0), 0)
            r_lo = b.min_index(b.floordiv(b.add(above, dh - 1), dh), kh)
            below = b.max_index(b.sub(size.h, h0), 0)
            r_hi = b.max_index(b.min_index(b.floordiv(b.add(below, dh - 1), dh), kh), r_lo)
            all_rows = b.insert(
                arith.AndIOp(b.cmp_index("eq", r_lo, 0), b.cmp_index("eq", r_hi, kh))
            ).results[0]

            def chunk(
                b: LoopBuilder, ow0: SSAValue, nv: int, checked: bool, unrolled: bool
            ) -> None:
                """nv vectors of output columns from ow0 (independent FMA chains)."""
                firsts = [b.add(ow0, j * vw) for j in range(nv)]
                counts = [b.max_index(b.min_index(b.sub(size.wo, f), vw), 0) for f in firsts]
                # Per (tap column, vector): the first raw input and its loads' masks.
                reads: list[list[tuple[SSAValue, list[SSAValue | None]]]] = []
                for s in range(kw):
                    per_vector = []
                    for j in range(nv):
                        start = b.add(b.sub(b.mul(firsts[j], sw), pl), s * dw)
                        masks: list[SSAValue | None] = [None] * sw
                        if checked:
                            lo_q = b.max_index(b.sub(0, start), 0)
                            hi_q = b.min_index(b.sub(size.w, start), b.mul(counts[j], sw))
                            hi_q = b.max_index(hi_q, lo_q)
                            masks = [
                                b.insert(
                                    arith.XOrIOp(
                                        _prefix_mask(b, b.sub(hi_q, q * vw), vw),
                                        _prefix_mask(b, b.sub(lo_q, q * vw), vw),
                                    )
                                ).results[0]
                                for q in range(sw)
                            ]
                        per_vector.append((start, masks))
                    reads.append(per_vector)

                def kernel_row(
                    b: LoopBuilder, r: Value, weights: Sequence[SSAValue], accs: list[SSAValue]
                ) -> list[SSAValue]:
                    ih = b.add(h0, b.mul(r, dh))
                    accs = list(accs)
                    for s in range(kw):
                        for j in range(nv):
                            start, masks = reads[s][j]
                            raws = []
                            for q in range(sw):
                                at = [nb, ch, ih, b.add(start, q * vw)]
                                mask = masks[q]
                                if mask is None:
                                    raws.append(b.vload(x, at, vw))
                                else:
                                    load = vector.MaskedLoadOp(
                                        x, at, mask, zero, VectorType(f32, [vw])
                                    )
                                    raws.append(b.insert(load).results[0])
                            v = raws[0] if sw == 1 else shuffle(b, raws[0], raws[1], even)
                            accs[j] = b.fma(v, weights[s], accs[j])
                    return accs

                accs = [bias if bias is not None else zero] * nv
                if unrolled:
                    for r in range(kh):
                        accs = kernel_row(b, r, taps[r * kw : (r + 1) * kw], accs)
                else:

                    def looped(lb: LoopBuilder, r: SSAValue, *values: SSAValue) -> list[SSAValue]:
                        base = lb.mul(r, kw)
                        weights = [
                            lb.splat(lb.load(w, [ch, lb.add(base, s)]), vw) for s in range(kw)
                        ]
                        return kernel_row(lb, r, weights, list(values))

                    accs = b.for_range(r_lo, r_hi, 1, looped, accs)
                for j in range(nv):
                    lanes = counts[j] if checked else vw
                    epi.finish(b, accs[j], [nb, ch, oh, firsts[j]], lanes, None)

            def columns(b: LoopBuilder, unrolled: bool) -> None:
                def step(nv: int) -> Callable[[LoopBuilder, SSAValue], None]:
                    def one(cb: LoopBuilder, ow0: SSAValue) -> None:
                        inside = cb.insert(
                            arith.AndIOp(
                                cb.cmp_index("sge", ow0, lo),
                                cb.cmp_index("sle", cb.add(ow0, nv * vw), hi),
                            )
                        ).results[0]
                        if_else(
                            cb,
                            inside,
                            lambda ib: chunk(ib, ow0, nv, False, unrolled),
                            lambda eb: chunk(eb, ow0, nv, True, unrolled),
                        )

                    return one

                wide = DEPTHWISE_ROW_VECTORS * vw
                wide_end = b.mul(b.floordiv(size.wo, wide), wide)
                b.for_range(0, wide_end, wide, step(DEPTHWISE_ROW_VECTORS))
                b.for_range(wide_end, size.wo, vw, step(1))

            if_else(b, all_rows, lambda ib: columns(ib, True), lambda eb: columns(eb, False))

        b.for_range(0, size.ho, 1, row)

    units = body.mul(size.batch, channels)
    outputs = body.mul(units, body.mul(size.ho, size.wo))
    runtime_work_units(body, target, outputs, 2 * kh * kw, units, plane)
    body.ret()
    return fn


def _prefix_mask(b: LoopBuilder, count: SSAValue, vw: int) -> SSAValue:
    """The first `count` of `vw` lanes (vector.create_mask clamps count to [0, vw])."""
    return b.insert(vector.CreateMaskOp([count], VectorType(i1, [vw]))).results[0]


# -- pooling ------------------------------------------------------------------------------------
@lowering(kernel.PoolOp, runtime_extents=True)
def lower_pool_runtime(op: kernel.PoolOp, target: Target, name: str) -> func.FuncOp:
    """Max/average pooling with `?` in N, H, W: channel-blocked [N, C/c, H, W, c] maps
    (`_blocked_pool`) or NCHW planes (`_nchw_pool`)."""
    in_shape, out_shape = memref_shape(op.input), memref_shape(op.output)
    blocked = len(in_shape) == 5
    static_dims = (1, 4) if blocked else (1,)
    if (
        len(in_shape) not in (4, 5)
        or len(out_shape) != len(in_shape)
        or any(is_dynamic(in_shape[d]) or in_shape[d] != out_shape[d] for d in static_dims)
        or op.input.type.get_element_type() != f32  # type: ignore[attr-defined]
        or op.output.type.get_element_type() != f32  # type: ignore[attr-defined]
    ):
        raise NotImplementedError(
            "kernel.pool with runtime extents pools float32 NCHW or channel-blocked "
            f"[N, C/c, H, W, c] maps with `?` in N, H, W only: {op.input.type} -> "
            f"{op.output.type}"
        )
    kh, kw = int_values(op.kernel_shape)
    sh, sw = int_values(op.strides)
    pt, pl, pb, pr = int_values(op.pads)
    if min(kh, kw, sh, sw) < 1 or min(pt, pl, pb, pr) < 0 or max(pt, pb) >= kh or max(pl, pr) >= kw:
        raise ValueError(
            f"kernel.pool: invalid kernel_shape {[kh, kw]}, strides {[sh, sw]} or pads "
            f"{[pt, pl, pb, pr]} (pads must be smaller than the kernel)"
        )
    pool = Pool(
        op.kind.data == "max",
        op.count_include_pad is not None,
        Window(kh, sh, 1, pt, pb),
        Window(kw, sw, 1, pl, pr),
    )
    if blocked:
        return _blocked_pool(op, pool, target, name)
    return _nchw_pool(op, pool, target, name)


@dataclass(frozen=True)
class Pool:
    is_max: bool
    include_pad: bool
    rows: Window
    cols: Window

    def window_rows(
        self, b: LoopBuilder, oh: SSAValue, h: Value
    ) -> tuple[SSAValue, SSAValue, SSAValue, SSAValue]:
        """(first row h0, r_lo, r_hi, divisor rows) of output row oh: the window's rows inside
        the input are h0 + [r_lo, r_hi); an average divides by their count, or with
        count_include_pad by the rows up to the padded border."""
        kh = self.rows.taps
        h0 = b.sub(b.mul(oh, self.rows.stride), self.rows.pad_lo)
        # h0 may be negative (signed min/max).
        r_lo = b.min_index(b.max_index(b.sub(b.index(0), h0), 0), kh)
        r_hi = b.max_index(b.min_index(b.sub(h, h0), kh), r_lo)
        if self.include_pad:
            rows = b.sub(b.min_index(b.add(h0, kh), b.add(h, self.rows.pad_hi)), h0)
        else:
            rows = b.sub(r_hi, r_lo)
        return h0, r_lo, r_hi, rows

    def column_taps(self, b: LoopBuilder, start: SSAValue, w: Value) -> SSAValue:
        """Taps of the window column range from `start` that an average divides by."""
        kw = self.cols.taps
        if self.include_pad:  # up to the padded border
            return b.sub(b.min_index(b.add(start, kw), b.add(w, self.cols.pad_hi)), start)
        return b.sub(b.min_index(b.add(start, kw), w), b.max_index(start, 0))


def _blocked_pool(op: kernel.PoolOp, pool: Pool, target: Target, name: str) -> func.FuncOp:
    """pooling.py's _blocked_pool at run-time sizes: every tap one vector load of a pixel's
    c channels; units output rows of one channel block; window rows inside the input a
    loop, columns BLOCKED_POOL_COLUMNS per tile (row_tiles; a checked tile's taps outside
    the row read the pool's identity)."""
    in_shape = memref_shape(op.input)
    kh, kw = pool.rows.taps, pool.cols.taps
    sw, pl = pool.cols.stride, pool.cols.pad_lo
    is_max = pool.is_max
    blocks, c = in_shape[1], in_shape[4]
    fn, b = kernel_function(name, [op.input.type, op.output.type])  # type: ignore[list-item]
    src, dst = fn.args[:2]
    size = Sizes.read(b, src, dst)
    interior = pool.cols.interior(b, size.w, size.wo)
    monoid = simd.Monoid("max" if is_max else "sum", f32)

    def row(b: LoopBuilder, u: SSAValue) -> None:
        nb, cb, oh = decode_runtime(b, u, [size.batch, blocks, size.ho])
        h0, r_lo, r_hi, rows = pool.window_rows(b, oh, size.h)
        identity = monoid.init(b, c)

        def tile(b: LoopBuilder, ow0: SSAValue, cols: int, count: SSAValue | None) -> None:
            w0 = b.sub(b.mul(ow0, sw), pl)
            columns = tap_columns(b, w0, cols, sw, list(range(kw)), size.w, count)

            def window_row(b: LoopBuilder, r: SSAValue, *accs: SSAValue) -> list[SSAValue]:
                ih, current = b.add(h0, r), list(accs)
                for s in range(kw):
                    for t in range(cols):
                        iw, ok = columns[t][s]
                        pixel = b.vload(src, [nb, cb, ih, iw, 0], c)
                        if ok is not None:
                            pixel = b.select(ok, pixel, identity)
                        current[t] = monoid.combine(b, pixel, current[t])
                return current

            accs = b.for_range(r_lo, r_hi, 1, window_row, [identity] * cols)

            def column(b: LoopBuilder, t: int) -> None:
                acc = accs[t]
                if not is_max:
                    start = b.add(w0, t * sw)
                    taps = kw if count is None else pool.column_taps(b, start, size.w)
                    acc = b.divf(acc, b.splat(index_to_f32(b, b.mul(rows, taps)), c))
                b.vstore(acc, dst, [nb, cb, oh, b.add(ow0, t), 0])

            column_stores(b, cols, count, column)

        row_tiles(b, size.wo, interior, [BLOCKED_POOL_COLUMNS], tile)

    units = b.mul(b.mul(size.batch, size.ho), blocks)
    outputs = b.mul(units, size.wo)
    runtime_work_units(b, target, outputs, kh * kw * c, units, row)
    b.ret()
    return fn


def _nchw_pool(op: kernel.PoolOp, pool: Pool, target: Target, name: str) -> func.FuncOp:
    """Pooling of NCHW planes at run-time sizes (the stem's max pool after a 3-channel
    conv): units are planes, as the static kernel's. Interior columns (whole windows inside the
    row) are vectors of VW outputs: stride 1 loads each tap's VW inputs, stride 2 loads
    2 x VW and keeps the even lanes (shuffle); the last vector overlaps the previous one
    instead of a scalar tail (outputs computed twice are the same values). Columns whose
    windows reach into the padding, and rows narrower than a vector, are scalar, their taps
    unrolled with clamped reads. Other strides are scalar throughout."""
    kh, kw = pool.rows.taps, pool.cols.taps
    sw, pl = pool.cols.stride, pool.cols.pad_lo
    channels = memref_shape(op.input)[1]
    vw = target.vector_width if sw in (1, 2) else 1
    fn, b = kernel_function(name, [op.input.type, op.output.type])  # type: ignore[list-item]
    src, dst = fn.args[:2]
    size = Sizes.read(b, src, dst)
    # A 1-wide stride-2 window reads one input past each vector's last window.
    margin = Window(kw + (1 if sw == 2 and kw == 1 else 0), sw, 1, pl, pool.cols.pad_hi)
    lo, hi = margin.interior(b, size.w, size.wo)
    monoid = simd.Monoid("max" if pool.is_max else "sum", f32)
    even, odd = list(range(0, 2 * vw, 2)), list(range(1, 2 * vw, 2))

    def plane(b: LoopBuilder, u: SSAValue) -> None:
        nb, ch = decode_runtime(b, u, [size.batch, channels])
        b.for_range(0, size.ho, 1, lambda rb, oh: row(rb, nb, ch, oh))

    def row(b: LoopBuilder, nb: SSAValue, ch: SSAValue, oh: SSAValue) -> None:
        h0, r_lo, r_hi, rows = pool.window_rows(b, oh, size.h)
        # Rows whose whole window is inside the input unroll it (as the static interior).
        inside = b.insert(
            arith.AndIOp(b.cmp_index("eq", r_lo, 0), b.cmp_index("eq", r_hi, kh))
        ).results[0]
        if_else(
            b,
            inside,
            lambda ib: columns(ib, nb, ch, oh, h0, r_lo, r_hi, rows, True),
            lambda eb: columns(eb, nb, ch, oh, h0, r_lo, r_hi, rows, False),
        )

    def columns(
        b: LoopBuilder,
        nb: SSAValue,
        ch: SSAValue,
        oh: SSAValue,
        h0: SSAValue,
        r_lo: SSAValue,
        r_hi: SSAValue,
        rows: SSAValue,
        unrolled: bool,
    ) -> None:
        def vector_at(b: LoopBuilder, ow0: SSAValue) -> None:
            w0 = b.sub(b.mul(ow0, sw), pl)

            def pair(b: LoopBuilder, ih: SSAValue, at: Value, lanes: list[int]) -> SSAValue:
                """The even or odd lanes of 2 x VW inputs from column w0 + at."""
                start = b.add(w0, at)
                halves = [b.vload(src, [nb, ch, ih, b.add(start, q * vw)], vw) for q in (0, 1)]
                return shuffle(b, halves[0], halves[1], lanes)

            def window_row(b: LoopBuilder, r: Value, acc: SSAValue) -> list[SSAValue]:
                ih = b.add(h0, r)
                if sw == 1:
                    taps = [b.vload(src, [nb, ch, ih, b.add(w0, s)], vw) for s in range(kw)]
                else:
                    # Window columns 2q and 2q+1 are the even and odd lanes of one pair; an
                    # odd kernel's last column the odd lanes of the pair one column early
                    # (no read past the window: pooling.py's stride-2 interior).
                    taps = []
                    for q in range(kw // 2):
                        taps += [pair(b, ih, 2 * q, even), pair(b, ih, 2 * q, odd)]
                    if kw % 2:
                        taps.append(pair(b, ih, kw - 2, odd) if kw > 1 else pair(b, ih, 0, even))
                for v in taps:
                    acc = monoid.combine(b, v, acc)
                return [acc]

            if unrolled:
                acc = monoid.init(b, vw)
                for r in range(kh):
                    acc = window_row(b, r, acc)[0]
            else:
                acc = b.for_range(r_lo, r_hi, 1, window_row, [monoid.init(b, vw)])[0]
            if not pool.is_max:
                acc = b.divf(acc, b.splat(index_to_f32(b, b.mul(rows, kw)), vw))
            b.vstore(acc, dst, [nb, ch, oh, ow0])

        def scalar_at(b: LoopBuilder, ow: SSAValue) -> None:
            """One output whose window may reach into the padding: its taps unrolled, each
            read at a clamped column and replaced by the identity outside the row."""
            w0 = b.sub(b.mul(ow, sw), pl)
            taps = tap_columns(b, w0, 1, 0, list(range(kw)), size.w, b.index(1))[0]
            identity = monoid.init(b, 1)

            def window_row(b: LoopBuilder, r: SSAValue, acc: SSAValue) -> list[SSAValue]:
                ih = b.add(h0, r)
                for iw, ok in taps:
                    value = b.load(src, [nb, ch, ih, iw])
                    assert ok is not None
                    acc = monoid.combine(b, b.select(ok, value, identity), acc)
                return [acc]

            acc = b.for_range(r_lo, r_hi, 1, window_row, [identity])[0]
            if not pool.is_max:
                count = b.mul(rows, pool.column_taps(b, w0, size.w))
                acc = b.divf(acc, index_to_f32(b, count))
            b.store(acc, dst, [nb, ch, oh, ow])

        if vw == 1:
            b.for_range(0, size.wo, 1, scalar_at)
            return
        # Vectors over [lo, hi) when it holds one, else every column scalar.
        wide = b.cmp_index("sge", b.sub(hi, lo), vw)
        vector_end = b.select(wide, hi, lo)
        full_end = b.sub(vector_end, b.rem(b.sub(vector_end, lo), vw))
        b.for_range(0, lo, 1, scalar_at)
        b.for_range(lo, full_end, vw, vector_at)
        overlap = b.cmp_index("slt", full_end, vector_end)
        b.if_(overlap, lambda ob: vector_at(ob, ob.sub(vector_end, vw)))
        b.for_range(vector_end, size.wo, 1, scalar_at)

    units = b.mul(size.batch, channels)
    outputs = b.mul(units, b.mul(size.ho, size.wo))
    runtime_work_units(b, target, outputs, kh * kw, units, plane)
    b.ret()
    return fn
