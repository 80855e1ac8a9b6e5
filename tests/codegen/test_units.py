"""Per-kernel compilation units, the parallel build and the object cache.

A small program shaped like a lowered model (an entry function marked `ember.input_names`
calling private kernels; one kernel has a parallel loop and a private helper, one uses the
exp approximation) is compiled in several ways whose results must be bitwise equal: one unit
for the whole module (the entry mark removed), per-kernel units serially and in worker
processes, from the cache, and as a shared library in a process without llvmlite.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from ember.codegen import build
from ember.codegen.jit import JitModule, emit_object, emit_objects, emit_text, link_shared_library
from ember.codegen.objcache import ObjectCache
from ember.codegen.units import emit_unit, partition
from ember.core.target import host_target
from ember.tests.codegen.util import parse

TARGET = host_target()
VW = TARGET.vector_width
ROWS = 64
T = f"memref<{ROWS}x{VW}xf32>"
V = f"vector<{VW}xf32>"

PROGRAM = f"""
func.func private @twice(%v: {V}) -> {V} {{
  %r = arith.addf %v, %v : {V}
  func.return %r : {V}
}}
func.func private @scale_1(%a: {T}, %b: {T}) {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %n = arith.constant {ROWS} : index
  "scf.parallel"(%c0, %n, %c1) <{{operandSegmentSizes = array<i32: 1, 1, 1, 0>}}> ({{
  ^bb0(%i: index):
    %v = vector.load %a[%i, %c0] : {T}, {V}
    %w = func.call @twice(%v) : ({V}) -> {V}
    vector.store %w, %b[%i, %c0] : {T}, {V}
    scf.reduce
  }}) : (index, index, index) -> ()
  func.return
}}
func.func private @exp_1(%a: {T}, %b: {T}) {{
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %n = arith.constant {ROWS} : index
  scf.for %i = %c0 to %n step %c1 {{
    %v = vector.load %a[%i, %c0] : {T}, {V}
    %e = math.exp %v : {V}
    vector.store %e, %b[%i, %c0] : {T}, {V}
  }}
  func.return
}}
func.func @main(%x: {T}, %y: {T}, %t: {T}) attributes {{"ember.input_names" = ["x"]}} {{
  func.call @scale_1(%x, %t) : ({T}, {T}) -> ()
  func.call @exp_1(%t, %y) : ({T}, {T}) -> ()
  func.return
}}
"""


def _program(entry_mark: bool = True) -> ModuleOp:
    module = parse(PROGRAM)
    if not entry_mark:
        main = next(
            op for op in module.ops if isinstance(op, func.FuncOp) and op.sym_name.data == "main"
        )
        del main.attributes["ember.input_names"]
    return module


def _input() -> np.ndarray:
    return np.random.default_rng(0).uniform(-2, 2, (ROWS, VW)).astype(np.float32)


def _run(jit: JitModule, threads: int = 1) -> np.ndarray:
    x = _input()
    y, t = np.zeros_like(x), np.zeros_like(x)
    jit.function("ember_set_num_threads", [ctypes.c_int32])(threads)
    jit.function("main", [ctypes.c_void_p] * 3)(x.ctypes.data, y.ctypes.data, t.ctypes.data)
    np.testing.assert_array_equal(t, 2 * x)
    # exp approximation: max relative error 8e-8 (mathlib.py), with margin
    np.testing.assert_allclose(y, np.exp(2 * x.astype(np.float64)), rtol=1e-6)
    return y


def test_partition_one_unit_per_kernel() -> None:
    part = partition(_program())
    assert [(u.name, u.define, u.is_entry) for u in part.units] == [
        ("entry", ("main",), True),
        ("scale_1", ("scale_1",), False),
        ("exp_1", ("exp_1",), False),
    ]
    assert part.symbols == {"scale_1": "ember.scale_1", "exp_1": "ember.exp_1"}
    # Without an entry function the module stays one unit, translated as a whole.
    assert [u.define for u in partition(_program(entry_mark=False)).units] == [None]


def test_unit_ir_links_kernels_and_the_thread_count_across_units() -> None:
    module = _program()
    part = partition(module)
    entry, scale, exp = (emit_unit(module, part, u, TARGET, hidden=False) for u in part.units)
    assert '@"ember_num_threads" = global i32 1' in entry
    assert 'declare void @"ember.scale_1"' in entry and 'define void @"main"' in entry
    assert '@"ember_num_threads" = external global i32' in scale
    assert "ember_set_num_threads" not in scale
    assert 'define void @"ember.scale_1"' in scale
    assert "define internal <" in scale and '@"twice"' in scale  # helper copied, inlinable
    assert "ember_num_threads" not in exp  # no parallel loop: no reference at all
    hidden = emit_unit(module, part, part.units[1], TARGET, hidden=True)
    assert 'define hidden void @"ember.scale_1"' in hidden


@pytest.mark.parametrize("threads", [1, 2])
def test_units_serial_parallel_and_whole_module_agree_bitwise(threads: int) -> None:
    whole = JitModule(_program(entry_mark=False), TARGET, jobs=1, cache=False)
    serial = JitModule(_program(), TARGET, jobs=1, cache=False)
    parallel = JitModule(_program(), TARGET, jobs=2, cache=False)
    assert whole.stats["units"] == 1 and serial.stats["units"] == parallel.stats["units"] == 3
    expected = _run(whole, threads)
    np.testing.assert_array_equal(_run(serial, threads), expected)
    np.testing.assert_array_equal(_run(parallel, threads), expected)
    # kernels are reachable under their ember names too
    assert parallel.address("exp_1") == parallel.address("ember.exp_1")


def test_llvm_ir_and_asm_cover_every_unit() -> None:
    jit = JitModule(_program(), TARGET, jobs=1, cache=False)
    assert jit.llvm_ir.count("; ---- unit ") == 3
    assert "GOMP_parallel" in jit.llvm_ir
    assert "ember.exp_1:" in jit.asm()
    assert emit_text(_program(), TARGET, "llvm-unoptimized").count("; ---- unit ") == 3


def test_second_compile_takes_every_unit_from_the_cache(tmp_path) -> None:
    cache = ObjectCache(tmp_path)
    first = JitModule(_program(), TARGET, jobs=1, cache=cache)
    assert first.stats == {"units": 3, "cached": 0, "compiled": 3}
    second = JitModule(_program(), TARGET, jobs=2, cache=cache)
    assert second.stats == {"units": 3, "cached": 3, "compiled": 0}
    assert second.timings["optimize"] == second.timings["codegen"] == 0.0
    np.testing.assert_array_equal(_run(second, 2), _run(first, 2))
    # AOT objects are position independent: a separate set of entries
    emit_objects(_program(), TARGET, jobs=1, cache=cache)
    assert len(list(tmp_path.glob("*/*.o"))) == 6


def test_other_settings_miss_the_cache(tmp_path) -> None:
    cache = ObjectCache(tmp_path)
    JitModule(_program(), TARGET, jobs=1, cache=cache)
    assert JitModule(_program(), TARGET, opt_level=2, jobs=1, cache=cache).stats["cached"] == 0


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_corrupt_cache_entry_is_recompiled(tmp_path, damage: str) -> None:
    cache = ObjectCache(tmp_path)
    expected = _run(JitModule(_program(), TARGET, jobs=1, cache=cache))
    entries = sorted(tmp_path.glob("*/*.o"))
    assert len(entries) == 3
    for path in entries:
        raw = bytearray(path.read_bytes())
        if damage == "flip":
            raw[-100] ^= 0xFF  # inside the object payload: only the hash can tell
        elif damage == "truncate":
            raw = raw[: len(raw) // 2]
        elif damage == "garbage":
            raw = bytearray(os.urandom(len(raw)))
        else:
            raw = bytearray()
        path.write_bytes(bytes(raw))
    again = JitModule(_program(), TARGET, jobs=2, cache=cache)
    assert again.stats["compiled"] == 3
    np.testing.assert_array_equal(_run(again), expected)
    # the recompiled objects replaced the damaged entries
    assert JitModule(_program(), TARGET, jobs=1, cache=cache).stats["cached"] == 3


def test_cache_respects_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("EMBER_NO_CACHE", raising=False)
    default = ObjectCache.default()
    assert default is not None and default.directory == tmp_path / "objects"
    monkeypatch.setenv("EMBER_NO_CACHE", "1")
    assert ObjectCache.default() is None
    JitModule(_program(), TARGET, jobs=1)
    assert not (tmp_path / "objects").exists()


BAD_KERNEL = f"""
func.func private @copy_1(%a: {T}, %b: {T}) {{
  "memref.copy"(%a, %b) : ({T}, {T}) -> ()
  func.return
}}
func.func @main(%x: {T}, %y: {T}) attributes {{"ember.input_names" = ["x"]}} {{
  func.call @copy_1(%x, %y) : ({T}, {T}) -> ()
  func.return
}}
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_error_in_a_unit_names_the_op_and_the_kernel(jobs: int) -> None:
    with pytest.raises(NotImplementedError, match="unsupported op 'memref.copy'") as info:
        JitModule(parse(BAD_KERNEL), TARGET, jobs=jobs, cache=False)
    assert "kernel function 'copy_1'" in "".join(getattr(info.value, "__notes__", []))


