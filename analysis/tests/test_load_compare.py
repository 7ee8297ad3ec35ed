"""load.py and compare.py on a synthetic sweep written with h5py."""

import math
import os

import h5py
import numpy as np
import pandas as pd
import pytest

from tinysql_eap import compare, load


def test_tidy_table_columns_and_rows(sweep):
    out, cells = sweep
    df = load.load_sweep(out)
    for col in load.SETTINGS + ["batch", "upstream", "downstream", "from_edge", "to_edge", "score", "norm_score",
                                "complete"]:
        assert col in df.columns, col
    # 2 layers x 3 heads: 46 valid edges per batch; one row per present batch and valid edge.
    present = sum(len(os.listdir(os.path.join(out, "units", c))) for c in os.listdir(os.path.join(out, "units")))
    assert len(df) == 46 * present
    assert df["score"].dtype == np.float32
    assert set(df["from_edge"].astype(str)) >= {"l0.h0", "l0.mlp", "l1.h2"}
    assert set(df["to_edge"].astype(str)) >= {"l1.h2.q", "l1.h0.k", "l1.h1.v", "l0.mlp", "l1.mlp"}
    by_cell = {c["id"]: c for c in cells}
    for cid, g in df.groupby("cell_id", observed=True):
        c = by_cell[cid]
        assert (g["feature"] == c["feature"]).all()
        assert (g["use_novel_names"] == c["use_novel_names"]).all()
        assert g["complete"].iloc[0] == (c["status"] in ("done", "degenerate"))


def test_normalised_by_the_cells_baselines(sweep):
    out, cells = sweep
    df = load.load_sweep(out)
    cid = next(c["id"] for c in cells if c["status"] == "done")
    clean, corrupt = [], []
    for b in range(3):
        with h5py.File(os.path.join(out, "units", cid, f"b{b:05d}.h5"), "r") as f:
            clean += list(f["clean_logit_diff"][()])
            corrupt += list(f["corrupt_logit_diff"][()])
    denom = np.mean(clean) - np.mean(corrupt)
    g = df[df["cell_id"] == cid]
    assert np.allclose(g["norm_score"], g["score"].astype(np.float64) / denom, rtol=1e-12, atol=0)
    # A degenerate cell has no normalised score.
    deg = next(c["id"] for c in cells if c["status"] == "degenerate")
    assert df[df["cell_id"] == deg]["norm_score"].isna().all()
    base = load.baselines(load.load_units(out)).set_index("cell_id")
    assert bool(base.loc[deg, "degenerate"])
    assert math.isclose(base.loc[cid, "clean_ld"], np.mean(clean), rel_tol=1e-12)
    assert base.loc[cid, "n_prompts"] == 12


def test_status_and_failures(sweep):
    out, cells = sweep
    st = load.cell_status(out)
    for c in cells:
        want = "done" if c["status"] == "degenerate" else c["status"]
        assert st[c["id"]] == want, c["id"]
    f = load.failures(out)
    assert len(f) == 1 and f["batch"].iloc[0] == 1 and "out of memory" in f["message"].iloc[0]


def test_complete_only(sweep):
    out, cells = sweep
    df = load.load_sweep(out, complete_only=True)
    assert set(df["cell_id"].astype(str)) == {c["id"] for c in cells if c["status"] in ("done", "degenerate")}


def test_consistent_edges_by_hand(sweep):
    out, cells = sweep
    df = load.load_sweep(out)
    # The partial, failed and degenerate cells are skipped, each named.
    with pytest.warns(load.SweepWarning, match=r"consistent_edges: 3 cell\(s\) skipped") as w:
        ce = compare.consistent_edges(df, top_n_edges=5)
    for c in cells:
        if c["status"] in ("partial", "failed", "degenerate"):
            assert c["id"] in str(w[0].message), c
    done = {c["id"] for c in cells if c["status"] == "done"}
    assert set(ce["cell_id"]) <= done and set(ce["cell_id"]) == done
    cid = sorted(done)[0]
    g = df[df["cell_id"] == cid]
    # Plain recomputation: top 5 by |score| per batch, intersect, mean.
    tops = []
    for b, gb in g.groupby("batch"):
        gb = gb.assign(a=gb["norm_score"].abs()).sort_values(["a", "up_index", "down_index"],
                                                              ascending=[False, True, True])
        tops.append(set(zip(gb["up_index"][:5], gb["down_index"][:5])))
    common = set.intersection(*tops)
    got = ce[ce["cell_id"] == cid]
    assert set(zip(got["up_index"], got["down_index"])) == common
    assert list(got["score"].abs()) == sorted(got["score"].abs(), reverse=True)
    for r in got.itertuples():
        m = g[(g["up_index"] == r.up_index) & (g["down_index"] == r.down_index)]["norm_score"].mean()
        assert math.isclose(r.score, m, rel_tol=1e-12)


def test_overlap_measures():
    a = {("l0.h1", "l1.mlp"), ("l0.mlp", "l1.mlp")}
    b = {("l0.h1", "l1.mlp")}
    c = set()
    assert compare.jaccard(a, b) == 0.5
    assert compare.jaccard(c, c) == 1.0
    assert compare.jaccard(a, c) == 0.0
    m = compare.jaccard_matrix({"A": a, "B": b, "C": c})
    assert m.loc["A", "B"] == m.loc["B", "A"] == 0.5
    assert (np.diag(m.to_numpy()) == 1).all()
    settings = pd.DataFrame({"cell_id": ["A", "B", "C"], "feature": ["EngTableName", "DefFieldName", "EngTableName"],
                             "commandset": [1, 2, 1], "model": [1, 1, 2]})
    r = compare.recurrence({"A": a, "B": b, "C": c}, settings)
    assert (r["from_edge"].iloc[0], r["to_edge"].iloc[0], r["n_cells"].iloc[0]) == ("l0.h1", "l1.mlp", 2)
    assert r["features"].iloc[0] == ["DefFieldName", "EngTableName"]
    assert r["commandsets"].iloc[0] == ["1", "2"]
    assert r["cells"].iloc[0] == ["A", "B"]
    assert r["n_cells"].iloc[1] == 1
