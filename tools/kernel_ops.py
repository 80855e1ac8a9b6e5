"""Single kernel ops built from Python values: the GEMM and convolution kernels as the kernel
tests check them and `benchmarks/kernels.py` times them (one builder for both).

`matmul_op(...)` and `conv_op(...)` return a function that builds the op on given buffers
(operands in kernel order: inputs, optional bias and residual, then the output).
`JitKernel` lowers one such op on buffer types (static, or with `?` dims: runtime extents)
and calls it on numpy arrays.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence

import numpy as np
from xdsl.dialects.builtin import (
    DenseArrayBase,
    IntegerAttr,
    MemRefType,
    ModuleOp,
    StringAttr,
    f32,
    i64,
)
from xdsl.ir import Block, SSAValue
from xdsl.irdl import IRDLOperation

from ember.codegen.jit import JitModule
from ember.core.target import Target, host_target
from ember.dialects import kernel
from ember.dialects.dtypes import numpy_dtype_for
from ember.dialects.extents import extent_slots
from ember.passes.conversion.kernel_to_loops.registry import lowering_for

# The fused epilogue activations and the parameters the kernel tests and benchmarks give them.
ACTIVATION_PARAMS: dict[str, list[float]] = {
    "relu": [],
    "clip": [-0.5, 0.75],
    "leaky_relu": [0.1],
    "sigmoid": [],
    "tanh": [],
    "gelu": [],
    "gelu_tanh": [],
}


def _epilogue(props: dict, activation: str | None) -> dict:
    if activation is not None:
        props["activation"] = StringAttr(activation)
        params = ACTIVATION_PARAMS[activation]
        if params:
            props["activation_params"] = DenseArrayBase.from_list(f32, params)
    return props


def matmul_op(
    layout: str, has_bias: bool, has_residual: bool, activation: str | None = None
) -> Callable[[Sequence[SSAValue]], kernel.MatMulOp]:
    def make(args: Sequence[SSAValue]) -> kernel.MatMulOp:
        it = iter(args)
        a, b = next(it), next(it)
        bias = next(it) if has_bias else None
        residual = next(it) if has_residual else None
        props = _epilogue({"weight_layout": StringAttr(layout)}, activation)
        return kernel.MatMulOp(operands=[a, b, bias, residual, next(it)], properties=props)

    return make


def conv_op(
    kernel_shape: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilations: tuple[int, int],
    group: int,
    layout: str,
    has_bias: bool,
    has_residual: bool,
    activation: str | None,
) -> Callable[[Sequence[SSAValue]], kernel.Conv2dOp]:
    def make(args: Sequence[SSAValue]) -> kernel.Conv2dOp:
        it = iter(args)
        x, w = next(it), next(it)
        bias = next(it) if has_bias else None
        residual = next(it) if has_residual else None
        props: dict = {
            "kernel_shape": DenseArrayBase.from_list(i64, list(kernel_shape)),
            "strides": DenseArrayBase.from_list(i64, list(strides)),
            "pads": DenseArrayBase.from_list(i64, list(pads)),
            "dilations": DenseArrayBase.from_list(i64, list(dilations)),
            "group": IntegerAttr(group, i64),
            "weight_layout": StringAttr(layout),
        }
        return kernel.Conv2dOp(
            operands=[x, w, bias, residual, next(it)], properties=_epilogue(props, activation)
        )

    return make


def conv_out_size(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    """Output length of a window of `k` taps over `size` elements with `pad` padding in all."""
    return (size + pad - dilation * (k - 1) - 1) // stride + 1


class JitKernel:
    """One kernel op on buffers of `types`, lowered and JIT-compiled once, then called on
    numpy arrays. With `?` dims in `types` (runtime extents, issue 10) one program serves
    every size: the sizes are read from the arrays and passed as its extent arguments.

        gemm = JitKernel(matmul_op("plain", False, False), [MemRefType(f32, [DYN, 64]), ...])
        gemm(a, b, out)   # out is written in place
    """

    def __init__(
        self,
        make_op: Callable[[Sequence[SSAValue]], IRDLOperation],
        types: Sequence[MemRefType],
        target: Target | None = None,
        threads: int = 1,
    ) -> None:
        self.types = list(types)
        self.target = target or host_target(threads)
        block = Block(arg_types=self.types)
        op = make_op(block.args)
        block.add_op(op)
        self.function = lowering_for(op)(op, self.target, "kernel_under_test")
        self.module = ModuleOp([self.function])
        self.module.verify()
        self.slots = extent_slots(self.types)
        self.jit = JitModule(self.module, self.target)
        self.jit.function("ember_set_num_threads", [ctypes.c_int32])(threads)
        argtypes = [ctypes.c_void_p] * len(self.types) + [ctypes.c_int64] * len(self.slots)
        self.fn = self.jit.function("kernel_under_test", argtypes)

    def arguments(self, arrays: Sequence[np.ndarray]) -> list[int]:
        """The call's arguments: a pointer per array, then the sizes of the `?` dims."""
        assert len(arrays) == len(self.types)
        for array, t in zip(arrays, self.types, strict=True):
            assert array.flags.c_contiguous, "kernels take C-contiguous buffers"
            assert array.dtype == np.dtype(numpy_dtype_for(t.get_element_type()))
            shape = t.get_shape()
            assert array.ndim == len(shape), (array.shape, t)
            fits = all(n < 0 or n == d for n, d in zip(shape, array.shape, strict=True))
            assert fits, (array.shape, t)
        return [a.ctypes.data for a in arrays] + [arrays[a].shape[d] for a, d in self.slots]

    def __call__(self, *arrays: np.ndarray) -> None:
        self.fn(*self.arguments(arrays))
