"""fold-constants: evaluate graph ops whose operands are all constants at compile time.

The pass knows no op: it asks each op for its numpy semantics (`evaluate`, see
dialects/numpy_eval.py), and an op that declares none is simply not folded.

Results larger than `FOLD_LIMIT_BYTES` are not folded: the op stays a kernel and computes
them at run time, so compile time and the weights blob do not grow with tensor values. A
result that only ever becomes a conv weight or a matmul B (through transposes, reshapes,
casts) folds up to `WEIGHT_FOLD_LIMIT_BYTES`: it is a weight, which those kernels pack at
compile time (the light models' fully connected weights are ConstantOfShape fills of 400 MB).
The options `fold-limit-bytes` and `weight-fold-limit-bytes` set either limit for one run of
the pass (`fold-constants{fold-limit-bytes=0}` folds nothing but the empty results).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern

from ember.core import limits
from ember.dialects import graph
from ember.dialects.numpy_eval import evaluate, has_semantics, operand_slots, result_bytes
from ember.dialects.weights import WeightStore
from ember.passes.options import MAX_BYTES, check_range
from ember.passes.transforms.graph_utils import (
    apply_patterns,
    constant_array,
    new_constant,
    weights_of,
)

# Ops that only relayout a weight on its way to the kernel that packs it.
_LAYOUT_OPS = (graph.TransposeOp, graph.ReshapeOp, graph.CastOp, graph.ExpandOp)


def _only_a_weight(value: SSAValue) -> bool:
    """Whether every use of `value` ends, through layout ops, as the weight operand (#1) of a
    conv, matmul or gemm."""
    for use in value.uses:
        user = use.operation
        if isinstance(user, graph.ConvOp | graph.MatMulOp | graph.GemmOp) and use.index == 1:
            continue
        if isinstance(user, _LAYOUT_OPS) and _only_a_weight(user.results[0]):
            continue
        return False
    return bool(value.uses)


@dataclass
class FoldConstantOp(RewritePattern):
    weights: WeightStore
    limit_bytes: int
    weight_limit_bytes: int

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if not has_semantics(type(op)) or len(op.results) != 1:
            return
        if graph.integer_only_reason(op) is not None:  # its float32 input may be inexact
            return
        result_type = op.results[0].type
        if not isinstance(result_type, TensorType):
            return
        limit = self.limit_bytes
        if _only_a_weight(op.results[0]):
            limit = self.weight_limit_bytes
        if result_bytes(result_type) > limit:
            return
        slots = operand_slots(op)
        arrays = [None if v is None else constant_array(v, self.weights) for v in slots]
        if any(a is None for v, a in zip(slots, arrays, strict=True) if v is not None):
            return
        result = evaluate(op, arrays)
        hint = f"{op.name.removeprefix('graph.')}.folded"
        rewriter.replace(op, [], [new_constant(rewriter, self.weights, result, hint)])


@dataclass(frozen=True)
class FoldConstants(ModulePass):
    """Replaces each graph op whose operands are all graph.constant by a folded constant."""

    name = "fold-constants"

    # Largest result folded, in bytes (unset: core/limits.py's FOLD_LIMIT_BYTES) ...
    fold_limit_bytes: int | None = None
    # ... and of a result that only becomes a conv/matmul weight (WEIGHT_FOLD_LIMIT_BYTES).
    weight_fold_limit_bytes: int | None = None

    def __post_init__(self) -> None:
        check_range(self, "fold_limit_bytes", 0, MAX_BYTES)
        check_range(self, "weight_fold_limit_bytes", 0, MAX_BYTES)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        # The limits are read when the pass runs, not when it is built (tests patch them).
        limit = limits.FOLD_LIMIT_BYTES if self.fold_limit_bytes is None else self.fold_limit_bytes
        weight_limit = (
            limits.WEIGHT_FOLD_LIMIT_BYTES
            if self.weight_fold_limit_bytes is None
            else self.weight_fold_limit_bytes
        )
        apply_patterns(op, [FoldConstantOp(weights_of(ctx), limit, weight_limit)])
