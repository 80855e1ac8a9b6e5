"""Control flow: If, Loop and Scan.

An `If` whose condition folds to a constant (exporters write `If` on a shape:
`Shape -> Gather -> Equal -> If`) imports only its taken branch's nodes in place of the `If`
(they read outer-scope values by name, as the ONNX spec lets them); the other branch is never
imported, so ops it alone uses need no support.

Any other `If`, every `Loop` and every `Scan` become graph-dialect ops with regions
(`graph.if`, `graph.loop`; dialects/graph.py): their bodies are imported into blocks isolated
from above (`ImportContext.region`: outer run-time values become captured block arguments).
A Scan is a `graph.loop` whose body slices each scan input at the iteration index (a Gather
with the index computed in the body) and whose scan outputs are stacked along a leading axis,
then reversed/transposed into place. Sizes stay static: a Loop with scan outputs needs its
trip count and initial condition at compile time (a run-time one raises RuntimeOperandError,
so value specialisation can compile per value) and a body condition that cannot end the loop
early (else the outputs' size depends on data: refused). A body that computes its condition
from the iteration index and carried counters (tf2onnx's TF while_loop, with or without M)
has that scalar part run at compile time, which gives the number of iterations. A body op
needing a compile-time operand computed from a carried counter (a RuntimeOperandError while
importing the body) makes the Loop unrolled instead, when its trip count is small. A Loop whose body changes a carried
value's shape (torch's scripted `out = torch.cat([out, step], 1)`) is unrolled at import
instead, one copy of the body per iteration, as a sequence-carrying Loop is
(frontend/ops/sequence.py): its trip count and every iteration's condition must be known
at compile time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from xdsl.dialects.builtin import IntegerType, TensorType, i64
from xdsl.ir import Region as IRRegion
from xdsl.ir import SSAValue

from ember.dialects import graph, numpy_eval
from ember.frontend.context import (
    Const,
    ImportContext,
    Node,
    Region,
    Value,
    dtype_of,
    i64_attr,
    normalize_axis,
    shape_of,
    subgraph_reads,
)
from ember.frontend.errors import ResourceLimitError, RuntimeOperandError
from ember.frontend.registry import STRUCTURED_CONVERTERS, converter_key, converts

_ITER_TYPE = TensorType(i64, [])
_COND_TYPE = TensorType(IntegerType(1), [])


def _type_of(value: Value) -> TensorType:
    if isinstance(value, Const):
        return numpy_eval.tensor_type(value.array)
    return value.type  # type: ignore[return-value]


def _scalar(imp: ImportContext, node: Node, value: Value, dtype: type, what: str) -> Value:
    """A one-element trip count or condition as a 0-d tensor of `dtype`."""
    if int(np.prod(shape_of(value))) != 1 or dtype_of(value) != np.dtype(dtype):
        raise node.error(
            f"the {what} must be one {np.dtype(dtype).name} element, it is "
            f"{dtype_of(value)} of shape {list(shape_of(value))}"
        )
    return imp.reshape(value, [])


def loop_scalars_as_declared(
    imp: ImportContext, body: onnx.GraphProto, iteration: Value, cond: Value
) -> list[Value]:
    """A Loop body's iteration number and condition, each reshaped to [1] where the body
    declares that shape: tf2onnx declares the iteration number [1] (its CropAndResize loop
    then Slices at it) and onnxruntime feeds the body what it declares."""
    values = []
    for info, value in zip(body.input[:2], (iteration, cond), strict=True):
        dims = info.type.tensor_type.shape.dim
        declared_1 = (
            info.type.tensor_type.HasField("shape")
            and len(dims) == 1
            and dims[0].HasField("dim_value")
            and dims[0].dim_value == 1
        )
        if declared_1 and isinstance(value, Const):
            value = Const(value.array.reshape(1))
        values.append(imp.reshape(value, [1]) if declared_1 else value)
    return values


def _bind_body(imp: ImportContext, body: onnx.GraphProto, inputs: Sequence[Value]) -> None:
    for info, value in zip(body.input, inputs, strict=True):
        imp.env[info.name] = value
    for tensor in body.initializer:
        imp.env[tensor.name] = Const(imp.tensor_array(tensor), tensor.name)


# ---------------------------------------------------------------------------------------------
# If


@converts("If")
def _if(imp: ImportContext, node: Node) -> Sequence[Value]:
    condition = imp.required(node, 0)
    branches = [node.attrs["then_branch"], node.attrs["else_branch"]]
    for branch in branches:
        if len(branch.output) != len(node.proto.output):
            raise node.error(
                f"branch '{branch.name}' has {len(branch.output)} outputs, the If has "
                f"{len(node.proto.output)}"
            )
    if isinstance(condition, Const):
        if condition.array.size != 1:
            raise node.error(
                f"the condition must hold one element, it has shape {condition.array.shape}"
            )
        taken = branches[0 if bool(condition.array.reshape(())) else 1]
        _bind_body(imp, taken, [])
        imp.import_nodes(taken.node)
        return imp.body_outputs(node, taken)
    cond = _scalar(imp, node, condition, np.bool_, "condition")
    # Both branches capture what either reads, in one order: one list of captures.
    reads = [name for b in branches for name in subgraph_reads(b)]
    built: list[tuple[Region, list[Value]]] = []
    for branch in branches:
        with imp.region([], reads) as region:
            _bind_body(imp, branch, [])
            imp.import_nodes(branch.node)
            built.append((region, imp.body_outputs(node, branch)))
    (then_region, then_values), (else_region, else_values) = built
    assert then_region.captures == else_region.captures
    types = []
    for k, (a, b) in enumerate(zip(then_values, else_values, strict=True)):
        if _type_of(a) != _type_of(b):
            raise node.unsupported(
                f"output #{k} is {_type_of(a)} in one branch and {_type_of(b)} in the other; "
                "ember runs an If on a run-time condition only when both branches give one "
                "static type"
            )
        types.append(_type_of(a))
    then_region.finish(then_values, node.name)
    else_region.finish(else_values, node.name)
    op = graph.IfOp.build(
        operands=[imp.materialize(cond, node.name), else_region.captures],
        result_types=[types],
        regions=[IRRegion(then_region.block), IRRegion(else_region.block)],
    )
    imp.block.add_op(op)
    return list(op.results)


# ---------------------------------------------------------------------------------------------
# Loop


def _exits_early(region: Region, cond: Value) -> bool:
    """Whether the body's yielded condition may end the loop before its trip count: it does
    not when it passes the incoming condition on, or is the constant true."""
    if isinstance(cond, Const):
        return not bool(cond.array.reshape(-1)[0])
    return cond is not region.block.args[1]


# Past this many iterations a computed condition is not simulated (the Loop is refused).
_MAX_SIMULATED_TRIPS = 100_000


def _simulated_trips(
    imp: ImportContext,
    region: Region,
    inits: Sequence[Value],
    yields: Sequence[Value],
    trip_count: int | None,
) -> int | None:
    """The number of iterations a Loop whose body computes its condition runs, found by
    running the body's scalar part at compile time; None when the condition reads a value
    that is not known then (a hidden state: data decides) or the loop does not end within
    `_MAX_SIMULATED_TRIPS`. tf2onnx writes a TF while_loop over time (Keras 3's masked
    LSTM/GRU, TimeDistributed's pfor loop) as a Loop whose body computes
    `iter < n and time + 1 < n` from the iteration index, a counter it carries and
    compile-time bounds, with or without a trip count M. The kernels compute the same
    condition at run time, so the loop ends after exactly this many iterations."""
    limit = _MAX_SIMULATED_TRIPS if trip_count is None else min(trip_count, _MAX_SIMULATED_TRIPS)
    args = region.block.args
    n_carried = len(inits)

    def known(value: Value, bound: dict[SSAValue, np.ndarray | None]) -> np.ndarray | None:
        # known_value looks the bound body arguments up first, and adds what it computes.
        return value.array if isinstance(value, Const) else imp.known_value(value, bound)

    carried: list[np.ndarray | None] = [
        init.array if isinstance(init, Const) else imp.known_value(init) for init in inits
    ]
    for k in range(limit):
        if trip_count is not None and k == trip_count - 1:
            return trip_count  # the last trip's condition does not matter
        bound: dict[SSAValue, np.ndarray | None] = {
            args[0]: np.array(k, np.int64),
            args[1]: np.array(True),  # iteration k runs: its incoming condition was true
        }
        bound.update((args[2 + j], a) for j, a in enumerate(carried) if a is not None)
        cond = known(yields[0], bound)
        if cond is None or cond.size != 1:
            return None
        if not bool(cond.reshape(-1)[0]):
            return k + 1
        carried = [known(v, bound) for v in yields[1 : 1 + n_carried]]
    return None


def _build_loop(
    imp: ImportContext,
    node: Node,
    region: Region,
    trip_count: Value | None,
    cond: Value | None,
    inits: Sequence[Value],
    yields: Sequence[Value],
    trips: int | None,
) -> list[SSAValue]:
    """The graph.loop of a finished body; `trips` is the iteration count when there are scan
    values (yields past the carried ones)."""
    carried = [_type_of(v) for v in inits]
    scan_types = []
    for value in yields[1 + len(inits) :]:
        assert trips is not None
        scan_types.append(
            TensorType(numpy_eval.element_type(dtype_of(value)), [trips, *shape_of(value)])
        )
    region.finish(yields, node.name)
    op = graph.LoopOp.build(
        operands=[
            None if trip_count is None else imp.materialize(trip_count, node.name),
            None if cond is None else imp.materialize(cond, node.name),
            [imp.materialize(v, node.name) for v in inits],
            region.captures,
        ],
        result_types=[[*carried, *scan_types]],
        regions=[IRRegion(region.block)],
    )
    imp.block.add_op(op)
    return list(op.results)


@converts("Loop")
def _loop(imp: ImportContext, node: Node) -> Sequence[Value]:
    body = node.attrs["body"]
    inits = [imp.required(node, i) for i in range(2, len(node.proto.input))]
    n_carried = len(inits)
    n_scans = len(body.output) - 1 - n_carried
    if len(body.input) != 2 + n_carried or n_scans < 0:
        raise node.error(
            f"the body takes {len(body.input)} inputs and gives {len(body.output)} outputs "
            f"for {n_carried} loop-carried values"
        )
    trip_count, cond = imp.input(node, 0), imp.input(node, 1)
    if trip_count is not None:
        trip_count = _scalar(imp, node, trip_count, np.int64, "trip count M")
    if cond is not None:
        cond = _scalar(imp, node, cond, np.bool_, "condition")
    trips = None
    m: np.ndarray | None = None
    if n_scans:
        # The scan outputs hold one slice per iteration: their size must be static.
        m = imp.constant(node, 0, "the trip count M of a Loop with scan outputs")
        first = imp.constant(node, 1, "the initial condition of a Loop with scan outputs")
        runs = first is None or bool(first.reshape(-1)[0])
        if not runs:
            trips = 0
        elif m is not None:
            trips = max(int(m.reshape(-1)[0]), 0)
    changed: tuple[int, TensorType, TensorType] | None = None
    try:
        with imp.region(
            [_ITER_TYPE, _COND_TYPE, *(_type_of(v) for v in inits)], subgraph_reads(body)
        ) as region:
            imp.iteration_args.add(region.block.args[0])
            iteration, first = loop_scalars_as_declared(imp, body, *region.block.args[:2])
            _bind_body(imp, body, [iteration, first, *region.block.args[2 : 2 + n_carried]])
            imp.import_nodes(body.node)
            yields = imp.body_outputs(node, body)
            yields[0] = _scalar(imp, node, yields[0], np.bool_, "body's condition output")
            for k, (init, value) in enumerate(zip(inits, yields[1 : 1 + n_carried])):
                if changed is None and _type_of(init) != _type_of(value):
                    changed = (k, _type_of(init), _type_of(value))
    except RuntimeOperandError as error:
        return _unrolled_for_operand(imp, node, error)
    if changed is not None:
        return _unrolled(imp, node, *changed)
    if n_scans and trips != 0 and (trips is None or _exits_early(region, yields[0])):
        trips = _simulated_trips(imp, region, inits, yields, trips)
        if trips is None and m is None:
            raise node.unsupported(
                "a Loop with scan outputs and no trip count M: the outputs' size depends on "
                "data (ember needs it at compile time)"
            )
        if trips is None:
            raise node.unsupported(
                "a Loop with scan outputs whose body computes its condition: the number of "
                "iterations, hence the outputs' size, depends on data"
            )
    if trips == 0:
        empty = [np.zeros((0, *shape_of(v)), dtype_of(v)) for v in yields[1 + n_carried :]]
        return [*inits, *(Const(a) for a in empty)]
    return _build_loop(imp, node, region, trip_count, cond, inits, yields, trips)


def _unrolled(
    imp: ImportContext, node: Node, k: int, first: TensorType, then: TensorType
) -> Sequence[Value]:
    """A Loop whose body changes a carried value's shape (torch's scripted
    `out = torch.cat([out, step], 1)` in a `for` loop): each iteration has its own shapes, so
    the body is imported once per iteration (as a sequence-carrying Loop is), which needs the
    trip count and every iteration's condition at compile time."""
    why = f"loop-carried value #{k} starts as {first} and the body makes it {then}: the "
    # A run-time operand fed by a graph input is compiled per value (value specialisation).
    imp.constant(node, 0, why + "trip count M of such a Loop (ember unrolls it)")
    imp.constant(node, 1, why + "initial condition of such a Loop (ember unrolls it)")
    unroll = STRUCTURED_CONVERTERS[converter_key("Loop")]
    return unroll(imp, node)  # type: ignore[return-value]


