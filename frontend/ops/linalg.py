"""ONNX -> graph dialect: Det, as Gaussian elimination with partial pivoting written out as
graph ops.

LU factorisation is inherently sequential over the n pivot steps, and the matrices models
take determinants of are small (2x2 to 4x4 affine and rotation matrices), so the converter
unrolls the n steps at compile time; each step is a few kernels over the whole batch of
matrices at once (pivot by ArgMax of |column|, row swap by a one-hot Where, elimination by a
broadcast multiply-subtract). The determinant is the product of the pivots, negated per row
swap, as LAPACK's getrf + the diagonal product numpy.linalg.det computes. The number of ops
grows with n, so n is bounded (`MAX_DET_SIZE`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ember.frontend.context import ImportContext, Node, Value, dtype_of, shape_of
from ember.frontend.ops.sampling import OnnxNodes
from ember.frontend.registry import converts

# Each pivot step is ~15 small kernels: 32 steps stay well under a second of compile time.
MAX_DET_SIZE = 32


@converts("Det")
def _det(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.float_input(node, 0)
    shape = shape_of(x)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise node.error(f"input of shape {list(shape)} (the last two dims must be square)")
    n = shape[-1]
    if n > MAX_DET_SIZE:
        raise node.unsupported(
            f"{n}x{n} matrices: ember unrolls the elimination, up to {MAX_DET_SIZE}x{MAX_DET_SIZE}"
        )
    batch = list(shape[:-2])
    rows = math.prod(batch)
    dtype = dtype_of(x)
    b = OnnxNodes(f"{node.name}/Det")

    def const(value: object, kind: type = np.int64) -> str:
        return b.const(np.asarray(value, dtype if kind is float else kind))

    def take(value: str, starts: list[int], ends: list[int], axes: list[int]) -> str:
        return b.add("Slice", [value, const(starts), const(ends), const(axes)])

    matrix = b.add("Reshape", [node.proto.input[0], const([rows, n, n])])
    det = const(np.ones(rows), float)
    zero, one = const(0.0, float), const(1.0, float)
    for size in range(n, 0, -1):
        column = b.add("Reshape", [take(matrix, [0], [1], [2]), const([rows, size])])
        pivot_at = b.add("ArgMax", [b.add("Abs", [column])], axis=1, keepdims=1)  # [rows, 1]
        pivot_row = b.add(
            "GatherElements",
            [
                matrix,
                b.add(
                    "Expand",
                    [b.add("Reshape", [pivot_at, const([rows, 1, 1])]), const([rows, 1, size])],
                ),
            ],
            axis=1,
        )  # [rows, 1, size]
        pivot = b.add("Reshape", [take(pivot_row, [0], [1], [2]), const([rows])])
        det = b.add("Mul", [det, pivot])
        swapped = b.add(
            "Reshape", [b.add("Not", [b.add("Equal", [pivot_at, const(0)])]), const([rows])]
        )
        det = b.add("Where", [swapped, b.add("Neg", [det]), det])
        if size == 1:
            break
        # Row 0 moves to where the pivot row was; rows 1.. of that are eliminated below it.
        first_row = take(matrix, [0], [1], [1])
        at_pivot = b.add(
            "Equal",
            [
                b.add("Reshape", [pivot_at, const([rows, 1, 1])]),
                const(np.arange(size).reshape(1, size, 1)),
            ],
        )  # [rows, size, 1]
        rest = take(b.add("Where", [at_pivot, first_row, matrix]), [1], [size], [1])
        # A zero pivot means a zero column (the det is already 0): divide by 1 instead.
        safe = b.add("Where", [b.add("Equal", [pivot, zero]), one, pivot])
        factor = b.add(
            "Div", [take(rest, [0], [1], [2]), b.add("Reshape", [safe, const([rows, 1, 1])])]
        )  # [rows, size - 1, 1]
        matrix = b.add(
            "Sub",
            [
                take(rest, [1], [size], [2]),
                b.add("Mul", [factor, take(pivot_row, [1], [size], [2])]),
            ],
        )
    out = b.add("Reshape", [det, const(batch)])
    return [b.import_as(imp, node, out)]
