"""Test options: slow suites run only with --runslow (see README); a cache of the tests' own."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ember.tests.lit import MlirTestFile

# Every compile in the tests (and in the subprocesses they start) verifies the IR after each
# pass, so a pass that breaks the IR fails the test that compiled it, naming the pass.
os.environ.setdefault("EMBER_VERIFY_EACH", "1")


# Compiled kernels and models go to a cache of the session's (inherited by the subprocesses tests
# start), never to the cache of the developer or CI machine running the suite, which tests would
# otherwise fill. It starts cold: EMBER_TEST_CACHE_DIR names a persistent one to reuse instead.
_SESSION_CACHE: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION_CACHE
    persistent = os.environ.get("EMBER_TEST_CACHE_DIR")
    if persistent:
        os.environ["EMBER_CACHE_DIR"] = persistent
    else:
        _SESSION_CACHE = tempfile.mkdtemp(prefix="ember-test-cache-")
        os.environ["EMBER_CACHE_DIR"] = _SESSION_CACHE


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_CACHE is not None:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """IR tests as files: every tests/**/*.mlir runs its `// RUN:` lines (see tests/lit.py)."""
    if file_path.suffix == ".mlir":
        return MlirTestFile.from_parent(parent, path=file_path)
    return None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def _reproducers_in_tmp(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `ember opt` writes a failing pipeline's reproducer into the working directory by default;
    # a test that exercises a failure must not leave one in the checkout.
    if request.node.get_closest_marker("default_repro_dir"):
        return
    import ember.tools.opt_run as opt_run

    monkeypatch.setattr(opt_run, "default_repro_dir", lambda: tmp_path / "ember-repro")
