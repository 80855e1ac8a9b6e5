"""Semantics on the ops (dialects/numpy_eval.py): each graph op declares its numpy semantics
(`evaluate`) and its effects (`Pure`), so fold-constants, the importer's folding, the reference
interpreter and dce ask the op and know none by name.

Oracle: numpy on the same arrays (exact: the same kernels or plain numpy expressions)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    IntegerAttr,
    MemRefType,
    ModuleOp,
    StringAttr,
    TensorType,
    f32,
    i64,
)
from xdsl.ir import Block, Region
from xdsl.irdl import irdl_op_definition
from xdsl.traits import Pure, RecursiveMemoryEffect
from xdsl.utils.exceptions import VerifyException

import ember
from ember.core.context import make_context
from ember.dialects import graph, kernel, numpy_eval
from ember.dialects.twins import spec_of
from ember.dialects.weights import WeightStore
from ember.passes.transforms.fold_constants import FoldConstants


@irdl_op_definition
class OpaqueOp(graph.UnaryElementwiseOp):
    """A graph op that declares no numpy semantics."""

    name = "graph.test_opaque"


def _function(op_type: type, store: WeightStore) -> tuple[ModuleOp, func.FuncOp]:
    """@main() -> op_type(constant "c"), with "c" = [1, 2, 3] in `store`."""
    store["c"] = np.array([1.0, 2.0, 3.0], np.float32)
    c = graph.ConstantOp("c", TensorType(f32, [3]))
    op = op_type(c.output)
    body = Block([c, op, func.ReturnOp(op.output)])
    fn = func.FuncOp("main", ((), (op.output.type,)), Region(body))
    return ModuleOp([fn]), fn


def test_fold_constants_asks_the_op() -> None:
    store = WeightStore()
    module, fn = _function(graph.SqrtOp, store)
    FoldConstants().apply(make_context(store), module)
    (op, _) = list(fn.body.ops)
    assert isinstance(op, graph.ConstantOp)
    np.testing.assert_array_equal(store[op.ref.data], np.sqrt(np.float32([1, 2, 3])))


def test_an_op_without_semantics_is_not_folded_and_not_interpreted() -> None:
    assert not numpy_eval.has_semantics(OpaqueOp)
    store = WeightStore()
    module, fn = _function(OpaqueOp, store)
    FoldConstants().apply(make_context(store), module)
    assert [op.name for op in fn.body.ops] == ["graph.constant", "graph.test_opaque", "func.return"]
    with pytest.raises(NotImplementedError, match="graph.test_opaque has no numpy semantics"):
        numpy_eval.evaluate_function(fn, store, [])


def test_every_graph_op_is_pure_or_has_regions() -> None:
    # dce is xDSL's is_trivially_dead: an unused graph op must be erasable by its traits.
    for op in graph.GRAPH_OPS:
        assert op.has_trait(Pure) or op.has_trait(RecursiveMemoryEffect), op.name
        assert op.has_trait(RecursiveMemoryEffect) == bool(op.get_irdl_definition().regions)


def test_no_kernel_op_writing_a_buffer_claims_to_be_pure() -> None:
    writers = [
        op
        for op in kernel.KERNEL_OPS
        if any(name == "output" for name, _ in op.get_irdl_definition().operands)
    ]
    assert len(writers) > 20
    assert [op.name for op in writers if op.has_trait(Pure)] == []


@pytest.mark.parametrize(
    "graph_op",
    [op for op in graph.GRAPH_OPS if spec_of(op) and numpy_eval.has_semantics(op)],
    ids=lambda op: op.name,
)
def test_twins_declare_their_semantics_once(graph_op: type) -> None:
    twin = kernel.twin_of(graph_op)
    assert twin is not None and twin.evaluate is graph_op.evaluate
    assert "evaluate" not in vars(graph_op) and "evaluate" not in vars(twin)


def test_a_kernel_twin_evaluates_like_its_graph_op() -> None:
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    indices = np.array([3, 0], np.int64)
    block = Block(
        arg_types=[MemRefType(f32, [4, 3]), MemRefType(i64, [2]), MemRefType(f32, [2, 3])]
    )
    op = kernel.GatherOp(operands=list(block.args), properties={"axis": IntegerAttr(0, i64)})
    np.testing.assert_array_equal(op.evaluate([data, indices]), data[[3, 0]])


@pytest.mark.parametrize(
    ("op_type", "prop", "value"),
    [
        (graph.BitShiftOp, "direction", "up"),
        (graph.CompareOp, "predicate", "ne"),
        (graph.ReduceOp, "reduction", "median"),
    ],
)
def test_closed_string_sets_are_verified(op_type: type, prop: str, value: str) -> None:
    block = Block(arg_types=[TensorType(i64, [2]), TensorType(i64, [2])])
    operands = list(block.args)[: len(op_type.get_irdl_definition().operands)]
    properties = {prop: StringAttr(value)}
    if op_type is graph.BitShiftOp or op_type is graph.CompareOp:
        result = TensorType(i64, [2])
    else:
        properties |= {"axes": graph.i64_array([0]), "keepdims": IntegerAttr(1, i64)}
        result = TensorType(i64, [1])
    op = op_type.build(operands=operands, result_types=[result], properties=properties)
    with pytest.raises(VerifyException, match=f"unknown {prop} '{value}'"):
        op.verify()


def test_cast_round_mode_and_kernel_reduce_kind_are_verified() -> None:
    block = Block(arg_types=[TensorType(f32, [2]), MemRefType(f32, [2]), MemRefType(f32, [1])])
    cast = graph.CastOp.build(
        operands=[block.args[0]],
        result_types=[TensorType(f32, [2])],
        properties={"round_mode": StringAttr("sideways")},
    )
    with pytest.raises(VerifyException, match="unknown round_mode 'sideways'"):
        cast.verify()
    reduce = kernel.ReduceOp(
        operands=[block.args[1], block.args[2]],
        properties={"kind": StringAttr("median"), "axes": graph.i64_array([0])},
    )
    with pytest.raises(VerifyException, match="unknown kind 'median'"):
        reduce.verify()


def test_importer_folds_ops_with_absent_optional_operands() -> None:
    # Regression: the importer's known_value passed only the present operands, so a MatMul
    # (optional bias, residual) feeding a Reshape's shape leaked a ValueError from unpacking.
    a = np.array([[1.0, 2.0]], np.float32)
    b = np.array([[1.0, 0.0], [0.0, 3.0]], np.float32)  # a @ b = [[1, 6]]: the shape [1, 6]
    nodes = [
        helper.make_node("MatMul", ["a", "b"], ["s"]),
        helper.make_node("Cast", ["s"], ["s64"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["s64", "minus_one"], ["shape"]),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    initializers = {"a": a, "b": b, "minus_one": np.array([-1], np.int64)}
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = ember.compile(model)(x)
    np.testing.assert_array_equal(y, x.reshape(1, 6))
