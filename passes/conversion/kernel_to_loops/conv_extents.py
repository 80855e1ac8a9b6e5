"""kernel.conv2d and kernel.pool with runtime extents (issue 10): `?` in N, H and W.

The input is [N, C, H, W] or channel-blocked [N, C/c, H, W, c] and the output [N, K, Ho, Wo]
(or [N, K/c, Ho, Wo, c]) with N, H, W, Ho and Wo `?`; channels, weights (their compile-time
packing), bias, kernel size, strides, pads and dilations are static. Sizes are read with
memref.dim: N, H, W from the input, Ho, Wo from the output (the caller's contract is that they
are the conv's output size; the kernels read the input only inside [0, H) x [0, W) whatever
they are, so a wrong Ho/Wo gives wrong values, never a read or write out of bounds).

The kernels are the static ones' (conv.py, pooling.py) with the geometry decided at run
time. An output row is cut into column tiles of the static kernel's register width: the
static kernel decides per tile, at compile time, which taps fall in the padding; here the
columns whose windows lie inside the input, [interior_lo, interior_hi), are computed once
per kernel call, and each full tile picks at run time between its unchecked version
(interior: plain loads, as the static kernel's interior) and a checked one (each column's
tap reads a clamped address and keeps 0 / the pool's identity where it falls outside the
row; the validity is per column and tap, so it is hoisted out of the channel loops). The
row's remainder (fewer columns than a tile) is one checked tile per set bit of its width
(8, 4, 2, 1). Kernel rows outside the input run zero times, as in the static kernels.

Kernels: the channel-lanes direct conv (layout conv_lanes_panel{NR}; NCHW or blocked), the
blocked depthwise conv (depthwise_blocked{c}) and the blocked max/average pool. Units
(batch x channel blocks x output rows) run under scf.parallel, as the static kernels'.
Other convs and pools with `?` dims (the NCHW GEMM conv, NCHW depthwise, NCHW pools) are
refused with the op's types.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xdsl.dialects import arith, func
from xdsl.dialects.builtin import DenseArrayBase, f32
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.extents import is_dynamic
from ember.dialects.weight_layouts import (
    BLOCKED_MAX_ACCUMULATORS,
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
    LANES_MAX_UNROLLED_TAPS,
    LANES_ROWS_FIRST_MAX_WEIGHT_BYTES,
    transpose_square,
)
from ember.passes.conversion.kernel_to_loops.flat_access import index_to_f32
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


def _ints(attr: DenseArrayBase) -> list[int]:
    return [int(v) for v in attr.get_values()]


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

    def interior(self, b: LoopBuilder, size: Value, out: Value) -> tuple[Value, Value]:
        """[lo, hi): the outputs (of `out`) whose windows lie inside [0, size). Computed with
        non-negative operands only (index division is unsigned)."""
        lo = b.min_index(ceil_div(self.pad_lo, self.stride), out)
        # o*stride - pad_lo + reach <= size - 1  <=>  o < (size + pad_lo - reach - 1) / s + 1
        shifted = b.max_index(b.add(size, self.pad_lo + self.stride - 1), self.reach)
        hi = b.floordiv(b.sub(shifted, self.reach), self.stride)
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


# (builder, first column, columns, checked) -> None: one tile of an output row.
Tile = Callable[[LoopBuilder, SSAValue, int, bool], None]


def row_tiles(
    b: LoopBuilder, wo: Value, interior: tuple[Value, Value], width: int, tile: Tile
) -> None:
    """An output row of `wo` columns in tiles of `width`: full tiles in a loop, each the
    unchecked version where its columns are all interior, else the checked one; then the
    remainder as one checked tile per set bit of its width."""
    lo, hi = interior
    full_end = b.mul(b.floordiv(wo, width), width)

    def full(fb: LoopBuilder, ow0: SSAValue) -> None:
        after_lo = fb.cmp_index("sge", ow0, lo)
        inside = fb.insert(
            arith.AndIOp(after_lo, fb.cmp_index("sle", fb.add(ow0, width), hi))
        ).results[0]
        if_else(
            fb,
            inside,
            lambda ib: tile(ib, ow0, width, False),
            lambda cb: tile(cb, ow0, width, True),
        )

    b.for_range(0, full_end, width, full)
    rest = b.sub(wo, full_end)
    bit = 1 << (width - 1).bit_length() - 1 if width > 1 else 0
    while bit:
        # The bit-`bit` tile starts after the remainder's higher bits.
        at = b.add(full_end, b.mul(b.floordiv(rest, 2 * bit), 2 * bit))
        taken = b.cmp_index("ne", b.rem(b.floordiv(rest, bit), 2), 0)
        b.if_(taken, lambda tb, at=at, bit=bit: tile(tb, at, bit, True))
        bit //= 2


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
        kh, kw = _ints(op.kernel_shape)
        sh, sw = _ints(op.strides)
        dh, dw = _ints(op.dilations)
        pt, pl, pb, pr = _ints(op.pads)
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
    else:
        raise NotImplementedError(
            f"kernel.conv2d with runtime extents runs the channel-lanes and the blocked "
            f"depthwise kernels only, not weight layout '{layout}': {op.input.type} -> "
            f"{op.output.type}"
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

        def x_at(ci: SSAValue | tuple[SSAValue, SSAValue], ih: SSAValue, iw: Value) -> list:
            if isinstance(ci, tuple):
                return [bi, ci[0], ih, iw, ci[1]]
            return [bi, ci, ih, iw]

        def tile(b: LoopBuilder, ow0: SSAValue, cols: int, checked: bool) -> None:
            iw0 = b.sub(b.mul(ow0, sw), pl)
            # Input column of each (column, tap); checked: clamped to 0 with its validity.
            columns: list[list[tuple[SSAValue, SSAValue | None]]] = []
            for i in range(cols):
                taps = []
                for s in range(kw):
                    iw = b.add(iw0, i * sw + s * dw)
                    if checked:
                        ok = b.cmp_index("ult", iw, size.w)
                        taps.append((b.select(ok, iw, b.index(0)), ok))
                    else:
                        taps.append((iw, None))
                columns.append(taps)
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
                            a = b.load(x, x_at(ci, ih, iw))
                            if ok is not None:
                                a = b.select(ok, a, scalar_zero)
                            a = b.splat(a, vw)
                            for j in range(nvec):
                                values[i * nvec + j] = b.fma(a, weights[j], values[i * nvec + j])

                def unrolled(b: LoopBuilder, ci: SSAValue, *values: SSAValue) -> list[SSAValue]:
                    current = list(values)
                    for q in range(unroll):
                        step(b, ci if q == 0 else b.add(ci, q), current)
                    return current

                def single(b: LoopBuilder, ci: SSAValue, *values: SSAValue) -> list[SSAValue]:
                    current = list(values)
                    step(b, ci, current)
                    return current

                if geo.blocked:

                    def lanes_of(
                        b: LoopBuilder, cib: SSAValue, *values: SSAValue
                    ) -> list[SSAValue]:
                        def lanes(b: LoopBuilder, lane: SSAValue, *sums: SSAValue) -> list:
                            current = list(sums)
                            for q in range(lane_unroll):
                                step(b, (cib, lane if q == 0 else b.add(lane, q)), current)
                            return current

                        return b.for_range(0, vw, lane_unroll, lanes, list(values))

                    accs = b.for_range(0, channels, 1, lanes_of, accs)
                elif unroll > 1:
                    main = b.sub(channels, b.rem(channels, unroll))
                    accs = b.for_range(0, main, unroll, unrolled, accs)
                    accs = b.for_range(main, channels, 1, single, accs)
                else:
                    accs = b.for_range(0, channels, 1, single, accs)

            if geo.blocked:
                for j in range(nvec):
                    cb_out = b.add(b.mul(cb, nvec), j)

                    def store(b: LoopBuilder, j: int = j, cb_out: SSAValue = cb_out) -> None:
                        bias = None
                        if bias_buf is not None:
                            bias = b.vload(bias_buf, [b.add(co0, j * vw)], vw)
                        for i in range(cols):
                            at = [bi, cb_out, oh, b.add(ow0, i), 0]
                            epi.finish(b, accs[i * nvec + j], at, vw, bias)

                    if j and geo.cout % nr:
                        in_range = b.cmp_index("ult", b.add(co0, j * vw), geo.cout)
                        if_else(b, in_range, store, lambda b: None)
                    else:
                        store(b)
                return

            assert rows_scratch is not None
            for j in range(nvec):
                columns_j = [accs[i * nvec + j] for i in range(cols)] + [zero] * (vw - cols)
                for c, row in enumerate(transpose_square(b, columns_j)):
                    b.vstore(row, rows_scratch, [j * vw + c, 0])

            def channel(b: LoopBuilder, c: SSAValue) -> None:
                co = b.add(co0, c)
                bias = None if bias_buf is None else b.splat(b.load(bias_buf, [co]), vw)
                lanes = b.vload(rows_scratch, [c, 0], vw)
                epi.finish(b, lanes, [bi, co, oh, ow0], cols, bias)

            if geo.cout % nr:
                b.for_range(0, b.min_index(nr, b.sub(geo.cout, co0)), 1, channel)
            else:
                b.for_range(0, nr, 1, channel)

        row_tiles(b, size.wo, interior, mr, tile)

    units = body.mul(body.mul(size.batch, size.ho), blocks)
    outputs = body.mul(units, size.wo)
    runtime_work_units(body, target, outputs, geo.flops_per_output() * nr, units, unit)
    body.ret()
    return fn


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

        def panel(b: LoopBuilder, tail: bool) -> None:
            def pack_block(b: LoopBuilder, k_lo: Value, k_hi: Value) -> None:
                if pointwise:
                    pack_pointwise(b, k_lo, k_hi, tail)
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
    if (
        not geo.group == geo.cin == geo.cout
        or memref_shape(op.weight) != (blocks, taps, c)
        or op.weight_layout.data != depthwise_blocked_layout(c)
    ):
        raise ValueError(
            f"kernel.conv2d: blocked depthwise weight {memref_shape(op.weight)} with layout "
            f"'{op.weight_layout.data}' does not match {geo.cout} channels of {kh}x{kw} in "
            f"blocks of {c} (group {geo.group})"
        )
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

        def tile(b: LoopBuilder, ow0: SSAValue, count: int, checked: bool) -> None:
            iw0 = b.sub(b.mul(ow0, sw), pl)
            columns = []
            for t in range(count):
                taps_t = []
                for s in range(kw):
                    iw = b.add(iw0, t * sw + s * dw)
                    if checked:
                        ok = b.cmp_index("ult", iw, size.w)
                        taps_t.append((b.select(ok, iw, b.index(0)), ok))
                    else:
                        taps_t.append((iw, None))
                columns.append(taps_t)
            accs = [zero] * count
            for r, (ih, trips) in enumerate(rows):

                def kernel_row(
                    b: LoopBuilder, _: SSAValue, *sums: SSAValue, r: int = r, ih: SSAValue = ih
                ) -> list[SSAValue]:
                    current = list(sums)
                    for s in range(kw):
                        weight = b.vload(w, [cb, r * kw + s, 0], c)
                        for t in range(count):
                            iw, ok = columns[t][s]
                            pixel = b.vload(x, [bi, cb, ih, iw, 0], c)
                            if ok is not None:
                                pixel = b.select(ok, pixel, zero)
                            current[t] = b.fma(pixel, weight, current[t])
                    return current

                accs = b.for_range(0, trips, 1, kernel_row, accs)
            for t, acc in enumerate(accs):
                epi.finish(b, acc, [bi, cb, oh, b.add(ow0, t), 0], c, bias)

        row_tiles(b, size.wo, interior, DEPTHWISE_BLOCKED_COLUMNS, tile)

    units = body.mul(body.mul(size.batch, size.ho), blocks)
    outputs = body.mul(units, size.wo)
    runtime_work_units(body, target, outputs, 2 * taps * c, units, unit)
    body.ret()
    return fn


# -- pooling ------------------------------------------------------------------------------------
@lowering(kernel.PoolOp, runtime_extents=True)
def lower_pool_runtime(op: kernel.PoolOp, target: Target, name: str) -> func.FuncOp:
    """Max/average pooling of channel-blocked [N, C/c, H, W, c] maps with `?` in N, H, W
    (pooling.py's _blocked_pool at run-time sizes): every tap one vector load of a pixel's
    c channels; units output rows of one channel block; window rows inside the input a
    loop, columns BLOCKED_POOL_COLUMNS per tile (row_tiles; a checked tile's taps outside
    the row read the pool's identity). NCHW pools with `?` dims are refused."""
    in_shape, out_shape = memref_shape(op.input), memref_shape(op.output)
    if (
        len(in_shape) != 5
        or len(out_shape) != 5
        or any(is_dynamic(in_shape[d]) or in_shape[d] != out_shape[d] for d in (1, 4))
        or op.input.type.get_element_type() != f32  # type: ignore[attr-defined]
        or op.output.type.get_element_type() != f32  # type: ignore[attr-defined]
    ):
        raise NotImplementedError(
            "kernel.pool with runtime extents pools float32 channel-blocked [N, C/c, H, W, c] "
            f"maps with `?` in N, H, W only: {op.input.type} -> {op.output.type}"
        )
    kh, kw = _ints(op.kernel_shape)
    sh, sw = _ints(op.strides)
    pt, pl, pb, pr = _ints(op.pads)
    if min(kh, kw, sh, sw) < 1 or min(pt, pl, pb, pr) < 0 or max(pt, pb) >= kh or max(pl, pr) >= kw:
        raise ValueError(
            f"kernel.pool: invalid kernel_shape {[kh, kw]}, strides {[sh, sw]} or pads "
            f"{[pt, pl, pb, pr]} (pads must be smaller than the kernel)"
        )
    is_max = op.kind.data == "max"
    include_pad = op.count_include_pad is not None
    blocks, c = in_shape[1], in_shape[4]
    cols_window = Window(kw, sw, 1, pl, pr)
    fn, b = kernel_function(name, [op.input.type, op.output.type])  # type: ignore[list-item]
    src, dst = fn.args[:2]
    size = Sizes.read(b, src, dst)
    interior = cols_window.interior(b, size.w, size.wo)
    monoid = simd.Monoid("max" if is_max else "sum", f32)

    def row(b: LoopBuilder, u: SSAValue) -> None:
        nb, cb, oh = decode_runtime(b, u, [size.batch, blocks, size.ho])
        h0 = b.sub(b.mul(oh, sh), pt)
        # Window rows inside the input: r in [r_lo, r_hi) (h0 may be negative: signed).
        r_lo = b.min_index(b.max_index(b.sub(b.index(0), h0), 0), kh)
        r_hi = b.max_index(b.min_index(b.sub(size.h, h0), kh), r_lo)
        if include_pad:
            rows = b.sub(b.min_index(b.add(h0, kh), b.add(size.h, pb)), h0)
        else:
            rows = b.sub(r_hi, r_lo)
        identity = monoid.init(b, c)

        def tile(b: LoopBuilder, ow0: SSAValue, count: int, checked: bool) -> None:
            w0 = b.sub(b.mul(ow0, sw), pl)
            columns = []
            for t in range(count):
                taps_t = []
                for s in range(kw):
                    iw = b.add(w0, t * sw + s)
                    if checked:
                        ok = b.cmp_index("ult", iw, size.w)
                        taps_t.append((b.select(ok, iw, b.index(0)), ok))
                    else:
                        taps_t.append((iw, None))
                columns.append(taps_t)

            def window_row(b: LoopBuilder, r: SSAValue, *accs: SSAValue) -> list[SSAValue]:
                ih, current = b.add(h0, r), list(accs)
                for s in range(kw):
                    for t in range(count):
                        iw, ok = columns[t][s]
                        pixel = b.vload(src, [nb, cb, ih, iw, 0], c)
                        if ok is not None:
                            pixel = b.select(ok, pixel, identity)
                        current[t] = monoid.combine(b, pixel, current[t])
                return current

            accs = b.for_range(r_lo, r_hi, 1, window_row, [identity] * count)
            for t, acc in enumerate(accs):
                if not is_max:
                    start = b.add(w0, t * sw)
                    if not checked:
                        taps: Value = kw
                    elif include_pad:  # up to the padded border
                        taps = b.sub(b.min_index(b.add(start, kw), b.add(size.w, pr)), start)
                    else:
                        taps = b.sub(b.min_index(b.add(start, kw), size.w), b.max_index(start, 0))
                    acc = b.divf(acc, b.splat(index_to_f32(b, b.mul(rows, taps)), c))
                b.vstore(acc, dst, [nb, cb, oh, b.add(ow0, t), 0])

        row_tiles(b, size.wo, interior, BLOCKED_POOL_COLUMNS, tile)

    units = b.mul(b.mul(size.batch, size.ho), blocks)
    outputs = b.mul(units, size.wo)
    runtime_work_units(b, target, outputs, kh * kw * c, units, row)
    b.ret()
    return fn
