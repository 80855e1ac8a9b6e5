"""Sequences and optionals: SequenceConstruct, SequenceEmpty, SequenceAt, SequenceInsert,
SequenceErase, SequenceLength, SplitToSequence, ConcatFromSequence, SequenceMap, Optional,
OptionalHasElement, OptionalGetElement (Identity passes either on: tensor.py).

ember's structure is static, so these are import-time structures over ordinary graph values
(`SequenceValue`, `OptionalValue`, frontend/context.py): a sequence is a tuple of tensors whose
length is known at import, an optional a value or nothing. No sequence op becomes a kernel;
the ops on the elements do (SplitToSequence is slices, as Split; ConcatFromSequence a concat,
with new_axis a reshape first; SequenceMap's body is imported once per element). A position
(SequenceAt/Insert/Erase) or split computed at run time is a shape operand: compiled per
value (value specialisation, engine/specialize.py). A sequence is at most
`MAX_SEQUENCE_LENGTH` tensors (ResourceLimitError).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from xdsl.ir import SSAValue

from ember.frontend.context import (
    MAX_SEQUENCE_LENGTH,
    AnyValue,
    Const,
    ImportContext,
    Node,
    OptionalValue,
    SequenceValue,
    Value,
    dtype_of,
    kind_of,
    normalize_axis,
    shape_of,
)
from ember.frontend.dtypes import numpy_dtype_for_onnx
from ember.frontend.errors import ResourceLimitError
from ember.frontend.ops.control_flow import loop_scalars_as_declared
from ember.frontend.registry import converter_for, converts, converts_structured


def _position(imp: ImportContext, node: Node, index: int, length: int, end_ok: bool) -> int | None:
    """The position operand (absent: None) in [0, length) (or [0, length] when `end_ok`:
    SequenceInsert may append), negative ones counted from the end."""
    given = imp.constant(node, index, "position")
    if given is None:
        return None
    if given.size != 1 or given.dtype.kind not in "iu":
        raise node.error(f"position must be one integer, given {given.dtype} {list(given.shape)}")
    position = int(given.reshape(()))
    high = length if end_ok else length - 1
    if not -length <= position <= high:
        allowed = f"[{-length}, {high}]"
        raise node.error(
            f"position {position} is out of range {allowed} for a sequence of {length}"
        )
    return position + length if position < 0 else position


@converts("SequenceConstruct")
def _sequence_construct(imp: ImportContext, node: Node) -> Sequence[AnyValue]:
    tensors = [imp.required(node, i) for i in range(len(node.proto.input))]
    if not tensors:
        raise node.error("needs at least one input tensor")
    return [imp.sequence(tensors, dtype_of(tensors[0]))]


@converts("SequenceEmpty")
def _sequence_empty(imp: ImportContext, node: Node) -> Sequence[AnyValue]:
    element_type = node.attrs.get("dtype", onnx.TensorProto.FLOAT)
    try:
        dtype = numpy_dtype_for_onnx(element_type)
    except TypeError as err:
        raise node.unsupported(f"element type {element_type}: {err}") from None
    return [imp.sequence([], dtype)]


@converts("SequenceLength")
def _sequence_length(imp: ImportContext, node: Node) -> Sequence[AnyValue]:
    return [Const(np.array(len(imp.sequence_input(node, 0).elements), np.int64))]


@converts("SequenceAt")
def _sequence_at(imp: ImportContext, node: Node) -> Sequence[AnyValue]:
    seq = imp.sequence_input(node, 0)
    position = _position(imp, node, 1, len(seq.elements), end_ok=False)
    if position is None:
        raise node.error("missing required input #1 (position)")
    return [seq.elements[position]]


@converts("SequenceInsert")
def _sequence_insert(imp: ImportContext, node: Node) -> Sequence[AnyValue]:
    seq = imp.sequence_input(node, 0)
    tensor = imp.required(node, 1)
    elements = list(seq.elements)
    position = _position(imp, node, 2, len(elements), end_ok=True)
    elements.insert(len(elements) if position is None else position, tensor)
    return [imp.sequence(elements, seq.dtype)]


@converts("SequenceErase")
def _sequence_erase(imp: ImportContext, node: Node) -> Sequence[AnyValue]:
    seq = imp.sequence_input(node, 0)
    elements = list(seq.elements)
    if not elements:
        raise node.error("cannot erase from an empty sequence")
    position = _position(imp, node, 1, len(elements), end_ok=False)
    del elements[len(elements) - 1 if position is None else position]
    return [imp.sequence(elements, seq.dtype)]


@converts("SplitToSequence")
def _split_to_sequence(imp: ImportContext, node: Node) -> Sequence[AnyValue]:
    x = imp.required(node, 0)
    shape = shape_of(x)
    if not shape:
        raise node.error("cannot split a 0-d tensor")
    axis = normalize_axis(node, node.attrs.get("axis", 0), len(shape))
    size = shape[axis]
    split = imp.constant(node, 1, "split")
    squeeze = False
    if split is None:
        # Pieces of one, the axis dropped unless keepdims (ONNX ignores keepdims otherwise).
        sizes = [1] * size
        squeeze = not node.attrs.get("keepdims", 1)
    elif split.ndim == 0:
        chunk = int(split)
        if chunk <= 0:
            raise node.error(f"split {chunk} must be positive")
        sizes = [min(chunk, size - start) for start in range(0, size, chunk)]
    elif split.ndim == 1:
        sizes = [int(s) for s in split]
        if any(s < 0 for s in sizes) or sum(sizes) != size:
            raise node.error(f"split sizes {sizes} do not add up to {size} along axis {axis}")
    else:
        raise node.error(f"split must be a scalar or 1-D, given shape {list(split.shape)}")
    imp.check_sequence_length(len(sizes))
    pieces: list[Value] = []
    start = 0
    for piece in sizes:
        value = imp.slice_axis(x, axis, start, piece)
        if squeeze:
            value = imp.reshape(value, shape[:axis] + shape[axis + 1 :])
        pieces.append(value)
        start += piece
    return [imp.sequence(pieces, dtype_of(x))]


@converts("ConcatFromSequence")
def _concat_from_sequence(imp: ImportContext, node: Node) -> Sequence[AnyValue]:
    seq = imp.sequence_input(node, 0)
    if not seq.elements:
        raise node.error("cannot concatenate an empty sequence (the result has no shape)")
    if "axis" not in node.attrs:
        raise node.error("missing required attribute 'axis'")
    new_axis = bool(node.attrs.get("new_axis", 0))
    first = shape_of(seq.elements[0])
    rank = len(first) + new_axis
    axis = normalize_axis(node, node.attrs["axis"], rank)
    elements = list(seq.elements)
    if new_axis:
        # Stacking: each element gains an axis of one at `axis` (a reshape: no copy).
        elements = [imp.reshape(e, (*shape_of(e)[:axis], 1, *shape_of(e)[axis:])) for e in elements]
    shapes = [shape_of(e) for e in elements]
    for other in shapes[1:]:
        if len(other) != len(shapes[0]) or any(
            a != b for d, (a, b) in enumerate(zip(other, shapes[0])) if d != axis
        ):
            raise node.error(
                f"the sequence's tensors {[list(s) for s in shapes]} differ outside axis {axis}"
            )
    out = [*shapes[0][:axis], sum(s[axis] for s in shapes), *shapes[0][axis + 1 :]]
    if 0 in out:  # nothing to concatenate (every piece is empty along the axis)
        return [Const(np.zeros(out, seq.dtype))]
    return [imp.concat(elements, axis)]


@converts("SequenceMap")
def _sequence_map(imp: ImportContext, node: Node) -> Sequence[AnyValue]:
    body = _body(node)
    operands = [imp.any_input(node, i) for i in range(len(node.proto.input))]
    if not operands or not isinstance(operands[0], SequenceValue):
        raise node.error("input #0 must be a sequence")
    length = len(operands[0].elements)
    for index, operand in enumerate(operands):
        if isinstance(operand, OptionalValue) or operand is None:
            raise node.error(f"input #{index} must be a tensor or a sequence")
        if isinstance(operand, SequenceValue) and len(operand.elements) != length:
            raise node.error(
                f"input #{index} is a sequence of {len(operand.elements)} tensors, input #0 of "
                f"{length}: the sequences must have the same length"
            )
    if len(body.input) != len(operands):
        raise node.error(f"the body takes {len(body.input)} inputs, the node gives {len(operands)}")
    if len(body.output) != len(node.proto.output):
        raise node.error(
            f"the body has {len(body.output)} outputs, the node {len(node.proto.output)}"
        )
    imp.check_sequence_length(length)
    outputs: list[list[Value]] = [[] for _ in body.output]
    for k in range(length):
        bound = [op.elements[k] if isinstance(op, SequenceValue) else op for op in operands]
        for slot, value in zip(outputs, _import_body(imp, node, body, bound), strict=True):
            if not isinstance(value, SSAValue | Const):
                raise node.unsupported(
                    f"body output is {kind_of(value)}; ember maps bodies that give tensors"
                )
            slot.append(value)
    results: list[AnyValue] = []
    for slot, out in zip(outputs, body.output, strict=True):
        dtype = dtype_of(slot[0]) if slot else _declared_dtype(node, out)
        results.append(imp.sequence(slot, dtype))
    return results


def _body(node: Node) -> onnx.GraphProto:
    body = node.attrs.get("body")
    if not isinstance(body, onnx.GraphProto):
        raise node.error("missing required graph attribute 'body'")
    return body


def _import_body(
    imp: ImportContext, node: Node, body: onnx.GraphProto, inputs: Sequence[AnyValue]
) -> list[AnyValue]:
    """Import `body` once with its inputs bound to `inputs` and return its outputs. A body
    imported several times (once per element or iteration) binds its names anew each time;
    the outer values its names shadow are put back afterwards."""
    names = [i.name for i in body.input] + [t.name for t in body.initializer]
    names += [o for proto in body.node for o in proto.output if o]
    shadowed = {name: imp.env[name] for name in names if name in imp.env}
    try:
        for tensor in body.initializer:
            imp.env[tensor.name] = Const(imp.tensor_array(tensor), tensor.name)
        for info, value in zip(body.input, inputs, strict=True):
            imp.env[info.name] = value
        imp.import_nodes(list(body.node))
        return imp.body_outputs(node, body)
    finally:
        for name in names:
            imp.env.pop(name, None)
        imp.env.update(shadowed)


def _declared_dtype(node: Node, info: onnx.ValueInfoProto) -> np.dtype:
    """The element type a body output declares (the type of an empty result sequence)."""
    kind = info.type.WhichOneof("value")
    tensor = info.type.sequence_type.elem_type.tensor_type if kind == "sequence_type" else None
    elem_type = tensor.elem_type if tensor is not None else info.type.tensor_type.elem_type
    try:
        return numpy_dtype_for_onnx(elem_type)
    except TypeError:
        raise node.unsupported(
            f"body output '{info.name}' has no tensor element type ember knows"
        ) from None


@converts("Optional")
def _optional(imp: ImportContext, node: Node) -> Sequence[AnyValue]:
    element = imp.any_input(node, 0)
    if isinstance(element, OptionalValue):
        raise node.error("input #0 is an optional: an optional holds a tensor or a sequence")
    if element is None and "type" not in node.attrs:
        raise node.error("an empty Optional needs its 'type' attribute")
    return [OptionalValue(element)]


@converts("OptionalHasElement")
def _optional_has_element(imp: ImportContext, node: Node) -> Sequence[AnyValue]:
    value = imp.any_input(node, 0)
    present = value is not None and not (isinstance(value, OptionalValue) and value.element is None)
    return [Const(np.array(present))]


@converts("OptionalGetElement")
def _optional_get_element(imp: ImportContext, node: Node) -> Sequence[AnyValue]:
    value = imp.any_input(node, 0)
    if value is None:
        raise node.error("missing required input #0")
    if isinstance(value, OptionalValue):
        if value.element is None:
            raise node.error(f"the optional '{node.proto.input[0]}' is empty")
        return [value.element]
    return [value]  # a tensor or a sequence is its own element (opset 18)


# ---------------------------------------------------------------------------------------------
# Control flow over sequences (dispatched by ImportContext when a node reads or gives one)


def _known(
    imp: ImportContext, value: AnyValue, walked: dict[SSAValue, np.ndarray | None]
) -> AnyValue:
    """`value` as a constant when it is an integer or boolean tensor computed from constants
    alone. The importer folds integer ops but keeps float arithmetic as ops; paddle2onnx's
    `while i < n` counts `i` through float ops (its `scale`: Cast, Mul, Add, Cast back), so
    the condition is known only once that chain is evaluated. Folding the carried counter
    each iteration also keeps the chain from growing with the iteration count; `walked` (one
    per Loop) keeps an iteration from walking again the bodies before it."""
    if not isinstance(value, SSAValue) or dtype_of(value).kind not in "iub":
        return value
    array = imp.known_value(value, walked)
    return value if array is None else Const(array)


@converts_structured("Loop")
def _unrolled_loop(
    imp: ImportContext, node: Node, max_trips: int = MAX_SEQUENCE_LENGTH
) -> Sequence[AnyValue]:
    """A Loop that carries a sequence (torch's exported `for x in list: out.append(...)`),
    unrolled at import: each iteration's sequence has a length known at import only if the
    trip count and every iteration's condition are known there too; a condition computed
    from run-time data makes the sequence's length data-dependent (refused). More than
    `max_trips` iterations is a ResourceLimitError."""
    body = _body(node)
    trip = imp.constant(node, 0, "trip count (of a Loop that carries a sequence)")
    cond = imp.constant(node, 1, "condition (of a Loop that carries a sequence)")
    if trip is None and cond is None:
        raise node.error("a Loop with neither trip count nor condition never ends")
    carried = [imp.any_input(node, i) for i in range(2, len(node.proto.input))]
    if any(v is None for v in carried):
        raise node.error("a loop-carried initial value is missing")
    n_scan = len(body.output) - 1 - len(carried)
    if len(body.input) != 2 + len(carried) or n_scan < 0:
        raise node.error(
            f"the body takes {len(body.input)} inputs and gives {len(body.output)} outputs for "
            f"{len(carried)} loop-carried values"
        )
    limit = None if trip is None else int(trip.reshape(()))
    running = True if cond is None else bool(cond.reshape(()))
    scans: list[list[Value]] = [[] for _ in range(n_scan)]
    walked: dict[SSAValue, np.ndarray | None] = {}
    k = 0
    while running and (limit is None or k < limit):
        if k == max_trips:
            raise ResourceLimitError(
                f"Loop node '{node.name}' (opset {node.opset}): more than {max_trips} "
                "iterations; ember unrolls a Loop that carries a sequence (one copy of the body "
                f"per iteration), up to {max_trips}"
            )
        condition = Const(np.array(running))
        scalars = loop_scalars_as_declared(imp, body, Const(np.array(k, np.int64)), condition)
        outputs = _import_body(imp, node, body, [*scalars, *carried])
        # The condition too: computed by ops on constants the importer kept (ReduceMax).
        outputs = [_known(imp, value, walked) for value in outputs]
        cond_out = outputs[0]
        if not isinstance(cond_out, Const):
            raise node.unsupported(
                f"the body's condition '{body.output[0].name}' is computed at run time: the "
                "number of iterations, and so the length of the sequence or the shape of the "
                "tensor the Loop carries (ember unrolls it), depend on data (a `while` that "
                "breaks on a decoded token; ember needs the iteration count at compile time)"
            )
        running = bool(cond_out.array.reshape(()))
        carried = outputs[1 : 1 + len(carried)]
        for slot, value in zip(scans, outputs[1 + len(carried) :], strict=True):
            if not isinstance(value, SSAValue | Const):
                raise node.unsupported(f"scan output is {kind_of(value)}, not a tensor")
            slot.append(value)
        k += 1
    stacked: list[AnyValue] = []
    for slot, out in zip(scans, body.output[1 + len(carried) :], strict=True):
        if not slot:
            raise node.unsupported(
                f"scan output '{out.name}' of a Loop that runs no iteration has no shape"
            )
        rows = [imp.reshape(v, (1, *shape_of(v))) for v in slot]
        stacked.append(imp.concat(rows, 0))
    return [*carried, *stacked]


@converts_structured("If")
def _if_over_sequences(imp: ImportContext, node: Node) -> Sequence[AnyValue]:
    """An If whose branches give sequences or optionals: the condition selects a structure,
    so it must be known at import; a condition fed at run time is compiled per value (value
    specialisation), one computed inside the graph is refused."""
    imp.constant(node, 0, "condition (of an If whose branches read or give sequences or optionals)")
    own = converter_for("If")
    if own is None:
        raise node.unsupported("ember has no If converter")
    return own(imp, node)
