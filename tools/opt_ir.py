"""IR text in and out for `ember opt`: printing (with large constants elided), parsing, weights.

IR text never carries weights: `graph.constant`/`kernel.weight` ops name entries of the
WeightStore, and after `place-weights` the entry function's `ember.weight_offsets` names them.
They travel in a sidecar `.npz` (one array per weight name) written next to any IR file the
tool dumps, and read back with `--weights FILE`.
"""

from __future__ import annotations

import argparse
import io
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import (
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DictionaryAttr,
    ModuleOp,
    StringAttr,
)
from xdsl.ir import Attribute
from xdsl.printer import Printer
from xdsl.utils.exceptions import ParseError

from ember.core.context import EmberContext
from ember.dialects.dtypes import numpy_dtype_for
from ember.dialects.weights import WeightStore

# Dense attributes with more elements than this are printed as a placeholder.
ELIDE_LIMIT = 16


class InputError(ValueError):
    """A user-supplied file (model, IR text, weights) cannot be used; the message says why."""


@dataclass(eq=False, repr=False)
class ElidingPrinter(Printer):
    """A Printer that shortens dense arrays/elements above `limit` to a counted placeholder.

    The placeholder does not parse back, so it is used only for text meant for people; every
    file the tool writes for re-reading is printed in full.
    """

    limit: int = ELIDE_LIMIT
    elided: int = field(default=0, init=False)

    def print_attribute(self, attribute: Attribute) -> None:
        if isinstance(attribute, DenseArrayBase):
            count = len(attribute)
            if count > self.limit:
                self.elided += 1
                self.print_string("array<")
                self.print_attribute(attribute.elt_type)
                self.print_string(f": __elided__ /* {count} elements */>")
                return
        if isinstance(attribute, DenseIntOrFPElementsAttr):
            count = len(attribute)
            if count > self.limit:
                self.elided += 1
                self.print_string(f"dense<__elided__ /* {count} elements */> : ")
                self.print_attribute(attribute.type)
                return
        super().print_attribute(attribute)


def print_ir(module: ModuleOp, elide: bool = True, limit: int = ELIDE_LIMIT) -> str:
    """The module as text; with `elide`, large dense constants become placeholders."""
    stream = io.StringIO()
    printer = ElidingPrinter(stream=stream, limit=limit) if elide else Printer(stream=stream)
    printer.print_op(module)
    stream.write("\n")
    return stream.getvalue()


def parse_ir(text: str, ctx: EmberContext, source: str = "<input>") -> ModuleOp:
    """Parse ember IR text; a syntax error names the file, line and column."""
    from xdsl.parser import Parser

    if "__elided__" in text:
        raise InputError(
            f"'{source}' contains elided constants (__elided__); regenerate it with "
            "--no-elide-large-constants"
        )
    try:
        return Parser(ctx, text, source).parse_module()
    except ParseError as error:
        raise InputError(f"cannot parse IR in '{source}':\n{error}") from None


def referenced_weights(module: ModuleOp) -> list[str]:
    """Weight names the IR needs, in order of first reference."""
    names: dict[str, None] = {}
    for op in module.walk():
        ref = op.properties.get("ref")
        if isinstance(ref, StringAttr) and op.name in ("graph.constant", "kernel.weight"):
            names[ref.data] = None
        offsets = op.attributes.get("ember.weight_offsets")
        if isinstance(offsets, DictionaryAttr):
            names.update(dict.fromkeys(offsets.data))
    return list(names)


def save_weights(path: str | os.PathLike[str], weights: WeightStore, names: list[str]) -> None:
    """Write the named weights to an .npz (uncompressed: weights are incompressible floats)."""
    # np.savez would turn a name containing '/' into a directory inside the zip and append
    # '.npy'; writing the members ourselves keeps every name exactly as the IR spells it.
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in names:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(weights[name]))


def load_weights(path: str | os.PathLike[str]) -> WeightStore:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return WeightStore({name: archive[name] for name in archive.files})
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise InputError(f"cannot read weights file '{os.fspath(path)}': {error}") from None


def sidecar_path(ir_path: str | os.PathLike[str]) -> Path:
    """Where the weights of an IR file live: the same name with the suffix `.npz`."""
    return Path(ir_path).with_suffix(".npz")


def write_ir(
    path: str | os.PathLike[str], module: ModuleOp, weights: WeightStore, elide: bool = False
) -> Path | None:
    """Write IR text and, if it references weights, its sidecar .npz; returns the .npz path."""
    Path(path).write_text(print_ir(module, elide=elide))
    names = referenced_weights(module)
    if not names:
        return None
    npz = sidecar_path(path)
    save_weights(npz, weights, names)
    return npz


def weight_slots(module: ModuleOp) -> Iterator[tuple[str, tuple[int, ...], np.dtype]]:
    """(name, shape, dtype) of every `graph.constant`/`kernel.weight` of `module`, in IR order."""
    for op in module.walk():
        ref = op.properties.get("ref")
        if isinstance(ref, StringAttr) and op.name in ("graph.constant", "kernel.weight"):
            result_type = op.results[0].type
            shape = tuple(result_type.get_shape())  # type: ignore[attr-defined]
            yield ref.data, shape, numpy_dtype_for(result_type.get_element_type())  # type: ignore[attr-defined]


def seeded_weights(module: ModuleOp, seed: int = 0) -> dict[str, np.ndarray]:
    """A seeded array for every `graph.constant`/`kernel.weight` of `module`, shaped and typed as
    its result: what `--random-weights` gives hand-written IR (the IR tests' .mlir files).

    Values are drawn in [0.5, 1.5) (integers: 1), so that variances, divisors and the operands
    of sqrt/log are valid wherever a pass folds them."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for name, shape, dtype in weight_slots(module):
        values = rng.uniform(0.5, 1.5, shape)
        weights[name] = values.astype(dtype) if dtype.kind in "fc" else np.ones(shape, dtype)
    return weights


def weight_value(text: str) -> tuple[str, float]:
    """`NAME=VALUE` of `ember opt --weight` as (name, value)."""
    name, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or not name or number is None:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a number, got '{text}'")
    return name, number


def filled_weight(module: ModuleOp, name: str, value: float) -> np.ndarray:
    """The weight `name` of `module` as an array of `value`, shaped and typed as its constant."""
    for slot, shape, dtype in weight_slots(module):
        if slot == name:
            return np.full(shape, value).astype(dtype)
    raise InputError(f"--weight {name}={value}: the IR names no weight '{name}'")


def check_weights(module: ModuleOp, weights: WeightStore, source: str) -> None:
    missing = [n for n in referenced_weights(module) if n not in weights]
    if missing:
        shown = ", ".join(f"'{n}'" for n in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(
            f"'{source}' references {len(missing)} weight(s) not in the weights file: "
            f"{shown}{more}; pass the .npz written next to the IR with --weights FILE "
            "(hand-written IR: --random-weights)"
        )
