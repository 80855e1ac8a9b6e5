"""The batched matmul of two activations with `?` dims (issue 10,
kernel_to_loops/matmul_extents.py): compiled ONCE, run at odd sizes (M around the tile
height, N around the vector and panel widths, K not a multiple of the unroll), batch dims
broadcast, a residual and an activation, on the host and on the AVX2 target.

Tolerance: against float64 numpy, max |out - ref| <= 1e-5 x max(1, max |ref|) (float32
sums of <= 70 terms)."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects.builtin import DYNAMIC_INDEX, MemRefType, f32

from ember.core.target import Target, host_target, named_target
from ember.tools.kernel_ops import JitKernel, matmul_op

DYN = DYNAMIC_INDEX


def _check(out: np.ndarray, ref: np.ndarray) -> None:
    err = float(np.max(np.abs(out - ref))) if out.size else 0.0
    assert err <= 1e-5 * max(1.0, float(np.max(np.abs(ref), initial=0.0))), err


@pytest.mark.parametrize(
    "target", [host_target(1), named_target("x86-64-v3", 1)], ids=["host", "avx2"]
)
def test_attention_scores_shapes(target: Target) -> None:
    """[?, 3, ?, ?] @ [?, 3, ?, ?] -> [?, 3, ?, ?]: batch, M, K and N all at run time."""
    types = [MemRefType(f32, [DYN, 3, DYN, DYN])] * 3
    run = JitKernel(matmul_op("plain", False, False), types, target)
    rng = np.random.default_rng(0)
    for batch, m, k, n in [
        (1, 1, 1, 1),
        (2, 5, 12, 17),
        (1, 15, 7, 33),
        (3, 29, 64, 40),
        (1, 14, 5, 16),
        (2, 3, 70, 71),
    ]:
        a = rng.standard_normal((batch, 3, m, k), dtype=np.float32)
        b = rng.standard_normal((batch, 3, k, n), dtype=np.float32)
        out = np.full((batch, 3, m, n), np.nan, np.float32)
        run(a, b, out)
        _check(out, a.astype(np.float64) @ b.astype(np.float64))


def test_broadcast_batch_residual_activation_two_threads() -> None:
    """A [?, 1, ?, 9] @ B [4, 9, ?] + residual, relu: A broadcast over the heads, B over
    the batch; two threads."""
    types = [
        MemRefType(f32, [DYN, 1, DYN, 9]),
        MemRefType(f32, [4, 9, DYN]),
        MemRefType(f32, [DYN, 4, DYN, DYN]),
        MemRefType(f32, [DYN, 4, DYN, DYN]),
    ]
    run = JitKernel(matmul_op("plain", False, True, "relu"), types, host_target(2), 2)
    rng = np.random.default_rng(1)
    for batch, m, n in [(1, 1, 3), (2, 19, 31), (3, 40, 100)]:
        a = rng.standard_normal((batch, 1, m, 9), dtype=np.float32)
        b = rng.standard_normal((4, 9, n), dtype=np.float32)
        res = rng.standard_normal((batch, 4, m, n), dtype=np.float32)
        out = np.full((batch, 4, m, n), np.nan, np.float32)
        run(a, b, res, out)
        _check(out, np.maximum(a.astype(np.float64) @ b + res, 0))


def test_dynamic_k_plain_b() -> None:
    """A [4, ?] @ B [?, 8]: K at run time (B an activation)."""
    types = [MemRefType(f32, [4, DYN]), MemRefType(f32, [DYN, 8]), MemRefType(f32, [4, 8])]
    run = JitKernel(matmul_op("plain", False, False), types)
    rng = np.random.default_rng(2)
    for k in [1, 3, 17]:
        a = rng.standard_normal((4, k), dtype=np.float32)
        b = rng.standard_normal((k, 8), dtype=np.float32)
        out = np.full((4, 8), np.nan, np.float32)
        run(a, b, out)
        _check(out, a.astype(np.float64) @ b)


def test_runtime_bias_is_refused() -> None:
    types = [
        MemRefType(f32, [DYN, 8]),
        MemRefType(f32, [8, DYN]),
        MemRefType(f32, [DYN]),
        MemRefType(f32, [DYN, DYN]),
    ]
    with pytest.raises(NotImplementedError, match=r"kernel.matmul with runtime extents"):
        JitKernel(matmul_op("plain", True, False), types)
