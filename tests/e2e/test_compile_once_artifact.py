"""The AOT artifact of a model compiled once (issue 10): `ember compile` writes ONE program
for every shape (manifest `extra.compile_once`, format 4), the thin runtime (runtime/once.py)
loads it and serves every shape, checking the inputs first; a corrupt section is an
ArtifactError before anything runs.

Tolerance: against onnxruntime, max |ember - ort| <= 1e-4 x max |ort| per output (float32
GEMMs with K <= 72 summed in another order, erf, layer norm, softmax)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember.engine.aot import compile_artifact, resolve_target
from ember.runtime import load
from ember.runtime.artifact import MANIFEST_FILE, OnceArtifact
from ember.runtime.once import ONCE_KEY
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tests.runtime.util import run_without_compiler
from ember.tools.symbolic_zoo import ffn_block_model

REL_TOL = 1e-4
HIDDEN = 40


def _inputs(batch: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32)}


def _compile(model: onnx.ModelProto, out: Path, ranges: dict[str, tuple[int, int]]) -> Path:
    compile_artifact(
        model,
        out,
        target=resolve_target("host", 1),
        batch_polymorphic=True,
        dim_ranges=ranges,
        compile_once=True,
    )
    return out


@pytest.fixture(scope="module")
def ffn_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _compile(
        ffn_block_model(HIDDEN, 72), tmp_path_factory.mktemp("once") / "ffn", {"batch": (1, 64)}
    )


def test_one_artifact_serves_every_shape(ffn_artifact: Path) -> None:
    document = json.loads((ffn_artifact / MANIFEST_FILE).read_text())
    section = document["extra"][ONCE_KEY]
    assert document["format_version"] == 4 and not (ffn_artifact / "variant-0").exists()
    assert section["symbols"] == ["batch", "seq"] and section["ranges"] == {"batch": [1, 64]}
    assert section["extents"] == [
        {"factor": 1, "dims": ["batch"]},
        {"factor": 1, "dims": ["seq"]},
    ]
    assert section["arena_function"] == "main_arena_bytes"
    header = (ffn_artifact / "ember.h").read_text()
    assert "#define EMBER_NUM_EXTENTS 2" in header and "int64_t extent_1, /* seq */" in header
    loaded = load(ffn_artifact)
    assert isinstance(loaded, OnceArtifact)
    model = ffn_block_model(HIDDEN, 72)
    # Small first, then larger (the arena grows), a repeat, then smaller again.
    shapes = [(1, 1), (2, 3), (3, 17), (1, 33), (4, 100), (2, 3), (64, 2), (5, 7)]
    for k, (batch, seq) in enumerate(shapes):
        inputs = _inputs(batch, seq, k)
        got = loaded.run(inputs)
        assert got["out"].shape == (batch, seq, HIDDEN)
        assert_close(got, onnxruntime_outputs(model, inputs), REL_TOL)


def test_the_thin_runtime_alone_serves_it(ffn_artifact: Path, tmp_path: Path) -> None:
    model = ffn_block_model(HIDDEN, 72)
    for batch, seq in ((3, 11), (1, 50)):
        inputs = _inputs(batch, seq, batch)
        got = run_without_compiler(ffn_artifact, inputs, tmp_path)
        assert_close(got, onnxruntime_outputs(model, inputs), REL_TOL)


@pytest.mark.parametrize(
    "shape, message",
    [
        (
            (65, 3, HIDDEN),
            r"input 'x' given \[65, 3, 40\]: dim 'batch' is 65, outside its range 1..64",
        ),
        ((2, 3, HIDDEN + 1), r"input 'x': expected shape \[batch, seq, 40\], given \[2, 3, 41\]"),
        ((2, HIDDEN), r"input 'x': expected shape \[batch, seq, 40\], given \[2, 40\] \(rank 2\)"),
        ((2, 0, HIDDEN), r"input 'x': dim 'seq' \(axis 1\) is 0"),
    ],
)
def test_inputs_are_checked_before_anything_runs(
    ffn_artifact: Path, shape: tuple[int, ...], message: str
) -> None:
    loaded = load(ffn_artifact)
    with pytest.raises(ember.InputError, match=message):
        loaded.run({"x": np.zeros(shape, np.float32)})
    with pytest.raises(ember.InputError, match="expected dtype float32, given float64"):
        loaded.run({"x": np.zeros((1, 2, HIDDEN))})
    with pytest.raises(ember.InputError, match=r"missing \['x'\]"):
        loaded.run({"y": np.zeros((1, 2, HIDDEN), np.float32)})


def test_inputs_sharing_a_dim_must_agree(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("Relu", ["s"], ["out"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    loaded = load(_compile(model, tmp_path / "add", {}))
    assert isinstance(loaded, OnceArtifact)
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal((3, 5, 8)).astype(np.float32) for n in ("x", "y")}
    assert_close(loaded.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)
    feeds["y"] = feeds["y"][:, :4]
    with pytest.raises(
        ember.InputError, match=r"inputs 'x' and 'y' share dim 'seq' but were given 5"
    ):
        loaded.run(feeds)


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


SECTION = ["extra", ONCE_KEY]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            _set([*SECTION, "extents", 1, "factor"], "2"),
            r"compile_once.extents\[1\].factor' must be an integer",
        ),
        (
            _set([*SECTION, "extents", 1, "dims"], ["tokens"]),
            r"compile_once.extents\[1\].dims' must be",
        ),
        (
            _set([*SECTION, "arena_function"], "abort"),
            r"compile_once.arena_function' must be a string matching main_arena_bytes",
        ),
        (
            _set([*SECTION, "ranges", "batch"], [8, 2]),
            r"compile_once.ranges.batch' must be \[smallest, largest\]",
        ),
        (
            _set([*SECTION, "outputs", "out", 2], 41),
            r"compile_once.outputs.out\[2\]' must be the size",
        ),
        (_set([*SECTION, "inputs", "x", 1], 7), r"compile_once.inputs.x\[1\]' must be the size"),
        (_set([*SECTION, "limits", "seq"], 0), r"compile_once.limits.seq' must be an integer"),
        # Well formed, but not what the library was compiled with.
        (_set([*SECTION, "ranges", "batch"], [1, 128]), r"compile_once.ranges.batch"),
        (_set([*SECTION, "limits", "batch"], 4), r"compile_once.limits"),
        (_set(["format_version"], 3), "artifact format 3, this runtime reads format 4"),
    ],
)
def test_a_corrupt_section_is_refused_before_anything_runs(
    ffn_artifact: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    copy = tmp_path / "ffn"
    shutil.copytree(ffn_artifact, copy)
    document = json.loads((copy / MANIFEST_FILE).read_text())
    change(document)
    (copy / MANIFEST_FILE).write_text(json.dumps(document))
    with pytest.raises(ember.ArtifactError, match=message):
        load(copy)


def test_cli_run_and_bench_take_the_artifact(
    ffn_artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ember.tools.cli import main

    argv = ["run", str(ffn_artifact), "--input-shape", "x=2,5,40", "--random-inputs"]
    assert main(argv) == 0
    assert "out: shape [2, 5, 40] float32" in capsys.readouterr().out
    argv = ["bench", str(ffn_artifact), "--batch", "1,4,16", "--input-shape", "x=1,8,40"]
    assert main([*argv, "--runs", "1", "--warmup", "0", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [row["batch"] for row in document["batches"]] == [1, 4, 16]
    assert main(["run", str(ffn_artifact), "--random-inputs"]) != 0
    assert "inputs ['x'] have symbolic dims" in capsys.readouterr().err
    assert main(["verify", str(ffn_artifact)]) == 0
    assert f"{ffn_artifact}: ok (code sha256 " in capsys.readouterr().out


def test_the_predictor_api_serves_every_shape(ffn_artifact: Path) -> None:
    predictor = ember.create_predictor(ember.Config(str(ffn_artifact)))
    handle = predictor.get_input_handle("x")
    assert handle.shape() == [-1, -1, HIDDEN]
    model = ffn_block_model(HIDDEN, 72)
    for batch, seq in ((2, 5), (3, 9)):
        inputs = _inputs(batch, seq, seq)
        handle.copy_from_cpu(inputs["x"])
        predictor.run()
        got = {"out": predictor.get_output_handle("out").copy_to_cpu()}
        assert_close(got, onnxruntime_outputs(model, inputs), REL_TOL)
    with pytest.raises(ember.InputError, match="dim 'batch' is 70, outside its range 1..64"):
        handle.copy_from_cpu(np.zeros((70, 2, HIDDEN), np.float32))


CC = shutil.which("cc")
C_WARNINGS = ["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"]


@pytest.mark.skipif(CC is None, reason="no C compiler: 'cc' is not on PATH")
def test_c_calls_it_through_its_header(ffn_artifact: Path, tmp_path: Path) -> None:
    """ember.h's extents and main_arena_bytes, used from C (a driver for this model: the
    generic docs/c_example.c refuses such an artifact at compile time)."""
    import subprocess

    assert CC is not None
    example = Path(__file__).parents[2] / "docs" / "c_example.c"
    refused = subprocess.run(
        [CC, *C_WARNINGS, "-I", str(ffn_artifact), "-c", str(example), "-o", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "compiled once for every shape" in refused.stderr
    program = tmp_path / "driver"
    driver = Path(__file__).parent / "c_once_driver.c"
    built = subprocess.run(
        [CC, "-O1", *C_WARNINGS, "-I", str(ffn_artifact), "-o", str(program), str(driver)]
        + ["-ldl"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    model = ffn_block_model(HIDDEN, 72)
    for batch, seq in ((2, 5), (6, 31)):
        inputs = _inputs(batch, seq, 3)
        inputs["x"].tofile(tmp_path / "x.bin")
        argv = [str(program), str(ffn_artifact), str(batch), str(seq), str(HIDDEN)]
        ran = subprocess.run(
            [*argv, str(tmp_path / "x.bin"), str(tmp_path / "out.bin")], timeout=120
        )
        assert ran.returncode == 0
        out = np.fromfile(tmp_path / "out.bin", np.float32).reshape(batch, seq, HIDDEN)
        assert_close({"out": out}, onnxruntime_outputs(model, inputs), REL_TOL)


def test_bert_encoder_artifact_checks_its_position_table(tmp_path: Path) -> None:
    """The symbolic BERT encoder's artifact: one program for every (batch, seq), its position
    table's length recorded as the sequence's limit (manifest `limits`) and checked by the thin
    runtime before any kernel runs: a longer sequence would read past the table."""
    from ember.tools.model_zoo import bert_encoder
    from ember.tools.symbolic_zoo import bert_with_symbolic_shapes, masked_bert_feeds

    model = bert_with_symbolic_shapes(
        bert_encoder(layers=1, seq=24, hidden=32, heads=2, attention_mask=True)
    )
    out = _compile(model, tmp_path / "bert", {})
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["extra"][ONCE_KEY]["limits"] == {"seq": 24}
    loaded = load(out)
    assert isinstance(loaded, OnceArtifact)
    for k, (batch, seq) in enumerate([(1, 1), (2, 7), (3, 24)]):
        feeds = masked_bert_feeds(batch, seq, k)
        assert_close(loaded.run(feeds), onnxruntime_outputs(model, feeds), REL_TOL)
    with pytest.raises(ember.InputError, match="dim 'seq' .* 25, more than the 24 rows"):
        loaded.run(masked_bert_feeds(1, 25, 0))
