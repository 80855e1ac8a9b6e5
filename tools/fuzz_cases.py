"""The fuzzer's case generators: seed models, their malformed mutants, and random valid graphs.

Every case is a pure function of (family, seed, index): `malformed_case(seed, index)` and
`differential_case(seed, index)` build the same `Case` in any process, so a worker regenerates
its case from three numbers and a finding is reproduced from the same three numbers.

Malformed cases start from a small pool of valid seed models (`SEED_MODELS`) and break one thing:
the serialized bytes, an attribute, an element type, a shape, the graph's structure, the
runtime inputs, or an ahead-of-time artifact. Differential cases are random small valid graphs
(`random_graph`) whose outputs ember must reproduce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ember.engine.feeds import model_input_specs, random_feeds
from ember.runtime.executable import TensorSpec

OPSET = 17
FLOAT = TensorProto.FLOAT


@dataclass
class Case:
    """One fuzz case: a model (maybe malformed bytes) or a seed model plus what to do with it."""

    name: str
    family: str  # malformed kinds: proto, attribute, dtype, shape, graph, inputs, artifact; or diff
    detail: str  # what was mutated or generated, for humans
    model: bytes | None = None  # the serialized model to compile (None: use `seed`)
    seed: str | None = None  # the seed model an inputs or artifact case runs
    feeds: Any = None  # inputs cases: what run() is given (any Python object)
    artifact_edit: dict[str, Any] = field(default_factory=dict)  # artifact cases


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
    name: str,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _const(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, name)


def _seed_conv_net() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], "pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], "conv2", kernel_shape=[1, 1]),
        helper.make_node("Add", ["c2", "p1"], ["s2"], "residual"),
        helper.make_node("GlobalAveragePool", ["s2"], ["g"], "gap"),
        helper.make_node("Flatten", ["g"], ["f"], "flatten", axis=1),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], "fc", transB=1),
    ]
    inits = [
        _const(rng, "w1", (4, 3, 3, 3)),
        _const(rng, "b1", (4,)),
        _const(rng, "w2", (4, 4, 1, 1)),
        _const(rng, "w3", (5, 4)),
        _const(rng, "b3", (5,)),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", FLOAT, [1, 5])],
        inits,
        "conv_net",
    )


def _seed_matmul_softmax() -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], "matmul"),
        helper.make_node("Add", ["m", "b"], ["a"], "bias"),
        helper.make_node("Softmax", ["a"], ["s"], "softmax", axis=-1),
        helper.make_node("Transpose", ["x"], ["xt"], "transpose", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["s", "xt"], ["y"], "scores"),
        helper.make_node("ReduceMean", ["s"], ["z"], "mean", axes=[1], keepdims=0),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", FLOAT, [2, 4, 8])],
        [
            helper.make_tensor_value_info("y", FLOAT, [2, 4, 4]),
            helper.make_tensor_value_info("z", FLOAT, [2, 8]),
        ],
        [_const(rng, "w", (8, 8)), _const(rng, "b", (8,))],
        "matmul_softmax",
    )


def _seed_elementwise() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Add", ["a", "b"], ["t1"], "add"),
        helper.make_node("Mul", ["t1", "c"], ["t2"], "mul"),
        helper.make_node("Sigmoid", ["t2"], ["t3"], "sigmoid"),
        helper.make_node("Sub", ["t3", "a"], ["t4"], "sub"),
        helper.make_node("Abs", ["b"], ["t5"], "abs"),
        helper.make_node("Add", ["t5", "one"], ["t6"], "add_one"),
        helper.make_node("Div", ["t4", "t6"], ["t7"], "div"),
        helper.make_node("Clip", ["t7", "lo", "hi"], ["y"], "clip"),
    ]
    inits = [
        _const(rng, "c", (4,)),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(-1.5, np.float32), "lo"),
        numpy_helper.from_array(np.array(1.5, np.float32), "hi"),
    ]
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("a", FLOAT, [2, 3, 4]),
            helper.make_tensor_value_info("b", FLOAT, [3, 4]),
        ],
        [helper.make_tensor_value_info("y", FLOAT, [2, 3, 4])],
        inits,
        "elementwise",
    )


def _seed_gather_reshape() -> onnx.ModelProto:
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Gather", ["x", "i"], ["g"], "gather", axis=0),
        helper.make_node("Reshape", ["g", "shape"], ["r"], "reshape"),
        helper.make_node("Transpose", ["r"], ["t"], "transpose", perm=[1, 0]),
        helper.make_node("Concat", ["t", "t"], ["c"], "concat", axis=0),
        helper.make_node(
            "Slice", ["c", "starts", "ends", "axes"], ["y"], "slice"
        ),  # rows 1..17 step 1
        helper.make_node("Unsqueeze", ["y", "uaxes"], ["u"], "unsqueeze"),
        helper.make_node("ReduceSum", ["u", "raxes"], ["z"], "sum", keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(np.array([2, 9], np.int64), "shape"),
        numpy_helper.from_array(np.array([1], np.int64), "starts"),
        numpy_helper.from_array(np.array([17], np.int64), "ends"),
        numpy_helper.from_array(np.array([0], np.int64), "axes"),
        numpy_helper.from_array(np.array([0], np.int64), "uaxes"),
        numpy_helper.from_array(np.array([2], np.int64), "raxes"),
    ]
    del rng
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("x", FLOAT, [16, 6]),  # indices are in [0, 16)
            helper.make_tensor_value_info("i", TensorProto.INT64, [3]),
        ],
        [
            helper.make_tensor_value_info("y", FLOAT, [16, 2]),
            helper.make_tensor_value_info("z", FLOAT, [1, 16]),
        ],
        inits,
        "gather_reshape",
    )


SEED_BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    "conv_net": _seed_conv_net,
    "matmul_softmax": _seed_matmul_softmax,
    "elementwise": _seed_elementwise,
    "gather_reshape": _seed_gather_reshape,
}
_SEEDS: dict[str, onnx.ModelProto] = {}


def seed_model(name: str) -> onnx.ModelProto:
    """A fresh copy of the named seed model (built once per process)."""
    if name not in _SEEDS:
        _SEEDS[name] = SEED_BUILDERS[name]()
    copy = onnx.ModelProto()
    copy.CopyFrom(_SEEDS[name])
    return copy


# ---------------------------------------------------------------------------------------------
# Malformed cases

HUGE_INTS = [0, -1, -7, 2**31 - 1, 2**31, 2**62, -(2**63)]
ELEM_TYPES = [0, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 21, 99, -3]


def _mutate_proto(model: onnx.ModelProto, rng: np.random.Generator) -> tuple[bytes, str]:
    data = bytearray(model.SerializeToString())
    action = rng.choice(["bit", "bytes", "truncate", "insert", "zero", "duplicate"])
    if action == "bit":
        flips = int(rng.integers(1, 5))
        for _ in range(flips):
            pos = int(rng.integers(len(data)))
            data[pos] ^= 1 << int(rng.integers(8))
        return bytes(data), f"{flips} bit flip(s)"
    if action == "bytes":
        count = int(rng.integers(1, 8))
        for _ in range(count):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        return bytes(data), f"{count} random byte(s)"
    if action == "truncate":
        keep = int(rng.integers(0, len(data)))
        return bytes(data[:keep]), f"truncated to {keep} of {len(data)} bytes"
    if action == "insert":
        pos = int(rng.integers(len(data)))
        junk = bytes(rng.integers(0, 256, size=int(rng.integers(1, 16)), dtype=np.uint8))
        return bytes(data[:pos] + junk + data[pos:]), f"{len(junk)} bytes inserted at {pos}"
    if action == "zero":
        pos = int(rng.integers(len(data)))
        length = int(rng.integers(1, 64))
        data[pos : pos + length] = bytes(len(data[pos : pos + length]))
        return bytes(data), f"zeroed {length} bytes at {pos}"
    pos = int(rng.integers(len(data)))
    length = int(rng.integers(1, 64))
    return bytes(data[:pos] + data[pos : pos + length] + data[pos:]), f"duplicated {length} bytes"


def _attribute_value(rng: np.random.Generator, attr: onnx.AttributeProto) -> tuple[Any, str]:
    """A wrong value for `attr`: extreme ints, wrong lengths, wrong types."""
    choice = int(rng.integers(6))
    if attr.type == onnx.AttributeProto.INTS and choice < 3:
        ints = list(attr.ints)
        if choice == 0 and ints:
            ints[int(rng.integers(len(ints)))] = int(rng.choice(HUGE_INTS))
            return ints, f"one element extreme: {ints}"
        if choice == 1:
            length = int(rng.choice([0, 1, 3, 5, 9]))
            ints = [int(rng.integers(-3, 4)) for _ in range(length)]
            return ints, f"wrong length: {ints}"
        return [int(rng.choice(HUGE_INTS))] * max(1, len(ints)), "all extreme"
    if attr.type == onnx.AttributeProto.INT and choice < 3:
        value = int(rng.choice(HUGE_INTS + [-2, 2, 3, 4, 5]))
        return value, f"int {value}"
    if attr.type == onnx.AttributeProto.FLOAT and choice < 3:
        value = float(rng.choice([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e30]))
        return value, f"float {value}"
    if attr.type == onnx.AttributeProto.STRING and choice < 3:
        value = str(rng.choice(["", "NOTSET", "SAME_LOWER", "VALID", "garbage", "\u00e9"]))
        return value, f"string {value!r}"
    wrong = [
        (1.5, "wrong type: float"),
        ("text", "wrong type: string"),
        ([1.0, 2.0], "wrong type: floats"),
        (7, "wrong type: int"),
        ([3, 3], "wrong type: ints"),
        (numpy_helper.from_array(np.zeros((2,), np.float32)), "wrong type: tensor"),
    ]
    return wrong[int(rng.integers(len(wrong)))]


# Attributes a node may carry but the seed does not set: mutations add them too.
EXTRA_ATTRIBUTES = {
    "Conv": ["strides", "dilations", "group", "kernel_shape", "auto_pad", "pads"],
    "MaxPool": ["pads", "ceil_mode", "dilations", "storage_order", "auto_pad"],
    "Gemm": ["alpha", "beta", "transA", "transB"],
    "Softmax": ["axis"],
    "Gather": ["axis"],
    "Concat": ["axis"],
    "Flatten": ["axis"],
    "Transpose": ["perm"],
    "ReduceMean": ["axes", "keepdims"],
    "ReduceSum": ["keepdims", "noop_with_empty_axes"],
    "Clip": [],
}
_EXTRA_DEFAULTS = {
    "strides": [1, 1],
    "dilations": [1, 1],
    "group": 1,
    "kernel_shape": [3, 3],
    "auto_pad": "NOTSET",
    "pads": [0, 0, 0, 0],
    "ceil_mode": 0,
    "storage_order": 0,
    "alpha": 1.0,
    "beta": 1.0,
    "transA": 0,
    "transB": 0,
    "axis": 0,
    "perm": [0, 1],
    "axes": [0],
    "keepdims": 1,
    "noop_with_empty_axes": 0,
}


def _mutate_attribute(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    nodes = list(model.graph.node)
    if not nodes:
        return "no nodes to mutate"
    node = nodes[int(rng.integers(len(nodes)))]
    names = [a.name for a in node.attribute] + EXTRA_ATTRIBUTES.get(node.op_type, [])
    if not names or rng.random() < 0.1:
        node.attribute.append(helper.make_attribute("bogus_attribute", int(rng.integers(9))))
        return f"{node.op_type} '{node.name}': unknown attribute added"
    name = names[int(rng.integers(len(names)))]
    existing = [a for a in node.attribute if a.name == name]
    template = existing[0] if existing else helper.make_attribute(name, _EXTRA_DEFAULTS[name])
    if existing and rng.random() < 0.15:
        node.attribute.remove(existing[0])
        return f"{node.op_type} '{node.name}': attribute {name} removed"
    value, what = _attribute_value(rng, template)
    for attr in existing:
        node.attribute.remove(attr)
    try:
        node.attribute.append(helper.make_attribute(name, value))
    except (ValueError, TypeError):
        node.attribute.append(helper.make_attribute(name, 0))
        what = "int 0"
    if rng.random() < 0.05:  # the same attribute twice
        node.attribute.append(helper.make_attribute(name, value))
        what += ", duplicated"
    return f"{node.op_type} '{node.name}': {name} = {what}"


def _mutate_dtype(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    graph = model.graph
    if not graph.input or not graph.output:
        return "nothing left to mutate"
    elem = int(rng.choice(ELEM_TYPES))
    target = int(rng.integers(4))
    if target == 0 and graph.input:
        info = graph.input[int(rng.integers(len(graph.input)))]
        info.type.tensor_type.elem_type = elem
        return f"input '{info.name}' elem_type {elem}"
    if target == 1:
        info = graph.output[int(rng.integers(len(graph.output)))]
        info.type.tensor_type.elem_type = elem
        return f"output '{info.name}' elem_type {elem}"
    if graph.initializer:
        tensor = graph.initializer[int(rng.integers(len(graph.initializer)))]
        if target == 2:  # relabel the bytes: the payload no longer fits the type
            array = numpy_helper.to_array(tensor)
            raw = array.tobytes()
            tensor.ClearField("float_data")
            tensor.ClearField("int64_data")
            tensor.raw_data = raw
            tensor.data_type = elem
            return f"initializer '{tensor.name}' relabelled as elem_type {elem}"
        # convert properly: a well-formed tensor of the wrong type for its op
        array = numpy_helper.to_array(tensor)
        dtype = rng.choice(["float64", "int32", "int64", "float16", "bool", "uint8", "int8"])
        tensor.CopyFrom(numpy_helper.from_array(array.astype(dtype), tensor.name))
        return f"initializer '{tensor.name}' converted to {dtype}"
    info = graph.input[0]
    info.type.tensor_type.elem_type = elem
    return f"input '{info.name}' elem_type {elem}"


def _mutate_shape(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    graph = model.graph
    target = int(rng.integers(4))
    if target <= 1:
        infos = list(graph.input) if target == 0 else list(graph.output)
        if not infos:
            return "nothing left to mutate"
        info = infos[int(rng.integers(len(infos)))]
        shape = info.type.tensor_type.shape
        dims = list(shape.dim)
        action = int(rng.integers(7))
        if action == 0:
            shape.dim.add().dim_value = int(rng.integers(1, 4))
            what = "rank + 1"
        elif action == 1 and dims:
            del shape.dim[int(rng.integers(len(dims)))]
            what = "rank - 1"
        elif action == 2 and dims:
            shape.dim[int(rng.integers(len(dims)))].dim_value = 0
            what = "a zero dim"
        elif action == 3 and dims:
            huge = int(rng.choice([2**31, 2**40, 2**62]))
            shape.dim[int(rng.integers(len(dims)))].dim_value = huge
            what = f"a dim of {huge}"
        elif action == 4 and dims:
            shape.dim[int(rng.integers(len(dims)))].dim_param = "N"
            what = "a symbolic dim"
        elif action == 5:
            info.type.tensor_type.ClearField("shape")
            what = "no shape"
        else:
            for dim in shape.dim:
                dim.dim_value = int(rng.integers(1, 12))
            what = f"dims {[d.dim_value for d in shape.dim]}"
        kind = "input" if target == 0 else "output"
        return f"{kind} '{info.name}': {what}"
    if not graph.initializer:
        return _mutate_shape(model, rng)
    tensor = graph.initializer[int(rng.integers(len(graph.initializer)))]
    if target == 2:  # dims that no longer match the payload
        dims = list(tensor.dims)
        action = int(rng.integers(3))
        if action == 0 and dims:
            dims[int(rng.integers(len(dims)))] += int(rng.choice([-1, 1, 7]))
        elif action == 1:
            dims.append(int(rng.integers(1, 3)))
        else:
            dims = [int(rng.choice([0, 2**33]))] + dims[1:]
        del tensor.dims[:]
        tensor.dims.extend(max(0, d) for d in dims)
        return f"initializer '{tensor.name}' dims {list(tensor.dims)} (payload unchanged)"
    # a consistent tensor with other values (shape operands: Reshape's shape, Slice's ends...)
    array = numpy_helper.to_array(tensor)
    if array.dtype.kind == "i":
        values = rng.choice([-1, 0, 1, 2, 3, 9, -9, 2**31, 2**62, -(2**62)], size=array.shape)
        if rng.random() < 0.3:
            values = rng.integers(-3, 4, size=int(rng.integers(0, 4)))
        values = values.astype(array.dtype)
    else:
        shape = tuple(int(rng.integers(1, 5)) for _ in range(int(rng.integers(0, 5))))
        values = rng.standard_normal(shape).astype(array.dtype)
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    return f"initializer '{tensor.name}' replaced by shape {list(values.shape)} {values.tolist()}"


def _mutate_graph(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    graph = model.graph
    nodes = graph.node
    if not nodes or not graph.input or not graph.output:
        return "nothing left to mutate"
    node = nodes[int(rng.integers(len(nodes)))]
    action = int(rng.integers(14))
    if not node.input or not node.output:
        action = 6
    if action == 0:
        slot = int(rng.integers(len(node.input)))
        node.input[slot] = "dangling_value"
        return f"{node.op_type} '{node.name}' input {slot} dangles"
    if action == 1:  # two producers of one name
        other = nodes[int(rng.integers(len(nodes)))]
        if other is not node:
            other.output[0] = node.output[0]
            return f"'{other.name}' and '{node.name}' both produce '{node.output[0]}'"
        graph.output.append(graph.output[0])
        return "a graph output listed twice"
    if action == 2:  # a cycle: a node reads a value computed after it
        index = list(nodes).index(node)
        later = nodes[int(rng.integers(index, len(nodes)))]
        node.input[0] = later.output[0]
        return f"cycle: '{node.name}' reads '{later.output[0]}'"
    if action == 3 and graph.initializer:
        tensor = graph.initializer[int(rng.integers(len(graph.initializer)))]
        name = tensor.name
        graph.initializer.remove(tensor)
        return f"initializer '{name}' removed"
    if action == 4:
        name = graph.input[0].name
        del graph.input[0]
        return f"graph input '{name}' removed"
    if action == 5:
        graph.output[0].name = "not_computed"
        return "graph output names a value nothing computes"
    if action == 6:
        del graph.node[:]
        return "all nodes removed"
    if action == 7:
        reversed_nodes = list(reversed(nodes))
        del graph.node[:]
        graph.node.extend(reversed_nodes)
        return "nodes in reverse order"
    if action == 8:
        node.op_type = str(rng.choice(["NoSuchOp", "", "conv", "Relu6", "Loop"]))
        return f"node '{node.name}' op_type {node.op_type!r}"
    if action == 9:
        node.domain = str(rng.choice(["com.example", "ai.onnx.ml", "com.microsoft"]))
        return f"node '{node.name}' domain {node.domain}"
    if action == 10:
        version = int(rng.choice([1, 5, 9, 11, 99, 0, -1]))
        model.opset_import[0].version = version
        return f"opset {version}"
    if action == 11:
        del node.output[:]
        return f"node '{node.name}' has no outputs"
    if action == 12:
        node.input.append(node.input[0] if rng.random() < 0.5 else "")
        return f"node '{node.name}' given an extra input"
    slot = int(rng.integers(len(node.input)))
    node.input[slot] = ""
    return f"node '{node.name}' input {slot} omitted (empty name)"


def _bad_feeds(model: onnx.ModelProto, rng: np.random.Generator) -> tuple[Any, str]:
    specs = model_input_specs(model)
    feeds: dict[str, Any] = random_feeds(specs, int(rng.integers(2**31)))
    spec = specs[int(rng.integers(len(specs)))]
    name, shape, dtype = spec.name, spec.shape, spec.dtype
    action = int(rng.integers(16))
    if action == 0:
        other = "float64" if dtype != "float64" else "float32"
        feeds[name] = feeds[name].astype(other)
        return feeds, f"'{name}' as {other}"
    if action == 1:
        feeds[name] = feeds[name].reshape(-1)
        return feeds, f"'{name}' flattened"
    if action == 2:
        feeds[name] = feeds[name][None]
        return feeds, f"'{name}' with an extra leading dim"
    if action == 3:
        bigger = tuple(d + 1 for d in shape)
        feeds[name] = random_feeds([TensorSpec(name, bigger, dtype)], int(rng.integers(2**31)))[
            name
        ]
        return feeds, f"'{name}' of shape {bigger}"
    if action == 4:  # non-contiguous but valid: must run and match
        doubled = random_feeds([TensorSpec(name, shape + (2,), dtype)], int(rng.integers(2**31)))[
            name
        ]
        feeds[name] = doubled[..., 0]
        return feeds, f"'{name}' non-contiguous (valid)"
    if action == 5:
        feeds[name] = np.asfortranarray(feeds[name])
        return feeds, f"'{name}' Fortran order (valid)"
    if action == 6 and np.dtype(dtype).kind == "f":
        value = feeds[name].copy()
        flat = value.reshape(-1)
        flat[rng.integers(flat.size, size=max(1, flat.size // 8))] = rng.choice(
            [np.nan, np.inf, -np.inf]
        )
        feeds[name] = value
        return feeds, f"'{name}' with NaN/inf elements (valid)"
    if action == 7:
        feeds[name] = None
        return feeds, f"'{name}' is None"
    if action == 8:
        feeds[name] = feeds[name].tolist()
        return feeds, f"'{name}' as a nested list"
    if action == 9:
        del feeds[name]
        return feeds, f"'{name}' missing"
    if action == 10:
        feeds["unexpected"] = feeds[name]
        return feeds, "an unexpected extra input"
    if action == 11:
        return list(feeds.values()), "a list instead of a dict"
    if action == 12:
        feeds[name] = "a string"
        return feeds, f"'{name}' is a string"
    if action == 13:
        feeds[name] = np.zeros((0,) + shape[1:], dtype)
        return feeds, f"'{name}' with zero rows"
    if action == 14:
        feeds[name] = np.array(feeds[name], dtype=object)
        return feeds, f"'{name}' an object array"
    feeds[name] = feeds[name].view([("f", feeds[name].dtype)]) if shape else 3
    return feeds, f"'{name}' a structured array"


ARTIFACT_EDITS = [
    ("manifest", "arena_bytes", 0),
    ("manifest", "arena_bytes", 64),
    ("manifest", "arena_bytes", -1),
    ("manifest", "arena_bytes", "lots"),
    ("manifest", "weights_bytes", 0),
    ("manifest", "weights_bytes", 10**12),
    ("manifest", "entry", "no_such_symbol"),
    ("manifest", "ember_version", "9.9.9"),
    ("manifest", "format_version", 99),
    ("manifest", "format", "zip"),
    ("manifest", "threads", 0),
    ("manifest", "threads", -4),
    ("manifest", "inputs/0/shape", [1]),
    ("manifest", "inputs/0/shape", [10**6, 10**6]),
    ("manifest", "inputs/0/dtype", "float64"),
    ("manifest", "inputs/0/dtype", "no_such_dtype"),
    ("manifest", "outputs/0/shape", [10**5]),
    ("manifest", "outputs/0/shape", [1]),
    ("manifest", "outputs/0/dtype", "int8"),
    ("manifest", "inputs", []),
    ("manifest", "outputs", []),
    ("manifest", "inputs/0/name", None),
    ("manifest", "target/required_features", ["avx512-nonexistent"]),
    ("manifest", "target/arch", "riscv64"),
    ("manifest", "files", {}),
    ("manifest", "files/model.so/bytes", "many"),
    ("manifest-text", "truncate", None),
    ("manifest-text", "garbage", None),
    ("file", "model.so", "truncate"),
    ("file", "model.so", "flip"),
    ("file", "model.so", "empty"),
    ("file", "model.so", "delete"),
    ("file", "weights.bin", "truncate"),
    ("file", "weights.bin", "flip"),
    ("file", "weights.bin", "delete"),
    ("file", "weights.bin", "extend"),
    ("swap", "model.so", None),
    ("swap", "weights.bin", None),
]


def _artifact_edit(rng: np.random.Generator, seed: str) -> tuple[dict[str, Any], str]:
    kind, key, value = ARTIFACT_EDITS[int(rng.integers(len(ARTIFACT_EDITS)))]
    others = [s for s in SEED_BUILDERS if s != seed]
    edit = {
        "kind": kind,
        "key": key,
        "value": value,
        # a tamperer who also rewrites the checksums in the manifest
        "fix_checksums": bool(rng.random() < 0.5),
        "other_seed": others[int(rng.integers(len(others)))],
        "position": float(rng.random()),
    }
    how = " with checksums rewritten" if edit["fix_checksums"] else ""
    return edit, f"{kind} {key} -> {value!r}{how}"


MALFORMED_FAMILIES = ("proto", "attribute", "dtype", "shape", "graph", "inputs", "artifact")
# Relative frequencies: model mutations dominate; artifact cases cost a copy of an artifact.
_FAMILY_WEIGHTS = np.array([2, 4, 2, 3, 3, 3, 1], dtype=float)


def malformed_case(seed: int, index: int) -> Case:
    """The `index`-th malformed case of the campaign `seed`."""
    rng = np.random.default_rng([seed, index, 1])
    family = str(rng.choice(MALFORMED_FAMILIES, p=_FAMILY_WEIGHTS / _FAMILY_WEIGHTS.sum()))
    seed_names = list(SEED_BUILDERS)
    seed_name = seed_names[int(rng.integers(len(seed_names)))]
    model = seed_model(seed_name)
    name = f"malformed-{seed}-{index}"
    if family == "inputs":
        feeds, detail = _bad_feeds(model, rng)
        return Case(name, family, f"{seed_name}: {detail}", seed=seed_name, feeds=feeds)
    if family == "artifact":
        edit, detail = _artifact_edit(rng, seed_name)
        return Case(name, family, f"{seed_name}: {detail}", seed=seed_name, artifact_edit=edit)
    if family == "proto":
        data, detail = _mutate_proto(model, rng)
        return Case(name, family, f"{seed_name}: {detail}", model=data)
    mutate = {
        "attribute": _mutate_attribute,
        "dtype": _mutate_dtype,
        "shape": _mutate_shape,
        "graph": _mutate_graph,
    }[family]
    details = []
    for _ in range(2 if rng.random() < 0.15 else 1):  # sometimes two things at once
        mutated = onnx.ModelProto()
        mutated.CopyFrom(model)
        try:
            details.append(mutate(mutated, rng))
            model = mutated
        except (ValueError, TypeError, IndexError, KeyError):
            pass  # a second mutation that does not apply to what the first one left
    return Case(
        name, family, f"{seed_name}: " + "; ".join(details), model=model.SerializeToString()
    )


# ---------------------------------------------------------------------------------------------
# Differential cases: random small valid graphs

MAX_ELEMENTS = 4096  # per value: keeps each case to milliseconds of compute


class GraphBuilder:
    """Builds a random valid float32 graph one node at a time, tracking every value's shape."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.values: list[str] = []  # float values an op may read, in creation order
        self.input_names: list[str] = []
        self.uses: dict[str, int] = {}
        self.patterns: list[str] = []
        self._counter = 0

    def fresh(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def add_input(self, shape: tuple[int, ...]) -> str:
        name = self.fresh("in")
        self.inputs.append(helper.make_tensor_value_info(name, FLOAT, list(shape)))
        self.shapes[name] = shape
        self.values.append(name)
        self.input_names.append(name)
        return name

    def const(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        self.shapes[name] = tuple(array.shape)
        return name

    def weight(self, shape: tuple[int, ...], scale: float = 0.5) -> str:
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32))

    def ints(self, values: list[int]) -> str:
        return self.const(np.array(values, np.int64), "k")

    def node(self, op: str, inputs: list[str], shape: tuple[int, ...], **attrs: Any) -> str | None:
        """Add `op` producing one float value of `shape`; None (nothing added) if too big."""
        if int(np.prod(shape)) > MAX_ELEMENTS or int(np.prod(shape)) == 0:
            return None
        out = self.fresh(op.lower()[:4])
        self.nodes.append(helper.make_node(op, inputs, [out], self.fresh("n"), **attrs))
        for name in inputs:
            self.uses[name] = self.uses.get(name, 0) + 1
        self.shapes[out] = shape
        self.values.append(out)
        return out

    def pick(self, rank: int | None = None, min_rank: int = 0) -> str | None:
        """A value to read: mostly the newest (chains), sometimes an older one (fan-out)."""
        candidates = [
            v
            for v in self.values
            if (rank is None or len(self.shapes[v]) == rank) and len(self.shapes[v]) >= min_rank
        ]
        if not candidates:
            return None
        if self.rng.random() < 0.6:
            return candidates[-1]
        return candidates[int(self.rng.integers(len(candidates)))]


