"""Batch-polymorphic programs: a model proven batch-separable compiles ONCE (at batch 1) and
serves every batch size, as one call per sample (passes/analysis/batch_separable.py,
runtime/polymorphic.py); a model the proof refuses falls back to specialising per batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.engine.batch_polymorphic import prove_batch_separable
from ember.engine.specialize import SpecializingModel
from ember.runtime.polymorphic import BatchLoop
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tests.runtime.util import run_without_compiler
from ember.tools.symbolic_zoo import bert_encoder_model

# Float32 convolutions and matmuls vs onnxruntime: other summation orders, same math.
REL_TOL = 1e-4
BATCHES = (1, 2, 3, 7, 16)
SEQ = 6


def _weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array((0.3 * rng.standard_normal(shape)).astype(np.float32), name)


def _ints(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def cnn_model() -> onnx.ModelProto:
    """x [batch, 3, 12, 12] -> logits [batch, 5]: conv, max pool, a residual conv block, global
    average pool, a Flatten written as exporters do (Shape -> Gather -> Unsqueeze -> Concat ->
    Reshape) and a Gemm head."""
    rng = np.random.default_rng(7)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "p1"], ["res"]),
        helper.make_node("Relu", ["res"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Shape", ["gap"], ["gap_shape"]),
        helper.make_node("Gather", ["gap_shape", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n_1d"]),
        helper.make_node("Concat", ["n_1d", "minus_one"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["gap", "flat_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1),
    ]  # fmt: skip
    initializers = [
        _weight(rng, "w1", 8, 3, 3, 3), _weight(rng, "b1", 8),
        _weight(rng, "w2", 8, 8, 3, 3), _weight(rng, "b2", 8),
        _weight(rng, "wf", 5, 8), _weight(rng, "bf", 5),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        _ints("axes0", [0]), _ints("minus_one", [-1]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def bert_model() -> onnx.ModelProto:
    """The issue's BERT-style encoder (symbolic batch, sequence pinned to SEQ, attention mask)
    with a token head on a Reshape to [batch * seq, hidden]."""
    model = bert_encoder_model()
    graph = model.graph
    for info in graph.input:
        info.type.tensor_type.shape.dim[1].Clear()
        info.type.tensor_type.shape.dim[1].dim_value = SEQ
    hidden = graph.output[0].type.tensor_type.shape.dim[2].dim_value
    rng = np.random.default_rng(8)
    graph.initializer.extend(
        [_ints("tokens_shape", [-1, hidden]), _weight(rng, "w_tok", hidden, 3)]
    )
    graph.node.extend(
        [
            helper.make_node("Reshape", ["hidden_out", "tokens_shape"], ["tokens"]),
            helper.make_node("MatMul", ["tokens", "w_tok"], ["token_scores"]),
        ]
    )
    graph.output.extend(
        [helper.make_tensor_value_info("token_scores", TensorProto.FLOAT, [None, 3])]
    )
    del graph.output[0].type.tensor_type.shape.dim[1:]  # re-declare [batch, SEQ, hidden]
    graph.output[0].type.tensor_type.shape.dim.add().dim_value = SEQ
    graph.output[0].type.tensor_type.shape.dim.add().dim_value = hidden
    onnx.checker.check_model(model)
    return model


def bert_feeds(batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, SEQ), np.int64)
    for row in range(batch):
        mask[row, rng.integers(1, SEQ + 1) :] = 0  # padded tails of different lengths
    return {"input_ids": rng.integers(0, 50, (batch, SEQ)).astype(np.int64), "attention_mask": mask}


def cnn_feeds(batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, 3, 12, 12)).astype(np.float32)}


@pytest.mark.parametrize(
    ("build", "make_feeds"), [(cnn_model, cnn_feeds), (bert_model, bert_feeds)], ids=["cnn", "bert"]
)
def test_compiled_once_serves_every_batch(build, make_feeds) -> None:  # type: ignore[no-untyped-def]
    model = build()
    # The batch loop's own test: the BERT encoder would be compiled once before it.
    compiled = ember.compile(model, threads=2, compile_once=False)
    assert isinstance(compiled, SpecializingModel)
    for batch in BATCHES:
        inputs = make_feeds(batch, seed=batch)
        assert_close(compiled.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    assert compiled.compiles == 1
    assert isinstance(compiled.specialization({n: a.shape for n, a in inputs.items()}), BatchLoop)
    assert [p.separable for p in compiled.batch_proofs.values()] == [True]


def _single_input_model(nodes: list[onnx.NodeProto], out_dims: list, extra=()) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    graph = helper.make_graph(
        nodes,
        "not_separable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)],
        list(extra),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def reduce_over_batch_model() -> onnx.ModelProto:
    """y = x - the sum over the batch axis: every sample's output depends on the others."""
    return _single_input_model(
        [
            helper.make_node("ReduceSum", ["x", "axes0"], ["m"], keepdims=1),
            helper.make_node("Sub", ["x", "m"], ["y"]),
        ],
        ["batch", 4, 6],
        [_ints("axes0", [0])],
    )


