"""Run a pass list with `ember opt`'s instrumentation: IR dumps, diffs, verification, timing,
statistics, and a reproducer when a pass fails.

The passes are applied one by one rather than through `PassPipeline.apply` so that a failure
is attributed to exactly one pass, and so that "stop after" and the per-pass bookkeeping need
no state shared with a callback.
"""

from __future__ import annotations

import difflib
import shlex
import sys
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

from xdsl.dialects.builtin import IntegerAttr, ModuleOp
from xdsl.passes import ModulePass

from ember.core.context import EmberContext
from ember.dialects.weights import WeightStore
from ember.passes.pipeline import pipeline_text
from ember.tools.opt_ir import print_ir, referenced_weights, save_weights, write_ir


@dataclass
class RunOptions:
    """Which instrumentation to apply; the defaults print nothing and verify after each pass."""

    print_before: set[str] = field(default_factory=set)
    print_after: set[str] = field(default_factory=set)
    print_after_all: bool = False
    print_after_change: bool = False
    print_diff: bool = False
    dump_dir: Path | None = None
    elide: bool = True
    verify_each: bool = True
    stop_after: str | None = None
    repro_dir: Path | None = None
    # Options to repeat in the reproducer's command (e.g. the target), already shell-quoted.
    repro_flags: list[str] = field(default_factory=list)
    write_repro: bool = True


@dataclass
class PassRecord:
    """What one pass did: time, whether the IR changed, op counts and fusions before/after."""

    index: int
    pass_: ModulePass
    seconds: float = 0.0
    verify_seconds: float = 0.0
    changed: bool | None = None
    ops_before: Counter[str] = field(default_factory=Counter)
    ops_after: Counter[str] = field(default_factory=Counter)
    fusions_before: Counter[str] = field(default_factory=Counter)
    fusions_after: Counter[str] = field(default_factory=Counter)

    @property
    def label(self) -> str:
        return str(self.pass_)


@dataclass
class RunResult:
    module: ModuleOp
    ctx: EmberContext
    records: list[PassRecord]
    # Time spent printing, diffing and counting, so that --timing can separate it out.
    instrumentation_seconds: float = 0.0
    elided: bool = False


class PassFailure(Exception):
    """A pass raised, or left IR that does not verify; carries where the reproducer went."""

    def __init__(
        self,
        index: int,
        total: int,
        pass_: ModulePass,
        phase: str,
        error: BaseException,
        repro_dir: Path | None,
        command: str | None,
    ):
        self.index, self.total, self.pass_, self.phase = index, total, pass_, phase
        self.error, self.repro_dir, self.command = error, repro_dir, command
        what = "raised" if phase == "apply" else "produced IR that does not verify"
        super().__init__(
            f"pass '{pass_.name}' ({index + 1} of {total}) {what}: {type(error).__name__}: {error}"
        )


# -- statistics helpers --------------------------------------------------------------------------

_FUSED_OPS = ("graph.conv", "graph.matmul", "kernel.conv2d", "kernel.matmul")


def count_ops(module: ModuleOp) -> Counter[str]:
    return Counter(op.name for op in module.walk() if op is not module)


def count_fusions(module: ModuleOp) -> Counter[str]:
    """Ops carrying a fused epilogue, and elementwise kernels whose body fuses several ops."""
    fused: Counter[str] = Counter()
    for op in module.walk():
        if op.name in _FUSED_OPS:
            for part in ("bias", "residual"):
                if getattr(op, part, None) is not None:
                    fused[f"{op.name} +{part}"] += 1
            activation = op.properties.get("activation")
            if activation is not None:
                fused[f"{op.name} +{activation.data}"] += 1  # type: ignore[attr-defined]
        elif op.name == "kernel.elementwise":
            body_ops = sum(1 for inner in op.walk() if inner is not op) - 1  # minus kernel.yield
            if body_ops > 1:
                fused["kernel.elementwise with >1 body op"] += 1
    return fused


def memory_summary(module: ModuleOp) -> str | None:
    """Arena bytes planned against the sum of intermediates, once plan-memory has run."""
    for op in module.ops:
        arena = op.attributes.get("ember.arena_bytes")
        total = op.attributes.get("ember.intermediate_bytes")
        if isinstance(arena, IntegerAttr) and isinstance(total, IntegerAttr):
            a, t = arena.value.data, total.value.data
            ratio = f" ({100.0 * a / t:.1f}%)" if t else ""
            return f"arena {a:,} bytes planned for {t:,} bytes of intermediates{ratio}"
    return None


