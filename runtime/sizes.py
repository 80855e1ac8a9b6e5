"""Byte counts given by people: `8000000000`, `8G`, `500MiB`, `1.5K` (binary multiples)."""

from __future__ import annotations

import re

_SIZE = re.compile(r"\s*(\d+)(?:\.(\d*))?\s*([KMGT]?)(?:I?B)?\s*", re.IGNORECASE)


def parse_byte_count(text: str, variable: str) -> int:
    """The bytes `text` names; ValueError naming `variable` (where the text came from) if none."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{variable}='{text}' is not a byte count (e.g. 8000000000, 8G or 500MiB)")
    scale = 1 << (10 * " KMGT".index(match[3].upper() or " "))
    fraction = match[2] or ""
    return int(match[1]) * scale + int(fraction or 0) * scale // 10 ** len(fraction)
