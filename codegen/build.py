"""Compile the units of a program (see units.py) to object files: in parallel, through the cache.

    part, compiled = build_units(module, target, opt_level=3, jit=True)

Each unit is emitted (xDSL -> LLVM IR text), looked up in the object cache by that text, and
on a miss parsed, optimized with the O<opt_level> pipeline and compiled to an object file.
Units go to a pool of worker processes forked from this one (so they see the xDSL module
without serializing it). Threads would not do: emission is pure Python under the GIL, and
llvmlite parses every module into one global LLVMContext, which is not thread-safe. Only a
small program compiles in this process; any other, even with `jobs=1`, in at least one
worker, so that LLVM failing hard on a huge unit (an assertion aborts the process, memory
runs out) ends the worker and becomes an error, not the end of the caller's process.

The caller's objects are frozen out of the garbage collector for the duration (gc.freeze):
collections then skip the program's IR and weights, and forked workers do not copy the pages
that a collection would otherwise touch.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import hashlib
import inspect
import json
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import llvmlite
import llvmlite.binding as llvm
from xdsl.dialects.builtin import ModuleOp

from ember.codegen.objcache import CachedObject, ObjectCache
from ember.codegen.units import Partition, UnitPlan, emit_unit, partition
from ember.core.target import Target


@dataclass
class CompiledUnit:
    """One unit's object file and where its time went (all zero but emit on a cache hit)."""

    name: str
    ir: str  # unoptimized LLVM IR, the cache key's main ingredient
    object: bytes
    defined: tuple[str, ...]
    undefined: tuple[str, ...]
    cached: bool
    timings: dict[str, float] = field(default_factory=dict)


# -- LLVM: the functions whose source is part of the cache key -------------------------------


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


def parse_optimized(text: str, target_machine: Any, opt_level: int) -> tuple[Any, float, float]:
    """Parse and verify IR text, then optimize it: (ModuleRef, parse s, optimize s)."""
    start = time.perf_counter()
    module_ref = llvm.parse_assembly(text)
    module_ref.verify()
    module_ref.triple = target_machine.triple
    module_ref.data_layout = str(target_machine.target_data)
    parsed = time.perf_counter()
    optimize(module_ref, target_machine, opt_level)
    return module_ref, parsed - start, time.perf_counter() - parsed


