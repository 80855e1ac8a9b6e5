"""plan-memory with buffers of run-time size (runtime extents, issue 10 foundation): the offset
program, run end to end. The program below is planned and lowered once, JIT-compiled, and run
at several row counts: `main_arena_bytes(n)` sizes the arena, `main` runs in it. Checked: the
outputs against numpy (the exp approximation: rtol 1e-6, atol 1e-6), which a buffer placed
over another one alive at the same time would corrupt (%a is read by the last kernel, after
%b and %c are written), and guard bytes after the arena, which a too-small arena would
overwrite. The IR of the offset program: plan-memory-runtime-sizes.mlir.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from xdsl.parser import Parser

from ember.codegen.jit import JitModule
from ember.core.context import make_context
from ember.core.target import host_target
from ember.passes.pipeline import build_pipeline
from ember.passes.program import entry_function
from ember.runtime.status import new_status

# y = (exp(x) + x)^2 * exp(w) - exp(x), rows n at run time; %c has (2n)/2 rows (index
# arithmetic on the extent argument); %s is a static intermediate below the dynamic ones.
PROGRAM = """
builtin.module {
  func.func @main(%x: memref<?x64xf32>, %w: memref<1xf32>, %y: memref<?x64xf32>,
                  %n: index {ember.extent_of = array<i64: 0, 0, 2, 0>})
      attributes {ember.input_names = ["x", "w"], ember.output_names = ["y"]} {
    %c0 = arith.constant 0 : index
    %rows = memref.dim %x, %c0 : memref<?x64xf32>
    %s = memref.alloc() : memref<1xf32>
    kernel.elementwise(%w) -> %s : (memref<1xf32>) -> memref<1xf32> {
    ^bb0(%v: f32):
      %e = math.exp %v : f32
      kernel.yield %e : f32
    }
    %a = memref.alloc(%rows) : memref<?x64xf32>
    kernel.elementwise(%x) -> %a : (memref<?x64xf32>) -> memref<?x64xf32> {
    ^bb0(%v: f32):
      %e = math.exp %v : f32
      kernel.yield %e : f32
    }
    %b = memref.alloc(%rows) : memref<?x64xf32>
    kernel.elementwise(%a, %x) -> %b : (memref<?x64xf32>, memref<?x64xf32>) -> memref<?x64xf32> {
    ^bb0(%v: f32, %u: f32):
      %e = arith.addf %v, %u : f32
      kernel.yield %e : f32
    }
    %two = arith.constant 2 : index
    %wide = arith.muli %n, %two : index
    %half = arith.divui %wide, %two : index
    %c = memref.alloc(%half) : memref<?x64xf32>
    kernel.elementwise(%b, %s) -> %c : (memref<?x64xf32>, memref<1xf32>) -> memref<?x64xf32> {
    ^bb0(%v: f32, %u: f32):
      %e = arith.mulf %v, %v : f32
      %f = arith.mulf %e, %u : f32
      kernel.yield %f : f32
    }
    kernel.elementwise(%c, %a) -> %y : (memref<?x64xf32>, memref<?x64xf32>) -> memref<?x64xf32> {
    ^bb0(%v: f32, %u: f32):
      %e = arith.subf %v, %u : f32
      kernel.yield %e : f32
    }
    func.return
  }
}
"""

GUARD = 256


@pytest.mark.parametrize("threads", [1, 2])
def test_one_program_runs_at_every_size(threads: int) -> None:
    ctx = make_context()
    module = Parser(ctx, PROGRAM).parse_module()
    build_pipeline("plan-memory,lower-kernels-to-loops").apply(ctx, module)
    module.verify()
    fn = entry_function(module)
    assert fn.attributes["ember.arena_function"].data == "main_arena_bytes"
    jit = JitModule(module, host_target(threads))
    jit.function("ember_set_num_threads", [ctypes.c_int32])(threads)
    arena_bytes = jit.function("main_arena_bytes", [ctypes.c_int64], ctypes.c_int64)
    # main(x, w, y, n, arena, status)
    main = jit.function("main", [ctypes.c_void_p] * 3 + [ctypes.c_int64] + [ctypes.c_void_p] * 2)
    rng = np.random.default_rng(0)

    for n in (1, 7, 16, 33, 100, 1000, 3):
        x = rng.standard_normal((n, 64), dtype=np.float32)
        w = np.array([0.25], np.float32)
        y = np.full_like(x, np.nan)
        size = arena_bytes(n)

        # Three [n, 64] float buffers alive at once over 64 static bytes, 64-byte aligned.
        assert size == 64 + 3 * (-(-n * 256 // 64) * 64)
        arena = np.full(size + GUARD, 0xA5, np.uint8)
        main(
            x.ctypes.data,
            w.ctypes.data,
            y.ctypes.data,
            n,
            arena.ctypes.data,
            new_status().ctypes.data,
        )
        ex = np.exp(x.astype(np.float64))
        expected = (ex + x) ** 2 * np.exp(0.25) - ex
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
        assert (arena[size:] == 0xA5).all(), f"n={n}: the program wrote past the arena"


def test_size_read_from_a_buffer_is_refused() -> None:
    """A size computed from data (a load) cannot be planned before the run: refused, naming it."""
    text = PROGRAM.replace(
        "%half = arith.divui %wide, %two : index",
        "%h0 = memref.load %w[%c0] : memref<1xf32>\n"
        "    %h1 = arith.fptoui %h0 : f32 to i64\n"
        "    %half = arith.index_cast %h1 : i64 to index",
    )
    ctx = make_context()
    module = Parser(ctx, text).parse_module()
    with pytest.raises(NotImplementedError, match="computed from the entry's index arguments"):
        build_pipeline("plan-memory").apply(ctx, module)
