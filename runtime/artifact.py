"""Ahead-of-time artifacts: a directory with `model.so`, `weights.bin` and `manifest.json`.

    exe = ember.runtime.load("resnet50.ember")     # numpy + ctypes only: no xDSL, no llvmlite
    y = exe.run({"data": x})

`load` checks everything it can before it runs a single instruction of the artifact: the
manifest parses within limits and every field has the right type and range, it comes from a
compatible ember (same major.minor), this machine has the CPU features the code was compiled
for, and both files have the recorded sizes and sha256 checksums. Those checksums live in the
manifest, so they only prove the files are the ones the manifest names. The library therefore
describes itself: `model.so` holds, as data, the signature, buffer sizes, thread default, target
and weights' sha256 it was compiled with (see `describe`). After dlopen (which runs none of
ember's code) that description is read, validated the same way, checked against this CPU, and
every field of it must equal the manifest's; the weights' checksum must be the one it names.
The runtime then sizes every buffer from the library's description and calls the fixed entry
symbol. Each failure raises `ArtifactError` naming the file, the field and the values.
`write_artifact` is the other half of the format (used by `ember compile`); it too needs
nothing from the compiler.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ember import __version__
from ember.runtime.cpu_features import host_arch, missing_features
from ember.runtime.dims import check_input_shapes
from ember.runtime.documents import MAX_DOCUMENT_BYTES, Field, parse_json, show
from ember.runtime.errors import ArtifactError, InputError
from ember.runtime.executable import (
    ALIGNMENT,
    DTYPE_BYTES,
    Executable,
    Manifest,
    aligned_empty,
    check_feed_names,
)
from ember.runtime.integrity import (
    SIGNED_FILES,
    check_code_hash,
    check_loaded_slot,
    code_sha256,
    elf_layout,
    resolve_key,
    sha256_file,
    verify_signature,
)
from ember.runtime.once import (
    ONCE_KEY,
    OnceProgram,
    library_function,
    nests_terms,
    read_once_section,
    uses_terms,
)
from ember.runtime.runnable import RunnableModel
from ember.runtime.status import SITES_KEY
from ember.runtime.threads import configure_openmp

FORMAT = "ember-artifact"
# 2: model.so describes itself (MODEL_INFO_SYMBOL); the entry symbol is no longer recorded.
# 3: model.so carries the hash of its own code (runtime/integrity.py), the manifest repeats it.
FORMAT_VERSION = 3
# 4: a program compiled once for every shape (extra.compile_once, runtime/once.py): the entry
# takes extents; a runtime reading format 3 must refuse it rather than run it at fixed shapes.
ONCE_FORMAT_VERSION = 4
# 5: format 4 whose extents have affine-floor terms (a conv's output size, runtime/once.py's
# Term): a runtime reading format 4 would take such an extent for its plain dims, so must
# refuse it; a format-4 artifact (no terms) is still read as such.
ONCE_TERMS_FORMAT_VERSION = 5
# 6: format 5 with a term of a term (a conv over a multiple of a floor: after a Resize x2,
# runtime/once.py's Term.inner): a runtime reading format 5 knows no "term" inside a term.
ONCE_NESTED_FORMAT_VERSION = 6
LIBRARY_FILE = "model.so"
WEIGHTS_FILE = "weights.bin"
MANIFEST_FILE = "manifest.json"
SET_THREADS_SYMBOL = "ember_set_num_threads"
# The library's self-description: a read-only data symbol, so reading it runs no code.
MODEL_INFO_SYMBOL = "ember_model_info"
MODEL_INFO_MAGIC = b"EMBRINFO"
MODEL_INFO_VERSION = 1
# magic, format version, length of the JSON text that follows (little-endian).
MODEL_INFO_HEADER = struct.Struct("<8sII")
MAX_THREADS = 4096
_SHA256 = r"[0-9a-f]{64}"
_FEATURE = r"[a-z0-9][a-z0-9._-]*"


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def describe(manifest: Manifest, weights_sha256: str, info: Mapping[str, Any]) -> dict[str, Any]:
    """What model.so says about itself: everything manifest.json holds but the format header
    and the library's own checksum.

    `info` holds `threads` (the default thread count) and `target` (`arch`, `cpu`,
    `required_features`, ...), which the runtime checks, and provenance (opt level, pipeline,
    source model), which it only compares. `ember compile` embeds the description in the
    library (`encode_model_info`) and writes it into manifest.json; `load` requires the two to
    agree field by field.
    """
    return {
        "ember_version": __version__,
        **manifest.to_dict(),
        **info,
        "files": {WEIGHTS_FILE: {"bytes": manifest.weights_bytes, "sha256": weights_sha256}},
    }


def encode_model_info(description: Mapping[str, Any]) -> bytes:
    """The bytes of the `ember_model_info` symbol: header, then canonical JSON."""
    text = json.dumps(description, sort_keys=True, separators=(",", ":")).encode()
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"the model description is {len(text)} bytes, over {MAX_DOCUMENT_BYTES}")
    return MODEL_INFO_HEADER.pack(MODEL_INFO_MAGIC, MODEL_INFO_VERSION, len(text)) + text


@dataclass(frozen=True)
class Description:
    """A validated description (of the manifest or of the library): what running relies on."""

    manifest: Manifest
    threads: int


def read_description(document: dict[str, Any], where: str) -> Description:
    """Check every field `describe` writes (types, ranges, consistency): ArtifactError if not."""
    fields = Field(document, where)
    version = fields["ember_version"].as_str(r"\d+\.\d+(\.\S*)?")
    if _major_minor(version) != _major_minor(__version__):
        raise ArtifactError(
            f"{where}: compiled by ember {version}, which is incompatible with this ember "
            f"{__version__} (major.minor must match); recompile the model"
        )
    manifest = Manifest.from_dict(document, where)
    threads = fields["threads"].as_int(1, MAX_THREADS)
    target = fields["target"]
    target["arch"].as_str()
    target["cpu"].as_str()
    for feature in target["required_features"].as_list(1024):
        feature.as_str(_FEATURE)
    weights = fields["files"][WEIGHTS_FILE]
    size = weights["bytes"]
    if size.as_int() != manifest.weights_bytes:
        size.fail(f"equal to weights_bytes ({manifest.weights_bytes})")
    weights["sha256"].as_str(_SHA256)
    if ONCE_KEY in manifest.extra:
        read_once_section(manifest, where)
    return Description(manifest, threads)


def write_artifact(
    directory: str | os.PathLike[str],
    library: str | os.PathLike[str],
    weights: np.ndarray,
    description: Mapping[str, Any],
) -> Path:
    """Complete an artifact directory that already holds the linked `library` (model.so).

    `description` is what the library was compiled to describe (`describe`). Writes
    `weights.bin` (exactly its `weights_bytes` bytes of `weights`, which must have the sha256
    it names) and `manifest.json`: the format header, the description, and the library's size
    and checksum, and the code hash sealed into it (runtime/integrity.py). The manifest is
    written last, so a directory without one is an interrupted compile, never a half-valid
    artifact.
    """
    directory = Path(directory)
    library = Path(library)
    if library.parent.resolve() != directory.resolve() or library.name != LIBRARY_FILE:
        raise ValueError(f"the library must be {directory / LIBRARY_FILE}, got {library}")
    size = description["weights_bytes"]
    blob = np.ascontiguousarray(weights).view(np.uint8).reshape(-1)[:size]
    if blob.size != size:
        raise ValueError(f"weights hold {blob.size} bytes but the manifest expects {size}")
    weights_path = directory / WEIGHTS_FILE
    with open(weights_path, "wb") as f:
        f.write(memoryview(blob))
    weights_entry = {"bytes": blob.size, "sha256": sha256_file(weights_path)}
    if weights_entry != description["files"][WEIGHTS_FILE]:
        raise ValueError(
            f"{weights_path}: written as {weights_entry}, but the library was compiled for "
            f"{description['files'][WEIGHTS_FILE]}"
        )
    image = library.read_bytes()
    computed, embedded = code_sha256(image, library)
    if computed != embedded:
        raise ValueError(f"{library}: not sealed (integrity.seal_library) after linking")
    library_entry = {
        "bytes": len(image),
        "sha256": hashlib.sha256(image).hexdigest(),
        "code_sha256": computed,
    }
    document: dict[str, Any] = {
        "format": FORMAT,
        "format_version": _format_version(description),
        **description,
        "files": {LIBRARY_FILE: library_entry, WEIGHTS_FILE: weights_entry},
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(document, indent=2) + "\n")
    return directory


def _read_limited(path: Path, limit: int) -> bytes:
    """At most `limit` + 1 bytes of `path` (so that an oversized file is reported, not read)."""
    with open(path, "rb") as f:
        return f.read(limit + 1)


def _parse_manifest(directory: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """manifest.json of `directory`, parsed within limits (no field checked yet)."""
    path, data = _read_manifest_bytes(directory)
    return path, parse_json(data, str(path))


def _read_manifest_bytes(directory: str | os.PathLike[str]) -> tuple[Path, bytes]:
    """manifest.json of `directory` as bytes, at most MAX_DOCUMENT_BYTES + 1 of them."""
    path = Path(directory) / MANIFEST_FILE
    if Path(directory).is_file():  # most often the .onnx model itself: say what to do with it
        hint = (
            "; an .onnx model is compiled by ember.compile() / ember.Config, or ahead of time "
            "by `ember compile MODEL -o DIR`"
            if Path(directory).suffix.lower() == ".onnx"
            else ""
        )
        raise ArtifactError(f"{directory}: is a file, not an artifact directory{hint}")
    if not Path(directory).is_dir():
        raise ArtifactError(f"{directory}: not an artifact directory (no such directory)")
    try:
        data = _read_limited(path, MAX_DOCUMENT_BYTES)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; is {directory} an ember artifact?") from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot be read ({e.strerror})") from None
    return path, data


def _check_header(document: dict[str, Any], path: Path, form: str, version: int) -> None:
    """The manifest's format, format version and ember version (ArtifactError if not ours)."""
    if document.get("format") != form:
        raise ArtifactError(f"{path}: not an ember artifact manifest (no 'format': '{form}')")
    fields = Field(document, str(path))
    ember_version = fields["ember_version"].value
    if not isinstance(ember_version, str) or _major_minor(ember_version) != _major_minor(
        __version__
    ):
        raise ArtifactError(
            f"{path}: compiled by ember {show(ember_version)}, which is incompatible with this "
            f"ember {__version__} (major.minor must match); recompile the model"
        )
    if document.get("format_version") != version:
        raise ArtifactError(
            f"{path}: artifact format {show(document.get('format_version'))}, this runtime "
            f"reads format {version}; recompile the model"
        )


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed manifest.json of an artifact, every field checked (ArtifactError if not)."""
    path, document = _parse_manifest(directory)
    check_manifest(document, path)
    return document


def _format_version(document: Mapping[str, Any]) -> int:
    extra = document.get("extra")
    if not isinstance(extra, dict) or ONCE_KEY not in extra:
        return FORMAT_VERSION
    once = extra[ONCE_KEY]
    if isinstance(once, dict) and nests_terms(once):
        return ONCE_NESTED_FORMAT_VERSION
    if isinstance(once, dict) and uses_terms(once):
        return ONCE_TERMS_FORMAT_VERSION
    return ONCE_FORMAT_VERSION


def check_manifest(document: dict[str, Any], path: Path) -> None:
    """Every field of a parsed manifest.json checked (ArtifactError if not)."""
    _check_header(document, path, FORMAT, _format_version(document))
    fields = Field(document, str(path))
    read_description(document, str(path))
    for name in (LIBRARY_FILE, WEIGHTS_FILE):
        entry = fields["files"][name]
        entry["bytes"].as_int(1 if name == LIBRARY_FILE else 0)
        entry["sha256"].as_str(_SHA256)
    fields["files"][LIBRARY_FILE]["code_sha256"].as_str(_SHA256)


def check_compatible(document: Mapping[str, Any], where: str = "artifact") -> None:
    """Raise ArtifactError if this machine cannot execute the artifact's code.

    `document` has passed `read_description` (the manifest, or the library's description).
    """
    target = document["target"]
    arch = target["arch"]
    if arch != host_arch():
        raise ArtifactError(f"{where}: compiled for {arch}, this machine is {host_arch()}")
    missing = missing_features(target["required_features"])
    if missing:
        raise ArtifactError(
            f"{where}: compiled for CPU '{target['cpu']}' and needs features this CPU "
            f"lacks: {', '.join(missing)}; recompile with `ember compile --target-cpu host` "
            f"(or a portable level such as x86-64-v3) on or for this machine"
        )


def read_model_info(library: ctypes.CDLL, where: str) -> dict[str, Any]:
    """The parsed self-description of a loaded library, read as data (no code runs)."""
    try:
        address = ctypes.addressof(ctypes.c_char.in_dll(library, MODEL_INFO_SYMBOL))
    except ValueError:
        raise ArtifactError(
            f"{where}: has no '{MODEL_INFO_SYMBOL}' symbol, so it cannot say what it was "
            f"compiled for; it is not an ember {__version__} model library (recompile the model)"
        ) from None
    magic, version, length = MODEL_INFO_HEADER.unpack(
        ctypes.string_at(address, MODEL_INFO_HEADER.size)
    )
    if magic != MODEL_INFO_MAGIC or version != MODEL_INFO_VERSION:
        raise ArtifactError(
            f"{where}: '{MODEL_INFO_SYMBOL}' starts with {magic!r} version {version}, not "
            f"{MODEL_INFO_MAGIC!r} version {MODEL_INFO_VERSION}; recompile the model"
        )
    if length > MAX_DOCUMENT_BYTES:
        raise ArtifactError(
            f"{where}: '{MODEL_INFO_SYMBOL}' claims {length} bytes, more than "
            f"{MAX_DOCUMENT_BYTES}; the library is corrupt"
        )
    text = ctypes.string_at(address + MODEL_INFO_HEADER.size, length)
    return parse_json(text, f"{where} ({MODEL_INFO_SYMBOL})")


_MISSING = object()


def _disagreement(described: Any, recorded: Any, path: str) -> tuple[str, Any, Any] | None:
    """The first field (path, recorded value, described value) where the two differ.

    Objects compare member by member (a member only one side has is a difference), arrays of
    equal length item by item, anything else by type and value (1, 1.0 and true all differ).
    """
    if isinstance(described, dict) and isinstance(recorded, dict):
        for key in [*described, *(k for k in recorded if k not in described)]:
            child = f"{path}.{key}" if path else key
            found = _disagreement(described.get(key, _MISSING), recorded.get(key, _MISSING), child)
            if found is not None:
                return found
        return None
    if (
        isinstance(described, list)
        and isinstance(recorded, list)
        and len(described) == len(recorded)
    ):
        for i, (value, other) in enumerate(zip(described, recorded, strict=True)):
            found = _disagreement(value, other, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if type(described) is type(recorded) and described == recorded:
        return None
    return path, recorded, described


def _shown(value: Any) -> str:
    """A value for a disagreement message; arrays also say how many items they hold."""
    if not isinstance(value, list):
        return show(value)
    return f"{show(value)} ({len(value)} item{'' if len(value) == 1 else 's'})"


def check_agreement(described: dict[str, Any], document: dict[str, Any], directory: Path) -> None:
    """Raise ArtifactError unless the manifest holds exactly the library's description.

    Only the manifest's format header and the library's own record in `files` (which the
    library cannot contain) are not compared.
    """
    recorded = {k: v for k, v in document.items() if k not in ("format", "format_version")}
    if isinstance(recorded.get("files"), dict):
        recorded["files"] = {k: v for k, v in recorded["files"].items() if k != LIBRARY_FILE}
    found = _disagreement(described, recorded, "")
    if found is None:
        return
    path, in_manifest, in_library = found
    manifest_says = (
        "has no such field" if in_manifest is _MISSING else f"says {_shown(in_manifest)}"
    )
    library_says = (
        "was compiled without it"
        if in_library is _MISSING
        else f"was compiled with {_shown(in_library)}"
    )
    raise ArtifactError(
        f"{directory}: {MANIFEST_FILE} and {LIBRARY_FILE} disagree on '{path}': the manifest "
        f"{manifest_says}, the library {library_says}; the manifest was edited or the files "
        f"come from different compiles"
    )


def _read_checked(
    directory: Path, name: str, entry: Mapping[str, Any], into: np.ndarray | None = None
) -> bytes | memoryview:
    """Read one artifact file (into `into` if given) and verify its size and sha256.

    The bytes that are checked are the bytes that are used: nothing is read twice.
    """
    path = directory / name
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; the artifact is incomplete")
    size = path.stat().st_size
    if size != int(entry["bytes"]):
        raise ArtifactError(
            f"{path}: {size} bytes, the manifest records {entry['bytes']}; the artifact is "
            f"truncated or corrupt"
        )
    data: bytes | memoryview
    if into is None:
        data = path.read_bytes()
    else:
        data = memoryview(into).cast("B")[:size]
        with open(path, "rb") as f:
            if f.readinto(data) != size:
                raise ArtifactError(f"{path}: changed while being read")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ArtifactError(f"{path}: sha256 checksum mismatch; the artifact is corrupt")
    return data


def check_elf_image(image: bytes, origin: Path) -> None:
    """Refuse an image that is no complete x86-64 ELF shared object before dlopen maps it
    (`integrity.elf_layout`: a segment reaching past a truncated file would SIGBUS)."""
    elf_layout(image, origin)


def _dlopen_private(image: bytes, origin: Path) -> ctypes.CDLL:
    """dlopen the verified library image from a private copy, removed once it is mapped.

    A private file (a new inode under a new name) means that the code that runs is the code
    whose checksum was verified; that glibc cannot hand back an already-loaded library of the
    same name (after a recompile into the same directory it would run the old code on the new
    weights); that each load has its own globals (`ember_num_threads`); and that rewriting the
    artifact while it is loaded cannot SIGBUS this process.
    """
    configure_openmp()
    fd, name = tempfile.mkstemp(prefix="ember-", suffix=".so")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(image)
        return ctypes.CDLL(name)
    except OSError as e:
        raise ArtifactError(
            f"{origin}: cannot be loaded ({e}); if {tempfile.gettempdir()} is mounted noexec, "
            f"point TMPDIR elsewhere"
        ) from None
    finally:
        os.unlink(name)


class LoadedArtifact(Executable):
    """An Executable backed by an artifact's shared library and weights file.

    `document` is the manifest from `read_manifest`, checked by `check_compatible`.
    """

    def __init__(self, directory: Path, document: dict[str, Any], threads: int | None) -> None:
        self.path = directory
        self.info = document
        library, weights, description = open_verified(directory, document)
        library_path = directory / LIBRARY_FILE
        try:
            entry = ctypes.cast(getattr(library, self.ENTRY_SYMBOL), ctypes.c_void_p).value
            set_threads = getattr(library, SET_THREADS_SYMBOL)
        except AttributeError as e:
            raise ArtifactError(f"{library_path}: missing exported symbol ({e})") from None
        set_threads.argtypes = [ctypes.c_int32]
        set_threads.restype = None
        assert entry is not None
        super().__init__(
            entry,
            set_threads,
            description.manifest,
            weights,
            keepalive=library,
            threads=description.threads if threads is None else threads,
        )


class OnceArtifact(OnceProgram):
    """An artifact of a program compiled once for every input shape (runtime/once.py): the
    library checked as any artifact's, then run by the shared OnceProgram."""

    def __init__(self, directory: Path, document: dict[str, Any], threads: int | None) -> None:
        self.path = directory
        self.info = document
        library, weights, description = open_verified(directory, document)
        library_path = directory / LIBRARY_FILE
        self.manifest = description.manifest
        self._keepalive = library
        # The library's own description (equal to the manifest's) says how to size buffers.
        signature = read_once_section(description.manifest, str(library_path))
        try:
            super().__init__(
                library_function(library),
                signature,
                weights,
                description.manifest.extra.get(SITES_KEY),
                description.manifest.arena_bytes,
                description.threads if threads is None else threads,
            )
        except AttributeError as e:
            raise ArtifactError(f"{library_path}: missing exported symbol ({e})") from None


def open_verified(
    directory: Path, document: dict[str, Any]
) -> tuple[ctypes.CDLL, np.ndarray, Description]:
    """The artifact's library loaded, its weights read, and its own description, after every
    check: sizes and checksums of both files, the code hash, the description's fields, this
    CPU, and the description's agreement with the manifest `document` (read_manifest's,
    check_compatible'd)."""
    manifest = Manifest.from_dict(document, str(directory / MANIFEST_FILE))
    files = document["files"]
    weights_path = directory / WEIGHTS_FILE
    # Before allocating weights_bytes: the file proves that size is real.
    if not weights_path.is_file():
        raise ArtifactError(f"{weights_path}: missing; the artifact is incomplete")
    if weights_path.stat().st_size != manifest.weights_bytes:
        raise ArtifactError(
            f"{weights_path}: {weights_path.stat().st_size} bytes, but the manifest's "
            f"weights_bytes is {manifest.weights_bytes}; the weights do not belong to "
            f"this model or are truncated"
        )
    weights = aligned_empty((max(manifest.weights_bytes, ALIGNMENT),))
    _read_checked(directory, WEIGHTS_FILE, files[WEIGHTS_FILE], into=weights)
    image = _read_checked(directory, LIBRARY_FILE, files[LIBRARY_FILE])
    library_path = directory / LIBRARY_FILE
    check_elf_image(bytes(image), library_path)
    code_hash = check_code_hash(bytes(image), files[LIBRARY_FILE]["code_sha256"], library_path)
    library = _dlopen_private(bytes(image), library_path)
    check_loaded_slot(library, code_hash, library_path)
    # From here on the library, not the manifest, says what its code touches.
    described = read_model_info(library, str(library_path))
    description = read_description(described, f"{library_path} ({MODEL_INFO_SYMBOL})")
    check_compatible(described, str(library_path))
    # The weights were checked against the manifest's sha256, so this also checks them
    # against the sha256 the code was compiled with.
    check_agreement(described, document, directory)
    return library, weights, description


def load(
    path: str | os.PathLike[str], threads: int | None = None, key: bytes | None = None
) -> LoadedArtifact | VariantArtifact | OnceArtifact:
    """Load an artifact written by `ember compile`, after checking it fits this machine
    (a multi-variant one, `ember compile --shapes`, gives a VariantArtifact).

    With a signing `key` (or $EMBER_ARTIFACT_KEY naming a key file) the artifact must carry a
    valid signature by that key (runtime/integrity.py); without one, signatures are ignored.
    """
    directory = Path(path)
    key = resolve_key(key)
    manifest_path, data = _read_manifest_bytes(directory)
    document = parse_json(data, str(manifest_path))
    if document.get("format") == VARIANTS_FORMAT:
        if key is not None:  # the top manifest; each variant is verified as it loads
            verify_signature(directory, key, data, {})
        _check_header(document, manifest_path, VARIANTS_FORMAT, VARIANTS_FORMAT_VERSION)
        variants = read_variants_document(document, str(manifest_path))
        return VariantArtifact(directory, variants, threads, key)
    check_manifest(document, manifest_path)
    if key is not None:
        # The signed digests are the ones the files are then checked against.
        files = document["files"]
        verify_signature(
            directory, key, data, {name: files[name]["sha256"] for name in SIGNED_FILES}
        )
    check_compatible(document, str(directory))
    if ONCE_KEY in document.get("extra", {}):
        return OnceArtifact(directory, document, threads)  # type: ignore[return-value]
    loaded = LoadedArtifact(directory, document, threads)
    # -- batch-polymorphic artifacts: one call per sample (runtime/polymorphic.py) --
    from ember.runtime.polymorphic import POLYMORPHIC_KEY, serve_per_sample

    if POLYMORPHIC_KEY in loaded.manifest.extra:
        return serve_per_sample(loaded, str(directory / MANIFEST_FILE))  # type: ignore[return-value]
    return loaded


# -- multi-variant artifacts: one static variant per set of named dim sizes ---------------------

VARIANTS_FORMAT = "ember-artifact-variants"
VARIANTS_FORMAT_VERSION = 1
MAX_VARIANTS = 256
_VARIANT_DIRECTORY = r"variant-[0-9]{1,3}"


def variants_document(
    inputs: list[dict[str, Any]],
    outputs: list[str],
    dim_ranges: Mapping[str, tuple[int, int]],
    variants: list[dict[str, Any]],
) -> dict[str, Any]:
    """The top manifest of a multi-variant artifact: the declared inputs (`dims`: sizes, dim
    names or null), the outputs, the named dims' ranges, and each variant's directory and
    dim sizes. Each variant directory is a complete artifact of its own (checksums, ...)."""
    return {
        "format": VARIANTS_FORMAT,
        "format_version": VARIANTS_FORMAT_VERSION,
        "ember_version": __version__,
        "inputs": inputs,
        "outputs": outputs,
        "dim_ranges": {name: list(bounds) for name, bounds in dim_ranges.items()},
        "variants": variants,
    }


def write_variants_manifest(directory: str | os.PathLike[str], document: dict[str, Any]) -> None:
    """Write the top manifest (last, after every variant is complete)."""
    read_variants_document(document, str(Path(directory) / MANIFEST_FILE))
    (Path(directory) / MANIFEST_FILE).write_text(json.dumps(document, indent=2) + "\n")


@dataclass(frozen=True)
class VariantsManifest:
    inputs: list[tuple[str, list[int | str | None] | None, str]]  # name, dims, dtype
    outputs: list[str]
    dim_ranges: dict[str, tuple[int, int]]
    variants: list[tuple[str, dict[str, int]]]  # directory, dim sizes


def read_variants_document(document: dict[str, Any], where: str) -> VariantsManifest:
    """Every field of a multi-variant manifest checked (ArtifactError naming the field)."""
    fields = Field(document, where)
    inputs = []
    for entry in fields["inputs"].as_list(4096):
        name = entry["name"].as_str()
        dims_field = entry["dims"]
        dims: list[int | str | None] | None = None
        if dims_field.value is not None:
            dims = []
            for dim in dims_field.as_list(64):
                if dim.value is None or isinstance(dim.value, str):
                    dims.append(dim.value if dim.value is None else dim.as_str())
                else:
                    dims.append(dim.as_int(0))
        dtype = entry["dtype"]
        if dtype.value not in DTYPE_BYTES:
            dtype.fail(f"one of ember's dtypes ({', '.join(sorted(DTYPE_BYTES))})")
        inputs.append((name, dims, dtype.as_str()))
    outputs = [o.as_str() for o in fields["outputs"].as_list(4096)]
    ranges = {}
    for dim, bounds in fields["dim_ranges"].as_dict().items():
        pair = Field(bounds, where, f"dim_ranges.{dim}")
        low, high = (b.as_int(0) for b in pair.as_list(2))
        if low > high:
            pair.fail("[smallest, largest] with smallest <= largest")
        ranges[dim] = (low, high)
    variants = []
    for entry in fields["variants"].as_list(MAX_VARIANTS):
        directory = entry["directory"].as_str(_VARIANT_DIRECTORY)
        sizes = {k: entry["dims"][k].as_int(0) for k in entry["dims"].as_dict()}
        variants.append((directory, sizes))
    if not variants:
        fields["variants"].fail("a non-empty array")
    return VariantsManifest(inputs, outputs, ranges, variants)


def read_variants_manifest(directory: str | os.PathLike[str]) -> VariantsManifest:
    path, document = _parse_manifest(directory)
    _check_header(document, path, VARIANTS_FORMAT, VARIANTS_FORMAT_VERSION)
    return read_variants_document(document, str(path))


class VariantArtifact(RunnableModel):
    """A multi-variant artifact (`ember compile --shapes batch=1,4,16`): one static artifact
    per built set of dim sizes, each loaded and checked like any artifact, and a run
    dispatched by its input shapes. Before dispatch the shapes are checked against the declared
    dims and ranges (runtime/dims.py); a shape no variant was built for is refused, listing
    the built ones. The same API as an Executable: input_names, output_names, run, __call__,
    set_num_threads."""

    def __init__(
        self,
        directory: Path,
        manifest: VariantsManifest,
        threads: int | None,
        signing_key: bytes | None = None,
    ) -> None:
        self.path = directory
        self.info = manifest
        self.variants: dict[tuple[tuple[int, ...], ...], LoadedArtifact] = {}
        self._input_names = [name for name, _, _ in manifest.inputs]
        for sub, sizes in manifest.variants:
            loaded = load(directory / sub, threads, signing_key)
            if not isinstance(loaded, LoadedArtifact):
                raise ArtifactError(f"{directory / sub}: a variant cannot hold variants")
            where = f"{directory / sub} (variant {sizes})"
            first = next(iter(self.variants.values()), loaded)
            if (
                loaded.output_names != manifest.outputs
                or not set(loaded.input_names) <= set(self._input_names)
                or loaded.input_names != first.input_names
            ):
                raise ArtifactError(
                    f"{where}: takes {loaded.input_names} and gives {loaded.output_names}, the "
                    f"manifest declares inputs {self._input_names} and outputs "
                    f"{manifest.outputs}; the files come from different compiles"
                )
            key = self._key({s.name: s.shape for s in loaded.manifest.inputs}, loaded)
            if key in self.variants:
                raise ArtifactError(f"{where}: a second variant for the same input shapes")
            self.variants[key] = loaded
        self.threads = next(iter(self.variants.values())).threads
        self._input_name_set = frozenset(self._input_names)
        # The input shapes of the last run and its variant: a run with the same shapes (the
        # usual case) skips the checks and the lookup, whose answer could not differ.
        self._last_dispatch: tuple[tuple[tuple[int, ...], ...], LoadedArtifact] | None = None

    @property
    def input_names(self) -> list[str]:
        return list(self._input_names)

    @property
    def output_names(self) -> list[str]:
        return list(self.info.outputs)

    @property
    def built_shapes(self) -> list[dict[str, list[int]]]:
        """The input shapes of each variant."""
        return [
            {s.name: list(s.shape) for s in loaded.manifest.inputs}
            for loaded in self.variants.values()
        ]

    @staticmethod
    def _key(
        shapes: Mapping[str, Sequence[int]], loaded: LoadedArtifact
    ) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(shapes[name]) for name in loaded.input_names)

    def set_num_threads(self, threads: int) -> None:
        for loaded in self.variants.values():
            loaded.set_num_threads(threads)
        self.threads = threads

    def variant_for(self, shapes: Mapping[str, Sequence[int]]) -> LoadedArtifact:
        """The loaded variant for these input shapes, or InputError naming the built ones."""
        check_input_shapes(
            [(name, dims) for name, dims, _ in self.info.inputs],
            shapes,
            ranges=self.info.dim_ranges,
        )
        # Every variant takes the same program inputs (one model), so one key finds it.
        first = next(iter(self.variants.values()))
        if all(name in shapes for name in first.input_names):
            loaded = self.variants.get(self._key(shapes, first))
            if loaded is not None:
                return loaded
        given = {name: list(shape) for name, shape in shapes.items()}
        raise InputError(
            f"{self.path}: no variant built for input shapes {given}; built: "
            f"{self.built_shapes} (compile the model with these sizes in `ember compile "
            "--shapes`)"
        )

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if type(feeds) is not dict or feeds.keys() != self._input_name_set:
            check_feed_names(feeds, self._input_names)
        arrays = {name: np.asarray(feeds[name]) for name in self._input_names}
        shapes = tuple(array.shape for array in arrays.values())
        last = self._last_dispatch
        if last is not None and last[0] == shapes:
            loaded = last[1]
        else:
            loaded = self.variant_for({name: a.shape for name, a in arrays.items()})
            self._last_dispatch = (shapes, loaded)
        return loaded.run({name: arrays[name] for name in loaded.input_names})
