"""canonicalize: local graph simplifications that put the IR in the form the fusions expect.

- identity, no-op reshape/transpose/cast -> their input; reshape(reshape) and
  transpose(transpose) -> one op;
- gemm -> matmul: transposes and alpha folded into constant operands, beta * C folded into a
  per-column `bias` when C is constant (an add otherwise);
- batch_norm that no conv can absorb (see fold-batchnorm) -> mul + add by per-channel constants;
- sub/div by a constant -> add/mul by the negated/reciprocal constant (a reciprocal differs
  from the division by at most 1 ulp), constants moved to the rhs of add/mul, and
  mul(mul(x, a), b), add(add(x, a), b), mul(add(x, a), b) reassociated so that constants meet;
  in 16-bit floats, where one rounding is the size of a user's tolerance, and on values that
  reach a rounding or comparison (Floor(x / 0.1), a Ceil of a trip count), where one ulp can
  move a result by a whole step, only an exact reciprocal is used and nothing is reassociated;
- pow(x, 2) -> x * x, pow(x, 0.5) -> sqrt(x), pow(x, 1) -> x.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import AnyFloat, ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern

from ember.dialects import graph
from ember.dialects.dtypes import numpy_dtype_for
from ember.dialects.weights import WeightStore
from ember.passes.program import ORIGIN
from ember.passes.transforms.fold_batchnorm import absorbing_conv, batch_norm_affine
from ember.passes.transforms.graph_utils import (
    apply_patterns,
    const_hint,
    constant_array,
    new_constant,
    per_channel,
    scalar_value,
    weights_of,
)


def _same_type(value: SSAValue, op: Operation) -> bool:
    return value.type == op.results[0].type


class RemoveIdentity(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.IdentityOp, rewriter: PatternRewriter) -> None:
        rewriter.replace(op, [], [op.input])


class SimplifyReshape(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.ReshapeOp, rewriter: PatternRewriter) -> None:
        if _same_type(op.input, op):
            rewriter.replace(op, [], [op.input])
        elif isinstance(inner := op.input.owner, graph.ReshapeOp):
            rewriter.replace(
                op, graph.ReshapeOp.build(operands=[inner.input], result_types=[op.output.type])
            )


class SimplifyTranspose(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.TransposeOp, rewriter: PatternRewriter) -> None:
        perm = graph.int_values(op.perm)
        if perm == tuple(range(len(perm))):
            rewriter.replace(op, [], [op.input])
        elif isinstance(inner := op.input.owner, graph.TransposeOp):
            inner_perm = graph.int_values(inner.perm)
            composed = [inner_perm[p] for p in perm]
            rewriter.replace(
                op,
                graph.TransposeOp.build(
                    operands=[inner.input],
                    result_types=[op.output.type],
                    properties={"perm": graph.i64_array(composed)},
                ),
            )


class RemoveNoopCast(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.CastOp, rewriter: PatternRewriter) -> None:
        if _same_type(op.input, op):
            rewriter.replace(op, [], [op.input])


def _binary(
    op_type: type[graph.BinaryElementwiseOp], lhs: SSAValue, rhs: SSAValue
) -> graph.BinaryElementwiseOp:
    return op_type(lhs, rhs)


def _dtype_of(value: SSAValue) -> np.dtype:
    """numpy dtype of a tensor value's elements (a float64 Gemm's alpha/beta stay float64)."""
    return numpy_dtype_for(graph.element_type_of(value))


@dataclass
class GemmToMatMul(RewritePattern):
    weights: WeightStore

    def _operand(
        self, value: SSAValue, transpose: bool, factor: float, rewriter: PatternRewriter
    ) -> SSAValue:
        """`value` (transposed, scaled): folded into a new constant when it is one."""
        array = constant_array(value, self.weights)
        if array is not None:
            if transpose:
                array = array.T
            if factor != 1.0:
                array = (array * np.float32(factor)).astype(array.dtype)
            if transpose or factor != 1.0:
                return new_constant(rewriter, self.weights, array, const_hint(value, "gemm"))
            return value
        if transpose:
            rows, cols = graph.shape_of(value)
            t = graph.TransposeOp.build(
                operands=[value],
                result_types=[TensorType(graph.element_type_of(value), (cols, rows))],
                properties={"perm": graph.i64_array([1, 0])},
            )
            rewriter.insert(t)
            value = t.output
        return value

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.GemmOp, rewriter: PatternRewriter) -> None:
        alpha, beta = op.alpha.value.data, op.beta.value.data
        b_const = constant_array(op.b, self.weights) is not None
        a_const = constant_array(op.a, self.weights) is not None
        # Alpha rides on whichever operand is constant; otherwise it needs a mul after.
        a_factor = alpha if a_const and not b_const else 1.0
        b_factor = alpha if b_const else 1.0
        a = self._operand(op.a, bool(op.trans_a.value.data), a_factor, rewriter)
        b = self._operand(op.b, bool(op.trans_b.value.data), b_factor, rewriter)
        out_shape = graph.shape_of(op.output)
        bias: SSAValue | None = None
        addend: SSAValue | None = None
        c_array = constant_array(op.c, self.weights)
        if op.c is not None and beta != 0.0:
            if c_array is not None:
                scaled = (c_array * np.float32(beta)).astype(c_array.dtype)
                column = per_channel(scaled, out_shape, 1)
                hint = const_hint(op.c, "bias")
                # A bias in the matmul's epilogue would be scaled by an alpha applied after it.
                alpha_after = alpha != 1.0 and not (a_const or b_const)
                if column is not None and not alpha_after:
                    bias = new_constant(rewriter, self.weights, column, hint)
                else:
                    addend = new_constant(rewriter, self.weights, scaled, hint)
            else:
                addend = op.c
                if beta != 1.0:
                    beta_c = new_constant(
                        rewriter, self.weights, np.array(beta, _dtype_of(op.c)), "gemm.beta"
                    )
                    scale = _binary(graph.MulOp, op.c, beta_c)
                    rewriter.insert(scale)
                    addend = scale.output
        new_ops: list[Operation] = [
            graph.MatMulOp.build(operands=[a, b, bias, None], result_types=[op.output.type])
        ]
        if alpha != 1.0 and not (a_const or b_const):
            alpha_c = new_constant(
                rewriter, self.weights, np.array(alpha, _dtype_of(op.output)), "gemm.alpha"
            )
            new_ops.append(_binary(graph.MulOp, new_ops[-1].results[0], alpha_c))
        if addend is not None:
            new_ops.append(_binary(graph.AddOp, new_ops[-1].results[0], addend))
        rewriter.replace(op, _with_origin(op, new_ops))


@dataclass
class BatchNormToAffine(RewritePattern):
    weights: WeightStore

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.BatchNormOp, rewriter: PatternRewriter) -> None:
        if absorbing_conv(op.input, self.weights) is not None:
            return  # fold-batchnorm will fold it into the conv's weights
        affine = batch_norm_affine(op, self.weights)
        if affine is None:
            return
        shape = (-1,) + (1,) * (len(graph.shape_of(op.input)) - 2)
        scale, shift = (
            new_constant(rewriter, self.weights, a.reshape(shape), const_hint(op.scale, s))
            for a, s in zip(affine, ("scale", "shift"), strict=True)
        )
        mul = _binary(graph.MulOp, op.input, scale)
        rewriter.replace(op, _with_origin(op, [mul, _binary(graph.AddOp, mul.output, shift)]))


def _with_origin(op: Operation, new_ops: list[Operation]) -> list[Operation]:
    """`new_ops`, each marked with the ONNX node `op` comes from (its errors and profile rows
    name the Gemm or BatchNormalization node they compute)."""
    origin = op.attributes.get(ORIGIN)
    if origin is not None:
        for new in new_ops:
            new.attributes.setdefault(ORIGIN, origin)
    return new_ops


# Ops whose result jumps where their float input crosses a boundary: one ulp of difference
# upstream can change it by a whole step (a bucket, a trip count, a comparison's answer).
_STEP_OPS = (
    graph.FloorOp,
    graph.CeilOp,
    graph.RoundOp,
    graph.SignOp,
    graph.CompareOp,
    graph.ModOp,
    graph.ArgReduceOp,
    graph.TopKOp,
    graph.QuantizeLinearOp,
    graph.YieldOp,  # control flow: a condition or a trip count may be made of it
    graph.LoopOp,
    graph.IfOp,
)


# Ops that pass a value on unchanged or elementwise: a difference of one ulp reaches their
# results as it is. Contractions and reductions are not followed: their accumulation order
# already differs between engines by more than that.
_VALUE_CARRIERS = (
    graph.UnaryElementwiseOp,
    graph.BinaryElementwiseOp,
    graph.CastOp,
    graph.WhereOp,
    graph.ReshapeOp,
    graph.TransposeOp,
    graph.SliceOp,
    graph.GatherOp,
    graph.ConcatOp,
    graph.ExpandOp,
)


def _is_float(value: SSAValue) -> bool:
    return isinstance(graph.element_type_of(value), AnyFloat)


class _StepReach:
    """Whether a value flows, through elementwise ops and data movement, into a `_STEP_OPS`."""

    def __init__(self) -> None:
        self.memo: dict[SSAValue, bool] = {}

    def __call__(self, start: SSAValue) -> bool:
        if start in self.memo:
            return self.memo[start]
        seen = {start}
        stack = [start]
        while stack:
            value = stack.pop()
            if self.memo.get(value) is False:
                continue
            for use in value.uses:
                user = use.operation
                if isinstance(user, _STEP_OPS) or (
                    isinstance(user, graph.CastOp) and not _is_float(user.results[0])
                ):
                    self.memo[start] = True
                    return True
                if not isinstance(user, _VALUE_CARRIERS):
                    continue
                for result in user.results:
                    if _is_float(result) and result not in seen:
                        seen.add(result)
                        stack.append(result)
        for value in seen:  # nothing reachable from `start` is a step op
            self.memo[value] = False
        return False


@dataclass
class ConstantArithmetic(RewritePattern):
    """Sub/div by constants, constants on the rhs, reassociation, x*1 and x+0."""

    weights: WeightStore
    reaches_step: _StepReach = field(default_factory=_StepReach)

    def _const(self, rewriter: PatternRewriter, array: np.ndarray, like: SSAValue) -> SSAValue:
        return new_constant(rewriter, self.weights, array, const_hint(like, "canon"))

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        if not isinstance(op, graph.AddOp | graph.SubOp | graph.MulOp | graph.DivOp):
            return
        lhs_c = constant_array(op.lhs, self.weights)
        rhs_c = constant_array(op.rhs, self.weights)
        if rhs_c is None or lhs_c is not None or rhs_c.dtype.kind != "f":
            if lhs_c is not None and rhs_c is None and isinstance(op, graph.AddOp | graph.MulOp):
                rewriter.replace(op, _binary(type(op), op.rhs, op.lhs))
            return
        x = op.lhs
        if isinstance(op, graph.SubOp):
            rewriter.replace(op, _binary(graph.AddOp, x, self._const(rewriter, -rhs_c, op.rhs)))
            return
        # In 16-bit floats one rounding is ~5e-4 relative, the size of the tolerances users
        # compare with: there, only rewrites that give the same values apply.
        narrow = rhs_c.dtype.itemsize < 4 or self.reaches_step(op.results[0])
        if isinstance(op, graph.DivOp):
            if np.all(np.isfinite(rhs_c)) and np.all(rhs_c != 0):
                exact_inverse = 1.0 / rhs_c.astype(np.float64)
                inverse = exact_inverse.astype(rhs_c.dtype)
                if narrow and not np.array_equal(inverse.astype(np.float64), exact_inverse):
                    return
                rewriter.replace(
                    op, _binary(graph.MulOp, x, self._const(rewriter, inverse, op.rhs))
                )
            return
        neutral = 0.0 if isinstance(op, graph.AddOp) else 1.0
        if np.all(rhs_c == neutral) and _same_type(x, op):
            rewriter.replace(op, [], [x])
            return
        inner = x.owner
        if narrow or not isinstance(inner, graph.AddOp | graph.MulOp) or not x.has_one_use():
            return
        inner_c = constant_array(inner.rhs, self.weights)
        if inner_c is None or constant_array(inner.lhs, self.weights) is not None:
            return
        if type(inner) is type(op):  # (x . a) . b -> x . (a . b)
            combined = inner_c + rhs_c if isinstance(op, graph.AddOp) else inner_c * rhs_c
            rewriter.replace(
                op, _binary(type(op), inner.lhs, self._const(rewriter, combined, op.rhs))
            )
        elif isinstance(op, graph.MulOp):  # (x + a) * b -> x * b + a * b
            scaled = _binary(graph.MulOp, inner.lhs, op.rhs)
            shift = self._const(rewriter, inner_c * rhs_c, inner.rhs)
            rewriter.replace(op, [scaled, _binary(graph.AddOp, scaled.output, shift)])


@dataclass
class SimplifyPow(RewritePattern):
    weights: WeightStore

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.PowOp, rewriter: PatternRewriter) -> None:
        exponent = scalar_value(op.rhs, self.weights)
        if exponent is None or not _same_type(op.lhs, op):
            return
        if exponent == 1.0:
            rewriter.replace(op, [], [op.lhs])
        elif exponent == 2.0:
            rewriter.replace(op, _binary(graph.MulOp, op.lhs, op.lhs))
        elif exponent == 0.5:
            rewriter.replace(op, graph.SqrtOp(op.lhs))


class Canonicalize(ModulePass):
    """Simplifies graph ops locally: identities, gemm->matmul, batch_norm->affine, constants."""

    name = "canonicalize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        weights = weights_of(ctx)
        apply_patterns(
            op,
            [
                RemoveIdentity(),
                SimplifyReshape(),
                SimplifyTranspose(),
                RemoveNoopCast(),
                GemmToMatMul(weights),
                BatchNormToAffine(weights),
                ConstantArithmetic(weights),
                SimplifyPow(weights),
            ],
        )
