"""Shape specialisation: `ember.compile` of a model whose inputs have symbolic dims.

This is not symbolic compilation. ember's kernels are compiled for static shapes, so a
`SpecializingModel` compiles the model again for each distinct set of input shapes it is run
on, pinning every symbolic dim to the size the arrays have, and keeps the most recent
`MAX_SPECIALIZATIONS` compiled models (least recently used dropped first). A repeat of a shape
that is cached costs a dictionary lookup; a shape seen before but dropped recompiles, with its
kernels mostly coming from the on-disk object cache (codegen/objcache.py). Each cached
specialisation holds its own code and a copy of the weights.

Before compiling, the arrays are checked against the declared dims: the rank, every fixed dim,
and named dims shared by inputs (two inputs declared [batch, ...] must be given the same
batch), each an InputError naming the inputs and shapes. Shapes the graph cannot take (a
Reshape that no longer fits) fail to compile: that compile error is raised as an InputError
naming the input shapes, and remembered, so a repeat fails without compiling again.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from ember.runtime.errors import InputError, ModelError, UnsupportedOpError
from ember.runtime.executable import check_feed_names, numpy_dtype
from ember.tools.shapes import Pinning, check_run_shapes

if TYPE_CHECKING:
    import onnx

# How many compiled specialisations a SpecializingModel keeps (memory: code + weights each).
MAX_SPECIALIZATIONS = 8

ShapeKey = tuple[tuple[str, tuple[int, ...]], ...]
T = TypeVar("T")


def shape_key(names: Sequence[str], shapes: Mapping[str, Sequence[int]]) -> ShapeKey:
    """A hashable {input: shape}, in input order."""
    return tuple((name, tuple(int(d) for d in shapes[name])) for name in names if name in shapes)


def describe(key: ShapeKey) -> str:
    return "{" + ", ".join(f"'{name}': {list(shape)}" for name, shape in key) + "}"


class SpecializationCache(Generic[T]):
    """Compiled forms of one model by input shapes: least recently used dropped past `capacity`.

    `build(input_shapes)` compiles one. A ModelError it raises (other than an unsupported op,
    which no shape would fix) means the model does not take these shapes: it is remembered and
    raised, now and on every repeat, as an InputError naming the shapes. Thread-safe: lookups
    go on while one build runs; builds run one at a time.
    """

    def __init__(self, build: Callable[[dict[str, list[int]]], T], capacity: int) -> None:
        self._build = build
        self.capacity = capacity
        self._entries: OrderedDict[ShapeKey, T | ModelError] = OrderedDict()
        self._lock = threading.Lock()  # guards _entries
        self._building = threading.Lock()
        self.builds = 0  # compiles so far, failed ones included

    def _lookup(self, key: ShapeKey) -> T | ModelError | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: ShapeKey, value: T) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def get(self, key: ShapeKey) -> T:
        entry = self._lookup(key)
        if entry is None:
            with self._building:
                entry = self._lookup(key)
                if entry is None:
                    self.builds += 1
                    try:
                        entry = self._build({name: list(shape) for name, shape in key})
                    except UnsupportedOpError:
                        raise
                    except ModelError as err:
                        failure = ModelError(
                            f"the model does not compile for input shapes {describe(key)}: {err}"
                        )
                        failure.__cause__ = err
                        entry = failure
                    self.put(key, entry)  # type: ignore[arg-type]
        if isinstance(entry, ModelError):
            raise InputError(str(entry)) from entry.__cause__
        return entry

    def items(self) -> list[tuple[ShapeKey, T]]:
        """The compiled entries, least recently used first."""
        with self._lock:
            return [(k, v) for k, v in self._entries.items() if not isinstance(v, ModelError)]


def _check_inputs(
    model: onnx.ModelProto, pinning: Pinning, base_dir: str | os.PathLike[str] | None
) -> None:
    """What no shape would fix fails now rather than at the first run: a malformed model, a
    program input that is no tensor of a dtype ember supports (the importer's own checks), or
    an op with neither a converter nor an ONNX function body. An op variant ember refuses is
    still found when the first specialisation compiles."""
    from ember.frontend.dtypes import numpy_dtype_for_onnx
    from ember.frontend.onnx_importer import has_converter, has_function_body, load_model

    load_model(model, base_dir)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    for node in model.graph.node:
        opset = opsets.get(node.domain or "ai.onnx", 1)
        if not has_converter(node.op_type, node.domain) and not has_function_body(
            node.op_type, opset, node.domain
        ):
            name = node.name or (node.output[0] if node.output else "?")
            raise UnsupportedOpError(node.op_type, name, opset, "ember has no converter for it")
    programs_inputs = {i.name for i in pinning.signature.inputs if not i.dtype_only}
    for info in model.graph.input:
        if info.name not in programs_inputs:
            continue
        if not info.type.HasField("tensor_type"):
            raise ModelError(f"graph input '{info.name}' is not a tensor")
        try:
            numpy_dtype_for_onnx(info.type.tensor_type.elem_type)
        except TypeError as err:
            raise ModelError(f"graph input '{info.name}': {err}") from None


class SpecializingModel:
    """A model with symbolic input dims, compiled once per distinct set of input shapes.

    The same API as CompiledModel: `input_names`, `output_names`, `run(dict)`, `model(*arrays)`,
    `report` (of the specialisation that ran last), `threads` / `set_num_threads`. Also
    `input_dims` (the declared dims, names for symbolic ones), `specialization(shapes)` (compile
    or fetch one ahead of time) and `specialized_shapes` (what is cached, oldest first).
    Thread-safe: runs of compiled specialisations proceed concurrently, compiles one at a time.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        pinning: Pinning,
        *,
        threads: int,
        opt_level: int,
        target: Any,
        pipeline: str,
        base_dir: str | os.PathLike[str] | None = None,
        memory_limit: int | None = None,
        max_specializations: int = MAX_SPECIALIZATIONS,
    ) -> None:
        _check_inputs(model, pinning, base_dir)
        self._model = model
        self._pinning = pinning
        self._signature = pinning.signature
        self._options = {
            "opt_level": opt_level,
            "target": target,
            "pipeline": pipeline,
            "base_dir": base_dir,
            "memory_limit": memory_limit,
        }
        self.threads = threads
        self._specializations: SpecializationCache[Any] = SpecializationCache(
            self._compile, max_specializations
        )
        self._last: Any = None

    # -- introspection -------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return self._signature.input_names

    @property
    def output_names(self) -> list[str]:
        return self._signature.output_names

    @property
    def input_dims(self) -> dict[str, list[int | str | None]]:
        """Each input's declared dims: a size, a dim name, or None (unknown); pins applied."""
        named = self._pinning.named
        return {
            info.name: [named.get(d, d) if isinstance(d, str) else d for d in info.dims or []]
            for info in self._signature.inputs
        }

    @property
    def report(self) -> Any:
        """The CompileReport of the specialisation that ran last (None before the first run)."""
        return None if self._last is None else self._last.report

    @property
    def compiles(self) -> int:
        """Specialisations compiled so far (failed ones included)."""
        return self._specializations.builds

    @property
    def specialized_shapes(self) -> list[dict[str, list[int]]]:
        """The input shapes of the cached specialisations, least recently used first."""
        return [{n: list(s) for n, s in key} for key, _ in self._specializations.items()]

    def set_num_threads(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        for _, compiled in self._specializations.items():
            compiled.set_num_threads(threads)

    # -- specialising --------------------------------------------------------------------------
    def specialization(self, shapes: Mapping[str, Sequence[int]]) -> Any:
        """The CompiledModel for these input shapes ({name: shape}), compiling it if needed."""
        shapes = {name: tuple(shape) for name, shape in shapes.items()}
        check_run_shapes(self._signature, shapes, self._pinning)
        # Inputs that only give their dtype (CastLike) are no program argument: shape-free.
        names = [i.name for i in self._signature.inputs if not i.dtype_only]
        return self._specializations.get(shape_key(names, shapes))

    def _compile(self, input_shapes: dict[str, list[int]]) -> Any:
        from ember.tools.compile import compile

        compiled = compile(self._model, input_shapes=input_shapes, **self._options)
        compiled.set_num_threads(self.threads)
        return compiled

    # -- running -------------------------------------------------------------------------------
    def _checked(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        check_feed_names(feeds, self.input_names)
        arrays = {}
        for info in self._signature.inputs:
            array = np.asarray(feeds[info.name])
            if info.dtype is not None and array.dtype != numpy_dtype(info.dtype):
                raise InputError(
                    f"input '{info.name}': expected dtype {info.dtype}, given {array.dtype}"
                )
            arrays[info.name] = array
        return arrays

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        arrays = self._checked(feeds)
        compiled = self.specialization({n: a.shape for n, a in arrays.items()})
        self._last = compiled
        # A specialisation takes fewer inputs when one only contributes its dtype (CastLike).
        return compiled.run({name: arrays[name] for name in compiled.input_names})

    def __call__(self, *arrays: Any) -> list[np.ndarray]:
        if len(arrays) != len(self.input_names):
            raise InputError(
                f"expected {len(self.input_names)} inputs {self.input_names}, given {len(arrays)}"
            )
        results = self.run(dict(zip(self.input_names, arrays)))
        return [results[n] for n in self.output_names]
