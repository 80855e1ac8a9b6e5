"""Building blocks shared by the matmul and convolution lowerings.

- `micro_kernel`: an MR x (nvec x VW) block of C accumulated in registers (scf.for iter_args)
  with vector.fma; A elements are broadcast, B rows are vector loads.
- `Epilogue`: bias -> residual -> activation applied in registers, then the store; partial
  vectors (N tails) use masked loads/stores so that no access ever touches memory past the
  end of a buffer.
- small IR helpers the LoopBuilder lacks (alloca, if/else, activations).
"""

from __future__ import annotations

import math as pymath
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xdsl.dialects import arith, math, memref, scf, vector
from xdsl.dialects.builtin import DenseArrayBase, MemRefType, StringAttr, VectorType, f32, i1
from xdsl.ir import Attribute, Block, Region, SSAValue
from xdsl.irdl import IRDLOperation

from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, Value

# Load one scalar A element (row i of the tile, reduction index k).
LoadA = Callable[[LoopBuilder, SSAValue, int], SSAValue]
# Load one vector of B (reduction index k, vector j of the tile row).
LoadB = Callable[[LoopBuilder, SSAValue, int], SSAValue]
Activation = Callable[[LoopBuilder, SSAValue], SSAValue]

# Reduction loops are unrolled by this much so that LLVM sees several independent FMA
# groups per iteration and the loop overhead stays off the critical path.
K_UNROLL = 4


def alloca(b: LoopBuilder, shape: Sequence[int], element: Attribute = f32) -> SSAValue:
    """Static scratch; inside scf.parallel codegen hoists it to the outlined function entry."""
    return b.insert(memref.AllocaOp.get(element, shape=list(shape))).results[0]


def if_else(
    b: LoopBuilder,
    cond: SSAValue,
    then: Callable[[LoopBuilder], None],
    otherwise: Callable[[LoopBuilder], None],
) -> None:
    blocks = []
    for emit in (then, otherwise):
        block = Block()
        inner = LoopBuilder(block)
        emit(inner)
        inner.insert(scf.YieldOp())
        blocks.append(block)
    b.insert(scf.IfOp(cond, [], Region(blocks[0]), Region(blocks[1])))


def split_static(
    b: LoopBuilder,
    index: SSAValue,
    full: int,
    total: int,
    emit: Callable[[LoopBuilder, int], None],
    extent: int,
    tail: int,
) -> None:
    """Emit `emit(b, extent)` when index < full, else `emit(b, tail)` (when a tail exists)."""
    if full == total:
        emit(b, extent)
    elif full == 0:
        emit(b, tail)
    else:
        if_else(
            b,
            b.cmp_index("ult", index, full),
            lambda t: emit(t, extent),
            lambda e: emit(e, tail),
        )


def activation_of(op: IRDLOperation) -> Activation | None:
    """The op's fused activation as a vector function (None when it has none)."""
    attr: StringAttr | None = op.activation  # type: ignore[attr-defined]
    if attr is None:
        return None
    kind = attr.data
    params_attr: DenseArrayBase | None = op.activation_params  # type: ignore[attr-defined]
    params = [float(v) for v in params_attr.get_values()] if params_attr is not None else []

    def need(count: int) -> list[float]:
        if len(params) != count:
            raise ValueError(
                f"{op.name}: activation '{kind}' needs {count} activation_params, got {params}"
            )
        return params

    def splat_like(b: LoopBuilder, value: float, like: SSAValue) -> SSAValue:
        return b.splat(value, like.type.get_shape()[0])  # type: ignore[attr-defined]

    if kind == "relu":
        return lambda b, v: b.maxf(v, splat_like(b, 0.0, v))
    if kind == "clip":
        lo, hi = need(2)
        return lambda b, v: b.minf(b.maxf(v, splat_like(b, lo, v)), splat_like(b, hi, v))
    if kind == "leaky_relu":
        (alpha,) = need(1)

        def leaky(b: LoopBuilder, v: SSAValue) -> SSAValue:
            # max(x,0) + alpha*min(x,0): exact for any alpha, no vector compare/select needed.
            zero = splat_like(b, 0.0, v)
            return b.addf(b.maxf(v, zero), b.mulf(splat_like(b, alpha, v), b.minf(v, zero)))

        return leaky
    if kind == "sigmoid":

        def sigmoid(b: LoopBuilder, v: SSAValue) -> SSAValue:
            one = splat_like(b, 1.0, v)
            e = b.exp(b.insert(arith.NegfOp(v)).results[0])
            return b.divf(one, b.addf(one, e))

        return sigmoid
    if kind == "tanh":
        return lambda b, v: b.insert(math.TanhOp(v)).results[0]
    if kind == "gelu":

        def gelu(b: LoopBuilder, v: SSAValue) -> SSAValue:
            scaled = b.mulf(v, splat_like(b, 1.0 / pymath.sqrt(2.0), v))
            erf = b.insert(math.ErfOp(scaled)).results[0]
            half_x = b.mulf(v, splat_like(b, 0.5, v))
            return b.mulf(half_x, b.addf(erf, splat_like(b, 1.0, v)))

        return gelu
    raise ValueError(f"{op.name}: unsupported activation '{kind}'")


def lane_mask(b: LoopBuilder, lanes: int, vw: int) -> SSAValue:
    return b.insert(vector.CreateMaskOp([b.index(lanes)], VectorType(i1, [vw]))).results[0]


