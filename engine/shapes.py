"""Input-shape pinning: what every entry point does with a model whose inputs have symbolic dims.

Exported models declare a batch axis or a sequence length as a symbolic dimension (`dim_param`
"N", or no value at all). ember compiles static shapes, so such a dim must be *pinned* to a
size before compiling: `ember.compile(model, input_shapes={"x": [1, 3, 224, 224]})`,
`Config.set_input_shape`, `--input-shape x=1x3x224x224`, or the shapes of the arrays a run is
given (shape specialisation, engine/specialize.py). This module is the one place that checks
pins against the model and says what is still unpinned:

- `ModelSignature.of(model)` reads each graph input's declared dims: an int (fixed), a str (a
  named dim, `dim_param`) or None (unknown).
- `pin(signature, input_shapes)` checks user pins (ModelError naming the input and both
  shapes) and propagates named dims: pinning `input_ids` to [1, 128] also pins an
  `attention_mask` declared [batch, seq]. What stays unpinned is listed.
- `static_input_shapes(model, input_shapes)` is what the compiler calls: complete pins, or
  `UnpinnedInputsError` naming every unpinned dim and how to pin it from Python and the CLI.
- `check_run_shapes(signature, shapes)` checks the shapes of a run's arrays (InputError).
"""

from __future__ import annotations

import operator
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import numpy as np

from ember.runtime.dims import Dim, DimRanges, check_in_range, check_input_shapes, format_dims
from ember.runtime.errors import ModelError

if TYPE_CHECKING:  # onnx is imported where it is used: the engine API loads artifacts without it
    import onnx

ModelSource = Union[str, os.PathLike[str], "onnx.ModelProto"]
InputShapes = Mapping[str, Sequence[int]]


