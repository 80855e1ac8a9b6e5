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


def alternating_ms(
    runners: Mapping[str, Callable[[], object]], runs: int, warmup: int, threads: int
) -> dict[str, list[float]]:
    """Milliseconds per run of each runner: process CPU time at one thread (robust against
    other processes on a shared machine), wall time otherwise. The runners alternate run by
    run, so a drift in the machine's load touches every engine alike (benchmarks/*.py)."""
    clock = time.process_time if threads == 1 else time.perf_counter
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            start = clock()
            run()
            times[name].append(1e3 * (clock() - start))
    return times


def onnxruntime_session(
    model: str | bytes | onnx.ModelProto, threads: int, profile_prefix: str | None = None
) -> Any:
    """onnxruntime on the CPU with exactly `threads` intra-op threads (the comparison engine of
    `ember bench` and the benchmarks: every engine gets the same explicit thread count);
    `profile_prefix`: profile every node, into a JSON file named from it (`end_profiling()`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
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


# -- ember bench --breakdown: where the time goes, per ONNX node ----------------------------------


@dataclass(frozen=True)
class KernelTime:
    """One kernel call of the entry function, as `--breakdown` reports it."""

    site: int  # position of the call in the entry function (ember.tools.profile)
    kernel: str  # what it computes: "conv 3x3 s1 16->16 @24x24+bias+relu"
    nodes: tuple[str, ...]  # the ONNX node it comes from, then the nodes fused into it
    op_types: tuple[str, ...]  # their op types, in that order, without repeats
    ms: float  # median per run
    gflops: float | None
    onnxruntime_ms: float | None = None  # onnxruntime's time for the same nodes, where named

    @property
    def op_type_key(self) -> str:
        return "+".join(self.op_types) or "?"


@dataclass(frozen=True)
class Breakdown:
    """ember's time per kernel call (median per run over `runs` runs of an instrumented build
    of the model, ember.tools.profile), slowest first, and optionally onnxruntime's per-node
    profile of the same inputs."""

    kernels: list[KernelTime]
    entry_ms: float  # the whole entry function, median per run
    runs: int
    threads: int
    onnxruntime: OnnxruntimeProfile | None = None

    @property
    def kernels_ms(self) -> float:
        return sum(k.ms for k in self.kernels)

    def by_op_type(self) -> list[tuple[str, int, float]]:
        """(op types, calls, ms) per op-type combination ("Conv+Relu" for a fused kernel),
        slowest first."""
        groups: dict[str, list[KernelTime]] = {}
        for kernel in self.kernels:
            groups.setdefault(kernel.op_type_key, []).append(kernel)
        rows = [(key, len(group), sum(k.ms for k in group)) for key, group in groups.items()]
        return sorted(rows, key=lambda row: -row[2])


@dataclass(frozen=True)
class OnnxruntimeProfile:
    """onnxruntime's own per-node profile (SessionOptions.enable_profiling): median per run
    of each node's kernel time, keyed by onnxruntime's node name (after its graph rewrites,
    which rename fused nodes: "r1_nchwc"), with the node's op type."""

    node_ms: dict[str, float]
    node_op_types: dict[str, str]
    runs: int

    @property
    def total_ms(self) -> float:
        return sum(self.node_ms.values())

    def by_op_type(self) -> list[tuple[str, int, float]]:
        """(op type, nodes, ms) per op type, slowest first."""
        groups: dict[str, list[float]] = {}
        for name, ms in self.node_ms.items():
            groups.setdefault(self.node_op_types.get(name, "?"), []).append(ms)
        return sorted(
            ((op, len(times), sum(times)) for op, times in groups.items()), key=lambda r: -r[2]
        )

    def ms_of(self, nodes: Sequence[str]) -> float | None:
        """onnxruntime's time for the ONNX nodes `nodes` (an ember kernel's node and the nodes
        fused into it): the nodes whose onnxruntime name is one of them, or one of them plus a
        suffix of its rewrites ("_nchwc"); None if none is found under those names."""
        wanted = set(nodes)
        times = [ms for name, ms in self.node_ms.items() if onnxruntime_base_name(name) in wanted]
        return sum(times) if times else None


# The suffixes onnxruntime's CPU graph rewrites append to the names of the nodes they replace,
# and the prefix of its fused ops (Gemm + Relu: "fused n38").
_ONNXRUNTIME_SUFFIXES = ("_nchwc", "_token")
_ONNXRUNTIME_PREFIXES = ("fused ",)


def onnxruntime_base_name(name: str) -> str:
    for prefix in _ONNXRUNTIME_PREFIXES:
        name = name.removeprefix(prefix)
    for suffix in _ONNXRUNTIME_SUFFIXES:
        at = name.find(suffix)
        if at > 0:
            return name[:at]
    return name


