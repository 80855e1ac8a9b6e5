"""Kernels whose output size depends on the data: NonMaxSuppression.

`kernel.non_max_suppression` is greedy and sequential by nature: per (batch, class), the
highest-scoring box left is selected and every box overlapping it by more than the IoU
threshold leaves play, at most `max_per_class` times. Scalar loops, one class after another
(the selections are written in that order, after a running count); the workspace holds the
class's boxes still in play (1.0 / 0.0). Each step scans the N boxes twice (the best one
left, then the overlaps), so a class costs O(min(max_per_class, candidates) * N). The IoU is
computed in float32 exactly as onnxruntime's `SuppressByIOU` (same operations, same order,
same comparisons with NaN), so a box at the threshold is treated the same.
"""

from __future__ import annotations

from xdsl.dialects import arith, func
from xdsl.dialects.builtin import i64
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.passes.conversion.kernel_to_loops.flat_access import operand_types, shape
from ember.passes.conversion.kernel_to_loops.registry import lowering


def _cmpf(b: LoopBuilder, predicate: str, x: SSAValue, y: SSAValue) -> SSAValue:
    return b.insert(arith.CmpfOp(x, y, predicate)).results[0]


def _and(b: LoopBuilder, x: SSAValue, y: SSAValue) -> SSAValue:
    return b.insert(arith.AndIOp(x, y)).results[0]


def _or(b: LoopBuilder, x: SSAValue, y: SSAValue) -> SSAValue:
    return b.insert(arith.OrIOp(x, y)).results[0]


def _std_max(b: LoopBuilder, x: SSAValue, y: SSAValue) -> SSAValue:
    """C++ std::max(x, y) = x < y ? y : x (not IEEE max: NaN handling as onnxruntime)."""
    return b.select(_cmpf(b, "olt", x, y), y, x)


def _std_min(b: LoopBuilder, x: SSAValue, y: SSAValue) -> SSAValue:
    """C++ std::min(x, y) = y < x ? y : x."""
    return b.select(_cmpf(b, "olt", y, x), y, x)


def _extent(
    b: LoopBuilder, boxes: SSAValue, batch: SSAValue, box: SSAValue, center: bool
) -> tuple[SSAValue, SSAValue, SSAValue, SSAValue]:
    """(x_min, x_max, y_min, y_max) of one box, as onnxruntime derives them."""
    v = [b.load(boxes, [batch, box, k]) for k in range(4)]
    if center:  # [x_center, y_center, width, height]
        two = b.const(2.0)
        half_w, half_h = b.divf(v[2], two), b.divf(v[3], two)
        return (
            b.subf(v[0], half_w),
            b.addf(v[0], half_w),
            b.subf(v[1], half_h),
            b.addf(v[1], half_h),
        )

    def min_max(lhs: SSAValue, rhs: SSAValue) -> tuple[SSAValue, SSAValue]:
        ge = _cmpf(b, "oge", lhs, rhs)  # MaxMin: lhs >= rhs ? (rhs, lhs) : (lhs, rhs)
        return b.select(ge, rhs, lhs), b.select(ge, lhs, rhs)

    x_min, x_max = min_max(v[1], v[3])  # [y1, x1, y2, x2]
    y_min, y_max = min_max(v[0], v[2])
    return x_min, x_max, y_min, y_max


