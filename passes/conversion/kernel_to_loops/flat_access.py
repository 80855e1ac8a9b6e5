"""Helpers shared by the pooling, LRN and data-movement lowerings.

Kernel buffers are static-shaped, identity-layout memrefs that the ABI passes as a bare
pointer to element 0, so an element's linear offset is also a valid index into the last
dimension when every leading index is 0 (codegen linearizes indices with the static strides).
Addressing through that "flat" form lets one copy helper move contiguous runs that span
several dimensions, which is what transpose, concat, gather and copy are made of.

Bodies are written once for a `width`: width 1 emits scalar loads/stores and arithmetic,
width > 1 emits `vector<width x T>` ops, so the vector main loop and its scalar tail share code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from xdsl.dialects import arith, vector
from xdsl.dialects.builtin import (
    BoolAttr,
    DenseArrayBase,
    IndexType,
    VectorType,
    f32,
    i64,
)
from xdsl.ir import Attribute, SSAValue
from xdsl.irdl import IRDLOperation

from ember.core.target import Target
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, Value
from ember.passes.program import describe_op
from ember.runtime.errors import ModelError

# Below this many elements a kernel runs on one thread: a GOMP region (~2 us) costs more than
# the second core saves (simd.want_threads and is_parallel below both read it).
PARALLEL_MIN_ELEMENTS = 32 * 1024


class KernelShapeError(ModelError):
    """A kernel op whose operand shapes or properties the lowering cannot honour: the model
    asks for something ember's kernels do not take (an ember error, naming the ONNX node)."""


def fail(op: IRDLOperation, message: str) -> KernelShapeError:
    return KernelShapeError(f"{describe_op(op)}: {message}")


def operand_types(op: IRDLOperation) -> list[Attribute]:
    """The kernel function's signature: one memref argument per operand, in order."""
    return [operand.type for operand in op.operands]


def shape(value: SSAValue) -> tuple[int, ...]:
    return tuple(value.type.get_shape())  # type: ignore[attr-defined]


def element_type(value: SSAValue) -> Attribute:
    return value.type.get_element_type()  # type: ignore[attr-defined]


