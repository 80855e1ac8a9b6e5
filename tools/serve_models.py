"""`ember serve`'s model repository: what each model is, how it is configured, how it is batched.

A repository is a folder. Each entry is one model, named after it:

    repo/
      resnet/              an artifact folder written by `ember compile` (manifest.json, model.so)
        config.json        optional: this model's settings (below)
      bert/                a folder holding one .onnx file, compiled when the server starts
        model.onnx
        config.json
      tiny.onnx            an .onnx file: served with the command line's settings

config.json (every key optional; the command line's flags give the defaults):

    {"instances": 2, "threads_per_instance": 1, "max_batch_size": 8,
     "preferred_batch_sizes": [1, 2, 4, 8], "max_queue_delay_ms": 2, "queue_limit": 256,
     "request_timeout_s": 60, "max_request_bytes": 67108864,
     "assume_independent_rows": false, "warmup_dims": {"seq": [64, 128]},
     "sequence": {"inputs": {"input_ids": [1, 0], "attention_mask": [1, 0]},
                  "outputs": {"last_hidden_state": 1}, "buckets": [16, 32, 64, 128]}}

Batching needs a batch axis: axis 0 of every input and output declared with one symbolic dim
(an .onnx model) or, for an artifact, with one fixed size B > 1 (batches are padded to B). An
artifact compiled for batch 1 is served one request per run. Before batching a model, the
server runs seeded rows alone and in a batch and compares them: a model that mixes rows
(BatchNorm in training mode, a reduction over the batch) is served unbatched, never answered
with another request's influence. `assume_independent_rows` skips that check.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ember.engine.shapes import Dim, InputSignature, ModelSignature, check_run_shapes
from ember.runtime.artifact import MANIFEST_FILE
from ember.runtime.batching import BatchPolicy, SequencePadding, concatenate, split
from ember.runtime.documents import Field, parse_json
from ember.runtime.errors import EmberError, InputError, ModelError
from ember.runtime.executable import check_feed_names, numpy_dtype

log = logging.getLogger("ember.serve")

CONFIG_FILE = "config.json"
# Rows of the seeded inputs the batching check compares (alone, then in a batch of two).
_PROBE_SEED = 0


@dataclass(frozen=True)
class ModelSettings:
    """One model's serving settings: the command line's, then its config.json's."""

    instances: int = 1
    threads_per_instance: int | None = None  # None: the cores split between all instances
    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    max_queue_delay_ms: float = 2.0
    queue_limit: int = 256
    request_timeout_s: float = 60.0
    max_request_bytes: int = 64 << 20
    assume_independent_rows: bool = False
    sequence: SequencePadding | None = None
    # Sizes of symbolic dims other than the batch to compile ahead ({"seq": (64, 128)}).
    warmup_dims: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def policy(self, instances: int | None = None, any_shape: bool = False) -> BatchPolicy:
        preferred = tuple(s for s in self.preferred_batch_sizes if s <= self.max_batch_size)
        return BatchPolicy(
            max_batch_size=self.max_batch_size,
            preferred_batch_sizes=preferred or (1,),
            max_queue_delay=self.max_queue_delay_ms / 1000.0,
            queue_limit=self.queue_limit,
            instances=instances or self.instances,
            sequence=self.sequence,
            any_shape=any_shape,
        )


_INT_KEYS = {
    "instances": (1, 64),
    "threads_per_instance": (1, 1024),
    "max_batch_size": (1, 4096),
    "queue_limit": (1, 1 << 20),
    "max_request_bytes": (1, 1 << 40),
}
_FLOAT_KEYS = {"max_queue_delay_ms": (0.0, 60_000.0), "request_timeout_s": (0.001, 86_400.0)}


