"""How ember's OpenMP threads wait between kernels and between runs.

A run of a model at more than one thread is one libgomp parallel region (codegen/team.py):
its parallel kernels are jobs for the team's threads. A worker waits between jobs spinning
with `pause` (~50 µs, libgomp's spin below), then sleeps on a futex that the next job's post
ends; thread 0 never waits for a sleeping worker, so a kernel costs no wake-up round trip. libgomp's own wait policy below governs the team's start and end
(one wake-up and one barrier per run) and the kernels that run without a team, each on a
libgomp region of its own (a kernel called on its own, a second concurrent run of the same
program). docs/performance.md has the numbers of both.

Before the team, every parallel kernel was one libgomp parallel region ending in a barrier.
libgomp's default wait is a long busy spin (GOMP_SPINCOUNT 300000): ideal on an idle machine, but when other
processes share the cores a spinning thread steals the time slice the straggler needs, and a
region that takes microseconds waits for a scheduler tick. MobileNetV2 at 2 threads on this
2-core host: loaded (load average 3), 80-640 ms with the default spin, 70-80 ms with 10000 spins,
17-19 ms with 1000 (1 thread: 13-16 ms); idle, 7.4-8.8 ms whatever the spin count (1000: 7.9-8.4).
So ember sets 1000 spins unless the user chose a policy. libgomp reads the
variables once, when it is loaded, so this must run before the first kernel library is loaded.
"""

from __future__ import annotations

import os

# Spins before a waiting thread sleeps (measurements above).
DEFAULT_SPINCOUNT = "1000"


def configure_openmp() -> None:
    """Bound libgomp's busy-wait, unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is already set."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = DEFAULT_SPINCOUNT


def default_threads() -> int:
    """Threads when the caller names none: OMP_NUM_THREADS if set, else the usable cores.

    OMP_NUM_THREADS is how a caller (a server running one model per core, a benchmark) asks an
    OpenMP program for fewer threads; its first entry is the outer team's size. The usable cores
    respect taskset/cgroup affinity, which os.cpu_count() ignores.
    """
    requested = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if requested.isdigit() and int(requested) >= 1:
        return int(requested)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1
