"""The exporter zoo is collected only with --runslow: collecting it imports torch (~20 s)."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name.startswith("test_") and not config.getoption("--runslow"):
        return True
    return None
