"""ONNX -> graph dialect: ops whose output shape depends on tensor values: NonZero, Unique,
NonMaxSuppression.

ember's programs have static shapes, so these ops are imported in two forms:

- **In a model** (domain ai.onnx): an op whose inputs are all known at compile time folds
  (numpy, at compile time). Any other is refused here: `ember.compile` never reaches this,
  since it splits such a model at these ops (`engine/staging.py`, a `StagedModel`).
- **Bounded** (domain `ai.ember.bounded`, written only by `engine/staging.py`): the same op
  with the same inputs and attributes, whose outputs have their static upper bound (NonZero
  [rank, numel], Unique [numel] along the axis, NonMaxSuppression [batches * classes *
  min(max_output_boxes_per_class, boxes), 3]) followed by one more output, the actual count
  (an int64 scalar). The runtime slices the bounded outputs to the count
  (`runtime/executable.py`, manifest `extra.bounded_outputs`); what follows them compiles for
  the sliced shapes. Positions past the count hold unspecified values.

NonZero is one native pass (graph.nonzero, also Compress's positions). Unique's bounded form
is written as the ONNX graph it amounts to (a sort, a prefix sum numbering the groups, a
scatter of their starts into the bounded buffers) and imported as any other nodes
(`ImportContext.import_nodes`), so it runs on ember's kernels:
- Unique: a stable sort (TopK over the flattened input; for `axis`, each slice's rank among
  the others from pairwise lexicographic comparison, O(M^2 C), refused above
  `MAX_PAIRWISE_ELEMENTS`), a flag where the sorted sequence changes, group ids by prefix sum;
  the first occurrence of a group is its first element in the stable order. sorted=0 orders
  the groups by first occurrence (a second sort).
- NonMaxSuppression is sequential by nature: one graph op, `graph.non_max_suppression`,
  whose kernel (kernel_to_loops/selection.py) writes the count and the selected rows into
  one buffer; the converter slices them apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ember.dialects import graph
from ember.frontend.context import (
    Const,
    ImportContext,
    Node,
    Value,
    dtype_of,
    f32_attr,
    i64_attr,
    shape_of,
)
from ember.frontend.registry import converts

# The domain of the bounded forms (written by engine/staging.py, imported only here).
BOUNDED_DOMAIN = "ai.ember.bounded"
# The ONNX ops whose output shape depends on tensor values, with the output positions that
# are bounded and along which axis ("axis" means Unique's axis attribute, 0 without one).
DATA_DEPENDENT_OPS: dict[str, dict[int, str | int]] = {
    "Compress": {0: "axis"},  # only with a run-time condition (engine/staging.py)
    "NonZero": {0: 1},
    "Unique": {0: "axis", 1: 0, 3: 0},
    "NonMaxSuppression": {0: 0},
}

# Unique along an axis compares every slice with every other: at most this many elements.
MAX_PAIRWISE_ELEMENTS = 1 << 24
# The opset the decompositions are written in.
_DECOMPOSITION_OPSET = 18


def bounded_axes(node: onnx.NodeProto) -> dict[int, int]:
    """{output position: axis} of the outputs of `node` that the bounded form pads."""
    axes = {}
    for position, axis in DATA_DEPENDENT_OPS[node.op_type].items():
        if axis == "axis":
            attr = next((a for a in node.attribute if a.name == "axis"), None)
            axis = 0 if attr is None else int(attr.i)
        axes[position] = int(axis)
    return axes


class _Nodes:
    """Builds a decomposition's nodes with names unique to the node it stands for."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.count = 0

    def add(self, op: str, inputs: Sequence[str], outputs: int = 1, **attrs: object) -> list[str]:
        self.count += 1
        names = [f"{self.prefix}/{op}_{self.count}_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, name=names[0], **attrs))
        return names

    def one(self, op: str, inputs: Sequence[str], **attrs: object) -> str:
        return self.add(op, inputs, **attrs)[0]

    def const(self, array: np.ndarray | int | float) -> str:
        self.count += 1
        out = f"{self.prefix}/const_{self.count}"
        tensor = numpy_helper.from_array(np.asarray(array), out)
        self.nodes.append(helper.make_node("Constant", [], [out], name=out, value=tensor))
        return out

    def i64(self, values: Sequence[int] | int) -> str:
        return self.const(np.asarray(values, np.int64))


def _import(imp: ImportContext, b: _Nodes, outputs: Sequence[str]) -> list[Value]:
    outer = imp.opset
    imp.opset = _DECOMPOSITION_OPSET
    try:
        imp.import_nodes(b.nodes)
    finally:
        imp.opset = outer
    return [imp.env[name] for name in outputs]


def _bind(imp: ImportContext, b: _Nodes, name: str, value: Value) -> str:
    """Make the node's input `value` readable by the decomposition under `name`."""
    imp.env[name] = value
    return name


# -- constant inputs: folded ---------------------------------------------------------------------
def _unique_of(x: np.ndarray, axis: int | None, is_sorted: bool) -> list[np.ndarray]:
    """Unique's four outputs (ONNX semantics) for a known input."""
    values, first, inverse, counts = np.unique(
        x, return_index=True, return_inverse=True, return_counts=True, axis=axis
    )
    inverse = inverse.reshape(-1)
    if not is_sorted:
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        values = np.take(values, order, axis=0 if axis is None else axis)
        first, counts, inverse = first[order], counts[order], rank[inverse]
    return [values, first.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64)]


