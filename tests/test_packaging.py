"""The wheel holds every package of the source tree: pyproject lists packages by hand, and an
editable install finds an unlisted one anyway, so only a built wheel would miss it."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
NOT_SHIPPED = {"tests", "benchmarks", "build", "dist"}


def test_every_source_package_is_listed_in_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    found = set()
    for init in ROOT.rglob("__init__.py"):
        parts = init.parent.relative_to(ROOT).parts
        if parts[:1] and (parts[0] in NOT_SHIPPED or parts[0].startswith(".")):
            continue
        if any(part.endswith(".egg-info") for part in parts):
            continue
        found.add(".".join(("ember", *parts)))
    assert found - listed == set(), "packages missing from pyproject's [tool.setuptools] list"
    assert listed - found == set(), "pyproject lists packages that do not exist"
