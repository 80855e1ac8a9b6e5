"""blocked-layout: run convolution chains in the channel-blocked layout NCHW[c].

A blocked tensor is an ordinary rank-5 tensor [N, C/c, H, W, c], c = the target's vector
width: the c channels of one pixel are one vector. Each conv the blocked kernel runs
(`runs_blocked`: float32, group 1 or depthwise, channel counts multiples of c, a constant
filter) becomes a rank-5 graph.conv between a graph.to_blocked of its input (and of its
residual) and a graph.from_blocked of its result, where its chain pays for the reorders
(`profitable`, MIN_FLOPS_PER_REORDERED).
Then, to a fixed point:
  - a to_blocked of a from_blocked is the blocked value itself (the chain stays blocked);
  - a layout-agnostic op of a from_blocked (same-shape elementwise ops, max/average pools,
    a concat of whole channel blocks: `layout_agnostic`) runs on the blocked operands, its
    result reordered back;
  - so does a nearest upsample by whole factors (Resize's reshape/expand/reshape,
    `_nearest_upsample`): an FPN's top-down path and its levels stay blocked.
What is left are reorders where a chain starts and where an op that reads NCHW (LRN,
depthwise convs, reshapes, anything not taught here) meets it. Every rewrite computes the
same values (the blocked conv sums in the NCHW channel-lanes kernel's order; against the
GEMM only the float summation order differs); nothing is padded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from math import prod

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType, f32
from xdsl.ir import BlockArgument, Operation, SSAValue

from ember.core.target import Target
from ember.dialects import graph
from ember.dialects.graph import element_type_of, int_values, shape_of
from ember.dialects.weight_layouts import blocked_conv_blocking, is_depthwise
from ember.passes.conversion.elementwise_bodies import BODIES
from ember.passes.options import TargetPass
from ember.passes.program import origin_of, set_origin
from ember.passes.transforms.graph_utils import rebuild


def blocked_type(tensor: SSAValue, c: int) -> TensorType:
    n, channels, h, w = shape_of(tensor)
    return TensorType(element_type_of(tensor), [n, channels // c, h, w, c])


def _before(op: Operation, new: Operation) -> SSAValue:
    block = op.parent_block()
    assert block is not None
    block.insert_op_before(new, op)
    return new.results[0]


def _named_after(reorder: Operation, op: Operation) -> Operation:
    """`reorder` carries the ONNX node of the op it serves (errors and profile rows name it)."""
    origin = origin_of(op)
    if origin.get("op_type"):
        set_origin(reorder, origin["op_type"], origin.get("node", ""))
    return reorder


def _to_blocked(value: SSAValue, c: int, user: Operation) -> SSAValue:
    """The one to_blocked of `value`, right after its definition (so that it dominates every
    use of `value`); a new one is named after `user`, the op it is made for."""
    want = blocked_type(value, c)
    existing = [
        use.operation
        for use in value.uses
        if isinstance(use.operation, graph.ToBlockedOp) and use.operation.output.type == want
    ]
    # One this pass placed is right after the definition; another (IR it did not write)
    # moves there, which keeps it before every use.
    reorder = existing[0] if existing else graph.ToBlockedOp(operands=[value], result_types=[want])
    if not existing:
        _named_after(reorder, user)
    if existing:
        reorder.detach()
    if isinstance(value, BlockArgument):
        value.block.insert_op_before(reorder, value.block.first_op)  # type: ignore[arg-type]
    else:
        value.owner.parent_block().insert_op_after(reorder, value.owner)  # type: ignore[union-attr]
    return reorder.output


def runs_blocked(op: graph.ConvOp, target: Target) -> bool:
    """A float32 NCHW conv with a constant filter that a blocked kernel runs (the
    channel-lanes conv, or the depthwise one)."""
    x, y = shape_of(op.input), shape_of(op.output)
    if len(x) != 4 or not isinstance(op.weight.owner, graph.ConstantOp):
        return False
    if any(element_type_of(v) != f32 for v in (op.input, op.weight, op.output)):
        return False
    cout, cin_g, kh, kw = shape_of(op.weight)
    group = op.group.value.data
    if is_depthwise(shape_of(op.weight), group):  # the blocked depthwise kernel
        return cout % target.vector_width == 0
    strides: tuple[int, int] = tuple(int_values(op.strides))  # type: ignore[assignment]
    blocking = blocked_conv_blocking(
        cin_g * group, cout, group, (y[2], y[3]), (kh, kw), target, strides
    )
    return blocking is not None


def block_conv(op: graph.ConvOp, c: int) -> graph.ConvOp:
    """op -> from_blocked(conv(to_blocked(input), residual=to_blocked(residual))); returns
    the blocked conv."""
    residual = None if op.residual is None else _to_blocked(op.residual, c, op)
    conv = rebuild(
        op,
        input=_to_blocked(op.input, c, op),
        residual=residual,
        output_type=blocked_type(op.output, c),
    )
    blocked = _before(op, conv)
    reorder = graph.FromBlockedOp(operands=[blocked], result_types=[op.output.type])
    nchw = _before(op, _named_after(reorder, op))
    op.output.replace_all_uses_with(nchw)
    op.detach()
    op.erase()
    return conv  # type: ignore[return-value]


def _block_size(op: Operation) -> int | None:
    """The block size c of the from_blocked operands of `op` (None: none, or several c)."""
    sizes = {
        shape_of(v.owner.input)[4] for v in op.operands if isinstance(v.owner, graph.FromBlockedOp)
    }
    return sizes.pop() if len(sizes) == 1 else None


def layout_agnostic(op: Operation, c: int) -> bool:
    """`op` computes the same on [N, C/c, H, W, c] operands as on NCHW ones (per element, or
    per channel over H and W, or along whole channel blocks), given its own result shape."""
    if op.regions or len(op.results) != 1:
        return False
    shape = shape_of(op.results[0])
    if len(shape) != 4 or shape[1] % c:
        return False
    if type(op) in BODIES:  # elementwise: every operand of the result's shape
        return all(shape_of(v) == shape for v in op.operands)
    if isinstance(op, graph.MaxPoolOp | graph.AveragePoolOp):
        return element_type_of(op.input) == f32
    if isinstance(op, graph.ConcatOp):  # along whole channel blocks
        return op.axis.value.data == 1 and all(shape_of(v)[1] % c == 0 for v in op.inputs)
    return False


def _move_behind_reorder(op: Operation) -> bool:
    """A layout-agnostic op of a from_blocked runs on the blocked operands, its result
    reordered back; True if it moved."""
    c = _block_size(op)
    if c is None or not layout_agnostic(op, c):
        return False
    out = op.results[0]
    moved = type(op).create(
        operands=[_to_blocked(v, c, op) for v in op.operands],
        result_types=[blocked_type(out, c)],
        properties=dict(op.properties),
        attributes=dict(op.attributes),
    )
    reorder = graph.FromBlockedOp(operands=[_before(op, moved)], result_types=[out.type])
    nchw = _before(op, _named_after(reorder, op))
    out.replace_all_uses_with(nchw)
    op.detach()
    op.erase()
    return True


def _nearest_upsample(op: Operation) -> tuple[graph.ExpandOp, graph.ReshapeOp] | None:
    """The expand and the last reshape of a nearest upsample by whole factors that `op` starts:
    reshape [N, C, H, W] -> [N, C, H, 1, W, 1], expand to [N, C, H, s, W, t], reshape to
    [N, C, H*s, W*t] (how Resize nearest with integer scales lowers), each feeding only the
    next; None otherwise."""
    if not isinstance(op, graph.ReshapeOp) or len(shape_of(op.input)) != 4:
        return None
    n, channels, h, w = shape_of(op.input)
    if shape_of(op.output) != (n, channels, h, 1, w, 1):
        return None
    users = [use.operation for use in op.output.uses]
    if len(users) != 1 or not isinstance(users[0], graph.ExpandOp):
        return None
    expand = users[0]
    expanded = shape_of(expand.output)
    if len(expanded) != 6 or tuple(expanded[i] for i in (0, 1, 2, 4)) != (n, channels, h, w):
        return None
    users = [use.operation for use in expand.output.uses]
    if len(users) != 1 or not isinstance(users[0], graph.ReshapeOp):
        return None
    last = users[0]
    if shape_of(last.output) != (n, channels, h * expanded[3], w * expanded[5]):
        return None
    return expand, last


def _upsample_behind_reorder(op: Operation) -> bool:
    """A nearest upsample (`_nearest_upsample`) of a from_blocked runs on the blocked value,
    its result reordered back: the same reshape/expand/reshape with the c lanes as the
    innermost axis (each pixel's channel vector copied s x t times); True if it moved."""
    found = _nearest_upsample(op)
    source = op.operands[0].owner if found else None
    if found is None or not isinstance(source, graph.FromBlockedOp):
        return False
    expand, last = found
    c = shape_of(source.input)[4]
    n, blocks, h, w, _ = shape_of(source.input)
    s, t = shape_of(expand.output)[3], shape_of(expand.output)[5]
    dtype = element_type_of(source.input)
    value = source.input
    for kind, shape in (
        (graph.ReshapeOp, [n, blocks, h, 1, w, 1, c]),
        (graph.ExpandOp, [n, blocks, h, s, w, t, c]),
        (graph.ReshapeOp, [n, blocks, h * s, w * t, c]),
    ):
        value = _before(
            op, _named_after(kind(operands=[value], result_types=[TensorType(dtype, shape)]), last)
        )
    reorder = graph.FromBlockedOp(operands=[value], result_types=[last.output.type])
    last.output.replace_all_uses_with(_before(op, _named_after(reorder, last)))
    for dead in (last, expand, op):
        dead.detach()
        dead.erase()
    return True


def _cancel(op: graph.ToBlockedOp) -> bool:
    """to_blocked(from_blocked(z)) -> z; True if it cancelled."""
    source = op.input.owner
    if not isinstance(source, graph.FromBlockedOp) or source.input.type != op.output.type:
        return False
    op.output.replace_all_uses_with(source.input)
    op.detach()
    op.erase()
    return True


def _erase_unused_reorders(module: ModuleOp) -> None:
    for op in reversed(list(module.walk())):
        if isinstance(op, graph.ToBlockedOp | graph.FromBlockedOp) and not op.output.uses:
            op.detach()
            op.erase()


def run_blocked(module: ModuleOp, convs: list[graph.ConvOp], c: int) -> list[graph.ConvOp]:
    """Block `convs`, then cancel reorders and move layout-agnostic ops behind them to a
    fixed point; returns the blocked convs (in the order of `convs`)."""
    blocked = [block_conv(conv, c) for conv in convs]
    changed = True
    while changed:
        changed = False
        for inner in list(module.walk()):
            if inner.parent is None:  # erased earlier in this sweep
                continue
            if isinstance(inner, graph.ToBlockedOp):
                changed |= _cancel(inner)
            else:
                changed |= _move_behind_reorder(inner) or _upsample_behind_reorder(inner)
    _erase_unused_reorders(module)
    return blocked


# A chain (blocked values joined by the ops between them) stays blocked when its convs do at
# least this many FLOPs per element its reorders move. Set between the chains measured:
# MobileNet-v2's per-block chains before depthwise convs ran blocked (a project and an expand
# 1x1 conv between the reorders around each depthwise conv: 30-100 FLOPs per element) gained
# nothing at 1 thread (3.55 -> 3.61 ms min, 3.77 -> 3.69 median); the ResNet, SqueezeNet and
# VGG chains run thousands per element and gain 4-6%.
MIN_FLOPS_PER_REORDERED = 256


def _conv_flops(conv: graph.ConvOp) -> int:
    n, blocks, ho, wo, c = shape_of(conv.output)
    cout, cin_g, kh, kw = shape_of(conv.weight)
    return 2 * n * cout * ho * wo * cin_g * kh * kw


def _rank(value: SSAValue) -> int:
    return len(value.type.get_shape()) if isinstance(value.type, TensorType) else 0


def profitable(module: ModuleOp, blocked: list[graph.ConvOp]) -> list[bool]:
    """Whether each blocked conv's chain does MIN_FLOPS_PER_REORDERED FLOPs per element its
    to_blocked/from_blocked ops move (chains: union-find over the rank-5 values, joined by
    every op that reads or writes them, reorders aside; a blocked upsample's inner values
    join them too)."""
    parent: dict[SSAValue, SSAValue] = {}

    def root(v: SSAValue) -> SSAValue:
        parent.setdefault(v, v)
        while parent[v] is not v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    reordered: Counter[SSAValue] = Counter()
    through: set[SSAValue] = set()
    for op in module.walk():
        if isinstance(op, graph.ToBlockedOp):
            reordered[op.output] += prod(shape_of(op.output))
            continue
        if isinstance(op, graph.FromBlockedOp):
            reordered[op.input] += prod(shape_of(op.input))
            continue
        # A blocked upsample's reshapes and expand carry the chain through rank 6 and 7.
        if (
            isinstance(op, graph.ReshapeOp | graph.ExpandOp)
            and _rank(op.results[0]) in (6, 7)
            and (_rank(op.operands[0]) == 5 or op.operands[0] in through)
        ):
            through.add(op.results[0])
        values = [v for v in (*op.operands, *op.results) if _rank(v) == 5 or v in through]
        for v in values[1:]:
            parent[root(v)] = root(values[0])
    elements: Counter[SSAValue] = Counter()
    for v, count in reordered.items():
        elements[root(v)] += count
    flops: Counter[SSAValue] = Counter()
    for conv in blocked:
        flops[root(conv.output)] += _conv_flops(conv)
    return [
        flops[root(conv.output)] >= MIN_FLOPS_PER_REORDERED * elements[root(conv.output)]
        for conv in blocked
    ]


@dataclass(frozen=True)
class BlockedLayout(TargetPass):
    """Runs convolution chains channel-blocked (NCHW[c], c = vector width), reordering at their ends."""

    name = "blocked-layout"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        target = self.target(ctx)
        c = target.vector_width

        def eligible(module: ModuleOp) -> list[graph.ConvOp]:
            """Convs of function bodies (not of Loop/If regions: untested there, left NCHW)."""
            return [
                o
                for o in module.walk()
                if isinstance(o, graph.ConvOp)
                and isinstance(o.parent_op(), func.FuncOp)
                and runs_blocked(o, target)
            ]

        # Block every eligible conv in a copy, keep the chains that pay for their reorders.
        # Without one (most models' graphs, every one-op test model) the copy would block
        # nothing: cloning the module only to find that cost a third of this pass.
        convs = eligible(op)
        keep: list[bool] = []
        if convs:
            trial = op.clone()
            keep = profitable(trial, run_blocked(trial, eligible(trial), c))
        run_blocked(op, [conv for conv, k in zip(convs, keep, strict=True) if k], c)
