"""The suite under pytest-xdist (`python -m pytest -n 2`, docs/testing.md): the workers share
the controller's temporary kernel cache and compile on one core each (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Two tests, so that each of the two workers runs one: each records what it sees.
PROBE = """
import json, os
from pathlib import Path

import pytest


@pytest.mark.parametrize("case", [0, 1])
def test_probe(case):
    record = {key: os.environ.get(key) for key in ("EMBER_CACHE_DIR", "EMBER_JOBS")}
    record["worker"] = os.environ.get("PYTEST_XDIST_WORKER")
    out = Path(os.environ["PROBE_DIR"]) / f"{case}.json"
    out.write_text(json.dumps(record))
"""


def test_xdist_workers_share_one_test_cache_and_compile_on_one_core(tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    (tmp_path / "test_probe.py").write_text(PROBE)
    records = tmp_path / "records"
    records.mkdir()
    # Not what this run's own conftest (or xdist, when the suite runs under it) has set.
    inherited = ("EMBER_JOBS", "EMBER_TEST_CACHE_DIR")
    environment = {
        k: v for k, v in os.environ.items() if k not in inherited and not k.startswith("PYTEST_")
    }
    environment["PROBE_DIR"] = str(records)
    # Only the plugins named below: the others installed (hypothesis, anyio...) cost ~0.6 s of
    # CPU to load in each of the run's three processes.
    environment["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    # The suite's conftest as a plugin of a run over the probe alone (its own rootdir).
    command = [sys.executable, "-m", "pytest", "-q", "-p", "ember.tests.conftest", "-p", "xdist"]
    command += ["-n", "2", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)]
    done = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout + done.stderr
    seen = [json.loads((records / f"{case}.json").read_text()) for case in (0, 1)]
    assert {s["worker"] for s in seen} == {"gw0", "gw1"}
    (cache,) = {s["EMBER_CACHE_DIR"] for s in seen}  # one cache for both workers ...
    assert cache and cache != os.environ.get("EMBER_CACHE_DIR")  # ... not this session's
    assert Path(cache).name.startswith("ember-test-cache-") and not Path(cache).exists()
    assert {s["EMBER_JOBS"] for s in seen} == {"1"}
