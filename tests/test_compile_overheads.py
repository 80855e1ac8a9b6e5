"""What the compile driver remembers between compiles to save time gives what it gave before:
the parsed pipeline text (passes/pipeline.py)."""

from __future__ import annotations

import pytest

from ember.passes.pipeline import DEFAULT_PIPELINE, _parse, available_passes, parse_passes
from ember.runtime.errors import PassOptionError


def test_a_parsed_pipeline_gives_new_passes_equal_to_a_fresh_parse() -> None:
    spec = DEFAULT_PIPELINE.replace("lower-kernels-to-loops", "lower-kernels-to-loops{threads=2}")
    first, second = parse_passes(spec), parse_passes(spec)
    fresh = _parse(spec, available_passes())
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
