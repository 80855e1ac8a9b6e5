"""The command-line options the `ember` commands share: --input-shape, --input, --dim, --shapes.

They parse into what the library takes (engine/shapes.py): `args.input_shapes` is the
`input_shapes` of `ember.compile`, `args.dynamic_dims` its `dynamic_dims`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.runtime.errors import InputError

# -- the command line: --input-shape NAME=1x3x224x224 --------------------------------------------


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`name=1x3x224x224` (or `name=1,3,224,224`) -> ("name", (1, 3, 224, 224))."""
    name, sep, sizes = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"'{text}': expected NAME=SIZES, e.g. x=1x3x224x224")
    try:
        shape = tuple(int(s) for s in sizes.replace(",", "x").split("x")) if sizes else ()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}': sizes must be integers separated by x, e.g. {name}=1x3x224x224"
        ) from None
    return name, shape


class _KeyedAction(argparse.Action):
    """Collects repeated NAME=VALUE flags into {name: value}; a name given twice with
    different values is a usage error (`what` names the key in the message)."""

    what = "name"

    @staticmethod
    def convert(value: Any) -> Any:
        return value

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        value: object,
        option_string: str | None = None,
    ) -> None:
        name, parsed = value  # type: ignore[misc]
        parsed = self.convert(parsed)
        collected = dict(getattr(namespace, self.dest) or {})  # a copy: never the shared default
        if name in collected and collected[name] != parsed:
            parser.error(
                f"{option_string} gives {self.what} '{name}' twice: {collected[name]} and {parsed}"
            )
        collected[name] = parsed
        setattr(namespace, self.dest, collected)


class _InputShapeAction(_KeyedAction):
    what = "input"
    convert = staticmethod(list)


def add_input_shape_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--input-shape NAME=1x3x224x224 (repeatable), parsed into `args.input_shapes`."""
    parser.add_argument(
        "--input-shape",
        dest="input_shapes",
        action=_InputShapeAction,
        type=parse_input_shape,
        default={},
        metavar="NAME=1x3x224x224",
        help="pin the shape of an input with symbolic dims (batch, sequence length); repeatable",
    )


# -- the command line: --input NAME=FILE.npy ------------------------------------------------------


def add_input_files_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    dest: str = "input",
    help: str = "an input from a .npy file (repeat per input; NAME= may be omitted for one input)",
) -> None:
    """--input NAME=FILE.npy (repeatable), collected as a list in `args.<dest>`; read with
    `read_input_files` once the model's input names are known."""
    parser.add_argument(
        "--input", dest=dest, action="append", default=[], metavar="NAME=FILE.npy", help=help
    )


def read_input_files(items: Sequence[str], names: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays of `--input NAME=FILE.npy` items for a model with inputs `names`; a bare FILE
    names the only input. InputError names the item and the model's inputs."""
    feeds: dict[str, np.ndarray] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            if len(names) != 1:
                raise InputError(
                    f"--input {item}: the model has inputs {list(names)}; use NAME=FILE"
                )
            name, path = names[0], item
        if name not in names:
            raise InputError(
                f"--input {item}: the model has no input '{name}'; inputs: {list(names)}"
            )
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputError(f"--input {item}: cannot read {path} ({error})") from None
    return feeds


def parse_dim_range(text: str) -> tuple[str, tuple[int, int]]:
    """`batch=1:64` -> ("batch", (1, 64))."""
    name, sep, bounds = text.rpartition("=")
    low, colon, high = bounds.partition(":")
    try:
        if not sep or not name or not colon:
            raise ValueError
        return name, (int(low), int(high))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}': expected DIM=SMALLEST:LARGEST, e.g. batch=1:64"
        ) from None


def parse_dim_sizes(text: str) -> tuple[str, tuple[int, ...]]:
    """`batch=1,4,16` -> ("batch", (1, 4, 16))."""
    name, sep, sizes = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        values = tuple(int(s) for s in sizes.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}': expected DIM=SIZE,SIZE,..., e.g. batch=1,4,16"
        ) from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"'{text}': sizes must not be negative")
    return name, values


class _DimAction(_KeyedAction):
    what = "dim"


def add_dim_range_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--dim batch=1:64 (repeatable), parsed into `args.dynamic_dims`."""
    parser.add_argument(
        "--dim",
        dest="dynamic_dims",
        action=_DimAction,
        type=parse_dim_range,
        default={},
        metavar="DIM=LO:HI",
        help="the range of sizes a named (symbolic) dim may take; inputs outside it are "
        "refused before any kernel runs; repeatable",
    )


def add_dim_sizes_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--shapes batch=1,4,16 (repeatable), parsed into `args.dim_sizes`."""
    parser.add_argument(
        "--shapes",
        dest="dim_sizes",
        action=_DimAction,
        type=parse_dim_sizes,
        default={},
        metavar="DIM=SIZE,SIZE",
        help="build one static variant per size of a named dim (repeated: every combination); "
        "the artifact dispatches by input shape",
    )
