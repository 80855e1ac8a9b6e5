"""Multi-variant artifacts (`ember compile --shapes batch=1,3`): one static variant per size,
dispatched by input shape in the thin runtime, with the dims' ranges recorded and checked."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import ember
from ember.engine.aot import compile_variants
from ember.runtime.artifact import MANIFEST_FILE, VariantArtifact, load
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tests.runtime.util import run_without_compiler
from ember.tools import cli
from ember.tools.symbolic_zoo import feeds, symbolic_model

REL_TOL = 1e-5


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("variants")
    onnx.save(symbolic_model(), directory / "model.onnx")
    compile_variants(
        directory / "model.onnx",
        directory / "out",
        {"batch": [1, 3], "seq": [5]},
        dim_ranges={"batch": (1, 4)},
    )
    return directory / "out"


def test_one_artifact_serves_every_built_shape(variants: Path) -> None:
    loaded = load(variants, threads=1)
    assert isinstance(loaded, VariantArtifact)
    assert loaded.input_names == ["x", "y"] and loaded.output_names == ["out"]
    assert loaded.built_shapes == [{"x": [1, 5], "y": [1, 6]}, {"x": [3, 5], "y": [3, 6]}]
    for batch in (1, 3):
        inputs = feeds(batch, 5, seed=batch)
        assert_close(loaded.run(inputs), onnxruntime_outputs(symbolic_model(), inputs), REL_TOL)
        (out,) = loaded(inputs["x"], inputs["y"])
        np.testing.assert_array_equal(out, loaded.run(inputs)["out"])


def test_the_runtime_checks_shapes_and_ranges_before_dispatch(variants: Path) -> None:
    loaded = load(variants, threads=1)
    built = "built: [{'x': [1, 5], 'y': [1, 6]}, {'x': [3, 5], 'y': [3, 6]}]"
    with pytest.raises(ember.InputError, match=re.escape(built)):
        loaded.run(feeds(2, 5))  # in range, not built
    with pytest.raises(ember.InputError, match=r"dim 'batch' is 7, outside its range 1\.\.4"):
        loaded.run(feeds(7, 5))
    inputs = feeds(3, 5)
    inputs["y"] = np.zeros((1, 6), np.float32)
    with pytest.raises(ember.InputError, match="share dim 'batch' but were given 3"):
        loaded.run(inputs)
    with pytest.raises(ember.InputError, match=r"given \[3\] \(rank 1\)"):
        loaded.run({"x": np.zeros(3, np.float32), "y": np.zeros((3, 6), np.float32)})
    with pytest.raises(ember.InputError, match="expected dtype float32"):
        loaded.run({"x": np.zeros((1, 5), np.float64), "y": np.zeros((1, 6), np.float32)})


def test_repeated_shapes_reuse_the_dispatch_and_other_shapes_are_checked(variants: Path) -> None:
    loaded = load(variants, threads=1)
    for batch in (3, 3, 1, 1, 3):
        inputs = feeds(batch, 5, seed=batch)
        assert_close(loaded.run(inputs), onnxruntime_outputs(symbolic_model(), inputs), REL_TOL)
    with pytest.raises(ember.InputError, match=r"dim 'batch' is 7, outside its range 1\.\.4"):
        loaded.run(feeds(7, 5))
    with pytest.raises(ember.InputError, match="expected dtype float32"):
        loaded.run({"x": np.zeros((3, 5), np.float64), "y": np.zeros((3, 6), np.float32)})
    mismatched = feeds(3, 5)
    mismatched["y"] = np.zeros((1, 6), np.float32)
    with pytest.raises(ember.InputError, match="share dim 'batch' but were given 3"):
        loaded.run(mismatched)


def test_variants_run_without_the_compiler(variants: Path, tmp_path: Path) -> None:
    inputs = feeds(3, 5, seed=7)
    outputs = run_without_compiler(variants, inputs, tmp_path)
    assert_close(outputs, onnxruntime_outputs(symbolic_model(), inputs), REL_TOL)


def test_a_tampered_variants_manifest_is_an_artifact_error(variants: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(variants, copy)
    document = json.loads((copy / MANIFEST_FILE).read_text())
    document["variants"][0]["directory"] = "../elsewhere"
    (copy / MANIFEST_FILE).write_text(json.dumps(document))
    with pytest.raises(ember.ArtifactError, match=r"variants\[0\]\.directory"):
        load(copy)
    document["variants"][0]["directory"] = "variant-1"  # both entries load variant-1
    (copy / MANIFEST_FILE).write_text(json.dumps(document))
    with pytest.raises(ember.ArtifactError, match="a second variant for the same input shapes"):
        load(copy)


def test_ember_compile_shapes_and_bench_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx.save(symbolic_model(), tmp_path / "model.onnx")
    out = tmp_path / "out"
    argv = ["compile", str(tmp_path / "model.onnx"), "-o", str(out), "-q"]
    assert (
        cli.main([*argv, "--shapes", "batch=1,2", "--shapes", "seq=3", "--dim", "batch=1:2"]) == 0
    )
    assert "2 variants" in capsys.readouterr().out
    document = json.loads((out / MANIFEST_FILE).read_text())
    assert document["dim_ranges"] == {"batch": [1, 2]}
    assert [v["dims"] for v in document["variants"]] == [
        {"batch": 1, "seq": 3},
        {"batch": 2, "seq": 3},
    ]
    # A size outside the range fails before anything compiles.
    assert (
        cli.main([*argv, "--shapes", "batch=1,9", "--shapes", "seq=3", "--dim", "batch=1:2"]) == 1
    )
    assert "dim 'batch' is 9, outside its range 1..2" in capsys.readouterr().err
    # A range without --shapes is a polymorphic batch's, which `seq` left open rules out.
    assert cli.main([*argv, "--dim", "batch=1:2"]) == 1
    assert "not polymorphic: dims other than the batch are symbolic too" in capsys.readouterr().err
    assert (
        cli.main(["bench", str(out), "--batch", "1,2", "--input-shape", "x=1x3", "--runs", "2"])
        == 0
    )
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[3:]]  # after the host
    assert [(row[0], row[1]) for row in rows] == [("1", "ember"), ("2", "ember")]


def test_inference_session_on_a_variants_artifact(variants: Path) -> None:
    session = ember.InferenceSession(str(variants))
    assert [(i.name, i.shape) for i in session.get_inputs()] == [
        ("x", ["batch", "seq"]),
        ("y", ["batch", 6]),
    ]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("out", [None, 4])]
    inputs = feeds(3, 5, seed=3)
    (out,) = session.run(None, inputs)
    assert_close({"out": out}, onnxruntime_outputs(symbolic_model(), inputs), REL_TOL)
