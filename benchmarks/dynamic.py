"""Dynamic vs static ember (issue 10), with onnxruntime on the same inputs.

    python benchmarks/dynamic.py              # ResNet-50 batch 1, 8; BERT seq 16, 64, 128, 384
    python benchmarks/dynamic.py --models bert --runs 20 --threads 1
    python benchmarks/dynamic.py --models ffn     # compiled once vs static (engine/compile_once.py)
    python benchmarks/dynamic.py --models bert_once   # the BERT encoder compiled once vs static
    python benchmarks/dynamic.py --models resnet50_hw_once_nopool  # symbolic N, H, W, once

For each model with a symbolic dim and each size, the best latency (the minimum over
--runs runs, taken in rounds that alternate the engines; with --threads 1 the process CPU
time of each run, the figure least disturbed by other processes on a shared machine) of:
- static: `ember.compile(model, input_shapes=...)`, a CompiledModel for that one shape;
- polymorphic: `ember.compile(model)`, which for a model proven batch-separable compiles ONE
  program at batch 1 and runs a batch of n as n calls of it (runtime/polymorphic.py); the
  other symbolic dims (BERT's sequence) are still specialised;
- specialising: `ember.compile(model, batch_polymorphic=False)`, a SpecializingModel that
  compiled a variant per size (the first run of each size compiles, untimed) and dispatches
  by shape on every run;
- variants: one artifact from `compile_variants` (`ember compile --shapes`) holding every size,
  loaded by the thin runtime, dispatching by shape;
- onnxruntime on the symbolic model.
The specialising and variant forms run the same static code as the static one, so their ratio
to static measures the per-run cost of shape checks and dispatch; the polymorphic one's also
what batch-1 kernels lose (or gain: a batch-1 working set fits the caches better) against
kernels compiled for the whole batch. `--models overhead` measures the cost of one call of
the per-sample loop on a model that does almost nothing. Not a test: numbers depend on the
machine (printed first) and on what else runs on it.

ResNet-50 is the onnx wheel's light model with its batch axis made symbolic (the Reshape
before the classifier had the batch baked in as 1: its target becomes [-1, 2048]); the BERT
encoder is tests/symbolic_models.bert_encoder_model (4 layers, hidden 256, 4 heads, symbolic
batch and sequence, the mask as a second input, Shape -> Gather -> Unsqueeze -> Concat ->
Reshape chains).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compare import machine  # noqa: E402  (this directory: the script's own)

import ember  # noqa: E402
from ember.tools.symbolic_zoo import (  # noqa: E402
    bert_encoder_model,
    resnet50_symbolic_batch,
    resnet50_symbolic_image,
)


def resnet50_feeds(model: onnx.ModelProto, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    return {model.graph.input[0].name: rng.standard_normal((batch, 3, 224, 224), np.float32)}


def bert_feeds(_: onnx.ModelProto, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seq)
    return {
        "input_ids": rng.integers(0, 1000, (1, seq), dtype=np.int64),
        "attention_mask": np.ones((1, seq), np.int64),
    }


def bert_batch_feeds(_: onnx.ModelProto, batch: int, seq: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    return {
        "input_ids": rng.integers(0, 1000, (batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, seq), np.int64),
    }


# name: (model, the dim varied, its sizes, feeds of a size, the other symbolic dims' sizes)
MODELS: dict[
    str, tuple[Callable[[], onnx.ModelProto], str, list[int], Callable, dict[str, int]]
] = {
    "resnet50": (resnet50_symbolic_batch, "N", [1, 8], resnet50_feeds, {}),
    "bert": (
        lambda: bert_encoder_model(layers=4, hidden=256, heads=4, vocab=1000),
        "seq",
        [16, 64, 128, 384],
        bert_feeds,
        {"batch": 1},
    ),
    # The GEMM-heavy case for batch polymorphism: batch-1 calls multiply [64, 256] rows, the
    # static batch-8 program [512, 256].
    "bert_batch": (
        lambda: bert_encoder_model(layers=4, hidden=256, heads=4, vocab=1000),
        "batch",
        [1, 8],
        bert_batch_feeds,
        {"seq": 64},
    ),
}


def cpu_time_runs(run: Callable[[], object], runs: int, warmup: int) -> list[float]:
    """Process CPU milliseconds of each of `runs` calls after `warmup` untimed ones (for one
    thread: time other processes take from this one's core is not counted)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.process_time()
        run()
        times.append((time.process_time() - start) * 1000.0)
    return times


def best_ms(
    engines: dict[str, Callable[[dict[str, np.ndarray]], object]],
    feeds: dict[str, np.ndarray],
    runs: int,
    warmup: int,
    rounds: int = 5,
    cpu_time: bool = False,
) -> dict[str, float]:
    """The fastest run of each engine: `rounds` rounds, each timing every engine in turn for
    runs / rounds runs, so that a burst of load on the shared machine hits all engines alike
    (the minimum is the figure least disturbed by other processes); `cpu_time`: process CPU
    time rather than wall time (right for one thread only)."""
    from ember.tools.bench import time_runs

    timer = cpu_time_runs if cpu_time else time_runs
    best = dict.fromkeys(engines, float("inf"))
    for _ in range(rounds):
        for name, run in engines.items():
            times = timer(lambda run=run: run(feeds), max(runs // rounds, 1), warmup)
            best[name] = min(best[name], *times)
    return best


def bench_model(name: str, threads: int, runs: int, warmup: int, workdir: Path) -> list[dict]:
    from ember.engine.aot import compile_variants, resolve_target
    from ember.runtime import load
    from ember.tools.bench import onnxruntime_session

    build, dim, sizes, make_feeds, fixed = MODELS[name]
    model = build()
    path = workdir / f"{name}.onnx"
    onnx.save(model, path)
    compile_variants(
        path,
        workdir / f"{name}-variants",
        {dim: sizes, **{k: [v] for k, v in fixed.items()}},
        target=resolve_target("host", threads),
    )
    variants = load(workdir / f"{name}-variants", threads=threads)
    polymorphic = ember.compile(model, threads=threads, compile_once=False)
    specializing = ember.compile(
        model, threads=threads, batch_polymorphic=False, compile_once=False
    )
    session = onnxruntime_session(str(path), threads)
    rows = []
    for size in sizes:
        feeds = make_feeds(model, size)
        static = ember.compile(
            model, threads=threads, input_shapes={n: a.shape for n, a in feeds.items()}
        )
        specializing.run(feeds)  # compiles this size, untimed
        polymorphic.run(feeds)  # compiles its batch-1 program at the first size, untimed
        engines = {
            "static_ms": static.run,
            "polymorphic_ms": polymorphic.run,
            "specializing_ms": specializing.run,
            "variants_ms": variants.run,
            "ort_ms": lambda f: session.run(None, f),
        }
        timed = best_ms(engines, feeds, runs, warmup, cpu_time=threads == 1)
        row = {"model": name, dim: size, **timed, "compiles": polymorphic.compiles}
        rows.append(row)
        print(format_row(row, dim), flush=True)
    return rows


def format_row(row: dict, dim: str) -> str:
    static = row["static_ms"]
    return (
        f"{row['model']:<9} {dim}={row[dim]:<4} static {static:9.3f} ms  polymorphic "
        f"{row['polymorphic_ms']:9.3f} ms ({row['polymorphic_ms'] / static:.3f}x, "
        f"{row['compiles']} compile(s) so far)  specialising "
        f"{row['specializing_ms']:9.3f} ms ({row['specializing_ms'] / static:.3f}x)  variants "
        f"{row['variants_ms']:9.3f} ms ({row['variants_ms'] / static:.3f}x)  onnxruntime "
        f"{row['ort_ms']:9.3f} ms ({row['ort_ms'] / static:.3f}x)"
    )


def bench_call_overhead(threads: int, runs: int, warmup: int) -> dict:
    """The cost of one call of the per-sample loop: a Relu on [batch, 16] at batch 256, one
    batch-polymorphic program (256 calls) against the static batch-256 one (one call)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    batch = 256
    feeds = {"x": np.ones((batch, 16), np.float32)}
    engines = {
        "static_ms": ember.compile(model, threads=threads, input_shapes={"x": [batch, 16]}).run,
        "polymorphic_ms": ember.compile(model, threads=threads, compile_once=False).run,
    }
    timed = best_ms(engines, feeds, runs, warmup, cpu_time=threads == 1)
    per_call_us = (timed["polymorphic_ms"] - timed["static_ms"]) * 1000 / (batch - 1)
    print(
        f"per-sample call overhead: {per_call_us:.2f} us (Relu [{batch}, 16]: static "
        f"{timed['static_ms']:.3f} ms, polymorphic {timed['polymorphic_ms']:.3f} ms)",
        flush=True,
    )
    return {"model": "overhead", **timed, "per_call_us": per_call_us}


# Compiled once (engine/compile_once.py): name -> (model, (batch, seq) sizes, feeds of a size).
FFN_SHAPES = [(1, 16), (1, 61), (4, 64), (1, 128), (8, 128), (1, 384)]
BERT_ONCE_SHAPES = [(1, 16), (1, 64), (1, 128), (1, 384), (4, 61)]


def _ffn_feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seq).standard_normal((batch, seq, 256), np.float32)}


def _bert_once_feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
    return bert_batch_feeds(None, batch, seq)  # type: ignore[arg-type]


# ResNet-50 with symbolic batch, height and width: (batch, image side) sizes.
RESNET_ONCE_SHAPES = [(1, 224), (8, 224), (1, 320)]


def _image_feeds(batch: int, side: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(side)
    return {"gpu_0/data_0": rng.standard_normal((batch, 3, side, side), np.float32)}


def _compile_once_models() -> dict[str, tuple[Callable[[], onnx.ModelProto], list, Callable]]:
    from ember.tools.symbolic_zoo import ffn_block_model

    return {
        "resnet50_hw_once": (resnet50_symbolic_image, RESNET_ONCE_SHAPES, _image_feeds),
        "resnet50_hw_once_nopool": (
            lambda: resnet50_symbolic_image(stem_pool=False),
            RESNET_ONCE_SHAPES,
            _image_feeds,
        ),
        "ffn": (lambda: ffn_block_model(hidden=256, inner=1024), FFN_SHAPES, _ffn_feeds),
        "bert_once": (
            lambda: bert_encoder_model(layers=4, hidden=256, heads=4, vocab=1000),
            BERT_ONCE_SHAPES,
            _bert_once_feeds,
        ),
    }


def bench_compile_once(name: str, threads: int, runs: int, warmup: int) -> list[dict]:
    """A model with symbolic batch and sequence compiled ONCE for every shape (`ffn`: the FFN
    block, hidden 256, inner 1024; `bert_once`: the BERT encoder, 4 layers, hidden 256, 4
    heads, the mask input) against a static program compiled for each shape, and
    onnxruntime."""
    from ember.tools.bench import onnxruntime_session

    build, shapes, make_feeds = _compile_once_models()[name]
    model = build()
    once = ember.compile(model, threads=threads)
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / f"{name}.onnx"
        onnx.save(model, path)
        session = onnxruntime_session(str(path), threads)
    rows = []
    for batch, seq in shapes:
        feeds = make_feeds(batch, seq)
        static = ember.compile(
            model, threads=threads, input_shapes={n: a.shape for n, a in feeds.items()}
        )
        once.run(feeds)
        if not once.compiled_once:
            raise SystemExit(f"{name} was not compiled once: {once.compile_once_refusal}")
        engines = {
            "static_ms": static.run,
            "once_ms": once.run,
            "ort_ms": lambda f: session.run(None, f),
        }
        timed = best_ms(engines, feeds, runs, warmup, cpu_time=threads == 1)
        row = {"model": name, "shape": (batch, seq), **timed, "compiles": once.compiles}
        rows.append(row)
        print(
            f"{name} [{batch}, {seq:>3}] static {timed['static_ms']:8.3f} ms  compiled once "
            f"{timed['once_ms']:8.3f} ms ({timed['once_ms'] / timed['static_ms']:.3f}x, "
            f"{once.compiles} compile(s))  onnxruntime {timed['ort_ms']:8.3f} ms "
            f"({timed['ort_ms'] / timed['static_ms']:.3f}x)",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet50,bert")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    print(machine())
    print(f"threads {args.threads}, best of {args.runs} runs per engine, in 5 rounds")
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models.split(","):
            if name == "overhead":
                bench_call_overhead(args.threads, args.runs, args.warmup)
                continue
            if name in _compile_once_models():
                bench_compile_once(name, args.threads, args.runs, args.warmup)
                continue
            bench_model(name, args.threads, args.runs, args.warmup, Path(workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
