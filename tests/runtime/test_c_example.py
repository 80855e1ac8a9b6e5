"""ember.h and docs/c_example.c: an artifact runs from C and computes what the Python runtime does.

The example is compiled with the system C compiler (`cc`, warnings as errors) against the
artifact's generated header, run as a separate program, and its printed outputs are compared
with `ember.runtime.load(...).run` on the same inputs (rtol 1e-6: the same machine code on the
same data; printed with 9 significant digits, which round-trip float32 exactly).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember.runtime
from ember.engine.cheader import HEADER_FILE, c_string, render_header
from ember.runtime.errors import KernelError
from ember.tests.runtime.util import compile_model

EXAMPLE = Path(__file__).parents[2] / "docs" / "c_example.c"
CC = shutil.which("cc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler: 'cc' is not on PATH")
WARNINGS = ["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"]


def _build_example(artifact: Path, scratch: Path) -> Path:
    program = scratch / "run_model"
    assert CC is not None
    result = subprocess.run(
        [CC, "-O1", *WARNINGS, "-I", str(artifact), "-o", str(program), str(EXAMPLE), "-ldl"]
        + ["-lm"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"compiling c_example.c failed:\n{result.stderr}"
    return program


def _run_example(
    program: Path, artifact: Path, feeds: dict[str, np.ndarray], scratch: Path
) -> subprocess.CompletedProcess[str]:
    files = []
    for name, array in feeds.items():
        path = scratch / f"{name}.bin"
        np.ascontiguousarray(array).tofile(path)
        files.append(str(path))
    return subprocess.run(
        [str(program), str(artifact), *files], capture_output=True, text=True, timeout=120
    )


def _parse_outputs(stdout: str) -> dict[str, tuple[str, np.ndarray]]:
    """`output NAME DTYPE SHAPE` lines, each followed by one value per line."""
    outputs: dict[str, tuple[str, list[float]]] = {}
    current: list[float] = []
    for line in stdout.splitlines():
        if line.startswith("output "):
            _, name, dtype, shape = line.split(" ", 3)
            current = []
            outputs[name] = (dtype, current)
        else:
            current.append(float(line))
    return {name: (dtype, np.array(values)) for name, (dtype, values) in outputs.items()}


@needs_cc
def test_c_example_matches_the_python_runtime(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    artifact: Path = request.getfixturevalue("small_artifact")
    assert (artifact / HEADER_FILE).is_file()
    program = _build_example(artifact, tmp_path)
    executable = ember.runtime.load(artifact)
    x = np.random.default_rng(7).standard_normal((2, 8, 10, 10)).astype(np.float32)
    expected = executable.run({"x": x})

    result = _run_example(program, artifact, {"x": x}, tmp_path)

    assert result.returncode == 0, result.stderr
    printed = _parse_outputs(result.stdout)
    assert list(printed) == executable.output_names
    for name, want in expected.items():
        dtype, values = printed[name]
        assert dtype == str(want.dtype)
        np.testing.assert_allclose(values, want.reshape(-1), rtol=1e-6, atol=0)


def _gather_model() -> onnx.ModelProto:
    table = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) * 0.5, "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], name="embed", axis=0)],
        "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [5])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [5, 3])],
        [table],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@needs_cc
def test_c_example_reports_the_status_record(tmp_path: Path) -> None:
    """An index out of range: the C program names the node from the header's site table and
    exits 3, where the Python runtime raises KernelError; good indices give the same rows."""
    artifact = compile_model(_gather_model(), tmp_path / "gather", threads=1)
    header = (artifact / HEADER_FILE).read_text()
    assert "#define EMBER_NUM_STATUS_SITES 1" in header
    assert "Gather node 'embed'" in header
    program = _build_example(artifact, tmp_path)
    executable = ember.runtime.load(artifact)

    good = np.array([3, 0, -1, 2, 1], dtype=np.int64)
    result = _run_example(program, artifact, {"ids": good}, tmp_path)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(
        _parse_outputs(result.stdout)["rows"][1], executable.run({"ids": good})["rows"].ravel()
    )

    bad = np.array([0, 1, 9, 2, 3], dtype=np.int64)
    with pytest.raises(KernelError, match="index 9 is out of range"):
        executable.run({"ids": bad})
    result = _run_example(program, artifact, {"ids": bad}, tmp_path)
    assert result.returncode == 3
    assert "Gather node 'embed'" in result.stderr and "value 9, size 4" in result.stderr


@needs_cc
def test_header_of_awkward_names_compiles(tmp_path: Path) -> None:
    """Tensor names with quotes, backslashes, a comment terminator, non-ASCII and names that
    collide once made identifiers still give a header that compiles without warnings."""
    names = ['a"b\\c', "x*/y", "a.b", "a-b", "日本"]
    description = {
        "inputs": [{"name": n, "shape": [2, 3], "dtype": "float32"} for n in names],
        "outputs": [
            {"name": "out", "shape": [], "dtype": "bfloat16"},
            {"name": "flag", "shape": [4], "dtype": "bool"},
        ],
        "arena_bytes": 0,
        "weights_bytes": 0,
        "extra": {"status_sites": [{"op_type": "Gather", "node": 'q"*/', "kernel": "gather_0"}]},
        "threads": 1,
        "target": {"arch": "x86_64", "cpu": "x86-64", "required_features": []},
        "files": {"weights.bin": {"bytes": 0, "sha256": "0" * 64}},
    }
    (tmp_path / HEADER_FILE).write_text(render_header(description))
    source = tmp_path / "use.c"
    source.write_text(
        '#include "ember.h"\n'
        "const char *input_names[] = EMBER_INPUT_NAMES;\n"
        "const char *sites[] = EMBER_STATUS_SITES;\n"
        "ember_entry_fn entry;\n"
    )
    assert CC is not None
    result = subprocess.run(
        [CC, *WARNINGS, "-fsyntax-only", "-I", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_c_string_escapes() -> None:
    assert c_string('a"b\\c') == '"a\\"b\\\\c"'
    assert c_string("é1") == '"\\303\\2511"'  # octal escapes never swallow a following digit
