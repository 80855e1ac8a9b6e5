"""ONNX node conformance: write the suite's data, run every case through ember, report per op.

    ember conformance                         # all 1,884 node cases, 2 worker processes
    ember conformance -k "relu|conv"          # cases whose name matches a regex
    ember conformance --write-docs            # also regenerate docs/ops.md from the report
    ember conformance --from-json report.json --write-docs   # re-render without re-running
    ember conformance --input-shape x=2x3     # pin input 'x' in every case that has one
    ember conformance --freeze                # shape operands as initializers (see SHAPE_OPERANDS)
    python -m ember.tools.conformance ...     # the same without the console script

The onnx wheel ships the node-test generators but not their data, so the first run writes each
case's `model.onnx` and `test_data_set_*/{input,output}_*.pb` under
`$EMBER_CACHE_DIR/onnx-node-tests/onnx-<version>/` (default `~/.cache/ember`), plus a
`cases.json` catalogue mapping each case to the op it tests. A new onnx version gets a new
directory.

Each case is compiled by `EmberBackend.prepare` and run on native code in a worker process; the
outputs are compared by ONNX's own `Runner.assert_similar_outputs` (rtol 1e-3, atol 1e-7, the
tolerances ONNX's runner applies to on-disk node tests). A worker that crashes or exceeds the
per-case timeout is replaced and the case is recorded as crashed, so one case never stops a run.

Statuses: passed; failed (ran, wrong shape/dtype/values); errored (did not compile or raised
while running); crashed (the process died or hung).

A case whose inputs have symbolic dims is compiled for its test data's shapes on the first run
(EmberBackend's shape specialisation), unless `--input-shape` pins them. Every operand is a
graph input by default, as ONNX's runner gives it: an op whose shape operand comes from one is
compiled for the test data's value of it (value specialisation, tools/specialize.py).

Outcomes, what a user of ember would see (`outcome()`): passed; refused (a clear ember error
naming the op: unsupported op or variant, invalid model, a kernel's run-time check); values
differ (ran with the right shapes and types but wrong numbers: a silent wrong answer, the worst
outcome); wrong output (wrong shape, dtype or kind of output); internal error (ember broke while
compiling or running: a bug, not a refusal); crashed.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ember.runtime.cache import touch
from ember.tools.shapes import add_input_shape_option, freeze_inputs

RTOL = 1e-3
ATOL = 1e-7
STATUSES = ("passed", "failed", "errored", "crashed")
OUTCOMES = ("passed", "refused", "values differ", "wrong output", "internal error", "crashed")
# Categories of `errored` cases that are ember refusing the model with a clear error.
REFUSALS = ("unsupported-op", "unsupported-variant", "frontend-error", "run-refused")
CATALOGUE = "cases.json"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DOCS_PATH = PACKAGE_ROOT / "docs" / "ops.md"
# An op is listed as supported in docs/ops.md when at least this share of its cases pass.
MOSTLY = 0.5

# ONNX element type names in messages; blanked so that one dtype gap is one failure group.
_ONNX_TYPE = re.compile(
    r"\b(?:U?INT(?:2|4|8|16|32|64)|FLOAT(?:16|8\w*|4\w*)?|BFLOAT16|DOUBLE|BOOL|STRING|COMPLEX\d+"
    r"|u?int(?:2|4|8|16|32|64)|b?float(?:16|32|64|8_\w+|4_\w+))\b"
)
_EXPANDED = re.compile(r"^(?P<base>.+)_expanded(?:_ver\d+)?$")

# ---------------------------------------------------------------------------------------------
# Test data


def cache_root() -> Path:
    from ember.runtime.cache import cache_root

    return cache_root() / "onnx-node-tests"


def data_dir(root: Path | None = None, regenerate: bool = False) -> Path:
    """The node-test data for the installed onnx version, written on first use."""
    root = root or cache_root()
    target = root / f"onnx-{onnx.__version__}"
    if (target / CATALOGUE).exists() and not regenerate:
        touch(target)  # its last use, for `ember cache list` and `clear --older-than`
        return target
    root.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so concurrent runs never see half a suite.
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        write_node_tests(staging)
        if target.exists():
            shutil.rmtree(target)
        try:
            staging.rename(target)
        except OSError:
            if not (target / CATALOGUE).exists():  # another process won the race otherwise
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for stale in root.glob("onnx-*"):
        if stale != target:
            shutil.rmtree(stale, ignore_errors=True)
    return target


def _value_proto(value: Any, type_proto: onnx.TypeProto, name: str) -> bytes:
    if isinstance(value, onnx.TensorProto):
        return value.SerializeToString()
    if type_proto.HasField("sequence_type"):
        return numpy_helper.from_list(value, name).SerializeToString()
    if type_proto.HasField("optional_type"):
        return numpy_helper.from_optional(value, name).SerializeToString()
    if type_proto.HasField("map_type"):
        return numpy_helper.from_dict(value, name).SerializeToString()
    return numpy_helper.from_array(np.asarray(value), name).SerializeToString()


def _load_value(path: Path, type_proto: onnx.TypeProto) -> Any:
    raw = path.read_bytes()
    if type_proto.HasField("sequence_type"):
        seq = onnx.SequenceProto()
        seq.ParseFromString(raw)
        return numpy_helper.to_list(seq)
    if type_proto.HasField("optional_type"):
        opt = onnx.OptionalProto()
        opt.ParseFromString(raw)
        return numpy_helper.to_optional(opt)
    if type_proto.HasField("map_type"):
        mapping = onnx.MapProto()
        mapping.ParseFromString(raw)
        return numpy_helper.to_dict(mapping)
    tensor = onnx.TensorProto()
    tensor.ParseFromString(raw)
    return numpy_helper.to_array(tensor)


def write_node_tests(dest: Path, cases: Sequence[Any] | None = None) -> dict[str, dict[str, Any]]:
    """Write ONNX's node test cases (default: all of them) under `dest`, with a catalogue."""
    import warnings

    import onnx.backend.test.case.node as node_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators overflow casts on purpose
        cases = list(node_cases.collect_testcases() if cases is None else cases)
    tested_nodes: dict[str, onnx.NodeProto] = node_cases._existing_names
    catalogue: dict[str, dict[str, Any]] = {}
    for case in cases:
        match = _EXPANDED.match(case.name)
        base = match["base"] if match and case.name not in tested_nodes else case.name
        node = tested_nodes.get(base)
        if node is None:  # hand-made cases: the op is the model's only (first) node
            node = case.model.graph.node[0]
        catalogue[case.name] = {
            "op": _op_label(node.domain, node.op_type),
            "expanded": base != case.name,
            "rtol": case.rtol,
            "atol": case.atol,
        }
        case_dir = dest / case.name
        case_dir.mkdir(parents=True)
        (case_dir / "model.onnx").write_bytes(case.model.SerializeToString())
        graph = case.model.graph
        for index, (inputs, outputs) in enumerate(case.data_sets):
            set_dir = case_dir / f"test_data_set_{index}"
            set_dir.mkdir()
            for j, value in enumerate(inputs):
                info = graph.input[j]
                (set_dir / f"input_{j}.pb").write_bytes(_value_proto(value, info.type, info.name))
            for j, value in enumerate(outputs):
                info = graph.output[j]
                (set_dir / f"output_{j}.pb").write_bytes(_value_proto(value, info.type, info.name))
    meta = {"onnx_version": onnx.__version__, "cases": catalogue}
    (dest / CATALOGUE).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return catalogue


