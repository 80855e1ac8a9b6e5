"""Vectorizable f32 approximations of exp, log, erf and tanh, written directly in LLVM IR.

LLVM only knows how to scalarize `llvm.exp.v8f32` into eight libm calls, which would dominate
GELU, softmax and sigmoid. These routines are built from plain arithmetic, so the same body
works on a scalar `float` or on any `<N x float>` and LLVM keeps it in SIMD registers.

Each routine is emitted once per type as an `internal alwaysinline` function; callers just
`call` it. No fast-math flags are set inside: `reassoc` would let LLVM undo the Cody-Waite
range reduction, and NaN/inf handling relies on exact IEEE comparisons.

Accuracy (measured in tests/codegen/test_mathlib.py against float64 references):
exp and log max relative error 8e-8 (log measured away from x=1), erf and tanh
max absolute error 3.3e-7 and 2.6e-7.
"""

from __future__ import annotations

from collections.abc import Callable

import llvmlite.ir as ir

F32 = ir.FloatType()
I32 = ir.IntType(32)


def mangle(ty: ir.Type) -> str:
    """LLVM's overloaded-intrinsic suffix for a type: f32, v8f32, i64, p0, bf16."""
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{mangle(ty.element)}"
    if isinstance(ty, ir.IntType):
        return f"i{ty.width}"
    if isinstance(ty, ir.PointerType):
        return "p0"
    intrinsic_name = getattr(ty, "intrinsic_name", None)
    if intrinsic_name is None:
        raise NotImplementedError(f"codegen: cannot mangle LLVM type {ty}")
    return str(intrinsic_name)


def intrinsic(module: ir.Module, base: str, overloads: list[ir.Type], fnty: ir.FunctionType):
    """Declare (once) the intrinsic `base.<mangled overload types>`."""
    name = ".".join([base, *(mangle(t) for t in overloads)])
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, fnty, name)


