"""Test options: slow suites run only with --runslow (see README)."""

from __future__ import annotations

import os

import pytest

# Every compile in the tests (and in the subprocesses they start) verifies the IR after each
# pass, so a pass that breaks the IR fails the test that compiled it, naming the pass.
os.environ.setdefault("EMBER_VERIFY_EACH", "1")


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
