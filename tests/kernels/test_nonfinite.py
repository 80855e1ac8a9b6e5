"""NaN and +-Inf through ember's kernels, compared with onnxruntime element for element.

Every input is seeded N(0, 1) with ~8% each of NaN, +inf and -inf sprinkled in; every test
first checks that the expected output really holds NaN (or inf) where it should, so that a
kernel dropping them fails. NaN positions must match (`equal_nan=True`), infinities must match
in sign; finite values within the tolerance stated per group. The semantics (and where
onnxruntime and onnx.reference disagree) are in docs/architecture.md, "Non-finite values".

Models are compiled end to end with `ember.compile`; the graph IR after the graph passes shows
that the fused forms (conv/matmul + relu/clip/leaky_relu) really are fused, and the loops IR of
every model is checked for the NaN-dropping `arith.maxnumf`/`minnumf`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from xdsl.dialects.builtin import MemRefType, ModuleOp, f32

import ember
from ember.core.context import make_context
from ember.engine.compile import CompiledModel
from ember.frontend.onnx_importer import import_model
from ember.passes.conversion.kernel_to_loops import simd
from ember.passes.conversion.kernel_to_loops.builder import kernel_function
from ember.passes.pipeline import GRAPH_STAGE, build_pipeline
from ember.tests.kernels.harness import run_function
from ember.tests.oracle import onnxruntime_outputs

# Selections (relu, clip, max pooling, arg max) and elementwise bodies are exact up to
# ember's vector exp/erf; sums of products (conv, matmul, softmax, norms) are not.
EXACT = {"rtol": 1e-5, "atol": 1e-6}
SUMS = {"rtol": 1e-4, "atol": 1e-5}


def sprinkled(shape: Sequence[int], seed: int, fraction: float = 0.08) -> np.ndarray:
    """N(0, 1) with `fraction` each of NaN, +inf and -inf at seeded positions."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    u = rng.random(shape)
    x[u < fraction] = np.nan
    x[(u >= fraction) & (u < 2 * fraction)] = np.inf
    x[(u >= 2 * fraction) & (u < 3 * fraction)] = -np.inf
    return x


