"""kernel.attention -> one streaming kernel: softmax(scale * Q K^T + mask) V.

Work is split into query blocks of MR rows of one (batch, head); the blocks are the parallel
units across threads. A block walks the keys in tiles of NK (two vectors; the last tile takes
what remains: whole vectors, then single keys) and keeps, per row, the running maximum m, the
running sum l of exp(s - m) and an MR x Dv output accumulator O (online softmax):

    S    = Q[rows] @ K^T[:, tile] * scale (+ mask)     MR x NK in registers (K^T rows are
                                                        contiguous over keys: vector FMAs)
    m'   = max(m, rowmax S)                             NaN propagates (arith.maximumf)
    c    = exp(m - m'),  P = exp(S - m')                P goes to an MR x NK scratch in L1
    l    = l c + rowsum P,  O = O c + P @ V[tile]       register-blocked MR x 2 vectors
    out  = O / l                                        after the last tile

so the score matrix is never written to memory. A row whose maximum so far is -inf (every key
masked with -inf) subtracts 0 instead of m' (exp(-inf - -inf) would be NaN and poison the
row even when later keys are finite); a row that stays -inf to the end has l = 0 and O = 0,
so out = 0 / 0 = NaN, as onnxruntime's (and ember's unfused) softmax gives for such a row.
NaN or +inf scores make the row NaN, as the unfused softmax does.
"""

from __future__ import annotations

import math as pymath
from collections.abc import Callable

from xdsl.dialects import arith, func
from xdsl.dialects.builtin import f32
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.graph import attention_dims, element_type_of, int_values, shape_of
from ember.passes.conversion.kernel_to_loops import simd
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, Value, kernel_function
from ember.passes.conversion.kernel_to_loops.gemm_common import alloca, if_else, split_static
from ember.passes.conversion.kernel_to_loops.registry import lowering

KEY_VECTORS = 2  # vectors of keys per tile: MR x 2 score accumulators
VALUE_VECTORS = 2  # vectors of Dv per pass of P @ V: MR x 2 output accumulators


