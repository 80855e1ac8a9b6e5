"""Proof that a model's samples are independent along its batch axis (batch polymorphism).

A model whose leading input axis is a symbolic batch dim can then be compiled once at batch 1
and run at batch n as n calls of that program, each on one sample's slice of every input and
output (runtime/polymorphic.py). The proof is conservative and made at compile time:

1. The model is imported twice (engine/batch_polymorphic.py), with the batch dim pinned to 1
   and to `PROBE_BATCH` (3: not 2, which literal sizes often coincide with), every other dim
   pinned alike; this module compares the two programs.
2. The two graph-dialect programs must be the same program op for op: the same ops in the same
   order on the same operands, with the same properties, and the same weights. Each value is
   either *batch-free* (its type is the same in both; it depends on no batched value) or
   *batched*: its type at batch B is its batch-1 type with the leading dim multiplied by B
   ([1, s, h] -> [B, s, h]; [s, h] -> [B*s, h] after a Reshape [b*s, h]), so sample i is the
   i-th contiguous block of its rows. A constant the importer folded from the batch size (a
   ConstantOfShape of Shape(x)) is batched if its batch-B value is its batch-1 value repeated
   B times along axis 0.
3. Every op with a batched operand must have batched results only, and a rule in `RULES` that
   its leading axis is a per-sample axis: elementwise ops (batch-free operands broadcast from
   leading size 1 or a lower rank), Conv and pooling over N, MatMul/Gemm whose rows are the
   batched rows and whose other operand is batch-free (or both batched along a leading batch
   dim), reductions, Softmax, LayerNorm, ArgMax/TopK, CumSum not over axis 0, Transpose
   keeping axis 0 first, Concat/Slice not on axis 0, Gather of a batch-free table by batched
   indices (axis 0) or of batched data along another axis, fused attention. An op without a
   rule makes the model not separable; so do ops with subgraphs (Loop, If).
4. Every graph output must be batched (an output that is batch-free would be computed n times
   and is better not guessed at).

Anything unproven (a ReduceSum over axis 0, a Reshape [b, s, h] -> [s, b*h], BatchNormalization
in training mode, which reduces over axis 0) is `BatchProof(False, reason)`; the caller then
specialises per batch size as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Operation, SSAValue

from ember.dialects import graph
from ember.dialects.graph import shape_of

PROBE_BATCH = 3


@dataclass(frozen=True)
class BatchProof:
    """Whether the model is batch-separable; if not, why (for the debug log and `ember check`)."""

    separable: bool
    reason: str = ""


def _axis(value: int, rank: int) -> int:
    return value + rank if value < 0 else value


def _ints(attr: object) -> list[int]:
    return list(graph.int_values(attr))  # type: ignore[arg-type]


# -- per-op rules: (op, which operands are batched) -> None if per-sample, else why not ------

Rule = Callable[[Operation, Sequence[bool]], str | None]


def _rank(value: SSAValue) -> int:
    return len(shape_of(value))


def _broadcast_free(op: Operation, batched: Sequence[bool]) -> str | None:
    """Operands broadcast to the result: a batched one must have the result's rank (its axis 0
    is the result's axis 0); a batch-free one a lower rank or a leading size of 1."""
    rank = _rank(op.results[0])
    for operand, is_batched in zip(op.operands, batched):
        shape = shape_of(operand)
        if is_batched and len(shape) != rank:
            return f"a batched operand of rank {len(shape)} broadcasts into rank {rank}"
        if not is_batched and len(shape) == rank and shape[0] != 1:
            return f"a batch-free operand {list(shape)} spans the batch axis"
    return None


def _same_shape(op: Operation, batched: Sequence[bool]) -> str | None:
    if len(op.operands) != 1:
        return f"it has {len(op.operands)} operands"
    return None  # one operand, each result element from its own element: nothing crosses


def _axis_not_leading(name: str) -> Rule:
    def rule(op: Operation, batched: Sequence[bool]) -> str | None:
        value = getattr(op, name).value.data
        if _axis(value, _rank(op.operands[0])) == 0:
            return f"it works along axis 0 ({name}={value})"
        return None

    return rule


def _only_first_batched(op: Operation, batched: Sequence[bool]) -> str | None:
    if any(batched[1:]):
        return "an operand other than its input is batched"
    return None


