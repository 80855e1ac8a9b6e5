"""RoiAlign, DeformConv (frontend/ops/detection.py), Det (linalg.py), Col2Im (conv.py) and
TensorScatter (indexing.py): compositions of ember's kernels, compiled and run natively and
compared with onnxruntime and onnx.reference on seeded random inputs.

Tolerances: max |error| <= 1e-5 x max |expected| for the gathers and sums (float32, a few
dozen terms); Det 1e-4 relative per matrix (elimination in float32 vs LAPACK's, both
pivoting); Col2Im and TensorScatter move or add exactly, 1e-6.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.tests.oracle import assert_close, onnxruntime_outputs


def _model(
    op: str,
    inputs: list[tuple[str, int, list[int]]],
    opset: int,
    initializers: list[onnx.TensorProto] | None = None,
    **attrs: object,
) -> onnx.ModelProto:
    names = [name for name, _, _ in inputs] + [t.name for t in initializers or []]
    node = helper.make_node(op, names, ["y"], name="node", **attrs)
    g = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=initializers or [],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rel: float) -> np.ndarray:
    (y,) = ember.compile(model)(*feeds.values())
    assert_close({"y": y}, onnxruntime_outputs(model, feeds), rel=rel)
    (reference,) = ReferenceEvaluator(model).run(None, feeds)
    assert_close({"y": y}, {"y": reference}, rel=rel)
    return y


# --- RoiAlign -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "transform", "scale", "ratio"),
    [
        ("avg", "half_pixel", 1.0, 2),
        ("avg", "output_half_pixel", 0.5, 3),
        ("max", "half_pixel", 0.25, 1),
    ],
)
def test_roi_align_matches_onnxruntime_and_reference(
    mode: str, transform: str, scale: float, ratio: int
) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 12, 10)).astype(np.float32)
    # Boxes inside, across the border, past it, degenerate (x2 < x1), in image coordinates.
    rois = np.array(
        [[1, 1, 6, 7], [-3, 2, 4, 14], [8, 9, 15, 16], [5, 5, 5.5, 5.2], [6, 3, 2, 8]],
        np.float32,
    ) / np.float32(scale)
    batch = np.array([0, 1, 1, 0, 1], np.int64)
    model = _model(
        "RoiAlign",
        [("x", 1, [2, 3, 12, 10]), ("rois", 1, [5, 4]), ("batch", 7, [5])],
        16,  # onnxruntime implements RoiAlign up to opset 16 (22 only added types)
        mode=mode,
        coordinate_transformation_mode=transform,
        output_height=3,
        output_width=4,
        sampling_ratio=ratio,
        spatial_scale=scale,
    )
    y = _check(model, {"x": x, "rois": rois, "batch": batch}, 1e-5)
    assert y.shape == (5, 3, 3, 4)


@pytest.mark.parametrize("ratio", [1, 0])
def test_roi_align_batch_index_out_of_range_is_a_kernel_error(ratio: int) -> None:
    model = _model(
        "RoiAlign",
        [("x", 1, [2, 1, 4, 4]), ("rois", 1, [1, 4]), ("batch", 7, [1])],
        10,  # RoiAlign's first opset: the decomposition's ops are spelled for it
        sampling_ratio=ratio,
    )
    compiled = ember.compile(model)
    x, rois = np.ones((2, 1, 4, 4), np.float32), np.array([[0, 0, 2, 2]], np.float32)
    for bad in (-1, 2):
        with pytest.raises(ember.KernelError):
            compiled(x, rois, np.array([bad], np.int64))


@pytest.mark.parametrize(
    ("mode", "transform", "scale"),
    [
        ("avg", "half_pixel", 1.0),
        ("avg", "output_half_pixel", 0.5),
        ("max", "half_pixel", 0.25),
        ("max", "output_half_pixel", 1.0),
    ],
)
def test_roi_align_adaptive_sampling_matches_onnxruntime(
    mode: str, transform: str, scale: float
) -> None:
    """sampling_ratio 0 (the ONNX default, detectron2-style exports) was refused: each box
    takes ceil(box size / output size) samples per bin, here from 1 to 6 per axis, and 0 for a
    degenerate half_pixel box. vs onnxruntime (and onnx.reference for avg; its max mode
    differs from onnxruntime's max of weighted taps), max |error| <= 1e-5 * max |expected|."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 12, 10)).astype(np.float32)
    rois = np.array(
        [
            [0, 0, 9, 11.5],  # the whole image: 4 x 5 samples per bin at scale 1
            [1.5, 2.2, 3.1, 4.0],  # small: 1 x 1
            [-3, -2, 20, 25],  # past the image: 9 x 12
            [5, 5, 4, 4],  # degenerate (x2 < x1)
            [2, 1, 9.7, 8.3],
            [0.3, 0.1, 0.9, 0.6],
        ],
        np.float32,
    ) / np.float32(scale)
    batch = np.array([0, 1, 1, 0, 1, 0], np.int64)
    model = _model(
        "RoiAlign",
        [("x", 1, [2, 3, 12, 10]), ("rois", 1, [6, 4]), ("batch", 7, [6])],
        16,
        mode=mode,
        coordinate_transformation_mode=transform,
        output_height=3,
        output_width=2,
        sampling_ratio=0,
        spatial_scale=scale,
    )
    feeds = {"x": x, "rois": rois, "batch": batch}
    (y,) = ember.compile(model)(*feeds.values())
    assert_close({"y": y}, onnxruntime_outputs(model, feeds), rel=1e-5)
    if mode == "avg":
        (reference,) = ReferenceEvaluator(model).run(None, feeds)
        assert_close({"y": y}, {"y": reference}, rel=1e-5)


def test_roi_align_adaptive_sampling_of_float64_is_refused_by_name() -> None:
    model = _model(
        "RoiAlign", [("x", 11, [1, 1, 4, 4]), ("rois", 11, [1, 4]), ("batch", 7, [1])], 16
    )
    with pytest.raises(ember.UnsupportedOpError, match="RoiAlign.*'node'.*sampling_ratio 0"):
        ember.compile(model)


# --- DeformConv ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "out_channels", "group", "offset_group", "kernel", "attrs", "with_bias_mask"),
    [
        (2, 3, 1, 1, [3, 3], {"pads": [1, 1, 1, 1]}, False),
        (4, 4, 2, 2, [2, 3], {"strides": [2, 1], "dilations": [1, 2]}, True),
    ],
)
def test_deform_conv_matches_onnxruntime_and_reference(
    channels: int,
    out_channels: int,
    group: int,
    offset_group: int,
    kernel: list[int],
    attrs: dict[str, list[int]],
    with_bias_mask: bool,
) -> None:
    rng = np.random.default_rng(1)
    h, w = 7, 8
    strides, dilations = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1])
    pads = attrs.get("pads", [0, 0, 0, 0])
    oh = (h + pads[0] + pads[2] - dilations[0] * (kernel[0] - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dilations[1] * (kernel[1] - 1) - 1) // strides[1] + 1
    taps = kernel[0] * kernel[1]
    feeds = {
        "x": rng.standard_normal((2, channels, h, w)).astype(np.float32),
        "w": rng.standard_normal((out_channels, channels // group, *kernel)).astype(np.float32),
        # Offsets of a few pixels: taps land inside, between pixels and outside the image.
        "offset": (2.5 * rng.standard_normal((2, offset_group * taps * 2, oh, ow))).astype(
            np.float32
        ),
    }
    inputs = [
        ("x", 1, list(feeds["x"].shape)),
        ("w", 1, list(feeds["w"].shape)),
        ("offset", 1, list(feeds["offset"].shape)),
    ]
    if with_bias_mask:
        feeds["b"] = rng.standard_normal(out_channels).astype(np.float32)
        feeds["mask"] = rng.uniform(0, 1, (2, offset_group * taps, oh, ow)).astype(np.float32)
        inputs += [("b", 1, [out_channels]), ("mask", 1, list(feeds["mask"].shape))]
    model = _model(
        "DeformConv",
        inputs,
        22,
        kernel_shape=kernel,
        group=group,
        offset_group=offset_group,
        **attrs,
    )
    _check(model, feeds, 1e-5)


def test_deform_conv_of_one_dim_is_refused_by_name() -> None:
    model = _model(
        "DeformConv",
        [("x", 1, [1, 1, 5]), ("w", 1, [1, 1, 2]), ("offset", 1, [1, 2, 4])],
        22,
        kernel_shape=[2],
    )
    with pytest.raises(ember.UnsupportedOpError, match="DeformConv.*'node'.*2-D"):
        ember.compile(model)


# --- Det -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [[3, 3], [2, 3, 4, 4], [1, 1, 1]])
def test_det_matches_numpy_and_onnxruntime(shape: list[int]) -> None:
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    model = _model("Det", [("x", 1, shape)], 22)
    (y,) = ember.compile(model)(x)
    expected = np.linalg.det(x.astype(np.float64))
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y, onnxruntime_outputs(model, {"x": x})["y"], rtol=1e-4, atol=1e-5)


def test_det_of_singular_and_pivoting_matrices() -> None:
    matrices = np.array(
        [
            [[0, 1, 2], [1, 0, 3], [4, -3, 8]],  # a zero first pivot: needs a swap
            [[1, 2, 3], [2, 4, 6], [1, 0, 1]],  # rank 2
            [[0, 0, 0], [1, 2, 3], [4, 5, 6]],  # a zero row
            [[0, 0, 1], [0, 1, 0], [1, 0, 0]],  # a permutation: det -1
        ],
        np.float32,
    )
    model = _model("Det", [("x", 1, [4, 3, 3])], 11)  # the decomposition is valid at opset 11
    (y,) = ember.compile(model)(matrices)
    np.testing.assert_allclose(y, np.linalg.det(matrices.astype(np.float64)), atol=1e-5)


def test_det_beyond_the_unrolled_size_is_refused_by_name() -> None:
    with pytest.raises(ember.UnsupportedOpError, match="Det.*'node'.*33x33"):
        ember.compile(_model("Det", [("x", 1, [33, 33])], 22))


# --- Col2Im ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "block", "attrs"),
    [
        ([9, 8], [3, 3], {"strides": [2, 3], "pads": [1, 0, 2, 1], "dilations": [1, 2]}),
        ([10], [4], {"strides": [3], "pads": [1, 2]}),
        ([4, 5, 3], [2, 2, 1], {"strides": [2, 1, 1]}),
    ],
)
def test_col2im_matches_onnxruntime_and_reference(
    image: list[int], block: list[int], attrs: dict[str, list[int]]
) -> None:
    rank = len(image)
    strides = attrs.get("strides", [1] * rank)
    pads = attrs.get("pads", [0] * 2 * rank)
    dilations = attrs.get("dilations", [1] * rank)
    counts = [
        (image[i] + pads[i] + pads[i + rank] - dilations[i] * (block[i] - 1) - 1) // strides[i] + 1
        for i in range(rank)
    ]
    shape = [2, 3 * int(np.prod(block)), int(np.prod(counts))]
    inits = [
        numpy_helper.from_array(np.array(image, np.int64), "image"),
        numpy_helper.from_array(np.array(block, np.int64), "block"),
    ]
    model = _model("Col2Im", [("x", 1, shape)], 18, inits, **attrs)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    y = _check(model, {"x": x}, 1e-6)
    assert y.shape == (2, 3, *image)


def test_col2im_of_a_mismatched_block_count_is_refused() -> None:
    inits = [
        numpy_helper.from_array(np.array([5, 5], np.int64), "image"),
        numpy_helper.from_array(np.array([2, 2], np.int64), "block"),
    ]
    model = _model("Col2Im", [("x", 1, [1, 4, 15])], 18, inits)
    with pytest.raises(ember.ModelError, match="Col2Im node 'node'.*\\[4, 4\\] block positions"):
        ember.compile(model)


def test_col2im_of_float64_is_refused_in_its_own_name() -> None:
    """Col2Im runs as a ConvTranspose, whose kernel computes in float32: the refusal names the
    Col2Im node the user wrote, then the op of its decomposition that is refused."""
    inits = [
        numpy_helper.from_array(np.array([3, 3], np.int64), "image"),
        numpy_helper.from_array(np.array([2, 2], np.int64), "block"),
    ]
    model = _model("Col2Im", [("x", TensorProto.DOUBLE, [1, 4, 4])], 18, inits)
    with pytest.raises(
        ember.UnsupportedOpError, match="op Col2Im \\(node 'node'.*ConvTranspose.*float64"
    ):
        ember.compile(model)


# --- TensorScatter ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache", "update", "axis", "mode", "writes"),
    [
        ([2, 3, 8, 4], [2, 3, 2, 4], -2, "linear", [0, 6]),
        ([3, 6, 5], [3, 4, 5], 1, "circular", [1, 4, 5]),
        ([2, 3, 7], [2, 3, 2], -1, "linear", None),
        ([2, 5, 3], [2, 3, 3], 1, "circular", [4, 3]),
    ],
)
def test_tensor_scatter_matches_onnxruntime_and_reference(
    cache: list[int], update: list[int], axis: int, mode: str, writes: list[int] | None
) -> None:
    rng = np.random.default_rng(4)
    feeds = {
        "cache": rng.standard_normal(cache).astype(np.float32),
        "update": rng.standard_normal(update).astype(np.float32),
    }
    inputs = [("cache", 1, cache), ("update", 1, update)]
    if writes is not None:
        feeds["writes"] = np.array(writes, np.int64)
        inputs.append(("writes", 7, [len(writes)]))
    model = _model("TensorScatter", inputs, 24, axis=axis, mode=mode)
    _check(model, feeds, 1e-6)


def test_tensor_scatter_linear_write_past_the_end_is_a_kernel_error() -> None:
    model = _model(
        "TensorScatter",
        [("cache", 1, [1, 4, 2]), ("update", 1, [1, 2, 2]), ("w", 7, [1])],
        24,
        axis=1,
    )
    compiled = ember.compile(model)
    cache, update = np.zeros((1, 4, 2), np.float32), np.ones((1, 2, 2), np.float32)
    for bad in (3, -1):
        with pytest.raises(ember.KernelError):
            compiled(cache, update, np.array([bad], np.int64))
