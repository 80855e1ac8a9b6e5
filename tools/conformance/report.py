"""Reports: per-case results joined with the catalogue, counted per op and outcome, grouped by
failure cause; printed, written as JSON, and rendered as docs/ops.md."""

from __future__ import annotations

import platform
import re
import time
from collections import Counter, defaultdict
from typing import Any

import onnx

from ember.tools.conformance.contrib_ops import contrib_section
from ember.tools.conformance.runner import ATOL, PACKAGE_ROOT, REFUSALS, RTOL, STATUSES
from ember.tools.conformance.unsupported import reason, unconverted_ops

OUTCOMES = ("passed", "refused", "values differ", "wrong output", "internal error", "crashed")
DOCS_PATH = PACKAGE_ROOT / "docs" / "ops.md"
# An op is listed as supported in docs/ops.md when at least this share of its cases pass.
MOSTLY = 0.5

# ONNX element type names in messages; blanked so that one dtype gap is one failure group.
_ONNX_TYPE = re.compile(
    r"\b(?:U?INT(?:2|4|8|16|32|64)|FLOAT(?:16|8\w*|4\w*)?|BFLOAT16|DOUBLE|BOOL|STRING|COMPLEX\d+"
    r"|u?int(?:2|4|8|16|32|64)|b?float(?:16|32|64|8_\w+|4_\w+))\b"
)


def normalize_message(message: str) -> str:
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


def with_summaries(report: dict[str, Any]) -> dict[str, Any]:
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
        message = normalize_message(case.get("message", ""))
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
        out = [head + (" failing | why |" if with_failures else ""), "|---|---:|---:|"]
        out[-1] += "---|---|" if with_failures else ""
        for op, entry in rows:
            folded = f" ({entry['folded']} at compile time)" if entry.get("folded") else ""
            line = (
                f"| {op} | {_fraction(entry['direct'])}{folded} | {_fraction(entry['expanded'])} |"
            )
            if with_failures:
                line += f" {', '.join(sorted(failing[op]))} | {reason(op)} |"
            out.append(line)
        return out

    unsupported = ["| op | node tests | why |", "|---|---:|---|"]
    unsupported += [
        f"| {op} | {sum(report['ops'][op]['direct'].values())} | {reason(op)} |" for op in none
    ]
    untested = unconverted_ops(set(report["ops"]))

    operands = (
        f"{t.get('passed_frozen', 0)} of the passing cases had their shape operands "
        "(Reshape's shape, Slice's starts, a reduction's axes, ...) given as constants "
        "rather than as graph inputs, as real models give them (see `SHAPE_OPERANDS` in "
        "`tools/conformance/runner.py`)."
        if report["settings"].get("freeze_shape_operands", True)
        else "Every operand was a graph input, as ONNX's runner gives them; ember compiles "
        "an op whose shape operand (Reshape's shape, Slice's starts, a reduction's axes, "
        "...) is fed at run time once per distinct value of it (value specialisation, "
        "`engine/specialize.py`)."
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
        *(unsupported if none else ["none"]),
        "",
        f"## Not supported, no node test: ONNX ops ember neither converts nor expands "
        f"({len(untested)} ops)",
        "",
        "Ops of the ONNX schemas (onnx " + onnx.__version__ + ") that the suite has no node "
        "test of, that ember has no converter for and that no function body defines; a model "
        "using one is refused at import, naming it.",
        "",
        "| op | why |",
        "|---|---|",
        *(f"| {op} | {reason(op)} |" for op in untested),
        "",
        *contrib_section(),
    ]
    return "\n".join(lines)


def ci_subset(report: dict[str, Any], per_op: int) -> list[str]:
    """Passing, non-folded cases, at most `per_op` for each op: a fast fixed regression set."""
    chosen: dict[str, list[str]] = defaultdict(list)
    for name, case in sorted(report["cases"].items()):
        if case["status"] == "passed" and not case.get("folded"):
            if len(chosen[case["op"]]) < per_op:
                chosen[case["op"]].append(name)
    return sorted(name for names in chosen.values() for name in names)
