"""The thread team of one run (codegen/team.py): at 2 threads a model's entry starts one
libgomp team and its parallel regions are posted to it as jobs.

Outputs at 2 threads equal the 1-thread outputs (the same kernels, only who runs which chunk
changes) and onnxruntime's; hundreds of short runs, concurrent runs from Python threads and two
models in one process shake out races in the job protocol; a kernel error in the middle of a
run ends the team cleanly; an AOT artifact runs at 2 threads without the compiler.
"""

from __future__ import annotations

import ctypes
import re
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.codegen import team
from ember.codegen.jit import JitModule, emit_text
from ember.core.target import host_target
from ember.runtime.errors import KernelError
from ember.tests.codegen.util import parse
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tests.runtime.util import compile_model, run_without_compiler

# 32 x 40 x 40 floats: above the size below which kernels stay on one thread
# (flat_access.PARALLEL_MIN_ELEMENTS), so the convs and Adds are parallel regions.
CHANNELS, SIZE = 32, 40


def _init(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.2, name)


def mobilenet_like(blocks: int = 3, seed: int = 0) -> onnx.ModelProto:
    """Blocks of depthwise 3x3 conv -> Clip -> pointwise 1x1 conv -> residual Add (MobileNet's
    inverted residual without the expansion), then a global pool and a classifier: many short
    parallel regions with small serial kernels (pool, Gemm, Softmax) between and after them."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "x"
    for k in range(blocks):
        nodes += [
            helper.make_node(
                "Conv", [current, f"dw{k}", f"dwb{k}"], [f"d{k}"], group=CHANNELS, pads=[1] * 4
            ),
            helper.make_node("Clip", [f"d{k}", "lo", "hi"], [f"c{k}"]),
            helper.make_node("Conv", [f"c{k}", f"pw{k}", f"pwb{k}"], [f"p{k}"]),
            helper.make_node("Add", [f"p{k}", current], [f"r{k}"]),
        ]
        inits += [
            _init(rng, f"dw{k}", CHANNELS, 1, 3, 3),
            _init(rng, f"dwb{k}", CHANNELS),
            _init(rng, f"pw{k}", CHANNELS, CHANNELS, 1, 1),
            _init(rng, f"pwb{k}", CHANNELS),
        ]
        current = f"r{k}"
    nodes += [
        helper.make_node("GlobalAveragePool", [current], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    inits += [
        _init(rng, "fc", 10, CHANNELS),
        _init(rng, "fcb", 10),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
    ]
    graph = helper.make_graph(
        nodes,
        "mobilenet_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10]),
            helper.make_tensor_value_info(current, TensorProto.FLOAT, [1, CHANNELS, SIZE, SIZE]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def gather_between_matmuls() -> onnx.ModelProto:
    """An embedding lookup (its index check can fail) between parallel MatMuls: an error in
    the middle of a run at 2 threads, with parallel regions after it."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("MatMul", ["table", "w1"], ["projected"]),
        helper.make_node("Gather", ["projected", "ids"], ["rows"], axis=0, name="embedding"),
        helper.make_node("MatMul", ["rows", "w2"], ["mixed"]),
        helper.make_node("Relu", ["mixed"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "gather_between_matmuls",
        [
            helper.make_tensor_value_info("table", TensorProto.FLOAT, [512, 64]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, [1024]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1024, 64])],
        [_init(rng, "w1", 64, 64), _init(rng, "w2", 64, 64)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _feeds(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((1, CHANNELS, SIZE, SIZE)).astype(np.float32)}


def team_record(exe: ember.CompiledModel) -> ctypes.Array[ctypes.c_int64]:
    """The program's `ember_team` words (codegen/team.py), read after a run."""
    address = exe._keepalive.address(team.TEAM_SYMBOL)
    return (ctypes.c_int64 * team.TEAM_WORDS).from_address(address)


@pytest.fixture(scope="module")
def mobilenet() -> tuple[onnx.ModelProto, ember.CompiledModel, ember.CompiledModel]:
    model = mobilenet_like()
    return model, ember.compile(model, threads=1), ember.compile(model, threads=2)


def test_two_threads_equal_one_thread_and_onnxruntime(mobilenet) -> None:  # type: ignore[no-untyped-def]
    model, one, two = mobilenet
    feeds = _feeds()
    expected = one.run(feeds)
    got = two.run(feeds)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert_close(got, onnxruntime_outputs(model, feeds), rel=1e-4)


def test_hundreds_of_short_runs_and_concurrent_runs_stay_exact(mobilenet) -> None:  # type: ignore[no-untyped-def]
    """300 runs back to back (each a few dozen jobs), then 2 Python threads x 50 runs of one
    model: the second runs its regions on GOMP_parallel while the first owns the team."""
    _, one, two = mobilenet
    inputs = [_feeds(seed) for seed in range(4)]
    expected = [one.run(feeds) for feeds in inputs]
    record = team_record(two)
    for k in range(300):
        got = two.run(inputs[k % 4])
        # Every run had a team (its record says the run is over, and no owner is left) and
        # every worker that joined a job left it. (How many joined depends on the machine's
        # load: a worker woken late finds the jobs done.)
        assert record[team.JOB] == team.EXIT and record[team.OWNER] == 0
        assert record[team.JOINED] == record[team.LEFT]
        for name, value in expected[k % 4].items():
            if not np.array_equal(got[name], value):
                pytest.fail(f"run {k}: output '{name}' differs from the 1-thread run")
    problems: list[str] = []

    def worker(t: int) -> None:
        for k in range(50):
            got = two.run(inputs[(k + t) % 4])
            for name, value in expected[(k + t) % 4].items():
                if not np.array_equal(got[name], value):
                    problems.append(f"thread {t}, run {k}: output '{name}' differs")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not problems, problems[:5]


def test_two_models_in_one_process_each_keep_their_team(mobilenet) -> None:  # type: ignore[no-untyped-def]
    _, one, two = mobilenet
    other = gather_between_matmuls()
    other_two = ember.compile(other, threads=2)
    rng = np.random.default_rng(2)
    other_feeds = {
        "table": rng.standard_normal((512, 64)).astype(np.float32),
        "ids": rng.integers(-512, 512, 1024),
    }
    other_expected = ember.compile(other, threads=1).run(other_feeds)["out"]
    feeds = _feeds()
    expected = one.run(feeds)["probs"]
    for k in range(50):
        assert np.array_equal(two.run(feeds)["probs"], expected), f"run {k}"
        assert np.array_equal(other_two.run(other_feeds)["out"], other_expected), f"run {k}"


def test_a_kernel_error_mid_run_ends_the_team_and_the_next_run_is_right() -> None:
    model = gather_between_matmuls()
    exe = ember.compile(model, threads=2)
    rng = np.random.default_rng(3)
    feeds = {
        "table": rng.standard_normal((512, 64)).astype(np.float32),
        "ids": rng.integers(-512, 512, 1024),
    }
    expected = ember.compile(model, threads=1).run(feeds)["out"]
    assert_close(exe.run(feeds), onnxruntime_outputs(model, feeds), rel=1e-4)
    for k in range(20):
        bad = feeds["ids"].copy()
        bad[500] = 512 + k
        with pytest.raises(KernelError, match="index 5.. is out of range") as caught:
            exe.run({"table": feeds["table"], "ids": bad})
        assert caught.value.value == 512 + k and caught.value.node_name == "embedding"
        assert np.array_equal(exe.run(feeds)["out"], expected), f"good run after bad run {k}"


def test_aot_artifact_runs_its_team_without_the_compiler(tmp_path: Path, mobilenet) -> None:  # type: ignore[no-untyped-def]
    model, one, _ = mobilenet
    artifact = compile_model(model, tmp_path / "build", threads=2)
    feeds = _feeds(5)
    got = run_without_compiler(artifact, feeds, tmp_path)
    expected = one.run(feeds)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


T = "memref<64x8xf32>"
PROGRAM = f"""
func.func private @scale_1(%a: {T}, %b: {T}) {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %n = arith.constant 64 : index
  "scf.parallel"(%c0, %n, %c1) <{{operandSegmentSizes = array<i32: 1, 1, 1, 0>}}> ({{
  ^bb0(%i: index):
    %v = memref.load %a[%i, %c0] : {T}
    memref.store %v, %b[%i, %c0] : {T}
    scf.reduce
  }}) : (index, index, index) -> ()
  func.return
}}
func.func @main(%x: {T}, %y: {T}) attributes {{"ember.input_names" = ["x"]}} {{
  func.call @scale_1(%x, %y) : ({T}, {T}) -> ()
  func.return
}}
"""


def _function(text: str, name: str) -> str:
    """The definition of @"name" in printed LLVM IR."""
    found = re.search(rf'^define [^\n]*@"{re.escape(name)}"\(.*?^}}$', text, re.M | re.S)
    assert found is not None, f"no definition of {name}"
    return found.group(0)


def test_entry_launches_one_team_and_regions_post_jobs() -> None:
    text = emit_text(parse(PROGRAM), host_target(), "llvm-unoptimized")
    assert_filecheck(text, 'CHECK: @"ember_team" = {{(hidden )?}}global [32 x i64] zeroinitializer')
    # The entry: with threads > 1 and the team free, one GOMP_parallel for the whole run,
    # whose thread 0 runs the body and whose other threads wait for jobs; else the body.
    assert_filecheck(
        _function(text, "main"),
        """
        CHECK: load i32, {{.*}} @"ember_num_threads"
        CHECK: claim:
        CHECK: cmpxchg
        CHECK: call void @"GOMP_parallel"({{.*}} @"main.team"
        CHECK-NOT: GOMP_parallel
        CHECK: alone:
        CHECK-NEXT: call void @"main.body"
        """,
    )
    assert_filecheck(
        _function(text, "main.team"),
        """
        CHECK: call i32 @"omp_get_thread_num"()
        CHECK: call void @"main.body"
        CHECK: store atomic i64 -2, {{.*}} seq_cst
        CHECK: call void @"ember_team_worker"()
        """,
    )
    assert_filecheck(
        _function(text, "main.body"),
        """
        CHECK-NOT: GOMP_parallel
        CHECK: call void @"ember.scale_1"
        """,
    )
    # A region posts a job when its thread owns the team, else launches GOMP_parallel.
    assert_filecheck(
        _function(text, "ember_team_run"),
        """
        CHECK: call i64 @"pthread_self"()
        CHECK: br i1 %{{.*}}, label %"post", label %"gomp"
        CHECK: post:
        CHECK: load atomic {{.*}} seq_cst
        CHECK: gomp:
        CHECK-NEXT: call void @"GOMP_parallel"
        CHECK: nested:
        CHECK-NEXT: inttoptr
        CHECK-NEXT: call void %{{.*}}(ptr %{{.*}})
        CHECK: publish:
        CHECK: store atomic i64 %{{.*}} seq_cst
        CHECK: publish.if:
        CHECK-NEXT: getelementptr
        CHECK-NEXT: ptrtoint
        CHECK-NEXT: call i64 (i64, ...) @"syscall"(i64 202, i64 %{{.*}}, i64 129, i64 2147483647,
        CHECK: call void %{{.*}}(ptr %{{.*}})
        CHECK: store atomic i64 %{{.*}} seq_cst
        CHECK: wait:
        CHECK: load atomic {{.*}} seq_cst
        CHECK: load atomic {{.*}} seq_cst
        CHECK: spin:
        CHECK-NEXT: call void @"llvm.x86.sse2.pause"()
        CHECK: sleep:
        CHECK-NEXT: getelementptr
        CHECK-NEXT: store atomic i64 1, {{.*}} seq_cst
        CHECK: block:
        CHECK: call i64 (i64, ...) @"syscall"(i64 202, i64 %{{.*}}, i64 128,
        CHECK: woken:
        CHECK-NEXT: getelementptr
        CHECK-NEXT: store atomic i64 0, {{.*}} seq_cst
        """,
    )
    assert_filecheck(
        _function(text, "ember_team_worker"),
        """
        CHECK: atomicrmw add {{.*}} seq_cst
        CHECK: load atomic {{.*}} seq_cst
        CHECK: call void %{{.*}}(ptr %{{.*}})
        CHECK: leave:
        CHECK-NEXT: getelementptr
        CHECK-NEXT: atomicrmw add {{.*}} seq_cst
        CHECK: wake:
        CHECK-NEXT: getelementptr
        CHECK-NEXT: ptrtoint
        CHECK-NEXT: call i64 (i64, ...) @"syscall"(i64 202, i64 %{{.*}}, i64 129, i64 1, i64 0)
        CHECK: sleep:
        CHECK: atomicrmw add {{.*}} seq_cst
        CHECK: load atomic {{.*}} seq_cst
        CHECK: block:
        CHECK: call i64 (i64, ...) @"syscall"(i64 202, i64 %{{.*}}, i64 128,
        CHECK: woken:
        CHECK: atomicrmw sub {{.*}} seq_cst
        CHECK: call void @"llvm.x86.sse2.pause"()
        CHECK: call i32 @"sched_yield"()
        """,
    )
    assert_filecheck(
        _function(text, "ember.scale_1"),
        """
        CHECK-NOT: GOMP_parallel
        CHECK: call void @"ember_team_run"({{.*}} @"ember.scale_1__parallel_1"
        """,
    )


NESTED = """
func.func private @row(%a: memref<64x64xf32>, %b: memref<64x64xf32>, %i: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %n = arith.constant 64 : index
  "scf.parallel"(%c0, %n, %c1) <{operandSegmentSizes = array<i32: 1, 1, 1, 0>}> ({
  ^bb0(%j: index):
    %v = memref.load %a[%i, %j] : memref<64x64xf32>
    %w = arith.addf %v, %v : f32
    memref.store %w, %b[%i, %j] : memref<64x64xf32>
    scf.reduce
  }) : (index, index, index) -> ()
  func.return
}
func.func private @rows_1(%a: memref<64x64xf32>, %b: memref<64x64xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %n = arith.constant 64 : index
  "scf.parallel"(%c0, %n, %c1) <{operandSegmentSizes = array<i32: 1, 1, 1, 0>}> ({
  ^bb0(%i: index):
    func.call @row(%a, %b, %i) : (memref<64x64xf32>, memref<64x64xf32>, index) -> ()
    scf.reduce
  }) : (index, index, index) -> ()
  func.return
}
func.func @main(%x: memref<64x64xf32>, %y: memref<64x64xf32>)
    attributes {"ember.input_names" = ["x"]} {
  %c5 = arith.constant 5 : index
  func.call @rows_1(%x, %y) : (memref<64x64xf32>, memref<64x64xf32>) -> ()
  func.call @row(%y, %y, %c5) : (memref<64x64xf32>, memref<64x64xf32>, index) -> ()
  func.return
}
"""


def test_a_region_inside_a_job_runs_on_its_thread_alone() -> None:
    """A function with a region of its own called from a region's body: thread 0 meets it
    inside a job (it must not post a job then), a worker meets it outside the team."""
    jit = JitModule(parse(NESTED), host_target(), jobs=1, cache=False)
    jit.function("ember_set_num_threads", [ctypes.c_int32])(2)
    main = jit.function("main", [ctypes.c_void_p] * 2)
    x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    expected = 2 * x
    expected[5] *= 2
    for k in range(200):
        y = np.zeros_like(x)
        main(x.ctypes.data, y.ctypes.data)
        assert np.array_equal(y, expected), f"run {k}"


M = "memref<256x64xf32>"
SERIAL_GAPS = f"""
func.func private @plus_1(%a: {M}, %b: {M}) {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %rows = arith.constant 256 : index
  %cols = arith.constant 64 : index
  %one = arith.constant 1.0 : f32
  "scf.parallel"(%c0, %rows, %c1) <{{operandSegmentSizes = array<i32: 1, 1, 1, 0>}}> ({{
  ^bb0(%i: index):
    scf.for %j = %c0 to %cols step %c1 {{
      %v = memref.load %a[%i, %j] : {M}
      %w = arith.addf %v, %one : f32
      memref.store %w, %b[%i, %j] : {M}
    }}
    scf.reduce
  }}) : (index, index, index) -> ()
  func.return
}}
func.func private @halve_1(%a: {M}, %b: {M}) {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %rows = arith.constant 256 : index
  %cols = arith.constant 64 : index
  %chain = arith.constant 1000000 : index
  %half = arith.constant 0.5 : f32
  %one = arith.constant 1.0 : f32
  scf.for %i = %c0 to %rows step %c1 {{
    scf.for %j = %c0 to %cols step %c1 {{
      %v = memref.load %a[%i, %j] : {M}
      %w = arith.mulf %v, %half : f32
      memref.store %w, %b[%i, %j] : {M}
    }}
  }}
  // A dependent chain of 10^6 multiply-adds: about a millisecond on one thread.
  %first = memref.load %a[%c0, %c0] : {M}
  %r = scf.for %k = %c0 to %chain step %c1 iter_args(%x = %first) -> (f32) {{
    %y = arith.mulf %x, %half : f32
    %z = arith.addf %y, %one : f32
    scf.yield %z : f32
  }}
  memref.store %r, %b[%c0, %c0] : {M}
  func.return
}}
func.func @main(%x: {M}, %y: {M}, %t: {M}, %u: {M})
    attributes {{"ember.input_names" = ["x"]}} {{
  func.call @plus_1(%x, %t) : ({M}, {M}) -> ()
  func.call @halve_1(%t, %u) : ({M}, {M}) -> ()
  func.call @plus_1(%u, %t) : ({M}, {M}) -> ()
  func.call @halve_1(%t, %u) : ({M}, {M}) -> ()
  func.call @plus_1(%u, %y) : ({M}, {M}) -> ()
  func.return
}}
"""


def test_workers_asleep_between_jobs_are_woken_by_the_next_job() -> None:
    """Serial kernels long enough (about a millisecond) for the worker to go to sleep between
    the parallel ones: each post must wake it, and the run's end too (else it would hang)."""
    jit = JitModule(parse(SERIAL_GAPS), host_target(), jobs=1, cache=False)
    main = jit.function("main", [ctypes.c_void_p] * 4)
    x = np.random.default_rng(0).standard_normal((256, 64)).astype(np.float32)
    results = []
    for threads in (1, 2):
        jit.function("ember_set_num_threads", [ctypes.c_int32])(threads)
        for _ in range(1 if threads == 1 else 50):
            y, t, u = (np.zeros_like(x) for _ in range(3))
            main(x.ctypes.data, y.ctypes.data, t.ctypes.data, u.ctypes.data)
            results.append(y)
    for k, y in enumerate(results[1:]):
        assert np.array_equal(y, results[0]), f"run {k} at 2 threads"
