"""hoist-channel-ops: per-channel ops after a conv's reshape/transpose chain move before it.

A strided ConvTranspose imports as one conv whose output channels are the stride phases,
interleaved back by reshape -> transpose -> reshape (frontend/ops/conv.py). The BatchNorm
(a per-channel mul and add), ReLU or Sigmoid an exporter writes after it then sit behind that
chain, where neither fold-batchnorm, fuse-bias-add nor fuse-conv-activation sees the conv.
Data movement commutes with elementwise ops, so each such op moves before the chain, its
constant rearranged to the conv's channels: an output channel c of the chain is fed by conv
channels m (the phases of c), and the constant's value for c becomes the value for each m.
Only when every conv channel lands in one output channel, and only ops that the fusions
after this pass take (a mul or add by a per-channel or scalar constant, an activation), on a
chain rooted at a conv through ops of that kind, every value used once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern

from ember.dialects import graph
from ember.dialects.weights import WeightStore
from ember.passes.transforms.fuse_epilogue import activation_of
from ember.passes.transforms.graph_utils import (
    apply_patterns,
    const_hint,
    constant_array,
    erase_unused,
    new_constant,
    per_channel,
    weights_of,
)

Rearrangement = graph.ReshapeOp | graph.TransposeOp


def _rearranged(value: SSAValue) -> tuple[SSAValue, list[Operation]]:
    """The value `value` rearranges through single-use reshapes/transposes, and those ops in
    program order (empty when `value` is not made by one)."""
    chain: list[Operation] = []
    while isinstance(value.owner, Rearrangement) and value.has_one_use():
        chain.append(value.owner)
        value = value.owner.input
    return value, chain[::-1]


def _channel_constant(
    op: Operation, weights: WeightStore
) -> tuple[SSAValue, SSAValue, np.ndarray] | None:
    """(the other operand, the constant, its array) of a mul/add by a constant, else None."""
    if not isinstance(op, graph.MulOp | graph.AddOp):
        return None
    for x, c in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
        array = constant_array(c, weights)
        if array is not None and x.type == op.output.type:
            return x, c, array
    return None


def _rooted_at_conv(value: SSAValue, weights: WeightStore) -> bool:
    """Whether `value` is a conv's output after hoisted-kind ops, each value used once."""
    while value.has_one_use():
        owner = value.owner
        if isinstance(owner, graph.ConvOp):
            return True
        if activation_of(owner) is not None:
            value = owner.operands[0]
        elif (found := _channel_constant(owner, weights)) is not None:
            value = found[0]
        else:
            return False
    return False


def landing_channels(shape: tuple[int, ...], chain: list[Operation]) -> np.ndarray | None:
    """For each channel (axis 1) of a tensor of `shape`, the channel (axis 1) of the chain's
    output its elements all land in, or None when some channel spreads over several."""
    channels = shape[1]
    column = np.arange(channels, dtype=np.int32).reshape((1, channels) + (1,) * (len(shape) - 2))
    ids = np.broadcast_to(column, shape)
    for op in chain:
        if isinstance(op, graph.ReshapeOp):
            ids = ids.reshape(graph.shape_of(op.output))
        else:
            ids = ids.transpose(graph.int_values(op.perm))
    out = np.moveaxis(ids, 1, 0).reshape(ids.shape[1], -1)
    landing = np.full(channels, -1)
    for c, row in enumerate(out):
        sources = np.unique(row)
        if (landing[sources] >= 0).any():
            return None
        landing[sources] = c
    return landing if (landing >= 0).all() else None


@dataclass
class HoistChannelOp(RewritePattern):
    weights: WeightStore

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        constant = _channel_constant(op, self.weights)
        if constant is None and activation_of(op) is None:
            return
        chained = constant[0] if constant is not None else op.operands[0]
        source, chain = _rearranged(chained)
        rank = len(graph.shape_of(source))
        if not chain or rank < 2 or not _rooted_at_conv(source, self.weights):
            return
        operands = [source]
        if constant is not None:
            if len(graph.shape_of(chained)) < 2:
                return  # no channel axis to map the constant along (a flattened conv output)
            vector = per_channel(constant[2], graph.shape_of(chained), 1)
            landing = landing_channels(graph.shape_of(source), chain)
            if vector is None or landing is None:
                return
            moved = vector[landing].reshape((-1,) + (1,) * (rank - 2))
            c = new_constant(rewriter, self.weights, moved, const_hint(constant[1], "hoisted"))
            operands = [source, c] if op.operands[0] is chained else [c, source]
        hoisted = type(op).create(
            operands=operands,
            result_types=[source.type],
            properties=dict(op.properties),
            attributes=dict(op.attributes),
        )
        rewriter.insert(hoisted)
        value = hoisted.results[0]
        for step in chain:
            moved_step = step.clone(value_mapper={step.operands[0]: value})
            rewriter.insert(moved_step)
            value = moved_step.results[0]
        rewriter.replace(op, [], [value])
        erase_unused(rewriter, chain)


class HoistChannelOps(ModulePass):
    """Moves per-channel muls/adds and activations after a conv's reshape/transpose chain before it."""

    name = "hoist-channel-ops"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        apply_patterns(op, [HoistChannelOp(weights_of(ctx))])
