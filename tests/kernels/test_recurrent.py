"""LSTM, GRU and RNN compiled by ember and compared with onnxruntime.

Seeded random weights and inputs; every output (Y, Y_h, Y_c) must satisfy
max |ember - onnxruntime| <= 1e-4 * max |onnxruntime| (float32 on both sides; the
difference is the polynomial sigmoid/tanh and the summation order of the GEMMs).
Weights are initializers (R^T packed at compile time) unless `runtime_weights`, where W, R
and B are graph inputs (the plain-R path). Sizes cover the SIMD tails (H % 8, H % 16), more
batch rows than a GEMM micro-tile (B > MR), and a k-blocked step GEMM (H > 256).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects import arith, func

import ember
from ember.core.context import make_context
from ember.frontend.onnx_importer import import_model
from ember.passes.pipeline import DEFAULT_PIPELINE, build_pipeline
from ember.runtime.errors import UnsupportedOpError
from ember.tests.oracle import assert_close, onnxruntime_outputs

# Small shapes still take the threaded path (see simd.PARALLEL_MIN_FLOPS).
pytestmark = pytest.mark.usefixtures("threads_at_any_size")

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
F, I32 = TensorProto.FLOAT, TensorProto.INT32


def _layer(
    op: str,
    *,
    seq: int = 5,
    batch: int = 3,
    inputs: int = 4,
    hidden: int = 8,
    direction: str = "forward",
    layout: int = 0,
    bias: bool = False,
    initial: bool = False,
    sequence_lens: bool = False,
    peepholes: bool = False,
    runtime_weights: bool = False,
    outputs: tuple[str, ...] | None = None,
    opset: int = 14,
    x_type: int = F,
    seed: int = 0,
    **attrs: Any,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One recurrent node with seeded weights, and seeded feeds for its graph inputs."""
    rng = np.random.default_rng(seed)
    gates, dirs = GATES[op], 2 if direction == "bidirectional" else 1

    def normal(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    scale = 1.0 / np.sqrt(hidden)
    weights = {"W": normal(dirs, gates * hidden, inputs, scale=0.5)}
    weights["R"] = normal(dirs, gates * hidden, hidden, scale=scale)
    names = ["X", "W", "R", "", "", "", "", ""]
    if bias:
        weights["B"] = normal(dirs, 2 * gates * hidden, scale=0.5)
        names[3] = "B"
    x_shape = [seq, batch, inputs] if layout == 0 else [batch, seq, inputs]
    state = [dirs, batch, hidden] if layout == 0 else [batch, dirs, hidden]
    feeds = {"X": normal(*x_shape).astype(helper.tensor_dtype_to_np_dtype(x_type))}
    graph_inputs = [helper.make_tensor_value_info("X", x_type, x_shape)]
    if sequence_lens:
        lens = rng.integers(1, seq + 1, batch).astype(np.int32)
        lens[0] = seq  # at least one full-length sequence
        if batch > 2:
            lens[1] = 0  # and an empty one: its y_h / y_c are zeros (onnxruntime's reading)
        feeds["L"], names[4] = lens, "L"
        graph_inputs.append(helper.make_tensor_value_info("L", I32, [batch]))
    if initial:
        feeds["H0"], names[5] = normal(*state), "H0"
        graph_inputs.append(helper.make_tensor_value_info("H0", F, state))
        if op == "LSTM":
            feeds["C0"], names[6] = normal(*state), "C0"
            graph_inputs.append(helper.make_tensor_value_info("C0", F, state))
    if peepholes:
        weights["P"], names[7] = normal(dirs, 3 * hidden, scale=0.5), "P"
    while names[-1] == "":
        names.pop()
    initializers = []
    for name, array in weights.items():
        # One element type for X and the weights, as the op's type constraint T requires.
        array = array.astype(helper.tensor_dtype_to_np_dtype(x_type))
        if runtime_weights:
            feeds[name] = array
            graph_inputs.append(helper.make_tensor_value_info(name, F, list(array.shape)))
        else:
            initializers.append(numpy_helper.from_array(array, name))
    if outputs is None:
        outputs = ("Y", "Y_h", "Y_c") if op == "LSTM" else ("Y", "Y_h")
    node = helper.make_node(
        op, names, list(outputs), hidden_size=hidden, direction=direction, **attrs
    )
    if layout:
        node.attribute.append(helper.make_attribute("layout", layout))
    graph = helper.make_graph(
        [node],
        op.lower(),
        graph_inputs,
        [helper.make_tensor_value_info(n, F, None) for n in outputs if n],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model, feeds


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "lstm-defaults": ("LSTM", {}),
    "lstm-reverse-bias-initial": ("LSTM", {"direction": "reverse", "bias": True, "initial": True}),
    "lstm-bidirectional-seqlens": (
        "LSTM",
        {"direction": "bidirectional", "bias": True, "initial": True, "sequence_lens": True},
    ),
    "lstm-bidirectional-1-thread": ("LSTM", {"direction": "bidirectional", "threads": 1}),
    "lstm-bidirectional-4-threads": (
        "LSTM",
        {"direction": "bidirectional", "threads": 4, "batch": 5, "sequence_lens": True},
    ),
    "lstm-layout1-seqlens": (
        "LSTM",
        {"direction": "bidirectional", "layout": 1, "initial": True, "sequence_lens": True},
    ),
    "lstm-peepholes-clip-input-forget": (
        "LSTM",
        {"peepholes": True, "bias": True, "clip": 0.7, "input_forget": 1, "initial": True},
    ),
    "lstm-tails-clip": ("LSTM", {"batch": 9, "hidden": 37, "inputs": 11, "clip": 1.5}),
    "lstm-activations": (
        "LSTM",
        {
            "direction": "bidirectional",
            "bias": True,
            "activations": ["HardSigmoid", "Elu", "Softsign", "Sigmoid", "LeakyRelu", "Softplus"],
            "activation_alpha": [0.3, 0.8, 0.2],
            "activation_beta": [0.4],
        },
    ),
    "lstm-runtime-weights": (
        "LSTM",
        {"runtime_weights": True, "bias": True, "peepholes": True, "hidden": 20},
    ),
    "lstm-k-blocked": ("LSTM", {"hidden": 260, "seq": 3, "batch": 2, "bias": True}),
    "lstm-only-y-h": ("LSTM", {"outputs": ("", "Y_h"), "sequence_lens": True}),
    "gru-defaults": ("GRU", {}),
    "gru-linear-before-reset": (
        "GRU",
        {
            "linear_before_reset": 1,
            "bias": True,
            "clip": 0.5,
            "direction": "bidirectional",
            "sequence_lens": True,
            "initial": True,
        },
    ),
    "gru-reset-first-layout1-clip": (
        "GRU",
        {"bias": True, "initial": True, "layout": 1, "clip": 0.9, "hidden": 19, "batch": 7},
    ),
    "gru-activations": (
        "GRU",
        {
            "activations": ["ScaledTanh", "Affine"],
            "activation_alpha": [0.9, 0.5],
            "activation_beta": [1.1, 0.1],
            "bias": True,
        },
    ),
    "gru-wide": ("GRU", {"hidden": 160, "seq": 4, "batch": 2, "bias": True}),
    "gru-runtime-weights": (
        "GRU",
        {"runtime_weights": True, "bias": True, "linear_before_reset": 1, "direction": "reverse"},
    ),
    "rnn-defaults": ("RNN", {}),
    "rnn-bidirectional-seqlens": (
        "RNN",
        {"direction": "bidirectional", "bias": True, "initial": True, "sequence_lens": True},
    ),
    "rnn-relu-layout1": ("RNN", {"activations": ["Relu"], "layout": 1, "bias": True}),
    "rnn-thresholded-relu": (
        "RNN",
        {"activations": ["ThresholdedRelu"], "activation_alpha": [0.1], "hidden": 17},
    ),
}


def _reference(op: str, options: dict[str, Any], feeds: dict[str, np.ndarray]) -> dict:
    """onnxruntime's outputs; it lacks layout 1, so that is layout 0 between transposes."""
    if not options.get("layout"):
        model, _ = _layer(op, **options)
        return onnxruntime_outputs(model, feeds)
    model, _ = _layer(op, **{**options, "layout": 0})
    batch_major = {
        k: v.transpose(1, 0, 2) if k in ("X", "H0", "C0") else v for k, v in feeds.items()
    }
    outputs = onnxruntime_outputs(model, batch_major)
    return {
        k: v.transpose(2, 0, 1, 3) if k == "Y" else v.transpose(1, 0, 2) for k, v in outputs.items()
    }


@pytest.mark.parametrize("case", list(CASES))
def test_recurrent_matches_onnxruntime(case: str) -> None:
    op, options = CASES[case]
    options = dict(options)
    threads = options.pop("threads", 2)
    model, feeds = _layer(op, **options)
    expected = _reference(op, options, feeds)
    actual = ember.compile(model, threads=threads).run(feeds)
    assert_close(actual, expected, rel=1e-4)


def _loop_ir_ops(seq: int) -> tuple[dict[str, int], str]:
    """Ops per function of the lowered module (constants aside: T and T-1 are constants)."""
    model, _ = _layer("LSTM", seq=seq, direction="bidirectional", bias=True, sequence_lens=True)
    module, weights = import_model(model)
    build_pipeline(DEFAULT_PIPELINE).apply(make_context(weights), module)
    counts = {
        fn.sym_name.data: sum(1 for o in fn.walk() if not isinstance(o, arith.ConstantOp))
        for fn in module.ops
        if isinstance(fn, func.FuncOp)
    }
    return counts, str(module)


def test_op_count_does_not_grow_with_sequence_length() -> None:
    short, text = _loop_ir_ops(4)
    long, _ = _loop_ir_ops(64)
    assert short == long
    assert set(short) == {"main", "matmul_1", "recurrent_1"}
    assert "scf.for" in text and "vector.fma" in text
    assert "math.tanh" in text  # the gate activations stay vector math


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"activations": ["Gelu"]}, "activation 'Gelu'"),
        ({"activations": ["ThresholdedRelu"]}, "without an explicit activation_alpha"),
        ({"layout": 2}, "layout=2"),
        ({"x_type": TensorProto.DOUBLE}, "X of type float64"),
        ({"opset": 1}, "opset < 7"),
    ],
)
def test_unsupported_variants_are_refused(options: dict[str, Any], message: str) -> None:
    model, _ = _layer("RNN", **options)
    with pytest.raises(UnsupportedOpError, match=message) as info:
        ember.compile(model)
    assert "RNN" in str(info.value) and "opset" in str(info.value)


