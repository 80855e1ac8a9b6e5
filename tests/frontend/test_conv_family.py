"""The convolution family in 1-D and 3-D (Conv, ConvTranspose, MaxPool/AveragePool/LpPool,
global pools), compiled to native code and compared with onnxruntime on seeded inputs.

1-D problems run on the 2-D kernels as images of height 1, 3-D convolutions as one 2-D
convolution over depth-folded channels (see frontend/ops/conv.py). Each test builds one model whose
outputs cover several variants, so a family costs one compilation. Tolerance: max |ember - ort|
<= 1e-4 x max |ort| per output (float32 sums in another order); max pooling and 16-bit results
are compared exactly or to one float16 rounding.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.frontend.onnx_importer import import_onnx
from ember.runtime.errors import ModelError, UnsupportedOpError
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.oracle import assert_close

F = TensorProto.FLOAT
node = helper.make_node


def _model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, tuple[int, list[int]]],
    constants: dict[str, np.ndarray],
) -> onnx.ModelProto:
    outputs = [n.output[0] for n in nodes if not n.output[0].startswith("_")]
    graph = helper.make_graph(
        nodes,
        "conv_family",
        [helper.make_tensor_value_info(name, t, s) for name, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.UNDEFINED, None) for name in outputs],
        [numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return onnx.shape_inference.infer_shapes(model)


def _feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        tensor = value.type.tensor_type
        shape = [d.dim_value for d in tensor.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            feeds[value.name] = rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    return dict(zip(names, session.run(names, feeds)))


def _check(model: onnx.ModelProto, seed: int = 0) -> None:
    feeds = _feeds(model, seed)
    expected = _onnxruntime(model, feeds)
    got = ember.compile(model, threads=1).run(feeds)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, name
    assert_close(got, expected, rel=1e-4)


def _weights(seed: int, **shapes: tuple[int, ...]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def test_conv_1d() -> None:
    nodes = [
        node("Conv", ["x", "w", "b"], ["plain"]),
        node("Conv", ["x", "w"], ["strided_dilated"], strides=[2], dilations=[3], pads=[2, 1]),
        node("Conv", ["x", "w"], ["same_upper"], auto_pad="SAME_UPPER", strides=[3]),
        node("Conv", ["x", "w"], ["same_lower"], auto_pad="SAME_LOWER", strides=[2]),
        node("Conv", ["x", "w2"], ["same_lower_even"], auto_pad="SAME_LOWER"),
        node("Conv", ["x", "w", "b"], ["valid"], auto_pad="VALID", strides=[4]),
        node("Conv", ["x", "wg"], ["grouped"], group=2, pads=[1, 1]),
        node("Conv", ["x", "wd", "bd"], ["depthwise"], group=6, pads=[2, 2], strides=[2]),
        node("Conv", ["x", "wm"], ["depth_multiplier"], group=6, dilations=[2]),
        node("Conv", ["x", "w_in"], ["weight_at_run_time"], pads=[1, 0]),
        node("Conv", ["x", "wd_in"], ["depthwise_at_run_time"], group=6, strides=[3]),
    ]
    weights = _weights(
        1,
        w=(5, 6, 3),
        b=(5,),
        w2=(4, 6, 4),
        wg=(8, 3, 3),
        wd=(6, 1, 5),
        bd=(6,),
        wm=(12, 1, 3),
    )
    inputs = {"x": (F, [2, 6, 23]), "w_in": (F, [7, 6, 3]), "wd_in": (F, [6, 1, 4])}
    _check(_model(nodes, inputs, weights), seed=2)


def test_conv_3d() -> None:
    nodes = [
        node("Conv", ["x", "w", "b"], ["plain"]),
        node(
            "Conv",
            ["x", "w"],
            ["strided_padded"],
            strides=[2, 1, 2],
            dilations=[2, 1, 1],
            pads=[2, 0, 1, 1, 1, 0],
        ),
        node("Conv", ["x", "w"], ["same_upper"], auto_pad="SAME_UPPER", strides=[2, 2, 1]),
        node("Conv", ["x", "w"], ["same_lower"], auto_pad="SAME_LOWER", strides=[3, 1, 2]),
        node("Conv", ["x", "wg", "bg"], ["grouped"], group=2, pads=[1, 1, 1, 1, 1, 1]),
        node("Conv", ["x", "wd"], ["depthwise"], group=4, pads=[1, 0, 1, 1, 0, 1]),
        node("Conv", ["x", "w_in"], ["weight_at_run_time"], strides=[1, 2, 2]),
    ]
    weights = _weights(
        3, w=(5, 4, 3, 2, 3), b=(5,), wg=(6, 2, 2, 3, 2), bg=(6,), wd=(4, 1, 3, 2, 2)
    )
    inputs = {"x": (F, [2, 4, 6, 7, 8]), "w_in": (F, [3, 4, 2, 2, 2])}
    _check(_model(nodes, inputs, weights), seed=4)


def test_conv_transpose_1d_and_3d() -> None:
    nodes = [
        node("ConvTranspose", ["x1", "w1", "b1"], ["plain_1d"]),
        node("ConvTranspose", ["x1", "w1"], ["strided_1d"], strides=[3], pads=[1, 2]),
        node("ConvTranspose", ["x1", "w1"], ["output_padding_1d"], strides=[2], output_padding=[1]),
        node("ConvTranspose", ["x1", "w1"], ["output_shape_1d"], strides=[2], output_shape=[20]),
        node("ConvTranspose", ["x1", "w1"], ["same_upper_1d"], strides=[2], auto_pad="SAME_UPPER"),
        node("ConvTranspose", ["x1", "w1"], ["same_lower_1d"], strides=[3], auto_pad="SAME_LOWER"),
        node("ConvTranspose", ["x1", "wg1"], ["grouped_dilated_1d"], group=2, dilations=[2]),
        node("ConvTranspose", ["x1", "wd1"], ["depthwise_1d"], group=4, strides=[2]),
        node(
            "ConvTranspose",
            ["x1", "wg1", "bg1"],
            ["grouped_strided_1d"],
            group=2,
            strides=[3],
            pads=[1, 0],
            output_padding=[2],
        ),
        node("ConvTranspose", ["x1", "w_in", "b_in"], ["weight_at_run_time_1d"], strides=[2]),
        node(
            "ConvTranspose", ["x1", "w_long"], ["kernel_not_a_multiple"], strides=[4], pads=[2, 3]
        ),
        # Regression: an output_shape beyond the full result was padded at the front.
        node("ConvTranspose", ["x1", "wk1"], ["beyond_full_1d"], strides=[3], output_shape=[27]),
        node("ConvTranspose", ["x1", "wk2"], ["beyond_full_k2"], strides=[3], output_shape=[27]),
        node("ConvTranspose", ["x3", "w3", "b3"], ["strided_3d"], strides=[2, 1, 2], pads=[1] * 6),
        node(
            "ConvTranspose",
            ["x3", "wg3"],
            ["grouped_3d"],
            group=2,
            dilations=[1, 2, 1],
            output_padding=[0, 0, 1],
            strides=[1, 1, 2],
        ),
        node(
            "ConvTranspose", ["x3", "w3"], ["shaped_3d"], strides=[2, 2, 1], output_shape=[9, 8, 5]
        ),
    ]
    weights = _weights(
        5,
        w1=(4, 3, 3),
        b1=(3,),
        wg1=(4, 2, 3),
        wd1=(4, 1, 4),
        wk1=(4, 3, 1),
        wk2=(4, 3, 2),
        bg1=(4,),
        w_long=(4, 2, 7),
        w3=(2, 3, 2, 3, 2),
        b3=(3,),
        wg3=(2, 2, 3, 2, 2),
    )
    inputs = {
        "x1": (F, [2, 4, 9]),
        "x3": (F, [1, 2, 4, 3, 4]),
        "w_in": (F, [4, 3, 5]),
        "b_in": (F, [3]),
    }
    _check(_model(nodes, inputs, weights), seed=6)


def test_strided_conv_transpose_imports_as_one_phase_convolution() -> None:
    # Stride 4, kernel 8: 4 phases of 2 taps each, not a convolution of a zero-stuffed input.
    nodes = [node("ConvTranspose", ["x", "w"], ["y"], strides=[4], pads=[2, 2])]
    model = _model(nodes, {"x": (F, [1, 16, 50])}, _weights(18, w=(16, 8, 8)))
    assert_filecheck(
        str(import_onnx(model).module),
        """
        CHECK-NOT: graph.concat
        CHECK: graph.conv {{.*}} : tensor<1x16x1x50xf32>, tensor<32x16x1x2xf32> -> tensor<1x32x1x51xf32>
        CHECK: graph.transpose
        CHECK: -> tensor<1x8x200xf32>
        """,
    )


def test_conv_transpose_with_kernel_equal_to_stride_computes_no_margin() -> None:
    """A 2x2/2 ConvTranspose (DBNet's head): every phase has one tap, and the phase conv yields
    exactly the input's 6x5 positions per phase; nothing is computed only to be sliced off."""
    nodes = [node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])]
    model = _model(nodes, {"x": (F, [1, 16, 6, 5])}, _weights(19, w=(16, 8, 2, 2)))
    assert_filecheck(
        str(import_onnx(model).module),
        """
        CHECK: graph.conv {{.*}} : tensor<1x16x6x5xf32>, tensor<32x16x1x1xf32> -> tensor<1x32x6x5xf32>
        CHECK: graph.transpose
        CHECK: -> tensor<1x8x12x10xf32>
        CHECK-NOT: graph.slice
        """,
    )


