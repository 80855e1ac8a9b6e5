"""Building blocks shared by the matmul and convolution lowerings.

- `micro_kernel`: an MR x (nvec x VW) block of C accumulated in registers (scf.for iter_args)
  with vector.fma; A elements are broadcast, B rows are vector loads (optionally prefetched
  ahead: `prefetch`, issue 16).
- `gemm_panel`: the loop nest of one parallel work unit (one NR-wide column panel, one M
  chunk): k blocks sized for L1 (B packed per block when needed), MR-row tiles inside.
- `Epilogue`: bias -> residual -> activation applied in registers, then the store; partial
  vectors (N tails) use masked loads/stores so that no access ever touches memory past the
  end of a buffer.
- small IR helpers the LoopBuilder lacks (alloca, if/else, activations, index decoding).
"""

from __future__ import annotations

import math as pymath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from xdsl.dialects import arith, func, llvm, math, memref, scf, vector
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    DenseArrayBase,
    IntegerAttr,
    MemRefType,
    StridedLayoutAttr,
    StringAttr,
    VectorType,
    f32,
    i1,
    i32,
    i64,
)
from xdsl.ir import Attribute, Block, Region, SSAValue
from xdsl.irdl import IRDLOperation

from ember.core.target import Target
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, Value
from ember.passes.conversion.kernel_to_loops.simd import PARALLEL_MIN_FLOPS

# Load one scalar A element (row i of the tile, reduction index k).
LoadA = Callable[[LoopBuilder, SSAValue, int], SSAValue]
# Load one vector of B (reduction index k, vector j of the tile row).
LoadB = Callable[[LoopBuilder, SSAValue, int], SSAValue]
Activation = Callable[[LoopBuilder, SSAValue], SSAValue]

# Independent accumulator chains needed to cover the FMA latency (4-5 cycles x 2 pipes).
MIN_ACCUMULATORS = 8

# Scratch (padded depthwise planes) must stay well inside a worker thread's stack.
SCRATCH_LIMIT_BYTES = 512 * 1024

# Reduction loops are unrolled by this much so that LLVM sees several independent FMA
# groups per iteration and the loop overhead stays off the critical path.
K_UNROLL = 4


def describe_kernel(fn: func.FuncOp, summary: str, flops: int) -> None:
    """Name what a kernel function computes, for profiles (see instrument-kernels)."""
    fn.attributes["ember.kernel_summary"] = StringAttr(summary)
    fn.attributes["ember.kernel_flops"] = IntegerAttr(flops, i64)


def epilogue_summary(op: IRDLOperation) -> str:
    """The fused epilogue of a conv/matmul as profile text, e.g. "+bias+res+relu"."""
    parts = [f"+{n}" for n in ("bias", "residual") if getattr(op, n) is not None]
    attr: StringAttr | None = op.activation  # type: ignore[attr-defined]
    if attr is not None:
        parts.append(f"+{attr.data}")
    return "".join(parts)


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
    params_attr: DenseArrayBase | None = op.activation_params  # type: ignore[attr-defined]
    params = [float(v) for v in params_attr.get_values()] if params_attr is not None else []
    return vector_activation(attr.data, params, op.name)


# Parameters each activation takes (the rest take none).
ACTIVATION_PARAM_COUNTS = {
    "clip": 2,  # (min, max)
    "leaky_relu": 1,  # (alpha,)
    "hard_sigmoid": 2,  # (alpha, beta)
    "elu": 1,
    "thresholded_relu": 1,
    "affine": 2,
    "scaled_tanh": 2,
}


