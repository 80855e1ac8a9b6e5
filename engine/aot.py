"""Ahead-of-time compilation: ONNX -> an artifact directory the thin runtime loads.

    compile_artifact("model.onnx", "out/", target=resolve_target("host", threads=2))
    exe = ember.runtime.load("out/")

The artifact format (files, manifest, checksums) belongs to `ember.runtime.artifact`; this
module drives the compiler and the system linker, and writes the C header (`ember.h`,
engine/cheader.py). `compile_cached` is the on-disk cache behind
`ember.Config("model.onnx")`: one artifact per (model hash, options, ember version, target).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import onnx

from ember import __version__
from ember.engine.batch_polymorphic import PolymorphicBatch, plan_polymorphic_batch
from ember.engine.cheader import write_header
from ember.engine.shapes import (
    DimRanges,
    InputShapes,
    ModelSignature,
    UnpinnedInputsError,
    check_dim_ranges,
    external_data_folder,
    pin,
    pin_model,
    read_model,
)
from ember.runtime.artifact import (
    LIBRARY_FILE,
    MANIFEST_FILE,
    MAX_VARIANTS,
    MODEL_INFO_SYMBOL,
    ArtifactError,
    describe,
    encode_model_info,
    variants_document,
    write_artifact,
    write_variants_manifest,
)
from ember.runtime.cache import DiskCache, cache_root, stored_bytes, touch
from ember.runtime.cpu_features import (
    CPU_LEVEL_FEATURES,
    host_arch,
    host_microarchitecture,
    required_features,
)
from ember.runtime.errors import ModelError
from ember.runtime.executable import BOUNDED_KEY, GRAPH_OUTPUTS_KEY, TensorSpec
from ember.runtime.integrity import (
    CODE_HASH_SLOT,
    CODE_HASH_SYMBOL,
    SIGNATURE_FILE,
    resolve_key,
    seal_library,
    sign_artifact,
)
from ember.runtime.once import ONCE_KEY, once_section
from ember.runtime.polymorphic import POLYMORPHIC_KEY, polymorphic_section

ModelSource = str | os.PathLike[str] | onnx.ModelProto
# Debug-level timings of each build stage (the passes' own: engine/compile.py).
log = logging.getLogger("ember.compile")


class Progress:
    """Stage names with elapsed time on stderr, a tqdm line per stage redrawn while it runs.

    Silent unless the stream is a terminal (so logs and CI output stay clean) or when quiet.
    """

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.enabled = not quiet and self.stream.isatty()
        self.seconds: dict[str, float] = {}
        # What the current stage is doing right now (e.g. the pass running), shown beside it.
        self.detail = ""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        done = threading.Event()
        ticker = None
        self.detail = ""
        line = None
        if self.enabled:
            from tqdm import tqdm

            # A stage has no count of steps: tqdm draws the name, the pass running and the
            # elapsed time (and owns the terminal escapes); a ticker redraws it, as nothing
            # else updates it while a pass runs.
            line = tqdm(
                desc=f"  {name}",
                file=self.stream,
                bar_format="{desc} ... {elapsed}",
                leave=True,
                dynamic_ncols=True,
            )

            def tick() -> None:
                while not done.wait(0.2):
                    detail = f" [{self.detail}]" if self.detail else ""
                    line.set_description_str(f"  {name}{detail}", refresh=True)

            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
        try:
            yield
        finally:
            done.set()
            if ticker is not None:
                ticker.join()
            self.seconds[name] = time.perf_counter() - start
            log.debug("%s: %.3f s", name, self.seconds[name])
            if line is not None:
                line.bar_format = f"  {name:<32} {self.seconds[name]:6.2f} s"
                line.close()


@dataclass
class ArtifactBuild:
    """Where an artifact was written and what compiling it cost."""

    path: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    report: Any = None  # ember.engine.compile.CompileReport

    @property
    def total_seconds(self) -> float:
        return sum(self.stage_seconds.values())


def resolve_target(cpu: str = "host", threads: int | None = None) -> Any:
    """`host` (this machine as LLVM sees it) or an LLVM cpu name such as `x86-64-v3`."""
    from ember.core.target import host_target, named_target

    if cpu != "host" and cpu not in CPU_LEVEL_FEATURES:
        # LLVM aborts the process on some unknown names, and for names outside the table the
        # manifest could not say which features the code needs.
        raise ValueError(
            f"unknown target cpu '{cpu}'; use host or one of: {', '.join(CPU_LEVEL_FEATURES)}"
        )
    return host_target(threads) if cpu == "host" else named_target(cpu, threads)


def model_bytes(model: ModelSource) -> bytes:
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    try:
        return Path(model).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read model {model}: {e.strerror}") from None


def target_info(target: Any) -> dict[str, Any]:
    return {
        "arch": host_arch(),
        "cpu": target.cpu,
        "features": target.features,
        "required_features": required_features(target.cpu, target.features),
        "vector_width": target.vector_width,
        "vector_registers": target.vector_registers,
        # The machine that compiled it, for people ("x86_64_v4 (avx512 + vnni)"); the loader
        # checks `required_features`, not this.
        "built_on": host_microarchitecture(),
    }


def _staging_directory(output: Path) -> Path:
    """A new directory beside `output` to assemble an artifact in (moved into place whole)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    # mkdtemp makes the directory private; an artifact is meant to be shared like any output.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    return staging


