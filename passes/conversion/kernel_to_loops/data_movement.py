"""Loop lowerings of the data-movement kernels: copy, concat, transpose, gather.

All four reduce to moving contiguous runs with vector loads/stores (`copy_run`); only a
transpose that moves the innermost dimension needs a real in-register transpose, done on
VW x VW tiles with vector.shuffle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from xdsl.dialects import func
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.graph import int_values
from ember.passes.conversion.kernel_to_loops import simd
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, Value, kernel_function
from ember.passes.conversion.kernel_to_loops.checks import checked_index, checked_kernel_function
from ember.passes.conversion.kernel_to_loops.conv import STREAM_MIN_OUTPUT_BYTES
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
    shuffle,
    store,
    to_index,
)
from ember.passes.conversion.kernel_to_loops.registry import lowering


# -- copy -----------------------------------------------------------------------------------------
@lowering(kernel.CopyOp)
def lower_copy(op: kernel.CopyOp, target: Target, name: str) -> func.FuncOp:
    src_shape, dst_shape = shape(op.input), shape(op.output)
    if math.prod(src_shape) != math.prod(dst_shape):
        raise fail(op, f"input {list(src_shape)} and output {list(dst_shape)} differ in size")
    fn, b = kernel_function(name, operand_types(op))
    copy_flat(b, fn.args[0], fn.args[1], math.prod(dst_shape), target)
    b.ret()
    return fn


# -- concat ---------------------------------------------------------------------------------------
@lowering(kernel.ConcatOp)
def lower_concat(op: kernel.ConcatOp, target: Target, name: str) -> func.FuncOp:
    out_shape = shape(op.output)
    rank = len(out_shape)
    axis = op.axis.value.data
    if not -rank <= axis < rank:
        raise fail(op, f"axis {axis} out of range for rank {rank}")
    axis %= rank
    sizes: list[int] = []
    for k, operand in enumerate(op.inputs):
        in_shape = shape(operand)
        if len(in_shape) != rank or any(
            in_shape[d] != out_shape[d] for d in range(rank) if d != axis
        ):
            raise fail(
                op, f"input {k} shape {list(in_shape)} does not fit output {list(out_shape)}"
            )
        sizes.append(in_shape[axis])
    if sum(sizes) != out_shape[axis]:
        raise fail(
            op, f"inputs add up to {sum(sizes)} along axis {axis}, output has {out_shape[axis]}"
        )

    outer = math.prod(out_shape[:axis])
    inner = math.prod(out_shape[axis + 1 :])
    fn, b = kernel_function(name, operand_types(op))
    *inputs, out = fn.args
    lanes = lanes_for(out, target)
    offset = 0
    # One input at a time: each outer row of an input is one contiguous run in both buffers.
    for src, size in zip(inputs, sizes, strict=True):
        run = size * inner
        _copy_rows(b, src, run, out, offset * inner, out_shape[axis] * inner, outer, run, lanes)
        offset += size
    b.ret()
    return fn


def _copy_rows(
    b: LoopBuilder,
    src: SSAValue,
    src_row_stride: int,
    dst: SSAValue,
    dst_base: int,
    dst_row_stride: int,
    rows: int,
    run: int,
    lanes: int,
) -> None:
    """dst[dst_base + r*dst_row_stride : +run] = src[r*src_row_stride : +run] for r < rows."""
    if rows == 1:
        if is_parallel(run):  # one long run: split it over threads in chunks
            chunk = 8192
            full = run // chunk

            def chunk_body(pb: LoopBuilder, c: SSAValue) -> None:
                at = pb.mul(c, chunk)
                copy_run(pb, src, at, dst, pb.add(at, dst_base), chunk, lanes)

            loop(b, 0, full, chunk_body, parallel=True)
            tail = full * chunk
            copy_run(b, src, tail, dst, dst_base + tail, run - tail, lanes)
        else:
            copy_run(b, src, 0, dst, dst_base, run, lanes)
        return

    def row_body(rb: LoopBuilder, r: SSAValue) -> None:
        src_at = linear(rb, [(r, src_row_stride)])
        dst_at = linear(rb, [(r, dst_row_stride)], dst_base)
        copy_run(rb, src, src_at, dst, dst_at, run, lanes)

    loop(b, 0, rows, row_body, parallel=is_parallel(rows * run))


# -- transpose --------------------------------------------------------------------------------------
def simplify_transpose(in_shape: Sequence[int], perm: Sequence[int]) -> tuple[list[int], list[int]]:
    """Drop size-1 dims and merge input dims that stay adjacent in the output.

    [1,S,H,D] perm [0,2,1,3] becomes [S,H,D] perm [1,0,2]; what is left is the real
    data movement, with a contiguous last dim iff perm[-1] == rank-1.
    """
    kept = [d for d in range(len(in_shape)) if in_shape[d] != 1]
    renumber = {d: k for k, d in enumerate(kept)}
    sizes = [in_shape[d] for d in kept]
    order = [renumber[d] for d in perm if d in renumber]
    groups: list[list[int]] = []  # runs of consecutive input dims, in output order
    for d in order:
        if groups and groups[-1][-1] + 1 == d:
            groups[-1].append(d)
        else:
            groups.append([d])
    by_input = sorted(range(len(groups)), key=lambda g: groups[g][0])
    merged_shape = [math.prod(sizes[d] for d in groups[g]) for g in by_input]
    position = {g: k for k, g in enumerate(by_input)}
    merged_perm = [position[g] for g in range(len(groups))]
    return merged_shape, merged_perm


@lowering(kernel.TransposeOp)
def lower_transpose(op: kernel.TransposeOp, target: Target, name: str) -> func.FuncOp:
    in_shape, out_shape = shape(op.input), shape(op.output)
    perm = [int(p) for p in op.perm.get_values()]
    if sorted(perm) != list(range(len(in_shape))):
        raise fail(op, f"perm {perm} is not a permutation of rank {len(in_shape)}")
    expected = [in_shape[p] for p in perm]
    if list(out_shape) != expected:
        raise fail(op, f"output shape {list(out_shape)} != permuted input shape {expected}")

    fn, b = kernel_function(name, operand_types(op))
    src, dst = fn.args
    dims, mperm = simplify_transpose(in_shape, perm)
    lanes = lanes_for(src, target)
    if mperm == list(range(len(mperm))):
        copy_flat(b, src, dst, math.prod(in_shape), target)
    elif mperm[-1] == len(dims) - 1:
        _transpose_rows(b, src, dst, dims, mperm, lanes)
    else:
        _transpose_tiles(b, src, dst, dims, mperm, lanes)
    b.ret()
    return fn


def _transpose_rows(
    b: LoopBuilder,
    src: SSAValue,
    dst: SSAValue,
    dims: list[int],
    perm: list[int],
    lanes: int,
) -> None:
    """The innermost dim stays innermost: every output row is one contiguous input run."""
    in_strides = row_major_strides(dims)
    out_dims = [dims[p] for p in perm]
    run = dims[-1]
    rows = math.prod(out_dims[:-1])

    def body(rb: LoopBuilder, r: SSAValue) -> None:
        index = decompose(rb, r, out_dims[:-1])
        src_at = linear(rb, [(i, in_strides[perm[k]]) for k, i in enumerate(index)])
        copy_run(rb, src, src_at, dst, rb.mul(r, run), run, lanes)

    loop(b, 0, rows, body, parallel=is_parallel(rows * run))


def transpose_in_registers(b: LoopBuilder, rows: list[SSAValue]) -> list[SSAValue]:
    """Transpose a square block held as `len(rows)` vectors of as many lanes.

    log2(n) butterfly stages; the stage with half-size h swaps the off-diagonal h x h blocks
    of every 2h x 2h block, which LLVM turns into unpack/shuffle/permute instructions.
    """
    n = len(rows)
    rows = list(rows)
    h = n // 2
    while h >= 1:
        low = [j if j & h == 0 else n + j - h for j in range(n)]
        high = [j + h if j & h == 0 else n + j for j in range(n)]
        for i in range(n):
            if i & h:
                continue
            a, c = rows[i], rows[i + h]
            rows[i], rows[i + h] = shuffle(b, a, c, low), shuffle(b, a, c, high)
        h //= 2
    return rows


def _transpose_tiles(
    b: LoopBuilder,
    src: SSAValue,
    dst: SSAValue,
    dims: list[int],
    perm: list[int],
    lanes: int,
) -> None:
    """The innermost dim moves: transpose lanes x lanes tiles in registers.

    With a = the input's last dim (output position p) and c = the output's last dim (input
    dim q), each tile loads `lanes` input rows contiguous along a, transposes them and stores
    `lanes` output rows contiguous along c. Ragged edges fall back to scalar copies.
    """
    rank = len(dims)
    in_strides = row_major_strides(dims)
    out_dims = [dims[p] for p in perm]
    out_strides = row_major_strides(out_dims)
    p = perm.index(rank - 1)
    q = perm[-1]
    extent_a, extent_c = dims[-1], dims[q]
    outer_pos = [k for k in range(rank - 1) if k != p]
    outer_dims = [out_dims[k] for k in outer_pos]
    outer = math.prod(outer_dims)
    a_stride_out, c_stride_in = out_strides[p], in_strides[q]
    full_a = extent_a - extent_a % lanes if extent_c >= lanes else 0
    full_c = extent_c - extent_c % lanes if extent_a >= lanes else 0
    a_tiles = full_a // lanes
    parallel = is_parallel(outer * extent_a * extent_c)
    # Outputs far larger than the caches are stored streaming: DBNet's from_blocked of 26 MB
    # (1x16x25600x16 -> 1x16x16x25600, znver5, 1 thread) 1.81 -> 1.65 ms, 1.78 -> 1.50
    # with its input in cache.
    element_bytes = element_type(dst).bitwidth // 8  # type: ignore[attr-defined]
    stream = math.prod(dims) * element_bytes >= STREAM_MIN_OUTPUT_BYTES
    if extent_c == 2 and p == rank - 2 and extent_a >= lanes and lanes % 2 == 0:
        _interleave_pairs(b, src, dst, dims, perm, lanes, stream)
        return

    def bases(xb: LoopBuilder, o: SSAValue) -> tuple[SSAValue, SSAValue]:
        index = decompose(xb, o, outer_dims)
        src_at = linear(xb, [(i, in_strides[perm[k]]) for k, i in zip(outer_pos, index)])
        dst_at = linear(xb, [(i, out_strides[k]) for k, i in zip(outer_pos, index)])
        return src_at, dst_at

    def scalar_block(
        xb: LoopBuilder,
        src_at: SSAValue,
        dst_at: SSAValue,
        a_range: tuple[SSAValue | int, SSAValue | int],
        c_range: tuple[int, int],
    ) -> None:
        def a_body(ab: LoopBuilder, a: SSAValue) -> None:
            def c_body(cb: LoopBuilder, c: SSAValue) -> None:
                value = load(cb, src, linear(cb, [(c, c_stride_in), (a, 1)], src_at), 1)
                store(cb, value, dst, linear(cb, [(a, a_stride_out), (c, 1)], dst_at))

            loop(ab, c_range[0], c_range[1], c_body)

        loop(xb, a_range[0], a_range[1], a_body)

    def tile_row(tb: LoopBuilder, it: SSAValue) -> None:
        o = tb.floordiv(it, a_tiles) if outer > 1 else tb.index(0)
        a0 = tb.mul(tb.rem(it, a_tiles), lanes) if outer > 1 else tb.mul(it, lanes)
        src_at, dst_at = bases(tb, o)

        def c_tile(cb: LoopBuilder, c0: SSAValue) -> None:
            src_tile = linear(cb, [(c0, c_stride_in), (a0, 1)], src_at)
            rows = [load(cb, src, cb.add(src_tile, j * c_stride_in), lanes) for j in range(lanes)]
            dst_tile = linear(cb, [(a0, a_stride_out), (c0, 1)], dst_at)
            for i, column in enumerate(transpose_in_registers(cb, rows)):
                store(cb, column, dst, cb.add(dst_tile, i * a_stride_out), stream)

        loop(tb, 0, full_c, c_tile, step=lanes)
        if full_c < extent_c:
            scalar_block(tb, src_at, dst_at, (a0, tb.add(a0, lanes)), (full_c, extent_c))

    if a_tiles:
        loop(b, 0, outer * a_tiles, tile_row, parallel=parallel)
    if full_a < extent_a:

        def ragged_a(rb: LoopBuilder, o: SSAValue) -> None:
            src_at, dst_at = bases(rb, o)
            scalar_block(rb, src_at, dst_at, (full_a, extent_a), (0, extent_c))

        loop(b, 0, outer, ragged_a, parallel=parallel and outer > 1)


def _interleave_pairs(
    b: LoopBuilder,
    src: SSAValue,
    dst: SSAValue,
    dims: list[int],
    perm: list[int],
    lanes: int,
    stream: bool,
) -> None:
    """The innermost output dim has 2 entries and the input's innermost dim lands just
    before it (a pixel shuffle's column interleave, ConvTranspose 2x2/2 and DepthToSpace
    with blocks of 2): each output run of 2 x `lanes` elements interleaves `lanes` elements
    of two input rows, two vector loads and two shuffles (register tiles of 2 rows had
    scalar copies only: DBNet's 26 MB shuffle [2, 2, 64, 160, 160] -> [64, 160, 2, 160, 2]
    took 0.91 ms)."""
    in_strides = row_major_strides(dims)
    out_dims = [dims[p] for p in perm]
    out_strides = row_major_strides(out_dims)
    extent_a, c_stride_in = dims[-1], in_strides[perm[-1]]
    outer_dims = out_dims[:-2]
    outer = math.prod(outer_dims)
    a_tiles = extent_a // lanes
    full_a = a_tiles * lanes
    low = [t // 2 + (t % 2) * lanes for t in range(lanes)]
    high = [lanes // 2 + i for i in low]

    def row(rb: LoopBuilder, o: SSAValue) -> None:
        index = decompose(rb, o, outer_dims)
        src_at = linear(rb, [(i, in_strides[perm[k]]) for k, i in enumerate(index)])
        dst_at = linear(rb, [(i, out_strides[k]) for k, i in enumerate(index)])

        def tile(tb: LoopBuilder, a0: SSAValue) -> None:
            first = load(tb, src, tb.add(src_at, a0), lanes)
            second = load(tb, src, linear(tb, [(a0, 1)], tb.add(src_at, c_stride_in)), lanes)
            out_at = linear(tb, [(a0, 2)], dst_at)
            store(tb, shuffle(tb, first, second, low), dst, out_at, stream)
            store(tb, shuffle(tb, first, second, high), dst, tb.add(out_at, lanes), stream)

        loop(rb, 0, full_a, tile, step=lanes)

        def ragged(eb: LoopBuilder, a: SSAValue) -> None:
            for c in range(2):
                value = load(eb, src, linear(eb, [(a, 1)], eb.add(src_at, c * c_stride_in)), 1)
                store(eb, value, dst, linear(eb, [(a, 2)], eb.add(dst_at, c)))

        if full_a < extent_a:
            loop(rb, full_a, extent_a, ragged)

    loop(b, 0, outer, row, parallel=is_parallel(outer * extent_a * 2))


# -- gather -----------------------------------------------------------------------------------------
def _gather_geometry(op: kernel.GatherOp) -> tuple[list[int], list[int], int]:
    """The data and index shapes and the gathered axis (non-negative), checked against the
    output's shape (`?` dims compare as themselves)."""
    data_shape, idx_shape, out_shape = shape(op.data), shape(op.indices), shape(op.output)
    rank = len(data_shape)
    axis = op.axis.value.data
    if not -rank <= axis < rank:
        raise fail(op, f"axis {axis} out of range for data of rank {rank}")
    axis %= rank
    expected = [*data_shape[:axis], *idx_shape, *data_shape[axis + 1 :]]
    if list(out_shape) != expected:
        raise fail(op, f"output shape {list(out_shape)} != expected {expected}")
    return list(data_shape), list(idx_shape), axis


