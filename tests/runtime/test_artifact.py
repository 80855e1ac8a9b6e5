"""AOT artifacts: what `compile_artifact` writes, and every way `ember.runtime.load` rejects one."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import ember.runtime
from ember.runtime import ArtifactError, Executable, Manifest, TensorSpec
from ember.runtime.artifact import read_model_info
from ember.runtime.cpu_features import (
    LLVM_TO_CPUINFO,
    host_cpu_flags,
    missing_features,
    required_features,
)
from ember.runtime.documents import nesting_depth
from ember.runtime.integrity import CODE_HASH_TAG, code_sha256
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tests.runtime.util import compile_model, run_without_compiler, small_convnet

# Float32 kernels vs onnxruntime: different summation orders, same math.
REL_TOL = 1e-4


def _feeds(seed: int, batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, 8, 10, 10)).astype(np.float32)}


@pytest.fixture
def artifact(small_artifact: Path, tmp_path: Path) -> Path:
    """A private copy to tamper with."""
    return Path(shutil.copytree(small_artifact, tmp_path / "artifact"))


def _edit_manifest(artifact: Path, **changes: object) -> None:
    path = artifact / "manifest.json"
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


def _never_dlopen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rejections must come before any of the artifact's code is loaded."""

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the library was loaded before the artifact was validated")

    monkeypatch.setattr("ember.runtime.artifact.ctypes.CDLL", fail)