def read_model(model: ModelSource) -> onnx.ModelProto:
    """The ModelProto of `model` (a path is read, unchecked: the importer checks it once).

    External tensor data stays on disk: the importer reads it from `external_data_folder`,
    with its checks on where the data may live."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(os.fspath(model), load_external_data=False)
    except Exception as err:  # protobuf raises several unrelated types on corrupt input
        raise ModelError(f"cannot read ONNX model '{os.fspath(model)}': {err}") from err


def external_data_folder(
    model: ModelSource, base_dir: str | os.PathLike[str] | None
) -> str | os.PathLike[str] | None:
    """Where a model's external tensor data is read from: `base_dir`, else the model file's
    folder; None for a ModelProto without `base_dir` (the importer refuses external data)."""
    import onnx

    if base_dir is not None or isinstance(model, onnx.ModelProto):
        return base_dir
    return os.path.dirname(os.path.abspath(os.fspath(model)))


def _declared_dims(info: onnx.ValueInfoProto) -> tuple[Dim, ...] | None:
    tensor = info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    # Like the importer, a negative dim_value (exporters write -1) counts as unknown; a 0 is
    # a fixed empty size, as in onnxruntime.
    return tuple(
        d.dim_value
        if d.HasField("dim_value") and d.dim_value >= 0
        else (d.dim_param if d.HasField("dim_param") and d.dim_param else None)
        for d in tensor.shape.dim
    )


@dataclass(frozen=True)
class InputSignature:
    """A graph input as declared: name, dims (None: no shape at all), element type."""

    name: str
    dims: tuple[Dim, ...] | None
    dtype: str | None  # numpy dtype name; None if not a tensor ember knows
    # Nothing reads the value, only its dtype (CastLike's target_type): the importer does not
    # make it a program argument, so its shape never needs pinning.
    dtype_only: bool = False

    @property
    def is_static(self) -> bool:
        return self.dims is not None and all(isinstance(d, int) for d in self.dims)


@dataclass(frozen=True)
class ModelSignature:
    inputs: tuple[InputSignature, ...]
    outputs: tuple[InputSignature, ...]

    @classmethod
    def of(cls, model: onnx.ModelProto) -> ModelSignature:
        g = model.graph
        initializers = {t.name for t in g.initializer}
        outputs = {o.name for o in g.output}
        uses: dict[str, set[tuple[str, int]]] = {}
        for node in g.node:
            for index, name in enumerate(node.input):
                uses.setdefault(name, set()).add((node.op_type, index))
        for name in _subgraph_reads(g):  # read inside a Loop/If body: a value
            uses.setdefault(name, set()).add(("subgraph", -1))

        def signature(info: onnx.ValueInfoProto, is_input: bool) -> InputSignature:
            dims = _declared_dims(info)
            # The importer's rule (onnx_importer._dtype_only_inputs).
            dtype_only = (
                is_input
                and dims is not None
                and not all(isinstance(d, int) for d in dims)
                and info.name not in outputs
                and uses.get(info.name, set()) <= {("CastLike", 1)}
            )
            return InputSignature(info.name, dims, _dtype_name(info), dtype_only)

        inputs = tuple(signature(i, True) for i in g.input if i.name not in initializers)
        return cls(inputs, tuple(signature(o, False) for o in g.output))

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def input(self, name: str) -> InputSignature:
        for info in self.inputs:
            if info.name == name:
                return info
        raise ModelError(f"the model has no input named '{name}'; its inputs: {self.input_names}")

    @property
    def is_static(self) -> bool:
        return all(i.is_static or i.dtype_only for i in self.inputs)


def _subgraph_reads(g: onnx.GraphProto) -> set[str]:
    """The names the subgraphs of `g`'s nodes (and theirs) read: the importer's
    `nested_reads`, without importing the compiler (a signature is read to load artifacts)."""
    names: set[str] = set()
    for node in g.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= {name for n in sub.node for name in n.input if name}
                names |= {o.name for o in sub.output} | _subgraph_reads(sub)
    return names


def _dtype_name(info: onnx.ValueInfoProto) -> str | None:
    import onnx

    if not info.type.HasField("tensor_type"):
        return None
    from ember.runtime.executable import numpy_dtype

    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
    except Exception:  # an element type numpy has no dtype for: the importer names it
        return None
    return numpy_dtype(dtype).name


@dataclass(frozen=True)
class UnpinnedDim:
    input: str
    axis: int | None  # None: the input has no shape at all
    label: str  # the dim_param, or "?"


@dataclass
class Pinning:
    """Pins checked against a model: complete shapes, and the dims still symbolic."""

    signature: ModelSignature
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # fully known inputs
    named: dict[str, int] = field(default_factory=dict)  # dim_param -> size
    unpinned: list[UnpinnedDim] = field(default_factory=list)
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # dim_param -> (lo, hi)

    @property
    def complete(self) -> bool:
        return not self.unpinned


def sizes_of(name: str, shape: object) -> tuple[int, ...]:
    """`shape` as a tuple of ints (numpy ints too); anything else is a ModelError."""
    try:
        return tuple(operator.index(d) for d in shape)  # type: ignore[attr-defined]
    except TypeError:
        raise ModelError(
            f"the shape given for input '{name}', {shape!r}, is not a list of integer sizes"
        ) from None


def check_pin(info: InputSignature, sizes: tuple[int, ...], shown: str) -> None:
    """ModelError unless `sizes` fits the declared dims of `info`; `shown` says what pinned."""
    declared = f"input '{info.name}' declared {format_dims(info.dims)}"
    if info.dims is not None and len(sizes) != len(info.dims):
        raise ModelError(f"{shown} has rank {len(sizes)}, but {declared} has rank {len(info.dims)}")
    for axis, size in enumerate(sizes):
        dim = info.dims[axis] if info.dims is not None else None
        if size < 0:
            raise ModelError(f"{shown}: sizes must not be negative ({declared})")
        if isinstance(dim, int) and size != dim:
            raise ModelError(f"{shown} contradicts {declared}: axis {axis} is fixed at {dim}")


def named_dims(signature: ModelSignature) -> list[str]:
    """The model's named (dim_param) input dims, in order of first appearance."""
    names: dict[str, None] = {}
    for info in signature.inputs:
        names.update((d, None) for d in info.dims or () if isinstance(d, str))
    return list(names)


def _check_dim_name(signature: ModelSignature, dim: str, what: str) -> None:
    if dim not in named_dims(signature):
        raise ModelError(
            f"{what} names dim '{dim}', which no input of the model declares; its named dims: "
            f"{named_dims(signature) or 'none'}"
        )


