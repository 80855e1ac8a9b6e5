"""kernel.reduce -> SIMD loops.

Dims of size 1 vanish and adjacent dims that are all reduced (or all kept) merge, leaving
alternating groups. The innermost group picks the loop nest:
  * reduced innermost (GlobalAveragePool's H*W, ReduceMean over the last axis): each output
    element sweeps its contiguous row with unrolled vector accumulators and ends with a
    horizontal vector.reduction;
  * kept innermost, short rows (reducing axis 0 of [N, 20]): blocks of output columns each
    keep a few vector accumulators while the loop walks the reduced rows; nothing horizontal;
  * kept innermost, longer rows (axis 0 of [512, 2048]): the rows stream through, folded into
    an L1-sized chunk of the output, so memory is read in order.
"""

from __future__ import annotations

import math as pymath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xdsl.dialects import arith, func
from xdsl.dialects.builtin import AnyFloat, i64
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.dtypes import numpy_dtype_for
from ember.dialects.extents import is_dynamic
from ember.dialects.graph import element_type_of, int_values, shape_of
from ember.passes.conversion.kernel_to_loops import simd
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.passes.conversion.kernel_to_loops.gemm_common import alloca
from ember.passes.conversion.kernel_to_loops.registry import lowering

KINDS = ("sum", "mean", "max", "min", "prod")


def collapse_reduction(shape: Sequence[int], axes: Sequence[int]) -> list[tuple[int, bool]]:
    """(size, reduced) groups of merged dims; never empty."""
    groups: list[tuple[int, bool]] = []
    for d, n in enumerate(shape):
        if n == 1:
            continue
        reduced = d in axes
        if groups and groups[-1][1] == reduced:
            groups[-1] = (groups[-1][0] * n, reduced)
        else:
            groups.append((n, reduced))
    return groups or [(1, False)]


def normalize_axes(op: kernel.ReduceOp) -> list[int]:
    rank = len(shape_of(op.input))
    axes = []
    for a in int_values(op.axes):
        if not -rank <= a < rank:
            raise ValueError(f"kernel.reduce: axis {a} out of range for rank {rank}")
        axes.append(a % rank)
    return sorted(set(axes))


def _interleave(
    groups: Sequence[tuple[int, bool]], kept: Sequence[SSAValue], reduced: Sequence[SSAValue]
) -> list[SSAValue]:
    """Indices of the collapsed input from the kept and reduced indices, in group order."""
    kept_it, reduced_it = iter(kept), iter(reduced)
    return [next(reduced_it) if r else next(kept_it) for _, r in groups]


def _finisher(kind: str, count: int, b: LoopBuilder, value: SSAValue) -> SSAValue:
    if kind != "mean":
        return value
    element, width = simd.element_and_width(value)
    if isinstance(element, AnyFloat):
        # The mean of nothing is NaN, as in numpy.
        factor = 1.0 / count if count else pymath.nan
        return b.mulf(value, simd.broadcast(b, b.const(factor, element), width))
    divisor = simd.broadcast(b, b.const(count, element), width)
    return b.insert(arith.DivSIOp(value, divisor)).results[0]


# Kept-innermost reductions either walk the reduced rows down a block of columns held in
# registers, or stream the rows in order through a chunk of the output (a load and a store
# more per vector). Measured here (sum over axis 0, 1 thread): walking wins only while a row
# is about one register block wide (20000x20: 31 vs 47 us); from 64 columns on streaming
# wins (4096x64: 20 vs 28 us; 1024x512: 40 vs 72 us; 512x2048: 4x, as strided walks across
# pages defeat the prefetchers).
REGISTER_WALK_MAX_ROW_BYTES = 128
# Columns per streamed chunk: the chunk's slice of the output (4 KiB of f32) stays in L1 while
# every reduced row streams past it.
STREAM_CHUNK = 1024

Finish = Callable[[LoopBuilder, SSAValue], SSAValue]


def _load(
    b: LoopBuilder, buffer: SSAValue, idx: Sequence[SSAValue], width: int, monoid: simd.Monoid
) -> SSAValue:
    """Elements of `buffer` in the type the reduction accumulates in."""
    return simd.convert_float(b, simd.load(b, buffer, idx, width), monoid.type)


