"""plan-memory: place every intermediate buffer at an offset in one arena, by liveness.

A buffer lives from the first kernel that touches it to the last kernel that reads it (or any
`kernel.reshape` view of it); inside the scf ops of loops and branches, a buffer used only in
one body lives within it, one used in and around a loop across the whole loop (`_live_span`). Buffers whose lifetimes do not overlap share bytes; a kernel may
also write its output over an input that dies at that kernel when the kernel reads each element
before writing it (same-shape elementwise inputs, the residual of a conv/matmul epilogue), and
then only at exactly the input's offset. Placement is greedy by size, largest first, each at its
in-place input's offset when that is free, else at the lowest 64-byte aligned offset that
conflicts with no already placed buffer alive at the same time.

A concatenation whose inputs are contiguous byte ranges of its output (the dims before the
axis all 1, e.g. NCHW channels at batch 1) costs no copy: each input buffer is placed at its
range inside the output buffer, which then lives from the first input's first use, and the
kernel.concat is erased (squeezenet's fire modules: 8 concats, 90 us of 3.7 ms). Only
inputs that are this function's own buffers (or reshape views of them), in no in-place pair,
each in one such concat, at 64-byte aligned ranges.

Buffers with `?` dims (`memref.alloc(%n) : memref<?x768xf32>`, runtime extents: issue 10,
foundation) are placed with the same lifetimes but offsets computed at run time: the static
buffers keep the plan above, and the dynamic ones lie above them, in a greedy order by a size
hint (`SIZE_HINT_DIM` for every `?` dim), each at the largest end of the dynamic buffers
placed before it that are alive at the same time (`_place_at_run_time`): sound for any sizes;
an output over its dying input of the same type (the in-place rule above) takes the input's
offset where the buffers placed before it allow (`_offset_program`).
That offset program runs at the start of the entry function (from its `index` arguments,
dialects/extents.py), and again in a public function `<entry>_arena_bytes(those arguments)
-> index` that returns the arena's size for given dims (the entry's `ember.arena_function`;
`ember.arena_bytes` is then the static part below the dynamic buffers). No concat in place
for dynamic buffers. The runtime does not call it yet.

Options: `plan-memory{alignment=N}` places buffers at multiples of N bytes instead of 64;
`plan-memory{in-place=false}` shares no bytes between buffers alive at once (neither rule
above), which tells an aliasing bug from another one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import arith, func, memref
from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    IndexType,
    IntegerAttr,
    MemRefType,
    ModuleOp,
    StringAttr,
    i8,
)
from xdsl.ir import Block, BlockArgument, Operation, Region, SSAValue
from xdsl.passes import ModulePass

from ember.dialects import kernel
from ember.dialects.dtypes import numpy_dtype_for
from ember.dialects.extents import extent_arguments, has_dynamic_dims
from ember.dialects.graph import shape_of
from ember.passes.options import check_choice
from ember.passes.program import append_argument, entry_function

ALIGNMENT = 64
# What the `alignment` option takes: powers of two from ALIGNMENT (with less, two buffers
# could share a cache line that threads writing them contend for) to a 4 KiB page.
ALIGNMENTS = tuple(ALIGNMENT << k for k in range(7))


def byte_size(memref_type: MemRefType) -> int:
    itemsize = numpy_dtype_for(memref_type.get_element_type()).itemsize
    return math.prod(memref_type.get_shape()) * itemsize


def _aligned(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclass
class Interval:
    buffer: SSAValue
    size: int
    first: int
    last: int
    offset: int = -1


def _root(value: SSAValue) -> SSAValue:
    while isinstance(value.owner, kernel.ReshapeOp):
        value = value.owner.input
    return value


def _in_place_operands(op: Operation) -> set[SSAValue]:
    """Operands whose memory the op's output may reuse: each element is read before written."""
    # Operand positions read element i just before element i of the output is written.
    positions: list[int] = []
    if isinstance(op, kernel.ElementwiseOp):
        out = shape_of(op.output)
        positions = [
            i
            for i, v in enumerate(op.operands)
            if v in op.inputs and shape_of(v) == out and v.type == op.output.type
        ]
    elif isinstance(op, kernel.Conv2dOp | kernel.MatMulOp) and op.residual is not None:
        positions = [len(op.operands) - 2]  # operand order: ..., residual, output
        assert op.operands[positions[0]] is op.residual
    # A buffer the kernel also reads through another operand (y = x + Conv(x): x is the conv
    # input and the residual; a broadcast view of an elementwise input) is read at other
    # positions after they are overwritten, so it must keep its own memory.
    output = getattr(op, "output", None)
    other_reads = {
        _root(v) for i, v in enumerate(op.operands) if i not in positions and v is not output
    }
    return {op.operands[i] for i in positions if _root(op.operands[i]) not in other_reads}


