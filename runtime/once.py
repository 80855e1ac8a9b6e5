"""Running a program compiled once for every input shape (issue 10): the thin-runtime half.

engine/compile_once.py compiles a model with symbolic dims into ONE program,
`main(inputs..., outputs..., extents..., arena, weights[, status])`, whose `extents` are int64
sizes: the named dims' sizes, then the other expressions its inputs and outputs have. Each
expression is `factor * product of named dims * product of floors of them` (an `Extent`, its
floors `Term`s: a convolution's output size; a term may floor a multiple of another term,
a convolution after a Resize x2), each dim at least its minimum. `OnceProgram` runs such a
program: it reads the named dims from the input arrays (checking rank, fixed dims, dims
shared between inputs and ranges first, runtime/dims.py), computes the extents, allocates the
outputs by their dims' expressions and sizes the arena with the program's exported
`main_arena_bytes(extents...)`, growing it when a larger shape comes.

The same class serves a program compiled in this process (engine/compile_once.py's
OnceCompiledModel, over the JIT) and an artifact (`ember compile`, runtime/artifact.py): there
the manifest's `extra.compile_once` section records the dims and expressions as data
(`once_section`), checked field by field by `read_once_section` before anything runs.
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import queue
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ember.runtime.dims import DimRanges, check_input_shapes
from ember.runtime.documents import Field
from ember.runtime.errors import InputError, ResourceLimitError
from ember.runtime.executable import (
    ALIGNMENT,
    MAX_RANK,
    Manifest,
    OutputPlan,
    TensorSpec,
    aligned_empty,
    buffer_address,
    check_feed_names,
    numpy_dtype,
)
from ember.runtime.runnable import RunnableModel, checked_threads
from ember.runtime.status import check_status, new_status

# The manifest's `extra` section of a program compiled once (see `once_section`).
ONCE_KEY = "compile_once"
# The exported function giving the arena's size for the extents. Part of the ABI, never read
# from a file (as the entry's name: a manifest must not choose which symbol is called).
ARENA_FUNCTION = "main_arena_bytes"
MAX_EXTENTS = 256
_DIM_NAME = r"[A-Za-z_][A-Za-z0-9_.:/-]{0,127}"
# Lookup of an exported function: (name, argument types, result type) -> callable.
FunctionLookup = Callable[[str, Sequence[Any], Any], Callable[..., Any]]


@dataclass(frozen=True)
class Term:
    """floor((scale * inner + offset) / divisor), `inner` a named dim or another Term: a
    spatial size after convolutions, poolings and resizes (each floor((x + p) / s) + 1 of the
    one before; chained floors by positive integers compose into one, so a term nests only
    where a multiple of a floor is convolved: a conv after a Resize x2). Normalized
    (`floor_of`): gcd(scale, divisor) = 1, never a plain multiple of `inner` (that is a
    factor of an Extent), an inner term never affine (divisor 1) and, nested, scale > 1."""

    inner: str | Term
    scale: int
    offset: int
    divisor: int

    @property
    def symbol(self) -> str:
        """The named dim at the bottom of the nesting."""
        return self.inner if isinstance(self.inner, str) else self.inner.symbol

    def key(self) -> tuple[Any, ...]:
        """A total order of terms (sorted in an Extent): a dim before a term inside."""
        inner = (0, self.inner) if isinstance(self.inner, str) else (1, self.inner.key())
        return (self.symbol, inner, self.scale, self.offset, self.divisor)

    def __lt__(self, other: Term) -> bool:
        return self.key() < other.key()

    def depth(self) -> int:
        return 1 if isinstance(self.inner, str) else 1 + self.inner.depth()

    def value(self, sizes: Mapping[str, int]) -> int:
        inner = sizes[self.inner] if isinstance(self.inner, str) else self.inner.value(sizes)
        return (self.scale * inner + self.offset) // self.divisor

    def period(self) -> int:
        """P such that value(n + P) = value(n) + slope() * P (the product of the divisors)."""
        return self.divisor * (1 if isinstance(self.inner, str) else self.inner.period())

    def slope(self) -> Fraction:
        inner = Fraction(1) if isinstance(self.inner, str) else self.inner.slope()
        return inner * self.scale / self.divisor

    def smallest(self) -> int:
        """The smallest size of the dim for which this term and every term inside it are
        at least 1 (each is nondecreasing in the dim)."""
        if isinstance(self.inner, str):
            return max(1, -((self.offset - self.divisor) // self.scale))
        low = self.inner.smallest()
        if self.value({self.symbol: low}) >= 1:
            return low
        # It grows by slope() * period() (the product of the scales, >= 1) every period().
        rise = self.slope() * self.period()
        missing = 1 - self.value({self.symbol: low})
        high = low + -(-missing // int(rise)) * self.period()
        while low < high:  # the first size in (low, high] where it is >= 1
            middle = (low + high) // 2
            if self.value({self.symbol: middle}) >= 1:
                high = middle
            else:
                low = middle + 1
        return low

    def __str__(self) -> str:
        inner = self.inner if isinstance(self.inner, str) else f"({self.inner})"
        top = f"{self.scale}*{inner}" if self.scale != 1 else inner
        if self.offset:
            top = f"({top}{self.offset:+d})"
        return f"{top}//{self.divisor}" if self.divisor != 1 else top

    def to_json(self) -> dict[str, Any]:
        # A term of a dim keeps format 5's fields; a nested one has "term" for "dim".
        inner: dict[str, Any] = (
            {"dim": self.inner} if isinstance(self.inner, str) else {"term": self.inner.to_json()}
        )
        return {**inner, "scale": self.scale, "offset": self.offset, "divisor": self.divisor}


@dataclass(frozen=True)
class Extent:
    """The size of a `?` dim: `factor` times the product of `symbols` (sorted) and of
    `terms` (sorted floors of one dim each, `Term`)."""

    factor: int
    symbols: tuple[str, ...]
    terms: tuple[Term, ...] = ()

    def value(self, sizes: Mapping[str, int]) -> int:
        return (
            self.factor
            * math.prod(sizes[s] for s in self.symbols)
            * math.prod(t.value(sizes) for t in self.terms)
        )

    def __str__(self) -> str:
        alone = not self.symbols and len(self.terms) == 1 and self.factor == 1
        parts = list(self.symbols) + [str(t) if alone else f"({t})" for t in self.terms]
        parts += [str(self.factor)] if self.factor != 1 or not parts else []
        return "*".join(parts)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"factor": self.factor, "dims": list(self.symbols)}
        if self.terms:  # only then: a program without terms keeps the format of before
            document["terms"] = [t.to_json() for t in self.terms]
        return document

    def is_symbol(self) -> bool:
        """One named dim itself (factor 1)."""
        return self.factor == 1 and len(self.symbols) == 1 and not self.terms

    def times(self, other: Extent | int) -> Extent:
        """The product of two expressions (or of one and a constant)."""
        if isinstance(other, int):
            return Extent(self.factor * other, self.symbols, self.terms)
        return Extent(
            self.factor * other.factor,
            tuple(sorted(self.symbols + other.symbols)),
            tuple(sorted(self.terms + other.terms)),
        )

    def atom(self) -> tuple[str | Term, int, int, int] | None:
        """(inner, scale, offset, divisor) when this is floor((scale * inner + offset) /
        divisor) of one dim or term (a dim, a multiple of one, a term or a multiple of one);
        None otherwise (a product)."""
        if len(self.symbols) == 1 and not self.terms:
            return self.symbols[0], self.factor, 0, 1
        if len(self.terms) == 1 and not self.symbols:
            t = self.terms[0]
            if self.factor == 1:
                return t.inner, t.scale, t.offset, t.divisor
            return t, self.factor, 0, 1
        return None


# How deep terms nest (a multiple of a floor convolved, upsampled, convolved...).
MAX_DEPTH = 8


def floor_of(inner: str | Term, scale: int = 1, offset: int = 0, divisor: int = 1) -> Extent:
    """floor((scale * inner + offset) / divisor) as an Extent in normal form (scale and
    divisor positive), `inner` a named dim or a term: chained floors compose where the
    inner one is multiplied by 1, an affine inner term is substituted."""
    if scale < 1 or divisor < 1:
        raise ValueError(f"floor size ({scale}*{inner}{offset:+d})//{divisor}")
    if isinstance(inner, Term) and inner.divisor == 1:
        # scale * (a*y + b) + offset = (scale*a)*y + (scale*b + offset).
        return floor_of(inner.inner, scale * inner.scale, scale * inner.offset + offset, divisor)
    g = math.gcd(scale, divisor)
    # floor((g*a*x + o) / (g*d)) = floor((a*x + floor(o/g)) / d) for integers x.
    scale, offset, divisor = scale // g, offset // g, divisor // g
    if isinstance(inner, Term) and scale == 1:
        # floor((floor((a*y + b) / d) + o) / e) = floor((a*y + b + o*d) / (d*e)).
        return floor_of(inner.inner, inner.scale, inner.offset + offset * inner.divisor,
                        inner.divisor * divisor)  # fmt: skip
    if divisor == 1 and offset == 0:
        return Extent(scale, (inner,)) if isinstance(inner, str) else Extent(scale, (), (inner,))
    term = Term(inner, scale, offset, divisor)
    if term.depth() > MAX_DEPTH:
        raise ValueError(f"floor size {term} nests more than {MAX_DEPTH} deep")
    return Extent(1, (), (term,))


def affine(symbol: str, scale: int = 1, offset: int = 0, divisor: int = 1) -> Extent:
    """floor((scale * symbol + offset) / divisor) of a named dim as an Extent in normal form."""
    return floor_of(symbol, scale, offset, divisor)


def strided(size: Extent, offset: int, stride: int) -> Extent | None:
    """floor((size + offset) / stride) + 1 (a convolution's or pooling's output along an
    axis, offset = pads - dilation * (kernel - 1) - 1), or None when `size` is no floor of
    one dim or a multiple of one (a product)."""
    atom = size.atom()
    if atom is None:
        return None
    inner, scale, within, divisor = atom
    # floor((floor((a*x + b) / d) + p) / s) = floor((a*x + b + p*d) / (d*s)); + 1 inside.
    try:
        return floor_of(
            inner, scale, within + offset * divisor + stride * divisor, divisor * stride
        )
    except ValueError:
        return None


Dim = int | Extent


@dataclass(frozen=True)
class IOSpec:
    """An input or output of a program compiled once: dims static or Extent."""

    name: str
    dims: tuple[Dim, ...]
    dtype: str

    def shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(d.value(sizes) if isinstance(d, Extent) else d for d in self.dims)

    def declared(self) -> list[int | str | None]:
        """The dims as runtime/dims.py declares them: a size, a named dim, or None for a
        product (checked against the whole expected shape instead)."""
        return [
            d if isinstance(d, int) else (d.symbols[0] if d.is_symbol() else None)
            for d in self.dims
        ]


def _dim_json(dim: Dim) -> int | dict[str, Any]:
    return dim.to_json() if isinstance(dim, Extent) else dim


def once_section(
    inputs: Sequence[IOSpec],
    outputs: Sequence[IOSpec],
    expressions: Sequence[Extent],
    symbols: Sequence[str],
    ranges: DimRanges,
    arena_function: str | None,
    limits: Mapping[str, int],
    minimums: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The manifest's `extra.compile_once` section: the named dims (in extent order), their
    ranges, the extent arguments' expressions, each input's and output's dims (a size or
    {"factor", "dims"[, "terms"]}), whether the program exports `main_arena_bytes`, and
    (with terms) each dim's smallest size."""
    section = {
        "symbols": list(symbols),
        "ranges": {s: list(ranges[s]) for s in symbols if s in ranges},
        "extents": [e.to_json() for e in expressions],
        "inputs": {s.name: [_dim_json(d) for d in s.dims] for s in inputs},
        "outputs": {s.name: [_dim_json(d) for d in s.dims] for s in outputs},
        "arena_function": arena_function,
        "limits": {s: int(limits[s]) for s in symbols if s in limits},
    }
    if minimums:
        section["minimums"] = {s: int(minimums[s]) for s in symbols if s in minimums}
    return section


