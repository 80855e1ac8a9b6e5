"""Twin ops (dialects/twins.py): one TwinSpec gives a graph op and its kernel form the same
properties and verifier, and convert-graph-to-kernel converts every twin with no code of its
own (the IR before and after: tests/lowering/convert-graph-to-kernel.mlir, @generic_ops)."""

from __future__ import annotations

import re

import pytest
from xdsl.dialects.builtin import IntegerAttr, MemRefType, TensorType, f32, i64
from xdsl.ir import Block
from xdsl.parser import Parser
from xdsl.utils.exceptions import VerifyException

from ember.core.context import make_context
from ember.dialects import graph, kernel
from ember.dialects.twins import TwinSpec, spec_of
from ember.dialects.weights import WeightStore
from ember.passes.conversion.graph_to_kernel import ConversionError
from ember.passes.pipeline import build_pipeline

GRAPH_TWINS = [op for op in graph.GRAPH_OPS if spec_of(op) is not None]


def test_every_spec_has_one_graph_op_and_one_kernel_op() -> None:
    specs = [spec_of(op) for op in GRAPH_TWINS]
    assert len(specs) == len(set(specs)) >= 20
    for graph_op in GRAPH_TWINS:
        twin = kernel.twin_of(graph_op)
        assert twin is not None, graph_op.name
        assert twin.name == graph_op.name.replace("graph.", "kernel.", 1)
        assert [k for k in kernel.KERNEL_OPS if spec_of(k) is spec_of(graph_op)] == [twin]


@pytest.mark.parametrize("graph_op", GRAPH_TWINS, ids=lambda op: op.name)
def test_twins_share_properties_and_operand_names(graph_op: type) -> None:
    """The generic conversion matches operands by name: every kernel operand is a graph operand
    or result of that name, or a scratch buffer the graph op's explicit conversion adds."""
    twin = kernel.twin_of(graph_op)
    graph_def, kernel_def = graph_op.get_irdl_definition(), twin.get_irdl_definition()
    spec_props = {
        name for cls in spec_of(graph_op).__mro__ if issubclass(cls, TwinSpec) for name in vars(cls)
    }
    for name in spec_props & set(graph_def.properties):
        assert kernel_def.properties[name] == graph_def.properties[name]
    graph_names = {n for n, _ in graph_def.operands} | {n for n, _ in graph_def.results}
    scratch = {n for n, _ in kernel_def.operands} - graph_names
    assert scratch <= {"workspace", "r"}, scratch  # recurrent (packed r) and NMS convert by hand


def test_kernel_twin_verifies_like_its_graph_op() -> None:
    # A gather whose output is not data gathered by the indices: both forms refuse it.
    data, indices, out = ([4, 3], [2], [5, 3])
    block = Block(arg_types=[MemRefType(f32, data), MemRefType(i64, indices), MemRefType(f32, out)])
    bad = kernel.GatherOp(operands=list(block.args), properties={"axis": IntegerAttr(0, i64)})
    with pytest.raises(VerifyException, match=r"kernel.gather: output \(5, 3\) != data"):
        bad.verify()
    tensors = Block(arg_types=[TensorType(f32, data), TensorType(i64, indices)])
    bad_graph = graph.GatherOp(
        operands=list(tensors.args),
        result_types=[TensorType(f32, out)],
        properties={"axis": IntegerAttr(0, i64)},
    )
    with pytest.raises(VerifyException, match=r"graph.gather: output \(5, 3\) != data"):
        bad_graph.verify()


@pytest.mark.parametrize(
    ("op_text", "message"),
    [
        (
            'graph.arg_reduce %x {kind = "median", axis = 1 : i64, select_last_index = 0 : i64}'
            " : tensor<2x8xf32> -> tensor<2x1xi64>",
            "graph.arg_reduce: unknown kind 'median' (expected one of max, min)",
        ),
        (
            'graph.reduce %x {reduction = "l2", axes = array<i64: 1>, keepdims = 1 : i64}'
            " : tensor<2x8xf32> -> tensor<2x1xf32>",
            "graph.reduce: unknown reduction 'l2'",
        ),
        (
            'graph.trig %x {fn = "sec"} : tensor<2x8xf32> -> tensor<2x8xf32>',
            "graph.trig: unknown fn 'sec'",
        ),
    ],
)
def test_enum_like_properties_refuse_unknown_values(op_text: str, message: str) -> None:
    text = f"""
builtin.module {{
  func.func @main(%x: tensor<2x8xf32>) {{
    %y = {op_text}
    func.return
  }}
}}
"""
    ctx = make_context(WeightStore())
    module = Parser(ctx, text).parse_module()
    with pytest.raises(VerifyException, match=re.escape(message)):
        module.verify()


def test_generic_conversion_refuses_what_the_kernel_would_drop() -> None:
    text = """
builtin.module {
  func.func @main(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
    %y = graph.softmax %x {axis = 1 : i64} : tensor<2x8xf32> -> tensor<2x8xf32>
    func.return %y : tensor<2x8xf32>
  }
}
"""
    ctx = make_context(WeightStore())
    module = Parser(ctx, text).parse_module()
    softmax = next(op for op in module.walk() if isinstance(op, graph.SoftmaxOp))
    softmax.properties["temperature"] = IntegerAttr(2, i64)  # a property no kernel reads
    with pytest.raises(ConversionError, match="kernel.softmax takes no temperature"):
        build_pipeline("convert-graph-to-kernel").apply(ctx, module)
