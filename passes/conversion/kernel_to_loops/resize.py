"""Loop lowering of kernel.resize_linear (linear Resize of the last two axes).

One output row at a time (the rows of all planes are the parallel loop): the two input rows
it blends are a row index and a weight each, read from the tables, and every column of the
output reads the blend `a0 * row0 + a1 * row1` at its two tap columns. Where the columns
repeat a pattern (a whole upsampling factor k: output column i * k + j reads input columns
i + offset[j, t] with weight[j, t], both known when compiling), `vector_width` input columns
are blended at once per tap, weighted per phase j and interleaved into k output vectors with
shuffles; the columns outside that interior (clamped at the edges) and the columns of an axis
without a pattern read their taps from the tables one at a time.

A tap of weight 0 contributes exactly 0 (a select, not a product: 0 * inf is NaN), as the
graph op says; a phase tap of weight 0 is not read at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.dialects import arith, func
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, VectorType, f32, i1
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.passes.conversion.kernel_to_loops.flat_access import (
    broadcast,
    element_type,
    fail,
    fconst,
    is_parallel,
    linear,
    load,
    loop,
    operand_types,
    shape,
    shuffle,
    store,
    to_index,
)
from ember.passes.conversion.kernel_to_loops.registry import lowering


def _compare(b: LoopBuilder, weight: SSAValue, predicate: str) -> SSAValue:
    """weight <predicate> 0.0 (an i1)."""
    return b.insert(arith.CmpfOp(weight, b.const(0.0, f32), predicate)).results[0]


def _tap(b: LoopBuilder, weight: SSAValue, zero: SSAValue, value: SSAValue) -> SSAValue:
    """weight * value, exactly 0 where the weight is 0."""
    width = value.type.get_shape()[0] if isinstance(value.type, VectorType) else 1
    product = b.mulf(broadcast(b, weight, width), value)
    return b.select(zero, fconst(b, 0.0, width), product)


def interleave(b: LoopBuilder, phases: Sequence[SSAValue], width: int) -> list[SSAValue]:
    """The k phase vectors P_j (P_j[i] = output i * k + j) as k consecutive output vectors,
    each a chain of two-input shuffles (one more per further phase it takes lanes from)."""
    k = len(phases)
    if k == 1:
        return [phases[0]]
    outputs = []
    for m in range(k):
        lanes = [divmod(m * width + e, k) for e in range(width)]  # (lane i of P_j, j)
        order = list(dict.fromkeys(j for _, j in lanes))
        first, second = order[0], order[1] if len(order) > 1 else order[0]
        mask = [i if j == first else width + i if j == second else 0 for i, j in lanes]
        acc = shuffle(b, phases[first], phases[second], mask)
        for later in order[2:]:
            mask = [width + i if j == later else e for e, (i, j) in enumerate(lanes)]
            acc = shuffle(b, acc, phases[later], mask)
        outputs.append(acc)
    return outputs


def _vector_constant(b: LoopBuilder, values: Sequence[float]) -> SSAValue:
    vtype = VectorType(f32, [len(values)])
    return b.insert(
        arith.ConstantOp(DenseIntOrFPElementsAttr.from_list(vtype, list(values)))
    ).results[0]


@dataclass(frozen=True)
class _Block:
    """A vector of output columns without a pattern: the input columns they read lie in
    [start, start + vw) (or + 2 vw with `two_vectors`); per tap, the lane of those each
    output lane takes and its weight."""

    start: int
    two_vectors: bool
    lanes: tuple[tuple[int, ...], tuple[int, ...]]
    weights: tuple[tuple[float, ...], tuple[float, ...]]


def plan_column_blocks(
    taps: Sequence[int], weights: Sequence[float], in_width: int, vw: int
) -> list[tuple[int, _Block | None]]:
    """(first output column, block) per vector of output columns, the last one overlapping
    the one before when vw does not divide the width (it writes the same values again): the
    block that shuffles the taps (of weight not 0) out of the one or two input vectors they
    lie in; None where they spread wider (downsampling), for the tables' one-column loop."""
    out_width = len(taps) // 2
    firsts = list(range(0, out_width - vw + 1, vw))
    if firsts and out_width % vw:
        firsts.append(out_width - vw)
    blocks: list[tuple[int, _Block | None]] = []
    for first in firsts:
        cols = range(first, first + vw)
        read = [taps[2 * c + t] for c in cols for t in range(2) if weights[2 * c + t] != 0]
        if not read:
            read = [0]
        lo, hi = min(read), max(read)
        if hi - lo < vw and in_width >= vw:
            start, two = min(lo, in_width - vw), False
        elif hi - lo < 2 * vw and in_width >= 2 * vw:
            start, two = min(lo, in_width - 2 * vw), True
        else:
            blocks.append((first, None))
            continue
        lanes = tuple(
            tuple(taps[2 * c + t] - start if weights[2 * c + t] != 0 else 0 for c in cols)
            for t in range(2)
        )
        tap_weights = tuple(tuple(weights[2 * c + t] for c in cols) for t in range(2))
        blocks.append((first, _Block(start, two, lanes, tap_weights)))  # type: ignore[arg-type]
    return blocks