def check_dim_ranges(
    signature: ModelSignature, ranges: DimRanges | None
) -> dict[str, tuple[int, int]]:
    """`ranges` ({dim_param: (lo, hi)}) checked against the model: ModelError naming the dim."""
    checked = {}
    for dim, bounds in (ranges or {}).items():
        _check_dim_name(signature, dim, "dynamic_dims")
        try:
            low, high = (operator.index(b) for b in bounds)
        except (TypeError, ValueError):
            raise ModelError(
                f"dynamic_dims['{dim}'] = {bounds!r}: expected (smallest, largest) integer sizes"
            ) from None
        if not 0 <= low <= high:
            raise ModelError(
                f"dynamic_dims['{dim}'] = ({low}, {high}): sizes must satisfy "
                "0 <= smallest <= largest"
            )
        checked[dim] = (low, high)
    return checked


def pin(
    signature: ModelSignature,
    input_shapes: InputShapes | None,
    dim_ranges: DimRanges | None = None,
    dim_sizes: Mapping[str, int] | None = None,
) -> Pinning:
    """Check `input_shapes` against the declared inputs and propagate named dims.

    `dim_ranges` bounds named dims (checked here against pins, at run time against arrays);
    `dim_sizes` pins named dims directly ({"batch": 4}: each variant of `ember compile --shapes`).
    """
    pinning = Pinning(signature, ranges=check_dim_ranges(signature, dim_ranges))
    for dim, size in (dim_sizes or {}).items():
        _check_dim_name(signature, dim, "the dim sizes")
        if size < 0:
            raise ModelError(f"dim '{dim}' = {size}: sizes must not be negative")
        check_in_range(pinning.ranges, dim, size, f"pinning dim '{dim}' to {size}", ModelError)
        pinning.named[dim] = size
    given = dict(input_shapes or {})
    known = {i.name for i in signature.inputs}
    for name in given:
        if name not in known:
            raise ModelError(
                f"input_shapes names '{name}', which is not an input of the model; "
                f"its inputs: {signature.input_names}"
            )
    # Where each named dim was first bound, to name both inputs when another pin disagrees.
    bound_at: dict[str, tuple[str, int]] = {}
    for info in signature.inputs:
        if info.name not in given:
            continue
        sizes = sizes_of(info.name, given[info.name])
        shown = f"input_shapes['{info.name}'] = {list(sizes)}"
        check_pin(info, sizes, shown)
        for axis, (size, dim) in enumerate(zip(sizes, info.dims or [None] * len(sizes))):
            if isinstance(dim, str):
                check_in_range(pinning.ranges, dim, size, f"{shown} (axis {axis})", ModelError)
                if dim in pinning.named and pinning.named[dim] != size and dim not in bound_at:
                    raise ModelError(
                        f"{shown} gives dim '{dim}' size {size} at axis {axis}, but it is "
                        f"pinned to {pinning.named[dim]}"
                    )
                if dim in pinning.named and pinning.named[dim] != size:
                    other, other_axis = bound_at[dim]
                    raise ModelError(
                        f"{shown} pins dim '{dim}' to {size} at axis {axis}, but "
                        f"input_shapes['{other}'] pins it to {pinning.named[dim]} at axis "
                        f"{other_axis}: inputs sharing a named dim must agree"
                    )
                pinning.named[dim] = size
                bound_at.setdefault(dim, (info.name, axis))
        pinning.shapes[info.name] = sizes
    for info in signature.inputs:
        if info.name in pinning.shapes:
            continue
        if info.dims is None:
            if not info.dtype_only:
                pinning.unpinned.append(UnpinnedDim(info.name, None, "?"))
            continue
        resolved = [d if isinstance(d, int) else pinning.named.get(d) for d in info.dims]  # type: ignore[arg-type]
        missing = [
            UnpinnedDim(info.name, axis, d or "?")
            for axis, (d, size) in enumerate(zip(info.dims, resolved))
            if size is None
        ]
        if not missing:
            pinning.shapes[info.name] = tuple(resolved)  # type: ignore[arg-type]
        elif not info.dtype_only:
            pinning.unpinned.extend(missing)
    return pinning


def pin_model(
    model: onnx.ModelProto,
    input_shapes: InputShapes | None,
    dim_ranges: DimRanges | None = None,
    dim_sizes: Mapping[str, int] | None = None,
) -> Pinning:
    return pin(ModelSignature.of(model), input_shapes, dim_ranges, dim_sizes)


class UnpinnedInputsError(ModelError):
    """The model has symbolic input dims that nothing pinned; the message says how to pin them."""

    def __init__(self, pinning: Pinning):
        self.pinning = pinning
        super().__init__(unpinned_message(pinning))