def vector_activation(kind: str, params: Sequence[float], where: str) -> Activation:
    """`kind` (with its ACTIVATION_PARAM_COUNTS parameters) as a function on f32 vectors."""
    if kind in ACTIVATION_PARAM_COUNTS and len(params) != ACTIVATION_PARAM_COUNTS[kind]:
        raise ValueError(
            f"{where}: activation '{kind}' needs {ACTIVATION_PARAM_COUNTS.get(kind, 0)} "
            f"parameters, got {list(params)}"
        )
    p = [float(v) for v in params]

    def splat_like(b: LoopBuilder, value: float, like: SSAValue) -> SSAValue:
        shape, element = like.type.get_shape(), like.type.get_element_type()  # type: ignore[attr-defined]
        return b.splat(value, shape[0], element)

    def sigmoid(b: LoopBuilder, v: SSAValue) -> SSAValue:
        one = splat_like(b, 1.0, v)
        e = b.exp(b.insert(arith.NegfOp(v)).results[0])
        return b.divf(one, b.addf(one, e))

    def tanh(b: LoopBuilder, v: SSAValue) -> SSAValue:
        return b.insert(math.TanhOp(v)).results[0]

    def leaky(b: LoopBuilder, v: SSAValue) -> SSAValue:
        # max(x,0) + alpha*min(x,0): exact for any alpha, no vector compare/select needed.
        zero = splat_like(b, 0.0, v)
        return b.addf(b.maxf(v, zero), b.mulf(splat_like(b, p[0], v), b.minf(v, zero)))

    def gelu(b: LoopBuilder, v: SSAValue) -> SSAValue:
        scaled = b.mulf(v, splat_like(b, 1.0 / pymath.sqrt(2.0), v))
        erf = b.insert(math.ErfOp(scaled)).results[0]
        half_x = b.mulf(v, splat_like(b, 0.5, v))
        return b.mulf(half_x, b.addf(erf, splat_like(b, 1.0, v)))

    def gelu_tanh(b: LoopBuilder, v: SSAValue) -> SSAValue:
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in the order the graph computes it.
        cube = b.mulf(b.mulf(v, v), v)
        inner = b.addf(v, b.mulf(cube, splat_like(b, 0.044715, v)))
        curve = tanh(b, b.mulf(inner, splat_like(b, pymath.sqrt(2.0 / pymath.pi), v)))
        half_x = b.mulf(v, splat_like(b, 0.5, v))
        return b.mulf(half_x, b.addf(curve, splat_like(b, 1.0, v)))

    def hard_sigmoid(b: LoopBuilder, v: SSAValue) -> SSAValue:
        linear = b.addf(b.mulf(v, splat_like(b, p[0], v)), splat_like(b, p[1], v))
        return b.minf(b.maxf(linear, splat_like(b, 0.0, v)), splat_like(b, 1.0, v))

    def elu(b: LoopBuilder, v: SSAValue) -> SSAValue:
        # max(x,0) + alpha*(exp(min(x,0)) - 1): no compare/select, exact on both sides.
        zero, one = splat_like(b, 0.0, v), splat_like(b, 1.0, v)
        negative = b.subf(b.exp(b.minf(v, zero)), one)
        return b.addf(b.maxf(v, zero), b.mulf(splat_like(b, p[0], v), negative))

    def softsign(b: LoopBuilder, v: SSAValue) -> SSAValue:
        magnitude = b.insert(math.AbsFOp(v)).results[0]
        return b.divf(v, b.addf(splat_like(b, 1.0, v), magnitude))

    def softplus(b: LoopBuilder, v: SSAValue) -> SSAValue:
        # max(x,0) + log1p(exp(-|x|)): no overflow of exp for large x; log1p(d) as
        # log(u) * d / (u - 1), u = 1 + d, as elementwise_bodies' softplus computes it.
        magnitude = b.insert(math.AbsFOp(v)).results[0]
        decay = b.exp(b.insert(arith.NegfOp(magnitude)).results[0])
        one = splat_like(b, 1.0, v)
        u = b.addf(one, decay)
        log = b.insert(math.LogOp(u)).results[0]
        scaled = b.mulf(log, b.divf(decay, b.subf(u, one)))
        exact_one = b.insert(arith.CmpfOp(u, one, "oeq")).results[0]
        return b.addf(b.maxf(v, splat_like(b, 0.0, v)), b.select(exact_one, decay, scaled))

    def thresholded_relu(b: LoopBuilder, v: SSAValue) -> SSAValue:
        above = b.insert(arith.CmpfOp(v, splat_like(b, p[0], v), "ogt")).results[0]
        return b.select(above, v, splat_like(b, 0.0, v))

    def affine(b: LoopBuilder, v: SSAValue) -> SSAValue:
        return b.addf(b.mulf(v, splat_like(b, p[0], v)), splat_like(b, p[1], v))

    def scaled_tanh(b: LoopBuilder, v: SSAValue) -> SSAValue:
        return b.mulf(splat_like(b, p[0], v), tanh(b, b.mulf(v, splat_like(b, p[1], v))))

    def relu(b: LoopBuilder, v: SSAValue) -> SSAValue:
        return b.maxf(v, splat_like(b, 0.0, v))

    def clip(b: LoopBuilder, v: SSAValue) -> SSAValue:
        return b.minf(b.maxf(v, splat_like(b, p[0], v)), splat_like(b, p[1], v))

    table: dict[str, Activation] = {
        "relu": relu,
        "clip": clip,
        "leaky_relu": leaky,
        "sigmoid": sigmoid,
        "tanh": tanh,
        "gelu": gelu,
        "gelu_tanh": gelu_tanh,
        "hard_sigmoid": hard_sigmoid,
        "elu": elu,
        "softsign": softsign,
        "softplus": softplus,
        "thresholded_relu": thresholded_relu,
        "affine": affine,
        "scaled_tanh": scaled_tanh,
    }
    if kind not in table:
        raise ValueError(f"{where}: unsupported activation '{kind}'")
    return table[kind]


