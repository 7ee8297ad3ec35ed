"""Evaluation files (circuits run with the rest ablated, docs/faithfulness.md) in analysis/: the
per (cell, batch, circuit) table, per-prompt LDs, per-cell F, spread and the log-k area, checked
like unit files (damaged, foreign, other [evaluate] table: left out and named); on files written
with h5py in the layout of io::write_evaluation, and on a sweep run by the real `tinysql-eap run`
with an [evaluate] table, against the per-prompt LDs, the unit files and `attribute --evaluate`."""

import json
import math
import os
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import fnv1a64, make_graph, make_sweep, make_tiny_model, run_teap, write_job
from tinysql_eap import compare, evaluation, load

pytestmark = pytest.mark.filterwarnings("error::tinysql_eap.load.SweepWarning")

EVALUATION = "circuits=consistent,top-k,empty,full;top_k=1,2,5,all;prune=0;top_n=5"
# Per circuit: (name, k, edges, how much of the clean-corrupt gap its run keeps).
N_EDGES = int(make_graph(2, 3)[2].sum())
CIRCUITS = [("consistent", -1, 3, 0.8), ("top-1", 1, 1, 0.3), ("top-2", 2, 2, 0.5), ("top-5", 5, 5, 0.9),
            (f"top-{N_EDGES}", N_EDGES, N_EDGES, 1.0), ("empty", -1, 0, 0.1), ("full", -1, N_EDGES, 1.0)]