def _op_label(domain: str, op_type: str) -> str:
    return op_type if domain in ("", "ai.onnx") else f"{domain}.{op_type}"


def load_catalogue(data: Path) -> dict[str, dict[str, Any]]:
    return json.loads((data / CATALOGUE).read_text())["cases"]


def load_case(case_dir: Path) -> tuple[onnx.ModelProto, list[tuple[list[Any], list[Any]]]]:
    """A case's model and its data sets, each (inputs, expected outputs) in graph order."""
    model = onnx.load(str(case_dir / "model.onnx"))
    data_sets = []
    for set_dir in sorted(case_dir.glob("test_data_set_*")):
        n_in = len(list(set_dir.glob("input_*.pb")))
        n_out = len(list(set_dir.glob("output_*.pb")))
        inputs = [
            _load_value(set_dir / f"input_{i}.pb", model.graph.input[i].type) for i in range(n_in)
        ]
        outputs = [
            _load_value(set_dir / f"output_{i}.pb", model.graph.output[i].type)
            for i in range(n_out)
        ]
        data_sets.append((inputs, outputs))
    return model, data_sets


# ---------------------------------------------------------------------------------------------
# Shape operands
#
# Node tests feed every operand as a graph input, including those that fix an output's shape
# (Reshape's shape, Slice's starts, a reduction's axes) or a quantizer's parameters. Real models
# carry these as initializers, and ember compiles static shapes, so by default the runner turns
# the graph inputs feeding these positions into initializers holding the test's values (as
# onnx-mlir's backend tests do with CONSTANT_INPUT). The data operands stay runtime inputs.
# `ember conformance` runs without this by default (every operand a graph input, as ONNX's
# runner gives them: ember specialises on the values of shape operands, tools/specialize.py);
# `--freeze` and RunOptions' default (the regression baselines) freeze them; every case
# records what it froze.

