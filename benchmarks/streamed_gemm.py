"""[M, K] @ packed [K, N] + bias at one thread with the weight coming from memory, as a
transformer's GEMMs see it at batch 1 (issue 16): each call takes the next of `--copies`
copies of the packed weight, so with copies x weight larger than the last-level cache every
call streams its B. `--copies 1` times the same shapes with the weight hot in cache.

    python benchmarks/streamed_gemm.py --shapes 3072x768 768x3072 768x768 \
        --rows 1 8 12 16 24 32 64 128 --copies 8 --runs 40 --onnxruntime

Reported: the CPU-time minimum of `--runs` calls (the kernel runs on the calling thread),
GFLOP/s and the weight's bytes per second. `--onnxruntime` times a one-node MatMul + Add
model per copy (weight and bias as initializers, 1 intra-op thread), rotated the same way,
as the yardstick.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import time
from collections.abc import Callable, Iterator

import numpy as np
from xdsl.dialects.builtin import MemRefType, f32

from ember.core.target import host_target
from ember.dialects.weight_layouts import pack_matmul_weight
from ember.tools.kernel_ops import JitKernel, matmul_op


def cpu_minimum(fn: Callable[[], object], runs: int) -> float:
    fn()
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def call_gemm(
    gemm: JitKernel, a: np.ndarray, weights: Iterator[np.ndarray], bias: np.ndarray, out: np.ndarray
) -> None:
    gemm(a, next(weights), bias, out)


def call_session(sessions: Iterator[Callable[[np.ndarray], object]], a: np.ndarray) -> None:
    next(sessions)(a)


def onnxruntime_session(b: np.ndarray, bias: np.ndarray) -> Callable[[np.ndarray], object]:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k, n = b.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y"]), helper.make_node("Add", ["y", "c"], ["z"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["m", n])],
        [numpy_helper.from_array(b, "w"), numpy_helper.from_array(bias, "c")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return lambda a: session.run(None, {"a": a})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["3072x768", "768x3072", "768x768"])
    parser.add_argument("--rows", nargs="+", type=int, default=[8, 16, 24, 32, 64, 128])
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--onnxruntime", action="store_true")
    args = parser.parse_args()
    target = host_target(1)
    rng = np.random.default_rng(0)
    print(f"load average {os.getloadavg()}, {args.copies} weight copies, CPU-time min")
    for shape in args.shapes:
        k, n = map(int, shape.split("x"))
        b = rng.standard_normal((k, n), dtype=np.float32)
        bias = rng.standard_normal(n, dtype=np.float32)
        packed, layout = pack_matmul_weight(b, target)
        copies = [packed.copy() for _ in range(args.copies)]
        sessions = (
            [onnxruntime_session(w, bias) for w in [b] * args.copies] if args.onnxruntime else []
        )
        for m in args.rows:
            a = rng.standard_normal((m, k), dtype=np.float32)
            out = np.empty((m, n), np.float32)
            types = [MemRefType(f32, s) for s in ((m, k), packed.shape, (n,), (m, n))]
            gemm = JitKernel(matmul_op(layout, True, False), types, target)
            call = functools.partial(call_gemm, gemm, a, itertools.cycle(copies), bias, out)
            seconds = cpu_minimum(call, args.runs)
            flops = 2 * m * k * n
            line = (
                f"{m:4d}x{k} @ {k}x{n}: ember {seconds * 1e3:7.3f} ms "
                f"{flops / seconds / 1e9:6.1f} GFLOP/s, weight {k * n * 4 / seconds / 1e9:5.1f} GB/s"
            )
            if sessions:
                theirs = cpu_minimum(
                    functools.partial(call_session, itertools.cycle(sessions), a), args.runs
                )
                line += f" | onnxruntime {theirs * 1e3:7.3f} ms {flops / theirs / 1e9:6.1f} GFLOP/s"
            print(line, flush=True)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
