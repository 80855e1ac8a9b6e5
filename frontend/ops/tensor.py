"""ONNX -> graph dialect: tensors made or retyped: Constant, ConstantOfShape, Range, EyeLike,
Trilu, Shape, Size, Cast, CastLike, BitCast, Identity and Dropout (the identity at inference).

Shape, Size and constants are values known at import; ConstantOfShape is an expand of the fill
value and Range a `graph.range`, folded when small and kernels when large
(docs/architecture.md, "Compile cost does not grow with tensor values").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.helper import tensor_dtype_to_np_dtype as onnx_dtype
from xdsl.dialects.builtin import StringAttr, UnitAttr

from ember.core import limits
from ember.dialects import graph, numpy_eval, small_types
from ember.frontend.context import (
    AnyValue,
    Const,
    ImportContext,
    Node,
    Value,
    dtype_of,
    scalar,
    shape_of,
)
from ember.frontend.registry import converts


@converts("Constant")
def _constant(imp: ImportContext, node: Node) -> Sequence[Value]:
    a = node.attrs
    name = node.proto.output[0]
    if "value" in a:
        return [Const(numpy_helper.to_array(a["value"]), name)]
    if "value_float" in a:
        return [Const(np.array(a["value_float"], np.float32), name)]
    if "value_floats" in a:
        return [Const(np.array(a["value_floats"], np.float32), name)]
    if "value_int" in a:
        return [Const(np.array(a["value_int"], np.int64), name)]
    if "value_ints" in a:
        return [Const(np.array(a["value_ints"], np.int64), name)]
    if "sparse_value" in a:
        sparse = a["sparse_value"]
        values = numpy_helper.to_array(sparse.values)
        dense = np.zeros(tuple(sparse.dims), values.dtype)
        indices = numpy_helper.to_array(sparse.indices)
        if indices.ndim == 2:
            indices = np.ravel_multi_index(tuple(indices.T), dense.shape)
        dense.reshape(-1)[indices] = values
        return [Const(dense, name)]
    raise node.unsupported("only numeric tensor constants are supported")


@converts("ConstantOfShape")
def _constant_of_shape(imp: ImportContext, node: Node) -> Sequence[Value]:
    shape = imp.constant(node, 0, "shape")
    assert shape is not None
    fill = node.attrs.get("value")
    fill_value = (
        numpy_helper.to_array(fill).reshape(-1) if fill is not None else np.zeros(1, np.float32)
    )
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise node.error(f"shape {dims} has a negative dimension")
    # A broadcast of the fill value: folded when small, else a fill kernel at run time.
    value = Const(fill_value[:1].reshape([1] * len(dims)))
    filled = imp.emit(graph.ExpandOp, [value], dims) if dims != [1] * len(dims) else value
    if isinstance(filled, Const):
        filled.name = node.proto.output[0]
    return [filled]


@converts("Shape")
def _shape_op(imp: ImportContext, node: Node) -> Sequence[Value]:
    shape = shape_of(imp.required(node, 0))
    start, end = node.attrs.get("start", 0), node.attrs.get("end", len(shape))
    return [Const(np.array(shape[start:end], np.int64))]


@converts("Size")
def _size(imp: ImportContext, node: Node) -> Sequence[Value]:
    return [Const(np.array(math.prod(shape_of(imp.required(node, 0))), np.int64))]


@converts("Range")
def _range(imp: ImportContext, node: Node) -> Sequence[Value]:
    start, limit, delta = (imp.constant(node, i, "Range bound") for i in range(3))
    assert start is not None and limit is not None and delta is not None
    dtype = start.dtype
    if start.size != 1 or limit.size != 1 or delta.size != 1:
        raise node.error("start, limit and delta must be scalars")
    first, last, step = (v.reshape(()).item() for v in (start, limit, delta))
    if step == 0 or not all(math.isfinite(v) for v in (first, last, step)):
        raise node.error(f"Range({first}, {last}, {step}) has no finite length")
    # ONNX: max(ceil((limit - start) / delta), 0) elements; integers exactly, floats in double.
    if dtype.kind in "iu":
        count = max(-((first - last) // step), 0)
    else:
        count = max(math.ceil((float(last) - float(first)) / float(step)), 0)
    operands = [Const(v.reshape(1).astype(dtype)) for v in (start, delta)]
    # Folded when short; a kernel at run time when long.
    return [imp.emit(graph.RangeOp, operands, [count], dtype)]


@converts("Cast")
def _cast(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"])
        numpy_eval.element_type(dtype)
    except (KeyError, ValueError) as err:
        raise node.unsupported(f"cast to type {node.attrs.get('to')}") from err
    if dtype_of(x) == dtype:
        return [x]
    return [_emit_cast(imp, node, x, dtype)]


def _emit_cast(imp: ImportContext, node: Node, x: Value, dtype: np.dtype) -> Value:
    """Cast/CastLike: graph.cast with the node's `saturate` and `round_mode`."""
    round_mode = node.attrs.get("round_mode", b"up")
    round_mode = round_mode.decode() if isinstance(round_mode, bytes) else str(round_mode)
    if round_mode not in small_types.ROUND_MODES:
        raise node.error(
            f"round_mode '{round_mode}' is not one of {', '.join(small_types.ROUND_MODES)}"
        )
    return emit_cast(imp, x, dtype, bool(node.attrs.get("saturate", 1)), round_mode)


