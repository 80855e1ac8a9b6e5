"""Models to test and measure ember with: built with onnx.helper and seeded random weights (no
downloads), and the light models shipped in the onnx wheel. Shared by tests/ and benchmarks/.

    resnet18(seed=0, image_size=224, width=1.0) -> onnx.ModelProto  opset 17
    mobilenet_v2(seed=0, image_size=224, width=1.0) -> ModelProto  opset 13
    dbnet(seed=0, height=640, width=640, channels=1.0) -> ModelProto  opset 17
        (DBNet text detector: ResNet-18, FPN neck with nearest Resize, ConvTranspose head)
    inverted_residual_model(seed=0, size=56, channels=24) -> ModelProto  opset 13
        (MobileNetV2 blocks: 1x1 expand, depthwise, 1x1 project)
    bert_encoder(layers=2, seq=16, hidden=64, heads=4, vocab=100, seed=0, token_types=0,
                 intermediate=None, attention_mask=False, mask_value=-10000.0, gelu="erf",
                 layer_norm="mixed", name="bert_encoder")
        -> ModelProto  opset 17 (token_types > 0: a token_type_ids input too; attention_mask:
           an attention_mask input as HF exports it; gelu "erf"|"tanh"; layer_norm
           "op"|"decomposed"|"mixed")

Speech, OCR and decoding (control flow, recurrent layers):
    vad_model(seed=0, samples=512, n_fft=64, channels=32, hidden=32)  Silero-VAD-shaped: If on
        the run-time sample rate, |STFT| as Conv1D, Conv1D stack, LSTM with state in and out
    crnn_model(seed=0, height=32, width=64, classes=37, hidden=48)  conv stack, bidirectional
        LSTM, per-step classifier
    greedy_decoder(vocab=16, hidden=8)  Loop with a run-time trip count and a scan output
    recurrent_layer(kind, seq=100, batch=1, hidden=128)  one LSTM or GRU layer

Each model passes onnx.checker and runs in onnxruntime. Conv and BatchNormalization stay
separate nodes (as exporters write them) so that the graph passes have something to fold.
`LIGHT_MODELS` names the nine light models shipped in the onnx wheel (`light_model_path(name)`).
"""

from __future__ import annotations

