"""Data-dependent output shapes: NonZero, Unique and NonMaxSuppression as graph outputs (one
program whose runtime slices the bounded outputs) and feeding further ops (a StagedModel:
head program, tail compiled per run-time size), against onnxruntime and onnx.reference.

Every output here is integer or selected/gathered input values: compared exactly.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.dialects.numpy_eval import nonzero
from ember.engine.staging import StagedModel
from ember.runtime.errors import UnsupportedOpError
from ember.tests.oracle import onnxruntime_outputs

OPSET = [helper.make_opsetid("", 17)]


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=OPSET)
    onnx.checker.check_model(model)
    return model


def _check(
    compiled, model: onnx.ModelProto, feeds: dict[str, np.ndarray], reference: bool = True
) -> None:
    """Exactly onnxruntime's outputs and onnx.reference's (shapes and values)."""
    got = compiled.run(feeds)
    expected = onnxruntime_outputs(model, feeds)
    for name, ref in expected.items():
        np.testing.assert_array_equal(got[name], ref, err_msg=f"{name} vs onnxruntime")
    if reference:
        results = ReferenceEvaluator(model).run(None, feeds)
        for name, ref in zip(expected, results):
            np.testing.assert_array_equal(got[name], ref, err_msg=f"{name} vs onnx.reference")


@pytest.mark.parametrize("dtype", [np.float32, np.bool_, np.int64])
def test_nonzero_row_major_and_empty(dtype: type) -> None:
    rng = np.random.default_rng(0)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = _model(
        [helper.make_node("NonZero", ["x"], ["y"], name="nz")],
        [helper.make_tensor_value_info("x", elem, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [3, -1])],
    )
    compiled = ember.compile(model)
    for density in (0.3, 0.9, 0.0):
        x = (rng.random((2, 3, 4)) < density) * rng.integers(1, 5, (2, 3, 4))
        _check(compiled, model, {"x": x.astype(dtype)})
        # The numpy evaluator of graph.nonzero (folding, reference interpreter) agrees.
        packed = nonzero(x.astype(dtype))
        count = int(packed[0])
        np.testing.assert_array_equal(
            packed[1:].reshape(3, -1)[:, :count], np.array(np.nonzero(x), np.int64)
        )


def _unique_model(shape: list[int], axis: int | None, is_sorted: int) -> onnx.ModelProto:
    attrs = {"sorted": is_sorted} | ({} if axis is None else {"axis": axis})
    names = ["y", "indices", "inverse", "counts"]
    return _model(
        [helper.make_node("Unique", ["x"], names, name="unique", **attrs)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [
            helper.make_tensor_value_info(
                n, TensorProto.FLOAT, [None] * (1 if axis is None else len(shape))
            )
            if n == "y"
            else helper.make_tensor_value_info(n, TensorProto.INT64, [None])
            for n in names
        ],
    )


@pytest.mark.parametrize("axis", [None, 0, -1])
@pytest.mark.parametrize("is_sorted", [1, 0])
def test_unique_all_four_outputs(axis: int | None, is_sorted: int) -> None:
    rng = np.random.default_rng(1)
    model = _unique_model([6, 3], axis, is_sorted)
    compiled = ember.compile(model)
    for seed in range(2):
        x = rng.integers(0, 3 if seed else 2, (6, 3)).astype(np.float32)
        x[4] = x[1]  # a repeated row
        x[:, 2] = x[:, 0]  # and a repeated column
        # onnx.reference 1.23 gets sorted=0 wrong: a TypeError without an axis, slices of
        # the wrong axis with one ([2, 3] for Unique(axis=-1) of [6, 3]).
        _check(compiled, model, {"x": x}, reference=bool(is_sorted))


def _nms_model(center_point_box: int, with_score_threshold: bool) -> onnx.ModelProto:
    inputs = ["boxes", "scores", "max_out", "iou"] + (["score_min"] if with_score_threshold else [])
    initializers = [
        helper.make_tensor("max_out", TensorProto.INT64, [1], [3]),
        helper.make_tensor("iou", TensorProto.FLOAT, [1], [0.4]),
        helper.make_tensor("score_min", TensorProto.FLOAT, [1], [0.2]),
    ]
    return _model(
        [
            helper.make_node(
                "NonMaxSuppression",
                inputs,
                ["selected"],
                name="nms",
                center_point_box=center_point_box,
            )
        ],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [2, 8, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [2, 3, 8]),
        ],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [-1, 3])],
        initializers[: len(inputs) - 2],
    )


def _boxes(rng: np.random.Generator, center_point_box: int) -> np.ndarray:
    """Overlapping boxes in a small square (corners in either order, or centers and sizes)."""
    if center_point_box:
        centers = rng.random((2, 8, 2)) * 2
        sizes = rng.random((2, 8, 2)) * 1.5 + 0.1
        return np.concatenate([centers, sizes], axis=2).astype(np.float32)
    return (rng.random((2, 8, 4)) * 2).astype(np.float32)


@pytest.mark.parametrize(("center_point_box", "with_score_threshold"), [(0, True), (1, False)])
def test_nms_overlaps_ties_batches_classes(
    center_point_box: int, with_score_threshold: bool
) -> None:
    rng = np.random.default_rng(2)
    model = _nms_model(center_point_box, with_score_threshold)
    # Bounds-checked (a regression: the heap's unused slots were read as box indices before
    # they were initialised).
    compiled = ember.compile(model, checks=True)
    for _ in range(3):
        scores = rng.choice(np.array([0.1, 0.3, 0.5, 0.7, 0.9], np.float32), (2, 3, 8))  # ties
        _check(compiled, model, {"boxes": _boxes(rng, center_point_box), "scores": scores})


def _detector_model() -> onnx.ModelProto:
    """boxes/scores -> NMS -> the selected boxes gathered, scaled: a detector's tail."""
    nodes = [
        helper.make_node(
            "NonMaxSuppression",
            ["boxes", "scores", "max_out", "iou", "score_min"],
            ["selected"],
            name="nms",
        ),
        helper.make_node("Gather", ["selected", "two"], ["box_index"], axis=1),
        helper.make_node("Squeeze", ["boxes", "zero"], ["boxes0"]),
        helper.make_node(
            "Gather", ["boxes0", "box_index"], ["picked"], axis=0, name="gather_boxes"
        ),
        helper.make_node("Mul", ["picked", "scale"], ["out"]),
    ]
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 10, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2, 10]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [-1, 4])],
        [
            helper.make_tensor("max_out", TensorProto.INT64, [1], [4]),
            helper.make_tensor("iou", TensorProto.FLOAT, [1], [0.5]),
            helper.make_tensor("score_min", TensorProto.FLOAT, [1], [0.3]),
            helper.make_tensor("two", TensorProto.INT64, [], [2]),
            helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
            helper.make_tensor("scale", TensorProto.FLOAT, [], [2.0]),
        ],
    )