UNARY = ["Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Softsign", "Erf", "HardSwish"]
UNARY_GUARDED = {  # ops with a restricted domain or fast growth get a guard in front
    "Exp": "Tanh",
    "Sqrt": "Abs",
    "Log": "AbsPlusOne",
    "Reciprocal": "AbsPlusOne",
    "Softplus": None,
}
ACTIVATIONS: list[tuple[str, dict[str, Any]]] = [
    ("Relu", {}),
    ("LeakyRelu", {"alpha": 0.1}),
    ("Sigmoid", {}),
    ("Tanh", {}),
    ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}),
    ("Elu", {"alpha": 1.0}),
    ("Clip", {}),  # Relu6: min/max inputs added by _activation
]
BINARY = ["Add", "Sub", "Mul", "Div", "Max", "Min"]


def _broadcast_shape(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts to `shape`: some dims 1, some leading dims dropped."""
    dims = [d if rng.random() < 0.6 else 1 for d in shape]
    drop = int(rng.integers(0, len(dims) + 1)) if rng.random() < 0.4 else 0
    return tuple(dims[drop:])


def _unary(b: GraphBuilder) -> str | None:
    x = b.pick()
    if x is None:
        return None
    if b.rng.random() < 0.7:
        op = UNARY[int(b.rng.integers(len(UNARY)))]
        if op == "HardSwish":
            return b.node("HardSigmoid", [x], b.shapes[x], alpha=1 / 6, beta=0.5)
        return b.node(op, [x], b.shapes[x])
    op = list(UNARY_GUARDED)[int(b.rng.integers(len(UNARY_GUARDED)))]
    guard = UNARY_GUARDED[op]
    if guard == "AbsPlusOne":
        a = b.node("Abs", [x], b.shapes[x])
        x = b.node("Add", [a, b.const(np.array(1.0, np.float32))], b.shapes[x]) if a else None
    elif guard is not None:
        x = b.node(guard, [x], b.shapes[x])
    return b.node(op, [x], b.shapes[x]) if x else None


def _binary(b: GraphBuilder) -> str | None:
    x = b.pick()
    if x is None:
        return None
    shape = b.shapes[x]
    rng = b.rng
    choice = rng.random()
    same = [v for v in b.values if b.shapes[v] == shape and v != x]
    if choice < 0.3 and same:
        y = same[int(rng.integers(len(same)))]
    elif choice < 0.45:
        y = x  # the same value on both sides
    elif choice < 0.7:
        y = b.add_input(_broadcast_shape(rng, shape))
        b.values.remove(y)  # a side input, not a chain head
    else:
        y = b.weight(_broadcast_shape(rng, shape))
    op = BINARY[int(rng.integers(len(BINARY)))]
    if op == "Div":  # keep the divisor away from zero
        a = b.node("Abs", [y], b.shapes[y])
        y = b.node("Add", [a, b.const(np.array(0.5, np.float32))], b.shapes[y]) if a else None
        if y is None:
            return None
    # the guarded divisor stays a divisor; other ops see the broadcast operand on either side
    operands = [x, y] if op == "Div" or rng.random() < 0.7 else [y, x]
    out_shape = tuple(np.broadcast_shapes(b.shapes[operands[0]], b.shapes[operands[1]]))
    return b.node(op, operands, out_shape)


def _activation(b: GraphBuilder, x: str) -> str | None:
    op, attrs = ACTIVATIONS[int(b.rng.integers(len(ACTIVATIONS)))]
    if op == "Clip":
        lo = b.const(np.array(0.0, np.float32))
        hi = b.const(np.array(6.0, np.float32))
        return b.node("Clip", [x, lo, hi], b.shapes[x])
    return b.node(op, [x], b.shapes[x], **attrs)


def _epilogue(b: GraphBuilder, x: str, y: str | None, channel_axis: int) -> str | None:
    """Maybe bias, activation and a residual add after a conv/matmul `y` that read `x`."""
    rng = b.rng
    if y is None:
        return None
    shape = b.shapes[y]
    if rng.random() < 0.3:  # a separate bias Add (fuse-bias-add)
        bias_shape = [1] * len(shape)
        bias_shape[channel_axis] = shape[channel_axis]
        bias = b.weight(tuple(bias_shape[channel_axis:] if channel_axis == -1 else bias_shape))
        y = b.node("Add", [y, bias], shape)
        if y is None:
            return None
    if rng.random() < 0.5:
        y = _activation(b, y)
        if y is None:
            return None
    if rng.random() < 0.5:
        # a residual: y = x + f(x) when the shapes agree, else some other same-shape value
        if b.shapes[x] == shape and rng.random() < 0.7:
            other = x
            b.patterns.append("x + f(x)")
        else:
            same = [v for v in b.values if b.shapes[v] == shape and v != y]
            other = same[int(rng.integers(len(same)))] if same else None
        if other is not None:
            operands = [other, y] if rng.random() < 0.5 else [y, other]
            y = b.node("Add", operands, shape)
            if y is not None and rng.random() < 0.3:
                y = _activation(b, y)
    return y


def _conv(b: GraphBuilder) -> str | None:
    x = b.pick(rank=4)
    if x is None:
        return None
    rng = b.rng
    n, c, h, w = b.shapes[x]
    group = 1
    if c > 1 and rng.random() < 0.3:
        group = (
            c
            if rng.random() < 0.6
            else int(rng.choice([g for g in (2, 3, 4) if c % g == 0] or [1]))
        )
    # Same channel count half the time, so that x + Conv(x) is possible.
    c_out = c if rng.random() < 0.5 else group * int(rng.integers(1, 5))
    if c_out % group:
        c_out = group
    kh, kw = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    if rng.random() < 0.4:
        kh = kw
    stride = int(rng.choice([1, 1, 1, 2]))
    dilation = int(rng.choice([1, 1, 1, 2]))
    attrs: dict[str, Any] = {"kernel_shape": [kh, kw]}
    if stride != 1:
        attrs["strides"] = [stride, stride]
    if dilation != 1:
        attrs["dilations"] = [dilation, dilation]
    if group != 1:
        attrs["group"] = group
    ekh, ekw = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
    if rng.random() < 0.25 and dilation == 1:  # onnxruntime: no SAME with dilations
        attrs["auto_pad"] = "SAME_UPPER"
        oh, ow = -(-h // stride), -(-w // stride)
    else:
        pads = [int(rng.integers(0, k)) if k > 1 else 0 for k in (kh, kw, kh, kw)]
        if rng.random() < 0.5:  # "same" padding for odd kernels, for x + Conv(x)
            pads = [(kh - 1) * dilation // 2, (kw - 1) * dilation // 2] * 2
        attrs["pads"] = pads
        oh = (h + pads[0] + pads[2] - ekh) // stride + 1
        ow = (w + pads[1] + pads[3] - ekw) // stride + 1
    if oh < 1 or ow < 1:
        return None
    inputs = [x, b.weight((c_out, c // group, kh, kw), scale=1.0 / np.sqrt(kh * kw * c / group))]
    if rng.random() < 0.6:
        inputs.append(b.weight((c_out,)))
    y = b.node("Conv", inputs, (n, c_out, oh, ow), **attrs)
    if y is not None and rng.random() < 0.2:
        scale, bias = b.weight((c_out,)), b.weight((c_out,))
        mean = b.weight((c_out,))
        var = b.const((np.abs(rng.standard_normal(c_out)) + 0.5).astype(np.float32))
        y = b.node("BatchNormalization", [y, scale, bias, mean, var], b.shapes[y])
    return _epilogue(b, x, y, 1)


def _residual_block(b: GraphBuilder) -> str | None:
    """y = x + act(Conv(x) + bias) with a shape-preserving Conv: the residual epilogue."""
    x = b.pick(rank=4)
    if x is None:
        return None
    rng = b.rng
    n, c, h, w = b.shapes[x]
    k = int(rng.choice([1, 3, 3]))
    dilation = int(rng.choice([1, 1, 2])) if k > 1 else 1
    group = c if c > 1 and rng.random() < 0.25 else 1
    attrs: dict[str, Any] = {"kernel_shape": [k, k], "pads": [(k // 2) * dilation] * 4}
    if dilation > 1:
        attrs["dilations"] = [dilation, dilation]
    if group > 1:
        attrs["group"] = group
    inputs = [x, b.weight((c, c // group, k, k), scale=1.0 / np.sqrt(k * k * c / group))]
    if rng.random() < 0.7:
        inputs.append(b.weight((c,)))
    y = b.node("Conv", inputs, (n, c, h, w), **attrs)
    if y is not None and rng.random() < 0.5:
        y = _activation(b, y)
    if y is None:
        return None
    b.patterns.append("x + Conv(x)")
    return b.node("Add", [x, y] if rng.random() < 0.5 else [y, x], (n, c, h, w))


def _matmul(b: GraphBuilder) -> str | None:
    x = b.pick(min_rank=2)
    if x is None:
        return None
    rng = b.rng
    shape = b.shapes[x]
    k = shape[-1]
    n = k if rng.random() < 0.5 else int(rng.integers(1, 33))
    if rng.random() < 0.25:  # two runtime operands
        y = b.add_input(shape[:-2] + (k, n))
        b.values.remove(y)
    else:
        y = b.weight((k, n), scale=1.0 / np.sqrt(k))
    out = b.node("MatMul", [x, y], shape[:-1] + (n,))
    return _epilogue(b, x, out, -1)


def _gemm(b: GraphBuilder) -> str | None:
    x = b.pick(rank=2)
    if x is None:
        return None
    rng = b.rng
    m, k = b.shapes[x]
    n = k if rng.random() < 0.5 else int(rng.integers(1, 33))
    trans_b = int(rng.integers(2))
    attrs: dict[str, Any] = {"transB": trans_b}
    if rng.random() < 0.3:
        attrs["alpha"] = float(rng.choice([0.5, 2.0]))
    inputs = [x, b.weight((n, k) if trans_b else (k, n), scale=1.0 / np.sqrt(k))]
    if rng.random() < 0.7:
        c_shape = [(n,), (1, n), (m, n), ()][int(rng.integers(4))]
        inputs.append(b.weight(c_shape))
        if rng.random() < 0.3:
            attrs["beta"] = float(rng.choice([0.5, 2.0]))
    out = b.node("Gemm", inputs, (m, n), **attrs)
    return _epilogue(b, x, out, -1)


def _reshape(b: GraphBuilder) -> str | None:
    x = b.pick()
    if x is None:
        return None
    rng = b.rng
    shape = b.shapes[x]
    size = int(np.prod(shape))
    if rng.random() < 0.3:
        axis = int(rng.integers(0, len(shape) + 1))
        first = int(np.prod(shape[:axis]))
        return b.node("Flatten", [x], (first, size // first), axis=axis)
    dims = []
    rest = size
    while rest > 1 and len(dims) < 3:
        divisors = [d for d in range(2, rest + 1) if rest % d == 0]
        d = int(rng.choice(divisors))
        dims.append(d)
        rest //= d
    dims.append(rest)
    dims = [int(d) for d in rng.permutation(dims)]
    target = list(dims)
    if rng.random() < 0.3:
        target[int(rng.integers(len(target)))] = -1
    return b.node("Reshape", [x, b.ints(target)], tuple(dims))


def _transpose(b: GraphBuilder) -> str | None:
    x = b.pick(min_rank=2)
    if x is None:
        return None
    perm = [int(p) for p in b.rng.permutation(len(b.shapes[x]))]
    return b.node("Transpose", [x], tuple(b.shapes[x][p] for p in perm), perm=perm)


def _concat(b: GraphBuilder) -> str | None:
    x = b.pick(min_rank=1)
    if x is None:
        return None
    rng = b.rng
    shape = b.shapes[x]
    axis = int(rng.integers(len(shape)))
    same = [v for v in b.values if b.shapes[v] == shape]
    parts = [x]
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.5:
            parts.append(same[int(rng.integers(len(same)))])  # maybe x itself again
        else:
            other = list(shape)
            other[axis] = int(rng.integers(1, 4))
            parts.append(b.weight(tuple(other)))
    out = list(shape)
    out[axis] = sum(b.shapes[p][axis] for p in parts)
    signed = axis - len(shape) if rng.random() < 0.3 else axis
    return b.node("Concat", parts, tuple(out), axis=signed)


def _slice(b: GraphBuilder) -> str | None:
    x = b.pick(min_rank=1)
    if x is None:
        return None
    rng = b.rng
    shape = b.shapes[x]
    axis = int(rng.integers(len(shape)))
    dim = shape[axis]
    step = int(rng.choice([1, 1, 2, -1, -2]))
    start = int(rng.integers(-dim, dim))
    end = int(rng.choice([int(rng.integers(-dim - 1, dim + 2)), 2**62, -(2**62)]))
    indices = range(*slice(start, end, step).indices(dim))
    if len(indices) == 0:
        return None
    out = list(shape)
    out[axis] = len(indices)
    ins = [x, b.ints([start]), b.ints([end]), b.ints([axis])]
    if step != 1 or rng.random() < 0.5:
        ins.append(b.ints([step]))
    return b.node("Slice", ins, tuple(out))


def _squeeze(b: GraphBuilder) -> str | None:
    x = b.pick()
    if x is None:
        return None
    shape = b.shapes[x]
    ones = [i for i, d in enumerate(shape) if d == 1]
    if ones and b.rng.random() < 0.5:
        axis = ones[int(b.rng.integers(len(ones)))]
        return b.node("Squeeze", [x, b.ints([axis])], shape[:axis] + shape[axis + 1 :])
    axis = int(b.rng.integers(len(shape) + 1))
    if len(shape) >= 5:
        return None
    return b.node("Unsqueeze", [x, b.ints([axis])], shape[:axis] + (1,) + shape[axis:])


REDUCTIONS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceLogSumExp"]


def _reduce(b: GraphBuilder) -> str | None:
    x = b.pick(min_rank=1)
    if x is None:
        return None
    rng = b.rng
    shape = b.shapes[x]
    op = REDUCTIONS[int(rng.integers(len(REDUCTIONS)))]
    count = int(rng.integers(1, len(shape) + 1))
    axes = sorted(int(a) for a in rng.choice(len(shape), size=count, replace=False))
    keepdims = int(rng.integers(2))
    out = tuple(1 if i in axes else d for i, d in enumerate(shape) if keepdims or i not in axes)
    signed = [a - len(shape) if rng.random() < 0.3 else a for a in axes]
    if op == "ReduceSum":  # opset 13+: axes is an input
        return b.node(op, [x, b.ints(signed)], out, keepdims=keepdims)
    return b.node(op, [x], out, axes=signed, keepdims=keepdims)


def _softmax(b: GraphBuilder) -> str | None:
    x = b.pick(min_rank=1)
    if x is None:
        return None
    rank = len(b.shapes[x])
    axis = int(b.rng.integers(-rank, rank))
    op = "Softmax" if b.rng.random() < 0.7 else "LogSoftmax"
    return b.node(op, [x], b.shapes[x], axis=axis)


def _layernorm(b: GraphBuilder) -> str | None:
    x = b.pick(min_rank=2)
    if x is None:
        return None
    shape = b.shapes[x]
    axis = int(b.rng.integers(-2, 0))
    norm_shape = shape[axis:]
    inputs = [x, b.weight(norm_shape)]
    if b.rng.random() < 0.7:
        inputs.append(b.weight(norm_shape))
    return b.node("LayerNormalization", inputs, shape, axis=axis, epsilon=1e-5)


def _pool(b: GraphBuilder) -> str | None:
    x = b.pick(rank=4)
    if x is None:
        return None
    rng = b.rng
    n, c, h, w = b.shapes[x]
    if rng.random() < 0.25:
        op = "GlobalAveragePool" if rng.random() < 0.6 else "GlobalMaxPool"
        return b.node(op, [x], (n, c, 1, 1))
    op = "MaxPool" if rng.random() < 0.5 else "AveragePool"
    kh, kw = int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, min(w, 3) + 1))
    stride = int(rng.choice([1, 2, 2]))
    pads = [int(rng.integers(0, k)) for k in (kh, kw, kh, kw)] if rng.random() < 0.5 else [0] * 4
    attrs: dict[str, Any] = {"kernel_shape": [kh, kw], "strides": [stride, stride], "pads": pads}
    ceil = int(rng.random() < 0.3)
    if ceil:
        attrs["ceil_mode"] = 1
    if op == "AveragePool" and rng.random() < 0.5:
        attrs["count_include_pad"] = 1

    def size(length: int, k: int, lo: int, hi: int, ceil: int) -> int:
        span = length + lo + hi - k
        return (-(-span // stride) if ceil else span // stride) + 1

    def last_window_in_padding(length: int, k: int, lo: int, hi: int) -> bool:
        return (size(length, k, lo, hi, 1) - 1) * stride >= length + lo

    # ONNX's shape inference keeps a ceil_mode window that starts in the end padding,
    # onnxruntime drops it: such cases would test the disagreement, not ember.
    if ceil and (
        last_window_in_padding(h, kh, pads[0], pads[2])
        or last_window_in_padding(w, kw, pads[1], pads[3])
    ):
        del attrs["ceil_mode"]
        ceil = 0
    oh, ow = size(h, kh, pads[0], pads[2], ceil), size(w, kw, pads[1], pads[3], ceil)
    if oh < 1 or ow < 1:
        return None
    return b.node(op, [x], (n, c, oh, ow), **attrs)


GENERATORS: dict[str, tuple[Callable[[GraphBuilder], str | None], float]] = {
    "unary": (_unary, 3),
    "binary": (_binary, 3),
    "conv": (_conv, 3),
    "residual": (_residual_block, 1.5),
    "matmul": (_matmul, 2),
    "gemm": (_gemm, 1),
    "reshape": (_reshape, 1),
    "transpose": (_transpose, 1),
    "concat": (_concat, 1),
    "slice": (_slice, 1),
    "squeeze": (_squeeze, 0.5),
    "reduce": (_reduce, 1.5),
    "softmax": (_softmax, 1),
    "layernorm": (_layernorm, 0.5),
    "pool": (_pool, 1.5),
}


def random_graph(rng: np.random.Generator, max_nodes: int = 12) -> tuple[onnx.ModelProto, str]:
    """A random valid float32 model (opset 17) and a one-line summary of its ops."""
    b = GraphBuilder(rng)
    if rng.random() < 0.55:  # an image-like input
        b.add_input(
            (
                int(rng.integers(1, 3)),
                int(rng.integers(1, 9)),
                int(rng.integers(1, 10)),
                int(rng.integers(1, 10)),
            )
        )
    else:
        rank = int(rng.integers(1, 4))
        b.add_input(tuple(int(rng.integers(1, 17)) for _ in range(rank)))
    if rng.random() < 0.3:  # a second input of the same shape
        b.add_input(b.shapes[b.values[0]])
    names = list(GENERATORS)
    weights = np.array([GENERATORS[n][1] for n in names])
    target = int(rng.integers(2, max_nodes + 1))
    attempts = 0
    while len(b.nodes) < target and attempts < 4 * max_nodes:
        attempts += 1
        GENERATORS[names[int(rng.choice(len(names), p=weights / weights.sum()))]][0](b)
    if not b.nodes:
        b.node("Relu", [b.values[0]], b.shapes[b.values[0]])
    produced = [v for v in b.values if v not in b.input_names]
    # Every value nobody reads is an output, and so are some that are also read (fan-out).
    outputs = [v for v in produced if not b.uses.get(v)]
    outputs += [v for v in produced if b.uses.get(v) and rng.random() < 0.15]
    used_inputs = {i for node in b.nodes for i in node.input}
    graph = helper.make_graph(
        b.nodes,
        "random",
        [i for i in b.inputs if i.name in used_inputs],
        [helper.make_tensor_value_info(v, FLOAT, list(b.shapes[v])) for v in outputs],
        initializer=b.initializers,
        value_info=[
            helper.make_tensor_value_info(v, FLOAT, list(b.shapes[v]))
            for v in produced
            if v not in outputs
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    ops = [n.op_type for n in b.nodes]
    summary = f"{len(ops)} nodes: {' '.join(ops)}" + (
        f" [{', '.join(sorted(set(b.patterns)))}]" if b.patterns else ""
    )
    return model, summary


def differential_case(seed: int, index: int) -> Case:
    """The `index`-th random graph of the campaign `seed`."""
    rng = np.random.default_rng([seed, index, 2])
    model, summary = random_graph(rng)
    return Case(f"diff-{seed}-{index}", "diff", summary, model=model.SerializeToString())
