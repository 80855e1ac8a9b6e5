"""ember as an ONNX backend (`onnx.backend.base.Backend`), the interface ONNX's test runner drives.

    from ember.engine.onnx_backend import EmberBackend
    rep = EmberBackend.prepare(model)          # compiles to native code once
    (y,) = rep.run([x])                        # positional, in graph-input order
    (y,) = EmberBackend.run_node(node, [x])    # one node, shapes taken from the inputs

Everything is compiled by `ember.compile`; nothing is evaluated by numpy at run time. An op
ember cannot import fails in `prepare`, with an error naming every such op in the model.
A model with symbolic input dims is pinned by `prepare(model, input_shapes={...})`; without
pins, `prepare` checks the ops and the first `run` compiles for its inputs' shapes (a
SpecializingModel: each further distinct set of shapes compiles once more). An operand that
must be known at compile time (Reshape's shape, TopK's k, ...) fed as a graph input is compiled
per distinct value of it the same way (value specialisation, engine/specialize.py), as ONNX's
test runner feeds every operand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from ember.engine.compile import CompiledModel, compile
from ember.engine.specialize import SpecializingModel
from ember.frontend.errors import ModelError

_DEFAULT_DOMAINS = ("", "ai.onnx")


class UnsupportedOpsError(NotImplementedError):
    """The model uses ONNX ops that ember's frontend does not import."""

    def __init__(self, op_types: Sequence[str], node_names: Sequence[str]):
        self.op_types = list(op_types)
        self.node_names = list(node_names)
        nodes = ", ".join(f"'{n}'" for n in self.node_names)
        super().__init__(
            f"ember does not support ONNX op(s) {', '.join(self.op_types)} (node(s) {nodes})"
        )


class BackendCompileError(RuntimeError):
    """Compiling a model that passed the op check failed further down the pipeline."""


def _op_label(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"


def check_supported_ops(model: onnx.ModelProto) -> None:
    """Raise UnsupportedOpsError naming every op of `model` the frontend cannot import."""
    from ember.frontend.onnx_importer import has_function_body, supported_ops

    known = set(supported_ops())
    opsets = {o.domain: o.version for o in model.opset_import}
    opset = next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), 1)
    missing: dict[str, str] = {}
    for node in model.graph.node:
        label = _op_label(node)  # com.microsoft ops are known as "com.microsoft.OpType"
        # ONNX's own domains (ai.onnx.preview too) define some ops by function bodies.
        version = opset if node.domain in _DEFAULT_DOMAINS else opsets.get(node.domain, 1)
        if label not in known and not has_function_body(node.op_type, version, node.domain):
            missing.setdefault(label, node.name or (node.output or ["?"])[0])
    if missing:
        raise UnsupportedOpsError(list(missing), list(missing.values()))


class EmberBackendRep(BackendRep):
    """A model compiled to native code; `run` takes inputs in graph-input order (or by name)."""

    def __init__(self, compiled: CompiledModel | SpecializingModel, graph_inputs: Sequence[str]):
        self.compiled = compiled
        # ONNX's runner feeds one array per graph input, initializers excluded; the compiled
        # model may need fewer when an input only contributes its (static) shape.
        self.graph_inputs = list(graph_inputs)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, Mapping):
            feeds = dict(inputs)
        else:
            arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            if len(arrays) != len(self.graph_inputs):
                raise ValueError(
                    f"model takes {len(self.graph_inputs)} input(s) {self.graph_inputs}, "
                    f"given {len(arrays)}"
                )
            feeds = dict(zip(self.graph_inputs, arrays))
        # Sequence and optional inputs are given as lists and None (engine/structured.py).
        structured = set(getattr(self.compiled, "structured_inputs", ()))
        used = {
            name: feeds[name] if name in structured else np.asarray(feeds[name])
            for name in self.compiled.input_names
            if name in feeds
        }
        results = self.compiled.run(used)
        return tuple(results[name] for name in self.compiled.output_names)


class EmberBackend(Backend):
    """Compiles ONNX models with `ember.compile` for this machine's CPU."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> EmberBackendRep:
        """Compile `model`; kwargs `input_shapes`, `threads`, `opt_level`, `pipeline` go to
        `ember.compile` (symbolic dims left unpinned: compiled on first run, for its shapes)."""
        if not cls.supports_device(device):
            raise ValueError(f"ember compiles for the CPU only, not for device '{device}'")
        check_supported_ops(model)
        options = {
            k: kwargs[k]
            for k in ("input_shapes", "threads", "opt_level", "pipeline")
            if k in kwargs
        }
        try:
            compiled = compile(model, **options)
        except ModelError:
            raise  # the frontend's errors already name the node and op
        except Exception as err:
            ops = sorted({_op_label(n) for n in model.graph.node})
            raise BackendCompileError(
                f"ember failed to compile graph '{model.graph.name}' (ops {', '.join(ops)}): "
                f"{type(err).__name__}: {err}"
            ) from err
        initializers = {t.name for t in model.graph.initializer}
        graph_inputs = [i.name for i in model.graph.input if i.name not in initializers]
        return EmberBackendRep(compiled, graph_inputs)

    @classmethod
    def run_model(
        cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: onnx.NodeProto,
        inputs: Any,
        device: str = "CPU",
        outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
        **kwargs: Any,
    ) -> tuple[np.ndarray, ...]:
        """Run one node: wrap it in a model whose inputs have the given arrays' types."""
        super().run_node(node, inputs, device=device, outputs_info=outputs_info, **kwargs)
        opset = int(kwargs.pop("opset_version", onnx.defs.onnx_opset_version()))
        model = node_model(node, inputs, outputs_info, opset)
        return cls.run_model(model, inputs, device, **kwargs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return onnx.backend.base.Device(device).type == onnx.backend.base.DeviceType.CPU


def node_model(
    node: onnx.NodeProto,
    inputs: Any,
    outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None,
    opset: int,
) -> onnx.ModelProto:
    """A one-node model whose graph inputs are typed after `inputs` (a list or a name->array map)."""
    names = [n for n in node.input if n]
    arrays = [inputs[n] for n in names] if isinstance(inputs, Mapping) else list(inputs)
    if len(arrays) != len(names):
        raise ValueError(f"{node.op_type} node has inputs {names}, given {len(arrays)} array(s)")
    graph_inputs = [
        onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype), np.shape(a)
        )
        for name, a in zip(names, arrays)
    ]
    infos = list(outputs_info or [])
    graph_outputs = [
        onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(infos[i][0])), infos[i][1]
        )
        if i < len(infos)
        else onnx.helper.make_value_info(name, onnx.TypeProto())
        for i, name in enumerate(n for n in node.output if n)
    ]
    graph = onnx.helper.make_graph([node], f"{node.op_type}_node", graph_inputs, graph_outputs)
    domain = node.domain if node.domain not in _DEFAULT_DOMAINS else ""
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid(domain, opset)])
    if len(infos) < len(graph_outputs):
        # ONNX's checker wants typed graph outputs; ONNX's own inference supplies the rest.
        model = onnx.shape_inference.infer_shapes(model)
    return model


prepare = EmberBackend.prepare
run_model = EmberBackend.run_model
run_node = EmberBackend.run_node
supports_device = EmberBackend.supports_device