@pytest.fixture(scope="module")
def other_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model with the same signature (other weights): its files are not ours."""
    return compile_model(small_convnet(seed=1), tmp_path_factory.mktemp("other"), threads=2)


def test_manifest_records_what_the_runtime_checks(small_artifact: Path) -> None:
    document = json.loads((small_artifact / "manifest.json").read_text())
    source = (small_artifact.parent / "model.onnx").read_bytes()
    assert document["source"]["sha256"] == hashlib.sha256(source).hexdigest()
    assert document["ember_version"] == ember.__version__
    assert document["threads"] == 2
    assert [s["name"] for s in document["inputs"]] == ["x"]
    assert [(s["name"], s["shape"]) for s in document["outputs"]] == [
        ("logits", [2, 5]),
        ("features", [2, 8, 10, 10]),
    ]
    assert document["target"]["cpu"] and "avx2" in document["target"]["required_features"]
    for name in ("model.so", "weights.bin"):
        data = (small_artifact / name).read_bytes()
        entry = dict(document["files"][name])
        if name == "model.so":  # the hash model.so carries of its own code (integrity.py)
            assert entry.pop("code_sha256") == code_sha256(data, small_artifact)[1]
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert document["files"]["weights.bin"]["bytes"] == document["weights_bytes"]
    assert "entry" not in document  # fixed by the ABI, not chosen by a file


def test_library_describes_itself(small_artifact: Path) -> None:
    """model.so carries, as data, all of the manifest but its format and its own checksum."""
    document = json.loads((small_artifact / "manifest.json").read_text())
    exe = ember.runtime.load(small_artifact)
    described = read_model_info(exe._keepalive, "model.so")
    del document["format"], document["format_version"], document["files"]["model.so"]
    assert described == document
    runtime_fields = {"inputs", "outputs", "arena_bytes", "weights_bytes", "threads", "target"}
    assert runtime_fields <= described.keys() and described["files"].keys() == {"weights.bin"}


def test_loaded_artifact_matches_onnxruntime(small_artifact: Path) -> None:
    exe = ember.runtime.load(small_artifact)
    assert exe.input_names == ["x"] and exe.output_names == ["logits", "features"]
    feeds = _feeds(1)
    assert_close(exe.run(feeds), onnxruntime_outputs(small_convnet(), feeds), rel=REL_TOL)


@pytest.mark.parametrize("api", ["load", "predictor"])
def test_artifact_runs_where_the_compiler_cannot_be_imported(
    small_artifact: Path, tmp_path: Path, api: str
) -> None:
    feeds = _feeds(2)
    results = run_without_compiler(small_artifact, feeds, tmp_path, api)
    assert_close(results, onnxruntime_outputs(small_convnet(), feeds), rel=REL_TOL)


def test_one_model_from_many_threads(small_artifact: Path) -> None:
    exe = ember.runtime.load(small_artifact)
    inputs = [_feeds(100 + i) for i in range(6)]
    expected = [exe.run(feeds) for feeds in inputs]
    failures: list[str] = []
    barrier = threading.Barrier(len(inputs))

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(30):
            got = exe.run(inputs[i])
            for name, ref in expected[i].items():
                # Same code, same threads: a run that shared its arena would differ bitwise.
                if not np.array_equal(got[name], ref):
                    failures.append(f"thread {i}: {name} differs")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    assert_close(expected[3], onnxruntime_outputs(small_convnet(), inputs[3]), rel=REL_TOL)


def test_threads_override(small_artifact: Path) -> None:
    exe = ember.runtime.load(small_artifact, threads=1)
    assert exe.threads == 1
    feeds = _feeds(3)
    one = exe.run(feeds)
    exe.set_num_threads(2)
    assert_close(exe.run(feeds), one, rel=1e-6)


# -- rejections --------------------------------------------------------------------------------


def test_rejects_missing_cpu_features(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flags = host_cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo on this machine")
    absent = next(f for f, flag in LLVM_TO_CPUINFO.items() if flag not in flags)
    document = json.loads((artifact / "manifest.json").read_text())
    document["target"]["required_features"].append(absent)
    (artifact / "manifest.json").write_text(json.dumps(document))
    _never_dlopen(monkeypatch)
    with pytest.raises(ArtifactError, match=f"needs features this CPU lacks: {absent}"):
        ember.runtime.load(artifact)


def test_rejects_other_architecture(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = json.loads((artifact / "manifest.json").read_text())
    document["target"]["arch"] = "aarch64"
    (artifact / "manifest.json").write_text(json.dumps(document))
    _never_dlopen(monkeypatch)
    with pytest.raises(ArtifactError, match="compiled for aarch64"):
        ember.runtime.load(artifact)


def test_rejects_corrupt_library(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray((artifact / "model.so").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (artifact / "model.so").write_bytes(bytes(data))
    _never_dlopen(monkeypatch)
    with pytest.raises(ArtifactError, match=r"model.so: sha256 checksum mismatch"):
        ember.runtime.load(artifact)


def test_rejects_truncated_library(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = (artifact / "model.so").read_bytes()
    (artifact / "model.so").write_bytes(data[: len(data) // 3])
    _never_dlopen(monkeypatch)
    with pytest.raises(ArtifactError, match=r"model.so: \d+ bytes, .* truncated or corrupt"):
        ember.runtime.load(artifact)


def test_rejects_corrupt_weights(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray((artifact / "weights.bin").read_bytes())
    data[7] ^= 0x01
    (artifact / "weights.bin").write_bytes(bytes(data))
    _never_dlopen(monkeypatch)
    with pytest.raises(ArtifactError, match=r"weights.bin: sha256 checksum mismatch"):
        ember.runtime.load(artifact)


def test_rejects_weights_of_the_wrong_size(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = (artifact / "weights.bin").read_bytes()
    (artifact / "weights.bin").write_bytes(data[:-64])
    _never_dlopen(monkeypatch)
    with pytest.raises(ArtifactError, match=r"weights.bin: \d+ bytes, but the manifest's"):
        ember.runtime.load(artifact)


def test_rejects_manifest_weights_size_mismatch(
    artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = json.loads((artifact / "manifest.json").read_text())
    _edit_manifest(artifact, weights_bytes=document["weights_bytes"] + 4096)
    _never_dlopen(monkeypatch)
    with pytest.raises(
        ArtifactError,
        match=r"field .files.weights.bin.bytes. must be equal to weights_bytes \(\d+\), got \d+",
    ):
        ember.runtime.load(artifact)


def test_rejects_missing_weights(artifact: Path) -> None:
    (artifact / "weights.bin").unlink()
    with pytest.raises(ArtifactError, match=r"weights.bin: missing"):
        ember.runtime.load(artifact)


def test_rejects_huge_weights_without_allocating_them(artifact: Path) -> None:
    """weights_bytes of 1 TiB with no weights file: refused, not a MemoryError."""
    size = 1 << 40
    document = json.loads((artifact / "manifest.json").read_text())
    document["weights_bytes"] = size
    document["files"]["weights.bin"]["bytes"] = size
    (artifact / "manifest.json").write_text(json.dumps(document))
    (artifact / "weights.bin").unlink()
    with pytest.raises(ArtifactError, match=r"weights.bin: missing"):
        ember.runtime.load(artifact)


def test_rejects_bad_json(artifact: Path) -> None:
    text = (artifact / "manifest.json").read_text()
    (artifact / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(ArtifactError, match=r"manifest.json: not valid JSON"):
        ember.runtime.load(artifact)


def test_rejects_missing_manifest(artifact: Path) -> None:
    (artifact / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"manifest.json: missing"):
        ember.runtime.load(artifact)


def test_rejects_manifest_without_required_fields(artifact: Path) -> None:
    document = json.loads((artifact / "manifest.json").read_text())
    del document["inputs"]
    (artifact / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match=r"manifest.json: required field 'inputs' is missing"):
        ember.runtime.load(artifact)


def test_rejects_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not an artifact directory"):
        ember.runtime.load(tmp_path / "nowhere")
    (tmp_path / "manifest.json").write_text('{"hello": 1}')
    with pytest.raises(ArtifactError, match="not an ember artifact manifest"):
        ember.runtime.load(tmp_path)


def test_an_onnx_file_is_not_called_a_missing_directory(tmp_path: Path) -> None:
    """Issue 15: load("model.onnx") said "no such directory" for a file that exists."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07")
    with pytest.raises(ArtifactError) as error:
        ember.runtime.load(model)
    assert "is a file, not an artifact directory" in str(error.value)
    assert "no such directory" not in str(error.value) and "ember compile" in str(error.value)


