"""Ops defined on tensors (graph) and on buffers (kernel) from one description.

An op that exists at both levels (graph.softmax on tensors, kernel.softmax on memrefs in
destination-passing style) declares its properties, its checks and its numpy semantics
(`evaluate`, see numpy_eval.py) once, in a `TwinSpec` subclass beside the graph op, the way
MLIR's ODS shares traits between ops. The graph op and the kernel op each add only what
differs: operands and results (a graph result is a kernel `output` operand of the same name),
traits, options and the assembly format.
`convert-graph-to-kernel` converts a pair generically (`kernel.twin_of`,
`shared_properties`): adding a twin is one spec and its two classes, nothing in
graph_to_kernel.
"""

from __future__ import annotations

from xdsl.ir import Attribute, Operation
from xdsl.irdl import IRDLOperation

# Properties an xDSL option adds per op (operand/result segment sizes): never shared.
_SEGMENT_SIZES = ("operandSegmentSizes", "resultSegmentSizes")


class TwinSpec:
    """Base of a description shared by a graph op and its kernel twin: `prop_def` fields,
    ClassVar constants and a `verify_` written against names both forms have. It defines no
    operands, results, traits or `irdl_options` (xDSL collects options from every base)."""


def spec_of(op_type: type[Operation]) -> type[TwinSpec] | None:
    """The TwinSpec an op class is built from, or None."""
    return next(
        (c for c in op_type.__mro__[1:] if issubclass(c, TwinSpec) and c is not TwinSpec), None
    )


def shared_properties(op: IRDLOperation, twin: type[IRDLOperation]) -> dict[str, Attribute]:
    """`op`'s properties that `twin` also defines, in `twin`'s definition order."""
    own = type(op).get_irdl_definition().properties
    return {
        name: op.properties[name]
        for name in twin.get_irdl_definition().properties
        if name in own and name in op.properties and name not in _SEGMENT_SIZES
    }


def tensor_format(*operands: str) -> str:
    """The assembly format of a graph op on `operands` with one result `output`:
    $a `,` $b attr-dict `:` type($a) `,` type($b) `->` type($output)."""
    types = " `,` ".join(f"type(${name})" for name in operands)
    names = " `,` ".join("$" + name for name in operands)
    return f"{names} attr-dict `:` {types} `->` type($output)"


def buffer_format(*inputs: str) -> str:
    """The assembly format of a kernel op reading `inputs` and writing its last operand,
    `output` (destination-passing style):
    $a `,` $b `->` $output attr-dict `:` type($a) `,` type($b) `->` type($output)."""
    types = " `,` ".join(f"type(${name})" for name in inputs)
    names = " `,` ".join("$" + name for name in inputs)
    return f"{names} `->` $output attr-dict `:` {types} `->` type($output)"
