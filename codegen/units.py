"""Split an ember program into LLVM compilation units that are optimized and compiled apart.

A lowered program is an entry function (`main`, marked `ember.input_names`) calling one
private `func.func` per distinct kernel. Each kernel becomes its own LLVM module, the entry
function (with every other public function) another: units compile in parallel, are cached
one by one, and O3 no longer inlines every kernel into one huge `main`.

A kernel symbol must then link across units: it gets external linkage under the
deterministic name `ember.<kernel>` (hidden for a shared library). Private helpers a kernel
calls stay internal copies in its unit. Only the entry unit defines `ember_num_threads`,
`ember_set_num_threads` and the run's thread team (`ember_team`, `ember_team_run`: team.py). A module without an entry function (hand-written tests, single
kernels) is one unit, translated exactly as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from ember.codegen.llvm_emitter import ENTRY_MARK, ModuleEmitter, is_private, module_functions
from ember.core.target import Target

KERNEL_PREFIX = "ember."


@dataclass(frozen=True)
class UnitPlan:
    """One LLVM module: the functions whose bodies it holds (helpers are pulled in on use)."""

    name: str
    define: tuple[str, ...] | None  # None: the whole module
    is_entry: bool
    ops: int = 0  # ops in the defined functions: a rough measure of the work


@dataclass(frozen=True)
class Partition:
    units: tuple[UnitPlan, ...]
    # kernel function (ember name) -> its LLVM symbol, shared by every unit
    symbols: dict[str, str] = field(default_factory=dict)


def partition(module: ModuleOp) -> Partition:
    """The units of `module`: entry unit first, then one per kernel in module order."""
    funcs = module_functions(module)
    entries = [f for f in funcs if ENTRY_MARK in f.attributes]
    with_body = [f for f in funcs if f.body.blocks]
    public = tuple(f.sym_name.data for f in with_body if not is_private(f))
    if not entries:
        return Partition((UnitPlan("module", None, True, _count_ops(with_body)),))
    # Kernels are the private functions the entry calls (other calls inside kernels are
    # to helpers, which stay internal to the kernel's unit).
    private = {f.sym_name.data for f in with_body if is_private(f)}
    called: dict[str, None] = {}
    for entry in entries:
        for op in entry.walk():
            if isinstance(op, func.CallOp):
                callee = op.callee.root_reference.data
                if callee in private:
                    called[callee] = None
    kernels = [f for f in with_body if f.sym_name.data in called]
    units = [UnitPlan("entry", public, True, _count_ops(entries))]
    units += [
        UnitPlan(f.sym_name.data, (f.sym_name.data,), False, _count_ops([f])) for f in kernels
    ]
    return Partition(
        tuple(units), {f.sym_name.data: KERNEL_PREFIX + f.sym_name.data for f in kernels}
    )


def _count_ops(funcs: list[func.FuncOp]) -> int:
    return sum(1 for f in funcs for _ in f.walk())


def emit_unit(
    module: ModuleOp, part: Partition, unit: UnitPlan, target: Target, hidden: bool
) -> str:
    """The LLVM IR text of one unit (deterministic: it is the unit's cache key)."""
    emitter = ModuleEmitter(
        target,
        name=f"ember.{unit.name}",
        symbols=part.symbols,
        hidden=hidden,
        define_runtime=unit.is_entry,
    )
    return str(emitter.emit(module, define=unit.define))