def const(name: str, array: np.ndarray | float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    initializers: Sequence[onnx.TensorProto] = (),
    opset: int = 19,
) -> onnx.ModelProto:
    """A model computing `y` from float `inputs`; y's type and shape come from onnx."""
    graph = helper.make_graph(
        list(nodes),
        "nonfinite",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    model.graph.output[0].CopyFrom(inferred.graph.output[0])
    return model


def graph_stage_ir(model: onnx.ModelProto) -> str:
    """The graph IR after the graph passes (the kernels' epilogues fused or not)."""
    module, weights = import_model(model)
    build_pipeline(GRAPH_STAGE).apply(make_context(weights), module)
    return str(module)


def compiled_checked(model: onnx.ModelProto) -> CompiledModel:
    """The model compiled, its loops IR (kept for this, not lowered a second time) checked
    for NaN-dropping min/max."""
    compiled = ember.compile(model, keep_ir=True)
    assert isinstance(compiled, CompiledModel) and compiled.program is not None
    loops_ir = str(compiled.program.module)
    assert not re.search(r"^\s*(%\S+ = )?(graph|kernel)\.", loops_ir, re.M), loops_ir  # loops
    assert "maxnumf" not in loops_ir and "minnumf" not in loops_ir, loops_ir
    return compiled


def ember_output(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return compiled_checked(model).run(feeds)["y"]


def assert_matches(got: np.ndarray, want: np.ndarray, tol: dict[str, float]) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, equal_nan=True, **tol)


def check_against_onnxruntime(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    tol: dict[str, float],
    nan_out: bool = True,
) -> np.ndarray:
    want = onnxruntime_outputs(model, feeds)["y"]
    assert np.isnan(want).any() == nan_out, "the input must reach the output as NaN somewhere"
    assert_matches(ember_output(model, feeds), want, tol)
    return want


X = sprinkled((2, 8, 9, 13), seed=0)
X2 = sprinkled((2, 8, 9, 13), seed=1)


# -- elementwise -----------------------------------------------------------------------------
UNARY = {
    "Relu": {},
    "LeakyRelu": {"alpha": 0.1},
    "Elu": {},
    "Celu": {"alpha": 0.5},
    "Selu": {},
    "ThresholdedRelu": {"alpha": 0.5},
    "HardSigmoid": {},
    "HardSwish": {},
    "Sign": {},
    "Abs": {},
    "Softplus": {},
}


@pytest.mark.parametrize("op_type", sorted(UNARY))
def test_unary_activation(op_type: str) -> None:
    model = make_model([helper.make_node(op_type, ["x"], ["y"], **UNARY[op_type])], {"x": X})
    # ThresholdedRelu is x > alpha ? x : 0, which maps NaN to 0 (in onnxruntime too).
    nan_out = op_type != "ThresholdedRelu"
    want = check_against_onnxruntime(model, {"x": X}, EXACT, nan_out)
    if op_type not in ("HardSigmoid", "Sign"):  # those map +inf to a finite value
        assert np.isposinf(want).any()


def test_prelu() -> None:
    slope = const("slope", np.linspace(-0.5, 0.5, 8).reshape(8, 1, 1))
    model = make_model([helper.make_node("PRelu", ["x", "slope"], ["y"])], {"x": X}, [slope])
    check_against_onnxruntime(model, {"x": X}, EXACT)


@pytest.mark.parametrize("op_type", ["Max", "Min"])
def test_binary_max_min(op_type: str) -> None:
    """NaN in either operand gives NaN (onnx.reference agrees)."""
    model = make_model([helper.make_node(op_type, ["x", "x2"], ["y"])], {"x": X, "x2": X2})
    want = check_against_onnxruntime(model, {"x": X, "x2": X2}, EXACT)
    assert np.isnan(want).sum() > np.isnan(X).sum()  # NaN from both sides


def test_fmod_of_every_pair_of_special_values() -> None:
    """Mod(fmod=1) on NaN, +-inf, +-0 and numbers in every pair: fmod(x, +-inf) = x for a
    finite x only; fmod(+-inf, y) and fmod(x, 0) are NaN (onnxruntime = np.fmod)."""
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.5, 7.0], np.float32)
    x, y = (np.ascontiguousarray(g.reshape(1, -1)) for g in np.meshgrid(special, special))
    model = make_model([helper.make_node("Mod", ["x", "x2"], ["y"], fmod=1)], {"x": x, "x2": y})
    check_against_onnxruntime(model, {"x": x, "x2": y}, EXACT)


CLIPS = {
    "both": (["x", "lo", "hi"], [const("lo", -0.5), const("hi", 0.7)]),
    "min_only": (["x", "lo"], [const("lo", 0.0)]),
    "max_only": (["x", "", "hi"], [const("hi", 0.5)]),
    "none": (["x"], []),
}


@pytest.mark.parametrize("bounds", sorted(CLIPS))
def test_clip(bounds: str) -> None:
    """NaN stays NaN. A missing bound is numeric_limits::lowest()/max() (the ONNX default):
    onnxruntime clips +inf to FLT_MAX when max is absent; onnx.reference leaves +inf (we
    follow onnxruntime and the spec)."""
    inputs, bounds_init = CLIPS[bounds]
    model = make_model([helper.make_node("Clip", inputs, ["y"])], {"x": X}, bounds_init)
    want = check_against_onnxruntime(model, {"x": X}, EXACT)
    assert not np.isinf(want).any()


# -- conv / matmul with fused epilogues ------------------------------------------------------
RNG = np.random.default_rng(7)
W3 = const("w", RNG.standard_normal((16, 8, 3, 3)))
W1 = const("w", RNG.standard_normal((16, 8, 1, 1)))
WDW = const("w", RNG.standard_normal((8, 1, 3, 3)))
BIAS = const("bias", RNG.standard_normal(16))
WMM = const("wm", RNG.standard_normal((13, 20)))
ACTIVATIONS = {
    "relu": ([], {}, "relu"),
    "clip": (["lo", "hi"], {}, "clip"),
    "clip_min_only": (["lo"], {}, "clip"),
    "leaky_relu": ([], {"alpha": 0.1}, "leaky_relu"),
}


