"""fold-batchnorm: fold inference BatchNorm (and per-channel scaling) into the preceding conv."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern

from ember.dialects import graph
from ember.dialects.weights import WeightStore
from ember.passes.program import absorb_origins
from ember.passes.transforms.graph_utils import (
    apply_patterns,
    const_hint,
    constant_array,
    constant_operands,
    new_constant,
    per_channel,
    rebuild,
    weights_of,
)


def absorbing_conv(value: SSAValue, weights: WeightStore) -> graph.ConvOp | None:
    """The conv producing `value` if an affine per-channel op after it can fold into it."""
    conv = value.owner
    if not isinstance(conv, graph.ConvOp) or not value.has_one_use():
        return None
    if conv.residual is not None or conv.activation is not None:
        return None
    if constant_array(conv.weight, weights) is None:
        return None
    if conv.bias is not None and constant_array(conv.bias, weights) is None:
        return None
    return conv


def batch_norm_affine(
    bn: graph.BatchNormOp, weights: WeightStore
) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, shift) per channel with bn(x) == x * scale + shift, if all params are constant."""
    params = [constant_array(v, weights) for v in (bn.scale, bn.bias, bn.mean, bn.var)]
    if any(p is None for p in params):
        return None
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
    scale = gamma / np.sqrt(var + bn.epsilon.value.data)
    return scale.astype(np.float32), (beta - mean * scale).astype(np.float32)


def _scale_conv(
    conv: graph.ConvOp,
    scale: np.ndarray,
    shift: np.ndarray,
    weights: WeightStore,
    rewriter: PatternRewriter,
) -> graph.ConvOp:
    """conv(x) * scale + shift as one conv: W' = W * scale[o], b' = b * scale + shift."""
    w = constant_array(conv.weight, weights)
    b = constant_array(conv.bias, weights)
    assert w is not None
    new_w = (w.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(w.dtype)
    old_b = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
    new_b = (old_b * scale + shift).astype(w.dtype)
    weight = new_constant(rewriter, weights, new_w, const_hint(conv.weight, "bn"))
    bias = new_constant(rewriter, weights, new_b, const_hint(conv.weight, "bn_bias"))
    return rebuild(conv, weight=weight, bias=bias)  # type: ignore[return-value]


@dataclass
class FoldBatchNormIntoConv(RewritePattern):
    weights: WeightStore

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.BatchNormOp, rewriter: PatternRewriter) -> None:
        conv = absorbing_conv(op.input, self.weights)
        affine = batch_norm_affine(op, self.weights)
        if conv is None or affine is None:
            return
        fused = _scale_conv(conv, *affine, self.weights, rewriter)
        rewriter.replace(op, absorb_origins(fused, op))
        rewriter.erase(conv)


@dataclass
class FoldChannelScaleIntoConv(RewritePattern):
    """mul(conv, c) with c constant per output channel (e.g. densenet's BN-then-Mul)."""

    weights: WeightStore

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.MulOp, rewriter: PatternRewriter) -> None:
        for x, _, array in constant_operands(op, self.weights):
            conv = absorbing_conv(x, self.weights)
            if conv is None:
                continue
            scale = per_channel(array, graph.shape_of(x), 1)
            if scale is None:
                continue
            zero = np.zeros_like(scale)
            fused = _scale_conv(conv, scale, zero, self.weights, rewriter)
            rewriter.replace(op, absorb_origins(fused, op))
            rewriter.erase(conv)
            return


class FoldBatchNorm(ModulePass):
    """Folds inference batch_norm and per-channel constant muls into the preceding conv."""

    name = "fold-batchnorm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        weights = weights_of(ctx)
        apply_patterns(op, [FoldBatchNormIntoConv(weights), FoldChannelScaleIntoConv(weights)])
