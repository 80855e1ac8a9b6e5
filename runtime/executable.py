"""The thin runtime: call a compiled entry point on numpy buffers.

Imports only numpy and ctypes, never the compiler, so an ahead-of-time artifact runs where xDSL
and llvmlite are not installed. The entry point's ABI is
`void main(inputs..., outputs..., arena, weights, status)`, every argument a pointer; `status`
is the run's error record (runtime/status.py).
"""

from __future__ import annotations

import ctypes
import math
import queue
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ember.runtime.documents import MAX_BUFFER_BYTES, Field
from ember.runtime.errors import InputError, KernelError
from ember.runtime.runnable import RunnableModel, checked_threads
from ember.runtime.status import CLAIM, CODE, SITES_KEY, check_status, new_status

ALIGNMENT = 64
# Bytes per element of each dtype a program's inputs and outputs may have (numpy's names).
DTYPE_BYTES = {
    "float16": 2,
    "bfloat16": 2,
    "float32": 4,
    "float64": 8,
    "int8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "uint8": 1,
    "uint16": 2,
    "uint32": 4,
    "uint64": 8,
    "bool": 1,
}
# The 8-, 4- and 2-bit types: ml_dtypes' numpy types, one byte per element (their 4- and 2-bit
# integers are the low bits of the byte), exactly as onnx.numpy_helper gives them.
SMALL_DTYPES = (
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn",
    "int4",
    "uint4",
    "int2",
    "uint2",
)
DTYPE_BYTES.update(dict.fromkeys(SMALL_DTYPES, 1))
MAX_RANK = 32
# Manifest `extra` section of a program with data-dependent output sizes (engine/staging.py):
# {output: [count output, axis]}: the output holds its upper bound along `axis`, the count
# output (an int64 scalar) how much of it is the result; the runtime slices and drops counts.
BOUNDED_KEY = "bounded_outputs"


def numpy_dtype(name: np.dtype | str) -> np.dtype:
    """The numpy dtype of a manifest's dtype name; bfloat16 and the small types come from
    ml_dtypes (onnx's), imported only when a model has them."""
    if str(name) == "bfloat16" or str(name) in SMALL_DTYPES:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, str(name)))
    return np.dtype(name)


def buffer_address(array: np.ndarray) -> int:
    """The address of a C-contiguous array's first byte. `array.ctypes.data` builds a helper
    object on every call (~0.8 µs, as long as a tiny model's kernels); a ctypes view of the
    buffer costs a quarter of that. Arrays that export no writable buffer (read-only, empty,
    ml_dtypes' types) take the slow way."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError, BufferError):
        return array.ctypes.data


def c_strides(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    """The strides numpy gives a C-contiguous array of `shape` (unless it is empty: numpy's
    are then 0, which `checked_inputs` meets with a no-op np.ascontiguousarray)."""
    strides = []
    step = itemsize
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


def _round_up(nbytes: int) -> int:
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


class OutputPlan:
    """Where a run's outputs go: one fresh block per run holding every output at a 64-byte
    aligned offset (one allocation and one address lookup, whatever the number of outputs).
    Fresh every run, as onnxruntime's: arrays a caller kept from an earlier run are never
    overwritten; the outputs of one run never overlap."""

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self.layout: list[tuple[tuple[int, ...], np.dtype, int]] = []
        offset = 0
        for spec in specs:
            self.layout.append((spec.shape, numpy_dtype(spec.dtype), offset))
            offset += _round_up(spec.nbytes)
        self.offsets = tuple(offset for _, _, offset in self.layout)
        self.block_bytes = offset + ALIGNMENT  # + the slack for aligning the block

    def allocate(self) -> tuple[list[np.ndarray], list[int]]:
        """New output arrays, and their addresses."""
        block = np.empty(self.block_bytes, dtype=np.uint8)
        address = buffer_address(block)
        start = -address % ALIGNMENT
        address += start
        arrays = [
            np.ndarray(shape, dtype, block, start + offset) for shape, dtype, offset in self.layout
        ]
        return arrays, [address + offset for offset in self.offsets]


def aligned_empty(shape: Sequence[int], dtype: np.dtype | str = np.uint8) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary."""
    dtype = numpy_dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]

    @classmethod
    def read(cls, spec: Field) -> TensorSpec:
        """The tensor described by one entry of a document's `inputs` or `outputs`."""
        shape = tuple(dim.as_int() for dim in spec["shape"].as_list(MAX_RANK))
        return cls(spec["name"].as_str(), shape, spec["dtype"].as_str())


