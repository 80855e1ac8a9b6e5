"""Each graph pass on hand-written IR: FileCheck on the printed IR after the pass, and the
function computes the same values before and after (numpy interpreter, rtol 1e-5, atol 1e-6)."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser
from xdsl.passes import ModulePass

from ember.dialects.numpy_eval import evaluate_function, numpy_dtype
from ember.dialects.weights import WeightStore, make_context
from ember.passes.transforms.canonicalize import Canonicalize
from ember.passes.transforms.dce import DeadCodeElimination
from ember.passes.transforms.fold_batchnorm import FoldBatchNorm
from ember.passes.transforms.fold_constants import FoldConstants
from ember.passes.transforms.fuse_epilogue import FuseBiasAdd, FuseConvActivation, FuseResidualAdd
from ember.tests.filecheck_util import assert_filecheck

RTOL, ATOL = 1e-5, 1e-6
CONV = "{strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64}"


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
# canonicalize


def test_canonicalize_removes_identity_and_merges_reshapes() -> None:
    ir = func(
        "%x: tensor<2x3x4xf32>",
        """
    %a = graph.identity %x : tensor<2x3x4xf32> -> tensor<2x3x4xf32>
    %b = graph.reshape %a : tensor<2x3x4xf32> -> tensor<6x4xf32>
    %c = graph.reshape %b : tensor<6x4xf32> -> tensor<24xf32>
    %d = graph.reshape %c : tensor<24xf32> -> tensor<24xf32>
    %e = graph.transpose %x {perm = array<i64: 1, 0, 2>} : tensor<2x3x4xf32> -> tensor<3x2x4xf32>
    %f = graph.transpose %e {perm = array<i64: 1, 0, 2>} : tensor<3x2x4xf32> -> tensor<2x3x4xf32>
    func.return %d, %f : tensor<24xf32>, tensor<2x3x4xf32>""",
        "tensor<24xf32>, tensor<2x3x4xf32>",
    )
    text, _ = apply(ir, {}, Canonicalize())
    assert_filecheck(
        text,
        """
        CHECK:      func.func @main(%x: tensor<2x3x4xf32>)
        CHECK-NEXT:   %[[R:.*]] = graph.reshape %x : tensor<2x3x4xf32> -> tensor<24xf32>
        CHECK-NEXT:   func.return %[[R]], %x
        CHECK-NOT:  graph.
        """,
    )


def test_canonicalize_gemm_to_matmul_folds_transpose_alpha_beta() -> None:
    ir = func(
        "%a: tensor<3x4xf32>",
        """
    %b = graph.constant "b" : tensor<5x4xf32>
    %c = graph.constant "c" : tensor<1x5xf32>
    %y = graph.gemm %a, %b, %c {alpha = 0.5 : f32, beta = 2.0 : f32, trans_a = 0 : i64, trans_b = 1 : i64} : tensor<3x4xf32>, tensor<5x4xf32>, tensor<1x5xf32> -> tensor<3x5xf32>
    func.return %y : tensor<3x5xf32>""",
        "tensor<3x5xf32>",
    )
    b, c = rand(5, 4, seed=1), rand(1, 5, seed=2)
    text, store = apply(ir, {"b": b, "c": c}, Canonicalize())
    assert_filecheck(
        text,
        """
        CHECK-DAG:  %[[B:.*]] = graph.constant "b.gemm" : tensor<4x5xf32>
        CHECK-DAG:  %[[C:.*]] = graph.constant "c.bias" : tensor<5xf32>
        CHECK:      graph.matmul %a, %[[B]] bias %[[C]] : tensor<3x4xf32>, tensor<4x5xf32>, tensor<5xf32> -> tensor<3x5xf32>
        CHECK-NOT:  graph.gemm
        """,
    )
    np.testing.assert_array_equal(store["b.gemm"], (b.T * np.float32(0.5)))
    np.testing.assert_array_equal(store["c.bias"], c.reshape(5) * np.float32(2.0))
    assert "b" not in store and "c" not in store  # dce dropped the originals


def test_canonicalize_batch_norm_without_conv_becomes_mul_add() -> None:
    ir = func(
        "%x: tensor<1x3x2x2xf32>",
        """
    %s = graph.constant "s" : tensor<3xf32>
    %b = graph.constant "b" : tensor<3xf32>
    %m = graph.constant "m" : tensor<3xf32>
    %v = graph.constant "v" : tensor<3xf32>
    %y = graph.batch_norm %x, %s, %b, %m, %v {epsilon = 1.0e-5 : f32} : tensor<1x3x2x2xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xf32>, tensor<3xf32> -> tensor<1x3x2x2xf32>
    func.return %y : tensor<1x3x2x2xf32>""",
        "tensor<1x3x2x2xf32>",
    )
    weights = {
        "s": rand(3, seed=1),
        "b": rand(3, seed=2),
        "m": rand(3, seed=3),
        "v": rand(3, seed=4, low=0.5),
    }
    text, store = apply(ir, weights, Canonicalize())
    assert_filecheck(
        text,
        """
        CHECK: %[[S:.*]] = graph.constant "s.scale" : tensor<3x1x1xf32>
        CHECK: %[[T:.*]] = graph.constant "s.shift" : tensor<3x1x1xf32>
        CHECK: %[[M:.*]] = graph.mul %x, %[[S]]
        CHECK: graph.add %[[M]], %[[T]]
        CHECK-NOT: graph.batch_norm
        """,
    )
    expected = weights["s"] / np.sqrt(weights["v"] + 1e-5)
    np.testing.assert_allclose(store["s.scale"].reshape(3), expected, rtol=1e-6)


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


# ---------------------------------------------------------------------------------------------
# fold-constants, dce


def test_fold_constants_evaluates_constant_subgraphs() -> None:
    ir = func(
        "%x: tensor<3x2xf32>",
        """
    %w = graph.constant "w" : tensor<2x3xf32>
    %k = graph.constant "k" : tensor<3x2xf32>
    %t = graph.transpose %w {perm = array<i64: 1, 0>} : tensor<2x3xf32> -> tensor<3x2xf32>
    %s = graph.add %t, %k : tensor<3x2xf32>, tensor<3x2xf32> -> tensor<3x2xf32>
    %q = graph.sqrt %k : tensor<3x2xf32> -> tensor<3x2xf32>
    %y = graph.mul %x, %s : tensor<3x2xf32>, tensor<3x2xf32> -> tensor<3x2xf32>
    %z = graph.add %y, %q : tensor<3x2xf32>, tensor<3x2xf32> -> tensor<3x2xf32>
    func.return %z : tensor<3x2xf32>""",
        "tensor<3x2xf32>",
    )
    w, k = rand(2, 3, seed=1), rand(3, 2, seed=2, low=0.1)
    text, store = apply(ir, {"w": w, "k": k}, FoldConstants())
    assert_filecheck(
        text,
        """
        CHECK-DAG: %[[S:.*]] = graph.constant "add.folded" : tensor<3x2xf32>
        CHECK-DAG: %[[Q:.*]] = graph.constant "sqrt.folded" : tensor<3x2xf32>
        CHECK:     %[[Y:.*]] = graph.mul %x, %[[S]]
        CHECK:     graph.add %[[Y]], %[[Q]]
        CHECK-NOT: graph.transpose
        """,
    )
    np.testing.assert_array_equal(store["add.folded"], w.T + k)
    assert sorted(store) == ["add.folded", "sqrt.folded"]


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


def test_dce_removes_unused_contractions_pools_and_reductions() -> None:
    """dce is xDSL's generic deadness: conv, matmul, pools, softmax, reduce are `Pure` too."""
    ir = func(
        "%x: tensor<1x2x4x4xf32>, %a: tensor<2x3xf32>",
        f"""
    %w = graph.constant "w" : tensor<2x2x3x3xf32>
    %b = graph.constant "b" : tensor<3x5xf32>
    %c = graph.conv %x, %w {CONV} : tensor<1x2x4x4xf32>, tensor<2x2x3x3xf32> -> tensor<1x2x4x4xf32>
    %m = graph.matmul %a, %b : tensor<2x3xf32>, tensor<3x5xf32> -> tensor<2x5xf32>
    %p = graph.max_pool %x {{kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>}} : tensor<1x2x4x4xf32> -> tensor<1x2x2x2xf32>
    %s = graph.softmax %a {{axis = 1 : i64}} : tensor<2x3xf32> -> tensor<2x3xf32>
    %r = graph.relu %a : tensor<2x3xf32> -> tensor<2x3xf32>
    func.return %r : tensor<2x3xf32>""",
        "tensor<2x3xf32>",
    )
    text, store = apply(ir, {"w": rand(2, 2, 3, 3), "b": rand(3, 5)})
    assert_filecheck(
        text,
        """
        CHECK:      func.func @main(
        CHECK-NEXT:   %r = graph.relu %a
        CHECK-NEXT:   func.return %r
        """,
    )
    assert not store


