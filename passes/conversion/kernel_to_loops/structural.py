"""Loop lowerings of the structural kernels: slice, arg max/min, cumulative sum/product,
one-hot, range, top-k, and the data-dependent gathers and scatters (elements and ND).

The axis-wise kernels (arg_reduce, cumsum, one_hot, top_k) see their buffers as
[outer, n, inner] around one axis: work along `inner` is contiguous, so vectors run across
inner columns with one accumulator (or running best value and index) per lane, and the axis
itself is the loop they walk. Slices and ND gathers move contiguous runs with vector copies.
Element gathers and scatters read or write at data-dependent positions one element at a time
(scatters in order, so that duplicates combine exactly as ONNX specifies). Every index they
read is checked (checks.py): one outside [-size, size) is reported to the runtime, which raises
KernelError, and is never used as an address. One-hot needs no check: an index out of range
selects no position, so its row is all `off` values, as ONNX and onnxruntime specify.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.dialects import arith, func
from xdsl.dialects.builtin import AnyFloat, VectorType, f64, i64
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.graph import int_values
from ember.passes.conversion.kernel_to_loops import simd
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.passes.conversion.kernel_to_loops.checks import checked_index, checked_kernel_function
from ember.passes.conversion.kernel_to_loops.flat_access import (
    copy_flat,
    copy_run,
    decompose,
    element_type,
    fail,
    is_parallel,
    lanes_for,
    linear,
    load,
    loop,
    operand_types,
    row_major_strides,
    shape,
    store,
    to_index,
)
from ember.passes.conversion.kernel_to_loops.registry import lowering


def _around(dims: Sequence[int], axis: int) -> tuple[int, int, int]:
    return math.prod(dims[:axis]), dims[axis], math.prod(dims[axis + 1 :])


# -- slice -------------------------------------------------------------------------------------------
def slice_runs(
    in_shape: Sequence[int], starts: Sequence[int], steps: Sequence[int], out: Sequence[int]
) -> tuple[int, list[tuple[int, int]], int, int]:
    """(base offset, outer [(count, input stride)], run length, run step) of a slice.

    Trailing axes taken whole merge into one contiguous run together with the next axis if it
    has step 1; what remains are the outer axes a loop nest walks.
    """
    strides = row_major_strides(in_shape)
    base = sum(s * st for s, st in zip(starts, strides))
    k = len(in_shape) - 1
    run, run_step = 1, 1
    while k >= 0 and starts[k] == 0 and steps[k] == 1 and out[k] == in_shape[k]:
        run *= out[k]
        k -= 1
    if k >= 0 and (steps[k] == 1 or run == 1):
        # One more axis becomes the run: contiguous if its step is 1, strided otherwise.
        run_step = steps[k] * strides[k] if run == 1 else 1
        run *= out[k]
        k -= 1
    outer = [(out[d], steps[d] * strides[d]) for d in range(k + 1) if out[d] > 1]
    return base, outer, run, run_step


@lowering(kernel.SliceOp)
def lower_slice(op: kernel.SliceOp, target: Target, name: str) -> func.FuncOp:
    in_shape, out_shape = shape(op.input), shape(op.output)
    base, outer, run, run_step = slice_runs(
        in_shape, int_values(op.starts), int_values(op.steps), out_shape
    )
    fn, b = kernel_function(name, operand_types(op))
    src, dst = fn.args
    lanes = lanes_for(src, target)
    rows = math.prod(c for c, _ in outer)

    def row(rb: LoopBuilder, r: SSAValue) -> None:
        index = decompose(rb, r, [c for c, _ in outer])
        src_at = linear(rb, [(i, stride) for i, (_, stride) in zip(index, outer)], base)
        dst_at = rb.mul(r, run)
        if run_step == 1:
            copy_run(rb, src, src_at, dst, dst_at, run, lanes)
            return

        def element(eb: LoopBuilder, j: SSAValue) -> None:
            value = load(eb, src, linear(eb, [(j, run_step)], src_at), 1)
            store(eb, value, dst, eb.add(dst_at, j))

        loop(rb, 0, run, element)

    loop(b, 0, rows, row, parallel=is_parallel(rows * run) and rows > 1)
    b.ret()
    return fn


# -- arg max / arg min -------------------------------------------------------------------------------
def _better(b: LoopBuilder, kind: str, last: bool, x: SSAValue, best: SSAValue) -> SSAValue:
    """x replaces best: strictly better, or equal too when the last index wins."""
    scalar = x.type.get_element_type() if isinstance(x.type, VectorType) else x.type
    if isinstance(scalar, AnyFloat):
        predicate = {"max": "oge" if last else "ogt", "min": "ole" if last else "olt"}[kind]
        return b.insert(arith.CmpfOp(x, best, predicate)).results[0]
    predicate = {"max": "sge" if last else "sgt", "min": "sle" if last else "slt"}[kind]
    return b.insert(arith.CmpiOp(x, best, predicate)).results[0]


def _as_i64(b: LoopBuilder, index: SSAValue, width: int) -> SSAValue:
    value = b.insert(arith.IndexCastOp(index, i64)).results[0]
    return b.splat(value, width, i64) if width > 1 else value


@lowering(kernel.ArgReduceOp)
def lower_arg_reduce(op: kernel.ArgReduceOp, target: Target, name: str) -> func.FuncOp:
    in_shape = shape(op.input)
    axis = op.axis.value.data
    if not 0 <= axis < len(in_shape):
        raise fail(op, f"axis {axis} out of range for rank {len(in_shape)}")
    if element_type(op.output) != i64:
        raise fail(op, "output must be i64")
    kind, last = op.kind.data, bool(op.select_last_index.value.data)
    if kind not in ("max", "min"):
        raise fail(op, f"unknown kind '{kind}'")
    outer, n, inner = _around(in_shape, axis)
    fn, b = kernel_function(name, operand_types(op))
    src = simd.view(b, fn.args[0], [outer, n, inner])
    dst = simd.view(b, fn.args[1], [outer, inner])
    width = lanes_for(fn.args[0], target) if inner > 1 else 1

    def per_outer(ob: LoopBuilder, o: SSAValue) -> None:
        def block(bb: LoopBuilder, first: SSAValue, lanes: list[simd.Lane]) -> None:
            cols = [bb.add(first, off) if off else first for off, _ in lanes]
            init = [simd.load(bb, src, [o, 0, c], w) for c, (_, w) in zip(cols, lanes)]
            init += [_as_i64(bb, bb.index(0), w) for _, w in lanes]

            def step(rb: LoopBuilder, r: SSAValue, *carried: SSAValue) -> list[SSAValue]:
                best, where = list(carried[: len(lanes)]), list(carried[len(lanes) :])
                row = {w: _as_i64(rb, r, w) for w in {w for _, w in lanes}}
                for k, (c, (_, w)) in enumerate(zip(cols, lanes)):
                    x = simd.load(rb, src, [o, r, c], w)
                    take = _better(rb, kind, last, x, best[k])
                    best[k] = rb.select(take, x, best[k])
                    where[k] = rb.select(take, row[w], where[k])
                return best + where

            carried = bb.for_range(1, n, 1, step, init) if n > 1 else init
            for c, value in zip(cols, carried[len(lanes) :]):
                simd.store(bb, value, dst, [o, c])

        # A few vectors per block keep best value and index of each lane in registers.
        simd.column_blocks(ob, inner, width, 2, block)

    loop(b, 0, outer, per_outer, parallel=is_parallel(outer * n * inner) and outer > 1)
    b.ret()
    return fn


# -- cumulative sum ----------------------------------------------------------------------------------
@lowering(kernel.CumSumOp)
def lower_cumsum(op: kernel.CumSumOp, target: Target, name: str) -> func.FuncOp:
    in_shape = shape(op.input)
    axis = op.axis.value.data
    if not 0 <= axis < len(in_shape):
        raise fail(op, f"axis {axis} out of range for rank {len(in_shape)}")
    exclusive, reverse = bool(op.exclusive.value.data), bool(op.reverse.value.data)
    outer, n, inner = _around(in_shape, axis)
    # 16-bit floats run in float32 and each output is rounded once (a float16 running sum
    # was 7 ulps off after 2000 terms).
    element = element_type(op.input)
    total = simd.Monoid("prod" if op.product is not None else "sum", simd.compute_type(element))
    fn, b = kernel_function(name, operand_types(op))
    src, dst = (simd.view(b, arg, [outer, n, inner]) for arg in fn.args)
    width = lanes_for(fn.args[0], target) if inner > 1 else 1
    unroll = simd.accumulator_unroll(target)

    def per_outer(ob: LoopBuilder, o: SSAValue) -> None:
        def block(bb: LoopBuilder, first: SSAValue, lanes: list[simd.Lane]) -> None:
            cols = [bb.add(first, off) if off else first for off, _ in lanes]

            def step(rb: LoopBuilder, r: SSAValue, *sums: SSAValue) -> list[SSAValue]:
                row = rb.sub(n - 1, r) if reverse else r
                new = []
                for c, (_, w), acc in zip(cols, lanes, sums):
                    x = simd.convert_float(rb, simd.load(rb, src, [o, row, c], w), total.type)
                    added = total.combine(rb, acc, x)
                    result = simd.convert_float(rb, acc if exclusive else added, element)
                    simd.store(rb, result, dst, [o, row, c])
                    new.append(added)
                return new

            bb.for_range(0, n, 1, step, [total.init(bb, w) for _, w in lanes])

        simd.column_blocks(ob, inner, width, unroll, block)

    loop(b, 0, outer, per_outer, parallel=is_parallel(outer * n * inner) and outer > 1)
    b.ret()
    return fn


# -- gather elements ---------------------------------------------------------------------------------
@lowering(kernel.GatherElementsOp)
def lower_gather_elements(op: kernel.GatherElementsOp, target: Target, name: str) -> func.FuncOp:
    data_shape, idx_shape = shape(op.data), shape(op.indices)
    axis = op.axis.value.data
    if shape(op.output) != idx_shape:
        raise fail(op, f"output {list(shape(op.output))} != indices {list(idx_shape)}")
    ignore = None if op.ignore_index is None else op.ignore_index.value.data
    extent = data_shape[axis]
    strides = row_major_strides(data_shape)
    total = math.prod(idx_shape)
    fn, b, status = checked_kernel_function(name, operand_types(op))
    data, indices, out = fn.args[:3]

    # One element per iteration: the reads are data-dependent, so there is no vector form
    # short of hardware gathers, which the few callers (losses, index plumbing) do not need.
    def element(eb: LoopBuilder, i: SSAValue) -> None:
        position = decompose(eb, i, idx_shape)
        raw = to_index(eb, load(eb, indices, i, 1))
        index = checked_index(eb, status, raw, extent, axis, allowed=ignore)
        terms = [
            (p, strides[d]) for d, p in enumerate(position) if d != axis and data_shape[d] != 1
        ]
        value = load(eb, data, linear(eb, [*terms, (index, strides[axis])]), 1)
        if ignore is not None:
            zero = eb.const(0, element_type(data))
            value = eb.select(eb.cmp_index("eq", raw, ignore), zero, value)
        store(eb, value, out, i)

    loop(b, 0, total, element, parallel=is_parallel(total))
    b.ret()
    return fn


# -- one hot -----------------------------------------------------------------------------------------
@lowering(kernel.OneHotOp)
def lower_one_hot(op: kernel.OneHotOp, target: Target, name: str) -> func.FuncOp:
    out_shape = shape(op.output)
    axis = op.axis.value.data
    if element_type(op.indices) != i64:
        raise fail(op, "indices must be i64")
    outer, depth, inner = _around(out_shape, axis)
    fn, b = kernel_function(name, operand_types(op))
    indices = simd.view(b, fn.args[0], [outer, inner])
    out = simd.view(b, fn.args[2], [outer, depth, inner])
    off, on = b.load(fn.args[1], [0]), b.load(fn.args[1], [1])
    width = lanes_for(fn.args[2], target)

    def plane(pb: LoopBuilder, at: list[SSAValue]) -> None:
        o, k = at
        position = _as_i64(pb, k, 1)

        # Vectors run along the contiguous inner dim: compare a vector of indices with k.
        def visit(vb: LoopBuilder, i: SSAValue, w: int) -> list[SSAValue]:
            def splat(scalar: SSAValue) -> SSAValue:
                return simd.broadcast(vb, scalar, w)

            raw = simd.load(vb, indices, [o, i], w)
            zero, extent = splat(vb.const(0, i64)), splat(vb.const(depth, i64))
            negative = vb.insert(arith.CmpiOp(raw, zero, "slt")).results[0]
            wrapped = vb.select(negative, vb.insert(arith.AddiOp(raw, extent)).results[0], raw)
            hit = vb.insert(arith.CmpiOp(wrapped, splat(position), "eq")).results[0]
            simd.store(vb, vb.select(hit, splat(on), splat(off)), out, [o, k, i])
            return []

        simd.sweep(pb, 0, inner, width, visit)

    total = math.prod(out_shape)
    simd.for_each_index(b, [outer, depth], plane, is_parallel(total) and outer * depth > 1)
    b.ret()
    return fn


# -- range -------------------------------------------------------------------------------------------
@lowering(kernel.RangeOp)
def lower_range(op: kernel.RangeOp, target: Target, name: str) -> func.FuncOp:
    """out[i] = start + i * delta, a vector of consecutive i at a time. Floats are computed in
    f64 (i exact up to 2^53) and rounded once; integers in their own type, wrapping."""
    (count,) = shape(op.output)
    kind = element_type(op.output)
    if shape(op.start) != (1,) or shape(op.delta) != (1,):
        raise fail(op, "start and delta must hold one element each")
    is_float = isinstance(kind, AnyFloat)
    wide = f64 if is_float else kind
    fn, b = kernel_function(name, operand_types(op))
    start_buf, delta_buf, out = fn.args
    start, delta = b.load(start_buf, [0]), b.load(delta_buf, [0])
    if is_float and kind != f64:
        start = b.insert(arith.ExtFOp(start, f64)).results[0]
        delta = b.insert(arith.ExtFOp(delta, f64)).results[0]
    width = lanes_for(out, target)

    def row(rb: LoopBuilder, lo: SSAValue | int, hi: SSAValue | int) -> None:
        def visit(vb: LoopBuilder, i: SSAValue, w: int) -> list[SSAValue]:
            at = vb.insert(arith.IndexCastOp(i, i64 if is_float else wide)).results[0]
            if is_float:
                at = vb.insert(arith.SIToFPOp(at, f64)).results[0]
            if w > 1:
                at = vb.splat(at, w, wide)
                lanes = vb.lane_numbers(w, wide)
                at = vb.insert((arith.AddfOp if is_float else arith.AddiOp)(at, lanes)).results[0]
            step, first = simd.broadcast(vb, delta, w), simd.broadcast(vb, start, w)
            if is_float:
                value = vb.addf(vb.mulf(at, step), first)
                if kind != f64:
                    vtype = VectorType(kind, [w]) if w > 1 else kind
                    value = vb.insert(arith.TruncFOp(value, vtype)).results[0]
            else:
                value = vb.insert(arith.AddiOp(vb.insert(arith.MuliOp(at, step)).results[0], first))
                value = value.results[0]
            simd.store(vb, value, out, [i])
            return []

        simd.sweep(rb, lo, hi, width, visit)

    simd.split_flat(b, count, width, target, row)
    b.ret()
    return fn


# -- scatter elements --------------------------------------------------------------------------------
_SCATTER_COMBINE = {
    # reduction: (float op, integer op)
    "add": (arith.AddfOp, arith.AddiOp),
    "mul": (arith.MulfOp, arith.MuliOp),
    "max": (arith.MaximumfOp, arith.MaxSIOp),
    "min": (arith.MinimumfOp, arith.MinSIOp),
}


@lowering(kernel.ScatterElementsOp)
def lower_scatter_elements(op: kernel.ScatterElementsOp, target: Target, name: str) -> func.FuncOp:
    data_shape, idx_shape = shape(op.data), shape(op.indices)
    axis, reduction = op.axis.value.data, op.reduction.data
    if reduction != "none" and reduction not in _SCATTER_COMBINE:
        raise fail(op, f"unknown reduction '{reduction}'")
    extent = data_shape[axis]
    strides = row_major_strides(data_shape)
    fn, b, status = checked_kernel_function(name, operand_types(op))
    data, indices, updates, out = fn.args[:4]
    copy_flat(b, data, out, math.prod(data_shape), target)
    is_float = isinstance(element_type(data), AnyFloat)

    # Updates apply one at a time, in order: duplicates must combine (or overwrite) exactly as
    # a sequential scatter does, so this loop is neither vectorized nor split over threads.
    def element(eb: LoopBuilder, i: SSAValue) -> None:
        position = decompose(eb, i, idx_shape)
        index = checked_index(eb, status, to_index(eb, load(eb, indices, i, 1)), extent, axis)
        terms = [(p, strides[d]) for d, p in enumerate(position) if d != axis]
        at = linear(eb, [*terms, (index, strides[axis])])
        value = load(eb, updates, i, 1)
        if reduction != "none":
            combine = _SCATTER_COMBINE[reduction][0 if is_float else 1]
            value = eb.insert(combine(load(eb, out, at, 1), value)).results[0]
        store(eb, value, out, at)

    loop(b, 0, math.prod(idx_shape), element)
    b.ret()
    return fn


# -- top k -------------------------------------------------------------------------------------------
def _ranks_before(b: LoopBuilder, largest: bool, x: SSAValue, ahead: SSAValue) -> SSAValue:
    """x strictly precedes `ahead` in TopK's order. Floats order NaN above every number (as
    onnxruntime and numpy's sort do): NaNs come first when `largest`, last otherwise; among
    NaNs, as among equal numbers, the earlier index stays ahead."""
    scalar = x.type.get_element_type() if isinstance(x.type, VectorType) else x.type
    if not isinstance(scalar, AnyFloat):
        return _better(b, "max" if largest else "min", False, x, ahead)
    # largest: x > ahead, or x NaN and ahead not: ugt(x, ahead) and ahead is ordered.
    # smallest: x < ahead, or ahead NaN and x not: ult(x, ahead) and x is ordered.
    number = ahead if largest else x
    unordered_or_beats = b.insert(arith.CmpfOp(x, ahead, "ugt" if largest else "ult")).results[0]
    ordered = b.insert(arith.CmpfOp(number, number, "ord")).results[0]
    return b.insert(arith.AndIOp(unordered_or_beats, ordered)).results[0]


# From this k on, TopK keeps its best k in a heap (O(n log k) per column) instead of a sorted
# list that newcomers are inserted into (O(n k) at worst, O(n^2) for a full sort: Unique).
HEAP_TOP_K_MIN = 32


def _heap_top_k(
    cb: LoopBuilder,
    src: SSAValue,
    dst: SSAValue,
    o: SSAValue,
    c: SSAValue,
    n: int,
    k: int,
    largest: bool,
) -> None:
    """The best k of one column into dst[o, :, c], best first, with a binary heap of indices
    whose root is the worst kept (then sorted in place by popping it to the end). The order is
    strict and total (values as TopK orders them, then the lower index first), so the result
    is the insertion sort's exactly."""
    depth = max(1, k.bit_length())

    def precedes(eb: LoopBuilder, i: SSAValue, j: SSAValue) -> SSAValue:
        vi, vj = eb.load(src, [o, i, c]), eb.load(src, [o, j, c])
        i_first = _ranks_before(eb, largest, vi, vj)
        j_first = _ranks_before(eb, largest, vj, vi)
        tie = eb.insert(arith.AndIOp(eb.cmp_index("ult", i, j), _not(eb, j_first))).results[0]
        return eb.insert(arith.OrIOp(i_first, tie)).results[0]

    def slot(eb: LoopBuilder, at: SSAValue) -> SSAValue:
        return to_index(eb, eb.load(dst, [o, at, c]))

    def sift_down(eb: LoopBuilder, start: SSAValue, size: SSAValue) -> None:
        def level(lb: LoopBuilder, _: SSAValue, at: SSAValue) -> list[SSAValue]:
            left = lb.add(lb.mul(at, 2), 1)
            right = lb.add(left, 1)
            # Slots past the heap are read clamped (they hold indices) and never chosen.
            left_item = slot(lb, lb.min_index(left, k - 1))
            right_item = slot(lb, lb.min_index(right, k - 1))
            # The worse child goes up: the root is the worst kept.
            take_right = lb.insert(
                arith.AndIOp(lb.cmp_index("ult", right, size), precedes(lb, left_item, right_item))
            ).results[0]
            child = lb.select(take_right, right, left)
            child_item = lb.select(take_right, right_item, left_item)
            at_item = slot(lb, at)
            swap = lb.insert(
                arith.AndIOp(lb.cmp_index("ult", left, size), precedes(lb, at_item, child_item))
            ).results[0]

            def exchange(sb: LoopBuilder) -> None:
                sb.store(_as_i64(sb, child_item, 1), dst, [o, at, c])
                sb.store(_as_i64(sb, at_item, 1), dst, [o, child, c])

            lb.if_(swap, exchange)
            return [lb.select(swap, child, at)]

        eb.for_range(0, depth, 1, level, [start])

    cb.for_range(0, k, 1, lambda ib, p: ib.store(_as_i64(ib, p, 1), dst, [o, p, c]))
    size = cb.index(k)
    cb.for_range(0, k // 2, 1, lambda hb, q: sift_down(hb, hb.sub(k // 2 - 1, q), size))

    def offer(jb: LoopBuilder, j: SSAValue) -> None:
        def replace(rb: LoopBuilder) -> None:
            rb.store(_as_i64(rb, j, 1), dst, [o, rb.index(0), c])
            sift_down(rb, rb.index(0), size)

        jb.if_(precedes(jb, j, slot(jb, jb.index(0))), replace)

    cb.for_range(k, n, 1, offer)

    def pop(pb: LoopBuilder, step: SSAValue) -> None:
        end = pb.sub(k - 1, step)  # k - 1, ..., 1: the worst left goes there
        root, last = slot(pb, pb.index(0)), slot(pb, end)
        pb.store(_as_i64(pb, last, 1), dst, [o, pb.index(0), c])
        pb.store(_as_i64(pb, root, 1), dst, [o, end, c])
        sift_down(pb, pb.index(0), end)

    cb.for_range(0, k - 1, 1, pop)


def _not(b: LoopBuilder, x: SSAValue) -> SSAValue:
    true = b.insert(arith.ConstantOp.from_int_and_width(1, 1)).results[0]
    return b.insert(arith.XOrIOp(x, true)).results[0]


@lowering(kernel.TopKOp)
def lower_top_k(op: kernel.TopKOp, target: Target, name: str) -> func.FuncOp:
    in_shape, out_shape = shape(op.input), shape(op.output)
    axis, largest = op.axis.value.data, bool(op.largest.value.data)
    outer, n, inner = _around(in_shape, axis)
    k = out_shape[axis]
    fn, b = kernel_function(name, operand_types(op))
    src = simd.view(b, fn.args[0], [outer, n, inner])
    dst = simd.view(b, fn.args[1], [outer, k, inner])

    def column(cb: LoopBuilder, at: list[SSAValue]) -> None:
        o, c = at
        if k >= HEAP_TOP_K_MIN:
            _heap_top_k(cb, src, dst, o, c, n, k, largest)
            return

        # Insertion into the sorted list of the best k seen so far (held in the output as
        # indices). Strictly better only: among equal values the earlier index stays ahead.
        def candidate(jb: LoopBuilder, j: SSAValue) -> None:
            v = jb.load(src, [o, j, c])
            last = jb.min_index(j, k - 1)  # the slot a newcomer starts from
            filling = jb.cmp_index("slt", j, k)
            # Until k candidates are in, the last slot holds whatever the buffer held: read
            # position 0 instead of using that as an address (its comparison is then unused).
            chosen = jb.select(filling, jb.index(0), to_index(jb, jb.load(dst, [o, k - 1, c])))
            beats_last = _ranks_before(jb, largest, v, jb.load(src, [o, chosen, c]))
            enters = jb.insert(arith.OrIOp(filling, beats_last)).results[0]

            def insert(ib: LoopBuilder) -> None:
                def shift(sb: LoopBuilder, step: SSAValue, slot: SSAValue, moving: SSAValue):
                    p = sb.sub(last, step)  # last, last-1, ..., 1
                    prev = sb.load(dst, [o, sb.sub(p, 1), c])
                    ahead = sb.load(src, [o, to_index(sb, prev), c])
                    better = _ranks_before(sb, largest, v, ahead)
                    move = sb.insert(arith.AndIOp(moving, better)).results[0]
                    sb.if_(move, lambda tb: tb.store(prev, dst, [o, p, c]))
                    return [sb.select(move, sb.sub(p, 1), slot), move]

                true = ib.insert(arith.ConstantOp.from_int_and_width(1, 1)).results[0]
                slot, _ = ib.for_range(0, last, 1, shift, [last, true])
                ib.store(_as_i64(ib, j, 1), dst, [o, slot, c])

            jb.if_(enters, insert)

        cb.for_range(0, n, 1, lambda jb, j: candidate(jb, j))

    parallel = is_parallel(outer * n * inner) and outer * inner > 1
    simd.for_each_index(b, [outer, inner], column, parallel)
    b.ret()
    return fn


# -- gather nd / scatter nd --------------------------------------------------------------------------
def _nd_offset(
    b: LoopBuilder,
    status: SSAValue,
    indices: SSAValue,
    tuple_at: SSAValue,
    first_dim: int,
    dims: Sequence[int],
    strides: Sequence[int],
    base: SSAValue | int = 0,
) -> SSAValue:
    """base + the flat offset named by the index tuple starting at flat position `tuple_at`,
    whose components index data dims first_dim, first_dim + 1, ... (each one checked)."""
    terms = []
    for j, (extent, stride) in enumerate(zip(dims, strides)):
        raw = to_index(b, load(b, indices, b.add(tuple_at, j), 1))
        terms.append((checked_index(b, status, raw, extent, first_dim + j), stride))
    return linear(b, terms, base)


@lowering(kernel.GatherNDOp)
def lower_gather_nd(op: kernel.GatherNDOp, target: Target, name: str) -> func.FuncOp:
    data_shape, idx_shape = shape(op.data), shape(op.indices)
    batch, k = op.batch_dims.value.data, idx_shape[-1]
    strides = row_major_strides(data_shape)
    run = math.prod(data_shape[batch + k :])  # each tuple picks one contiguous slice
    per_batch = math.prod(idx_shape[batch:-1])
    tuples = math.prod(idx_shape[:-1])
    fn, b, status = checked_kernel_function(name, operand_types(op))
    data, indices, out = fn.args[:3]
    lanes = lanes_for(data, target)

    def pick(tb: LoopBuilder, t: SSAValue) -> None:
        # All batch dims together select one [data_shape[batch:]] block of data.
        base = tb.mul(tb.floordiv(t, per_batch), strides[batch - 1]) if batch else 0
        src = _nd_offset(
            tb,
            status,
            indices,
            tb.mul(t, k),
            batch,
            data_shape[batch : batch + k],
            strides[batch : batch + k],
            base,
        )
        copy_run(tb, data, src, out, tb.mul(t, run), run, lanes)

    loop(b, 0, tuples, pick, parallel=is_parallel(tuples * run))
    b.ret()
    return fn


@lowering(kernel.ScatterNDOp)
def lower_scatter_nd(op: kernel.ScatterNDOp, target: Target, name: str) -> func.FuncOp:
    data_shape, idx_shape = shape(op.data), shape(op.indices)
    k, reduction = idx_shape[-1], op.reduction.data
    if reduction != "none" and reduction not in _SCATTER_COMBINE:
        raise fail(op, f"unknown reduction '{reduction}'")
    strides = row_major_strides(data_shape)
    run = math.prod(data_shape[k:])
    fn, b, status = checked_kernel_function(name, operand_types(op))
    data, indices, updates, out = fn.args[:4]
    copy_flat(b, data, out, math.prod(data_shape), target)
    lanes = lanes_for(data, target)
    is_float = isinstance(element_type(data), AnyFloat)

    # Tuples apply in order (later duplicates win or combine), each slice with vectors.
    def put(tb: LoopBuilder, t: SSAValue) -> None:
        dst = _nd_offset(tb, status, indices, tb.mul(t, k), 0, data_shape[:k], strides[:k])
        src = tb.mul(t, run)
        if reduction == "none":
            copy_run(tb, updates, src, out, dst, run, lanes)
            return
        combine = _SCATTER_COMBINE[reduction][0 if is_float else 1]

        def element(eb: LoopBuilder, j: SSAValue) -> None:
            at = eb.add(dst, j)
            value = eb.insert(combine(load(eb, out, at, 1), load(eb, updates, eb.add(src, j), 1)))
            store(eb, value.results[0], out, at)

        loop(tb, 0, run, element)

    loop(b, 0, math.prod(idx_shape[:-1]), put)
    b.ret()
    return fn
