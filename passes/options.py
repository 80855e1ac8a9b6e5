"""Pass options: dataclass fields of a pass, set from the pipeline text.

`lower-kernels-to-loops{vector-width=8 threads=1}` builds the pass with its fields
`vector_width=8` and `threads=1` (xDSL's `PassPipeline.parse_spec`: a `-` in an option's name
is a `_` in the field's). An option left unset (None) takes the compile context's value: the
Target's (core/target.py, carried by the EmberContext) or the limit's (core/limits.py), so the
default pipeline compiles exactly as without options; a value given overrides it for that one
pass. `pipeline_text` (passes/pipeline.py) prints the options that are set.

Values are checked when the pass is built (a `PassOptionError` naming the pass, the option and
what it takes, before any IR is touched) and, for what the machine must support (an int8
instruction set), against the Target: by `check_options_for` before a pipeline runs (`ember
opt`), and by the pass itself when it runs.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields, replace
from typing import get_type_hints

from xdsl.context import Context
from xdsl.passes import ModulePass
from xdsl.utils.arg_spec import ArgSpec

from ember.core.context import compile_context
from ember.core.target import Target
from ember.runtime.errors import PassOptionError

# float32 lanes of one SIMD register: AVX2, AVX-512. A width above the machine's still runs
# (LLVM splits the vectors); the kernels are written and tested for these two.
VECTOR_WIDTHS = (8, 16)
# Architectural SIMD registers, which size the register blocking: AVX2, AVX-512.
VECTOR_REGISTERS = (16, 32)
MAX_THREADS = 1024
MAX_BYTES = 2**63 - 1  # a byte count the IR's int64 attributes hold
_TARGET_FIELDS = frozenset(f.name for f in fields(Target))


def option_text(field: str) -> str:
    """A field's name as the pipeline text spells the option: `vector_width` -> `vector-width`."""
    return field.replace("_", "-")


def option_error(pass_: ModulePass, field: str, message: str) -> PassOptionError:
    value = getattr(pass_, field)
    shown = str(value).lower() if isinstance(value, bool) else repr(value)
    return PassOptionError(
        f"pass '{pass_.name}': option {option_text(field)}={shown} is invalid: {message}"
    )


def check_choice(pass_: ModulePass, field: str, choices: Collection[int | str]) -> None:
    """The option, if set, is one of `choices` (a bool is not an int here)."""
    value = getattr(pass_, field)
    if value is not None and (isinstance(value, bool) or value not in choices):
        raise option_error(pass_, field, f"it takes one of {', '.join(map(str, choices))}")


def check_range(pass_: ModulePass, field: str, low: int, high: int) -> None:
    """The option, if set, is an integer in [low, high]."""
    value = getattr(pass_, field)
    if value is not None and (isinstance(value, bool) or not low <= value <= high):
        raise option_error(pass_, field, f"it takes an integer from {low:,} to {high:,}")


def _type_text(cls: type[ModulePass], field: str) -> str:
    """A field's type as a user reads it: `int`, `bool`, `str` (None is "unset")."""
    hint = str(get_type_hints(cls)[field])
    return re.sub(r"\s*\|\s*None|<class '(\w+)'>", lambda m: m.group(1) or "", hint)


def options_help(cls: type[ModulePass]) -> str:
    """`cls`'s options as the pipeline text spells them, with their types."""
    names = [f.name for f in fields(cls)]
    return ", ".join(f"{option_text(n)} ({_type_text(cls, n)})" for n in names) or "none"


def build_pass(cls: type[ModulePass], spec: ArgSpec) -> ModulePass:
    """The pass `spec` names, its options set; a PassOptionError naming the pass and the
    option for an option it lacks or a value of the wrong type (xDSL's own messages name
    neither)."""
    given = spec.normalize_parameter_names().parameters
    known = {f.name for f in fields(cls)}
    for option, values in given.items():
        if option not in known:
            raise PassOptionError(
                f"pass '{cls.name}' has no option {option_text(option)} "
                f"(its options: {options_help(cls)})"
            )
        try:  # each option alone, so that the error names the one of the wrong type
            cls.from_spec(ArgSpec(cls.name, {option: values}))
        except PassOptionError:
            raise
        except ValueError:
            shown = ",".join(_value_text(v) for v in values)
            raise PassOptionError(
                f"pass '{cls.name}': option {option_text(option)}={shown} is invalid: it "
                f"takes a value of type {_type_text(cls, option)}"
            ) from None
    return cls.from_spec(spec)


def pass_text(pass_: ModulePass) -> str:
    """`name{option=value ...}` with the options set to other than their defaults, spelled
    as the pipeline text takes them (`vector-width=8`, `in-place=false`, `int8-isa=avx2`)."""
    options = []
    for option, values in pass_.spec().parameters.items():
        shown = [_value_text(v) for v in values]
        options.append(f"{option_text(option)}={','.join(shown)}" if shown else option_text(option))
    return f"{pass_.name}{{{' '.join(options)}}}" if options else pass_.name


def _value_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    bare = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(value)) and value not in ("true", "false")
    if isinstance(value, str) and not bare:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


@dataclass(frozen=True)
class TargetPass(ModulePass):
    """A pass that reads the compile Target; its options override the Target's values of the
    same name (`vector-width`, `vector-registers`, and a subclass's `threads`)."""

    vector_width: int | None = None
    vector_registers: int | None = None

    def __post_init__(self) -> None:
        check_choice(self, "vector_width", VECTOR_WIDTHS)
        check_choice(self, "vector_registers", VECTOR_REGISTERS)

    def target(self, ctx: Context) -> Target:
        """The context's Target with this pass's options in place of its values."""
        return self.target_for(compile_context(ctx, self.name).target)

    def target_for(self, target: Target) -> Target:
        """`target` with this pass's options in place of its values; a PassOptionError if it
        cannot honour an option (`check_target`)."""
        overrides = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name in _TARGET_FIELDS and getattr(self, f.name) is not None
        }
        target = replace(target, **overrides) if overrides else target
        self.check_target(target)
        return target

    def check_target(self, target: Target) -> None:
        """Raise a PassOptionError for an option `target` cannot honour (default: none)."""


def check_options_for(passes: Sequence[ModulePass], target: Target) -> None:
    """Every option of `passes` that the machine must support, checked against `target`
    before any pass runs (a pass checks them again when it runs)."""
    for pass_ in passes:
        if isinstance(pass_, TargetPass):
            pass_.target_for(target)
