"""place-weights: lay all weights out in one blob and read them through views of it.

Each distinct `kernel.weight` gets a 64-byte aligned offset in the blob (order of first use);
the op becomes a `memref.view` of a trailing `weights` argument. The layout is recorded on the
entry function as `ember.weight_offsets` so the runtime can build the blob from the store.

A weight of a page (4 KiB) or more starts on a page and has its pages to itself (the next
weight starts on the next page): the variants of one model, compiled per input shape, then
map one copy of each such weight they share into their blobs (engine/weight_pool.py), whatever
the other weights around it (a constant folded per shape moves it by whole pages only).
"""

from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects import arith, memref
from xdsl.dialects.builtin import (
    DictionaryAttr,
    IndexType,
    IntegerAttr,
    MemRefType,
    ModuleOp,
    i8,
)
from xdsl.passes import ModulePass

from ember.dialects import kernel
from ember.passes.program import append_argument, entry_function
from ember.passes.transforms.plan_memory import ALIGNMENT, byte_size

PAGE = 4096


def _place(total: int, size: int) -> tuple[int, int]:
    """(offset, end) of a weight of `size` bytes placed after `total` bytes."""
    alignment = PAGE if size >= PAGE else ALIGNMENT
    offset = (total + alignment - 1) // alignment * alignment
    return offset, offset + (size + alignment - 1) // alignment * alignment


class PlaceWeights(ModulePass):
    """Replaces kernel.weight ops with memref.view slices of one weight-blob argument."""

    name = "place-weights"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        fn = entry_function(op)
        block = fn.body.block
        weight_ops = [o for o in block.ops if isinstance(o, kernel.WeightOp)]
        offsets: dict[str, int] = {}
        total = 0
        for w in weight_ops:
            name = w.ref.data
            if name not in offsets:
                offsets[name], total = _place(total, byte_size(w.output.type))  # type: ignore[arg-type]
        blob = append_argument(fn, MemRefType(i8, [max(total, ALIGNMENT)]), "weights")
        for w in weight_ops:
            offset = arith.ConstantOp(IntegerAttr(offsets[w.ref.data], IndexType()))
            view = memref.ViewOp(blob, offset, [], w.output.type)
            block.insert_ops_before([offset, view], w)
            w.output.replace_all_uses_with(view.result)
            w.detach()
            w.erase()
        fn.attributes["ember.weight_offsets"] = DictionaryAttr(
            {name: IntegerAttr(off, 64) for name, off in offsets.items()}
        )
        fn.attributes["ember.weights_bytes"] = IntegerAttr(total, 64)