def plan(
    intervals: list[Interval],
    may_share: set[tuple[SSAValue, SSAValue]],
    alignment: int = ALIGNMENT,
) -> int:
    """Assign offsets (multiples of `alignment`) in place; returns the arena size in bytes."""
    placed: list[Interval] = []
    for iv in sorted(intervals, key=lambda i: (-i.size, i.first)):
        alive = [p for p in placed if p.first <= iv.last and iv.first <= p.last]
        partners = sorted({p.offset for p in alive if _shares(p, iv, may_share)})
        reuse = [o for o in partners if _fits_in_place(iv, o, alive, may_share, alignment)]
        if reuse:
            iv.offset = reuse[0]
        else:
            offset = 0
            for start, end in sorted(
                (p.offset, p.offset + _aligned(p.size, alignment)) for p in alive
            ):
                if offset + iv.size <= start:
                    break
                offset = max(offset, end)
            iv.offset = offset
        placed.append(iv)
    return max((p.offset + _aligned(p.size, alignment) for p in placed), default=0)


def _shares(a: Interval, b: Interval, may_share: set[tuple[SSAValue, SSAValue]]) -> bool:
    return (a.buffer, b.buffer) in may_share or (b.buffer, a.buffer) in may_share


def _fits_in_place(
    iv: Interval,
    offset: int,
    alive: list[Interval],
    may_share: set[tuple[SSAValue, SSAValue]],
    alignment: int,
) -> bool:
    """`iv` at `offset` overlaps only its in-place partners, and each at exactly that offset:
    an output shifted against its input would overwrite input elements before they are read."""
    end = offset + _aligned(iv.size, alignment)
    return all(
        p.offset == offset and _shares(p, iv, may_share)
        for p in alive
        if offset < p.offset + _aligned(p.size, alignment) and p.offset < end
    )


def _concat_ranges(
    block: Block, intervals: dict[SSAValue, Interval], excluded: set[SSAValue], alignment: int
) -> dict[kernel.ConcatOp, list[tuple[SSAValue, int]]]:
    """Concats whose inputs can live inside their output: op -> [(input buffer, byte offset)].
    No buffer in `excluded` is an input, none is an input or output of two of them."""
    found: dict[kernel.ConcatOp, list[tuple[SSAValue, int]]] = {}
    claimed = set(excluded)
    for op in block.ops:
        if not isinstance(op, kernel.ConcatOp) or op.output not in intervals:
            continue
        out_type = op.output.type
        assert isinstance(out_type, MemRefType)
        axis = op.axis.value.data
        if math.prod(out_type.get_shape()[:axis]) != 1:
            continue  # each input is strided in the output
        # An input seen through a kernel.reshape is its buffer's bytes all the same (a nearest
        # upsampling's Expand reshaped back to NCHW).
        buffers = [_root(v) for v in op.inputs]
        if (
            len(set(buffers)) != len(buffers)
            or op.output in claimed
            or any(v in claimed or v not in intervals for v in buffers)
            or any(v.type.get_element_type() != out_type.get_element_type() for v in buffers)  # type: ignore[attr-defined]
        ):
            continue
        offsets, at = [], 0
        for v in buffers:
            offsets.append((v, at))
            at += intervals[v].size
        if at != intervals[op.output].size or any(o % alignment for _, o in offsets):
            continue
        found[op] = offsets
        claimed.update(buffers)
        claimed.add(op.output)
    return found


