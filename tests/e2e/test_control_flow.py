"""Control flow with regions: Scan, Loop and If on a run-time condition become graph.loop /
graph.if, bufferized into scf.while / scf.if with the body's kernels inside.

Every model runs natively and is compared with onnxruntime (and the ONNX reference for Scan)
on seeded inputs: float results to rel 1e-5 of the largest magnitude (`assert_close`; the
bodies are a few elementwise ops and small matmuls), integer and bool results exactly.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from xdsl.parser import Parser

import ember
from ember.core.context import make_context
from ember.frontend.onnx_importer import import_model
from ember.passes.pipeline import GRAPH_STAGE, build_pipeline
from ember.runtime.errors import UnsupportedOpError
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tools.model_zoo import greedy_decoder

FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
RTOL = 1e-5


def _info(name: str, elem: int, shape: list[int] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "control_flow", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], reference: bool = False) -> None:
    got = ember.compile(model).run(feeds)
    expected = onnxruntime_outputs(model, feeds)
    if reference:
        names = [o.name for o in model.graph.output]
        ref = dict(zip(names, ReferenceEvaluator(model).run(None, feeds)))
        assert_close(got, ref, RTOL)
    for name, value in expected.items():
        if value.dtype.kind in "iub":
            np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert_close(got, expected, RTOL)


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ---------------------------------------------------------------------------------------------
# Scan


def _scan_model(general: bool = True) -> onnx.ModelProto:
    """Two states, two scan inputs, two scan outputs; `general`: the second input scans its
    axis 1 backwards, the first output is stacked on axis 1 and the second reversed (else
    everything on axis 0, forwards)."""
    body = helper.make_graph(
        [
            helper.make_node("Mul", ["a_t", "b_t"], ["ab"]),
            helper.make_node("Add", ["s_in", "ab"], ["s_out"]),
            helper.make_node("Max", ["m_in", "a_t"], ["m_out"]),
            helper.make_node("Sub", ["a_t", "b_t"], ["d"]),
            helper.make_node("Identity", ["s_out"], ["s_scan"]),
        ],
        "scan_body",
        [_info(n, FLOAT, [4]) for n in ("s_in", "m_in", "a_t", "b_t")],
        [_info(n, FLOAT, [4]) for n in ("s_out", "m_out", "s_scan", "d")],
    )
    scan = helper.make_node(
        "Scan",
        ["s0", "m0", "a", "b"],
        ["s", "m", "s_all", "d_all"],
        body=body,
        num_scan_inputs=2,
        scan_input_axes=[0, int(general)],
        scan_input_directions=[0, int(general)],
        scan_output_axes=[int(general), 0],
        scan_output_directions=[0, int(general)],
    )
    inputs = [
        _info("s0", FLOAT, [4]),
        _info("m0", FLOAT, [4]),
        _info("a", FLOAT, [5, 4]),
        _info("b", FLOAT, [4, 5] if general else [5, 4]),
    ]
    outputs = [_info(n, FLOAT, None) for n in ("s", "m", "s_all", "d_all")]
    return _model([scan], inputs, outputs)


@pytest.mark.parametrize("general", [False, True])
def test_scan_with_states_axes_and_directions(general: bool) -> None:
    rng = _rng()
    feeds = {
        "s0": rng.standard_normal(4).astype(np.float32),
        "m0": rng.standard_normal(4).astype(np.float32),
        "a": rng.standard_normal((5, 4)).astype(np.float32),
        "b": rng.standard_normal((4, 5) if general else (5, 4)).astype(np.float32),
    }
    # (The ONNX reference implements forward scans on axis 0 only.)
    _check(_scan_model(general), feeds, reference=not general)


# ---------------------------------------------------------------------------------------------
# Loop


def _loop_with_scan_output() -> onnx.ModelProto:
    """x <- 0.5 * x + iter for M iterations (M a run-time input); every x is a scan output."""
    body = helper.make_graph(
        [
            helper.make_node("Cast", ["i"], ["i_f"], to=FLOAT),
            helper.make_node("Mul", ["x_in", "half"], ["hx"]),
            helper.make_node("Add", ["hx", "i_f"], ["x_out"]),
            helper.make_node("Identity", ["x_out"], ["x_scan"]),
            helper.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "loop_body",
        [_info("i", INT64, []), _info("c_in", BOOL, []), _info("x_in", FLOAT, [3])],
        [_info("c_out", BOOL, []), _info("x_out", FLOAT, [3]), _info("x_scan", FLOAT, [3])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "half")],
    )
    loop = helper.make_node("Loop", ["M", "", "x0"], ["x", "xs"], body=body, name="halving")
    return _model(
        [loop],
        [_info("M", INT64, []), _info("x0", FLOAT, [3])],
        [_info("x", FLOAT, None), _info("xs", FLOAT, None)],
    )


@pytest.mark.parametrize("trips", [4, 1])
def test_loop_with_a_run_time_trip_count_and_a_scan_output(trips: int) -> None:
    # The scan output's size is the trip count: compiled per value of M (specialisation).
    feeds = {"M": np.array(trips, np.int64), "x0": _rng().standard_normal(3).astype(np.float32)}
    _check(_loop_with_scan_output(), feeds)


def _loop_until() -> onnx.ModelProto:
    """Doubles x and counts until sum(x) reaches `limit` or M iterations: an early exit
    computed in the body, carried values only, M and limit run-time inputs."""
    body = helper.make_graph(
        [
            helper.make_node("Mul", ["x_in", "two"], ["x_out"]),
            helper.make_node("Add", ["n_in", "one"], ["n_out"]),
            helper.make_node("ReduceSum", ["x_out"], ["total"], keepdims=0),
            helper.make_node("Less", ["total", "limit"], ["c_out"]),
        ],
        "loop_body",
        [
            _info("i", INT64, []),
            _info("c_in", BOOL, []),
            _info("x_in", FLOAT, [2, 3]),
            _info("n_in", INT64, []),
        ],
        [_info("c_out", BOOL, []), _info("x_out", FLOAT, [2, 3]), _info("n_out", INT64, [])],
        [
            numpy_helper.from_array(np.array(2.0, np.float32), "two"),
            numpy_helper.from_array(np.array(1, np.int64), "one"),
        ],
    )
    loop = helper.make_node("Loop", ["M", "go", "x0", "n0"], ["x", "n"], body=body)
    inputs = [
        _info("M", INT64, []),
        _info("go", BOOL, []),
        _info("limit", FLOAT, []),
        _info("x0", FLOAT, [2, 3]),
        _info("n0", INT64, []),
    ]
    return _model([loop], inputs, [_info("x", FLOAT, None), _info("n", INT64, None)])


@pytest.mark.parametrize(
    ("trips", "go", "limit"), [(100, True, 50.0), (3, True, 1e9), (100, False, 50.0)]
)
def test_loop_with_a_condition_exit_and_carried_values(trips: int, go: bool, limit: float) -> None:
    model = _loop_until()
    compiled = ember.compile(model)
    # No scan output: one program serves every trip count, condition and limit.
    assert isinstance(compiled, ember.CompiledModel)
    feeds = {
        "M": np.array(trips, np.int64),
        "go": np.array(go),
        "limit": np.array(limit, np.float32),
        "x0": np.abs(_rng().standard_normal((2, 3))).astype(np.float32) + 0.1,
        "n0": np.array(0, np.int64),
    }
    got = compiled.run(feeds)
    expected = onnxruntime_outputs(model, feeds)
    np.testing.assert_array_equal(got["n"], expected["n"])
    assert_close(got, expected, RTOL)


def test_loop_carried_values_that_swap() -> None:
    """(a, b) <- (b, a): each yielded value is the other carried value's buffer, so the copies
    back at the end of an iteration must not overwrite one before it is read (staged)."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["b_in"], ["a_out"]),
            helper.make_node("Identity", ["a_in"], ["b_out"]),
            helper.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "swap",
        [
            _info("i", INT64, []),
            _info("c_in", BOOL, []),
            _info("a_in", FLOAT, [4]),
            _info("b_in", FLOAT, [4]),
        ],
        [_info("c_out", BOOL, []), _info("a_out", FLOAT, [4]), _info("b_out", FLOAT, [4])],
    )
    loop = helper.make_node("Loop", ["M", "", "a0", "b0"], ["a", "b"], body=body)
    inputs = [_info("M", INT64, []), _info("a0", FLOAT, [4]), _info("b0", FLOAT, [4])]
    model = _model([loop], inputs, [_info("a", FLOAT, None), _info("b", FLOAT, None)])
    rng = _rng()
    feeds = {
        "M": np.array(7, np.int64),
        "a0": rng.standard_normal(4).astype(np.float32),
        "b0": rng.standard_normal(4).astype(np.float32),
    }
    _check(model, feeds)


