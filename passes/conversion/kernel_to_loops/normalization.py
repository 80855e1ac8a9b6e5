"""kernel.softmax and kernel.layer_norm -> SIMD loops.

Both are a few sweeps over each row held in L1/L2: softmax takes max, then exp(x - max)
(stored) with its sum, then scales by 1/sum; layer_norm takes the mean, then the variance
around it (two passes: no cancellation, unlike E[x^2] - E[x]^2), then normalizes.
A softmax along a non-innermost axis walks its rows with strided loads instead, on blocks of
vector columns (the shape of a reduction over an outer axis).
"""

from __future__ import annotations

import math as pymath
from collections.abc import Sequence

from xdsl.dialects import func, math
from xdsl.dialects.builtin import AnyFloat
from xdsl.ir import Attribute, SSAValue
from xdsl.irdl import IRDLOperation

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.extents import has_dynamic_dims, is_dynamic
from ember.dialects.graph import element_type_of, shape_of
from ember.passes.conversion.kernel_to_loops import simd
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.passes.conversion.kernel_to_loops.registry import lowering


def _axis(op_name: str, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"{op_name}: axis {axis} out of range for rank {rank}")
    return axis % rank


def _float_element(op_name: str, value: SSAValue) -> Attribute:
    element = element_type_of(value)
    if not isinstance(element, AnyFloat):
        raise NotImplementedError(f"{op_name}: element type {element} (floats only)")
    return element


def _outer(n: int) -> list[int]:
    """Loop dims for `n` rows: none when there is a single row."""
    return [n] if n > 1 else []


def _per_width(b: LoopBuilder, scalar: SSAValue, width: int) -> dict[int, SSAValue]:
    """A row constant as sweeps want it: scalar for the tail, splat for the SIMD chunks."""
    return {1: scalar, width: simd.broadcast(b, scalar, width)}


def _recip(b: LoopBuilder, value: SSAValue) -> SSAValue:
    element, width = simd.element_and_width(value)
    return b.divf(simd.broadcast(b, b.const(1.0, element), width), value)


def _log(b: LoopBuilder, value: SSAValue) -> SSAValue:
    return b.insert(math.LogOp(value)).results[0]


def _runtime_rows(
    op: IRDLOperation,
    value: SSAValue,
    axis: int,
    static: Sequence[SSAValue],
    runtime_axis: bool = False,
) -> None:
    """Runtime extents (issue 10): a row-wise kernel takes `?` dims only before `axis` (the
    rows; with `runtime_axis`, at `axis` too), the dims after it and `static` operands
    static; anything else is refused."""
    shape = shape_of(value)
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"{op.name}: axis {axis} out of range for rank {len(shape)}")
    axis %= len(shape)
    first_static = axis + 1 if runtime_axis else axis
    if any(is_dynamic(d) for d in shape[first_static:]) or any(has_dynamic_dims(v) for v in static):
        types = ", ".join(str(v.type) for v in op.operands)
        raise NotImplementedError(
            f"{op.name} with runtime extents takes `?` dims only before axis {axis} (the "
            f"rows; the normalized dims and parameters static): {types}"
        )


@lowering(kernel.SoftmaxOp, runtime_extents=True)
def lower_softmax_runtime_rows(op: kernel.SoftmaxOp, target: Target, name: str) -> func.FuncOp:
    """Softmax over the last axis (or axes of 1 after it) of rows known at run time only:
    the static kernel's three sweeps per row, rows split over the threads at run time; the
    axis's length may be known at run time only too (attention scores [b, h, s, s])."""
    axis = op.axis.value.data
    _runtime_rows(op, op.input, axis, [], runtime_axis=True)
    if shape_of(op.input) != shape_of(op.output):
        raise ValueError(f"kernel.softmax: output {op.output.type} != input {op.input.type}")
    if pymath.prod(shape_of(op.input)[axis % len(shape_of(op.input)) + 1 :]) != 1:
        raise NotImplementedError(
            f"kernel.softmax with runtime extents along a non-innermost axis: {op.input.type}, "
            f"axis {axis}"
        )
    return _lower_softmax(op, target, name, runtime_rows=True)


@lowering(kernel.SoftmaxOp)
def lower_softmax(op: kernel.SoftmaxOp, target: Target, name: str) -> func.FuncOp:
    return _lower_softmax(op, target, name, runtime_rows=False)


