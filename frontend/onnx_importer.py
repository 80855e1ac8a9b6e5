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

The model is validated as it is read (`frontend/validate.py`: structure, element types against
the ONNX type constraints, attributes, sizes; docs/architecture.md#validation). Unsupported ops
raise `UnsupportedOpError` (op type, node name, opset) before any code is generated; malformed
models raise `ModelError`, tensors over the memory limit `ResourceLimitError`. All are
ValueErrors.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper
from onnx.external_data_helper import uses_external_data
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    f32,
    i64,
)
from xdsl.ir import Attribute, Block, Region, SSAValue
from xdsl.irdl import IRDLOperation
from xdsl.utils.exceptions import VerifyException

from ember.core import limits
from ember.dialects import graph, numpy_eval
from ember.dialects.weights import WeightStore
from ember.frontend.dtypes import numpy_dtype_for_onnx
from ember.frontend.errors import ModelError, UnsupportedOpError
from ember.frontend.validate import NodeInfo, validate_graph, validate_node

INPUT_NAMES = "ember.input_names"
OUTPUT_NAMES = "ember.output_names"
INPUT_DTYPES = "ember.input_dtypes"
OUTPUT_DTYPES = "ember.output_dtypes"

# Ops folded whenever all their inputs are known: they compute shapes or move data around.
_SHAPE_OPS = frozenset(
    {
        "Shape",
        "Size",
        "Gather",
        "Concat",
        "Unsqueeze",
        "Squeeze",
        "Reshape",
        "Flatten",
        "ConstantOfShape",
        "Cast",
        "Range",
        "Slice",
        "Identity",
        "Expand",
    }
)


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
        _check_model(model)
    except Exception as err:
        raise ModelError(f"invalid ONNX model: {err}") from err
    return model


def _names_read(g: onnx.GraphProto) -> set[str]:
    """Every value name that a node of `g`, or of a subgraph nested in one, reads."""
    names = {name for n in g.node for name in n.input if name}
    for n in g.node:
        for attr in n.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= _names_read(sub) | {o.name for o in sub.output}
    return names


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


