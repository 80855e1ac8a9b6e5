"""`ember opt`: run any pass pipeline on an ONNX model or on ember IR text, and debug it.

    ember opt model.onnx --emit kernel                       # IR after the kernel stage
    ember opt model.onnx --emit dot -o graph.dot             # the --emit graph IR, drawn
    ember opt model.onnx --print-ir-after-change --print-ir-diff
    ember opt model.onnx --pipeline "canonicalize,fold-batchnorm,dce" -o graph.mlir
    ember opt graph.mlir --weights graph.npz --emit loops --timing --statistics
    ember opt model.onnx --bisect-against onnxruntime        # first pass that breaks numerics
    ember opt model.onnx --compare-intermediates             # first node that diverges
    ember opt bert.onnx --input-shape input_ids=1x128        # pin symbolic input dims

IR dumps, timing and statistics go to stderr (as with mlir-opt), the resulting IR to stdout or
`-o FILE`. Exit status: 0 success, 1 a pass failed or outputs diverged, 2 bad usage or input.
See docs/debugging.md for a walk-through.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, get_pass_option_infos

from ember.core.context import EmberContext, make_context
from ember.core.target import Target, host_target, named_target
from ember.dialects.weights import WeightStore
from ember.engine.shapes import pin_inputs, read_model, static_input_shapes
from ember.passes.options import check_options_for, option_text
from ember.passes.pipeline import (
    DEFAULT_PIPELINE,
    KERNEL_STAGE,
    LOOPS_STAGE,
    available_passes,
    parse_passes,
    pipeline_text,
)
from ember.passes.program import entry_function
from ember.runtime.errors import KernelError, PassOptionError
from ember.tools.opt_bisect import MANDATORY_PASSES, ORACLES
from ember.tools.opt_ir import (
    InputError,
    check_weights,
    filled_weight,
    load_weights,
    parse_ir,
    print_ir,
    referenced_weights,
    seeded_weights,
    sidecar_path,
    weight_value,
    write_ir,
)
from ember.tools.opt_run import (
    PassFailure,
    RunOptions,
    format_statistics,
    format_timing,
    run_passes,
)
from ember.tools.options import add_input_files_option, add_input_shape_option, read_input_files
from ember.tools.verbosity import apply_verbosity, verbosity_options

EMIT_CHOICES = ("graph", "kernel", "loops", "llvm", "asm", "dot")
_KERNEL_PASSES = frozenset(KERNEL_STAGE.split(","))
_LOOPS_PASSES = frozenset(LOOPS_STAGE.split(","))
_LOWERING_PASSES = _KERNEL_PASSES | _LOOPS_PASSES


class UsageError(ValueError):
    """Bad flags: reported with exit status 2, like argparse's own errors."""


# -- passes and pipelines ------------------------------------------------------------------------


def pass_registry(
    extra_passes: Sequence[type[ModulePass]] = (),
) -> dict[str, Callable[[], type[ModulePass]]]:
    """Every pass by name; `extra_passes` (e.g. test-only passes) join or override them."""
    registry = dict(available_passes())
    registry.update({p.name: (lambda p=p: p) for p in extra_passes})
    return registry


def parse_pipeline(
    spec: str, registry: dict[str, Callable[[], type[ModulePass]]]
) -> list[ModulePass]:
    try:
        return parse_passes(spec, registry)
    except PassOptionError as error:  # names the pass, the option and what it takes
        raise UsageError(f"invalid --pipeline: {error}") from None
    except Exception as error:  # the spec lexer/parser raise several types
        raise UsageError(
            f"invalid --pipeline '{spec}': {error}\n(available passes: "
            f"{', '.join(sorted(registry))}; see --list-passes)"
        ) from None


