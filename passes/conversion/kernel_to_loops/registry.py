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


# The modules whose import registers the lowerings, one per family of kernels.
KERNEL_MODULES = (
    "matmul",
    "conv",
    "elementwise",
    "reduction",
    "normalization",
    "pooling",
    "lrn",
    "data_movement",
    "structural",
    "recurrent",
    "qconv",
    "attention",
    # control flow
    "control_flow",
    "selection",
)


def _load_lowerings() -> None:
    import importlib

    for name in KERNEL_MODULES:
        importlib.import_module(f"ember.passes.conversion.kernel_to_loops.{name}")


def lowering_for(op: IRDLOperation) -> KernelLowering:
    if type(op) not in _LOWERINGS:
        _load_lowerings()
    try:
        return _LOWERINGS[type(op)]
    except KeyError:
        raise NotImplementedError(f"no loop lowering registered for '{op.name}'") from None