def test_loop_with_scan_outputs_and_an_early_exit_is_refused() -> None:
    model = _loop_until()
    body = model.graph.node[0].attribute[0].g
    body.node.append(helper.make_node("Identity", ["x_out"], ["x_scan"]))
    body.output.append(_info("x_scan", FLOAT, [2, 3]))
    model.graph.node[0].output.append("xs")
    model.graph.node[0].name = "until"
    model.graph.output.append(_info("xs", FLOAT, None))
    with pytest.raises(UnsupportedOpError, match=r"Loop \(node 'until'.*depends on data"):
        ember.compile(model, input_shapes={}).run(
            {
                "M": np.array(3, np.int64),
                "go": np.array(True),
                "limit": np.array(1.0, np.float32),
                "x0": np.ones((2, 3), np.float32),
                "n0": np.array(0, np.int64),
            }
        )


def test_greedy_decoder_loop_matches_onnxruntime() -> None:
    """The greedy decoder of the speech/OCR model set (tools/model_zoo.py; its other models are
    in test_speech_ocr_models.py)."""
    model = greedy_decoder()
    compiled = ember.compile(model)
    for steps, bos in ((6, 3), (2, 11), (6, 5)):
        feeds = {
            "steps": np.array(steps, np.int64),
            "bos": np.array([bos], np.int64),
            "h0": _rng().standard_normal((1, 8)).astype(np.float32),
        }
        got = compiled.run(feeds)
        expected = onnxruntime_outputs(model, feeds)
        np.testing.assert_array_equal(got["tokens"], expected["tokens"])
        np.testing.assert_array_equal(got["last"], expected["last"])
        assert_close(got, expected, RTOL)