@dataclass
class Manifest:
    """What the runtime needs to know about a compiled program (also the AOT manifest)."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    arena_bytes: int
    weights_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = [asdict(s) | {"shape": list(s.shape)} for s in self.inputs]
        d["outputs"] = [asdict(s) | {"shape": list(s.shape)} for s in self.outputs]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "manifest") -> Manifest:
        """The manifest in a parsed JSON document, every field checked (ArtifactError)."""
        document = Field(d, where)
        entry = document.get("entry")
        fixed = Executable.ENTRY_SYMBOL
        if entry is not None and entry.value != fixed:
            entry.fail(f"'{fixed}' (the entry point is fixed; it is not chosen by a file)")
        extra = document.get("extra")
        manifest = cls(
            inputs=[TensorSpec.read(s) for s in document["inputs"].as_list()],
            outputs=[TensorSpec.read(s) for s in document["outputs"].as_list()],
            arena_bytes=document["arena_bytes"].as_int(),
            weights_bytes=document["weights_bytes"].as_int(),
            extra=_read_extra(extra) if extra is not None else {},
        )
        manifest.check(where)
        return manifest

    def check(self, where: str) -> None:
        """Raise ArtifactError unless the buffers this manifest describes can be allocated and
        named unambiguously (shared by AOT artifacts and JIT programs)."""
        if not self.outputs:
            Field([], where, "outputs").fail("a non-empty array (a program has outputs)")
        for key, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            seen: set[str] = set()
            for i, spec in enumerate(specs):
                path = f"{key}[{i}]"
                if spec.dtype not in DTYPE_BYTES:
                    Field(spec.dtype, where, f"{path}.dtype").fail(
                        f"one of {', '.join(DTYPE_BYTES)}"
                    )
                if spec.nbytes > MAX_BUFFER_BYTES:
                    Field(list(spec.shape), where, f"{path}.shape").fail(
                        f"a shape of at most {MAX_BUFFER_BYTES} bytes (this one: {spec.nbytes})"
                    )
                if spec.name in seen:
                    Field(spec.name, where, f"{path}.name").fail(f"unique among the {key}")
                seen.add(spec.name)
        for name in ("arena_bytes", "weights_bytes"):
            Field(getattr(self, name), where, name).as_int()


def _read_extra(extra: Field) -> dict[str, Any]:
    """`extra`: optional sections; `profile` (one counter slot per site) sizes a buffer."""
    result = dict(extra.as_dict())
    profile = extra.get("profile")
    if profile is not None:
        result["profile"] = [
            {
                "callee": site["callee"].as_str(),
                "summary": site["summary"].as_str(r".*"),
                "flops": site["flops"].as_int(),
                # The ONNX node of the site (absent from artifacts built before they were kept).
                **{
                    key: field.as_str(r".*") if (field := site.get(key)) is not None else ""
                    for key in ("shapes", "op_type", "node")
                },
                "absorbed": [
                    name.as_str() for name in (site.get("absorbed") or Field([], "")).as_list()
                ],
            }
            for site in profile.as_list()
        ]
    return result


# The manifest's `extra` entry describing graph outputs that are sequences or optionals (the
# importer's OUTPUT_STRUCTURE): [{"name", "kind": "tensor" | "sequence" | "none", "length"}].
# The program's outputs are flat: sequence `y` of n tensors is `y[0]` .. `y[n-1]`.
GRAPH_OUTPUTS_KEY = "graph_outputs"


def assemble_outputs(
    flat: Mapping[str, np.ndarray], structure: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """A program's flat outputs as the graph's: a list of arrays per sequence output, None
    per empty optional, an array per tensor."""
    outputs: dict[str, Any] = {}
    for entry in structure:
        name, kind = entry["name"], entry["kind"]
        if kind == "sequence":
            outputs[name] = [flat[f"{name}[{i}]"] for i in range(int(entry["length"]))]
        elif kind == "none":
            outputs[name] = None
        else:
            outputs[name] = flat[name]
    return outputs


def _bounded_outputs(manifest: Manifest) -> dict[str, tuple[str, int]]:
    """{output: (count output, axis)} from the manifest's `extra.bounded_outputs`, checked."""
    section = manifest.extra.get(BOUNDED_KEY)
    if not section:
        return {}
    specs = {s.name: s for s in manifest.outputs}
    bounded = {}
    where = Field(section, "manifest", f"extra.{BOUNDED_KEY}")
    for name in where.as_dict():
        entry = where[name]
        pair = entry.as_list(2)
        if len(pair) != 2:
            entry.fail("[count output, axis]")
        count_name, axis = pair[0].as_str(), pair[1].as_int(-MAX_RANK, MAX_RANK)
        if name not in specs or count_name not in specs or specs[count_name].shape != ():
            entry.fail("an output and the scalar output that counts it")
        rank = len(specs[name].shape)
        if not -rank <= axis < rank:
            entry.fail(f"an axis of output '{name}' {list(specs[name].shape)}")
        bounded[name] = (count_name, axis % rank)
    return bounded


