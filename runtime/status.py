"""The status record: how compiled kernels report bad data (an index out of range) to the runtime.

Every run passes its own record to the entry point, after the weights:
`main(inputs..., outputs..., arena, weights, status)`. It is 8 int64 words, all zero when the call
starts and read after it. Each in-flight run owns one record, reused by later runs
(runtime/executable.py): a run whose CODE and CLAIM words stay zero wrote no word (every write
below follows a claim or a non-zero code), so the runtime clears a record only after a run that
recorded an error, and checks two words per run instead of zeroing eight:

    word  meaning
    0     error code (0: no error; ERROR_MESSAGES lists the others)
    1     call site: 1 + the index in the manifest's `status_sites` of the kernel call that failed
    2     the offending value (an index as the model gave it, before negative wrapping)
    3     the size it had to fit (the extent of the indexed dimension)
    4     which dimension of the data the value indexes (OUT_OF_BOUNDS: which kernel argument;
          LENGTH_OUT_OF_RANGE: which batch row's length)
    5     claim word: a failing kernel swaps 1 into it and writes words 0, 2-4 only if it was 0

A kernel that finds bad data records it and carries on with a clamped value, so it never reads or
writes outside its buffers; the entry function stamps word 1 after each checking call. The claim
makes the first failure win when several OpenMP threads fail in one kernel (their words never
mix), and nothing is shared between runs, so concurrent runs of one model from several Python
threads each see only their own errors. The manifest's `extra["status_sites"]` names each call
site (ONNX op type, node name, kernel function); an entry compiled before the record existed has
no such key and takes no status argument.

This module is part of the thin runtime and imports nothing from the compiler; the kernels'
side of the record is `passes/conversion/kernel_to_loops/checks.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ember.runtime.errors import KernelError

STATUS_WORDS = 8
CODE, SITE, VALUE, BOUND, DIM, CLAIM = range(6)

INDEX_OUT_OF_RANGE = 1
OUT_OF_BOUNDS = 2  # debug mode (check-memory-accesses): word 4 is the kernel argument, or -1
LENGTH_OUT_OF_RANGE = 3  # a recurrent layer's sequence_lens: word 3 is T, word 4 the batch row
ERROR_MESSAGES = {
    INDEX_OUT_OF_RANGE: "index out of range",
    OUT_OF_BOUNDS: "access out of bounds",
    LENGTH_OUT_OF_RANGE: "sequence length out of range",
}

SITES_KEY = "status_sites"


def new_status() -> np.ndarray:
    """A zeroed status record for one run."""
    return np.zeros(STATUS_WORDS, dtype=np.int64)


def describe_site(site: Mapping[str, Any]) -> str:
    """`Gather node 'embed' (kernel gather_1)`, or just the kernel when the origin is unknown."""
    op_type, node, kernel = site.get("op_type"), site.get("node"), site.get("kernel", "?")
    if op_type:
        return f"{op_type} node '{node}' (kernel {kernel})"
    return f"kernel {kernel}"


def check_status(status: np.ndarray, sites: Sequence[Mapping[str, Any]]) -> None:
    """Raise KernelError for the error a run recorded in `status`; return if there is none."""
    code = int(status[CODE])
    if code == 0:
        return
    site_index = int(status[SITE]) - 1
    site: Mapping[str, Any] = sites[site_index] if 0 <= site_index < len(sites) else {}
    value, bound, dim = int(status[VALUE]), int(status[BOUND]), int(status[DIM])
    where = describe_site(site) if site else f"an unknown kernel (call site {site_index + 1})"
    if code == INDEX_OUT_OF_RANGE:
        valid = f"valid indices are {-bound}..{bound - 1}" if bound else "it is empty"
        message = (
            f"{where}: index {value} is out of range for dimension {dim} of size {bound} of "
            f"its data ({valid})"
        )
    elif code == LENGTH_OUT_OF_RANGE:
        message = (
            f"{where}: sequence_lens[{dim}] = {value} is out of range for a sequence of "
            f"length {bound} (valid lengths are 0..{bound})"
        )
    elif code == OUT_OF_BOUNDS:
        buffer = f"argument {dim}" if dim >= 0 else "a buffer view"
        message = (
            f"{where}: memory access out of bounds: element offset {value} of {buffer} of the "
            f"kernel, which holds {bound} elements (a bug in ember's code generation; please "
            f"report it with the model)"
        )
    else:
        message = f"{where}: {ERROR_MESSAGES.get(code, f'error code {code}')} (value {value})"
    raise KernelError(message, op_type=site.get("op_type"), node_name=site.get("node"), value=value)
