"""LLVM IR -> optimized machine code: in-process JIT (MCJIT) or an object file for AOT.

    jit = JitModule(module, host_target())
    relu = jit.function("relu", [ctypes.c_void_p, ctypes.c_void_p])

A program is compiled as one LLVM module per kernel plus one for its entry function (units.py),
optimized and compiled in parallel worker processes through an on-disk object cache (build.py,
objcache.py). Generated code may call libm (erff, log1pf, ...) and libgomp (GOMP_parallel),
which are loaded into the process before the first JIT.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Literal

import llvmlite.binding as llvm
import llvmlite.ir as ir
from xdsl.dialects.builtin import ModuleOp

from ember.codegen.build import (
    CompiledUnit,
    build_units,
    create_target_machine,
    optimize,
    parse_optimized,
    target_machine,
)
from ember.codegen.objcache import ObjectCache
from ember.codegen.units import emit_unit, partition
from ember.core.target import Target
from ember.runtime.threads import configure_openmp

__all__ = [
    "JitModule",
    "create_target_machine",
    "emit_data_object",
    "emit_object",
    "emit_objects",
    "emit_text",
    "link_shared_library",
    "load_runtime_libraries",
    "optimize",
]

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
    configure_openmp()  # libgomp reads its wait policy when it is loaded
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


CacheOption = ObjectCache | bool | None


def _cache(option: CacheOption) -> ObjectCache | None:
    """True/None: the default cache (off with EMBER_NO_CACHE=1); False: none."""
    if option is None or option is True:
        return ObjectCache.default()
    return option or None


def _check_external_symbols(units: list[CompiledUnit]) -> None:
    """MCJIT aborts the process on a symbol it cannot resolve: fail in Python instead."""
    defined = {name for unit in units for name in unit.defined}
    needed = {name: None for unit in units for name in unit.undefined if name not in defined}
    missing = [name for name in needed if not llvm.address_of_symbol(name)]
    if missing:
        raise RuntimeError(
            f"JIT module calls functions that are not loaded in this process: {', '.join(missing)}"
        )


def _timings(units: list[CompiledUnit]) -> dict[str, float]:
    """Per-stage seconds summed over units (across workers: more than the wall time)."""
    totals = dict.fromkeys(("emit", "parse", "optimize", "codegen"), 0.0)
    for unit in units:
        for stage, seconds in unit.timings.items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    return totals


class JitModule:
    """A compiled ember module living in this process; keep it alive while calling into it.

    The module is compiled unit by unit (one per kernel, see units.py) in `jobs` worker
    processes (default: $EMBER_JOBS, else one per CPU, or none for a small program) through the
    object `cache` (default: ObjectCache.default(); False for none); the objects are linked
    into one MCJIT engine. `timings` holds seconds per stage summed over units (emit,
    parse, optimize, codegen; the last three are 0 for cached units), `load` (linking the
    objects in this process) and `wall`; `stats` counts units and cache hits.
    """

    def __init__(
        self,
        module: ModuleOp,
        target: Target,
        opt_level: int = 3,
        *,
        jobs: int | None = None,
        cache: CacheOption = None,
    ):
        load_runtime_libraries()
        start = time.perf_counter()
        self.target = target
        self.opt_level = opt_level
        self._partition, self.units = build_units(
            module, target, opt_level, jit=True, jobs=jobs, cache=_cache(cache)
        )
        _check_external_symbols(self.units)
        loading = time.perf_counter()
        # A fresh machine: the engine takes ownership of it and disposes it with itself.
        self._target_machine = create_target_machine(target, opt_level, jit=True)
        self._engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), self._target_machine)
        for unit in self.units:
            self._engine.add_object_file(llvm.ObjectFileRef.from_data(unit.object))
            unit.object = b""  # the engine has its own copy
        self._engine.finalize_object()
        self._engine.run_static_constructors()
        now = time.perf_counter()
        self.timings = _timings(self.units) | {"load": now - loading, "wall": now - start}
        cached = sum(unit.cached for unit in self.units)
        self.stats = {
            "units": len(self.units),
            "cached": cached,
            "compiled": len(self.units) - cached,
        }

    def address(self, name: str) -> int:
        """The address of a function or global; kernels may be named as in the ember module."""
        name = self._partition.symbols.get(name, name)
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

    @functools.cached_property
    def llvm_ir(self) -> str:
        """The optimized LLVM IR of every unit (recomputed on demand: objects may be cached)."""
        return _join([u.name for u in self.units], [str(self._optimized(u)) for u in self.units])

    def asm(self) -> str:
        """Assembly of the optimized units, as the JIT compiled them."""
        tm = self._target_machine
        return _join(
            [u.name for u in self.units],
            [str(tm.emit_assembly(self._optimized(u))) for u in self.units],
        )

    def _optimized(self, unit: CompiledUnit) -> Any:
        return parse_optimized(unit.ir, self._target_machine, self.opt_level)[0]


def _join(names: list[str], texts: list[str]) -> str:
    """One text for several units; a single unit's text is unchanged."""
    if len(texts) == 1:
        return texts[0]
    return "\n".join(f"; ---- unit {n} ----\n{t}" for n, t in zip(names, texts, strict=True))


