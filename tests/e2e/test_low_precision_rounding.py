"""float16/bfloat16 graphs keep ONNX's per-op rounding: every op's result is a value of the
tensor's element type, including the ops of a function body (Softmax-13 and LogSoftmax-13 are
Exp(X - ReduceMax(X)) / ReduceSum(...) and (X - max) - Log(ReduceSum(Exp(X - max)))).

ember's softmax kernel computes 16-bit floats in float32 and rounds at those op boundaries.
Before, it computed in the 16-bit type (a sum accumulated in float16, a rounded reciprocal):
2-4 ulps off, which a following MatMul turned into errors past the node suite's rtol 1e-3
(test_attention_4d_*fp16_expanded).
"""

from __future__ import annotations

import llvmlite.binding as llvm
import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.core.target import host_target, named_target
from ember.tests.oracle import onnxruntime_outputs

SIXTEEN_BIT = {
    "float16": (TensorProto.FLOAT16, np.dtype(np.float16)),
    "bfloat16": (TensorProto.BFLOAT16, np.dtype(ml_dtypes.bfloat16)),
}


def _model(
    nodes: list[onnx.NodeProto], inputs: dict[str, list[int]], elem: int, opset: int = 18
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "low_precision",
        [helper.make_tensor_value_info(n, elem, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(nodes[-1].output[0], elem, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(ember.compile(model).run(feeds)[model.graph.output[0].name])


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in units in the last place between two arrays of one 16-bit float type."""

    def ordered(x: np.ndarray) -> np.ndarray:
        bits = x.view(np.uint16).astype(np.int64)
        return np.where(bits >= 0x8000, 0x8000 - bits, bits)  # sign-magnitude -> monotonic

    return np.abs(ordered(a) - ordered(b))


def _softmax_body(x: np.ndarray, axis: int, log: bool) -> np.ndarray:
    """The function body in float64, rounded to x's type after every op."""

    def rounded(v: np.ndarray) -> np.ndarray:
        return v.astype(x.dtype).astype(np.float64)

    wide = x.astype(np.float64)
    shifted = rounded(wide - wide.max(axis=axis, keepdims=True))
    exps = rounded(np.exp(shifted))
    total = rounded(exps.sum(axis=axis, keepdims=True))
    y = shifted - rounded(np.log(total)) if log else exps / total
    return y.astype(x.dtype)


@pytest.mark.parametrize("type_name", sorted(SIXTEEN_BIT))
@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 0])  # a contiguous row; a strided column
def test_16bit_softmax_rounds_at_its_function_body_op_boundaries(
    type_name: str, op_type: str, axis: int
) -> None:
    elem, dtype = SIXTEEN_BIT[type_name]
    shape = [24, 40, 9]
    x = (np.random.default_rng(0).standard_normal(shape) * 3).astype(dtype)
    got = _run(
        _model([helper.make_node(op_type, ["x"], ["y"], axis=axis)], {"x": shape}, elem), {"x": x}
    )
    distance = _ulps(got, _softmax_body(x, axis, op_type == "LogSoftmax"))
    # Equal bit for bit on this seed; a float32 exp/log a hair off a rounding tie may flip one
    # element by 1 ulp elsewhere. The float16-accumulating kernel missed 35% of elements.
    assert distance.max() <= 1
    assert np.count_nonzero(distance) <= distance.size // 1000


def test_float16_attention_chain_matches_the_onnx_reference() -> None:
    """MatMul -> Softmax -> MatMul in float16: each op rounded, as onnx.reference computes it,
    within the node suite's tolerance (rtol 1e-3, atol 1e-7); the float16-accumulating
    softmax had 761 of 4096 elements outside it."""
    elem = TensorProto.FLOAT16
    rng = np.random.default_rng(1)
    shapes = {"q": [2, 4, 16, 32], "k": [2, 4, 32, 48], "v": [2, 4, 48, 32]}
    scale = {"q": 0.5, "k": 0.5, "v": 1.0}
    feeds = {n: (rng.standard_normal(s) * scale[n]).astype(np.float16) for n, s in shapes.items()}
    model = _model(
        [
            helper.make_node("MatMul", ["q", "k"], ["scores"]),
            helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
            helper.make_node("MatMul", ["probs", "v"], ["y"]),
        ],
        shapes,
        elem,
    )
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    np.testing.assert_allclose(
        _run(model, feeds).astype(np.float64), want.astype(np.float64), rtol=1e-3, atol=1e-7
    )


def _bf16(rng: np.random.Generator, shape: list[int]) -> np.ndarray:
    return rng.standard_normal(shape).astype(ml_dtypes.bfloat16)


@pytest.mark.parametrize(
    ("nodes", "shapes", "exact"),
    [
        (
            [helper.make_node("MatMul", ["a", "b"], ["y"])],
            {"a": [2, 5, 67], "b": [67, 19]},
            lambda f: f["a"] @ f["b"],
        ),
        (
            [helper.make_node("Gemm", ["a", "b", "c"], ["y"], alpha=0.5, beta=2.0, transB=1)],
            {"a": [7, 33], "b": [11, 33], "c": [11]},
            lambda f: 0.5 * (f["a"] @ f["b"].T) + 2.0 * f["c"],
        ),
        (
            [helper.make_node("Conv", ["a", "b"], ["y"], pads=[1, 1, 1, 1])],
            {"a": [1, 3, 6, 6], "b": [4, 3, 3, 3]},
            None,
        ),
    ],
    ids=["matmul", "gemm", "conv"],
)
def test_bfloat16_gemm_and_conv_widen_exactly_and_round_once(nodes, shapes, exact) -> None:
    """bfloat16 MatMul/Gemm/Conv run float32's kernels on exactly widened operands and round
    the result to bfloat16 once: within 1 bfloat16 ulp of the float64 result rounded once
    (float32 accumulation may land on the other side of a rounding tie), mostly equal."""
    rng = np.random.default_rng(2)
    feeds = {n: _bf16(rng, s) for n, s in shapes.items()}
    # opset 22: the first whose Conv takes bfloat16
    got = _run(_model(nodes, shapes, TensorProto.BFLOAT16, opset=22), feeds)
    wide = {n: a.astype(np.float64) for n, a in feeds.items()}
    if exact is None:  # Conv: onnx.reference in float64
        conv = _model(nodes, shapes, TensorProto.DOUBLE, opset=22)
        want64 = ReferenceEvaluator(conv).run(None, wide)[0]
    else:
        want64 = exact(wide)
    distance = _ulps(got, want64.astype(ml_dtypes.bfloat16))
    assert got.dtype == ml_dtypes.bfloat16
    assert distance.max() <= 1
    assert np.count_nonzero(distance) <= max(1, distance.size // 100)


@pytest.mark.parametrize("type_name", sorted(SIXTEEN_BIT))
@pytest.mark.parametrize("op_type", ["ReduceSum", "ReduceMean"])
@pytest.mark.parametrize(
    ("shape", "axis"),
    [([6, 1000], 1), ([1000, 12], 0), ([700, 1030], 0)],
    ids=["contiguous-rows", "register-columns", "streamed-columns"],
)
def test_16bit_sums_accumulate_wide_and_round_once(
    type_name: str, op_type: str, shape: list[int], axis: int
) -> None:
    """Each of the reduction kernel's three loop nests: within 1 ulp of the float64 sum rounded
    once, mostly equal. Accumulating in float16 missed 728 of 1024 column sums by up to 5."""
    elem, dtype = SIXTEEN_BIT[type_name]
    x = (np.random.default_rng(3).standard_normal(shape) + 0.5).astype(dtype)
    node = helper.make_node(op_type, ["x", "axes"], ["y"])
    model = _model([node], {"x": shape}, elem)
    model.graph.initializer.append(helper.make_tensor("axes", TensorProto.INT64, [1], [axis]))
    reduce = np.sum if op_type == "ReduceSum" else np.mean
    want = reduce(x.astype(np.float64), axis=axis, keepdims=True).astype(dtype)
    distance = _ulps(_run(model, {"x": x}), want)
    assert distance.max() <= 1
    assert np.count_nonzero(distance) <= max(1, distance.size // 100)


@pytest.mark.parametrize("type_name", sorted(SIXTEEN_BIT))
def test_16bit_layer_norm_follows_its_function_body(type_name: str) -> None:
    """LayerNormalization (stash_type float32): normalized in float32, rounded, then Mul by
    the scale and Add of the bias each rounded. The kernel computed in the 16-bit type (sums of
    1024 float16 values): 18622 of 65536 elements differed, one of them by 10240 ulps."""
    elem, dtype = SIXTEEN_BIT[type_name]
    rng = np.random.default_rng(4)
    shape = [64, 1024]
    x = (rng.standard_normal(shape) + 0.5).astype(dtype)
    scale, bias = (rng.standard_normal(shape[1:]).astype(dtype) for _ in range(2))
    node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=-1)
    model = _model([node], {"x": shape, "scale": shape[1:], "bias": shape[1:]}, elem)
    got = _run(model, {"x": x, "scale": scale, "bias": bias}).astype(np.float64)

    wide = x.astype(np.float32)
    centered = wide - wide.mean(axis=-1, keepdims=True)
    variance = (centered * centered).mean(axis=-1, keepdims=True)
    normalized = (centered / np.sqrt(variance + np.float32(1e-5))).astype(dtype)
    product = (normalized.astype(np.float64) * scale.astype(np.float64)).astype(dtype)
    want = (product.astype(np.float64) + bias.astype(np.float64)).astype(dtype)
    # float32 statistics summed in another order may round `normalized` to the neighbouring
    # value, which moves the product and the sum by about an ulp each: allow two ulps of the
    # larger addend on a few elements (8 of 65536 differ here, by at most 1.4 ulps).
    bits = 11 if type_name == "float16" else 8
    addend = np.maximum(np.abs(product.astype(np.float64)), np.abs(bias.astype(np.float64)))
    error = np.abs(got - want.astype(np.float64))
    assert (error <= addend * 2.0 ** (2 - bits)).all()
    assert np.count_nonzero(error) <= got.size // 1000


def _float64_gemm_model() -> onnx.ModelProto:
    """float64 MatMul/Gemm in each GEMM variant: a constant B packed in panels with an N tail,
    a run-time B whose K is blocked (copied to scratch per block), a batched product, Gemm with
    alpha and a run-time C scaled by beta, and a bias + residual + Relu epilogue."""
    rng = np.random.default_rng(5)
    weights = {"w": rng.standard_normal((40, 21)), "w2": rng.standard_normal((300, 19))}
    nodes = [
        helper.make_node("MatMul", ["a", "w"], ["packed"]),
        helper.make_node("MatMul", ["a3", "b3"], ["blocked"]),
        helper.make_node("MatMul", ["x", "y"], ["batched"]),
        helper.make_node("Gemm", ["a", "g", "c"], ["gemm"], alpha=0.5, beta=2.0, transB=1),
        helper.make_node("MatMul", ["a3", "w2"], ["t"]),
        helper.make_node("Add", ["t", "r"], ["t2"]),
        helper.make_node("Relu", ["t2"], ["epilogue"]),
    ]
    inputs = {
        "a": [9, 40],
        "a3": [5, 300],
        "b3": [300, 37],
        "x": [2, 3, 6, 10],
        "y": [2, 3, 10, 7],
        "g": [13, 40],
        "c": [9, 13],
        "r": [5, 19],
    }
    outputs = ["packed", "blocked", "batched", "gemm", "epilogue"]
    graph = helper.make_graph(
        nodes,
        "float64_gemm",
        [helper.make_tensor_value_info(n, TensorProto.DOUBLE, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.DOUBLE, None) for n in outputs],
        [onnx.numpy_helper.from_array(a, n) for n, a in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


@pytest.mark.parametrize("target_name", ["host", "avx2"])
def test_float64_gemm_computes_in_float64(target_name: str) -> None:
    """float64 MatMul/Gemm run a float64 GEMM (8 lanes a zmm, 4 a ymm), not float32 widened
    (which was refused: float32 would round every operand, ~1e-7 relative)."""
    if target_name == "avx2" and not llvm.get_host_cpu_features().get("avx2"):
        pytest.skip("the host cannot run AVX2 code")
    target = host_target(1) if target_name == "host" else named_target("x86-64-v3", 1)
    model = _float64_gemm_model()
    rng = np.random.default_rng(6)
    feeds = {
        i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim])
        for i in model.graph.input
    }
    got = ember.compile(model, target=target).run(feeds)
    want = dict(
        zip([o.name for o in model.graph.output], ReferenceEvaluator(model).run(None, feeds))
    )
    for name, expected in want.items():
        assert got[name].dtype == np.float64
        # float64 sums in another order: ~1e-15 relative; float32 would be ~1e-7.
        scale = np.max(np.abs(expected))
        assert np.max(np.abs(got[name] - expected)) <= 1e-13 * scale, name


def test_float16_rms_and_layer_norm_statistics_use_the_float32_stash_type() -> None:
    """RMSNormalization's body casts float16 x to float32 (stash_type 1) before x * x: computed
    in float16, |x| > 256 overflowed and every output was 0 (onnx.reference still computes in
    float16; onnxruntime follows the body). LayerNormalization's Mean and InvStdDev outputs are
    float32 for float16 x (they were float16)."""
    elem = TensorProto.FLOAT16
    x = (np.random.default_rng(7).standard_normal((4, 64)) * 400).astype(np.float16)
    scale = np.random.default_rng(8).standard_normal(64).astype(np.float16)
    inputs = [
        helper.make_tensor_value_info("x", elem, [4, 64]),
        helper.make_tensor_value_info("s", elem, [64]),
    ]
    rms = helper.make_model(
        helper.make_graph(
            [helper.make_node("RMSNormalization", ["x", "s"], ["y"], axis=-1)],
            "rms",
            inputs,
            [helper.make_tensor_value_info("y", elem, None)],
        ),
        opset_imports=[helper.make_opsetid("", 23)],
    )
    layer = helper.make_model(
        helper.make_graph(
            [helper.make_node("LayerNormalization", ["x", "s"], ["y", "mean", "inv_std"])],
            "layer",
            inputs,
            [helper.make_tensor_value_info("y", elem, None)]
            + [
                helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                for n in ("mean", "inv_std")
            ],
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    feeds = {"x": x, "s": scale}
    for model in (rms, layer):
        model.ir_version = 9
        got = ember.compile(model).run(feeds)
        for name, want in onnxruntime_outputs(model, feeds).items():
            assert got[name].dtype == want.dtype, name
            # float16 y: 2 ulps (onnxruntime's statistics sum in another order); float32: 1e-5.
            rtol = 2e-3 if want.dtype == np.float16 else 1e-5
            np.testing.assert_allclose(
                got[name].astype(np.float64), want.astype(np.float64), rtol=rtol, atol=1e-3 * rtol
            )


@pytest.mark.parametrize(
    ("op_type", "exact"),
    [
        ("Sigmoid", lambda x: 1 / (1 + np.exp(-x))),
        ("Softplus", lambda x: np.log1p(np.exp(x))),
    ],
)
def test_float16_elementwise_op_rounds_once_not_per_step(op_type: str, exact) -> None:
    """A float16 elementwise op computes its steps in float32 and rounds its result once: in
    float16, Sigmoid's exp(-x) overflowed below x = -11 (0 instead of 6.1e-6, 255 ulps) and
    Softplus lost up to 4095 ulps. Within 1 ulp of the float64 result rounded once."""
    x = np.linspace(-12, 12, 4001).astype(np.float16)
    model = _model([helper.make_node(op_type, ["x"], ["y"])], {"x": [x.size]}, TensorProto.FLOAT16)
    got = _run(model, {"x": x})
    assert _ulps(got, exact(x.astype(np.float64)).astype(np.float16)).max() <= 1


@pytest.mark.parametrize("type_name", sorted(SIXTEEN_BIT))
def test_16bit_cumsum_accumulates_wide_and_rounds_each_output_once(type_name: str) -> None:
    """Each CumSum output within 1 ulp of the float64 prefix sum rounded once; a float16
    running sum was 7 ulps off after 2000 terms (onnxruntime accumulates in float32 too)."""
    elem, dtype = SIXTEEN_BIT[type_name]
    x = (np.random.default_rng(9).standard_normal((4, 2000)) + 0.3).astype(dtype)
    model = _model([helper.make_node("CumSum", ["x", "axis"], ["y"])], {"x": [4, 2000]}, elem)
    model.graph.initializer.append(helper.make_tensor("axis", TensorProto.INT64, [], [1]))
    want = np.cumsum(x.astype(np.float64), axis=1).astype(dtype)
    distance = _ulps(_run(model, {"x": x}), want)
    assert distance.max() <= 1
    assert np.count_nonzero(distance) <= distance.size // 100


@pytest.mark.parametrize(
    ("op_type", "attrs"),
    [
        ("Elu", {}),
        ("Selu", {}),
        ("HardSigmoid", {}),
        ("HardSwish", {}),
        ("Mish", {}),
        ("Gelu", {}),
        ("Gelu", {"approximate": "tanh"}),
    ],
)
def test_float16_function_activations_compute_in_float32_like_onnxruntime(
    op_type: str, attrs: dict
) -> None:
    """Activations ONNX defines as function bodies compute a float16 input in float32 and
    round once, as onnxruntime does (Celu did already). Rounding every step of the body to
    float16 gave Gelu(-3.67) = -0.0 instead of -0.000445 and Selu/Mish several ulps off.
    Equal to onnxruntime's float16 result, within 1 ulp; Gelu's erf tail (x < -3, where
    1 + erf cancels in float32) within 1e-6 absolute."""
    rng = np.random.default_rng(0)
    x = np.r_[np.linspace(-8, 8, 1025), rng.normal(0, 3, 1000), -3.67].astype(np.float16)
    node = helper.make_node(op_type, ["x"], ["y"], **attrs)
    model = _model([node], {"x": [x.size]}, TensorProto.FLOAT16, opset=22)
    got = _run(model, {"x": x})
    want = onnxruntime_outputs(model, {"x": x})["y"]
    if op_type == "Gelu":
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-3, atol=1e-6)
        assert got[-1] < 0 and _ulps(got[-1:], want[-1:]).max() <= 1  # Gelu(-3.67) ~ -0.000445
    else:
        assert _ulps(got, want).max() <= 1
