#!/usr/bin/env python3
"""Memory of analysis/'s load_sweep on BM2-shaped sweeps (issue 14), extrapolated to a 384-cell grid.

Writes synthetic sweeps (h5py, the unit-file layout of src/io/unit_file.hpp) of a Qwen2-0.5B-shaped
graph (24 layers x 14 heads, q/k/v inputs: 360 x 1032 nodes, 178,416 edges) with 2, 4 and 8 cells
of 5 batches, loads each in a fresh process and prints the peak resident memory and the
tracemalloc peak. The growth per cell is a straight line (tests/test_scale.py checks that it is);
the 384-cell figure is that line extrapolated. The tidy table is measured on one cell.

    /usr/bin/python3 bench/bench_analysis.py [--cells 2,4,8] [--batches 5] [--layers 24] [--heads 14] [--dir D]

Target: load_sweep(wide=True) of the 384-cell grid under 2 GB.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "analysis"))
sys.path.insert(0, os.path.join(ROOT, "analysis", "tests"))

GRID_CELLS = 384
FEATURES = ["EngTableName", "EngFieldName", "DefTableName", "DefFieldName"]


def write_sweep(out, n_cells, n_batches, layers, heads):
    import numpy as np
    from conftest import CELL_DEFAULTS, cell_id, fnv1a64, make_graph, settings_of, write_unit
    up, down, valid = make_graph(layers, heads)
    rng = np.random.default_rng(0)
    cells = []
    for i in range(n_cells):
        c = dict(CELL_DEFAULTS, model=2, commandset=i % 4, feature=FEATURES[(i // 4) % 4],
                 use_novel_names=bool(i // 16 % 2), use_synonyms_field=bool(i // 32 % 2),
                 use_synonyms_table=bool(i // 64 % 2), n_batches=n_batches, batch_size=30,
                 hf_model="synthetic/bm2")
        c["id"] = cell_id(c)
        c["settings"] = settings_of(c)
        c["settings_hash"] = fnv1a64(c["settings"])
        cells.append(c)
        for b in range(n_batches):
            scores = (rng.standard_normal(valid.shape, dtype=np.float32) * valid)
            write_unit(os.path.join(out, "units", c["id"], f"b{b:05d}.h5"), c, b, up, down, valid, scores,
                       rng.normal(3, 0.5, 30), rng.normal(-1, 0.5, 30), layers, heads, n_positions=40, rng=rng)
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump({"version": "bench", "job": "bench.toml", "cells": cells}, f)
    return int(valid.sum())


MEASURE = r"""
import json, resource, sys, time, tracemalloc, warnings
sys.path.insert(0, sys.argv[1])
from tinysql_eap import load
out, mode = sys.argv[2], sys.argv[3]
kw = json.loads(sys.argv[4])
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
tracemalloc.start() if kw.pop("trace", False) else None
t = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    df = load.load_sweep(out, **kw)
secs = time.perf_counter() - t
peak = tracemalloc.get_traced_memory()[1] if tracemalloc.is_tracing() else 0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
arrays = int(sum(a.nbytes for a in df["scores"])) if "scores" in df else 0
print(json.dumps({"rows": len(df), "rss_before": rss0, "rss_peak": rss, "traced_peak": peak, "seconds": secs,
                  "arrays": arrays, "deep": int(df.memory_usage(deep=True).sum()) if "scores" not in df else 0}))
"""


def measure(out, **kw):
    p = subprocess.run([sys.executable, "-c", MEASURE, os.path.join(ROOT, "analysis"), out, "", json.dumps(kw)],
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def mb(x):
    return f"{x / 2**20:8.1f} MB"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="2,4,8")
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--heads", type=int, default=14)
    ap.add_argument("--dir", default=None, help="where the sweeps are written (default: a temporary folder, removed)")
    a = ap.parse_args()
    sizes = [int(x) for x in a.cells.split(",")]
    tmp = a.dir or tempfile.mkdtemp(prefix="bench_analysis.")
    try:
        results = []
        for n in sizes:
            out = os.path.join(tmp, f"c{n}")
            if not os.path.exists(os.path.join(out, "sweep.json")):
                os.makedirs(out, exist_ok=True)
                t = time.perf_counter()
                edges = write_sweep(out, n, a.batches, a.layers, a.heads)
                print(f"wrote {n} cells x {a.batches} batches ({edges} edges per batch) in "
                      f"{time.perf_counter() - t:.1f} s", flush=True)
            w = measure(out, wide=True)
            k = measure(out, wide=True, top_k=100)
            results.append((n, w, k))
            print(f"{n:4d} cells: wide peak RSS {mb(w['rss_peak'])} (arrays {mb(w['arrays'])}, {w['seconds']:.1f} s), "
                  f"wide top_k=100 peak RSS {mb(k['rss_peak'])}", flush=True)
        tidy = measure(os.path.join(tmp, f"c{sizes[0]}"))
        # The tidy table of the smallest sweep, for comparison (issue 14: ~480 bytes a row before).
        (n0, w0, k0), (n1, w1, k1) = results[0], results[-1]
        slope = (w1["rss_peak"] - w0["rss_peak"]) / (n1 - n0)
        slope_k = (k1["rss_peak"] - k0["rss_peak"]) / (n1 - n0)
        grid = w1["rss_peak"] + slope * (GRID_CELLS - n1)
        grid_k = k1["rss_peak"] + slope_k * (GRID_CELLS - n1)
        arrays_per_cell = w1["arrays"] / n1
        print()
        print(f"shape: {a.layers} layers x {a.heads} heads, {a.batches} batches per cell")
        print(f"python + pandas + h5py before loading: {mb(w1['rss_before'])}")
        print(f"wide: {mb(slope)} per cell measured ({mb(arrays_per_cell)} of float32 arrays per cell)")
        print(f"tidy ({n0} cells): {tidy['rows']} rows, peak RSS {mb(tidy['rss_peak'])}, "
              f"{(tidy['rss_peak'] - tidy['rss_before']) / max(tidy['rows'], 1):.0f} bytes per row at the peak, "
              f"{tidy['deep'] / max(tidy['rows'], 1):.0f} bytes per row held")
        tidy_grid = (tidy['rss_peak'] - tidy['rss_before']) / n0 * GRID_CELLS
        print(f"{GRID_CELLS}-cell BM2-shaped grid, extrapolated: wide {grid / 2**30:.2f} GB "
              f"({'under' if grid < 2 * 2**30 else 'OVER'} the 2 GB target), wide top_k=100 {grid_k / 2**30:.2f} GB, "
              f"tidy {tidy_grid / 2**30:.0f} GB")
    finally:
        if not a.dir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