def test_pooling_1d_and_global_pools() -> None:
    nodes = [
        node("MaxPool", ["x"], ["max"], kernel_shape=[3]),
        node("MaxPool", ["x"], ["max_strided"], kernel_shape=[4], strides=[3], pads=[1, 2]),
        node("MaxPool", ["x"], ["max_ceil"], kernel_shape=[3], strides=[2], ceil_mode=1),
        node("MaxPool", ["x"], ["max_dilated"], kernel_shape=[3], dilations=[2], strides=[2]),
        node("MaxPool", ["x"], ["max_same_upper"], kernel_shape=[4], auto_pad="SAME_UPPER"),
        node("MaxPool", ["x"], ["max_same_lower"], kernel_shape=[4], auto_pad="SAME_LOWER"),
        node("MaxPool", ["x"], ["max_valid"], kernel_shape=[5], strides=[3], auto_pad="VALID"),
        node("AveragePool", ["x"], ["avg_excl"], kernel_shape=[4], strides=[2], pads=[2, 1]),
        node(
            "AveragePool",
            ["x"],
            ["avg_incl"],
            kernel_shape=[4],
            strides=[2],
            pads=[2, 1],
            count_include_pad=1,
        ),
        node(
            "AveragePool",
            ["x"],
            ["avg_ceil"],
            kernel_shape=[3],
            strides=[3],
            ceil_mode=1,
            pads=[1, 0],
        ),
        node("AveragePool", ["x"], ["avg_same_lower"], kernel_shape=[3], auto_pad="SAME_LOWER"),
        node("AveragePool", ["x"], ["avg_dilated"], kernel_shape=[2], dilations=[3], pads=[1, 1]),
        node("LpPool", ["x"], ["lp2"], kernel_shape=[3], strides=[2], pads=[1, 1]),
        node("LpPool", ["x"], ["lp3_same"], kernel_shape=[2], p=3, auto_pad="SAME_UPPER"),
        # Regression: a ceil-mode window past the end padding summed k taps, not those inside.
        node("LpPool", ["x"], ["lp_ceil"], kernel_shape=[2], pads=[1, 0], strides=[2], ceil_mode=1),
        node(
            "LpPool",
            ["x"],
            ["lp_ceil_dilated"],
            kernel_shape=[2],
            dilations=[2],
            strides=[3],
            ceil_mode=1,
        ),
        node("GlobalAveragePool", ["x"], ["global_avg"]),
        node("GlobalMaxPool", ["x"], ["global_max"]),
        node("GlobalLpPool", ["x"], ["global_lp"]),
    ]
    _check(_model(nodes, {"x": (F, [2, 5, 19])}, {}), seed=7)