def write_evaluation(path, cell, batch, circuits, lds, clean, corrupt, base, no_faithfulness="", **overrides):
    """One evaluation file as io::write_evaluation writes it; `overrides` replaces root attributes."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    B, C = len(clean), len(circuits)
    with h5py.File(path, "w") as f:
        f.create_dataset("circuit", data=np.array([c[0] for c in circuits], dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("circuit_k", data=np.array([c[1] for c in circuits], dtype=np.int64))
        f.create_dataset("edge_count", data=np.array([c[2] for c in circuits], dtype=np.int64))
        F = [float("nan") if no_faithfulness else (np.mean(ld) - base[1]) / (base[0] - base[1]) for ld in lds]
        f.create_dataset("faithfulness", data=np.array(F, dtype=np.float64))
        f.create_dataset("logit_diff", data=np.asarray(lds, dtype=np.float64).reshape(C, B))
        f.create_dataset("clean_logit_diff", data=np.asarray(clean, dtype=np.float64))
        f.create_dataset("corrupt_logit_diff", data=np.asarray(corrupt, dtype=np.float64))
        a = {"format": "tinysql-eap evaluation v1", "cell_id": cell["id"], "hf_model": cell["hf_model"],
             "settings": cell["settings"], "settings_hash": cell["settings_hash"], "evaluation": cell["evaluation"],
             "evaluation_hash": cell["evaluation_hash"], "method": "eap", "metric_pairing": cell["metric_pairing"],
             "downstream_heads": cell["downstream_heads"], "dtype": cell["dtype"], "device": cell["device"],
             "program_version": "synthetic", "batch_index": np.int64(batch), "n_batches": np.int64(cell["n_batches"]),
             "top_n": np.int64(cell["top_n"]), "input_node": np.int64(0), "logits_node": np.int64(0),
             "prune": np.int64(0), "rank": np.int64(0), "threads": np.int64(1), "seconds": np.float64(0.5),
             "baseline_clean_ld": np.float64(base[0]), "baseline_corrupt_ld": np.float64(base[1]),
             "no_faithfulness": no_faithfulness, "n_prompts": np.int64(B), "n_circuits": np.int64(C)}
        a.update(overrides)
        for k, v in a.items():
            f.attrs[k] = v


def make_evaluated_sweep(out, seed=0):
    """Cells: two fully evaluated, one with batch 0 evaluated only, one degenerate, one not
    evaluated (the manifest without evaluation_hash). Returns {name: manifest cell} and the
    expected per-batch F {(cell, circuit): [F per batch]}."""
    cells = make_sweep(out, cells=[dict(status="done"), dict(status="done", feature="DefFieldName"),
                                   dict(status="done", feature="DefTableName"),
                                   dict(status="degenerate", model=2, feature="DefTableName"),
                                   dict(status="done", feature="EngFieldName")])
    names = ["a", "b", "partial", "degenerate", "unevaluated"]
    rng = np.random.default_rng(seed)
    expected = {}
    for name, c in zip(names, cells):
        if name == "unevaluated":
            continue
        c["evaluation"] = EVALUATION
        c["evaluation_hash"] = fnv1a64(c["settings"] + ";" + EVALUATION)
        B = c["batch_size"]
        if name == "degenerate":
            cleans = [np.full(B, 2.5) for _ in range(c["n_batches"])]
            corrupts = [np.full(B, 2.5) for _ in range(c["n_batches"])]
        else:
            cleans = [rng.normal(3.0, 0.5, B) for _ in range(c["n_batches"])]
            corrupts = [rng.normal(-1.0, 0.5, B) for _ in range(c["n_batches"])]
        base = (float(np.mean(np.concatenate(cleans))), float(np.mean(np.concatenate(corrupts))))
        why = "degenerate cell: LD_clean = 2.5, LD_corr = 2.5" if name == "degenerate" else ""
        for b in range(1 if name == "partial" else c["n_batches"]):
            lds = [corrupts[b] + keep * (cleans[b] - corrupts[b]) + rng.normal(0, 0.05, B) * (keep < 1)
                   for _, _, _, keep in CIRCUITS]
            write_evaluation(evaluation.evaluation_path(out, c["id"], b), c, b, CIRCUITS, lds, cleans[b], corrupts[b],
                             base, why)
            for (cname, *_), ld in zip(CIRCUITS, lds):
                f = float("nan") if why else (np.mean(ld) - base[1]) / (base[0] - base[1])
                expected.setdefault((c["id"], cname), []).append(f)
    with open(os.path.join(out, "sweep.json")) as f:
        manifest = json.load(f)
    for m, c in zip(manifest["cells"], cells):
        m.update({k: c[k] for k in ("evaluation", "evaluation_hash") if k in c})
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return dict(zip(names, cells)), expected


@pytest.fixture
def esweep(tmp_path):
    out = str(tmp_path / "sweep")
    os.makedirs(out)
    cells, expected = make_evaluated_sweep(out)
    return out, cells, expected


def test_log_k_auc_is_the_normalised_trapezoid_over_log_k():
    assert math.isnan(evaluation.log_k_auc([], []))
    assert evaluation.log_k_auc([10], [0.7]) == 0.7  # one point: its F
    assert evaluation.log_k_auc([1, 10, 100], [0.5, 0.5, 0.5]) == pytest.approx(0.5)
    # Linear in log k from 0 at k = 1 to 1 at k = 100: area 1/2 of the range.
    assert evaluation.log_k_auc([1, 10, 100], [0.0, 0.5, 1.0]) == pytest.approx(0.5)
    # Unequal log steps: (0.5 (0 + 1) log 2 + 0.5 (1 + 1) log 5) / log 10.
    assert evaluation.log_k_auc([1, 2, 10], [0.0, 1.0, 1.0]) == pytest.approx(
        (0.5 * math.log(2) + math.log(5)) / math.log(10))
    assert evaluation.log_k_auc([5, 5], [0.2, 0.4]) == 0.4  # no range: the last F


def test_table_one_row_per_cell_batch_circuit(esweep):
    out, cells, expected = esweep
    df = evaluation.load_evaluations(out)
    assert list(df.columns) == evaluation.EVALUATION_COLUMNS
    n = 3 + 3 + 1 + 3  # a, b, partial (batch 0 only), degenerate; the unevaluated cell has none
    assert len(df) == n * len(CIRCUITS)
    assert cells["unevaluated"]["id"] not in set(df["cell_id"])
    a = df[df["cell_id"] == cells["a"]["id"]]
    assert list(a[a["batch"] == 0]["circuit"]) == [c[0] for c in CIRCUITS]
    top = a[a["circuit"].astype(str).str.startswith("top-")]
    assert top["k"].notna().all() and a[~a.index.isin(top.index)]["k"].isna().all()
    assert list(a[a["batch"] == 1]["edges"]) == [c[2] for c in CIRCUITS]
    for (cid, name), fs in expected.items():
        got = df[(df["cell_id"] == cid) & (df["circuit"] == name)].sort_values("batch")["F"].to_numpy()
        np.testing.assert_allclose(got, fs, rtol=1e-12, equal_nan=True)
    complete = df.groupby("cell_id", observed=True)["complete"].first().to_dict()
    assert complete == {cells[k]["id"]: k != "partial" for k in ("a", "b", "partial", "degenerate")}
    # The grid and settings come from the manifest; prune, method and the scored nodes from the files.
    assert set(a["feature"]) == {"EngTableName"} and (a["top_n"] == 5).all() and (a["method"] == "eap").all()
    assert not a["prune"].any() and not a["input_node"].any() and not a["logits_node"].any()
    assert set(evaluation.load_evaluations(out, complete_only=True)["cell_id"]) == {
        cells[k]["id"] for k in ("a", "b", "degenerate")}
    assert set(evaluation.load_evaluations(out, cells=[cells["b"]["id"]])["cell_id"]) == {cells["b"]["id"]}
    with pytest.raises(load.SweepError, match="no cell 'nope'"):
        evaluation.load_evaluations(out, cells=["nope"])


def test_per_prompt_lds_on_request(esweep):
    out, cells, _ = esweep
    p = evaluation.load_evaluations(out, cells=[cells["a"]["id"]], prompts=True)
    assert list(p.columns) == evaluation.PROMPT_COLUMNS
    B = cells["a"]["batch_size"]
    assert len(p) == 3 * len(CIRCUITS) * B
    with h5py.File(evaluation.evaluation_path(out, cells["a"]["id"], 1)) as f:
        lds, clean, corrupt = f["logit_diff"][()], f["clean_logit_diff"][()], f["corrupt_logit_diff"][()]
    b1 = p[p["batch"] == 1]
    for i, (name, k, *_) in enumerate(CIRCUITS):
        rows = b1[b1["circuit"] == name].sort_values("prompt")
        assert list(rows["prompt"]) == list(range(B))
        np.testing.assert_array_equal(rows["ld"], lds[i])
        np.testing.assert_array_equal(rows["clean_ld"], clean)
        np.testing.assert_array_equal(rows["corrupt_ld"], corrupt)
        assert (rows["k"].isna().all() if k < 0 else (rows["k"] == k).all())
        # F is the mean over the batch's prompts of the normalised LD.
        base = rows[["baseline_clean_ld", "baseline_corrupt_ld"]].iloc[0]
        f = ((rows["ld"] - base.iloc[1]) / (base.iloc[0] - base.iloc[1])).mean()
        assert rows["F"].iloc[0] == pytest.approx(f, rel=1e-12)


def test_summaries_mean_spread_edges_and_area(esweep):
    out, cells, expected = esweep
    cs = evaluation.circuit_summary(out)
    assert list(cs.columns) == evaluation.CIRCUIT_COLUMNS
    assert set(cs["cell_id"]) == {cells[k]["id"] for k in ("a", "b", "degenerate")}  # complete cells only
    for r in cs.itertuples():
        fs = expected[(r.cell_id, r.circuit)]
        assert r.per_batch == pytest.approx(fs, nan_ok=True) and r.batches == 3
        if r.cell_id == cells["degenerate"]["id"]:
            assert math.isnan(r.F) and r.no_faithfulness.startswith("degenerate cell")
            continue
        assert r.F == pytest.approx(np.mean(fs), rel=1e-12)
        assert r.spread == pytest.approx(np.std(fs, ddof=1), rel=1e-9)
    assert list(cs[cs["cell_id"] == cells["a"]["id"]]["circuit"]) == [c[0] for c in CIRCUITS]
    # Provisional rows for the partial cell on request: one batch, no spread.
    p = evaluation.circuit_summary(out, complete_only=False)
    pr = p[p["cell_id"] == cells["partial"]["id"]]
    assert len(pr) == len(CIRCUITS) and (pr["batches"] == 1).all() and (pr["spread"] == 0).all()
    assert not pr["complete"].any()

    cf = evaluation.cell_faithfulness(out)
    assert list(cf.columns) == evaluation.CELL_COLUMNS
    a = cf.set_index("cell_id").loc[cells["a"]["id"]]
    mean = {name: np.mean(expected[(cells["a"]["id"], name)]) for name, *_ in CIRCUITS}
    assert a["consistent_F"] == pytest.approx(mean["consistent"]) and a["consistent_edges"] == 3
    assert a["empty_F"] == pytest.approx(mean["empty"]) and a["full_F"] == pytest.approx(mean["full"])
    assert a["curve_k"] == [1, 2, 5, N_EDGES]
    fk = [mean[n] for n in ("top-1", "top-2", "top-5", f"top-{N_EDGES}")]
    assert a["curve_F"] == pytest.approx(fk)
    area = sum(0.5 * (fk[i] + fk[i - 1]) * math.log(a["curve_k"][i] / a["curve_k"][i - 1]) for i in range(1, 4))
    assert a["auc_log_k"] == pytest.approx(area / math.log(N_EDGES))
    d = cf.set_index("cell_id").loc[cells["degenerate"]["id"]]
    assert math.isnan(d["consistent_F"]) and math.isnan(d["auc_log_k"]) and d["no_faithfulness"]
    # The same from a loaded table and from the circuit summary.
    df = evaluation.load_evaluations(out)
    pd.testing.assert_frame_equal(evaluation.cell_faithfulness(df), cf)
    pd.testing.assert_frame_equal(evaluation.cell_faithfulness(cs), cf)


def test_faithfulness_object_has_the_json_keys(esweep):
    out, cells, expected = esweep
    j = evaluation.faithfulness_object(out, cells["a"]["id"])
    assert list(j) == ["scored_nodes", "never_ablated", "pruned", "top_n", "batches", "n_batches", "circuits",
                       "curve", "auc_log_k"]
    assert j["scored_nodes"] == {"input": False, "logits": False}
    assert j["never_ablated"] == "edges from input and edges into logits"
    assert list(j["circuits"]) == [c[0] for c in CIRCUITS]
    assert list(j["circuits"]["top-2"]) == ["F", "spread", "edges", "k", "per_batch"]
    assert list(j["circuits"]["empty"]) == ["F", "spread", "edges", "per_batch"]
    assert [p["k"] for p in j["curve"]] == [1, 2, 5, N_EDGES]
    d = evaluation.faithfulness_object(out, cells["degenerate"]["id"])
    assert d["no_faithfulness"].startswith("degenerate cell") and d["circuits"]["full"]["F"] is None
    assert d["auc_log_k"] is None and d["circuits"]["full"]["per_batch"] == [None] * 3
    json.dumps(d, allow_nan=False)


def test_no_evaluated_cell_is_said(tmp_path):
    out = str(tmp_path / "sweep")
    os.makedirs(out)
    make_sweep(out, cells=[dict(status="done")])
    with pytest.warns(load.SweepWarning, match=r"no cell of its manifest was evaluated \(the job had no \[evaluate\]"):
        df = evaluation.load_evaluations(out)
    assert df.empty and list(df.columns) == evaluation.EVALUATION_COLUMNS
    with pytest.warns(load.SweepWarning):
        assert evaluation.cell_faithfulness(out).empty
    assert evaluation.inventory(out).empty


# --- Damaged and foreign files: left out, named, never an h5py traceback ----------------------------


def truncate_1000(path):
    os.truncate(path, 1000)


def not_hdf5(path):
    with open(path, "wb") as f:
        f.write(b"HDF cut short")


def unit_file_instead(path):
    with h5py.File(path, "r+") as f:
        f.attrs["format"] = "tinysql-eap unit v1"


def dataset_missing(path):
    with h5py.File(path, "r+") as f:
        del f["edge_count"]


def wrong_shape(path):
    with h5py.File(path, "r+") as f:
        x = f["logit_diff"][()]
        del f["logit_diff"]
        f.create_dataset("logit_diff", data=x[:, :-1])


def count_missing(path):
    with h5py.File(path, "r+") as f:
        del f.attrs["n_circuits"]


def ld_not_finite(path):
    with h5py.File(path, "r+") as f:
        f["clean_logit_diff"][0] = np.inf


DAMAGED = [(truncate_1000, "cannot be read whole"), (not_hdf5, "cannot be read whole"),
           (unit_file_instead, "not a tinysql-eap evaluation file"), (dataset_missing, "dataset 'edge_count' is missing"),
           (wrong_shape, r"dataset 'logit_diff' has shape \[7, 3\], expected \[7, 4\]"),
           (count_missing, "attribute 'n_circuits' is missing"), (ld_not_finite, "not finite")]


def set_attr(name, value):
    def f(path):
        with h5py.File(path, "r+") as h:
            h.attrs[name] = value
    f.__name__ = f"{name}_{value}"
    return f


def other_circuits(path):
    with h5py.File(path, "r+") as f:
        f["edge_count"][0] = 4


FOREIGN = [(set_attr("cell_id", "BM1.CS1.DefFieldName.novel1.synfield0.syntable0"), "holds cell BM1.CS1.DefFieldName"),
           (set_attr("batch_index", np.int64(2)), "holds batch 2, not 1"),
           (set_attr("settings_hash", "0123456789abcdef"), "settings_hash 0123456789abcdef, not the manifest's"),
           (set_attr("evaluation_hash", "0123456789abcdef"), r"another \[evaluate\] table \(top_k '1,2,5,10', not "
                                                             r"'1,2,5,all'\)"),
           (other_circuits, "its circuits .* differ from .*b00000.h5's"),
           (set_attr("baseline_clean_ld", np.float64(9.0)), "its baselines .* differ")]


@pytest.mark.parametrize("spoil,reason", DAMAGED + FOREIGN, ids=[f.__name__ for f, _ in DAMAGED + FOREIGN])
def test_damaged_and_foreign_files_are_left_out_and_named(esweep, spoil, reason):
    out, cells, _ = esweep
    cid = cells["a"]["id"]
    path = evaluation.evaluation_path(out, cid, 1)
    if spoil.__name__.startswith("evaluation_hash"):
        with h5py.File(path, "r+") as h:  # what the runner writes for another [evaluate] table
            h.attrs["evaluation"] = EVALUATION.replace("top_k=1,2,5,all", "top_k=1,2,5,10")
    spoil(path)
    state = "damaged" if (spoil, reason) in DAMAGED else "foreign"
    inv = evaluation.inventory(out)
    row = inv[(inv["cell_id"] == cid) & (inv["batch"] == 1)].iloc[0]
    assert row["state"] == state and row["path"] == path
    assert pd.Series([row["reason"]]).str.contains(reason).all(), row["reason"]
    assert list(evaluation.problems(out)["path"]) == [path]
    with pytest.warns(load.SweepWarning) as w:
        df = evaluation.load_evaluations(out)
    msg = " ".join(str(x.message) for x in w)
    assert f"1 evaluation file(s) not used: {state} {path}" in msg
    a = df[df["cell_id"] == cid]
    assert sorted(set(a["batch"])) == [0, 2] and not a["complete"].any()
    with pytest.warns(load.SweepWarning):
        assert cid not in set(evaluation.cell_faithfulness(out)["cell_id"])  # incomplete now
    with pytest.raises(load.SweepError) as e:
        evaluation.load_evaluations(out, strict=True)
    assert str(e.value).startswith(f"{path}: {state} evaluation file: ") and "\n" not in str(e.value)
    if state == "damaged":
        with pytest.raises(load.SweepError, match="^" + path.replace(".", r"\.")):
            evaluation.read_evaluation(path)


def test_failed_missing_and_extra_files(esweep):
    out, cells, _ = esweep
    a, partial, unev = cells["a"]["id"], cells["partial"]["id"], cells["unevaluated"]["id"]
    os.makedirs(os.path.join(out, "failed"), exist_ok=True)
    with open(evaluation.failure_path(out, partial, 1), "w") as f:
        f.write("RuntimeError: out of memory (synthetic)\n")
    src = evaluation.evaluation_path(out, a, 0)
    extra = [evaluation.evaluation_path(out, a, 3), evaluation.evaluation_path(out, unev, 0),
             evaluation.evaluation_path(out, "BM3.CS0.EngTableName.novel0.synfield0.syntable0", 0)]
    for p in extra:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(src, "rb") as s, open(p, "wb") as d:
            d.write(s.read())
    inv = evaluation.inventory(out)
    st = {(r.cell_id, r.batch): (r.state, r.reason) for r in inv.itertuples()}
    assert st[(partial, 1)] == ("failed", "RuntimeError: out of memory (synthetic)")
    assert st[(partial, 2)] == ("missing", "")
    assert st[(a, 3)][0] == "extra" and "beyond the manifest's n_batches 3" in st[(a, 3)][1]
    assert st[(unev, 0)][0] == "extra" and "is not evaluated" in st[(unev, 0)][1]
    assert st[("BM3.CS0.EngTableName.novel0.synfield0.syntable0", 0)][0] == "extra"
    assert sorted(evaluation.problems(out)["path"]) == sorted(extra)
    # Extra files are ignored without a warning (as for unit files); the table is unchanged.
    assert len(evaluation.load_evaluations(out)) == 10 * len(CIRCUITS)


# --- A real sweep: `tinysql-eap run` with an [evaluate] table ----------------------------------------


def add_evaluate(job, evaluate, **settings):
    text = open(job).read()
    for k, v in settings.items():
        text = text.replace("[settings]\n", f"[settings]\n{k} = {json.dumps(v)}\n")
    open(job, "w").write(text + "\n[evaluate]\n" + evaluate + "\n")


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    model = make_tiny_model(tmp / "model")
    runs = {}
    for name, evaluate, settings in (("plain", 'top_k = [1, 5, 20, "all"]', {}),
                                     ("nodes", 'top_k = [2, "all"]\nprune = true',
                                      {"input_node": True, "logits_node": True})):
        out = tmp / name
        job = write_job(tmp / f"{name}.toml", out, model, features=("EngTableName", "DefFieldName"), batches=3,
                        top_n=5)
        add_evaluate(job, evaluate, **settings)
        run_teap("run", job, check=0)
        runs[name] = str(out)
    return model, runs


def gap_of(df, cf):
    """LD_clean - LD_corr of each cell of `cf` (a cell_faithfulness table), from `df`'s baselines."""
    b = df.groupby("cell_id", observed=True)[["baseline_clean_ld", "baseline_corrupt_ld"]].first()
    gap = b["baseline_clean_ld"] - b["baseline_corrupt_ld"]
    return gap.loc[cf["cell_id"]].set_axis(cf.index) if "cell_id" in cf.columns else gap.loc[cf.index]


