"""Signed artifacts (`ember compile --sign-key FILE`, `load(path, key=...)`, $EMBER_ARTIFACT_KEY):
with a key, only an artifact signed by that key over its manifest, library and weights loads;
without one, nothing changes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import ember.runtime
from ember.engine.aot import compile_variants
from ember.runtime import ArtifactError
from ember.runtime.integrity import (
    CODE_HASH_TAG,
    KEY_ENV,
    SIGNATURE_FILE,
    code_sha256,
    elf_layout,
    sign_artifact,
)
from ember.tests.runtime.util import save, small_convnet
from ember.tools import cli
from ember.tools.symbolic_zoo import feeds, symbolic_model

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
FEEDS = {"x": np.ones((2, 8, 10, 10), np.float32)}


@pytest.fixture
def signed(small_artifact: Path, tmp_path: Path) -> Path:
    directory = Path(shutil.copytree(small_artifact, tmp_path / "signed"))
    sign_artifact(directory, KEY)
    return directory


@pytest.fixture
def unsigned(small_artifact: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(small_artifact, tmp_path / "unsigned"))


def _key_file(tmp_path: Path, key: bytes) -> Path:
    path = tmp_path / "artifact.key"
    path.write_bytes(key + b"\n")  # as `echo` would leave it: the newline is not part of it
    return path


def test_signed_artifact_loads_with_its_key(signed: Path, small_artifact: Path) -> None:
    expected = ember.runtime.load(small_artifact).run(FEEDS)
    for key in (KEY, None):  # without a key the signature is not looked at
        got = ember.runtime.load(signed, key=key).run(FEEDS)
        assert all(np.array_equal(got[name], expected[name]) for name in expected)
    document = json.loads((signed / SIGNATURE_FILE).read_text())
    assert document["algorithm"] == "HMAC-SHA256"
    assert document["covers"] == ["manifest.json", "model.so", "weights.bin"]


def test_unsigned_artifact_is_refused_when_a_key_is_given(unsigned: Path) -> None:
    ember.runtime.load(unsigned)  # no key: unchanged behaviour
    with pytest.raises(ArtifactError, match=r"is not signed \(no 'signature' file\)"):
        ember.runtime.load(unsigned, key=KEY)


def test_another_key_is_refused(signed: Path) -> None:
    with pytest.raises(ArtifactError, match="its signature does not match this key"):
        ember.runtime.load(signed, key=OTHER_KEY)


def _flip_weight_consistently(directory: Path) -> None:
    """A weight byte flipped, its size and checksum rewritten: what only a signature catches."""
    weights = bytearray((directory / "weights.bin").read_bytes())
    weights[7] ^= 1
    (directory / "weights.bin").write_bytes(bytes(weights))
    document = json.loads((directory / "manifest.json").read_text())
    document["files"]["weights.bin"]["sha256"] = hashlib.sha256(weights).hexdigest()
    (directory / "manifest.json").write_text(json.dumps(document, indent=2) + "\n")


def _edit_code_and_reseal(directory: Path) -> None:
    """A deliberate attacker: code edited, the embedded hash and every checksum recomputed
    (the code hash alone cannot catch this; the signature does)."""
    library = directory / "model.so"
    image = bytearray(library.read_bytes())
    code = elf_layout(bytes(image), library).loads[1]
    image[code.offset + code.size // 2] ^= 0x10
    at = image.index(CODE_HASH_TAG) + len(CODE_HASH_TAG)
    computed, _ = code_sha256(bytes(image), library)
    image[at : at + 32] = bytes.fromhex(computed)
    library.write_bytes(bytes(image))
    document = json.loads((directory / "manifest.json").read_text())
    document["files"]["model.so"].update(
        sha256=hashlib.sha256(image).hexdigest(), code_sha256=computed
    )
    (directory / "manifest.json").write_text(json.dumps(document, indent=2) + "\n")
    assert code_sha256(bytes(image), library) == (computed, computed)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: (d / "manifest.json").write_text((d / "manifest.json").read_text() + " "),
        _flip_weight_consistently,
        _edit_code_and_reseal,
        lambda d: (d / SIGNATURE_FILE).write_text(
            (d / SIGNATURE_FILE).read_text().replace('"hmac": "', '"hmac": "0')
        ),
    ],
    ids=["manifest-whitespace", "weight-flipped-checksums-rewritten", "code-resealed", "mac"],
)
def test_any_change_after_signing_is_refused(signed: Path, tamper) -> None:
    tamper(signed)
    with pytest.raises(ArtifactError, match="its signature does not match this key"):
        ember.runtime.load(signed, key=KEY)


def test_corrupt_signature_file(signed: Path) -> None:
    (signed / SIGNATURE_FILE).write_text("[1]")
    with pytest.raises(ArtifactError, match="not an ember HMAC-SHA256 signature"):
        ember.runtime.load(signed, key=KEY)


def test_key_from_the_environment(
    signed: Path, unsigned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, str(_key_file(tmp_path, KEY)))
    ember.runtime.load(signed).run(FEEDS)
    with pytest.raises(ArtifactError, match="is not signed"):
        ember.runtime.load(unsigned)
    monkeypatch.setenv(KEY_ENV, str(_key_file(tmp_path, b"short")))
    with pytest.raises(ArtifactError, match="5 bytes, at least 16 are needed"):
        ember.runtime.load(signed)
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "missing.key"))
    with pytest.raises(ArtifactError, match="missing.key: cannot be read"):
        ember.runtime.load(signed)


def test_key_argument_is_checked(signed: Path) -> None:
    with pytest.raises(ArtifactError, match="key must be bytes, at least 16"):
        ember.runtime.load(signed, key="k" * 32)  # type: ignore[arg-type]


def test_ember_compile_sign_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = save(small_convnet(), tmp_path)
    key = _key_file(tmp_path, KEY)
    output = tmp_path / "out"
    assert cli.main(["compile", str(model), "-o", str(output), "--sign-key", str(key), "-q"]) == 0
    assert (output / SIGNATURE_FILE).is_file()
    ember.runtime.load(output, key=KEY).run(FEEDS)
    with pytest.raises(ArtifactError, match="does not match"):
        ember.runtime.load(output, key=OTHER_KEY)
    assert cli.main(["verify", str(output), "--key", str(key)]) == 0
    assert "signed by the key given" in capsys.readouterr().out
    key.write_bytes(OTHER_KEY)
    assert cli.main(["verify", str(output), "--key", str(key)]) == 1
    assert "its signature does not match this key" in capsys.readouterr().err
    assert cli.main(["compile", str(model), "-o", str(output), "--sign-key", "nope"]) == 1
    assert "signing key nope: cannot be read" in capsys.readouterr().err


def test_variants_are_signed(tmp_path: Path) -> None:
    """The top manifest and every variant: an edit of the top manifest is refused too."""
    onnx.save(symbolic_model(), tmp_path / "model.onnx")
    output = tmp_path / "out"
    compile_variants(tmp_path / "model.onnx", output, {"batch": [1, 2], "seq": [5]}, sign_key=KEY)
    for directory in (output, output / "variant-0", output / "variant-1"):
        assert (directory / SIGNATURE_FILE).is_file()
    loaded = ember.runtime.load(output, key=KEY)  # two variants: the key reaches each
    loaded.run(feeds(1, 5))
    loaded.run(feeds(2, 5))
    manifest = output / "manifest.json"
    manifest.write_text(manifest.read_text() + " ")
    with pytest.raises(ArtifactError, match=rf"{output}: its signature does not match"):
        ember.runtime.load(output, key=KEY)
