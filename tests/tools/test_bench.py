"""`ember bench`: inputs seeded within the ranges the model accepts, the accuracy report
against onnxruntime, --json, and one-line errors from every command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ember.engine.feeds import index_ranges, seeded_inputs
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tools import bench
from ember.tools import model_zoo as models
from ember.tools.cli import main
from ember.tools.model_zoo import light_model_path

# Float32 kernels vs onnxruntime: different summation orders, same math.
REL_TOL = 1e-4
VOCAB, TOKEN_TYPES = 50, 2


def _bert() -> onnx.ModelProto:
    return models.bert_encoder(layers=1, seq=16, hidden=32, heads=2, vocab=VOCAB, seed=1,
                               token_types=TOKEN_TYPES)  # fmt: skip


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "bert.onnx"
    onnx.save(_bert(), path)
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One artifact cache for the module: the BERT model compiles once."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMBER_CACHE_DIR", str(path))
        yield path


def test_token_type_ids_are_seeded_within_their_table() -> None:
    """token_type_ids reach a 2-row table through Cast/Unsqueeze/Squeeze: seeding them in
    [0, 16), as before, made onnxruntime refuse the model."""
    model = _bert()
    assert index_ranges(model) == {"input_ids": (0, VOCAB), "token_type_ids": (0, TOKEN_TYPES)}
    feeds = seeded_inputs(model, seed=0)
    assert set(np.unique(feeds["token_type_ids"])) == {0, 1}
    assert 0 <= feeds["input_ids"].min() and feeds["input_ids"].max() < VOCAB
    onnxruntime_outputs(model, feeds)  # raised INVALID_ARGUMENT on out-of-range indices


def _gathers(tables: list[int], *, through_add: bool = False) -> onnx.ModelProto:
    """One int64 input `ids` indexing a table of each size in `tables`; `n` is a plain integer."""
    nodes, inits, outputs = [], [], []
    ids = "ids"
    if through_add:  # arithmetic on indices: the range is no longer the table's
        inits.append(helper.make_tensor("one", TensorProto.INT64, [], [1]))
        nodes.append(helper.make_node("Add", ["ids", "one"], ["ids_plus"]))
        ids = "ids_plus"
    for i, rows in enumerate(tables):
        inits.append(helper.make_tensor(f"t{i}", TensorProto.FLOAT, [rows, 2], [0.5] * rows * 2))
        nodes.append(helper.make_node("Gather", [f"t{i}", ids], [f"y{i}"], axis=0))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None))
    nodes.append(helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT))
    outputs.append(helper.make_tensor_value_info("nf", TensorProto.FLOAT, None))
    inputs = [
        helper.make_tensor_value_info("ids", TensorProto.INT64, [4]),
        helper.make_tensor_value_info("n", TensorProto.INT32, [3]),
    ]
    graph = helper.make_graph(nodes, "gathers", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_input_indexing_two_tables_gets_the_smaller_range() -> None:
    assert index_ranges(_gathers([5, 3])) == {"ids": (0, 3)}
    assert index_ranges(_gathers([5, 3], through_add=True)) == {}  # not a simple chain


def test_gather_nd_index_tuples_get_the_smallest_dim_they_run_over() -> None:
    data = helper.make_tensor("data", TensorProto.FLOAT, [4, 3, 5], [0.0] * 60)
    node = helper.make_node("GatherND", ["data", "idx"], ["y"])
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, [6, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "gather_nd", [idx], [y], [data])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert index_ranges(model) == {"idx": (0, 3)}  # tuples index dims 0 and 1 of data
    onnxruntime_outputs(model, seeded_inputs(model))


def test_recurrent_sequence_lens_range_uses_the_pinned_sequence_length() -> None:
    from ember.tests.kernels.test_recurrent import _layer

    model, _ = _layer("LSTM", sequence_lens=True)
    lens = model.graph.node[0].input[4]
    x = model.graph.input[0]
    seq = x.type.tensor_type.shape.dim[0].dim_value
    assert index_ranges(model)[lens] == (0, seq + 1)
    # With the sequence dim symbolic, the range comes from the shape the model is pinned to.
    x.type.tensor_type.shape.dim[0].dim_param = "T"
    assert lens not in index_ranges(model)
    shape = [7, *(d.dim_value for d in x.type.tensor_type.shape.dim[1:])]
    assert index_ranges(model, {x.name: shape})[lens] == (0, 8)


def test_bench_reports_accuracy_against_onnxruntime(
    bert_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", str(bert_path), "--runs", "2", "--warmup", "0", "--threads", "1"]
    assert main([*argv, "--compare", "onnxruntime"]) == 0
    out = capsys.readouterr().out.splitlines()
    start = out.index("accuracy vs onnxruntime (rel = max abs diff / max |onnxruntime output|):")
    assert out[start + 1].split() == ["output", "max", "abs", "max", "rel"]
    rows = [line.split() for line in out[start + 2 :]]
    assert [r[0] for r in rows] == [o.name for o in _bert().graph.output]
    for _, max_abs, max_rel in rows:
        assert 0 < float(max_rel) < REL_TOL and 0 < float(max_abs)


def test_accuracy_is_the_difference_of_the_outputs() -> None:
    expected = {"y": np.array([1.0, -4.0, np.inf], np.float32), "z": np.zeros(2, np.float32)}
    actual = {"y": np.array([1.5, -4.0, np.inf], np.float32)}
    errors = bench.output_errors(actual, expected)
    assert errors["y"] is not None and (errors["y"].abs, errors["y"].rel) == (0.5, 0.5 / 4)
    assert errors["z"] is None  # ember lacks the output: reported, not skipped
    assert bench.errors_json(errors) == {"y": {"max_abs": 0.5, "max_rel": 0.125}, "z": None}


def test_bench_json_schema(
    bert_path: Path, cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = tmp_path / "ids.npy"
    np.save(ids, np.zeros((1, 16), np.int64))
    argv = ["bench", str(bert_path), "--runs", "3", "--warmup", "1", "--threads", "1", "--json"]
    assert main([*argv, "--compare", "onnxruntime", "--input", f"input_ids={ids}"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {
        "model", "runs", "warmup", "seed", "threads", "inputs", "machine", "engines", "accuracy"
    }  # fmt: skip
    assert (doc["model"], doc["runs"], doc["warmup"], doc["threads"]) == (str(bert_path), 3, 1, 1)
    assert doc["inputs"] == [
        {"name": "input_ids", "shape": [1, 16], "dtype": "int64", "source": "file", "range": None},
        {"name": "token_type_ids", "shape": [1, 16], "dtype": "int64", "source": "seeded",
         "range": [0, TOKEN_TYPES]},
    ]  # fmt: skip
    machine = doc["machine"]
    assert set(machine) == {
        "cpu",
        "microarchitecture",
        "cores",
        "arch",
        "target_cpu",
        "vector_bits",
        "isa",
    }
    assert isinstance(machine["cpu"], str) and machine["cores"] >= 1
    assert machine["vector_bits"] in (128, 256, 512) and "sse2" in machine["isa"]
    import onnxruntime

    import ember

    ember_doc, ort_doc = doc["engines"]
    assert (ember_doc["engine"], ember_doc["version"]) == ("ember", ember.__version__)
    assert (ort_doc["engine"], ort_doc["version"]) == ("onnxruntime", onnxruntime.__version__)
    for engine in doc["engines"]:
        assert engine["threads"] == 1 and engine["runs"] == 3
        latency = engine["latency_ms"]
        assert set(latency) == {"p50", "p90", "p99", "mean", "min"}
        assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"]
        assert engine["throughput_per_s"] > 0
        assert engine["peak_memory_mb"] is None or engine["peak_memory_mb"] >= 0
    accuracy = doc["accuracy"]
    assert accuracy["reference"] == "onnxruntime"
    assert list(accuracy["outputs"]) == [o.name for o in _bert().graph.output]
    for value in accuracy["outputs"].values():
        assert set(value) == {"max_abs", "max_rel"} and 0 < value["max_rel"] < REL_TOL


def test_a_failing_compared_engine_is_one_line_and_ember_still_reports(
    bert_path: Path,
    cache: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> bench.BenchResult:
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :\n  bad things happened\n")

    monkeypatch.setattr(bench, "bench_onnxruntime", refuse)
    argv = ["bench", str(bert_path), "--runs", "2", "--warmup", "0", "--compare", "onnxruntime"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("host: ")  # the machine, then the table
    assert out[3].split()[0] == "ember" and len(out) == 5
    assert out[4] == "onnxruntime: failed, comparison skipped: bad things happened"
    assert main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["engines"][1] == {"engine": "onnxruntime", "error": "bad things happened"}
    assert doc["accuracy"] is None and doc["engines"][0]["engine"] == "ember"


def test_ember_matches_onnxruntime_on_the_seeded_bert_inputs(bert_path: Path, cache: Path) -> None:
    """What `bench` compares, checked independently of its report."""
    import ember

    model = _bert()
    feeds = seeded_inputs(model, seed=0)
    outputs = ember.Config(str(bert_path)).load().run(feeds)
    assert_close(outputs, onnxruntime_outputs(model, feeds), REL_TOL)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "{d}/absent.onnx", "--random-inputs"], "model not found: {d}/absent.onnx"),
        (["bench", "{d}/absent.onnx"], "model not found: {d}/absent.onnx"),
        (["compile", "{d}/absent.onnx", "-o", "{d}/out"], "cannot read model {d}/absent.onnx"),
        (["opt", "{d}/absent.onnx"], "no such file: '{d}/absent.onnx'"),
        (["run", "{bert}", "--input", "nonsense"], "--input nonsense: the model has inputs"),
        (["run", "{bert}", "--input", "input_ids={d}/absent.npy"], "cannot read {d}/absent.npy"),
        (["bench", "{bert}", "--onnx", "{d}/absent.onnx"], "--onnx {d}/absent.onnx: no such file"),
        (["bench", "{bert}", "--input", "token_type_ids={d}/five.npy", "--runs", "1"],
         "index 5 is out of range for dimension 0 of size 2"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line_without_traceback(
    tmp_path: Path,
    bert_path: Path,
    cache: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    np.save(tmp_path / "five.npy", np.full((1, 16), 5, np.int64))
    names = {"d": tmp_path, "bert": bert_path}
    code = main([a.format(**names) for a in argv])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"ember {argv[0]}: error: ") and message.format(**names) in err, err


def test_constant_fill_weights_are_recognised() -> None:
    """The onnx wheel's light models fill their weights with ConstantOfShape: an accuracy
    check on them says little, and benchmarks/compare.py says so."""
    assert bench.constant_fill_share(onnx.load(light_model_path("resnet50"))) > 0.99
    assert bench.constant_fill_share(_bert()) == 0.0


def test_an_artifact_takes_index_ranges_from_its_source_or_onnx(
    tmp_path: Path, bert_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An artifact's .onnx gives the ranges; without one, bench says what it draws instead."""
    source = tmp_path / "bert.onnx"
    source.write_bytes(bert_path.read_bytes())
    artifact = tmp_path / "bert.ember"
    assert main(["compile", str(source), "-o", str(artifact), "-q", "--threads", "1"]) == 0
    capsys.readouterr()
    argv = ["bench", str(artifact), "--runs", "1", "--warmup", "0", "--json"]
    assert main(argv) == 0  # the manifest's source.path
    ranges = [i["range"] for i in json.loads(capsys.readouterr().out)["inputs"]]
    assert ranges == [[0, VOCAB], [0, TOKEN_TYPES]]
    source.unlink()
    # Drawn from [0, 16): token_type_ids 2..15 index past the 2-row table.
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "warning: no .onnx model to derive index ranges from: integer inputs" in err
    assert "ember bench: error: " in err and "out of range" in err
    assert main([*argv, "--onnx", str(bert_path)]) == 0
    ranges = [i["range"] for i in json.loads(capsys.readouterr().out)["inputs"]]
    assert ranges == [[0, VOCAB], [0, TOKEN_TYPES]]


def test_run_random_inputs_are_seeded_within_range(
    bert_path: Path, cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "run",
        str(bert_path),
        "--random-inputs",
        "--seed",
        "3",
        "--npz",
        str(tmp_path / "o.npz"),
    ]
    assert main(argv) == 0  # token_type_ids drawn from [0, 16) made the Gather kernel refuse
    model = _bert()
    with np.load(tmp_path / "o.npz") as archive:
        outputs = dict(archive)
    expected = onnxruntime_outputs(model, seeded_inputs(model, seed=3))
    assert_close(outputs, expected, REL_TOL)