def _unique_axis(node: Node, x: Value) -> int | None:
    axis = node.attrs.get("axis")
    if axis is None:
        return None
    rank = len(shape_of(x))
    if not -rank <= int(axis) < rank:
        raise node.error(f"axis {axis} is out of range for an input of rank {rank}")
    return int(axis) % rank


@converts("NonZero", "Unique", "NonMaxSuppression")
def _data_dependent(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    if not isinstance(x, Const) or node.op_type == "NonMaxSuppression":
        raise node.unsupported(
            "its output shape depends on tensor values known only at run time; ember.compile "
            "splits a model at such nodes of its main graph (engine/staging.py), not inside a "
            "subgraph or a function body, and compile_program (ember compile) only where "
            "their values are graph outputs"
        )
    if node.op_type == "NonZero":
        if x.array.ndim == 0:
            raise node.unsupported("a 0-d input")
        return [Const(np.array(np.nonzero(x.array), dtype=np.int64))]
    axis = _unique_axis(node, x)
    return [Const(a) for a in _unique_of(x.array, axis, bool(node.attrs.get("sorted", 1)))]


# -- bounded forms -------------------------------------------------------------------------------
def nonzero_coordinates(imp: ImportContext, node: Node, x: Value) -> tuple[Value, Value]:
    """The coordinates of the nonzero elements of `x` in row-major order, bounded: int64
    [rank, numel] whose first `count` columns are them (the rest 0, valid coordinates), and
    `count` (an int64 scalar): one native pass (graph.nonzero). For NonZero, and Compress
    with a run-time condition (rank 1: the positions)."""
    rank, n = len(shape_of(x)), math.prod(shape_of(x))
    packed = imp.emit(graph.NonZeroOp, [x], [1 + rank * n], np.dtype(np.int64))
    count = imp.reshape(imp.slice_axis(packed, 0, 0, 1), [])
    return imp.reshape(imp.slice_axis(packed, 0, 1, rank * n), [rank, n]), count


@converts("NonZero", domain=BOUNDED_DOMAIN)
def _bounded_nonzero(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = shape_of(x)
    rank, n = len(shape), math.prod(shape)
    if rank == 0:
        raise node.unsupported("a 0-d input")
    if n == 0:
        return [Const(np.zeros((rank, 0), np.int64)), Const(np.array(0, np.int64))]
    return list(nonzero_coordinates(imp, node, x))


@converts("Unique", domain=BOUNDED_DOMAIN)
def _bounded_unique(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = shape_of(x)
    axis = _unique_axis(node, x)
    is_sorted = bool(node.attrs.get("sorted", 1))
    b = _Nodes(f"{node.name}/bounded")
    x_name = _bind(imp, b, f"{b.prefix}/x", x)
    if axis is None:
        m = math.prod(shape)
        rows = b.one("Reshape", [x_name, b.i64([m])])
        gather_axis = 0
    else:
        m = shape[axis]
        other = math.prod(shape) // m if m else 0
        rows = b.one(
            "Transpose", [x_name], perm=[axis, *[d for d in range(len(shape)) if d != axis]]
        )
        rows = b.one("Reshape", [rows, b.i64([m, other])])
        gather_axis = axis
    if m == 0 or math.prod(shape) == 0:
        raise node.unsupported(f"an empty input {list(shape)}")
    arange = b.i64(np.arange(m))
    is_float = dtype_of(x).kind == "f" or dtype_of(x).name == "bfloat16"

    # numpy's order (np.unique): NaN after every number, NaNs equal to each other; as values,
    # all NaNs are one without an axis (equal_nan), but slices holding NaN stay distinct.
    def same(p: str, q: str, nan_is_nan: bool = True) -> str:
        equal = b.one("Equal", [p, q])
        if not is_float or not nan_is_nan:
            return equal
        both_nan = b.one("And", [b.one("IsNaN", [p]), b.one("IsNaN", [q])])
        return b.one("Or", [equal, both_nan])

    def before(p: str, q: str) -> str:
        less = b.one("Less", [p, q])
        if not is_float:
            return less
        number_then_nan = b.one("And", [b.one("Not", [b.one("IsNaN", [p])]), b.one("IsNaN", [q])])
        return b.one("Or", [less, number_then_nan])

    if axis is None:
        keys = rows
        if dtype_of(x).name in ("float16", "bfloat16"):  # TopK's types: sort exact f32 copies
            keys = b.one("Cast", [rows], to=TensorProto.FLOAT)
        # A stable ascending sort: TopK puts the lower index first among equal values.
        sorted_rows, perm = b.add("TopK", [keys, b.i64([m])], 2, largest=0, sorted=1)
        if m > 1:
            head = b.one("Slice", [sorted_rows, b.i64([1]), b.i64([m])])
            tail = b.one("Slice", [sorted_rows, b.i64([0]), b.i64([m - 1])])
            changes = b.one("Not", [same(head, tail)])
    else:
        if m * m * other > MAX_PAIRWISE_ELEMENTS:
            raise node.unsupported(
                f"Unique along axis {axis} of an input {list(shape)}: ember sorts the {m} "
                f"slices by pairwise comparison, which it does for at most "
                f"{MAX_PAIRWISE_ELEMENTS} compared elements ({m * m * other} here)"
            )
        a = b.one("Unsqueeze", [rows, b.i64([1])])  # [M, 1, C]
        c = b.one("Unsqueeze", [rows, b.i64([0])])  # [1, M, C]
        differs = b.one("Cast", [b.one("Not", [same(a, c)])], to=TensorProto.INT64)
        below = b.one("Cast", [before(a, c)], to=TensorProto.INT64)
        first_difference = b.one("ArgMax", [differs], axis=2, keepdims=1)  # [M, M, 1]
        any_difference = b.one("ReduceMax", [differs, b.i64([2])], keepdims=1)
        less = b.one(
            "Mul", [b.one("GatherElements", [below, first_difference], axis=2), any_difference]
        )
        # Neither below the other: equal, or both NaN where they first differ.
        unordered = b.one(
            "Mul",
            [
                b.one("Sub", [b.i64(1), less]),
                b.one("Sub", [b.i64(1), b.one("Transpose", [less], perm=[1, 0, 2])]),
            ],
        )
        earlier = b.i64(np.triu(np.ones((m, m), np.int64), 1).reshape(m, m, 1))  # i < j
        # Slice j's place in a stable sort: the slices below it, and the unordered ones
        # before it (so the ranks are a permutation whatever the values).
        precedes = b.one("Add", [less, b.one("Mul", [unordered, earlier])])
        rank = b.one("ReduceSum", [precedes, b.i64([0, 2])], keepdims=0)  # [M]
        perm = b.one("ScatterElements", [b.i64(np.zeros(m, np.int64)), rank, arange])
        sorted_rows = b.one("Gather", [rows, perm], axis=0)
        if m > 1:
            head = b.one("Slice", [sorted_rows, b.i64([1]), b.i64([m])])
            tail = b.one("Slice", [sorted_rows, b.i64([0]), b.i64([m - 1])])
            distinct = b.one("Not", [same(head, tail, nan_is_nan=False)])
            changed = b.one("Cast", [distinct], to=TensorProto.INT64)
            changes = b.one(
                "Cast", [b.one("ReduceMax", [changed, b.i64([1])], keepdims=0)], to=TensorProto.BOOL
            )
    if m > 1:
        starts = b.one("Concat", [b.const(np.ones(1, bool)), changes], axis=0)
    else:
        starts = b.const(np.ones(1, bool))
    group = b.one(
        "Sub",
        [b.one("CumSum", [b.one("Cast", [starts], to=TensorProto.INT64), b.i64(0)]), b.i64(1)],
    )
    count = b.one("ReduceSum", [b.one("Cast", [starts], to=TensorProto.INT64)], keepdims=0)
    # Group g's start in sorted order (M past the last group): scattered to slot g.
    slot = b.one("Where", [starts, group, b.i64(m)])
    filled = b.i64(np.full(m + 1, m, np.int64))
    start_of = b.one(
        "Slice", [b.one("ScatterElements", [filled, slot, arange]), b.i64([0]), b.i64([m])]
    )
    next_start = b.one(
        "Concat", [b.one("Slice", [start_of, b.i64([1]), b.i64([m])]), b.i64([m])], axis=0
    )
    counts = b.one("Sub", [next_start, start_of])
    # The first occurrence is the group's first element in the stable order.
    first = b.one("Slice", [b.one("ScatterElements", [filled, slot, perm]), b.i64([0]), b.i64([m])])
    inverse = b.one("ScatterElements", [b.i64(np.zeros(m, np.int64)), perm, group])
    if not is_sorted:
        # Groups by first occurrence (groups past the count have first = M: last).
        _, order = b.add("TopK", [first, b.i64([m])], 2, largest=0, sorted=1)
        new_id = b.one("ScatterElements", [b.i64(np.zeros(m, np.int64)), order, arange])
        first = b.one("Gather", [first, order], axis=0)
        counts = b.one("Gather", [counts, order], axis=0)
        inverse = b.one("Gather", [new_id, inverse], axis=0)
    valid_first = b.one("Min", [first, b.i64(m - 1)])
    values = b.one("Gather", [x_name if axis is not None else rows, valid_first], axis=gather_axis)
    return _import(imp, b, [values, first, inverse, counts, count])


def _scalar(imp: ImportContext, node: Node, index: int, what: str, default: float) -> float:
    value = imp.constant(node, index, what)
    if value is None:
        return default
    if value.size != 1:
        raise node.error(
            f"{what} (input #{index}) must hold one value, given shape {list(value.shape)}"
        )
    return float(value.reshape(-1)[0])


@converts("NonMaxSuppression", domain=BOUNDED_DOMAIN)
def _bounded_nms(imp: ImportContext, node: Node) -> Sequence[Value]:
    """Greedy selection per (batch, class), as onnxruntime: among the boxes left whose score
    is above score_threshold, the highest score (the lowest index among equal scores) is
    selected and every box whose IoU with it exceeds iou_threshold is dropped; at most
    max_output_boxes_per_class times. Rows come out batch by batch, class by class, in the
    order selected."""
    boxes, scores = imp.float_input(node, 0), imp.float_input(node, 1)
    b_shape, s_shape = shape_of(boxes), shape_of(scores)
    if len(b_shape) != 3 or b_shape[2] != 4 or len(s_shape) != 3:
        raise node.error(
            f"boxes {list(b_shape)} must be [batches, boxes, 4], scores {list(s_shape)} [batches, classes, boxes]"
        )
    batches, n, _ = b_shape
    classes = s_shape[1]
    if s_shape[0] != batches or s_shape[2] != n:
        raise node.error(f"scores {list(s_shape)} do not match boxes {list(b_shape)}")
    limit = int(_scalar(imp, node, 2, "max_output_boxes_per_class", 0))
    iou_threshold = _scalar(imp, node, 3, "iou_threshold", 0.0)
    score_threshold = imp.constant(node, 4, "score_threshold")
    center = int(node.attrs.get("center_point_box", 0))
    if center not in (0, 1):
        raise node.error(f"center_point_box must be 0 or 1, given {center}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise node.error(f"iou_threshold {iou_threshold} must be in [0, 1]")
    steps = min(max(limit, 0), n)
    if steps == 0 or batches * classes == 0:
        return [Const(np.zeros((0, 3), np.int64)), Const(np.array(0, np.int64))]
    rows = batches * classes * steps
    packed = imp.emit(
        graph.NonMaxSuppressionOp,
        [boxes, scores],
        [1 + rows, 3],
        np.dtype(np.int64),
        center_point_box=i64_attr(center),
        max_per_class=i64_attr(steps),
        iou_threshold=f32_attr(iou_threshold),
        score_threshold=None
        if score_threshold is None
        else f32_attr(float(score_threshold.reshape(-1)[0])),
    )
    count = imp.reshape(imp.slice_axis(imp.slice_axis(packed, 0, 0, 1), 1, 0, 1), [])
    return [imp.slice_axis(packed, 0, 1, rows), count]
