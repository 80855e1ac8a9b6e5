"""Calibration for post-training quantization: the range of each activation tensor.

    feeds = read_calibration_folder("calib/", input_names)    # or any iterable of feed dicts
    ranges = calibrate(model, ["conv_out", ...], feeds, run_model, method="entropy")

The model is not run here: `run_model(model)` (supplied by the tools layer, e.g. built on
`ember.compile`) compiles a copy of the model whose graph outputs include the tensors to
calibrate and returns a function from feeds to outputs, so this module stays a pure ONNX ->
ranges transformation below the compiler.

Methods (each gives a range [lo, hi] that contains 0, as quantization needs):

- `minmax`: the smallest and largest value seen. Exact; outliers stretch the scale.
- `percentile`: each tail clipped so that at most (100 - percentile)% of the values seen fall
  outside, read from a histogram (onnxruntime's percentile calibrator, per tail).
- `entropy`: the clipping threshold t on |x| that minimises the KL divergence between the
  histogram of |x| and its quantization to 128 levels (TensorRT's int8 calibration, as
  onnxruntime's entropy calibrator computes it); the range is [max(min, -t), min(max, t)].

Histograms have `HISTOGRAM_BINS` bins over [0, max |x| seen so far] (of |x| for entropy) or
[min, max] (percentile); when a later batch widens the range, the counts are re-binned onto the
wider bins (each old bin's count moved to the new bin holding its centre), so one pass over the
data suffices.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ember.runtime.errors import InputError, ModelError

Feeds = Mapping[str, np.ndarray]
# Compiles a model and returns a function from feeds to all of its outputs by name.
RunModel = Callable[[onnx.ModelProto], Callable[[Feeds], Mapping[str, np.ndarray]]]

METHODS = ("minmax", "percentile", "entropy")
HISTOGRAM_BINS = 2048
# The number of quantized levels the entropy method compares against (of |x|: 8 bits, one sign).
ENTROPY_LEVELS = 128
# Thresholds the entropy method tries (evenly spaced bin indices from ENTROPY_LEVELS to the last
# bin); every bin would cost ~16x more for no measurable gain in the tests.
ENTROPY_CANDIDATES = 128


@dataclass(frozen=True)
class TensorRange:
    """The calibrated range of one tensor; lo <= 0 <= hi."""

    lo: float
    hi: float


class _Histogram:
    """Counts over [lo, hi] in HISTOGRAM_BINS bins, re-binned when the range widens."""

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None
        self.lo = 0.0
        self.hi = 0.0

    def add(self, values: np.ndarray, lo: float, hi: float) -> None:
        if self.counts is not None and (lo < self.lo or hi > self.hi):
            self._rebin(min(lo, self.lo), max(hi, self.hi))
        if self.counts is None:
            # A constant tensor still gets a bin width > 0.
            self.lo, self.hi = lo, hi if hi > lo else lo + max(abs(lo), 1.0) * 1e-6
            self.counts = np.zeros(HISTOGRAM_BINS, np.float64)
        counts, _ = np.histogram(values, HISTOGRAM_BINS, (self.lo, self.hi))
        self.counts += counts

    def _rebin(self, lo: float, hi: float) -> None:
        assert self.counts is not None
        old_edges = np.linspace(self.lo, self.hi, HISTOGRAM_BINS + 1)
        centres = (old_edges[:-1] + old_edges[1:]) / 2
        self.counts, _ = np.histogram(centres, HISTOGRAM_BINS, (lo, hi), weights=self.counts)
        self.lo, self.hi = lo, hi

    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, HISTOGRAM_BINS + 1)


def check_method(method: str, percentile: float) -> None:
    """InputError for an unknown method or a percentile outside (50, 100]."""
    if method not in METHODS:
        raise InputError(f"calibration method '{method}': expected one of {list(METHODS)}")
    if not 50.0 < percentile <= 100.0:
        raise InputError(f"percentile {percentile}: expected a value in (50, 100]")


class Calibrator:
    """Collects the values of the tensors named in `collect` and gives their ranges."""

    def __init__(self, method: str = "minmax", percentile: float = 99.999) -> None:
        check_method(method, percentile)
        self.method = method
        self.percentile = percentile
        self._min: dict[str, float] = {}
        self._max: dict[str, float] = {}
        self._histograms: dict[str, _Histogram] = {}

    def collect(self, name: str, values: np.ndarray) -> None:
        values = np.asarray(values, np.float32).reshape(-1)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        lo, hi = float(values.min()), float(values.max())
        self._min[name] = min(lo, self._min.get(name, lo))
        self._max[name] = max(hi, self._max.get(name, hi))
        if self.method == "percentile":
            self._histograms.setdefault(name, _Histogram()).add(values, lo, hi)
        elif self.method == "entropy":
            # Zeros (half of a Relu's output) quantize exactly whatever the threshold; in the
            # histogram their spike would be smeared over its level's bins by Q, and favour
            # small thresholds for no gain.
            magnitudes = np.abs(values[values != 0])
            if magnitudes.size == 0:
                return
            self._histograms.setdefault(name, _Histogram()).add(magnitudes, 0.0, max(-lo, hi))

    def ranges(self) -> dict[str, TensorRange]:
        result = {}
        for name in self._min:
            lo, hi = self._min[name], self._max[name]
            if self.method == "percentile":
                lo, hi = _percentile_range(self._histograms[name], self.percentile, lo, hi)
            elif self.method == "entropy" and name in self._histograms:  # else all zeros
                threshold = entropy_threshold(self._histograms[name])
                lo, hi = max(lo, -threshold), min(hi, threshold)
            result[name] = TensorRange(min(lo, 0.0), max(hi, 0.0))
        return result


def _percentile_range(
    histogram: _Histogram, percentile: float, lo: float, hi: float
) -> tuple[float, float]:
    """The values below which (100 - percentile)% of the mass lies, and above which as much."""
    assert histogram.counts is not None
    cdf = np.cumsum(histogram.counts)
    total = cdf[-1]
    tail = total * (100.0 - percentile) / 100.0
    edges = histogram.edges()
    # The first bin whose cumulative count passes the lower tail starts the range; the last bin
    # reached before the upper tail starts ends it.
    low_bin = int(np.searchsorted(cdf, tail, side="right"))
    high_bin = int(np.searchsorted(cdf, total - tail, side="left"))
    return max(lo, float(edges[low_bin])), min(hi, float(edges[min(high_bin + 1, HISTOGRAM_BINS)]))


def entropy_threshold(histogram: _Histogram) -> float:
    """The clipping threshold on |x| whose 128-level quantization loses the least information
    (smallest KL(P || Q)), TensorRT's calibration: P is the histogram cut at the threshold with
    the cut-off mass added to its last bin, Q is P merged into 128 levels and expanded back,
    each level's mass spread evenly over the bins of P that are non-zero."""
    counts = histogram.counts
    assert counts is not None
    edges = histogram.edges()
    bins = len(counts)
    if bins <= ENTROPY_LEVELS or counts.sum() == 0:
        return float(edges[-1])
    candidates = np.unique(np.linspace(ENTROPY_LEVELS, bins, ENTROPY_CANDIDATES).astype(int))
    best_kl, best = np.inf, bins
    for cut in candidates:
        reference = counts[:cut].copy()
        reference[cut - 1] += counts[cut:].sum()
        nonzero = reference > 0
        # Bin i of P belongs to level floor(i * levels / cut).
        level_of = (np.arange(cut) * ENTROPY_LEVELS) // cut
        level_mass = np.bincount(level_of, weights=counts[:cut], minlength=ENTROPY_LEVELS)
        level_bins = np.bincount(level_of, weights=nonzero, minlength=ENTROPY_LEVELS)
        with np.errstate(divide="ignore", invalid="ignore"):
            expanded = np.where(nonzero, level_mass[level_of] / level_bins[level_of], 0.0)
        p = reference / reference.sum()
        q_total = expanded.sum()
        if q_total == 0:
            continue
        q = expanded / q_total
        # P > 0 where Q == 0 (all of a level's mass cut off to the outlier bin) is a smoothed,
        # not an infinite, divergence, as onnxruntime's smoothing does.
        q = np.where(nonzero & (q == 0), 1e-10, q)
        kl = float(np.sum(p[nonzero] * np.log(p[nonzero] / q[nonzero])))
        if kl < best_kl:
            best_kl, best = kl, int(cut)
    return float(edges[best])


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs also include the float tensors `names`."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    present = {o.name for o in augmented.graph.output}
    for name in names:
        if name not in present:
            augmented.graph.output.append(
                helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
            present.add(name)
    return augmented


def calibrate(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    feeds: Iterable[Feeds],
    run_model: RunModel,
    method: str = "minmax",
    percentile: float = 99.999,
    progress: bool = False,
) -> dict[str, TensorRange]:
    """The range of each of `tensors` over the batches `feeds`, by `method` (see the module
    docstring). `run_model` compiles the model with those tensors as extra outputs once. A
    tensor that no batch gave a finite value is a ModelError naming it."""
    calibrator = Calibrator(method, percentile)
    run = run_model(with_outputs(model, tensors))
    batches = 0
    for feed in _progress(feeds, progress):
        outputs = run(feed)
        for name in tensors:
            calibrator.collect(name, outputs[name])
        batches += 1
    if batches == 0:
        raise InputError("calibration data is empty: give at least one batch of inputs")
    ranges = calibrator.ranges()
    missing = [name for name in tensors if name not in ranges]
    if missing:
        raise ModelError(
            f"calibration saw no finite value of tensors {missing[:5]} in {batches} batches: "
            "they cannot be quantized (keep their nodes in float)"
        )
    return ranges


def _progress(feeds: Iterable[Feeds], show: bool) -> Iterator[Feeds]:
    if not show:
        yield from feeds
        return
    from tqdm import tqdm

    total = len(feeds) if isinstance(feeds, Sequence) else None
    # disable=None: drawn on a terminal only (logs and captured output stay clean).
    yield from tqdm(feeds, total=total, desc="calibrating", unit="batch", leave=False, disable=None)


def read_calibration_folder(folder: str | Path, input_names: Sequence[str]) -> list[dict]:
    """Batches of feeds from a folder, in file-name order: each `.npz` is one batch (arrays
    named after the inputs); a `.npy` file is one batch of the model's single input, or, for a
    model of several inputs, named `<input>.npy` inside a sub-folder per batch. InputError
    names a file that is unreadable or names no input."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"calibration data {folder}: not a directory")
    batches: list[dict] = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".npz":
            batches.append(_read_npz(path, input_names))
        elif path.suffix == ".npy":
            if len(input_names) != 1:
                raise InputError(
                    f"calibration file {path}: a .npy file feeds one input, the model has "
                    f"{list(input_names)}; use .npz files (one array per input) or one "
                    "sub-folder per batch with <input>.npy files"
                )
            batches.append({input_names[0]: _load(path)})
        elif path.is_dir():
            batch = {p.stem: _load(p) for p in sorted(path.glob("*.npy"))}
            unknown = sorted(set(batch) - set(input_names))
            if unknown:
                raise InputError(
                    f"calibration folder {path}: files {unknown} name no input of the model; "
                    f"inputs: {list(input_names)}"
                )
            if batch:
                batches.append(batch)
    if not batches:
        raise InputError(f"calibration data {folder}: no .npz, .npy or batch folder in it")
    return batches


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputError(f"calibration file {path}: cannot read it ({error})") from None


def _read_npz(path: Path, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            batch = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise InputError(f"calibration file {path}: cannot read it ({error})") from None
    unknown = sorted(set(batch) - set(input_names))
    if unknown:
        if len(batch) == 1 and len(input_names) == 1:
            return {input_names[0]: next(iter(batch.values()))}
        raise InputError(
            f"calibration file {path}: arrays {unknown} name no input of the model; "
            f"inputs: {list(input_names)}"
        )
    return batch


def warn_random_calibration(what: str) -> None:
    """The warning for calibrating on seeded random data (the tools layer makes the data)."""
    warnings.warn(
        f"no calibration data given: calibrating {what} on seeded random inputs; activation "
        "ranges (and so accuracy) will not reflect real data. Pass a folder of .npy/.npz "
        "batches or an iterable of feed dicts.",
        stacklevel=3,
    )
