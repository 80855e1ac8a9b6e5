"""One module holding ~50 distinct kernels (a ResNet-50 has ~60) compiles and runs correctly.
Compile time is printed, not asserted (tests hold no wall-clock bounds; see benchmarks/)."""

from __future__ import annotations

import ctypes
import time

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import MemRefType, ModuleOp, f32
from xdsl.ir import SSAValue

from ember.codegen.jit import JitModule
from ember.core.target import host_target
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.tests.codegen.test_sgemm_microkernel import microkernel


def _gelu_like(name: str, n: int, vw: int) -> func.FuncOp:
    t = MemRefType(f32, [n])
    fn, b = kernel_function(name, [t, t])

    def row(b: LoopBuilder, i: SSAValue) -> None:
        x = b.vload(fn.args[0], [i], vw)
        e = b.exp(b.mulf(x, b.splat(-1.702, vw)))
        b.vstore(b.divf(x, b.addf(b.splat(1.0, vw), e)), fn.args[1], [i])

    b.parallel_range(0, n, vw, row)
    b.ret()
    return fn


def test_fifty_kernel_module_compiles() -> None:
    target = host_target()
    vw = target.vector_width
    functions = []
    for k in range(25):
        ukernel, _, _ = microkernel(target, 64 + 8 * k)
        fn = ukernel.ops.first
        assert isinstance(fn, func.FuncOp)
        fn.detach()
        fn.sym_name = type(fn.sym_name)(f"gemm_{k}")
        functions.append(fn)
        functions.append(_gelu_like(f"gelu_{k}", vw * (k + 1) * 4, vw))
    module = ModuleOp(functions)
    start = time.perf_counter()
    jit = JitModule(module, target)
    total = time.perf_counter() - start
    print(
        f"50 kernels: {', '.join(f'{k} {v:.3f}s' for k, v in jit.timings.items())}, total {total:.2f}s"
    )

    n = vw * 4 * 7
    x = np.linspace(-5, 5, n, dtype=np.float32)
    y = np.empty_like(x)
    jit.function("gelu_6", [ctypes.c_void_p] * 2)(x.ctypes.data, y.ctypes.data)
    np.testing.assert_allclose(
        y, x / (1 + np.exp(-1.702 * x.astype(np.float64))), rtol=1e-6, atol=1e-7
    )
