"""copy / concat / transpose / gather lowered to loops, JIT-compiled and compared with numpy.

These kernels only move values, so results must match numpy bit for bit (assert_array_equal).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from xdsl.dialects import arith, scf, vector
from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, MemRefType, ModuleOp, f32, i64
from xdsl.ir import Block, SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.passes.conversion.kernel_to_loops.data_movement import (
    lower_concat,
    lower_gather,
    lower_transpose,
    simplify_transpose,
)
from ember.passes.conversion.kernel_to_loops.flat_access import KernelShapeError
from ember.runtime.errors import KernelError
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.kernels.harness import run_kernel_op

RNG = np.random.default_rng(7)


def random(shape: Sequence[int], dtype: type = np.float32) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return RNG.integers(-1000, 1000, size=shape).astype(dtype)
    return RNG.standard_normal(shape).astype(dtype)


def lowered_ir(lower, make, types: Sequence[MemRefType]) -> str:  # type: ignore[no-untyped-def]
    block = Block(arg_types=list(types))
    module = ModuleOp([lower(make(block.args), Target(vector_width=8), "k")])
    module.verify()
    return str(module)


# -- copy ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,dtype",
    [
        ((1,), np.float32),
        ((7,), np.float32),
        ((3, 13), np.float32),
        ((4, 25), np.int64),
        ((5, 9000), np.float32),
    ],
)
def test_copy(shape: tuple, dtype: type) -> None:
    x = random(shape, dtype)
    out = np.zeros_like(x)
    run_kernel_op(lambda a: kernel.CopyOp(operands=list(a)), [x, out])
    np.testing.assert_array_equal(out, x)


# -- concat ----------------------------------------------------------------------------------------
def make_concat(axis: int):  # type: ignore[no-untyped-def]
    def make(args: Sequence[SSAValue]) -> kernel.ConcatOp:
        return kernel.ConcatOp(
            operands=[list(args[:-1]), args[-1]], properties={"axis": IntegerAttr(axis, i64)}
        )

    return make


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_concat_each_axis(axis: int) -> None:
    base = [2, 3, 5, 6]
    inputs = []
    for extra in (1, 4, 2):
        shape = list(base)
        shape[axis] = extra
        inputs.append(random(shape))
    expected = np.concatenate(inputs, axis=axis)
    out = np.zeros_like(expected)
    run_kernel_op(make_concat(axis), [*inputs, out])
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("threads", [1, 2])
def test_concat_large_channels(threads: int) -> None:
    """DenseNet-style channel concat, big enough to run in parallel."""
    inputs = [random((1, 64, 28, 28)), random((1, 32, 28, 28))]
    expected = np.concatenate(inputs, axis=1)
    out = np.zeros_like(expected)
    module = run_kernel_op(make_concat(1), [*inputs, out], threads=threads)
    assert "scf.parallel" in str(module)
    np.testing.assert_array_equal(out, expected)


def test_concat_rank1_int() -> None:
    inputs = [random((3,), np.int64), random((11,), np.int64)]
    out = np.zeros(14, np.int64)
    run_kernel_op(make_concat(0), [*inputs, out])
    np.testing.assert_array_equal(out, np.concatenate(inputs))


def test_concat_shape_mismatch_is_named() -> None:
    types = [MemRefType(f32, [2, 3]), MemRefType(f32, [3, 3]), MemRefType(f32, [5, 4])]
    with pytest.raises(KernelShapeError, match=r"kernel\.concat: input 0 shape \[2, 3\]"):
        lowered_ir(lower_concat, make_concat(0), types)


# -- transpose -------------------------------------------------------------------------------------
def make_transpose(perm: Sequence[int]):  # type: ignore[no-untyped-def]
    def make(args: Sequence[SSAValue]) -> kernel.TransposeOp:
        return kernel.TransposeOp(
            operands=list(args), properties={"perm": DenseArrayBase.from_list(i64, list(perm))}
        )

    return make


TRANSPOSES = [
    ((17, 23), (1, 0)),
    ((64, 64), (1, 0)),
    ((8, 8), (1, 0)),
    ((3, 5), (1, 0)),
    ((4, 9, 11), (0, 2, 1)),
    ((4, 9, 11), (2, 1, 0)),
    ((4, 9, 11), (1, 2, 0)),
    ((4, 9, 11), (2, 0, 1)),
    ((4, 9, 11), (1, 0, 2)),
    ((1, 12, 9, 16), (0, 2, 1, 3)),  # BERT: [B,S,H,D] -> [B,H,S,D]
    ((2, 12, 4, 16), (0, 2, 3, 1)),  # BERT: K^T
    ((2, 3, 5, 8), (3, 1, 0, 2)),
    ((1, 4, 6, 7, 5), (0, 2, 1, 3, 4)),  # ShuffleNet channel shuffle
    ((2, 3, 4), (0, 1, 2)),  # identity
]


@pytest.mark.parametrize("shape,perm", TRANSPOSES, ids=lambda v: "x".join(map(str, v)))
def test_transpose(shape: tuple, perm: tuple) -> None:
    x = random(shape)
    expected = np.ascontiguousarray(x.transpose(perm))
    out = np.zeros_like(expected)
    run_kernel_op(make_transpose(perm), [x, out])
    np.testing.assert_array_equal(out, expected)


def test_transpose_int64() -> None:
    x = random((5, 19), np.int64)
    out = np.zeros((19, 5), np.int64)
    run_kernel_op(make_transpose((1, 0)), [x, out])
    np.testing.assert_array_equal(out, x.T)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("perm", [(0, 2, 1, 3), (0, 2, 3, 1)])
def test_transpose_large(perm: tuple, threads: int) -> None:
    x = random((1, 128, 12, 64))
    expected = np.ascontiguousarray(x.transpose(perm))
    out = np.zeros_like(expected)
    module = run_kernel_op(make_transpose(perm), [x, out], threads=threads)
    assert "scf.parallel" in str(module)
    np.testing.assert_array_equal(out, expected)


def test_transpose_streams_large_outputs() -> None:
    """Outputs of STREAM_MIN_OUTPUT_BYTES and more (8.4 MB here: a from_blocked reorder with
    a ragged pixel count, 14605 = 912 x 16 + 13) are stored non-temporally; the values are
    the same (the scalar edge and unaligned addresses take plain stores)."""
    x = random((1, 9, 14605, 16))
    expected = np.ascontiguousarray(x.transpose(0, 1, 3, 2))
    out = np.zeros_like(expected)
    module = run_kernel_op(make_transpose((0, 1, 3, 2)), [x, out], threads=2)
    assert "nontemporal = true" in str(module)
    np.testing.assert_array_equal(out, expected)
    small = [MemRefType(f32, [1, 9, 1000, 16]), MemRefType(f32, [1, 9, 16, 1000])]
    assert "nontemporal = true" not in lowered_ir(
        lower_transpose, make_transpose((0, 1, 3, 2)), small
    )


# A pixel shuffle's interleave of 2 columns (ConvTranspose 2x2/2 as lowered): output runs
# of 2 x lanes from two input rows; ragged widths (19, 203) end in scalar copies; 18.7 MB
# stores streaming, over 2 threads.
@pytest.mark.parametrize(
    "shape,threads",
    [((1, 1, 2, 2, 5, 7, 19), 1), ((2, 2, 3, 1, 4, 16), 1), ((1, 1, 2, 2, 48, 120, 203), 2)],
)
def test_transpose_interleaves_pairs(shape: tuple, threads: int) -> None:
    perm = (0, 1, 4, 5, 2, 6, 3) if len(shape) == 7 else (2, 4, 0, 5, 3, 1)
    x = random(shape)
    expected = np.ascontiguousarray(x.transpose(perm))
    out = np.zeros_like(expected)
    module = str(run_kernel_op(make_transpose(perm), [x, out], threads=threads))
    assert "vector.shuffle" in module
    assert ("nontemporal = true" in module) == (x.nbytes >= 8 * 1024 * 1024)
    np.testing.assert_array_equal(out, expected)


def test_simplify_transpose_merges_and_drops_dims() -> None:
    assert simplify_transpose([1, 128, 12, 64], [0, 2, 1, 3]) == ([128, 12, 64], [1, 0, 2])
    assert simplify_transpose([2, 3, 4, 5], [0, 2, 3, 1]) == ([2, 3, 20], [0, 2, 1])
    assert simplify_transpose([1, 4, 6, 7, 5], [0, 2, 1, 3, 4]) == ([4, 6, 35], [1, 0, 2])
    assert simplify_transpose([3, 1, 4], [1, 0, 2]) == ([12], [0])


def test_transpose_ir_row_copies_and_register_tiles() -> None:
    types = [MemRefType(f32, [1, 128, 12, 64]), MemRefType(f32, [1, 12, 128, 64])]
    rows = lowered_ir(lower_transpose, make_transpose((0, 2, 1, 3)), types)
    assert "vector.load" in rows and "vector.shuffle" not in rows
    types = [MemRefType(f32, [64, 48]), MemRefType(f32, [48, 64])]
    tiles = lowered_ir(lower_transpose, make_transpose((1, 0)), types)
    assert_filecheck(
        tiles,
        """
        CHECK-COUNT-8: vector.load {{.*}} vector<8xf32>
        CHECK-COUNT-24: vector.shuffle
        CHECK-COUNT-8: vector.store
        """,
    )


def test_transpose_bad_output_is_named() -> None:
    types = [MemRefType(f32, [2, 3]), MemRefType(f32, [2, 3])]
    with pytest.raises(KernelShapeError, match=r"kernel\.transpose: output shape \[2, 3\]"):
        lowered_ir(lower_transpose, make_transpose((1, 0)), types)


# -- gather ----------------------------------------------------------------------------------------
def make_gather(axis: int):  # type: ignore[no-untyped-def]
    def make(args: Sequence[SSAValue]) -> kernel.GatherOp:
        return kernel.GatherOp(operands=list(args), properties={"axis": IntegerAttr(axis, i64)})

    return make


@pytest.mark.parametrize(
    "data_shape,idx_shape,axis,idx_dtype",
    [
        ((50, 40), (3, 5), 0, np.int64),  # embedding lookup, ragged hidden size
        ((30, 64), (7,), 0, np.int32),
        ((4, 9, 6), (2, 3), 1, np.int64),
        ((4, 9, 6), (5,), 2, np.int32),
        ((4, 9, 6), (), 0, np.int64),  # scalar index drops the axis
        ((5, 3), (4,), -1, np.int64),
    ],
)
def test_gather(data_shape: tuple, idx_shape: tuple, axis: int, idx_dtype: type) -> None:
    data = random(data_shape)
    extent = data_shape[axis]
    indices = RNG.integers(-extent, extent, size=idx_shape).astype(idx_dtype)  # negatives wrap
    expected = np.take(data, indices, axis=axis)
    out = np.zeros_like(expected)
    run_kernel_op(make_gather(axis), [data, indices, out])
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("threads", [1, 2])
def test_gather_bert_embedding(threads: int) -> None:
    table = random((1000, 768))
    ids = RNG.integers(-1000, 1000, size=(1, 128)).astype(np.int64)
    out = np.zeros((1, 128, 768), np.float32)
    module = run_kernel_op(make_gather(0), [table, ids, out], threads=threads)
    assert "scf.parallel" in str(module)
    np.testing.assert_array_equal(out, np.take(table, ids, axis=0))


def test_gather_ir_copies_rows_with_vectors() -> None:
    types = [MemRefType(f32, [100, 64]), MemRefType(i64, [3, 5]), MemRefType(f32, [3, 5, 64])]
    assert_filecheck(
        lowered_ir(lower_gather, make_gather(0), types),
        """
        CHECK: memref.load {{.*}} memref<3x5xi64>
        CHECK: arith.index_cast
        CHECK: arith.cmpi slt
        CHECK: arith.select
        CHECK: arith.cmpi uge
        CHECK: scf.if
        CHECK: memref.atomic_rmw
        CHECK: arith.select
        CHECK: vector.load {{.*}} vector<8xf32>
        CHECK: vector.store
        """,
    )


def test_gather_checks_each_index_once_not_each_element() -> None:
    """An embedding row of 64 floats costs one bounds check: the loop that moves the row's
    vectors has none inside."""
    types = [MemRefType(f32, [100, 64]), MemRefType(i64, [3, 5]), MemRefType(f32, [3, 5, 64])]
    block = Block(arg_types=types)
    fn = lower_gather(make_gather(0)(block.args), Target(vector_width=8), "k")
    checks = [op for op in fn.walk() if isinstance(op, arith.CmpiOp) and "uge" in str(op)]
    assert len(checks) == 1
    copy_loop = next(op for op in fn.walk() if isinstance(op, vector.LoadOp)).parent_op()
    assert isinstance(copy_loop, scf.ForOp)
    assert not any(op in checks for op in copy_loop.walk())


@pytest.mark.parametrize("bad", [100, -101, 2**40, -(2**63)])
def test_gather_kernel_reports_an_index_out_of_range(bad: int) -> None:
    table = random((100, 16))
    ids = np.array([[3, bad, -1]], np.int64)
    out = np.zeros((1, 3, 16), np.float32)
    with pytest.raises(
        KernelError, match=rf"index {bad} is out of range for dimension 0 of size 100"
    ):
        run_kernel_op(make_gather(0), [table, ids, out])
    np.testing.assert_array_equal(out[0, 0], table[3])  # the run went on, within its buffers
    np.testing.assert_array_equal(out[0, 2], table[-1])


def test_gather_bad_output_is_named() -> None:
    types = [MemRefType(f32, [10, 4]), MemRefType(i64, [3]), MemRefType(f32, [3, 5])]
    with pytest.raises(KernelShapeError, match=r"kernel\.gather: output shape \[3, 5\]"):
        lowered_ir(lower_gather, make_gather(0), types)
