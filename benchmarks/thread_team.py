"""The run's thread team against one GOMP_parallel per region, alternating in one process.

    python benchmarks/thread_team.py mobilenet_v2 shufflenet resnet18 --rounds 15
    python benchmarks/thread_team.py mobilenet_v2 --spins 200 1000 --yields 0 8 --busy 1

For each model, builds compiled with the default pipeline for the host: 1 thread, --threads
with every region launched by its own GOMP_parallel (what ember did before codegen/team.py),
and --threads with the run's team, once per --spins and --yields value (the `pause` rounds,
then the `sched_yield` rounds, a worker waits between jobs before it sleeps; labelled
"team spins/yields"). Each round runs every build once untimed, then
--per-round timed runs (wall time); the table gives the median and minimum over all rounds
and the speed-up of each median over the 1-thread median. --busy N starts N busy-looping
processes for the measurement (a contended machine) and stops them after.
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from compare import load_model, model_inputs, selected_models  # noqa: E402

import ember  # noqa: E402
from ember.codegen import team  # noqa: E402
from ember.codegen.llvm_emitter import ModuleEmitter  # noqa: E402


@contextmanager
def _emitting(wait: tuple[int, int] | None) -> Iterator[None]:
    """Compile with a worker wait of (pause rounds, sched_yield rounds) before it sleeps, or
    (None) with no team: every region on its own GOMP_parallel. Compile workers are forked,
    so they see the patch."""
    saved = team.SPIN_PAUSES, team.YIELDS, ModuleEmitter._entry_with_team
    if wait is None:
        ModuleEmitter._entry_with_team = lambda self, entry: entry  # type: ignore[method-assign]
    else:
        team.SPIN_PAUSES, team.YIELDS = wait
    try:
        yield
    finally:
        team.SPIN_PAUSES, team.YIELDS, ModuleEmitter._entry_with_team = saved


@contextmanager
def _busy(processes: int) -> Iterator[None]:
    spinners = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(processes)]
    try:
        time.sleep(0.5 if spinners else 0)
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spins", type=int, nargs="+", default=[team.SPIN_PAUSES])
    parser.add_argument("--yields", type=int, nargs="+", default=[team.YIELDS])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--busy", type=int, default=0, help="busy-looping processes to start")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}, busy {args.busy}")
    for name in selected_models(args.models):
        model = load_model(name)
        feeds = model_inputs(model)
        builds: dict[str, Callable[[], object]] = {}
        with _emitting(None):
            builds["1 thread"] = ember.compile(model, threads=1).run
            builds[f"{args.threads}T per region"] = ember.compile(model, threads=args.threads).run
        for spins in args.spins:
            for yields in args.yields:
                with _emitting((spins, yields)):
                    team_build = ember.compile(model, threads=args.threads)
                builds[f"{args.threads}T team {spins}/{yields}"] = team_build.run
        times: dict[str, list[float]] = {label: [] for label in builds}
        with _busy(args.busy):
            for _ in range(args.rounds):
                for label, run in builds.items():
                    run(feeds)
                    for _ in range(args.per_round):
                        start = time.perf_counter()
                        run(feeds)
                        times[label].append(time.perf_counter() - start)
        one = statistics.median(times["1 thread"])
        print(f"\n{name}: median (min) ms over {args.rounds} x {args.per_round} runs")
        sys.stdout.flush()
        for label, samples in times.items():
            median = statistics.median(samples)
            print(
                f"  {label:<22} {median * 1e3:8.3f} ({min(samples) * 1e3:8.3f})"
                f"  {one / median:5.2f}x"
            )


if __name__ == "__main__":
    main()
