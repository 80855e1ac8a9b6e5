"""int8 vs fp32: ember on a model quantized by onnxruntime's quantize_static (QDQ, per-channel
int8 weights, uint8 activations, after quant_pre_process) or by `ember quantize`
(--quantizer ember: the same form, minmax ranges from 8 seeded batches) against ember fp32 on
the float model and onnxruntime running the same QDQ model, in one process, the engines
alternating run by run.

    python benchmarks/int8.py --models bottleneck resnet50 --threads 1 --runs 20
    python benchmarks/int8.py --models inverted_residual --quantizer ember --runs 20

Prints the host's int8 instruction set (vpdpbusd on AVX-512 VNNI, else AVX2), how many convs
run as integer kernels, the minimum and median latency over --runs runs after --warmup (CPU
time of the process at 1 thread, wall time at more; ratios from the minimum) and the max
difference of ember's int8 output from onnxruntime's.
Not a test: numbers depend on the machine (and on its other load: take several runs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ember  # noqa: E402
from ember.core.target import Target, host_target, named_target  # noqa: E402
from ember.dialects.weight_layouts import int8_isa  # noqa: E402
from ember.engine.feeds import seeded_inputs  # noqa: E402
from ember.engine.quantize import target_has_vnni  # noqa: E402
from ember.tools.bench import alternating_ms, onnxruntime_session  # noqa: E402
from ember.tools.model_zoo import (  # noqa: E402
    GraphBuilder,
    bert_encoder,
    graph_op_counts,
    inverted_residual_model,
    light_model_path,
    mobilenet_v2,
    quantize_static,
    resnet_block_model,
)


def bottleneck_model(seed: int = 0) -> onnx.ModelProto:
    """Two ResNet-50 bottleneck blocks of its first stage on a 56x56 input (1x1 64, 3x3 64,
    1x1 256, projection shortcut on the first), seeded weights, BatchNorm after every conv."""
    b = GraphBuilder(seed)
    x, cin = "input", 64
    for block in range(2):
        y = b.node("Relu", [b.conv_bn(x, cin, 64, 1)])
        y = b.node("Relu", [b.conv_bn(y, 64, 64, 3)])
        y = b.conv_bn(y, 64, 256, 1)
        shortcut = b.conv_bn(x, cin, 256, 1) if block == 0 else x
        x, cin = b.node("Relu", [b.node("Add", [y, shortcut])]), 256
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 64, 56, 56])
    out = helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 256, 56, 56])
    return b.model("bottleneck", [image], [out], 17)


def with_seeded_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A light model with each ConstantOfShape weight fill replaced by a seeded initializer
    (He-scaled conv and fc weights, positive BatchNorm scales and variances): quantization
    needs weights as initializers, and constant fills would make every channel alike."""
    rng = np.random.default_rng(seed)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    kept = []
    for node in g.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits:
            kept.append(node)
            continue
        shape = tuple(int(d) for d in inits[node.input[0]])
        name = node.output[0]
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            array = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif "riv" in name or "_s_" in name:
            array = rng.uniform(0.5, 1.5, shape)
        else:
            array = rng.normal(0.0, 0.1, shape)
        g.initializer.append(onnx.numpy_helper.from_array(array.astype(np.float32), name))
    del g.node[:]
    g.node.extend(kept)
    used = {i for node in g.node for i in node.input}
    initializers = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(initializers)
    names = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in names and i.name in used]
    del g.input[:]
    g.input.extend(inputs)
    model.ir_version = max(model.ir_version, 4)  # initializers need not be inputs
    # Per-channel DequantizeLinear (its `axis`) needs opset 13.
    return onnx.version_converter.convert_version(model, 13)


