"""The `ember` command: compile, run, bench, opt (the pass-pipeline debugger), conformance.

    ember compile model.onnx -o model.ember [--opt-level 3] [--target-cpu host] [--threads N]
    ember run model.ember --input data=x.npy [--output-dir out/]
    ember bench model.onnx --threads 2 --runs 50 --compare onnxruntime
    ember opt ...                        (see `ember opt --help`)
    ember conformance ...                (see `ember conformance --help`)
    ember cache info|list|clear          (see `ember cache --help`)

`run` and `bench` take an artifact directory or an .onnx file; an .onnx file is compiled once
and cached (as `ember.Config` does). Inputs with symbolic dims (a batch, a sequence length) are
pinned with `--input-shape NAME=1x3x224x224` (repeatable); `run` and `bench` also pin them from
the shapes of the `--input` arrays.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ember import __version__
from ember.runtime.artifact import read_manifest, sha256_file
from ember.runtime.executable import Manifest
from ember.tools.engine import Config, pipeline_spec
from ember.tools.shapes import UnpinnedInputsError, add_input_shape_option


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


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


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="an input from a .npy file (repeat per input; NAME= may be omitted for one input)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ember", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"ember {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    compile_ = commands.add_parser("compile", help="compile an ONNX model to an artifact directory")
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
    compile_.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    compile_.add_argument("-v", "--verbose", action="store_true", help="print pass timings")

    run = commands.add_parser("run", help="run an artifact or .onnx model on .npy inputs")
    run.add_argument("model", help="artifact directory or .onnx file")
    _add_inputs(run)
    run.add_argument("--random-inputs", action="store_true", help="seeded random missing inputs")
    run.add_argument("--output-dir", help="write each output to OUTPUT_DIR/<name>.npy")
    _add_build_options(run)

    bench = commands.add_parser("bench", help="measure latency, throughput and peak memory")
    bench.add_argument("model", help="artifact directory or .onnx file")
    _add_inputs(bench)
    bench.add_argument("--runs", type=_positive, default=50)
    bench.add_argument("--warmup", type=int, default=5)
    bench.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    bench.add_argument(
        "--compare", choices=["onnxruntime"], help="also time this engine on the same inputs"
    )
    bench.add_argument(
        "--onnx", help="the .onnx for --compare when MODEL is an artifact (default: its source)"
    )
    _add_build_options(bench)

    commands.add_parser("opt", help="run and debug pass pipelines (see `ember opt --help`)")
    commands.add_parser(
        "conformance", help="ONNX node conformance suite (see `ember conformance --help`)"
    )
    commands.add_parser("cache", help="show or clear the on-disk cache (see `ember cache --help`)")
    return parser


# -- shared: what to load and with which inputs ------------------------------------------------


def _config(args: argparse.Namespace) -> Config:
    config = Config(args.model)
    if args.threads:
        config.set_cpu_math_library_num_threads(args.threads)
    config.set_opt_level(args.opt_level)
    config.set_target_cpu(args.target_cpu)
    config.switch_progress(True)
    for name, shape in args.input_shapes.items():
        config.set_input_shape(name, shape)
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
        for name, array in _read_inputs(names, args.input).items():
            if name not in args.input_shapes:
                config.set_input_shape(name, array.shape)
        config.artifact_path()
    return config


def _read_inputs(names: list[str], items: list[str]) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for item in items:
        name, sep, path = item.rpartition("=")
        if not sep:
            if len(names) != 1:
                raise ValueError(f"--input {item}: the model has inputs {names}; use NAME=FILE")
            name = names[0]
        if name not in names:
            raise ValueError(f"--input {item}: the model has no input '{name}'; inputs: {names}")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"--input {item}: cannot read {path} ({e})") from None
    return feeds


def _file_name(tensor: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", tensor) + ".npy"


# -- commands ----------------------------------------------------------------------------------


def _compile(args: argparse.Namespace) -> int:
    from ember.passes.pipeline import with_memory_checks
    from ember.tools.aot import Progress, compile_artifact, resolve_target

    target = resolve_target(args.target_cpu, args.threads)
    pipeline = pipeline_spec(ir_optim=not args.no_ir_optim)
    if args.checks:
        pipeline = with_memory_checks(pipeline)
    progress = Progress(quiet=args.quiet)
    build = compile_artifact(
        args.model,
        args.output,
        target=target,
        opt_level=args.opt_level,
        pipeline=pipeline,
        progress=progress,
        input_shapes=args.input_shapes or None,
        verify_each=args.verify_each or None,
    )
    if args.verbose and build.report is not None:
        for name, seconds in build.stage_seconds.items():
            print(f"  {name:<36} {seconds:8.3f} s", file=sys.stderr)
        for name, seconds in build.report.pass_seconds.items():
            print(f"    pass {name:<31} {seconds:8.3f} s", file=sys.stderr)
    so = (build.path / "model.so").stat().st_size
    weights = (build.path / "weights.bin").stat().st_size
    print(
        f"wrote {build.path} (model.so {so / 1024:.0f} KiB, weights.bin "
        f"{weights / 2**20:.1f} MiB, cpu {target.cpu}, {target.threads} threads) "
        f"in {build.total_seconds:.2f} s"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from ember.tools.bench import random_feeds

    executable = _pinned_config(args).load()
    specs = executable.manifest.inputs
    feeds = _read_inputs([s.name for s in specs], args.input)
    missing = [s for s in specs if s.name not in feeds]
    if missing and not args.random_inputs:
        names = [s.name for s in missing]
        raise ValueError(f"no --input for {names} (or pass --random-inputs)")
    feeds |= random_feeds(missing)
    outputs = executable.run(feeds)
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    for name, array in outputs.items():
        line = f"{name}: shape {list(array.shape)} {array.dtype}"
        if args.output_dir:
            path = Path(args.output_dir) / _file_name(name)
            np.save(path, array)
            line += f" -> {path}"
        print(line)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from ember.tools import bench

    # Compiles (once, cached) outside the measurement.
    config = _pinned_config(args)
    threads = config.cpu_math_library_num_threads()
    document = read_manifest(config.artifact_path())
    specs = Manifest.from_dict(document).inputs
    feeds = bench.random_feeds(specs, args.seed) | _read_inputs([s.name for s in specs], args.input)
    results = [bench.bench_ember(config.load, feeds, threads, args.runs, args.warmup)]
    if args.compare == "onnxruntime":
        onnx_path = args.onnx or (
            args.model if Path(args.model).is_file() else document.get("source", {}).get("path")
        )
        if not onnx_path or not Path(onnx_path).is_file():
            raise ValueError("--compare onnxruntime needs the .onnx model: pass --onnx PATH")
        compiled_from = document.get("source", {}).get("sha256")
        if compiled_from and sha256_file(onnx_path) != compiled_from:
            print(
                f"warning: {onnx_path} is not the model {args.model} was compiled from",
                file=sys.stderr,
            )
        if not bench.onnxruntime_available():
            print("onnxruntime is not installed: comparison skipped", file=sys.stderr)
        else:
            results.append(
                bench.bench_onnxruntime(onnx_path, feeds, threads, args.runs, args.warmup)
            )
    shapes = ", ".join(f"{s.name} {'x'.join(map(str, s.shape))}" for s in specs)
    print(f"{args.model}: {args.runs} runs after {args.warmup} warm-up, inputs {shapes}")
    print(bench.format_results(results))
    return 0


# Subcommands with parsers of their own: everything after the name is handed over untouched.
_DELEGATED = {
    "opt": "ember.tools.opt",
    "conformance": "ember.tools.conformance",
    "cache": "ember.tools.cache",
}


def _delegate(command: str, argv: list[str]) -> int:
    import importlib

    return int(importlib.import_module(_DELEGATED[command]).main(argv) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        return _delegate(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    commands = {"compile": _compile, "run": _run, "bench": _bench}
    try:
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"ember {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
