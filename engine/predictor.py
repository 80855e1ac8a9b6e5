"""The inference-engine API: Config -> Predictor -> tensor handles (Paddle Inference style).

    config = ember.Config("model.onnx")               # or an artifact directory
    config.set_cpu_math_library_num_threads(2)
    predictor = ember.create_predictor(config)
    predictor.get_input_handle("x").copy_from_cpu(x)
    predictor.run()
    y = predictor.get_output_handle("y").copy_to_cpu()

An `.onnx` model is compiled ahead of time on first use and cached on disk (see
`ember.engine.aot.compile_cached`), so later processes only load the shared library. An artifact
directory is loaded by the thin runtime alone: this module imports the compiler only when it
has an ONNX file to compile.

A model whose inputs have symbolic dims (a batch, a sequence length) is compiled per set of
input shapes, as Paddle Inference runs a new shape after `reshape`: `config.set_input_shape`
chooses the shapes compiled when the predictor is created; `handle.reshape(shape)` or
`handle.copy_from_cpu(array)` with other shapes pins them for the next `run()`, which compiles
(or finds in the disk cache) that specialisation and keeps the last few loaded.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ember.engine.shapes import (
    ModelSignature,
    Pinning,
    UnpinnedInputsError,
    check_pin,
    check_run_shapes,
    pin,
    read_model,
    sizes_of,
)
from ember.engine.specialize import MAX_SPECIALIZATIONS, SpecializationCache, shape_key
from ember.runtime.artifact import ArtifactError, LoadedArtifact, VariantArtifact, load
from ember.runtime.errors import InputError, ModelError
from ember.runtime.executable import Executable, TensorSpec, numpy_dtype
from ember.runtime.once import OnceProgram
from ember.runtime.threads import default_threads


def pipeline_spec(ir_optim: bool = True) -> str:
    """The pass pipeline: the default one, or the minimal one without graph optimisations."""
    from ember.passes import pipeline

    return pipeline.DEFAULT_PIPELINE if ir_optim else pipeline.MINIMAL_PIPELINE


class Config:
    """What to run and how: model path (.onnx or artifact directory), threads, optimisation."""

    def __init__(self, model: str | os.PathLike[str] | None = None) -> None:
        self._model: Path | None = Path(model) if model is not None else None
        self._threads: int | None = None
        self._ir_optim = True
        self._opt_level = 3
        self._target_cpu = "host"
        self._cache_dir: Path | None = None
        self._progress = True  # shown only when stderr is a terminal (engine/aot.py Progress)
        self._input_shapes: dict[str, tuple[int, ...]] = {}
        self._int8: dict[str, Any] | None = None
        self._int8_model: Path | None = None
        self._dim_ranges: dict[str, tuple[int, int]] = {}
        self._batch_polymorphic = False

    # -- model ---------------------------------------------------------------------------------
    def set_model(self, model: str | os.PathLike[str]) -> None:
        self._model = Path(model)

    def model_path(self) -> Path:
        if self._model is None:
            raise ValueError("Config has no model: pass a path to Config(...) or set_model()")
        return self._model

    def is_artifact(self) -> bool:
        return self.model_path().is_dir()

    # -- options -------------------------------------------------------------------------------
    def set_cpu_math_library_num_threads(self, threads: int) -> None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._threads = int(threads)

    def cpu_math_library_num_threads(self) -> int:
        return self._threads or default_threads()

    def switch_ir_optim(self, enable: bool = True) -> None:
        """False compiles with the minimal pipeline: no graph optimisation passes."""
        self._ir_optim = bool(enable)

    def ir_optim(self) -> bool:
        return self._ir_optim

    def set_opt_level(self, level: int) -> None:
        if level not in (0, 1, 2, 3):
            raise ValueError(f"opt level must be 0..3, got {level}")
        self._opt_level = level

    def opt_level(self) -> int:
        return self._opt_level

    def set_target_cpu(self, cpu: str) -> None:
        """`host` (default) or an LLVM cpu name such as `x86-64-v3`."""
        self._target_cpu = cpu

    def target_cpu(self) -> str:
        return self._target_cpu

    def switch_progress(self, show: bool = True) -> None:
        """Show compile stages on stderr (when it is a terminal) if the model must be compiled."""
        self._progress = bool(show)

    def set_cache_dir(self, directory: str | os.PathLike[str]) -> None:
        self._cache_dir = Path(directory)

    def cache_dir(self) -> Path:
        from ember.engine.aot import default_cache_dir

        return self._cache_dir or default_cache_dir()

    def set_input_shape(self, name: str, shape: Sequence[int]) -> None:
        """Pin input `name` (one with symbolic dims: a batch, a sequence length) to `shape`.

        The predictor compiles the model for the pinned shapes when it is created; inputs
        sharing a named dim with a pinned one follow it. Checked against the model then
        (ModelError naming the input and both shapes).
        """
        self._input_shapes[name] = sizes_of(name, shape)

    def input_shapes(self) -> dict[str, list[int]]:
        return {name: list(shape) for name, shape in self._input_shapes.items()}

    def enable_int8(self, calibration: Any = None, **options: Any) -> None:
        """Run the int8 model: the .onnx model is quantized (`ember.quantize`, static QDQ by
        default) when the predictor is created, then compiled and cached as any model.

        `calibration`: a folder of .npy/.npz batches or a list of feed dicts (None: seeded
        random data, with a warning); `options` are `ember.quantize`'s keyword arguments
        (method="entropy", dynamic=True, keep_float_op_types=[...], ...). The quantized model
        is written to the cache directory (int8/<sha256>.onnx).
        """
        from ember.engine.quantize import quantize

        unknown = set(options) - set(inspect.signature(quantize).parameters)
        # The model, its pins, threads, target cpu and progress display are the Config's own.
        reserved = {
            "model", "output", "input_shapes", "threads", "progress", "target_cpu"
        } & set(options)  # fmt: skip
        if unknown | reserved:
            raise ValueError(
                f"enable_int8: unknown or reserved options {sorted(unknown | reserved)}; "
                "options are ember.quantize's keyword arguments (set_input_shape pins shapes)"
            )
        self._int8 = {"calibration": calibration, **options}
        self._int8_model = None

    def int8_enabled(self) -> bool:
        return self._int8 is not None

    def set_dim_range(self, dim: str, low: int, high: int) -> None:
        """Bound named dim `dim` (a dim_param such as "batch") to sizes low..high: a pin or a
        run's input outside it is refused (ModelError / InputError naming the input, the dim
        and the sizes) before anything compiles or runs. Checked against the model when the
        predictor is created."""
        self._dim_ranges[dim] = (int(low), int(high))

    def dim_ranges(self) -> dict[str, tuple[int, int]]:
        return dict(self._dim_ranges)

    def enable_batch_polymorphism(self, enable: bool = True) -> None:
        """Compile an .onnx model whose symbolic batch nothing pins as one program serving
        every batch size, when it is proven batch-separable (runtime/polymorphic.py); `load`
        then gives a BatchLoop. Not provable: `load` raises UnpinnedInputsError saying why."""
        self._batch_polymorphic = enable

    def pipeline(self) -> str:
        return pipeline_spec(self._ir_optim)

    def summary(self) -> str:
        pinned = f"\ninput_shapes: {self.input_shapes()}" if self._input_shapes else ""
        return (
            f"model: {self._model}\nthreads: {self.cpu_math_library_num_threads()}\n"
            f"ir_optim: {self._ir_optim}\nopt_level: {self._opt_level}\n"
            f"target_cpu: {self._target_cpu}{pinned}\nint8: {self._int8 is not None}"
        )

    def _pinned(self, input_shapes: dict[str, tuple[int, ...]]) -> Config:
        """This config with `input_shapes` as its pins (a specialisation's)."""
        pinned = copy.copy(self)
        pinned._input_shapes = dict(input_shapes)
        return pinned

    # -- resolution ----------------------------------------------------------------------------
    def artifact_path(self) -> Path:
        """The artifact directory to load: the model itself, or its (possibly new) cache entry."""
        return self._artifact_path(force=False)

    def _artifact_path(self, force: bool) -> Path:
        model = self.model_path()
        if model.is_dir() and self._int8 is not None:
            raise ValueError(
                f"enable_int8: {model} is a compiled artifact; int8 needs the .onnx model"
            )
        if model.is_dir():
            return model
        if not model.is_file():
            raise FileNotFoundError(f"model not found: {model}")
        from ember.engine.aot import Progress, compile_cached, resolve_target

        if self._dim_ranges:  # the ranges and the pins within them, before compiling
            pin(ModelSignature.of(read_model(model)), self._input_shapes, self._dim_ranges)
        return compile_cached(
            self._quantized_model() if self._int8 is not None else model,
            target=resolve_target(self._target_cpu, self.cpu_math_library_num_threads()),
            opt_level=self._opt_level,
            pipeline=self.pipeline(),
            cache_dir=self.cache_dir(),
            progress=Progress(quiet=not self._progress),
            force=force,
            input_shapes=self._input_shapes or None,
            batch_polymorphic=self._batch_polymorphic,
            dim_ranges=(self._dim_ranges or None) if self._batch_polymorphic else None,
        )

    def _quantized_model(self) -> Path:
        """The int8 model of the .onnx model (quantized once per Config), in the cache."""
        if self._int8_model is None or not self._int8_model.is_file():
            import hashlib

            from ember.engine.quantize import quantize

            quantized = quantize(
                self.model_path(),
                input_shapes=self._input_shapes or None,
                threads=self._threads,
                progress=self._progress,
                target_cpu=self._target_cpu,  # 7-bit weights for a target without VNNI
                **self._int8 or {},
            ).SerializeToString()
            folder = self.cache_dir() / "int8"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{hashlib.sha256(quantized).hexdigest()}.onnx"
            if not path.is_file():
                partial = path.with_suffix(f".{os.getpid()}.part")
                partial.write_bytes(quantized)
                os.replace(partial, path)  # readers never see a partial file
            self._int8_model = path
        return self._int8_model

    def load(self) -> LoadedArtifact:
        """The loaded artifact; for an .onnx model with symbolic dims that nothing pinned,
        `ember.engine.shapes.UnpinnedInputsError` (a ModelError saying how to pin them)."""
        path = self.artifact_path()
        try:
            loaded = load(path, self._threads)
        except ArtifactError:
            if path == self.model_path():
                raise
            # A corrupt cache entry is ours to repair, not the user's problem.
            loaded = load(self._artifact_path(force=True), self._threads)
        if isinstance(loaded, VariantArtifact):
            loaded = _pick_variant(loaded, self._input_shapes, path)
        if path == self.model_path():
            _check_artifact_pins(loaded, self._input_shapes, path)
        return loaded


def _pick_variant(
    variants: VariantArtifact, input_shapes: dict[str, tuple[int, ...]], path: Path
) -> LoadedArtifact:
    """The variant of a multi-variant artifact that the pins select (the only one if it has
    one); ModelError listing the built shapes otherwise."""
    matching = [
        loaded
        for loaded in variants.variants.values()
        if all(
            tuple(spec.shape) == tuple(input_shapes[spec.name])
            for spec in loaded.manifest.inputs
            if spec.name in input_shapes
        )
    ]
    if len(matching) == 1:
        return matching[0]
    raise ModelError(
        f"{path} holds variants for input shapes {variants.built_shapes}; "
        + (
            f"the pins { ({n: list(s) for n, s in input_shapes.items()}) } select none of them"
            if not matching
            else "choose one with set_input_shape (--input-shape on the command line)"
        )
    )


def _check_artifact_pins(
    loaded: Executable, input_shapes: dict[str, tuple[int, ...]], path: Path
) -> None:
    """An artifact was compiled for one shape per input: pins must name it (or, for one
    program compiled for every shape, fit its declared dims)."""
    specs = {s.name: s for s in loaded.manifest.inputs}
    if isinstance(loaded, OnceProgram):
        unknown = [name for name in input_shapes if name not in specs]
        if unknown:
            raise ModelError(
                f"input_shapes names {unknown}, not inputs of the artifact {path}; its "
                f"inputs: {list(specs)}"
            )
        try:
            loaded.check_shapes(input_shapes)
        except InputError as err:
            raise ModelError(f"input_shapes contradict the artifact {path}: {err}") from None
        return
    for name, shape in input_shapes.items():
        if name not in specs:
            raise ModelError(
                f"input_shapes names '{name}', which is not an input of the artifact {path}; "
                f"its inputs: {list(specs)}"
            )
        if tuple(shape) != specs[name].shape:
            raise ModelError(
                f"input_shapes['{name}'] = {list(shape)} contradicts the artifact {path}, "
                f"compiled for input '{name}' of shape {list(specs[name].shape)} (an artifact "
                "has one shape per input; compile the .onnx model for others)"
            )


class _Shapes:
    """The compiled forms of one Config's model, shared by a Predictor and its clones.

    A static model, or an artifact, has one executable. A model with symbolic input dims gets
    one per distinct set of input shapes, compiled (or found in the disk cache) on first
    sight; the last `MAX_SPECIALIZATIONS` stay loaded. Whether an .onnx model is symbolic is
    only worked out (by reading it) when it is given a shape other than the loaded one.
    """

    def __init__(self, config: Config, executable: Executable | None = None) -> None:
        self.config = config
        self.initial: Executable | None = executable
        # The config's pins when they left dims open (then nothing is loaded yet).
        self.pinning: Pinning | None = None
        self._signature: ModelSignature | None = None
        self._signature_known = False
        self._cache = SpecializationCache(self._build, MAX_SPECIALIZATIONS)
        self._ranges: Pinning | None = None  # the config's dim ranges, checked on the model
        if config.dim_ranges():
            signature = self.signature()
            if signature is None:
                raise ModelError(
                    f"dim ranges {config.dim_ranges()} were set, but {config.model_path()} has "
                    "no symbolic input dims"
                )
            # The pins must lie in the ranges too (ModelError naming the input and dim); runs
            # are checked against the ranges alone (other shapes compile other variants).
            ranges = pin(signature, config.input_shapes(), config.dim_ranges()).ranges
            self._ranges = Pinning(signature, ranges=ranges)
        if executable is None:
            try:
                self.initial = config.load()
            except UnpinnedInputsError as err:
                self.pinning = err.pinning
                self._signature, self._signature_known = err.pinning.signature, True
        if self.initial is not None:
            specs = self.initial.manifest.inputs
            self._cache.put(tuple((s.name, tuple(s.shape)) for s in specs), self.initial)

    def _build(self, input_shapes: dict[str, list[int]]) -> Executable:
        return self.config._pinned({n: tuple(s) for n, s in input_shapes.items()}).load()

    def signature(self) -> ModelSignature | None:
        """The model's declared inputs if some dims are symbolic, else None (static, artifact)."""
        if not self._signature_known:
            self._signature_known = True
            if not self.config.is_artifact():
                signature = ModelSignature.of(read_model(self.config.model_path()))
                self._signature = None if signature.is_static else signature
        return self._signature

    def check_pin(self, name: str, shape: tuple[int, ...], compiled: tuple[int, ...]) -> None:
        """ModelError unless input `name` may be pinned to `shape` (reshape)."""
        signature = self.signature()
        if signature is None:
            raise ModelError(
                f"tensor '{name}': the model was compiled for shape {list(compiled)}, "
                f"cannot reshape to {list(shape)} (its inputs have no symbolic dims)"
            )
        check_pin(signature.input(name), shape, f"tensor '{name}': reshape to {list(shape)}")

    def check_array(self, name: str, shape: tuple[int, ...], compiled: tuple[int, ...]) -> None:
        """InputError unless an array of `shape` fits input `name` (copy_from_cpu)."""
        if isinstance(self.initial, OnceProgram):  # one program for every shape
            self.initial.check_shapes({name: shape})
            return
        signature = self.signature()
        if signature is None:
            raise InputError(
                f"tensor '{name}': expected shape {list(compiled)}, given {list(shape)}"
            )
        check_run_shapes(signature, {name: shape}, self._ranges)

    def executable_for(self, shapes: dict[str, tuple[int, ...]]) -> Executable:
        signature = self.signature()
        if signature is not None:
            check_run_shapes(signature, shapes, self._ranges)
        return self._cache.get(shape_key(list(shapes), shapes))


class Tensor:
    """A named input or output of a Predictor, checked against the model.

    An input of a model with symbolic dims reports -1 for each dim not pinned yet; `reshape`
    or `copy_from_cpu` pins it for the next run (as in Paddle Inference, copy_from_cpu takes
    the array's shape).
    """

    def __init__(self, spec: TensorSpec, is_input: bool, shapes: _Shapes | None = None) -> None:
        self._spec = spec
        self._is_input = is_input
        self._shapes = shapes
        self._shape = tuple(spec.shape)
        self._dtype = numpy_dtype(spec.dtype)
        self._data: np.ndarray | None = None

    def name(self) -> str:
        return self._spec.name

    def shape(self) -> list[int]:
        return list(self._shape)

    def type(self) -> np.dtype:
        return self._dtype

    def reshape(self, shape: Sequence[int]) -> None:
        """Pin this input's shape for the next run (a model with symbolic dims); a static model
        accepts only its compiled shape."""
        from_user = tuple(int(d) for d in shape)
        if from_user == self._shape:
            return
        if not self._is_input or self._shapes is None:
            raise ModelError(
                f"tensor '{self.name()}': the model was compiled for shape "
                f"{list(self._spec.shape)}, cannot reshape to {list(from_user)}"
            )
        self._shapes.check_pin(self.name(), from_user, self._spec.shape)
        self._shape = from_user
        if self._data is not None and self._data.shape != from_user:
            self._data = None  # as in Paddle: a reshape invalidates the data copied in

    def copy_from_cpu(self, data: np.ndarray) -> None:
        if not self._is_input:
            raise ValueError(f"tensor '{self.name()}' is an output; copy_from_cpu is for inputs")
        array = np.asarray(data)
        if array.dtype != self._dtype:
            raise InputError(
                f"tensor '{self.name()}': expected dtype {self._spec.dtype}, given {array.dtype}"
            )
        if tuple(array.shape) != self._shape:
            if self._shapes is None:  # an artifact: one shape per input
                raise InputError(
                    f"tensor '{self.name()}': expected shape {list(self._shape)}, "
                    f"given {list(array.shape)}"
                )
            self._shapes.check_array(self.name(), tuple(array.shape), self._spec.shape)
            self._shape = tuple(array.shape)
        # A copy: the caller may reuse its buffer before run().
        self._data = np.array(array, order="C", copy=True)

    def copy_to_cpu(self) -> np.ndarray:
        if self._data is None:
            what = "run() has not produced it yet" if not self._is_input else "nothing copied in"
            raise ValueError(f"tensor '{self.name()}' holds no data: {what}")
        return self._data.copy()


def _unknown_as_minus_one(dims: Sequence[object] | None) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else -1 for d in dims or ())