def list_passes(registry: dict[str, Callable[[], type[ModulePass]]]) -> str:
    """One line per pass: name{options}, then the first line of the class docstring."""
    lines = []
    for name in sorted(registry):
        cls = registry[name]()
        doc = (cls.__doc__ or "").strip().splitlines()
        options = " ".join(
            # An option without a default takes the target's (or limit's) value unless set.
            f"{option_text(o.name)}={o.default_value}"
            if o.default_value not in (None, "none")
            else f"{option_text(o.name)}=unset"
            for o in get_pass_option_infos(cls)
        )
        signature = f"{name}{{{options}}}" if options else name
        mandatory = " [mandatory lowering]" if name in MANDATORY_PASSES else ""
        lines.append(f"  {signature:<28} {doc[0] if doc else '(undocumented)'}{mandatory}")
    header = (
        "Passes (use in --pipeline as name or name{option=value ...}; an unset option takes\n"
        "the compile target's value, or the limit's in core/limits.py):\n"
    )
    return header + "\n".join(lines)


def default_pipeline_for(module: ModuleOp | None) -> str:
    """The default pipeline, minus the stages that IR text given as input has already passed."""
    if module is None:
        return DEFAULT_PIPELINE
    names = {op.name for op in module.walk()}
    if any(n.startswith("graph.") for n in names):
        return DEFAULT_PIPELINE
    if not any(n.startswith("kernel.") for n in names):
        return ""  # already loops: nothing left to run
    fn = entry_function(module)
    if "ember.weight_offsets" in fn.attributes:
        return LOOPS_STAGE
    rest = [p for p in KERNEL_STAGE.split(",") if p != "convert-graph-to-kernel"]
    if "ember.arena_bytes" in fn.attributes:
        rest = [p for p in rest if p not in ("fuse-elementwise", "plan-memory")]
    return ",".join([*rest, LOOPS_STAGE])


def cut_for_emit(passes: list[ModulePass], emit: str | None) -> list[ModulePass]:
    """graph: stop before the first lowering pass; kernel: before lowering to loops."""
    stop_at = {"graph": _LOWERING_PASSES, "kernel": _LOOPS_PASSES}.get(emit or "")
    if stop_at is None:
        return passes
    for index, p in enumerate(passes):
        if p.name in stop_at:
            return passes[:index]
    return passes


# -- the command line ----------------------------------------------------------------------------


