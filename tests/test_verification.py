"""The memoized verification (dialects/verification.py) accepts and refuses what xDSL's does,
with xDSL's messages, however much of the memo is warm."""

from __future__ import annotations

import pytest
from xdsl.dialects import arith, func, memref, scf, vector
from xdsl.dialects.builtin import IndexType, MemRefType, ModuleOp, VectorType, f32, f64, i32
from xdsl.ir import Block, Operation, Region
from xdsl.utils.exceptions import VerifyException

import ember.dialects  # noqa: F401  (installs the memoized verification)
from ember.dialects.verification import has_own_verifier, memoizable_ops


def _function(build) -> func.FuncOp:  # type: ignore[no-untyped-def]
    """func @f(%m: memref<4x8xf32>, %i: index) with the ops `build(block)` adds, then return."""
    block = Block(arg_types=[MemRefType(f32, [4, 8]), IndexType()])
    build(block)
    block.add_op(func.ReturnOp())
    return func.FuncOp("f", ([MemRefType(f32, [4, 8]), IndexType()], []), Region(block))


def _unmemoized_error(op: Operation) -> str:
    with pytest.raises(VerifyException) as raised:
        type(op).verify_.__wrapped__(op)  # type: ignore[attr-defined]
    return str(raised.value)


def test_the_introspection_still_reads_xdsls_op_wrapper() -> None:
    # Which ops have a verify_ of their own is read from irdl_op_definition's closure; a
    # change of xDSL's wrapper must fail here rather than memoize an op it should not.
    assert has_own_verifier(func.ReturnOp)  # it reads its function's type: not memoized
    assert has_own_verifier(vector.LoadOp)
    assert not has_own_verifier(arith.AddiOp)
    memoized = set(memoizable_ops())
    assert {arith.AddiOp, vector.FMAOp, vector.LoadOp, memref.LoadOp} <= memoized
    assert not memoized & {func.ReturnOp, func.FuncOp, scf.ForOp, scf.IfOp}
    assert type(arith.AddiOp.verify_).__name__ == "function"
    assert hasattr(arith.AddiOp.verify_, "__wrapped__"), "not installed"


def test_a_signature_that_verified_does_not_hide_another_that_does_not() -> None:
    def ops(block: Block) -> None:
        m, i = block.args
        block.add_op(vector.LoadOp(m, [i, i], VectorType(f32, [8])))  # verifies
        block.add_op(vector.LoadOp(m, [i], VectorType(f32, [8])))  # one index for 2 dims

    fn = _function(ops)
    good, bad = list(fn.body.block.ops)[:2]
    good.verify()
    good.verify()  # now from the memo
    with pytest.raises(VerifyException, match="Expected an index for each dimension"):
        bad.verify()
    with pytest.raises(VerifyException) as raised:
        bad.verify_()
    assert str(raised.value) == _unmemoized_error(bad)


def test_element_type_and_constraint_errors_after_a_warm_memo() -> None:
    def ops(block: Block) -> None:
        m, i = block.args
        block.add_op(vector.LoadOp(m, [i, i], VectorType(f32, [8])))
        block.add_op(vector.LoadOp(m, [i, i], VectorType(f64, [8])))  # element type differs
        one = arith.ConstantOp.from_int_and_width(1, 32)
        block.add_op(one)
        block.add_op(arith.AddiOp(one, one))  # i32 + i32 verifies
        block.add_op(arith.AddiOp(i, i))  # index + index verifies too

    fn = _function(ops)
    load, wrong, _, add_i32, add_index = list(fn.body.block.ops)[:5]
    for op in (load, add_i32, add_index):
        op.verify()
    with pytest.raises(VerifyException) as raised:
        wrong.verify_()
    assert "element type" in str(raised.value)
    assert str(raised.value) == _unmemoized_error(wrong)
    # Same class, a result type the IRDL constraint refuses: not hidden by the warm entries.
    mismatched = arith.AddiOp.create(operands=[add_i32.lhs, add_i32.rhs], result_types=[f32])
    with pytest.raises(VerifyException) as raised:
        mismatched.verify_()
    assert str(raised.value) == _unmemoized_error(mismatched)


def test_traits_are_checked_on_every_op() -> None:
    # scf.yield's signature (no operands) verifies inside an scf.for; the same signature
    # outside one breaks its HasParent trait, which the memo does not skip.
    lower = arith.ConstantOp.from_int_and_width(0, IndexType())
    body = Block(arg_types=[IndexType()])
    body.add_op(scf.YieldOp())
    loop = scf.ForOp(lower, lower, lower, [], Region(body))
    outer = Block()
    outer.add_ops([lower, loop])
    list(loop.body.block.ops)[0].verify()
    stray = scf.YieldOp()
    func.FuncOp("f", ([], []), Region(Block([stray])))
    with pytest.raises(VerifyException, match="expects parent op"):
        stray.verify()


def test_isolated_from_above_keeps_xdsls_message() -> None:
    outside = arith.ConstantOp.from_int_and_width(1, i32)
    block = Block()
    block.add_op(arith.AddiOp(outside, outside))
    block.add_op(func.ReturnOp())
    fn = func.FuncOp("g", ([], []), Region(block))
    ModuleOp([func.FuncOp("h", ([], []), Region(Block([func.ReturnOp()])))]).verify()
    with pytest.raises(VerifyException, match="IsolatedFromAbove parent"):
        fn.verify()


def test_a_lowered_kernel_verifies_and_a_broken_one_does_not() -> None:
    def ops(block: Block) -> None:
        m, i = block.args
        x = vector.LoadOp(m, [i, i], VectorType(f32, [8]))
        y = vector.FMAOp(x, x, x)
        block.add_ops([x, y, vector.StoreOp(y, m, [i, i])])

    module = ModuleOp([_function(ops)])
    module.verify()
    module.verify()
    store = list(list(module.ops)[0].body.block.ops)[2]
    store.operands = [store.operands[0], store.operands[1], store.operands[2]]  # 1 index of 2
    with pytest.raises(VerifyException, match="Expected an index for each dimension"):
        module.verify()
