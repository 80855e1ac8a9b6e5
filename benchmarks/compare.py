"""ember vs onnxruntime, same process: compile time, median latency, ratio, accuracy, memory.

    python benchmarks/compare.py                       # the twelve models, 1 and 2 threads
    python benchmarks/compare.py --models resnet50 --threads 1 --runs 20
    python benchmarks/compare.py --models transformers   # BERT-base 128/384, sentence encoder
    python benchmarks/compare.py --models detector       # DBNet (ResNet-18) at 640x640

For each model and thread count: ember's ahead-of-time compile time, the median latency of the
loaded artifact and of onnxruntime over --runs runs after --warmup runs (one engine after the
other, so that neither competes with the other's spinning thread pool), their ratio, the max
abs error against onnxruntime relative to max |reference| ("n/a fill" where the weights are
constant fills, as in the onnx wheel's light models: every channel then sees the same weights,
so a wrong index or layout goes unnoticed), the planned arena against the sum of all
intermediates, and the peak memory of each engine (in a fresh process: resident high-water
mark rise while it loads and runs once); then the geometric mean of the ratios.
Not a test: numbers depend on the machine, which is printed first.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

import ember
from ember.engine.feeds import seeded_inputs
from ember.tools import model_zoo as models
from ember.tools.model_zoo import LIGHT_MODELS, light_model_path

BUILT_MODELS = {
    "resnet18": lambda: models.resnet18(seed=0),
    "mobilenet_v2": lambda: models.mobilenet_v2(seed=0),
    "bert": lambda: models.bert_encoder(layers=4, seq=128, hidden=256, heads=4, vocab=1000, seed=0),
}


def _bert_base(seq: int) -> onnx.ModelProto:
    """BERT-base's size (12 layers, hidden 768, 12 heads, FFN 3072, vocabulary 30522) with an
    attention mask (-10000 fill), the LayerNormalization op and erf GELU."""
    return models.bert_encoder(layers=12, seq=seq, hidden=768, heads=12, vocab=30522,
                               token_types=2, attention_mask=True, layer_norm="op",
                               name=f"bert_base_{seq}")  # fmt: skip


def _sentence_encoder(seq: int = 128) -> onnx.ModelProto:
    """A MiniLM-L6-size sentence encoder (6 layers, hidden 384, 12 heads, FFN 1536) written
    the other way: decomposed LayerNorm, tanh GELU, float32's lowest as the mask fill."""
    return models.bert_encoder(layers=6, seq=seq, hidden=384, heads=12, vocab=30522,
                               token_types=2, attention_mask=True, gelu="tanh",
                               layer_norm="decomposed", mask_value=float(np.finfo(np.float32).min),
                               name="sentence_encoder")  # fmt: skip


TRANSFORMER_MODELS = {
    "bert_base_128": lambda: _bert_base(128),
    "bert_base_384": lambda: _bert_base(384),
    "sentence_encoder": _sentence_encoder,
}
DETECTOR_MODELS = {"dbnet": lambda: models.dbnet(seed=0, height=640, width=640)}
# The default set: the twelve models; the transformers and the detector are asked for by name
# or by group.
DEFAULT_MODELS = [*LIGHT_MODELS, *BUILT_MODELS]
EXTRA_MODELS = {**TRANSFORMER_MODELS, **DETECTOR_MODELS}
ALL_MODELS = [*DEFAULT_MODELS, *EXTRA_MODELS]
GROUPS = {
    "default": DEFAULT_MODELS,
    "transformers": list(TRANSFORMER_MODELS),
    "detector": list(DETECTOR_MODELS),
    "all": ALL_MODELS,
}


def load_model(name: str) -> onnx.ModelProto:
    if name in BUILT_MODELS:
        return BUILT_MODELS[name]()
    if name in EXTRA_MODELS:
        return EXTRA_MODELS[name]()
    return onnx.load(light_model_path(name))


