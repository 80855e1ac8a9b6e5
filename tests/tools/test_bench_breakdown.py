"""`ember bench --breakdown`: the slowest kernels by ONNX node and op type (ember.tools.profile's
instrumented build), the time per op type, onnxruntime's own per-node profile beside them, and
the same in --json. Times are only checked to be positive and to add up: no wall-clock bounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ember.tools import bench
from ember.tools.cli import main

CHANNELS, SIZE = 8, 12


def conv_bn_relu_pool() -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu -> GlobalAveragePool, the Relu and the pool unnamed
    (ember's profile then names them by their outputs): one fused kernel and a reduction."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int, low: float = -0.5) -> onnx.TensorProto:
        array = rng.uniform(low, 0.5, shape).astype(np.float32)
        return numpy_helper.from_array(array, name)

    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"], name="bn0"
        ),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_bn_relu_pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CHANNELS, 1, 1])],
        [
            init("w", CHANNELS, CHANNELS, 3, 3),
            init("b", CHANNELS),
            init("scale", CHANNELS),
            init("shift", CHANNELS),
            init("mean", CHANNELS),
            init("var", CHANNELS, low=0.1),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("breakdown") / "model.onnx"
    onnx.save(conv_bn_relu_pool(), path)
    return path


ARGS = ["--runs", "3", "--warmup", "1", "--threads", "1", "--breakdown"]


def test_breakdown_names_the_onnx_nodes_and_op_types(
    model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", str(model_path), *ARGS]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("where ember's time goes"))
    assert "2 kernel calls, median of 3 runs" in lines[start]
    assert lines[start + 1].split()[:5] == ["#", "share", "ms", "op", "types"]
    rows = {line.split()[3]: line for line in lines[start + 2 : start + 4]}
    # The fused kernel names the Conv, then the nodes folded into it (the unnamed Relu by its
    # output), and all their op types; the pool names its own node.
    assert set(rows) == {"Conv+BatchNormalization+Relu", "GlobalAveragePool"}
    assert "'conv0' + bn0, r  [conv 3x3" in rows["Conv+BatchNormalization+Relu"]
    assert "'y'  [" in rows["GlobalAveragePool"]
    shares = [float(line.split()[1].rstrip("%")) for line in rows.values()]
    assert all(s >= 0 for s in shares) and abs(sum(shares) - 100) < 0.2
    summary = lines.index("ember per op type:")
    assert [line.split()[-1] for line in lines[summary + 2 : summary + 4]] == [
        "Conv+BatchNormalization+Relu",
        "GlobalAveragePool",
    ]


def test_breakdown_json_with_onnxruntime_beside_it(
    model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    argv = ["bench", str(model_path), *ARGS, "--top", "1", "--compare", "onnxruntime", "--json"]
    assert main(argv) == 0
    breakdown = json.loads(capsys.readouterr().out)["breakdown"]
    assert (breakdown["statistic"], breakdown["runs"], breakdown["threads"]) == ("median", 3, 1)
    assert breakdown["kernel_calls"] == 2 and breakdown["rest"]["kernels"] == 1
    (conv,) = breakdown["top"]  # --top 1: the conv, by far the slowest
    assert conv["nodes"] == ["conv0", "bn0", "r"]
    assert conv["op_types"] == ["Conv", "BatchNormalization", "Relu"]
    assert conv["kernel"].startswith("conv 3x3 s1 8->8 @12x12")
    assert conv["ms"] > 0 and 0 < conv["share"] <= 1 and conv["gflops"] > 0
    assert conv["ms"] + breakdown["rest"]["ms"] == pytest.approx(breakdown["kernels_ms"])
    assert breakdown["kernels_ms"] <= breakdown["entry_ms"] * 1.001
    assert [t["op_types"] for t in breakdown["op_types"]] == [
        "Conv+BatchNormalization+Relu",
        "GlobalAveragePool",
    ]
    # onnxruntime's profile: its (renamed, fused) conv node is matched to ember's kernel.
    ort = breakdown["onnxruntime"]
    assert ort["runs"] == 3 and ort["nodes_ms"] > 0
    assert "Conv" in {n["op_type"] for n in ort["nodes"]}
    assert conv["onnxruntime_ms"] is not None and conv["onnxruntime_ms"] > 0


def test_onnxruntime_profile_is_the_median_per_run_after_warmup() -> None:
    def run(ts: float) -> dict[str, object]:
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": 100}

    def node(name: str, ts: float, dur: float, op: str = "Conv") -> dict[str, object]:
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": op}}  # fmt: skip

    events = [run(0), node("a", 10, 1000)]  # the warm-up run: left out
    events += [run(200), node("a", 210, 10), node("a_nchwc", 220, 5), node("b", 230, 4, "Add")]
    events += [run(400), node("a", 410, 30), node("b", 430, 2, "Add")]
    events += [run(600), node("a", 610, 20), node("a", 650, 20), node("b", 630, 6, "Add")]
    events += [{"cat": "Node", "name": "a_fence_before", "ts": 611, "dur": 99}]
    profile = bench.onnxruntime_profile(events, skip_runs=1)
    assert profile.runs == 3
    # Per run a = 10, 30, 40 (two calls), a_nchwc = 5, 0, 0; b = 4, 2, 6: medians in ms.
    assert profile.node_ms == {"a": 0.03, "a_nchwc": 0.0, "b": 0.004}
    assert profile.node_op_types == {"a": "Conv", "a_nchwc": "Conv", "b": "Add"}
    assert profile.ms_of(["a"]) == pytest.approx(0.03)  # "a_nchwc" is a rewrite of "a"
    assert profile.ms_of(["c"]) is None
    assert bench.onnxruntime_base_name("fused n38") == "n38"  # onnxruntime's Gemm + Relu
    assert profile.by_op_type() == [("Conv", 2, 0.03), ("Add", 1, 0.004)]
    # benchmarks/per_node.py takes the least disturbed run of each node instead.
    fastest = bench.onnxruntime_profile(events, skip_runs=1, statistic="min")
    assert fastest.node_ms == {"a": 0.01, "a_nchwc": 0.0, "b": 0.002}
    with pytest.raises(ValueError, match="statistic"):
        bench.onnxruntime_profile(events, statistic="mean")


def test_breakdown_is_refused_with_batch(
    model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", str(model_path), "--batch", "1,2", "--breakdown"]) == 1
    err = capsys.readouterr().err
    assert (
        err == "ember bench: error: --breakdown profiles one input shape: run it without --batch\n"
    )