def activation_node(kind: str) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    extra, attrs, _ = ACTIVATIONS[kind]
    op_type = {"relu": "Relu", "leaky_relu": "LeakyRelu"}.get(kind, "Clip")
    bounds = {"lo": const("lo", 0.0), "hi": const("hi", 6.0)}
    node = helper.make_node(op_type, ["c", *extra], ["y"], **attrs)
    return node, [bounds[name] for name in extra]


CONVS = {
    "conv3x3": ([W3, BIAS], {"pads": [1, 1, 1, 1]}),
    "conv1x1": ([W1], {}),
    "depthwise": ([WDW], {"pads": [1, 1, 1, 1], "group": 8}),
}


def _fused(graph_ir: str, op: str, activation: str) -> bool:
    lines = [line for line in graph_ir.splitlines() if f"graph.{op} " in line]
    return bool(lines) and all(f'activation = "{activation}"' in line for line in lines)


@pytest.mark.parametrize("conv", sorted(CONVS))
@pytest.mark.parametrize("kind", sorted(ACTIVATIONS))
def test_conv_fused_activation(conv: str, kind: str) -> None:
    """A NaN/inf input makes whole output windows NaN; the fused epilogue must keep them."""
    weights, attrs = CONVS[conv]
    act, bounds = activation_node(kind)
    conv_node = helper.make_node("Conv", ["x", *[w.name for w in weights]], ["c"], **attrs)
    model = make_model([conv_node, act], {"x": X}, [*weights, *bounds])
    graph_ir = graph_stage_ir(model)
    assert _fused(graph_ir, "conv", ACTIVATIONS[kind][2]), graph_ir
    assert "graph.relu" not in graph_ir and "graph.clip" not in graph_ir, graph_ir
    check_against_onnxruntime(model, {"x": X}, SUMS)


@pytest.mark.parametrize("kind", sorted(ACTIVATIONS))
def test_matmul_fused_activation(kind: str) -> None:
    act, bounds = activation_node(kind)
    model = make_model(
        [helper.make_node("MatMul", ["x", "wm"], ["c"]), act], {"x": X}, [WMM, *bounds]
    )
    graph_ir = graph_stage_ir(model)
    assert _fused(graph_ir, "matmul", ACTIVATIONS[kind][2]), graph_ir
    check_against_onnxruntime(model, {"x": X}, SUMS)


def test_gemm_relu_fused() -> None:
    x = np.ascontiguousarray(X.reshape(16, -1)[:, :96])
    w = const("wg", RNG.standard_normal((24, 96)))
    nodes = [
        helper.make_node("Gemm", ["x", "wg"], ["c"], transB=1),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    model = make_model(nodes, {"x": x}, [w])
    graph_ir = graph_stage_ir(model)
    assert _fused(graph_ir, "matmul", "relu"), graph_ir
    check_against_onnxruntime(model, {"x": x}, SUMS)


# -- pooling ---------------------------------------------------------------------------------
# Wide enough rows for the SIMD interior of the pooling kernel (16 lanes on AVX-512).
XP = sprinkled((1, 4, 12, 80), seed=2)
POOLS = {
    "3x3_s1_pad1": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
    "3x3_s2_pad1": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    "2x2_s2": {"kernel_shape": [2, 2], "strides": [2, 2]},
}


def max_pool_oracle(
    x: np.ndarray, kernel_shape: Sequence[int], strides: Sequence[int], pads: Sequence[int]
) -> np.ndarray:
    """Max over each window (padding -inf), NaN if the window holds a NaN (np.max)."""
    (kh, kw), (sh, sw) = kernel_shape, strides
    padded = np.pad(
        x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])], constant_values=-np.inf
    )
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    return windows[:, :, ::sh, ::sw].max(axis=(4, 5))


