"""convert-graph-to-kernel: bufferize the graph dialect into kernel ops on memrefs.

Every tensor becomes a buffer: function inputs stay arguments, each result the program returns
becomes an output argument the producing kernel writes directly, intermediates become
`memref.alloc`s (placed in the arena later by `plan-memory`), constants become `kernel.weight`s.
Conv and constant-B MatMul weights are packed here, at compile time, into the layout their
kernels read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from xdsl.context import Context
from xdsl.dialects import arith, func, memref, scf
from xdsl.dialects.builtin import (
    ArrayAttr,
    DictionaryAttr,
    IntegerAttr,
    IntegerType,
    MemRefType,
    ModuleOp,
    StringAttr,
    TensorType,
    UnitAttr,
    f32,
    i32,
    i64,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.irdl import IRDLOperation

from ember.core.context import compile_context
from ember.core.size_choices import size_choice
from ember.core.target import Target
from ember.dialects import graph, kernel
from ember.dialects.dtypes import element_type_for, numpy_dtype_for, signless
from ember.dialects.extents import memref_type
from ember.dialects.graph import element_type_of, f32_array, i64_array, int_values, shape_of
from ember.dialects.twins import shared_properties
from ember.dialects.weight_layouts import (
    DEPTHWISE_LAYOUT,
    ISAS,
    Int8Isa,
    QConvGeometry,
    blocked_conv_blocking,
    conv_lanes_blocking,
    conv_layout,
    gemm_blocking,
    int8_isa,
    int8_isas_for,
    is_depthwise,
    pack_conv_lanes_weight,
    pack_conv_weight,
    pack_depthwise_blocked_weight,
    pack_matmul_weight,
    pack_qconv_depthwise_weight,
    pack_qconv_weight,
    pack_recurrent_weight,
    qconv_workspace_words,
)
from ember.dialects.weights import WeightStore
from ember.passes.conversion.elementwise_bodies import BODIES, build_body
from ember.passes.options import TargetPass, check_choice, option_error
from ember.passes.program import ORIGIN, describe_op
from ember.runtime.errors import ModelError, UnsupportedOpError


class ConversionError(ModelError):
    """A graph op that bufferization cannot express as kernels (an ember error: the message
    names the ONNX node the op comes from, when known)."""


def buffer_type(tensor: Attribute) -> MemRefType:
    """The memref of a tensor: unsigned integers become signless (arith only takes those)."""
    return memref_type(signless(element_type_of(tensor)), shape_of(tensor))


def _root(buffer: SSAValue) -> SSAValue:
    """The buffer a chain of kernel.reshape views looks at."""
    while isinstance(buffer.owner, kernel.ReshapeOp):
        buffer = buffer.owner.input
    return buffer


def _epilogue_props(op: Operation) -> dict[str, Attribute]:
    props: dict[str, Attribute] = {}
    for key in ("activation", "activation_params"):
        if (value := op.properties.get(key)) is not None:
            props[key] = value
    return props


def _group_suffix(group: int) -> str:
    """Part of a packed filter's name: one filter array (a shared initializer, or equal
    constants merged by cse) packs differently for convs of other group counts."""
    return f".group{group}" if group != 1 else ""


@dataclass
class _Bufferizer:
    """Rebuilds one graph function as a kernel function, op by op."""

    weights: dict
    target: Target
    isa: Int8Isa  # of the int8 convs
    body: Block
    buffers: dict[SSAValue, SSAValue]
    # Where compute ops go: the entry's block, or the body of an scf op a graph.loop or
    # graph.if becomes. Buffers (allocs) and weights always go to the entry's block, before
    # the scf op, so that plan-memory and place-weights see them all at the top level.
    current: Block | None = None

    def emit(self, op: Operation) -> Operation:
        if self.current is None or isinstance(op, memref.AllocOp | kernel.WeightOp):
            self.body.add_op(op)
        else:
            self.current.add_op(op)
        return op

    def convert(self, graph_op: Operation) -> None:
        """Convert one graph op; the kernel ops it becomes carry its `ember.origin`."""
        block = self.current or self.body
        converted_from = block.last_op
        try:
            self.converter(graph_op)(graph_op)
        except ConversionError as error:
            raise ConversionError(f"{describe_op(graph_op)}: {error}") from None
        if ORIGIN in graph_op.attributes:
            # Every kernel op this graph op became names the same ONNX node.
            new_op = block.last_op
            while new_op is not None and new_op is not converted_from:
                if isinstance(new_op, kernel.COMPUTE_OPS):
                    new_op.attributes[ORIGIN] = graph_op.attributes[ORIGIN]
                new_op = new_op.prev_op

    def alloc(self, tensor: SSAValue) -> SSAValue:
        element = signless(element_type_of(tensor))
        return self.emit(memref.AllocOp.get(element, 64, shape_of(tensor))).results[0]

    def weight(self, name: str, array: np.ndarray) -> SSAValue:
        mtype = MemRefType(signless(element_type_for(array.dtype)), array.shape)
        return self.emit(kernel.WeightOp(name, mtype)).results[0]

    def buffer(self, value: SSAValue) -> SSAValue:
        return self.buffers[value]

    def constant_array(self, value: SSAValue) -> tuple[str, np.ndarray] | None:
        owner = value.owner
        if isinstance(owner, graph.ConstantOp):
            return owner.ref.data, self.weights[owner.ref.data]
        return None

    def packed_constant(
        self, value: SSAValue, pack: Callable[[np.ndarray], tuple[np.ndarray, str]]
    ) -> tuple[SSAValue, str] | None:
        """A constant operand packed at compile time (once per layout), and its layout; None
        when the operand is computed at run time."""
        const = self.constant_array(value)
        if const is None:
            return None
        name, array = const
        # float64 keeps its type (matmul has a float64 kernel); the rest packs as float32.
        packed, layout = pack(array if array.dtype == np.float64 else array.astype(np.float32))
        packed_name = f"{name}.packed.{layout}"
        if packed_name not in self.weights:
            self.weights[packed_name] = packed
        return self.weight(packed_name, self.weights[packed_name]), layout

    def optional(self, value: SSAValue | None) -> list[SSAValue]:
        return [] if value is None else [self.buffer(value)]

    # -- per-op conversions ---------------------------------------------------------------------
    def constant(self, op: graph.ConstantOp) -> None:
        self.buffers[op.output] = self.emit(
            kernel.WeightOp(op.ref.data, buffer_type(op.output.type))
        ).results[0]

    def elementwise(self, op: Operation) -> None:
        inexact = graph.integer_only_reason(op)
        if inexact is not None:  # quantize-ops did not take it onto the integer kernel
            op_type, node_name, opset, detail = inexact
            raise UnsupportedOpError(
                op_type,
                node_name,
                opset,
                f"{detail}; the integer kernel takes MatMulInteger only with a constant int8 B "
                "whose zero point is 0 and an 8-bit A with one zero point",
            )
        operands = list(op.operands)
        out_type = signless(element_type_of(op.results[0]))
        block = Block(arg_types=[signless(element_type_of(v)) for v in operands])
        ops: list[Operation] = []
        result = build_body(op, list(block.args), out_type, ops)
        block.add_ops([*ops, kernel.YieldOp(operands=[result])])
        out = self.alloc(op.results[0])
        self.emit(kernel.ElementwiseOp([self.buffer(v) for v in operands], out, Region(block)))
        self.buffers[op.results[0]] = out

    def expand(self, op: graph.ExpandOp) -> None:
        # An elementwise kernel whose body is its argument: the broadcast is the whole work.
        source = self.buffer(op.input)
        block = Block(arg_types=[source.type.get_element_type()])  # type: ignore[attr-defined]
        block.add_op(kernel.YieldOp(operands=[block.args[0]]))
        out = self.alloc(op.output)
        self.emit(kernel.ElementwiseOp([source], out, Region(block)))
        self.buffers[op.output] = out

    def view(self, buffer: SSAValue, shape: list[int]) -> SSAValue:
        element = buffer.type.get_element_type()  # type: ignore[attr-defined]
        return self.emit(
            kernel.ReshapeOp(operands=[buffer], result_types=[MemRefType(element, shape)])
        ).results[0]

    def pack_conv_weight_at_run_time(self, weight: SSAValue, group: int) -> tuple[SSAValue, str]:
        """Copy kernels that lay out a weight computed at run time as pack_conv_weight does."""
        cout, cin_g, kh, kw = shape_of(weight)
        if element_type_of(weight) != f32:
            raise ConversionError(f"weight of type {element_type_of(weight)}")
        w = self.buffer(weight)
        if is_depthwise(shape_of(weight), group):
            return self.view(w, [cout, kh * kw]), DEPTHWISE_LAYOUT
        mr = gemm_blocking(self.target).mr
        m, k = cout // group, cin_g * kh * kw
        tiles = -(-m // mr)
        rows = self.view(w, [group, m, k])
        if tiles * mr != m:  # zero rows complete the last panel
            zeros = np.zeros((group, tiles * mr - m, k), np.float32)
            name = f"conv.panel_padding.{group}x{tiles * mr - m}x{k}"
            if name not in self.weights:
                self.weights[name] = zeros
            padded = self.emit(memref.AllocOp.get(f32, 64, [group, tiles * mr, k])).results[0]
            self.emit(
                kernel.ConcatOp(
                    operands=[[rows, self.weight(name, zeros)], padded],
                    properties={"axis": IntegerAttr(1, i64)},
                )
            )
            rows = padded
        packed = self.emit(memref.AllocOp.get(f32, 64, [group, tiles, k, mr])).results[0]
        self.emit(
            kernel.TransposeOp(
                operands=[self.view(rows, [group, tiles, mr, k]), packed],
                properties={"perm": i64_array([0, 1, 3, 2])},
            )
        )
        return packed, conv_layout(mr)

    def conv(self, op: graph.ConvOp) -> None:
        group = op.group.value.data
        const = self.constant_array(op.weight)
        if const is None and len(shape_of(op.input)) == 5:
            raise ConversionError(
                "a channel-blocked conv needs a constant weight (packed at compile time)"
            )
        if const is None:
            weight, layout = self.pack_conv_weight_at_run_time(op.weight, group)
        else:
            name, array = const
            blocked = len(shape_of(op.input)) == 5
            cout, cin_g, kh, kw = shape_of(op.weight)
            out_hw: tuple[int, int] = tuple(shape_of(op.output)[2:4])  # type: ignore[assignment]
            strides: tuple[int, int] = tuple(int_values(op.strides))  # type: ignore[assignment]
            if blocked:  # the kernel's vectors are the IR's channel blocks
                target = replace(self.target, vector_width=shape_of(op.input)[4])
                lanes = size_choice(
                    f"the blocked conv of '{name}'",
                    lambda: blocked_conv_blocking(
                        cin_g * group, cout, group, out_hw, (kh, kw), target, strides
                    ),
                )
            else:
                lanes = size_choice(
                    f"the conv of '{name}'",
                    lambda: conv_lanes_blocking(
                        cin_g, cout, group, out_hw, (kh, kw), strides, self.target
                    ),
                )
            if blocked and is_depthwise(shape_of(op.weight), group):
                packed, layout = pack_depthwise_blocked_weight(array, shape_of(op.input)[4])
            elif lanes is not None:
                packed, layout = pack_conv_lanes_weight(array, lanes.nr)
            elif blocked:
                raise ConversionError(
                    f"a channel-blocked conv {shape_of(op.input)} -> {shape_of(op.output)} "
                    f"with weight {shape_of(op.weight)} has no blocked kernel for "
                    f"blocks of {shape_of(op.input)[4]} channels"
                )
            else:
                packed, layout = pack_conv_weight(array.astype(np.float32), group, self.target)
            packed_name = f"{name}.packed.{layout}{_group_suffix(group)}"
            if packed_name not in self.weights:
                self.weights[packed_name] = packed
            weight = self.weight(packed_name, self.weights[packed_name])
        out = self.alloc(op.output)
        w = shape_of(op.weight)
        self.emit(
            kernel.Conv2dOp(
                operands=[
                    self.buffer(op.input),
                    weight,
                    self.optional(op.bias),
                    self.optional(op.residual),
                    out,
                ],
                properties={
                    "kernel_shape": i64_array(w[2:]),
                    "strides": op.strides,
                    "pads": op.pads,
                    "dilations": op.dilations,
                    "group": op.group,
                    "weight_layout": StringAttr(layout),
                    **_epilogue_props(op),
                },
            )
        )
        self.buffers[op.output] = out

    def reorder(self, op: graph.ToBlockedOp | graph.FromBlockedOp) -> None:
        """NCHW <-> [N, C/c, H, W, c]: one transpose of [N, C/c, c, H*W] views."""
        nchw, blocked = shape_of(op.input), shape_of(op.output)
        if isinstance(op, graph.FromBlockedOp):
            nchw, blocked = blocked, nchw
        n, blocks, h, w, c = blocked
        out = self.alloc(op.output)
        planes, pixels = [n, blocks, c, h * w], [n, blocks, h * w, c]
        src, dst = (planes, pixels) if isinstance(op, graph.ToBlockedOp) else (pixels, planes)
        self.emit(
            kernel.TransposeOp(
                operands=[self.view(self.buffer(op.input), src), self.view(out, dst)],
                properties={"perm": i64_array([0, 1, 3, 2])},
            )
        )
        self.buffers[op.output] = out

    def matmul(self, op: graph.MatMulOp) -> None:
        packed = None
        if len(shape_of(op.b)) == 2:
            packed = self.packed_constant(op.b, lambda a: pack_matmul_weight(a, self.target))
        b, layout = packed or (self.buffer(op.b), "plain")
        out = self.alloc(op.output)
        self.emit(
            kernel.MatMulOp(
                operands=[
                    self.buffer(op.a),
                    b,
                    self.optional(op.bias),
                    self.optional(op.residual),
                    out,
                ],
                properties={"weight_layout": StringAttr(layout), **_epilogue_props(op)},
            )
        )
        self.buffers[op.output] = out

    def recurrent(self, op: graph.RecurrentOp) -> None:
        packed = self.packed_constant(op.r, lambda a: pack_recurrent_weight(a, self.target))
        r, layout = packed or (self.buffer(op.r), "plain")
        scratch = kernel.recurrent_workspace_shape(op.cell.data, *shape_of(op.y_h))
        workspace = self.emit(memref.AllocOp.get(f32, 64, list(scratch))).results[0]
        results = [op.y, op.y_h, *([op.y_c] if op.y_c is not None else [])]
        outputs = [self.alloc(v) for v in results]
        self.emit(
            kernel.RecurrentOp(
                operands=[
                    self.buffer(op.x_proj),
                    r,
                    self.optional(op.recurrent_bias),
                    self.optional(op.sequence_lens),
                    self.optional(op.initial_h),
                    self.optional(op.initial_c),
                    self.optional(op.peepholes),
                    workspace,
                    outputs[0],
                    outputs[1],
                    outputs[2:],
                ],
                properties={
                    **shared_properties(op, kernel.RecurrentOp),
                    "weight_layout": StringAttr(layout),
                },
            )
        )
        for value, out in zip(results, outputs, strict=True):
            self.buffers[value] = out

    def non_max_suppression(self, op: graph.NonMaxSuppressionOp) -> None:
        # One class's candidates (a heap of box indices): the kernel's only scratch.
        boxes = shape_of(op.boxes)[1]
        workspace = self.emit(memref.AllocOp.get(i64, 64, [boxes])).results[0]
        out = self.alloc(op.output)
        self.emit(
            kernel.NonMaxSuppressionOp(
                operands=[self.buffer(op.boxes), self.buffer(op.scores), workspace, out],
                properties=shared_properties(op, kernel.NonMaxSuppressionOp),
            )
        )
        self.buffers[op.output] = out

    def qconv(self, op: graph.QConvOp) -> None:
        """Pack the int8 filter for the target's int8 instructions, fold the input zero
        point's correction (-zero_point * the filter's row sums) into the int32 offsets and
        the output zero point into the float bias."""
        weight, offset = self.constant_array(op.weight), self.constant_array(op.offset)
        if weight is None or offset is None:
            raise ConversionError("graph.qconv needs a constant weight and offset")
        (w_name, w), (o_name, given_offset) = weight, offset
        isa = self.isa
        group = op.group_count
        n, c, h, width = shape_of(op.input)
        if group > 1 and group == c == w.shape[0]:  # depthwise: its own kernel
            packed, layout = pack_qconv_depthwise_weight(w, isa)
        else:  # the groups one after another
            packed, layout = pack_qconv_weight(w, isa, group)
        packed_name = f"{w_name}.packed.{layout}{_group_suffix(group)}"
        if packed_name not in self.weights:
            self.weights[packed_name] = packed
        # int8 inputs run shifted to uint8 (x + 128), and so does their zero point.
        input_signed = numpy_dtype_for(element_type_of(op.input)) == np.int8
        zero_point = op.input_zero_point.value.data + (128 if input_signed else 0)
        row_sums = w.reshape(w.shape[0], -1).astype(np.int64).sum(axis=1)
        corrected = (given_offset.astype(np.int64) - zero_point * row_sums).astype(np.int32)
        # Named after the filter too: one offset constant may serve filters of other sums.
        corrected_name = f"{o_name}.zero_point_{zero_point}.rows_of.{packed_name}"
        self.weights[corrected_name] = corrected
        kh, kw = shape_of(op.weight)[2:]
        _, cout, oh, ow = shape_of(op.output)
        geometry = QConvGeometry(
            n, c, h, width, cout, oh, ow, kh, kw,
            tuple(op.strides.get_values()), tuple(op.pads.get_values()),
            tuple(op.dilations.get_values()), group,
        )  # fmt: skip
        bias = self.constant_array(op.bias)
        if bias is None:
            raise ConversionError("graph.qconv needs a constant bias")
        output_zero_point = op.output_zero_point.value.data
        biased = (bias[1].astype(np.float64) + output_zero_point).astype(np.float32)
        biased_name = f"{bias[0]}.zero_point_{output_zero_point}"
        self.weights[biased_name] = biased
        words = qconv_workspace_words(geometry, isa)
        workspace = self.emit(memref.AllocOp.get(i32, 64, [words])).results[0]
        out = self.alloc(op.output)

        def i64_attr(value: int) -> IntegerAttr:
            return IntegerAttr(int(value), i64)

        self.emit(
            kernel.QConv2dOp(
                operands=[
                    self.buffer(op.input),
                    self.weight(packed_name, self.weights[packed_name]),
                    self.weight(corrected_name, corrected),
                    self.buffer(op.multiplier),
                    self.weight(biased_name, biased),
                    self.optional(op.residual),
                    workspace,
                    out,
                ],
                properties={
                    "kernel_shape": i64_array([kh, kw]),
                    "strides": op.strides,
                    "pads": op.pads,
                    "dilations": op.dilations,
                    "input_zero_point": i64_attr(zero_point),
                    "input_signed": i64_attr(int(input_signed)),
                    "output_zero_point": op.output_zero_point,
                    "output_min": op.output_min,
                    "output_max": op.output_max,
                    "weight_layout": StringAttr(layout),
                    **self.qconv_residual_params(op),
                    **({"group": i64_attr(group)} if group > 1 else {}),
                },
            )
        )
        self.buffers[op.output] = out

    def qconv_residual_params(self, op: graph.QConvOp) -> dict[str, Attribute]:
        """graph.qconv's residual params, the residual's zero point as the kernel reads it
        (int8 shifted to uint8), and whether it was int8."""
        if op.residual is None or op.residual_params is None:
            return {}
        params = [float(v) for v in op.residual_params.get_values()]
        signed = numpy_dtype_for(element_type_of(op.residual)) == np.int8
        params[2] += 128 if signed else 0
        return {"residual_params": f32_array([*params, float(signed)])}

    def pool(self, op: graph.MaxPoolOp | graph.AveragePoolOp) -> None:
        out = self.alloc(op.output)
        props: dict[str, Attribute] = {
            "kind": StringAttr("max" if isinstance(op, graph.MaxPoolOp) else "avg"),
            "kernel_shape": op.kernel_shape,
            "strides": op.strides,
            "pads": op.pads,
        }
        if isinstance(op, graph.AveragePoolOp) and op.count_include_pad.value.data:
            props["count_include_pad"] = UnitAttr()
        self.emit(kernel.PoolOp(operands=[self.buffer(op.input), out], properties=props))
        self.buffers[op.output] = out

    def reduce(self, op: graph.ReduceOp) -> None:
        in_shape = shape_of(op.input)
        axes = [a % len(in_shape) for a in int_values(op.axes)] or list(range(len(in_shape)))
        kept = tuple(1 if i in axes else d for i, d in enumerate(in_shape))
        element = signless(element_type_of(op.output))
        out = self.emit(memref.AllocOp.get(element, 64, kept)).results[0]
        self.emit(
            kernel.ReduceOp(
                operands=[self.buffer(op.input), out],
                properties={"kind": op.reduction, "axes": i64_array(sorted(axes))},
            )
        )
        if kept != shape_of(op.output):
            out = self.emit(
                kernel.ReshapeOp(operands=[out], result_types=[buffer_type(op.output.type)])
            ).results[0]
        self.buffers[op.output] = out

    def reshape(self, op: graph.ReshapeOp) -> None:
        self.buffers[op.output] = self.emit(
            kernel.ReshapeOp(
                operands=[self.buffer(op.input)], result_types=[buffer_type(op.output.type)]
            )
        ).results[0]

    def concat(self, op: graph.ConcatOp) -> None:
        inputs = [self.buffer(v) for v in op.inputs]
        axis = op.axis.value.data % len(shape_of(op.output))
        out = self.alloc(op.output)
        # A kernel call takes every buffer as an argument: concatenate in groups first when
        # there are more than one call may take.
        group = kernel.MAX_OPERANDS - 1
        while len(inputs) > group:
            inputs = [
                self.concat_into_new(inputs[k : k + group], axis)
                for k in range(0, len(inputs), group)
            ]
        self.emit(kernel.ConcatOp(operands=[inputs, out], properties={"axis": op.axis}))
        self.buffers[op.output] = out

    def concat_into_new(self, inputs: list[SSAValue], axis: int) -> SSAValue:
        if len(inputs) == 1:
            return inputs[0]
        shape = list(shape_of(inputs[0]))
        shape[axis] = sum(shape_of(v)[axis] for v in inputs)
        element = inputs[0].type.get_element_type()  # type: ignore[attr-defined]
        out = self.emit(memref.AllocOp.get(element, 64, shape)).results[0]
        self.emit(
            kernel.ConcatOp(operands=[inputs, out], properties={"axis": IntegerAttr(axis, i64)})
        )
        return out

    def twin(self, kernel_op: type[IRDLOperation]) -> Callable[[IRDLOperation], None]:
        """A graph op whose kernel twin (dialects/twins.py) takes its operands, by name, a
        buffer per result (a graph result is the kernel operand of the same name) and the
        properties both define."""
        kernel_operands = [name for name, _ in kernel_op.get_irdl_definition().operands]

        def convert(op: IRDLOperation) -> None:
            graph_def = type(op).get_irdl_definition()
            properties = shared_properties(op, kernel_op)
            dropped = [n for n, _ in graph_def.operands if n not in kernel_operands] + [
                n for n in op.properties if n not in properties and not n.endswith("SegmentSizes")
            ]
            if dropped:  # the kernel would compute something else: never convert silently
                raise ConversionError(f"{kernel_op.name} takes no {', '.join(dropped)}")
            results = [name for name, _ in graph_def.results]
            outputs = {
                name: self.alloc(value)
                for name in results
                if (value := getattr(op, name)) is not None  # an absent optional result
            }
            operands: list[SSAValue | list[SSAValue]] = []
            for name in kernel_operands:
                if name in outputs:
                    operands.append(outputs[name])
                    continue
                value = getattr(op, name)
                if isinstance(value, SSAValue):
                    operands.append(self.buffer(value))
                else:  # an absent optional operand (None) or a variadic one
                    operands.append([self.buffer(v) for v in value or ()])
            self.emit(kernel_op(operands=operands, properties=properties))
            for name, out in outputs.items():
                self.buffers[getattr(op, name)] = out

        return convert

    # -- control flow: graph.loop and graph.if become scf ops in the entry --------------------
    def region_body(self, graph_block: Block, args: Sequence[SSAValue], block: Block) -> list:
        """Bufferize a graph body into `block` (its arguments bound to `args`); returns the
        buffers of the values it yields."""
        for arg, buffer in zip(graph_block.args, args, strict=True):
            self.buffers[arg] = buffer
        outer, self.current = self.current, block
        try:
            for graph_op in graph_block.ops:
                if isinstance(graph_op, graph.YieldOp):
                    return [self.buffer(v) for v in graph_op.values]
                self.convert(graph_op)
        finally:
            self.current = outer
        raise ConversionError("a control-flow body without graph.yield")

    def copy_all(self, sources: Sequence[SSAValue], targets: Sequence[SSAValue]) -> None:
        """targets[k] = sources[k] for all k at once: a source that is (a view of) another
        target is staged through a copy first, so no copy reads an overwritten buffer."""
        roots = {_root(t) for t in targets}
        staged = []
        for source, target in zip(sources, targets, strict=True):
            if _root(source) in roots and _root(source) is not _root(target):
                element = source.type.get_element_type()  # type: ignore[attr-defined]
                copy = self.emit(memref.AllocOp.get(element, 64, shape_of(source))).results[0]
                self.emit(kernel.CopyOp(operands=[source, copy]))
                source = copy
            staged.append(source)
        for source, target in zip(staged, targets, strict=True):
            if _root(source) is not _root(target):
                self.emit(kernel.CopyOp(operands=[source, target]))

    def constant_true(self, value: SSAValue) -> bool:
        """Whether `value` is a constant whose every element is true (a body condition that
        never ends its loop: nothing to copy back)."""
        const = self.constant_array(value)
        return const is not None and bool(np.all(const[1]))

    def scalar_load(self, buffer: SSAValue, block: Block) -> SSAValue:
        load = memref.LoadOp.get(buffer, [])
        block.add_op(load)
        return load.res

    def loop(self, op: graph.LoopOp) -> None:
        """`i = 0; cond = initial; while (i < trip_count && cond) { body; i += 1 }` as one
        scf.while; the carried values live in their result buffers (copied back at the end of
        each iteration), each scan value is copied into its result at row i."""
        n = op.num_carried
        iteration = self.alloc(op.body.block.args[0])
        cond = self.alloc(op.body.block.args[1])
        carried = [self.alloc(r) for r in op.outputs[:n]]
        scans = [self.alloc(r) for r in op.outputs[n:]]
        self.copy_all([self.buffer(v) for v in op.inits], carried)
        block = self.current or self.body
        if op.cond is not None:
            self.emit(kernel.CopyOp(operands=[self.buffer(op.cond), cond]))
        else:
            true = arith.ConstantOp(IntegerAttr(1, IntegerType(1)))
            block.add_ops([true, memref.StoreOp.get(true.result, cond, [])])
        bound = (
            None if op.trip_count is None else self.scalar_load(self.buffer(op.trip_count), block)
        )
        zero = arith.ConstantOp(IntegerAttr(0, i64))
        block.add_op(zero)

        before = Block(arg_types=[i64])
        go = self.scalar_load(cond, before)
        if bound is not None:
            in_range = arith.CmpiOp(before.args[0], bound, "slt")
            both = arith.AndIOp(go, in_range.result)
            before.add_ops([in_range, both])
            go = both.result
        before.add_op(scf.ConditionOp(go, before.args[0]))

        after = Block(arg_types=[i64])
        after.add_op(memref.StoreOp.get(after.args[0], iteration, []))
        args = [iteration, cond, *carried, *(self.buffer(v) for v in op.captures)]
        yielded = self.region_body(op.body.block, args, after)
        outer, self.current = self.current, after
        try:
            for value, scan in zip(yielded[1 + n :], scans, strict=True):
                self.emit(kernel.InsertSliceOp(operands=[value, iteration, scan]))
            if self.constant_true(op.body.block.last_op.values[0]):  # type: ignore[union-attr]
                self.copy_all(yielded[1 : 1 + n], carried)
            else:
                self.copy_all(yielded[: 1 + n], [cond, *carried])
        finally:
            self.current = outer
        one = arith.ConstantOp(IntegerAttr(1, i64))
        next_iteration = arith.AddiOp(after.args[0], one.result)
        after.add_ops([one, next_iteration, scf.YieldOp(next_iteration.result)])
        block.add_op(scf.WhileOp([zero.result], [i64], Region(before), Region(after)))
        for result, buffer in zip(op.outputs, [*carried, *scans], strict=True):
            self.buffers[result] = buffer

    def if_(self, op: graph.IfOp) -> None:
        """scf.if on the condition; each branch's kernels write the If's result buffers."""
        results = [self.alloc(r) for r in op.outputs]
        captures = [self.buffer(v) for v in op.captures]
        block = self.current or self.body
        cond = self.scalar_load(self.buffer(op.cond), block)
        branches = []
        for region in (op.then_region, op.else_region):
            branch = Block()
            yielded = self.region_body(region.block, captures, branch)
            outer, self.current = self.current, branch
            try:
                self.copy_all(yielded, results)
            finally:
                self.current = outer
            branch.add_op(scf.YieldOp())
            branches.append(Region(branch))
        block.add_op(scf.IfOp(cond, [], branches[0], branches[1]))
        for result, buffer in zip(op.outputs, results, strict=True):
            self.buffers[result] = buffer

    def converter(self, op: Operation) -> Callable[[Operation], None]:
        if type(op) in BODIES:
            return self.elementwise
        table: dict[type[Operation], Callable] = {
            graph.ConstantOp: self.constant,
            graph.ConvOp: self.conv,
            graph.MatMulOp: self.matmul,
            graph.ToBlockedOp: self.reorder,
            graph.FromBlockedOp: self.reorder,
            graph.MaxPoolOp: self.pool,
            graph.AveragePoolOp: self.pool,
            graph.ReduceOp: self.reduce,
            graph.ReshapeOp: self.reshape,
            graph.ConcatOp: self.concat,
            graph.ExpandOp: self.expand,
            graph.RecurrentOp: self.recurrent,
            graph.QConvOp: self.qconv,
            # control flow
            graph.LoopOp: self.loop,
            graph.IfOp: self.if_,
            # data-dependent output sizes
            graph.NonMaxSuppressionOp: self.non_max_suppression,
        }
        if type(op) in table:
            return table[type(op)]
        twin = kernel.twin_of(type(op))
        if twin is not None:
            return self.twin(twin)
        raise ConversionError("no kernel form; run the graph pipeline (canonicalize) first")


def _write_results_in_place(body: Block, results: list[SSAValue], outputs: list[SSAValue]) -> None:
    """Make each returned buffer the output argument itself, or copy into it when it cannot be.

    A value returned more than once is written in place into its first output and copied from
    there into the others. A returned reshape of an intermediate (Tile, Flatten of a computed
    tensor) makes that intermediate a view of the output argument: its producer writes the
    output directly; the intermediate, if also returned, is then copied out of that view."""
    placed: dict[SSAValue, SSAValue] = {}
    # Buffers replaced while placing earlier results (an alloc by an output, or by a view of
    # one): later results that name them read the replacement.
    replaced: dict[SSAValue, SSAValue] = {}
    for result, out in zip(results, outputs, strict=True):
        result = replaced.get(result, result)
        owner = result.owner
        if result in placed:
            body.add_op(kernel.CopyOp(operands=[placed[result], out]))
        elif isinstance(owner, memref.AllocOp):
            placed[result] = out
            replaced[result] = out
            result.replace_all_uses_with(out)
            owner.detach()
            owner.erase()
        elif isinstance(owner, kernel.ReshapeOp) and isinstance(
            alloc := owner.input.owner, memref.AllocOp
        ):
            placed[result] = out
            view = kernel.ReshapeOp(operands=[out], result_types=[owner.input.type])
            body.insert_op_before(view, alloc)
            replaced[owner.input] = view.output
            owner.input.replace_all_uses_with(view.output)
            alloc.detach()
            alloc.erase()
        else:
            body.add_op(kernel.CopyOp(operands=[result, out]))


@dataclass(frozen=True)
class ConvertGraphToKernel(TargetPass):
    """Rewrites graph ops on tensors into kernel ops on buffers (destination-passing style)."""

    name = "convert-graph-to-kernel"

    # The instruction set int8 convs are packed for: the target's own (unset) or a narrower
    # one it also runs (weight_layouts.int8_isas_for).
    int8_isa: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "int8_isa", tuple(ISAS))

    def check_target(self, target: Target) -> None:
        runnable = int8_isas_for(target)
        if self.int8_isa is not None and self.int8_isa not in runnable:
            raise option_error(
                self,
                "int8_isa",
                f"the target ({target.cpu}) runs int8 convs with {', '.join(runnable)}",
            )

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        weights, target = compile_context(ctx, self.name).weights, self.target(ctx)
        isa = int8_isa(target) if self.int8_isa is None else ISAS[self.int8_isa]
        for fn in [f for f in op.ops if isinstance(f, func.FuncOp)]:
            if any(isinstance(t, TensorType) for t in fn.function_type.inputs.data) or any(
                isinstance(t, TensorType) for t in fn.function_type.outputs.data
            ):
                self._convert_function(weights, target, isa, fn)

    def _convert_function(
        self, weights: WeightStore, target: Target, isa: Int8Isa, fn: func.FuncOp
    ) -> None:
        inputs = [buffer_type(t) for t in fn.function_type.inputs.data]
        outputs = [buffer_type(t) for t in fn.function_type.outputs.data]
        body = Block(arg_types=[*inputs, *outputs])
        old = fn.body.block
        state = _Bufferizer(weights, target, isa, body, dict(zip(old.args, body.args)))
        returned: list[SSAValue] = []
        for graph_op in old.ops:
            if isinstance(graph_op, func.ReturnOp):
                returned = [state.buffer(v) for v in graph_op.arguments]
                continue
            state.convert(graph_op)
        _write_results_in_place(body, returned, list(body.args[len(inputs) :]))
        body.add_op(func.ReturnOp())
        # Weights consumed only in packed form (conv, constant-B matmul) leave their plain
        # kernel.weight unused: drop it so the blob holds each weight once.
        for op in [o for o in body.ops if isinstance(o, kernel.WeightOp) and not o.output.uses]:
            body.erase_op(op)

        new_fn = func.FuncOp(fn.sym_name.data, (inputs + outputs, []), Region(body))
        new_fn.attributes.update(fn.attributes)
        arg_attrs = list(fn.arg_attrs.data) if fn.arg_attrs else [DictionaryAttr({})] * len(inputs)
        res_attrs = list(fn.res_attrs.data) if fn.res_attrs else [DictionaryAttr({})] * len(outputs)
        new_fn.arg_attrs = ArrayAttr(arg_attrs + res_attrs)
        parent = fn.parent_block()
        assert parent is not None
        parent.insert_op_before(new_fn, fn)
        fn.detach()
        fn.erase()
