"""`ember quantize` and the --int8 options of `ember compile`: the command line of
`ember.quantize` (engine/quantize.py).

    ember quantize model.onnx -o model.int8.onnx --calib calib/ [--method entropy]
    ember quantize bert.onnx -o bert.int8.onnx --dynamic
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import onnx

from ember.engine.feeds import seeded_inputs
from ember.engine.quantize import (
    RANDOM_BATCHES,
    accuracy_report,
    calibration_feeds,
    count_quantized,
    format_accuracy,
    load_with_weights,
    quantize,
)
from ember.engine.shapes import read_model
from ember.runtime.errors import EmberError
from ember.tools.options import add_input_shape_option
from ember.tools.verbosity import apply_verbosity, verbosity_options


def add_quantize_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The options `ember quantize` and `ember compile --int8` share."""
    parser.add_argument(
        "--calib",
        metavar="DIR",
        help="calibration data: a folder of .npz (one batch each, arrays named after the "
        "inputs) or .npy files (single-input models); default: seeded random data (warned)",
    )
    parser.add_argument(
        "--method", default="minmax", help="calibration: minmax (default), percentile or entropy"
    )
    parser.add_argument(
        "--percentile", type=float, default=99.999, help="for --method percentile (of 100)"
    )
    parser.add_argument("--dynamic", action="store_true", help="dynamic quantization of MatMuls")
    parser.add_argument(
        "--per-tensor", action="store_true", help="one weight scale per tensor, not per channel"
    )
    parser.add_argument("--activation-type", default="u8", help="u8 (default) or s8")
    parser.add_argument(
        "--reduce-range",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="7-bit weights ([-64, 64]); default: on when the target cpu has no VNNI (its "
        "AVX2 int8 kernel would split every 8-bit weight in two), off otherwise",
    )
    parser.add_argument(
        "--keep-float",
        action="append",
        default=[],
        metavar="NODE_OR_OP",
        help="a node name or an op type to leave in float (repeatable)",
    )


def quantize_from_args(args: argparse.Namespace, progress: bool = True) -> onnx.ModelProto:
    """`quantize` with the options of `add_quantize_options` (and --input-shape)."""
    proto = read_model(args.model)
    op_types = {n.op_type for n in proto.graph.node}
    keep = list(args.keep_float)
    return quantize(
        args.model,
        calibration=args.calib,
        dynamic=args.dynamic,
        method=args.method,
        percentile=args.percentile,
        per_channel=not args.per_tensor,
        activation_type=args.activation_type,
        reduce_range=args.reduce_range,
        target_cpu=getattr(args, "target_cpu", "host"),
        keep_float_nodes=[k for k in keep if k not in op_types],
        keep_float_op_types=[k for k in keep if k in op_types],
        input_shapes=args.input_shapes or None,
        threads=getattr(args, "threads", None),
        seed=getattr(args, "seed", 0),
        progress=progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        parents=[verbosity_options()],
        prog="ember quantize",
        description="Post-training int8 quantization: write a QDQ ONNX model "
        "(see docs/quantization.md).",
    )
    parser.add_argument("model", help="the float .onnx model")
    parser.add_argument("-o", "--output", required=True, help="the quantized .onnx to write")
    add_quantize_options(parser)
    add_input_shape_option(parser)
    parser.add_argument(
        "--target-cpu",
        default="host",
        help="the cpu the model will run on (host, or an LLVM cpu name such as x86-64-v3): "
        "without VNNI, 7-bit weights by default (see --reduce-range)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random calibration data")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--no-report", action="store_true", help="skip the accuracy report (saves two compiles)"
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    apply_verbosity(args)
    try:
        quantized = quantize_from_args(args, progress=not args.quiet)
        onnx.save(quantized, args.output)
        counts = ", ".join(f"{n} {op}" for op, n in count_quantized(quantized).items())
        size = Path(args.output).stat().st_size
        print(f"wrote {args.output} ({size / 1024:.0f} KiB; {counts or 'nothing quantized'})")
        if not args.no_report:
            # On the calibration data (at most RANDOM_BATCHES batches of it), else on seeded
            # random inputs (the warning was given when calibrating).
            proto = load_with_weights(args.model)
            shapes = args.input_shapes or None
            if args.calib:
                feeds = list(calibration_feeds(proto, args.calib, shapes))[:RANDOM_BATCHES]
                source = f"{len(feeds)} batches of {args.calib}"
            else:
                feeds = [seeded_inputs(proto, args.seed + i, shapes) for i in range(2)]
                source = f"{len(feeds)} batches of seeded random inputs"
            report = accuracy_report(proto, quantized, feeds, shapes, args.threads)
            print(format_accuracy(report, source))
    except (EmberError, OSError, ValueError) as error:
        message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"ember quantize: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
