"""Minimum latency of ember and onnxruntime on compare.py's models, for a loaded machine.

    python benchmarks/min_latency.py --models transformers --threads 1 2 --runs 12
    python benchmarks/min_latency.py --models default --threads 1 2 --runs 15 \
        --json benchmarks/results/min_latency.json --chart docs/img/latency.svg

compare.py reports medians, which other processes on a shared machine inflate. This script
reports the least disturbed of --runs runs instead: at 1 thread the CPU time of the process
(`time.process_time()`: time other processes hold the core is not counted), at more threads
the wall time (CPU time would add up the threads). ember runs JIT-compiled
(`ember.compile`), then an onnxruntime session with the same thread count, one after the
other. Not a test: numbers depend on the machine. `--json` writes the rows as a results file
and `--chart` draws them (benchmarks/charts.py, which also redraws a chart from a results file
without measuring again; matplotlib: `pip install ember[bench]`).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import sys
import time
from collections.abc import Callable

import numpy as np
import onnx
from compare import ALL_MODELS, GROUPS, load_model, machine, model_inputs, selected_models

import ember
from ember.tools.bench import onnxruntime_session


def least(fn: Callable[[], object], runs: int, threads: int, warmup: int = 2) -> float:
    """Milliseconds of the fastest of `runs` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    clock = time.process_time if threads == 1 else time.perf_counter
    for _ in range(runs):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best * 1e3


def measure(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    threads: int,
    runs: int,
    alternate: bool = False,
) -> tuple[float, float]:
    """(ember ms, onnxruntime ms), one engine after the other, or run by run if `alternate`
    (both then see the same spells of load from other processes on a shared machine)."""
    compiled = ember.compile(model, threads=threads)
    if alternate:
        session = onnxruntime_session(model, threads)
        engines = [functools.partial(compiled.run, feeds), lambda: session.run(None, feeds)]
        for engine in engines:  # warm-up
            engine()
            engine()
        best = [float("inf"), float("inf")]
        for _ in range(runs):
            best = [min(b, least(fn, 1, threads, warmup=0)) for b, fn in zip(best, engines)]
        return best[0], best[1]
    ours = least(functools.partial(compiled.run, feeds), runs, threads)
    del compiled
    session = onnxruntime_session(model, threads)
    return ours, least(lambda: session.run(None, feeds), runs, threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=["transformers"], choices=[*ALL_MODELS, *GROUPS]
    )
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--json", metavar="OUT.json", help="also write the rows as a results file")
    parser.add_argument(
        "--chart", metavar="OUT.svg", help="also draw the rows (benchmarks/charts.py, matplotlib)"
    )
    parser.add_argument(
        "--alternate", action="store_true", help="time the engines run by run, not in turn"
    )
    args = parser.parse_args(argv)
    if args.chart:  # fail before measuring for minutes, not after
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--chart needs matplotlib (pip install ember[bench])")
    rows = []
    print(f"machine: {machine()}")
    print(f"minimum of {args.runs} runs: CPU time at 1 thread, wall time otherwise\n")
    print("| model            | thr | ember ms | onnxruntime ms | ratio |")
    print("|------------------|-----|----------|----------------|-------|")
    for name in selected_models(args.models):
        model = load_model(name)
        feeds = model_inputs(model)
        for threads in args.threads:
            ours, theirs = measure(model, feeds, threads, args.runs, args.alternate)
            rows.append(
                {"model": name, "threads": threads, "ember_ms": ours, "onnxruntime_ms": theirs}
            )
            print(
                f"| {name:<16} | {threads:>3} | {ours:>8.2f} | {theirs:>14.2f} | "
                f"{ours / theirs:>5.2f} |",
                flush=True,
            )
    document = {
        "command": " ".join(["python benchmarks/min_latency.py", *(argv or sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "statistic": f"fastest of {args.runs} runs: CPU time at 1 thread, wall time otherwise",
        "rows": rows,
    }
    if args.json:
        with open(args.json, "w") as out:
            json.dump(document, out, indent=1)
        print(f"wrote {args.json}")
    if args.chart:
        from charts import latency_chart

        print(f"wrote {latency_chart(document, args.chart)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
