"""Ops with optional `bias` / `residual` operands print text that parses back to the same op
(dialects/assembly.py, TypeIfPresent): print -> parse -> print is the identity for every
combination of present and absent optional operands. Regression: a residual without a bias
used to be read back as the bias type ("expected 1 operand types but had 0"), so
`ember opt -o` output and --ir-dump-dir dumps of bias-free MatMul + residual Add models
(LLaMA-style) could not be re-read."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from xdsl.parser import Parser

from ember.core.context import make_context
from ember.tools.opt_ir import print_ir

F = "f32"
CONV_PROPS = (
    "strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, "
    "group = 1 : i64"
)
QUANT_PROPS = (
    "input_zero_point = 0 : i64, output_zero_point = 7 : i64, output_min = 0 : i64, "
    "output_max = 255 : i64"
)
RESIDUAL_PARAMS = "residual_params = array<f64: {}>".format(
    ", ".join(f"{v:e}" for v in (1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 255.0))
)
X4, W4, Y4 = "1x4x5x5", "4x4x3x3", "1x4x5x5"


def _op_text(
    op: str,
    fixed: list[tuple[str, str]],
    bias: str | None,
    residual: str | None,
    tail: list[tuple[str, str]],
    props: str,
    result: str | None,
) -> tuple[str, list[tuple[str, str]]]:
    """One op line and the function arguments (name, type) it uses. Optional operands are keyword
    tagged (`bias %b`, `residual %r`); `tail` operands follow them (workspace, `-> %out`)."""
    names = [name for name, _ in fixed]
    types = [ty for _, ty in fixed]
    operands = ", ".join(f"%{name}" for name in names)
    if bias is not None:
        operands += " bias %b"
        types.append(bias)
    if residual is not None:
        operands += " residual %r"
        types.append(residual)
    for index, (name, ty) in enumerate(tail):
        is_output = result is None and index == len(tail) - 1
        operands += f" -> %{name}" if is_output else f", %{name}"
        types.append(ty)
    args = [*fixed, *[(n, t) for n, t in (("b", bias), ("r", residual)) if t], *tail]
    if result is None:  # destination-passing: the output is the last type, after `->`
        type_list = ", ".join(types[:-1]) + f" -> {types[-1]}"
        line = f"kernel.{op} {operands} {{{props}}} : {type_list}"
    else:
        line = f"%y = graph.{op} {operands} {{{props}}} : {', '.join(types)} -> {result}"
    return line, args


def _graph_conv(bias: bool, residual: bool) -> tuple[str, list[tuple[str, str]]]:
    fixed = [("x", f"tensor<{X4}x{F}>"), ("w", f"tensor<{W4}x{F}>")]
    return _op_text(
        "conv",
        fixed,
        f"tensor<4x{F}>" if bias else None,
        f"tensor<{Y4}x{F}>" if residual else None,
        [],
        CONV_PROPS,
        f"tensor<{Y4}x{F}>",
    )


def _graph_matmul(bias: bool, residual: bool) -> tuple[str, list[tuple[str, str]]]:
    fixed = [("a", f"tensor<2x3x{F}>"), ("bm", f"tensor<3x4x{F}>")]
    return _op_text(
        "matmul",
        fixed,
        f"tensor<4x{F}>" if bias else None,
        f"tensor<2x4x{F}>" if residual else None,
        [],
        'activation = "relu"',
        f"tensor<2x4x{F}>",
    )


def _kernel_conv2d(bias: bool, residual: bool) -> tuple[str, list[tuple[str, str]]]:
    fixed = [("x", f"memref<{X4}x{F}>"), ("w", f"memref<{W4}x{F}>")]
    return _op_text(
        "conv2d",
        fixed,
        f"memref<4x{F}>" if bias else None,
        f"memref<{Y4}x{F}>" if residual else None,
        [("out", f"memref<{Y4}x{F}>")],
        f'kernel_shape = array<i64: 3, 3>, {CONV_PROPS}, weight_layout = "oihw"',
        None,
    )


def _kernel_matmul(bias: bool, residual: bool) -> tuple[str, list[tuple[str, str]]]:
    fixed = [("a", f"memref<2x3x{F}>"), ("bm", f"memref<3x4x{F}>")]
    return _op_text(
        "matmul",
        fixed,
        f"memref<4x{F}>" if bias else None,
        f"memref<2x4x{F}>" if residual else None,
        [("out", f"memref<2x4x{F}>")],
        'weight_layout = "plain"',
        None,
    )


def _qconv_fixed(kind: str) -> list[tuple[str, str]]:
    return [
        ("x", f"{kind}<{X4}xui8>"),
        ("w", f"{kind}<{W4}xi8>"),
        ("off", f"{kind}<4xi32>"),
        ("mul", f"{kind}<4x{F}>"),
        ("bq", f"{kind}<4x{F}>"),
    ]


def _graph_qconv(residual: bool) -> tuple[str, list[tuple[str, str]]]:
    props = f"{CONV_PROPS}, {QUANT_PROPS}" + (f", {RESIDUAL_PARAMS}" if residual else "")
    residual_type = f"tensor<{Y4}xui8>" if residual else None
    return _op_text(
        "qconv", _qconv_fixed("tensor"), None, residual_type, [], props, f"tensor<{Y4}xui8>"
    )


def _kernel_qconv2d(residual: bool) -> tuple[str, list[tuple[str, str]]]:
    props = (
        f"kernel_shape = array<i64: 3, 3>, {CONV_PROPS}, {QUANT_PROPS}, input_signed = 0 : i64, "
        'weight_layout = "oihw"' + (f", {RESIDUAL_PARAMS}" if residual else "")
    )
    residual_type = f"memref<{Y4}xui8>" if residual else None
    tail = [("ws", "memref<64xi32>"), ("out", f"memref<{Y4}xui8>")]
    return _op_text("qconv2d", _qconv_fixed("memref"), None, residual_type, tail, props, None)


# The `bias` / `residual` of an op written `bias %b residual %r`: the required bias of the
# quantized convolutions is positional, so only the residual varies there.
BOTH = list(itertools.product([False, True], repeat=2))
CASES = [
    *[(f"graph.conv-bias{b:d}-res{r:d}", _graph_conv, (b, r)) for b, r in BOTH],
    *[(f"graph.matmul-bias{b:d}-res{r:d}", _graph_matmul, (b, r)) for b, r in BOTH],
    *[(f"kernel.conv2d-bias{b:d}-res{r:d}", _kernel_conv2d, (b, r)) for b, r in BOTH],
    *[(f"kernel.matmul-bias{b:d}-res{r:d}", _kernel_matmul, (b, r)) for b, r in BOTH],
    *[(f"graph.qconv-res{r:d}", _graph_qconv, (r,)) for r in (False, True)],
    *[(f"kernel.qconv2d-res{r:d}", _kernel_qconv2d, (r,)) for r in (False, True)],
]


def _module(line: str, args: list[tuple[str, str]]) -> str:
    params = ", ".join(f"%{name}: {ty}" for name, ty in args)
    if line.startswith("%y"):
        result_type = line.rsplit("-> ", 1)[1]
        result, ret = f" -> {result_type}", f"func.return %y : {result_type}"
    else:
        result, ret = "", "func.return"
    return (
        f"builtin.module {{\n  func.func @f({params}){result} {{\n    {line}\n    {ret}\n  }}\n}}"
    )


@pytest.mark.parametrize(("case", "build", "present"), CASES, ids=[c[0] for c in CASES])
def test_print_parse_print_is_identity(
    case: str, build: Callable[..., tuple[str, list[tuple[str, str]]]], present: tuple[bool, ...]
) -> None:
    line, args = build(*present)
    module = Parser(make_context(), _module(line, args)).parse_module()
    module.verify()
    printed = print_ir(module, elide=False)
    assert line in printed, f"{case}: printed form changed:\n{printed}"
    reparsed = Parser(make_context(), printed).parse_module()
    reparsed.verify()
    assert print_ir(reparsed, elide=False) == printed
    op_name = line.split()[2] if line.startswith("%y = ") else line.split()[0]
    op = next(o for o in reparsed.walk() if o.name == op_name)
    optional = ("bias", "residual") if len(present) == 2 else ("residual",)
    for name, is_present in zip(optional, present, strict=True):
        assert (getattr(op, name) is not None) == is_present, (case, name)
