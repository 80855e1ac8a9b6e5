"""Loop lowering of kernel.pool: 2-D max/average pooling over NCHW planes.

Each output plane is split, statically, into interior rows/columns (the window lies inside
the input) and border ones (it overlaps padding or, with ceil_mode, runs past it). Interior
windows are fully unrolled with no bounds checks and, along the output width, computed
`vector_width` outputs at a time: stride 1 reads the window columns with plain vector loads,
stride 2 loads two vectors per window column pair and deinterleaves them with vector.shuffle.
Border windows clip their loops to the input, so padding never has to be materialized.
The interior columns after the last full vector block are one more vector block overlapping
it (recomputing a few outputs), not a scalar tail; a stride-2 pair that holds only an odd
window's last column is loaded one element early, so no vector reads past the window. Rows
narrower than a vector take narrower vectors (a 13-column output: 8 lanes, then 8 overlapping).
On the padded scratch plane, a row narrower than a vector and not a power of two wide is one
masked vector (7 outputs: 8 lanes, 7 stored) instead of two narrower blocks.
Measured (znver5, 1 thread, benchmarks/per_node.py): squeezenet's 111 -> 55 max pool 77 -> 52
us, 55 -> 27 34 -> 23 us, 27 -> 13 25 -> 17 us; inception_v2's 112 -> 56 103 -> 73 us, a
576x14x14 3x3/1 average pool 24.6 -> 19.1 us, a 1024x7x7 3x3/1 max pool 29.5 -> 24.6 us.

That split leaves small planes mostly scalar: a 14x14 3x3 pool with padding 1 has 12 interior
columns, fewer than a zmm's 16 lanes, and its border windows run clipped scalar loops. When the
vector interior does not cover the whole output, each plane is instead copied into a per-thread
scratch plane padded with the pool's identity (-inf for max, 0 for average), and every output
row is computed with vectors: full blocks of the widest vector that fits the output row, the
last block overlapping the previous one (recomputing a few outputs) instead of a scalar tail.
An average divides by the window's in-bounds (or in-padded-bounds) count, computed per lane.
Measured (znver5, 1 thread): inception_v2's 576x14x14 3x3/1 average pools 110 -> 25 us,
squeezenet's 3x3/2 max pools 94/74/70 -> 45/25/14 us.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.dialects.builtin import f32
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.passes.conversion.kernel_to_loops import simd
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, Value, kernel_function
from ember.passes.conversion.kernel_to_loops.flat_access import (
    broadcast,
    element_type,
    fail,
    flat,
    index_to_f32,
    is_parallel,
    linear,
    load,
    loop,
    operand_types,
    shape,
    shuffle,
    store,
)
from ember.passes.conversion.kernel_to_loops.gemm_common import (
    alloca,
    decode,
    prefetch,
    store_lanes,
)
from ember.passes.conversion.kernel_to_loops.registry import lowering

# Strides whose interior is computed with vectors; others use unrolled scalar loops.
VECTOR_STRIDES = (1, 2)

# How one window row is combined into the accumulator: (builder, row_offset, acc) -> acc.
RowFn = Callable[[LoopBuilder, SSAValue, SSAValue], SSAValue]
# The values of one window row, its columns unrolled: (builder, row_offset) -> values.
RowValues = Callable[[LoopBuilder, SSAValue], list[SSAValue]]


def _interior(pad: int, stride: int, reach: int, size: int, out: int) -> range:
    """Output positions whose window [o*stride - pad, +reach) lies inside [0, size)."""
    first = -(-pad // stride)
    last = (size - reach + pad) // stride  # inclusive
    return range(min(first, out), max(min(last + 1, out), min(first, out)))


@dataclass(frozen=True)
class _Geometry:
    kind: str
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pl: int
    pb: int
    pr: int
    height: int
    width: int
    out_h: int
    out_w: int
    include_pad: bool

    @property
    def is_max(self) -> bool:
        return self.kind == "max"


def _block_width(size: int, vw: int) -> int:
    """Lanes of the vectors that sweep a row of `size` elements: the widest power of two of
    at most `vw` lanes that fits (down to 4), else 1 (scalars)."""
    width = vw
    while width > size and width > 4:
        width //= 2
    return width if width <= size else 1


def _masked_lanes(size: int, vw: int) -> int | None:
    """Lanes of the one masked vector that sweeps a padded-plane row of `size` outputs, when
    that beats full blocks plus an overlapping one: a row narrower than a vector and not a
    power of two wide (7 outputs: one 8-lane vector, 7 lanes stored, not two 4-lane ones)."""
    if not 2 < size < vw or size & (size - 1) == 0:
        return None
    return 1 << (size - 1).bit_length()


def _column_blocks(size: int, width: int) -> tuple[int, int | None]:
    """(end of the full blocks, start of the overlapping last block or None)."""
    full = size // width * width
    return full, (size - width if full < size else None)


# In-place planes of at least this many bytes prefetch, at each output row, the input rows
# the output row PREFETCH_ROWS_AHEAD below starts reading (0: none). A stride-2 window walks
# 3 input rows at once, which the hardware prefetchers follow poorly (znver5, 1 thread, 3x3/2
# max pool, ms, rows ahead 0 / 2 / 4: DBNet's 64x320x320 stem pool 2.27 / 1.19 / 1.10, input
# evicted from L3 first 2.37 / 1.35 / 1.40; 64x224x224 0.30 / 0.26 / 0.26; 64x130x130 0.076 /
# 0.071 / 0.072).
PREFETCH_ROWS_AHEAD = 2
PREFETCH_MIN_PLANE_BYTES = 64 * 1024
LINE_FLOATS = 16  # a 64-byte cache line

# Larger planes are pooled in place: the copy then leaves L1 before the windows read it
# (measured, znver5: 64x112x112 -> 56x56 3x3/2 max pool, 180 us in place, 220 us padded).
PADDED_PLANE_MAX_BYTES = 32 * 1024


@dataclass(frozen=True)
class _PaddedPlane:
    """Per-thread scratch: one input plane surrounded by the pool's identity, [rows, width]
    flat, wide enough for every window of every output (ceil_mode overruns included) and
    for the lane pairs a stride-2 vector reads."""

    rows: int
    width: int  # a multiple of the SIMD width
    right_pad_vectors: int  # SIMD vectors of identity written after each copied row

    @staticmethod
    def plan(g: _Geometry, vw: int) -> _PaddedPlane | None:
        rows = max(g.pt + g.height + g.pb, (g.out_h - 1) * g.sh + g.kh)
        # A masked vector's lanes past the row read (and discard) columns past its windows.
        lanes = _masked_lanes(g.out_w, vw) or g.out_w
        reach = max(g.pl + g.width + g.pr, g.sw * lanes + g.kw + 1)
        right = math.ceil((reach - g.pl - g.width) / vw)
        width = math.ceil(max(reach, g.pl + g.width + right * vw, vw) / vw) * vw
        if rows * width * 4 > PADDED_PLANE_MAX_BYTES:
            return None
        return _PaddedPlane(rows, width, right)


class _PlaneEmitter:
    """Emits the code for one (n, c) plane; `vw` is the SIMD width (1 = no vector interior)."""

    def __init__(self, g: _Geometry, vw: int, src: SSAValue, dst: SSAValue):
        self.g, self.vw, self.src, self.dst = g, vw, src, dst
        # max is NaN-propagating (arith.maximumf): a NaN anywhere in the window gives NaN.
        self.monoid = simd.Monoid("max" if g.is_max else "sum", f32)
        self.rows = _interior(g.pt, g.sh, g.kh, g.height, g.out_h)
        self.cols = _interior(g.pl, g.sw, g.kw, g.width, g.out_w)
        # A stride-2 vector reads lane pairs; the pair of a last, odd window column is read one
        # element early (vector_row), so only a 1-wide window reads past its last column.
        reach = g.kw if g.sw == 1 or g.kw > 1 else g.sw
        vec_cols = _interior(g.pl, g.sw, reach, g.width, g.out_w) if vw > 1 else range(0)
        blocks = len(vec_cols) // vw if vw > 1 else 0
        self.vec_cols = range(vec_cols.start, vec_cols.start + blocks * vw)
        # The columns left after the full blocks are one more block overlapping the last full
        # one (recomputing a few outputs) instead of a scalar tail.
        self.overlap_col = (
            vec_cols.stop - vw if blocks and vec_cols.stop > self.vec_cols.stop else None
        )
        self.vec_interior_stop = vec_cols.stop if blocks else self.vec_cols.stop
        self.flat_src: SSAValue | None = None  # a 1-D view of the input, to prefetch rows

    # -- accumulation --------------------------------------------------------------------------
    def init(self, b: LoopBuilder, width: int) -> SSAValue:
        return self.monoid.init(b, width)

    def combine(self, b: LoopBuilder, acc: SSAValue, value: SSAValue) -> SSAValue:
        # A NaN-propagating max is vmaxps + vcmpunordps + blend on x86 with the NaN test on the
        # first operand: `value` goes first, keeping the test off the chain through acc.
        return self.monoid.combine(b, value, acc)

    def reduce(self, b: LoopBuilder, values: list[SSAValue]) -> SSAValue:
        """Max or sum of window values (NaN-propagating max: simd.extremum)."""
        if self.g.is_max:
            return simd.extremum(b, "max", values)
        return self.monoid.tree(b, values)

    def window(
        self,
        b: LoopBuilder,
        base: SSAValue,
        h0: SSAValue,
        checked: bool,
        width: int,
        row: RowValues,
    ) -> SSAValue:
        """Max or sum over the window rows starting at input row h0 (clipped if `checked`),
        whose columns `row` unrolls: all values at once inside, row by row at the border."""
        g = self.g
        if not checked:
            rows = [row(b, linear(b, [(b.add(h0, ky), g.width)], base)) for ky in range(g.kh)]
            return self.reduce(b, [v for values in rows for v in values])
        return self.over_rows(
            b,
            base,
            h0,
            True,
            self.init(b, width),
            lambda rb, at, acc: self.combine(rb, acc, self.reduce(rb, row(rb, at))),
        )

    def over_rows(
        self, b: LoopBuilder, base: SSAValue, h0: SSAValue, checked: bool, acc: SSAValue, row: RowFn
    ) -> SSAValue:
        """Fold `row` over the window rows starting at input row h0 (clipped if `checked`)."""
        g = self.g
        if not checked:
            for ky in range(g.kh):
                acc = row(b, linear(b, [(b.add(h0, ky), g.width)], base), acc)
            return acc
        start = b.max_index(h0, 0)
        stop = b.min_index(b.add(h0, g.kh), g.height)

        def body(rb: LoopBuilder, ih: SSAValue, carried: SSAValue) -> list[SSAValue]:
            return [row(rb, linear(rb, [(ih, g.width)], base), carried)]

        return b.for_range(start, stop, 1, body, [acc])[0]

    def window_count(
        self, b: LoopBuilder, start: SSAValue, k: int, size: int, pad_end: int
    ) -> SSAValue:
        """Elements of a window along one axis that the average divides by (ONNX/onnxruntime)."""
        if self.g.include_pad:  # padding counts, but only up to the padded border
            return b.sub(b.min_index(b.add(start, k), size + pad_end), start)
        return b.sub(b.min_index(b.add(start, k), size), b.max_index(start, 0))

    # -- column loads ----------------------------------------------------------------------------
    def vector_row(self, w0: SSAValue, vw: int = 0, src: SSAValue | None = None) -> RowValues:
        """All window columns of one row for `vw` (default: the SIMD width) consecutive
        outputs starting at column w0, read from `src` (default: the input)."""
        g, vw = self.g, vw or self.vw
        source = self.src if src is None else src

        def row(b: LoopBuilder, row_at: SSAValue) -> list[SSAValue]:
            at = b.add(row_at, w0)
            pairs: dict[int, tuple[SSAValue, SSAValue]] = {}
            values: list[SSAValue] = []
            for kx in range(g.kw):
                if g.sw == 1:
                    value = load(b, source, b.add(at, kx), vw)
                elif vw == 1:
                    value = load(b, source, b.add(at, kx), 1)
                else:
                    base = kx - kx % g.sw
                    # A pair holding only the last window column (odd kw) starts one element
                    # early: its lanes then end on that column, not one past it.
                    early = 1 if base > 0 and base + 1 >= g.kw else 0
                    if base not in pairs:
                        start = base - early
                        first = load(b, source, b.add(at, start), vw)
                        pairs[base] = (first, load(b, source, b.add(at, start + vw), vw))
                    lanes = [kx % g.sw + early + g.sw * j for j in range(vw)]
                    value = shuffle(b, *pairs[base], lanes)
                values.append(value)
            return values

        return row

    def scalar_row(self, w0: SSAValue) -> RowValues:
        """The window columns of one row for the output at column w0 (inside the input)."""

        def row(b: LoopBuilder, row_at: SSAValue) -> list[SSAValue]:
            at = b.add(row_at, w0)
            return [load(b, self.src, b.add(at, kx), 1) for kx in range(self.g.kw)]

        return row

    def clipped_scalar_row(self, w0: SSAValue) -> RowFn:
        """Folds the window columns of one row that lie inside the input into acc."""
        g = self.g

        def row(b: LoopBuilder, row_at: SSAValue, acc: SSAValue) -> SSAValue:
            start = b.max_index(w0, 0)
            stop = b.min_index(b.add(w0, g.kw), g.width)

            def body(cb: LoopBuilder, iw: SSAValue, carried: SSAValue) -> list[SSAValue]:
                return [self.combine(cb, carried, load(cb, self.src, cb.add(row_at, iw), 1))]

            return b.for_range(start, stop, 1, body, [acc])[0]

        return row

    # -- one output row -------------------------------------------------------------------------
    def output_row(
        self,
        b: LoopBuilder,
        src_base: SSAValue,
        dst_base: SSAValue,
        oh: SSAValue,
        checked_rows: bool,
    ) -> None:
        g = self.g
        h0 = b.sub(b.mul(oh, g.sh), g.pt)
        row_count: SSAValue | int = g.kh
        if checked_rows and not g.is_max:
            row_count = self.window_count(b, h0, g.kh, g.height, g.pb)
        out_row = linear(b, [(oh, g.out_w)], dst_base)

        def emit(ob: LoopBuilder, ow: SSAValue, width: int, checked_cols: bool) -> None:
            w0 = ob.sub(ob.mul(ow, g.sw), g.pl)
            if checked_cols:
                row = self.clipped_scalar_row(w0)
                acc = self.over_rows(ob, src_base, h0, checked_rows, self.init(ob, width), row)
            else:
                values = self.vector_row(w0) if width > 1 else self.scalar_row(w0)
                acc = self.window(ob, src_base, h0, checked_rows, width, values)
            if not g.is_max:
                cols = self.window_count(ob, w0, g.kw, g.width, g.pr) if checked_cols else g.kw
                count = index_to_f32(ob, ob.mul(row_count, cols))
                acc = ob.mulf(acc, broadcast(ob, ob.divf(ob.const(1.0), count), width))
            store(ob, acc, self.dst, ob.add(out_row, ow))

        vec, cols = self.vec_cols, self.cols
        segments = [
            (0, cols.start, 1, True),
            (vec.start, vec.stop, self.vw, False),
            (self.vec_interior_stop, cols.stop, 1, False),
            (cols.stop, g.out_w, 1, True),
        ]
        if not vec:
            segments[1:3] = [(cols.start, cols.stop, 1, False)]
        for lo, hi, width, checked in segments:
            loop(b, lo, hi, lambda ob, ow, w=width, c=checked: emit(ob, ow, w, c), step=width)
        if self.overlap_col is not None:
            emit(b, b.index(self.overlap_col), self.vw, False)

    @property
    def wants_padded_plane(self) -> bool:
        """Whether copying the plane into padded scratch beats reading it in place: when some
        windows cross the border (clipped scalar loops) or over a quarter of each row is
        scalar tail. Measured (znver5): a 111x111 -> 55x55 3x3/2 max pool, 7 scalar columns
        a row, runs faster in place (94 us vs 114 us for 64 channels), 55 -> 27 padded
        (73 -> 34 us)."""
        g = self.g
        if self.rows != range(g.out_h) or self.cols != range(g.out_w):
            return True
        scalar = g.out_w - (self.vec_interior_stop - self.vec_cols.start)
        return g.out_w >= 4 and 4 * scalar > g.out_w

    # -- the padded-scratch plane ---------------------------------------------------------------
    def fill_padded(
        self, b: LoopBuilder, pad: _PaddedPlane, scratch: SSAValue, src_base: SSAValue
    ) -> None:
        """Copy the input plane into the scratch, the identity around it."""
        g, vw = self.g, self.vw
        identity = self.monoid.init(b, vw)

        def pad_row(rb: LoopBuilder, r: SSAValue) -> None:
            at = rb.mul(r, pad.width)
            for t in range(0, pad.width, vw):
                store(rb, identity, scratch, rb.add(at, t))

        loop(b, 0, g.pt, pad_row)
        loop(b, g.pt + g.height, pad.rows, pad_row)
        cw = _block_width(g.width, vw)
        full, last = _column_blocks(g.width, cw)

        def copy_row(rb: LoopBuilder, ih: SSAValue) -> None:
            src_at = linear(rb, [(ih, g.width)], src_base)
            dst_at = linear(rb, [(ih, pad.width)], g.pt * pad.width + g.pl)
            # Before the copy, which overwrites what these write past the padding.
            row_at = linear(rb, [(ih, pad.width)], g.pt * pad.width)
            for t in range(0, g.pl, vw):
                store(rb, identity, scratch, rb.add(row_at, t))

            def block(cb: LoopBuilder, c: Value) -> None:
                value = load(cb, self.src, cb.add(src_at, c), cw)
                store(cb, value, scratch, cb.add(dst_at, c))

            loop(rb, 0, full, block, step=cw)
            if last is not None:
                block(rb, last)
            for t in range(pad.right_pad_vectors):
                store(rb, identity, scratch, rb.add(dst_at, g.width + t * vw))

        loop(b, 0, g.height, copy_row)

    def column_scale(self, b: LoopBuilder, ow: SSAValue, width: int) -> SSAValue:
        """Per lane, the window's column count that an average divides by (as f32)."""
        g = self.g
        if width == 1:
            w0 = b.sub(b.mul(ow, g.sw), g.pl)
            return index_to_f32(b, self.window_count(b, w0, g.kw, g.width, g.pr))
        first = b.splat(index_to_f32(b, ow), width)
        columns = b.addf(first, b.lane_numbers(width, f32))
        start = b.subf(b.mulf(columns, b.splat(float(g.sw), width)), b.splat(float(g.pl), width))
        stop = b.addf(start, b.splat(float(g.kw), width))
        if g.include_pad:
            return b.subf(b.minf(stop, b.splat(float(g.width + g.pr), width)), start)
        inside = b.maxf(start, b.splat(0.0, width))
        return b.subf(b.minf(stop, b.splat(float(g.width), width)), inside)

    def padded_output_row(
        self,
        b: LoopBuilder,
        pad: _PaddedPlane,
        scratch: SSAValue,
        dst_base: SSAValue,
        oh: SSAValue,
    ) -> None:
        g = self.g
        rows_at = [linear(b, [(oh, g.sh * pad.width)], ky * pad.width) for ky in range(g.kh)]
        out_row = linear(b, [(oh, g.out_w)], dst_base)
        row_count = None
        if not g.is_max:
            h0 = b.sub(b.mul(oh, g.sh), g.pt)
            row_count = index_to_f32(b, self.window_count(b, h0, g.kh, g.height, g.pb))
        masked = _masked_lanes(g.out_w, self.vw)
        width = masked or _block_width(g.out_w, self.vw)
        full, last = (0, 0) if masked else _column_blocks(g.out_w, width)

        def block(ob: LoopBuilder, ow: Value) -> None:
            ow = ob.index(ow)
            row = self.vector_row(ob.mul(ow, g.sw), width, scratch)
            acc = self.reduce(ob, [v for at in rows_at for v in row(ob, at)])
            if row_count is not None:
                count = ob.mulf(broadcast(ob, row_count, width), self.column_scale(ob, ow, width))
                acc = ob.divf(acc, count)
            if masked:  # the lanes past the row hold garbage (0/0 for an average): not stored
                store_lanes(ob, acc, self.dst, flat(self.dst, ob.add(out_row, ow)), g.out_w, width)
            else:
                store(ob, acc, self.dst, ob.add(out_row, ow))

        loop(b, 0, full, block, step=width)
        if last is not None:
            block(b, last)

    def padded_plane(self, b: LoopBuilder, pad: _PaddedPlane, p: SSAValue) -> None:
        g = self.g
        scratch = alloca(b, [pad.rows * pad.width])
        self.fill_padded(b, pad, scratch, b.mul(p, g.height * g.width))
        dst_base = b.mul(p, g.out_h * g.out_w)
        loop(b, 0, g.out_h, lambda rb, oh: self.padded_output_row(rb, pad, scratch, dst_base, oh))

    def prefetch_rows_ahead(self, b: LoopBuilder, src_base: SSAValue, oh: SSAValue) -> None:
        """Ask for the input rows that output row oh + PREFETCH_ROWS_AHEAD first reads (its
        window's last `sh` rows, clamped to the plane), one line at a time."""
        g = self.g
        assert self.flat_src is not None
        first = (PREFETCH_ROWS_AHEAD * g.sh) - g.pt + g.kh - g.sh
        for r in range(g.sh):
            ih = b.max_index(b.min_index(b.add(b.mul(oh, g.sh), first + r), g.height - 1), 0)
            row_at = linear(b, [(ih, g.width)], src_base)
            for col in range(0, g.width, LINE_FLOATS):
                prefetch(b, self.flat_src, b.add(row_at, col))

    def plane(self, b: LoopBuilder, p: SSAValue) -> None:
        g = self.g
        src_base = b.mul(p, g.height * g.width)
        dst_base = b.mul(p, g.out_h * g.out_w)
        rows = self.rows

        def row(rb: LoopBuilder, oh: SSAValue, checked: bool) -> None:
            if self.flat_src is not None:
                self.prefetch_rows_ahead(rb, src_base, oh)
            self.output_row(rb, src_base, dst_base, oh, checked)

        for lo, hi, checked in (
            (0, rows.start, True),
            (rows.start, rows.stop, False),
            (rows.stop, g.out_h, True),
        ):
            loop(b, lo, hi, lambda rb, oh, c=checked: row(rb, oh, c))


