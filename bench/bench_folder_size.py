#!/usr/bin/env python3
"""Benchmark (not a test): how much disk a sweep folder takes with `reduce`'s default options (issue 14).

1. The demo sweep (scripts/demo.sh writes out/demo; --demo DIR for another): its unit files, its
   evaluation files and what reduce wrote (cell folders, index.html, comparison.html, plotly.min.js).
2. A 384-cell grid (jobs/all.toml: 3 models x 4 command sets x 4 features x 2 x 2 x 2 flags,
   5 batches, top_n 10), synthetic: unit files of a Qwen2-0.5B-shaped graph (24 layers x 14 heads,
   178,416 edges, shuffled and deflated as io::write_unit stores them; h5py writes them), each
   cell with 120 strong edges of its own over noise, so that its consistent circuit is top_n
   edges as a real cell's is; then `reduce` (default: one plotly.min.js for the folder) and
   `reduce --top-n 100 --out DIR` (100-edge circuits: the largest pages). Printed: the sizes, the
   target (reduced pages under 50 MB), and what the same pages would weigh with plotly.js inlined
   (--self-contained, the behaviour before).

    /usr/bin/python3 bench/bench_folder_size.py [--bin BIN] [--demo DIR] [--cells 384] [--batches 5] [--dir D]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "analysis", "tests"))

FEATURES = ["EngTableName", "EngFieldName", "DefTableName", "DefFieldName"]
TARGET_MB = 50


def size(path):
    """Bytes of a file or everything under a folder (0 when missing)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for d, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(d, f)) for f in files)
    return total


def mb(x):
    return f"{x / 2**20:9.1f} MB"


def reduced(out):
    """What reduce wrote into `out`: (total, plotly.min.js, pages without it, number of HTML pages)."""
    parts = [os.path.join(out, p) for p in ("cells", "index.html", "comparison.html", "plotly.min.js")]
    parts += [os.path.join(out, f) for f in os.listdir(out) if f.startswith("compare-")]
    pages = sum(1 for d, _, fs in os.walk(os.path.join(out, "cells")) for f in fs if f.endswith(".html"))
    plotly = size(os.path.join(out, "plotly.min.js"))
    total = sum(size(p) for p in parts)
    return total, plotly, total - plotly, pages + 2


def report(name, out):
    total, plotly, pages, n_pages = reduced(out)
    inline = pages + n_pages * (plotly or 4.6 * 2**20)
    print(f"{name}: units {mb(size(os.path.join(out, 'units')))}, evaluation {mb(size(os.path.join(out, 'evaluation')))}, "
          f"reduced {mb(total)} ({n_pages} pages {mb(pages)} + plotly.min.js {mb(plotly)}); "
          f"with plotly inlined in every page (--self-contained) {inline / 2**20:.0f} MB")
    return total


def write_grid(out, n_cells, n_batches, layers=24, heads=14, strong=120):
    import numpy as np
    from conftest import CELL_DEFAULTS, cell_id, fnv1a64, make_graph, settings_of, write_unit
    up, down, valid = make_graph(layers, heads)
    edges = np.flatnonzero(valid.ravel())
    rng = np.random.default_rng(0)
    cells = []
    for i in range(n_cells):
        c = dict(CELL_DEFAULTS, model=1 + i // 128, commandset=i // 32 % 4, feature=FEATURES[i // 8 % 4],
                 use_novel_names=bool(i // 4 % 2), use_synonyms_field=bool(i // 2 % 2),
                 use_synonyms_table=bool(i % 2), n_batches=n_batches, batch_size=30, top_n=10,
                 hf_model=f"synthetic/bm{1 + i // 128}")
        c["id"] = cell_id(c)
        c["settings"] = settings_of(c)
        c["settings_hash"] = fnv1a64(c["settings"])
        cells.append(c)
        signal = rng.choice(edges, strong, replace=False)
        sign = rng.choice([-1.0, 1.0], strong)
        for b in range(n_batches):
            scores = rng.standard_normal(valid.shape, dtype=np.float32) * valid
            flat = scores.reshape(-1)
            flat[signal] = sign * (20 + 5 * rng.random(strong))
            write_unit(os.path.join(out, "units", c["id"], f"b{b:05d}.h5"), c, b, up, down, valid, scores,
                       rng.normal(3, 0.5, 30), rng.normal(-1, 0.5, 30), layers, heads, n_positions=40, rng=rng,
                       compress=True)
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump({"version": "bench", "job": "all.toml", "cells": cells}, f)


def run(args):
    t = time.perf_counter()
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {p.returncode}:\n{p.stderr[-2000:]}")
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/src/tinysql-eap"))
    ap.add_argument("--demo", default=os.path.join(ROOT, "out/demo"))
    ap.add_argument("--cells", type=int, default=384)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where the grid is written (default: a temporary folder, removed)")
    a = ap.parse_args()

    if os.path.isfile(os.path.join(a.demo, "sweep.json")):
        run([a.bin, "reduce", a.demo])
        report(f"demo ({a.demo})", a.demo)
    else:
        print(f"demo: {a.demo}/sweep.json missing (run scripts/demo.sh first); skipped")

    tmp = a.dir or tempfile.mkdtemp(prefix="bench_folder_size.")
    try:
        out = os.path.join(tmp, "grid")
        if not os.path.exists(os.path.join(out, "sweep.json")):
            os.makedirs(out, exist_ok=True)
            t = time.perf_counter()
            write_grid(out, a.cells, a.batches)
            print(f"wrote the synthetic grid: {a.cells} cells x {a.batches} batches in {time.perf_counter() - t:.0f} s",
                  flush=True)
        secs = run([a.bin, "reduce", out])
        report(f"{a.cells}-cell grid, top_n 10 (reduce {secs:.0f} s)", out)
        top100 = os.path.join(tmp, "top100")
        secs = run([a.bin, "reduce", out, "--top-n", "100", "--out", top100])
        report(f"{a.cells}-cell grid, reduce --top-n 100 --out ({secs:.0f} s)", top100)
        # Fewer cells than 384: the pages scale with the cells, plotly.min.js stays one file.
        scale = 384 / a.cells
        for name, folder in (("top_n 10", out), ("top_n 100", top100)):
            _, plotly, pages, _ = reduced(folder)
            grid = pages * scale + plotly
            print(f"384-cell grid's reduced pages, {name}: {grid / 2**20:.1f} MB{'' if scale == 1 else ' (extrapolated)'} "
                  f"({'under' if grid < TARGET_MB * 2**20 else 'OVER'} the {TARGET_MB} MB target)")
    finally:
        if not a.dir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
