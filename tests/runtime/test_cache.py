"""The on-disk cache: its location, the size cap with LRU eviction, and `ember cache`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import platformdirs
import pytest
from onnx import TensorProto, helper

import ember.runtime
from ember.codegen.objcache import CachedObject, ObjectCache
from ember.engine.aot import compile_cached, default_cache_dir
from ember.runtime import cache as cache_module
from ember.runtime.cache import (
    ARTIFACT,
    BLOCK,
    DATA,
    OBJECT,
    DiskCache,
    cache_root,
    max_cache_bytes,
)
from ember.runtime.sizes import parse_byte_count
from ember.tools import cache as cache_command
from ember.tools.cli import main as cli_main

DAY = 86400


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache root, made the default one."""
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EMBER_CACHE_MAX_BYTES", raising=False)
    monkeypatch.delenv("EMBER_NO_CACHE", raising=False)
    return tmp_path / "cache"


def _objects(cache: DiskCache) -> ObjectCache:
    return ObjectCache(cache.root / "objects", cache)


def _store(objects: ObjectCache, name: str, size: int = 3000, age_days: float = 0) -> Path:
    """Store an object of about `size` bytes (one block) last used `age_days` ago."""
    key = ObjectCache.key(name, "settings")
    objects.store(key, CachedObject(b"\0" * size, ("f",), ()))
    path = objects.directory / key[:2] / f"{key}.o"
    stamp = time.time() - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def _artifact(directory: Path, name: str, files: int = 2, age_days: float = 0) -> Path:
    """A fake artifact entry in `directory`: a folder of one-block files, last used `age_days`
    ago."""
    folder = directory / name
    folder.mkdir(parents=True)
    for i in range(files):
        (folder / f"f{i}").write_bytes(b"x" * 100)
    stamp = time.time() - age_days * DAY
    os.utime(folder, (stamp, stamp))
    return folder


def test_root_is_the_environment_variable_else_the_platform_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert default_cache_dir() == tmp_path / "mine" / "artifacts"
    monkeypatch.delenv("EMBER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # honoured on Linux
    assert cache_root() == Path(platformdirs.user_cache_dir("ember", appauthor=False))


def test_the_suite_never_writes_to_the_users_cache() -> None:
    """tests/conftest.py points the cache at one of the session's own."""
    users = Path(platformdirs.user_cache_dir("ember", appauthor=False))
    default = ObjectCache.default()
    assert default is not None
    assert Path(os.environ["EMBER_CACHE_DIR"]) != users
    assert users not in default.directory.parents


@pytest.mark.parametrize(
    ("text", "size"),
    [("123", 123), ("2G", 2 << 30), ("2GiB", 2 << 30), ("500mb", 500 << 20), ("1.5K", 1536)],
)
def test_byte_counts(text: str, size: int) -> None:
    assert parse_byte_count(text, "X") == size


def test_bad_cap_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_CACHE_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="EMBER_CACHE_MAX_BYTES='lots' is not a byte count"):
        max_cache_bytes()
    monkeypatch.setenv("EMBER_CACHE_MAX_BYTES", "4M")
    assert max_cache_bytes() == 4 << 20
    monkeypatch.delenv("EMBER_CACHE_MAX_BYTES")
    assert max_cache_bytes() == 2 << 30


def test_writes_past_the_cap_evict_the_least_recently_used(root: Path) -> None:
    cache = DiskCache.default(max_bytes=9 * BLOCK)
    objects = _objects(cache)
    old = [_store(objects, f"old{i}", age_days=10 - i) for i in range(8)]
    # A hit touches: the oldest entry becomes the most recently used.
    assert objects.load(ObjectCache.key("old0", "settings")) is not None
    artifact = _artifact(
        root / "artifacts", "a" * 32, files=1, age_days=20
    )  # older than every object
    cache.evict(cache.max_bytes)  # 8 objects + a 1-block artifact: at the cap, nothing goes
    assert all(p.exists() for p in old) and artifact.exists()

    new = _store(objects, "new")  # 10 blocks: evict down to 90% of the cap (8.1 blocks)
    assert new.exists() and old[0].exists()
    assert not artifact.exists()  # least recently used first, whatever its kind
    assert not old[1].exists() and all(p.exists() for p in old[2:])
    assert sum(e.bytes for e in cache.entries()) == 8 * BLOCK


