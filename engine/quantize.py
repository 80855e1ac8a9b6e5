"""`ember quantize` and `ember.quantize(...)`: post-training int8 quantization to a QDQ model.

    ember quantize model.onnx -o model.int8.onnx --calib calib/ [--method entropy]
    ember quantize bert.onnx -o bert.int8.onnx --dynamic
    quantized = ember.quantize("model.onnx", calibration=feeds, output="model.int8.onnx")

The transformation itself is frontend/quantize.py (ONNX -> ONNX) and the calibration
frontend/calibrate.py; this layer supplies what they must not import: the runner (the model
with its intermediate tensors as outputs, compiled by `ember.compile`), seeded random inputs
when no calibration data is given, and the accuracy report (quantized vs float model, per
output: max abs difference, that over max |float output|, cosine similarity).
See docs/quantization.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ember.engine.feeds import seeded_inputs
from ember.engine.shapes import InputShapes, ModelSource, external_data_folder, read_model
from ember.runtime.errors import InputError

if TYPE_CHECKING:
    from ember.frontend.calibrate import RunModel

# The frontend (and so xDSL) is imported when quantizing, not with this module: `ember run` of
# an artifact imports the CLI, which imports this module for its options.

# Seeded random batches calibrated on when no data is given.
RANDOM_BATCHES = 8
Calibration = str | os.PathLike[str] | Iterable[Mapping[str, np.ndarray]] | None


def quantize(
    model: ModelSource,
    output: str | os.PathLike[str] | None = None,
    *,
    calibration: Calibration = None,
    dynamic: bool = False,
    method: str = "minmax",
    percentile: float = 99.999,
    per_channel: bool = True,
    activation_type: str = "u8",
    reduce_range: bool | None = None,
    target_cpu: str = "host",
    keep_float_nodes: Sequence[str] = (),
    keep_float_op_types: Sequence[str] = (),
    input_shapes: InputShapes | None = None,
    threads: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> onnx.ModelProto:
    """The int8 model of `model` (a path or ModelProto), also written to `output` if given.

    Static (default): QDQ form, activation ranges calibrated by `method` ("minmax",
    "percentile", "entropy") on `calibration`: a folder of .npy/.npz batches, an iterable of
    feed dicts, or None for seeded random inputs (a warning: ranges of random data say little
    about real data). `dynamic=True`: MatMuls with constant weights in onnxruntime's dynamic
    form (DynamicQuantizeLinear + MatMulInteger), no calibration. Weights are symmetric s8
    (per output channel with `per_channel`), activations `activation_type` "u8" or "s8".
    `reduce_range`: 7-bit weights ([-64, 64], onnxruntime's reduce_range); None (default)
    chooses them when `target_cpu` ("host" or an LLVM cpu name) has no VNNI (neither AVX-512
    VNNI nor AVX-VNNI), whose int8 kernel would otherwise split every 8-bit weight in two.
    Nodes named in `keep_float_nodes` and ops in `keep_float_op_types` stay float.
    `input_shapes` pins symbolic input dims for the calibration compile and random data.
    """
    from ember.frontend import calibrate as calib
    from ember.frontend import quantize as quantization

    if reduce_range is None:
        reduce_range = not target_has_vnni(target_cpu)
    options = quantization.QuantizeOptions(
        per_channel=per_channel,
        activation_type=activation_type,
        reduce_range=reduce_range,
        keep_float_nodes=frozenset(keep_float_nodes),
        keep_float_op_types=frozenset(keep_float_op_types),
    )
    if not dynamic:
        calib.check_method(method, percentile)
    proto = load_with_weights(model)
    if dynamic:
        result = quantization.quantize_dynamic(proto, options)
    else:
        prepared = quantization.prepare(proto)
        plan = quantization.plan_static(prepared, options)
        ranges = {}
        if plan.calibration_tensors:  # else nothing to quantize: no compile, no warning
            ranges = calib.calibrate(
                prepared,
                plan.calibration_tensors,
                calibration_feeds(prepared, calibration, input_shapes, seed),
                _runner(input_shapes, threads),
                method=method,
                percentile=percentile,
                progress=progress,
            )
        result = quantization.quantize_static(prepared, ranges, options)
    if output is not None:
        onnx.save(result, os.fspath(output))
    return result


def target_has_vnni(target_cpu: str = "host") -> bool:
    """Whether the int8 kernels for `target_cpu` use vpdpbusd (AVX-512 VNNI or AVX-VNNI);
    without it they use vpmaddubsw (AVX2), which wants 7-bit weights."""
    from ember.dialects.weight_layouts import int8_isa
    from ember.engine.aot import resolve_target

    return int8_isa(resolve_target(target_cpu, 1)).name != "avx2"


def load_with_weights(model: ModelSource) -> onnx.ModelProto:
    """The model with its weights in memory (external data read from its folder, with onnx's
    checks on where that data may live)."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    proto = read_model(model)
    if any(uses_external_data(t) for t in proto.graph.initializer):
        folder = external_data_folder(model, None)
        if folder is None:
            raise InputError("the model's weights are in external files: pass it as a path")
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        load_external_data_for_model(copy, os.fspath(folder))
        return copy
    return proto


def _runner(input_shapes: InputShapes | None, threads: int | None) -> RunModel:
    """Compiles a model with ember; the result runs feeds to a dict of all outputs."""
    from ember.engine.compile import compile

    def run_model(model: onnx.ModelProto) -> Callable[[Mapping[str, np.ndarray]], Mapping]:
        return compile(model, input_shapes=input_shapes, threads=threads).run

    return run_model


def _input_names(model: onnx.ModelProto) -> list[str]:
    initializers = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def calibration_feeds(
    model: onnx.ModelProto,
    data: Calibration,
    input_shapes: InputShapes | None = None,
    seed: int = 0,
) -> Iterable[Mapping[str, np.ndarray]]:
    """The batches to calibrate on: read from a folder, the iterable given, or (None) seeded
    random inputs with a warning (index inputs in the range the model accepts)."""
    from ember.frontend import calibrate as calib

    if data is None:
        calib.warn_random_calibration(model.graph.name or "the model")
        return [seeded_inputs(model, seed + i, input_shapes) for i in range(RANDOM_BATCHES)]
    if isinstance(data, (str, os.PathLike)):
        return calib.read_calibration_folder(data, _input_names(model))
    return data


# -- accuracy report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputAccuracy:
    """One output of the quantized model against the float model, over all batches."""

    name: str
    max_abs: float
    max_rel: float  # max_abs / max |float output|
    cosine: float


def accuracy_report(
    float_model: ModelSource,
    quantized_model: ModelSource,
    feeds: Iterable[Mapping[str, np.ndarray]],
    input_shapes: InputShapes | None = None,
    threads: int | None = None,
) -> list[OutputAccuracy]:
    """Per float output: the quantized model's error over `feeds`, both compiled by ember."""
    run_float = _runner(input_shapes, threads)(load_with_weights(float_model))
    run_quantized = _runner(input_shapes, threads)(read_model(quantized_model))
    expected: dict[str, list[np.ndarray]] = {}
    actual: dict[str, list[np.ndarray]] = {}
    for feed in feeds:
        reference = run_float(feed)
        result = run_quantized(feed)
        for name, value in reference.items():
            if np.issubdtype(np.asarray(value).dtype, np.floating):
                expected.setdefault(name, []).append(np.asarray(value, np.float64).reshape(-1))
                actual.setdefault(name, []).append(np.asarray(result[name], np.float64).reshape(-1))
    report = []
    for name, parts in expected.items():
        e, a = np.concatenate(parts), np.concatenate(actual[name])
        max_abs = float(np.max(np.abs(a - e))) if e.size else 0.0
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        norms = float(np.linalg.norm(a) * np.linalg.norm(e))
        cosine = float(np.dot(a, e) / norms) if norms > 0 else float(np.array_equal(a, e))
        report.append(OutputAccuracy(name, max_abs, max_abs / scale if scale else 0.0, cosine))
    return report


def format_accuracy(report: Sequence[OutputAccuracy], source: str) -> str:
    """The report as a table; `source` says what it was measured on."""
    width = max([len("output"), *(len(r.name) for r in report)])
    lines = [
        f"accuracy of the int8 model vs the float model on {source} (rel = max abs / max |float|):"
    ]
    lines.append(f"  {'output':<{width}} {'max abs':>10} {'max rel':>10} {'cosine':>9}")
    for r in report:
        lines.append(f"  {r.name:<{width}} {r.max_abs:10.3e} {r.max_rel:10.3e} {r.cosine:9.6f}")
    return "\n".join(lines)


def count_quantized(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each quantization op the model has (for the CLI's summary)."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "MatMulInteger",
                            "DynamicQuantizeLinear"):  # fmt: skip
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
