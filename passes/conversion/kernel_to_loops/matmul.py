"""kernel.matmul -> register-blocked SIMD GEMM loops.

out[..., M, N] = a[..., M, K] @ b + epilogue. Work is split into (batch, N panel, M chunk)
units over scf.parallel; each unit walks its MR-row tiles against one NR-wide B panel, which
stays in L1/L2 while A rows stream through. B is either packed at compile time
("gemm_b_panel{NR}": [N/NR, K, NR], zero-padded) or "plain" ([..., K, N], read in place; the
partial last vector of an N tail is a masked load).
"""

from __future__ import annotations

import math

from xdsl.dialects import func
from xdsl.ir import SSAValue

from ember.dialects import kernel
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.passes.conversion.kernel_to_loops.gemm_common import (
    Epilogue,
    activation_of,
    ceil_div,
    decode,
    load_lanes,
    m_chunking,
    m_tile_loop,
    memref_shape,
    micro_kernel,
    split_static,
)
from ember.passes.conversion.kernel_to_loops.packing import gemm_blocking, matmul_layout
from ember.passes.conversion.kernel_to_loops.registry import lowering
from ember.passes.target import Target


def _batch_index(
    coords: list[SSAValue], batch_shape: tuple[int, ...], operand_batch: tuple[int, ...]
) -> list[SSAValue | int]:
    """Index of an operand's batch dims, numpy-broadcast against the output batch coords."""
    offset = len(batch_shape) - len(operand_batch)
    return [0 if dim == 1 else coords[offset + d] for d, dim in enumerate(operand_batch)]


@lowering(kernel.MatMulOp)
def lower_matmul(op: kernel.MatMulOp, target: Target, name: str) -> func.FuncOp:
    a_shape = memref_shape(op.a)
    b_shape = memref_shape(op.b)
    out_shape = memref_shape(op.output)
    m, k_extent = a_shape[-2:]
    n = out_shape[-1]
    layout = op.weight_layout.data
    blocking = gemm_blocking(target)
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
    bias_shape = memref_shape(op.bias) if op.bias is not None else None
    if bias_shape is not None and (math.prod(bias_shape) != n or bias_shape[-1] != n):
        raise ValueError(f"kernel.matmul: bias shape {bias_shape} must be [N] = [{n}]")

    operands = [op.a, op.b, op.bias, op.residual, op.output]
    present = [v for v in operands if v is not None]
    fn, body = kernel_function(name, [v.type for v in present])  # type: ignore[misc]
    args = dict(zip([id(v) for v in present], fn.args, strict=True))
    a_buf = args[id(op.a)]
    b_buf = args[id(op.b)]
    bias_buf = args[id(op.bias)] if op.bias is not None else None
    out_buf = args[id(op.output)]
    residual_buf = args[id(op.residual)] if op.residual is not None else None
    activation = activation_of(op)

    batch_shape = out_shape[:-2]
    batches = math.prod(batch_shape)
    panels = ceil_div(n, nr)
    full_panels = n // nr
    chunks = m_chunking(batches * panels, m, mr, target.threads)

    def unit(b: LoopBuilder, u: SSAValue) -> None:
        t, p, c = decode(b, u, [batches, panels, chunks])
        coords = decode(b, t, list(batch_shape)) if batch_shape else []
        a_batch = _batch_index(coords, batch_shape, a_shape[:-2])
        b_batch = [] if packed else _batch_index(coords, batch_shape, b_shape[:-2])
        out_batch = _batch_index(coords, batch_shape, batch_shape)
        n0 = b.mul(p, nr)
        epi = Epilogue(out_buf, residual_buf, activation, vw)

        def panel(b: LoopBuilder, cols: int) -> None:
            nv = ceil_div(cols, vw)

            def load_b(b: LoopBuilder, k: SSAValue, j: int) -> SSAValue:
                if packed:
                    return b.vload(b_buf, [p, k, j * vw], vw)
                lanes = min(vw, cols - j * vw)
                return load_lanes(b, b_buf, [*b_batch, k, b.add(n0, j * vw)], lanes, vw)

            col_idx = [b.add(n0, j * vw) for j in range(nv)]
            bias = []
            for j in range(nv):
                if bias_buf is None:
                    break
                lead = [0] * (len(bias_shape) - 1)  # type: ignore[arg-type]
                lanes = min(vw, cols - j * vw)
                bias.append(load_lanes(b, bias_buf, [*lead, col_idx[j]], lanes, vw))

            def tile(b: LoopBuilder, m0: SSAValue, rows: int) -> None:
                row_idx = [b.add(m0, i) for i in range(rows)]

                def load_a(b: LoopBuilder, k: SSAValue, i: int) -> SSAValue:
                    return b.load(a_buf, [*a_batch, row_idx[i], k])

                acc = micro_kernel(b, k_extent, rows, nv, vw, load_a, load_b)
                for i in range(rows):
                    for j in range(nv):
                        lanes = min(vw, cols - j * vw)
                        idx = [*out_batch, row_idx[i], col_idx[j]]
                        epi.finish(b, acc[i][j], idx, lanes, bias[j] if bias else None)

            m_tile_loop(b, c, chunks, m, mr, tile)

        split_static(b, p, full_panels, panels, panel, nr, n % nr)

    body.parallel_range(0, batches * panels * chunks, 1, unit)
    body.ret()
    return fn
