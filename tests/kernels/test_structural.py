"""slice / arg_reduce / cumsum lowered to loops, JIT-compiled and compared with numpy.

Slice and arg_reduce only move or select values: results must match numpy exactly. CumSum
adds in the same order as numpy's sequential cumsum, so float32 results agree to rtol 1e-6.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from xdsl.dialects.builtin import (
    IntegerAttr,
    MemRefType,
    ModuleOp,
    StringAttr,
    UnitAttr,
    f32,
    i64,
)
from xdsl.ir import Attribute, Block, SSAValue
from xdsl.utils.exceptions import VerifyException

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.graph import i64_array
from ember.dialects.numpy_eval import (
    arg_reduce,
    cumsum,
    gather_elements,
    gather_nd,
    one_hot,
    scatter_elements,
    scatter_nd,
    strided_slice,
    top_k_indices,
)
from ember.passes.conversion.kernel_to_loops.structural import (
    lower_arg_reduce,
    lower_slice,
    slice_runs,
)
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.kernels.harness import run_kernel_op

RNG = np.random.default_rng(11)


def random(shape: Sequence[int], dtype: type = np.float32) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return RNG.integers(-5, 5, size=shape).astype(dtype)
    return RNG.standard_normal(shape).astype(dtype)


def _slice_op(starts: Sequence[int], steps: Sequence[int]):  # type: ignore[no-untyped-def]
    def make(args: Sequence[SSAValue]) -> kernel.SliceOp:
        props = {"starts": i64_array(starts), "steps": i64_array(steps)}
        return kernel.SliceOp(operands=list(args), properties=props)

    return make


# -- slice -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,starts,steps,out,dtype",
    [
        ((4, 37), (1, 0), (2, 1), (2, 37), np.float32),  # whole rows: one run per row
        ((3, 5, 40), (0, 1, 3), (1, 1, 1), (3, 3, 30), np.float32),  # ragged run ends
        ((6, 33), (5, 31), (-1, -3), (6, 11), np.float32),  # negative steps, scalar run
        ((2, 9, 10), (0, 8, 2), (1, -4, 3), (2, 3, 3), np.int64),
        ((1, 64, 8, 8), (0, 0, 0, 0), (1, 1, 1, 1), (1, 32, 8, 8), np.float32),  # one run
    ],
)
def test_slice_matches_numpy(
    shape: tuple[int, ...],
    starts: tuple[int, ...],
    steps: tuple[int, ...],
    out: tuple[int, ...],
    dtype: type,
) -> None:
    x = random(shape, dtype)
    y = np.zeros(out, dtype)
    run_kernel_op(_slice_op(starts, steps), [x, y])
    np.testing.assert_array_equal(y, strided_slice(x, starts, steps, out))


def test_slice_runs_merge_whole_trailing_axes() -> None:
    # [2, 8, 4, 5] -> rows 2..5 of axis 1, everything after: one run of 4*4*5 per outer index.
    assert slice_runs((2, 8, 4, 5), (0, 2, 0, 0), (1, 1, 1, 1), (2, 4, 4, 5)) == (
        40,
        [(2, 160)],
        80,
        1,
    )
    # A strided innermost axis is a scalar run with its stride.
    assert slice_runs((3, 10), (0, 1), (1, 2), (3, 4)) == (1, [(3, 10)], 4, 2)


def test_slice_ir_moves_vectors() -> None:
    block = Block(arg_types=[MemRefType(f32, [4, 40]), MemRefType(f32, [4, 32])])
    op = _slice_op((0, 4), (1, 1))(block.args)
    module = ModuleOp([lower_slice(op, Target(vector_width=8), "k")])
    module.verify()
    assert_filecheck(
        str(module),
        """
        CHECK: func.func @k
        CHECK: scf.for
        CHECK: vector.load {{.*}} vector<8xf32>
        CHECK: vector.store
        """,
    )


def test_slice_out_of_bounds_is_rejected() -> None:
    block = Block(arg_types=[MemRefType(f32, [4, 8]), MemRefType(f32, [4, 5])])
    op = _slice_op((0, 4), (1, 1))(block.args)
    with pytest.raises(VerifyException, match="axis 1 reads 5 elements from 4"):
        op.verify()


# -- arg max / arg min -------------------------------------------------------------------------------
def _arg_op(kind: str, axis: int, last: bool):  # type: ignore[no-untyped-def]
    def make(args: Sequence[SSAValue]) -> kernel.ArgReduceOp:
        props = {
            "kind": StringAttr(kind),
            "axis": IntegerAttr(axis, i64),
            "select_last_index": IntegerAttr(int(last), i64),
        }
        return kernel.ArgReduceOp(operands=list(args), properties=props)

    return make


@pytest.mark.parametrize(
    "shape,axis,kind,last,dtype",
    [
        ((3, 50), 1, "max", False, np.float32),  # along the contiguous axis
        ((7, 19), 0, "min", False, np.float32),  # across vector + scalar columns
        ((2, 6, 21), 1, "max", True, np.int64),  # ties (small ints), last index wins
        ((4, 5, 3), 2, "min", True, np.int32),
        ((1, 9), 0, "max", False, np.float32),  # a single candidate
    ],
)
def test_arg_reduce_matches_numpy(
    shape: tuple[int, ...], axis: int, kind: str, last: bool, dtype: type
) -> None:
    x = random(shape, dtype)
    out_shape = tuple(1 if d == axis else n for d, n in enumerate(shape))
    y = np.full(out_shape, -1, np.int64)
    run_kernel_op(_arg_op(kind, axis, last), [x, y])
    np.testing.assert_array_equal(y, arg_reduce(x, kind, axis, last))


def test_arg_reduce_ir_keeps_best_value_and_index_in_vectors() -> None:
    block = Block(arg_types=[MemRefType(f32, [10, 32]), MemRefType(i64, [1, 32])])
    op = _arg_op("max", 0, False)(block.args)
    for width in (8, 16):
        module = ModuleOp([lower_arg_reduce(op, Target(vector_width=width), "k")])
        module.verify()
        assert_filecheck(
            str(module),
            f"""
            CHECK: scf.for {{{{.*}}}} -> (vector<{width}xf32>, vector<{width}xf32>, vector<{width}xi64>
            CHECK: arith.cmpf ogt, {{{{.*}}}} : vector<{width}xf32>
            CHECK: arith.select {{{{.*}}}} : vector<{width}xi64>
            """,
        )


# -- cumsum ------------------------------------------------------------------------------------------
def _cumsum_op(axis: int, exclusive: bool, reverse: bool, product: bool = False):  # type: ignore[no-untyped-def]
    def make(args: Sequence[SSAValue]) -> kernel.CumSumOp:
        props: dict[str, Attribute] = {
            "axis": IntegerAttr(axis, i64),
            "exclusive": IntegerAttr(int(exclusive), i64),
            "reverse": IntegerAttr(int(reverse), i64),
        }
        if product:
            props["product"] = UnitAttr()
        return kernel.CumSumOp(operands=list(args), properties=props)

    return make


@pytest.mark.parametrize(
    "shape,axis,exclusive,reverse,dtype",
    [
        ((5, 37), 1, False, False, np.float32),
        ((9, 21), 0, True, False, np.float32),
        ((2, 7, 12), 1, True, True, np.float64),
        ((3, 8), 1, False, True, np.int32),
        ((4, 3, 2), 0, False, False, np.int64),
    ],
)
def test_cumsum_matches_numpy(
    shape: tuple[int, ...], axis: int, exclusive: bool, reverse: bool, dtype: type
) -> None:
    x = random(shape, dtype)
    y = np.zeros(shape, dtype)
    run_kernel_op(_cumsum_op(axis, exclusive, reverse), [x, y])
    np.testing.assert_allclose(y, cumsum(x, axis, exclusive, reverse), rtol=1e-6)


@pytest.mark.parametrize("exclusive,reverse", [(False, False), (True, True)])
def test_cumulative_product_matches_numpy(exclusive: bool, reverse: bool) -> None:
    x = random((3, 6, 10)) * 0.5 + 1
    y = np.zeros_like(x)
    run_kernel_op(_cumsum_op(1, exclusive, reverse, product=True), [x, y])
    np.testing.assert_allclose(y, cumsum(x, 1, exclusive, reverse, product=True), rtol=1e-6)


# -- gather elements ---------------------------------------------------------------------------------
def _gather_elements_op(axis: int, ignore: int | None):  # type: ignore[no-untyped-def]
    def make(args: Sequence[SSAValue]) -> kernel.GatherElementsOp:
        props = {"axis": IntegerAttr(axis, i64)}
        if ignore is not None:
            props["ignore_index"] = IntegerAttr(ignore, i64)
        return kernel.GatherElementsOp(operands=list(args), properties=props)

    return make


@pytest.mark.parametrize(
    "data_shape,idx_shape,axis,ignore",
    [
        ((4, 6), (3, 6), 0, None),
        ((2, 5, 3), (2, 7, 3), 1, None),  # more indices than data rows along the axis
        ((1, 5, 1), (3, 1, 4), 1, 2),  # broadcast data (a per-class weight), one class ignored
    ],
)
def test_gather_elements_matches_numpy(
    data_shape: tuple[int, ...], idx_shape: tuple[int, ...], axis: int, ignore: int | None
) -> None:
    x = random(data_shape)
    extent = data_shape[axis]
    idx = RNG.integers(-extent, extent, size=idx_shape).astype(np.int64)
    y = np.zeros(idx_shape, np.float32)
    run_kernel_op(_gather_elements_op(axis, ignore), [x, idx, y])
    np.testing.assert_array_equal(y, gather_elements(x, idx, axis, ignore))


# -- one hot -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("idx_shape,depth,axis", [((5, 21), 6, 1), ((3, 4), 9, 2), ((7,), 4, 0)])
def test_one_hot_matches_numpy(idx_shape: tuple[int, ...], depth: int, axis: int) -> None:
    idx = RNG.integers(-depth - 2, depth + 2, size=idx_shape).astype(np.int64)
    values = np.array([0.25, -3.0], np.float32)
    out_shape = list(idx_shape)
    out_shape.insert(axis, depth)
    y = np.zeros(out_shape, np.float32)

    def make(args: Sequence[SSAValue]) -> kernel.OneHotOp:
        return kernel.OneHotOp(operands=list(args), properties={"axis": IntegerAttr(axis, i64)})

    run_kernel_op(make, [idx, values, y])
    np.testing.assert_array_equal(y, one_hot(idx, values, depth, axis))


# -- scatter elements and top k ----------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements_matches_numpy(reduction: str) -> None:
    data = random((4, 6))
    idx = RNG.integers(-4, 4, size=(5, 6)).astype(np.int64)  # duplicates and negatives
    updates = random((5, 6))
    y = np.zeros_like(data)

    def make(args: Sequence[SSAValue]) -> kernel.ScatterElementsOp:
        props = {"axis": IntegerAttr(0, i64), "reduction": StringAttr(reduction)}
        return kernel.ScatterElementsOp(operands=list(args), properties=props)

    run_kernel_op(make, [data, idx, updates, y])
    np.testing.assert_allclose(y, scatter_elements(data, idx, updates, 0, reduction), rtol=1e-6)


@pytest.mark.parametrize(
    "shape,k,axis,largest,dtype",
    [
        ((3, 40), 5, 1, True, np.float32),
        ((30, 4), 30, 0, False, np.float32),  # a full sort
        ((2, 25, 3), 7, 1, True, np.int64),  # many ties: lower indices first
    ],
)
def test_top_k_matches_a_stable_sort(
    shape: tuple[int, ...], k: int, axis: int, largest: bool, dtype: type
) -> None:
    x = random(shape, dtype)
    out_shape = tuple(k if d == axis else n for d, n in enumerate(shape))
    y = np.full(out_shape, -1, np.int64)

    def make(args: Sequence[SSAValue]) -> kernel.TopKOp:
        props = {"axis": IntegerAttr(axis, i64), "largest": IntegerAttr(int(largest), i64)}
        return kernel.TopKOp(operands=list(args), properties=props)

    run_kernel_op(make, [x, y])
    np.testing.assert_array_equal(y, top_k_indices(x, k, axis, largest))


# -- gather nd / scatter nd --------------------------------------------------------------------------
def test_gather_nd_matches_numpy() -> None:
    data = random((2, 4, 5, 3))
    idx = RNG.integers(-4, 4, size=(2, 6, 1)).astype(np.int64)  # batch_dims 1, one coordinate
    idx[..., 0] = np.clip(idx[..., 0], -4, 3)
    y = np.zeros((2, 6, 5, 3), np.float32)

    def make(args: Sequence[SSAValue]) -> kernel.GatherNDOp:
        return kernel.GatherNDOp(
            operands=list(args), properties={"batch_dims": IntegerAttr(1, i64)}
        )

    run_kernel_op(make, [data, idx, y])
    np.testing.assert_array_equal(y, gather_nd(data, idx, 1))


@pytest.mark.parametrize("reduction", ["none", "add", "max"])
def test_scatter_nd_matches_numpy(reduction: str) -> None:
    data = random((4, 3, 9))
    idx = np.array([[[1, 2]], [[-1, 0]], [[1, 2]]], np.int64)  # a duplicate tuple
    updates = random((3, 1, 9))
    y = np.zeros_like(data)

    def make(args: Sequence[SSAValue]) -> kernel.ScatterNDOp:
        return kernel.ScatterNDOp(
            operands=list(args), properties={"reduction": StringAttr(reduction)}
        )

    run_kernel_op(make, [data, idx, updates, y])
    np.testing.assert_allclose(y, scatter_nd(data, idx, updates, reduction), rtol=1e-6)
