"""ember against onnxruntime per ONNX node: where ember loses (or wins) microseconds.

    python benchmarks/per_node.py inception_v2                 # a light model by name, 1 thread
    python benchmarks/per_node.py squeezenet resnet50 --runs 30 --top 15
    python benchmarks/per_node.py path/to/model.onnx --threads 2 --statistic median

For each model: ember's time per kernel call (an instrumented build, `ember profile`) and
onnxruntime's time per node (its own profiler, SessionOptions.enable_profiling), both on the
same seeded inputs, the same thread count, min (default) or median over --runs runs after
--warmup; then each engine's whole run, neither instrumented, one engine's runs after the
other's (process CPU time at 1 thread). A row is one ember kernel with the onnxruntime nodes of the same names (the kernel's
node and the nodes fused into it; onnxruntime's rewrites keep the name with a suffix, "_nchwc");
onnxruntime nodes that no ember kernel names (its layout reorders, a concat ember writes in
place) are rows of their own with 0 µs for ember. Rows are sorted by the µs ember loses (ember
minus onnxruntime), largest first; the footer gives both sums, the ratio of the sums and the
whole runs' ratio (what `benchmarks/compare.py` measures). The sums add per-call minima (or
medians) and leave out what runs between kernels. Not a test: numbers depend on
the machine. Engines run one after the other (never at the same time).
"""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import ember
from ember.engine.feeds import seeded_inputs
from ember.engine.shapes import read_model
from ember.tools import bench
from ember.tools.model_zoo import LIGHT_MODELS, light_model_path


@dataclass(frozen=True)
class NodeRow:
    """One ember kernel (or one onnxruntime node no kernel names) and both engines' µs."""

    nodes: tuple[str, ...]
    op_types: str
    kernel: str  # what ember's kernel computes ("" for an onnxruntime-only row)
    ember_us: float
    onnxruntime_us: float | None  # None: no onnxruntime node of these names

    @property
    def lost_us(self) -> float:
        return self.ember_us - (self.onnxruntime_us or 0.0)

    @property
    def ratio(self) -> float | None:
        if not self.onnxruntime_us or not self.ember_us:
            return None
        return self.ember_us / self.onnxruntime_us


@dataclass(frozen=True)
class Comparison:
    model: str
    threads: int
    runs: int
    statistic: str
    rows: list[NodeRow]
    ember_run_us: float  # whole runs, uninstrumented, unprofiled
    onnxruntime_run_us: float

    @property
    def ember_sum_us(self) -> float:
        return sum(r.ember_us for r in self.rows)

    @property
    def onnxruntime_sum_us(self) -> float:
        return sum(r.onnxruntime_us or 0.0 for r in self.rows)


def model_path(name: str) -> Path:
    """A light model's name (`inception_v2`) or a path to an .onnx file."""
    return light_model_path(name) if name in LIGHT_MODELS else Path(name)


def whole_runs_us(
    path: Path, feeds: dict[str, np.ndarray], threads: int, runs: int, warmup: int, statistic: str
) -> tuple[float, float]:
    """Each engine's whole run, uninstrumented and without onnxruntime's profiler (which
    costs it several µs per node): process CPU time at one thread, wall time otherwise
    (`bench.alternating_ms`), all of one engine's runs before the other's, as
    benchmarks/compare.py runs them (alternating run by run, each engine evicts the other's
    weights from the caches: squeezenet's ember run took 3.4 instead of 3.05 ms)."""
    compiled = ember.compile(str(path), threads=threads)
    session = bench.onnxruntime_session(str(path), threads)
    reduce = min if statistic == "min" else statistics.median
    times = {}
    for engine, run in (
        ("ember", lambda: compiled.run(feeds)),
        ("ort", lambda: session.run(None, feeds)),
    ):
        times[engine] = reduce(bench.alternating_ms({engine: run}, runs, warmup, threads)[engine])
    return times["ember"] * 1e3, times["ort"] * 1e3


