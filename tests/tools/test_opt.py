"""`ember opt`, flag by flag, on small seeded models from tools/model_zoo.py.

Most tests stop at the graph or kernel stage (no JIT) to stay fast; the numerical tools
(bisect, intermediates) JIT a five-conv model a few times. Numerical tolerance: the tool's own
default, max |err| <= 1e-3 x max |ref|.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType, f32
from xdsl.passes import ModulePass

from ember.core.context import make_context
from ember.core.target import host_target
from ember.dialects import graph
from ember.passes.pipeline import DEFAULT_PIPELINE, KERNEL_STAGE, available_passes
from ember.tools import model_zoo as models
from ember.tools.opt import main
from ember.tools.opt_bisect import MANDATORY_PASSES, cut_pipeline
from ember.tools.opt_ir import load_weights, parse_ir

# -- test-only passes ------------------------------------------------------------------------------


class FlipRelu(ModulePass):
    """Test-only miscompile: replaces every graph.relu by graph.identity."""

    name = "flip-relu"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for relu in [o for o in op.walk() if isinstance(o, graph.ReluOp)]:
            identity = graph.IdentityOp(relu.input)
            block = relu.parent_block()
            assert block is not None
            block.insert_op_before(identity, relu)
            relu.output.replace_all_uses_with(identity.output)
            block.erase_op(relu)


class RaiseOnResidual(ModulePass):
    """Test-only crash: raises once a graph.conv carries a residual."""

    name = "raise-on-residual"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for o in op.walk():
            if isinstance(o, graph.ConvOp) and o.residual is not None:
                raise RuntimeError("cannot handle a residual conv")


class BreakShapes(ModulePass):
    """Test-only: adds a graph.relu whose result shape differs from its input (invalid IR)."""

    name = "break-shapes"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        relu = next(o for o in op.walk() if isinstance(o, graph.ReluOp))
        bad = graph.ReluOp.build(operands=[relu.input], result_types=[TensorType(f32, [1])])
        block = relu.parent_block()
        assert block is not None
        block.insert_op_after(bad, relu)


@dataclass(frozen=True)
class Tagged(ModulePass):
    """Test-only pass with an option; does nothing."""

    name = "tagged"
    count: int = 1

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        return None


EXTRA = [FlipRelu, RaiseOnResidual, BreakShapes, Tagged]
GRAPH_PASSES = DEFAULT_PIPELINE.split(",convert-graph-to-kernel")[0]


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """Three conv+BN (ReLU, residual add) and a Gemm classifier: every graph pass has work."""
    b = models.GraphBuilder(seed)
    x = b.node("Relu", [b.conv_bn("input", 3, 8, 3)])
    y = b.node("Relu", [b.conv_bn(x, 8, 8, 3)])
    x = b.node("Relu", [b.node("Add", [b.conv_bn(y, 8, 8, 3), x])])
    logits = b.classifier(x, 8, 10)
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])
    out = helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, 10])
    return b.model("small_cnn", [image], [out], 17)


@pytest.fixture(scope="module")
def small_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "small.onnx"
    onnx.save(small_cnn(), path)
    return path


@pytest.fixture(scope="module")
def resnet_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "resnet18.onnx"
    onnx.save(models.resnet18(seed=0, image_size=32, classes=10), path)
    return path


@pytest.fixture(scope="module")
def mobilenet_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "mobilenet_v2.onnx"
    onnx.save(models.mobilenet_v2(seed=0, image_size=32, width=0.35, classes=10), path)
    return path


def opt(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv], extra_passes=EXTRA)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def banners(text: str, kind: str) -> list[str]:
    return re.findall(rf"// -----// IR Dump {kind} (\S+) \(\d+/\d+\)", text)


# -- pipelines -------------------------------------------------------------------------------------


def test_list_passes_shows_each_docstring_first_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = opt(capsys, "--list-passes")
    assert code == 0
    for name, factory in [*available_passes().items(), ("tagged", lambda: Tagged)]:
        first_line = (factory().__doc__ or "").strip().splitlines()[0]
        signature = rf"{re.escape(name)}(\{{[^}}]*\}})?"  # options are space-separated
        assert re.search(rf"^\s+{signature}\s+{re.escape(first_line)}", out, re.M), name
    assert "tagged{count=1}" in out
    assert "plan-memory" in out and "[mandatory lowering]" in out


def test_print_pipeline_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    code, printed, _ = opt(capsys, "--print-pipeline")
    assert code == 0 and printed.strip() == DEFAULT_PIPELINE
    edited = printed.strip().replace("dce,", "tagged{count=3},dce,")
    code, again, _ = opt(capsys, "--print-pipeline", "--pipeline", edited)
    assert code == 0 and again.strip() == edited


def test_print_pipeline_shows_the_options_set(capsys: pytest.CaptureFixture[str]) -> None:
    """Options set to other than their defaults print (dashed, as they are written); options
    left at their default, and the passes without options, print as bare names."""
    edited = DEFAULT_PIPELINE.replace(
        "lower-kernels-to-loops", "lower-kernels-to-loops{vector_width=8 threads=1}"
    ).replace("plan-memory", "plan-memory{in-place=true alignment=128}")
    code, printed, _ = opt(capsys, "--print-pipeline", "--pipeline", edited)
    assert code == 0
    assert printed.strip() == DEFAULT_PIPELINE.replace(
        "lower-kernels-to-loops", "lower-kernels-to-loops{vector-width=8 threads=1}"
    ).replace("plan-memory", "plan-memory{alignment=128}")


def test_a_bad_pass_option_is_a_usage_error_naming_pass_and_option(
    capsys: pytest.CaptureFixture[str], small_path: Path
) -> None:
    code, out, err = opt(
        capsys, small_path, "--pipeline", f"{KERNEL_STAGE},lower-kernels-to-loops{{vector-width=5}}"
    )
    assert code == 2 and out == ""
    assert "pass 'lower-kernels-to-loops': option vector-width=5 is invalid" in err
    assert "it takes one of 8, 16" in err
    # What the target must support is checked before any pass runs (no reproducer).
    isa = "canonicalize,convert-graph-to-kernel{int8-isa=vnni512}"
    code, out, err = opt(capsys, small_path, "--target-cpu", "x86-64-v3", "--pipeline", isa)
    assert code == 2 and out == "" and "reproducer" not in err
    assert "option int8-isa='vnni512' is invalid: the target (x86-64-v3) runs int8" in err


def test_unknown_pass_and_bad_flags_are_usage_errors(
    capsys: pytest.CaptureFixture[str], small_path: Path
) -> None:
    code, _, err = opt(capsys, small_path, "--pipeline", "canonicalize,no-such-pass")
    assert code == 2 and "no-such-pass" in err and "--list-passes" in err
    code, _, err = opt(
        capsys, small_path, "--pipeline", "dce", "--print-ir-after", "fold-batchnorm"
    )
    assert code == 2 and "--print-ir-after: no pass fold-batchnorm" in err
    code, _, err = opt(capsys, small_path.with_name("missing.onnx"))
    assert code == 2 and "missing.onnx" in err


# -- stages and round trips ------------------------------------------------------------------------


def test_emit_stages(capsys: pytest.CaptureFixture[str], mobilenet_path: Path) -> None:
    code, graph_ir, _ = opt(capsys, mobilenet_path, "--emit", "graph")
    assert code == 0 and "graph.conv" in graph_ir and "kernel." not in graph_ir
    assert "graph.batch_norm" not in graph_ir  # the graph stage ran
    code, kernel_ir, _ = opt(capsys, mobilenet_path, "--emit", "kernel")
    assert code == 0 and "kernel.conv2d" in kernel_ir and "graph." not in kernel_ir
    assert "ember.arena_bytes" in kernel_ir  # plan-memory is part of the kernel stage
    assert "scf.for" not in kernel_ir


def test_emit_loops_llvm_asm(capsys: pytest.CaptureFixture[str], small_path: Path) -> None:
    code, loops_ir, _ = opt(capsys, small_path, "--emit", "loops")
    assert code == 0 and "scf.for" in loops_ir and "kernel." not in loops_ir
    code, llvm_ir, _ = opt(capsys, small_path, "--emit", "llvm", "--opt-level", "1")
    assert code == 0 and "define void @main(" in llvm_ir
    code, asm, _ = opt(capsys, small_path, "--emit", "asm", "--opt-level", "1")
    register = "zmm" if host_target().vector_width == 16 else "ymm"
    assert code == 0 and "main:" in asm and register in asm


def test_ir_text_with_weights_round_trips(
    capsys: pytest.CaptureFixture[str], resnet_path: Path, tmp_path: Path
) -> None:
    graph_file = tmp_path / "graph.mlir"
    code, _, err = opt(capsys, resnet_path, "--emit", "graph", "-o", graph_file)
    assert code == 0 and "weights written to" in err
    weights = load_weights(graph_file.with_suffix(".npz"))
    module = parse_ir(graph_file.read_text(), make_context(weights), str(graph_file))
    module.verify()
    refs = {o.ref.data for o in module.walk() if isinstance(o, graph.ConstantOp)}
    assert refs and refs <= set(weights)
    # Lowering the reread text gives exactly what lowering the model directly gives.
    code, direct, _ = opt(capsys, resnet_path, "--emit", "kernel")
    code2, via_text, _ = opt(
        capsys, graph_file, "--weights", graph_file.with_suffix(".npz"), "--emit", "kernel"
    )
    assert code == code2 == 0 and via_text == direct


def test_ir_text_without_its_weights_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], small_path: Path, tmp_path: Path
) -> None:
    graph_file = tmp_path / "graph.mlir"
    assert opt(capsys, small_path, "--emit", "graph", "-o", graph_file)[0] == 0
    graph_file.with_suffix(".npz").rename(tmp_path / "elsewhere.npz")
    code, _, err = opt(capsys, graph_file)
    assert code == 2 and "references" in err and "--weights" in err


def test_weight_fills_one_weight_with_a_value(
    capsys: pytest.CaptureFixture[str], small_path: Path, tmp_path: Path
) -> None:
    """--weight NAME=VALUE sets a weight of IR text to one value, shaped and typed as its
    constant (the IR test files' exponents, zero points, epsilons); bad uses exit 2."""
    ir = tmp_path / "pow.mlir"
    ir.write_text(
        "func.func @main(%x: tensor<3xf32>) -> tensor<3xf32> {\n"
        '  %p = graph.constant "p" : tensor<1xf32>\n'
        "  %y = graph.pow %x, %p : tensor<3xf32>, tensor<1xf32> -> tensor<3xf32>\n"
        "  func.return %y : tensor<3xf32>\n}\n"
    )
    out_file = tmp_path / "out.mlir"
    code, _, err = opt(capsys, ir, "--weight", "p=2", "--pipeline", "canonicalize", "-o", out_file)
    assert code == 0, err
    assert "graph.mul %x, %x" in out_file.read_text()  # x ** 2 -> x * x: the value was 2
    code, out, err = opt(capsys, ir, "--random-weights", "--weight", "p=3", "--pipeline", "dce")
    assert code == 0 and "graph.pow" in out, err
    for value in ["p", "p=two"]:  # argparse's own usage error: exit status 2
        with pytest.raises(SystemExit) as exit_info:
            opt(capsys, ir, "--weight", value, "--pipeline", "dce")
        assert exit_info.value.code == 2
        assert "expected NAME=VALUE with a number" in capsys.readouterr().err
    code, _, err = opt(capsys, ir, "--weight", "q=1", "--pipeline", "dce")
    assert code == 2 and "names no weight 'q'" in err
    code, _, err = opt(capsys, small_path, "--weight", "p=1", "--pipeline", "dce")
    assert code == 2 and "not of an .onnx model" in err


def test_loops_ir_round_trips(
    capsys: pytest.CaptureFixture[str], small_path: Path, tmp_path: Path
) -> None:
    loops_file = tmp_path / "loops.mlir"
    assert opt(capsys, small_path, "--emit", "loops", "-o", loops_file)[0] == 0
    code, out, err = opt(capsys, loops_file, "--emit", "loops")
    assert code == 0, err
    assert out == loops_file.read_text()


def test_stop_after(capsys: pytest.CaptureFixture[str], resnet_path: Path) -> None:
    code, out, _ = opt(capsys, resnet_path, "--stop-after", "fold-batchnorm")
    assert code == 0
    assert "graph.batch_norm" not in out  # fold-batchnorm ran
    assert "graph.relu" in out and "residual" not in out  # the fusions did not


def test_elide_large_constants(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    values = ", ".join(f"{v}.0" for v in range(40))
    source = tmp_path / "big.mlir"
    source.write_text(
        "builtin.module {\n  func.func @f() -> tensor<40xf32> {\n"
        f"    %0 = arith.constant dense<[{values}]> : tensor<40xf32>\n"
        "    func.return %0 : tensor<40xf32>\n  }\n}\n"
    )
    code, out, err = opt(capsys, source)
    assert code == 0 and "dense<__elided__ /* 40 elements */> : tensor<40xf32>" in out
    assert "39.0" not in out.replace("3.900000e+01", "") and "--no-elide" in err
    code, full, _ = opt(capsys, source, "--no-elide-large-constants")
    assert code == 0 and "3.900000e+01" in full
    elided = tmp_path / "elided.mlir"
    elided.write_text(out)
    code, _, err = opt(capsys, elided)
    assert code == 2 and "elided" in err


# -- IR dumps --------------------------------------------------------------------------------------


def test_print_ir_before_and_after(capsys: pytest.CaptureFixture[str], resnet_path: Path) -> None:
    code, _, err = opt(
        capsys,
        resnet_path,
        "--emit",
        "graph",
        "--print-ir-before=fold-batchnorm",
        "--print-ir-after=fold-batchnorm,fuse-residual-add",
    )
    assert code == 0
    assert banners(err, "Before") == ["fold-batchnorm"]
    assert banners(err, "After") == ["fold-batchnorm", "fuse-residual-add"]
    before, after = err.split("IR Dump After fold-batchnorm")
    assert "graph.batch_norm" in before
    assert "graph.batch_norm" not in after.split("IR Dump After")[0]


def test_print_ir_after_all_and_after_change(
    capsys: pytest.CaptureFixture[str], small_path: Path
) -> None:
    code, _, err = opt(capsys, small_path, "--emit", "graph", "--print-ir-after-all")
    assert code == 0 and banners(err, "After") == GRAPH_PASSES.split(",")
    code, _, err = opt(capsys, small_path, "--emit", "graph", "--print-ir-after-change")
    changed = banners(err, "After")
    assert code == 0 and "fold-batchnorm" in changed and "fuse-residual-add" in changed
    assert "fold-constants" not in changed  # nothing to fold in this model


def test_print_ir_diff(capsys: pytest.CaptureFixture[str], small_path: Path) -> None:
    code, _, err = opt(
        capsys, small_path, "--emit", "graph", "--print-ir-diff", "--print-ir-after-change"
    )
    assert code == 0 and banners(err, "Diff After")[0] == "canonicalize"
    section = err.split("Diff After fold-batchnorm")[1].split("// -----//")[0]
    assert re.search(r"^-.*graph\.batch_norm", section, re.M)
    assert re.search(r"^\+.*graph\.conv .* bias ", section, re.M)
    assert "builtin.module {\n  func.func" not in err  # diffs, not whole modules


def test_ir_dump_dir(capsys: pytest.CaptureFixture[str], small_path: Path, tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    code, _, _ = opt(capsys, small_path, "--emit", "kernel", "--ir-dump-dir", dump)
    assert code == 0
    files = sorted(dump.glob("*.mlir"))
    passes = DEFAULT_PIPELINE.split(",lower-kernels-to-loops")[0].split(",")
    assert [f.name for f in files] == ["000_input.mlir"] + [
        f"{i:03d}_{name}.mlir" for i, name in enumerate(passes, 1)
    ]
    # Every dumped stage reruns with the one weights file of the directory.
    weights = load_weights(dump / "weights.npz")
    for f in (files[0], files[3], files[-1]):
        parse_ir(f.read_text(), make_context(weights), str(f)).verify()
    code, out, _ = opt(capsys, files[3], "--weights", dump / "weights.npz", "--emit", "kernel")
    assert code == 0 and out == files[-1].read_text()


# -- verification, timing, statistics --------------------------------------------------------------


def test_verify_each(capsys: pytest.CaptureFixture[str], small_path: Path, tmp_path: Path) -> None:
    code, _, err = opt(capsys, small_path, "--pipeline", "break-shapes", "--repro-dir", tmp_path)
    assert code == 1 and "pass 'break-shapes' (1 of 1) produced IR that does not verify" in err
    code, out, _ = opt(capsys, small_path, "--pipeline", "break-shapes", "--no-verify-each")
    assert code == 0 and "tensor<1xf32>" in out


def test_timing(capsys: pytest.CaptureFixture[str], resnet_path: Path) -> None:
    code, _, err = opt(capsys, resnet_path, "--emit", "kernel", "--timing")
    assert code == 0
    table = err.split("ember opt timing")[1]
    for i, name in enumerate(DEFAULT_PIPELINE.split(",")[:-1], 1):
        assert re.search(rf"^\s*{i} {name}\s+\d+\.\d\d\s+\d+\.\d%", table, re.M), name
    assert re.search(r"^total\s+\d+\.\d\d\s+100\.0%", table, re.M)


def test_statistics_on_resnet18(capsys: pytest.CaptureFixture[str], resnet_path: Path) -> None:
    code, _, err = opt(capsys, resnet_path, "--emit", "kernel", "--statistics")
    assert code == 0
    stats = err.split("ember opt statistics")[1]
    # ResNet-18: 20 conv+BN, 17 ReLUs (stem + 2 per block), 8 residual adds.
    assert re.search(r"^fold-batchnorm \(\d+\): \d+ -> \d+ ops", stats, re.M)
    assert re.search(r"graph\.batch_norm\s+20 -> 0", stats)
    assert re.search(r"fused: graph\.conv \+residual\s+0 -> 8", stats)
    assert re.search(r"fused: graph\.conv \+relu\s+0 -> 17", stats)
    final = stats.split("fusions in the final IR:")[1]
    assert re.search(r"kernel\.conv2d \+relu\s+17", final)
    assert re.search(r"kernel\.conv2d \+residual\s+8", final)
    arena, total = map(
        lambda s: int(s.replace(",", "")),
        re.search(r"arena ([\d,]+) bytes planned for ([\d,]+) bytes", final).groups(),  # type: ignore[union-attr]
    )
    assert 0 < arena < total


# -- failures and reproducers ----------------------------------------------------------------------


def test_failing_pass_writes_a_reproducer_that_reruns_to_the_same_failure(
    capsys: pytest.CaptureFixture[str], small_path: Path, tmp_path: Path
) -> None:
    pipeline = "canonicalize,fold-batchnorm,fuse-residual-add,raise-on-residual,dce"
    code, _, err = opt(capsys, small_path, "--pipeline", pipeline, "--repro-dir", tmp_path / "r1")
    assert code == 1
    assert "pass 'raise-on-residual' (4 of 5) raised: RuntimeError: cannot handle" in err
    repro = tmp_path / "r1"
    assert {p.name for p in repro.iterdir()} == {
        "input.mlir",
        "input.npz",
        "command.sh",
        "error.txt",
    }
    assert "residual" in (repro / "input.mlir").read_text()  # the IR before the failing pass
    command = (repro / "command.sh").read_text().splitlines()[-1]
    assert command in err
    argv = shlex.split(command)
    assert argv[0] == "ember-opt"
    code, _, err = opt(capsys, *argv[1:], "--repro-dir", tmp_path / "r2")
    assert code == 1
    assert "pass 'raise-on-residual' (1 of 1) raised: RuntimeError: cannot handle" in err
    assert (tmp_path / "r2" / "input.mlir").read_text() == (repro / "input.mlir").read_text()


@pytest.mark.default_repro_dir
def test_reproducer_goes_to_a_timestamped_directory_by_default(
    capsys: pytest.CaptureFixture[str],
    small_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = opt(
        capsys, small_path, "--pipeline", "fold-batchnorm,fuse-residual-add,raise-on-residual"
    )
    assert code == 1
    (repro,) = tmp_path.glob("ember-repro-*")
    assert str(repro) in err and (repro / "input.mlir").is_file()


# -- numerics --------------------------------------------------------------------------------------


def test_cut_pipeline_keeps_mandatory_passes() -> None:
    passes = [p() for p in [FlipRelu, Tagged]]
    registry = available_passes()
    full = [registry["canonicalize"]()(), *passes, *(registry[n]()() for n in MANDATORY_PASSES)]
    assert [p.name for p in cut_pipeline(full, 0)] == list(MANDATORY_PASSES)
    assert [p.name for p in cut_pipeline(full, 2)] == [
        "canonicalize",
        "flip-relu",
        *MANDATORY_PASSES,
    ]


def test_bisect_names_the_wrong_pass(capsys: pytest.CaptureFixture[str], small_path: Path) -> None:
    pipeline = DEFAULT_PIPELINE.replace("fuse-bias-add,", "fuse-bias-add,flip-relu,")
    code, out, _ = opt(
        capsys,
        small_path,
        "--pipeline",
        pipeline,
        "--bisect-against",
        "onnxruntime",
        "--opt-level",
        "1",
    )
    assert code == 1, out
    position = pipeline.split(",").index("flip-relu") + 1
    assert f"first divergent pass: flip-relu (pass {position} of the pipeline)" in out
    assert re.search(r"^\s+\d+\s+fuse-bias-add\s+\S+\s+\S+\s+ok$", out, re.M)


def test_bisect_finds_nothing_in_the_default_pipeline(
    capsys: pytest.CaptureFixture[str], small_path: Path
) -> None:
    code, out, _ = opt(
        capsys, small_path, "--bisect-against", "reference", "--rtol", "1e-4", "--opt-level", "1"
    )
    assert code == 0, out
    assert "no divergence beyond rtol 0.0001" in out


@pytest.fixture(scope="module")
def lstm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LSTM whose int32 sequence_lens is a graph input (T = 5): seeded integers in [0, 16)
    would be lengths onnxruntime refuses."""
    from ember.tests.kernels.test_recurrent import _layer

    model, _ = _layer("LSTM", sequence_lens=True)
    path = tmp_path_factory.mktemp("models") / "lstm.onnx"
    onnx.save(model, path)
    return path


def test_bisect_seeds_valid_sequence_lengths(
    capsys: pytest.CaptureFixture[str], lstm_path: Path
) -> None:
    """It crashed with onnxruntime's InvalidArgument traceback: the seeded lengths were > T."""
    code, out, err = opt(capsys, lstm_path, "--bisect-against", "onnxruntime", "--opt-level", "1")
    assert code == 0, out + err
    assert "no divergence" in out


def test_inputs_the_oracle_or_ember_refuse_are_clear_errors(
    capsys: pytest.CaptureFixture[str], lstm_path: Path, tmp_path: Path
) -> None:
    lengths = tmp_path / "L.npy"
    np.save(lengths, np.array([5, 9, 1], np.int32))
    code, _, err = opt(
        capsys, lstm_path, "--bisect-against", "onnxruntime", "--input", f"L={lengths}"
    )
    assert code == 2 and "Traceback" not in err, err
    assert "ember opt: error: onnxruntime refused the model on these inputs" in err, err
    assert "sequence_lens" in err and "--input NAME=FILE.npy" in err, err
    code, _, err = opt(capsys, lstm_path, "--compare-intermediates", "--input", f"L={lengths}")
    assert code == 2 and "Traceback" not in err, err
    assert "the compiled model refused the inputs" in err, err
    assert "sequence_lens[1] = 9 is out of range" in err, err


@pytest.mark.parametrize(
    "item, message",
    [
        ("y={d}/x.npy", "--input y={d}/x.npy: the model has no input 'y'; inputs: ['input']"),
        ("input={d}/absent.npy", "--input input={d}/absent.npy: cannot read {d}/absent.npy"),
    ],
)
def test_input_files_are_read_like_ember_run(
    capsys: pytest.CaptureFixture[str], small_path: Path, tmp_path: Path, item: str, message: str
) -> None:
    """`--input` is parsed by the one helper `ember run` uses: same messages, exit status 2."""
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 16, 16), np.float32))
    code, _, err = opt(
        capsys, small_path, "--compare-intermediates", "--input", item.format(d=tmp_path)
    )
    assert code == 2 and "Traceback" not in err, err
    assert f"ember opt: error: {message.format(d=tmp_path)}" in err, err


def test_compare_intermediates_names_the_first_wrong_node(
    capsys: pytest.CaptureFixture[str], small_path: Path
) -> None:
    pipeline = DEFAULT_PIPELINE.replace("fuse-bias-add,", "fuse-bias-add,flip-relu,")
    code, out, _ = opt(capsys, small_path, "--pipeline", pipeline, "--compare-intermediates")
    assert code == 1
    first_relu = next(n for n in small_cnn().graph.node if n.op_type == "Relu")
    assert f"first divergent node: '{first_relu.name}' (Relu, node 2" in out
    assert re.search(r"max abs error \d\S*, max rel error \d", out)


def test_compare_intermediates_on_a_correct_pipeline(
    capsys: pytest.CaptureFixture[str], small_path: Path, tmp_path: Path
) -> None:
    model = small_cnn()
    x = np.random.default_rng(7).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, _ = opt(capsys, small_path, "--compare-intermediates", "--input", tmp_path / "x.npy")
    assert code == 0, out
    assert f"compared {len(model.graph.node)} tensors" in out
    assert "every intermediate matches" in out


def test_numerics_need_an_onnx_model(
    capsys: pytest.CaptureFixture[str], small_path: Path, tmp_path: Path
) -> None:
    ir = tmp_path / "g.mlir"
    assert opt(capsys, small_path, "--emit", "graph", "-o", ir)[0] == 0
    code, _, err = opt(capsys, ir, "--bisect-against", "onnxruntime")
    assert code == 2 and ".onnx model" in err


def test_a_directory_is_named_as_such(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """An artifact folder given to `ember opt` was reported as "no such file"."""
    code, _, err = opt(capsys, tmp_path)
    assert code == 2 and "is a directory: give an .onnx model" in err
    assert len(err.strip().splitlines()) == 1


def test_compare_intermediates_with_shapeless_value_info(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 15: value_info entries without a shape made the instrumented copy invalid
    ("Field 'shape' of 'type' is required")."""
    model = small_cnn()
    for node in model.graph.node[:3]:
        model.graph.value_info.append(
            helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)
        )
    path = tmp_path / "shapeless.onnx"
    onnx.save(model, str(path))
    code, out, err = opt(capsys, path, "--compare-intermediates")
    assert code == 0, out + err
    assert "every intermediate matches" in out
