"""Model validation at import: what ember checks before it converts a single node.

Two stages, both raising ember's error classes with the node, the op, the opset and the rule:

- `validate_graph(model)`, once per model before ONNX's checker: every name is UTF-8 text,
  every element-type enum is one ONNX defines, each value has one producer (graph input,
  initializer or node output), every node input is produced before it is read, and the graph
  has outputs. These are the malformations that otherwise surface as UnicodeDecodeError,
  protobuf ValueErrors or KeyErrors deep inside the compiler.
- `validate_node(...)`, per node as the importer reaches it, with the element types and
  shapes ember has inferred so far: the inputs' element types against the op schema's type
  constraints (`onnx.defs.get_schema(op, opset).type_constraints`; inputs sharing a type
  parameter must agree), the inputs' ranks against the op's minimum (`_MIN_RANKS`), integer
  attributes against their least value (`_INT_MINIMUMS`: sizes, groups, blocks) and the window
  attributes of convolutions and pools (lengths, signs, group) from one table, `_WINDOW_RULES`.

Sizes are checked with `core/limits.py` (`check_fits_in_memory`): any one tensor - graph
input, initializer, node output - whose size overflows int64 or exceeds the memory limit
(`memory_limit=`, `EMBER_MEMORY_LIMIT`, default: physical memory) is a ResourceLimitError; the
compile driver applies the same limit to the planned arena and to the weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from ember.runtime.errors import ModelError

_KNOWN_ELEMENT_TYPES = frozenset(onnx.TensorProto.DataType.values())


def _describe(index: int, node: onnx.NodeProto, opset: int) -> str:
    name = node.name if isinstance(node.name, str) else repr(node.name)
    label = f"'{name}'" if name else f"#{index}"
    op_type = node.op_type if isinstance(node.op_type, str) else repr(node.op_type)
    return f"{op_type} node {label} (opset {opset})"


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


# -- whole graph -------------------------------------------------------------------------------


def validate_graph(model: onnx.ModelProto) -> None:
    """Refuse malformed graph structure with a ModelError naming the node and the value."""
    g = model.graph
    opset = _opset(model)
    _check_text(g, opset)
    _check_element_types(g, opset)
    if not g.output:
        raise ModelError("the graph has no outputs: there is nothing to compute")
    producers: dict[str, str] = {}

    def produce(name: str, by: str) -> None:
        if name in producers:
            raise ModelError(
                f"value '{name}' is defined twice: by {producers[name]} and by {by} "
                "(ONNX graphs are in single static assignment form)"
            )
        producers[name] = by

    initializers = {t.name: t for t in g.initializer}
    for info in g.input:
        # An initializer may also be listed as a graph input (its default value): one value,
        # whose declared type must then be the initializer's.
        if info.name in initializers:
            _check_declared_type(info, initializers[info.name])
        else:
            produce(info.name, "a graph input")
    for tensor in g.initializer:
        produce(tensor.name, "an initializer")
    for tensor in g.sparse_initializer:
        produce(tensor.values.name, "a sparse initializer")
    for index, node in enumerate(g.node):
        for name in node.input:
            if name and name not in producers:
                raise ModelError(
                    f"{_describe(index, node, opset)} reads '{name}', which no graph input, initializer "
                    "or earlier node produces (nodes must be topologically sorted)"
                )
        for name in node.output:
            if name:
                produce(name, _describe(index, node, opset))
    listed: set[str] = set()
    for out in g.output:
        if out.name not in producers:
            raise ModelError(f"graph output '{out.name}' is not produced by any node")
        if out.name in listed:
            # Outputs are returned by name; one name cannot name two results.
            raise ModelError(
                f"graph output '{out.name}' is listed twice; list it once (or add an Identity "
                "node to return a copy under another name)"
            )
        listed.add(out.name)


def _check_declared_type(info: onnx.ValueInfoProto, tensor: onnx.TensorProto) -> None:
    if not info.type.HasField("tensor_type"):
        return
    declared = info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in declared.shape.dim]
    shape_differs = declared.HasField("shape") and (
        len(dims) != len(tensor.dims)
        or any(d is not None and d != t for d, t in zip(dims, tensor.dims, strict=True))
    )
    if declared.elem_type != tensor.data_type or shape_differs:

        def spell(elem: int, shape: Sequence[int | None]) -> str:
            name = onnx.TensorProto.DataType.Name(elem) if elem in _KNOWN_ELEMENT_TYPES else elem
            return f"{name} {[d if d is not None else '?' for d in shape]}"

        raise ModelError(
            f"graph input '{info.name}' is declared {spell(declared.elem_type, dims)} but its "
            f"initializer is {spell(tensor.data_type, list(tensor.dims))}"
        )


def _check_text(g: onnx.GraphProto, opset: int) -> None:
    """Protobuf hands back invalid UTF-8 in string fields as bytes: refuse those names."""

    def check(value: object, what: str) -> None:
        if not isinstance(value, str):
            raise ModelError(f"{what} {value!r} is not valid UTF-8 text")

    for kind, infos in (("graph input", g.input), ("graph output", g.output)):
        for info in infos:
            check(info.name, f"{kind} name")
    for info in g.value_info:
        check(info.name, "value_info name")
    for tensor in g.initializer:
        check(tensor.name, "initializer name")
    for index, node in enumerate(g.node):
        where = _describe(index, node, opset)
        check(node.op_type, f"op type of node #{index}")
        check(node.domain, f"{where}: domain")
        check(node.name, f"node #{index} ({node.op_type}, opset {opset}): name")
        for name in [*node.input, *node.output]:
            check(name, f"{where}: value name")
        for attr in node.attribute:
            check(attr.name, f"{where}: attribute name")


def _check_element_types(g: onnx.GraphProto, opset: int) -> None:
    def check(elem_type: int, what: str) -> None:
        if elem_type not in _KNOWN_ELEMENT_TYPES:
            raise ModelError(f"{what} has element type {elem_type}, which ONNX does not define")

    for kind, infos in (("graph input", g.input), ("graph output", g.output)):
        for info in infos:
            if info.type.HasField("tensor_type"):
                check(info.type.tensor_type.elem_type, f"{kind} '{info.name}'")
    for info in g.value_info:
        if info.type.HasField("tensor_type"):
            check(info.type.tensor_type.elem_type, f"value_info '{info.name}'")
    for tensor in g.initializer:
        check(tensor.data_type, f"initializer '{tensor.name}'")
    for index, node in enumerate(g.node):
        for attr in node.attribute:
            where = f"{_describe(index, node, opset)}: attribute '{attr.name}'"
            if attr.type == onnx.AttributeProto.TENSOR:
                check(attr.t.data_type, where)
            elif attr.type == onnx.AttributeProto.TENSORS:
                for tensor in attr.tensors:
                    check(tensor.data_type, where)
            elif attr.type == onnx.AttributeProto.INT and attr.name in ("to", "dtype"):
                check(attr.i, where)


# -- per node ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    """What a node check reports: the node, its op and the opset it is read at."""

    op_type: str
    name: str
    opset: int
    domain: str = ""

    def error(self, rule: str) -> ModelError:
        return ModelError(f"{self.op_type} node '{self.name}' (opset {self.opset}): {rule}")


def onnx_type_name(dtype: np.dtype) -> str:
    """`tensor(float)`, `tensor(int64)`, ...: the spelling of ONNX type constraints."""
    enum = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return f"tensor({onnx.TensorProto.DataType.Name(enum).lower()})"


def validate_node(
    node: NodeInfo,
    input_names: Sequence[str],
    dtypes: Sequence[np.dtype | None],
    shapes: Sequence[tuple[int, ...] | None],
    attrs: dict[str, object],
) -> None:
    """Check one node's inputs and attributes against its op's rules (see module docstring)."""
    try:
        schema = onnx.defs.get_schema(node.op_type, node.opset, node.domain)
    except onnx.defs.SchemaError:
        return  # not an ONNX op at this opset: the importer reports it as unsupported
    _check_input_types(node, schema, input_names, dtypes)
    _check_ranks(node, input_names, shapes)
    _check_int_attributes(node, shapes, attrs)
    rules = _WINDOW_RULES.get(node.op_type)
    if rules is not None and shapes and shapes[0] is not None:
        _check_window(node, schema, shapes, attrs)


def _check_input_types(
    node: NodeInfo,
    schema: onnx.defs.OpSchema,
    input_names: Sequence[str],
    dtypes: Sequence[np.dtype | None],
) -> None:
    formal = list(schema.inputs)
    if not formal:
        return
    constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    bound: dict[str, tuple[str, str]] = {}
    variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic
    for index, (name, dtype) in enumerate(zip(input_names, dtypes, strict=True)):
        if dtype is None:
            continue
        if index < len(formal):
            param = formal[index]
        elif formal[-1].option == variadic:
            param = formal[-1]
        else:
            raise node.error(
                f"has {len(input_names)} inputs; the schema defines at most {len(formal)}"
            )
        given = onnx_type_name(dtype)
        allowed = constraints.get(param.type_str, [param.type_str])
        if given not in allowed:
            raise node.error(
                f"input #{index} '{name}' ({param.name}) has type {given}; "
                f"{param.type_str} allows {', '.join(sorted(allowed))}"
            )
        homogeneous = param.option != variadic or param.is_homogeneous
        if param.type_str in constraints and homogeneous:
            first = bound.setdefault(param.type_str, (name, given))
            if first[1] != given:
                raise node.error(
                    f"input #{index} '{name}' has type {given} but '{first[0]}' has {first[1]}: "
                    f"both have type parameter {param.type_str}, one type out of "
                    f"{', '.join(sorted(allowed))}"
                )


# The least rank each input must have (ONNX's shape inference rules; a lower rank is a model
# error, not a case ember happens to miss).
_MIN_RANKS: dict[str, tuple[int, ...]] = {
    "MatMul": (1, 1),
    "Conv": (3, 3),
    "ConvTranspose": (3, 3),
    "MaxPool": (3,),
    "AveragePool": (3,),
    "LpPool": (3,),
    "GlobalAveragePool": (3,),
    "GlobalMaxPool": (3,),
    "GlobalLpPool": (3,),
    "BatchNormalization": (2,),
    "InstanceNormalization": (3,),
    "LRN": (3,),
}


# Operands the spec defines as 1-D lists (a shape, axes, pads, bounds, a bias): input index ->
# the ranks accepted. A [3, 1] "starts" or conv bias would otherwise reach code that reads a
# list. Axes may also be a scalar (ONNX's own function bodies, e.g. AffineGrid's, write
# Unsqueeze axes so, and onnxruntime accepts it).
_LIST = (1,)
_AXES = (0, 1)
_LIST_OPERANDS: dict[str, dict[int, tuple[int, ...]]] = {
    "Conv": {2: _LIST},
    "ConvTranspose": {2: _LIST},
    "Slice": {1: _LIST, 2: _LIST, 3: _LIST, 4: _LIST},
    "Reshape": {1: _LIST},
    "Expand": {1: _LIST},
    "Tile": {1: _LIST},
    "Unsqueeze": {1: _AXES},
    "Squeeze": {1: _AXES},
    "ConstantOfShape": {0: _LIST},
    "Pad": {1: _LIST, 3: _LIST},
    **{
        op: {1: _AXES}
        for op in (
            "ReduceSum",
            "ReduceMean",
            "ReduceMax",
            "ReduceMin",
            "ReduceProd",
            "ReduceL1",
            "ReduceL2",
            "ReduceLogSum",
            "ReduceLogSumExp",
            "ReduceSumSquare",
        )
    },
    "TopK": {1: _LIST},
    "Split": {1: _LIST},
}


def _check_ranks(
    node: NodeInfo, input_names: Sequence[str], shapes: Sequence[tuple[int, ...] | None]
) -> None:
    for index, least in enumerate(_MIN_RANKS.get(node.op_type, ())):
        shape = shapes[index] if index < len(shapes) else None
        if shape is not None and len(shape) < least:
            raise node.error(
                f"input #{index} '{input_names[index]}' has rank {len(shape)} (shape {shape}); "
                f"{node.op_type} needs rank >= {least}"
            )
    for index, ranks in _LIST_OPERANDS.get(node.op_type, {}).items():
        shape = shapes[index] if index < len(shapes) else None
        if shape is not None and input_names[index] and len(shape) not in ranks:
            raise node.error(
                f"input #{index} '{input_names[index]}' has shape {list(shape)}; {node.op_type} "
                f"takes it as a 1-D list"
            )


# Integer attributes with a least value (a count, a size, a block): below it the converters
# would divide by zero or build empty tensors.
_INT_MINIMUMS: dict[str, dict[str, int]] = {
    "LRN": {"size": 1},
    "DepthToSpace": {"blocksize": 1},
    "SpaceToDepth": {"blocksize": 1},
    "Split": {"num_outputs": 1},
    "GroupNormalization": {"num_groups": 1},
    "Conv": {"group": 1},
    "ConvTranspose": {"group": 1},
}
# Axis attributes that may also be the rank itself (a split point rather than an axis).
_SPLIT_POINT_AXES: dict[str, str] = {"Flatten": "axis"}


def _check_int_attributes(
    node: NodeInfo, shapes: Sequence[tuple[int, ...] | None], attrs: dict[str, object]
) -> None:
    for name, least in _INT_MINIMUMS.get(node.op_type, {}).items():
        value = attrs.get(name)
        if isinstance(value, int) and value < least:
            raise node.error(f"attribute {name}={value} must be >= {least}")
    name = _SPLIT_POINT_AXES.get(node.op_type)
    if name is not None and name in attrs and shapes and shapes[0] is not None:
        rank, value = len(shapes[0]), attrs[name]
        if isinstance(value, int) and not -rank <= value <= rank:
            raise node.error(f"attribute {name}={value} is outside [-{rank}, {rank}] (input rank)")


@dataclass(frozen=True)
class _IntsRule:
    """An ints attribute of a windowed op: its length in spatial dims and its least value."""

    name: str
    per_spatial_dim: int
    minimum: int


_WINDOW = (
    _IntsRule("kernel_shape", 1, 1),
    _IntsRule("strides", 1, 1),
    _IntsRule("dilations", 1, 1),
    _IntsRule("pads", 2, 0),
    _IntsRule("output_padding", 1, 0),
    _IntsRule("output_shape", 1, 1),
)
# Ops whose attributes follow the window rules (only the attributes each schema defines apply).
_WINDOW_RULES: dict[str, tuple[_IntsRule, ...]] = {
    op: _WINDOW for op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool")
}
_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _ints(value: object) -> list[int] | None:
    if isinstance(value, Iterable) and not isinstance(value, bytes | str):
        return [int(v) for v in value]
    return None


def _check_window(
    node: NodeInfo,
    schema: onnx.defs.OpSchema,
    shapes: Sequence[tuple[int, ...] | None],
    attrs: dict[str, object],
) -> None:
    x = shapes[0]
    assert x is not None
    spatial = len(x) - 2
    for rule in _WINDOW_RULES[node.op_type]:
        if rule.name not in schema.attributes or rule.name not in attrs:
            continue
        values = _ints(attrs[rule.name])
        length = rule.per_spatial_dim * spatial
        if values is None or len(values) != length:
            raise node.error(
                f"attribute {rule.name}={attrs[rule.name]} must have {length} values "
                f"(input {x} has {spatial} spatial dims)"
            )
        if any(v < rule.minimum for v in values):
            raise node.error(f"attribute {rule.name}={values} must be >= {rule.minimum}")
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode(errors="replace") if isinstance(auto_pad, bytes) else auto_pad
    if "auto_pad" in schema.attributes and auto_pad not in _AUTO_PADS:
        raise node.error(f"attribute auto_pad='{auto_pad}' is not one of {', '.join(_AUTO_PADS)}")
    if node.op_type in ("MaxPool", "AveragePool", "LpPool") and "kernel_shape" not in attrs:
        raise node.error("attribute kernel_shape is required")
    if node.op_type in ("Conv", "ConvTranspose"):
        _check_groups(node, shapes, attrs)


def _check_groups(
    node: NodeInfo, shapes: Sequence[tuple[int, ...] | None], attrs: dict[str, object]
) -> None:
    group = attrs.get("group", 1)
    assert isinstance(group, int)  # >= 1 by _INT_MINIMUMS
    x, w = shapes[0], shapes[1] if len(shapes) > 1 else None
    if x is None or w is None:
        return
    if len(w) != len(x):
        raise node.error(f"weight {w} and input {x} must have the same rank")
    kernel = _ints(attrs.get("kernel_shape"))
    if kernel is not None and tuple(kernel) != tuple(w[2:]):
        raise node.error(f"kernel_shape={kernel} differs from the weight's spatial dims {w[2:]}")
    if node.op_type == "Conv":
        fits = x[1] == w[1] * group and w[0] % group == 0
        rule = "input channels = weight dim 1 x group, weight dim 0 divisible by group"
    else:
        fits = x[1] == w[0] and w[0] % group == 0
        rule = "input channels = weight dim 0, divisible by group"
    if not fits:
        raise node.error(f"input {x}, weight {w} and group={group} do not fit ({rule})")
    if node.op_type == "ConvTranspose":
        strides = _ints(attrs.get("strides")) or [1] * (len(x) - 2)
        dilations = _ints(attrs.get("dilations")) or [1] * (len(x) - 2)
        output_padding = _ints(attrs.get("output_padding")) or [0] * (len(x) - 2)
        for pad, stride, dilation in zip(output_padding, strides, dilations, strict=True):
            if pad >= max(stride, dilation):
                raise node.error(
                    f"output_padding={output_padding} must be less than the stride or the "
                    f"dilation ({strides}, {dilations})"
                )
