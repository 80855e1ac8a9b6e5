"""Loop lowering of kernel.pool: 2-D max/average pooling over NCHW planes.

Each output plane is split, statically, into interior rows/columns (the window lies inside
the input) and border ones (it overlaps padding or, with ceil_mode, runs past it). Interior
windows are fully unrolled with no bounds checks and, along the output width, computed
`vector_width` outputs at a time: stride 1 reads the window columns with plain vector loads,
stride 2 loads two vectors per window column pair and deinterleaves them with vector.shuffle.
Border windows clip their loops to the input, so padding never has to be materialized.
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
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.passes.conversion.kernel_to_loops.flat_access import (
    broadcast,
    element_type,
    fail,
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


class _PlaneEmitter:
    """Emits the code for one (n, c) plane; `vw` is the SIMD width (1 = no vector interior)."""

    def __init__(self, g: _Geometry, vw: int, src: SSAValue, dst: SSAValue):
        self.g, self.vw, self.src, self.dst = g, vw, src, dst
        # max is NaN-propagating (arith.maximumf): a NaN anywhere in the window gives NaN.
        self.monoid = simd.Monoid("max" if g.is_max else "sum", f32)
        self.rows = _interior(g.pt, g.sh, g.kh, g.height, g.out_h)
        self.cols = _interior(g.pl, g.sw, g.kw, g.width, g.out_w)
        # A stride-2 vector reads lane pairs, i.e. up to one element past the last window column.
        reach = g.kw if g.sw == 1 else max(g.kw, (g.kw - 1) - (g.kw - 1) % g.sw + g.sw)
        vec_cols = _interior(g.pl, g.sw, reach, g.width, g.out_w) if vw > 1 else range(0)
        blocks = len(vec_cols) // vw if vw > 1 else 0
        self.vec_cols = range(vec_cols.start, vec_cols.start + blocks * vw)

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
    def vector_row(self, w0: SSAValue) -> RowValues:
        """All window columns of one row for `vw` consecutive outputs starting at column w0."""
        g, vw = self.g, self.vw

        def row(b: LoopBuilder, row_at: SSAValue) -> list[SSAValue]:
            at = b.add(row_at, w0)
            pairs: dict[int, tuple[SSAValue, SSAValue]] = {}
            values: list[SSAValue] = []
            for kx in range(g.kw):
                if g.sw == 1:
                    value = load(b, self.src, b.add(at, kx), vw)
                else:
                    base = kx - kx % g.sw
                    if base not in pairs:
                        first = load(b, self.src, b.add(at, base), vw)
                        pairs[base] = (first, load(b, self.src, b.add(at, base + vw), vw))
                    lanes = [kx % g.sw + g.sw * j for j in range(vw)]
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
            (vec.stop, cols.stop, 1, False),
            (cols.stop, g.out_w, 1, True),
        ]
        if not vec:
            segments[1:3] = [(cols.start, cols.stop, 1, False)]
        for lo, hi, width, checked in segments:
            loop(b, lo, hi, lambda ob, ow, w=width, c=checked: emit(ob, ow, w, c), step=width)

    def plane(self, b: LoopBuilder, p: SSAValue) -> None:
        g = self.g
        src_base = b.mul(p, g.height * g.width)
        dst_base = b.mul(p, g.out_h * g.out_w)
        rows = self.rows
        for lo, hi, checked in (
            (0, rows.start, True),
            (rows.start, rows.stop, False),
            (rows.stop, g.out_h, True),
        ):
            loop(
                b, lo, hi, lambda rb, oh, c=checked: self.output_row(rb, src_base, dst_base, oh, c)
            )


def build_pool(
    op: kernel.PoolOp, target: Target, name: str, vector_strides: tuple[int, ...] = VECTOR_STRIDES
) -> func.FuncOp:
    """The pooling kernel; `vector_strides` selects which strides get a SIMD interior."""
    in_shape, out_shape = shape(op.input), shape(op.output)
    if len(in_shape) != 4 or len(out_shape) != 4:
        raise fail(op, f"expects NCHW input and output, got {list(in_shape)} -> {list(out_shape)}")
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
    n, c, height, width = in_shape
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
    fn, b = kernel_function(name, operand_types(op))
    vw = target.vector_width if g.sw in vector_strides else 1
    emitter = _PlaneEmitter(g, vw, fn.args[0], fn.args[1])
    loop(b, 0, n * c, emitter.plane, parallel=is_parallel(math.prod(in_shape)))
    b.ret()
    return fn


@lowering(kernel.PoolOp)
def lower_pool(op: kernel.PoolOp, target: Target, name: str) -> func.FuncOp:
    return build_pool(op, target, name)
