"""Where the time goes: a per-kernel-call-site profile of a compiled ONNX model.

    ember profile model.onnx [--threads 1] [--runs 10] [--order time|program]
                             [--input-shape NAME=1x3x224x224 ...] [--trace trace.json]

(also `python -m ember.tools.profile`, same options)

The model is compiled with the default pipeline plus `instrument-kernels`, which brackets each
kernel call of the entry function with cycle-counter reads. Each run fills one counter per
call site; cycles become seconds by the counter's rate, measured against the wall clock. A site's time is its best (or median) over the runs: on a shared machine the
minimum is the least disturbed sample. Inputs are seeded random numbers.

Each row also names the ONNX node the kernel call comes from (`ember.origin`, set at import;
a fused kernel names the node it was built from, then the nodes fused into it: "Conv 'c1' +
bn1, relu1"). `--trace` writes every call of every run as a Chrome trace-event file
(chrome://tracing, https://ui.perfetto.dev).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, i64
from xdsl.ir import Block, Region

from ember.core.target import Target, host_target
from ember.engine.compile import CompiledModel, compile_program, finish_program
from ember.engine.feeds import index_ranges
from ember.engine.feeds import random_feeds as feeds_for_specs
from ember.engine.shapes import InputShapes, read_model
from ember.passes.transforms.instrument_kernels import CYCLE_COUNTER, InstrumentKernels
from ember.runtime.executable import Manifest
from ember.tools.options import add_input_shape_option
from ember.tools.verbosity import apply_verbosity, verbosity_options


@dataclass(frozen=True)
class SiteProfile:
    index: int  # position of the call in the entry function
    callee: str  # the kernel function (shared by call sites with equal signatures)
    summary: str  # what it computes, e.g. "conv 3x3 s1 64->64 @56x56+bias+relu"
    flops: int  # floating point operations of one call (0: not counted for this kernel)
    seconds: float
    op_type: str = ""  # the ONNX node the call comes from ("" when unknown)
    node: str = ""
    shapes: str = ""  # operand shapes, "1x16x24x24, 16x16x3x3 -> 1x16x24x24"
    absorbed: tuple[str, ...] = ()  # the nodes fused into it (a BatchNormalization, a Relu)

    @property
    def onnx_node(self) -> str:
        """`Conv 'conv1' + bn1, relu1`, or "?" when the call's origin is unknown."""
        if not self.op_type:
            return "?"
        fused = f" + {', '.join(self.absorbed)}" if self.absorbed else ""
        return f"{self.op_type} '{self.node}'{fused}"

    @property
    def kind(self) -> str:
        """The kernel family: the callee without its numbering (conv2d, pool, elementwise...)."""
        return re.sub(r"_\d+$", "", self.callee)

    @property
    def gflops(self) -> float | None:
        return self.flops / self.seconds / 1e9 if self.flops and self.seconds > 0 else None


@dataclass(frozen=True)
class Profile:
    sites: list[SiteProfile]
    run_seconds: float  # the whole entry function by the same statistic as the sites
    wall_seconds: float  # median wall time of one run, as seen from Python
    cycles_per_second: float
    runs: int
    threads: int
    # Cycles of every run (rows) at every site, the whole entry last (columns): the trace.
    samples: np.ndarray | None = None

    @property
    def site_seconds(self) -> float:
        return sum(s.seconds for s in self.sites)


def instrumented(
    model: str | os.PathLike[str] | onnx.ModelProto,
    target: Target,
    threads: int,
    input_shapes: InputShapes | None = None,
    opt_level: int = 3,
) -> CompiledModel:
    """`model` compiled with the default pipeline, then instrument-kernels; `input_shapes`
    pins symbolic input dims."""
    program = compile_program(model, target, input_shapes=input_shapes)
    InstrumentKernels().apply(program.ctx, program.module)
    finished = finish_program(program.module, program.ctx, program.report)
    return CompiledModel(finished, opt_level, threads)