def batch_into_columns_model() -> onnx.ModelProto:
    """[b, s, h] -> transpose -> [s, b, h] -> Reshape [s, b*h] (target from Shape chains)."""
    return _single_input_model(
        [
            helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Gather", ["shape", "one"], ["s"], axis=0),
            helper.make_node("Unsqueeze", ["s", "axes0"], ["s_1d"]),
            helper.make_node("Concat", ["s_1d", "minus_one"], ["target"], axis=0),
            helper.make_node("Reshape", ["t", "target"], ["y"]),
        ],
        [4, None],
        [
            numpy_helper.from_array(np.array(1, np.int64), "one"),
            _ints("axes0", [0]),
            _ints("minus_one", [-1]),
        ],
    )


def reshape_mixing_batch_model() -> onnx.ModelProto:
    """[b, s, h] -> Reshape [s, b*h] directly (no transpose): rows of one sample spread."""
    return _single_input_model(
        [helper.make_node("Reshape", ["x", "target"], ["y"])],
        [4, None],
        [_ints("target", [4, -1])],
    )


def front_rows_model() -> onnx.ModelProto:
    """[b, 4, 6] -> rows [4b, 6] -> the first half of them, [: 4b // 2], an end computed from
    the shape: it scales with the batch (2 rows at batch 1, 6 at 3), yet takes whole samples
    from the front instead of half of each sample's rows."""
    return _single_input_model(
        [
            helper.make_node("Reshape", ["x", "rows_shape"], ["rows"]),
            helper.make_node("Shape", ["rows"], ["shape"]),
            helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
            helper.make_node("Div", ["n", "two"], ["half"]),
            helper.make_node("Unsqueeze", ["half", "axes0"], ["end"]),
            helper.make_node("Slice", ["rows", "zero_1d", "end", "zero_1d"], ["y"]),
        ],
        [None, 6],
        [
            _ints("rows_shape", [-1, 6]),
            numpy_helper.from_array(np.array(0, np.int64), "zero"),
            numpy_helper.from_array(np.array(2, np.int64), "two"),
            _ints("axes0", [0]),
            _ints("zero_1d", [0]),
        ],
    )


def batch_norm_training_model() -> onnx.ModelProto:
    """BatchNormalization in training mode normalises with the batch's own statistics."""
    rng = np.random.default_rng(9)
    graph = helper.make_graph(
        [
            helper.make_node(
                "BatchNormalization",
                ["x", "s", "b", "m", "v"],
                ["y", "mean", "var"],
                training_mode=1,
            )
        ],
        "bn_training",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 6])],
        [
            _weight(rng, "s", 4),
            _weight(rng, "b", 4),
            _weight(rng, "m", 4),
            numpy_helper.from_array(np.abs(rng.standard_normal(4)).astype(np.float32) + 1, "v"),
        ],  # fmt: skip
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (reduce_over_batch_model, "reduces over axis 0"),
        (batch_into_columns_model, "moves the batch axis"),
        (reshape_mixing_batch_model, "not scaled along its leading axis"),
        (batch_norm_training_model, "axis 0"),
        (front_rows_model, "slices axis 0"),
    ],
    ids=["reduce_axis0", "transpose_reshape", "reshape_mix", "batchnorm_training", "front_rows"],
)
def test_not_separable_falls_back_to_specialisation(build, reason: str) -> None:  # type: ignore[no-untyped-def]
    model = build()
    proof = prove_batch_separable(model, "batch", {"x": (1, 4, 6)})
    assert not proof.separable
    assert reason in proof.reason
    compiled = ember.compile(model, threads=1, compile_once=False)  # about the batch proof
    assert isinstance(compiled, SpecializingModel)
    batches = (2, 3) if build is not reshape_mixing_batch_model else (1, 3)
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, 4, 6)).astype(np.float32)
        assert_close(compiled.run({"x": x}), onnxruntime_outputs(model, {"x": x}), REL_TOL)
    assert compiled.compiles == len(batches)  # one specialisation per batch size


def test_batch_polymorphism_can_be_turned_off() -> None:
    # compile_once=False: the CNN would otherwise be compiled once for every batch instead.
    compiled = ember.compile(cnn_model(), threads=1, batch_polymorphic=False, compile_once=False)
    assert isinstance(compiled, SpecializingModel)
    for batch in (1, 2):
        compiled.run(cnn_feeds(batch, seed=0))
    assert compiled.compiles == 2


