"""GFLOP/s of the GEMM and convolution kernels at 1 and 2 threads.

    python benchmarks/kernels.py            # all cases
    python benchmarks/kernels.py --quick    # fewer repetitions

Each case is lowered with the registered kernel lowering, JIT-compiled for the host and
timed on 64-byte aligned buffers. The best of repeated calls is reported: on a shared
machine the minimum is the least disturbed sample; single-threaded runs are timed by the
calling thread's CPU clock (the kernel runs on it), which does not count preemption.
Run numpy with OPENBLAS_NUM_THREADS=<threads> for a like-for-like yardstick. numpy's (OpenBLAS) sgemm is
printed alongside the matmuls as a yardstick measured in the same process.
"""

from __future__ import annotations

import argparse
import ctypes
import time
from collections.abc import Callable, Sequence

import numpy as np
from xdsl.dialects.builtin import MemRefType, ModuleOp, f32
from xdsl.ir import Block, SSAValue
from xdsl.irdl import IRDLOperation

from ember.codegen.jit import JitModule
from ember.core.target import host_target
from ember.dialects.weight_layouts import (
    conv_lanes_blocking,
    pack_conv_lanes_weight,
    pack_conv_weight,
    pack_matmul_weight,
)
from ember.passes.conversion.kernel_to_loops.registry import lowering_for
from ember.tools.kernel_ops import conv_op, conv_out_size, matmul_op


