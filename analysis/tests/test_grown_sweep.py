"""A sweep whose job was rerun with more batches (2 -> 4 -> 6, as docs/jobs.md allows): the unit
files written by the earlier runs carry the earlier `n_batches` attribute, the manifest the new
one. `analysis/` must take the manifest's count, call the cells complete exactly when `reduce` and
`status` do, and find the consistent edges `reduce` writes; an incomplete cell or an empty result
is never silent (issue 13, item 4)."""

import contextlib
import json
import os
import re
import shutil
import warnings

import h5py
import numpy as np
import pytest

from conftest import make_sweep, make_tiny_model, run_teap, write_job
from tinysql_eap import compare, load

GROWTH = (2, 4, 6)
TOP_N = 5


@contextlib.contextmanager
def no_sweep_warning():
    """A context in which a SweepWarning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", load.SweepWarning)
        yield


def set_unit_n_batches(out, cell, counts=GROWTH):
    """Gives each unit file the n_batches of the run that wrote it: batches 0-1 were written by a
    run of 2 batches, 2-3 by one of 4, 4-5 by one of 6."""
    lo = 0
    for n in counts:
        for b in range(lo, n):
            with h5py.File(load.unit_path(out, cell, b), "r+") as f:
                del f.attrs["n_batches"]
                f.attrs.create("n_batches", np.int64(n), dtype=np.int64)
        lo = n


def unit_n_batches(out, cell):
    found = []
    for _, _, path in load.unit_files(out, [cell]):
        with h5py.File(path, "r") as f:
            found.append(int(f.attrs["n_batches"]))
    return found


def plain_consistent_edges(out, cell, n_batches, top_n):
    """The consistent edges straight from the files with h5py: baselines over all prompts of
    batches 0 .. n_batches - 1, per batch the top-n valid edges by |normalised score| (ties by
    index), the edges in every batch's top-n, mean score: [(from index, to index, mean)] sorted."""
    scores, clean, corrupt = [], [], []
    for b in range(n_batches):
        with h5py.File(load.unit_path(out, cell, b), "r") as f:
            s = f["scores"][()].astype(np.float64)
            valid = f["valid"][()].astype(bool)
            clean += list(f["clean_logit_diff"][()])
            corrupt += list(f["corrupt_logit_diff"][()])
            scores.append((s, valid))
    denom = np.mean(clean) - np.mean(corrupt)
    tops, values = [], {}
    for s, valid in scores:
        ui, di = np.nonzero(valid)
        norm = s[ui, di] / denom
        order = sorted(range(len(ui)), key=lambda k: (-abs(norm[k]), ui[k], di[k]))[:top_n]
        tops.append({(int(ui[k]), int(di[k])) for k in order})
        for k in order:
            values.setdefault((int(ui[k]), int(di[k])), []).append(norm[k])
    common = set.intersection(*tops)
    rows = [(u, d, float(np.mean(values[(u, d)]))) for u, d in common]
    return sorted(rows, key=lambda r: (-abs(r[2]), r[0], r[1]))


def status_table(out):
    """`tinysql-eap status OUT`: ({cell: (done, failed, missing)}, cells complete, cells)."""
    r = run_teap("status", out, check=0)
    rows = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)$", line)
        if m:
            rows[m.group(1)] = tuple(int(x) for x in m.groups()[1:])
    m = re.search(r"cells complete: (\d+) of (\d+)", r.stdout)
    assert m, r.stdout
    return rows, int(m.group(1)), int(m.group(2))


def reduce_edges(out, top_n=None):
    """`tinysql-eap reduce OUT`: ({cell: [(from, to, score)]}, {cell: n_batches}, stdout)."""
    args = ["reduce", out] + (["--top-n", str(top_n)] if top_n else [])
    r = run_teap(*args, check=0)
    results = compare.load_results(out)
    edges = {c: [(e["from_edge"], e["to_edge"], e["score"]) for e in res["edges"]] for c, res in results.items()}
    return edges, {c: res["metadata"]["n_batches"] for c, res in results.items()}, r.stdout


def python_edges(out, top_n):
    ce = compare.consistent_edges(load.load_sweep(out), top_n_edges=top_n)
    return {str(c): list(zip(g["from_edge"].astype(str), g["to_edge"].astype(str), g["score"]))
            for c, g in ce.groupby("cell_id", observed=True)}


