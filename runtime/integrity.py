"""What proves a `model.so` is the code ember linked, and (optionally) who compiled an artifact.

**The code hash.** manifest.json records the sha256 of model.so, but whoever edits the library
can rewrite that line too. So the library carries a hash of itself: `ember compile` links it
with a reserved 48-byte read-only array, the symbol `ember_code_sha256` (`CODE_HASH_TAG`, then
32 zero bytes), and afterwards patches into that array the sha256 of every byte the dynamic
loader maps (`code_sha256`: the ELF header, the program headers and each PT_LOAD segment's
file bytes -- code, read-only data, the dynamic symbol table, initialised data -- with the 32
digest bytes counted as zeros). The manifest repeats it as `files["model.so"].code_sha256`.
Before dlopen, `check_code_hash` parses the ELF from the file bytes, recomputes the hash and
requires it to equal both. A flipped byte anywhere the loader maps is refused even when the
manifest's checksums were rewritten to match; a deliberate attacker can recompute the embedded
hash as well, which only a signature catches.

**Signing.** `ember compile --sign-key FILE` (or `EMBER_ARTIFACT_KEY=FILE`) writes `signature`:
an HMAC-SHA256, under that secret key, over manifest.json's bytes and the sha256 of model.so
and of weights.bin. `load(path, key=...)` (or the same variable) refuses an artifact that is
unsigned or signed with another key. Without a key nothing changes.

Only the standard library: the runtime must not need the compiler.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ember.runtime.errors import ArtifactError

CODE_HASH_SYMBOL = "ember_code_sha256"
# Not valid UTF-8 (\x7f...\xff): no JSON text, symbol name or string the compiler writes can
# spell it, so exactly one copy in a library is the slot. The last bytes are the version.
CODE_HASH_TAG = b"\x7fEMBER-SHA256\xff\x01\x00"
DIGEST_BYTES = 32
CODE_HASH_SLOT = CODE_HASH_TAG + bytes(DIGEST_BYTES)

_PT_LOAD = 1
_PF_W = 2
_ELF_HEADER_BYTES = 64


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD segment: where its bytes are in the file, and whether it is writable."""

    offset: int
    size: int
    writable: bool


@dataclass(frozen=True)
class ElfLayout:
    """The parts of an x86-64 ELF shared object the dynamic loader reads from the file."""

    program_headers: tuple[int, int]  # offset, bytes
    loads: tuple[Segment, ...]


def elf_layout(image: bytes, origin: Path) -> ElfLayout:
    """Parse the ELF headers of `image`, refusing anything dlopen should not see.

    The loader maps each PT_LOAD segment from the file; a segment that reaches past the end of a
    truncated file raises SIGBUS in this process when touched, and no checksum helps when the
    tamperer rewrote it. Every offset is checked against the image before it is used.
    """
    size = len(image)
    if size < _ELF_HEADER_BYTES or image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        raise ArtifactError(f"{origin}: not a 64-bit little-endian ELF shared library")
    e_type, e_machine = struct.unpack_from("<HH", image, 16)
    if e_type != 3 or e_machine != 62:  # ET_DYN, EM_X86_64
        raise ArtifactError(f"{origin}: not an x86-64 shared library (type {e_type})")
    phoff, shoff = struct.unpack_from("<QQ", image, 32)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", image, 54)
    if phentsize < 56 or phoff + phnum * phentsize > size or shoff + shnum * shentsize > size:
        raise ArtifactError(f"{origin}: truncated (its ELF headers reach past {size} bytes)")
    loads = []
    for k in range(phnum):
        p_type, p_flags, p_offset = struct.unpack_from("<IIQ", image, phoff + k * phentsize)
        (p_filesz,) = struct.unpack_from("<Q", image, phoff + k * phentsize + 32)
        if p_type != _PT_LOAD:
            continue
        if p_offset + p_filesz > size:
            raise ArtifactError(
                f"{origin}: truncated (a loadable segment ends at byte {p_offset + p_filesz} of "
                f"a {size}-byte file)"
            )
        loads.append(Segment(p_offset, p_filesz, bool(p_flags & _PF_W)))
    if not loads:
        raise ArtifactError(f"{origin}: has no loadable segment; the library is corrupt")
    return ElfLayout((phoff, phnum * phentsize), tuple(loads))