def _symbols(module_ref: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(linkable definitions, external references other than intrinsics) of a module."""
    defined: list[str] = []
    undefined: list[str] = []
    for value in [*module_ref.functions, *module_ref.global_variables]:
        if value.name.startswith("llvm."):
            continue
        if value.is_declaration:
            undefined.append(value.name)
        elif value.linkage not in (llvm.Linkage.internal, llvm.Linkage.private):
            defined.append(value.name)
    return tuple(defined), tuple(undefined)


_TARGET_MACHINES: dict[tuple[str, str, int, bool], Any] = {}


def target_machine(target: Target, opt_level: int, jit: bool) -> Any:
    """One TargetMachine per settings and process (they are reused across units)."""
    key = (target.cpu, target.features, opt_level, jit)
    if key not in _TARGET_MACHINES:
        _TARGET_MACHINES[key] = create_target_machine(target, opt_level, jit)
    return _TARGET_MACHINES[key]


_FINGERPRINT: list[str] = []


def codegen_settings(target: Target, opt_level: int, jit: bool) -> str:
    """Everything besides the IR text that decides a unit's object file (for the cache key)."""
    if not _FINGERPRINT:
        source = "".join(inspect.getsource(f) for f in (create_target_machine, optimize))
        _FINGERPRINT.append(hashlib.sha256(source.encode()).hexdigest())
    return json.dumps(
        {
            "triple": llvm.get_process_triple(),
            "cpu": target.cpu,
            "features": target.features,
            "opt_level": opt_level,
            "jit": jit,
            "llvmlite": llvmlite.__version__,
            "llvm": list(llvm.llvm_version_info),
            "pipeline": _FINGERPRINT[0],
        },
        sort_keys=True,
    )


# -- one unit -------------------------------------------------------------------------------


@dataclass
class _Job:
    module: ModuleOp
    part: Partition
    target: Target
    opt_level: int
    jit: bool
    cache: ObjectCache | None


@contextlib.contextmanager
def deferred_gc() -> Iterator[None]:
    """Emission (and lowering) allocate ~10^5 short-lived objects per kernel; automatic
    collections would also rescan the program's long-lived IR and weights each time (it
    doubles emit time). Collect once afterwards, only the young generations."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
            gc.collect(1)


def _compile_unit(job: _Job, unit: UnitPlan) -> CompiledUnit:
    with deferred_gc():
        return _compile_unit_uncollected(job, unit)


def _compile_unit_uncollected(job: _Job, unit: UnitPlan) -> CompiledUnit:
    start = time.perf_counter()
    text = emit_unit(job.module, job.part, unit, job.target, hidden=not job.jit)
    timings = {"emit": time.perf_counter() - start}
    key = ""
    if job.cache is not None:
        key = job.cache.key(text, codegen_settings(job.target, job.opt_level, job.jit))
        hit = job.cache.load(key)
        if hit is not None:
            return CompiledUnit(
                unit.name, text, hit.data, hit.defined, hit.undefined, True, timings
            )
    tm = target_machine(job.target, job.opt_level, job.jit)
    module_ref, timings["parse"], timings["optimize"] = parse_optimized(text, tm, job.opt_level)
    defined, undefined = _symbols(module_ref)
    start = time.perf_counter()
    data = bytes(tm.emit_object(module_ref))
    timings["codegen"] = time.perf_counter() - start
    if job.cache is not None:
        job.cache.store(key, CachedObject(data, defined, undefined))
    return CompiledUnit(unit.name, text, data, defined, undefined, False, timings)


def _explained(error: Exception, unit: UnitPlan) -> Exception:
    """The error, naming the unit, in a form that survives the trip back from a worker."""
    if not unit.is_entry:
        what = f"kernel function '{unit.name}'"
    else:
        what = "the module" if unit.define is None else "the entry function"
    error.add_note(f"(ember codegen, while compiling {what})")
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error} (while compiling {what})")
    return error


# -- the pool -------------------------------------------------------------------------------

# The job of the pool being forked: workers inherit it instead of receiving a pickled module.
_FORKED_JOB: _Job | None = None
_FORK_LOCK = threading.Lock()


def _init_worker() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


def _run_in_worker(index: int) -> CompiledUnit:
    job = _FORKED_JOB
    assert job is not None, "codegen worker started without a job (not forked?)"
    unit = job.part.units[index]
    try:
        return _compile_unit(job, unit)
    except Exception as error:
        raise _explained(error, unit) from None


# Below this many ops in all, forking workers (~0.1 s) costs more than it saves: compile here.
SMALL_PROGRAM_OPS = 1000


def is_small(part: Partition) -> bool:
    return sum(unit.ops for unit in part.units) < SMALL_PROGRAM_OPS


def worker_count(part: Partition, jobs: int | None) -> int:
    """`jobs` if given, else $EMBER_JOBS, else one per CPU (1 for a small program)."""
    if jobs is None:
        configured = os.environ.get("EMBER_JOBS", "").strip()
        if configured:
            jobs = int(configured)
        elif is_small(part):
            jobs = 1
        else:
            jobs = os.cpu_count() or 1
    return max(1, min(jobs, len(part.units)))


def build_units(
    module: ModuleOp,
    target: Target,
    opt_level: int = 3,
    jit: bool = True,
    jobs: int | None = None,
    cache: ObjectCache | None = None,
) -> tuple[Partition, list[CompiledUnit]]:
    """Compile every unit of `module`; results in unit order (the entry unit first)."""
    # Everything alive now (the program, its weights) is long-lived: keep it out of the
    # collections that emission triggers, and out of the pages forked workers would copy.
    gc.freeze()
    try:
        return _build_units(module, target, opt_level, jit, jobs, cache)
    finally:
        gc.unfreeze()


def _build_units(
    module: ModuleOp,
    target: Target,
    opt_level: int,
    jit: bool,
    jobs: int | None,
    cache: ObjectCache | None,
) -> tuple[Partition, list[CompiledUnit]]:
    part = partition(module)
    job = _Job(module, part, target, opt_level, jit, cache)
    workers = worker_count(part, jobs)
    # Daemonic processes (e.g. multiprocessing.Pool workers) may not start children.
    can_fork = "fork" in multiprocessing.get_all_start_methods()
    in_process = workers <= 1 and is_small(part)
    if in_process or not can_fork or multiprocessing.current_process().daemon:
        compiled = []
        for unit in part.units:
            try:
                compiled.append(_compile_unit(job, unit))
            except Exception as error:
                raise _explained(error, unit) from None
        return part, compiled

    # One pool at a time per process: workers find their job in a global.
    with _FORK_LOCK:
        return part, _build_in_workers(job, workers)


def _build_in_workers(job: _Job, workers: int) -> list[CompiledUnit]:
    global _FORKED_JOB
    part = job.part
    _FORKED_JOB = job
    try:
        pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("fork"), initializer=_init_worker
        )
        try:
            # Biggest first, so that no large kernel starts last and leaves the others idle.
            order = sorted(range(len(part.units)), key=lambda i: -part.units[i].ops)
            submitted = {i: pool.submit(_run_in_worker, i) for i in order}
            futures = [submitted[i] for i in range(len(part.units))]
            results: list[CompiledUnit] = []
            for future in futures:
                try:
                    results.append(future.result())
                except BrokenProcessPool:
                    unfinished = [u.name for u, f in zip(part.units, futures) if _failed(f)]
                    raise RuntimeError(
                        "an ember codegen worker process died (LLVM crashed or the process was "
                        f"killed) while compiling one of the units {', '.join(unfinished)}; "
                        "LLVM's own message, if any, is on standard error"
                    ) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        _FORKED_JOB = None
    return results


def _failed(future: concurrent.futures.Future[CompiledUnit]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is not None