def assert_same_edges(reduced, python):
    """Same cells, same edges in the same order, scores equal after the JSON's round(x, 8)."""
    assert set(python) <= set(reduced), (sorted(python), sorted(reduced))
    for cell, want in reduced.items():
        got = python.get(cell, [])
        assert [(f, t) for f, t, _ in got] == [(f, t) for f, t, _ in want], cell
        for (_, _, a), (_, _, b) in zip(got, want):
            assert round(a, 8) == b, (cell, a, b)


@pytest.fixture
def grown(tmp_path):
    """Two cells of 6 batches whose files were written by runs of 2, 4 and 6 batches."""
    out = str(tmp_path / "grown")
    os.makedirs(out)
    cells = make_sweep(out, cells=[dict(status="done", n_batches=6),
                                   dict(status="done", n_batches=6, feature="DefFieldName")])
    for c in cells:
        set_unit_n_batches(out, c["id"])
    return out, cells


def test_grown_sweep_is_complete_with_the_manifests_batch_count(grown):
    out, cells = grown
    for c in cells:
        assert unit_n_batches(out, c["id"]) == [2, 2, 4, 4, 6, 6]  # the premise: the files disagree
    with no_sweep_warning():
        assert load.cell_status(out) == {c["id"]: "done" for c in cells}
        units = load.load_units(out)
        assert set(units["n_batches"]) == {6}
        base = load.baselines(units)
        assert base["complete"].all() and set(base["batches_present"]) == {6}
        full = load.load_sweep(out, complete_only=True)
        assert sorted(full["batch"].unique()) == list(range(6))
        assert set(full["cell_id"].astype(str)) == {c["id"] for c in cells}
        ce = compare.consistent_edges(full, top_n_edges=TOP_N)
    for c in cells:
        got = ce[ce["cell_id"] == c["id"]]
        want = plain_consistent_edges(out, c["id"], 6, TOP_N)
        assert want, "the synthetic sweep should have consistent edges"
        assert [(r.up_index, r.down_index) for r in got.itertuples()] == [(u, d) for u, d, _ in want]
        for r, (_, _, s) in zip(got.itertuples(), want):
            assert abs(r.score - s) <= 1e-12 * max(1.0, abs(s))
    summary = load.cell_summary(out).set_index("cell_id")
    assert (summary["status"] == "done").all() and (summary["ok"] == 6).all() and (summary["n_batches"] == 6).all()


def test_a_cell_short_of_the_manifests_count_is_partial_and_not_silent(grown):
    out, cells = grown
    short, whole = cells[0]["id"], cells[1]["id"]
    for b in (4, 5):
        os.remove(load.unit_path(out, short, b))
    st = load.cell_status(out)
    assert st == {short: "partial", whole: "done"}
    df = load.load_sweep(out)
    assert not df[df["cell_id"] == short]["complete"].any() and df[df["cell_id"] == whole]["complete"].all()
    with pytest.warns(load.SweepWarning, match=re.escape(short) + r" \(incomplete: 4 of 6 batches\)"):
        ce = compare.consistent_edges(df, top_n_edges=TOP_N)
    assert set(ce["cell_id"]) == {whole} and len(ce) > 0
    # Only the partial cell asked for: nothing to reduce, and it says so.
    with pytest.warns(load.SweepWarning, match=r"no cell reduced.*" + re.escape(short)):
        assert compare.consistent_edges(df, top_n_edges=TOP_N, cells=[short]).empty
    # A table cut down to fewer batches is not taken for a complete cell either.
    with pytest.warns(load.SweepWarning, match=re.escape(whole) + r" \(incomplete: 2 of 6 batches\)"):
        assert compare.consistent_edges(df[df["batch"] < 2], top_n_edges=TOP_N).empty
    # Nothing complete: complete_only says so instead of raising or returning nothing silently.
    os.remove(load.unit_path(out, whole, 5))
    with pytest.warns(load.SweepWarning, match="no complete cell"):
        empty = load.load_sweep(out, complete_only=True)
    assert empty.empty and list(empty.columns) == load.SWEEP_COLUMNS


