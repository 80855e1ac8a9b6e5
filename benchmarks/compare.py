"""ember vs onnxruntime, same process: compile time, median latency, ratio, accuracy, memory.

    python benchmarks/compare.py                       # the twelve models, 1 and 2 threads
    python benchmarks/compare.py --models resnet50 --threads 1 --runs 20

For each model and thread count: ember's ahead-of-time compile time, the median latency of the
loaded artifact and of onnxruntime over --runs runs after --warmup runs (interleaved, so that
both see the same machine state), their ratio, the max abs error against onnxruntime relative to
max |reference|, the planned arena against the sum of all intermediates, and the peak memory of
each engine (resident high-water mark rise while it loads and runs once); then the geometric
mean of the ratios.
Not a test: numbers depend on the machine, which is printed first.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

# The test helpers build the seeded-weight models; benchmarks reuse them rather than copy them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ember  # noqa: E402
from tests import models  # noqa: E402
from tests.oracle import LIGHT_MODELS, light_model_path, random_inputs  # noqa: E402

BUILT_MODELS = {
    "resnet18": lambda: models.resnet18(seed=0),
    "mobilenet_v2": lambda: models.mobilenet_v2(seed=0),
    "bert": lambda: models.bert_encoder(layers=4, seq=128, hidden=256, heads=4, vocab=1000, seed=0),
}
ALL_MODELS = [*LIGHT_MODELS, *BUILT_MODELS]


def load_model(name: str) -> onnx.ModelProto:
    if name in BUILT_MODELS:
        return BUILT_MODELS[name]()
    return onnx.load(light_model_path(name))


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import llvmlite.binding as llvm
    import onnxruntime

    return (
        f"{cpu} ({llvm.get_host_cpu_name()}), {os.cpu_count()} cores, "
        f"{platform.system()} {platform.machine()}, python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}, ember {ember.__version__}"
    )


def bench(name: str, threads: int, runs: int, warmup: int, workdir: Path) -> dict[str, float]:
    import onnxruntime as ort

    from ember.runtime import load
    from ember.tools.aot import compile_artifact, resolve_target
    from ember.tools.bench import PeakMemory

    model = load_model(name)
    feeds = random_inputs(model, seed=0)
    start = time.perf_counter()
    target = resolve_target("host", threads)
    build = compile_artifact(model, workdir / f"{name}-{threads}", target=target)
    compile_s = time.perf_counter() - start

    # Peak memory of each engine: the rise of this process's resident high-water mark while
    # the engine loads and runs once (weights, arena or allocator pools, code).
    with PeakMemory() as ember_memory:
        executable = load(build.path, threads=threads)
        executable.run(feeds)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    with PeakMemory() as ort_memory:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in session.get_outputs()]
        session.run(names, feeds)

    for _ in range(warmup):
        executable.run(feeds)
        session.run(names, feeds)
    # Interleaved, so that both engines see the same machine state.
    ember_times, ort_times = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        ours = executable.run(feeds)
        t1 = time.perf_counter()
        theirs = session.run(names, feeds)
        t2 = time.perf_counter()
        ember_times.append(t1 - t0)
        ort_times.append(t2 - t1)
    rel_err = max(
        float(np.max(np.abs(ours[n] - ref))) / max(float(np.max(np.abs(ref))), 1e-30)
        for n, ref in zip(names, theirs)
    )
    report = build.report
    return {
        "compile_s": compile_s,
        "ember_ms": statistics.median(ember_times) * 1e3,
        "ort_ms": statistics.median(ort_times) * 1e3,
        "rel_err": rel_err,
        "arena_ratio": report.arena_bytes / max(report.intermediate_bytes, 1),
        "ember_mb": ember_memory.mb if ember_memory.mb is not None else float("nan"),
        "ort_mb": ort_memory.mb if ort_memory.mb is not None else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=ALL_MODELS, choices=ALL_MODELS)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    print(f"machine: {machine()}")
    print(f"runs: {args.runs} after {args.warmup} warm-up, medians, same process\n")
    header = (
        f"| {'model':<13} | thr | compile s | ember ms | onnxruntime ms | ratio | "
        f"rel err | arena/intermediates | ember MiB | onnxruntime MiB |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    ratios: dict[int, list[float]] = {t: [] for t in args.threads}
    workdir = Path(tempfile.mkdtemp(prefix="ember-bench-"))
    for name in args.models:
        for threads in args.threads:
            r = bench(name, threads, args.runs, args.warmup, workdir)
            ratio = r["ember_ms"] / r["ort_ms"]
            ratios[threads].append(ratio)
            print(
                f"| {name:<13} | {threads:>3} | {r['compile_s']:>9.2f} | {r['ember_ms']:>8.2f} | "
                f"{r['ort_ms']:>14.2f} | {ratio:>5.2f} | {r['rel_err']:>7.1e} | "
                f"{r['arena_ratio']:>19.0%} | {r['ember_mb']:>9.0f} | {r['ort_mb']:>15.0f} |",
                flush=True,
            )
    for threads, values in ratios.items():
        geomean = math.exp(sum(math.log(v) for v in values) / len(values))
        print(
            f"\ngeometric mean of ember/onnxruntime at {threads} thread(s): {geomean:.2f} "
            f"(worst {max(values):.2f})",
            end="",
        )
    print()
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
