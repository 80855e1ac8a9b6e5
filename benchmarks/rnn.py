"""Recurrent layers and the speech/OCR models, ember vs onnxruntime: LSTM and GRU layers
(sequence 100, batch 1 and 8, hidden 128/256/512, input size = hidden) and the three models of
tools/model_zoo.py (vad_model, crnn_model, greedy_decoder), at 1 and 2 threads.

    python benchmarks/rnn.py                       # everything, 1 and 2 threads
    python benchmarks/rnn.py --only lstm --hidden 128 --batch 1 --threads 1 --runs 30

The engines alternate run by run (ember, onnxruntime, ember, ...) so that the load of other
processes on a shared machine falls on both alike. Times are the process CPU time at 1 thread
(robust against other processes) and wall time at 2; min and median over --runs runs after
--warmup. Prints a markdown table row per configuration (ratio = ember min / onnxruntime min)
and the max difference of ember's outputs from onnxruntime's.
Not a test: numbers depend on the machine and its other load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ember  # noqa: E402
from ember.tools.bench import alternating_ms, onnxruntime_session  # noqa: E402
from ember.tools.model_zoo import (  # noqa: E402
    crnn_model,
    greedy_decoder,
    recurrent_layer,
    vad_model,
)


def _layer_case(kind: str, batch: int, hidden: int) -> tuple[onnx.ModelProto, dict]:
    x = np.random.default_rng(0).standard_normal((100, batch, hidden)).astype(np.float32)
    return recurrent_layer(kind, 100, batch, hidden), {"X": x}


def _vad_case() -> tuple[onnx.ModelProto, dict]:
    rng = np.random.default_rng(0)
    state = np.zeros((1, 1, 32), np.float32)
    audio = (rng.standard_normal((1, 512)) * 0.3).astype(np.float32)
    feeds = {"audio": audio, "sr": np.array(16000, np.int64), "h0": state, "c0": state}
    return vad_model(), feeds


def _crnn_case() -> tuple[onnx.ModelProto, dict]:
    image = np.random.default_rng(0).standard_normal((1, 1, 32, 64)).astype(np.float32)
    return crnn_model(), {"input": image}


def _decoder_case() -> tuple[onnx.ModelProto, dict]:
    h0 = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
    feeds = {"steps": np.array(32, np.int64), "bos": np.array([3], np.int64), "h0": h0}
    return greedy_decoder(), feeds


def cases(only: list[str], batches: list[int], hiddens: list[int]) -> dict[str, Callable]:
    table: dict[str, Callable] = {}
    for kind in ("LSTM", "GRU"):
        if kind.lower() in only:
            for batch in batches:
                for hidden in hiddens:
                    name = f"{kind} seq 100 batch {batch} hidden {hidden}"
                    table[name] = lambda k=kind, b=batch, h=hidden: _layer_case(k, b, h)
    models = {"vad": _vad_case, "crnn": _crnn_case, "decoder": _decoder_case}
    table.update({f"{name} model": make for name, make in models.items() if name in only})
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=["lstm", "gru", "vad", "crnn", "decoder"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--hidden", nargs="+", type=int, default=[128, 256, 512])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    print(
        "| case | threads | ember min (median) ms | onnxruntime min (median) ms | ratio | max diff |"
    )
    print("|---|---|---|---|---|---|")
    for name, make in cases(args.only, args.batch, args.hidden).items():
        model, feeds = make()
        for threads in args.threads:
            compiled = ember.compile(model, threads=threads)
            session = onnxruntime_session(model, threads)
            names = [o.name for o in session.get_outputs()]
            got = compiled.run(feeds)
            expected = dict(zip(names, session.run(names, feeds)))
            diff = max(float(np.abs(got[n].astype(np.float64) - expected[n]).max()) for n in names)
            times = alternating_ms(
                {
                    "ember": lambda c=compiled, f=feeds: c.run(f),
                    "onnxruntime": lambda s=session, n=names, f=feeds: s.run(n, f),
                },
                args.runs,
                args.warmup,
                threads,
            )
            e, o = times["ember"], times["onnxruntime"]
            print(
                f"| {name} | {threads} | {min(e):.3f} ({statistics.median(e):.3f}) "
                f"| {min(o):.3f} ({statistics.median(o):.3f}) | {min(e) / min(o):.2f} "
                f"| {diff:.2g} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