def _check_model(model: onnx.ModelProto) -> None:
    """onnx.checker, except that graph outputs may omit their shape (onnxruntime accepts it)."""
    shapeless = [
        o
        for o in model.graph.output
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
    return _Importer(load_model(model, base_dir), dict(input_shapes or {}), limit).run()


# ---------------------------------------------------------------------------------------------
# Values during import


@dataclass
class _Const:
    """A value known at compile time; becomes a graph.constant only if a graph op needs it."""

    array: np.ndarray
    name: str | None = None


Value = SSAValue | _Const


def _shape(value: Value) -> tuple[int, ...]:
    return value.array.shape if isinstance(value, _Const) else graph.shape_of(value)


def _dtype(value: Value) -> np.dtype:
    if isinstance(value, _Const):
        return value.array.dtype
    return numpy_eval.numpy_dtype(graph.element_type_of(value))


@dataclass
class _Node:
    proto: onnx.NodeProto
    opset: int
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def op_type(self) -> str:
        return self.proto.op_type

    @property
    def name(self) -> str:
        return self.proto.name or (self.proto.output[0] if self.proto.output else "?")

    def unsupported(self, detail: str = "") -> UnsupportedOpError:
        return UnsupportedOpError(self.op_type, self.name, self.opset, detail)

    def error(self, detail: str) -> ModelError:
        return ModelError(f"{self.op_type} node '{self.name}' (opset {self.opset}): {detail}")


Converter = Callable[["_Importer", _Node], Sequence[Value]]
_CONVERTERS: dict[str, Converter] = {}


def _converts(*op_types: str, domain: str = "") -> Callable[[Converter], Converter]:
    """Register a converter; ops of another domain than ai.onnx (onnxruntime's com.microsoft
    contrib ops) are keyed "domain.OpType"."""

    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            _CONVERTERS[f"{domain}.{op_type}" if domain else op_type] = fn
        return fn

    return register


def supported_ops() -> list[str]:
    return sorted(_CONVERTERS)


def _converter_key(op_type: str, domain: str) -> str:
    return op_type if domain in ("", "ai.onnx") else f"{domain}.{op_type}"


def has_converter(op_type: str, domain: str = "") -> bool:
    """Whether the importer has a converter of its own for `op_type` of `domain`."""
    return _converter_key(op_type, domain) in _CONVERTERS


def has_function_body(op_type: str, opset: int, domain: str = "") -> bool:
    """Whether ONNX defines `op_type` at `opset` by a function of other ops (see `_expand`)."""
    if not onnx.defs.has(op_type, domain):
        return False
    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return False
    return bool(schema.function_opset_versions or schema.context_dependent_function_opset_versions)


def function_body(
    proto: onnx.NodeProto, opset: int, input_types: Sequence[onnx.TypeProto]
) -> tuple[list[onnx.NodeProto], int] | None:
    """The nodes of `proto`'s ONNX function body (as of `opset`) and the opset they use.

    Ops such as Attention or RotaryEmbedding are specified by ONNX as functions of simpler
    ops; importing that body compiles them with the kernels ember already has.
    """
    if not has_function_body(proto.op_type, opset, proto.domain):
        return None
    # onnx's own expansion (the one its "_expanded" conformance models are made with).
    from onnx.backend.test.case.node import function_expand_helper

    schema = onnx.defs.get_schema(proto.op_type, opset, proto.domain)
    node = onnx.NodeProto()
    node.CopyFrom(proto)
    given = {a.name for a in node.attribute}
    for name, attr in schema.attributes.items():
        if name not in given and attr.default_value.name:
            node.attribute.append(attr.default_value)
    plain = [v for v in schema.function_opset_versions if v <= opset]
    dependent = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
    function = onnx.FunctionProto()
    if dependent and (not plain or max(dependent) >= max(plain)):
        function.ParseFromString(
            schema.get_context_dependent_function_with_opset_version(
                max(dependent),
                node.SerializeToString(),
                [t.SerializeToString() for t in input_types],
            )
        )
    elif plain:
        function.ParseFromString(schema.get_function_with_opset_version(max(plain)))
    else:
        return None
    body_opset = next(
        (o.version for o in function.opset_import if o.domain in ("", "ai.onnx")), opset
    )
    prefix = f"{proto.name or proto.output[0]}/{proto.op_type}/"
    return function_expand_helper(node, function, prefix), body_opset


# ---------------------------------------------------------------------------------------------
# The importer


class _Importer:
    def __init__(
        self,
        model: onnx.ModelProto,
        input_shapes: dict[str, Sequence[int]],
        memory_limit: int,
    ):
        self.model = model
        self.input_shapes = input_shapes
        self.memory_limit = memory_limit
        self.weights = WeightStore()
        self.block = Block()
        self.env: dict[str, Value] = {}
        self.materialized: dict[str, SSAValue] = {}
        self.fold_node = False
        self.node: _Node | None = None
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)

    # -- entry point ---------------------------------------------------------------------------

    def run(self) -> ImportedModel:
        g = self.model.graph
        initializers = {t.name for t in g.initializer}
        unknown = set(self.input_shapes) - {i.name for i in g.input}
        if unknown:
            raise ModelError(f"input_shapes names unknown graph inputs {sorted(unknown)}")
        inputs = [i for i in g.input if i.name not in initializers]
        for info in self._dtype_only_inputs(inputs):
            # Stands in for the value: only its dtype is ever read.
            self.env[info.name] = _Const(np.zeros(0, self._input_dtype(info)), info.name)
            inputs.remove(info)
        arg_types = [self._input_type(i) for i in inputs]
        self.block = Block(arg_types=arg_types)
        for arg, info in zip(self.block.args, inputs, strict=True):
            arg.name_hint = _ssa_name(info.name)
            self.env[info.name] = arg
        for tensor in g.initializer:
            self.env[tensor.name] = _Const(self._tensor_array(tensor), tensor.name)

        self.inferred = self._onnx_shapes()
        self.used = _names_read(g)
        self.used |= {o.name for o in g.output}
        for proto in g.node:
            self._convert(proto)

        results = []
        for out in g.output:
            if out.name not in self.env:
                raise ModelError(f"graph output '{out.name}' is not produced by any node")
            results.append(self._ssa(self.env[out.name], out.name))
            _warn_if_declared_shape_differs(out, _shape(self.env[out.name]))
        self.block.add_op(func.ReturnOp(*results))
        fn = func.FuncOp(
            "main",
            (arg_types, [r.type for r in results]),
            Region(self.block),
        )
        fn.attributes[INPUT_NAMES] = ArrayAttr([StringAttr(i.name) for i in inputs])
        fn.attributes[OUTPUT_NAMES] = ArrayAttr([StringAttr(o.name) for o in g.output])
        fn.attributes[INPUT_DTYPES] = _dtype_names(arg_types)
        fn.attributes[OUTPUT_DTYPES] = _dtype_names([r.type for r in results])
        module = ModuleOp([fn])
        try:
            module.verify()
        except VerifyException as err:
            raise ModelError(f"imported graph does not verify: {err}") from err
        return ImportedModel(
            module, self.weights, [i.name for i in inputs], [o.name for o in g.output]
        )

    def _dtype_only_inputs(self, inputs: list[onnx.ValueInfoProto]) -> list[onnx.ValueInfoProto]:
        """Inputs of unknown or empty shape that nothing reads but CastLike's `target_type`:
        they are not program arguments, so their shape never needs to be static."""
        g = self.model.graph
        outputs = {o.name for o in g.output}
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
            fixed = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
            if (
                len(shape) != len(fixed)
                or any(d <= 0 for d in shape)
                # A pin may only set symbolic dims: a fixed one was silently overridden.
                or any(f > 0 and f != d for f, d in zip(fixed, shape))
            ):
                raise ModelError(
                    f"input_shapes['{info.name}'] = {list(shape)} does not fit the input's "
                    f"declared dims {[f if f > 0 else '?' for f in fixed]}"
                )
        else:
            if not tensor.HasField("shape"):
                raise ModelError(f"graph input '{info.name}' has no shape; pass input_shapes")
            shape = ()
            for axis, dim in enumerate(tensor.shape.dim):
                if not dim.HasField("dim_value") or dim.dim_value <= 0:
                    label = dim.dim_param or "?"
                    raise ModelError(
                        f"graph input '{info.name}' has dynamic dimension '{label}' at axis "
                        f"{axis}; pass input_shapes={{'{info.name}': [...]}} to make it static"
                    )
                shape += (dim.dim_value,)
        limits.check_fits_in_memory(shape, dtype, f"graph input '{info.name}'", self.memory_limit)
        return TensorType(numpy_eval.element_type(dtype), shape)

    def _tensor_array(self, tensor: onnx.TensorProto) -> np.ndarray:
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        except Exception as err:
            raise ModelError(f"tensor '{tensor.name}': element type {tensor.data_type}") from err
        limits.check_fits_in_memory(
            tensor.dims, dtype, f"initializer '{tensor.name}'", self.memory_limit
        )
        try:
            return numpy_helper.to_array(tensor)
        except Exception as err:
            raise ModelError(f"cannot decode tensor '{tensor.name}': {err}") from err

    def _onnx_shapes(self) -> dict[str, tuple[int, ...]]:
        """ONNX's own static shapes, used to cross-check ours."""
        model = type_skeleton(self.model)
        for info in model.graph.input:
            if info.name in self.input_shapes:
                dims = info.type.tensor_type.shape.dim
                for dim, size in zip(dims, self.input_shapes[info.name], strict=True):
                    dim.Clear()
                    dim.dim_value = int(size)
        return _inferred_shapes(model)

    # -- per node ------------------------------------------------------------------------------

    def _convert(self, proto: onnx.NodeProto) -> None:
        onnx_domain = proto.domain in ("", "ai.onnx")
        key = _converter_key(proto.op_type, proto.domain)
        if not onnx_domain and key not in _CONVERTERS:
            raise UnsupportedOpError(key, proto.name or proto.output[0], self.opset)
        node = _Node(
            proto, self.opset, {a.name: onnx.helper.get_attribute_value(a) for a in proto.attribute}
        )
        converter = _CONVERTERS.get(key)
        for name in proto.input:
            if name and name not in self.env:
                raise node.error(f"input '{name}' is not defined before use")
        inputs = [self.env[n] if n else None for n in proto.input]
        validate_node(
            NodeInfo(proto.op_type, node.name, self.opset, proto.domain),
            list(proto.input),
            [None if v is None else _dtype(v) for v in inputs],
            [None if v is None else _shape(v) for v in inputs],
            node.attrs,
        )
        if converter is None:
            self._expand(node)
            return
        values = [v for v in inputs if v is not None]
        self.fold_node = proto.op_type in _SHAPE_OPS or any(_dtype(v).kind in "iub" for v in values)
        self.node = node
        outputs = list(converter(self, node))
        for index, name in enumerate(proto.output):
            if not name:
                continue
            if index >= len(outputs):
                if name in self.used:
                    raise node.unsupported(f"output #{index} ('{name}') is not supported")
                continue
            value = outputs[index]
            self.check_size(_shape(value), _dtype(value), f"output '{name}'")
            expected = self.inferred.get(name)
            if expected is not None and expected != _shape(value):
                raise node.error(
                    f"computed shape {_shape(value)} for '{name}' but ONNX infers {expected}"
                )
            if isinstance(value, SSAValue) and value.name_hint is None:
                value.name_hint = _ssa_name(name)
            self.env[name] = value

    def _expand(self, node: _Node) -> None:
        """Import an op without a converter through its ONNX function body, if it has one."""
        input_types = [
            onnx.helper.make_tensor_type_proto(
                onnx.helper.np_dtype_to_tensor_dtype(_dtype(self.env[n])), _shape(self.env[n])
            )
            if n
            else onnx.TypeProto()
            for n in node.proto.input
        ]
        body = function_body(node.proto, node.opset, input_types)
        if body is None:
            raise node.unsupported()
        nodes, body_opset = body
        self.used |= {name for n in nodes for name in n.input if name}
        outer_opset, self.opset = self.opset, body_opset
        try:
            for inner in nodes:
                self._convert(inner)
        finally:
            self.opset = outer_opset

    def check_size(self, shape: Sequence[int], dtype: np.dtype, what: str) -> None:
        """Refuse a tensor the current node would make that no memory could hold (before
        numpy or the arena tries to), naming the node and `what` it is."""
        if self.node is not None:
            node = self.node
            what = f"{node.op_type} node '{node.name}' (opset {node.opset}): {what}"
        limits.check_fits_in_memory(shape, dtype, what, self.memory_limit)

    def input(self, node: _Node, index: int) -> Value | None:
        names = node.proto.input
        if index >= len(names) or not names[index]:
            return None
        return self.env[names[index]]

    def required(self, node: _Node, index: int) -> Value:
        value = self.input(node, index)
        if value is None:
            raise node.error(f"missing required input #{index}")
        return value

    def constant(self, node: _Node, index: int, what: str) -> np.ndarray | None:
        """A compile-time input (absent -> None); a runtime value is an error."""
        value = self.input(node, index)
        if value is None:
            return None
        if not isinstance(value, _Const):
            raise node.unsupported(f"{what} (input #{index}) must be a compile-time constant")
        return value.array

    def _ssa(self, value: Value, hint: str | None = None) -> SSAValue:
        if isinstance(value, SSAValue):
            return value
        if value.name is not None and value.name in self.materialized:
            return self.materialized[value.name]
        ref = self.weights.add(value.array, value.name or hint or "const")
        op = graph.ConstantOp(ref, numpy_eval.tensor_type(value.array))
        op.output.name_hint = _ssa_name(ref)
        self.block.add_op(op)
        if value.name is not None:
            self.materialized[value.name] = op.output
        return op.output

    def emit(
        self,
        op_type: type[IRDLOperation],
        operands: Sequence[Value | None | Sequence[Value]],
        shape: Sequence[int],
        dtype: np.dtype | None = None,
        **props: Attribute | None,
    ) -> Value:
        """Add one graph op, or fold it with numpy when its operands are known and the result
        is small enough (`limits.FOLD_LIMIT_BYTES`); a result too big for memory is refused."""
        flat = [v for o in operands for v in (o if isinstance(o, list | tuple) else [o])]
        if dtype is None:
            dtype = _dtype(next(v for v in flat if v is not None))
        output = self.node.proto.output[0] if self.node and self.node.proto.output else "?"
        self.check_size(shape, dtype, f"output '{output}' (a {op_type.name} result)")
        result_type = TensorType(numpy_eval.element_type(dtype), tuple(shape))
        properties = {k: v for k, v in props.items() if v is not None}
        evaluator = numpy_eval.EVALUATORS.get(op_type.name)
        if (
            self.fold_node
            and evaluator
            and all(isinstance(v, _Const | None) for v in flat)
            and numpy_eval.foldable_size(result_type)
        ):
            arrays = [None if v is None else v.array for v in flat]  # type: ignore[union-attr]
            array = np.asarray(evaluator(properties, arrays, result_type)).astype(dtype)
            return _Const(array)
        widens = _FLOAT32_KERNELS.get(op_type)
        if widens is not None and dtype != np.float32:
            return self._in_float32(op_type, operands, shape, dtype, widens, properties)
        hint = self.node.name if self.node else None
        ssa_operands: list[SSAValue | None | list[SSAValue]] = []
        for o in operands:
            if isinstance(o, list | tuple):
                ssa_operands.append([self._ssa(v, hint) for v in o])
            else:
                ssa_operands.append(None if o is None else self._ssa(o, hint))
        op = op_type.build(
            operands=ssa_operands,  # type: ignore[arg-type]
            result_types=[result_type],
            properties=properties,
        )
        self.block.add_op(op)
        return op.results[0]

    def _in_float32(
        self,
        op_type: type[IRDLOperation],
        operands: Sequence[Value | None | Sequence[Value]],
        shape: Sequence[int],
        dtype: np.dtype,
        widens: frozenset[np.dtype],
        properties: dict[str, Attribute],
    ) -> Value:
        """An op whose kernel computes in float32 only, on another element type: widen the
        operands to float32 and narrow the result back when float32 holds each of their
        values exactly; refuse the rest (a float64 convolution in float32 is not one)."""
        flat = [v for o in operands for v in (o if isinstance(o, list | tuple) else [o])]
        f32_dtype = np.dtype(np.float32)
        given = {_dtype(v) for v in flat if v is not None} | {np.dtype(dtype)}
        if not given - {f32_dtype} <= widens:
            detail = (
                f"element type {np.dtype(dtype).name}: ember's {op_type.name} kernel computes in "
                f"float32 (it widens {', '.join(sorted(d.name for d in widens))} exactly)"
            )
            if self.node is None:
                raise ModelError(detail)
            raise self.node.unsupported(detail)

        def widen(value: Value) -> Value:
            if _dtype(value) == f32_dtype:
                return value
            if isinstance(value, _Const):
                return _Const(value.array.astype(f32_dtype))
            return self.emit(graph.CastOp, [value], _shape(value), f32_dtype)

        wide = [
            [widen(v) for v in o]
            if isinstance(o, list | tuple)
            else (None if o is None else widen(o))
            for o in operands
        ]
        result = self.emit(op_type, wide, shape, f32_dtype, **properties)
        return self.emit(graph.CastOp, [result], shape, dtype)

    # -- shared building blocks ----------------------------------------------------------------

    def reshape(self, value: Value, shape: Sequence[int]) -> Value:
        if _shape(value) == tuple(shape):
            return value
        return self.emit(graph.ReshapeOp, [value], shape)

    def binary(self, node: _Node, op_type: type[IRDLOperation], lhs: Value, rhs: Value) -> Value:
        lhs, rhs = self._unify_dtypes(node, lhs, rhs)
        try:
            shape = graph.broadcast_shapes(_shape(lhs), _shape(rhs))
        except ValueError as err:
            raise node.error(str(err)) from err
        return self.emit(op_type, [lhs, rhs], shape)

    def _unify_dtypes(self, node: _Node, lhs: Value, rhs: Value) -> tuple[Value, Value]:
        """Pow-style mixed types: convert a constant operand, else cast the rhs."""
        if _dtype(lhs) == _dtype(rhs):
            return lhs, rhs
        if isinstance(rhs, _Const):
            return lhs, _Const(rhs.array.astype(_dtype(lhs)))
        if isinstance(lhs, _Const):
            return _Const(lhs.array.astype(_dtype(rhs))), rhs
        return lhs, self.emit(graph.CastOp, [rhs], _shape(rhs), _dtype(lhs))


