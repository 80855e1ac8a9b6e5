"""convert-graph-to-kernel, fuse-elementwise, plan-memory and place-weights: IR before/after."""

from __future__ import annotations

import numpy as np
from xdsl.parser import Parser

from ember.core.context import make_context
from ember.dialects.weights import WeightStore
from ember.passes.pipeline import build_pipeline
from ember.passes.program import entry_function
from ember.tests.filecheck_util import assert_filecheck

GRAPH = """
builtin.module {
  func.func @main(%x: tensor<2x8xf32>) -> tensor<2x8xf32> attributes {ember.input_names = ["x"], ember.output_names = ["y"]} {
    %s = graph.constant "scale" : tensor<8xf32>
    %a = graph.mul %x, %s : tensor<2x8xf32>, tensor<8xf32> -> tensor<2x8xf32>
    %b = graph.relu %a : tensor<2x8xf32> -> tensor<2x8xf32>
    %c = graph.softmax %b {axis = 1 : i64} : tensor<2x8xf32> -> tensor<2x8xf32>
    %d = graph.exp %c : tensor<2x8xf32> -> tensor<2x8xf32>
    %e = graph.add %d, %c : tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x8xf32>
    func.return %e : tensor<2x8xf32>
  }
}
"""


def _run(spec: str, text: str = GRAPH) -> tuple[str, object]:
    ctx = make_context(WeightStore({"scale": np.ones(8, np.float32)}))
    module = Parser(ctx, text).parse_module()
    build_pipeline(spec).apply(ctx, module)
    module.verify()
    return str(module), module


def test_convert_graph_to_kernel_writes_result_in_place() -> None:
    text, _ = _run("convert-graph-to-kernel")
    assert_filecheck(
        text,
        """
        // CHECK: func.func @main(%[[X:.*]]: memref<2x8xf32>, %[[OUT:.*]]: memref<2x8xf32>)
        // CHECK: %[[S:.*]] = kernel.weight "scale" : memref<8xf32>
        // CHECK: %[[A:.*]] = memref.alloc() {alignment = 64 : i64} : memref<2x8xf32>
        // CHECK: kernel.elementwise(%[[X]], %[[S]]) -> %[[A]]
        // CHECK: arith.mulf
        // CHECK: kernel.elementwise
        // CHECK: arith.maximumf
        // CHECK: kernel.softmax
        // CHECK: kernel.elementwise
        // CHECK: math.exp
        // CHECK: kernel.elementwise({{.*}}) -> %[[OUT]]
        // CHECK-NOT: kernel.copy
        // CHECK: func.return
        """,
    )


def test_fuse_elementwise_merges_single_use_chains() -> None:
    text, _ = _run("convert-graph-to-kernel,fuse-elementwise")
    # mul -> relu fuse into one kernel; exp -> add fuse (softmax output is read twice, so it
    # stays a buffer of its own and is an input of the fused kernel).
    assert text.count("kernel.elementwise") == 2
    assert_filecheck(
        text,
        """
        // CHECK: kernel.elementwise
        // CHECK-NEXT: ^{{.*}}(%[[X:.*]]: f32, %[[S:.*]]: f32):
        // CHECK-NEXT: %[[M:.*]] = arith.mulf %[[X]], %[[S]] : f32
        // CHECK: arith.maximumf %[[M]]
        // CHECK: kernel.softmax
        // CHECK: kernel.elementwise
        // CHECK: math.exp
        // CHECK: arith.addf
        """,
    )


def test_plan_memory_reuses_dead_buffers() -> None:
    text, module = _run("convert-graph-to-kernel,fuse-elementwise,plan-memory,place-weights")
    fn = entry_function(module)
    # Two 64-byte intermediates (relu output, softmax output) are alive together: 128 bytes.
    assert fn.attributes["ember.intermediate_bytes"].value.data == 128
    assert fn.attributes["ember.arena_bytes"].value.data == 128
    assert_filecheck(
        text,
        """
        // CHECK: func.func @main(%{{.*}}: memref<2x8xf32>, %{{.*}}: memref<2x8xf32>, %[[ARENA:.*]]: memref<128xi8> {ember.role = "arena"}, %[[W:.*]]: memref<64xi8> {ember.role = "weights"})
        // CHECK-NOT: memref.alloc
        // CHECK-DAG: memref.view %[[ARENA]][%{{.*}}][] : memref<128xi8> to memref<2x8xf32>
        // CHECK-DAG: memref.view %[[W]][%{{.*}}][] : memref<64xi8> to memref<8xf32>
        """,
    )