def _store(b: LoopBuilder, value: SSAValue, buffer: SSAValue, idx: Sequence[SSAValue]) -> None:
    """A result stored in the buffer's element type (rounded once, when it accumulated wider)."""
    element = buffer.type.get_element_type()  # type: ignore[attr-defined]
    simd.store(b, simd.convert_float(b, value, element), buffer, idx)


@dataclass(frozen=True)
class _Reduction:
    """What each loop nest below reduces: `source` viewed as the (size, reduced) `groups`
    into `dest` (the kept groups), accumulated by `monoid` and finished by `finish`."""

    target: Target
    groups: list[tuple[int, bool]]
    source: SSAValue
    dest: SSAValue
    monoid: simd.Monoid
    finish: Finish

    @property
    def kept(self) -> list[int]:
        return [n for n, reduced in self.groups if not reduced]

    @property
    def reduced(self) -> list[int]:
        return [n for n, reduced in self.groups if reduced]

    @property
    def total(self) -> int:
        """The number of source elements."""
        return pymath.prod(n for n, _ in self.groups)

    def load(
        self, b: LoopBuilder, kept_idx: list[SSAValue], reduced_idx: list[SSAValue], width: int
    ) -> SSAValue:
        """`width` source elements at the kept and reduced group indices, as accumulated."""
        return _load(
            b, self.source, _interleave(self.groups, kept_idx, reduced_idx), width, self.monoid
        )

    def store(self, b: LoopBuilder, acc: SSAValue, kept_idx: list[SSAValue]) -> None:
        """The finished accumulator `acc` into the destination at the kept group indices."""
        _store(b, self.finish(b, acc), self.dest, kept_idx)


