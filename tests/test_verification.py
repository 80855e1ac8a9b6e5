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


def _program() -> ModuleOp:
    """A load (with an attribute) and store, then a loop whose body ends the function's ops
    before the return: moving the op after the loop into its body keeps the walk order."""

    def ops(block: Block) -> None:
        m, i = block.args
        x = vector.LoadOp(m, [i, i], VectorType(f32, [8]))
        x.attributes["tag"] = IndexType()
        body = Block(arg_types=[IndexType()])
        body.add_op(scf.YieldOp())
        loop = scf.ForOp(i, i, i, [], Region(body))
        after = arith.ConstantOp.from_int_and_width(0, IndexType())
        block.add_ops([x, vector.StoreOp(x, m, [i, i]), loop, after])

    return ModuleOp([_function(ops)])


def _edits() -> list:  # type: ignore[type-arg]
    """Edits a pass may make without printing differently in every case: each is a change."""

    def load_and_block(module: ModuleOp) -> tuple[vector.LoadOp, Block]:
        block = list(module.ops)[0].body.block
        return list(block.ops)[0], block

    def set_attribute(module: ModuleOp) -> None:
        load_and_block(module)[0].attributes["tag"] = i32

    def equal_attribute_anew(module: ModuleOp) -> None:
        load_and_block(module)[0].attributes["tag"] = IndexType()

    def add_attribute(module: ModuleOp) -> None:
        load_and_block(module)[0].attributes["other"] = IndexType()

    def rename_attribute(module: ModuleOp) -> None:
        load = load_and_block(module)[0]
        load.attributes["renamed"] = load.attributes.pop("tag")

    def into_the_loop(module: ModuleOp) -> None:
        _, block = load_and_block(module)
        loop = next(op for op in block.ops if isinstance(op, scf.ForOp))
        after = loop.next_op
        after.detach()
        loop.body.block.add_op(after)  # walk order unchanged, parent changed

    def result_type(module: ModuleOp) -> None:
        load_and_block(module)[0].result._type = VectorType(f32, [16])  # noqa: SLF001 (as compile_once)

    def operand(module: ModuleOp) -> None:
        load, block = load_and_block(module)
        load.operands = [block.args[0], block.args[1], block.args[1]]  # same values: no change
        load.operands = [block.args[0], block.args[1], block.args[0]]

    def erase_and_insert(module: ModuleOp) -> None:
        _, block = load_and_block(module)
        block.insert_op_before(arith.ConstantOp.from_int_and_width(1, 32), block.first_op)

    def argument_type(module: ModuleOp) -> None:
        load_and_block(module)[1].args[1]._type = i32  # noqa: SLF001

    def move(module: ModuleOp) -> None:
        load, block = load_and_block(module)
        store = load.next_op
        store.detach()
        block.insert_op_before(store, block.last_op)  # same place: no change
        return_op = block.last_op
        return_op.detach()
        block.insert_op_before(return_op, store)

    return [set_attribute, equal_attribute_anew, add_attribute, rename_attribute, into_the_loop,
            result_type, operand, erase_and_insert, argument_type, move]  # fmt: skip


@pytest.mark.parametrize("keep", [True, False])
def test_ir_state_sees_every_edit(keep: bool) -> None:
    from ember.dialects.verification import IRState

    module = _program()
    state = IRState()
    assert not state.unchanged(module)  # nothing to compare with yet
    assert state.unchanged(module)
    for edit in _edits():
        module = _program()
        state = IRState()
        state.unchanged(module)
        edit(module)
        assert not state.unchanged(module, keep=keep), edit.__name__
        if keep:
            assert state.unchanged(module), edit.__name__


def test_verify_each_names_a_pass_that_breaks_the_ir_after_passes_that_change_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from onnx import TensorProto, helper

    import ember.passes.pipeline as pipeline_module
    from ember.engine.compile import compile_program
    from ember.runtime.errors import InternalCompilerError
    from ember.tests.tools.test_opt import BreakShapes

    passes = pipeline_module.available_passes()
    monkeypatch.setattr(
        pipeline_module, "available_passes", lambda: {**passes, "break-shapes": lambda: BreakShapes}
    )
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InternalCompilerError, match="after pass 'break-shapes'"):
        compile_program(model, pipeline="dce,cse,dce,break-shapes,dce", verify_each=True)


def test_an_attribute_equal_to_none_that_verified_is_still_checked() -> None:
    from xdsl.dialects.builtin import IntegerAttr, i8

    from ember.dialects.verification import _VERIFIED_ATTRIBUTES

    IntegerAttr(5, i8)
    assert IntegerAttr(5, i8) in _VERIFIED_ATTRIBUTES
    for _ in range(2):  # a failure is not remembered
        with pytest.raises(VerifyException, match="out of range for type i8"):
            IntegerAttr(300, i8)
