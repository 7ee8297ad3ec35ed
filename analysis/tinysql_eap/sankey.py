"""A result JSON (ours or the notebook's) drawn again as the notebook's Sankey.

``load_eap_results``, ``results_to_edges`` and ``plot_eap_json_sankey`` are the notebook's
functions. Two changes, both switchable:

- node order: the notebook iterates a Python ``set`` (arbitrary, differs between runs); here nodes
  are ordered as ``tinysql-eap`` orders them (layer, then head number, then "", q, k, v, then the
  layer's MLP, then name; ``input`` first, ``logits`` last), so colours and pictures are stable and
  match the C++ pages. ``notebook_order=True`` restores the set order and the notebook's layer
  parsing (``input``/``logits`` in layer 0).
- ``arrowlen=25``: kept, but dropped when the installed plotly predates it (Debian 12's plotly 5.4).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Dict, List, Tuple

import plotly.graph_objects as go

COLOR_PALETTE = [
    "rgba(31, 119, 180, 0.8)",    # blue
    "rgba(255, 127, 14, 0.8)",    # orange
    "rgba(44, 160, 44, 0.8)",     # green
    "rgba(214, 39, 40, 0.8)",     # red
    "rgba(148, 103, 189, 0.8)",   # purple
    "rgba(140, 86, 75, 0.8)",     # brown
    "rgba(227, 119, 194, 0.8)",   # pink
    "rgba(127, 127, 127, 0.8)",   # gray
    "rgba(188, 189, 34, 0.8)",    # yellow
    "rgba(23, 190, 207, 0.8)",    # cyan
]

_LOGITS = 1 << 30


def load_eap_results(filepath: str) -> Dict[str, Any]:
    with open(filepath, 'r') as f:
        return json.load(f)


def results_to_edges(results: Dict[str, Any]) -> List[Tuple[str, str, float]]:
    return [
        (edge["from_edge"], edge["to_edge"], edge["score"])
        for edge in results["edges"]
    ]


def _digits(s: str) -> bool:
    return s.isdigit() and s.isascii()


def node_key(name: str) -> tuple:
    """(layer, kind, head, sub, name): tinysql-eap's node order (see src/report/sankey.hpp)."""
    if name == "input":
        return (-1, 0, 0, 0, name)
    if name == "logits":
        return (_LOGITS, 0, 0, 0, name)
    p = name.split(".")
    if len(p) >= 3 and p[0] == "head" and _digits(p[1]) and _digits(p[2]):
        p = ["l" + p[1], "h" + p[2]] + p[3:]
    elif len(p) == 2 and p[0] == "mlp" and _digits(p[1]):
        p = ["l" + p[1], "mlp"]
    if len(p) >= 2 and len(p[0]) > 1 and p[0][0] == "l" and _digits(p[0][1:]):
        layer = int(p[0][1:])
        if len(p) == 2 and p[1] == "mlp":
            return (layer, 2, 0, 0, name)
        if len(p[1]) > 1 and p[1][0] == "h" and _digits(p[1][1:]) and len(p) <= 3:
            sub = 0 if len(p) == 2 else {"q": 1, "k": 2, "v": 3}.get(p[2], 4)
            return (layer, 1, int(p[1][1:]), sub, name)
        return (layer, 3, 0, 0, name)
    return (0, 3, 0, 0, name)


def node_layers(nodes: List[str]) -> Dict[str, int]:
    """Layer of each node; ``logits`` follows the last layer."""
    keys = {n: node_key(n) for n in nodes}
    last = max([k[0] for k in keys.values() if k[0] != _LOGITS] + [-1])
    return {n: (last + 1 if k[0] == _LOGITS else k[0]) for n, k in keys.items()}


def node_part(name: str) -> int:
    """Column within a layer: 0 head inputs (q/k/v), 1 head outputs (and input, logits, other names), 2 MLP."""
    k = node_key(name)
    return 2 if k[1] == 2 else 0 if (k[1] == 1 and k[3] > 0) else 1


def _notebook_layer(node: str) -> int:
    return int(node.split('.')[0][1:]) if '.' in node else 0