def test_stacked_layers_as_exported_by_pytorch() -> None:
    """Bidirectional LSTM -> Transpose -> Reshape -> GRU -> Squeeze (torch.onnx's pattern),
    with a constant initial state: the recurrent ops compose with the rest of the graph."""
    rng = np.random.default_rng(1)
    seq, batch, inputs, hidden = 6, 2, 5, 12

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.4).astype(np.float32)

    constants = {
        "W1": normal(2, 4 * hidden, inputs),
        "R1": normal(2, 4 * hidden, hidden),
        "B1": normal(2, 8 * hidden),
        "H1": np.zeros((2, batch, hidden), np.float32),
        "W2": normal(1, 3 * hidden, 2 * hidden),
        "R2": normal(1, 3 * hidden, hidden),
        "shape": np.array([seq, batch, 2 * hidden], np.int64),
        "axes": np.array([1], np.int64),
    }
    nodes = [
        helper.make_node(
            "LSTM",
            ["X", "W1", "R1", "B1", "", "H1"],
            ["Y1", "Y1_h"],
            hidden_size=hidden,
            direction="bidirectional",
        ),
        helper.make_node("Transpose", ["Y1"], ["T1"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["T1", "shape"], ["X2"]),
        helper.make_node("GRU", ["X2", "W2", "R2"], ["Y2"], hidden_size=hidden),
        helper.make_node("Squeeze", ["Y2", "axes"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "stacked",
        [helper.make_tensor_value_info("X", F, [seq, batch, inputs])],
        [helper.make_tensor_value_info(n, F, None) for n in ("out", "Y1_h")],
        [numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    feeds = {"X": rng.standard_normal((seq, batch, inputs)).astype(np.float32)}
    actual = ember.compile(model, threads=2).run(feeds)
    assert_close(actual, onnxruntime_outputs(model, feeds), rel=1e-4)


@pytest.mark.parametrize("op", list(GATES))
def test_sequence_lens_out_of_range_raise_kernel_error(op: str) -> None:
    """A length above T or below 0 is refused at run time, as onnxruntime refuses it (it was
    clamped silently); a valid run of the same compiled model still matches onnxruntime."""
    model, feeds = _layer(op, sequence_lens=True, direction="bidirectional", batch=5)
    compiled = ember.compile(model, threads=2)
    seq = feeds["X"].shape[0]
    for row, length in ((1, seq + 1), (3, -1)):
        bad = {**feeds, "L": np.array([seq, 1, 2, 0, 3], np.int32)}
        bad["L"][row] = length
        with pytest.raises(Exception, match="sequence_lens"):
            onnxruntime_outputs(model, bad)
        with pytest.raises(ember.KernelError) as info:
            compiled.run(bad)
        message = str(info.value)
        assert f"{op} node 'Y'" in message, message
        assert f"sequence_lens[{row}] = {length} is out of range" in message, message
        assert f"valid lengths are 0..{seq}" in message, message
        assert (info.value.op_type, info.value.value) == (op, length)
    assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), rel=1e-4)


def test_constant_sequence_lens_out_of_range_are_refused_at_compile_time() -> None:
    model, feeds = _layer("GRU", sequence_lens=True)
    lens = feeds["L"].copy()
    lens[2] = 7
    model.graph.input.remove(next(i for i in model.graph.input if i.name == "L"))
    model.graph.initializer.append(numpy_helper.from_array(lens, "L"))
    with pytest.raises(ember.ModelError, match=r"GRU node .*sequence_lens\[2\] = 7 .*0\.\.5"):
        ember.compile(model)