def lane_mask(b: LoopBuilder, lanes: Value, vw: int) -> SSAValue:
    return b.insert(vector.CreateMaskOp([b.index(lanes)], VectorType(i1, [vw]))).results[0]


def load_lanes(
    b: LoopBuilder, buf: SSAValue, idx: Sequence[Value], lanes: Value, vw: int
) -> SSAValue:
    """A vector of buf[idx...] whose lanes >= `lanes` are zero and never touch memory."""
    if isinstance(lanes, int) and lanes == vw:
        return b.vload(buf, idx, vw)
    indices = [b.index(i) for i in idx]
    element = buf.type.get_element_type()  # type: ignore[attr-defined]
    zero = b.splat(0.0, vw, element)
    return b.insert(
        vector.MaskedLoadOp(buf, indices, lane_mask(b, lanes, vw), zero, VectorType(element, [vw]))
    ).results[0]


def store_lanes(
    b: LoopBuilder, v: SSAValue, buf: SSAValue, idx: Sequence[Value], lanes: Value, vw: int
) -> None:
    """Store the first `lanes` lanes of v at buf[idx...] (a masked store for N tails)."""
    if isinstance(lanes, int) and lanes == vw:
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

    def addends(
        self,
        b: LoopBuilder,
        acc: SSAValue,
        idx: Sequence[Value],
        lanes: Value,
        bias: SSAValue | None,
    ) -> SSAValue:
        v = acc if bias is None else b.addf(acc, bias)
        if self.residual is not None:
            v = b.addf(v, load_lanes(b, self.residual, idx, lanes, self.vw))
        return v

    def finish(
        self,
        b: LoopBuilder,
        acc: SSAValue,
        idx: Sequence[Value],
        lanes: Value,
        bias: SSAValue | None,
    ) -> None:
        v = self.addends(b, acc, idx, lanes, bias)
        if self.activation is not None:
            v = self.activation(b, v)
        store_lanes(b, v, self.output, idx, lanes, self.vw)


def _span(b: LoopBuilder, lo: Value, hi: Value, multiple: int) -> Value:
    """lo + (hi - lo) rounded down to a multiple of `multiple` (folded when static)."""
    if isinstance(lo, int) and isinstance(hi, int):
        return lo + (hi - lo) // multiple * multiple
    extent = b.sub(hi, lo)
    return b.add(lo, b.sub(extent, b.rem(extent, multiple)))


