"""`ember check model.onnx`: every problem a user must fix, found before compiling.

    ember check model.onnx [--input-shape x=1x3x224x224] [--json]
    report = ember.check("model.onnx"); print(report); report.ok

Compiling stops at the first refusal; this lists them all, in one pass over the model:

- `invalid-model`: what `frontend/validate.py` (`validate_graph`) and ONNX's checker refuse;
- `symbolic-dim`: each input dim with no size (name, axis, dim_param), and the `--input-shape`
  that pins it (`ember.compile` and `ember.InferenceSession` also specialise per shape at run
  time, but `ember compile` needs them pinned), and each sequence or optional input (whose
  structure `ember.compile` specialises on at run time; no artifact can take it);
- `unsupported-op`: each node whose op has no converter in the importer and no ONNX function
  body made of supported ops (op, node, opset, domain);
- `unsupported-type`: each tensor (input, output, initializer, attribute, inferred value) of an
  element type ember has no kernels for (of a sequence or optional, its tensors'; a sequence
  of sequences or a map is no supported type);
- `invalid-node`: the per-node checks of `validate_node` (type constraints, ranks, attributes),
  on the types and static shapes ONNX's inference gives without compiling.

When none of those is found and every input dim has a size, the model is also imported (the
frontend alone, no passes or code generation) to catch what only the converters can see (an op
variant, a run-time-only condition); `imported` says whether that ran.
Exit status of `ember check`: 0 no problems, 1 problems, 2 the model cannot be read.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import onnx

from ember.core.target import host_cpu_description
from ember.engine.session import onnx_type_string, ort_dims
from ember.engine.shapes import (
    InputShapes,
    ModelSource,
    UnpinnedInputsError,
    example_shape,
    external_data_folder,
    pin_model,
    read_model,
    static_input_shapes,
)
from ember.runtime.errors import EmberError, ModelError, ResourceLimitError, UnsupportedOpError

# The kinds of problem, in the order a report lists them.
KINDS = (
    "invalid-model",
    "symbolic-dim",
    "unsupported-op",
    "unsupported-type",
    "invalid-node",
    "resource-limit",
)


@dataclass(frozen=True)
class Problem:
    """One thing to fix: its `kind` (one of KINDS), what is wrong, how to fix it if known, and
    the fields that identify it (op, node, opset, domain / input, axis, dim_param / tensor)."""

    kind: str
    message: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.details, "message": self.message, "fix": self.fix}


@dataclass
class CheckReport:
    """What `check` found: `problems` (empty: the model compiles as is), `ok`, `imported`."""

    model: str
    problems: list[Problem] = field(default_factory=list)
    imported: bool = False
    # The machine checked on ("x86_64_v4 (avx512 + vnni), LLVM cpu znver5"): what `host`
    # builds will target.
    host: str = field(default_factory=host_cpu_description)
    # The symbolic batch dim one program serves at every size (engine/batch_polymorphic.py):
    # not a problem; None when there is none.
    batch_polymorphic: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "ok": self.ok,
            "imported": self.imported,
            "host": self.host,
            "batch_polymorphic": self.batch_polymorphic,
            "problems": [p.to_dict() for p in self.problems],
        }

    def __str__(self) -> str:
        polymorphic = (
            f"\nbatch dim '{self.batch_polymorphic}': polymorphic (one program serves every "
            "batch size)"
            if self.batch_polymorphic
            else ""
        )
        if self.ok:
            return (
                f"{self.model}: no problems found; the model imports as is{polymorphic}\n"
                f"host: {self.host}"
            )
        lines = [f"{self.model}: {len(self.problems)} problem(s) to fix before compiling"]
        for problem in self.problems:
            lines.append(f"  [{problem.kind}] {problem.message}")
            if problem.fix:
                lines.append(f"      fix: {problem.fix}")
        if not self.imported:
            lines.append(
                "  (the import check runs once these are fixed: it may find more, e.g. op "
                "variants ember refuses)"
            )
        lines.append(f"host: {self.host}")
        return "\n".join(lines)


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    opsets = {o.domain: o.version for o in model.opset_import}
    opsets.setdefault("", opsets.get("ai.onnx", 1))
    return opsets


def _problem_of(err: EmberError) -> Problem:
    """An error of the importer as a report entry, its fields kept."""
    if isinstance(err, UnsupportedOpError):
        details = {"op": err.op_type, "node": err.node_name, "opset": err.opset}
        return Problem("unsupported-op", str(err), details=details)
    if isinstance(err, ResourceLimitError):
        return Problem("resource-limit", str(err))
    return Problem("invalid-model", str(err))


class _Checker:
    def __init__(self, model: onnx.ModelProto, input_shapes: InputShapes | None) -> None:
        from ember.frontend.onnx_importer import inferred_types

        self.model = model
        self.input_shapes = input_shapes
        self.opsets = _opsets(model)
        self.types = inferred_types(model)
        self.problems: list[Problem] = []

    def structure(self) -> None:
        from ember.frontend.onnx_importer import check_model
        from ember.frontend.validate import validate_graph

        try:
            validate_graph(self.model)
            check_model(self.model)
        except EmberError as err:
            self.problems.append(_problem_of(err))
        except Exception as err:  # onnx.checker's ValidationError and kin
            self.problems.append(Problem("invalid-model", f"invalid ONNX model: {err}"))

    def symbolic_dims(self) -> bool:
        """Adds each unpinned input dim; whether every dim has a size."""
        try:
            pinning = pin_model(self.model, self.input_shapes)
        except ModelError as err:  # a pin that does not fit the model
            self.problems.append(Problem("invalid-model", str(err)))
            return False
        tensors = {i.name for i in self.model.graph.input if i.type.HasField("tensor_type")}
        structured = {
            i.name
            for i in self.model.graph.input
            if i.type.WhichOneof("value") in ("sequence_type", "optional_type")
        }
        for dim in pinning.unpinned:
            if dim.input in structured:
                kind = "sequence" if dim.input in self._sequences() else "optional"
                self.problems.append(
                    Problem(
                        "symbolic-dim",
                        f"input '{dim.input}' is a {kind}: its structure (length, shapes, "
                        "presence) is known only when a run gives it, so `ember compile` cannot "
                        "build an artifact for it",
                        fix="ember.compile(model) or ember.InferenceSession compile one variant "
                        "per structure a run gives",
                        details={"input": dim.input, "axis": None, "dim_param": None},
                    )
                )
                continue
            if dim.input not in tensors:
                continue  # a map...: reported as an unsupported type
            info = pinning.signature.input(dim.input)
            example = "x".join(map(str, example_shape(pinning, info)))
            where = "has no declared shape" if dim.axis is None else f"axis {dim.axis}"
            label = "" if dim.label == "?" else f" '{dim.label}'"
            self.problems.append(
                Problem(
                    "symbolic-dim",
                    f"input '{dim.input}' {where}: symbolic dim{label} (no size)",
                    fix=f"--input-shape {dim.input}={example} (example sizes), or "
                    f"ember.compile(model, input_shapes={{'{dim.input}': {example_shape(pinning, info)}}})",
                    details={
                        "input": dim.input,
                        "axis": dim.axis,
                        "dim_param": None if dim.label == "?" else dim.label,
                    },
                )
            )
        return pinning.complete

    def _sequences(self) -> set[str]:
        return {i.name for i in self.model.graph.input if i.type.HasField("sequence_type")}

    def element_types(self) -> None:
        from ember.frontend.dtypes import numpy_dtype_for_onnx

        g = self.model.graph
        seen: set[str] = set()

        def check(name: str, what: str, type_proto: onnx.TypeProto | None, elem: int) -> None:
            if name in seen:
                return
            if type_proto is not None:
                # Sequences and optionals of tensors are import-time structures of tensors
                # (frontend/ops/sequence.py): their element type is what needs kernels.
                outer = type_proto
                if type_proto.WhichOneof("value") == "optional_type":
                    type_proto = type_proto.optional_type.elem_type
                if type_proto.WhichOneof("value") == "sequence_type":
                    type_proto = type_proto.sequence_type.elem_type
                if type_proto is not outer:
                    elem = type_proto.tensor_type.elem_type
            if type_proto is not None and type_proto.WhichOneof("value") != "tensor_type":
                shown = onnx_type_string(outer)
                reason = f"is a {shown}, not a tensor"
            else:
                try:
                    numpy_dtype_for_onnx(elem)
                    return
                except (TypeError, ValueError):  # ValueError: a number ONNX does not define
                    shown = _elem_name(elem)
                    reason = f"has element type {shown}"
            seen.add(name)
            self.problems.append(
                Problem(
                    "unsupported-type",
                    f"{what} '{name}' {reason}, which ember does not support",
                    details={"tensor": name, "where": what, "type": shown},
                )
            )

        initializers = {t.name for t in g.initializer}
        for info in g.input:
            if info.name not in initializers:
                check(info.name, "graph input", info.type, info.type.tensor_type.elem_type)
        for tensor in g.initializer:
            check(tensor.name, "initializer", None, tensor.data_type)
        for info in g.output:
            check(info.name, "graph output", info.type, info.type.tensor_type.elem_type)
        for node in g.node:
            for attr in node.attribute:
                # Attributes that make a tensor of their type: a constant's value, a cast's target.
                value = node.output[0] if node.output else node.name
                if attr.type == onnx.AttributeProto.TENSOR:
                    check(value, f"{node.op_type} output", None, attr.t.data_type)
                elif attr.type == onnx.AttributeProto.INT and attr.name in ("to", "dtype"):
                    check(value, f"{node.op_type} output", None, attr.i)
            for name in node.output:
                type_proto = self.types.get(name)
                if name and type_proto is not None:
                    check(
                        name, f"{node.op_type} output", type_proto, type_proto.tensor_type.elem_type
                    )

    def ops(self) -> None:
        for index, node in enumerate(self.model.graph.node):
            opset = self.opsets.get(node.domain or "", 1)
            detail = self._unsupported(node, opset)
            if detail is None:
                continue
            name = node.name or (node.output[0] if node.output else f"#{index}")
            domain = node.domain or "ai.onnx"
            self.problems.append(
                Problem(
                    "unsupported-op",
                    f"{node.op_type} node '{name}' (domain {domain}, opset {opset}): {detail}",
                    details={"op": node.op_type, "node": name, "opset": opset, "domain": domain},
                )
            )

    def _unsupported(self, node: onnx.NodeProto, opset: int) -> str | None:
        """Why ember cannot import `node` (None: it can, as far as the tables tell)."""
        from ember.frontend.onnx_importer import function_body, has_converter, has_function_body

        if has_converter(node.op_type, node.domain):
            return None
        if not has_function_body(node.op_type, opset, node.domain):
            return "ember has no converter for this op"
        input_types = [
            self.types.get(n, onnx.TypeProto()) if n else onnx.TypeProto() for n in node.input
        ]
        try:
            body = function_body(node, opset, input_types)
        except Exception as err:  # onnx's expansion needs input types it could not infer
            return f"ember imports it through its ONNX function body, which cannot be expanded here ({err})"
        if body is None:
            return "ember has no converter for this op"
        nodes, body_opset = body
        missing = sorted({n.op_type for n in nodes if self._unsupported(n, body_opset) is not None})
        if missing:
            return (
                f"ember imports it through its ONNX function body, which uses unsupported "
                f"op(s) {', '.join(missing)}"
            )
        return None

    def nodes(self) -> None:
        from ember.frontend.validate import NodeInfo, validate_node
        from ember.runtime.executable import numpy_dtype

        def dtype_of(name: str) -> Any:
            type_proto = self.types.get(name)
            if type_proto is None or type_proto.WhichOneof("value") != "tensor_type":
                return None
            try:
                return numpy_dtype(
                    onnx.helper.tensor_dtype_to_np_dtype(type_proto.tensor_type.elem_type)
                )
            except Exception:  # no numpy dtype: reported as an unsupported type
                return None

        def shape_of(name: str) -> tuple[int, ...] | None:
            dims = ort_dims(self.types.get(name))
            if dims is None or not all(isinstance(d, int) and d > 0 for d in dims):
                return None
            return tuple(dims)  # type: ignore[arg-type]

        for index, node in enumerate(self.model.graph.node):
            name = node.name or (node.output[0] if node.output else f"#{index}")
            opset = self.opsets.get(node.domain or "", 1)
            try:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                validate_node(
                    NodeInfo(node.op_type, name, opset, node.domain),
                    list(node.input),
                    [dtype_of(n) if n else None for n in node.input],
                    [shape_of(n) if n else None for n in node.input],
                    attrs,
                )
            except ModelError as err:
                details = {"op": node.op_type, "node": name, "opset": opset}
                self.problems.append(Problem("invalid-node", str(err), details=details))

    def polymorphic_batch(self, base_dir: str | os.PathLike[str] | None) -> str | None:
        """When the only problems are the symbolic batch dim's: drop them if the model is
        proven batch-separable (one program serves every batch; the import check then runs at
        batch 1) and return the dim; else say why in their fix. None when it is no candidate."""
        from ember.engine.batch_polymorphic import leading_dim, plan_polymorphic_batch

        dim = leading_dim(self.model)
        batch_problems = [
            p
            for p in self.problems
            if p.kind == "symbolic-dim" and p.details.get("dim_param") == dim and dim is not None
        ]
        if not batch_problems or len(batch_problems) != len(self.problems):
            return None
        try:
            plan, why = plan_polymorphic_batch(self.model, self.input_shapes, base_dir=base_dir)
        except EmberError as err:
            plan, why = None, str(err)
        if plan is None:
            self.problems = [
                dataclasses.replace(p, fix=f"{p.fix} (the batch is not polymorphic: {why})")
                if p in batch_problems
                else p
                for p in self.problems
            ]
            return None
        self.problems = [p for p in self.problems if p not in batch_problems]
        self.input_shapes = plan.shapes_at_one
        return dim

    def imports(self, base_dir: str | os.PathLike[str] | None) -> None:
        from ember.frontend.onnx_importer import import_onnx

        try:
            import_onnx(self.model, static_input_shapes(self.model, self.input_shapes), base_dir)
        except UnpinnedInputsError:
            return
        except EmberError as err:
            self.problems.append(_problem_of(err))


def _elem_name(elem: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem)
    except ValueError:
        return f"#{elem}"


def check(
    model: ModelSource,
    input_shapes: InputShapes | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> CheckReport:
    """Every problem to fix before `model` compiles (see the module docstring). A model that
    cannot be read at all raises ModelError. `input_shapes` are the pins `ember.compile` would
    get; `base_dir` is where external data is read from (default: the model file's folder)."""
    import ember.frontend  # noqa: F401  (the converter modules register themselves)

    base_dir = external_data_folder(model, base_dir)
    proto = read_model(model)
    shown = "<ModelProto>" if isinstance(model, onnx.ModelProto) else os.fspath(model)
    checker = _Checker(proto, input_shapes)
    checker.structure()
    complete = checker.symbolic_dims()
    checker.element_types()
    checker.ops()
    checker.nodes()
    polymorphic = checker.polymorphic_batch(base_dir) if not complete else None
    if polymorphic is not None:
        complete = True
    problems = sorted(checker.problems, key=lambda p: KINDS.index(p.kind))
    report = CheckReport(shown, problems, batch_polymorphic=polymorphic)
    if not problems and complete:
        checker.imports(base_dir)
        report.problems = checker.problems
        report.imported = True
    return report
