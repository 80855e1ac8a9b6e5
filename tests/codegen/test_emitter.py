"""The loops -> LLVM emitter, checked by JIT-compiling small functions and running them.

Run: pytest tests/codegen -q
Exact ops (integer, memory, control flow) are compared bit-exactly against numpy; float
kernels with rtol 1e-6 (reassociation may change the rounding of sums: rtol 1e-5 there).
"""

from __future__ import annotations

import ctypes
import platform
import re

import numpy as np
import pytest
from xdsl.dialects import arith, memref
from xdsl.dialects.builtin import MemRefType, ModuleOp, f32, i8, i64
from xdsl.ir import SSAValue

from ember.codegen.jit import JitModule
from ember.codegen.llvm_emitter import (
    CHUNKS_PER_THREAD,
    SINGLE_CLAIMS_PER_THREAD,
    claim_ranges,
    emit_module,
)
from ember.core.target import host_target
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.tests.codegen.util import parse, run

TARGET = host_target()
VW = TARGET.vector_width
RNG = np.random.default_rng(0)


def test_elementwise_vector_kernel() -> None:
    n = 64 * VW
    t = MemRefType(f32, [n])
    fn, b = kernel_function("axpb", [t, t, t])

    def body(b: LoopBuilder, i: SSAValue) -> None:
        x = b.vload(fn.args[0], [i], VW)
        y = b.vload(fn.args[1], [i], VW)
        r = b.fma(x, b.splat(2.5, VW), y)
        b.vstore(b.maxf(r, b.splat(0.0, VW)), fn.args[2], [i])

    b.for_range(0, n, VW, body)
    b.ret()
    # Offset by one float: vector accesses must not assume vector alignment.
    x = np.zeros(n + 1, np.float32)[1:]
    x[:] = RNG.standard_normal(n)
    y = RNG.standard_normal(n).astype(np.float32)
    out = np.empty(n, np.float32)
    run(ModuleOp([fn]), "axpb", [x, y, out])
    # vector.fma rounds once: compare with the float64 result.
    expected = np.maximum(x.astype(np.float64) * 2.5 + y, 0).astype(np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_reduction_with_iter_args_and_scalar_tail() -> None:
    n = 16 * VW + 3  # a vector body then a scalar tail
    t = MemRefType(f32, [n])
    out_t = MemRefType(f32, [1])
    fn, b = kernel_function("sum", [t, out_t])
    main = (n // VW) * VW

    def vbody(b: LoopBuilder, i: SSAValue, acc: SSAValue) -> list[SSAValue]:
        return [b.addf(acc, b.vload(fn.args[0], [i], VW))]

    (vacc,) = b.for_range(0, main, VW, vbody, iter_args=[b.splat(0.0, VW)])
    partial = b.reduce("add", vacc)

    def sbody(b: LoopBuilder, i: SSAValue, acc: SSAValue) -> list[SSAValue]:
        return [b.addf(acc, b.load(fn.args[0], [i]))]

    (total,) = b.for_range(main, n, 1, sbody, iter_args=[partial])
    b.store(total, fn.args[1], [0])
    b.ret()
    x = RNG.standard_normal(n).astype(np.float32)
    out = np.zeros(1, np.float32)
    run(ModuleOp([fn]), "sum", [x, out])
    np.testing.assert_allclose(out[0], x.astype(np.float64).sum(), rtol=1e-5, atol=1e-5)


def test_nested_loops_on_2d_memrefs() -> None:
    rows, cols = 5, 7
    fn, b = kernel_function(
        "transpose", [MemRefType(f32, [rows, cols]), MemRefType(f32, [cols, rows])]
    )

    def outer(b: LoopBuilder, i: SSAValue) -> None:
        def inner(b: LoopBuilder, j: SSAValue) -> None:
            b.store(b.load(fn.args[0], [i, j]), fn.args[1], [j, i])

        b.for_range(0, cols, 1, inner)

    b.for_range(0, rows, 1, outer)
    b.ret()
    x = RNG.standard_normal((rows, cols)).astype(np.float32)
    out = np.empty((cols, rows), np.float32)
    run(ModuleOp([fn]), "transpose", [x, out])
    np.testing.assert_array_equal(out, x.T)


SCF_IF = """
func.func @clip_count(%x: memref<16xf32>, %y: memref<16xf32>, %count: memref<1xi64>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c16 = arith.constant 16 : index
  %zero = arith.constant 0.0 : f32
  %i0 = arith.constant 0 : i64
  %i1 = arith.constant 1 : i64
  %n = scf.for %i = %c0 to %c16 step %c1 iter_args(%acc = %i0) -> (i64) {
    %v = memref.load %x[%i] : memref<16xf32>
    %neg = arith.cmpf olt, %v, %zero : f32
    %r, %inc = scf.if %neg -> (f32, i64) {
      scf.yield %zero, %i1 : f32, i64
    } else {
      scf.yield %v, %i0 : f32, i64
    }
    memref.store %r, %y[%i] : memref<16xf32>
    %big = arith.cmpf ogt, %v, %zero : f32
    scf.if %big {
      %twice = arith.addf %v, %v : f32
      memref.store %twice, %y[%i] : memref<16xf32>
    }
    %next = arith.addi %acc, %inc : i64
    scf.yield %next : i64
  }
  memref.store %n, %count[%c0] : memref<1xi64>
  func.return
}
"""


def test_scf_if_with_and_without_results() -> None:
    x = RNG.standard_normal(16).astype(np.float32)
    x[3] = 0.0
    y = np.empty(16, np.float32)
    count = np.zeros(1, np.int64)
    run(parse(SCF_IF), "clip_count", [x, y, count])
    np.testing.assert_array_equal(y, np.where(x < 0, 0, np.where(x > 0, 2 * x, x)))
    assert count[0] == (x < 0).sum()


VIEWS = """
func.func @views(%arena: memref<256xi8>, %out: memref<4xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %shift = arith.constant 64 : index
  %a = memref.view %arena[%shift][] : memref<256xi8> to memref<2x4xf32>
  %v = memref.load %a[%c1, %c2] : memref<2x4xf32>
  memref.store %v, %out[%c0] : memref<4xf32>
  %r = memref.reinterpret_cast %a to offset: [5], sizes: [3], strides: [1] : memref<2x4xf32> to memref<3xf32, strided<[1], offset: 5>>
  %w = memref.load %r[%c2] : memref<3xf32, strided<[1], offset: 5>>
  memref.store %w, %out[%c1] : memref<4xf32>
  %s = memref.reinterpret_cast %r to offset: [1], sizes: [2], strides: [1] : memref<3xf32, strided<[1], offset: 5>> to memref<2xf32, strided<[1], offset: 1>>
  %u = memref.load %s[%c0] : memref<2xf32, strided<[1], offset: 1>>
  memref.store %u, %out[%c2] : memref<4xf32>
  func.return
}
"""


def test_view_into_i8_arena_and_reinterpret_cast() -> None:
    arena = np.zeros(256, np.uint8)
    floats = np.arange(8, dtype=np.float32) + 10
    arena[64:96] = floats.view(np.uint8)
    out = np.zeros(4, np.float32)
    run(parse(VIEWS), "views", [arena, out])
    # [1, 2] of 2x4 -> element 6; offset 5 + 2 -> element 7; offset 1 (from the base) -> 1
    np.testing.assert_array_equal(out, [16.0, 17.0, 11.0, 0.0])


def _parallel_rows_module(rows: int, cols: int) -> ModuleOp:
    """out[i, :] = cumsum(x[i, :]) * (i+1), rows in parallel, a scratch row on the stack."""
    t = MemRefType(f32, [rows, cols])
    fn, b = kernel_function("rows", [t, t])

    def row(b: LoopBuilder, i: SSAValue) -> None:
        scratch = b.insert(memref.AllocaOp.get(f32, shape=[cols])).results[0]
        scale = b.insert(
            arith.SIToFPOp(
                b.insert(arith.IndexCastOp(b.add(i, 1), i64)).results[0],
                f32,
            )
        ).results[0]

        def scan(b: LoopBuilder, j: SSAValue, acc: SSAValue) -> list[SSAValue]:
            nxt = b.addf(acc, b.load(fn.args[0], [i, j]))
            b.store(nxt, scratch, [j])
            return [nxt]

        b.for_range(0, cols, 1, scan, iter_args=[b.const(0.0)])

        def copy(b: LoopBuilder, j: SSAValue) -> None:
            b.store(b.mulf(b.load(scratch, [j]), scale), fn.args[1], [i, j])

        b.for_range(0, cols, 1, copy)

    b.parallel_range(0, rows, 1, row)
    b.ret()
    return ModuleOp([fn])


@pytest.mark.parametrize("threads", [1, 2])
def test_parallel_with_alloca_matches_serial(threads: int) -> None:
    rows, cols = 37, 50
    x = RNG.standard_normal((rows, cols)).astype(np.float32)
    out = np.zeros_like(x)
    module = _parallel_rows_module(rows, cols)
    jit = run(module, "rows", [x, out], threads=threads)
    expected = np.cumsum(x, axis=1, dtype=np.float32) * np.arange(1, rows + 1)[:, None]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert "GOMP_parallel" in jit.llvm_ir
    # Before optimization: the alloca sits in the entry block of the outlined function.
    unoptimized = str(emit_module(module, TARGET))
    outlined = unoptimized.split('define internal void @"rows__parallel_1"')[1]
    entry = outlined.split("body:")[0]
    assert "alloca [50 x float], align 64" in entry


PARALLEL_2D_BODY = """
func.func private @omp_get_thread_num() -> i32
func.func @grid(%out: memref<6x10xi32>, %tid: memref<6x10xi32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c6 = arith.constant 6 : index
  %c10 = arith.constant 10 : index
  %c100 = arith.constant 100 : index
  "scf.parallel"(%c0, %c1, %c6, %c10, %c1, %c2) <{operandSegmentSizes = array<i32: 2, 2, 2, 0>}> ({
  ^bb0(%i: index, %j: index):
    %s = arith.muli %i, %c100 : index
    %v = arith.addi %s, %j : index
    %w = arith.index_cast %v : index to i32
    memref.store %w, %out[%i, %j] : memref<6x10xi32>
    %t = func.call @omp_get_thread_num() : () -> i32
    memref.store %t, %tid[%i, %j] : memref<6x10xi32>
    "scf.parallel"(%c0, %c2, %c1) <{operandSegmentSizes = array<i32: 1, 1, 1, 0>}> ({
    ^bb1(%k: index):
      %z = arith.addi %j, %k : index
      %cz = arith.cmpi ult, %z, %c10 : index
      scf.if %cz {
        %old = memref.load %out[%i, %z] : memref<6x10xi32>
        memref.store %old, %out[%i, %z] : memref<6x10xi32>
      }
      scf.reduce
    }) : (index, index, index) -> ()
    scf.reduce
  }) : (index, index, index, index, index, index) -> ()
  func.return
}
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_multidim_parallel_covers_each_point_once(threads: int) -> None:
    out = np.full((6, 10), -1, np.int32)
    tid = np.full((6, 10), -1, np.int32)
    run(parse(PARALLEL_2D_BODY), "grid", [out, tid], threads=threads)
    i, j = np.meshgrid(np.arange(6), np.arange(10), indexing="ij")
    expected = np.where(j % 2 == 1, i * 100 + j, -1)
    np.testing.assert_array_equal(out, expected)
    # 30 points claimed in the chunks of claim_ranges (which thread takes which chunk
    # depends on timing); one thread takes all.
    flat = list(tid[:, 1::2].reshape(-1))
    assert set(flat) <= set(range(threads))
    for begin, end in claim_ranges(30, threads):
        assert len(set(flat[begin:end])) == 1, flat


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("total", [0, 1, 7, 14, 17, 33, 36, 98, 1000, 12345])
def test_claim_ranges_cover_the_iterations_in_balanced_chunks(threads: int, total: int) -> None:
    ranges = claim_ranges(total, threads)
    covered = [i for begin, end in ranges for i in range(begin, end)]
    assert covered == list(range(total))
    sizes = [end - begin for begin, end in ranges]
    if threads == 1 or total == 0:
        assert sizes == [total]
    elif total <= threads * SINGLE_CLAIMS_PER_THREAD:
        # Few coarse units (a conv's bands x M chunks): one per claim, so that 14 units on
        # 2 threads split 7/7 and not in chunks of 2 (4 chunks against 3).
        assert sizes == [1] * total
    else:
        assert len(sizes) == threads * CHUNKS_PER_THREAD
        assert max(sizes) - min(sizes) <= 1, sizes
        assert sizes == sorted(sizes, reverse=True), sizes
        # Threads of equal speed, each taking the next chunk when free, finish within one
        # unit of each other (with alternating sizes 36 units took 16 against 20).
        clocks = [0] * threads
        for size in sizes:
            clocks[clocks.index(min(clocks))] += size
        assert max(clocks) == -(-total // threads), clocks


@pytest.mark.parametrize("total", [14, 33, 98])
def test_two_threads_claim_every_chunk_of_claim_ranges(total: int) -> None:
    """The emitted claim loop hands out exactly claim_ranges' chunks (each one thread's)."""
    module = parse(PARALLEL_1D_BODY.replace("TOTAL", str(total)))
    tid = np.full(total, -1, np.int32)
    run(module, "ids", [tid], threads=2)
    assert set(tid.tolist()) <= {0, 1}
    for begin, end in claim_ranges(total, 2):
        assert len(set(tid[begin:end].tolist())) == 1, (begin, end, tid)


PARALLEL_1D_BODY = """
func.func private @omp_get_thread_num() -> i32
func.func @ids(%tid: memref<TOTALxi32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %cn = arith.constant TOTAL : index
  "scf.parallel"(%c0, %cn, %c1) <{operandSegmentSizes = array<i32: 1, 1, 1, 0>}> ({
  ^bb0(%i: index):
    %t = func.call @omp_get_thread_num() : () -> i32
    memref.store %t, %tid[%i] : memref<TOTALxi32>
    scf.reduce
  }) : (index, index, index) -> ()
  func.return
}
"""


def test_integer_arith_matches_numpy() -> None:
    ops = ["addi", "subi", "muli", "divsi", "remsi", "divui", "remui", "andi", "ori", "xori"]
    ops += ["minsi", "maxsi", "minui", "maxui", "shli", "shrsi", "shrui"]
    body = []
    for k, op in enumerate(ops):
        body.append(f"  %r{k} = arith.{op} %a, %b : vector<4xi32>")
        body.append(f"  %c{k} = arith.constant {k} : index")
        body.append(
            f"  vector.store %r{k}, %out[%c{k}, %z] : memref<{len(ops)}x4xi32>, vector<4xi32>"
        )
    text = f"""
func.func @ints(%x: memref<4xi32>, %y: memref<4xi32>, %out: memref<{len(ops)}x4xi32>) {{
  %z = arith.constant 0 : index
  %a = vector.load %x[%z] : memref<4xi32>, vector<4xi32>
  %b = vector.load %y[%z] : memref<4xi32>, vector<4xi32>
{chr(10).join(body)}
  func.return
}}"""
    a = np.array([7, -9, 1000, -(2**31) + 5], np.int32)
    b = np.array([2, 4, -3, 3], np.int32)
    out = np.zeros((len(ops), 4), np.int32)
    run(parse(text), "ints", [a, b, out])
    ua, ub = a.view(np.uint32), b.view(np.uint32)
    expected = {
        "addi": a + b,
        "subi": a - b,
        "muli": a * b,
        "divsi": np.trunc(a / b).astype(np.int32),
        "remsi": np.fmod(a, b),
        "divui": (ua // ub).view(np.int32),
        "remui": (ua % ub).view(np.int32),
        "andi": a & b,
        "ori": a | b,
        "xori": a ^ b,
        "minsi": np.minimum(a, b),
        "maxsi": np.maximum(a, b),
        "minui": np.minimum(ua, ub).view(np.int32),
        "maxui": np.maximum(ua, ub).view(np.int32),
        "shli": a << b,
        "shrsi": a >> b,
        "shrui": (ua >> ub).view(np.int32),
    }
    for k, op in enumerate(ops):
        np.testing.assert_array_equal(out[k], expected[op], err_msg=op)


FLOAT_OPS = """
func.func @floats(%x: memref<8xf32>, %y: memref<8xf32>, %out: memref<10x8xf32>, %flags: memref<4x8xi8>) {
  %z = arith.constant 0 : index
  %a = vector.load %x[%z] : memref<8xf32>, vector<8xf32>
  %b = vector.load %y[%z] : memref<8xf32>, vector<8xf32>
  %r0 = arith.maximumf %a, %b : vector<8xf32>
  %r1 = arith.minimumf %a, %b : vector<8xf32>
  %r2 = arith.maxnumf %a, %b : vector<8xf32>
  %r3 = arith.minnumf %a, %b : vector<8xf32>
  %r4 = arith.divf %a, %b : vector<8xf32>
  %r5 = arith.negf %a : vector<8xf32>
  %r6 = math.floor %a : vector<8xf32>
  %ad = arith.extf %a : vector<8xf32> to vector<8xf64>
  %sq = arith.mulf %ad, %ad : vector<8xf64>
  %r7 = arith.truncf %sq : vector<8xf64> to vector<8xf32>
  %ah = arith.truncf %a : vector<8xf32> to vector<8xf16>
  %r8 = arith.extf %ah : vector<8xf16> to vector<8xf32>
  %ab = arith.truncf %a : vector<8xf32> to vector<8xbf16>
  %r9 = arith.extf %ab : vector<8xbf16> to vector<8xf32>
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  %c4 = arith.constant 4 : index
  %c5 = arith.constant 5 : index
  %c6 = arith.constant 6 : index
  %c7 = arith.constant 7 : index
  %c8 = arith.constant 8 : index
  %c9 = arith.constant 9 : index
  vector.store %r0, %out[%c0, %z] : memref<10x8xf32>, vector<8xf32>
  vector.store %r1, %out[%c1, %z] : memref<10x8xf32>, vector<8xf32>
  vector.store %r2, %out[%c2, %z] : memref<10x8xf32>, vector<8xf32>
  vector.store %r3, %out[%c3, %z] : memref<10x8xf32>, vector<8xf32>
  vector.store %r4, %out[%c4, %z] : memref<10x8xf32>, vector<8xf32>
  vector.store %r5, %out[%c5, %z] : memref<10x8xf32>, vector<8xf32>
  vector.store %r6, %out[%c6, %z] : memref<10x8xf32>, vector<8xf32>
  vector.store %r7, %out[%c7, %z] : memref<10x8xf32>, vector<8xf32>
  vector.store %r8, %out[%c8, %z] : memref<10x8xf32>, vector<8xf32>
  vector.store %r9, %out[%c9, %z] : memref<10x8xf32>, vector<8xf32>
  %one8 = arith.constant dense<1> : vector<8xi8>
  %zero8 = arith.constant dense<0> : vector<8xi8>
  %f0 = arith.cmpf olt, %a, %b : vector<8xf32>
  %f1 = arith.cmpf une, %a, %b : vector<8xf32>
  %f2 = arith.cmpf uno, %a, %b : vector<8xf32>
  %f3 = arith.cmpf ugt, %a, %b : vector<8xf32>
  %g0 = arith.select %f0, %one8, %zero8 : vector<8xi8>
  %g1 = arith.select %f1, %one8, %zero8 : vector<8xi8>
  %g2 = arith.select %f2, %one8, %zero8 : vector<8xi8>
  %g3 = arith.select %f3, %one8, %zero8 : vector<8xi8>
  vector.store %g0, %flags[%c0, %z] : memref<4x8xi8>, vector<8xi8>
  vector.store %g1, %flags[%c1, %z] : memref<4x8xi8>, vector<8xi8>
  vector.store %g2, %flags[%c2, %z] : memref<4x8xi8>, vector<8xi8>
  vector.store %g3, %flags[%c3, %z] : memref<4x8xi8>, vector<8xi8>
  func.return
}
"""


def test_float_ops_casts_and_nan_semantics() -> None:
    a = np.array([1.5, -2.25, np.nan, 3.0, -0.0, 7.75, np.inf, -5.5], np.float32)
    b = np.array([2.0, -3.0, 1.0, np.nan, 0.0, 7.75, 1.0, 2.0], np.float32)
    out = np.zeros((10, 8), np.float32)
    flags = np.zeros((4, 8), np.int8)
    with np.errstate(all="ignore"):
        run(parse(FLOAT_OPS), "floats", [a, b, out, flags])
        np.testing.assert_array_equal(out[0], np.maximum(a, b))  # NaN-propagating
        np.testing.assert_array_equal(out[1], np.minimum(a, b))
        np.testing.assert_array_equal(out[2], np.fmax(a, b))  # NaN-ignoring
        np.testing.assert_array_equal(out[3], np.fmin(a, b))
        np.testing.assert_allclose(out[4], a / b, rtol=1e-6)
        np.testing.assert_array_equal(out[5], -a)
        np.testing.assert_array_equal(out[6], np.floor(a))
        np.testing.assert_array_equal(out[7], (a.astype(np.float64) ** 2).astype(np.float32))
        np.testing.assert_array_equal(out[8], a.astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(out[9], a)  # all values are exact in bf16
        np.testing.assert_array_equal(flags[0], a < b)
        np.testing.assert_array_equal(flags[1], ~(a == b))
        np.testing.assert_array_equal(flags[2], np.isnan(a) | np.isnan(b))
        np.testing.assert_array_equal(flags[3], ~(a <= b))


def test_relu_is_nan_propagating_and_one_vmaxps() -> None:
    """max(x, 0) keeps NaN (arith.maximumf -> llvm.maximum) and, carrying `nsz`, needs no NaN
    or signed-zero fix-up on x86: one vmaxps with 0 as the first source, which returns x when
    x is NaN (docs/architecture.md, "Non-finite values")."""
    t = MemRefType(f32, [4 * VW])
    fn, b = kernel_function("relu", [t, t])
    b.for_range(
        0,
        4 * VW,
        VW,
        lambda lb, i: lb.vstore(
            lb.maxf(lb.vload(fn.args[0], [i], VW), lb.splat(0.0, VW)), fn.args[1], [i]
        ),
    )
    b.ret()
    x = RNG.standard_normal(4 * VW).astype(np.float32)
    x[::3], x[1::5], x[2::7] = np.nan, np.inf, -np.inf
    out = np.empty_like(x)
    jit = run(ModuleOp([fn]), "relu", [x, out])
    np.testing.assert_array_equal(out, np.maximum(x, 0))  # NaN where x is NaN
    assert re.search(r"call [a-z ]*\bnsz\b[^@]*@\"?llvm\.maximum", jit.llvm_ir), jit.llvm_ir
    if platform.machine() in ("x86_64", "AMD64"):
        asm = jit.asm()
        assert "vmaxps" in asm and "vcmpunord" not in asm, asm


VECTOR_OPS = """
func.func private @scale(%v: vector<8xf32>, %s: f32) -> vector<8xf32> {
  %b = vector.broadcast %s : f32 to vector<8xf32>
  %r = arith.mulf %v, %b : vector<8xf32>
  func.return %r : vector<8xf32>
}
func.func @vec(%x: memref<13xf32>, %out: memref<13xf32>, %red: memref<8xf32>, %ired: memref<4xi32>) {
  %c0 = arith.constant 0 : index
  %c8 = arith.constant 8 : index
  %tail = arith.constant 5 : index
  %two = arith.constant 2.0 : f32
  %pad = arith.constant dense<-1.0> : vector<8xf32>
  %v = vector.load %x[%c0] : memref<13xf32>, vector<8xf32>
  %m = vector.create_mask %tail : vector<8xi1>
  %t = vector.maskedload %x[%c8], %m, %pad : memref<13xf32>, vector<8xi1>, vector<8xf32> into vector<8xf32>
  %sv = func.call @scale(%v, %two) : (vector<8xf32>, f32) -> vector<8xf32>
  vector.store %sv, %out[%c0] : memref<13xf32>, vector<8xf32>
  %st = func.call @scale(%t, %two) : (vector<8xf32>, f32) -> vector<8xf32>
  vector.maskedstore %out[%c8], %m, %st : memref<13xf32>, vector<8xi1>, vector<8xf32>
  %s0 = vector.reduction <add>, %v : vector<8xf32> into f32
  %s1 = vector.reduction <mul>, %v, %two : vector<8xf32> into f32
  %s2 = vector.reduction <maxnumf>, %t : vector<8xf32> into f32
  %s3 = vector.reduction <minimumf>, %v, %two : vector<8xf32> into f32
  %e3 = vector.extract %v[3] : f32 from vector<8xf32>
  %rev = vector.shuffle %v, %t [7, 6, 5, 4, 3, 2, 1, 0] : vector<8xf32>, vector<8xf32>
  %e = vector.extract %rev[0] : f32 from vector<8xf32>
  %r0 = vector.insert %s0, %pad[0] : f32 into vector<8xf32>
  %r1 = vector.insert %s1, %r0[1] : f32 into vector<8xf32>
  %r2 = vector.insert %s2, %r1[2] : f32 into vector<8xf32>
  %r3 = vector.insert %s3, %r2[3] : f32 into vector<8xf32>
  %r4 = vector.insert %e3, %r3[4] : f32 into vector<8xf32>
  %r5 = vector.insert %e, %r4[5] : f32 into vector<8xf32>
  vector.store %r5, %red[%c0] : memref<8xf32>, vector<8xf32>
  %vi = vector.bitcast %v : vector<8xf32> to vector<8xi32>
  %i0 = vector.reduction <add>, %vi : vector<8xi32> into i32
  %i1 = vector.reduction <maxsi>, %vi : vector<8xi32> into i32
  %i2 = vector.reduction <xor>, %vi : vector<8xi32> into i32
  %bits = vector.bitcast %v : vector<8xf32> to vector<8xi32>
  %i3 = vector.reduction <or>, %bits : vector<8xi32> into i32
  %ci = arith.constant dense<0> : vector<4xi32>
  %q0 = vector.insert %i0, %ci[0] : i32 into vector<4xi32>
  %q1 = vector.insert %i1, %q0[1] : i32 into vector<4xi32>
  %q2 = vector.insert %i2, %q1[2] : i32 into vector<4xi32>
  %q3 = vector.insert %i3, %q2[3] : i32 into vector<4xi32>
  vector.store %q3, %ired[%c0] : memref<4xi32>, vector<4xi32>
  func.return
}
"""


def test_vector_ops_masks_reductions_and_private_calls() -> None:
    x = np.array([3, -1, 4, 1, -5, 9, 2, -6, 5, 3, -5, 8, 9], np.float32)
    out = np.full(16, 77.0, np.float32)  # lanes 13.. must stay untouched by the masked store
    red = np.zeros(8, np.float32)
    ired = np.zeros(4, np.int32)
    jit = run(parse(VECTOR_OPS), "vec", [x, out, red, ired])
    np.testing.assert_array_equal(out[:13], 2 * x)
    np.testing.assert_array_equal(out[13:], 77.0)
    v = x[:8]
    tail = np.concatenate([x[8:], [-1.0] * 3]).astype(np.float32)
    np.testing.assert_allclose(
        red[:6], [v.sum(), 2 * v.prod(), tail.max(), min(v.min(), 2.0), v[3], v[7]]
    )
    vi = v.view(np.int32)
    np.testing.assert_array_equal(
        ired,
        [
            vi.sum(dtype=np.int32),
            vi.max(),
            np.bitwise_xor.reduce(vi),
            np.bitwise_or.reduce(v.view(np.int32)),
        ],
    )
    assert re.search(r'@"?scale\b', jit.llvm_ir) is None  # internal, hence inlined and dropped


def test_private_function_has_internal_linkage() -> None:
    ir_text = str(emit_module(parse(VECTOR_OPS), TARGET))
    assert 'define internal <8 x float> @"scale"' in ir_text
    assert 'define void @"vec"(ptr' in ir_text
    assert "fmul contract reassoc <8 x float>" in ir_text
    assert "nnan" not in ir_text and "ninf" not in ir_text


def test_noalias_argument_attribute() -> None:
    text = """
func.func @copy(%x: memref<4xf32> {llvm.noalias}, %y: memref<4xf32> {llvm.noalias}) {
  %c0 = arith.constant 0 : index
  %v = memref.load %x[%c0] : memref<4xf32>
  memref.store %v, %y[%c0] : memref<4xf32>
  func.return
}"""
    ir_text = str(emit_module(parse(text), TARGET))
    assert ir_text.count("noalias") == 2


def test_scalar_function_with_result_via_ctypes() -> None:
    text = """
func.func @poly(%x: f64, %n: i32) -> f64 {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %one = arith.constant 1.0 : f64
  %ni = arith.index_cast %n : i32 to index
  %r = scf.for %i = %c0 to %ni step %c1 iter_args(%acc = %one) -> (f64) {
    %p = arith.mulf %acc, %x : f64
    scf.yield %p : f64
  }
  func.return %r : f64
}"""
    jit = JitModule(parse(text), TARGET)
    fn = jit.function("poly", [ctypes.c_double, ctypes.c_int32], ctypes.c_double)
    assert fn(1.5, 3) == 1.5**3
    assert fn(2.0, 0) == 1.0
    assert fn(2.0, -4) == 1.0  # empty loop when upper < lower


def test_unsupported_op_is_a_clear_error() -> None:
    text = """
func.func @bad(%x: memref<4xf32>, %y: memref<4xf32>) {
  "memref.copy"(%x, %y) : (memref<4xf32>, memref<4xf32>) -> ()
  func.return
}"""
    with pytest.raises(
        NotImplementedError, match=r"unsupported op 'memref.copy' in function 'bad'"
    ):
        emit_module(parse(text), TARGET)


def test_non_static_layout_is_rejected() -> None:
    text = """
func.func @dyn(%x: memref<4x4xf32, strided<[?, 1]>>, %y: memref<1xf32>) {
  %c0 = arith.constant 0 : index
  %v = memref.load %x[%c0, %c0] : memref<4x4xf32, strided<[?, 1]>>
  memref.store %v, %y[%c0] : memref<1xf32>
  func.return
}"""
    with pytest.raises(NotImplementedError, match="memref.load.*static strides"):
        emit_module(parse(text), TARGET)


def test_every_opt_level_gives_the_same_result() -> None:
    rows, cols = 9, 13
    x = RNG.standard_normal((rows, cols)).astype(np.float32)
    results = []
    for level in range(4):
        out = np.zeros_like(x)
        run(_parallel_rows_module(rows, cols), "rows", [x, out], threads=2, opt_level=level)
        results.append(out)
    for out in results[1:]:
        np.testing.assert_allclose(out, results[0], rtol=1e-6)


def test_i8_arena_alloca_roundtrip() -> None:
    fn, b = kernel_function("bytes", [MemRefType(i8, [32])])

    def body(b: LoopBuilder, i: SSAValue) -> None:
        v = b.load(fn.args[0], [i])
        b.store(b.insert(arith.AddiOp(v, v)).results[0], fn.args[0], [i])

    b.for_range(0, 32, 1, body)
    b.ret()
    x = np.arange(32, dtype=np.int8) * 5
    expected = (x.astype(np.int32) * 2).astype(np.int8)
    run(ModuleOp([fn]), "bytes", [x])
    np.testing.assert_array_equal(x, expected)


def test_scalar_casts() -> None:
    text = """
func.func @casts(%x: memref<4xf32>, %out: memref<4x6xi64>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  scf.for %i = %c0 to %c4 step %c1 {
    %v = memref.load %x[%i] : memref<4xf32>
    %s = arith.fptosi %v : f32 to i32
    %s64 = arith.extsi %s : i32 to i64
    %u = arith.fptoui %v : f32 to i16
    %u64 = arith.extui %u : i16 to i64
    %t = arith.trunci %s : i32 to i8
    %t64 = arith.extsi %t : i8 to i64
    %back = arith.sitofp %s : i32 to f64
    %twice = arith.addf %back, %back : f64
    %bi = arith.fptosi %twice : f64 to i64
    %ix = arith.index_cast %s : i32 to index
    %ix64 = arith.index_cast %ix : index to i64
    %uf = arith.uitofp %u : i16 to f32
    %ub = arith.bitcast %uf : f32 to i32
    %ub64 = arith.extui %ub : i32 to i64
    %c2 = arith.constant 2 : index
    %c3 = arith.constant 3 : index
    %c5 = arith.constant 5 : index
    memref.store %s64, %out[%i, %c0] : memref<4x6xi64>
    memref.store %u64, %out[%i, %c1] : memref<4x6xi64>
    memref.store %t64, %out[%i, %c2] : memref<4x6xi64>
    memref.store %bi, %out[%i, %c3] : memref<4x6xi64>
    memref.store %ix64, %out[%i, %c4] : memref<4x6xi64>
    memref.store %ub64, %out[%i, %c5] : memref<4x6xi64>
  }
  func.return
}"""
    x = np.array([1.9, 300.5, 65535.0, 129.0], np.float32)
    out = np.zeros((4, 6), np.int64)
    run(parse(text), "casts", [x, out])
    s = x.astype(np.int32)
    u = x.astype(np.uint16)
    np.testing.assert_array_equal(out[:, 0], s)
    np.testing.assert_array_equal(out[:, 1], u)
    np.testing.assert_array_equal(out[:, 2], s.astype(np.int8))
    np.testing.assert_array_equal(out[:, 3], 2 * s)
    np.testing.assert_array_equal(out[:, 4], s)
    np.testing.assert_array_equal(out[:, 5], u.astype(np.float32).view(np.uint32))


def test_unresolvable_external_function_is_an_error_not_a_crash() -> None:
    text = """
func.func private @no_such_function_anywhere(f32) -> f32
func.func @f(%x: f32) -> f32 {
  %r = func.call @no_such_function_anywhere(%x) : (f32) -> f32
  func.return %r : f32
}"""
    with pytest.raises(RuntimeError, match="no_such_function_anywhere"):
        JitModule(parse(text), TARGET)


def test_heap_alloc_and_dealloc() -> None:
    text = """
func.func @tmp(%x: memref<3xf32>, %y: memref<3xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c3 = arith.constant 3 : index
  %buf = memref.alloc() {alignment = 64 : i64} : memref<3xf32>
  scf.for %i = %c0 to %c3 step %c1 {
    %v = memref.load %x[%i] : memref<3xf32>
    %w = arith.mulf %v, %v : f32
    memref.store %w, %buf[%i] : memref<3xf32>
  }
  scf.for %i = %c0 to %c3 step %c1 {
    %v = memref.load %buf[%i] : memref<3xf32>
    memref.store %v, %y[%i] : memref<3xf32>
  }
  memref.dealloc %buf : memref<3xf32>
  func.return
}"""
    x = np.array([1.5, -2.0, 3.0], np.float32)
    y = np.zeros(3, np.float32)
    jit = run(parse(text), "tmp", [x, y], opt_level=0)
    np.testing.assert_array_equal(y, x * x)
    assert "aligned_alloc" in jit.llvm_ir and "free" in jit.llvm_ir


BOOL_VECTORS = """
func.func @bool_copy(%src: memref<32xi1>, %dst: memref<32xi1>) {
  %c0 = arith.constant 0 : index
  %c16 = arith.constant 16 : index
  %a = vector.load %src[%c0] : memref<32xi1>, vector<16xi1>
  %b = vector.load %src[%c16] : memref<32xi1>, vector<16xi1>
  vector.store %b, %dst[%c0] : memref<32xi1>, vector<16xi1>
  vector.store %a, %dst[%c16] : memref<32xi1>, vector<16xi1>
  func.return
}
"""


def test_bool_vectors_are_one_byte_per_element_in_memory() -> None:
    """A <16 x i1> load/store in LLVM packs bits; numpy bools are bytes, so a bool copy read
    garbage (Dropout's all-true mask came out half false)."""
    src = RNG.standard_normal(32) > 0
    dst = np.zeros(32, np.bool_)
    run(parse(BOOL_VECTORS), "bool_copy", [src, dst])
    np.testing.assert_array_equal(dst.view(np.uint8), np.roll(src, 16).view(np.uint8))


@pytest.mark.parametrize("byte_offset", [0, 4, 32], ids=["aligned", "off4", "off32"])
def test_nontemporal_vector_store(byte_offset: int) -> None:
    """vector.store {nontemporal}: a streaming store (vmovntps) where the address is vector
    aligned, a plain store where it is not (the instruction faults on a misaligned address),
    and an sfence before the function returns (streaming stores are weakly ordered)."""
    from xdsl.dialects import vector
    from xdsl.dialects.builtin import BoolAttr

    n = 8 * VW
    t = MemRefType(f32, [n])
    fn, b = kernel_function("stream", [t, t])

    def body(b: LoopBuilder, i: SSAValue) -> None:
        v = b.addf(b.vload(fn.args[0], [i], VW), b.splat(1.0, VW))
        b.insert(vector.StoreOp(v, fn.args[1], [i], BoolAttr.from_bool(True)))

    b.for_range(0, n, VW, body)
    b.ret()
    x = RNG.standard_normal(n).astype(np.float32)
    raw = np.full(n + 32, np.nan, np.float32)
    start = ((-raw.ctypes.data % 64) + byte_offset) // 4
    out = raw[start : start + n]
    assert out.ctypes.data % 64 == byte_offset
    jit = run(ModuleOp([fn]), "stream", [x, out])
    np.testing.assert_array_equal(out, x + np.float32(1.0))
    assert "!nontemporal" in jit.llvm_ir and "llvm.x86.sse.sfence" in jit.llvm_ir
    if platform.machine() in ("x86_64", "AMD64"):
        asm = jit.asm()
        assert "vmovntps" in asm and "sfence" in asm, asm