def _replace_directory(staging: Path, output: Path) -> None:
    """Move the finished `staging` directory to `output`, replacing an older artifact there."""
    old: Path | None = None
    if output.exists():
        if not output.is_dir() or (any(output.iterdir()) and not (output / MANIFEST_FILE).exists()):
            raise ValueError(f"{output} exists and is not an ember artifact; not overwriting it")
        old = Path(tempfile.mkdtemp(prefix=".old-", dir=output.parent))
        os.replace(output, old / "artifact")
    try:
        os.replace(staging, output)
    except OSError:
        # Another process finished the same artifact first (the compile cache): keep theirs.
        if not (output / MANIFEST_FILE).exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def compile_artifact(
    model: ModelSource,
    output: str | os.PathLike[str],
    *,
    target: Any = None,
    opt_level: int = 3,
    pipeline: str | None = None,
    progress: Progress | None = None,
    input_shapes: InputShapes | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    memory_limit: int | None = None,
    verify_each: bool | None = None,
    batch_polymorphic: bool = False,
    dim_ranges: DimRanges | None = None,
    sign_key: bytes | None = None,
    compile_once: bool = False,
) -> ArtifactBuild:
    """Compile `model` for `target` (default: this host) into the artifact directory `output`.

    `input_shapes` pins inputs with symbolic dims (see `ember.engine.shapes`). With
    `batch_polymorphic` (`ember compile`), a symbolic batch dim left unpinned is compiled as
    one program at batch 1 that the runtime runs once per sample, when the model is proven
    batch-separable (engine/batch_polymorphic.py); its manifest says so
    (`extra.batch_polymorphic`, with the dim's range from `dim_ranges`). External tensor
    data is read from `base_dir` (default: the model file's folder; a ModelProto with external
    data needs it); `memory_limit` as for `ember.compile`. The directory is assembled next to
    `output` and moved into place when complete, so concurrent readers see either the old
    artifact or the new one. With `sign_key` (or $EMBER_ARTIFACT_KEY naming a key file) the
    artifact is signed (runtime/integrity.py). With `compile_once` too (`ember compile`), a
    model whose unpinned symbolic dims compile once (engine/compile_once.py) is written as ONE
    program for every shape (`extra.compile_once`, runtime/once.py) before anything else is
    tried.
    """
    from ember.codegen.jit import emit_data_object, emit_objects, link_shared_library
    from ember.engine.compile import compile_program
    from ember.passes.pipeline import DEFAULT_PIPELINE

    progress = progress or Progress(quiet=True)
    target = target or resolve_target("host")
    pipeline = pipeline or DEFAULT_PIPELINE
    sign_key = resolve_key(sign_key)  # a bad key is refused before the compile, not after
    output = Path(output).absolute()
    output.parent.mkdir(parents=True, exist_ok=True)

    with progress.stage("read model"):
        source = model_bytes(model)
    with progress.stage("import, optimize, lower to loops"):
        batch = None
        program_source: ModelSource = model  # `model` itself names the source in the manifest
        program = None
        if batch_polymorphic:
            proto = read_model(model)
            base_dir = external_data_folder(model, base_dir)
            # One program for every shape when the model compiles once (runtime/once.py);
            # otherwise as before: a polymorphic batch, or the unpinned dims named.
            if compile_once:
                program = _compiled_once(
                    proto, input_shapes, dim_ranges, target, pipeline, base_dir, memory_limit
                )
            if program is None:
                batch = _polymorphic_batch(proto, input_shapes, dim_ranges, base_dir, memory_limit)
            program_source = proto
        elif dim_ranges:
            raise ModelError("a dim range (--dim) needs variants (--shapes) or a polymorphic batch")
        if program is None:
            program = compile_program(
                program_source,
                target,
                pipeline,
                on_pass=lambda name: setattr(progress, "detail", name),
                input_shapes=batch.shapes_at_one if batch is not None else input_shapes,
                base_dir=base_dir,
                memory_limit=memory_limit,
                verify_each=verify_each,
            )
        if batch is not None:
            _declare_polymorphic(program, batch)
    with progress.stage(f"LLVM codegen (O{opt_level})"):
        objects = emit_objects(program.module, target, opt_level)
        # The library describes itself, weights' checksum included (see runtime/artifact.py).
        if isinstance(model, onnx.ModelProto):
            where = {"name": "<ModelProto>"}
        else:
            where = {"name": Path(model).name, "path": str(Path(model).absolute())}
        info = {
            "threads": target.threads,
            "opt_level": opt_level,
            "pipeline": pipeline,
            "target": target_info(target),
            "source": where | {"sha256": hashlib.sha256(source).hexdigest()},
        }
        if input_shapes:
            info["input_shapes"] = _shapes_json(input_shapes)
        weights = program.weights_blob().view(np.uint8)[: program.manifest.weights_bytes]
        weights_sha256 = hashlib.sha256(memoryview(weights)).hexdigest()
        description = describe(program.manifest, weights_sha256, info)
        objects.append(emit_data_object(MODEL_INFO_SYMBOL, encode_model_info(description), target))
        # The reserved slot the linked library's code hash is written into (seal_library).
        objects.append(emit_data_object(CODE_HASH_SYMBOL, CODE_HASH_SLOT, target))
    staging = _staging_directory(output)
    try:
        with progress.stage("link model.so"):
            link_shared_library(objects, str(staging / LIBRARY_FILE))
            seal_library(staging / LIBRARY_FILE)
        with progress.stage("write weights, ember.h and manifest"):
            write_header(staging, description)  # before the manifest, which comes last
            write_artifact(staging, staging / LIBRARY_FILE, weights, description)
            if sign_key is not None:
                sign_artifact(staging, sign_key)
        _replace_directory(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ArtifactBuild(output, dict(progress.seconds), program.report)


def _compiled_once(
    proto: onnx.ModelProto,
    input_shapes: InputShapes | None,
    dim_ranges: DimRanges | None,
    target: Any,
    pipeline: str,
    base_dir: str | os.PathLike[str] | None,
    memory_limit: int | None,
) -> Any:
    """The program of a model whose unpinned symbolic dims compile once (engine/compile_once.py),
    its manifest declaring the dims and expressions (`extra.compile_once`); None when the pins
    are complete or the model is refused that path (the reason logged)."""
    from ember.engine.compile_once import CompileOnceRefusal, build_once

    pinning = pin_model(proto, input_shapes, dim_ranges)
    if pinning.complete:
        return None
    try:
        build = build_once(
            proto,
            pinning,
            target=target,
            pipeline=pipeline,
            base_dir=base_dir,
            memory_limit=memory_limit,
        )
    except CompileOnceRefusal as err:
        log.debug("not compiled once: %s", err)
        return None
    program = build.program
    manifest = program.manifest
    if manifest.extra.get(BOUNDED_KEY) or manifest.extra.get(GRAPH_OUTPUTS_KEY):
        log.debug("not compiled once: data-dependent or sequence outputs")
        return None
    # A `?` dim's size comes from the section; the fixed-shape fields hold 0 there.
    for specs in (manifest.inputs, manifest.outputs):
        specs[:] = [TensorSpec(s.name, tuple(max(d, 0) for d in s.shape), s.dtype) for s in specs]
    manifest.extra[ONCE_KEY] = once_section(
        build.inputs,
        build.outputs,
        build.expressions,
        build.symbols,
        pinning.ranges,
        build.arena_function,
        build.limits,
        build.minimums,
    )
    return program


def _polymorphic_batch(
    proto: onnx.ModelProto,
    input_shapes: InputShapes | None,
    dim_ranges: DimRanges | None,
    base_dir: str | os.PathLike[str] | None,
    memory_limit: int | None,
) -> PolymorphicBatch | None:
    """The batch-polymorphic build of a model pins leave symbolic (None: the pins are complete);
    UnpinnedInputsError, saying why the batch is not polymorphic, when it cannot be one."""
    pinning = pin_model(proto, input_shapes, dim_ranges)
    if pinning.complete:
        if dim_ranges:
            raise ModelError(
                f"--dim {next(iter(dim_ranges))}: the dim is pinned; a range needs variants "
                "(--shapes) or a polymorphic batch dim"
            )
        return None
    batch, why = plan_polymorphic_batch(
        proto, input_shapes, dim_ranges, base_dir=base_dir, memory_limit=memory_limit
    )
    if batch is None:
        log.debug("no batch-polymorphic artifact: %s", why)
        error = UnpinnedInputsError(pinning)
        error.args = (f"{error.args[0]}\n(the batch is not polymorphic: {why})",)
        raise error
    return batch


def _declare_polymorphic(program: Any, batch: PolymorphicBatch) -> None:
    """Record in the manifest that the batch-1 program serves any batch (one call per sample)."""
    if program.manifest.extra.get(BOUNDED_KEY) or program.manifest.extra.get(GRAPH_OUTPUTS_KEY):
        raise ModelError(
            f"dim '{batch.dim}' cannot be polymorphic: the model's outputs have data-dependent "
            "sizes or are sequences; pin it (--input-shape) or build variants (--shapes)"
        )
    program.manifest.extra[POLYMORPHIC_KEY] = polymorphic_section(
        batch.dim,
        [n for n in batch.inputs if n in {spec.name for spec in program.manifest.inputs}],
        batch.dim_range,
    )


# -- a dynamic model: several static variants in one artifact ---------------------------------


def compile_variants(
    model: ModelSource,
    output: str | os.PathLike[str],
    dim_sizes: Mapping[str, Sequence[int]],
    *,
    dim_ranges: DimRanges | None = None,
    input_shapes: InputShapes | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> list[ArtifactBuild]:
    """Compile one static variant of `model` per combination of `dim_sizes` ({"batch": [1, 4,
    16]}: three variants) into one artifact directory, each a complete artifact in its own
    subdirectory under a manifest the thin runtime dispatches by (runtime/artifact.py,
    VariantArtifact). `dim_ranges` bounds the named dims (recorded, checked at run time);
    `input_shapes` pins other dims; `options` go to `compile_artifact`. Every symbolic dim
    must be pinned by `dim_sizes` or `input_shapes` (UnpinnedInputsError names the others)."""
    proto = read_model(model)
    signature = ModelSignature.of(proto)
    ranges = check_dim_ranges(signature, dim_ranges)
    combinations = [dict(zip(dim_sizes, sizes)) for sizes in itertools.product(*dim_sizes.values())]
    if not combinations or len(combinations) > MAX_VARIANTS:
        raise ModelError(
            f"--shapes gives {len(combinations)} variants; an artifact holds 1 to {MAX_VARIANTS}"
        )
    # Every variant's pins are checked before the first one compiles.
    variant_shapes = []
    for sizes in combinations:
        pinning = pin(signature, input_shapes, ranges, sizes)
        if not pinning.complete:
            raise UnpinnedInputsError(pinning)
        variant_shapes.append(
            {
                info.name: pinning.shapes[info.name]
                for info in signature.inputs
                if not info.is_static and info.name in pinning.shapes
            }
        )
    output = Path(output).absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_directory(output)
    builds = []
    try:
        variants = []
        for index, (sizes, shapes) in enumerate(zip(combinations, variant_shapes)):
            directory = f"variant-{index}"
            if progress is not None and progress.enabled:
                print(f"variant {index + 1}/{len(combinations)}: {sizes}", file=progress.stream)
            builds.append(
                compile_artifact(
                    model, staging / directory, input_shapes=shapes, progress=progress, **options
                )
            )
            variants.append({"directory": directory, "dims": sizes})
        inputs = [
            {
                "name": info.name,
                "dims": None if info.dims is None else list(info.dims),
                "dtype": info.dtype or "unknown",
            }
            for info in signature.inputs
        ]
        document = variants_document(inputs, signature.output_names, ranges, variants)
        write_variants_manifest(staging, document)
        sign_key = resolve_key(options.get("sign_key"))
        if sign_key is not None:  # each variant was signed by compile_artifact
            sign_artifact(staging, sign_key, files=())
        _replace_directory(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [ArtifactBuild(output / b.path.name, b.stage_seconds, b.report) for b in builds]


# -- the on-disk cache behind Config("model.onnx") ---------------------------------------------


def default_cache_dir() -> Path:
    """Where compiled models are cached (`Config.set_cache_dir` chooses another place)."""
    return cache_root() / "artifacts"


def _shapes_json(input_shapes: InputShapes) -> dict[str, list[int]]:
    return {name: [int(d) for d in input_shapes[name]] for name in sorted(input_shapes)}


def cache_key(
    source: bytes,
    target: Any,
    opt_level: int,
    pipeline: str,
    input_shapes: InputShapes | None = None,
    batch_polymorphic: dict[str, Any] | None = None,
) -> str:
    """Everything the generated code depends on: model, options, compiler version, target,
    pinned input shapes."""
    key: dict[str, Any] = {
        "model_sha256": hashlib.sha256(source).hexdigest(),
        "ember_version": __version__,
        "opt_level": opt_level,
        "pipeline": pipeline,
        # Kernels split their parallel loops by target.threads, so it is part of the code.
        "target": target_info(target) | {"threads": target.threads},
    }
    if input_shapes:  # absent when unpinned, so keys of static models stay as they were
        key["input_shapes"] = _shapes_json(input_shapes)
    if batch_polymorphic:  # likewise absent unless asked for
        key["batch_polymorphic"] = batch_polymorphic
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def compile_cached(
    model: str | os.PathLike[str],
    *,
    target: Any = None,
    opt_level: int = 3,
    pipeline: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    force: bool = False,
    input_shapes: InputShapes | None = None,
    batch_polymorphic: bool = False,
    dim_ranges: DimRanges | None = None,
) -> Path:
    """The artifact directory for `model` with these options, compiling it on a cache miss.

    `force` recompiles even on a hit (for an entry that turned out to be corrupt). A hit
    touches the entry; a compile is recorded in the size-capped cache (runtime/cache.py), which
    may evict the least recently used entries (never this one).
    """
    from ember.passes.pipeline import DEFAULT_PIPELINE
    from ember.runtime.artifact import read_manifest

    target = target or resolve_target("host")
    pipeline = pipeline or DEFAULT_PIPELINE
    cache = Path(cache_dir or default_cache_dir())
    polymorphic = {"ranges": dict(dim_ranges or {})} if batch_polymorphic else None
    directory = cache / cache_key(
        model_bytes(model), target, opt_level, pipeline, input_shapes, polymorphic
    )
    # With $EMBER_ARTIFACT_KEY set, loads need a signature: an unsigned entry is a miss.
    signing = resolve_key(None) is not None
    if not force:
        try:
            read_manifest(directory)
            if signing and not (directory / SIGNATURE_FILE).is_file():
                raise ArtifactError(f"{directory}: not signed")
            touch(directory)
            return directory
        except ArtifactError:
            pass  # a miss, or an entry from another ember version: (re)compile it
    compile_artifact(
        model,
        directory,
        target=target,
        opt_level=opt_level,
        pipeline=pipeline,
        progress=progress,
        input_shapes=input_shapes,
        batch_polymorphic=batch_polymorphic,
        dim_ranges=dim_ranges,
    )
    written = sum(stored_bytes(f.stat().st_size) for f in directory.iterdir() if f.is_file())
    DiskCache.for_artifacts(cache).record_write(written, directory)
    return directory