def _conv(op: Operation, batched: Sequence[bool]) -> str | None:
    conv: graph.ConvOp = op  # type: ignore[assignment]
    if not batched[0] or any(
        b for v, b in zip(op.operands, batched) if v in (conv.weight, conv.bias)
    ):
        return "its weight or bias is batched, or its input is not"
    return None


def _matmul(op: Operation, batched: Sequence[bool]) -> str | None:
    mm: graph.MatMulOp = op  # type: ignore[assignment]
    flags = dict(zip(op.operands, batched))
    a, b = shape_of(mm.a), shape_of(mm.b)
    a_batched, b_batched = flags[mm.a], flags[mm.b]
    if mm.bias is not None and flags[mm.bias]:
        return "its bias is batched"
    if a_batched and b_batched:
        if len(a) != len(b) or len(a) < 3:
            return "both operands are batched but not along a leading batch dim of equal rank"
    elif a_batched:
        if len(b) >= len(a) and any(d != 1 for d in b[: len(b) - 2]):
            return f"its batch-free B {list(b)} spans the batch axis of A {list(a)}"
    elif b_batched:
        if len(b) < 3 or (len(a) >= len(b) and any(d != 1 for d in a[: len(a) - 2])):
            return f"its batched B {list(b)} is not batched along a leading batch dim"
    if mm.residual is not None and not flags[mm.residual]:
        return "its residual is batch-free"
    return None


def _gemm(op: Operation, batched: Sequence[bool]) -> str | None:
    gemm: graph.GemmOp = op  # type: ignore[assignment]
    flags = dict(zip(op.operands, batched))
    if not flags[gemm.a] or gemm.trans_a.value.data != 0 or flags[gemm.b]:
        return "only a batched, untransposed A times a batch-free B is per-sample"
    if gemm.c is not None and (flags[gemm.c] or (_rank(gemm.c) == 2 and shape_of(gemm.c)[0] != 1)):
        return "its C spans the batch axis"
    return None


def _normalization(op: Operation, batched: Sequence[bool]) -> str | None:
    if any(batched[1:]):
        return "a parameter is batched"
    axis = getattr(op, "axis", None)
    if axis is not None and _axis(axis.value.data, _rank(op.operands[0])) == 0:
        return "it normalises over axis 0"
    return None


def _reduce(op: Operation, batched: Sequence[bool]) -> str | None:
    rank = _rank(op.operands[0])
    axes = [_axis(a, rank) for a in _ints(op.axes)]  # type: ignore[attr-defined]
    if not axes or 0 in axes:
        return f"it reduces over axis 0 (axes={axes or 'all'})"
    return None


def _transpose(op: Operation, batched: Sequence[bool]) -> str | None:
    perm = _ints(op.perm)  # type: ignore[attr-defined]
    return None if perm[0] == 0 else f"it moves the batch axis (perm={perm})"


def _slice(op: Operation, batched: Sequence[bool]) -> str | None:
    starts, steps = _ints(op.starts), _ints(op.steps)  # type: ignore[attr-defined]
    rows, kept = shape_of(op.operands[0])[0], shape_of(op.results[0])[0]
    # All of axis 0 or nothing: a slice ending at a size computed from the batch ([: n // 2])
    # scales with it too, yet takes whole samples from the front.
    if starts[0] != 0 or steps[0] != 1 or kept != rows:
        return f"it slices axis 0 (start {starts[0]}, step {steps[0]}, {kept} of {rows})"
    return None


def _gather(op: Operation, batched: Sequence[bool]) -> str | None:
    gather: graph.GatherOp = op  # type: ignore[assignment]
    data_batched, indices_batched = batched
    axis = _axis(gather.axis.value.data, _rank(gather.data))
    if indices_batched and not data_batched and axis == 0 and _rank(gather.indices) >= 1:
        return None
    if data_batched and not indices_batched and axis != 0:
        return None
    return (
        "only a batch-free table gathered by batched indices, or batched data gathered off axis 0"
    )


def _gather_elements(op: Operation, batched: Sequence[bool]) -> str | None:
    if not all(batched[:2]) or _axis(op.axis.value.data, _rank(op.operands[0])) == 0:  # type: ignore[attr-defined]
        return "only batched data and indices gathered off axis 0"
    return None


