"""Data checks in kernels: bad data is reported through the run's status record.

A kernel whose addresses depend on tensor data (indices) checks that data and, when a check
fails, writes one error into the status record whose layout the runtime defines
(runtime/status.py), then carries on with a clamped value, so that it never touches memory
outside its buffers; the runtime raises KernelError after the call.

A lowering that checks builds its function with `checked_kernel_function`: the status record
becomes a trailing argument after the op's operands, and the function is marked with
`STATUS_MARK`, so that lower-kernels-to-loops passes it the entry's record and stamps the call
site into it. `checked_index` normalises one index read from a tensor the ONNX way and checks it:
a compare and a rarely taken branch per index, not per element moved.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects import arith, func, memref
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, IntegerAttr, MemRefType, UnitAttr, i64
from xdsl.ir import Attribute, SSAValue

from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.runtime.status import (
    BOUND,
    CLAIM,
    CODE,
    DIM,
    INDEX_OUT_OF_RANGE,
    STATUS_WORDS,
    VALUE,
)

STATUS_TYPE = MemRefType(i64, [STATUS_WORDS])
STATUS_MARK = "ember.reports_status"
_ATOMIC_EXCHANGE = 2  # arith::AtomicRMWKind::assign


def checked_kernel_function(
    name: str, arg_types: Sequence[Attribute]
) -> tuple[func.FuncOp, LoopBuilder, SSAValue]:
    """`kernel_function` plus a trailing status-record argument (returned third)."""
    fn, b = kernel_function(name, arg_types)  # type: ignore[arg-type]
    return fn, b, add_status_argument(fn)


def add_status_argument(fn: func.FuncOp) -> SSAValue:
    """Give a kernel function the status record as its last argument, and mark it (after any
    extent arguments: the call passes the operands, their sizes, then the record)."""
    block = fn.body.block
    status = block.insert_arg(STATUS_TYPE, len(block.args))
    if fn.arg_attrs is not None:
        fn.arg_attrs = ArrayAttr([*fn.arg_attrs.data, DictionaryAttr({})])
    fn.update_function_type()
    fn.attributes[STATUS_MARK] = UnitAttr()
    return status


def reports_status(fn: func.FuncOp) -> bool:
    """The kernel function takes the status record as its last argument."""
    return STATUS_MARK in fn.attributes


def _as_i64(b: LoopBuilder, value: SSAValue | int) -> SSAValue:
    if isinstance(value, int):
        return b.const(value, i64)
    return b.insert(arith.IndexCastOp(value, i64)).results[0]


def record_error(
    b: LoopBuilder, status: SSAValue, code: int, value: SSAValue, bound: int, dim: SSAValue | int
) -> None:
    """Write one error into `status` unless another thread (or index) got there first.

    The atomic exchange of the claim word picks one writer, so the words of two simultaneous
    failures never mix; the runtime reads the record after every thread has joined.
    """
    claim = memref.AtomicRMWOp.create(
        operands=[b.const(1, i64), status, b.index(CLAIM)],
        result_types=[i64],
        properties={"kind": IntegerAttr(_ATOMIC_EXCHANGE, i64)},
    )
    previous = b.insert(claim).results[0]
    first = b.insert(arith.CmpiOp(previous, b.const(0, i64), "eq")).results[0]

    def write(wb: LoopBuilder) -> None:
        for word, content in ((VALUE, value), (BOUND, bound), (DIM, dim), (CODE, code)):
            wb.store(_as_i64(wb, content), status, [word])

    b.if_(first, write)


def checked_index(
    b: LoopBuilder,
    status: SSAValue,
    raw: SSAValue,
    extent: int,
    dim: int,
    allowed: int | None = None,
) -> SSAValue:
    """The position `raw` (an index-typed value read from a tensor) names in a dimension of
    `extent`: negative values count from the end once, as ONNX specifies; anything outside
    [-extent, extent) is recorded as INDEX_OUT_OF_RANGE for data dimension `dim` and reads
    position 0 instead. `allowed` is one out-of-range value that is not an error (the
    ignore_index of GatherElements)."""
    wrapped = b.select(b.cmp_index("slt", raw, 0), b.add(raw, extent), raw)
    # Unsigned: a still-negative position compares as huge, so one compare covers both ends.
    outside = b.cmp_index("uge", wrapped, extent)
    bad = outside
    if allowed is not None:
        not_allowed = b.cmp_index("ne", raw, allowed)
        bad = b.insert(arith.AndIOp(outside, not_allowed)).results[0]
    b.if_(bad, lambda rb: record_error(rb, status, INDEX_OUT_OF_RANGE, raw, extent, dim))
    return b.select(outside, b.index(0), wrapped)
