"""Running cases: one case in a worker process (`run_case`), many in a worker pool (`run_cases`).

Each case is compiled by `EmberBackend.prepare` and run on native code; the outputs are compared
by ONNX's own `Runner.assert_similar_outputs` (rtol 1e-3, atol 1e-7). A worker that crashes or
exceeds the per-case timeout is replaced and the case is recorded as crashed (tools/workers.py).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ember.engine.shapes import freeze_inputs
from ember.tools.conformance.data import load_case

RTOL = 1e-3
ATOL = 1e-7
STATUSES = ("passed", "failed", "errored", "crashed")
# Categories of `errored` cases that are ember refusing the model with a clear error.
REFUSALS = ("unsupported-op", "unsupported-variant", "frontend-error", "run-refused")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------------------------
# Shape operands
#
# Node tests feed every operand as a graph input, including those that fix an output's shape
# (Reshape's shape, Slice's starts, a reduction's axes) or a quantizer's parameters. Real models
# carry these as initializers, and ember compiles static shapes, so by default the runner turns
# the graph inputs feeding these positions into initializers holding the test's values (as
# onnx-mlir's backend tests do with CONSTANT_INPUT). The data operands stay runtime inputs.
# `ember conformance` runs without this by default (every operand a graph input, as ONNX's
# runner gives them: ember specialises on the values of shape operands, engine/specialize.py);
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
    # control flow: a Loop with scan outputs needs its trip count and first condition
    "Loop": (0, 1),
    "Upsample": (1,),
    **{
        f"Reduce{kind}": (1,)
        for kind in ("L1", "L2", "LogSum", "LogSumExp", "Max", "Mean", "Min", "Prod", "Sum")
    },
    "ReduceSumSquare": (1,),
    # Sequence positions and SplitToSequence's split (frontend/ops/sequence.py).
    "SequenceAt": (1,),
    "SequenceErase": (1,),
    "SequenceInsert": (2,),
    "SplitToSequence": (1,),
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
    compiled = rep.compiled
    return len(compiled.unread_inputs) == len(compiled.manifest.inputs)


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


def assert_similar_outputs(
    refs: Sequence[Any], outs: Sequence[Any], rtol: float, atol: float
) -> None:
    """ONNX's `Runner.assert_similar_outputs`, with sequences (lists) compared element by
    element and empty optionals (None) as such: ONNX's recursion hands each element to itself
    as if it were a list of outputs, so a 0-d element fails and a sequence shorter than the
    expected one passes."""
    from onnx.backend.test.runner import Runner

    np.testing.assert_equal(len(outs), len(refs))
    for index, (ref, out) in enumerate(zip(refs, outs)):
        if ref is None or out is None or isinstance(ref, list | tuple):
            expected = "None" if ref is None else type(ref).__name__
            if (ref is None) != (out is None) or isinstance(ref, list) != isinstance(out, list):
                raise AssertionError(
                    f"output {index}: expected {expected}, given {type(out).__name__}"
                )
            if ref is None:
                continue
            np.testing.assert_equal(len(out), len(ref), err_msg=f"output {index}: sequence length")
            Runner.assert_similar_outputs(list(ref), list(out), rtol=rtol, atol=atol)
        else:
            Runner.assert_similar_outputs([ref], [out], rtol=rtol, atol=atol)


def run_case(case_dir: str, rtol: float, atol: float, options: dict[str, Any]) -> dict[str, Any]:
    """Compile and run one case with EmberBackend; never raises."""
    from ember.engine.onnx_backend import BackendCompileError, EmberBackend, UnsupportedOpsError
    from ember.frontend.errors import ModelError, UnsupportedOpError
    from ember.runtime.errors import EmberError

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
            assert_similar_outputs(refs, outs, rtol, atol)
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
# Many cases in worker processes (tools/workers.py)


@dataclass
class RunOptions:
    jobs: int = 2
    timeout: float = 60.0
    recycle: int = 100  # cases per worker process: bounds memory held by JIT-compiled modules
    backend: dict[str, Any] = field(default_factory=lambda: {"threads": 1})
    freeze: bool = True  # see SHAPE_OPERANDS
    runner: str = "ember.tools.conformance.runner:run_case"
    environ: dict[str, str] = field(default_factory=dict)  # set in the worker processes


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
    with WorkerPool(
        options.runner, options.jobs, options.timeout, options.recycle, environ=options.environ
    ) as pool:
        return pool.map(jobs, progress)  # type: ignore[arg-type]