def node_labels(model: onnx.ModelProto) -> dict[str, str]:
    """Each top-level node's label as ember's profile names it (its name, else its first
    output's) -> its op type."""
    return {(n.name or (n.output[0] if n.output else "")): n.op_type for n in model.graph.node}


def ember_breakdown(
    model: str | os.PathLike[str] | onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    threads: int,
    runs: int,
    warmup: int,
    target: Any = None,
    opt_level: int = 3,
    statistic: str = "median",
) -> Breakdown:
    """Time every kernel call of `model` on `feeds` (ember.tools.profile: an instrumented build
    with the inputs pinned to the feeds' shapes), median (or min) per run, slowest first."""
    from ember.engine.shapes import read_model
    from ember.tools.profile import profile_model

    profile = profile_model(
        model,
        threads=threads,
        runs=runs,
        warmup=warmup,
        statistic=statistic,
        feeds=feeds,
        input_shapes={name: list(array.shape) for name, array in feeds.items()},
        target=target,
        opt_level=opt_level,
    )
    op_types = node_labels(read_model(model))
    kernels = []
    for site in sorted(profile.sites, key=lambda s: -s.seconds):
        nodes = (site.node, *site.absorbed) if site.node else ()
        types = [site.op_type] if site.op_type else []
        types += [op_types[n] for n in site.absorbed if n in op_types]
        kernels.append(
            KernelTime(
                site.index,
                site.summary,
                nodes,
                tuple(dict.fromkeys(types)),
                site.seconds * 1e3,
                site.gflops,
            )
        )
    return Breakdown(kernels, profile.run_seconds * 1e3, runs, threads)


def onnxruntime_breakdown(
    model: str | os.PathLike[str],
    feeds: dict[str, np.ndarray],
    threads: int,
    runs: int,
    warmup: int,
    statistic: str = "median",
) -> OnnxruntimeProfile:
    """onnxruntime's per-node profile of `model` on `feeds`: a profiling
    `onnxruntime_session`, `warmup` + `runs` runs, each node's kernel time summed
    within a run, median (or min) over the timed runs. Unnamed nodes are named after their first output
    first, as ember's profile names them, so that the two tables can be matched (not in a
    model with external data, which onnxruntime then reads from `model`'s folder as it is)."""
    import json
    import tempfile

    import onnx

    from ember.engine.shapes import read_model

    proto = read_model(model)
    source: str | bytes = os.fspath(model)
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        for node in proto.graph.node:
            if not node.name and node.output:
                node.name = node.output[0]
        source = proto.SerializeToString()
    with tempfile.TemporaryDirectory(prefix="ember-ort-profile-") as folder:
        session = onnxruntime_session(source, threads, os.path.join(folder, "profile"))
        for _ in range(warmup + runs):
            session.run(None, feeds)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    return onnxruntime_profile(events, skip_runs=warmup, statistic=statistic)


def onnxruntime_profile(
    events: list[dict[str, Any]], skip_runs: int = 0, statistic: str = "median"
) -> OnnxruntimeProfile:
    """The per-node median (or min) over runs of an onnxruntime profile's events (its JSON
    file): the "Node" events "<name>_kernel_time" inside each "model_run" event, the first
    `skip_runs` runs left out."""
    reduce = {"min": np.min, "median": np.median}.get(statistic)
    if reduce is None:
        raise ValueError(f"statistic must be 'min' or 'median', got '{statistic}'")
    model_runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )[skip_runs:]
    suffix = "_kernel_time"
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith(suffix)]
    per_run: list[dict[str, float]] = []
    op_types: dict[str, str] = {}
    for run in model_runs:
        start, end = run["ts"], run["ts"] + run["dur"]
        times: dict[str, float] = {}
        for event in kernels:
            if start <= event["ts"] <= end:
                name = event["name"][: -len(suffix)]
                times[name] = times.get(name, 0.0) + event["dur"] / 1e3
                op_types[name] = str(event.get("args", {}).get("op_name", "?"))
        per_run.append(times)
    names = list(dict.fromkeys(n for times in per_run for n in times))
    node_ms = {n: float(reduce([times.get(n, 0.0) for times in per_run])) for n in names}
    return OnnxruntimeProfile(node_ms, op_types, len(per_run))


def with_onnxruntime(breakdown: Breakdown, profile: OnnxruntimeProfile) -> Breakdown:
    """`breakdown` with each kernel's onnxruntime time (by node names) and the profile."""
    kernels = [
        KernelTime(**{**k.__dict__, "onnxruntime_ms": profile.ms_of(k.nodes)})
        for k in breakdown.kernels
    ]
    return Breakdown(kernels, breakdown.entry_ms, breakdown.runs, breakdown.threads, profile)


