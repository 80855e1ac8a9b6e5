"""kernel.qconv2d: uint8 x int8 -> int32 convolution with a requantize epilogue (int8 kernels).

The convolution is the GEMM out[co, p] = sum_k w[co, k] * x'[k, p] over k = (channel, tap),
with the filter as the broadcast operand and the activations as the vector operand, as in
the float conv (conv.py). The int8 dot-product instructions multiply groups of four
consecutive bytes: four u8 activations (one 32-bit lane) by four s8 weights, summed into the
lane's int32. So k runs in groups of four input channels at one tap:

1. **Interleave** (per image): the input is rewritten into `workspace` as int32 words holding
   channels 4c..4c+3 of one pixel, [C/4][H + pads][W + pads], the padding filled with the
   input zero point (a real 0). int8 inputs are shifted to uint8 (x ^ 0x80, zero point + 128);
   the kernel computes sum x' w - zero_point' * sum w, whose second term is folded into the
   per-channel `offset` at compile time.
2. **Panels**: a 1x1, stride-1, unpadded conv reads NR consecutive pixels of a channel group
   straight from the workspace. Other convs of stride 1 or 2, at most 9 taps and at least
   16 input channels compute at
   padded-row positions (`padded_rows`): output (oh, ow) at oh * row + ow, so that NR
   consecutive positions read NR consecutive workspace words per tap (stride 2: from four
   phase planes per channel group, padded rows and columns by parity) — one vector load, no
   im2col — and each output row's lanes are stored under a mask after a pshufb moves them
   to lane 0. The rest copy the words each of NR output pixels reads (im2col, one word = 4
   channels) into a per-thread panel [K/4][NR]: one vector per tap when the NR pixels lie in
   one output row, else word by word.
3. **Micro-kernel**: MR output channels x NR pixels of int32 accumulators in registers; per
   k-group one vector load of NR/lanes words, one broadcast word of 4 weights per row:
   - `vnni512`: `vpdpbusd` (llvm.x86.avx512.vpdpbusd.512), 64 u8 x s8 products per
     instruction, MR=16 x NR=16 (16 zmm accumulators; the broadcast weights are memory
     operands);
   - `vnni256`: AVX-VNNI's VEX-encoded `vpdpbusd` on ymm (no AVX-512), MR=6 x NR=16;
   - `avx2`: `vpmaddubsw` (u8 x s8 pairs summed into s16) + `vpmaddwd` by 1 (s16 pairs into
     s32) + `vpaddd`, MR=4 x NR=16. vpmaddubsw saturates its s16 pair sums, which
     255 * 127 * 2 overflows; ember keeps it exact by restricting each weight to 7 bits:
     a filter whose weights all lie in [-64, 64] is packed once (255 * 64 * 2 = 32640 fits
     s16), any other is split at compile time into w >> 1 and w - (w >> 1), both in [-64, 64],
     and accumulated as two products (twice the work for that layer, never a wrong sum).
4. **Epilogue**, in registers: fma(float(acc + offset[co]), multiplier[co], bias[co]) (the
   output zero point is already in `bias`: one rounding, the same on every target), clamped to [output_min, output_max], rounded half to even (the clamp bounds
   are integers, so clamping first is the same), narrowed to 8 bits and stored (masked at
   the pixel tail). An int32 output stores acc + offset[co] unrounded instead (MatMulInteger).

Weights are packed at compile time (`pack_qconv_weight`) as int32 words [terms][Cout/MR]
[K/4][MR]; the layout name records the instruction set and MR, and the lowering follows it,
so a model packed for AVX2 runs AVX2 code on any host that has it.

**Grouped** convs (1 < group < C, kernel.qconv2d's `group`) run this kernel once per group,
one after another: the group's channels interleaved into the workspace, its packed filters
[group][terms][...] and its output channels (`_QConv.channel`).

**Depthwise** convs (group == C == Cout, layout `qconv_dw_<isa>`) run a direct kernel
instead (`lower_qconv_depthwise`), the float depthwise kernel's structure (conv.py) on
integers: output columns across the lanes, one channel at a time, its input rows copied per
band into padded planes of int32 words, de-interleaved by column phase for stride 2, so that
every tap of a vector of output columns is one unaligned load. A word holds one column of
two input rows (row i zero-extended in the low int16, row i + dilation in the high; int8
flipped to u8; outside the input the zero point), a packed weight word the weights of
kernel rows 2p and 2p + 1 at one kernel column (an odd last row paired with 0): one
`vpdpwssd` (int16 pairs multiplied, summed and accumulated into int32; AVX-512 VNNI zmm, or
ymm for outputs of at most 8 columns; AVX-VNNI ymm) or `vpmaddwd` + `vpaddd` (AVX2) computes
two taps of a vector of columns exactly: 6 per 3x3, 15 per 5x5. Register block: 4 vectors of
columns, two accumulator chains each. Then the dense kernel's epilogue, per channel.
Why not vpdpbusd / vpmaddubsw: they sum 4 (2) consecutive bytes of a lane, 4 input channels
of a dense conv, but a depthwise output reads one channel: the taps would first have to be
gathered into each lane's bytes, a shuffle per tap that costs what the wider multiply
saves (and vpmaddubsw's int16 sums saturate). Why columns and not channels across the
lanes: activations are NCHW, so a channel's row is contiguous and the per-channel epilogue
stores whole vectors; channels across lanes would need an NHWC copy of the input and a
transpose of every output tile, each about as much work as the 9 taps. The cost: maps
narrower than a vector leave lanes idle (14 columns on 16 lanes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from xdsl.dialects import arith, func, llvm, memref, vector
from xdsl.dialects.builtin import IntegerType, VectorType, f32, i1, i8, i16, i32
from xdsl.ir import Attribute, SSAValue

from ember.core.target import Target
from ember.dialects import kernel
from ember.dialects.weight_layouts import (
    ISAS,
    Int8Isa,
    QConvGeometry,
    int8_isa,
    pack_qconv_weight,
    parse_qconv_layout,
    qconv_depthwise_isa,
    qconv_workspace_words,
)
from ember.passes.conversion.kernel_to_loops.builder import LoopBuilder, Value, kernel_function
from ember.passes.conversion.kernel_to_loops.conv import (
    DEPTHWISE_ROW_VECTORS,
    BandPlanes,
    ConvGeometry,
    width_chunks,
)
from ember.passes.conversion.kernel_to_loops.flat_access import (
    fail,
    operand_types,
    shape,
    shuffle,
)
from ember.passes.conversion.kernel_to_loops.gemm_common import alloca, ceil_div, decode, if_else
from ember.passes.conversion.kernel_to_loops.registry import lowering
from ember.passes.conversion.kernel_to_loops.simd import work_units

_VPDPBUSD = {
    "vnni512": "llvm.x86.avx512.vpdpbusd.512",
    # LLVM encodes the 256-bit form with VEX ({vex} vpdpbusd) on AVX-VNNI targets.
    "vnni256": "llvm.x86.avx512.vpdpbusd.256",
}


def _pairs(values: object) -> tuple[int, ...]:
    return tuple(int(v) for v in values.get_values())  # type: ignore[attr-defined]


def geometry_of(op: kernel.QConv2dOp) -> QConvGeometry:
    n, c, h, w = shape(op.input)
    _, cout, oh, ow = shape(op.output)
    kh, kw = _pairs(op.kernel_shape)
    group = 1 if op.group is None else op.group.value.data
    if qconv_depthwise_isa(op.weight_layout.data):
        group = c
    return QConvGeometry(
        n, c, h, w, cout, oh, ow, kh, kw,
        _pairs(op.strides), _pairs(op.pads), _pairs(op.dilations), group,
    )  # fmt: skip


def _v(type_: Attribute, lanes: int) -> VectorType:
    return VectorType(type_, [lanes])


def _cast(b: LoopBuilder, op_type: type, value: SSAValue, result: Attribute) -> SSAValue:
    return b.insert(op_type.create(operands=[value], result_types=[result])).results[0]


def _binary(b: LoopBuilder, op_type: type, x: SSAValue, y: SSAValue) -> SSAValue:
    return b.insert(op_type(x, y)).results[0]


def _intrinsic(b: LoopBuilder, name: str, args: list[SSAValue], result: Attribute) -> SSAValue:
    return b.insert(llvm.CallIntrinsicOp(name, args, [result])).results[0]


# Lane order that interleaves two vectors of 16: a0 b0 a1 b1 ...
_ZIP16 = [k for i in range(16) for k in (i, 16 + i)]
# 1.5 * 2^23: adding it to a float of magnitude below 2^22 leaves that float's integer
# (rounded half to even, the default rounding) in the low mantissa bits, and its bit pattern
# minus this one's is that integer: a float -> int conversion of two vector ops that LLVM's
# reassociation cannot undo (the bitcast stands between them). The int -> float direction
# uses llvm.sitofp: the same trick there (bits - magic as floats) is undone by `reassoc`.
_MAGIC = 12582912.0
_MAGIC_BITS = 0x4B400000


def _exact_float(b: LoopBuilder, value: SSAValue, lanes: int) -> SSAValue:
    """float(value) of int32 lanes, correctly rounded (vcvtdq2ps)."""
    return b.insert(llvm.SIToFPOp(value, _v(f32, lanes))).results[0]


def _round_to_int(b: LoopBuilder, value: SSAValue, lanes: int) -> SSAValue:
    """round_half_even(value) as int32 lanes, for |value| < 2^22."""
    bits = _cast(b, vector.BitcastOp, b.addf(value, b.splat(_MAGIC, lanes)), _v(i32, lanes))
    return _binary(b, arith.SubiOp, bits, b.splat(b.const(_MAGIC_BITS, i32), lanes, i32))


def _low_bytes(b: LoopBuilder, words: SSAValue, lanes: int) -> SSAValue:
    """The low byte of each int32 lane, as vector<lanes x i8>."""
    return b.insert(llvm.TruncOp(words, _v(i8, lanes))).results[0]


def _splat_word(value: int) -> int:
    """A byte repeated in all four bytes of an int32 (as a signed value)."""
    word = (value & 0xFF) * 0x01010101
    return word - (1 << 32) if word >= 1 << 31 else word


@dataclass(frozen=True)
class _Source:
    """Where the micro-kernel reads the activation words of k-group k = outer * taps + u:
    buffer[base + outer * stride + tap_offsets[u]] (an im2col panel, the workspace of a
    direct 1x1, or the workspace at padded-row positions with one offset per tap)."""

    buffer: SSAValue
    base: SSAValue
    stride: int
    tap_offsets: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class _RowSegment:
    """The lanes first .. first + lanes - 1 of a block of padded-row positions, one output
    row's; lane `first` is output pixel `pixel` (lanes <= 0: no row there)."""

    first: SSAValue
    lanes: SSAValue
    pixel: SSAValue


