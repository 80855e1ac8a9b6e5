"""lower-kernels-to-loops: turn each kernel op into a call of a loop-nest function.

Each distinct kernel op (same operand types, properties and body) is lowered once by its
registered lowering into a private `func.func` of scf/arith/memref/vector/math ops; every
occurrence becomes a `func.call`. `kernel.reshape` views become `memref.reinterpret_cast`.
A kernel function with `?` dims in its memrefs takes their sizes as trailing `index`
arguments (dialects/extents.py): its call passes `memref.dim` of the operands there.

The entry function gets the run's status record as its last argument (runtime/status.py). A call
of a kernel that checks its data (checks.py) passes the record and is followed by a stamp: if the
record holds an error and no call site yet, this call's site number. The sites, in order, are
recorded on the entry function as `ember.status_sites` ({op_type, node, kernel}; the ONNX origin
comes from the kernel op's `ember.origin`, which the call keeps).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith, func, memref, scf
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    IndexType,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    i64,
)
from xdsl.ir import Block, Operation, SSAValue
from xdsl.irdl import IRDLOperation

from ember.dialects import kernel
from ember.dialects.extents import dim_of, extent_operands, has_dynamic_dims
from ember.dialects.graph import shape_of
from ember.passes.conversion.kernel_to_loops.checks import STATUS_TYPE, reports_status
from ember.passes.conversion.kernel_to_loops.registry import lowering_for
from ember.passes.options import MAX_THREADS, TargetPass, check_range
from ember.passes.program import (
    ORIGIN,
    STATUS_ROLE,
    append_argument,
    entry_function,
    origin_of,
)
from ember.runtime.errors import ResourceLimitError
from ember.runtime.status import CODE, SITE

STATUS_SITES = "ember.status_sites"


def kernel_signature(op: Operation) -> str:
    """The op printed on fresh block arguments: equal strings mean one shared function."""
    block = Block(arg_types=[v.type for v in op.operands])
    clone = op.clone(value_mapper=dict(zip(op.operands, block.args)))
    clone.attributes.pop(ORIGIN, None)  # where an op comes from does not change its code
    block.add_op(clone)
    return str(clone)


def row_major_strides(shape: tuple[int, ...]) -> list[int]:
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return list(reversed(strides))


@dataclass(frozen=True)
class LowerKernelsToLoops(TargetPass):
    """Replaces kernel ops with calls to deduplicated loop-nest functions (scf/vector/memref)."""

    name = "lower-kernels-to-loops"

    # Work units a parallel kernel is cut into are sized for this many threads (1: serial).
    threads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "threads", 1, MAX_THREADS)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        target = self.target(ctx)
        fn = entry_function(op)
        if STATUS_SITES in fn.attributes:
            raise ValueError(f"{self.name}: the entry function is already lowered")
        status = append_argument(fn, STATUS_TYPE, STATUS_ROLE)
        fn.attributes[STATUS_SITES] = ArrayAttr([])
        for loop in [o for o in fn.walk() if isinstance(o, scf.WhileOp)]:
            _stop_on_error(loop, status)
        functions: dict[str, str] = {}
        lowered_functions: dict[str, func.FuncOp] = {}
        checked: set[str] = set()
        counts: dict[str, int] = {}
        # Kernels inside the scf ops of graph.loop/graph.if bodies too (not the scalar bodies
        # of kernel.elementwise: those are not kernel ops).
        kernel_ops = [
            o for o in fn.walk() if isinstance(o, (kernel.ReshapeOp, *kernel.COMPUTE_OPS))
        ]
        # A kernel shares a function only with one of its own op class (its printed form, the
        # signature, starts with the op's name): the only op of its class needs no signature
        # (cloning and printing it was a fifth of this pass on a one-op model).
        of_class = Counter(type(o) for o in kernel_ops)
        for kernel_op in kernel_ops:
            if isinstance(kernel_op, kernel.ReshapeOp):
                self._lower_reshape(kernel_op)
            elif isinstance(kernel_op, kernel.COMPUTE_OPS) and all(
                0 in shape_of(v) for v in kernel_op.operands
            ):
                # Only empty buffers (an empty graph output's copy): nothing to read or write.
                kernel_op.detach()
                kernel_op.erase()
            elif isinstance(kernel_op, kernel.COMPUTE_OPS):
                assert isinstance(kernel_op, IRDLOperation)
                if len(kernel_op.operands) > kernel.MAX_OPERANDS:
                    raise ResourceLimitError(
                        f"{kernel_op.name} takes {len(kernel_op.operands)} buffers, more than "
                        f"the {kernel.MAX_OPERANDS} one kernel call may take"
                    )
                key = kernel_signature(kernel_op) if of_class[type(kernel_op)] > 1 else None
                name = None if key is None else functions.get(key)
                if name is None:
                    short = kernel_op.name.removeprefix("kernel.")
                    counts[short] = counts.get(short, 0) + 1
                    name = f"{short}_{counts[short]}"
                    if key is not None:
                        functions[key] = name
                    lowered = lowering_for(kernel_op)(kernel_op, target, name)
                    lowered_functions[name] = lowered
                    lowered.sym_visibility = StringAttr("private")
                    op.body.block.add_op(lowered)
                    if reports_status(lowered):
                        checked.add(name)
                sizes_ops, sizes = extent_operands(lowered_functions[name], kernel_op.operands)
                call = func.CallOp(name, [*kernel_op.operands, *sizes], [])
                if ORIGIN in kernel_op.attributes:
                    call.attributes[ORIGIN] = kernel_op.attributes[ORIGIN]
                kernel_op.parent_block().insert_ops_before([*sizes_ops, call], kernel_op)  # type: ignore[union-attr]
                if name in checked:
                    add_status_site(fn, call, status)
                kernel_op.detach()
                kernel_op.erase()

    @staticmethod
    def _lower_reshape(op: kernel.ReshapeOp) -> None:
        shape = shape_of(op.output)
        if has_dynamic_dims(op.input) or has_dynamic_dims(op.output):
            cast_ops = _dynamic_reshape(op)
        else:
            cast_ops = [
                memref.ReinterpretCastOp(
                    op.input, [], [], [], [0], list(shape), row_major_strides(shape), op.output.type
                )
            ]
        op.parent_block().insert_ops_before(cast_ops, op)  # type: ignore[union-attr]
        cast = cast_ops[-1]
        op.output.replace_all_uses_with(cast.result)
        op.detach()
        op.erase()


def _dynamic_reshape(op: kernel.ReshapeOp) -> list[Operation]:
    """A `kernel.reshape` with `?` dims as a `memref.reinterpret_cast` (its last op) whose one
    `?` size, the outermost dim of the output, is the input's element count (read with
    `memref.dim`) over the output's static dims: the strides stay static. Other `?` outputs
    (more than one, or not outermost: which sizes they split into is not in the types) are
    refused."""
    out_shape = list(shape_of(op.output))
    in_shape = list(shape_of(op.input))
    dynamic = [d for d, n in enumerate(out_shape) if n < 0]
    if dynamic != [0]:
        raise NotImplementedError(
            "kernel.reshape with runtime extents takes one `?` dim in its output, the "
            f"outermost: {op.input.type} -> {op.output.type}"
        )
    ops: list[Operation] = []
    count: SSAValue | None = None
    for d, n in enumerate(in_shape):
        if n < 0:
            read = dim_of(op.input, d)
            ops += read
            size = read[-1].results[0]
        else:
            constant = arith.ConstantOp(IntegerAttr(n, IndexType()))
            ops.append(constant)
            size = constant.result
        if count is None:
            count = size
        else:
            product = arith.MuliOp(count, size)
            ops.append(product)
            count = product.result
    inner = math.prod(out_shape[1:])
    assert count is not None
    if inner != 1:
        divisor = arith.ConstantOp(IntegerAttr(inner, IndexType()))
        quotient = arith.DivUIOp(count, divisor.result)
        ops += [divisor, quotient]
        count = quotient.result
    strides = row_major_strides([1, *out_shape[1:]])
    ops.append(
        memref.ReinterpretCastOp(op.input, [], [count], [], [0], out_shape, strides, op.output.type)
    )
    return ops


def _stop_on_error(loop: scf.WhileOp, status: SSAValue) -> None:
    """A graph.loop's scf.while also ends once a kernel has reported an error: the run's
    outputs are discarded anyway, and a condition computed from clamped data (a bad index)
    must not keep an unbounded loop going."""
    condition = loop.before_region.block.last_op
    assert isinstance(condition, scf.ConditionOp)
    code_at = arith.ConstantOp(IntegerAttr(CODE, IndexType()))
    zero = arith.ConstantOp(IntegerAttr(0, i64))
    code = memref.LoadOp.get(status, [code_at.result])
    clean = arith.CmpiOp(code.res, zero.result, "eq")
    go = arith.AndIOp(condition.condition, clean.result)
    loop.before_region.block.insert_ops_before([code_at, zero, code, clean, go], condition)
    condition.operands = [go.result, *condition.args]


def add_status_site(entry: func.FuncOp, call: func.CallOp, status: SSAValue) -> None:
    """Pass the status record to `call` (of a kernel that takes it) and make the call a site:
    listed in the entry's `ember.status_sites` (with the ONNX origin the call carries) and
    stamped after it."""
    call.operands = [*call.operands, status]
    origin = origin_of(call)
    site = {k: StringAttr(v) for k, v in origin.items() if k in ("op_type", "node")}
    site["kernel"] = StringAttr(call.callee.root_reference.data)
    known = entry.attributes.get(STATUS_SITES)
    sites = [*(known.data if isinstance(known, ArrayAttr) else ()), DictionaryAttr(site)]
    entry.attributes[STATUS_SITES] = ArrayAttr(sites)
    _stamp_site(call, status, len(sites))


def _stamp_site(call: func.CallOp, status: SSAValue, site: int) -> None:
    """After `call`: status[SITE] = site if status[CODE] != 0 and status[SITE] == 0.

    Straight-line code (no branch): kernels run in order, so the first failing call is the
    first one after which the record holds an error.
    """
    block = call.parent_block()
    assert block is not None and call.next_op is not None
    code_at = arith.ConstantOp(IntegerAttr(CODE, IndexType()))
    site_at = arith.ConstantOp(IntegerAttr(SITE, IndexType()))
    zero = arith.ConstantOp(IntegerAttr(0, i64))
    number = arith.ConstantOp(IntegerAttr(site, i64))
    code = memref.LoadOp.get(status, [code_at.result])
    old = memref.LoadOp.get(status, [site_at.result])
    failed = arith.CmpiOp(code.res, zero.result, "ne")
    unstamped = arith.CmpiOp(old.res, zero.result, "eq")
    stamp = arith.AndIOp(failed.result, unstamped.result)
    new = arith.SelectOp(stamp.result, number.result, old.res)
    store = memref.StoreOp.get(new.result, status, [site_at.result])
    ops = [code_at, site_at, zero, number, code, old, failed, unstamped, stamp, new, store]
    block.insert_ops_after(ops, call)


def status_sites(fn: func.FuncOp) -> list[dict[str, str]] | None:
    """The checked call sites of a lowered entry function, in site order (None: no status)."""
    sites = fn.attributes.get(STATUS_SITES)
    if not isinstance(sites, ArrayAttr):
        return None
    result = []
    for site in sites.data:
        assert isinstance(site, DictionaryAttr)
        result.append({k: v.data for k, v in site.data.items() if isinstance(v, StringAttr)})
    return result
