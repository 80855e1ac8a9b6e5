"""Kernels with runtime extents (issue 10, foundation): one program for every size.

Each kernel op is built on buffers with `?` dims, lowered and JIT-compiled ONCE, then run at
several sizes, including ones that are not multiples of the vector width or of the GEMM's MR
rows (1, 7, 13, 15, 33, 100, ...). Tolerances: the elementwise kernel against numpy with
rtol 1e-6, atol 1e-6 (ember's exp approximation); the GEMM against float64 numpy,
max |out - ref| <= 1e-4 * max(1, max |ref|) (float32 accumulation, K <= 300); softmax and
layer norm against float64 numpy with rtol 1e-5, atol 1e-6.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest
from xdsl.dialects.builtin import DYNAMIC_INDEX, DenseArrayBase, MemRefType, StringAttr, f32, i64
from xdsl.ir import Block, SSAValue

from ember.core.target import host_target, named_target
from ember.dialects import kernel
from ember.dialects.weight_layouts import gemm_blocking, pack_matmul_weight
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder
from ember.passes.conversion.kernel_to_loops.gemm_common import remainder_heights
from ember.passes.conversion.kernel_to_loops.registry import lowering_for
from ember.tests.kernels.test_elementwise import elementwise
from ember.tests.kernels.test_matmul import reference
from ember.tests.kernels.test_normalization import (
    layer_norm_op,
    layer_norm_reference,
    softmax_op,
    softmax_reference,
)
from ember.tools.kernel_ops import JitKernel, matmul_op

DYN = DYNAMIC_INDEX
WINDOW = {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0]}


def exp_add(args: list[SSAValue]) -> kernel.ElementwiseOp:
    return elementwise(args, lambda b, v: b.exp(b.addf(v[0], v[1])))


@pytest.mark.parametrize("threads", [1, 2])
def test_elementwise_one_program_every_size(threads: int) -> None:
    """exp(x + y) + a one-element input splat, over [?, ?, 5] buffers: one flat loop of the
    run-time element count; 2 threads split it in chunks above 32K elements (the last size)."""

    def body(b: LoopBuilder, v: list[SSAValue]) -> SSAValue:
        return b.mulf(b.exp(b.addf(v[0], v[1])), v[2])

    types = [MemRefType(f32, [DYN, DYN, 5])] * 2 + [MemRefType(f32, [1])]
    run = JitKernel(
        lambda args: elementwise(args, body),
        [*types, MemRefType(f32, [DYN, DYN, 5])],
        threads=threads,
    )
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 7), (2, 8), (3, 11), (5, 33), (100, 100)]:
        x, y = (rng.standard_normal((*shape, 5), dtype=np.float32) for _ in range(2))
        c = np.array([0.75], np.float32)
        out = np.full_like(x, np.nan)
        run(x, y, c, out)
        np.testing.assert_allclose(out, np.exp(x + y) * c, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_elementwise_row_broadcast(threads: int) -> None:
    """A bias of the dims after the last `?` ([3, 37] against [?, ?, 3, 37]) is read again
    for every row of 111 elements; rows split over 2 threads above 32K elements."""

    def body(b: LoopBuilder, v: list[SSAValue]) -> SSAValue:
        return b.maxf(b.addf(v[0], v[1]), v[2])

    out = MemRefType(f32, [DYN, DYN, 3, 37])
    types = [out, MemRefType(f32, [3, 37]), MemRefType(f32, [1, 1]), out]
    run = JitKernel(lambda args: elementwise(args, body), types, threads=threads)
    rng = np.random.default_rng(6)
    bias = rng.standard_normal((3, 37), dtype=np.float32)
    floor = np.array([[-0.5]], np.float32)
    for lead in [(1, 1), (1, 7), (2, 8), (5, 33), (30, 11)]:
        x = rng.standard_normal((*lead, 3, 37), dtype=np.float32)
        y = np.full_like(x, np.nan)
        run(x, bias, floor, y)
        np.testing.assert_array_equal(y, np.maximum(x + bias, -0.5))


def test_elementwise_refuses_other_broadcasts() -> None:
    """An input whose dims are neither the output's nor 1 (a `?` against a 1) is refused;
    numpy broadcasts ([?, 1] against [?, 8]) are lowered
    (tests/kernels/test_runtime_extents_bert.py)."""
    types = [
        MemRefType(f32, [DYN, 1, 8]),
        MemRefType(f32, [DYN, DYN, 8]),
        MemRefType(f32, [DYN, 1, 8]),
    ]
    with pytest.raises(NotImplementedError, match=r"input memref<\?x\?x8xf32> has neither"):
        JitKernel(exp_add, types)


def run_runtime_gemm(
    k: int,
    n: int,
    rows: list[tuple[int, ...]],
    *,
    packed: bool,
    threads: int = 1,
    bias: bool = True,
    residual: bool = True,
    activation: str | None = "relu",
    target_name: str | None = None,
    residual_in_place: bool = False,
) -> JitKernel:
    """One GEMM with `?` rows (A [*rows, K]), compiled once, run at every entry of `rows`
    (with `residual_in_place`, the output buffer is the residual, as buffer reuse may make
    it)."""
    rng = np.random.default_rng(len(rows) + k + n)
    weight = rng.standard_normal((k, n), dtype=np.float32)
    target = named_target(target_name, threads) if target_name else host_target(threads)
    b_operand, layout = pack_matmul_weight(weight, target) if packed else (weight, "plain")
    lead = [DYN] * len(rows[0])
    types = [MemRefType(f32, [*lead, k]), MemRefType(f32, list(b_operand.shape))]
    bias_arr = rng.standard_normal((n,), dtype=np.float32) if bias else None
    if bias:
        types.append(MemRefType(f32, [n]))
    if residual:
        types.append(MemRefType(f32, [*lead, n]))
    types.append(MemRefType(f32, [*lead, n]))
    gemm = JitKernel(matmul_op(layout, bias, residual, activation), types, target, threads)
    for lead_shape in rows:
        a = rng.standard_normal((*lead_shape, k), dtype=np.float32)
        res = rng.standard_normal((*lead_shape, n), dtype=np.float32) if residual else None
        out = np.full((*lead_shape, n), np.nan, np.float32)
        if residual_in_place:
            assert res is not None
            out = res.copy()
        inputs = (bias_arr, out if residual_in_place else res)
        arrays = [a, b_operand, *(x for x in inputs if x is not None), out]
        gemm(*arrays)
        ref = reference(a, weight, bias_arr, res, activation)
        err = np.max(np.abs(out - ref))
        assert err <= 1e-4 * max(1.0, np.max(np.abs(ref))), (lead_shape, err)
    return gemm


# M around the tails of MR = 14 (AVX-512) and 6 (AVX2): every remainder bit pattern.
ROWS = [(1,), (7,), (13,), (14,), (15,), (16,), (33,), (100,), (385,)]


# Two threads with --runslow (5.5 s of CPU): the run-time choice between the calling thread
# and the team runs by default in tests/lowering/test_runtime_extents_program.py (an FFN
# program, 1 to 100 rows) and tests/e2e/test_compile_once.py (6 to 800 rows); under branch
# coverage this case reached nothing they and the other cases here do not (docs/testing.md).
@pytest.mark.parametrize(
    ("packed", "threads"),
    [
        pytest.param(True, 1, id="packed"),
        pytest.param(False, 1, id="plain"),
        pytest.param(True, 2, id="2threads", marks=pytest.mark.slow),
    ],
)
def test_gemm_runtime_rows(packed: bool, threads: int) -> None:
    run_runtime_gemm(40, 70, ROWS, packed=packed, threads=threads)


def test_gemm_runtime_rows_k_blocked() -> None:
    """K above one L1 block (the k-block loop, C holding partial sums) and an epilogue
    applied on the last block only."""
    rows = [(1,), (9,), (29,), (64,), (101,)]
    run_runtime_gemm(300, 48, rows, packed=True, activation="leaky_relu")


def test_gemm_runtime_rows_folds_leading_dims() -> None:
    """A [?, ?, K]: both leading dims fold into the rows (B shared)."""
    shapes = [(1, 1), (2, 7), (3, 5), (4, 33), (1, 100)]
    run_runtime_gemm(24, 33, shapes, packed=True, bias=True, residual=False, activation=None)


def test_gemm_runtime_rows_avx2_blocking() -> None:
    """AVX2 blocking (MR = 6: remainder tiles of 1 to 5 rows), 8-lane vectors."""
    target = named_target("x86-64-v3", 1)
    assert gemm_blocking(target).mr == 6
    run_runtime_gemm(20, 20, ROWS, packed=True, target_name="x86-64-v3")


def test_gemm_runtime_rows_ir_remainder_tiles() -> None:
    """The runtime-M kernel (MR = 6 on AVX2): one loop of full 6-row tiles with a run-time
    bound, then the remainder as one tile of 1, 2, 3, 4 or 6 rows (remainder_heights), each
    under an scf.if; the 6-row tile (remainder 5) guards the store of its last row. N = 64:
    four B panels, enough units for one thread, so no M chunks and no other scf.if."""
    assert remainder_heights(6) == [1, 2, 3, 4, 6]
    assert remainder_heights(14) == [1, 2, 3, 4, 6, 8, 10, 12, 14]
    gemm = run_runtime_gemm(
        16, 64, [(5,)], packed=True, residual=False, activation=None, target_name="x86-64-v3"
    )
    text = str(gemm.module)
    assert "rows at run time" in text
    assert len(re.findall(r"arith.andi %\d+, %\d+ : i1\n\s+scf.if", text)) == 5
    assert text.count("arith.cmpi slt") == 1
    assert text.count("scf.if") == 6


@pytest.mark.parametrize(
    ("target_name", "mr", "k", "in_place"),
    [
        pytest.param(None, 14, 24, False, id="avx512"),
        pytest.param(None, 14, 24, True, id="avx512-in-place"),
        # With --runslow: K blocking has test_gemm_runtime_rows_k_blocked, the in-place
        # store avx512-in-place; under branch coverage tests/kernels reached the same arcs
        # without it (docs/testing.md).
        pytest.param(None, 14, 300, True, id="avx512-k-blocked-in-place", marks=pytest.mark.slow),
        pytest.param("x86-64-v3", 6, 20, True, id="avx2-in-place"),
    ],
)
def test_gemm_runtime_rows_every_remainder(
    target_name: str | None, mr: int, k: int, in_place: bool
) -> None:
    """Every remainder 0..MR-1 alone, after one full tile and after three, against numpy at
    1e-4 of the largest |reference| (run_runtime_gemm). A remainder rounded up to a taller
    tile computes its extra rows on row M - 1: every row below M must be stored (the output
    starts as NaN) and the extra ones never (in place, where the residual is the output, a
    stored extra row would overwrite row M - 1 with the sum of its already-updated value).
    K = 300 takes the k-block loop (C holds partial sums, read back by the extra rows)."""
    target = named_target(target_name, 1) if target_name else host_target(1)
    if gemm_blocking(target).mr != mr:
        pytest.skip(f"host MR is {gemm_blocking(target).mr}, not {mr}")
    rows = [(tiles * mr + rest,) for tiles in (0, 1, 3) for rest in range(mr)]
    run_runtime_gemm(
        k,
        40,
        [r for r in rows if r[0] > 0],
        packed=True,
        target_name=target_name,
        residual_in_place=in_place,
    )


def test_static_gemm_is_not_the_runtime_kernel() -> None:
    """A static GEMM lowers exactly as before: no extent arguments, no run-time rows."""
    weight, layout = pack_matmul_weight(np.ones((16, 16), np.float32), host_target(1))
    block = Block(
        arg_types=[
            MemRefType(f32, [5, 16]),
            MemRefType(f32, list(weight.shape)),
            MemRefType(f32, [5, 16]),
        ]
    )
    op = matmul_op(layout, False, False)(block.args)
    block.add_op(op)
    fn = lowering_for(op)(op, host_target(1), "static")
    assert "memref.dim" not in str(fn) and "ember.extent_of" not in str(fn)
    assert len(fn.body.block.args) == 3


def test_gemm_refuses_dynamic_k_with_packed_b() -> None:
    """A packed B is a weight: A's K at run time cannot contract with it. (A plain B with a
    run-time K is an activation's: tests/kernels/test_runtime_extents_matmul.py.)"""
    weight, layout = pack_matmul_weight(np.ones((8, 16), np.float32), host_target(1))
    types = [
        MemRefType(f32, [4, DYN]),
        MemRefType(f32, list(weight.shape)),
        MemRefType(f32, [4, 16]),
    ]
    with pytest.raises(NotImplementedError, match=r"kernel.matmul with runtime extents"):
        JitKernel(matmul_op(layout, False, False), types)


