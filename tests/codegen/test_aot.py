"""Ahead-of-time path: emit_object -> link_shared_library -> ctypes in a fresh process that
never imports llvmlite or xdsl (as the runtime will). The kernel uses scf.parallel, so the
shared library must also resolve libgomp; the result is compared exactly with numpy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from xdsl.dialects.builtin import MemRefType, ModuleOp, f32
from xdsl.ir import SSAValue

from ember.codegen.jit import emit_object, emit_text, link_shared_library
from ember.core.target import host_target
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, kernel_function

ROWS, COLS = 64, 48


def _module() -> ModuleOp:
    t = MemRefType(f32, [ROWS, COLS])
    fn, b = kernel_function("scale_rows", [t, t])
    vw = 8 if COLS % 16 else 16

    def row(b: LoopBuilder, i: SSAValue) -> None:
        def col(b: LoopBuilder, j: SSAValue) -> None:
            v = b.vload(fn.args[0], [i, j], vw)
            b.vstore(b.mulf(v, b.splat(3.0, vw)), fn.args[1], [i, j])

        b.for_range(0, COLS, vw, col)

    b.parallel_range(0, ROWS, 1, row)
    b.ret()
    return ModuleOp([fn])


def test_object_links_and_runs_without_the_compiler(tmp_path) -> None:
    library = tmp_path / "kernels.so"
    link_shared_library(emit_object(_module(), host_target()), str(library))
    script = textwrap.dedent(
        f"""
        import ctypes, sys
        import numpy as np
        lib = ctypes.CDLL({str(library)!r})
        lib.ember_set_num_threads(2)
        x = np.arange({ROWS * COLS}, dtype=np.float32).reshape({ROWS}, {COLS})
        y = np.zeros_like(x)
        lib.scale_rows(ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(y.ctypes.data))
        assert np.array_equal(y, x * 3), "wrong result"
        assert "llvmlite" not in sys.modules and "xdsl" not in sys.modules
        print("ok", ctypes.c_int32.in_dll(lib, "ember_num_threads").value)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "2"]


def test_emit_text_kinds() -> None:
    module = _module()
    assert "scf" not in emit_text(module, host_target(), "llvm-unoptimized")
    assert "GOMP_parallel" in emit_text(module, host_target(), "llvm")
    assert "scale_rows:" in emit_text(module, host_target(), "asm")


def test_link_failure_is_reported(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="cc -shared"):
        link_shared_library(b"not an object file", str(tmp_path / "x.so"))
