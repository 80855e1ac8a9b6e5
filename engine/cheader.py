"""`ember.h`: the C interface of an artifact's model.so, written beside it by `ember compile`.

The header is generated from the same description the library carries (runtime/artifact.py
`describe`): the entry point's type with one parameter per input and output, the buffer sizes,
the status record's layout and call sites, and `ember_run`, which calls the entry from arrays
of buffers (so a program can be written once for any model: docs/c_example.c). It is
documentation for C callers: `ember.runtime.load` never reads it, so the manifest does not
list it.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ember import __version__
from ember.runtime.artifact import LIBRARY_FILE, MODEL_INFO_SYMBOL, SET_THREADS_SYMBOL, WEIGHTS_FILE
from ember.runtime.executable import (
    ALIGNMENT,
    BOUNDED_KEY,
    DTYPE_BYTES,
    SMALL_DTYPES,
    Executable,
)
from ember.runtime.once import ARENA_FUNCTION, ONCE_KEY
from ember.runtime.status import (
    BOUND,
    CLAIM,
    CODE,
    DIM,
    ERROR_MESSAGES,
    SITE,
    SITES_KEY,
    STATUS_WORDS,
    VALUE,
    describe_site,
)

HEADER_FILE = "ember.h"

# The C type of one element of each dtype; 16-bit floats are passed as their bits.
C_TYPES = {
    "float16": "uint16_t",
    "bfloat16": "uint16_t",
    "float32": "float",
    "float64": "double",
    "int8": "int8_t",
    "int16": "int16_t",
    "int32": "int32_t",
    "int64": "int64_t",
    "uint8": "uint8_t",
    "uint16": "uint16_t",
    "uint32": "uint32_t",
    "uint64": "uint64_t",
    "bool": "uint8_t",
}
# The 8-, 4- and 2-bit types: one byte each, as ml_dtypes holds them (an int4 is the low nibble).
C_TYPES.update(dict.fromkeys(SMALL_DTYPES, "uint8_t"))
assert C_TYPES.keys() == DTYPE_BYTES.keys()

_STATUS_WORDS_DOC = {
    CODE: "error code: 0 none, else an EMBER_ERROR_* value",
    SITE: "1 + the index in EMBER_STATUS_SITES of the kernel call that failed",
    VALUE: "the offending value (an index as the model gave it)",
    BOUND: "the size it had to fit",
    DIM: "the dimension (or argument, or batch row) it concerns",
    CLAIM: "claim word (the first failing thread wins)",
}


def c_string(text: str) -> str:
    """A C string literal of `text` (UTF-8; octal escapes, which never run into a next digit
    the way \\x escapes do)."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _comment_text(text: str) -> str:
    """`text` made safe inside a /* */ comment (printable ASCII, no comment terminator)."""
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text.replace("*/", "* /")


def _identifiers(prefix: str, names: Sequence[str]) -> list[str]:
    """Distinct C parameter names for tensor names (`input:0` -> `in_input_0`)."""
    result: list[str] = []
    for name in names:
        base = prefix + re.sub(r"[^A-Za-z0-9_]", "_", name)
        candidate, n = base, 1
        while candidate in result:
            n += 1
            candidate = f"{base}_{n}"
        result.append(candidate)
    return result


