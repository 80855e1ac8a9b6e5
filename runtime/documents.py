"""JSON documents the runtime did not produce itself: parsed within limits, read field by field.

An artifact's `manifest.json` and its library's self-description are read through here. Every
problem is an `ArtifactError` naming the document, the field (`outputs[0].shape[1]`) and the
value found, never a KeyError, TypeError or RecursionError from deep inside the runtime.

    document = Field(parse_json(text, "out/manifest.json"), "out/manifest.json")
    arena = document["arena_bytes"].as_int()
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

import numpy as np

from ember.runtime.errors import ArtifactError

# Real documents are a few KiB (ResNet-50's manifest: 3 KiB, a profiled one more); the limit
# only stops a planted file from making the loader parse gigabytes.
MAX_DOCUMENT_BYTES = 4 << 20
# Ember writes at most 4 levels ({"files": {"model.so": {...}}}); json.loads recurses per level
# and raises RecursionError (or worse) on deep input, so depth is measured before parsing.
MAX_DEPTH = 32
# Above any real tensor or arena, and far enough from 2**63 that sums and products of sizes
# cannot overflow an int64 (numpy sizes its buffers with int64).
MAX_BUFFER_BYTES = 1 << 40

# A JSON string literal (the unrolled form: linear time, no nested repeats to backtrack).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def nesting_depth(data: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest (brackets inside strings aside)."""
    codes = np.frombuffer(_STRING.sub(b'""', data), dtype=np.uint8)
    opens = (codes == ord("[")) | (codes == ord("{"))
    closes = (codes == ord("]")) | (codes == ord("}"))
    steps = opens.astype(np.int64) - closes.astype(np.int64)
    return int(np.cumsum(steps).max()) if steps.size else 0


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes, where: str) -> dict[str, Any]:
    """The JSON object in `data`; `where` names the document in errors."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ArtifactError(
            f"{where}: larger than the {MAX_DOCUMENT_BYTES} bytes an ember document may have; "
            f"the artifact is corrupt"
        )
    depth = nesting_depth(data)
    if depth > MAX_DEPTH:
        raise ArtifactError(
            f"{where}: nested {depth} levels deep, more than the {MAX_DEPTH} an ember document "
            f"may have; the artifact is corrupt"
        )
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise ArtifactError(f"{where}: not valid JSON ({e}); the artifact is corrupt") from None
    if not isinstance(document, dict):
        raise ArtifactError(f"{where}: holds {_kind(document)}, not a JSON object")
    return document


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def show(value: Any, limit: int = 80) -> str:
    """A value as it would appear in the JSON text, shortened for an error message."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Field:
    """One value of a JSON document and its path (`outputs[0].shape`), read with typed checks."""

    def __init__(self, value: Any, where: str, path: str = "") -> None:
        self.value = value
        self.where = where
        self.path = path

    def fail(self, expected: str) -> NoReturn:
        """Raise the ArtifactError for this field holding something other than `expected`."""
        raise ArtifactError(
            f"{self.where}: field '{self.path}' must be {expected}, got {show(self.value)}"
        )

    def _child(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def __getitem__(self, key: str) -> Field:
        """The required member `key` of this object."""
        members = self.as_dict()
        if key not in members:
            raise ArtifactError(f"{self.where}: required field '{self._child(key)}' is missing")
        return Field(members[key], self.where, self._child(key))

    def get(self, key: str) -> Field | None:
        """The optional member `key` of this object."""
        return self[key] if key in self.as_dict() else None

    def as_dict(self) -> dict[str, Any]:
        if not isinstance(self.value, dict):
            self.fail("an object")
        return self.value

    def as_list(self, max_items: int = 1 << 16) -> list[Field]:
        if not isinstance(self.value, list):
            self.fail("an array")
        if len(self.value) > max_items:
            self.fail(f"an array of at most {max_items} items")
        return [Field(v, self.where, f"{self.path}[{i}]") for i, v in enumerate(self.value)]

    def as_int(self, minimum: int = 0, maximum: int = MAX_BUFFER_BYTES) -> int:
        # bool is an int subclass in Python, never a count in a document.
        if type(self.value) is not int or not minimum <= self.value <= maximum:
            self.fail(f"an integer from {minimum} to {maximum}")
        return self.value

    def as_str(self, pattern: str = r".+") -> str:
        if not isinstance(self.value, str) or not re.fullmatch(pattern, self.value, re.DOTALL):
            self.fail("a non-empty string" if pattern == r".+" else f"a string matching {pattern}")
        return self.value
