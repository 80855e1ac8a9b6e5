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

Value specialisation: an op whose shape operand (Reshape's shape, Slice's starts, TopK's k,
Resize's sizes, Range's bounds, a reduction's axes, ...) is computed from graph inputs at run
time is refused by the importer with a `RuntimeOperandError` naming those inputs. A
SpecializingModel then also keys its compiled variants on those inputs' *values*: each variant
is compiled with the values as constants (so the operand folds), one compile per distinct
value, within the same LRU bound. Only small tensors qualify (at most `MAX_VALUE_ELEMENTS`
elements of a numeric or bool dtype); a larger one is refused naming the input and its size.
This is specialisation, not symbolic execution: a model whose shape operands change on every
run recompiles on every run, and a `SpecializationWarning` says so when the cache thrashes
(a variant dropped from it is needed again).

Batch polymorphism: when the inputs' leading axes share one symbolic dim (the batch) and the
model is proven batch-separable for the other dims' sizes (passes/analysis/batch_separable.py:
no op mixes samples), the batch is not part of the key: one program compiled at batch 1 serves
every batch size, run once per sample (runtime/polymorphic.py). Other symbolic dims (sequence
length, H/W) are still specialised. When the proof fails, the batch is specialised like any
other dim, and the debug log (`ember.specialize`) says why.

Compile once: before any of this, at the first run, a model whose named symbolic dims only
size kernels with runtime extents is compiled ONCE for every shape (engine/compile_once.py);
`compiles` is then 1 whatever the shapes. A model refused that path (the reason in
`compile_once_refusal` and the debug log) is specialised as above; so is a run with a 0 dim.
`compile_once=False` skips it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from ember.engine.shapes import Pinning, check_run_shapes, freeze_inputs
from ember.runtime.errors import InputError, ModelError, RuntimeOperandError, UnsupportedOpError
from ember.runtime.executable import check_feed_names, numpy_dtype
from ember.runtime.polymorphic import BatchLoop
from ember.runtime.runnable import RunnableModel, checked_threads

if TYPE_CHECKING:
    import onnx

    # The proof imports onnx and xDSL: this module is imported by the compiler-free engine API
    # (engine/predictor.py), so it is imported when a model is compiled, not here.
    from ember.engine.batch_polymorphic import BatchProof
    from ember.engine.compile_once import OnceCompiledModel

log = logging.getLogger("ember.specialize")

# How many compiled specialisations a SpecializingModel keeps (memory: code + weights each).
MAX_SPECIALIZATIONS = 8
# The largest input (in elements) whose values a SpecializingModel keys its variants on.
MAX_VALUE_ELEMENTS = 64
# How many dropped keys a cache remembers to notice that it thrashes.
_DROPPED_REMEMBERED = 1024

ShapeKey = tuple[tuple[str, tuple[int, ...]], ...]
# (input name, dtype, shape, the bytes of its value) for each value-specialised input.
ValueKey = tuple[tuple[str, np.dtype, tuple[int, ...], bytes], ...]
T = TypeVar("T")


class SpecializationWarning(UserWarning):
    """A specialisation cache recompiles variants it dropped: more distinct shapes or values
    reach it than it holds."""


def shape_key(names: Sequence[str], shapes: Mapping[str, Sequence[int]]) -> ShapeKey:
    """A hashable {input: shape}, in input order."""
    return tuple((name, tuple(int(d) for d in shapes[name])) for name in names if name in shapes)


def describe(key: ShapeKey) -> str:
    return "{" + ", ".join(f"'{name}': {list(shape)}" for name, shape in key) + "}"


def _shapes_of(key: Any) -> dict[str, list[int]]:
    return {name: list(shape) for name, shape in key}


def _describe_shapes(key: Any) -> str:
    return f"input shapes {describe(key)}"