def read_settings(path: Path, defaults: ModelSettings) -> ModelSettings:
    """`defaults` overridden by the config file at `path`; every field checked (ArtifactError
    naming the file and the field)."""
    where = str(path)
    document = Field(parse_json(path.read_bytes(), where), where)
    values: dict[str, Any] = {}
    for key, member in document.as_dict().items():
        item = Field(member, where, key)
        if key in _INT_KEYS:
            values[key] = item.as_int(*_INT_KEYS[key])
        elif key in _FLOAT_KEYS:
            low, high = _FLOAT_KEYS[key]
            if type(member) not in (int, float) or not low <= member <= high:
                item.fail(f"a number from {low} to {high}")
            values[key] = float(member)
        elif key == "preferred_batch_sizes":
            values[key] = tuple(s.as_int(1, 4096) for s in item.as_list(64))
        elif key == "assume_independent_rows":
            if not isinstance(member, bool):
                item.fail("true or false")
            values[key] = member
        elif key == "sequence":
            values[key] = _read_sequence(item)
        elif key == "warmup_dims":
            values[key] = {
                dim: tuple(
                    size.as_int(1, 1 << 20)
                    for size in Field(listed, where, f"{key}.{dim}").as_list(64)
                )
                for dim, listed in item.as_dict().items()
            }
        else:
            known = sorted(
                [*_INT_KEYS, *_FLOAT_KEYS, "preferred_batch_sizes", "assume_independent_rows"]
                + ["sequence", "warmup_dims"]
            )
            item.fail(f"absent: unknown setting (the settings are {', '.join(known)})")
    return replace(defaults, **values)


def _read_sequence(item: Field) -> SequencePadding:
    inputs = {}
    for name, spec in item["inputs"].as_dict().items():
        pair = Field(spec, item.where, f"{item.path}.inputs.{name}").as_list(2)
        if len(pair) != 2 or type(pair[1].value) not in (int, float):
            Field(spec, item.where, f"{item.path}.inputs.{name}").fail("[axis, pad value]")
        inputs[name] = (pair[0].as_int(1, 31), pair[1].value)
    outputs = {
        name: Field(axis, item.where, f"{item.path}.outputs.{name}").as_int(1, 31)
        for name, axis in (item.get("outputs").as_dict() if item.get("outputs") else {}).items()
    }
    buckets = tuple(b.as_int(1, 1 << 20) for b in item["buckets"].as_list(64))
    try:
        return SequencePadding(inputs, outputs, buckets)
    except ValueError as error:
        item.fail(f"a valid sequence padding ({error})")


@dataclass
class ServedModel:
    """A loaded model: its signature (declared dims and dtypes), its runner, how it batches."""

    name: str
    path: Path
    kind: str  # "artifact" or "onnx"
    model: Any  # an Executable, CompiledModel or SpecializingModel
    signature: ModelSignature
    settings: ModelSettings
    threads: int
    batching: bool = False
    batching_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # What requests may send: the signature, with a static batch axis made variable when the
    # batcher pads requests up to it.
    accepts: ModelSignature | None = None

    def __post_init__(self) -> None:
        self.accepts = self.accepts or self.signature

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.signature.inputs if not i.dtype_only]

    @property
    def output_names(self) -> list[str]:
        return self.signature.output_names

    def metadata_shape(self, info: InputSignature) -> list[int]:
        """KServe's shape of an input or output: -1 for every dim that is not fixed."""
        dims = info.dims or ()
        return [d if isinstance(d, int) else -1 for d in dims]

    def check(self, feeds: dict[str, np.ndarray]) -> None:
        """InputError unless `feeds` fits the model: names, dtypes, ranks, fixed and shared
        dims (so a bad request never joins a batch)."""
        assert self.accepts is not None
        check_feed_names(feeds, self.input_names)
        for info in self.accepts.inputs:
            if info.dtype_only or info.dtype is None:
                continue
            given = feeds[info.name].dtype
            if given != numpy_dtype(info.dtype):
                raise InputError(f"input '{info.name}': expected dtype {info.dtype}, given {given}")
        check_run_shapes(self.accepts, {n: a.shape for n, a in feeds.items()})

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.model.run(feeds)

    @property
    def runs_any_shape(self) -> bool:
        """One program runs every batch size and sequence length (a model compiled once,
        engine/compile_once.py): its batches need no padding to a preferred size or a bucket's
        length, which would only add rows and positions to compute."""
        return bool(getattr(self.model, "compiled_once", False))

    def policy(self) -> BatchPolicy:
        """The batcher's policy: the settings', without padding for a model that runs any
        shape."""
        return self.settings.policy(any_shape=self.runs_any_shape)