# ---------------------------------------------------------------------------------------------
# If


def _if_model(opset: int = 17) -> onnx.ModelProto:
    """y = cond ? Relu(x) * w : y0 - x; both branches read outer values (x, w, y0)."""
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "w"], ["t"])],
        "then",
        [],
        [_info("t", FLOAT, [2, 3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["y0", "x"], ["e"])], "else", [], [_info("e", FLOAT, [2, 3])]
    )
    node = helper.make_node(
        "If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="choose"
    )
    w = numpy_helper.from_array(np.arange(3, dtype=np.float32), "w")
    inputs = [_info("c", BOOL, []), _info("x", FLOAT, [2, 3]), _info("y0", FLOAT, [2, 3])]
    return _model([node], inputs, [_info("y", FLOAT, None)], [w], opset)


@pytest.mark.parametrize("cond", [True, False])
def test_if_on_a_run_time_condition_reads_outer_values(cond: bool) -> None:
    rng = _rng()
    feeds = {
        "c": np.array(cond),
        "x": rng.standard_normal((2, 3)).astype(np.float32),
        "y0": rng.standard_normal((2, 3)).astype(np.float32),
    }
    _check(_if_model(), feeds)


def test_if_inside_a_loop_body() -> None:
    """Nested regions: a Loop whose body doubles x on even iterations and adds 1 on odd ones."""
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["x_in", "two"], ["t"])], "even", [], [_info("t", FLOAT, [3])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Add", ["x_in", "one"], ["e"])], "odd", [], [_info("e", FLOAT, [3])]
    )
    body = helper.make_graph(
        [
            helper.make_node("Mod", ["i", "two_i"], ["parity"]),
            helper.make_node("Equal", ["parity", "zero_i"], ["even"]),
            helper.make_node("If", ["even"], ["x_out"], then_branch=then_g, else_branch=else_g),
            helper.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "body",
        [_info("i", INT64, []), _info("c_in", BOOL, []), _info("x_in", FLOAT, [3])],
        [_info("c_out", BOOL, []), _info("x_out", FLOAT, [3])],
    )
    constants = {
        "two": np.array(2.0, np.float32),
        "one": np.array(1.0, np.float32),
        "two_i": np.array(2, np.int64),
        "zero_i": np.array(0, np.int64),
    }
    inits = [numpy_helper.from_array(v, n) for n, v in constants.items()]
    loop = helper.make_node("Loop", ["M", "", "x0"], ["x"], body=body)
    model = _model(
        [loop], [_info("M", INT64, []), _info("x0", FLOAT, [3])], [_info("x", FLOAT, None)], inits
    )
    feeds = {"M": np.array(5, np.int64), "x0": _rng().standard_normal(3).astype(np.float32)}
    _check(model, feeds)


# ---------------------------------------------------------------------------------------------
# The IR


def test_graph_loop_and_its_bufferization_print() -> None:
    model = _scan_model()
    module, weights = import_model(model, {})
    ctx = make_context(weights)
    build_pipeline(GRAPH_STAGE).apply(ctx, module)
    assert_filecheck(
        str(module),
        """
        CHECK: graph.loop trip_count %{{.*}} : tensor<i64> inits(%s0, %m0) captures(%a, %b) : (tensor<4xf32>, tensor<4xf32>), (tensor<5x4xf32>, tensor<4x5xf32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<5x4xf32>, tensor<5x4xf32>) {
        CHECK-NEXT: ^{{.*}}(%[[I:.*]]: tensor<i64>, %{{.*}}: tensor<i1>, %{{.*}}: tensor<4xf32>, %{{.*}}: tensor<4xf32>, %[[A:.*]]: tensor<5x4xf32>, %[[B:.*]]: tensor<4x5xf32>):
        CHECK: graph.sub
        CHECK: graph.gather %[[A]], %[[I]] {{.*}}axis = 0
        CHECK: graph.gather %[[B]], %{{.*}}axis = 1
        CHECK: graph.yield
        CHECK-NEXT: }
        CHECK: graph.transpose
        """,
    )
    # The printed form parses back to the same IR (ember opt takes IR text).
    reparsed = Parser(ctx, str(module)).parse_module()
    reparsed.verify()
    assert str(reparsed) == str(module)
    build_pipeline("convert-graph-to-kernel").apply(ctx, module)
    assert_filecheck(
        str(module),
        """
        CHECK: scf.while
        CHECK: memref.load
        CHECK: arith.cmpi slt
        CHECK: scf.condition
        CHECK: } do {
        CHECK: memref.store
        CHECK: kernel.gather
        CHECK: kernel.insert_slice
        CHECK: kernel.copy
        CHECK: scf.yield
        CHECK-NOT: graph.
        """,
    )


def test_profile_counts_the_kernels_inside_a_loop() -> None:
    """instrument-kernels brackets the calls inside the scf.while too (their slots sum over
    the iterations), so a profile attributes a loop's time to its kernels."""
    from ember.core.target import host_target
    from ember.tools import profile as profile_tool

    model = _scan_model()
    compiled = profile_tool.instrumented(model, host_target(1), threads=1)
    feeds = profile_tool.random_feeds(compiled.manifest)
    outputs, counters = compiled.run_profiled(feeds)
    assert_close(outputs, onnxruntime_outputs(model, feeds), RTOL)
    kernels = [str(site["callee"]) for site in compiled.profile_sites]
    assert any(k.startswith("insert_slice") for k in kernels), kernels
    assert (counters > 0).all()


def test_a_weight_read_inside_and_outside_bodies_is_stored_once() -> None:
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["t"])], "then", [], [_info("t", FLOAT, [2, 3])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["e"])], "else", [], [_info("e", FLOAT, [2, 3])]
    )
    nodes = [
        helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Sub", ["x", "w"], ["z"]),
    ]
    w = numpy_helper.from_array(np.arange(3, dtype=np.float32), "w")
    inputs = [_info("c", BOOL, []), _info("x", FLOAT, [2, 3])]
    model = _model(nodes, inputs, [_info("y", FLOAT, None), _info("z", FLOAT, None)], [w])
    module, weights = import_model(model, {})
    refs = {op.ref.data for op in module.walk() if op.name == "graph.constant"}
    assert len(refs) == 1 and len(weights) == 1, refs
    rng = _rng()
    for cond in (True, False):
        feeds = {"c": np.array(cond), "x": rng.standard_normal((2, 3)).astype(np.float32)}
        _check(model, feeds)