def micro_kernel(
    b: LoopBuilder,
    k_lo: Value,
    k_hi: Value,
    init: list[list[SSAValue]],
    vw: int,
    load_a: LoadA,
    load_b: LoadB,
    prefetch_b: Callable[[LoopBuilder, SSAValue], None] | None = None,
) -> list[list[SSAValue]]:
    """init[i][j] + sum_{k_lo<=k<k_hi} A[i, k] * B[k, j*VW:(j+1)*VW]; returns acc[i][j].
    `prefetch_b(b, k)`, if given, runs once per K_UNROLL steps of the main loop."""
    mr, nvec = len(init), len(init[0])

    tile = mr * nvec
    # Small tiles (GEMV-like M=1) would be bound by the FMA latency of their few accumulator
    # chains: give each unrolled k step its own accumulator set and sum them at the end.
    sets = min(K_UNROLL, ceil_div(MIN_ACCUMULATORS, tile))

    def step(b: LoopBuilder, k: SSAValue, accs: list[SSAValue], base: int) -> None:
        rows = [load_b(b, k, j) for j in range(nvec)]
        for i in range(mr):
            a = b.splat(load_a(b, k, i), vw)
            for j in range(nvec):
                accs[base + i * nvec + j] = b.fma(a, rows[j], accs[base + i * nvec + j])

    def unrolled(b: LoopBuilder, k: SSAValue, *accs: SSAValue) -> list[SSAValue]:
        values = list(accs)
        if prefetch_b is not None:
            prefetch_b(b, k)
        for u in range(K_UNROLL):
            step(b, k if u == 0 else b.add(k, u), values, (u % sets) * tile)
        return values

    def single(b: LoopBuilder, k: SSAValue, *accs: SSAValue) -> list[SSAValue]:
        values = list(accs)
        step(b, k, values, 0)
        return values

    accs = [v for row in init for v in row]
    main = _span(b, k_lo, k_hi, K_UNROLL)
    static = isinstance(main, int) and isinstance(k_lo, int) and isinstance(k_hi, int)
    if not static or main != k_lo:
        zero = b.splat(0.0, vw, accs[0].type.get_element_type())  # type: ignore[attr-defined]
        accs = b.for_range(k_lo, main, K_UNROLL, unrolled, accs + [zero] * (tile * (sets - 1)))
        for extra in range(1, sets):
            accs[:tile] = [b.addf(x, y) for x, y in zip(accs[:tile], accs[extra * tile :][:tile])]
        accs = accs[:tile]
    if not static or main != k_hi:
        accs = b.for_range(main, k_hi, 1, single, accs)
    return [accs[i * nvec : (i + 1) * nvec] for i in range(mr)]


# Granule of software prefetches: the line of x86 and most Arm cores (where lines are
# 128 bytes, every other prefetch is redundant, not wrong).
CACHE_LINE_BYTES = 64

# B rows of one k block should stay in L1 while all the MR-row tiles of a unit sweep them.
L1_BLOCK_BYTES = 16 * 1024


