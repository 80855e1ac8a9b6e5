"""Seeded inputs that a model accepts: one mechanism for `ember bench`, `ember run
--random-inputs`, `ember opt --bisect` and the tests' oracle comparisons.

Floats are drawn from N(0, 1) and booleans from {0, 1}. An integer input that indexes something
is drawn inside the range the model accepts, derived from the model itself (`index_ranges`):
the size of the data axis of a Gather / GatherElements / ScatterElements it feeds (an embedding
table, a token-type table, ...), the smallest data dim a GatherND / ScatterND index tuple runs
over, or [0, T] for a recurrent layer's `sequence_lens`. The input
may reach its consumer through value-preserving ops (Cast, Unsqueeze, Reshape, ...). Other
integer inputs get values in [0, 16).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ember.runtime.executable import TensorSpec, numpy_dtype

DEFAULT_INT_RANGE = (0, 16)

# Ops whose output holds the values of their first input (rearranged, converted or repeated),
# so an index range needed downstream constrains the input too.
_VALUE_PRESERVING = frozenset(
    {
        "Cast",
        "Concat",
        "Expand",
        "Flatten",
        "Identity",
        "Reshape",
        "Slice",
        "Squeeze",
        "Tile",
        "Transpose",
        "Unsqueeze",
    }
)
# op -> the input position holding indices into input 0 along the `axis` attribute.
_INDEXING = {"Gather": 1, "GatherElements": 1, "ScatterElements": 1}
# ops whose input 1 holds index tuples into input 0 (its last axis: one index per data dim).
_INDEXING_ND = frozenset({"GatherND", "ScatterND"})
_RECURRENT = frozenset({"LSTM", "GRU", "RNN"})

IndexRange = tuple[int, int]  # [low, high)


def random_feeds(
    specs: Sequence[TensorSpec],
    seed: int = 0,
    ranges: Mapping[str, IndexRange] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded inputs: floats ~ N(0, 1), booleans in {0, 1}, integers in `ranges[name]` where
    given (see `index_ranges`), else in [0, 16)."""
    rng = np.random.default_rng(seed)
    ranges = ranges or {}
    feeds = {}
    for spec in specs:
        dtype = numpy_dtype(spec.dtype)
        if np.issubdtype(dtype, np.floating) or dtype.name.startswith(("bfloat16", "float")):
            feeds[spec.name] = rng.standard_normal(spec.shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[spec.name] = rng.integers(0, 2, size=spec.shape).astype(dtype)
        else:
            low, high = ranges.get(spec.name, DEFAULT_INT_RANGE)
            feeds[spec.name] = rng.integers(low, high, size=spec.shape).astype(dtype)
    return feeds


def index_ranges(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> dict[str, IndexRange]:
    """For each integer graph input that indexes something, the [low, high) range of values
    the model accepts. `input_shapes` pins symbolic input dims (as compiled) so that a
    sequence length can be known. An input feeding several indexing ops gets the
    intersection of their ranges; inputs no range is known for are left out."""
    shapes = _static_shapes(model, input_shapes or {})
    constants = _constant_shapes(model)
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, position))

    def shape_of(tensor: str) -> tuple[int, ...] | None:
        return constants.get(tensor) or shapes.get(tensor)

    def axis_size(tensor: str, axis: int) -> int | None:
        shape = shape_of(tensor)
        if shape is None or not -len(shape) <= axis < len(shape):
            return None
        return shape[axis]

    def bounds_of(node: onnx.NodeProto, position: int) -> IndexRange | None:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if _INDEXING.get(node.op_type) == position:
            size = axis_size(node.input[0], int(attrs.get("axis", 0)))
            return (0, size) if size else None
        if node.op_type in _INDEXING_ND and position == 1:
            # Each index tuple's last axis runs over data dims batch_dims .. batch_dims + k.
            data, indices = shape_of(node.input[0]), shape_of(node.input[1])
            if not data or not indices:
                return None
            first = int(attrs.get("batch_dims", 0))
            dims = data[first : first + indices[-1]]
            return (0, min(dims)) if dims and min(dims) > 0 else None
        if node.op_type in _RECURRENT and position == 4:  # sequence_lens: lengths in [0, T]
            seq = axis_size(node.input[0], 1 if attrs.get("layout", 0) else 0)
            return (0, seq + 1) if seq else None
        return None

    initializers = {t.name for t in model.graph.initializer}
    ranges: dict[str, IndexRange] = {}
    for value in model.graph.input:
        elem = value.type.tensor_type.elem_type
        if value.name in initializers or not _is_integer(elem):
            continue
        found: list[IndexRange] = []
        frontier, seen = [value.name], {value.name}
        while frontier:
            tensor = frontier.pop()
            for node, position in consumers.get(tensor, []):
                bounds = bounds_of(node, position)
                if bounds is not None:
                    found.append(bounds)
                elif node.op_type in _VALUE_PRESERVING and (
                    position == 0 or node.op_type == "Concat"
                ):
                    for out in node.output:
                        if out and out not in seen:
                            seen.add(out)
                            frontier.append(out)
        if found:
            low, high = max(r[0] for r in found), min(r[1] for r in found)
            if high > low:
                ranges[value.name] = (low, high)
    return ranges


def model_input_specs(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> list[TensorSpec]:
    """The real graph inputs of `model` (not initializers), symbolic dims pinned from
    `input_shapes`; ValueError names an input whose shape stays symbolic."""
    input_shapes = input_shapes or {}
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        given = input_shapes.get(value.name)
        # A declared dim_value of 0 is an empty dim; a dim_param (or a negative size) is not.
        declared = (d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        shape = tuple(declared if given is None else given)
        if any(d < 0 for d in shape):
            raise ValueError(
                f"input '{value.name}' has a symbolic shape {list(shape)}; give it with --input"
            )
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        specs.append(TensorSpec(value.name, shape, dtype.name))
    return specs


def seeded_inputs(
    model: onnx.ModelProto,
    seed: int = 0,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded inputs for every real graph input of `model`, index inputs within range."""
    specs = model_input_specs(model, input_shapes)
    return random_feeds(specs, seed, index_ranges(model, input_shapes))


def _is_integer(elem_type: int) -> bool:
    if elem_type == onnx.TensorProto.UNDEFINED:
        return False
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    return np.issubdtype(dtype, np.integer)


def _constant_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Shapes of initializers and Constant outputs (known without shape inference)."""
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = tuple(numpy_helper.to_array(attr.t).shape)
    return shapes


def _static_shapes(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]
) -> dict[str, tuple[int, ...]]:
    """The static shapes ONNX's shape inference finds, with `input_shapes` pinned first."""
    if input_shapes:
        from ember.engine.shapes import pin_inputs

        pinned = onnx.ModelProto()
        pinned.CopyFrom(model)
        pin_inputs(pinned, input_shapes)
        model = pinned
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # inference failing only means fewer known shapes: fewer ranges derived
        inferred = model.graph
    shapes = {}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape") and all(d.dim_value > 0 for d in tensor.shape.dim):
            shapes[value.name] = tuple(d.dim_value for d in tensor.shape.dim)
    return shapes
