"""Models to test and measure ember with: built with onnx.helper and seeded random weights (no
downloads), and the light models shipped in the onnx wheel. Shared by tests/ and benchmarks/.

    resnet18(seed=0, image_size=224) -> onnx.ModelProto            opset 17
    mobilenet_v2(seed=0, image_size=224, width=1.0) -> ModelProto  opset 13
    bert_encoder(layers=2, seq=16, hidden=64, heads=4, vocab=100, seed=0, token_types=0)
        -> ModelProto  opset 17 (token_types > 0: a token_type_ids input too)

Each model passes onnx.checker and runs in onnxruntime. Conv and BatchNormalization stay
separate nodes (as exporters write them) so that the graph passes have something to fold.
`LIGHT_MODELS` names the nine light models shipped in the onnx wheel (`light_model_path(name)`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)


def light_model_path(name: str) -> Path:
    return LIGHT_DIR / f"light_{name}.onnx"


class GraphBuilder:
    """Appends nodes and seeded initializers; names are generated from a prefix."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def normal(self, shape: Sequence[int], std: float, prefix: str = "w") -> str:
        return self.const(self.rng.normal(0.0, std, shape).astype(np.float32), prefix)

    def node(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs) -> str:
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=names[0], **attrs))
        return names[0]

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1) -> str:
        w = self.normal((cout, cin // group, k, k), math.sqrt(2.0 / (cin // group * k * k)))
        y = self.node(
            "Conv",
            [x, w],
            kernel_shape=[k, k],
            strides=[stride] * 2,
            pads=[k // 2] * 4,
            group=group,
        )
        scale = self.const(self.rng.uniform(0.5, 1.5, cout).astype(np.float32), "bn_scale")
        bias = self.const(self.rng.normal(0, 0.1, cout).astype(np.float32), "bn_bias")
        mean = self.const(self.rng.normal(0, 0.1, cout).astype(np.float32), "bn_mean")
        var = self.const(self.rng.uniform(0.5, 1.5, cout).astype(np.float32), "bn_var")
        return self.node("BatchNormalization", [y, scale, bias, mean, var], epsilon=1e-5)

    def classifier(self, x: str, channels: int, classes: int) -> str:
        pooled = self.node("GlobalAveragePool", [x])
        flat = self.node("Flatten", [pooled], axis=1)
        w = self.normal((classes, channels), 1.0 / math.sqrt(channels))
        b = self.normal((classes,), 0.01)
        return self.node("Gemm", [flat, w, b], transB=1)

    def model(
        self,
        name: str,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        opset: int,
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def _image_input(image_size: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, image_size, image_size])


def resnet18(seed: int = 0, image_size: int = 224, classes: int = 1000) -> onnx.ModelProto:
    b = GraphBuilder(seed)
    x = b.node("Relu", [b.conv_bn("input", 3, 64, 7, stride=2)])
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, cout in enumerate([64, 128, 256, 512]):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = b.node("Relu", [b.conv_bn(x, cin, cout, 3, stride)])
            y = b.conv_bn(y, cout, cout, 3)
            shortcut = x if stride == 1 and cin == cout else b.conv_bn(x, cin, cout, 1, stride)
            x = b.node("Relu", [b.node("Add", [y, shortcut])])
            cin = cout
    logits = b.classifier(x, 512, classes)
    out = helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, classes])
    return b.model("resnet18", [_image_input(image_size)], [out], 17)


def mobilenet_v2(
    seed: int = 0, image_size: int = 224, width: float = 1.0, classes: int = 1000
) -> onnx.ModelProto:
    b = GraphBuilder(seed)
    zero, six = (
        b.const(np.array(0.0, np.float32), "zero"),
        b.const(np.array(6.0, np.float32), "six"),
    )

    def relu6(t: str) -> str:
        return b.node("Clip", [t, zero, six])

    def ch(c: int) -> int:
        return max(8, int(c * width + 4) // 8 * 8)

    cin = ch(32)
    x = relu6(b.conv_bn("input", 3, cin, 3, stride=2))
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:  # fmt: skip
        cout = ch(c)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = relu6(b.conv_bn(x, cin, hidden, 1)) if t != 1 else x
            y = relu6(b.conv_bn(y, hidden, hidden, 3, stride, group=hidden))
            y = b.conv_bn(y, hidden, cout, 1)
            x = b.node("Add", [x, y]) if stride == 1 and cin == cout else y
            cin = cout
    last = ch(1280) if width > 1.0 else 1280
    x = relu6(b.conv_bn(x, cin, last, 1))
    logits = b.classifier(x, last, classes)
    out = helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, classes])
    return b.model("mobilenet_v2", [_image_input(image_size)], [out], 13)


