"""Per-row latency of BERT encoders at several batch sizes (does batching pay?).

    python benchmarks/batched_transformers.py --models bert_4x256_64 bert_base_128 \
        --batches 1 4 8 16 --threads 1 2 --runs 10
    python benchmarks/batched_transformers.py --models bert_4x256_64 bert_base_128 \
        --lengths 8 16 32 --batches 1 8 16 32 --runs 10     # short requests (search queries)

Each model gets a symbolic batch (`symbolic_zoo.bert_with_symbolic_shapes`) and is compiled
once per batch size with the shape pinned. `--lengths` builds each model at those sequence
lengths instead of the one in its name (same weights but the position table's length). Reported: the least disturbed of --runs runs
divided by the batch (CPU time of the process at 1 thread, wall time at more threads, as in
min_latency.py). Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

import numpy as np
import onnx
from compare import _bert_base as bert_base
from compare import _sentence_encoder as sentence_encoder
from compare import machine
from min_latency import least

import ember
from ember.tools import model_zoo
from ember.tools.symbolic_zoo import bert_with_symbolic_shapes

# name -> builder(sequence length or None for the model's own)
MODELS: dict[str, Callable[[int | None], onnx.ModelProto]] = {
    "bert_4x256_64": lambda seq: model_zoo.bert_encoder(
        layers=4, seq=seq or 64, hidden=256, heads=4, vocab=1000, seed=0
    ),
    "bert_2x128_64": lambda seq: model_zoo.bert_encoder(
        layers=2, seq=seq or 64, hidden=128, heads=4, vocab=1000, seed=0
    ),
    "bert_base_128": lambda seq: bert_base(seq or 128),
    "bert_base_384": lambda seq: bert_base(seq or 384),
    "sentence_encoder": lambda seq: sentence_encoder(seq or 128),
}


def batch_feeds(model: onnx.ModelProto, batch: int) -> dict[str, np.ndarray]:
    """Token ids in the vocabulary, segment 0, a mask over the first three quarters."""
    seq = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    rng = np.random.default_rng(batch)
    feeds: dict[str, np.ndarray] = {}
    for info in model.graph.input:
        if info.name == "input_ids":
            feeds[info.name] = rng.integers(0, 100, size=(batch, seq), dtype=np.int64)
        elif info.name == "attention_mask":
            row = (np.arange(seq) < (3 * seq + 3) // 4).astype(np.int64)
            feeds[info.name] = np.tile(row, (batch, 1))
        else:
            feeds[info.name] = np.zeros((batch, seq), np.int64)
    return feeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["bert_4x256_64"], choices=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8, 16])
    parser.add_argument("--threads", nargs="+", type=int, default=[1])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--lengths", nargs="+", type=int, help="sequence lengths (default: the model's own)"
    )
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"minimum of {args.runs} runs / batch: CPU time at 1 thread, wall time otherwise\n")
    print("| model          | seq | thr | batch | ms/row | vs batch 1 |")
    print("|----------------|-----|-----|-------|--------|------------|")
    for name, length in ((n, s) for n in args.models for s in args.lengths or [None]):
        fixed = MODELS[name](length)
        seq = fixed.graph.input[0].type.tensor_type.shape.dim[1].dim_value
        symbolic = bert_with_symbolic_shapes(fixed)
        for threads in args.threads:
            first = None
            for batch in args.batches:
                feeds = batch_feeds(fixed, batch)
                shapes = {key: value.shape for key, value in feeds.items()}
                compiled = ember.compile(symbolic, threads=threads, input_shapes=shapes)
                per_row = least(functools.partial(compiled.run, feeds), args.runs, threads) / batch
                first = first or per_row
                print(
                    f"| {name:<14} | {seq:>3} | {threads:>3} | {batch:>5} | {per_row:>6.3f} | "
                    f"{first / per_row:>9.2f}x |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
