"""The `ember` command: compile, run, bench, opt (the pass-pipeline debugger), conformance, fuzz.

    ember compile model.onnx -o model.ember [--opt-level 3] [--target-cpu host] [--threads N]
    ember run model.ember --input data=x.npy [--output-dir out/]
    ember bench model.onnx --threads 2 --runs 50 --compare onnxruntime
    ember bench model.onnx --breakdown [--top 10]   (+ the slowest kernels by ONNX node, op type)
    ember opt ...                        (see `ember opt --help`)
    ember conformance ...                (see `ember conformance --help`)
    ember fuzz ...                       (see `ember fuzz --help`)
    ember check model.onnx [--json]      (every problem to fix before compiling)
    ember graph model.onnx -o graph.html [--stage import|graph|kernel]   (a picture of the graph;
                                         `ember view` is the same command)
    ember profile model.onnx [--runs 10] [--trace trace.json]   (time per kernel, by ONNX node)
    ember quantize model.onnx -o model.int8.onnx [--calib DIR]   (int8 QDQ model)
    ember compile model.onnx -o model.ember --int8 [--calib DIR] (quantize, then compile)
    ember cache info|list|clear          (see `ember cache --help`)
    ember serve models/ --port 8000      (KServe v2 server; see `ember serve --help`)

`run` and `bench` take an artifact directory or an .onnx file; an .onnx file is compiled once
and cached (as `ember.Config` does). Inputs with symbolic dims (a batch, a sequence length) are
pinned with `--input-shape NAME=1x3x224x224` (repeatable); `run` and `bench` also pin them from
the shapes of the `--input` arrays.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ember import __version__
from ember.core.target import host_cpu_description
from ember.engine.predictor import Config, pipeline_spec
from ember.engine.shapes import UnpinnedInputsError
from ember.runtime.artifact import read_manifest, sha256_file
from ember.runtime.cpu_features import host_microarchitecture
from ember.runtime.errors import EmberError, InputError
from ember.runtime.executable import Manifest, TensorSpec, numpy_dtype
from ember.runtime.once import ONCE_KEY, OnceProgram
from ember.tools.options import (
    add_dim_range_option,
    add_dim_sizes_option,
    add_input_files_option,
    add_input_shape_option,
    read_input_files,
)
from ember.tools.quantize import add_quantize_options, quantize_from_args
from ember.tools.verbosity import apply_verbosity, restored_logging, verbosity_options

if TYPE_CHECKING:
    from ember.tools.bench import BenchResult, Error

log = logging.getLogger("ember.cli")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected sizes like 1,4,16") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"'{text}': sizes must be >= 1")
    return sizes


def _add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--opt-level", type=int, choices=range(4), default=3, help="LLVM optimisation level"
    )
    parser.add_argument(
        "--target-cpu",
        default="host",
        help="host (default) or an LLVM cpu name, e.g. x86-64-v3 (AVX2) or x86-64-v4 (AVX-512)",
    )
    parser.add_argument(
        "--threads", type=_positive, default=None, help="threads (default: all cores)"
    )
    add_input_shape_option(parser)
    add_dim_range_option(parser)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ember", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"ember {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verbosity = [verbosity_options()]  # -v/-q, the same on every command (tools/verbosity.py)

    compile_ = commands.add_parser(
        "compile", parents=verbosity, help="compile an ONNX model to an artifact directory"
    )
    compile_.add_argument("model", help="the .onnx file")
    compile_.add_argument("-o", "--output", required=True, help="artifact directory to write")
    _add_build_options(compile_)
    compile_.add_argument(
        "--no-ir-optim", action="store_true", help="skip the graph optimisation passes"
    )
    compile_.add_argument(
        "--checks",
        action="store_true",
        help="debug mode: bounds-check every memory access of every kernel at run time",
    )
    compile_.add_argument(
        "--verify-each", action="store_true", help="verify the IR after every pass (debugging)"
    )
    compile_.add_argument(
        "--sign-key",
        metavar="FILE",
        help="sign the artifact with the secret key in FILE (HMAC-SHA256; default: the file "
        "$EMBER_ARTIFACT_KEY names, if set); load then verifies it when given the key",
    )
    add_dim_sizes_option(compile_)
    int8 = compile_.add_argument_group(
        "int8", "--int8 quantizes the model first (as `ember quantize`; docs/quantization.md)"
    )
    int8.add_argument("--int8", action="store_true", help="compile the int8 (QDQ) model")
    add_quantize_options(int8)

    verify = commands.add_parser(
        "verify",
        parents=verbosity,
        help="check an artifact as `load` does (code hash, signature), run nothing",
    )
    verify.add_argument("model", help="artifact directory")
    verify.add_argument(
        "--key",
        metavar="FILE",
        help="require a signature by the key in FILE (default: the file $EMBER_ARTIFACT_KEY "
        "names, if set)",
    )

    run = commands.add_parser(
        "run", parents=verbosity, help="run an artifact or .onnx model on .npy inputs"
    )
    run.add_argument("model", help="artifact directory or .onnx file")
    add_input_files_option(run)
    run.add_argument("--random-inputs", action="store_true", help="seeded random missing inputs")
    run.add_argument("--seed", type=int, default=0, help="seed of --random-inputs")
    run.add_argument("--output-dir", help="write each output to OUTPUT_DIR/<name>.npy")
    run.add_argument("--npz", metavar="FILE", help="write all outputs to one .npz archive")
    _add_build_options(run)

    bench = commands.add_parser(
        "bench", parents=verbosity, help="measure latency, throughput and peak memory"
    )
    bench.add_argument("model", help="artifact directory or .onnx file")
    add_input_files_option(bench)
    bench.add_argument("--runs", type=_positive, default=50)
    bench.add_argument("--warmup", type=int, default=5)
    bench.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    bench.add_argument(
        "--compare", choices=["onnxruntime"], help="also time this engine on the same inputs"
    )
    bench.add_argument(
        "--onnx",
        help="the .onnx for --compare and for index ranges when MODEL is an artifact "
        "(default: its source)",
    )
    bench.add_argument("--json", action="store_true", help="print the results as one JSON document")
    bench.add_argument(
        "--batch",
        type=_sizes,
        metavar="1,4,16",
        help="time each batch size (axis 0 of inputs with a symbolic batch axis): latency and "
        "throughput per size, on one batch-polymorphic program when the model is proven "
        "batch-separable",
    )
    bench.add_argument(
        "--per-batch",
        action="store_true",
        help="with --batch: compile each batch size as its own static program, even when one "
        "batch-polymorphic program could serve them all",
    )
    bench.add_argument(
        "--breakdown",
        action="store_true",
        help="also time each kernel call (an instrumented build, ember.tools.profile): the "
        "slowest ones by ONNX node and the time per op type; with --compare onnxruntime, its own "
        "per-node profile beside them",
    )
    bench.add_argument(
        "--top", type=_positive, default=10, help="kernels listed by --breakdown (default 10)"
    )
    _add_build_options(bench)

    commands.add_parser("opt", help="run and debug pass pipelines (see `ember opt --help`)")
    commands.add_parser(
        "conformance", help="ONNX node conformance suite (see `ember conformance --help`)"
    )
    commands.add_parser("fuzz", help="fuzz and differential tests (see `ember fuzz --help`)")
    commands.add_parser("check", help="list every problem to fix before a model compiles")
    commands.add_parser(
        "graph",
        aliases=["view"],
        help="draw the graph after ember's passes (.html, .dot, .svg; see --help)",
    )
    commands.add_parser(
        "profile",
        help="time each kernel call by ONNX node, --trace for a timeline (see --help)",
    )
    commands.add_parser("quantize", help="post-training int8 quantization to a QDQ ONNX model")
    commands.add_parser("cache", help="show or clear the on-disk cache (see `ember cache --help`)")
    commands.add_parser(
        "serve", help="serve a model repository over HTTP, KServe v2 (see `ember serve --help`)"
    )
    return parser


# -- shared: what to load and with which inputs ------------------------------------------------


def _config(args: argparse.Namespace) -> Config:
    config = Config(args.model)
    if args.threads:
        config.set_cpu_math_library_num_threads(args.threads)
    config.set_opt_level(args.opt_level)
    config.set_target_cpu(args.target_cpu)
    config.switch_progress(not args.quiet)
    for name, shape in args.input_shapes.items():
        config.set_input_shape(name, shape)
    for dim, (low, high) in args.dynamic_dims.items():
        config.set_dim_range(dim, low, high)
    return config


def _pinned_config(args: argparse.Namespace) -> Config:
    """The config of `args`, its artifact compiled (or found in the cache). Symbolic dims that
    --input-shape leaves open are pinned from the shapes of the --input arrays."""
    config = _config(args)
    try:
        config.artifact_path()
    except UnpinnedInputsError as err:
        if not args.input:
            raise
        signature = err.pinning.signature
        names = [i.name for i in signature.inputs if not i.dtype_only]
        for name, array in read_input_files(args.input, names).items():
            if name not in args.input_shapes:
                config.set_input_shape(name, array.shape)
        config.artifact_path()
    return config


def _file_name(tensor: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", tensor) + ".npy"


# -- commands ----------------------------------------------------------------------------------


def _compile(args: argparse.Namespace) -> int:
    from ember.engine.aot import Progress, compile_artifact, resolve_target
    from ember.passes.pipeline import with_memory_checks
    from ember.runtime.integrity import read_key

    target = resolve_target(args.target_cpu, args.threads)
    pipeline = pipeline_spec(ir_optim=not args.no_ir_optim)
    if args.checks:
        pipeline = with_memory_checks(pipeline)
    progress = Progress(quiet=args.quiet)
    sign_key = read_key(args.sign_key) if args.sign_key else None
    model = quantize_from_args(args, progress=not args.quiet) if args.int8 else args.model
    if args.dim_sizes:
        return _compile_variants(args, model, target, pipeline, progress, sign_key)
    build = compile_artifact(
        model,
        args.output,
        target=target,
        opt_level=args.opt_level,
        pipeline=pipeline,
        progress=progress,
        input_shapes=args.input_shapes or None,
        verify_each=args.verify_each or None,
        base_dir=Path(args.model).parent if args.int8 else None,
        # An unpinned symbolic batch: one program serving every batch, when provable.
        batch_polymorphic=True,
        dim_ranges=args.dynamic_dims or None,
        sign_key=sign_key,
        # A model whose symbolic dims compile once: one program for every shape, tried first.
        compile_once=True,
    )
    so = (build.path / "model.so").stat().st_size
    weights = (build.path / "weights.bin").stat().st_size
    print(
        f"wrote {build.path} (model.so {so / 1024:.0f} KiB, weights.bin "
        f"{weights / 2**20:.1f} MiB, cpu {target.cpu}, {target.threads} threads) "
        f"in {build.total_seconds:.2f} s"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    """Every check `ember.runtime.load` makes; for C callers, which cannot make them."""
    from ember.runtime.artifact import VariantArtifact, load
    from ember.runtime.integrity import read_key, resolve_key

    key = read_key(args.key) if args.key else resolve_key(None)
    loaded = load(args.model, threads=1, key=key)
    # A batch loop or a compile-once program is one artifact too (`path`, `info`).
    parts = list(loaded.variants.values()) if isinstance(loaded, VariantArtifact) else [loaded]
    for part in parts:
        library = part.info["files"]["model.so"]
        print(f"{part.path}: ok (code sha256 {library['code_sha256']})")
    print(
        f"{args.model}: signed by the key given"
        if key
        else f"{args.model}: signature not checked (no key)"
    )
    return 0


def _compile_variants(
    args: argparse.Namespace,
    model: Any,
    target: Any,
    pipeline: str,
    progress: Any,
    sign_key: bytes | None,
) -> int:
    from ember.engine.aot import compile_variants

    builds = compile_variants(
        model,
        args.output,
        args.dim_sizes,
        dim_ranges=args.dynamic_dims or None,
        input_shapes=args.input_shapes or None,
        progress=progress,
        target=target,
        opt_level=args.opt_level,
        pipeline=pipeline,
        verify_each=args.verify_each or None,
        sign_key=sign_key,
    )
    seconds = sum(b.total_seconds for b in builds)
    print(
        f"wrote {Path(args.output).absolute()} ({len(builds)} variants for "
        f"{args.dim_sizes}, cpu {target.cpu}, {target.threads} threads) in {seconds:.2f} s"
    )
    return 0


def _source_onnx(args: argparse.Namespace, document: dict) -> str | None:
    """The .onnx `args.model` is or was compiled from (--onnx overrides); None if not found."""
    path = getattr(args, "onnx", None) or (
        args.model if Path(args.model).is_file() else document.get("source", {}).get("path")
    )
    return str(path) if path and Path(path).is_file() else None


def _seeded_feeds(
    specs: Sequence[TensorSpec], onnx_path: str | None, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, int]]]:
    """Seeded inputs for `specs`, index inputs in the ranges the .onnx model accepts (see
    ember.engine.feeds), and those ranges. Without the .onnx, integer inputs get [0, 16)."""
    from ember.engine.feeds import index_ranges, random_feeds
    from ember.engine.shapes import read_model

    integers = [s.name for s in specs if np.issubdtype(numpy_dtype(s.dtype), np.integer)]
    ranges: dict[str, tuple[int, int]] = {}
    if integers and onnx_path:
        ranges = index_ranges(read_model(onnx_path), {s.name: s.shape for s in specs})
    elif integers:
        print(
            f"warning: no .onnx model to derive index ranges from: integer inputs {integers} "
            "are drawn from [0, 16); pass --onnx PATH or --input NAME=FILE.npy",
            file=sys.stderr,
        )
    return random_feeds(specs, seed, ranges), ranges


def _preview(array: np.ndarray, count: int = 6) -> str:
    """Shape, dtype, min/max/mean over the finite values (NaN/inf counted) and the first values."""
    line = f"shape {list(array.shape)} {array.dtype}"
    if array.size == 0:
        return line + " (empty)"
    flat = array.reshape(-1)
    numeric = flat.astype(np.float64) if flat.dtype != np.bool_ else flat.astype(np.int8)
    finite = numeric[np.isfinite(numeric)]
    if finite.size:
        line += f"  min {finite.min():.6g} max {finite.max():.6g} mean {finite.mean():.6g}"
    if finite.size < flat.size:
        line += f"  ({flat.size - finite.size} NaN/inf)"
    first = ", ".join(f"{v:.6g}" if np.issubdtype(flat.dtype, np.floating) else str(v)
                      for v in flat[:count].tolist())  # fmt: skip
    return line + f"  [{first}{', ...' if flat.size > count else ''}]"


def _run(args: argparse.Namespace) -> int:
    config = _pinned_config(args)
    executable = config.load()
    specs = executable.manifest.inputs
    if isinstance(executable, OnceProgram):  # one program for every shape: --input-shape's
        specs = _once_input_specs(executable, args.input_shapes)
    feeds = read_input_files(args.input, [s.name for s in specs])
    missing = [s for s in specs if s.name not in feeds]
    if missing and not args.random_inputs:
        names = [s.name for s in missing]
        raise InputError(f"no --input for {names} (or pass --random-inputs)")
    unsized = [s.name for s in missing if -1 in s.shape]
    if unsized:
        raise InputError(
            f"--random-inputs: inputs {unsized} have symbolic dims; give their shapes with "
            "--input-shape"
        )
    if missing:
        onnx_path = _source_onnx(args, read_manifest(config.artifact_path()))
        feeds |= _seeded_feeds(missing, onnx_path, args.seed)[0]
    outputs = executable.run(feeds)
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    for name, array in outputs.items():
        print(f"{name}: {_preview(array)}")
        if args.output_dir:
            path = Path(args.output_dir) / _file_name(name)
            np.save(path, array)
            print(f"  -> {path}")
    if args.npz:
        np.savez(args.npz, **outputs)
        print(f"wrote {len(outputs)} outputs to {args.npz}")
    return 0


def _once_input_specs(program: OnceProgram, pins: Mapping[str, Sequence[int]]) -> list[TensorSpec]:
    """The inputs of a program compiled once for every shape at the --input-shape pins; an
    input with a symbolic dim and no pin has shape -1 there (given by --input, or refused)."""
    program.check_shapes(
        {name: shape for name, shape in pins.items() if name in program.input_names}
    )
    return [
        TensorSpec(
            s.name,
            tuple(pins[s.name])
            if s.name in pins
            else tuple(-1 if isinstance(d, str | None) else d for d in dims),
            s.dtype,
        )
        for s, (_, dims) in zip(program.inputs, program.declared_inputs(), strict=True)
    ]


def _declared_inputs(model: str) -> list[tuple[str, list | None]]:
    """The declared (name, dims) of an .onnx model's or a multi-variant artifact's inputs."""
    from ember.engine.shapes import ModelSignature, read_model
    from ember.runtime.artifact import VARIANTS_FORMAT, read_variants_manifest

    if Path(model).is_dir():
        manifest = Path(model) / "manifest.json"
        if manifest.is_file() and f'"{VARIANTS_FORMAT}"' in manifest.read_text()[:4096]:
            return [(n, d) for n, d, _ in read_variants_manifest(model).inputs]
        from ember.runtime.polymorphic import POLYMORPHIC_KEY

        once = read_manifest(model).get("extra", {}).get(ONCE_KEY)
        if once is not None:  # compiled once for every shape: its declared dims
            return [
                (name, [d if isinstance(d, int) else _once_dim(d) for d in dims])
                for name, dims in once["inputs"].items()
            ]
        section = read_manifest(model).get("extra", {}).get(POLYMORPHIC_KEY)
        if section is not None:  # a batch-polymorphic artifact: its batch-1 shapes
            document = read_manifest(model)
            return [
                (i["name"], [section["dim"], *i["shape"][1:]] if i["name"] in section["inputs"]
                 else list(i["shape"]))
                for i in document["inputs"]
            ]  # fmt: skip
        raise InputError(
            f"--batch: {model} is an artifact of one static shape; give the .onnx model, or "
            "an artifact built with `ember compile --shapes batch=...`"
        )
    signature = ModelSignature.of(read_model(model))
    return [(i.name, None if i.dims is None else list(i.dims)) for i in signature.inputs
            if not i.dtype_only]  # fmt: skip


def _once_dim(dim: Mapping[str, Any]) -> str | None:
    """A dim of a compile-once section as declared: its name, or None for a product."""
    return dim["dims"][0] if dim["factor"] == 1 and len(dim["dims"]) == 1 else None


def _polymorphic_config(args: argparse.Namespace) -> Config | None:
    """The config of one batch-polymorphic program of `args.model` (None: the model is not
    proven batch-separable, or the artifact given is not polymorphic; the reason on stderr)."""
    from ember.runtime.polymorphic import BatchLoop

    config = _config(args)
    config.enable_batch_polymorphism()
    try:
        loaded = config.load()
    except UnpinnedInputsError as err:
        reason = str(err).rpartition("(the batch is not polymorphic: ")[2].rstrip(")")
        print(f"note: one program per batch size: {reason}", file=sys.stderr)
        return None
    # A batch loop, or a program compiled once for every shape (an artifact of one).
    return config if isinstance(loaded, BatchLoop | OnceProgram) else None


def _bench_batches(args: argparse.Namespace) -> int:
    """`ember bench --batch 1,4,16`: each batch size compiled (or its variant picked) and
    timed like one bench, latency and throughput per size."""
    from ember.tools import bench

    if args.input:
        raise InputError("--batch draws seeded inputs of each size; it takes no --input")
    declared = _declared_inputs(args.model)
    polymorphic = None if args.per_batch else _polymorphic_config(args)
    rows = []
    for batch in args.batch:
        shapes = bench.batch_shapes(declared, batch, args.input_shapes)
        if polymorphic is not None:
            config = polymorphic  # one program for every batch size
            executable = config.load()
            specs = [
                TensorSpec(s.name, tuple(shapes[s.name]), s.dtype)
                for s in executable.manifest.inputs
            ]
        else:
            config = _config(args)
            for name, shape in shapes.items():
                config.set_input_shape(name, shape)
            executable = config.load()  # compiled (once, cached) outside the measurement;
            # bench loads it again inside, as `ember bench` does, to measure its memory
            specs = executable.manifest.inputs
        threads = config.cpu_math_library_num_threads()
        onnx_path = _source_onnx(args, executable.info)
        feeds = _seeded_feeds(specs, onnx_path, args.seed)[0]
        results = [bench.bench_ember(config.load, feeds, threads, args.runs, args.warmup)]
        if args.compare == "onnxruntime" and onnx_path is not None:
            results.append(
                bench.bench_onnxruntime(onnx_path, feeds, threads, args.runs, args.warmup)
            )
        rows.append((batch, results))
    if args.json:
        document = [
            {"batch": batch, "engines": [bench.result_json(r) for r in results]}
            for batch, results in rows
        ]
        whole = {"model": str(args.model), "batch_polymorphic": polymorphic is not None}
        print(json.dumps(whole | {"batches": document}, indent=2))
        return 0
    how = "one batch-polymorphic program" if polymorphic is not None else "a program per size"
    print(f"{args.model}: {args.runs} runs after {args.warmup} warm-up per batch size ({how})")
    print(f"host: {host_cpu_description()}; {os.cpu_count()} cores")
    print(bench.format_batch_results(rows))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from ember.tools import bench

    if args.batch:
        if args.breakdown:
            raise InputError("--breakdown profiles one input shape: run it without --batch")
        return _bench_batches(args)

    # Compiles (once, cached) outside the measurement.
    config = _pinned_config(args)
    threads = config.cpu_math_library_num_threads()
    document = read_manifest(config.artifact_path())
    specs = Manifest.from_dict(document).inputs
    given = read_input_files(args.input, [s.name for s in specs])
    onnx_path = _source_onnx(args, document)
    if args.onnx and onnx_path is None:
        raise FileNotFoundError(f"--onnx {args.onnx}: no such file")
    seeded, ranges = _seeded_feeds([s for s in specs if s.name not in given], onnx_path, args.seed)
    feeds = seeded | given
    ember_result = bench.bench_ember(config.load, feeds, threads, args.runs, args.warmup)
    results = [ember_result]
    compare_error: str | None = None
    errors: dict[str, Error | None] | None = None
    if args.compare == "onnxruntime":
        if onnx_path is None:
            raise InputError("--compare onnxruntime needs the .onnx model: pass --onnx PATH")
        compiled_from = document.get("source", {}).get("sha256")
        if compiled_from and sha256_file(onnx_path) != compiled_from:
            print(
                f"warning: {onnx_path} is not the model {args.model} was compiled from",
                file=sys.stderr,
            )
        if not bench.onnxruntime_available():
            compare_error = "onnxruntime is not installed"
        else:
            try:
                other = bench.bench_onnxruntime(onnx_path, feeds, threads, args.runs, args.warmup)
            except Exception as error:  # onnxruntime has exception types of its own
                compare_error = bench.one_line(error)
            else:
                results.append(other)
                errors = bench.output_errors(ember_result.outputs, other.outputs)
    breakdown = _bench_breakdown(args, onnx_path, feeds, threads, errors is not None)
    if args.json:
        report = _bench_json(args, document, specs, given, ranges, results, compare_error, errors)
        if breakdown is not None:
            report["breakdown"] = bench.breakdown_json(breakdown, args.top)
        print(json.dumps(report, indent=2))
        return 0
    shapes = ", ".join(f"{s.name} {'x'.join(map(str, s.shape))}" for s in specs)
    print(f"{args.model}: {args.runs} runs after {args.warmup} warm-up, inputs {shapes}")
    print(f"host: {host_cpu_description()}; {os.cpu_count()} cores")
    print(bench.format_results(results))
    if compare_error is not None:
        print(f"{args.compare}: failed, comparison skipped: {compare_error}")
    if errors is not None:
        print(bench.format_accuracy(errors, args.compare))
    if breakdown is not None:
        print()
        print(bench.format_breakdown(breakdown, args.top))
    return 0


def _bench_breakdown(
    args: argparse.Namespace,
    onnx_path: str | None,
    feeds: dict[str, np.ndarray],
    threads: int,
    with_onnxruntime: bool,
) -> Any:
    """`--breakdown`: ember's time per kernel call (and onnxruntime's per node when it was
    compared successfully); None without the option."""
    if not args.breakdown:
        return None
    if onnx_path is None:
        raise InputError(
            "--breakdown compiles an instrumented build of the .onnx model: pass --onnx PATH"
        )
    from ember.engine.aot import resolve_target
    from ember.tools import bench

    target = resolve_target(args.target_cpu, threads)
    # A second compile of the model, as long as the first one: say why the wait.
    log.info("--breakdown: compiling an instrumented build of %s", onnx_path)
    breakdown = bench.ember_breakdown(
        onnx_path, feeds, threads, args.runs, args.warmup, target, args.opt_level
    )
    if with_onnxruntime:
        try:
            profile = bench.onnxruntime_breakdown(onnx_path, feeds, threads, args.runs, args.warmup)
        except Exception as error:  # onnxruntime has exception types of its own
            log.warning("onnxruntime profile skipped: %s", bench.one_line(error))
        else:
            breakdown = bench.with_onnxruntime(breakdown, profile)
    return breakdown


def _bench_json(
    args: argparse.Namespace,
    document: dict,
    specs: Sequence[TensorSpec],
    given: dict[str, np.ndarray],
    ranges: dict[str, tuple[int, int]],
    results: list[BenchResult],
    compare_error: str | None,
    errors: dict[str, Error | None] | None,
) -> dict[str, object]:
    """`ember bench --json`'s document (its schema is in docs/aot.md)."""
    from ember.tools import bench

    target = document.get("target", {})
    engines: list[dict[str, object]] = [bench.result_json(r) for r in results]
    if compare_error is not None:
        engines.append({"engine": args.compare, "error": compare_error})
    return {
        "model": str(args.model),
        "runs": args.runs,
        "warmup": args.warmup,
        "seed": args.seed,
        "threads": results[0].threads,
        "inputs": [
            {
                "name": s.name,
                "shape": list(s.shape),
                "dtype": s.dtype,
                "source": "file" if s.name in given else "seeded",
                "range": list(ranges[s.name]) if s.name in ranges and s.name not in given else None,
            }
            for s in specs
        ],
        "machine": {
            "cpu": bench.cpu_name(),
            "microarchitecture": host_microarchitecture(),
            "cores": os.cpu_count(),
            "arch": target.get("arch"),
            "target_cpu": target.get("cpu"),
            "vector_bits": 32 * int(target.get("vector_width", 0)) or None,
            "isa": bench.simd_features(target.get("required_features", [])),
        },
        "engines": engines,
        "accuracy": None
        if errors is None
        else {"reference": args.compare, "outputs": bench.errors_json(errors)},
    }


