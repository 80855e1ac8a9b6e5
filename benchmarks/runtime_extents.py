"""Kernels with runtime extents (issue 10, foundation) against the static kernels.

    flock /tmp/ember-bench.lock python benchmarks/runtime_extents.py --rows 128,384 --runs 200
    flock /tmp/ember-bench.lock python benchmarks/runtime_extents.py --kernels conv --images 224,320

For each size: the same kernel op lowered twice, once with static buffers (one program per
shape, what ember compiles today) and once with `?` dims (one program for every size, the
sizes passed as extent arguments), both JIT-compiled and called through ctypes on the same
arrays. Reported: the minimum over --runs calls of the process CPU time of one call (single
thread: the figure least disturbed by other processes on a shared machine; with --threads
above 1, wall time), engines alternated call by call. Kernels: the GEMM `[M, K] @ packed [K, N] + bias` (runtime M), and
the flat elementwise kernel `exp(x + c)` over [M, N]; with `--kernels conv`, ResNet-50's
convs in the channel-blocked layout (`?` N, H, W; bias, relu) at each --images size, the
runtime kernel compiled once per layer and the static one per size, after its NCHW stem
(the 7x7/2 conv on GEMM-packed weights and the 3x3/2 max pool). Not a test: numbers depend on the
machine (printed first) and what else runs on it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
from xdsl.dialects.builtin import DYNAMIC_INDEX, DenseArrayBase, MemRefType, StringAttr, f32, i64
from xdsl.ir import Block, Region, SSAValue
from xdsl.irdl import IRDLOperation

from ember.core.target import Target, host_target
from ember.dialects import kernel
from ember.dialects.numpy_eval import to_blocked
from ember.dialects.weight_layouts import (
    blocked_conv_blocking,
    pack_conv_lanes_weight,
    pack_conv_weight,
    pack_matmul_weight,
)
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder
from ember.tools.kernel_ops import JitKernel, conv_op, conv_out_size, matmul_op

# ResNet-50's convs (v1.5: the stride in the 3x3), as (Cin, Cout, kernel, stride, pad, the
# input's side at a 224 image): the stages' 3x3s and 1x1s, a strided 3x3 and a projection.
RESNET50_CONVS = [
    (64, 64, 3, 1, 1, 56),
    (64, 256, 1, 1, 0, 56),
    (256, 64, 1, 1, 0, 56),
    (128, 128, 3, 2, 1, 56),
    (128, 128, 3, 1, 1, 28),
    (256, 512, 1, 2, 0, 56),
    (256, 256, 3, 1, 1, 14),
    (1024, 256, 1, 1, 0, 14),
    (512, 512, 3, 1, 1, 7),
]


def best_time(calls: Sequence[Callable[[], None]], runs: int, threads: int) -> list[float]:
    """Minimum time of each call over `runs` rounds (calls alternated): process CPU time on
    one thread, wall time on more."""
    clock = time.process_time if threads == 1 else time.perf_counter
    best = [float("inf")] * len(calls)
    for _ in range(runs):
        for k, call in enumerate(calls):
            start = clock()
            call()
            best[k] = min(best[k], clock() - start)
    return best


def exp_add(args: Sequence[SSAValue]) -> kernel.ElementwiseOp:
    block = Block(arg_types=[f32, f32])
    b = LoopBuilder(block)
    result = b.exp(b.addf(block.args[0], block.args[1]))
    block.add_op(kernel.YieldOp(operands=[result]))
    return kernel.ElementwiseOp(list(args[:-1]), args[-1], Region(block))


def bound(kernel_fn: JitKernel, arrays: Sequence[np.ndarray]) -> Callable[[], None]:
    """A call of the kernel on `arrays` with its arguments prepared once."""
    arguments = kernel_fn.arguments(arrays)
    return lambda: kernel_fn.fn(*arguments)


def conv_rows(target: Target, images: Sequence[int], runs: int, threads: int) -> None:
    """The blocked channel-lanes conv with `?` N, H, W against the static kernel."""
    rng = np.random.default_rng(0)
    vw, dyn = target.vector_width, DYNAMIC_INDEX
    for cin, cout, k, stride, pad, side in RESNET50_CONVS:
        weight = rng.standard_normal((cout, cin, k, k), dtype=np.float32) * 0.05
        bias = rng.standard_normal((cout,), dtype=np.float32)
        # The blocking the compile-time shape (at the first image size) chose.
        first = side * images[0] // 224
        out_first = conv_out_size(first, k, stride, 2 * pad, 1)
        lanes = blocked_conv_blocking(
            cin, cout, 1, (out_first, out_first), (k, k), target, (stride, stride)
        )
        assert lanes is not None
        packed, layout = pack_conv_lanes_weight(weight, lanes.nr)
        make = conv_op((k, k), (stride, stride), (pad,) * 4, (1, 1), 1, layout, True, False, "relu")

        def types(n: int, h: int, ho: int, shapes: tuple = (cin, cout, packed.shape)) -> list:
            """Input, packed weight, bias and output of the blocked conv at N, H, Ho."""
            ci, co, weight_shape = shapes
            return [
                MemRefType(f32, [n, ci // vw, h, h, vw]),
                MemRefType(f32, list(weight_shape)),
                MemRefType(f32, [co]),
                MemRefType(f32, [n, co // vw, ho, ho, vw]),
            ]

        runtime = JitKernel(make, types(dyn, dyn, dyn), target, threads)
        for image in images:
            h = side * image // 224
            ho = conv_out_size(h, k, stride, 2 * pad, 1)
            static = JitKernel(make, types(1, h, ho), target, threads)
            x = to_blocked(rng.standard_normal((1, cin, h, h), dtype=np.float32), vw)
            outs = [np.full((1, cout // vw, ho, ho, vw), np.nan, np.float32) for _ in range(2)]
            for fn, out in zip((static, runtime), outs, strict=True):
                fn(x, packed, bias, out)
            assert np.allclose(outs[0], outs[1], rtol=1e-4, atol=1e-4)
            calls = [
                bound(fn, [x, packed, bias, out])
                for fn, out in zip((static, runtime), outs, strict=True)
            ]
            s, r = best_time(calls, runs, threads)
            gflops = 2 * cout * ho * ho * cin * k * k / s / 1e9
            print(
                f"conv {k}x{k}/{stride} {cin}->{cout} @{h} (image {image}, nvec {lanes.nvec}): "
                f"static {s * 1e6:.1f} us ({gflops:.0f} GFLOP/s), runtime N/H/W "
                f"{r * 1e6:.1f} us: {r / s:.3f}x"
            )


def compare(
    label: str,
    make: Callable[[Sequence[SSAValue]], IRDLOperation],
    static_types: Sequence[MemRefType],
    runtime: JitKernel,
    arrays: Sequence[np.ndarray],
    runs: int,
    threads: int,
) -> None:
    """Time the static kernel on `static_types` against `runtime` on the same arrays (the
    last one the output, checked equal first)."""
    static = JitKernel(make, static_types, runtime.target, threads)
    outs = []
    for fn in (static, runtime):
        arrays[-1][...] = np.nan
        fn(*arrays)
        outs.append(arrays[-1].copy())
    assert np.allclose(outs[0], outs[1], rtol=1e-4, atol=1e-4), label
    s, r = best_time([bound(fn, arrays) for fn in (static, runtime)], runs, threads)
    print(f"{label}: static {s * 1e6:.1f} us, runtime N/H/W {r * 1e6:.1f} us: {r / s:.3f}x")


def stem_rows(target: Target, images: Sequence[int], runs: int, threads: int) -> None:
    """ResNet's NCHW stem: the 7x7/2 3->64 conv (static: the direct band-plane kernel;
    runtime: the im2col GEMM, both on the GEMM-packed weight) and the 3x3/2 max pool."""
    rng = np.random.default_rng(1)
    dyn = DYNAMIC_INDEX
    weight = rng.standard_normal((64, 3, 7, 7), dtype=np.float32) * 0.1
    packed, layout = pack_conv_weight(weight, 1, target)
    bias = rng.standard_normal((64,), dtype=np.float32)
    conv = conv_op((7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1, layout, True, False, "relu")

    def pool(args: Sequence[SSAValue]) -> kernel.PoolOp:
        window = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
        props = {k: DenseArrayBase.from_list(i64, v) for k, v in window.items()}
        return kernel.PoolOp(operands=list(args), properties={"kind": StringAttr("max"), **props})

    def conv_types(n: int, h: int, ho: int) -> list[MemRefType]:
        return [
            MemRefType(f32, [n, 3, h, h]),
            MemRefType(f32, list(packed.shape)),
            MemRefType(f32, [64]),
            MemRefType(f32, [n, 64, ho, ho]),
        ]

    def pool_types(n: int, h: int, ho: int) -> list[MemRefType]:
        return [MemRefType(f32, [n, 64, h, h]), MemRefType(f32, [n, 64, ho, ho])]

    runtime_conv = JitKernel(conv, conv_types(dyn, dyn, dyn), target, threads)
    runtime_pool = JitKernel(pool, pool_types(dyn, dyn, dyn), target, threads)
    for image in images:
        side = conv_out_size(image, 7, 2, 6, 1)
        x = rng.standard_normal((1, 3, image, image), dtype=np.float32)
        y = np.empty((1, 64, side, side), np.float32)
        compare(
            f"stem conv 7x7/2 3->64 @{image}",
            conv,
            conv_types(1, image, side),
            runtime_conv,
            [x, packed, bias, y],
            runs,
            threads,
        )
        pooled = conv_out_size(side, 3, 2, 2, 1)
        z = np.empty((1, 64, pooled, pooled), np.float32)
        compare(
            f"stem max pool 3x3/2 64 @{side}",
            pool,
            pool_types(1, side, pooled),
            runtime_pool,
            [y, z],
            runs,
            threads,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="128,384", help="M values, comma-separated")
    parser.add_argument("--k", type=int, default=768)
    parser.add_argument("--n", type=int, default=768)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kernels", default="gemm", help="gemm (and exp), conv, or both")
    parser.add_argument("--images", default="224,320", help="conv: image sizes")
    args = parser.parse_args()
    threads = args.threads
    target = host_target(threads)
    print(f"target: {target.cpu}, {target.vector_width} lanes, {threads} thread(s)")
    if "conv" in args.kernels.split(","):
        images = [int(i) for i in args.images.split(",")]
        stem_rows(target, images, args.runs, threads)
        conv_rows(target, images, args.runs, threads)
    if "gemm" not in args.kernels.split(","):
        return
    rng = np.random.default_rng(0)
    k, n, dyn = args.k, args.n, DYNAMIC_INDEX
    weight = rng.standard_normal((k, n), dtype=np.float32)
    packed, layout = pack_matmul_weight(weight, target)
    bias = rng.standard_normal((n,), dtype=np.float32)
    gemm = matmul_op(layout, True, False, None)

    def gemm_types(m: int) -> list[MemRefType]:
        return [
            MemRefType(f32, [m, k]),
            MemRefType(f32, list(packed.shape)),
            MemRefType(f32, [n]),
            MemRefType(f32, [m, n]),
        ]

    def flat_types(m: int) -> list[MemRefType]:
        return [MemRefType(f32, [m, n]), MemRefType(f32, [1]), MemRefType(f32, [m, n])]

    runtime_gemm = JitKernel(gemm, gemm_types(dyn), target, threads)
    runtime_flat = JitKernel(exp_add, flat_types(dyn), target, threads)
    for m in [int(r) for r in args.rows.split(",")]:
        a = rng.standard_normal((m, k), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        expected = a @ weight + bias
        static_gemm = JitKernel(gemm, gemm_types(m), target, threads)
        for fn in (static_gemm, runtime_gemm):
            out[:] = np.nan
            fn(a, packed, bias, out)
            assert np.allclose(out, expected, rtol=1e-3, atol=1e-3)
        calls = [bound(fn, [a, packed, bias, out]) for fn in (static_gemm, runtime_gemm)]
        s, r = best_time(calls, args.runs, threads)
        gflops = 2 * m * k * n / s / 1e9
        print(
            f"gemm {m}x{k} @ {k}x{n} + bias: static {s * 1e6:.1f} us ({gflops:.0f} GFLOP/s), "
            f"runtime M {r * 1e6:.1f} us: {r / s:.3f}x"
        )
        x = rng.standard_normal((m, n), dtype=np.float32)
        c = np.array([0.5], np.float32)
        static_flat = JitKernel(exp_add, flat_types(m), target, threads)
        calls = [bound(fn, [x, c, out]) for fn in (static_flat, runtime_flat)]
        s, r = best_time(calls, args.runs, threads)
        print(
            f"exp(x + c) {m}x{n}: static {s * 1e6:.1f} us, runtime {r * 1e6:.1f} us: {r / s:.3f}x"
        )


if __name__ == "__main__":
    main()
