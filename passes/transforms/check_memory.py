"""check-memory-accesses: a bounds check on every load and store of every kernel (debug mode).

A loops-level pass (after lower-kernels-to-loops; not in the default pipeline: `ember.compile(...,
checks=True)` or EMBER_CHECKS=1 add it). Every memref/vector load and store in a kernel function
(masked vector accesses excepted, see _ACCESSES) gets its linear element offset computed from
its indices and the memref's static strides (the flat addressing kernels use may run an index
past its own dimension, never past the buffer) and compared with the buffer's extent; an access
outside it is recorded in the run's status record as OUT_OF_BOUNDS (runtime/status.py) and
redirected to element 0, so the run finishes and the runtime raises KernelError naming the
kernel. Such an error is a bug in ember, not in the model.

Kernels that did not take the status record get it as a trailing argument, and their calls
become status sites (`add_status_site`), exactly like the kernels that check their indices.
"""

from __future__ import annotations

import functools
import math

from xdsl.context import Context
from xdsl.dialects import func, memref, vector
from xdsl.dialects.builtin import MemRefType, ModuleOp, UnitAttr, VectorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder
from ember.passes.conversion.kernel_to_loops.checks import (
    add_status_argument,
    record_error,
    reports_status,
)
from ember.passes.conversion.kernel_to_loops.lower import add_status_site
from ember.passes.program import STATUS_ROLE, argument_with_role, entry_function
from ember.runtime.status import OUT_OF_BOUNDS

CHECKED = "ember.memory_checked"
# Access op -> the name of its buffer operand. Masked vector loads and stores are not checked:
# their first lane may legally lie outside the buffer when it is masked off (implicit im2col
# does that at the padding), and which lanes are on is only known at run time.
_ACCESSES: dict[type[Operation], str] = {
    memref.LoadOp: "memref",
    memref.StoreOp: "memref",
    vector.LoadOp: "base",
    vector.StoreOp: "base",
}


def _extent(t: MemRefType) -> int | None:
    """1 + the largest linear offset an index of `t` may reach (None: not static)."""
    shape, strides = t.get_shape(), t.get_strides()
    if strides is None or any(s is None or s < 0 for s in strides) or any(d < 0 for d in shape):
        return None
    if 0 in shape:
        return 0
    return 1 + sum((d - 1) * int(s) for d, s in zip(shape, strides))  # type: ignore[arg-type]


def _lanes(op: Operation) -> int:
    for value in (*op.results, *op.operands):
        if isinstance(value.type, VectorType):
            return math.prod(value.type.get_shape())
    return 1


class CheckMemoryAccesses(ModulePass):
    """Bounds-checks every kernel load and store at run time, reporting through the status record."""

    name = "check-memory-accesses"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        entry = entry_function(op)
        status = argument_with_role(entry, STATUS_ROLE)
        if status is None:
            raise ValueError(f"{self.name}: run lower-kernels-to-loops first (no status record)")
        kernels = {
            f.sym_name.data: f
            for f in op.ops
            if isinstance(f, func.FuncOp) and f is not entry and f.body.blocks
        }
        for call in [c for c in entry.walk() if isinstance(c, func.CallOp)]:
            kernel = kernels.get(call.callee.root_reference.data)
            if kernel is None or (CHECKED in kernel.attributes and status in call.arguments):
                continue  # not a kernel, or this call is already a checked site
            if not reports_status(kernel):
                add_status_argument(kernel)
            if CHECKED not in kernel.attributes:
                _check_accesses(kernel)
                kernel.attributes[CHECKED] = UnitAttr()
            if status not in call.arguments:
                add_status_site(entry, call, status)


def _check_accesses(fn: func.FuncOp) -> None:
    block = fn.body.block
    status = block.args[-1]
    root = LoopBuilder(block)
    for access in [o for o in fn.walk() if type(o) in _ACCESSES]:
        buffer: SSAValue = getattr(access, _ACCESSES[type(access)])
        t = buffer.type
        extent = _extent(t) if isinstance(t, MemRefType) else None
        width = _lanes(access)
        if buffer is status or extent is None or extent < width:
            continue
        indices = list(access.indices)  # type: ignore[attr-defined]
        strides = [int(s) for s in t.get_strides()]  # type: ignore[union-attr, arg-type]
        b = root.before(access)
        offset = b.index(0)
        for index, stride in zip(indices, strides, strict=True):
            offset = b.add(offset, b.mul(index, stride) if stride != 1 else index)
        # Unsigned: a negative offset compares as huge.
        bad = b.cmp_index("ugt", offset, extent - width)
        argument = block.args.index(buffer) if buffer in block.args else -1
        record = functools.partial(
            record_error,
            status=status,
            code=OUT_OF_BOUNDS,
            value=offset,
            bound=extent,
            dim=argument,
        )
        b.if_(bad, record)
        safe = {index: b.select(bad, b.index(0), index) for index in indices}
        access.operands = [safe.get(v, v) for v in access.operands]