_WIDENED = frozenset({np.dtype(np.float16)})
# Graph ops whose kernels compute in float32 only, with the element types the importer runs
# through them widened to float32 (float32 holds every value of those exactly).
_FLOAT32_KERNELS: dict[type[IRDLOperation], frozenset[np.dtype]] = {
    graph.ConvOp: _WIDENED,
    graph.GemmOp: _WIDENED,
    graph.MatMulOp: _WIDENED,
    graph.LRNOp: _WIDENED,
    graph.AveragePoolOp: _WIDENED,
    # A max is exact in any type that float32 holds exactly.
    graph.MaxPoolOp: _WIDENED | {np.dtype(np.int8), np.dtype(np.uint8)},
}


def _dtype_names(types: Sequence[Attribute]) -> ArrayAttr:
    return ArrayAttr(
        [StringAttr(numpy_eval.numpy_dtype(graph.element_type_of(t)).name) for t in types]
    )


def _ssa_name(name: str) -> str:
    """An ONNX name as a valid SSA name hint (printing keeps the IR readable)."""
    name = re.sub(r"[^A-Za-z0-9_$.-]", "_", name)
    return name if name and not name[0].isdigit() else f"v{name}"


def _axis(node: _Node, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise node.error(f"axis {axis} out of range for rank {rank}")
    return axis % rank


def _f32(value: float) -> FloatAttr:
    return FloatAttr(float(value), f32)


def _i64(value: int) -> IntegerAttr:
    return IntegerAttr(int(value), i64)


# ---------------------------------------------------------------------------------------------
# ONNX's shape inference, at a cost that does not grow with tensor values

# Ops that make a tensor of any size from small inputs.
_VALUE_GENERATORS = frozenset({"ConstantOfShape", "Range", "Expand", "Tile"})
# Tensors up to this many elements keep their values for ONNX's data propagation.
_PROPAGATED_ELEMENTS = 1024


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shapes by ONNX's inference, twice: without data propagation, then with it on a
    copy where large tensors arrive as graph inputs of their type.

    Data propagation (needed for shapes computed by Shape/Gather/Concat...) stores every value
    of the tensors it follows as a protobuf message, ~1 us each: a ConstantOfShape or Range
    of 10^8 elements would cost minutes and gigabytes. Only small shape tensors need values,
    so every tensor known to be large, and every output of a value generator of unknown
    size, is cut from the graph before it (its shape stays known from the first pass).
    """
    try:
        typed = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        return {}  # ONNX's inference gives up on some valid graphs; ours still runs
    types = {v.name: v.type for v in [*typed.graph.value_info, *typed.graph.output]}
    shapes = _static_shapes(typed)

    def cut(name: str, op_type: str) -> bool:
        shape = shapes.get(name)
        if shape is None:
            return op_type in _VALUE_GENERATORS and name in types
        return math.prod(shape) > _PROPAGATED_ELEMENTS

    small = onnx.ModelProto()
    small.CopyFrom(model)
    kept = []
    for node in small.graph.node:
        outputs = [o for o in node.output if o]
        if outputs and any(cut(o, node.op_type) for o in outputs):
            for name in outputs:
                if name in types:
                    small.graph.input.append(onnx.ValueInfoProto(name=name, type=types[name]))
        else:
            kept.append(node)
    del small.graph.node[:]
    small.graph.node.extend(kept)
    try:
        inferred = onnx.shape_inference.infer_shapes(small, strict_mode=False, data_prop=True)
    except Exception:
        return shapes
    return {**shapes, **_static_shapes(inferred)}


def type_skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with big initializers replaced by typed inputs: shape inference
    serializes its argument, and only small (shape-like) tensors matter to it."""
    src = model.graph
    g = onnx.GraphProto(name=src.name)
    g.node.extend(src.node)
    # Declared output shapes and value_info are the exporter's claims (a -1, a stale size):
    # ONNX would merge them into its inference, so leave them out and infer from the inputs.
    for out in src.output:
        g.output.append(onnx.helper.make_value_info(out.name, onnx.TypeProto()))
    declared = {i.name for i in src.input}
    g.input.extend(src.input)
    for tensor in src.initializer:
        if math.prod(tensor.dims) <= 64:
            g.initializer.append(tensor)
            continue
        info = onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
        if tensor.name in declared:
            for existing in g.input:
                if existing.name == tensor.name:
                    existing.CopyFrom(info)
        else:
            g.input.append(info)
    skeleton = onnx.ModelProto()
    skeleton.ir_version = model.ir_version
    skeleton.opset_import.extend(model.opset_import)
    skeleton.graph.CopyFrom(g)
    return skeleton


def inferred_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """ONNX's inferred type of every value it can type (graph inputs, intermediates, outputs),
    on `type_skeleton(model)`: without the declared output types, so they are what the graph
    computes; {} when ONNX's inference gives up."""
    skeleton = type_skeleton(model)
    try:
        typed = onnx.shape_inference.infer_shapes(skeleton, strict_mode=False)
    except Exception:  # ONNX's inference gives up on some valid graphs
        return {}
    values = [*typed.graph.input, *typed.graph.value_info, *typed.graph.output]
    return {v.name: v.type for v in values if v.type.WhichOneof("value") is not None}


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for info in list(model.graph.value_info) + list(model.graph.output):
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)
    return shapes