@pytest.mark.parametrize("kind", ["max", "min"])
def test_extremum_helper_equals_a_nan_propagating_fold(kind: str) -> None:
    """simd.extremum (the max pool's window reduction) on 7 vectors, one lane per case:
    a NaN in each position, +-inf, and plain numbers; it must equal np.maximum/minimum.reduce."""
    count, lanes = 7, 16
    cases = np.tile(np.linspace(-3, 3, count, dtype=np.float32)[:, None], (1, lanes))
    for lane in range(count):
        cases[lane, lane] = np.nan  # a NaN in every position
    cases[:, 7] = [np.inf, -np.inf, 0, 1, 2, 3, 4]
    cases[:, 8] = [-np.inf] * count
    cases[:, 9] = [np.inf, np.nan, -np.inf, 0, 0, 0, 0]
    types = [MemRefType(f32, [count, lanes]), MemRefType(f32, [lanes])]
    fn, b = kernel_function("extremum", types)
    values = [b.vload(fn.args[0], [row, 0], lanes) for row in range(count)]
    b.vstore(simd.extremum(b, kind, values), fn.args[1], [0])
    b.ret()
    out = np.empty(lanes, np.float32)
    run_function(ModuleOp([fn]), "extremum", [cases, out])
    fold = np.maximum if kind == "max" else np.minimum
    np.testing.assert_array_equal(out, fold.reduce(cases, axis=0))


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_max_pool_nan_propagates(pool: str) -> None:
    """A NaN anywhere in a window gives NaN. onnxruntime's MaxPool is position-dependent
    ([nan, 1] -> 1 but [1, nan] -> nan: x86 maxps operand order) and onnx.reference drops NaN,
    so neither is the oracle here: np.max over windows is, and wherever onnxruntime does give
    NaN ember must too."""
    attrs = {"strides": [1, 1], "pads": [0, 0, 0, 0], **POOLS[pool]}
    model = make_model([helper.make_node("MaxPool", ["x"], ["y"], **POOLS[pool])], {"x": XP})
    got = ember_output(model, {"x": XP})
    want = max_pool_oracle(XP, attrs["kernel_shape"], attrs["strides"], attrs["pads"])
    assert np.isnan(want).any() and np.isposinf(want).any()
    assert_matches(got, want, EXACT)
    onnxruntime_nan = np.isnan(onnxruntime_outputs(model, {"x": XP})["y"])
    assert np.isnan(got[onnxruntime_nan]).all()


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_max_pool_infinities_match_onnxruntime(pool: str) -> None:
    """Without NaN, onnxruntime is the oracle: +-inf are selected like any value. (Its padded
    windows that hold only -inf give -FLT_MAX; this input has none, ember gives -inf.)"""
    x = np.where(np.isnan(XP), np.float32(0.5), XP)
    model = make_model([helper.make_node("MaxPool", ["x"], ["y"], **POOLS[pool])], {"x": x})
    want = onnxruntime_outputs(model, {"x": x})["y"]
    assert np.isposinf(want).any() and np.isfinite(want).any()
    assert_matches(ember_output(model, {"x": x}), want, EXACT)


def test_max_pool_of_only_minus_inf_is_minus_inf() -> None:
    x = np.full((1, 1, 4, 20), -np.inf, np.float32)
    model = make_model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])], {"x": x})
    assert np.isneginf(ember_output(model, {"x": x})).all()


def test_average_pool() -> None:
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    check_against_onnxruntime(make_model([node], {"x": XP}), {"x": XP}, SUMS)


# -- reductions ------------------------------------------------------------------------------
# Sparser non-finite values: most reduced sets (up to the 9x13 planes) still hold no NaN.
XR = sprinkled((2, 8, 9, 13), seed=3, fraction=0.01)
REDUCTIONS = {
    "ReduceMax_last": ("ReduceMax", -1),
    "ReduceMax_channels": ("ReduceMax", 1),
    "ReduceMin_last": ("ReduceMin", -1),
    "ReduceMin_channels": ("ReduceMin", 1),
    "GlobalMaxPool": ("GlobalMaxPool", None),
}