def test_real_sweep_loads_complete_and_agrees_with_its_runs(real):
    _, runs = real
    out = runs["plain"]
    manifest = load.read_manifest(out)
    assert all(c.get("evaluation_hash") for c in manifest["cells"])
    inv = evaluation.inventory(out)
    assert (inv["state"] == "ok").all() and len(inv) == 6
    df = evaluation.load_evaluations(out)
    assert df["complete"].all() and set(df["cell_id"]) == {c["id"] for c in manifest["cells"]}
    p = evaluation.load_evaluations(out, prompts=True)
    # F of each batch is the mean of its prompts' normalised LDs, with the cell's baselines.
    norm = (p["ld"] - p["baseline_corrupt_ld"]) / (p["baseline_clean_ld"] - p["baseline_corrupt_ld"])
    f = norm.groupby([p["cell_id"], p["batch"], p["circuit"]], observed=True).mean()
    stored = df.set_index(["cell_id", "batch", "circuit"])["F"]
    np.testing.assert_allclose(f.loc[stored.index].to_numpy(), stored.to_numpy(), rtol=1e-9, atol=1e-12)
    # Keeping every edge is the clean run (float tolerance).
    full = p[p["circuit"] == "full"]
    np.testing.assert_allclose(full["ld"], full["clean_ld"], rtol=1e-5, atol=1e-5)
    # The baselines are the unit files' (LD_clean, LD_corr over every prompt of the cell).
    base = load.baselines(load.load_units(out)).set_index("cell_id")
    for cid, g in df.groupby("cell_id", observed=True):
        assert g["baseline_clean_ld"].iloc[0] == pytest.approx(base.loc[cid, "clean_ld"], rel=1e-12)
        assert g["baseline_corrupt_ld"].iloc[0] == pytest.approx(base.loc[cid, "corrupt_ld"], rel=1e-12)
    # The consistent circuit has the reducer's consistent edges; top-k has min(k, edges) edges.
    n_edges = int(load.load_sweep(out).query("batch == 0").groupby("cell_id", observed=True).size().iloc[0])
    ce = compare.consistent_edges(load.load_sweep(out), top_n_edges=5)
    cf = evaluation.cell_faithfulness(out).set_index("cell_id")
    for cid, r in cf.iterrows():
        assert r["consistent_edges"] == int((ce["cell_id"] == cid).sum())
        assert r["curve_k"] == [1, 5, 20, n_edges]
        # Equal batches: the mean of F(full) is 1 (in LD units: F divides by LD_clean - LD_corr).
        assert (r["full_F"] - 1) * gap_of(df, cf).loc[cid] == pytest.approx(0.0, abs=1e-5)
        assert r["auc_log_k"] == pytest.approx(evaluation.log_k_auc(r["curve_k"], r["curve_F"]))
    cs = evaluation.circuit_summary(df)
    top = cs[cs["k"].notna()]
    assert (top["edges"] == top["k"]).all()