def counter_rate(target: Target, seconds: float = 0.05) -> float:
    """Ticks per second of `llvm.readcyclecounter` (rdtsc: constant rate, whatever the load).

    Read through a one-function JIT module, against the wall clock over `seconds`, so that
    the few microseconds of a ctypes call are negligible.
    """
    from ember.codegen.jit import JitModule

    block = Block()
    read = func.CallOp(CYCLE_COUNTER, [], [i64])
    block.add_ops([read, func.ReturnOp(read.res[0])])
    module = ModuleOp(
        [
            func.FuncOp("ember_read_cycles", ([], [i64]), Region(block)),
            func.FuncOp(CYCLE_COUNTER, ([], [i64]), Region(), "private"),
        ]
    )
    jit = JitModule(module, target)
    read_cycles = jit.function("ember_read_cycles", [], ctypes.c_int64)
    c0, t0 = read_cycles(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pass
    c1, t1 = read_cycles(), time.perf_counter()
    return (c1 - c0) / (t1 - t0)


def random_feeds(
    manifest: Manifest, seed: int = 0, model: onnx.ModelProto | None = None
) -> dict[str, np.ndarray]:
    """Seeded inputs for every input of `manifest`, index inputs within the ranges `model`
    accepts (see `ember.engine.feeds`)."""
    ranges = None
    if model is not None:
        ranges = index_ranges(model, {spec.name: spec.shape for spec in manifest.inputs})
    return feeds_for_specs(manifest.inputs, seed, ranges)


def profile_model(
    model: str | os.PathLike[str] | onnx.ModelProto,
    *,
    threads: int = 1,
    runs: int = 10,
    warmup: int = 2,
    statistic: str = "min",
    feeds: dict[str, np.ndarray] | None = None,
    input_shapes: InputShapes | None = None,
    target: Target | None = None,
    opt_level: int = 3,
) -> Profile:
    """Compile `model` instrumented and time each kernel call site over `runs` runs (for
    `target`, default the host with `threads` threads)."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    reduce = {"min": min, "median": statistics.median}.get(statistic)
    if reduce is None:
        raise ValueError(f"statistic must be 'min' or 'median', got '{statistic}'")
    target = target or host_target(threads)
    compiled = instrumented(model, target, threads, input_shapes, opt_level)
    sites = compiled.profile_sites
    assert sites is not None
    if feeds is None:
        feeds = random_feeds(compiled.manifest, model=read_model(model))
    for _ in range(warmup):
        compiled.run(feeds)
    samples, walls = [], []
    for _ in range(runs):
        start = time.perf_counter()
        _, counters = compiled.run_profiled(feeds)
        walls.append(time.perf_counter() - start)
        samples.append(counters)
    rate = counter_rate(compiled.target)
    per_slot = np.stack(samples)
    seconds = [float(reduce(list(per_slot[:, i]))) / rate for i in range(per_slot.shape[1])]
    result = [
        SiteProfile(
            i,
            str(s["callee"]),
            str(s["summary"]),
            int(s["flops"]),
            seconds[i],
            str(s.get("op_type", "")),
            str(s.get("node", "")),
            str(s.get("shapes", "")),
            tuple(s.get("absorbed", ())),
        )
        for i, s in enumerate(sites)
    ]
    return Profile(result, seconds[-1], statistics.median(walls), rate, runs, threads, per_slot)


def trace_events(profile: Profile) -> dict[str, object]:
    """The profile's runs as Chrome trace events: one complete event ("ph": "X") per kernel
    call per run, in microseconds.

    The counters give each call's duration, not its start: calls are laid end to end from the
    start of their run (the entry runs them one after another; the gaps between them are the
    entry's own few instructions), and each run starts where the previous one ended.
    """
    if profile.samples is None:
        raise ValueError("the profile has no per-run samples to trace")
    to_us = 1e6 / profile.cycles_per_second
    events: list[dict[str, object]] = []
    run_start = 0.0
    for run, counters in enumerate(profile.samples):
        events.append(
            {
                "name": f"run {run}",
                "cat": "run",
                "ph": "X",
                "ts": run_start,
                "dur": float(counters[-1]) * to_us,
                "pid": 0,
                "tid": 0,
            }
        )
        start = run_start
        for site in profile.sites:
            duration = float(counters[site.index]) * to_us
            args: dict[str, object] = {
                "site": site.index,
                "kernel": site.callee,
                "op": site.summary,
                "onnx_op": site.op_type,
                "node": site.node,
                "nodes": [site.node, *site.absorbed] if site.node else [],
                "shape": site.shapes,
            }
            if site.flops and duration > 0:
                args["GFLOP/s"] = round(site.flops / duration / 1e3, 2)
            events.append(
                {
                    "name": site.node or site.callee,
                    "cat": site.kind,
                    "ph": "X",
                    "ts": start,
                    "dur": duration,
                    "pid": 0,
                    "tid": 1,
                    "args": args,
                }
            )
            start += duration
        run_start += float(counters[-1]) * to_us
    names = [("process_name", 0, None, "ember"), ("thread_name", 0, 0, "runs")]
    names.append(("thread_name", 0, 1, "kernels"))
    metadata = [
        {
            "name": kind,
            "ph": "M",
            "pid": pid,
            **({} if tid is None else {"tid": tid}),
            "args": {"name": label},
        }
        for kind, pid, tid, label in names
    ]
    return {"traceEvents": metadata + events, "displayTimeUnit": "ms"}


def write_trace(profile: Profile, path: str | os.PathLike[str]) -> None:
    """`trace_events(profile)` as a JSON file for chrome://tracing or ui.perfetto.dev."""
    with open(path, "w") as out:
        json.dump(trace_events(profile), out)


def format_profile(profile: Profile, order: str = "time", top: int | None = None) -> str:
    """The per-site table, then the share of each kernel family."""
    total = profile.site_seconds or 1.0
    sites = list(profile.sites)
    if order == "time":
        sites.sort(key=lambda s: -s.seconds)
    shown = sites[:top] if top else sites
    width = max([len(s.summary) for s in shown] + [7])
    lines = [
        f"{profile.threads} thread(s), {profile.runs} runs; counter at "
        f"{profile.cycles_per_second / 1e9:.2f} GHz",
        f"{'site':>4}  {'kernel':<14} {'op':<{width}}  {'share':>6} {'us':>9} {'GFLOP/s':>8}"
        "  onnx node",
    ]
    for s in shown:
        gflops = f"{s.gflops:8.1f}" if s.gflops is not None else f"{'':>8}"
        lines.append(
            f"{s.index:>4}  {s.callee:<14} {s.summary:<{width}}  "
            f"{s.seconds / total:>6.1%} {s.seconds * 1e6:>9.1f} {gflops}  {s.onnx_node}"
        )
    if top and len(sites) > top:
        rest = sum(s.seconds for s in sites[top:])
        lines.append(f"{'':>4}  ({len(sites) - top} more sites: {rest / total:.1%})")
    lines.append("")
    kinds: dict[str, list[SiteProfile]] = {}
    for s in profile.sites:
        kinds.setdefault(s.kind, []).append(s)
    for kind, group in sorted(kinds.items(), key=lambda kv: -sum(s.seconds for s in kv[1])):
        spent = sum(s.seconds for s in group)
        flops = sum(s.flops for s in group)
        rate = f", {flops / spent / 1e9:.1f} GFLOP/s" if flops and spent else ""
        lines.append(
            f"{kind:<14} {len(group):>3} sites {spent / total:>6.1%} {spent * 1e3:>8.2f} ms{rate}"
        )
    lines.append(
        f"\nsum of sites {profile.site_seconds * 1e3:.2f} ms, whole entry "
        f"{profile.run_seconds * 1e3:.2f} ms, median wall time of a run "
        f"{profile.wall_seconds * 1e3:.2f} ms"
    )
    return "\n".join(lines)


def _onnx_path_error(model: str) -> str | None:
    """Why `model` is not an .onnx file to profile (None if it is one): the profile compiles
    the model again, instrumented, so an artifact directory is named with its source model."""
    path = Path(model)
    if path.is_dir():
        source = None
        manifest = path / "manifest.json"
        if manifest.is_file():
            try:
                source = json.loads(manifest.read_text()).get("source", {}).get("path")
            except (ValueError, OSError, AttributeError):
                source = None
        hint = f" (it was compiled from {source})" if source else ""
        return (
            f"{model} is a directory (an artifact?): the profile compiles an instrumented build, "
            f"so give the .onnx model{hint}"
        )
    if not path.is_file():
        return f"{model}: no such file"
    return None


def main(argv: Sequence[str] | None = None, prog: str = "ember profile") -> int:
    parser = argparse.ArgumentParser(
        parents=[verbosity_options()], prog=prog, description=__doc__.splitlines()[0]
    )
    parser.add_argument("model", help="an .onnx file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--statistic", choices=["min", "median"], default="min")
    parser.add_argument("--order", choices=["time", "program"], default="time")
    parser.add_argument("--top", type=int, default=None, help="show only the N slowest sites")
    parser.add_argument(
        "--trace",
        metavar="OUT.json",
        help="also write every kernel call of every run as a Chrome trace-event file",
    )
    add_input_shape_option(parser)
    args = parser.parse_args(argv)
    apply_verbosity(args)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if (problem := _onnx_path_error(args.model)) is not None:
        print(f"{parser.prog}: error: {problem}", file=sys.stderr)
        return 1
    try:
        profile = profile_model(
            args.model,
            threads=args.threads,
            runs=args.runs,
            warmup=args.warmup,
            statistic=args.statistic,
            input_shapes=args.input_shapes,
        )
    except ValueError as error:  # ModelError and friends: a refusal, not a crash
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    print(format_profile(profile, args.order, args.top))
    if args.trace:
        try:
            write_trace(profile, args.trace)
        except OSError as error:
            print(f"{parser.prog}: error: cannot write {args.trace}: {error}", file=sys.stderr)
            return 1
        print(f"trace: {args.trace} ({len(profile.sites)} kernels x {profile.runs} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m ember.tools.profile"))