def _spans(block: Block) -> dict[Operation, tuple[int, int]]:
    """Program positions: each op, in order, takes the next position, and an op with regions
    spans the positions of every op nested in it."""
    spans: dict[Operation, tuple[int, int]] = {}
    counter = 0

    def visit(op: Operation) -> None:
        nonlocal counter
        start = counter
        counter += 1
        for region in op.regions:
            for inner_block in region.blocks:
                for inner in inner_block.ops:
                    visit(inner)
        spans[op] = (start, counter - 1)

    for op in block.ops:
        visit(op)
    return spans


def _live_span(users: list[Operation], spans: dict[Operation, tuple[int, int]]) -> tuple[int, int]:
    """The positions a buffer is live at: from its first to its last use in the innermost
    block holding all its uses, where a use nested deeper counts as the whole op (loop or
    branch) that holds it in that block. A buffer all of whose uses are in one loop body is
    written before it is read in each iteration (bufferization gives each body value its own
    buffer), so it lives within the iteration; one used in and around a loop (a carried value,
    a value the body reads from outside) lives across the whole loop."""

    def blocks_of(op: Operation) -> list[Block]:
        chain = []
        block = op.parent_block()
        while block is not None:
            chain.append(block)
            parent = block.parent_op()
            block = None if parent is None else parent.parent_block()
        return chain

    chains = [blocks_of(u) for u in users]
    common = next(b for b in chains[0] if all(b in chain for chain in chains[1:]))
    first, last = None, None
    for user in users:
        while user.parent_block() is not common:
            user = user.parent_op()  # type: ignore[assignment]
        start, end = spans[user]
        first = start if first is None else min(first, start)
        last = end if last is None else max(last, end)
    assert first is not None and last is not None
    return first, last


# The size a `?` dim is taken to have when ordering buffers with `?` dims for placement (the
# offsets themselves are computed from the real sizes at run time).
SIZE_HINT_DIM = 64


def size_hint(memref_type: MemRefType) -> int:
    """Bytes of a buffer with every `?` dim SIZE_HINT_DIM: its rank in the greedy order."""
    itemsize = numpy_dtype_for(memref_type.get_element_type()).itemsize
    return math.prod(SIZE_HINT_DIM if d < 0 else d for d in memref_type.get_shape()) * itemsize


class _IndexProgram:
    """Index arithmetic appended to a block (the offset program), constants shared."""

    def __init__(self, block: Block, before: Operation | None) -> None:
        self.block, self.before = block, before
        self.constants: dict[int, SSAValue] = {}

    def add(self, op: Operation) -> SSAValue:
        self.insert(op)
        return op.results[0]

    def insert(self, op: Operation) -> None:
        if self.before is None:
            self.block.add_op(op)
        else:
            self.block.insert_op_before(op, self.before)

    def const(self, value: int) -> SSAValue:
        if value not in self.constants:
            self.constants[value] = self.add(arith.ConstantOp(IntegerAttr(value, IndexType())))
        return self.constants[value]

    def aligned(self, size: SSAValue, alignment: int) -> SSAValue:
        """size rounded up to a multiple of `alignment` (a power of two)."""
        bumped = self.add(arith.AddiOp(size, self.const(alignment - 1)))
        return self.add(arith.AndIOp(bumped, self.const(-alignment)))


