"""cse: one op for equal computations (same op, operands, properties, result types).

Two graph.constant ops whose arrays are bit-for-bit equal (same dtype and shape: -0.0 is not
0.0, a NaN equals only the same NaN bits) become one; then, block by block in program order, a
side-effect-free graph op without regions whose op name, operands, properties, attributes
(besides `ember.origin`) and result types equal an earlier op's is replaced by that op's
results. Merging the constants first is what makes the rest fire on models that name the
same weights twice: the light Inception v2's sibling 1x1 convs read one input with equal,
constant-filled weights (onnxruntime merges them too). The survivor records the erased op's
ONNX node in its `ember.origin` (errors and profiles name both).
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation
from xdsl.passes import ModulePass
from xdsl.traits import is_side_effect_free

from ember.dialects import graph
from ember.dialects.weights import WeightStore
from ember.passes.program import ORIGIN, absorb_origins
from ember.passes.transforms.graph_utils import weights_of

# Bytes of an array sampled for the bucket key of a constant (the full arrays are compared
# only within a bucket): its head, its tail and a strided sample between.
_SAMPLE_BYTES = 256


def _sample(array: np.ndarray) -> bytes:
    raw = array.reshape(-1).view(np.uint8)
    if raw.size <= 3 * _SAMPLE_BYTES:
        return raw.tobytes()
    step = max(1, raw.size // _SAMPLE_BYTES)
    return raw[:_SAMPLE_BYTES].tobytes() + raw[-_SAMPLE_BYTES:].tobytes() + raw[::step].tobytes()


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))
    )


def _op_key(op: Operation) -> Hashable:
    attributes = tuple(sorted((k, v) for k, v in op.attributes.items() if k != ORIGIN))
    return (
        op.name,
        tuple(op.operands),
        tuple(sorted(op.properties.items())),
        attributes,
        tuple(r.type for r in op.results),
    )


def _replace(op: Operation, survivor: Operation) -> None:
    absorb_origins(survivor, op)
    for old, new in zip(op.results, survivor.results, strict=True):
        old.replace_all_uses_with(new)
    op.detach()
    op.erase()


def _merge_constants(block: Block, weights: WeightStore) -> None:
    buckets: dict[Hashable, list[graph.ConstantOp]] = {}
    for op in list(block.ops):
        if not isinstance(op, graph.ConstantOp) or op.ref.data not in weights:
            continue
        array = weights[op.ref.data]
        key = (op.output.type, array.dtype.str, array.shape, _sample(array))
        bucket = buckets.setdefault(key, [])
        survivor = next((c for c in bucket if _same_bits(weights[c.ref.data], array)), None)
        if survivor is None:
            bucket.append(op)
        else:
            _replace(op, survivor)


def _merge_ops(block: Block) -> None:
    seen: dict[Hashable, Operation] = {}
    for op in list(block.ops):
        if op.regions or not op.results or not op.name.startswith("graph."):
            continue
        if isinstance(op, graph.ConstantOp) or not is_side_effect_free(op):
            continue
        key = _op_key(op)
        survivor = seen.get(key)
        if survivor is None:
            seen[key] = op
        else:
            _replace(op, survivor)


class CommonSubexpressionElimination(ModulePass):
    """Merges bit-equal graph constants, then side-effect-free graph ops equal to an earlier one."""

    name = "cse"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        weights = weights_of(ctx)
        for inner in list(op.walk()):
            for region in inner.regions:
                for block in region.blocks:
                    _merge_constants(block, weights)
                    _merge_ops(block)