def test_dce_keeps_ops_that_write_buffers() -> None:
    """After bufferization: an unused weight view goes, a kernel op writing its output stays
    (no declared memory effects = unknown effects = live)."""
    ir = """builtin.module {
  func.func @main(%x: memref<4xf32>, %y: memref<4xf32>) {
    %w = kernel.weight "w" : memref<4xf32>
    %u = kernel.weight "unused" : memref<4xf32>
    %v = kernel.reshape %x : memref<4xf32> to memref<2x2xf32>
    kernel.copy %w -> %y : memref<4xf32> -> memref<4xf32>
    func.return
  }
}"""
    store = WeightStore({"w": rand(4), "unused": rand(4)})
    ctx = make_context(store)
    module = Parser(ctx, ir).parse_module()
    DeadCodeElimination().apply(ctx, module)
    module.verify()
    assert_filecheck(
        str(module),
        """
        CHECK:      %w = kernel.weight "w"
        CHECK-NEXT: kernel.copy %w -> %y
        CHECK-NEXT: func.return
        """,
    )
    assert list(store) == ["w"]


# ---------------------------------------------------------------------------------------------
# fold-batchnorm


def _conv_bn_ir(extra_use: bool = False) -> str:
    ret = (
        "%y, %c : tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>"
        if extra_use
        else "%y : tensor<1x4x5x5xf32>"
    )
    results = "tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>" if extra_use else "tensor<1x4x5x5xf32>"
    return func(
        "%x: tensor<1x3x5x5xf32>",
        f"""
    %w = graph.constant "w" : tensor<4x3x3x3xf32>
    %b = graph.constant "b" : tensor<4xf32>
    %s = graph.constant "s" : tensor<4xf32>
    %t = graph.constant "t" : tensor<4xf32>
    %m = graph.constant "m" : tensor<4xf32>
    %v = graph.constant "v" : tensor<4xf32>
    %k = graph.constant "k" : tensor<1x4x1x1xf32>
    %c = graph.conv %x, %w bias %b {CONV} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32>, tensor<4xf32> -> tensor<1x4x5x5xf32>
    %n = graph.batch_norm %c, %s, %t, %m, %v {{epsilon = 1.0e-3 : f32}} : tensor<1x4x5x5xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<1x4x5x5xf32>
    %y = graph.mul %n, %k : tensor<1x4x5x5xf32>, tensor<1x4x1x1xf32> -> tensor<1x4x5x5xf32>
    func.return {ret}""",
        results,
    )


