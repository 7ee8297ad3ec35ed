#!/usr/bin/env python3
"""sankey_dom_check.py PAGE DOM: checks the Sankey plotly drew (DOM: chromium --dump-dom of PAGE)
against the page's own figure (`var data`, `var layout`):
- every node is drawn at its fixed place (x: its column, y: its centre) within a pixel, and with
  the height |value| x the page's scale would give, so plotly's layout and ours agree;
- every node sits in its layer's column: the layers' x ranges follow the layer order and do not
  overlap (input first, logits last);
- in a column, node centres are at least one two-line label apart (labels do not overlap).
Prints one "ok" line; exits 1 with the first problem."""
import html
import json
import re
import sys


def script_var(text, name):
    key = f"var {name} = "
    a = text.index(key) + len(key)
    return json.loads(text[a:text.index(";\n", a)])


def layer_of(name, last):
    if name == "input":
        return -1
    if name == "logits":
        return last + 1
    m = re.match(r"^(?:l(\d+)\.|head\.(\d+)\.|mlp\.(\d+)$)", name)
    return int(next(g for g in m.groups() if g is not None)) if m else 0


def main(page, dom):
    text = open(page, encoding="utf-8").read()
    trace, layout = script_var(text, "data")[0], script_var(text, "layout")
    node = trace["node"]
    m = layout["margin"]
    width, height = layout["width"] - m["l"] - m["r"], layout["height"] - m["t"] - m["b"]
    drawn = re.findall(r'<g class="sankey-node" transform="translate\(([-0-9.e]+),([-0-9.e]+)\)"[^>]*>'
                       r'<rect class="node-rect" width="([-0-9.e]+)" height="([-0-9.e]+)"[^>]*></rect>'
                       r'<text class="node-label"[^>]*data-unformatted="([^"]*)"', open(dom, encoding="utf-8").read())
    if len(drawn) != len(node["label"]):
        sys.exit(f"FAIL: {page}: {len(drawn)} nodes drawn, the figure has {len(node['label'])}")
    index = {lab: i for i, lab in enumerate(node["label"])}
    values = [0.0] * len(node["label"])
    ins, outs = [0.0] * len(values), [0.0] * len(values)
    for s, t, v in zip(trace["link"]["source"], trace["link"]["target"], trace["link"]["value"]):
        outs[s] += v
        ins[t] += v
    values = [max(a, b) for a, b in zip(ins, outs)]
    scale = None
    names, xs = [], []
    for x, y, w, h, label in drawn:
        label = html.unescape(label)
        i = index.get(label)
        if i is None:
            sys.exit(f"FAIL: {page}: drawn node {label!r} is not in the figure")
        x, y, h = float(x), float(y), float(h)
        want_x = node["x"][i] * width - node["thickness"] / 2
        want_y = node["y"][i] * height
        if abs(x - want_x) > 1 or abs(y + h / 2 - want_y) > 1:
            sys.exit(f"FAIL: {page}: node {label!r} drawn at ({x:.1f}, {y + h / 2:.1f}), "
                     f"its place is ({want_x:.1f}, {want_y:.1f})")
        if values[i] > 1e-3 and h > 1:
            k = h / values[i]
            if scale is None:
                scale = k
            elif abs(k - scale) > 0.01 * scale:
                sys.exit(f"FAIL: {page}: node {label!r} has {k:.2f} px per unit, others {scale:.2f}")
        names.append(label.split("<br>")[0])
        xs.append(x)
    last = max((layer_of(n, 0) for n in names if n not in ("input", "logits")), default=0)
    bands = {}
    for n, x in zip(names, xs):
        lo, hi = bands.get(layer_of(n, last), (x, x))
        bands[layer_of(n, last)] = (min(lo, x), max(hi, x))
    previous = None
    for layer in sorted(bands):
        if previous is not None and bands[layer][0] <= bands[previous][1]:
            sys.exit(f"FAIL: {page}: layer {layer}'s nodes (x from {bands[layer][0]:.1f}) reach into layer "
                     f"{previous}'s column (x to {bands[previous][1]:.1f})")
        previous = layer
    label_h = 2 * 1.3 * layout["font"]["size"]
    columns = {}
    for (x, y, w, h, label), n in zip(drawn, names):
        columns.setdefault(round(float(x)), []).append((float(y) + float(h) / 2, n))
    for col in columns.values():
        col.sort()
        for (ya, a), (yb, b) in zip(col, col[1:]):
            if yb - ya < label_h - 1:
                sys.exit(f"FAIL: {page}: labels of {a} and {b} overlap ({yb - ya:.1f} px apart, a label is {label_h:.1f})")
    print(f"ok: {page}: {len(drawn)} nodes at their places, in {len(bands)} layer columns, labels apart")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
