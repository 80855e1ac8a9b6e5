"""kernel.elementwise lowering: collapsed dims, SIMD main loop + scalar tail, numerics vs numpy."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from xdsl.dialects import arith
from xdsl.dialects import math as xmath
from xdsl.dialects.builtin import IntegerType, MemRefType, ModuleOp, f32, i1
from xdsl.ir import Block, Region, SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder
from ember.passes.conversion.kernel_to_loops.elementwise import (
    collapse_broadcast,
    lower_elementwise,
    repeat_merge,
)
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.kernels.harness import run_kernel_op

Body = Callable[[LoopBuilder, list[SSAValue]], SSAValue]


def elementwise(args: Sequence[SSAValue], body: Body) -> kernel.ElementwiseOp:
    """kernel.elementwise over args[:-1] into args[-1]; `body` writes the scalar computation."""
    types = [a.type.get_element_type() for a in args[:-1]]  # type: ignore[attr-defined]
    block = Block(arg_types=types)
    result = body(LoopBuilder(block), list(block.args))
    block.add_op(kernel.YieldOp(operands=[result]))
    return kernel.ElementwiseOp(list(args[:-1]), args[-1], Region(block))


def lowered_ir(types: Sequence[MemRefType], body: Body, target: Target) -> str:
    block = Block(arg_types=list(types))
    op = elementwise(list(block.args), body)
    block.add_op(op)
    module = ModuleOp([lower_elementwise(op, target, "k")])
    module.verify()
    return str(module)


def run(body: Body, inputs: Sequence[np.ndarray], out: np.ndarray, threads: int = 1) -> None:
    run_kernel_op(lambda args: elementwise(args, body), [*inputs, out], threads=threads)


# -- bodies -----------------------------------------------------------------------------------
def relu(b: LoopBuilder, a: list[SSAValue]) -> SSAValue:
    return b.insert(arith.MaximumfOp(a[0], b.const(0.0))).results[0]


def add(b: LoopBuilder, a: list[SSAValue]) -> SSAValue:
    return b.addf(a[0], a[1])


def sigmoid(b: LoopBuilder, a: list[SSAValue]) -> SSAValue:
    one = b.const(1.0)
    neg = b.insert(arith.NegfOp(a[0])).results[0]
    return b.divf(one, b.addf(one, b.exp(neg)))


def maximum(b: LoopBuilder, x: SSAValue, y: SSAValue) -> SSAValue:
    return b.insert(arith.MaximumfOp(x, y)).results[0]


def fused_relu(b: LoopBuilder, a: list[SSAValue]) -> SSAValue:
    return relu(b, [b.addf(b.mulf(a[0], a[1]), a[0])])


def gelu(b: LoopBuilder, a: list[SSAValue]) -> SSAValue:
    """x * 0.5 * (1 + erf(x / sqrt(2))), as the fused graph writes it."""
    x = a[0]
    erf = b.insert(xmath.ErfOp(b.divf(x, b.const(math.sqrt(2.0))))).results[0]
    return b.mulf(b.mulf(x, b.const(0.5)), b.addf(b.const(1.0), erf))


# -- collapsing -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "out, inputs, dims, shapes",
    [
        ((1, 64, 56, 56), [(1, 64, 56, 56)] * 2, [200704], [[200704]] * 2),
        ((1, 64, 56, 56), [(1, 64, 56, 56), (1, 64, 1, 1)], [64, 3136], [[64, 3136], [64, 1]]),
        ((2, 3, 5), [(5,), ()], [6, 5], [[1, 5], [1, 1]]),
        ((4, 1, 6), [(4, 1, 1), (1, 1, 6)], [4, 6], [[4, 1], [1, 6]]),
        ((1, 1), [(1,)], [1], [[1]]),
    ],
)
def test_collapse_broadcast(out, inputs, dims, shapes) -> None:
    assert collapse_broadcast(out, inputs) == (dims, shapes)


@pytest.mark.parametrize(
    "dims, inputs, width, merged",
    [
        # nearest x2 upsampling's broadcast [C*H, 2, W, 2]: the rows of W * 2 merge
        ([40, 2, 9, 2], [[40, 1, 9, 1]], 8, ([40, 2, 18], [[40, 1, 9]], [True])),
        # with a full operand (an Add of the upsampled map) and a scalar one
        ([6, 4], [[6, 1], [6, 4], [1, 1]], 8, ([24], [[6], [24], [1]], [True, False, False])),
        ([6, 8], [[6, 1]], 8, None),  # k = width: rows are already whole vectors
        ([6, 3], [[6, 1]], 8, None),  # 8 % 3: no lane pattern repeats per vector
        ([6, 4], [[1, 4], [6, 1]], 8, None),  # a row broadcast along m
        ([24], [[1]], 8, None),
    ],
)
def test_repeat_merge(dims, inputs, width, merged) -> None:
    assert repeat_merge(dims, inputs, width) == merged


# -- IR ---------------------------------------------------------------------------------------
def test_per_channel_is_rows_with_a_splat() -> None:
    x, scale = MemRefType(f32, [1, 64, 56, 56]), MemRefType(f32, [1, 64, 1, 1])
    ir = lowered_ir([x, scale, x], lambda b, a: b.mulf(a[0], a[1]), Target(threads=2))
    assert_filecheck(
        ir,
        """
        CHECK:      %[[X:.*]] = memref.reinterpret_cast %0 {{.*}} to memref<64x3136xf32>
        CHECK:      %[[C:.*]] = memref.reinterpret_cast %1 {{.*}} to memref<64x1xf32>
        CHECK:      "scf.parallel"
        CHECK:      %[[S:.*]] = memref.load %[[C]]
        CHECK-NEXT: %[[V:.*]] = vector.broadcast %[[S]] : f32 to vector<8xf32>
        CHECK:      scf.for
        CHECK:      %[[L:.*]] = vector.load %[[X]]{{.*}} vector<8xf32>
        CHECK-NEXT: %[[M:.*]] = arith.mulf %[[L]], %[[V]] : vector<8xf32>
        CHECK-NEXT: vector.store %[[M]]
        CHECK-NOT:  memref.store
        """,
    )


def test_same_shape_is_one_flat_loop_with_scalar_tail() -> None:
    t = MemRefType(f32, [1, 7, 11, 13])  # 1001 elements: 125 vectors + 1 scalar
    ir = lowered_ir([t, t, t], add, Target(threads=1))
    assert_filecheck(
        ir,
        """
        CHECK:         %[[END:.*]] = arith.constant 1000 : index
        CHECK-COUNT-3: memref.reinterpret_cast {{.*}} to memref<1001xf32>
        CHECK-NOT:     scf.parallel
        CHECK:         scf.for {{.*}} to %[[END]]
        CHECK:         arith.addf {{.*}} : vector<8xf32>
        CHECK:         scf.for %{{.*}} = %{{.*}} to
        CHECK:         memref.load
        CHECK:         arith.addf {{.*}} : f32
        CHECK:         memref.store
        """,
    )


def test_vector_width_comes_from_the_target() -> None:
    t = MemRefType(f32, [64])
    ir = lowered_ir([t, t], sigmoid, Target(vector_width=16, vector_registers=32, threads=1))
    assert_filecheck(
        ir,
        """
        CHECK:      %[[ONE:.*]] = arith.constant 1.000000e+00 : f32
        CHECK:      vector.broadcast %[[ONE]] : f32 to vector<16xf32>
        CHECK:      math.exp {{.*}} : vector<16xf32>
        CHECK:      arith.divf {{.*}} : vector<16xf32>
        """,
    )


def test_short_inner_broadcast_is_a_load_and_a_shuffle() -> None:
    """[4, 80, 1] broadcast to [4, 80, 2] (nearest x2 upsampling along the last axis): one row
    of 640 swept in vector<8>, each from a vector<4> load repeated by one shuffle."""
    src, dst = MemRefType(f32, [4, 80, 1]), MemRefType(f32, [4, 80, 2])
    ir = lowered_ir([src, dst], lambda b, a: a[0], Target(threads=1))
    assert_filecheck(
        ir,
        """
        CHECK:      %[[X:.*]] = memref.reinterpret_cast %0 {{.*}} to memref<320xf32>
        CHECK:      memref.reinterpret_cast %1 {{.*}} to memref<640xf32>
        CHECK:      %[[L:.*]] = vector.load %[[X]]{{.*}} vector<4xf32>
        CHECK-NEXT: %[[S:.*]] = vector.shuffle %[[L]], %[[L]] [0, 0, 1, 1, 2, 2, 3, 3]
        CHECK-NEXT: vector.store %[[S]]
        CHECK-NOT:  memref.store
        """,
    )


def test_bool_buffers_stay_scalar() -> None:
    ir = lowered_ir(
        [MemRefType(f32, [40]), MemRefType(i1, [40])],
        lambda b, a: b.insert(arith.CmpfOp(a[0], b.const(0.0), "ogt")).results[0],
        Target(threads=1),
    )
    assert "vector" not in ir
    assert "arith.cmpf ogt" in ir


def test_foreign_body_op_is_rejected() -> None:
    t = MemRefType(f32, [8])
    block = Block(arg_types=[t, t])
    body = Block(arg_types=[f32])
    load = kernel.ReshapeOp(operands=[block.args[0]], result_types=[t])
    body.add_ops([load, kernel.YieldOp(operands=[body.args[0]])])
    op = kernel.ElementwiseOp([block.args[0]], block.args[1], Region(body))
    with pytest.raises(ValueError, match="kernel.reshape.*not a scalar arith/math op"):
        lower_elementwise(op, Target(threads=1), "k")


# -- numerics ---------------------------------------------------------------------------------
rng = np.random.default_rng(0)


def randn(*shape: int, dtype: type = np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("n", [1, 7, 33, 1001])
def test_relu_tails(n: int) -> None:
    x = randn(n)
    out = np.full(n, np.nan, np.float32)
    run(relu, [x], out)
    np.testing.assert_array_equal(out, np.maximum(x, 0))  # exact


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [
        ((3, 5, 7), ()),  # scalar
        ((2, 16, 9, 9), (1, 16, 1, 1)),  # per-channel
        ((6, 13), (13,)),  # row
        ((6, 13), (6, 1)),  # column
        ((2, 3, 17), (17,)),  # rank-extending
        ((3, 1), (1, 20)),  # both broadcast: outer product
        ((2, 1, 4, 9), (2, 3, 1, 9)),  # alternating broadcast dims
        ((1, 1, 1), (1,)),  # a single element
    ],
)
def test_add_broadcasting(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> None:
    a, b = randn(*a_shape), randn(*b_shape)
    out = np.empty(np.broadcast_shapes(a_shape, b_shape), np.float32)
    run(add, [a, b], out)
    np.testing.assert_array_equal(out, a + b)  # exact: one rounding either way
    out2 = np.empty_like(out)
    run(add, [b, a], out2)
    np.testing.assert_array_equal(out2, b + a)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "shape, k",
    [((3, 40, 2, 41), 2), ((1, 5, 4, 9), 4), ((2, 3, 8, 5), 8), ((2, 7), 2), ((64, 2, 80), 2)],
)
@pytest.mark.parametrize("width", [8, 16])
def test_repeated_rows(shape: tuple[int, ...], k: int, threads: int, width: int) -> None:
    """x [..., m] repeated k times element by element, with a full operand and a scalar one:
    max((x repeated) + y, s), against numpy (exact); m * k rows with and without a vector tail, at the
    AVX2 and AVX-512 widths (a width the host lacks runs as LLVM's split vectors)."""
    x, s = randn(*shape, 1), randn(1)
    y = randn(*shape, k)
    out = np.full(y.shape, np.nan, np.float32)
    target = Target(vector_width=width, vector_registers=16, threads=threads)
    run_kernel_op(
        lambda args: elementwise(args, lambda b, a: maximum(b, b.addf(a[0], a[1]), a[2])),
        [x, y, s, out],
        target=target,
        threads=threads,
    )
    np.testing.assert_array_equal(out, np.maximum(np.repeat(x, k, axis=-1) + y, s))


def test_gelu_chain() -> None:
    x = randn(3, 333) * 3
    out = np.empty_like(x)
    run(gelu, [x], out)
    x64 = x.astype(np.float64)
    erf = np.vectorize(math.erf)(x64 / math.sqrt(2.0))
    np.testing.assert_allclose(out, x64 * 0.5 * (1 + erf), rtol=1e-5, atol=1e-6)


def test_sigmoid() -> None:
    x = randn(4, 129) * 8
    out = np.empty_like(x)
    run(sigmoid, [x], out)
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "a_shape, b_shape",
    [((1, 64, 56, 56), (1, 64, 1, 1)), ((100003,), (100003,)), ((300, 333), (333,))],
)
def test_threads(threads: int, a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> None:
    a, b = randn(*a_shape), randn(*b_shape)
    out = np.empty_like(a)
    run(fused_relu, [a, b], out, threads=threads)
    np.testing.assert_allclose(out, np.maximum(a * b + a, 0), rtol=1e-6, atol=1e-6)


def test_parallel_region_is_emitted_only_when_big() -> None:
    big = MemRefType(f32, [100003])
    small = MemRefType(f32, [1000])
    assert '"scf.parallel"' in lowered_ir([big, big], relu, Target(threads=2))
    assert '"scf.parallel"' not in lowered_ir([small, small], relu, Target(threads=2))
    assert '"scf.parallel"' not in lowered_ir([big, big], relu, Target(threads=1))


# -- other element types ----------------------------------------------------------------------
def test_cast_int32_to_float() -> None:
    x = rng.integers(-1000, 1000, size=(5, 37), dtype=np.int32)
    out = np.empty(x.shape, np.float32)
    run(lambda b, a: b.insert(arith.SIToFPOp(a[0], f32)).results[0], [x], out)
    np.testing.assert_array_equal(out, x.astype(np.float32))


def test_int64_add_broadcast() -> None:
    a = rng.integers(-(2**40), 2**40, size=(4, 19), dtype=np.int64)
    b = rng.integers(-(2**40), 2**40, size=(19,), dtype=np.int64)
    out = np.empty_like(a)
    run(lambda bb, v: bb.insert(arith.AddiOp(v[0], v[1])).results[0], [a, b], out)
    np.testing.assert_array_equal(out, a + b)


def test_int32_relu_vectorized() -> None:
    x = rng.integers(-50, 50, size=(1001,), dtype=np.int32)
    out = np.empty_like(x)
    zero = lambda b: b.const(0, IntegerType(32))  # noqa: E731
    run(lambda b, a: b.insert(arith.MaxSIOp(a[0], zero(b))).results[0], [x], out)
    np.testing.assert_array_equal(out, np.maximum(x, 0))


def test_bool_compare_and_select() -> None:
    x, y = randn(3, 21), randn(3, 21)
    mask = np.empty(x.shape, np.bool_)
    run(lambda b, a: b.insert(arith.CmpfOp(a[0], a[1], "ogt")).results[0], [x, y], mask)
    np.testing.assert_array_equal(mask, x > y)
    out = np.empty_like(x)
    run(lambda b, a: b.select(a[0], a[1], a[2]), [mask, x, y], out)
    np.testing.assert_array_equal(out, np.where(mask, x, y))