def _contiguous_rows(b: LoopBuilder, reduction: _Reduction) -> None:
    """Each output element sweeps its contiguous rows with vector accumulators."""
    kept, reduced = reduction.kept, reduction.reduced
    row, outer_reduced = reduced[-1], reduced[:-1]
    width = reduction.target.vector_width
    unroll = simd.accumulator_unroll(reduction.target)

    def element_body(eb: LoopBuilder, kept_idx: list[SSAValue]) -> None:
        def row_total(rb: LoopBuilder, red_idx: list[SSAValue]) -> SSAValue:
            def visit(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
                return [reduction.load(vb, kept_idx, [*red_idx, j], w)]

            return simd.sweep(rb, 0, row, width, visit, [reduction.monoid], unroll)[0]

        if outer_reduced:
            acc = simd.for_nest(
                eb,
                outer_reduced,
                lambda rb, idx, acc: [reduction.monoid.combine(rb, acc[0], row_total(rb, idx))],
                [reduction.monoid.init(eb, 1)],
            )[0]
        else:
            acc = row_total(eb, [])
        reduction.store(eb, acc, kept_idx or [0])

    threads = simd.want_threads(reduction.target, reduction.total, pymath.prod(kept))
    simd.for_each_index(b, kept, element_body, threads)


def _register_columns(b: LoopBuilder, reduction: _Reduction) -> None:
    """Blocks of output columns keep vector accumulators in registers over all reduced rows."""
    kept, reduced = reduction.kept, reduction.reduced
    columns, kept_outer = kept[-1], kept[:-1]
    width = reduction.target.vector_width
    rows_parallel = simd.want_threads(reduction.target, reduction.total, pymath.prod(kept_outer))

    def row_body(rb: LoopBuilder, kept_idx: list[SSAValue]) -> None:
        def block(bb: LoopBuilder, first: SSAValue, lanes: list[simd.Lane]) -> None:
            columns_at = [bb.add(first, off) if off else first for off, _ in lanes]

            def accumulate(ab: LoopBuilder, red_idx: list[SSAValue], accs: list[SSAValue]):
                return [
                    reduction.monoid.combine(
                        ab, acc, reduction.load(ab, [*kept_idx, c], red_idx, w)
                    )
                    for acc, c, (_, w) in zip(accs, columns_at, lanes)
                ]

            init = [reduction.monoid.init(bb, w) for _, w in lanes]
            accs = simd.for_nest(bb, reduced, accumulate, init)
            for acc, c in zip(accs, columns_at):
                reduction.store(bb, acc, [*kept_idx, c])

        simd.column_blocks(rb, columns, width, simd.accumulator_unroll(reduction.target), block)

    simd.for_each_index(b, kept_outer, row_body, rows_parallel)


def _streamed_columns(b: LoopBuilder, reduction: _Reduction) -> None:
    """Chunks of output columns accumulate in memory while the reduced rows stream past."""
    kept, reduced = reduction.kept, reduction.reduced
    columns, kept_outer = kept[-1], kept[:-1]
    width = reduction.target.vector_width
    chunks = -(-columns // STREAM_CHUNK)
    space = [*kept_outer, chunks]
    parallel = simd.want_threads(reduction.target, reduction.total, pymath.prod(space))

    # A 16-bit float sums into a float32 scratch chunk, stored rounded once at the end.
    wide = reduction.monoid.type != reduction.dest.type.get_element_type()  # type: ignore[attr-defined]

    def chunk_body(cb: LoopBuilder, idx: list[SSAValue]) -> None:
        kept_idx = idx[:-1]
        lo = cb.mul(idx[-1], STREAM_CHUNK)
        hi = cb.min_index(cb.add(lo, STREAM_CHUNK), columns)
        identity = {w: reduction.monoid.init(cb, w) for w in {1, width}}
        scratch = alloca(cb, [STREAM_CHUNK], reduction.monoid.type) if wide else None

        def acc_at(vb: LoopBuilder, j: SSAValue) -> tuple[SSAValue, list[SSAValue]]:
            if scratch is not None:
                return scratch, [vb.sub(j, lo)]
            return reduction.dest, [*kept_idx, j]

        def reset(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
            simd.store(vb, identity[w], *acc_at(vb, j))
            return []

        def fold_row(rb: LoopBuilder, red_idx: list[SSAValue], _: list[SSAValue]) -> None:
            def fold(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
                x = reduction.load(vb, [*kept_idx, j], red_idx, w)
                acc = simd.load(vb, *acc_at(vb, j), w)
                simd.store(vb, reduction.monoid.combine(vb, acc, x), *acc_at(vb, j))
                return []

            simd.sweep(rb, lo, hi, width, fold)

        def final(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
            reduction.store(vb, simd.load(vb, *acc_at(vb, j), w), [*kept_idx, j])
            return []

        simd.sweep(cb, lo, hi, width, reset)
        simd.for_nest(cb, reduced, fold_row)
        simd.sweep(cb, lo, hi, width, final)

    simd.for_each_index(b, space, chunk_body, parallel)


@lowering(kernel.ReduceOp)
def lower_reduce(op: kernel.ReduceOp, target: Target, name: str) -> func.FuncOp:
    kind = op.kind.data
    if kind not in KINDS:
        raise ValueError(f"kernel.reduce: unknown kind '{kind}' (expected one of {KINDS})")
    in_shape = shape_of(op.input)
    axes = normalize_axes(op)
    expected = tuple(1 if d in axes else n for d, n in enumerate(in_shape))
    if shape_of(op.output) != expected:
        raise ValueError(
            f"kernel.reduce: output shape {shape_of(op.output)} != {expected} for input "
            f"{in_shape} reduced over axes {axes}"
        )
    element = element_type_of(op.input)
    # Sums and products of 16-bit floats accumulate in float32 and round once (a float16
    # running sum loses a bit per doubling of its magnitude); max/min are exact in any type.
    compute = element if kind in ("max", "min") else simd.compute_type(element)
    monoid = simd.Monoid("sum" if kind == "mean" else kind, compute)
    groups = collapse_reduction(in_shape, axes)
    kept = [n for n, r in groups if not r]
    count = pymath.prod(n for n, r in groups if r)

    fn, b = kernel_function(name, [op.input.type, op.output.type])  # type: ignore[list-item]
    source = simd.view(b, fn.args[0], [n for n, _ in groups])
    dest = simd.view(b, fn.args[1], kept or [1])

    def finish(fb: LoopBuilder, value: SSAValue) -> SSAValue:
        return _finisher(kind, count, fb, value)

    reduction = _Reduction(target, groups, source, dest, monoid, finish)
    if groups[-1][1]:
        _contiguous_rows(b, reduction)
    elif kept[-1] * numpy_dtype_for(element).itemsize <= REGISTER_WALK_MAX_ROW_BYTES:
        _register_columns(b, reduction)
    else:
        _streamed_columns(b, reduction)
    b.ret()
    return fn


@lowering(kernel.ReduceOp, runtime_extents=True)
def lower_reduce_runtime_rows(op: kernel.ReduceOp, target: Target, name: str) -> func.FuncOp:
    """A reduction over trailing static axes of rows known at run time only (ReduceMean over
    the last axis of [?, ?, 768]): each row swept as the static kernel's contiguous rows are,
    rows split over the threads at run time; over trailing axes with `?` see
    `_reduce_runtime_trailing`. Other `?` reductions are refused."""
    kind = op.kind.data
    if kind not in KINDS:
        raise ValueError(f"kernel.reduce: unknown kind '{kind}' (expected one of {KINDS})")
    in_shape = shape_of(op.input)
    axes = normalize_axes(op)
    first = axes[0] if axes else len(in_shape)
    expected = tuple(1 if d in axes else n for d, n in enumerate(in_shape))
    element = element_type_of(op.input)
    runtime_row = any(is_dynamic(n) for n in in_shape[first:])
    if (
        axes != list(range(first, len(in_shape)))
        or not axes
        or shape_of(op.output) != expected
        or (runtime_row and kind == "mean" and not isinstance(element, AnyFloat))
    ):
        raise NotImplementedError(
            "kernel.reduce with runtime extents reduces trailing static axes of rows only, "
            "or trailing axes with `?` (a mean of floats only): "
            f"{op.input.type} -> {op.output.type} over axes {axes}"
        )
    if runtime_row:
        return _reduce_runtime_trailing(op, kind, first, element, target, name)
    compute = element if kind in ("max", "min") else simd.compute_type(element)
    monoid = simd.Monoid("sum" if kind == "mean" else kind, compute)
    row = pymath.prod(in_shape[first:])
    width = target.vector_width
    unroll = simd.accumulator_unroll(target)

    fn, b = kernel_function(name, [op.input.type, op.output.type])  # type: ignore[list-item]
    rows = b.index(b.element_count(fn.args[0], range(first)))
    source = simd.runtime_rows_view(b, fn.args[0], rows, row)
    dest = simd.runtime_flat_view(b, fn.args[1], rows)

    def row_body(rb: LoopBuilder, at: list[SSAValue]) -> None:
        def visit(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
            return [_load(vb, source, [*at, j], w, monoid)]

        total = simd.sweep(rb, 0, row, width, visit, [monoid], unroll)[0]
        _store(rb, _finisher(kind, row, rb, total), dest, at)

    simd.runtime_rows_loop(b, rows, row, target, row_body)
    b.ret()
    return fn


def _reduce_runtime_trailing(
    op: kernel.ReduceOp, kind: str, first: int, element: Any, target: Target, name: str
) -> func.FuncOp:
    """A reduction over trailing axes of which some are `?` (GlobalAveragePool's mean over
    [?, C, ?, ?] -> [?, C, 1, 1]): each row (the reduced elements, a run-time count) one
    contiguous SIMD sweep of a flat view, the rows split over the threads at run time; a
    mean divides by the run-time count."""
    compute = element if kind in ("max", "min") else simd.compute_type(element)
    monoid = simd.Monoid("sum" if kind == "mean" else kind, compute)
    width = target.vector_width
    unroll = simd.accumulator_unroll(target)
    fn, b = kernel_function(name, [op.input.type, op.output.type])  # type: ignore[list-item]
    rank = len(shape_of(op.input))
    rows = b.index(b.element_count(fn.args[0], range(first)))
    row = b.index(b.element_count(fn.args[0], range(first, rank)))
    source = simd.runtime_flat_view(b, fn.args[0], b.mul(rows, row))
    dest = simd.runtime_flat_view(b, fn.args[1], rows)

    def row_body(rb: LoopBuilder, at: list[SSAValue]) -> None:
        start = rb.mul(at[0], row)

        def visit(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
            return [_load(vb, source, [vb.add(start, j)], w, monoid)]

        total = simd.sweep(rb, 0, row, width, visit, [monoid], unroll)[0]
        if kind == "mean":
            count = rb.insert(arith.IndexCastOp(row, i64)).results[0]
            divisor = rb.insert(arith.SIToFPOp(count, compute)).results[0]
            total = rb.insert(arith.DivfOp(total, divisor)).results[0]
        _store(rb, total, dest, at)

    # A row of about 64 elements for the threads' split (its size is known at run time only).
    simd.runtime_rows_loop(b, rows, 64, target, row_body)
    b.ret()
    return fn
