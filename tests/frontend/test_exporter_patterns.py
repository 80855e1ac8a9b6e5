"""Graph patterns torch.onnx and transformers exports write, found by the exporter zoo
(tests/exporters, slow), each rebuilt here with onnx.helper so the default suite keeps them
without torch. Compared with onnxruntime on seeded inputs; tolerance per test (RTOL/ATOL
below: float32 kernels against onnxruntime's float32 unless stated)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.tests.oracle import onnxruntime_outputs

RTOL, ATOL = 1e-4, 1e-5
F, I64 = TensorProto.FLOAT, TensorProto.INT64


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[tuple[str, int, list[int | str]]],
    outputs: list[tuple[str, int]],
    constants: dict[str, np.ndarray] | None = None,
    opset: int = 17,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "exported",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
        [numpy_helper.from_array(v, k) for k, v in (constants or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _check(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    input_shapes: dict[str, list[int]] | None = None,
) -> None:
    expected = onnxruntime_outputs(model, feeds)
    got = ember.compile(model, threads=1, input_shapes=input_shapes).run(feeds)
    for name, want in expected.items():
        assert got[name].shape == want.shape, name
        assert got[name].dtype == want.dtype, name
        np.testing.assert_allclose(got[name], want, rtol=RTOL, atol=ATOL, err_msg=name)


def _i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


# --- causal mask: Trilu over a tensor of -inf ----------------------------------------------


def _causal_mask_model() -> onnx.ModelProto:
    """torch.triu(torch.full((t, t), -inf), 1) added to attention scores, t from the input's
    shape: Shape -> Gather -> Unsqueeze -> Concat -> ConstantOfShape(-inf) -> Trilu."""
    n = helper.make_node
    minus_inf = numpy_helper.from_array(np.array([-np.inf], np.float32))
    nodes = [
        n("Shape", ["scores"], ["shape"]),
        n("Gather", ["shape", "two"], ["t"], axis=0),
        n("Unsqueeze", ["t", "zero_axis"], ["t1"]),
        n("Concat", ["t1", "t1"], ["tt"], axis=0),
        n("ConstantOfShape", ["tt"], ["full"], value=minus_inf),
        n("Trilu", ["full", "one"], ["mask"], upper=1),
        n("Add", ["scores", "mask"], ["masked"]),
        n("Softmax", ["masked"], ["probs"], axis=-1),
    ]
    return _model(
        nodes,
        [("scores", F, ["batch", 4, "seq", "seq"])],
        [("probs", F), ("mask", F)],
        {"two": np.array(2, np.int64), "zero_axis": _i64(0), "one": np.array(1, np.int64)},
    )


@pytest.mark.parametrize("pinned", [False, True], ids=["symbolic", "pinned"])
def test_causal_mask_from_trilu_of_minus_inf(pinned: bool) -> None:
    """Trilu zeroes the dropped triangle: -inf * 0 would be NaN (every softmax row NaN)."""
    scores = np.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype(np.float32)
    shapes = {"scores": [2, 4, 5, 5]} if pinned else None
    _check(_causal_mask_model(), {"scores": scores}, shapes)


def test_trilu_of_a_runtime_tensor_with_infinities_and_nan() -> None:
    n = helper.make_node
    model = _model(
        [n("Trilu", ["x"], ["upper"], upper=1), n("Trilu", ["x", "k"], ["lower"], upper=0)],
        [("x", F, [3, 4, 5])],
        [("upper", F), ("lower", F)],
        {"k": np.array(-1, np.int64)},
    )
    x = np.random.default_rng(1).standard_normal((3, 4, 5)).astype(np.float32)
    x[0, 3, 0], x[1, 0, 4], x[2, 2, 1] = np.inf, -np.inf, np.nan
    _check(model, {"x": x})
