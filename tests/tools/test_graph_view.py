"""`ember graph`: the graph after ember's passes as HTML (inline SVG), Graphviz text or SVG."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree

import onnx
import pytest

from ember.tests.tools.test_profile import twin_convs
from ember.tools import cli
from ember.tools.graph_view import model_graph, to_dot, to_html
from ember.tools.model_zoo import bert_encoder


def dot_structure(text: str) -> tuple[set[str], list[tuple[str, str]]]:
    """The node ids and edges of `to_dot` text; fails on any line that is neither."""
    lines = text.strip().splitlines()
    assert re.fullmatch(r"digraph \w+ \{", lines[0]) and lines[-1] == "}"
    nodes, edges = set(), []
    for line in lines[1:-1]:
        if node := re.fullmatch(r'  (\w+) \[shape=(box|ellipse), label="(?:[^"\\]|\\.)*"\];', line):
            nodes.add(node.group(1))
        elif edge := re.fullmatch(r"  (\w+) -> (\w+);", line):
            edges.append((edge.group(1), edge.group(2)))
        else:
            assert line in ("  rankdir=TB;", '  node [fontname="Helvetica"];'), line
    assert {end for edge in edges for end in edge} <= nodes
    return nodes, edges


def reaches(edges: list[tuple[str, str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for a, b in edges:
            if a == todo[-1] and b not in seen:
                seen.add(b)
                todo.insert(0, b)
        todo.pop()
    return goal in seen


@pytest.mark.parametrize("stage", ["import", "graph", "kernel"])
def test_each_stage_draws_inputs_ops_and_outputs_connected(stage: str, tmp_path: Path) -> None:
    path = tmp_path / "twin.onnx"
    onnx.save(twin_convs(), str(path))
    graph = model_graph(path, stage)
    labels = [n.label for n in graph.nodes if n.kind == "op"]
    if stage == "import":
        assert labels.count("relu") == 2 and labels.count("conv+bias") == 2
    else:  # Conv + bias + Relu fused; the label says what the kernel absorbed
        assert labels[:2] == ["conv+bias+relu" if stage == "graph" else "conv2d+bias+relu"] * 2
    nodes, edges = dot_structure(to_dot(graph))
    assert {"in0", "out0"} <= nodes and reaches(edges, "in0", "out0")
    first = next(n for n in graph.nodes if n.kind == "op")
    fused = " + r1" if stage != "import" else ""  # the Relu's node (named by its output)
    assert first.origin == f"Conv 'c1'{fused}" and first.shapes == ["1x12x24x24 f32"]


def test_bert_graph_names_the_fused_ops(tmp_path: Path) -> None:
    model = bert_encoder(layers=1)
    path = tmp_path / "bert.onnx"
    onnx.save(model, str(path))
    graph = model_graph(path, "graph")
    labels = {n.label for n in graph.nodes}
    assert {"attention", "matmul+bias+gelu", "matmul+bias+residual", "layer_norm"} <= labels
    # The attention op is named by its Softmax and lists both MatMuls it swallowed.
    attention = next(n for n in graph.nodes if n.label == "attention")
    assert attention.origin.startswith("Softmax '") and attention.origin.count("matmul_") == 2
    io = {n.label for n in graph.nodes if n.kind != "op"}
    assert io == {v.name for v in [*model.graph.input, *model.graph.output]}
    # Without Graphviz, .svg is the built-in layout (with it, dot's): either way an SVG.
    svg = tmp_path / "bert.svg"
    assert cli.main(["graph", str(path), "-o", str(svg)]) == 0
    assert "<svg" in svg.read_text() and "attention" in svg.read_text()


def test_cli_writes_a_self_contained_page(tmp_path: Path, capsys) -> None:
    path = tmp_path / "twin.onnx"
    onnx.save(twin_convs(), str(path))
    out = tmp_path / "graph.html"
    assert cli.main(["graph", str(path), "-o", str(out)]) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "</html>" in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert page.count("conv+bias+relu") >= 2 and "Conv &#x27;c2&#x27;" in page
    assert ">x<" in page and ">y<" in page  # the model's input and output
    assert page == to_html(model_graph(path), "twin.onnx")
    # The drawing is well-formed SVG: every node a group, every edge a path.
    svg = ElementTree.fromstring(page[page.index("<svg") : page.index("</svg>") + 6])
    ns = "{http://www.w3.org/2000/svg}"
    assert len(svg.findall(f"{ns}g")) == 5 and len(svg.findall(f"{ns}path")) == 4


def test_cli_refuses_an_unknown_format_in_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "twin.onnx"
    onnx.save(twin_convs(), str(path))
    assert cli.main(["graph", str(path), "-o", str(tmp_path / "graph.png")]) == 1
    err = capsys.readouterr().err
    assert "name it .html, .dot or .svg" in err and len(err.strip().splitlines()) == 1


def test_opt_emit_dot_draws_the_graph_stage(tmp_path: Path, capsys) -> None:
    path = tmp_path / "twin.onnx"
    onnx.save(twin_convs(), str(path))
    assert cli.main(["opt", str(path), "--emit", "dot"]) == 0
    text = capsys.readouterr().out
    nodes, edges = dot_structure(text)
    assert text.count("conv+bias+relu") == 2 and reaches(edges, "in0", "out0")


def test_view_is_the_graph_command(tmp_path: Path) -> None:
    """`ember view` (the issue's name for it) draws the same page as `ember graph`."""
    path = tmp_path / "twin.onnx"
    onnx.save(twin_convs(4, 4), str(path))
    out = tmp_path / "view.html"
    assert cli.main(["view", str(path), "-o", str(out)]) == 0
    assert out.read_text() == to_html(model_graph(path), "twin.onnx")
