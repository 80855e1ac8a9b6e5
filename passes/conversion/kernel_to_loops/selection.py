"""Kernels whose output size or loop bounds depend on the data: NonZero (also Compress's
positions), NonMaxSuppression, and RoiAlign with sampling_ratio 0 (`kernel.roi_align_adaptive`,
per-box sample counts; see its lowering).

`kernel.nonzero` is one pass over the input: a nonzero element's coordinates (from its flat
index) go to the running count's slot of each dimension's row; then the slots past the
count are zeroed (valid coordinates, for the gathers that read the whole bound).

`kernel.non_max_suppression` follows onnxruntime's algorithm, per (batch, class), one class
after another: the boxes whose score passes score_threshold go into a binary max-heap (the
workspace: box indices; ordered by score, then by lower index), and are popped best first;
a popped box is selected unless its IoU with a box already selected for this class exceeds
iou_threshold, until max_per_class are selected or the heap is empty. Selections are written
in that order after a running count. A class costs O(A + popped * (log A + selected)) for A
candidates. Scalar loops (the work is sequential by nature); the IoU is computed in float32
exactly as onnxruntime's `SuppressByIOU` (same operations, same order, same comparisons
with NaN), so a box at the threshold is treated the same.
"""

from __future__ import annotations

import math

from xdsl.dialects import arith, func
from xdsl.dialects.builtin import AnyFloat, IndexType, i64
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.passes.conversion.kernel_to_loops import simd
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.passes.conversion.kernel_to_loops.checks import checked_kernel_function, record_error
from ember.passes.conversion.kernel_to_loops.flat_access import element_type, operand_types, shape
from ember.passes.conversion.kernel_to_loops.registry import lowering
from ember.runtime.status import INDEX_OUT_OF_RANGE


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
    depth = max(1, n.bit_length())  # levels a sift-down may descend
    fn, b = kernel_function(name, operand_types(op))
    boxes, scores, heap, out = fn.args
    zero = b.const(0.0)

    def as_i64(eb: LoopBuilder, index: SSAValue) -> SSAValue:
        return eb.insert(arith.IndexCastOp(index, i64)).results[0]

    def as_index(eb: LoopBuilder, value: SSAValue) -> SSAValue:
        return eb.insert(arith.IndexCastOp(value, IndexType())).results[0]

    def one_class(cb: LoopBuilder, pair: SSAValue, written: SSAValue) -> list[SSAValue]:
        batch, klass = cb.floordiv(pair, classes), cb.rem(pair, classes)

        def score_of(eb: LoopBuilder, box: SSAValue) -> SSAValue:
            return eb.load(scores, [batch, klass, box])

        def ahead(eb: LoopBuilder, box: SSAValue, other: SSAValue) -> SSAValue:
            """box pops before other: a higher score, or an equal one and a lower index."""
            s, t = score_of(eb, box), score_of(eb, other)
            tie = _and(eb, _cmpf(eb, "oeq", s, t), eb.cmp_index("ult", box, other))
            return _or(eb, _cmpf(eb, "ogt", s, t), tie)

        def heap_at(eb: LoopBuilder, slot: SSAValue) -> SSAValue:
            return as_index(eb, eb.load(heap, [slot]))

        def sift_down(eb: LoopBuilder, start: SSAValue, size: SSAValue) -> None:
            def level(lb: LoopBuilder, _: SSAValue, at: SSAValue) -> list[SSAValue]:
                left = lb.add(lb.mul(at, 2), 1)
                right = lb.add(left, 1)
                has_left = lb.cmp_index("ult", left, size)
                has_right = lb.cmp_index("ult", right, size)
                # Slots past the heap are read clamped (in bounds) and never chosen.
                left_box = heap_at(lb, lb.min_index(left, n - 1))
                right_box = heap_at(lb, lb.min_index(right, n - 1))
                take_right = _and(lb, has_right, ahead(lb, right_box, left_box))
                child = lb.select(take_right, right, left)
                child_box = lb.select(take_right, right_box, left_box)
                at_box = heap_at(lb, at)
                swap = _and(lb, has_left, ahead(lb, child_box, at_box))

                def exchange(sb: LoopBuilder) -> None:
                    sb.store(as_i64(sb, child_box), heap, [at])
                    sb.store(as_i64(sb, at_box), heap, [child])

                lb.if_(swap, exchange)
                return [lb.select(swap, child, at)]

            eb.for_range(0, depth, 1, level, [start])

        def candidate(nb: LoopBuilder, box: SSAValue, size: SSAValue) -> list[SSAValue]:
            score = score_of(nb, box)
            if score_threshold is None:
                keep = _cmpf(nb, "ord", score, score)
            else:
                keep = _cmpf(nb, "ogt", score, nb.const(score_threshold))
            nb.store(as_i64(nb, box), heap, [size])  # kept only if counted (size <= box)
            return [nb.add(size, nb.select(keep, nb.index(1), nb.index(0)))]

        (size,) = cb.for_range(0, n, 1, candidate, [cb.index(0)])

        def heapify(hb: LoopBuilder, k: SSAValue) -> None:
            # Parents from the last one down to the root: size // 2 - 1 - k.
            sift_down(hb, hb.sub(hb.sub(hb.floordiv(size, 2), 1), k), size)

        cb.for_range(0, cb.floordiv(size, 2), 1, heapify)
        first = written  # this class's selections are rows first + 1 .. written

        def pop(pb: LoopBuilder, _: SSAValue, left: SSAValue, written: SSAValue):
            active = _and(
                pb,
                pb.cmp_index("ugt", left, 0),
                pb.cmp_index("ult", pb.sub(written, first), limit),
            )
            last = pb.max_index(pb.sub(left, 1), 0)
            box = heap_at(pb, pb.index(0))

            def take(tb: LoopBuilder) -> None:
                tb.store(tb.load(heap, [last]), heap, [tb.index(0)])
                sift_down(tb, tb.index(0), last)

            pb.if_(active, take)
            x_min, x_max, y_min, y_max = _extent(pb, boxes, batch, box, center)
            area = pb.mulf(pb.subf(x_max, x_min), pb.subf(y_max, y_min))

            def against(sb: LoopBuilder, row: SSAValue, kept: SSAValue) -> list[SSAValue]:
                other = as_index(sb, sb.load(out, [sb.add(row, 1), 2]))
                sx_min, sx_max, sy_min, sy_max = _extent(sb, boxes, batch, other, center)
                width = sb.subf(_std_min(sb, x_max, sx_max), _std_max(sb, x_min, sx_min))
                height = sb.subf(_std_min(sb, y_max, sy_max), _std_max(sb, y_min, sy_min))
                overlap = sb.mulf(_std_max(sb, width, zero), _std_max(sb, height, zero))
                other_area = sb.mulf(sb.subf(sx_max, sx_min), sb.subf(sy_max, sy_min))
                union = sb.subf(sb.addf(area, other_area), overlap)
                # onnxruntime: no suppression by an empty intersection, box or union.
                counts = _and(sb, _cmpf(sb, "ogt", overlap, zero), _cmpf(sb, "ogt", area, zero))
                counts = _and(sb, counts, _cmpf(sb, "ogt", other_area, zero))
                counts = _and(sb, counts, _cmpf(sb, "ogt", union, zero))
                iou = sb.divf(overlap, sb.select(counts, union, sb.const(1.0)))
                over = _and(sb, counts, _cmpf(sb, "ogt", iou, sb.const(iou_threshold)))
                return [_and(sb, kept, sb.insert(arith.XOrIOp(over, true)).results[0])]

            true = pb.insert(arith.ConstantOp.from_int_and_width(1, 1)).results[0]
            upper = pb.select(active, written, first)  # no scan once nothing is popped
            (kept,) = pb.for_range(first, upper, 1, against, [true])
            chosen = _and(pb, active, kept)

            def select(sb: LoopBuilder) -> None:
                row = sb.add(written, 1)
                for column, value in enumerate((batch, klass, box)):
                    sb.store(as_i64(sb, value), out, [row, column])

            pb.if_(chosen, select)
            return [
                pb.select(active, last, left),
                pb.add(written, pb.select(chosen, pb.index(1), pb.index(0))),
            ]

        _, written = cb.for_range(0, size, 1, pop, [size, written])
        return [written]

    # Every slot holds a box index from the start: a sift-down reads the slots past the heap
    # (clamped into the buffer) before it knows they are unused, and uses them as addresses.
    zero_i64 = b.const(0, i64)
    b.for_range(0, n, 1, lambda zb, k: zb.store(zero_i64, heap, [k]))
    (total,) = b.for_range(0, batches * classes, 1, one_class, [b.index(0)])
    b.store(as_i64(b, total), out, [0, 0])
    b.store(zero_i64, out, [0, 1])
    b.store(zero_i64, out, [0, 2])
    b.ret()
    return fn


