"""kernel.pool lowered to loops, JIT-compiled and compared with onnxruntime's MaxPool/AveragePool.

Max pooling must match exactly (it only selects values); average pooling within rtol 1e-5,
atol 1e-6 (only the summation order differs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects.builtin import (
    DenseArrayBase,
    MemRefType,
    ModuleOp,
    StringAttr,
    UnitAttr,
    f32,
    i64,
)
from xdsl.ir import Block, SSAValue

import ember
from ember.core.context import make_context
from ember.core.target import Target, host_target
from ember.dialects import kernel
from ember.dialects.numpy_eval import from_blocked, to_blocked
from ember.engine.compile import annotate_origins
from ember.frontend.onnx_importer import import_model
from ember.passes.conversion.graph_to_kernel import ConversionError
from ember.passes.conversion.kernel_to_loops import pooling
from ember.passes.conversion.kernel_to_loops.flat_access import KernelShapeError
from ember.passes.conversion.kernel_to_loops.pooling import build_pool, lower_pool
from ember.passes.conversion.kernel_to_loops.registry import lowering_for
from ember.passes.pipeline import build_pipeline
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.kernels.harness import run_kernel_op

AVX2 = Target(cpu="x86-64-v3", vector_width=8, vector_registers=16, threads=2)


def make_pool(
    kind: str,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    count_include_pad: bool = False,
):  # type: ignore[no-untyped-def]
    def make(args: Sequence[SSAValue]) -> kernel.PoolOp:
        props = {
            "kind": StringAttr(kind),
            "kernel_shape": DenseArrayBase.from_list(i64, list(kernel_shape)),
            "strides": DenseArrayBase.from_list(i64, list(strides)),
            "pads": DenseArrayBase.from_list(i64, list(pads)),
        }
        if count_include_pad:
            props["count_include_pad"] = UnitAttr()
        return kernel.PoolOp(operands=list(args), properties=props)

    return make


def onnxruntime_pool(
    x: np.ndarray,
    kind: str,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    ceil_mode: bool,
    count_include_pad: bool,
) -> np.ndarray:
    attrs = {
        "kernel_shape": list(kernel_shape),
        "strides": list(strides),
        "pads": list(pads),
        "ceil_mode": int(ceil_mode),
    }
    if kind == "avg":
        attrs["count_include_pad"] = int(count_include_pad)
    node = helper.make_node("MaxPool" if kind == "max" else "AveragePool", ["x"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


CASES = [
    # kind, input shape, kernel, strides, pads [t, l, b, r], ceil_mode, count_include_pad
    ("max", (1, 4, 23, 29), (3, 3), (2, 2), (1, 1, 1, 1), False, False),  # ResNet stem
    ("max", (1, 3, 20, 21), (3, 3), (2, 2), (0, 0, 0, 0), True, False),  # ceil_mode windows
    ("max", (2, 3, 16, 34), (2, 2), (2, 2), (0, 0, 0, 0), False, False),  # VGG
    ("max", (1, 5, 17, 33), (3, 3), (1, 1), (1, 1, 1, 1), False, False),  # inception branch
    ("max", (2, 3, 20, 20), (7, 7), (1, 1), (0, 0, 0, 0), False, False),
    ("max", (1, 2, 19, 26), (3, 2), (3, 3), (1, 1, 0, 1), True, False),  # scalar stride
    ("avg", (1, 5, 17, 33), (3, 3), (1, 1), (1, 1, 1, 1), False, False),
    ("avg", (1, 5, 17, 33), (3, 3), (1, 1), (1, 1, 1, 1), False, True),
    ("avg", (1, 3, 21, 37), (3, 3), (2, 2), (1, 1, 0, 0), True, True),  # past the padded border
    ("avg", (1, 3, 21, 37), (3, 3), (2, 2), (1, 1, 1, 1), True, False),
    ("avg", (2, 3, 15, 17), (2, 2), (2, 2), (0, 0, 0, 0), True, False),
    ("avg", (1, 2, 23, 23), (5, 5), (3, 3), (2, 2, 2, 2), False, True),
    ("avg", (1, 4, 12, 40), (2, 3), (1, 2), (0, 1, 1, 2), False, False),  # asymmetric
]


def run_case(case: tuple, threads: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    kind, in_shape, ks, strides, pads, ceil_mode, include_pad = case
    x = np.random.default_rng(seed).standard_normal(in_shape).astype(np.float32)
    expected = onnxruntime_pool(x, kind, ks, strides, pads, ceil_mode, include_pad)
    out = np.full(expected.shape, np.nan, np.float32)
    run_kernel_op(make_pool(kind, ks, strides, pads, include_pad), [x, out], threads=threads)
    return out, expected


def check(out: np.ndarray, expected: np.ndarray, kind: str) -> None:
    if kind == "max":
        np.testing.assert_array_equal(out, expected)
    else:
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: f"{c[0]}{c[2]}s{c[3]}p{c[4]}c{c[5]:d}i{c[6]:d}"
)
def test_pool_matches_onnxruntime(case: tuple) -> None:
    out, expected = run_case(case)
    check(out, expected, case[0])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_threads(kind: str, threads: int) -> None:
    """Big enough (>= 32K elements) to run the plane loop as scf.parallel."""
    case = (kind, (1, 16, 56, 56), (3, 3), (2, 2), (1, 1, 1, 1), False, True)
    out, expected = run_case(case, threads=threads, seed=threads)
    check(out, expected, kind)


def _lowered(make, in_shape: tuple, out_shape: tuple, vw: int = 8, **kwargs) -> str:  # type: ignore[no-untyped-def]
    block = Block(arg_types=[MemRefType(f32, in_shape), MemRefType(f32, out_shape)])
    op = make(block.args)
    fn = build_pool(op, Target(vector_width=vw), "pool", **kwargs)
    module = ModuleOp([fn])
    module.verify()
    return str(module)


@pytest.mark.parametrize("vw", [8, 16])
def test_stride2_interior_deinterleaves_vectors(vw: int) -> None:
    ir = _lowered(
        make_pool("max", (3, 3), (2, 2), (1, 1, 1, 1)), (1, 64, 112, 112), (1, 64, 56, 56), vw
    )
    even = ", ".join(str(2 * j) for j in range(vw))
    odd = ", ".join(str(2 * j + 1) for j in range(vw))
    assert_filecheck(
        ir,
        f"""
        CHECK: scf.parallel
        CHECK: vector.load {{{{.*}}}} vector<{vw}xf32>
        CHECK: vector.shuffle {{{{.*}}}} [{even}]
        CHECK: vector.shuffle {{{{.*}}}} [{odd}]
        CHECK: arith.cmpf ogt, {{{{.*}}}} : vector<{vw}xf32>
        CHECK: vector.store
        """,
    )
    scalar = _lowered(
        make_pool("max", (3, 3), (2, 2), (1, 1, 1, 1)),
        (1, 64, 112, 112),
        (1, 64, 56, 56),
        vector_strides=(1,),
    )
    assert "vector." not in scalar


# Planes whose vector interior does not cover the output: copied into an identity-padded
# scratch plane and swept with vectors of 16, 8 or 4 lanes, the last block overlapping.
PADDED_CASES = [
    ("avg", (1, 3, 14, 14), (3, 3), (1, 1), (1, 1, 1, 1), False, False),  # inception 14x14
    ("avg", (1, 3, 14, 14), (3, 3), (1, 1), (1, 1, 1, 1), False, True),
    ("max", (1, 3, 7, 7), (3, 3), (1, 1), (1, 1, 1, 1), False, False),  # 7x7: 4-lane blocks
    ("avg", (2, 3, 7, 7), (3, 3), (1, 1), (1, 1, 1, 1), False, False),
    ("max", (1, 4, 111, 111), (3, 3), (2, 2), (0, 0, 0, 0), False, False),  # squeezenet 55
    ("max", (1, 4, 27, 27), (3, 3), (2, 2), (0, 0, 0, 0), True, False),  # 13: 8-lane blocks
    ("max", (1, 2, 5, 6), (2, 2), (2, 2), (0, 0, 0, 0), True, False),  # 3 columns: scalars
    ("avg", (1, 2, 9, 37), (3, 2), (2, 2), (1, 0, 2, 1), True, False),  # ceil past the pad
    ("avg", (1, 2, 9, 37), (3, 2), (2, 2), (1, 0, 2, 1), True, True),
    ("avg", (1, 2, 11, 19), (5, 4), (1, 1), (2, 1, 2, 3), False, False),  # 19: 16 + overlap
    ("max", (1, 3, 14, 14), (2, 2), (2, 2), (0, 0, 0, 0), False, False),  # VGG's last: 7
    ("avg", (1, 2, 6, 12), (3, 19), (1, 1), (1, 17, 1, 9), False, False),  # left pad > 16
    # One output column: scalar blocks that divide by the column count (light Inception
    # v1's last pool, 7x7 over 6x6 padded to 7x7; that model runs only with --runslow).
    ("avg", (1, 2, 6, 6), (7, 7), (1, 1), (0, 0, 1, 1), False, False),
    # Rows narrower than a vector, not a power of two: one masked vector a row (5 of 8
    # lanes, 12 of 16), the lanes past the row (0/0 for an average) not stored.
    ("avg", (1, 2, 10, 10), (3, 3), (2, 2), (1, 1, 1, 1), False, False),
    ("max", (1, 2, 12, 12), (3, 3), (1, 1), (1, 1, 1, 1), False, False),
]


# Planes pooled in place (over PADDED_PLANE_MAX_BYTES, or no border): the columns after the
# full vector blocks are one more block overlapping the last (no scalar tail), and a stride-2
# pair that holds only an odd window's last column is read one element early (never past
# the row).
IN_PLACE_CASES = [
    ("max", (1, 2, 111, 111), (3, 3), (2, 2), (0, 0, 0, 0), False, False),  # squeezenet: 55
    ("max", (1, 2, 112, 112), (3, 3), (2, 2), (0, 0, 1, 1), False, False),  # inception v2: 56
    ("max", (1, 2, 95, 101), (3, 3), (1, 1), (1, 1, 1, 1), False, False),  # stride 1, odd
    ("avg", (1, 2, 95, 101), (3, 3), (1, 1), (1, 1, 1, 1), False, True),
    ("max", (1, 2, 90, 150), (2, 2), (2, 2), (0, 0, 0, 0), False, False),  # even window: 75
    ("max", (1, 2, 91, 125), (5, 5), (2, 2), (2, 2, 2, 2), True, False),  # 5 columns, ceil
    ("avg", (1, 2, 91, 125), (3, 3), (2, 2), (0, 0, 0, 0), False, False),  # 62
    ("max", (1, 2, 91, 91), (1, 1), (2, 2), (0, 0, 0, 0), False, False),  # 1-wide: reads 2
    # Rows narrower than a vector, no border: narrower vectors in place (8 + overlap).
    ("max", (1, 3, 27, 27), (3, 3), (2, 2), (0, 0, 0, 0), False, False),  # squeezenet: 13
    ("avg", (1, 3, 14, 14), (3, 3), (1, 1), (0, 0, 0, 0), False, False),  # 12
    ("max", (1, 3, 13, 11), (2, 2), (2, 2), (0, 0, 0, 0), False, False),  # 5: 4 + overlap
]


@pytest.mark.parametrize("vw", [8, 16])
@pytest.mark.parametrize(
    "case",
    PADDED_CASES + IN_PLACE_CASES,
    ids=lambda c: f"{c[0]}{c[1][2:]}{c[2]}s{c[3]}p{c[4]}c{c[5]:d}i{c[6]:d}",
)
def test_vector_planes_match_onnxruntime(case: tuple, vw: int) -> None:
    """PADDED_CASES and IN_PLACE_CASES with 8 and 16 lanes."""
    kind, in_shape, ks, strides, pads, ceil_mode, include_pad = case
    x = np.random.default_rng(3).standard_normal(in_shape).astype(np.float32)
    x.flat[::7] = -x.flat[::7] * 5  # large negative values next to the -inf padding
    expected = onnxruntime_pool(x, kind, ks, strides, pads, ceil_mode, include_pad)
    out = np.full(expected.shape, np.nan, np.float32)
    make = make_pool(kind, ks, strides, pads, include_pad)
    if vw == 16 and host_target(1).vector_width != 16:
        pytest.skip("AVX-512 host needed to run 16-lane code")
    target = Target(cpu="x86-64-v4", vector_width=16, vector_registers=32, threads=1)
    run_kernel_op(make, [x, out], target=target if vw == 16 else Target(threads=1))
    check(out, expected, kind)


# Planes of at least PREFETCH_MIN_PLANE_BYTES, which prefetch input rows ahead (the last
# output rows' prefetches clamped to the plane): odd sizes, stride 2 and 1, ceil mode.
PREFETCHED_CASES = [
    ("max", (1, 3, 131, 133), (3, 3), (2, 2), (1, 1, 1, 1), False, False),  # DBNet's stem pool
    ("max", (1, 2, 129, 130), (3, 3), (2, 2), (0, 0, 0, 0), True, False),
    ("avg", (1, 2, 128, 131), (3, 3), (1, 1), (1, 1, 1, 1), False, True),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", PREFETCHED_CASES, ids=lambda c: f"{c[0]}{c[1][2:]}s{c[3]}")
def test_prefetched_planes_match_onnxruntime(case: tuple, threads: int) -> None:
    assert case[1][2] * case[1][3] * 4 >= pooling.PREFETCH_MIN_PLANE_BYTES
    out, expected = run_case(case, threads=threads)
    check(out, expected, case[0])


def test_large_planes_prefetch_rows() -> None:
    """Each output row loop asks for the 2 input rows of a row ahead (133 floats: 9 lines
    each); planes under PREFETCH_MIN_PLANE_BYTES don't."""
    make = make_pool("max", (3, 3), (2, 2), (1, 1, 1, 1))
    prefetches = _lowered(make, (1, 2, 131, 133), (1, 2, 66, 67)).count("llvm.prefetch")
    assert prefetches > 0 and prefetches % (2 * 9) == 0
    assert "llvm.prefetch" not in _lowered(make, (1, 2, 100, 100), (1, 2, 50, 50))


