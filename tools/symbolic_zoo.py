"""Models whose inputs have symbolic dims (dim_param), shared by the tests (pinning,
specialisation, dynamic shapes, serving) and the benchmarks; and helpers that make the static
builders of model_zoo.py symbolic."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def symbolic_model() -> onnx.ModelProto:
    """x [batch, seq] and y [batch, 6] share the named dim `batch`; `seq` is x's alone.

    out = Relu((ReduceSum(x, axis 1, keepdims) + y) @ W): [batch, 4].
    """
    rng = np.random.default_rng(0)
    weight = onnx.numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "w")
    axes = onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
        helper.make_node("Add", ["s", "y"], ["a"]),
        helper.make_node("MatMul", ["a", "w"], ["m"]),
        helper.make_node("Relu", ["m"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "symbolic",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
        [weight, axes],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def fixed_reshape_model() -> onnx.ModelProto:
    """x [N, 6] reshaped to a constant [4, 3]: only N = 2 fits (a batch baked in by export)."""
    shape = onnx.numpy_helper.from_array(np.array([4, 3], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "shape"], ["r"]),
            helper.make_node("Relu", ["r"], ["y"]),
        ],
        "fixed_reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])],
        [shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feeds(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((batch, seq)).astype(np.float32),
        "y": rng.standard_normal((batch, 6)).astype(np.float32),
    }


# -- the three models of issue 10, with the shape chains exporters write --------------------------


def _weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array((0.3 * rng.standard_normal(shape)).astype(np.float32), name)


def _ints(name: str, values: int | list[int]) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(np.array(values, np.int64), name)


def _stride2_backbone() -> list[onnx.NodeProto]:
    """x -> f1, f2: two 3x3 stride-2 convs (w1/b1, w2/b2) with Relu, padded: f1 is (H+1)//2
    high, f2 (H+3)//4 (the stem the detectors and the recognizer share)."""
    return [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["f1"]),
        helper.make_node("Conv", ["f1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["f2"]),
    ]  # fmt: skip


def _stride2_backbone_weights(rng: np.random.Generator) -> list[onnx.TensorProto]:
    """The detectors' backbone weights: 3 -> 8 -> 8 channels."""
    return [
        _weight(rng, "w1", 8, 3, 3, 3), _weight(rng, "b1", 8),
        _weight(rng, "w2", 8, 8, 3, 3), _weight(rng, "b2", 8),
    ]  # fmt: skip


def _score_map() -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1, None, None])


