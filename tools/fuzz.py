"""Fuzz ember with malformed inputs and test it differentially against onnxruntime.

    python -m ember.tools.fuzz                              # 300 malformed + 150 random graphs
    python -m ember.tools.fuzz --malformed 5000 --differential 2000 --seed 7 -j 2
    python -m ember.tools.fuzz --findings fuzz_findings/    # save every finding with a repro.py
    python -m ember.tools.fuzz --replay diff-0-17           # rerun one case in this process
    python -m ember.tools.fuzz --check-model reduced.onnx   # compile + compare one model
    ember fuzz ...                                          # the same

Two seeded generators (tools/fuzz_cases.py) make the cases: *malformed* cases break a valid
seed model (its bytes, attributes, element types, shapes, graph structure), its runtime inputs
or its ahead-of-time artifact; *differential* cases are random small valid graphs, run by ember
and by onnxruntime (graph optimizations off, so the reference is the plain kernels) on the same
seeded inputs. Each case is classified:

    pass      ran and matched onnxruntime (or onnxruntime refused it too)
    error     refused with an ember.EmberError that has a message: the expected outcome for bad input
    internal  any other exception: a defect (an IndexError from the importer, a MemoryError...)
    crash     the worker process died (a signal): a defect
    hang      no result within the timeout: a defect
    wrong     values, shapes or dtypes differ from onnxruntime, or a valid input was refused
    invalid   a differential graph onnxruntime cannot run: a generator defect, not ember's

Cases run in a pool of worker processes (tools/workers.py) that run many cases each and are
replaced after a crash or a timeout. A wrong, internal, crashed or hung differential graph is
reduced by delta debugging (keep one output, cut inputs, bypass nodes while the failure
persists) to a minimal model, saved with the original under --findings.

Tolerance for float32 outputs: |ember - ref| <= RTOL * |ref| + ATOL * max(max|ref|, 1) per
output.
Both sides compute in float32 but sum in different orders (blocked GEMM and convolution, tree
reductions, FMA contraction) and ember's exp/tanh/erf are polynomial approximations accurate to
a few ulp; for the dot products here (K <= ~600) the rounding error is about sqrt(K) * 6e-8 of
the sum of |terms|, 1e-6 of max|ref| or less. RTOL = 1e-4 (~1,600 ulp) leaves room for that
error to grow through ~10 chained ops; ATOL = 1e-5 of the output's max|ref| covers elements
that cancel to near zero, and at least 1e-5 absolute because rounding errors scale with the
intermediate values (O(1) here: normal inputs, weights scaled by 1/sqrt(fan-in)), not with an
output that cancels to zero (LogSumExp of a LogSoftmax is 0 up to 1e-15). A real defect (a wrong index, a lost epilogue, a bad broadcast) is
off by the order of |ref|, four orders of magnitude above. Integer and bool outputs must match
exactly; NaN and infinities must be in the same places.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ember.engine.feeds import model_input_specs, random_feeds
from ember.runtime.executable import TensorSpec, numpy_dtype
from ember.tools import fuzz_cases
from ember.tools.fuzz_cases import Case
from ember.tools.verbosity import apply_verbosity, verbosity_options
from ember.tools.workers import RECYCLE_KEY

RTOL = 1e-4
ATOL = 1e-5
STATUSES = ("pass", "error", "internal", "crash", "hang", "wrong", "invalid")
DEFECTS = ("internal", "crash", "hang", "wrong", "invalid")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_SELF = {Path(__file__).resolve(), Path(fuzz_cases.__file__).resolve()}
WORKER_RUNNER = "ember.tools.fuzz:run_job"
# A worker may not map more than this (bytes): a model that makes ember allocate without limit
# gets a MemoryError (an internal error) instead of taking the machine's memory.
MEMORY_LIMIT = 6 << 30
# Artifacts are compiled for a portable level, not `host`: on a VM whose /proc/cpuinfo hides a
# feature LLVM detects (rdseed), a host artifact does not load on its own host.
ARTIFACT_CPU = "x86-64-v3"
# Manifest fields the compiled code depends on: an artifact whose manifest changed one of
# them must not load.
TRUSTED_MANIFEST_FIELDS = {"arena_bytes", "weights_bytes", "inputs", "outputs", "entry"}


# ---------------------------------------------------------------------------------------------
# Generating cases


def make_case(name: str) -> Case:
    """The case called `name` ("malformed-SEED-INDEX" or "diff-SEED-INDEX")."""
    match = re.fullmatch(r"(malformed|diff)-(\d+)-(\d+)", name)
    if match is None:
        raise ValueError(f"not a fuzz case name: {name!r} (expected malformed-S-I or diff-S-I)")
    family, seed, index = match[1], int(match[2]), int(match[3])
    make = fuzz_cases.malformed_case if family == "malformed" else fuzz_cases.differential_case
    return make(seed, index)


def case_names(seed: int, malformed: int, differential: int) -> list[str]:
    return [f"malformed-{seed}-{i}" for i in range(malformed)] + [
        f"diff-{seed}-{i}" for i in range(differential)
    ]


def _threads_for(name: str) -> int:
    """Every fourth differential case runs on 2 threads: parallel loops get tested too."""
    return 2 if name.startswith("diff-") and int(name.rsplit("-", 1)[1]) % 4 == 3 else 1


# ---------------------------------------------------------------------------------------------
# Comparing with the reference


def compare(outputs: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> str | None:
    """None when every output matches its reference (see the module docstring), else why not."""
    for index, (out, ref) in enumerate(zip(outputs, references)):
        out, ref = np.asarray(out), np.asarray(ref)
        if out.shape != ref.shape:
            return f"output {index}: shape {list(out.shape)}, onnxruntime {list(ref.shape)}"
        if out.dtype != ref.dtype:
            return f"output {index}: dtype {out.dtype}, onnxruntime {ref.dtype}"
        if ref.dtype.kind not in "fc":
            bad = out != ref
            if bad.any():
                return f"output {index}: {int(bad.sum())}/{bad.size} elements differ (exact)"
            continue
        with np.errstate(all="ignore"):
            o, r = out.astype(np.float64), ref.astype(np.float64)
            finite = np.isfinite(r)
            scale = float(np.abs(r[finite]).max()) if finite.any() else 0.0
            close = np.abs(o - r) <= RTOL * np.abs(r) + ATOL * max(scale, 1.0)
            close |= (np.isnan(o) & np.isnan(r)) | (np.isinf(r) & (o == r))
        if not close.all():
            bad = ~close
            nan_involved = np.isnan(o[bad]).any() or np.isnan(r[bad]).any()
            nan_only = bool((np.isnan(o[bad]) | np.isnan(r[bad])).all())
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            with np.errstate(all="ignore"):
                diff = np.abs(o - r)[bad & np.isfinite(o) & finite]
            worst = f", max |diff| {diff.max():.3g} (max|ref| {scale:.3g})" if diff.size else ""
            nan_note = " [NaN only]" if nan_only else " [NaN involved]" if nan_involved else ""
            return (
                f"output {index}: {int(bad.sum())}/{bad.size} elements differ{worst}; first at "
                f"{list(first)}: ember {out[first]!r}, onnxruntime {ref[first]!r}{nan_note}"
            )
    return None


def _ort_session(model: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = 1
    # Plain kernels: onnxruntime's own graph rewrites have bugs these graphs reach
    # (its NCHWc conv transform rejects some valid dilated and pooled convolutions).
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def reference_outputs(
    model: bytes, feeds: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray] | None, str]:
    """onnxruntime's outputs by name, or (None, why it refused)."""
    try:
        session = _ort_session(model)
        names = [o.name for o in session.get_outputs()]
        # asarray(order="C"), not ascontiguousarray: that one makes a 0-d input 1-d
        values = session.run(names, {k: np.asarray(v, order="C") for k, v in feeds.items()})
        return dict(zip(names, values)), ""
    except Exception as err:
        return None, f"{type(err).__name__}: {err}"[:400]


