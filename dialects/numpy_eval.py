"""Numpy semantics of graph ops: the array functions, and how an op declares its own.

Each graph op that numpy can compute declares its semantics itself, with a method
`evaluate(self, inputs) -> np.ndarray` (the `Evaluable` protocol): `inputs` are its operand
values in definition order (`operand_slots`: None for an absent optional operand, a variadic
operand's values in place), and the method is a line or two calling a function of this
module with the op's typed properties (`elementwise(np.tanh)` for an elementwise op). A twin's
`TwinSpec` declares it once for both forms. An op with no `evaluate` has no numpy semantics:
it is never folded, and the reference interpreter refuses it.

Three clients ask the op through `evaluate(op, inputs)`, which adds what every op shares
(the result's element type, IEEE results such as log 0 = -inf taken as the answer): the
importer folds shape computations, the `fold-constants` pass folds ops whose operands are all
constants, and `evaluate_function` interprets a whole graph-dialect function (tests and
divergence bisection compare it with onnxruntime). Never used at inference time.

Why a method and not xDSL's mechanisms: `HasFolder.fold(op)` answers with attributes, but
ember keeps tensor values out of the IR (a `graph.constant` names a `WeightStore` entry), so a
folder would have to reach the store and the operand values from inside the op; and
`xdsl.interpreter` registers implementations per op class in an `InterpreterFunctions`
class, a second table beside the ops, which is what this replaces. Pureness is xDSL's: graph
ops declare `Pure`, and `dce` uses xDSL's `is_trivially_dead`.

This module imports no op definitions (`dialects/graph.py` imports it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import ml_dtypes
import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import IRDLOperation

from ember.core import limits
from ember.dialects import dtypes, small_types
from ember.dialects.weights import WeightRef, WeightStore
from ember.runtime.errors import ModelError

Inputs = Sequence["np.ndarray | None"]


class Evaluable(Protocol):
    """An op with numpy semantics: its result computed from its operand values. `evaluate`
    reads the op's properties and result types, and operand values only from `inputs` (the
    importer asks an op built on stand-ins for its constants). Tell one by `has_semantics`, a
    class attribute look-up, not isinstance: a protocol check costs microseconds, on every op
    of every fold-constants sweep."""

    def evaluate(self, inputs: Inputs) -> np.ndarray: ...


def elementwise(fn: Callable[..., Any]) -> Callable[[Any, Inputs], np.ndarray]:
    """The `evaluate` of an elementwise op: `fn` of its operand values, e.g.
    `evaluate = elementwise(np.tanh)` in the op's class body."""

    def evaluate(self: Any, inputs: Inputs) -> np.ndarray:
        return fn(*inputs)

    return evaluate


def numpy_dtype(element_type: Attribute) -> np.dtype:
    """The numpy dtype that stores elements of an xDSL element type (ValueError if none)."""
    try:
        return dtypes.numpy_dtype_for(element_type)
    except TypeError as err:
        raise ValueError(str(err)) from None


def element_type(dtype: np.dtype | type) -> Attribute:
    """The xDSL element type of a numpy dtype (ValueError if none)."""
    try:
        return dtypes.element_type_for(dtype)
    except TypeError as err:
        raise ValueError(str(err)) from None


def is_small_dtype(dtype: np.dtype) -> bool:
    """Whether numpy `dtype` is one of the 8-, 4- and 2-bit types (float8, float4, int4, int2)."""
    return dtype in small_types.SMALL_FLOAT_DTYPES | small_types.NARROW_INT_DTYPES


def tensor_type(array: np.ndarray) -> TensorType:
    return TensorType(element_type(array.dtype), array.shape)


def result_dtype(value: SSAValue | Attribute) -> np.dtype:
    """The numpy dtype of a tensor or memref value (or type): an op's result dtype."""
    ty = value if isinstance(value, Attribute) else value.type
    return numpy_dtype(ty.get_element_type())  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# How big a folded result may be


def result_bytes(out_type: TensorType) -> int:
    return limits.tensor_bytes(tuple(out_type.get_shape()), result_dtype(out_type))