def _pass_names(values: list[str]) -> set[str]:
    return {name.strip() for value in values for name in value.split(",") if name.strip()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        parents=[verbosity_options()],
        prog="ember opt",
        description="Run and debug ember pass pipelines on an ONNX model or ember IR text.",
        epilog=f"Default pipeline: {DEFAULT_PIPELINE}",
    )
    parser.add_argument("input", nargs="?", help="an .onnx model or a file of ember IR text")
    io = parser.add_argument_group("input and output")
    io.add_argument("-o", "--output", metavar="FILE", help="write the IR (and FILE.npz) here")
    io.add_argument(
        "--weights",
        metavar="FILE.npz",
        help="weights for IR text input (default: the .npz next to it, if any)",
    )
    io.add_argument(
        "--random-weights",
        action="store_true",
        help="IR text: seeded weights (--seed) for those no .npz supplies, e.g. hand-written IR",
    )
    io.add_argument(
        "--weight",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        type=weight_value,
        help="IR text: the weight NAME filled with VALUE, shaped and typed as its constant "
        "(repeatable; e.g. a zero point of 0 or an exponent of 2 for a test)",
    )
    io.add_argument(
        "--emit",
        choices=EMIT_CHOICES,
        help="stop at a stage / emit LLVM IR or asm / dot: the graph-stage IR as Graphviz text",
    )
    add_input_shape_option(io)
    io.add_argument(
        "--elide-large-constants",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="print dense arrays of more than 16 elements as a placeholder (on by default)",
    )
    pipe = parser.add_argument_group("pipeline")
    pipe.add_argument("--pipeline", metavar="SPEC", help="e.g. 'canonicalize,dce,...'")
    pipe.add_argument("--list-passes", action="store_true", help="list passes and exit")
    pipe.add_argument(
        "--print-pipeline", action="store_true", help="print the pipeline that would run and exit"
    )
    pipe.add_argument("--stop-after", metavar="PASS", help="stop after the first run of PASS")
    pipe.add_argument(
        "--verify-each",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="verify the IR after every pass (on by default)",
    )
    dump = parser.add_argument_group("IR dumps (to stderr)")
    dump.add_argument("--print-ir-before", action="append", default=[], metavar="PASS")
    dump.add_argument("--print-ir-after", action="append", default=[], metavar="PASS")
    dump.add_argument("--print-ir-after-all", action="store_true")
    dump.add_argument(
        "--print-ir-after-change", action="store_true", help="only after passes that changed it"
    )
    dump.add_argument(
        "--print-ir-diff", action="store_true", help="a unified diff per pass, not whole modules"
    )
    dump.add_argument("--ir-dump-dir", metavar="DIR", help="one numbered IR file per pass")
    report = parser.add_argument_group("reports (to stderr)")
    report.add_argument("--timing", action="store_true", help="per-pass wall time")
    report.add_argument(
        "--statistics", action="store_true", help="per-pass op counts, fusions, memory"
    )
    numerics = parser.add_argument_group("numerical debugging (ONNX input)")
    numerics.add_argument(
        "--bisect-against", choices=ORACLES, help="name the first pass that breaks the outputs"
    )
    numerics.add_argument(
        "--compare-intermediates",
        action="store_true",
        help="name the first node whose value differs from onnxruntime's",
    )
    numerics.add_argument(
        "--rtol", type=float, default=1e-3, help="divergence: max|err| > RTOL x max|ref|"
    )
    numerics.add_argument(
        "--seed", type=int, default=0, help="seed of the random inputs and weights"
    )
    add_input_files_option(
        numerics, dest="inputs", help="use this input instead of a random one (repeatable)"
    )
    build = parser.add_argument_group("target and failures")
    build.add_argument("--target-cpu", default="host", help="host or an LLVM cpu name")
    build.add_argument("--threads", type=int, default=None, help="threads for the target")
    build.add_argument("--opt-level", type=int, choices=range(4), default=3)
    build.add_argument("--repro-dir", metavar="DIR", help="where a failing pass's reproducer goes")
    return parser


def _target(args: argparse.Namespace) -> Target:
    if args.target_cpu == "host":
        return host_target(args.threads)
    return named_target(args.target_cpu, args.threads)


def _target_flags(args: argparse.Namespace) -> list[str]:
    flags = []
    if args.target_cpu != "host":
        flags += ["--target-cpu", args.target_cpu]
    if args.threads:
        flags += ["--threads", str(args.threads)]
    return flags


def load_input(
    path: str,
    weights_path: str | None,
    target: Target,
    input_shapes: dict[str, list[int]] | None = None,
    random_weights_seed: int | None = None,
    filled_weights: Sequence[tuple[str, float]] = (),
) -> tuple[ModuleOp, EmberContext, bool]:
    """(module, context with weights, whether the input was ONNX); `input_shapes` pins an
    ONNX model's symbolic input dims; with `random_weights_seed`, IR text gets seeded weights
    for those its weights file lacks; `filled_weights` (name, value) set IR text's weights
    to one value each, over any other source."""
    source = Path(path)
    if source.is_dir():
        raise InputError(f"'{path}' is a directory: give an .onnx model or a file of ember IR")
    if not source.is_file():
        raise InputError(f"no such file: '{path}'")
    if source.suffix == ".onnx":
        from ember.frontend.onnx_importer import import_model

        if filled_weights:
            raise UsageError("--weight sets the weights of IR text, not of an .onnx model")

        model = read_model(source)
        module, weights = import_model(model, static_input_shapes(model, input_shapes))
        return module, make_context(weights, target), True
    if input_shapes:
        raise UsageError("--input-shape pins the inputs of an .onnx model, not of IR text")
    weights = WeightStore()
    npz = Path(weights_path) if weights_path else sidecar_path(source)
    if weights_path or npz.is_file():
        weights = load_weights(npz)
    ctx = make_context(weights, target)
    module = parse_ir(source.read_text(), ctx, str(source))
    try:
        module.verify()
    except Exception as error:
        raise InputError(f"'{path}' does not verify: {error}") from None
    if random_weights_seed is not None:
        for name, array in seeded_weights(module, random_weights_seed).items():
            if name not in weights:
                weights[name] = array
    for name, value in filled_weights:
        weights[name] = filled_weight(module, name, value)
    check_weights(module, weights, str(source))
    # Keep only what the IR names: a shared .npz (e.g. of --ir-dump-dir) also holds weights of
    # later stages, whose names would push the passes' fresh names to other suffixes.
    ctx.weights = WeightStore({name: weights[name] for name in referenced_weights(module)})
    return module, ctx, False