def build_pool(
    op: kernel.PoolOp, target: Target, name: str, vector_strides: tuple[int, ...] = VECTOR_STRIDES
) -> func.FuncOp:
    """The pooling kernel; `vector_strides` selects which strides get a SIMD interior."""
    in_shape, out_shape = shape(op.input), shape(op.output)
    blocked = len(in_shape) == len(out_shape) == 5 and in_shape[4] == out_shape[4]
    if len(in_shape) != 4 and not blocked or len(out_shape) != len(in_shape):
        raise fail(
            op,
            f"expects NCHW or channel-blocked [N, C/c, H, W, c] input and output, got "
            f"{list(in_shape)} -> {list(out_shape)}",
        )
    if in_shape[:2] != out_shape[:2]:
        raise fail(op, f"N, C of input {list(in_shape)} and output {list(out_shape)} differ")
    if element_type(op.input) != f32 or element_type(op.output) != f32:
        raise fail(op, f"pools float32 only, got {element_type(op.input)}")
    ks = [int(v) for v in op.kernel_shape.get_values()]
    strides = [int(v) for v in op.strides.get_values()]
    pads = [int(v) for v in op.pads.get_values()]
    if len(ks) != 2 or len(strides) != 2 or len(pads) != 4:
        raise fail(op, f"needs 2-D kernel_shape/strides and 4 pads, got {ks}, {strides}, {pads}")
    if min(ks) < 1 or min(strides) < 1 or min(pads) < 0:
        raise fail(op, f"invalid kernel_shape {ks}, strides {strides} or pads {pads}")
    if pads[0] >= ks[0] or pads[2] >= ks[0] or pads[1] >= ks[1] or pads[3] >= ks[1]:
        # A window made only of padding has no value (ONNX requires pad < kernel).
        raise fail(op, f"pads {pads} must be smaller than kernel_shape {ks}")
    n, c, height, width = in_shape[:4]
    g = _Geometry(
        kind=op.kind.data,
        kh=ks[0],
        kw=ks[1],
        sh=strides[0],
        sw=strides[1],
        pt=pads[0],
        pl=pads[1],
        pb=pads[2],
        pr=pads[3],
        height=height,
        width=width,
        out_h=out_shape[2],
        out_w=out_shape[3],
        include_pad=op.count_include_pad is not None,
    )
    if blocked:
        return _blocked_pool(op, g, n, c, in_shape[4], name)
    fn, b = kernel_function(name, operand_types(op))
    vw = target.vector_width if g.sw in vector_strides else 1
    emitter = _PlaneEmitter(g, vw, fn.args[0], fn.args[1])
    interior = len(emitter.cols)
    if 1 < interior < vw:
        # Rows narrower than a vector: narrower vectors in place (a 13-column max pool: one
        # 8-lane block and one overlapping it) rather than the scratch plane's copy.
        narrow = _PlaneEmitter(g, _block_width(interior, vw), fn.args[0], fn.args[1])
        if narrow.vw > 1 and not narrow.wants_padded_plane:
            emitter = narrow
    pad = _PaddedPlane.plan(g, vw) if vw > 1 and emitter.wants_padded_plane else None
    if pad is None:
        if PREFETCH_ROWS_AHEAD and vw > 1 and g.height * g.width * 4 >= PREFETCH_MIN_PLANE_BYTES:
            emitter.flat_src = simd.view(b, fn.args[0], (math.prod(in_shape),))
        plane = emitter.plane
    else:

        def plane(pb: LoopBuilder, p: SSAValue) -> None:
            emitter.padded_plane(pb, pad, p)

    loop(b, 0, n * c, plane, parallel=is_parallel(math.prod(in_shape)))
    b.ret()
    return fn


