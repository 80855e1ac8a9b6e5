"""fold-constants: evaluate graph ops whose operands are all constants at compile time.

Results larger than `FOLD_LIMIT_BYTES` are not folded: the op stays a kernel and computes
them at run time, so compile time and the weights blob do not grow with tensor values.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern

from ember.dialects import graph
from ember.dialects.weights import WeightStore
from ember.passes.transforms.graph_utils import (
    apply_patterns,
    constant_array,
    new_constant,
    weights_of,
)
from ember.passes.transforms.numpy_eval import (
    EVALUATORS,
    evaluate,
    foldable_size,
    operand_slots,
)


@dataclass
class FoldConstantOp(RewritePattern):
    weights: WeightStore

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if isinstance(op, graph.ConstantOp) or op.name not in EVALUATORS or len(op.results) != 1:
            return
        if not foldable_size(op.results[0].type):  # type: ignore[arg-type]
            return
        slots = operand_slots(op)
        arrays = [None if v is None else constant_array(v, self.weights) for v in slots]
        if any(a is None for v, a in zip(slots, arrays, strict=True) if v is not None):
            return
        result = evaluate(op, arrays)
        hint = f"{op.name.removeprefix('graph.')}.folded"
        rewriter.replace(op, [], [new_constant(rewriter, self.weights, result, hint)])


class FoldConstants(ModulePass):
    """Replaces each graph op whose operands are all graph.constant by a folded constant."""

    name = "fold-constants"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        apply_patterns(op, [FoldConstantOp(weights_of(ctx))])