def test_rejects_incompatible_ember_version(artifact: Path) -> None:
    major, minor, *_ = ember.__version__.split(".")
    _edit_manifest(artifact, ember_version=f"{major}.{int(minor) + 1}.0")
    with pytest.raises(ArtifactError, match=r"incompatible with this ember .*major.minor"):
        ember.runtime.load(artifact)


def test_accepts_other_patch_version(artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime of another patch release loads the artifact (manifest and library agree)."""
    major, minor, *_ = ember.__version__.split(".")
    monkeypatch.setattr("ember.runtime.artifact.__version__", f"{major}.{minor}.99")
    assert ember.runtime.load(artifact).output_names == ["logits", "features"]


# -- tampering: each edit is refused before any of the artifact's code runs ----------------------

# Loads (and, if that passes, runs) artifacts in a fresh interpreter, one after the other: a
# regression that crashes the process then fails a test instead of killing pytest. Each outcome
# says whether an Executable (the first thing that calls into the library) was constructed.
_LOAD_AND_RUN = r"""
import json, sys
import numpy as np
import ember
import ember.runtime
from ember.runtime.executable import Executable

constructed = []
original = Executable.__init__

def spy(self, *args, **kwargs):
    constructed.append(True)
    original(self, *args, **kwargs)

Executable.__init__ = spy
for path in sys.argv[1:]:
    print(json.dumps({"artifact": path, "started": True}), flush=True)
    constructed.clear()
    try:
        exe = ember.runtime.load(path)
        outputs = exe.run({"x": np.ones((2, 8, 10, 10), np.float32)})
        outcome = {"ran": {name: value.shape for name, value in outputs.items()}}
    except ember.EmberError as e:
        outcome = {"error": type(e).__name__, "message": str(e)}
    outcome |= {"artifact": path, "constructed": bool(constructed)}
    print(json.dumps(outcome), flush=True)
"""


def _load_in_subprocess(artifacts: list[Path]) -> dict[str, dict]:
    """Outcome per artifact path; one that killed the process gets its exit code and stderr,
    the ones after it none (run them again on their own)."""
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_RUN, *map(str, artifacts)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    outcomes: dict[str, dict] = {}
    for line in result.stdout.splitlines():
        record = json.loads(line)
        outcomes[record["artifact"]] = record
    for record in outcomes.values():
        if "started" in record:  # it never finished: it took the process down
            record["crashed"] = f"exit code {result.returncode}:\n{result.stderr[-3000:]}"
    return outcomes


Tamper = Callable[[Path, Path], None]  # (artifact to edit, another model's artifact)


def _rewrite(artifact: Path, edit: Callable[[dict], None]) -> None:
    path = artifact / "manifest.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def _set(*keys: str | int, value: object) -> Tamper:
    """Set one manifest field (keys: the path to it)."""

    def edit(document: dict) -> None:
        for key in keys[:-1]:
            document = document[key]
        document[keys[-1]] = value

    return lambda artifact, _: _rewrite(artifact, edit)


def _edit(edit: Callable[[dict], None]) -> Tamper:
    return lambda artifact, _: _rewrite(artifact, edit)


def _write_text(text: Callable[[str], str]) -> Tamper:
    def tamper(artifact: Path, _: Path) -> None:
        path = artifact / "manifest.json"
        path.write_text(text(path.read_text()))

    return tamper


def _replace_file(
    name: str, data: Callable[[Path, Path], bytes], code_hash: bool = False
) -> Tamper:
    """Replace an artifact file and record its new size and sha256: a consistent edit.

    With `code_hash`, a library's manifest code_sha256 is recomputed from it too (what its
    embedded hash says, or, if it is no ember library, whatever it hashes to)."""

    def tamper(artifact: Path, other: Path) -> None:
        content = data(artifact, other)
        (artifact / name).write_bytes(content)
        record = {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}

        def edit(document: dict) -> None:
            document["files"][name].update(record)
            if code_hash:
                document["files"][name]["code_sha256"] = code_sha256(content, artifact)[0]

        _rewrite(artifact, edit)

    return tamper


def _section(image: bytes, wanted: str) -> tuple[int, int]:
    """(file offset, size) of the ELF section `wanted`, from the section headers."""
    (shoff,) = struct.unpack_from("<Q", image, 40)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 58)
    headers = [struct.unpack_from("<IIQQQQ", image, shoff + k * shentsize) for k in range(shnum)]
    names_at = headers[shstrndx][4]
    for name_at, _, _, _, offset, size in headers:
        end = image.index(b"\0", names_at + name_at)
        if image[names_at + name_at : end].decode() == wanted:
            return offset, size
    raise AssertionError(f"no section {wanted}")


def _resealed(image: bytes) -> bytes:
    """`image` with its embedded code hash recomputed: what a deliberate attacker does."""
    computed, embedded = code_sha256(image, Path("model.so"))
    at = image.index(CODE_HASH_TAG) + len(CODE_HASH_TAG)
    assert image[at : at + 32].hex() == embedded
    return image[:at] + bytes.fromhex(computed) + image[at + 32 :]


def _flipped_code(artifact: Path, _: Path) -> bytes:
    """One bit of model.so's machine code (the middle of .text) flipped."""
    data = bytearray((artifact / "model.so").read_bytes())
    offset, size = _section(bytes(data), ".text")
    data[offset + size // 2] ^= 0x10
    return bytes(data)


def _edited_code_hash(artifact: Path, _: Path) -> bytes:
    """The embedded code hash with one bit flipped, the code left as it was."""
    data = bytearray((artifact / "model.so").read_bytes())
    data[data.index(CODE_HASH_TAG) + len(CODE_HASH_TAG) + 5] ^= 0x01
    return bytes(data)


def _flipped_weight(artifact: Path, _: Path) -> bytes:
    data = bytearray((artifact / "weights.bin").read_bytes())
    data[100] ^= 0x01
    return bytes(data)


def _library_without_description(artifact: Path, _: Path) -> bytes:
    """A library with ember's entry points but no self-description (as before format 2)."""
    source = artifact.parent / "stub.c"
    source.write_text("void main(void) {}\nvoid ember_set_num_threads(int n) {}\n")
    library = artifact.parent / "stub.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", library, source], check=True, timeout=60)
    return library.read_bytes()


