"""fuse-conv-activation on GELU's tanh approximation after a matmul: FileCheck before/after
(numpy interpreter equality as in test_graph_passes), a near miss left alone, and ONNX
Gelu(approximate="tanh") against onnxruntime (max |error| <= 1e-4 x max |reference|)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.core.context import make_context
from ember.frontend.onnx_importer import import_model
from ember.passes.pipeline import run_graph_passes
from ember.passes.transforms.fuse_epilogue import FuseConvActivation
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.oracle import assert_close, onnxruntime_outputs, random_inputs
from ember.tests.transforms.test_graph_passes import apply, func, rand

X, W, Y = "tensor<3x8xf32>", "tensor<8x6xf32>", "tensor<3x6xf32>"
SCALAR = "tensor<f32>"


def gelu_tanh_ir(cube: str) -> str:
    cubes = {
        "pow": f"%cube = graph.pow %h, %three : {Y}, {SCALAR} -> {Y}",
        "muls": f"%sq = graph.mul %h, %h : {Y}, {Y} -> {Y}\n    %cube = graph.mul %sq, %h : {Y}, {Y} -> {Y}",
    }
    body = f"""
    %w = graph.constant "w" : {W}
    %three = graph.constant "three" : {SCALAR}
    %c1 = graph.constant "c1" : {SCALAR}
    %c2 = graph.constant "c2" : {SCALAR}
    %half = graph.constant "half" : {SCALAR}
    %one = graph.constant "one" : {SCALAR}
    %h = graph.matmul %x, %w : {X}, {W} -> {Y}
    {cubes[cube]}
    %t1 = graph.mul %cube, %c1 : {Y}, {SCALAR} -> {Y}
    %t2 = graph.add %h, %t1 : {Y}, {Y} -> {Y}
    %t3 = graph.mul %t2, %c2 : {Y}, {SCALAR} -> {Y}
    %t4 = graph.tanh %t3 : {Y} -> {Y}
    %t5 = graph.add %t4, %one : {Y}, {SCALAR} -> {Y}
    %t6 = graph.mul %h, %half : {Y}, {SCALAR} -> {Y}
    %g = graph.mul %t6, %t5 : {Y}, {Y} -> {Y}
    func.return %g : {Y}"""
    return func(f"%x: {X}", body, Y)


def weights(cubic_coefficient: float) -> dict[str, np.ndarray]:
    return {
        "w": rand(8, 6),
        "three": np.array(3.0, np.float32),
        "c1": np.array(cubic_coefficient, np.float32),
        "c2": np.array(math.sqrt(2.0 / math.pi), np.float32),
        "half": np.array(0.5, np.float32),
        "one": np.array(1.0, np.float32),
    }


@pytest.mark.parametrize("cube", ["pow", "muls"])
def test_gelu_tanh_fuses_into_the_matmul(cube: str) -> None:
    text, _ = apply(gelu_tanh_ir(cube), weights(0.044715), FuseConvActivation())
    assert_filecheck(
        text,
        """
        CHECK:     %g = graph.matmul %x, %w {activation = "gelu_tanh"}
        CHECK-NOT: graph.tanh
        CHECK-NOT: graph.mul
        """,
    )


def test_another_cubic_coefficient_is_not_gelu() -> None:
    text, _ = apply(gelu_tanh_ir("pow"), weights(0.05), FuseConvActivation())
    assert_filecheck(text, 'CHECK-NOT: activation = "gelu_tanh"\nCHECK: graph.tanh\n')


def test_onnx_gelu_tanh_after_matmul_matches_onnxruntime() -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((24, 40)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Gelu", ["h"], ["y"], approximate="tanh"),
        ],
        "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 40])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    module, store = import_model(model)
    run_graph_passes(module, make_context(store))
    assert 'activation = "gelu_tanh"' in str(module)
    feeds = random_inputs(model, seed=0)
    actual = ember.compile(model, threads=1).run(feeds)
    assert_close(actual, onnxruntime_outputs(model, feeds), rel=1e-4)