def foldable_size(out_type: TensorType) -> bool:
    """Whether a result of this type is small enough to fold into a constant (see limits)."""
    return result_bytes(out_type) <= limits.FOLD_LIMIT_BYTES


# ---------------------------------------------------------------------------------------------
# Elementwise


def to_blocked(x: np.ndarray, c: int) -> np.ndarray:
    """NCHW -> channel-blocked [N, C/c, H, W, c] (C a multiple of c)."""
    n, channels, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, channels // c, c, h, w).transpose(0, 1, 3, 4, 2))


def from_blocked(x: np.ndarray) -> np.ndarray:
    """Channel-blocked [N, C/c, H, W, c] -> NCHW."""
    n, blocks, h, w, c = x.shape
    return np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3).reshape(n, blocks * c, h, w))


def identity(x: np.ndarray) -> np.ndarray:
    return x


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, x.dtype.type(0))


def reciprocal(x: np.ndarray) -> np.ndarray:
    return np.reciprocal(x) if x.dtype.kind == "f" else 1 // x


def erf(x: np.ndarray) -> np.ndarray:
    """Exact (libm) erf; numpy has none and folding only meets small arrays."""
    # frompyfunc gives a Python float, not an array, for a 0-d input: asarray keeps the rank.
    values = np.frompyfunc(math.erf, 1, 1)(x.astype(np.float64))
    return np.asarray(values, dtype=np.float64).astype(x.dtype)


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(x.dtype)


def gelu(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))).astype(x.dtype)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU's tanh approximation, 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    x64 = x.astype(np.float64)
    inner = math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)
    return (0.5 * x64 * (1.0 + np.tanh(inner))).astype(x.dtype)


def clip_bounds(
    lo: float | None, hi: float | None, dtype: np.dtype
) -> tuple[float | None, float | None]:
    """The bounds a graph.clip on `dtype` applies: a missing float bound is the type's finite
    limit (ONNX: numeric_limits::lowest() / max(); onnxruntime clips +inf to FLT_MAX)."""
    if not np.issubdtype(dtype, np.floating) and dtype != ml_dtypes.bfloat16:
        return lo, hi
    limits = ml_dtypes.finfo(dtype)
    return (float(limits.min) if lo is None else lo, float(limits.max) if hi is None else hi)


def clip(x: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    lo, hi = clip_bounds(lo, hi, x.dtype)
    if lo is not None:
        x = np.maximum(x, x.dtype.type(lo))
    if hi is not None:
        x = np.minimum(x, x.dtype.type(hi))
    return x


def leaky_relu(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x >= 0, x, x * x.dtype.type(alpha))


def apply_activation(x: np.ndarray, name: str | None, params: Sequence[float]) -> np.ndarray:
    """The activation of a conv/matmul epilogue (see graph.ACTIVATIONS)."""
    if name is None:
        return x
    if name == "relu":
        return relu(x)
    if name == "clip":
        return clip(x, params[0], params[1])
    if name == "leaky_relu":
        return leaky_relu(x, params[0])
    if name == "sigmoid":
        return sigmoid(x)
    if name == "tanh":
        return np.tanh(x)
    if name == "gelu":
        return gelu(x)
    if name == "gelu_tanh":
        return gelu_tanh(x)
    raise ValueError(f"unknown activation '{name}'")


def epilogue(
    y: np.ndarray,
    bias: np.ndarray | None,
    residual: np.ndarray | None,
    activation: str | None,
    params: Sequence[float],
) -> np.ndarray:
    """A conv/matmul epilogue: bias, then residual, then the activation."""
    if bias is not None:
        y = y + bias
    if residual is not None:
        y = y + residual
    return apply_activation(y, activation, params)


def attention(
    q: np.ndarray,
    k_t: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None,
    scale: float,
    seq_major: Sequence[int],
) -> np.ndarray:
    """graph.attention: softmax(scale * q @ k_t + mask) @ v, as the unfused ops compute it."""
    heads_first = (0, 2, 1, 3)  # [B, S, H, D] <-> [B, H, S, D]
    q = q.transpose(heads_first) if seq_major[0] else q
    v = v.transpose(heads_first) if seq_major[1] else v
    scores = np.matmul(q, k_t) * q.dtype.type(scale)
    if mask is not None:
        scores = scores + mask
    out = np.matmul(softmax(scores, -1, False), v)
    return np.ascontiguousarray(out.transpose(heads_first) if seq_major[2] else out)


def mod(a: np.ndarray, b: np.ndarray, fmod: bool) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.fmod(a, b) if fmod else np.mod(a, b)


def bitshift(a: np.ndarray, b: np.ndarray, direction: str) -> np.ndarray:
    """Shifts by >= the bit width or by negative amounts shift every bit out (ONNX)."""
    bits = a.dtype.itemsize * 8
    out_of_range = (b < 0) | (b >= bits)
    amount = np.where(out_of_range, 0, b).astype(a.dtype)
    if direction == "left":
        return np.where(out_of_range, 0, np.left_shift(a, amount)).astype(a.dtype)
    filled = np.right_shift(a, bits - 1) if a.dtype.kind == "i" else np.zeros_like(a)
    return np.where(out_of_range, filled, np.right_shift(a, amount)).astype(a.dtype)


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(x.dtype.type(0), x)


def isinf(x: np.ndarray, positive: bool, negative: bool) -> np.ndarray:
    return (np.isposinf(x) & positive) | (np.isneginf(x) & negative)


_COMPARISONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "eq": np.equal,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
}