@dataclass
class _QConv:
    op: kernel.QConv2dOp
    g: QConvGeometry  # of one group (all of a group-1 or depthwise conv)
    isa: Int8Isa
    terms: int
    args: list[SSAValue]
    groups: int = 1  # of a grouped conv, run one after another
    group_index: SSAValue | None = None  # the group being emitted

    def channel(self, b: LoopBuilder, per_group: int, index: Value) -> SSAValue:
        """The channel of all the conv's channels that is `index` of the group's."""
        if self.group_index is None:
            return b.index(index)
        return b.add(b.mul(self.group_index, per_group), index)

    def arg(self, operand: SSAValue | None) -> SSAValue:
        """The function argument that stands for one of the op's operands."""
        assert operand is not None
        return self.args[list(self.op.operands).index(operand)]

    @property
    def x(self) -> SSAValue:
        return self.arg(self.op.input)

    @property
    def workspace(self) -> SSAValue:
        return self.arg(self.op.workspace)

    # -- 1. interleave one image into the workspace ------------------------------------------
    def interleave(self, b: LoopBuilder, n: SSAValue, target: Target, flops: int) -> None:
        """`flops`: of the whole conv, which decides whether its loops take threads."""
        g = self.g
        full = g.c // 4
        if full:
            work_units(b, target, flops, full, lambda b, c4: self.interleave_group(b, n, c4, 4))
        if g.c % 4:
            self.interleave_group(b, n, b.index(full), g.c % 4)

    def interleave_group(self, b: LoopBuilder, n: SSAValue, c4: SSAValue, channels: int) -> None:
        g, ws = self.g, self.workspace
        plane = self.group_words
        base = b.mul(c4, plane)
        zero_point = self.op.input_zero_point.value.data
        # Phase planes of an odd padded size also have cells past the input: filled alike.
        if any(g.pads) or (self.phased and (g.hp % 2 or g.wp % 2)):
            fill = b.const(_splat_word(zero_point), i32)
            vec_end = plane // 16 * 16
            fill_v = b.splat(fill, 16, i32)
            b.for_range(0, vec_end, 16, lambda b, i: b.vstore(fill_v, ws, [b.add(base, i)]))
            b.for_range(vec_end, plane, 1, lambda b, i: b.store(fill, ws, [b.add(base, i)]))
        # Channels of this group, as offsets of their rows in x.
        channel = self.channel(b, g.c, b.mul(c4, 4))
        first = b.mul(b.add(b.mul(n, g.c * self.groups), channel), g.h * g.w)

        def byte_rows(b: LoopBuilder, src: SSAValue, width: int) -> list[SSAValue]:
            rows = []
            for i in range(4):
                if i >= channels:  # a channel past C: its weights are 0
                    rows.append(b.splat(b.const(0, i8), width, i8) if width > 1 else None)
                    continue
                at = [0, 0, 0, b.add(src, i * g.h * g.w)]
                rows.append(b.vload(self.x, at, width) if width > 1 else b.load(self.x, at))
            return rows

        def vector_word(b: LoopBuilder, src: SSAValue) -> SSAValue:
            # Byte interleave of four rows of 16 (xdsl has no vector int casts): bytes of
            # rows 0/1 and 2/3 in pairs, then those pairs as 16-bit halves of each word.
            r0, r1, r2, r3 = byte_rows(b, src, 16)
            pairs = [shuffle(b, r0, r1, _ZIP16), shuffle(b, r2, r3, _ZIP16)]
            halves = [_cast(b, vector.BitcastOp, v, _v(i16, 16)) for v in pairs]
            words = _cast(b, vector.BitcastOp, shuffle(b, *halves, _ZIP16), _v(i32, 16))
            return self.flip(b, words, 16)

        def scalar_word(b: LoopBuilder, src: SSAValue) -> SSAValue:
            out: SSAValue | None = None
            for i, byte in enumerate(byte_rows(b, src, 1)):
                if byte is None:
                    continue
                lane = _cast(b, arith.ExtUIOp, byte, i32)
                if i:
                    lane = _binary(b, arith.ShLIOp, lane, b.const(8 * i, i32))
                out = lane if out is None else _binary(b, arith.OrIOp, out, lane)
            assert out is not None
            return self.flip(b, out, 1)

        def row(b: LoopBuilder, h: SSAValue) -> None:
            src = b.add(first, b.mul(h, g.w))
            vec_end = g.w // 16 * 16
            if self.phased:
                vec, one = self.phased_row(b, base, h, src, vector_word, scalar_word)
            else:
                dst = b.add(base, b.add(b.mul(b.add(h, g.pads[0]), g.wp), g.pads[1]))

                def vec(b: LoopBuilder, w: SSAValue) -> None:
                    b.vstore(vector_word(b, b.add(src, w)), ws, [b.add(dst, w)])

                def one(b: LoopBuilder, w: SSAValue) -> None:
                    b.store(scalar_word(b, b.add(src, w)), ws, [b.add(dst, w)])

            b.for_range(0, vec_end, 16, vec)
            b.for_range(vec_end, g.w, 1, one)

        b.for_range(0, g.h, 1, row)

    def phased_row(
        self,
        b: LoopBuilder,
        base: SSAValue,
        h: SSAValue,
        src: SSAValue,
        vector_word: Callable[[LoopBuilder, SSAValue], SSAValue],
        scalar_word: Callable[[LoopBuilder, SSAValue], SSAValue],
    ) -> tuple[Callable[[LoopBuilder, SSAValue], None], Callable[[LoopBuilder, SSAValue], None]]:
        """Writers of 16 columns and of one column of input row h into the phase planes:
        padded (row, col) at plane (row % 2, col % 2), word (row // 2, col // 2)."""
        g, ws = self.g, self.workspace
        rows, width = g.phase_rows, g.phase_width
        padded_row = b.add(h, g.pads[0])
        row_base = b.add(
            b.add(base, b.mul(b.rem(padded_row, 2), 2 * rows * width)),
            b.mul(b.floordiv(padded_row, 2), width),
        )

        def at(b: LoopBuilder, col: Value) -> SSAValue:  # padded column col
            phase = b.mul(b.rem(col, 2), rows * width)
            return b.add(row_base, b.add(phase, b.floordiv(col, 2)))

        def vec(b: LoopBuilder, w: SSAValue) -> None:
            # w is a multiple of 16: lanes 0, 2, ... share a column parity, 1, 3, ... the other.
            words = vector_word(b, b.add(src, w))
            col = b.add(w, g.pads[1])
            for first in (0, 1):
                half = shuffle(b, words, words, list(range(first, 16, 2)))
                b.vstore(half, ws, [at(b, b.add(col, first))])

        def one(b: LoopBuilder, w: SSAValue) -> None:
            b.store(scalar_word(b, b.add(src, w)), ws, [at(b, b.add(w, g.pads[1]))])

        return vec, one

    def flip(self, b: LoopBuilder, words: SSAValue, width: int) -> SSAValue:
        """int8 inputs as uint8: x ^ 0x80 in every byte (x + 128)."""
        if not self.op.input_signed.value.data:
            return words
        mask = b.const(_splat_word(0x80), i32)
        return _binary(b, arith.XOrIOp, words, b.splat(mask, width, i32) if width > 1 else mask)

    # -- 2. + 3. + 4. one block of NR output pixels, all output channels -------------------------
    def block(self, b: LoopBuilder, n: SSAValue, pb: SSAValue, valid: int) -> None:
        g, isa = self.g, self.isa
        p0 = b.mul(pb, isa.nr)
        segments: list[_RowSegment] | None = None
        if g.direct:
            source = _Source(self.workspace, p0, g.pixels)
        elif self.padded_rows:
            # p0 counts padded-row positions here: every tap is one vector load.
            source = _Source(self.workspace, p0, self.group_words, self.tap_offsets)
            segments = self.row_segments(b, p0)
        else:
            panel = b.insert(memref.AllocaOp.get(i32, shape=[g.k4 * isa.nr])).results[0]
            self.pack_panel(b, panel, p0)
            source = _Source(panel, b.index(0), isa.nr)
        # Full tiles of MR output channels in a loop; a last partial tile computes only its
        # channels (a grouped conv's 4 channels per group: 4 rows, not 16).
        full, rows = divmod(g.cout, isa.mr)

        def tile(b: LoopBuilder, t: SSAValue, rows: int) -> None:
            self.tile(b, n, t, p0, source, valid, rows, segments)

        if full:
            b.for_range(0, full, 1, lambda b, t: tile(b, t, isa.mr))
        if rows:
            tile(b, b.index(full), rows)

    # -- stride-1 convs: blocks of padded-row positions, no im2col --------------------------
    @property
    def padded_rows(self) -> bool:
        """A stride-1 conv (other than the direct 1x1) computes its outputs at the positions
        of the padded input rows: output (oh, ow) at oh * wp + ow, whose tap (ki, kj) is the
        workspace word (oh + ki * dh) * wp + ow + kj * dw of each channel group. So NR
        consecutive positions read NR consecutive words per tap, straight from the workspace
        (no im2col panel), whether or not they lie in one output row; the wp - ow positions
        past each row's end are computed and never stored (ow / wp of the lanes do work:
        14x14 maps 14/16, 7x7 7/9). Fused residuals and int32 outputs keep the panels."""
        g, op = self.g, self.op
        plain = op.residual is None and not self.int32_output
        # At most 9 taps: the micro-kernel unrolls them, and 49 (a 7x7 stem) would keep more
        # vectors live than there are registers. A 1x1 stride-2 conv keeps its compact
        # panels: read from a plane, a deep input's k-groups lie a plane apart, which L1
        # holds worse across the tiles (ResNet-50's 1024 -> 2048 at 7x7: 320 -> 390 us).
        # And at least 4 channel groups: on a shallow input (a 3-channel stem, k = 9) the
        # masked per-row stores cost more than the panel copy saves (MobileNetV2's stem
        # 3x3 stride 2: 52 -> 171 us).
        taps = g.kh * g.kw
        plain = plain and taps <= 9 and g.groups >= 4
        if g.strides == (2, 2):
            return taps > 1 and plain
        return g.strides == (1, 1) and not g.direct and plain

    @property
    def phased(self) -> bool:
        """A stride-2 conv at padded-row positions: the workspace holds each channel group
        as four phase planes (padded rows and columns by parity), so that output (oh, ow)
        reads tap (ki, kj) at plane ((ki dh) % 2, (kj dw) % 2), word (oh + ki dh // 2,
        ow + kj dw // 2): a stride-1 conv on each plane."""
        return self.padded_rows and self.g.strides == (2, 2)

    @property
    def row_words(self) -> int:
        """Words between output rows at padded-row positions."""
        return self.g.phase_width if self.phased else self.g.wp

    @property
    def group_words(self) -> int:
        """Words of one channel group in the workspace."""
        g = self.g
        return 4 * g.phase_rows * g.phase_width if self.phased else g.hp * g.wp

    @property
    def padded_positions(self) -> int:
        """Padded-row positions up to the last output: the last row's padding is not."""
        return (self.g.oh - 1) * self.row_words + self.g.ow

    @property
    def tap_offsets(self) -> tuple[int, ...]:
        """Workspace offsets of the taps (k order within a channel group: ki, then kj)."""
        g, (dh, dw) = self.g, self.g.dilations
        if not self.phased:
            return tuple(ki * dh * g.wp + kj * dw for ki in range(g.kh) for kj in range(g.kw))
        plane, width = g.phase_rows * g.phase_width, g.phase_width
        return tuple(
            ((ki * dh) % 2 * 2 + (kj * dw) % 2) * plane + (ki * dh // 2) * width + kj * dw // 2
            for ki in range(g.kh)
            for kj in range(g.kw)
        )

    def row_segments(self, b: LoopBuilder, p0: SSAValue) -> list[_RowSegment]:
        """The output rows that the NR positions from p0 reach: which lanes belong to each
        and where they go in the output (lane `first` stored at output pixel `pixel`)."""
        g, nr, wp = self.g, self.isa.nr, self.row_words
        first_row = b.floordiv(p0, wp)
        # Rows from p0's (which may end before p0) to the last one with an output in reach.
        count = max(
            (p0 + nr - 1) // wp - p0 // wp + 1 for p0 in range(0, self.padded_positions, nr)
        )
        segments = []
        for s in range(count):
            row = b.add(first_row, s)
            row_start = b.mul(row, wp)  # its position: row * wp (may be before p0)
            first = b.max_index(b.sub(row_start, p0), 0)
            end = b.min_index(b.sub(b.add(row_start, g.ow), p0), nr)
            lanes = b.select(b.cmp_index("slt", row, g.oh), b.sub(end, first), b.index(0))
            pixel = b.sub(b.add(b.mul(row, g.ow), b.add(p0, first)), row_start)
            segments.append(_RowSegment(first, lanes, pixel))
        return segments

    def store_segments(
        self, b: LoopBuilder, row_bytes: SSAValue, channel_start: SSAValue, segments: list
    ) -> None:
        """Each segment's lanes of `row_bytes` (NR output bytes of one channel at padded-row
        positions) moved to lane 0 (pshufb by lane + first) and stored under a mask."""
        out, nr = self.arg(self.op.output), self.isa.nr
        for seg in segments:

            def store(b: LoopBuilder, seg: _RowSegment = seg) -> None:
                shift = b.insert(arith.IndexCastOp(seg.first, i8)).results[0]
                lanes = _binary(b, arith.AddiOp, b.lane_numbers(nr, i8), b.splat(shift, nr, i8))
                moved = _intrinsic(b, "llvm.x86.ssse3.pshuf.b.128", [row_bytes, lanes], _v(i8, nr))
                mask = b.insert(vector.CreateMaskOp([seg.lanes], _v(i1, nr))).results[0]
                at = [b.index(0)] * 3 + [b.add(channel_start, seg.pixel)]
                b.insert(vector.MaskedStoreOp(out, at, mask, moved))

            b.if_(b.cmp_index("sgt", seg.lanes, 0), store)

    def pack_panel(self, b: LoopBuilder, panel: SSAValue, p0: SSAValue) -> None:
        g, isa, ws = self.g, self.isa, self.workspace
        (sh, sw), (dh, dw) = g.strides, g.dilations

        def pixel(b: LoopBuilder, j: SSAValue) -> None:
            # Pixels past the end read the last one's words (their lanes are never stored).
            p = b.min_index(b.add(p0, j), g.pixels - 1)
            oh, ow = b.floordiv(p, g.ow), b.rem(p, g.ow)
            at = b.add(b.mul(b.mul(oh, sh), g.wp), b.mul(ow, sw))

            def group(b: LoopBuilder, c4: SSAValue) -> None:
                src_c = b.add(at, b.mul(c4, g.hp * g.wp))
                dst_c = b.add(j, b.mul(c4, g.kh * g.kw * isa.nr))
                for ki in range(g.kh):
                    for kj in range(g.kw):
                        word = b.load(ws, [b.add(src_c, ki * dh * g.wp + kj * dw)])
                        b.store(word, panel, [b.add(dst_c, (ki * g.kw + kj) * isa.nr)])

            b.for_range(0, g.groups, 1, group)

        def by_pixel(b: LoopBuilder) -> None:
            b.for_range(0, isa.nr, 1, pixel)

        if sw > 2 or g.ow < isa.nr:
            by_pixel(b)
            return
        # NR pixels within one output row: each tap's words are one vector (column stride
        # 2: the even words of two vectors; the workspace has NR words of slack at its end).
        oh, ow0 = b.floordiv(p0, g.ow), b.rem(p0, g.ow)
        row_start = b.add(b.mul(b.mul(oh, sh), g.wp), b.mul(ow0, sw))
        even = list(range(0, 2 * isa.nr, 2))

        def by_row(b: LoopBuilder) -> None:
            def group(b: LoopBuilder, c4: SSAValue) -> None:
                src_c = b.add(row_start, b.mul(c4, g.hp * g.wp))
                dst_c = b.mul(c4, g.kh * g.kw * isa.nr)
                for ki in range(g.kh):
                    for kj in range(g.kw):
                        at = [b.add(src_c, ki * dh * g.wp + kj * dw)]
                        if sw == 1:
                            words = b.vload(ws, at, isa.nr)
                        else:
                            both = b.vload(ws, at, 2 * isa.nr)
                            words = shuffle(b, both, both, even)
                        b.vstore(words, panel, [b.add(dst_c, (ki * g.kw + kj) * isa.nr)])

            b.for_range(0, g.groups, 1, group)

        in_row = b.cmp_index("sle", b.add(ow0, isa.nr), g.ow)
        if_else(b, in_row, by_row, by_pixel)

    def tile(
        self,
        b: LoopBuilder,
        n: SSAValue,
        t: SSAValue,
        p0: SSAValue,
        source: _Source,
        valid: int,
        rows: int,
        segments: list[_RowSegment] | None = None,
    ) -> None:
        """Output channels t * MR .. t * MR + rows - 1 of NR pixels at p0 (padded-row
        positions with `segments`)."""
        g, isa = self.g, self.isa
        weights = self.arg(self.op.weight)
        tiles = -(-g.cout // isa.mr)
        zero = b.splat(b.const(0, i32), isa.lanes, i32)
        ones = b.splat(b.const(1, i16), 2 * isa.lanes, i16) if isa.name == "avx2" else None
        taps = len(source.tap_offsets)

        def step(b: LoopBuilder, k_outer: SSAValue, *accs: SSAValue) -> list[SSAValue]:
            outer = b.add(source.base, b.mul(k_outer, source.stride))
            out = list(accs)
            for u, tap in enumerate(source.tap_offsets):
                k = b.add(b.mul(k_outer, taps), u) if taps > 1 else k_outer
                at = b.add(outer, tap)
                xs = [
                    b.vload(source.buffer, [b.add(at, j * isa.lanes)], isa.lanes)
                    for j in range(isa.nvec)
                ]
                for term in range(self.terms):
                    tile = b.add(t, b.mul(self.channel(b, self.terms, term), tiles))
                    row0 = b.mul(b.add(b.mul(tile, g.k4), k), isa.mr)
                    for r in range(rows):
                        w = b.splat(b.load(weights, [b.add(row0, r)]), isa.lanes, i32)
                        for j in range(isa.nvec):
                            i = r * isa.nvec + j
                            out[i] = self.dot(b, out[i], xs[j], w, ones)
            return out

        accs = b.for_range(0, g.k4 // taps, 1, step, [zero] * (rows * isa.nvec))
        for r in range(rows):
            co = b.add(b.mul(t, isa.mr), r)
            row = accs[r * isa.nvec : (r + 1) * isa.nvec]
            self.epilogue(b, n, co, p0, row, valid, segments)

    def dot(
        self, b: LoopBuilder, acc: SSAValue, x: SSAValue, w: SSAValue, ones: SSAValue | None
    ) -> SSAValue:
        """acc + the dot products of 4 u8 (x) by 4 s8 (w) bytes in each int32 lane."""
        lanes = self.isa.lanes
        if self.isa.name in _VPDPBUSD:
            return _intrinsic(b, _VPDPBUSD[self.isa.name], [acc, x, w], _v(i32, lanes))
        assert ones is not None
        xb = _cast(b, vector.BitcastOp, x, _v(i8, 4 * lanes))
        wb = _cast(b, vector.BitcastOp, w, _v(i8, 4 * lanes))
        pairs = _intrinsic(b, "llvm.x86.avx2.pmadd.ub.sw", [xb, wb], _v(i16, 2 * lanes))
        quads = _intrinsic(b, "llvm.x86.avx2.pmadd.wd", [pairs, ones], _v(i32, lanes))
        return _binary(b, arith.AddiOp, acc, quads)

    def epilogue(
        self,
        b: LoopBuilder,
        n: SSAValue,
        co: SSAValue,
        p0: SSAValue,
        row: list[SSAValue],
        valid: int,
        segments: list[_RowSegment] | None = None,
    ) -> None:
        g, isa, op = self.g, self.isa, self.op
        offset, multiplier, bias = (self.arg(v) for v in (op.offset, op.multiplier, op.bias))
        lanes = isa.lanes
        co = self.channel(b, g.cout, co)
        off = b.splat(b.load(offset, [co]), lanes, i32)
        mul = b.splat(b.load(multiplier, [co]), lanes)
        add = b.splat(b.load(bias, [co]), lanes)
        lo = b.splat(float(op.output_min.value.data), lanes)
        hi = b.splat(float(op.output_max.value.data), lanes)
        channel_start = b.mul(b.add(b.mul(n, g.cout * self.groups), co), g.pixels)
        dst = b.add(channel_start, p0)
        row_bytes: list[SSAValue] = []
        for j, acc in enumerate(row):
            count = min(max(valid - j * lanes, 0), lanes)
            if not count:
                continue
            if self.int32_output:  # the exact sum, no requantize (MatMulInteger)
                self.store(
                    b, _binary(b, arith.AddiOp, acc, off), [0, 0, 0, b.add(dst, j * lanes)], count
                )
                continue
            v = _exact_float(b, _binary(b, arith.AddiOp, acc, off), lanes)
            v = b.minf(b.maxf(b.fma(v, mul, add), lo), hi)
            q_int = _round_to_int(b, v, lanes)
            if segments is not None:
                row_bytes.append(_low_bytes(b, q_int, lanes))
                continue
            at = [0, 0, 0, b.add(dst, j * lanes)]
            if op.residual is not None:
                q_int = self.add_residual(b, q_int, at, count)
            self.store(b, _low_bytes(b, q_int, lanes), at, count)
        if segments is not None:
            if len(row_bytes) == 2:  # AVX2: two vectors of 8 lanes
                row_bytes = [shuffle(b, *row_bytes, list(range(2 * lanes)))]
            self.store_segments(b, row_bytes[0], channel_start, segments)

    def store(self, b: LoopBuilder, lanes_value: SSAValue, at: list[Value], count: int) -> None:
        """Store the first `count` lanes at `at` in the output (8-bit or int32)."""
        out = self.arg(self.op.output)
        if count == self.isa.lanes:
            b.vstore(lanes_value, out, at)
            return
        # The pixel tail masked (the emitter stores a one-lane tail as a scalar: LLVM 22
        # widens a one-lane masked store of a truncated vector to 4 bytes).
        mask = b.insert(vector.CreateMaskOp([b.index(count)], _v(i1, self.isa.lanes))).results[0]
        b.insert(vector.MaskedStoreOp(out, [b.index(i) for i in at], mask, lanes_value))

    @property
    def int32_output(self) -> bool:
        element = self.op.output.type.get_element_type()  # type: ignore[attr-defined]
        return isinstance(element, IntegerType) and element.width.data == 32

    def add_residual(self, b: LoopBuilder, q: SSAValue, at: list[Value], count: int) -> SSAValue:
        """The conv's quantized lanes `q` (int32) dequantized, plus the dequantized residual
        at `at`, requantized (a QDQ Add fused into the epilogue; graph.qconv)."""
        lanes = self.isa.lanes
        params = [float(v) for v in self.op.residual_params.get_values()]  # type: ignore[union-attr]
        conv_scale, r_scale, r_zero, sum_scale, sum_zero, sum_min, sum_max, signed = params
        residual = self.arg(self.op.residual)
        indices = [b.index(i) for i in at]
        if count == lanes:
            r = b.vload(residual, at, lanes)
        else:  # loads are safe to mask (only the stores were miscompiled)
            mask = b.insert(vector.CreateMaskOp([b.index(count)], _v(i1, lanes))).results[0]
            zero = b.splat(b.const(0, i8), lanes, i8)
            r = b.insert(vector.MaskedLoadOp(residual, indices, mask, zero, _v(i8, lanes)))
            r = r.results[0]
        if signed:  # int8 as uint8 (r + 128), its zero point shifted alike
            r = _binary(b, arith.XOrIOp, r, b.splat(b.const(-128, i8), lanes, i8))
        r_words = b.insert(llvm.ZExtOp(r, _v(i32, lanes))).results[0]

        def dequantized(words: SSAValue, zero_point: float, scale: float) -> SSAValue:
            value = _exact_float(b, words, lanes)  # small integers: exact
            return b.mulf(b.subf(value, b.splat(zero_point, lanes)), b.splat(scale, lanes))

        total = b.addf(
            dequantized(q, float(self.op.output_zero_point.value.data), conv_scale),
            dequantized(r_words, r_zero, r_scale),
        )
        # round_half_even(total / scale) + zero point, clamped (integer bounds: clamping
        # before rounding is the same).
        y = b.divf(total, b.splat(sum_scale, lanes))
        y = b.minf(
            b.maxf(y, b.splat(sum_min - sum_zero, lanes)), b.splat(sum_max - sum_zero, lanes)
        )
        zero_point = b.splat(b.const(int(sum_zero), i32), lanes, i32)
        return _binary(b, arith.AddiOp, _round_to_int(b, y, lanes), zero_point)


@lowering(kernel.QConv2dOp)
def lower_qconv(op: kernel.QConv2dOp, target: Target, name: str) -> func.FuncOp:
    depthwise_isa = qconv_depthwise_isa(op.weight_layout.data)
    try:
        isa, terms = depthwise_isa, 1
        if isa is None:
            isa, terms = parse_qconv_layout(op.weight_layout.data)
    except ValueError as err:
        raise fail(op, str(err)) from None
    g = geometry_of(op)
    if shape(op.workspace) != (qconv_workspace_words(g, isa),):
        raise fail(op, f"workspace {shape(op.workspace)} does not fit the geometry {g}")
    widths = []
    for value in (op.input, op.output):
        element = value.type.get_element_type()  # type: ignore[attr-defined]
        widths.append(element.width.data if isinstance(element, IntegerType) else 0)
    if widths[0] != 8 or widths[1] not in (8, 32) or (widths[1] == 32 and op.residual):
        raise fail(op, "input must be 8-bit integers, output 8-bit or (without residual) int32")
    if g.depthwise:
        if widths[1] != 8:
            raise fail(op, "a depthwise qconv has an 8-bit output")
        return lower_qconv_depthwise(op, g, isa, target, name)
    one = g.per_group()
    expected = g.group * terms * -(-one.cout // isa.mr) * one.k4 * isa.mr
    if g.c % g.group or g.cout % g.group or shape(op.weight) != (expected,):
        raise fail(op, f"weight {shape(op.weight)} does not fit {g} packed as {isa.name}")
    fn, b = kernel_function(name, operand_types(op))
    conv = _QConv(op, one, isa, terms, list(fn.args), g.group)
    # Blocks of NR pixels, or of NR padded-row positions (all lanes computed, stores masked).
    full, tail = divmod(g.pixels, isa.nr)
    if conv.padded_rows:
        full, tail = ceil_div(conv.padded_positions, isa.nr), 0

    def one_group(b: LoopBuilder, n: SSAValue) -> None:
        conv.interleave(b, n, target, g.flops)
        if full:
            work_units(b, target, g.flops, full, lambda b, pb: conv.block(b, n, pb, isa.nr))
        if tail:
            conv.block(b, n, b.index(full), tail)

    def image(b: LoopBuilder, n: SSAValue) -> None:
        if g.group == 1:
            one_group(b, n)
            return

        def group(b: LoopBuilder, index: SSAValue) -> None:
            conv.group_index = index
            one_group(b, n)
            conv.group_index = None

        b.for_range(0, g.group, 1, group)

    b.for_range(0, g.n, 1, image)
    b.ret()
    return fn


# int16 pairs multiplied and summed into int32 lanes, added to an accumulator: vpdpwssd where
# the target has VNNI (AVX-512 on zmm, AVX-VNNI on ymm), else vpmaddwd + vpaddd.
# By lanes; the 256-bit form is EVEX-encoded with AVX-512 VL, VEX-encoded with AVX-VNNI.
_VPDPWSSD = {16: "llvm.x86.avx512.vpdpwssd.512", 8: "llvm.x86.avx512.vpdpwssd.256"}
_PMADDWD = {16: "llvm.x86.avx512.pmaddw.d.512", 8: "llvm.x86.avx2.pmadd.wd"}


@dataclass(frozen=True)
class _DepthwisePlanes:
    """conv.py's BandPlanes geometry with int32 words: plane row i of a band holds, per
    column, its input row i (zero-extended, int8 flipped to uint8) in the low int16 and input
    row i + dilation in the high one; outside the input both are the zero point."""

    planes: BandPlanes
    zero_point: int
    signed: bool
    masked_loads: bool  # the target loads bytes under a mask natively (AVX-512 BW)

    @property
    def stored_zero_point(self) -> int:
        """The input byte that reads as the zero point (int8 before its flip to uint8)."""
        byte = self.zero_point ^ 0x80 if self.signed else self.zero_point
        return byte - 256 if byte > 127 else byte

    def allocate(self, b: LoopBuilder) -> SSAValue:
        """The planes, filled with the zero point: fills only write the interior."""
        p = self.planes
        plane = alloca(b, [p.geo.sw, p.rows, p.width], i32)

        def clear(b: LoopBuilder, q: SSAValue) -> None:
            b.for_range(0, p.rows, 1, lambda b, r: self.fill_row(b, plane, q, r))

        b.for_range(0, p.geo.sw, 1, clear)
        return plane

    def fill_row(self, b: LoopBuilder, plane: SSAValue, phase: Value, row: SSAValue) -> None:
        """Plane row `row` of column phase `phase` all the zero point (both halves)."""
        fill = b.splat(b.const(self.zero_point * 0x10001, i32), self.planes.vw, i32)
        for t in range(0, self.planes.width, self.planes.vw):
            b.vstore(fill, plane, [phase, row, t])

    def words(self, b: LoopBuilder, halves: list[SSAValue | None], lanes: int) -> SSAValue:
        """Words of two rows of bytes as stored (vector<lanes x i8>, or scalars if lanes is
        0), the first in the low int16; None: the zero point."""
        words = []
        for raw in halves:
            if raw is None:
                words.append(None)
                continue
            if self.signed:
                flip = b.const(-128, i8)
                raw = _binary(b, arith.XOrIOp, raw, b.splat(flip, lanes, i8) if lanes else flip)
            if lanes:
                words.append(b.insert(llvm.ZExtOp(raw, _v(i32, lanes))).results[0])
            else:
                words.append(_cast(b, arith.ExtUIOp, raw, i32))

        def const(value: int) -> SSAValue:
            word = b.const(value, i32)
            return b.splat(word, lanes, i32) if lanes else word

        low, high = words
        if high is None:
            return _binary(b, arith.OrIOp, low, const(self.zero_point << 16))
        high = _binary(b, arith.ShLIOp, high, const(16))
        return _binary(b, arith.OrIOp, const(self.zero_point) if low is None else low, high)

    def fill(
        self,
        b: LoopBuilder,
        plane: SSAValue,
        x: SSAValue,
        n: SSAValue,
        ch: SSAValue,
        band: SSAValue,
    ) -> None:
        """Copy the input rows of output band `band` of channel `ch` into the planes."""
        p = self.planes
        geo, vw, sw = p.geo, p.vw, p.geo.sw

        def copy_row(b: LoopBuilder, rows: list[SSAValue | None], row: SSAValue) -> None:
            """Plane row `row` from input rows `rows` (low, high; None: outside the input)."""

            def load(b: LoopBuilder, col: Value, lanes: int) -> list[SSAValue | None]:
                return [
                    None
                    if ih is None
                    else b.vload(x, [n, ch, ih, col], lanes)
                    if lanes
                    else b.load(x, [n, ch, ih, col])
                    for ih in rows
                ]

            # Vectors of vw (stride 1) or 2 * vw (stride 2, de-interleaved by two shuffles)
            # input columns; the last vector ends at the last column, overlapping the one
            # before it (its words written twice, alike), so that no column is copied by
            # scalars unless the row is narrower than one vector.
            span = vw * sw if sw <= 2 else 0

            def copy_vector(
                b: LoopBuilder, iw: Value, parity: int, loaded: list[SSAValue | None]
            ) -> None:
                for e in range(sw):
                    halves = loaded
                    if sw == 2:
                        mask = list(range(e, span, 2))
                        halves = [None if v is None else shuffle(b, v, v, mask) for v in loaded]
                    col = b.add(iw, e + geo.pl)
                    phase = (parity + e + geo.pl) % sw
                    at = [phase, row, b.floordiv(col, sw) if sw > 1 else col]
                    b.vstore(self.words(b, halves, vw), plane, at)

            if span and p.copy_cols >= span:
                full = p.copy_cols - p.copy_cols % span
                b.for_range(0, full, span, lambda b, iw: copy_vector(b, iw, 0, load(b, iw, span)))
                if full < p.copy_cols:
                    last = p.copy_cols - span
                    copy_vector(b, b.index(last), last % sw, load(b, last, span))
                return
            # A row narrower than a vector (14x14, 7x7 maps): one masked load per input row,
            # the lanes past it the zero point (the right padding), where the plane row has
            # room for the whole vector; AVX-512 only (AVX2 has no masked byte loads).
            if span and self.masked_loads and (sw - 1 + geo.pl) // sw + vw <= p.width:
                mask = b.insert(vector.CreateMaskOp([b.index(p.copy_cols)], _v(i1, span)))
                fill = b.splat(b.const(self.stored_zero_point, i8), span, i8)
                loaded = [
                    None
                    if ih is None
                    else b.insert(
                        vector.MaskedLoadOp(
                            x, [n, ch, ih, b.index(0)], mask.results[0], fill, _v(i8, span)
                        )
                    ).results[0]
                    for ih in rows
                ]
                copy_vector(b, b.index(0), 0, loaded)
                return

            def copy_col(b: LoopBuilder, iw: SSAValue) -> None:
                col = b.add(iw, geo.pl)
                at = [b.rem(col, sw), row, b.floordiv(col, sw)]
                b.store(self.words(b, load(b, iw, 0), 0), plane, at)

            b.for_range(0, p.copy_cols, 1, copy_col)

        def outside(b: LoopBuilder, row: SSAValue) -> None:
            for q in range(sw):
                self.fill_row(b, plane, q, row)

        ih0 = b.sub(b.mul(p.first_output_row(b, band), geo.sh), geo.pt)

        def plane_row(b: LoopBuilder, row: SSAValue) -> None:
            low = b.add(ih0, row)
            high = b.add(low, geo.dh)
            # negative rows wrap around: one unsigned compare per row
            low_in, high_in = (b.cmp_index("ult", ih, geo.h) for ih in (low, high))

            def low_inside(b: LoopBuilder) -> None:
                if_else(
                    b,
                    high_in,
                    lambda t: copy_row(t, [low, high], row),
                    lambda e: copy_row(e, [low, None], row),
                )

            def low_outside(b: LoopBuilder) -> None:
                if_else(
                    b, high_in, lambda t: copy_row(t, [None, high], row), lambda e: outside(e, row)
                )

            if_else(b, low_in, low_inside, low_outside)

        # The kernel reads plane rows (output row) * stride + 2 * pair * dilation: with an even
        # stride only the even ones (each input row is then copied once, not twice).
        b.for_range(0, p.rows, 2 if geo.sh % 2 == 0 else 1, plane_row)


def lower_qconv_depthwise(
    op: kernel.QConv2dOp, g: QConvGeometry, isa: Int8Isa, target: Target, name: str
) -> func.FuncOp:
    """The depthwise int8 kernel (module docstring): work units (image, chunk of channels),
    per channel its band planes, then one pair instruction per two kernel rows at a kernel
    column over blocks of output columns."""
    if isa.lanes == 16 and g.ow <= 8:  # outputs of 7 columns: 7 of 8 lanes, not 7 of 16
        isa = replace(isa, lanes=8)
    vw, pairs = isa.lanes, -(-g.kh // 2)
    if g.cout != g.c or shape(op.weight) != (g.c * pairs * g.kw,):
        raise fail(
            op, f"depthwise weight {shape(op.weight)} does not fit {g.c} channels of {g.kh}x{g.kw}"
        )
    (sh, sw), (dh, dw) = g.strides, g.dilations
    geo = ConvGeometry(
        g.n, g.c, g.h, g.w, g.cout, g.oh, g.ow, g.kh, g.kw, sh, sw, dh, dw,
        g.pads[0], g.pads[1], g.c,
    )  # fmt: skip
    band_planes = BandPlanes.plan(geo, vw, 1)
    if not band_planes.fits:
        raise fail(
            op,
            f"depthwise window of {band_planes.rows}x{band_planes.width} rows exceeds the "
            "scratch limit",
        )
    planes = _DepthwisePlanes(
        band_planes,
        op.input_zero_point.value.data,
        bool(op.input_signed.value.data),
        masked_loads=isa.name == "vnni512",
    )
    chunks = min(g.c, 4 * max(target.threads, 1))
    per_chunk = ceil_div(g.c, chunks)
    chunks = ceil_div(g.c, per_chunk)
    fn, body = kernel_function(name, operand_types(op))
    conv = _QConv(op, g, isa, 1, list(fn.args))
    weights = conv.arg(op.weight)
    int16_pairs, int32_lanes = _v(i16, 2 * vw), _v(i32, vw)

    def dot(b: LoopBuilder, acc: SSAValue, x: SSAValue, w: SSAValue) -> SSAValue:
        if isa.name in _VPDPBUSD:  # the VNNI targets
            return _intrinsic(b, _VPDPWSSD[vw], [acc, x, w], int32_lanes)
        product = _intrinsic(b, _PMADDWD[vw], [x, w], int32_lanes)
        return _binary(b, arith.AddiOp, acc, product)

    def unit(b: LoopBuilder, u: SSAValue) -> None:
        plane = planes.allocate(b)
        zero = b.splat(b.const(0, i32), vw, i32)
        n, chunk_index = decode(b, u, [g.n, chunks])
        first = b.mul(chunk_index, per_chunk)
        last = b.min_index(b.add(first, per_chunk), g.c)

        def channel(b: LoopBuilder, ch: SSAValue) -> None:
            base = b.mul(ch, pairs * g.kw)
            tap_words = [
                _cast(
                    b,
                    vector.BitcastOp,
                    b.splat(b.load(weights, [b.add(base, t)]), vw, i32),
                    int16_pairs,
                )
                for t in range(pairs * g.kw)
            ]

            def out_row(b: LoopBuilder, oh: SSAValue, row0: SSAValue) -> None:
                def columns(b: LoopBuilder, ow0: SSAValue, cols: int) -> None:
                    nv = ceil_div(cols, vw)
                    # Two accumulator chains per vector, taps alternating: half the
                    # dependent vpdpwssd latency per row (measured 5-10% faster, znver5).
                    chains = [[zero] * nv for _ in range(2)]
                    tap = 0
                    for pair in range(pairs):
                        row = b.add(row0, 2 * pair * dh)
                        for s in range(g.kw):
                            phase, shift = band_planes.tap(s)
                            accs = chains[tap % 2]
                            for j in range(nv):
                                at = [phase, row, b.add(ow0, j * vw + shift)]
                                x = _cast(b, vector.BitcastOp, b.vload(plane, at, vw), int16_pairs)
                                accs[j] = dot(b, accs[j], x, tap_words[pair * g.kw + s])
                            tap += 1
                    accs = [_binary(b, arith.AddiOp, a, c) for a, c in zip(*chains, strict=True)]
                    conv.epilogue(b, n, ch, b.add(b.mul(oh, g.ow), ow0), accs, cols)

                width_chunks(b, g.ow, DEPTHWISE_ROW_VECTORS * vw, columns)

            def band(b: LoopBuilder, index: SSAValue) -> None:
                planes.fill(b, plane, conv.x, n, ch, index)
                band_planes.output_rows(b, index, out_row)

            b.for_range(0, band_planes.bands, 1, band)

        b.for_range(first, last, 1, channel)

    work_units(body, target, g.flops, g.n * chunks, unit)
    body.ret()
    return fn


__all__ = [
    "ISAS",
    "Int8Isa",
    "QConvGeometry",
    "geometry_of",
    "int8_isa",
    "pack_qconv_weight",
    "qconv_workspace_words",
]
