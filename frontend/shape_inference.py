"""ONNX's shape inference, at a cost that does not grow with tensor values: the importer
cross-checks its own shapes against it (`inferred_shapes`), tools read its types
(`inferred_types`)."""

from __future__ import annotations

import math

import onnx

# Ops that make a tensor of any size from small inputs.
_VALUE_GENERATORS = frozenset({"ConstantOfShape", "Range", "Expand", "Tile"})
# Tensors up to this many elements keep their values for ONNX's data propagation.
_PROPAGATED_ELEMENTS = 1024


def inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
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