@lowering(kernel.NonZeroOp)
def lower_nonzero(op: kernel.NonZeroOp, target: Target, name: str) -> func.FuncOp:
    dims = shape(op.input)
    size, rank = math.prod(dims), len(dims)
    strides = [math.prod(dims[d + 1 :]) for d in range(rank)]
    fn, b = kernel_function(name, operand_types(op))
    source = simd.view(b, fn.args[0], [size])
    out = fn.args[1]
    element = element_type(op.input)
    zero_i64 = b.const(0, i64)

    def as_i64(eb: LoopBuilder, index: SSAValue) -> SSAValue:
        return eb.insert(arith.IndexCastOp(index, i64)).results[0]

    def element_at(eb: LoopBuilder, i: SSAValue, count: SSAValue) -> list[SSAValue]:
        x = eb.load(source, [i])
        if isinstance(element, AnyFloat):
            nonzero = _cmpf(eb, "une", x, eb.const(0.0, element))  # NaN is nonzero
        else:
            nonzero = eb.insert(arith.CmpiOp(x, eb.const(0, element), "ne")).results[0]

        def write(wb: LoopBuilder) -> None:
            for d in range(rank):
                coordinate = wb.rem(wb.floordiv(i, strides[d]), dims[d]) if rank > 1 else i
                wb.store(as_i64(wb, coordinate), out, [wb.add(count, 1 + d * size)])

        eb.if_(nonzero, write)
        return [eb.add(count, eb.select(nonzero, eb.index(1), eb.index(0)))]

    (count,) = b.for_range(0, size, 1, element_at, [b.index(0)])
    for d in range(rank):
        b.for_range(
            count, size, 1, lambda zb, j, d=d: zb.store(zero_i64, out, [zb.add(j, 1 + d * size)])
        )
    b.store(as_i64(b, count), out, [0])
    b.ret()
    return fn