def query_rows(target: Target) -> int:
    """Rows per block: MR x 2 accumulators plus the loaded vectors fit the register file."""
    return max(2, target.vector_registers // 4)


def _splat_for(b: LoopBuilder, scalar: SSAValue, width: int) -> SSAValue:
    return simd.broadcast(b, scalar, width)


def _row_combine(b: LoopBuilder, monoid: simd.Monoid, values: list[SSAValue]) -> SSAValue:
    """One scalar from a row's lanes (vectors reduced horizontally, scalars combined)."""
    vectors = [v for v in values if simd.element_and_width(v)[1] > 1]
    scalars = [v for v in values if simd.element_and_width(v)[1] == 1]
    if vectors:
        scalars.insert(0, monoid.horizontal(b, monoid.tree(b, vectors)))
    return monoid.tree(b, scalars)


@lowering(kernel.AttentionOp)
def lower_attention(op: kernel.AttentionOp, target: Target, name: str) -> func.FuncOp:
    return _lower_attention(op, target, name, runtime=False)


@lowering(kernel.AttentionOp, runtime_extents=True)
def lower_attention_runtime(op: kernel.AttentionOp, target: Target, name: str) -> func.FuncOp:
    """kernel.attention whose batch and sequence lengths (queries, keys) are known at run
    time: the same kernel, its loop bounds read from the operands (batch and Sq from q, Sk
    from k_t); full MR-row query blocks, then the remaining rows one at a time; the keys in
    full tiles, then whole vectors, then single keys, each in a loop with a run-time bound.
    Heads and the head dims must be static."""
    return _lower_attention(op, target, name, runtime=True)


def _lower_attention(
    op: kernel.AttentionOp, target: Target, name: str, *, runtime: bool
) -> func.FuncOp:
    seq_major = int_values(op.seq_major)
    mask_shape = None if op.mask is None else shape_of(op.mask)
    batch, heads, sq, sk, depth, dv = attention_dims(
        op.name,
        *(shape_of(v) for v in (op.q, op.k_t, op.v)),
        mask_shape,
        shape_of(op.output),
        seq_major,
    )
    for value in op.operands:
        if element_type_of(value) != f32:
            raise NotImplementedError(f"kernel.attention: element type {element_type_of(value)}")
    if runtime and min(heads, depth, dv) < 0:
        raise NotImplementedError(
            f"kernel.attention with runtime extents: heads and head dims must be static: "
            f"q {op.q.type}, k_t {op.k_t.type}, v {op.v.type}"
        )
    vw = target.vector_width
    mr = query_rows(target)
    scale = op.scale.value.data
    maximum, total = simd.Monoid("max", f32), simd.Monoid("sum", f32)

    fn, b = kernel_function(name, [v.type for v in op.operands])  # type: ignore[misc]
    q, k_t, v = fn.args[:3]
    mask = fn.args[3] if op.mask is not None else None
    out = fn.args[len(op.operands) - 1]  # before any extent arguments
    if runtime:
        # Sizes read from the operands (memref.dim where `?`): batch and Sq from q, Sk from k_t.
        batch = b.dim(q, 0)
        sq = b.dim(q, 1 if seq_major[0] else 2)
        sk = b.dim(k_t, 3)
        blocks_per_head = b.floordiv(b.add(sq, mr - 1), mr)
        full_blocks = b.floordiv(sq, mr)
        units = b.mul(b.mul(batch, heads), blocks_per_head)
    else:
        blocks_per_head = -(-sq // mr)
        full_blocks = sq // mr
        units = batch * heads * blocks_per_head

    def at(flag: int, bi: SSAValue, hi: SSAValue, s: SSAValue, d: SSAValue) -> list[SSAValue]:
        return [bi, s, hi, d] if flag else [bi, hi, s, d]

    def unit(ub: LoopBuilder, index: SSAValue) -> None:
        bh, blk = ub.floordiv(index, blocks_per_head), ub.rem(index, blocks_per_head)
        bi, hi = ub.floordiv(bh, heads), ub.rem(bh, heads)
        first = ub.mul(blk, mr)
        # Per-thread scratch (hoisted out of the parallel loop by codegen).
        probs = alloca(ub, [mr, KEY_VECTORS * vw])
        acc_out = alloca(ub, [mr, dv])
        stats = alloca(ub, [3, mr])  # running max, running sum, last correction
        if runtime:
            # Full blocks of MR rows; the last block's rows (Sq % MR) one at a time.
            def tail(tb: LoopBuilder) -> None:
                rest = tb.sub(sq, first)
                tb.for_range(
                    0,
                    rest,
                    1,
                    lambda ib, i: block(ib, bi, hi, ib.add(first, i), 1, probs, acc_out, stats),
                )

            if_else(
                ub,
                ub.cmp_index("ult", blk, full_blocks),
                lambda t: block(t, bi, hi, first, mr, probs, acc_out, stats),
                tail,
            )
            return
        split_static(
            ub,
            blk,
            full_blocks,
            blocks_per_head,
            lambda rb, rows: block(rb, bi, hi, first, rows, probs, acc_out, stats),
            mr,
            sq - full_blocks * mr,
        )

    def block(
        rb: LoopBuilder,
        bi: SSAValue,
        hi: SSAValue,
        first: SSAValue,
        rows: int,
        probs: SSAValue,
        acc_out: SSAValue,
        stats: SSAValue,
    ) -> None:
        row_ids = [rb.add(first, i) if i else first for i in range(rows)]
        for i in range(rows):
            rb.store(rb.const(-pymath.inf), stats, [0, i])
            rb.store(rb.const(0.0), stats, [1, i])
        value_lanes = [(c, vw) for c in range(0, dv - dv % vw, vw)] + [
            (c, 1) for c in range(dv - dv % vw, dv)
        ]
        for i in range(rows):
            for c, w in value_lanes:
                simd.store(rb, _zero(rb, w), acc_out, [i, c])

        mask_index = None
        if mask is not None and mask_shape is not None:
            bm, hm, qm = (d != 1 for d in mask_shape[:3])  # `?` (-1): not broadcast
            zero = rb.index(0)

            def mask_index(row: int, key: SSAValue) -> list[SSAValue]:
                return [bi if bm else zero, hi if hm else zero, row_ids[row] if qm else zero, key]

        def key_tile(kb: LoopBuilder, k0: SSAValue, lanes: list[simd.Lane]) -> None:
            keys = [kb.add(k0, off) if off else k0 for off, _ in lanes]
            scores = _scores(kb, keys, lanes)
            if mask_index is not None:
                assert mask is not None
                scores = [
                    [kb.addf(s, simd.load(kb, mask, mask_index(i, key), w))
                     for s, key, (_, w) in zip(row, keys, lanes)]
                    for i, row in enumerate(scores)
                ]  # fmt: skip
            _online_softmax(kb, scores, lanes)
            _accumulate(kb, k0, sum(w for _, w in lanes))

        def _scores(
            kb: LoopBuilder, keys: list[SSAValue], lanes: list[simd.Lane]
        ) -> list[list[SSAValue]]:
            def step(db: LoopBuilder, d: SSAValue, *accs: SSAValue) -> list[SSAValue]:
                kvec = [simd.load(db, k_t, [bi, hi, d, key], w) for key, (_, w) in zip(keys, lanes)]
                new: list[SSAValue] = []
                for i in range(rows):
                    qv = db.load(q, at(seq_major[0], bi, hi, row_ids[i], d))
                    splats = {w: _splat_for(db, qv, w) for w in {w for _, w in lanes}}
                    for lane, (_, w) in enumerate(lanes):
                        acc = accs[i * len(lanes) + lane]
                        new.append(simd.muladd(db, splats[w], kvec[lane], acc))
                return new

            init = [_zero(kb, w) for _ in range(rows) for _, w in lanes]
            accs = kb.for_range(0, depth, 1, step, init)
            scaled = [kb.mulf(a, _splat_for(kb, kb.const(scale), _width(a))) for a in accs]
            return [scaled[i * len(lanes) : (i + 1) * len(lanes)] for i in range(rows)]

        def _online_softmax(
            kb: LoopBuilder, scores: list[list[SSAValue]], lanes: list[simd.Lane]
        ) -> None:
            neg_inf, zero = kb.const(-pymath.inf), kb.const(0.0)
            for i, row in enumerate(scores):
                old_max = kb.load(stats, [0, i])
                new_max = kb.maxf(old_max, _row_combine(kb, maximum, row))
                all_masked = kb.insert(arith.CmpfOp(new_max, neg_inf, "oeq")).results[0]
                shift = kb.select(all_masked, zero, new_max)
                correction = kb.exp(kb.subf(old_max, shift))
                exps = []
                for s, (off, w) in zip(row, lanes):
                    e = kb.exp(kb.subf(s, _splat_for(kb, shift, w)))
                    simd.store(kb, e, probs, [i, off])
                    exps.append(e)
                running = kb.mulf(kb.load(stats, [1, i]), correction)
                kb.store(new_max, stats, [0, i])
                kb.store(kb.addf(running, _row_combine(kb, total, exps)), stats, [1, i])
                kb.store(correction, stats, [2, i])

        def _accumulate(kb: LoopBuilder, k0: SSAValue, tile: int) -> None:
            """O = O * correction + P @ V[k0 : k0 + tile], VALUE_VECTORS vectors at a time."""

            def columns(cb: LoopBuilder, c0: SSAValue, vlanes: list[simd.Lane]) -> None:
                cols = [cb.add(c0, off) if off else c0 for off, _ in vlanes]
                init = []
                for i in range(rows):
                    correction = cb.load(stats, [2, i])
                    for col, (_, w) in zip(cols, vlanes):
                        old = simd.load(cb, acc_out, [i, col], w)
                        init.append(cb.mulf(old, _splat_for(cb, correction, w)))

                def step(sb: LoopBuilder, kk: SSAValue, *accs: SSAValue) -> list[SSAValue]:
                    key = sb.add(k0, kk)
                    vrow = [
                        simd.load(sb, v, at(seq_major[1], bi, hi, key, col), w)
                        for col, (_, w) in zip(cols, vlanes)
                    ]
                    new: list[SSAValue] = []
                    for i in range(rows):
                        p = sb.load(probs, [i, kk])
                        for lane, (_, w) in enumerate(vlanes):
                            acc = accs[i * len(vlanes) + lane]
                            new.append(simd.muladd(sb, _splat_for(sb, p, w), vrow[lane], acc))
                    return new

                accs = cb.for_range(0, tile, 1, step, init)
                for i in range(rows):
                    for lane, col in enumerate(cols):
                        simd.store(cb, accs[i * len(vlanes) + lane], acc_out, [i, col])

            simd.column_blocks(kb, dv, vw, VALUE_VECTORS, columns)

        if runtime:
            _runtime_column_blocks(rb, sk, vw, KEY_VECTORS, key_tile)
        else:
            simd.column_blocks(rb, sk, vw, KEY_VECTORS, key_tile)
        for i in range(rows):
            inverse = rb.divf(rb.const(1.0), rb.load(stats, [1, i]))
            for c, w in value_lanes:
                o = simd.load(rb, acc_out, [i, c], w)
                y = rb.mulf(o, _splat_for(rb, inverse, w))
                simd.store(rb, y, out, at(seq_major[2], bi, hi, row_ids[i], rb.index(c)))

    if runtime:
        parallel = target.threads > 1
    else:
        parallel = simd.want_threads(target, batch * heads * sq * sk, units)
    if parallel:
        b.parallel_range(0, units, 1, unit)
    else:
        b.for_range(0, units, 1, lambda ub, i: unit(ub, i))
    b.ret()
    return fn


def _runtime_column_blocks(
    b: LoopBuilder,
    n: SSAValue | int,
    width: int,
    unroll: int,
    block: Callable[[LoopBuilder, SSAValue, list[simd.Lane]], None],
) -> None:
    """`simd.column_blocks` for n columns known at run time: full blocks of `unroll`
    vectors, then whole vectors, then the remaining (< width) columns as blocks of width/2,
    width/4, ..., 1 single columns (at most one of each: the bits of the remainder), each a
    loop with a run-time bound. One block per bit, not per column: a block's fixed cost (a
    key tile's online-softmax update) is paid log2(width) times at most."""
    span = width * unroll

    def round_down(start: Value, step: int) -> SSAValue:
        return b.add(start, b.mul(b.floordiv(b.sub(n, start), step), step))

    full_end = round_down(0, span)
    vector_end = round_down(full_end, width)
    lanes = [(u * width, width) for u in range(unroll)]
    b.for_range(0, full_end, span, lambda ib, c: block(ib, c, lanes))
    b.for_range(full_end, vector_end, width, lambda ib, c: block(ib, c, [(0, width)]))
    start: Value = vector_end
    group = width // 2 if width > 1 else 1
    while group >= 1:
        singles = [(k, 1) for k in range(group)]
        end = round_down(start, group)
        b.for_range(start, end, group, lambda ib, c, singles=singles: block(ib, c, singles))
        start = end
        group //= 2


def _zero(b: LoopBuilder, width: int) -> SSAValue:
    return b.splat(0.0, width) if width > 1 else b.const(0.0)


def _width(value: SSAValue) -> int:
    return simd.element_and_width(value)[1]
