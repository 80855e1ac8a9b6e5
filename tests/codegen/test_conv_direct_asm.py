"""The wide direct conv (flat bands, conv.py `_lower_direct`) compiled for both x86 ISAs.

Per (channel, kernel row) the kernel keeps an MR x 2-vector tile of accumulators in
registers (AVX-512: 14 x 2 zmm; AVX2: 6 x 2 ymm) and reads B straight from the band planes.
Checks the emitted assembly of each ISA: packed FMAs on that ISA's registers only, no
accumulator spilled to the stack and reloaded into an FMA, and no im2col copy loop.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from xdsl.dialects.builtin import MemRefType, ModuleOp, f32
from xdsl.ir import Block

from ember.codegen.jit import JitModule
from ember.core.target import named_target
from ember.dialects.weight_layouts import pack_conv_weight
from ember.passes.conversion.kernel_to_loops import conv
from ember.passes.conversion.kernel_to_loops.registry import lowering_for
from ember.tools.kernel_ops import conv_op

# A stack slot without an index register: a spill slot (the band planes, also on the
# stack, are always addressed with an index).
SPILL_SLOT = re.compile(r"-?\d*\(%rsp\)")


@pytest.mark.parametrize(
    "isa,register,other,mr", [("x86-64-v4", "zmm", "ymm", 14), ("x86-64-v3", "ymm", "zmm", 6)]
)
def test_direct_wide_conv_asm(
    monkeypatch: pytest.MonkeyPatch, isa: str, register: str, other: str, mr: int
) -> None:
    monkeypatch.setattr(conv, "DIRECT_WIDE_MIN_LANES", 8)  # AVX2 runs the GEMM by default
    target = named_target(isa, threads=1)
    x_shape, cout = (1, 16, 20, 20), 24
    w = np.zeros((cout, 16, 3, 3), np.float32)
    packed, layout = pack_conv_weight(w, 1, target)
    assert packed.shape[-1] == mr
    types = [MemRefType(f32, s) for s in (x_shape, packed.shape, (cout,), (1, cout, 20, 20))]
    block = Block(arg_types=types)
    op = conv_op((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, layout, True, False, "relu")(block.args)
    geo = conv.ConvGeometry.of(op)
    planes = conv._direct_planes(geo, target)
    assert planes is not None and planes.flat
    asm = JitModule(ModuleOp([lowering_for(op)(op, target, "conv")]), target).asm()
    fmas = [line for line in asm.splitlines() if "vfmadd" in line]
    # At least one full tile's kernel row: 3 taps x MR rows x 2 vectors.
    assert len(fmas) >= 3 * mr * 2
    assert all(f"%{register}" in line and f"%{other}" not in line for line in fmas)
    assert not [line for line in fmas if SPILL_SLOT.search(line)]


def test_spill_slot_pattern() -> None:
    assert SPILL_SLOT.search("\tvfmadd231ps\t64(%rsp), %zmm1, %zmm2")
    assert not SPILL_SLOT.search("\tvfmadd231ps\t64(%rsp,%rax,4), %zmm1, %zmm2")
