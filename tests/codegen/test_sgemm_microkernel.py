"""A register-blocked SGEMM micro-kernel written with vector.fma, as GEMM lowerings will emit.

C[MR, NV*VW] = A[MR, K] @ B[K, NV*VW], MR*NV accumulators kept in registers across the K loop
(MR chosen from Target.vector_registers). Checks the result (rtol 1e-4 vs float64: K=512
float32 sums) and that the emitter's code uses packed FMA on ymm/zmm registers.
"""

from __future__ import annotations

import ctypes
import time

import numpy as np
from xdsl.dialects.builtin import MemRefType, ModuleOp, f32
from xdsl.ir import SSAValue

from ember.codegen.jit import JitModule
from ember.core.target import Target, host_target
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function


def microkernel(target: Target, k: int) -> tuple[ModuleOp, int, int]:
    vw = target.vector_width
    nv = 2
    mr = (target.vector_registers - nv - 1) // nv  # accumulators + B vectors + one broadcast
    n = nv * vw
    fn, b = kernel_function(
        "sgemm_ukernel",
        [MemRefType(f32, [mr, k]), MemRefType(f32, [k, n]), MemRefType(f32, [mr, n])],
    )
    a_buf, b_buf, c_buf = fn.args
    zeros = [b.splat(0.0, vw) for _ in range(mr * nv)]

    def body(b: LoopBuilder, kk: SSAValue, *acc: SSAValue) -> list[SSAValue]:
        cols = [b.vload(b_buf, [kk, j * vw], vw) for j in range(nv)]
        out = []
        for r in range(mr):
            a = b.splat(b.load(a_buf, [r, kk]), vw)
            out += [b.fma(a, cols[j], acc[r * nv + j]) for j in range(nv)]
        return out

    acc = b.for_range(0, k, 1, body, iter_args=zeros)
    for r in range(mr):
        for j in range(nv):
            b.vstore(acc[r * nv + j], c_buf, [r, j * vw])
    b.ret()
    return ModuleOp([fn]), mr, n


def test_register_blocked_sgemm_uses_packed_fma() -> None:
    target = host_target()
    k = 512
    module, mr, n = microkernel(target, k)
    jit = JitModule(module, target)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((mr, k)).astype(np.float32)
    bm = rng.standard_normal((k, n)).astype(np.float32)
    c = np.zeros((mr, n), np.float32)
    fn = jit.function("sgemm_ukernel", [ctypes.c_void_p] * 3)
    fn(a.ctypes.data, bm.ctypes.data, c.ctypes.data)
    np.testing.assert_allclose(c, a.astype(np.float64) @ bm, rtol=1e-4, atol=1e-3)

    asm = jit.asm()
    register = "zmm" if target.vector_width == 16 else "ymm"
    assert "vfmadd" in asm and f"%{register}" in asm
    # The accumulators live in registers: no stack spills inside the K loop.
    assert "vfmadd231ps\t(%" not in asm or "rsp" not in asm.split("vfmadd")[1].split("\n")[0]

    repeats = 2000
    pointers = (a.ctypes.data, bm.ctypes.data, c.ctypes.data)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(*pointers)
    elapsed = time.perf_counter() - start
    gflops = 2 * mr * n * k * repeats / elapsed / 1e9
    print(f"micro-kernel {mr}x{n}x{k}: {gflops:.1f} GFLOP/s (incl. ctypes call overhead)")
