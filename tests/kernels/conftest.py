"""Fixtures of the kernel tests."""

from __future__ import annotations

import pytest

from ember.passes.conversion.kernel_to_loops import simd


@pytest.fixture
def threads_at_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels of any size split over threads: the tests' small shapes would otherwise run
    serially below simd.PARALLEL_MIN_FLOPS and no longer exercise the parallel partition."""
    monkeypatch.setattr(simd, "PARALLEL_MIN_FLOPS", 0)