def test_batch_range_and_shapes_are_checked() -> None:
    compiled = ember.compile(cnn_model(), threads=1, dynamic_dims={"batch": (1, 8)})
    compiled.run(cnn_feeds(8, seed=0))
    with pytest.raises(ember.InputError, match=r"dim 'batch' is 9, outside its range 1\.\.8"):
        compiled.run(cnn_feeds(9, seed=0))
    with pytest.raises(ember.InputError, match=r"input 'x': expected shape"):
        compiled.run({"x": np.zeros((2, 3, 12, 11), np.float32)})


def test_artifact_serves_every_batch_in_the_thin_runtime(tmp_path: Path) -> None:
    from ember.engine.aot import compile_artifact
    from ember.runtime import load
    from ember.runtime.polymorphic import POLYMORPHIC_KEY

    model = bert_model()
    compile_artifact(
        model, tmp_path / "bert", batch_polymorphic=True, dim_ranges={"batch": (1, 16)}
    )
    manifest = (tmp_path / "bert" / "manifest.json").read_text()
    assert f'"{POLYMORPHIC_KEY}"' in manifest
    loaded = load(tmp_path / "bert", threads=2)
    assert isinstance(loaded, BatchLoop) and loaded.dim_range == (1, 16)
    for batch in (1, 3, 16):
        inputs = bert_feeds(batch, seed=batch)
        assert_close(loaded.run(inputs), onnxruntime_outputs(model, inputs), REL_TOL)
    with pytest.raises(
        ember.InputError, match=r"share dim 'batch' \(axis 0\) but were given 2 and 3"
    ):
        loaded.run(
            {
                "input_ids": bert_feeds(2, 0)["input_ids"],
                "attention_mask": bert_feeds(3, 0)["attention_mask"],
            }
        )
    with pytest.raises(ember.InputError, match="outside its range 1..16"):
        loaded.run(bert_feeds(17, seed=0))
    # The same in a process that cannot import the compiler (xDSL, llvmlite, onnx).
    inputs = bert_feeds(7, seed=7)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    got = run_without_compiler(tmp_path / "bert", inputs, scratch)
    assert_close(got, onnxruntime_outputs(model, inputs), REL_TOL)


def test_artifact_of_a_model_not_separable_says_why(tmp_path: Path) -> None:
    from ember.engine.aot import compile_artifact
    from ember.engine.shapes import UnpinnedInputsError

    with pytest.raises(UnpinnedInputsError, match="the batch is not polymorphic: .*axis 0"):
        compile_artifact(reduce_over_batch_model(), tmp_path / "m", batch_polymorphic=True)


def test_kernel_errors_name_the_sample() -> None:
    """The status record is checked after each call: an index out of range in sample 2 of a
    batch of 4 is a KernelError naming that sample."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)],
        "embed",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 4])],
        [numpy_helper.from_array(np.arange(20, dtype=np.float32).reshape(5, 4), "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compiled = ember.compile(model, threads=1, compile_once=False)  # the batch loop's errors
    ids = np.zeros((4, 3), np.int64)
    table = numpy_helper.to_array(graph.initializer[0])
    np.testing.assert_array_equal(compiled.run({"ids": ids})["y"], table[ids])
    ids[2, 1] = 7
    with pytest.raises(ember.KernelError, match="index 7 is out of range.*sample 2 of the batch"):
        compiled.run({"ids": ids})
    assert compiled.compiles == 1


def test_check_reports_the_polymorphic_batch_or_why_not() -> None:
    from ember.engine.check import check

    report = check(cnn_model())
    assert report.ok and report.imported and report.batch_polymorphic == "batch"
    report = check(reduce_over_batch_model())
    assert not report.ok and report.batch_polymorphic is None
    (problem,) = report.of_kind("symbolic-dim")
    assert "the batch is not polymorphic" in problem.fix and "axis 0" in problem.fix


def test_cli_compile_and_bench_one_program(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from ember.tools.cli import main

    source = tmp_path / "cnn.onnx"
    onnx.save(cnn_model(), source)
    out = tmp_path / "cnn.ember"
    assert main(["compile", str(source), "-o", str(out), "-q", "--dim", "batch=1:16"]) == 0
    capsys.readouterr()
    # `ember verify` on the batch loop's artifact (it used to ask it for variants).
    assert main(["verify", str(out)]) == 0
    assert f"{out}: ok (code sha256 " in capsys.readouterr().out
    for model in (out, source):  # the artifact, and the .onnx compiled once through Config
        argv = ["bench", str(model), "--batch", "1,3", "--runs", "1", "--warmup", "0", "--json"]
        assert main(argv) == 0
        document = json.loads(capsys.readouterr().out)
        assert document["batch_polymorphic"] is True
        assert [row["batch"] for row in document["batches"]] == [1, 3]