def test_kernels_without_runtime_lowering_are_refused() -> None:
    """A kernel op with `?` dims and no runtime-extents lowering is refused naming the op,
    never lowered by its static lowering (which would misread the sizes)."""
    block = Block(arg_types=[MemRefType(f32, [DYN, 3, 8, 8]), MemRefType(f32, [DYN, 3, 8, 8])])
    op = kernel.LRNOp.build(operands=[block.args[0], block.args[1]])
    with pytest.raises(NotImplementedError, match=r"'kernel.lrn' has no lowering with runtime"):
        lowering_for(op)


def reduce_op(kind: str, axes: list[int]) -> Callable[[list[SSAValue]], kernel.ReduceOp]:
    def make(args: list[SSAValue]) -> kernel.ReduceOp:
        properties = {"kind": StringAttr(kind), "axes": DenseArrayBase.from_list(i64, axes)}
        return kernel.ReduceOp.build(operands=list(args), properties=properties)

    return make


@pytest.mark.parametrize("kind", ["mean", "max"])
def test_reduce_runtime_rows(kind: str) -> None:
    """ReduceMean/Max over the last two axes [6, 7] of [?, ?, 6, 7], rows at run time."""
    types = [MemRefType(f32, [DYN, DYN, 6, 7]), MemRefType(f32, [DYN, DYN, 1, 1])]
    run = JitKernel(reduce_op(kind, [2, 3]), types, threads=2)
    rng = np.random.default_rng(7)
    for lead in [(1, 1), (1, 7), (2, 8), (5, 33), (100, 10)]:
        x = rng.standard_normal((*lead, 6, 7), dtype=np.float32)
        out = np.full((*lead, 1, 1), np.nan, np.float32)
        run(x, out)
        expected = getattr(x.astype(np.float64), kind)(axis=(2, 3), keepdims=True)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_reduce_refuses_runtime_reduced_axes() -> None:
    types = [MemRefType(f32, [DYN, 6]), MemRefType(f32, [1, 6])]
    with pytest.raises(NotImplementedError, match="trailing static axes"):
        JitKernel(reduce_op("sum", [0]), types)


