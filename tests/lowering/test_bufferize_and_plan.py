"""plan-memory's placement on intervals built by hand (a layout no small IR produces), and one
regression kept in Python (the elementwise chain below). The IR
before and after each kernel-stage pass: tests/lowering/convert-graph-to-kernel.mlir,
fuse-elementwise.mlir, plan-memory.mlir and place-weights.mlir."""

from __future__ import annotations

from typing import cast

from xdsl.ir import SSAValue
from xdsl.parser import Parser

from ember.core.context import make_context
from ember.passes.pipeline import build_pipeline
from ember.passes.program import entry_function
from ember.passes.transforms.plan_memory import Interval, plan


def test_plan_memory_puts_an_in_place_output_exactly_on_its_input() -> None:
    """An output may reuse its dying input's bytes only at the same offset: shifted by 64 bytes
    it overwrote input elements before the kernel read them (test_attention_3d_attn_mask)."""

    def buffer(name: str) -> SSAValue:
        return cast(SSAValue, name)  # plan() only hashes and compares buffers

    wide = Interval(buffer("wide"), 320, 1, 1)  # alive with the input: pushes it to 320
    late = Interval(buffer("late"), 256, 3, 3)  # alive with the output: first fit is 256
    source = Interval(buffer("source"), 192, 1, 2)
    result = Interval(buffer("result"), 192, 2, 3)
    plan([wide, late, source, result], {(source.buffer, result.buffer)})
    assert source.offset == 320
    assert result.offset == source.offset


ELEMENTWISE_CHAIN = """
builtin.module {
  func.func @main(%x: tensor<4x5xf32>) -> tensor<4x5xf32> attributes {ember.input_names = ["x"], ember.output_names = ["y"]} {
    %a = graph.relu %x : tensor<4x5xf32> -> tensor<4x5xf32>
    %b = graph.neg %a : tensor<4x5xf32> -> tensor<4x5xf32>
    %c = graph.relu %b : tensor<4x5xf32> -> tensor<4x5xf32>
    %y = graph.neg %c : tensor<4x5xf32> -> tensor<4x5xf32>
    func.return %y : tensor<4x5xf32>
  }
}
"""


def test_plan_memory_writes_an_elementwise_output_over_its_dying_input() -> None:
    """kernel.elementwise has a body, so it spans several program positions: its input dies at
    the span's end and its output is born at its start (compared position by position, no
    intermediate was ever put in place: 256 bytes instead of 128)."""
    ctx = make_context()
    module = Parser(ctx, ELEMENTWISE_CHAIN).parse_module()
    build_pipeline("convert-graph-to-kernel,plan-memory").apply(ctx, module)
    module.verify()
    fn = entry_function(module)
    # Three 80-byte intermediates, each written over the one before (one 128-byte slot).
    assert fn.attributes["ember.intermediate_bytes"].value.data == 3 * 80
    assert fn.attributes["ember.arena_bytes"].value.data == 128