def test_nms_feeding_gather_compiles_the_tail_per_count() -> None:
    rng = np.random.default_rng(3)
    model = _detector_model()
    compiled = ember.compile(model)
    assert isinstance(compiled, StagedModel)
    counts = set()
    for scale in (1.0, 0.45, 0.1):  # fewer boxes above score_threshold 0.3, then none
        scores = (rng.random((1, 2, 10)) * scale).astype(np.float32)
        feeds = {"boxes": (rng.random((1, 10, 4)) * 2).astype(np.float32), "scores": scores}
        _check(compiled, model, feeds)
        counts.add(compiled.run(feeds)["out"].shape[0])
    assert len(counts) > 1, counts  # several run-time sizes: the tail compiled for each
    assert compiled.tail.compiles == len(counts)
    assert compiled.compiles == 1 + len(counts)


def _nonzero_gather_nd_model() -> onnx.ModelProto:
    """mask -> NonZero -> Transpose -> GatherND: torchvision's boolean indexing."""
    nodes = [
        helper.make_node("Greater", ["x", "threshold"], ["mask"]),
        helper.make_node("NonZero", ["mask"], ["where"], name="nonzero"),
        helper.make_node("Transpose", ["where"], ["coordinates"], perm=[1, 0]),
        helper.make_node("GatherND", ["x", "coordinates"], ["values"], name="gather_nd"),
        helper.make_node("Neg", ["values"], ["out"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, [-1]),
            helper.make_tensor_value_info("where", TensorProto.INT64, [2, -1]),
        ],
        [helper.make_tensor("threshold", TensorProto.FLOAT, [], [0.5])],
    )


