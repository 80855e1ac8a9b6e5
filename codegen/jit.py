"""LLVM IR -> optimized machine code: in-process JIT (MCJIT) or an object file for AOT.

    jit = JitModule(module, host_target())
    relu = jit.function("relu", [ctypes.c_void_p, ctypes.c_void_p])

One LLVM module per ember module: parsing, the O3 pipeline and codegen run once for all the
kernels in it. Generated code may call libm (erff, log1pf, ...) and libgomp (GOMP_parallel),
which are loaded into the process before the first JIT.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import tempfile
import time
from typing import Any, Literal

import llvmlite.binding as llvm
from xdsl.dialects.builtin import ModuleOp

from ember.codegen.llvm_emitter import emit_module
from ember.passes.target import Target

_runtime_loaded = False


def _library_candidates(name: str, soname: str) -> list[str]:
    candidates = [soname]
    found = ctypes.util.find_library(name)
    if found:
        candidates.append(found)
    try:
        path = subprocess.run(
            ["cc", f"-print-file-name={soname}"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if os.path.isabs(path):
            candidates.append(path)
    except (OSError, subprocess.SubprocessError):
        pass
    return candidates


def load_runtime_libraries() -> None:
    """Make libgomp and libm symbols visible to JIT-compiled code (idempotent)."""
    global _runtime_loaded
    if _runtime_loaded:
        return
    for name, soname in (("gomp", "libgomp.so.1"), ("m", "libm.so.6")):
        errors = []
        for candidate in _library_candidates(name, soname):
            try:
                llvm.load_library_permanently(candidate)
                break
            except RuntimeError as error:
                errors.append(f"{candidate}: {error}")
        else:
            raise RuntimeError(
                f"ember codegen needs {soname} at run time; could not load it ({'; '.join(errors)})"
            )
    _runtime_loaded = True


def create_target_machine(target: Target, opt_level: int = 3, jit: bool = True) -> Any:
    """An LLVM TargetMachine for `target`; position-independent code when not for the JIT."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    triple = llvm.get_process_triple()
    return llvm.Target.from_triple(triple).create_target_machine(
        cpu=target.cpu,
        features=target.features,
        opt=opt_level,
        reloc="default" if jit else "pic",
        codemodel="jitdefault" if jit else "default",
        jit=jit,
    )


def optimize(module_ref: Any, target_machine: Any, opt_level: int = 3) -> None:
    """Run the new pass manager's default O<opt_level> pipeline, vectorizers on from O2."""
    if not 0 <= opt_level <= 3:
        raise ValueError(f"opt_level must be 0..3, got {opt_level}")
    tuning = llvm.create_pipeline_tuning_options(speed_level=opt_level)
    tuning.loop_vectorization = opt_level >= 2
    tuning.slp_vectorization = opt_level >= 2
    tuning.loop_unrolling = opt_level >= 2
    builder = llvm.create_pass_builder(target_machine, tuning)
    builder.getModulePassManager().run(module_ref, builder)


def compile_ir(
    module: ModuleOp, target: Target, opt_level: int, jit: bool
) -> tuple[Any, Any, dict[str, float]]:
    """Emit, parse, verify and optimize: returns (ModuleRef, TargetMachine, timings in s)."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    text = str(emit_module(module, target))
    timings["emit"] = time.perf_counter() - start
    start = time.perf_counter()
    module_ref = llvm.parse_assembly(text)
    module_ref.verify()
    target_machine = create_target_machine(target, opt_level, jit)
    module_ref.triple = target_machine.triple
    module_ref.data_layout = str(target_machine.target_data)
    timings["parse"] = time.perf_counter() - start
    start = time.perf_counter()
    optimize(module_ref, target_machine, opt_level)
    timings["optimize"] = time.perf_counter() - start
    return module_ref, target_machine, timings


def _check_external_symbols(module_ref: Any) -> None:
    """MCJIT jumps to address 0 for a symbol it cannot resolve: fail in Python instead."""
    missing = [
        fn.name
        for fn in module_ref.functions
        if fn.is_declaration
        and not fn.name.startswith("llvm.")
        and not llvm.address_of_symbol(fn.name)
    ]
    if missing:
        raise RuntimeError(
            f"JIT module calls functions that are not loaded in this process: {', '.join(missing)}"
        )


class JitModule:
    """A compiled ember module living in this process; keep it alive while calling into it."""

    def __init__(self, module: ModuleOp, target: Target, opt_level: int = 3):
        load_runtime_libraries()
        self.target = target
        self._module_ref, self._target_machine, self.timings = compile_ir(
            module, target, opt_level, jit=True
        )
        self.llvm_ir: str = str(self._module_ref)
        _check_external_symbols(self._module_ref)
        start = time.perf_counter()
        self._engine = llvm.create_mcjit_compiler(self._module_ref, self._target_machine)
        self._engine.finalize_object()
        self._engine.run_static_constructors()
        self.timings["codegen"] = time.perf_counter() - start

    def address(self, name: str) -> int:
        address = self._engine.get_function_address(name)
        if not address:
            address = self._engine.get_global_value_address(name)
        if not address:
            raise KeyError(f"no symbol '{name}' in the JIT module")
        return int(address)

    def function(self, name: str, argtypes: list[Any], restype: Any = None) -> Any:
        """A ctypes callable for `name`; it keeps this JitModule (and its code) alive."""
        prototype = ctypes.CFUNCTYPE(restype, *argtypes)
        fn = prototype(self.address(name))
        fn._ember_jit = self  # type: ignore[attr-defined]
        return fn

    def asm(self) -> str:
        """Assembly of the optimized module, as the JIT compiled it."""
        return str(self._target_machine.emit_assembly(llvm.parse_assembly(self.llvm_ir)))


def emit_object(module: ModuleOp, target: Target, opt_level: int = 3) -> bytes:
    """A relocatable, position-independent object file (link it with `link_shared_library`)."""
    module_ref, target_machine, _ = compile_ir(module, target, opt_level, jit=False)
    return bytes(target_machine.emit_object(module_ref))


def link_shared_library(object_bytes: bytes, path: str) -> None:
    """Link an object from `emit_object` into a shared library with the system C compiler."""
    with tempfile.TemporaryDirectory(prefix="ember-link-") as tmp:
        object_path = os.path.join(tmp, "module.o")
        with open(object_path, "wb") as f:
            f.write(object_bytes)
        command = ["cc", "-shared", "-o", os.fspath(path), object_path, "-lgomp", "-lm"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except FileNotFoundError:
            raise RuntimeError("linking needs a C compiler: 'cc' was not found on PATH") from None
        if result.returncode != 0:
            raise RuntimeError(f"'{' '.join(command)}' failed:\n{result.stderr}")


def emit_text(
    module: ModuleOp,
    target: Target,
    kind: Literal["llvm", "llvm-unoptimized", "asm"] = "llvm",
    opt_level: int = 3,
) -> str:
    """LLVM IR (before or after optimization) or assembly, for `ember opt --emit`."""
    if kind == "llvm-unoptimized":
        return str(emit_module(module, target))
    module_ref, target_machine, _ = compile_ir(module, target, opt_level, jit=False)
    if kind == "llvm":
        return str(module_ref)
    if kind == "asm":
        return str(target_machine.emit_assembly(module_ref))
    raise ValueError(f"unknown emit kind '{kind}' (expected llvm, llvm-unoptimized or asm)")
