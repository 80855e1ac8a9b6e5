"""The interface converters receive: `ImportContext`, and the values it hands them.

A converter (`frontend/ops/<family>.py`, registered with `@converts`) is called with the
context and the ONNX node being imported:

    @converts("Relu")
    def _relu(imp: ImportContext, node: Node) -> Sequence[Value]:
        x = imp.required(node, 0)                      # an input (absent: ModelError)
        return [imp.emit(graph.ReluOp, [x], shape_of(x))]

What a converter may use:

- **values**: `Value` is an `SSAValue` (computed at run time) or a `Const` (a numpy array
  known at compile time; it becomes a `graph.constant` only if a graph op reads it).
  `shape_of(v)`, `dtype_of(v)`; `scalar(3.0, like=x)` is a 0-d constant of x's dtype.
- **the node**: `Node` (`op_type`, `name`, `opset`, `attrs`, `proto`; `node.error(...)`
  a ModelError, `node.unsupported(...)` an UnsupportedOpError, both naming op, node, opset),
  `normalize_axis(node, axis, rank)`, `f32_attr` / `i64_attr` for op properties.
- **inputs**: `imp.input` (None when absent), `imp.required`, `imp.constant` (a compile-time
  array, else refused), `imp.float_input`, `imp.axes` (`axes` as attribute or input).
- **building graph ops**: `imp.emit(OpClass, operands, shape, dtype, **properties)` adds one
  op, or folds it with numpy when every operand is a constant and the node computes shapes
  or integers (the op's own `evaluate`, dialects/numpy_eval.py), and runs float32-only
  kernels on other float types widened; the building blocks on top of it: `reshape`,
  `transpose`, `unary`, `binary`, `elementwise` (broadcasting), `compare`, `where`,
  `reduce`, `slice`, `slice_axis`, `gather_axis`, `concat`; `widen_to_float32` (a converter whose kernels compute in float32
  only, on 16-bit floats: widen, and cast the results back once).
- **shapes**: each output's shape is cross-checked against ONNX's shape inference (a
  mismatch is a ModelError); `imp.onnx_infers_instead(name, shape)` accepts ONNX's `shape`
  for one output where the converter knows ONNX's inference departs from onnxruntime
  (ceil-mode pooling whose last window would start in the end padding); ONNX's inference
  then runs again from ember's shape, so the nodes downstream are checked again.
- **sequences and optionals**: import-time structures over values, `SequenceValue` (a tuple of
  values and their dtype) and `OptionalValue` (a value or None); `imp.input` refuses them (a
  tensor op given one is a ModelError naming the input), `imp.any_input` returns any kind,
  `imp.sequence_input` a sequence, `imp.sequence(values, dtype)` builds one (at most
  `MAX_SEQUENCE_LENGTH` tensors). Converters in frontend/ops/sequence.py.
- **control-flow bodies**: `with imp.region(arg_types, subgraph_reads(body)) as region:`
  imports into a new block isolated from above (outer run-time values become captured block
  arguments, `region.capture(v)` adds one; `region.finish(values)` ends it in graph.yield);
  `imp.known_value(v)` computes a value only constants feed (frontend/ops/control_flow.py).
- **nested graphs**: `imp.import_node(proto)` imports a node (an `If` branch's),
  `imp.import_nodes(protos)` the ONNX nodes a converter writes in place of its node (GridSample's
  decomposition), `imp.env` maps ONNX names to values, `imp.tensor_array(t)` decodes a
  TensorProto.

Nothing else of the importer is API: the driver (`frontend/onnx_importer.py`) builds the
function around the imported nodes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np
import onnx
from onnx import numpy_helper
from xdsl.dialects.builtin import (
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    f32,
    i64,
)
from xdsl.ir import Attribute, Block, BlockArgument, OpResult, SSAValue
from xdsl.irdl import IRDLOperation

from ember.core import limits
from ember.dialects import graph, numpy_eval
from ember.dialects.dtypes import FLOAT_TYPES
from ember.dialects.weights import WeightStore
from ember.frontend import registry
from ember.frontend.errors import (
    ModelError,
    ResourceLimitError,
    RuntimeOperandError,
    UnsupportedOpError,
)
from ember.frontend.functions import function_body, has_function_body
from ember.frontend.shape_inference import inferred_shapes, type_skeleton
from ember.frontend.validate import NodeInfo, validate_node

# Set while compile once imports a model at its probe shapes (engine/compile_once.py): a Slice
# ending exactly at an axis' size (an end read from a shape: a crop that takes the whole axis
# at some shapes only) stays a slice, so that the probes' programs have the same ops.
KEEP_EXACT_SLICES: ContextVar[bool] = ContextVar("ember_keep_exact_slices", default=False)


def importing_probe() -> bool:
    """Whether compile once is importing the model at a probe shape (KEEP_EXACT_SLICES set):
    what the import decides from this shape's sizes must then hold at every shape."""
    return KEEP_EXACT_SLICES.get()


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

# The ops that take or give the 8-, 4- and 2-bit types (float8, float4e2m1, int4, uint4, int2,
# uint2): conversions, data movement that only sees bytes, and Shape/Size. Any other op on
# them is refused by name (dialects/small_types.py).
_SMALL_TYPE_OPS = frozenset(
    {
        "Cast",
        "CastLike",
        "QuantizeLinear",
        "DequantizeLinear",
        "Constant",
        "Identity",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Shape",
        "Size",
        # com.microsoft: dequantizes its constant int4/uint4 table at compile time.
        "GatherBlockQuantized",
    }
)