# ---------------------------------------------------------------------------------------------
# Converters: constants and shape computations


@_converts("Constant")
def _constant(imp: _Importer, node: _Node) -> Sequence[Value]:
    a = node.attrs
    name = node.proto.output[0]
    if "value" in a:
        return [_Const(numpy_helper.to_array(a["value"]), name)]
    if "value_float" in a:
        return [_Const(np.array(a["value_float"], np.float32), name)]
    if "value_floats" in a:
        return [_Const(np.array(a["value_floats"], np.float32), name)]
    if "value_int" in a:
        return [_Const(np.array(a["value_int"], np.int64), name)]
    if "value_ints" in a:
        return [_Const(np.array(a["value_ints"], np.int64), name)]
    if "sparse_value" in a:
        sparse = a["sparse_value"]
        values = numpy_helper.to_array(sparse.values)
        dense = np.zeros(tuple(sparse.dims), values.dtype)
        indices = numpy_helper.to_array(sparse.indices)
        if indices.ndim == 2:
            indices = np.ravel_multi_index(tuple(indices.T), dense.shape)
        dense.reshape(-1)[indices] = values
        return [_Const(dense, name)]
    raise node.unsupported("only numeric tensor constants are supported")


@_converts("ConstantOfShape")
def _constant_of_shape(imp: _Importer, node: _Node) -> Sequence[Value]:
    shape = imp.constant(node, 0, "shape")
    assert shape is not None
    fill = node.attrs.get("value")
    scalar = (
        numpy_helper.to_array(fill).reshape(-1) if fill is not None else np.zeros(1, np.float32)
    )
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise node.error(f"shape {dims} has a negative dimension")
    # A broadcast of the fill value: folded when small, else a fill kernel at run time.
    value = _Const(scalar[:1].reshape([1] * len(dims)))
    filled = imp.emit(graph.ExpandOp, [value], dims) if dims != [1] * len(dims) else value
    if isinstance(filled, _Const):
        filled.name = node.proto.output[0]
    return [filled]


