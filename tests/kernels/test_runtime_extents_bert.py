"""Runtime-extent kernels of the BERT encoder (issue 10): transpose, gather, the tiled
broadcast of elementwise and the fused attention, each compiled ONCE on buffers with `?`
dims and run at five or more sizes (including ones that are not multiples of the vector
width), on the host and on the AVX2 target.

Tolerances: data movement exact; elementwise rtol 1e-6; attention against float64 numpy,
max |out - ref| <= 2e-5 x max |ref| (tests/kernels/test_attention.py's)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from xdsl.dialects.builtin import DYNAMIC_INDEX, IntegerAttr, MemRefType, f32, i64
from xdsl.ir import SSAValue

from ember.core.target import Target, host_target, named_target
from ember.dialects import graph, kernel
from ember.dialects.numpy_eval import attention
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder
from ember.tests.kernels.test_attention import assert_matches, attention_op
from ember.tests.kernels.test_elementwise import elementwise
from ember.tools.kernel_ops import JitKernel

DYN = DYNAMIC_INDEX
SIZES = [(1, 1), (2, 3), (1, 9), (3, 17), (2, 32), (1, 45)]


def targets() -> list[Target]:
    return [host_target(), named_target("x86-64-v3", 1)]


@pytest.mark.parametrize("target", targets(), ids=["host", "avx2"])
def test_attention_runtime_sequence(target: Target) -> None:
    """q, v, out [?, ?, 4, 16] (seq-major), k_t [?, 4, 16, ?], mask [?, 1, 1, ?]: one
    program for every batch and sequence length (full query blocks, then single rows; key
    tiles, vectors, single keys)."""
    seq = [DYN, DYN, 4, 16]
    types = [
        MemRefType(f32, seq),
        MemRefType(f32, [DYN, 4, 16, DYN]),
        MemRefType(f32, seq),
        MemRefType(f32, [DYN, 1, 1, DYN]),
        MemRefType(f32, seq),
    ]
    run = JitKernel(lambda args: attention_op(args, 0.25, (1, 1, 1), True), types, target)
    rng = np.random.default_rng(0)
    for b, s in SIZES:
        q = rng.standard_normal((b, s, 4, 16)).astype(np.float32)
        k_t = rng.standard_normal((b, 4, 16, s)).astype(np.float32)
        v = rng.standard_normal((b, s, 4, 16)).astype(np.float32)
        mask = np.where(rng.random((b, 1, 1, s)) < 0.2, -10000.0, 0.0).astype(np.float32)
        mask[..., 0] = 0.0
        out = np.full((b, s, 4, 16), 7.0, np.float32)
        run(q, k_t, v, mask, out)
        ref = attention(
            *(a.astype(np.float64) for a in (q, k_t, v)), mask.astype(np.float64), 0.25, (1, 1, 1)
        )
        assert_matches(out, ref)


def transpose_op(perm: list[int]):
    def make(args: list[SSAValue]) -> kernel.TransposeOp:
        return kernel.TransposeOp(
            operands=[args[0], args[1]], properties={"perm": graph.i64_array(perm)}
        )

    return make


@pytest.mark.parametrize("target", targets(), ids=["host", "avx2"])
@pytest.mark.parametrize(
    ("perm", "src", "dst"),
    [
        ([0, 2, 3, 1], [DYN, DYN, 4, 16], [DYN, 4, 16, DYN]),  # K^T: the sequence innermost
        ([0, 2, 1, 3], [DYN, DYN, 4, 13], [DYN, 4, DYN, 13]),  # heads first: vector rows
        ([1, 0, 2], [DYN, DYN, 40], [DYN, DYN, 40]),  # the two `?` swapped
    ],
)
def test_transpose_runtime(target: Target, perm: list[int], src: list[int], dst: list[int]) -> None:
    run = JitKernel(transpose_op(perm), [MemRefType(f32, src), MemRefType(f32, dst)], target)
    rng = np.random.default_rng(1)
    for b, s in SIZES:
        shape = [b if k == 0 else s for k, n in enumerate(src) if n == DYN]
        sizes = iter(shape)
        x = rng.standard_normal([next(sizes) if n == DYN else n for n in src]).astype(np.float32)
        out = np.full(np.transpose(x, perm).shape, np.nan, np.float32)
        run(x, out)
        np.testing.assert_array_equal(out, np.transpose(x, perm))


def gather_op(axis: int):
    def make(args: list[SSAValue]) -> kernel.GatherOp:
        return kernel.GatherOp(
            operands=[args[0], args[1], args[2]], properties={"axis": IntegerAttr(axis, i64)}
        )

    return make


@pytest.mark.parametrize("target", targets(), ids=["host", "avx2"])
def test_gather_embedding_runtime_ids(target: Target) -> None:
    """A [100, 40] table by ids [?, ?] (negative ids count from the end)."""
    types = [
        MemRefType(f32, [100, 40]),
        MemRefType(i64, [DYN, DYN]),
        MemRefType(f32, [DYN, DYN, 40]),
    ]
    run = JitKernel(gather_op(0), types, target)
    rng = np.random.default_rng(2)
    table = rng.standard_normal((100, 40)).astype(np.float32)
    for b, s in SIZES:
        ids = rng.integers(-100, 100, (b, s)).astype(np.int64)
        out = np.full((b, s, 40), np.nan, np.float32)
        run(table, ids, out)
        np.testing.assert_array_equal(out, table[ids])


@pytest.mark.parametrize("target", targets(), ids=["host", "avx2"])
def test_gather_first_token_runtime_axis(target: Target) -> None:
    """[?, ?, 40] at position 0 of its `?` axis 1 (BERT's pooler input): [?, 40]."""
    types = [MemRefType(f32, [DYN, DYN, 40]), MemRefType(i64, []), MemRefType(f32, [DYN, 40])]
    run = JitKernel(gather_op(1), types, target)
    rng = np.random.default_rng(3)
    for b, s in SIZES:
        x = rng.standard_normal((b, s, 40)).astype(np.float32)
        out = np.full((b, 40), np.nan, np.float32)
        run(x, np.array(0, np.int64), out)
        np.testing.assert_array_equal(out, x[:, 0])


@pytest.mark.parametrize("target", targets(), ids=["host", "avx2"])
def test_elementwise_tile_broadcast(target: Target) -> None:
    """[?, ?, 37] + [1, ?, 37] (a position table's leading rows against the embeddings),
    times a one-element input: the tile input read again for every batch row."""

    def body(b: LoopBuilder, v: list[SSAValue]) -> SSAValue:
        return b.mulf(b.addf(v[0], v[1]), v[2])

    out = MemRefType(f32, [DYN, DYN, 37])
    types = [out, MemRefType(f32, [1, DYN, 37]), MemRefType(f32, [1]), out]
    run = JitKernel(lambda args: elementwise(args, body), types, target)
    rng = np.random.default_rng(4)
    for b, s in SIZES:
        x = rng.standard_normal((b, s, 37)).astype(np.float32)
        p = rng.standard_normal((1, s, 37)).astype(np.float32)
        c = np.array([1.5], np.float32)
        result = np.full_like(x, np.nan)
        run(x, p, c, result)
        np.testing.assert_allclose(result, (x + p) * c, rtol=1e-6)


# (input types, output type, the arrays' shapes at (batch, seq)).
BROADCASTS = [
    # a per-sample row against every position
    ([DYN, DYN, 37], [DYN, 1, 37], [DYN, DYN, 37], lambda b, s: [(b, s, 37), (b, 1, 37)]),
    # a per-row scalar
    ([DYN, 8], [DYN, 1], [DYN, 8], lambda b, s: [(b * s, 8), (b * s, 1)]),
    # a bias of fewer dims than after the last `?`
    ([DYN, 3, 8], [8], [DYN, 3, 8], lambda b, s: [(b * s, 3, 8), (8,)]),
    # both broadcast: [1, s, 37] x [b, 1, 37] -> [b, s, 37]
    ([1, DYN, 37], [DYN, 1, 37], [DYN, DYN, 37], lambda b, s: [(1, s, 37), (b, 1, 37)]),
]


@pytest.mark.parametrize("target", targets(), ids=["host", "avx2"])
@pytest.mark.parametrize(("a", "c", "out", "shapes"), BROADCASTS)
def test_elementwise_general_broadcast(
    target: Target, a: list[int], c: list[int], out: list[int], shapes: Callable
) -> None:
    """Numpy broadcasts with `?` dims other than the flat, row and tile ones: addressed per
    output row through run-time strides."""
    types = [MemRefType(f32, a), MemRefType(f32, c), MemRefType(f32, out)]
    run = JitKernel(lambda args: elementwise(args, lambda b, v: b.mulf(v[0], v[1])), types, target)
    rng = np.random.default_rng(5)
    for b, s in SIZES:
        x, y = (rng.standard_normal(shape).astype(np.float32) for shape in shapes(b, s))
        expected = x * y
        result = np.full(expected.shape, np.nan, np.float32)
        run(x, y, result)
        np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_static_attention_is_not_the_runtime_kernel() -> None:
    """The static attention (sharing its code with the run-time one) lowers as before: no
    extent arguments, no sizes read at run time, its remainder keys in one block."""
    from xdsl.ir import Block

    from ember.passes.conversion.kernel_to_loops.registry import lowering_for

    seq = [2, 13, 4, 16]
    types = [MemRefType(f32, t) for t in (seq, [2, 4, 16, 13], seq, [2, 1, 1, 13], seq)]
    block = Block(arg_types=types)
    op = attention_op(block.args, 0.25, (1, 1, 1), True)
    block.add_op(op)
    text = str(lowering_for(op)(op, host_target(1), "static"))
    assert "memref.dim" not in text and "ember.extent_of" not in text
