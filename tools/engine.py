"""The inference-engine API: Config -> Predictor -> tensor handles (Paddle Inference style).

    config = ember.Config("model.onnx")               # or an artifact directory
    config.set_cpu_math_library_num_threads(2)
    predictor = ember.create_predictor(config)
    predictor.get_input_handle("x").copy_from_cpu(x)
    predictor.run()
    y = predictor.get_output_handle("y").copy_to_cpu()

An `.onnx` model is compiled ahead of time on first use and cached on disk (see
`ember.tools.aot.compile_cached`), so later processes only load the shared library. An artifact
directory is loaded by the thin runtime alone: this module imports the compiler only when it
has an ONNX file to compile.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ember.runtime.artifact import ArtifactError, LoadedArtifact, load
from ember.runtime.executable import Executable, TensorSpec, numpy_dtype
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
        self._progress = False

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
        from ember.tools.aot import default_cache_dir

        return self._cache_dir or default_cache_dir()

    def pipeline(self) -> str:
        return pipeline_spec(self._ir_optim)

    def summary(self) -> str:
        return (
            f"model: {self._model}\nthreads: {self.cpu_math_library_num_threads()}\n"
            f"ir_optim: {self._ir_optim}\nopt_level: {self._opt_level}\n"
            f"target_cpu: {self._target_cpu}"
        )

    # -- resolution ----------------------------------------------------------------------------
    def artifact_path(self) -> Path:
        """The artifact directory to load: the model itself, or its (possibly new) cache entry."""
        return self._artifact_path(force=False)

    def _artifact_path(self, force: bool) -> Path:
        model = self.model_path()
        if model.is_dir():
            return model
        if not model.is_file():
            raise FileNotFoundError(f"model not found: {model}")
        from ember.tools.aot import Progress, compile_cached, resolve_target

        return compile_cached(
            model,
            target=resolve_target(self._target_cpu, self.cpu_math_library_num_threads()),
            opt_level=self._opt_level,
            pipeline=self.pipeline(),
            cache_dir=self.cache_dir(),
            progress=Progress(quiet=not self._progress),
            force=force,
        )

    def load(self) -> LoadedArtifact:
        path = self.artifact_path()
        try:
            return load(path, self._threads)
        except ArtifactError:
            if path == self.model_path():
                raise
            # A corrupt cache entry is ours to repair, not the user's problem.
            return load(self._artifact_path(force=True), self._threads)


class Tensor:
    """A named input or output of a Predictor, checked against the model's manifest."""

    def __init__(self, spec: TensorSpec, is_input: bool) -> None:
        self._spec = spec
        self._is_input = is_input
        self._data: np.ndarray | None = None

    def name(self) -> str:
        return self._spec.name

    def shape(self) -> list[int]:
        return list(self._spec.shape)

    def type(self) -> np.dtype:
        return numpy_dtype(self._spec.dtype)

    def reshape(self, shape: list[int] | tuple[int, ...]) -> None:
        """Shapes are static: accepted only if `shape` is the compiled one."""
        if tuple(shape) != self._spec.shape:
            raise ValueError(
                f"tensor '{self.name()}': the model was compiled for shape "
                f"{list(self._spec.shape)}, cannot reshape to {list(shape)}"
            )

    def copy_from_cpu(self, data: np.ndarray) -> None:
        if not self._is_input:
            raise ValueError(f"tensor '{self.name()}' is an output; copy_from_cpu is for inputs")
        array = np.asarray(data)
        if array.dtype != self.type():
            raise ValueError(
                f"tensor '{self.name()}': expected dtype {self._spec.dtype}, given {array.dtype}"
            )
        if tuple(array.shape) != self._spec.shape:
            raise ValueError(
                f"tensor '{self.name()}': expected shape {list(self._spec.shape)}, "
                f"given {list(array.shape)}"
            )
        # A copy: the caller may reuse its buffer before run().
        self._data = np.array(array, order="C", copy=True)

    def copy_to_cpu(self) -> np.ndarray:
        if self._data is None:
            what = "run() has not produced it yet" if not self._is_input else "nothing copied in"
            raise ValueError(f"tensor '{self.name()}' holds no data: {what}")
        return self._data.copy()


class Predictor:
    """Runs one model. Not for concurrent use: give each thread its own `clone()`."""

    def __init__(self, config: Config, _executable: Executable | None = None) -> None:
        self.config = config
        self.executable = _executable or config.load()
        manifest = self.executable.manifest
        self._inputs = {s.name: Tensor(s, True) for s in manifest.inputs}
        self._outputs = {s.name: Tensor(s, False) for s in manifest.outputs}

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
        empty = [name for name, h in self._inputs.items() if h._data is None]
        if empty:
            raise ValueError(f"inputs not set (use copy_from_cpu): {empty}")
        results = self.executable.run({n: h._data for n, h in self._inputs.items()})  # type: ignore[misc]
        for name, handle in self._outputs.items():
            handle._data = results[name]
        if inputs is not None:
            return [results[name] for name in self._outputs]
        return None

    def clone(self) -> Predictor:
        """A predictor with its own tensor handles sharing this one's loaded code and weights."""
        return Predictor(self.config, self.executable)


def _lookup(tensors: dict[str, Tensor], name: str, kind: str) -> Tensor:
    if name not in tensors:
        raise KeyError(f"the model has no {kind} named '{name}'; its {kind}s: {list(tensors)}")
    return tensors[name]


def create_predictor(config: Config) -> Predictor:
    return Predictor(config)