def _check_small_types(node: Node, values: Sequence[object], what: str) -> None:
    """Refuse a node outside `_SMALL_TYPE_OPS` that reads or writes a small-type tensor."""
    if node.op_type in _SMALL_TYPE_OPS:
        return
    for index, value in enumerate(values):
        if isinstance(value, SequenceValue | OptionalValue):
            continue  # their elements were checked by the ops that made them
        if value is not None and numpy_eval.is_small_dtype(dtype_of(value)):
            raise node.unsupported(
                f"{what} #{index} has element type {dtype_of(value)}: ember computes on the "
                "8-, 4- and 2-bit types only in Cast, CastLike, QuantizeLinear and "
                "DequantizeLinear (and moves them in Identity, Reshape, Flatten, Squeeze, "
                "Unsqueeze, Transpose)"
            )


# ---------------------------------------------------------------------------------------------
# Values and nodes


@dataclass
class Const:
    """A value known at compile time; becomes a graph.constant only if a graph op needs it."""

    array: np.ndarray
    name: str | None = None


Value = SSAValue | Const


# -- sequences and optionals (ONNX's non-tensor types) -----------------------------------------
#
# ember's structure is static, so a sequence is a tuple of tensor values of a length known at
# import, and an optional is a value or nothing, known at import: neither exists at run time.
# Every element is an ordinary graph value, so the ops on elements are ordinary kernels.

# The longest sequence ember builds: each element is a value, each per-element op (SequenceMap's
# body, SplitToSequence's slices) an op of its own.
MAX_SEQUENCE_LENGTH = 1024