def bert_encoder(
    layers: int = 2,
    seq: int = 16,
    hidden: int = 64,
    heads: int = 4,
    vocab: int = 100,
    seed: int = 0,
    token_types: int = 0,
) -> onnx.ModelProto:
    """Embeddings + post-LN transformer layers + tanh pooler, as a BERT exporter writes them.

    With `token_types` > 0 the model has a second input, `token_type_ids` [1, seq] (int64),
    that indexes a table of that many segment embeddings through Cast and Unsqueeze/Squeeze,
    so only values in [0, token_types) are valid.

    The head split computes its Reshape target with Shape/Gather/Unsqueeze/Concat (folded at
    import); the second LayerNorm of each layer is spelled out with ReduceMean/Sub/Pow/Sqrt/Div
    and the FFN uses the erf-based GELU, so the importer and the fusion passes see both forms.
    """
    b = GraphBuilder(seed)
    dh = hidden // heads
    std = 0.02

    def linear(t: str, n_in: int, n_out: int) -> str:
        y = b.node("MatMul", [t, b.normal((n_in, n_out), 1.0 / math.sqrt(n_in))])
        return b.node("Add", [y, b.normal((n_out,), std)])

    def layer_norm(t: str) -> str:
        scale = b.const(b.rng.uniform(0.8, 1.2, hidden).astype(np.float32), "ln_scale")
        return b.node("LayerNormalization", [t, scale, b.normal((hidden,), std)], axis=-1)

    def layer_norm_decomposed(t: str) -> str:
        mean = b.node("ReduceMean", [t], axes=[-1])
        centered = b.node("Sub", [t, mean])
        var = b.node(
            "ReduceMean", [b.node("Pow", [centered, b.const(np.array(2.0, np.float32))])], axes=[-1]
        )
        eps = b.const(np.array(1e-5, np.float32), "eps")
        normed = b.node("Div", [centered, b.node("Sqrt", [b.node("Add", [var, eps])])])
        scale = b.const(b.rng.uniform(0.8, 1.2, hidden).astype(np.float32), "ln_scale")
        return b.node("Add", [b.node("Mul", [normed, scale]), b.normal((hidden,), std)])

    def split_heads(t: str, perm: list[int]) -> str:
        shape = b.node("Shape", [t])
        dims = [
            b.node("Unsqueeze", [b.node("Gather", [shape, b.const(np.array(i, np.int64))], axis=0),
                                 b.const(np.array([0], np.int64))])
            for i in (0, 1)
        ]  # fmt: skip
        target = b.node("Concat", [*dims, b.const(np.array([heads, dh], np.int64))], axis=0)
        return b.node("Transpose", [b.node("Reshape", [t, target])], perm=perm)

    word = b.normal((vocab, hidden), std, "word_embeddings")
    position = b.normal((1, seq, hidden), std, "position_embeddings")
    x = b.node("Add", [b.node("Gather", [word, "input_ids"], axis=0), position])
    if token_types:
        segment = b.normal((token_types, hidden), std, "token_type_embeddings")
        ids = b.node("Cast", ["token_type_ids"], to=TensorProto.INT32)
        ids = b.node("Squeeze", [b.node("Unsqueeze", [ids, b.const(np.array([0], np.int64))])])
        x = b.node("Add", [x, b.node("Gather", [segment, ids], axis=0)])
    x = layer_norm(x)
    for _ in range(layers):
        q = split_heads(linear(x, hidden, hidden), [0, 2, 1, 3])
        k = split_heads(linear(x, hidden, hidden), [0, 2, 3, 1])
        v = split_heads(linear(x, hidden, hidden), [0, 2, 1, 3])
        scale = b.node("Sqrt", [b.const(np.array(float(dh), np.float32), "head_dim")])
        scores = b.node("Div", [b.node("MatMul", [q, k]), scale])
        probs = b.node("Softmax", [scores], axis=-1)
        ctx = b.node("Transpose", [b.node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = b.node("Reshape", [ctx, b.const(np.array([1, seq, hidden], np.int64))])
        x = layer_norm(b.node("Add", [linear(ctx, hidden, hidden), x]))
        h = linear(x, hidden, 4 * hidden)
        erf = b.node("Erf", [b.node("Div", [h, b.const(np.array(math.sqrt(2.0), np.float32))])])
        one, half = b.const(np.array(1.0, np.float32)), b.const(np.array(0.5, np.float32))
        gelu = b.node("Mul", [b.node("Mul", [h, b.node("Add", [erf, one])]), half])
        x = layer_norm_decomposed(b.node("Add", [linear(gelu, 4 * hidden, hidden), x]))
    first = b.node("Gather", [x, b.const(np.array(0, np.int64))], axis=1)
    pooled = b.node("Tanh", [linear(first, hidden, hidden)])
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, seq])]
    if token_types:
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, [1, seq]))
    outputs = [
        helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, seq, hidden]),
        helper.make_tensor_value_info(pooled, TensorProto.FLOAT, [1, hidden]),
    ]
    return b.model("bert_encoder", inputs, outputs, 17)