# ---------------------------------------------------------------------------------------------
# Running one case (in a worker process)


def _where(err: BaseException) -> str:
    """The deepest ember source location in the traceback (not the fuzzer's own frames)."""
    where = ""
    for frame in traceback.extract_tb(err.__traceback__):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(PACKAGE_ROOT) and path not in _SELF:
            where = f"{path.relative_to(PACKAGE_ROOT)}:{frame.lineno}:{frame.name}"
    return where


def classify_exception(err: BaseException, stage: str) -> dict[str, Any]:
    """error for an EmberError with a message; internal for anything else."""
    from ember.runtime.errors import EmberError

    text = str(err).strip()
    clear = isinstance(err, EmberError) and bool(text)
    result: dict[str, Any] = {
        "status": "error" if clear else "internal",
        "stage": stage,
        "error_type": type(err).__name__,
        "message": f"{type(err).__name__}: {text}"[:800],
        "where": _where(err),
    }
    if not clear:
        result["traceback"] = "".join(traceback.format_exception(err)[-12:])[-4000:]
    return result


_COMPILED_SEEDS: dict[str, Any] = {}


def _compiled_seed(name: str) -> Any:
    import ember

    if name not in _COMPILED_SEEDS:
        _COMPILED_SEEDS[name] = ember.compile(fuzz_cases.seed_model(name), threads=1)
    return _COMPILED_SEEDS[name]