def test_nonzero_transpose_gather_nd_chain() -> None:
    rng = np.random.default_rng(4)
    model = _nonzero_gather_nd_model()
    compiled = ember.compile(model)
    assert isinstance(compiled, StagedModel)
    for density in (0.2, 0.6, 0.0):
        x = np.where(rng.random((3, 5)) < density, 1.0, 0.0) * rng.random((3, 5)) + 0.5 * (
            rng.random((3, 5)) < density
        )
        _check(compiled, model, {"x": x.astype(np.float32)})
    assert compiled.tail.compiles == 3


def test_ahead_of_time_refuses_a_tail_naming_the_nodes() -> None:
    from ember.engine.compile import compile_program

    with pytest.raises(UnsupportedOpError, match=r"NonZero \(node 'nonzero'.*feeds Transpose"):
        compile_program(_nonzero_gather_nd_model())


def test_ahead_of_time_artifact_slices_data_dependent_outputs(tmp_path) -> None:
    from ember.engine.aot import compile_artifact
    from ember.runtime.artifact import load

    model = _unique_model([5], None, 0)
    compile_artifact(model, tmp_path / "unique")
    artifact = load(tmp_path / "unique")
    assert artifact.output_names == ["y", "indices", "inverse", "counts"]
    x = np.array([3, 1, 3, 2, 1], np.float32)
    got = artifact.run({"x": x})
    expected = onnxruntime_outputs(model, {"x": x})
    for name, ref in expected.items():
        np.testing.assert_array_equal(got[name], ref)


def _many_boxes_model(limit: int) -> onnx.ModelProto:
    inputs = ["boxes", "scores", "max_out", "iou", "score_min"]
    return _model(
        [helper.make_node("NonMaxSuppression", inputs, ["selected"], name="nms")],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [2, 300, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [2, 4, 300]),
        ],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [-1, 3])],
        [
            helper.make_tensor("max_out", TensorProto.INT64, [1], [limit]),
            helper.make_tensor("iou", TensorProto.FLOAT, [1], [0.3]),
            helper.make_tensor("score_min", TensorProto.FLOAT, [1], [0.05]),
        ],
    )


@pytest.mark.parametrize("limit", [2**63 - 1, 40])  # torchvision exports sys.maxsize
def test_nms_hundreds_of_boxes_any_limit(limit: int) -> None:
    """The kernel selects up to every box per class (no unrolled steps): onnxruntime's rows,
    and the numpy evaluator (constant folding, reference interpreter) agrees."""
    from ember.dialects.numpy_eval import non_max_suppression

    rng = np.random.default_rng(5)
    model = _many_boxes_model(limit)
    compiled = ember.compile(model)
    corner = rng.random((2, 300, 2)) * 10
    boxes = np.concatenate([corner, corner + rng.random((2, 300, 2)) * 3], axis=2)
    boxes = boxes[..., [1, 0, 3, 2]].astype(np.float32)  # [y1, x1, y2, x2]
    scores = rng.choice(np.linspace(0, 1, 50, dtype=np.float32), (2, 4, 300))  # many ties
    feeds = {"boxes": boxes, "scores": scores}
    got = compiled.run(feeds)["selected"]
    expected = onnxruntime_outputs(model, feeds)["selected"]
    np.testing.assert_array_equal(got, expected)
    assert len(expected) > 100
    packed = non_max_suppression(boxes, scores, 0, min(limit, 300), 0.3, 0.05)
    np.testing.assert_array_equal(packed[1 : 1 + packed[0, 0]], expected)