def _image_model(
    name: str,
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    outputs: list[onnx.ValueInfoProto],
) -> onnx.ModelProto:
    """An opset-17 model of `nodes` over the image input x [N, 3, H, W]."""
    image = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    graph = helper.make_graph(nodes, name, [image], outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def text_detector_model() -> onnx.ModelProto:
    """x [N, 3, H, W] -> score map [N, 1, ceil(H/2), ceil(W/2)]: two stride-2 convs, the deeper
    map upsampled by Resize to the shallower one's size (sizes from Shape -> Slice -> Concat),
    Concat of the two, a 1x1 conv and a Sigmoid head."""
    rng = np.random.default_rng(1)
    nodes = [
        *_stride2_backbone(),
        helper.make_node("Shape", ["f2"], ["f2_shape"]),
        helper.make_node("Slice", ["f2_shape", "zero", "two"], ["f2_nc"]),
        helper.make_node("Shape", ["f1"], ["f1_shape"]),
        helper.make_node("Slice", ["f1_shape", "two", "four"], ["f1_hw"]),
        helper.make_node("Concat", ["f2_nc", "f1_hw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["f2", "", "", "sizes"], ["up"], mode="nearest"),
        helper.make_node("Concat", ["f1", "up"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w3", "b3"], ["logits"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["logits"], ["score"]),
    ]  # fmt: skip
    initializers = [
        *_stride2_backbone_weights(rng),
        _weight(rng, "w3", 1, 16, 1, 1), _weight(rng, "b3", 1),
        _ints("zero", [0]), _ints("two", [2]), _ints("four", [4]),
    ]  # fmt: skip
    return _image_model("text_detector", nodes, initializers, [_score_map()])


def cropped_text_detector_model() -> onnx.ModelProto:
    """x [N, 3, H, W] -> score map [N, 1, ceil(H/2), ceil(W/2)], as text detectors that crop
    their upsampled maps write it: two stride-2 convs, the deeper map upsampled x2 by Resize
    (scales: nearest), cropped by Slice to the shallower map's size (ends from Shape), Concat
    of the two, a 1x1 conv and a Sigmoid head. Unlike `text_detector_model` (Resize to sizes
    read from a shape, at a ratio that is not a whole number for odd maps), its ops are the
    same at every shape: it compiles once."""
    rng = np.random.default_rng(4)
    nodes = [
        *_stride2_backbone(),
        helper.make_node("Resize", ["f2", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Shape", ["f1"], ["f1_shape"]),
        helper.make_node("Slice", ["f1_shape", "two", "four"], ["f1_hw"]),
        helper.make_node("Slice", ["up", "zeros2", "f1_hw", "axes23"], ["up_crop"]),
        helper.make_node("Concat", ["f1", "up_crop"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w3", "b3"], ["logits"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["logits"], ["score"]),
    ]  # fmt: skip
    initializers = [
        *_stride2_backbone_weights(rng),
        _weight(rng, "w3", 1, 16, 1, 1), _weight(rng, "b3", 1),
        onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        _ints("two", [2]), _ints("four", [4]), _ints("zeros2", [0, 0]), _ints("axes23", [2, 3]),
    ]  # fmt: skip
    return _image_model("cropped_text_detector", nodes, initializers, [_score_map()])


def upsampled_fpn_model() -> onnx.ModelProto:
    """x [N, 3, H, W] -> maps of a feature-pyramid top-down path as detectors (DBNet, FPN)
    write it: two stride-2 convs (a = (H+1)//2, b = (H+3)//4), the deeper map and its 1x1
    lateral conv each upsampled x2 by Resize (scales: nearest) and added (2b), a 3x3 conv over
    the sum (`score`, 2b x 2b after a Sigmoid), a 3x3 conv without padding over it (`valid`,
    2b - 2) and a 3x3 stride-2 conv back down (`down`, b): convolutions over sizes that are
    multiples of floors of the image's."""
    rng = np.random.default_rng(6)
    nodes = [
        *_stride2_backbone(),
        helper.make_node("Resize", ["f2", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Conv", ["f2", "wl", "bl"], ["lateral"], kernel_shape=[1, 1]),
        helper.make_node("Resize", ["lateral", "", "scales"], ["lateral_up"], mode="nearest"),
        helper.make_node("Add", ["up", "lateral_up"], ["merged"]),
        helper.make_node("Conv", ["merged", "w3", "b3"], ["smooth"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["smooth"], ["score"]),
        helper.make_node("Conv", ["merged", "w4", "b4"], ["valid"], kernel_shape=[3, 3]),
        helper.make_node("Conv", ["merged", "w5", "b5"], ["down"], kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
    ]  # fmt: skip
    initializers = [
        *_stride2_backbone_weights(rng),
        _weight(rng, "wl", 8, 8, 1, 1), _weight(rng, "bl", 8),
        _weight(rng, "w3", 1, 8, 3, 3), _weight(rng, "b3", 1),
        _weight(rng, "w4", 4, 8, 3, 3), _weight(rng, "b4", 4),
        _weight(rng, "w5", 8, 8, 3, 3), _weight(rng, "b5", 8),
        onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
    ]  # fmt: skip
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", channels, None, None])
        for name, channels in (("score", 1), ("valid", 4), ("down", 8))
    ]
    return _image_model("upsampled_fpn", nodes, initializers, outputs)


HIDDEN, HEADS, VOCAB = 16, 2, 50


def _dim(node_name: str, shape: str, axis: int, out: str) -> list[onnx.NodeProto]:
    """Shape -> Gather(axis) -> Unsqueeze, as exporters write a dim into a Reshape target."""
    return [
        helper.make_node("Gather", [shape, f"axis{axis}"], [f"{node_name}_g"], axis=0),
        helper.make_node("Unsqueeze", [f"{node_name}_g", "axes0"], [out]),
    ]


def bert_encoder_model(
    layers: int = 1, hidden: int = HIDDEN, heads: int = HEADS, vocab: int = VOCAB
) -> onnx.ModelProto:
    """input_ids, attention_mask [batch, seq] (int64) -> hidden_out [batch, seq, hidden]:
    embeddings (positions from Range over the sequence length, up to 512), `layers`
    self-attention layers whose Reshape targets are Shape -> Gather -> Unsqueeze -> Concat
    chains, the mask added as -10000 where 0, LayerNormalization after each."""
    rng = np.random.default_rng(2)
    head = hidden // heads
    nodes = [
        helper.make_node("Gather", ["word_emb", "input_ids"], ["words"]),
        helper.make_node("Shape", ["input_ids"], ["ids_shape"]),
        *_dim("seq", "ids_shape", 1, "seq_1d"),
        *_dim("batch", "ids_shape", 0, "batch_1d"),
        helper.make_node("Squeeze", ["seq_1d", "axes0"], ["seq_len"]),
        helper.make_node("Range", ["start0", "seq_len", "step1"], ["positions"]),
        helper.make_node("Gather", ["pos_emb", "positions"], ["pos"]),
        helper.make_node("Add", ["words", "pos"], ["x0"]),
        # attention mask: (1 - mask) * -10000, as [batch, 1, 1, seq]
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one_f", "mask_f"], ["inv_mask"]),
        helper.make_node("Mul", ["inv_mask", "neg_big"], ["mask_add2d"]),
        helper.make_node("Unsqueeze", ["mask_add2d", "axes12"], ["mask_add"]),
        helper.make_node("Concat", ["batch_1d", "seq_1d", "heads", "head_dim"], ["split_shape"],
                         axis=0),
        helper.make_node("Concat", ["batch_1d", "seq_1d", "hidden"], ["merge_shape"], axis=0),
    ]  # fmt: skip
    initializers = [
        _weight(rng, "word_emb", vocab, hidden), _weight(rng, "pos_emb", 512, hidden),
        _ints("axis0", 0), _ints("axis1", 1), _ints("axes0", [0]), _ints("axes12", [1, 2]),
        _ints("start0", 0), _ints("step1", 1),
        _ints("heads", [heads]), _ints("head_dim", [head]), _ints("hidden", [hidden]),
        onnx.numpy_helper.from_array(np.array(1.0, np.float32), "one_f"),
        onnx.numpy_helper.from_array(np.array(-10000.0, np.float32), "neg_big"),
        onnx.numpy_helper.from_array(np.array(np.sqrt(head), np.float32), "scale"),
    ]  # fmt: skip
    for layer in range(layers):
        x, p = f"x{layer}", f"l{layer}_"
        for name in ("q", "k", "v"):
            nodes += [
                helper.make_node("MatMul", [x, f"{p}w{name}"], [f"{p}{name}_lin"]),
                helper.make_node("Add", [f"{p}{name}_lin", f"{p}b{name}"], [f"{p}{name}_flat"]),
                helper.make_node("Reshape", [f"{p}{name}_flat", "split_shape"],
                                 [f"{p}{name}_split"]),
            ]  # fmt: skip
        nodes += [
            helper.make_node("Transpose", [f"{p}q_split"], [f"{p}q_h"], perm=[0, 2, 1, 3]),
            helper.make_node("Transpose", [f"{p}k_split"], [f"{p}k_t"], perm=[0, 2, 3, 1]),
            helper.make_node("Transpose", [f"{p}v_split"], [f"{p}v_h"], perm=[0, 2, 1, 3]),
            helper.make_node("MatMul", [f"{p}q_h", f"{p}k_t"], [f"{p}scores_raw"]),
            helper.make_node("Div", [f"{p}scores_raw", "scale"], [f"{p}scores_scaled"]),
            helper.make_node("Add", [f"{p}scores_scaled", "mask_add"], [f"{p}scores"]),
            helper.make_node("Softmax", [f"{p}scores"], [f"{p}probs"], axis=-1),
            helper.make_node("MatMul", [f"{p}probs", f"{p}v_h"], [f"{p}context_h"]),
            helper.make_node("Transpose", [f"{p}context_h"], [f"{p}context_t"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [f"{p}context_t", "merge_shape"], [f"{p}context"]),
            helper.make_node("MatMul", [f"{p}context", f"{p}wo"], [f"{p}attn"]),
            helper.make_node("Add", [f"{p}attn", x], [f"{p}residual"]),
            helper.make_node("LayerNormalization", [f"{p}residual", f"{p}gamma", f"{p}beta"],
                             ["hidden_out" if layer == layers - 1 else f"x{layer + 1}"],
                             axis=-1, epsilon=1e-5),
        ]  # fmt: skip
        initializers += [
            *(_weight(rng, f"{p}w{n}", hidden, hidden) for n in "qkvo"),
            *(_weight(rng, f"{p}b{n}", hidden) for n in "qkv"),
            _weight(rng, f"{p}gamma", hidden), _weight(rng, f"{p}beta", hidden),
        ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "bert_encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("hidden_out", TensorProto.FLOAT, ["batch", "seq", hidden])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def recognizer_model() -> onnx.ModelProto:
    """x [N, 1, 32, W] -> logits [N, ceil(W/4), 10]: two stride-2 convs, the [N, C, H, W']
    map reshaped to [N, C*H, W'] (target Concat(Shape[0], C*H, Shape[3])), transposed to a
    sequence [N, W', C*H], a MatMul classifier."""
    rng = np.random.default_rng(3)
    nodes = [
        *_stride2_backbone(),
        helper.make_node("Shape", ["f2"], ["f2_shape"]),
        *_dim("n", "f2_shape", 0, "n_1d"),
        *_dim("w", "f2_shape", 3, "w_1d"),
        helper.make_node("Concat", ["n_1d", "features", "w_1d"], ["seq_shape"], axis=0),
        helper.make_node("Reshape", ["f2", "seq_shape"], ["columns"]),
        helper.make_node("Transpose", ["columns"], ["sequence"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["sequence", "wc"], ["scores"]),
        helper.make_node("Add", ["scores", "bc"], ["logits"]),
    ]  # fmt: skip
    initializers = [
        _weight(rng, "w1", 4, 1, 3, 3), _weight(rng, "b1", 4),
        _weight(rng, "w2", 8, 4, 3, 3), _weight(rng, "b2", 8),
        _weight(rng, "wc", 64, 10), _weight(rng, "bc", 10),
        _ints("axis0", 0), _ints("axis3", 3), _ints("axes0", [0]), _ints("features", [64]),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "recognizer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 32, "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", None, 10])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def masked_bert_feeds(batch: int, seq: int, seed: int, vocab: int = 100) -> dict[str, np.ndarray]:
    """Seeded ids and an attention mask (about a quarter masked, the first token never) for
    `bert_with_symbolic_shapes(bert_encoder(..., attention_mask=True))`."""
    rng = np.random.default_rng(seed)
    mask = (rng.random((batch, seq)) > 0.25).astype(np.int64)
    mask[:, 0] = 1  # every row attends to something
    return {
        "input_ids": rng.integers(0, vocab, (batch, seq)).astype(np.int64),
        "attention_mask": mask,
    }


def with_symbolic_batch(model: onnx.ModelProto, name: str = "batch") -> onnx.ModelProto:
    """A copy of `model` whose inputs and outputs declare axis 0 as the symbolic dim `name`
    (for builders that write a batch of 1, when the graph itself takes any batch)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for info in (*copy.graph.input, *copy.graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = name
    return copy


def bert_with_symbolic_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model_zoo.bert_encoder`'s graph with `input_ids` [batch, seq] (and `token_type_ids`,
    `attention_mask` when it has them): the position table is sliced to the input's length,
    and the one Reshape to a constant [1, seq, hidden] keeps axis 0 (0) and infers the length
    (-1). Sequences up to the built `seq` are valid."""
    copy = with_symbolic_batch(model)
    graph = copy.graph
    for info in graph.input:  # every input is [batch, seq]
        info.type.tensor_type.shape.dim[1].dim_param = "seq"
    graph.output[0].type.tensor_type.shape.dim[1].dim_param = "seq"
    position = next(t.name for t in graph.initializer if t.name.startswith("position_embeddings"))
    sliced = position + "_sliced"
    extra = [
        numpy_helper.from_array(np.array([1], np.int64), "seq_axis_start"),
        numpy_helper.from_array(np.array([2], np.int64), "seq_axis_end"),
        numpy_helper.from_array(np.array([0], np.int64), "seq_zero"),
        numpy_helper.from_array(np.array([1], np.int64), "seq_axis"),
    ]
    slicing = [
        helper.make_node("Shape", ["input_ids"], ["ids_shape"]),
        helper.make_node("Slice", ["ids_shape", "seq_axis_start", "seq_axis_end"], ["ids_seq"]),
        helper.make_node("Slice", [position, "seq_zero", "ids_seq", "seq_axis"], [sliced]),
    ]
    for node in graph.node:
        node.input[:] = [sliced if name == position else name for name in node.input]
    for tensor in graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.int64 and array.ndim == 1 and len(array) == 3 and array[0] == 1:
            tensor.CopyFrom(
                numpy_helper.from_array(np.array([0, -1, array[2]], np.int64), tensor.name)
            )
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(slicing + nodes)
    graph.initializer.extend(extra)
    onnx.checker.check_model(copy)
    return copy


def ffn_block_model(
    hidden: int = 40,
    inner: int = 72,
    tail: list[onnx.NodeProto] | None = None,
    out_dims: list[int | str] | None = None,
) -> onnx.ModelProto:
    """A transformer FFN block on x [batch, seq, hidden]: LayerNorm(x + (gelu(x @ W1 + b1)
    @ W2 + b2)), then a softmax over the hidden axis: every op has a kernel with run-time
    sizes (compiled once, engine/compile_once.py). `tail` nodes read `y` and write `out`
    (declared `out_dims`)."""
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int, scale: float = 0.2) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    initializers = [
        weight("w1", hidden, inner),
        weight("b1", inner),
        weight("w2", inner, hidden, scale=0.2 * (72 / inner) ** 0.5),
        weight("b2", hidden),
        weight("gamma", hidden, scale=1.0),
        weight("beta", hidden),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Gelu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["h4"]),
        helper.make_node("Add", ["h4", "x"], ["r"]),
        helper.make_node("LayerNormalization", ["r", "gamma", "beta"], ["n"], axis=-1),
        helper.make_node("Softmax", ["n"], ["y" if tail else "out"], axis=-1),
        *(tail or []),
    ]
    graph = helper.make_graph(
        nodes,
        "ffn_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden])],
        [
            helper.make_tensor_value_info(
                "out", TensorProto.FLOAT, out_dims or ["batch", "seq", hidden]
            )
        ],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def resnet50_symbolic_batch() -> onnx.ModelProto:
    """The onnx wheel's ResNet-50 light model with a symbolic batch `N` (the Reshape before
    the classifier had the batch baked in as 1: its target becomes [-1, 2048])."""
    from ember.tools.model_zoo import light_model_path

    model = onnx.load(light_model_path("resnet50"))
    initializers = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in initializers:
            target = onnx.numpy_helper.to_array(initializers[node.input[1]]).copy()
            if target[0] == 1:
                target[0] = -1
                initializers[node.input[1]].CopyFrom(
                    onnx.numpy_helper.from_array(target, node.input[1])
                )
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[0].dim_param = "N"
    return model


def resnet50_symbolic_image(stem_pool: bool = True) -> onnx.ModelProto:
    """`resnet50_symbolic_batch` with symbolic H and W too: its final AveragePool 7x7 (which
    fits 224 images only) a GlobalAveragePool; without `stem_pool`, the stem's MaxPool
    removed (to compare the rest of the network without the NCHW pool)."""
    model = resnet50_symbolic_batch()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    for node in model.graph.node:
        if node.op_type == "AveragePool":
            node.op_type = "GlobalAveragePool"
            del node.attribute[:]
    if not stem_pool:
        pool = next(n for n in model.graph.node if n.op_type == "MaxPool")
        for node in model.graph.node:
            node.input[:] = [pool.input[0] if x == pool.output[0] else x for x in node.input]
        model.graph.node.remove(pool)
    return model
