"""Loop lowering of kernel.lrn (ONNX LRN across channels).

    y[n,c,s] = x[n,c,s] / (bias + alpha/size * sum_{c' in window(c)} x[n,c',s]^2) ** beta

The spatial positions s of one channel are contiguous, so `vector_width` of them are computed
at once while the channel loop runs outside; the window is unrolled for channels whose window
lies inside [0, C) and clipped by a loop for the few channels at either end.
"""

from __future__ import annotations

import math

from xdsl.dialects import func
from xdsl.dialects import math as mathd
from xdsl.ir import SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.passes.conversion.kernel_to_loops.flat_access import (
    fail,
    fconst,
    is_parallel,
    linear,
    load,
    loop,
    operand_types,
    shape,
    store,
)
from ember.passes.conversion.kernel_to_loops.registry import lowering


def power_neg(b: LoopBuilder, t: SSAValue, beta: float, width: int) -> SSAValue:
    """t ** -beta for t > 0, with the common exponents done by square roots (exact and fast)."""
    one = fconst(b, 1.0, width)
    if beta == 0.0:
        return one
    if beta == 1.0:
        return b.divf(one, t)
    if beta == 0.5:
        return b.divf(one, b.sqrt(t))
    if beta == 0.75:  # t^0.75 = sqrt(t) * sqrt(sqrt(t))
        root = b.sqrt(t)
        return b.divf(one, b.mulf(root, b.sqrt(root)))
    log = b.insert(mathd.LogOp(t)).results[0]
    return b.exp(b.mulf(log, fconst(b, -beta, width)))


@lowering(kernel.LRNOp)
def lower_lrn(op: kernel.LRNOp, target: Target, name: str) -> func.FuncOp:
    in_shape, out_shape = shape(op.input), shape(op.output)
    if in_shape != out_shape or len(in_shape) < 3:
        raise fail(
            op,
            f"needs equal (N, C, D1, ...) input and output, got {list(in_shape)} -> {list(out_shape)}",
        )
    size = op.size.value.data
    if size < 1:
        raise fail(op, f"size must be >= 1, got {size}")
    alpha, beta, bias = op.alpha.value.data, op.beta.value.data, op.bias.value.data
    n, channels = in_shape[0], in_shape[1]
    spatial = math.prod(in_shape[2:])
    before, after = (size - 1) // 2, size // 2  # floor and ceil of (size-1)/2
    vw = target.vector_width

    fn, b = kernel_function(name, operand_types(op))
    src, dst = fn.args

    def column(cb: LoopBuilder, base: SSAValue, width: int) -> None:
        """All channels of `width` spatial positions starting at flat offset `base` (channel 0)."""

        def channel(xb: LoopBuilder, c: SSAValue, checked: bool) -> None:
            at = linear(xb, [(c, spatial)], base)
            x = load(xb, src, at, width)
            if checked:
                first = xb.max_index(xb.sub(c, before), 0)
                stop = xb.min_index(xb.add(c, after + 1), channels)

                def term(tb: LoopBuilder, k: SSAValue, acc: SSAValue) -> list[SSAValue]:
                    v = load(tb, src, linear(tb, [(k, spatial)], base), width)
                    return [tb.addf(acc, tb.mulf(v, v))]

                sum_sq = xb.for_range(first, stop, 1, term, [fconst(xb, 0.0, width)])[0]
            else:
                sum_sq = xb.mulf(x, x)
                for d in range(-before, after + 1):
                    if d:
                        v = load(xb, src, xb.add(at, d * spatial), width)
                        sum_sq = xb.addf(sum_sq, xb.mulf(v, v))
            scaled = xb.addf(
                xb.mulf(sum_sq, fconst(xb, alpha / size, width)), fconst(xb, bias, width)
            )
            store(xb, xb.mulf(x, power_neg(xb, scaled, beta, width)), dst, at)

        inner_lo = min(before, channels)
        inner_hi = max(inner_lo, channels - after)
        for lo, hi, checked in (
            (0, inner_lo, True),
            (inner_lo, inner_hi, False),
            (inner_hi, channels, True),
        ):
            loop(cb, lo, hi, lambda xb, c, k=checked: channel(xb, c, k))

    blocks = spatial // vw
    if blocks:

        def block(bb: LoopBuilder, it: SSAValue) -> None:
            image, blk = (
                (bb.floordiv(it, blocks), bb.rem(it, blocks)) if n > 1 else (bb.index(0), it)
            )
            column(bb, linear(bb, [(image, channels * spatial), (blk, vw)]), vw)

        loop(b, 0, n * blocks, block, parallel=is_parallel(math.prod(in_shape)))
    if spatial % vw:

        def tail(tb: LoopBuilder, image: SSAValue) -> None:
            def position(pb: LoopBuilder, s: SSAValue) -> None:
                column(pb, linear(pb, [(image, channels * spatial), (s, 1)]), 1)

            loop(tb, blocks * vw, spatial, position)

        loop(b, 0, n, tail)
    b.ret()
    return fn