class SpecializationCache(Generic[T]):
    """Compiled forms of one model by key (input shapes, and values of value-specialised
    inputs): least recently used dropped past `capacity`.

    `build(argument(key))` compiles one (by default the key is a ShapeKey and the argument
    {input: shape}). A ModelError it raises (other than an unsupported op, which no shape would
    fix) means the model does not take this key: it is remembered and raised, now and on every
    repeat, as an InputError naming it (`describe(key)`). Building a key that was dropped
    warns once (SpecializationWarning): the cache thrashes. Thread-safe: lookups go on while
    one build runs; builds run one at a time.
    """

    def __init__(
        self,
        build: Callable[[Any], T],
        capacity: int,
        *,
        argument: Callable[[Any], Any] = _shapes_of,
        describe: Callable[[Any], str] = _describe_shapes,
    ) -> None:
        self._build = build
        self._argument = argument
        self._describe = describe
        self.capacity = capacity
        self._entries: OrderedDict[Any, T | ModelError] = OrderedDict()
        self._dropped: set[Any] = set()
        self._warned = False
        self._lock = threading.Lock()  # guards _entries and _dropped
        self._building = threading.Lock()
        self.builds = 0  # compiles so far, failed ones included

    def _lookup(self, key: Any) -> T | ModelError | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Any, value: T) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                dropped, _ = self._entries.popitem(last=False)
                if len(self._dropped) >= _DROPPED_REMEMBERED:
                    self._dropped.clear()
                self._dropped.add(dropped)

    def _warn_if_dropped(self, key: Any) -> None:
        with self._lock:
            again = key in self._dropped
            self._dropped.discard(key)
        if again and not self._warned:
            self._warned = True
            warnings.warn(
                f"recompiling for {self._describe(key)}, which was dropped from the cache of "
                f"{self.capacity} compiled variants: the model is run with more distinct "
                "input shapes (or shape-operand values) than it keeps, so runs keep "
                "recompiling; pin the shapes, or raise max_specializations",
                SpecializationWarning,
                stacklevel=4,
            )

    def get(self, key: Any) -> T:
        entry = self._lookup(key)
        if entry is None:
            with self._building:
                entry = self._lookup(key)
                if entry is None:
                    self._warn_if_dropped(key)
                    self.builds += 1
                    try:
                        entry = self._build(self._argument(key))
                    except UnsupportedOpError:
                        raise
                    except ModelError as err:
                        failure = ModelError(
                            f"the model does not compile for {self._describe(key)}: {err}"
                        )
                        failure.__cause__ = err
                        entry = failure
                    self.put(key, entry)  # type: ignore[arg-type]
        if isinstance(entry, ModelError):
            raise InputError(str(entry)) from entry.__cause__
        return entry

    def items(self) -> list[tuple[Any, T]]:
        """The compiled entries, least recently used first."""
        with self._lock:
            return [(k, v) for k, v in self._entries.items() if not isinstance(v, ModelError)]


class VariantModel(RunnableModel):
    """A model compiled into variants on demand, one per key its runs give (input shapes and
    shape-operand values, the structure of sequence inputs): the model's `input_names` and
    `output_names`, every variant run with `threads`, `report` of the variant that ran last
    (None before the first run), `compiles` counting variants compiled (failed ones included).
    A subclass fills `_variants` (building with `compiled_variant`) and sets `_last` per run."""

    def __init__(
        self,
        input_names: Sequence[str],
        output_names: Sequence[str],
        threads: int,
        variants: SpecializationCache[Any],
    ) -> None:
        self._input_names = list(input_names)
        self._output_names = list(output_names)
        self.threads = checked_threads(threads)
        self._variants = variants
        self._last: Any = None

    @property
    def input_names(self) -> list[str]:
        return list(self._input_names)

    @property
    def output_names(self) -> list[str]:
        return list(self._output_names)

    @property
    def report(self) -> Any:
        """The CompileReport of the variant that ran last (None before the first run)."""
        return None if self._last is None else self._last.report

    @property
    def compiles(self) -> int:
        """Variants compiled so far (failed ones included)."""
        return self._variants.builds

    @property
    def max_variants(self) -> int:
        """How many compiled variants are kept (least recently used dropped past it)."""
        return self._variants.capacity

    def keep_at_least(self, variants: int) -> None:
        """Keep at least `variants` compiled variants: for a caller that knows the set of
        shapes it will run (a server's batch sizes x sequence buckets), so none of them is
        dropped and recompiled as traffic moves between them. Never lowers the bound."""
        if variants > self._variants.capacity:
            self._variants.capacity = variants

    def set_num_threads(self, threads: int) -> None:
        self.threads = checked_threads(threads)
        for _, variant in self._variants.items():
            variant.set_num_threads(self.threads)

    def compiled_variant(self, variant: Any) -> Any:
        """`variant` (a freshly compiled model) set to run with this model's threads."""
        variant.set_num_threads(self.threads)
        return variant


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


