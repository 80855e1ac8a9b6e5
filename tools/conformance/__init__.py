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
compiled for the test data's value of it (value specialisation, engine/specialize.py).

Outcomes, what a user of ember would see (`outcome()`): passed; refused (a clear ember error
naming the op: unsupported op or variant, invalid model, a kernel's run-time check); values
differ (ran with the right shapes and types but wrong numbers: a silent wrong answer, the worst
outcome); wrong output (wrong shape, dtype or kind of output); internal error (ember broke while
compiling or running: a bug, not a refusal); crashed.

The package, one job a module: `data` (write and read the suite), `runner` (one case in a
worker process, the worker pool), `report` (counts, failure groups, docs/ops.md), `unsupported`
(why each unsupported op or failing variant fails, rendered into docs/ops.md; an op ember
neither converts nor expands, with no entry there, fails tests/conformance/test_runner.py),
`cli` (the command).
Their public names are re-exported here.
"""

from __future__ import annotations

from ember.tools.conformance import data
from ember.tools.conformance.cli import main, select_cases
from ember.tools.conformance.data import (
    CATALOGUE,
    cache_root,
    data_dir,
    load_case,
    load_catalogue,
    write_node_tests,
)
from ember.tools.conformance.report import (
    DOCS_PATH,
    MOSTLY,
    OUTCOMES,
    build_report,
    ci_subset,
    failure_groups,
    format_report,
    normalize_message,
    outcome,
    outcome_counts,
    render_docs,
    unsupported_ranking,
    values_differ,
    with_summaries,
)
from ember.tools.conformance.runner import (
    ATOL,
    REFUSALS,
    RTOL,
    SHAPE_OPERANDS,
    STATUSES,
    RunOptions,
    freeze_shape_operands,
    run_case,
    run_cases,
)

__all__ = [
    "ATOL",
    "CATALOGUE",
    "DOCS_PATH",
    "MOSTLY",
    "OUTCOMES",
    "REFUSALS",
    "RTOL",
    "SHAPE_OPERANDS",
    "STATUSES",
    "RunOptions",
    "build_report",
    "cache_root",
    "ci_subset",
    "data",
    "data_dir",
    "failure_groups",
    "format_report",
    "freeze_shape_operands",
    "load_case",
    "load_catalogue",
    "main",
    "normalize_message",
    "outcome",
    "outcome_counts",
    "render_docs",
    "run_case",
    "run_cases",
    "select_cases",
    "unsupported_ranking",
    "values_differ",
    "with_summaries",
    "write_node_tests",
]