def _conv_bn_weights() -> dict[str, np.ndarray]:
    return {
        "w": rand(4, 3, 3, 3, seed=1),
        "b": rand(4, seed=2),
        "s": rand(4, seed=3),
        "t": rand(4, seed=4),
        "m": rand(4, seed=5),
        "v": rand(4, seed=6, low=0.5),
        "k": rand(1, 4, 1, 1, seed=7),
    }


def test_fold_batchnorm_and_channel_scale_into_conv() -> None:
    weights = _conv_bn_weights()
    text, store = apply(_conv_bn_ir(), weights, FoldBatchNorm())
    assert_filecheck(
        text,
        """
        CHECK:     %[[W:.*]] = graph.constant "w.bn.bn" : tensor<4x3x3x3xf32>
        CHECK:     %[[B:.*]] = graph.constant "w.bn.bn_bias" : tensor<4xf32>
        CHECK:     graph.conv %x, %[[W]] bias %[[B]]
        CHECK-NOT: graph.batch_norm
        CHECK-NOT: graph.mul
        """,
    )
    scale = weights["s"] / np.sqrt(weights["v"] + np.float32(1e-3)) * weights["k"].reshape(4)
    np.testing.assert_allclose(
        store["w.bn.bn"], weights["w"] * scale[:, None, None, None], rtol=1e-5
    )
    shift = (weights["b"] - weights["m"]) * weights["s"] / np.sqrt(
        weights["v"] + np.float32(1e-3)
    ) + weights["t"]
    np.testing.assert_allclose(
        store["w.bn.bn_bias"], shift * weights["k"].reshape(4), rtol=1e-5, atol=1e-6
    )


def test_fold_batchnorm_leaves_multi_use_conv_alone() -> None:
    text, _ = apply(_conv_bn_ir(extra_use=True), _conv_bn_weights(), FoldBatchNorm())
    assert_filecheck(text, "CHECK: graph.conv\nCHECK: graph.batch_norm\nCHECK: graph.mul\n")


# ---------------------------------------------------------------------------------------------
# epilogue fusion