def test_nothing_on_disk_is_an_empty_table_with_a_warning(tmp_path):
    out = str(tmp_path / "none")
    os.makedirs(out)
    make_sweep(out, cells=[dict(status="missing"), dict(status="missing", feature="DefFieldName")])
    assert set(load.cell_status(out).values()) == {"missing"}
    with pytest.warns(load.SweepWarning, match=r"no usable unit file .*6 missing"):
        df = load.load_sweep(out)
    assert df.empty and list(df.columns) == load.SWEEP_COLUMNS
    with pytest.warns(load.SweepWarning, match="the table is empty"):
        assert compare.consistent_edges(df).empty
    with pytest.raises(load.SweepError, match=re.escape(os.path.join(str(tmp_path), "sweep.json")) + ": no such file"):
        load.load_sweep(str(tmp_path))


def test_grown_sweep_agrees_with_reduce_and_status(grown):
    out, cells = grown
    reduced, n_batches, stdout = reduce_edges(out, TOP_N)
    assert "reduced 2 of 2 cells" in stdout, stdout
    assert n_batches == {c["id"]: 6 for c in cells}
    assert all(reduced.values()), reduced
    assert_same_edges(reduced, python_edges(out, TOP_N))
    rows, complete, total = status_table(out)
    assert (complete, total) == (2, 2) and all(rows[c["id"]] == (6, 0, 0) for c in cells)
    # One cell short of its count: partial everywhere.
    short = cells[0]["id"]
    os.remove(load.unit_path(out, short, 5))
    shutil.rmtree(os.path.join(out, "cells"))
    reduced, _, stdout = reduce_edges(out, TOP_N)
    assert f"partial: {short} (5 of 6 batches; missing 5)" in stdout, stdout
    assert set(reduced) == {cells[1]["id"]}
    rows, complete, _ = status_table(out)
    assert complete == 1 and rows[short] == (5, 0, 1)
    assert load.cell_status(out) == {short: "partial", cells[1]["id"]: "done"}
    with pytest.warns(load.SweepWarning, match=re.escape(short)):
        assert_same_edges(reduced, python_edges(out, TOP_N))


def test_sweep_grown_by_the_real_runner(tmp_path):
    """`tinysql-eap run` on a tiny model, its job raised from 2 to 4 to 6 batches: after each run
    `reduce`, `status` and `analysis/` call both cells complete and agree on the consistent edges."""
    model = make_tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    for n in GROWTH:
        job = write_job(tmp_path / "job.toml", out, model, batches=n)
        run_teap("run", job, check=0)
        reduced, n_batches, stdout = reduce_edges(str(out))
        assert "reduced 2 of 2 cells" in stdout, stdout
        assert set(n_batches.values()) == {n}
        rows, complete, total = status_table(str(out))
        assert (complete, total) == (2, 2) and set(rows.values()) == {(n, 0, 0)}, rows
        with no_sweep_warning():
            st = load.cell_status(str(out))
            assert sorted(st) == sorted(rows) and set(st.values()) == {"done"}
            python = python_edges(str(out), 10)
        assert any(reduced.values()), f"no consistent edge after {n} batches: the comparison would be vacuous"
        assert_same_edges(reduced, python)
    for cell in rows:
        assert unit_n_batches(str(out), cell) == [2, 2, 4, 4, 6, 6]
    # A unit of the same cell from a sweep with another seed, copied in: foreign, named, not used.
    other = tmp_path / "other"
    run_teap("run", write_job(tmp_path / "other.toml", other, model, features=("EngTableName",), batches=1, seed=5),
             check=0)
    cell = "BM1.CS1.EngTableName.novel0.synfield0.syntable0"
    target = load.unit_path(str(out), cell, 3)
    shutil.copyfile(load.unit_path(str(other), cell, 0), target)
    with pytest.warns(load.SweepWarning, match=re.escape(target) + r" \(holds batch 0, not 3\)"):
        assert load.cell_status(str(out))[cell] == "foreign"
    with h5py.File(target, "r+") as f:  # the batch index fixed: the settings still differ
        f.attrs.create("batch_index", np.int64(3), dtype=np.int64)
    inv = load.inventory(str(out)).set_index(["cell_id", "batch"])
    assert inv.loc[(cell, 3), "state"] == "foreign"
    reason = inv.loc[(cell, 3), "reason"]
    with open(os.path.join(str(out), "sweep.json")) as f:
        mine = next(c for c in json.load(f)["cells"] if c["id"] == cell)["settings_hash"]
    assert mine in reason and "seed '5', not '0'" in reason, reason
    with pytest.warns(load.SweepWarning, match=re.escape(target)):
        df = load.load_sweep(str(out))
    assert 3 not in set(df[df["cell_id"] == cell]["batch"]) and not df[df["cell_id"] == cell]["complete"].any()
