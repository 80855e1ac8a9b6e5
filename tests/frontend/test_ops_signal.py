"""DFT, STFT and MelWeightMatrix (frontend/ops/signal.py): a DFT is a GEMM with a constant
cos/sin matrix, so each case compiles and runs natively and is compared with numpy's FFT in
float64, with onnx.reference, and with onnxruntime where it implements the variant.

Tolerance: max |error| <= 1e-5 x max |expected| (float32 sums of up to 64 products of
values ~N(0, 1) with unit-magnitude twiddles; the reference FFTs round differently).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.tests.oracle import assert_close, onnxruntime_outputs

REL = 1e-5


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[str],
    opset: int,
    initializers: list[onnx.TensorProto] | None = None,
) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "signal",
        inputs,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=initializers or [],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _i64(name: str, value: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, np.int64), name)


def _dft_model(
    shape: list[int], opset: int, axis: int, length: int | None, **attrs: int
) -> onnx.ModelProto:
    inits = [] if length is None else [_i64("len", length)]
    names = ["x", "len" if length is not None else ""]
    if opset >= 20:
        inits.append(_i64("axis", axis))
        names.append("axis")
    else:
        attrs["axis"] = axis
    node = helper.make_node("DFT", names, ["y"], name="dft", **attrs)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    return _model([node], [x], ["y"], opset, inits)


def _numpy_dft(
    x: np.ndarray, axis: int, length: int | None, inverse: bool, onesided: bool
) -> np.ndarray:
    """The DFT by numpy's FFT in float64 (axis counted on x without its parts axis)."""
    z = x[..., 0].astype(np.float64) + (1j * x[..., 1] if x.shape[-1] == 2 else 0)
    if inverse and onesided:
        n = length or 2 * (z.shape[axis] - 1)
        return np.fft.irfft(z, n=n, axis=axis)[..., None]
    n = length or z.shape[axis]
    y = np.fft.ifft(z, n=n, axis=axis) if inverse else np.fft.fft(z, n=n, axis=axis)
    if onesided:
        y = np.take(y, np.arange(n // 2 + 1), axis=axis)
    return np.stack([y.real, y.imag], axis=-1)


DFT_CASES = [
    # shape, opset, axis, dft_length, inverse, onesided, onnxruntime implements it
    ([2, 16, 1], 17, 1, None, 0, 0, True),
    ([2, 16, 2], 17, 1, None, 0, 0, True),
    ([3, 5, 12, 1], 20, -2, None, 0, 1, True),
    ([3, 12, 5, 2], 20, 1, None, 1, 0, True),
    ([2, 7, 1], 20, 1, 11, 0, 0, True),  # zero-padded to a longer transform
    ([2, 20, 1], 17, 1, 9, 0, 1, True),  # truncated, odd length, onesided
    ([2, 20, 2], 17, 1, 9, 0, 0, True),  # truncated, complex
    ([2, 6, 3, 2], 20, 1, None, 1, 1, False),  # irfft, default length 2·(6-1)
    ([2, 5, 2], 20, 1, 9, 1, 1, False),  # irfft of an odd length
    ([4, 33, 1], 20, 1, 64, 0, 1, True),  # rfft of a power of two, padded
]


@pytest.mark.parametrize(
    ("shape", "opset", "axis", "length", "inverse", "onesided", "ort"), DFT_CASES
)
def test_dft_matches_numpy_reference_and_onnxruntime(
    shape: list[int],
    opset: int,
    axis: int,
    length: int | None,
    inverse: int,
    onesided: int,
    ort: bool,
) -> None:
    model = _dft_model(shape, opset, axis, length, inverse=inverse, onesided=onesided)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    (y,) = ember.compile(model)(x)
    expected = _numpy_dft(x, axis % len(shape), length, bool(inverse), bool(onesided))
    assert_close({"y": y}, {"y": expected}, rel=REL)
    (reference,) = ReferenceEvaluator(model).run(None, {"x": x})
    assert_close({"y": y}, {"y": reference}, rel=REL)
    if ort:
        assert_close({"y": y}, onnxruntime_outputs(model, {"x": x}), rel=REL)


def test_a_dft_imports_as_one_matmul_with_a_constant_matrix() -> None:
    """The transform runs on the GEMM kernel: one graph.matmul whose B is a constant (packed
    at compile time), between the data-movement ops that bring the signal axis next to the
    real/imaginary one; no other compute op."""
    from ember.frontend.onnx_importer import import_model

    module, weights = import_model(_dft_model([3, 16, 5, 2], 20, 1, None))
    names = [op.name for op in module.walk() if op.name.startswith("graph.")]
    assert names.count("graph.matmul") == 1
    assert set(names) <= {"graph.matmul", "graph.constant", "graph.transpose", "graph.reshape"}
    matmul = next(op for op in module.walk() if op.name == "graph.matmul")
    assert matmul.operands[1].owner.name == "graph.constant"


def test_dft_length_given_at_run_time_is_specialised_on_its_value() -> None:
    node = helper.make_node("DFT", ["x", "n"], ["y"], name="dft", axis=1)
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 1]),
        helper.make_tensor_value_info("n", TensorProto.INT64, []),
    ]
    model = _model([node], inputs, ["y"], 17)
    compiled = ember.compile(model)
    x = np.random.default_rng(1).standard_normal((2, 8, 1)).astype(np.float32)
    for length in (8, 12, 5):
        n = np.array(length, np.int64)
        (y,) = compiled(x, n)
        assert_close({"y": y}, {"y": _numpy_dft(x, 1, length, False, False)}, rel=REL)


