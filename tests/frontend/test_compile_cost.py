"""Compile cost does not grow with tensor values.

Tile, Expand, ConstantOfShape, Range and constant Pad each lower to a fixed number of kernels
whatever their repeats, shapes, limits or pad widths: the tests count the ops of the program
lowered to loops (never wall-clock time) for small and huge values and require them equal.
Constant folding leaves results above `FOLD_LIMIT_BYTES` to run-time kernels, a tensor larger
than the memory limit is refused with ResourceLimitError, and no kernel call takes more
buffers than LLVM can select (it aborts the process past 65535 operands). Values are compared
with onnxruntime where they fit in memory: data movement and fills exactly, float Range with
the float64 formula rounded once (onnxruntime accumulates, and drifts by millions at 2e7).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import ember
from ember.codegen import build
from ember.core import limits
from ember.core.target import host_target
from ember.dialects import kernel
from ember.engine.compile import Program, compile_program
from ember.frontend import onnx_importer
from ember.runtime.errors import ResourceLimitError

F, I32, I64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64
n = helper.make_node


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[tuple[str, int, list[int]]],
    outputs: list[tuple[str, int, list[int]]],
    constants: dict[str, np.ndarray],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "values",
        [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def _lowered(model: onnx.ModelProto) -> Program:
    return compile_program(model, host_target(1))


def _ops(program: Program) -> int:
    return sum(1 for _ in program.module.walk())


def _calls(program: Program) -> int:
    return sum(1 for op in program.module.walk() if op.name == "func.call")


def _max_call_operands(program: Program) -> int:
    return max(len(op.operands) for op in program.module.walk() if op.name == "func.call")


def _onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _tile(shape: list[int], repeats: list[int]) -> onnx.ModelProto:
    out = [d * r for d, r in zip(shape, repeats, strict=True)]
    return _model(
        [n("Tile", ["x", "repeats"], ["y"])],
        [("x", F, shape)],
        [("y", F, out)],
        {"repeats": np.array(repeats, np.int64)},
    )


# -- Tile ------------------------------------------------------------------------------------------


def test_tile_lowers_to_the_same_program_whatever_the_repeats() -> None:
    # (Repeats distinct from the input's dims: equal sizes would share one index constant.)
    one_axis = {r: _ops(_lowered(_tile([2, 3], [1, r]))) for r in (5, 20000, 200000)}
    assert len(set(one_axis.values())) == 1, one_axis
    two_axes = {r: _ops(_lowered(_tile([2, 3], [r, 3 * r]))) for r in (5, 300)}
    assert len(set(two_axes.values())) == 1, two_axes
    # One broadcast copy: a handful of ops, not one per repeat.
    assert one_axis[200000] < 50


def test_tile_matches_onnxruntime() -> None:
    model = _model(
        [
            n("Tile", ["x", "wide"], ["wide_out"]),
            n("Tile", ["x", "wider"], ["wider_out"]),
            n("Tile", ["x3", "mixed"], ["mixed_out"]),
            n("Tile", ["k", "mixed"], ["int_out"]),
        ],
        [("x", F, [2, 3]), ("x3", F, [2, 1, 5]), ("k", I64, [2, 1, 5])],
        [
            ("wide_out", F, [2, 60000]),
            ("wider_out", F, [2, 600000]),
            ("mixed_out", F, [6, 1, 10]),
            ("int_out", I64, [6, 1, 10]),
        ],
        {
            "wide": np.array([1, 20000], np.int64),
            "wider": np.array([1, 200000], np.int64),
            "mixed": np.array([3, 1, 2], np.int64),
        },
    )
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((2, 3)).astype(np.float32),
        "x3": rng.standard_normal((2, 1, 5)).astype(np.float32),
        "k": rng.integers(-9, 9, (2, 1, 5)),
    }
    got = ember.compile(model, threads=1).run(feeds)
    for name, want in zip(
        ["wide_out", "wider_out", "mixed_out", "int_out"], _onnxruntime(model, feeds)
    ):
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def test_tile_of_a_constant_beyond_the_fold_limit_runs_as_a_kernel(monkeypatch) -> None:
    monkeypatch.setattr(limits, "FOLD_LIMIT_BYTES", 1024)
    model = _model(
        [n("Tile", ["c", "repeats"], ["t"]), n("Add", ["t", "x"], ["y"])],
        [("x", F, [1])],
        [("y", F, [3, 4000])],
        {"c": np.arange(6, dtype=np.float32).reshape(3, 2), "repeats": np.array([1, 2000])},
    )
    program = _lowered(model)
    assert program.report.weights_bytes < 1024
    x = np.array([0.5], np.float32)
    np.testing.assert_array_equal(
        ember.compile(model, threads=1)(x)[0], _onnxruntime(model, {"x": x})[0]
    )


def test_a_tile_too_big_for_memory_is_refused_naming_the_node(monkeypatch) -> None:
    monkeypatch.setenv("EMBER_MEMORY_LIMIT", "16G")
    with pytest.raises(
        ResourceLimitError, match=r"Tile node 'y'.*\[200000, 750000\].*600,000,000,000 bytes"
    ):
        _lowered(_tile([2, 3], [100000, 250000]))


# -- ConstantOfShape, Expand, Pad --------------------------------------------------------------------


def _filled(size: int) -> onnx.ModelProto:
    fill = numpy_helper.from_array(np.array([1.5], np.float32))
    return _model(
        [n("ConstantOfShape", ["shape"], ["c"], value=fill), n("Add", ["c", "x"], ["y"])],
        [("x", F, [1])],
        [("y", F, [size])],
        {"shape": np.array([size], np.int64)},
    )


def test_constant_of_shape_of_2_to_the_32_is_a_fill_kernel(monkeypatch) -> None:
    monkeypatch.setenv("EMBER_MEMORY_LIMIT", "64G")
    huge, folded_limit = _lowered(_filled(2**32)), _lowered(_filled(2**25))
    assert huge.report.weights_bytes < 1024
    assert _ops(huge) == _ops(folded_limit)


def test_a_fill_that_only_becomes_a_weight_still_folds(monkeypatch) -> None:
    """The light models' fully connected weights are ConstantOfShape fills of 150-400 MB:
    as weights they fold (up to WEIGHT_FOLD_LIMIT_BYTES) and the matmul packs them."""
    monkeypatch.setattr(limits, "FOLD_LIMIT_BYTES", 1024)
    fill = numpy_helper.from_array(np.array([0.5], np.float32))

    def fill_then(nodes: list[onnx.NodeProto], outputs: list[tuple[str, int, list[int]]]):
        return _model(
            [n("ConstantOfShape", ["shape"], ["w"], value=fill), *nodes],
            [("x", F, [2, 64])],
            outputs,
            {"shape": np.array([32, 64], np.int64)},
        )

    weight = fill_then([n("Gemm", ["x", "w"], ["y"], transB=1)], [("y", F, [2, 32])])
    assert _lowered(weight).report.weights_bytes >= 32 * 64 * 4  # packed for the matmul
    not_only_weight = fill_then(
        [n("Gemm", ["x", "w"], ["y"], transB=1), n("Add", ["w", "w"], ["twice"])],
        [("y", F, [2, 32]), ("twice", F, [32, 64])],
    )
    assert _lowered(not_only_weight).report.weights_bytes < 1024
    x = np.random.default_rng(4).standard_normal((2, 64)).astype(np.float32)
    for model in (weight, not_only_weight):
        got = ember.compile(model, threads=1).run({"x": x})
        for name, want in zip(got, _onnxruntime(model, {"x": x})):
            np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_constant_of_shape_larger_than_memory_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("EMBER_MEMORY_LIMIT", "8G")
    with pytest.raises(ResourceLimitError, match=r"ConstantOfShape.*'c'.*17,179,869,184 bytes"):
        _lowered(_filled(2**32))


def test_fill_expand_and_pad_beyond_the_fold_limit_match_onnxruntime(monkeypatch) -> None:
    monkeypatch.setattr(limits, "FOLD_LIMIT_BYTES", 4096)
    fill = numpy_helper.from_array(np.array([7], np.int32))
    wide = 3000
    model = _model(
        [
            n("ConstantOfShape", ["shape"], ["ints"], value=fill),
            n("Expand", ["column", "shape2"], ["expanded"]),
            n("Pad", ["x", "pads", "value"], ["padded"], mode="constant"),
        ],
        [("x", F, [2, 3])],
        [("ints", I32, [5, wide]), ("expanded", F, [3, wide]), ("padded", F, [2, 3 + 2 * wide])],
        {
            "shape": np.array([5, wide], np.int64),
            "column": np.array([[1.0], [-2.0], [3.5]], np.float32),
            "shape2": np.array([3, wide], np.int64),
            "pads": np.array([0, wide, 0, wide], np.int64),
            "value": np.array(-1.25, np.float32),
        },
    )
    assert _lowered(model).report.weights_bytes < 4096
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    got = ember.compile(model, threads=1).run({"x": x})
    for name, want in zip(["ints", "expanded", "padded"], _onnxruntime(model, {"x": x})):
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def test_expand_and_pad_lower_to_the_same_program_whatever_the_size(monkeypatch) -> None:
    monkeypatch.setenv("EMBER_MEMORY_LIMIT", "1T")

    def expand_and_pad(size: int) -> onnx.ModelProto:
        return _model(
            [
                n("Expand", ["x", "shape"], ["expanded"]),
                n("Pad", ["x", "pads"], ["padded"], mode="constant"),
            ],
            [("x", F, [4, 1])],
            [("expanded", F, [4, size]), ("padded", F, [4, 1 + 2 * size])],
            {"shape": np.array([4, size], np.int64), "pads": np.array([0, size, 0, size])},
        )

    small, huge = _lowered(expand_and_pad(2**24)), _lowered(expand_and_pad(2**34))
    assert _ops(small) == _ops(huge)
    assert huge.report.weights_bytes < 1024


def test_eye_like_beyond_the_fold_limit_is_computed_at_run_time(monkeypatch) -> None:
    monkeypatch.setattr(limits, "FOLD_LIMIT_BYTES", 1024)
    model = _model(
        [
            n("EyeLike", ["x"], ["eye"], k=3),
            n("EyeLike", ["x"], ["ints"], k=-40, dtype=I32),
        ],
        [("x", F, [50, 70])],
        [("eye", F, [50, 70]), ("ints", I32, [50, 70])],
        {},
    )
    # Only the row and column numbers may fold (3500 bytes of one eye would not).
    assert _lowered(model).report.weights_bytes <= 2 * (50 + 70) * 8 + 4 * 64
    x = np.zeros((50, 70), np.float32)
    got = ember.compile(model, threads=1).run({"x": x})
    for name, want in zip(["eye", "ints"], _onnxruntime(model, {"x": x})):
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def _wide_pads(wide: int, reflect: bool = True) -> onnx.ModelProto:
    pads = np.array([1, wide, 2, wide + 5], np.int64)
    nodes = [
        n("Pad", ["x", "pads"], ["edge"], mode="edge"),
        n("Pad", ["x", "pads"], ["wrap"], mode="wrap"),
    ]
    inputs = [("x", F, [2, 3])]
    outputs = [("edge", F, [5, 3 + 2 * wide + 5]), ("wrap", F, [5, 3 + 2 * wide + 5])]
    if reflect:
        nodes.append(n("Pad", ["column", "pads"], ["reflect"], mode="reflect"))
        inputs.append(("column", F, [3, 1]))
        outputs.append(("reflect", F, [6, 1 + 2 * wide + 5]))
    return _model(nodes, inputs, outputs, {"pads": pads})


def test_edge_wrap_and_reflect_pads_wider_than_the_input_need_no_index_tables() -> None:
    programs = {wide: _lowered(_wide_pads(wide)) for wide in (100000, 10**7)}
    assert len({_ops(p) for p in programs.values()}) == 1
    assert programs[10**7].report.weights_bytes < 1024
    model = _wide_pads(1000)
    rng = np.random.default_rng(5)
    feeds = {
        "x": rng.standard_normal((2, 3)).astype(np.float32),
        "column": rng.standard_normal((3, 1)).astype(np.float32),
    }
    got = ember.compile(model, threads=1).run(feeds)
    # onnxruntime refuses to reflect an axis of one element; ONNX's reference repeats it.
    expected = ReferenceEvaluator(model).run(None, feeds)
    edge, wrap = _onnxruntime(_wide_pads(1000, reflect=False), {"x": feeds["x"]})
    for name, want in zip(["edge", "wrap", "reflect"], [edge, wrap, expected[2]]):
        np.testing.assert_array_equal(got[name], want, err_msg=name)


# -- Range -------------------------------------------------------------------------------------------


def _range(start: float, limit: float, delta: float, dtype: type, count: int) -> onnx.ModelProto:
    tensor_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    bounds = {k: np.array(v, dtype) for k, v in zip(("s", "l", "d"), (start, limit, delta))}
    return _model(
        [n("Range", ["s", "l", "d"], ["r"]), n("Add", ["r", "x"], ["y"])],
        [("x", tensor_type, [1])],
        [("y", tensor_type, [count])],
        bounds,
    )


def test_range_lowers_to_the_same_program_whatever_the_limit(monkeypatch) -> None:
    monkeypatch.setenv("EMBER_MEMORY_LIMIT", "1T")
    counts = {
        limit: _ops(_lowered(_range(0, limit, 1, np.int64, limit))) for limit in (2**25, 2**36)
    }
    assert len(set(counts.values())) == 1, counts


def test_long_ranges_match_onnxruntime_and_the_exact_formula(monkeypatch) -> None:
    monkeypatch.setattr(limits, "FOLD_LIMIT_BYTES", 4096)  # a range kernel at small sizes
    count = 100003
    ints = _range(-7, -7 + 3 * count, 3, np.int32, count)
    assert _lowered(ints).report.weights_bytes < 4096
    x = np.array([2], np.int32)
    (got,) = ember.compile(ints, threads=1)(x)
    np.testing.assert_array_equal(got, _onnxruntime(ints, {"x": x})[0])

    # Values past 2^24, where float32 rounds: start + i * delta in float64, rounded once.
    floats = _range(3e7, 3e7 + 0.75 * 100000, 0.75, np.float32, 100000)
    (got,) = ember.compile(floats, threads=1)(np.zeros(1, np.float32))
    exact = (np.arange(100000) * 0.75 + 3e7).astype(np.float32)
    np.testing.assert_array_equal(got, exact)


def test_short_ranges_fold_and_match_onnxruntime() -> None:
    for bounds, dtype in [((3, -50, -3), np.int32), ((0.5, 100.3, 0.7), np.float32)]:
        count = len(np.arange(*bounds))
        model = _range(*bounds, dtype, count)
        assert _lowered(model).report.weights_bytes > 0  # folded into a constant
        x = np.zeros(1, dtype)
        (got,) = ember.compile(model, threads=1)(x)
        np.testing.assert_allclose(got, _onnxruntime(model, {"x": x})[0], rtol=1e-5)


# -- Resize ----------------------------------------------------------------------------------------


def _downsample(width: int) -> onnx.ModelProto:
    return _model(
        [n("Resize", ["x", "", "", "sizes"], ["y"], mode="linear", antialias=1)],
        [("x", F, [1, 2, 3, width])],
        [("y", F, [1, 2, 3, 7])],
        {"sizes": np.array([1, 2, 3, 7], np.int64)},
    )


def test_antialiased_downsampling_costs_the_same_ops_whatever_the_ratio() -> None:
    # Taps per output grow with the ratio (2 * width / 7 here): they are one gather, not many.
    programs = {width: _lowered(_downsample(width)) for width in (700, 7000)}
    calls = {width: _calls(p) for width, p in programs.items()}
    assert len(set(calls.values())) == 1 and calls[7000] < 10, calls
    # (The kernels' loops differ a little with the tap count: a tail here, an unroll there.)
    assert max(_ops(p) for p in programs.values()) < 200
    model = _downsample(7000)
    x = np.random.default_rng(3).standard_normal((1, 2, 3, 7000)).astype(np.float32)
    (got,) = ember.compile(model, threads=1)(x)
    np.testing.assert_allclose(got, _onnxruntime(model, {"x": x})[0], rtol=1e-4, atol=1e-5)


# -- ONNX's own shape inference ------------------------------------------------------------------------


def test_onnx_data_propagation_never_sees_large_tensors(monkeypatch) -> None:
    """ONNX's data propagation stores every value it follows (~1 us each): with the Range
    in the graph it would spend a second here, minutes on 10^9 elements."""
    real = onnx.shape_inference.infer_shapes
    propagated: list[onnx.ModelProto] = []

    def recording(model: onnx.ModelProto, *args: object, **kwargs: object) -> onnx.ModelProto:
        if kwargs.get("data_prop"):
            propagated.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", recording)
    count = 10**6
    onnx_importer.import_onnx(_range(0, count, 1, np.int64, count))
    assert propagated and all(node.op_type != "Range" for node in propagated[0].graph.node)


# -- Operands per kernel call ----------------------------------------------------------------------------


def test_wide_concats_and_sums_stay_under_the_operand_limit(monkeypatch) -> None:
    monkeypatch.setattr(kernel, "MAX_OPERANDS", 8)
    names = [f"x{k}" for k in range(20)]
    model = _model(
        [n("Concat", names, ["cat"], axis=1), n("Sum", names, ["total"])],
        [(name, F, [2, 3]) for name in names],
        [("cat", F, [2, 60]), ("total", F, [2, 3])],
        {},
    )
    assert _max_call_operands(_lowered(model)) <= 8
    rng = np.random.default_rng(2)
    feeds = {name: rng.standard_normal((2, 3)).astype(np.float32) for name in names}
    got = ember.compile(model, threads=1).run(feeds)
    cat, total = _onnxruntime(model, feeds)
    np.testing.assert_array_equal(got["cat"], cat)
    np.testing.assert_allclose(got["total"], total, rtol=1e-5, atol=1e-6)


def test_a_large_program_compiles_in_a_worker_even_with_one_job(monkeypatch) -> None:
    """An LLVM assertion aborts the process it runs in: with one job, only small programs
    compile in the caller's process."""
    real = build._compile_unit_uncollected

    def crash(job: build._Job, unit: build.UnitPlan) -> build.CompiledUnit:
        if not unit.is_entry:
            build.os._exit(134)  # what an LLVM assertion looks like from the parent
        return real(job, unit)

    monkeypatch.setattr(build, "_compile_unit_uncollected", crash)
    monkeypatch.setattr(build, "SMALL_PROGRAM_OPS", 0)
    monkeypatch.setenv("EMBER_JOBS", "1")
    with pytest.raises(RuntimeError, match="worker process died"):
        ember.compile(_tile([2, 3], [1, 4]), threads=1)
