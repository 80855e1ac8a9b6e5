"""`ember graph`: a picture of a model's graph as ember compiles it.

    ember graph model.onnx -o graph.html                  # self-contained page, inline SVG
    ember graph model.onnx -o graph.dot                   # Graphviz text
    ember graph model.onnx -o graph.svg                   # via Graphviz `dot` when installed
    ember graph model.onnx -o graph.html --stage kernel   # import | graph (default) | kernel

The graph is the entry function after a stage of the default pipeline: `import` (the ONNX
nodes as ember's graph ops), `graph` (after the graph passes: folded constants and batch
norms, fused ops labelled with what they absorbed, e.g. "conv+bias+relu", "attention") or
`kernel` (the kernels that run, in destination-passing style over the planned arena). Each
node shows its op, the ONNX node it comes from and its output shapes. Constants and weights
are not drawn. The HTML page needs no network and no Graphviz: it lays the graph out itself,
one row per depth, and lists the nodes in a table below.
"""

from __future__ import annotations

import argparse
import html
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, MemRefType, ModuleOp, StringAttr, TensorType
from xdsl.ir import Attribute, Operation, SSAValue

from ember.engine.shapes import InputShapes, read_model
from ember.passes.pipeline import GRAPH_STAGE, KERNEL_STAGE
from ember.passes.program import absorbed_nodes, entry_function, origin_of
from ember.runtime.errors import EmberError, InputError
from ember.tools.options import add_input_shape_option
from ember.tools.verbosity import apply_verbosity, verbosity_options

STAGES = {"import": "", "graph": GRAPH_STAGE, "kernel": f"{GRAPH_STAGE},{KERNEL_STAGE}"}
# Ops that only name data (weights, views of the arena, index constants): not drawn.
_DATA_OPS = {"graph.constant", "kernel.weight", "memref.view", "arith.constant"}
# Operands a kernel writes (destination-passing style); `workspace` is scratch, neither.
_WRITTEN = {"output", "y", "y_h", "y_c"}


@dataclass
class Node:
    id: str
    kind: str  # "input", "op" or "output"
    label: str  # "conv+bias+relu", or the tensor's name for inputs/outputs
    shapes: list[str]  # of the values it produces (of the tensor, for inputs/outputs)
    origin: str = ""  # "Conv 'conv_2'": the ONNX node it comes from, when known


@dataclass
class Graph:
    stage: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)


def _shape(ty: Attribute) -> str:
    if isinstance(ty, TensorType | MemRefType):
        dims = "x".join("?" if d < 0 else str(d) for d in ty.get_shape()) or "scalar"
        return f"{dims} {ty.element_type}"
    return str(ty)


def op_label(op: Operation) -> str:
    """What an op computes, with what fusion absorbed: conv+bias+residual+relu, attention,
    elementwise(sub+mul+exp)."""
    base = op.name.split(".", 1)[-1]
    if op.name == "kernel.elementwise" and op.regions:
        body = [o.name.split(".", 1)[-1] for o in op.regions[0].walk() if o is not op]
        body = [name for name in body if name not in ("yield", "constant")]
        return f"{base}({'+'.join(body)})" if body else base
    parts = [base]
    if "residual" in _operand_names(op):  # a conv/matmul: bias and residual add are epilogues
        parts += [extra for extra in ("bias", "residual") if getattr(op, extra) is not None]
    activation = op.properties.get("activation") or op.attributes.get("activation")
    if isinstance(activation, StringAttr):
        parts.append(activation.data)
    return "+".join(parts)


def _operand_names(op: Operation) -> list[str]:
    definition = getattr(type(op), "get_irdl_definition", None)
    return [name for name, _ in definition().operands] if definition else []


def _written(op: Operation) -> list[SSAValue]:
    result = []
    for name in _operand_names(op):
        if name in _WRITTEN:
            value = getattr(op, name, None)
            if isinstance(value, SSAValue):
                result.append(value)
            elif isinstance(value, Sequence):
                result.extend(v for v in value if isinstance(v, SSAValue))
    return result


def _names(fn: func.FuncOp, key: str) -> list[str]:
    attr = fn.attributes.get(key)
    return (
        [a.data for a in attr.data if isinstance(a, StringAttr)]
        if isinstance(attr, ArrayAttr)
        else []
    )