@lowering(kernel.ResizeLinearOp)
def lower_resize_linear(op: kernel.ResizeLinearOp, target: Target, name: str) -> func.FuncOp:
    x_shape, y_shape = shape(op.data), shape(op.output)
    if len(x_shape) < 2 or x_shape[:-2] != y_shape[:-2]:
        raise fail(op, f"output {list(y_shape)} is not {list(x_shape)} resized on its last axes")
    types = [str(element_type(v)) for v in (op.data, op.indices, op.weights, op.output)]
    if types != ["f32", "i32", "f32", "f32"]:
        raise fail(op, f"takes f32 data and output, i32 indices, f32 weights; got {types}")
    h, w = x_shape[-2:]
    out_h, out_w = y_shape[-2:]
    planes = math.prod(x_shape[:-2])
    k = op.column_factor.value.data
    lo, hi = (int(v) for v in op.column_interior.get_values())
    offsets = [int(v) for v in op.column_offsets.get_values()]
    phase_weights = [float(v) for v in op.column_weights.get_values()]
    vw = target.vector_width

    column_blocks = None
    if k == 0 and op.column_taps is not None and op.column_tap_weights is not None:
        taps = [int(v) for v in op.column_taps.get_values()]
        tap_weights = [float(v) for v in op.column_tap_weights.get_values()]
        column_blocks = plan_column_blocks(taps, tap_weights, w, vw)

    fn, b = kernel_function(name, operand_types(op))
    src, table, weights, dst = fn.args

    def output_row(rb: LoopBuilder, it: SSAValue) -> None:
        if planes > 1:
            plane, o = rb.floordiv(it, out_h), rb.rem(it, out_h)
            plane_base = linear(rb, [(plane, h * w)])
        else:
            o, plane_base = it, rb.index(0)
        row_taps = []
        for t in range(2):
            at = linear(rb, [(o, 2)], t)
            row = to_index(rb, load(rb, table, at, 1))
            weight = load(rb, weights, at, 1)
            row_taps.append(
                (linear(rb, [(row, w)], plane_base), weight, _compare(rb, weight, "oeq"))
            )
        out_base = linear(rb, [(it, out_w)])
        # An output row on an input row (one weight 0: align_corners' ends, asymmetric's even
        # rows, an axis not resized) reads that one row: its own copy of the column loops.
        (base0, weight0, zero0), (base1, weight1, zero1) = row_taps
        single = rb.insert(arith.OrIOp(zero0, zero1)).results[0]
        one_row = (rb.select(zero0, base1, base0), rb.select(zero0, weight1, weight0))
        rb.if_(single, lambda sb: _columns(sb, [one_row], out_base))
        both = rb.insert(arith.XOrIOp(single, rb.const(1, i1))).results[0]
        rb.if_(both, lambda bb: _columns(bb, [(base0, weight0), (base1, weight1)], out_base))

    def _columns(
        rb: LoopBuilder, rows: list[tuple[SSAValue, SSAValue]], out_base: SSAValue
    ) -> None:
        """One output row from the blend of `rows` (start, weight; weights not 0)."""

        def blended(bb: LoopBuilder, column: SSAValue, width: int) -> SSAValue:
            """sum of weight * row at input columns column .. column + width."""
            y = None
            for base, weight in rows:
                v = load(bb, src, bb.add(base, column), width)
                if len(rows) > 1:
                    v = bb.mulf(broadcast(bb, weight, width), v)
                y = v if y is None else bb.addf(y, v)
            assert y is not None
            if len(rows) == 1:  # its weight, 1 in exact arithmetic, applied once
                y = bb.mulf(broadcast(bb, rows[0][1], width), y)
            return y

        def table_column(cb: LoopBuilder, c: SSAValue) -> None:
            """Output column c from its taps in the table, one element."""
            y = None
            for t in range(2):
                at = linear(cb, [(c, 2)], 2 * out_h + t)
                column = to_index(cb, load(cb, table, at, 1))
                weight = load(cb, weights, at, 1)
                term = _tap(cb, weight, _compare(cb, weight, "oeq"), blended(cb, column, 1))
                y = term if y is None else cb.addf(y, term)
            assert y is not None
            store(cb, y, dst, cb.add(out_base, c))

        def shuffled_block(sb: LoopBuilder, plan: _Block) -> SSAValue:
            """One vector of output columns: the blend of the (one or two) input vectors it
            spans, each tap's lanes shuffled out of them and weighted by constants."""
            first = blended(sb, sb.index(plan.start), vw)
            second = blended(sb, sb.index(plan.start + vw), vw) if plan.two_vectors else first
            y = None
            for lanes, tap_weights in zip(plan.lanes, plan.weights, strict=True):
                if not any(tap_weights):
                    continue
                v = shuffle(sb, first, second, lanes)
                if any(wt != 1.0 for wt in tap_weights):
                    v = sb.mulf(v, _vector_constant(sb, tap_weights))
                if not all(tap_weights):  # lanes of weight 0: exactly 0, whatever they read
                    zero = fconst(sb, 0.0, vw)
                    v = shuffle(
                        sb, v, zero, [vw + e if wt == 0 else e for e, wt in enumerate(tap_weights)]
                    )
                y = v if y is None else sb.addf(y, v)
            return y if y is not None else fconst(sb, 0.0, vw)

        def phases(pb: LoopBuilder, i: SSAValue, width: int) -> list[SSAValue]:
            """P_j over input columns i .. i + width: output columns (i + lane) * k + j."""
            result = []
            for j in range(k):
                acc = None
                for t in range(2):
                    weight = phase_weights[2 * j + t]
                    if weight == 0.0:
                        continue  # contributes exactly 0: not read
                    v = blended(pb, pb.add(i, offsets[2 * j + t]), width)
                    if weight != 1.0:
                        v = pb.mulf(v, fconst(pb, weight, width))
                    acc = v if acc is None else pb.addf(acc, v)
                result.append(acc if acc is not None else fconst(pb, 0.0, width))
            return result

        if k == 0:
            done = 0  # output columns written so far
            for first, plan in column_blocks or []:
                if plan is None:
                    loop(rb, max(first, done), first + vw, table_column)
                else:
                    store(rb, shuffled_block(rb, plan), dst, rb.add(out_base, first))
                done = first + vw
            loop(rb, done, out_w, table_column)
            return
        loop(rb, 0, lo * k, table_column)
        blocks = (hi - lo) // vw

        def vector_at(vb: LoopBuilder, i: SSAValue) -> None:
            at = linear(vb, [(i, k)], out_base)
            for m, v in enumerate(interleave(vb, phases(vb, i, vw), vw)):
                store(vb, v, dst, vb.add(at, m * vw))

        def vector_block(vb: LoopBuilder, blk: SSAValue) -> None:
            vector_at(vb, linear(vb, [(blk, vw)], lo))

        def single(sb: LoopBuilder, i: SSAValue) -> None:
            at = linear(sb, [(i, k)], out_base)
            for j, v in enumerate(phases(sb, i, 1)):
                store(sb, v, dst, sb.add(at, j))

        loop(rb, 0, blocks, vector_block)
        if blocks and (hi - lo) % vw:
            # The columns left over: one more vector ending at hi, overlapping the last
            # (it writes the same values again), rather than a scalar loop.
            vector_at(rb, rb.index(hi - vw))
        else:
            loop(rb, lo + blocks * vw, hi, single)
        loop(rb, hi * k, out_w, table_column)

    loop(b, 0, planes * out_h, output_row, parallel=is_parallel(planes * out_h * out_w))
    b.ret()
    return fn
