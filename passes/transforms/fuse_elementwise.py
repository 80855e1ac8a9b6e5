"""fuse-elementwise: merge a chain of elementwise kernels into one loop.

A `kernel.elementwise` whose output buffer is read only by one later elementwise kernel, with
the same shape (no broadcasting of the intermediate), is inlined into that consumer: the
consumer's body computes the producer's scalar expression itself, and the intermediate buffer
disappears. Buffers are written once before memory planning, so the producer's inputs still
hold their values where the consumer runs.
"""

from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects import memref, scf
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region, SSAValue
from xdsl.passes import ModulePass

from ember.dialects import kernel
from ember.passes.program import entry_function


def _sole_consumer(producer: kernel.ElementwiseOp) -> kernel.ElementwiseOp | None:
    out = producer.output
    if not isinstance(out.owner, memref.AllocOp):
        return None
    readers = [use.operation for use in out.uses if use.operation is not producer]
    if len(readers) != 1 or not isinstance(readers[0], kernel.ElementwiseOp):
        return None
    consumer = readers[0]
    if consumer.parent_block() is not producer.parent_block():
        return None  # never move a kernel into (or out of) a loop or branch body
    if consumer.output is out or out.type != consumer.output.type:
        return None
    inputs = {*producer.inputs, *consumer.inputs} - {out}
    if len(inputs) + 1 > kernel.MAX_OPERANDS:  # a call takes every buffer as an argument
        return None
    return consumer


def _fuse(producer: kernel.ElementwiseOp, consumer: kernel.ElementwiseOp) -> kernel.ElementwiseOp:
    """One elementwise op computing consumer(producer(...)); inputs deduplicated."""
    inputs: list[SSAValue] = []
    for v in [*producer.inputs, *consumer.inputs]:
        if v is not producer.output and v not in inputs:
            inputs.append(v)
    block = Block(arg_types=[v.type.get_element_type() for v in inputs])  # type: ignore[attr-defined]
    arg_of = dict(zip(inputs, block.args))

    mapping: dict[SSAValue, SSAValue] = {
        a: arg_of[v] for a, v in zip(producer.body.block.args, producer.inputs)
    }
    for op in producer.body.block.ops:
        if isinstance(op, kernel.YieldOp):
            produced = mapping.get(op.value, op.value)
            break
        block.add_op(op.clone(value_mapper=mapping))
    for a, v in zip(consumer.body.block.args, consumer.inputs):
        mapping[a] = produced if v is producer.output else arg_of[v]
    for op in consumer.body.block.ops:
        block.add_op(op.clone(value_mapper=mapping))
    return kernel.ElementwiseOp(inputs, consumer.output, Region(block))


class FuseElementwise(ModulePass):
    """Inlines single-use elementwise producers into their elementwise consumer."""

    name = "fuse-elementwise"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        entry = entry_function(op)
        # The entry's block and the bodies of the scf ops a graph.loop/graph.if became: in a
        # body, every kernel writes a buffer of its own before the copies that end an
        # iteration, so a producer's inputs still hold their values at its consumer.
        blocks = [entry.body.block] + [
            region.block
            for inner in entry.walk()
            if isinstance(inner, scf.WhileOp | scf.IfOp)
            for region in inner.regions
            if region.blocks
        ]
        for block in blocks:
            self._fuse_in(block)

    @staticmethod
    def _fuse_in(block: Block) -> None:
        changed = True
        while changed:
            changed = False
            for producer in [o for o in block.ops if isinstance(o, kernel.ElementwiseOp)]:
                consumer = _sole_consumer(producer)
                if consumer is None:
                    continue
                fused = _fuse(producer, consumer)
                block.insert_op_before(fused, consumer)
                alloc = producer.output.owner
                for dead in (consumer, producer, alloc):
                    dead.detach()  # type: ignore[union-attr]
                    dead.erase()  # type: ignore[union-attr]
                changed = True
                break