def _expand(op: Operation, batched: Sequence[bool]) -> str | None:
    shape, result = shape_of(op.operands[0]), shape_of(op.results[0])
    if batched[0] and (len(shape) != len(result) or shape[0] != result[0]):
        return f"it broadcasts a batched input {list(shape)} along axis 0 or a new axis"
    return None


def _attention(op: Operation, batched: Sequence[bool]) -> str | None:
    att: graph.AttentionOp = op  # type: ignore[assignment]
    flags = dict(zip(op.operands, batched))
    if not (flags[att.q] and flags[att.k_t] and flags[att.v]):
        return "q, k and v are not all batched"
    if att.mask is not None:
        mask = shape_of(att.mask)
        if flags[att.mask] and len(mask) != 4:
            return f"its batched mask {list(mask)} broadcasts its batch axis onto another"
        if not flags[att.mask] and len(mask) == 4 and mask[0] != 1:
            return f"its batch-free mask {list(mask)} spans the batch axis"
    return None


def _one_hot(op: Operation, batched: Sequence[bool]) -> str | None:
    if batched[1] or _axis(op.axis.value.data, _rank(op.results[0])) == 0:  # type: ignore[attr-defined]
        return "its values are batched or its depth axis is axis 0"
    return None


RULES: dict[type[Operation], Rule] = {
    graph.UnaryElementwiseOp: _same_shape,
    graph.CastOp: _same_shape,
    graph.BinaryElementwiseOp: _broadcast_free,
    graph.WhereOp: _broadcast_free,
    graph._TernaryBroadcastOp: _broadcast_free,
    graph.ConvOp: _conv,
    graph.MatMulOp: _matmul,
    graph.GemmOp: _gemm,
    graph.BatchNormOp: _normalization,
    graph.LayerNormOp: _normalization,
    graph.LRNOp: _same_shape,
    graph.SoftmaxOp: _axis_not_leading("axis"),
    graph.PoolOp: _only_first_batched,
    graph.ReduceOp: _reduce,
    graph.ReshapeOp: _same_shape,  # the type check (leading dim scaled) is the proof
    graph.TransposeOp: _transpose,
    graph.ConcatOp: _axis_not_leading("axis"),
    graph.GatherOp: _gather,
    graph.SliceOp: _slice,
    graph.ExpandOp: _expand,
    graph.ArgReduceOp: _axis_not_leading("axis"),
    graph.CumSumOp: _axis_not_leading("axis"),
    graph.TopKOp: _axis_not_leading("axis"),
    graph.GatherElementsOp: _gather_elements,
    graph.OneHotOp: _one_hot,
    graph.AttentionOp: _attention,
}


# -- linear Resize of the last two axes (graph.resize_linear) ---------------------------------
def _resize_linear(op: Operation, batched: Sequence[bool]) -> str | None:
    if any(batched[1:]) or _rank(op.operands[0]) < 3:
        return "its tables are batched, or it resizes axis 0 (rank < 3)"
    return None


RULES[graph.ResizeLinearOp] = _resize_linear


def rule_for(op: Operation) -> Rule | None:
    for cls in type(op).__mro__:
        if cls in RULES:
            return RULES[cls]
    return None


# -- comparing the two imports ---------------------------------------------------------------


class _NotSeparable(Exception):
    pass


def _scaled(one: TensorType, many: TensorType, batch: int) -> bool:
    """`many` is `one` with its leading dim multiplied by `batch`."""
    a, b = shape_of(one), shape_of(many)
    return (
        one.get_element_type() == many.get_element_type()
        and len(a) == len(b) >= 1
        and a[1:] == b[1:]
        and b[0] == a[0] * batch
    )


def _describe(op: Operation) -> str:
    origin = op.attributes.get("ember.origin")
    return f"{op.name}" + (f" ({origin})" if origin is not None else "")


def compare_programs(
    one: func.FuncOp,
    many: func.FuncOp,
    weights_one: Mapping[str, np.ndarray],
    weights_many: Mapping[str, np.ndarray],
    batch: int,
) -> BatchProof:
    """The proof's steps 2-4 on the entry functions imported at batch 1 and `batch`."""
    try:
        _compare(one, many, weights_one, weights_many, batch)
    except _NotSeparable as err:
        return BatchProof(False, str(err))
    return BatchProof(True)