class _Ops:
    """Type-generic arithmetic helpers: constants splat automatically to vector types."""

    def __init__(self, builder: ir.IRBuilder, ty: ir.Type):
        self.b = builder
        self.ty = ty
        self.count = ty.count if isinstance(ty, ir.VectorType) else None
        self.ity = ir.VectorType(I32, self.count) if self.count else I32

    def f(self, value: float) -> ir.Constant:
        if self.count:
            return ir.Constant(self.ty, [ir.Constant(F32, value)] * self.count)
        return ir.Constant(F32, value)

    def i(self, value: int) -> ir.Constant:
        if self.count:
            return ir.Constant(self.ity, [ir.Constant(I32, value)] * self.count)
        return ir.Constant(I32, value)

    def _call(self, base: str, *args: ir.Value) -> ir.Value:
        fnty = ir.FunctionType(self.ty, [self.ty] * len(args))
        return self.b.call(intrinsic(self.b.module, base, [self.ty], fnty), list(args))

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        # fmuladd: fused where the target has FMA, a mul+add elsewhere (never a libcall).
        return self._call("llvm.fmuladd", a, b, c)

    def minnum(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self._call("llvm.minnum", a, b)

    def maxnum(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self._call("llvm.maxnum", a, b)

    def rint(self, a: ir.Value) -> ir.Value:
        return self._call("llvm.rint", a)

    def fabs(self, a: ir.Value) -> ir.Value:
        return self._call("llvm.fabs", a)

    def horner(self, x: ir.Value, coefficients: list[float]) -> ir.Value:
        """c0*x^(n-1) + ... + c(n-1), highest degree first."""
        acc = self.f(coefficients[0])
        for c in coefficients[1:]:
            acc = self.fma(acc, x, self.f(c))
        return acc

    def nan_passthrough(self, x: ir.Value, result: ir.Value) -> ir.Value:
        return self.b.select(self.b.fcmp_unordered("uno", x, x), x, result)


_LOG2E = 1.44269504088896341
_LN2_HI = 0.693359375  # few mantissa bits: n * _LN2_HI is exact for |n| <= 2^14
_LN2_LO = -2.12194440e-4
_EXP_HI = 88.72283935546875  # above: overflow to +inf
_EXP_LO = -104.0  # exp(-104) < half the smallest denormal: rounds to +0
_EXP_POLY = [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1]
_EXP_POLY += [5.0000001201e-1]


def _pow2i(o: _Ops, n: ir.Value) -> ir.Value:
    """2**n for integer n in [-126, 127], built in the exponent field."""
    b = o.b
    return b.bitcast(b.shl(b.add(n, o.i(127)), o.i(23)), o.ty)


def _exp(o: _Ops, x: ir.Value) -> ir.Value:
    b = o.b
    xc = o.minnum(o.maxnum(x, o.f(_EXP_LO)), o.f(_EXP_HI))
    n = o.rint(b.fmul(xc, o.f(_LOG2E)))
    r = o.fma(b.fneg(n), o.f(_LN2_HI), xc)
    r = o.fma(b.fneg(n), o.f(_LN2_LO), r)
    p = o.horner(r, _EXP_POLY)
    y = b.fadd(o.fma(p, b.fmul(r, r), r), o.f(1.0))
    # Scale in two halves so that results near FLT_MAX and in the denormal range stay exact.
    ni = b.fptosi(n, o.ity)
    n1 = b.ashr(ni, o.i(1))
    n2 = b.sub(ni, n1)
    y = b.fmul(b.fmul(y, _pow2i(o, n1)), _pow2i(o, n2))
    y = b.select(b.fcmp_ordered(">", x, o.f(_EXP_HI)), o.f(float("inf")), y)
    return o.nan_passthrough(x, y)


_FLT_MIN = 1.17549435e-38
_SQRTHF = 0.707106781186547524
_LOG_POLY = [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1]
_LOG_POLY += [1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1]
_LOG_POLY += [3.3333331174e-1]


def _log(o: _Ops, x: ir.Value) -> ir.Value:
    b = o.b
    denormal = b.fcmp_ordered("<", x, o.f(_FLT_MIN))
    xs = b.select(denormal, b.fmul(x, o.f(8388608.0)), x)  # * 2^23 brings denormals to normal
    bits = b.bitcast(xs, o.ity)
    exponent = b.sub(b.lshr(bits, o.i(23)), o.i(126))
    # Mantissa in [0.5, 1): keep the fraction bits, force the exponent of 0.5.
    m = b.bitcast(b.or_(b.and_(bits, o.i(0x007FFFFF)), o.i(0x3F000000)), o.ty)
    e = b.fsub(b.sitofp(exponent, o.ty), b.select(denormal, o.f(23.0), o.f(0.0)))
    below = b.fcmp_ordered("<", m, o.f(_SQRTHF))
    e = b.fsub(e, b.select(below, o.f(1.0), o.f(0.0)))
    m = b.fadd(b.fsub(m, o.f(1.0)), b.select(below, m, o.f(0.0)))
    z = b.fmul(m, m)
    y = b.fmul(b.fmul(o.horner(m, _LOG_POLY), m), z)
    y = o.fma(e, o.f(_LN2_LO), y)
    y = o.fma(z, o.f(-0.5), y)
    y = o.fma(e, o.f(_LN2_HI), b.fadd(m, y))
    y = b.select(b.fcmp_ordered("==", x, o.f(float("inf"))), o.f(float("inf")), y)
    y = b.select(b.fcmp_ordered("==", x, o.f(0.0)), o.f(float("-inf")), y)
    y = b.select(b.fcmp_ordered("<", x, o.f(0.0)), o.f(float("nan")), y)
    return o.nan_passthrough(x, y)


# Rational minimax approximations (as in Eigen's generic_fast_erf_float / ptanh_float).
_ERF_P = [-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06]
_ERF_P += [-5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03]
_ERF_P += [-1.60960333262415e-02]
_ERF_Q = [-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03]
_ERF_Q += [-7.37332916720468e-03, -1.42647390514189e-02]


def _erf(o: _Ops, x: ir.Value) -> ir.Value:
    b = o.b
    xc = o.minnum(o.maxnum(x, o.f(-4.0)), o.f(4.0))  # erf(4) rounds to 1.0f
    x2 = b.fmul(xc, xc)
    p = b.fmul(xc, o.horner(x2, _ERF_P))
    q = o.horner(x2, _ERF_Q)
    return o.nan_passthrough(x, b.fdiv(p, q))


_TANH_CLAMP = 7.99881172180175781
_TANH_P = [-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11]
_TANH_P += [5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04]
_TANH_P += [4.89352455891786e-03]
_TANH_Q = [1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03]
_TANH_Q += [4.89352518554385e-03]


def _tanh(o: _Ops, x: ir.Value) -> ir.Value:
    b = o.b
    xc = o.minnum(o.maxnum(x, o.f(-_TANH_CLAMP)), o.f(_TANH_CLAMP))
    x2 = b.fmul(xc, xc)
    p = b.fmul(xc, o.horner(x2, _TANH_P))
    q = o.horner(x2, _TANH_Q)
    # tanh(x) == x to float precision there, and it keeps the sign of -0.0.
    tiny = b.fcmp_ordered("<", o.fabs(x), o.f(0.0004))
    y = b.select(tiny, x, b.fdiv(p, q))
    return o.nan_passthrough(x, y)


APPROXIMATIONS: dict[str, Callable[[_Ops, ir.Value], ir.Value]] = {
    "exp": _exp,
    "log": _log,
    "erf": _erf,
    "tanh": _tanh,
}


def approximation(module: ir.Module, name: str, ty: ir.Type) -> ir.Function:
    """The internal function `__ember_<name>_<type>` computing `name` on f32 or <N x f32>."""
    symbol = f"__ember_{name}_{mangle(ty)}"
    existing = module.globals.get(symbol)
    if existing is not None:
        return existing
    fn = ir.Function(module, ir.FunctionType(ty, [ty]), symbol)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    builder.ret(APPROXIMATIONS[name](_Ops(builder, ty), fn.args[0]))
    return fn
