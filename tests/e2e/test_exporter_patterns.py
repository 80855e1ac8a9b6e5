"""What real exporters write (torch.onnx's two exporters, tf2onnx, the ONNX Model Zoo's old
opsets), as small onnx.helper graphs with seeded weights, checked against onnxruntime.

Each test reproduces a pattern that ember once refused, crashed on or computed differently
(tests/exporters/ exports the real zoo with torch; this file needs no torch).
Tolerance: assert_close's default, max |ember - onnxruntime| <= 1e-4 x max |onnxruntime|.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.tests.oracle import assert_close, onnxruntime_outputs


def _model(
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    opset: int,
    shape: list[int],
    outputs: tuple[str, ...] = ("y",),
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "pattern",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _check(model: onnx.ModelProto, x: np.ndarray) -> None:
    assert_close(ember.compile(model).run({"x": x}), onnxruntime_outputs(model, {"x": x}))


@pytest.mark.parametrize("nearest_mode", ["floor", "round_prefer_floor", "ceil"])
def test_resize_tf_half_pixel_for_nn(nearest_mode: str) -> None:
    """tf2onnx writes opset-11 Resize with coordinate_transformation_mode tf_half_pixel_for_nn
    (a ValueError inside the importer before). Height 8 x 1.7 puts output row 8 at 8.5 / 1.7,
    5 in float32 but just below it in float64: floor must give 5, as onnxruntime does."""
    scales = numpy_helper.from_array(np.array([1, 1, 1.7, 0.6], np.float32), "scales")
    roi = numpy_helper.from_array(np.zeros(0, np.float32), "roi")
    resize = helper.make_node(
        "Resize",
        ["x", "roi", "scales"],
        ["y"],
        mode="nearest",
        coordinate_transformation_mode="tf_half_pixel_for_nn",
        nearest_mode=nearest_mode,
    )
    x = np.random.default_rng(0).standard_normal((1, 2, 8, 8)).astype(np.float32)
    _check(_model([resize], [roi, scales], 11, [1, 2, 8, 8]), x)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("coordinate_transformation_mode", "bogus"), ("nearest_mode", "nearest_even")],
)
def test_resize_unknown_mode_is_a_model_error(attribute: str, value: str) -> None:
    """An unknown mode names the attribute and the modes ONNX defines (was a ValueError)."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    resize = helper.make_node("Resize", ["x", "", "scales"], ["y"], **{attribute: value})
    model = _model([resize], [scales], 13, [1, 1, 4, 4])
    with pytest.raises(ember.ModelError, match=f"{attribute} '{value}' is not one of"):
        ember.compile(model)