def _numerics(
    args: argparse.Namespace,
    module: ModuleOp,
    ctx: EmberContext,
    passes: list[ModulePass],
    out: TextIO,
    log: TextIO,
) -> int:
    from ember.frontend.onnx_importer import import_model
    from ember.tools import opt_bisect

    model = opt_bisect.load_onnx(args.input)
    # The oracles and the intermediates' model run with the shapes ember compiled.
    pin_inputs(model, static_input_shapes(model, args.input_shapes))
    initializers = {t.name for t in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in initializers]
    feeds = opt_bisect.seeded_inputs(model, args.seed) if len(args.inputs) < len(names) else {}
    feeds.update(read_input_files(args.inputs, names))
    diverged = False
    if args.bisect_against:
        reference = opt_bisect.oracle_outputs(model, feeds, args.bisect_against)
        result = opt_bisect.bisect(
            module, ctx, passes, feeds, reference, args.rtol, args.opt_level, log
        )
        out.write(f"bisect against {args.bisect_against} ({len(passes)} passes):\n")
        out.write(result.report())
        diverged |= result.baseline_diverges or result.culprit is not None
    if args.compare_intermediates:

        def build(m: object) -> tuple[ModuleOp, EmberContext]:
            imported, weights = import_model(m)  # type: ignore[arg-type]
            return imported, make_context(weights, ctx.target)

        report = opt_bisect.compare_intermediates(
            model, build, passes, feeds, args.rtol, args.opt_level
        )
        out.write(report.report())
        diverged |= report.first_divergent is not None
    return 1 if diverged else 0


def _emit_code(module: ModuleOp, target: Target, kind: str, opt_level: int) -> str:
    from ember.codegen.jit import emit_text

    leftover = sorted(
        {op.name for op in module.walk() if op.name.split(".")[0] in ("graph", "kernel")}
    )
    if leftover:
        raise UsageError(
            f"--emit {kind} needs loops-level IR, but {', '.join(leftover[:4])} remain; "
            "the pipeline must end with lower-kernels-to-loops"
        )
    return emit_text(module, target, kind, opt_level)  # type: ignore[arg-type]


