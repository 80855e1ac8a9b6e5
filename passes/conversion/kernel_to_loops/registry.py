"""Where each kernel op's lowering to loops is registered.

A lowering builds one `func.func` for one kernel op: its arguments are the op's operands in
order (absent optional operands are simply not there), all memrefs, then the sizes of their
`?` dims (dialects/extents.py), then the status record if the kernel checks its data
(checks.py), and it returns nothing.

Runtime extents (issue 10, foundation): an op with a `?` dim in any operand goes to the
lowering registered with `runtime_extents=True`; a kernel without one is refused here, naming
the op and its types, never lowered with a static lowering that would misread the sizes.
The `lower-kernels-to-loops` pass calls it once per distinct op (same types and properties)
and replaces every such op with a `func.call`.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.dialects import func
from xdsl.irdl import IRDLOperation

from ember.core.target import Target
from ember.dialects.extents import has_dynamic_dims

KernelLowering = Callable[[IRDLOperation, Target, str], func.FuncOp]

_LOWERINGS: dict[type[IRDLOperation], KernelLowering] = {}
# Lowerings of ops whose operands have `?` dims (sizes known at run time only).
_RUNTIME_EXTENT_LOWERINGS: dict[type[IRDLOperation], KernelLowering] = {}


def lowering(
    op_type: type[IRDLOperation], *, runtime_extents: bool = False
) -> Callable[[KernelLowering], KernelLowering]:
    """Register `fn(op, target, name) -> func.FuncOp` as the lowering of `op_type` (with
    `runtime_extents`: of `op_type` with `?` dims)."""
    table = _RUNTIME_EXTENT_LOWERINGS if runtime_extents else _LOWERINGS

    def register(fn: KernelLowering) -> KernelLowering:
        table[op_type] = fn
        return fn

    return register


_loaded = False


def _load_lowerings() -> None:
    """Import every module of this package: each registers its lowerings with @lowering, so a
    new family of kernels is one new module here, listed nowhere."""
    global _loaded
    import importlib
    import pkgutil

    package = __name__.rpartition(".")[0]
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{module.name}")
    _loaded = True


def has_runtime_extent_lowering(op_type: type) -> bool:
    """Whether ops of `op_type` with `?` dims have a lowering (which may still refuse some
    operand types, naming them)."""
    # Not "the table is empty": a module imported on its own (a test's, a tool's) registers
    # its lowerings alone, and the others' would then look missing.
    if not _loaded:
        _load_lowerings()
    return op_type in _RUNTIME_EXTENT_LOWERINGS


def lowering_for(op: IRDLOperation) -> KernelLowering:
    if not _loaded:
        _load_lowerings()
    if any(has_dynamic_dims(v) for v in op.operands):
        lowered = _RUNTIME_EXTENT_LOWERINGS.get(type(op))
        if lowered is None:
            types = ", ".join(str(v.type) for v in op.operands)
            raise NotImplementedError(
                f"'{op.name}' has no lowering with runtime extents yet (`?` dims): {types}"
            )
        return lowered
    try:
        return _LOWERINGS[type(op)]
    except KeyError:
        raise NotImplementedError(f"no loop lowering registered for '{op.name}'") from None
