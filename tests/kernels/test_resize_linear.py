"""Linear Resize (kernel.resize_linear on the last two axes) against onnxruntime.

Every coordinate_transformation_mode x factor (whole factors, whose columns run as vector
shuffles, 1.5, 0.5, sizes 37 -> 64 / 50) x rank, each Resize one output of one model per
rank so that a compile covers the grid. Seeded N(0, 1) inputs; tolerance: max |ember -
onnxruntime| <= 1e-5 * max |onnxruntime| (float32 rounding of a two-tap blend per axis).
Cubic and antialiased linear Resizes keep the weighted-gather path and are checked too.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from xdsl.parser import Parser
from xdsl.utils.exceptions import VerifyException

import ember
from ember.core.context import make_context
from ember.dialects.weights import WeightStore
from ember.engine.batch_polymorphic import prove_batch_separable
from ember.frontend.onnx_importer import import_onnx
from ember.tests.oracle import assert_close, onnxruntime_outputs

MODES = [
    "half_pixel",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "half_pixel_symmetric",
    "tf_crop_and_resize",
]
FACTORS = [2.0, 3.0, 4.0, 1.5, 0.5]
# rank -> (input shape: its last two axes 12 x 40, so that every factor gives whole sizes;
# scales of the leading axes: a rank-5 Resize also resizes its depth, by gathers)
SHAPES = {
    3: ([2, 12, 40], [1.0]),
    4: ([1, 2, 12, 40], [1.0, 1.0]),
    5: ([1, 2, 3, 12, 40], [1.0, 1.0, 2.0]),
}


def _resize_model(rank: int) -> onnx.ModelProto:
    shape, leading = SHAPES[rank]
    nodes, outputs, inits = [], [], []
    roi = [0.0] * len(leading) + [0.1, -0.2] + [1.0] * len(leading) + [0.8, 1.1]
    inits.append(numpy_helper.from_array(np.array(roi, np.float32), "roi"))
    for f_index, factor in enumerate(FACTORS):
        scales = np.array([*leading, factor, factor], np.float32)
        inits.append(numpy_helper.from_array(scales, f"scales{f_index}"))
        for mode in MODES:
            name = f"{mode}_x{factor}"
            roi_name = "roi" if mode == "tf_crop_and_resize" else ""
            nodes.append(
                helper.make_node(
                    "Resize",
                    ["x", roi_name, f"scales{f_index}"],
                    [name],
                    mode="linear",
                    coordinate_transformation_mode=mode,
                )
            )
            outputs.append(name)
    # Sizes that are no whole factor (37 -> 64 rows, 37 -> 50 columns), both axes.
    sizes = np.array([*[1] * (rank - 2), 64, 50], np.int64)
    sizes[: rank - 2] = [2] if rank == 3 else [1, 2, 3][: rank - 2]
    inits.append(numpy_helper.from_array(sizes, "sizes"))
    for mode in MODES[:4]:
        nodes.append(
            helper.make_node(
                "Resize",
                ["x37", "", "", "sizes"],
                [f"{mode}_sizes"],
                mode="linear",
                coordinate_transformation_mode=mode,
            )
        )
        outputs.append(f"{mode}_sizes")
    # The weighted-gather path (rank 4: onnxruntime's cubic takes no other): cubic,
    # antialiased linear downsampling; and the columns only.
    scales_w = np.array([*leading, 1.0, 2.0], np.float32)
    inits.append(numpy_helper.from_array(scales_w, "scales_w"))
    for name, attrs, scales in (
        ("cubic", {"mode": "cubic"}, "scales0"),
        (
            "cubic_align",
            {"mode": "cubic", "coordinate_transformation_mode": "align_corners"},
            "scales3",
        ),
        ("antialias", {"mode": "linear", "antialias": 1}, "scales4"),
        ("columns_only", {"mode": "linear"}, "scales_w"),
    ):
        if rank != 4 and name != "columns_only":
            continue
        nodes.append(helper.make_node("Resize", ["x", "", scales], [name], **attrs))
        outputs.append(name)
    x37 = [*(int(s) for s in sizes[: rank - 2]), 37, 37]
    graph = helper.make_graph(
        nodes,
        f"resize_rank{rank}",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("x37", TensorProto.FLOAT, x37),
        ],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    return model


# Rank 3 (1-D linear) with --runslow: the kernel is rank-generic, ranks 4 and 5 run it by
# default, and tests/kernels reached the same arcs without it (docs/testing.md).
@pytest.mark.parametrize("rank", [pytest.param(3, marks=pytest.mark.slow), 4, 5])
def test_linear_resize_matches_onnxruntime(rank: int) -> None:
    model = _resize_model(rank)
    rng = np.random.default_rng(rank)
    feeds = {
        i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(
            np.float32
        )
        for i in model.graph.input
    }
    want = onnxruntime_outputs(model, feeds)
    got = ember.compile(model).run(feeds)
    for name in want:
        assert_close({name: got[name]}, {name: want[name]}, rel=1e-5)
    # The grid is the kernel's: every whole-factor and sizes Resize of the last axes runs as it.
    ir = str(import_onnx(model).module)
    assert ir.count("graph.resize_linear") >= len(MODES) * len(FACTORS)


@pytest.mark.parametrize(
    ("mode", "factor"),
    [("half_pixel", 2), ("asymmetric", 3), ("pytorch_half_pixel", 4), ("align_corners", 2)],
)
def test_wide_outputs_take_the_column_pattern(mode: str, factor: int) -> None:
    """Outputs wider than the listed columns' limit (2048) use the repeating pattern of a whole
    factor (vector loads per tap, weighted per phase, interleaved by shuffles; the edges and
    what float32 rounding leaves out from the tables). align_corners has hardly any pattern:
    its columns read the tables."""
    node = helper.make_node(
        "Resize", ["x", "", "scales"], ["y"], mode="linear", coordinate_transformation_mode=mode
    )
    graph = helper.make_graph(
        [node],
        "resize_wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 1100])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(np.array([1, 1, factor, factor], np.float32), "scales")
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    ir = str(import_onnx(model).module)
    assert "column_taps" not in ir and f"column_factor = {factor} : i64" in ir
    if mode == "half_pixel":
        assert (
            "column_interior = array<i64: 1, 1099>, column_offsets = array<i64: -1, 0, 0, 1>, "
            "column_weights = array<f32: 2.500000e-01, 7.500000e-01, 7.500000e-01, "
            "2.500000e-01>" in ir
        )
    x = np.random.default_rng(factor).standard_normal((1, 2, 3, 1100)).astype(np.float32)
    got = ember.compile(model).run({"x": x})
    assert_close(got, onnxruntime_outputs(model, {"x": x}), rel=1e-5)


def test_weight_zero_taps_read_no_inf() -> None:
    """asymmetric x2 puts every even output on an input sample (weights 1 and 0): an inf next
    to it must not make those outputs NaN (0 * inf), on the rows and on the columns."""
    node = helper.make_node(
        "Resize",
        ["x", "", "scales"],
        ["y"],
        mode="linear",
        coordinate_transformation_mode="asymmetric",
    )
    graph = helper.make_graph(
        [node],
        "resize_inf",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    x = np.random.default_rng(0).standard_normal((1, 1, 4, 40)).astype(np.float32)
    x[0, 0, 1, 20] = np.inf
    y = ember.compile(model).run({"x": x})["y"]
    # Output (2, 40) is input (1, 20) itself, (2, 38) input (1, 19): both weigh the inf by 0 or 1.
    assert y[0, 0, 2, 40] == np.inf
    assert np.isfinite(y[0, 0, 2, 38]) and np.isfinite(y[0, 0, 0, 40])
    assert np.isnan(y).sum() == 0


def test_batched_linear_resize_stays_one_program_per_sample() -> None:
    """graph.resize_linear works on the last two axes only: a model with a symbolic batch is
    proven batch-separable (one compile at batch 1 serves every batch), and is right."""
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")
    graph = helper.make_graph(
        [node],
        "resize_batch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 6, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    assert prove_batch_separable(model, "batch", {"x": (1, 2, 6, 20)}).separable
    compiled = ember.compile(model, threads=1)
    x = np.random.default_rng(3).standard_normal((3, 2, 6, 20)).astype(np.float32)
    assert_close(compiled.run({"x": x}), onnxruntime_outputs(model, {"x": x}), rel=1e-5)


def test_weight_zero_taps_read_no_inf_in_listed_columns() -> None:
    """align_corners x2 (no column pattern: every column's taps listed, shuffled out of input
    vectors): the last output row and column sit on the last input row and column with weight
    0 on the one before; an inf there reaches neither."""
    node = helper.make_node(
        "Resize",
        ["x", "", "scales"],
        ["y"],
        mode="linear",
        coordinate_transformation_mode="align_corners",
    )
    graph = helper.make_graph(
        [node],
        "resize_inf_listed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    assert "column_taps" in str(import_onnx(model).module)
    x = np.random.default_rng(1).standard_normal((1, 1, 4, 40)).astype(np.float32)
    x[0, 0, 1, 38] = np.inf  # column 38: weight 0 for output column 79
    x[0, 0, 1, 24] = np.inf  # the first column the last block of 16 output columns loads
    x[0, 0, 2, 5] = -np.inf  # row 2: weight 0 for output row 7
    y = ember.compile(model).run({"x": x})["y"]
    assert np.all(np.isfinite(y[0, 0, :, 79])) and np.all(np.isfinite(y[0, 0, 7, :]))
    assert np.isinf(y).any()
    finite = np.where(np.isfinite(x), x, 0)
    assert_close(
        {"y": np.where(np.isfinite(y), y, 0)},
        {"y": np.where(np.isfinite(y), onnxruntime_outputs(model, {"x": finite})["y"], 0)},
        rel=1e-5,
    )


def test_linear_resize_of_a_constant_folds() -> None:
    """graph.resize_linear's numpy semantics (numpy_eval.resize_linear) fold a Resize of an
    initializer at compile time: no kernel is left, and the value is onnxruntime's."""
    c = np.random.default_rng(5).standard_normal((1, 2, 5, 7)).astype(np.float32)
    nodes = [
        helper.make_node(
            "Resize",
            ["c", "", "s"],
            ["r"],
            mode="linear",
            coordinate_transformation_mode="align_corners",
        ),
        helper.make_node("Add", ["r", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "resize_constant",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 10, 14])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(c, "c"),
            numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    compiled = ember.compile(model, keep_ir=True)
    ir = str(compiled.program.module)  # type: ignore[union-attr]
    assert "kernel.resize_linear" not in ir and "call @resize_linear" not in ir
    x = np.random.default_rng(6).standard_normal((1, 2, 10, 14)).astype(np.float32)
    assert_close(compiled.run({"x": x}), onnxruntime_outputs(model, {"x": x}), rel=1e-5)


@pytest.mark.parametrize(
    ("props", "tables", "message"),
    [
        (
            "column_interior = array<i64: 1, 3>",
            "12x2",
            "tables (12, 2) / (12, 2), expected [16, 2]",
        ),
        ("column_interior = array<i64: 1>", "16x2", "column interior [1] is not [lo, hi)"),
        ("column_interior = array<i64: 3, 1>", "16x2", "column factor 2, interior [3, 1)"),
    ],
)
def test_resize_linear_verifier_refuses_inconsistent_ops(
    props: str, tables: str, message: str
) -> None:
    text = f"""
builtin.module {{
  func.func @main(%x: tensor<1x4x4xf32>, %i: tensor<{tables}xi32>, %w: tensor<{tables}xf32>) {{
    %y = graph.resize_linear %x, %i, %w {{column_factor = 2 : i64, {props},
      column_offsets = array<i64: -1, 0, 0, 1>, column_weights = array<f32: 0.25, 0.75, 0.75, 0.25>}}
      : tensor<1x4x4xf32>, tensor<{tables}xi32>, tensor<{tables}xf32> -> tensor<1x8x8xf32>
    func.return
  }}
}}
"""
    module = Parser(make_context(WeightStore()), text).parse_module()
    with pytest.raises(VerifyException, match=re.escape(message)):
        module.verify()
