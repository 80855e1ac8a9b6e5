"""The channel-lanes conv on channel-blocked maps (conv.py `_lower_channel_lanes`, the
blocked-layout pass's kernel) compiled for both x86 ISAs.

Checks the emitted assembly of each ISA: packed FMAs on that ISA's registers only, no
accumulator spilled to the stack and reloaded into an FMA, and the software prefetch of the
next input channel block's pixels (blocks lie a whole plane apart, which the hardware
prefetchers miss).
"""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects.builtin import MemRefType, ModuleOp, f32
from xdsl.ir import Block

from ember.codegen.jit import JitModule
from ember.core.target import named_target
from ember.dialects.weight_layouts import blocked_conv_blocking, pack_conv_lanes_weight
from ember.passes.conversion.kernel_to_loops.registry import lowering_for
from ember.tests.codegen.test_conv_direct_asm import SPILL_SLOT
from ember.tools.kernel_ops import conv_op


@pytest.mark.parametrize(
    "isa,register,other", [("x86-64-v4", "zmm", "ymm"), ("x86-64-v3", "ymm", "zmm")]
)
@pytest.mark.parametrize("w,residual", [(37, False), (48, True)])
def test_blocked_lanes_conv_asm(
    isa: str, register: str, other: str, w: int, residual: bool
) -> None:
    """Width 48: on AVX-512 the widest tile, 12 columns x 2 vectors (24 accumulators, 6
    tap weights, a broadcast: 31 of 32 registers), plus the residual's prefetches."""
    target = named_target(isa, threads=1)
    c = target.vector_width
    cin, cout, h = 2 * c, 2 * c, 9
    blocking = blocked_conv_blocking(cin, cout, 1, (h, w), (3, 3), target)
    assert blocking is not None
    packed, layout = pack_conv_lanes_weight(np.zeros((cout, cin, 3, 3), np.float32), blocking.nr)
    out_shape = (1, cout // c, h, w, c)
    shapes = [(1, cin // c, h, w, c), packed.shape, (cout,), *[out_shape] * (1 + residual)]
    block = Block(arg_types=[MemRefType(f32, s) for s in shapes])
    make = conv_op((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, layout, True, residual, "relu")
    op = make(block.args)
    asm = JitModule(ModuleOp([lowering_for(op)(op, target, "conv")]), target).asm()
    fmas = [line for line in asm.splitlines() if "vfmadd" in line]
    # At least one full tile's lane step: 3 taps x MR columns x nvec vectors.
    assert len(fmas) >= 3 * blocking.mr * blocking.nvec
    assert all(f"%{register}" in line and f"%{other}" not in line for line in fmas)
    assert not [line for line in fmas if SPILL_SLOT.search(line)]
    assert "prefetcht0" in asm
