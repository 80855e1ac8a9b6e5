"""Check one exported zoo model the way a user tries it: ember.compile + run vs onnxruntime,
pinned shapes, a SpecializingModel run on two shapes, and `ember compile` + runtime.load."""

from __future__ import annotations

import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx


@dataclass
class Finding:
    step: str
    kind: str  # refused | crash | wrong
    message: str


@dataclass
class CaseResult:
    findings: list[Finding] = field(default_factory=list)
    max_err: float = 0.0
    # shapes the exported graph itself cannot run (onnxruntime fails on them too: torch's
    # tracer baked a traced size into a Reshape), so not held against ember
    notes: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not self.findings


def onnxruntime_run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def compare(got: list[np.ndarray], ref: list[np.ndarray], rtol: float, atol: float) -> str | None:
    """None when every output matches: |got - ref| <= atol + rtol * max|ref| elementwise."""
    if len(got) != len(ref):
        return f"{len(got)} outputs, onnxruntime {len(ref)}"
    for i, (g, r) in enumerate(zip(got, ref)):
        g, r = np.asarray(g), np.asarray(r)
        if g.shape != r.shape:
            return f"output {i}: shape {g.shape}, onnxruntime {r.shape}"
        if g.dtype != r.dtype:
            return f"output {i}: dtype {g.dtype}, onnxruntime {r.dtype}"
        if r.dtype.kind in "iub":
            if not np.array_equal(g, r):
                return f"output {i}: integers differ"
            continue
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        err = float(np.max(np.abs(g.astype(np.float64) - r))) if r.size else 0.0
        if not np.isfinite(err) or err > atol + rtol * max(scale, 1.0):
            return f"output {i}: max abs err {err:.3g} (max|ref| {scale:.3g})"
    return None


def _outputs(model, feeds) -> list[np.ndarray]:
    out = model.run(feeds)
    return [out[name] for name in model.output_names] if isinstance(out, dict) else list(out)


def _step(result: CaseResult, step: str, fn) -> object:
    from ember.runtime.errors import EmberError

    try:
        return fn()
    except EmberError as e:
        result.findings.append(Finding(step, "refused", f"{type(e).__name__}: {e}"))
    except Exception as e:  # noqa: BLE001 - everything else is a bug to report
        tb = traceback.format_exc(limit=-4)
        result.findings.append(Finding(step, "crash", f"{type(e).__name__}: {e}\n{tb}"))
    return None


def check_model(
    path: Path,
    feeds_list: list[dict[str, np.ndarray]],
    *,
    rtol: float,
    atol: float,
    aot_dir: Path | None = None,
) -> CaseResult:
    """feeds_list[0] is the traced shape; more entries are other shapes (symbolic models)."""
    import ember

    result = CaseResult()
    proto = onnx.load(str(path))
    symbolic = any(
        d.dim_param or not d.HasField("dim_value")
        for i in proto.graph.input
        for d in i.type.tensor_type.shape.dim
    )

    def check(step: str, model, feeds) -> None:
        reference: list[np.ndarray] | None = None
        try:
            reference = onnxruntime_run(path, feeds)
        except Exception as e:  # noqa: BLE001 - onnxruntime's failure, judged below
            reference_error = f"{type(e).__name__}: {str(e)[:300]}"
        findings = len(result.findings)
        got = _step(result, step + ".run", lambda: _outputs(model, feeds))
        if reference is None:
            # Not comparable; ember refusing the same input shapes (an InputError) is no
            # finding either, any other refusal or crash still is.
            shapes = {n: list(a.shape) for n, a in feeds.items()}
            result.notes.append(f"{step}: onnxruntime fails on {shapes}: {reference_error}")
            if got is None and result.findings[-1].message.startswith("InputError"):
                del result.findings[findings:]
            return
        if got is None:
            return
        bad = compare(got, reference, rtol, atol)
        if bad:
            result.findings.append(Finding(step, "wrong", bad))

    model = _step(result, "compile", lambda: ember.compile(str(path)))
    if model is not None:
        for k, feeds in enumerate(feeds_list if symbolic else feeds_list[:1]):
            check(f"run[{k}]", model, feeds)
    if symbolic:
        shapes = {n: list(a.shape) for n, a in feeds_list[0].items()}
        pinned = _step(
            result, "compile.pinned", lambda: ember.compile(str(path), input_shapes=shapes)
        )
        if pinned is not None:
            check("pinned", pinned, feeds_list[0])
    if aot_dir is not None:
        shapes = {n: list(a.shape) for n, a in feeds_list[0].items()}
        cmd = [
            sys.executable,
            "-m",
            "ember.tools.cli",
            "compile",
            str(path),
            "-o",
            str(aot_dir),
            "-q",
        ]
        if symbolic:
            for n, s in shapes.items():
                cmd += ["--input-shape", f"{n}=" + "x".join(map(str, s))]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            result.findings.append(
                Finding(
                    "aot.compile",
                    "refused" if proc.returncode == 1 else "crash",
                    proc.stderr[-2000:],
                )
            )
        else:
            import ember.runtime

            loaded = _step(result, "aot.load", lambda: ember.runtime.load(str(aot_dir)))
            if loaded is not None:
                check("aot", loaded, feeds_list[0])
    return result
