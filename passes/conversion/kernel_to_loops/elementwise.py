"""kernel.elementwise -> SIMD loops.

Dims are collapsed first: adjacent output dims merge when every input is either full in both
or broadcast in both, so [1,64,56,56] + [1,64,56,56] becomes one flat loop of 200704 and
[1,64,56,56] * [1,64,1,1] becomes a [64] x [3136] nest with one splat per row. The innermost
collapsed dim is swept with the body cloned on vector<VW x T> values, then cloned on scalars
for the tail.

A short innermost dim that some inputs broadcast ([.., 80, 1] -> [.., 80, 2], what nearest
upsampling by a whole factor is) merges with the dim before it: the row is swept in vectors
too, each such input loading VW / k elements and repeating each k times with one shuffle.
"""

from __future__ import annotations

import math as pymath
from collections.abc import Sequence

from xdsl.dialects import arith, func
from xdsl.dialects.builtin import IntegerType, VectorType
from xdsl.ir import Attribute, Block, SSAValue
from xdsl.utils.exceptions import VerifyException

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.extents import is_dynamic
from ember.dialects.graph import element_type_of, shape_of
from ember.passes.conversion.kernel_to_loops import simd
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, Value, kernel_function
from ember.passes.conversion.kernel_to_loops.flat_access import shuffle
from ember.passes.conversion.kernel_to_loops.registry import lowering


def collapse_broadcast(
    out: Sequence[int], inputs: Sequence[Sequence[int]]
) -> tuple[list[int], list[list[int]]]:
    """Collapsed output dims, and each input's shape in them (1 where it is broadcast).

    Size-1 output dims vanish; a scalar output becomes [1].
    """
    rank = len(out)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in inputs]
    dims: list[int] = []
    patterns: list[tuple[bool, ...]] = []
    for d, n in enumerate(out):
        if n == 1:
            continue
        full = tuple(p[d] == n for p in padded)
        if patterns and patterns[-1] == full:
            dims[-1] *= n
        else:
            dims.append(n)
            patterns.append(full)
    if not dims:
        return [1], [[1] for _ in inputs]
    shapes = [
        [n if pattern[k] else 1 for n, pattern in zip(dims, patterns)] for k in range(len(inputs))
    ]
    return dims, shapes


def repeat_merge(
    dims: Sequence[int], input_dims: Sequence[Sequence[int]], width: int
) -> tuple[list[int], list[list[int]], list[bool]] | None:
    """The last two collapsed dims [m, k] merged into one row of m * k when k is a short repeat:
    1 < k < width, width % k == 0, and each input full in both, full along m and broadcast
    along k (a repeat: True in the returned flags), or broadcast in both. None otherwise."""
    if len(dims) < 2 or not 1 < dims[-1] < width or width % dims[-1]:
        return None
    m, k = dims[-2:]
    merged: list[list[int]] = []
    repeated: list[bool] = []
    for d in input_dims:
        last_two = (d[-2] == m, d[-1] == k)
        if last_two == (False, True):
            return None  # a row broadcast along m: no shuffle makes it
        size = {(True, True): m * k, (True, False): m, (False, False): 1}[last_two]
        merged.append([*d[:-2], size])
        repeated.append(last_two == (True, False))
    return [*dims[:-2], m * k], merged, repeated


