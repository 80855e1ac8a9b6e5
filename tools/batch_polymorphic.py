"""The batch axis of an ONNX model, and the proof that it is batch-separable at given shapes.

The proof itself compares two graph-dialect imports (passes/analysis/batch_separable.py); this
module finds the batch dim, makes the two imports and is what tools/specialize.py (ember.compile)
and tools/aot.py (ember compile) call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import onnx

from ember.passes.analysis.batch_separable import PROBE_BATCH, BatchProof, compare_programs
from ember.passes.program import entry_function
from ember.runtime.errors import EmberError


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
