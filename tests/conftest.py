"""Test options: slow suites run only with --runslow (see README); a cache of the tests' own."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from ember.tests.lit import MlirTestFile

# Every compile in the tests (and in the subprocesses they start) verifies the IR after each
# pass, so a pass that breaks the IR fails the test that compiled it, naming the pass.
os.environ.setdefault("EMBER_VERIFY_EACH", "1")


# Compiled kernels and models go to a cache of the session's (inherited by the subprocesses tests
# start), never to the cache of the developer or CI machine running the suite, which tests would
# otherwise fill. It starts cold: EMBER_TEST_CACHE_DIR names a persistent one to reuse instead.
# Under pytest-xdist (`-n 2`) the workers share the controller's cache: ember's cache is made for
# concurrent processes (entries written to a temporary name and renamed, runtime/cache.py), so a
# model compiled by one worker is a hit in the other instead of a second cold compile.
_SESSION_CACHE: str | None = None
_XDIST_CACHE_KEY = "ember_cache_dir"


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION_CACHE
    worker_input = getattr(config, "workerinput", None)  # set in pytest-xdist workers only
    if worker_input is not None and worker_input.get(_XDIST_CACHE_KEY):
        os.environ["EMBER_CACHE_DIR"] = worker_input[_XDIST_CACHE_KEY]
        # Each xdist worker already keeps one core busy: a compile that also forked one LLVM
        # process per core (codegen/build.py) would run cores x workers processes on the
        # cores and slow every test down. An explicit EMBER_JOBS is kept.
        os.environ.setdefault("EMBER_JOBS", "1")
        return
    persistent = os.environ.get("EMBER_TEST_CACHE_DIR")
    if persistent:
        os.environ["EMBER_CACHE_DIR"] = persistent
    else:
        _SESSION_CACHE = tempfile.mkdtemp(prefix="ember-test-cache-")
        os.environ["EMBER_CACHE_DIR"] = _SESSION_CACHE


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown (and unused) without it
def pytest_configure_node(node: Any) -> None:
    """Hands the controller's test cache to an xdist worker (see pytest_configure)."""
    node.workerinput[_XDIST_CACHE_KEY] = os.environ["EMBER_CACHE_DIR"]


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


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _group_shared_fixtures(items)
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


_SHARED_SCOPES = ("module", "package", "class")


def _group_shared_fixtures(items: list[pytest.Item]) -> None:
    """Marks the tests of a file that use a module-, package- or class-scoped fixture as one
    xdist group (`xdist_group`, honoured by `-n 2 --dist loadgroup`), so that the fixture (the
    conformance subset's run, a fuzz campaign, a model compiled once per module: up to minutes)
    is built by one worker instead of by every worker the file's tests are spread over. Other
    tests are spread one by one. Session fixtures are per worker whatever the grouping."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)  # pytest's, not public: no grouping without
        definitions = getattr(info, "name2fixturedefs", {}) if info is not None else {}
        if any(d.scope in _SHARED_SCOPES for defs in definitions.values() for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture(autouse=True)
def _reproducers_in_tmp(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # `ember opt` writes a failing pipeline's reproducer into the working directory by default;
    # a test that exercises a failure must not leave one in the checkout. The test's tmp_path
    # is made only then: most tests never write one, and a directory per test of the ~2,300
    # costs about a millisecond each.
    if request.node.get_closest_marker("default_repro_dir"):
        return
    import ember.tools.opt_run as opt_run

    def repro_dir() -> Path:
        return request.getfixturevalue("tmp_path") / "ember-repro"

    monkeypatch.setattr(opt_run, "default_repro_dir", repro_dir)
