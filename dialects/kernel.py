"""The `kernel` dialect: one op per (fused) kernel, on buffers, in destination-passing style.

Every op reads its input memrefs and writes its `output` memref; none has results except
`kernel.weight` and `kernel.reshape`, which only name memory. Buffers for intermediates are
`memref.alloc`s until the memory planner places them in the arena.

Each op lowers to one kernel function in scf/arith/memref/vector
(`passes/conversion/kernel_to_loops/`); identical ops (same types and properties) share one
function. Conv and MatMul carry the epilogue (bias -> residual -> activation) fused into them.
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar

from xdsl.dialects.builtin import (
    I64,
    DenseArrayBase,
    IntegerAttr,
    MemRefType,
    StringAttr,
    UnitAttr,
)
from xdsl.ir import Dialect, Operation, Region
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    lazy_traits_def,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.traits import HasParent, IsTerminator, NoMemoryEffect
from xdsl.utils.exceptions import VerifyException

from ember.dialects import graph
from ember.dialects.assembly import TypeIfPresent
from ember.dialects.graph import (
    RECURRENT_GATES,
    broadcasts_to,
    shape_of,
    verify_enum,
    verify_epilogue,
)
from ember.dialects.twins import buffer_format, spec_of
from ember.dialects.weights import WeightRef


class _InOutOp(IRDLOperation):
    """A kernel that reads `input` and writes `output`."""

    input = operand_def(MemRefType)
    output = operand_def(MemRefType)
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = buffer_format("input")


class _DataIndicesOp(IRDLOperation):
    """A kernel that reads `data` at `indices` and writes `output`."""

    data = operand_def(MemRefType)
    indices = operand_def(MemRefType)
    output = operand_def(MemRefType)
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = buffer_format("data", "indices")


class _ScatterOp(IRDLOperation):
    """A kernel that writes `data` with `updates` at `indices` into `output`."""

    data = operand_def(MemRefType)
    indices = operand_def(MemRefType)
    updates = operand_def(MemRefType)
    output = operand_def(MemRefType)
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = buffer_format("data", "indices", "updates")


@irdl_op_definition
class WeightOp(WeightRef, IRDLOperation):
    """A (pre-packed) weight buffer: `ref` names an entry of the WeightStore."""

    name = "kernel.weight"
    output = result_def(MemRefType)
    traits = traits_def(NoMemoryEffect())


@irdl_op_definition
class ReshapeOp(IRDLOperation):
    """A view of the same bytes with another static shape (no copy)."""

    name = "kernel.reshape"
    input = operand_def(MemRefType)
    output = result_def(MemRefType)
    traits = traits_def(NoMemoryEffect())
    assembly_format = "$input attr-dict `:` type($input) `to` type($output)"

    def verify_(self) -> None:
        if math.prod(shape_of(self.input)) != math.prod(shape_of(self.output)):
            raise VerifyException("kernel.reshape: element count changes")


@irdl_op_definition
class Conv2dOp(IRDLOperation):
    """NCHW convolution, or channel-blocked ([N, C/c, H, W, c] input, output and residual: the
    blocked-layout pass); `weight` is packed in the layout named by `weight_layout`."""

    name = "kernel.conv2d"
    input = operand_def(MemRefType)
    weight = operand_def(MemRefType)
    bias = opt_operand_def(MemRefType)
    residual = opt_operand_def(MemRefType)
    output = operand_def(MemRefType)
    kernel_shape = prop_def(DenseArrayBase)  # [kh, kw]
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)  # [top, left, bottom, right]
    dilations = prop_def(DenseArrayBase)
    group = prop_def(IntegerAttr[I64])
    weight_layout = prop_def(StringAttr)
    activation = opt_prop_def(StringAttr)
    activation_params = opt_prop_def(DenseArrayBase)
    irdl_options = (ParsePropInAttrDict(), AttrSizedOperandSegments(as_property=True))
    custom_directives = (TypeIfPresent,)
    assembly_format = (
        "$input `,` $weight (`bias` $bias^)? (`residual` $residual^)? `->` $output attr-dict "
        "`:` type($input) `,` type($weight) custom<TypeIfPresent>(ref($bias), type($bias)) "
        "custom<TypeIfPresent>(ref($residual), type($residual)) "
        "`->` type($output)"
    )

    def verify_(self) -> None:
        ranks = (len(shape_of(self.input)), len(shape_of(self.output)))
        if ranks not in ((4, 4), (5, 5)):
            raise VerifyException(
                "kernel.conv2d: input and output must be NCHW, or both channel-blocked "
                f"[N, C/c, H, W, c]; got ranks {ranks}"
            )
        verify_epilogue(self)


@irdl_op_definition
class MatMulOp(IRDLOperation):
    """out[..., M, N] = a[..., M, K] @ b (+ bias[N]) (+ residual), then activation.

    `weight_layout` is "plain" when `b` is an ordinary [..., K, N] buffer, or names the
    packed layout of a constant `b`.
    """

    name = "kernel.matmul"
    a = operand_def(MemRefType)
    b = operand_def(MemRefType)
    bias = opt_operand_def(MemRefType)
    residual = opt_operand_def(MemRefType)
    output = operand_def(MemRefType)
    weight_layout = prop_def(StringAttr)
    activation = opt_prop_def(StringAttr)
    activation_params = opt_prop_def(DenseArrayBase)
    irdl_options = (ParsePropInAttrDict(), AttrSizedOperandSegments(as_property=True))
    custom_directives = (TypeIfPresent,)
    assembly_format = (
        "$a `,` $b (`bias` $bias^)? (`residual` $residual^)? `->` $output attr-dict "
        "`:` type($a) `,` type($b) custom<TypeIfPresent>(ref($bias), type($bias)) "
        "custom<TypeIfPresent>(ref($residual), type($residual)) "
        "`->` type($output)"
    )

    def verify_(self) -> None:
        if len(shape_of(self.a)) < 2 or len(shape_of(self.output)) < 2:
            raise VerifyException("kernel.matmul: a and output must have rank >= 2")
        if shape_of(self.a)[-2] != shape_of(self.output)[-2]:
            raise VerifyException("kernel.matmul: rows of a != rows of output")
        verify_epilogue(self)


@irdl_op_definition
class PoolOp(_InOutOp):
    """2-D max or average pooling over NCHW (`kind` = "max" | "avg")."""

    name = "kernel.pool"
    KINDS: ClassVar[tuple[str, ...]] = ("max", "avg")
    kind = prop_def(StringAttr)
    kernel_shape = prop_def(DenseArrayBase)
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)
    count_include_pad = opt_prop_def(UnitAttr)

    def verify_(self) -> None:
        verify_enum(self, "kind", self.KINDS)


@irdl_op_definition
class ReduceOp(_InOutOp):
    """Reduce `axes` of input into output (which keeps the reduced dims as size 1)."""

    name = "kernel.reduce"
    kind = prop_def(StringAttr)  # graph.ReduceOp.KINDS: sum | mean | max | min | prod
    axes = prop_def(DenseArrayBase)

    def verify_(self) -> None:
        verify_enum(self, "kind", graph.ReduceOp.KINDS)


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Terminates a kernel.elementwise body with the computed scalar."""

    name = "kernel.yield"
    value = operand_def()
    traits = lazy_traits_def(lambda: (IsTerminator(), HasParent(ElementwiseOp)))
    assembly_format = "$value attr-dict `:` type($value)"