# Output columns per step of the blocked pool's interior loop: independent accumulators.
BLOCKED_POOL_COLUMNS = 4


def _blocked_pool(
    op: kernel.PoolOp, g: _Geometry, batch: int, blocks: int, c: int, name: str
) -> func.FuncOp:
    """Pooling of channel-blocked [N, C/c, H, W, c] maps (the blocked-layout pass): the c
    channels of a pixel are one vector, so every window tap is one vector load and every
    output one store, however small the plane (NCHW pools of 7x7 or 14x14 planes fill few
    lanes). Work units are output rows of one channel block; the window rows inside the
    input are a loop, the columns unrolled: interior columns BLOCKED_POOL_COLUMNS at a time,
    border ones statically without their out-of-bounds taps."""
    fn, b = kernel_function(name, operand_types(op))
    src, dst = fn.args
    monoid = simd.Monoid("max" if g.is_max else "sum", f32)
    cols = _interior(g.pl, g.sw, g.kw, g.width, g.out_w)
    step = BLOCKED_POOL_COLUMNS
    main_stop = cols.start + len(cols) // step * step

    def column_count(ow: int) -> int:
        """Taps of output column `ow` that an average divides by."""
        w0 = ow * g.sw - g.pl
        if g.include_pad:
            return min(w0 + g.kw, g.width + g.pr) - w0
        return min(w0 + g.kw, g.width) - max(w0, 0)

    def row(b: LoopBuilder, u: SSAValue) -> None:
        nb, cb, oh = decode(b, u, [batch, blocks, g.out_h])
        h0 = b.sub(b.mul(oh, g.sh), g.pt)
        r_lo = b.max_index(b.sub(b.index(0), h0), 0)
        r_hi = b.min_index(b.sub(b.index(g.height), h0), g.kh)
        if g.include_pad:  # padding counts, up to the padded border
            rows = b.sub(b.min_index(b.add(h0, g.kh), g.height + g.pb), h0)
        else:
            rows = b.sub(r_hi, r_lo)

        def columns(b: LoopBuilder, ow0: Value, count: int, static: int | None) -> None:
            """`count` outputs from column ow0 (`static`: its value, at the border)."""
            w0 = b.sub(b.mul(ow0, g.sw), g.pl)

            def window_row(b: LoopBuilder, r: SSAValue, *accs: SSAValue) -> list[SSAValue]:
                ih, current = b.add(h0, r), list(accs)
                for s in range(g.kw):
                    for t in range(count):
                        if static is not None and not 0 <= (static + t) * g.sw - g.pl + s < g.width:
                            continue
                        at = [nb, cb, ih, b.add(w0, t * g.sw + s), 0]
                        current[t] = monoid.combine(b, b.vload(src, at, c), current[t])
                return current

            accs = b.for_range(r_lo, r_hi, 1, window_row, [monoid.init(b, c)] * count)
            for t, acc in enumerate(accs):
                if not g.is_max:
                    taps = g.kw if static is None else column_count(static + t)
                    divisor = index_to_f32(b, b.mul(rows, taps))
                    acc = b.divf(acc, b.splat(divisor, c))
                b.vstore(acc, dst, [nb, cb, oh, b.add(ow0, t), 0])

        for ow in [*range(cols.start), *range(main_stop, g.out_w)]:
            columns(b, b.index(ow), 1, ow)
        loop(b, cols.start, main_stop, lambda lb, ow0: columns(lb, ow0, step, None), step=step)

    units = batch * blocks * g.out_h
    loop(b, 0, units, row, parallel=is_parallel(units * g.out_w * c))
    b.ret()
    return fn


@lowering(kernel.PoolOp)
def lower_pool(op: kernel.PoolOp, target: Target, name: str) -> func.FuncOp:
    return build_pool(op, target, name)