# Past this many iterations a Loop is not unrolled for a body operand (compile time grows with
# each copy of the body); the operand's own refusal stands.
_MAX_UNROLLED_FOR_OPERAND = 256


def _unrolled_for_operand(
    imp: ImportContext, node: Node, error: RuntimeOperandError
) -> Sequence[Value]:
    """A Loop whose body has an op needing a compile-time operand computed from the iteration
    (tf2onnx's TF strided_slice at a carried counter in TimeDistributed's pfor loop, its
    Cumprod loop's Slice ends): unrolled at import, each iteration with constant counters, so
    the operand folds. Needs a compile-time trip count M (if any) and initial condition, and
    at most `_MAX_UNROLLED_FOR_OPERAND` iterations; otherwise, or if an iteration still needs
    a run-time operand, the body's own refusal (`error`) is raised."""
    try:
        m = imp.constant(node, 0, "trip count M")
        imp.constant(node, 1, "initial condition")
    except RuntimeOperandError:
        raise error from None
    if m is not None and int(m.reshape(-1)[0]) > _MAX_UNROLLED_FOR_OPERAND:
        raise error
    unroll = STRUCTURED_CONVERTERS[converter_key("Loop")]
    try:
        return unroll(imp, node, max_trips=_MAX_UNROLLED_FOR_OPERAND)  # type: ignore[call-arg,return-value]
    except (RuntimeOperandError, ResourceLimitError):
        raise error from None


