"""Indices out of range raise KernelError naming the ONNX op, its node and the value, like
onnxruntime refuses them, through ember.compile and through an AOT artifact in the thin runtime;
indices in range, negative ones included, give onnxruntime's answer (exact: data is only moved).
"""

from __future__ import annotations

import ctypes
import functools
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.runtime.errors import KernelError
from ember.tests.oracle import onnxruntime_outputs
from ember.tests.runtime.util import BLOCK_COMPILER_IMPORTS, compile_model

INT64_MIN, INT32_MIN, INT32_MAX = -(2**63), -(2**31), 2**31 - 1
# x is [4, 6]: which data dimension (and its size) each op's indices address.
ROWS, COLS = 4, 6


def indexing_model(index_type: int) -> onnx.ModelProto:
    """Every indexing op on one [4, 6] tensor, each with its own indices input.

    ONNX allows int32 indices for Gather, GatherElements and ScatterElements only.
    """
    i64 = index_type == TensorProto.INT64
    nodes = [
        helper.make_node("Gather", ["x", "g_i"], ["g"], axis=1, name="gather_node"),
        helper.make_node("GatherElements", ["x", "ge_i"], ["ge"], axis=0, name="ge_node"),
        helper.make_node("ScatterElements", ["x", "se_i", "se_u"], ["se"], axis=1, name="se_node"),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, COLS]),
        helper.make_tensor_value_info("g_i", index_type, [3]),
        helper.make_tensor_value_info("ge_i", index_type, [2, COLS]),
        helper.make_tensor_value_info("se_i", index_type, [ROWS, 2]),
        helper.make_tensor_value_info("se_u", TensorProto.FLOAT, [ROWS, 2]),
    ]
    outputs = [
        helper.make_tensor_value_info("g", TensorProto.FLOAT, [ROWS, 3]),
        helper.make_tensor_value_info("ge", TensorProto.FLOAT, [2, COLS]),
        helper.make_tensor_value_info("se", TensorProto.FLOAT, [ROWS, COLS]),
    ]
    if i64:
        nodes += [
            helper.make_node("GatherND", ["x", "gnd_i"], ["gnd"], name="gnd_node"),
            helper.make_node("ScatterND", ["x", "snd_i", "snd_u"], ["snd"], name="snd_node"),
            helper.make_node("OneHot", ["oh_i", "oh_d", "oh_v"], ["oh"], name="oh_node"),
        ]
        inputs += [
            helper.make_tensor_value_info("gnd_i", index_type, [2, 2]),
            helper.make_tensor_value_info("snd_i", index_type, [2, 1]),
            helper.make_tensor_value_info("snd_u", TensorProto.FLOAT, [2, COLS]),
            helper.make_tensor_value_info("oh_i", index_type, [5]),
        ]
        outputs += [
            helper.make_tensor_value_info("gnd", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("snd", TensorProto.FLOAT, [ROWS, COLS]),
            helper.make_tensor_value_info("oh", TensorProto.FLOAT, [5, 3]),
        ]
    initializers = [
        helper.make_tensor("oh_d", TensorProto.INT64, [1], [3]),
        helper.make_tensor("oh_v", TensorProto.FLOAT, [2], [-1.0, 2.0]),
    ]
    graph = helper.make_graph(nodes, "indexing", inputs, outputs, initializers if i64 else [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


def good_feeds(dtype: type) -> dict[str, np.ndarray]:
    """In-range indices, negative ones among them; no duplicate scatter targets."""
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((ROWS, COLS)).astype(np.float32),
        "g_i": np.array([-1, 0, 5], dtype),
        "ge_i": np.array([[-1, 0, 3, -4, 2, 1], [0, -2, -3, 3, 1, -1]], dtype),
        "se_i": np.array([[-1, 0], [1, 2], [-3, 4], [5, -5]], dtype),
        "se_u": rng.standard_normal((ROWS, 2)).astype(np.float32),
    }
    if dtype is np.int64:
        feeds |= {
            "gnd_i": np.array([[-1, -6], [3, 5]], dtype),
            "snd_i": np.array([[-4], [1]], dtype),
            "snd_u": rng.standard_normal((2, COLS)).astype(np.float32),
            "oh_i": np.array([0, 2, -1, -3, 1], dtype),
        }
    return feeds


# (input, flat position in it, ONNX op, node, data dimension, its size)
SITES = [
    ("g_i", 1, "Gather", "gather_node", 1, COLS),
    ("ge_i", 4, "GatherElements", "ge_node", 0, ROWS),
    ("se_i", 3, "ScatterElements", "se_node", 1, COLS),
    ("gnd_i", 0, "GatherND", "gnd_node", 0, ROWS),
    ("gnd_i", 3, "GatherND", "gnd_node", 1, COLS),
    ("snd_i", 1, "ScatterND", "snd_node", 0, ROWS),
]


def bad_values(size: int, dtype: type) -> list[int]:
    """Just past either end, and the extremes of the index type (2**40 for int64)."""
    if dtype is np.int32:
        return [size, -size - 1, INT32_MAX, INT32_MIN]
    return [size, -size - 1, 2**40, INT64_MIN]


def with_bad_index(dtype: type, name: str, position: int, value: int) -> dict[str, np.ndarray]:
    feeds = good_feeds(dtype)
    bad = feeds[name].copy()
    bad.reshape(-1)[position] = value
    feeds[name] = bad
    return feeds


@functools.cache
def compile_indexing_model(dtype: type) -> tuple[onnx.ModelProto, ember.CompiledModel]:
    model = indexing_model(TensorProto.INT64 if dtype is np.int64 else TensorProto.INT32)
    return model, ember.compile(model, threads=1)


@pytest.fixture(params=[np.int64, np.int32], ids=["int64", "int32"])
def compiled(request: pytest.FixtureRequest) -> tuple[type, onnx.ModelProto, ember.CompiledModel]:
    return request.param, *compile_indexing_model(request.param)


def cases(dtype: type) -> list[tuple[str, int, str, str, int, int, int]]:
    return [
        (*site, value)
        for site in SITES
        if dtype is np.int64 or site[0] in ("g_i", "ge_i", "se_i")
        for value in bad_values(site[5], dtype)
    ]


def test_in_range_indices_match_onnxruntime(compiled) -> None:  # type: ignore[no-untyped-def]
    dtype, model, exe = compiled
    feeds = good_feeds(dtype)
    expected = onnxruntime_outputs(model, feeds)
    actual = exe.run(feeds)
    for name, value in expected.items():
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


def test_out_of_range_indices_raise_naming_op_node_and_value(compiled) -> None:  # type: ignore[no-untyped-def]
    dtype, model, exe = compiled
    for name, position, op_type, node, dim, size, value in cases(dtype):
        feeds = with_bad_index(dtype, name, position, value)
        with pytest.raises(KernelError) as caught:
            exe.run(feeds)
        message = str(caught.value)
        assert f"{op_type} node '{node}'" in message, message
        assert f"index {value} is out of range for dimension {dim} of size {size}" in message
        assert f"valid indices are {-size}..{size - 1}" in message
        assert (caught.value.op_type, caught.value.node_name, caught.value.value) == (
            op_type,
            node,
            value,
        )
        # onnxruntime refuses the same input.
        with pytest.raises(Exception, match="(?i)out of|invalid ind"):
            onnxruntime_outputs(model, feeds)
    # A refused run leaves nothing behind: the next good run is right.
    feeds = good_feeds(dtype)
    np.testing.assert_array_equal(exe.run(feeds)["g"], onnxruntime_outputs(model, feeds)["g"])


def test_one_hot_out_of_range_is_an_all_off_row_like_onnxruntime() -> None:
    model, exe = compile_indexing_model(np.int64)
    feeds = good_feeds(np.int64)
    feeds["oh_i"] = np.array([3, -4, 2**40, INT64_MIN, -3], np.int64)
    expected = onnxruntime_outputs(model, feeds)["oh"]
    assert (expected[:4] == -1.0).all()  # onnxruntime: all `off`, no error
    np.testing.assert_array_equal(exe.run(feeds)["oh"], expected)


def test_nodes_sharing_one_kernel_are_told_apart() -> None:
    """Two identical Gathers compile to one kernel function; the error names the failing node."""
    nodes = [
        helper.make_node("Gather", ["x", "a"], ["ya"], axis=0, name="first_lookup"),
        helper.make_node("Gather", ["x", "b"], ["yb"], axis=0, name="second_lookup"),
    ]
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, [2]) for n in "ab"]
    graph = helper.make_graph(
        nodes,
        "two_lookups",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, COLS]), *ids],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, COLS]) for n in ("ya", "yb")],
    )
    exe = ember.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    sites = exe.manifest.extra["status_sites"]
    assert [s["node"] for s in sites] == ["first_lookup", "second_lookup"]
    assert sites[0]["kernel"] == sites[1]["kernel"]
    x = np.zeros((ROWS, COLS), np.float32)
    good = np.array([0, -1])
    for bad_input, node in (("a", "first_lookup"), ("b", "second_lookup")):
        feeds = {"x": x, "a": good, "b": good} | {bad_input: np.array([0, ROWS])}
        with pytest.raises(KernelError, match=f"Gather node '{node}'"):
            exe.run(feeds)