def k_block(k_extent: int, nr: int, granule: int = K_UNROLL, itemsize: int = 4) -> int:
    """A balanced k-block size, a multiple of `granule`, whose NR-wide B block fits in
    L1_BLOCK_BYTES (or one granule when a single granule is already larger)."""
    limit = max(granule, L1_BLOCK_BYTES // (nr * itemsize) // granule * granule)
    blocks = ceil_div(k_extent, limit)
    return min(k_extent, ceil_div(ceil_div(k_extent, blocks), granule) * granule)


@dataclass
class GemmPanel:
    """C[rows of one M chunk, one column panel] = A @ B (+ epilogue), for gemm_panel().

    `load_a(b, m0, k, i)` reads A[m0 + i, k]; `load_b(b, k, j, k_lo)` reads vector j of B
    row k while the k block starting at k_lo is current; `pack_block(b, k_lo, k_hi)` (if
    any) runs before each k block, to pack its B rows into scratch. `out_index(b, m0, i, j)`
    names the output element of row i, vector j; `bias(b, m0, i, j)` is the bias to add.
    `prefetch_b(b, k)` (if any) runs once per unrolled k step of the micro-kernel, to ask
    for B rows ahead of their use (matmul.py: a packed B, one k block ahead).
    """

    k_extent: int
    kc: int
    m: Value  # an index value: rows known at run time (m_tile_loop)
    mr: int
    cols: int
    vw: int
    epilogue: Epilogue
    load_a: Callable[[LoopBuilder, SSAValue, SSAValue, int], SSAValue]
    load_b: Callable[[LoopBuilder, SSAValue, int, Value], SSAValue]
    out_index: Callable[[LoopBuilder, SSAValue, int, int], list[Value]]
    bias: Callable[[LoopBuilder, SSAValue, int, int], SSAValue | None]
    pack_block: Callable[[LoopBuilder, Value, Value], None] | None = None
    prefetch_b: Callable[[LoopBuilder, SSAValue], None] | None = None
    # Lanes of vector j that reach memory, when the panel's width is known at run time only
    # (conv_extents.py: the last column panel of a `?`-sized output); else from `cols`.
    lanes_of: Callable[[LoopBuilder, int], Value] | None = None


def gemm_panel(b: LoopBuilder, g: GemmPanel, chunk: SSAValue, chunks: Value) -> None:
    """The k-blocked loop nest of one unit: k blocks outside, MR-row tiles inside."""
    gemm_panels(b, [g], chunk, chunks)


def gemm_panels(
    b: LoopBuilder, panels: Sequence[GemmPanel], chunk: SSAValue, chunks: Value
) -> None:
    """The k-blocked loop nest of one unit over one or more column panels.

    k blocks outside, MR-row tiles inside, and the panels innermost: every panel's block is
    packed first, then each A tile (MR rows of one k block) is used for all the panels while
    it is in L1. With several panels the weights (A) are streamed once per unit instead of
    once per panel, which matters when A is much larger than B (late conv layers).

    With several k blocks, C itself holds the partial sums: the first block starts from
    bias + residual (so an output that aliases the residual is read before it is
    overwritten), later blocks from C, and the last one applies the activation.
    """
    first_panel = panels[0]
    k_extent, kc, m, mr, vw = (
        first_panel.k_extent,
        first_panel.kc,
        first_panel.m,
        first_panel.mr,
        first_panel.vw,
    )
    assert all((g.k_extent, g.kc, g.m, g.mr, g.vw) == (k_extent, kc, m, mr, vw) for g in panels)
    blocks = ceil_div(k_extent, kc)

    def tile(
        b: LoopBuilder,
        g: GemmPanel,
        m0: SSAValue,
        rows: int,
        k_lo: Value,
        k_hi: Value,
        kb: SSAValue | None,
        valid: SSAValue | None,
        first_optional: int,
    ) -> None:
        epi = g.epilogue
        nv = ceil_div(g.cols, vw)
        if g.lanes_of is not None:
            lanes = [g.lanes_of(b, j) for j in range(nv)]
        else:
            lanes = [min(vw, g.cols - j * vw) for j in range(nv)]
        # Row i is read and written at bases[i] + i: m0 + i, except past `valid` rows of a
        # rounded-up remainder tile, where it is clamped to M - 1 (reads stay in bounds; the
        # row's result is never stored).
        bases = [m0] * rows
        if valid is not None:
            last_row = b.sub(b.index(g.m), 1)
            for i in range(first_optional, rows):
                bases[i] = b.sub(b.min_index(b.add(m0, i), last_row), i)
        idx = [[g.out_index(b, bases[i], i, j) for j in range(nv)] for i in range(rows)]
        bias = [[g.bias(b, bases[i], i, j) for j in range(nv)] for i in range(rows)]

        def stored(b: LoopBuilder, i: int, store: Callable[[LoopBuilder], None]) -> None:
            if valid is None or i < first_optional:
                store(b)
            else:
                b.if_(b.cmp_index("slt", b.index(i), valid), store)

        def load_a(b: LoopBuilder, k: SSAValue, i: int) -> SSAValue:
            return g.load_a(b, bases[i], k, i)

        def load_b(b: LoopBuilder, k: SSAValue, j: int) -> SSAValue:
            return g.load_b(b, k, j, k_lo)

        zero = b.splat(0.0, vw, epi.output.type.get_element_type())  # type: ignore[attr-defined]
        if kb is None:
            acc = micro_kernel(
                b, k_lo, k_hi, [[zero] * nv] * rows, vw, load_a, load_b, g.prefetch_b
            )
            for i in range(rows):

                def finish_row(b: LoopBuilder, i: int = i) -> None:
                    for j in range(nv):
                        epi.finish(b, acc[i][j], idx[i][j], lanes[j], bias[i][j])

                stored(b, i, finish_row)
            return
        first = b.cmp_index("eq", kb, 0)
        init = [
            [
                b.select(
                    first,
                    epi.addends(b, zero, idx[i][j], lanes[j], bias[i][j]),
                    load_lanes(b, epi.output, idx[i][j], lanes[j], vw),
                )
                for j in range(nv)
            ]
            for i in range(rows)
        ]
        acc = micro_kernel(b, k_lo, k_hi, init, vw, load_a, load_b, g.prefetch_b)
        last = b.cmp_index("eq", kb, blocks - 1)
        for i in range(rows):

            def store_row(b: LoopBuilder, i: int = i) -> None:
                for j in range(nv):
                    v = acc[i][j]
                    if epi.activation is not None:
                        v = b.select(last, epi.activation(b, v), v)
                    store_lanes(b, v, epi.output, idx[i][j], lanes[j], vw)

            stored(b, i, store_row)

    def sweep(b: LoopBuilder, k_lo: Value, k_hi: Value, kb: SSAValue | None) -> None:
        for g in panels:
            if g.pack_block is not None:
                g.pack_block(b, k_lo, k_hi)

        def tiles(
            b: LoopBuilder,
            m0: SSAValue,
            rows: int,
            valid: SSAValue | None = None,
            first_optional: int = 0,
        ) -> None:
            for g in panels:
                tile(b, g, m0, rows, k_lo, k_hi, kb, valid, first_optional)

        if isinstance(m, int) and isinstance(chunks, int):
            m_tile_loop(b, chunk, chunks, m, mr, tiles)
        else:
            runtime_m_tile_loop(b, chunk, chunks, b.index(m), mr, tiles)

    if blocks == 1:
        sweep(b, 0, k_extent, None)
        return

    def k_step(b: LoopBuilder, kb: SSAValue) -> None:
        k_lo = b.mul(kb, kc)
        sweep(b, k_lo, b.min_index(b.add(k_lo, kc), k_extent), kb)

    b.for_range(0, blocks, 1, k_step)


def prefetch(b: LoopBuilder, flat: SSAValue, offset: SSAValue) -> None:
    """Ask for the cache line holding flat[offset] (a 1-D memref; offset in bounds) to be
    brought into L1 ahead of its use (llvm.prefetch: read, high locality, data)."""
    element = flat.type.get_element_type()  # type: ignore[attr-defined]
    line = MemRefType(element, [1], StridedLayoutAttr([1], None))
    cast = memref.ReinterpretCastOp(flat, [offset], [], [], [DYNAMIC_INDEX], [1], [1], line)
    address = b.insert(cast).results[0]
    flags = [b.const(v, i32) for v in (0, 3, 1)]  # read, keep in all levels, data cache
    b.insert(llvm.CallIntrinsicOp("llvm.prefetch.p0", [address, *flags], []))


def pack_rows(
    b: LoopBuilder,
    panel: SSAValue,
    k_lo: Value,
    k_hi: Value,
    cols: int,
    vw: int,
    row: Callable[[LoopBuilder, SSAValue, int, int], SSAValue],
) -> None:
    """panel[k - k_lo, :] = B row k (`row(b, k, j, lanes)` loads vector j, extra lanes zero)."""
    nv = ceil_div(cols, vw)

    def copy(b: LoopBuilder, k: SSAValue) -> None:
        local = b.sub(k, k_lo)
        for j in range(nv):
            b.vstore(row(b, k, j, min(vw, cols - j * vw)), panel, [local, j * vw])

    b.for_range(k_lo, k_hi, 1, copy)


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


class RemainderTileEmitter(Protocol):
    """Emit one tile of `rows` rows at m0; with `valid` (an index value), only its first
    `valid` rows exist: rows from `first_optional` on are stored only below `valid` and read
    row M - 1 where they would pass M (their results are discarded)."""

    def __call__(
        self,
        b: LoopBuilder,
        m0: SSAValue,
        rows: int,
        valid: SSAValue | None = None,
        first_optional: int = 0,
    ) -> None: ...


def m_tile_loop(
    b: LoopBuilder, chunk: SSAValue, chunks: int, m: int, mr: int, emit_tile: TileEmitter
) -> None:
    """Walk the row tiles of one M chunk: full MR tiles in a loop, the M tail last (static
    M and chunk count; `runtime_m_tile_loop` when either is known at run time only)."""
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


def remainder_heights(mr: int) -> list[int]:
    """Tile heights that cover an M remainder of 1..MR-1 rows at run time: 1, 2, 3 and the
    even heights up to MR (and MR). A remainder runs as ONE tile, the smallest height that
    holds it, so an odd remainder from 5 on computes one extra row (on row M - 1, not
    stored). MR = 14: 9 heights instead of 13 (rows 1-4, 5-6, 7-8, 9-10, 11-12, 13)."""
    return sorted({h for h in range(1, mr + 1) if h <= 3 or h % 2 == 0 or h == mr})


def runtime_m_tile_loop(
    b: LoopBuilder,
    chunk: SSAValue,
    chunks: Value,
    m: SSAValue,
    mr: int,
    emit_tile: RemainderTileEmitter,
) -> None:
    """m_tile_loop for M rows known at run time: the chunk's full MR tiles in a loop with
    run-time bounds, then (in the last chunk) the M % MR remaining rows as ONE tile of the
    smallest of `remainder_heights` that holds them, its rows past M computed and not stored.

    Measured (znver5, MR = 14, [M, 768] @ [768, 768], 1 thread, benchmarks/runtime_extents.py;
    docs/performance.md): each extra tile of a remainder is a pass over B's block costing
    about 2.4 rows, each extra computed row about one, so tiles by the remainder's bits (8,
    4, 2, 1) were up to 1.55x the static kernel at M < 14 and 1.04x at M = 61, tiles of 1,
    2, 4, 8 and 14 rounded up 1.42x at M = 5 and 9 and 1.045x at 61; one tile per height
    (MR - 1 of them) was most of the LLVM compile time of compile-once programs."""
    full = b.floordiv(m, mr)
    if isinstance(chunks, int) and chunks == 1:
        first: Value = 0
        last: Value = full
    else:
        tiles = b.floordiv(b.add(m, mr - 1), mr)
        per_chunk = b.floordiv(b.add(tiles, b.sub(chunks, 1)), chunks)
        first = b.mul(chunk, per_chunk)
        last = b.min_index(b.add(first, per_chunk), full)
    b.for_range(first, last, 1, lambda ib, t: emit_tile(ib, ib.mul(t, mr), mr))
    if mr == 1:
        return

    def remainder(rb: LoopBuilder) -> None:
        rest = rb.rem(m, mr)
        start = rb.mul(full, mr)
        smaller = 0
        for height in remainder_heights(mr):
            # This height takes the remainders smaller + 1 .. height; its rows from
            # `smaller` + 1 on exist only for some of them.
            taken = rb.insert(
                arith.AndIOp(rb.cmp_index("sgt", rest, smaller), rb.cmp_index("sle", rest, height))
            ).results[0]
            if height == smaller + 1:
                rb.if_(taken, lambda ib, h=height: emit_tile(ib, start, h))
            else:
                rb.if_(
                    taken,
                    lambda ib, h=height, lo=smaller: emit_tile(ib, start, h, rest, lo + 1),
                )
            smaller = height

    if isinstance(chunks, int) and chunks == 1:
        remainder(b)
    else:
        b.if_(b.cmp_index("eq", chunk, b.sub(chunks, 1)), remainder)


def runtime_m_chunking(b: LoopBuilder, units: int, m: SSAValue, mr: int, threads: int) -> Value:
    """m_chunking for M known at run time: 1 (static) when `units` already gives every
    thread four units, else the run-time count m_chunking would compute for M."""
    want = 4 * max(threads, 1)
    if units >= want:
        return 1
    tiles = b.floordiv(b.add(m, mr - 1), mr)
    chunks = b.max_index(b.min_index(tiles, ceil_div(want, units)), 1)
    per_chunk = b.floordiv(b.add(tiles, b.sub(chunks, 1)), chunks)
    per_chunk = b.max_index(per_chunk, 1)
    return b.max_index(b.floordiv(b.add(tiles, b.sub(per_chunk, 1)), per_chunk), 1)


def runtime_work_units(
    b: LoopBuilder,
    target: Target,
    rows: SSAValue,
    flops_per_row: int,
    units: Value,
    unit: Callable[..., None],
) -> None:
    """simd.work_units for a kernel of `rows` x `flops_per_row` flops, rows known at run
    time: where some row counts fall below PARALLEL_MIN_FLOPS on a multi-thread target, a
    run-time branch picks the calling thread (scf.for) or the team (scf.parallel), the
    units themselves emitted once for each."""
    if target.threads <= 1 or flops_per_row >= PARALLEL_MIN_FLOPS:
        b.parallel_range(0, units, 1, unit)
        return
    small = b.cmp_index("slt", rows, ceil_div(PARALLEL_MIN_FLOPS, flops_per_row))
    if_else(
        b,
        small,
        lambda sb: sb.for_range(0, units, 1, unit),
        lambda pb: pb.parallel_range(0, units, 1, unit),
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
