"""kernel.reduce lowering: inner (horizontal) vs outer (column-block) reductions, vs numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from xdsl.dialects.builtin import MemRefType, ModuleOp, StringAttr, f32
from xdsl.ir import Block, SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.graph import i64_array
from ember.passes.conversion.kernel_to_loops.reduction import collapse_reduction, lower_reduce
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.kernels.harness import run_kernel_op

NUMPY = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod}


def reduce_op(args: Sequence[SSAValue], kind: str, axes: Sequence[int]) -> kernel.ReduceOp:
    return kernel.ReduceOp(
        operands=list(args), properties={"kind": StringAttr(kind), "axes": i64_array(axes)}
    )


def kept_shape(shape: Sequence[int], axes: Sequence[int]) -> tuple[int, ...]:
    axes = [a % len(shape) for a in axes]
    return tuple(1 if d in axes else n for d, n in enumerate(shape))


def lowered_ir(shape: Sequence[int], kind: str, axes: Sequence[int], target: Target) -> str:
    block = Block(arg_types=[MemRefType(f32, shape), MemRefType(f32, kept_shape(shape, axes))])
    op = reduce_op(block.args, kind, axes)
    block.add_op(op)
    module = ModuleOp([lower_reduce(op, target, "k")])
    module.verify()
    return str(module)


def run(x: np.ndarray, kind: str, axes: Sequence[int], threads: int = 1) -> np.ndarray:
    sentinel = np.nan if x.dtype.kind == "f" else -7  # never a right answer by accident
    out = np.full(kept_shape(x.shape, axes), sentinel, x.dtype)
    run_kernel_op(lambda args: reduce_op(args, kind, axes), [x, out], threads=threads)
    return out


def reference(x: np.ndarray, kind: str, axes: Sequence[int]) -> np.ndarray:
    return NUMPY[kind](x.astype(np.float64), axis=tuple(axes), keepdims=True)


rng = np.random.default_rng(1)


@pytest.mark.parametrize(
    "shape, axes, groups",
    [
        ((1, 64, 7, 7), (2, 3), [(64, False), (49, True)]),
        ((100, 20), (0,), [(100, True), (20, False)]),
        ((4, 1, 5, 6), (0, 2), [(20, True), (6, False)]),
        ((2, 3, 4), (0, 2), [(2, True), (3, False), (4, True)]),
        ((1, 1), (0,), [(1, False)]),
    ],
)
def test_collapse_reduction(shape, axes, groups) -> None:
    assert collapse_reduction(shape, axes) == groups


def test_inner_reduction_uses_vector_accumulators_and_one_horizontal_reduction() -> None:
    ir = lowered_ir((1, 64, 7, 7), "mean", (2, 3), Target(threads=1))
    assert_filecheck(
        ir,
        """
        CHECK:      %[[INV:.*]] = arith.constant 0.0204081
        CHECK:      memref.reinterpret_cast {{.*}} to memref<64x49xf32>
        CHECK:      scf.for
        CHECK:      scf.for {{.*}} iter_args({{.*}}) -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
        CHECK-COUNT-4: arith.addf {{.*}} : vector<8xf32>
        CHECK:      vector.reduction
        CHECK-SAME: vector<8xf32> into f32
        CHECK-NOT:  vector.reduction
        CHECK:      arith.mulf {{.*}}%[[INV]]
        CHECK:      memref.store
        """,
    )


def test_outer_reduction_accumulates_rows_of_vectors() -> None:
    ir = lowered_ir((100, 20), "max", (0,), Target(threads=1))
    assert "vector.reduction" not in ir
    # 20 columns = 2 vectors + 4 single columns, all accumulated in one pass over the rows.
    assert_filecheck(
        ir,
        """
        CHECK:      scf.for {{.*}} -> (vector<8xf32>, vector<8xf32>, f32, f32, f32, f32)
        CHECK:      arith.maximumf {{.*}} : vector<8xf32>
        CHECK:      arith.maximumf {{.*}} : f32
        CHECK:      vector.store
        """,
    )


def test_unroll_follows_the_register_count() -> None:
    target = Target(vector_width=16, vector_registers=32, threads=1)
    ir = lowered_ir((4, 1000), "sum", (1,), target)
    assert "-> (" + ", ".join(["vector<16xf32>"] * 8) + ")" in ir


@pytest.mark.parametrize("kind", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize(
    "shape, axes",
    [
        ((2, 3, 17, 19), (2, 3)),  # inner, odd row (323)
        ((37, 21), (0,)),  # outer, odd columns
        ((7, 9, 11), (1,)),  # middle
        ((4, 33, 5), (0, 2)),  # separated axes, inner innermost
        ((5, 6, 7, 3), (0, 2)),  # separated axes, kept innermost
        ((3, 5, 1001), (0, 1, 2)),  # everything
        ((5,), (0,)),  # shorter than a vector
        ((8, 1, 6), (-2,)),  # a size-1 axis: a copy
    ],
)
def test_reduce_matches_numpy(kind: str, shape: tuple[int, ...], axes: tuple[int, ...]) -> None:
    x = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(run(x, kind, axes), reference(x, kind, axes), rtol=1e-5, atol=1e-5)


def test_prod() -> None:
    x = rng.uniform(0.9, 1.1, (6, 50)).astype(np.float32)
    for axes in [(1,), (0,)]:
        np.testing.assert_allclose(run(x, "prod", axes), reference(x, "prod", axes), rtol=1e-5)


def test_max_propagates_nan() -> None:
    x = rng.standard_normal((4, 40)).astype(np.float32)
    x[2, 17] = np.nan
    out = run(x, "max", (1,))
    assert np.isnan(out[2, 0]) and not np.isnan(out[[0, 1, 3]]).any()


def test_int64_sum() -> None:
    x = rng.integers(-(2**40), 2**40, size=(3, 45), dtype=np.int64)
    np.testing.assert_array_equal(run(x, "sum", (1,)), x.sum(axis=1, keepdims=True))
    np.testing.assert_array_equal(run(x, "max", (0,)), x.max(axis=0, keepdims=True))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "shape, axes",
    [
        ((1, 256, 14, 14), (2, 3)),  # contiguous rows, parallel over channels
        ((8, 4096, 24), (1,)),  # register-walked columns, parallel over the 8 outer rows
        ((64, 3000), (0,)),  # streamed, parallel over 3 output chunks
        ((1, 70000), (1,)),  # a single output: one thread does it all
    ],
)
def test_threads(threads: int, shape: tuple[int, ...], axes: tuple[int, ...]) -> None:
    x = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(
        run(x, "mean", axes, threads), reference(x, "mean", axes), rtol=1e-5, atol=1e-6
    )


def test_bad_output_shape_names_the_op() -> None:
    block = Block(arg_types=[MemRefType(f32, [4, 5]), MemRefType(f32, [4])])
    op = reduce_op(block.args, "sum", (1,))
    with pytest.raises(ValueError, match="kernel.reduce: output shape"):
        lower_reduce(op, Target(threads=1), "k")


def test_unknown_kind_names_the_op() -> None:
    block = Block(arg_types=[MemRefType(f32, [4, 5]), MemRefType(f32, [4, 1])])
    with pytest.raises(ValueError, match="kernel.reduce: unknown kind 'l2'"):
        lower_reduce(reduce_op(block.args, "l2", (1,)), Target(threads=1), "k")


def test_empty_reduction_gives_the_identity() -> None:
    x = np.empty((3, 0, 4), np.float32)
    np.testing.assert_array_equal(run(x, "sum", (1,)), np.zeros((3, 1, 4), np.float32))
    np.testing.assert_array_equal(run(x, "max", (1,)), np.full((3, 1, 4), -np.inf, np.float32))
    assert np.isnan(run(x, "mean", (1,))).all()


def test_long_rows_stream_through_the_output() -> None:
    ir = lowered_ir((6, 3000), "sum", (0,), Target(threads=1))
    # The output chunk is reset, folded into once per reduced row, then finished.
    assert_filecheck(
        ir,
        """
        CHECK:      arith.minsi
        CHECK:      vector.store
        CHECK:      scf.for
        CHECK:      vector.load %0{{.*}} : memref<6x3000xf32>
        CHECK-NEXT: vector.load {{.*}} : memref<3000xf32>, vector<8xf32>
        CHECK-NEXT: arith.addf {{.*}} : vector<8xf32>
        CHECK-NEXT: vector.store
        """,
    )


@pytest.mark.parametrize("kind", ["mean", "max"])
@pytest.mark.parametrize("shape, axes", [((6, 3000), (0,)), ((3, 4, 2, 1100), (1, 2))])
def test_streamed_reduction_matches_numpy(kind: str, shape, axes) -> None:
    x = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(run(x, kind, axes), reference(x, kind, axes), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "shape, axes, parallel",
    [
        ((1, 256, 14, 14), (2, 3), True),
        ((8, 4096, 24), (1,), True),
        ((64, 3000), (0,), True),
        ((64, 300), (0,), False),  # one output chunk
        ((1, 256, 4, 4), (2, 3), False),  # too little work
    ],
)
def test_parallel_regions(shape, axes, parallel: bool) -> None:
    ir = lowered_ir(shape, "sum", axes, Target(threads=2))
    assert ('"scf.parallel"' in ir) == parallel
