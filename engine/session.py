"""onnxruntime's session API on ember: code written for onnxruntime runs unchanged.

    import ember as ort                                   # was: import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession("model.onnx", options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    (y,) = session.run(None, {name: x})

`InferenceSession` takes an .onnx path, the model's bytes, a ModelProto or an artifact
directory from `ember compile`. An .onnx model is compiled by `ember.compile` when the session
is created; one whose inputs have symbolic dims (a batch) compiles one specialisation per
distinct set of input shapes on `run` (engine/specialize.py), unless
`SessionOptions.add_free_dimension_override_by_name` pins them first, as in onnxruntime.
`get_inputs()` / `get_outputs()` describe the model as onnxruntime does: declared dims, a dim
name (str) for a named symbolic dim, None for an unknown one; output shapes as ONNX infers them.
Errors are ember's (ember/runtime/errors.py), not onnxruntime's exception types.
"""

from __future__ import annotations

import enum
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.runtime.errors import InputError, ModelError
from ember.runtime.executable import require_mapping

if TYPE_CHECKING:
    import onnx

# What ember runs on, under the name onnxruntime code asks for.
CPU_PROVIDER = "CPUExecutionProvider"

# onnxruntime's type strings ("tensor(float)") by numpy dtype name, for artifacts (no onnx).
_ORT_TYPES = {
    "float32": "float",
    "float64": "double",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
    # The 8-, 4- and 2-bit types: ONNX's names (TensorProto enum, lower case).
    "float8_e4m3fn": "float8e4m3fn",
    "float8_e4m3fnuz": "float8e4m3fnuz",
    "float8_e5m2": "float8e5m2",
    "float8_e5m2fnuz": "float8e5m2fnuz",
    "float8_e8m0fnu": "float8e8m0",
    "float4_e2m1fn": "float4e2m1",
    "int4": "int4",
    "uint4": "uint4",
    "int2": "int2",
    "uint2": "uint2",
}


def get_available_providers() -> list[str]:
    """As onnxruntime's: the one provider ember has (its native CPU code)."""
    return [CPU_PROVIDER]


class GraphOptimizationLevel(enum.IntEnum):
    """onnxruntime's levels (same values). ORT_DISABLE_ALL compiles with ember's minimal
    pipeline (no graph optimisation passes, as `switch_ir_optim(False)` / `--no-ir-optim`);
    every other level runs ember's full pipeline."""

    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_LAYOUT = 3
    ORT_ENABLE_ALL = 99


class ExecutionMode(enum.IntEnum):
    """Accepted for onnxruntime compatibility; ember's kernels parallelise within an op."""

    ORT_SEQUENTIAL = 0
    ORT_PARALLEL = 1


class SessionOptions:
    """onnxruntime's SessionOptions, as far as they mean something for ember.

    Honoured: `intra_op_num_threads` (0, the default: ember's default thread count),
    `graph_optimization_level`, `add_free_dimension_override_by_name`. Accepted and ignored
    (ember has no counterpart): `inter_op_num_threads`, `execution_mode`, `log_severity_level`,
    `log_verbosity_level`, `enable_cpu_mem_arena`, `enable_mem_pattern`, `enable_profiling`,
    `add_session_config_entry`. Other attributes raise AttributeError, as onnxruntime's do.
    """

    __slots__ = (
        "_graph_optimization_level",
        "_intra_op_num_threads",
        "config_entries",
        "enable_cpu_mem_arena",
        "enable_mem_pattern",
        "enable_profiling",
        "execution_mode",
        "free_dimension_overrides",
        "inter_op_num_threads",
        "log_severity_level",
        "log_verbosity_level",
    )

    def __init__(self) -> None:
        self._intra_op_num_threads = 0
        self._graph_optimization_level = GraphOptimizationLevel.ORT_ENABLE_ALL
        self.inter_op_num_threads = 0
        self.execution_mode = ExecutionMode.ORT_SEQUENTIAL
        self.log_severity_level = 2
        self.log_verbosity_level = 0
        self.enable_cpu_mem_arena = True
        self.enable_mem_pattern = True
        self.enable_profiling = False
        self.free_dimension_overrides: dict[str, int] = {}
        self.config_entries: dict[str, str] = {}

    @property
    def intra_op_num_threads(self) -> int:
        return self._intra_op_num_threads

    @intra_op_num_threads.setter
    def intra_op_num_threads(self, threads: int) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 0:
            raise ValueError(f"intra_op_num_threads must be an integer >= 0, got {threads!r}")
        self._intra_op_num_threads = int(threads)

    @property
    def graph_optimization_level(self) -> GraphOptimizationLevel:
        return self._graph_optimization_level

    @graph_optimization_level.setter
    def graph_optimization_level(self, level: Any) -> None:
        # int(): also takes onnxruntime's own enum members, which have the same values.
        try:
            self._graph_optimization_level = GraphOptimizationLevel(int(level))
        except (TypeError, ValueError):
            raise ValueError(
                f"graph_optimization_level must be one of ember.GraphOptimizationLevel "
                f"({', '.join(m.name for m in GraphOptimizationLevel)}), got {level!r}"
            ) from None

    def add_free_dimension_override_by_name(self, dim_name: str, dim_value: int) -> None:
        """Pin the symbolic dim `dim_name` (a dim_param such as "batch") to `dim_value` in
        every input that declares it, as onnxruntime does (an .onnx model only: an artifact's
        shapes are fixed, and its inputs are checked against them at run)."""
        if isinstance(dim_value, bool) or not isinstance(dim_value, int) or dim_value < 1:
            raise ValueError(
                f"dim '{dim_name}': the size must be an integer >= 1, got {dim_value!r}"
            )
        self.free_dimension_overrides[str(dim_name)] = dim_value

    def add_session_config_entry(self, key: str, value: str) -> None:
        self.config_entries[str(key)] = str(value)

    def get_session_config_entry(self, key: str) -> str:
        return self.config_entries[key]


