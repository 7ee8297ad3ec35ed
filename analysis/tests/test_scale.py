"""load_sweep at scale (issue 14): the wide format (one row per cell x batch, the scores as an
array), the filters (cells, edges, top-k per batch), memory that grows with what is kept and not
with what is read, and comparisons that never cross architectures."""

from __future__ import annotations

import os
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import make_sweep
from tinysql_eap import compare, load

DONE = [dict(status="done"), dict(status="done", feature="DefFieldName", use_novel_names=True),
        dict(status="done", commandset=2, feature="EngFieldName"), dict(status="partial", feature="DefTableName"),
        dict(status="degenerate", model=2, feature="DefTableName")]


@pytest.fixture
def small(tmp_path):
    out = str(tmp_path / "sweep")
    os.makedirs(out)
    return out, make_sweep(out, cells=DONE)


def quiet(f, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", load.SweepWarning)
        return f(*a, **k)


def same_tidy(a: pd.DataFrame, b: pd.DataFrame):
    key = ["cell_id", "batch", "up_index", "down_index"]
    a = a.astype({k: str for k in ("cell_id", "upstream", "downstream", "from_edge", "to_edge", "feature", "flags",
                                   "arch")}).sort_values(key).reset_index(drop=True)
    b = b.astype({k: str for k in ("cell_id", "upstream", "downstream", "from_edge", "to_edge", "feature", "flags",
                                   "arch")}).sort_values(key).reset_index(drop=True)
    assert list(a.columns) == list(b.columns) == load.SWEEP_COLUMNS
    assert len(a) == len(b)
    for c in load.SWEEP_COLUMNS:
        x, y = a[c].to_numpy(), b[c].to_numpy()
        if c in ("score", "norm_score"):
            assert np.array_equal(x.astype(np.float64), y.astype(np.float64), equal_nan=True), c
        else:
            assert [str(v) for v in x] == [str(v) for v in y], c


def test_wide_holds_what_the_tidy_table_holds(small):
    out, cells = small
    tidy = quiet(load.load_sweep, out)
    wide = quiet(load.load_sweep, out, wide=True)
    assert list(wide.columns) == load.WIDE_COLUMNS
    # One row per (cell, usable batch); the arrays of a cell are rows of one float32 matrix.
    assert len(wide) == len(tidy.groupby(["cell_id", "batch"], observed=True))
    assert all(r.scores.dtype == np.float32 and len(r.scores) == r.n_edges for r in wide.itertuples())
    first = wide[wide["cell_id"] == cells[0]["id"]]
    assert first["scores"].iloc[1].base is first["scores"].iloc[0].base is not None
    same_tidy(load.wide_to_tidy(wide), tidy)
    # Node names per architecture: BM1 2x3 and BM2 2x3 are two graphs with the same names.
    assert set(wide.attrs["edges"]) == {"BM1.2x3", "BM2.2x3"}
    e = load.edge_table(wide, "BM1.2x3")
    assert list(e.columns) == load.EDGE_COLUMNS and len(e) == wide["n_edges"].iloc[0]
    m, rows, edges = load.score_matrix(wide, "BM1.2x3")
    assert m.shape == ((wide["graph"] == "BM1.2x3").sum(), len(edges)) and m.dtype == np.float64
    with pytest.raises(ValueError, match="2 graphs"):
        load.edge_table(wide)
    # The consistent edges of the wide table, cell by cell, are those of the tidy table.
    a = quiet(compare.consistent_edges, tidy, top_n_edges=5)
    b = quiet(compare.consistent_edges, wide, top_n_edges=5)
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False,
                                  check_categorical=False)
    assert set(a["arch"]) == {"BM1.2x3"}