def model_inputs(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Seeded inputs; an `attention_mask` attends to the first three quarters of the sequence
    (a padded batch of one), not to random integers."""
    feeds = seeded_inputs(model, seed=0)
    if "attention_mask" in feeds:
        seq = feeds["attention_mask"].shape[-1]
        feeds["attention_mask"] = (np.arange(seq) < (3 * seq + 3) // 4).astype(np.int64)[None]
    return feeds


def selected_models(names: list[str]) -> list[str]:
    """Model names, with group names (default, transformers, detector, all) expanded in
    place."""
    return [m for name in names for m in GROUPS.get(name, [name])]


def machine() -> str:
    import llvmlite.binding as llvm
    import onnxruntime

    from ember.tools.bench import cpu_name

    return (
        f"{cpu_name()} ({llvm.get_host_cpu_name()}), {os.cpu_count()} cores, "
        f"{platform.system()} {platform.machine()}, python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}, ember {ember.__version__}"
    )


# Run in a fresh interpreter, so that one engine's peak is not hidden in memory the process
# already holds: the rise of the resident high-water mark while the engine loads and runs once.
_PEAK_MEMORY = r"""
import sys, numpy as np
from ember.tools.bench import PeakMemory
engine, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
feeds = dict(np.load(sys.argv[4]))
if engine == "ember":
    from ember.runtime import load
    with PeakMemory() as memory:
        load(path, threads=threads).run(feeds)
else:
    import onnxruntime  # loaded before the measurement, as ember's runtime is
    from ember.tools.bench import onnxruntime_session
    with PeakMemory() as memory:
        onnxruntime_session(path, threads).run(None, feeds)
print(memory.mb)
"""


def peak_memory_mb(engine: str, path: Path, threads: int, feeds_file: Path) -> float:
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY, engine, str(path), str(threads), str(feeds_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.split()[-1])


def bench(name: str, threads: int, runs: int, warmup: int, workdir: Path) -> dict[str, float]:
    from ember.engine.aot import compile_artifact, resolve_target
    from ember.runtime import load
    from ember.tools.bench import Error, constant_fill_share, onnxruntime_session, time_runs

    model = load_model(name)
    feeds = model_inputs(model)
    start = time.perf_counter()
    target = resolve_target("host", threads)
    build = compile_artifact(model, workdir / f"{name}-{threads}", target=target)
    compile_s = time.perf_counter() - start

    # One engine after the other, each with the machine to itself: onnxruntime's pool keeps
    # spinning after a run and would steal ember's second core if the runs were interleaved.
    executable = load(build.path, threads=threads)
    ember_times = time_runs(lambda: executable.run(feeds), runs, warmup)
    session = onnxruntime_session(model, threads)
    names = [o.name for o in session.get_outputs()]
    ort_times = time_runs(lambda: session.run(names, feeds), runs, warmup)
    ours, theirs = executable.run(feeds), session.run(names, feeds)
    rel_err = max(Error.of(ours[n], ref).rel for n, ref in zip(names, theirs))
    model_file, feeds_file = workdir / f"{name}.onnx", workdir / f"{name}-feeds.npz"
    onnx.save(model, model_file)
    np.savez(feeds_file, **feeds)
    report = build.report
    return {
        "compile_s": compile_s,
        "ember_ms": statistics.median(ember_times),
        "ort_ms": statistics.median(ort_times),
        "rel_err": rel_err,
        # Fills make every output nearly constant: agreement would check little.
        "constant_fills": constant_fill_share(model) >= 0.5,
        "arena_ratio": report.arena_bytes / max(report.intermediate_bytes, 1),
        "ember_mb": peak_memory_mb("ember", build.path, threads, feeds_file),
        "ort_mb": peak_memory_mb("onnxruntime", model_file, threads, feeds_file),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["default"],
        choices=[*ALL_MODELS, *GROUPS],
        help="model names or groups: default (the twelve), transformers, detector, all",
    )
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    print(f"machine: {machine()}")
    print(f"runs: {args.runs} after {args.warmup} warm-up, medians, same process\n")
    header = (
        f"| {'model':<16} | thr | compile s | ember ms | onnxruntime ms | ratio | "
        f"rel err  | arena/intermediates | ember MiB | onnxruntime MiB |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    ratios: dict[int, list[float]] = {t: [] for t in args.threads}
    workdir = Path(tempfile.mkdtemp(prefix="ember-bench-"))
    filled = False
    for name in selected_models(args.models):
        for threads in args.threads:
            r = bench(name, threads, args.runs, args.warmup, workdir)
            ratio = r["ember_ms"] / r["ort_ms"]
            accuracy = "n/a fill" if r["constant_fills"] else f"{r['rel_err']:>7.1e}"
            filled |= bool(r["constant_fills"])
            ratios[threads].append(ratio)
            print(
                f"| {name:<16} | {threads:>3} | {r['compile_s']:>9.2f} | {r['ember_ms']:>8.2f} | "
                f"{r['ort_ms']:>14.2f} | {ratio:>5.2f} | {accuracy:>8} | "
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
    if filled:
        print(
            "n/a fill: the model's weights are constant fills (the onnx wheel's light models); "
            "every channel sees the same weights, so agreement would check little"
        )
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