def test_real_sweep_with_both_nodes_scored_and_pruning(real):
    _, runs = real
    out = runs["nodes"]
    df = evaluation.load_evaluations(out)
    assert df["input_node"].all() and df["logits_node"].all() and df["prune"].all()
    j = evaluation.faithfulness_object(out, df["cell_id"].iloc[0])
    assert j["scored_nodes"] == {"input": True, "logits": True}
    assert j["never_ablated"] == "nothing: every edge was scored" and j["pruned"] is True
    # With both extra nodes scored, keeping no edge is the corrupt run: F(empty) = 0 on average.
    p = evaluation.load_evaluations(out, prompts=True)
    empty = p[p["circuit"] == "empty"]
    np.testing.assert_allclose(empty["ld"], empty["corrupt_ld"], rtol=1e-5, atol=1e-5)
    cf = evaluation.cell_faithfulness(out)
    # F divides by LD_clean - LD_corr (small on a random model): compare in LD units.
    gap = gap_of(df, cf)
    assert np.allclose(cf["empty_F"] * gap, 0.0, atol=1e-5) and np.allclose((cf["full_F"] - 1) * gap, 0.0, atol=1e-5)
    # Pruning only removes edges: a top-k circuit has at most k.
    cs = evaluation.circuit_summary(out)
    top = cs[cs["k"].notna()]
    assert (top["edges"] <= top["k"]).all()