def _sum_of_row_pairs() -> onnx.ModelProto:
    """acc += sum(x[i + 1 : i + 3]) for M iterations: a Slice at the iteration counter."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["i", "one"], ["i1"]),
            helper.make_node("Add", ["i", "three"], ["i3"]),
            helper.make_node("Unsqueeze", ["i1", "axis0"], ["start"]),
            helper.make_node("Unsqueeze", ["i3", "axis0"], ["end"]),
            helper.make_node("Slice", ["x", "start", "end"], ["rows"], name="pair"),
            helper.make_node("ReduceSum", ["rows", "axis0"], ["row_sum"], keepdims=0),
            helper.make_node("Add", ["acc_in", "row_sum"], ["acc_out"]),
            helper.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "body",
        [_info("i", INT64, []), _info("c_in", BOOL, []), _info("acc_in", FLOAT, [3])],
        [_info("c_out", BOOL, []), _info("acc_out", FLOAT, [3])],
        [
            numpy_helper.from_array(np.array(1, np.int64), "one"),
            numpy_helper.from_array(np.array(3, np.int64), "three"),
            numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        ],
    )
    loop = helper.make_node("Loop", ["M", "", "acc0"], ["acc"], body=body)
    inputs = [_info("M", INT64, []), _info("acc0", FLOAT, [3]), _info("x", FLOAT, [5, 3])]
    return _model([loop], inputs, [_info("acc", FLOAT, None)], opset=13)


def test_slice_at_the_iteration_counter() -> None:
    model = _sum_of_row_pairs()
    rng = _rng()
    feeds = {
        "M": np.array(3, np.int64),
        "acc0": np.zeros(3, np.float32),
        "x": rng.standard_normal((5, 3)).astype(np.float32),
    }
    _check(model, feeds)
    # At i = 3 the rows 4 and 5 are asked for; onnxruntime clamps to row 4 alone (a shape
    # known only at run time): ember refuses the index instead of a wrong-shaped answer.
    with pytest.raises(ember.KernelError, match=r"Slice node 'pair'.*index 5 is out of range"):
        ember.compile(model).run(dict(feeds, M=np.array(4, np.int64)))


def _expanded_range() -> onnx.ModelProto:
    """Range written as ONNX's function body does: a Loop of Ceil((limit - start) / delta)
    iterations (scalars: specialised on their values) whose scan output is the range."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c_in"], ["c_out"]),
            helper.make_node("Add", ["prev", "delta_same"], ["current"]),
            helper.make_node("Identity", ["prev"], ["value"]),
        ],
        "step",
        [_info("i", INT64, []), _info("c_in", BOOL, []), _info("prev", FLOAT, [])],
        [_info("c_out", BOOL, []), _info("current", FLOAT, []), _info("value", FLOAT, [])],
    )
    nodes = [
        helper.make_node("Sub", ["limit", "start"], ["span"]),
        # A Cast to its own type: a second name for the graph input `delta`.
        helper.make_node("Cast", ["delta"], ["delta_same"], to=FLOAT),
        helper.make_node("Div", ["span", "delta_same"], ["ratio"]),
        helper.make_node("Ceil", ["ratio"], ["steps_f"]),
        helper.make_node("Relu", ["steps_f"], ["steps_pos"]),
        helper.make_node("Cast", ["steps_pos"], ["steps"], to=INT64),
        helper.make_node("Cast", ["steps_pos"], ["go"], to=BOOL),
        helper.make_node("Loop", ["steps", "go", "start"], ["last", "range"], body=body),
    ]
    inputs = [_info(n, FLOAT, []) for n in ("start", "limit", "delta")]
    return _model(nodes, inputs, [_info("range", FLOAT, None)])


