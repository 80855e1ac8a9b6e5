"""plan-memory's placement on intervals built by hand (a layout no small IR produces). The IR
before and after each kernel-stage pass: tests/lowering/convert-graph-to-kernel.mlir,
fuse-elementwise.mlir, plan-memory.mlir and place-weights.mlir."""

from __future__ import annotations

from typing import cast

from xdsl.ir import SSAValue

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
