"""Charts of the benchmark tables in docs/performance.md, drawn from the scripts' JSON results.

    python benchmarks/charts.py benchmarks/results/min_latency_2026-11-30.json -o docs/img/latency.svg

`benchmarks/min_latency.py --json results.json --chart latency.svg` writes both after
measuring; this script redraws a chart from a results file without measuring again. Needs
matplotlib (`pip install ember[bench]`). Not a test: the numbers are the machine's.

A results file (what min_latency.py writes):

    {"machine": "...", "date": "2026-11-30", "command": "...", "statistic": "...",
     "rows": [{"model": "resnet50", "threads": 1, "ember_ms": 37.03, "onnxruntime_ms": 36.67},
              ...]}
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Bar colours per thread count (colour-blind safe pair, then matplotlib's cycle).
_COLOURS = {1: "#4477aa", 2: "#ee6677"}


def read_results(path: str | Path) -> dict[str, Any]:
    """The results document at `path`, its rows checked (ValueError naming what is wrong)."""
    document = json.loads(Path(path).read_text())
    rows = document.get("rows") if isinstance(document, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: no 'rows' list of measurements")
    for index, row in enumerate(rows):
        missing = {"model", "threads", "ember_ms", "onnxruntime_ms"} - set(row)
        if missing:
            raise ValueError(f"{path}: row {index} lacks {sorted(missing)}")
        if row["ember_ms"] <= 0 or row["onnxruntime_ms"] <= 0:
            raise ValueError(f"{path}: row {index} ({row['model']}) has a time <= 0")
    return document


def geomean_ratios(rows: Sequence[dict[str, Any]]) -> dict[int, float]:
    """Geometric mean of ember ms / onnxruntime ms per thread count."""
    by_threads: dict[int, list[float]] = {}
    for row in rows:
        ratio = row["ember_ms"] / row["onnxruntime_ms"]
        by_threads.setdefault(int(row["threads"]), []).append(ratio)
    return {
        t: math.exp(sum(map(math.log, ratios)) / len(ratios))
        for t, ratios in sorted(by_threads.items())
    }


def latency_chart(document: dict[str, Any], output: str | Path) -> Path:
    """Draw ember's latency relative to onnxruntime's, one group of bars per model (one bar
    per thread count; below 1.0 = ember faster), to `output` (.svg or .png)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    rows = document["rows"]
    models = list(dict.fromkeys(row["model"] for row in rows))
    threads = sorted({int(row["threads"]) for row in rows})
    ratio = {
        (row["model"], int(row["threads"])): row["ember_ms"] / row["onnxruntime_ms"] for row in rows
    }
    means = geomean_ratios(rows)
    height = 0.8 / len(threads)
    figure, axes = plt.subplots(figsize=(7.5, 0.45 * len(models) + 1.6))
    for k, count in enumerate(threads):
        positions = [i + (k - (len(threads) - 1) / 2) * height for i in range(len(models))]
        values = [ratio.get((m, count), math.nan) for m in models]
        axes.barh(
            positions,
            values,
            height=height,
            color=_COLOURS.get(count),
            label=f"{count} thread{'s' if count > 1 else ''} (geomean {means[count]:.2f})",
        )
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_yticks(range(len(models)), models)
    axes.invert_yaxis()  # first model on top, as in the table
    axes.set_xlabel("ember latency / onnxruntime latency (below 1: ember faster)")
    title = "ember vs onnxruntime"
    if document.get("date"):
        title += f", {document['date']}"
    axes.set_title(title, fontsize=11)
    if document.get("machine"):
        figure.text(0.01, 0.005, document["machine"], fontsize=7, color="#555555")
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(axis="x", linewidth=0.4, alpha=0.5)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # No date in the SVG and fixed ids: a redrawn chart of the same numbers is the same file.
    # Text stays text (model names searchable, the file a third of the size with glyph paths).
    matplotlib.rcParams["svg.hashsalt"] = "ember"
    matplotlib.rcParams["svg.fonttype"] = "none"
    figure.savefig(output, metadata={"Date": None} if output.suffix == ".svg" else None)
    plt.close(figure)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", help="a results .json (benchmarks/results/)")
    parser.add_argument("-o", "--output", required=True, help="the chart, .svg or .png")
    args = parser.parse_args(argv)
    try:
        path = latency_chart(read_results(args.results), args.output)
    except (OSError, ValueError) as error:
        print(f"charts.py: error: {error}", file=sys.stderr)
        return 1
    except ImportError:
        print("charts.py: error: needs matplotlib (pip install ember[bench])", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