CHAIN = """
builtin.module {
  func.func @main(%x: tensor<256xf32>) -> tensor<256xf32> attributes {ember.input_names = ["x"], ember.output_names = ["y"]} {
    %a = graph.softmax %x {axis = 0 : i64} : tensor<256xf32> -> tensor<256xf32>
    %b = graph.softmax %a {axis = 0 : i64} : tensor<256xf32> -> tensor<256xf32>
    %c = graph.softmax %b {axis = 0 : i64} : tensor<256xf32> -> tensor<256xf32>
    %d = graph.softmax %c {axis = 0 : i64} : tensor<256xf32> -> tensor<256xf32>
    func.return %d : tensor<256xf32>
  }
}
"""


def test_plan_memory_ping_pongs_a_chain() -> None:
    _, module = _run("convert-graph-to-kernel,plan-memory", CHAIN)
    fn = entry_function(module)
    # Three 1 KiB intermediates, at most two alive at once.
    assert fn.attributes["ember.intermediate_bytes"].value.data == 3 * 1024
    assert fn.attributes["ember.arena_bytes"].value.data == 2 * 1024


RESIDUAL_OF_CONV_INPUT = """
builtin.module {
  func.func @main(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> attributes {ember.input_names = ["x"], ember.output_names = ["y"]} {
    %e = graph.exp %x : tensor<1x8x4x4xf32> -> tensor<1x8x4x4xf32>
    %w = graph.constant "w" : tensor<8x8x1x1xf32>
    %c = graph.conv %e, %w {kernel_shape = array<i64: 1, 1>, strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x8x4x4xf32>, tensor<8x8x1x1xf32> -> tensor<1x8x4x4xf32>
    %r = graph.add %e, %c : tensor<1x8x4x4xf32>, tensor<1x8x4x4xf32> -> tensor<1x8x4x4xf32>
    %y = graph.exp %r : tensor<1x8x4x4xf32> -> tensor<1x8x4x4xf32>
    func.return %y : tensor<1x8x4x4xf32>
  }
}
"""


def test_plan_memory_keeps_a_residual_that_is_also_the_conv_input() -> None:
    ctx = make_context(WeightStore({"w": np.ones((8, 8, 1, 1), np.float32)}))
    module = Parser(ctx, RESIDUAL_OF_CONV_INPUT).parse_module()
    build_pipeline("fuse-residual-add,convert-graph-to-kernel,plan-memory").apply(ctx, module)
    module.verify()
    # The conv reads all of %e's channels at a pixel before writing any of them: the output
    # may not overwrite %e although %e dies there, so both 512-byte buffers are live at once.
    assert_filecheck(
        str(module),
        """
        // CHECK: %[[E:.*]] = memref.view %{{.*}}[%[[OFF_E:.*]]][]
        // CHECK: kernel.elementwise(%{{.*}}) -> %[[E]]
        // CHECK: %[[C:.*]] = memref.view
        // CHECK: kernel.conv2d %[[E]], %{{.*}} residual %[[E]] -> %[[C]]
        """,
    )
    fn = entry_function(module)
    assert fn.attributes["ember.arena_bytes"].value.data == 2 * 512


def test_plan_memory_puts_an_in_place_output_exactly_on_its_input() -> None:
    """An output may reuse its dying input's bytes only at the same offset: shifted by 64 bytes
    it overwrote input elements before the kernel read them (test_attention_3d_attn_mask)."""
    from typing import cast

    from xdsl.ir import SSAValue

    from ember.passes.transforms.plan_memory import Interval, plan

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
    _, module = _run("convert-graph-to-kernel,plan-memory", ELEMENTWISE_CHAIN)
    fn = entry_function(module)
    # Three 80-byte intermediates, each written over the one before (one 128-byte slot).
    assert fn.attributes["ember.intermediate_bytes"].value.data == 3 * 80
    assert fn.attributes["ember.arena_bytes"].value.data == 128