def stem_sharing_gathers(forward: bool) -> onnx.ModelProto:
    """Outputs `t_1` and `t_2` both reach the IR as `t` (xDSL drops `_<digits>`); `forward`
    adds an Identity whose output `t_3` is the input `x` itself (no op of its own)."""
    nodes = [
        helper.make_node("Gather", ["x", "a"], ["t_1"], axis=0, name="first_lookup"),
        helper.make_node("Gather", ["x", "b"], ["t_2"], axis=1, name="second_lookup"),
    ]
    outputs = [
        helper.make_tensor_value_info("t_1", TensorProto.FLOAT, [2, COLS]),
        helper.make_tensor_value_info("t_2", TensorProto.FLOAT, [ROWS, 2]),
    ]
    if forward:
        nodes.insert(0, helper.make_node("Identity", ["x"], ["t_3"], name="forward"))
        outputs.append(helper.make_tensor_value_info("t_3", TensorProto.FLOAT, [ROWS, COLS]))
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, [2]) for n in "ab"]
    graph = helper.make_graph(
        nodes,
        "ambiguous",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, COLS]), *ids],
        outputs,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_nodes_sharing_a_name_stem_are_named_by_their_order() -> None:
    """Two values named `t` for two outputs named `t_<k>`: the importer converts nodes in
    order, so the second value is the second node's (regression: they were left unnamed)."""
    exe = ember.compile(stem_sharing_gathers(forward=False))
    nodes = [s.get("node") for s in exe.manifest.extra["status_sites"]]
    assert nodes == ["first_lookup", "second_lookup"]
    x = np.zeros((ROWS, COLS), np.float32)
    feeds = {"x": x, "a": np.array([0, 1]), "b": np.array([0, COLS])}
    with pytest.raises(KernelError, match="Gather node 'second_lookup'"):
        exe.run(feeds)


