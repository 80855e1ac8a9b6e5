"""Ahead-of-time artifacts: a directory with `model.so`, `weights.bin` and `manifest.json`.

    exe = ember.runtime.load("resnet50.ember")     # numpy + ctypes only: no xDSL, no llvmlite
    y = exe.run({"data": x})

`load` checks everything it can before it runs a single instruction of the artifact: the
manifest parses and comes from a compatible ember (same major.minor), this machine has the
CPU features the code was compiled for, the weights have the size the manifest says, and both
files match their sha256 checksums. Each failure raises `ArtifactError` saying what is wrong
and where. `write_artifact` is the other half of the format (used by `ember compile`); it too
needs nothing from the compiler.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ember import __version__
from ember.runtime.cpu_features import host_arch, missing_features
from ember.runtime.errors import ArtifactError
from ember.runtime.executable import ALIGNMENT, Executable, Manifest, aligned_empty
from ember.runtime.threads import configure_openmp

FORMAT = "ember-artifact"
FORMAT_VERSION = 1
LIBRARY_FILE = "model.so"
WEIGHTS_FILE = "weights.bin"
MANIFEST_FILE = "manifest.json"
SET_THREADS_SYMBOL = "ember_set_num_threads"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def write_artifact(
    directory: str | os.PathLike[str],
    library: str | os.PathLike[str],
    weights: np.ndarray,
    manifest: Manifest,
    info: Mapping[str, Any],
) -> Path:
    """Complete an artifact directory that already holds the linked `library` (model.so).

    Writes `weights.bin` (exactly `manifest.weights_bytes` bytes of `weights`) and
    `manifest.json`: the runtime manifest plus `info` (target, threads, source hash, ...) plus
    the checksums `load` verifies. The manifest is written last, so a directory without one is
    an interrupted compile, never a half-valid artifact.
    """
    directory = Path(directory)
    library = Path(library)
    if library.parent.resolve() != directory.resolve() or library.name != LIBRARY_FILE:
        raise ValueError(f"the library must be {directory / LIBRARY_FILE}, got {library}")
    blob = np.ascontiguousarray(weights).view(np.uint8).reshape(-1)[: manifest.weights_bytes]
    if blob.size != manifest.weights_bytes:
        raise ValueError(
            f"weights hold {blob.size} bytes but the manifest expects {manifest.weights_bytes}"
        )
    weights_path = directory / WEIGHTS_FILE
    with open(weights_path, "wb") as f:
        f.write(memoryview(blob))
    document: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ember_version": __version__,
        **manifest.to_dict(),
        **info,
        "files": {
            LIBRARY_FILE: {"bytes": library.stat().st_size, "sha256": sha256_file(library)},
            WEIGHTS_FILE: {"bytes": blob.size, "sha256": sha256_file(weights_path)},
        },
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(document, indent=2) + "\n")
    return directory


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed manifest.json of an artifact, checked for format and ember version."""
    path = Path(directory) / MANIFEST_FILE
    if not Path(directory).is_dir():
        raise ArtifactError(f"{directory}: not an artifact directory (no such directory)")
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; is {directory} an ember artifact?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e}); the artifact is corrupt") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not an ember artifact manifest (no 'format': '{FORMAT}')")
    version = str(document.get("ember_version", "?"))
    if _major_minor(version) != _major_minor(__version__):
        raise ArtifactError(
            f"{path}: compiled by ember {version}, which is incompatible with this ember "
            f"{__version__} (major.minor must match); recompile the model"
        )
    if document.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format {document.get('format_version')}, this runtime reads "
            f"format {FORMAT_VERSION}; recompile the model"
        )
    try:
        Manifest.from_dict(document)
        document["files"][LIBRARY_FILE]["sha256"]
        document["files"][WEIGHTS_FILE]["sha256"]
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: manifest lacks a required field ({e!r})") from None
    return document


def check_compatible(document: Mapping[str, Any], where: str = "artifact") -> None:
    """Raise ArtifactError if this machine cannot execute the artifact's code."""
    target = document.get("target", {})
    arch = target.get("arch")
    if arch and arch != host_arch():
        raise ArtifactError(f"{where}: compiled for {arch}, this machine is {host_arch()}")
    missing = missing_features(target.get("required_features", []))
    if missing:
        raise ArtifactError(
            f"{where}: compiled for CPU '{target.get('cpu')}' and needs features this CPU "
            f"lacks: {', '.join(missing)}; recompile with `ember compile --target-cpu host` "
            f"(or a portable level such as x86-64-v3) on or for this machine"
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
    """An Executable backed by an artifact's shared library and weights file."""

    def __init__(self, directory: Path, document: dict[str, Any], threads: int | None) -> None:
        self.path = directory
        self.info = document
        manifest = Manifest.from_dict(document)
        files = document["files"]
        weights_path = directory / WEIGHTS_FILE
        if weights_path.is_file() and weights_path.stat().st_size != manifest.weights_bytes:
            raise ArtifactError(
                f"{weights_path}: {weights_path.stat().st_size} bytes, but the manifest's "
                f"weights_bytes is {manifest.weights_bytes}; the weights do not belong to "
                f"this model or are truncated"
            )
        weights = aligned_empty((max(manifest.weights_bytes, ALIGNMENT),))
        _read_checked(directory, WEIGHTS_FILE, files[WEIGHTS_FILE], into=weights)
        image = _read_checked(directory, LIBRARY_FILE, files[LIBRARY_FILE])
        library_path = directory / LIBRARY_FILE
        library = _dlopen_private(bytes(image), library_path)
        try:
            entry = ctypes.cast(getattr(library, manifest.entry), ctypes.c_void_p).value
            set_threads = getattr(library, SET_THREADS_SYMBOL)
        except AttributeError as e:
            raise ArtifactError(f"{library_path}: missing exported symbol ({e})") from None
        set_threads.argtypes = [ctypes.c_int32]
        set_threads.restype = None
        assert entry is not None
        super().__init__(
            entry,
            set_threads,
            manifest,
            weights,
            keepalive=library,
            threads=threads or int(document.get("threads", 1)),
        )


def load(path: str | os.PathLike[str], threads: int | None = None) -> LoadedArtifact:
    """Load an artifact written by `ember compile`, after checking it fits this machine."""
    directory = Path(path)
    document = read_manifest(directory)
    check_compatible(document, str(directory))
    return LoadedArtifact(directory, document, threads)
