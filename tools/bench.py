"""Performance comparison: latency percentiles, throughput and peak memory, ember vs onnxruntime.

Both engines run in this process, one after the other, with the same inputs and thread count.
Peak memory is the rise of the resident set's high-water mark (VmHWM in /proc/self/status)
over the RSS before the engine was loaded; the mark is reset between engines through
/proc/self/clear_refs so the second engine is not charged for the first one's peak.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ember.runtime.executable import Executable, TensorSpec, numpy_dtype


@dataclass
class BenchResult:
    engine: str
    threads: int
    latencies_ms: list[float]
    peak_memory_mb: float | None

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def throughput(self) -> float:
        """Inferences per second, one request at a time."""
        return 1000.0 * len(self.latencies_ms) / sum(self.latencies_ms)


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the peak RSS to the current RSS
    except OSError:
        pass  # not Linux, or not permitted: the reading below then includes earlier peaks


class PeakMemory:
    """Peak RSS growth (MiB) across a `with` block; None where /proc is not available."""

    def __enter__(self) -> PeakMemory:
        _reset_peak()
        self.before = _status_kib("VmRSS")
        self.mb: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        peak = _status_kib("VmHWM")
        if self.before is not None and peak is not None:
            self.mb = max(peak - self.before, 0) / 1024.0


def time_runs(run: Callable[[], object], runs: int, warmup: int) -> list[float]:
    """Milliseconds for each of `runs` calls after `warmup` untimed ones."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    for _ in range(warmup):
        run()
    latencies = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        latencies.append((time.perf_counter() - start) * 1000.0)
    return latencies


def random_feeds(specs: Sequence[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs: floats ~ N(0, 1), integers in [0, 16) (valid for small index ranges)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        dtype = numpy_dtype(spec.dtype)
        if np.issubdtype(dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(spec.shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[spec.name] = rng.integers(0, 2, size=spec.shape).astype(dtype)
        else:
            feeds[spec.name] = rng.integers(0, 16, size=spec.shape).astype(dtype)
    return feeds


def bench_ember(
    load: Callable[[], Executable],
    feeds: dict[str, np.ndarray],
    threads: int,
    runs: int,
    warmup: int,
) -> BenchResult:
    """Time an executable; `load` runs inside the memory measurement (weights, arena count)."""
    with PeakMemory() as memory:
        executable = load()
        executable.set_num_threads(threads)
        latencies = time_runs(lambda: executable.run(feeds), runs, warmup)
    return BenchResult("ember", threads, latencies, memory.mb)


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def bench_onnxruntime(
    model: str | os.PathLike[str],
    feeds: dict[str, np.ndarray],
    threads: int,
    runs: int,
    warmup: int,
) -> BenchResult:
    import onnxruntime as ort

    with PeakMemory() as memory:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        latencies = time_runs(lambda: session.run(names, feeds), runs, warmup)
    return BenchResult("onnxruntime", threads, latencies, memory.mb)


def format_results(results: Sequence[BenchResult]) -> str:
    header = (
        f"{'engine':<12} {'threads':>7} {'runs':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} "
        f"{'inf/s':>9} {'peak MiB':>9}"
    )
    lines = [header]
    for r in results:
        memory = f"{r.peak_memory_mb:9.1f}" if r.peak_memory_mb is not None else f"{'n/a':>9}"
        lines.append(
            f"{r.engine:<12} {r.threads:>7} {len(r.latencies_ms):>5} {r.p50:9.3f} {r.p90:9.3f} "
            f"{r.p99:9.3f} {r.throughput:9.1f} {memory}"
        )
    if len(results) == 2:
        ember, other = results
        lines.append(
            f"p50 ratio ember/{other.engine}: {ember.p50 / other.p50:.2f}x "
            f"({'faster' if ember.p50 < other.p50 else 'slower'})"
        )
    return "\n".join(lines)