def _shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _elements(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _initializer(items: Sequence[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _tensor_table(kind: str, specs: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = []
    for i, spec in enumerate(specs):
        nbytes = _elements(spec["shape"]) * DTYPE_BYTES[spec["dtype"]]
        rows.append(
            f"{kind:<6} {i:>2}  {_comment_text(spec['name'])!s:<20} {spec['dtype']:<8} "
            f"{_shape(spec['shape']):<20} {nbytes:>12} bytes"
        )
    return rows


def _tensor_macros(kind: str, specs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per-tensor macros (EMBER_INPUT_0_BYTES, ...) and the arrays a generic program loops over."""
    upper = kind.upper()
    lines = [f"#define EMBER_NUM_{upper}S {len(specs)}"]
    for i, spec in enumerate(specs):
        shape, dtype = spec["shape"], spec["dtype"]
        lines += [
            "",
            f"/* {kind} {i}: {_comment_text(spec['name'])}, {dtype} {_shape(shape)} */",
            f"typedef {C_TYPES[dtype]} ember_{kind}_{i}_t;",
            f"#define EMBER_{upper}_{i}_NAME {c_string(spec['name'])}",
            f"#define EMBER_{upper}_{i}_DTYPE {c_string(dtype)}",
            f"#define EMBER_{upper}_{i}_RANK {len(shape)}",
        ]
        if shape:  # C has no empty initializer before C23
            lines.append(f"#define EMBER_{upper}_{i}_DIMS {_initializer([str(d) for d in shape])}")
        lines += [
            f"#define EMBER_{upper}_{i}_ELEMENTS {_elements(shape)}ull",
            f"#define EMBER_{upper}_{i}_BYTES {_elements(shape) * DTYPE_BYTES[dtype]}ull",
        ]
    if not specs:  # nor an empty array
        return lines
    lines += [
        "",
        f"/* The {kind}s in order, for programs that handle any model. */",
        f"#define EMBER_{upper}_NAMES {_initializer([c_string(s['name']) for s in specs])}",
        f"#define EMBER_{upper}_DTYPES {_initializer([c_string(s['dtype']) for s in specs])}",
        f"#define EMBER_{upper}_SHAPES "
        f"{_initializer([c_string(_shape(s['shape'])) for s in specs])}",
        f"#define EMBER_{upper}_BYTES_LIST "
        f"{_initializer([f'EMBER_{upper}_{i}_BYTES' for i in range(len(specs))])}",
        f"#define EMBER_{upper}_ELEMENTS_LIST "
        f"{_initializer([f'EMBER_{upper}_{i}_ELEMENTS' for i in range(len(specs))])}",
    ]
    return lines


def render_header(description: Mapping[str, Any]) -> str:
    """The text of ember.h for an artifact whose library describes itself as `description`."""
    inputs, outputs = description["inputs"], description["outputs"]
    extra = description.get("extra", {})
    sites = extra.get(SITES_KEY)
    profile = extra.get("profile")
    target = description["target"]
    source = description.get("source", {})
    weights_sha256 = description["files"][WEIGHTS_FILE]["sha256"]
    features = ", ".join(target["required_features"]) or "none beyond the architecture"
    intro = (
        f"Generated by ember {__version__} for {source.get('name', 'a model')} (sha256 "
        f"{source.get('sha256', '?')}), compiled for {target['arch']} cpu {target['cpu']} "
        f"(needs: {features}) and {description['threads']} threads by default. It describes "
        f"this artifact only: recompiling the model rewrites it."
    )
    usage = [
        f'1. dlopen("{LIBRARY_FILE}") and look up EMBER_ENTRY_SYMBOL and '
        "EMBER_SET_NUM_THREADS_SYMBOL with dlsym. ember's ABI names the entry point "
        f'"{Executable.ENTRY_SYMBOL}", which would clash with a C program\'s own main, so '
        "this header declares function-pointer types, not prototypes, and the library is "
        "loaded at run time rather than linked.",
        f"2. Read {WEIGHTS_FILE} (EMBER_WEIGHTS_BYTES bytes) into a buffer aligned to "
        "EMBER_ALIGNMENT bytes; allocate the arena (EMBER_ARENA_BYTES) and the outputs aligned "
        "the same way (ember's runtime also aligns them; give every buffer at least "
        "EMBER_ALIGNMENT bytes). The weights are only read: concurrent runs may share them, "
        "but each needs its own arena, outputs and status record.",
        "3. Call ember_set_num_threads once (threads are libgomp's), then the entry (or "
        "ember_run) with the inputs, the outputs, the arena, the weights and a zeroed status "
        "record. With more than one thread, a call starts one libgomp team for the whole run: "
        "the calling thread runs the model, the others take chunks of its parallel kernels "
        "and, between kernels, spin, then sleep until the next kernel wakes them. Calls from several threads at once are allowed: the first owns the team, "
        "the others run each parallel kernel on a libgomp team of its own; a call made inside "
        "an OpenMP parallel region runs on its calling thread alone.",
        "4. If status[EMBER_STATUS_CODE] is not 0, a kernel refused its data (an index out of "
        "range, ...) and the outputs of that run are meaningless: status[EMBER_STATUS_SITE] "
        "- 1 indexes EMBER_STATUS_SITES. ember's Python runtime raises KernelError then.",
    ]
    bounded = extra.get(BOUNDED_KEY) or {}
    if bounded:  # data-dependent sizes (engine/staging.py)
        listed = "; ".join(
            f"{name}: the first *{count} along axis {axis}"
            for name, (count, axis) in bounded.items()
        )
        usage.append(
            "5. Outputs whose size depends on the data hold their upper bound; the result is "
            f"a prefix, its length in a scalar output ({listed}). The rest is unspecified. "
            "ember's Python runtime returns the prefixes and not the counts."
        )
    sizes = [
        *_tensor_table("input", inputs),
        *_tensor_table("output", outputs),
        f"{'arena':<33} {'':<29} {description['arena_bytes']:>12} bytes",
        f"{'weights (' + WEIGHTS_FILE + ')':<33} {'':<29} {description['weights_bytes']:>12} bytes",
        f"weights sha256 {weights_sha256}",
    ]

    def wrap(text: str, indent: str = " * ", hang: str = " *    ") -> list[str]:
        return textwrap.wrap(_comment_text(text), 96, initial_indent=indent, subsequent_indent=hang)

    lines = [
        f"/* {HEADER_FILE}: the C interface of {LIBRARY_FILE} in this directory.",
        " *",
        *wrap(intro, " * ", " * "),
        " *",
        " * Calling it (docs/c_example.c in ember's sources is a complete program):",
        *(line for step in usage for line in wrap(step)),
        " *",
        " * Tensors are dense, in C (row-major) order, native byte order; float16 and bfloat16",
        " * elements are passed as their 16 bits, bool as one byte (0 or 1).",
        " *",
        *(f" *   {_comment_text(row)}" for row in sizes),
        " */",
        "#ifndef EMBER_MODEL_H",
        "#define EMBER_MODEL_H",
        "",
        "#include <stdint.h>",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"#define EMBER_VERSION {c_string(__version__)}",
        f"#define EMBER_ALIGNMENT {ALIGNMENT}",
        f"#define EMBER_LIBRARY_FILE {c_string(LIBRARY_FILE)}",
        f"#define EMBER_WEIGHTS_FILE {c_string(WEIGHTS_FILE)}",
        f"#define EMBER_ENTRY_SYMBOL {c_string(Executable.ENTRY_SYMBOL)}",
        f"#define EMBER_SET_NUM_THREADS_SYMBOL {c_string(SET_THREADS_SYMBOL)}",
        "/* Read-only data: the model's description as JSON after a 16-byte header (docs/aot.md). */",
        f"#define EMBER_MODEL_INFO_SYMBOL {c_string(MODEL_INFO_SYMBOL)}",
        f"#define EMBER_DEFAULT_THREADS {description['threads']}",
        f"#define EMBER_ARENA_BYTES {description['arena_bytes']}ull",
        f"#define EMBER_WEIGHTS_BYTES {description['weights_bytes']}ull",
        f"#define EMBER_WEIGHTS_SHA256 {c_string(weights_sha256)}",
        "",
        *_tensor_macros("input", inputs),
        "",
        *_tensor_macros("output", outputs),
        "",
        *_status_macros(sites),
    ]
    if profile is not None:
        lines += [
            "",
            "/* An instrumented build: the entry also takes EMBER_PROFILE_SLOTS int64 cycle",
            " * counters (one per kernel call site, then the whole run), zeroed by the caller. */",
            f"#define EMBER_PROFILE_SLOTS {len(profile) + 1}",
        ]
    once = description.get("extra", {}).get(ONCE_KEY)
    extents = None
    if once is not None:
        extents = [_extent_text(e) for e in once["extents"]]
        lines += ["", *_once_macros(once, extents)]
    lines += [
        "",
        *_entry_declarations(inputs, outputs, sites is not None, profile is not None, extents),
    ]
    lines += ["", "#ifdef __cplusplus", "}", "#endif", "", "#endif /* EMBER_MODEL_H */", ""]
    return "\n".join(lines)


def _status_macros(sites: Sequence[Mapping[str, Any]] | None) -> list[str]:
    if sites is None:
        return [
            "/* This library has no status record (compiled before ember had one): the entry",
            " * takes no status argument and ember_run ignores its status parameter. */",
            "#define EMBER_HAS_STATUS 0",
            f"#define EMBER_STATUS_WORDS {STATUS_WORDS}",
        ]
    lines = [
        "/* The status record: EMBER_STATUS_WORDS int64 words, zeroed before each run and read",
        " * after it (ember/runtime/status.py owns the layout). */",
        "#define EMBER_HAS_STATUS 1",
        f"#define EMBER_STATUS_WORDS {STATUS_WORDS}",
    ]
    names = {CODE: "CODE", SITE: "SITE", VALUE: "VALUE", BOUND: "BOUND", DIM: "DIM", CLAIM: "CLAIM"}
    for word, name in names.items():
        lines.append(f"#define EMBER_STATUS_{name} {word} /* {_STATUS_WORDS_DOC[word]} */")
    for code, message in ERROR_MESSAGES.items():
        macro = re.sub(r"[^A-Z]+", "_", message.upper())
        lines.append(f"#define EMBER_ERROR_{macro} {code} /* {message} */")
    lines.append(f"#define EMBER_NUM_STATUS_SITES {len(sites)}")
    if sites:
        lines.append("/* Call site i + 1 (status word EMBER_STATUS_SITE) is entry i: */")
        lines.append(
            f"#define EMBER_STATUS_SITES {_initializer([c_string(describe_site(s)) for s in sites])}"
        )
    return lines


def _extent_text(extent: Mapping[str, Any]) -> str:
    factor = int(extent["factor"])
    terms = [_term_text(t) for t in extent.get("terms", [])]
    parts = [*(str(d) for d in extent["dims"]), *terms]
    return " * ".join([*parts, *([str(factor)] if factor != 1 or not parts else [])])


def _term_text(term: Mapping[str, Any]) -> str:
    """floor((scale * inner + offset) / divisor), the inner a dim or a term (runtime/once.py)."""
    inner = _term_text(term["term"]) if "term" in term else str(term["dim"])
    scale, offset, divisor = (int(term[k]) for k in ("scale", "offset", "divisor"))
    return f"floor(({scale} * {inner} + {offset}) / {divisor})"


def _once_macros(once: Mapping[str, Any], extents: Sequence[str]) -> list[str]:
    """A program compiled once for every shape (runtime/once.py): its extent arguments, the
    dims of its inputs and outputs, and the function sizing its arena."""
    lines = [
        "/* Compiled once for every shape: the entry takes EMBER_NUM_EXTENTS int64 sizes after the",
        " * outputs, each a product of the named dims and of floors of them (below). The EMBER_INPUT/OUTPUT_*_SHAPE above",
        " * hold 0 for such dims: a buffer's size is its dims' product (as listed here) times its",
        " * element size. The arena holds ember_arena_bytes(extents...) bytes (the function",
        " * EMBER_ARENA_BYTES_SYMBOL; EMBER_ARENA_BYTES when it is absent). Check the dims",
        " * against their ranges before a call: the code trusts them. */",
        f"#define EMBER_NUM_EXTENTS {len(extents)}",
    ]
    lines += [f"/* extent {k}: {_comment_text(text)} */" for k, text in enumerate(extents)]
    for kind in ("inputs", "outputs"):
        for name, dims in once[kind].items():
            shown = [_extent_text(d) if isinstance(d, dict) else str(d) for d in dims]
            lines.append(
                f"/* {kind[:-1]} {_comment_text(name)}: [{_comment_text(', '.join(shown))}] */"
            )
    for name, (low, high) in once["ranges"].items():
        lines.append(f"/* dim {_comment_text(name)}: {low}..{high} */")
    for name, smallest in once.get("minimums", {}).items():
        lines.append(f"/* dim {_comment_text(name)}: at least {smallest} (every floor >= 1) */")
    for name, limit in once.get("limits", {}).items():
        lines.append(
            f"/* dim {_comment_text(name)}: at most {limit} (the rows of a table read by it) */"
        )
    if once["arena_function"] is not None:
        params = ", ".join(f"int64_t extent_{k}" for k in range(len(extents)))
        lines += [
            f"#define EMBER_ARENA_BYTES_SYMBOL {c_string(ARENA_FUNCTION)}",
            f"typedef int64_t (*ember_arena_bytes_fn)({params or 'void'});",
        ]
    return lines


def _entry_declarations(
    inputs: Sequence[Mapping[str, Any]],
    outputs: Sequence[Mapping[str, Any]],
    has_status: bool,
    has_profile: bool,
    extents: Sequence[str] | None = None,
) -> list[str]:
    params = [
        f"    const {C_TYPES[s['dtype']]} *{name}, /* input {i}: {_comment_text(s['name'])} */"
        for i, (s, name) in enumerate(zip(inputs, _identifiers("in_", [s["name"] for s in inputs])))
    ]
    params += [
        f"    {C_TYPES[s['dtype']]} *{name}, /* output {i}: {_comment_text(s['name'])} */"
        for i, (s, name) in enumerate(
            zip(outputs, _identifiers("out_", [s["name"] for s in outputs]))
        )
    ]
    params += [
        f"    int64_t extent_{k}, /* {_comment_text(text)} */"
        for k, text in enumerate(extents or ())
    ]
    params += ["    uint8_t *arena,", "    const uint8_t *weights"]
    args = [
        *(f"(const ember_input_{i}_t *)inputs[{i}]" for i in range(len(inputs))),
        *(f"(ember_output_{i}_t *)outputs[{i}]" for i in range(len(outputs))),
        *(f"extents[{k}]" for k in range(len(extents or ()))),
        "arena",
        "weights",
    ]
    if has_status:
        params[-1] += ","
        params.append("    int64_t *status /* EMBER_STATUS_WORDS words */")
        args.append("status")
    if has_profile:
        params[-1] += ","
        params.append("    int64_t *profile /* EMBER_PROFILE_SLOTS counters */")
        args.append("profile")
    params[-1] += ");"
    profile_param = ", int64_t *profile" if has_profile else ""
    extents_param = "const int64_t *extents, " if extents is not None else ""
    unused = "\n    (void)inputs;" + ("" if has_status else "\n    (void)status;")
    return [
        "/* The entry point (dlsym(library, EMBER_ENTRY_SYMBOL)). */",
        "typedef void (*ember_entry_fn)(",
        *params,
        "",
        "/* ember_set_num_threads (dlsym(library, EMBER_SET_NUM_THREADS_SYMBOL)): threads >= 1. */",
        "typedef void (*ember_set_num_threads_fn)(int32_t threads);",
        "",
        "/* One run of `entry` on arrays of buffers in the order above: EMBER_NUM_INPUTS inputs,",
        " * EMBER_NUM_OUTPUTS outputs"
        + (", EMBER_NUM_EXTENTS extents. */" if extents is not None else ". */"),
        "static inline void ember_run(ember_entry_fn entry, const void *const *inputs,",
        f"                             void *const *outputs, {extents_param}uint8_t *arena, "
        "const uint8_t *weights,",
        f"                             int64_t *status{profile_param}) {{{unused}",
        "    entry(",
        *(f"        {arg}," for arg in args[:-1]),
        f"        {args[-1]});",
        "}",
    ]


def write_header(directory: str | Path, description: Mapping[str, Any]) -> Path:
    """Write ember.h into the artifact `directory`; returns its path."""
    path = Path(directory) / HEADER_FILE
    path.write_text(render_header(description))
    return path