def test_max_pool_padded_plane_propagates_nan() -> None:
    case = ("max", (1, 2, 7, 7), (3, 3), (1, 1), (1, 1, 1, 1), False, False)
    x = np.random.default_rng(1).standard_normal(case[1]).astype(np.float32)
    x[0, 1, 6, 0] = np.nan  # a corner: only border windows see it
    out = np.zeros((1, 2, 7, 7), np.float32)
    run_kernel_op(make_pool("max", (3, 3), (1, 1), (1, 1, 1, 1)), [x, out])
    assert np.isnan(out[0, 1, 5:, :2]).all() and not np.isnan(out[0, 0]).any()
    assert np.isnan(out).sum() == 4


def test_small_plane_runs_vectors_not_clipped_loops() -> None:
    ir = _lowered(
        make_pool("avg", (3, 3), (1, 1), (1, 1, 1, 1)), (1, 4, 14, 14), (1, 4, 14, 14), vw=16
    )
    assert "memref.alloca" in ir and "vector<8xf32>" in ir
    assert "memref.load" not in ir  # no scalar windows at the border or in a tail
    aligned = _lowered(
        make_pool("max", (2, 2), (2, 2), (0, 0, 0, 0)), (1, 4, 32, 32), (1, 4, 16, 16), vw=16
    )
    assert "memref.alloca" not in aligned  # fully vector interior: read in place


