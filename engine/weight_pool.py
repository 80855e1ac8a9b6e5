"""One copy of each weight the variants of a model share.

A model with symbolic dims compiles one variant per input shape (engine/specialize.py), and
each variant reads its weights from one blob laid out by place-weights. Most weights (the
packed matmul panels, the biases) come out byte-for-byte the same in every variant; a few
constants folded from the shape (a position table sliced to the sequence length) differ and
move the others. place-weights gives every weight of a page or more pages of its own, so a
`WeightPool` keeps each such weight once, in a memfd, and maps it into every blob that holds
it (Linux: memfd_create + mmap MAP_FIXED), by content (blake2b of its bytes, its size). The
mapping is private (copy on write): the kernels only read their weights (plan-memory places
outputs in the arena, never over a weight), and were one ever to write it, it would write its
own copy, never another variant's. The rest of a blob (the small weights) is its own.

Elsewhere (no memfd, or a mapping refused) a blob is shared whole when its bytes are those of
a live one, and otherwise built as before.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import sys
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.runtime.errors import ResourceLimitError
from ember.runtime.executable import ALIGNMENT, aligned_empty

PAGE = mmap.PAGESIZE
_PROT_READ, _PROT_WRITE = 1, 2
_MAP_PRIVATE, _MAP_FIXED, _MAP_ANONYMOUS = 0x02, 0x10, 0x20
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_MAP_FAILED = ctypes.c_void_p(-1).value

# One weight placed in a blob: (offset in bytes, the weight's array).
Placement = tuple[int, np.ndarray]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or PAGE != 4096 or not hasattr(os, "memfd_create"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    return libc


_LIBC = _libc()
# Whether this platform maps shared weights into blobs (else whole equal blobs only are shared).
MAPS_WEIGHTS = _LIBC is not None


def _round_up(size: int, to: int) -> int:
    return (size + to - 1) // to * to


def laid_out(weights_bytes: int, placements: Sequence[Placement]) -> np.ndarray:
    """A new 64-byte aligned blob of `weights_bytes` (at least 64) holding each weight at its
    offset, zeros between."""
    blob = aligned_empty((max(weights_bytes, ALIGNMENT),))
    blob[:] = 0
    for offset, array in placements:
        raw = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        blob[offset : offset + raw.size] = raw
    return blob


def _write_all(fd: int, data: np.ndarray, offset: int) -> None:
    """Write `data` (bytes, contiguous) at `offset` of `fd`, without a copy of it."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class WeightPool:
    """The weights of one model's variants, each shared one held once (see the module doc).
    Thread-safe; a weight goes when the last blob mapping it does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Whole blobs by content (the fallback), held weakly.
        self._blobs: weakref.WeakValueDictionary[tuple[int, bytes], np.ndarray] = (
            weakref.WeakValueDictionary()
        )
        # The memfd holding the shared weights, made at the first blob (-1: none yet); weights
        # are mapped while `_maps` (a platform with memfd, one made or yet to make).
        self._maps = _LIBC is not None
        self._fd = -1
        self._file_bytes = 0
        # Shared weights by content: [offset in the memfd, bytes mapped, blobs mapping it].
        self._chunks: dict[tuple[int, bytes], list[int]] = {}
        self._private_bytes = 0  # bytes of the live blobs that are their own
        self._whole_blobs: dict[int, int] = {}  # id -> bytes of live fallback blobs
        # Blobs unmapped whose weights are not yet released: a blob's finalizer may run in a
        # collection inside this pool's locked code (same thread), where it must not wait for
        # the lock nor change a weight being mapped; the next locked call releases them.
        self._unmapped: list[tuple[list[tuple[int, bytes]], int]] = []

    def _memfd(self) -> bool:
        """Whether weights are mapped from a memfd, made now if not yet (the lock held)."""
        if self._maps and self._fd < 0:
            try:
                self._fd = os.memfd_create("ember-weights", os.MFD_CLOEXEC)
            except OSError:
                self._maps = False
            else:
                weakref.finalize(self, os.close, self._fd)
        return self._maps

    @property
    def shared_weights(self) -> int:
        """How many weights are held once for the blobs mapping them."""
        with self._lock:
            self._release_unmapped()
            return len(self._chunks)

    @property
    def held_bytes(self) -> int:
        """Bytes of weights the live blobs hold, a shared weight or blob counted once."""
        with self._lock:
            self._release_unmapped()
            chunks = sum(chunk[1] for chunk in self._chunks.values())
            return chunks + self._private_bytes + sum(self._whole_blobs.values())

    def blob(self, weights_bytes: int, placements: Sequence[Placement]) -> np.ndarray:
        """A read-only blob of `weights_bytes` holding each weight at its offset."""
        with self._lock:
            maps = self._memfd()
        if maps:
            mapped = self._mapped_blob(weights_bytes, placements)
            if mapped is not None:
                return mapped
        return self._whole_blob(weights_bytes, placements)

    # -- whole blobs (the fallback) -----------------------------------------------------------
    def _whole_blob(self, weights_bytes: int, placements: Sequence[Placement]) -> np.ndarray:
        blob = laid_out(weights_bytes, placements)
        key = (blob.nbytes, hashlib.blake2b(blob, digest_size=32).digest())
        with self._lock:
            existing = self._blobs.get(key)
            if existing is not None:
                return existing
            blob.flags.writeable = False
            self._blobs[key] = blob
            self._whole_blobs[id(blob)] = blob.nbytes
            weakref.finalize(blob, self._whole_blobs.pop, id(blob), None)
            return blob

    # -- blobs mapping shared weights ------------------------------------------------------------
    def _mapped_blob(
        self, weights_bytes: int, placements: Sequence[Placement]
    ) -> np.ndarray | None:
        assert _LIBC is not None
        size = _round_up(max(weights_bytes, ALIGNMENT), PAGE)
        address = _LIBC.mmap(
            None, size, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0
        )
        if address is None or address == _MAP_FAILED:
            return None
        region = (ctypes.c_uint8 * size).from_address(address)
        blob = np.frombuffer(region, dtype=np.uint8)
        # What the blob holds of the pool, filled as it is mapped: its finalizer (unmapping
        # it, whatever happens below) releases exactly that.
        keys: list[tuple[int, bytes]] = []
        record: dict[str, Any] = {"keys": keys, "private": 0}
        # Not at exit: code still running then (another thread's run) may read it.
        weakref.finalize(region, self._unmap, address, size, record).atexit = False
        ordered = sorted(placements, key=lambda placement: placement[0])
        ends = [offset for offset, _ in ordered[1:]] + [size]
        private = size
        with self._lock:
            self._release_unmapped()
            for (offset, array), next_start in zip(ordered, ends):
                raw = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
                span = _round_up(raw.size, PAGE)
                # Only a weight with its pages to itself (place-weights: a page or more).
                shareable = raw.size >= PAGE and offset % PAGE == 0 and offset + span <= next_start
                key = (
                    (raw.size, hashlib.blake2b(raw, digest_size=32).digest()) if shareable else None
                )
                if key is None or not self._map(key, raw, address + offset, span):
                    blob[offset : offset + raw.size] = raw
                    continue
                keys.append(key)
                private -= span
            record["private"] = private
            self._private_bytes += private
        blob.flags.writeable = False
        return blob

    def _map(self, key: tuple[int, bytes], raw: np.ndarray, address: int, span: int) -> bool:
        """Map the pool's copy of the weight `raw` (added if new) at `address`, `span` bytes
        (the lock held). False: it is not mapped (the pool could not grow, or the mapping was
        refused) and the anonymous pages there are left to copy it into."""
        assert _LIBC is not None
        chunk = self._chunks.get(key)
        if chunk is None:
            chunk = [self._file_bytes, span, 0]
            try:
                os.ftruncate(self._fd, self._file_bytes + span)
                _write_all(self._fd, raw, self._file_bytes)
            except OSError:
                self._drop_chunk_bytes(chunk)
                return False
            self._file_bytes += span
        protection = _PROT_READ | _PROT_WRITE
        mapped = _LIBC.mmap(
            address, span, protection, _MAP_PRIVATE | _MAP_FIXED, self._fd, chunk[0]
        )
        if mapped != address:
            if chunk[2] == 0:
                self._drop_chunk_bytes(chunk)
            # A failed MAP_FIXED may have removed the pages there: map fresh anonymous ones.
            anonymous = _MAP_PRIVATE | _MAP_ANONYMOUS | _MAP_FIXED
            if _LIBC.mmap(address, span, protection, anonymous, -1, 0) != address:
                raise ResourceLimitError(
                    f"could not map {span} bytes of weights into a compiled variant's blob "
                    "(out of memory or of mappings)"
                )
            return False
        chunk[2] += 1
        self._chunks[key] = chunk
        return True

    def _unmap(self, address: int, size: int, record: dict[str, Any]) -> None:
        """A blob's finalizer: unmap it now, release its weights when the lock is free."""
        assert _LIBC is not None
        _LIBC.munmap(address, size)
        self._unmapped.append((record["keys"], record["private"]))  # atomic: no lock needed
        if self._lock.acquire(blocking=False):
            try:
                self._release_unmapped()
            finally:
                self._lock.release()

    def _release_unmapped(self) -> None:
        """Release the weights of unmapped blobs (the lock held): a weight no blob maps any
        more leaves the pool."""
        while self._unmapped:
            keys, private = self._unmapped.pop()
            self._private_bytes -= private
            for key in keys:
                chunk = self._chunks[key]
                chunk[2] -= 1
                if chunk[2] == 0:
                    del self._chunks[key]
                    self._drop_chunk_bytes(chunk)

    def _drop_chunk_bytes(self, chunk: list[int]) -> None:
        """Free the memfd's pages of a weight no blob maps any more (the file keeps its size)."""
        assert _LIBC is not None
        _LIBC.fallocate(self._fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, chunk[0], chunk[1])
