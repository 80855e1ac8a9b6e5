"""A BERT encoder with a symbolic batch at batch 1, 3 and 8 against onnxruntime: its
projections and FFN MatMuls fold the batch into the GEMM's M (one GEMM of batch*seq rows,
see kernel_to_loops/matmul.py), so every batch size runs the folded kernels.

Tolerance: 1e-4 of the largest output (float32 GEMMs summed in another order, erf GELU).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import ember
from ember.core.target import named_target
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tools import model_zoo
from ember.tools.symbolic_zoo import bert_with_symbolic_shapes

SEQ = 16


@pytest.fixture(scope="module")
def bert() -> onnx.ModelProto:
    return bert_with_symbolic_shapes(
        model_zoo.bert_encoder(layers=2, seq=SEQ, hidden=64, heads=4, vocab=100, seed=0)
    )


@pytest.mark.parametrize(
    "batch,target,checks",
    [
        (1, None, False),
        (3, None, False),
        (8, None, False),
        (3, "x86-64-v3", False),  # the AVX2 6x16 tile
        (3, None, True),  # bounds-checked accesses through the folded views
    ],
)
def test_bert_batches_match_onnxruntime(
    bert: onnx.ModelProto, batch: int, target: str | None, checks: bool
) -> None:
    compiled = ember.compile(
        bert,
        threads=1,
        input_shapes={"input_ids": (batch, SEQ)},
        target=named_target(target, threads=1) if target else None,
        checks=checks,
    )
    ids = np.random.default_rng(batch).integers(0, 100, size=(batch, SEQ), dtype=np.int64)
    feeds = {"input_ids": ids}
    assert_close(compiled.run(feeds), onnxruntime_outputs(bert, feeds), rel=1e-4)


def test_masked_bert_padded_rows_match_each_request_alone() -> None:
    """The short-query serving scenario (benchmarks/serve.py --scenario queries): requests
    of several lengths padded to one bucket under the attention mask give, cut back to their
    own length, what each gives alone; and the padded batch matches onnxruntime."""
    model = bert_with_symbolic_shapes(
        model_zoo.bert_encoder(
            layers=2, seq=SEQ, hidden=64, heads=4, vocab=100, seed=0, attention_mask=True
        )
    )
    assert [d.dim_param for d in model.graph.input[1].type.tensor_type.shape.dim] == [
        "batch",
        "seq",
    ]
    compiled = ember.compile(model, threads=1, batch_polymorphic=False)
    rng = np.random.default_rng(5)
    lengths = (5, 16, 9)
    ids = np.zeros((len(lengths), SEQ), np.int64)
    mask = np.zeros((len(lengths), SEQ), np.int64)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, 100, length)
        mask[row, :length] = 1
    padded = {"input_ids": ids, "attention_mask": mask}
    batch = compiled.run(padded)
    assert_close(batch, onnxruntime_outputs(model, padded), rel=1e-4)
    hidden, pooled = (o.name for o in model.graph.output)
    for row, length in enumerate(lengths):
        alone = compiled.run(
            {
                "input_ids": ids[row : row + 1, :length],
                "attention_mask": mask[row : row + 1, :length],
            }
        )
        cut = {hidden: batch[hidden][row : row + 1, :length], pooled: batch[pooled][row : row + 1]}
        assert_close(cut, alone, rel=1e-4)
