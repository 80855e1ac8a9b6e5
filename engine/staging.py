"""Data-dependent output shapes: a model split at the ops whose output size is a value.

NonZero and Unique (frontend/ops/data_dependent.py) have outputs whose size is known only
at run time; ember's programs have static shapes. So such a model runs in stages:

- the **head** is the model up to those ops, each replaced by its *bounded* form (domain
  `ai.ember.bounded`: outputs of their static upper bound, plus the actual count). The head's
  program returns the bounded buffers sliced to the counts: its manifest lists them in
  `extra.bounded_outputs` ({output: [count output, axis]}) and the thin runtime
  (`Executable`, runtime/executable.py) slices them and drops the counts. No numpy model
  evaluation: a slice is a view.
- the **tail** is the rest of the model: its inputs are the head's values it reads (and the
  graph inputs it reads), with symbolic dims, so `ember.compile` gives a SpecializingModel
  that compiles it once per distinct set of sizes (LRU, engine/specialize.py): the existing
  shape specialisation applied to intermediate values. A tail that holds more data-dependent
  ops is staged again (recursively).

When the data-dependent values are only graph outputs there is no tail: `compile_program`
compiles the head directly, so `ember compile` makes an artifact of it whose runtime slices
the outputs. A model that needs a tail cannot be compiled ahead of time: refused naming the
node whose output feeds further ops.

Nodes are staged only when their input is not a compile-time constant (an initializer, or
computed from initializers alone); a constant one folds while importing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from ember.engine.shapes import Pinning
from ember.frontend.ops.data_dependent import BOUNDED_DOMAIN, DATA_DEPENDENT_OPS, bounded_axes
from ember.runtime.errors import InputError, ModelError, UnsupportedOpError
from ember.runtime.executable import check_feed_names
from ember.runtime.runnable import RunnableModel, checked_threads

# The head model's metadata entry carrying the bounded outputs (read by compile_program).
BOUNDED_METADATA = "ember.bounded_outputs"
_ONNX_DOMAINS = ("", "ai.onnx")


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    reads: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            local = {i.name for i in g.input} | {t.name for t in g.initializer}
            for inner in g.node:
                local |= set(inner.output)
            for inner in g.node:
                reads |= {n for n in inner.input if n and n not in local}
                reads |= _subgraph_reads(inner) - local
    return reads


def _reads(node: onnx.NodeProto) -> set[str]:
    return {n for n in node.input if n} | _subgraph_reads(node)


def _is_data_dependent(node: onnx.NodeProto) -> bool:
    return node.domain in _ONNX_DOMAINS and node.op_type in DATA_DEPENDENT_OPS


def _constants(model: onnx.ModelProto) -> set[str]:
    """Values known at compile time: initializers (not overridable inputs) and what nodes
    compute from them alone."""
    inputs = {i.name for i in model.graph.input}
    known = {t.name for t in model.graph.initializer if t.name not in inputs}
    for node in model.graph.node:
        if not any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ) and all(n in known for n in _reads(node)):
            known |= {o for o in node.output if o}
    return known


def _decisive_inputs(node: onnx.NodeProto) -> list[str]:
    """The inputs whose values decide the node's output size."""
    return list(node.input[1:2]) if node.op_type == "Compress" else list(node.input)


def staged_nodes(model: onnx.ModelProto) -> list[int]:
    """The positions of the data-dependent nodes of `model`'s graph whose input is known only
    at run time."""
    constants = _constants(model)
    return [
        k
        for k, node in enumerate(model.graph.node)
        if _is_data_dependent(node)
        # NonMaxSuppression is not folded: staged even on constants; Compress is when its
        # condition is known only at run time.
        and (
            node.op_type == "NonMaxSuppression"
            or not all(n in constants for n in _decisive_inputs(node) if n)
        )
    ]


def _name(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else "?")