def aligned(shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    count = int(np.prod(shape))
    raw = np.empty(count + 16, dtype=np.float32)
    offset = (-raw.ctypes.data % 64) // 4
    array = raw[offset : offset + count].reshape(shape)
    array[...] = rng.standard_normal(shape, dtype=np.float32)
    return array


def time_call(fn: Callable[[], object], min_time: float, clock: Callable[[], float]) -> float:
    fn()
    samples = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(samples) < 5:
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return min(samples)


def clock_for(threads: int) -> Callable[[], float]:
    """One thread runs on the calling thread: its CPU time ignores time spent descheduled."""
    return time.thread_time if threads == 1 else time.perf_counter


def bench_op(
    make_op: Callable[[Sequence[SSAValue]], IRDLOperation],
    arrays: Sequence[np.ndarray],
    threads: int,
    min_time: float,
) -> float:
    target = host_target(threads)
    block = Block(arg_types=[MemRefType(f32, a.shape) for a in arrays])
    op = make_op(block.args)
    block.add_op(op)
    module = ModuleOp([lowering_for(op)(op, target, "bench")])
    jit = JitModule(module, target)
    jit.function("ember_set_num_threads", [ctypes.c_int32])(threads)
    fn = jit.function("bench", [ctypes.c_void_p] * len(arrays))
    pointers = [a.ctypes.data for a in arrays]
    return time_call(lambda: fn(*pointers), min_time, clock_for(threads))


def matmul_case(m: int, k: int, n: int, threads: int, min_time: float) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    a, b, bias = aligned((m, k), rng), aligned((k, n), rng), aligned((n,), rng)
    packed, layout = pack_matmul_weight(b, host_target(threads))
    packed = np.ascontiguousarray(packed)
    out = aligned((m, n), rng)
    seconds = bench_op(
        matmul_op(layout, True, False, None), [a, packed, bias, out], threads, min_time
    )
    ref = time_call(lambda: np.matmul(a, b, out=out), min_time, clock_for(threads))
    return 2 * m * n * k / seconds / 1e9, 2 * m * n * k / ref / 1e9


def conv_case(
    x_shape: tuple[int, int, int, int],
    cout: int,
    ks: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int],
    group: int,
    threads: int,
    min_time: float,
) -> float:
    rng = np.random.default_rng(0)
    batch, cin, h, w = x_shape
    x = aligned(x_shape, rng)
    weight = rng.standard_normal((cout, cin // group, *ks), dtype=np.float32)
    ho = conv_out_size(h, ks[0], strides[0], pads[0] + pads[2], 1)
    wo = conv_out_size(w, ks[1], strides[1], pads[1] + pads[3], 1)
    # The kernel the compiler picks for this shape (graph_to_kernel: conv_lanes_blocking).
    target = host_target(threads)
    lanes = conv_lanes_blocking(cin // group, cout, group, (ho, wo), ks, strides, target)
    if lanes is not None:
        packed, layout = pack_conv_lanes_weight(weight, lanes.nr)
    else:
        packed, layout = pack_conv_weight(weight, group, target)
    bias = aligned((cout,), rng)
    out = aligned((batch, cout, ho, wo), rng)
    make = conv_op(ks, strides, pads, (1, 1), group, layout, True, False, "relu")
    seconds = bench_op(make, [x, packed, bias, out], threads, min_time)
    flops = 2 * batch * cout * ho * wo * (cin // group) * ks[0] * ks[1]
    return flops / seconds / 1e9


MATMULS = [(512, 512, 512), (1, 2048, 1000), (128, 768, 768), (128, 768, 3072)]
CONVS = [
    ("resnet 3x3 64->64 @56", (1, 64, 56, 56), 64, (3, 3), (1, 1), (1, 1, 1, 1), 1),
    ("resnet 1x1 256->64 @56", (1, 256, 56, 56), 64, (1, 1), (1, 1), (0, 0, 0, 0), 1),
    ("resnet 1x1 64->256 @56", (1, 64, 56, 56), 256, (1, 1), (1, 1), (0, 0, 0, 0), 1),
    ("resnet 3x3 128->128 @28", (1, 128, 28, 28), 128, (3, 3), (1, 1), (1, 1, 1, 1), 1),
    ("resnet 3x3/2 128 @56", (1, 128, 56, 56), 128, (3, 3), (2, 2), (1, 1, 1, 1), 1),
    ("resnet 3x3 256->256 @14", (1, 256, 14, 14), 256, (3, 3), (1, 1), (1, 1, 1, 1), 1),
    ("resnet 3x3 512->512 @7", (1, 512, 7, 7), 512, (3, 3), (1, 1), (1, 1, 1, 1), 1),
    ("resnet 1x1 512->2048 @7", (1, 512, 7, 7), 2048, (1, 1), (1, 1), (0, 0, 0, 0), 1),
    ("resnet 1x1/2 1024->2048 @14", (1, 1024, 14, 14), 2048, (1, 1), (2, 2), (0, 0, 0, 0), 1),
    ("resnet 7x7/2 3->64 @224", (1, 3, 224, 224), 64, (7, 7), (2, 2), (3, 3, 3, 3), 1),
    ("squeezenet 3x3/2 3->64 @224", (1, 3, 224, 224), 64, (3, 3), (2, 2), (0, 0, 0, 0), 1),
    ("squeezenet 3x3 16->64 @55", (1, 16, 55, 55), 64, (3, 3), (1, 1), (1, 1, 1, 1), 1),
    ("vgg 3x3 64->64 @224", (1, 64, 224, 224), 64, (3, 3), (1, 1), (1, 1, 1, 1), 1),
    ("mobilenet 3x3/2 3->32 @224", (1, 3, 224, 224), 32, (3, 3), (2, 2), (1, 1, 1, 1), 1),
    ("mobilenet 1x1 16->96 @112", (1, 16, 112, 112), 96, (1, 1), (1, 1), (0, 0, 0, 0), 1),
    ("mobilenet dw 3x3 144 @56", (1, 144, 56, 56), 144, (3, 3), (1, 1), (1, 1, 1, 1), 144),
    ("mobilenet dw 3x3/2 144 @56", (1, 144, 56, 56), 144, (3, 3), (2, 2), (1, 1, 1, 1), 144),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args()
    min_time = 0.1 if args.quick else 0.5
    for threads in args.threads:
        print(f"--- {threads} thread(s) ---")
        for m, k, n in MATMULS:
            ours, blas = matmul_case(m, k, n, threads, min_time)
            print(f"matmul {m}x{k}x{n:<6} {ours:7.1f} GFLOP/s   (numpy {blas:6.1f})")
        for label, *case in CONVS:
            print(f"conv {label:<28} {conv_case(*case, threads, min_time):7.1f} GFLOP/s")


if __name__ == "__main__":
    main()
