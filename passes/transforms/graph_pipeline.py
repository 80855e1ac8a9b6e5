"""The default order of the graph-level passes (the lead's pass registry may reorder them)."""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from ember.dialects.weights import EmberContext
from ember.passes.transforms.canonicalize import Canonicalize
from ember.passes.transforms.dce import DeadCodeElimination
from ember.passes.transforms.fold_batchnorm import FoldBatchNorm
from ember.passes.transforms.fold_constants import FoldConstants
from ember.passes.transforms.fuse_attention import FuseAttention
from ember.passes.transforms.fuse_epilogue import FuseBiasAdd, FuseConvActivation, FuseResidualAdd
from ember.passes.transforms.fuse_layer_norm import FuseLayerNorm

GRAPH_PASSES: tuple[type[ModulePass], ...] = (
    Canonicalize,
    FoldConstants,
    DeadCodeElimination,
    FoldBatchNorm,
    FuseLayerNorm,
    FuseAttention,
    FuseBiasAdd,
    FuseResidualAdd,
    FuseConvActivation,
)


def graph_passes() -> list[ModulePass]:
    """Simplify and fold first, so that the fusions see conv/matmul followed by plain adds."""
    return [
        Canonicalize(),
        FoldConstants(),
        Canonicalize(),
        FoldBatchNorm(),
        FoldConstants(),
        FuseLayerNorm(),
        FuseAttention(),
        FuseBiasAdd(),
        FuseResidualAdd(),
        FuseConvActivation(),
        DeadCodeElimination(),
    ]


def run_graph_passes(module: ModuleOp, ctx: EmberContext) -> None:
    for p in graph_passes():
        p.apply(ctx, module)
