"""kernel.matmul lowering: IR shape of the micro-kernel, and numerics against numpy (float64).

Tolerance: max |out - ref| <= 1e-4 * max(1, max |ref|) (float32 accumulation over K <= 2048).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from xdsl.dialects.builtin import MemRefType, ModuleOp, f32
from xdsl.ir import Block

from ember.core.target import Target, host_target, named_target
from ember.dialects.weight_layouts import gemm_blocking, pack_matmul_weight
from ember.passes.conversion.kernel_to_loops import matmul, simd  # noqa: F401 (registers matmul)
from ember.passes.conversion.kernel_to_loops.registry import lowering_for
from ember.tests.filecheck_util import assert_filecheck
from ember.tests.kernels.harness import run_kernel_op
from ember.tools.kernel_ops import ACTIVATION_PARAMS, matmul_op

RTOL = 1e-4


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x)


ACTIVATIONS: dict[str, tuple[list[float], Callable[[np.ndarray], np.ndarray]]] = {
    "relu": (ACTIVATION_PARAMS["relu"], lambda x: np.maximum(x, 0)),
    "clip": (ACTIVATION_PARAMS["clip"], lambda x: np.clip(x, -0.5, 0.75)),
    "leaky_relu": (ACTIVATION_PARAMS["leaky_relu"], lambda x: np.where(x > 0, x, 0.1 * x)),
    "sigmoid": (ACTIVATION_PARAMS["sigmoid"], lambda x: 1 / (1 + np.exp(-x))),
    "tanh": (ACTIVATION_PARAMS["tanh"], np.tanh),
    "gelu": (ACTIVATION_PARAMS["gelu"], lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2)))),
    "gelu_tanh": (
        ACTIVATION_PARAMS["gelu_tanh"],
        lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    ),
}


def reference(
    a: np.ndarray,
    b: np.ndarray,
    bias: np.ndarray | None,
    residual: np.ndarray | None,
    activation: str | None,
) -> np.ndarray:
    out = np.matmul(a.astype(np.float64), b.astype(np.float64))
    if bias is not None:
        out = out + bias
    if residual is not None:
        out = out + residual
    if activation is not None:
        out = ACTIVATIONS[activation][1](out)
    return out


def run_matmul(
    a_shape: tuple[int, ...],
    b_shape: tuple[int, ...],
    *,
    packed: bool,
    bias: bool = False,
    residual: bool = False,
    activation: str | None = None,
    threads: int = 1,
    seed: int = 0,
    bias_shape: tuple[int, ...] | None = None,
) -> None:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(a_shape, dtype=np.float32)
    b = rng.standard_normal(b_shape, dtype=np.float32)
    out_shape = np.broadcast_shapes(a_shape[:-2], b_shape[:-2]) + (a_shape[-2], b_shape[-1])
    n = b_shape[-1]
    bias_arr = rng.standard_normal(bias_shape or (n,), dtype=np.float32) if bias else None
    res_arr = rng.standard_normal(out_shape, dtype=np.float32) if residual else None
    target = host_target(threads)
    if packed:
        b_operand, layout = pack_matmul_weight(b, target)
    else:
        b_operand, layout = b, "plain"
    out = np.full(out_shape, np.nan, dtype=np.float32)
    arrays = [a, b_operand, *(x for x in (bias_arr, res_arr) if x is not None), out]
    run_kernel_op(matmul_op(layout, bias, residual, activation), arrays, target, threads)
    ref = reference(a, b, bias_arr, res_arr, activation)
    err = np.max(np.abs(out - ref))
    assert err <= RTOL * max(1.0, np.max(np.abs(ref))), f"max error {err}"


# (M, K, N): M/N tails of every size class, K below/above the unroll factor.
SHAPES = [
    (1, 1, 1),
    (1, 3, 1000),
    (5, 7, 19),
    (6, 16, 16),
    (13, 3, 49),
    (7, 33, 17),
    (64, 64, 64),
    (37, 130, 100),
]


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "plain"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul_shapes(shape: tuple[int, int, int], packed: bool) -> None:
    m, k, n = shape
    run_matmul((m, k), (k, n), packed=packed)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_matmul_epilogue(activation: str) -> None:
    run_matmul((9, 20), (20, 21), packed=True, bias=True, residual=True, activation=activation)


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "plain"])
def test_matmul_bias_residual(packed: bool) -> None:
    run_matmul((11, 17), (17, 29), packed=packed, bias=True, residual=True, activation="relu")


@pytest.mark.parametrize(
    "a_shape,b_shape",
    [
        ((2, 5, 8), (8, 24)),  # 3-D activations @ 2-D plain b
        ((2, 3, 5, 7), (3, 7, 9)),  # batch broadcast over the leading dim
        ((2, 1, 4, 6), (1, 3, 6, 10)),  # both sides broadcast
        ((4, 12, 64), (4, 64, 12)),  # attention-score shape
    ],
)
def test_matmul_batched_plain(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> None:
    run_matmul(a_shape, b_shape, packed=False)


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "plain"])
@pytest.mark.parametrize("threads", [1, 2])
def test_matmul_k_blocked_epilogue(packed: bool, threads: int) -> None:
    """K > one L1 block: partial sums live in C, epilogue split over first/last block."""
    run_matmul(
        (13, 700),
        (700, 21),
        packed=packed,
        bias=True,
        residual=True,
        activation="sigmoid",
        threads=threads,
    )


@pytest.mark.parametrize(
    "a_shape,bias_shape",
    [
        ((9, 20), (9, 21)),
        ((9, 20), (9, 1)),
        ((9, 20), (1, 21)),
        ((9, 20), ()),
        ((3, 5, 20), (3, 1, 21)),
        ((3, 5, 20), (5, 21)),
    ],
)
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "plain"])
def test_matmul_bias_broadcast(
    a_shape: tuple[int, ...], bias_shape: tuple[int, ...], packed: bool
) -> None:
    run_matmul(a_shape, (20, 21), packed=packed, bias=True, bias_shape=bias_shape)


def test_matmul_packed_3d_activation() -> None:
    run_matmul((2, 7, 33), (33, 40), packed=True, bias=True, activation="gelu")


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "plain"])
@pytest.mark.parametrize("shape", [(1, 64, 1000), (50, 40, 70), (130, 16, 20)])
def test_matmul_two_threads(
    shape: tuple[int, int, int], packed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # These products are below the size worth a second thread: split them anyway.
    monkeypatch.setattr(simd, "PARALLEL_MIN_FLOPS", 0)
    m, k, n = shape
    run_matmul((m, k), (k, n), packed=packed, bias=True, threads=2)


@pytest.mark.parametrize(("m", "parallel"), [(8, False), (512, True)])
def test_a_small_product_runs_on_the_calling_thread(m: int, parallel: bool) -> None:
    """At 2 threads an 8x64 @ 64x48 product (49 kflop, ~1 us) is a plain loop: a parallel
    region cost ~15 us of hand-over on a loaded machine; 512 rows (3 Mflop) are split."""
    target = named_target("x86-64-v4", threads=2)
    packed, layout = pack_matmul_weight(np.zeros((64, 48), np.float32), target)
    block = Block(arg_types=[MemRefType(f32, (m, 64)), MemRefType(f32, packed.shape)])
    out = Block(arg_types=[MemRefType(f32, (m, 48))]).args[0]
    op = matmul_op(layout, False, False, None)([*block.args, out])
    fn = lowering_for(op)(op, target, "mm")
    ModuleOp([fn]).verify()
    assert ("scf.parallel" in str(fn)) == parallel
    run_matmul((m, 64), (64, 48), packed=True, bias=True, threads=2)


def test_matmul_resnet_fc() -> None:
    run_matmul((1, 2048), (2048, 1000), packed=True, bias=True, threads=2)


def test_pack_matmul_weight_layout() -> None:
    target = Target(vector_width=8, vector_registers=16)
    b = np.arange(3 * 20, dtype=np.float32).reshape(3, 20)
    packed, layout = pack_matmul_weight(b, target)
    assert layout == "gemm_b_panel16"
    assert packed.shape == (2, 3, 16)
    np.testing.assert_array_equal(packed[1, :, :4], b[:, 16:])
    assert not packed[1, :, 4:].any()


def test_blocking_follows_target() -> None:
    assert gemm_blocking(named_target("x86-64-v3")) == gemm_blocking(Target())
    avx2 = gemm_blocking(named_target("x86-64-v3"))
    avx512 = gemm_blocking(named_target("x86-64-v4"))
    assert (avx2.mr, avx2.nr) == (6, 16)
    assert (avx512.mr, avx512.nr) == (14, 32)


def lowered_ir(a_shape: tuple[int, ...], b_shape: tuple[int, ...], layout: str, n: int) -> str:
    block = Block(arg_types=[MemRefType(f32, a_shape), MemRefType(f32, b_shape)])
    out_shape = (a_shape[0], n)
    out = Block(arg_types=[MemRefType(f32, out_shape)]).args[0]
    op = matmul_op(layout, False, False, "relu")([*block.args, out])
    fn = lowering_for(op)(op, Target(vector_width=8, vector_registers=16, threads=1), "mm")
    module = ModuleOp([fn])
    module.verify()
    return str(module)


def test_matmul_ir_register_blocking() -> None:
    """6x16 tile: 12 vector accumulators carried by the k loop, 12 FMAs per k step."""
    ir = lowered_ir((12, 8), (2, 8, 16), "gemm_b_panel16", 20)
    accs = ", ".join(["vector<8xf32>"] * 12)
    checks = """
    CHECK: func.func @mm(%0: memref<12x8xf32>, %1: memref<2x8x16xf32>, %2: memref<12x20xf32>)
    CHECK: scf.parallel
    CHECK: scf.for {{.*}} iter_args({{[^)]*}}) -> ({{ACCS}})
    CHECK: vector.load %1[{{.*}}] : memref<2x8x16xf32>, vector<8xf32>
    CHECK-COUNT-12: vector.fma
    CHECK: arith.maximumf
    CHECK: vector.store
    """.replace("{{ACCS}}", accs)
    assert_filecheck(ir, checks)


def test_matmul_ir_avx512_blocking() -> None:
    """On a 16-lane target the same lowering builds a 14x32 tile: 28 accumulators."""
    target = named_target("x86-64-v4", threads=2)
    b = np.zeros((64, 40), np.float32)
    packed, layout = pack_matmul_weight(b, target)
    assert layout == "gemm_b_panel32" and packed.shape == (2, 64, 32)
    block = Block(arg_types=[MemRefType(f32, (30, 64)), MemRefType(f32, packed.shape)])
    out = Block(arg_types=[MemRefType(f32, (30, 40))]).args[0]
    op = matmul_op(layout, False, False, None)([*block.args, out])
    module = ModuleOp([lowering_for(op)(op, target, "mm")])
    module.verify()
    accs = ", ".join(["vector<16xf32>"] * 28)
    checks = """
    CHECK: scf.for {{.*}} iter_args({{[^)]*}}) -> ({{ACCS}})
    CHECK-COUNT-28: vector.fma {{.*}} : vector<16xf32>
    """.replace("{{ACCS}}", accs)
    assert_filecheck(str(module), checks)


def test_matmul_ir_k_blocked() -> None:
    """K = 700 > one L1 block: a loop over k blocks; C seeds every block but the first."""
    ir = lowered_ir((8, 700), (1, 700, 16), "gemm_b_panel16", 16)
    assert_filecheck(
        ir,
        """
        CHECK: scf.parallel
        CHECK: scf.for %[[KB:[0-9]+]] =
        CHECK: arith.cmpi eq, %[[KB]]
        CHECK: vector.load %2
        CHECK: arith.select
        CHECK: scf.for {{.*}} iter_args
        CHECK-COUNT-48: vector.fma
        CHECK: arith.cmpi eq, %[[KB]]
        CHECK: arith.maximumf
        CHECK: arith.select
        CHECK: vector.store
        """,
    )


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "plain"])
@pytest.mark.parametrize(
    "a_shape,bias_shape",
    [
        ((3, 17, 40), (21,)),  # odd batch, M tail: the rows of all batches form one GEMM
        ((2, 3, 5, 40), (1, 1, 21)),  # two batch dims, a bias with unit leading dims
        ((3, 5, 40), (3, 1, 21)),  # a per-batch bias: not folded
        ((3, 5, 40), (5, 21)),  # a per-row bias: not folded
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_matmul_batch_folded_into_m(
    a_shape: tuple[int, ...], bias_shape: tuple[int, ...], packed: bool, threads: int
) -> None:
    run_matmul(
        a_shape,
        (40, 21),
        packed=packed,
        bias=True,
        bias_shape=bias_shape,
        residual=True,
        activation="gelu",
        threads=threads,
    )


def test_matmul_ir_batch_folded_into_m() -> None:
    """[8, 64, K] @ packed [K, N]: A, C and the residual are viewed as [512, K] / [512, N]
    and the parallel units are panels of the 512-row GEMM (no batch coordinate in the
    tile addressing). A batched B keeps the per-batch loop."""
    target = named_target("x86-64-v4", threads=1)
    packed, layout = pack_matmul_weight(np.zeros((48, 64), np.float32), target)
    block = Block(
        arg_types=[
            MemRefType(f32, (8, 64, 48)),
            MemRefType(f32, packed.shape),
            MemRefType(f32, (64,)),
            MemRefType(f32, (8, 64, 64)),
            MemRefType(f32, (8, 64, 64)),
        ]
    )
    op = matmul_op(layout, True, True, None)(list(block.args))
    fn = lowering_for(op)(op, target, "mm")
    ModuleOp([fn]).verify()
    assert_filecheck(
        str(fn),
        """
        CHECK: memref.reinterpret_cast %0 {{.*}} to memref<512x48xf32>
        CHECK: memref.reinterpret_cast %4 {{.*}} to memref<512x64xf32>
        CHECK: memref.reinterpret_cast %3 {{.*}} to memref<512x64xf32>
        CHECK-NOT: memref<8x64x48xf32>
        CHECK: scf.parallel
        CHECK: memref.load {{.*}} : memref<512x48xf32>
        """,
    )
    assert fn.attributes["ember.kernel_summary"].data.startswith("matmul (8x64)x48 @ 48x64")

    plain = Block(arg_types=[MemRefType(f32, (8, 64, 48)), MemRefType(f32, (8, 48, 64))])
    out = Block(arg_types=[MemRefType(f32, (8, 64, 64))]).args[0]
    batched = matmul_op("plain", False, False, None)([*plain.args, out])
    batched_ir = str(lowering_for(batched)(batched, target, "mm"))
    assert "reinterpret_cast" not in batched_ir
