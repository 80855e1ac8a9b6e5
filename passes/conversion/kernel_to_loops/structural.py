"""Loop lowerings of the structural kernels: strided slice, arg max/min, cumulative sum.

All three see their buffer as [outer, n, inner] around one axis (or, for slice, as a box of
runs): work along `inner` is contiguous, so vectors run across inner columns with one
accumulator (or running best value/index) per lane, and the axis itself is the loop they walk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.dialects import arith, func
from xdsl.dialects.builtin import AnyFloat, VectorType, i64
from xdsl.ir import SSAValue

from ember.dialects import kernel
from ember.dialects.graph import int_values
from ember.passes.conversion.kernel_to_loops import simd
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.passes.conversion.kernel_to_loops.flat_access import (
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
from ember.passes.target import Target


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
    total = simd.Monoid("sum", element_type(op.input))
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
                    added = total.combine(rb, acc, simd.load(rb, src, [o, row, c], w))
                    simd.store(rb, acc if exclusive else added, dst, [o, row, c])
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
    fn, b = kernel_function(name, operand_types(op))
    data, indices, out = fn.args

    # One element per iteration: the reads are data-dependent, so there is no vector form
    # short of hardware gathers, which the few callers (losses, index plumbing) do not need.
    def element(eb: LoopBuilder, i: SSAValue) -> None:
        position = decompose(eb, i, idx_shape)
        raw = to_index(eb, load(eb, indices, i, 1))
        # Negative indices wrap once; anything still outside is clamped so a bad index reads a
        # wrong element instead of faulting.
        wrapped = eb.select(eb.cmp_index("slt", raw, 0), eb.add(raw, extent), raw)
        index = eb.min_index(eb.max_index(wrapped, 0), extent - 1)
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
