"""Each graph pass on hand-written IR: FileCheck on the printed IR after the pass, and the
function computes the same values before and after (numpy interpreter, rtol 1e-5, atol 1e-6).

Most FileCheck tests are files, tests/transforms/*.mlir (run by their `// RUN:` lines, see
docs/testing.md); `test_pass_files_keep_values` evaluates those files before and after their
pipeline. The tests here need weights of particular values (exact reciprocals, GELU's
constants) or look at the weight store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.dialects.func import FuncOp
from xdsl.parser import Parser
from xdsl.passes import ModulePass

from ember.dialects.numpy_eval import evaluate_function, numpy_dtype
from ember.dialects.weights import WeightStore, make_context
from ember.passes.pipeline import build_pipeline
from ember.passes.transforms.canonicalize import Canonicalize
from ember.passes.transforms.dce import DeadCodeElimination
from ember.passes.transforms.fold_constants import FoldConstants
from ember.passes.transforms.fuse_epilogue import FuseConvActivation
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.lit import filled_weights, pipelines
from ember.tools.opt_ir import filled_weight, referenced_weights, seeded_weights

RTOL, ATOL = 1e-5, 1e-6
PASS_FILES = sorted(Path(__file__).parent.glob("*.mlir"))
# Files whose values the numpy interpreter cannot compare before and after, and why.
NOT_EVALUATED = {
    "quantize-ops.mlir": "graph.qconv has no numpy semantics (its integer requantization may "
    "differ from the float QDQ ops by one step by design); its numerics: test_quantize_ops.py "
    "and tests/kernels/test_q*.py against onnxruntime",
}


def rand(*shape: int, seed: int = 0, low: float | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if low is not None:
        return rng.uniform(low, low + 1.0, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def apply(
    ir: str, weights: dict[str, np.ndarray], *passes: ModulePass, dce: bool = True
) -> tuple[str, WeightStore]:
    """Run `passes` (then dce) and check the function still computes the same outputs."""
    store = WeightStore(weights)
    ctx = make_context(store)
    module = Parser(ctx, ir).parse_module()
    module.verify()
    fn = module.body.block.first_op
    inputs = [
        rand(*arg.type.get_shape(), seed=i).astype(numpy_dtype(arg.type.get_element_type()))  # type: ignore[attr-defined]
        for i, arg in enumerate(fn.args)  # type: ignore[attr-defined]
    ]
    before = evaluate_function(fn, store, inputs)  # type: ignore[arg-type]
    for p in [*passes, *([DeadCodeElimination()] if dce else [])]:
        p.apply(ctx, module)
    module.verify()
    after = evaluate_function(module.body.block.first_op, store, inputs)  # type: ignore[arg-type]
    for b, a in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    return str(module), store


def func(args: str, body: str, results: str) -> str:
    return f"builtin.module {{\n  func.func @main({args}) -> ({results}) {{\n{body}\n  }}\n}}"


# ---------------------------------------------------------------------------------------------
# the .mlir files' values


def _evaluate(module: ModuleOp, store: WeightStore) -> dict[str, list[np.ndarray]]:
    """Each graph function's outputs on seeded inputs (functions on buffers are skipped)."""
    outputs = {}
    for fn in module.body.block.ops:
        if isinstance(fn, FuncOp) and all(isinstance(a.type, TensorType) for a in fn.args):
            inputs = [
                rand(*a.type.get_shape(), seed=i).astype(numpy_dtype(a.type.get_element_type()))
                for i, a in enumerate(fn.args)
            ]
            outputs[fn.sym_name.data] = evaluate_function(fn, store, inputs)
    return outputs


@pytest.mark.parametrize("path", PASS_FILES, ids=lambda p: p.name)
def test_pass_files_keep_values(path: Path) -> None:
    """The pipeline of a .mlir test file leaves each of its functions computing the same values
    (with the weights `--random-weights` and its `--weight NAME=VALUE` give it), and a pipeline ending in dce leaves exactly
    the weights the IR still names."""
    if path.name in NOT_EVALUATED:
        pytest.skip(NOT_EVALUATED[path.name])
    text = path.read_text()
    (spec,) = pipelines(text)
    ctx = make_context()
    module = Parser(ctx, text).parse_module()
    weights = seeded_weights(module)
    weights.update({name: filled_weight(module, name, v) for name, v in filled_weights(text)})
    store = ctx.weights = WeightStore(weights)
    before = _evaluate(module, store)
    assert before, "no function on tensors to evaluate"
    build_pipeline(spec).apply(ctx, module)
    module.verify()
    after = _evaluate(module, store)
    assert after.keys() == before.keys()
    for name, outputs in before.items():
        for b, a in zip(outputs, after[name], strict=True):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=f"@{name}")
    if spec.split(",")[-1] == "dce":
        assert sorted(store) == sorted(referenced_weights(module))