def require_mapping(feeds: object, input_names: Sequence[str], positional: bool = True) -> None:
    """InputError unless `feeds` is a mapping of input name -> array (a list is the usual slip);
    `positional`: the caller also offers a positional call, which the message then suggests."""
    if not isinstance(feeds, Mapping):
        hint = " (call the model positionally for a list)" if positional else ""
        raise InputError(
            f"run() takes a dict of input name -> array, given {type(feeds).__name__}; "
            f"the inputs are {list(input_names)}{hint}"
        )


def check_feed_names(feeds: object, input_names: Sequence[str]) -> None:
    """InputError unless `feeds` maps exactly the model's inputs, naming what is off."""
    require_mapping(feeds, input_names)
    assert isinstance(feeds, Mapping)
    missing = [n for n in input_names if n not in feeds]
    extra = [n for n in feeds if n not in set(input_names)]
    if missing or extra:
        raise InputError(
            f"inputs do not match the model: missing {missing}, unexpected {extra}; "
            f"expected {list(input_names)}"
        )


@dataclass
class _Workspace:
    """What one in-flight run owns: the arena for its intermediates and its status record
    (runtime/status.py), with their addresses; reused by later runs, never shared by two."""

    arena: np.ndarray
    arena_address: int
    status: np.ndarray  # passed only to a program that takes one; always zero when idle
    status_address: int
    # The record's words as Python ints, read without a numpy call: a run that recorded
    # nothing leaves CODE and CLAIM zero, and then wrote no word (runtime/status.py), so the
    # record stays zeroed for the next run and only a failed run needs it cleared.
    status_words: memoryview

    def failure(self) -> np.ndarray | None:
        """A copy of the record if the run recorded an error (the record is then cleared)."""
        words = self.status_words
        if not (words[CODE] or words[CLAIM]):
            return None
        failed = self.status.copy()
        self.status.fill(0)
        return failed