def _size_slice(
    fn: func.FuncOp, values: list[SSAValue], program: _IndexProgram, args: dict[SSAValue, SSAValue]
) -> list[SSAValue]:
    """Clone the computation of `values` (index arithmetic on `fn`'s `index` arguments and
    `memref.dim` of its memref arguments) into `program`; `args` maps each of `fn`'s index
    arguments to its value there. Anything else (a size read from a buffer) is refused."""
    extents = {
        (a, d): fn.body.block.args[position]
        for position, pairs in extent_arguments(fn)
        for a, d in pairs
    }
    cloned: dict[SSAValue, SSAValue] = {}

    def clone(value: SSAValue) -> SSAValue:
        if value in cloned:
            return cloned[value]
        owner = value.owner
        if value in args:
            result = args[value]
        elif isinstance(owner, arith.ConstantOp) and isinstance(owner.value, IntegerAttr):
            result = program.const(owner.value.value.data)
        elif isinstance(owner, memref.DimOp) and isinstance(owner.source, BlockArgument):
            at = owner.index.owner
            if not (isinstance(at, arith.ConstantOp) and isinstance(at.value, IntegerAttr)):
                raise NotImplementedError(f"plan-memory: memref.dim at a run-time dim: {owner}")
            key = (owner.source.index, at.value.value.data)
            if key not in extents:
                raise NotImplementedError(
                    f"plan-memory: dim {key[1]} of argument {key[0]} of the entry has no "
                    "extent argument (dialects/extents.py)"
                )
            result = clone(extents[key])
        elif isinstance(owner, Operation) and owner.name in _INDEX_ARITHMETIC:
            result = program.add(owner.clone(value_mapper={v: clone(v) for v in owner.operands}))
        else:
            raise NotImplementedError(
                "plan-memory: the size of a buffer with `?` dims must be computed from the "
                f"entry's index arguments by index arithmetic; {value} is not"
            )
        cloned[value] = result
        return result

    return [clone(v) for v in values]


_INDEX_ARITHMETIC = frozenset(
    ("arith.addi", "arith.subi", "arith.muli", "arith.divui", "arith.divsi", "arith.ceildivui")
    + ("arith.ceildivsi", "arith.remui", "arith.remsi", "arith.maxsi", "arith.minsi")
    + ("arith.maxui", "arith.minui")
)


def _offset_program(
    program: _IndexProgram,
    order: list[Interval],
    sizes: dict[SSAValue, SSAValue],
    base: int,
    alignment: int,
    with_end: bool,
    in_place: dict[SSAValue, SSAValue],
) -> tuple[dict[SSAValue, SSAValue], SSAValue | None]:
    """Offsets of the dynamic buffers in `order` and (`with_end`) the arena's end: each
    buffer at the largest aligned end of the buffers placed before it that live at the same
    time (at least `base`, the static plan's end), so no two live buffers overlap whatever
    the sizes. An output in `in_place` takes its dying input's offset instead when every
    buffer placed before it and alive with it is alive with that input too: those lie below
    the input or above it, never inside its bytes, and those placed later lie above both."""

    def maximum(a: SSAValue | None, b: SSAValue) -> SSAValue:
        return b if a is None else program.add(arith.MaxUIOp(a, b))

    def overlap(a: Interval, b: Interval) -> bool:
        return a.first <= b.last and b.first <= a.last

    offsets: dict[SSAValue, SSAValue] = {}
    ends: dict[SSAValue, SSAValue] = {}
    end: SSAValue | None = None
    for k, iv in enumerate(order):
        earlier = [e for e in order[:k] if overlap(e, iv)]
        source = next((e for e in earlier if e.buffer is in_place.get(iv.buffer)), None)
        if source is not None and all(overlap(e, source) for e in earlier):
            offsets[iv.buffer] = offset = offsets[source.buffer]
        else:
            found: SSAValue | None = None  # every end is at least `base`
            for e in earlier:
                found = maximum(found, ends[e.buffer])
            offsets[iv.buffer] = offset = found or program.const(base)
        ends[iv.buffer] = program.add(
            arith.AddiOp(offset, program.aligned(sizes[iv.buffer], alignment))
        )
        if with_end:
            end = maximum(end, ends[iv.buffer])
    return offsets, (end or program.const(base)) if with_end else None