def test_a_node_name_that_is_not_certain_is_not_given() -> None:
    """Three outputs named `t_<k>` but two values named `t` (Identity forwards `x`): which
    node a kernel came from is then unknown, and the error names the kernel only, never a
    guess."""
    exe = ember.compile(stem_sharing_gathers(forward=True))
    assert [s.get("node") for s in exe.manifest.extra["status_sites"]] == [None, None]
    x = np.zeros((ROWS, COLS), np.float32)
    feeds = {"x": x, "a": np.array([0, 1]), "b": np.array([0, COLS])}
    with pytest.raises(KernelError, match=r"^kernel gather_2: index 6 is out of range") as caught:
        exe.run(feeds)
    assert caught.value.node_name is None


def big_gather_model() -> onnx.ModelProto:
    """An embedding lookup big enough that its kernel runs on OpenMP threads."""
    table = helper.make_tensor_value_info("table", TensorProto.FLOAT, [1000, 64])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1024])
    out = helper.make_tensor_value_info("emb", TensorProto.FLOAT, [1024, 64])
    node = helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0, name="embedding")
    graph = helper.make_graph([node], "embedding", [table, ids], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_concurrent_runs_get_their_own_errors() -> None:
    """Python threads share one model; each bad run reports its own value, good runs are right.

    Every bad run has the bad id at both ends of the id list, so both OpenMP threads of the
    kernel fail at once: the record holds one of them, never a mix.
    """
    exe = ember.compile(big_gather_model(), threads=2)
    rng = np.random.default_rng(1)
    table = rng.standard_normal((1000, 64)).astype(np.float32)
    ids = rng.integers(-1000, 1000, 1024)
    expected = table[ids]
    problems: list[str] = []

    def worker(t: int) -> None:
        for k in range(40):
            if (k + t) % 2:
                got = exe.run({"table": table, "ids": ids})["emb"]
                if not np.array_equal(got, expected):
                    problems.append(f"thread {t}: good run {k} gave a wrong answer")
                continue
            bad = ids.copy()
            value = 1000 + 100 * t + k
            bad[0], bad[-1] = value, -value
            try:
                exe.run({"table": table, "ids": bad})
                problems.append(f"thread {t}: bad run {k} did not raise")
            except KernelError as error:
                if error.value not in (value, -value) or error.node_name != "embedding":
                    problems.append(f"thread {t}: run {k} with {value} reported: {error}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not problems, problems


_THIN_RUNTIME_SCRIPT = (
    BLOCK_COMPILER_IMPORTS
    + r"""
import json
import numpy as np
import ember.runtime
from ember.runtime.errors import KernelError

artifact, inputs, cases = sys.argv[1], np.load(sys.argv[2]), json.loads(sys.argv[3])
exe = ember.runtime.load(artifact)
errors = []
for case in cases:
    feeds = {k: inputs[f"{case}/{k}"] for k in exe.input_names}
    try:
        exe.run(feeds)
        errors.append(None)
    except KernelError as e:
        errors.append([str(e), e.op_type, e.node_name, e.value])
print(json.dumps(errors))
"""
)


def test_aot_artifact_raises_in_the_thin_runtime(tmp_path: Path) -> None:
    """The same errors from an artifact loaded where the compiler cannot be imported."""
    model = indexing_model(TensorProto.INT64)
    # A portable level: the artifact must load on whatever AVX2 machine runs the tests.
    artifact = compile_model(model, tmp_path, threads=1, cpu="x86-64-v3")
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert [s["node"] for s in manifest["extra"]["status_sites"]] == [
        "gather_node",
        "ge_node",
        "se_node",
        "gnd_node",
        "snd_node",
    ]
    chosen = [
        (SITES[k], bad_values(SITES[k][5], np.int64)[j]) for k, j in enumerate([0, 1, 2, 3, 1, 2])
    ]
    runs: dict[str, np.ndarray] = {}
    names = []
    for index, ((name, position, *_), value) in enumerate(chosen):
        for key, array in with_bad_index(np.int64, name, position, value).items():
            runs[f"bad{index}/{key}"] = array
        names.append(f"bad{index}")
    for key, array in good_feeds(np.int64).items():
        runs[f"good/{key}"] = array
    names.append("good")
    inputs = tmp_path / "runs.npz"
    np.savez(inputs, **runs)
    result = subprocess.run(
        [sys.executable, "-c", _THIN_RUNTIME_SCRIPT, str(artifact), str(inputs), json.dumps(names)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    reported = json.loads(result.stdout.splitlines()[-1])
    for ((_, _, op_type, node, dim, size), value), error in zip(chosen, reported):
        assert error is not None, f"{op_type} with index {value} did not raise"
        message, *fields = error
        assert fields == [op_type, node, value], message
        assert f"dimension {dim} of size {size}" in message
    assert reported[-1] is None  # and the good run after them runs


# -- debug mode: every memory access checked ---------------------------------------------------
def test_memory_checks_keep_answers_and_index_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """EMBER_CHECKS=1: every kernel reports through the record; answers do not change."""
    model = indexing_model(TensorProto.INT64)
    monkeypatch.setenv("EMBER_CHECKS", "1")
    exe = ember.compile(model, threads=1)
    kernels = [site["kernel"] for site in exe.manifest.extra["status_sites"]]
    assert "one_hot_1" in kernels, kernels  # not only the kernels that check indices
    feeds = good_feeds(np.int64)
    expected = onnxruntime_outputs(model, feeds)
    for name, value in exe.run(feeds).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    with pytest.raises(KernelError, match="GatherND node 'gnd_node'.* index 4 is out of range"):
        exe.run(with_bad_index(np.int64, "gnd_i", 0, 4))


def test_memory_checks_catch_an_access_past_the_end() -> None:
    """A kernel reading x[i + 1] for i < 8 on 8 elements: the debug mode reports the read of
    element 8 of argument 0 instead of performing it."""
    from xdsl.context import Context
    from xdsl.dialects import func
    from xdsl.dialects.builtin import ArrayAttr, MemRefType, ModuleOp, StringAttr, f32

    from ember.codegen.jit import JitModule
    from ember.core.target import host_target
    from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function
    from ember.passes.conversion.kernel_to_loops.checks import STATUS_TYPE
    from ember.passes.conversion.kernel_to_loops.lower import status_sites
    from ember.passes.program import STATUS_ROLE, append_argument, set_origin
    from ember.passes.transforms.check_memory import CheckMemoryAccesses
    from ember.runtime.status import check_status, new_status

    buffer = MemRefType(f32, [8])
    kernel, b = kernel_function("shift_1", [buffer, buffer])
    x, out = kernel.args

    def body(lb: LoopBuilder, i):  # type: ignore[no-untyped-def]
        lb.store(lb.load(x, [lb.add(i, 1)]), out, [i])

    b.for_range(0, 8, 1, body)
    b.ret()
    kernel.sym_visibility = StringAttr("private")
    entry, eb = kernel_function("main", [buffer, buffer])
    status = append_argument(entry, STATUS_TYPE, STATUS_ROLE)
    call = func.CallOp("shift_1", list(entry.args[:2]), [])
    set_origin(call, "Shift", "shift_node")
    eb.insert(call)
    eb.ret()
    entry.attributes["ember.input_names"] = ArrayAttr([StringAttr("x")])
    module = ModuleOp([entry, kernel])
    CheckMemoryAccesses().apply(Context(), module)
    module.verify()
    assert status in call.arguments

    jit = JitModule(module, host_target(1), cache=False)
    data, result, record = np.arange(8, dtype=np.float32), np.zeros(8, np.float32), new_status()
    jit.function("main", [ctypes.c_void_p] * 3)(
        data.ctypes.data, result.ctypes.data, record.ctypes.data
    )
    np.testing.assert_array_equal(result[:7], data[1:])  # the in-bounds reads are untouched
    with pytest.raises(KernelError) as caught:
        check_status(record, status_sites(entry) or [])
    message = str(caught.value)
    assert "Shift node 'shift_node' (kernel shift_1)" in message, message
    assert "element offset 8 of argument 0 of the kernel, which holds 8 elements" in message


# -- indices known at compile time ----------------------------------------------------------------
@pytest.mark.parametrize("site", SITES, ids=[f"{s[2]}-dim{s[4]}" for s in SITES])
@pytest.mark.parametrize("past", ["end", "start"])
def test_constant_out_of_range_indices_are_refused_at_compile_time(site, past: str) -> None:  # type: ignore[no-untyped-def]
    """Folding an op on constants refuses a bad index like its kernel does (numpy alone would
    wrap -7 into [0, 5) again, a silent wrong answer, or raise IndexError)."""
    name, position, op_type, _, dim, size = site
    value = size if past == "end" else -size - 1
    feeds = with_bad_index(np.int64, name, position, value)
    model = indexing_model(TensorProto.INT64)
    graph = model.graph
    node = next(n for n in graph.node if name in n.input)
    operands = [n for n in node.input if n not in ("oh_d", "oh_v")]
    constants = [numpy_helper.from_array(feeds[n], n) for n in operands]
    result = next(o for o in graph.output if o.name == node.output[0])
    passthrough = helper.make_tensor_value_info("x2", TensorProto.FLOAT, [ROWS, COLS])
    folded = helper.make_graph(
        [node, helper.make_node("Identity", ["x2"], ["y2"])],
        "folded",
        [passthrough],
        [result, helper.make_tensor_value_info("y2", TensorProto.FLOAT, [ROWS, COLS])],
        constants,
    )
    model = helper.make_model(folded, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ember.ModelError, match=rf"{op_type}: constant index {value} is out of "):
        ember.compile(model)
