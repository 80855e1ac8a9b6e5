"""Compile once (engine/compile_once.py, issue 10): a model with symbolic batch and sequence
whose ops all have runtime-extent kernels is compiled ONCE and run at every shape; a model
with an op that has none falls back to specialisation (and still matches); the unified
kernel program's `?` types.

Tolerance: against onnxruntime, max |ember - ort| <= 1e-4 x max |ort| per output (float32
GEMMs with K <= 72 summed in another order, erf, layer norm, softmax)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects.builtin import DYNAMIC_INDEX

import ember
from ember.core.target import host_target
from ember.engine.compile_once import (
    CompileOnceRefusal,
    Extent,
    bufferize_extents,
    fit_dim,
    model_symbols,
    probe_sizes,
    split_pipeline,
    unify,
)
from ember.engine.shapes import pin_model
from ember.engine.specialize import SpecializingModel
from ember.passes.conversion.kernel_to_loops.simd import PARALLEL_MIN_FLOPS
from ember.passes.pipeline import DEFAULT_PIPELINE, with_memory_checks
from ember.passes.program import entry_function
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tools.symbolic_zoo import ffn_block_model, masked_bert_feeds

REL_TOL = 1e-4
HIDDEN, INNER = 40, 72  # 40: not a multiple of the vector width


def ffn_block(
    tail: list[onnx.NodeProto] | None = None, out_dims: list[int | str] | None = None
) -> onnx.ModelProto:
    return ffn_block_model(HIDDEN, INNER, tail, out_dims)


def _inputs(batch: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32)}


@pytest.fixture(scope="module")
def ffn_once() -> SpecializingModel:
    compiled = ember.compile(ffn_block(), threads=1)
    assert isinstance(compiled, SpecializingModel)
    return compiled


def test_ffn_block_compiles_once_for_every_shape(ffn_once: SpecializingModel) -> None:
    model, compiled = ffn_block(), ffn_once
    shapes = [(1, 1), (2, 3), (3, 17), (1, 33), (4, 100), (2, 3), (5, 7)]
    for k, (batch, seq) in enumerate(shapes):
        inputs = _inputs(batch, seq, k)
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    assert compiled.compile_once_refusal is None and compiled.compiled_once
    assert compiled.compiles == 1
    assert compiled.specialized_shapes == []
    # The checks stay: a wrong fixed dim is refused before anything runs.
    with pytest.raises(ember.InputError, match="x"):
        compiled.run({"x": np.zeros((2, 3, HIDDEN + 1), np.float32)})


def test_two_threads_and_growing_arena() -> None:
    """The run-time GEMM choice of the thread team, an arena that grows (small shape first)
    and is reused for a smaller one, and a range on a dim. A narrower block than the other
    tests' (16 x 24: their 40 x 72 takes the vector tails; the two-thread program of 40 x 72
    cost twice the CPU, 9 s), so the team takes over from 683 rows on."""
    hidden, inner = 16, 24
    model = ffn_block_model(hidden, inner)
    team_rows = -(-PARALLEL_MIN_FLOPS // (2 * hidden * inner))  # both GEMMs: 2 x K x N a row
    shapes = [(1, 6), (8, 100), (2, 5)]
    assert [batch * seq >= team_rows for batch, seq in shapes] == [False, True, False]
    # A range: the probes are primes within it (seq 5, 7, 11 / 13 ...).
    compiled = ember.compile(model, threads=2, dynamic_dims={"seq": (5, 128)})
    for k, (batch, seq) in enumerate(shapes):
        rng = np.random.default_rng(10 + k)
        inputs = {"x": rng.standard_normal((batch, seq, hidden)).astype(np.float32)}
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    assert compiled.compiles == 1
    with pytest.raises(ember.InputError, match="'seq'"):
        compiled.run({"x": np.zeros((1, 4, hidden), np.float32)})


def test_op_without_runtime_extent_kernel_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    cumsum = helper.make_node("CumSum", ["y", "axis2"], ["out"])
    model = ffn_block([cumsum], ["batch", "seq", HIDDEN])
    model.graph.initializer.append(numpy_helper.from_array(np.array(2, np.int64), "axis2"))
    compiled = ember.compile(model, threads=1)
    with caplog.at_level("DEBUG", logger="ember.specialize"):
        for k, (batch, seq) in enumerate([(2, 3), (3, 5)]):
            inputs = _inputs(batch, seq, k)
            assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    assert not compiled.compiled_once
    assert "cumsum" in (compiled.compile_once_refusal or "")
    assert "not compiled once" in caplog.text
    assert compiled.compiles == 2  # one specialisation per shape


# With --runslow: under branch coverage it reached nothing that the rest of this file does
# not (docs/testing.md).
@pytest.mark.slow
def test_transpose_of_runtime_dims_compiles_once() -> None:
    """A Transpose swapping the two symbolic dims (a strided run-time copy, vector rows)."""
    transpose = helper.make_node("Transpose", ["y"], ["out"], perm=[1, 0, 2])
    model = ffn_block([transpose], ["seq", "batch", HIDDEN])
    compiled = ember.compile(model, threads=1)
    for k, (batch, seq) in enumerate([(2, 3), (3, 5), (1, 9), (4, 17), (2, 1)]):
        inputs = _inputs(batch, seq, k)
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    assert compiled.compiled_once and compiled.compiles == 1


def test_opt_out() -> None:
    compiled = ember.compile(ffn_block(), threads=1, compile_once=False)
    inputs = _inputs(2, 3, 0)
    assert_close(compiled.run(inputs), onnxruntime_outputs(ffn_block(), inputs), REL_TOL)
    assert compiled.compile_once_refusal == "compile_once=False" and not compiled.compiled_once
    with pytest.raises(CompileOnceRefusal, match="checks=True"):
        split_pipeline(with_memory_checks(DEFAULT_PIPELINE))  # every access stays checked


def test_unified_kernel_program_has_question_mark_types() -> None:
    from ember.engine.compile import run_pipeline

    model = ffn_block()
    pinning = pin_model(model, None)
    symbols = model_symbols(pinning)
    assert symbols == ["batch", "seq"]
    probes = probe_sizes(symbols, {})
    per_probe, shared = split_pipeline(DEFAULT_PIPELINE)
    assert shared.startswith("plan-memory")
    programs = []
    for probe in probes:
        shapes = {"x": [probe["batch"], probe["seq"], HIDDEN]}
        module, ctx, *_ = run_pipeline(model, host_target(1), per_probe, input_shapes=shapes)
        programs.append((module, ctx))
    unified = unify(programs, probes, symbols)
    fn = entry_function(unified.module)
    assert [tuple(a.type.get_shape()) for a in fn.body.block.args] == [
        (DYNAMIC_INDEX, DYNAMIC_INDEX, HIDDEN)
    ] * 2
    batch, seq = Extent(1, ("batch",)), Extent(1, ("seq",))
    assert unified.extents[fn.body.block.args[0]] == [batch, seq, HIDDEN]
    assert bufferize_extents(unified) == [batch, seq]
    text = str(unified.module)
    assert "func.func @main(%0: memref<?x?x40xf32>, %1: memref<?x?x40xf32>, %2: index" in text
    assert "memref.alloc(%2, %3) {alignment = 64 : i64} : memref<?x?x72xf32>" in text
    assert "ember.extent_of = array<i64: 0, 0, 1, 0>" in text
    assert "ember.extent_of = array<i64: 0, 1, 1, 1>" in text


def test_fit_dim() -> None:
    probes = [{"b": 2, "s": 3}, {"b": 5, "s": 7}, {"b": 11, "s": 13}]
    symbols = ["b", "s"]
    assert fit_dim([40, 40, 40], probes, symbols) == 40
    assert fit_dim([3, 7, 13], probes, symbols) == Extent(1, ("s",))
    assert fit_dim([24, 140, 572], probes, symbols) == Extent(4, ("b", "s"))
    with pytest.raises(CompileOnceRefusal, match="no product"):
        fit_dim([4, 8, 12], probes, symbols)  # s + 1
    with pytest.raises(CompileOnceRefusal, match="no product"):
        fit_dim([6, 35, 144], probes, symbols)  # fits b*s on two probes, not the third
    with pytest.raises(CompileOnceRefusal, match="too few"):
        probe_sizes(["b"], {"b": (1, 4)})


def test_constant_folded_from_a_shape_falls_back() -> None:
    """y + seq (Shape -> Gather -> Cast, folded at compile time): the folded value differs at
    every probe, so the model is specialised (and still matches)."""
    index = numpy_helper.from_array(np.array(1, np.int64), "one")
    tail = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["seq_len"]),
        helper.make_node("Cast", ["seq_len"], ["seq_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["y", "seq_f"], ["out"]),
    ]
    model = ffn_block(tail)
    model.graph.initializer.append(index)
    compiled = ember.compile(model, threads=1)
    for k, (batch, seq) in enumerate([(2, 3), (1, 6)]):
        inputs = _inputs(batch, seq, k)
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    assert "depends on the input shapes" in (compiled.compile_once_refusal or "")
    assert compiled.compiles == 2


def test_arena_over_the_memory_limit_is_refused_at_run_time() -> None:
    compiled = ember.compile(ffn_block(), threads=1, memory_limit=200_000)
    inputs = _inputs(2, 3, 0)
    assert_close(compiled.run(inputs), onnxruntime_outputs(ffn_block(), inputs), REL_TOL)
    with pytest.raises(ember.ResourceLimitError, match="memory_limit"):
        compiled.run(_inputs(20, 100, 1))
    assert compiled.compiles == 1


def test_reshape_to_rows_compiles_once_with_a_product_dim() -> None:
    """Reshape [batch, seq, 40] -> [-1, 40] (a view whose `?` is batch*seq), a GEMM on the
    rows, Relu: the output's rows are the expression batch*seq, an extent argument of its
    own that the runtime computes."""
    rng = np.random.default_rng(3)
    weight = numpy_helper.from_array(rng.standard_normal((HIDDEN, 24)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, HIDDEN], np.int64), "rows")
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "rows"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["m"]),
            helper.make_node("Relu", ["m"], ["out"]),
        ],
        "rows",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 24])],
        [weight, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    compiled = ember.compile(model, threads=1)
    for k, (batch, seq) in enumerate([(1, 1), (2, 3), (3, 17), (1, 33), (4, 9)]):
        inputs = _inputs(batch, seq, k)
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    assert compiled.compile_once_refusal is None and compiled.compiles == 1
    once = compiled.specialization({"x": (2, 3, HIDDEN)})
    assert [str(e) for e in once.expressions] == ["batch", "seq", "batch*seq"]
    assert [str(d) for d in once.outputs[0].dims] == ["batch*seq", "24"]


def test_runs_from_several_threads_at_different_shapes(ffn_once: SpecializingModel) -> None:
    """Every in-flight run takes its own arena (grown to its shape) and outputs."""
    from concurrent.futures import ThreadPoolExecutor

    model, compiled = ffn_block(), ffn_once
    shapes = [(1, 3), (4, 50), (2, 7), (3, 31)] * 3
    feeds = [_inputs(b, s, k) for k, (b, s) in enumerate(shapes)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(compiled.run, feeds))
    for inputs, result in zip(feeds, results, strict=True):
        assert_close(result, onnxruntime_outputs(model, inputs), REL_TOL)
    assert compiled.compiles == 1


def test_bert_encoder_compiles_once() -> None:
    """The symbolic BERT encoder (2 layers, hidden 64, 4 heads, attention mask; the position
    table sliced by the ids' length, the heads split by Shape -> Gather -> Concat ->
    Reshape): gather, heads split and K^T transpose, fused attention with its mask, the
    position table's leading rows, all with `?` batch and sequence. One compile for every
    shape; a sequence longer than the position table is refused as onnxruntime refuses it."""
    from ember.tools.model_zoo import bert_encoder
    from ember.tools.symbolic_zoo import bert_with_symbolic_shapes

    model = bert_with_symbolic_shapes(
        bert_encoder(layers=2, seq=48, hidden=64, heads=4, attention_mask=True)
    )
    compiled = ember.compile(model, threads=1)
    for k, (batch, seq) in enumerate([(1, 1), (2, 3), (1, 9), (3, 17), (2, 48), (1, 5)]):
        inputs = masked_bert_feeds(batch, seq, k)
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    assert compiled.compile_once_refusal is None and compiled.compiled_once
    assert compiled.compiles == 1
    with pytest.raises(ember.InputError, match="seq"):
        compiled.run(masked_bert_feeds(1, 49, 0))
    bad = masked_bert_feeds(2, 5, 0)
    bad["input_ids"][1, 3] = 100  # one past the vocabulary: the gather's check reports it
    with pytest.raises(ember.KernelError, match="index 100 is out of range"):
        compiled.run(bad)


def test_broadcast_over_a_symbolic_dim_compiles_once() -> None:
    """x [batch, seq, 19] * y [batch, 1, 19] + z [seq, 1]: an input with 1 where the output
    has a symbolic size (addressed per output row through run-time strides)."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "y"], ["m"]),
            helper.make_node("Add", ["m", "z"], ["out"]),
        ],
        "broadcast",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 19]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 19]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["seq", 1]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", 19])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compiled = ember.compile(model, threads=1)
    rng = np.random.default_rng(0)
    for batch, seq in [(1, 1), (2, 3), (3, 17), (1, 40), (4, 9)]:
        inputs = {
            "x": rng.standard_normal((batch, seq, 19)).astype(np.float32),
            "y": rng.standard_normal((batch, 1, 19)).astype(np.float32),
            "z": rng.standard_normal((seq, 1)).astype(np.float32),
        }
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    assert compiled.compiled_once and compiled.compiles == 1, compiled.compile_once_refusal