def test_filters_cells_edges_top_k(small):
    out, cells = small
    tidy = quiet(load.load_sweep, out)
    # Cells by settings: only those are read.
    only = quiet(load.load_sweep, out, cells={"commandset": 2})
    assert set(only["cell_id"]) == {cells[2]["id"]}
    assert set(quiet(load.load_sweep, out, cells=lambda c: c["feature"] == "DefFieldName")["cell_id"]) == {cells[1]["id"]}
    with pytest.raises(load.SweepError, match="no setting 'colour'"):
        load.load_sweep(out, cells={"colour": 1})
    # Edges: a consistent-edge table selects its edges in its own architecture, names in either notation.
    ce = quiet(compare.consistent_edges, tidy, top_n_edges=3)
    sub = quiet(load.load_sweep, out, edges=ce)
    assert set(zip(sub["from_edge"].astype(str), sub["to_edge"].astype(str))) == \
        set(zip(ce["from_edge"], ce["to_edge"]))
    assert set(sub["arch"]) == {"BM1.2x3"}  # ce has no BM2 cell (degenerate): nothing selected there
    pairs = [("l0.h1", "l1.mlp"), ("head.0.2", "head.1.0.q")]
    sub = quiet(load.load_sweep, out, edges=pairs, wide=True)
    assert set(sub["n_edges"]) == {2}
    assert list(load.edge_table(sub, "BM1.2x3")["from_edge"]) == ["l0.h1", "l0.h2"]
    # top_k: per batch the k first edges of compare.top_n, in the tidy and the wide table.
    k = 4
    top = quiet(load.load_sweep, out, top_k=k)
    wtop = quiet(load.load_sweep, out, top_k=k, wide=True)
    assert list(wtop.columns) == load.WIDE_COLUMNS + ["edge_ids"]
    for (cell, b), g in tidy.groupby(["cell_id", "batch"], observed=True):
        if g["norm_score"].isna().all():  # degenerate: no normalised score, ranked by the raw one
            g = g.assign(norm_score=g["score"].astype(np.float64))
        want = compare.top_n(g, k)
        got = top[(top["cell_id"] == cell) & (top["batch"] == b)]
        assert list(zip(got["up_index"], got["down_index"])) == sorted(zip(want["up_index"], want["down_index"]))
        r = wtop[(wtop["cell_id"] == cell) & (wtop["batch"] == b)].iloc[0]
        e = load.edge_table(wtop, r["graph"]).iloc[r["edge_ids"]]
        assert list(zip(e["up_index"], e["down_index"])) == list(zip(want["up_index"], want["down_index"]))
    same_tidy(load.wide_to_tidy(wtop), top)
    m, _, _ = load.score_matrix(wtop, "BM1.2x3")
    assert (np.isfinite(m).sum(axis=1) == k).all()
    # Consistent edges from a top-k table equal those of the full one when k >= top_n.
    pd.testing.assert_frame_equal(quiet(compare.consistent_edges, wtop, top_n_edges=3).reset_index(drop=True),
                                  ce.reset_index(drop=True), check_dtype=False, check_categorical=False)
    with pytest.raises(ValueError, match="top_k >= top_n_edges"):
        compare.consistent_edges(wtop, top_n_edges=k + 1)
    with pytest.raises(ValueError, match="top_k"):
        load.load_sweep(out, top_k=0)


def _peak(f):
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    r = f()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return r, peak