@pytest.mark.parametrize("case", sorted(REDUCTIONS))
def test_max_min_reductions_propagate_nan(case: str) -> None:
    """NaN anywhere in the reduced set gives NaN, as in onnx.reference (np.max). onnxruntime
    is not usable here: its vectorized ReduceMax loses or even corrupts lanes next to a NaN
    (ReduceMax([0, nan, 2, 3, 4, 5, 6, 7]) = 6 in onnxruntime 1.32)."""
    op_type, axis = REDUCTIONS[case]
    x = XR
    if axis is None:
        model = make_model([helper.make_node(op_type, ["x"], ["y"])], {"x": x})
    else:
        axes = numpy_helper.from_array(np.array([axis], np.int64), "axes")
        model = make_model([helper.make_node(op_type, ["x", "axes"], ["y"])], {"x": x}, [axes])
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert np.isnan(want).any() and not np.isnan(want).all()
    assert_matches(ember_output(model, {"x": x}), want, EXACT)


def test_reductions_of_infinities() -> None:
    """Rows of only -inf / +inf, with one NaN, or mixed: max, min as onnxruntime gives them."""
    rows = [[-np.inf] * 8, [np.inf] * 8, [1, np.inf, -np.inf, 2, 0, 0, 0, 0]]
    x = np.array(rows, np.float32)
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    for op_type, want in (
        ("ReduceMax", [-np.inf, np.inf, np.inf]),
        ("ReduceMin", [-np.inf, np.inf, -np.inf]),
    ):
        model = make_model(
            [helper.make_node(op_type, ["x", "axes"], ["y"], keepdims=0)], {"x": x}, [axes]
        )
        np.testing.assert_array_equal(onnxruntime_outputs(model, {"x": x})["y"], want)
        np.testing.assert_array_equal(ember_output(model, {"x": x}), want)


INFINITE_ROWS = np.array(
    [
        [1, np.inf, 2, 0],
        [-np.inf] * 4,
        [np.inf, np.inf, 1, 0],
        [np.nan, 1, 2, 0],
        [-np.inf, 0, 1, -np.inf],
        [1, 2, 3, 4],
        [80, 90, 100, 0],  # exp overflows float32 unless shifted
    ],
    np.float32,
)