def graph_of(module: ModuleOp, stage: str) -> Graph:
    """The entry function's ops as nodes, their data flow as edges. A kernel's written
    operands (`output`) are what it produces; a reader's edge comes from the last writer."""
    fn = entry_function(module)
    graph = Graph(stage)
    input_names, output_names = _names(fn, "ember.input_names"), _names(fn, "ember.output_names")
    args = list(fn.body.block.args)
    producer: dict[SSAValue, str] = {}
    for index, name in enumerate(input_names):
        node = Node(f"in{index}", "input", name, [_shape(args[index].type)])
        graph.nodes.append(node)
        producer[args[index]] = node.id
    # After bufferization the outputs are arguments following the inputs.
    output_args = args[len(input_names) : len(input_names) + len(output_names)]
    output_args = [a for a in output_args if isinstance(a.type, MemRefType)]
    aliases: dict[SSAValue, SSAValue] = {}
    returned: list[SSAValue] = []
    edges: set[tuple[str, str]] = set()
    for op in fn.body.block.ops:
        if isinstance(op, func.ReturnOp):
            returned = list(op.operands)
            continue
        if op.name in _DATA_OPS:
            continue
        node_id = f"op{len(graph.nodes)}"
        written = _written(op)
        produced = list(op.results) + written
        origin = origin_of(op)
        origin_text = ""
        if origin.get("op_type"):
            fused = absorbed_nodes(op)
            origin_text = f"{origin['op_type']} '{origin.get('node', '?')}'"
            origin_text += f" + {', '.join(fused)}" if fused else ""
        graph.nodes.append(
            Node(
                node_id,
                "op",
                op_label(op),
                [_shape(v.type) for v in produced],
                origin_text,
            )
        )
        for operand in op.operands:
            source = producer.get(aliases.get(operand, operand))
            if operand not in written and source is not None and (source, node_id) not in edges:
                edges.add((source, node_id))
                graph.edges.append((source, node_id))
        for value in produced:
            producer[value] = node_id
    finals = returned or list(output_args)
    for index, name in enumerate(output_names):
        value = finals[index] if index < len(finals) else None
        node = Node(f"out{index}", "output", name, [_shape(value.type)] if value else [])
        graph.nodes.append(node)
        if value is not None and value in producer:
            graph.edges.append((producer[value], node.id))
    return graph


def model_graph(
    model: str | Path, stage: str = "graph", input_shapes: InputShapes | None = None
) -> Graph:
    """`model`'s entry function after `stage` (import, graph or kernel) as a Graph."""
    from ember.core.context import make_context
    from ember.core.target import host_target
    from ember.engine.compile import annotate_origins
    from ember.engine.shapes import static_input_shapes
    from ember.frontend.onnx_importer import import_model
    from ember.passes.pipeline import build_pipeline

    if stage not in STAGES:
        raise InputError(f"unknown stage '{stage}': one of {', '.join(STAGES)}")
    proto = read_model(model)
    module, weights = import_model(proto, static_input_shapes(proto, input_shapes))
    annotate_origins(module, proto)
    if STAGES[stage]:
        build_pipeline(STAGES[stage]).apply(make_context(weights, host_target()), module)
    return graph_of(module, stage)


# -- rendering ----------------------------------------------------------------------------------


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _node_text(node: Node) -> list[str]:
    return [node.label, *([node.origin] if node.origin else []), *node.shapes]


