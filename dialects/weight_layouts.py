"""Register blocking and compile-time weight packing for the GEMM-based kernels.

The micro-kernel keeps an MR x NR block of C in SIMD registers (NR = `nvec` vectors of
`vector_width` lanes). One register holds a broadcast A element and `nvec` hold a row of B,
so MR x nvec + nvec + 1 <= vector_registers: 6x16 on AVX2 (16 ymm), 14x32 on AVX-512.

Constant operands are packed once at compile time so that the micro-kernel streams them
with unit stride:
  - matmul B [K, N]      -> [ceil(N/NR), K, NR]       layout "gemm_b_panel{NR}"
  - conv weight OIHW     -> [G, ceil(M/MR), K, MR]    layout "conv_a_panel{MR}"
    (M = Cout/G rows, K = Cin/G*kh*kw, zero-padded in M)
  - depthwise conv OIHW  -> [C, kh*kw]                layout "depthwise_c_kk"
  - recurrent R^T [D, G, K, N] -> [D, G, ceil(N/NR), K, NR]  layout "recurrent_panel{NR}"
    (each gate's matrix packed as a matmul B)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ember.core.target import Target

DEPTHWISE_LAYOUT = "depthwise_c_kk"


@dataclass(frozen=True)
class GemmBlocking:
    mr: int  # rows of C per micro-kernel (broadcast A elements)
    nvec: int  # SIMD vectors per row of C
    vw: int  # float32 lanes per vector

    @property
    def nr(self) -> int:
        return self.nvec * self.vw


def gemm_blocking(target: Target) -> GemmBlocking:
    """The largest MR for two vectors per row that fits the register file."""
    nvec = 2
    mr = (target.vector_registers - nvec - 1) // nvec
    return GemmBlocking(mr=mr, nvec=nvec, vw=target.vector_width)


def matmul_layout(nr: int) -> str:
    return f"gemm_b_panel{nr}"


def recurrent_layout(nr: int) -> str:
    return f"recurrent_panel{nr}"


def conv_layout(mr: int) -> str:
    return f"conv_a_panel{mr}"


def is_depthwise(weight_shape: tuple[int, ...], group: int) -> bool:
    """group == Cin == Cout: one filter per channel (OIHW with I == 1 and O == group)."""
    return group > 1 and weight_shape[1] == 1 and weight_shape[0] == group


def pack_matmul_weight(b: np.ndarray, target: Target) -> tuple[np.ndarray, str]:
    """Cut a constant [K, N] matrix into zero-padded column panels [N/NR, K, NR]."""
    if b.ndim != 2:
        raise ValueError(f"pack_matmul_weight: expected a 2-D [K, N] weight, got shape {b.shape}")
    nr = gemm_blocking(target).nr
    k, n = b.shape
    panels = math.ceil(n / nr)
    padded = np.zeros((k, panels * nr), dtype=np.float32)
    padded[:, :n] = b
    packed = padded.reshape(k, panels, nr).transpose(1, 0, 2)
    return np.ascontiguousarray(packed), matmul_layout(nr)


def pack_conv_weight(w: np.ndarray, group: int, target: Target) -> tuple[np.ndarray, str]:
    """Pack an OIHW filter as GEMM A row panels [G, M/MR, K, MR] (or per channel if depthwise)."""
    if w.ndim != 4:
        raise ValueError(f"pack_conv_weight: expected an OIHW weight, got shape {w.shape}")
    cout, cin_g, kh, kw = w.shape
    if cout % group:
        raise ValueError(f"pack_conv_weight: {cout} output channels not divisible by group {group}")
    w = w.astype(np.float32, copy=False)
    if is_depthwise(w.shape, group):
        return np.ascontiguousarray(w.reshape(cout, kh * kw)), DEPTHWISE_LAYOUT
    mr = gemm_blocking(target).mr
    m = cout // group
    k = cin_g * kh * kw
    tiles = math.ceil(m / mr)
    padded = np.zeros((group, tiles * mr, k), dtype=np.float32)
    padded[:, :m, :] = w.reshape(group, m, k)
    packed = padded.reshape(group, tiles, mr, k).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(packed), conv_layout(mr)


def pack_recurrent_weight(r_t: np.ndarray, target: Target) -> tuple[np.ndarray, str]:
    """Pack each gate's R^T [K, N] of a [D, G, K, N] weight as matmul B panels."""
    if r_t.ndim != 4:
        raise ValueError(f"pack_recurrent_weight: expected [D, G, K, N], got shape {r_t.shape}")
    packed = np.stack(
        [
            np.stack([pack_matmul_weight(gate.astype(np.float32), target)[0] for gate in gates])
            for gates in r_t
        ]
    )
    return packed, recurrent_layout(gemm_blocking(target).nr)