# ---------------------------------------------------------------------------------------------
# Scan


def _scan(
    imp: ImportContext,
    node: Node,
    body: onnx.GraphProto,
    states: Sequence[Value],
    scan_inputs: Sequence[Value],
    reads: Sequence[str],
) -> list[Value]:
    """Scan (opset 9 semantics) over `scan_inputs` as one graph.loop."""
    n_in, n_states = len(scan_inputs), len(states)
    n_out = len(body.output) - n_states
    if len(body.input) != n_states + n_in or n_out < 0:
        raise node.error(
            f"the body takes {len(body.input)} inputs and gives {len(body.output)} outputs for "
            f"{n_states} states and {n_in} scan inputs"
        )
    in_axes = [
        normalize_axis(node, a, len(shape_of(x)))
        for a, x in zip(node.attrs.get("scan_input_axes", [0] * n_in), scan_inputs, strict=True)
    ]
    in_dirs = list(node.attrs.get("scan_input_directions", [0] * n_in))
    lengths = {shape_of(x)[a] for x, a in zip(scan_inputs, in_axes)}
    if len(lengths) != 1:
        raise node.error(f"the scan inputs have different sequence lengths {sorted(lengths)}")
    length = lengths.pop()
    if length == 0:
        raise node.unsupported("a Scan over an empty sequence")
    arg_types = [_ITER_TYPE, _COND_TYPE, *(_type_of(v) for v in states)]
    with imp.region(arg_types, reads) as region:
        iteration = region.block.args[0]
        reversed_index = imp.emit(graph.SubOp, [Const(np.array(length - 1)), iteration], [])
        elements = []
        for x, axis, direction in zip(scan_inputs, in_axes, in_dirs, strict=True):
            source = region.capture(x) if isinstance(x, SSAValue) else x
            index = reversed_index if direction else iteration
            shape = list(shape_of(x))
            del shape[axis]
            elements.append(imp.emit(graph.GatherOp, [source, index], shape, axis=i64_attr(axis)))
        _bind_body(imp, body, [*region.block.args[2 : 2 + n_states], *elements])
        imp.import_nodes(body.node)
        yields = [Const(np.array(True)), *imp.body_outputs(node, body)]
        for k, (init, value) in enumerate(zip(states, yields[1 : 1 + n_states])):
            if _type_of(init) != _type_of(value):
                raise node.error(
                    f"state #{k} is {_type_of(init)}, the body gives {_type_of(value)}"
                )
    trip_count = Const(np.array(length, np.int64))
    results = _build_loop(imp, node, region, trip_count, None, states, yields, length)
    outputs: list[Value] = list(results[:n_states])
    out_axes = list(node.attrs.get("scan_output_axes", [0] * n_out))
    out_dirs = list(node.attrs.get("scan_output_directions", [0] * n_out))
    for stacked, axis, direction in zip(results[n_states:], out_axes, out_dirs, strict=True):
        value: Value = stacked
        if direction:
            value = imp.gather_axis(value, 0, np.arange(length)[::-1].copy())
        rank = len(shape_of(value))
        axis = normalize_axis(node, axis, rank)
        if axis:
            value = imp.transpose(value, [*range(1, axis + 1), 0, *range(axis + 1, rank)])
        outputs.append(value)
    return outputs


