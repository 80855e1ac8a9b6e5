"""fuse-layer-norm: LayerNorm written out as ops (exports before opset 17) -> graph.layer_norm.

Matched, after canonicalize (x float32; reductions over the same trailing axes [a, rank) with
keepdims; every intermediate used only inside the pattern):

    mean = reduce_mean(x);  d = x - mean
    var  = reduce_mean(d * d | pow(d, 2))
    y    = d / sqrt(var + eps | eps + var)            eps a constant scalar >= 0
    [y * scale | scale * y]  [+ bias | bias + y]     constants varying only over [a, rank)

The one kernel computes the same two-pass mean and variance, then (x - mean) * (1 / sqrt(var
+ eps)) * scale + bias: results differ from the op-by-op form by rounding only (a reciprocal
and a multiply instead of a division).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, ModuleOp, f32, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern

from ember.dialects import graph
from ember.dialects.weights import WeightStore
from ember.passes.transforms.graph_utils import (
    apply_patterns,
    const_hint,
    constant_array,
    erase_unused,
    new_constant,
    only_user,
    scalar_value,
    weights_of,
)


def _mean_axes(value: SSAValue) -> tuple[SSAValue, int] | None:
    """(input, first axis) when `value` is a keepdims mean over the input's trailing axes."""
    op = value.owner
    if not isinstance(op, graph.ReduceOp) or op.reduction.data != "mean":
        return None
    rank = len(graph.shape_of(op.input))
    axes = sorted(a % rank for a in graph.int_values(op.axes)) if rank else []
    if not axes or op.keepdims.value.data != 1 or axes != list(range(axes[0], rank)):
        return None
    return op.input, axes[0]


@dataclass
class FuseLayerNormPattern(RewritePattern):
    weights: WeightStore

    def _affine(self, value: SSAValue, kind: type[Operation], x_shape: tuple[int, ...], axis: int):
        """(op, normalized-shape constant) when the only user of `value` is `kind` by a
        constant that varies only over axes [axis, rank)."""
        user = only_user(value)
        if not isinstance(user, kind) or user.results[0].type != value.type:
            return None
        other = user.rhs if user.lhs is value else user.lhs  # type: ignore[attr-defined]
        array = constant_array(other, self.weights)
        if array is None or array.dtype != np.float32 or array.ndim > len(x_shape):
            return None
        full = array.reshape((1,) * (len(x_shape) - array.ndim) + array.shape)
        if any(d != 1 for d in full.shape[:axis]):
            return None
        try:
            normalized = np.broadcast_to(full.reshape(full.shape[axis:]), x_shape[axis:])
        except ValueError:
            return None
        return user, normalized

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.DivOp, rewriter: PatternRewriter) -> None:
        centered, root = op.lhs, op.rhs
        sub = centered.owner
        if not isinstance(sub, graph.SubOp) or not isinstance(sqrt := root.owner, graph.SqrtOp):
            return
        found = _mean_axes(sub.rhs)
        if found is None or found[0] is not sub.lhs or not sub.rhs.has_one_use():
            return
        x, axis = found
        shape = graph.shape_of(x)
        if graph.element_type_of(x) != f32 or op.output.type != x.type or sub.output.type != x.type:
            return
        eps_add = sqrt.input.owner
        if not isinstance(eps_add, graph.AddOp) or not root.has_one_use():
            return
        if not sqrt.input.has_one_use():
            return
        candidates = [
            (var, eps)
            for var, eps_v in ((eps_add.lhs, eps_add.rhs), (eps_add.rhs, eps_add.lhs))
            if (eps := scalar_value(eps_v, self.weights)) is not None
            and np.isfinite(eps)
            and eps >= 0.0
        ]
        if not candidates:
            return
        var, eps = candidates[0]
        var_found = _mean_axes(var)
        if var_found is None or var_found[1] != axis or not var.has_one_use():
            return
        square_v = var_found[0]
        square = square_v.owner
        if not square_v.has_one_use():
            return
        if isinstance(square, graph.MulOp) and square.lhs is centered and square.rhs is centered:
            pass
        elif isinstance(square, graph.PowOp) and square.lhs is centered:
            if scalar_value(square.rhs, self.weights) != 2.0:
                return
        else:
            return
        if any(use.operation not in (square, op) for use in centered.uses):
            return
        matched: list[Operation] = [op, sqrt, eps_add, var.owner, square, sub, sub.rhs.owner]  # type: ignore[list-item]
        last: Operation = op
        scale = self._affine(op.output, graph.MulOp, shape, axis)
        if scale is not None:
            last = scale[0]
        bias = self._affine(last.results[0], graph.AddOp, shape, axis)
        if bias is not None:
            last = bias[0]
        ones = np.ones(shape[axis:], np.float32)
        scale_v = new_constant(
            rewriter,
            self.weights,
            ones if scale is None else scale[1],
            const_hint(scale[0].operands[1] if scale else x, "ln_scale"),
        )
        bias_v = None
        if bias is not None:
            bias_v = new_constant(
                rewriter, self.weights, bias[1], const_hint(bias[0].operands[1], "ln_bias")
            )
        fused = graph.LayerNormOp.build(
            operands=[x, scale_v, bias_v],
            result_types=[x.type],
            properties={"axis": IntegerAttr(axis, i64), "epsilon": FloatAttr(eps, f32)},
        )
        # The fused op takes the last op's place: its operands (x, new constants) dominate it.
        rewriter.replace(last, fused)
        dead = [found[0] for found in (bias, scale) if found is not None and found[0] is not last]
        dead += matched
        erase_unused(rewriter, dead)


class FuseLayerNorm(ModulePass):
    """Fuses LayerNorm written as reduce-mean/sub/square/reduce-mean/add/sqrt/div/mul/add."""

    name = "fuse-layer-norm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        apply_patterns(op, [FuseLayerNormPattern(weights_of(ctx))])
