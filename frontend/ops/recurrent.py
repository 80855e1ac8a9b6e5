"""ONNX -> graph dialect: the recurrent layers LSTM, GRU and RNN.

Each layer becomes three parts, none of which grows with the sequence length:

- the input projection of every time step at once, one `graph.matmul`
  X[T*B, I] @ W^T[I, D*G*H] + (Wb + Rb), which constant-folds W^T and lowers to ember's
  packed GEMM;
- R^T per gate ([D, G, H, H]), folded to a constant when R is one (graph_to_kernel packs it);
- one `graph.recurrent`, whose kernel owns the time loop (a step GEMM on H_{t-1} plus a fused,
  vectorized gate kernel per step).

Layout 1 (batch major) is layout 0 between transposes. float16 and bfloat16 layers run in
float32 (inputs widened exactly, each output rounded back once, as onnxruntime's CPU does). Whatever the kernel does not implement
is refused with UnsupportedOpError naming the attribute and its value.
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_dtypes
import numpy as np
from xdsl.dialects.builtin import ArrayAttr, StringAttr, TensorType, UnitAttr, f32

from ember.dialects import graph
from ember.dialects.graph import RECURRENT_ACTIVATIONS, RECURRENT_GATES
from ember.frontend.context import (
    Const,
    ImportContext,
    Node,
    Value,
    dtype_of,
    f32_attr,
    shape_of,
)
from ember.frontend.registry import converts

_CELLS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}


# ONNX's default activations per direction.
_DEFAULT_ACTIVATIONS = {
    "lstm": ("Sigmoid", "Tanh", "Tanh"),
    "gru": ("Sigmoid", "Tanh"),
    "rnn": ("Tanh",),
}


# Activation -> (kernel name, takes alpha, takes beta, default alpha, default beta). ONNX says
# alpha/beta are consumed in order by the activations that take them (onnxruntime does so too).
# A default of None means ONNX and onnxruntime disagree (ThresholdedRelu: 1.0 vs 0.0) or ONNX
# defines none (Affine, ScaledTanh): such an activation needs its values given explicitly.
_ACTIVATION_ARGS: dict[str, tuple[str, bool, bool, float | None, float | None]] = {
    "relu": ("relu", False, False, 0.0, 0.0),
    "tanh": ("tanh", False, False, 0.0, 0.0),
    "sigmoid": ("sigmoid", False, False, 0.0, 0.0),
    "leakyrelu": ("leaky_relu", True, False, 0.01, 0.0),
    "hardsigmoid": ("hard_sigmoid", True, True, 0.2, 0.5),
    "elu": ("elu", True, False, 1.0, 0.0),
    "softsign": ("softsign", False, False, 0.0, 0.0),
    "softplus": ("softplus", False, False, 0.0, 0.0),
    "thresholdedrelu": ("thresholded_relu", True, False, None, 0.0),
    "affine": ("affine", True, True, None, None),
    "scaledtanh": ("scaled_tanh", True, True, None, None),
}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _activations(node: Node, cell: str, dirs: int) -> tuple[list[str], list[float]]:
    """Kernel activation names and their (alpha, beta) pairs, defaults resolved."""
    names = [_text(a) for a in node.attrs.get("activations", [])]
    if not names:
        names = list(_DEFAULT_ACTIVATIONS[cell]) * dirs
    if len(names) != RECURRENT_ACTIVATIONS[cell] * dirs:
        raise node.error(
            f"activations {names}: expected {RECURRENT_ACTIVATIONS[cell]} per direction "
            f"for {dirs} direction(s)"
        )
    alphas = [float(v) for v in node.attrs.get("activation_alpha", [])]
    betas = [float(v) for v in node.attrs.get("activation_beta", [])]
    kinds: list[str] = []
    params: list[float] = []
    for name in names:
        entry = _ACTIVATION_ARGS.get(name.lower())
        if entry is None:
            raise node.unsupported(f"activation '{name}'")
        kind, takes_alpha, takes_beta, default_alpha, default_beta = entry
        pair = []
        for takes, given, default, what in (
            (takes_alpha, alphas, default_alpha, "activation_alpha"),
            (takes_beta, betas, default_beta, "activation_beta"),
        ):
            if takes and given:
                pair.append(given.pop(0))
            elif takes and default is None:
                raise node.unsupported(
                    f"activation '{name}' without an explicit {what} (its default is ambiguous)"
                )
            else:
                pair.append(float(default or 0.0))
        kinds.append(kind)
        params.extend(pair)
    return kinds, params


# Element types the recurrent kernel (float32 only) runs widened: float32 holds their values
# exactly, and onnxruntime's CPU casts float16 around its float32 kernel the same way.
_WIDENED = frozenset({np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)})


def _float32_input(imp: ImportContext, node: Node, index: int, what: str) -> Value | None:
    """Input #index (None when absent) in float32, the recurrent kernel's only type: 16-bit
    floats widen exactly (the outputs are rounded back once, at the end); others are refused."""
    value = imp.input(node, index)
    if value is None or dtype_of(value) == np.float32:
        return value
    if dtype_of(value) not in _WIDENED:
        raise node.unsupported(
            f"{what} of type {dtype_of(value)} (float32, float16 and bfloat16 are supported)"
        )
    return imp.widen_to_float32(value)


def _expect_shape(node: Node, value: Value | None, what: str, shape: Sequence[int]) -> None:
    if value is not None and shape_of(value) != tuple(shape):
        raise node.error(f"{what} has shape {list(shape_of(value))}, expected {list(shape)}")


def _slice_last(imp: ImportContext, value: Value, start: int, size: int) -> Value:
    shape = shape_of(value)
    return imp.emit(
        graph.SliceOp,
        [value],
        [*shape[:-1], size],
        starts=graph.i64_array([0] * (len(shape) - 1) + [start]),
        steps=graph.i64_array([1] * len(shape)),
    )


def _biases(
    imp: ImportContext,
    node: Node,
    b: Value | None,
    dirs: int,
    gates: int,
    hidden: int,
    split_h: bool,
) -> tuple[Value | None, Value | None]:
    """(Wb + Rb as [D*G*H] for the projection, GRU's Rbh as [D, H] when `split_h`)."""
    if b is None:
        return None, None
    width = gates * hidden
    wb = _slice_last(imp, b, 0, width)
    rb = _slice_last(imp, b, width, width)
    recurrent_bias = None
    if split_h:  # Rbh is applied inside r * (H Rh^T + Rbh): keep it out of the projection
        recurrent_bias = _slice_last(imp, rb, (gates - 1) * hidden, hidden)
        mask = np.ones(width, np.float32)
        mask[(gates - 1) * hidden :] = 0.0
        rb = imp.binary(node, graph.MulOp, rb, Const(mask))
    combined = imp.binary(node, graph.AddOp, wb, rb)
    return imp.reshape(combined, [dirs * width]), recurrent_bias


@converts(*_CELLS)
def _recurrent(imp: ImportContext, node: Node) -> Sequence[Value]:
    cell = _CELLS[node.op_type]
    if node.opset < 7:
        raise node.unsupported("opset < 7 (the output_sequence attribute era)")
    gates = RECURRENT_GATES[cell]
    direction = _text(node.attrs.get("direction", "forward"))
    if direction not in graph.RECURRENT_DIRECTIONS:
        raise node.error(f"direction '{direction}' is not forward, reverse or bidirectional")
    dirs = 2 if direction == "bidirectional" else 1
    layout = int(node.attrs.get("layout", 0))
    if layout not in (0, 1):
        raise node.unsupported(f"layout={layout}")

    given = imp.input(node, 0)
    out_dtype = np.dtype(np.float32) if given is None else dtype_of(given)
    x = _float32_input(imp, node, 0, "X")
    w = _float32_input(imp, node, 1, "W")
    r = _float32_input(imp, node, 2, "R")
    if x is None or w is None or r is None:
        raise node.error("X, W and R are required")
    if len(shape_of(x)) != 3 or len(shape_of(w)) != 3:
        raise node.error(f"X {list(shape_of(x))} and W {list(shape_of(w))} must be 3-D")
    if layout == 1:
        x = imp.transpose(x, [1, 0, 2])
    seq, batch, inputs = shape_of(x)
    hidden = shape_of(w)[1] // gates
    declared = node.attrs.get("hidden_size")
    if declared is not None and int(declared) != hidden:
        raise node.error(f"hidden_size={declared} but W has {shape_of(w)[1]} rows")
    if hidden == 0 or min(seq, batch, inputs) == 0:
        raise node.unsupported(f"empty dims (T={seq}, B={batch}, I={inputs}, H={hidden})")
    _expect_shape(node, w, "W", [dirs, gates * hidden, inputs])
    _expect_shape(node, r, "R", [dirs, gates * hidden, hidden])

    b = _float32_input(imp, node, 3, "B")
    _expect_shape(node, b, "B", [dirs, 2 * gates * hidden])
    sequence_lens = imp.input(node, 4)
    if sequence_lens is not None:
        if dtype_of(sequence_lens) != np.int32:
            raise node.error(f"sequence_lens of type {dtype_of(sequence_lens)} (int32 expected)")
        _expect_shape(node, sequence_lens, "sequence_lens", [batch])
        if isinstance(sequence_lens, Const):  # known now: refused now (else the kernel checks)
            outside = np.flatnonzero((sequence_lens.array < 0) | (sequence_lens.array > seq))
            if outside.size:
                row = int(outside[0])
                raise node.error(
                    f"sequence_lens[{row}] = {int(sequence_lens.array[row])} is out of range "
                    f"for a sequence of length {seq} (valid lengths are 0..{seq})"
                )
    state_shape = [dirs, batch, hidden] if layout == 0 else [batch, dirs, hidden]
    initial_h = _float32_input(imp, node, 5, "initial_h")
    _expect_shape(node, initial_h, "initial_h", state_shape)
    initial_c = peepholes = None
    if cell == "lstm":
        initial_c = _float32_input(imp, node, 6, "initial_c")
        _expect_shape(node, initial_c, "initial_c", state_shape)
        peepholes = _float32_input(imp, node, 7, "P")
        _expect_shape(node, peepholes, "P", [dirs, 3 * hidden])
    if layout == 1:
        initial_h = None if initial_h is None else imp.transpose(initial_h, [1, 0, 2])
        initial_c = None if initial_c is None else imp.transpose(initial_c, [1, 0, 2])

    kinds, params = _activations(node, cell, dirs)
    props: dict[str, object] = {
        "cell": StringAttr(cell),
        "direction": StringAttr(direction),
        "activations": ArrayAttr([StringAttr(k) for k in kinds]),
        "activation_params": graph.f32_array(params),
    }
    if "clip" in node.attrs:
        clip = float(node.attrs["clip"])
        if not clip > 0:
            raise node.error(f"clip={clip} must be positive")
        props["clip"] = f32_attr(clip)
    if cell == "lstm" and int(node.attrs.get("input_forget", 0)):
        props["input_forget"] = UnitAttr()
    linear_before_reset = cell == "gru" and bool(int(node.attrs.get("linear_before_reset", 0)))
    if linear_before_reset:
        props["linear_before_reset"] = UnitAttr()

    # The input projection of all steps: one GEMM with the biases as its epilogue.
    w_t = imp.reshape(imp.transpose(w, [2, 0, 1]), [inputs, dirs * gates * hidden])
    bias, recurrent_bias = _biases(imp, node, b, dirs, gates, hidden, linear_before_reset)
    x_rows = imp.reshape(x, [seq * batch, inputs])
    x_proj = imp.emit(graph.MatMulOp, [x_rows, w_t, bias, None], [seq * batch, shape_of(w_t)[1]])
    x_proj = imp.reshape(x_proj, [seq, batch, dirs * gates * hidden])
    # R^T per gate: r[d, g, k, n] = R[d, g*H + n, k].
    r_t = imp.transpose(imp.reshape(r, [dirs, gates, hidden, hidden]), [0, 1, 3, 2])

    operands = [x_proj, r_t, recurrent_bias, sequence_lens, initial_h, initial_c, peepholes]
    ssa = [None if v is None else imp.materialize(v, node.name) for v in operands]
    state_type = TensorType(f32, [dirs, batch, hidden])
    op = graph.RecurrentOp.build(
        operands=ssa,  # type: ignore[arg-type]
        result_types=[
            TensorType(f32, [seq, dirs, batch, hidden]),
            state_type,
            [state_type] if cell == "lstm" else [],
        ],
        properties=props,  # type: ignore[arg-type]
    )
    imp.block.add_op(op)
    y, y_h = op.y, op.y_h
    outputs: list[Value] = [y, y_h]
    if op.y_c is not None:
        outputs.append(op.y_c)
    if layout == 1:
        outputs = [imp.transpose(y, [2, 0, 1, 3])] + [
            imp.transpose(v, [1, 0, 2]) for v in outputs[1:]
        ]
    if out_dtype != np.float32:
        outputs = [imp.emit(graph.CastOp, [v], shape_of(v), out_dtype) for v in outputs]
    return outputs
