"""The batch axis of an ONNX model, and the proof that it is batch-separable at given shapes.

The proof itself compares two graph-dialect imports (passes/analysis/batch_separable.py); this
module finds the batch dim, makes the two imports and is what engine/specialize.py (ember.compile)
and engine/aot.py (ember compile) call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx

from ember.engine.shapes import DimRanges, InputShapes, ModelSignature, pin
from ember.passes.analysis.batch_separable import PROBE_BATCH, BatchProof, compare_programs
from ember.passes.program import entry_function
from ember.runtime.errors import EmberError, ModelError


def batch_inputs(model: onnx.ModelProto, dim: str) -> tuple[list[str], str | None]:
    """The graph inputs whose leading dim is `dim`, or why `dim` is no batch axis (it appears
    at another axis)."""
    initializers = {t.name for t in model.graph.initializer}
    names = []
    for info in model.graph.input:
        if info.name in initializers or not info.type.HasField("tensor_type"):
            continue
        dims = info.type.tensor_type.shape.dim
        for axis, d in enumerate(dims):
            if d.HasField("dim_param") and d.dim_param == dim and axis != 0:
                return [], f"input '{info.name}' has dim '{dim}' at axis {axis}, not 0"
        if dims and dims[0].HasField("dim_param") and dims[0].dim_param == dim:
            names.append(info.name)
    return names, None


def leading_dim(model: onnx.ModelProto) -> str | None:
    """The dim_param the graph inputs' leading axes share (the batch axis), if there is one."""
    initializers = {t.name for t in model.graph.initializer}
    found = {
        info.type.tensor_type.shape.dim[0].dim_param
        for info in model.graph.input
        if info.name not in initializers
        and info.type.HasField("tensor_type")
        and info.type.tensor_type.shape.dim
        and info.type.tensor_type.shape.dim[0].HasField("dim_param")
    }
    return found.pop() if len(found) == 1 else None


def prove_batch_separable(
    model: onnx.ModelProto,
    dim: str,
    shapes_at_one: Mapping[str, Sequence[int]],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    memory_limit: int | None = None,
) -> BatchProof:
    """Whether `model` run with `shapes_at_one` (every input's shape at batch 1: the inputs
    whose leading dim is `dim` have size 1 there) is batch-separable (see the module doc)."""
    from ember.frontend.onnx_importer import import_model

    names, why = batch_inputs(model, dim)
    if why is not None:
        return BatchProof(False, why)
    if not names:
        return BatchProof(False, f"no input has dim '{dim}' as its leading axis")
    shapes_many = {
        name: ((PROBE_BATCH, *shape[1:]) if name in names else tuple(shape))
        for name, shape in shapes_at_one.items()
    }
    try:
        one, weights_one = import_model(model, dict(shapes_at_one), base_dir, memory_limit)
        many, weights_many = import_model(model, shapes_many, base_dir, memory_limit)
    except EmberError as err:
        return BatchProof(False, f"the model does not import at batch 1 and {PROBE_BATCH}: {err}")
    return compare_programs(
        entry_function(one), entry_function(many), weights_one, weights_many, PROBE_BATCH
    )


@dataclass(frozen=True)
class PolymorphicBatch:
    """How to build a batch-polymorphic artifact: the batch `dim`, the `inputs` whose leading
    axis it is, every input's shape at batch 1, and the range runs may give the dim."""

    dim: str
    inputs: tuple[str, ...]
    shapes_at_one: dict[str, tuple[int, ...]]
    dim_range: tuple[int, int] | None


def plan_polymorphic_batch(
    model: onnx.ModelProto,
    input_shapes: InputShapes | None,
    dim_ranges: DimRanges | None = None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    memory_limit: int | None = None,
) -> tuple[PolymorphicBatch | None, str]:
    """For a model `input_shapes` leave symbolic: a batch-polymorphic build if the only dim
    left open is the batch (the inputs' shared leading dim_param) and the model is proven
    batch-separable at the pinned shapes; else (None, why not). A range in `dim_ranges` must
    be the batch dim's (ModelError otherwise: a single program records no other range)."""
    signature = ModelSignature.of(model)
    dim = leading_dim(model)
    if dim is None:
        return None, "the inputs' leading axes share no symbolic dim"
    others = [name for name in (dim_ranges or {}) if name != dim]
    if others:
        raise ModelError(
            f"--dim {others[0]}: a single-program artifact can only take a range for its "
            f"batch dim '{dim}'; build variants with --shapes for other dims"
        )
    dim_range = (dim_ranges or {}).get(dim)
    pinning = pin(signature, input_shapes, dim_ranges)
    if dim in pinning.named:
        return None, f"the batch dim '{dim}' is pinned"
    at_one = pin(signature, input_shapes, None, {dim: 1})
    if not at_one.complete:
        open_dims = sorted({u.label for u in at_one.unpinned})
        return None, f"dims other than the batch are symbolic too: {open_dims}"
    names, _ = batch_inputs(model, dim)
    shapes = {
        info.name: at_one.shapes[info.name]
        for info in signature.inputs
        if not info.dtype_only and info.name in at_one.shapes
    }
    proof = prove_batch_separable(model, dim, shapes, base_dir=base_dir, memory_limit=memory_limit)
    if not proof.separable:
        return None, f"the model is not provably batch-separable: {proof.reason}"
    return PolymorphicBatch(dim, tuple(names), shapes, dim_range), ""
