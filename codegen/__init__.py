"""Loops-level IR (func/scf/arith/math/memref/vector) -> LLVM IR -> machine code.

- `emit_module(module, target)`: llvmlite.ir module (llvm_emitter.py)
- `JitModule(module, target, opt_level)`: in-process code, ctypes entry points (jit.py)
- `emit_object` + `link_shared_library`: AOT shared library (jit.py)
"""

from ember.codegen.jit import JitModule, emit_object, emit_text, link_shared_library
from ember.codegen.llvm_emitter import emit_module

__all__ = ["JitModule", "emit_module", "emit_object", "emit_text", "link_shared_library"]