@converts("Scan")
def _scan_op(imp: ImportContext, node: Node) -> Sequence[Value]:
    body = node.attrs["body"]
    n_in = int(node.attrs["num_scan_inputs"])
    if node.opset >= 9:
        inputs = [imp.required(node, i) for i in range(len(node.proto.input))]
        states, scan_inputs = inputs[: len(inputs) - n_in], inputs[len(inputs) - n_in :]
        return _scan(imp, node, body, states, scan_inputs, subgraph_reads(body))
    # Scan-8: a leading batch axis on every input and output, sequences along axis 1; one
    # outer graph.loop over the batch runs the opset-9 scan of each batch item.
    if imp.input(node, 0) is not None:
        raise node.unsupported("Scan-8 with sequence_lens")
    inputs = [imp.required(node, i) for i in range(1, len(node.proto.input))]
    states, scan_inputs = inputs[: len(inputs) - n_in], inputs[len(inputs) - n_in :]
    batch = {shape_of(v)[0] for v in inputs if shape_of(v)}
    if len(batch) != 1 or any(not shape_of(v) for v in inputs):
        raise node.error("Scan-8 inputs must share a leading batch axis")
    size = batch.pop()
    directions = list(node.attrs.get("directions", [0] * n_in))
    reads = subgraph_reads(body)
    inner = onnx.helper.make_node(
        "Scan", [], [], scan_input_directions=directions, num_scan_inputs=n_in
    )
    inner_node = Node(inner, 9, {"scan_input_directions": directions, "num_scan_inputs": n_in})
    inner_node.proto.name = node.name
    with imp.region([_ITER_TYPE, _COND_TYPE], reads) as region:
        item = region.block.args[0]

        def row(x: Value) -> Value:
            source = region.capture(x) if isinstance(x, SSAValue) else x
            return imp.emit(graph.GatherOp, [source, item], shape_of(x)[1:], axis=i64_attr(0))

        outs = _scan(
            imp, inner_node, body, [row(s) for s in states], [row(x) for x in scan_inputs], reads
        )
    trip_count = Const(np.array(size, np.int64))
    yields = [Const(np.array(True)), *outs]
    results = _build_loop(imp, node, region, trip_count, None, [], yields, size)
    return results