def test_fuse_bias_add_into_conv_and_matmul() -> None:
    ir = func(
        "%x: tensor<1x3x5x5xf32>, %a: tensor<2x6xf32>",
        f"""
    %w = graph.constant "w" : tensor<4x3x3x3xf32>
    %k = graph.constant "k" : tensor<1x4x1x1xf32>
    %bm = graph.constant "bm" : tensor<6x5xf32>
    %kb = graph.constant "kb" : tensor<1x5xf32>
    %c = graph.conv %x, %w {CONV} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32> -> tensor<1x4x5x5xf32>
    %y = graph.add %k, %c : tensor<1x4x1x1xf32>, tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %m = graph.matmul %a, %bm : tensor<2x6xf32>, tensor<6x5xf32> -> tensor<2x5xf32>
    %z = graph.add %m, %kb : tensor<2x5xf32>, tensor<1x5xf32> -> tensor<2x5xf32>
    func.return %y, %z : tensor<1x4x5x5xf32>, tensor<2x5xf32>""",
        "tensor<1x4x5x5xf32>, tensor<2x5xf32>",
    )
    weights = {
        "w": rand(4, 3, 3, 3),
        "k": rand(1, 4, 1, 1, seed=1),
        "bm": rand(6, 5),
        "kb": rand(1, 5),
    }
    text, store = apply(ir, weights, FuseBiasAdd())
    assert_filecheck(
        text,
        """
        CHECK:     %[[K:.*]] = graph.constant "k.bias" : tensor<4xf32>
        CHECK:     %y = graph.conv %x, %w bias %[[K]]
        CHECK:     %[[KB:.*]] = graph.constant "kb.bias" : tensor<5xf32>
        CHECK:     %z = graph.matmul %a, %bm bias %[[KB]]
        CHECK-NOT: graph.add
        """,
    )
    np.testing.assert_array_equal(store["k.bias"], weights["k"].reshape(4))


def test_fuse_residual_add_moves_the_conv_after_a_later_operand() -> None:
    ir = func(
        "%x: tensor<1x4x5x5xf32>",
        f"""
    %w = graph.constant "w" : tensor<4x4x3x3xf32>
    %c = graph.conv %x, %w {CONV} : tensor<1x4x5x5xf32>, tensor<4x4x3x3xf32> -> tensor<1x4x5x5xf32>
    %r = graph.relu %x : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %y = graph.add %c, %r : tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %u = graph.conv %x, %w {CONV} : tensor<1x4x5x5xf32>, tensor<4x4x3x3xf32> -> tensor<1x4x5x5xf32>
    %v = graph.add %u, %x : tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    func.return %y, %v, %u : tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>""",
        "tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>",
    )
    text, _ = apply(ir, {"w": rand(4, 4, 3, 3)}, FuseResidualAdd())
    assert_filecheck(
        text,
        """
        CHECK:      %r = graph.relu %x
        CHECK-NEXT: %y = graph.conv %x, %w residual %r
        CHECK-NEXT: %u = graph.conv %x, %w {{.*}}-> tensor<1x4x5x5xf32>
        CHECK-NEXT: %v = graph.add %u, %x
        """,
    )


def test_fuse_activations_into_conv_and_matmul() -> None:
    ir = func(
        "%x: tensor<1x3x5x5xf32>, %a: tensor<2x6xf32>",
        f"""
    %w = graph.constant "w" : tensor<4x3x3x3xf32>
    %bm = graph.constant "bm" : tensor<6x5xf32>
    %c = graph.conv %x, %w {CONV} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32> -> tensor<1x4x5x5xf32>
    %y = graph.clip %c {{min = 0.0 : f32, max = 6.0 : f32}} : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %d = graph.conv %x, %w {CONV} : tensor<1x3x5x5xf32>, tensor<4x3x3x3xf32> -> tensor<1x4x5x5xf32>
    %e = graph.leaky_relu %d {{alpha = 0.1 : f32}} : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %f = graph.sigmoid %e : tensor<1x4x5x5xf32> -> tensor<1x4x5x5xf32>
    %m = graph.matmul %a, %bm : tensor<2x6xf32>, tensor<6x5xf32> -> tensor<2x5xf32>
    %z = graph.relu %m : tensor<2x5xf32> -> tensor<2x5xf32>
    func.return %y, %f, %z : tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>, tensor<2x5xf32>""",
        "tensor<1x4x5x5xf32>, tensor<1x4x5x5xf32>, tensor<2x5xf32>",
    )
    text, _ = apply(ir, {"w": rand(4, 3, 3, 3), "bm": rand(6, 5)}, FuseConvActivation())
    assert_filecheck(
        text,
        """
        CHECK: %y = graph.conv %x, %w {{.*}}activation = "clip", activation_params = array<f32: 0.000000e+00, 6.000000e+00>
        CHECK: %e = graph.conv %x, %w {{.*}}activation = "leaky_relu", activation_params = array<f32: 1.000000e-01>
        CHECK: %f = graph.sigmoid %e
        CHECK: %z = graph.matmul %a, %bm {activation = "relu"}
        """,
    )


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
