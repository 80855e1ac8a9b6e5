"""Helpers shared by the graph-level passes: reading and creating constants, use queries."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
)

from ember.dialects import graph
from ember.dialects.numpy_eval import tensor_type
from ember.dialects.weights import WeightStore


def weights_of(ctx: Context) -> WeightStore:
    weights = getattr(ctx, "weights", None)
    if not isinstance(weights, WeightStore):
        raise TypeError("graph passes need an EmberContext (ember.core.context.make_context)")
    return weights


def constant_array(value: SSAValue | None, weights: WeightStore) -> np.ndarray | None:
    """The array behind a value defined by graph.constant, else None."""
    if value is None or not isinstance(value.owner, graph.ConstantOp):
        return None
    return weights[value.owner.ref.data]


def constant_operands(
    op: graph.BinaryElementwiseOp, weights: WeightStore
) -> Iterator[tuple[SSAValue, SSAValue, np.ndarray]]:
    """(x, c, c's array) for each order (x, c) of a commutative op's operands in which c is a
    graph.constant and x has the op's output type (c broadcasts into x, not x into c)."""
    for x, c in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
        array = constant_array(c, weights)
        if array is not None and op.output.type == x.type:
            yield x, c, array


def scalar_value(value: SSAValue | None, weights: WeightStore) -> float | None:
    """The value of a constant whose elements are all equal (any shape), else None."""
    array = constant_array(value, weights)
    if array is None or array.size == 0 or array.dtype.kind != "f":
        return None
    first = array.reshape(-1)[0]
    return float(first) if np.all(array == first) else None


def new_constant(
    rewriter: PatternRewriter, weights: WeightStore, array: np.ndarray, hint: str
) -> SSAValue:
    """Store `array` and insert a graph.constant for it before the matched op."""
    # (np.ascontiguousarray alone makes a 0-d array 1-d: the constant would change type.)
    array = np.ascontiguousarray(array).reshape(np.shape(array))
    op = graph.ConstantOp(weights.add(array, hint), tensor_type(array))
    rewriter.insert(op)
    return op.output


def const_hint(value: SSAValue, suffix: str) -> str:
    owner = value.owner
    base = owner.ref.data if isinstance(owner, graph.ConstantOp) else "const"
    return f"{base}.{suffix}"


def only_user(value: SSAValue) -> Operation | None:
    return next(iter(value.uses)).operation if value.has_one_use() else None


def per_channel(array: np.ndarray, out_shape: Sequence[int], axis: int) -> np.ndarray | None:
    """`array` as a vector over `axis` if, broadcast to `out_shape`, it varies only along it."""
    rank = len(out_shape)
    if array.ndim > rank:
        return None
    full = array.reshape((1,) * (rank - array.ndim) + array.shape)
    if any(d != 1 for i, d in enumerate(full.shape) if i != axis):
        return None
    if full.shape[axis] not in (1, out_shape[axis]):
        return None
    return np.broadcast_to(full.reshape(-1), (out_shape[axis],)).astype(array.dtype)


def erase_unused(rewriter: PatternRewriter, ops: list[Operation]) -> None:
    """Erase those of `ops` (a matched chain) left without users, users before producers."""
    pending = list(ops)
    while pending:
        free = [op for op in pending if not any(r.uses for r in op.results)]
        if not free:
            return
        for op in free:
            rewriter.erase(op)
            pending.remove(op)


def apply_patterns(module: ModuleOp, patterns: list[RewritePattern]) -> None:
    PatternRewriteWalker(GreedyRewritePatternApplier(patterns)).rewrite_module(module)


def rebuild(op: graph.ConvOp | graph.MatMulOp, **changes: object) -> graph.ConvOp | graph.MatMulOp:
    """A copy of a conv/matmul with some operands (input, weight/b, bias, residual), the
    result type (output_type) or epilogue properties (activation, activation_params)
    replaced; `None` removes an optional one."""
    first, second = (op.input, op.weight) if isinstance(op, graph.ConvOp) else (op.a, op.b)
    first = changes.pop("input", first)  # type: ignore[assignment]
    second = changes.pop("weight", changes.pop("b", second))  # type: ignore[assignment]
    output_type = changes.pop("output_type", op.output.type)
    bias = changes.pop("bias", op.bias)
    residual = changes.pop("residual", op.residual)
    properties = dict(op.properties)
    properties.pop("operandSegmentSizes", None)
    for name, value in changes.items():
        if value is None:
            properties.pop(name, None)
        else:
            properties[name] = value  # type: ignore[assignment]
    return type(op).build(
        operands=[first, second, bias, residual],  # type: ignore[list-item]
        result_types=[output_type],
        properties=properties,  # type: ignore[arg-type]
        # The discardable attributes (ember.origin: the ONNX node the op comes from) stay, so
        # that the fused kernel's errors and profile rows still name the node.
        attributes=dict(op.attributes),
    )
