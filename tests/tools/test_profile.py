"""instrument-kernels and `python -m ember.tools.profile`: per-call-site cycle counts."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ember.core.target import host_target
from ember.engine.compile import compile_program
from ember.passes.program import entry_function
from ember.passes.transforms.instrument_kernels import InstrumentKernels, profile_sites
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tools import profile as profile_tool

# Float32 kernels vs onnxruntime: different summation orders, same math.
REL_TOL = 1e-4


def twin_convs(channels: int = 12, size: int = 24) -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> Relu -> GlobalAveragePool: both convs share one kernel function.
    (12 channels, not a multiple of any vector width: blocked-layout leaves the convs NCHW,
    so the call sites are the convs and the pool alone.)"""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.2, name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["y"]),
    ]
    shape = [1, channels, size, size]
    graph = helper.make_graph(
        nodes,
        "twin_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 1, 1])],
        [
            init("w1", channels, channels, 3, 3),
            init("b1", channels),
            init("w2", channels, channels, 3, 3),
            init("b2", channels),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_pass_describes_each_call_site_and_refuses_a_second_run() -> None:
    program = compile_program(twin_convs(), host_target(1))
    InstrumentKernels().apply(program.ctx, program.module)
    # The IR before and after: tests/lowering/instrument-kernels.mlir. Here the sites of real
    # kernels: three calls (one function called twice), their summaries and flops.
    sites = profile_sites(entry_function(program.module))
    assert sites is not None
    assert [s["callee"] for s in sites] == ["conv2d_1", "conv2d_1", "reduce_1"]
    assert sites[0]["summary"] == "conv 3x3 s1 12->12 @24x24+bias+relu"
    assert sites[0]["flops"] == 2 * 12 * 24 * 24 * 12 * 9
    assert sites[2]["flops"] == 0 and "1x12x24x24 -> 1x12x1x1" in sites[2]["summary"]
    with pytest.raises(ValueError, match="already instrumented"):
        InstrumentKernels().apply(program.ctx, program.module)


def test_instrumented_program_runs_right_and_counts_per_call_site() -> None:
    model = twin_convs()
    compiled = profile_tool.instrumented(model, host_target(1), threads=1)
    feeds = profile_tool.random_feeds(compiled.manifest)
    outputs, counters = compiled.run_profiled(feeds)
    assert_close(outputs, onnxruntime_outputs(model, feeds), REL_TOL)
    assert counters.shape == (4,) and (counters > 0).all()
    # The sites are nested in the entry, so their cycles cannot exceed its count. (How the
    # time splits between them is timing, which a loaded machine skews: not asserted.)
    assert counters[:-1].sum() <= counters[-1]
    # run() still works on an instrumented program (its counters are discarded).
    assert_close(compiled.run(feeds), outputs, 0.0)


def test_profile_totals_are_close_to_the_wall_time() -> None:
    result = profile_tool.profile_model(twin_convs(32, 40), runs=5, warmup=1)
    # 32 channels run blocked (blocked-layout): a reorder in, the two convs, a reorder out.
    callees = ["transpose_1", "conv2d_1", "conv2d_1", "transpose_2", "reduce_1"]
    assert [s.callee for s in result.sites] == callees
    assert [s.op_type for s in result.sites] == ["Conv"] * 4 + ["GlobalAveragePool"]
    assert all(s.seconds > 0 for s in result.sites)
    # Best per site <= best whole entry <= wall time (the wall adds only Python's call).
    assert result.site_seconds <= result.run_seconds * 1.001
    assert result.run_seconds <= result.wall_seconds * 1.001
    conv = result.sites[1]
    assert conv.gflops is not None and 0.1 < conv.gflops < 1000
    assert 1e8 < result.cycles_per_second < 1e10


def test_cli_prints_one_row_per_call_site(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "twin.onnx"
    onnx.save(twin_convs(), str(path))
    assert profile_tool.main([str(path), "--runs", "2", "--order", "program"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r"\s+\d+\s+\w+_\d+ ", line)]
    assert len(rows) == 3, out
    assert "conv 3x3 s1 12->12 @24x24+bias+relu" in rows[0] and "GFLOP/s" in out
    assert "reduce_1" in rows[2]
    assert "whole entry" in out


def test_uninstrumented_program_refuses_run_profiled() -> None:
    import ember

    compiled = ember.compile(twin_convs(), threads=1)
    with pytest.raises(ValueError, match="not instrumented"):
        compiled.run_profiled(profile_tool.random_feeds(compiled.manifest))


def named(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every node named after its op and position, as exporters name them."""
    for position, node in enumerate(model.graph.node):
        node.name = f"/block{position}/{node.op_type}"
    return model


def test_rows_name_the_onnx_node_even_after_fusion(capsys: pytest.CaptureFixture[str]) -> None:
    model = named(twin_convs())
    result = profile_tool.profile_model(model, runs=1, warmup=0)
    # Conv+bias+Relu became one kernel: it keeps the Conv's name (the summary says what it
    # absorbed); the pool names its own node.
    assert [(s.op_type, s.node) for s in result.sites] == [
        ("Conv", "/block0/Conv"),
        ("Conv", "/block2/Conv"),
        ("GlobalAveragePool", "/block4/GlobalAveragePool"),
    ]
    # ... and lists the nodes fused into it.
    assert [s.absorbed for s in result.sites] == [("/block1/Relu",), ("/block3/Relu",), ()]
    assert result.sites[0].shapes.endswith("-> 1x12x24x24")
    table = profile_tool.format_profile(result, order="program")
    assert table.splitlines()[3].endswith("Conv '/block2/Conv' + /block3/Relu")


def test_trace_has_one_complete_event_per_kernel_per_run(tmp_path) -> None:
    import json

    model = named(twin_convs())
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    trace_path = tmp_path / "trace.json"
    assert profile_tool.main([str(path), "--runs", "3", "--trace", str(trace_path)]) == 0
    trace = json.loads(trace_path.read_text())
    kernels = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] != "run"]
    runs = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == "run"]
    assert len(runs) == 3 and len(kernels) == 3 * 3
    node_names = {node.name for node in model.graph.node}
    assert (
        {e["args"]["node"] for e in kernels}
        == {
            "/block0/Conv",
            "/block2/Conv",
            "/block4/GlobalAveragePool",
        }
        <= node_names
    )
    assert {n for e in kernels for n in e["args"]["nodes"]} == node_names
    for event in kernels:
        assert event["dur"] > 0 and event["name"] == event["args"]["node"]
        assert {"op", "onnx_op", "shape", "kernel"} <= event["args"].keys()
    assert all(e["args"]["GFLOP/s"] > 0 for e in kernels if e["args"]["onnx_op"] == "Conv")
    # Calls lie inside their run, one after another.
    for run in runs:
        inside = [e for e in kernels if run["ts"] <= e["ts"] < run["ts"] + run["dur"]]
        assert len(inside) == 3
        assert inside[-1]["ts"] + inside[-1]["dur"] <= run["ts"] + run["dur"] * 1.001


def test_nodes_sharing_a_name_stem_are_told_apart_by_order() -> None:
    """Exporter names like conv_2, conv_11 all give the IR name hint `conv`: the importer
    converts nodes in order, so the k-th conv value is the k-th Conv node. Each Conv row must
    name a Conv whose weight matches the kernel's summary (kernel size, channels)."""
    from ember.tools.model_zoo import resnet18

    model = resnet18(seed=0, image_size=32, classes=10)
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    conv_weights = {n.name: weights[n.input[1]] for n in model.graph.node if n.op_type == "Conv"}
    result = profile_tool.profile_model(model, runs=1, warmup=0)
    convs = [s for s in result.sites if s.callee.startswith("conv2d")]
    assert len(convs) == len(conv_weights) == len({s.node for s in convs})
    # Every conv absorbed its BatchNormalization (fold-batchnorm records it).
    assert all(site.absorbed[0].startswith("batchnormalization_") for site in convs)
    for site in convs:
        out_channels, in_channels, kh, kw = conv_weights[site.node]
        assert site.summary.startswith(f"conv {kh}x{kw} "), (site.node, site.summary)
        assert f" {in_channels}->{out_channels} " in site.summary, (site.node, site.summary)


def test_profile_is_an_ember_subcommand_with_a_trace(tmp_path, capsys) -> None:
    from ember.tools import cli

    path = tmp_path / "twin.onnx"
    onnx.save(twin_convs(4, 4), str(path))
    trace_path = tmp_path / "trace.json"
    argv = ["profile", str(path), "--runs", "2", "--trace", str(trace_path)]
    assert cli.main(argv) == 0
    assert "whole entry" in capsys.readouterr().out
    assert '"traceEvents"' in trace_path.read_text()


@pytest.mark.parametrize("what", ["artifact", "missing"])
def test_profile_refuses_what_is_not_an_onnx_file_in_one_line(tmp_path, capsys, what) -> None:
    from ember.tools import cli

    if what == "artifact":  # an artifact folder: named as such, with the model it came from
        target = tmp_path / "model.ember"
        target.mkdir()
        (target / "manifest.json").write_text('{"source": {"path": "/models/m.onnx"}}')
        expected = "give the .onnx model (it was compiled from /models/m.onnx)"
    else:
        target = tmp_path / "nope.onnx"
        expected = "nope.onnx: no such file"
    assert cli.main(["profile", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ember profile: error: ") and expected in err
    assert len(err.strip().splitlines()) == 1