def lanes_for(buffer: SSAValue, target: Target) -> int:
    """Lanes of `buffer`'s element type that fill one SIMD register (f32: vector_width)."""
    bits = element_type(buffer).bitwidth  # type: ignore[attr-defined]
    return max(1, target.vector_width * 32 // max(bits, 8))


def is_parallel(elements: int) -> bool:
    return elements >= PARALLEL_MIN_ELEMENTS


def flat(buffer: SSAValue, offset: Value) -> list[Value]:
    """Indices addressing element `offset` (row-major linear position) of `buffer`."""
    rank = len(shape(buffer))
    if rank == 0:
        return []
    return [0] * (rank - 1) + [offset]


# -- width-generic loads, stores and constants -----------------------------------------------------
def load(b: LoopBuilder, buffer: SSAValue, offset: Value, width: int) -> SSAValue:
    if width == 1:
        return b.load(buffer, flat(buffer, offset))
    return b.vload(buffer, flat(buffer, offset), width)


def store(
    b: LoopBuilder, value: SSAValue, buffer: SSAValue, offset: Value, stream: bool = False
) -> None:
    """`stream`: a vector is stored non-temporally (straight to memory, the line not read
    for ownership first: for outputs far larger than the caches)."""
    if isinstance(value.type, VectorType) and stream:
        indices = [b.index(i) for i in flat(buffer, offset)]
        b.insert(vector.StoreOp(value, buffer, indices, BoolAttr.from_bool(True)))
    elif isinstance(value.type, VectorType):
        b.vstore(value, buffer, flat(buffer, offset))
    else:
        b.store(value, buffer, flat(buffer, offset))


def fconst(b: LoopBuilder, value: float, width: int) -> SSAValue:
    return b.const(value) if width == 1 else b.splat(value, width)


def broadcast(b: LoopBuilder, scalar: SSAValue, width: int) -> SSAValue:
    return scalar if width == 1 else b.splat(scalar, width)


def index_to_f32(b: LoopBuilder, value: SSAValue) -> SSAValue:
    as_int = b.insert(arith.IndexCastOp(value, i64)).results[0]
    return b.insert(arith.SIToFPOp(as_int, f32)).results[0]


def to_index(b: LoopBuilder, value: SSAValue) -> SSAValue:
    """Sign-extending cast of an integer scalar (i32/i64) to index."""
    if isinstance(value.type, IndexType):
        return value
    return b.insert(arith.IndexCastOp(value, IndexType())).results[0]


def shuffle(b: LoopBuilder, v1: SSAValue, v2: SSAValue, mask: Sequence[int]) -> SSAValue:
    elem = v1.type.get_element_type()  # type: ignore[attr-defined]
    op = vector.ShuffleOp(
        v1, v2, DenseArrayBase.from_list(i64, list(mask)), result_type=VectorType(elem, [len(mask)])
    )
    return b.insert(op).results[0]


# -- index arithmetic --------------------------------------------------------------------------------
def linear(b: LoopBuilder, terms: Sequence[tuple[Value, int]], base: Value = 0) -> SSAValue:
    """base + sum(index * stride), folding strides of 0 and 1."""
    acc = b.index(base)
    for index, stride in terms:
        if stride == 0:
            continue
        term = index if stride == 1 else b.mul(index, stride)
        acc = b.add(acc, term)
    return acc


def decompose(b: LoopBuilder, flat_index: SSAValue, dims: Sequence[int]) -> list[SSAValue]:
    """Row-major multi-index of `flat_index` within `dims` (size-1 dims cost nothing)."""
    out: list[SSAValue] = []
    rest = flat_index
    for k, size in enumerate(dims):
        inner = math.prod(dims[k + 1 :])
        if size == 1:
            out.append(b.index(0))
        elif inner == 1:
            out.append(rest)
        else:
            out.append(b.floordiv(rest, inner))
            rest = b.rem(rest, inner)
    return out


def row_major_strides(dims: Sequence[int]) -> list[int]:
    return [math.prod(dims[k + 1 :]) for k in range(len(dims))]


# -- loops ---------------------------------------------------------------------------------------------
def loop(
    b: LoopBuilder,
    lower: Value,
    upper: Value,
    body: Callable[[LoopBuilder, SSAValue], None],
    parallel: bool = False,
    step: Value = 1,
) -> None:
    """A loop without iteration values: scf.parallel when asked, scf.for otherwise."""
    if isinstance(lower, int) and isinstance(upper, int) and upper <= lower:
        return
    if parallel:
        b.parallel_range(lower, upper, step, body)
    else:
        b.for_range(lower, upper, step, body)


# -- contiguous copies -------------------------------------------------------------------------------
def copy_run(
    b: LoopBuilder,
    src: SSAValue,
    src_offset: Value,
    dst: SSAValue,
    dst_offset: Value,
    length: int,
    lanes: int,
) -> None:
    """dst[dst_offset : +length] = src[src_offset : +length] (flat positions, static length).

    A ragged end is covered by one more full vector ending exactly at `length`: it rewrites a
    few elements with the same values, which is cheaper than a scalar tail.
    """
    if length <= 0:
        return
    # Runs shorter than a register still move in the widest power-of-two vector that fits.
    width = lanes if length >= lanes else 1 << (length.bit_length() - 1)
    body_end = length - length % width
    _copy_blocks(b, src, src_offset, dst, dst_offset, 0, body_end, width)
    if body_end != length:
        _copy_one(b, src, src_offset, dst, dst_offset, length - width, width)


def _copy_one(
    b: LoopBuilder,
    src: SSAValue,
    src_offset: Value,
    dst: SSAValue,
    dst_offset: Value,
    at: int,
    width: int,
) -> None:
    store(b, load(b, src, b.add(src_offset, at), width), dst, b.add(dst_offset, at))


def _copy_blocks(
    b: LoopBuilder,
    src: SSAValue,
    src_offset: Value,
    dst: SSAValue,
    dst_offset: Value,
    begin: int,
    end: int,
    width: int,
) -> None:
    count = (end - begin) // width
    if count <= 0:
        return
    if count <= 4:  # short runs (e.g. a head of 64 floats) unroll instead of looping
        for k in range(count):
            _copy_one(b, src, src_offset, dst, dst_offset, begin + k * width, width)
        return

    def body(ib: LoopBuilder, i: SSAValue) -> None:
        store(ib, load(ib, src, ib.add(src_offset, i), width), dst, ib.add(dst_offset, i))

    b.for_range(begin, end, width, body)


def copy_flat(b: LoopBuilder, src: SSAValue, dst: SSAValue, length: int, target: Target) -> None:
    """Copy the first `length` elements of src to dst, split over threads when large."""
    lanes = lanes_for(src, target)
    if not is_parallel(length):
        copy_run(b, src, 0, dst, 0, length, lanes)
        return
    # Chunks are whole vectors and big enough that per-chunk overhead vanishes.
    chunk = 8192
    full = length // chunk

    def body(pb: LoopBuilder, c: SSAValue) -> None:
        offset = pb.mul(c, chunk)
        copy_run(pb, src, offset, dst, offset, chunk, lanes)

    loop(b, 0, full, body, parallel=True)
    copy_run(b, src, full * chunk, dst, full * chunk, length - full * chunk, lanes)