def find_models(repository: Path) -> dict[str, Path]:
    """Model name -> path of each model in the repository folder (ModelError if none)."""
    if not repository.is_dir():
        raise ModelError(f"{repository}: not a folder (a model repository is a folder of models)")
    models: dict[str, Path] = {}
    for entry in sorted(repository.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix == ".onnx":
            models[entry.stem] = entry
        elif entry.is_dir() and ((entry / MANIFEST_FILE).is_file() or any(entry.glob("*.onnx"))):
            models[entry.name] = entry
    if not models:
        raise ModelError(
            f"{repository}: no models (an artifact folder from `ember compile`, a folder with "
            f"one .onnx file, or an .onnx file)"
        )
    return models


def thread_plan(
    settings: dict[str, ModelSettings], cpus: int, oversubscribe: bool = False
) -> dict[str, int]:
    """Threads per instance of each model: the explicit ones, and the cores left split evenly
    between the other instances; ModelError if the explicit ones need more than `cpus` threads
    in total (unless `oversubscribe`)."""
    explicit = {n: s for n, s in settings.items() if s.threads_per_instance is not None}
    used = sum(s.instances * (s.threads_per_instance or 0) for s in explicit.values())
    if used > cpus and not oversubscribe:
        detail = ", ".join(
            f"{n}: {s.instances} x {s.threads_per_instance}" for n, s in explicit.items()
        )
        raise ModelError(
            f"the models ask for {used} threads ({detail}) but {cpus} cores are available; "
            f"lower instances or threads_per_instance, or pass --oversubscribe"
        )
    others = sum(s.instances for n, s in settings.items() if n not in explicit)
    share = max(1, (cpus - used) // others) if others else 1
    if others and (cpus - used) < others:
        log.warning(
            "%d instances share %d free cores: each gets 1 thread, more than the cores",
            others,
            max(cpus - used, 0),
            extra={"instances": others, "cores": cpus},
        )
    return {n: (s.threads_per_instance or share) for n, s in settings.items()}


def load_model(name: str, path: Path, settings: ModelSettings, threads: int) -> ServedModel:
    """Load (or compile) one model and decide whether and how it batches."""
    if path.is_dir() and (path / MANIFEST_FILE).is_file():
        served = _load_artifact(name, path, settings, threads)
    else:
        served = _load_onnx(name, path, settings, threads)
    if settings.sequence is not None:
        _check_sequence(served, settings.sequence)
        _check_padding_is_masked(served, settings.sequence)
    _decide_batching(served)
    return served


def _check_sequence(served: ServedModel, sequence: SequencePadding) -> None:
    """ModelError unless the sequence padding covers the model: each padded axis is a symbolic
    dim, and every input and output with that dim is padded or cut back along it (else padding
    would reach an input that is not padded, or an answer)."""
    where = f"model '{served.name}': sequence padding"
    if served.kind == "artifact":
        raise ModelError(f"{where}: an artifact has static shapes; pad sequences of an .onnx model")
    names: set[str] = set()
    for name, (axis, _) in sequence.inputs.items():
        if name not in served.signature.input_names:
            raise ModelError(f"{where}: no input '{name}'; the inputs: {served.input_names}")
        dims = served.signature.input(name).dims or ()
        if axis >= len(dims) or not isinstance(dims[axis], str):
            raise ModelError(
                f"{where}: axis {axis} of input '{name}' (dims {list(dims)}) is no named dim"
            )
        names.add(dims[axis])
    listed = {"input": dict(sequence.inputs), "output": dict(sequence.outputs)}
    for kind, infos in (("input", served.signature.inputs), ("output", served.signature.outputs)):
        for info in infos:
            for axis, dim in enumerate(info.dims or ()):
                if dim in names and info.name not in listed[kind]:
                    raise ModelError(
                        f"{where}: {kind} '{info.name}' has the padded dim '{dim}' (axis {axis}) "
                        f"but is not in sequence.{kind}s"
                    )
    for name in sequence.outputs:
        if name not in served.output_names:
            raise ModelError(f"{where}: no output '{name}'; the outputs: {served.output_names}")


def _load_artifact(name: str, path: Path, settings: ModelSettings, threads: int) -> ServedModel:
    from ember.runtime import load

    executable = load(path, threads=threads)
    manifest = executable.manifest
    signature = ModelSignature(
        tuple(InputSignature(s.name, s.shape, s.dtype) for s in manifest.inputs),
        # A data-dependent output size is unknown (and its count output is no output).
        tuple(
            InputSignature(s.name, tuple(d if d >= 0 else None for d in s.shape), s.dtype)
            for s in executable.output_specs
        ),
    )
    return ServedModel(name, path, "artifact", executable, signature, settings, threads)


def _load_onnx(name: str, path: Path, settings: ModelSettings, threads: int) -> ServedModel:
    import ember
    from ember.engine.shapes import read_model

    file = path
    if path.is_dir():
        candidates = sorted(path.glob("*.onnx"))
        if len(candidates) != 1:
            raise ModelError(
                f"{path}: holds {len(candidates)} .onnx files; a model folder holds one"
            )
        file = candidates[0]
    proto = read_model(file)
    signature = ModelSignature.of(proto)
    # Not batch-polymorphic: a polymorphic program runs a batch as one call per sample, and the
    # batcher exists to run the batched kernels (larger GEMMs) of each preferred batch size.
    model = ember.compile(proto, threads=threads, base_dir=file.parent, batch_polymorphic=False)
    served = ServedModel(name, path, "onnx", model, signature, settings, threads)
    served.extra["proto"] = proto
    return served


def _batch_dim(served: ServedModel) -> Dim:
    """The dim axis 0 of every input and output shares, or None if there is none."""
    firsts = set()
    for info in (*served.signature.inputs, *served.signature.outputs):
        if info.dtype_only:
            continue
        if not info.dims:
            return None
        firsts.add(info.dims[0])
    if len(firsts) != 1:
        return None
    (dim,) = firsts
    return dim


def _decide_batching(served: ServedModel) -> None:
    """Set `batching` (and the settings' policy) from the model's batch axis and the check
    that rows are independent; the reason is logged and shown in the model's metadata."""
    settings = served.settings
    dim = _batch_dim(served)
    if settings.max_batch_size <= 1:
        reason = "max_batch_size is 1"
    elif dim is None:
        reason = "its inputs and outputs share no batch axis (axis 0)"
    elif isinstance(dim, int) and dim == 1:
        reason = "compiled for a static batch of 1"
    else:
        reason = ""
    if not reason and isinstance(dim, int):
        # A static batch B (an artifact): every run is padded to B rows.
        settings = replace(settings, max_batch_size=dim, preferred_batch_sizes=(dim,))
    if not reason and not settings.assume_independent_rows:
        reason = _probe_rows(served, settings)
    served.settings = settings if not reason else replace(settings, max_batch_size=1)
    served.batching = not reason
    if served.batching and isinstance(dim, int):
        served.accepts = _variable_batch(served.signature)
    served.batching_reason = reason or (
        f"batches of up to {settings.max_batch_size} rows, each run at its own size (one "
        f"program runs every shape)"
        if served.runs_any_shape
        else f"batches of up to {settings.max_batch_size} rows, padded to "
        f"{list(settings.policy().batch_sizes)}"
    )
    log.info(
        "model %s: batching %s (%s)",
        served.name,
        "on" if served.batching else "off",
        served.batching_reason,
        extra={"model": served.name, "batching": served.batching},
    )


def _variable_batch(signature: ModelSignature) -> ModelSignature:
    """`signature` with axis 0 of every input and output named 'batch'."""

    def variable(info: InputSignature) -> InputSignature:
        dims = info.dims
        return replace(info, dims=("batch", *dims[1:]) if dims else dims)

    return ModelSignature(
        tuple(variable(i) for i in signature.inputs), tuple(variable(o) for o in signature.outputs)
    )


# Sizes tried, in turn, for a symbolic dim other than the batch (a sequence length) while
# checking that rows are independent: the first the model compiles for is used.
_PROBE_SIZES = (8, 1)


def _probe_rows(served: ServedModel, settings: ModelSettings) -> str:
    """'' if seeded rows run in one batch give what each gives alone; else why not."""
    reason = ""
    for size in _PROBE_SIZES:
        ran, reason = _probe_once(served, settings, size)
        if ran:
            return reason
    return reason


def _seeded_feeds(
    served: ServedModel, batch: int, named: dict[str, int], other: int
) -> dict[str, np.ndarray]:
    """Seeded inputs of `batch` rows: each symbolic dim sized by `named`, else `other`; index
    inputs within the ranges the model accepts."""
    from ember.engine.feeds import index_ranges, random_feeds
    from ember.runtime.executable import TensorSpec

    specs = []
    for info in served.signature.inputs:
        if info.dtype_only:
            continue
        if info.dtype is None:
            raise ModelError(f"input '{info.name}' has no tensor type ember knows")
        dims = list(info.dims or ())[1:]
        shape = [d if isinstance(d, int) else named.get(d, other) for d in dims]  # type: ignore[arg-type]
        specs.append(TensorSpec(info.name, (batch, *shape), info.dtype))
    proto = served.extra.get("proto")
    ranges = index_ranges(proto, {s.name: s.shape for s in specs}) if proto is not None else None
    return random_feeds(specs, _PROBE_SEED, ranges)


def _check_padding_is_masked(served: ServedModel, sequence: SequencePadding) -> None:
    """ModelError unless a seeded request gives the same answer padded to its bucket as alone
    (a mask input or pad value named wrong in the config would change answers)."""
    inside = [b - 1 for b in sequence.buckets if b > 1]
    if not inside:
        return  # buckets of 1 pad nothing
    length = inside[0]
    name, (axis, _) = next(iter(sequence.inputs.items()))
    dim = (served.signature.input(name).dims or ())[axis]
    feeds = _seeded_feeds(served, 1, {str(dim): length}, length)
    padded = concatenate([feeds], list(feeds), 1, sequence, sequence.bucket(length))
    try:
        alone = served.run(feeds)
        (cut,) = split(served.run(padded), [1], sequence, [length])
    except EmberError as error:
        raise ModelError(
            f"model '{served.name}': could not check the sequence padding on seeded inputs "
            f"({error})"
        ) from None
    for output, value in alone.items():
        if not _close(value, cut[output]):
            raise ModelError(
                f"model '{served.name}': sequence padding changes output '{output}' (a seeded "
                f"request of length {length}, alone and padded to {sequence.bucket(length)}): "
                f"check which inputs the config pads and with which values (the mask's pad "
                f"value must make the model ignore padded positions)"
            )


def _probe_once(served: ServedModel, settings: ModelSettings, other: int) -> tuple[bool, str]:
    """Run the check with `other` for every symbolic non-batch dim (a sequence bucket's first
    length for a padded sequence axis): (whether the model ran, the reason it cannot batch)."""
    static = _batch_dim(served)
    batch = static if isinstance(static, int) else 2
    named: dict[str, int] = {}
    if settings.sequence is not None:
        for input_name, (axis, _) in settings.sequence.inputs.items():
            info = served.signature.input(input_name)
            if info.dims and len(info.dims) > axis and isinstance(info.dims[axis], str):
                named[info.dims[axis]] = settings.sequence.buckets[0]
    try:
        feeds = _seeded_feeds(served, batch, named, other)
    except ModelError as error:
        return True, str(error)
    # The last row in a batch with other rows, then with copies of itself (the batcher's
    # padding), then alone when the batch is not fixed: all must agree.
    runs = [feeds, {n: np.repeat(a[-1:], batch, axis=0) for n, a in feeds.items()}]
    if not isinstance(static, int):
        runs.append({n: a[-1:] for n, a in feeds.items()})
    try:
        results = [served.run(run) for run in runs]
    except EmberError as error:
        return False, (
            f"could not check that rows are independent: seeded rows of shapes "
            f"{ {n: list(a.shape) for n, a in feeds.items()} } fail ({error}); set "
            f"assume_independent_rows in {CONFIG_FILE} if they are"
        )
    for name in results[0]:
        first = results[0][name]
        for index, (run, result) in enumerate(zip(runs, results)):
            rows_run = next(iter(run.values())).shape[0]
            if result[name].shape[:1] != (rows_run,):
                return True, (
                    f"output '{name}' has no batch axis: {rows_run} rows in give shape "
                    f"{list(result[name].shape)}"
                )
            # The run alone differs from the batch in its size as well as its other rows, so
            # its kernels may block and sum in another order: it is held to a 10x looser
            # tolerance than the copies, which have the batch's shape and differ from it only
            # in the other rows' values. (BERT-base under the seeded mask, values 0-15 rather
            # than 0/1: alone and batched differed by 3-4e-5 of the output's scale, each as
            # far from onnxruntime.) A model that mixes rows changes the copies' row.
            loose = index == 2
            if not _close(first[-1], result[name][-1], 10.0 if loose else 1.0):
                return True, (
                    f"output '{name}' of a row changes with the other rows of its batch "
                    f"(checked on seeded inputs): the model mixes rows"
                )
    return True, ""


def _close(a: np.ndarray, b: np.ndarray, looser: float = 1.0) -> bool:
    if a.shape != b.shape:
        return False
    if np.issubdtype(a.dtype, np.floating):
        scale = max(float(np.max(np.abs(a), initial=0.0)), 1.0)
        return bool(
            np.allclose(a, b, rtol=1e-4 * looser, atol=1e-5 * scale * looser, equal_nan=True)
        )
    return bool(np.array_equal(a, b))


def warm_up(served: ServedModel) -> int:
    """Compile ahead every variant requests will need (a model specialised per shape), so the
    first requests do not wait for the compiler: each batch size, times each size of the other
    symbolic dims given by `warmup_dims` or by the sequence buckets, and keeps them all (the
    model's cache of variants is raised to hold them). Nothing when a symbolic dim has no
    listed sizes (they come with the requests). Returns the variants compiled."""
    specialize = getattr(served.model, "specialization", None)
    if specialize is None:
        return 0
    settings = served.settings
    sizes: dict[str, tuple[int, ...]] = dict(settings.warmup_dims)
    if settings.sequence is not None:
        for name, (axis, _) in settings.sequence.inputs.items():
            dims = served.signature.input(name).dims or ()
            if len(dims) > axis and isinstance(dims[axis], str):
                sizes.setdefault(dims[axis], settings.sequence.buckets)
    inputs = [i for i in served.signature.inputs if not i.dtype_only]
    named = sorted(
        {d for i in inputs for d in (i.dims or ())[1:] if not isinstance(d, int)}, key=str
    )
    if any(d not in sizes for d in named) or any(i.dims is None for i in inputs):
        return 0
    batch_sizes = settings.policy().batch_sizes if served.batching else (1,)
    combinations = list(itertools.product(*(sizes[d] for d in named)))
    # Keep every variant compiled here: past the model's default bound (MAX_SPECIALIZATIONS)
    # the least recently used would be dropped and recompiled as traffic moves between them.
    keep_at_least = getattr(served.model, "keep_at_least", None)
    if keep_at_least is not None:
        keep_at_least(len(combinations) * len(batch_sizes))
    compiled = 0
    for combination in combinations:
        chosen = dict(zip(named, combination))
        for batch in batch_sizes:
            shapes = {
                i.name: [batch] + [d if isinstance(d, int) else chosen[d] for d in i.dims[1:]]  # type: ignore[index]
                for i in inputs
            }
            specialize(shapes)
            compiled += 1
    return compiled


def describe_settings(served: ServedModel) -> dict[str, Any]:
    """The model's effective settings, as `GET /v2/models/{name}/config` shows them."""
    s = served.settings
    policy = served.policy()
    return {
        "name": served.name,
        "platform": "ember",
        "source": served.kind,
        "max_batch_size": policy.max_batch_size if served.batching else 0,
        "batching": served.batching,
        "batching_reason": served.batching_reason,
        "preferred_batch_sizes": list(policy.batch_sizes) if served.batching else [],
        # One program runs every shape: batches are not padded to those sizes or to buckets.
        "runs_any_shape": served.runs_any_shape,
        "max_queue_delay_ms": s.max_queue_delay_ms,
        "queue_limit": s.queue_limit,
        "instances": s.instances,
        "threads_per_instance": served.threads,
        "request_timeout_s": s.request_timeout_s,
        "max_request_bytes": s.max_request_bytes,
        "warmup_dims": {k: list(v) for k, v in s.warmup_dims.items()},
        "sequence": None
        if s.sequence is None
        else {
            "inputs": {k: list(v) for k, v in s.sequence.inputs.items()},
            "outputs": dict(s.sequence.outputs),
            "buckets": list(s.sequence.buckets),
        },
    }


def settings_for(path: Path, defaults: ModelSettings) -> ModelSettings:
    """The settings of the model at `path`: its config.json over `defaults`."""
    config = path / CONFIG_FILE if path.is_dir() else None
    if config is not None and config.is_file():
        return read_settings(config, defaults)
    return defaults


def environment_cpus() -> int:
    from ember.runtime.threads import default_threads

    return default_threads()


__all__ = [
    "CONFIG_FILE",
    "ModelSettings",
    "ServedModel",
    "describe_settings",
    "environment_cpus",
    "find_models",
    "load_model",
    "read_settings",
    "settings_for",
    "thread_plan",
    "warm_up",
]
