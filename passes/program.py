"""Conventions of ember's entry function, shared by the passes that reshape its signature.

The frontend marks the program's entry `func.func` with `ember.input_names` and
`ember.output_names` (the ONNX graph's names, in argument/result order); bufferization turns
its results into output arguments; memory planning appends the arena and weight-blob arguments.
Final ABI: (inputs..., outputs..., arena: memref<Nxi8>, weights: memref<Mxi8>).
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr
from xdsl.ir import Attribute, BlockArgument


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
