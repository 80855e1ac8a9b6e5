"""What a compiled model keeps in memory: the lowered IR is dropped after code generation
(unless `keep_ir`), and the variants of one model share a weight buffer whose bytes they all
hold (engine/compile.py: WeightPool)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.engine.specialize import SpecializingModel
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tools.model_zoo import bert_encoder
from ember.tools.symbolic_zoo import bert_with_symbolic_shapes

# Float32 matmuls vs onnxruntime: other summation orders, same math.
REL_TOL = 1e-4
BATCHES = (1, 2, 5)


def mlp_model() -> onnx.ModelProto:
    """x [batch, 16] -> MatMul 16x32 -> Add -> Relu -> MatMul 32x8 -> y [batch, 8]: no
    constant depends on the batch, so every batch size's weights come out the same bytes."""
    rng = np.random.default_rng(3)
    weights = [
        numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((32, 8)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_variants_share_one_copy_of_unchanged_weights() -> None:
    model = mlp_model()
    compiled = ember.compile(model, threads=1, batch_polymorphic=False, progress=False)
    assert isinstance(compiled, SpecializingModel)
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        feeds = {"x": rng.standard_normal((batch, 16)).astype(np.float32)}
        assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)
    variants = [variant for _, variant in compiled._variants.items()]
    assert len(variants) == len(BATCHES)
    buffers = [variant.weight_buffer for variant in variants]
    assert all(buffer is buffers[0] for buffer in buffers)
    assert compiled.weight_bytes == buffers[0].nbytes
    # Shared, so read-only: from Python, and the native runs left its bytes as compiled.
    assert not buffers[0].flags.writeable
    fresh = ember.compile(model, input_shapes={"x": [1, 16]}, threads=1, progress=False)
    assert np.array_equal(fresh.weight_buffer, buffers[0])
    # Running again on the shared buffer still gives onnxruntime's results at every shape.
    for batch in BATCHES:
        feeds = {"x": rng.standard_normal((batch, 16)).astype(np.float32)}
        assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)


def test_variants_with_shape_dependent_constants_keep_their_own_weights() -> None:
    # The position table sliced to the sequence length folds into a constant of each length:
    # those blobs differ, and each variant keeps (and runs on) its own.
    model = bert_with_symbolic_shapes(bert_encoder(layers=1, seq=16, hidden=32, heads=2, vocab=50))
    compiled = ember.compile(model, threads=1, batch_polymorphic=False, progress=False)
    rng = np.random.default_rng(1)
    for seq in (4, 9):
        feeds = {"input_ids": rng.integers(0, 50, (1, seq)).astype(np.int64)}
        assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)
    first, second = (variant.weight_buffer for _, variant in compiled._variants.items())
    assert first is not second
    assert compiled.weight_bytes == first.nbytes + second.nbytes


def test_ir_is_dropped_after_codegen_unless_kept() -> None:
    model = mlp_model()
    dropped = ember.compile(model, input_shapes={"x": [2, 16]}, threads=1, progress=False)
    assert dropped.program is None
    # What the IR's readers need is kept: the report, the target, the inputs read.
    assert dropped.report.kernel_functions > 0
    assert dropped.target.threads == 1
    assert dropped.unread_inputs == ()
    kept = ember.compile(
        model, input_shapes={"x": [2, 16]}, threads=1, progress=False, keep_ir=True
    )
    assert kept.program is not None
    assert "func.func @main" in str(kept.program.module)


def test_unread_inputs_name_inputs_only_their_shape_feeds() -> None:
    # y = Shape(x): the output is folded at compile time, no code reads x (the conformance
    # runner's "folded" flag reads this).
    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["y"])],
        "shape_only",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    compiled = ember.compile(model, threads=1, progress=False)
    if compiled.input_names:  # an input the program does not take is unread too
        assert compiled.unread_inputs == ("x",)
    feeds = {"x": np.zeros((2, 3), np.float32)}
    result = compiled.run({n: feeds[n] for n in compiled.input_names})
    assert np.array_equal(result["y"], [2, 3])