# Most buffers one kernel op may take: each becomes an argument of its function's call, and
# LLVM's instruction selector asserts (aborting the process) on a call of more than 65535
# operands. Wider concats are split into groups, fusion stops short of it.
MAX_OPERANDS = 1024


@irdl_op_definition
class ElementwiseOp(IRDLOperation):
    """output[i] = body(inputs[i]...) with numpy broadcasting of each input to output.

    The body is a single block of scalar arith/math ops; its arguments are one element of
    each input. Chains of elementwise graph ops fuse into one body.
    """

    name = "kernel.elementwise"
    inputs = var_operand_def(MemRefType)
    output = operand_def(MemRefType)
    body = region_def("single_block")
    irdl_options = (AttrSizedOperandSegments(as_property=True),)
    assembly_format = (
        "`(` $inputs `)` `->` $output attr-dict `:` `(` type($inputs) `)` `->` type($output) $body"
    )

    def __init__(self, inputs: list, output, body: Region):  # type: ignore[no-untyped-def]
        super().__init__(operands=[inputs, output], regions=[body])

    def verify_(self) -> None:
        out = shape_of(self.output)
        block = self.body.block
        if len(block.args) != len(self.inputs):
            raise VerifyException("kernel.elementwise: one block argument per input expected")
        for operand, arg in zip(self.inputs, block.args, strict=True):
            if not broadcasts_to(shape_of(operand), out):
                raise VerifyException(
                    f"kernel.elementwise: input {shape_of(operand)} does not broadcast to {out}"
                )
            if arg.type != operand.type.get_element_type():  # type: ignore[attr-defined]
                raise VerifyException("kernel.elementwise: block argument type mismatch")


