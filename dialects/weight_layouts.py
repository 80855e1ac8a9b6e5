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
  - conv weight OIHW     -> [ceil(O/NR), kh*I*kw, NR] layout "conv_lanes_panel{NR}"
    (output channels across the lanes, k = (r, ci, s); for the channel-lanes direct conv,
    chosen per shape by `conv_lanes_blocking`)
  - recurrent R^T [D, G, K, N] -> [D, G, ceil(N/NR), K, NR]  layout "recurrent_panel{NR}"
    (each gate's matrix packed as a matmul B)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np

from ember.core.target import Target

DEPTHWISE_LAYOUT = "depthwise_c_kk"


@dataclass(frozen=True)
class GemmBlocking:
    mr: int  # rows of C per micro-kernel (broadcast A elements)
    nvec: int  # SIMD vectors per row of C
    vw: int  # lanes per vector (of float32, or of the element type asked for)

    @property
    def nr(self) -> int:
        return self.nvec * self.vw


def gemm_blocking(target: Target, itemsize: int = 4) -> GemmBlocking:
    """The largest MR for two vectors per row that fits the register file, for elements of
    `itemsize` bytes (float32: 16 lanes a zmm; float64: 8)."""
    nvec = 2
    mr = (target.vector_registers - nvec - 1) // nvec
    return GemmBlocking(mr=mr, nvec=nvec, vw=target.vector_width * 4 // itemsize)


def matmul_layout(nr: int) -> str:
    return f"gemm_b_panel{nr}"


def recurrent_layout(nr: int) -> str:
    return f"recurrent_panel{nr}"


def conv_layout(mr: int) -> str:
    return f"conv_a_panel{mr}"


def conv_lanes_layout(nr: int) -> str:
    return f"conv_lanes_panel{nr}"


@dataclass(frozen=True)
class LanesBlocking:
    """Register tile of the channel-lanes direct conv: `mr` consecutive output columns of one
    row x `nvec` vectors of output channels (NR = nvec x VW channels per block)."""

    nvec: int
    vw: int
    mr: int

    @property
    def nr(self) -> int:
        return self.nvec * self.vw


# The channel-lanes conv transposes each tile through scratch in its epilogue (about one
# scalar copy per output element): it pays once the reduction is long enough.
LANES_MIN_TAPS = 256


# A strided 1x1 conv reads its input in place where the GEMM copies it column by column: the
# lanes kernel wins from 64 input channels (ResNet-18's 64->128 @56/2).
LANES_MIN_TAPS_STRIDED_1X1 = 64

# 1x1 convs with at least this many times more input than output channels: long reductions
# into few output rows, where the GEMM's MR-row tiles idle and its panels stream the input.
LANES_REDUCING_1X1 = 4


# Accumulators per channel-lanes tile: with more, LLVM spills on AVX-512 (measured: 3x3
# 256->256 at 14x14, 1 thread: 14x2 tiles 215 GFLOP/s, 7x2 281).
LANES_MAX_ACCUMULATORS = 24


# Accumulators per tile of the channel-blocked conv (the blocked-layout pass): 16, not 24
# (measured, AVX-512, 1 thread, two vectors of channels: 3x3 512->512 @12 12x2 tiles 3188
# us, 6x2 2237; 3x3 @14, @28, 1x1 and 5x5/2 layers within 2% either way).
BLOCKED_MAX_ACCUMULATORS = 16
# With 32 vector registers, blocked convs with more than one tap take 24 (two vectors of
# channels x 12 columns) when every tap's weights, the accumulators and one broadcast still
# fit the registers (the kernel's tap order by input column): AVX-512, 1 thread, ms, 16 ->
# 24 (and one -> two vectors where rows were wide): 3x3 256->64 @160 29.4 -> 28.5, 512->512
# @20 7.05 -> 6.87, 64->64 @224 14.9 -> 14.5, 3x3/2 64->128 in 160 3.96 -> 3.88, the other
# ResNet/VGG/DenseNet 3x3 layers 0-2%. 1x1 convs keep 16 (64->256 @160 3.85 -> 4.41 with
# 24); 28 spills (3x3 256->64 @160 54 ms).
BLOCKED_WIDE_ACCUMULATORS = 24


def blocked_max_accumulators(kernel: tuple[int, int], nvec: int, target: Target) -> int:
    """Accumulators per tile of the channel-blocked conv (BLOCKED_WIDE_ACCUMULATORS)."""
    wide = BLOCKED_WIDE_ACCUMULATORS
    taps_fit = nvec * (kernel[1] + wide // nvec) + 1 <= target.vector_registers
    return wide if kernel != (1, 1) and taps_fit else BLOCKED_MAX_ACCUMULATORS


def lanes_row_tile_max(
    nvec: int, target: Target, max_accumulators: int = LANES_MAX_ACCUMULATORS
) -> int:
    """Most output columns per channel-lanes tile: mr x nvec accumulators, nvec weight
    vectors and one broadcast in the register file; at most one vector (the epilogue
    moves a tile row of one channel as one vector)."""
    fit = min(target.vector_registers - nvec - 1, max_accumulators)
    return min(target.vector_width, fit // nvec)


def lanes_row_tile(
    wo: int, nvec: int, target: Target, max_accumulators: int = LANES_MAX_ACCUMULATORS
) -> int:
    """Columns per channel-lanes tile: output rows cut into balanced tiles."""
    tiles = math.ceil(wo / lanes_row_tile_max(nvec, target, max_accumulators))
    return math.ceil(wo / tiles)


def conv_lanes_blocking(
    cin_g: int,
    cout: int,
    group: int,
    out_hw: tuple[int, int],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    target: Target,
) -> LanesBlocking | None:
    """The channel-lanes tile for this conv, or None when the im2col GEMM should run it.

    The channel-lanes conv puts output channels in the vector lanes and output columns in
    registers, reading activations in place (broadcasts; no im2col copy). Measured on
    ResNet-50's layers (AVX-512, 1 thread, GFLOP/s GEMM -> lanes): it wins where the GEMM
    packs im2col with scalar code (column stride > 1 or outputs narrower than a GEMM panel:
    3x3 at 28x28 175 -> 266, 14x14 196 -> 281, 7x7 152 -> 310, 3x3/2 166 -> 252) and where
    N = Ho*Wo is under two panels (1x1 at 7x7: 184 -> 206-236); the GEMM stays ahead on wide
    outputs (3x3 at 56x56 227 vs 197) and on 1x1 convs at 14x14 and up (230 vs 208).
    Since the epilogue transposes tiles with shuffles (no scalar copy per output), also
    strided 1x1 convs (whose GEMM packs im2col with scalar code: ResNet-50's projections,
    us GEMM -> lanes: 256->512 @56/2 1462 -> 976, 512->1024 @28/2 1226 -> 1103, ResNet-18's
    64->128 @56/2 78 -> 62) and 1x1 convs reducing channels at least 4-fold at any size
    (256->64 @56 571 -> 455, 512->128 @28 464 -> 426, 1024->256 @14 458 -> 425, inception's
    576->128 @14 127 -> 115); widening ones stay on the GEMM (256->1024 @14 448 vs 510).
    """
    ho, wo = out_hw
    taps = cin_g * kernel[0] * kernel[1]
    if group != 1:
        return None
    gemm_nr = gemm_blocking(target).nr
    if kernel == (1, 1):
        strided = strides != (1, 1) and taps >= LANES_MIN_TAPS_STRIDED_1X1
        narrow = ho * wo <= 2 * gemm_nr or cin_g >= LANES_REDUCING_1X1 * cout
        if not (strided or (narrow and taps >= LANES_MIN_TAPS)):
            return None
    elif taps < LANES_MIN_TAPS or (strides[1] == 1 and wo >= gemm_nr):
        return None
    vw = target.vector_width
    best: tuple[float, LanesBlocking] | None = None
    for nvec in (2, 3, 4):
        if lanes_row_tile_max(nvec, target) < 1:
            continue
        padded = math.ceil(cout / (nvec * vw)) * nvec * vw
        # Channel blocks of two vectors measure fastest; wider ones only to idle fewer lanes.
        score = cout / padded - 0.01 * nvec
        if best is None or score > best[0]:
            best = (score, LanesBlocking(nvec, vw, lanes_row_tile(wo, nvec, target)))
    assert best is not None
    return best[1]


def blocked_conv_blocking(
    cin: int,
    cout: int,
    group: int,
    out_hw: tuple[int, int],
    kernel: tuple[int, int],
    target: Target,
    strides: tuple[int, int] = (1, 1),
) -> LanesBlocking | None:
    """The channel-lanes tile of a conv in the channel-blocked layout [N, C/VW, H, W, VW], or
    None when the conv cannot run blocked (groups, channel counts not multiples of VW).

    Blocked, the channel-lanes kernel reads each pixel's input channels contiguously and
    stores its accumulators as they are, and it then beats or matches the GEMM on every
    group-1 shape of ResNet-50 and SqueezeNet (znver5, AVX-512, 1 thread, us NCHW kernel ->
    blocked: 1x1 256->1024 @14 GEMM 406 -> 372, 1x1 64->256 @56 GEMM 382 -> 373, 1x1/2
    1024->2048 @14 lanes 910 -> 762, 3x3 512 @7 lanes 695 -> 677, 3x3 64 @56 GEMM 880 -> 789).
    Two vectors of channels per tile (at most blocked_max_accumulators), except with 16
    vector registers (AVX2) for convs with wide output rows and more than one tap per row,
    where one vector's longer row tiles reuse each broadcast input over more columns (AVX2,
    ms one -> two vectors: 3x3/2 64->128 in 160 8.9 -> 15.6, 128->128 in 56 2.3 -> 3.3).
    With 32 (AVX-512), two vectors halve the broadcasts per FMA whatever the row width: for
    strided convs (1 thread, 3x3/2, ms one -> two vectors: 64->128 in 160 4.17 -> 3.92,
    128->256 in 80 3.82 -> 3.72, 256->512 in 40 3.96 -> 3.78, 128->128 in 112 3.80 -> 3.67)
    and, with 12-column tiles, for stride-1 ones (3x3 256->64 @160 29.4 -> 28.5, 64->64
    @224 14.9 -> 14.5, 64->64 @56 0.88 -> 0.86; 16 columns x one vector before, 12 x two
    after). (Two vectors of 14-column tiles without the kernel's tap order by column, an
    earlier kernel, lost: 3x3 64 @56 789 -> 1177 us.)
    """
    vw = target.vector_width
    if group != 1 or cin % vw or cout % vw:
        return None
    two_vectors = target.vector_registers >= 32
    wide = kernel != (1, 1) and out_hw[1] >= 2 * vw and not two_vectors
    nvec = 2 if cout % (2 * vw) == 0 and not wide else 1
    mr = lanes_row_tile(out_hw[1], nvec, target, blocked_max_accumulators(kernel, nvec, target))
    return LanesBlocking(nvec, vw, mr)


def depthwise_blocked_layout(c: int) -> str:
    return f"depthwise_blocked{c}"


def pack_depthwise_blocked_weight(w: np.ndarray, c: int) -> tuple[np.ndarray, str]:
    """Pack a depthwise OIHW filter [C, 1, kh, kw] (C a multiple of c) as [C/c, kh*kw, c]:
    a tap's weights of one channel block are one vector (the blocked depthwise conv)."""
    channels, _, kh, kw = w.shape
    blocks = w.astype(np.float32, copy=False).reshape(channels // c, c, kh * kw)
    return np.ascontiguousarray(blocks.transpose(0, 2, 1)), depthwise_blocked_layout(c)


def pack_conv_lanes_weight(w: np.ndarray, nr: int) -> tuple[np.ndarray, str]:
    """Pack an OIHW filter (group 1) as [ceil(O/NR), kh*I*kw, NR], k = (r*I + ci)*kw + s."""
    cout, cin, kh, kw = w.shape
    blocks = math.ceil(cout / nr)
    padded = np.zeros((blocks * nr, kh, cin, kw), dtype=np.float32)
    padded[:cout] = w.astype(np.float32, copy=False).transpose(0, 2, 1, 3)
    packed = padded.reshape(blocks, nr, kh * cin * kw).transpose(0, 2, 1)
    return np.ascontiguousarray(packed), conv_lanes_layout(nr)


def is_depthwise(weight_shape: tuple[int, ...], group: int) -> bool:
    """group == Cin == Cout: one filter per channel (OIHW with I == 1 and O == group)."""
    return group > 1 and weight_shape[1] == 1 and weight_shape[0] == group


def pack_matmul_weight(b: np.ndarray, target: Target) -> tuple[np.ndarray, str]:
    """Cut a constant [K, N] matrix into zero-padded column panels [N/NR, K, NR]."""
    if b.ndim != 2:
        raise ValueError(f"pack_matmul_weight: expected a 2-D [K, N] weight, got shape {b.shape}")
    # float64 stays float64 (its own, narrower panels); everything else is packed as float32.
    dtype = np.dtype(np.float64) if b.dtype == np.float64 else np.dtype(np.float32)
    nr = gemm_blocking(target, dtype.itemsize).nr
    k, n = b.shape
    panels = math.ceil(n / nr)
    padded = np.zeros((k, panels * nr), dtype=dtype)
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


# ---------------------------------------------------------------------------------------------
# int8 convolution (kernel.qconv2d): the instruction set the target offers and the packed filter

# CPUs LLVM knows by name whose AVX-512 includes VNNI (named targets carry no feature list).
_VNNI_CPUS = ("icelake-server", "icelake-client", "sapphirerapids", "znver4", "znver5")


@dataclass(frozen=True)
class Int8Isa:
    name: str  # "vnni512" or "avx2"
    lanes: int  # int32 lanes per vector
    nvec: int  # vectors of pixels per micro-kernel row
    mr: int  # output channels per micro-kernel

    @property
    def nr(self) -> int:
        return self.lanes * self.nvec


# ... and those with AVX-VNNI (vpdpbusd on ymm, VEX-encoded) but no AVX-512.
_AVX_VNNI_CPUS = ("alderlake", "raptorlake", "meteorlake", "arrowlake", "lunarlake", "gracemont")

ISAS = {
    # 16 x 16 measured faster than 14 x 32 and 8 x 48 (znver5, 1 thread): no padded rows for
    # channel counts that are multiples of 16, and 49-pixel 7x7 maps fill 49 of 64 lanes.
    "vnni512": Int8Isa("vnni512", lanes=16, nvec=1, mr=16),
    "vnni256": Int8Isa("vnni256", lanes=8, nvec=2, mr=6),
    "avx2": Int8Isa("avx2", lanes=8, nvec=2, mr=4),
}


def int8_isa(target: Target) -> Int8Isa:
    """vpdpbusd on zmm with AVX-512 VNNI, on ymm with AVX-VNNI, else vpmaddubsw + vpmaddwd
    (AVX2)."""
    features = target.features.split(",")
    if target.has_avx512 and ("+avx512vnni" in features or target.cpu in _VNNI_CPUS):
        return ISAS["vnni512"]
    if "+avxvnni" in features or target.cpu in _AVX_VNNI_CPUS:
        return ISAS["vnni256"]
    return ISAS["avx2"]


def int8_isas_for(target: Target) -> tuple[str, ...]:
    """The int8 instruction sets `target` runs, widest first: its own and each narrower one
    (AVX-512 VNNI also encodes vpdpbusd on ymm; every x86-64-v3 CPU has AVX2)."""
    names = list(ISAS)  # widest first
    return tuple(names[names.index(int8_isa(target).name) :])


def qconv_layout(isa: Int8Isa, terms: int) -> str:
    return f"qconv_{isa.name}_mr{isa.mr}_t{terms}"


def parse_qconv_layout(layout: str) -> tuple[Int8Isa, int]:
    match = re.fullmatch(r"qconv_(\w+?)_mr(\d+)_t([12])", layout)
    if match is None or match.group(1) not in ISAS:
        raise ValueError(f"not a qconv weight layout: '{layout}'")
    isa = ISAS[match.group(1)]
    if int(match.group(2)) != isa.mr:
        raise ValueError(f"qconv layout '{layout}': MR {match.group(2)} is not {isa.name}'s")
    return isa, int(match.group(3))


# AVX2 keeps vpmaddubsw's s16 pair sums exact with weights of at most 7 bits (see above).
_SEVEN_BITS = 64


def pack_qconv_weight(w: np.ndarray, isa: Int8Isa, group: int = 1) -> tuple[np.ndarray, str]:
    """An int8 OIHW filter as int32 words [group, terms, ceil(Cout/group/MR), K/4, MR] (flat),
    each word the weights of 4 consecutive input channels at one tap; k runs over (channel
    group of 4, kh, kw) of the conv group's input channels."""
    if w.ndim != 4 or w.dtype != np.int8 or w.shape[0] % group:
        raise ValueError(
            f"pack_qconv_weight: expected an int8 OIHW filter with output channels divisible "
            f"by group {group}, got {w.dtype} {w.shape}"
        )
    cout, cin, kh, kw = w.shape
    cout //= group
    groups, tiles = -(-cin // 4), -(-cout // isa.mr)
    split = isa.name == "avx2" and int(np.abs(w.astype(np.int16)).max(initial=0)) > _SEVEN_BITS
    packed = []
    for filters in np.split(w, group):
        terms = [filters]
        if split:
            high = np.right_shift(filters, 1)  # floor(w / 2) in [-64, 63]
            terms = [high, (filters - high).astype(np.int8)]  # ceil(w / 2) in [-64, 64]
        for term in terms:
            padded = np.zeros((tiles * isa.mr, groups * 4, kh, kw), np.int8)
            padded[:cout, :cin] = term
            words = padded.reshape(tiles, isa.mr, groups, 4, kh, kw).transpose(0, 2, 4, 5, 1, 3)
            packed.append(np.ascontiguousarray(words).view(np.int32).reshape(-1))
    return np.concatenate(packed), qconv_layout(isa, 2 if split else 1)


@dataclass(frozen=True)
class QConvGeometry:
    n: int
    c: int
    h: int
    w: int
    cout: int
    oh: int
    ow: int
    kh: int
    kw: int
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]
    group: int = 1  # c, cout: all channels, group > 1 for grouped and depthwise convs

    @property
    def depthwise(self) -> bool:
        return self.group > 1 and self.group == self.c == self.cout

    def per_group(self) -> QConvGeometry:
        """The conv of one group (the dense kernel runs the groups one after another)."""
        return replace(self, c=self.c // self.group, cout=self.cout // self.group, group=1)

    @property
    def groups(self) -> int:  # channel groups of 4
        return -(-self.c // 4)

    @property
    def hp(self) -> int:
        return self.h + self.pads[0] + self.pads[2]

    @property
    def wp(self) -> int:
        return self.w + self.pads[1] + self.pads[3]

    @property
    def k4(self) -> int:
        return self.groups * self.kh * self.kw

    @property
    def pixels(self) -> int:
        return self.oh * self.ow

    @property
    def flops(self) -> int:
        """Multiply-adds of the conv, counted as two operations each."""
        return 2 * self.n * self.cout * self.pixels * (self.c // self.group) * self.kh * self.kw

    @property
    def direct(self) -> bool:
        """A 1x1, stride-1, unpadded conv reads its panels straight from the workspace."""
        return (self.kh, self.kw, self.strides, any(self.pads)) == (1, 1, (1, 1), False)

    @property
    def phase_rows(self) -> int:
        """Rows of each of the four phase planes of a stride-2 workspace (padded rows of one
        parity)."""
        return -(-self.hp // 2)

    @property
    def phase_width(self) -> int:
        return -(-self.wp // 2)


def qconv_workspace_words(g: QConvGeometry, isa: Int8Isa) -> int:
    """The interleaved, padded image (for stride 2 possibly as four phase planes per channel
    group, which the kernel chooses: room for either) plus NR words that the last block may
    read past its end (into lanes that are never stored); the depthwise kernel keeps its
    padded input rows in per-thread scratch instead (one word, unused)."""
    if g.depthwise:
        return 1
    one = g.per_group()  # the groups of a grouped conv take turns in it
    words = one.hp * one.wp
    if one.strides == (2, 2):
        words = max(words, 4 * one.phase_rows * one.phase_width)
    return one.groups * words + isa.nr


# The depthwise int8 kernel (kernel_to_loops/qconv.py, `lower_qconv_depthwise`) multiplies
# int16 pairs summed into int32 lanes (vpdpwssd, or vpmaddwd + vpaddd): each activation word
# holds one input column of two kernel rows apart (rows r and r + 1 of a filter), each weight
# word the two weights of those rows at one kernel column, sign-extended to 16 bits (an odd
# last row paired with 0): one instruction computes two taps.
def qconv_depthwise_layout(isa: Int8Isa) -> str:
    return f"qconv_dw_{isa.name}"


def qconv_depthwise_isa(layout: str) -> Int8Isa | None:
    """The instruction set a depthwise qconv layout was packed for; None for other layouts."""
    match = re.fullmatch(r"qconv_dw_(\w+)", layout)
    return None if match is None else ISAS.get(match.group(1))


def pack_qconv_depthwise_weight(w: np.ndarray, isa: Int8Isa) -> tuple[np.ndarray, str]:
    """An int8 depthwise filter [C, 1, kh, kw] as int32 words [C, ceil(kh / 2), kw], word
    (c, p, s) = w[c, 0, 2p, s] in the low int16 and w[c, 0, 2p + 1, s] (or 0) in the high."""
    if w.ndim != 4 or w.dtype != np.int8 or w.shape[1] != 1:
        raise ValueError(
            f"pack_qconv_depthwise_weight: expected an int8 [C, 1, kh, kw] filter, got "
            f"{w.dtype} {w.shape}"
        )
    c, _, kh, kw = w.shape
    rows = np.zeros((c, 2 * -(-kh // 2), kw), np.int16)
    rows[:, :kh] = w[:, 0]
    pairs = rows.reshape(c, -1, 2, kw).transpose(0, 1, 3, 2)  # [C, pairs, kw, (low, high)]
    return np.ascontiguousarray(pairs).view(np.int32).reshape(-1), qconv_depthwise_layout(isa)
