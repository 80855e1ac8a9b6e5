"""Accuracy of the math lowerings (vector polynomial approximations and libm/intrinsic calls).

Each function runs over a wide range of f32 inputs plus special values on one vector kernel
(vector body + scalar tail, both through the emitter) and is compared with a float64
reference. Tolerances: exp/log max relative error 2.5e-7 (about 2 ulp), erf/tanh max
absolute error 1e-6, everything else 2 ulp-ish relative (rtol 3e-7) or libm-exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from xdsl.dialects import math as xmath
from xdsl.dialects.builtin import MemRefType, ModuleOp, f32, f64
from xdsl.ir import SSAValue

from ember.core.target import host_target
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.tests.codegen.util import run

VW = host_target().vector_width
SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-38, 3.4e38, -3.4e38]


def _unary_kernel(op: type, n: int, element=f32, width: int = VW) -> ModuleOp:
    """out[i] = op(x[i]): vectors of `width` lanes, then a scalar tail."""
    t = MemRefType(element, [n])
    fn, b = kernel_function("f", [t, t])
    main = n // width * width

    def vbody(b: LoopBuilder, i: SSAValue) -> None:
        v = b.vload(fn.args[0], [i], width)
        b.vstore(b.insert(op(v)).results[0], fn.args[1], [i])

    def sbody(b: LoopBuilder, i: SSAValue) -> None:
        b.store(b.insert(op(b.load(fn.args[0], [i]))).results[0], fn.args[1], [i])

    b.for_range(0, main, width, vbody)
    b.for_range(main, n, 1, sbody)
    b.ret()
    return ModuleOp([fn])


def _evaluate(op: type, x: np.ndarray, width: int = VW) -> np.ndarray:
    out = np.empty_like(x)
    element = f32 if x.dtype == np.float32 else f64
    run(_unary_kernel(op, x.size, element, width), "f", [x, out])
    return out


def _inputs(lo: float, hi: float, n: int = 20011) -> np.ndarray:
    rng = np.random.default_rng(1)
    dense = np.linspace(lo, hi, n)
    return np.concatenate([dense, rng.uniform(lo, hi, n), SPECIALS]).astype(np.float32)


def _check_specials(x: np.ndarray, got: np.ndarray, ref: np.ndarray) -> None:
    special = ~np.isfinite(ref) | ~np.isfinite(x)
    np.testing.assert_array_equal(got[special], ref[special].astype(np.float32))


CASES = [
    # op, reference, input range, (relative tolerance, absolute tolerance)
    (xmath.ExpOp, np.exp, (-110.0, 90.0), (2.5e-7, 0.0)),
    (xmath.LogOp, np.log, (-1.0, 1e6), (2.5e-7, 0.0)),
    (xmath.ErfOp, np.vectorize(math.erf), (-6.0, 6.0), (0.0, 1e-6)),
    (xmath.TanhOp, np.tanh, (-12.0, 12.0), (0.0, 1e-6)),
]


@pytest.mark.parametrize(
    "op, reference, bounds, tolerance", CASES, ids=lambda c: getattr(c, "name", "")
)
def test_vector_approximation_accuracy(op, reference, bounds, tolerance) -> None:
    x = _inputs(*bounds)
    if op is xmath.LogOp:
        # log needs coverage of tiny and denormal inputs too
        x = np.concatenate([x, np.geomspace(1e-45, 1e38, 4001).astype(np.float32)])
    got = _evaluate(op, x)
    with np.errstate(all="ignore"):
        ref = reference(x.astype(np.float64))
    _check_specials(x, got, ref)
    finite = np.isfinite(ref) & np.isfinite(x) & (np.abs(ref) < 3.4e38)
    rtol, atol = tolerance
    err = np.abs(got[finite].astype(np.float64) - ref[finite])
    if rtol:
        normal = np.abs(ref[finite]) > 1.2e-38  # denormal results have fewer significant bits
        rel = err[normal] / np.abs(ref[finite][normal])
        assert rel.max() <= rtol, f"{op.name}: max relative error {rel.max():.3g}"
    if atol:
        assert err.max() <= atol, f"{op.name}: max absolute error {err.max():.3g}"


def test_exp_edges() -> None:
    x = np.array([0.0, -0.0, 88.72, 88.73, -87.3, -103.0, -104.0, -1e30, 1e30], np.float32)
    got = _evaluate(xmath.ExpOp, x, width=VW)
    with np.errstate(all="ignore"):
        ref = np.exp(x.astype(np.float64)).astype(np.float32)
    np.testing.assert_allclose(got, ref, rtol=2.5e-7, atol=1.5e-45)
    assert got[0] == 1.0 and got[1] == 1.0 and np.isinf(got[3]) and got[-2] == 0.0


def test_tanh_and_erf_keep_sign_of_zero_and_saturate() -> None:
    x = np.array([-0.0, 0.0, 1e-30, -50.0, 50.0, np.inf, -np.inf, np.nan], np.float32)
    for op in (xmath.TanhOp, xmath.ErfOp):
        got = _evaluate(op, x)
        assert np.signbit(got[0]) and not np.signbit(got[1])
        np.testing.assert_array_equal(got[3:7], [-1.0, 1.0, 1.0, -1.0])
        assert np.isnan(got[7])


OTHER = [
    (xmath.SqrtOp, np.sqrt, (0.0, 1e6)),
    (xmath.RsqrtOp, lambda x: 1 / np.sqrt(x), (1e-3, 1e6)),
    (xmath.AbsFOp, np.abs, (-10.0, 10.0)),
    (xmath.FloorOp, np.floor, (-10.0, 10.0)),
    (xmath.CeilOp, np.ceil, (-10.0, 10.0)),
    (xmath.RoundOp, lambda x: np.trunc(x + np.copysign(0.5, x)), (-10.0, 10.0)),
    (xmath.SinOp, np.sin, (-10.0, 10.0)),
    (xmath.CosOp, np.cos, (-10.0, 10.0)),
    (xmath.Log1pOp, np.log1p, (-0.9, 10.0)),
    (xmath.ExpM1Op, np.expm1, (-10.0, 10.0)),
]


@pytest.mark.parametrize("op, reference, bounds", OTHER, ids=lambda c: getattr(c, "name", ""))
def test_other_math_ops(op, reference, bounds) -> None:
    x = _inputs(*bounds, n=1001)
    got = _evaluate(op, x)
    with np.errstate(all="ignore"):
        ref = reference(x.astype(np.float64))
    finite = np.isfinite(ref) & np.isfinite(x)
    np.testing.assert_allclose(got[finite], ref[finite], rtol=3e-7, atol=1e-7)


def test_f64_math() -> None:
    x = np.linspace(-5, 5, 1001)
    for op, ref in (
        (xmath.ExpOp, np.exp),
        (xmath.ErfOp, np.vectorize(math.erf)),
        (xmath.TanhOp, np.tanh),
    ):
        np.testing.assert_allclose(_evaluate(op, x, width=4), ref(x), rtol=1e-14, atol=1e-15)


def test_powf_and_fma() -> None:
    from xdsl.dialects.builtin import MemRefType

    t = MemRefType(f32, [3 * VW])
    fn, b = kernel_function("pw", [t, t, t])

    def body(b: LoopBuilder, i: SSAValue) -> None:
        x = b.vload(fn.args[0], [i], VW)
        y = b.vload(fn.args[1], [i], VW)
        p = b.insert(xmath.PowFOp(x, y)).results[0]
        b.vstore(b.insert(xmath.FmaOp(p, y, x)).results[0], fn.args[2], [i])

    b.for_range(0, 3 * VW, VW, body)
    b.ret()
    rng = np.random.default_rng(2)
    x = rng.uniform(0.1, 4, 3 * VW).astype(np.float32)
    y = rng.uniform(-2, 2, 3 * VW).astype(np.float32)
    out = np.empty_like(x)
    run(ModuleOp([fn]), "pw", [x, y, out])
    ref = np.power(x.astype(np.float64), y) * y + x
    np.testing.assert_allclose(out, ref, rtol=1e-6)
