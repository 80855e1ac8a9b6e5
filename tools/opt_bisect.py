"""Numerical debugging for `ember opt`: bisect the pipeline against an oracle, and compare every
intermediate tensor with onnxruntime's.

Bisecting cuts the pipeline after k optional passes. The mandatory lowering passes always run
(no code without them), so cut k = the first k optional passes plus every mandatory pass, in
pipeline order; cut 0 is the plain lowering and cut n is the whole pipeline. Assuming a pass
that breaks the numerics stays broken once applied, a binary search over k finds the first
optional pass after which outputs diverge in about log2(n) compilations.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

import numpy as np
import onnx
from onnx import helper
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from ember.core.context import EmberContext
from ember.passes.pipeline import pipeline_text
from ember.tools.bench import Error, one_line

MANDATORY_PASSES = (
    "convert-graph-to-kernel",
    "plan-memory",
    "place-weights",
    "lower-kernels-to-loops",
)
ORACLES = ("onnxruntime", "reference")

Outputs = dict[str, np.ndarray]


# -- running both sides --------------------------------------------------------------------------


class OracleError(ValueError):
    """The oracle refused the model or its inputs (seeded ones may not suit an index input)."""


def seeded_inputs(model: onnx.ModelProto, seed: int = 0) -> Outputs:
    """Seeded inputs for every real graph input of `model`, index inputs (Gather indices,
    recurrent sequence_lens, ...) within the range the model accepts (see `ember.engine.feeds`)."""
    from ember.engine import feeds

    return feeds.seeded_inputs(model, seed)


def oracle_outputs(model: onnx.ModelProto, feeds: Outputs, oracle: str) -> Outputs:
    """Every graph output of `model` computed by onnxruntime or onnx.reference; OracleError
    if the oracle refuses the model or the inputs."""
    try:
        return _run_oracle(model, feeds, oracle)
    except OracleError:
        raise
    except Exception as error:  # each oracle has its own exception types
        detail = one_line(error)
        raise OracleError(
            f"{oracle} refused the model on these inputs ({detail}); give inputs it accepts "
            f"with --input NAME=FILE.npy"
        ) from error


def _run_oracle(model: onnx.ModelProto, feeds: Outputs, oracle: str) -> Outputs:
    names = [o.name for o in model.graph.output]
    if oracle == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        return dict(zip(names, session.run(names, feeds)))
    if oracle == "reference":
        from onnx.reference import ReferenceEvaluator

        return dict(zip(names, ReferenceEvaluator(model).run(names, feeds)))
    raise OracleError(f"unknown oracle '{oracle}' (expected one of {', '.join(ORACLES)})")


def run_ember(
    module: ModuleOp,
    ctx: EmberContext,
    passes: Sequence[ModulePass],
    feeds: Outputs,
    opt_level: int = 3,
) -> Outputs:
    """Lower a copy of `module` with `passes`, JIT it and run it once on `feeds`."""
    from ember.engine.compile import CompiledModel, finish_program

    module, ctx = module.clone(), ctx.clone()
    for p in passes:
        p.apply(ctx, module)
    compiled = CompiledModel(finish_program(module, ctx), opt_level, 1)
    return compiled.run(feeds)


def worst_error(actual: Outputs, expected: Outputs) -> tuple[str, Error]:
    """The output with the largest relative error."""
    worst = ("", Error(0.0, 0.0))
    for name, ref in expected.items():
        if name not in actual:
            return name, Error(float("inf"), float("inf"))
        err = Error.of(np.asarray(actual[name]), np.asarray(ref))
        if err.rel > worst[1].rel or not worst[0]:
            worst = (name, err)
    return worst


# -- bisect --------------------------------------------------------------------------------------


def cut_pipeline(passes: Sequence[ModulePass], k: int) -> list[ModulePass]:
    """The first k optional passes and every mandatory pass, in their original order."""
    kept, optional_seen = [], 0
    for p in passes:
        if p.name in MANDATORY_PASSES:
            kept.append(p)
        elif optional_seen < k:
            kept.append(p)
            optional_seen += 1
        else:
            optional_seen += 1
    return kept


@dataclass
class CutResult:
    k: int
    last_pass: str  # the last optional pass kept, "" for cut 0
    output: str = ""
    error: Error | None = None
    failure: str | None = None  # a pass or the JIT raised

    def diverged(self, rtol: float) -> bool:
        return self.failure is not None or self.error is None or self.error.rel > rtol


@dataclass
class BisectResult:
    cuts: list[CutResult]
    culprit: str | None  # label of the first optional pass after which outputs diverge
    culprit_position: int | None  # 1-based position of that pass in the full pipeline
    culprit_cut: int | None
    baseline_diverges: bool
    rtol: float

    def report(self) -> str:
        lines = [f"{'cut':>4}  {'last optional pass kept':<32} {'max abs':>10} {'max rel':>10}"]
        for c in sorted(self.cuts, key=lambda c: c.k):
            if c.failure is not None:
                status = f"FAILED: {c.failure}"
            else:
                assert c.error is not None
                mark = "DIVERGES" if c.diverged(self.rtol) else "ok"
                status = f"{c.error.abs:>10.3g} {c.error.rel:>10.3g}  {mark}"
            lines.append(f"{c.k:>4}  {c.last_pass or '(mandatory passes only)':<32} {status}")
        if self.baseline_diverges:
            compiled = [c for c in self.cuts if c.failure is None]
            base = min(compiled, key=lambda c: c.k) if compiled else None
            lines.append(
                "no cut compiles: even the full pipeline fails (see above)"
                if base is None
                else f"outputs diverge already at the first cut that compiles (cut {base.k}): "
                "the bug is in the frontend, a mandatory lowering pass, a kernel, or one of "
                "the optional passes that cut needs; try --compare-intermediates"
            )
        elif self.culprit is None:
            lines.append(f"no divergence beyond rtol {self.rtol:g} of max|ref| in any cut")
        else:
            culprit_cut = next(c for c in self.cuts if c.k == self.culprit_cut)
            how = (
                "the pipeline fails to compile"
                if culprit_cut.failure is not None
                else f"outputs diverge beyond rtol {self.rtol:g} of max|ref|"
            )
            lines.append(
                f"first divergent pass: {self.culprit} (pass {self.culprit_position} of the "
                f"pipeline): with it {how}"
            )
        return "\n".join(lines) + "\n"


def bisect(
    module: ModuleOp,
    ctx: EmberContext,
    passes: Sequence[ModulePass],
    feeds: Outputs,
    reference: Outputs,
    rtol: float = 1e-3,
    opt_level: int = 3,
    log: TextIO | None = None,
) -> BisectResult:
    """Find the first optional pass whose addition makes outputs diverge from `reference`."""
    log = log or sys.stderr
    optional = [(i, p) for i, p in enumerate(passes) if p.name not in MANDATORY_PASSES]
    cuts: dict[int, CutResult] = {}

    def evaluate(k: int) -> CutResult:
        if k in cuts:
            return cuts[k]
        last = str(optional[k - 1][1]) if k else ""
        result = CutResult(k, last)
        try:
            actual = run_ember(module, ctx, cut_pipeline(passes, k), feeds, opt_level)
            result.output, result.error = worst_error(actual, reference)
        except Exception as error:  # a crash in a cut counts as a divergence, named as such
            result.failure = f"{type(error).__name__}: {error}".splitlines()[0][:200]
        state = (
            "does not compile"
            if result.failure
            else ("diverges" if result.diverged(rtol) else "ok")
        )
        log.write(
            f"ember opt: bisect cut {k}/{len(optional)} ({last or 'lowering only'}): {state}\n"
        )
        cuts[k] = result
        return result

    def finish(culprit_k: int | None, baseline: bool) -> BisectResult:
        culprit = position = None
        if culprit_k is not None:
            index, p = optional[culprit_k - 1]
            culprit, position = pipeline_text([p]), index + 1
        return BisectResult(list(cuts.values()), culprit, position, culprit_k, baseline, rtol)

    # Some optional passes are needed before the lowering accepts the graph (canonicalize turns
    # batch_norm and gemm into ops with a kernel form), so the baseline is the first cut that
    # compiles; past it, a cut that fails to compile is as bad as one that diverges.
    baseline = next((k for k in range(len(optional) + 1) if evaluate(k).failure is None), None)
    if baseline is None:
        return finish(None, baseline=True)
    if evaluate(baseline).diverged(rtol):
        return finish(None, baseline=True)
    good, bad = baseline, len(optional)
    if bad == good or not evaluate(bad).diverged(rtol):
        return finish(None, baseline=False)
    while bad - good > 1:
        mid = (good + bad) // 2
        if evaluate(mid).diverged(rtol):
            bad = mid
        else:
            good = mid
    return finish(bad, baseline=False)


# -- intermediates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Intermediate:
    node_index: int
    node_name: str
    op_type: str
    tensor: str


def expose_intermediates(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Intermediate]]:
    """A copy of `model` whose graph also returns every float tensor a node computes.

    A value that is a graph output can never be fused away, so ember computes each of them as
    its own buffer; onnxruntime likewise keeps them.
    """
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    known = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output]}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    exposed: list[Intermediate] = []
    for index, node in enumerate(copy.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        for tensor in node.output:
            info = known.get(tensor)
            if not tensor or info is None:
                continue
            elem = info.type.tensor_type.elem_type
            if not np.issubdtype(helper.tensor_dtype_to_np_dtype(elem), np.floating):
                continue  # shape arithmetic: ember folds it at import, there is no buffer
            if tensor not in present:
                copy.graph.output.append(info)
                present.add(tensor)
            exposed.append(Intermediate(index, name, node.op_type, tensor))
    return copy, exposed


@dataclass
class IntermediateReport:
    rows: list[tuple[Intermediate, Error]]
    first_divergent: tuple[Intermediate, Error] | None
    rtol: float
    total_nodes: int

    def report(self) -> str:
        lines = [f"compared {len(self.rows)} tensors of {self.total_nodes} nodes"]
        if self.first_divergent is None:
            lines.append(f"every intermediate matches within rtol {self.rtol:g} of max|ref|")
            return "\n".join(lines) + "\n"
        node, err = self.first_divergent
        lines.append(
            f"first divergent node: '{node.node_name}' ({node.op_type}, node {node.node_index} "
            f"in topological order), output '{node.tensor}': max abs error {err.abs:.3g}, "
            f"max rel error {err.rel:.3g} (tolerance {self.rtol:g} of max|ref|)"
        )
        position = next(i for i, (n, _) in enumerate(self.rows) if n == node)
        lines.append("nearby tensors (abs / rel error):")
        for n, e in self.rows[max(0, position - 3) : position + 3]:
            flag = "  <-- first divergence" if n == node else ""
            lines.append(
                f"    #{n.node_index:<4} {n.op_type:<18} {n.tensor:<28} {e.abs:>10.3g} "
                f"{e.rel:>10.3g}{flag}"
            )
        return "\n".join(lines) + "\n"


def compare_intermediates(
    model: onnx.ModelProto,
    build: Callable[[onnx.ModelProto], tuple[ModuleOp, EmberContext]],
    passes: Sequence[ModulePass],
    feeds: Outputs,
    rtol: float = 1e-3,
    opt_level: int = 3,
    oracle: str = "onnxruntime",
) -> IntermediateReport:
    """Run ember and the oracle on `model` with every intermediate exposed; find the first
    node (topological order) whose value differs beyond rtol x max|ref|."""
    exposed_model, exposed = expose_intermediates(model)
    module, ctx = build(exposed_model)
    actual = run_ember(module, ctx, passes, feeds, opt_level)
    expected = oracle_outputs(exposed_model, feeds, oracle)
    rows = [(i, Error.of(np.asarray(actual[i.tensor]), expected[i.tensor])) for i in exposed]
    first = next(((i, e) for i, e in rows if e.rel > rtol), None)
    return IntermediateReport(rows, first, rtol, len(model.graph.node))


def load_onnx(path: str | os.PathLike[str]) -> onnx.ModelProto:
    from ember.frontend.onnx_importer import load_model

    return load_model(path)