@lowering(kernel.GatherOp)
def lower_gather(op: kernel.GatherOp, target: Target, name: str) -> func.FuncOp:
    data_shape, idx_shape, axis = _gather_geometry(op)
    extent = data_shape[axis]
    if extent == 0:
        raise fail(op, f"data has no entries along axis {axis}")

    outer = math.prod(data_shape[:axis])
    count = math.prod(idx_shape)
    inner = math.prod(data_shape[axis + 1 :])
    fn, b, status = checked_kernel_function(name, operand_types(op))
    data, indices, out = fn.args[:3]
    lanes = lanes_for(data, target)

    def row(rb: LoopBuilder, r: SSAValue) -> None:
        o, k = (rb.floordiv(r, count), rb.rem(r, count)) if outer > 1 else (rb.index(0), r)
        # One check per row copied (an embedding lookup checks each token id once).
        index = checked_index(rb, status, to_index(rb, load(rb, indices, k, 1)), extent, axis)
        src_at = linear(rb, [(o, extent * inner), (index, inner)])
        copy_run(rb, data, src_at, out, rb.mul(r, inner), inner, lanes)

    loop(b, 0, outer * count, row, parallel=is_parallel(outer * count * inner))
    b.ret()
    return fn


# -- runtime extents (issue 10): transpose and gather with `?` dims ------------------------------
def _rows_loop(
    b: LoopBuilder, rows: Value, row_elements: int, target: Target, body: Callable
) -> None:
    """`body(rb, r)` for each of `rows` rows, split over the threads at run time."""
    simd.runtime_rows_loop(b, b.index(rows), row_elements, target, lambda rb, r: body(rb, r[0]))