class RunOptions:
    """Accepted by `InferenceSession.run` for onnxruntime compatibility; ember ignores it."""

    def __init__(self) -> None:
        self.log_severity_level = 2
        self.log_verbosity_level = 0
        self.logid = ""
        self.run_tag = ""
        self.terminate = False


@dataclass(frozen=True)
class NodeArg:
    """An input or output as onnxruntime describes it: `shape` holds ints, dim names (str) and
    None for unknown dims; `type` is "tensor(float)", "tensor(int64)", ..."""

    name: str
    type: str
    shape: list[int | str | None]


@dataclass(frozen=True)
class ModelMetadata:
    """onnxruntime's get_modelmeta(): the ModelProto's descriptive fields (empty for an
    artifact, which does not keep them)."""

    producer_name: str = ""
    graph_name: str = ""
    domain: str = ""
    description: str = ""
    graph_description: str = ""
    version: int = 0
    custom_metadata_map: dict[str, str] = field(default_factory=dict)


def onnx_type_string(type_proto: onnx.TypeProto) -> str:
    """onnxruntime's spelling of an ONNX type: tensor(float), seq(tensor(int64)), ..."""
    import onnx

    kind = type_proto.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        elem = getattr(type_proto, kind).elem_type
        try:
            name = onnx.TensorProto.DataType.Name(elem).lower()
        except ValueError:
            name = f"#{elem}"
        return f"{'sparse_tensor' if kind == 'sparse_tensor_type' else 'tensor'}({name})"
    if kind == "sequence_type":
        return f"seq({onnx_type_string(type_proto.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({onnx_type_string(type_proto.optional_type.elem_type)})"
    if kind == "map_type":
        key = onnx.TensorProto.DataType.Name(type_proto.map_type.key_type).lower()
        return f"map({key},{onnx_type_string(type_proto.map_type.value_type)})"
    return "unknown"


