"""xDSL's verifier without its repeats: each op signature is checked once per process.

A lowered program is tens of thousands of ops of a few hundred distinct signatures (an
`arith.addi` of two `index` values, a `vector.fma` of three `vector<16xf32>`, ...), and xDSL
checks every op's IRDL constraints from scratch (~30 us an op: the verification after
`lower-kernels-to-loops` cost about as much as the lowering). `install()` (run when
`ember.dialects` is imported) makes the verification of the ops below remember the signatures
that verified (class, operand types, result types, properties, attributes) and skip the
checks that depend on nothing else: the IRDL constraints and the op's own `verify_`. An op
that matches no remembered signature is verified in full, and only success is remembered,
so a failing op fails with xDSL's own message. What depends on more than the signature is
still checked on every op: the op's traits (a parent it must have, a symbol it calls), the
terminator and nesting checks of `Operation.verify`, and the regions of region-holding ops
(not memoized).

Which ops: those without regions or successors of the upstream dialects the loops IR uses
whose `verify_` is either only the IRDL check or one read here to depend on the signature
alone (`_SIGNATURE_ONLY_VERIFIERS`: element types, index counts, static sizes). An op whose
own check looks further (func.return reads its function's type) is not memoized.

`IsolatedFromAbove` (func.func, builtin.module) walked up the parents of every operand's
owner of the whole function; it first checks, in one walk, that every operand is defined
inside the op, and runs xDSL's check (and its message) only when that fails. An xDSL or
ember attribute equal to one that verified is not checked again.

`IRState` tells whether a pass changed the IR at all, so that the per-pass verification
(`EMBER_VERIFY_EACH`, engine/compile.py) skips the passes that did not.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from xdsl.dialects import arith, func, memref, scf, vector
from xdsl.ir import Block, Operation, ParametrizedAttribute
from xdsl.irdl import IRDLOperation
from xdsl.traits import IsolatedFromAbove

# Ops whose own verify_ (beside the IRDL constraints) reads only their operand and result
# types, operand counts, properties and attributes (xdsl 0.74, read one by one).
_SIGNATURE_ONLY_VERIFIERS = frozenset(
    {
        "arith.index_cast",
        "memref.alloca",
        "memref.load",
        "memref.reinterpret_cast",
        "memref.store",
        "memref.view",
        "vector.broadcast",
        "vector.create_mask",
        "vector.load",
        "vector.maskedload",
        "vector.maskedstore",
        "vector.shuffle",
        "vector.store",
    }
)
# The dialects of nearly every loops-IR op (math and llvm ops are a few in a program, and
# importing those two dialects would add ~40 ms to every process that imports ember.dialects).
_DIALECTS = (arith, func, memref, scf, vector)

# Signatures that verified; cleared when full (a program has a few hundred).
_VERIFIED: set[Hashable] = set()
_MAX_SIGNATURES = 1 << 16

_installed = False


def install() -> None:
    """Memoize the verification of the ops above in this process (idempotent)."""
    global _installed
    if _installed:
        return
    for op_class in memoizable_ops():
        op_class.verify_ = _memoized(op_class)  # type: ignore[method-assign]
    original = IsolatedFromAbove.verify
    IsolatedFromAbove.verify = _isolated_check(original)  # type: ignore[method-assign]
    ParametrizedAttribute._verify = _memoized_attribute_check(  # type: ignore[method-assign]
        ParametrizedAttribute._verify  # noqa: SLF001
    )
    _installed = True


def memoizable_ops() -> list[type[IRDLOperation]]:
    """The op classes whose verification `install` memoizes."""
    found = []
    for dialect in _DIALECTS:
        for op_class in vars(dialect).values():
            if not (
                inspect.isclass(op_class)
                and issubclass(op_class, IRDLOperation)
                and op_class.__module__ == dialect.__name__
                and isinstance(getattr(op_class, "name", None), str)
            ):
                continue
            op_def = op_class.get_irdl_definition()
            if op_def.regions or op_def.successors:
                continue
            if has_own_verifier(op_class) and op_class.name not in _SIGNATURE_ONLY_VERIFIERS:
                continue
            found.append(op_class)
    return found


def has_own_verifier(op_class: type[IRDLOperation]) -> bool:
    """Whether the op defines a verify_ of its own besides its IRDL definition's check.

    irdl_op_definition wraps the class's verify_ (Operation's no-op when it has none) in one
    that runs the IRDL check first; the wrapped one is the closure's `custom_verify`."""
    wrapper = getattr(op_class.verify_, "__wrapped__", op_class.verify_)  # unmemoized
    cells = dict(zip(wrapper.__code__.co_freevars, wrapper.__closure__ or ()))
    custom = cells.get("custom_verify")
    if custom is None:  # not the wrapper this reading knows: assume a verifier of its own
        return True
    return custom.cell_contents is not Operation.verify_


def signature(op: Operation) -> Hashable:
    """Everything a memoized op's checks read."""
    return (
        type(op),
        tuple(operand.type for operand in op.operands),
        tuple(result.type for result in op.results),
        tuple(op.properties.items()),
        tuple(op.attributes.items()),
    )