def test_real_sweep_equals_attribute_evaluate(real, tmp_path):
    """`attribute --evaluate --json` on one cell writes the same `faithfulness` object (after the
    JSON's round(x, 8)) as analysis/ builds from the sweep's evaluation files."""
    model, runs = real
    out = runs["plain"]
    cid = "BM1.CS1.DefFieldName.novel0.synfield0.syntable0"
    js = tmp_path / "cell.json"
    run_teap("--log-level", "warn", "attribute", "--model", model, "--feature", "DefFieldName", "--batches", "3",
             "--batch-size", "4", "--num-fields", "2", "--seed", "0", "--top-n", "5", "--threads", "1",
             "--trim-vocab", "--evaluate", "--top-k", "1,5,20,all", "--json", str(js), check=0)
    want = json.loads(js.read_text())["faithfulness"]

    def rounded(x):
        if isinstance(x, float):
            return round(x, 8)
        if isinstance(x, dict):
            return {k: rounded(v) for k, v in x.items()}
        if isinstance(x, list):
            return [rounded(v) for v in x]
        return x

    got = rounded(evaluation.faithfulness_object(out, cid))
    assert list(got) == list(want)
    assert got == want


def test_real_sweep_other_evaluate_table_is_foreign(real, tmp_path):
    """Files of an earlier [evaluate] table under a manifest of another: foreign, named, the key that differs."""
    _, runs = real
    out = runs["plain"]
    manifest_path = os.path.join(out, "sweep.json")
    saved = open(manifest_path).read()
    try:
        m = json.loads(saved)
        for c in m["cells"]:
            c["evaluation"] = c["evaluation"].replace("prune=0", "prune=1")
            c["evaluation_hash"] = fnv1a64(c["settings"] + ";" + c["evaluation"])
        open(manifest_path, "w").write(json.dumps(m))
        inv = evaluation.inventory(out)
        assert (inv["state"] == "foreign").all()
        assert inv["reason"].str.contains(r"another \[evaluate\] table \(prune '0', not '1'\)").all()
    finally:
        open(manifest_path, "w").write(saved)
    # The runner's evaluation hash is the settings hash of settings + ";" + evaluation.
    m = json.loads(saved)
    assert all(c["evaluation_hash"] == fnv1a64(c["settings"] + ";" + c["evaluation"]) for c in m["cells"])


