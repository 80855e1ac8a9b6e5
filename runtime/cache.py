"""Where ember keeps what it can reuse between processes.

`$EMBER_CACHE_DIR`, else `$XDG_CACHE_HOME/ember`, else `~/.cache/ember`, holding
`artifacts/` (compiled models, see tools/aot.py), `objects/` (compiled kernels, see
codegen/objcache.py) and `onnx-node-tests/` (the conformance data, see tools/conformance.py).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    if os.environ.get("EMBER_CACHE_DIR"):
        return Path(os.environ["EMBER_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ember"
