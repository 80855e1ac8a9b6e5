"""Loops-level IR (func/scf/arith/math/memref/vector) -> LLVM IR -> machine code.

- `emit_module(module, target)`: llvmlite.ir module (llvm_emitter.py)
- `JitModule(module, target, opt_level)`: in-process code, ctypes entry points (jit.py)
- `emit_objects` + `link_shared_library`: AOT shared library (jit.py)
- units.py: one LLVM module per kernel; build.py: parallel compile; objcache.py: object cache
"""

from ember.codegen.jit import JitModule, emit_object, emit_objects, emit_text, link_shared_library
from ember.codegen.llvm_emitter import emit_module

__all__ = [
    "JitModule",
    "emit_module",
    "emit_object",
    "emit_objects",
    "emit_text",
    "link_shared_library",
]
