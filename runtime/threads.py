"""How ember's OpenMP thread team waits between kernels.

Every parallel kernel is one libgomp parallel region ending in a barrier. libgomp's default
wait is a long busy spin (GOMP_SPINCOUNT 300000): ideal on an idle machine, but when other
processes share the cores a spinning thread steals the time slice the straggler needs, and a
region that takes microseconds waits for a scheduler tick. Measured on a loaded 2-core host
(MobileNetV2, 2 threads): 80-640 ms with the default spin vs 17-19 ms with 1000 spins (1 thread:
13-16 ms). ember therefore sets a bounded spin unless the user chose a policy. libgomp reads the
variables once, when it is loaded, so this must run before the first kernel library is loaded.
"""

from __future__ import annotations

import os

# Spins before a waiting thread sleeps; see docs/performance.md for the measurement.
DEFAULT_SPINCOUNT = "10000"


def configure_openmp() -> None:
    """Bound libgomp's busy-wait, unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is already set."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = DEFAULT_SPINCOUNT