def test_an_expanded_range_compiles_per_value_of_its_bounds() -> None:
    # Regressions: the trip count folds from the frozen scalars (float ops kept at import),
    # the inputs named are the graph's own (not the Cast's alias), 0-d values stay 0-d.
    model = _expanded_range()
    compiled = ember.compile(model)
    for start, limit, delta in ((1.0, 5.0, 2.0), (0.5, 3.0, 0.5), (3.0, 1.0, 1.0)):
        feeds = {
            "start": np.array(start, np.float32),
            "limit": np.array(limit, np.float32),
            "delta": np.array(delta, np.float32),
        }
        got = compiled.run(feeds)
        expected = onnxruntime_outputs(model, feeds)
        assert got["range"].shape == expected["range"].shape
        assert_close(got, expected, RTOL)
    assert list(compiled.value_inputs) == ["start", "limit", "delta"]


def _walk_until_large() -> onnx.ModelProto:
    """An unbounded loop (no trip count): idx += 1 while table[idx] < 100."""
    body = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "idx_in"], ["v"], axis=0, name="lookup"),
            helper.make_node("Less", ["v", "hundred"], ["c_out"]),
            helper.make_node("Add", ["idx_in", "one"], ["idx_out"]),
        ],
        "body",
        [_info("i", INT64, []), _info("c_in", BOOL, []), _info("idx_in", INT64, [])],
        [_info("c_out", BOOL, []), _info("idx_out", INT64, [])],
    )
    loop = helper.make_node("Loop", ["", "go", "idx0"], ["idx"], body=body)
    inits = [
        numpy_helper.from_array(np.array([0.0, 10.0, 200.0, 300.0], np.float32), "table"),
        numpy_helper.from_array(np.array(100.0, np.float32), "hundred"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array(True), "go"),
    ]
    return _model([loop], [_info("idx0", INT64, [])], [_info("idx", INT64, None)], inits)


