"""`ember conformance`: select cases, run them, write the report (and docs/ops.md, a CI subset)."""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from ember.tools.conformance import data as suite_data
from ember.tools.conformance.report import (
    DOCS_PATH,
    build_report,
    ci_subset,
    format_report,
    render_docs,
    with_summaries,
)
from ember.tools.conformance.runner import RunOptions, run_cases
from ember.tools.options import add_input_shape_option
from ember.tools.verbosity import apply_verbosity, verbosity_options


def select_cases(
    catalogue: dict[str, dict[str, Any]],
    pattern: str | None = None,
    ops: Sequence[str] = (),
    names: Sequence[str] = (),
) -> list[str]:
    chosen = sorted(catalogue)
    if names:
        unknown = sorted(set(names) - set(catalogue))
        if unknown:
            raise SystemExit(f"unknown test case(s): {', '.join(unknown)}")
        chosen = sorted(set(names))
    if ops:
        wanted = set(ops)
        chosen = [n for n in chosen if catalogue[n]["op"] in wanted]
    if pattern:
        regex = re.compile(pattern)
        chosen = [n for n in chosen if regex.search(n)]
    return chosen


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        parents=[verbosity_options()],
        prog="ember conformance",
        description="Run ONNX's node conformance tests through ember and report per op.",
    )
    parser.add_argument("-k", "--filter", help="regex: run only cases whose name matches")
    parser.add_argument("--op", action="append", default=[], help="run only this op's cases")
    parser.add_argument("--cases", type=Path, help="file listing case names, one a line")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--json", type=Path, help="report path (default: in the cache dir)")
    parser.add_argument("--from-json", type=Path, help="render an existing report, run nothing")
    parser.add_argument(
        "--write-docs",
        nargs="?",
        const=DOCS_PATH,
        type=Path,
        help=f"write the supported-ops page (default {DOCS_PATH})",
    )
    parser.add_argument(
        "--write-subset",
        type=Path,
        help="write the passing cases (at most --per-op per op) as a CI regression list",
    )
    parser.add_argument("--per-op", type=int, default=8, help="cases per op in --write-subset")
    parser.add_argument("--regenerate-data", action="store_true", help="rewrite the test data")
    parser.add_argument("--pipeline", help="pass pipeline for ember.compile (default: its own)")
    add_input_shape_option(parser)
    freeze = parser.add_mutually_exclusive_group()
    freeze.add_argument(
        "--freeze",
        action="store_true",
        help="give shape operands (Reshape's shape, axes, ...) as initializers, as real models "
        "do (the regression baselines in tests/conformance are recorded this way)",
    )
    freeze.add_argument(
        "--no-freeze",
        action="store_true",
        help="feed every operand as a graph input, as ONNX's runner does (the default)",
    )
    parser.add_argument("--groups", type=int, default=25, help="failure groups to print")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    apply_verbosity(args)
    if args.from_json:
        report = json.loads(args.from_json.read_text())
    else:
        data = suite_data.data_dir(regenerate=args.regenerate_data)
        catalogue = suite_data.load_catalogue(data)
        listed = args.cases.read_text().split() if args.cases else []
        names = select_cases(catalogue, args.filter, args.op, listed)
        backend: dict[str, Any] = {"threads": 1}
        if args.pipeline:
            backend["pipeline"] = args.pipeline
        if args.input_shapes:
            backend["input_shapes"] = args.input_shapes
        options = RunOptions(
            jobs=args.jobs, timeout=args.timeout, backend=backend, freeze=args.freeze
        )
        done = [0]
        started = time.monotonic()

        def progress(name: str, result: dict[str, Any]) -> None:
            done[0] += 1
            if not args.quiet:
                detail = "" if result["status"] == "passed" else f" ({result.get('category')})"
                print(f"[{done[0]}/{len(names)}] {name}: {result['status']}{detail}", flush=True)

        results = run_cases(names, data, catalogue, options, progress)
        settings = {
            "jobs": args.jobs,
            "timeout": args.timeout,
            "freeze_shape_operands": args.freeze,
            "input_shapes": backend.get("input_shapes", {}),
            "data": str(data),
        }
        settings["seconds"] = round(time.monotonic() - started, 1)
        report = build_report(results, catalogue, settings)
        out = args.json or data.parent / f"report-onnx-{onnx.__version__}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(with_summaries(report), indent=1))
        print(f"report written to {out} ({settings['seconds']} s)\n")
    print(format_report(report, args.groups))
    if args.write_docs:
        args.write_docs.parent.mkdir(parents=True, exist_ok=True)
        args.write_docs.write_text(render_docs(report))
        print(f"wrote {args.write_docs}")
    if args.write_subset:
        subset = ci_subset(report, args.per_op)
        args.write_subset.write_text("".join(f"{name}\n" for name in subset))
        print(f"wrote {len(subset)} case names to {args.write_subset}")
    return 0