def test_a_dying_worker_is_a_clear_error(monkeypatch) -> None:
    real = build._compile_unit_uncollected

    def crash_on_exp(job: build._Job, unit: build.UnitPlan) -> build.CompiledUnit:
        if unit.name == "exp_1":
            os._exit(3)  # what an LLVM abort looks like from the parent
        return real(job, unit)

    # Workers are forked, so they run the patched function.
    monkeypatch.setattr(build, "_compile_unit_uncollected", crash_on_exp)
    with pytest.raises(RuntimeError, match="worker process died"):
        JitModule(_program(), TARGET, jobs=2, cache=False)


def test_shared_library_of_several_objects_runs_without_the_compiler(tmp_path) -> None:
    objects = emit_objects(_program(), TARGET, jobs=2, cache=False)
    assert len(objects) == 3
    separate, combined = tmp_path / "separate.so", tmp_path / "combined.so"
    link_shared_library(objects, str(separate))
    link_shared_library(emit_object(_program(), TARGET, jobs=1, cache=False), str(combined))
    x = _input()
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import ctypes, sys
        import numpy as np
        x = np.load({str(tmp_path / "x.npy")!r})
        results = []
        for path in sys.argv[1:]:
            lib = ctypes.CDLL(path)
            try:
                lib["ember.exp_1"]
                sys.exit("kernel symbols must not be exported")
            except AttributeError:
                pass
            lib.ember_set_num_threads(2)
            y, t = np.zeros_like(x), np.zeros_like(x)
            lib.main(*(ctypes.c_void_p(a.ctypes.data) for a in (x, y, t)))
            assert np.array_equal(t, 2 * x), "wrong result"
            results.append(y)
        np.save({str(tmp_path / "y.npy")!r}, results[0])
        assert np.array_equal(results[0], results[1])
        assert "llvmlite" not in sys.modules and "xdsl" not in sys.modules
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(separate), str(combined)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok"]
    jit = JitModule(_program(), TARGET, jobs=1, cache=False)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), _run(jit, 2))


