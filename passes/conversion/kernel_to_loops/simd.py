"""Shared machinery of the memory-bound kernels (elementwise, reduce, softmax, layer_norm).

Every one of them is a few sweeps over rows of a buffer, so they share: reshaping views
(collapsed dims), loop nests that become `scf.parallel` when the work is worth two threads, a
row `sweep` (unrolled SIMD main loop with vector accumulators, then a scalar tail) and
`column_blocks` (register blocks of vector columns for reductions along a strided axis).
"""

from __future__ import annotations

import math as pymath
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xdsl.dialects import arith, memref
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    AnyFloat,
    IntegerType,
    MemRefType,
    VectorType,
    f32,
)
from xdsl.ir import Attribute, SSAValue

from ember.core.target import Target
from ember.dialects.extents import memref_type
from ember.dialects.graph import shape_of
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, Value
from ember.passes.conversion.kernel_to_loops.flat_access import PARALLEL_MIN_ELEMENTS

# A compute-bound kernel (matmul, conv) of fewer flops than this (~5 us of one core) finishes
# before a parallel region's second thread is under way, more so on a loaded machine: it runs
# its work units on the calling thread. Measured (2 cores, loaded): the speech models' per-step
# classifier matmul 8x32 @ 32x1 took 15 us at 2 threads, 1 us at 1; the VAD model's convs of
# 0.05-0.13 MFLOP took 54-57 us each on the team against 0.7-2.7 us on one thread; a lone 3x3
# conv of 0.3 MFLOP 68 us against 14 (docs/performance.md, "The Python cost of one call").
PARALLEL_MIN_FLOPS = 1 << 19


def want_threads(target: Target, elements: int, trip_count: int) -> bool:
    return target.threads > 1 and elements >= PARALLEL_MIN_ELEMENTS and trip_count >= 2


def work_units(
    b: LoopBuilder, target: Target, flops: int, units: Value, unit: Callable[..., None]
) -> None:
    """`units` independent work units of a kernel of `flops`: scf.parallel, or below
    PARALLEL_MIN_FLOPS (on a multi-thread target) an scf.for on the calling thread. The units
    themselves are the same either way."""
    if target.threads > 1 and flops < PARALLEL_MIN_FLOPS:
        b.for_range(0, units, 1, unit)
    else:
        b.parallel_range(0, units, 1, unit)


