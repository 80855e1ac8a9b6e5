"""lower-kernels-to-loops: turn each kernel op into a call of a loop-nest function.

Each distinct kernel op (same operand types, properties and body) is lowered once by its
registered lowering into a private `func.func` of scf/arith/memref/vector/math ops; every
occurrence becomes a `func.call`. `kernel.reshape` views become `memref.reinterpret_cast`.
"""

from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects import func, memref
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Block, Operation
from xdsl.irdl import IRDLOperation
from xdsl.passes import ModulePass

from ember.dialects import kernel
from ember.dialects.graph import shape_of
from ember.dialects.weights import EmberContext
from ember.passes.conversion.kernel_to_loops.registry import lowering_for
from ember.passes.program import entry_function
from ember.runtime.errors import ResourceLimitError


def kernel_signature(op: Operation) -> str:
    """The op printed on fresh block arguments: equal strings mean one shared function."""
    block = Block(arg_types=[v.type for v in op.operands])
    clone = op.clone(value_mapper=dict(zip(op.operands, block.args)))
    block.add_op(clone)
    return str(clone)


def row_major_strides(shape: tuple[int, ...]) -> list[int]:
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return list(reversed(strides))


class LowerKernelsToLoops(ModulePass):
    """Replaces kernel ops with calls to deduplicated loop-nest functions (scf/vector/memref)."""

    name = "lower-kernels-to-loops"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        assert isinstance(ctx, EmberContext), "ember passes need an EmberContext"
        fn = entry_function(op)
        functions: dict[str, str] = {}
        counts: dict[str, int] = {}
        for kernel_op in list(fn.body.block.ops):
            if isinstance(kernel_op, kernel.ReshapeOp):
                self._lower_reshape(kernel_op)
            elif isinstance(kernel_op, kernel.COMPUTE_OPS):
                assert isinstance(kernel_op, IRDLOperation)
                if len(kernel_op.operands) > kernel.MAX_OPERANDS:
                    raise ResourceLimitError(
                        f"{kernel_op.name} takes {len(kernel_op.operands)} buffers, more than "
                        f"the {kernel.MAX_OPERANDS} one kernel call may take"
                    )
                key = kernel_signature(kernel_op)
                name = functions.get(key)
                if name is None:
                    short = kernel_op.name.removeprefix("kernel.")
                    counts[short] = counts.get(short, 0) + 1
                    name = f"{short}_{counts[short]}"
                    functions[key] = name
                    lowered = lowering_for(kernel_op)(kernel_op, ctx.target, name)
                    lowered.sym_visibility = StringAttr("private")
                    op.body.block.add_op(lowered)
                call = func.CallOp(name, list(kernel_op.operands), [])
                kernel_op.parent_block().insert_op_before(call, kernel_op)  # type: ignore[union-attr]
                kernel_op.detach()
                kernel_op.erase()

    @staticmethod
    def _lower_reshape(op: kernel.ReshapeOp) -> None:
        shape = shape_of(op.output)
        cast = memref.ReinterpretCastOp(
            op.input, [], [], [], [0], list(shape), row_major_strides(shape), op.output.type
        )
        op.parent_block().insert_op_before(cast, op)  # type: ignore[union-attr]
        op.output.replace_all_uses_with(cast.result)
        op.detach()
        op.erase()