# ---------------------------------------------------------------------------------------------
# canonicalize


def test_canonicalize_constant_arithmetic() -> None:
    ir = func(
        "%x: tensor<2x4xf32>",
        """
    %c = graph.constant "c" : tensor<4xf32>
    %d = graph.constant "d" : tensor<4xf32>
    %two = graph.constant "two" : tensor<1xf32>
    %a = graph.sub %x, %c : tensor<2x4xf32>, tensor<4xf32> -> tensor<2x4xf32>
    %b = graph.div %a, %d : tensor<2x4xf32>, tensor<4xf32> -> tensor<2x4xf32>
    %e = graph.mul %c, %b : tensor<4xf32>, tensor<2x4xf32> -> tensor<2x4xf32>
    %f = graph.pow %e, %two : tensor<2x4xf32>, tensor<1xf32> -> tensor<2x4xf32>
    func.return %f : tensor<2x4xf32>""",
        "tensor<2x4xf32>",
    )
    weights = {
        "c": rand(4, seed=1),
        "d": rand(4, seed=2, low=1.0),
        "two": np.array([2.0], np.float32),
    }
    text, _ = apply(ir, weights, Canonicalize(), FoldConstants())
    # (x - c) / d * c -> x * (c/d) + (-c/d*c): one mul and one add, then pow -> mul.
    assert_filecheck(
        text,
        """
        CHECK:     %[[M:.*]] = graph.mul %x, %{{.*}} : tensor<2x4xf32>, tensor<4xf32>
        CHECK:     %[[A:.*]] = graph.add %[[M]], %{{.*}} : tensor<2x4xf32>, tensor<4xf32>
        CHECK:     graph.mul %[[A]], %[[A]]
        CHECK-NOT: graph.sub
        CHECK-NOT: graph.div
        CHECK-NOT: graph.pow
        """,
    )


def test_canonicalize_keeps_16_bit_float_arithmetic_as_written() -> None:
    # A reciprocal or a reassociated constant rounds once more: in f16 that is ~5e-4 relative,
    # the size of the tolerance a user compares with. Only the exact reciprocal (of 4) applies.
    ir = func(
        "%x: tensor<2x4xf16>",
        """
    %three = graph.constant "three" : tensor<1xf16>
    %four = graph.constant "four" : tensor<1xf16>
    %c = graph.constant "c" : tensor<4xf16>
    %a = graph.div %x, %three : tensor<2x4xf16>, tensor<1xf16> -> tensor<2x4xf16>
    %b = graph.div %a, %four : tensor<2x4xf16>, tensor<1xf16> -> tensor<2x4xf16>
    %m = graph.mul %b, %c : tensor<2x4xf16>, tensor<4xf16> -> tensor<2x4xf16>
    %n = graph.mul %m, %c : tensor<2x4xf16>, tensor<4xf16> -> tensor<2x4xf16>
    func.return %n : tensor<2x4xf16>""",
        "tensor<2x4xf16>",
    )
    weights = {
        "three": np.array([3.0], np.float16),
        "four": np.array([4.0], np.float16),
        "c": rand(4, seed=1).astype(np.float16),
    }
    text, _ = apply(ir, weights, Canonicalize())
    assert_filecheck(
        text,
        """
        CHECK:     %[[A:.*]] = graph.div %x, %{{.*}} : tensor<2x4xf16>, tensor<1xf16>
        CHECK:     %[[B:.*]] = graph.mul %[[A]], %{{.*}} : tensor<2x4xf16>, tensor<1xf16>
        CHECK:     %[[M:.*]] = graph.mul %[[B]], %c
        CHECK:     graph.mul %[[M]], %c
        """,
    )


def test_canonicalize_keeps_division_that_feeds_a_rounding_as_written() -> None:
    # Floor(x / 0.1): the reciprocal 10.000000149 moves a value on a bucket boundary into the next
    # bucket. A division whose result reaches Floor (through a Relu) stays a division, an exact
    # reciprocal (of 0.5) still applies, and a division that reaches no step op is rewritten.
    ir = func(
        "%x: tensor<2x4xf32>",
        """
    %tenth = graph.constant "tenth" : tensor<1xf32>
    %half = graph.constant "half" : tensor<1xf32>
    %a = graph.div %x, %tenth : tensor<2x4xf32>, tensor<1xf32> -> tensor<2x4xf32>
    %r = graph.relu %a : tensor<2x4xf32> -> tensor<2x4xf32>
    %f = graph.floor %r : tensor<2x4xf32> -> tensor<2x4xf32>
    %b = graph.div %x, %half : tensor<2x4xf32>, tensor<1xf32> -> tensor<2x4xf32>
    %g = graph.floor %b : tensor<2x4xf32> -> tensor<2x4xf32>
    %c = graph.div %x, %tenth : tensor<2x4xf32>, tensor<1xf32> -> tensor<2x4xf32>
    func.return %f, %g, %c : tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>""",
        "tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>",
    )
    weights = {"tenth": np.array([0.1], np.float32), "half": np.array([0.5], np.float32)}
    text, _ = apply(ir, weights, Canonicalize())
    assert_filecheck(
        text,
        """
        CHECK:     %[[A:.*]] = graph.div %x, %tenth
        CHECK:     graph.floor
        CHECK:     %[[B:.*]] = graph.mul %x, %{{.*}} : tensor<2x4xf32>, tensor<1xf32>
        CHECK:     graph.floor %[[B]]
        CHECK:     graph.mul %x, %{{.*}} : tensor<2x4xf32>, tensor<1xf32>
        CHECK-NOT: graph.div
        """,
    )


