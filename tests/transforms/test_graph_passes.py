"""The graph passes' FileCheck tests are files, tests/transforms/*.mlir (run by their `// RUN:`
lines, see docs/testing.md); `test_pass_files_keep_values` evaluates each file's functions
before and after its pipeline (numpy interpreter, rtol 1e-5, atol 1e-6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.dialects.func import FuncOp
from xdsl.parser import Parser

from ember.core.context import make_context
from ember.dialects.numpy_eval import evaluate_function, numpy_dtype
from ember.dialects.weights import WeightStore
from ember.passes.pipeline import build_pipeline
from ember.passes.transforms.fold_constants import FoldConstants
from ember.tests.lit import filled_weights, pipelines
from ember.tools.opt_ir import filled_weight, referenced_weights, seeded_weights

RTOL, ATOL = 1e-5, 1e-6
PASS_FILES = sorted(Path(__file__).parent.glob("*.mlir"))
# Files whose values the numpy interpreter cannot compare before and after, and why.
NOT_EVALUATED = {
    "quantize-ops.mlir": "graph.qconv has no numpy semantics (its integer requantization may "
    "differ from the float QDQ ops by one step by design); its numerics: test_quantize_ops.py "
    "and tests/kernels/test_q*.py against onnxruntime",
}


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the .mlir files' values


def _evaluate(module: ModuleOp, store: WeightStore) -> dict[str, list[np.ndarray]]:
    """Each graph function's outputs on seeded inputs (functions on buffers are skipped)."""
    outputs = {}
    for fn in module.body.block.ops:
        if isinstance(fn, FuncOp) and all(isinstance(a.type, TensorType) for a in fn.args):
            inputs = [
                rand(*a.type.get_shape(), seed=i).astype(numpy_dtype(a.type.get_element_type()))
                for i, a in enumerate(fn.args)
            ]
            outputs[fn.sym_name.data] = evaluate_function(fn, store, inputs)
    return outputs


@pytest.mark.parametrize("path", PASS_FILES, ids=lambda p: p.name)
def test_pass_files_keep_values(path: Path) -> None:
    """The pipeline of a .mlir test file leaves each of its functions computing the same values
    (with the weights `--random-weights` and its `--weight NAME=VALUE` give it), and a pipeline ending in dce leaves exactly
    the weights the IR still names."""
    if path.name in NOT_EVALUATED:
        pytest.skip(NOT_EVALUATED[path.name])
    text = path.read_text()
    (spec,) = pipelines(text)
    ctx = make_context()
    module = Parser(ctx, text).parse_module()
    weights = seeded_weights(module)
    weights.update({name: filled_weight(module, name, v) for name, v in filled_weights(text)})
    store = ctx.weights = WeightStore(weights)
    before = _evaluate(module, store)
    assert before, "no function on tensors to evaluate"
    build_pipeline(spec).apply(ctx, module)
    module.verify()
    after = _evaluate(module, store)
    assert after.keys() == before.keys()
    for name, outputs in before.items():
        for b, a in zip(outputs, after[name], strict=True):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=f"@{name}")
    if spec.split(",")[-1] == "dce":
        assert sorted(store) == sorted(referenced_weights(module))


def test_passes_reject_a_plain_context() -> None:
    from xdsl.context import Context

    with pytest.raises(TypeError, match="EmberContext"):
        FoldConstants().apply(Context(), ModuleOp([]))