def _negative_arena_in_library(artifact: Path, _: Path) -> bytes:
    """model.so with its self-description edited in place (the manifest left as it was)."""
    data = (artifact / "model.so").read_bytes()
    # Same length: the first digit of the arena size becomes a minus sign.
    edited, count = re.subn(rb'"arena_bytes":\d', b'"arena_bytes":-', data)
    assert count == 1
    return edited


def _negative_arena_resealed(artifact: Path, other: Path) -> bytes:
    return _resealed(_negative_arena_in_library(artifact, other))


def _drop_required_feature(document: dict) -> None:
    document["target"]["required_features"].remove("avx2")


_DISAGREE = "manifest.json and model.so disagree on"
_COMPILED_WITH = "the library was compiled with"
_INT = r"must be an integer from 0 to \d+"

TAMPERING: dict[str, tuple[Tamper, str]] = {
    # Fields with the wrong type or range: refused while reading the manifest.
    "arena-bytes-negative": (_set("arena_bytes", value=-1), rf"'arena_bytes' {_INT}, got -1"),
    "arena-bytes-fraction": (_set("arena_bytes", value=1.5), rf"'arena_bytes' {_INT}, got 1.5"),
    "arena-bytes-bool": (_set("arena_bytes", value=True), rf"'arena_bytes' {_INT}, got true"),
    "weights-bytes-string": (
        _set("weights_bytes", value="5184"),
        rf"'weights_bytes' {_INT}, got \"5184\"",
    ),
    "output-dtype-unknown": (
        _set("outputs", 0, "dtype", value="object"),
        r"'outputs\[0\]\.dtype' must be one of float16, .*, got \"object\"",
    ),
    "output-shape-negative": (
        _set("outputs", 0, "shape", value=[2, -5]),
        rf"'outputs\[0\]\.shape\[1\]' {_INT}, got -5",
    ),
    "output-shape-huge": (
        _set("outputs", 0, "shape", value=[1 << 40, 1 << 40]),
        r"field 'outputs\[0\]\.shape' must be a shape of at most 1099511627776 bytes \(this "
        r"one: \d+\), got \[1099511627776, 1099511627776\]",
    ),
    "output-shape-missing": (
        _edit(lambda d: d["outputs"][0].pop("shape")),
        r"required field 'outputs\[0\]\.shape' is missing",
    ),
    "outputs-empty": (
        _set("outputs", value=[]),
        r"field 'outputs' must be a non-empty array \(a program has outputs\), got \[\]",
    ),
    "inputs-duplicated": (
        _edit(lambda d: d.update(inputs=d["inputs"] * 2)),
        r"field 'inputs\[1\]\.name' must be unique among the inputs, got \"x\"",
    ),
    "outputs-duplicated": (
        _edit(lambda d: d.update(outputs=[d["outputs"][0], d["outputs"][0]])),
        r"field 'outputs\[1\]\.name' must be unique among the outputs, got \"logits\"",
    ),
    "entry-abort": (
        _set("entry", value="abort"),
        r"field 'entry' must be 'main' \(the entry point is fixed.*got \"abort\"",
    ),
    "threads-many": (
        _set("threads", value="many"),
        r"field 'threads' must be an integer from 1 to \d+, got \"many\"",
    ),
    "threads-zero": (_set("threads", value=0), r"field 'threads' must be an integer from 1"),
    "sha256-not-hex": (
        _set("files", "model.so", "sha256", value="xyz"),
        r"field 'files.model.so.sha256' must be a string matching",
    ),
    "old-format": (_set("format_version", value=1), r"artifact format 1, this runtime reads"),
    # Malformed documents.
    "not-an-object": (_write_text(lambda _: "[1, 2]"), r"manifest.json: holds an array, not"),
    "deeply-nested": (
        _write_text(lambda t: '{"deep": ' + "[" * 100000 + "]" * 100000 + ", " + t.lstrip()[1:]),
        r"manifest.json: nested 100001 levels deep, more than the 32",
    ),
    "oversized": (
        _write_text(lambda t: t[:-1] + " " * (5 << 20) + "}"),
        r"manifest.json: larger than the 4194304 bytes an ember document may have",
    ),
    "nan": (
        _write_text(lambda t: re.sub(r'"arena_bytes": \d+', '"arena_bytes": NaN', t)),
        r"not valid JSON \(NaN is not a JSON number\)",
    ),
    # Well-formed edits that contradict what model.so was compiled with.
    "arena-bytes-zero": (
        _set("arena_bytes", value=0),
        rf"{_DISAGREE} 'arena_bytes': the manifest says 0, {_COMPILED_WITH} [1-9]\d*;",
    ),
    "arena-bytes-one": (_set("arena_bytes", value=1), rf"{_DISAGREE} 'arena_bytes'"),
    "output-shape-smaller": (
        _set("outputs", 0, "shape", value=[2, 4]),
        rf"{_DISAGREE} 'outputs\[0\]\.shape\[1\]': the manifest says 4, {_COMPILED_WITH} 5",
    ),
    "output-shape-doubled": (
        _set("outputs", 0, "shape", value=[4, 5]),
        rf"{_DISAGREE} 'outputs\[0\]\.shape\[0\]': the manifest says 4, {_COMPILED_WITH} 2",
    ),
    "output-rank": (
        _set("outputs", 0, "shape", value=[2, 5, 1]),
        rf"{_DISAGREE} 'outputs\[0\]\.shape': the manifest says \[2, 5, 1\] \(3 items\), "
        rf"{_COMPILED_WITH} \[2, 5\] \(2 items\)",
    ),
    "output-dtype": (
        _set("outputs", 0, "dtype", value="float64"),
        rf"{_DISAGREE} 'outputs\[0\]\.dtype': the manifest says \"float64\", "
        rf"{_COMPILED_WITH} \"float32\"",
    ),
    "outputs-swapped": (
        _edit(lambda d: d.update(outputs=d["outputs"][::-1])),
        rf"{_DISAGREE} 'outputs\[0\]\.name': the manifest says \"features\"",
    ),
    "input-shape-smaller": (
        _set("inputs", 0, "shape", value=[1, 8, 10, 10]),
        rf"{_DISAGREE} 'inputs\[0\]\.shape\[0\]': the manifest says 1, {_COMPILED_WITH} 2",
    ),
    "inputs-empty": (
        _set("inputs", value=[]),
        rf"{_DISAGREE} 'inputs': the manifest says \[\] \(0 items\), {_COMPILED_WITH} \[{{.*"
        r"\(1 item\)",
    ),
    "field-added": (
        _set("note", value="harmless?"),
        rf"{_DISAGREE} 'note': the manifest says \"harmless\?\", the library was compiled "
        r"without it",
    ),
    "threads-changed": (
        _set("threads", value=1),
        rf"{_DISAGREE} 'threads': the manifest says 1, {_COMPILED_WITH} 2",
    ),
    "required-feature-dropped": (
        _edit(_drop_required_feature),
        rf"{_DISAGREE} 'target.required_features'",
    ),
    "profile-slots-added": (
        _set("extra", "profile", value=[{"callee": "k", "summary": "", "flops": 1}]),
        rf"{_DISAGREE} 'extra.profile': the manifest says \[{{.*, the library was compiled "
        r"without it",
    ),
    # Consistent edits: files replaced and their sizes and checksums recorded anew.
    "weight-byte-flipped": (
        _replace_file("weights.bin", _flipped_weight),
        rf"{_DISAGREE} 'files.weights.bin.sha256': the manifest says \"[0-9a-f]+\", "
        rf"{_COMPILED_WITH} \"[0-9a-f]+\"",
    ),
    "other-models-library": (
        _replace_file("model.so", lambda _, other: (other / "model.so").read_bytes()),
        r"model.so: its code hash is [0-9a-f]{64} \(as embedded\), but manifest.json records "
        r"code_sha256 [0-9a-f]{64}; the manifest was edited",
    ),
    "other-models-library-and-code-hash": (
        _replace_file(
            "model.so", lambda _, other: (other / "model.so").read_bytes(), code_hash=True
        ),
        rf"{_DISAGREE} 'files.weights.bin.sha256'",
    ),
    # model.so edited where the loader maps it: its embedded code hash no longer matches.
    "library-code-flipped": (
        _replace_file("model.so", _flipped_code, code_hash=True),
        r"model.so: its code and read-only data hash to [0-9a-f]{64}, but the library was "
        r"sealed with [0-9a-f]{64} \('ember_code_sha256'\); the library was edited or is corrupt",
    ),
    "library-code-hash-edited": (
        _replace_file("model.so", _edited_code_hash),
        r"model.so: its code and read-only data hash to [0-9a-f]{64}, but the library was "
        r"sealed with",
    ),
    "manifest-code-hash-edited": (
        _set("files", "model.so", "code_sha256", value="0" * 64),
        r"but manifest.json records code_sha256 0{64}",
    ),
    "library-description-edited": (
        _replace_file("model.so", _negative_arena_in_library, code_hash=True),
        r"model.so: its code and read-only data hash to",
    ),
    # A deliberate attacker who recomputes the embedded hash: the description is still checked.
    "library-description-invalid": (
        _replace_file("model.so", _negative_arena_resealed, code_hash=True),
        r"model.so \(ember_model_info\): field 'arena_bytes' must be an integer from 0 to \d+, "
        r"got -\d+",
    ),
    "library-not-a-library": (
        _replace_file("model.so", lambda _, __: b"\x7fELF but not really"),
        r"model.so: not a 64-bit little-endian ELF shared library",
    ),
    # A truncated library with a rewritten checksum: its segments reach past the end of the
    # file, which dlopen would turn into SIGBUS.
    "library-truncated": (
        _replace_file("model.so", lambda a, _: (a / "model.so").read_bytes()[:-4096]),
        r"model.so: truncated \(",
    ),
    "not-an-ember-library": (
        _replace_file("model.so", _library_without_description),
        r"model.so: has no embedded code hash \('ember_code_sha256'\), so nothing vouches for "
        r"its code",
    ),
}