def _is_numeric(dtype: np.dtype) -> bool:
    # ml_dtypes' bfloat16 and float8 types are numpy kind 'V'.
    return dtype.kind in "biuf" or dtype.name.startswith(("bfloat16", "float8", "float4"))


def _describe_variant(key: tuple[ShapeKey, ValueKey]) -> str:
    shapes, values = key
    text = f"input shapes {describe(shapes)}"
    if values:
        shown = ", ".join(
            f"'{name}': {np.frombuffer(data, dtype).reshape(shape).tolist()}"
            for name, dtype, shape, data in values
        )
        text += f" and input values {{{shown}}}"
    return text


class SpecializingModel(VariantModel):
    """A model with symbolic input dims, compiled once per distinct set of input shapes.

    The API of every VariantModel: `input_names`, `output_names`, `run(dict)`,
    `model(*arrays)`, `report` (of the specialisation that ran last), `threads` /
    `set_num_threads`, `compiles`. Also `input_dims` (the declared dims, names for symbolic ones), `specialization(shapes)` (compile
    or fetch one ahead of time), `specialized_shapes` (what is cached, oldest first),
    `value_inputs` (inputs whose values select a variant too: they feed shape operands) and
    `dim_ranges` (`dynamic_dims`, checked with the shapes before anything compiles).
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
        value_inputs: RuntimeOperandError | None = None,
        batch_polymorphic: bool = True,
        keep_ir: bool = False,
        compile_once: bool = True,
    ) -> None:
        _check_inputs(model, pinning, base_dir)
        self._model = model
        self._pinning = pinning
        self._signature = pinning.signature
        # Inputs whose values key the variants too (they feed a shape operand); learnt from
        # the importer's RuntimeOperandError, here or at the first compile that raises one.
        self._value_inputs: tuple[str, ...] = ()
        self._learning = threading.Lock()
        if value_inputs is not None and not self._learn_value_inputs(value_inputs):
            raise value_inputs
        self._options = {
            "opt_level": opt_level,
            "target": target,
            "pipeline": pipeline,
            "base_dir": base_dir,
            "memory_limit": memory_limit,
            "keep_ir": keep_ir,
        }
        from ember.engine.weight_pool import WeightPool

        # The variants' weight blobs by content: variants whose weights come out identical
        # share one buffer.
        self._weight_pool = WeightPool()
        super().__init__(
            self._signature.input_names,
            self._signature.output_names,
            threads,
            SpecializationCache(
                self._compile,
                max_specializations,
                argument=lambda key: key,
                describe=_describe_variant,
            ),
        )
        # The input shapes of the last run and what ran them: a run with the same shapes (the
        # usual case) skips the checks and the cache lookup, whose answer cannot differ. Not
        # for value-specialised models, whose key is also the values.
        self._last_dispatch: tuple[tuple[tuple[int, ...], ...], Any] | None = None
        self._input_dtypes = [
            (info.name, numpy_dtype(info.dtype) if info.dtype is not None else None)
            for info in self._signature.inputs
        ]
        # The batch dim (the dim_param the inputs' leading axes share), unless pinned, and the
        # batch-separability proof per batch-1 shapes (one per size of the other dims).
        self._batch_dim: str | None = None
        self._batch_inputs: list[str] = []
        if batch_polymorphic:
            from ember.engine.batch_polymorphic import batch_inputs, leading_dim

            dim = leading_dim(model)
            if dim is not None and dim not in pinning.named:
                self._batch_inputs, why_not = batch_inputs(model, dim)
                self._batch_dim = dim if why_not is None and self._batch_inputs else None
        self._batch_proofs: dict[ShapeKey, BatchProof] = {}
        self._proving = threading.Lock()
        self._init_compile_once(compile_once)

    # -- introspection -------------------------------------------------------------------------
    @property
    def input_dims(self) -> dict[str, list[int | str | None]]:
        """Each input's declared dims: a size, a dim name, or None (unknown); pins applied."""
        named = self._pinning.named
        return {
            info.name: [named.get(d, d) if isinstance(d, str) else d for d in info.dims or []]
            for info in self._signature.inputs
        }

    @property
    def batch_dim(self) -> str | None:
        """The symbolic batch dim a batch-polymorphic program may serve (None: none)."""
        return self._batch_dim

    @property
    def batch_proofs(self) -> dict[str, BatchProof]:
        """The batch-separability proof for each batch-1 shape set tried ({shapes: proof})."""
        with self._proving:
            return {describe(key): proof for key, proof in self._batch_proofs.items()}

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights the compiled variants hold, each weight several share counted
        once (engine/weight_pool.py)."""
        return self._weight_pool.held_bytes

    @property
    def shared_weights(self) -> int:
        """How many weights are held once for all the variants holding them."""
        return self._weight_pool.shared_weights

    @property
    def specialized_shapes(self) -> list[dict[str, list[int]]]:
        """The input shapes of the cached specialisations, least recently used first."""
        return [{n: list(s) for n, s in key[0]} for key, _ in self._variants.items()]

    @property
    def dim_ranges(self) -> dict[str, tuple[int, int]]:
        """The ranges named dims may take ({"batch": (1, 64)}, from `dynamic_dims`)."""
        return dict(self._pinning.ranges)

    @property
    def value_inputs(self) -> list[str]:
        """The inputs whose values (not only shapes) select a compiled variant."""
        return list(self._value_inputs)

    def set_num_threads(self, threads: int) -> None:
        super().set_num_threads(threads)
        if self._once is not None:
            self._once.set_num_threads(self.threads)
        last = self._last_dispatch
        if last is not None:  # dropped from the cache by `specialization` calls, maybe
            last[1].set_num_threads(self.threads)

    # -- specialising --------------------------------------------------------------------------
    def specialization(
        self,
        shapes: Mapping[str, Sequence[int]],
        values: Mapping[str, np.ndarray] | None = None,
    ) -> Any:
        """The CompiledModel for these input shapes ({name: shape}), compiling it if needed;
        `values` gives the arrays of the value-specialised inputs (`value_inputs`)."""
        shapes = {name: tuple(shape) for name, shape in shapes.items()}
        check_run_shapes(self._signature, shapes, self._pinning)
        once = self._compiled_once(shapes)
        if once is not None:
            return once
        polymorphic = self._batch_polymorphic(shapes)
        if polymorphic is not None:
            return polymorphic
        while True:
            known = self._value_inputs  # one snapshot per key: other runs may learn more
            key = self._key(shapes, values or {}, known)
            try:
                return self._variants.get(key)
            except RuntimeOperandError as err:
                # Retried with the values of the inputs it names as constants (each retry
                # knows at least one more input, so this ends).
                if not self._learn_value_inputs(err, known):
                    raise

    # -- compile once (engine/compile_once.py) -------------------------------------------------
    def _init_compile_once(self, enabled: bool) -> None:
        self._once: OnceCompiledModel | None = None
        # Why the model is not compiled once (None: it is, or it has not been tried yet).
        self._once_refusal: str | None = None if enabled else "compile_once=False"
        self._once_builds = 0
        self._once_lock = threading.Lock()

    @property
    def compile_once_refusal(self) -> str | None:
        """Why this model is specialised per shape rather than compiled once for every shape
        (None: compiled once, or not run yet)."""
        return self._once_refusal

    @property
    def compiled_once(self) -> bool:
        """One program serves every shape (engine/compile_once.py)."""
        return self._once is not None

    @property
    def compiles(self) -> int:
        """Programs compiled so far (failed ones included): the variants, and the program
        compiled once for every shape."""
        return self._variants.builds + self._once_builds

    def _compiled_once(self, shapes: Mapping[str, tuple[int, ...]]) -> OnceCompiledModel | None:
        """The program compiled once for every shape, compiled at the first call (None: the
        model is refused that path, or these shapes have an empty dim, which is specialised)."""
        if self._once_refusal is not None or self._value_inputs:
            return None
        if any(0 in shape for shape in shapes.values()):
            return None
        if self._once is None:
            from ember.engine.compile_once import CompileOnceRefusal, compile_once

            with self._once_lock:
                if self._once is None and self._once_refusal is None:
                    options = self._options
                    try:
                        self._once = compile_once(
                            self._model,
                            self._pinning,
                            target=options["target"],
                            pipeline=options["pipeline"],
                            base_dir=options["base_dir"],
                            memory_limit=options["memory_limit"],
                            opt_level=options["opt_level"],
                            threads=self.threads,
                        )
                        self._once_builds += 1
                        log.debug("compiled once for every shape of dims %s", self._once.symbols)
                    except CompileOnceRefusal as err:
                        self._once_refusal = str(err)
                        log.debug("not compiled once, specialised per shape: %s", err)
                    except Exception as err:  # noqa: BLE001
                        # A failure of the new path (an ember bug) must not cost a model
                        # that specialisation compiles: it is logged and specialised.
                        self._once_refusal = f"compiling once failed: {type(err).__name__}: {err}"
                        log.warning("not compiled once, specialised per shape: %s", err)
        return self._once

    def _batch_polymorphic(self, shapes: Mapping[str, tuple[int, ...]]) -> BatchLoop | None:
        """The batch-1 program run per sample for these shapes, if the model is proven
        batch-separable at them (None: specialise on the batch as on any dim)."""
        if self._batch_dim is None or self._value_inputs:
            return None
        names = self._batch_inputs
        at_one = {
            name: ((1, *shape[1:]) if name in names else shape) for name, shape in shapes.items()
        }
        key = self._key(at_one, {}, ())
        proof = self._batch_proofs.get(key[0])  # proven once per key: no lock on the way
        if proof is None:
            proof = self._prove(key[0])
        if not proof.separable:
            return None
        try:
            compiled = self._variants.get(key)
        except (RuntimeOperandError, InputError) as err:
            # Not at batch 1 (a shape operand fed at run time, a compile error): specialise
            # the run's own shapes instead, which say for themselves what is wrong.
            from ember.engine.batch_polymorphic import BatchProof

            with self._proving:
                self._batch_proofs[key[0]] = BatchProof(False, f"at batch 1: {err}")
            return None
        loop = getattr(compiled, "_batch_loop", None)  # one per compiled program, with it
        if loop is not None:
            return loop
        if compiled.bounded or compiled.graph_outputs is not None:
            from ember.engine.batch_polymorphic import BatchProof

            with self._proving:
                self._batch_proofs[key[0]] = BatchProof(
                    False, "its outputs have data-dependent sizes or are not tensors"
                )
            return None
        loop = BatchLoop(
            compiled,
            [n for n in names if n in compiled.input_names],
            self._batch_dim,
            self._pinning.ranges.get(self._batch_dim),
        )
        compiled._batch_loop = loop
        return loop

    def _prove(self, key: ShapeKey) -> BatchProof:
        """The batch-separability proof at the batch-1 shapes `key`, made once."""
        from ember.engine.batch_polymorphic import prove_batch_separable

        assert self._batch_dim is not None
        with self._proving:
            proof = self._batch_proofs.get(key)
            if proof is None:
                proof = prove_batch_separable(
                    self._model,
                    self._batch_dim,
                    _shapes_of(key),
                    base_dir=self._options["base_dir"],
                    memory_limit=self._options["memory_limit"],
                )
                if proof.separable:
                    log.debug("batch dim '%s' is polymorphic at %s", self._batch_dim, describe(key))
                else:
                    log.debug(
                        "batch dim '%s' specialised at %s: the model is not provably "
                        "batch-separable: %s",
                        self._batch_dim,
                        describe(key),
                        proof.reason,
                    )
                self._batch_proofs[key] = proof
        return proof

    def _key(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        values: Mapping[str, np.ndarray],
        value_inputs: tuple[str, ...],
    ) -> tuple[ShapeKey, ValueKey]:
        # An empty input (axes=[], a KV cache's first step) is a program argument with no
        # values: the importer compiles it in as an empty constant, so its shape is its key.
        empty = [name for name in value_inputs if 0 in shapes.get(name, (1,))]
        # Inputs that only give their dtype (CastLike) are no program argument: shape-free.
        names = [
            i.name
            for i in self._signature.inputs
            if not i.dtype_only and i.name not in value_inputs
        ]
        value_key = []
        for name in value_inputs:
            if name in empty and name not in values:
                values = {**values, name: np.zeros(shapes[name], self._dtype_of(name))}
            if name not in values:
                raise InputError(
                    f"input '{name}' feeds a shape operand, so the model is compiled for its "
                    "value: give its array, not only its shape"
                )
            # Not np.ascontiguousarray: it makes a 0-d array 1-d (SplitToSequence's scalar
            # split would become a list of one size).
            array = np.array(values[name], order="C", copy=True)
            if array.size > MAX_VALUE_ELEMENTS:
                raise InputError(
                    f"input '{name}' feeds a shape operand (the model is compiled for each of "
                    f"its values), which ember does for at most {MAX_VALUE_ELEMENTS} elements; "
                    f"given shape {list(array.shape)} ({array.size} elements)"
                )
            value_key.append((name, array.dtype, array.shape, array.tobytes()))
        return shape_key(names, shapes), tuple(value_key)

    def _dtype_of(self, name: str) -> np.dtype:
        dtype = self._signature.input(name).dtype
        return numpy_dtype(dtype) if dtype is not None else np.dtype(np.float32)

    def _learn_value_inputs(
        self, err: RuntimeOperandError, known: tuple[str, ...] | None = None
    ) -> bool:
        """Add the inputs `err` names to the value-specialised ones; False when it names none
        beyond `known` (those the failed compile already had as constants: specialising on
        values cannot help). An input that cannot be specialised (too many elements, not
        numeric) is refused with the reason."""
        new = [name for name in err.inputs if name not in (known or ())]
        if not new:
            return False
        for name in new:
            info = self._signature.input(name)
            reason = None
            if info.dtype is None or not _is_numeric(numpy_dtype(info.dtype)):
                reason = f"its element type is {info.dtype or 'not a numeric tensor'}"
            elif info.is_static and math.prod(info.dims) > MAX_VALUE_ELEMENTS:  # type: ignore[arg-type]
                reason = f"it has {math.prod(info.dims)} elements"  # type: ignore[arg-type]
            if reason is not None:
                raise UnsupportedOpError(
                    err.op_type,
                    err.node_name,
                    err.opset,
                    f"{err.detail}; it is computed from graph input '{name}', whose values "
                    f"ember cannot specialise on ({reason}; at most {MAX_VALUE_ELEMENTS} "
                    "numeric elements)",
                ) from err
        with self._learning:  # two runs learning at once must not add a name twice
            added = [name for name in new if name not in self._value_inputs]
            self._value_inputs = (*self._value_inputs, *added)
        return True

    def _compile(self, key: tuple[ShapeKey, ValueKey]) -> Any:
        from ember.engine.compile import compile_static

        shapes, values = key
        model = self._model
        if values:
            model = freeze_inputs(
                model,
                {
                    name: np.frombuffer(data, dtype).reshape(shape)
                    for name, dtype, shape, data in values
                },
            )
        return self.compiled_variant(
            compile_static(
                model,
                _shapes_of(shapes),
                threads=self.threads,
                weight_pool=self._weight_pool,
                **self._options,
            )
        )

    # -- running -------------------------------------------------------------------------------
    def _checked(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        check_feed_names(feeds, self.input_names)
        arrays = {}
        for name, dtype in self._input_dtypes:
            array = np.asarray(feeds[name])
            if dtype is not None and array.dtype != dtype:
                raise InputError(
                    f"input '{name}': expected dtype {dtype.name}, given {array.dtype}"
                )
            arrays[name] = array
        return arrays

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        arrays = self._checked(feeds)
        shapes = tuple(array.shape for array in arrays.values())
        last = self._last_dispatch
        if last is not None and last[0] == shapes and not self._value_inputs:
            compiled = last[1]
        else:
            compiled = self.specialization({n: a.shape for n, a in arrays.items()}, arrays)
            if not self._value_inputs:
                self._last_dispatch = (shapes, compiled)
        self._last = compiled
        # A specialisation takes fewer inputs when one only contributes its dtype (CastLike)
        # or is a constant of it (value-specialised).
        return compiled.run({name: arrays[name] for name in compiled.input_names})
