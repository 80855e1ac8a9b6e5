"""The per-run path of an Executable: what it works out once and reuses must never leak between
runs (outputs, the status record) nor weaken a check (names, dtypes, shapes, layouts)."""

from __future__ import annotations

import ctypes
import functools
import types
from collections.abc import Callable

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.runtime.errors import InputError, KernelError
from ember.runtime.executable import ALIGNMENT, buffer_address, c_strides
from ember.tests.oracle import assert_close, onnxruntime_outputs

SHAPE = [2, 3, 4]


def two_output_model() -> onnx.ModelProto:
    """s = x + y, p = x * y (float32 [2, 3, 4]); and g = Gather(table, ids) with a checked
    index, so the program takes a status record."""
    tensor = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Add", ["x", "y"], ["s"]),
        helper.make_node("Mul", ["x", "y"], ["p"]),
        helper.make_node("Gather", ["table", "ids"], ["g"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "two_outputs",
        [
            tensor("x", TensorProto.FLOAT, SHAPE),
            tensor("y", TensorProto.FLOAT, SHAPE),
            tensor("table", TensorProto.FLOAT, [5, 3]),
            tensor("ids", TensorProto.INT64, [2]),
        ],
        [
            tensor("s", TensorProto.FLOAT, SHAPE),
            tensor("p", TensorProto.FLOAT, SHAPE),
            tensor("g", TensorProto.FLOAT, [2, 3]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@functools.cache
def compiled() -> ember.CompiledModel:
    model = ember.compile(two_output_model(), threads=1)
    assert isinstance(model, ember.CompiledModel)
    assert model.status_sites  # the Gather checks its indices
    return model


def feeds(seed: int, ids: tuple[int, int] = (0, 4)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal(SHAPE).astype(np.float32),
        "y": rng.standard_normal(SHAPE).astype(np.float32),
        "table": rng.standard_normal((5, 3)).astype(np.float32),
        "ids": np.array(ids, dtype=np.int64),
    }


def counting_entry(model: ember.CompiledModel, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the native entry's calls (the list grows by one per call)."""
    calls: list[int] = []
    entry: Callable[..., None] = model._entry

    def counted(*args: int) -> None:
        calls.append(1)
        entry(*args)

    monkeypatch.setattr(model, "_entry", counted)
    return calls


def test_outputs_are_fresh_disjoint_aligned_arrays_each_run() -> None:
    model = compiled()
    first_feeds, second_feeds = feeds(1), feeds(2)
    first = model.run(first_feeds)
    kept = {name: array.copy() for name, array in first.items()}
    second = model.run(second_feeds)
    for name in first:
        # The next run wrote elsewhere: what a caller kept is untouched.
        np.testing.assert_array_equal(first[name], kept[name], err_msg=name)
        assert not np.shares_memory(first[name], second[name]), name
    arrays = list(second.values())
    for i, array in enumerate(arrays):
        assert array.flags.c_contiguous and array.flags.writeable
        assert array.ctypes.data % ALIGNMENT == 0
        for other in arrays[i + 1 :]:
            assert not np.shares_memory(array, other)
    assert_close(second, onnxruntime_outputs(two_output_model(), second_feeds), rel=1e-6)


def test_wrong_shape_or_dtype_after_many_good_runs_raises_before_any_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = compiled()
    good = feeds(3)
    for _ in range(50):
        model.run(good)
    calls = counting_entry(model, monkeypatch)
    wrong_shape = dict(good, y=np.zeros([2, 4, 3], np.float32))
    with pytest.raises(
        InputError, match=r"input 'y': expected shape \[2, 3, 4\], given \[2, 4, 3\]"
    ):
        model.run(wrong_shape)
    wrong_dtype = dict(good, x=good["x"].astype(np.float64))
    with pytest.raises(InputError, match="input 'x': expected dtype float32, given float64"):
        model.run(wrong_dtype)
    with pytest.raises(InputError, match="expected dtype float32, given float64"):
        model.run(dict(good, x=good["x"].tolist()))  # a list reads as float64
    with pytest.raises(InputError, match=r"missing \['ids'\]"):
        model.run({k: v for k, v in good.items() if k != "ids"})
    with pytest.raises(InputError, match=r"unexpected \['z'\]"):
        model.run(dict(good, z=good["x"]))
    with pytest.raises(InputError, match="expected 4 inputs"):
        model(good["x"], good["y"])
    assert calls == []
    model.run(good)
    assert calls == [1]


def test_inputs_of_any_layout_give_the_same_answer() -> None:
    model = compiled()
    good = feeds(4)
    expected = model.run(good)
    read_only = {name: array.copy() for name, array in good.items()}
    for array in read_only.values():
        array.flags.writeable = False
    transposed = np.ascontiguousarray(good["x"].transpose(2, 1, 0)).transpose(2, 1, 0)
    strided = np.zeros([2, 6, 4], np.float32)
    strided[:, ::2] = good["y"]
    layouts = [
        read_only,
        dict(good, x=transposed),  # Fortran order
        dict(good, y=strided[:, ::2]),  # every other row
        dict(good, ids=np.array([[0], [4]], np.int64)[:, 0]),  # a column: stride 8 anyway
        types.MappingProxyType(good),  # any mapping, not only a dict
    ]
    for layout in layouts:
        actual = model.run(layout)  # type: ignore[arg-type]
        for name, value in expected.items():
            np.testing.assert_array_equal(actual[name], value, err_msg=name)
    assert [a.tolist() for a in model(*good.values())] == [a.tolist() for a in expected.values()]


def test_a_failed_run_leaves_the_reused_status_record_clean() -> None:
    """Each in-flight run reuses a workspace's record: after a bad run it is cleared, so the
    next good run passes and the next bad run reports its own value, not the last one."""
    model = compiled()
    for bad in (7, -9, 5):
        with pytest.raises(KernelError, match=f"index {bad} is out of range"):
            model.run(feeds(5, ids=(0, bad)))
        np.testing.assert_array_equal(model.run(feeds(5))["g"], feeds(5)["table"][[0, 4]])


def test_buffer_address_matches_numpy_for_every_kind_of_array() -> None:
    read_only = np.arange(6, dtype=np.float32)
    read_only.flags.writeable = False
    arrays = [
        np.arange(6, dtype=np.float32),
        np.zeros((), np.int64),
        np.zeros(3, bool),
        read_only,
        np.zeros(0, np.float32),
        np.zeros(4, ml_dtypes.bfloat16),  # exports no buffer format
        np.zeros(4, ml_dtypes.int4),
    ]
    for array in arrays:
        assert buffer_address(array) == array.ctypes.data, array.dtype
    assert ctypes.sizeof(ctypes.c_void_p) == 8


@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4), (1, 16), (4, 1, 1)])
def test_c_strides_are_numpys(shape: tuple[int, ...]) -> None:
    assert c_strides(shape, 4) == np.empty(shape, np.float32).strides


def test_batch_loop_outputs_are_fresh_for_every_batch_size() -> None:
    """A batch-polymorphic program keeps the output layout of the last batch size: a run of
    another size gets its own, and earlier outputs stay as they were."""
    tensor = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [tensor("x", TensorProto.FLOAT, ["batch", 8])],
        [tensor("y", TensorProto.FLOAT, ["batch", 8])],
    )
    model = ember.compile(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        compile_once=False,  # the batch loop (tests/e2e/test_compile_once.py: compiled once)
    )
    rng = np.random.default_rng(6)
    runs = []
    for batch in (2, 3, 2, 2):
        x = rng.standard_normal((batch, 8)).astype(np.float32)
        runs.append((x, model.run({"x": x})["y"]))
    # One batch-1 program served every size.
    assert model.compiles == 1  # type: ignore[union-attr]
    for x, y in runs:
        np.testing.assert_array_equal(y, np.maximum(x, 0))
    assert not np.shares_memory(runs[2][1], runs[3][1])
    with pytest.raises(InputError, match=r"input 'x': expected shape \[batch, 8\], given \[2, 9\]"):
        model.run({"x": np.zeros((2, 9), np.float32)})


def test_specializing_model_reuses_the_last_dispatch_only_for_the_same_shapes() -> None:
    """A run with the last run's shapes skips the shape checks and the cache lookup; any other
    shape goes through them (ranges, compile), and dtypes are checked on every run."""
    tensor = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [tensor("x", TensorProto.FLOAT, [2, "n"])],
        [tensor("y", TensorProto.FLOAT, [2, "n"])],
    )
    model = ember.compile(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        dynamic_dims={"n": (1, 8)},
        compile_once=False,  # the specialising dispatch (tests/e2e/test_compile_once.py)
    )
    rng = np.random.default_rng(7)
    for n in (3, 3, 5, 3, 5, 5):
        x = rng.standard_normal((2, n)).astype(np.float32)
        np.testing.assert_array_equal(model.run({"x": x})["y"], np.maximum(x, 0))
    assert model.compiles == 2  # type: ignore[union-attr]
    with pytest.raises(InputError, match="expected dtype float32, given float64"):
        model.run({"x": np.zeros((2, 5))})
    with pytest.raises(InputError, match="'n'"):
        model.run({"x": np.zeros((2, 9), np.float32)})  # outside dynamic_dims