def test_constants_the_tail_reads_stay_constants() -> None:
    """A Constant node before the cut, read after it (a Reshape's shape, a MatMul weight), is
    computed in the tail again: no run-time input, no value specialisation."""
    nodes = [
        helper.make_node("Constant", [], ["shape"], value_ints=[-1, 1]),
        helper.make_node(
            "Constant",
            [],
            ["w"],
            value=helper.make_tensor("w", TensorProto.FLOAT, [1, 3], [1, 2, 3]),
        ),
        helper.make_node("Greater", ["x", "threshold"], ["mask"]),
        helper.make_node("NonZero", ["mask"], ["where"], name="nonzero"),
        helper.make_node("Transpose", ["where"], ["coordinates"], perm=[1, 0]),
        helper.make_node("GatherND", ["x", "coordinates"], ["values"]),
        helper.make_node("Reshape", ["values", "shape"], ["column"]),
        helper.make_node("MatMul", ["column", "w"], ["out"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [-1, 3])],
        [helper.make_tensor("threshold", TensorProto.FLOAT, [], [0.5])],
    )
    compiled = ember.compile(model)
    x = np.random.default_rng(6).random((4, 5)).astype(np.float32)
    _check(compiled, model, {"x": x})
    assert sorted(compiled.tail.input_names) == ["where", "x"]
    assert compiled.tail.value_inputs == []


@pytest.mark.parametrize(("axis", "length"), [(0, 100), (1, 3), (None, 7)])
def test_compress_with_a_run_time_condition(axis: int | None, length: int) -> None:
    """A condition of any length given at run time (value specialisation took at most 64
    elements): bounded and staged, the compressed values feeding a Mul."""
    attrs = {} if axis is None else {"axis": axis}
    model = _model(
        [
            helper.make_node("Compress", ["x", "condition"], ["kept"], name="compress", **attrs),
            helper.make_node("Mul", ["kept", "kept"], ["out"]),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [100, 4]),
            helper.make_tensor_value_info("condition", TensorProto.BOOL, [length]),
        ],
        [
            helper.make_tensor_value_info(
                "out", TensorProto.FLOAT, [None] * (1 if axis is None else 2)
            )
        ],
    )
    compiled = ember.compile(model)
    assert isinstance(compiled, StagedModel)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((100, 4)).astype(np.float32)
    for density in (0.5, 0.1):
        _check(compiled, model, {"x": x, "condition": rng.random(length) < density})


@pytest.mark.parametrize("axis", [None, 0])
def test_unique_nan_as_numpy(axis: int | None) -> None:
    """NaN: onnxruntime has no consistent answer (for [2, nan, 1, nan, 2, -0] it counts one
    NaN as 2.0, the other as 1.0), so numpy's np.unique is the oracle: NaN sorts after every number; without an axis
    all NaNs are one value (equal_nan), along an axis slices holding NaN stay distinct while
    ordering treats NaNs as equal."""
    model = _unique_model([8, 3], axis, 1)
    compiled = ember.compile(model)
    rng = np.random.default_rng(8)
    for _ in range(3):
        x = rng.choice(np.array([np.nan, 1, 2], np.float32), (8, 3))
        x[1] = x[0]  # a repeated slice holding NaN (maybe)
        got = compiled.run({"x": x})
        expected = np.unique(
            x, return_index=True, return_inverse=True, return_counts=True, axis=axis
        )
        for name, ref in zip(["y", "indices", "inverse", "counts"], expected):
            np.testing.assert_array_equal(got[name], ref.reshape(got[name].shape))