@pytest.fixture(scope="module")
def tampered_outcomes(
    small_artifact: Path, other_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict]:
    """Every case of TAMPERING applied to its own copy, all loaded in one subprocess."""
    root = tmp_path_factory.mktemp("tampered")
    paths = {}
    for case, (tamper, _) in TAMPERING.items():
        paths[case] = Path(shutil.copytree(small_artifact, root / case))
        tamper(paths[case], other_artifact)
        # A tampering that no longer applies (the manifest changed shape) must not pass as one.
        assert any(
            (paths[case] / name).read_bytes() != (small_artifact / name).read_bytes()
            for name in ("manifest.json", "model.so", "weights.bin")
        ), f"{case}: the tampering changed nothing"
    outcomes = _load_in_subprocess(list(paths.values()))
    return {case: outcomes.get(str(path), {"artifact": str(path)}) for case, path in paths.items()}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampered_artifact_is_refused(case: str, tampered_outcomes: dict[str, dict]) -> None:
    outcome = tampered_outcomes[case]
    if "started" not in outcome and "constructed" not in outcome:
        # An earlier case crashed the shared subprocess before this one started.
        outcome = _load_in_subprocess([Path(outcome["artifact"])])[outcome["artifact"]]
    assert "crashed" not in outcome, f"loading it killed the process, {outcome['crashed']}"
    assert outcome.get("error") == "ArtifactError", f"not refused: {outcome}"
    assert not outcome["constructed"], "the library was called before the refusal"
    assert re.search(TAMPERING[case][1], outcome["message"]), outcome["message"]


