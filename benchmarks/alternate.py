"""ember against onnxruntime on a shared machine: whole runs of the two engines alternating.

    python benchmarks/alternate.py dbnet vgg19 --threads 1 2 --rounds 10

compare.py runs one engine's runs after the other's; when other processes come and go on the
machine, one engine can get the quiet minute and the other the busy one. Here each round runs
ember, then onnxruntime (one warm-up run, then --per-round timed runs each), so that both see
the same load; the medians and minima of each engine's runs and their ratios are printed. At
1 thread runs are timed by process CPU time (preemption not counted), at more by wall time
(onnxruntime's spinning pool stays in its own block of runs). Models as compare.py names them.
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from compare import load_model, model_inputs, selected_models  # noqa: E402

from ember.engine.aot import compile_artifact, resolve_target  # noqa: E402
from ember.runtime import load  # noqa: E402
from ember.tools.bench import onnxruntime_session  # noqa: E402


def alternate(name: str, threads: int, rounds: int, per_round: int, workdir: Path) -> str:
    model = load_model(name)
    feeds = model_inputs(model)
    build = compile_artifact(
        model, workdir / f"{name}-{threads}", target=resolve_target("host", threads)
    )
    executable = load(build.path, threads=threads)
    session = onnxruntime_session(model, threads)
    names = [o.name for o in session.get_outputs()]
    engines: list[tuple[Callable[[], object], list[float]]] = [
        (lambda: executable.run(feeds), []),
        (lambda: session.run(names, feeds), []),
    ]
    clock = time.process_time if threads == 1 else time.perf_counter
    for _ in range(rounds):
        for run, times in engines:
            run()
            for _ in range(per_round):
                start = clock()
                run()
                times.append(clock() - start)
    (_, ours), (_, theirs) = engines
    med, low = statistics.median, min
    return (
        f"{name:<16} {threads:>3} {med(ours) * 1e3:10.2f} {low(ours) * 1e3:10.2f} "
        f"{med(theirs) * 1e3:10.2f} {low(theirs) * 1e3:10.2f} "
        f"{med(ours) / med(theirs):7.3f} {low(ours) / low(theirs):7.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model or group names (as compare.py)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=0, help="default: 1 at 1 thread, else 3")
    args = parser.parse_args()
    print("model            thr  ember med  ember min    ort med    ort min  r(med)  r(min)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in selected_models(args.models):
            for threads in args.threads:
                per_round = args.per_round or (1 if threads == 1 else 3)
                print(alternate(name, threads, args.rounds, per_round, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