import math
import tempfile
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
        return self.batch_norm(y, cout)

    def batch_norm(self, x: str, channels: int) -> str:
        scale = self.const(self.rng.uniform(0.5, 1.5, channels).astype(np.float32), "bn_scale")
        bias = self.const(self.rng.normal(0, 0.1, channels).astype(np.float32), "bn_bias")
        mean = self.const(self.rng.normal(0, 0.1, channels).astype(np.float32), "bn_mean")
        var = self.const(self.rng.uniform(0.5, 1.5, channels).astype(np.float32), "bn_var")
        return self.node("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-5)

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


def _resnet18_stages(b: GraphBuilder, width: float) -> tuple[list[str], list[int]]:
    """ResNet-18's stem and four stages of two basic blocks on `input`: each stage's output
    (strides 4, 8, 16, 32) and channel count (64, 128, 256, 512 scaled by `width`)."""
    widths = [max(8, int(c * width)) for c in (64, 128, 256, 512)]
    x = b.node("Relu", [b.conv_bn("input", 3, widths[0], 7, stride=2)])
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin, features = widths[0], []
    for stage, cout in enumerate(widths):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = b.node("Relu", [b.conv_bn(x, cin, cout, 3, stride)])
            y = b.conv_bn(y, cout, cout, 3)
            shortcut = x if stride == 1 and cin == cout else b.conv_bn(x, cin, cout, 1, stride)
            x = b.node("Relu", [b.node("Add", [y, shortcut])])
            cin = cout
        features.append(x)
    return features, widths


def resnet18(
    seed: int = 0, image_size: int = 224, classes: int = 1000, width: float = 1.0
) -> onnx.ModelProto:
    """`width` scales every stage's channels (64, 128, 256, 512) for small, fast variants."""
    b = GraphBuilder(seed)
    features, widths = _resnet18_stages(b, width)
    logits = b.classifier(features[-1], widths[-1], classes)
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


def dbnet(
    seed: int = 0, height: int = 640, width: int = 640, channels: float = 1.0
) -> onnx.ModelProto:
    """A DBNet text detector (Liao et al., "Real-time Scene Text Detection with Differentiable
    Binarization", the ResNet-18 model) at inference: [1, 3, height, width] -> the text
    probability map [1, 1, height, width]. height and width: multiples of 32.

    - backbone: ResNet-18's stages at strides 4, 8, 16, 32 (`_resnet18_stages`);
    - FPN neck: bias-free 1x1 lateral convs to `inner` (256) channels, top-down Resize
      (nearest, x2) + Add, a bias-free 3x3 conv to inner / 4 on every level, each level
      Resized (nearest, x8 / x4 / x2) to stride 4 and Concatenated;
    - DB head (the probability branch): 3x3 conv + BN + ReLU, ConvTranspose 2x2/2 + BN + ReLU,
      ConvTranspose 2x2/2, Sigmoid.

    As the exporters write it: every BatchNormalization a node of its own; Resize(x, "",
    scales) with asymmetric coordinates and floor rounding, the top-down scales a Constant
    node (torch.onnx) and the to-stride-4 scales initializers (paddle2onnx). `channels` scales
    the backbone's and the neck's widths for small test variants. Opset 17.
    """
    if height % 32 or width % 32:
        raise ValueError(f"dbnet: height {height} and width {width} must be multiples of 32")
    b = GraphBuilder(seed)
    features, widths = _resnet18_stages(b, channels)
    inner = max(8, int(256 * channels))
    quarter = inner // 4

    def conv(x: str, cin: int, cout: int, k: int) -> str:
        w = b.normal((cout, cin, k, k), math.sqrt(2.0 / (cin * k * k)))
        return b.node("Conv", [x, w], kernel_shape=[k, k], pads=[k // 2] * 4)

    def resize(x: str, scales: str) -> str:
        return b.node("Resize", [x, "", scales], mode="nearest",
                      coordinate_transformation_mode="asymmetric", nearest_mode="floor")  # fmt: skip

    def constant_scales(factor: float) -> str:
        value = numpy_helper.from_array(np.array([1, 1, factor, factor], np.float32))
        return b.node("Constant", [], value=value)

    def conv_transpose_2x2(x: str, cin: int, cout: int, gain: float = 1.0) -> str:
        w = b.normal((cin, cout, 2, 2), gain * math.sqrt(2.0 / (cin * 4)))
        bias = b.normal((cout,), 0.1)
        return b.node("ConvTranspose", [x, w, bias], kernel_shape=[2, 2], strides=[2, 2])

    laterals = [conv(f, c, inner, 1) for f, c in zip(features, widths)]
    merged = [laterals[-1]]  # top-down: stride 32, 16, 8, 4
    for lateral in reversed(laterals[:-1]):
        merged.append(b.node("Add", [resize(merged[-1], constant_scales(2.0)), lateral]))
    levels = []
    for level, factor in zip(merged, (8.0, 4.0, 2.0, 1.0)):
        smoothed = conv(level, inner, quarter, 3)
        if factor > 1:
            smoothed = resize(smoothed, b.const(np.array([1, 1, factor, factor], np.float32)))
        levels.append(smoothed)
    fused = b.node("Concat", levels, axis=1)
    x = b.node("Relu", [b.batch_norm(conv(fused, inner, quarter, 3), quarter)])
    x = b.node("Relu", [b.batch_norm(conv_transpose_2x2(x, quarter, quarter), quarter)])
    # Small weights on the last layer: the seeded features grow to ~100, and a saturated
    # Sigmoid (all 0 or 1) would hide a wrong value in the map; this keeps logits at std ~2.
    probability = b.node("Sigmoid", [conv_transpose_2x2(x, quarter, 1, gain=0.05)])
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, height, width])
    out = helper.make_tensor_value_info(probability, TensorProto.FLOAT, [1, 1, height, width])
    return b.model("dbnet", [image], [out], 17)


def bert_encoder(
    layers: int = 2,
    seq: int = 16,
    hidden: int = 64,
    heads: int = 4,
    vocab: int = 100,
    seed: int = 0,
    token_types: int = 0,
    intermediate: int | None = None,
    attention_mask: bool = False,
    mask_value: float = -10000.0,
    gelu: str = "erf",
    layer_norm: str = "mixed",
    name: str = "bert_encoder",
) -> onnx.ModelProto:
    """Embeddings + post-LN transformer layers + tanh pooler, as a BERT exporter writes them.

    With `token_types` > 0 the model has a second input, `token_type_ids` [1, seq] (int64),
    that indexes a table of that many segment embeddings through Cast and Unsqueeze/Squeeze,
    so only values in [0, token_types) are valid.

    The head split computes its Reshape target with Shape/Gather/Unsqueeze/Concat (folded at
    import). `intermediate` is the FFN width (default 4 * hidden).

    - `attention_mask`: a third input `attention_mask` [1, seq] (int64, 1 = attend) becomes
      the additive mask HF's exporters write: Unsqueeze to [1, 1, 1, seq], Cast to float,
      (1 - mask) * `mask_value` (-10000 in older exports, float32's lowest in newer ones),
      added to the scaled scores.
    - `gelu`: "erf" (x * 0.5 * (1 + erf(x / sqrt 2))) or "tanh" (the approximation
      0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))), with Pow(x, 3)).
    - `layer_norm`: "op" (opset-17 LayerNormalization), "decomposed"
      (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add) or "mixed" (the embedding and
      attention LayerNorms as the op, the FFN's decomposed), so one model shows both forms.
    """
    if gelu not in ("erf", "tanh") or layer_norm not in ("op", "decomposed", "mixed"):
        raise ValueError(f"bert_encoder: gelu={gelu!r}, layer_norm={layer_norm!r}")
    b = GraphBuilder(seed)
    dh = hidden // heads
    ffn = 4 * hidden if intermediate is None else intermediate
    std = 0.02

    def linear(t: str, n_in: int, n_out: int) -> str:
        y = b.node("MatMul", [t, b.normal((n_in, n_out), 1.0 / math.sqrt(n_in))])
        return b.node("Add", [y, b.normal((n_out,), std)])

    def layer_norm_op(t: str) -> str:
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

    def gelu_of(h: str) -> str:
        one, half = b.const(np.array(1.0, np.float32)), b.const(np.array(0.5, np.float32))
        if gelu == "erf":
            root2 = b.const(np.array(math.sqrt(2.0), np.float32))
            erf = b.node("Erf", [b.node("Div", [h, root2])])
            return b.node("Mul", [b.node("Mul", [h, b.node("Add", [erf, one])]), half])
        cube = b.node("Pow", [h, b.const(np.array(3.0, np.float32))])
        inner = b.node("Add", [h, b.node("Mul", [cube, b.const(np.array(0.044715, np.float32))])])
        root = b.const(np.array(math.sqrt(2.0 / math.pi), np.float32))
        tanh = b.node("Tanh", [b.node("Mul", [inner, root])])
        return b.node("Mul", [b.node("Mul", [half, h]), b.node("Add", [one, tanh])])

    first_norm = layer_norm_decomposed if layer_norm == "decomposed" else layer_norm_op
    second_norm = layer_norm_op if layer_norm == "op" else layer_norm_decomposed
    additive_mask = None
    if attention_mask:
        axes = b.const(np.array([1, 2], np.int64))
        mask = b.node("Cast", [b.node("Unsqueeze", ["attention_mask", axes])], to=TensorProto.FLOAT)
        inverted = b.node("Sub", [b.const(np.array(1.0, np.float32)), mask])
        additive_mask = b.node("Mul", [inverted, b.const(np.array(mask_value, np.float32))])

    x = first_norm(x)
    for _ in range(layers):
        q = split_heads(linear(x, hidden, hidden), [0, 2, 1, 3])
        k = split_heads(linear(x, hidden, hidden), [0, 2, 3, 1])
        v = split_heads(linear(x, hidden, hidden), [0, 2, 1, 3])
        scale = b.node("Sqrt", [b.const(np.array(float(dh), np.float32), "head_dim")])
        scores = b.node("Div", [b.node("MatMul", [q, k]), scale])
        if additive_mask is not None:
            scores = b.node("Add", [scores, additive_mask])
        probs = b.node("Softmax", [scores], axis=-1)
        ctx = b.node("Transpose", [b.node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = b.node("Reshape", [ctx, b.const(np.array([1, seq, hidden], np.int64))])
        x = first_norm(b.node("Add", [linear(ctx, hidden, hidden), x]))
        h = gelu_of(linear(x, hidden, ffn))
        x = second_norm(b.node("Add", [linear(h, ffn, hidden), x]))
    first = b.node("Gather", [x, b.const(np.array(0, np.int64))], axis=1)
    pooled = b.node("Tanh", [linear(first, hidden, hidden)])
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, seq])]
    if token_types:
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, [1, seq]))
    if attention_mask:
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, seq]))
    outputs = [
        helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, seq, hidden]),
        helper.make_tensor_value_info(pooled, TensorProto.FLOAT, [1, hidden]),
    ]
    return b.model(name, inputs, outputs, 17)