def test_nesting_depth_ignores_brackets_in_strings() -> None:
    document = {"a": "[[[{", "b": [1, {"c": '"]]}\\'}], "d": []}
    assert nesting_depth(json.dumps(document).encode()) == 3
    assert nesting_depth(b"") == 0


def _spec(name: str, dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name, (2, 3), dtype)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            Manifest([_spec("x")], [_spec("y"), _spec("y")], 64, 0),
            "'outputs.1.\\.name' must be uniq",
        ),
        (Manifest([_spec("x")], [], 64, 0), "'outputs' must be a non-empty array"),
        (Manifest([_spec("x", "object")], [_spec("y")], 64, 0), r"'inputs\[0\]\.dtype'"),
        (Manifest([_spec("x")], [_spec("y")], -1, 0), "'arena_bytes' must be an integer"),
    ],
)
def test_executable_checks_the_manifest_before_binding_code(
    manifest: Manifest, message: str
) -> None:
    """The JIT path (CompiledModel) shares the manifest checks: nothing is called on failure."""

    def never(threads: int) -> None:
        raise AssertionError("native code called")

    with pytest.raises(ArtifactError, match=message):
        Executable(0, never, manifest, np.zeros(64, np.uint8))


def test_threads_argument_is_checked(small_artifact: Path) -> None:
    with pytest.raises(ValueError, match=r"threads must be an integer >= 1, got 'many'"):
        ember.runtime.load(small_artifact, threads="many")  # type: ignore[arg-type]