@lowering(kernel.NonMaxSuppressionOp)
def lower_non_max_suppression(
    op: kernel.NonMaxSuppressionOp, target: Target, name: str
) -> func.FuncOp:
    batches, n, _ = shape(op.boxes)
    classes = shape(op.scores)[1]
    limit = op.max_per_class.value.data
    center = bool(op.center_point_box.value.data)
    iou_threshold = op.iou_threshold.value.data
    score_threshold = None if op.score_threshold is None else op.score_threshold.value.data
    fn, b = kernel_function(name, operand_types(op))
    boxes, scores, in_play, out = fn.args
    one, zero = b.const(1.0), b.const(0.0)

    def as_i64(eb: LoopBuilder, index: SSAValue) -> SSAValue:
        return eb.insert(arith.IndexCastOp(index, i64)).results[0]

    def one_class(cb: LoopBuilder, pair: SSAValue, written: SSAValue) -> list[SSAValue]:
        batch, klass = cb.floordiv(pair, classes), cb.rem(pair, classes)

        def candidate(nb: LoopBuilder, box: SSAValue, count: SSAValue) -> list[SSAValue]:
            score = nb.load(scores, [batch, klass, box])
            if score_threshold is None:
                keep = _cmpf(nb, "ord", score, score)
            else:
                keep = _cmpf(nb, "ogt", score, nb.const(score_threshold))
            nb.store(nb.select(keep, one, zero), in_play, [box])
            return [nb.add(count, nb.select(keep, nb.index(1), nb.index(0)))]

        (candidates,) = cb.for_range(0, n, 1, candidate, [cb.index(0)])

        def step(sb: LoopBuilder, _: SSAValue, written: SSAValue) -> list[SSAValue]:
            # The best box in play: the highest score, the lowest index among equal ones.
            def scan(nb: LoopBuilder, box: SSAValue, best_score: SSAValue, best: SSAValue):
                score = nb.load(scores, [batch, klass, box])
                playing = _cmpf(nb, "ogt", nb.load(in_play, [box]), zero)
                first = nb.cmp_index("eq", best, n)
                better = _or(nb, first, _cmpf(nb, "ogt", score, best_score))
                take = _and(nb, playing, better)
                return [nb.select(take, score, best_score), nb.select(take, box, best)]

            _, best = sb.for_range(0, n, 1, scan, [zero, sb.index(n)])
            found = sb.cmp_index("ult", best, n)

            def select(ib: LoopBuilder) -> None:
                row = ib.add(written, 1)
                for column, value in enumerate((batch, klass, best)):
                    ib.store(as_i64(ib, value), out, [row, column])
                ib.store(zero, in_play, [best])
                sx_min, sx_max, sy_min, sy_max = _extent(ib, boxes, batch, best, center)
                selected_area = ib.mulf(ib.subf(sx_max, sx_min), ib.subf(sy_max, sy_min))

                def suppress(nb: LoopBuilder, box: SSAValue) -> None:
                    x_min, x_max, y_min, y_max = _extent(nb, boxes, batch, box, center)
                    width = nb.subf(_std_min(nb, x_max, sx_max), _std_max(nb, x_min, sx_min))
                    height = nb.subf(_std_min(nb, y_max, sy_max), _std_max(nb, y_min, sy_min))
                    overlap = nb.mulf(_std_max(nb, width, zero), _std_max(nb, height, zero))
                    area = nb.mulf(nb.subf(x_max, x_min), nb.subf(y_max, y_min))
                    union = nb.subf(nb.addf(area, selected_area), overlap)
                    # onnxruntime: no suppression by an empty intersection, box or union.
                    counts = _and(nb, _cmpf(nb, "ogt", overlap, zero), _cmpf(nb, "ogt", area, zero))
                    counts = _and(nb, counts, _cmpf(nb, "ogt", selected_area, zero))
                    counts = _and(nb, counts, _cmpf(nb, "ogt", union, zero))
                    iou = nb.divf(overlap, nb.select(counts, union, one))
                    over = _cmpf(nb, "ogt", iou, nb.const(iou_threshold))
                    dropped = _and(nb, counts, over)
                    nb.store(nb.select(dropped, zero, nb.load(in_play, [box])), in_play, [box])

                ib.for_range(0, n, 1, suppress)

            sb.if_(found, select)
            return [sb.add(written, sb.select(found, sb.index(1), sb.index(0)))]

        steps = cb.min_index(candidates, limit)
        return cb.for_range(0, steps, 1, step, [written])

    (total,) = b.for_range(0, batches * classes, 1, one_class, [b.index(0)])
    b.store(as_i64(b, total), out, [0, 0])
    zero_i64 = b.const(0, i64)
    b.store(zero_i64, out, [0, 1])
    b.store(zero_i64, out, [0, 2])
    b.ret()
    return fn
