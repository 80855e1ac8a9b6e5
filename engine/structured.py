"""Graph inputs that are sequences or optionals: compiled per structure of what a run gives.

A compiled program takes tensors only (runtime/executable.py), and ember's sequences and
optionals are import-time structures (frontend/ops/sequence.py). So a sequence's length and
its tensors' shapes, and whether an optional holds a value, are to a graph input what a
symbolic dim is: known when a run gives the input. `ember.compile` returns a
`StructuredModel` for a model with such inputs, which takes them from Python

- a sequence as a list (or tuple) of arrays, each of the declared element type;
- an optional as None (empty) or its value (an array, or a list for an optional sequence);

and compiles one variant per distinct structure (a sequence's length and element shapes, an
optional's presence; tensor inputs as usual), at most `MAX_SPECIALIZATIONS` kept. Each variant
is the model rewritten so that its inputs are tensors: a sequence input `x` of n tensors
becomes the inputs `x[0]` .. `x[n-1]` and a `SequenceConstruct` of them (`SequenceEmpty` for
none), an empty optional an `Optional` node of no value, a present optional the value itself.
Outputs that are sequences come back as lists of arrays, empty optionals as None
(CompiledModel.run).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from ember.engine.specialize import MAX_SPECIALIZATIONS, SpecializationCache, VariantModel
from ember.runtime.errors import InputError, ModelError
from ember.runtime.executable import check_feed_names

# A sequence longer than this is refused (the importer's MAX_SEQUENCE_LENGTH).
MAX_SEQUENCE_INPUT = 1024

# Per structured input: ("sequence", dtype, shapes), ("tensor", dtype, shape) or ("none",).
Structure = tuple[Any, ...]
StructureKey = tuple[tuple[str, Structure], ...]


def structured_inputs(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """The graph inputs (initializers aside) that are sequences or optionals, by name."""
    initializers = {t.name for t in model.graph.initializer}
    return {
        i.name: i.type
        for i in model.graph.input
        if i.name not in initializers
        and i.type.WhichOneof("value") in ("sequence_type", "optional_type")
    }


def element_name(name: str, index: int) -> str:
    """The program input holding element `index` of sequence input `name`."""
    return f"{name}[{index}]"


def _numpy_dtype(name: str, tensor: onnx.TypeProto.Tensor) -> np.dtype:
    from ember.frontend.dtypes import numpy_dtype_for_onnx

    try:
        return numpy_dtype_for_onnx(tensor.elem_type)
    except TypeError as err:
        raise ModelError(f"graph input '{name}': {err}") from None


def _check_declared(name: str, type_proto: onnx.TypeProto) -> None:
    """ModelError unless `type_proto` is a sequence of tensors, an optional of a tensor or an
    optional of a sequence of tensors."""
    inner = type_proto
    if inner.HasField("optional_type"):
        inner = inner.optional_type.elem_type
    if inner.HasField("sequence_type"):
        inner = inner.sequence_type.elem_type
    if not inner.HasField("tensor_type"):
        from ember.engine.session import onnx_type_string

        raise ModelError(
            f"graph input '{name}' is a {onnx_type_string(type_proto)}: ember takes sequences "
            "and optionals of tensors only"
        )
    _numpy_dtype(name, inner.tensor_type)


def _tensor_structure(
    name: str, what: str, value: Any, tensor: onnx.TypeProto.Tensor
) -> tuple[Structure, np.ndarray]:
    """The key and array of one tensor given for `what` (an element, an optional's value)."""
    if value is None or isinstance(value, list | tuple):
        kind = "None" if value is None else "a list"
        raise InputError(f"input '{name}': {what} must be an array, given {kind}")
    array = np.asarray(value)
    dtype = _numpy_dtype(name, tensor)
    if array.dtype != dtype:
        raise InputError(f"input '{name}': {what} must have dtype {dtype}, given {array.dtype}")
    if tensor.HasField("shape"):
        dims = tensor.shape.dim
        fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(fixed) != array.ndim or any(
            f is not None and f >= 0 and f != s for f, s in zip(fixed, array.shape)
        ):
            declared = ["?" if f is None or f < 0 else f for f in fixed]
            raise InputError(
                f"input '{name}': {what} has shape {list(array.shape)}, declared {declared}"
            )
    return ("tensor", dtype.name, tuple(array.shape)), array


def flatten_input(
    name: str, type_proto: onnx.TypeProto, value: Any
) -> tuple[Structure, dict[str, np.ndarray]]:
    """The structure of what a run gives structured input `name`, and the program inputs
    it becomes ({`x[0]`: array, ...} for a sequence, {`x`: array} for a present optional)."""
    if type_proto.HasField("optional_type"):
        if value is None:
            return ("none",), {}
        type_proto = type_proto.optional_type.elem_type
        if not type_proto.HasField("sequence_type"):
            key, array = _tensor_structure(
                name, "the optional's value", value, type_proto.tensor_type
            )
            return key, {name: array}
    tensor = type_proto.sequence_type.elem_type.tensor_type
    if not isinstance(value, list | tuple):
        raise InputError(
            f"input '{name}' is a sequence: give a list of arrays, given {type(value).__name__}"
        )
    if len(value) > MAX_SEQUENCE_INPUT:
        raise InputError(
            f"input '{name}' is a sequence of {len(value)} arrays; ember compiles sequences of "
            f"at most {MAX_SEQUENCE_INPUT}"
        )
    flat, shapes = {}, []
    for index, element in enumerate(value):
        key, array = _tensor_structure(name, f"element {index}", element, tensor)
        flat[element_name(name, index)] = array
        shapes.append(key[2])
    return ("sequence", _numpy_dtype(name, tensor).name, tuple(shapes)), flat


def rewrite_inputs(model: onnx.ModelProto, key: StructureKey) -> onnx.ModelProto:
    """A copy of `model` whose structured inputs are tensor inputs of the structure `key`
    (see the module docstring)."""
    structures = dict(key)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    taken = {i.name for i in g.input} | {o for n in g.node for o in n.output}
    inputs: list[onnx.ValueInfoProto] = []
    front: list[onnx.NodeProto] = []
    for info in model.graph.input:
        if info.name not in structures:
            inputs.append(info)
            continue
        structure = structures[info.name]
        type_proto = info.type
        if type_proto.HasField("optional_type"):
            type_proto = type_proto.optional_type.elem_type
        if structure[0] == "none":
            front.append(onnx.helper.make_node("Optional", [], [info.name], type=type_proto))
            continue
        elem_type = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(structure[1]))
        if structure[0] == "tensor":
            inputs.append(onnx.helper.make_tensor_value_info(info.name, elem_type, structure[2]))
            continue
        names = [element_name(info.name, i) for i in range(len(structure[2]))]
        clash = [n for n in names if n in taken]
        if clash:
            raise ModelError(
                f"graph input '{info.name}' is a sequence, whose elements ember names "
                f"{names[0]}, ...; the model already has a value '{clash[0]}'"
            )
        for element, shape in zip(names, structure[2], strict=True):
            inputs.append(onnx.helper.make_tensor_value_info(element, elem_type, shape))
        if names:
            front.append(onnx.helper.make_node("SequenceConstruct", names, [info.name]))
        else:
            front.append(onnx.helper.make_node("SequenceEmpty", [], [info.name], dtype=elem_type))
    del g.input[:]
    g.input.extend(inputs)
    nodes = [*front, *g.node]
    del g.node[:]
    g.node.extend(nodes)
    return out


