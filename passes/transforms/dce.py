"""dce: erase side-effect-free ops whose results are unused, and weights no op references any more.

Deadness is xDSL's (MLIR's wouldOpBeTriviallyDead): an op with no used result, no memory
effects beyond reads (every graph op is `Pure`, or, with regions, as pure as its bodies), that
is neither a terminator nor a symbol.
Ops with unknown effects (kernel ops writing their buffers) are kept."""

from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.passes import ModulePass
from xdsl.transforms.dead_code_elimination import is_trivially_dead

from ember.passes.transforms.graph_utils import weights_of


class DeadCodeElimination(ModulePass):
    """Erases unused side-effect-free ops and the weights no graph.constant/kernel.weight names."""

    name = "dce"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for block_op in op.walk():
            for region in block_op.regions:
                for block in region.blocks:
                    for inner in reversed(list(block.ops)):
                        if is_trivially_dead(inner):
                            block.erase_op(inner)
        referenced = {
            ref.data
            for inner in op.walk()
            if isinstance(ref := inner.properties.get("ref"), StringAttr)
        }
        weights = weights_of(ctx)
        for name in [n for n in weights if n not in referenced]:
            del weights[name]
