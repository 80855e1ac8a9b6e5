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
from ember.passes.transforms.quantize_ops import QuantizeOps

GRAPH_PASSES: tuple[type[ModulePass], ...] = (
    QuantizeOps,
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
    """Integer kernels for quantized convs first (before folding turns their weights to float);
    then simplify and fold, so that the fusions see conv/matmul followed by plain adds."""
    return [
        QuantizeOps(),
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