def test_artifact_errors_are_value_errors() -> None:
    assert issubclass(ArtifactError, ValueError)


# -- cpu features ------------------------------------------------------------------------------


def test_required_features_expand_portable_levels() -> None:
    v3 = required_features("x86-64-v3", "")
    assert {"avx2", "fma", "f16c", "bmi2"} <= set(v3) and "avx512f" not in v3
    v4 = required_features("x86-64-v4", "")
    assert {"avx512f", "avx512vl", "avx512bw"} <= set(v4)
    assert {"avx2", "fma"} <= set(required_features("haswell", ""))
    assert "avx512vnni" in required_features("icelake-server", "")
    # Disabled and unknown (tuning-only) features impose nothing.
    assert required_features("generic", "+avx2,-avx512f,+64bit,+fma") == ["avx2", "fma"]
    # Regression: Linux hides rdseed on Zen 5 while cpuid reports it, and ember never emits it;
    # requiring it made host builds unloadable on the machine that compiled them.
    assert required_features("znver5", "+avx2,+rdseed,+rdrnd") == ["avx2"]


def test_missing_features_translates_llvm_names_to_cpuinfo_flags() -> None:
    flags = {"sse4_1", "avx2", "fma", "abm"}
    assert missing_features(["sse4.1", "avx2", "fma", "lzcnt"], flags) == []
    assert missing_features(["avx512f", "sse4.2", "avx2"], flags) == ["avx512f", "sse4.2"]


