"""vector.maskedstore / maskedload in the emitter: no byte past the mask is ever written.

LLVM 22 (x86, AVX-512) miscompiles `llvm.masked.store` of a truncated vector under a constant
one-lane mask: `trunc <16 x i32> %w to <16 x i8>` stored with mask <1,0,...,0> becomes
`movl %eax, (%rdi)`, 4 bytes for one. The emitter stores such one-lane tails as a scalar.
Each case here stores into a buffer filled with a sentinel and checks every byte, for the
host (AVX-512 on the CI machine) and AVX2 (x86-64-v3), mask bounds known at compile time
and at run time. Exact comparison (integer data).
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
import pytest
from xdsl.dialects import arith, vector
from xdsl.dialects import llvm as llvm_dialect
from xdsl.dialects.builtin import (
    IndexType,
    IntegerType,
    MemRefType,
    ModuleOp,
    VectorType,
    i1,
    i8,
    i16,
    i32,
    i64,
)
from xdsl.ir import SSAValue

from ember.core.target import Target, host_target, named_target
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
from ember.tests.codegen.util import run

SENTINEL = 99
_TYPES: dict[type, IntegerType] = {np.int8: i8, np.int16: i16, np.int32: i32, np.int64: i64}
# (wide, narrow): the truncations LLVM folds into an AVX-512 truncating store (vpmov*).
TRUNCATIONS = [(np.int32, np.int8), (np.int32, np.int16), (np.int64, np.int32), (np.int16, np.int8)]


def _targets() -> list[Target]:
    targets = [host_target(1)]
    if llvm.get_host_cpu_features().get("avx2"):
        targets.append(named_target("x86-64-v3", 1))
    return targets


def _truncating_store(lanes: int, wide: type, narrow: type, keep: int | None) -> ModuleOp:
    """tail(src, dst, bound): dst[:k] = trunc(src[:lanes])[:k], k = `keep` (a constant) or,
    when `keep` is None, bound[0] read at run time."""
    types = [MemRefType(_TYPES[wide], [lanes]), MemRefType(_TYPES[narrow], [lanes])]
    fn, b = kernel_function("tail", [*types, MemRefType(i64, [1])])
    src, dst, bound = fn.args
    narrowed = b.insert(
        llvm_dialect.TruncOp(b.vload(src, [0], lanes), VectorType(_TYPES[narrow], [lanes]))
    ).results[0]
    _masked_store(b, narrowed, dst, lanes, keep, bound)
    b.ret()
    return ModuleOp([fn])


def _masked_store(
    b: LoopBuilder, v: SSAValue, dst: SSAValue, lanes: int, keep: int | None, bound: SSAValue
) -> None:
    k = b.index(keep) if keep is not None else _runtime_index(b, bound)
    mask = b.insert(vector.CreateMaskOp([k], VectorType(i1, [lanes]))).results[0]
    b.insert(vector.MaskedStoreOp(dst, [b.index(0)], mask, v))


def _runtime_index(b: LoopBuilder, bound: SSAValue) -> SSAValue:
    return b.insert(arith.IndexCastOp(b.load(bound, [0]), IndexType())).results[0]


@pytest.mark.parametrize("target", _targets(), ids=lambda t: t.cpu)
@pytest.mark.parametrize("wide,narrow", TRUNCATIONS, ids=lambda t: t.__name__)
@pytest.mark.parametrize("bound", ["constant", "runtime"])
def test_masked_store_of_a_truncated_vector_writes_only_its_lanes(
    target: Target, wide: type, narrow: type, bound: str
) -> None:
    lanes = 64 // np.dtype(wide).itemsize  # one zmm of wide lanes (LLVM splits wider ones)
    # Nonzero high bytes in every lane: a store of the untruncated lane would show.
    src = (np.arange(1, lanes + 1, dtype=np.int64) * 0x0101010101010101).astype(wide)
    runtime = _truncating_store(lanes, wide, narrow, None) if bound == "runtime" else None
    for keep in range(lanes + 1):
        module = runtime or _truncating_store(lanes, wide, narrow, keep)
        dst = np.full(lanes, SENTINEL, narrow)
        run(module, "tail", [src, dst, np.array([keep], np.int64)], target=target)
        expected = np.full(lanes, SENTINEL, narrow)
        expected[:keep] = src[:keep].astype(narrow)
        np.testing.assert_array_equal(dst, expected, err_msg=f"{keep} of {lanes} lanes")


@pytest.mark.parametrize("target", _targets(), ids=lambda t: t.cpu)
def test_masked_bool_vectors_are_one_byte_per_lane(target: Target) -> None:
    """vector<16xi1> through maskedload/maskedstore: bools are bytes, as in vector.load/store."""
    lanes, keep = 16, 11
    fn, b = kernel_function(
        "bools", [MemRefType(i1, [lanes]), MemRefType(i1, [lanes]), MemRefType(i64, [1])]
    )
    src, dst, bound = fn.args
    k = _runtime_index(b, bound)
    mask = b.insert(vector.CreateMaskOp([k], VectorType(i1, [lanes]))).results[0]
    passthru = b.insert(
        arith.ConstantOp.from_int_and_width(0, 1)  # false lanes past the mask
    ).results[0]
    zeros = b.insert(vector.BroadcastOp(passthru, VectorType(i1, [lanes]))).results[0]
    loaded = b.insert(
        vector.MaskedLoadOp(src, [b.index(0)], mask, zeros, VectorType(i1, [lanes]))
    ).results[0]
    b.insert(vector.MaskedStoreOp(dst, [b.index(0)], mask, loaded))
    b.ret()
    x = np.arange(lanes) % 3 == 0
    out = np.full(lanes, SENTINEL, np.uint8)
    run(ModuleOp([fn]), "bools", [x, out.view(np.bool_), np.array([keep], np.int64)], target=target)
    np.testing.assert_array_equal(out[:keep], x[:keep].astype(np.uint8))
    np.testing.assert_array_equal(out[keep:], SENTINEL)
