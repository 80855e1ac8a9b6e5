"""One small AOT artifact per session, shared by the runtime tests (compiling takes ~1 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.util import compile_model, small_convnet


@pytest.fixture(scope="session")
def small_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_model(small_convnet(), tmp_path_factory.mktemp("small"), threads=2)