MODELS: dict[str, tuple[Callable[[], onnx.ModelProto], tuple[int, ...]]] = {
    "resnet_block": (resnet_block_model, (1, 3, 20, 20)),
    "bottleneck": (bottleneck_model, (1, 64, 56, 56)),
    # MobileNetV2's inverted residual blocks at 56x56 (1x1 expand, 3x3/5x5 depthwise, 1x1
    # project): the depthwise convs' integer kernel.
    "inverted_residual": (inverted_residual_model, (1, 24, 56, 56)),
    "mobilenet_v2": (mobilenet_v2, (1, 3, 224, 224)),
    "resnet50": (
        lambda: with_seeded_weights(onnx.load(light_model_path("resnet50"))),
        (1, 3, 224, 224),
    ),
    # Dynamic quantization (DynamicQuantizeLinear + MatMulInteger, as quantize_dynamic writes
    # it): a BERT-base-size encoder at sequence 128, and a 4-layer hidden-256 one.
    "bert_base": (
        lambda: bert_encoder(
            layers=12,
            seq=128,
            hidden=768,
            heads=12,
            vocab=30522,
            token_types=2,
            attention_mask=True,
            layer_norm="op",
        ),
        (1, 128),
    ),  # fmt: skip
    "bert_small": (
        lambda: bert_encoder(layers=4, seq=128, hidden=256, heads=4, vocab=1000),
        (1, 128),
    ),
}
DYNAMIC = {"bert_base", "bert_small"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--cpu",
        help="compile ember for this LLVM cpu instead of the host (x86-64-v3: the AVX2 path)",
    )
    parser.add_argument(
        "--quantizer",
        choices=["onnxruntime", "ember"],
        default="onnxruntime",
        help="which tool writes the QDQ model (both engines run the same one)",
    )
    parser.add_argument(
        "--reduce-range",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="quantize weights to 7 bits (one vpmaddubsw per product on the AVX2 path); "
        "default: as `ember quantize`, 7 bits when the target cpu has no VNNI",
    )
    args = parser.parse_args()
    cpu = args.cpu or "host"
    reduce_range = not target_has_vnni(cpu) if args.reduce_range is None else args.reduce_range

    def target(threads: int) -> Target:
        return named_target(args.cpu, threads) if args.cpu else host_target(threads)

    print(
        f"int8 kernels: {int8_isa(target(1)).name}, cpu {target(1).cpu}, "
        f"{7 if reduce_range else 8}-bit weights"
    )
    for name in args.models:
        make, shape = MODELS[name]
        model = make()
        input_name = model.graph.input[0].name
        if name in DYNAMIC:  # both engines run the model ember's quantize_dynamic writes
            quantized = ember.quantize(model, dynamic=True, reduce_range=reduce_range)
        elif args.quantizer == "ember":
            rng = np.random.default_rng(1)
            batches = [
                {input_name: rng.standard_normal(shape).astype(np.float32)} for _ in range(8)
            ]
            quantized = ember.quantize(model, calibration=batches, reduce_range=reduce_range)
        else:
            quantized = quantize_static(
                model, shape, "QDQ", True, "QUInt8", input_name, reduce_range
            )
        if name in DYNAMIC:
            feeds = seeded_inputs(model, 0)
        else:
            feeds = {input_name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        print(f"{name}: {graph_op_counts(quantized)['graph.qconv']} integer convs")
        for threads in args.threads:
            fp32 = ember.compile(model, threads=threads, target=target(threads))
            int8 = ember.compile(quantized, threads=threads, target=target(threads))
            ort_int8 = onnxruntime_session(quantized, threads)
            ort_fp32 = onnxruntime_session(model, threads)
            got = int8.run(feeds)[int8.output_names[0]]
            expected = ort_int8.run(None, feeds)[0]
            runners = {
                "ember fp32": partial(fp32.run, feeds),
                "ember int8": partial(int8.run, feeds),
                "onnxruntime int8": partial(ort_int8.run, None, feeds),
                "onnxruntime fp32": partial(ort_fp32.run, None, feeds),
            }
            samples = alternating_ms(runners, args.runs, args.warmup, threads)
            times = {k: min(v) for k, v in samples.items()}
            line = ", ".join(
                f"{k} {min(v):.2f} (median {statistics.median(v):.2f}) ms"
                for k, v in samples.items()
            )
            speedup = times["ember fp32"] / times["ember int8"]
            vs_ort = times["ember int8"] / times["onnxruntime int8"]
            diff = float(np.abs(got - expected).max())
            print(
                f"  {threads} thread(s): {line}; int8 speedup {speedup:.2f}x, "
                f"ember/onnxruntime int8 {vs_ort:.2f}; max |int8 - onnxruntime int8| {diff:.4g}"
            )


if __name__ == "__main__":
    main()
