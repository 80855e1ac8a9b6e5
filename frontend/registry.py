"""The one table of ONNX op converters, filled by `@converts` next to each converter.

A converter is `fn(imp: ImportContext, node: Node) -> Sequence[Value]`: it reads the node's
inputs and attributes through the context (frontend/context.py) and returns one value per
ONNX output it supports. `frontend/ops/<family>.py` holds the converters of one ONNX family;
importing `ember.frontend` imports them all (frontend/ops/__init__.py). An op without a
converter is imported through its ONNX function body if it has one (frontend/functions.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ember.frontend.context import ImportContext, Node

Converter = Callable[["ImportContext", "Node"], Sequence[Any]]
# Keyed by op type for ai.onnx, "domain.OpType" for other domains (com.microsoft contrib ops).
CONVERTERS: dict[str, Converter] = {}


def converter_key(op_type: str, domain: str = "") -> str:
    return op_type if domain in ("", "ai.onnx") else f"{domain}.{op_type}"


def converts(*op_types: str, domain: str = "") -> Callable[[Converter], Converter]:
    """Register the decorated function as the converter of `op_types` (of `domain`)."""

    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            key = converter_key(op_type, domain)
            if key in CONVERTERS and CONVERTERS[key] is not fn:
                raise ValueError(f"two converters for {key}: {CONVERTERS[key]} and {fn}")
            CONVERTERS[key] = fn
        return fn

    return register


def converter_for(op_type: str, domain: str = "") -> Converter | None:
    """The converter registered for `op_type` of `domain`, or None."""
    return CONVERTERS.get(converter_key(op_type, domain))


def has_converter(op_type: str, domain: str = "") -> bool:
    """Whether the importer has a converter of its own for `op_type` of `domain`."""
    return converter_key(op_type, domain) in CONVERTERS


def supported_ops() -> list[str]:
    return sorted(CONVERTERS)