def ort_dims(type_proto: onnx.TypeProto | None) -> list[int | str | None] | None:
    """The dims of a tensor type (None: no shape). onnxruntime shows a dim_value < 0 and a dim
    with neither value nor name as None, and the names ONNX's inference makes up
    ("unk__0") as None too."""
    if type_proto is None or type_proto.WhichOneof("value") != "tensor_type":
        return None
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for d in tensor.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value if d.dim_value >= 0 else None)
        elif d.dim_param and not d.dim_param.startswith("unk__"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def _merged(
    declared: list[int | str | None] | None, inferred: list[int | str | None] | None
) -> list[int | str | None]:
    """onnxruntime's merge of an output's declared and inferred shape: an inferred size wins,
    a declared name or size fills what inference leaves open."""
    if inferred is None or (declared is not None and len(declared) != len(inferred)):
        return list(declared or [])
    if declared is None:
        return list(inferred)
    return [
        i if isinstance(i, int) else (d if d is not None else i) for d, i in zip(declared, inferred)
    ]


def _node_args(model: onnx.ModelProto) -> tuple[list[NodeArg], list[NodeArg]]:
    """Inputs (initializers excluded) and outputs of `model`, described as onnxruntime does."""
    from ember.frontend.onnx_importer import inferred_types

    g = model.graph
    initializers = {t.name for t in g.initializer}
    inputs = [
        NodeArg(i.name, onnx_type_string(i.type), ort_dims(i.type) or [])
        for i in g.input
        if i.name not in initializers
    ]
    inferred = inferred_types(model)
    outputs = [
        NodeArg(
            o.name,
            onnx_type_string(o.type),
            _merged(ort_dims(o.type), ort_dims(inferred.get(o.name))),
        )
        for o in g.output
    ]
    return inputs, outputs


def _with_overrides(model: onnx.ModelProto, overrides: Mapping[str, int]) -> onnx.ModelProto:
    """A copy of `model` whose inputs have each overridden dim_param replaced by its size."""
    import onnx

    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    declared = set()
    for info in pinned.graph.input:
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in overrides:
                declared.add(dim.dim_param)
                dim.dim_value = overrides[dim.dim_param]  # clears dim_param (a oneof)
    unknown = sorted(set(overrides) - declared)
    if unknown:
        raise ModelError(
            f"add_free_dimension_override_by_name names {unknown}, which no input of the model "
            "declares as a symbolic dim"
        )
    return pinned


def _provider_names(providers: Sequence[Any] | None) -> None:
    """onnxruntime warns about providers it does not have and runs on the CPU: so does ember."""
    for provider in providers or []:
        name = provider[0] if isinstance(provider, tuple | list) else provider
        if name != CPU_PROVIDER:
            warnings.warn(
                f"provider '{name}' is not available in ember; running on ember's native CPU "
                f"code ({CPU_PROVIDER})",
                UserWarning,
                stacklevel=3,
            )


class InferenceSession:
    """onnxruntime.InferenceSession on ember (see the module docstring).

    `path_or_bytes`: an .onnx path, the serialized model, an onnx.ModelProto, or an artifact
    directory written by `ember compile` (loaded by the thin runtime). `providers` may list
    onnxruntime's; ember warns about all but CPUExecutionProvider and runs its own CPU code.
    """

    def __init__(
        self,
        path_or_bytes: str | os.PathLike[str] | bytes | onnx.ModelProto,
        sess_options: SessionOptions | None = None,
        providers: Sequence[Any] | None = None,
        provider_options: Sequence[dict[Any, Any]] | None = None,
    ) -> None:
        del provider_options  # options of providers ember does not have
        _provider_names(providers)
        self._options = sess_options or SessionOptions()
        threads = self._options.intra_op_num_threads or None
        # Graph inputs with an initializer of the same name (onnxruntime's overridable ones).
        self._initializer_inputs: list[str] = []
        if isinstance(path_or_bytes, str | os.PathLike) and Path(path_or_bytes).is_dir():
            self._load_artifact(Path(path_or_bytes), threads)
        else:
            self._compile(path_or_bytes, threads)
        # What `run` checks feeds and output names against, worked out once.
        self._output_names = [o.name for o in self._outputs]
        self._declared = frozenset(i.name for i in self._inputs)
        # A compiled model takes no argument for an input it only reads the dtype of (CastLike).
        self._taken = frozenset(self._model.input_names)

    def _load_artifact(self, directory: Path, threads: int | None) -> None:
        from ember.runtime.artifact import VariantArtifact, load

        self._model = load(directory, threads)
        self._meta = ModelMetadata()
        if isinstance(self._model, VariantArtifact):
            # Several static variants: the declared dims (names for symbolic ones) as inputs,
            # and output dims that differ between variants unknown (None), as onnxruntime shows.
            variants = [v.manifest for v in self._model.variants.values()]
            self._inputs = [
                NodeArg(name, f"tensor({_ORT_TYPES[dtype]})", list(dims or []))
                for name, dims, dtype in self._model.info.inputs
            ]
            self._outputs = [
                NodeArg(
                    spec.name,
                    f"tensor({_ORT_TYPES[spec.dtype]})",
                    [
                        size if all(m.outputs[i].shape[axis] == size for m in variants) else None
                        for axis, size in enumerate(spec.shape)
                    ],
                )
                for i, spec in enumerate(variants[0].outputs)
            ]
            return
        manifest = self._model.manifest
        self._inputs, self._outputs = (
            [NodeArg(s.name, f"tensor({_ORT_TYPES[s.dtype]})", list(s.shape)) for s in specs]
            for specs in (manifest.inputs, manifest.outputs)
        )

    def _compile(
        self, source: str | os.PathLike[str] | bytes | onnx.ModelProto, threads: int | None
    ) -> None:
        import onnx

        from ember.engine.compile import compile
        from ember.engine.predictor import pipeline_spec
        from ember.engine.shapes import external_data_folder, read_model

        if isinstance(source, bytes):
            try:
                model = onnx.load_from_string(source)
            except Exception as err:  # protobuf raises several unrelated types
                raise ModelError(f"cannot parse the ONNX model bytes: {err}") from err
            base_dir = None
        else:
            model = read_model(source)
            base_dir = external_data_folder(source, None)
        overrides = self._options.free_dimension_overrides
        if overrides:
            model = _with_overrides(model, overrides)
        level = self._options.graph_optimization_level
        self._model = compile(
            model,
            threads=threads,
            pipeline=pipeline_spec(ir_optim=level != GraphOptimizationLevel.ORT_DISABLE_ALL),
            base_dir=base_dir,
        )
        self._inputs, self._outputs = _node_args(model)
        initializers = {t.name for t in model.graph.initializer}
        self._initializer_inputs = [i.name for i in model.graph.input if i.name in initializers]
        self._meta = ModelMetadata(
            producer_name=model.producer_name,
            graph_name=model.graph.name,
            domain=model.domain,
            description=model.doc_string,
            graph_description=model.graph.doc_string,
            # onnxruntime's value for a model that gives none.
            version=model.model_version if model.HasField("model_version") else 2**63 - 1,
            custom_metadata_map={p.key: p.value for p in model.metadata_props},
        )

    # -- introspection (onnxruntime's names) ---------------------------------------------------
    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def get_modelmeta(self) -> ModelMetadata:
        return self._meta

    def get_providers(self) -> list[str]:
        return [CPU_PROVIDER]

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return {CPU_PROVIDER: {}}

    def get_session_options(self) -> SessionOptions:
        return self._options

    def get_overridable_initializers(self) -> list[NodeArg]:
        """Initializers are compiled into ember's weights: none can be fed at run time."""
        return []

    # -- running -------------------------------------------------------------------------------
    def run(
        self,
        output_names: Sequence[str] | None,
        input_feed: Mapping[str, Any],
        run_options: RunOptions | None = None,
    ) -> list[np.ndarray]:
        """The outputs named (all, for None or []) in that order, as onnxruntime returns them."""
        del run_options
        outputs = self._output_names
        wanted = list(output_names) if output_names else outputs
        if output_names:
            unknown = [name for name in wanted if name not in outputs]
            if unknown:
                raise InputError(
                    f"run() asks for output(s) {unknown}, which the model does not have; "
                    f"its outputs: {outputs}"
                )
        if type(input_feed) is not dict or input_feed.keys() != self._taken:
            require_mapping(input_feed, [i.name for i in self._inputs], positional=False)
            declared = self._declared
            unexpected = [name for name in input_feed if name not in declared]
            defaults = [name for name in unexpected if name in self._initializer_inputs]
            if defaults:
                # Old files (IR < 4 exporters, the Model Zoo) list every initializer as a graph
                # input too; onnxruntime then lets a run override it. ember never uses a fed
                # value in its place, so it refuses rather than silently computing with the
                # stored one.
                raise InputError(
                    f"run() was given {defaults}: initializer(s) that the model also lists as "
                    "graph inputs (onnxruntime lets a run override them). ember compiles "
                    "initializers into the model's weights and cannot take them at run time: "
                    "run without them to use the stored values, or make them plain graph "
                    "inputs (drop the initializers) to feed them; the model's inputs: "
                    f"{sorted(declared)}"
                )
            if unexpected:
                raise InputError(
                    f"run() was given input(s) {unexpected}, which the model does not have; "
                    f"its inputs: {sorted(declared)}"
                )
            input_feed = {n: v for n, v in input_feed.items() if n in self._taken}
        results = self._model.run(input_feed)
        return [results[name] for name in wanted]
