"""Runtime extents: how loops-level code learns the sizes of `?` dims (issue 10, foundation).

A memref type may have dynamic dims (`memref<?x768xf32>`: xDSL's DYNAMIC_INDEX, printed `?`).
At the LLVM level a memref stays a bare pointer to its first element; the size of each `?` dim
is an `index` value, as in MLIR:

- **Function arguments.** A function taking memrefs with `?` dims takes their sizes as `index`
  arguments, each marked with the argument attribute `ember.extent_of = array<i64: a, d, ...>`:
  this argument is the size of dim `d` of argument `a` (several pairs: one size shared by
  several buffers, such as the batch of two inputs). A kernel function (`kernel_function`)
  gets one such argument per `?` dim of its memref arguments, in argument and dim order,
  right after the memrefs (before the status record of a checking kernel): `append_extent_
  arguments`. A call passes `memref.dim` of its operands there (`extent_operands`).
- **Other memref values** get their sizes from their defining op's operands:
  `memref.alloc(%n)`, `memref.view %arena[%off][%n]`, a dynamic `memref.reinterpret_cast` or
  `memref.subview`.
- **Reading a size** is `memref.dim %buffer, %c0`: codegen resolves it to the value above (no
  code), and computes the row-major strides of a memref whose strides depend on its sizes
  (`memref<?x?xf32>`) once, where the memref is defined, not per access. A memref whose
  strides are static (`memref<?x768xf32>`: only the outermost dim is dynamic) is addressed
  exactly as a static one.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from xdsl.dialects import arith, func, memref
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DictionaryAttr,
    IndexType,
    IntegerAttr,
    MemRefType,
    i64,
)
from xdsl.ir import Attribute, Operation, SSAValue

EXTENT_OF = "ember.extent_of"


def memref_type(element: Attribute, shape: Sequence[int]) -> MemRefType:
    """`MemRefType(element, shape)`, one object per type: xDSL's constructor checks its shape
    against a type hint it builds anew each call (~0.1 ms), and lowering a kernel builds the
    same few types over and over. A type is a value, so sharing one is safe."""
    return _memref_type(element, tuple(shape))


@lru_cache(maxsize=4096)
def _memref_type(element: Attribute, shape: tuple[int, ...]) -> MemRefType:
    return MemRefType(element, shape)


def is_dynamic(dim: int) -> bool:
    """A `?` dim of a shape (xDSL's DYNAMIC_INDEX; any negative size)."""
    return dim < 0


def dynamic_dims(t: Attribute) -> list[int]:
    """Positions of the `?` dims of a memref (or shaped) type; [] for anything else."""
    if not isinstance(t, MemRefType):
        return []
    return [d for d, n in enumerate(t.get_shape()) if is_dynamic(n)]


def has_dynamic_dims(value: SSAValue | Attribute) -> bool:
    return bool(dynamic_dims(value if isinstance(value, Attribute) else value.type))


def extent_slots(arg_types: Sequence[Attribute]) -> list[tuple[int, int]]:
    """(argument, dim) of every `?` dim of `arg_types`, in the order a kernel function takes
    their sizes."""
    return [(a, d) for a, t in enumerate(arg_types) for d in dynamic_dims(t)]


def _set_arg_attr(fn: func.FuncOp, position: int, attrs: DictionaryAttr) -> None:
    count = len(fn.body.block.args)
    current = list(fn.arg_attrs.data) if fn.arg_attrs is not None else []
    current += [DictionaryAttr({})] * (count - len(current))
    current[position] = attrs
    fn.arg_attrs = ArrayAttr(current)


def append_extent_arguments(fn: func.FuncOp) -> list[SSAValue]:
    """One `index` argument per `?` dim of `fn`'s arguments, appended and marked
    `ember.extent_of`; returns them (empty for a function without `?` dims)."""
    block = fn.body.block
    slots = extent_slots([a.type for a in block.args])
    added: list[SSAValue] = []
    for arg, dim in slots:
        value = block.insert_arg(IndexType(), len(block.args))
        _set_arg_attr(fn, len(block.args) - 1, extent_attr([(arg, dim)]))
        added.append(value)
    if added:
        fn.update_function_type()
    return added


def extent_attr(pairs: Sequence[tuple[int, int]]) -> DictionaryAttr:
    flat = [x for pair in pairs for x in pair]
    return DictionaryAttr({EXTENT_OF: DenseArrayBase.from_list(i64, flat)})


def extent_arguments(fn: func.FuncOp) -> list[tuple[int, list[tuple[int, int]]]]:
    """(position of an `index` argument, [(memref argument, dim), ...] it is the size of) for
    each argument marked `ember.extent_of`."""
    if fn.arg_attrs is None:
        return []
    found = []
    for position, attrs in enumerate(fn.arg_attrs.data):
        if not isinstance(attrs, DictionaryAttr) or EXTENT_OF not in attrs.data:
            continue
        marked = attrs.data[EXTENT_OF]
        assert isinstance(marked, DenseArrayBase)
        values = [int(v) for v in marked.get_values()]
        found.append((position, list(zip(values[::2], values[1::2], strict=True))))
    return found


def dim_of(buffer: SSAValue, dim: int) -> list[Operation]:
    """`memref.dim %buffer, dim` (the ops, its result last)."""
    at = arith.ConstantOp(IntegerAttr(dim, IndexType()))
    return [at, memref.DimOp(buffer, at.result)]


def extent_operands(
    callee: func.FuncOp, operands: Sequence[SSAValue]
) -> tuple[list[Operation], list[SSAValue]]:
    """For a call of `callee` on `operands` (its memref arguments): the `memref.dim` ops that
    read the sizes its extent arguments take, and those sizes in argument order."""
    ops: list[Operation] = []
    sizes: list[SSAValue] = []
    for _, pairs in extent_arguments(callee):
        arg, dim = pairs[0]
        read = dim_of(operands[arg], dim)
        ops += read
        sizes.append(read[-1].results[0])
    return ops, sizes