def _lower_softmax(
    op: kernel.SoftmaxOp, target: Target, name: str, runtime_rows: bool
) -> func.FuncOp:
    """Softmax (or log softmax) along `axis`. float16/bfloat16 compute in float32 and round to
    the element type where ONNX's function body of the op has an op boundary: x - max, exp,
    the sum, log (log softmax) and the division or subtraction. The ONNX reference and its
    expected outputs compute exactly that; one rounding at the end is more accurate but
    differs from them by up to 2 ulps after a following MatMul (docs/architecture.md)."""
    shape = shape_of(op.input)
    if shape_of(op.output) != shape:
        raise ValueError(f"kernel.softmax: output shape {shape_of(op.output)} != input {shape}")
    element = _float_element("kernel.softmax", op.input)
    compute = simd.compute_type(element)
    narrow = compute != element
    axis = _axis("kernel.softmax", op.axis.value.data, len(shape))
    outer, n, inner = pymath.prod(shape[:axis]), shape[axis], pymath.prod(shape[axis + 1 :])
    outer_dims = _outer(outer)
    width = target.vector_width
    unroll = simd.accumulator_unroll(target)
    maximum, total = simd.Monoid("max", compute), simd.Monoid("sum", compute)
    parallel_rows = simd.want_threads(target, pymath.prod(shape), outer)
    log = op.log is not None

    def rounded(b: LoopBuilder, value: SSAValue) -> SSAValue:
        """An op boundary of the function body: round a 16-bit element type's value."""
        return simd.round_to(b, value, element) if narrow else value

    def load(b: LoopBuilder, buffer: SSAValue, idx: list[SSAValue], w: int) -> SSAValue:
        return simd.convert_float(b, simd.load(b, buffer, idx, w), compute)

    def store(b: LoopBuilder, value: SSAValue, idx: list[SSAValue]) -> None:
        simd.store(b, simd.convert_float(b, value, element), dst, idx)

    def shifted_exp(b: LoopBuilder, x: SSAValue, peak: SSAValue) -> tuple[SSAValue, SSAValue]:
        """(x - max, exp(x - max)), each rounded at its op boundary."""
        shifted = rounded(b, b.subf(x, peak))
        return shifted, rounded(b, b.exp(shifted))

    def log_offset(b: LoopBuilder, peak: SSAValue, sum_: SSAValue) -> SSAValue:
        # float32: log softmax = x - (max + log(sum)): no division, and exact for tiny terms.
        # 16-bit: (x - max) - log(sum), the function body's order (see `log_softmax_value`).
        if narrow:
            return rounded(b, _log(b, rounded(b, sum_)))
        return b.addf(peak, _log(b, sum_))

    def log_softmax_value(
        b: LoopBuilder, x: SSAValue, peak: SSAValue, offset: SSAValue
    ) -> SSAValue:
        if narrow:
            return b.subf(rounded(b, b.subf(x, peak)), offset)
        return b.subf(x, offset)

    def normalized(b: LoopBuilder, e: SSAValue, sum_or_scale: SSAValue) -> SSAValue:
        # float32 multiplies by 1/sum; 16-bit divides by the rounded sum, as the body does
        # (a float32 quotient of 16-bit values rounds to the same 16-bit value as the exact one).
        return b.divf(e, sum_or_scale) if narrow else b.mulf(e, sum_or_scale)

    def divisor(b: LoopBuilder, sum_: SSAValue) -> SSAValue:
        return rounded(b, sum_) if narrow else _recip(b, sum_)

    fn, b = kernel_function(name, [op.input.type, op.output.type])  # type: ignore[list-item]
    if runtime_rows:
        rows = b.index(b.element_count(fn.args[0], range(axis)))
        n = b.dim(fn.args[0], axis)  # type: ignore[assignment]
        src, dst = (simd.runtime_rows_view(b, arg, rows, n) for arg in fn.args[:2])
    else:
        view_shape = [*outer_dims, n] + ([inner] if inner > 1 else [])
        src, dst = (simd.view(b, arg, view_shape) for arg in fn.args)

    if inner == 1:

        def row(rb: LoopBuilder, idx: list[SSAValue]) -> None:
            def load_x(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
                return [load(vb, src, [*idx, j], w)]

            peak = _per_width(rb, simd.sweep(rb, 0, n, width, load_x, [maximum], unroll)[0], width)

            def exponentiate(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
                _, e = shifted_exp(vb, load_x(vb, j, w)[0], peak[w])
                if not log:
                    store(vb, e, [*idx, j])
                return [e]

            sum_ = simd.sweep(rb, 0, n, width, exponentiate, [total], unroll)[0]
            if log:
                offset = _per_width(rb, log_offset(rb, peak[1], sum_), width)
            else:
                scale = _per_width(rb, divisor(rb, sum_), width)

            def normalize(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
                if log:
                    y = log_softmax_value(vb, load_x(vb, j, w)[0], peak[w], offset[w])
                else:
                    y = normalized(vb, load(vb, dst, [*idx, j], w), scale[w])
                store(vb, y, [*idx, j])
                return []

            simd.sweep(rb, 0, n, width, normalize)

        if runtime_rows:
            # A run-time row length: a typical sequence's, for the thread rule.
            simd.runtime_rows_loop(b, rows, n if isinstance(n, int) else 256, target, row)
        else:
            simd.for_each_index(b, outer_dims, row, parallel_rows)
    else:

        def columns(rb: LoopBuilder, idx: list[SSAValue]) -> None:
            def block(bb: LoopBuilder, first: SSAValue, lanes: list[simd.Lane]) -> None:
                cols = [bb.add(first, off) if off else first for off, _ in lanes]

                def down_rows(
                    init: Sequence[SSAValue],
                    step: simd.NestBody,
                ) -> list[SSAValue]:
                    return simd.for_nest(bb, [n], step, init)

                def lanes_at(lb: LoopBuilder, buffer: SSAValue, i: SSAValue) -> list[SSAValue]:
                    return [load(lb, buffer, [*idx, i, c], w) for c, (_, w) in zip(cols, lanes)]

                peaks = down_rows(
                    [maximum.init(bb, w) for _, w in lanes],
                    lambda lb, i, accs: [
                        maximum.combine(lb, a, x) for a, x in zip(accs, lanes_at(lb, src, i[0]))
                    ],
                )

                def exponentiate(lb: LoopBuilder, i: list[SSAValue], accs: list[SSAValue]):
                    exps = [
                        shifted_exp(lb, x, p)[1] for x, p in zip(lanes_at(lb, src, i[0]), peaks)
                    ]
                    if not log:
                        for e, c in zip(exps, cols):
                            store(lb, e, [*idx, i[0], c])
                    return [total.combine(lb, a, e) for a, e in zip(accs, exps)]

                sums = down_rows([total.init(bb, w) for _, w in lanes], exponentiate)
                if log:
                    offsets = [log_offset(bb, p, s) for p, s in zip(peaks, sums)]
                else:
                    scales = [divisor(bb, s) for s in sums]

                def normalize(lb: LoopBuilder, i: list[SSAValue], _: list[SSAValue]) -> None:
                    if log:
                        for x, p, off, c in zip(lanes_at(lb, src, i[0]), peaks, offsets, cols):
                            store(lb, log_softmax_value(lb, x, p, off), [*idx, i[0], c])
                        return
                    for e, s, c in zip(lanes_at(lb, dst, i[0]), scales, cols):
                        store(lb, normalized(lb, e, s), [*idx, i[0], c])

                down_rows([], normalize)

            parallel_blocks = not parallel_rows and simd.want_threads(target, pymath.prod(shape), 2)
            simd.column_blocks(rb, inner, width, unroll, block, parallel_blocks)

        simd.for_each_index(b, outer_dims, columns, parallel_rows)
    b.ret()
    return fn


@lowering(kernel.LayerNormOp, runtime_extents=True)
def lower_layer_norm_runtime_rows(op: kernel.LayerNormOp, target: Target, name: str) -> func.FuncOp:
    """LayerNorm of rows known at run time only (the normalized dims, scale and bias
    static): the static kernel's sweeps per row, rows split over the threads at run time."""
    params = [v for v in (op.scale, op.bias) if v is not None]
    _runtime_rows(op, op.input, op.axis.value.data, params)
    return _lower_layer_norm(op, target, name, runtime_rows=True)


@lowering(kernel.LayerNormOp)
def lower_layer_norm(op: kernel.LayerNormOp, target: Target, name: str) -> func.FuncOp:
    return _lower_layer_norm(op, target, name, runtime_rows=False)


def _lower_layer_norm(
    op: kernel.LayerNormOp, target: Target, name: str, runtime_rows: bool
) -> func.FuncOp:
    shape = shape_of(op.input)
    if shape_of(op.output) != shape:
        raise ValueError(f"kernel.layer_norm: output shape {shape_of(op.output)} != input {shape}")
    element = _float_element("kernel.layer_norm", op.input)
    axis = _axis("kernel.layer_norm", op.axis.value.data, len(shape))
    rows, n = pymath.prod(shape[:axis]), pymath.prod(shape[axis:])
    affine = [("scale", op.scale), ("bias", op.bias)]
    for role, value in affine:
        if value is not None and pymath.prod(shape_of(value)) not in (n, 1):
            raise ValueError(
                f"kernel.layer_norm: {role} of shape {shape_of(value)} does not match the "
                f"normalized shape {shape[axis:]}"
            )
    outer_dims = _outer(rows)
    width = target.vector_width
    unroll = simd.accumulator_unroll(target)
    # 16-bit floats: statistics and normalization in float32 (LayerNormalization's default
    # stash_type), the normalized value rounded to the element type, then Mul by the scale
    # and Add of the bias each rounded, as the op's function body computes them.
    compute = simd.compute_type(element)
    narrow = compute != element
    total = simd.Monoid("sum", compute)
    eps = op.epsilon.value.data

    def load(vb: LoopBuilder, buffer: SSAValue, idx: list[SSAValue], w: int) -> SSAValue:
        return simd.convert_float(vb, simd.load(vb, buffer, idx, w), compute)

    def rounded(vb: LoopBuilder, value: SSAValue) -> SSAValue:
        return simd.round_to(vb, value, element) if narrow else value

    fn, b = kernel_function(name, [v.type for v in op.operands])  # type: ignore[misc]
    x, *params, y = fn.args[: len(op.operands)]
    if runtime_rows:
        row_count = b.index(b.element_count(x, range(axis)))
        x, y = (simd.runtime_rows_view(b, v, row_count, n) for v in (x, y))
    else:
        x, y = simd.view(b, x, [*outer_dims, n]), simd.view(b, y, [*outer_dims, n])
    # scale/bias: one element each per normalized position, or a single one for all.
    scale, *bias = (simd.view(b, p, [pymath.prod(shape_of(p))]) for p in params)
    uniform = {p: shape_of(p)[0] == 1 and n > 1 for p in [scale, *bias]}

    def row(rb: LoopBuilder, idx: list[SSAValue]) -> None:
        def load_x(vb: LoopBuilder, j: SSAValue, w: int) -> SSAValue:
            return load(vb, x, [*idx, j], w)

        inv_n = rb.const(1.0 / n, compute)
        sum_ = simd.sweep(rb, 0, n, width, lambda vb, j, w: [load_x(vb, j, w)], [total], unroll)[0]
        mean = _per_width(rb, rb.mulf(sum_, inv_n), width)

        def squared_deviation(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
            d = vb.subf(load_x(vb, j, w), mean[w])
            return [vb.mulf(d, d)]

        ss = simd.sweep(rb, 0, n, width, squared_deviation, [total], unroll)[0]
        variance = rb.mulf(ss, inv_n)
        rstd = _per_width(rb, _recip(rb, rb.sqrt(rb.addf(variance, rb.const(eps, compute)))), width)
        # Per-row loads of uniform parameters, splat like any row constant.
        hoisted = {
            p: _per_width(rb, simd.convert_float(rb, rb.load(p, [0]), compute), width)
            for p in uniform
            if uniform[p]
        }

        def param(vb: LoopBuilder, p: SSAValue, j: SSAValue, w: int) -> SSAValue:
            return hoisted[p][w] if uniform[p] else load(vb, p, [j], w)

        def normalize(vb: LoopBuilder, j: SSAValue, w: int) -> list[SSAValue]:
            t = vb.mulf(vb.subf(load_x(vb, j, w), mean[w]), rstd[w])
            s = param(vb, scale, j, w)
            if narrow:
                out = rounded(vb, vb.mulf(rounded(vb, t), s))
                out = vb.addf(out, param(vb, bias[0], j, w)) if bias else out
            elif bias:
                out = simd.muladd(vb, t, s, param(vb, bias[0], j, w))
            else:
                out = vb.mulf(t, s)
            simd.store(vb, simd.convert_float(vb, out, element), y, [*idx, j])
            return []

        simd.sweep(rb, 0, n, width, normalize)

    if runtime_rows:
        simd.runtime_rows_loop(b, row_count, n, target, row)
    else:
        simd.for_each_index(b, outer_dims, row, simd.want_threads(target, rows * n, rows))
    b.ret()
    return fn
