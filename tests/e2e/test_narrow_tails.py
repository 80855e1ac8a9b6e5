"""Narrow-typed outputs (1-, 2- and 4-byte elements) with SIMD tails of every length, exact.

Guards against tail stores that write past their last lane: LLVM 22 on AVX-512 compiles a
masked store of a truncated vector with a one-lane mask to a store of the untruncated lane
(4 bytes for an int8 lane), so the bytes after the tail get clobbered (codegen/llvm_emitter.py
stores such one-lane tails as scalars). Every op here writes rows of L = 16 + t elements
(t = 1..15: each tail length of AVX-512's 16 lanes and of AVX2's 8), and the run allocates
every graph output (and the arena) with guard bytes right after its last element, checked
after the run: a write past any output's end fails the test, whatever its alignment.
Compiled for the host and for AVX2 (x86-64-v3, which this host can run). Every output must
equal onnxruntime's bit for bit.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.core.target import host_target, named_target
from ember.runtime import executable
from ember.tests.oracle import onnxruntime_outputs

ROWS = 3
TAILS = range(1, 16)
_HOST_FEATURES = llvm.get_host_cpu_features()
TARGETS = {
    "host": host_target,
    "avx2": lambda threads: named_target("x86-64-v3", threads),
}


def _narrow_model(cols: int) -> onnx.ModelProto:
    """Casts, quantization, comparisons, Where and data movement of narrow types, each an
    output: x float [ROWS, cols] in (-200, 200), i int64 [ROWS, cols] in (-2^40, 2^40)."""
    f = TensorProto
    shape = [ROWS, cols]
    nodes = [
        # float -> narrow casts (x is kept in range for the unsigned/signed 8-bit targets)
        helper.make_node("Clip", ["x", "zero", "c255"], ["x_u8_range"]),
        helper.make_node("Cast", ["x_u8_range"], ["cast_u8"], to=f.UINT8),
        helper.make_node("Clip", ["x", "cm128", "c127"], ["x_i8_range"]),
        helper.make_node("Cast", ["x_i8_range"], ["cast_i8"], to=f.INT8),
        helper.make_node("Cast", ["x"], ["cast_bool"], to=f.BOOL),
        helper.make_node("Cast", ["x"], ["cast_f16"], to=f.FLOAT16),
        # integer narrowing casts (wrap modulo 2^bits, an LLVM trunc of the wide lanes)
        helper.make_node("Cast", ["i"], ["i64_to_i32"], to=f.INT32),
        helper.make_node("Cast", ["i"], ["i64_to_i16"], to=f.INT16),
        helper.make_node("Cast", ["i"], ["i64_to_u8"], to=f.UINT8),
        helper.make_node("Cast", ["i64_to_i32"], ["i32_to_i8"], to=f.INT8),
        # quantization
        helper.make_node("QuantizeLinear", ["x", "scale", "zp_u8"], ["quant_u8"]),
        helper.make_node("QuantizeLinear", ["x", "scale", "zp_i8"], ["quant_i8"]),
        # comparisons -> bool, Where on uint8
        helper.make_node("Less", ["x", "zero"], ["less"]),
        helper.make_node("Greater", ["x", "c127"], ["greater"]),
        helper.make_node("Equal", ["cast_i8", "i32_to_i8"], ["equal_i8"]),
        helper.make_node("Where", ["less", "cast_u8", "quant_u8"], ["where_u8"]),
        # data movement of int8 / float16 / bool
        helper.make_node("Transpose", ["cast_i8"], ["transpose_i8"], perm=[1, 0]),
        helper.make_node("Transpose", ["cast_f16"], ["transpose_f16"], perm=[1, 0]),
        helper.make_node("Concat", ["quant_i8", "cast_i8", "quant_i8"], ["concat_i8"], axis=1),
        helper.make_node("Concat", ["cast_f16", "cast_f16"], ["concat_f16"], axis=1),
        helper.make_node("Concat", ["less", "greater"], ["concat_bool"], axis=1),
        helper.make_node("Concat", ["cast_u8", "where_u8"], ["concat_u8_rows"], axis=0),
        helper.make_node("Slice", ["cast_i8", "s_start", "s_end", "s_axes"], ["slice_i8"]),
        helper.make_node("Slice", ["cast_f16", "s_start", "s_end", "s_axes"], ["slice_f16"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(v, dtype), name)
        for name, v, dtype in [
            ("zero", 0.0, np.float32),
            ("c255", 255.0, np.float32),
            ("c127", 127.0, np.float32),
            ("cm128", -128.0, np.float32),
            ("scale", 0.75, np.float32),
            ("zp_u8", 128, np.uint8),
            ("zp_i8", -3, np.int8),
            ("s_start", [1], np.int64),
            ("s_end", [cols], np.int64),
            ("s_axes", [1], np.int64),
        ]
    ]
    outputs = [n.output[0] for n in nodes if not n.output[0].startswith("x_")]
    inputs = [
        helper.make_tensor_value_info("x", f.FLOAT, shape),
        helper.make_tensor_value_info("i", f.INT64, shape),
    ]
    graph = helper.make_graph(nodes, "narrow_tails", inputs, [], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    typed = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    model.graph.output.extend(typed[name] for name in outputs)
    return model


GUARD_BYTES = 64
GUARD_VALUE = 0xA5


class GuardedBuffers:
    """Stands in for executable.aligned_empty: each buffer is followed by GUARD_BYTES bytes of
    GUARD_VALUE (no alignment padding in between), checked by `assert_intact`."""

    def __init__(self) -> None:
        self.allocations: list[tuple[np.ndarray, int, tuple[int, ...], np.dtype]] = []

    def __call__(self, shape: tuple[int, ...], dtype: object = np.uint8) -> np.ndarray:
        dtype = executable.numpy_dtype(dtype)
        shape = tuple(shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        align = executable.ALIGNMENT
        raw = np.full(nbytes + GUARD_BYTES + align, GUARD_VALUE, np.uint8)
        start = (-raw.ctypes.data) % align
        self.allocations.append((raw[start:], nbytes, shape, dtype))
        return raw[start : start + nbytes].view(dtype).reshape(shape)

    def assert_intact(self) -> None:
        assert self.allocations, "the run allocated nothing through aligned_empty"
        for raw, nbytes, shape, dtype in self.allocations:
            guard = raw[nbytes : nbytes + GUARD_BYTES]
            written = np.flatnonzero(guard != GUARD_VALUE)
            assert written.size == 0, (
                f"a kernel wrote {written.size} byte(s) past the end of a {dtype} buffer of "
                f"shape {list(shape)}, up to {written[-1] + 1} bytes past it"
            )


def _feeds(cols: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(cols)
    x = rng.uniform(-200, 200, (ROWS, cols)).astype(np.float32)
    x[:, ::5] = np.round(x[:, ::5])  # exact integers: ties and equal casts
    i = rng.integers(-(2**40), 2**40, (ROWS, cols), dtype=np.int64)
    return {"x": x, "i": i}


@pytest.mark.parametrize("target_name", list(TARGETS))
@pytest.mark.parametrize("tail", TAILS)
def test_narrow_outputs_with_every_tail_match_onnxruntime_exactly(
    target_name: str, tail: int
) -> None:
    if target_name == "avx2" and not _HOST_FEATURES.get("avx2"):
        pytest.skip("this host cannot run AVX2 code")
    cols = 16 + tail
    model = _narrow_model(cols)
    feeds = _feeds(cols)
    expected = onnxruntime_outputs(model, feeds)
    compiled = ember.compile(model, target=TARGETS[target_name](1))
    guarded = GuardedBuffers()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(executable, "aligned_empty", guarded)
        got = compiled.run(feeds)
    guarded.assert_intact()
    assert set(got) == set(expected)
    for name, ref in expected.items():
        assert got[name].dtype == ref.dtype, (name, got[name].dtype, ref.dtype)
        assert got[name].shape == ref.shape, (name, got[name].shape, ref.shape)
        mismatch = np.flatnonzero(got[name].reshape(-1) != ref.reshape(-1))
        assert mismatch.size == 0, (
            f"{name} (cols {cols}, {target_name}): {mismatch.size} elements differ, first at "
            f"flat index {mismatch[0]}: {got[name].reshape(-1)[mismatch[0]]} != "
            f"{ref.reshape(-1)[mismatch[0]]}"
        )