@dataclass(frozen=True)
class OnceSignature:
    """A checked `compile_once` section with the manifest's dtypes."""

    inputs: list[IOSpec]
    outputs: list[IOSpec]
    expressions: list[Extent]
    symbols: list[str]
    ranges: dict[str, tuple[int, int]]
    arena_function: str | None
    # A dim's largest size where kernels read the leading rows of a table by it (positions):
    # a larger one would read past the table.
    limits: dict[str, int]
    # A dim's smallest size where convolutions or poolings shrink it (every term >= 1).
    minimums: dict[str, int] = dataclasses.field(default_factory=dict)


def _read_term(field: Field, symbols: Sequence[str], depth: int = 1) -> Term:
    inner: str | Term
    if isinstance(field.value, dict) and "term" in field.value:
        if depth >= MAX_DEPTH:
            field["term"].fail(f"a term nested at most {MAX_DEPTH} deep")
        inner = _read_term(field["term"], symbols, depth + 1)
    else:
        inner = field["dim"].as_str(_DIM_NAME)
        if inner not in symbols:
            field["dim"].fail(f"one of the dims {list(symbols)}")
    scale = field["scale"].as_int(1, 1 << 32)
    offset = field["offset"].as_int(-(1 << 32), 1 << 32)
    divisor = field["divisor"].as_int(1, 1 << 32)
    term = Term(inner, scale, offset, divisor)
    if floor_of(inner, scale, offset, divisor).terms != (term,):
        field.fail(
            "a term in normal form (scale and divisor coprime, not a multiple of the dim or "
            "term inside, a term inside with a divisor and a scale > 1)"
        )
    return term