def example_shape(pinning: Pinning, info: InputSignature) -> list[int]:
    """A shape to show in a pin's example: fixed dims, named dims pinned so far, else 1."""
    if info.dims is None:
        return [1]
    return [
        d if isinstance(d, int) else pinning.named.get(d or "", 1)  # type: ignore[misc]
        for d in info.dims
    ]


def unpinned_message(pinning: Pinning) -> str:
    """Names every unpinned dim and shows how to pin it from Python and from the CLI."""
    by_input: dict[str, list[UnpinnedDim]] = {}
    for dim in pinning.unpinned:
        by_input.setdefault(dim.input, []).append(dim)
    described = []
    examples = {}
    covered: set[str] = set()  # named dims an example pin already sets
    for name, dims in by_input.items():
        info = pinning.signature.input(name)
        where = (
            "no declared shape"
            if info.dims is None
            else ", ".join(f"'{d.label}' at axis {d.axis}" for d in dims)
        )
        described.append(f"'{name}' {format_dims(info.dims)} ({where})")
        # An input whose dims are all named ones pinned through another input needs no pin.
        if info.dims is None or any(d.label == "?" or d.label not in covered for d in dims):
            examples[name] = example_shape(pinning, info)
            covered |= {d.label for d in dims}
    python = ", ".join(f"'{n}': {shape}" for n, shape in examples.items())
    cli = " ".join(f"--input-shape {n}={'x'.join(map(str, s))}" for n, s in examples.items())
    first, shape = next(iter(examples.items()))
    return (
        f"the model has symbolic input dimensions: {'; '.join(described)}. Compiling needs a "
        f"size for each: pin them from Python with ember.compile(model, input_shapes={{{python}}}) "
        f"or Config.set_input_shape('{first}', {shape}), or on the command line with {cli} "
        "(sizes are examples; inputs sharing a named dim need it pinned once). "
        "ember.compile(model) without input_shapes compiles one specialisation per distinct "
        "set of input shapes instead."
    )


def static_input_shapes(
    model: onnx.ModelProto,
    input_shapes: InputShapes | None,
    dim_sizes: Mapping[str, int] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Every symbolic input's static shape, from `input_shapes`, `dim_sizes` and the model's
    named dims.

    Raises ModelError for a pin that does not fit the model, UnpinnedInputsError when a
    symbolic dim stays unpinned.
    """
    pinning = pin_model(model, input_shapes, dim_sizes=dim_sizes)
    if not pinning.complete:
        raise UnpinnedInputsError(pinning)
    return {
        info.name: pinning.shapes[info.name]
        for info in pinning.signature.inputs
        if not info.is_static and info.name in pinning.shapes
    }


def pin_inputs(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> None:
    """Write `shapes` into the declared dims of `model`'s graph inputs (in place), for tools
    that hand the model to another engine (onnxruntime) as ember compiled it."""
    for info in model.graph.input:
        if info.name in shapes:
            dims = info.type.tensor_type.shape.dim
            del dims[:]
            for size in shapes[info.name]:
                dims.add().dim_value = int(size)


def freeze_inputs(model: onnx.ModelProto, values: Mapping[str, object]) -> onnx.ModelProto:
    """A copy of `model` whose graph inputs named in `values` are initializers holding those
    arrays: the importer sees them as constants (value specialisation, engine/specialize.py;
    the conformance runner's frozen shape operands)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [i for i in model.graph.input if i.name not in values]
    del out.graph.input[:]
    out.graph.input.extend(kept)
    frozen = {t.name for t in out.graph.initializer} & set(values)
    if frozen:  # an input with a default value (an initializer of the same name): replaced
        kept_initializers = [t for t in out.graph.initializer if t.name not in frozen]
        del out.graph.initializer[:]
        out.graph.initializer.extend(kept_initializers)
    out.graph.initializer.extend(
        onnx.numpy_helper.from_array(np.asarray(array), name) for name, array in values.items()
    )
    return out


def check_run_shapes(
    signature: ModelSignature,
    shapes: Mapping[str, tuple[int, ...]],
    pinning: Pinning | None = None,
) -> None:
    """InputError unless the arrays' `shapes` fit the declared dims, the pins, the dims'
    ranges and each other (runtime/dims.py)."""
    check_input_shapes(
        [(i.name, i.dims) for i in signature.inputs if not i.dtype_only],
        shapes,
        pinned=pinning.shapes if pinning is not None else None,
        named=pinning.named if pinning is not None else None,
        ranges=pinning.ranges if pinning is not None else None,
    )
