"""Single kernel ops built from Python values: the GEMM and convolution kernels as the kernel
tests check them and `benchmarks/kernels.py` times them (one builder for both).

`matmul_op(...)` and `conv_op(...)` return a function that builds the op on given buffers
(operands in kernel order: inputs, optional bias and residual, then the output).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, StringAttr, f32, i64
from xdsl.ir import SSAValue

from ember.dialects import kernel

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
