"""ONNX -> graph dialect: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss, gather_elements
with an ignored index, around the log-softmax kernel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import UnitAttr

from ember.dialects import graph
from ember.frontend.context import (
    Const,
    ImportContext,
    Node,
    Value,
    dtype_of,
    i64_attr,
    scalar,
    shape_of,
)
from ember.frontend.ops.indexing import gather_elements
from ember.frontend.registry import converts


def _nll_loss(
    imp: ImportContext, node: Node, log_prob: Value, target: Value, weight: Value | None
) -> Value:
    """NegativeLogLikelihoodLoss: -log_prob[n, target[n, ...], ...] * weight[target], reduced."""
    shape = shape_of(log_prob)
    n, c, rest = shape[0], shape[1], list(shape[2:])
    if shape_of(target) != (n, *rest):
        raise node.error(f"target {shape_of(target)} does not match input {shape}")
    reduction = node.attrs.get("reduction", b"mean")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    if reduction not in ("none", "sum", "mean"):
        raise node.error(f"unknown reduction '{reduction}'")
    ignore = node.attrs.get("ignore_index")
    picked_shape = [n, 1, *rest]
    chosen = imp.reshape(target, picked_shape)
    picked = gather_elements(imp, log_prob, chosen, 1, ignore)
    per_class = [1, c] + [1] * len(rest)
    weights: Value | None = None
    if weight is not None:
        weights = gather_elements(imp, imp.reshape(weight, per_class), chosen, 1, ignore)
    elif ignore is not None:  # weight 1, or 0 where the target is ignored
        ones = Const(np.ones(per_class, dtype_of(log_prob)))
        weights = gather_elements(imp, ones, chosen, 1, ignore)
    terms = picked if weights is None else imp.binary(node, graph.MulOp, picked, weights)
    terms = imp.reshape(imp.unary(graph.NegOp, terms), [n, *rest])
    if reduction == "none":
        return terms
    everything = list(range(len(rest) + 1))
    total = imp.reduce(node, terms, "sum", everything, False)
    if reduction == "sum":
        return total
    if weights is None:
        count: Value = scalar(float(math.prod([n, *rest])), total)
    else:
        count = imp.reduce(node, weights, "sum", list(range(len(rest) + 2)), False)
    return imp.binary(node, graph.DivOp, total, count)


@converts("NegativeLogLikelihoodLoss")
def _nll_loss_op(imp: ImportContext, node: Node) -> Sequence[Value]:
    log_prob, target = imp.required(node, 0), imp.required(node, 1)
    return [_nll_loss(imp, node, log_prob, target, imp.input(node, 2))]


@converts("SoftmaxCrossEntropyLoss")
def _softmax_cross_entropy(imp: ImportContext, node: Node) -> Sequence[Value]:
    scores, labels = imp.required(node, 0), imp.required(node, 1)
    shape = shape_of(scores)
    if len(shape) < 2:
        raise node.error(f"scores of shape {shape} have no class axis")
    log_prob = imp.emit(graph.SoftmaxOp, [scores], shape, axis=i64_attr(1), log=UnitAttr())
    return [_nll_loss(imp, node, log_prob, labels, imp.input(node, 2)), log_prob]