def load_lanes(
    b: LoopBuilder, buf: SSAValue, idx: Sequence[Value], lanes: int, vw: int
) -> SSAValue:
    """A vector of buf[idx...] whose lanes >= `lanes` are zero and never touch memory."""
    if lanes == vw:
        return b.vload(buf, idx, vw)
    indices = [b.index(i) for i in idx]
    zero = b.splat(0.0, vw)
    return b.insert(
        vector.MaskedLoadOp(buf, indices, lane_mask(b, lanes, vw), zero, VectorType(f32, [vw]))
    ).results[0]


def store_lanes(
    b: LoopBuilder, v: SSAValue, buf: SSAValue, idx: Sequence[Value], lanes: int, vw: int
) -> None:
    """Store the first `lanes` lanes of v at buf[idx...] (a masked store for N tails)."""
    if lanes == vw:
        b.vstore(v, buf, idx)
        return
    indices = [b.index(i) for i in idx]
    b.insert(vector.MaskedStoreOp(buf, indices, lane_mask(b, lanes, vw), v))


@dataclass
class Epilogue:
    """What happens to an accumulator between the k loop and memory."""

    output: SSAValue
    residual: SSAValue | None
    activation: Activation | None
    vw: int

    def finish(
        self, b: LoopBuilder, acc: SSAValue, idx: Sequence[Value], lanes: int, bias: SSAValue | None
    ) -> None:
        v = acc if bias is None else b.addf(acc, bias)
        if self.residual is not None:
            v = b.addf(v, load_lanes(b, self.residual, idx, lanes, self.vw))
        if self.activation is not None:
            v = self.activation(b, v)
        store_lanes(b, v, self.output, idx, lanes, self.vw)


def micro_kernel(
    b: LoopBuilder,
    k_extent: int,
    mr: int,
    nvec: int,
    vw: int,
    load_a: LoadA,
    load_b: LoadB,
) -> list[list[SSAValue]]:
    """sum_k A[i, k] * B[k, j*VW:(j+1)*VW] for an mr x nvec block; returns acc[i][j]."""

    def step(b: LoopBuilder, k: SSAValue, accs: list[SSAValue]) -> list[SSAValue]:
        rows = [load_b(b, k, j) for j in range(nvec)]
        for i in range(mr):
            a = b.splat(load_a(b, k, i), vw)
            for j in range(nvec):
                accs[i * nvec + j] = b.fma(a, rows[j], accs[i * nvec + j])
        return accs

    def unrolled(b: LoopBuilder, k: SSAValue, *accs: SSAValue) -> list[SSAValue]:
        values = list(accs)
        for u in range(K_UNROLL):
            values = step(b, k if u == 0 else b.add(k, u), values)
        return values

    def single(b: LoopBuilder, k: SSAValue, *accs: SSAValue) -> list[SSAValue]:
        return step(b, k, list(accs))

    zero = b.splat(0.0, vw)
    accs: list[SSAValue] = [zero] * (mr * nvec)
    main = k_extent - k_extent % K_UNROLL
    if main:
        accs = b.for_range(0, main, K_UNROLL, unrolled, accs)
    if main != k_extent:
        accs = b.for_range(main, k_extent, 1, single, accs)
    return [accs[i * nvec : (i + 1) * nvec] for i in range(mr)]


def memref_shape(value: SSAValue) -> tuple[int, ...]:
    ty = value.type
    assert isinstance(ty, MemRefType)
    return tuple(ty.get_shape())


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def chunk_count(units: int, tiles: int, threads: int) -> int:
    """Split M into chunks when the other parallel dims give too few units for the threads."""
    want = 4 * max(threads, 1)
    if units >= want or tiles <= 1:
        return 1
    return min(tiles, ceil_div(want, units))


TileEmitter = Callable[[LoopBuilder, SSAValue, int], None]


def m_tile_loop(
    b: LoopBuilder, chunk: SSAValue, chunks: int, m: int, mr: int, emit_tile: TileEmitter
) -> None:
    """Walk the row tiles of one M chunk: full MR tiles in a loop, the M tail last (static)."""
    tiles = ceil_div(m, mr)
    full = m // mr
    per_chunk = ceil_div(tiles, chunks)
    if full:
        first = b.mul(chunk, per_chunk)
        last = b.min_index(b.add(first, per_chunk), full) if chunks > 1 else b.index(full)
        b.for_range(first, last, 1, lambda ib, t: emit_tile(ib, ib.mul(t, mr), mr))
    if m % mr:
        if chunks == 1:
            emit_tile(b, b.index(full * mr), m % mr)
        else:
            b.if_(
                b.cmp_index("eq", chunk, chunks - 1),
                lambda ib: emit_tile(ib, ib.index(full * mr), m % mr),
            )


def m_chunking(units: int, m: int, mr: int, threads: int) -> int:
    """Number of (non-empty) M chunks to add to `units` parallel work items."""
    tiles = ceil_div(m, mr)
    chunks = chunk_count(units, tiles, threads)
    return ceil_div(tiles, ceil_div(tiles, chunks))


def decode(b: LoopBuilder, flat: SSAValue, extents: Sequence[int]) -> list[SSAValue]:
    """Split a flat index into row-major coordinates over `extents` (outermost first)."""
    coords: list[SSAValue] = []
    rest = flat
    for extent in reversed(extents[1:]):
        coords.append(b.rem(rest, extent) if extent > 1 else b.index(0))
        rest = b.floordiv(rest, extent) if extent > 1 else rest
    coords.append(rest)
    return coords[::-1]
