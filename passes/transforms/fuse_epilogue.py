"""Epilogue fusion into graph.conv / graph.matmul: bias add, residual add, activation.

The epilogue runs bias -> residual -> activation, so each pass only fuses into a producer that
has no activation yet, and only when the producer's result has no other user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern

from ember.dialects import graph
from ember.dialects.dtypes import numpy_dtype_for
from ember.dialects.numpy_eval import clip_bounds
from ember.dialects.weights import WeightStore
from ember.passes.program import absorb_origins
from ember.passes.transforms.graph_utils import (
    apply_patterns,
    const_hint,
    constant_array,
    constant_operands,
    new_constant,
    per_channel,
    rebuild,
    scalar_value,
    weights_of,
)

Contraction = graph.ConvOp | graph.MatMulOp


def fusable_producer(value: SSAValue) -> Contraction | None:
    """The conv/matmul defining `value` if an epilogue op may be folded into it."""
    op = value.owner
    if isinstance(op, Contraction) and value.has_one_use() and op.activation is None:
        return op
    return None


@dataclass
class FuseBiasAddPattern(RewritePattern):
    weights: WeightStore

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.AddOp, rewriter: PatternRewriter) -> None:
        for y, c, array in constant_operands(op, self.weights):
            producer = fusable_producer(y)
            if producer is None:
                continue
            shape = graph.shape_of(y)
            axis = 1 if isinstance(producer, graph.ConvOp) else len(shape) - 1
            vector = per_channel(array, shape, axis)
            if vector is None:
                continue
            if producer.bias is not None:
                old = constant_array(producer.bias, self.weights)
                if old is None or old.shape != vector.shape:
                    continue
                vector = old + vector
            bias = new_constant(rewriter, self.weights, vector, const_hint(c, "bias"))
            rewriter.replace(op, absorb_origins(rebuild(producer, bias=bias), op))
            rewriter.erase(producer)
            return


class FuseResidualAddPattern(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.AddOp, rewriter: PatternRewriter) -> None:
        for y, other in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
            producer = fusable_producer(y)
            if producer is None or producer.residual is not None:
                continue
            if other.type != y.type or op.output.type != y.type:
                continue
            # The fused op takes the add's place: its own operands dominate its old position,
            # which precedes the add, and `other` (which cannot depend on the single-use `y`)
            # is defined before the add, so no cycle can form.
            rewriter.replace(op, absorb_origins(rebuild(producer, residual=other), op))
            rewriter.erase(producer)
            return


def activation_of(op: Operation) -> tuple[str, list[float]] | None:
    if isinstance(op, graph.ReluOp):
        return "relu", []
    if isinstance(op, graph.SigmoidOp):
        return "sigmoid", []
    if isinstance(op, graph.TanhOp):
        return "tanh", []
    if isinstance(op, graph.LeakyReluOp):
        return "leaky_relu", [op.alpha.value.data]
    if isinstance(op, graph.ClipOp):
        dtype = numpy_dtype_for(graph.element_type_of(op.results[0]))
        lo, hi = clip_bounds(
            *(None if b is None else b.value.data for b in (op.min, op.max)), dtype
        )
        return "clip", [-math.inf if lo is None else lo, math.inf if hi is None else hi]
    return None


def _with_activation(producer: Contraction, name: str, params: list[float]) -> Operation:
    return rebuild(
        producer,
        activation=StringAttr(name),
        activation_params=graph.f32_array(params) if params else None,
    )


class FuseActivationPattern(RewritePattern):
    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        activation = activation_of(op)
        if activation is None:
            return
        producer = fusable_producer(op.operands[0])
        if producer is None:
            return
        rewriter.replace(op, absorb_origins(_with_activation(producer, *activation), op))
        rewriter.erase(producer)


@dataclass
class FuseGeluPattern(RewritePattern):
    """x * 0.5 * (1 + erf(x / sqrt 2)) ("gelu") or its tanh approximation
    x * 0.5 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))) ("gelu_tanh") after a matmul
    (any association of the products and order of the operands)."""

    weights: WeightStore

    def _factors(self, value: SSAValue, root: bool, inner: list[Operation]) -> list[SSAValue]:
        op = value.owner
        if isinstance(op, graph.MulOp) and (root or value.has_one_use()):
            inner.append(op)
            return self._factors(op.lhs, False, inner) + self._factors(op.rhs, False, inner)
        return [value]

    def _is_erf_term(self, value: SSAValue, x: SSAValue, inner: list[Operation]) -> bool:
        add = value.owner
        if not isinstance(add, graph.AddOp) or not value.has_one_use():
            return False
        for erf_v, one in ((add.lhs, add.rhs), (add.rhs, add.lhs)):
            erf = erf_v.owner
            if scalar_value(one, self.weights) != 1.0 or not isinstance(erf, graph.ErfOp):
                continue
            scaled = erf.input.owner
            if not erf_v.has_one_use() or not isinstance(scaled, graph.MulOp | graph.DivOp):
                continue
            if scaled.lhs is not x or not scaled.output.has_one_use():
                continue
            factor = scalar_value(scaled.rhs, self.weights)
            if factor is None:
                continue
            if isinstance(scaled, graph.DivOp):
                factor = 1.0 / factor if factor else math.inf
            if np.isclose(factor, 1.0 / math.sqrt(2.0), rtol=1e-6):
                inner.extend([add, erf, scaled])
                return True
        return False

    def _constant_factor(
        self, value: SSAValue, expected: float, inner: list[Operation]
    ) -> SSAValue | None:
        """y when `value` = y * c or c * y (single use) with the constant c == `expected`."""
        op = value.owner
        if not isinstance(op, graph.MulOp) or not value.has_one_use():
            return None
        for y, c in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
            factor = scalar_value(c, self.weights)
            if factor is not None and np.isclose(factor, expected, rtol=1e-6, atol=0.0):
                inner.append(op)
                return y
        return None

    def _is_cube(self, value: SSAValue, x: SSAValue, inner: list[Operation]) -> bool:
        """x^3 as Pow(x, 3), (x * x) * x or x * (x * x)."""
        op = value.owner
        if not value.has_one_use():
            return False
        if isinstance(op, graph.PowOp) and op.lhs is x:
            if scalar_value(op.rhs, self.weights) == 3.0:
                inner.append(op)
                return True
        if isinstance(op, graph.MulOp):
            for single, square in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
                sq = square.owner
                if single is x and isinstance(sq, graph.MulOp) and square.has_one_use():
                    if sq.lhs is x and sq.rhs is x:
                        inner.extend([op, sq])
                        return True
        return False

    def _is_tanh_term(self, value: SSAValue, x: SSAValue, inner: list[Operation]) -> bool:
        """1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)), in any operand order."""
        add = value.owner
        if not isinstance(add, graph.AddOp) or not value.has_one_use():
            return False
        for tanh_v, one in ((add.lhs, add.rhs), (add.rhs, add.lhs)):
            tanh = tanh_v.owner
            if scalar_value(one, self.weights) != 1.0 or not isinstance(tanh, graph.TanhOp):
                continue
            found: list[Operation] = [add, tanh]
            poly = self._constant_factor(tanh.input, math.sqrt(2.0 / math.pi), found)
            poly_op = None if poly is None else poly.owner
            if not tanh_v.has_one_use() or poly is None or not poly.has_one_use():
                continue
            if not isinstance(poly_op, graph.AddOp):
                continue
            found.append(poly_op)
            for linear, cubic in ((poly_op.lhs, poly_op.rhs), (poly_op.rhs, poly_op.lhs)):
                candidate = list(found)
                cube = self._constant_factor(cubic, 0.044715, candidate)
                if linear is x and cube is not None and self._is_cube(cube, x, candidate):
                    inner.extend(candidate)
                    return True
        return False

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: graph.MulOp, rewriter: PatternRewriter) -> None:
        inner: list[Operation] = []
        factors = self._factors(op.output, True, inner)
        if len(factors) != 3:
            return
        for x in factors:
            producer = x.owner
            if not isinstance(producer, graph.MatMulOp) or producer.activation is not None:
                continue
            rest = [f for f in factors if f is not x]
            halves = [f for f in rest if scalar_value(f, self.weights) == 0.5]
            erf_terms = [f for f in rest if f not in halves]
            matched: list[Operation] = list(inner)
            if len(halves) != 1 or len(erf_terms) != 1:
                continue
            if self._is_erf_term(erf_terms[0], x, matched):
                activation = "gelu"
            elif self._is_tanh_term(erf_terms[0], x, matched):
                activation = "gelu_tanh"
            else:
                continue
            # Every use of x must be inside the pattern (the scaled erf input and one factor).
            if any(use.operation not in matched for use in x.uses):
                continue
            fused = _with_activation(producer, activation, [])
            rewriter.replace(op, absorb_origins(fused, *reversed(matched), op))
            for dead in [*matched[1:], producer]:  # users before producers
                if (
                    dead is not op
                    and dead.parent is not None
                    and not any(r.uses for r in dead.results)
                ):
                    rewriter.erase(dead)
            return


class FuseBiasAdd(ModulePass):
    """Folds add(conv|matmul, per-channel/per-column constant) into the op's bias."""

    name = "fuse-bias-add"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        apply_patterns(op, [FuseBiasAddPattern(weights_of(ctx))])


class FuseResidualAdd(ModulePass):
    """Folds add(conv|matmul, same-shaped tensor) into the op's residual operand."""

    name = "fuse-residual-add"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        apply_patterns(op, [FuseResidualAddPattern()])


class FuseConvActivation(ModulePass):
    """Folds relu/clip/leaky_relu/sigmoid/tanh (and both GELUs after matmul) into conv/matmul."""

    name = "fuse-conv-activation"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        apply_patterns(op, [FuseActivationPattern(), FuseGeluPattern(weights_of(ctx))])
