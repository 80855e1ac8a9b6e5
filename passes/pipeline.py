"""Every pass by name, and the default pipeline from the graph dialect down to loops.

The textual form is MLIR's: `pass-a,pass-b{option=value other=value},...`; `ember opt
--print-pipeline` prints the default so it can be copied, edited and rerun. A pass's options
are its dataclass fields (passes/options.py): `lower-kernels-to-loops{vector-width=8}`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline, PassPipelineCallbackType
from xdsl.utils.arg_spec import parse_pipeline

from ember.passes.options import build_pass, pass_text


def _graph_passes() -> list[type[ModulePass]]:
    from ember.passes.transforms.blocked_layout import BlockedLayout
    from ember.passes.transforms.canonicalize import Canonicalize
    from ember.passes.transforms.cse import CommonSubexpressionElimination
    from ember.passes.transforms.dce import DeadCodeElimination
    from ember.passes.transforms.fold_batchnorm import FoldBatchNorm
    from ember.passes.transforms.fold_constants import FoldConstants
    from ember.passes.transforms.fuse_attention import FuseAttention
    from ember.passes.transforms.fuse_epilogue import (
        FuseBiasAdd,
        FuseConvActivation,
        FuseResidualAdd,
    )
    from ember.passes.transforms.fuse_layer_norm import FuseLayerNorm
    from ember.passes.transforms.hoist_channel_ops import HoistChannelOps
    from ember.passes.transforms.quantize_ops import QuantizeOps

    return [
        QuantizeOps,
        Canonicalize,
        FoldConstants,
        CommonSubexpressionElimination,
        DeadCodeElimination,
        HoistChannelOps,
        FoldBatchNorm,
        FuseLayerNorm,
        FuseAttention,
        FuseBiasAdd,
        FuseResidualAdd,
        FuseConvActivation,
        BlockedLayout,
    ]


def _lowering_passes() -> list[type[ModulePass]]:
    from ember.passes.conversion.graph_to_kernel import ConvertGraphToKernel
    from ember.passes.conversion.kernel_to_loops.lower import LowerKernelsToLoops
    from ember.passes.transforms.check_memory import CheckMemoryAccesses
    from ember.passes.transforms.fuse_elementwise import FuseElementwise
    from ember.passes.transforms.instrument_kernels import InstrumentKernels
    from ember.passes.transforms.place_weights import PlaceWeights
    from ember.passes.transforms.plan_memory import PlanMemory

    return [
        ConvertGraphToKernel,
        FuseElementwise,
        PlanMemory,
        PlaceWeights,
        LowerKernelsToLoops,
        InstrumentKernels,  # not in the default pipeline: `python -m ember.tools.profile`
        CheckMemoryAccesses,  # not in the default pipeline: ember.compile(..., checks=True)
    ]


def available_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    """Pass name -> factory of its class (the form xDSL's PassPipeline.parse_spec takes)."""
    return {p.name: (lambda p=p: p) for p in [*_graph_passes(), *_lowering_passes()]}


# Stages, so that `--emit graph|kernel|loops` can stop at a dialect boundary.
# Quantized convs become integer ones first, while their weights are still int8 constants;
# then simplify and fold, so that the fusions see conv/matmul followed by plain adds.
GRAPH_STAGE = (
    "quantize-ops,canonicalize,fold-constants,cse,canonicalize,hoist-channel-ops,fold-batchnorm,"
    "fold-constants,fuse-layer-norm,"
    "fuse-attention,fuse-bias-add,fuse-residual-add,fuse-conv-activation,blocked-layout,dce"
)
KERNEL_STAGE = "convert-graph-to-kernel,fuse-elementwise,plan-memory,place-weights"
LOOPS_STAGE = "lower-kernels-to-loops"
DEFAULT_PIPELINE = f"{GRAPH_STAGE},{KERNEL_STAGE},{LOOPS_STAGE}"
# No graph optimisation: only what lowering needs (canonicalize rewrites gemm and unfolded
# batch_norm into ops that have kernels).
MINIMAL_PIPELINE = f"canonicalize,{KERNEL_STAGE},{LOOPS_STAGE}"


CHECKS_PASS = "check-memory-accesses"


def with_memory_checks(spec: str) -> str:
    """`spec` followed by the debug-mode bounds check of every kernel memory access."""
    return spec if CHECKS_PASS in spec.split(",") else f"{spec},{CHECKS_PASS}"


def parse_passes(
    spec: str, registry: dict[str, Callable[[], type[ModulePass]]] | None = None
) -> list[ModulePass]:
    """The passes of pipeline text `spec`, their options set (xDSL's PassPipeline.parse_spec,
    with errors that name the pass: PassOptionError for an option, ValueError for a pass
    not in `registry`, default: every pass). New pass objects on every call."""
    registry = available_passes() if registry is None else registry
    key = (spec, tuple((name, factory()) for name, factory in registry.items()))
    prototypes = _PARSED.get(key)
    if prototypes is None:
        specs = list(parse_pipeline(spec))
        unknown = [s.name for s in specs if s.name not in registry]
        if unknown:
            raise ValueError(f"Unrecognized passes: {unknown}")
        prototypes = tuple(build_pass(registry[s.name](), s) for s in specs)
        if len(_PARSED) >= _MAX_PARSED:
            _PARSED.clear()
        _PARSED[key] = prototypes
    return [replace(p) for p in prototypes]


# Pipelines parsed from text, by their text and the passes it may name: building a pass from
# text (xDSL's from_spec) evaluates its class's type hints, ~0.8 ms a pipeline, which every
# compile paid; a copy of a parsed pass is built from the same field values
# (dataclasses.replace runs the pass's checks again).
_PARSED: dict[tuple[str, tuple[tuple[str, type[ModulePass]], ...]], tuple[ModulePass, ...]] = {}
_MAX_PARSED = 256


def pipeline_text(passes: Sequence[ModulePass]) -> str:
    """The pipeline text that builds `passes` again, options set to other than their
    defaults included: `...,lower-kernels-to-loops{vector-width=8}`."""
    return ",".join(pass_text(p) for p in passes)


def build_pipeline(
    spec: str = DEFAULT_PIPELINE, callback: PassPipelineCallbackType | None = None
) -> PassPipeline:
    return PassPipeline(tuple(parse_passes(spec)), callback)


def run_graph_passes(module: ModuleOp, ctx: Context) -> None:
    """The graph stage of the default pipeline, in place (tests and tools that stop at the
    graph dialect: the same order the compiler runs, from the one GRAPH_STAGE string)."""
    build_pipeline(GRAPH_STAGE).apply(ctx, module)
