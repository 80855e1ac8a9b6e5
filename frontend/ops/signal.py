"""ONNX -> graph dialect: DFT, STFT and MelWeightMatrix (speech front-ends).

A DFT of a length known at compile time is a matrix product: the signal axis moved last
(with the real/imaginary pair), flattened to rows, times a constant [length·2, bins·2] matrix
of cos/sin values computed with numpy at compile time. That is how CPU engines run the short
transforms of speech models (a 400-sample frame, 201 bins), and it runs on ember's packed,
vectorised GEMM instead of a scalar butterfly; its cost is O(n²) per frame, which for frame
lengths of a few hundred is cheaper than the FFT's data shuffling. Zero-padding to a longer
`dft_length` and truncation to a shorter one are rows of the matrix left out; onesided output
is columns left out; the inverse is the conjugate matrix scaled by 1/length.

STFT is frames gathered along the signal (one constant index table), then the same matrix,
with a constant window folded into its rows (a run-time window multiplies the frames).
MelWeightMatrix's operands are shapes and frequencies: it folds to a constant with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from ember.core import limits
from ember.dialects import graph
from ember.frontend.context import (
    Const,
    ImportContext,
    Node,
    Value,
    dtype_of,
    i64_attr,
    shape_of,
)
from ember.frontend.errors import ModelError
from ember.frontend.registry import converts


def _scalar_int(imp: ImportContext, node: Node, index: int, what: str) -> int | None:
    """A compile-time integer operand given as a scalar or a 1-element tensor (None: absent)."""
    array = imp.constant(node, index, what)
    if array is None:
        return None
    if array.size != 1:
        raise node.error(f"{what} must be a scalar, got shape {list(array.shape)}")
    return int(array.reshape(-1)[0])


def dft_matrix(
    in_bins: int,
    in_parts: int,
    length: int,
    out_bins: int,
    inverse: bool,
    real_output: bool,
    window: np.ndarray | None = None,
) -> np.ndarray:
    """The [in_bins·in_parts, out_bins·out_parts] matrix of a DFT of `length` points, computed
    in float64: row j·in_parts + p reads bin j's real (p = 0) or imaginary (p = 1) part, column
    k·out_parts + q writes bin k's real or imaginary part. `real_output` is the inverse of a
    onesided spectrum (irfft): bins 1..⌈length/2⌉-1 stand for their conjugate mirror too, so
    they count twice, and only the real part is written (numpy's irfft: the imaginary parts
    of the DC and Nyquist bins are ignored, their sine is 0). `window` scales each input bin."""
    j = np.arange(in_bins, dtype=np.float64)[:, None]
    k = np.arange(out_bins, dtype=np.float64)[None, :]
    # j·k mod length keeps the angle small, so cos/sin stay exact for long transforms.
    theta = 2.0 * np.pi * np.mod(j * k, length) / length
    cos, sin = np.cos(theta), np.sin(theta)
    sign = 1.0 if inverse else -1.0  # e^{-iθ} forward, e^{+iθ} inverse
    scale = 1.0 / length if inverse else 1.0
    if real_output:
        count = np.full((in_bins, 1), 2.0)
        count[0] = 1.0
        if length % 2 == 0 and in_bins > length // 2:
            count[length // 2] = 1.0
        re_row, im_row = count * cos, -count * sin  # Re(X e^{+iθ}) = Xr cos - Xi sin
        parts = [[re_row], [im_row]]
    else:
        # (Xr + i Xi)(cos + i·sign·sin) = Xr cos - sign Xi sin + i (sign Xr sin + Xi cos)
        parts = [[cos, sign * sin], [-sign * sin, cos]]
    out_parts = len(parts[0])
    matrix = np.zeros((in_bins, in_parts, out_bins, out_parts))
    for p in range(in_parts):
        for q in range(out_parts):
            matrix[:, p, :, q] = parts[p][q]
    matrix *= scale
    if window is not None:
        matrix *= window.astype(np.float64)[:, None, None, None]
    return matrix.reshape(in_bins * in_parts, out_bins * out_parts)


def _check_matrix_size(node: Node, rows: int, cols: int, length: int) -> None:
    """Refuse a transform whose matrix would outgrow what ember folds at compile time: the
    matrix is O(length²) (a 2,048-point complex DFT is 32 MiB of float32)."""
    size = rows * cols * 4
    if size > limits.FOLD_LIMIT_BYTES:
        raise node.unsupported(
            f"a {length}-point transform: ember computes a DFT as a product with a constant "
            f"[{rows}, {cols}] matrix, {size} bytes, over the {limits.FOLD_LIMIT_BYTES} it "
            "computes at compile time"
        )


def _times_matrix(imp: ImportContext, rows: Value, matrix: np.ndarray) -> Value:
    """rows [M, K] @ a constant [K, N] (a 16-bit float input is computed in float32, the
    matrix rounded to float32 once, and the result narrowed back)."""
    dtype = dtype_of(rows)
    wide = imp.widen_to_float32(rows) if dtype.itemsize == 2 else rows
    b = Const(matrix.astype(dtype_of(wide)))
    m, n = shape_of(rows)[0], matrix.shape[1]
    product = imp.emit(graph.MatMulOp, [wide, b, None, None], [m, n])
    if dtype_of(product) != dtype:
        product = imp.emit(graph.CastOp, [product], [m, n], dtype)
    return product


def _signal_input(imp: ImportContext, node: Node) -> Value:
    x = imp.float_input(node, 0)
    shape = shape_of(x)
    if len(shape) < 2 or shape[-1] not in (1, 2):
        raise node.error(
            f"input of shape {list(shape)}: the last axis must be 1 (real) or 2 (complex)"
        )
    return x


def _complex_onesided(node: Node, shape: Sequence[int]) -> ModelError:
    """The spec's "onesided output is not possible" for a complex input (onnxruntime refuses
    it too; onnx.reference returns the first half of the full spectrum)."""
    return node.error(f"onesided=1 on a complex input of shape {list(shape)} (needs a real input)")


@converts("DFT")
def _dft(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = _signal_input(imp, node)
    shape = shape_of(x)
    rank = len(shape)
    if node.opset >= 20:
        given = _scalar_int(imp, node, 2, "axis")
        axis = -2 if given is None else given
    else:
        axis = int(node.attrs.get("axis", 1))
    if not -rank <= axis < rank or axis % rank == rank - 1:
        raise node.error(
            f"axis {axis} out of range for an input of shape {list(shape)} (the last axis "
            "holds the real/imaginary parts)"
        )
    axis %= rank
    inverse = bool(node.attrs.get("inverse", 0))
    onesided = bool(node.attrs.get("onesided", 0))
    size = shape[axis]
    given_length = _scalar_int(imp, node, 1, "dft_length")
    if given_length is None:
        length = 2 * (size - 1) if inverse and onesided else size
    else:
        length = given_length
    if length < 1:
        raise node.error(f"dft_length {length} (a transform needs at least 1 point)")
    parts = shape[-1]
    if onesided and not inverse and parts == 2:
        raise _complex_onesided(node, shape)
    if inverse and onesided:
        # irfft: the first length//2 + 1 bins describe the whole spectrum.
        used, out_bins, real_output = min(size, length // 2 + 1), length, True
    else:
        used = min(size, length)
        out_bins = length // 2 + 1 if onesided else length
        real_output = False
    out_parts = 1 if real_output else 2
    _check_matrix_size(node, used * parts, out_bins * out_parts, length)
    matrix = dft_matrix(used, parts, length, out_bins, inverse, real_output)

    # Move the signal axis next to the parts axis, flatten to rows, multiply, move it back.
    others = [d for d in range(rank - 1) if d != axis]
    perm = [*others, axis, rank - 1]
    moved = imp.transpose(x, perm) if perm != list(range(rank)) else x
    moved = imp.slice_axis(moved, rank - 2, 0, used) if used < size else moved
    batch = [shape[d] for d in others]
    rows = int(np.prod(batch, dtype=np.int64))
    flat = imp.reshape(moved, [rows, used * parts])
    product = _times_matrix(imp, flat, matrix)
    result = imp.reshape(product, [*batch, out_bins, out_parts])
    back = [perm.index(d) for d in range(rank)]
    return [imp.transpose(result, back) if back != list(range(rank)) else result]


@converts("STFT")
def _stft(imp: ImportContext, node: Node) -> Sequence[Value]:
    given = imp.float_input(node, 0)
    if len(shape_of(given)) == 2:
        # torch.onnx writes torch.stft's real signal as [batch, length], without the parts
        # axis; onnxruntime reads that as real, and so does ember.
        signal = imp.reshape(given, [*shape_of(given), 1])
    else:
        signal = _signal_input(imp, node)
    shape = shape_of(signal)
    if len(shape) != 3:
        raise node.error(f"signal of shape {list(shape)} (expected [batch, length, 1 or 2])")
    batch, signal_length, parts = shape
    step = _scalar_int(imp, node, 1, "frame_step")
    window_value = imp.input(node, 2)
    given_length = _scalar_int(imp, node, 3, "frame_length")
    window_length = None if window_value is None else shape_of(window_value)
    if window_length is not None and len(window_length) != 1:
        raise node.error(f"window of shape {list(window_length)} (expected 1-D)")
    if given_length is not None:
        frame_length = given_length
    elif window_length is not None:
        frame_length = window_length[0]
    else:
        frame_length = signal_length
    if window_length is not None and window_length[0] != frame_length:
        raise node.error(f"window of length {window_length[0]} for frame_length {frame_length}")
    if step is None or step < 1:
        raise node.error(f"frame_step {step} (must be a positive integer)")
    if not 1 <= frame_length <= signal_length:
        raise node.error(f"frame_length {frame_length} for a signal of length {signal_length}")
    onesided = bool(node.attrs.get("onesided", 1))
    if onesided and parts == 2:
        raise _complex_onesided(node, shape)
    frames = 1 + (signal_length - frame_length) // step
    if "onesided" not in node.attrs and node.proto.output:
        # ONNX's shape inference (1.23) reads an absent onesided as 0, though the schema's
        # default is 1 (which its reference, onnxruntime and ember follow): it infers all
        # frame_length bins there.
        imp.onnx_infers_instead(node.proto.output[0], [batch, frames, frame_length, 2])
    bins = frame_length // 2 + 1 if onesided else frame_length

    # Frames: one gather of a constant [frames, frame_length] table of signal positions.
    starts = np.arange(frames, dtype=np.int64)[:, None] * step
    table = starts + np.arange(frame_length, dtype=np.int64)[None, :]
    framed = imp.emit(
        graph.GatherOp,
        [signal, Const(table)],
        [batch, frames, frame_length, parts],
        axis=i64_attr(1),
    )
    window = None
    if isinstance(window_value, Const):
        window = window_value.array
    elif window_value is not None:
        taps = imp.reshape(window_value, [1, 1, frame_length, 1])
        framed = imp.binary(node, graph.MulOp, framed, taps)
    _check_matrix_size(node, frame_length * parts, bins * 2, frame_length)
    matrix = dft_matrix(frame_length, parts, frame_length, bins, False, False, window)
    flat = imp.reshape(framed, [batch * frames, frame_length * parts])
    product = _times_matrix(imp, flat, matrix)
    return [imp.reshape(product, [batch, frames, bins, 2])]


def mel_weight_matrix(
    num_mel_bins: int,
    dft_length: int,
    sample_rate: int,
    lower_edge_hertz: float,
    upper_edge_hertz: float,
) -> np.ndarray:
    """ONNX's MelWeightMatrix (its reference and onnxruntime's): [dft_length//2 + 1,
    num_mel_bins] triangular filters between mel-spaced bin positions, in float64. Raises
    ValueError where a filter's bins fall outside the spectrum."""
    spectrogram_bins = dft_length // 2 + 1
    edges = np.arange(num_mel_bins + 2, dtype=np.float64)
    low_mel = 2595 * np.log1p(lower_edge_hertz / 700) / np.log(10)
    high_mel = 2595 * np.log1p(upper_edge_hertz / 700) / np.log(10)
    mel_step = (high_mel - low_mel) / edges.shape[0]
    hertz = 700 * np.expm1((edges * mel_step + low_mel) / 2595 * np.log(10))
    positions = (((dft_length + 1) * hertz) // sample_rate).astype(np.int64)
    if positions.min() < 0 or positions.max() >= spectrogram_bins:
        raise ValueError(
            f"the filters reach spectrum bins {int(positions.min())}..{int(positions.max())}, "
            f"outside the {spectrogram_bins} bins of dft_length {dft_length}"
        )
    output = np.zeros((spectrogram_bins, num_mel_bins))
    for i in range(num_mel_bins):
        left, center, right = (int(p) for p in positions[i : i + 3])
        if center == left:
            output[center, i] = 1.0
        else:
            j = np.arange(left, center + 1)
            output[j, i] = (j - left) / (center - left)
        if right > center:
            j = np.arange(center, right)
            output[j, i] = (right - j) / (right - center)
    return output


@converts("MelWeightMatrix")
def _mel_weight_matrix(imp: ImportContext, node: Node) -> Sequence[Value]:
    num_mel_bins = _scalar_int(imp, node, 0, "num_mel_bins")
    dft_length = _scalar_int(imp, node, 1, "dft_length")
    sample_rate = _scalar_int(imp, node, 2, "sample_rate")
    edges = [
        imp.constant(node, i, what)
        for i, what in ((3, "lower_edge_hertz"), (4, "upper_edge_hertz"))
    ]
    if num_mel_bins is None or dft_length is None or sample_rate is None or None in edges:
        raise node.error("all five inputs are required")
    lower, upper = (float(np.asarray(e).reshape(-1)[0]) for e in edges)  # type: ignore[union-attr]
    if num_mel_bins < 1 or dft_length < 1 or sample_rate < 1:
        raise node.error(
            f"num_mel_bins {num_mel_bins}, dft_length {dft_length}, sample_rate {sample_rate} "
            "(each must be positive)"
        )
    if not 0 <= lower < upper:
        raise node.error(f"lower_edge_hertz {lower} and upper_edge_hertz {upper}")
    try:
        matrix = mel_weight_matrix(num_mel_bins, dft_length, sample_rate, lower, upper)
    except ValueError as err:
        raise node.error(str(err)) from err
    dtype = onnx.helper.tensor_dtype_to_np_dtype(
        int(node.attrs.get("output_datatype", onnx.TensorProto.FLOAT))
    )
    return [Const(matrix.astype(dtype))]
