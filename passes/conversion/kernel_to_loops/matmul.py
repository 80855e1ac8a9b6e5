"""kernel.matmul -> register-blocked SIMD GEMM loops.

out[..., M, N] = a[..., M, K] @ b + epilogue. Work is split into (batch, N panel, M chunk)
units over scf.parallel; each unit walks k blocks of one NR-wide B panel, and within a
block its MR-row tiles, so the block stays in L1 while A rows stream through. B is either
packed at compile time ("gemm_b_panel{NR}": [N/NR, K, NR], zero-padded) or "plain"
([..., K, N]: read in place when K fits one block, else each block is copied to scratch;
the partial last vector of an N tail is a masked load). A packed B is prefetched one k
block ahead (weights streamed from memory, see `prefetch_b`).
"""

from __future__ import annotations

import math

from xdsl.dialects import func
from xdsl.dialects.builtin import f32, f64
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.extents import has_dynamic_dims, is_dynamic
from ember.dialects.weight_layouts import gemm_blocking, matmul_layout
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, Value, kernel_function
from ember.passes.conversion.kernel_to_loops.gemm_common import (
    CACHE_LINE_BYTES,
    K_UNROLL,
    Epilogue,
    GemmPanel,
    activation_of,
    alloca,
    ceil_div,
    decode,
    describe_kernel,
    epilogue_summary,
    gemm_panel,
    k_block,
    load_lanes,
    m_chunking,
    memref_shape,
    pack_rows,
    prefetch,
    runtime_m_chunking,
    runtime_work_units,
    split_static,
)
from ember.passes.conversion.kernel_to_loops.matmul_extents import (
    accepts as batched_matmul_accepts,
)
from ember.passes.conversion.kernel_to_loops.matmul_extents import lower_batched_matmul
from ember.passes.conversion.kernel_to_loops.registry import lowering
from ember.passes.conversion.kernel_to_loops.simd import runtime_rows_view, view, work_units


def _batch_index(
    coords: list[SSAValue], batch_shape: tuple[int, ...], operand_batch: tuple[int, ...]
) -> list[SSAValue | int]:
    """Index of an operand's batch dims, numpy-broadcast against the output batch coords."""
    offset = len(batch_shape) - len(operand_batch)
    return [0 if dim == 1 else coords[offset + d] for d, dim in enumerate(operand_batch)]


@lowering(kernel.MatMulOp)
def lower_matmul(op: kernel.MatMulOp, target: Target, name: str) -> func.FuncOp:
    return _lower_matmul(op, target, name, runtime_rows=False)


@lowering(kernel.MatMulOp, runtime_extents=True)
def lower_matmul_runtime_rows(op: kernel.MatMulOp, target: Target, name: str) -> func.FuncOp:
    """kernel.matmul whose rows are known at run time only: A `[..., ?, K]` (any of its
    leading dims `?`; all of them fold into M rows) times a B shared by every row (packed at
    compile time, or a plain [K, N]), output and residual of A's leading dims, bias a row
    vector. K, N, B and the bias are static, so the panels, the k blocking and the N tail are
    the static kernel's; M's full MR-row tiles run in a loop with a run-time bound, its
    remainder as one tile of its height (MR - 1 versions: runtime_m_tile_loop). A B that is
    an activation (batched, or with `?` dims) goes to matmul_extents.lower_batched_matmul.
    Anything else with `?` dims is refused, naming the operands."""
    if batched_matmul_accepts(op):
        return lower_batched_matmul(op, target, name)
    a_shape, out_shape = memref_shape(op.a), memref_shape(op.output)
    static_operands = [v for v in (op.b, op.bias) if v is not None]
    if (
        any(has_dynamic_dims(v) for v in static_operands)
        or is_dynamic(a_shape[-1])
        or is_dynamic(out_shape[-1])
        or a_shape[:-1] != out_shape[:-1]
        or (op.residual is not None and memref_shape(op.residual) != out_shape)
        or (op.weight_layout.data == "plain" and len(memref_shape(op.b)) != 2)
        or (op.bias is not None and any(d != 1 for d in memref_shape(op.bias)[:-1]))
    ):
        types = ", ".join(str(v.type) for v in op.operands)
        raise NotImplementedError(
            "kernel.matmul with runtime extents takes `?` dims only in the rows of A, the "
            "output and the residual (A [..., M, K] with static K, a B shared by all rows, "
            f"static N, a row-vector bias): {types}"
        )
    return _lower_matmul(op, target, name, runtime_rows=True)


