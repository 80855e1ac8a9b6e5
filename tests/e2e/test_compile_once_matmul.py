"""Compile once of MatMuls whose B is an activation (issue 10): an unfused attention
(Q @ K^T, scale, Softmax, @ V) with symbolic batch and sequence and the exporter-style
Shape -> Gather -> Concat -> Reshape heads split, compiled ONCE and run at several shapes
against onnxruntime; the batched-matmul kernel with `?` batch, M, K, N at odd sizes.

Tolerance: max |ember - ort| <= 1e-4 x max |ort| per output (float32 sums of <= 64 terms
in another order, softmax)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.engine.specialize import SpecializingModel
from ember.tests.oracle import assert_close, onnxruntime_outputs

REL_TOL = 1e-4
HEADS, HEAD_DIM = 2, 12
HIDDEN = HEADS * HEAD_DIM


def unfused_attention_model() -> onnx.ModelProto:
    """x [batch, seq, HIDDEN] -> three projections split into heads by a Reshape to a shape
    built from Shape/Gather/Concat, scores = Q @ K^T * scale, Softmax, @ V, merged back."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(
            (rng.standard_normal((HIDDEN, HIDDEN)) * 0.3).astype(np.float32), f"w{n}"
        )
        for n in "qkv"
    ]
    inits += [
        numpy_helper.from_array(np.array([0], np.int64), "i0"),
        numpy_helper.from_array(np.array([1], np.int64), "i1"),
        numpy_helper.from_array(np.array([HEADS, HEAD_DIM], np.int64), "heads"),
        numpy_helper.from_array(np.array([HIDDEN], np.int64), "hidden"),
        numpy_helper.from_array(np.array(1 / np.sqrt(HEAD_DIM), np.float32), "scale"),
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "i0"], ["batch"], axis=0),
        helper.make_node("Gather", ["shape", "i1"], ["seq"], axis=0),
        helper.make_node("Concat", ["batch", "seq", "heads"], ["split"], axis=0),
        helper.make_node("Concat", ["batch", "seq", "hidden"], ["merged"], axis=0),
    ]
    for n in "qkv":
        nodes += [
            helper.make_node("MatMul", ["x", f"w{n}"], [f"{n}p"]),
            helper.make_node("Reshape", [f"{n}p", "split"], [f"{n}h"]),
        ]
    nodes += [
        helper.make_node("Transpose", ["qh"], ["q"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["kh"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["vh"], ["v"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["context"]),
        helper.make_node("Transpose", ["context"], ["ctx"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx", "merged"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "unfused_attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", HIDDEN]),
            # The attention probabilities as an output too (output_attentions=True): the
            # pattern fuse-attention matches is broken, the MatMuls stay two activations'.
            helper.make_tensor_value_info(
                "probs", TensorProto.FLOAT, ["batch", HEADS, "seq", "seq"]
            ),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_unfused_attention_compiles_once() -> None:
    model = unfused_attention_model()
    compiled = ember.compile(model, threads=1)
    assert isinstance(compiled, SpecializingModel)
    for batch, seq in [(1, 5), (2, 17), (3, 1), (1, 40), (2, 33), (4, 9)]:
        x = np.random.default_rng(seq).standard_normal((batch, seq, HIDDEN)).astype(np.float32)
        assert_close(compiled.run({"x": x}), onnxruntime_outputs(model, {"x": x}), REL_TOL)
    assert compiled.compile_once_refusal is None, compiled.compile_once_refusal
    assert compiled.compiled_once and compiled.compiles == 1


def _two_input_matmul(a_dims: list, b_dims: list, out_dims: list) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        "batched_matmul",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, a_dims),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, b_dims),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_batched_matmul_of_inputs_compiles_once() -> None:
    """[batch, m, 20] @ [batch, 20, n]: batch, M and N at run time."""
    model = _two_input_matmul(["batch", "m", 20], ["batch", 20, "n"], ["batch", "m", "n"])
    compiled = ember.compile(model, threads=1)
    rng = np.random.default_rng(7)
    for batch, m, n in [(1, 1, 1), (2, 15, 17), (3, 30, 33), (1, 7, 100), (2, 29, 16)]:
        feeds = {
            "a": rng.standard_normal((batch, m, 20), dtype=np.float32),
            "b": rng.standard_normal((batch, 20, n), dtype=np.float32),
        }
        assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)
    assert compiled.compile_once_refusal is None, compiled.compile_once_refusal
    assert compiled.compiles == 1


def test_matmul_of_differently_named_k_is_refused_and_specialised() -> None:
    """A's K named "k", B's "j": nothing says they are equal at every shape (the `?`
    contract): the probes (distinct primes) already disagree, compile once refuses naming
    the node, and specialisation runs the model at shapes where they agree."""
    model = _two_input_matmul(["m", "k"], ["j", 6], ["m", 6])
    compiled = ember.compile(model, threads=1)
    rng = np.random.default_rng(8)
    feeds = {
        "a": rng.standard_normal((5, 9), dtype=np.float32),
        "b": rng.standard_normal((9, 6), dtype=np.float32),
    }
    assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)
    assert "MatMul node 'y'" in (compiled.compile_once_refusal or "")
    assert compiled.compiles == 1 and not compiled.compiled_once


def test_unifier_checks_matmul_operands_exactly() -> None:
    """The `?` contract for kernel.matmul: A's K and B's K, A's rows and the output's, B's
    columns and the output's, the batch dims (or 1) must be the same expressions; the
    generic same-place rule would compare A's rows with B's K instead."""
    from xdsl.dialects.builtin import DYNAMIC_INDEX, MemRefType, f32
    from xdsl.ir import Block

    from ember.engine.compile_once import CompileOnceRefusal, Extent, _check_op_extents
    from ember.tools.kernel_ops import matmul_op

    dyn = DYNAMIC_INDEX
    block = Block(
        arg_types=[
            MemRefType(f32, [dyn, 2, dyn, dyn]),
            MemRefType(f32, [dyn, 2, dyn, dyn]),
            MemRefType(f32, [dyn, 2, dyn, dyn]),
        ]
    )
    a, b, out = block.args
    op = matmul_op("plain", False, False)(block.args)
    batch, s, t, d = (Extent(1, (x,)) for x in ("batch", "s", "t", "d"))
    extents = {a: [batch, 2, s, d], b: [batch, 2, d, t], out: [batch, 2, s, t]}
    assert _check_op_extents(op, extents)  # rows s != K d at the same place: fine here
    for wrong in ({b: [batch, 2, t, t]}, {out: [batch, 2, t, t]}, {b: [s, 2, d, t]}):
        with pytest.raises(CompileOnceRefusal, match="kernel.matmul"):
            _check_op_extents(op, {**extents, **wrong})


def _anonymous(model: onnx.ModelProto, named: set[str]) -> onnx.ModelProto:
    """`model` with every input dim_param not in `named` cleared (neither a dim_value nor a
    dim_param: what some exporters write)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in copy.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param not in named:
                dim.ClearField("dim_param")
    return copy


def test_anonymous_dims_compile_once() -> None:
    """The batched product with its batch named and m, n anonymous: each is a symbol of its
    own (`a:1`, `b:2`), compiled once and run at 4 shapes against onnxruntime."""
    named = _two_input_matmul(["batch", "m", 20], ["batch", 20, "n"], ["batch", "m", "n"])
    model = _anonymous(named, {"batch"})
    assert not model.graph.input[0].type.tensor_type.shape.dim[1].HasField("dim_param")
    compiled = ember.compile(model, threads=1)
    rng = np.random.default_rng(9)
    for batch, m, n in [(1, 3, 5), (2, 17, 16), (3, 1, 33), (1, 40, 7)]:
        feeds = {
            "a": rng.standard_normal((batch, m, 20), dtype=np.float32),
            "b": rng.standard_normal((batch, 20, n), dtype=np.float32),
        }
        assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)
    assert compiled.compile_once_refusal is None, compiled.compile_once_refusal
    assert compiled.compiles == 1


def test_anonymous_dims_are_never_shared_between_inputs() -> None:
    """x [?, 20] + y [?, 20] with both batch dims anonymous: nothing says they are equal, so
    they are two symbols (`x:0`, `y:0`) whose probes differ, refused naming them; the model
    is specialised and still runs."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["z"])],
        "add",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 20]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 20]),
        ],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 20])],
    )
    model = _anonymous(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), set())
    compiled = ember.compile(model, threads=1)
    rng = np.random.default_rng(10)
    feeds = {k: rng.standard_normal((6, 20), dtype=np.float32) for k in "xy"}
    assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)
    refusal = compiled.compile_once_refusal or ""
    assert "x:0" in refusal and "y:0" in refusal, refusal
