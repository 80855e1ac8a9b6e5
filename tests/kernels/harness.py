"""Run one kernel op end to end: lower it to loops, JIT it, call it on numpy buffers.

    out = np.empty(...)
    run_kernel_op(make_op, [x, w, out])   # `out` is written in place

`make_op(args)` builds the kernel op from block arguments typed after the arrays.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence

import numpy as np
from xdsl.dialects.builtin import MemRefType, ModuleOp, f32, f64, i1, i8, i32, i64
from xdsl.ir import Attribute, Block, SSAValue
from xdsl.irdl import IRDLOperation

from ember.codegen.jit import JitModule
from ember.core.target import Target, host_target
from ember.passes.conversion.kernel_to_loops.checks import reports_status
from ember.passes.conversion.kernel_to_loops.registry import lowering_for
from ember.runtime.status import check_status, new_status

_ELEMENT_TYPES: dict[np.dtype, Attribute] = {
    np.dtype(np.float32): f32,
    np.dtype(np.float64): f64,
    np.dtype(np.int64): i64,
    np.dtype(np.int32): i32,
    np.dtype(np.int8): i8,
    np.dtype(np.bool_): i1,
}


def memref_type(array: np.ndarray) -> MemRefType:
    return MemRefType(_ELEMENT_TYPES[array.dtype], array.shape)


def run_function(
    module: ModuleOp,
    name: str,
    arrays: Sequence[np.ndarray],
    target: Target | None = None,
    threads: int = 1,
) -> JitModule:
    """JIT `module` and call `name` with a pointer to each array (arrays are written in place)."""
    for array in arrays:
        assert array.flags.c_contiguous, "kernels take C-contiguous buffers"
    jit = JitModule(module, target or host_target(threads))
    jit.function("ember_set_num_threads", [ctypes.c_int32])(threads)
    fn = jit.function(name, [ctypes.c_void_p] * len(arrays))
    fn(*[array.ctypes.data for array in arrays])
    return jit


def run_kernel_op(
    make_op: Callable[[Sequence[SSAValue]], IRDLOperation],
    arrays: Sequence[np.ndarray],
    target: Target | None = None,
    threads: int = 1,
) -> ModuleOp:
    """Build the op on buffers typed like `arrays`, lower it, run it; returns the lowered module.

    A kernel that checks its data gets a status record too; an error in it raises KernelError.
    """
    target = target or host_target(threads)
    block = Block(arg_types=[memref_type(a) for a in arrays])
    op = make_op(block.args)
    block.add_op(op)
    fn = lowering_for(op)(op, target, "kernel_under_test")
    module = ModuleOp([fn])
    module.verify()
    status = new_status() if reports_status(fn) else None
    extra = [] if status is None else [status]
    run_function(module, "kernel_under_test", [*arrays, *extra], target, threads)
    if status is not None:
        check_status(status, [{"kernel": "kernel_under_test"}])
    return module