@dataclass
class Split:
    """A model cut at its first data-dependent nodes."""

    head: onnx.ModelProto  # bounded forms in place of the cut nodes
    tail_nodes: list[onnx.NodeProto]  # empty: the data-dependent values are only outputs
    tail_inputs: list[str]  # what the tail reads from the head or the graph inputs
    cut: list[onnx.NodeProto]  # the data-dependent nodes the head bounds
    elem_types: dict[str, int]


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of the graph's values: declared, and by ONNX's inference on the model
    with its big initializers as typed inputs (frontend/shape_inference.py)."""
    from ember.frontend.shape_inference import inferred_types

    g = model.graph
    types = {
        info.name: info.type.tensor_type.elem_type
        for info in [*g.input, *g.value_info]
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type
    }
    types |= {t.name: t.data_type for t in g.initializer}
    for name, value_type in inferred_types(model).items():
        if value_type.HasField("tensor_type") and value_type.tensor_type.elem_type:
            types[name] = value_type.tensor_type.elem_type
    return types


def split_model(model: onnx.ModelProto) -> Split | None:
    """`model` cut at its first data-dependent nodes (None when it has none to stage)."""
    staged = set(staged_nodes(model))
    if not staged:
        return None
    g = model.graph
    tainted: set[str] = set()
    head_nodes: list[onnx.NodeProto] = []
    tail_nodes: list[onnx.NodeProto] = []
    cut: list[onnx.NodeProto] = []
    bounded: dict[str, tuple[str, int]] = {}
    for position, node in enumerate(g.node):
        if _reads(node) & tainted:
            tail_nodes.append(node)
            tainted |= {o for o in node.output if o}
        elif position in staged:
            cut.append(node)
            count = f"{_name(node)}/ember_count"
            outputs = list(node.output)
            axes = bounded_axes(node)
            for index, axis in axes.items():
                if index < len(outputs) and outputs[index]:
                    bounded[outputs[index]] = (count, axis)
            # Unique has four outputs (any may be omitted); the count comes after them all.
            width = 4 if node.op_type == "Unique" else 1
            outputs = (outputs + [""] * width)[:width] + [count]
            bounded_node = helper.make_node(
                node.op_type, list(node.input), outputs, name=_name(node), domain=BOUNDED_DOMAIN
            )
            bounded_node.attribute.extend(node.attribute)
            head_nodes.append(bounded_node)
            tainted |= {o for o in node.output if o}
        else:
            head_nodes.append(node)
    types = _elem_types(model)
    # Compile-time constants the tail reads (a Constant node, a shape computed from
    # initializers) are computed in the tail again, so that they stay constants there.
    constants = _constants(model)
    producer = {o: k for k, n in enumerate(g.node) for o in n.output if o}
    pending = [n for node in tail_nodes for n in _reads(node)]
    copied: set[int] = set()
    while pending:
        name = pending.pop()
        k = producer.get(name)
        if name in constants and k is not None and k not in copied:
            copied.add(k)
            pending.extend(_reads(g.node[k]))
    tail_nodes = [g.node[k] for k in sorted(copied)] + tail_nodes
    produced_in_tail = {o for n in tail_nodes for o in n.output if o}
    tail_reads = sorted({n for node in tail_nodes for n in _reads(node)} - produced_in_tail)
    graph_inputs = {i.name for i in g.input}
    initializers = {t.name for t in g.initializer}
    head_values = {o for n in head_nodes for o in n.output if o}
    # The head returns the graph outputs it computes and what the tail reads from it.
    head_outputs = [o.name for o in g.output if o.name not in produced_in_tail]
    head_outputs += [n for n in tail_reads if n in head_values and n not in head_outputs]
    head_outputs += sorted({count for count, _ in bounded.values()})
    for name in head_outputs:
        if name not in types and not name.endswith("/ember_count"):
            raise ModelError(
                f"cannot stage the model at {cut[0].op_type} node '{_name(cut[0])}': the element "
                f"type of '{name}', which the rest of the model reads, is unknown"
            )
    head = onnx.ModelProto()
    head.CopyFrom(model)
    del head.graph.node[:]
    head.graph.node.extend(head_nodes)
    read_by_head = {n for node in head_nodes for n in _reads(node)}
    del head.graph.input[:]
    head.graph.input.extend(
        i
        for i in g.input
        if i.name in read_by_head or i.name in head_outputs or i.name in initializers
    )
    del head.graph.output[:]
    for name in head_outputs:
        elem = onnx.TensorProto.INT64 if name.endswith("/ember_count") else types[name]
        head.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    del head.graph.value_info[:]
    if not any(o.domain == BOUNDED_DOMAIN for o in head.opset_import):
        head.opset_import.append(helper.make_opsetid(BOUNDED_DOMAIN, 1))
    entry = head.metadata_props.add()
    entry.key = BOUNDED_METADATA
    entry.value = json.dumps({name: [count, axis] for name, (count, axis) in bounded.items()})
    for name in tail_reads:
        if name not in types and name not in graph_inputs:
            raise ModelError(f"cannot stage the model: the element type of '{name}' is unknown")
    return Split(head, tail_nodes, tail_reads, cut, types)


def bounded_outputs(model: onnx.ModelProto) -> dict[str, list[Any]] | None:
    """The `extra.bounded_outputs` a head model asks its manifest for (None: not a head)."""
    for entry in model.metadata_props:
        if entry.key == BOUNDED_METADATA:
            return json.loads(entry.value)
    return None


def head_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model to compile in one program: `model` itself, or, when its data-dependent
    values are only graph outputs, its head (whose runtime slices them). A model whose
    data-dependent values feed further ops is refused: only `ember.compile` (a StagedModel)
    compiles the rest at run time."""
    split = split_model(model)
    if split is None:
        return model
    if split.tail_nodes:
        node = split.cut[0]
        reader = next(n for n in split.tail_nodes if _reads(n) & set(node.output))
        raise UnsupportedOpError(
            node.op_type,
            _name(node),
            next((o.version for o in model.opset_import if o.domain in _ONNX_DOMAINS), 1),
            f"its output size depends on run-time values and feeds {reader.op_type} node "
            f"'{_name(reader)}': ember compiles what follows once per run-time size "
            "(ember.compile, a staged model), which an ahead-of-time program cannot do; "
            "only a model whose data-dependent values are graph outputs compiles to one program",
        )
    return split.head