@lowering(kernel.TransposeOp, runtime_extents=True)
def lower_transpose_runtime(op: kernel.TransposeOp, target: Target, name: str) -> func.FuncOp:
    """kernel.transpose with `?` dims: one pass over the output's rows (every dim but the
    last, a run-time count split over the threads), each row addressed through the memrefs'
    run-time strides. When the innermost dim stays innermost the row is one contiguous input
    run copied with vector loads/stores (scalar remainder); otherwise it is read element by
    element at the input's stride of that dim (a K^T of attention: [b, s, h, d] -> [b, h, d, s]).
    The output's sizes are the input's permuted (the `?` contract; compile once checks it)."""
    perm = [int(p) for p in op.perm.get_values()]
    rank = len(perm)
    if sorted(perm) != list(range(rank)) or len(shape(op.output)) != rank:
        raise fail(op, f"perm {perm} is not a permutation of rank {len(shape(op.input))}")
    for k, p in enumerate(perm):
        a, c = shape(op.input)[p], shape(op.output)[k]
        if (a < 0) != (c < 0) or (a >= 0 and a != c):
            raise fail(op, f"output {op.output.type} is not the input {op.input.type} permuted")
    fn, b = kernel_function(name, operand_types(op))
    src, dst = fn.args[:2]
    if rank >= 2 and perm == [*range(rank - 2), rank - 1, rank - 2] and lanes_for(src, target) > 1:
        _transpose_last_two_runtime(b, src, dst, lanes_for(src, target), target)
        b.ret()
        return fn
    sizes = [b.dim(src, p) for p in perm]
    lanes = lanes_for(src, target) if perm[-1] == rank - 1 else 1
    last = sizes[-1]
    per_row = last if isinstance(last, int) else 64

    def row(rb: LoopBuilder, r: SSAValue) -> None:
        index = simd.runtime_decompose(rb, r, sizes[:-1])
        src_index: list[Value] = [0] * rank
        for k, p in enumerate(perm[:-1]):
            src_index[p] = index[k]

        def visit(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
            at = list(src_index)
            at[perm[-1]] = j
            simd.store(vb, simd.load(vb, src, at, w), dst, [*index, j])
            return []

        simd.sweep(rb, 0, last, lanes, visit)

    _rows_loop(b, simd.runtime_product(b, sizes[:-1]), per_row, target, row)
    b.ret()
    return fn


def _transpose_last_two_runtime(
    b: LoopBuilder, src: SSAValue, dst: SSAValue, lanes: int, target: Target
) -> None:
    """[..., R, C] -> [..., C, R] with run-time sizes (the blocked layout's reorders of `?`
    maps: [n, C/c, c, h*w] <-> [n, C/c, h*w, c]): lanes x lanes tiles transposed in
    registers (`transpose_in_registers`, as the static kernel), each tile row a run-time
    count of (outer, row block) pairs split over the threads; the ragged columns and rows
    copied element by element."""
    rank = len(shape(src))
    rows, cols = b.dim(src, rank - 2), b.dim(src, rank - 1)
    outer = b.element_count(src, list(range(rank - 2)))
    src_flat, dst_flat = _flat(b, src), _flat(b, dst)
    plane = simd.runtime_product(b, [rows, cols])
    full_rows = b.mul(b.floordiv(rows, lanes), lanes)
    full_cols = b.mul(b.floordiv(cols, lanes), lanes)
    row_blocks = b.floordiv(rows, lanes)

    def element(eb: LoopBuilder, base: SSAValue, r: Value, c: Value) -> None:
        value = load(eb, src_flat, eb.add(base, eb.add(eb.mul(r, cols), c)), 1)
        store(eb, value, dst_flat, eb.add(base, eb.add(eb.mul(c, rows), r)))

    def block_row(rb: LoopBuilder, t: SSAValue) -> None:
        o, r0 = rb.floordiv(t, row_blocks), rb.mul(rb.rem(t, row_blocks), lanes)
        base = rb.mul(o, plane)

        def tile(cb: LoopBuilder, c0: SSAValue) -> None:
            at = cb.add(base, cb.add(cb.mul(r0, cols), c0))
            loaded = [load(cb, src_flat, cb.add(at, cb.mul(j, cols)), lanes) for j in range(lanes)]
            out_at = cb.add(base, cb.add(cb.mul(c0, rows), r0))
            for i, column in enumerate(transpose_in_registers(cb, loaded)):
                store(cb, column, dst_flat, cb.add(out_at, cb.mul(i, rows)))

        rb.for_range(0, full_cols, lanes, lambda cb, c0: tile(cb, c0))

        def ragged(cb: LoopBuilder, c: SSAValue) -> None:
            for j in range(lanes):
                element(cb, base, cb.add(r0, j), c)

        rb.for_range(full_cols, cols, 1, lambda cb, c: ragged(cb, c))

    tiles = b.index(simd.runtime_product(b, [outer, row_blocks]))
    _rows_loop(b, tiles, lanes * (cols if isinstance(cols, int) else 64), target, block_row)

    def ragged_rows(rb: LoopBuilder, o: SSAValue) -> None:
        base = rb.mul(o, plane)
        rb.for_range(
            full_rows,
            rows,
            1,
            lambda r_b, r: r_b.for_range(0, cols, 1, lambda cb, c: element(cb, base, r, c)),
        )

    b.for_range(0, outer, 1, lambda ob, o: ragged_rows(ob, o))


@lowering(kernel.GatherOp, runtime_extents=True)
def lower_gather_runtime(op: kernel.GatherOp, target: Target, name: str) -> func.FuncOp:
    """kernel.gather with `?` dims (an embedding table [V, H] by token ids [?, ?], or the
    first token of [?, ?, H]): the static kernel's row copies over flat views of the three
    buffers, the rows (outer x index count) a run-time loop split over the threads, each
    index checked against the run-time extent of the axis as the static kernel does. The
    trailing dims after the axis must be static (one vector copy per row)."""
    data_shape, idx_shape, axis = _gather_geometry(op)
    if any(d < 0 for d in data_shape[axis + 1 :]):
        raise fail(op, f"runtime extents after the gathered axis: {op.data.type}")
    inner = math.prod(data_shape[axis + 1 :])
    fn, b, status = checked_kernel_function(name, operand_types(op))
    data, indices, out = fn.args[:3]
    extent = b.dim(data, axis)
    if isinstance(extent, int) and extent == 0:
        raise fail(op, f"data has no entries along axis {axis}")
    outer = b.element_count(data, list(range(axis)))
    count = b.element_count(indices)

    def flat(buffer: SSAValue) -> SSAValue:
        total = b.element_count(buffer)
        if isinstance(total, int):
            return simd.view(b, buffer, [total])
        return simd.runtime_flat_view(b, buffer, total)

    data_flat, indices_flat, out_flat = flat(data), flat(indices), flat(out)
    lanes = lanes_for(data, target)
    single_outer = isinstance(outer, int) and outer == 1
    rows = simd.runtime_product(b, [outer, count])

    def row(rb: LoopBuilder, r: SSAValue) -> None:
        o, k = (rb.index(0), r) if single_outer else (rb.floordiv(r, count), rb.rem(r, count))
        raw = to_index(rb, rb.load(indices_flat, [k]))
        index = checked_index(rb, status, raw, extent, axis)  # type: ignore[arg-type]
        src_at = rb.mul(rb.add(rb.mul(o, extent), index), inner)
        dst_at = rb.mul(r, inner)

        def visit(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
            value = simd.load(vb, data_flat, [vb.add(src_at, j)], w)
            simd.store(vb, value, out_flat, [vb.add(dst_at, j)])
            return []

        simd.sweep(rb, 0, inner, lanes, visit)

    _rows_loop(b, rows, inner, target, row)
    b.ret()
    return fn


# -- runtime extents: concat and slice with `?` dims (compile once of conv networks) -------------
def _flat(b: LoopBuilder, buffer: SSAValue) -> SSAValue:
    """`buffer` as a flat row-major memref of its (static or run-time) element count."""
    total = b.element_count(buffer)
    if isinstance(total, int):
        return simd.view(b, buffer, [total])
    return simd.runtime_flat_view(b, buffer, total)


@lowering(kernel.ConcatOp, runtime_extents=True)
def lower_concat_runtime(op: kernel.ConcatOp, target: Target, name: str) -> func.FuncOp:
    """kernel.concat with `?` dims (feature maps [?, c, ?, ?] joined along the channels):
    each input in turn, each of its rows (the dims before the axis times its own extent
    along it) one contiguous run of the dims after the axis in both buffers, copied with
    vector loads and stores (scalar remainder); the rows a run-time count split over the
    threads. The inputs' dims off the axis are the output's (the `?` contract; compile once
    checks it)."""
    out_shape = shape(op.output)
    rank = len(out_shape)
    axis = op.axis.value.data
    if not -rank <= axis < rank:
        raise fail(op, f"axis {axis} out of range for rank {rank}")
    axis %= rank
    for k, operand in enumerate(op.inputs):
        in_shape = shape(operand)
        if len(in_shape) != rank or any(
            in_shape[d] != out_shape[d] for d in range(rank) if d != axis
        ):
            raise fail(op, f"input {k} {operand.type} does not fit output {op.output.type}")
    fn, b = kernel_function(name, operand_types(op))
    *inputs, out = fn.args[: len(op.inputs) + 1]
    inner = b.element_count(out, list(range(axis + 1, rank)))
    outer = b.element_count(out, list(range(axis)))
    total = b.dim(out, axis)
    out_flat = _flat(b, out)
    lanes = lanes_for(out, target)
    offset: Value = 0
    for src in inputs:
        size = b.dim(src, axis)
        src_flat = _flat(b, src)

        def row(
            rb: LoopBuilder, r: SSAValue, size: Value = size, src_flat: SSAValue = src_flat,
            offset: Value = offset,
        ) -> None:  # fmt: skip
            o, i = rb.floordiv(r, size), rb.rem(r, size)
            dst_row = rb.add(rb.add(rb.mul(o, total), offset), i)
            src_at, dst_at = rb.mul(r, inner), rb.mul(dst_row, inner)

            def visit(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
                value = simd.load(vb, src_flat, [vb.add(src_at, j)], w)
                simd.store(vb, value, out_flat, [vb.add(dst_at, j)])
                return []

            simd.sweep(rb, 0, inner, lanes, visit)

        rows = b.index(simd.runtime_product(b, [outer, size]))
        _rows_loop(b, rows, inner if isinstance(inner, int) else 64, target, row)
        offset = size if isinstance(offset, int) and offset == 0 else b.add(offset, size)
    b.ret()
    return fn


@lowering(kernel.SliceOp, runtime_extents=True)
def lower_slice_runtime(op: kernel.SliceOp, target: Target, name: str) -> func.FuncOp:
    """kernel.slice with `?` dims (a feature map cropped to another's size): one pass over the
    output's rows (every dim but the last, a run-time count split over the threads), each
    read at starts + index x steps through the input's run-time strides; a row of step 1 is
    one contiguous run copied with vectors (scalar remainder), another element by element.
    The output fits in the input from the starts (compile once checks it)."""
    starts, steps = int_values(op.starts), int_values(op.steps)
    rank = len(shape(op.output))
    if len(shape(op.input)) != rank or len(starts) != rank or len(steps) != rank:
        raise fail(op, f"starts {starts} and steps {steps} do not fit {op.input.type}")
    if any(s < 0 for s in starts) or any(s < 1 for s in steps):
        raise fail(op, f"starts {starts} and steps {steps}: negative starts or steps < 1")
    fn, b = kernel_function(name, operand_types(op))
    src, dst = fn.args[:2]
    sizes = [b.dim(dst, d) for d in range(rank)]
    lanes = lanes_for(src, target) if steps[-1] == 1 else 1
    last = sizes[-1]

    def row(rb: LoopBuilder, r: SSAValue) -> None:
        index = simd.runtime_decompose(rb, r, sizes[:-1])
        at: list[Value] = [
            linear(rb, [(i, step)], start) if not (isinstance(i, int) and i == 0) else start
            for i, start, step in zip(index, starts, steps, strict=False)
        ]

        def visit(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
            column = linear(vb, [(j, steps[-1])], starts[-1])
            simd.store(vb, simd.load(vb, src, [*at, column], w), dst, [*index, j])
            return []

        simd.sweep(rb, 0, last, lanes, visit)

    rows = b.index(simd.runtime_product(b, sizes[:-1]))
    _rows_loop(b, rows, last if isinstance(last, int) else 64, target, row)
    b.ret()
    return fn
