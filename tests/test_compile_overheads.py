"""What the compile driver remembers between compiles to save time gives what it gave before:
the parsed pipeline text (passes/pipeline.py)."""

from __future__ import annotations

import pytest

from ember.passes.pipeline import _PARSED, DEFAULT_PIPELINE, parse_passes
from ember.runtime.errors import PassOptionError


def test_a_parsed_pipeline_gives_new_passes_equal_to_a_fresh_parse() -> None:
    spec = DEFAULT_PIPELINE.replace("lower-kernels-to-loops", "lower-kernels-to-loops{threads=2}")
    first, second = parse_passes(spec), parse_passes(spec)
    _PARSED.clear()
    fresh = parse_passes(spec)
    assert first == second == fresh
    assert [type(p) for p in first] == [type(p) for p in fresh]
    assert not any(a is b for a, b in zip(first, second))
    assert first[-1].threads == 2  # type: ignore[attr-defined]


def test_a_bad_pipeline_fails_every_time() -> None:
    for _ in range(2):
        with pytest.raises(PassOptionError, match="vector-width=7"):
            parse_passes("lower-kernels-to-loops{vector-width=7}")
        with pytest.raises(ValueError, match="Unrecognized passes"):
            parse_passes("canonicalize,no-such-pass")


def test_a_pipeline_parsed_with_other_passes_registered_is_parsed_again() -> None:
    class Renamed(type(parse_passes("dce")[0])):  # type: ignore[misc]
        name = "dce"

    assert type(parse_passes("dce", {"dce": lambda: Renamed})[0]) is Renamed
    assert type(parse_passes("dce")[0]) is not Renamed