def demo_model():
    """The trained demo model: TEAP_DEMO_MODEL, else the repository's .cache/demo-model
    (scripts/demo.sh trains it), else build/tests/sweep/demo-model (ctest's sweep_quality trains
    it); None when none holds one."""
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    for d in (os.environ.get("TEAP_DEMO_MODEL", ""), os.path.join(root, ".cache", "demo-model"),
              os.path.join(root, "build", "tests", "sweep", "demo-model")):
        if d and os.path.isfile(os.path.join(d, "config.json")) and os.path.isfile(os.path.join(d, "model.safetensors")):
            return os.path.abspath(d)
    return None


def test_demo_model_circuits_carry_the_behaviour(tmp_path):
    """On the trained demo model (the notebook's graph), the consistent circuit keeps most of the
    clean-corrupt gap, far above what the never-ablated edges keep alone, and F(k) climbs to 1."""
    model = demo_model()
    if model is None:
        pytest.skip("no trained demo model (TEAP_DEMO_MODEL, or .cache/demo-model from scripts/demo.sh)")
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", out, model, features=("EngTableName",), batches=2, batch_size=30, top_n=10)
    add_evaluate(job, "")
    run_teap("--log-level", "warn", "run", job, check=0)
    cf = evaluation.cell_faithfulness(str(out))
    assert len(cf) == 1 and cf["complete"].all()
    r = cf.iloc[0]
    assert r["consistent_edges"] > 0
    assert r["consistent_F"] > 0.5 and r["consistent_F"] > r["empty_F"] + 0.3, r
    assert r["full_F"] == pytest.approx(1.0, abs=1e-4) and r["curve_F"][-1] == pytest.approx(1.0, abs=1e-4)
    assert r["empty_F"] < r["auc_log_k"] < 1.1
    assert r["curve_k"][:6] == [1, 2, 5, 10, 20, 50]  # the default list, capped at the graph's edges