# ---------------------------------------------------------------------------------------------
# Slices at the iteration index (`x[i : i + 1]` in a Loop body)


def _offset_from_iteration(imp: ImportContext, value: Value) -> tuple[SSAValue, int] | None:
    """(counter, c) when one-element `value` is `counter + c`: a Loop body's iteration
    counter through reshapes (Unsqueeze) and additions of integer constants."""
    offset = 0
    current: Value = value
    while isinstance(current, SSAValue) and int(np.prod(shape_of(current))) == 1:
        if current in imp.iteration_args:
            return current, offset
        owner = current.owner
        if isinstance(owner, graph.ReshapeOp):
            current = owner.input
            continue
        if not isinstance(owner, graph.AddOp | graph.SubOp):
            return None
        lhs, rhs = owner.operands
        constants = [
            imp.weights[v.owner.ref.data] if isinstance(v.owner, graph.ConstantOp) else None
            for v in (lhs, rhs)
        ]
        if constants[1] is not None and constants[1].dtype.kind in "iu":
            step = int(constants[1].reshape(-1)[0])
            offset += step if isinstance(owner, graph.AddOp) else -step
            current = lhs
        elif constants[0] is not None and isinstance(owner, graph.AddOp):
            if constants[0].dtype.kind not in "iu":
                return None
            offset += int(constants[0].reshape(-1)[0])
            current = rhs
        else:
            return None
    return None


