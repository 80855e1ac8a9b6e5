"""A whole kernel program with run-time rows (runtime extents, issue 10 foundation): a
transformer FFN block written in kernel IR with `?` rows, taken through plan-memory,
place-weights and lower-kernels-to-loops ONCE, JIT-compiled, and run at five row counts
(1, 7, 16, 33, 100: the GEMM's remainders and the vector tails), its arena sized by
`main_arena_bytes(n)`. What the importer will produce once it types `?` dims (not yet).

    h = gelu(x @ W1 + b1)             kernel.matmul, packed W1, gelu epilogue
    r = h @ W2 + x                    kernel.matmul, packed W2, residual x
    y = LayerNorm(r) * g + beta       kernel.layer_norm over the last axis

Tolerance: against float64 numpy, max |y - ref| <= 1e-4 (LayerNorm output is O(1);
float32 GEMMs with K <= 256).
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
from xdsl.parser import Parser

from ember.codegen.jit import JitModule
from ember.core.context import make_context
from ember.core.target import host_target
from ember.dialects.weight_layouts import pack_matmul_weight
from ember.dialects.weights import WeightStore
from ember.passes.pipeline import build_pipeline
from ember.passes.program import entry_function
from ember.runtime.status import new_status

HIDDEN, INNER = 64, 256

PROGRAM = """
builtin.module {{
  func.func @main(%x: memref<?x{h}xf32>, %y: memref<?x{h}xf32>,
                  %n: index {{ember.extent_of = array<i64: 0, 0, 1, 0>}})
      attributes {{ember.input_names = ["x"], ember.output_names = ["y"]}} {{
    %c0 = arith.constant 0 : index
    %rows = memref.dim %x, %c0 : memref<?x{h}xf32>
    %w1 = kernel.weight "w1" : memref<{w1}xf32>
    %b1 = kernel.weight "b1" : memref<{i}xf32>
    %hid = memref.alloc(%rows) : memref<?x{i}xf32>
    kernel.matmul %x, %w1 bias %b1 -> %hid {{weight_layout = "{layout1}", activation = "gelu"}} : memref<?x{h}xf32>, memref<{w1}xf32>, memref<{i}xf32> -> memref<?x{i}xf32>
    %w2 = kernel.weight "w2" : memref<{w2}xf32>
    %r = memref.alloc(%rows) : memref<?x{h}xf32>
    kernel.matmul %hid, %w2 residual %x -> %r {{weight_layout = "{layout2}"}} : memref<?x{i}xf32>, memref<{w2}xf32>, memref<?x{h}xf32> -> memref<?x{h}xf32>
    %g = kernel.weight "g" : memref<{h}xf32>
    %beta = kernel.weight "beta" : memref<{h}xf32>
    kernel.layer_norm %r, %g bias %beta -> %y {{axis = 1 : i64, epsilon = 1.000000e-05 : f32}} : memref<?x{h}xf32>, memref<{h}xf32>, memref<{h}xf32> -> memref<?x{h}xf32>
    func.return
  }}
}}
"""


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x)


def test_ffn_block_one_program_every_row_count() -> None:
    """Two threads: the GEMMs pick the calling thread below PARALLEL_MIN_FLOPS (the small row
    counts) and the team above it (100 rows), at run time."""
    threads = 2
    target = host_target(threads)
    rng = np.random.default_rng(5)
    w1 = rng.standard_normal((HIDDEN, INNER), dtype=np.float32) / 8
    w2 = rng.standard_normal((INNER, HIDDEN), dtype=np.float32) / 16
    b1 = rng.standard_normal(INNER, dtype=np.float32)
    g = rng.standard_normal(HIDDEN, dtype=np.float32)
    beta = rng.standard_normal(HIDDEN, dtype=np.float32)
    packed1, layout1 = pack_matmul_weight(w1, target)
    packed2, layout2 = pack_matmul_weight(w2, target)
    weights = WeightStore({"w1": packed1, "w2": packed2, "b1": b1, "g": g, "beta": beta})
    text = PROGRAM.format(
        h=HIDDEN,
        i=INNER,
        w1="x".join(map(str, packed1.shape)),
        w2="x".join(map(str, packed2.shape)),
        layout1=layout1,
        layout2=layout2,
    )
    ctx = make_context(weights, target)
    module = Parser(ctx, text).parse_module()
    build_pipeline("plan-memory,place-weights,lower-kernels-to-loops").apply(ctx, module)
    module.verify()
    fn = entry_function(module)
    blob = np.zeros(max(fn.attributes["ember.weights_bytes"].value.data, 64), np.uint8)
    for name, offset in fn.attributes["ember.weight_offsets"].data.items():
        data = weights[name].view(np.uint8).ravel()
        blob[offset.value.data : offset.value.data + data.size] = data
    jit = JitModule(module, target)
    jit.function("ember_set_num_threads", [ctypes.c_int32])(threads)
    arena_bytes = jit.function("main_arena_bytes", [ctypes.c_int64], ctypes.c_int64)
    # main(x, y, n, arena, weights, status)
    main = jit.function("main", [ctypes.c_void_p] * 2 + [ctypes.c_int64] + [ctypes.c_void_p] * 3)
    for n in (1, 7, 16, 33, 100):
        x = rng.standard_normal((n, HIDDEN), dtype=np.float32)
        y = np.full_like(x, np.nan)
        arena = np.zeros(arena_bytes(n), np.uint8)
        main(
            x.ctypes.data,
            y.ctypes.data,
            n,
            arena.ctypes.data,
            blob.ctypes.data,
            new_status().ctypes.data,
        )
        x64 = x.astype(np.float64)
        pre = x64 @ w1 + b1
        hidden = 0.5 * pre * (1 + _erf(pre / math.sqrt(2)))
        r = hidden @ w2 + x64
        mean = r.mean(axis=1, keepdims=True)
        var = ((r - mean) ** 2).mean(axis=1, keepdims=True)
        expected = (r - mean) / np.sqrt(var + 1e-5) * g + beta
        assert np.max(np.abs(y - expected)) <= 1e-4, n