SHAPE_OPERANDS: dict[str, tuple[int, ...]] = {
    "AffineGrid": (1,),
    "CenterCropPad": (1, 2),
    "Col2Im": (1, 2),
    "Compress": (1,),
    "ConstantOfShape": (0,),
    "CumProd": (1,),
    "CumSum": (1,),
    "DFT": (1, 2),
    "DequantizeLinear": (1, 2),
    "Dropout": (1, 2),
    "Expand": (1,),
    "MaxUnpool": (2,),
    "OneHot": (1,),
    "Pad": (1, 2, 3),
    "QuantizeLinear": (1, 2),
    "Range": (0, 1, 2),
    "Reshape": (1,),
    "Resize": (1, 2, 3),
    "Slice": (1, 2, 3, 4),
    "Split": (1,),
    "Squeeze": (1,),
    "Tile": (1,),
    "TopK": (1,),
    "Trilu": (1,),
    "Unsqueeze": (1,),
    "Upsample": (1,),
    **{
        f"Reduce{kind}": (1,)
        for kind in ("L1", "L2", "LogSum", "LogSumExp", "Max", "Mean", "Min", "Prod", "Sum")
    },
    "ReduceSumSquare": (1,),
}


def freeze_shape_operands(
    model: onnx.ModelProto, inputs: list[Any]
) -> tuple[onnx.ModelProto, list[Any], list[str]]:
    """Graph inputs in SHAPE_OPERANDS positions become initializers holding `inputs`' values."""
    graph_inputs = [i.name for i in model.graph.input]
    wanted = {
        node.input[index]
        for node in model.graph.node
        if node.domain in ("", "ai.onnx")
        for index in SHAPE_OPERANDS.get(node.op_type, ())
        if index < len(node.input) and node.input[index] in graph_inputs
    }
    frozen = [
        name
        for name, value in zip(graph_inputs, inputs)
        if name in wanted and isinstance(value, np.ndarray)
    ]
    if not frozen:
        return model, inputs, []
    values = dict(zip(graph_inputs, inputs))
    out = freeze_inputs(model, {n: values[n] for n in frozen})
    return out, [values[i.name] for i in out.graph.input], frozen


# ---------------------------------------------------------------------------------------------
# Running one case (inside a worker process)


def _where(err: BaseException) -> str:
    """The deepest ember source location in the traceback of `err` (or of its cause)."""
    root = err.__cause__ or err
    where = ""
    for frame in traceback.extract_tb(root.__traceback__):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(PACKAGE_ROOT) and path != Path(__file__).resolve():
            where = f"{path.relative_to(PACKAGE_ROOT)}:{frame.name}"
    return where


def _message(err: BaseException) -> str:
    root = err.__cause__ if err.__cause__ is not None else err
    text = f"{type(root).__name__}: {root}".strip()
    return text[:600]


def _dtypes(values: Iterable[Any]) -> list[str]:
    return [str(v.dtype) if isinstance(v, np.ndarray) else type(v).__name__ for v in values]


def _is_folded(rep: Any) -> bool:
    """True when no compiled code reads a graph input: the outputs were computed while compiling."""
    from ember.passes.program import entry_function

    program = rep.compiled.program
    fn = entry_function(program.module)
    n_inputs = len(program.manifest.inputs)
    return all(not arg.uses for arg in fn.body.block.args[:n_inputs])


