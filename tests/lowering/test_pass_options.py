"""Pass options (passes/options.py): parsed from the pipeline text into the passes' fields,
checked with errors naming the pass and the option, unset = the compile target's value; the
IR they change is checked in pass-options.mlir, the numerics here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

import ember
from ember.core.context import make_context
from ember.core.target import named_target
from ember.passes.conversion.graph_to_kernel import ConvertGraphToKernel
from ember.passes.conversion.kernel_to_loops.lower import LowerKernelsToLoops
from ember.passes.pipeline import DEFAULT_PIPELINE, parse_passes, pipeline_text
from ember.runtime.errors import PassOptionError
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tools.model_zoo import quantize_static, recurrent_layer, resnet_block_model


def test_options_set_the_fields_and_print_back() -> None:
    spec = (
        "fold-constants{fold-limit-bytes=0},convert-graph-to-kernel{int8-isa=avx2},"
        "plan-memory{alignment=128 in-place=false},"
        "lower-kernels-to-loops{vector-width=8 vector-registers=16 threads=1}"
    )
    folding, converting, planning, lowering = parse_passes(spec)
    assert folding.fold_limit_bytes == 0  # type: ignore[attr-defined]
    assert converting.int8_isa == "avx2"  # type: ignore[attr-defined]
    assert (planning.alignment, planning.in_place) == (128, False)  # type: ignore[attr-defined]
    assert (lowering.vector_width, lowering.threads) == (8, 1)  # type: ignore[attr-defined]
    assert pipeline_text(parse_passes(spec)) == spec
    # Underscores are accepted too (xDSL's field names), printed with dashes.
    assert (
        pipeline_text(parse_passes("plan-memory{in_place=false}")) == "plan-memory{in-place=false}"
    )


def test_the_default_pipeline_sets_no_option() -> None:
    assert pipeline_text(parse_passes(DEFAULT_PIPELINE)) == DEFAULT_PIPELINE


@pytest.mark.parametrize(
    "spec, message",
    [
        ("lower-kernels-to-loops{vector-width=12}", "option vector-width=12 is invalid: it takes one of 8, 16"),
        ("lower-kernels-to-loops{vector-width=true}", "option vector-width=true is invalid"),
        ("convert-graph-to-kernel{vector-registers=8}", "option vector-registers=8 is invalid"),
        ("lower-kernels-to-loops{threads=0}", "option threads=0 is invalid: it takes an integer from 1"),
        ("lower-kernels-to-loops{threads=many}", "option threads=many is invalid: it takes a value of type int"),
        ("lower-kernels-to-loops{width=8}", "has no option width (its options: vector-width (int)"),
        ("plan-memory{alignment=8}", "option alignment=8 is invalid: it takes one of 64, 128"),
        ("plan-memory{in-place=3}", "option in-place=3 is invalid: it takes a value of type bool"),
        ("fold-constants{fold-limit-bytes=-1}", "option fold-limit-bytes=-1 is invalid"),
        ("convert-graph-to-kernel{int8-isa=sse}", "option int8-isa='sse' is invalid: it takes one of vnni512"),
    ],
)  # fmt: skip
def test_a_bad_option_names_the_pass_and_the_option(spec: str, message: str) -> None:
    pass_name = spec.split("{")[0]
    with pytest.raises(PassOptionError, match=f"pass '{pass_name}'") as error:
        parse_passes(f"canonicalize,{spec}")
    assert message in str(error.value)


def test_an_unset_option_takes_the_targets_value() -> None:
    ctx = make_context(target=named_target("x86-64-v4", threads=4))
    assert LowerKernelsToLoops().target(ctx) is ctx.target
    narrow = LowerKernelsToLoops(vector_width=8, threads=1).target(ctx)
    assert (narrow.vector_width, narrow.vector_registers, narrow.threads) == (8, 32, 1)
    assert narrow.cpu == "x86-64-v4"


@pytest.mark.parametrize("pass_", [LowerKernelsToLoops(), ConvertGraphToKernel()])
def test_target_passes_need_the_compile_context(pass_: ModulePass) -> None:
    from xdsl.context import Context

    with pytest.raises(TypeError, match=f"pass '{pass_.name}' needs an EmberContext"):
        pass_.apply(Context(), ModuleOp([]))


def test_an_int8_isa_the_target_cannot_run_is_refused() -> None:
    """AVX2 (x86-64-v3) has no vpdpbusd: asking for VNNI is refused before any packing."""
    ctx = make_context(target=named_target("x86-64-v3"))
    with pytest.raises(PassOptionError, match=r"int8-isa='vnni512' is invalid: .* runs int8 "):
        ConvertGraphToKernel(int8_isa="vnni512").apply(ctx, ModuleOp([]))
    ConvertGraphToKernel(int8_isa="avx2").apply(ctx, ModuleOp([]))


CONCAT = """
builtin.module {
  func.func @main(%x: tensor<1x16xf32>) -> tensor<1x32xf32> attributes {ember.input_names = ["x"], ember.output_names = ["y"]} {
    %a = graph.relu %x : tensor<1x16xf32> -> tensor<1x16xf32>
    %b = graph.neg %x : tensor<1x16xf32> -> tensor<1x16xf32>
    %c = graph.concat %a, %b {axis = 1 : i64} : tensor<1x16xf32>, tensor<1x16xf32> -> tensor<1x32xf32>
    %y = graph.relu %c : tensor<1x32xf32> -> tensor<1x32xf32>
    func.return %y : tensor<1x32xf32>
  }
}
"""


@pytest.mark.parametrize(
    "options, arena_bytes, concats",
    [
        ("", 128, 0),  # a and b written in place into the two halves of c: no concat
        ("{in-place=false}", 256, 1),  # a, b (64 bytes each), c (128) alive at once
        ("{in-place=false alignment=256}", 768, 1),  # each at its own 256 bytes
    ],
)
def test_plan_memory_options(options: str, arena_bytes: int, concats: int) -> None:
    from xdsl.parser import Parser

    from ember.passes.pipeline import build_pipeline
    from ember.passes.program import entry_function

    ctx = make_context()
    module = Parser(ctx, CONCAT).parse_module()
    build_pipeline(f"convert-graph-to-kernel,plan-memory{options}").apply(ctx, module)
    fn = entry_function(module)
    assert fn.attributes["ember.arena_bytes"].value.data == arena_bytes  # type: ignore[attr-defined]
    assert sum(op.name == "kernel.concat" for op in module.walk()) == concats


def _with_options(**options: str) -> str:
    """The default pipeline with `options` ({pass name: "{...}"}) on those passes."""
    return ",".join(f"{name}{options.get(name, '')}" for name in DEFAULT_PIPELINE.split(","))


def test_narrow_kernels_and_options_compute_the_same_values() -> None:
    """AVX2-shaped code on any x86-64 host (LLVM splits a wider vector, never the reverse):
    packed for 8 lanes and 16 registers, or packed for the target and lowered 8 lanes wide;
    with no folding, other alignments and no buffer sharing. Against onnxruntime, 1e-4."""
    model = resnet_block_model()
    x = np.random.default_rng(3).standard_normal((1, 3, 20, 20)).astype(np.float32)
    expected = onnxruntime_outputs(model, {"input": x})
    narrow = "{vector-width=8 vector-registers=16}"
    pipelines = [
        _with_options(
            **{
                "convert-graph-to-kernel": narrow,
                "lower-kernels-to-loops": "{vector-width=8 vector-registers=16 threads=1}",
                "plan-memory": "{in-place=false}",
            }
        ),
        _with_options(
            **{
                "fold-constants": "{fold-limit-bytes=0}",
                "plan-memory": "{alignment=256}",
                "lower-kernels-to-loops": "{vector-width=8}",
            }
        ),
    ]
    for pipeline in pipelines:
        compiled = ember.compile(model, pipeline=pipeline, input_shapes={"input": [1, 3, 20, 20]})
        (got,) = compiled(x)
        assert_close({"out": got}, {"out": next(iter(expected.values()))})


@pytest.mark.parametrize(
    "options",
    [
        {"convert-graph-to-kernel": "{vector-width=8}"},  # panels of 16 read 16 lanes wide
        {"lower-kernels-to-loops": "{vector-width=8}"},  # the target's panels, 8 lanes wide
    ],
)
def test_recurrent_weights_packed_for_another_width(options: dict[str, str]) -> None:
    """kernel.recurrent reads the panel width its weight was packed with (it required the
    lowering's own and refused the rest). A GRU of 40 units (a tail panel), batch 2."""
    model = recurrent_layer("GRU", seq=3, batch=2, hidden=40)
    x = np.random.default_rng(4).standard_normal((3, 2, 40)).astype(np.float32)
    expected = onnxruntime_outputs(model, {"X": x})
    got = ember.compile(model, pipeline=_with_options(**options))(x)
    assert_close(dict(zip(expected, got, strict=True)), expected)


def test_every_int8_isa_the_target_runs_computes_the_same_values() -> None:
    """`int8-isa` packs every int8 conv for each instruction set the host runs; integer
    accumulation is exact in each, so the outputs of the target's own and AVX2's are equal."""
    from ember.core.target import host_target
    from ember.dialects.weight_layouts import int8_isas_for
    from ember.frontend.onnx_importer import import_model
    from ember.passes.pipeline import run_graph_passes

    isas = int8_isas_for(host_target())
    model: onnx.ModelProto = quantize_static(
        resnet_block_model(), (1, 3, 20, 20), "QDQ", True, "QUInt8"
    )
    module, weights = import_model(model)
    run_graph_passes(module, make_context(weights))
    for isa in isas:  # each option packs every int8 conv for its instruction set
        converted = module.clone()
        ctx = make_context(weights.copy(), host_target())
        ConvertGraphToKernel(int8_isa=isa).apply(ctx, converted)
        layouts = {o.weight_layout.data for o in converted.walk() if o.name == "kernel.qconv2d"}
        assert layouts and all(f"_{isa}" in layout for layout in layouts), (isa, layouts)
    x = np.random.default_rng(5).standard_normal((1, 3, 20, 20)).astype(np.float32)
    # Run: the target's own (the default) and the narrowest, AVX2 (compile time: not all).
    run = sorted({isas[0], isas[-1]}, key=isas.index)
    outputs = [
        ember.compile(
            model, pipeline=_with_options(**{"convert-graph-to-kernel": f"{{int8-isa={isa}}}"})
        )(x)[0]
        for isa in run
    ]
    for isa, got in zip(run[1:], outputs[1:], strict=True):
        np.testing.assert_array_equal(got, outputs[0], err_msg=f"{isa} vs {run[0]}")