class Predictor:
    """Runs one model. Not for concurrent use: give each thread its own `clone()`."""

    def __init__(
        self, config: Config, _executable: Executable | None = None, _shapes: _Shapes | None = None
    ) -> None:
        self.config = config
        self._shapes_of_model = _shapes or _Shapes(config, _executable)
        # The executable that ran last (the one compiled at creation before that); None until
        # the first run for a model whose symbolic dims nothing pinned.
        self.executable = self._shapes_of_model.initial
        if self.executable is not None:
            manifest = self.executable.manifest
            inputs, outputs = manifest.inputs, self.executable.output_specs
            if isinstance(self.executable, OnceProgram):  # -1: a dim the run's inputs give
                inputs = [
                    TensorSpec(
                        s.name,
                        tuple(-1 if d is None or isinstance(d, str) else d for d in dims),
                        s.dtype,
                    )
                    for s, (_, dims) in zip(inputs, self.executable.declared_inputs())
                ]
        else:
            signature = self._shapes_of_model.signature()
            assert signature is not None  # nothing loaded: the model's dims are open
            # Dims the config pinned (directly or through a named dim) show as pinned.
            pinning = self._shapes_of_model.pinning
            named = pinning.named if pinning is not None else {}
            inputs = [
                TensorSpec(
                    i.name,
                    _unknown_as_minus_one([named.get(d, d) for d in i.dims or ()]),
                    i.dtype or "float32",
                )
                for i in signature.inputs
                if not i.dtype_only
            ]
            outputs = [
                TensorSpec(o.name, _unknown_as_minus_one(o.dims), o.dtype or "float32")
                for o in signature.outputs
            ]
        # An artifact has one shape per input, unless it is one program for every shape.
        once = isinstance(self.executable, OnceProgram)
        shapes = None if config.is_artifact() and not once else self._shapes_of_model
        self._inputs = {s.name: Tensor(s, True, shapes) for s in inputs}
        self._outputs = {s.name: Tensor(s, False) for s in outputs}

    def get_input_names(self) -> list[str]:
        return list(self._inputs)

    def get_output_names(self) -> list[str]:
        return list(self._outputs)

    def get_input_handle(self, name: str) -> Tensor:
        return _lookup(self._inputs, name, "input")

    def get_output_handle(self, name: str) -> Tensor:
        return _lookup(self._outputs, name, "output")

    get_input_tensor = get_input_handle
    get_output_tensor = get_output_handle

    def run(self, inputs: list[np.ndarray] | None = None) -> list[np.ndarray] | None:
        """Run on the input handles; or, given arrays in input order, return output arrays."""
        if inputs is not None:
            if len(inputs) != len(self._inputs):
                raise ValueError(
                    f"expected {len(self._inputs)} inputs {self.get_input_names()}, "
                    f"given {len(inputs)}"
                )
            for handle, array in zip(self._inputs.values(), inputs):
                handle.copy_from_cpu(array)
        feeds: dict[str, np.ndarray] = {}
        for name, handle in self._inputs.items():
            if handle._data is None:
                empty = [n for n, h in self._inputs.items() if h._data is None]
                raise ValueError(f"inputs not set (use copy_from_cpu): {empty}")
            feeds[name] = handle._data
        executable = self.executable
        if executable is None or not _compiled_for(executable, feeds):
            executable = self._shapes_of_model.executable_for(
                {name: tuple(array.shape) for name, array in feeds.items()}
            )
            self.executable = executable
        results = executable.run(feeds)
        for name, handle in self._outputs.items():
            handle._data = output = results[name]
            handle._shape = output.shape
        if inputs is not None:
            return [results[name] for name in self._outputs]
        return None

    def clone(self) -> Predictor:
        """A predictor with its own tensor handles sharing this one's loaded code and weights."""
        return Predictor(self.config, _shapes=self._shapes_of_model)


def _compiled_for(executable: Executable, feeds: dict[str, np.ndarray]) -> bool:
    """Whether `executable` was compiled for the shapes of `feeds`."""
    if isinstance(executable, OnceProgram):
        return True  # compiled for every shape: its run checks them
    for spec in executable.manifest.inputs:
        if feeds[spec.name].shape != spec.shape:
            return False
    return True


def _lookup(tensors: dict[str, Tensor], name: str, kind: str) -> Tensor:
    if name not in tensors:
        raise KeyError(f"the model has no {kind} named '{name}'; its {kind}s: {list(tensors)}")
    return tensors[name]


def create_predictor(config: Config) -> Predictor:
    return Predictor(config)