@lowering(kernel.RoiAlignAdaptiveOp)
def lower_roi_align_adaptive(
    op: kernel.RoiAlignAdaptiveOp, target: Target, name: str
) -> func.FuncOp:
    """onnxruntime's RoiAlign with sampling_ratio 0, operation for operation: per box, the
    number of samples per bin along each axis is ceil(box extent / output extent), computed
    from the box at run time, so the sample loops have run-time bounds. A batch index outside
    [0, N) is recorded (KernelError after the call) and reads image 0.

    Scalar loops: in NCHW the channels of one tap are H·W apart (no contiguous lanes), and the
    sample grid varies per box. Each sample's taps and weights are computed once, then applied
    to every channel, accumulating in the output; boxes run in parallel."""
    n, channels, height, width = shape(op.x)
    boxes = shape(op.rois)[0]
    out_h, out_w = shape(op.output)[2:]
    max_mode = bool(op.max_mode.value.data)
    half_pixel = bool(op.half_pixel.value.data)
    scale = op.spatial_scale.value.data
    fn, b, status = checked_kernel_function(name, operand_types(op))
    x, rois, batch_indices, out = fn.args[:4]

    def to_index(eb: LoopBuilder, value: SSAValue) -> SSAValue:
        """A float known to be in [-1, 65536] truncated toward zero, as static_cast<int64_t>."""
        as_int = eb.insert(arith.FPToSIOp(value, i64)).results[0]
        return eb.insert(arith.IndexCastOp(as_int, IndexType())).results[0]

    def to_float(eb: LoopBuilder, index: SSAValue) -> SSAValue:
        as_int = eb.insert(arith.IndexCastOp(index, i64)).results[0]
        return eb.insert(arith.SIToFPOp(as_int, eb.const(0.0).type)).results[0]

    def grid_count(eb: LoopBuilder, extent: SSAValue, bins: int) -> SSAValue:
        """ceil(extent / bins) as a count; NaN and negative extents give 0 samples (as the
        loops of onnxruntime, which then writes 0), and the count is capped at 65536 per
        axis (past it onnxruntime would take more than 4e9 samples per bin)."""
        ratio = eb.divf(extent, eb.const(float(bins)))
        ratio = eb.select(_cmpf(eb, "ogt", ratio, eb.const(-1.0)), ratio, eb.const(-1.0))
        ratio = _std_min(eb, ratio, eb.const(65536.0))
        truncated = to_index(eb, ratio)
        up = _cmpf(eb, "olt", to_float(eb, truncated), ratio)  # ceil of a positive fraction
        count = eb.add(truncated, eb.select(up, eb.index(1), eb.index(0)))
        return eb.max_index(count, 0)

    def one_box(rb: LoopBuilder, r: SSAValue) -> None:
        raw = rb.insert(arith.IndexCastOp(rb.load(batch_indices, [r]), IndexType())).results[0]
        outside = rb.cmp_index("uge", raw, n)  # unsigned: negative indices are outside too
        rb.if_(
            outside,
            lambda eb: record_error(eb, status, INDEX_OUT_OF_RANGE, raw, n, 0),
        )
        image = rb.select(outside, rb.index(0), raw)
        offset = rb.const(0.5 if half_pixel else 0.0)
        start_w, start_h, end_w, end_h = (
            rb.subf(rb.mulf(rb.load(rois, [r, k]), rb.const(scale)), offset) for k in range(4)
        )
        roi_w, roi_h = rb.subf(end_w, start_w), rb.subf(end_h, start_h)
        if not half_pixel:  # malformed boxes are forced to 1x1
            roi_w, roi_h = _std_max(rb, roi_w, rb.const(1.0)), _std_max(rb, roi_h, rb.const(1.0))
        bin_h, bin_w = (
            rb.divf(roi_h, rb.const(float(out_h))),
            rb.divf(roi_w, rb.const(float(out_w))),
        )
        grid_h, grid_w = grid_count(rb, roi_h, out_h), grid_count(rb, roi_w, out_w)
        grid_h_f, grid_w_f = to_float(rb, grid_h), to_float(rb, grid_w)
        count = rb.max_index(rb.mul(grid_h, grid_w), 1)
        count_f = to_float(rb, count)

        def axis(
            sb: LoopBuilder,
            start: SSAValue,
            bin_size: SSAValue,
            grid_f: SSAValue,
            p: SSAValue,
            i: SSAValue,
            size: int,
        ) -> tuple[SSAValue, SSAValue, SSAValue, SSAValue, SSAValue]:
            """(in range, low tap, high tap, low weight, high weight) of one sample along
            one axis, as onnxruntime's pre_calc_for_bilinear_interpolate."""
            step = sb.divf(sb.mulf(sb.addf(to_float(sb, i), sb.const(0.5)), bin_size), grid_f)
            pos = sb.addf(sb.addf(start, sb.mulf(to_float(sb, p), bin_size)), step)
            valid = _and(
                sb,
                # Ordered: a NaN position reads nothing (onnxruntime's cast of it is undefined).
                _cmpf(sb, "oge", pos, sb.const(-1.0)),
                _cmpf(sb, "ole", pos, sb.const(float(size))),
            )
            pos = sb.select(_cmpf(sb, "ole", pos, sb.const(0.0)), sb.const(0.0), pos)
            # In range, pos is in [0, size]: its truncation is an index.
            pos = sb.select(valid, pos, sb.const(0.0))
            low = to_index(sb, pos)
            at_edge = sb.cmp_index("sge", low, size - 1)
            low = sb.select(at_edge, sb.index(size - 1), low)
            high = sb.select(at_edge, low, sb.add(low, 1))
            pos = sb.select(at_edge, to_float(sb, low), pos)
            high_weight = sb.subf(pos, to_float(sb, low))
            low_weight = sb.subf(sb.const(1.0), high_weight)
            return valid, low, high, low_weight, high_weight

        def one_bin(bb: LoopBuilder, bin_index: SSAValue) -> None:
            ph, pw = bb.floordiv(bin_index, out_w), bb.rem(bin_index, out_w)
            # The bin's value of every channel accumulates in the output (0 if it takes no
            # samples), so each sample's taps and weights are computed once for all channels.
            zero = bb.const(0.0)
            bb.for_range(0, channels, 1, lambda zb, c: zb.store(zero, out, [r, c, ph, pw]))

            def sample_row(yb: LoopBuilder, iy: SSAValue) -> None:
                y_ok, y_low, y_high, hy, ly = axis(yb, start_h, bin_h, grid_h_f, ph, iy, height)

                def sample(sb: LoopBuilder, ix: SSAValue) -> None:
                    x_ok, x_low, x_high, hx, lx = axis(sb, start_w, bin_w, grid_w_f, pw, ix, width)
                    ok = _and(sb, y_ok, x_ok)
                    # Out of range: every weight 0 and every tap at (0, 0), as onnxruntime.
                    taps = []
                    for yi, wy in ((y_low, hy), (y_high, ly)):
                        for xi, wx in ((x_low, hx), (x_high, lx)):
                            weight = sb.select(ok, sb.mulf(wy, wx), sb.const(0.0))
                            yi_ok = sb.select(ok, yi, sb.index(0))
                            xi_ok = sb.select(ok, xi, sb.index(0))
                            taps.append((weight, yi_ok, xi_ok))
                    first = _and(sb, sb.cmp_index("eq", iy, 0), sb.cmp_index("eq", ix, 0))

                    def one_channel(cb: LoopBuilder, c: SSAValue) -> None:
                        weighted = [
                            cb.mulf(weight, cb.load(x, [image, c, yi, xi]))
                            for weight, yi, xi in taps
                        ]
                        acc = cb.load(out, [r, c, ph, pw])
                        if max_mode:
                            best = _std_max(cb, weighted[0], weighted[1])
                            best = _std_max(cb, _std_max(cb, best, weighted[2]), weighted[3])
                            acc = cb.select(first, best, _std_max(cb, acc, best))
                        else:
                            total = cb.addf(cb.addf(weighted[0], weighted[1]), weighted[2])
                            acc = cb.addf(acc, cb.addf(total, weighted[3]))
                        cb.store(acc, out, [r, c, ph, pw])

                    sb.for_range(0, channels, 1, one_channel)

                yb.for_range(0, grid_w, 1, sample)

            bb.for_range(0, grid_h, 1, sample_row)
            if not max_mode:
                bb.for_range(
                    0,
                    channels,
                    1,
                    lambda db, c: db.store(
                        db.divf(db.load(out, [r, c, ph, pw]), count_f), out, [r, c, ph, pw]
                    ),
                )

        rb.for_range(0, out_h * out_w, 1, one_bin)

    # Boxes write disjoint output rows: they run on the thread pool.
    b.parallel_range(0, boxes, 1, one_box)
    b.ret()
    return fn
