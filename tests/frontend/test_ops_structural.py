"""Structural ONNX ops compiled to native code by ember.compile and compared with onnxruntime.

Each test builds one model whose outputs exercise several ops on the same seeded input, so a
family costs one compilation. Tolerance: rtol 1e-4, atol 1e-5 (float32 kernels against
onnxruntime's float32); data-movement results must match exactly, which those tolerances
imply for values of order 1.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.frontend.onnx_importer import import_onnx
from ember.tests.filecheck_util import assert_filecheck

RTOL, ATOL = 1e-4, 1e-5
F, I64 = TensorProto.FLOAT, TensorProto.INT64


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[tuple[str, int, list[int]]],
    outputs: list[str],
    constants: dict[str, np.ndarray],
    opset: int = 21,
    shapes: dict[str, list[int]] | None = None,
) -> onnx.ModelProto:
    shapes = shapes or {}
    graph = helper.make_graph(
        nodes,
        "structural",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        # Index outputs (argmax/argmin) are int64, every other output float32.
        [
            helper.make_tensor_value_info(n, I64 if n.startswith("arg") else F, shapes.get(n))
            for n in outputs
        ],
        [numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    # Declared shapes are kept: ONNX's inference would erase those it cannot infer itself.
    return model if shapes else onnx.shape_inference.infer_shapes(model)


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in model.graph.output], session.run(None, feeds)))
    got = ember.compile(model, threads=1).run(feeds)
    for name, want in expected.items():
        assert got[name].shape == want.shape, name
        assert got[name].dtype == want.dtype, name
        np.testing.assert_allclose(got[name], want, rtol=RTOL, atol=ATOL, err_msg=name)


def _i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def test_slicing_padding_and_layout_ops() -> None:
    n = helper.make_node
    nodes = [
        n("Slice", ["x", "s_start", "s_end", "s_axes", "s_step"], ["slice"]),
        n("Split", ["x", "split"], ["split0", "split1"], axis=3),
        n("Pad", ["x", "pads"], ["pad_constant"], mode="constant"),
        n("Pad", ["x", "pads"], ["pad_reflect"], mode="reflect"),
        n("Pad", ["x", "pads"], ["pad_edge"], mode="edge"),
        n("Pad", ["x", "neg_pads"], ["pad_wrap"], mode="wrap"),
        n("Tile", ["x", "repeats"], ["tile"]),
        n("DepthToSpace", ["x4"], ["d2s"], blocksize=2, mode="CRD"),
        n("SpaceToDepth", ["x"], ["s2d"], blocksize=2),
        n("Expand", ["col", "shape"], ["expand"]),
        n("Trilu", ["x", "k"], ["triu"], upper=1),
        n("Trilu", ["x"], ["tril"], upper=0),
    ]
    constants = {
        "s_start": _i64(-1, 1),
        "s_end": _i64(-100, 9),
        "s_axes": _i64(2, 3),
        "s_step": _i64(-2, 3),
        "split": _i64(3, 7),
        "pads": _i64(0, 0, 1, 3, 0, 0, 2, 1),
        "neg_pads": _i64(0, 0, -1, 4, 0, 0, 2, -2),
        "repeats": _i64(1, 2, 1, 3),
        "shape": _i64(2, 3, 6, 10),
        "k": _i64(1),
    }
    inputs = [("x", F, [2, 3, 6, 10]), ("x4", F, [1, 8, 3, 5]), ("col", F, [3, 6, 1])]
    outputs = [node.output[k] for node in nodes for k in range(len(node.output))]
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, _, shape in inputs}
    _check(_model(nodes, inputs, outputs, constants), feeds)


def test_pad_with_a_fill_value_computed_at_run_time() -> None:
    node = helper.make_node("Pad", ["x", "pads", "fill"], ["y"], mode="constant")
    inputs = [("x", F, [2, 5]), ("fill", F, [])]
    model = _model([node], inputs, ["y"], {"pads": _i64(1, 0, 0, 3)})
    x = np.random.default_rng(12).standard_normal((2, 5)).astype(np.float32)
    _check(model, {"x": x, "fill": np.array(-2.5, np.float32)})


def test_reflect_pad_of_a_size_1_axis_reflects_the_next_axis() -> None:
    # Regression: reflecting an axis of one element (an edge pad) turned the following axes'
    # reflect pads into edge pads too. onnxruntime refuses size-1 reflects: onnx.reference.
    from onnx.reference import ReferenceEvaluator

    node = helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")
    model = _model([node], [("x", F, [1, 5])], ["y"], {"pads": _i64(1, 2, 1, 2)})
    x = np.arange(5, dtype=np.float32).reshape(1, 5)
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(ember.compile(model).run({"x": x})["y"], expected)
    assert expected[0].tolist() == [2, 1, 0, 1, 2, 3, 4, 3, 2]


def test_compress_center_crop_pad_and_eye_like() -> None:
    n = helper.make_node
    nodes = [
        n("Compress", ["x", "condition"], ["compressed"], axis=1),
        n("Compress", ["x", "condition"], ["compressed_flat"]),
        n("CenterCropPad", ["x", "crop_pad"], ["center"], axes=[1, 2]),
        n("EyeLike", ["m"], ["eye"], k=-1),
    ]
    constants = {
        "condition": np.array([0, 1, 1, 0, 1], bool),
        "crop_pad": _i64(2, 8),
    }
    inputs = [("x", F, [3, 5, 5]), ("m", F, [4, 6])]
    rng = np.random.default_rng(13)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, _, shape in inputs}
    _check(_model(nodes, inputs, [m.output[0] for m in nodes], constants), feeds)


def test_reverse_sequence() -> None:
    n = helper.make_node
    nodes = [
        n("ReverseSequence", ["x", "lens"], ["time_major"], time_axis=0, batch_axis=1),
        n("ReverseSequence", ["xt", "lens"], ["batch_major"], time_axis=1, batch_axis=0),
    ]
    inputs = [("x", F, [5, 3, 2]), ("xt", F, [3, 5, 2]), ("lens", I64, [3])]
    rng = np.random.default_rng(14)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, _, shape in inputs[:2]}
    feeds["lens"] = np.array([5, 1, 3], np.int64)
    _check(_model(nodes, inputs, ["time_major", "batch_major"], {}), feeds)


def test_resize_modes() -> None:
    n = helper.make_node
    nodes = [
        n("Resize", ["x", "", "up"], ["nearest"], mode="nearest", nearest_mode="round_prefer_ceil"),
        n("Resize", ["x", "", "up"], ["linear"], mode="linear"),
        n(
            "Resize",
            ["x", "", "", "sizes"],
            ["cubic"],
            mode="cubic",
            coordinate_transformation_mode="align_corners",
        ),
        n("Resize", ["x", "", "down"], ["antialias"], mode="linear", antialias=1),
        n(
            "Resize",
            ["x", "roi", "", "sizes"],
            ["crop"],
            mode="linear",
            coordinate_transformation_mode="tf_crop_and_resize",
            extrapolation_value=-3.0,
        ),
    ]
    constants = {
        "up": np.array([1, 1, 2.0, 1.5], np.float32),
        "down": np.array([1, 1, 0.5, 0.6], np.float32),
        "sizes": _i64(1, 2, 9, 5),
        "roi": np.array([0, 0, -0.2, 0.1, 1, 1, 0.9, 1.3], np.float32),
    }
    inputs = [("x", F, [1, 2, 6, 8])]
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 2, 6, 8)).astype(np.float32)}
    _check(_model(nodes, inputs, [m.output[0] for m in nodes], constants), feeds)


def test_resize_nearest_by_whole_factors() -> None:
    """Nearest upsampling as the exporters write it (torch.onnx: asymmetric + floor; the
    default half_pixel + round_prefer_floor; sizes instead of scales), by factors 2, 3, 4 and
    8 (the repeat path), next to forms whose tables are not repeats (align_corners, x1.5) and
    a rank-3 input; rows of 7 x k leave a vector tail."""
    n = helper.make_node

    def nearest(scales: str, out: str, **attrs: str) -> onnx.NodeProto:
        return n("Resize", ["x", "", scales], [out], mode="nearest", **attrs)

    torch_style = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    nodes = [
        nearest("x2", "torch_x2", **torch_style),
        nearest("x8", "torch_x8", **torch_style),
        nearest("x3_4", "default_x3_x4"),
        nearest("x2", "align_corners", coordinate_transformation_mode="align_corners"),
        nearest("x2_x1_5", "mixed", **torch_style),
        n("Resize", ["x", "", "", "sizes"], ["by_sizes"], mode="nearest", **torch_style),
        n("Resize", ["x1d", "", "x4_1d"], ["rank3"], mode="nearest", **torch_style),
    ]
    constants = {
        "x2": np.array([1, 1, 2, 2], np.float32),
        "x8": np.array([1, 1, 8, 8], np.float32),
        "x3_4": np.array([1, 1, 3, 4], np.float32),
        "x2_x1_5": np.array([1, 1, 2, 1.5], np.float32),
        "sizes": _i64(1, 3, 10, 14),
        "x4_1d": np.array([1, 1, 4], np.float32),
    }
    inputs = [("x", F, [1, 3, 5, 7]), ("x1d", F, [2, 3, 9])]
    rng = np.random.default_rng(21)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, _, shape in inputs}
    _check(_model(nodes, inputs, [m.output[0] for m in nodes], constants), feeds)


def test_nearest_upsampling_imports_as_a_broadcast() -> None:
    """A whole-factor nearest Resize is one Expand between two Reshapes (each repeated axis a
    size-1 axis broadcast to its factor), not a gather per axis."""
    node = helper.make_node(
        "Resize", ["x", "", "scales"], ["y"], mode="nearest",
        coordinate_transformation_mode="asymmetric", nearest_mode="floor",
    )  # fmt: skip
    scales = {"scales": np.array([1, 1, 2, 4], np.float32)}
    model = _model([node], [("x", F, [1, 3, 5, 7])], ["y"], scales)
    assert_filecheck(
        str(import_onnx(model).module),
        """
        CHECK-NOT: graph.gather
        CHECK: graph.reshape {{.*}} -> tensor<1x3x5x1x7x1xf32>
        CHECK: graph.expand {{.*}} -> tensor<1x3x5x2x7x4xf32>
        CHECK: graph.reshape {{.*}} -> tensor<1x3x10x28xf32>
        CHECK-NOT: graph.gather
        """,
    )


def test_index_reductions_scans_and_composed_reductions() -> None:
    n = helper.make_node
    nodes = [
        n("Abs", ["x"], ["absx"]),
        n("ArgMax", ["x"], ["argmax_last"], axis=2, select_last_index=1),
        n("ArgMax", ["x"], ["argmax_inner"], axis=3, keepdims=0),
        n("ArgMin", ["x"], ["argmin"], axis=0),
        n("CumSum", ["x", "axis2"], ["cumsum"]),
        n("CumSum", ["x", "axis3"], ["cumsum_rev_excl"], exclusive=1, reverse=1),
        n("ReduceL1", ["x", "axes"], ["l1"], keepdims=0),
        n("ReduceL2", ["x", "axes"], ["l2"]),
        n("ReduceLogSumExp", ["x", "axes"], ["lse"], keepdims=0),
        n("ReduceLogSum", ["absx", "axes"], ["logsum"]),
        n("ReduceSumSquare", ["x"], ["sumsq"], keepdims=0),
        n("ReduceProd", ["x", "axes"], ["prod"]),
        n("ReduceMin", ["x", "axes"], ["min"]),
    ]
    constants = {"axis2": _i64(2), "axis3": _i64(-1), "axes": _i64(1, -1)}
    x = np.random.default_rng(2).standard_normal((2, 3, 20, 11)).astype(np.float32)
    x[0, 0, 3, :] = x[0, 0, 7, :]  # ties: select_last_index must matter
    outputs = [m.output[0] for m in nodes if m.op_type != "Abs"]
    _check(_model(nodes, [("x", F, [2, 3, 20, 11])], outputs, constants), {"x": x})


def test_normalizations() -> None:
    n = helper.make_node
    nodes = [
        n("LogSoftmax", ["x"], ["logsoftmax_last"]),
        n("LogSoftmax", ["x"], ["logsoftmax_1"], axis=1),
        n("LayerNormalization", ["x", "scale", "bias"], ["ln", "mean", "inv_std"], axis=2),
        n("GroupNormalization", ["x", "gamma", "beta"], ["group"], num_groups=2),
        n("InstanceNormalization", ["x", "gamma", "beta"], ["instance"]),
        n("MeanVarianceNormalization", ["x"], ["mvn"]),
        n("LpNormalization", ["x"], ["lp1"], axis=1, p=1),
        n("LpNormalization", ["x"], ["lp2"], axis=-1, p=2),
    ]
    rng = np.random.default_rng(3)
    constants = {
        "scale": rng.standard_normal((5, 12)).astype(np.float32),
        "bias": rng.standard_normal((5, 12)).astype(np.float32),
        "gamma": rng.standard_normal(4).astype(np.float32),
        "beta": rng.standard_normal(4).astype(np.float32),
    }
    outputs = [name for m in nodes for name in m.output]
    x = rng.standard_normal((2, 4, 5, 12)).astype(np.float32)
    # ONNX's shape inference stops at GroupNormalization's and MeanVarianceNormalization's
    # function bodies, so the output shapes are declared.
    shapes = {name: [2, 4, 5, 12] for name in outputs}
    shapes["mean"] = shapes["inv_std"] = [2, 4, 1, 1]
    model = _model(nodes, [("x", F, [2, 4, 5, 12])], outputs, constants, shapes=shapes)
    _check(model, {"x": x})
    # RMSNormalization exists from opset 23 only.
    rms = n("RMSNormalization", ["x", "scale"], ["rms"], axis=2)
    model = _model([rms], [("x", F, [2, 4, 5, 12])], ["rms"], {"scale": constants["scale"]}, 23)
    _check(model, {"x": x})


def test_gather_elements_and_losses() -> None:
    n = helper.make_node
    nodes = [
        n("GatherElements", ["x", "idx"], ["gathered"], axis=1),
        n("NegativeLogLikelihoodLoss", ["x", "target", "w"], ["nll_mean"], ignore_index=2),
        n("NegativeLogLikelihoodLoss", ["x", "target"], ["nll_none"], reduction="none"),
        n(
            "SoftmaxCrossEntropyLoss",
            ["x", "target"],
            ["sce_sum", "log_prob"],
            reduction="sum",
            ignore_index=0,
        ),
    ]
    rng = np.random.default_rng(4)
    target = rng.integers(0, 5, (3, 7)).astype(np.int64)
    target[0, :3] = 2  # some ignored positions
    constants = {
        "idx": rng.integers(-5, 5, (3, 2, 7)).astype(np.int64),  # negative indices wrap
        "w": rng.random(5).astype(np.float32),
        "target": target,
    }
    outputs = [name for m in nodes for name in m.output]
    x = rng.standard_normal((3, 5, 7)).astype(np.float32)
    _check(_model(nodes, [("x", F, [3, 5, 7])], outputs, constants, opset=22), {"x": x})


def test_one_hot_and_hardmax() -> None:
    n = helper.make_node
    nodes = [
        n("OneHot", ["idx", "depth", "values"], ["one_hot_axis1"], axis=1),
        n("OneHot", ["idx", "depth", "values"], ["one_hot_last"]),
        n("Hardmax", ["x"], ["hardmax_last"]),
        n("Hardmax", ["x"], ["hardmax_0"], axis=0),
    ]
    rng = np.random.default_rng(6)
    x = rng.integers(0, 3, (4, 9, 13)).astype(np.float32)  # many ties: the first max wins
    constants = {"depth": _i64(11)}
    inputs = [("x", F, [4, 9, 13]), ("idx", I64, [3, 17]), ("values", F, [2])]
    feeds = {
        "x": x,
        "idx": rng.integers(-11, 14, (3, 17)).astype(np.int64),  # some out of range
        "values": np.array([-0.5, 2.0], np.float32),
    }
    _check(_model(nodes, inputs, [m.output[0] for m in nodes], constants), feeds)


def test_top_k_and_scatter_elements() -> None:
    n = helper.make_node
    nodes = [
        n("TopK", ["x", "k"], ["top_values", "arg_top_indices"], axis=1),
        n("TopK", ["x", "k"], ["low_values", "arg_low_indices"], axis=-1, largest=0),
        n("ScatterElements", ["x", "idx", "updates"], ["scatter_add"], axis=1, reduction="add"),
        n("GatherND", ["x", "nd_idx"], ["gather_nd"], batch_dims=1),
        n("ScatterND", ["x", "nd_idx2", "nd_updates"], ["scatter_nd"], reduction="mul"),
    ]
    rng = np.random.default_rng(7)
    constants = {
        "k": _i64(3),
        "idx": rng.integers(-6, 6, (2, 4, 5)).astype(np.int64),
        "updates": rng.standard_normal((2, 4, 5)).astype(np.float32),
        "nd_idx": rng.integers(0, 6, (2, 3, 1)).astype(np.int64),
        "nd_idx2": np.array([[0, 5], [1, -1]], np.int64),
        "nd_updates": rng.standard_normal((2, 5)).astype(np.float32),
    }
    outputs = [name for m in nodes for name in m.output]
    x = rng.standard_normal((2, 6, 5)).astype(np.float32)
    _check(_model(nodes, [("x", F, [2, 6, 5])], outputs, constants), {"x": x})


def test_conv_with_a_weight_computed_at_run_time() -> None:
    # The weight arrives as an input, so it is packed by copy kernels before the conv runs:
    # grouped (8 rows per group: not a multiple of the register block) and depthwise.
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w"], ["grouped"], group=2, pads=[1, 1, 1, 1]),
        n("Conv", ["x", "dw"], ["depthwise"], group=4, strides=[2, 2]),
    ]
    inputs = [("x", F, [1, 4, 9, 11]), ("w", F, [16, 2, 3, 3]), ("dw", F, [4, 1, 3, 3])]
    rng = np.random.default_rng(5)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, _, shape in inputs}
    _check(_model(nodes, inputs, ["grouped", "depthwise"], {}), feeds)


def test_conv_transpose() -> None:
    n = helper.make_node
    nodes = [
        n("ConvTranspose", ["x", "w", "b"], ["strided"], strides=[2, 3], pads=[1, 0, 0, 2]),
        n("ConvTranspose", ["x", "w"], ["same"], strides=[2, 2], auto_pad="SAME_UPPER"),
        n("ConvTranspose", ["x", "wg"], ["grouped"], group=2, dilations=[2, 1]),
        n("ConvTranspose", ["x", "w"], ["shaped"], strides=[3, 2], output_shape=[12, 7]),
        n("ConvTranspose", ["x1", "w1"], ["one_d"], strides=[2], output_padding=[1]),
        # kernel = stride (DBNet's and U-Net's 2x2/2 upsampling): one phase tap, no margin
        n("ConvTranspose", ["x", "w2", "b"], ["kernel_is_stride"], strides=[2, 2]),
        n("ConvTranspose", ["x", "w2"], ["padded_output"], strides=[2, 2], output_padding=[1, 0]),
    ]
    inputs = [
        ("x", F, [1, 4, 5, 4]),
        ("w", F, [4, 3, 3, 2]),
        ("wg", F, [4, 2, 2, 3]),
        ("x1", F, [2, 3, 7]),
        ("w1", F, [3, 2, 4]),
        ("w2", F, [4, 3, 2, 2]),
    ]
    rng = np.random.default_rng(8)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, _, shape in inputs}
    constants = {"b": rng.standard_normal(3).astype(np.float32)}
    _check(_model(nodes, inputs, [m.output[0] for m in nodes], constants), feeds)


def test_pooling_in_one_two_and_three_dims() -> None:
    n = helper.make_node
    nodes = [
        n("MaxPool", ["x1"], ["max_1d"], kernel_shape=[3], strides=[2], pads=[1, 1]),
        n("AveragePool", ["x3"], ["avg_3d"], kernel_shape=[2, 3, 2], pads=[1, 0, 1, 0, 1, 1]),
        n("MaxPool", ["x3"], ["max_3d"], kernel_shape=[3, 2, 2], strides=[2, 1, 2], ceil_mode=1),
        n(
            "AveragePool",
            ["x2"],
            ["avg_dilated"],
            kernel_shape=[2, 3],
            dilations=[2, 2],
            pads=[1, 1, 0, 2],
            ceil_mode=1,
        ),
        n("MaxPool", ["x2"], ["max_dilated"], kernel_shape=[3, 2], dilations=[1, 3]),
        n("LpPool", ["x2"], ["lp"], kernel_shape=[2, 2], p=3, pads=[1, 0, 0, 1]),
        n("GlobalLpPool", ["x2"], ["global_lp"]),
    ]
    inputs = [("x1", F, [2, 3, 11]), ("x2", F, [1, 2, 9, 10]), ("x3", F, [1, 2, 5, 6, 7])]
    rng = np.random.default_rng(9)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, _, shape in inputs}
    _check(_model(nodes, inputs, [m.output[0] for m in nodes], {}), feeds)


def test_einsum() -> None:
    n = helper.make_node
    nodes = [
        n("Einsum", ["a", "b"], ["batch_matmul"], equation="bij,bjk->bik"),
        n("Einsum", ["a"], ["diagonal_sum"], equation="...ii->...i"),
        n("Einsum", ["a", "b", "c"], ["three"], equation="bij,bjk,k->ib"),
        n("Einsum", ["c", "c"], ["outer_implicit"], equation="i,j"),
        n("Einsum", ["b"], ["transpose_sum"], equation="bjk->kj"),
    ]
    inputs = [("a", F, [2, 3, 3]), ("b", F, [2, 3, 4]), ("c", F, [4])]
    rng = np.random.default_rng(10)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, _, shape in inputs}
    _check(_model(nodes, inputs, [m.output[0] for m in nodes], {}), feeds)


def test_attention() -> None:
    n = helper.make_node
    nodes = [
        # 4-D grouped-query attention with a boolean mask and a causal limit after a past cache
        n(
            "Attention",
            ["q", "k", "v", "mask", "past_k", "past_v"],
            ["y", "present_k", "present_v", "qk"],
            is_causal=1,
            qk_matmul_output_mode=3,
        ),
        # 3-D inputs, softcap and an explicit scale
        n(
            "Attention",
            ["q3", "k3", "v3"],
            ["y3"],
            q_num_heads=2,
            kv_num_heads=2,
            softcap=3.0,
            scale=0.2,
        ),
    ]
    inputs = [
        ("q", F, [2, 4, 3, 8]),
        ("k", F, [2, 2, 5, 8]),
        ("v", F, [2, 2, 5, 6]),
        ("mask", TensorProto.BOOL, [3, 7]),
        ("past_k", F, [2, 2, 2, 8]),
        ("past_v", F, [2, 2, 2, 6]),
        ("q3", F, [1, 4, 16]),
        ("k3", F, [1, 6, 16]),
        ("v3", F, [1, 6, 10]),
    ]
    rng = np.random.default_rng(11)
    feeds = {
        name: (rng.random(shape) > 0.3 if t == TensorProto.BOOL else rng.standard_normal(shape))
        for name, t, shape in inputs
    }
    feeds = {k: v if v.dtype == np.bool_ else v.astype(np.float32) for k, v in feeds.items()}
    outputs = ["y", "present_k", "present_v", "qk", "y3"]
    _check(_model(nodes, inputs, outputs, {}, opset=23), feeds)


def test_attention_3d_with_mask() -> None:
    """ONNX's test_attention_3d_attn_mask shapes: the masked probabilities were written in
    place over their input shifted by 64 bytes, and read back clobbered."""
    node = helper.make_node(
        "Attention", ["q", "k", "v", "mask"], ["y"], q_num_heads=3, kv_num_heads=3
    )
    shapes = {"q": [2, 4, 24], "k": [2, 6, 24], "v": [2, 6, 24], "mask": [4, 6]}
    rng = np.random.default_rng(12)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    inputs = [(name, F, shape) for name, shape in shapes.items()]
    _check(_model([node], inputs, ["y"], {}, opset=23), feeds)


def test_linear_resize_imports_as_resize_linear_and_weighted_gathers() -> None:
    """The last two axes go to one graph.resize_linear (rows and columns of two taps, every
    column's taps listed as properties); another axis stays a weighted gather."""
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")
    model = _model(
        [node],
        [("x", F, [1, 3, 4, 8])],
        ["y"],
        {"scales": np.array([1, 2, 1, 2], np.float32)},
    )
    ir = str(import_onnx(model).module)
    assert_filecheck(
        ir,
        """
        CHECK: graph.gather {{.*}}axis = 1
        CHECK: graph.mul
        CHECK: graph.gather {{.*}}axis = 1
        CHECK: graph.mul
        CHECK: graph.add {{.*}} -> tensor<1x6x4x8xf32>
        CHECK: graph.resize_linear {{.*}}column_factor = 0 : i64, {{.*}}column_taps = array<i64: 0, 0, 0, 1, 0, 1, 1, 2, {{.*}}, 6, 7, 7, 7>, column_tap_weights = array<f32: 2.500000e-01, 7.500000e-01, 7.500000e-01, 2.500000e-01, {{.*}}} : tensor<1x6x4x8xf32>, tensor<20x2xi32>, tensor<20x2xf32> -> tensor<1x6x4x16xf32>
        CHECK-NOT: graph.gather
        """,
    )


def test_float32_einsum_contraction_imports_as_one_matmul() -> None:
    node = helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bkj->bik")
    model = _model([node], [("a", F, [2, 3, 5]), ("b", F, [2, 4, 5])], ["y"], {})
    assert_filecheck(
        str(import_onnx(model).module),
        """
        CHECK: graph.transpose %b {perm = array<i64: 0, 2, 1>}
        CHECK: graph.matmul %a, %{{.*}} : tensor<2x3x5xf32>, tensor<2x5x4xf32> -> tensor<2x3x4xf32>
        CHECK-NOT: graph.reduce
        """,
    )


def test_slice_of_a_runtime_tensor_imports_as_graph_slice() -> None:
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])
    constants = {"starts": _i64(5), "ends": _i64(0), "axes": _i64(1), "steps": _i64(-2)}
    model = _model([node], [("x", F, [3, 8])], ["y"], constants)
    assert_filecheck(
        str(import_onnx(model).module),
        """
        CHECK: graph.slice %{{.*}} {starts = array<i64: 0, 5>, steps = array<i64: 1, -2>}
        CHECK-SAME: tensor<3x8xf32> -> tensor<3x3xf32>
        """,
    )