@pytest.mark.parametrize("threads", [1, 2])
def test_softmax_runtime_rows(threads: int) -> None:
    """Softmax over the last axis of [?, ?, 37] (rows at run time, 37 = 2 vectors + a tail
    on AVX-512); 2 threads split the rows at run time above 32K elements (the last size)."""
    types = [MemRefType(f32, [DYN, DYN, 37])] * 2
    run = JitKernel(lambda args: softmax_op(args, -1), types, threads=threads)
    rng = np.random.default_rng(3)
    for lead in [(1, 1), (1, 7), (2, 8), (3, 11), (40, 30)]:
        x = rng.standard_normal((*lead, 37), dtype=np.float32) * 4
        out = np.full_like(x, np.nan)
        run(x, out)
        np.testing.assert_allclose(out, softmax_reference(x, -1), rtol=1e-5, atol=1e-6)


def test_softmax_runtime_row_length() -> None:
    """Softmax over a last axis known at run time too ([?, 3, ?]: attention scores' key
    length): vector sweeps and a scalar tail of run-time lengths."""
    types = [MemRefType(f32, [DYN, 3, DYN])] * 2
    run = JitKernel(lambda args: softmax_op(args, -1), types)
    rng = np.random.default_rng(5)
    for lead, n in [(1, 1), (2, 5), (1, 16), (3, 17), (2, 40), (1, 129)]:
        x = rng.standard_normal((lead, 3, n), dtype=np.float32) * 4
        out = np.full_like(x, np.nan)
        run(x, out)
        np.testing.assert_allclose(out, softmax_reference(x, -1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_layer_norm_runtime_rows(threads: int) -> None:
    """LayerNorm over the last two dims [5, 20] of [?, 5, 20] with scale and bias."""
    types = [
        MemRefType(f32, [DYN, 5, 20]),
        MemRefType(f32, [5, 20]),
        MemRefType(f32, [5, 20]),
        MemRefType(f32, [DYN, 5, 20]),
    ]
    run = JitKernel(lambda args: layer_norm_op(args, 1, 1e-5), types, threads=threads)
    rng = np.random.default_rng(4)
    scale = rng.standard_normal((5, 20), dtype=np.float32)
    bias = rng.standard_normal((5, 20), dtype=np.float32)
    for rows in [1, 7, 16, 33, 400]:
        x = rng.standard_normal((rows, 5, 20), dtype=np.float32) + 3
        out = np.full_like(x, np.nan)
        run(x, scale, bias, out)
        expected = layer_norm_reference(x, scale, bias, 1, 1e-5)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_row_kernels_refuse_dynamic_normalized_dims() -> None:
    types = [MemRefType(f32, [DYN, DYN, 8])] * 2
    with pytest.raises(NotImplementedError, match=r"kernel.softmax with runtime extents"):
        JitKernel(lambda args: softmax_op(args, 1), types)
    types = [MemRefType(f32, [DYN, 8, 3])] * 2
    with pytest.raises(NotImplementedError, match="non-innermost axis"):
        JitKernel(lambda args: softmax_op(args, 1), types)


def test_registry_sees_every_runtime_extent_lowering_after_a_lone_import() -> None:
    """A lowering module imported on its own (as a tool or test does) registers only its own
    lowerings; the registry must still load the others before answering (it once looked at
    whether its table was empty, and compile-once then refused MatMul in such a process)."""
    import subprocess
    import sys

    code = (
        "import ember.passes.conversion.kernel_to_loops.elementwise\n"
        "from ember.dialects import kernel\n"
        "from ember.passes.conversion.kernel_to_loops.registry import "
        "has_runtime_extent_lowering\n"
        "assert has_runtime_extent_lowering(kernel.MatMulOp)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