def _mismatch(err: AssertionError, refs: Sequence[Any], outs: Sequence[Any]) -> tuple[str, str]:
    text = str(err)
    if "incorrect shape" in text:
        category = "shape-mismatch"
    elif "dtype(" in text:
        category = "dtype-mismatch"
    elif "Not equal to tolerance" in text or "Arrays are not equal" in text:
        category = "value-mismatch"
        for ref, out in zip(refs, outs):
            if (
                isinstance(ref, np.ndarray)
                and isinstance(out, np.ndarray)
                and ref.shape == out.shape
            ):
                with np.errstate(all="ignore"):
                    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
                bad = ~np.isclose(out, ref, rtol=RTOL, atol=ATOL, equal_nan=True)
                if bad.any():
                    text = (
                        f"{int(bad.sum())}/{bad.size} elements differ, max |diff| "
                        f"{np.nanmax(diff):.3g}; " + text
                    )
                    break
    else:
        category = "output-mismatch"
    return category, " ".join(text.split())[:600]


def run_case(case_dir: str, rtol: float, atol: float, options: dict[str, Any]) -> dict[str, Any]:
    """Compile and run one case with EmberBackend; never raises."""
    from onnx.backend.test.runner import Runner

    from ember.frontend.errors import ModelError, UnsupportedOpError
    from ember.runtime.errors import EmberError
    from ember.tools.onnx_backend import BackendCompileError, EmberBackend, UnsupportedOpsError

    result: dict[str, Any] = {"status": "passed"}

    def outcome(status: str, category: str, err: BaseException | str) -> dict[str, Any]:
        result.update(status=status, category=category)
        if isinstance(err, BaseException):
            result.update(message=_message(err), where=_where(err))
        else:
            result["message"] = err
        return result

    try:
        model, data_sets = load_case(Path(case_dir))
    except Exception as err:
        return outcome("errored", "bad-case-data", err)
    result["dtypes"] = sorted(set(_dtypes(data_sets[0][0] + data_sets[0][1]))) if data_sets else []
    if options.get("freeze", True) and len(data_sets) == 1:
        model, inputs, frozen = freeze_shape_operands(model, data_sets[0][0])
        data_sets = [(inputs, data_sets[0][1])]
        if frozen:
            result["frozen_inputs"] = frozen
    backend = dict(options.get("backend", {}))
    if backend.get("input_shapes"):
        # --input-shape applies to the cases that have an input of that name.
        names = {i.name for i in model.graph.input}
        backend["input_shapes"] = {
            n: shape for n, shape in backend["input_shapes"].items() if n in names
        }
    start = time.perf_counter()
    try:
        rep = EmberBackend.prepare(model, **backend)
    except UnsupportedOpsError as err:
        result["unsupported_ops"] = err.op_types
        outcome("errored", "unsupported-op", err)
        result["where"] = "frontend: no converter"
        return result
    except UnsupportedOpError as err:
        result["unsupported_ops"] = [err.op_type]
        return outcome("errored", "unsupported-variant", err)
    except ModelError as err:
        return outcome("errored", "frontend-error", err)
    except BackendCompileError as err:
        return outcome("errored", "compile-error", err)
    except Exception as err:
        return outcome("errored", "prepare-error", err)
    finally:
        result["compile_seconds"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    for inputs, refs in data_sets:
        try:
            outs = list(rep.run(inputs))
        except EmberError as err:
            return outcome("errored", "run-refused", err)
        except Exception as err:
            return outcome("errored", "run-error", err)
        try:
            Runner.assert_similar_outputs(refs, outs, rtol=rtol, atol=atol)
        except AssertionError as err:
            category, text = _mismatch(err, refs, outs)
            return outcome("failed", category, text)
        except Exception as err:
            return outcome("failed", "output-mismatch", err)
    result["run_seconds"] = round(time.perf_counter() - start, 4)
    try:
        result["folded"] = _is_folded(rep)
    except Exception:
        result["folded"] = False
    return result


# ---------------------------------------------------------------------------------------------
# The worker pool (tools/workers.py)


@dataclass
class RunOptions:
    jobs: int = 2
    timeout: float = 60.0
    recycle: int = 100  # cases per worker process: bounds memory held by JIT-compiled modules
    backend: dict[str, Any] = field(default_factory=lambda: {"threads": 1})
    freeze: bool = True  # see SHAPE_OPERANDS
    runner: str = "ember.tools.conformance:run_case"


def run_cases(
    names: Sequence[str],
    data: Path,
    catalogue: dict[str, dict[str, Any]] | None = None,
    options: RunOptions | None = None,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run `names` (case directories under `data`) in worker processes; return name -> result."""
    from ember.tools.workers import WorkerPool

    options = options or RunOptions()
    catalogue = catalogue or {}
    case_options = {"backend": options.backend, "freeze": options.freeze}
    jobs = [
        (
            name,
            (
                str(data / name),
                catalogue.get(name, {}).get("rtol", RTOL),
                catalogue.get(name, {}).get("atol", ATOL),
                case_options,
            ),
        )
        for name in names
    ]
    with WorkerPool(options.runner, options.jobs, options.timeout, options.recycle) as pool:
        return pool.map(jobs, progress)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Report


def _normalize(message: str) -> str:
    """A failure message with names and sizes blanked, so that alike failures group together."""
    text = message.splitlines()[0] if message else ""
    text = re.sub(r"'[^']*(?:'|$)", "'…'", text)
    text = re.sub(r"(?:\d+x)+", "Nx", text)
    text = re.sub(r"\(\s*-?\d+(?:\s*,\s*-?\d+)*\s*,?\s*\)", "(…)", text)
    text = re.sub(r"\[[\d\s,\-.]*\]", "[…]", text)
    text = _ONNX_TYPE.sub("<type>", text)
    text = re.sub(r"(?<![A-Za-z_\d.])-?\d+(?:\.\d+)?(?:e-?\d+)?", "N", text)
    return text[:240]


def _git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(PACKAGE_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def outcome(case: dict[str, Any]) -> str:
    """What a user would see of this case result: one of OUTCOMES."""
    status, category = case["status"], case.get("category")
    if status == "failed":
        return "values differ" if category == "value-mismatch" else "wrong output"
    if status == "errored":
        return "refused" if category in REFUSALS else "internal error"
    return status  # passed, crashed


def build_report(
    results: dict[str, dict[str, Any]],
    catalogue: dict[str, dict[str, Any]],
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-case results joined with the catalogue, counted per op and in total."""
    cases = {}
    for name in sorted(results):
        info = catalogue.get(name, {"op": "?", "expanded": False})
        cases[name] = {"op": info["op"], "expanded": info["expanded"], **results[name]}
        cases[name]["outcome"] = outcome(cases[name])
    ops: dict[str, dict[str, Any]] = {}
    for case in cases.values():
        entry = ops.setdefault(
            case["op"],
            {"direct": dict.fromkeys(STATUSES, 0), "expanded": dict.fromkeys(STATUSES, 0)},
        )
        entry["expanded" if case["expanded"] else "direct"][case["status"]] += 1
        if case["status"] == "passed" and case.get("folded") and not case["expanded"]:
            entry["folded"] = entry.get("folded", 0) + 1
    totals = dict.fromkeys(STATUSES, 0)
    for case in cases.values():
        totals[case["status"]] += 1
    totals["total"] = len(cases)
    totals["outcomes"] = dict.fromkeys(OUTCOMES, 0)
    for case in cases.values():
        totals["outcomes"][case["outcome"]] += 1
    passed = [c for c in cases.values() if c["status"] == "passed"]
    totals["passed_folded"] = sum(1 for c in passed if c.get("folded"))
    totals["passed_frozen"] = sum(1 for c in passed if c.get("frozen_inputs"))
    return {
        "onnx_version": onnx.__version__,
        "ember_commit": _git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "settings": {"rtol": RTOL, "atol": ATOL, **(settings or {})},
        "totals": totals,
        "ops": dict(sorted(ops.items())),
        "cases": cases,
    }


def _with_summaries(report: dict[str, Any]) -> dict[str, Any]:
    """The report plus its grouped failures, for readers of the JSON who do not run this code."""
    groups = [
        {**g, "ops": dict(g["ops"]), "dtypes": dict(g["dtypes"])} for g in failure_groups(report)
    ]
    return {
        **report,
        "unsupported_ops": dict(unsupported_ranking(report)),
        "failure_groups": groups,
    }


def failure_groups(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Non-passing cases grouped by (status, category, source location, normalized message)."""
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for name, case in report["cases"].items():
        if case["status"] == "passed":
            continue
        message = _normalize(case.get("message", ""))
        if case.get("category") == "unsupported-op":
            # One group per set of missing ops, whatever the nodes are called or their order.
            message = "ops the frontend does not import: " + ", ".join(
                sorted(case["unsupported_ops"])
            )
        key = (case["status"], case.get("category", ""), case.get("where", ""), message)
        group = groups.setdefault(
            key,
            {
                "outcome": outcome(case),
                "status": key[0],
                "category": key[1],
                "where": key[2],
                "message": key[3],
                "count": 0,
                "ops": Counter(),
                "dtypes": Counter(),
                "example": name,
            },
        )
        group["count"] += 1
        group["ops"][case["op"]] += 1
        group["dtypes"].update(case.get("dtypes", []))
    return sorted(groups.values(), key=lambda g: (-g["count"], g["message"]))


def unsupported_ranking(report: dict[str, Any]) -> list[tuple[str, int]]:
    """Ops the frontend rejects, by the number of cases each one blocks."""
    counts: Counter[str] = Counter()
    for case in report["cases"].values():
        counts.update(case.get("unsupported_ops", []))
    return counts.most_common()


def _fraction(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return f"{counts['passed']}/{total}" if total else "-"


def outcome_counts(report: dict[str, Any]) -> dict[str, int]:
    """Cases per outcome (computed from the cases, so older reports render too)."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for case in report["cases"].values():
        counts[outcome(case)] += 1
    return counts


def values_differ(report: dict[str, Any]) -> list[str]:
    """The cases that ran but computed wrong numbers."""
    return [name for name, case in report["cases"].items() if outcome(case) == "values differ"]


def _outcome_line(report: dict[str, Any]) -> str:
    return ", ".join(f"{n} {name}" for name, n in outcome_counts(report).items())


def format_report(report: dict[str, Any], groups_shown: int = 25) -> str:
    t = report["totals"]
    differ: Counter[str] = Counter(
        case["op"]
        for case in report["cases"].values()
        if not case["expanded"] and outcome(case) == "values differ"
    )
    lines = [
        f"{'op':<34} {'direct':>8} {'differ':>6} {'fail':>5} {'err':>5} {'crash':>5} "
        f"{'expanded':>9}",
    ]
    for op, entry in report["ops"].items():
        d = entry["direct"]
        lines.append(
            f"{op:<34} {_fraction(d):>8} {differ[op]:>6} {d['failed']:>5} {d['errored']:>5} "
            f"{d['crashed']:>5} {_fraction(entry['expanded']):>9}"
        )
    lines += [
        "",
        f"total: {t['passed']} passed, {t['failed']} failed, {t['errored']} errored, "
        f"{t['crashed']} crashed of {t['total']} cases "
        f"({t['passed_folded']} of the passes were computed entirely at compile time; "
        f"{t.get('passed_frozen', 0)} had shape operands frozen to constants)",
        f"outcomes: {_outcome_line(report)}",
    ]
    wrong = values_differ(report)
    if wrong:
        lines += ["", f"values differ ({len(wrong)} cases: ran, but computed wrong numbers):"]
        lines += [f"  {name}: {report['cases'][name].get('message', '')[:160]}" for name in wrong]
    lines += [
        "",
        "ops rejected by the frontend (cases blocked):",
    ]
    ranking = unsupported_ranking(report)
    lines.append("  " + ", ".join(f"{op} {n}" for op, n in ranking) if ranking else "  none")
    lines += ["", f"top failure causes (of {len(failure_groups(report))} groups):"]
    for group in failure_groups(report)[:groups_shown]:
        ops = ", ".join(f"{op} {n}" for op, n in group["ops"].most_common(6))
        more = len(group["ops"]) - 6
        lines.append(
            f"  {group['count']:>4}  {group['outcome']} ({group['status']}/{group['category']})"
            f"{' at ' + group['where'] if group['where'] else ''}: {group['message']}"
        )
        lines.append(f"        ops: {ops}{f' (+{more} more)' if more > 0 else ''}")
        if group["dtypes"]:
            dtypes = ", ".join(f"{d} {n}" for d, n in group["dtypes"].most_common(8))
            lines.append(f"        dtypes in these cases: {dtypes}")
    return "\n".join(lines)


def render_docs(report: dict[str, Any]) -> str:
    """docs/ops.md: ops whose node tests all or mostly pass, with counts, from a report."""
    t = report["totals"]
    full, mostly, partial, none = [], [], [], []
    for op, entry in report["ops"].items():
        d = entry["direct"]
        total = sum(d.values())
        if not total:
            continue
        share = d["passed"] / total
        row = (op, entry)
        if share == 1.0:
            full.append(row)
        elif share >= MOSTLY:
            mostly.append(row)
        elif d["passed"]:
            partial.append(row)
        else:
            none.append(op)
    failing = defaultdict(list)
    for name, case in report["cases"].items():
        if case["status"] != "passed" and not case["expanded"]:
            failing[case["op"]].append(name.removeprefix("test_"))

    def table(rows: list[tuple[str, dict[str, Any]]], with_failures: bool) -> list[str]:
        head = "| op | node tests passed | function-expanded tests passed |"
        out = [head + (" failing |" if with_failures else ""), "|---|---:|---:|"]
        out[-1] += "---|" if with_failures else ""
        for op, entry in rows:
            folded = f" ({entry['folded']} at compile time)" if entry.get("folded") else ""
            line = (
                f"| {op} | {_fraction(entry['direct'])}{folded} | {_fraction(entry['expanded'])} |"
            )
            if with_failures:
                line += " " + ", ".join(sorted(failing[op])) + " |"
            out.append(line)
        return out

    operands = (
        f"{t.get('passed_frozen', 0)} of the passing cases had their shape operands "
        "(Reshape's shape, Slice's starts, a reduction's axes, ...) given as constants "
        "rather than as graph inputs, as real models give them (see `SHAPE_OPERANDS` in "
        "`tools/conformance.py`)."
        if report["settings"].get("freeze_shape_operands", True)
        else "Every operand was a graph input, as ONNX's runner gives them; ember compiles "
        "an op whose shape operand (Reshape's shape, Slice's starts, a reduction's axes, "
        "...) is fed at run time once per distinct value of it (value specialisation, "
        "`tools/specialize.py`)."
    )
    lines = [
        "# Supported ONNX ops",
        "",
        "<!-- Generated by `ember conformance --write-docs`; do not edit by hand. -->",
        "",
        f"Measured with ONNX {report['onnx_version']}'s node conformance tests "
        f"(rtol {report['settings']['rtol']:g}, atol {report['settings']['atol']:g}) on "
        f"ember {report['ember_commit'] or '(unknown commit)'}, {report['date']}: "
        f"**{t['passed']} of {t['total']}** cases pass "
        f"({t['failed']} failed, {t['errored']} errored, {t['crashed']} crashed). "
        f"By outcome: {_outcome_line(report)} (*refused*: a clear error naming the op; "
        "*values differ*: ran but computed wrong numbers). "
        f"{t['passed_folded']} of the passing cases have only compile-time-constant inputs, so "
        "ember computed their outputs while compiling. " + operands,
        "",
        "An op's *node tests* run the op itself; its *function-expanded* tests run the ONNX",
        "function body that defines it, in terms of other ops.",
        "",
        f"## Supported: every node test passes ({len(full)} ops)",
        "",
        *table(full, False),
        "",
        f"## Mostly supported: at least {MOSTLY:.0%} of node tests pass ({len(mostly)} ops)",
        "",
        *table(mostly, True),
        "",
        f"## Partly supported: some node tests pass ({len(partial)} ops)",
        "",
        *table(partial, True),
        "",
        f"## Not supported: no node test passes ({len(none)} ops)",
        "",
        ", ".join(none) if none else "none",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


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


def ci_subset(report: dict[str, Any], per_op: int) -> list[str]:
    """Passing, non-folded cases, at most `per_op` for each op: a fast fixed regression set."""
    chosen: dict[str, list[str]] = defaultdict(list)
    for name, case in sorted(report["cases"].items()):
        if case["status"] == "passed" and not case.get("folded"):
            if len(chosen[case["op"]]) < per_op:
                chosen[case["op"]].append(name)
    return sorted(name for names in chosen.values() for name in names)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-case progress")
    parser.add_argument("--groups", type=int, default=25, help="failure groups to print")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.from_json:
        report = json.loads(args.from_json.read_text())
    else:
        data = data_dir(regenerate=args.regenerate_data)
        catalogue = load_catalogue(data)
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
        out.write_text(json.dumps(_with_summaries(report), indent=1))
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


if __name__ == "__main__":
    sys.exit(main())