def code_hash_slot(image: bytes, layout: ElfLayout, origin: Path) -> int:
    """The file offset of the embedded digest (the 32 bytes after the one CODE_HASH_TAG)."""
    first = image.find(CODE_HASH_TAG)
    if first < 0:
        raise ArtifactError(
            f"{origin}: has no embedded code hash ('{CODE_HASH_SYMBOL}'), so nothing vouches "
            f"for its code; it is not a library of this ember version or its hash slot was "
            f"overwritten (recompile the model)"
        )
    if image.find(CODE_HASH_TAG, first + 1) >= 0:
        raise ArtifactError(
            f"{origin}: holds the code hash tag of '{CODE_HASH_SYMBOL}' twice; the library is "
            f"corrupt or was assembled from pieces"
        )
    end = first + len(CODE_HASH_SLOT)
    if not any(
        not s.writable and s.offset <= first and end <= s.offset + s.size for s in layout.loads
    ):
        raise ArtifactError(
            f"{origin}: its code hash slot (bytes {first}-{end}) lies outside the read-only "
            f"segments the loader maps; the library is corrupt"
        )
    return first + len(CODE_HASH_TAG)


def code_sha256(image: bytes, origin: Path) -> tuple[str, str]:
    """(the hash of what the loader maps, with the digest counted as zeros; the embedded one)."""
    layout = elf_layout(image, origin)
    digest_at = code_hash_slot(image, layout, origin)
    embedded = image[digest_at : digest_at + DIGEST_BYTES].hex()
    hashed = bytearray(image)
    hashed[digest_at : digest_at + DIGEST_BYTES] = bytes(DIGEST_BYTES)
    view = memoryview(hashed)
    digest = hashlib.sha256(view[:_ELF_HEADER_BYTES])
    start, length = layout.program_headers
    digest.update(view[start : start + length])
    for segment in layout.loads:
        digest.update(struct.pack("<QQ", segment.offset, segment.size))
        digest.update(view[segment.offset : segment.offset + segment.size])
    return digest.hexdigest(), embedded


def seal_library(path: str | os.PathLike[str]) -> str:
    """Write the code hash into the slot of a freshly linked library; returns it (hex).

    For `ember compile`, after linking: every other byte the loader maps is final by then."""
    path = Path(path)
    image = bytearray(path.read_bytes())
    computed, embedded = code_sha256(bytes(image), path)
    if embedded != bytes(DIGEST_BYTES).hex():
        raise ValueError(f"{path}: its code hash slot is already filled")
    digest_at = code_hash_slot(bytes(image), elf_layout(bytes(image), path), path)
    image[digest_at : digest_at + DIGEST_BYTES] = bytes.fromhex(computed)
    path.write_bytes(bytes(image))
    return computed


def check_code_hash(image: bytes, recorded: str, origin: Path) -> str:
    """Refuse a library whose mapped bytes do not hash to its embedded hash and the manifest's.

    `recorded` is manifest.json's `files["model.so"].code_sha256`; returns the hash."""
    computed, embedded = code_sha256(image, origin)
    if computed != embedded:
        raise ArtifactError(
            f"{origin}: its code and read-only data hash to {computed}, but the library was "
            f"sealed with {embedded} ('{CODE_HASH_SYMBOL}'); the library was edited or is "
            f"corrupt"
        )
    if computed != recorded:
        raise ArtifactError(
            f"{origin}: its code hash is {computed} (as embedded), but manifest.json records "
            f"code_sha256 {recorded}; the manifest was edited or the files come from different "
            f"compiles"
        )
    return computed


def check_loaded_slot(library: ctypes.CDLL, code_hash: str, origin: Path) -> None:
    """After dlopen: the symbol `ember_code_sha256` must be the slot that was checked (not a
    second, unchecked copy elsewhere). Reads data only; runs nothing."""
    try:
        address = ctypes.addressof(ctypes.c_char.in_dll(library, CODE_HASH_SYMBOL))
    except ValueError:
        raise ArtifactError(f"{origin}: has no '{CODE_HASH_SYMBOL}' symbol; recompile") from None
    if ctypes.string_at(address, len(CODE_HASH_SLOT)) != CODE_HASH_TAG + bytes.fromhex(code_hash):
        raise ArtifactError(
            f"{origin}: its '{CODE_HASH_SYMBOL}' symbol is not the code hash slot that was "
            f"checked; the library is corrupt"
        )


