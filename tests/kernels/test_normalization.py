"""kernel.softmax and kernel.layer_norm lowerings vs numpy (float64 references)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, MemRefType, ModuleOp, f32, i32, i64
from xdsl.ir import Block, SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.passes.conversion.kernel_to_loops.normalization import (
    lower_layer_norm,
    lower_softmax,
)
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.kernels.harness import run_kernel_op

rng = np.random.default_rng(2)


def softmax_op(args: Sequence[SSAValue], axis: int) -> kernel.SoftmaxOp:
    return kernel.SoftmaxOp(operands=list(args), properties={"axis": IntegerAttr(axis, i64)})


def layer_norm_op(args: Sequence[SSAValue], axis: int, eps: float) -> kernel.LayerNormOp:
    x, scale, *bias, out = args
    return kernel.LayerNormOp(
        operands=[x, scale, bias, out],
        properties={"axis": IntegerAttr(axis, i64), "epsilon": FloatAttr(eps, f32)},
    )


def softmax_reference(x: np.ndarray, axis: int) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def layer_norm_reference(
    x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, axis: int, eps: float
) -> np.ndarray:
    x = x.astype(np.float64)
    axes = tuple(range(axis, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps) * scale
    return y + bias if bias is not None else y


def run_softmax(x: np.ndarray, axis: int, threads: int = 1) -> np.ndarray:
    out = np.full_like(x, np.nan)
    run_kernel_op(lambda args: softmax_op(args, axis), [x, out], threads=threads)
    return out


def lowered_softmax_ir(shape: Sequence[int], axis: int) -> str:
    block = Block(arg_types=[MemRefType(f32, shape)] * 2)
    op = softmax_op(block.args, axis)
    block.add_op(op)
    module = ModuleOp([lower_softmax(op, Target(threads=1), "k")])
    module.verify()
    return str(module)


# -- softmax ----------------------------------------------------------------------------------
def test_softmax_last_axis_is_three_vector_sweeps() -> None:
    assert_filecheck(
        lowered_softmax_ir((4, 1000), -1),
        """
        CHECK:      scf.for
        CHECK:      arith.maximumf {{.*}} : vector<8xf32>
        CHECK:      vector.reduction {{.*}}maximumf
        CHECK:      arith.subf {{.*}} : vector<8xf32>
        CHECK-NEXT: math.exp {{.*}} : vector<8xf32>
        CHECK-NEXT: vector.store
        CHECK:      vector.reduction {{.*}}add
        CHECK:      arith.divf
        CHECK:      arith.mulf {{.*}} : vector<8xf32>
        CHECK-NEXT: vector.store
        """,
    )


def test_softmax_middle_axis_has_no_horizontal_reduction() -> None:
    ir = lowered_softmax_ir((2, 50, 40), 1)
    assert "vector.reduction" not in ir
    assert_filecheck(
        ir,
        """
        CHECK:      arith.maximumf {{.*}} : vector<8xf32>
        CHECK:      math.exp {{.*}} : vector<8xf32>
        CHECK:      arith.addf {{.*}} : vector<8xf32>
        """,
    )


@pytest.mark.parametrize(
    "shape, axis",
    [
        ((8, 1000), -1),
        ((3, 37), 1),
        ((5, 3), 1),  # shorter than a vector
        ((2, 50, 19), 1),  # middle axis: strided rows, odd column count
        ((33, 4, 24), 0),  # first axis
        ((7,), 0),
    ],
)
def test_softmax_matches_numpy(shape: tuple[int, ...], axis: int) -> None:
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    np.testing.assert_allclose(
        run_softmax(x, axis), softmax_reference(x, axis), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_large_values_are_stable(axis: int) -> None:
    x = (rng.standard_normal((4, 40, 24)) * 1000 + 5000).astype(np.float32)
    out = run_softmax(x, axis)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, softmax_reference(x, axis), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape, axis", [((64, 1024), -1), ((1, 384, 128), 1)])
def test_softmax_threads(threads: int, shape: tuple[int, ...], axis: int) -> None:
    x = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(
        run_softmax(x, axis, threads), softmax_reference(x, axis), rtol=1e-5, atol=1e-7
    )


def test_softmax_rejects_integers() -> None:
    block = Block(arg_types=[MemRefType(i32, [4, 4])] * 2)
    with pytest.raises(NotImplementedError, match="kernel.softmax: element type i32"):
        lower_softmax(softmax_op(block.args, 1), Target(threads=1), "k")


# -- layer norm -------------------------------------------------------------------------------
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize(
    "shape, axis",
    [((4, 7, 40), 2), ((4, 7, 40), 1), ((3, 13), 1), ((2, 5), -1), ((96,), 0)],
)
def test_layer_norm_matches_numpy(shape: tuple[int, ...], axis: int, with_bias: bool) -> None:
    x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
    normalized = shape[axis % len(shape) :]
    scale = rng.standard_normal(normalized).astype(np.float32)
    bias = rng.standard_normal(normalized).astype(np.float32) if with_bias else None
    out = np.full_like(x, np.nan)
    arrays = [x, scale, *([bias] if bias is not None else []), out]
    run_kernel_op(lambda args: layer_norm_op(args, axis, 1e-5), arrays)
    expected = layer_norm_reference(x, scale, bias, axis % len(shape), 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_layer_norm_large_mean_small_spread() -> None:
    """Two-pass variance: E[x^2] - E[x]^2 would cancel to noise at this mean/spread ratio."""
    x = (1000 + rng.standard_normal((4, 768)) * 0.1).astype(np.float32)
    scale, bias = np.ones(768, np.float32), np.zeros(768, np.float32)
    out = np.empty_like(x)
    run_kernel_op(lambda args: layer_norm_op(args, 1, 1e-5), [x, scale, bias, out])
    np.testing.assert_allclose(out, layer_norm_reference(x, scale, bias, 1, 1e-5), atol=2e-3)


@pytest.mark.parametrize("threads", [1, 2])
def test_layer_norm_threads(threads: int) -> None:
    x = rng.standard_normal((128, 768)).astype(np.float32)
    scale, bias = rng.standard_normal((2, 768)).astype(np.float32)
    out = np.empty_like(x)
    run_kernel_op(
        lambda args: layer_norm_op(args, -1, 1e-12), [x, scale, bias, out], threads=threads
    )
    np.testing.assert_allclose(
        out, layer_norm_reference(x, scale, bias, 1, 1e-12), rtol=1e-5, atol=1e-5
    )


def test_layer_norm_bad_scale_names_the_op() -> None:
    block = Block(
        arg_types=[MemRefType(f32, [4, 8]), MemRefType(f32, [5]), MemRefType(f32, [4, 8])]
    )
    with pytest.raises(ValueError, match="kernel.layer_norm: scale of shape \\(5,\\)"):
        lower_layer_norm(layer_norm_op(block.args, 1, 1e-5), Target(threads=1), "k")