def _read_extent(field: Field, symbols: Sequence[str]) -> Extent:
    factor = field["factor"].as_int(1, 1 << 32)
    names = [n.as_str(_DIM_NAME) for n in field["dims"].as_list(len(symbols))]
    terms: tuple[Term, ...] = ()
    if isinstance(field.value, dict) and "terms" in field.value:
        terms = tuple(_read_term(t, symbols) for t in field["terms"].as_list(MAX_RANK))
        if not terms or list(terms) != sorted(terms):
            field["terms"].fail("a non-empty sorted list of terms")
    if (
        (not names and not terms)
        or any(n not in symbols for n in names)
        or names != sorted(set(names))
    ):
        field["dims"].fail(f"a sorted list of distinct dims among {list(symbols)}")
    return Extent(factor, tuple(names), terms)


def _minimums(expressions: Sequence[Extent]) -> dict[str, int]:
    """Each dim's smallest size for which every term of these expressions is >= 1."""
    smallest: dict[str, int] = {}
    for e in expressions:
        for t in e.terms:
            smallest[t.symbol] = max(smallest.get(t.symbol, 1), t.smallest())
    return smallest


def _each_extent(section: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    extents = section.get("extents")
    return [e for e in extents if isinstance(e, dict)] if isinstance(extents, list) else []


def uses_terms(section: Mapping[str, Any]) -> bool:
    """Whether a `compile_once` section has floor terms (artifact format 5 or more)."""
    return any("terms" in e for e in _each_extent(section))


def nests_terms(section: Mapping[str, Any]) -> bool:
    """Whether a `compile_once` section has a term of a term (artifact format 6)."""
    return any(
        isinstance(t, dict) and "term" in t
        for e in _each_extent(section)
        if isinstance(e.get("terms"), list)
        for t in e["terms"]
    )


def read_once_section(manifest: Manifest, where: str) -> OnceSignature:
    """The manifest's `extra.compile_once` section, every field checked against the manifest
    (ArtifactError naming the field): the runtime sizes buffers from it."""
    fields = Field(manifest.extra[ONCE_KEY], where, f"extra.{ONCE_KEY}")
    symbols = [s.as_str(_DIM_NAME) for s in fields["symbols"].as_list(64)]
    if not symbols or len(set(symbols)) != len(symbols):
        fields["symbols"].fail("a non-empty list of distinct dim names")
    ranges: dict[str, tuple[int, int]] = {}
    for name, bounds in fields["ranges"].as_dict().items():
        pair = Field(bounds, where, f"extra.{ONCE_KEY}.ranges.{name}")
        if name not in symbols:
            pair.fail(f"the range of one of the dims {symbols}")
        items = pair.as_list(2)
        if len(items) != 2:
            pair.fail("[smallest, largest]")
        low, high = items[0].as_int(1), items[1].as_int(1)
        if low > high:
            pair.fail("[smallest, largest] with smallest <= largest")
        ranges[name] = (low, high)
    expressions = [_read_extent(e, symbols) for e in fields["extents"].as_list(MAX_EXTENTS)]
    # The entry's first extents are the named dims themselves (engine/compile_once.py).
    if expressions[: len(symbols)] != [Extent(1, (s,)) for s in symbols]:
        fields["extents"].fail(f"a list starting with the dims {symbols} themselves (factor 1)")
    if len(set(expressions)) != len(expressions):
        fields["extents"].fail("a list of distinct expressions")

    def specs(key: str, tensors: Sequence[TensorSpec]) -> list[IOSpec]:
        section = fields[key]
        # By name, not by order: the library's own copy of the manifest has its keys sorted.
        if sorted(section.as_dict()) != sorted(t.name for t in tensors):
            section.fail(f"an object with the {key} {[t.name for t in tensors]}")
        result = []
        for tensor in tensors:
            entry = section[tensor.name]
            dims: list[Dim] = []
            for k, dim in enumerate(entry.as_list(MAX_RANK)):
                if isinstance(dim.value, dict):
                    extent = _read_extent(dim, symbols)
                    if extent not in expressions:
                        dim.fail(f"one of the extents {[str(e) for e in expressions]}")
                    if k >= len(tensor.shape) or tensor.shape[k] != 0:
                        dim.fail(f"a size (the manifest's {key} hold {list(tensor.shape)})")
                    dims.append(extent)
                else:
                    size = dim.as_int()
                    if k >= len(tensor.shape) or size != tensor.shape[k]:
                        dim.fail(f"the size in the manifest's {key} ({list(tensor.shape)})")
                    dims.append(size)
            if len(dims) != len(tensor.shape):
                entry.fail(f"{len(tensor.shape)} dims (the rank of '{tensor.name}')")
            result.append(IOSpec(tensor.name, tuple(dims), tensor.dtype))
        return result

    inputs = specs("inputs", manifest.inputs)
    outputs = specs("outputs", manifest.outputs)
    # Every dim is read from some input axis of its own.
    plain = {
        d.symbols[0] for s in inputs for d in s.dims if isinstance(d, Extent) and d.is_symbol()
    }
    missing = [s for s in symbols if s not in plain]
    if missing:
        fields["inputs"].fail(f"inputs giving every dim ({missing} are given by none)")
    arena = fields["arena_function"]
    if arena.value is not None:
        arena.as_str(ARENA_FUNCTION)
    limits: dict[str, int] = {}
    for name, bound in fields["limits"].as_dict().items():
        limit = Field(bound, where, f"extra.{ONCE_KEY}.limits.{name}")
        if name not in symbols:
            limit.fail(f"the limit of one of the dims {symbols}")
        limits[name] = limit.as_int(1)
    minimums: dict[str, int] = {}
    if "minimums" in fields.value:
        for name, bound in fields["minimums"].as_dict().items():
            smallest = Field(bound, where, f"extra.{ONCE_KEY}.minimums.{name}")
            if name not in symbols:
                smallest.fail(f"the smallest size of one of the dims {symbols}")
            minimums[name] = smallest.as_int(1)
    needed = _minimums(expressions)
    if any(minimums.get(s, 1) < n for s, n in needed.items()):
        fields["minimums"].fail(f"at least {needed} (the sizes that keep every term >= 1)")
    return OnceSignature(
        inputs,
        outputs,
        expressions,
        symbols,
        ranges,
        None if arena.value is None else ARENA_FUNCTION,
        limits,
        minimums,
    )


def library_function(library: ctypes.CDLL) -> FunctionLookup:
    """Look up exported functions of a loaded library (AttributeError if absent)."""

    def lookup(name: str, argtypes: Sequence[Any], restype: Any = None) -> Callable[..., Any]:
        function = getattr(library, name)
        function.argtypes = list(argtypes)
        function.restype = restype
        return function

    return lookup


@dataclass(frozen=True)
class _ShapePlan:
    extents: tuple[int, ...]
    outputs: OutputPlan
    arena_bytes: int


@dataclass
class _Workspace:
    arena: np.ndarray
    status: np.ndarray


class OnceProgram(RunnableModel):
    """A program compiled once for every input shape: `main(inputs..., outputs...,
    extents..., arena, weights, status)`; the extents are the symbols' sizes (then the other
    expressions the inputs and outputs have), read from the inputs' shapes. Each run's
    inputs are checked (names, dtypes, rank, fixed dims, shared dims, ranges: InputError naming
    the input, the dim and the sizes) before anything runs; its outputs are fresh arrays of
    their expressions' shapes; the arena (one per in-flight run) grows to
    `main_arena_bytes(extents)` when a larger shape comes."""

    def __init__(
        self,
        function: FunctionLookup,
        signature: OnceSignature,
        weights: np.ndarray,
        status_sites: list[dict[str, Any]] | None,
        static_arena_bytes: int,
        threads: int,
        memory_limit: int | None = None,
    ) -> None:
        self.inputs = list(signature.inputs)
        self.outputs = list(signature.outputs)
        self.expressions = list(signature.expressions)
        self.symbols = list(signature.symbols)
        self.ranges = dict(signature.ranges)
        self.limits = dict(signature.limits)
        self.minimums = dict(signature.minimums)
        self._weights = weights
        self.status_sites = status_sites
        pointers = len(self.inputs) + len(self.outputs)
        tail = 2 + (self.status_sites is not None)
        self._entry = function(
            "main",
            [ctypes.c_void_p] * pointers
            + [ctypes.c_int64] * len(self.expressions)
            + [ctypes.c_void_p] * tail,
            None,
        )
        # No buffer with `?` dims inside (every one is an input or output): a static arena.
        static_arena = max(static_arena_bytes, ALIGNMENT)
        self._arena_bytes = (
            function(
                signature.arena_function,
                [ctypes.c_int64] * len(self.expressions),
                ctypes.c_int64,
            )
            if signature.arena_function is not None
            else lambda *_: static_arena
        )
        self._set_threads = function("ember_set_num_threads", [ctypes.c_int32], None)
        # Where each symbol's size is read: (input position, axis).
        self._symbol_at: dict[str, tuple[int, int]] = {}
        for k, spec in enumerate(self.inputs):
            for axis, d in enumerate(spec.dims):
                if isinstance(d, Extent) and d.is_symbol():
                    self._symbol_at.setdefault(d.symbols[0], (k, axis))
        self._declared = [(s.name, s.declared()) for s in self.inputs]
        self._dtypes = [numpy_dtype(s.dtype) for s in self.inputs]
        self._input_names = [s.name for s in self.inputs]
        self._input_name_set = frozenset(self._input_names)
        self._workspaces: queue.SimpleQueue[_Workspace] = queue.SimpleQueue()
        self._last_plan: tuple[tuple[tuple[int, ...], ...], _ShapePlan] | None = None
        self._weights_address = weights.ctypes.data
        self._memory_limit = memory_limit
        self.bounded: dict[str, Any] = {}
        self.graph_outputs = None
        self.set_num_threads(threads)

    @property
    def input_names(self) -> list[str]:
        return list(self._input_names)

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    @property
    def output_specs(self) -> list[TensorSpec]:
        """The outputs a run gives: a dim that depends on the input shapes is -1."""
        return [
            TensorSpec(s.name, tuple(-1 if isinstance(d, Extent) else d for d in s.dims), s.dtype)
            for s in self.outputs
        ]

    def declared_inputs(self) -> list[tuple[str, list[int | str | None]]]:
        """Each input's (name, dims): a size, a named dim, or None for a product of dims."""
        return [(name, list(dims)) for name, dims in self._declared]

    def check_shapes(self, shapes: Mapping[str, Sequence[int]]) -> None:
        """InputError unless these input shapes (some or all inputs) fit the declared dims,
        their ranges and each other."""
        check_input_shapes(self._declared, shapes, ranges=self.ranges)

    def set_num_threads(self, threads: int) -> None:
        self.threads = checked_threads(threads)
        self._set_threads(self.threads)

    def sizes_of(self, arrays: Sequence[np.ndarray]) -> dict[str, int]:
        """The symbols' sizes in these input arrays."""
        missing = [s for s in self.symbols if s not in self._symbol_at]
        if missing:  # cannot happen: every symbol is some input's dim (read_once_section)
            raise InputError(f"dims {missing} are given by no input")
        return {s: int(arrays[k].shape[axis]) for s, (k, axis) in self._symbol_at.items()}

    def _plan(self, arrays: Sequence[np.ndarray]) -> _ShapePlan:
        """The extents, output layout and arena size of these inputs' shapes (checked)."""
        self.check_shapes({s.name: a.shape for s, a in zip(self.inputs, arrays, strict=True)})
        sizes = self.sizes_of(arrays)
        for spec, array in zip(self.inputs, arrays, strict=True):
            if array.shape != spec.shape(sizes):
                raise InputError(
                    f"input '{spec.name}': expected shape {list(spec.shape(sizes))} for dims "
                    f"{sizes}, given {list(array.shape)}"
                )
        empty = [s for s, n in sizes.items() if n == 0]
        if empty:
            # The program's kernels are compiled for sizes >= 1 (the probes); an empty dim is
            # refused rather than run (ember.compile specialises it instead).
            k, axis = self._symbol_at[empty[0]]
            raise InputError(
                f"input '{self.inputs[k].name}': dim '{empty[0]}' (axis {axis}) is 0; a "
                f"program compiled once serves sizes >= 1"
            )
        for symbol, smallest in self.minimums.items():
            if sizes[symbol] < smallest:
                k, axis = self._symbol_at[symbol]
                raise InputError(
                    f"input '{self.inputs[k].name}': dim '{symbol}' (axis {axis}) is "
                    f"{sizes[symbol]}, less than {smallest}, the smallest size the model's "
                    "convolutions and poolings take (a smaller one leaves no output pixel)"
                )
        for symbol, limit in self.limits.items():
            if sizes[symbol] > limit:
                k, axis = self._symbol_at[symbol]
                raise InputError(
                    f"input '{self.inputs[k].name}': dim '{symbol}' (axis {axis}) is "
                    f"{sizes[symbol]}, more than the {limit} rows of the table the model "
                    "slices by it (a position table)"
                )
        extents = tuple(e.value(sizes) for e in self.expressions)
        outputs = OutputPlan([TensorSpec(s.name, s.shape(sizes), s.dtype) for s in self.outputs])
        needed = max(int(self._arena_bytes(*extents)), ALIGNMENT)
        if self._memory_limit is not None and needed > self._memory_limit:
            raise ResourceLimitError(
                f"the model's intermediate tensors need an arena of {needed} bytes at dims "
                f"{sizes}, more than the limit of {self._memory_limit} (memory_limit=)"
            )
        return _ShapePlan(extents, outputs, needed)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if type(feeds) is not dict or feeds.keys() != self._input_name_set:
            check_feed_names(feeds, self._input_names)
        arrays = []
        for spec, dtype in zip(self.inputs, self._dtypes, strict=True):
            array = np.ascontiguousarray(feeds[spec.name])
            if array.dtype != dtype:
                raise InputError(
                    f"input '{spec.name}': expected dtype {dtype.name}, given {array.dtype}"
                )
            arrays.append(array)
        # The plan of the last shapes (the usual case: runs repeat a shape).
        shapes = tuple(a.shape for a in arrays)
        last = self._last_plan
        if last is not None and last[0] == shapes:
            plan = last[1]
        else:
            plan = self._plan(arrays)
            self._last_plan = (shapes, plan)
        outputs, output_addresses = plan.outputs.allocate()
        try:
            workspace = self._workspaces.get_nowait()
        except queue.Empty:
            workspace = _Workspace(aligned_empty((plan.arena_bytes,)), new_status())
        if workspace.arena.nbytes < plan.arena_bytes:
            # A larger shape than this workspace saw: grow (by at least half, so that slowly
            # growing shapes do not reallocate every run).
            workspace.arena = aligned_empty(
                (max(plan.arena_bytes, workspace.arena.nbytes * 3 // 2),)
            )
        try:
            self._entry(
                *[buffer_address(a) for a in arrays],
                *output_addresses,
                *plan.extents,
                workspace.arena.ctypes.data,
                self._weights_address,
                *([workspace.status.ctypes.data] if self.status_sites is not None else []),
            )
            failed = workspace.status.copy() if workspace.status.any() else None
            if failed is not None:
                workspace.status.fill(0)
        finally:
            self._workspaces.put(workspace)
        if failed is not None:
            check_status(failed, self.status_sites or [])
        return {s.name: o for s, o in zip(self.outputs, outputs, strict=True)}
