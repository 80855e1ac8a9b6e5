"""The compiler driver: ONNX -> graph dialect -> passes -> LLVM -> a runnable Executable.

`ember.compile` (JIT from Python) and `ember compile` (ahead of time) both go through
`compile_program`; they differ only in what they do with the final loops-level module.
Inputs with symbolic dims are pinned by `input_shapes` (checked in engine/shapes.py); without
pins, `ember.compile` returns a `SpecializingModel` (engine/specialize.py) that compiles one
specialisation per distinct set of input shapes; so it does for a model whose shape operand is
computed from graph inputs (the importer's RuntimeOperandError), keyed on their values too.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import VerifyException

from ember.core.context import EmberContext, make_context
from ember.core.limits import format_bytes, memory_limit_bytes, tensor_bytes
from ember.core.target import Target, host_target
from ember.dialects import graph
from ember.dialects.dtypes import numpy_dtype_for
from ember.dialects.graph import shape_of
from ember.dialects.verification import IRState
from ember.engine.shapes import (
    DimRanges,
    InputShapes,
    external_data_folder,
    pin_model,
    read_model,
    static_input_shapes,
)
from ember.engine.staging import bounded_outputs, head_only, stage
from ember.passes.conversion.kernel_to_loops.lower import status_sites
from ember.passes.pipeline import DEFAULT_PIPELINE, build_pipeline, with_memory_checks
from ember.passes.program import ORIGIN, entry_function, set_origin
from ember.passes.transforms.instrument_kernels import profile_sites
from ember.runtime.errors import (
    InternalCompilerError,
    ModelError,
    ResourceLimitError,
    RuntimeOperandError,
)
from ember.runtime.executable import (
    BOUNDED_KEY,
    GRAPH_OUTPUTS_KEY,
    Executable,
    Manifest,
    TensorSpec,
    assemble_outputs,
)
from ember.runtime.status import SITES_KEY

# Debug-level stage and pass timings (`logging.getLogger("ember").setLevel(logging.DEBUG)`).
log = logging.getLogger("ember.compile")

if TYPE_CHECKING:
    from ember.engine.specialize import SpecializingModel
    from ember.engine.staging import StagedModel
    from ember.engine.structured import StructuredModel
    from ember.engine.weight_pool import WeightPool


@dataclass
class CompileReport:
    """What compiling cost and what it produced; printed by `ember compile -v`."""

    pass_seconds: dict[str, float] = field(default_factory=dict)
    import_seconds: float = 0.0
    codegen_seconds: float = 0.0
    arena_bytes: int = 0
    intermediate_bytes: int = 0
    weights_bytes: int = 0
    kernel_functions: int = 0

    @property
    def total_seconds(self) -> float:
        return self.import_seconds + sum(self.pass_seconds.values()) + self.codegen_seconds


@dataclass
class Program:
    """A model lowered to loops, with everything needed to generate and run native code."""

    module: ModuleOp
    ctx: EmberContext
    manifest: Manifest
    report: CompileReport

    def weight_placements(self) -> list[tuple[int, np.ndarray]]:
        """(offset, array) of every weight, as `place-weights` laid them out."""
        fn = entry_function(self.module)
        offsets: DictionaryAttr = fn.attributes["ember.weight_offsets"]  # type: ignore[assignment]
        return [
            (offset.value.data, self.ctx.weights[name])  # type: ignore[attr-defined]
            for name, offset in offsets.data.items()
        ]

    def weights_blob(self) -> np.ndarray:
        """The weights laid out as `place-weights` planned them, 64-byte aligned."""
        from ember.engine.weight_pool import laid_out

        return laid_out(self.manifest.weights_bytes, self.weight_placements())


def _io_specs(fn: func.FuncOp, key: str, first: int, dtypes_key: str) -> list[TensorSpec]:
    names = [s.data for s in fn.attributes[key].data]  # type: ignore[attr-defined]
    types = fn.function_type.inputs.data[first : first + len(names)]
    # The frontend's record wins: buffers are signless, so uint8 reads as int8 from the types.
    recorded = fn.attributes.get(dtypes_key)
    dtypes = (
        [s.data for s in recorded.data]  # type: ignore[attr-defined]
        if recorded is not None
        else [numpy_dtype_for(t.get_element_type()).name for t in types]  # type: ignore[attr-defined]
    )
    return [TensorSpec(name, shape_of(t), dtype) for name, t, dtype in zip(names, types, dtypes)]


def _int_attr(fn: func.FuncOp, key: str) -> int:
    if key not in fn.attributes:
        raise ValueError(
            f"the pipeline did not lower the program to loops ({key} is missing): it needs "
            "convert-graph-to-kernel, plan-memory, place-weights and lower-kernels-to-loops"
        )
    return fn.attributes[key].value.data  # type: ignore[attr-defined]


def finish_program(
    module: ModuleOp, ctx: EmberContext, report: CompileReport | None = None
) -> Program:
    """Package a module lowered to loops with its manifest (names, shapes, memory sizes)."""
    report = report or CompileReport()
    fn = entry_function(module)
    if fn.sym_name.data != Executable.ENTRY_SYMBOL:
        # The runtime calls a fixed symbol (never one named by a file): the entry must be it.
        raise ValueError(
            f"the entry function is @{fn.sym_name.data}, not @{Executable.ENTRY_SYMBOL}"
        )
    report.arena_bytes = _int_attr(fn, "ember.arena_bytes")
    report.intermediate_bytes = _int_attr(fn, "ember.intermediate_bytes")
    report.weights_bytes = _int_attr(fn, "ember.weights_bytes")
    report.kernel_functions = sum(1 for op in module.ops if op is not fn)
    inputs = _io_specs(fn, "ember.input_names", 0, "ember.input_dtypes")
    extra: dict[str, object] = {}
    checked = status_sites(fn)
    if checked is not None:
        # The entry takes the run's status record after the weights (runtime/status.py).
        extra[SITES_KEY] = checked
    from ember.frontend.onnx_importer import OUTPUT_STRUCTURE

    structure = fn.attributes.get(OUTPUT_STRUCTURE)
    if isinstance(structure, StringAttr):
        # Sequence / optional graph outputs: how the flat outputs group (CompiledModel.run).
        extra[GRAPH_OUTPUTS_KEY] = json.loads(structure.data)
    sites = profile_sites(fn)
    if sites is not None:
        # instrument-kernels ran: the entry takes a trailing profile buffer (one slot per site).
        extra["profile"] = sites
    manifest = Manifest(
        inputs=inputs,
        outputs=_io_specs(fn, "ember.output_names", len(inputs), "ember.output_dtypes"),
        arena_bytes=report.arena_bytes,
        weights_bytes=report.weights_bytes,
        extra=extra,
    )
    return Program(module, ctx, manifest, report)


def annotate_origins(module: ModuleOp, model: onnx.ModelProto) -> None:
    """Mark the ops of the imported entry function with the ONNX node they come from
    (`ember.origin`), where that is certain, so that a kernel's run-time error can name it.

    The importer gives the value a node produces the name of the node's ONNX output, through
    xDSL's name hints, which drop a trailing `_<digits>`: a hint names a node when exactly one
    node output has that hint, or when it carries the prefix of exactly one node's expanded
    function body. Hints shared by several node outputs (exporters' `conv_2`, `conv_11` both
    become `conv`) are matched in order: the importer converts nodes in graph order, so when
    the non-constant values with that hint are exactly as many as the node outputs, the k-th
    value is the k-th output (a count that differs, e.g. a folded or forwarded output, leaves
    them all unmarked; so does a model with subgraphs or local functions). Unnamed ops before
    a named one (the helper ops of a multi-op conversion) belong to its node. Anything else
    stays unmarked, and its errors name the kernel only: a wrong node name would be worse than
    none. An origin already set (by the importer) is kept.
    """
    from ember.frontend.onnx_importer import ssa_name

    def hint(name: str) -> str:
        return SSAValue.extract_valid_name(ssa_name(name))

    by_output: dict[str, list[tuple[str, str]]] = {}
    by_prefix: dict[str, list[tuple[str, str]]] = {}
    each_output: dict[str, list[tuple[str, str]]] = {}  # one entry per output, in node order
    for node in model.graph.node:
        origin = (node.op_type, node.name or (node.output[0] if node.output else "?"))
        for output in {hint(o) for o in node.output if o}:
            by_output.setdefault(output, []).append(origin)
        for output in node.output:
            if output:
                each_output.setdefault(hint(output), []).append(origin)
        # The names an expanded function body gives its values (frontend: function_body).
        by_prefix.setdefault(ssa_name(f"{origin[1]}/{node.op_type}/"), []).append(origin)

    # Values named like several node outputs, in program order (constants are materialized
    # when first used, out of node order, so they take no part).
    shared: dict[str, list[SSAValue]] = {}
    for op in entry_function(module).body.block.ops:
        if isinstance(op, graph.ConstantOp):
            continue
        for result in op.results:
            if result.name_hint and len(by_output.get(result.name_hint, [])) > 1:
                shared.setdefault(result.name_hint, []).append(result)
    in_order: dict[SSAValue, tuple[str, str]] = {}
    # Subgraphs (If/Loop bodies) and local functions add values no top-level output counts.
    plain = not model.functions and not any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for node in model.graph.node
        for a in node.attribute
    )
    for name, values in shared.items() if plain else ():
        if len(values) == len(each_output[name]):
            in_order.update(zip(values, each_output[name]))

    def origin_of_value(value: SSAValue) -> tuple[str, str] | None:
        if value in in_order:
            return in_order[value]
        return origin_of_hint(value.name_hint or "")

    def origin_of_hint(name: str) -> tuple[str, str] | None:
        exact = by_output.get(name, [])
        if exact:
            return exact[0] if len(exact) == 1 else None
        cuts = [k + 1 for k, c in enumerate(name) if c == "_"]
        owners = [o for cut in cuts for o in by_prefix.get(name[:cut], [])]
        return owners[0] if len(owners) == 1 else None

    unnamed: list[Operation] = []
    for op in entry_function(module).body.block.ops:
        named = [r for r in op.results if r.name_hint]
        if isinstance(op, func.ReturnOp) or not op.results:
            continue
        if not named:
            unnamed.append(op)
            continue
        origin = origin_of_value(named[0])
        if origin is not None:
            for owned in [*unnamed, op]:
                if ORIGIN not in owned.attributes:
                    set_origin(owned, *origin)
        unnamed.clear()


def run_pipeline(
    model: str | os.PathLike[str] | onnx.ModelProto,
    target: Target | None = None,
    pipeline: str = DEFAULT_PIPELINE,
    on_pass: Callable[[str], None] | None = None,
    input_shapes: InputShapes | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    memory_limit: int | None = None,
    verify_each: bool | None = None,
) -> tuple[ModuleOp, EmberContext, CompileReport, onnx.ModelProto, Any, int]:
    """`compile_program` before packaging: the module after `pipeline` (which may stop
    before the loops level: engine/compile_once.py unifies kernel programs), its context, the
    report, the model read, its biggest tensor and the memory limit."""
    from ember.frontend.onnx_importer import import_model

    report = CompileReport()
    if on_pass is not None:
        on_pass("import")
    start = time.perf_counter()
    base_dir = external_data_folder(model, base_dir)
    proto = read_model(model)
    _refuse_structured_inputs(proto)
    # A model whose data-dependent values (NonZero, Unique) are graph outputs compiles as its
    # head, whose runtime slices them; one whose such values feed further ops is refused
    # (engine/staging.py: only ember.compile stages it).
    proto = head_only(proto)
    limit = memory_limit_bytes() if memory_limit is None else memory_limit
    module, weights = import_model(
        proto, static_input_shapes(proto, input_shapes), base_dir=base_dir, memory_limit=limit
    )
    biggest = _biggest_value(module)
    annotate_origins(module, proto)
    report.import_seconds = time.perf_counter() - start
    log.debug("import: %.3f s (%d ONNX nodes)", report.import_seconds, len(proto.graph.node))

    ctx = make_context(weights, target or host_target())
    last = [time.perf_counter()]

    if verify_each is None:
        verify_each = os.environ.get("EMBER_VERIFY_EACH", "0") not in ("", "0")
    # A pass that changed nothing leaves IR that verified after the pass before it.
    verified = IRState()

    def timed(previous: ModulePass | None, _module: ModuleOp, _next: ModulePass | None) -> None:
        now = time.perf_counter()
        if previous is not None:
            key = previous.name
            report.pass_seconds[key] = report.pass_seconds.get(key, 0.0) + now - last[0]
            log.debug("pass %s: %.3f s", key, now - last[0])
            if verify_each and not verified.unchanged(_module, keep=_next is not None):
                _verify_after(_module, key)
        if on_pass is not None and _next is not None:
            on_pass(_next.name)
        last[0] = time.perf_counter()

    from ember.codegen.build import deferred_gc

    with deferred_gc():  # ~30% of pass time went to collections rescanning the weights
        build_pipeline(pipeline, timed).apply(ctx, module)
    return module, ctx, report, proto, biggest, limit


def compile_program(
    model: str | os.PathLike[str] | onnx.ModelProto,
    target: Target | None = None,
    pipeline: str = DEFAULT_PIPELINE,
    on_pass: Callable[[str], None] | None = None,
    input_shapes: InputShapes | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    memory_limit: int | None = None,
    verify_each: bool | None = None,
) -> Program:
    """Import `model` and run `pipeline` on it, down to the loops level.

    `verify_each` (default: on when $EMBER_VERIFY_EACH is set and not 0; the tests set it)
    verifies the IR after every pass, so a pass that breaks it is named at once.

    `input_shapes` pins inputs with symbolic dims ({"x": [1, 3, 224, 224]}); a symbolic dim
    left unpinned raises UnpinnedInputsError (a ModelError) naming it. `base_dir` is the folder
    external tensor data is read from (default: the model file's folder; required for a
    ModelProto with external data). `memory_limit` bounds, in bytes, any one tensor, the
    planned arena and the weights (default: the machine's physical memory): a model over it is
    a ResourceLimitError. `on_pass(name)` is called before each pass runs (and with "import"
    first): progress displays hook in here.
    """
    module, ctx, report, proto, biggest, limit = run_pipeline(
        model, target, pipeline, on_pass, input_shapes, base_dir, memory_limit, verify_each
    )
    program = finish_program(module, ctx, report)
    bounded = bounded_outputs(proto)
    if bounded:
        program.manifest.extra[BOUNDED_KEY] = bounded
    _check_memory(program, biggest, limit)
    return program


def _refuse_structured_inputs(model: onnx.ModelProto) -> None:
    """A program takes tensors: a sequence or optional graph input has a structure (length,
    shapes, presence) that only a run gives, which `ember.compile` compiles per structure
    (engine/structured.py); one program (an artifact, `ember compile`) cannot take it."""
    from ember.engine.structured import structured_inputs

    for name, type_proto in structured_inputs(model).items():
        kind = type_proto.WhichOneof("value").removesuffix("_type")
        raise ModelError(
            f"graph input '{name}' is a {kind}: a compiled program (an ahead-of-time artifact) "
            "takes tensors only, and a sequence's length and shapes, or whether an optional "
            "holds a value, are known only when a run gives it; ember.compile(model) compiles "
            "one variant per structure of what runs give (docs/engine_api.md)"
        )


def _verify_after(module: ModuleOp, pass_name: str) -> None:
    try:
        module.verify()
    except VerifyException as err:
        raise InternalCompilerError(
            f"the IR does not verify after pass '{pass_name}' (an ember bug; `ember opt "
            f"--verify-each --print-ir-after-all` shows it): {err}"
        ) from err


def _biggest_value(module: ModuleOp) -> tuple[str, tuple[int, ...], np.dtype, int] | None:
    """The largest tensor an imported graph computes: (name, shape, dtype, bytes)."""
    best = None
    for op in entry_function(module).walk():
        for value in op.results:
            if not isinstance(value.type, TensorType) or isinstance(op, graph.ConstantOp):
                continue
            dtype = numpy_dtype_for(value.type.get_element_type())
            shape = shape_of(value)
            size = tensor_bytes(shape, dtype)
            if best is None or size > best[3]:
                best = (value.name_hint or op.name, shape, dtype, size)
    return best


def _check_memory(
    program: Program, biggest: tuple[str, tuple[int, ...], np.dtype, int] | None, limit: int
) -> None:
    """Refuse a program whose arena or weights would not fit in `limit` bytes."""
    report = program.report
    if report.arena_bytes > limit:
        detail = ""
        if biggest is not None:
            name, shape, dtype, size = biggest
            detail = f"; its biggest tensor is '{name}' {shape} {dtype.name}, {format_bytes(size)}"
        raise ResourceLimitError(
            f"the model's intermediate tensors need an arena of {format_bytes(report.arena_bytes)}"
            f", more than the limit of {format_bytes(limit)} (memory_limit=){detail}"
        )
    if report.weights_bytes > limit:
        placed = entry_function(program.module).attributes.get("ember.weight_offsets")
        names = (
            list(placed.data) if isinstance(placed, DictionaryAttr) else list(program.ctx.weights)
        )
        name = max(names, key=lambda n: program.ctx.weights[n].nbytes, default="?")
        raise ResourceLimitError(
            f"the model's weights need {format_bytes(report.weights_bytes)}, more than the limit "
            f"of {format_bytes(limit)} (memory_limit=); the biggest is '{name}'"
        )


def unread_inputs(program: Program) -> tuple[str, ...]:
    """The program's inputs that no compiled code reads (their values were folded away)."""
    args = entry_function(program.module).body.block.args
    return tuple(spec.name for spec, arg in zip(program.manifest.inputs, args) if not arg.uses)


class CompiledModel(Executable):
    """A model JIT-compiled into this process (`ember.compile`).

    The lowered IR (`program`: the module and its context, with a copy of the weights) is
    dropped once native code exists, unless `keep_ir`: it is hundreds of thousands of
    GC-tracked objects per model (every full collection walks them) and its weights double
    the model's memory. What readers need of it is kept: `report`, `target`,
    `unread_inputs`, the manifest. `weight_pool` (shared by the variants of one model) holds
    once each weight several variants hold (engine/weight_pool.py).
    """

    def __init__(
        self,
        program: Program,
        opt_level: int = 3,
        threads: int | None = None,
        *,
        keep_ir: bool = False,
        weight_pool: WeightPool | None = None,
    ):
        from ember.codegen.jit import JitModule

        start = time.perf_counter()
        jit = JitModule(program.module, program.ctx.target, opt_level)
        program.report.codegen_seconds = time.perf_counter() - start
        self.program: Program | None = program if keep_ir else None
        self.report = program.report
        self.target = program.ctx.target
        self.unread_inputs = unread_inputs(program)
        weights = (
            program.weights_blob()
            if weight_pool is None
            else weight_pool.blob(program.manifest.weights_bytes, program.weight_placements())
        )
        set_threads = jit.function("ember_set_num_threads", [ctypes.c_int32])
        super().__init__(
            jit.address(self.ENTRY_SYMBOL),
            set_threads,
            program.manifest,
            weights,
            keepalive=jit,
            threads=threads or program.ctx.target.threads,
        )
        # Graph outputs that are sequences or optionals: `run` gives lists of arrays and None
        # (the program's flat outputs, `y[0]` .. `y[n-1]`, regrouped).
        self.graph_outputs: list[dict[str, Any]] | None = program.manifest.extra.get(
            GRAPH_OUTPUTS_KEY
        )
        if self.graph_outputs is not None:
            self._returned_names = tuple(entry["name"] for entry in self.graph_outputs)

    @property
    def weight_buffer(self) -> np.ndarray:
        """The weights the native code reads (read-only; shared with the other variants of a
        model that hold the same bytes)."""
        return self._weights

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        results = self._run(feeds, None)
        if self.graph_outputs is None:
            return results
        return assemble_outputs(results, self.graph_outputs)


def compile(
    model: str | os.PathLike[str] | onnx.ModelProto,
    *,
    input_shapes: InputShapes | None = None,
    threads: int | None = None,
    opt_level: int = 3,
    target: Target | None = None,
    pipeline: str = DEFAULT_PIPELINE,
    base_dir: str | os.PathLike[str] | None = None,
    memory_limit: int | None = None,
    checks: bool | None = None,
    dynamic_dims: DimRanges | None = None,
    batch_polymorphic: bool = True,
    progress: bool = True,
    keep_ir: bool = False,
    compile_once: bool = True,
) -> CompiledModel | SpecializingModel | StructuredModel | StagedModel:
    """Compile an ONNX model (path or ModelProto) to native code in this process.

    `input_shapes` pins inputs with symbolic dims, e.g. {"x": [1, 3, 224, 224]}. A model whose
    inputs are all static (or pinned) gives a CompiledModel; otherwise a SpecializingModel with
    the same API, which compiles on each run with new input shapes (one specialisation per
    distinct set of shapes, cached). `dynamic_dims` bounds named dims, {"batch": (1, 64)}: a
    pin or a run's input outside the range is refused (ModelError / InputError naming the
    input, the dim and the sizes) before anything compiles or runs. A shape operand computed
    from small graph inputs (a Reshape's shape fed at run time) also gives a
    SpecializingModel, one variant per distinct value of those inputs (engine/specialize.py).
    A sequence or optional graph input gives a StructuredModel, one variant per structure of
    what runs give it (engine/structured.py). External tensor data is read from `base_dir`
    (default: the model file's folder; a ModelProto with external data needs it). `memory_limit` (bytes,
    default: the machine's physical memory) bounds any one tensor, the intermediates' arena and
    the weights. `checks` (default: on when $EMBER_CHECKS is set and not 0) is a debug mode:
    every load and store of every kernel is bounds-checked at run time
    (check-memory-accesses), and one out of bounds raises KernelError instead of touching
    memory. Slower; for hunting compiler bugs. `batch_polymorphic` (default on): a model
    whose inputs' leading axes share a symbolic batch dim and which is proven batch-separable
    runs every batch size on one program compiled at batch 1 (engine/specialize.py); off, each
    batch size is specialised like any other dim. `progress` shows the compile's stages (the
    pass running, the elapsed time) on stderr while it runs, when stderr is a terminal.
    `keep_ir` keeps each compiled program's lowered IR (`CompiledModel.program`) after code
    generation; by default it is dropped (it dominates a compiled model's Python objects).
    `compile_once` (default on): a model whose symbolic dims only size kernels with runtime
    extents is compiled once for every shape (engine/compile_once.py); off, or when the model
    is refused that path (`model.compile_once_refusal` says why), it is specialised per shape.
    """
    if checks is None:
        checks = os.environ.get("EMBER_CHECKS", "0") not in ("", "0")
    if checks:
        pipeline = with_memory_checks(pipeline)
    target = target or host_target(threads)
    base_dir = external_data_folder(model, base_dir)
    proto = read_model(model)
    from ember.engine.structured import StructuredModel, structured_inputs

    if structured_inputs(proto):
        # Sequence / optional inputs: compiled per structure of what runs give them, each
        # variant a model of tensor inputs compiled as below (engine/structured.py).
        def compile_variant(
            variant: onnx.ModelProto,
        ) -> CompiledModel | SpecializingModel | StagedModel:
            return compile(
                variant,
                input_shapes=input_shapes,
                threads=threads,
                opt_level=opt_level,
                target=target,
                pipeline=pipeline,
                base_dir=base_dir,
                memory_limit=memory_limit,
                checks=False,  # `pipeline` has the checks already when they are asked for
                dynamic_dims=dynamic_dims,
                batch_polymorphic=batch_polymorphic,
                keep_ir=keep_ir,
                compile_once=compile_once,
            )

        return StructuredModel(
            proto,
            compile_variant,
            threads=threads or target.threads,
            base_dir=base_dir,
            input_shapes=input_shapes,
        )
    pinning = pin_model(proto, input_shapes, dynamic_dims)
    options = {
        "opt_level": opt_level,
        "target": target,
        "pipeline": pipeline,
        "base_dir": base_dir,
        "memory_limit": memory_limit,
        "keep_ir": keep_ir,
    }
    # Data-dependent output sizes that feed further ops: a head and a tail compiled per
    # run-time size (engine/staging.py).
    staged = stage(
        proto,
        pinning,
        input_shapes=input_shapes,
        threads=threads or target.threads,
        options=options,
        dynamic_dims=dynamic_dims,
    )
    if staged is not None:
        return staged
    if not pinning.complete:
        from ember.engine.specialize import SpecializingModel

        return SpecializingModel(
            proto,
            pinning,
            threads=threads or target.threads,
            batch_polymorphic=batch_polymorphic,
            compile_once=compile_once,
            **options,
        )
    try:
        return compile_static(proto, input_shapes, threads=threads, progress=progress, **options)
    except RuntimeOperandError as err:
        if not err.inputs:
            raise
        from ember.engine.specialize import SpecializingModel

        # A shape operand computed from graph inputs: compiled per distinct value of them.
        return SpecializingModel(
            proto, pinning, threads=threads or target.threads, value_inputs=err, **options
        )


def compile_static(
    model: onnx.ModelProto,
    input_shapes: InputShapes | None,
    *,
    threads: int | None,
    opt_level: int,
    target: Target,
    pipeline: str,
    base_dir: str | os.PathLike[str] | None,
    memory_limit: int | None,
    progress: bool = False,
    keep_ir: bool = False,
    weight_pool: WeightPool | None = None,
) -> CompiledModel:
    """One CompiledModel of `model` with every input pinned (what `compile` and each variant
    of a SpecializingModel compile); `progress`: its stages on stderr if a terminal;
    `keep_ir`, `weight_pool`: as CompiledModel takes them."""
    from ember.engine.aot import Progress

    stages = Progress(quiet=not progress)
    with stages.stage("import, optimize, lower to loops"):
        program = compile_program(
            model,
            target,
            pipeline,
            on_pass=lambda name: setattr(stages, "detail", name),
            input_shapes=input_shapes,
            base_dir=base_dir,
            memory_limit=memory_limit,
        )
    with stages.stage(f"LLVM codegen (O{opt_level})"):
        return CompiledModel(
            program, opt_level, threads or target.threads, keep_ir=keep_ir, weight_pool=weight_pool
        )
