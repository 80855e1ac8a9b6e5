"""LLVM settings vs compile CPU and run time: is the O3 pipeline's each part worth its cost?

    flock /tmp/ember-bench.lock python benchmarks/compile_time.py --models resnet50
    python benchmarks/compile_time.py --models bert --variants o3,o3-no-slp --rounds 9

For each model (one per invocation gives each a fresh process), every variant of the LLVM settings
(the new pass manager's pipeline level and tuning flags, the target machine's codegen level)
compiles the model cold (`EMBER_CACHE_DIR` a fresh temporary directory) and reports its
compile CPU: this process's and its LLVM worker children's user + system time
(`getrusage(RUSAGE_SELF)` + `getrusage(RUSAGE_CHILDREN)`), and the optimize and codegen
seconds summed over units (wall time inside the workers); then it recompiles the same units'
LLVM IR in this process, variants alternating (`--llvm-rounds`), and reports the minimum
optimize and codegen process CPU time of each. Then the compiled variants run at
1 thread, alternating: `--rounds` rounds, in each every variant runs `--runs` times; the
result is the minimum process CPU time of a run (`time.process_time`, single-threaded:
insensitive to waiting for the CPU on a shared machine). Not a test: numbers depend on the
machine and its load.

The variants replace build.py's `optimize` and `create_target_machine` in this process (forked
workers inherit them); "o3" is build.py's own functions at opt_level 3, unchanged.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import llvmlite.binding as llvm
import numpy as np
import onnx

import ember
import ember.codegen.build as build
from ember.engine.feeds import seeded_inputs
from ember.tools import model_zoo


@dataclass(frozen=True)
class Variant:
    speed_level: int = 3
    loop_vectorization: bool = True
    slp_vectorization: bool = True
    loop_unrolling: bool = True
    codegen_level: int = 3


# None: build.py as it is (opt_level 3).
VARIANTS: dict[str, Variant | None] = {
    "o3": None,
    "o3-no-loop-vectorize": Variant(loop_vectorization=False),
    "o3-no-slp": Variant(slp_vectorization=False),
    "o3-no-unroll": Variant(loop_unrolling=False),
    "o3-none-of-3": Variant(
        loop_vectorization=False, slp_vectorization=False, loop_unrolling=False
    ),
    "o2": Variant(speed_level=2),
    "codegen-o2": Variant(codegen_level=2),
}

MODELS = {
    "resnet50": lambda: onnx.load(str(model_zoo.light_model_path("resnet50"))),
    "bert": lambda: model_zoo.bert_encoder(
        layers=4, seq=128, hidden=256, heads=4, vocab=1000, seed=0
    ),
    "mobilenet_v2": lambda: model_zoo.mobilenet_v2(seed=0),
}


BUILD_TARGET_MACHINE = build.create_target_machine
BUILD_OPTIMIZE = build.optimize


def use_variant(variant: Variant | None) -> None:
    """Make build.py compile with `variant` (its opt_level argument is then ignored)."""
    build._TARGET_MACHINES.clear()
    if variant is None:
        build.create_target_machine = BUILD_TARGET_MACHINE
        build.optimize = BUILD_OPTIMIZE
        return

    def create_target_machine(target: Any, opt_level: int = 3, jit: bool = True) -> Any:
        return BUILD_TARGET_MACHINE(target, variant.codegen_level, jit)

    def optimize(module_ref: Any, target_machine: Any, opt_level: int = 3) -> None:
        tuning = llvm.create_pipeline_tuning_options(speed_level=variant.speed_level)
        tuning.loop_vectorization = variant.loop_vectorization
        tuning.slp_vectorization = variant.slp_vectorization
        tuning.loop_unrolling = variant.loop_unrolling
        builder = llvm.create_pass_builder(target_machine, tuning)
        builder.getModulePassManager().run(module_ref, builder)

    build.create_target_machine = create_target_machine
    build.optimize = optimize


def cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def unit_seconds(compiled: Any) -> dict[str, float]:
    jit = compiled._keepalive
    return {stage: jit.timings.get(stage, 0.0) for stage in ("optimize", "codegen")}


def llvm_cpu(texts: list[str], variant: Variant | None, target: Any) -> tuple[float, float]:
    """(optimize, codegen) process CPU seconds of compiling `texts` in this process."""
    use_variant(variant)
    machine = build.target_machine(target, 3, True)
    optimize = codegen = 0.0
    for text in texts:
        module_ref = llvm.parse_assembly(text)
        module_ref.triple = machine.triple
        module_ref.data_layout = str(machine.target_data)
        start = time.process_time()
        build.optimize(module_ref, machine, 3)
        optimized = time.process_time()
        machine.emit_object(module_ref)
        codegen += time.process_time() - optimized
        optimize += optimized - start
    return optimize, codegen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--llvm-rounds", type=int, default=3)
    args = parser.parse_args()
    names = args.variants.split(",")
    # Lazy imports and first-use setup, so that the first variant does not pay them.
    with tempfile.TemporaryDirectory() as cache_dir:
        os.environ["EMBER_CACHE_DIR"] = cache_dir
        ember.compile(model_zoo.resnet_block_model(), progress=False)
    for model_name in args.models.split(","):
        model = MODELS[model_name]()
        feeds = seeded_inputs(model, seed=0)
        compiled: dict[str, Any] = {}
        rows: dict[str, dict[str, float]] = {}
        for name in names:
            use_variant(VARIANTS[name])
            with tempfile.TemporaryDirectory() as cache_dir:
                os.environ["EMBER_CACHE_DIR"] = cache_dir
                start = cpu_seconds()
                compiled[name] = ember.compile(model, threads=1, progress=False)
                rows[name] = {"compile_cpu": cpu_seconds() - start, **unit_seconds(compiled[name])}
        reference = compiled[names[0]].run(feeds)
        for name in names[1:]:
            for key, value in compiled[name].run(feeds).items():
                np.testing.assert_allclose(value, reference[key], rtol=1e-3, atol=1e-4)
        # The LLVM part alone, in this process, on the first variant's units (same IR for
        # all: the variants differ only after it); minimum over alternating rounds.
        first = compiled[names[0]]._keepalive
        texts = [unit.ir for unit in first.units]
        llvm_times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        for _ in range(args.llvm_rounds):
            for name in names:
                llvm_times[name].append(llvm_cpu(texts, VARIANTS[name], first.target))
        times: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for name in names:
                for _ in range(args.runs):
                    start = time.process_time()
                    compiled[name].run(feeds)
                    times[name].append(time.process_time() - start)
        base = min(times[names[0]])
        print(
            f"\n{model_name} ({len(texts)} units): cold compile CPU s (optimize + codegen wall s "
            "summed over units); LLVM CPU s in one process (optimize + codegen, min of rounds); "
            "run ms at 1 thread (min / median) and min relative to the first"
        )
        for name in names:
            row = rows[name]
            fastest = min(times[name])
            opt_cpu = min(t[0] for t in llvm_times[name])
            codegen_cpu = min(t[1] for t in llvm_times[name])
            print(
                f"  {name:22s} compile {row['compile_cpu']:6.2f} "
                f"({row['optimize']:5.2f} + {row['codegen']:5.2f})  "
                f"LLVM {opt_cpu + codegen_cpu:5.2f} ({opt_cpu:5.2f} + {codegen_cpu:5.2f})  "
                f"run {fastest * 1e3:8.2f} / {statistics.median(times[name]) * 1e3:8.2f} ms"
                f"  x{fastest / base:.3f}"
            )


if __name__ == "__main__":
    main()