def test_writes_under_the_cap_do_not_scan(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = DiskCache.default(max_bytes=100 * BLOCK)
    objects = _objects(cache)
    _store(objects, "first")  # no ledger yet: measured once
    scans = []
    real = DiskCache.entries
    monkeypatch.setattr(DiskCache, "entries", lambda self, *a: scans.append(1) or real(self, *a))
    for i in range(20):
        _store(objects, f"more{i}")
        assert objects.load(ObjectCache.key(f"more{i}", "settings")) is not None
    assert scans == []  # the ledger counted them
    for i in range(80):
        _store(objects, f"over{i}")
    assert len(scans) == 1  # crossed the cap once, evicted to 90 blocks
    assert sum(e.bytes for e in real(cache)) <= 100 * BLOCK


def test_the_newest_entry_survives_a_cap_smaller_than_it(root: Path) -> None:
    cache = DiskCache.default(max_bytes=1)
    objects = _objects(cache)
    first = _store(objects, "first")
    second = _store(objects, "second")
    assert second.exists() and not first.exists()


def test_entries_vanishing_during_eviction_are_tolerated(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process evicted (or the user deleted) entries between the scan and removal."""
    cache = DiskCache.default(max_bytes=2 * BLOCK)
    objects = _objects(cache)
    paths = [_store(objects, f"e{i}", age_days=5 - i) for i in range(2)]
    real = DiskCache.entries

    def entries_then_vanish(self: DiskCache, *args: object) -> list:
        found = real(self, *args)
        for entry in found:
            if entry.path.is_dir():
                cache_module._remove(entry.path)
            else:
                entry.path.unlink(missing_ok=True)
        return found

    monkeypatch.setattr(DiskCache, "entries", entries_then_vanish)
    _artifact(root / "artifacts", "c" * 32)
    assert cache.evict(0) == []  # nothing left to remove, no error
    assert not any(p.exists() for p in paths)


def test_stale_temporaries_are_removed_fresh_ones_kept(root: Path) -> None:
    cache = DiskCache.default()
    objects = _objects(cache)
    entry = _store(objects, "kept")
    stale = entry.parent / ".0123456789abcdef-stale"
    fresh = entry.parent / ".0123456789abcdef-fresh"
    stale_dir = root / "artifacts" / f".{'d' * 32}-staging"
    for path in (stale, fresh):
        path.write_bytes(b"partial")
    stale_dir.mkdir(parents=True)
    long_ago = time.time() - 2 * 3600
    for path in (stale, stale_dir):
        os.utime(path, (long_ago, long_ago))
    assert [e.path for e in cache.entries()] == [entry]
    assert not stale.exists() and not stale_dir.exists() and fresh.exists()


def test_files_that_are_not_ember_s_are_left_alone(tmp_path: Path) -> None:
    """A folder given to Config.set_cache_dir may hold other things: only entries go."""
    folder = tmp_path / "mine"
    cache = DiskCache.for_artifacts(folder)
    entry = _artifact(folder, "e" * 32, age_days=5)
    theirs = [folder / "notes.txt", folder / "photos", folder / ".hidden", folder / "ab"]
    theirs[0].write_text("mine")
    for path in theirs[1:]:
        path.mkdir()
    long_ago = time.time() - 30 * DAY
    for path in theirs:
        os.utime(path, (long_ago, long_ago))
    assert [e.path.name for e in cache.entries()] == [entry.name]
    assert len(cache.evict(0)) == 1 and len(cache.clear()) == 0
    assert all(path.exists() for path in theirs)


def _identity_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_compiled_artifacts_are_recorded_and_touched(root: Path, tmp_path: Path) -> None:
    model = tmp_path / "relu.onnx"
    onnx.save(_identity_model(), str(model))
    first = compile_cached(model)
    ledger = json.loads((root / ".usage").read_text())
    assert first.parent == root / "artifacts"
    long_ago = time.time() - 3 * DAY
    os.utime(first, (long_ago, long_ago))
    assert compile_cached(model) == first  # a hit
    assert first.stat().st_mtime > long_ago + DAY
    listed = {e.path: e for e in DiskCache.default().entries()}
    assert listed[first].kind == ARTIFACT
    assert any(e.kind == OBJECT for e in listed.values())
    assert sum(e.bytes for e in listed.values()) == ledger["bytes"]
    x = np.arange(-2, 2, dtype=np.float32)
    np.testing.assert_array_equal(ember.runtime.load(first).run({"x": x})["y"], np.maximum(x, 0))


def test_cache_command(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = DiskCache.default()
    objects = _objects(cache)
    recent = _store(objects, "recent")
    old = _store(objects, "old", age_days=10)
    artifact = _artifact(root / "artifacts", "b" * 32, age_days=3)
    data = root / "onnx-node-tests" / "onnx-1.0"
    data.mkdir(parents=True)
    (data / "cases.json").write_text("{}")
    yesterday = time.time() - DAY
    os.utime(data, (yesterday, yesterday))

    assert cli_main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert f"location: {root} (EMBER_CACHE_DIR)" in out
    assert "compiled kernels (objects/): 2 entries, 8.0 KiB" in out
    assert "compiled models (artifacts/): 1 entry, 8.0 KiB" in out
    assert "conformance data (onnx-node-tests/, not evicted): 1 entry" in out
    assert "16.0 KiB of the 2.0 GiB cap" in out

    assert cli_main(["cache", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    kinds = [line.split()[4] for line in lines]  # date, time, size, unit, kind, name
    assert kinds == [OBJECT, DATA, ARTIFACT, OBJECT]  # most recently used first
    assert lines[-1].endswith(str(old.relative_to(root)))

    assert cli_main(["cache", "clear", "--older-than", "2"]) == 0
    assert "removed 2 entries unused for 2 days (12.0 KiB)" in capsys.readouterr().out
    assert recent.exists() and data.exists() and not old.exists() and not artifact.exists()

    assert cli_main(["cache", "clear"]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert cache.entries() == []
    assert cache_command.main(["list"]) == 0
    assert capsys.readouterr().out.strip() == f"{root}: empty"


def test_cache_command_refuses_bad_arguments(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli_main(["cache", "clear", "--older-than", "-1"])
    with pytest.raises(SystemExit):
        cli_main(["cache", "info", "--older-than", "1"])
    assert "--older-than applies to clear only" in capsys.readouterr().err


_WRITER = r"""
import sys
from pathlib import Path
from ember.codegen.objcache import CachedObject, ObjectCache
from ember.runtime.cache import DiskCache

cache = DiskCache.default(max_bytes=int(sys.argv[2]))
objects = ObjectCache(cache.root / "objects", cache)
for i in range(150):
    key = ObjectCache.key(f"{sys.argv[1]}-{i}", "settings")
    objects.store(key, CachedObject(b"\0" * 3000, ("f",), ()))
    for j in range(max(0, i - 3), i + 1):  # read back recent ones, as a second compile would
        objects.load(ObjectCache.key(f"{sys.argv[1]}-{j}", "settings"))
"""


def test_two_processes_share_a_small_cache(root: Path) -> None:
    """Two writers storing, hitting and evicting in one cache at once: neither fails, and their
    additions add up in the ledger (it is locked), so the cache ends within its cap."""
    cap = 20 * BLOCK
    env = {**os.environ, "EMBER_CACHE_DIR": str(root)}
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, name, str(cap)], env=env)
        for name in ("a", "b")
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    cache = DiskCache.default(max_bytes=cap)
    assert 0 < sum(e.bytes for e in cache.entries()) <= cap
    assert not [p for p in (root / "objects").rglob(".*")]  # no temporaries left behind