def slice_at_loop_index(imp: ImportContext, node: Node) -> list[Value] | None:
    """Slice(x, i + a, i + b) on one axis with step 1, `i` a Loop's iteration counter and
    0 <= a < b: the b - a rows from i + a, as a Gather at the run-time indices i + a ...
    i + b - 1. Where ONNX would clamp (rows past the end: fewer rows, a size known only at run
    time) the Gather refuses the index with a KernelError. None for any other Slice."""
    starts, ends = imp.input(node, 1), imp.input(node, 2)
    if starts is None or ends is None or isinstance(starts, Const):
        return None
    first, last = _offset_from_iteration(imp, starts), _offset_from_iteration(imp, ends)
    if first is None or last is None or first[0] is not last[0]:
        return None
    axes_in, steps_in = imp.input(node, 3), imp.input(node, 4)
    if not isinstance(axes_in, Const | None) or not isinstance(steps_in, Const | None):
        return None
    if steps_in is not None and steps_in.array.reshape(-1).tolist() != [1]:
        return None
    data = imp.required(node, 0)
    shape = shape_of(data)
    axis = normalize_axis(
        node, 0 if axes_in is None else int(axes_in.array.reshape(-1)[0]), len(shape)
    )
    start, count = first[1], last[1] - first[1]
    if start < 0 or not 0 < count <= shape[axis]:
        return None
    counter = imp.reshape(first[0], [])
    rows = Const(np.arange(start, start + count, dtype=np.int64))
    indices = imp.emit(graph.AddOp, [counter, rows], [count])
    out_shape = [*shape[:axis], count, *shape[axis + 1 :]]
    return [imp.emit(graph.GatherOp, [data, indices], out_shape, axis=i64_attr(axis))]