def compare(a: np.ndarray, b: np.ndarray, predicate: str) -> np.ndarray:
    return _COMPARISONS[predicate](a, b)


_TRIG = {"asin": "arcsin", "acos": "arccos", "atan": "arctan"}
_TRIG |= {"asinh": "arcsinh", "acosh": "arccosh", "atanh": "arctanh"}


def trig(x: np.ndarray, fn: str) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return getattr(np, _TRIG.get(fn, fn))(x)


def div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        # ONNX integer Div truncates toward zero (C semantics), numpy floors; a zero divisor
        # gives 0 like the compiled kernels (which must not trap).
        with np.errstate(divide="ignore"):
            q = np.floor_divide(np.abs(a), np.abs(b)) if a.dtype.kind == "i" else a // b
        return (q * np.sign(a) * np.sign(b)).astype(a.dtype) if a.dtype.kind == "i" else q
    return a / b


# ---------------------------------------------------------------------------------------------
# Shared array functions (the importer calls these directly with ONNX attributes)


def _is_float(dtype: np.dtype) -> bool:
    """numpy's floats and ml_dtypes' (bfloat16 has kind 'V', and np.iinfo refuses it)."""
    if dtype.kind == "f":
        return True
    try:
        ml_dtypes.finfo(dtype)
    except ValueError:
        return False
    return True


def _lowest(dtype: np.dtype) -> object:
    """The least value of `dtype`: -inf for floats (ReduceMax's value over no elements)."""
    if _is_float(dtype):
        return -np.inf
    return False if dtype.kind == "b" else np.iinfo(dtype).min


def _highest(dtype: np.dtype) -> object:
    if _is_float(dtype):
        return np.inf
    return True if dtype.kind == "b" else np.iinfo(dtype).max


def reduce(x: np.ndarray, kind: str, axes: Sequence[int], keepdims: bool) -> np.ndarray:
    """ONNX's reductions; over no elements each gives its identity (sum 0, prod 1, max the
    dtype's least value: -inf for floats, min its greatest), as onnx.reference and onnxruntime
    do. A mean over no elements is undefined in ONNX (onnxruntime gives 0, onnx.reference NaN):
    a ModelError."""
    axes = tuple(axes)
    if x.size == 0 and kind == "mean" and any(x.shape[a] == 0 for a in axes):
        raise ModelError(
            f"ReduceMean over an empty axis of shape {list(x.shape)} (axes {list(axes)}) is "
            "undefined in ONNX"
        )
    if kind in ("max", "min"):
        initial = (_lowest if kind == "max" else _highest)(x.dtype)
        fn = np.max if kind == "max" else np.min
        result = fn(x, axis=axes, keepdims=keepdims, initial=initial)
    else:
        fn = {"sum": np.sum, "mean": np.mean, "prod": np.prod}[kind]
        result = fn(x, axis=axes, keepdims=keepdims)
    return np.asarray(result).astype(x.dtype)