def test_host_cpu_flags_parses_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nflags\t: other\n")
    assert host_cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx2", "fma"}
    # Where cpuinfo cannot be read there is nothing to check against (not Linux).
    assert host_cpu_flags(str(tmp_path / "absent")) is None


def test_recompiling_into_a_loaded_directory_loads_the_new_code(tmp_path: Path) -> None:
    """dlopen would hand back the old library for the same path; load must not."""
    from ember.tests.runtime.util import compile_model

    artifact = compile_model(small_convnet(seed=1), tmp_path, threads=1)
    first = ember.runtime.load(artifact)
    compile_model(small_convnet(seed=2, batch=1), tmp_path, threads=1)
    second = ember.runtime.load(artifact)
    feeds = _feeds(9, batch=1)
    assert_close(second.run(feeds), onnxruntime_outputs(small_convnet(2, 1), feeds), rel=REL_TOL)
    feeds = _feeds(9, batch=2)
    assert_close(first.run(feeds), onnxruntime_outputs(small_convnet(1, 2), feeds), rel=REL_TOL)


def test_each_load_has_its_own_thread_count(small_artifact: Path) -> None:
    import ctypes

    one, two = ember.runtime.load(small_artifact, threads=1), ember.runtime.load(small_artifact)
    two.set_num_threads(2)

    def global_threads(exe: ember.runtime.LoadedArtifact) -> int:
        return ctypes.c_int32.in_dll(exe._keepalive, "ember_num_threads").value

    assert (global_threads(one), global_threads(two)) == (1, 2)


def test_rewriting_a_loaded_artifact_does_not_affect_it(artifact: Path) -> None:
    exe = ember.runtime.load(artifact)
    feeds = _feeds(10)
    before = exe.run(feeds)
    with open(artifact / "model.so", "r+b") as f:  # in place: the same inode
        f.truncate(100)
    after = exe.run(feeds)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