def _describe(key: StructureKey) -> str:
    shown = []
    for name, structure in key:
        if structure[0] == "none":
            shown.append(f"'{name}': None")
        elif structure[0] == "tensor":
            shown.append(f"'{name}': {structure[1]} {list(structure[2])}")
        else:
            shown.append(f"'{name}': [{', '.join(str(list(s)) for s in structure[2])}]")
    return "sequence/optional inputs {" + ", ".join(shown) + "}"


class StructuredModel(VariantModel):
    """A model with sequence or optional graph inputs, compiled per structure of what runs give
    them (module docstring). The API of every VariantModel (engine/specialize.py), and
    `structured_inputs`."""

    def __init__(
        self,
        model: onnx.ModelProto,
        compile_variant: Callable[[onnx.ModelProto], Any],
        *,
        threads: int,
        base_dir: str | os.PathLike[str] | None = None,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
        max_specializations: int = MAX_SPECIALIZATIONS,
    ) -> None:
        from ember.frontend.onnx_importer import load_model

        load_model(model, base_dir)
        self._model = model
        self._structured = structured_inputs(model)
        for name, type_proto in self._structured.items():
            _check_declared(name, type_proto)
        pinned = sorted(set(input_shapes or {}) & set(self._structured))
        if pinned:
            raise ModelError(
                f"input_shapes pins '{pinned[0]}', a sequence or optional input: its structure "
                "comes from what each run gives it (one compile per structure)"
            )
        self._compile_variant = compile_variant
        initializers = {t.name for t in model.graph.initializer}
        super().__init__(
            [i.name for i in model.graph.input if i.name not in initializers],
            [o.name for o in model.graph.output],
            threads,
            SpecializationCache(
                self._compile, max_specializations, argument=lambda key: key, describe=_describe
            ),
        )

    @property
    def structured_inputs(self) -> list[str]:
        """The inputs that are sequences or optionals."""
        return list(self._structured)

    def _compile(self, key: StructureKey) -> Any:
        return self.compiled_variant(self._compile_variant(rewrite_inputs(self._model, key)))

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        check_feed_names(feeds, self._input_names)
        key: list[tuple[str, Structure]] = []
        flat: dict[str, Any] = {}
        for name in self._input_names:
            if name in self._structured:
                structure, arrays = flatten_input(name, self._structured[name], feeds[name])
                key.append((name, structure))
                flat.update(arrays)
            else:
                flat[name] = feeds[name]
        variant = self._variants.get(tuple(key))
        self._last = variant
        # A variant takes fewer inputs when one only gives its dtype or was compiled in.
        return variant.run({name: flat[name] for name in variant.input_names})
