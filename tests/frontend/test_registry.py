"""The converter registry: each op's converter sits in the family module that
frontend/ops/__init__.py's table names, and one op type cannot be registered twice."""

from __future__ import annotations

import re

import pytest

import ember.frontend  # noqa: F401  (registers every converter)
from ember.frontend import ops, registry


def documented_modules() -> dict[str, str]:
    """Op type -> module, from the table in frontend/ops/__init__.py's docstring."""
    table: dict[str, str] = {}
    for line in (ops.__doc__ or "").splitlines():
        row = re.match(r"\| `(\w+)\.py` \| (.*) \|$", line)
        if row:
            for op_type in re.findall(r"\b[A-Z]\w*", row.group(2)):
                table.setdefault(op_type, row.group(1))
    return table


def test_every_converter_is_in_the_module_the_table_names() -> None:
    table = documented_modules()
    misplaced = {
        key: (fn.__module__, table.get(key.rsplit(".", 1)[-1]))
        for key, fn in registry.CONVERTERS.items()
        if fn.__module__ != f"ember.frontend.ops.{table.get(key.rsplit('.', 1)[-1])}"
    }
    assert not misplaced, misplaced
    assert len(registry.CONVERTERS) > 150


def test_a_second_converter_for_one_op_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "CONVERTERS", dict(registry.CONVERTERS))
    with pytest.raises(ValueError, match="two converters for Relu"):
        registry.converts("Relu")(lambda imp, node: [])