def test_dft_refuses_the_parts_axis_a_bad_last_dim_and_a_onesided_complex_input() -> None:
    with pytest.raises(ember.ModelError, match="DFT node 'dft'.*axis 2 out of range"):
        ember.compile(_dft_model([2, 8, 1], 17, 2, None))
    with pytest.raises(ember.ModelError, match="DFT node 'dft'.*last axis must be 1 .*or 2"):
        ember.compile(_dft_model([2, 8, 3], 17, 1, None))
    with pytest.raises(ember.ModelError, match="DFT node 'dft'.*onesided=1 on a complex input"):
        ember.compile(_dft_model([2, 8, 2], 17, 1, None, onesided=1))


def test_a_dft_whose_matrix_outgrows_compile_time_folding_is_refused_by_name() -> None:
    with pytest.raises(ember.UnsupportedOpError, match="DFT.*'dft'.*a 8192-point transform"):
        ember.compile(_dft_model([1, 8192, 2], 17, 1, None))


def _stft_model(
    signal: list[int],
    step: int,
    window: np.ndarray | None,
    window_at_run_time: bool,
    frame_length: int | None,
    **attrs: int,
) -> onnx.ModelProto:
    inits = [_i64("step", step)]
    inputs = [helper.make_tensor_value_info("signal", TensorProto.FLOAT, signal)]
    names = ["signal", "step", "", ""]
    if window is not None:
        names[2] = "window"
        if window_at_run_time:
            inputs.append(helper.make_tensor_value_info("window", TensorProto.FLOAT, window.shape))
        else:
            inits.append(numpy_helper.from_array(window, "window"))
    if frame_length is not None:
        names[3] = "frame_length"
        inits.append(_i64("frame_length", frame_length))
    node = helper.make_node("STFT", names, ["y"], name="stft", **attrs)
    return _model([node], inputs, ["y"], 17, inits)


STFT_CASES = [
    # signal shape, frame_step, window length (None: none), window at run time, frame_length, attrs
    ([2, 128, 1], 16, 32, False, None, {}),
    ([1, 100, 1], 10, 24, True, 24, {"onesided": 1}),
    ([2, 64, 1], 8, None, False, 16, {"onesided": 0}),
    ([1, 50, 2], 7, 12, False, None, {"onesided": 0}),  # complex signal
]


@pytest.mark.parametrize(("signal", "step", "win", "run_time", "frame_length", "attrs"), STFT_CASES)
def test_stft_matches_onnxruntime_and_reference(
    signal: list[int],
    step: int,
    win: int | None,
    run_time: bool,
    frame_length: int | None,
    attrs: dict[str, int],
) -> None:
    rng = np.random.default_rng(2)
    window = None if win is None else np.hanning(win).astype(np.float32) + 0.1
    model = _stft_model(signal, step, window, run_time, frame_length, **attrs)
    feeds = {"signal": rng.standard_normal(signal).astype(np.float32)}
    if run_time:
        feeds["window"] = window
    (y,) = ember.compile(model)(*feeds.values())
    expected = onnxruntime_outputs(model, feeds)
    assert_close({"y": y}, expected, rel=REL)
    (reference,) = ReferenceEvaluator(model).run(None, feeds)
    assert_close({"y": y}, {"y": reference}, rel=REL)


