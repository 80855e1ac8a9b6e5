"""Where each kernel op's lowering to loops is registered.

A lowering builds one `func.func` for one kernel op: its arguments are the op's operands in
order (absent optional operands are simply not there), all memrefs, then the status record if
the kernel checks its data (checks.py), and it returns nothing.
The `lower-kernels-to-loops` pass calls it once per distinct op (same types and properties)
and replaces every such op with a `func.call`.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.dialects import func
from xdsl.irdl import IRDLOperation

from ember.core.target import Target

KernelLowering = Callable[[IRDLOperation, Target, str], func.FuncOp]

_LOWERINGS: dict[type[IRDLOperation], KernelLowering] = {}


def lowering(op_type: type[IRDLOperation]) -> Callable[[KernelLowering], KernelLowering]:
    """Register `fn(op, target, name) -> func.FuncOp` as the lowering of `op_type`."""

    def register(fn: KernelLowering) -> KernelLowering:
        _LOWERINGS[op_type] = fn
        return fn

    return register


def _load_lowerings() -> None:
    """Import every module of this package: each registers its lowerings with @lowering, so a
    new family of kernels is one new module here, listed nowhere."""
    import importlib
    import pkgutil

    package = __name__.rpartition(".")[0]
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{module.name}")


def lowering_for(op: IRDLOperation) -> KernelLowering:
    if type(op) not in _LOWERINGS:
        _load_lowerings()
    try:
        return _LOWERINGS[type(op)]
    except KeyError:
        raise NotImplementedError(f"no loop lowering registered for '{op.name}'") from None