@pytest.mark.parametrize("op_type", ["ReduceLogSumExp", "ReduceLogSum"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_log_sum_reductions_of_infinities(op_type: str, keepdims: int) -> None:
    """As onnxruntime: a row holding +inf gives +inf, one of only -inf gives -inf, NaN gives
    NaN. ReduceLogSumExp shifts by the row's maximum only where it is finite (an infinite
    shift would be inf - inf = NaN for the whole row)."""
    x = INFINITE_ROWS if op_type == "ReduceLogSumExp" else np.abs(INFINITE_ROWS)
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    node = helper.make_node(op_type, ["x", "axes"], ["y"], keepdims=keepdims)
    want = check_against_onnxruntime(make_model([node], {"x": x}, [axes]), {"x": x}, SUMS)
    assert np.isinf(want).any() and np.isfinite(want).any()


@pytest.mark.parametrize(
    ("row", "want"),
    [
        ([np.nan, 1, 2], [1, 0, 0]),
        ([np.nan, np.nan, 1], [1, 0, 0]),
        ([1, np.nan, 3], [0, 0, 1]),
        ([1, 2, np.nan], [0, 1, 0]),
        ([np.nan, np.nan, np.nan], [1, 0, 0]),
    ],
)
def test_hardmax_with_nan_follows_arg_max(row: list[float], want: list[float]) -> None:
    """Hardmax is one_hot(ArgMax), so a NaN wins only in first place, as ArgMax in ember and
    onnxruntime: every row has exactly one 1. onnxruntime's own Hardmax is not a usable
    oracle: it gives [0, 0, 0] for [nan, 1, 2] (no 1 at all) but [0, 0, 1] for [1, nan, 3];
    onnx.reference (np.argmax) picks the first NaN instead."""
    x = np.array([row], np.float32)
    model = make_model([helper.make_node("Hardmax", ["x"], ["y"])], {"x": x})
    arg_max = make_model([helper.make_node("ArgMax", ["x"], ["y"], axis=-1)], {"x": x})
    assert onnxruntime_outputs(arg_max, {"x": x})["y"][0, 0] == want.index(1)
    np.testing.assert_array_equal(ember_output(model, {"x": x}), np.array([want], np.float32))


@pytest.mark.parametrize("op_type", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("select_last_index", [0, 1])
@pytest.mark.parametrize("axis", [1, -1])
def test_arg_reductions(op_type: str, select_last_index: int, axis: int) -> None:
    """As onnxruntime: comparisons with NaN are false, so a NaN wins only in first place.
    (onnx.reference, np.argmax, returns the first NaN instead; we follow onnxruntime.)"""
    node = helper.make_node(op_type, ["x"], ["y"], axis=axis, select_last_index=select_last_index)
    graph = helper.make_graph(
        [node],
        "arg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, X.shape)],
        [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.graph.output[0].CopyFrom(onnx.shape_inference.infer_shapes(model).graph.output[0])
    want = onnxruntime_outputs(model, {"x": X})["y"]
    np.testing.assert_array_equal(ember_output(model, {"x": X}), want)


# -- softmax, normalization, LRN -------------------------------------------------------------
@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [1, -1])
def test_softmax(op_type: str, axis: int) -> None:
    """A row with NaN or +inf is all NaN (inf - inf in the max shift), as in onnxruntime."""
    model = make_model([helper.make_node(op_type, ["x"], ["y"], axis=axis)], {"x": X})
    check_against_onnxruntime(model, {"x": X}, SUMS)


def test_softmax_rows_of_infinities() -> None:
    x = np.array([[-np.inf, 0.0, 1.0, -np.inf], [-np.inf] * 4, [np.inf, 0.0, 0.0, 0.0]], np.float32)
    model = make_model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], {"x": x})
    check_against_onnxruntime(model, {"x": x}, SUMS)


def test_layer_normalization() -> None:
    scale, bias = const("s", np.linspace(0.5, 1.5, 13)), const("b", np.linspace(-1, 1, 13))
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1)
    check_against_onnxruntime(make_model([node], {"x": X}, [scale, bias]), {"x": X}, SUMS)


def test_lrn() -> None:
    """Against float64 numpy: onnxruntime's LRN slides a running sum of squares over the
    channels, so after an inf every later channel of that position is NaN (inf - inf), even
    where the window holds only finite values; ember computes each window's sum."""
    size, alpha, beta, bias = 3, 1e-2, 0.75, 1.0
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=alpha, beta=beta, bias=bias)
    model = make_model([node], {"x": X})
    x = X.astype(np.float64)
    squares = np.zeros_like(x)
    for c in range(x.shape[1]):
        lo, hi = max(0, c - (size - 1) // 2), min(x.shape[1], c + size // 2 + 1)
        squares[:, c] = (x[:, lo:hi] ** 2).sum(axis=1)
    with np.errstate(invalid="ignore"):
        want = (x / (bias + alpha / size * squares) ** beta).astype(np.float32)
    assert np.isnan(want).any() and np.isfinite(want).any()
    assert_matches(ember_output(model, {"x": X}), want, SUMS)


# -- resize ------------------------------------------------------------------------------------
def weighted_only_oracle(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Resize as the linear map it is, from onnx.reference: the finite part of `x` resized, plus
    each non-finite input times its weight in each output, where that weight is not 0. So a
    NaN reaches exactly the outputs that weigh it, whichever taps of weight 0 an implementation
    happens to read."""
    reference = ReferenceEvaluator(model)
    bad = ~np.isfinite(x)
    y = reference.run(None, {"x": np.where(bad, 0, x)})[0].astype(np.float64)
    for position in zip(*np.nonzero(bad), strict=True):
        one_hot = np.zeros_like(x)
        one_hot[position] = 1
        weight = reference.run(None, {"x": one_hot})[0].astype(np.float64)
        with np.errstate(invalid="ignore"):
            y = y + np.where(weight != 0, weight * np.float64(x[position]), 0)
    return y.astype(np.float32)


RESIZES = {
    "linear": ("linear", {}, [2, 2]),
    "linear_width_only": ("linear", {}, [1, 2]),
    "cubic_width_only": ("cubic", {}, [1, 2]),
    "cubic_align_corners": ("cubic", {"coordinate_transformation_mode": "align_corners"}, [2, 2]),
    "linear_align_corners": (
        "linear",
        {"coordinate_transformation_mode": "align_corners"},
        [1.5, 1.5],
    ),
    "cubic_antialias": ("cubic", {"antialias": 1}, [0.75, 1.25]),
    "linear_crop_outside": (
        "linear",
        {"coordinate_transformation_mode": "tf_crop_and_resize"},
        [0.5, 0.5],
    ),
}


@pytest.mark.parametrize("special", [np.nan, np.inf])
@pytest.mark.parametrize("case", sorted(RESIZES))
def test_resize_reads_no_zero_weight_tap(case: str, special: float) -> None:
    """A tap of weight 0 contributes 0, not NaN * 0 or inf * 0 = NaN. onnxruntime is not a
    usable oracle: it multiplies zero-weight neighbours in on some paths and not others
    (linear 2x upsampling of a NaN gives 20 NaNs with antialias=0 and 16 with antialias=1,
    the same filter), and which neighbours it reads depends on its rounding (a NaN at row 1
    reaches row 0 but not row 2 of a height scale of 1); onnx.reference reads other ones."""
    mode, attrs, scales = RESIZES[case]
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 1, 2] = special
    inputs = ["x", "roi", "scales"]
    initializers = [numpy_helper.from_array(np.array([1, 1, *scales], np.float32), "scales")]
    initializers.append(
        numpy_helper.from_array(np.array([0, 0, -0.2, 0.1, 1, 1, 1.1, 0.9], np.float32), "roi")
    )
    node = helper.make_node("Resize", inputs, ["y"], mode=mode, **attrs)
    model = make_model([node], {"x": x}, initializers)
    want = weighted_only_oracle(model, x)
    assert_matches(ember_output(model, {"x": x}), want, SUMS)


# -- top k, scatter --------------------------------------------------------------------------
@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("k", [5, 13])
def test_top_k(largest: int, k: int) -> None:
    """NaN ranks above every number, as in onnxruntime (and numpy's sort): first when
    `largest`, last otherwise; NaNs and equal values keep their index order."""
    x = X.copy()
    x[0, 0, 0, :4] = 1.5  # ties
    outs = ["y", "indices"]
    node = helper.make_node("TopK", ["x", "k"], outs, axis=-1, largest=largest)
    graph = helper.make_graph(
        [node],
        "top_k",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outs],
        initializer=[numpy_helper.from_array(np.array([k], np.int64), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    for i, out in enumerate(onnx.shape_inference.infer_shapes(model).graph.output):
        model.graph.output[i].CopyFrom(out)
    want = onnxruntime_outputs(model, {"x": x})
    assert np.isnan(want["y"]).any() == (bool(largest) or k == x.shape[-1])
    got = compiled_checked(model).run({"x": x})
    np.testing.assert_array_equal(got["y"], want["y"])  # NaN == NaN in assert_array_equal
    np.testing.assert_array_equal(got["indices"], want["indices"])


@pytest.mark.parametrize("reduction", ["max", "min"])
def test_scatter_elements_max_min_propagate_nan(reduction: str) -> None:
    """A NaN in the data or in the update gives NaN, like every max/min in ember. Neither
    oracle does: onnxruntime computes `data > update ? data : update` (a NaN in the data is
    lost) and onnx.reference the other way round (a NaN in the update is lost)."""
    data = np.array([[np.nan, 1.0, np.nan, 2.0, -np.inf, np.inf]], np.float32)
    updates = np.array([[1.0, np.nan, np.nan, 3.0, np.nan, -np.inf]], np.float32)
    indices = numpy_helper.from_array(np.zeros((1, 6), np.int64), "indices")
    node = helper.make_node(
        "ScatterElements", ["x", "indices", "x2"], ["y"], axis=0, reduction=reduction
    )
    model = make_model([node], {"x": data, "x2": updates}, [indices], opset=18)
    combine = np.maximum if reduction == "max" else np.minimum
    got = ember_output(model, {"x": data, "x2": updates})
    np.testing.assert_array_equal(got, combine(data, updates))
