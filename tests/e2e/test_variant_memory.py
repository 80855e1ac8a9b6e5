"""What a compiled model keeps in memory: the lowered IR is dropped after code generation
(unless `keep_ir`), and the variants of one model share a weight buffer whose bytes they all
hold (engine/compile.py: WeightPool)."""

from __future__ import annotations

import gc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.engine.specialize import SpecializingModel
from ember.engine.weight_pool import MAPS_WEIGHTS, PAGE, WeightPool
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tools.model_zoo import bert_encoder
from ember.tools.symbolic_zoo import bert_with_symbolic_shapes

# Float32 matmuls vs onnxruntime: other summation orders, same math.
REL_TOL = 1e-4
BATCHES = (1, 2, 5)
maps_weights = pytest.mark.skipif(
    not MAPS_WEIGHTS, reason="weights are mapped into blobs on Linux only (memfd)"
)


def mlp_model() -> onnx.ModelProto:
    """x [batch, 64] -> MatMul 64x128 -> Add -> Relu -> MatMul 128x32 -> y [batch, 32]: no
    constant depends on the batch, so every batch size's weights come out the same bytes."""
    rng = np.random.default_rng(3)
    weights = [
        numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(128).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((128, 32)).astype(np.float32), "w2"),
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
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _large_weights(compiled: ember.CompiledModel) -> int:
    """Bytes of the weights of a page or more (those variants share) in one variant's blob."""
    program = compiled.program
    assert program is not None
    return sum(
        -(-array.nbytes // PAGE) * PAGE
        for _, array in program.weight_placements()
        if array.nbytes >= PAGE
    )


@maps_weights
def test_variants_share_one_copy_of_unchanged_weights() -> None:
    model = mlp_model()
    compiled = ember.compile(
        model, threads=1, batch_polymorphic=False, progress=False, compile_once=False
    )
    assert isinstance(compiled, SpecializingModel)
    single = ember.compile(
        model, input_shapes={"x": [1, 64]}, threads=1, progress=False, keep_ir=True
    )
    large = _large_weights(single)
    assert large >= 64 * 128 * 4  # w1, packed, at least
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        feeds = {"x": rng.standard_normal((batch, 64)).astype(np.float32)}
        assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)
    variants = [variant for _, variant in compiled._variants.items()]
    assert len(variants) == len(BATCHES)
    # Every large weight once; each variant's blob beyond them (its small weights) its own.
    blob = single.weight_buffer.nbytes
    assert compiled.weight_bytes == large + len(BATCHES) * (blob - large)
    assert compiled.weight_bytes < 2 * blob
    assert all(np.array_equal(v.weight_buffer, single.weight_buffer) for v in variants)
    assert not variants[0].weight_buffer.flags.writeable
    # Running again on the shared weights still gives onnxruntime's results at every shape.
    for batch in BATCHES:
        feeds = {"x": rng.standard_normal((batch, 64)).astype(np.float32)}
        assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)
    # Variants gone, their blobs go, and the shared weights with the last of them.
    pool = compiled._weight_pool
    assert pool.shared_weights > 0
    del compiled, variants
    gc.collect()
    assert pool.shared_weights == 0
    assert pool.held_bytes == 0


@maps_weights
def test_variants_with_shape_dependent_constants_share_the_rest() -> None:
    # The position table sliced to the sequence length folds into a constant of each length,
    # which moves the weights after it: each variant keeps that constant, the rest is shared.
    model = bert_with_symbolic_shapes(bert_encoder(layers=1, seq=64, hidden=64, heads=2, vocab=50))
    compiled = ember.compile(
        model, threads=1, batch_polymorphic=False, progress=False, compile_once=False
    )  # about the variants specialisation keeps (compiled once, the table is shared whole)
    rng = np.random.default_rng(1)
    lengths = (16, 32, 48)
    for seq in lengths:
        feeds = {"input_ids": rng.integers(0, 50, (1, seq)).astype(np.int64)}
        assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)
    blobs = [variant.weight_buffer.nbytes for _, variant in compiled._variants.items()]
    assert len(set(blobs)) == len(lengths)  # laid out differently
    assert compiled.shared_weights > 0
    assert compiled.weight_bytes < sum(blobs) * 2 / 3


def test_ir_is_dropped_after_codegen_unless_kept() -> None:
    model = mlp_model()
    dropped = ember.compile(model, input_shapes={"x": [2, 64]}, threads=1, progress=False)
    assert dropped.program is None
    # What the IR's readers need is kept: the report, the target, the inputs read.
    assert dropped.report.kernel_functions > 0
    assert dropped.target.threads == 1
    assert dropped.unread_inputs == ()
    kept = ember.compile(
        model, input_shapes={"x": [2, 64]}, threads=1, progress=False, keep_ir=True
    )
    assert kept.program is not None
    assert "func.func @main" in str(kept.program.module)
    # And each variant of a model with symbolic dims.
    variants = ember.compile(
        model, threads=1, batch_polymorphic=False, progress=False, keep_ir=True
    )
    variants.run({"x": np.ones((3, 64), np.float32)})
    assert all(variant.program is not None for _, variant in variants._variants.items())


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


@maps_weights
def test_pool_maps_one_copy_of_a_weight_at_any_page_offset() -> None:
    rng = np.random.default_rng(5)
    shared = rng.standard_normal(3000).astype(np.float32)  # 12000 bytes: 3 pages
    small = rng.standard_normal(10).astype(np.float32)
    pool = WeightPool()
    first = pool.blob(4 * PAGE, [(0, small), (PAGE, shared)])
    second = pool.blob(6 * PAGE, [(0, small), (64, small), (3 * PAGE, shared)])
    assert pool.shared_weights == 1
    assert np.array_equal(first[PAGE : PAGE + shared.nbytes].view(np.float32), shared)
    assert np.array_equal(second[3 * PAGE : 3 * PAGE + shared.nbytes].view(np.float32), shared)
    assert np.array_equal(second[64 : 64 + small.nbytes].view(np.float32), small)
    # The shared weight's 3 pages once; each blob's other pages its own.
    assert pool.held_bytes == 3 * PAGE + (4 - 3) * PAGE + (6 - 3) * PAGE
    # A weight without pages of its own (the next one starts inside its last page) is copied.
    third = pool.blob(4 * PAGE, [(0, shared), (3 * PAGE - 64, small)])
    assert pool.shared_weights == 1
    assert np.array_equal(third[: shared.nbytes].view(np.float32), shared)
    del first, second, third
    gc.collect()
    assert pool.shared_weights == 0
    assert pool.held_bytes == 0


def test_pool_without_mappings_shares_equal_blobs_whole() -> None:
    weight = np.arange(2048, dtype=np.float32)
    pool = WeightPool()
    pool._maps = False  # as where memfd is missing
    first = pool.blob(weight.nbytes, [(0, weight)])
    assert pool.blob(weight.nbytes, [(0, weight)]) is first
    other = pool.blob(weight.nbytes, [(0, weight[::-1])])
    assert other is not first
    assert np.array_equal(other.view(np.float32), weight[::-1])
    assert pool.held_bytes == first.nbytes + other.nbytes
