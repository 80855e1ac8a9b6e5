"""Conventions of ember's entry function, shared by the passes that reshape its signature.

The frontend marks the program's entry `func.func` with `ember.input_names` and
`ember.output_names` (the ONNX graph's names, in argument/result order); bufferization turns
its results into output arguments; memory planning appends the arena and weight-blob arguments.
lower-kernels-to-loops appends the status record (runtime/status.py). Final ABI:
(inputs..., outputs..., arena: memref<Nxi8>, weights: memref<Mxi8>, status: memref<8xi64>).

Graph and kernel ops may carry `ember.origin` = {op_type, node}: the ONNX node they come from,
so that a kernel's run-time error can name it; a fused op also lists, in `absorbed`, the nodes
of the ops folded into it (a Conv's BatchNormalization, Add and Relu).
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr
from xdsl.ir import Attribute, BlockArgument, Operation

ORIGIN = "ember.origin"
STATUS_ROLE = "status"


def entry_function(module: ModuleOp) -> func.FuncOp:
    """The program's entry: the function marked with `ember.input_names`."""
    for op in module.ops:
        if isinstance(op, func.FuncOp) and "ember.input_names" in op.attributes:
            return op
    raise ValueError("module has no entry function (a func.func with ember.input_names)")


def append_argument(fn: func.FuncOp, type: Attribute, role: str) -> BlockArgument:
    """Add a trailing argument named by `ember.role` and keep the signature consistent."""
    block = fn.body.block
    arg = block.insert_arg(type, len(block.args))
    attrs = (
        list(fn.arg_attrs.data) if fn.arg_attrs else [DictionaryAttr({})] * (len(block.args) - 1)
    )
    attrs.append(DictionaryAttr({"ember.role": StringAttr(role)}))
    fn.arg_attrs = ArrayAttr(attrs)
    fn.update_function_type()
    return arg


def argument_with_role(fn: func.FuncOp, role: str) -> BlockArgument | None:
    """The argument `append_argument` added with `role`, if any."""
    if fn.arg_attrs is None:
        return None
    for arg, attrs in zip(fn.body.block.args, fn.arg_attrs.data):
        if isinstance(attrs, DictionaryAttr) and attrs.data.get("ember.role") == StringAttr(role):
            return arg
    return None


def set_origin(op: Operation, op_type: str, node: str) -> None:
    op.attributes[ORIGIN] = DictionaryAttr(
        {"op_type": StringAttr(op_type), "node": StringAttr(node)}
    )


def absorb_origins(fused: Operation, *absorbed: Operation) -> Operation:
    """Record on `fused` (which has an origin) the ONNX nodes of the ops folded into it, in
    `ember.origin`'s `absorbed` list; returns `fused`. An op of unknown origin adds nothing."""
    attr = fused.attributes.get(ORIGIN)
    if not isinstance(attr, DictionaryAttr):
        return fused
    nodes = absorbed_nodes(fused)
    own = origin_of(fused).get("node")
    for op in absorbed:
        for node in [origin_of(op).get("node", ""), *absorbed_nodes(op)]:
            if node and node != own and node not in nodes:
                nodes.append(node)
    if nodes:
        fields = dict(attr.data)
        fields["absorbed"] = ArrayAttr([StringAttr(n) for n in nodes])
        fused.attributes[ORIGIN] = DictionaryAttr(fields)
    return fused


def absorbed_nodes(op: Operation) -> list[str]:
    """The ONNX nodes fused into `op` besides its own origin (`absorb_origins`)."""
    attr = op.attributes.get(ORIGIN)
    absorbed = attr.data.get("absorbed") if isinstance(attr, DictionaryAttr) else None
    if not isinstance(absorbed, ArrayAttr):
        return []
    return [a.data for a in absorbed.data if isinstance(a, StringAttr)]


def origin_of(op: Operation) -> dict[str, str]:
    """{op_type, node} of the ONNX node `op` comes from; empty when unknown."""
    attr = op.attributes.get(ORIGIN)
    if not isinstance(attr, DictionaryAttr):
        return {}
    return {k: v.data for k, v in attr.data.items() if isinstance(v, StringAttr)}


def describe_op(op: Operation) -> str:
    """`MaxPool node 'pool1' (kernel.pool)`, or just the op's name when its origin is unknown."""
    origin = origin_of(op)
    if origin.get("op_type"):
        return f"{origin['op_type']} node '{origin.get('node', '?')}' ({op.name})"
    return op.name