def test_ceil_mode_pools_whose_last_window_would_start_in_the_padding() -> None:
    """Regression: with ceil_mode=1 a last window that would start in the end padding is
    dropped (onnxruntime, PyTorch: 7x7, kernel 2, stride 3, pads 1 gives 3x3), while ONNX's
    shape inference keeps it (4x4): ember computed 3x3 and refused the model ("computed shape
    ... but ONNX infers ..."). Here in 1-D, 2-D (one axis dropped, the other not) and 3-D,
    MaxPool (with Indices, then a Relu and a Conv), AveragePool counting the padding or not,
    LpPool; against onnxruntime, rel 1e-4."""
    geometries = {  # input: (shape, kernel, strides, pads)
        "x1": ([1, 2, 10], [3], [4], [1, 1]),
        "x2": ([1, 2, 7, 7], [2, 2], [3, 3], [1, 1, 1, 1]),
        "xm": ([2, 3, 5, 8], [2, 3], [2, 2], [1, 1, 1, 1]),
        "x3": ([1, 1, 5, 7, 7], [2, 2, 2], [2, 3, 3], [1, 1, 1, 1, 1, 1]),
    }
    nodes = []
    for x, (_, kernel, strides, pads) in geometries.items():
        window = {"kernel_shape": kernel, "strides": strides, "pads": pads, "ceil_mode": 1}
        nodes += [
            node("MaxPool", [x], [f"max_{x}"], **window),
            node("AveragePool", [x], [f"avg_incl_{x}"], count_include_pad=1, **window),
            node("AveragePool", [x], [f"avg_excl_{x}"], count_include_pad=0, **window),
            node("LpPool", [x], [f"lp_{x}"], **window),
        ]
        if x == "x2":
            nodes.append(node("MaxPool", [x], ["max_values", "max_indices"], **window))
            # The ops after the pool import too (ONNX's shapes for them derive from its 4x4).
            nodes.append(node("Relu", ["max_values"], ["_relu"]))
            nodes.append(node("Conv", ["_relu", "w"], ["conv_after_pool"]))
    inputs = [helper.make_tensor_value_info(x, F, g[0]) for x, g in geometries.items()]
    outputs = [
        helper.make_tensor_value_info(o, TensorProto.INT64 if o == "max_indices" else F, None)
        for n in nodes
        for o in n.output
        if not o.startswith("_")
    ]
    w = numpy_helper.from_array(_weights(6, w=(4, 2, 1, 1))["w"], "w")
    graph = helper.make_graph(nodes, "ceil_pools", inputs, outputs, [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    inferred = onnx.shape_inference.infer_shapes(model).graph.output
    onnx_shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in inferred}
    feeds = _feeds(model, seed=5)
    expected = _onnxruntime(model, feeds)
    assert list(expected["max_x2"].shape) == [1, 2, 3, 3] != onnx_shapes["max_x2"]
    got = ember.compile(model, threads=1).run(feeds)
    assert_close(got, expected, rel=1e-4)


def test_conv1d_audio_stack_end_to_end() -> None:
    """A speech front end: framing conv (the learned-STFT shape), conv-relu-conv blocks with
    residuals, a pooled time axis and a per-frame projection."""
    nodes = [
        node("Conv", ["wave", "frame_w", "frame_b"], ["_frames"], strides=[80], pads=[120, 120]),
        node("Relu", ["_frames"], ["_a0"]),
        node("Conv", ["_a0", "c1_w", "c1_b"], ["_c1"], pads=[1, 1]),
        node("Relu", ["_c1"], ["_r1"]),
        node("Conv", ["_r1", "c2_w", "c2_b"], ["_c2"], pads=[2, 2], dilations=[2]),
        node("Add", ["_c2", "_a0"], ["_res1"]),
        node("Conv", ["_res1", "dw_w"], ["_dw"], group=32, auto_pad="SAME_UPPER"),
        node("Relu", ["_dw"], ["_r2"]),
        node("Conv", ["_r2", "pw_w", "pw_b"], ["_pw"]),
        node("Add", ["_pw", "_res1"], ["_res2"]),
        node("MaxPool", ["_res2"], ["_pooled"], kernel_shape=[2], strides=[2]),
        node("Conv", ["_pooled", "head_w", "head_b"], ["logits"]),
        node("GlobalAveragePool", ["_res2"], ["embedding"]),
    ]
    rng = np.random.default_rng(11)

    def he(*shape: int) -> np.ndarray:  # scaled so activations stay of order 1 through the stack
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    weights = {
        "frame_w": he(32, 1, 320),
        "c1_w": he(32, 32, 3),
        "c2_w": he(32, 32, 3),
        "dw_w": he(32, 1, 5),
        "pw_w": he(32, 32, 1),
        "head_w": he(10, 32, 1),
    }
    for name in ("frame_b", "c1_b", "c2_b", "pw_b"):
        weights[name] = (0.1 * rng.standard_normal(32)).astype(np.float32)
    weights["head_b"] = (0.1 * rng.standard_normal(10)).astype(np.float32)
    _check(_model(nodes, {"wave": (F, [2, 1, 4000])}, weights), seed=12)


def test_conv1d_long_filters() -> None:
    """Filters wider than the channel-lanes kernel unrolls (taps looped in blocks): a 1x320
    stride-80 framing conv with padding, a 1x257 stride-1 one and a 1x257 stride-3 one with
    asymmetric padding; tolerance as the module's (1e-4 x max |ort|)."""
    nodes = [
        node("Conv", ["wave", "w320", "b320"], ["frames"], strides=[80], pads=[120, 120]),
        node("Conv", ["wave", "w257"], ["dense"]),
        node("Conv", ["wave", "w257"], ["strided"], strides=[3], pads=[128, 100]),
    ]
    weights = _weights(21, w320=(32, 2, 320), b320=(32,), w257=(20, 2, 257))
    _check(_model(nodes, {"wave": (F, [2, 2, 1200])}, weights), seed=22)


def test_16_bit_and_small_integer_inputs() -> None:
    """float16 computes in float32 and is rounded once; MaxPool of int8/uint8 is exact."""
    h = TensorProto.FLOAT16
    w = {k: v.astype(np.float16) for k, v in _weights(13, w=(4, 3, 3), wt=(3, 2, 2)).items()}
    nodes = [
        node("Conv", ["x", "w"], ["conv"], pads=[1, 1]),
        node("ConvTranspose", ["x", "wt"], ["conv_transpose"], strides=[2]),
        node("AveragePool", ["x"], ["avg"], kernel_shape=[3], pads=[1, 1]),
        node("LpPool", ["x"], ["lp"], kernel_shape=[2]),
        node("MaxPool", ["x"], ["max"], kernel_shape=[3], strides=[2]),
        node("MaxPool", ["i8"], ["max_i8"], kernel_shape=[3], pads=[1, 1]),
        node("MaxPool", ["u8"], ["max_u8"], kernel_shape=[2, 2], strides=[2, 1]),
    ]
    inputs = {
        "x": (h, [2, 3, 11]),
        "i8": (TensorProto.INT8, [1, 2, 9]),
        "u8": (TensorProto.UINT8, [1, 2, 5, 6]),
    }
    model = _model(nodes, inputs, w)
    feeds = _feeds(model, seed=14)
    expected = _onnxruntime(model, feeds)
    got = ember.compile(model, threads=1).run(feeds)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, name
        if want.dtype == np.float16:  # one float16 rounding of the same real number, or two
            np.testing.assert_allclose(got[name], want, rtol=2e-3, atol=2e-3, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], want, err_msg=name)