# -- signing ----------------------------------------------------------------------------------

KEY_ENV = "EMBER_ARTIFACT_KEY"
SIGNATURE_FILE = "signature"
SIGNATURE_FORMAT = "ember-signature"
SIGNATURE_ALGORITHM = "HMAC-SHA256"
MIN_KEY_BYTES = 16
_MAX_SIGNATURE_BYTES = 4096
SIGNED_FILES = ("model.so", "weights.bin")


def read_key(path: str | os.PathLike[str]) -> bytes:
    """A signing key from a file: its bytes, one trailing newline removed."""
    try:
        key = Path(path).read_bytes()
    except OSError as e:
        raise ArtifactError(f"signing key {path}: cannot be read ({e.strerror})") from None
    key = key.removesuffix(b"\n").removesuffix(b"\r")
    if len(key) < MIN_KEY_BYTES:
        raise ArtifactError(
            f"signing key {path}: {len(key)} bytes, at least {MIN_KEY_BYTES} are needed (make "
            f"one with `head -c 32 /dev/urandom > {path}`)"
        )
    return key


def resolve_key(key: bytes | None) -> bytes | None:
    """The key given, else the one in the file $EMBER_ARTIFACT_KEY names, else None."""
    if key is not None:
        if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
            raise ArtifactError(
                f"key must be bytes, at least {MIN_KEY_BYTES} of them (got "
                f"{type(key).__name__}{f' of {len(key)} bytes' if isinstance(key, bytes) else ''})"
            )
        return bytes(key)
    path = os.environ.get(KEY_ENV)
    return read_key(path) if path else None


def signature_mac(key: bytes, manifest: bytes, file_sha256: Mapping[str, str]) -> str:
    """The HMAC-SHA256 over the manifest's bytes and the named files' sha256 digests."""
    mac = hmac.new(key, b"ember-artifact-signature\x001\x00", hashlib.sha256)
    mac.update(struct.pack("<Q", len(manifest)) + manifest)
    for name in sorted(file_sha256):
        mac.update(name.encode() + b"\x00" + bytes.fromhex(file_sha256[name]))
    return mac.hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sign_artifact(
    directory: str | os.PathLike[str], key: bytes, files: tuple[str, ...] = SIGNED_FILES
) -> None:
    """Write `signature` into a complete artifact directory (the manifest written last)."""
    directory = Path(directory)
    manifest = (directory / "manifest.json").read_bytes()
    digests = {name: sha256_file(directory / name) for name in files}
    document = {
        "format": SIGNATURE_FORMAT,
        "algorithm": SIGNATURE_ALGORITHM,
        "covers": ["manifest.json", *files],
        "hmac": signature_mac(key, manifest, digests),
    }
    (directory / SIGNATURE_FILE).write_text(json.dumps(document, indent=2) + "\n")


def verify_signature(
    directory: Path, key: bytes, manifest: bytes, file_sha256: Mapping[str, str]
) -> None:
    """Refuse an artifact without a signature, or whose signature is not `key`'s over these
    manifest bytes and file digests (the digests the files are then checked against)."""
    path = directory / SIGNATURE_FILE
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_SIGNATURE_BYTES + 1)
    except FileNotFoundError:
        raise ArtifactError(
            f"{directory}: is not signed (no '{SIGNATURE_FILE}' file) but a key was given "
            f"(load's key= or ${KEY_ENV}); compile it with `ember compile --sign-key`"
        ) from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        document = json.loads(data) if len(data) <= _MAX_SIGNATURE_BYTES else None
    except ValueError:
        document = None
    if (
        not isinstance(document, dict)
        or document.get("format") != SIGNATURE_FORMAT
        or document.get("algorithm") != SIGNATURE_ALGORITHM
        or not isinstance(document.get("hmac"), str)
    ):
        raise ArtifactError(
            f"{path}: not an ember {SIGNATURE_ALGORITHM} signature; the artifact is corrupt"
        )
    expected = signature_mac(key, manifest, file_sha256)
    if not hmac.compare_digest(document["hmac"].encode(), expected.encode()):
        raise ArtifactError(
            f"{directory}: its signature does not match this key: the artifact was signed with "
            f"another key, or manifest.json, model.so or weights.bin changed after signing"
        )