def _compare(
    one: func.FuncOp,
    many: func.FuncOp,
    weights_one: Mapping[str, np.ndarray],
    weights_many: Mapping[str, np.ndarray],
    batch: int,
) -> None:
    pairs: dict[SSAValue, SSAValue] = {}  # value at batch B -> its value at batch 1
    is_batched: dict[SSAValue, bool] = {}
    args_one, args_many = one.body.block.args, many.body.block.args
    if len(args_one) != len(args_many):
        raise _NotSeparable("the programs take different inputs at batch 1 and batch 3")
    for index, (a, b) in enumerate(zip(args_one, args_many)):
        pairs[b] = a
        if a.type == b.type:
            is_batched[b] = False
        elif isinstance(a.type, TensorType) and _scaled(a.type, b.type, batch):  # type: ignore[arg-type]
            is_batched[b] = True
        else:
            raise _NotSeparable(
                f"input {index} is {shape_of(a)} at batch 1 but {shape_of(b)} at batch {batch}"
            )
    ops_one, ops_many = list(one.body.block.ops), list(many.body.block.ops)
    if len(ops_one) != len(ops_many):
        raise _NotSeparable(
            f"the program has {len(ops_one)} ops at batch 1 but {len(ops_many)} at batch {batch}"
        )
    for op1, op in zip(ops_one, ops_many):
        where = _describe(op)
        if op1.name != op.name:
            raise _NotSeparable(f"op {op1.name} at batch 1 is {op.name} at batch {batch}")
        if op.regions:
            raise _NotSeparable(f"{where} has subgraphs")
        if len(op1.operands) != len(op.operands) or any(
            pairs.get(b) is not a for a, b in zip(op1.operands, op.operands)
        ):
            raise _NotSeparable(f"{where} takes other operands at batch {batch}")
        props1 = {k: v for k, v in op1.properties.items() if k != "ref"}
        props = {k: v for k, v in op.properties.items() if k != "ref"}
        if props1 != props or op1.attributes != op.attributes:
            raise _NotSeparable(f"{where} has other attributes at batch {batch}")
        if isinstance(op, func.ReturnOp):
            free = [i for i, v in enumerate(op.operands) if not is_batched[v]]
            if free:
                raise _NotSeparable(f"output {free[0]} does not depend on the batch")
            continue
        for r1, r in zip(op1.results, op.results):
            pairs[r] = r1
        if isinstance(op, graph.ConstantOp):
            is_batched[op.output] = _constant_batched(op1, op, weights_one, weights_many, batch)
            continue
        flags = [is_batched[v] for v in op.operands]
        if not any(flags):
            for r1, r in zip(op1.results, op.results):
                if r1.type != r.type:
                    raise _NotSeparable(f"{where} has a batch-free input but a batched result")
                is_batched[r] = False
            continue
        rule = rule_for(op)
        if rule is None:
            raise _NotSeparable(f"{where} has no batch-separability rule")
        why = rule(op, flags)
        if why is not None:
            raise _NotSeparable(f"{where}: {why}")
        for r1, r in zip(op1.results, op.results):
            if not isinstance(r.type, TensorType) or not _scaled(r1.type, r.type, batch):  # type: ignore[arg-type]
                raise _NotSeparable(
                    f"{where}: its result {shape_of(r1)} at batch 1 is {shape_of(r)} at batch "
                    f"{batch}, not scaled along its leading axis"
                )
            is_batched[r] = True


def _constant_batched(
    op1: graph.ConstantOp,
    op: graph.ConstantOp,
    weights_one: Mapping[str, np.ndarray],
    weights_many: Mapping[str, np.ndarray],
    batch: int,
) -> bool:
    value1 = np.asarray(weights_one[op1.ref.data])
    value = np.asarray(weights_many[op.ref.data])
    if op1.output.type == op.output.type:
        if value1.dtype != value.dtype or value1.tobytes() != value.tobytes():
            raise _NotSeparable(
                f"constant '{op.ref.data}' {list(value.shape)} differs at batch {batch}"
            )
        return False
    if _scaled(op1.output.type, op.output.type, batch) and np.array_equal(  # type: ignore[arg-type]
        np.concatenate([value1] * batch, axis=0), value, equal_nan=True
    ):
        return True  # folded from the batch size: every sample sees the same block
    raise _NotSeparable(f"constant '{op.ref.data}' depends on the batch size")