# Subcommands with parsers of their own: everything after the name is handed over untouched.
_DELEGATED = {
    "opt": "ember.tools.opt",
    "conformance": "ember.tools.conformance",
    "fuzz": "ember.tools.fuzz",
    "check": "ember.tools.check",
    "graph": "ember.tools.graph_view",
    "view": "ember.tools.graph_view",
    "profile": "ember.tools.profile",
    "quantize": "ember.tools.quantize",
    "cache": "ember.tools.cache",
    "serve": "ember.tools.serve",
}


def _delegate(command: str, argv: list[str]) -> int:
    import importlib

    return int(importlib.import_module(_DELEGATED[command]).main(argv) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else ""
    commands = {"compile": _compile, "run": _run, "bench": _bench, "verify": _verify}
    # User errors (ember's refusals, unreadable files, bad arguments) are one line on stderr
    # and exit status 1; anything else is a bug in ember and keeps its traceback.
    try:
        with restored_logging():
            if command in _DELEGATED:
                return _delegate(command, argv[1:])
            args = _parser().parse_args(argv)
            apply_verbosity(args)
            return commands[args.command](args)
    except (EmberError, OSError, ValueError, RuntimeError) as error:
        print(f"ember {command}: error: {_message(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ember {command}: interrupted", file=sys.stderr)
        return 130


def _message(error: BaseException) -> str:
    """`error` as one line: ember's messages are whole sentences, so all their lines are kept,
    joined (a foreign engine's error is cut to its reason instead: `bench.one_line`)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