@dataclass(frozen=True)
class SequenceValue:
    """An ONNX sequence: its tensors (a tuple of values) and their element type (an empty
    sequence has one too)."""

    elements: tuple[Value, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class OptionalValue:
    """An ONNX optional: its value (a tensor or a sequence) or None when it is empty."""

    element: Value | SequenceValue | None


AnyValue = Value | SequenceValue | OptionalValue


def kind_of(value: AnyValue) -> str:
    """'a sequence', 'an optional' or 'a tensor': what a value is, for messages."""
    if isinstance(value, SequenceValue):
        return "a sequence"
    return "an optional" if isinstance(value, OptionalValue) else "a tensor"


def shape_of(value: Value) -> tuple[int, ...]:
    return value.array.shape if isinstance(value, Const) else graph.shape_of(value)


def dtype_of(value: Value) -> np.dtype:
    if isinstance(value, Const):
        return value.array.dtype
    return numpy_eval.numpy_dtype(graph.element_type_of(value))


@dataclass
class Node:
    """The ONNX node being imported, with its attributes decoded and the opset it runs at."""

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

    def float_attr(self, name: str, default: float) -> float:
        return float(self.attrs.get(name, default))


def ssa_name(name: str) -> str:
    """An ONNX name as a valid SSA name hint (printing keeps the IR readable)."""
    name = re.sub(r"[^A-Za-z0-9_$.-]", "_", name)
    return name if name and not name[0].isdigit() else f"v{name}"


def normalize_axis(node: Node, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise node.error(f"axis {axis} out of range for rank {rank}")
    return axis % rank


def f32_attr(value: float) -> FloatAttr:
    return FloatAttr(float(value), f32)


def i64_attr(value: int) -> IntegerAttr:
    return IntegerAttr(int(value), i64)


def scalar(value: float, like: Value) -> Const:
    """A 0-d constant of `like`'s dtype."""
    return Const(np.array(value, dtype_of(like)))


def _fold(
    op_type: type[IRDLOperation],
    operands: Sequence[Value | None | Sequence[Value]],
    result_type: TensorType,
    properties: dict[str, Attribute],
) -> np.ndarray:
    """The value of an `op_type` op on constant operands, from the semantics the op declares:
    the op is built on stand-ins for the constants (block arguments of their types, never
    inserted) and evaluated on their arrays."""
    consts = [v for o in operands for v in (o if isinstance(o, list | tuple) else [o])]
    arrays = [None if c is None else c.array for c in consts]  # type: ignore[union-attr]
    stand_ins = iter(
        Block(arg_types=[numpy_eval.tensor_type(a) for a in arrays if a is not None]).args
    )

    def stand_in(value: Value | None) -> SSAValue | None:
        return None if value is None else next(stand_ins)

    built = [
        [stand_in(v) for v in o] if isinstance(o, list | tuple) else stand_in(o) for o in operands
    ]
    op = op_type.build(operands=built, result_types=[result_type], properties=properties)  # type: ignore[arg-type]
    # A copy: a folded Identity or Reshape would otherwise share its operand's array.
    return numpy_eval.evaluate(op, arrays).copy()


# ---------------------------------------------------------------------------------------------
# The context


class ImportContext:
    """The state of one import (values by ONNX name, the block being built, the weights) and
    the services converters use; see the module docstring."""

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
        self.root_block = self.block
        # Block arguments of control-flow bodies (graph.loop, graph.if) -> the outer value
        # each one captures (so graph_inputs_feeding sees through region boundaries).
        self.captured_from: dict[BlockArgument, SSAValue] = {}
        # The iteration counters of Loop bodies (non-negative: a Slice at `i + c` is a Gather).
        self.iteration_args: set[SSAValue] = set()
        self.env: dict[str, AnyValue] = {}
        self.materialized: dict[str, SSAValue] = {}  # per block being built (regions: own)
        self.weight_of: dict[str, str] = {}  # named constant -> its WeightStore entry
        self.fold_node = False
        self.node: Node | None = None
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        # Versions of the other domains (ai.onnx.preview ops are imported via their bodies).
        self.domain_opsets = {o.domain: o.version for o in model.opset_import}
        # ONNX's own static shapes (cross-checked against each converter's) and every name a
        # node reads (an unsupported output nobody reads is no error): set by the driver (the
        # shapes inferred again past an output in `onnx_settled`, below).
        self.inferred: dict[str, tuple[int, ...]] = {}
        self.used: set[str] = set()
        # Outputs whose converter follows onnxruntime where ONNX's shape inference is known to
        # differ: the shape ONNX infers for each, which the cross-check then accepts (only it).
        self.onnx_shape_known_wrong: dict[str, tuple[int, ...]] = {}
        # The outputs of nodes where that happened, with ember's shapes: ONNX's inference is
        # run again from them, so that the shapes it infers downstream check ours again.
        self.onnx_settled: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}

    # -- per node ------------------------------------------------------------------------------

    def import_node(self, proto: onnx.NodeProto) -> None:
        """Validate `proto`, run its converter (or import its ONNX function body) and bind its
        outputs' names in `env`."""
        onnx_domain = proto.domain in ("", "ai.onnx")
        key = registry.converter_key(proto.op_type, proto.domain)
        if (
            not onnx_domain
            and key not in registry.CONVERTERS
            and not has_function_body(proto.op_type, self._domain_opset(proto), proto.domain)
        ):
            raise UnsupportedOpError(key, proto.name or proto.output[0], self.opset)
        node = Node(
            proto, self.opset, {a.name: onnx.helper.get_attribute_value(a) for a in proto.attribute}
        )
        converter = registry.CONVERTERS.get(key)
        for name in proto.input:
            if name and name not in self.env:
                raise node.error(f"input '{name}' is not defined before use")
        if key in registry.STRUCTURED_CONVERTERS and self._has_structured_values(proto):
            # A Loop or If over sequences/optionals: unrolled / specialised at import.
            converter = registry.STRUCTURED_CONVERTERS[key]
        # Sequences and optionals take no part in the tensor checks (their ops check them).
        inputs = [
            None if not n or isinstance(self.env[n], SequenceValue | OptionalValue) else self.env[n]
            for n in proto.input
        ]
        validate_node(
            NodeInfo(proto.op_type, node.name, self.opset, proto.domain),
            list(proto.input),
            [None if v is None else dtype_of(v) for v in inputs],
            [None if v is None else shape_of(v) for v in inputs],
            node.attrs,
        )
        _check_small_types(node, inputs, "input")
        if converter is None and key in registry.STRUCTURED_CONVERTERS:
            raise node.unsupported(
                "ember imports this op only over sequences or optionals (unrolled or "
                "specialised at import); this one has tensors only"
            )
        if converter is None:
            self._expand(node)
            return
        values = [v for v in inputs if v is not None]
        self.fold_node = proto.op_type in _SHAPE_OPS or any(
            dtype_of(v).kind in "iub" for v in values
        )
        self.node = node
        outputs = list(converter(self, node))
        _check_small_types(node, outputs, "output")
        settled = False
        for index, name in enumerate(proto.output):
            if not name:
                continue
            if index >= len(outputs):
                if name in self.used:
                    raise node.unsupported(f"output #{index} ('{name}') is not supported")
                continue
            value = outputs[index]
            if isinstance(value, SequenceValue | OptionalValue):
                self.env[name] = value  # its tensors were checked as they were made
                continue
            self.check_size(shape_of(value), dtype_of(value), f"output '{name}'")
            expected = self.inferred.get(name)
            if expected is not None and expected != shape_of(value):
                if self.onnx_shape_known_wrong.get(name) != expected:
                    raise node.error(
                        f"computed shape {shape_of(value)} for '{name}' but ONNX infers {expected}"
                    )
                settled = True
            if isinstance(value, SSAValue) and value.name_hint is None:
                value.name_hint = ssa_name(name)
            self.env[name] = value
        if settled:
            for name in proto.output:
                if name in self.env:
                    self.onnx_settled[name] = (dtype_of(self.env[name]), shape_of(self.env[name]))
            self.inferred = self._onnx_shapes()

    def _has_structured_values(self, proto: onnx.NodeProto) -> bool:
        """Whether `proto` or a subgraph of it reads a sequence or optional, or a subgraph of
        it gives one (such values exist at import only: no region can capture them)."""
        subgraphs = [a.g for a in proto.attribute if a.HasField("g")]
        read = [*proto.input, *(name for g in subgraphs for name in subgraph_reads(g))]
        if any(
            isinstance(self.env.get(name), SequenceValue | OptionalValue) for name in read if name
        ):
            return True
        return any(
            out.type.WhichOneof("value") in ("sequence_type", "optional_type")
            for g in subgraphs
            for out in g.output
        )

    def _domain_opset(self, proto: onnx.NodeProto) -> int:
        """The opset version the model imports `proto`'s domain at."""
        if proto.domain in ("", "ai.onnx"):
            return self.opset
        return self.domain_opsets.get(proto.domain, 1)

    def _expand(self, node: Node) -> None:
        """Import an op without a converter through its ONNX function body, if it has one."""
        structured = [n for n in node.proto.input if n and not isinstance(self.env[n], Value)]
        if structured:
            raise node.unsupported(
                f"input '{structured[0]}' is {kind_of(self.env[structured[0]])}; ember imports "
                "this op through its ONNX function body, for tensor inputs only"
            )
        input_types = [
            onnx.helper.make_tensor_type_proto(
                onnx.helper.np_dtype_to_tensor_dtype(dtype_of(self.env[n])), shape_of(self.env[n])
            )
            if n
            else onnx.TypeProto()
            for n in node.proto.input
        ]
        body = function_body(node.proto, self._domain_opset(node.proto), input_types, self.opset)
        if body is None:
            raise node.unsupported()
        nodes, body_opset = body
        outer_opset, self.opset = self.opset, body_opset
        try:
            self.import_nodes(nodes)
        finally:
            self.opset = outer_opset

    def body_outputs(self, node: Node, body: onnx.GraphProto) -> list[Value]:
        """The values of a subgraph's outputs, once its nodes are imported (an If branch, a
        Loop or Scan body, a SequenceMap body)."""
        outputs = []
        for out in body.output:
            if out.name not in self.env:
                raise node.error(f"body output '{out.name}' is not produced in '{body.name}'")
            outputs.append(self.env[out.name])
        return outputs

    def import_nodes(self, nodes: Sequence[onnx.NodeProto]) -> None:
        """Import nodes that stand in for the current one (a function body, a converter's
        decomposition into ONNX ops): the names they read count as used, and the current
        node is the current one again afterwards (its outputs are checked in its name)."""
        self.used |= {name for n in nodes for name in n.input if name}
        outer = self.node, self.fold_node
        try:
            for inner in nodes:
                self.import_node(inner)
        finally:
            self.node, self.fold_node = outer

    @contextmanager
    def region(self, arg_types: Sequence[TensorType], reads: Iterable[str]) -> Iterator[Region]:
        """Build a control-flow body: ops emitted inside go to a new block with `arg_types`
        arguments; each outer run-time value the body reads by name (`reads`) or that the
        converter passes to `Region.capture` becomes a trailing block argument (the op's
        `captures` operand), so the body is isolated from above. Constants stay constants
        (materialized inside the body). Names the body defines stay local to it."""
        region = Region(self, Block(arg_types=arg_types))
        env = dict(self.env)
        for name in reads:
            value = self.env.get(name)
            if isinstance(value, SSAValue):
                env[name] = region.capture(value)
        saved = self.block, self.env, self.materialized, self.inferred, self.node, self.fold_node
        self.block, self.env, self.materialized, self.inferred = region.block, env, {}, {}
        try:
            yield region
        finally:
            self.block, self.env, self.materialized, self.inferred, self.node, self.fold_node = (
                saved
            )

    def _onnx_shapes(self) -> dict[str, tuple[int, ...]]:
        """ONNX's own static shapes, used to cross-check ours: inferred from the graph inputs
        (at the shapes the import pins), and from ember's shapes for the outputs in
        `onnx_settled` (their nodes are cut, their outputs become typed inputs)."""
        model = type_skeleton(self.model)
        for info in model.graph.input:
            if info.name in self.input_shapes:
                dims = info.type.tensor_type.shape.dim
                if not info.type.tensor_type.HasField("shape"):  # unknown rank: the pin's
                    for _ in self.input_shapes[info.name]:
                        dims.add()
                for dim, size in zip(dims, self.input_shapes[info.name], strict=True):
                    dim.Clear()
                    dim.dim_value = int(size)
        if self.onnx_settled:
            g = model.graph
            kept = [n for n in g.node if not any(o in self.onnx_settled for o in n.output)]
            del g.node[:]
            g.node.extend(kept)
            for name, (dtype, shape) in self.onnx_settled.items():
                elem_type = onnx.helper.np_dtype_to_tensor_dtype(dtype)
                g.input.append(onnx.helper.make_tensor_value_info(name, elem_type, shape))
        return inferred_shapes(model)

    def onnx_infers_instead(self, name: str, onnx_shape: Sequence[int]) -> None:
        """Let output `name` of the current node disagree with ONNX's shape inference in one
        documented case: where the converter computes onnxruntime's shape and knows that ONNX
        infers `onnx_shape` instead (the caller says why). Any other disagreement is still
        refused."""
        self.onnx_shape_known_wrong[name] = tuple(int(d) for d in onnx_shape)

    def check_size(self, shape: Sequence[int], dtype: np.dtype, what: str) -> None:
        """Refuse a tensor the current node would make that no memory could hold (before
        numpy or the arena tries to), naming the node and `what` it is."""
        if self.node is not None:
            node = self.node
            what = f"{node.op_type} node '{node.name}' (opset {node.opset}): {what}"
        limits.check_fits_in_memory(shape, dtype, what, self.memory_limit)

    def input(self, node: Node, index: int) -> Value | None:
        value = self.any_input(node, index)
        if isinstance(value, SequenceValue | OptionalValue):
            name = node.proto.input[index]
            raise node.error(f"input #{index} '{name}' is {kind_of(value)}, not a tensor")
        return value

    def any_input(self, node: Node, index: int) -> AnyValue | None:
        """An input of any kind: a tensor value, a SequenceValue or an OptionalValue."""
        names = node.proto.input
        if index >= len(names) or not names[index]:
            return None
        return self.env[names[index]]

    def sequence_input(self, node: Node, index: int) -> SequenceValue:
        """A required input that is a sequence."""
        value = self.any_input(node, index)
        if not isinstance(value, SequenceValue):
            what = "missing" if value is None else kind_of(value)
            raise node.error(f"input #{index} must be a sequence, it is {what}")
        return value

    def sequence(self, elements: Sequence[Value], dtype: np.dtype) -> SequenceValue:
        """A sequence of `elements`, refused past MAX_SEQUENCE_LENGTH (every element is a
        value, and ops on sequences make one op per element)."""
        self.check_sequence_length(len(elements))
        for element in elements:
            if dtype_of(element) != dtype:
                detail = (
                    f"a sequence of {np.dtype(dtype).name} tensors cannot hold one of "
                    f"{dtype_of(element).name}"
                )
                raise ModelError(detail) if self.node is None else self.node.error(detail)
        return SequenceValue(tuple(elements), np.dtype(dtype))

    def check_sequence_length(self, length: int) -> None:
        """ResourceLimitError, naming the node, for a sequence over MAX_SEQUENCE_LENGTH."""
        if length > MAX_SEQUENCE_LENGTH:
            what = f"a sequence of {length} tensors"
            if self.node is not None:
                node = self.node
                what = f"{node.op_type} node '{node.name}' (opset {node.opset}): {what}"
            raise ResourceLimitError(
                f"{what}: ember builds sequences of at most {MAX_SEQUENCE_LENGTH} tensors "
                "(each is a value of its own, and each op on it one op per element)"
            )

    def required(self, node: Node, index: int) -> Value:
        value = self.input(node, index)
        if value is None:
            raise node.error(f"missing required input #{index}")
        return value

    def float_input(self, node: Node, index: int = 0) -> Value:
        """A required input of a float type (an op ONNX defines on floats only)."""
        x = self.required(node, index)
        if not isinstance(numpy_eval.element_type(dtype_of(x)), FLOAT_TYPES):
            raise node.unsupported(
                f"input #{index} of type {dtype_of(x)} (a float type is required)"
            )
        return x

    def axes(self, node: Node, attr_until: int) -> list[int] | None:
        """`axes` as an attribute (opset < attr_until) or as the second input."""
        if node.opset < attr_until:
            axes = node.attrs.get("axes")
            return None if axes is None else list(axes)
        axes_in = self.constant(node, 1, "axes")
        return None if axes_in is None else [int(a) for a in axes_in.reshape(-1)]

    def constant(self, node: Node, index: int, what: str) -> np.ndarray | None:
        """A compile-time input (absent -> None); a runtime value is an error."""
        value = self.input(node, index)
        if value is None:
            return None
        if not isinstance(value, Const) and (known := self.known_value(value)) is not None:
            return known
        if not isinstance(value, Const):
            raise RuntimeOperandError(
                node.op_type,
                node.name,
                node.opset,
                f"{what} (input #{index}) must be a compile-time constant",
                self.graph_inputs_feeding(value),
            )
        return value.array

    def known_value(
        self, value: SSAValue, known: dict[SSAValue, np.ndarray | None] | None = None
    ) -> np.ndarray | None:
        """`value` computed with numpy when only constants feed it (float arithmetic the
        importer kept as ops: an expanded Range's trip count `Ceil((limit - start) / delta)`
        on frozen inputs); None when a graph input or a body argument feeds it. `known`
        carries what earlier calls found (the values already walked) to the next call, and
        may bind body arguments to values (a Loop body's iteration index, simulated at
        compile time); it is updated in place."""
        # Walked with an explicit stack, not recursion: an unrolled Loop's chain of bodies is
        # deeper than Python's recursion limit. None (not computable) is remembered too: a
        # diamond-shaped graph that a graph input feeds would otherwise be walked once per path.
        if known is None:
            known = {}

        def leaf(current: SSAValue) -> tuple[bool, np.ndarray | None]:
            """(True, its value) when `current` needs no operands evaluated first."""
            if not isinstance(current, OpResult):
                return True, None
            op = current.op
            if isinstance(op, graph.ConstantOp):
                return True, self.weights[op.ref.data]
            result_type = current.type
            if not numpy_eval.has_semantics(type(op)) or len(op.results) != 1:
                return True, None
            if not isinstance(result_type, TensorType) or not numpy_eval.foldable_size(result_type):
                return True, None
            return False, None

        stack = [value]
        while stack:
            current = stack[-1]
            if current in known:
                stack.pop()
                continue
            is_leaf, array = leaf(current)
            if is_leaf:
                known[current] = array
                stack.pop()
                continue
            assert isinstance(current, OpResult)
            slots = numpy_eval.operand_slots(current.op)
            pending = [v for v in slots if v is not None and v not in known]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            operands = [None if v is None else known[v] for v in slots]
            if any(a is None for v, a in zip(slots, operands, strict=True) if v is not None):
                known[current] = None
                continue
            try:
                # A copy: not a weight's own array.
                known[current] = numpy_eval.evaluate(current.op, operands).copy()
            except ModelError:
                known[current] = None  # left to the kernel (and the refusal it leads to)
        return known[value]

    def graph_inputs_feeding(self, value: SSAValue) -> tuple[str, ...]:
        """The graph inputs `value` is computed from, in graph-input order (for value
        specialisation: given as constants, they may let `value` fold)."""
        # The graph input's own name: bound first (an Identity, or a Cast to its own type,
        # later binds another name to the same argument).
        names: dict[BlockArgument, str] = {}
        for name, arg in self.env.items():
            if isinstance(arg, BlockArgument) and arg.owner is self.root_block:
                names.setdefault(arg, name)
        found: set[str] = set()
        seen: set[SSAValue] = set()
        pending = [value]
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            if isinstance(current, BlockArgument):
                if current in names:
                    found.add(names[current])
                elif current in self.captured_from:
                    pending.append(self.captured_from[current])
            elif isinstance(current, OpResult):
                pending.extend(current.op.operands)
        return tuple(arg_name for arg_name in names.values() if arg_name in found)

    def materialize(self, value: Value, hint: str | None = None) -> SSAValue:
        """The SSA value of `value`: a constant becomes a graph.constant (once per name)."""
        if isinstance(value, SSAValue):
            return value
        if value.name is not None and value.name in self.materialized:
            return self.materialized[value.name]
        op = self.constant_op(value, hint)
        self.block.add_op(op)
        if value.name is not None:
            self.materialized[value.name] = op.output
        return op.output

    def constant_op(self, value: Const, hint: str | None = None) -> graph.ConstantOp:
        """A graph.constant of `value` (not inserted). A named constant keeps one weight when
        control-flow bodies materialize it too."""
        ref = self.weight_of.get(value.name) if value.name is not None else None
        if ref is None:
            ref = self.weights.add(value.array, value.name or hint or "const")
            if value.name is not None:
                self.weight_of[value.name] = ref
        op = graph.ConstantOp(ref, numpy_eval.tensor_type(value.array))
        op.output.name_hint = ssa_name(ref)
        return op

    def emit(
        self,
        op_type: type[IRDLOperation],
        operands: Sequence[Value | None | Sequence[Value]],
        shape: Sequence[int],
        dtype: np.dtype | None = None,
        **props: Attribute | None,
    ) -> Value:
        """Add one graph op, or fold it with numpy when its operands are known and the result
        is small enough (`limits.FOLD_LIMIT_BYTES`); a result too big for memory is refused.
        An empty result is a constant (there is nothing to compute), and so is a result
        computed from an empty operand (a sum over an empty axis): no kernel sees size 0."""
        flat = [v for o in operands for v in (o if isinstance(o, list | tuple) else [o])]
        if dtype is None:
            dtype = dtype_of(next(v for v in flat if v is not None))
        if 0 in shape:
            return Const(np.zeros(tuple(shape), dtype))
        output = self.node.proto.output[0] if self.node and self.node.proto.output else "?"
        self.check_size(shape, dtype, f"output '{output}' (a {op_type.name} result)")
        result_type = TensorType(numpy_eval.element_type(dtype), tuple(shape))
        properties = {k: v for k, v in props.items() if v is not None}
        has_semantics = numpy_eval.has_semantics(op_type)
        empty_operand = any(v is not None and 0 in shape_of(v) for v in flat)
        if empty_operand:
            self._check_foldable_from_empty(op_type, flat, result_type, has_semantics)
        if (
            (self.fold_node or empty_operand)
            and has_semantics
            and all(isinstance(v, Const | None) for v in flat)
            and numpy_eval.foldable_size(result_type)
        ):
            try:
                return Const(_fold(op_type, operands, result_type, properties))
            except ModelError as err:
                if self.node is None:
                    raise
                raise self.node.error(str(err)) from err
        widens = _FLOAT32_KERNELS.get(op_type)
        native = dtype == np.float32 or (dtype == np.float64 and op_type in _FLOAT64_KERNELS)
        if widens is not None and not native:
            return self._in_float32(op_type, operands, shape, dtype, widens, properties)
        hint = self.node.name if self.node else None
        ssa_operands: list[SSAValue | None | list[SSAValue]] = []
        for o in operands:
            if isinstance(o, list | tuple):
                ssa_operands.append([self.materialize(v, hint) for v in o])
            else:
                ssa_operands.append(None if o is None else self.materialize(o, hint))
        op = op_type.build(
            operands=ssa_operands,  # type: ignore[arg-type]
            result_types=[result_type],
            properties=properties,
        )
        self.block.add_op(op)
        if self.block is not self.root_block and self.node is not None:
            # Inside a control-flow body: the driver's annotate_origins sees the top level only.
            op.attributes["ember.origin"] = DictionaryAttr(
                {"op_type": StringAttr(self.node.op_type), "node": StringAttr(self.node.name)}
            )
        return op.results[0]

    def _check_foldable_from_empty(
        self,
        op_type: type[IRDLOperation],
        flat: Sequence[Value | None],
        result_type: TensorType,
        has_evaluator: bool,
    ) -> None:
        """Refuse a non-empty result computed from an empty operand that cannot fold: ember's
        kernels are built for sizes of 1 and more (a loop over an empty axis of a reduction
        or a matmul would never store its identity value)."""
        if (
            has_evaluator
            and all(isinstance(v, Const | None) for v in flat)
            and numpy_eval.foldable_size(result_type)
        ):
            return
        shapes = [list(shape_of(v)) for v in flat if v is not None]
        if not has_evaluator:
            reason = f"ember cannot compute {op_type.name} at compile time"
        elif all(isinstance(v, Const | None) for v in flat):
            reason = (
                f"its {numpy_eval.result_bytes(result_type)} bytes are over the "
                f"{limits.FOLD_LIMIT_BYTES} ember computes at compile time"
            )
        else:
            reason = "ember computes such results only at compile time, from constant operands"
        detail = (
            f"{op_type.name} of an empty operand (shapes {shapes}) into a non-empty result "
            f"{list(result_type.get_shape())}: {reason}"
        )
        raise self._unsupported(detail)

    def _unsupported(self, detail: str) -> ModelError | UnsupportedOpError:
        """The refusal of what the current node asks for (a ModelError outside any node)."""
        if self.node is None:
            return ModelError(detail)
        return self.node.unsupported(detail)

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
        given = {dtype_of(v) for v in flat if v is not None} | {np.dtype(dtype)}
        if not given - {f32_dtype} <= widens:
            detail = (
                f"element type {np.dtype(dtype).name}: ember's {op_type.name} kernel computes in "
                f"float32 (it widens {', '.join(sorted(d.name for d in widens))} exactly)"
            )
            raise self._unsupported(detail)
        widen = self.widen_to_float32
        wide = [
            [widen(v) for v in o]
            if isinstance(o, list | tuple)
            else (None if o is None else widen(o))
            for o in operands
        ]
        result = self.emit(op_type, wide, shape, f32_dtype, **properties)
        return self.emit(graph.CastOp, [result], shape, dtype)

    def widen_to_float32(self, value: Value) -> Value:
        """`value` as float32: a constant converted, a run-time value cast (the caller has
        checked that float32 holds each of its values exactly)."""
        f32_dtype = np.dtype(np.float32)
        if dtype_of(value) == f32_dtype:
            return value
        if isinstance(value, Const):
            return Const(value.array.astype(f32_dtype))
        return self.emit(graph.CastOp, [value], shape_of(value), f32_dtype)

    # -- building blocks ----------------------------------------------------------------

    def reshape(self, value: Value, shape: Sequence[int]) -> Value:
        if shape_of(value) == tuple(shape):
            return value
        return self.emit(graph.ReshapeOp, [value], shape)

    def transpose(self, x: Value, perm: Sequence[int]) -> Value:
        shape = shape_of(x)
        return self.emit(
            graph.TransposeOp, [x], [shape[p] for p in perm], perm=graph.i64_array(list(perm))
        )

    def unary(self, op_type: type[IRDLOperation], x: Value, **props: Attribute | None) -> Value:
        return self.emit(op_type, [x], shape_of(x), **props)

    def elementwise(
        self,
        node: Node,
        op_type: type[IRDLOperation],
        operands: Sequence[Value],
        dtype: np.dtype | None = None,
        **props: Attribute | None,
    ) -> Value:
        """One broadcasting elementwise op; `dtype` overrides the result dtype (i1 comparisons)."""
        try:
            shape = graph.broadcast_shapes(*(shape_of(v) for v in operands))
        except ValueError as err:
            raise node.error(str(err)) from err
        return self.emit(op_type, list(operands), shape, dtype, **props)

    def binary(
        self,
        node: Node,
        op_type: type[IRDLOperation],
        lhs: Value,
        rhs: Value,
        dtype: np.dtype | None = None,
        **props: Attribute | None,
    ) -> Value:
        """A broadcasting binary op, after `unify_dtypes`."""
        lhs, rhs = self.unify_dtypes(node, lhs, rhs)
        return self.elementwise(node, op_type, [lhs, rhs], dtype, **props)

    def compare(self, node: Node, predicate: str, lhs: Value, rhs: Value) -> Value:
        return self.binary(
            node, graph.CompareOp, lhs, rhs, np.dtype(np.bool_), predicate=StringAttr(predicate)
        )

    def where(self, node: Node, cond: Value, lhs: Value, rhs: Value) -> Value:
        lhs, rhs = self.unify_dtypes(node, lhs, rhs)
        return self.elementwise(node, graph.WhereOp, [cond, lhs, rhs], dtype_of(lhs))

    def ordered_as_signed(self, node: Node, x: Value) -> Value:
        """x, or unsigned x with its top bit flipped, as the signed type of its width: the
        kernels compare integers as signed (arith's integers are signless), and flipping the
        top bit maps unsigned order onto signed order (uint8 0 -> -128, 255 -> 127), where
        uint8 200 and 100 would otherwise compare as -56 < 100."""
        dtype = dtype_of(x)
        if dtype.kind != "u":
            return x
        signed = np.dtype(f"i{dtype.itemsize}")
        return self.emit(graph.BitcastOp, [self._flip_top_bit(node, x)], shape_of(x), signed)

    def _flip_top_bit(self, node: Node, x: Value) -> Value:
        return self.binary(node, graph.XorOp, x, scalar(1 << (8 * dtype_of(x).itemsize - 1), x))

    def reduce(self, node: Node, x: Value, kind: str, axes: list[int], keep: bool) -> Value:
        """graph.reduce of `kind` (sum, mean, max, ...) over `axes`."""
        dtype = dtype_of(x)
        if kind in ("max", "min") and dtype.kind == "u":  # in signed order, flipped back
            y = self.reduce(node, self.ordered_as_signed(node, x), kind, axes, keep)
            y = self.emit(graph.BitcastOp, [y], shape_of(y), dtype)
            return self._flip_top_bit(node, y)
        shape = shape_of(x)
        axes = sorted({normalize_axis(node, a, len(shape)) for a in axes})
        out = [1 if i in axes else d for i, d in enumerate(shape) if keep or i not in axes]
        return self.emit(
            graph.ReduceOp,
            [x],
            out,
            reduction=StringAttr(kind),
            axes=graph.i64_array(axes),
            keepdims=i64_attr(int(keep)),
        )

    def slice(
        self,
        x: Value,
        starts: Sequence[int],
        steps: Sequence[int],
        out: Sequence[int],
        keep_whole: bool = False,
    ) -> Value:
        """x[starts[d] :: steps[d]] with out[d] elements per axis (starts already in range);
        x itself when that is all of x, unless `keep_whole`."""
        whole = all(s == 0 for s in starts) and all(s == 1 for s in steps)
        if not keep_whole and tuple(out) == shape_of(x) and whole:
            return x
        return self.emit(
            graph.SliceOp,
            [x],
            out,
            starts=graph.i64_array(starts),
            steps=graph.i64_array(steps),
        )

    def slice_axis(self, x: Value, axis: int, start: int, count: int) -> Value:
        shape = list(shape_of(x))
        starts, steps = [0] * len(shape), [1] * len(shape)
        starts[axis], shape[axis] = start, count
        return self.slice(x, starts, steps, shape)

    def gather_axis(self, x: Value, axis: int, indices: np.ndarray) -> Value:
        """x taken at constant `indices` along `axis` (the identity table costs nothing)."""
        shape = shape_of(x)
        if len(indices) == shape[axis] and np.array_equal(indices, np.arange(shape[axis])):
            return x
        out = [*shape[:axis], len(indices), *shape[axis + 1 :]]
        return self.emit(
            graph.GatherOp, [x, Const(indices.astype(np.int64))], out, axis=i64_attr(axis)
        )

    def concat(self, values: Sequence[Value], axis: int) -> Value:
        """Values concatenated along `axis`, zero-sized ones left out."""
        values = [v for v in values if shape_of(v)[axis] > 0]
        if len(values) == 1:
            return values[0]
        out = list(shape_of(values[0]))
        out[axis] = sum(shape_of(v)[axis] for v in values)
        return self.emit(graph.ConcatOp, [list(values)], out, axis=i64_attr(axis))

    def unify_dtypes(self, node: Node, lhs: Value, rhs: Value) -> tuple[Value, Value]:
        """Pow-style mixed types: convert a constant operand, else cast the rhs."""
        if dtype_of(lhs) == dtype_of(rhs):
            return lhs, rhs
        if isinstance(rhs, Const):
            return lhs, Const(rhs.array.astype(dtype_of(lhs)))
        if isinstance(lhs, Const):
            return Const(lhs.array.astype(dtype_of(rhs))), rhs
        return lhs, self.emit(graph.CastOp, [rhs], shape_of(rhs), dtype_of(lhs))

    def tensor_array(self, tensor: onnx.TensorProto) -> np.ndarray:
        """The array of an initializer (checked against the memory limit first)."""
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


@dataclass
class Region:
    """A control-flow body being imported (`ImportContext.region`)."""

    imp: ImportContext
    block: Block
    captures: list[SSAValue] = field(default_factory=list)
    args: dict[SSAValue, BlockArgument] = field(default_factory=dict)

    def capture(self, value: SSAValue) -> BlockArgument:
        """The block argument standing for outer value `value` inside the body."""
        if value not in self.args:
            self.args[value] = self.block.insert_arg(value.type, len(self.block.args))
            self.captures.append(value)
            self.imp.captured_from[self.args[value]] = value
        return self.args[value]

    def finish(self, values: Sequence[Value], hint: str) -> None:
        """End the body with graph.yield of `values` (constants materialized inside)."""
        yielded = []
        for value in values:
            if isinstance(value, Const):  # a constant of the body: materialized inside it
                constant = self.imp.constant_op(value, hint)
                self.block.add_op(constant)
                value = constant.output
            yielded.append(value)
        self.block.add_op(graph.YieldOp(operands=[yielded]))


def subgraph_reads(body: onnx.GraphProto) -> list[str]:
    """The names a subgraph (and the subgraphs nested in it) reads but does not define, in
    order of first use: the outer values it captures."""
    defined: set[str] = set()
    reads: list[str] = []

    def walk(g: onnx.GraphProto) -> None:
        defined.update(i.name for i in g.input)
        defined.update(t.name for t in g.initializer)
        for n in g.node:
            for name in n.input:
                if name and name not in defined and name not in reads:
                    reads.append(name)
            for attr in n.attribute:
                for inner in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    walk(inner)
            defined.update(o for o in n.output if o)

    walk(body)
    return [name for name in reads if name not in defined]


# float32 holds every float16 and bfloat16 value exactly (bfloat16 is float32's upper half).
_WIDENED = frozenset({np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)})
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
# Of those, the ones with a float64 kernel of their own (float32 would round float64 values).
_FLOAT64_KERNELS = frozenset({graph.GemmOp, graph.MatMulOp})