def test_stride1_uses_plain_vector_loads() -> None:
    ir = _lowered(make_pool("avg", (3, 3), (1, 1), (1, 1, 1, 1)), (1, 2, 9, 40), (1, 2, 9, 40))
    assert "vector.load" in ir and "vector.shuffle" not in ir
    assert "scf.parallel" not in ir  # too small to be worth threads


def test_pad_not_smaller_than_kernel_is_rejected() -> None:
    with pytest.raises(KernelShapeError, match=r"kernel\.pool: pads \[2, 0, 0, 0\]"):
        _lowered(make_pool("max", (2, 2), (1, 1), (2, 0, 0, 0)), (1, 1, 8, 8), (1, 1, 9, 7))


@pytest.mark.parametrize("elem_type", [TensorProto.UINT8, TensorProto.INT8, TensorProto.FLOAT])
def test_pads_not_smaller_than_kernel_through_compile_is_an_ember_error(elem_type: int) -> None:
    """The kernel's refusal reaches ember.compile as a ModelError naming the ONNX node (it was
    a plain ValueError naming only kernel.pool); onnxruntime refuses the model too."""
    node = helper.make_node(
        "MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], pads=[2, 0, 0, 0]
    )
    graph = helper.make_graph(
        [node],
        "pool",
        [helper.make_tensor_value_info("x", elem_type, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", elem_type, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(Exception, match="[Pp]ad"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(ember.ModelError) as info:
        ember.compile(model)
    assert isinstance(info.value, KernelShapeError)
    assert "MaxPool node 'pool' (kernel.pool): pads [2, 0, 0, 0] must be smaller than" in str(
        info.value
    )


def test_conversion_errors_are_ember_errors_naming_the_node() -> None:
    """A graph op left without a kernel form (here: convert-graph-to-kernel run without the
    graph pipeline that folds BatchNormalization) is a ModelError naming the ONNX node."""
    params = [numpy_helper.from_array(np.ones(4, np.float32), n) for n in "sbmv"]
    node = helper.make_node("BatchNormalization", ["x", *"sbmv"], ["y"], name="bn")
    graph = helper.make_graph(
        [node],
        "bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        params,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    module, weights = import_model(model)
    annotate_origins(module, model)
    with pytest.raises(ember.ModelError) as info:
        build_pipeline("convert-graph-to-kernel").apply(make_context(weights), module)
    assert isinstance(info.value, ConversionError)
    assert str(info.value).startswith("BatchNormalization node 'bn' (graph.batch_norm): no kernel")


def test_lowering_is_registered() -> None:
    block = Block(arg_types=[MemRefType(f32, (1, 1, 4, 4)), MemRefType(f32, (1, 1, 2, 2))])
    op = make_pool("max", (2, 2), (2, 2), (0, 0, 0, 0))(block.args)
    assert lowering_for(op) is lower_pool


@pytest.mark.parametrize("c", [8, 16])
@pytest.mark.parametrize(
    "case",
    CASES + PADDED_CASES,
    ids=lambda c: f"{c[0]}{c[1][2:]}{c[2]}s{c[3]}p{c[4]}c{c[5]:d}i{c[6]:d}",
)
def test_blocked_pool_matches_onnxruntime(case: tuple, c: int) -> None:
    """Channel-blocked [N, C/c, H, W, c] maps (the blocked-layout pass), 2 channel blocks,
    2 threads."""
    kind, in_shape, ks, strides, pads, ceil_mode, include_pad = case
    in_shape = (in_shape[0], 2 * c, *in_shape[2:])
    x = np.random.default_rng(5).standard_normal(in_shape).astype(np.float32)
    x.flat[::7] = -x.flat[::7] * 5  # large negative values next to the padding
    expected = onnxruntime_pool(x, kind, ks, strides, pads, ceil_mode, include_pad)
    out = to_blocked(np.full(expected.shape, -7.0, np.float32), c)
    make = make_pool(kind, ks, strides, pads, include_pad)
    # 8-channel blocks compiled for an AVX2 target (runs on any AVX2 or AVX-512 host).
    target = AVX2 if c == 8 else host_target(2)
    run_kernel_op(make, [to_blocked(x, c), out], target=target, threads=2)
    check(from_blocked(out), expected, kind)


def test_blocked_max_pool_propagates_nan() -> None:
    """As the NCHW kernel: a NaN in a window makes that output NaN (channel 9 only)."""
    x = np.random.default_rng(1).standard_normal((1, 16, 7, 7)).astype(np.float32)
    x[0, 9, 6, 0] = np.nan  # a corner: only border windows see it
    out = to_blocked(np.zeros((1, 16, 7, 7), np.float32), 8)
    run_kernel_op(make_pool("max", (3, 3), (1, 1), (1, 1, 1, 1)), [to_blocked(x, 8), out])
    out = from_blocked(out)
    assert np.isnan(out[0, 9, 5:, :2]).all() and np.isnan(out).sum() == 4
