"""benchmarks/charts.py and `benchmarks/min_latency.py --json/--chart`: the performance chart in
docs/performance.md is drawn from a results file, so it is redrawn without measuring again."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

import ember

BENCHMARKS = Path(ember.__file__).parent / "benchmarks"
RESULTS = BENCHMARKS / "results" / "min_latency_2026-11-30.json"

pytest.importorskip("matplotlib")


@pytest.fixture
def benchmark_scripts(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The benchmark scripts import each other by bare name (`from compare import ...`)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("charts", "min_latency"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return BENCHMARKS


def test_committed_results_give_the_documented_geomeans(benchmark_scripts: Path) -> None:
    import charts

    document = charts.read_results(RESULTS)
    assert len(document["rows"]) == 24  # 12 models x 1, 2 threads
    means = charts.geomean_ratios(document["rows"])
    assert round(means[1], 2) == 0.79 and round(means[2], 2) == 0.87  # docs/performance.md


def test_chart_draws_every_model_and_is_reproducible(benchmark_scripts: Path, tmp_path) -> None:
    import charts

    first, second = tmp_path / "a.svg", tmp_path / "b.svg"
    assert charts.main([str(RESULTS), "-o", str(first)]) == 0
    charts.main([str(RESULTS), "-o", str(second)])
    assert first.read_bytes() == second.read_bytes()  # no date, fixed ids
    svg = ElementTree.parse(first).getroot()
    texts = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    models = {row["model"] for row in json.loads(RESULTS.read_text())["rows"]}
    assert models <= texts
    legend = " ".join(t or "" for t in texts)
    assert "geomean 0.79" in legend and "geomean 0.87" in legend
    # One bar per model and thread count.
    bars = [
        p for p in svg.iter("{http://www.w3.org/2000/svg}g") if p.get("id", "").startswith("patch")
    ]
    assert len(bars) >= 24


def test_chart_refuses_a_results_file_without_rows(
    benchmark_scripts: Path, tmp_path, capsys
) -> None:
    import charts

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": [{"model": "m", "threads": 1, "ember_ms": 1.0}]}))
    assert charts.main([str(bad), "-o", str(tmp_path / "c.svg")]) == 1
    err = capsys.readouterr().err
    assert "row 0 lacks ['onnxruntime_ms']" in err and len(err.strip().splitlines()) == 1


def test_min_latency_writes_json_and_chart(
    benchmark_scripts: Path, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--json and --chart from what was measured (the measurement itself stubbed: no timing
    in tests)."""
    import min_latency

    times = {("a", 1): (2.0, 4.0), ("a", 2): (1.5, 2.0), ("b", 1): (3.0, 2.0), ("b", 2): (2.0, 1.0)}
    current: list[str] = []

    def load_model(name: str) -> str:
        current[:] = [name]
        return name

    monkeypatch.setattr(min_latency, "selected_models", lambda groups: ["a", "b"])
    monkeypatch.setattr(min_latency, "load_model", load_model)
    monkeypatch.setattr(min_latency, "model_inputs", lambda model: {})
    monkeypatch.setattr(min_latency, "machine", lambda: "test machine")
    monkeypatch.setattr(
        min_latency, "measure", lambda model, feeds, t, runs, alternate: times[(model, t)]
    )
    out_json, out_svg = tmp_path / "r.json", tmp_path / "r.svg"
    argv = ["--models", "default", "--json", str(out_json), "--chart", str(out_svg)]
    assert min_latency.main(argv) == 0
    document = json.loads(out_json.read_text())
    assert document["machine"] == "test machine"
    assert [(r["model"], r["threads"], r["ember_ms"]) for r in document["rows"]] == [
        ("a", 1, 2.0), ("a", 2, 1.5), ("b", 1, 3.0), ("b", 2, 2.0)
    ]  # fmt: skip
    assert "<svg" in out_svg.read_text()
