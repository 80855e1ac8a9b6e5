"""Checking a run's input shapes against declared dims, before any kernel runs.

Shared by the compiler's entry points (engine/shapes.py: pinned and specialising models) and
the thin runtime (a multi-variant artifact, runtime/artifact.py), so both refuse the same
inputs with the same messages: a rank mismatch, a fixed dim given another size, two inputs
that disagree on a named dim they share, a named dim outside its range (`dynamic_dims`), each
an InputError naming the input, the dim and the sizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ember.runtime.errors import InputError

# A declared dim: a fixed size, the name of a symbolic dim (dim_param), or unknown.
Dim = int | str | None
# dim_param -> (smallest, largest) size an input may give it.
DimRanges = Mapping[str, tuple[int, int]]


def format_dims(dims: Sequence[Dim] | None) -> str:
    """[N, 3, ?] for declared dims, [2, 3] for a concrete shape, [...] for an unknown rank."""
    if dims is None:
        return "[...]"
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def check_in_range(
    ranges: DimRanges, dim: str, size: int, what: str, error: type[Exception]
) -> None:
    """`error` unless `size` lies in the range of named dim `dim` (if it has one)."""
    if dim in ranges:
        low, high = ranges[dim]
        if not low <= size <= high:
            raise error(
                f"{what}: dim '{dim}' is {size}, outside its range {low}..{high} (dynamic_dims)"
            )


def _expected(name: str, dims: Sequence[Dim] | None) -> str:
    return f"input '{name}': expected shape {format_dims(dims)}"


def check_input_shapes(
    declared: Sequence[tuple[str, Sequence[Dim] | None]],
    shapes: Mapping[str, Sequence[int]],
    *,
    pinned: Mapping[str, Sequence[int]] | None = None,
    named: Mapping[str, int] | None = None,
    ranges: DimRanges | None = None,
) -> None:
    """InputError unless the arrays' `shapes` fit the `declared` (name, dims) inputs, the
    `pinned` shapes, the `named` dims' pinned sizes, their `ranges` and each other (inputs
    sharing a named dim must give it the same size); a size of 0 is a size like any other.
    Inputs absent from `shapes` are not checked."""
    pinned = pinned or {}
    named = named or {}
    ranges = ranges or {}
    bound: dict[str, tuple[int, str, int]] = {}  # dim_param -> (size, input, axis)
    for name, dims in declared:
        if name not in shapes:
            continue
        shape = tuple(shapes[name])
        if name in pinned and shape != tuple(pinned[name]):
            raise InputError(
                f"input '{name}': expected shape {list(pinned[name])} (pinned), given {list(shape)}"
            )
        if dims is None:
            continue
        if len(shape) != len(dims):
            raise InputError(f"{_expected(name, dims)}, given {list(shape)} (rank {len(shape)})")
        for axis, (dim, size) in enumerate(zip(dims, shape)):
            if isinstance(dim, int) and size != dim:
                raise InputError(f"{_expected(name, dims)}, given {list(shape)}")
            if not isinstance(dim, str):
                continue
            if dim in ranges:
                check_in_range(ranges, dim, size, f"input '{name}' given {list(shape)}", InputError)
            if dim in named and named[dim] != size:
                raise InputError(
                    f"{_expected(name, dims)}, given {list(shape)}: dim '{dim}' (axis {axis}) is pinned "
                    f"to {named[dim]}"
                )
            if dim in bound and bound[dim][0] != size:
                other_size, other, other_axis = bound[dim]
                raise InputError(
                    f"inputs '{other}' and '{name}' share dim '{dim}' but were given "
                    f"{other_size} (axis {other_axis} of {list(shapes[other])}) and {size} "
                    f"(axis {axis} of {list(shape)})"
                )
            bound.setdefault(dim, (size, name, axis))