def emit_cast(
    imp: ImportContext, x: Value, dtype: np.dtype, saturate: bool = True, round_mode: str = "up"
) -> Value:
    """graph.cast of x to dtype; `saturate` matters for float8 results only, `round_mode`
    (up, nearest, down) for float8e8m0 ones (dialects/small_types.py)."""
    return imp.emit(
        graph.CastOp,
        [x],
        shape_of(x),
        dtype,
        no_saturate=None if saturate else UnitAttr(),
        round_mode=None if round_mode == "up" else StringAttr(round_mode),
    )


@converts("Identity")
def _identity(imp: ImportContext, node: Node) -> Sequence[AnyValue]:
    # Also of a sequence or an optional (import-time structures: passed on as they are).
    value = imp.any_input(node, 0)
    if value is None:
        raise node.error("missing required input #0")
    return [value]


@converts("CastLike")
def _cast_like(imp: ImportContext, node: Node) -> Sequence[Value]:
    x, like = imp.required(node, 0), imp.required(node, 1)
    if dtype_of(x) == dtype_of(like):
        return [x]
    return [_emit_cast(imp, node, x, dtype_of(like))]


@converts("BitCast")
def _bitcast(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"]))
        numpy_eval.element_type(dtype)
    except (KeyError, ValueError) as err:
        raise node.unsupported(f"bitcast to type {node.attrs.get('to')}") from err
    if dtype.itemsize != dtype_of(x).itemsize:
        raise node.unsupported(f"bitcast between widths ({dtype_of(x)} -> {dtype})")
    if dtype == dtype_of(x):
        return [x]
    return [imp.emit(graph.BitcastOp, [x], shape_of(x), dtype)]


@converts("Dropout")
def _dropout(imp: ImportContext, node: Node) -> Sequence[Value]:
    """Inference-mode Dropout: the data unchanged and an all-true mask. Training mode (opset
    12+'s training_mode input, is_test=0 before opset 7) drops random elements, which compiled
    inference does not do; it is accepted only with a ratio of 0, where nothing is dropped."""
    x = imp.required(node, 0)
    if node.opset < 7 and not node.attrs.get("is_test", 0):
        raise node.unsupported(
            "is_test 0 (the default before opset 7) asks for training-mode dropout, which is "
            "random: ember compiles inference, set is_test=1"
        )
    # Both through constant(): given at run time they are value-specialised (the model is
    # compiled per value, engine/specialize.py), so a run-time training_mode=false still runs.
    training = imp.constant(node, 2, "training_mode") if node.opset >= 12 else None
    if training is not None and bool(training.reshape(-1)[0]):
        ratio = imp.constant(node, 1, "ratio")
        drop = 0.5 if ratio is None else float(ratio.reshape(-1)[0])
        if drop != 0.0:
            raise node.unsupported(
                f"training_mode true with ratio {drop:g}: random dropout is not supported "
                "(ember compiles inference; only ratio 0, which drops nothing, is)"
            )
    # The mask has the data's type before opset 10 and is bool from then on.
    mask_dtype = dtype_of(x) if node.opset < 10 else np.dtype(np.bool_)
    return [x, Const(np.ones(shape_of(x), mask_dtype))]


@converts("EyeLike")
def _eye_like(imp: ImportContext, node: Node) -> Sequence[Value]:
    shape = shape_of(imp.required(node, 0))
    if len(shape) != 2:
        raise node.error(f"input of rank {len(shape)}; EyeLike needs a matrix")
    to = node.attrs.get("dtype")
    dtype = dtype_of(imp.required(node, 0)) if to is None else onnx_dtype(to)
    k = int(node.attrs.get("k", 0))
    if limits.tensor_bytes(shape, dtype) <= limits.FOLD_LIMIT_BYTES:
        return [Const(np.eye(shape[0], shape[1], k, dtype=dtype))]
    # Too big to store: computed at run time as (row + k == column).

    def iota(count: int, first: int) -> Value:
        bounds = [Const(np.array([v], np.int64)) for v in (first, 1)]
        return imp.emit(graph.RangeOp, bounds, [count], np.dtype(np.int64))

    rows = imp.reshape(iota(shape[0], k), [shape[0], 1])
    on_diagonal = imp.compare(node, "eq", rows, imp.reshape(iota(shape[1], 0), [1, shape[1]]))
    return [imp.emit(graph.CastOp, [on_diagonal], shape, dtype)]


@converts("Trilu")
def _trilu(imp: ImportContext, node: Node) -> Sequence[Value]:
    x = imp.required(node, 0)
    shape = shape_of(x)
    if len(shape) < 2:
        raise node.error(f"input of rank {len(shape)} has no matrix dims")
    k_in = imp.constant(node, 1, "k")
    k = 0 if k_in is None else int(k_in.reshape(-1)[0])
    ones = np.ones(shape[-2:], bool)
    keep = np.triu(ones, k) if node.attrs.get("upper", 1) else np.tril(ones, k)
    if keep.all():
        return [x]
    # A select, not a multiply by a 0/1 mask: exporters build causal masks as
    # Trilu(ConstantOfShape(-inf)), and -inf * 0 is NaN where Trilu gives 0.
    return [imp.where(node, Const(keep), x, scalar(0, x))]
