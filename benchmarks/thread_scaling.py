"""Where the time of a multi-thread run goes: each kernel call site at 1 thread and at T.

    python benchmarks/thread_scaling.py resnet50                     # 1 against 2 threads
    python benchmarks/thread_scaling.py resnet50 resnet18 vgg19 --rounds 12 --top 20
    python benchmarks/thread_scaling.py path/to/model.onnx --threads 4 --statistic median

For each model: two instrumented builds (`ember profile`'s, the default pipeline for the
host at 1 thread and at --threads), run in alternating rounds in one process (a round: one
untimed run and --runs timed runs of each build), so that both see the same load; per call
site the minimum (default) or median over all timed runs. A row is one site: its time at
1 thread and at T, the speed-up, and the microseconds it loses against a perfect split
(T-thread time minus 1-thread time / T), rows sorted by that loss. The footer: the sums over
the sites, the whole entry function by the same statistic, and its speed-up. On a machine
other processes share, a T-thread run is disturbed whenever any core is taken: take the
minimum, many rounds, and look at the sites whose loss stays the same from run to run.
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import onnx
from compare import BUILT_MODELS, EXTRA_MODELS, load_model, model_inputs

from ember.core.target import host_target
from ember.tools.model_zoo import LIGHT_MODELS
from ember.tools.profile import counter_rate, instrumented


@dataclass(frozen=True)
class SiteScaling:
    index: int
    summary: str
    one_us: float  # at 1 thread
    many_us: float  # at `threads`
    threads: int

    @property
    def speedup(self) -> float:
        return self.one_us / self.many_us if self.many_us > 0 else float("nan")

    @property
    def lost_us(self) -> float:
        """Time beyond a perfect split of the 1-thread time."""
        return self.many_us - self.one_us / self.threads


def reduce_runs(cycles: np.ndarray, statistic: str) -> np.ndarray:
    """Per column (site; the whole entry last) of runs x columns: min or median."""
    return cycles.min(axis=0) if statistic == "min" else np.median(cycles, axis=0)


def measure(
    model: onnx.ModelProto, threads: int, rounds: int, runs: int, statistic: str
) -> tuple[list[SiteScaling], float, float]:
    """The sites of `model` at 1 and `threads` threads, and the whole entry's µs at each."""
    feeds = model_inputs(model)
    builds = {t: instrumented(model, host_target(t), t) for t in (1, threads)}
    cycles: dict[int, list[np.ndarray]] = {t: [] for t in builds}
    for _ in range(rounds):
        for t, build in builds.items():
            build.run(feeds)
            cycles[t].extend(build.run_profiled(feeds)[1] for _ in range(runs))
    us_per_cycle = 1e6 / counter_rate(builds[1].target)
    one = reduce_runs(np.stack(cycles[1]), statistic) * us_per_cycle
    many = reduce_runs(np.stack(cycles[threads]), statistic) * us_per_cycle
    sites = builds[1].profile_sites
    assert sites is not None and builds[threads].profile_sites == sites
    rows = [
        SiteScaling(i, str(s["summary"]), float(one[i]), float(many[i]), threads)
        for i, s in enumerate(sites)
    ]
    return rows, float(one[-1]), float(many[-1])


def format_scaling(
    name: str, rows: list[SiteScaling], one_us: float, many_us: float, top: int
) -> str:
    threads = rows[0].threads if rows else 1
    lines = [
        f"{name}: 1 thread against {threads}",
        f"{'site':>4}  {'kernel':<58} {'1T us':>9} {f'{threads}T us':>9} {'x':>6} {'lost us':>8}",
    ]
    ranked = sorted(rows, key=lambda r: r.lost_us, reverse=True)
    for r in ranked[: top or None]:
        lines.append(
            f"{r.index:>4}  {r.summary[:58]:<58} {r.one_us:>9.1f} {r.many_us:>9.1f} "
            f"{r.speedup:>6.2f} {r.lost_us:>8.1f}"
        )
    one_sum, many_sum = sum(r.one_us for r in rows), sum(r.many_us for r in rows)
    lost = sum(r.lost_us for r in rows)
    lines.append(
        f"sum of sites: {one_sum:.0f} -> {many_sum:.0f} us ({one_sum / many_sum:.3f}x, "
        f"{lost:.0f} us lost); whole entry: {one_us:.0f} -> {many_us:.0f} us "
        f"({one_us / many_us:.3f}x)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    names = sorted({*LIGHT_MODELS, *BUILT_MODELS, *EXTRA_MODELS})
    parser.add_argument("models", nargs="+", help=f"model names ({', '.join(names)}) or .onnx")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--runs", type=int, default=4, help="timed runs per build per round")
    parser.add_argument("--statistic", choices=["min", "median"], default="min")
    parser.add_argument("--top", type=int, default=25, help="rows shown (0: all)")
    args = parser.parse_args()
    if args.threads < 2:
        parser.error(f"--threads must be at least 2, got {args.threads}")
    print(f"{args.rounds} rounds of {args.runs} runs each, {args.statistic} per site\n")
    for name in args.models:
        model = onnx.load(name) if name.endswith(".onnx") else load_model(name)
        rows, one_us, many_us = measure(model, args.threads, args.rounds, args.runs, args.statistic)
        print(format_scaling(name, rows, one_us, many_us, args.top) + "\n", flush=True)


if __name__ == "__main__":
    main()