def test_stft_with_frame_step_at_run_time_is_refused_naming_it_without_specialisation() -> None:
    from ember.frontend.onnx_importer import import_model

    node = helper.make_node("STFT", ["signal", "step", "", "len"], ["y"], name="stft")
    inputs = [
        helper.make_tensor_value_info("signal", TensorProto.FLOAT, [1, 64, 1]),
        helper.make_tensor_value_info("step", TensorProto.INT64, []),
    ]
    model = _model([node], inputs, ["y"], 17, [_i64("len", 16)])
    with pytest.raises(ember.RuntimeOperandError, match="STFT.*'stft'.*frame_step"):
        import_model(model)


def test_mel_weight_matrix_folds_to_the_reference_values() -> None:
    names = ["bins", "n", "rate", "lo", "hi"]
    inits = [
        _i64("bins", 8),
        _i64("n", 64),
        _i64("rate", 16000),
        numpy_helper.from_array(np.array(20.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(7600.0, np.float32), "hi"),
    ]
    node = helper.make_node("MelWeightMatrix", names, ["y"], name="mel")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 33])
    mat = helper.make_node("MatMul", ["x", "y"], ["z"], name="apply")
    model = _model([node, mat], [x], ["z"], 17, inits)
    (reference,) = ReferenceEvaluator(model).run(None, {"x": np.eye(33, dtype=np.float32)[:1]})
    feed = np.random.default_rng(3).standard_normal((1, 33)).astype(np.float32)
    (z,) = ember.compile(model)(feed)
    assert_close({"z": z}, onnxruntime_outputs(model, {"x": feed}), rel=1e-6)
    (ref_z,) = ReferenceEvaluator(model).run(None, {"x": feed})
    assert_close({"z": z}, {"z": ref_z}, rel=1e-6)
    assert reference.shape == (1, 8)


def test_mel_weight_matrix_past_the_spectrum_is_refused() -> None:
    inits = [
        _i64("bins", 8),
        _i64("n", 64),
        _i64("rate", 16000),
        numpy_helper.from_array(np.array(20.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(12000.0, np.float32), "hi"),  # above Nyquist
    ]
    node = helper.make_node("MelWeightMatrix", ["bins", "n", "rate", "lo", "hi"], ["y"], name="mel")
    model = _model([node], [], ["y"], 17, inits)
    with pytest.raises(ember.ModelError, match="MelWeightMatrix node 'mel'.*outside the 33 bins"):
        ember.compile(model)


def test_a_speech_front_end_matches_onnxruntime() -> None:
    """log-mel features: STFT (hann window, 400-sample frames every 160) -> power spectrum ->
    mel filterbank (MelWeightMatrix, folded) -> log, as a Whisper/wav2vec-style front end."""
    frame, hop, mels = 400, 160, 40
    inits = [
        _i64("step", hop),
        numpy_helper.from_array(np.hanning(frame).astype(np.float32), "window"),
        _i64("bins", mels),
        _i64("n", frame),
        _i64("rate", 16000),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(8000.0, np.float32), "hi"),
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
        numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("STFT", ["audio", "step", "window"], ["spec"], onesided=1),
        helper.make_node("Mul", ["spec", "spec"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "last"], ["power"], keepdims=0),
        helper.make_node("MelWeightMatrix", ["bins", "n", "rate", "lo", "hi"], ["mel"]),
        helper.make_node("MatMul", ["power", "mel"], ["mel_power"]),
        helper.make_node("Add", ["mel_power", "eps"], ["floored"]),
        helper.make_node("Log", ["floored"], ["features"]),
    ]
    audio = helper.make_tensor_value_info("audio", TensorProto.FLOAT, [2, 3200, 1])
    model = _model(nodes, [audio], ["features"], 17, inits)
    feeds = {"audio": np.random.default_rng(4).standard_normal((2, 3200, 1)).astype(np.float32)}
    (features,) = ember.compile(model)(feeds["audio"])
    expected = onnxruntime_outputs(model, feeds)
    assert features.shape == (2, 18, mels)
    assert_close({"features": features}, expected, rel=1e-4)