@pytest.mark.parametrize(("opset", "mode"), [(7, "nearest"), (8, "linear")])
def test_upsample_scales_attribute(opset: int, mode: str) -> None:
    """Upsample-7 (Model Zoo models of opsets 7-8) has its scales as an attribute; it was
    refused with 'one of scales and sizes must be given'."""
    upsample = helper.make_node("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 2.0, 3.0], mode=mode)
    x = np.random.default_rng(1).standard_normal((1, 3, 5, 4)).astype(np.float32)
    _check(_model([upsample], [], opset, [1, 3, 5, 4]), x)


def test_image_scaler() -> None:
    """ImageScaler (experimental, opsets 1-9; tiny YOLOv2 of the Model Zoo starts with it):
    onnx has no schema for it any more, onnxruntime still runs it."""
    scaler = helper.make_node("ImageScaler", ["x"], ["s"], bias=[1.0, -2.0, 0.5], scale=1 / 255)
    relu = helper.make_node("Relu", ["s"], ["y"])
    x = np.random.default_rng(2).uniform(0, 255, (2, 3, 4, 4)).astype(np.float32)
    _check(_model([scaler, relu], [], 8, [2, 3, 4, 4]), x)


@pytest.mark.parametrize(
    ("mode", "padding", "align_corners"),
    [("bilinear", "zeros", 0), ("bilinear", "border", 1), ("nearest", "zeros", 1)],
)
def test_grid_sample(mode: str, padding: str, align_corners: int) -> None:
    """GridSample (F.grid_sample: spatial transformers, OCR rectification) was unsupported.
    The grid reaches past [-1, 1] so that padding is exercised, and hits a pixel centre and
    the image's corner exactly."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    grid = rng.uniform(-1.3, 1.3, (2, 4, 6, 2)).astype(np.float32)
    grid[0, 0, :2] = [[1.0, -1.0], [0.0, 0.0]]
    node = helper.make_node(
        "GridSample",
        ["x", "grid"],
        ["y"],
        mode=mode,
        padding_mode=padding,
        align_corners=align_corners,
    )
    graph = helper.make_graph(
        [node],
        "grid_sample",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape)),
            helper.make_tensor_value_info("grid", TensorProto.FLOAT, list(grid.shape)),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    feeds = {"x": x, "grid": grid}
    assert_close(ember.compile(model).run(feeds), onnxruntime_outputs(model, feeds))


def _grid_sample_model(
    x_shape: list[int], grid_shape: list[int], opset: int, **attrs: object
) -> onnx.ModelProto:
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "grid_sample",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
            helper.make_tensor_value_info("grid", TensorProto.FLOAT, grid_shape),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(
    ("mode", "padding", "align_corners", "x_shape"),
    [
        ("bicubic", "zeros", 0, [2, 3, 5, 7]),
        ("bicubic", "border", 1, [2, 3, 5, 7]),
        ("bicubic", "reflection", 0, [2, 3, 5, 7]),
        ("bicubic", "reflection", 1, [1, 2, 4, 1]),
        ("bilinear", "reflection", 1, [2, 3, 5, 7]),
        ("nearest", "reflection", 0, [2, 3, 5, 7]),
    ],
)
def test_grid_sample_cubic_and_reflection(
    mode: str, padding: str, align_corners: int, x_shape: list[int]
) -> None:
    """Bicubic sampling (16 taps, A = -0.75) and reflection padding were refused. The grid
    reaches to 3x the image so that taps fold more than once; a 1-pixel-wide axis (where
    reflection has no span) is sampled too. Padding applies to the taps, not to the
    coordinate (onnxruntime, PyTorch; onnx.reference differs for cubic + border).
    vs onnxruntime, max |error| <= 1e-5 * max |expected|."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(np.float32)
    grid = rng.uniform(-3.0, 3.0, (x_shape[0], 4, 6, 2)).astype(np.float32)
    grid[0, 0, :3] = [[1.0, -1.0], [0.0, 0.0], [-1.0, 1.0]]
    model = _grid_sample_model(
        x_shape,
        list(grid.shape),
        16,
        mode=mode,
        padding_mode=padding,
        align_corners=align_corners,
    )
    feeds = {"x": x, "grid": grid}
    assert_close(ember.compile(model).run(feeds), onnxruntime_outputs(model, feeds), rel=1e-5)


@pytest.mark.parametrize(
    ("mode", "padding", "align_corners"),
    [("linear", "zeros", 0), ("linear", "border", 1), ("nearest", "reflection", 1)],
)
def test_grid_sample_volumetric(mode: str, padding: str, align_corners: int) -> None:
    """5-D GridSample (opset 20: trilinear and nearest over [N, C, D, H, W]) was refused.
    vs onnxruntime, max |error| <= 1e-5 * max |expected|."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    grid = rng.uniform(-1.5, 1.5, (2, 3, 2, 4, 3)).astype(np.float32)
    model = _grid_sample_model(
        list(x.shape),
        list(grid.shape),
        20,
        mode=mode,
        padding_mode=padding,
        align_corners=align_corners,
    )
    feeds = {"x": x, "grid": grid}
    assert_close(ember.compile(model).run(feeds), onnxruntime_outputs(model, feeds), rel=1e-5)


def test_grid_sample_cubic_on_5d_is_an_error() -> None:
    model = _grid_sample_model([1, 1, 2, 3, 4], [1, 2, 2, 2, 3], 20, mode="cubic")
    with pytest.raises(ember.ModelError, match="mode 'cubic' on a 5-D input"):
        ember.compile(model)


@pytest.mark.parametrize("op_type", ["LSTM", "GRU"])
def test_float16_recurrent_layer(op_type: str) -> None:
    """A model exported in float16 (module.half()) writes its LSTM/GRU in float16; it was
    refused. onnxruntime's CPU casts around its float32 kernel, as ember now does: widen,
    compute in float32, round each output once. Tolerance: 2e-3 x max |ref| (a float16 ulp is
    ~1e-3 relative; float32 sums in another order may round to the neighbouring one)."""
    rng = np.random.default_rng(4)
    gates, hidden, inputs, seq, batch = (4 if op_type == "LSTM" else 3), 5, 3, 6, 2

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.4).astype(np.float16)

    inits = [
        numpy_helper.from_array(weight(2, gates * hidden, inputs), "W"),
        numpy_helper.from_array(weight(2, gates * hidden, hidden), "R"),
        numpy_helper.from_array(weight(2, 2 * gates * hidden), "B"),
    ]
    outputs = ["y", "y_h"]
    node = helper.make_node(
        op_type,
        ["x", "W", "R", "B"],
        outputs,
        hidden_size=hidden,
        direction="bidirectional",
    )
    graph = helper.make_graph(
        [node],
        "recurrent_f16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [seq, batch, inputs])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT16, None) for o in outputs],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((seq, batch, inputs)).astype(np.float16)
    got = ember.compile(model).run({"x": x})
    assert all(v.dtype == np.float16 for v in got.values())
    assert_close(got, onnxruntime_outputs(model, {"x": x}), rel=2e-3)


def _causal_mask_model() -> onnx.ModelProto:
    """torch.triu(torch.full((t, t), -inf), 1) added to attention scores, t from the scores'
    shape: Shape -> Gather -> Unsqueeze -> Concat -> ConstantOfShape(-inf) -> Trilu."""
    n = helper.make_node
    minus_inf = numpy_helper.from_array(np.array([-np.inf], np.float32))
    nodes = [
        n("Shape", ["x"], ["shape"]),
        n("Gather", ["shape", "two"], ["t"], axis=0),
        n("Unsqueeze", ["t", "zero_axis"], ["t1"]),
        n("Concat", ["t1", "t1"], ["tt"], axis=0),
        n("ConstantOfShape", ["tt"], ["full"], value=minus_inf),
        n("Trilu", ["full", "one"], ["mask"], upper=1),
        n("Add", ["x", "mask"], ["masked"]),
        n("Softmax", ["masked"], ["y"], axis=-1),
    ]
    inits = [
        numpy_helper.from_array(np.array(2, np.int64), "two"),
        numpy_helper.from_array(np.array([0], np.int64), "zero_axis"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
    ]
    return _model(nodes, inits, 17, ["batch", 4, "seq", "seq"], ("y", "mask"))


@pytest.mark.parametrize("pinned", [False, True], ids=["symbolic", "pinned"])
def test_causal_mask_from_trilu_of_minus_inf(pinned: bool) -> None:
    """A hand-written Llama's causal mask: Trilu kept the triangle by multiplying with a 0/1
    mask, and -inf * 0 is NaN, so every softmax row was NaN (pinned: folded the same way)."""
    x = np.random.default_rng(5).standard_normal((2, 4, 5, 5)).astype(np.float32)
    shapes = {"x": list(x.shape)} if pinned else None
    model = _causal_mask_model()
    got, want = (
        ember.compile(model, input_shapes=shapes).run({"x": x}),
        onnxruntime_outputs(model, {"x": x}),
    )
    # assert_allclose, not assert_close: the mask output holds -inf (equal infinities pass)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_trilu_keeps_infinities_and_zeroes_nan() -> None:
    """Trilu of a run-time tensor holding inf/NaN: the dropped triangle is exactly 0."""
    n = helper.make_node
    nodes = [n("Trilu", ["x"], ["upper"], upper=1), n("Trilu", ["x", "k"], ["lower"], upper=0)]
    k = numpy_helper.from_array(np.array(-1, np.int64), "k")
    x = np.random.default_rng(6).standard_normal((3, 4, 5)).astype(np.float32)
    x[0, 3, 0], x[1, 0, 4], x[2, 2, 1] = np.inf, -np.inf, np.nan
    model = _model(nodes, [k], 17, [3, 4, 5], ("upper", "lower"))
    got, want = ember.compile(model).run({"x": x}), onnxruntime_outputs(model, {"x": x})
    for name in want:  # exact: a select moves values, inf and NaN included
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_stft_of_a_two_dimensional_signal() -> None:
    """torch.stft exported by torch.onnx: a real signal [batch, length] without the trailing
    parts axis the spec shows (onnxruntime reads it as real); it was refused. Hann window,
    frame 64, hop 16, then the power spectrum as audio front ends take it."""
    n = helper.make_node
    window = np.hanning(66)[1:-1].astype(np.float32)
    nodes = [
        n("STFT", ["x", "step", "window", "length"], ["spec"], onesided=1),
        n("Mul", ["spec", "spec"], ["squares"]),
        n("ReduceSum", ["squares", "last"], ["y"], keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(np.array(16, np.int64), "step"),
        numpy_helper.from_array(window, "window"),
        numpy_helper.from_array(np.array(64, np.int64), "length"),
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
    ]
    model = _model(nodes, inits, 17, ["batch", "samples"])
    x = np.random.default_rng(7).standard_normal((2, 400)).astype(np.float32)
    _check(model, x)


def _growing_loop_model(exit_on_data: bool) -> onnx.ModelProto:
    """torch.jit.script's `for i in range(x.size(1)): out = torch.cat([out, f(x[:, i])], 1)`:
    a Loop over M = Shape(x)[1] whose carried `out` grows by one column per iteration."""
    n = helper.make_node
    body_nodes = [
        n("Gather", ["x", "i"], ["column"], axis=1),
        n("Tanh", ["column"], ["step"]),
        n("Unsqueeze", ["step", "axis1"], ["step1"]),
        n("Concat", ["out_in", "step1"], ["out_out"], axis=1),
    ]
    if exit_on_data:  # a greedy decoder's `if (tok == eos).all(): break`
        body_nodes += [
            n("ReduceMax", ["step"], ["peak"], keepdims=0),
            n("Less", ["peak", "half"], ["cond_out"]),
        ]
    else:
        body_nodes.append(n("Identity", ["cond_in"], ["cond_out"]))
    body = helper.make_graph(
        body_nodes,
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("out_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("out_out", TensorProto.FLOAT, None),
        ],
    )
    nodes = [
        n("Shape", ["x"], ["shape"]),
        n("Gather", ["shape", "zero"], ["batch"]),
        n("Gather", ["shape", "one"], ["steps"]),
        n("Concat", ["batch", "no_columns", "width"], ["empty_shape"], axis=0),
        n(
            "ConstantOfShape",
            ["empty_shape"],
            ["empty"],
            value=helper.make_tensor("", 1, [1], [0.0]),
        ),
        n("Squeeze", ["steps"], ["trip_count"]),
        n("Loop", ["trip_count", "true", "empty"], ["y"], body=body),
    ]
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([0], np.int64), "no_columns"),
        numpy_helper.from_array(np.array([4], np.int64), "width"),
        numpy_helper.from_array(np.array(True), "true"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    return _model(nodes, inits, 17, ["batch", "steps", 4])


@pytest.mark.parametrize("shape", [(2, 5, 4), (3, 1, 4)])
def test_loop_growing_a_carried_tensor(shape: tuple[int, ...]) -> None:
    """The body changes the carried value's shape each iteration ([b, 0, 4] -> [b, 1, 4]
    ...): refused before ('ember's loops keep each carried value's shape'), now unrolled for
    the trip count the input's shape gives."""
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    _check(_growing_loop_model(exit_on_data=False), x)


def test_loop_growing_a_carried_tensor_with_a_data_dependent_exit_is_refused() -> None:
    """A break on data leaves the output's size unknown at compile time: a clear refusal."""
    with pytest.raises(ember.UnsupportedOpError, match="computed at run time"):
        ember.compile(_growing_loop_model(exit_on_data=True), input_shapes={"x": [2, 5, 4]})