def compare(path: Path, threads: int, runs: int, warmup: int, statistic: str) -> Comparison:
    model = read_model(path)
    feeds = seeded_inputs(model, seed=0)
    ember_run, ort_run = whole_runs_us(path, feeds, threads, runs, warmup, statistic)
    ember = bench.ember_breakdown(path, feeds, threads, runs, warmup, statistic=statistic)
    ort = bench.onnxruntime_breakdown(path, feeds, threads, runs, warmup, statistic=statistic)
    # onnxruntime's layout rewrites name a fused node after its output ("r21_nchwc"): a
    # kernel's nodes are looked up by their names and by their outputs' names.
    outputs = {n.name: tuple(n.output) for n in model.graph.node if n.name}
    rows: list[NodeRow] = []
    named: set[str] = set()
    for kernel in ember.kernels:
        aliases = [*kernel.nodes, *(o for n in kernel.nodes for o in outputs.get(n, ()))]
        ort_ms = ort.ms_of(aliases) if aliases else None
        named.update(aliases)
        rows.append(
            NodeRow(
                kernel.nodes,
                kernel.op_type_key,
                kernel.kernel,
                kernel.ms * 1e3,
                None if ort_ms is None else ort_ms * 1e3,
            )
        )
    for name, ms in ort.node_ms.items():
        if bench.onnxruntime_base_name(name) not in named:
            rows.append(NodeRow((name,), ort.node_op_types.get(name, "?"), "", 0.0, ms * 1e3))
    rows.sort(key=lambda r: -r.lost_us)
    name = path.stem.removeprefix("light_")
    return Comparison(name, threads, runs, statistic, rows, ember_run, ort_run)


def format_comparison(c: Comparison, top: int | None) -> str:
    shown = c.rows if top is None else c.rows[:top] + [r for r in c.rows[top:] if r.lost_us < -50]
    lines = [
        f"{c.model}: {c.threads} thread(s), {c.statistic} of {c.runs} runs, µs per run",
        f"{'ember':>8} {'ort':>8} {'lost':>8} {'ratio':>6}  {'op types':<28} nodes  [ember kernel]",
    ]
    for r in shown:
        ort = f"{r.onnxruntime_us:8.1f}" if r.onnxruntime_us is not None else f"{'-':>8}"
        ratio = f"{r.ratio:6.2f}" if r.ratio is not None else f"{'':>6}"
        nodes = ", ".join(r.nodes) if r.nodes else "?"
        kernel = f"  [{r.kernel}]" if r.kernel else ""
        lines.append(
            f"{r.ember_us:8.1f} {ort} {r.lost_us:8.1f} {ratio}  {r.op_types:<28} {nodes}{kernel}"
        )
    if len(shown) < len(c.rows):
        lines.append(f"  ... {len(c.rows) - len(shown)} more rows")
    ort_sum = c.onnxruntime_sum_us
    ort_run = c.onnxruntime_run_us
    lines.append(
        f"sum of rows: ember {c.ember_sum_us:.0f} µs, onnxruntime {ort_sum:.0f} µs, "
        f"ratio {c.ember_sum_us / ort_sum:.3f}"
        if ort_sum
        else "no onnxruntime nodes"
    )
    lines.append(
        f"whole run:   ember {c.ember_run_us:.0f} µs, onnxruntime {ort_run:.0f} µs, "
        f"ratio {c.ember_run_us / ort_run:.3f} (neither instrumented)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="light model names or .onnx paths")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--statistic", choices=["min", "median"], default="min")
    parser.add_argument("--top", type=int, default=25, help="rows shown (0: all)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    summary = []
    for name in args.models:
        c = compare(model_path(name), args.threads, args.runs, args.warmup, args.statistic)
        print(format_comparison(c, args.top or None), "\n", flush=True)
        summary.append(c)
    if len(summary) > 1:
        for c in summary:
            print(
                f"{c.model:<14} sums {c.ember_sum_us / c.onnxruntime_sum_us:.3f}  "
                f"runs {c.ember_run_us / c.onnxruntime_run_us:.3f}"
            )


if __name__ == "__main__":
    main()
