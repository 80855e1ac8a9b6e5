"""kernel.matmul of two activations with `?` dims -> batched SIMD GEMM loops (issue 10).

out[..., M, N] = a[..., M, K] @ b[..., K, N] (+ a residual of the output's shape, an
activation), any of batch, M, K, N known at run time only (the attention scores
[b, h, s, d] x [b, h, d, s] and probabilities x values of an unfused attention). Units are
(batch x MR-row block) under scf.parallel; a unit sweeps N in panels of NVEC vectors (full
panels, then single vectors, then one masked vector for the tail), each an MR x NVEC
register tile of FMAs over all of K (vector loads of B rows, A elements broadcast); the
block's last rows when fewer than MR run as 4-row tiles, then one-row tiles. B is read in place (no packing:
it changes every call)."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects import func
from xdsl.dialects.builtin import f32, f64
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.extents import is_dynamic
from ember.dialects.weight_layouts import gemm_blocking
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, Value, kernel_function
from ember.passes.conversion.kernel_to_loops.gemm_common import (
    Epilogue,
    activation_of,
    describe_kernel,
    epilogue_summary,
    if_else,
    load_lanes,
    memref_shape,
    micro_kernel,
    runtime_work_units,
)
from ember.passes.conversion.kernel_to_loops.simd import runtime_flat_view, view

# The height of the tiles of a block's last rows before single rows.
PARTIAL_ROWS = 4


def accepts(op: kernel.MatMulOp) -> bool:
    """Whether this lowering takes `op`: a plain B of its own batch dims or with `?` dims,
    every operand's batch dims the output's (right-aligned) or a static 1, no bias, a
    residual of the output's shape, float32 or float64 throughout."""
    if op.weight_layout.data != "plain" or op.bias is not None:
        return False
    a, b, out = memref_shape(op.a), memref_shape(op.b), memref_shape(op.output)
    if len(a) < 2 or len(b) < 2 or len(out) < 2:
        return False
    if len(b) == 2 and not any(is_dynamic(d) for d in b):
        return False  # a B shared by every row: the GEMM with run-time rows
    batch = out[:-2]
    for shape in (a, b):
        own = shape[:-2]
        if len(own) > len(batch):
            return False
        for d, o in zip(own[::-1], batch[::-1], strict=False):
            if d != o and d != 1:
                return False
    if op.residual is not None and memref_shape(op.residual) != out:
        return False
    element = op.output.type.get_element_type()  # type: ignore[attr-defined]
    return element in (f32, f64) and all(
        v.type.get_element_type() == element  # type: ignore[attr-defined]
        for v in (op.a, op.b, op.residual)
        if v is not None
    )


def _decode(b: LoopBuilder, flat: Value, extents: Sequence[Value]) -> list[Value]:
    """Row-major coordinates of `flat` over `extents` (run-time or static sizes)."""
    coords: list[Value] = []
    rest = flat
    for extent in reversed(extents[1:]):
        if isinstance(extent, int) and extent == 1:
            coords.append(0)
            continue
        coords.append(b.rem(rest, extent))
        rest = b.floordiv(rest, extent)
    coords.append(rest)
    return coords[::-1] if extents else []


def _flat(b: LoopBuilder, buffer: SSAValue) -> SSAValue:
    """`buffer` seen as one flat row-major run (its addresses computed here, linearly:
    through the memref's run-time strides, LLVM kept one address computation per load)."""
    count = b.element_count(buffer)
    return (
        view(b, buffer, (count,))
        if isinstance(count, int)
        else runtime_flat_view(b, buffer, b.index(count))
    )


def _batch_base(
    b: LoopBuilder, buffer: SSAValue, coords: list[Value], operand: tuple[int, ...]
) -> Value:
    """The flat offset of an operand's matrix at the output's batch coordinates
    (right-aligned; a dim of 1 broadcast, at 0)."""
    offset = len(coords) - len(operand)
    rank = len(operand) + 2
    base: Value = 0
    for i, d in enumerate(operand):
        if d == 1:
            continue
        stride = b.element_count(buffer, range(i + 1, rank))
        base = b.add(base, b.mul(coords[offset + i], stride))
    return base