def sankey_data(top_edges: List[Tuple[str, str, float]], layer_spacing: bool = False,
                notebook_order: bool = False) -> dict:
    """The notebook's nodes, labels, colours, links and ghost links as plain lists.

    Ghost links (``layer_spacing``): the notebook chained layers, which let plotly put a head that
    feeds its own layer's MLP a column early; tinysql-eap chains the columns of a layer (head
    inputs, head outputs, MLP) instead, so that every node lands in its layer's column (as
    src/report/sankey.cpp). ``notebook_order=True`` keeps the notebook's own set order and layers."""
    nodes = set()
    for src, dst, _ in top_edges:
        nodes.add(src)
        nodes.add(dst)
    if notebook_order:
        nodes = list(nodes)
    else:
        layers = node_layers(list(nodes))
        nodes = sorted(nodes, key=lambda n: (layers[n],) + node_key(n)[1:])
    node_to_idx = {node: idx for idx, node in enumerate(nodes)}
    layer_of = _notebook_layer if notebook_order else node_layers(nodes).__getitem__

    node_scores = defaultdict(float)
    for src, dst, score in top_edges:
        node_scores[src] += score
        node_scores[dst] += score
    node_colors = [COLOR_PALETTE[i % len(COLOR_PALETTE)] for i in range(len(nodes))]
    node_labels = [f"{node}<br>{node_scores[node]:.3f}" for node in nodes]

    sources, targets, values, labels, colors = [], [], [], [], []
    included_layer_nodes: Dict[int, List[str]] = defaultdict(list)
    for src, dst, score in top_edges:
        sources.append(node_to_idx[src])
        targets.append(node_to_idx[dst])
        values.append(abs(score))
        labels.append(f"{src} → {dst}<br>{score:.3f}")
        if score == 0:
            edge_color = "rgba(0,0,0,0.1)"
        elif score > 0:
            edge_color = "rgba(0,0,255,0.3)"
        else:
            edge_color = "rgba(255,0,0,0.3)"
        colors.append(edge_color)
        included_layer_nodes[layer_of(src)].append(src)
        included_layer_nodes[layer_of(dst)].append(dst)

    if layer_spacing:
        if notebook_order:
            ordered_lyr_nodes = [ns for _, ns in sorted(included_layer_nodes.items())]
        else:
            columns: Dict[tuple, List[str]] = defaultdict(list)
            for n in nodes:  # already in layer, then node order
                columns[(layer_of(n), node_part(n))].append(n)
            ordered_lyr_nodes = [ns for _, ns in sorted(columns.items())]
        ghost_edge_val = 1e-6
        for lyr_1_nodes, lyr_2_nodes in zip(ordered_lyr_nodes[:-1], ordered_lyr_nodes[1:]):
            first_lyr_1_node = lyr_1_nodes[0]
            first_lyr_2_node = lyr_2_nodes[0]
            for lyr_1_node in lyr_1_nodes:
                sources.append(node_to_idx[lyr_1_node])
                targets.append(node_to_idx[first_lyr_2_node])
                values.append(ghost_edge_val)
                labels.append("")
                colors.append("rgba(0,255,0,0.0)")
            # The notebook linked the first node to the next first twice; once is enough.
            for lyr_2_node in (lyr_2_nodes if notebook_order else lyr_2_nodes[1:]):
                sources.append(node_to_idx[first_lyr_1_node])
                targets.append(node_to_idx[lyr_2_node])
                values.append(ghost_edge_val)
                labels.append("")
                colors.append("rgba(0,255,0,0.0)")

    n_layers = len(included_layer_nodes)
    return {"nodes": nodes, "node_labels": node_labels, "node_colors": node_colors, "sources": sources,
            "targets": targets, "values": values, "labels": labels, "colors": colors,
            "height": max(250, 400), "width": max(50 * n_layers, 600)}


def plot_eap_json_sankey(top_edges: List[Tuple[str, str, float]], layer_spacing: bool = False,
                         notebook_order: bool = False) -> go.Figure:
    """The notebook's figure: go.Sankey, perpendicular arrangement, height 400, width max(50 x layers, 600)."""
    d = sankey_data(top_edges, layer_spacing, notebook_order)
    link = dict(source=d["sources"], target=d["targets"], value=d["values"], label=d["labels"], color=d["colors"],
                arrowlen=25)
    node = dict(label=d["node_labels"], color=d["node_colors"], line=dict(width=0.0), pad=15, thickness=20)
    try:
        trace = go.Sankey(arrangement="perpendicular", node=node, link=link, domain={'y': [0, 1]})
    except ValueError:  # plotly < 5.10 has no link.arrowlen
        link.pop("arrowlen")
        trace = go.Sankey(arrangement="perpendicular", node=node, link=link, domain={'y': [0, 1]})
    fig = go.Figure(trace)
    fig.update_layout(
        font_size=14,
        height=d["height"],
        width=d["width"],
        plot_bgcolor='white',
        paper_bgcolor='white',
        margin=dict(t=20, l=20, r=20, b=20),
        hoverlabel=dict(font_size=14),
    )
    return fig


def figure_from_json(path: str, layer_spacing: bool = True, notebook_order: bool = False) -> go.Figure:
    """What the notebook's "Test reload of saved results" cell shows for ``path``."""
    return plot_eap_json_sankey(results_to_edges(load_eap_results(path)), layer_spacing, notebook_order)


def write_html(fig: go.Figure, path: str) -> None:
    """A page that opens offline: plotly.js inlined."""
    fig.write_html(path, include_plotlyjs=True, full_html=True)