# ---------------------------------------------------------------------------------------------
# dce


def test_dce_removes_unused_ops_and_their_weights() -> None:
    ir = func(
        "%x: tensor<4xf32>",
        """
    %c = graph.constant "c" : tensor<4xf32>
    %u = graph.constant "unused" : tensor<4xf32>
    %a = graph.add %x, %u : tensor<4xf32>, tensor<4xf32> -> tensor<4xf32>
    %r = graph.relu %a : tensor<4xf32> -> tensor<4xf32>
    %y = graph.mul %x, %c : tensor<4xf32>, tensor<4xf32> -> tensor<4xf32>
    func.return %y : tensor<4xf32>""",
        "tensor<4xf32>",
    )
    text, store = apply(ir, {"c": rand(4), "unused": rand(4), "orphan": rand(2)})
    assert_filecheck(
        text,
        """
        CHECK:      %c = graph.constant "c"
        CHECK-NEXT: %y = graph.mul %x, %c
        CHECK-NEXT: func.return %y
        """,
    )
    assert list(store) == ["c"]


# ---------------------------------------------------------------------------------------------
# epilogue fusion


@pytest.mark.parametrize("form", ["div", "mul", "half_first"])
def test_fuse_erf_gelu_after_matmul(form: str) -> None:
    scaled = (
        "%s = graph.div %m, %sqrt2 : tensor<2x5xf32>, tensor<1xf32> -> tensor<2x5xf32>"
        if form == "div"
        else "%s = graph.mul %m, %isqrt2 : tensor<2x5xf32>, tensor<1xf32> -> tensor<2x5xf32>"
    )
    if form == "half_first":
        product = """%h = graph.mul %m, %half : tensor<2x5xf32>, tensor<1xf32> -> tensor<2x5xf32>
    %y = graph.mul %h, %p : tensor<2x5xf32>, tensor<2x5xf32> -> tensor<2x5xf32>"""
    else:
        product = """%h = graph.mul %m, %p : tensor<2x5xf32>, tensor<2x5xf32> -> tensor<2x5xf32>
    %y = graph.mul %h, %half : tensor<2x5xf32>, tensor<1xf32> -> tensor<2x5xf32>"""
    ir = func(
        "%a: tensor<2x6xf32>",
        f"""
    %bm = graph.constant "bm" : tensor<6x5xf32>
    %sqrt2 = graph.constant "sqrt2" : tensor<1xf32>
    %isqrt2 = graph.constant "isqrt2" : tensor<1xf32>
    %one = graph.constant "one" : tensor<1xf32>
    %half = graph.constant "half" : tensor<1xf32>
    %m = graph.matmul %a, %bm : tensor<2x6xf32>, tensor<6x5xf32> -> tensor<2x5xf32>
    {scaled}
    %e = graph.erf %s : tensor<2x5xf32> -> tensor<2x5xf32>
    %p = graph.add %e, %one : tensor<2x5xf32>, tensor<1xf32> -> tensor<2x5xf32>
    {product}
    func.return %y : tensor<2x5xf32>""",
        "tensor<2x5xf32>",
    )
    weights = {
        "bm": rand(6, 5),
        "sqrt2": np.array([np.sqrt(2.0)], np.float32),
        "isqrt2": np.array([1 / np.sqrt(2.0)], np.float32),
        "one": np.array([1.0], np.float32),
        "half": np.array([0.5], np.float32),
    }
    text, _ = apply(ir, weights, FuseConvActivation())
    assert_filecheck(
        text,
        """
        CHECK:     %y = graph.matmul %a, %bm {activation = "gelu"}
        CHECK-NOT: graph.erf
        CHECK-NOT: graph.mul
        """,
    )


def test_passes_reject_a_plain_context() -> None:
    from xdsl.context import Context

    with pytest.raises(TypeError, match="EmberContext"):
        FoldConstants().apply(Context(), ModuleOp([]))
