"""Packed-B GEMM at the small row counts of batch-1 transformer calls (issue 16): the
micro-kernel prefetches B one k block ahead (matmul.py, `prefetch_b`).

Numerics against numpy in float64 at the affected row counts, both ISAs' tilings (AVX-512:
14-row tiles, so 16 rows = 14 + 2; AVX2: 6-row tiles), static and run-time rows. K = 3072 (24
k blocks of 128 rows at NR = 32: the prefetch crosses blocks and, past a panel's last block,
into the next panel; on the last panel it is clamped inside B). Tolerance: max |out - ref| <=
1e-4 * max(1, max |ref|) (float32 accumulation over K = 3072; the observed error is ~1e-5 of
the output's scale).
"""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects.builtin import DYNAMIC_INDEX, MemRefType, ModuleOp, f32
from xdsl.ir import Block

from ember.codegen.jit import JitModule
from ember.core.target import Target, host_target, named_target
from ember.dialects.weight_layouts import pack_matmul_weight
from ember.passes.conversion.kernel_to_loops import matmul  # noqa: F401 (registers matmul)
from ember.passes.conversion.kernel_to_loops.gemm_common import K_UNROLL
from ember.passes.conversion.kernel_to_loops.registry import lowering_for
from ember.tests.filecheck_util import assert_filecheck
from ember.tools.kernel_ops import JitKernel, matmul_op

RTOL = 1e-4
K, N = 3072, 80  # N: two full 32-wide panels and a 16-wide tail (AVX-512), 5 panels (AVX2)
ROWS = [1, 8, 12, 16, 24, 32, 64, 128]
# The static-M kernels at the rows that take distinct paths of m_tile_loop (one program per
# row count, so each costs a compile): a tail tile only (1, 12 rows), full tiles only (12 rows
# at AVX2's 6), full tiles then a tail in one M chunk or in the last of two (16: AVX-512's 3
# panels split M in two; 128: several full tiles per chunk). Every row count of ROWS runs
# through the runtime-M program below, one compile for all of them.
STATIC_ROWS = [1, 12, 16, 128]

AVX2 = Target(cpu="x86-64-v3", vector_width=8, vector_registers=16, threads=1)


def _operands(m: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)
    bias = rng.standard_normal(N, dtype=np.float32)
    residual = rng.standard_normal((m, N), dtype=np.float32)
    return a, b, bias, residual


def _check(out: np.ndarray, a: np.ndarray, b: np.ndarray, bias: np.ndarray, res: np.ndarray):
    ref = a.astype(np.float64) @ b.astype(np.float64) + bias + res
    err = np.max(np.abs(out - ref))
    assert err <= RTOL * max(1.0, np.max(np.abs(ref))), f"max error {err}"


def _types(rows: int, packed_shape: tuple[int, ...]) -> list[MemRefType]:
    return [
        MemRefType(f32, [rows, K]),
        MemRefType(f32, packed_shape),
        MemRefType(f32, [N]),
        MemRefType(f32, [rows, N]),
        MemRefType(f32, [rows, N]),
    ]


@pytest.mark.parametrize("target", [None, AVX2], ids=["host", "avx2"])
@pytest.mark.parametrize("m", STATIC_ROWS)
def test_packed_gemm_rows_of_short_requests(m: int, target: Target | None) -> None:
    target = target or host_target(1)
    a, b, bias, residual = _operands(m, seed=m)
    packed, layout = pack_matmul_weight(b, target)
    gemm = JitKernel(matmul_op(layout, True, True), _types(m, packed.shape), target)
    out = np.full((m, N), np.nan, np.float32)
    gemm(a, packed, bias, residual, out)
    _check(out, a, b, bias, residual)


def test_packed_gemm_runtime_rows() -> None:
    """One program with `?` rows (the runtime-M path) at every row count."""
    target = host_target(1)
    a0, b, bias, _ = _operands(1)
    packed, layout = pack_matmul_weight(b, target)
    gemm = JitKernel(matmul_op(layout, True, True), _types(DYNAMIC_INDEX, packed.shape), target)
    for m in ROWS:
        a, _, _, residual = _operands(m, seed=m)
        out = np.full((m, N), np.nan, np.float32)
        gemm(a, packed, bias, residual, out)
        _check(out, a, b, bias, residual)


def test_packed_gemm_two_threads_chunked_rows() -> None:
    """Two threads at 16 rows: fewer panels than 4 per thread, so M is split into chunks
    (units run in any order; each prefetches its own panel's next block)."""
    target = host_target(2)
    a, b, bias, residual = _operands(16)
    packed, layout = pack_matmul_weight(b, target)
    gemm = JitKernel(matmul_op(layout, True, True), _types(16, packed.shape), target, threads=2)
    out = np.full((16, N), np.nan, np.float32)
    gemm(a, packed, bias, residual, out)
    _check(out, a, b, bias, residual)


def _lowered(target: Target, layout: str, b_shape: tuple[int, ...], rows: int = 16) -> ModuleOp:
    block = Block(arg_types=[MemRefType(f32, (rows, 300)), MemRefType(f32, b_shape)])
    out = Block(arg_types=[MemRefType(f32, (rows, 40))]).args[0]
    op = matmul_op(layout, False, False, None)([*block.args, out])
    module = ModuleOp([lowering_for(op)(op, target, "mm")])
    module.verify()
    return module


@pytest.mark.parametrize(
    ("isa", "lines"),
    # K_UNROLL rows of NR floats per unrolled step, in 64-byte lines: 4 x 32 x 4 B = 8
    # lines (AVX-512, NR 32), 4 x 16 x 4 B = 4 lines (AVX2, NR 16).
    [("x86-64-v4", 8), ("x86-64-v3", 4)],
    ids=["avx512", "avx2"],
)
def test_packed_b_is_prefetched_one_block_ahead(isa: str, lines: int) -> None:
    """Each unrolled k step of the micro-kernel asks for the cache lines of the B rows one
    k block (kc rows) ahead, clamped to B's last K_UNROLL rows; the prefetch reaches the
    machine code as prefetcht0."""
    target = named_target(isa, threads=1)
    packed, layout = pack_matmul_weight(np.zeros((300, 40), np.float32), target)
    panels, _, nr = packed.shape
    module = _lowered(target, layout, packed.shape)
    last_row = panels * 300 - K_UNROLL
    assert_filecheck(
        str(module),
        f"""
        CHECK: %[[FLAT:[0-9]+]] = memref.reinterpret_cast %1 {{{{.*}}}} to memref<{panels * 300 * nr}xf32>
        CHECK: scf.for {{{{.*}}}} iter_args
        CHECK: arith.minsi {{{{.*}}}}
        CHECK-COUNT-{lines}: llvm.call_intrinsic "llvm.prefetch.p0"
        CHECK-NOT: llvm.prefetch
        CHECK: vector.fma
        """,
    )
    assert f"arith.constant {last_row} : index" in str(module)
    asm = JitModule(module, target).asm()
    assert "prefetcht0" in asm


def test_plain_b_is_not_prefetched() -> None:
    """A plain B (an activation, or a weight left unpacked) is not prefetched: its k
    blocks are copied to scratch (or it fits one block and is read in place)."""
    module = _lowered(named_target("x86-64-v4", threads=1), "plain", (300, 40))
    assert "llvm.prefetch" not in str(module)