def test_an_unbounded_loop_stops_at_a_kernel_error() -> None:
    model = _walk_until_large()
    compiled = ember.compile(model)
    feeds = {"idx0": np.array(0, np.int64)}
    np.testing.assert_array_equal(
        compiled.run(feeds)["idx"], onnxruntime_outputs(model, feeds)["idx"]
    )
    # A bad index is clamped to 0 (table[0] < 100: the condition stays true); the loop ends
    # because the error is recorded, and the run raises it.
    with pytest.raises(ember.KernelError, match=r"Gather node 'lookup'.*index 50"):
        compiled.run({"idx0": np.array(50, np.int64)})


def test_buffers_local_to_a_loop_body_share_memory() -> None:
    """A body's own intermediates live within an iteration: those whose uses do not overlap
    share arena bytes (the carried value and what the body reads from outside do not)."""
    body = helper.make_graph(
        [
            helper.make_node("Transpose", ["x_in"], ["t1"], perm=[1, 0]),
            helper.make_node("Softmax", ["t1"], ["t2"], axis=1),
            helper.make_node("Transpose", ["t2"], ["t3"], perm=[1, 0]),
            helper.make_node("Softmax", ["t3"], ["t4"], axis=1),
            helper.make_node("Add", ["t4", "x_in"], ["x_out"]),
            helper.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "body",
        [_info("i", INT64, []), _info("c_in", BOOL, []), _info("x_in", FLOAT, [64, 64])],
        [_info("c_out", BOOL, []), _info("x_out", FLOAT, [64, 64])],
    )
    loop = helper.make_node("Loop", ["M", "", "x0"], ["x"], body=body)
    model = _model(
        [loop], [_info("M", INT64, []), _info("x0", FLOAT, [64, 64])], [_info("x", FLOAT, None)]
    )
    compiled = ember.compile(model)
    report = compiled.report
    assert report.arena_bytes < report.intermediate_bytes, (
        report.arena_bytes,
        report.intermediate_bytes,
    )
    feeds = {"M": np.array(3, np.int64), "x0": _rng().standard_normal((64, 64)).astype(np.float32)}
    assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), RTOL)