@_converts("Shape")
def _shape_op(imp: _Importer, node: _Node) -> Sequence[Value]:
    shape = _shape(imp.required(node, 0))
    start, end = node.attrs.get("start", 0), node.attrs.get("end", len(shape))
    return [_Const(np.array(shape[start:end], np.int64))]


@_converts("Size")
def _size(imp: _Importer, node: _Node) -> Sequence[Value]:
    return [_Const(np.array(math.prod(_shape(imp.required(node, 0))), np.int64))]


@_converts("Range")
def _range(imp: _Importer, node: _Node) -> Sequence[Value]:
    start, limit, delta = (imp.constant(node, i, "Range bound") for i in range(3))
    assert start is not None and limit is not None and delta is not None
    dtype = start.dtype
    if start.size != 1 or limit.size != 1 or delta.size != 1:
        raise node.error("start, limit and delta must be scalars")
    first, last, step = (v.reshape(()).item() for v in (start, limit, delta))
    if step == 0 or not all(math.isfinite(v) for v in (first, last, step)):
        raise node.error(f"Range({first}, {last}, {step}) has no finite length")
    # ONNX: max(ceil((limit - start) / delta), 0) elements; integers exactly, floats in double.
    if dtype.kind in "iu":
        count = max(-((first - last) // step), 0)
    else:
        count = max(math.ceil((float(last) - float(first)) / float(step)), 0)
    operands = [_Const(v.reshape(1).astype(dtype)) for v in (start, delta)]
    # Folded when short; a kernel at run time when long.
    return [imp.emit(graph.RangeOp, operands, [count], dtype)]


@_converts("Cast")
def _cast(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"])
        numpy_eval.element_type(dtype)
    except (KeyError, ValueError) as err:
        raise node.unsupported(f"cast to type {node.attrs.get('to')}") from err
    if _dtype(x) == dtype:
        return [x]
    return [imp.emit(graph.CastOp, [x], _shape(x), dtype)]


@_converts("Identity")
def _identity(imp: _Importer, node: _Node) -> Sequence[Value]:
    return [imp.required(node, 0)]


# ---------------------------------------------------------------------------------------------
# Reshape family


def _reshape_target(node: _Node, in_shape: Sequence[int], spec: Sequence[int]) -> list[int]:
    allowzero = node.attrs.get("allowzero", 0)
    if any(int(d) < -1 for d in spec):
        raise node.error(f"shape {list(spec)} has a negative size other than -1")
    if not allowzero and any(d == 0 and i >= len(in_shape) for i, d in enumerate(spec)):
        raise node.error(
            f"shape {list(spec)} copies (0) a dim that the rank-{len(in_shape)} input lacks"
        )
    out = [(in_shape[i] if d == 0 and not allowzero else int(d)) for i, d in enumerate(spec)]
    if out.count(-1) > 1:
        raise node.error(f"shape {list(spec)} has more than one -1")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or math.prod(in_shape) % known:
            raise node.error(f"cannot reshape {tuple(in_shape)} to {list(spec)}")
        out[out.index(-1)] = math.prod(in_shape) // known
    if math.prod(out) != math.prod(in_shape):
        raise node.error(f"cannot reshape {tuple(in_shape)} to {list(spec)}")
    return out


@_converts("Reshape")
def _reshape(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    if "shape" in node.attrs:  # opset < 5
        spec = list(node.attrs["shape"])
    else:
        spec_array = imp.constant(node, 1, "shape")
        assert spec_array is not None
        spec = [int(d) for d in spec_array]
    return [imp.reshape(x, _reshape_target(node, _shape(x), spec))]


@_converts("Flatten")
def _flatten(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = _shape(x)
    axis = node.attrs.get("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    return [imp.reshape(x, [math.prod(shape[:axis]), math.prod(shape[axis:])])]


def _axes_of(imp: _Importer, node: _Node, attr_until: int) -> list[int] | None:
    """`axes` as an attribute (opset < attr_until) or as the second input."""
    if node.opset < attr_until:
        axes = node.attrs.get("axes")
        return None if axes is None else list(axes)
    axes_in = imp.constant(node, 1, "axes")
    return None if axes_in is None else [int(a) for a in axes_in.reshape(-1)]


@_converts("Squeeze")
def _squeeze(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = _shape(x)
    axes = _axes_of(imp, node, 13)
    if axes is None:
        drop = {i for i, d in enumerate(shape) if d == 1}
    else:
        drop = {_axis(node, a, len(shape)) for a in axes}
        if any(shape[a] != 1 for a in drop):
            raise node.error(f"cannot squeeze axes {axes} of shape {shape}")
    return [imp.reshape(x, [d for i, d in enumerate(shape) if i not in drop])]


@_converts("Unsqueeze")
def _unsqueeze(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = list(_shape(x))
    axes = _axes_of(imp, node, 13)
    if axes is None:
        raise node.error("missing axes")
    rank = len(shape) + len(axes)
    for axis in sorted(_axis(node, a, rank) for a in axes):
        shape.insert(axis, 1)
    return [imp.reshape(x, shape)]


@_converts("Transpose")
def _transpose(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = _shape(x)
    perm = list(node.attrs.get("perm", reversed(range(len(shape)))))
    if sorted(perm) != list(range(len(shape))):
        raise node.error(f"perm {perm} is not a permutation of rank {len(shape)}")
    out = [shape[p] for p in perm]
    return [imp.emit(graph.TransposeOp, [x], out, perm=graph.i64_array(perm))]


@_converts("Concat")
def _concat(imp: _Importer, node: _Node) -> Sequence[Value]:
    values = [imp.required(node, i) for i in range(len(node.proto.input))]
    first = _shape(values[0])
    axis = _axis(node, node.attrs["axis"], max(len(first), 1))
    for v in values:
        s = _shape(v)
        if len(s) != len(first) or any(s[i] != first[i] for i in range(len(s)) if i != axis):
            raise node.error(f"cannot concatenate shapes {[_shape(v) for v in values]}")
    # Zero-sized pieces (shape arithmetic leftovers) contribute nothing.
    values = [v for v in values if _shape(v)[axis] > 0] or values[:1]
    if len(values) == 1:
        return [values[0]]
    out = list(first)
    out[axis] = sum(_shape(v)[axis] for v in values)
    return [imp.emit(graph.ConcatOp, [list(values)], out, axis=_i64(axis))]


@_converts("Gather")
def _gather(imp: _Importer, node: _Node) -> Sequence[Value]:
    data, indices = imp.required(node, 0), imp.required(node, 1)
    shape = _shape(data)
    axis = _axis(node, node.attrs.get("axis", 0), len(shape))
    if _dtype(indices).kind not in "iu":
        raise node.error("indices must be an integer tensor")
    out = [*shape[:axis], *_shape(indices), *shape[axis + 1 :]]
    return [imp.emit(graph.GatherOp, [data, indices], out, axis=_i64(axis))]


# ---------------------------------------------------------------------------------------------
# Elementwise


_UNARY: dict[str, type[IRDLOperation]] = {
    "Relu": graph.ReluOp,
    "Sigmoid": graph.SigmoidOp,
    "Tanh": graph.TanhOp,
    "Exp": graph.ExpOp,
    "Log": graph.LogOp,
    "Sqrt": graph.SqrtOp,
    "Erf": graph.ErfOp,
    "Neg": graph.NegOp,
    "Abs": graph.AbsOp,
    "Reciprocal": graph.ReciprocalOp,
}


@_converts(*_UNARY)
def _unary(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    return [imp.emit(_UNARY[node.op_type], [x], _shape(x))]


@_converts("LeakyRelu")
def _leaky_relu(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    alpha = _f32(node.attrs.get("alpha", 0.01))
    return [imp.emit(graph.LeakyReluOp, [x], _shape(x), alpha=alpha)]


@_converts("Clip")
def _clip(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    if node.opset < 11:
        bounds: list[Value | None] = [
            None if k not in node.attrs else _Const(np.array(node.attrs[k], _dtype(x)))
            for k in ("min", "max")
        ]
    else:
        bounds = [imp.input(node, 1), imp.input(node, 2)]
    if all(b is None or (isinstance(b, _Const) and b.array.size == 1) for b in bounds):
        lo, hi = (None if b is None else _f32(b.array.reshape(-1)[0]) for b in bounds)  # type: ignore[union-attr]
        return [imp.emit(graph.ClipOp, [x], _shape(x), min=lo, max=hi)]
    # Tensor-valued bounds: Clip is max-then-min.
    y = x
    if bounds[0] is not None:
        y = imp.binary(node, graph.MaxOp, y, bounds[0])
    if bounds[1] is not None:
        y = imp.binary(node, graph.MinOp, y, bounds[1])
    return [y]


_BINARY: dict[str, type[IRDLOperation]] = {
    "Add": graph.AddOp,
    "Sub": graph.SubOp,
    "Mul": graph.MulOp,
    "Div": graph.DivOp,
    "Pow": graph.PowOp,
}


@_converts(*_BINARY)
def _binary(imp: _Importer, node: _Node) -> Sequence[Value]:
    if node.opset < 7 and node.attrs.get("broadcast") and "axis" in node.attrs:
        raise node.unsupported("legacy axis-aligned broadcasting")
    lhs, rhs = imp.required(node, 0), imp.required(node, 1)
    return [imp.binary(node, _BINARY[node.op_type], lhs, rhs)]


@_converts("Sum", "Max", "Min", "Mean")
def _variadic(imp: _Importer, node: _Node) -> Sequence[Value]:
    op_type = {"Sum": graph.AddOp, "Mean": graph.AddOp, "Max": graph.MaxOp, "Min": graph.MinOp}
    values = [imp.required(node, i) for i in range(len(node.proto.input))]
    acc = values[0]
    for v in values[1:]:
        acc = imp.binary(node, op_type[node.op_type], acc, v)
    if node.op_type == "Mean" and len(values) > 1:
        acc = imp.binary(node, graph.DivOp, acc, _Const(np.array(len(values), _dtype(acc))))
    return [acc]


# ---------------------------------------------------------------------------------------------
# Contractions


def _window_geometry(
    node: _Node,
    in_hw: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: bool = False,
) -> tuple[list[int], list[int]]:
    """Output size and explicit [top, left, bottom, right] pads for Conv/pooling."""
    rank = len(in_hw)
    auto_pad = node.attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pads = list(node.attrs.get("pads", [0] * 2 * rank))
    out = []
    for i in range(rank):
        size, stride, extent = in_hw[i], strides[i], (kernel[i] - 1) * dilations[i] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            n = -(-size // stride)
            total = max(0, (n - 1) * stride + extent - size)
            small, big = total // 2, total - total // 2
            pads[i], pads[i + rank] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        elif auto_pad == "VALID":
            pads[i] = pads[i + rank] = 0
            n = (size - extent) // stride + 1
        elif auto_pad == "NOTSET":
            span = size + pads[i] + pads[i + rank] - extent
            n = (-(-span // stride) if ceil_mode else span // stride) + 1
            # A last window starting inside the end padding is dropped (ONNX/PyTorch rule).
            if ceil_mode and (n - 1) * stride >= size + pads[i]:
                n -= 1
        else:
            raise node.error(f"unknown auto_pad '{auto_pad}'")
        if n <= 0:
            raise node.error(f"window {kernel} does not fit input {tuple(in_hw)}")
        out.append(n)
    return out, pads


@_converts("Gemm")
def _gemm(imp: _Importer, node: _Node) -> Sequence[Value]:
    a, b, c = imp.required(node, 0), imp.required(node, 1), imp.input(node, 2)
    trans_a, trans_b = node.attrs.get("transA", 0), node.attrs.get("transB", 0)
    sa, sb = _shape(a), _shape(b)
    if len(sa) != 2 or len(sb) != 2:
        raise node.error(f"operands must be 2-D, got {sa} and {sb}")
    m, k = (sa[1], sa[0]) if trans_a else sa
    k2, n = (sb[1], sb[0]) if trans_b else sb
    if k != k2:
        raise node.error(f"contraction mismatch {sa} x {sb} (transA={trans_a}, transB={trans_b})")
    # C broadcasts to (M, N) one way only: [3, 1] against (1, 3) would widen the output.
    if c is not None and not graph.broadcasts_to(_shape(c), (m, n)):
        raise node.error(f"C {_shape(c)} does not broadcast to {(m, n)}")
    return [
        imp.emit(
            graph.GemmOp,
            [a, b, c],
            [m, n],
            alpha=_f32(node.attrs.get("alpha", 1.0)),
            beta=_f32(node.attrs.get("beta", 1.0)),
            trans_a=_i64(trans_a),
            trans_b=_i64(trans_b),
        )
    ]


@_converts("MatMul")
def _matmul(imp: _Importer, node: _Node) -> Sequence[Value]:
    a, b = imp.required(node, 0), imp.required(node, 1)
    sa, sb = list(_shape(a)), list(_shape(b))
    # numpy.matmul rules: 1-D operands are promoted to matrices and the new axis dropped.
    a2 = imp.reshape(a, [1, *sa]) if len(sa) == 1 else a
    b2 = imp.reshape(b, [*sb, 1]) if len(sb) == 1 else b
    pa, pb = _shape(a2), _shape(b2)
    if pa[-1] != pb[-2]:
        raise node.error(f"contraction mismatch {tuple(sa)} @ {tuple(sb)}")
    try:
        batch = graph.broadcast_shapes(pa[:-2], pb[:-2])
    except ValueError as err:
        raise node.error(str(err)) from err
    y = imp.emit(graph.MatMulOp, [a2, b2, None, None], [*batch, pa[-2], pb[-1]])
    out = [*batch, *([pa[-2]] if len(sa) > 1 else []), *([pb[-1]] if len(sb) > 1 else [])]
    return [imp.reshape(y, out)]


# ---------------------------------------------------------------------------------------------
# Normalization, pooling, reductions


@_converts("BatchNormalization")
def _batch_norm(imp: _Importer, node: _Node) -> Sequence[Value]:
    if node.attrs.get("training_mode", 0):
        raise node.unsupported("training_mode=1")
    x = imp.required(node, 0)
    params = [imp.required(node, i) for i in range(1, 5)]
    shape = _shape(x)
    channels = shape[1]
    epsilon = node.attrs.get("epsilon", 1e-5)
    if _dtype(x) != np.float32 or not all(isinstance(p, _Const) for p in params):
        # graph.batch_norm exists for the passes that fold constant float32 parameters (into a
        # conv, or an affine map); otherwise compute (x - mean) / sqrt(var + eps) * scale + bias
        # elementwise, in any float type.
        per_channel = [channels] + [1] * (len(shape) - 2)
        scale, bias, mean, var = (imp.reshape(p, per_channel) for p in params)
        var_eps = imp.binary(node, graph.AddOp, var, _Const(np.array(epsilon, _dtype(var))))
        std = imp.emit(graph.SqrtOp, [var_eps], _shape(var_eps))
        normalized = imp.binary(node, graph.DivOp, imp.binary(node, graph.SubOp, x, mean), std)
        return [
            imp.binary(node, graph.AddOp, imp.binary(node, graph.MulOp, normalized, scale), bias)
        ]
    params = [imp.reshape(p, [channels]) for p in params]
    return [imp.emit(graph.BatchNormOp, [x, *params], shape, epsilon=_f32(epsilon))]


@_converts("LRN")
def _lrn(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    return [
        imp.emit(
            graph.LRNOp,
            [x],
            _shape(x),
            size=_i64(node.attrs["size"]),
            alpha=_f32(node.attrs.get("alpha", 1e-4)),
            beta=_f32(node.attrs.get("beta", 0.75)),
            bias=_f32(node.attrs.get("bias", 1.0)),
        )
    ]


@_converts("Softmax")
def _softmax(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = _shape(x)
    if node.opset >= 13:
        axis = _axis(node, node.attrs.get("axis", -1), len(shape))
        return [imp.emit(graph.SoftmaxOp, [x], shape, axis=_i64(axis))]
    # Before opset 13 the input is coerced to 2-D at `axis` and normalized per row.
    axis = _axis(node, node.attrs.get("axis", 1), len(shape))
    rows = [math.prod(shape[:axis]), math.prod(shape[axis:])]
    y = imp.emit(graph.SoftmaxOp, [imp.reshape(x, rows)], rows, axis=_i64(1))
    return [imp.reshape(y, shape)]


def _reduce(imp: _Importer, node: _Node, x: Value, kind: str, axes: list[int], keep: bool):
    shape = _shape(x)
    axes = sorted({_axis(node, a, len(shape)) for a in axes})
    out = [1 if i in axes else d for i, d in enumerate(shape) if keep or i not in axes]
    return imp.emit(
        graph.ReduceOp,
        [x],
        out,
        reduction=StringAttr(kind),
        axes=graph.i64_array(axes),
        keepdims=_i64(int(keep)),
    )


@_converts("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(imp: _Importer, node: _Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    kind = "mean" if node.op_type == "GlobalAveragePool" else "max"
    return [_reduce(imp, node, x, kind, list(range(2, len(_shape(x)))), True)]
