"""Compile once: one program for every input shape of a model with symbolic dims (issue 10:
the FFN block, the BERT encoder, then conv networks).

A model whose named symbolic dims (`dim_param`) only size kernels that have runtime-extent
lowerings (dialects/extents.py, `@lowering(..., runtime_extents=True)`) is compiled ONCE:

1. **Probe.** The model is imported and taken through the pipeline up to memory planning (graph
   passes, convert-graph-to-kernel, fuse-elementwise) at three probe shapes: each named dim a
   distinct prime per probe (2, 3, 5, 7, 11, 13, ...: within its `dynamic_dims` range); in a
   model with convolutions, an image's height and width SPATIAL_PROBES (67 / 142 / 217, ...).
   The largest probe is imported first and records the kernel choices made from sizes
   (core/size_choices.py), which the others replay.
2. **Unify.** The three kernel programs must be the same op for op: same ops, operands,
   attributes and weights (by content). Every dim of every memref type is either equal in the
   three (static) or an `Extent`: a constant times a product of named dims and of floors of
   them (`Term`: floor((a x + b) / d) of a dim x, or of another term after a Resize x2: a
   convolution's or pooling's output size). A value is
   fitted where it is first used (`_Fitter`): first by what the ops that define and use it
   say (a convolution's, pooling's or slice's output derived from its input and attributes,
   another operand's dim at the same place), else a constant times the fewest atoms that
   give its sizes at all three probes; two that both fit are refused. It becomes `?`, its
   expression kept in a side table. Anything else refuses the path (`CompileOnceRefusal`,
   with the reason): a constant folded from a shape (except the leading rows of a position
   table the model slices by a length: the whole table, viewed), a `?` on an op that is not
   a kernel with a runtime-extent lowering or a reshape, a kernel whose operands have `?` at
   the same place with different expressions (the `?` contract: a `?` names no symbol,
   kernels take such sizes to be equal; transpose, gather, reshape, attention, matmul,
   concat, slice, convolution and pooling are checked exactly), a size no such product
   gives. An unnamed symbolic input dim (neither dim_value nor dim_param) is a symbol of
   its own, `<input>:<axis>` (name_anonymous_dims).
3. **Bufferize.** The entry takes one `index` argument per symbol (then one per other
   expression its inputs and outputs have), after the outputs, marked `ember.extent_of`; each
   buffer with `?` dims is `memref.alloc(%sizes)`, the sizes index arithmetic on those
   arguments. plan-memory places them with its offset program and emits `main_arena_bytes`;
   then each reshape with `?` outputs becomes a view sized by its expressions.
4. **Run** (`OnceCompiledModel`, over runtime/once.py's `OnceProgram`, which also runs the
   artifact `ember compile` writes of it): the symbols' sizes are read from the input arrays
   (each at least its minimum: every floor >= 1), the outputs allocated by their
   expressions, the arena sized by `main_arena_bytes(dims)` and grown when a larger shape
   comes.

`SpecializingModel` (engine/specialize.py) tries this first and falls back to specialisation
when it is refused (debug log `ember.specialize`, `model.compile_once_refusal`).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
from xdsl.dialects import arith, func, memref
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    IndexType,
    IntegerAttr,
    MemRefType,
    ModuleOp,
    StringAttr,
)
from xdsl.ir import Operation, SSAValue

from ember.dialects.extents import extent_attr, is_dynamic
from ember.runtime.errors import EmberError
from ember.runtime.once import (
    Dim,
    Extent,
    IOSpec,
    OnceProgram,
    OnceSignature,
    Term,
    strided,
)

if TYPE_CHECKING:
    import os

    import onnx

    from ember.core.context import EmberContext
    from ember.core.target import Target
    from ember.engine.compile import CompileReport
    from ember.engine.shapes import Pinning

PROBES = 3
# Probe sizes of the spatial dims, a row per dim (residues mod 32: 3, 14, 25; 7, 20, 1;
# 9, 26, 5; 75 apart, so that maps 32 or 64 times smaller still differ): see probe_sizes.
SPATIAL_PROBES = ((67, 142, 217), (71, 148, 225), (73, 154, 229))
# The most atoms (dims, terms) a fitted product has.
MAX_ATOMS = 4
# Where the unified kernel program continues: the passes from here on run once.
FIRST_SHARED_PASS = "plan-memory"
# The function attribute keeping the entry's extent arguments' expressions (JSON).
EXTENTS_KEY = "ember.extent_expressions"
# Ops that may carry `?` types besides kernels with runtime-extent lowerings.
# (kernel.reshape: lower-kernels-to-loops refuses the `?` views it cannot size.)
_PLAIN_OPS = frozenset(("memref.alloc", "func.return", "kernel.reshape"))


class CompileOnceRefusal(Exception):
    """The model cannot be compiled once for every shape (the reason); it is specialised."""


def anonymous_dim_name(input_name: str, axis: int) -> str:
    """The symbol of an input dim declared with neither dim_value nor dim_param."""
    return f"{input_name}:{axis}"


def name_anonymous_dims(pinning: Pinning) -> Pinning:
    """`pinning` with each unnamed symbolic dim of an unpinned input (some exporters write
    them) named `<input>:<axis>`: a symbol of its own, never shared with another input's
    (nothing says they are equal; kernels that need them equal refuse the path, and the
    probes, distinct primes, disagree). Only the signature changes: the probes import the
    model at the concrete shapes _probe_shapes gives from these names."""
    import dataclasses

    taken = {d for i in pinning.signature.inputs for d in i.dims or () if isinstance(d, str)}

    def named(info: Any) -> Any:
        if info.dtype_only or info.name in pinning.shapes or info.dims is None:
            return info
        dims = []
        for axis, dim in enumerate(info.dims):
            if dim is None:
                dim = anonymous_dim_name(info.name, axis)
                while dim in taken:  # a dim_param spelled like it: keep them apart
                    dim += "'"
                taken.add(dim)
            dims.append(dim)
        return dataclasses.replace(info, dims=tuple(dims))

    inputs = tuple(named(i) for i in pinning.signature.inputs)
    if inputs == pinning.signature.inputs:
        return pinning
    signature = dataclasses.replace(pinning.signature, inputs=inputs)
    return dataclasses.replace(pinning, signature=signature)


def model_symbols(pinning: Pinning) -> list[str]:
    """The named dims a run sizes (unpinned `dim_param`s), in order of appearance; refused
    when an input has an unnamed symbolic dim or no shape."""
    symbols: dict[str, None] = {}
    for info in pinning.signature.inputs:
        if info.dtype_only or info.name in pinning.shapes:
            continue
        if info.dims is None:
            raise CompileOnceRefusal(f"input '{info.name}' has no declared shape")
        for axis, dim in enumerate(info.dims):
            if dim is None:
                raise CompileOnceRefusal(
                    f"dim {axis} of input '{info.name}' is symbolic without a name"
                )
            if isinstance(dim, str) and dim not in pinning.named:
                symbols[dim] = None
    if not symbols:
        raise CompileOnceRefusal("no symbolic dim")
    return list(symbols)


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, math.isqrt(n) + 1))


def probe_sizes(
    symbols: Sequence[str],
    ranges: Mapping[str, tuple[int, int]],
    spatial: Sequence[str] = (),
) -> list[dict[str, int]]:
    """PROBES sets of sizes: a different prime for every symbol in every probe (the smallest
    unused ones from the bottom of the symbol's range, at least 2), within the range. A
    `spatial` symbol (an image's height or width) takes SPATIAL_PROBES (moved up by a
    multiple of 64 past the bottom of its range) when its range holds them: large enough that strided convolutions leave maps of several pixels (as every
    shape served will), of different residues mod 2, 4, 8, ... so that floors of the dim
    with different offsets differ at some probe (they are told apart, or refused as
    ambiguous, never confused)."""
    used: set[int] = set()
    probes: list[dict[str, int]] = [{} for _ in range(PROBES)]
    spatial_index = {s: k for k, s in enumerate(x for x in symbols if x in spatial)}
    for index, probe in enumerate(probes):
        for symbol in symbols:
            lo, hi = ranges.get(symbol, (1, 1 << 62))
            if symbol in spatial_index:
                row = spatial_index[symbol]
                sizes = list(SPATIAL_PROBES[row % len(SPATIAL_PROBES)])
                # Moved up by multiples of 64 (the residues kept) past the range's bottom, and
                # past the other rows' when there are more dims than rows.
                shift = 64 * max(row // len(SPATIAL_PROBES), -(-(lo - sizes[0]) // 64))
                sizes = [n + shift for n in sizes]
                if all(lo <= n <= hi for n in sizes):
                    used.add(sizes[index])
                    probe[symbol] = sizes[index]
                    continue
            # Primes are dense enough that a range holding PROBES x symbols of them is found
            # within a few hundred steps; a range that has too few is refused.
            size = next(
                (
                    n
                    for n in range(max(lo, 2), min(hi, max(lo, 2) + 1000) + 1)
                    if n not in used and _is_prime(n)
                ),
                None,
            )
            if size is None:
                raise CompileOnceRefusal(
                    f"the range {lo}..{hi} of dim '{symbol}' has too few probe sizes "
                    f"({PROBES} distinct primes per dim)"
                )
            used.add(size)
            probe[symbol] = size
    return probes


# Models with convolutions, poolings or resizes: ops whose sizes are floors of the input's.
SPATIAL_OPS = frozenset(
    ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool",
     "LpPool", "Resize", "Upsample")
)  # fmt: skip


def spatial_symbols(model: onnx.ModelProto, pinning: Pinning, symbols: Sequence[str]) -> list[str]:
    """The symbols that size an image (an input axis past the first, never the first) of a
    model with convolutions, poolings or resizes: probed at SPATIAL_PROBES."""
    if not any(n.op_type in SPATIAL_OPS for n in model.graph.node):
        return []
    leading = {
        info.dims[0]
        for info in pinning.signature.inputs
        if info.dims and isinstance(info.dims[0], str)
    }
    return [s for s in symbols if s not in leading]


class _Fitter:
    """Sizes at the probes as expressions: a static size, an expression derived from the op
    (a hint: an operand's dim at the same place, a convolution's output size), or a constant
    times a product of atoms (the named dims, and the affine-floor terms met so far), fitted
    on the first probe and checked on all; two products that fit equally are refused."""

    def __init__(self, probes: Sequence[Mapping[str, int]], symbols: Sequence[str]) -> None:
        self.probes = probes
        self.atoms: list[Extent] = [Extent(1, (s,)) for s in symbols]

    def values(self, extent: Extent) -> list[int]:
        return [extent.value(p) for p in self.probes]

    def note(self, dims: Sequence[Dim]) -> None:
        """Every term of these dims is an atom of later products."""
        for d in dims:
            if isinstance(d, Extent):
                for term in d.terms:
                    atom = Extent(1, (), (term,))
                    if atom not in self.atoms:
                        self.atoms.append(atom)

    def fit(self, sizes: Sequence[int], hints: Sequence[Dim] = ()) -> Dim:
        # A hint first: a size that varies with the dims may still be equal at the probes
        # (a map 32x smaller than the image), and the ops that define and use it say so.
        for hint in hints:
            if isinstance(hint, Extent) and self.values(hint) == list(sizes):
                return hint
        if all(s == sizes[0] for s in sizes):
            return sizes[0]
        for count in range(1, min(len(self.atoms), MAX_ATOMS) + 1):
            found: set[Extent] = set()
            for chosen in itertools.combinations(self.atoms, count):
                product = functools.reduce(Extent.times, chosen)
                base = product.value(self.probes[0])
                if base <= 0 or sizes[0] % base:
                    continue
                extent = product.times(sizes[0] // base)
                if extent.factor > 0 and self.values(extent) == list(sizes):
                    found.add(extent)
            if len(found) > 1:
                raise CompileOnceRefusal(
                    f"sizes {list(sizes)} at probes {[dict(p) for p in self.probes]} fit "
                    f"several expressions ({', '.join(sorted(map(str, found)))})"
                )
            if found:
                return found.pop()
        raise CompileOnceRefusal(
            f"a size that is no product of the symbolic dims: {list(sizes)} at probes "
            f"{[dict(p) for p in self.probes]}"
        )


def fit_dim(
    sizes: Sequence[int], probes: Sequence[Mapping[str, int]], symbols: Sequence[str]
) -> Dim:
    """A dim's sizes in the probes as a static size or a constant times a product of the
    symbols (fitted on the first probe, checked on the rest); CompileOnceRefusal when none
    or several fit."""
    return _Fitter(probes, symbols).fit(sizes)


def _unified_type(
    types: Sequence[Any], fitter: _Fitter, hints: Sequence[Sequence[Dim]], where: str
) -> tuple[Any, list[Dim]]:
    first = types[0]
    if all(t == first for t in types):
        return first, []
    if not all(isinstance(t, MemRefType) for t in types):
        raise CompileOnceRefusal(
            f"{where}: types differ between probe shapes: {types[0]}, {types[1]}"
        )
    shapes = [t.get_shape() for t in types]
    if len({len(s) for s in shapes}) != 1 or len({str(t.get_element_type()) for t in types}) != 1:
        raise CompileOnceRefusal(
            f"{where}: types differ between probe shapes: {types[0]}, {types[1]}"
        )
    from xdsl.dialects.builtin import NoneAttr

    if not isinstance(first.layout, NoneAttr):
        raise CompileOnceRefusal(
            f"{where}: a strided buffer whose shape depends on the input shapes"
        )
    rank = len(shapes[0])
    dims = [
        fitter.fit([s[d] for s in shapes], [h[d] for h in hints if len(h) == rank])
        for d in range(rank)
    ]
    fitter.note(dims)
    unified = MemRefType(
        first.get_element_type(), [DYNAMIC_INDEX if isinstance(d, Extent) else d for d in dims]
    )
    return unified, dims


@dataclass
class UnifiedProgram:
    """The kernel program of probe 0 with `?` dims, and each `?` value's expressions."""

    module: ModuleOp
    ctx: EmberContext
    symbols: list[str]
    extents: dict[SSAValue, list[Dim]]
    # Weights holding a whole table of which the kernels read the leading rows: the axis
    # and the rows' extent (bufferize_extents views them).
    prefix_views: dict[SSAValue, tuple[int, Extent]] = field(default_factory=dict)
    # The largest size a symbol may take (a table's rows).
    limits: dict[str, int] = field(default_factory=dict)
    # The smallest size a symbol may take (every affine-floor term >= 1).
    minimums: dict[str, int] = field(default_factory=dict)
    # After bufferize_extents: the index value of an Extent, its ops inserted before an op.
    size_of: Any = None


def reshapes_by_extents(unified: UnifiedProgram) -> None:
    """Every `kernel.reshape` with `?` output dims as a view sized by its expressions
    (after plan-memory, which keeps a reshape's input alive as long as the reshape's uses)."""
    from ember.dialects import kernel

    for op in list(_entry(unified.module).walk()):
        if isinstance(op, kernel.ReshapeOp) and op.output in unified.extents:
            _reshape_by_extents(op, unified.extents, unified.size_of)


def _entry(module: ModuleOp) -> func.FuncOp:
    from ember.passes.program import entry_function

    return entry_function(module)


def unify(
    programs: Sequence[tuple[ModuleOp, EmberContext]],
    probes: Sequence[Mapping[str, int]],
    symbols: Sequence[str],
    sliced_tables: Mapping[str, np.ndarray] | None = None,
) -> UnifiedProgram:
    """The probes' kernel programs as one with `?` dims (types changed in place in the
    first); CompileOnceRefusal naming what differs.

    A value's dims are fitted where it is first used (kernels write into buffers allocated
    before them): with the dims of the ops that define and use it as hints, a convolution's
    or pooling's output derived from its input and attributes (`_derived_dims`)."""
    modules = [m for m, _ in programs]
    walks = [list(m.walk()) for m in modules]
    if len({len(w) for w in walks}) != 1:
        raise CompileOnceRefusal(
            "the programs at the probe shapes differ in their ops ("
            + ", ".join(str(len(w)) for w in walks)
            + " ops)"
            + _first_difference(walks, probes)
        )
    values: list[dict[SSAValue, SSAValue]] = [{} for _ in modules]  # probe value -> probe 0's
    extents: dict[SSAValue, list[Dim]] = {}
    # Values not fitted yet: probe 0's value -> (its type at every probe, where it is defined).
    pending: dict[SSAValue, tuple[list[Any], str]] = {}
    fitter = _Fitter(probes, symbols)
    weights = [ctx.weights for _, ctx in programs]
    # Weights that are the leading rows of a sliced table: value -> (key, table, axis, extent).
    prefixes: dict[SSAValue, tuple[str, np.ndarray, int, Extent]] = {}

    def record(group: Sequence[Sequence[SSAValue]], where: str) -> None:
        for k, vs in enumerate(zip(*group, strict=True)):
            for probe, v in enumerate(vs):
                values[probe][v] = vs[0]
            pending[vs[0]] = ([v.type for v in vs], f"{where} #{k}")

    def resolve(value: SSAValue, user: Operation | None) -> None:
        types, where = pending.pop(value)
        hints = _hints(value, user, extents)
        unified, dims = _unified_type(types, fitter, hints, where)
        if dims:
            extents[value] = dims
            # SSAValue has no type setter: the value keeps its uses, only its type changes.
            value._type = unified  # noqa: SLF001

    for ops in zip(*walks, strict=True):
        op = ops[0]
        where = f"'{op.name}'"
        if any(
            o.name != op.name
            or len(o.operands) != len(op.operands)
            or len(o.results) != len(op.results)
            or len(o.regions) != len(op.regions)
            for o in ops
        ):
            raise CompileOnceRefusal(
                f"the programs at the probe shapes differ at {where}: "
                + " vs ".join(o.name for o in ops)
            )
        for probe, o in enumerate(ops):
            mapped = [values[probe].get(v) for v in o.operands]
            if mapped != [values[0].get(v) for v in op.operands] or None in mapped:
                raise CompileOnceRefusal(
                    f"the programs at the probe shapes differ in the operands of {where}"
                )
        if isinstance(op, func.FuncOp):
            if any(o.sym_name != op.sym_name for o in ops):
                raise CompileOnceRefusal(
                    "the programs at the probe shapes have different functions"
                )
        else:
            for o in ops[1:]:
                if o.attributes != op.attributes or o.properties != op.properties:
                    raise CompileOnceRefusal(
                        f"{where} has attributes that depend on the input shapes: {_attrs(op)} vs {_attrs(o)}"
                    )
        for operand in op.operands:
            if operand in pending:
                resolve(operand, op)
        if op.name == "kernel.weight":
            key = op.ref.data  # type: ignore[attr-defined]
            arrays = [w[key] for w in weights]
            if any(
                a.shape != arrays[0].shape
                or a.dtype != arrays[0].dtype
                or not np.array_equal(a, arrays[0])
                for a in arrays[1:]
            ):
                prefix = _prefix_of_table(arrays, probes, symbols, sliced_tables or {})
                if prefix is None:
                    raise CompileOnceRefusal(
                        f"weight '{key}' depends on the input shapes (a constant folded from "
                        f"a shape{_origin_text(op)})"
                    )
                prefixes[op.results[0]] = (key, *prefix)
        for region_ops in zip(*(o.regions for o in ops), strict=True):
            for blocks in zip(*(r.blocks for r in region_ops), strict=True):
                record([b.args for b in blocks], f"{where} argument")
        record([o.results for o in ops], f"{where} result")
    for value in list(pending):  # never used: fitted from where they are defined
        resolve(value, None)
    for op in modules[0].walk():
        if not (op.results and op.results[0] in prefixes):
            _check_dynamic_use(op, extents)
    program = UnifiedProgram(modules[0], programs[0][1], list(symbols), extents)
    for dims in extents.values():
        for d in dims:
            for term in d.terms if isinstance(d, Extent) else ():
                smallest = program.minimums.get(term.symbol, 1)
                program.minimums[term.symbol] = max(smallest, term.smallest())
    for value, (key, table, axis, extent) in prefixes.items():
        program.prefix_views[value] = (axis, extent)
        program.ctx.weights[key] = table
        # The weight is the whole table; bufferize_extents views its leading rows.
        value._type = MemRefType(value.type.get_element_type(), list(table.shape))  # noqa: SLF001
        if extent.symbols[0] in program.limits:
            program.limits[extent.symbols[0]] = min(
                program.limits[extent.symbols[0]], table.shape[axis]
            )
        else:
            program.limits[extent.symbols[0]] = table.shape[axis]
    return program


def _first_difference(
    walks: Sequence[Sequence[Operation]], probes: Sequence[Mapping[str, int]]
) -> str:
    """`: first at ...` naming the first op that differs between the probes' programs and
    the ONNX nodes it comes from (the model lowers differently at different sizes: a Resize
    to a size read from a shape, a crop that is whole at some sizes only, ...)."""
    for k, ops in enumerate(zip(*walks, strict=False)):
        if len({o.name for o in ops}) != 1:
            shown = "; ".join(
                f"{o.name}{_origin_text(_with_origin(walk, k))} at {dict(p)}"
                for o, walk, p in zip(ops, walks, probes, strict=True)
            )
            return f": first at op {k}: {shown}"
    return ""


def _with_origin(walk: Sequence[Operation], k: int) -> Operation:
    """walk[k], or the first op after it that records the ONNX node it comes from."""
    return next((o for o in walk[k:] if "ember.origin" in o.attributes), walk[k])


def _origin_text(op: Operation) -> str:
    """`: ONNX node 'name' (Op)` from an op's `ember.origin`, or nothing."""
    origin = op.attributes.get("ember.origin")
    if origin is None:
        return ""
    fields = getattr(origin, "data", {})
    node, op_type = fields.get("node"), fields.get("op_type")
    if node is None or op_type is None:
        return ""
    return f": ONNX node '{node.data}' ({op_type.data})"


def _hints(
    value: SSAValue, user: Operation | None, extents: Mapping[SSAValue, list[Dim]]
) -> list[list[Dim]]:
    """Dims `value` may have, from the ops that define and use it: a convolution's or
    pooling's output derived from its input, then the fitted operands' dims (the same
    place of an operand of the same rank: elementwise, concat, a copy)."""
    hints: list[list[Dim]] = []
    if user is not None:
        derived = _derived_dims(user, extents)
        if derived is not None and value is _written(user):
            hints.append(derived)
    for op in (user, value.owner if isinstance(value.owner, Operation) else None):
        if op is None:
            continue
        hints += [extents[v] for v in op.operands if v is not value and v in extents]
    return hints


_SPATIAL_KERNELS = ("kernel.conv2d", "kernel.qconv2d", "kernel.pool")


def _written(op: Operation) -> SSAValue | None:
    output = getattr(op, "output", None)
    return output if isinstance(output, SSAValue) else None


def _derived_dims(op: Operation, extents: Mapping[SSAValue, list[Dim]]) -> list[Dim] | None:
    """The output dims of a convolution or pooling from its input's (N and the spatial
    axes 2, 3; channels static), NCHW or channel-blocked; None for another op or an input
    without `?` dims."""
    if op.name == "kernel.slice":
        return _sliced_dims(op, extents)
    if op.name not in _SPATIAL_KERNELS:
        return None
    source = getattr(op, "input", None)
    output = _written(op)
    if source is None or output is None or source not in extents:
        return None
    dims = extents[source]
    shape = output.type.get_shape()  # type: ignore[attr-defined]
    kernel = _ints(op, "kernel_shape")
    strides = _ints(op, "strides")
    pads = _ints(op, "pads")
    dilations = _ints(op, "dilations") or [1] * len(kernel)
    if len(kernel) != 2 or len(strides) != 2 or len(pads) != 4 or len(shape) != len(dims):
        return None
    derived: list[Dim] = [dims[0], *shape[1:]]
    for axis in range(2):
        size = dims[2 + axis]
        if not isinstance(size, Extent):
            continue  # a fixed size stays fixed (what the probes' types say)
        offset = pads[axis] + pads[axis + 2] - dilations[axis] * (kernel[axis] - 1) - 1
        out = strided(size, offset, strides[axis])
        if out is None:
            return None
        derived[2 + axis] = out
    return derived


def _sliced_dims(op: Operation, extents: Mapping[SSAValue, list[Dim]]) -> list[Dim] | None:
    """A slice's output dims when it runs to the end of every `?` axis of its input:
    ceil((size - start) / step) = floor((size - start - 1) / step) + 1 (a crop to another
    map's size is fitted from the probes instead)."""
    source = getattr(op, "input", None)
    output = _written(op)
    if source is None or output is None or source not in extents:
        return None
    starts, steps = _ints(op, "starts"), _ints(op, "steps")
    dims = extents[source]
    derived: list[Dim] = list(output.type.get_shape())  # type: ignore[attr-defined]
    if len(starts) != len(dims) or len(steps) != len(dims) or len(derived) != len(dims):
        return None
    for d, size in enumerate(dims):
        if isinstance(size, Extent) and steps[d] >= 1:
            # No hint for a size that is no floor of one dim: fitted (or refused as
            # ambiguous) from the probes instead.
            derived[d] = strided(size, -starts[d] - 1, steps[d]) or DYNAMIC_INDEX
    return derived


def _ints(op: Operation, name: str) -> list[int]:
    attr = op.properties.get(name) or op.attributes.get(name)
    if attr is None:
        return []
    return [int(v) for v in attr.get_values()]  # type: ignore[attr-defined]


def _prefix_of_table(
    arrays: Sequence[np.ndarray],
    probes: Sequence[Mapping[str, int]],
    symbols: Sequence[str],
    tables: Mapping[str, np.ndarray],
) -> tuple[np.ndarray, int, Extent] | None:
    """(table, axis, extent) when the probes' weights are the leading rows, along one axis
    whose size is exactly one named dim, of one model initializer that a Slice reads (a
    position table sliced to the sequence length: folded at import, so it differs by probe),
    the dims before that axis all 1 (the rows contiguous); None otherwise."""
    shapes = [a.shape for a in arrays]
    if len({len(sh) for sh in shapes}) != 1:
        return None
    axes = [d for d in range(len(shapes[0])) if len({sh[d] for sh in shapes}) != 1]
    if len(axes) != 1 or any(n != 1 for n in shapes[0][: axes[0]]):
        return None
    axis = axes[0]
    try:
        extent = fit_dim([sh[axis] for sh in shapes], probes, symbols)
    except CompileOnceRefusal:
        return None
    if not isinstance(extent, Extent) or extent.factor != 1 or len(extent.symbols) != 1:
        return None
    found = [
        t
        for t in tables.values()
        if t.dtype == arrays[0].dtype
        and t.ndim == arrays[0].ndim
        and all(t.shape[d] == shapes[0][d] for d in range(t.ndim) if d != axis)
        and t.shape[axis] >= max(sh[axis] for sh in shapes)
        and all(np.array_equal(np.take(t, range(a.shape[axis]), axis=axis), a) for a in arrays)
    ]
    return (found[0], axis, extent) if len(found) == 1 else None


def sliced_initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The initializers whose leading rows the model reads by a length it computes from a
    shape (candidates for the tables a probe's folded weights are the prefixes of): the data
    of a Slice, or of a Gather by Range(0, n, 1) (positions as exporters write them). Only
    those (and Range's scalars) are read; one stored outside the model is left out."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output and node.attribute:
            attr = node.attribute[0]
            if attr.name == "value":
                tensors[node.output[0]] = attr.t

    def array(name: str) -> np.ndarray | None:
        tensor = tensors.get(name)
        if tensor is None or tensor.data_location == TensorProto.EXTERNAL:
            return None
        return numpy_helper.to_array(tensor)

    def is_scalar(name: str, value: int) -> bool:
        found = array(name)
        return found is not None and found.size == 1 and int(found.reshape(-1)[0]) == value

    ranges_from_zero = {
        n.output[0]
        for n in graph.node
        if n.op_type == "Range"
        and len(n.input) == 3
        and is_scalar(n.input[0], 0)
        and is_scalar(n.input[2], 1)
    }
    read = {n.input[0] for n in graph.node if n.op_type == "Slice" and n.input}
    read |= {
        n.input[0]
        for n in graph.node
        if n.op_type == "Gather" and len(n.input) == 2 and n.input[1] in ranges_from_zero
    }
    tables = {name: array(name) for name in read}
    return {name: table for name, table in tables.items() if table is not None}


def _attrs(op: Operation) -> str:
    return str({**op.attributes, **op.properties})


def _check_dynamic_use(op: Operation, extents: Mapping[SSAValue, list[Dim]]) -> None:
    """Refuse a `?` where nothing lowers it: an op that is not a kernel with a runtime-extent
    lowering (or an alloc, a return), or a kernel whose `?` operands at one place have
    different expressions (kernels read one loop bound for all of them)."""
    from ember.passes.conversion.kernel_to_loops.registry import has_runtime_extent_lowering

    dynamic = [v for v in (*op.operands, *op.results) if v in extents]
    if not dynamic or isinstance(op, func.FuncOp):
        return
    if op.name not in _PLAIN_OPS and not has_runtime_extent_lowering(type(op)):
        raise CompileOnceRefusal(
            f"'{op.name}' has no kernel with runtime extents yet (its types: "
            + ", ".join(str(v.type) for v in (*op.operands, *op.results))
            + ")"
        )
    if _check_op_extents(op, extents):
        return
    operands = [v for v in op.operands if isinstance(v.type, MemRefType)]
    for a, b in itertools.combinations(operands, 2):
        da, db = extents.get(a), extents.get(b)
        if da is None or db is None:
            continue
        # Elementwise operands broadcast right-aligned (numpy's rule, the TILE and ROW
        # inputs of its lowering): of different ranks they only meet that way.
        left = op.name != "kernel.elementwise" or len(da) == len(db)
        alignments = [zip(reversed(da), reversed(db))] + ([zip(da, db)] if left else [])
        for pairs in alignments:
            for x, y in pairs:
                if op.name == "kernel.elementwise" and {type(x), type(y)} == {Extent, int}:
                    if 1 not in (x, y):  # a `?` against a fixed size: they may differ
                        raise CompileOnceRefusal(
                            f"'{op.name}' has operands of sizes {x} and {y} at the same place"
                        )
                if isinstance(x, Extent) and isinstance(y, Extent) and x != y:
                    raise CompileOnceRefusal(
                        f"'{op.name}' has operands with `?` at the same place of different sizes "
                        f"({x} and {y})"
                    )


def _dims_of(value: SSAValue, extents: Mapping[SSAValue, list[Dim]]) -> list[Dim]:
    return list(extents.get(value) or value.type.get_shape())  # type: ignore[attr-defined]


def _check_op_extents(op: Operation, extents: Mapping[SSAValue, list[Dim]]) -> bool:
    """The sizes a kernel with `?` dims reads from one operand and takes for another must
    be the same expressions: a transpose's output is its input permuted, a gather's output
    the data's dims around the indices' dims, a reshape's `?`s the input's in order (what
    its lowering reads), attention's batch and sequence lengths agree across q, k_t, v, the
    mask and the output, a matmul's rows, columns, contracted and (broadcast) batch dims
    agree across a, b and the output. True when `op` is one of these (checked here exactly: the generic
    same-place rule does not apply to them)."""
    from ember.dialects import kernel

    def refuse(what: str) -> None:
        raise CompileOnceRefusal(f"'{op.name}': {what}")

    if op.name in _SPATIAL_KERNELS:
        source = getattr(op, "input", None)
        if source is None or _written(op) is None:
            refuse("a convolution or pooling without an input and an output")
        derived = _derived_dims(op, extents)
        result = _dims_of(_written(op), extents)  # type: ignore[arg-type]
        if derived is None and source in extents:
            refuse(
                f"its input's sizes {_dims_of(source, extents)} are not each a floor of one "
                "dim or term, or a multiple of one (a product of dims, or terms nested more "
                "than 8 deep): its output size has no expression"
            )
        if derived is not None and derived != result:
            refuse(f"output {result} is not the size its input {extents[source]} gives")
        residual = getattr(op, "residual", None)
        if residual is not None and _dims_of(residual, extents) != result:
            refuse(f"residual {_dims_of(residual, extents)} is not the output's {result}")
    elif isinstance(op, kernel.ConcatOp):
        result = _dims_of(op.output, extents)
        axis = op.axis.value.data % len(result)
        pieces = [_dims_of(v, extents) for v in op.inputs]
        if any(p[:axis] + p[axis + 1 :] != result[:axis] + result[axis + 1 :] for p in pieces):
            refuse(f"inputs {pieces} differ from the output {result} off the axis {axis}")
        if _sum_of([p[axis] for p in pieces]) != result[axis]:
            refuse(f"inputs {pieces} do not add up to the output {result} along axis {axis}")
    elif isinstance(op, kernel.SliceOp):
        source, result = _dims_of(op.input, extents), _dims_of(op.output, extents)
        starts = [int(v) for v in op.starts.get_values()]
        steps = [int(v) for v in op.steps.get_values()]
        for d, (o, i, start, step) in enumerate(zip(result, source, starts, steps, strict=True)):
            if not _slice_fits(o, i, start, step):
                refuse(
                    f"output dim {d} ({o}) may not fit in the input's ({i}) from {start} by "
                    f"{step} at every shape"
                )
    elif isinstance(op, kernel.TransposeOp):
        source, result = _dims_of(op.input, extents), _dims_of(op.output, extents)
        perm = [int(p) for p in op.perm.get_values()]
        if [source[p] for p in perm] != result:
            refuse(f"output {result} is not the input {source} permuted by {perm}")
    elif isinstance(op, kernel.GatherOp):
        data, indices = _dims_of(op.data, extents), _dims_of(op.indices, extents)
        axis = op.axis.value.data % len(data)
        if [*data[:axis], *indices, *data[axis + 1 :]] != _dims_of(op.output, extents):
            refuse(f"output is not the data {data} around the indices {indices}")
    elif isinstance(op, kernel.ReshapeOp):
        # bufferize_extents sizes it from its output's expressions: the element counts
        # must be the same expression.
        source, result = _dims_of(op.input, extents), _dims_of(op.output, extents)
        if _element_count(source) != _element_count(result):
            refuse(f"a reshape {source} -> {result} of another element count")
    elif isinstance(op, kernel.AttentionOp):
        flags = [int(f) for f in op.seq_major.get_values()]

        def logical(value: SSAValue, flag: int) -> list[Dim]:
            d = _dims_of(value, extents)
            return [d[0], d[2], d[1], d[3]] if flag else d

        q, v, out = logical(op.q, flags[0]), logical(op.v, flags[1]), logical(op.output, flags[2])
        k_t = _dims_of(op.k_t, extents)
        same = k_t[:2] == q[:2] == v[:2] == out[:2] and out[2] == q[2] and k_t[3] == v[2]
        if op.mask is not None:
            mask = _dims_of(op.mask, extents)
            wanted = [q[0], q[1], q[2]]
            same = same and mask[3] == k_t[3]
            same = same and all(m == 1 or m == w for m, w in zip(mask[:3], wanted, strict=True))
        if not same:
            refuse("batch, heads or sequence lengths of q, k_t, v, mask and output disagree")
    elif isinstance(op, kernel.MatMulOp):
        a, b, out = (_dims_of(v, extents) for v in (op.a, op.b, op.output))
        batch = out[:-2]

        def broadcasts(operand: list[Dim]) -> bool:
            own = operand[:-2]
            return len(own) <= len(batch) and all(
                d == 1 or d == o for d, o in zip(own[::-1], batch[::-1], strict=False)
            )

        if not (
            len(a) >= 2
            and len(b) >= 2
            and broadcasts(a)
            and (len(b) == 2 or broadcasts(b) or op.weight_layout.data != "plain")
            and a[-2] == out[-2]
            and (op.weight_layout.data != "plain" or (a[-1] == b[-2] and b[-1] == out[-1]))
        ):
            refuse(f"a {a} @ b {b} -> output {out}: rows, columns or batch dims disagree")
        for name, value in (("residual", op.residual), ("bias", op.bias)):
            if value is None:
                continue
            dims = _dims_of(value, extents)
            if name == "residual" and dims != out:
                refuse(f"residual {dims} is not the output's {out}")
            if name == "bias" and any(isinstance(d, Extent) for d in dims):
                refuse(f"a bias of run-time sizes {dims}")
    else:
        return False
    return True


def _sum_of(dims: Sequence[Dim]) -> Dim | None:
    """The sum of sizes as one dim: static ones added, expressions that differ only in their
    factor added by factors; None for any other mix."""
    if all(isinstance(d, int) for d in dims):
        return sum(dims)  # type: ignore[arg-type]
    shapes = {(d.symbols, d.terms) for d in dims if isinstance(d, Extent)}
    if len(shapes) != 1 or not all(isinstance(d, Extent) for d in dims):
        return None
    symbols, terms = shapes.pop()
    return Extent(sum(d.factor for d in dims), symbols, terms)  # type: ignore[union-attr]


def _slice_fits(out: Dim, source: Dim, start: int, step: int) -> bool:
    """Whether `out` elements from `start` by `step` lie within `source` at every size the
    program accepts: checked over one period of the floors (past it, the margin only grows
    when the output grows no faster than the input / step); False when not provably so."""
    if out == source and start == 0 and step == 1:
        return True
    if isinstance(out, int) and isinstance(source, int):
        return start + (out - 1) * step <= source - 1
    lines = [_linear(d) for d in (out, source) if isinstance(d, Extent)]
    if any(line is None for line in lines) or len({line[0] for line in lines}) != 1:  # type: ignore[index]
        return False
    symbol = lines[0][0]  # type: ignore[index]

    def slope(d: Dim) -> Fraction:
        line = _linear(d) if isinstance(d, Extent) else None
        return Fraction(0) if line is None else line[1]

    def value(d: Dim, n: int) -> int:
        return d if isinstance(d, int) else d.value({symbol: n})

    if slope(out) * step > slope(source):
        return False
    period = math.lcm(*(line[2] for line in lines))  # type: ignore[index]
    first = max(
        [1] + [t.smallest() for d in (out, source) if isinstance(d, Extent) for t in d.terms]
    )
    return all(
        value(out, n) <= 0 or start + (value(out, n) - 1) * step <= value(source, n) - 1
        for n in range(first, first + period)
    )


def _linear(size: Extent) -> tuple[str, Fraction, int] | None:
    """(dim, slope, period) of a size that is a constant times one floor of one dim
    (f x floor((a n + b) / d) grows by f a L / d every L = d; a nested term every product of
    its divisors); None otherwise."""
    if len(size.symbols) + len(size.terms) != 1:
        return None
    if size.symbols:
        return size.symbols[0], Fraction(size.factor), 1
    term = size.terms[0]
    return term.symbol, size.factor * term.slope(), term.period()


def _element_count(dims: Sequence[Dim]) -> Extent:
    """A product of dims as one expression."""
    return functools.reduce(lambda a, d: a.times(d), dims, Extent(1, ()))


def bufferize_extents(unified: UnifiedProgram) -> list[Extent]:
    """Give the entry its extent arguments and the buffers their sizes (in place); returns
    the expressions of the extent arguments, in order."""
    fn = _entry(unified.module)
    block = fn.body.block
    memref_args = list(block.args)
    arg_dims = [unified.extents.get(a, []) for a in memref_args]
    expressions: list[Extent] = [Extent(1, (s,)) for s in unified.symbols]
    for dims in arg_dims:
        for d in dims:
            if isinstance(d, Extent) and d not in expressions:
                expressions.append(d)
    args: dict[Extent, SSAValue] = {}
    for e in expressions:
        pairs = [(a, k) for a, dims in enumerate(arg_dims) for k, d in enumerate(dims) if d == e]
        arg = block.insert_arg(IndexType(), len(block.args))
        from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr

        attrs = list(fn.arg_attrs.data) if fn.arg_attrs is not None else []
        attrs += [DictionaryAttr({})] * (len(block.args) - 1 - len(attrs))
        attrs.append(extent_attr(pairs) if pairs else DictionaryAttr({}))
        fn.arg_attrs = ArrayAttr(attrs)
        args[e] = arg
    fn.update_function_type()
    fn.attributes[EXTENTS_KEY] = StringAttr(json.dumps([str(e) for e in expressions]))

    def constant(n: int, before: Operation) -> SSAValue:
        return _insert(arith.ConstantOp(IntegerAttr(n, IndexType())), before)

    def term_of(term: Term, before: Operation) -> SSAValue:
        # (scale * n + offset) / divisor: the numerator is >= divisor > 0 for the sizes a
        # run accepts (OnceProgram checks each dim's minimum: every term, nested ones too,
        # >= 1), so the signed division floors.
        if isinstance(term.inner, str):
            value = args[Extent(1, (term.inner,))]
        else:
            value = term_of(term.inner, before)
        if term.scale != 1:
            value = _insert(arith.MuliOp(value, constant(term.scale, before)), before)
        if term.offset:
            value = _insert(arith.AddiOp(value, constant(term.offset, before)), before)
        if term.divisor != 1:
            value = _insert(arith.DivSIOp(value, constant(term.divisor, before)), before)
        return value

    def size_of(extent: Extent, before: Operation) -> SSAValue:
        if extent in args:
            return args[extent]
        value: SSAValue | None = None
        factors = [args[Extent(1, (s,))] for s in extent.symbols]
        factors += [term_of(t, before) for t in extent.terms]
        for factor_value in factors:
            value = (
                factor_value
                if value is None
                else _insert(arith.MuliOp(value, factor_value), before)
            )
        if value is None:
            return constant(extent.factor, before)
        if extent.factor != 1:
            factor = _insert(arith.ConstantOp(IntegerAttr(extent.factor, IndexType())), before)
            value = _insert(arith.MuliOp(value, factor), before)
        return value

    for value, (axis, extent) in unified.prefix_views.items():
        # The leading rows of a whole table: a view sized by the extent (the rows below
        # contiguous, the dims before the axis being 1).
        owner = value.owner
        assert isinstance(owner, Operation)
        table = value.type.get_shape()  # type: ignore[attr-defined]
        dims = [DYNAMIC_INDEX if d == axis else n for d, n in enumerate(table)]
        strides = [math.prod(table[d + 1 :]) for d in range(len(table))]
        view_type = MemRefType(value.type.get_element_type(), dims)  # type: ignore[attr-defined]
        size = size_of(extent, owner)  # one named dim: an argument, no op inserted
        cast = memref.ReinterpretCastOp(value, [], [size], [], [0], dims, strides, view_type)
        block.insert_op_after(cast, owner)
        value.replace_all_uses_with(cast.result)
        cast.operands[0] = value
        unified.extents[cast.result] = unified.extents.pop(value)
    unified.size_of = size_of
    for op in list(fn.walk()):
        if not isinstance(op, memref.AllocOp) or op.memref not in unified.extents:
            continue
        sizes = [size_of(d, op) for d in unified.extents[op.memref] if isinstance(d, Extent)]
        new = memref.AllocOp(sizes, [], op.memref.type, op.alignment)
        block.insert_op_before(new, op)
        op.memref.replace_all_uses_with(new.memref)
        unified.extents[new.memref] = unified.extents.pop(op.memref)
        block.erase_op(op)
    return expressions


def _reshape_by_extents(
    op: Operation,
    extents: dict[SSAValue, list[Dim]],
    size_of: Any,
) -> None:
    """A `kernel.reshape` whose output has `?` dims as a `memref.reinterpret_cast` of its
    (row-major) input sized by the output's expressions, its strides index arithmetic on
    them: exact for any split or merge of `?` dims ([b*s, h] -> [b, s, 4, 16]), which the
    types alone (the lowering's view) cannot size."""
    from ember.dialects import kernel

    assert isinstance(op, kernel.ReshapeOp)
    dims = extents[op.output]
    values: list[SSAValue | int] = [size_of(d, op) if isinstance(d, Extent) else d for d in dims]
    strides: list[SSAValue | int] = []
    running: SSAValue | int = 1
    for size in reversed(values):
        strides.append(running)
        if isinstance(size, int) and isinstance(running, int):
            running *= size
        else:
            a, b = (
                _insert(arith.ConstantOp(IntegerAttr(x, IndexType())), op)
                if isinstance(x, int)
                else x
                for x in (running, size)
            )
            running = _insert(arith.MuliOp(a, b), op)
    strides.reverse()
    cast = memref.ReinterpretCastOp(
        op.input,
        [],
        [v for v in values if not isinstance(v, int)],
        [s for s in strides if not isinstance(s, int)],
        [0],
        [DYNAMIC_INDEX if not isinstance(v, int) else v for v in values],
        [DYNAMIC_INDEX if not isinstance(s, int) else s for s in strides],
        op.output.type,
    )
    assert op.parent is not None
    op.parent.insert_op_before(cast, op)
    op.output.replace_all_uses_with(cast.result)
    extents[cast.result] = extents.pop(op.output)
    op.parent.erase_op(op)


def _insert(op: Operation, before: Operation) -> SSAValue:
    assert before.parent is not None
    before.parent.insert_op_before(op, before)
    return op.results[0]


def _is_dynamic_type(t: Any) -> bool:
    return isinstance(t, MemRefType) and any(is_dynamic(d) for d in t.get_shape())


def split_pipeline(pipeline: str) -> tuple[str, str]:
    """`pipeline` cut before plan-memory: (run per probe, run once); refused if it has none."""
    from ember.passes.pipeline import CHECKS_PASS, parse_passes, pipeline_text

    passes = parse_passes(pipeline)
    names = [p.name for p in passes]
    if FIRST_SHARED_PASS not in names:
        raise CompileOnceRefusal(f"the pipeline has no {FIRST_SHARED_PASS}")
    cut = names.index(FIRST_SHARED_PASS)
    if "instrument-kernels" in names:
        raise CompileOnceRefusal("an instrumented pipeline")
    if CHECKS_PASS in names:
        # Its bounds are static extents: accesses to `?` buffers would go unchecked.
        raise CompileOnceRefusal("checks=True: the bounds checks do not cover `?` dims yet")
    return pipeline_text(passes[:cut]), pipeline_text(passes[cut:])


@dataclass
class OnceBuild:
    """A program compiled once, before code generation (the JIT's or an artifact's)."""

    program: Any  # ember.engine.compile.CompiledProgram
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    expressions: list[Extent]
    symbols: list[str]
    arena_function: str | None
    report: CompileReport
    # Symbols bounded by a table whose leading rows the kernels read (a position table).
    limits: dict[str, int]
    # Each symbol's smallest size (a convolution's output at least one pixel).
    minimums: dict[str, int] = field(default_factory=dict)


def compile_once(
    model: onnx.ModelProto,
    pinning: Pinning,
    *,
    target: Target,
    pipeline: str,
    base_dir: str | os.PathLike[str] | None,
    memory_limit: int | None,
    opt_level: int,
    threads: int,
) -> OnceCompiledModel:
    """The model compiled once for every shape, or CompileOnceRefusal with the reason."""
    from ember.codegen.jit import JitModule
    from ember.core.limits import memory_limit_bytes

    build = build_once(
        model,
        pinning,
        target=target,
        pipeline=pipeline,
        base_dir=base_dir,
        memory_limit=memory_limit,
    )
    jit = JitModule(build.program.module, target, opt_level)
    return OnceCompiledModel(
        jit,
        build.inputs,
        build.outputs,
        build.expressions,
        build.symbols,
        build.program.weights_blob(),
        build.program.manifest.extra,
        build.report,
        threads,
        build.arena_function,
        memory_limit_bytes() if memory_limit is None else memory_limit,
        build.limits,
        build.minimums,
    )


def build_once(
    model: onnx.ModelProto,
    pinning: Pinning,
    *,
    target: Target,
    pipeline: str,
    base_dir: str | os.PathLike[str] | None,
    memory_limit: int | None,
) -> OnceBuild:
    """The model's program compiled once for every shape (lowered, not yet code), or
    CompileOnceRefusal with the reason."""
    import time

    from ember.engine.compile import finish_program
    from ember.frontend.context import KEEP_EXACT_SLICES
    from ember.passes.pipeline import build_pipeline, parse_passes, pipeline_text

    pinning = name_anonymous_dims(pinning)
    symbols = model_symbols(pinning)
    probes = probe_sizes(symbols, pinning.ranges, spatial_symbols(model, pinning, symbols))
    per_probe, shared = split_pipeline(pipeline)
    keep_slices = KEEP_EXACT_SLICES.set(True)
    try:
        programs, reports = _probe_programs(
            model, pinning, probes, target, per_probe, base_dir, memory_limit
        )
    finally:
        KEEP_EXACT_SLICES.reset(keep_slices)
    unified = unify(programs, probes, symbols, sliced_initializers(model))
    fn = _entry(unified.module)
    from ember.frontend.onnx_importer import OUTPUT_STRUCTURE

    if OUTPUT_STRUCTURE in fn.attributes:
        raise CompileOnceRefusal("graph outputs that are sequences or optionals")
    inputs_count = len(fn.attributes["ember.input_names"].data)  # type: ignore[attr-defined]
    io_dims = [tuple(unified.extents.get(a) or a.type.get_shape()) for a in fn.body.block.args]
    expressions = bufferize_extents(unified)
    report = reports[0]
    start = time.perf_counter()
    try:
        # plan-memory first (it reads kernel.reshape as an alias of its input), then the
        # reshapes with `?` outputs become views sized by their expressions.
        passes = parse_passes(shared)
        build_pipeline(pipeline_text(passes[:1])).apply(unified.ctx, unified.module)
        reshapes_by_extents(unified)
        build_pipeline(pipeline_text(passes[1:])).apply(unified.ctx, unified.module)
    except NotImplementedError as err:
        raise CompileOnceRefusal(str(err)) from err
    report.pass_seconds["compile-once"] = time.perf_counter() - start
    program = finish_program(unified.module, unified.ctx, report)
    named = _entry(program.module).attributes.get("ember.arena_function")
    arena_function = named.data if isinstance(named, StringAttr) else None
    names = [s.name for s in (*program.manifest.inputs, *program.manifest.outputs)]
    dtypes = [s.dtype for s in (*program.manifest.inputs, *program.manifest.outputs)]
    specs = [IOSpec(n, d, t) for n, d, t in zip(names, io_dims, dtypes, strict=True)]
    return OnceBuild(
        program,
        specs[:inputs_count],
        specs[inputs_count:],
        expressions,
        symbols,
        arena_function,
        report,
        dict(unified.limits),
        dict(unified.minimums),
    )


def _probe_programs(
    model: onnx.ModelProto,
    pinning: Pinning,
    probes: Sequence[Mapping[str, int]],
    target: Target,
    pipeline: str,
    base_dir: str | os.PathLike[str] | None,
    memory_limit: int | None,
) -> tuple[list[tuple[ModuleOp, EmberContext]], list[CompileReport]]:
    """The kernel programs (and reports) of the model at each probe shape. The last probe
    (the largest) is imported first, recording the kernel choices that depend on sizes
    (core/size_choices.py); the others replay them, so that every probe gets the same
    kernels, tuned for the largest probe's sizes."""
    from ember.core.size_choices import SizeChoiceMismatch, SizeChoices, choices_in
    from ember.engine.compile import run_pipeline
    from ember.engine.staging import bounded_outputs

    results: dict[int, tuple[tuple[ModuleOp, EmberContext], CompileReport]] = {}
    log = SizeChoices()
    for index in [len(probes) - 1, *range(len(probes) - 1)]:
        probe = probes[index]
        try:
            with choices_in(log):
                module, ctx, report, proto, _, _ = run_pipeline(
                    model,
                    target,
                    pipeline,
                    input_shapes=_probe_shapes(pinning, probe),
                    base_dir=base_dir,
                    memory_limit=memory_limit,
                )
        except EmberError as err:
            raise CompileOnceRefusal(f"at probe sizes {dict(probe)}: {err}") from err
        except SizeChoiceMismatch as err:
            raise CompileOnceRefusal(f"at probe sizes {dict(probe)}: {err}") from err
        if log.replaying and log.position != len(log.recorded):
            raise CompileOnceRefusal(
                f"at probe sizes {dict(probe)}: {len(log.recorded) - log.position} kernel "
                "choices recorded at the largest probe were not asked for"
            )
        log.replay()
        if bounded_outputs(proto):
            raise CompileOnceRefusal("outputs with data-dependent sizes")
        results[index] = ((module, ctx), report)
    return [results[k][0] for k in range(len(probes))], [results[k][1] for k in range(len(probes))]


def _probe_shapes(pinning: Pinning, probe: Mapping[str, int]) -> dict[str, list[int]]:
    sizes = {**pinning.named, **probe}
    return {
        info.name: list(pinning.shapes[info.name])
        if info.name in pinning.shapes
        else [sizes[d] if isinstance(d, str) else d for d in info.dims or ()]
        for info in pinning.signature.inputs
        if not info.dtype_only
    }


class OnceCompiledModel(OnceProgram):
    """A program compiled once in this process (over the JIT): the run logic is the thin
    runtime's (runtime/once.py), which also serves such a program from an artifact. The
    caller checks the shapes against the declared dims (SpecializingModel)."""

    def __init__(
        self,
        jit: Any,
        inputs: Sequence[IOSpec],
        outputs: Sequence[IOSpec],
        expressions: Sequence[Extent],
        symbols: Sequence[str],
        weights: np.ndarray,
        extra: Mapping[str, Any],
        report: CompileReport,
        threads: int,
        arena_function: str | None,
        memory_limit: int | None = None,
        limits: Mapping[str, int] | None = None,
        minimums: Mapping[str, int] | None = None,
    ) -> None:
        from ember.runtime.status import SITES_KEY

        self._jit = jit
        self.report = report
        signature = OnceSignature(
            list(inputs),
            list(outputs),
            list(expressions),
            list(symbols),
            {},
            arena_function,
            dict(limits or {}),
            dict(minimums or {}),
        )
        super().__init__(
            jit.function,
            signature,
            weights,
            extra.get(SITES_KEY),
            report.arena_bytes,
            threads,
            memory_limit,
        )
