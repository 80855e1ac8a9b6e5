"""Helpers for codegen tests: parse loops-level IR text, JIT it, call it on numpy buffers."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import numpy as np
from xdsl.context import Context
from xdsl.dialects import arith, builtin, func, math, memref, scf, vector
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser

from ember.codegen.jit import JitModule
from ember.core.target import Target, host_target


def parse(text: str) -> ModuleOp:
    ctx = Context()
    for dialect in (builtin.Builtin, func.Func, arith.Arith, scf.Scf, memref.MemRef):
        ctx.load_dialect(dialect)
    ctx.load_dialect(vector.Vector)
    ctx.load_dialect(math.Math)
    module = Parser(ctx, text).parse_module()
    module.verify()
    return module


def run(
    module: ModuleOp,
    name: str,
    arrays: Sequence[np.ndarray],
    threads: int = 1,
    target: Target | None = None,
    opt_level: int = 3,
) -> JitModule:
    """JIT `module` and call `name(ptr, ptr, ...)`; arrays are written in place."""
    jit = JitModule(module, target or host_target(), opt_level)
    jit.function("ember_set_num_threads", [ctypes.c_int32])(threads)
    fn = jit.function(name, [ctypes.c_void_p] * len(arrays))
    fn(*[a.ctypes.data for a in arrays])
    return jit