def _place_at_run_time(
    module: ModuleOp,
    fn: func.FuncOp,
    allocs: list[memref.AllocOp],
    intervals: dict[SSAValue, Interval],
    static_bytes: int,
    alignment: int,
    in_place: dict[SSAValue, SSAValue],
) -> dict[SSAValue, SSAValue]:
    """Emit the offset program of the buffers with `?` dims at the start of `fn` (returns
    each buffer's offset) and the public `<fn>_arena_bytes(index args) -> index`."""
    base = _aligned(static_bytes, alignment)
    order = sorted(
        (intervals[a.memref] for a in allocs if intervals[a.memref].first >= 0),
        key=lambda i: (-i.size, i.first),
    )

    def byte_sizes(program: _IndexProgram, args: dict[SSAValue, SSAValue]) -> dict:
        sizes = {}
        for a in allocs:
            t = a.memref.type
            assert isinstance(t, MemRefType)
            dims = _size_slice(fn, list(a.dynamic_sizes), program, args)
            static = size_hint(
                MemRefType(t.get_element_type(), [d for d in t.get_shape() if d >= 0])
            )
            count = dims[0]
            for dim in dims[1:]:
                count = program.add(arith.MuliOp(count, dim))
            if static != 1:
                count = program.add(arith.MuliOp(count, program.const(static)))
            sizes[a.memref] = count
        return sizes

    block = fn.body.block
    index_args = [a for a in block.args if isinstance(a.type, IndexType)]
    entry = _IndexProgram(block, block.first_op)
    offsets, _ = _offset_program(
        entry,
        order,
        byte_sizes(entry, {a: a for a in index_args}),
        base,
        alignment,
        False,
        in_place,
    )
    for a in allocs:
        offsets.setdefault(a.memref, entry.const(base))  # unused buffers: anywhere

    name = f"{fn.sym_name.data}_arena_bytes"
    size_block = Block(arg_types=[IndexType()] * len(index_args))
    sizes_program = _IndexProgram(size_block, None)
    mapping = dict(zip(index_args, size_block.args, strict=True))
    _, end = _offset_program(
        sizes_program, order, byte_sizes(sizes_program, mapping), base, alignment, True, in_place
    )
    assert end is not None
    end = sizes_program.add(arith.MaxUIOp(end, sizes_program.const(ALIGNMENT)))
    sizes_program.insert(func.ReturnOp(end))
    module.body.block.add_op(
        func.FuncOp(name, ([IndexType()] * len(index_args), [IndexType()]), Region(size_block))
    )
    fn.attributes["ember.arena_function"] = StringAttr(name)
    return offsets


