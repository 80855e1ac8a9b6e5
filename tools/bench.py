"""Performance comparison: latency percentiles, throughput, peak memory and the difference of
the outputs, ember vs onnxruntime.

Both engines run in this process, one after the other, with the same inputs and thread count;
the outputs of the last timed run of each are compared (`output_errors`).
Peak memory is the rise of the resident set's high-water mark (VmHWM in /proc/self/status)
over the RSS before the engine was loaded; the mark is reset between engines through
/proc/self/clear_refs so the second engine is not charged for the first one's peak.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.runtime.errors import InputError
from ember.runtime.executable import Executable

if TYPE_CHECKING:
    import onnx


@dataclass
class BenchResult:
    engine: str
    threads: int
    latencies_ms: list[float]
    peak_memory_mb: float | None
    version: str = ""
    # The last timed run's outputs, for the accuracy report.
    outputs: dict[str, np.ndarray] = field(default_factory=dict)

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


@dataclass(frozen=True)
class Error:
    """max |actual - expected| and that over max |expected| (finite values; inf if shapes, NaNs
    or infinities differ)."""

    abs: float
    rel: float

    @staticmethod
    def of(actual: np.ndarray, expected: np.ndarray) -> Error:
        if actual.shape != expected.shape:
            return Error(float("inf"), float("inf"))
        if expected.size == 0:
            return Error(0.0, 0.0)
        a, e = actual.astype(np.float64), expected.astype(np.float64)
        with np.errstate(invalid="ignore"):  # inf - inf: equal infinities are caught below
            diff = np.abs(a - e)
        same = (a == e) | (np.isnan(a) & np.isnan(e))
        diff = np.where(same, 0.0, diff)
        err = float(np.max(np.where(np.isnan(diff), np.inf, diff)))
        finite = np.abs(e[np.isfinite(e)])  # an infinite output must not hide the others
        scale = float(np.max(finite)) if finite.size else 0.0
        return Error(err, err / scale if scale > 0 else (0.0 if err == 0 else float("inf")))


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


def bench_ember(
    load: Callable[[], Executable],
    feeds: dict[str, np.ndarray],
    threads: int,
    runs: int,
    warmup: int,
) -> BenchResult:
    """Time an executable; `load` runs inside the memory measurement (weights, arena count)."""
    from ember import __version__

    outputs: dict[str, np.ndarray] = {}
    with PeakMemory() as memory:
        executable = load()
        executable.set_num_threads(threads)
        latencies = time_runs(lambda: outputs.update(executable.run(feeds)), runs, warmup)
    return BenchResult("ember", threads, latencies, memory.mb, __version__, outputs)


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

    outputs: dict[str, np.ndarray] = {}
    with PeakMemory() as memory:
        session = onnxruntime_session(str(model), threads)
        names = [o.name for o in session.get_outputs()]

        def run() -> None:
            outputs.update(zip(names, session.run(names, feeds)))

        latencies = time_runs(run, runs, warmup)
    return BenchResult("onnxruntime", threads, latencies, memory.mb, ort.__version__, outputs)


def onnxruntime_session(model: str | bytes | onnx.ModelProto, threads: int) -> Any:
    """onnxruntime on the CPU with exactly `threads` intra-op threads (the comparison engine of
    `ember bench` and the benchmarks: every engine gets the same explicit thread count)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    if not isinstance(model, str | bytes):  # a ModelProto (onnx is imported only for typing)
        model = model.SerializeToString()
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def one_line(error: BaseException) -> str:
    """An exception as one line: its last non-empty message line (where engines put the
    reason), prefixed with its type when the message is empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def output_errors(
    actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]
) -> dict[str, Error | None]:
    """Per output of `expected`: the difference of `actual`'s (None where it has none)."""
    return {
        name: Error.of(np.asarray(actual[name]), np.asarray(ref)) if name in actual else None
        for name, ref in expected.items()
    }


def constant_fill_share(model: onnx.ModelProto) -> float:
    """The share of the model's float weight elements that are constant fills (one value
    repeated: ConstantOfShape outputs, single-valued initializers or Constants). Agreement
    with another engine says little about a model whose weights are mostly fills, such as
    the onnx wheel's light_*.onnx models."""
    import onnx
    from onnx import numpy_helper

    values = {t.name: t for t in model.graph.initializer}
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
                if a.name == "value"]  # fmt: skip
    total = fill = 0
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            continue  # not loaded: neither counted nor read
        array = numpy_helper.to_array(tensor)
        if array.size > 1 and np.issubdtype(array.dtype, np.floating):
            total += array.size
            fill += array.size if np.all(array == array.flat[0]) else 0
    for node in model.graph.node:
        shape = values.get(node.input[0]) if node.op_type == "ConstantOfShape" else None
        if shape is not None:
            size = int(np.prod(numpy_helper.to_array(shape)))
            total += size
            fill += size
    return fill / total if total else 0.0


