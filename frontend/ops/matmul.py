"""ONNX -> graph dialect: contractions: MatMul (numpy's rules for 1-D operands), Gemm and
Einsum.

Einsum takes diagonals by gathers, contracts float32 pairs with one batched matmul and anything
else by broadcast products summed as early as possible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ember.dialects import graph
from ember.frontend.context import (
    ImportContext,
    Node,
    Value,
    dtype_of,
    f32_attr,
    i64_attr,
    scalar,
    shape_of,
)
from ember.frontend.registry import converts


@converts("Gemm")
def _gemm(imp: ImportContext, node: Node) -> Sequence[Value]:
    a, b, c = imp.required(node, 0), imp.required(node, 1), imp.input(node, 2)
    trans_a, trans_b = node.attrs.get("transA", 0), node.attrs.get("transB", 0)
    sa, sb = shape_of(a), shape_of(b)
    if len(sa) != 2 or len(sb) != 2:
        raise node.error(f"operands must be 2-D, got {sa} and {sb}")
    m, k = (sa[1], sa[0]) if trans_a else sa
    k2, n = (sb[1], sb[0]) if trans_b else sb
    if k != k2:
        raise node.error(f"contraction mismatch {sa} x {sb} (transA={trans_a}, transB={trans_b})")
    # C broadcasts to (M, N) one way only: [3, 1] against (1, 3) would widen the output.
    if c is not None and not graph.broadcasts_to(shape_of(c), (m, n)):
        raise node.error(f"C {shape_of(c)} does not broadcast to {(m, n)}")
    if k == 0 and m * n > 0:
        # alpha * A @ B sums no products: the result is beta * C (or zeros), no kernel of K=0.
        beta = node.attrs.get("beta", 1.0)
        term = scalar(0.0, a) if c is None else imp.binary(node, graph.MulOp, c, scalar(beta, c))
        return [term if shape_of(term) == (m, n) else imp.emit(graph.ExpandOp, [term], [m, n])]
    return [
        imp.emit(
            graph.GemmOp,
            [a, b, c],
            [m, n],
            alpha=f32_attr(node.attrs.get("alpha", 1.0)),
            beta=f32_attr(node.attrs.get("beta", 1.0)),
            trans_a=i64_attr(trans_a),
            trans_b=i64_attr(trans_b),
        )
    ]


@converts("MatMul")
def _matmul(imp: ImportContext, node: Node) -> Sequence[Value]:
    a, b = imp.required(node, 0), imp.required(node, 1)
    sa, sb = list(shape_of(a)), list(shape_of(b))
    # numpy.matmul rules: 1-D operands are promoted to matrices and the new axis dropped.
    a2 = imp.reshape(a, [1, *sa]) if len(sa) == 1 else a
    b2 = imp.reshape(b, [*sb, 1]) if len(sb) == 1 else b
    pa, pb = shape_of(a2), shape_of(b2)
    if pa[-1] != pb[-2]:
        raise node.error(f"contraction mismatch {tuple(sa)} @ {tuple(sb)}")
    try:
        batch = graph.broadcast_shapes(pa[:-2], pb[:-2])
    except ValueError as err:
        raise node.error(str(err)) from err
    y = imp.emit(graph.MatMulOp, [a2, b2, None, None], [*batch, pa[-2], pb[-1]])
    out = [*batch, *([pa[-2]] if len(sa) > 1 else []), *([pb[-1]] if len(sb) > 1 else [])]
    return [imp.reshape(y, out)]


def _einsum_terms(node: Node, equation: str, ranks: Sequence[int]) -> tuple[list[str], str]:
    """Operand and output subscripts with '...' spelled out as fresh letters."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise node.error(f"equation '{equation}' names {len(terms)} operands, got {len(ranks)}")
    fresh = [chr(0x3B1 + i) for i in range(16)]  # greek letters cannot clash with ONNX's
    ellipsis_rank = 0
    for term, rank in zip(terms, ranks):
        if "..." in term:
            ellipsis_rank = max(ellipsis_rank, rank - (len(term) - 3))
    broadcast = "".join(fresh[:ellipsis_rank])
    spelled = []
    for term, rank in zip(terms, ranks):
        if "..." in term:
            n = rank - (len(term) - 3)
            term = term.replace("...", broadcast[ellipsis_rank - n :])
        if len(term) != rank:
            raise node.error(f"subscripts '{term}' do not fit an operand of rank {rank}")
        spelled.append(term)
    if arrow:
        out = rhs.replace("...", broadcast)
    else:  # implicit output: the broadcast dims, then letters used once, alphabetically
        counts = {c: "".join(spelled).count(c) for c in "".join(spelled)}
        out = broadcast + "".join(
            sorted(c for c, k in counts.items() if k == 1 and c not in broadcast)
        )
    return spelled, out


