"""Size limits: how big a tensor the compiler folds, and how big a tensor a program may hold.

- `FOLD_LIMIT_BYTES`: constant folding (the importer's and the `fold-constants` pass's) leaves
  any result above it as a run-time kernel, so that compile time, compile memory and the
  weights blob never grow with tensor values (Tile/Expand/ConstantOfShape/Range of constants).
- `WEIGHT_FOLD_LIMIT_BYTES`: a folded result that only becomes a conv or matmul weight may be
  this big: it is a weight, which those kernels pack at compile time anyway (computing it at
  run time would also repack it on every run).
- `memory_limit_bytes()`: no tensor of a program may exceed it (default: the machine's
  physical memory; `EMBER_MEMORY_LIMIT` sets another, in bytes or with a K/M/G/T suffix). A
  model with such a tensor could never run, so it is refused while importing, naming the
  node, the tensor and the bytes, instead of failing to allocate at run time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from ember.runtime.errors import ResourceLimitError
from ember.runtime.sizes import parse_byte_count

FOLD_LIMIT_BYTES = 64 << 20
WEIGHT_FOLD_LIMIT_BYTES = 1 << 30

_INT64_MAX = 2**63 - 1


def tensor_bytes(shape: Sequence[int], dtype: np.dtype) -> int:
    """Bytes of a dense tensor (Python ints: no overflow, however absurd the shape)."""
    return math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize


def memory_limit_bytes() -> int:
    """The largest tensor a program may hold: $EMBER_MEMORY_LIMIT, else physical memory."""
    configured = os.environ.get("EMBER_MEMORY_LIMIT", "").strip()
    if configured:
        return parse_byte_count(configured, "EMBER_MEMORY_LIMIT")
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no known limit
        return _INT64_MAX


def format_bytes(count: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit} ({count:,} bytes)"
    return f"{count} bytes"


def check_fits_in_memory(
    shape: Sequence[int], dtype: np.dtype, what: str, limit: int | None = None
) -> None:
    """ResourceLimitError naming `what` if a tensor of this shape overflows int64 or exceeds
    `limit` bytes (default: `memory_limit_bytes()`)."""
    count = math.prod(int(d) for d in shape)
    size = count * np.dtype(dtype).itemsize
    if count > _INT64_MAX or size > _INT64_MAX:
        raise ResourceLimitError(
            f"{what}: a tensor of shape {list(shape)} has {count:,} elements, more than int64 "
            "can count"
        )
    limit = memory_limit_bytes() if limit is None else limit
    if size > limit:
        raise ResourceLimitError(
            f"{what}: a tensor of shape {list(shape)} and type {np.dtype(dtype).name} needs "
            f"{format_bytes(size)}, more than the limit of {format_bytes(limit)} "
            "(memory_limit=, EMBER_MEMORY_LIMIT; default: the machine's physical memory)"
        )