def _compile_in_daemon(_: int) -> list[float]:
    jit = JitModule(_program(), TARGET, jobs=2, cache=False)
    return _run(jit).reshape(-1).tolist()


def test_compiles_inside_a_daemonic_worker() -> None:
    # A multiprocessing.Pool worker may not fork children: the units compile in it serially.
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(1) as pool:
        (result,) = pool.map(_compile_in_daemon, [0])
    expected = _run(JitModule(_program(), TARGET, jobs=1, cache=False))
    np.testing.assert_array_equal(np.array(result, np.float32).reshape(expected.shape), expected)


def test_unit_ir_is_the_same_in_every_process() -> None:
    # The cache only works if emission is deterministic (no set or id() order leaking in).
    script = textwrap.dedent(
        """
        import hashlib
        from ember.tests.codegen.test_units import TARGET, _program
        from ember.codegen.units import emit_unit, partition
        module = _program()
        part = partition(module)
        for unit in part.units:
            text = emit_unit(module, part, unit, TARGET, hidden=False)
            print(hashlib.sha256(text.encode()).hexdigest())
        """
    )
    module = _program()
    part = partition(module)
    here = [
        hashlib.sha256(emit_unit(module, part, u, TARGET, hidden=False).encode()).hexdigest()
        for u in part.units
    ]
    for seed in ("1", "2"):
        env = os.environ | {"PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=Path(__file__).parents[2],
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == here
