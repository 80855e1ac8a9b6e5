"""Ops that ONNX specifies as functions of other ops (Attention, RotaryEmbedding, most
activations ...): the importer imports such an op through its function body when it has no
converter of its own (`ImportContext.import_node`)."""

from __future__ import annotations

from collections.abc import Sequence

import onnx


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
    proto: onnx.NodeProto,
    opset: int,
    input_types: Sequence[onnx.TypeProto],
    model_opset: int | None = None,
) -> tuple[list[onnx.NodeProto], int] | None:
    """The nodes of `proto`'s ONNX function body (as of `opset`, the version of its domain)
    and the ai.onnx opset they use: the body's own import of it, else `model_opset` (the
    model's; an ai.onnx.preview body imports only its own domain), else `opset`.

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
        (o.version for o in function.opset_import if o.domain in ("", "ai.onnx")),
        opset if model_opset is None else model_opset,
    )
    prefix = f"{proto.name or proto.output[0]}/{proto.op_type}/"
    return function_expand_helper(node, function, prefix), body_opset
