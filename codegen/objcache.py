"""On-disk cache of compiled units: LLVM IR text -> object file, shared by every process.

    cache = ObjectCache.default()          # None when EMBER_NO_CACHE=1
    key = cache.key(ir_text, settings)
    entry = cache.load(key) or compile_and(cache.store(key, ...))

Location: `objects/` in the cache root (runtime/cache.py: `$EMBER_CACHE_DIR`, else the
platform's user cache directory, `~/.cache/ember` on Linux). The key hashes the unit's IR text with everything else that decides
the machine code: target cpu/features, opt level, relocation model (JIT or shared library),
llvmlite and LLVM versions, `CODEGEN_VERSION` and the source of the module that drives LLVM
(so changing the pass pipeline invalidates old objects without anyone remembering to bump a
number).

One file per entry: a JSON header line (payload size and sha256, the symbols the object
defines and needs) then the object bytes. Entries are written to a temporary file and
renamed, so readers see a whole entry or none; an entry that fails validation is a miss and
is overwritten by the recompiled one. The default cache is size-capped with the artifacts
(runtime/cache.py): a hit touches the entry, a store is recorded and may evict the least
recently used entries; `ember cache clear` empties it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ember.runtime.cache import DiskCache, cache_root, stored_bytes, touch

# Bump when the meaning of a cached object changes in a way the key does not capture.
CODEGEN_VERSION = 1
_MAGIC = b"ember-object-v1\n"


def default_cache_dir() -> Path:
    return cache_root() / "objects"


def cache_disabled() -> bool:
    return os.environ.get("EMBER_NO_CACHE", "").strip() not in ("", "0")


@dataclass(frozen=True)
class CachedObject:
    data: bytes
    defined: tuple[str, ...]  # symbols it provides to other units
    undefined: tuple[str, ...]  # symbols it needs from other units or the process


class ObjectCache:
    """A directory of compiled units, keyed by `key()`."""

    def __init__(self, directory: str | os.PathLike[str], managed: DiskCache | None = None):
        """`managed`: the size-capped cache this directory belongs to (None: unbounded)."""
        self.directory = Path(directory)
        self.managed = managed

    @classmethod
    def default(cls) -> ObjectCache | None:
        """The user's cache, or None when EMBER_NO_CACHE is set."""
        return None if cache_disabled() else cls(default_cache_dir(), DiskCache.default())

    @staticmethod
    def key(ir_text: str, settings: str) -> str:
        """`settings`: everything besides the IR that changes the object (see module doc)."""
        digest = hashlib.sha256()
        digest.update(f"{CODEGEN_VERSION}\0{settings}\0".encode())
        digest.update(ir_text.encode())
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.o"

    def load(self, key: str) -> CachedObject | None:
        """The cached object, or None on a miss or an entry that fails validation."""
        try:
            raw = self._path(key).read_bytes()
        except OSError:
            return None
        try:
            if not raw.startswith(_MAGIC):
                return None
            end = raw.index(b"\n", len(_MAGIC))
            header = json.loads(raw[len(_MAGIC) : end])
            data = raw[end + 1 :]
            if len(data) != header["size"] or hashlib.sha256(data).hexdigest() != header["sha256"]:
                return None
            symbols = (tuple(str(s) for s in header[k]) for k in ("defined", "undefined"))
            entry = CachedObject(data, *symbols)
        except (ValueError, KeyError, TypeError):
            return None
        touch(self._path(key))
        return entry

    def store(self, key: str, entry: CachedObject) -> None:
        """Write the entry atomically; a cache that cannot be written is silently skipped."""
        path = self._path(key)
        header = {
            "size": len(entry.data),
            "sha256": hashlib.sha256(entry.data).hexdigest(),
            "defined": list(entry.defined),
            "undefined": list(entry.undefined),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}-", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(_MAGIC + json.dumps(header).encode() + b"\n" + entry.data)
                    size = f.tell()
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            return
        if self.managed is not None:
            self.managed.record_write(stored_bytes(size), path)