def emit_objects(
    module: ModuleOp,
    target: Target,
    opt_level: int = 3,
    *,
    jobs: int | None = None,
    cache: CacheOption = None,
) -> list[bytes]:
    """Relocatable, position-independent object files, one per unit (entry unit first); link
    them with `link_shared_library`. Kernel symbols are hidden: the library exports only the
    public functions and `ember_num_threads`/`ember_set_num_threads`."""
    _, units = build_units(module, target, opt_level, jit=False, jobs=jobs, cache=_cache(cache))
    return [unit.object for unit in units]


def emit_data_object(symbol: str, data: bytes, target: Target) -> bytes:
    """A relocatable object that exports `data` as the read-only byte array `symbol`.

    How a library carries facts about itself (`ember_model_info`): as data, so that a loader
    can read them without running any of the library's code.
    """
    module = ir.Module(name=symbol)
    array = ir.ArrayType(ir.IntType(8), len(data))
    variable = ir.GlobalVariable(module, array, symbol)
    variable.global_constant = True
    variable.initializer = ir.Constant(array, bytearray(data))
    variable.align = 8
    tm = target_machine(target, 0, jit=False)
    module_ref = llvm.parse_assembly(str(module))
    module_ref.triple = tm.triple
    module_ref.data_layout = str(tm.target_data)
    return bytes(tm.emit_object(module_ref))


def emit_object(
    module: ModuleOp,
    target: Target,
    opt_level: int = 3,
    *,
    jobs: int | None = None,
    cache: CacheOption = None,
) -> bytes:
    """All units as a single relocatable object (partially linked by the system linker)."""
    objects = emit_objects(module, target, opt_level, jobs=jobs, cache=cache)
    if len(objects) == 1:
        return objects[0]
    with tempfile.TemporaryDirectory(prefix="ember-link-") as tmp:
        output = os.path.join(tmp, "combined.o")
        _run_cc(["-r", "-o", output, *_write_objects(objects, tmp)])
        with open(output, "rb") as f:
            return f.read()


def _write_objects(objects: Sequence[bytes], directory: str) -> list[str]:
    paths = []
    for i, data in enumerate(objects):
        paths.append(os.path.join(directory, f"unit{i}.o"))
        with open(paths[-1], "wb") as f:
            f.write(data)
    return paths


def _run_cc(arguments: list[str]) -> None:
    command = ["cc", *arguments]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        raise RuntimeError("linking needs a C compiler: 'cc' was not found on PATH") from None
    if result.returncode != 0:
        shown = " ".join(os.path.basename(a) if a.endswith(".o") else a for a in command)
        raise RuntimeError(f"'{shown}' failed:\n{result.stderr}")


def link_shared_library(objects: bytes | Sequence[bytes], path: str) -> None:
    """Link objects from `emit_objects` (or one from `emit_object`) into a shared library with
    the system C compiler."""
    if isinstance(objects, bytes | bytearray):
        objects = [bytes(objects)]
    with tempfile.TemporaryDirectory(prefix="ember-link-") as tmp:
        paths = _write_objects(objects, tmp)
        _run_cc(["-shared", "-o", os.fspath(path), *paths, "-lgomp", "-lm"])


def emit_text(
    module: ModuleOp,
    target: Target,
    kind: Literal["llvm", "llvm-unoptimized", "asm"] = "llvm",
    opt_level: int = 3,
) -> str:
    """LLVM IR (before or after optimization) or assembly of every unit, for `ember opt --emit`."""
    if kind not in ("llvm", "llvm-unoptimized", "asm"):
        raise ValueError(f"unknown emit kind '{kind}' (expected llvm, llvm-unoptimized or asm)")
    part = partition(module)
    texts = [emit_unit(module, part, unit, target, hidden=True) for unit in part.units]
    if kind != "llvm-unoptimized":
        tm = target_machine(target, opt_level, jit=False)
        refs = [parse_optimized(text, tm, opt_level)[0] for text in texts]
        texts = [str(tm.emit_assembly(r) if kind == "asm" else r) for r in refs]
    return _join([unit.name for unit in part.units], texts)
