"""fuse-attention: softmax(Q @ K^T * scale + mask) @ V, as exporters write it, -> graph.attention.

Matched (every intermediate used only inside the pattern, everything float32, rank 4):

    scores = matmul(q [B,H,Sq,D], k_t [B,H,D,Sk])        no epilogue, no batch broadcasting
    scaled = scores * c | c * scores | scores / c | scores      c a constant scalar
    masked = scaled + mask | mask + scaled | scaled               mask -> [B,H,Sq,Sk], last dim Sk
    probs  = softmax(masked, last axis)
    out    = matmul(probs, v [B,H,Sk,Dv])                   no epilogue

and around it the head split's transposes (perm [0, 2, 1, 3]) of q and v (when used only
here) and of the output (when its only user): the attention op reads and writes those
[B, S, H, D] tensors directly (`seq_major`). Anything else (softmax on another axis, a log
softmax, probabilities used elsewhere, a mask over the key axis of size 1, value heads wider
than MAX_VALUE_HEAD_SIZE, other types) is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import FloatAttr, ModuleOp, TensorType, f32
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern

from ember.dialects import graph
from ember.dialects.weights import WeightStore
from ember.passes.program import ORIGIN, absorb_origins
from ember.passes.transforms.graph_utils import (
    apply_patterns,
    erase_unused,
    scalar_value,
    weights_of,
)

HEADS_FIRST = (0, 2, 1, 3)  # [B, S, H, D] <-> [B, H, S, D]
# The kernel keeps an MR x Dv accumulator per thread on the stack (16 KiB at MR = 8).
MAX_VALUE_HEAD_SIZE = 512


def _plain_matmul(value: SSAValue) -> graph.MatMulOp | None:
    op = value.owner
    if isinstance(op, graph.MatMulOp) and value.has_one_use():
        if op.bias is None and op.residual is None and op.activation is None:
            return op
    return None


def _is_f32(*values: SSAValue) -> bool:
    return all(graph.element_type_of(v) == f32 for v in values)


def _head_split(value: SSAValue) -> SSAValue | None:
    """The [B, S, H, D] tensor `value` transposes to [B, H, S, D], when that is its only use."""
    op = value.owner
    if isinstance(op, graph.TransposeOp) and value.has_one_use():
        if graph.int_values(op.perm) == HEADS_FIRST:
            return op.input
    return None


@dataclass
class FuseAttentionPattern(RewritePattern):
    weights: WeightStore

    def _scale(self, value: SSAValue, dead: list[Operation]) -> tuple[SSAValue, float] | None:
        """(the q @ k_t scores, scale) behind `value` = scores * c, c * scores, scores / c."""
        op = value.owner
        if isinstance(op, graph.MulOp | graph.DivOp) and value.has_one_use():
            pairs = [(op.lhs, op.rhs)]
            if isinstance(op, graph.MulOp):
                pairs.append((op.rhs, op.lhs))
            for scores, factor_v in pairs:
                factor = scalar_value(factor_v, self.weights)
                if factor is None or graph.shape_of(factor_v) not in ((), (1,)):
                    continue
                if isinstance(op, graph.DivOp):
                    if factor == 0.0 or not np.isfinite(factor):
                        continue
                    factor = float(np.float32(1.0) / np.float32(factor))
                if _plain_matmul(scores) is not None and np.isfinite(factor):
                    dead.append(op)
                    return scores, factor
            return None
        return (value, 1.0) if _plain_matmul(value) is not None else None

    def _scores(
        self, value: SSAValue, shape: tuple[int, ...], dead: list[Operation]
    ) -> tuple[SSAValue, float, SSAValue | None] | None:
        """(q @ k_t, scale, mask) behind the softmax's input."""
        op = value.owner
        if isinstance(op, graph.AddOp) and value.has_one_use():
            for scaled, mask in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
                mask_shape = graph.shape_of(mask)
                if len(mask_shape) > 4 or not mask_shape or mask_shape[-1] != shape[-1]:
                    continue
                if not graph.broadcasts_to(mask_shape, shape) or not _is_f32(mask):
                    continue
                found = self._scale(scaled, dead)
                if found is not None:
                    dead.append(op)
                    return *found, mask
            return None
        found = self._scale(value, dead)
        return None if found is None else (*found, None)

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.MatMulOp, rewriter: PatternRewriter) -> None:
        if op.bias is not None or op.residual is not None or op.activation is not None:
            return
        softmax, v = op.a.owner, op.b
        if not isinstance(softmax, graph.SoftmaxOp) or softmax.log is not None:
            return
        shape = graph.shape_of(softmax.input)
        if len(shape) != 4 or softmax.axis.value.data % 4 != 3 or not op.a.has_one_use():
            return
        if 0 in shape or not _is_f32(op.output, softmax.input, v):
            return
        dead: list[Operation] = [softmax]
        found = self._scores(softmax.input, shape, dead)
        if found is None:
            return
        scores, scale, mask = found
        qk = scores.owner
        assert isinstance(qk, graph.MatMulOp)
        q, k_t = qk.a, qk.b
        b, h, sq, sk = shape
        if graph.shape_of(scores) != shape or not _is_f32(q, k_t):
            return
        if len(graph.shape_of(q)) != 4 or len(graph.shape_of(k_t)) != 4:
            return
        if graph.shape_of(q)[:2] != (b, h) or graph.shape_of(k_t)[:2] != (b, h):
            return
        if len(graph.shape_of(v)) != 4 or graph.shape_of(v)[:3] != (b, h, sk):
            return
        if graph.shape_of(v)[3] > MAX_VALUE_HEAD_SIZE:
            return
        dead.append(qk)
        if mask is not None and len(graph.shape_of(mask)) < 4:
            mask_shape = (1,) * (4 - len(graph.shape_of(mask))) + graph.shape_of(mask)
            reshape = graph.ReshapeOp.build(
                operands=[mask],
                result_types=[TensorType(graph.element_type_of(mask), mask_shape)],
            )
            rewriter.insert(reshape)
            mask = reshape.output
        seq_major = [0, 0, 0]
        for slot, value in enumerate((q, v)):
            split = _head_split(value)
            if split is not None:
                dead.append(value.owner)  # type: ignore[arg-type]
                seq_major[slot] = 1
                if slot == 0:
                    q = split
                else:
                    v = split
        replaced: Operation = op
        out_type = op.output.type
        user = next(iter(op.output.uses)).operation if op.output.has_one_use() else None
        if isinstance(user, graph.TransposeOp) and graph.int_values(user.perm) == HEADS_FIRST:
            dead.append(op)
            replaced, out_type, seq_major[2] = user, user.output.type, 1
        fused = graph.AttentionOp.build(
            operands=[q, k_t, v, mask],
            result_types=[out_type],
            properties={"scale": FloatAttr(scale, f32), "seq_major": graph.i64_array(seq_major)},
        )
        if ORIGIN in softmax.attributes:
            fused.attributes[ORIGIN] = softmax.attributes[ORIGIN]
            absorb_origins(fused, *dead, replaced)
        rewriter.replace(replaced, fused)
        erase_unused(rewriter, dead)


class FuseAttention(ModulePass):
    """Fuses matmul(q, k_t) [* scale] [+ mask] -> softmax -> matmul(., v) into graph.attention."""

    name = "fuse-attention"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        apply_patterns(op, [FuseAttentionPattern(weights_of(ctx))])