@irdl_op_definition
class SoftmaxOp(graph.SoftmaxSpec, _InOutOp):
    name = "kernel.softmax"


@irdl_op_definition
class LayerNormOp(graph.LayerNormSpec, IRDLOperation):
    name = "kernel.layer_norm"
    input = operand_def(MemRefType)
    scale = operand_def(MemRefType)
    bias = opt_operand_def(MemRefType)
    output = operand_def(MemRefType)
    irdl_options = (ParsePropInAttrDict(), AttrSizedOperandSegments(as_property=True))
    assembly_format = (
        "$input `,` $scale (`bias` $bias^)? `->` $output attr-dict `:` type($input) `,` "
        "type($scale) (`,` type($bias)^)? `->` type($output)"
    )


@irdl_op_definition
class LRNOp(graph.LRNSpec, _InOutOp):
    name = "kernel.lrn"


@irdl_op_definition
class TransposeOp(graph.TransposeSpec, _InOutOp):
    name = "kernel.transpose"


@irdl_op_definition
class ConcatOp(graph.ConcatSpec, IRDLOperation):
    name = "kernel.concat"
    inputs = var_operand_def(MemRefType)
    output = operand_def(MemRefType)
    irdl_options = (ParsePropInAttrDict(), AttrSizedOperandSegments(as_property=True))
    assembly_format = (
        "`(` $inputs `)` `->` $output attr-dict `:` `(` type($inputs) `)` `->` type($output)"
    )


@irdl_op_definition
class GatherOp(graph.GatherSpec, _DataIndicesOp):
    name = "kernel.gather"


@irdl_op_definition
class CopyOp(IRDLOperation):
    name = "kernel.copy"
    input = operand_def(MemRefType)
    output = operand_def(MemRefType)
    assembly_format = buffer_format("input")


@irdl_op_definition
class SliceOp(graph.SliceSpec, _InOutOp):
    """output[i] = input[starts + i * steps] per axis (strided box copy)."""

    name = "kernel.slice"


@irdl_op_definition
class ArgReduceOp(graph.ArgReduceSpec, _InOutOp):
    """Index (i64) of the first (or last) max/min along `axis`; output keeps the axis as 1."""

    name = "kernel.arg_reduce"


@irdl_op_definition
class CumSumOp(graph.CumSumSpec, _InOutOp):
    """Running sum, or product, along `axis` (exclusive: shifted by one; reverse: from the end)."""

    name = "kernel.cumsum"


@irdl_op_definition
class GatherElementsOp(graph.GatherElementsSpec, _DataIndicesOp):
    """See graph.gather_elements."""

    name = "kernel.gather_elements"


@irdl_op_definition
class OneHotOp(graph.OneHotSpec, IRDLOperation):
    """See graph.one_hot."""

    name = "kernel.one_hot"
    indices = operand_def(MemRefType)
    values = operand_def(MemRefType)
    output = operand_def(MemRefType)
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = buffer_format("indices", "values")


@irdl_op_definition
class RangeOp(graph.RangeSpec, IRDLOperation):
    """See graph.range."""

    name = "kernel.range"
    start = operand_def(MemRefType)
    delta = operand_def(MemRefType)
    output = operand_def(MemRefType)
    assembly_format = buffer_format("start", "delta")


@irdl_op_definition
class ScatterElementsOp(graph.ScatterElementsSpec, _ScatterOp):
    """See graph.scatter_elements."""

    name = "kernel.scatter_elements"


@irdl_op_definition
class TopKOp(graph.TopKSpec, _InOutOp):
    """See graph.top_k: output holds the selected indices (i64)."""

    name = "kernel.top_k"


@irdl_op_definition
class GatherNDOp(graph.GatherNDSpec, _DataIndicesOp):
    """See graph.gather_nd."""

    name = "kernel.gather_nd"


@irdl_op_definition
class ScatterNDOp(graph.ScatterNDSpec, _ScatterOp):
    """See graph.scatter_nd."""

    name = "kernel.scatter_nd"


def recurrent_workspace_shape(cell: str, dirs: int, batch: int, hidden: int) -> tuple[int, ...]:
    """kernel.recurrent's scratch: one step's gate pre-activations per direction, plus GRU's
    r * H_{t-1}."""
    return (dirs, batch, (RECURRENT_GATES[cell] + (cell == "gru")) * hidden)