def _nodes_label(kernel: KernelTime) -> str:
    if not kernel.nodes:
        return "?"
    node, *fused = kernel.nodes
    return f"'{node}'" + (f" + {', '.join(fused)}" if fused else "")


def format_breakdown(breakdown: Breakdown, top: int = 10) -> str:
    """The `top` slowest kernels (share of all kernels' time, ms per run, op types, ONNX nodes,
    what the kernel computes), then the time per op type; with onnxruntime's profile, its time
    for the same nodes and its own per-op-type table."""
    total = breakdown.kernels_ms or 1.0
    ort = breakdown.onnxruntime
    shown = breakdown.kernels[:top]
    types_width = max([len(k.op_type_key) for k in shown] + [len("op types")])
    ort_head = f" {'ort ms':>8}" if ort else ""
    lines = [
        f"where ember's time goes: {len(breakdown.kernels)} kernel calls, median of "
        f"{breakdown.runs} runs of an instrumented build, {breakdown.threads} thread(s): "
        f"{breakdown.kernels_ms:.3f} ms in kernels of {breakdown.entry_ms:.3f} ms per run",
        f"{'#':>3} {'share':>6} {'ms':>8}{ort_head}  {'op types':<{types_width}}  onnx nodes  "
        "[kernel]",
    ]
    for rank, k in enumerate(shown, 1):
        ort_cell = ""
        if ort:
            ort_cell = f" {k.onnxruntime_ms:8.3f}" if k.onnxruntime_ms is not None else f" {'-':>8}"
        lines.append(
            f"{rank:>3} {k.ms / total:>6.1%} {k.ms:8.3f}{ort_cell}  "
            f"{k.op_type_key:<{types_width}}  {_nodes_label(k)}  [{k.kernel}]"
        )
    rest = breakdown.kernels[top:]
    if rest:
        rest_ms = sum(k.ms for k in rest)
        lines.append(f"{'':>3} {rest_ms / total:>6.1%} {rest_ms:8.3f}  ({len(rest)} more kernels)")
    lines += ["", "ember per op type:", *_op_type_rows(breakdown.by_op_type(), total, "calls")]
    if ort:
        lines += [
            "",
            f"onnxruntime per op type (its own profile, median of {ort.runs} runs, "
            f"{ort.total_ms:.3f} ms in nodes):",
            *_op_type_rows(ort.by_op_type(), ort.total_ms or 1.0, "nodes"),
        ]
    return "\n".join(lines)


def _op_type_rows(rows: Sequence[tuple[str, int, float]], total: float, counted: str) -> list[str]:
    lines = [f"  {'share':>6} {'ms':>8} {counted:>6}  op types"]
    lines += [f"  {ms / total:>6.1%} {ms:8.3f} {count:>6}  {key}" for key, count, ms in rows]
    return lines


def breakdown_json(breakdown: Breakdown, top: int = 10) -> dict[str, object]:
    """`--breakdown` in `ember bench --json` (schema in docs/aot.md)."""
    total = breakdown.kernels_ms or 1.0
    rest = breakdown.kernels[top:]
    document: dict[str, object] = {
        "statistic": "median",
        "runs": breakdown.runs,
        "threads": breakdown.threads,
        "entry_ms": breakdown.entry_ms,
        "kernels_ms": breakdown.kernels_ms,
        "kernel_calls": len(breakdown.kernels),
        "top": [
            {
                "site": k.site,
                "kernel": k.kernel,
                "nodes": list(k.nodes),
                "op_types": list(k.op_types),
                "ms": k.ms,
                "share": k.ms / total,
                "gflops": k.gflops,
                **({"onnxruntime_ms": k.onnxruntime_ms} if breakdown.onnxruntime else {}),
            }
            for k in breakdown.kernels[:top]
        ],
        "rest": {"kernels": len(rest), "ms": sum(k.ms for k in rest)},
        "op_types": [
            {"op_types": key, "calls": calls, "ms": ms, "share": ms / total}
            for key, calls, ms in breakdown.by_op_type()
        ],
    }
    ort = breakdown.onnxruntime
    if ort is not None:
        document["onnxruntime"] = {
            "runs": ort.runs,
            "nodes_ms": ort.total_ms,
            "nodes": [
                {"node": name, "op_type": ort.node_op_types.get(name, "?"), "ms": ms}
                for name, ms in sorted(ort.node_ms.items(), key=lambda item: -item[1])
            ],
            "op_types": [
                {"op_type": key, "nodes": count, "ms": ms} for key, count, ms in ort.by_op_type()
            ],
        }
    return document
