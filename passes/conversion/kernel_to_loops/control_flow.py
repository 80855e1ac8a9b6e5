"""Loop lowering of the kernel a graph.loop's scan outputs need: `kernel.insert_slice`.

The loops themselves are scf ops in the entry function (convert-graph-to-kernel builds them);
only the copy of one iteration's slice into the stacked output at the run-time iteration
index is a kernel.
"""

from __future__ import annotations

import math

from xdsl.dialects import func

from ember.core.target import Target
from ember.dialects import kernel
from ember.passes.conversion.kernel_to_loops.builder import kernel_function
from ember.passes.conversion.kernel_to_loops.flat_access import (
    copy_run,
    lanes_for,
    operand_types,
    shape,
    to_index,
)
from ember.passes.conversion.kernel_to_loops.registry import lowering


@lowering(kernel.InsertSliceOp)
def lower_insert_slice(op: kernel.InsertSliceOp, target: Target, name: str) -> func.FuncOp:
    row = math.prod(shape(op.input))
    rows = shape(op.output)[0]
    fn, b = kernel_function(name, operand_types(op))
    source, index, dest = fn.args
    # The index is the loop's own counter, always in range; the clamp keeps a wrong one from
    # ever writing outside the buffer.
    position = b.max_index(b.min_index(to_index(b, b.load(index, [])), rows - 1), 0)
    copy_run(b, source, 0, dest, b.mul(position, row), row, lanes_for(source, target))
    b.ret()
    return fn