def test_1d_and_3d_convolutions_import_as_one_2d_conv() -> None:
    nodes = [
        node("Conv", ["x1", "w1"], ["one_d"], strides=[2], pads=[1, 1]),
        node("Conv", ["x3", "w3"], ["three_d"], pads=[1, 0, 0, 1, 0, 0]),
    ]
    weights = _weights(15, w1=(4, 3, 5), w3=(4, 3, 3, 2, 2))
    model = _model(nodes, {"x1": (F, [1, 3, 16]), "x3": (F, [2, 3, 4, 5, 6])}, weights)
    ir = str(import_onnx(model).module)
    assert_filecheck(
        ir,
        """
        CHECK: graph.reshape %x1 {{.*}} -> tensor<1x3x1x16xf32>
        CHECK: graph.conv {{.*}}{strides = array<i64: 1, 2>, pads = array<i64: 0, 1, 0, 1>, dilations = array<i64: 1, 1>, group = 1 : i64} : tensor<1x3x1x16xf32>, tensor<4x3x1x5xf32> -> tensor<1x4x1x7xf32>
        CHECK: graph.reshape {{.*}} -> tensor<1x4x7xf32>
        CHECK: graph.gather {{.*}} -> tensor<2x3x12x5x6xf32>
        CHECK: graph.conv {{.*}} : tensor<8x9x5x6xf32>, tensor<4x9x2x2xf32> -> tensor<8x4x4x5xf32>
        CHECK-NOT: graph.conv
        """,
    )


