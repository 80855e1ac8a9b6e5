"""What the convolution family shares: a sliding window's geometry (`window_geometry`: output size
and explicit pads for every auto_pad mode; `Window`), the lifting of 1-D problems onto the 2-D
kernels (`on_2d_kernel`) and the float32 the windowed kernels compute in (`in_float32`).
Used by frontend/ops/conv.py and frontend/ops/pooling.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ember.dialects import graph
from ember.frontend.context import (
    ImportContext,
    Node,
    Value,
    dtype_of,
    shape_of,
)


def window_geometry(
    node: Node,
    in_hw: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    ceil_mode: bool = False,
) -> tuple[list[int], list[int]]:
    """Output size and explicit [top, left, bottom, right] pads for Conv/pooling."""
    rank = len(in_hw)
    auto_pad = node.attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    pads = list(node.attrs.get("pads", [0] * 2 * rank))
    out = []
    for i in range(rank):
        size, stride, extent = in_hw[i], strides[i], (kernel[i] - 1) * dilations[i] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            n = -(-size // stride)
            total = max(0, (n - 1) * stride + extent - size)
            small, big = total // 2, total - total // 2
            pads[i], pads[i + rank] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        elif auto_pad == "VALID":
            pads[i] = pads[i + rank] = 0
            n = (size - extent) // stride + 1
        elif auto_pad == "NOTSET":
            span = size + pads[i] + pads[i + rank] - extent
            n = (-(-span // stride) if ceil_mode else span // stride) + 1
            # A last window starting inside the end padding is dropped (ONNX/PyTorch rule).
            if ceil_mode and (n - 1) * stride >= size + pads[i]:
                n -= 1
        else:
            raise node.error(f"unknown auto_pad '{auto_pad}'")
        if n <= 0:
            raise node.error(f"window {kernel} does not fit input {tuple(in_hw)}")
        out.append(n)
    return out, pads


@dataclass(frozen=True)
class Window:
    """A sliding window's geometry, one entry per spatial axis; pads are begins then ends."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]

    @staticmethod
    def of(
        kernel: Sequence[int],
        strides: Sequence[int],
        dilations: Sequence[int],
        pads: Sequence[int],
    ) -> Window:
        return Window(
            tuple(int(k) for k in kernel),
            tuple(int(s) for s in strides),
            tuple(int(d) for d in dilations),
            tuple(int(p) for p in pads),
        )

    def axes(self, first: int, count: int) -> Window:
        """The window over spatial axes first .. first + count - 1."""
        rank, last = len(self.kernel), first + count
        return Window(
            self.kernel[first:last],
            self.strides[first:last],
            self.dilations[first:last],
            self.pads[first:last] + self.pads[rank + first : rank + last],
        )

    def lifted(self) -> Window:
        """This 1-D window as a 2-D one of height 1."""
        (k,), (s,), (d,), (begin, end) = self.kernel, self.strides, self.dilations, self.pads
        return Window((1, k), (1, s), (1, d), (0, begin, 0, end))


def on_2d_kernel(
    imp: ImportContext,
    operands: Sequence[Value],
    window: Window,
    emit_2d: Callable[[Sequence[Value], Window], Value],
) -> Value:
    """emit_2d (a 2-D windowed op on NCHW operands) applied to 2-D or 1-D operands: 1-D ones
    (N×C×L inputs, O×I×K filters) are viewed with a unit height and the result without it."""
    if len(window.kernel) == 2:
        return emit_2d(operands, window)
    assert len(window.kernel) == 1, window
    lifted = [imp.reshape(v, [*shape_of(v)[:2], 1, *shape_of(v)[2:]]) for v in operands]
    y = emit_2d(lifted, window.lifted())
    ys = shape_of(y)
    return imp.reshape(y, [ys[0], ys[1], ys[3]])


def in_float32(
    imp: ImportContext, node: Node, operands: Sequence[Value | None], exact_ints: bool = False
) -> tuple[list[Value | None], Callable[[Value], Value]]:
    """The operands as float32 (the windowed kernels' only type) and the cast of a float32
    result back to the operands' type. 16-bit floats widen (and are rounded once, at the end);
    small integers, which float32 holds exactly, only where `exact_ints` (max pooling); any
    other type is refused rather than silently rounded."""
    dtype = dtype_of(next(v for v in operands if v is not None))
    if dtype == np.float32:
        return list(operands), lambda y: y
    widens = dtype.kind in "fV" and dtype.itemsize < 4
    if not (widens or (exact_ints and dtype.kind in "iu" and dtype.itemsize <= 2)):
        raise node.unsupported(
            f"{node.op_type} on {dtype} tensors (its kernel computes in float32, which does "
            f"not hold {dtype} exactly)"
        )
    f32 = np.dtype(np.float32)
    widened = [
        None if v is None else imp.emit(graph.CastOp, [v], shape_of(v), f32) for v in operands
    ]
    return widened, lambda y: imp.emit(graph.CastOp, [y], shape_of(y), dtype)
