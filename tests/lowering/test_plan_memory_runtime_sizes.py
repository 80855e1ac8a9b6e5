"""plan-memory with buffers of run-time size (runtime extents, issue 10 foundation): the offset
program, run end to end. The program below is planned and lowered once, JIT-compiled, and run
at several row counts: `main_arena_bytes(n)` sizes the arena, `main` runs in it. Checked: the
outputs against numpy (rtol 1e-5, atol 1e-5), which a buffer placed over another one alive at
the same time would corrupt (%a is read by the last kernel, after %b and %c are written; %c
goes over %b in place), the arena's size, and guard bytes after the arena, which a too-small
arena would overwrite. The IR of the offset program: plan-memory-runtime-sizes.mlir.
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


def compiled(text: str, threads: int = 1) -> JitModule:
    """The kernel program planned and lowered, JIT-compiled for `threads`."""
    ctx = make_context()
    module = Parser(ctx, text).parse_module()
    build_pipeline("plan-memory,lower-kernels-to-loops").apply(ctx, module)
    module.verify()
    assert entry_function(module).attributes["ember.arena_function"].data == "main_arena_bytes"
    jit = JitModule(module, host_target(threads))
    jit.function("ember_set_num_threads", [ctypes.c_int32])(threads)
    return jit


@pytest.mark.parametrize("threads", [1, 2])
def test_one_program_runs_at_every_size(threads: int) -> None:
    jit = compiled(PROGRAM, threads)
    arena_bytes = jit.function("main_arena_bytes", [ctypes.c_int64], ctypes.c_int64)
    # main(x, w, y, n, arena, status)
    main = jit.function("main", [ctypes.c_void_p] * 3 + [ctypes.c_int64] + [ctypes.c_void_p] * 2)
    rng = np.random.default_rng(0)

    for n in (1, 7, 16, 33, 100, 1000, 3):
        x = rng.standard_normal((n, 64), dtype=np.float32)
        w = np.array([0.25], np.float32)
        y = np.full_like(x, np.nan)
        size = arena_bytes(n)

        # Two [n, 64] float slots over 64 static bytes, 64-byte aligned: %c is written over
        # %b, which dies at its kernel; %a lives to the end.
        assert size == 64 + 2 * (-(-n * 256 // 64) * 64)
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


# %c may not go over %b in place: %q, placed first (the largest), is born after %b dies, so
# %b may lie in %q's bytes, and %q is alive with %c. Over %b, %c would be overwritten by %q
# before the last kernels read it.
NOT_IN_PLACE = """
builtin.module {
  func.func @main(%x: memref<?x64xf32>, %z: memref<?x128xf32>, %y1: memref<?x64xf32>,
                  %y2: memref<?x128xf32>,
                  %n: index {ember.extent_of = array<i64: 0, 0, 1, 0, 2, 0, 3, 0>})
      attributes {ember.input_names = ["x", "z"], ember.output_names = ["y1", "y2"]} {
    %b = memref.alloc(%n) : memref<?x64xf32>
    kernel.elementwise(%x) -> %b : (memref<?x64xf32>) -> memref<?x64xf32> {
    ^bb0(%v: f32):
      %e = math.exp %v : f32
      kernel.yield %e : f32
    }
    %c = memref.alloc(%n) : memref<?x64xf32>
    kernel.elementwise(%b) -> %c : (memref<?x64xf32>) -> memref<?x64xf32> {
    ^bb0(%v: f32):
      %e = arith.addf %v, %v : f32
      kernel.yield %e : f32
    }
    %q = memref.alloc(%n) : memref<?x128xf32>
    kernel.elementwise(%z) -> %q : (memref<?x128xf32>) -> memref<?x128xf32> {
    ^bb0(%v: f32):
      %e = arith.mulf %v, %v : f32
      kernel.yield %e : f32
    }
    kernel.elementwise(%c, %x) -> %y1 : (memref<?x64xf32>, memref<?x64xf32>) -> memref<?x64xf32> {
    ^bb0(%v: f32, %u: f32):
      %e = arith.subf %v, %u : f32
      kernel.yield %e : f32
    }
    kernel.elementwise(%q) -> %y2 : (memref<?x128xf32>) -> memref<?x128xf32> {
    ^bb0(%v: f32):
      %e = arith.addf %v, %v : f32
      kernel.yield %e : f32
    }
    func.return
  }
}
"""


def test_in_place_only_where_no_earlier_buffer_may_overlap() -> None:
    jit = compiled(NOT_IN_PLACE)
    arena_bytes = jit.function("main_arena_bytes", [ctypes.c_int64], ctypes.c_int64)
    # main(x, z, y1, y2, n, arena, status)
    main = jit.function("main", [ctypes.c_void_p] * 4 + [ctypes.c_int64] + [ctypes.c_void_p] * 2)
    rng = np.random.default_rng(1)
    for n in (1, 5, 40):
        x = rng.standard_normal((n, 64), dtype=np.float32)
        z = rng.standard_normal((n, 128), dtype=np.float32)
        y1, y2 = np.full_like(x, np.nan), np.full_like(z, np.nan)
        arena = np.zeros(arena_bytes(n), np.uint8)
        pointers = [a.ctypes.data for a in (x, z, y1, y2)]
        main(*pointers, n, arena.ctypes.data, new_status().ctypes.data)
        np.testing.assert_allclose(y1, 2 * np.exp(x.astype(np.float64)) - x, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(y2, 2 * z * z, rtol=1e-6)
