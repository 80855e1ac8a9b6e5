"""ONNX -> graph dialect.

`import_model(model)` returns `(module, weights)`:

    builtin.module {
      func.func @main(%x: tensor<1x3x224x224xf32>) -> tensor<1x1000xf32>
          attributes {ember.input_names = ["data"], ember.output_names = ["prob"]} { ... }
    }

The graph's input and output names are recorded, in argument/result order, as the ArrayAttrs of
StringAttr `ember.input_names` and `ember.output_names` on the function (see `io_names`), and
their numpy dtype names as `ember.input_dtypes` / `ember.output_dtypes`: buffers lose the
signedness of unsigned integers below the graph dialect, the program's users must not.

Every shape is static. Values known at compile time (initializers, Constant, and everything
computed from them by shape ops such as Shape/Gather/Concat/Unsqueeze/ConstantOfShape/Cast/
Range/Slice, or by integer arithmetic) are folded with numpy while importing, using the same
evaluators as the `fold-constants` pass; only the constants that a remaining graph op consumes
become `graph.constant "<name>"` ops, whose arrays live in the returned WeightStore. Float
arithmetic between weights is kept as graph ops for the graph passes to fold. No result
larger than `limits.FOLD_LIMIT_BYTES` is folded (it stays a graph op, a kernel at run time),
and a tensor larger than the memory limit is refused (`ResourceLimitError`), so that import
cost never grows with tensor values (see `core/limits.py`).

This module is the driver: it reads and checks the model, makes the function's arguments and
results, and imports each node through `ImportContext.import_node` (frontend/context.py), which
runs the node's converter from `frontend/ops/<family>.py` (frontend/registry.py).

The model is validated as it is read (`frontend/validate.py`: structure, element types against
the ONNX type constraints, attributes, sizes; docs/architecture.md#validation). Unsupported ops
raise `UnsupportedOpError` (op type, node name, opset) before any code is generated; malformed
models raise `ModelError`, tensors over the memory limit `ResourceLimitError`. All are
ValueErrors.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import external_data_helper
from onnx.external_data_helper import uses_external_data
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr, TensorType
from xdsl.ir import Attribute, Block, Region, SSAValue
from xdsl.utils.exceptions import VerifyException

import ember.frontend.ops  # noqa: F401  (the converters register themselves)
from ember.core import limits
from ember.dialects import graph, numpy_eval
from ember.dialects.weights import WeightStore
from ember.frontend.context import (
    AnyValue,
    Const,
    ImportContext,
    OptionalValue,
    SequenceValue,
    Value,
    shape_of,
    ssa_name,
)
from ember.frontend.dtypes import numpy_dtype_for_onnx
from ember.frontend.errors import ModelError
from ember.frontend.functions import function_body, has_function_body
from ember.frontend.registry import has_converter, supported_ops
from ember.frontend.shape_inference import inferred_types, type_skeleton
from ember.frontend.validate import validate_graph

__all__ = [
    "INPUT_DTYPES",
    "INPUT_NAMES",
    "OUTPUT_DTYPES",
    "OUTPUT_NAMES",
    "OUTPUT_STRUCTURE",
    "DeclaredShapeWarning",
    "ImportedModel",
    "check_model",
    "function_body",
    "has_converter",
    "has_function_body",
    "import_model",
    "import_onnx",
    "inferred_types",
    "io_names",
    "load_model",
    "nested_reads",
    "ssa_name",
    "supported_ops",
    "type_skeleton",
]

INPUT_NAMES = "ember.input_names"
OUTPUT_NAMES = "ember.output_names"
INPUT_DTYPES = "ember.input_dtypes"
OUTPUT_DTYPES = "ember.output_dtypes"
# JSON, present when a graph output is a sequence or an optional: per graph output, its kind
# ("tensor", "sequence", "none" for an empty optional) and a sequence's length. The program's
# results are flat: a sequence `y` of n tensors is the results `y[0]` .. `y[n-1]`, an empty
# optional none, a present one its value (`flatten_output`).
OUTPUT_STRUCTURE = "ember.output_structure"


@dataclass
class ImportedModel:
    module: ModuleOp
    weights: WeightStore
    input_names: list[str]
    output_names: list[str]


def io_names(fn: func.FuncOp) -> tuple[list[str], list[str]]:
    """The ONNX input and output names recorded on an imported function."""

    def names(key: str) -> list[str]:
        attr = fn.attributes.get(key)
        if not isinstance(attr, ArrayAttr):
            return []
        return [s.data for s in attr.data if isinstance(s, StringAttr)]

    return names(INPUT_NAMES), names(OUTPUT_NAMES)


def load_model(
    model: str | os.PathLike[str] | onnx.ModelProto,
    base_dir: str | os.PathLike[str] | None = None,
) -> onnx.ModelProto:
    """Read, validate and check a model; any failure becomes a ModelError.

    Tensors kept in external files are read from `base_dir`: by default the folder of the
    model file; a ModelProto with external data needs it given (it never resolves against the
    process's working directory). onnx's loader refuses locations that leave that folder
    (`..`, absolute paths, symlinks out, devices) and offsets/lengths past the file's end.
    """
    if not isinstance(model, onnx.ModelProto):
        path = os.fspath(model)
        try:
            model = onnx.load(path, load_external_data=False)
        except Exception as err:  # protobuf raises several unrelated types on corrupt input
            raise ModelError(f"cannot read ONNX model '{path}': {err}") from err
        base_dir = os.path.dirname(os.path.abspath(path)) if base_dir is None else base_dir
    validate_graph(model)
    model = _default_domain_spelled_empty(model)
    external = [t for t in external_data_helper._get_all_tensors(model) if uses_external_data(t)]
    if external:
        if base_dir is None:
            where = dict((e.key, e.value) for e in external[0].external_data).get("location")
            raise ModelError(
                f"tensor '{external[0].name}' keeps its data in the external file '{where}': "
                "pass base_dir= (the folder the model was saved in) to read it"
            )
        loaded = onnx.ModelProto()
        loaded.CopyFrom(model)  # the caller's proto keeps its external references
        try:
            external_data_helper.load_external_data_for_model(loaded, os.fspath(base_dir))
        except Exception as err:
            raise ModelError(
                f"cannot read external data from '{os.fspath(base_dir)}': {err}"
            ) from err
        model = loaded
    try:
        check_model(model)
    except Exception as err:
        raise ModelError(f"invalid ONNX model: {err}") from err
    return model


def _default_domain_spelled_empty(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model`, or a copy whose "ai.onnx" domains (opset imports, nodes, functions) read "".

    ONNX names the default domain both ways and onnxruntime accepts either; onnx's checker and
    shape inference know only "" (they found no MatMul in an opset-11 "ai.onnx" model)."""
    graphs = [model.graph, *(f for f in model.functions)]
    nodes = [n for g in graphs for n in _all_nodes(g.node)]
    imports = [*model.opset_import, *(o for f in model.functions for o in f.opset_import)]
    if not any(o.domain == "ai.onnx" for o in imports) and not any(
        n.domain == "ai.onnx" for n in nodes
    ):
        return model
    versions = {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")}
    if len(versions) > 1:
        raise ModelError(
            f"the model imports the default ONNX domain twice, as '' and as 'ai.onnx', with "
            f"different versions {sorted(versions)}"
        )
    normalized = onnx.ModelProto()
    normalized.CopyFrom(model)
    for owner in [normalized, *normalized.functions]:
        seen = False
        kept = []
        for o in owner.opset_import:
            if o.domain in ("", "ai.onnx"):
                if seen:
                    continue
                seen = True
                o.domain = ""
            kept.append(o)
        del owner.opset_import[:]
        owner.opset_import.extend(kept)
    for g in [normalized.graph, *normalized.functions]:
        for n in _all_nodes(g.node):
            if n.domain == "ai.onnx":
                n.domain = ""
    return normalized


def _all_nodes(nodes: Iterable[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """`nodes` and the nodes of their subgraphs, at any depth."""
    found = []
    for n in nodes:
        found.append(n)
        for attr in n.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                found.extend(_all_nodes(sub.node))
    return found


def _names_read(g: onnx.GraphProto) -> set[str]:
    """Every value name that a node of `g`, or of a subgraph nested in one, reads."""
    names = {name for n in g.node for name in n.input if name}
    for n in g.node:
        for attr in n.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= _names_read(sub) | {o.name for o in sub.output}
    return names


def nested_reads(g: onnx.GraphProto) -> set[str]:
    """The names that the subgraphs of `g`'s nodes (and theirs) read."""
    return {
        name
        for n in g.node
        for attr in n.attribute
        for sub in ([attr.g] if attr.HasField("g") else list(attr.graphs))
        for name in _names_read(sub) | {o.name for o in sub.output}
    }


class DeclaredShapeWarning(UserWarning):
    """A graph output's declared shape disagrees with the shape ember computes."""


def _warn_if_declared_shape_differs(info: onnx.ValueInfoProto, computed: tuple[int, ...]) -> None:
    """Exporters write -1 or stale sizes into output shapes; like onnxruntime, trust the graph."""
    tensor_type = info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return
    declared = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    if len(declared) == len(computed) and all(
        d is None or d < 0 or d == c for d, c in zip(declared, computed, strict=True)
    ):
        return
    shown = ["?" if d is None else d for d in declared]
    warnings.warn(
        f"graph output '{info.name}' is declared with shape {shown} but the graph computes "
        f"{list(computed)}; using the computed shape",
        DeclaredShapeWarning,
        stacklevel=4,
    )


# Ops onnxruntime registers in the default domain below the opset ONNX defines them at (or
# never), which its graph optimizer writes into saved models ("optimized_model_filepath"):
# op type -> the first ai.onnx opset defining it (None: none does). onnx's checker refuses them.
ONNXRUNTIME_DEFAULT_DOMAIN_OPS: dict[str, int | None] = {
    "LayerNormalization": 17,
    "SimplifiedLayerNormalization": None,
}
# The domain the checker sees those nodes in (it checks no schema there).
_UNCHECKED_DOMAIN = "ai.ember.onnxruntime_default_domain"


def _onnxruntime_default_domain_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    found = []
    for n in _all_nodes(model.graph.node):
        if n.domain in ("", "ai.onnx") and n.op_type in ONNXRUNTIME_DEFAULT_DOMAIN_OPS:
            since = ONNXRUNTIME_DEFAULT_DOMAIN_OPS[n.op_type]
            if since is None or opset < since:
                found.append(n)
    return found


def check_model(model: onnx.ModelProto) -> None:
    """onnx.checker, except that graph inputs and outputs may omit their shape (onnxruntime
    accepts it: an input's shape is then the fed array's), and that the default-domain ops of
    onnxruntime's optimizer (`ONNXRUNTIME_DEFAULT_DOMAIN_OPS`) are not checked as ONNX ops."""
    contrib = _onnxruntime_default_domain_nodes(model)
    if contrib:
        checked = onnx.ModelProto()
        checked.CopyFrom(model)
        for n in _onnxruntime_default_domain_nodes(checked):
            n.domain = _UNCHECKED_DOMAIN
        checked.opset_import.append(onnx.helper.make_opsetid(_UNCHECKED_DOMAIN, 1))
        model = checked
    shapeless = [
        o
        for o in [*model.graph.input, *model.graph.output]
        if o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape")
    ]
    if not shapeless:
        onnx.checker.check_model(model)
        return
    # The checker demands the field; the check itself does not depend on its value.
    for out in shapeless:
        out.type.tensor_type.shape.SetInParent()
    try:
        onnx.checker.check_model(model)
    finally:
        for out in shapeless:
            out.type.tensor_type.ClearField("shape")


def import_model(
    model: str | os.PathLike[str] | onnx.ModelProto,
    input_shapes: dict[str, Sequence[int]] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    memory_limit: int | None = None,
) -> tuple[ModuleOp, WeightStore]:
    """Import an ONNX model into a graph-dialect module and its weights.

    `input_shapes` fixes the shapes of inputs with symbolic dimensions (e.g. a batch size);
    `base_dir` is where external tensor data is read from (see `load_model`); a tensor bigger
    than `memory_limit` bytes (default: physical memory) is a ResourceLimitError.
    """
    imported = import_onnx(model, input_shapes, base_dir, memory_limit)
    return imported.module, imported.weights


def import_onnx(
    model: str | os.PathLike[str] | onnx.ModelProto,
    input_shapes: dict[str, Sequence[int]] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    memory_limit: int | None = None,
) -> ImportedModel:
    """Like `import_model`, also returning the graph's input and output names."""
    limit = limits.memory_limit_bytes() if memory_limit is None else memory_limit
    return _GraphImporter(load_model(model, base_dir), dict(input_shapes or {}), limit).run()


class _GraphImporter(ImportContext):
    """The context of one model's import, plus what only the driver does: the function's
    arguments and results."""

    def run(self) -> ImportedModel:
        g = self.model.graph
        initializers = {t.name for t in g.initializer}
        unknown = set(self.input_shapes) - {i.name for i in g.input}
        if unknown:
            raise ModelError(f"input_shapes names unknown graph inputs {sorted(unknown)}")
        inputs = [i for i in g.input if i.name not in initializers]
        for info in self._dtype_only_inputs(inputs):
            # Stands in for the value: only its dtype is ever read.
            self.env[info.name] = Const(np.zeros(0, self._input_dtype(info)), info.name)
            inputs.remove(info)
        arg_types = [self._input_type(i) for i in inputs]
        self.block = self.root_block = Block(arg_types=arg_types)
        for arg, info in zip(self.block.args, inputs, strict=True):
            arg.name_hint = ssa_name(info.name)
            self.env[info.name] = arg
            if 0 in shape_of(arg):
                # An empty input has no values to read (a KV cache at the first step): the
                # program still takes it, as the model's signature says, but nothing reads it.
                self.env[info.name] = Const(np.zeros(shape_of(arg), self._input_dtype(info)))
        for tensor in g.initializer:
            self.env[tensor.name] = Const(self.tensor_array(tensor), tensor.name)

        self.inferred = self._onnx_shapes()
        self.used = _names_read(g)
        self.used |= {o.name for o in g.output}
        for proto in g.node:
            self.import_node(proto)

        results = []
        result_names: list[str] = []
        structure: list[dict[str, object]] = []
        for out in g.output:
            if out.name not in self.env:
                raise ModelError(f"graph output '{out.name}' is not produced by any node")
            value = self.env[out.name]
            for flat_name, element in flatten_output(out.name, value, structure):
                results.append(self.materialize(element, flat_name))
                result_names.append(flat_name)
            if isinstance(value, SSAValue | Const):
                _warn_if_declared_shape_differs(out, shape_of(value))
        if not results:
            raise ModelError(
                f"every graph output ({', '.join(o.name for o in g.output)}) is an empty "
                "sequence or optional: the program would compute nothing"
            )
        self.block.add_op(func.ReturnOp(*results))
        fn = func.FuncOp(
            "main",
            (arg_types, [r.type for r in results]),
            Region(self.block),
        )
        fn.attributes[INPUT_NAMES] = ArrayAttr([StringAttr(i.name) for i in inputs])
        fn.attributes[OUTPUT_NAMES] = ArrayAttr([StringAttr(n) for n in result_names])
        if any(entry["kind"] != "tensor" for entry in structure):
            fn.attributes[OUTPUT_STRUCTURE] = StringAttr(json.dumps(structure))
        fn.attributes[INPUT_DTYPES] = _dtype_names(arg_types)
        fn.attributes[OUTPUT_DTYPES] = _dtype_names([r.type for r in results])
        module = ModuleOp([fn])
        try:
            module.verify()
        except VerifyException as err:
            raise ModelError(f"imported graph does not verify: {err}") from err
        return ImportedModel(module, self.weights, [i.name for i in inputs], result_names)

    def _dtype_only_inputs(self, inputs: list[onnx.ValueInfoProto]) -> list[onnx.ValueInfoProto]:
        """Inputs of unknown or empty shape that nothing reads but CastLike's `target_type`:
        they are not program arguments, so their shape never needs to be static."""
        g = self.model.graph
        # Read inside a subgraph (a Loop or If body): a value, whatever the reading op.
        outputs = {o.name for o in g.output} | nested_reads(g)
        found = []
        for info in inputs:
            dims = info.type.tensor_type.shape.dim
            if info.name in outputs or all(d.dim_value > 0 for d in dims):
                continue
            uses = [(n.op_type, i) for n in g.node for i, x in enumerate(n.input) if x == info.name]
            if all(use == ("CastLike", 1) for use in uses):
                found.append(info)
        return found

    def _input_dtype(self, info: onnx.ValueInfoProto) -> np.dtype:
        if info.type.HasField("sequence_type") or info.type.HasField("optional_type"):
            kind = "sequence" if info.type.HasField("sequence_type") else "optional"
            raise ModelError(
                f"graph input '{info.name}' is a {kind}: a compiled program takes tensors only; "
                "ember.compile(model) takes it from Python (a list of arrays, or None), "
                "compiled per structure of what it is given (docs/engine_api.md)"
            )
        if not info.type.HasField("tensor_type"):
            raise ModelError(f"graph input '{info.name}' is not a tensor")
        try:
            return numpy_dtype_for_onnx(info.type.tensor_type.elem_type)
        except TypeError as err:
            raise ModelError(f"graph input '{info.name}': {err}") from None

    def _input_type(self, info: onnx.ValueInfoProto) -> TensorType:
        dtype = self._input_dtype(info)
        tensor = info.type.tensor_type
        if info.name in self.input_shapes:
            shape = tuple(int(d) for d in self.input_shapes[info.name])
            fixed = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            # No shape field at all: the rank is unknown too, and any given shape fits.
            if tensor.HasField("shape") and (
                len(shape) != len(fixed)
                or any(d < 0 for d in shape)
                # A pin may only set symbolic dims: a fixed one was silently overridden.
                or any(f is not None and f >= 0 and f != d for f, d in zip(fixed, shape))
            ):
                raise ModelError(
                    f"input_shapes['{info.name}'] = {list(shape)} does not fit the input's "
                    f"declared dims {['?' if f is None or f < 0 else f for f in fixed]}"
                )
        else:
            if not tensor.HasField("shape"):
                raise ModelError(f"graph input '{info.name}' has no shape; pass input_shapes")
            shape = ()
            for axis, dim in enumerate(tensor.shape.dim):
                if not dim.HasField("dim_value") or dim.dim_value < 0:
                    label = dim.dim_param or "?"
                    raise ModelError(
                        f"graph input '{info.name}' has dynamic dimension '{label}' at axis "
                        f"{axis}; pass input_shapes={{'{info.name}': [...]}} to make it static"
                    )
                shape += (dim.dim_value,)
        limits.check_fits_in_memory(shape, dtype, f"graph input '{info.name}'", self.memory_limit)
        return TensorType(numpy_eval.element_type(dtype), shape)


def flatten_output(
    name: str, value: AnyValue, structure: list[dict[str, object]]
) -> list[tuple[str, Value]]:
    """The program results of graph output `name` (see OUTPUT_STRUCTURE), its entry appended
    to `structure`."""
    if isinstance(value, OptionalValue):
        if value.element is None:
            structure.append({"name": name, "kind": "none"})
            return []
        value = value.element
    if isinstance(value, SequenceValue):
        structure.append({"name": name, "kind": "sequence", "length": len(value.elements)})
        return [(f"{name}[{i}]", element) for i, element in enumerate(value.elements)]
    structure.append({"name": name, "kind": "tensor"})
    return [(name, value)]


def _dtype_names(types: Sequence[Attribute]) -> ArrayAttr:
    return ArrayAttr(
        [StringAttr(numpy_eval.numpy_dtype(graph.element_type_of(t)).name) for t in types]
    )
