"""kernel.attention (the streaming online-softmax kernel) vs numpy_eval.attention in float64.

Tolerance: max |error| <= 2e-5 x max |reference| (float32 accumulation over up to 300 keys and
the polynomial exp). Rows whose every key is masked with -inf must be NaN exactly where the
reference (and onnxruntime's softmax) is NaN.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest
from xdsl.dialects.builtin import FloatAttr, f32
from xdsl.ir import SSAValue

from ember.core.target import Target, host_target
from ember.dialects import graph, kernel
from ember.dialects.numpy_eval import attention
from ember.tests.kernels.harness import run_kernel_op

REL = 2e-5


def attention_op(args: Sequence[SSAValue], scale: float, seq_major: Sequence[int], masked: bool):
    q, k_t, v, *rest = args
    mask, out = (rest[:1], rest[1]) if masked else ([], rest[0])
    return kernel.AttentionOp(
        operands=[q, k_t, v, mask, out],
        properties={"scale": FloatAttr(scale, f32), "seq_major": graph.i64_array(seq_major)},
    )


def run_attention(
    q: np.ndarray,
    k_t: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None,
    scale: float,
    seq_major: Sequence[int] = (0, 0, 0),
    threads: int = 1,
    target: Target | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(kernel output, float64 reference)."""
    b, h = k_t.shape[:2]
    sq = q.shape[1] if seq_major[0] else q.shape[2]
    dv = v.shape[3]
    out_shape = (b, sq, h, dv) if seq_major[2] else (b, h, sq, dv)
    out = np.full(out_shape, 7.0, np.float32)
    arrays = [q, k_t, v, *([] if mask is None else [mask]), out]
    run_kernel_op(
        lambda args: attention_op(args, scale, seq_major, mask is not None),
        arrays,
        target=target,
        threads=threads,
    )
    with np.errstate(invalid="ignore"):
        ref = attention(
            *(a.astype(np.float64) for a in (q, k_t, v)),
            None if mask is None else mask.astype(np.float64),
            scale,
            seq_major,
        )
    return out, ref


def assert_matches(out: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    finite = ~np.isnan(ref)
    scale = max(float(np.max(np.abs(ref[finite]))), 1e-30) if finite.any() else 1.0
    err = float(np.max(np.abs(out[finite] - ref[finite]))) if finite.any() else 0.0
    assert err <= REL * scale, f"max abs error {err:.3g} > {REL} x {scale:.3g}"


def qkv(b: int, h: int, sq: int, sk: int, d: int, dv: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, h, sq, d)).astype(np.float32)
    k_t = rng.standard_normal((b, h, d, sk)).astype(np.float32)
    v = rng.standard_normal((b, h, sk, dv)).astype(np.float32)
    return q, k_t, v


ATTENTION_SHAPES = [
    (1, 2, 16, 32, 16, 16),  # whole query blocks and key tiles
    (2, 3, 13, 37, 8, 24),  # odd lengths: row tail, key vectors and single keys
    (1, 1, 1, 5, 3, 1),  # a single query row, fewer keys than a vector
    (1, 4, 40, 130, 64, 64),  # BERT's head size
]


# Every shape on 2 threads, the first also on 1; the other one-thread cases with --runslow
# (tests/kernels reached the same arcs without them, docs/testing.md).
@pytest.mark.parametrize(
    "threads, b, h, sq, sk, d, dv",
    [
        pytest.param(threads, *shape, marks=pytest.mark.slow if threads == 1 and k else ())
        for threads in (1, 2)
        for k, shape in enumerate(ATTENTION_SHAPES)
    ],
)
def test_attention_matches_reference(
    b: int, h: int, sq: int, sk: int, d: int, dv: int, threads: int
) -> None:
    q, k_t, v = qkv(b, h, sq, sk, d, dv)
    out, ref = run_attention(q, k_t, v, None, 1.0 / np.sqrt(d), threads=threads)
    assert_matches(out, ref)


@pytest.mark.parametrize(
    "mask_shape", [(1, 1, 1, 37), (2, 1, 1, 37), (1, 3, 13, 37), (2, 3, 13, 37)]
)
def test_attention_broadcasts_the_additive_mask(mask_shape: tuple[int, ...]) -> None:
    q, k_t, v = qkv(2, 3, 13, 37, 8, 8, seed=1)
    rng = np.random.default_rng(2)
    mask = np.where(rng.random(mask_shape) < 0.3, -10000.0, 0.0).astype(np.float32)
    mask += rng.standard_normal(mask_shape).astype(np.float32)  # not only 0 / -10000
    out, ref = run_attention(q, k_t, v, mask, 0.35, threads=2)
    assert_matches(out, ref)


def test_attention_with_minus_infinity_masks_and_fully_masked_rows() -> None:
    """-inf on leading keys (a whole first key tile), on scattered keys, on every key of some
    rows (NaN, as the unfused softmax and onnxruntime), and float32's lowest on every key of
    another row (finite: uniform weights)."""
    b, h, sq, sk, d = 1, 2, 11, 70, 16
    q, k_t, v = qkv(b, h, sq, sk, d, d, seed=3)
    mask = np.zeros((b, h, sq, sk), np.float32)
    mask[..., :40] = -np.inf  # the first key tiles are all -inf for every row
    mask[0, 0, 1, 50:60] = -np.inf
    mask[0, 1, 2, :] = -np.inf  # fully masked with -inf: NaN
    mask[0, 0, 7, :] = -np.inf
    mask[0, 1, 5, :] = np.finfo(np.float32).min  # fully masked with the lowest float: finite
    out, ref = run_attention(q, k_t, v, mask, 0.25)
    assert np.isnan(ref[0, 1, 2]).all() and np.isnan(ref[0, 0, 7]).all()
    assert np.isfinite(ref[0, 1, 5]).all()
    assert_matches(out, ref)


def test_attention_propagates_nan_and_inf_scores() -> None:
    q, k_t, v = qkv(1, 1, 9, 40, 8, 8, seed=4)
    q[0, 0, 3, 2] = np.nan  # row 3: NaN scores
    k_t[0, 0, :, 35] = np.inf  # every row sees +/-inf at key 35 (NaN for rows 0*inf...)
    out, ref = run_attention(q, k_t, v, None, 0.5)
    assert np.isnan(ref[0, 0, 3]).all()
    assert_matches(out, ref)


def test_attention_reads_and_writes_sequence_major_tensors() -> None:
    b, h, s, d = 2, 3, 19, 8
    q, k_t, v = qkv(b, h, s, s, d, d, seed=5)
    q_bshd = np.ascontiguousarray(q.transpose(0, 2, 1, 3))
    v_bshd = np.ascontiguousarray(v.transpose(0, 2, 1, 3))
    out, ref = run_attention(q_bshd, k_t, v_bshd, None, 0.3, seq_major=(1, 1, 1), threads=2)
    assert out.shape == (b, s, h, d)
    assert_matches(out, ref)
    plain, _ = run_attention(q, k_t, v, None, 0.3)
    np.testing.assert_allclose(out, plain.transpose(0, 2, 1, 3), rtol=1e-5, atol=1e-6)


def test_attention_on_an_avx2_target() -> None:
    """16 registers: 4-row query blocks, 8-wide vectors."""
    avx2 = dataclasses.replace(host_target(1), vector_width=8, vector_registers=16)
    q, k_t, v = qkv(1, 2, 13, 29, 16, 16, seed=6)
    out, ref = run_attention(q, k_t, v, None, 0.25, target=avx2)
    assert_matches(out, ref)