# (expansion, output channels, depthwise kernel, stride) of each inverted residual block.
INVERTED_RESIDUAL_BLOCKS = ((6, 24, 3, 1), (6, 32, 3, 2), (6, 32, 5, 1))


def inverted_residual_model(
    seed: int = 0,
    size: int = 56,
    channels: int = 24,
    blocks: Sequence[tuple[int, int, int, int]] = INVERTED_RESIDUAL_BLOCKS,
) -> onnx.ModelProto:
    """MobileNetV2's inverted residual blocks on a [1, channels, size, size] input: 1x1
    expand, ReLU6, kxk depthwise (stride s), ReLU6, 1x1 project, residual Add when the
    shape allows (the default: MobileNetV2's 56x56 stage, a stride-2 block into its 28x28
    stage, and a 5x5 depthwise block as MobileNetV3 has). Opset 13, BatchNorm after
    every conv, ReLU6 as Clip(0, 6)."""
    b = GraphBuilder(seed)
    zero = b.const(np.array(0.0, np.float32), "zero")
    six = b.const(np.array(6.0, np.float32), "six")
    x, cin, out_size = "input", channels, size
    for t, cout, k, stride in blocks:
        hidden = cin * t
        y = b.node("Clip", [b.conv_bn(x, cin, hidden, 1), zero, six])
        y = b.node("Clip", [b.conv_bn(y, hidden, hidden, k, stride, group=hidden), zero, six])
        y = b.conv_bn(y, hidden, cout, 1)
        x = b.node("Add", [x, y]) if stride == 1 and cin == cout else y
        cin, out_size = cout, (out_size - 1) // stride + 1
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, channels, size, size])
    out = helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, cin, out_size, out_size])
    return b.model("inverted_residual", [image], [out], 13)