# -- ember bench --batch: one model at several batch sizes -------------------------------------


def batch_shapes(
    declared: Sequence[tuple[str, Sequence[int | str | None] | None]],
    batch: int,
    pins: Mapping[str, Sequence[int]],
) -> dict[str, list[int]]:
    """The input shapes of a run at `batch`: axis 0 of every input whose axis 0 is symbolic
    set to `batch`, other symbolic dims from `pins` (--input-shape; a named dim pinned in one
    input applies to every input sharing it). InputError naming what stays unknown."""
    named: dict[str, int] = {}
    for name, dims in declared:
        for axis, dim in enumerate(dims or ()):
            if isinstance(dim, str) and name in pins and axis > 0 and axis < len(pins[name]):
                named.setdefault(dim, int(pins[name][axis]))
    shapes: dict[str, list[int]] = {}
    batched = False
    for name, dims in declared:
        if dims is None:
            raise InputError(f"input '{name}' declares no shape: give it with --input-shape")
        if dims and not isinstance(dims[0], int):
            batched = True
            named_batch = dims[0]
            if isinstance(named_batch, str):
                named[named_batch] = batch
        elif all(isinstance(d, int) for d in dims):
            continue  # static: nothing to pin
        given = list(pins.get(name, dims))
        shape = [
            batch if axis == 0 and not isinstance(dims[0], int) else size
            for axis, size in enumerate(given)
        ]
        shape = [named.get(d, d) if isinstance(d, str) else d for d in shape]  # type: ignore[misc]
        if any(not isinstance(d, int) for d in shape):
            shown = "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
            raise InputError(
                f"input '{name}' {shown} has symbolic dims besides the batch axis: pin them with "
                f"--input-shape {name}=... (its batch size is replaced by each --batch size)"
            )
        shapes[name] = shape  # type: ignore[assignment]
    if not batched:
        raise InputError("--batch: no input of the model has a symbolic batch axis (axis 0)")
    return shapes


def format_batch_results(rows: Sequence[tuple[int, Sequence[BenchResult]]]) -> str:
    """Per batch size and engine: p50/p90 latency and throughput in samples per second."""
    lines = [
        f"{'batch':>5} {'engine':<12} {'p50 ms':>9} {'p90 ms':>9} {'samples/s':>10} "
        f"{'ms/sample':>9}"
    ]
    for batch, results in rows:
        for r in results:
            lines.append(
                f"{batch:>5} {r.engine:<12} {r.p50:9.3f} {r.p90:9.3f} "
                f"{batch * r.throughput:10.1f} {r.p50 / batch:9.3f}"
            )
    return "\n".join(lines)


# -- machine -------------------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown cpu" elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown cpu"


_SIMD_PREFIXES = ("sse", "ssse", "avx", "fma", "amx")


def simd_features(features: str | list[str]) -> list[str]:
    """The vector-ISA extensions among LLVM target features ("+avx2,+fma,-avx512f" or a
    list of names), sorted."""
    names = features.split(",") if isinstance(features, str) else features
    enabled = {n[1:] if n[:1] == "+" else n for n in names if n and n[:1] != "-"}
    return sorted(n for n in enabled if n.startswith(_SIMD_PREFIXES))


# -- reports -------------------------------------------------------------------------------------


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


def format_accuracy(errors: dict[str, Error | None], reference: str) -> str:
    """One line per output: max abs and max rel difference of ember's against `reference`."""
    width = max([len("output"), *map(len, errors)])
    lines = [f"accuracy vs {reference} (rel = max abs diff / max |{reference} output|):"]
    lines.append(f"  {'output':<{width}} {'max abs':>10} {'max rel':>10}")
    for name, error in errors.items():
        if error is None:
            lines.append(f"  {name:<{width}} {'(ember has no such output)':>21}")
        else:
            lines.append(f"  {name:<{width}} {error.abs:10.3e} {error.rel:10.3e}")
    return "\n".join(lines)


def result_json(result: BenchResult) -> dict[str, object]:
    """One engine's numbers as JSON-ready values."""
    return {
        "engine": result.engine,
        "version": result.version,
        "threads": result.threads,
        "runs": len(result.latencies_ms),
        "latency_ms": {
            "p50": result.p50,
            "p90": result.p90,
            "p99": result.p99,
            "mean": float(np.mean(result.latencies_ms)),
            "min": float(np.min(result.latencies_ms)),
        },
        "throughput_per_s": result.throughput,
        "peak_memory_mb": result.peak_memory_mb,
    }


def errors_json(errors: dict[str, Error | None]) -> dict[str, object]:
    """Per output {max_abs, max_rel} (None where ember lacks the output); inf becomes None."""

    def number(x: float) -> float | None:
        return x if np.isfinite(x) else None

    return {
        name: None if e is None else {"max_abs": number(e.abs), "max_rel": number(e.rel)}
        for name, e in errors.items()
    }
