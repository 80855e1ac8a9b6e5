"""kernel.lrn lowered to loops, JIT-compiled and compared with a float64 numpy reference.

Tolerance rtol 1e-5 / atol 1e-6 for the square-root exponents (0.5, 0.75, 1) and rtol 1e-4
for the general exp(log) path, whose f32 exp/log approximations are less exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, MemRefType, ModuleOp, f32, i64
from xdsl.ir import Block, SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.passes.conversion.kernel_to_loops.lrn import lower_lrn
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.kernels.harness import run_kernel_op


def make_lrn(size: int, alpha: float, beta: float, bias: float):  # type: ignore[no-untyped-def]
    def make(args: Sequence[SSAValue]) -> kernel.LRNOp:
        props = {
            "size": IntegerAttr(size, i64),
            "alpha": FloatAttr(alpha, f32),
            "beta": FloatAttr(beta, f32),
            "bias": FloatAttr(bias, f32),
        }
        return kernel.LRNOp(operands=list(args), properties=props)

    return make


def reference_lrn(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """The ONNX LRN formula, written independently of the kernel (float64)."""
    x64 = x.astype(np.float64)
    channels = x.shape[1]
    square_sum = np.zeros_like(x64)
    for c in range(channels):
        lo = max(0, c - (size - 1) // 2)
        hi = min(channels - 1, c + int(np.ceil((size - 1) / 2)))
        square_sum[:, c] = (x64[:, lo : hi + 1] ** 2).sum(axis=1)
    # alpha/beta/bias are stored as f32 attributes: use the same rounded values.
    alpha, beta, bias = (float(np.float32(v)) for v in (alpha, beta, bias))
    return (x64 / (bias + alpha / size * square_sum) ** beta).astype(np.float32)


CASES = [
    # shape, size, alpha, beta, bias
    ((1, 16, 13, 13), 5, 1e-4, 0.75, 1.0),  # AlexNet/GoogLeNet settings, ragged spatial tail
    ((2, 7, 5, 8), 3, 0.5, 0.75, 2.0),  # several images, large alpha so the window matters
    ((1, 3, 4, 4), 5, 0.8, 0.5, 1.0),  # window wider than the channel count
    ((1, 6, 3, 5), 4, 0.3, 1.0, 1.5),  # even size: window leans forward
    ((1, 9, 2, 6), 5, 0.4, 0.6, 1.0),  # general exponent via exp/log
    ((1, 4, 6), 2, 0.9, 0.75, 1.0),  # 1-D spatial
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-n{c[1]}-b{c[3]}")
def test_lrn_matches_reference(case: tuple) -> None:
    shape, size, alpha, beta, bias = case
    x = (np.random.default_rng(1).standard_normal(shape) * 2).astype(np.float32)
    out = np.full(shape, np.nan, np.float32)
    run_kernel_op(make_lrn(size, alpha, beta, bias), [x, out])
    rtol = 1e-5 if beta in (0.5, 0.75, 1.0) else 1e-4
    np.testing.assert_allclose(out, reference_lrn(x, size, alpha, beta, bias), rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_lrn_threads(threads: int) -> None:
    shape = (1, 48, 27, 27)  # 35K elements: the block loop runs as scf.parallel
    x = np.random.default_rng(threads).standard_normal(shape).astype(np.float32)
    out = np.full(shape, np.nan, np.float32)
    module = run_kernel_op(make_lrn(5, 1e-2, 0.75, 1.0), [x, out], threads=threads)
    assert "scf.parallel" in str(module)
    np.testing.assert_allclose(out, reference_lrn(x, 5, 1e-2, 0.75, 1.0), rtol=1e-5, atol=1e-6)


def test_lrn_ir_vectorizes_spatial_and_uses_square_roots() -> None:
    block = Block(arg_types=[MemRefType(f32, (1, 8, 4, 4))] * 2)
    op = make_lrn(5, 1e-4, 0.75, 1.0)(block.args)
    module = ModuleOp([lower_lrn(op, Target(vector_width=8), "lrn")])
    module.verify()
    assert_filecheck(
        str(module),
        """
        CHECK: func.func @lrn
        CHECK: vector.load {{.*}} vector<8xf32>
        CHECK: math.sqrt {{.*}} vector<8xf32>
        CHECK: math.sqrt {{.*}} vector<8xf32>
        CHECK: vector.store
        CHECK-NOT: math.log
        """,
    )