def run(
    args: argparse.Namespace,
    extra_passes: Sequence[type[ModulePass]] = (),
    out: TextIO | None = None,
    log: TextIO | None = None,
) -> int:
    """Carry out parsed `ember opt` arguments; returns the exit status."""
    out, log = out or sys.stdout, log or sys.stderr
    registry = pass_registry(extra_passes)
    if args.list_passes:
        out.write(list_passes(registry) + "\n")
        return 0
    if args.input is None and not args.print_pipeline:
        raise UsageError("an input file (.onnx or IR text) is required")
    target = _target(args)

    start = time.perf_counter()
    module = ctx = None
    from_onnx = True
    if args.input is not None and not (args.print_pipeline and args.pipeline):
        module, ctx, from_onnx = load_input(
            args.input,
            args.weights,
            target,
            args.input_shapes,
            args.seed if args.random_weights else None,
            args.weight,
        )
    load_seconds = time.perf_counter() - start

    spec = (
        args.pipeline
        if args.pipeline is not None
        else default_pipeline_for(None if from_onnx else module)
    )
    passes = parse_pipeline(spec, registry) if spec.strip() else []
    try:
        check_options_for(passes, target)
    except PassOptionError as error:
        raise UsageError(f"invalid --pipeline: {error}") from None
    if args.print_pipeline:
        out.write(pipeline_text(passes) + "\n")
        return 0
    assert module is not None and ctx is not None

    if args.bisect_against or args.compare_intermediates:
        if not from_onnx:
            raise UsageError("--bisect-against/--compare-intermediates need an .onnx model")
        return _numerics(args, module, ctx, passes, out, log)

    # --emit dot draws the graph-stage IR (`ember graph --stage` draws the others).
    passes = cut_for_emit(passes, "graph" if args.emit == "dot" else args.emit)
    requested = {
        "--print-ir-before": _pass_names(args.print_ir_before),
        "--print-ir-after": _pass_names(args.print_ir_after),
        "--stop-after": {args.stop_after} if args.stop_after else set(),
    }
    present = {p.name for p in passes}
    for flag, names in requested.items():
        if names - present:
            raise UsageError(
                f"{flag}: no pass {', '.join(sorted(names - present))} in the pipeline "
                f"({pipeline_text(passes) or 'empty'})"
            )
    options = RunOptions(
        print_before=requested["--print-ir-before"],
        print_after=requested["--print-ir-after"],
        print_after_all=args.print_ir_after_all,
        print_after_change=args.print_ir_after_change,
        print_diff=args.print_ir_diff,
        dump_dir=Path(args.ir_dump_dir) if args.ir_dump_dir else None,
        elide=args.elide_large_constants,
        verify_each=args.verify_each,
        stop_after=args.stop_after,
        repro_dir=Path(args.repro_dir) if args.repro_dir else None,
        repro_flags=_target_flags(args),
    )
    try:
        result = run_passes(module, ctx, passes, options, log, collect_statistics=args.statistics)
    except PassFailure as failure:
        log.write(f"ember opt: error: {failure}\n")
        if failure.repro_dir is not None:
            log.write(
                f"ember opt: reproducer written to {failure.repro_dir}\n"
                f"ember opt: rerun the failing pass with:\n    {failure.command}\n"
            )
        return 1

    extra_timing: dict[str, float] = {}
    if args.emit in ("llvm", "asm"):
        start = time.perf_counter()
        text = _emit_code(module, target, args.emit, args.opt_level)
        extra_timing[f"codegen (--emit {args.emit})"] = time.perf_counter() - start
        if args.output:
            Path(args.output).write_text(text)
        else:
            out.write(text)
    elif args.emit == "dot":
        from ember.tools.graph_view import graph_of, to_dot

        text = to_dot(graph_of(module, "graph"))
        if args.output:
            Path(args.output).write_text(text)
        else:
            out.write(text)
    elif args.output:
        npz = write_ir(args.output, module, ctx.weights)
        if npz is not None:
            log.write(f"ember opt: weights written to {npz}\n")
    else:
        text = print_ir(module, elide=args.elide_large_constants)
        out.write(text)
        if "__elided__" in text:
            log.write(
                "ember opt: large constants elided; --no-elide-large-constants prints IR "
                "that parses back\n"
            )

    if args.statistics:
        log.write(format_statistics(result.records, module))
    if args.timing:
        log.write(
            format_timing(
                result.records, load_seconds, result.instrumentation_seconds, extra_timing
            )
        )
    return 0


def main(argv: Sequence[str] | None = None, extra_passes: Sequence[type[ModulePass]] = ()) -> int:
    """Entry point of `ember opt` / `ember-opt`; `extra_passes` registers more passes by name."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    apply_verbosity(args)
    try:
        return run(args, extra_passes)
    except (UsageError, InputError) as error:
        sys.stderr.write(f"ember opt: error: {error}\n")
        return 2
    except KernelError as error:  # the numerics' run refused its inputs (an index, a length)
        sys.stderr.write(f"ember opt: error: the compiled model refused the inputs: {error}\n")
        return 2
    except ValueError as error:  # the frontend's ModelError/UnsupportedOpError, among others
        sys.stderr.write(f"ember opt: error: {error}\n")
        return 2
    except BrokenPipeError:  # `ember opt ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