@pytest.mark.parametrize(
    "dtype,op,message",
    [
        (TensorProto.DOUBLE, "Conv", "Conv on float64 tensors"),
        (TensorProto.DOUBLE, "MaxPool", "MaxPool on float64 tensors"),
        # int32 is outside MaxPool's type constraint: refused by the schema check first.
        (TensorProto.INT32, "MaxPool", r"tensor\(int32\); T allows"),
        (TensorProto.FLOAT, "Conv", "Conv over 4 spatial dims"),
        (TensorProto.FLOAT, "AveragePool", "AveragePool over 4 spatial dims"),
        # SAME windows that leave the end unread: onnxruntime and the ONNX reference differ.
        (TensorProto.FLOAT, "MaxPool", r"auto_pad SAME_UPPER .*negative SAME padding \[-2, 0\]"),
        (TensorProto.FLOAT, "LpPool", r"dilated pooling \(dilations \[2, 1\]\) with auto_pad SAME"),
    ],
)
def test_refusals_name_the_op_and_what_is_missing(dtype: int, op: str, message: str) -> None:
    shape = [1, 2, 3, 3, 3, 3] if "4 spatial" in message else [1, 2, 5, 5]
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    weight = np.ones([2, 2, *[1] * (len(shape) - 2)], np_dtype)
    inputs = ["x", "w"] if op == "Conv" else ["x"]
    attrs = {} if op == "Conv" else {"kernel_shape": [1] * (len(shape) - 2)}
    if "SAME" in message:
        shape, attrs = (
            [1, 2, 9, 5],
            {"kernel_shape": [1, 1], "strides": [3, 1], "auto_pad": "SAME_UPPER"},
        )
        if "dilated" in message:
            attrs = {"kernel_shape": [2, 2], "dilations": [2, 1], "auto_pad": "SAME_UPPER"}
    graph = helper.make_graph(
        [node(op, inputs, ["y"], name="the_node", **attrs)],
        "refused",
        [helper.make_tensor_value_info("x", dtype, shape)],
        [helper.make_tensor_value_info("y", dtype, None)],
        [numpy_helper.from_array(weight, "w")] if op == "Conv" else [],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.raises(ModelError, match=f"the_node.*{message}"):
        import_onnx(model)


@pytest.mark.parametrize(
    "attrs,error,message",
    [
        # kernel extent 1 < stride 3: onnxruntime gives 13 outputs, the ONNX reference 15.
        ({"strides": [3], "auto_pad": "SAME_UPPER"}, UnsupportedOpError, "disagree"),
        ({"strides": [3], "auto_pad": "SAME_LOWER", "output_shape": [15]}, UnsupportedOpError, ""),
        # full is 13; output_padding < stride reaches 15 at most.
        ({"strides": [3], "output_shape": [16]}, ModelError, r"output_shape \[16\] is beyond"),
    ],
)
def test_conv_transpose_outputs_beyond_its_reach_are_refused(
    attrs: dict[str, object], error: type[Exception], message: str
) -> None:
    graph = helper.make_graph(
        [node("ConvTranspose", ["x", "w"], ["y"], name="the_node", **attrs)],
        "refused",
        [helper.make_tensor_value_info("x", F, [1, 2, 5])],
        [helper.make_tensor_value_info("y", F, None)],
        [numpy_helper.from_array(np.ones([2, 1, 1], np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.raises(error, match=f"the_node.*{message}"):
        import_onnx(model)


def test_convolutions_padded_only_at_the_end() -> None:
    # Regression: the im2col packing checked bounds only when ho*sh > h (or the start was
    # padded), so end-only padding read past each input row/plane: garbage or 1e36 outputs.
    nodes = [
        node("Conv", ["x2", "w2"], ["bottom_only"], pads=[0, 0, 2, 0]),
        node("Conv", ["x2", "w2"], ["bottom_right"], pads=[0, 0, 1, 1]),
        node("Conv", ["x2", "w2s"], ["same_upper_stride_2"], auto_pad="SAME_UPPER", strides=[2, 2]),
        node("Conv", ["x1", "w1"], ["end_only_1d"], pads=[0, 2]),
        node("Conv", ["x1", "w1"], ["end_only_1d_dilated"], pads=[0, 3], dilations=[2]),
    ]
    weights = _weights(16, w2=(4, 6, 3, 1), w2s=(4, 6, 3, 3), w1=(4, 6, 3))
    inputs = {"x2": (F, [1, 6, 4, 8]), "x1": (F, [2, 6, 9])}
    _check(_model(nodes, inputs, weights), seed=17)


def _random_window_node(
    rng: np.random.Generator, index: int, x: str, channels: int, spatial: int
) -> tuple[onnx.NodeProto, dict[str, np.ndarray]]:
    """One Conv / ConvTranspose / pooling node with random geometry over input x."""
    op = str(rng.choice(["Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"]))
    kernel = [int(k) for k in rng.integers(1, 4, spatial)]
    dilations = [int(d) for d in rng.integers(1, 3, spatial)]
    attrs: dict[str, object] = {"strides": [int(s) for s in rng.integers(1, 4, spatial)]}
    auto_pad = str(rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if auto_pad == "NOTSET":
        attrs["pads"] = [int(rng.integers(0, kernel[i % spatial])) for i in range(2 * spatial)]
    else:
        attrs["auto_pad"] = auto_pad
    name, weights = f"{op}_{spatial}d_{index}", {}
    inputs = [x]
    if op in ("Conv", "ConvTranspose"):
        group = int(rng.choice([g for g in (1, 2, channels) if channels % g == 0]))
        per_group = int(rng.integers(1, 3))
        attrs["group"] = group
        if auto_pad in ("NOTSET", "VALID"):  # onnxruntime refuses dilated SAME convolutions
            attrs["dilations"] = dilations
        shape = (
            (group * per_group, channels // group, *kernel)
            if op == "Conv"
            else (channels, per_group, *kernel)
        )
        weights[name + "_w"] = rng.standard_normal(shape).astype(np.float32)
        inputs.append(name + "_w")
        if rng.random() < 0.5:
            weights[name + "_b"] = rng.standard_normal(group * per_group).astype(np.float32)
            inputs.append(name + "_b")
    else:
        attrs["kernel_shape"] = kernel
        attrs["ceil_mode"] = int(rng.random() < 0.4)
        if op == "AveragePool":
            attrs["count_include_pad"] = int(rng.random() < 0.5)
        if op == "MaxPool" and auto_pad in ("NOTSET", "VALID") and rng.random() < 0.4:
            attrs["dilations"] = dilations
        if op == "LpPool":
            attrs["p"] = int(rng.choice([1, 2, 3]))
    return node(op, inputs, [name], **attrs), weights


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(24))
def test_random_windows_in_1d_and_3d(seed: int) -> None:
    """Random Conv/ConvTranspose/pooling geometry in 1-D and 3-D against onnxruntime. Nodes
    onnxruntime rejects are dropped; nodes ember refuses must be refused as EmberErrors.
    Seed 18 (a dilated ceil-mode 3-D MaxPool) needs plan-memory's exact-offset in-place rule:
    an elementwise output placed 64 bytes past its dying input overwrote it before reading."""
    from ember.runtime.errors import EmberError

    rng = np.random.default_rng(seed)
    inputs: dict[str, tuple[int, list[int]]] = {}
    candidates = []
    for spatial in (1, 3):
        channels = int(rng.choice([2, 4, 6]))
        shape = [int(rng.integers(1, 3)), channels, *map(int, rng.integers(4, 12, spatial))]
        inputs[f"x{spatial}"] = (F, shape)
        for i in range(12 if spatial == 1 else 6):
            candidates.append(_random_window_node(rng, i, f"x{spatial}", channels, spatial))
    feeds = _feeds(_model([], inputs, {}), seed)
    kept, weights = [], {}
    for candidate, candidate_weights in candidates:
        single = _model([candidate], inputs, candidate_weights)
        try:
            _onnxruntime(single, feeds)
        except Exception:  # noqa: BLE001 - onnxruntime's own refusals are not ember's business
            continue
        try:
            import_onnx(single)
        except EmberError:
            continue
        kept.append(candidate)
        weights.update(candidate_weights)
    assert kept
    model = _model(kept, inputs, weights)
    assert_close(ember.compile(model, threads=1).run(feeds), _onnxruntime(model, feeds), rel=1e-4)


@pytest.mark.parametrize(
    "cin,kh,kw,direct", [(3, 5, 5, True), (3, 7, 7, True), (3, 11, 11, False), (1, 1, 320, False)]
)
def test_long_filters_take_the_gemm_conv_not_the_unrolled_direct_one(
    cin: int, kh: int, kw: int, direct: bool
) -> None:
    # The direct conv unrolls all Cin*kh*kw taps: a 1x320 audio filter compiled for 64 s.
    from ember.core.target import Target
    from ember.passes.conversion.kernel_to_loops.conv import ConvGeometry, _direct_planes

    geo = ConvGeometry(
        batch=1, cin=cin, h=kh, w=400, cout=32, ho=1, wo=400 - kw + 1, kh=kh, kw=kw,
        sh=1, sw=1, dh=1, dw=1, pt=0, pl=0, group=1,
    )  # fmt: skip
    assert (_direct_planes(geo, Target()) is not None) == direct


def test_max_pool_indices_in_one_two_and_three_dims() -> None:
    # Indices: flat positions in x (N, C, spatial row-major; storage_order=1: spatial
    # column-major), first maximum of each window; values and indices must match exactly.
    def pool(x: str, name: str, **attrs: object) -> onnx.NodeProto:
        return node("MaxPool", [x], [f"{name}_values", f"{name}_indices"], **attrs)

    nodes = [
        pool("x1", "one_d", kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1),
        pool("x1", "one_d_dilated", kernel_shape=[3], dilations=[3], pads=[2, 1], ceil_mode=1),
        pool("x2", "two_d", kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1]),
        pool("x2", "two_d_column_major", kernel_shape=[2, 3], strides=[1, 2], storage_order=1),
        pool("x3", "three_d", kernel_shape=[2, 2, 3], strides=[1, 2, 2], pads=[0, 1, 1, 1, 0, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "indices",
        [
            helper.make_tensor_value_info("x1", F, [2, 3, 10]),
            helper.make_tensor_value_info("x2", F, [2, 2, 7, 8]),
            helper.make_tensor_value_info("x3", F, [1, 2, 4, 5, 6]),
        ],
        [
            helper.make_tensor_value_info(o, F if o.endswith("values") else TensorProto.INT64, None)
            for n in nodes
            for o in n.output
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    feeds = _feeds(model, seed=19)
    expected = _onnxruntime(model, feeds)
    got = ember.compile(model, threads=1).run(feeds)
    for name, want in expected.items():
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def test_max_unpool_inverts_max_pool_indices() -> None:
    nodes = [
        node("MaxPool", ["x1"], ["_v1", "_i1"], kernel_shape=[2], strides=[2]),
        node("MaxUnpool", ["_v1", "_i1"], ["unpooled_1d"], kernel_shape=[2], strides=[2]),
        node(
            "MaxPool",
            ["x2"],
            ["_v2", "_i2"],
            kernel_shape=[3, 2],
            strides=[2, 2],
            pads=[1, 0, 1, 0],
        ),
        node(
            "MaxUnpool",
            ["_v2", "_i2"],
            ["unpooled_2d"],
            kernel_shape=[3, 2],
            strides=[2, 2],
            pads=[1, 0, 1, 0],
        ),
        node(
            "MaxUnpool",
            ["_v2", "_i2", "same_shape"],
            ["unpooled_2d_shaped"],
            kernel_shape=[3, 2],
            strides=[2, 2],
            pads=[1, 0, 1, 0],
        ),
        node("MaxPool", ["x3"], ["_v3", "_i3"], kernel_shape=[2, 2, 2], strides=[2, 2, 2]),
        node(
            "MaxUnpool", ["_v3", "_i3"], ["unpooled_3d"], kernel_shape=[2, 2, 2], strides=[2, 2, 2]
        ),
    ]
    inputs = {"x1": (F, [2, 3, 10]), "x2": (F, [1, 2, 7, 6]), "x3": (F, [1, 2, 4, 4, 6])}
    _check(_model(nodes, inputs, {"same_shape": np.array([1, 2, 7, 6], np.int64)}), seed=20)


def _max_unpool_model(out_shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            node(
                "MaxUnpool",
                ["x", "i", "shape"],
                ["y"],
                name="the_node",
                kernel_shape=[2, 2],
                strides=[2, 2],
            )
        ],
        "unpool",
        [
            helper.make_tensor_value_info("x", F, [1, 2, 2, 3]),
            helper.make_tensor_value_info("i", TensorProto.INT64, [1, 2, 2, 3]),
        ],
        [helper.make_tensor_value_info("y", F, None)],
        [numpy_helper.from_array(np.array(out_shape, np.int64), "shape")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_max_unpool_to_a_larger_output_shape_pads_at_the_end() -> None:
    """The ONNX reference (and the node suite) scatters into the unpooled 4x6 and pads it with
    zeros to output_shape; onnxruntime reads the indices in output_shape instead."""
    model = _max_unpool_model([1, 2, 5, 8])
    rng = np.random.default_rng(21)
    x = rng.standard_normal((1, 2, 2, 3)).astype(np.float32)
    # One position of each 2x2 window of the unpooled [2, 4, 6] (flat over N, C, H, W).
    rows, cols = np.meshgrid(np.arange(2) * 2, np.arange(3) * 2, indexing="ij")
    offsets = rng.integers(0, 2, (1, 2, 2, 3, 2))
    flat = (rows + offsets[..., 0]) * 6 + cols + offsets[..., 1]
    indices = (flat + np.arange(2).reshape(1, 2, 1, 1) * 24).astype(np.int64)
    feeds = {"x": x, "i": indices}
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    got = ember.compile(model).run(feeds)["y"]
    assert got.shape == (1, 2, 5, 8)
    np.testing.assert_array_equal(got, want)


def test_max_unpool_to_a_smaller_output_shape_is_refused() -> None:
    with pytest.raises(ModelError, match=r"the_node.*output_shape \[1, 2, 3, 8\]"):
        import_onnx(_max_unpool_model([1, 2, 3, 8]))