def _delta_lines(before: Counter[str], after: Counter[str], prefix: str = "") -> list[str]:
    names = sorted(n for n in set(before) | set(after) if before[n] != after[n])
    return [f"    {prefix + n:<46} {before[n]:>6} -> {after[n]}" for n in names]


def format_statistics(records: Sequence[PassRecord], module: ModuleOp) -> str:
    lines = ["===== ember opt statistics ====="]
    for r in records:
        total_before, total_after = sum(r.ops_before.values()), sum(r.ops_after.values())
        lines.append(f"{r.label} ({r.index + 1}): {total_before} -> {total_after} ops")
        ops = _delta_lines(r.ops_before, r.ops_after)
        lines += ops if ops else ["    (no op count changed)"]
        lines += _delta_lines(r.fusions_before, r.fusions_after, "fused: ")
    final = count_fusions(module)
    lines.append("fusions in the final IR:")
    lines += [f"    {n:<46} {c:>6}" for n, c in sorted(final.items())] or ["    (none)"]
    memory = memory_summary(module)
    lines.append(f"memory: {memory}" if memory else "memory: not planned (plan-memory did not run)")
    return "\n".join(lines) + "\n"


def format_timing(
    records: Sequence[PassRecord], load_seconds: float, instrumentation: float, extra: dict
) -> str:
    verify = sum(r.verify_seconds for r in records)
    rows = [("load (import / parse)", load_seconds)]
    rows += [(f"{r.index + 1:>2} {r.label}", r.seconds) for r in records]
    rows += [
        ("verify (all passes)", verify),
        ("instrumentation (print/diff/count)", instrumentation),
    ]
    rows += list(extra.items())
    total = sum(s for _, s in rows)
    width = max(len(name) for name, _ in rows)
    lines = ["===== ember opt timing (wall) =====", f"{'':<{width}}  {'ms':>10}  {'%':>6}"]
    for name, seconds in rows:
        share = 100.0 * seconds / total if total else 0.0
        lines.append(f"{name:<{width}}  {seconds * 1e3:>10.2f}  {share:>5.1f}%")
    lines.append(f"{'total':<{width}}  {total * 1e3:>10.2f}  100.0%")
    return "\n".join(lines) + "\n"


# -- the runner ----------------------------------------------------------------------------------


def _banner(kind: str, index: int, total: int, pass_: ModulePass | None) -> str:
    what = f"{pass_} ({index + 1}/{total})" if pass_ is not None else "input"
    return f"// -----// IR Dump {kind} {what} //----- //\n"


def _stage_file(dump_dir: Path, index: int, pass_: ModulePass | None) -> Path:
    name = pass_.name if pass_ is not None else "input"
    return dump_dir / f"{index:03d}_{name}.mlir"


def _replay(
    initial: tuple[ModuleOp, WeightStore], passes: Sequence[ModulePass], ctx: EmberContext
) -> tuple[ModuleOp, EmberContext]:
    """The IR and weights just before the failing pass, recomputed from the saved input."""
    module = initial[0].clone()
    replay_ctx = ctx.clone()
    replay_ctx.weights = initial[1].copy()
    for p in passes:
        p.apply(replay_ctx, module)
    return module, replay_ctx


def write_reproducer(
    directory: Path,
    module: ModuleOp,
    weights: WeightStore,
    failing: ModulePass,
    error: BaseException,
    flags: Sequence[str],
) -> str:
    """IR before `failing`, its weights, the command that reruns the pass, and the traceback."""
    directory.mkdir(parents=True, exist_ok=True)
    ir_path = directory / "input.mlir"
    npz = write_ir(ir_path, module, weights)
    # Absolute paths: the command must work from any directory.
    argv = ["ember-opt", str(ir_path.resolve())]
    if npz is not None:
        argv += ["--weights", str(npz.resolve())]
    argv += ["--pipeline", pipeline_text([failing]), *flags]
    command = shlex.join(argv)
    (directory / "command.sh").write_text(f"#!/bin/sh\n{command}\n")
    (directory / "error.txt").write_text(
        "".join(traceback.format_exception(type(error), error, error.__traceback__))
    )
    return command


def default_repro_dir() -> Path:
    return Path.cwd() / f"ember-repro-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"