def _grid(tmp_path, name, n_cells, n_layers=12, n_heads=8, n_batches=3):
    out = str(tmp_path / name)
    os.makedirs(out)
    feats = ["EngTableName", "EngFieldName", "DefTableName", "DefFieldName"]
    cells = [dict(status="done", commandset=i // 4, feature=feats[i % 4], n_batches=n_batches) for i in range(n_cells)]
    make_sweep(out, cells=cells, n_layers=n_layers, n_heads=n_heads)
    return out


def test_wide_memory_grows_with_the_scores_kept_not_the_files_read(tmp_path):
    """The wide table costs 4 bytes per edge per batch (float32) and a fixed part (edge tables,
    one cell's unit files while it is read): the cells added to a sweep add their arrays and little
    more, whatever the files hold besides. bench/bench_analysis.py extrapolates these increments to
    a 384-cell BM2-shaped grid."""
    small, big = _grid(tmp_path, "s", 4), _grid(tmp_path, "b", 8)
    ws, peak_s = _peak(lambda: quiet(load.load_sweep, small, wide=True))
    wb, peak_b = _peak(lambda: quiet(load.load_sweep, big, wide=True))
    kept_s = sum(r.nbytes for r in ws["scores"])
    kept_b = sum(r.nbytes for r in wb["scores"])
    assert kept_b == 2 * kept_s
    assert kept_s == 4 * len(ws) * ws["n_edges"].iloc[0]
    added, rows = peak_b - peak_s, len(wb) - len(ws)
    # Linear: the added cells cost their arrays (x 1.25) plus at most 2 kB per row of the table.
    assert 0.8 * (kept_b - kept_s) < added < 1.25 * (kept_b - kept_s) + 2048 * rows, (peak_s, peak_b, kept_s, kept_b)
    # The tidy table of the same sweep costs tens of bytes per edge.
    _, peak_tidy = _peak(lambda: quiet(load.load_sweep, big))
    assert peak_tidy > 8 * kept_b, (peak_tidy, kept_b)
    # top_k keeps k values per batch: the cells added cost almost nothing.
    wk, peak_kb = _peak(lambda: quiet(load.load_sweep, big, wide=True, top_k=10))
    _, peak_ks = _peak(lambda: quiet(load.load_sweep, small, wide=True, top_k=10))
    assert sum(r.nbytes for r in wk["scores"]) == 4 * 10 * len(wk)
    assert peak_kb - peak_ks < 0.25 * (kept_b - kept_s), (peak_ks, peak_kb)


def test_comparisons_never_cross_architectures(tmp_path):
    """l0.h0 of BM1 is not l0.h0 of BM2: two cells with the same edge names in two architectures
    are not compared (Jaccard NaN) and each architecture's edges are counted on their own."""
    out = str(tmp_path / "two")
    os.makedirs(out)
    make_sweep(out, cells=[dict(status="done"), dict(status="done", feature="DefFieldName"),
                           dict(status="done", model=2)], n_layers=2, n_heads=3, seed=3)
    df = quiet(load.load_sweep, out)
    assert set(df["arch"]) == {"BM1.2x3", "BM2.2x3"}
    ce = quiet(compare.consistent_edges, df, top_n_edges=40)
    sets = quiet(compare.edge_sets, ce, include_flagged=True)
    assert set(sets.arch.values()) == {"BM1.2x3", "BM2.2x3"}
    bm1 = [c for c, a in sets.arch.items() if a == "BM1.2x3"]
    bm2 = [c for c, a in sets.arch.items() if a == "BM2.2x3"][0]
    assert sets[bm1[0]] & sets[bm2]  # same names: a by-name comparison would count them
    m = compare.jaccard_matrix(sets)
    assert np.isnan(m.loc[bm1[0], bm2]) and np.isnan(m.loc[bm2, bm1[1]])
    assert m.loc[bm1[0], bm1[1]] == compare.jaccard(sets[bm1[0]], sets[bm1[1]])
    by = compare.jaccard_by_arch(sets)
    assert set(by) == {"BM1.2x3", "BM2.2x3"} and by["BM2.2x3"].shape == (1, 1)
    r = compare.recurrence(sets, df[["cell_id", "feature", "commandset", "model", "flags", "arch"]],
                           include_flagged=True)
    common = next(iter(sets[bm1[0]] & sets[bm2]))
    rows = r[(r["from_edge"] == common[0]) & (r["to_edge"] == common[1])]
    assert set(rows["arch"]) == {"BM1.2x3", "BM2.2x3"}
    assert rows.set_index("arch").loc["BM2.2x3", "share"] == 1.0
    assert all(len(set(cs)) == len(cs) and all(sets.arch[c] == a for c in cs) for a, cs in zip(r["arch"], r["cells"]))
    # An architecture given as a table (model, n_layers, n_heads) works on plain dicts too.
    plain = dict(sets)
    m2 = compare.jaccard_matrix(plain, arch=df.drop_duplicates("cell_id")[["cell_id", "model", "n_layers", "n_heads"]])
    assert np.isnan(m2.loc[bm1[0], bm2])
