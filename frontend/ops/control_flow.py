"""Control flow whose decision is known at compile time.

Exporters write `If` on a shape (`Shape -> Gather -> Equal -> If`) to support inputs that
ember pins to one static shape: the condition folds to a constant at import, and the taken
branch's nodes are imported in place of the `If` (they read outer-scope values by name, as the
ONNX spec lets them). The other branch is never imported, so ops it alone uses need no
support. An `If` whose condition is only known at run time is refused: regions in the graph
dialect are not built yet.
"""

from __future__ import annotations

from collections.abc import Sequence

from ember.frontend.context import (
    Const,
    ImportContext,
    Node,
    Value,
)
from ember.frontend.registry import converts


@converts("If")
def _if(imp: ImportContext, node: Node) -> Sequence[Value]:
    condition = imp.required(node, 0)
    if not isinstance(condition, Const):
        raise node.unsupported(
            "the condition is computed at run time; ember folds an If only when its condition "
            "is a compile-time constant (e.g. a comparison of static shapes)"
        )
    if condition.array.size != 1:
        raise node.error(
            f"the condition must hold one element, it has shape {condition.array.shape}"
        )
    taken = node.attrs["then_branch" if bool(condition.array.reshape(())) else "else_branch"]
    if len(taken.output) != len(node.proto.output):
        raise node.error(
            f"the taken branch '{taken.name}' has {len(taken.output)} outputs, the If has "
            f"{len(node.proto.output)}"
        )
    inner = {t.name: t for t in taken.initializer}
    for name, tensor in inner.items():
        imp.env[name] = Const(imp.tensor_array(tensor), name)
    for proto in taken.node:
        imp.import_node(proto)
    outputs = []
    for out in taken.output:
        if out.name not in imp.env:
            raise node.error(f"branch output '{out.name}' is not produced in '{taken.name}'")
        outputs.append(imp.env[out.name])
    return outputs