def _tail_model(model: onnx.ModelProto, split: Split, ranks: Mapping[str, int]) -> onnx.ModelProto:
    g = model.graph
    declared = {i.name: i for i in g.input}
    initializers = {t.name: t for t in g.initializer}
    inputs = []
    for name in split.tail_inputs:
        if name in initializers and name not in declared:
            continue
        if name in declared and name not in ranks:
            inputs.append(declared[name])
            continue
        dims = [f"{name}:{k}" for k in range(ranks[name])]
        inputs.append(helper.make_tensor_value_info(name, split.elem_types[name], dims))
    produced = {o for n in split.tail_nodes for o in n.output if o}
    outputs = [o for o in g.output if o.name in produced]
    tail_graph = helper.make_graph(
        split.tail_nodes,
        f"{g.name}_tail",
        inputs,
        outputs,
        initializer=[initializers[n] for n in split.tail_inputs if n in initializers],
    )
    tail = helper.make_model(tail_graph, opset_imports=list(model.opset_import))
    tail.ir_version = model.ir_version
    tail.functions.extend(model.functions)
    return tail


class StagedModel(RunnableModel):
    """A model with data-dependent output shapes, run as a head program and a tail compiled
    per distinct set of run-time sizes (module docstring). The API of every model
    (runtime/runnable.py); `tail` is the compiled rest (None before the first run), `cut` the
    staged nodes."""

    def __init__(
        self,
        model: onnx.ModelProto,
        pinning: Pinning,
        split: Split,
        *,
        input_shapes: Any,
        threads: int,
        options: Mapping[str, Any],
        dynamic_dims: Any = None,
    ) -> None:
        from ember.engine.compile import compile as ember_compile

        self._model = model
        self._split = split
        self._options = dict(options)
        self.threads = threads
        self._signature = pinning.signature
        self.cut = [_name(n) for n in split.cut]
        head_inputs = {i.name for i in split.head.graph.input}
        if input_shapes:
            input_shapes = {n: s for n, s in input_shapes.items() if n in head_inputs}
        self._head = ember_compile(
            split.head,
            input_shapes=input_shapes or None,
            dynamic_dims=dynamic_dims,
            threads=threads,
            **self._options,
        )
        self.tail: Any = None
        self._tail_lock = threading.Lock()

    @property
    def input_names(self) -> list[str]:
        return self._signature.input_names

    @property
    def output_names(self) -> list[str]:
        return self._signature.output_names

    @property
    def report(self) -> Any:
        """The CompileReport of the head (of its last specialisation)."""
        return self._head.report

    @property
    def compiles(self) -> int:
        """Programs compiled so far: the head's, and the tail's (every run-time size)."""
        head = getattr(self._head, "compiles", 1)
        return head + (0 if self.tail is None else getattr(self.tail, "compiles", 1))

    def set_num_threads(self, threads: int) -> None:
        self.threads = checked_threads(threads)
        self._head.set_num_threads(threads)
        if self.tail is not None:
            self.tail.set_num_threads(threads)

    def _compile_tail(self, values: Mapping[str, np.ndarray]) -> Any:
        from ember.engine.compile import compile as ember_compile

        graph_inputs = set(self.input_names)
        ranks = {
            name: values[name].ndim
            for name in self._split.tail_inputs
            if name in values and name not in graph_inputs
        }
        tail = _tail_model(self._model, self._split, ranks)
        return ember_compile(tail, threads=self.threads, **self._options)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        check_feed_names(feeds, self.input_names)
        head_feeds = {name: feeds[name] for name in self._head.input_names}
        results = self._head.run(head_feeds)
        if self._split.tail_nodes:
            values = {**results, **{n: np.asarray(a) for n, a in feeds.items()}}
            with self._tail_lock:  # concurrent first runs compile the tail once
                if self.tail is None:
                    self.tail = self._compile_tail(values)
            missing = [n for n in self.tail.input_names if n not in values]
            if missing:
                raise InputError(f"the staged model's tail reads {missing}, which no stage gives")
            try:
                results.update(self.tail.run({n: values[n] for n in self.tail.input_names}))
            except InputError as err:
                # The tail's inputs are intermediate values: say which run gave them.
                given = {n: list(np.shape(feeds[n])) for n in self.input_names}
                cut = ", ".join(f"{n.op_type} '{_name(n)}'" for n in self._split.cut)
                raise InputError(
                    f"with input shapes {given}, the part of the model after the "
                    f"data-dependent sizes of {cut} fails (its inputs are the values they "
                    f"give): {err}"
                ) from err
        return {name: np.ascontiguousarray(results[name]) for name in self.output_names}


def stage(
    model: onnx.ModelProto,
    pinning: Pinning,
    *,
    input_shapes: Any,
    threads: int,
    options: Mapping[str, Any],
    dynamic_dims: Any = None,
) -> StagedModel | None:
    """A StagedModel of `model` when its data-dependent values feed further ops, else None
    (nothing to stage, or only graph outputs: compile_program compiles those directly)."""
    split = split_model(model)
    if split is None or not split.tail_nodes:
        return None
    return StagedModel(
        model,
        pinning,
        split,
        input_shapes=input_shapes,
        threads=threads,
        options=options,
        dynamic_dims=dynamic_dims,
    )