@irdl_op_definition
class RecurrentOp(graph.RecurrentSpec, IRDLOperation):
    """See graph.recurrent. Writes y, y_h and y_c (LSTM); `workspace` [D, B, G*H (+H)] holds
    one step's gate pre-activations (and GRU's r * H_{t-1}). `r` is "plain" [D, G, H, H] or
    packed per gate into NR-wide panels ("recurrent_panel{NR}": [D, G, H/NR, H, NR])."""

    name = "kernel.recurrent"
    x_proj = operand_def(MemRefType)
    r = operand_def(MemRefType)
    recurrent_bias = opt_operand_def(MemRefType)
    sequence_lens = opt_operand_def(MemRefType)
    initial_h = opt_operand_def(MemRefType)
    initial_c = opt_operand_def(MemRefType)
    peepholes = opt_operand_def(MemRefType)
    workspace = operand_def(MemRefType)
    y = operand_def(MemRefType)
    y_h = operand_def(MemRefType)
    y_c = opt_operand_def(MemRefType)
    weight_layout = prop_def(StringAttr)
    irdl_options = (ParsePropInAttrDict(), AttrSizedOperandSegments(as_property=True))

    def verify_(self) -> None:
        super().verify_()
        expected = recurrent_workspace_shape(self.cell.data, *shape_of(self.y_h))
        if shape_of(self.workspace) != expected:
            raise VerifyException(
                f"kernel.recurrent: workspace {shape_of(self.workspace)}, expected {expected}"
            )


# Fused attention (passes/conversion/kernel_to_loops/attention.py)


@irdl_op_definition
class AttentionOp(graph.AttentionSpec, IRDLOperation):
    """See graph.attention: q, k_t, v (, mask) -> output, one streaming kernel."""

    name = "kernel.attention"
    q = operand_def(MemRefType)
    k_t = operand_def(MemRefType)
    v = operand_def(MemRefType)
    mask = opt_operand_def(MemRefType)
    output = operand_def(MemRefType)
    irdl_options = (ParsePropInAttrDict(), AttrSizedOperandSegments(as_property=True))
    assembly_format = (
        "$q `,` $k_t `,` $v (`mask` $mask^)? `->` $output attr-dict `:` type($q) `,` "
        "type($k_t) `,` type($v) (`,` type($mask)^)? `->` type($output)"
    )


KERNEL_OPS: list[type[IRDLOperation]] = [
    WeightOp,
    ReshapeOp,
    Conv2dOp,
    MatMulOp,
    PoolOp,
    ReduceOp,
    YieldOp,
    ElementwiseOp,
    SoftmaxOp,
    LayerNormOp,
    LRNOp,
    TransposeOp,
    ConcatOp,
    GatherOp,
    CopyOp,
    SliceOp,
    ArgReduceOp,
    CumSumOp,
    GatherElementsOp,
    OneHotOp,
    RangeOp,
    ScatterElementsOp,
    TopKOp,
    GatherNDOp,
    ScatterNDOp,
    RecurrentOp,
    AttentionOp,
]
# --- int8: integer convolution (kernel_to_loops/qconv.py) -----------------------------------


@irdl_op_definition
class QConv2dOp(IRDLOperation):
    """graph.qconv on buffers (`group` as graph.qconv's): `weight` packed (int32 words of 4 int8
    taps; depthwise: int16 pairs) in the layout named by `weight_layout`, which also names the
    instruction set it was packed for; `workspace` holds one image's (one group's) input,
    channel-interleaved by 4 and padded (`qconv_workspace_words`).
    Unlike graph.qconv, `input_zero_point` and `offset` are those of the input as the kernel
    reads it (int8 shifted to uint8), and `bias` includes the output zero point. A residual
    is added in the epilogue as graph.qconv describes."""

    name = "kernel.qconv2d"
    input = operand_def(MemRefType)
    weight = operand_def(MemRefType)
    offset = operand_def(MemRefType)
    multiplier = operand_def(MemRefType)
    bias = operand_def(MemRefType)
    residual = opt_operand_def(MemRefType)
    workspace = operand_def(MemRefType)
    output = operand_def(MemRefType)
    kernel_shape = prop_def(DenseArrayBase)  # [kh, kw]
    strides = prop_def(DenseArrayBase)
    pads = prop_def(DenseArrayBase)  # [top, left, bottom, right]
    dilations = prop_def(DenseArrayBase)
    input_zero_point = prop_def(IntegerAttr[I64])
    input_signed = prop_def(IntegerAttr[I64])
    output_zero_point = prop_def(IntegerAttr[I64])
    output_min = prop_def(IntegerAttr[I64])
    output_max = prop_def(IntegerAttr[I64])
    weight_layout = prop_def(StringAttr)
    residual_params = opt_prop_def(DenseArrayBase)  # graph.RESIDUAL_PARAMS
    group = opt_prop_def(IntegerAttr[I64])  # absent: 1 (or all channels: a depthwise layout)
    irdl_options = (ParsePropInAttrDict(), AttrSizedOperandSegments(as_property=True))
    custom_directives = (TypeIfPresent,)
    assembly_format = (
        "$input `,` $weight `,` $offset `,` $multiplier `,` $bias (`residual` $residual^)? `,` "
        "$workspace `->` $output attr-dict `:` type($input) `,` type($weight) `,` "
        "type($offset) `,` type($multiplier) `,` type($bias) "
        "custom<TypeIfPresent>(ref($residual), type($residual)) `,` "
        "type($workspace) `->` type($output)"
    )

    def verify_(self) -> None:
        if len(shape_of(self.input)) != 4 or len(shape_of(self.output)) != 4:
            raise VerifyException("kernel.qconv2d: input and output must be NCHW")