def _diagonal(imp: ImportContext, x: Value, term: str) -> tuple[Value, str]:
    """Collapse every repeated subscript of one operand to its diagonal."""
    while len(set(term)) < len(term):
        letter = next(c for c in term if term.count(c) > 1)
        a = term.index(letter)
        b = term.index(letter, a + 1)
        rest = [i for i in range(len(term)) if i not in (a, b)]
        shape = shape_of(x)
        perm = [*rest, a, b]
        moved = imp.emit(
            graph.TransposeOp, [x], [shape[p] for p in perm], perm=graph.i64_array(perm)
        )
        n = shape[a]
        flat = imp.reshape(moved, [*(shape[i] for i in rest), n * n])
        x = imp.gather_axis(flat, len(rest), np.arange(n) * (n + 1))
        term = "".join(term[i] for i in rest) + letter
    return x, term


def _align(imp: ImportContext, x: Value, term: str, order: str, sizes: dict[str, int]) -> Value:
    """x (subscripts `term`) transposed and reshaped to `order`, size 1 where it lacks a letter."""
    kept = [c for c in order if c in term]
    perm = [term.index(c) for c in kept]
    if perm != list(range(len(perm))):
        shape = shape_of(x)
        x = imp.emit(graph.TransposeOp, [x], [shape[p] for p in perm], perm=graph.i64_array(perm))
    return imp.reshape(x, [sizes[c] if c in term else 1 for c in order])


def _contract(
    imp: ImportContext,
    a: Value,
    a_term: str,
    b: Value,
    b_term: str,
    summed: str,
    sizes: dict[str, int],
) -> tuple[Value, str]:
    """A contraction over `summed` as one batched graph.matmul [B, M, K] @ [B, K, N]."""
    batch = "".join(c for c in a_term if c in b_term and c not in summed)
    left = "".join(c for c in a_term if c not in b_term)
    right = "".join(c for c in b_term if c not in a_term)

    def size(letters: str) -> int:
        return math.prod(sizes[c] for c in letters)

    lhs = imp.reshape(
        _align(imp, a, a_term, batch + left + summed, sizes),
        [size(batch), size(left), size(summed)],
    )
    rhs = imp.reshape(
        _align(imp, b, b_term, batch + summed + right, sizes),
        [size(batch), size(summed), size(right)],
    )
    product = imp.emit(
        graph.MatMulOp, [lhs, rhs, None, None], [size(batch), size(left), size(right)]
    )
    term = batch + left + right
    return imp.reshape(product, [sizes[c] for c in term]), term


@converts("Einsum")
def _einsum(imp: ImportContext, node: Node) -> Sequence[Value]:
    operands = [imp.required(node, i) for i in range(len(node.proto.input))]
    dtype = dtype_of(operands[0])
    if dtype.itemsize < 4 and dtype.kind in "fV":
        # 16-bit floats accumulate in float32 (and are rounded once, at the end).
        f32 = np.dtype(np.float32)
        operands = [imp.emit(graph.CastOp, [v], shape_of(v), f32) for v in operands]
    equation = node.attrs["equation"]
    equation = equation.decode() if isinstance(equation, bytes) else equation
    terms, out = _einsum_terms(node, equation, [len(shape_of(v)) for v in operands])
    sizes: dict[str, int] = {}
    for value, term in zip(operands, terms):
        for c, n in zip(term, shape_of(value)):
            if sizes.setdefault(c, n) != n and 1 not in (n, sizes[c]):
                raise node.error(f"subscript '{c}' has sizes {sizes[c]} and {n}")
            sizes[c] = max(sizes[c], n)
    if any(c not in sizes for c in out):
        raise node.error(f"output subscripts '{out}' name letters no operand has")
    acc, acc_term = _diagonal(imp, operands[0], terms[0])
    for k in range(1, len(operands) + 1):
        later = out + "".join(terms[k:])
        # Sum out what neither the output nor a later operand needs, as early as possible.
        drop = [i for i, c in enumerate(acc_term) if c not in later]
        if drop:
            acc = imp.reduce(node, acc, "sum", drop, False)
            acc_term = "".join(c for i, c in enumerate(acc_term) if i not in drop)
        if k == len(operands):
            break
        rhs, rhs_term = _diagonal(imp, operands[k], terms[k])
        needed = out + "".join(terms[k + 1 :])
        private = [i for i, c in enumerate(rhs_term) if c not in needed and c not in acc_term]
        if private:
            rhs = imp.reduce(node, rhs, "sum", private, False)
            rhs_term = "".join(c for i, c in enumerate(rhs_term) if i not in private)
        summed = "".join(c for c in acc_term if c in rhs_term and c not in needed)
        if summed and dtype_of(acc) == np.float32 and dtype_of(rhs) == np.float32:
            acc, acc_term = _contract(imp, acc, acc_term, rhs, rhs_term, summed, sizes)
            continue
        order = acc_term + "".join(c for c in dict.fromkeys(rhs_term) if c not in acc_term)
        acc = imp.binary(
            node,
            graph.MulOp,
            _align(imp, acc, acc_term, order, sizes),
            _align(imp, rhs, rhs_term, order, sizes),
        )
        acc_term = order
    if acc_term != out:
        perm = [acc_term.index(c) for c in out]
        shape = shape_of(acc)
        acc = imp.emit(
            graph.TransposeOp, [acc], [shape[p] for p in perm], perm=graph.i64_array(perm)
        )
    if dtype_of(acc) != dtype:
        acc = imp.emit(graph.CastOp, [acc], shape_of(acc), dtype)
    return [acc]
