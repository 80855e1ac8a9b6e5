"""dce: erase graph ops whose results are unused, and weights no op references any more."""

from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from ember.passes.transforms.graph_utils import weights_of


def _is_dead(op: Operation) -> bool:
    # Every graph op is free of side effects (conv/matmul just lack the Pure trait).
    return op.name.startswith("graph.") and all(not r.uses for r in op.results)


class DeadCodeElimination(ModulePass):
    """Erases unused graph ops and drops the weights that no graph.constant/kernel.weight names."""

    name = "dce"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for block_op in op.walk():
            for region in block_op.regions:
                for block in region.blocks:
                    for inner in reversed(list(block.ops)):
                        if _is_dead(inner):
                            block.erase_op(inner)
        referenced = {
            ref.data
            for inner in op.walk()
            if isinstance(ref := inner.properties.get("ref"), StringAttr)
        }
        weights = weights_of(ctx)
        for name in [n for n in weights if n not in referenced]:
            del weights[name]