class Executable(RunnableModel):
    """A loaded program: validates inputs, runs the native entry point, returns numpy outputs.

    Safe to call from several threads at once: every in-flight run takes its own arena.
    """

    # The entry point's symbol is part of the ABI, never read from a file: a manifest naming
    # the function to call could make the runtime call any exported symbol (`abort`, ...).
    ENTRY_SYMBOL = "main"

    def __init__(
        self,
        entry_address: int,
        set_num_threads: Callable[[int], None],
        manifest: Manifest,
        weights: np.ndarray,
        keepalive: object = None,
        threads: int = 1,
    ):
        manifest.check("the compiled program")
        if weights.nbytes < manifest.weights_bytes:
            raise ValueError(
                f"weights hold {weights.nbytes} bytes but the manifest expects "
                f"{manifest.weights_bytes}"
            )
        self.manifest = manifest
        self._weights = weights
        self._keepalive = keepalive
        # An instrumented program (instrument-kernels) also takes a profile buffer: one int64
        # cycle counter per kernel call site, then the whole run's cycles.
        self.profile_sites: list[dict[str, Any]] | None = manifest.extra.get("profile")
        # A program with a status record (runtime/status.py) takes it after the weights.
        self.status_sites: list[dict[str, Any]] | None = manifest.extra.get(SITES_KEY)
        n_args = len(manifest.inputs) + len(manifest.outputs) + 2
        n_args += (self.status_sites is not None) + (self.profile_sites is not None)
        self._entry = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * n_args))(entry_address)
        self._set_num_threads = set_num_threads
        self._workspaces: queue.SimpleQueue[_Workspace] = queue.SimpleQueue()
        self.bounded: dict[str, tuple[str, int]] = _bounded_outputs(manifest)
        self._counts = {count for count, _ in self.bounded.values()}
        # What every run needs, worked out once (a tiny model's kernels take ~1 µs: the
        # per-run Python is the whole cost): each input's name, dtype, shape and C strides.
        self._input_plan = tuple(
            (s.name, numpy_dtype(s.dtype), s.shape, c_strides(s.shape, DTYPE_BYTES[s.dtype]))
            for s in manifest.inputs
        )
        self._input_name_set = frozenset(s.name for s in manifest.inputs)
        self._output_plan = OutputPlan(manifest.outputs)
        self._output_keys = tuple(s.name for s in manifest.outputs)
        self._input_names = tuple(s.name for s in manifest.inputs)
        # The outputs a run returns, in order (a subclass regrouping them may replace this).
        self._returned_names = tuple(n for n in self._output_keys if n not in self._counts)
        self._weights_address = weights.ctypes.data
        self.set_num_threads(threads)

    # -- introspection -------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return list(self._input_names)

    @property
    def output_names(self) -> list[str]:
        return list(self._returned_names)

    @property
    def output_specs(self) -> list[TensorSpec]:
        """The outputs a run returns: a data-dependent size (`bounded_outputs`) is -1."""
        specs = []
        for spec in self.manifest.outputs:
            if spec.name in self._counts:
                continue
            if spec.name in self.bounded:
                axis = self.bounded[spec.name][1]
                shape = (*spec.shape[:axis], -1, *spec.shape[axis + 1 :])
                spec = TensorSpec(spec.name, shape, spec.dtype)
            specs.append(spec)
        return specs

    def set_num_threads(self, threads: int) -> None:
        threads = checked_threads(threads)
        self.threads = threads
        self._set_num_threads(threads)

    # -- running -------------------------------------------------------------------------------
    def checked_inputs(self, feeds: Mapping[str, Any], shapes: bool = True) -> list[np.ndarray]:
        """The feeds in input order, C-contiguous, every name and dtype (and, with `shapes`,
        shape) checked before anything runs (InputError naming the input and both values)."""
        if type(feeds) is not dict or feeds.keys() != self._input_name_set:
            check_feed_names(feeds, self.input_names)
        arrays = []
        for name, dtype, shape, strides in self._input_plan:
            array = feeds[name]
            if type(array) is not np.ndarray:
                array = np.asarray(array)
            if array.dtype != dtype:
                raise InputError(
                    f"input '{name}': expected dtype {dtype.name}, given {array.dtype}"
                )
            if not shapes:
                arrays.append(np.ascontiguousarray(array))
                continue
            if array.shape != shape:
                raise InputError(
                    f"input '{name}': expected shape {list(shape)}, given {list(array.shape)}"
                )
            if array.strides != strides:
                # Not laid out as a fresh C array (a C-contiguous array with a size-1 dim may
                # still be, and is then not copied).
                array = np.ascontiguousarray(array)
            arrays.append(array)
        return arrays

    def _new_workspace(self) -> _Workspace:
        arena = aligned_empty((max(self.manifest.arena_bytes, ALIGNMENT),))
        status = new_status()
        return _Workspace(arena, arena.ctypes.data, status, status.ctypes.data, memoryview(status))

    def _take_workspace(self) -> _Workspace:
        try:
            return self._workspaces.get_nowait()
        except queue.Empty:
            return self._new_workspace()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._run(feeds, None)

    def run_profiled(
        self, feeds: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Run once; also return the cycles of each kernel call site (then of the whole run)."""
        if self.profile_sites is None:
            raise ValueError("this program is not instrumented: compile it with instrument-kernels")
        counters = np.zeros(len(self.profile_sites) + 1, dtype=np.int64)
        return self._run(feeds, counters), counters

    def _run(
        self, feeds: dict[str, np.ndarray], counters: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        inputs = self.checked_inputs(feeds)
        outputs, output_addresses = self._output_plan.allocate()
        args = [buffer_address(array) for array in inputs]
        args += output_addresses
        workspace = self._take_workspace()
        failed: np.ndarray | None = None
        try:
            args.append(workspace.arena_address)
            args.append(self._weights_address)
            if self.status_sites is not None:
                # Zero (see _Workspace) and the run's own: concurrent runs take other workspaces.
                args.append(workspace.status_address)
            if self.profile_sites is not None:
                if counters is None:
                    counters = np.zeros(len(self.profile_sites) + 1, dtype=np.int64)
                args.append(counters.ctypes.data)
            self._entry(*args)
            failed = workspace.failure()
        finally:
            self._workspaces.put(workspace)
        if failed is not None:
            check_status(failed, self.status_sites or [])
        results = dict(zip(self._output_keys, outputs))
        if self.bounded:
            self._slice_bounded(results)
        return results

    def _slice_bounded(self, results: dict[str, np.ndarray]) -> None:
        for name, (count_name, axis) in self.bounded.items():
            # A data-dependent output: its buffer holds the upper bound, the count how much
            # of it is the result: its first `count` along `axis` (contiguous, as every other
            # output: a view along axis 0, a copy past it).
            array = results[name]
            count = int(results[count_name])
            if not 0 <= count <= array.shape[axis]:
                raise KernelError(
                    f"output '{name}': the program counted {count} results along axis {axis} "
                    f"of a buffer of {array.shape[axis]} (an ember bug)"
                )
            results[name] = np.ascontiguousarray(array[(slice(None),) * axis + (slice(0, count),)])
        for count_name in self._counts:
            del results[count_name]

    def call_per_sample(
        self,
        inputs: Sequence[np.ndarray],
        outputs: Sequence[np.ndarray],
        input_steps: Sequence[int],
        output_steps: Sequence[int],
        samples: int,
    ) -> None:
        """Call the entry `samples` times, the k-th on every buffer's address plus k times its
        step in bytes (0: the same buffer each call), one workspace for all (the calls are
        sequential); the status record is checked after each call (runtime/polymorphic.py).
        The caller has checked the buffers: C-contiguous, of the manifest's dtypes, and
        holding `samples` blocks of the shapes the manifest gives."""
        if self.profile_sites is not None or self.bounded:
            raise ValueError("a profiled or bounded-output program is not run per sample")
        in_addresses = [buffer_address(a) for a in inputs]
        out_addresses = [buffer_address(o) for o in outputs]
        workspace = self._take_workspace()
        extra = [workspace.status_address] if self.status_sites is not None else []
        failed: tuple[int, np.ndarray] | None = None
        try:
            for k in range(samples):
                self._entry(
                    *[a + k * s for a, s in zip(in_addresses, input_steps)],
                    *[a + k * s for a, s in zip(out_addresses, output_steps)],
                    workspace.arena_address,
                    self._weights_address,
                    *extra,
                )
                record = workspace.failure()
                if record is not None:
                    failed = (k, record)
                    break
        finally:
            self._workspaces.put(workspace)
        if failed is not None:
            try:
                check_status(failed[1], self.status_sites or [])
            except KernelError as err:
                raise KernelError(
                    f"{err} (in sample {failed[0]} of the batch)",
                    op_type=err.op_type,
                    node_name=err.node_name,
                    value=err.value,
                ) from None