def checked_positions(indices: np.ndarray, size: int, op: str, dim: int) -> np.ndarray:
    """Constant indices into a dimension of `size` as positions: a negative index counts from the
    end once; one outside [-size, size) is a ModelError, as onnxruntime and ember's kernels
    refuse it (numpy would wrap it again or raise IndexError)."""
    indices = np.asarray(indices).astype(np.int64)
    bad = (indices < -size) | (indices >= size)
    if bad.any():
        value = int(indices[bad].flat[0])
        raise ModelError(
            f"{op}: constant index {value} is out of range for dimension {dim} of size {size} "
            f"(valid indices are {-size}..{size - 1})"
        )
    return np.where(indices < 0, indices + size, indices)


def gather(data: np.ndarray, indices: np.ndarray, axis: int) -> np.ndarray:
    axis %= data.ndim
    idx = checked_positions(indices, data.shape[axis], "Gather", axis)
    return np.take(data, idx, axis=axis)


def resize_linear(
    x: np.ndarray, indices: np.ndarray, weights: np.ndarray, out_h: int
) -> np.ndarray:
    """graph.resize_linear: the last two axes, rows then columns, two taps each; a tap of
    weight 0 contributes exactly 0."""

    def axis_pass(v: np.ndarray, axis: int, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
        trailing = (1,) * (v.ndim - axis - 1)
        y = np.zeros((*v.shape[:axis], len(idx), *v.shape[axis + 1 :]), v.dtype)
        for t in range(2):
            term = np.take(v, idx[:, t], axis=axis) * w[:, t].reshape(-1, *trailing)
            y = y + np.where(w[:, t].reshape(-1, *trailing) != 0, term, 0).astype(v.dtype)
        return y

    rows = axis_pass(x, x.ndim - 2, indices[:out_h], weights[:out_h])
    return axis_pass(rows, x.ndim - 1, indices[out_h:], weights[out_h:])


def softmax(x: np.ndarray, axis: int, log: bool = False) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    if log:
        return shifted - np.log(e.sum(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def layer_norm(
    x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, axis: int, eps: float
) -> np.ndarray:
    axes = tuple(range(axis, x.ndim))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x64 - mean) / np.sqrt(var + eps) * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype)


def batch_norm(
    x: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
) -> np.ndarray:
    shape = (-1,) + (1,) * (x.ndim - 2)
    factor = scale / np.sqrt(var + np.float32(eps))
    return (x - mean.reshape(shape)) * factor.reshape(shape) + bias.reshape(shape)


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    group: int,
    out_hw: Sequence[int],
) -> np.ndarray:
    """NCHW x OIHW convolution, accumulated one kernel tap at a time (float64)."""
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    ho, wo = out_hw
    (sh, sw), (dh, dw) = strides, dilations
    top, left, bottom, right = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    xg = xp.reshape(n, group, cg, *xp.shape[2:])
    wg = w.astype(np.float64).reshape(group, o // group, cg, kh, kw)
    out = np.zeros((n, group, o // group, ho, wo))
    for i in range(kh):
        for j in range(kw):
            tap = xg[:, :, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw :][
                ..., : sw * (wo - 1) + 1 : sw
            ]
            out += np.einsum("ngchw,goc->ngohw", tap, wg[:, :, :, i, j])
    return out.reshape(n, o, ho, wo).astype(x.dtype)


def pool2d(
    x: np.ndarray,
    kind: str,
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    out_hw: Sequence[int],
    count_include_pad: bool = False,
) -> np.ndarray:
    """Max/average pooling; windows past the padded input (ceil_mode) are clipped."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ho, wo) = kernel, strides, out_hw
    top, left, bottom, right = pads
    # Extra room so that ceil-mode windows can be sliced; it never counts as padding.
    extra_h = max(0, (ho - 1) * sh + kh - (h + top + bottom))
    extra_w = max(0, (wo - 1) * sw + kw - (w + left + right))
    widths = ((0, 0), (0, 0), (top, bottom + extra_h), (left, right + extra_w))
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x.astype(np.float64), widths, constant_values=fill)
    inside = np.pad(np.ones((h, w)), widths[2:])
    padded = np.pad(np.ones((h + top + bottom, w + left + right)), ((0, extra_h), (0, extra_w)))
    acc = np.full((n, c, ho, wo), fill)
    count = np.zeros((ho, wo))
    for i in range(kh):
        for j in range(kw):
            rows, cols = slice(i, i + sh * (ho - 1) + 1, sh), slice(j, j + sw * (wo - 1) + 1, sw)
            tap = xp[:, :, rows, cols]
            acc = np.maximum(acc, tap) if kind == "max" else acc + tap
            count += (padded if count_include_pad else inside)[rows, cols]
    if kind == "avg":
        acc = acc / count
    return acc.astype(x.dtype)


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    c = x.shape[1]
    sq = x.astype(np.float64) ** 2
    total = np.zeros_like(sq)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    for ch in range(c):
        total[:, ch] = sq[:, max(0, ch - lo) : min(c, ch + hi + 1)].sum(axis=1)
    return (x / (bias + alpha / size * total) ** beta).astype(x.dtype)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)


def gemm(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray | None,
    alpha: float,
    beta: float,
    trans_a: bool,
    trans_b: bool,
) -> np.ndarray:
    """ONNX Gemm: alpha * op(a) @ op(b) + beta * c, the scalars in float32."""
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    y = np.float32(alpha) * matmul(a, b)
    if c is not None:
        y = y + np.float32(beta) * c
    return y.astype(a.dtype)


def strided_slice(x: np.ndarray, starts: Sequence[int], steps: Sequence[int], out: Sequence[int]):
    index = tuple(np.arange(count) * step + start for start, step, count in zip(starts, steps, out))
    return x[np.ix_(*index)] if index else x


def arange(start: np.ndarray, delta: np.ndarray, count: int) -> np.ndarray:
    """start + i * delta for i < count in the dtype of start; float ranges are computed in
    float64 and rounded once, integer ones wrap (graph.range's kernel does the same)."""
    dtype = start.dtype
    i = np.arange(count)
    if dtype.kind == "f":
        wide = i * delta.astype(np.float64).reshape(()) + start.astype(np.float64).reshape(())
        return wide.astype(dtype)
    return (i.astype(dtype) * delta.reshape(()) + start.reshape(())).astype(dtype)


def arg_reduce(x: np.ndarray, kind: str, axis: int, last: bool) -> np.ndarray:
    if x.shape[axis] == 0:
        # No index to return: onnxruntime and onnx.reference fail too.
        raise ModelError(
            f"Arg{kind.capitalize()} along axis {axis} of size 0 (shape {list(x.shape)})"
        )
    fn = np.argmax if kind == "max" else np.argmin
    if last:
        flipped = np.flip(x, axis)
        index = x.shape[axis] - 1 - fn(flipped, axis=axis)
    else:
        index = fn(x, axis=axis)
    return np.expand_dims(index, axis).astype(np.int64)


def cumsum(
    x: np.ndarray, axis: int, exclusive: bool, reverse: bool, product: bool = False
) -> np.ndarray:
    y = np.flip(x, axis) if reverse else x
    total = (np.cumprod if product else np.cumsum)(y, axis=axis, dtype=x.dtype)
    if exclusive:  # shift by one, starting from the identity
        first = np.ones_like if product else np.zeros_like
        head = first(np.take(total, [0], axis=axis))
        total = np.concatenate([head, np.delete(total, -1, axis=axis)], axis=axis)
    return np.flip(total, axis) if reverse else total


def gather_nd(data: np.ndarray, indices: np.ndarray, batch_dims: int) -> np.ndarray:
    k = indices.shape[-1]
    batch = int(np.prod(data.shape[:batch_dims]))
    flat_data = data.reshape(batch, *data.shape[batch_dims:])
    flat_idx = indices.reshape(batch, -1, k)
    out = []
    for b in range(batch):
        for t in flat_idx[b]:
            position = tuple(
                int(checked_positions(v, flat_data.shape[1 + j], "GatherND", batch_dims + j))
                for j, v in enumerate(t)
            )
            out.append(flat_data[b][position])
    return np.array(out, data.dtype).reshape(*indices.shape[:-1], *data.shape[batch_dims + k :])


def scatter_nd(
    data: np.ndarray, indices: np.ndarray, updates: np.ndarray, reduction: str
) -> np.ndarray:
    out = data.copy()
    combine = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}
    for position in np.ndindex(*indices.shape[:-1]):
        target = tuple(
            int(checked_positions(v, data.shape[j], "ScatterND", j))
            for j, v in enumerate(indices[position])
        )
        fn = combine.get(reduction)
        out[target] = updates[position] if fn is None else fn(out[target], updates[position])
    return out


def gather_elements(
    data: np.ndarray, indices: np.ndarray, axis: int, ignore: int | None = None
) -> np.ndarray:
    shape = list(indices.shape)
    shape[axis] = data.shape[axis]
    data = np.broadcast_to(data, shape)
    ignored = np.zeros(indices.shape, bool) if ignore is None else indices == ignore
    idx = checked_positions(np.where(ignored, 0, indices), data.shape[axis], "GatherElements", axis)
    return np.where(ignored, 0, np.take_along_axis(data, idx, axis)).astype(data.dtype)


def one_hot(indices: np.ndarray, values: np.ndarray, depth: int, axis: int) -> np.ndarray:
    wrapped = np.where(indices < 0, indices + depth, indices)
    positions = np.arange(depth).reshape([depth] + [1] * (indices.ndim - axis))
    hit = np.expand_dims(wrapped, axis) == positions
    return np.where(hit, values[1], values[0]).astype(values.dtype)


def scatter_elements(
    data: np.ndarray, indices: np.ndarray, updates: np.ndarray, axis: int, reduction: str
) -> np.ndarray:
    out = data.copy()
    combine = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}
    for position in np.ndindex(*indices.shape):
        target = list(position)
        target[axis] = int(
            checked_positions(indices[position], data.shape[axis], "ScatterElements", axis)
        )
        at = tuple(target)
        fn = combine.get(reduction)
        out[at] = updates[position] if fn is None else fn(out[at], updates[position])
    return out


def top_k_indices(x: np.ndarray, k: int, axis: int, largest: bool) -> np.ndarray:
    # A stable sort keeps the lower index first among equal values.
    order = np.argsort(-x if largest else x, axis=axis, kind="stable")
    return np.take(order, np.arange(k), axis=axis).astype(np.int64)


def quantize_linear(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, dtype: np.dtype
) -> np.ndarray:
    """graph.quantize_linear: saturate(rint(x / scale) + zero_point), NaN -> the minimum."""
    info = np.iinfo(dtype)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.rint(x.astype(np.float32) / scale.astype(np.float32))
        q = q + zero_point.astype(np.float32)
        q = np.minimum(np.where(q >= info.min, q, np.float32(info.min)), np.float32(info.max))
    return q.astype(dtype)


def dequantize_linear(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, dtype: np.dtype
) -> np.ndarray:
    """graph.dequantize_linear: (x - zero_point) * scale in float32."""
    if x.dtype == np.int32:
        difference = (x.astype(np.int64) - zero_point).astype(np.int32).astype(np.float32)
    else:
        difference = x.astype(np.float32) - zero_point.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        return (difference * scale.astype(np.float32)).astype(dtype)


def nonzero(x: np.ndarray) -> np.ndarray:
    """graph.nonzero: [count, then per dimension numel slots: coordinates, zeros]."""
    coordinates = np.array(np.nonzero(x), np.int64).reshape(x.ndim, -1)
    out = np.zeros((x.ndim, x.size), np.int64)
    out[:, : coordinates.shape[1]] = coordinates
    return np.concatenate([[coordinates.shape[1]], out.reshape(-1)]).astype(np.int64)


def non_max_suppression(
    boxes: np.ndarray,
    scores: np.ndarray,
    center_point_box: int,
    max_per_class: int,
    iou_threshold: float,
    score_threshold: float | None,
) -> np.ndarray:
    """graph.non_max_suppression: greedy per (batch, class), float32 IoU as onnxruntime."""
    batches, classes, n = scores.shape
    out = np.zeros((1 + batches * classes * max_per_class, 3), np.int64)
    b32 = boxes.astype(np.float32)
    if center_point_box:
        half = b32[..., 2:] / np.float32(2)
        lo, hi = b32[..., :2] - half, b32[..., :2] + half  # (x, y)
    else:
        lo = np.minimum(b32[..., [1, 0]], b32[..., [3, 2]])
        hi = np.maximum(b32[..., [1, 0]], b32[..., [3, 2]])
    area = (hi[..., 0] - lo[..., 0]) * (hi[..., 1] - lo[..., 1])
    count = 0
    with np.errstate(invalid="ignore", divide="ignore"):
        for b in range(batches):
            for c in range(classes):
                s = scores[b, c].astype(np.float32)
                alive = s > np.float32(score_threshold) if score_threshold is not None else s == s
                for _ in range(max_per_class):
                    if not alive.any():
                        break
                    best = int(np.flatnonzero(alive)[np.argmax(s[alive])])
                    count += 1
                    out[count] = (b, c, best)
                    alive[best] = False
                    edge = np.maximum(
                        np.minimum(hi[b], hi[b, best]) - np.maximum(lo[b], lo[b, best]),
                        np.float32(0),
                    )
                    inter = edge[:, 0] * edge[:, 1]
                    union = area[b] + area[b, best] - inter
                    suppress = (inter > 0) & (area[b] > 0) & (area[b, best] > 0) & (union > 0)
                    suppress &= inter / np.where(union > 0, union, 1) > np.float32(iou_threshold)
                    alive &= ~suppress
    out[0, 0] = count
    return out


def operand_slots(op: Operation) -> list[SSAValue | None]:
    """The op's operands in definition order, None for absent optional operands."""
    if not isinstance(op, IRDLOperation):
        return list(op.operands)
    slots: list[SSAValue | None] = []
    for name, _ in type(op).get_irdl_definition().operands:
        value = getattr(op, name)
        if value is None or isinstance(value, SSAValue):
            slots.append(value)
        else:  # a variadic operand
            slots.extend(value)
    return slots


def has_semantics(op_type: type[Operation]) -> bool:
    """Whether ops of this class declare numpy semantics (an `evaluate` method)."""
    return callable(getattr(op_type, "evaluate", None))


def evaluate(op: Operation, inputs: Inputs) -> np.ndarray:
    """The value of a single-result op on numpy inputs (in `operand_slots` order), from the
    semantics the op declares; NotImplementedError when it declares none."""
    if not has_semantics(type(op)):
        raise NotImplementedError(f"{op.name} has no numpy semantics (no `evaluate` method)")
    # IEEE results (log 0 = -inf, sqrt -1 = NaN, x / 0 = inf) are the op's answer, not a warning.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        result = np.asarray(cast(Evaluable, op).evaluate(inputs))
    return result.astype(result_dtype(op.results[0]), copy=False)


def evaluate_function(
    fn: func.FuncOp, weights: WeightStore, inputs: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Interpret a graph-dialect function with numpy (a reference, not an inference path)."""
    values: dict[SSAValue, np.ndarray] = dict(zip(fn.args, inputs, strict=True))
    for op in fn.body.ops:
        if isinstance(op, func.ReturnOp):
            return [values[v] for v in op.arguments]
        if isinstance(op, WeightRef):
            values[op.results[0]] = weights[op.ref.data]
            continue
        args = [None if v is None else values[v] for v in operand_slots(op)]
        values[op.results[0]] = evaluate(op, args)
    raise ValueError(f"function @{fn.sym_name.data} has no func.return")