def test_data_dependent_ops_in_series_and_side_by_side() -> None:
    """NonZero -> GatherND -> Unique (a tail holding a data-dependent op is staged again),
    beside a second NonZero that is only a graph output (both cut in the head)."""
    nodes = [
        helper.make_node("Greater", ["x", "threshold"], ["mask"]),
        helper.make_node("NonZero", ["mask"], ["where"], name="nonzero"),
        helper.make_node("Transpose", ["where"], ["coordinates"], perm=[1, 0]),
        helper.make_node("GatherND", ["x", "coordinates"], ["values"]),
        helper.make_node("Floor", ["scaled"], ["binned"]),
        helper.make_node("Unique", ["binned"], ["u", "", "", "counts"], name="unique"),
        helper.make_node("Add", ["u", "one"], ["out"]),
        helper.make_node("NonZero", ["y"], ["where_y"], name="nonzero_y"),
    ]
    nodes.insert(4, helper.make_node("Mul", ["values", "ten"], ["scaled"]))
    model = _model(
        nodes,
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 5]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [4]),
        ],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info("counts", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("where_y", TensorProto.INT64, [1, None]),
        ],
        [
            helper.make_tensor("threshold", TensorProto.FLOAT, [], [0.3]),
            helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0]),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        ],
    )
    compiled = ember.compile(model)
    assert compiled.cut == ["nonzero", "nonzero_y"]
    rng = np.random.default_rng(9)
    for _ in range(2):
        feeds = {
            "x": rng.random((6, 5)).astype(np.float32),
            "y": (rng.random(4) > 0.5).astype(np.float32),
        }
        _check(compiled, model, feeds)
    assert isinstance(compiled.tail, StagedModel) and compiled.tail.cut == ["unique"]


@pytest.mark.parametrize(
    ("shape", "axis", "k", "largest", "dtype"),
    [
        ((300,), 0, 300, 0, np.float32),  # a full sort (Unique's)
        ((3, 200, 2), 1, 57, 1, np.float32),  # columns with inner > 1
        ((2, 130), 1, 32, 0, np.int64),
    ],
)
def test_top_k_heap_for_large_k(
    shape: tuple[int, ...], axis: int, k: int, largest: int, dtype: type
) -> None:
    """k >= 32 keeps the best k in a heap: the same order as the insertion sort (and
    onnxruntime): ties by lower index, NaN above every number."""
    rng = np.random.default_rng(10)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = _model(
        [helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=axis, largest=largest)],
        [helper.make_tensor_value_info("x", elem, list(shape))],
        [
            helper.make_tensor_value_info("values", elem, [None] * len(shape)),
            helper.make_tensor_value_info("indices", TensorProto.INT64, [None] * len(shape)),
        ],
        [helper.make_tensor("k", TensorProto.INT64, [1], [k])],
    )
    x = rng.integers(0, 20, shape).astype(dtype)  # many ties
    if dtype == np.float32:
        x[rng.random(shape) < 0.05] = np.nan
    got = ember.compile(model).run({"x": x})
    expected = onnxruntime_outputs(model, {"x": x})
    for name, ref in expected.items():
        np.testing.assert_array_equal(got[name], ref, err_msg=name)


def test_unique_along_an_axis_too_large_to_compare_pairwise_is_refused() -> None:
    model = _unique_model([4097, 1], 0, 1)
    with pytest.raises(UnsupportedOpError, match=r"Unique \(node 'unique'.*pairwise comparison"):
        ember.compile(model)


def test_engine_predictor_lists_a_data_dependent_size_as_minus_one(tmp_path) -> None:
    """The Config -> Predictor API (artifacts underneath): the count output is not listed, the
    data-dependent dim shows as -1 until a run gives it."""
    model = _model(
        [helper.make_node("NonZero", ["x"], ["y"], name="nz")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [2, -1])],
    )
    onnx.save(model, tmp_path / "nonzero.onnx")
    predictor = ember.create_predictor(ember.Config(str(tmp_path / "nonzero.onnx")))
    assert predictor.get_output_names() == ["y"]
    assert predictor.get_output_handle("y").shape() == [2, -1]
    x = np.array([[0, 1, 0, 2], [0, 0, 0, 0], [3, 0, 0, 0]], np.float32)
    (result,) = predictor.run([x])
    np.testing.assert_array_equal(result, np.array(np.nonzero(x)))
    assert predictor.get_output_handle("y").shape() == [2, 3]