def to_dot(graph: Graph) -> str:
    """Graphviz text: inputs and outputs as ellipses, ops as boxes, top to bottom."""
    lines = [f"digraph ember_{graph.stage} {{", "  rankdir=TB;", '  node [fontname="Helvetica"];']
    for node in graph.nodes:
        shape = "box" if node.kind == "op" else "ellipse"
        label = _dot_quote("\n".join(_node_text(node)))
        lines.append(f"  {node.id} [shape={shape}, label={label}];")
    lines += [f"  {a} -> {b};" for a, b in graph.edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _layers(graph: Graph) -> dict[str, int]:
    """Depth of each node: the longest path to it from an input (edges follow program order)."""
    depth = {node.id: 0 for node in graph.nodes}
    incoming: dict[str, list[str]] = {}
    for a, b in graph.edges:
        incoming.setdefault(b, []).append(a)
    for node in graph.nodes:  # program order is a topological order
        sources = incoming.get(node.id, [])
        if sources:
            depth[node.id] = 1 + max(depth[s] for s in sources)
    return depth


BOX_W, BOX_H, GAP_X, GAP_Y, LINE = 230, 62, 24, 46, 14


def to_svg(graph: Graph) -> str:
    """The graph laid out one row per depth, as a standalone SVG document."""
    depth = _layers(graph)
    rows: dict[int, list[Node]] = {}
    for node in graph.nodes:
        rows.setdefault(depth[node.id], []).append(node)
    widest = max((len(r) for r in rows.values()), default=1)
    width = widest * (BOX_W + GAP_X) + GAP_X
    height = (max(rows, default=0) + 1) * (BOX_H + GAP_Y) + GAP_Y
    position: dict[str, tuple[float, float]] = {}
    for level, row in rows.items():
        offset = (width - len(row) * (BOX_W + GAP_X) + GAP_X) / 2
        for k, node in enumerate(row):
            position[node.id] = (offset + k * (BOX_W + GAP_X), GAP_Y + level * (BOX_H + GAP_Y))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'font-family="Helvetica, Arial, sans-serif" font-size="11">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
    ]
    for a, b in graph.edges:
        (xa, ya), (xb, yb) = position[a], position[b]
        out.append(
            f'<path d="M{xa + BOX_W / 2:.0f},{ya + BOX_H:.0f} C{xa + BOX_W / 2:.0f},'
            f"{ya + BOX_H + GAP_Y / 2:.0f} {xb + BOX_W / 2:.0f},{yb - GAP_Y / 2:.0f} "
            f'{xb + BOX_W / 2:.0f},{yb:.0f}" fill="none" stroke="#555" marker-end="url(#arrow)"/>'
        )
    colors = {"input": "#dbeafe", "output": "#dcfce7", "op": "#f5f5f4"}
    for node in graph.nodes:
        x, y = position[node.id]
        radius = 28 if node.kind != "op" else 4
        out.append(f'<g id="{node.id}"><title>{html.escape(" | ".join(_node_text(node)))}</title>')
        out.append(
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="{radius}" '
            f'fill="{colors[node.kind]}" stroke="#444"/>'
        )
        for k, text in enumerate(_node_text(node)[:4]):
            weight = ' font-weight="bold"' if k == 0 else ""
            shown = text if len(text) <= 36 else text[:35] + "…"
            out.append(
                f'<text x="{x + BOX_W / 2:.0f}" y="{y + 15 + k * LINE:.0f}" '
                f'text-anchor="middle"{weight}>{html.escape(shown)}</text>'
            )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def to_html(graph: Graph, title: str) -> str:
    """A self-contained page (no scripts, no network): the SVG, then a table of the nodes."""
    names = {node.id: node.label for node in graph.nodes}
    rows = []
    for node in graph.nodes:
        sources = ", ".join(names[a] for a, b in graph.edges if b == node.id)
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(cell)}</td>"
                for cell in (
                    node.id,
                    node.kind,
                    node.label,
                    node.origin,
                    "; ".join(node.shapes),
                    sources,
                )
            )
            + "</tr>"
        )
    ops = sum(node.kind == "op" for node in graph.nodes)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}: {graph.stage}</title>"
        "<style>body{font-family:Helvetica,Arial,sans-serif;margin:16px}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:left}.graph{overflow:auto}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1><p>after the <b>{graph.stage}</b> stage: {ops} ops, "
        f"{len(graph.edges)} edges (constants and weights not drawn)</p>\n"
        f"<div class='graph'>{to_svg(graph)}</div>\n"
        "<table><tr><th>id</th><th>kind</th><th>op</th><th>ONNX node</th><th>shapes</th>"
        "<th>inputs</th></tr>\n" + "\n".join(rows) + "\n</table></body></html>\n"
    )


def render(graph: Graph, path: Path, title: str) -> str:
    """The file text for `path`'s suffix (.html, .dot, .svg); .svg goes through Graphviz's
    `dot` when it is installed, else uses the built-in layout."""
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        return to_html(graph, title)
    if suffix in (".dot", ".gv"):
        return to_dot(graph)
    if suffix == ".svg":
        dot = shutil.which("dot")
        if dot is None:
            return to_svg(graph)
        done = subprocess.run(
            [dot, "-Tsvg"], input=to_dot(graph), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise EmberError(f"graphviz dot failed: {done.stderr.strip()}")
        return done.stdout
    raise InputError(f"cannot tell the format of '{path}': name it .html, .dot or .svg")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        parents=[verbosity_options()], prog="ember graph", description=__doc__.splitlines()[0]
    )
    parser.add_argument("model", help="an .onnx file")
    parser.add_argument("-o", "--output", required=True, help="graph.html, graph.dot or graph.svg")
    parser.add_argument("--stage", choices=list(STAGES), default="graph")
    add_input_shape_option(parser)
    args = parser.parse_args(argv)
    apply_verbosity(args)
    try:
        out = Path(args.output)
        if out.suffix.lower() not in (".html", ".htm", ".dot", ".gv", ".svg"):
            raise InputError(f"cannot tell the format of '{out}': name it .html, .dot or .svg")
        graph = model_graph(args.model, args.stage, args.input_shapes)
        out.write_text(render(graph, out, Path(args.model).name))
    except (EmberError, ValueError, OSError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    ops = sum(node.kind == "op" for node in graph.nodes)
    print(f"{out}: {ops} ops after the {args.stage} stage")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