@dataclass(frozen=True)
class PlanMemory(ModulePass):
    """Replaces memref.alloc buffers with memref.view slices of one arena argument."""

    name = "plan-memory"

    # Offsets are multiples of this many bytes (unset: ALIGNMENT, a cache line and a zmm).
    alignment: int | None = None
    # false: no buffer shares bytes with another alive at the same time (no output over its
    # input, no concat in place): to tell an aliasing bug from another one.
    in_place: bool = True

    def __post_init__(self) -> None:
        check_choice(self, "alignment", ALIGNMENTS)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        alignment = ALIGNMENT if self.alignment is None else self.alignment
        fn = entry_function(op)
        block = fn.body.block
        allocs = [o for o in block.ops if isinstance(o, memref.AllocOp)]
        dynamic_allocs = [a for a in allocs if has_dynamic_dims(a.memref)]
        allocs = [a for a in allocs if a not in dynamic_allocs]
        intervals: dict[SSAValue, Interval] = {
            a.memref: Interval(a.memref, byte_size(a.memref.type), -1, -1)  # type: ignore[arg-type]
            for a in allocs
        }
        dynamic: dict[SSAValue, Interval] = {
            a.memref: Interval(a.memref, size_hint(a.memref.type), -1, -1)  # type: ignore[arg-type]
            for a in dynamic_allocs
        }
        # (input, output) -> the span of the op that may write its output over its input.
        may_share_at: dict[tuple[SSAValue, SSAValue], tuple[int, int]] = {}
        spans = _spans(block)
        users: dict[SSAValue, list[Operation]] = {buffer: [] for buffer in [*intervals, *dynamic]}
        for user in fn.walk():
            if user is fn or isinstance(user, memref.AllocOp | kernel.ReshapeOp):
                continue
            for operand in user.operands:
                if (root := _root(operand)) in users:
                    users[root].append(user)
        for buffer, touching in users.items():
            if touching:
                span = _live_span(touching, spans)
                (intervals.get(buffer) or dynamic[buffer]).first = span[0]
                (intervals.get(buffer) or dynamic[buffer]).last = span[1]
        for user in block.ops:
            # An op with a body (kernel.elementwise) spans several positions: its input dies
            # at the span's end, its output is born at the span's start.
            span = spans[user]
            out = getattr(user, "output", None)
            if isinstance(out, SSAValue) and _root(out) in intervals:
                for candidate in _in_place_operands(user):
                    source = intervals.get(_root(candidate))
                    if source is not None and source.last == span[1]:
                        may_share_at[(source.buffer, _root(out))] = span
        # Dynamic outputs over dying inputs of the same type (so of the same size: `?` dims
        # at the same places are equal, the kernels' contract), views excluded.
        dynamic_in_place: dict[SSAValue, SSAValue] = {}
        for user in block.ops if self.in_place else ():
            out = getattr(user, "output", None)
            if not (isinstance(out, SSAValue) and out in dynamic):
                continue
            for candidate in _in_place_operands(user):
                source = dynamic.get(candidate)
                if (
                    source is not None
                    and candidate.type == out.type
                    and (source.last, dynamic[out].first) == (spans[user][1], spans[user][0])
                ):
                    dynamic_in_place[out] = candidate
        # Concats in place: inputs in no in-place pair (their offset is fixed by the concat).
        concats = (
            _concat_ranges(block, intervals, {v for pair in may_share_at for v in pair}, alignment)
            if self.in_place
            else {}
        )
        inside: dict[SSAValue, tuple[SSAValue, int]] = {}
        for concat, ranges in concats.items():
            whole = intervals[concat.output]
            for buffer, offset in ranges:
                whole.first = min(whole.first, intervals[buffer].first)
                whole.last = max(whole.last, intervals[buffer].last)
                inside[buffer] = (concat.output, offset)
        # The in-place pairs may only share if the input really dies at that op.
        may_share = {
            (a, b)
            for (a, b), (start, end) in may_share_at.items()
            if self.in_place and intervals[a].last == end and intervals[b].first == start
        }
        live = [iv for iv in intervals.values() if iv.first >= 0 and iv.buffer not in inside]
        arena_bytes = plan(live, may_share, alignment)
        for buffer, (whole, offset) in inside.items():
            intervals[buffer].offset = intervals[whole].offset + offset
        for concat in concats:
            concat.detach()
            concat.erase()

        if dynamic_allocs:
            arena = append_argument(fn, MemRefType(i8, [DYNAMIC_INDEX]), "arena")
            offsets = _place_at_run_time(
                op, fn, dynamic_allocs, dynamic, arena_bytes, alignment, dynamic_in_place
            )
            for a in dynamic_allocs:
                view = memref.ViewOp(arena, offsets[a.memref], a.dynamic_sizes, a.memref.type)
                block.insert_op_before(view, a)
                a.memref.replace_all_uses_with(view.result)
                a.detach()
                a.erase()
        else:
            arena = append_argument(fn, MemRefType(i8, [max(arena_bytes, ALIGNMENT)]), "arena")
        for a in allocs:
            iv = intervals[a.memref]
            offset = arith.ConstantOp(IntegerAttr(max(iv.offset, 0), IndexType()))
            view = memref.ViewOp(arena, offset, [], a.memref.type)
            block.insert_ops_before([offset, view], a)
            a.memref.replace_all_uses_with(view.result)
            a.detach()
            a.erase()
        fn.attributes["ember.arena_bytes"] = IntegerAttr(arena_bytes, 64)
        fn.attributes["ember.intermediate_bytes"] = IntegerAttr(
            sum(iv.size for iv in intervals.values()), 64
        )
