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


# Converters used instead of an op's own when the node reads a sequence or an optional or a
# subgraph of it gives one (frontend/ops/sequence.py): such a Loop is unrolled at import, such
# an If compiled per value of its condition (sequences exist at import only).
STRUCTURED_CONVERTERS: dict[str, Converter] = {}


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


def converts_structured(*op_types: str) -> Callable[[Converter], Converter]:
    """Register the decorated function in STRUCTURED_CONVERTERS for `op_types` (ai.onnx)."""

    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            STRUCTURED_CONVERTERS[converter_key(op_type)] = fn
        return fn

    return register


def converter_for(op_type: str, domain: str = "") -> Converter | None:
    """The converter registered for `op_type` of `domain`, or None."""
    return CONVERTERS.get(converter_key(op_type, domain))


def has_converter(op_type: str, domain: str = "") -> bool:
    """Whether the importer has a converter of its own for `op_type` of `domain` (for some of
    its uses, at least: a structured one)."""
    key = converter_key(op_type, domain)
    return key in CONVERTERS or key in STRUCTURED_CONVERTERS


def supported_ops() -> list[str]:
    return sorted(set(CONVERTERS) | set(STRUCTURED_CONVERTERS))
