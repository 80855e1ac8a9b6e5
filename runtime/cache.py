"""Where ember keeps what it can reuse between processes, and how large that may grow.

The root is `$EMBER_CACHE_DIR`, else the user cache directory of the platform (`platformdirs`:
`$XDG_CACHE_HOME/ember` or `~/.cache/ember` on Linux, `~/Library/Caches/ember` on macOS), and
holds `artifacts/` (compiled models, see engine/aot.py), `objects/` (compiled kernels, see
codegen/objcache.py) and `onnx-node-tests/` (the conformance data, see tools/conformance/data.py).

Compiled entries (objects and artifacts) are capped at `$EMBER_CACHE_MAX_BYTES` (default
2 GiB; `500M`, `4G` and `4GiB` are accepted) and evicted least recently used first:

- a hit touches the entry (its mtime is its last use: atime is unreliable on relatime mounts);
- a write adds the entry's size to a small ledger (`.usage` in the root) instead of measuring
  the cache; only when the ledger passes the cap (or is missing, or was last measured a day
  ago) is the cache scanned, and entries are evicted, oldest use first, down to 90% of the
  cap, so that the next writes do not scan again;
- processes share the cache: entries and the ledger are written to a temporary file and
  renamed, an artifact is renamed away before it is deleted, and a file that vanishes under a
  reader is a miss. Updating the ledger (and evicting) holds an flock on `.usage.lock`, so
  concurrent writers' sizes add up; readers take no lock. Without flock an addition can be
  lost, which only delays the next scan, which measures the truth again.

The conformance data is listed and cleared with the rest (`ember cache`) but never evicted: it
is data, not compiled code, and there is one copy per onnx version. Only names that ember
writes are entries (or temporaries, removed once an hour old): anything else in a folder is
left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ember.runtime.sizes import parse_byte_count

DEFAULT_MAX_BYTES = 2 << 30
# Eviction goes below the cap by this fraction, so the writes that follow do not scan again.
LOW_WATER = 0.9
LEDGER_FILE = ".usage"
LOCK_FILE = ".usage.lock"
# A ledger older than this is not trusted (entries may have come and gone without it).
LEDGER_MAX_AGE = 24 * 3600
# A temporary (dot-named) file or folder this old belongs to a writer that died.
STALE_SECONDS = 3600

OBJECT, ARTIFACT, DATA = "object", "artifact", "data"
# Sizes count whole blocks, as a disk stores them: most kernel objects are 1-4 KiB files.
BLOCK = 4096


def cache_root() -> Path:
    if os.environ.get("EMBER_CACHE_DIR"):
        return Path(os.environ["EMBER_CACHE_DIR"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ember", appauthor=False))


def max_cache_bytes() -> int:
    """The cap: `$EMBER_CACHE_MAX_BYTES`, else 2 GiB."""
    configured = os.environ.get("EMBER_CACHE_MAX_BYTES", "").strip()
    if not configured:
        return DEFAULT_MAX_BYTES
    return parse_byte_count(configured, "EMBER_CACHE_MAX_BYTES")


def stored_bytes(file_bytes: int) -> int:
    """What a file of `file_bytes` takes on disk (whole blocks)."""
    return -(-file_bytes // BLOCK) * BLOCK


def touch(path: Path) -> None:
    """Record a use of the entry at `path` (a cache hit)."""
    try:
        os.utime(path)
    except OSError:
        pass  # gone, or not ours to touch: eviction order is a hint


@dataclass(frozen=True)
class CacheEntry:
    kind: str  # OBJECT, ARTIFACT or DATA
    path: Path
    bytes: int
    last_used: float  # seconds since the epoch


# What each kind's entries and its writers' temporaries are named: anything else in a folder is
# not ember's (a folder given to Config.set_cache_dir may hold other files) and is left alone.
_ENTRY_NAMES = {
    OBJECT: re.compile(r"[0-9a-f]{64}\.o"),  # in shards named by 2 hex digits
    ARTIFACT: re.compile(r"[0-9a-f]{32}"),  # engine/aot.py cache_key
    DATA: re.compile(r"onnx-[^/]+"),  # tools/conformance/data.py data_dir
}
_TEMPORARY_NAMES = {
    OBJECT: re.compile(r"\.[0-9a-f]{16}-.+"),  # ObjectCache.store
    ARTIFACT: re.compile(r"\.(?:[0-9a-f]{32}|old|removed|usage)-.+"),  # compile_artifact, here
    DATA: re.compile(r"\.(?:staging|removed)-.+"),
}
_SHARD = re.compile(r"[0-9a-f]{2}")


@dataclass(frozen=True)
class _Section:
    """A folder of entries of one kind: files two levels down (objects/ab/<key>.o) or folders
    one level down (artifacts/<key>/)."""

    directory: Path
    kind: str

    def entries(self, now: float) -> Iterator[CacheEntry]:
        if self.kind == OBJECT:
            for shard in _scan(self.directory):
                if _SHARD.fullmatch(shard.name) and shard.is_dir(follow_symlinks=False):
                    yield from self._files(Path(shard.path), now)
            return
        for item in _scan(self.directory):
            if _TEMPORARY_NAMES[self.kind].fullmatch(item.name):
                _remove_if_stale(item, now)
            elif _ENTRY_NAMES[self.kind].fullmatch(item.name) and item.is_dir(
                follow_symlinks=False
            ):
                entry = _folder_entry(Path(item.path), self.kind)
                if entry is not None:
                    yield entry

    def _files(self, shard: Path, now: float) -> Iterator[CacheEntry]:
        for item in _scan(shard):
            if _TEMPORARY_NAMES[OBJECT].fullmatch(item.name):
                _remove_if_stale(item, now)
            elif _ENTRY_NAMES[OBJECT].fullmatch(item.name):
                try:
                    stat = item.stat(follow_symlinks=False)
                except OSError:
                    continue  # evicted by another process meanwhile
                size = stored_bytes(stat.st_size)
                yield CacheEntry(OBJECT, Path(item.path), size, stat.st_mtime)


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as items:
            return list(items)
    except OSError:
        return []


def _folder_entry(path: Path, kind: str) -> CacheEntry | None:
    try:
        last_used = path.stat().st_mtime
        size = sum(stored_bytes(f.stat().st_size) for f in path.rglob("*") if f.is_file())
    except OSError:
        return None
    return CacheEntry(kind, path, size, last_used)


def _remove_if_stale(item: os.DirEntry[str], now: float) -> None:
    try:
        if now - item.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
            _remove(Path(item.path))
    except OSError:
        pass


def _remove(path: Path) -> bool:
    """Delete an entry; False if it was already gone. A folder is first renamed to a temporary
    name, so nobody finds half of it under its real name."""
    try:
        if path.is_dir() and not path.is_symlink():
            doomed = path.with_name(f".removed-{uuid.uuid4().hex[:12]}")
            os.rename(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        else:
            path.unlink()
        return True
    except OSError:
        return False


class DiskCache:
    """The compiled entries under one root, their ledger and their eviction."""

    def __init__(self, root: Path, sections: list[_Section], max_bytes: int | None = None):
        self.root = root
        self._sections = sections
        self.max_bytes = max_cache_bytes() if max_bytes is None else max_bytes

    @classmethod
    def default(cls, max_bytes: int | None = None) -> DiskCache:
        """The cache at `cache_root()`: objects, artifacts and the conformance data."""
        root = cache_root()
        sections = [
            _Section(root / "objects", OBJECT),
            _Section(root / "artifacts", ARTIFACT),
            _Section(root / "onnx-node-tests", DATA),
        ]
        return cls(root, sections, max_bytes)

    @classmethod
    def for_artifacts(cls, directory: Path) -> DiskCache:
        """The cache holding the artifacts in `directory` (one chosen by Config.set_cache_dir
        is a cache of its own, with its own ledger)."""
        default = cls.default()
        if directory.absolute() == (default.root / "artifacts").absolute():
            return default
        return cls(directory, [_Section(directory, ARTIFACT)])

    # -- what is there ---------------------------------------------------------------------
    def entries(self, kinds: tuple[str, ...] = (OBJECT, ARTIFACT, DATA)) -> list[CacheEntry]:
        now = time.time()
        return [
            entry
            for section in self._sections
            if section.kind in kinds
            for entry in section.entries(now)
        ]

    # -- writes and eviction ---------------------------------------------------------------
    def record_write(self, nbytes: int, written: Path) -> None:
        """Account for the entry just written at `written`, `nbytes` as `stored_bytes` counts
        them; evict if the cache is over its cap.

        Never fails: a cache that cannot be measured or trimmed still works.
        """
        with self._locked():
            ledger = self._read_ledger()
            if ledger is None:  # unknown: measure, and trim to the cap
                self._evict(self.max_bytes, written)
            elif ledger[0] + nbytes > self.max_bytes:
                self._evict(int(self.max_bytes * LOW_WATER), written)
            else:
                self._write_ledger(ledger[0] + nbytes, scanned=ledger[1])

    def evict(self, target_bytes: int, keep: Path | None = None) -> list[CacheEntry]:
        """Remove compiled entries, least recently used first, until they hold at most
        `target_bytes` (never `keep`, the entry just written); returns what was removed."""
        with self._locked():
            return self._evict(target_bytes, keep)

    def _evict(self, target_bytes: int, keep: Path | None) -> list[CacheEntry]:
        entries = sorted(self.entries((OBJECT, ARTIFACT)), key=lambda e: e.last_used)
        total = sum(e.bytes for e in entries)
        removed = []
        for entry in entries:
            if total <= target_bytes:
                break
            if keep is not None and os.path.abspath(entry.path) == os.path.abspath(keep):
                continue
            if _remove(entry.path):
                removed.append(entry)
            total -= entry.bytes
        self._write_ledger(total)
        return removed

    def clear(self, older_than_seconds: float | None = None) -> list[CacheEntry]:
        """Remove every entry (of every kind), or those unused for `older_than_seconds`."""
        now = time.time()
        with self._locked():
            removed = [
                entry
                for entry in self.entries()
                if (older_than_seconds is None or now - entry.last_used > older_than_seconds)
                and _remove(entry.path)
            ]
            self._write_ledger(sum(e.bytes for e in self.entries((OBJECT, ARTIFACT))))
        return removed

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the cache's lock (an flock, released by the kernel if the process dies) while
        the ledger is read and rewritten, so that concurrent writers' additions add up. Where
        there is no flock (not POSIX, some network file systems) the ledger goes unlocked."""
        try:
            import fcntl

            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        except (ImportError, OSError):
            yield
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass
            yield
        finally:
            os.close(fd)

    @property
    def _ledger(self) -> Path:
        return self.root / LEDGER_FILE

    def _read_ledger(self) -> tuple[int, float] | None:
        """The compiled entries' size as recorded, and when it was last measured; None if it
        must be measured again."""
        try:
            ledger = json.loads(self._ledger.read_text())
            nbytes, scanned = ledger["bytes"], ledger["scanned"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(nbytes, int) or nbytes < 0 or not isinstance(scanned, int | float):
            return None
        if not 0 <= time.time() - scanned <= LEDGER_MAX_AGE:
            return None
        return nbytes, float(scanned)

    def _write_ledger(self, nbytes: int, scanned: float | None = None) -> None:
        """Record the size; `scanned`: when it was last measured (default: now, by the caller)."""
        ledger = {"bytes": max(nbytes, 0), "scanned": time.time() if scanned is None else scanned}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f"{LEDGER_FILE}-", dir=self.root)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(ledger, f)
                os.replace(tmp, self._ledger)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            pass