def _memoized(op_class: type[IRDLOperation]) -> Callable[[Operation], None]:
    verify = op_class.verify_
    traits = tuple(op_class.get_irdl_definition().traits)

    def verify_(op: Operation) -> None:
        if type(op) is not op_class:
            verify(op)
            return
        key = signature(op)
        try:
            seen = key in _VERIFIED
        except TypeError:  # an attribute holding a list or dict: not hashable
            verify(op)
            return
        if seen:
            for trait in traits:  # they may read more than the signature
                trait.verify(op)
            return
        verify(op)
        if len(_VERIFIED) >= _MAX_SIGNATURES:
            _VERIFIED.clear()
        _VERIFIED.add(key)

    verify_.__wrapped__ = verify  # type: ignore[attr-defined]
    return verify_


def _memoized_attribute_check(verify: Callable[[Any], None]) -> Callable[[Any], None]:
    """An attribute (a type) is a value: its checks read its parameters only, and an attribute
    equal to one that verified verifies. xDSL checks every one it builds (the lowering builds
    ~10 a loops-IR op: `vector<16xf32>`, `index`, ...); only xDSL's and ember's are memoized."""

    def _verify(self: ParametrizedAttribute) -> None:
        if not type(self).__module__.startswith(_OWN_MODULES):
            verify(self)
            return
        try:
            seen = self in _VERIFIED_ATTRIBUTES
        except TypeError:  # a parameter holding a list or dict: not hashable
            verify(self)
            return
        if not seen:
            verify(self)
            if len(_VERIFIED_ATTRIBUTES) >= _MAX_SIGNATURES:
                _VERIFIED_ATTRIBUTES.clear()
            _VERIFIED_ATTRIBUTES.add(self)

    return _verify


_OWN_MODULES = ("xdsl.", "ember.")
_VERIFIED_ATTRIBUTES: set[ParametrizedAttribute] = set()


def _isolated_check(original: Callable[[Any, Operation], None]) -> Callable[..., None]:
    def verify(self: IsolatedFromAbove, op: Operation) -> None:
        if not _defined_inside(op):
            original(self, op)  # it raises, with xDSL's message

    return verify


def _defined_inside(op: Operation) -> bool:
    """Whether the ops IsolatedFromAbove.verify checks (those nested in `op`, not looking
    into nested isolated ops, which check themselves) use only values defined by an op or
    block they see. A false answer falls back to xDSL's check, which also accepts a value
    defined deeper inside `op`."""
    inside: set[Operation | Block] = set()
    checked: list[Operation] = []
    regions = list(op.regions)
    while regions:
        for block in regions.pop().blocks:
            inside.add(block)
            for child in block.ops:
                inside.add(child)
                checked.append(child)
                if child.regions and not _isolated(type(child)):
                    regions.extend(child.regions)
    return all(operand.owner in inside for child in checked for operand in child.operands)


_ISOLATED: dict[type[Operation], bool] = {}


def _isolated(op_class: type[Operation]) -> bool:
    if op_class not in _ISOLATED:
        _ISOLATED[op_class] = op_class.has_trait(IsolatedFromAbove)
    return _ISOLATED[op_class]


class IRState:
    """What verification reads of an op and everything nested in it, object by object, to
    tell whether a pass changed any of it: a pass that left it all in place (no op, operand,
    type, attribute, property, block or argument replaced, moved or mutated) cannot have
    broken IR that verified before it, and the per-pass verification skips it
    (`EMBER_VERIFY_EACH`: about half the passes of a small model change nothing).

    The objects are held, so an identical sequence of them is the same IR, not new objects
    at the addresses of freed ones; an int or key that compares equal but is another object
    counts as a change (the IR is then verified, which is always right)."""

    def __init__(self) -> None:
        self._held: list[object] | None = None

    def unchanged(self, root: Operation, keep: bool = True) -> bool:
        """Whether `root`'s IR is what it was at the previous call (False at the first);
        `keep`: remember it for the next call (without it, the walk stops at the first
        difference)."""
        before = self._held
        if keep:
            self._held = list(_read_by_verify(root))
            return before is not None and _same(before, self._held)
        self._held = None
        return before is not None and _same(before, _read_by_verify(root))


def _same(before: list[object], now: Iterable[object]) -> bool:
    items = iter(now)
    for old in before:
        if next(items, _END) is not old:
            return False
    return next(items, _END) is _END


_END = object()


def _read_by_verify(root: Operation) -> Iterator[object]:
    for op in root.walk():
        yield op
        yield op.parent
        yield len(op.operands)
        yield from op.operands
        yield len(op.results)
        for result in op.results:
            yield result.type
        for fields in (op.attributes, op.properties):
            yield len(fields)
            for name, value in fields.items():
                yield name
                yield value
        yield len(op.successors)
        yield from op.successors
        yield len(op.regions)
        for region in op.regions:
            yield region
            yield len(region.blocks)
            for block in region.blocks:
                yield block
                yield len(block.args)
                for arg in block.args:
                    yield arg
                    yield arg.type