def _lower_matmul(
    op: kernel.MatMulOp, target: Target, name: str, runtime_rows: bool
) -> func.FuncOp:
    a_shape = memref_shape(op.a)
    b_shape = memref_shape(op.b)
    out_shape = memref_shape(op.output)
    m, k_extent = a_shape[-2:]
    n = out_shape[-1]
    layout = op.weight_layout.data
    element = op.output.type.get_element_type()  # type: ignore[attr-defined]
    if element not in (f32, f64) or any(
        v.type.get_element_type() != element  # type: ignore[attr-defined]
        for v in (op.a, op.b, op.bias, op.residual)
        if v is not None
    ):
        types = [str(v.type) for v in (op.a, op.b, op.bias, op.residual) if v is not None]
        raise ValueError(f"kernel.matmul: element types other than all f32 or all f64: {types}")
    itemsize = 8 if element == f64 else 4
    blocking = gemm_blocking(target, itemsize)
    vw = blocking.vw
    packed = layout != "plain"
    if packed:
        nr = b_shape[-1]
        if layout != matmul_layout(nr) or nr % vw or b_shape != (ceil_div(n, nr), k_extent, nr):
            raise ValueError(
                f"kernel.matmul: packed b {b_shape} with layout '{layout}' does not match "
                f"a {a_shape} -> output {out_shape} (expected [N/NR, K, NR], NR a multiple of {vw})"
            )
    else:
        nr = blocking.nr
        if len(b_shape) < 2 or b_shape[-2:] != (k_extent, n):
            raise ValueError(f"kernel.matmul: b {b_shape} does not contract with a {a_shape}")
    mr = blocking.mr
    bias_shape = memref_shape(op.bias) if op.bias is not None else ()
    if op.bias is not None and (
        len(bias_shape) > len(out_shape)
        or any(d not in (1, o) for d, o in zip(bias_shape[::-1], out_shape[::-1], strict=False))
    ):
        raise ValueError(
            f"kernel.matmul: bias shape {bias_shape} does not broadcast to output {out_shape}"
        )
    # The bias broadcasts numpy-style; usually it is [N] (a row vector shared by all rows).
    bias_rows = len(bias_shape) >= 2 and bias_shape[-2] == m and m > 1
    bias_cols = bias_shape[-1:] == (n,) and n > 1
    batch_shape = out_shape[:-2]
    batches = 1 if runtime_rows else math.prod(batch_shape)
    # A [batch..., M, K] @ [K, N] product whose B, bias and A rows are the same for every
    # batch is one GEMM of batches*M rows (the buffers are contiguous). Folding keeps the
    # batch coordinates out of the micro-kernel's addressing: with them, LLVM kept one
    # pointer per A row of the 14-row tile and spilled the accumulators (matmul at
    # batch 8 ran at half the GFLOP/s of batch 1), and B's L1 block now serves all rows.
    shared_b = packed or len(b_shape) == 2
    fold_batch = (
        batches > 1
        and shared_b
        and a_shape[:-2] == batch_shape
        and not bias_rows
        and all(d == 1 for d in bias_shape[:-1])
    )
    folded_from = f"({'x'.join(map(str, batch_shape))}x{m})" if fold_batch else ""
    if fold_batch:
        m = batches * m
        a_shape, out_shape, batch_shape, batches = (m, k_extent), (m, n), (), 1
        bias_shape = bias_shape[-1:]
    # Run-time rows: every leading dim folds into M (B is shared), read from the output.
    out_rank = len(out_shape)
    if runtime_rows:
        a_shape, out_shape, batch_shape, bias_shape = (m, k_extent), (m, n), (), bias_shape[-1:]

    operands = [op.a, op.b, op.bias, op.residual, op.output]
    present = [v for v in operands if v is not None]
    fn, body = kernel_function(name, [v.type for v in present])  # type: ignore[misc]
    args = dict(zip([id(v) for v in present], fn.args[: len(present)], strict=True))
    a_buf = args[id(op.a)]
    b_buf = args[id(op.b)]
    bias_buf = args[id(op.bias)] if op.bias is not None else None
    out_buf = args[id(op.output)]
    residual_buf = args[id(op.residual)] if op.residual is not None else None
    if fold_batch:
        a_buf = view(body, a_buf, a_shape)
        out_buf = view(body, out_buf, out_shape)
        residual_buf = view(body, residual_buf, out_shape) if residual_buf is not None else None
        bias_buf = view(body, bias_buf, bias_shape) if bias_buf is not None else None
    activation = activation_of(op)

    panels = ceil_div(n, nr)
    full_panels = n // nr
    rows: Value = m
    chunks: Value
    if runtime_rows:
        rows = body.index(body.element_count(out_buf, range(out_rank - 1)))
        if out_rank > 2:
            a_buf = runtime_rows_view(body, a_buf, rows, k_extent)
            out_buf = runtime_rows_view(body, out_buf, rows, n)
            if residual_buf is not None:
                residual_buf = runtime_rows_view(body, residual_buf, rows, n)
        if bias_buf is not None:
            bias_buf = view(body, bias_buf, bias_shape)
        chunks = runtime_m_chunking(body, panels, rows, mr, target.threads)
    else:
        chunks = m_chunking(batches * panels, m, mr, target.threads)

    kc = k_block(k_extent, nr, itemsize=itemsize)
    # A plain B read in place has its rows N floats apart; once the k loop is blocked those
    # strided rows fight over L1 sets, so each k block is copied into contiguous scratch.
    pack_plain = not packed and kc < k_extent
    # A packed B is one contiguous stream of rows (panel by panel, k by k); when it comes
    # from memory (weights larger than the caches, read once per call) the hardware
    # prefetcher alone does not keep it flowing: once an M chunk has more than one row tile,
    # only the first tile of a k block misses, and the stream stalls while the others run
    # from L1 (issue 16: 16 rows = a 14-row and a 2-row tile ran 2.9x slower than one hot
    # read). The micro-kernel asks for the rows one k block (kc rows) ahead, so the next
    # block arrives while all the tiles of this one run.
    flat_b = view(body, b_buf, (panels * k_extent * nr,)) if packed else None
    ahead_rows = kc
    last_row = panels * k_extent - K_UNROLL  # prefetched rows stay inside B
    line_elements = CACHE_LINE_BYTES // itemsize

    def unit(b: LoopBuilder, u: SSAValue) -> None:
        panel_buf = alloca(b, [kc, nr], element) if pack_plain else None
        if isinstance(chunks, int):
            t, p, c = decode(b, u, [batches, panels, chunks])
        else:  # run-time rows: one batch (folded), chunks counted at run time
            t, p, c = b.index(0), b.floordiv(u, chunks), b.rem(u, chunks)
        coords = decode(b, t, list(batch_shape)) if batch_shape else []
        a_batch = _batch_index(coords, batch_shape, a_shape[:-2])
        b_batch = [] if packed else _batch_index(coords, batch_shape, b_shape[:-2])
        out_batch = _batch_index(coords, batch_shape, batch_shape)
        n0 = b.mul(p, nr)
        epi = Epilogue(out_buf, residual_buf, activation, vw)

        def plain_row(b: LoopBuilder, k: SSAValue, j: int, lanes: int) -> SSAValue:
            return load_lanes(b, b_buf, [*b_batch, k, b.add(n0, j * vw)], lanes, vw)

        def panel(b: LoopBuilder, cols: int) -> None:
            nv = ceil_div(cols, vw)

            def pack_block(b: LoopBuilder, k_lo: Value, k_hi: Value) -> None:
                assert panel_buf is not None
                pack_rows(b, panel_buf, k_lo, k_hi, cols, vw, plain_row)

            def load_b(b: LoopBuilder, k: SSAValue, j: int, k_lo: Value) -> SSAValue:
                if packed:
                    return b.vload(b_buf, [p, k, j * vw], vw)
                if panel_buf is not None:
                    return b.vload(panel_buf, [b.sub(k, k_lo), j * vw], vw)
                return plain_row(b, k, j, min(vw, cols - j * vw))

            col_idx = [b.add(n0, j * vw) for j in range(nv)]
            bias_batch = _batch_index(coords, batch_shape, bias_shape[:-2])

            def bias(b: LoopBuilder, m0: SSAValue, i: int, j: int) -> SSAValue | None:
                if bias_buf is None:
                    return None
                idx: list[Value] = [*bias_batch]
                if len(bias_shape) >= 2:
                    idx.append(b.add(m0, i) if bias_rows else 0)
                if bias_cols:
                    lanes = min(vw, cols - j * vw)
                    return load_lanes(b, bias_buf, [*idx, col_idx[j]], lanes, vw)
                return b.splat(b.load(bias_buf, [*idx, 0] if bias_shape else []), vw)

            def load_a(b: LoopBuilder, m0: SSAValue, k: SSAValue, i: int) -> SSAValue:
                return b.load(a_buf, [*a_batch, b.add(m0, i), k])

            def out_index(b: LoopBuilder, m0: SSAValue, i: int, j: int) -> list[Value]:
                return [*out_batch, b.add(m0, i), col_idx[j]]

            def prefetch_b(b: LoopBuilder, k: SSAValue) -> None:
                """The cache lines of B rows k + ahead_rows .. + K_UNROLL of this panel
                (past its end: the next panel's first rows, what the next unit reads)."""
                assert flat_b is not None
                row = b.min_index(b.add(b.add(b.mul(p, k_extent), k), ahead_rows), last_row)
                start = b.mul(row, nr)
                for line in range(ceil_div(K_UNROLL * nr, line_elements)):
                    prefetch(b, flat_b, b.add(start, line * line_elements))

            spec = GemmPanel(
                k_extent=k_extent,
                kc=kc,
                m=rows,
                mr=mr,
                cols=cols,
                vw=vw,
                epilogue=epi,
                load_a=load_a,
                load_b=load_b,
                out_index=out_index,
                bias=bias,
                pack_block=pack_block if panel_buf is not None else None,
                prefetch_b=prefetch_b if flat_b is not None else None,
            )
            gemm_panel(b, spec, c, chunks)

        split_static(b, p, full_panels, panels, panel, nr, n % nr)

    b_text = "packed" if packed else "plain"
    if runtime_rows:
        units = body.mul(panels, chunks) if not isinstance(chunks, int) else panels * chunks
        runtime_work_units(body, target, rows, 2 * n * k_extent, units, unit)
        body.ret()
        summary = f"matmul ?x{k_extent} @ {k_extent}x{n} ({b_text} B, rows at run time)"
        describe_kernel(fn, summary + epilogue_summary(op), 0)
        return fn
    units = batches * panels * chunks
    work_units(body, target, 2 * batches * m * n * k_extent, units, unit)
    body.ret()
    batch_text = "x".join(map(str, batch_shape)) + " x " if batch_shape else ""
    rows_text = folded_from or str(m)
    summary = f"matmul {batch_text}{rows_text}x{k_extent} @ {k_extent}x{n} ({b_text} B)"
    describe_kernel(fn, summary + epilogue_summary(op), 2 * batches * m * n * k_extent)
    return fn