def test_reshape_splitting_a_symbolic_dim_compiles_once() -> None:
    """[batch, seq, 40] -> [batch*seq, 40] (Reshape [-1, 40]) -> Relu -> back to [batch,
    seq, 4, 10] (its target from Shape -> Slice -> Concat): the split of the `?` rows into
    batch and seq is sized from the fitted expressions."""
    ints = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "rows"], ["flat"]),
            helper.make_node("Relu", ["flat"], ["r"]),
            helper.make_node("Shape", ["x"], ["xs"]),
            helper.make_node("Slice", ["xs", "zero", "two"], ["bs"]),
            helper.make_node("Concat", ["bs", "heads"], ["target"], axis=0),
            helper.make_node("Reshape", ["r", "target"], ["out"]),
        ],
        "split",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 40])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", 4, 10])],
        [ints("rows", [-1, 40]), ints("zero", [0]), ints("two", [2]), ints("heads", [4, 10])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compiled = ember.compile(model, threads=1)
    rng = np.random.default_rng(0)
    for batch, seq in [(1, 1), (2, 3), (3, 17), (1, 40), (4, 9)]:
        inputs = {"x": rng.standard_normal((batch, seq, 40)).astype(np.float32)}
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    assert compiled.compiled_once and compiled.compiles == 1, compiled.compile_once_refusal


@pytest.mark.parametrize("start", [0, 1])
def test_position_table_prefix_only_when_exact(start: int) -> None:
    """x [batch, seq, 8] + table[:, start : start + seq] (a Slice whose end is a shape
    expression, folded per probe): from row 0 the folded weights are the table's leading
    rows, so the table is kept whole and viewed (compiled once); from row 1 they are not a
    prefix of anything the model has, so the model is specialised (and still matches)."""
    rng = np.random.default_rng(3)
    ints = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    table = numpy_helper.from_array(rng.standard_normal((1, 24, 8)).astype(np.float32), "table")
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["xs"]),
            helper.make_node("Slice", ["xs", "one", "two"], ["seq"]),
            helper.make_node("Add", ["seq", "start"], ["end"]),
            helper.make_node("Slice", ["table", "start", "end", "one"], ["rows"]),
            helper.make_node("Add", ["x", "rows"], ["out"]),
        ],
        "positions",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", 8])],
        [table, ints("one", [1]), ints("two", [2]), ints("start", [start])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compiled = ember.compile(model, threads=1)
    for batch, seq in [(1, 1), (2, 3), (3, 17), (1, 23), (4, 9)]:
        inputs = {"x": rng.standard_normal((batch, seq, 8)).astype(np.float32)}
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    if start == 0:
        assert compiled.compiled_once and compiled.compiles == 1, compiled.compile_once_refusal
    else:
        assert "depends on the input shapes" in (compiled.compile_once_refusal or "")
        assert not compiled.compiled_once