KERNEL_OPS.append(QConv2dOp)


# Control flow (graph.loop's scan outputs; the loops themselves are scf ops in the entry).
@irdl_op_definition
class InsertSliceOp(IRDLOperation):
    """output[index] = input along the leading axis, at a run-time index (an i64 scalar
    buffer, clamped into range): one iteration's slice of a loop's scan output."""

    name = "kernel.insert_slice"
    input = operand_def(MemRefType)
    index = operand_def(MemRefType)
    output = operand_def(MemRefType)
    assembly_format = buffer_format("input", "index")

    def verify_(self) -> None:
        if shape_of(self.output)[1:] != shape_of(self.input) or shape_of(self.index) != ():
            raise VerifyException(
                f"kernel.insert_slice: {shape_of(self.input)} into {shape_of(self.output)} "
                f"at an index of shape {shape_of(self.index)}"
            )


KERNEL_OPS.append(InsertSliceOp)


# --- data-dependent output sizes (kernel_to_loops/selection.py) ------------------------------


@irdl_op_definition
class NonMaxSuppressionOp(graph.NonMaxSuppressionSpec, IRDLOperation):
    """See graph.non_max_suppression; `workspace` i64 [N] holds one class's candidates (a
    heap of box indices)."""

    name = "kernel.non_max_suppression"
    boxes = operand_def(MemRefType)
    scores = operand_def(MemRefType)
    workspace = operand_def(MemRefType)
    output = operand_def(MemRefType)
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = buffer_format("boxes", "scores", "workspace")


KERNEL_OPS.append(NonMaxSuppressionOp)


@irdl_op_definition
class NonZeroOp(graph.NonZeroSpec, _InOutOp):
    """See graph.nonzero."""

    name = "kernel.nonzero"


KERNEL_OPS.append(NonZeroOp)

# --- RoiAlign with the adaptive sampling grid (kernel_to_loops/selection.py) ------------------


@irdl_op_definition
class RoiAlignAdaptiveOp(graph.RoiAlignAdaptiveSpec, IRDLOperation):
    """See graph.roi_align_adaptive."""

    name = "kernel.roi_align_adaptive"
    x = operand_def(MemRefType)
    rois = operand_def(MemRefType)
    batch_indices = operand_def(MemRefType)
    output = operand_def(MemRefType)
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$x `,` $rois `,` $batch_indices `->` $output attr-dict `:` type($x) `,` type($rois) "
        "`,` type($batch_indices) `->` type($output)"
    )


KERNEL_OPS.append(RoiAlignAdaptiveOp)


# --- Linear Resize over the last two axes (kernel_to_loops/resize.py) ------------------------


@irdl_op_definition
class ResizeLinearOp(graph.ResizeLinearSpec, IRDLOperation):
    """See graph.resize_linear."""

    name = "kernel.resize_linear"
    data = operand_def(MemRefType)
    indices = operand_def(MemRefType)
    weights = operand_def(MemRefType)
    output = operand_def(MemRefType)
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = buffer_format("data", "indices", "weights")


KERNEL_OPS.append(ResizeLinearOp)


@functools.cache
def twin_of(graph_op: type[Operation]) -> type[IRDLOperation] | None:
    """The kernel op built from the same TwinSpec as `graph_op` (its buffer form), or None."""
    spec = spec_of(graph_op)
    if spec is None:
        return None
    return next((op for op in KERNEL_OPS if spec_of(op) is spec), None)


Kernel = Dialect("kernel", KERNEL_OPS, [])

# Ops that compute (everything but the buffer-naming ops and the region terminator).
COMPUTE_OPS: tuple[type[IRDLOperation], ...] = tuple(
    op for op in KERNEL_OPS if op not in (WeightOp, ReshapeOp, YieldOp)
)