def run_passes(
    module: ModuleOp,
    ctx: EmberContext,
    passes: Sequence[ModulePass],
    options: RunOptions,
    log: TextIO | None = None,
    collect_statistics: bool = False,
) -> RunResult:
    """Apply `passes` in order to `module` (in place), instrumented as `options` asks.

    Raises PassFailure, after writing a reproducer, when a pass raises or breaks the IR.
    """
    log = log or sys.stderr
    total = len(passes)
    initial = (module.clone(), ctx.weights.copy()) if options.write_repro else None
    result = RunResult(module, ctx, [])
    want_text = options.print_after_change or options.print_diff
    dump_weights: dict[str, object] = {}
    overhead = 0.0

    def shown(text_full: str | None) -> str:
        # Display text honours --elide-large-constants; files for re-reading never elide.
        if not options.elide and text_full is not None:
            return text_full
        text = print_ir(module, elide=options.elide)
        result.elided |= "__elided__" in text
        return text

    def dump_stage(index: int, pass_: ModulePass | None) -> None:
        assert options.dump_dir is not None
        _stage_file(options.dump_dir, index, pass_).write_text(print_ir(module, elide=False))
        for name in referenced_weights(module):
            dump_weights.setdefault(name, ctx.weights[name])

    if options.dump_dir is not None:
        options.dump_dir.mkdir(parents=True, exist_ok=True)
        dump_stage(0, None)
    previous_text = print_ir(module, elide=False) if want_text else None
    try:
        for index, pass_ in enumerate(passes):
            start = time.perf_counter()
            record = PassRecord(index, pass_)
            if collect_statistics:
                record.ops_before, record.fusions_before = count_ops(module), count_fusions(module)
            if pass_.name in options.print_before:
                log.write(_banner("Before", index, total, pass_) + shown(previous_text))
            overhead += time.perf_counter() - start

            phase = "apply"
            try:
                start = time.perf_counter()
                pass_.apply(ctx, module)
                record.seconds = time.perf_counter() - start
                if options.verify_each:
                    phase = "verify"
                    start = time.perf_counter()
                    module.verify()
                    record.verify_seconds = time.perf_counter() - start
            except Exception as error:
                raise _failure(index, passes, phase, error, initial, ctx, options, log) from error
            result.records.append(record)

            start = time.perf_counter()
            text = print_ir(module, elide=False) if want_text else None
            record.changed = None if text is None else text != previous_text
            if collect_statistics:
                record.ops_after, record.fusions_after = count_ops(module), count_fusions(module)
            selected = (
                options.print_after_all
                or pass_.name in options.print_after
                or (options.print_after_change and record.changed)
            )
            if options.print_diff and (selected or not _any_after(options)):
                log.write(_banner("Diff After", index, total, pass_))
                log.write(_diff(previous_text or "", text or "", pass_))
            elif selected:
                log.write(_banner("After", index, total, pass_) + shown(text))
            if options.dump_dir is not None:
                dump_stage(index + 1, pass_)
            previous_text = text
            overhead += time.perf_counter() - start
            if options.stop_after == pass_.name:
                break
    finally:
        if options.dump_dir is not None and dump_weights:
            save_weights(
                options.dump_dir / "weights.npz",
                WeightStore(dump_weights),  # type: ignore[arg-type]
                list(dump_weights),
            )
    result.instrumentation_seconds = overhead
    return result


def _any_after(options: RunOptions) -> bool:
    return options.print_after_all or options.print_after_change or bool(options.print_after)


def _diff(before: str, after: str, pass_: ModulePass) -> str:
    lines = list(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"before {pass_}",
            tofile=f"after {pass_}",
            n=2,
        )
    )
    return "".join(lines) if lines else "(no change)\n"


def _failure(
    index: int,
    passes: Sequence[ModulePass],
    phase: str,
    error: Exception,
    initial: tuple[ModuleOp, WeightStore] | None,
    ctx: EmberContext,
    options: RunOptions,
    log: TextIO,
) -> PassFailure:
    pass_ = passes[index]
    directory = command = None
    if initial is not None:
        directory = options.repro_dir or default_repro_dir()
        try:
            module, replay_ctx = _replay(initial, passes[:index], ctx)
            command = write_reproducer(
                directory, module, replay_ctx.weights, pass_, error, options.repro_flags
            )
        except Exception as replay_error:  # the reproducer must never hide the real failure
            log.write(f"ember opt: could not write a reproducer: {replay_error}\n")
            directory = command = None
    return PassFailure(index, len(passes), pass_, phase, error, directory, command)