def _repeat_load(
    b: LoopBuilder, buffer: SSAValue, indices: list[SSAValue | int], k: int, width: int
) -> SSAValue:
    """width lanes of a row that repeats each element of `buffer` k times, from the element at
    `indices` on: one load of width / k elements and a shuffle (a splat when that is one)."""
    if width == 1:
        return b.load(buffer, indices)
    if width == k:
        return simd.broadcast(b, b.load(buffer, indices), width)
    loaded = simd.load(b, buffer, indices, width // k)
    return shuffle(b, loaded, loaded, [lane // k for lane in range(width)])


def _vector_of(type: Attribute, width: int) -> Attribute:
    return VectorType(type, [width]) if width > 1 else type


def clone_body(b: LoopBuilder, body: Block, args: Sequence[SSAValue], width: int) -> SSAValue:
    """Emits the scalar body on `args` and returns the yielded value. With width > 1 every
    value becomes a vector<width x T>; scalar constants become splats."""
    values: dict[SSAValue, SSAValue] = dict(zip(body.args, args, strict=True))
    for op in body.ops:
        if isinstance(op, kernel.YieldOp):
            return values[op.value]
        if isinstance(op, arith.ConstantOp):
            scalar = b.insert(op.clone()).results[0]
            values[op.result] = simd.broadcast(b, scalar, width)
            continue
        try:
            operands = [values[v] for v in op.operands]
        except KeyError:
            raise ValueError(
                f"kernel.elementwise: '{op.name}' in the body uses a value defined outside it"
            ) from None
        clone = type(op).create(
            operands=operands,
            result_types=[_vector_of(t, width) for t in op.result_types],
            properties=dict(op.properties),
            attributes=dict(op.attributes),
        )
        b.insert(clone)
        values.update(zip(op.results, clone.results, strict=True))
    raise ValueError("kernel.elementwise: body has no kernel.yield")


def check_body(op: kernel.ElementwiseOp) -> None:
    for inner in op.body.block.ops:
        if isinstance(inner, kernel.YieldOp):
            continue
        if inner.dialect_name() not in ("arith", "math") or inner.regions:
            raise ValueError(
                f"kernel.elementwise: body op '{inner.name}' is not a scalar arith/math op"
            )
        if any(isinstance(t, VectorType) for t in inner.result_types):
            raise ValueError(f"kernel.elementwise: body op '{inner.name}' is not scalar")


def simd_width(op: kernel.ElementwiseOp, target: Target) -> int:
    """Lanes of the main loop, or 1 (scalar loop only) when the body does not vectorize."""
    # Bools live in memory as bytes: a vector<N x i1> load would read packed bits instead.
    buffers = [*op.inputs, op.output]
    if any(_is_bool(element_type_of(v)) for v in buffers):
        return 1
    # xdsl 0.74 defines some ops on scalars only (the int<->float casts among them): clone
    # the body on vectors once and keep the vector loop only if every op verifies.
    width = target.vector_width
    body = op.body.block
    trial = Block(arg_types=[_vector_of(a.type, width) for a in body.args])
    clone_body(LoopBuilder(trial), body, list(trial.args), width)
    try:
        for cloned in trial.ops:
            cloned.verify()
    except VerifyException:
        return 1
    return width


def _is_bool(type: Attribute) -> bool:
    return isinstance(type, IntegerType) and type.width.data == 1


@lowering(kernel.ElementwiseOp)
def lower_elementwise(op: kernel.ElementwiseOp, target: Target, name: str) -> func.FuncOp:
    check_body(op)
    dims, input_dims = collapse_broadcast(shape_of(op.output), [shape_of(x) for x in op.inputs])
    fn, b = kernel_function(name, [v.type for v in op.operands])  # type: ignore[misc]
    width = simd_width(op, target)
    repeat = 1
    repeated = [False] * len(input_dims)
    if merge := repeat_merge(dims, input_dims, width):
        repeat = dims[-1]
        dims, input_dims, repeated = merge
    inputs = [simd.view(b, arg, d) for arg, d in zip(fn.args[:-1], input_dims)]
    output = simd.view(b, fn.args[-1], dims)
    body = op.body.block
    outer, n = dims[:-1], dims[-1]
    total = pymath.prod(dims)
    # Inputs constant along the inner dim are loaded once per row and splat.
    row_invariant = [d[-1] == 1 and n > 1 for d in input_dims]

    def row(
        rb: LoopBuilder, indices: list[SSAValue], lo: int | SSAValue, hi: int | SSAValue
    ) -> None:
        def at(k: int, j: SSAValue | int) -> list[SSAValue | int]:
            return [i if s > 1 else 0 for i, s in zip(indices, input_dims[k])] + [j]

        hoisted = {k: rb.load(inputs[k], at(k, 0)) for k in range(len(inputs)) if row_invariant[k]}
        splats = {k: simd.broadcast(rb, v, width) for k, v in hoisted.items()}

        def visit(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
            # A vector's first lane j is a multiple of the width, so of `repeat`.
            args = [
                (splats[k] if w > 1 else hoisted[k])
                if row_invariant[k]
                else _repeat_load(vb, x, at(k, vb.floordiv(j, repeat)), repeat, w)
                if repeated[k]
                else simd.load(vb, x, at(k, j if input_dims[k][-1] > 1 else 0), w)
                for k, x in enumerate(inputs)
            ]
            simd.store(vb, clone_body(vb, body, args, w), output, [*indices, j])
            return []

        simd.sweep(rb, lo, hi, width, visit)

    if outer:
        parallel = simd.want_threads(target, total, pymath.prod(outer))
        simd.for_each_index(b, outer, lambda rb, idx: row(rb, idx, 0, n), parallel)
    else:
        simd.split_flat(b, n, width, target, lambda rb, lo, hi: row(rb, [], lo, hi))
    b.ret()
    return fn


# -- runtime extents (issue 10, foundation) ------------------------------------------------------
FULL, ROW, SPLAT = "full", "row", "splat"
# An input of the output's trailing dims from one holding a `?` on, 1 before them (the
# position table [1, ?, H] against [?, ?, H]): read again for every run-time-long tile.
TILE = "tile"
# Any other numpy broadcast ([?, 1, H] against [?, ?, H], [?, 1] against [?, 8]): each dim
# the output's or 1, addressed per output row through the memrefs' run-time strides.
BROADCAST = "broadcast"


def _is_tile(padded: tuple[int, ...], out: tuple[int, ...]) -> bool:
    lead = next((d for d, n in enumerate(padded) if n != 1), len(padded))
    return (
        0 < lead < len(out)
        and padded[lead:] == out[lead:]
        and any(is_dynamic(n) for n in out[lead:])
        and all(n == 1 for n in padded[:lead])
    )


def _runtime_input_kinds(op: kernel.ElementwiseOp) -> tuple[list[str], int]:
    """How each input is read, and the static row length S: the product of the output's
    dims after its last `?` dim. An input is FULL (the output's shape: read element for
    element; its `?` dims are the output's, as every kernel's shapes agree), ROW (those
    trailing dims, 1 before them: [768] against [?, 768], read again for every row) or
    SPLAT (one element). Any other broadcast is refused, naming the shapes."""
    out = shape_of(op.output)
    if not any(is_dynamic(n) for n in out):
        types = ", ".join(str(v.type) for v in op.operands)
        raise NotImplementedError(
            f"kernel.elementwise with runtime extents: `?` dims in inputs but not in the "
            f"output: {types}"
        )
    last = max(d for d, n in enumerate(out) if is_dynamic(n))
    trailing = out[last + 1 :]
    kinds = []
    for x in op.inputs:
        shape = shape_of(x)
        padded = (1,) * (len(out) - len(shape)) + shape
        if shape == out:
            kinds.append(FULL)
        elif _is_tile(padded, out):
            kinds.append(TILE)
        elif all(d == 1 for d in shape):
            kinds.append(SPLAT)
        elif (
            trailing and padded[last + 1 :] == trailing and all(d == 1 for d in padded[: last + 1])
        ):
            kinds.append(ROW)
        elif len(out) > 1 and all(n == 1 or n == o for n, o in zip(padded, out, strict=True)):
            kinds.append(BROADCAST)
        else:
            raise NotImplementedError(
                f"kernel.elementwise with runtime extents: input {x.type} has neither the "
                f"output's shape {op.output.type}, nor its dims after the last `?`, nor one "
                "element (other broadcasts are not lowered with `?` dims yet)"
            )
    return kinds, pymath.prod(trailing)


@lowering(kernel.ElementwiseOp, runtime_extents=True)
def lower_elementwise_runtime(op: kernel.ElementwiseOp, target: Target, name: str) -> func.FuncOp:
    """kernel.elementwise whose buffers have `?` dims, sizes known at run time. Without ROW
    inputs: one flat loop over the n elements the output has at run time (the product of
    its sizes), SIMD main loop and scalar remainder as the static kernel's, split into chunks
    for the threads when n is large enough. With ROW inputs (a bias [S] added to [?, S]):
    the same sweep over each row of S elements, rows split over the threads at run time.
    One-element inputs are loaded once and splat."""
    check_body(op)
    kinds, row_length = _runtime_input_kinds(op)
    if BROADCAST in kinds or (TILE in kinds and ROW in kinds):
        return _lower_elementwise_broadcast(op, target, name, kinds)
    if TILE in kinds:
        return _lower_elementwise_tiles(op, target, name, kinds)
    by_rows = ROW in kinds
    fn, b = kernel_function(name, [v.type for v in op.operands])  # type: ignore[misc]
    args = fn.args[: len(op.operands)]
    out_arg = args[-1]
    n = b.index(b.element_count(out_arg))
    rows = b.floordiv(n, row_length) if by_rows else None

    def view(x: SSAValue, kind: str) -> SSAValue:
        if kind == ROW:
            return simd.view(b, x, [row_length])
        if kind == SPLAT:
            return x
        if by_rows:
            assert rows is not None
            return simd.runtime_rows_view(b, x, rows, row_length)
        return simd.runtime_flat_view(b, x, n)

    width = simd_width(op, target)
    inputs = [view(x, kind) for x, kind in zip(args[:-1], kinds, strict=True)]
    output = view(out_arg, FULL)
    splats = {
        k: b.load(x, [0] * len(shape_of(x))) for k, x in enumerate(inputs) if kinds[k] == SPLAT
    }
    body = op.body.block

    def sweep(rb: LoopBuilder, at: list[SSAValue], lo: SSAValue | int, hi: SSAValue | int) -> None:
        """Elements [lo, hi) of the flat output (`at` = []) or of row `at` = [r]."""
        vectors = {k: simd.broadcast(rb, v, width) for k, v in splats.items()}

        def visit(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
            values = []
            for k, x in enumerate(inputs):
                if kinds[k] == SPLAT:
                    values.append(vectors[k] if w > 1 else splats[k])
                else:
                    values.append(simd.load(vb, x, ([] if kinds[k] == ROW else at) + [j], w))
            simd.store(vb, clone_body(vb, body, values, w), output, [*at, j])
            return []

        simd.sweep(rb, lo, hi, width, visit)

    if by_rows:
        assert rows is not None
        simd.runtime_rows_loop(
            b, rows, row_length, target, lambda rb, r: sweep(rb, r, 0, row_length)
        )
    else:
        simd.split_flat_runtime(b, n, width, target, lambda rb, lo, hi: sweep(rb, [], lo, hi))
    b.ret()
    return fn


def _lower_elementwise_tiles(
    op: kernel.ElementwiseOp, target: Target, name: str, kinds: list[str]
) -> func.FuncOp:
    """kernel.elementwise with TILE inputs ([1, ?, H] against [?, ?, H]): the output as
    tiles of the TILE inputs' run-time element count, each tile one SIMD sweep (scalar
    remainder) reading the TILE inputs from their start, the tiles split over the threads.
    Every TILE input must have the same dims (one tile length); ROW inputs with them are
    refused."""
    tiles = [x for x, k in zip(op.inputs, kinds, strict=True) if k == TILE]
    if any(shape_of(x) != shape_of(tiles[0]) for x in tiles):
        return _lower_elementwise_broadcast(op, target, name, kinds)
    if ROW in kinds:
        types = ", ".join(str(v.type) for v in op.operands)
        raise NotImplementedError(
            "kernel.elementwise with runtime extents: broadcast inputs of different shapes "
            f"(other broadcasts are not lowered with `?` dims yet): {types}"
        )
    fn, b = kernel_function(name, [v.type for v in op.operands])  # type: ignore[misc]
    args = fn.args[: len(op.operands)]
    out_arg = args[-1]
    n = b.index(b.element_count(out_arg))
    tile = b.index(b.element_count(args[kinds.index(TILE)]))
    count = b.floordiv(n, tile)

    def view(x: SSAValue, kind: str) -> SSAValue:
        if kind == SPLAT:
            return x
        return simd.runtime_flat_view(b, x, tile if kind == TILE else n)

    width = simd_width(op, target)
    inputs = [view(x, kind) for x, kind in zip(args[:-1], kinds, strict=True)]
    output = view(out_arg, FULL)
    splats = {
        k: b.load(x, [0] * len(shape_of(x))) for k, x in enumerate(inputs) if kinds[k] == SPLAT
    }
    body = op.body.block

    def sweep(rb: LoopBuilder, at: list[SSAValue]) -> None:
        vectors = {k: simd.broadcast(rb, v, width) for k, v in splats.items()}
        base = rb.mul(at[0], tile)

        def visit(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
            flat = vb.add(base, j)
            values = []
            for k, x in enumerate(inputs):
                if kinds[k] == SPLAT:
                    values.append(vectors[k] if w > 1 else splats[k])
                else:
                    values.append(simd.load(vb, x, [j if kinds[k] == TILE else flat], w))
            simd.store(vb, clone_body(vb, body, values, w), output, [flat])
            return []

        simd.sweep(rb, 0, tile, width, visit)

    simd.runtime_rows_loop(b, count, 64, target, sweep)
    b.ret()
    return fn


def _lower_elementwise_broadcast(
    op: kernel.ElementwiseOp, target: Target, name: str, kinds: list[str]
) -> func.FuncOp:
    """kernel.elementwise with `?` dims and any numpy broadcast (every input dim the
    output's or 1, right-aligned): one pass over the output's rows (every dim but the last,
    a run-time count split over the threads), each row a SIMD sweep (scalar remainder) of the
    last dim; an input is addressed at the row's multi-index with its broadcast dims at 0
    (run-time strides), and one whose last dim is 1 is loaded once per row and splat."""
    out = shape_of(op.output)
    rank = len(out)
    fn, b = kernel_function(name, [v.type for v in op.operands])  # type: ignore[misc]
    args = fn.args[: len(op.operands)]
    out_arg = args[-1]
    sizes = [b.dim(out_arg, d) for d in range(rank)]
    rows = simd.runtime_product(b, sizes[:-1])
    width = simd_width(op, target)
    inputs = list(args[:-1])
    shapes = [shape_of(x) for x in inputs]
    splats = {k: b.load(x, [0] * len(shapes[k])) for k, x in enumerate(inputs) if kinds[k] == SPLAT}
    body = op.body.block

    def row(rb: LoopBuilder, r: SSAValue) -> None:
        index = simd.runtime_decompose(rb, r, sizes[:-1])
        scalars: dict[int, SSAValue] = dict(splats)
        prefixes: dict[int, list[Value]] = {}
        for k, x in enumerate(inputs):
            if kinds[k] == SPLAT:
                continue
            lead = rank - len(shapes[k])
            prefix: list[Value] = [
                index[lead + d] if n != 1 else 0 for d, n in enumerate(shapes[k][:-1])
            ]
            if shapes[k][-1] == 1 and out[-1] != 1:
                scalars[k] = rb.load(x, [*prefix, 0])
            prefixes[k] = prefix
        vectors = {k: simd.broadcast(rb, v, width) for k, v in scalars.items()}

        def visit(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
            values = []
            for k, x in enumerate(inputs):
                if k in scalars:
                    values.append(vectors[k] if w > 1 else scalars[k])
                else:
                    values.append(simd.load(vb, x, [*prefixes[k], j], w))
            simd.store(vb, clone_body(vb, body, values, w), out_arg, [*index, j])
            return []

        simd.sweep(rb, 0, sizes[-1], width, visit)

    last = out[-1] if out[-1] > 0 else 64  # elements per row, a guess where `?`
    simd.runtime_rows_loop(b, b.index(rows), last, target, lambda rb, r: row(rb, r[0]))
    b.ret()
    return fn