def lower_batched_matmul(op: kernel.MatMulOp, target: Target, name: str) -> func.FuncOp:
    a_shape, b_shape = memref_shape(op.a), memref_shape(op.b)
    out_shape = memref_shape(op.output)
    element = op.output.type.get_element_type()  # type: ignore[attr-defined]
    blocking = gemm_blocking(target, 8 if element == f64 else 4)
    # Fewer rows than the packed-B GEMM's MR: with rows a run-time K apart each A row
    # takes its own pointer, and at MR = 14 (AVX-512) LLVM spilled the broadcasts: 1.7-1.8x
    # the static kernel's time at [8, 128, 64] x [8, 64, 128], 1.3-1.4x at 10 rows, 1.2x
    # at 8 (minimum process time, benchmark in the commit message).
    vw, mr, nvec = blocking.vw, max(2, blocking.mr * 4 // 7), blocking.nvec
    present = [v for v in (op.a, op.b, op.residual, op.output) if v is not None]
    fn, body = kernel_function(name, [v.type for v in present])  # type: ignore[misc]
    args = dict(zip([id(v) for v in present], fn.args[: len(present)], strict=True))
    a_buf, b_buf, out_buf = args[id(op.a)], args[id(op.b)], args[id(op.output)]
    a_flat, b_flat = _flat(body, a_buf), _flat(body, b_buf)
    residual_buf = args[id(op.residual)] if op.residual is not None else None
    rank = len(out_shape)
    batch_sizes = [body.dim(out_buf, d) for d in range(rank - 2)]
    m = body.dim(out_buf, rank - 2)
    n = body.dim(out_buf, rank - 1)
    k_extent = body.dim(a_buf, len(a_shape) - 1)
    batches = body.element_count(out_buf, range(rank - 2))
    blocks = body.floordiv(body.add(m, mr - 1), mr)
    units = body.mul(batches, blocks)
    # n rounded down to whole panels, then to whole vectors.
    n_panels = body.sub(n, body.rem(n, nvec * vw))
    n_vectors = body.sub(n, body.rem(n, vw))
    activation = activation_of(op)
    epi = Epilogue(out_buf, residual_buf, activation, vw)

    def unit(b: LoopBuilder, u: SSAValue) -> None:
        t, block = b.floordiv(u, blocks), b.rem(u, blocks)
        coords = _decode(b, t, batch_sizes)
        a_base = _batch_base(b, a_buf, coords, a_shape[:-2])
        b_base = _batch_base(b, b_buf, coords, b_shape[:-2])
        m0 = b.mul(block, mr)

        def tile(b: LoopBuilder, row0: Value, height: int, n0: Value, vectors: int) -> None:
            """rows [row0, row0 + height) x `vectors` vectors from column n0; the last
            vector masked to the columns before n when vectors == 1 and n0 >= n_vectors."""
            lanes: Value = vw
            if vectors == 0:  # the masked tail vector
                lanes, vectors = b.sub(n, n0), 1

            a_rows = [b.add(a_base, b.mul(b.add(row0, i), k_extent)) for i in range(height)]
            b_col = b.add(b_base, n0)

            def load_a(b: LoopBuilder, k: SSAValue, i: int) -> SSAValue:
                return b.load(a_flat, [b.add(a_rows[i], k)])

            def load_b(b: LoopBuilder, k: SSAValue, j: int) -> SSAValue:
                at = b.add(b.add(b_col, b.mul(k, n)), j * vw)
                return load_lanes(b, b_flat, [at], lanes, vw)

            zero = b.splat(0.0, vw, element)
            init = [[zero] * vectors for _ in range(height)]
            accs = micro_kernel(b, 0, k_extent, init, vw, load_a, load_b)
            for i in range(height):
                for j in range(vectors):
                    idx = [*coords, b.add(row0, i), b.add(n0, j * vw)]
                    epi.finish(b, accs[i][j], idx, lanes, None)

        def rows(b: LoopBuilder, row0: Value, height: int) -> None:
            b.for_range(0, n_panels, nvec * vw, lambda pb, n0: tile(pb, row0, height, n0, nvec))
            b.for_range(n_panels, n_vectors, vw, lambda vb, n0: tile(vb, row0, height, n0, 1))
            b.if_(
                b.cmp_index("slt", n_vectors, n),
                lambda tb: tile(tb, row0, height, n_vectors, 0),
            )

        full = b.cmp_index("sle", b.add(m0, mr), m)

        def partial(b: LoopBuilder) -> None:
            """The last block's rows: tiles of PARTIAL_ROWS, then single rows (each tile
            a sweep over B)."""
            quads = b.add(m0, b.mul(b.floordiv(b.sub(m, m0), PARTIAL_ROWS), PARTIAL_ROWS))
            b.for_range(m0, quads, PARTIAL_ROWS, lambda rb, row: rows(rb, row, PARTIAL_ROWS))
            b.for_range(quads, m, 1, lambda rb, row: rows(rb, row, 1))

        if_else(b, full, lambda fb: rows(fb, m0, mr), partial)

    # The thread rule on the product's run-time flops (as "rows" of one flop each).
    flops = body.index(body.mul(body.mul(body.mul(batches, m), body.mul(n, k_extent)), 2))
    runtime_work_units(body, target, flops, 1, units, unit)
    body.ret()
    dims = "x".join("?" if is_dynamic(d) else str(d) for d in out_shape)
    summary = f"batched matmul -> {dims} (B an activation, sizes at run time)"
    describe_kernel(fn, summary + epilogue_summary(op), 0)
    return fn