def _outputs_result(
    outputs: dict[str, np.ndarray], model: bytes, feeds: dict[str, np.ndarray], strict: bool
) -> dict[str, Any]:
    """Compare ember's outputs with onnxruntime's on the same feeds."""
    refs, why = reference_outputs(model, feeds)
    if refs is None:
        if strict:
            return {"status": "invalid", "stage": "reference", "message": why}
        return {"status": "pass", "note": f"onnxruntime refuses what ember ran: {why}"}
    if sorted(refs) != sorted(outputs):
        return {
            "status": "wrong",
            "stage": "compare",
            "message": f"outputs {sorted(outputs)}, onnxruntime {sorted(refs)}",
        }
    names = sorted(refs)
    mismatch = compare([outputs[n] for n in names], [refs[n] for n in names])
    if mismatch is None:
        return {"status": "pass"}
    return {
        "status": "wrong",
        "stage": "compare",
        "message": mismatch,
        "nan_only": "[NaN only]" in mismatch,
    }


def run_model(
    model: bytes, input_seed: int, threads: int = 1, reference: bool = True, strict: bool = False
) -> dict[str, Any]:
    """Compile serialized `model` with ember, run it on seeded inputs, compare; never raises.

    `strict`: the model is meant to be valid (differential cases), so onnxruntime refusing it
    is a generator defect ("invalid")."""
    import ember

    with tempfile.TemporaryDirectory(prefix="ember-fuzz-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(model)
        try:
            compiled = ember.compile(str(path), threads=threads)
        except Exception as err:
            return classify_exception(err, "compile")
    try:
        specs = _input_specs(compiled, model)
    except Exception as err:
        return {**classify_exception(err, "inputs"), "status": "internal"}
    for spec in specs:
        nbytes = int(np.prod(spec.shape, dtype=object)) * numpy_dtype(spec.dtype).itemsize
        if nbytes >= 2**63:
            return {
                "status": "internal",
                "stage": "compile",
                "message": f"compiled although input '{spec.name}' {list(spec.shape)} {spec.dtype} has "
                f"{nbytes} bytes, more than int64 byte offsets hold (no ResourceLimitError)",
            }
    try:
        feeds = random_feeds(specs, input_seed)
    except MemoryError:  # a valid model with inputs too big to make (a 2**40 dim...)
        return {"status": "pass", "note": "compiled; its inputs are too large to run it"}
    except Exception as err:  # a dtype numpy cannot make: ember's manifest names it
        return {**classify_exception(err, "inputs"), "status": "internal"}
    try:
        outputs = compiled.run(feeds)
    except Exception as err:
        result = classify_exception(err, "run")
        if reference and result["status"] == "error":
            # Refusing at run time is right only if the model cannot run on these inputs.
            refs, why = reference_outputs(model, feeds)
            if refs is not None and strict:
                result.update(status="wrong", message=f"valid run refused: {result['message']}")
            elif refs is None:
                result["reference_error"] = why
        return result
    if not reference:
        return {"status": "pass"}
    result = _outputs_result(outputs, model, feeds, strict)
    return result


SYMBOLIC_DIM = 2  # the size given to a symbolic input dim when making inputs


def _input_specs(compiled: Any, model: bytes) -> list[TensorSpec]:
    """What `compiled` takes: from its manifest, or, for a model with symbolic dims (no
    manifest until it runs), from the ONNX inputs with SYMBOLIC_DIM."""
    manifest = getattr(compiled, "manifest", None)
    if manifest is not None:
        return list(manifest.inputs)
    graph = onnx.load_from_string(model).graph
    infos = {i.name: i.type.tensor_type for i in graph.input}
    specs = []
    for name in compiled.input_names:
        tensor = infos[name]
        shape = tuple(d.dim_value if d.dim_value > 0 else SYMBOLIC_DIM for d in tensor.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        specs.append(TensorSpec(name, shape, dtype))
    return specs


def _run_inputs_case(case: Case, reference: bool) -> dict[str, Any]:
    compiled = _compiled_seed(case.seed or "")
    valid = "(valid)" in case.detail
    try:
        outputs = compiled.run(case.feeds)
    except Exception as err:
        result = classify_exception(err, "run")
        if valid and result["status"] == "error":
            result.update(status="wrong", message=f"valid input refused: {result['message']}")
        return result
    if not reference:
        return {"status": "pass"}
    feeds = {k: np.asarray(v) for k, v in case.feeds.items()}
    model = fuzz_cases.seed_model(case.seed or "").SerializeToString()
    return _outputs_result(outputs, model, feeds, strict=valid)


def _set_path(document: Any, path: str, value: Any) -> None:
    keys = path.split("/")
    for key in keys[:-1]:
        document = document[int(key)] if isinstance(document, list) else document[key]
    last = keys[-1]
    if isinstance(document, list):
        document[int(last)] = value
    else:
        document[last] = value


def tamper(directory: Path, edit: dict[str, Any], artifacts: Path) -> bool:
    """Apply one artifact edit (see fuzz_cases.ARTIFACT_EDITS) to the artifact in `directory`.

    False when a manifest edit changed nothing (the field already held that value, e.g. an
    arena of 64 bytes set to 64, or is absent): loading is then right, not a miss."""
    from ember.runtime.artifact import LIBRARY_FILE, MANIFEST_FILE, WEIGHTS_FILE, sha256_file
    from ember.runtime.errors import ArtifactError
    from ember.runtime.integrity import code_sha256

    manifest = directory / MANIFEST_FILE
    kind, key, value = edit["kind"], edit["key"], edit["value"]
    if kind == "manifest":
        document = json.loads(manifest.read_text())
        before = json.dumps(document, sort_keys=True)
        try:
            _set_path(document, key, value)
        except (KeyError, IndexError, TypeError):
            pass  # the field is not there in this artifact: the edit is a no-op
        manifest.write_text(json.dumps(document))
        return json.dumps(document, sort_keys=True) != before
    if kind == "manifest-text":
        text = manifest.read_text()
        cut = int(len(text) * edit["position"])
        manifest.write_text(text[:cut] if key == "truncate" else text[:cut] + "\x00}{" + text[cut:])
        return
    target = directory / key
    if kind == "swap":
        shutil.copyfile(artifacts / edit["other_seed"] / key, target)
    elif value == "delete":
        target.unlink()
    else:
        data = bytearray(target.read_bytes())
        if value == "truncate":
            data = data[: int(len(data) * edit["position"])]
        elif value == "flip" and data:
            data[int(len(data) * edit["position"]) % len(data)] ^= 0x10
        elif value == "empty":
            data = bytearray()
        elif value == "extend":
            data += bytes(64)
        target.write_bytes(bytes(data))
    if edit["fix_checksums"] and target.exists():
        document = json.loads(manifest.read_text())
        entry = document["files"][key]
        entry["bytes"] = target.stat().st_size
        entry["sha256"] = sha256_file(target)
        if key == LIBRARY_FILE:
            # The manifest's code hash too: only the hash embedded in model.so is left to
            # catch an edit of its code (runtime/integrity.py).
            try:
                entry["code_sha256"] = code_sha256(target.read_bytes(), target)[0]
            except ArtifactError:
                pass  # not an ELF library any more: nothing to recompute
        if key == WEIGHTS_FILE and kind == "swap":
            document["weights_bytes"] = entry["bytes"]
        manifest.write_text(json.dumps(document))


def _run_artifact_case(case: Case, artifacts: Path | None, reference: bool) -> dict[str, Any]:
    from ember.runtime.artifact import load

    if artifacts is None:
        return {"status": "internal", "stage": "setup", "message": "no artifacts prepared"}
    seed = case.seed or ""
    model = fuzz_cases.seed_model(seed)
    feeds = random_feeds(model_input_specs(model), 0)
    with tempfile.TemporaryDirectory(prefix="ember-fuzz-artifact-") as tmp:
        directory = Path(tmp) / "model.ember"
        shutil.copytree(artifacts / seed, directory)
        try:
            changed = tamper(directory, case.artifact_edit, artifacts)
        except Exception as err:
            return {**classify_exception(err, "tamper"), "status": "internal"}
        try:
            executable = load(directory)
        except Exception as err:
            return classify_exception(err, "load")
        edit = case.artifact_edit
        manifest_edit = edit["kind"] == "manifest"
        if manifest_edit and changed and edit["key"].split("/")[0] in TRUSTED_MANIFEST_FIELDS:
            # The native code was compiled for the original value: running it on the edited one
            # writes out of bounds or returns the wrong thing, even when it happens not to show.
            return {
                "status": "wrong",
                "stage": "load",
                "message": f"artifact loaded although its manifest's {edit['key']} was edited "
                f"to {edit['value']!r}",
            }
        try:
            outputs = executable.run(feeds)
        except Exception as err:
            return classify_exception(err, "run") | {RECYCLE_KEY: True}
    # Tampered native code ran in this worker: whatever it corrupted must not leak into the
    # next case (seen: a heap corrupted by one case aborting a later, unrelated one).
    if not reference:
        return {"status": "pass", RECYCLE_KEY: True}
    result = _outputs_result(outputs, model.SerializeToString(), feeds, strict=False)
    return result | {RECYCLE_KEY: True}


def prepare_artifacts(directory: str) -> dict[str, Any]:
    """Compile every seed model to an artifact under `directory` (one worker job), and check
    that each untampered artifact loads and runs: tampering a broken artifact tests nothing."""
    from ember.engine.aot import compile_artifact, resolve_target
    from ember.runtime.artifact import load

    try:
        for name in fuzz_cases.SEED_BUILDERS:
            model = fuzz_cases.seed_model(name)
            compile_artifact(model, Path(directory) / name, target=resolve_target(ARTIFACT_CPU, 1))
            feeds = random_feeds(model_input_specs(model), 0)
            load(Path(directory) / name).run(feeds)
    except Exception as err:
        return classify_exception(err, "prepare")
    return {"status": "pass"}


def execute(
    case: Case, artifacts: Path | None = None, reference: bool = True, threads: int = 1
) -> dict[str, Any]:
    """Run one case in this process and classify it; never raises."""
    try:
        if case.family == "inputs":
            result = _run_inputs_case(case, reference)
        elif case.family == "artifact":
            result = _run_artifact_case(case, artifacts, reference)
        else:
            assert case.model is not None
            strict = case.family == "diff"
            result = run_model(case.model, 0, threads, reference, strict)
    except Exception as err:  # the fuzzer itself (or the reference) failed outside ember's calls
        result = {**classify_exception(err, "fuzzer"), "status": "internal"}
    return result


_LIMITED = False


def _limit_resources() -> None:
    global _LIMITED
    if _LIMITED:
        return
    _LIMITED = True
    import resource

    limit = int(os.environ.get("EMBER_FUZZ_MEMORY_LIMIT", MEMORY_LIMIT))
    if limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """The worker entry point (see WorkerPool): one case, one model or the artifact setup."""
    _limit_resources()
    if job["op"] == "prepare-artifacts":
        return prepare_artifacts(job["directory"])
    if job["op"] == "model":
        return run_model(job["model"], job.get("input_seed", 0), job.get("threads", 1), True, True)
    name = job["name"]
    case = make_case(name)
    artifacts = Path(job["artifacts"]) if job.get("artifacts") else None
    return execute(case, artifacts, job.get("reference", True), _threads_for(name))


# ---------------------------------------------------------------------------------------------
# Known bugs (being fixed on other branches): findings that match are reported, not new


def _ops(model: bytes | None) -> set[str]:
    if not model:
        return set()
    try:
        ops = [n.op_type for n in onnx.load_from_string(model).graph.node]
    except Exception:
        return set()
    # a flipped bit can leave an op_type that is not UTF-8: protobuf hands back bytes
    return {op if isinstance(op, str) else repr(op) for op in ops}


def known_bug(result: dict[str, Any], case: Case | None = None) -> str | None:
    """The known, filed bug that explains a failing result, if any (the tests xfail those).

    The rules for the bugs this suite first found (residual-add fusion, NaN in max/min
    kernels, Gather/Scatter bounds, import validation, artifact tampering, Tile cost, and
    model.so machine code edited with its checksums rewritten, now caught by the code hash
    the library carries: runtime/integrity.py) were removed when their fixes merged, so the
    suite asserts those failures away. Add a rule only for a bug that is filed, or a
    documented limit.
    """
    del result, case
    return None


# ---------------------------------------------------------------------------------------------
# Delta debugging: the smallest model that still fails the same way


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    graph = model.graph
    return {v.name: v for v in [*graph.input, *graph.output, *graph.value_info]}


def subgraph(
    model: onnx.ModelProto, outputs: Sequence[str], cut: Iterable[str] = ()
) -> onnx.ModelProto:
    """`model` computing only `outputs`, with the values in `cut` turned into graph inputs."""
    infos = _value_infos(model)
    cut = set(cut)
    produced_by = {out: node for node in model.graph.node for out in node.output}
    needed: set[str] = set()
    kept: set[int] = set()
    stack = list(outputs)
    while stack:
        value = stack.pop()
        if value in needed:
            continue
        needed.add(value)
        node = produced_by.get(value)
        if value in cut or node is None:
            continue
        kept.add(id(node))
        stack.extend(i for i in node.input if i)
    graph = model.graph
    nodes = [n for n in graph.node if id(n) in kept]
    produced = {o for n in nodes for o in n.output}
    inputs = [v for v in graph.input if v.name in needed]
    inputs += [infos[v] for v in sorted(cut & needed) if v in infos]
    new = onnx.helper.make_graph(
        nodes,
        graph.name,
        inputs,
        [infos[o] for o in outputs],
        initializer=[t for t in graph.initializer if t.name in needed],
        value_info=[infos[v] for v in sorted(produced - set(outputs)) if v in infos],
    )
    out = onnx.helper.make_model(new, opset_imports=model.opset_import)
    out.ir_version = model.ir_version
    return out


def _bypassed(model: onnx.ModelProto, node_index: int) -> onnx.ModelProto | None:
    """`model` with one node removed, its readers reading its same-shaped input instead."""
    node = model.graph.node[node_index]
    infos = _value_infos(model)
    out = node.output[0]
    if out not in infos:
        return None
    shape = infos[out].type.tensor_type.shape
    replacement = next(
        (i for i in node.input if i in infos and infos[i].type.tensor_type.shape == shape), None
    )
    if replacement is None:
        return None
    new = onnx.ModelProto()
    new.CopyFrom(model)
    del new.graph.node[node_index]
    for other in new.graph.node:
        for slot, name in enumerate(other.input):
            if name == out:
                other.input[slot] = replacement
    outputs = [replacement if o.name == out else o.name for o in new.graph.output]
    if len(set(outputs)) != len(outputs) or replacement in {i.name for i in new.graph.input}:
        return None
    return subgraph(new, outputs)


def shrink_candidates(model: onnx.ModelProto) -> list[onnx.ModelProto]:
    """Smaller variants of `model`, most aggressive first."""
    graph = model.graph
    outputs = [o.name for o in graph.output]
    values = [o for n in graph.node for o in n.output if o]
    singles = [subgraph(model, [v]) for v in values if [v] != outputs]
    singles.sort(key=lambda m: len(m.graph.node))
    fewer_outputs = [
        subgraph(model, [o for o in outputs if o != dropped])
        for dropped in outputs
        if len(outputs) > 1
    ]
    produced = set(values)
    cuts = [
        subgraph(model, outputs, [i])
        for n in graph.node
        for i in dict.fromkeys(n.input)
        if i in produced
    ]
    bypasses = [m for k in range(len(graph.node)) if (m := _bypassed(model, k)) is not None]
    size = len(graph.node)
    smaller = [m for m in singles + cuts + bypasses if len(m.graph.node) < size]
    return smaller + fewer_outputs


def _same_failure(result: dict[str, Any], target: dict[str, Any]) -> bool:
    if result.get("status") != target.get("status"):
        return False
    if target["status"] == "internal":
        return result.get("error_type") == target.get("error_type")
    return True


def reduce_model(
    model: onnx.ModelProto,
    target: dict[str, Any],
    evaluate: Callable[[list[onnx.ModelProto]], list[dict[str, Any]]],
    budget: int = 150,
    batch: int = 4,
) -> tuple[onnx.ModelProto, int]:
    """Shrink `model` while `evaluate` still reports the failure in `target`; (model, tries)."""
    tries = 0
    current = model
    improved = True
    while improved and tries < budget:
        improved = False
        candidates = shrink_candidates(current)
        for start in range(0, len(candidates), batch):
            chunk = candidates[start : start + batch]
            tries += len(chunk)
            for candidate, result in zip(chunk, evaluate(chunk)):
                if _same_failure(result, target):
                    current, improved = candidate, True
                    break
            if improved or tries >= budget:
                break
    return current, tries


# ---------------------------------------------------------------------------------------------
# Campaigns


@dataclass
class FuzzOptions:
    seed: int = 0
    malformed: int = 300
    differential: int = 150
    jobs: int = 2
    timeout: float = 60.0
    reduce: int = 5  # failing differential cases to reduce (0: none)
    findings: Path | None = None  # where to save findings (None: nowhere)
    names: list[str] = field(default_factory=list)  # run these cases instead
    recycle: int = 200  # cases per worker process: bounds the memory JIT-compiled models hold


@dataclass
class Campaign:
    options: FuzzOptions
    results: dict[str, dict[str, Any]]
    seconds: float
    restarts: int

    def counts(self) -> Counter[str]:
        return Counter(r["status"] for r in self.results.values())

    def failures(self, statuses: Iterable[str] = DEFECTS) -> dict[str, dict[str, Any]]:
        wanted = set(statuses)
        return {n: r for n, r in self.results.items() if r["status"] in wanted}

    def unknown_failures(self, statuses: Iterable[str] = DEFECTS) -> dict[str, dict[str, Any]]:
        return {n: r for n, r in self.failures(statuses).items() if not r.get("known_bug")}


def _from_pool(result: dict[str, Any]) -> dict[str, Any]:
    """The pool's crashed/timeout record as a fuzz status."""
    if result.get("status") != "crashed":
        return result
    status = "hang" if result.get("category") == "timeout" else "crash"
    return {"status": status, "stage": "worker", "message": result.get("message", "")}


def run_campaign(
    options: FuzzOptions, progress: Callable[[str, dict[str, Any]], None] | None = None
) -> Campaign:
    """Run the cases of `options` in a worker pool; classify, reduce and save findings."""
    from ember.tools.workers import WorkerPool

    started = time.monotonic()
    names = options.names or case_names(options.seed, options.malformed, options.differential)
    cases = {name: make_case(name) for name in names}
    # Small programs compile in the worker itself: the pool already uses the cores.
    environ = {"EMBER_JOBS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    with (
        tempfile.TemporaryDirectory(prefix="ember-fuzz-") as workdir,
        WorkerPool(
            WORKER_RUNNER, options.jobs, options.timeout, options.recycle, environ=environ
        ) as pool,
    ):
        artifacts = ""
        if any(c.family == "artifact" for c in cases.values()):
            artifacts = str(Path(workdir) / "artifacts")
            setup = _from_pool(
                pool.map([("setup", ({"op": "prepare-artifacts", "directory": artifacts},))])[
                    "setup"
                ]
            )
            if setup["status"] != "pass":
                raise RuntimeError(f"cannot compile the seed artifacts: {setup}")

        def job(name: str, reference: bool = True) -> tuple[str, tuple[dict[str, Any]]]:
            return name, (
                {"op": "case", "name": name, "artifacts": artifacts, "reference": reference},
            )

        results = {
            name: _from_pool(result)
            for name, result in pool.map([job(n) for n in names], progress).items()
        }
        # A crash or hang may be onnxruntime's (it runs after ember in the same worker):
        # rerun those cases without the reference to see whose it is.
        suspects = [n for n, r in results.items() if r["status"] in ("crash", "hang")]
        if suspects:
            again = pool.map([job(n, reference=False) for n in suspects])
            for name in suspects:
                alone = _from_pool(again[name])
                if alone["status"] not in ("crash", "hang"):
                    results[name] = {
                        **alone,
                        "note": f"onnxruntime {results[name]['status']}ed on what ember ran",
                    }
        for name, result in results.items():
            case = cases[name]
            result.update(name=name, family=case.family, detail=case.detail)
            result["ops"] = sorted(_ops(case.model or _seed_bytes(case)))
            if (bug := known_bug(result, case)) is not None:
                result["known_bug"] = bug
        _reduce_failures(options, cases, results, pool)
        restarts = pool.restarts
    campaign = Campaign(options, results, time.monotonic() - started, restarts)
    if options.findings is not None:
        save_findings(campaign, cases, options.findings)
    return campaign


def _seed_bytes(case: Case) -> bytes | None:
    return fuzz_cases.seed_model(case.seed).SerializeToString() if case.seed else None


def _reduce_failures(
    options: FuzzOptions, cases: dict[str, Case], results: dict[str, dict[str, Any]], pool: Any
) -> None:
    failing = [
        n
        for n, r in results.items()
        if cases[n].family == "diff" and r["status"] in ("wrong", "internal", "crash", "hang")
    ]
    # Unknown failures first: they are the news.
    others = sorted(failing, key=lambda n: (bool(results[n].get("known_bug")), n))
    for name in others[: options.reduce]:
        model = onnx.load_from_string(cases[name].model or b"")
        threads = _threads_for(name)

        def evaluate(models: list[onnx.ModelProto], threads: int = threads) -> list[dict[str, Any]]:
            jobs = [
                (k, ({"op": "model", "model": m.SerializeToString(), "threads": threads},))
                for k, m in enumerate(models)
            ]
            out = pool.map(jobs)
            return [_from_pool(out[k]) for k in range(len(models))]

        reduced, tries = reduce_model(model, results[name], evaluate, batch=2 * pool.jobs)
        results[name]["reduced"] = {
            "model": reduced.SerializeToString(),
            "nodes": len(reduced.graph.node),
            "ops": [n.op_type for n in reduced.graph.node],
            "tries": tries,
        }


REPRO = '''"""Fuzz finding {name}: {status} ({family}) - {detail}

{message}

Run from anywhere ember is importable: python repro.py
"""

from pathlib import Path

from ember.tools.fuzz import replay, check_model_file

here = Path(__file__).parent
{call}
'''


def save_findings(campaign: Campaign, cases: dict[str, Case], root: Path) -> list[Path]:
    """One folder per failing case: case.json, model.onnx (and reduced.onnx), repro.py."""
    saved = []
    for name, result in campaign.failures().items():
        case = cases[name]
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        reduced = result.get("reduced")
        record = {k: v for k, v in result.items() if k != "reduced"}
        if reduced:
            record["reduced"] = {k: v for k, v in reduced.items() if k != "model"}
            (folder / "reduced.onnx").write_bytes(reduced["model"])
        if case.model is not None:
            (folder / "model.onnx").write_bytes(case.model)
        if case.feeds is not None:
            (folder / "feeds.pkl").write_bytes(pickle.dumps(case.feeds))
        (folder / "case.json").write_text(json.dumps(record, indent=1, default=str))
        calls = [f"replay({name!r})"]
        if reduced:
            calls.append(f'check_model_file(here / "reduced.onnx", threads={_threads_for(name)})')
        (folder / "repro.py").write_text(
            REPRO.format(
                name=name,
                status=result["status"],
                family=case.family,
                detail=case.detail,
                message=str(result.get("message", ""))[:400].replace('"""', "'''"),
                call="\n".join(calls),
            )
        )
        saved.append(folder)
    return saved


def replay(name: str) -> dict[str, Any]:
    """Run one case in this process (a crash kills it: that is the reproduction) and print it."""
    case = make_case(name)
    artifacts = None
    if case.family == "artifact":
        artifacts = Path(tempfile.mkdtemp(prefix="ember-fuzz-artifacts-"))
        prepare_artifacts(str(artifacts))
    print(f"{name} ({case.family}): {case.detail}", flush=True)
    result = execute(case, artifacts, True, _threads_for(name))
    _print_result(result)
    return result


def check_model_file(path: str | os.PathLike[str], threads: int = 1) -> dict[str, Any]:
    """Compile one .onnx with ember, run it on seeded inputs, compare with onnxruntime."""
    result = run_model(Path(path).read_bytes(), 0, threads, True, True)
    _print_result(result)
    return result


def _print_result(result: dict[str, Any]) -> None:
    print(f"status: {result['status']}")
    for key in ("stage", "message", "where", "note", "reference_error"):
        if result.get(key):
            print(f"{key}: {result[key]}")
    if result.get("traceback"):
        print(result["traceback"])


def _group_key(result: dict[str, Any]) -> tuple[str, ...]:
    from ember.tools.conformance.report import normalize_message

    message = normalize_message(result.get("message", ""))
    return (result["status"], result.get("family", ""), result.get("where", ""), message)


def failure_groups(campaign: Campaign) -> list[dict[str, Any]]:
    """Failures grouped by (status, family, where, normalized message), largest first."""
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for name, result in campaign.failures().items():
        key = (*_group_key(result), result.get("known_bug") or "")
        group = groups.setdefault(
            key,
            {
                "status": key[0],
                "family": key[1],
                "where": key[2],
                "message": result.get("message", ""),
                "known_bug": result.get("known_bug"),
                "cases": [],
            },
        )
        group["cases"].append(name)
    return sorted(groups.values(), key=lambda g: (bool(g["known_bug"]), -len(g["cases"])))


def format_summary(campaign: Campaign) -> str:
    counts = campaign.counts()
    families = sorted({r["family"] for r in campaign.results.values()})
    lines = [f"{'family':<10} " + " ".join(f"{s:>8}" for s in STATUSES)]
    for family in families:
        per = Counter(r["status"] for r in campaign.results.values() if r["family"] == family)
        lines.append(f"{family:<10} " + " ".join(f"{per[s]:>8}" for s in STATUSES))
    lines.append(f"{'total':<10} " + " ".join(f"{counts[s]:>8}" for s in STATUSES))
    lines.append(
        f"{len(campaign.results)} cases in {campaign.seconds:.1f} s, "
        f"{campaign.restarts} worker restarts"
    )
    groups = failure_groups(campaign)
    if groups:
        lines += ["", f"failures ({len(groups)} groups, new ones first):"]
    for group in groups:
        tag = f"known: {group['known_bug']}" if group["known_bug"] else "NEW"
        cases = group["cases"]
        lines.append(
            f"  [{tag}] {len(cases)} x {group['status']}/{group['family']}"
            f"{' at ' + group['where'] if group['where'] else ''}"
        )
        lines.append(f"      {' '.join(group['message'].split())[:300]}")
        example = campaign.results[cases[0]]
        lines.append(f"      e.g. {cases[0]}: {example['detail'][:200]}")
        if example.get("reduced"):
            r = example["reduced"]
            lines.append(f"      reduced to {r['nodes']} nodes: {' '.join(r['ops'])}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        parents=[verbosity_options()],
        prog="ember fuzz",
        description="Fuzz ember and compare it with onnxruntime.",
    )
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    parser.add_argument("--malformed", type=int, default=300, help="malformed cases (300)")
    parser.add_argument("--differential", type=int, default=150, help="random graphs (150)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case (60)")
    parser.add_argument("--reduce", type=int, default=5, help="failing graphs to reduce (5)")
    parser.add_argument("--findings", type=Path, help="save failing cases here, with repro.py")
    parser.add_argument("--json", type=Path, help="write every case's result here")
    parser.add_argument("--case", action="append", default=[], help="run only this case")
    parser.add_argument("--replay", help="run one case in this process and print the result")
    parser.add_argument("--check-model", type=Path, help="compile + compare one .onnx file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    apply_verbosity(args)
    if args.replay:
        return 0 if replay(args.replay)["status"] in ("pass", "error") else 1
    if args.check_model:
        return 0 if check_model_file(args.check_model)["status"] in ("pass", "error") else 1
    options = FuzzOptions(
        seed=args.seed,
        malformed=args.malformed,
        differential=args.differential,
        jobs=args.jobs,
        timeout=args.timeout,
        reduce=args.reduce,
        findings=args.findings,
        names=args.case,
    )
    total = len(options.names) or options.malformed + options.differential
    done = [0]

    def progress(name: str, result: dict[str, Any]) -> None:
        done[0] += 1
        status = _from_pool(result)["status"]
        if not args.quiet and (status not in ("pass", "error") or done[0] % 100 == 0):
            print(f"[{done[0]}/{total}] {name}: {status}", flush=True)

    campaign = run_campaign(options, progress)
    print(format_summary(campaign))
    if args.json:
        records = {
            n: {k: v for k, v in r.items() if k != "reduced"}
            | ({"reduced_ops": r["reduced"]["ops"]} if r.get("reduced") else {})
            for n, r in campaign.results.items()
        }
        args.json.write_text(
            json.dumps({"options": asdict(options), "results": records}, default=str, indent=1)
        )
    if args.findings:
        print(f"findings saved under {args.findings}")
    return 1 if campaign.unknown_failures() else 0


if __name__ == "__main__":
    sys.exit(main())