def accumulator_unroll(target: Target) -> int:
    """Independent accumulators per sweep: enough to hide FP-add latency, few enough to stay
    in registers next to the loaded values (4 with 16 registers, 8 with 32)."""
    return max(2, target.vector_registers // 4)


# -- views ---------------------------------------------------------------------------------------
def view(b: LoopBuilder, buffer: SSAValue, shape: Sequence[int]) -> SSAValue:
    """`buffer` seen with another static row-major shape of the same element count (no copy)."""
    shape = tuple(shape)
    if shape_of(buffer) == shape:
        return buffer
    assert pymath.prod(shape) == pymath.prod(shape_of(buffer)), (shape, shape_of(buffer))
    strides = [pymath.prod(shape[d + 1 :]) for d in range(len(shape))]
    element = buffer.type.get_element_type()  # type: ignore[attr-defined]
    cast = memref.ReinterpretCastOp(
        buffer, [], [], [], [0], shape, strides, memref_type(element, shape)
    )
    return b.insert(cast).results[0]


def runtime_flat_view(b: LoopBuilder, buffer: SSAValue, count: SSAValue) -> SSAValue:
    """`buffer` (row-major, `?` dims) seen as `memref<?xT>` of its `count` elements."""
    element = buffer.type.get_element_type()  # type: ignore[attr-defined]
    flat = MemRefType(element, [DYNAMIC_INDEX])
    cast = memref.ReinterpretCastOp(buffer, [], [count], [], [0], [DYNAMIC_INDEX], [1], flat)
    return b.insert(cast).results[0]


def runtime_rows_view(b: LoopBuilder, buffer: SSAValue, rows: SSAValue, row: Value) -> SSAValue:
    """`buffer` (row-major, `?` dims, its last dim `row` long) seen as `memref<?x{row}xT>`
    (`memref<?x?xT>` when `row` is known at run time only)."""
    element = buffer.type.get_element_type()  # type: ignore[attr-defined]
    if not isinstance(row, int):
        matrix = MemRefType(element, [DYNAMIC_INDEX, DYNAMIC_INDEX])
        cast = memref.ReinterpretCastOp(
            buffer,
            [],
            [rows, row],
            [row],
            [0],
            [DYNAMIC_INDEX, DYNAMIC_INDEX],
            [DYNAMIC_INDEX, 1],
            matrix,
        )
        return b.insert(cast).results[0]
    matrix = MemRefType(element, [DYNAMIC_INDEX, row])
    cast = memref.ReinterpretCastOp(
        buffer, [], [rows], [], [0], [DYNAMIC_INDEX, row], [row, 1], matrix
    )
    return b.insert(cast).results[0]


def load(b: LoopBuilder, buffer: SSAValue, indices: Sequence[Value], width: int) -> SSAValue:
    """A vector<width> starting at `indices` (contiguous along the last dim), or a scalar."""
    return b.vload(buffer, indices, width) if width > 1 else b.load(buffer, indices)


def store(b: LoopBuilder, value: SSAValue, buffer: SSAValue, indices: Sequence[Value]) -> None:
    if isinstance(value.type, VectorType):
        b.vstore(value, buffer, indices)
    else:
        b.store(value, buffer, indices)


def element_and_width(value: SSAValue) -> tuple[Attribute, int]:
    """(element type, lanes) of a scalar or vector value."""
    if isinstance(value.type, VectorType):
        return value.type.get_element_type(), value.type.get_shape()[0]
    return value.type, 1


def broadcast(b: LoopBuilder, scalar: SSAValue, width: int) -> SSAValue:
    return b.splat(scalar, width) if width > 1 else scalar


def compute_type(element: Attribute) -> Attribute:
    """The type a kernel computes `element` values in: float32 for the 16-bit floats (float32
    holds each of their values exactly), the element type itself otherwise."""
    if isinstance(element, AnyFloat) and element.bitwidth == 16:
        return f32
    return element


def convert_float(b: LoopBuilder, value: SSAValue, element: Attribute) -> SSAValue:
    """`value` (scalar or vector) as float type `element`: widened exactly (extf) or rounded
    to nearest even (truncf); unchanged when it already has that type."""
    have, width = element_and_width(value)
    if have == element:
        return value
    target = VectorType(element, [width]) if isinstance(value.type, VectorType) else element
    widen = have.bitwidth < element.bitwidth  # type: ignore[attr-defined]
    op = arith.ExtFOp(value, target) if widen else arith.TruncFOp(value, target)
    return b.insert(op).results[0]


def round_to(b: LoopBuilder, value: SSAValue, element: Attribute) -> SSAValue:
    """`value`, computed in a wider float type, rounded to `element` and widened back: the
    result an op whose output is stored as `element` hands the next op."""
    narrow = convert_float(b, value, element)
    return convert_float(b, narrow, element_and_width(value)[0])


def muladd(b: LoopBuilder, a: SSAValue, x: SSAValue, c: SSAValue) -> SSAValue:
    """a * x + c: vector.fma on vectors; on scalars mul + add, which the `contract` flag fuses."""
    if isinstance(a.type, VectorType):
        return b.fma(a, x, c)
    return b.addf(b.mulf(a, x), c)


# -- accumulation ----------------------------------------------------------------------------------
_FLOAT_COMBINE = {
    "sum": (arith.AddfOp, "add"),
    "prod": (arith.MulfOp, "mul"),
    # maximumf/minimumf propagate NaN like numpy and ONNX Reduce*/Softmax do.
    "max": (arith.MaximumfOp, "maximumf"),
    "min": (arith.MinimumfOp, "minimumf"),
}
_INT_COMBINE = {
    "sum": (arith.AddiOp, "add"),
    "prod": (arith.MuliOp, "mul"),
    "max": (arith.MaxSIOp, "maxsi"),
    "min": (arith.MinSIOp, "minsi"),
}
# Booleans (i1) order false < true only as unsigned numbers: max is `or`, min is `and`.
_BOOL_COMBINE = {
    **_INT_COMBINE,
    "max": (arith.MaxUIOp, "maxui"),
    "min": (arith.MinUIOp, "minui"),
}


@dataclass(frozen=True)
class Monoid:
    """An associative fold with its identity; works on scalars and vectors of `type` alike."""

    kind: str  # sum | prod | max | min
    type: Attribute

    def __post_init__(self) -> None:
        if not isinstance(self.type, AnyFloat | IntegerType):
            raise NotImplementedError(f"reduction over element type {self.type}")
        if self.kind not in _FLOAT_COMBINE:
            raise ValueError(f"unknown reduction kind '{self.kind}'")

    @property
    def is_float(self) -> bool:
        return isinstance(self.type, AnyFloat)

    def identity(self) -> float | int:
        if self.kind == "sum":
            return 0
        if self.kind == "prod":
            return 1
        if self.is_float:
            return -pymath.inf if self.kind == "max" else pymath.inf
        bits = self.type.width.data  # type: ignore[attr-defined]
        if bits == 1:
            return 0 if self.kind == "max" else -1  # -1: the all-ones i1, true
        return -(2 ** (bits - 1)) if self.kind == "max" else 2 ** (bits - 1) - 1

    def init(self, b: LoopBuilder, width: int) -> SSAValue:
        if width > 1:
            return b.splat(self.identity(), width, self.type)
        return b.const(self.identity(), self.type)

    @property
    def _combining(self) -> tuple[type, str]:
        if self.is_float:
            return _FLOAT_COMBINE[self.kind]
        if self.type.width.data == 1:  # type: ignore[attr-defined]
            return _BOOL_COMBINE[self.kind]
        return _INT_COMBINE[self.kind]

    def combine(self, b: LoopBuilder, x: SSAValue, y: SSAValue) -> SSAValue:
        return b.insert(self._combining[0](x, y)).results[0]

    def horizontal(self, b: LoopBuilder, v: SSAValue) -> SSAValue:
        return b.reduce(self._combining[1], v)

    def tree(self, b: LoopBuilder, values: Sequence[SSAValue]) -> SSAValue:
        """Pairwise combine: a shallow dependency chain and better rounding than a linear fold."""
        values = list(values)
        while len(values) > 1:
            paired = [self.combine(b, x, y) for x, y in zip(values[::2], values[1::2])]
            values = paired + ([values[-1]] if len(values) % 2 else [])
        return values[0]


def extremum(b: LoopBuilder, kind: str, values: Sequence[SSAValue]) -> SSAValue:
    """max (`kind` "max") or min of float `values`, NaN if any of them is NaN: the same as
    folding them with arith.maximumf/minimumf, built cheaper for many values. A chain of
    ordered compare+selects (NaN-ignoring: one vmaxps per value on x86) finds the extremum,
    one unordered compare per pair of values finds a NaN; llvm.maximum would cost
    vmaxps + vcmpunordps + blend per value."""
    predicate = {"max": "ogt", "min": "olt"}[kind]
    best = values[0]
    for v in values[1:]:
        beats = b.insert(arith.CmpfOp(v, best, predicate)).results[0]
        best = b.select(beats, v, best)
    if len(values) == 1:
        return best
    found = None
    for i in range(0, len(values), 2):
        pair = values[i], values[min(i + 1, len(values) - 1)]
        nan = b.insert(arith.CmpfOp(*pair, "uno")).results[0]
        found = nan if found is None else b.insert(arith.OrIOp(found, nan)).results[0]
    assert found is not None
    shape = best.type.get_shape() if isinstance(best.type, VectorType) else ()
    element = best.type.get_element_type() if isinstance(best.type, VectorType) else best.type
    quiet_nan = b.splat(pymath.nan, shape[0], element) if shape else b.const(pymath.nan, element)
    return b.select(found, quiet_nan, best)


# -- loop nests ----------------------------------------------------------------------------------
NestBody = Callable[[LoopBuilder, list[SSAValue], list[SSAValue]], Sequence[SSAValue] | None]


def for_nest(
    b: LoopBuilder, dims: Sequence[int], body: NestBody, iter_args: Sequence[SSAValue] = ()
) -> list[SSAValue]:
    """Nested scf.for over `dims` (row-major); `body(b, indices, carried)` returns the next
    carried values, which thread through every level."""

    def level(lb: LoopBuilder, k: int, indices: list[SSAValue], carried: list[SSAValue]):
        if k == len(dims):
            return list(body(lb, indices, carried) or [])
        return lb.for_range(
            0,
            dims[k],
            1,
            lambda ib, i, *c: level(ib, k + 1, [*indices, i], list(c)),
            carried,
        )

    return level(b, 0, [], list(iter_args))


def delinearize(b: LoopBuilder, flat: SSAValue, dims: Sequence[int]) -> list[SSAValue]:
    indices: list[SSAValue] = []
    rest = flat
    for d in reversed(range(len(dims))):
        if d == 0:
            indices.append(rest)
        else:
            indices.append(b.rem(rest, dims[d]))
            rest = b.floordiv(rest, dims[d])
    return indices[::-1]


def for_each_index(
    b: LoopBuilder,
    dims: Sequence[int],
    body: Callable[[LoopBuilder, list[SSAValue]], None],
    parallel: bool,
) -> None:
    """Runs `body(b, indices)` over the index space `dims`: nested scf.for, or one flat
    scf.parallel (indices recovered by div/rem, cheap next to the row of work each carries)."""
    if parallel:
        total = pymath.prod(dims)
        b.parallel_range(0, total, 1, lambda ib, i: body(ib, delinearize(ib, i, dims)))
    else:
        for_nest(b, dims, lambda ib, idx, _: body(ib, idx))


def split_flat(
    b: LoopBuilder,
    n: int,
    width: int,
    target: Target,
    row: Callable[[LoopBuilder, Value, Value], None],
) -> None:
    """row(b, lo, hi) over [0, n) of one flat row: SIMD-aligned chunks, a few per thread to
    even out the load, as a scf.parallel when the row is worth two threads."""
    chunk = -(-n // (4 * max(target.threads, 1)))
    chunk = -(-chunk // (16 * width)) * 16 * width
    if want_threads(target, n, -(-n // chunk)):
        b.parallel_range(0, n, chunk, lambda rb, c: row(rb, c, rb.min_index(rb.add(c, chunk), n)))
    else:
        row(b, 0, n)


def split_flat_runtime(
    b: LoopBuilder,
    n: SSAValue,
    width: int,
    target: Target,
    row: Callable[[LoopBuilder, Value, Value], None],
) -> None:
    """`split_flat` for a row of n elements known at run time: on a multi-thread target, a
    scf.parallel over chunks of about n / (4 x threads) elements (multiples of 16 vectors),
    a single chunk (the calling thread) below PARALLEL_MIN_ELEMENTS."""
    if target.threads <= 1:
        row(b, 0, n)
        return
    granule = 16 * width
    per_thread = b.floordiv(b.add(n, 4 * target.threads - 1), 4 * target.threads)
    chunk = b.mul(b.floordiv(b.add(per_thread, granule - 1), granule), granule)
    small = b.cmp_index("slt", n, PARALLEL_MIN_ELEMENTS)
    chunk = b.max_index(b.select(small, n, chunk), 1)
    b.parallel_range(0, n, chunk, lambda rb, c: row(rb, c, rb.min_index(rb.add(c, chunk), n)))


def runtime_product(b: LoopBuilder, sizes: Sequence[Value]) -> Value:
    """The product of sizes that are ints or index values (static factors folded)."""
    static, product = 1, None
    for size in sizes:
        if isinstance(size, int):
            static *= size
        else:
            product = size if product is None else b.mul(product, size)
    if product is None:
        return static
    return product if static == 1 else b.mul(product, static)


def runtime_decompose(b: LoopBuilder, flat_index: SSAValue, sizes: Sequence[Value]) -> list[Value]:
    """Row-major multi-index of `flat_index` within `sizes` (ints or index values)."""
    index: list[Value] = []
    rest: Value = flat_index
    for k in range(len(sizes) - 1, -1, -1):
        size = sizes[k]
        if isinstance(size, int) and size == 1:
            index.append(0)
        elif k == 0:
            index.append(rest)
        else:
            index.append(b.rem(rest, size))
            rest = b.floordiv(rest, size)
    return index[::-1]


def runtime_rows_loop(
    b: LoopBuilder,
    rows: SSAValue,
    row_elements: int,
    target: Target,
    body: Callable[[LoopBuilder, list[SSAValue]], None],
) -> None:
    """`body(b, [r])` for each of `rows` rows (known at run time) of `row_elements` each: on a
    multi-thread target a scf.parallel over chunks of about rows / (4 x threads) rows, each
    chunk at least PARALLEL_MIN_ELEMENTS elements (so a small run is one chunk: the calling
    thread), as for_each_index decides statically."""

    def rows_of(rb: LoopBuilder, lo: Value, hi: Value) -> None:
        rb.for_range(lo, hi, 1, lambda ib, r: body(ib, [r]))

    if target.threads <= 1:
        rows_of(b, 0, rows)
        return
    per_thread = b.floordiv(b.add(rows, 4 * target.threads - 1), 4 * target.threads)
    chunk = b.max_index(per_thread, -(-PARALLEL_MIN_ELEMENTS // max(row_elements, 1)))
    b.parallel_range(
        0, rows, chunk, lambda cb, c: rows_of(cb, c, cb.min_index(cb.add(c, chunk), rows))
    )


# -- sweeps --------------------------------------------------------------------------------------
# visit(b, i, width) handles elements [i, i + width) (a vector, or a scalar when width == 1) and
# returns one value per monoid to fold in.
Visit = Callable[[LoopBuilder, SSAValue, int], Sequence[SSAValue]]


def sweep(
    b: LoopBuilder,
    lo: Value,
    hi: Value,
    width: int,
    visit: Visit,
    monoids: Sequence[Monoid] = (),
    unroll: int = 1,
) -> list[SSAValue]:
    """Visits [lo, hi) of a contiguous row: SIMD chunks of `width` (unrolled `unroll` times
    with independent vector accumulators), then a scalar tail. Returns one scalar per monoid.
    Bounds may be Python ints (static trip counts, empty loops dropped) or index values."""
    static = isinstance(lo, int) and isinstance(hi, int)
    k = len(monoids)
    if width <= 1:
        width, unroll = 1, 1
    block = width * unroll

    def round_down(step: int) -> Value:
        if static:
            return lo + (hi - lo) // step * step  # type: ignore[operator]
        return b.add(lo, b.mul(b.floordiv(b.sub(hi, lo), step), step))

    def nonempty(start: Value, end: Value) -> bool:
        return not static or start < end  # type: ignore[operator]

    vec_end = round_down(width) if width > 1 else lo
    main_end = round_down(block) if unroll > 1 else vec_end
    if not (width > 1 and nonempty(lo, vec_end)):
        scalars = [m.init(b, 1) for m in monoids]
    else:
        accs = [m.init(b, width) for _ in range(unroll) for m in monoids]

        def stepper(copies: int) -> Callable[..., list[SSAValue]]:
            def step(ib: LoopBuilder, i: SSAValue, *carried: SSAValue) -> list[SSAValue]:
                new: list[SSAValue] = []
                for u in range(copies):
                    values = visit(ib, ib.add(i, u * width) if u else i, width)
                    mine = carried[u * k : (u + 1) * k]
                    new += [m.combine(ib, a, v) for m, a, v in zip(monoids, mine, values)]
                return new

            return step

        if nonempty(lo, main_end):
            accs = b.for_range(lo, main_end, block, stepper(unroll), accs)
        accs = [m.tree(b, accs[j::k]) for j, m in enumerate(monoids)]
        if unroll > 1 and nonempty(main_end, vec_end):
            accs = b.for_range(main_end, vec_end, width, stepper(1), accs)
        scalars = [m.horizontal(b, a) for m, a in zip(monoids, accs)]
    if nonempty(vec_end, hi):

        def tail(ib: LoopBuilder, i: SSAValue, *carried: SSAValue) -> list[SSAValue]:
            values = visit(ib, i, 1)
            return [m.combine(ib, a, v) for m, a, v in zip(monoids, carried, values)]

        scalars = b.for_range(vec_end, hi, 1, tail, scalars)
    return scalars


# A lane of a column block: (offset of its first column in the block, width: vector or 1).
Lane = tuple[int, int]


def column_blocks(
    b: LoopBuilder,
    n: int,
    width: int,
    unroll: int,
    block: Callable[[LoopBuilder, SSAValue, list[Lane]], None],
    parallel: bool = False,
) -> None:
    """Covers columns [0, n) with `block(b, first_column, lanes)`: full blocks of `unroll`
    vectors in a loop (scf.parallel if asked), then one block for what remains (whole vectors,
    then single columns). Each lane gets its own accumulator, so every pass over the rows of a
    block keeps `unroll` vectors in registers."""
    width = max(width, 1)
    span = width * unroll
    full = n // span
    lanes = [(u * width, width) for u in range(unroll)]
    if full:
        body = lambda ib, c: block(ib, c, lanes)  # noqa: E731
        if parallel and full >= 2:
            b.parallel_range(0, full * span, span, body)
        else:
            b.for_range(0, full * span, span, body)
    start = full * span
    vectors = (n - start) // width if width > 1 else 0
    singles = n - start - vectors * width
    rest = [(u * width, width) for u in range(vectors)] + [
        (vectors * width + s, 1) for s in range(singles)
    ]
    if rest:
        block(b, b.index(start), rest)
