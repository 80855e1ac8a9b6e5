"""Conv chains that take the channel-lanes conv, through ember.compile, against onnxruntime.

Seeded random weights (constant fills would hide a channel mix-up), odd channel counts and
widths, stride 2, dilation, asymmetric padding, a fused residual and a 1x1 conv at a 7x7
output, at 1 and 2 threads. Tolerance: max abs error <= 1e-4 x max |reference|.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.core.target import host_target, named_target
from ember.dialects.weight_layouts import conv_lanes_blocking
from ember.tests.oracle import assert_close, onnxruntime_outputs, random_inputs

REL_TOL = 1e-4

# (name, input, Cout, kernel, strides, pads, dilations, output HxW)
CONVS = [
    ("c1", "input", 48, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (15, 13)),
    ("c2", "r1", 48, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (15, 13)),  # + residual
    ("c3", "r2", 67, (3, 3), (2, 2), (0, 1, 2, 0), (1, 1), (8, 7)),  # stride 2, odd pads
    ("c4", "r3", 260, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), (8, 7)),  # dilation
    ("c5", "r4", 50, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), (8, 7)),  # 1x1, N = 56
]


def conv_chain(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    channels = {"input": 37}

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    for name, source, cout, ks, strides, pads, dilations, _ in CONVS:
        cin = channels[source]
        std = np.sqrt(2.0 / (cin * ks[0] * ks[1]))
        w = const(f"{name}_w", rng.normal(0, std, (cout, cin, *ks)))
        b = const(f"{name}_b", rng.normal(0, 0.1, cout))
        nodes.append(
            helper.make_node(
                "Conv",
                [source, w, b],
                [name],
                kernel_shape=list(ks),
                strides=list(strides),
                pads=list(pads),
                dilations=list(dilations),
            )
        )
        out = name
        if name == "c2":
            nodes.append(helper.make_node("Add", [name, "r1"], ["c2_sum"]))
            out = "c2_sum"
        relu = "r" + name[1:]
        nodes.append(helper.make_node("Relu", [out], [relu]))
        channels[relu] = cout
    graph = helper.make_graph(
        nodes,
        "conv_lanes_chain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 37, 15, 13])],
        [helper.make_tensor_value_info("r5", TensorProto.FLOAT, [1, 50, 8, 7])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_chain_takes_the_channel_lanes_conv() -> None:
    """The chain exercises what it claims to: every conv is a channel-lanes conv here."""
    channels = {"input": 37, "r1": 48, "r2": 48, "r3": 67, "r4": 260}
    for _, source, cout, ks, strides, _, _, out_hw in CONVS:
        blocking = conv_lanes_blocking(
            channels[source], cout, 1, out_hw, ks, strides, host_target()
        )
        assert blocking is not None


@pytest.mark.parametrize("threads", [1, 2])
def test_conv_lanes_chain_matches_onnxruntime(threads: int) -> None:
    model = conv_chain()
    compiled = ember.compile(model, threads=threads)
    feeds = random_inputs(model, seed=1)
    assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)


def test_conv_lanes_chain_on_avx2_matches_onnxruntime() -> None:
    """The AVX2 build (8 lanes, 16 registers: 6-column tiles) runs on AVX-512 hosts too."""
    model = conv_chain(seed=2)
    compiled = ember.compile(model, target=named_target("x86-64-v3", threads=2), threads=2)
    feeds = random_inputs(model, seed=3)
    assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)


def test_conv_lanes_chain_stays_in_bounds() -> None:
    """checks=True bounds-checks every load and store: the edge tiles' skipped taps and the
    kernel rows outside the input never touch memory outside a buffer."""
    model = conv_chain(seed=4)
    compiled = ember.compile(model, threads=2, checks=True)
    feeds = random_inputs(model, seed=5)
    assert_close(compiled.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)