@pytest.mark.parametrize(
    "node,message",
    [
        (helper.make_node("Pad", ["x", "pads"], ["y"], mode="mirror"), "mode 'mirror'"),
        (helper.make_node("Split", ["x", "split"], ["y", "z"], axis=1), "do not add up"),
    ],
)
def test_bad_attributes_name_the_node(node: onnx.NodeProto, message: str) -> None:
    constants = {"pads": _i64(0, 1, 0, 1), "split": _i64(2, 3)}
    graph = helper.make_graph(
        [node],
        "bad",
        [helper.make_tensor_value_info("x", F, [2, 4])],
        [helper.make_tensor_value_info(o, F, [2, 4]) for o in node.output],
        [numpy_helper.from_array(constants[node.input[1]], node.input[1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.raises(ValueError, match=message):
        import_onnx(model)


@pytest.mark.parametrize("op_type", ["ReduceLogSumExp", "ReduceLogSum"])
def test_integer_log_reductions_are_refused(op_type: str) -> None:
    """exp/log have float kernels only: an int32 input is refused naming the type (it was a
    NotImplementedError from inside the importer)."""
    node = helper.make_node(op_type, ["x", "axes"], ["y"], keepdims=0)
    graph = helper.make_graph(
        [node],
        "int_log_reduction",
        [helper.make_tensor_value_info("x", TensorProto.INT32, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [2])],
        [numpy_helper.from_array(_i64(-1), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ember.UnsupportedOpError, match=f"{op_type} .*int32"):
        import_onnx(model)


def test_float64_attention_is_refused() -> None:
    """Attention's matmuls compute in float32: float64 inputs were computed in float32 and
    cast back (errors of 1e-7 relative where onnxruntime computes in float64)."""
    shapes = {"q": [1, 2, 3, 8], "k": [1, 2, 5, 8], "v": [1, 2, 5, 8]}
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attn")
    graph = helper.make_graph(
        [node],
        "attention_f64",
        [helper.make_tensor_value_info(n, TensorProto.DOUBLE, s) for n, s in shapes.items()],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    with pytest.raises(ember.UnsupportedOpError, match=r"Attention \(node 'attn'.*float64"):
        ember.compile(model)