def resnet_block_model(seed: int = 0) -> onnx.ModelProto:
    """A small ResNet-style CNN: stem, a basic block, a strided block with a 1x1 shortcut, a
    depthwise conv (float fallback), global pooling and a classifier."""
    b = GraphBuilder(seed)
    x = b.node("Relu", [b.conv_bn("input", 3, 16, 3)])
    y = b.node("Relu", [b.conv_bn(x, 16, 16, 3)])
    x = b.node("Relu", [b.node("Add", [b.conv_bn(y, 16, 16, 3), x])])
    y = b.node("Relu", [b.conv_bn(x, 16, 24, 3, stride=2)])
    y = b.conv_bn(y, 24, 24, 3)
    x = b.node("Relu", [b.node("Add", [y, b.conv_bn(x, 16, 24, 1, stride=2)])])
    x = b.node("Relu", [b.conv_bn(x, 24, 24, 3, group=24)])
    logits = b.classifier(x, 24, 10)
    out = helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, 10])
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 20, 20])
    return b.model("resnet_block", [image], [out], 17)


class _Reader:
    def __init__(self, name: str, shape: tuple[int, ...], count: int = 4) -> None:
        rng = np.random.default_rng(1)
        self._feeds = iter(
            [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_static(
    model: onnx.ModelProto,
    shape: tuple[int, ...],
    quant_format: str,
    per_channel: bool,
    act: str,
    input_name: str = "input",
    reduce_range: bool = False,
) -> onnx.ModelProto:
    """onnxruntime's quant_pre_process (folds BatchNorm) then quantize_static
    (`reduce_range`: 7-bit weights, onnxruntime's advice for AVX2's vpmaddubsw)."""
    from onnxruntime import quantization as q  # the oracle's own tool, for comparisons

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("f.onnx", "pre.onnx", "q.onnx"))
        onnx.save(model, src)
        q.shape_inference.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        q.quantize_static(
            str(pre),
            str(dst),
            _Reader(input_name, shape),
            quant_format=getattr(q.QuantFormat, quant_format),
            per_channel=per_channel,
            activation_type=getattr(q.QuantType, act),
            weight_type=q.QuantType.QInt8,
            reduce_range=reduce_range,
        )
        return onnx.load(dst)


def graph_op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many of each graph op `model` has after the graph passes (e.g. "graph.qconv": the
    convolutions quantize-ops turned into integer kernels)."""
    from collections import Counter

    from ember.core.context import make_context
    from ember.frontend.onnx_importer import import_model
    from ember.passes.pipeline import run_graph_passes

    module, weights = import_model(model)
    run_graph_passes(module, make_context(weights))
    return Counter(op.name for op in module.walk())


# ---------------------------------------------------------------------------------------------
# Speech, OCR and decoding models (control flow and recurrent layers)


def _stft_basis(n_fft: int, window: np.ndarray) -> np.ndarray:
    """[2 * bins, 1, n_fft] Conv1D weights computing a windowed real DFT: the cosine (real)
    rows of bins 0..n_fft/2, then the negative sine (imaginary) rows."""
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)[:, None]
    angle = 2.0 * np.pi * k * n / n_fft
    basis = np.concatenate([np.cos(angle), -np.sin(angle)]) * window
    return basis[:, None, :].astype(np.float32)


def _stft_magnitude_branch(
    b: GraphBuilder, name: str, frames: str, window: np.ndarray, n_fft: int, hop: int
) -> onnx.GraphProto:
    """An If branch: |STFT| of the outer `frames` ([1, 1, samples]) as Conv1D + magnitude,
    [1, bins, T]. Reads `frames` from the enclosing graph."""
    bins = n_fft // 2 + 1
    basis = numpy_helper.from_array(_stft_basis(n_fft, window), f"{name}_basis")
    starts = [numpy_helper.from_array(np.array([v], np.int64), f"{name}_{v}") for v in (0, bins)]
    end = numpy_helper.from_array(np.array([2 * bins], np.int64), f"{name}_end")
    axis = numpy_helper.from_array(np.array([1], np.int64), f"{name}_axis")
    eps = numpy_helper.from_array(np.array(1e-6, np.float32), f"{name}_eps")
    spec, re, im, out = (f"{name}_{v}" for v in ("spec", "re", "im", "magnitude"))
    nodes = [
        helper.make_node("Conv", [frames, basis.name], [spec], strides=[hop], kernel_shape=[n_fft]),
        helper.make_node("Slice", [spec, starts[0].name, starts[1].name, axis.name], [re]),
        helper.make_node("Slice", [spec, starts[1].name, end.name, axis.name], [im]),
        helper.make_node("Mul", [re, re], [f"{name}_re2"]),
        helper.make_node("Mul", [im, im], [f"{name}_im2"]),
        helper.make_node("Add", [f"{name}_re2", f"{name}_im2"], [f"{name}_power"]),
        helper.make_node("Add", [f"{name}_power", eps.name], [f"{name}_power_eps"]),
        helper.make_node("Sqrt", [f"{name}_power_eps"], [out]),
    ]
    inits = [basis, *starts, end, axis, eps]
    output = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
    return helper.make_graph(nodes, name, [], [output], inits)


def vad_model(
    seed: int = 0, samples: int = 512, n_fft: int = 64, channels: int = 32, hidden: int = 32
) -> onnx.ModelProto:
    """A voice-activity detector shaped like Silero-VAD: inputs audio [1, samples], sr (int64
    scalar, 16000 or 8000), h0 and c0 [1, 1, hidden]; an `If` on Equal(sr, 16000) picks the
    feature extractor (|STFT| as Conv1D, Hann window with hop n_fft/2 at 16 kHz, Hamming at
    8 kHz; both [1, bins, T]), then two Conv1D + ReLU (the second stride 2), an LSTM with the
    state in and out, a per-frame Linear + Sigmoid and the mean over frames.
    Outputs prob [1, 1], hn and cn [1, 1, hidden]. Opset 17."""
    b = GraphBuilder(seed)
    hop, bins = n_fft // 2, n_fft // 2 + 1
    frames = b.node("Reshape", ["audio", b.const(np.array([1, 1, samples], np.int64), "shape")])
    is_16k = b.node("Equal", ["sr", b.const(np.array(16000, np.int64), "sr16k")])
    hann = np.hanning(n_fft + 1)[:-1]
    hamming = np.hamming(n_fft + 1)[:-1]
    features = b.node(
        "If",
        [is_16k],
        then_branch=_stft_magnitude_branch(b, "stft16k", frames, hann, n_fft, hop),
        else_branch=_stft_magnitude_branch(b, "stft8k", frames, hamming, n_fft, hop),
    )
    x, cin = features, bins
    for stride in (1, 2):
        w = b.normal((channels, cin, 3), math.sqrt(2.0 / (cin * 3)))
        bias = b.normal((channels,), 0.1)
        conv = b.node("Conv", [x, w, bias], kernel_shape=[3], pads=[1, 1], strides=[stride])
        x, cin = b.node("Relu", [conv]), channels
    sequence = b.node("Transpose", [x], perm=[2, 0, 1])  # [T, 1, channels]
    scale = 1.0 / math.sqrt(hidden)
    lstm_w = b.normal((1, 4 * hidden, channels), scale)
    lstm_r = b.normal((1, 4 * hidden, hidden), scale)
    lstm_b = b.normal((1, 8 * hidden), 0.1)
    y = b.fresh("lstm")
    b.nodes.append(
        helper.make_node(
            "LSTM",
            [sequence, lstm_w, lstm_r, lstm_b, "", "h0", "c0"],
            [y, "hn", "cn"],
            name=y,
            hidden_size=hidden,
        )
    )
    per_frame = b.node("Relu", [b.node("Squeeze", [y, b.const(np.array([1], np.int64), "ax")])])
    projected = b.node("MatMul", [per_frame, b.normal((hidden, 1), scale)])
    logit = b.node("Add", [projected, b.normal((1,), 0.1)])
    prob = b.node("ReduceMean", [b.node("Sigmoid", [logit])], axes=[0], keepdims=0)  # [1, 1]
    b.nodes.append(helper.make_node("Identity", [prob], ["prob"], name="prob"))
    state = [_state_info(n, hidden) for n in ("h0", "c0")]
    inputs = [
        helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, samples]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        *state,
    ]
    outputs = [
        helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1]),
        *(_state_info(n, hidden) for n in ("hn", "cn")),
    ]
    return b.model("vad", inputs, outputs, 17)


def _state_info(name: str, hidden: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 1, hidden])


def crnn_model(
    seed: int = 0, height: int = 32, width: int = 64, classes: int = 37, hidden: int = 48
) -> onnx.ModelProto:
    """A CRNN text recognizer: input [1, 1, height, width]; three Conv + ReLU + MaxPool
    (2x2, then 2x1 twice: the width stays a sequence of width/2 steps), the width turned
    into a sequence by Transpose + Reshape ([T, 1, channels * height/8]), a bidirectional
    LSTM, its two directions concatenated per step (Transpose + Reshape) and a per-step
    classifier (MatMul + Add + LogSoftmax). Output logprobs [width/2, 1, classes]. Opset 17."""
    b = GraphBuilder(seed)
    x, cin = "input", 1
    for cout, pool in ((16, (2, 2)), (32, (2, 1)), (48, (2, 1))):
        w = b.normal((cout, cin, 3, 3), math.sqrt(2.0 / (cin * 9)))
        conv = b.node("Conv", [x, w, b.normal((cout,), 0.1)], kernel_shape=[3, 3], pads=[1] * 4)
        x = b.node("MaxPool", [b.node("Relu", [conv])], kernel_shape=list(pool), strides=list(pool))
        cin = cout
    steps, features = width // 2, cin * (height // 8)
    sequence = b.node("Transpose", [x], perm=[3, 0, 1, 2])  # [T, 1, channels, height/8]
    sequence = b.node("Reshape", [sequence, b.const(np.array([steps, 1, features], np.int64))])
    scale = 1.0 / math.sqrt(hidden)
    w = b.normal((2, 4 * hidden, features), scale)
    r = b.normal((2, 4 * hidden, hidden), scale)
    bias = b.normal((2, 8 * hidden), 0.1)
    y = b.node("LSTM", [sequence, w, r, bias], hidden_size=hidden, direction="bidirectional")
    y = b.node("Transpose", [y], perm=[0, 2, 1, 3])  # [T, 1, 2, hidden]
    y = b.node("Reshape", [y, b.const(np.array([steps, 1, 2 * hidden], np.int64))])
    logits = b.node("MatMul", [y, b.normal((2 * hidden, classes), 1.0 / math.sqrt(2 * hidden))])
    logits = b.node("Add", [logits, b.normal((classes,), 0.1)])
    b.nodes.append(helper.make_node("LogSoftmax", [logits], ["logprobs"], axis=2, name="out"))
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, height, width])
    out = helper.make_tensor_value_info("logprobs", TensorProto.FLOAT, [steps, 1, classes])
    return b.model("crnn", [image], [out], 17)


def greedy_decoder(vocab: int = 16, hidden: int = 8, seed: int = 1) -> onnx.ModelProto:
    """A greedy decoder driven by `Loop` with a run-time trip count (input steps, int64
    scalar): each step embeds the last token, updates a tanh hidden state and takes the
    argmax of the logits as the next token, every token a scan output. Inputs steps, bos
    [1] (int64), h0 [1, hidden]; outputs last, h and tokens [steps, 1]. Opset 17."""
    rng = np.random.default_rng(seed)
    weights = {
        "embed": rng.standard_normal((vocab, hidden)),
        "w_h": rng.standard_normal((hidden, hidden)) * 0.5,
        "w_out": rng.standard_normal((hidden, vocab)),
    }
    inits = [numpy_helper.from_array(w.astype(np.float32), n) for n, w in weights.items()]
    info = helper.make_tensor_value_info
    int64, boolean, flt = TensorProto.INT64, TensorProto.BOOL, TensorProto.FLOAT
    body = helper.make_graph(
        [
            helper.make_node("Gather", ["embed", "tok_in"], ["e"], axis=0),
            helper.make_node("MatMul", ["h_in", "w_h"], ["hh"]),
            helper.make_node("Add", ["e", "hh"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["h_out"]),
            helper.make_node("MatMul", ["h_out", "w_out"], ["logits"]),
            helper.make_node("ArgMax", ["logits"], ["tok_out"], axis=1, keepdims=0),
            helper.make_node("Identity", ["tok_out"], ["tok_scan"]),
            helper.make_node("Identity", ["c_in"], ["c_out"]),
        ],
        "decode_step",
        [
            info("i", int64, []),
            info("c_in", boolean, []),
            info("tok_in", int64, [1]),
            info("h_in", flt, [1, hidden]),
        ],
        [
            info("c_out", boolean, []),
            info("tok_out", int64, [1]),
            info("h_out", flt, [1, hidden]),
            info("tok_scan", int64, [1]),
        ],
    )
    loop = helper.make_node(
        "Loop", ["steps", "", "bos", "h0"], ["last", "h", "tokens"], body=body, name="decode"
    )
    inputs = [info("steps", int64, []), info("bos", int64, [1]), info("h0", flt, [1, hidden])]
    outputs = [info(n, e, None) for n, e in (("last", int64), ("h", flt), ("tokens", int64))]
    graph = helper.make_graph([loop], "greedy_decoder", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def recurrent_layer(
    kind: str, seq: int = 100, batch: int = 1, hidden: int = 128, seed: int = 0
) -> onnx.ModelProto:
    """One forward `kind` ("LSTM" or "GRU") layer, input size = hidden, with bias: input X
    [seq, batch, hidden], outputs Y [seq, 1, batch, hidden] and Y_h. Opset 17."""
    gates = {"LSTM": 4, "GRU": 3}[kind]
    b = GraphBuilder(seed)
    scale = 1.0 / math.sqrt(hidden)
    w = b.normal((1, gates * hidden, hidden), scale)
    r = b.normal((1, gates * hidden, hidden), scale)
    bias = b.normal((1, 2 * gates * hidden), 0.1)
    b.nodes.append(
        helper.make_node(
            kind, ["X", w, r, bias], ["Y", "Y_h"], name=kind.lower(), hidden_size=hidden
        )
    )
    info = helper.make_tensor_value_info
    inputs = [info("X", TensorProto.FLOAT, [seq, batch, hidden])]
    outputs = [
        info("Y", TensorProto.FLOAT, [seq, 1, batch, hidden]),
        info("Y_h", TensorProto.FLOAT, [1, batch, hidden]),
    ]
    return b.model(f"{kind.lower()}_layer", inputs, outputs, 17)
