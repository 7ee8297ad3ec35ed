"""Two sweeps of the same cells with different scoring methods side by side (issue 12, item 3):
rank correlation of the edge scores, overlap of the consistent edges, faithfulness of each method's
consistent circuit; on synthetic sweeps written with h5py (expected values computed here from the
files) and on two real sweeps (eap and eap-ig-inputs, with [evaluate]) of a tiny model."""

import json
import os
import shutil
import warnings

import h5py
import numpy as np
import pytest

from conftest import make_sweep, make_tiny_model, run_teap, write_job
from tinysql_eap import load, methods

EVAL_FORMAT = "tinysql-eap evaluation v1"


def set_method(out, method, ig_steps=None):
    path = os.path.join(out, "sweep.json")
    with open(path) as f:
        m = json.load(f)
    for c in m["cells"]:
        c["method"] = method
        if ig_steps is not None:
            c["ig_steps"] = ig_steps
    with open(path, "w") as f:
        json.dump(m, f)


def map_scores(out, fn, cells=None):
    """Replaces every unit file's scores by fn(scores, cell, batch) (valid entries only)."""
    for cell, batch, path in load.unit_files(out, cells):
        with h5py.File(path, "r+") as f:
            s = f["scores"][()]
            valid = f["valid"][()].astype(bool)
            new = np.where(valid, fn(s, cell, batch), 0).astype(np.float32)
            f["scores"][...] = new


def two_sweeps(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    os.makedirs(a)
    cells = make_sweep(a)
    shutil.copytree(a, b)
    set_method(b, "eap-ig-inputs", 5)
    return a, b, cells


def plain_consistent(out, cell, n_batches, top_n):
    """Edges in the top-n by |score| of every batch (ties by index), from the files with h5py."""
    sets = []
    for b in range(n_batches):
        with h5py.File(load.unit_path(out, cell, b), "r") as f:
            s = f["scores"][()].astype(np.float64)
            valid = f["valid"][()].astype(bool)
            up = [x.decode() if isinstance(x, bytes) else x for x in f["upstream"][()]]
            down = [x.decode() if isinstance(x, bytes) else x for x in f["downstream"][()]]
        ui, di = np.nonzero(valid)
        order = np.lexsort((di, ui, -np.abs(s[ui, di])))[:top_n]
        sets.append({(load.display_name(up[ui[i]]), load.display_name(down[di[i]])) for i in order})
    return set.intersection(*sets)


def plain_mean_scores(out, cell, n_batches):
    """Mean over batches of the valid scores (raw: the normalisation is one positive factor)."""
    total = None
    for b in range(n_batches):
        with h5py.File(load.unit_path(out, cell, b), "r") as f:
            s = f["scores"][()].astype(np.float64)
            valid = f["valid"][()].astype(bool)
        total = s[valid] if total is None else total + s[valid]
    return total / n_batches


def ranks(x):
    """Average ranks, written out."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        r[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def test_spearman_helper():
    assert methods.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert methods.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert methods.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # Ties: average ranks, then Pearson on the ranks.
    x, y = [1, 1, 2, 3, 5], [2, 1, 1, 4, 3]
    want = np.corrcoef(ranks(x), ranks(y))[0, 1]
    assert methods.spearman(x, y) == pytest.approx(want)
    assert np.isnan(methods.spearman([1, 1, 1], [1, 2, 3]))
    assert np.isnan(methods.spearman([1], [2]))
    with pytest.raises(ValueError):
        methods.spearman([1, 2], [1, 2, 3])


def test_same_scores_other_method_agree_fully(tmp_path):
    a, b, cells = two_sweeps(tmp_path)
    with pytest.warns(load.SweepWarning) as w:
        t = methods.compare_methods(a, b)
    done = sorted(c["id"] for c in cells if c["status"] == "done")
    assert list(t["cell_id"]) == done
    assert set(t["method_a"]) == {"eap"} and set(t["method_b"]) == {"eap-ig-inputs (m=5)"}
    assert np.allclose(t["spearman"], 1.0) and np.allclose(t["jaccard"], 1.0)
    assert (t["consistent_a"] == t["consistent_b"]).all() and (t["common"] == t["consistent_a"]).all()
    assert t["f_a"].isna().all() and (t["evaluated_a"] == 0).all()
    # The cells not compared are named, each with why.
    text = " ".join(str(x.message) for x in w)
    for c in cells:
        if c["status"] != "done":
            assert c["id"] in text, (c["id"], text)
    assert "degenerate" in text and "not complete" in text


def test_scores_against_values_computed_from_the_files(tmp_path):
    a, b, cells = two_sweeps(tmp_path)
    rng = np.random.default_rng(3)
    # b: another method's scores: the same strong edges, a monotone transform, and new noise.
    noise = {}

    def other(s, cell, batch):
        n = noise.setdefault((cell, batch), rng.normal(0, 0.3, s.shape))
        return np.sign(s) * np.abs(s) ** 1.5 + n

    map_scores(b, other)
    done = [c for c in cells if c["status"] == "done"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", load.SweepWarning)
        t = methods.compare_methods(a, b, top_n_edges=4).set_index("cell_id")
    for c in done:
        row = t.loc[c["id"]]
        sa = plain_mean_scores(a, c["id"], c["n_batches"])
        sb = plain_mean_scores(b, c["id"], c["n_batches"])
        assert row["n_edges"] == len(sa)
        assert row["spearman"] == pytest.approx(np.corrcoef(ranks(sa), ranks(sb))[0, 1], abs=1e-9)
        assert 0.3 < row["spearman"] < 0.999
        ea = plain_consistent(a, c["id"], c["n_batches"], 4)
        eb = plain_consistent(b, c["id"], c["n_batches"], 4)
        assert (row["consistent_a"], row["consistent_b"], row["common"]) == (len(ea), len(eb), len(ea & eb))
        union = ea | eb
        assert row["jaccard"] == pytest.approx(len(ea & eb) / len(union) if union else 1.0)
    # A negated method: the ranks reverse, the |score| rankings and so the edges stay.
    neg = str(tmp_path / "neg")
    shutil.copytree(a, neg)
    map_scores(neg, lambda s, cell, batch: -s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", load.SweepWarning)
        t = methods.compare_methods(a, neg)
    assert np.allclose(t["spearman"], -1.0) and np.allclose(t["jaccard"], 1.0)


def write_evaluation(out, cell, batch, f_values, circuits=("consistent", "top-5", "empty", "full"), **attrs):
    folder = os.path.join(out, "evaluation", cell["id"])
    os.makedirs(folder, exist_ok=True)
    with h5py.File(os.path.join(folder, f"b{batch:05d}.h5"), "w") as f:
        f.create_dataset("circuit", data=np.array(list(circuits), dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("faithfulness", data=np.asarray(f_values, dtype=np.float64))
        a = dict(format=EVAL_FORMAT, cell_id=cell["id"], settings_hash=cell["settings_hash"])
        a.update(attrs)
        for k, v in a.items():
            f.attrs[k] = v
        f.attrs.create("batch_index", np.int64(attrs.get("batch_index", batch)), dtype=np.int64)


def test_faithfulness_of_each_methods_consistent_circuit(tmp_path):
    a, b, cells = two_sweeps(tmp_path)
    done = [c for c in cells if c["status"] == "done"]
    for i, c in enumerate(done):
        for batch in range(c["n_batches"]):
            write_evaluation(a, c, batch, [0.5 + 0.1 * batch + i, 0.7, 0.0, 1.0])
            write_evaluation(b, c, batch, [0.8 - 0.05 * batch, 0.6, 0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", load.SweepWarning)
        t = methods.compare_methods(a, b).set_index("cell_id")
    for i, c in enumerate(done):
        n = c["n_batches"]
        assert t.loc[c["id"], "f_a"] == pytest.approx(np.mean([0.5 + 0.1 * k + i for k in range(n)]))
        assert t.loc[c["id"], "f_b"] == pytest.approx(np.mean([0.8 - 0.05 * k for k in range(n)]))
        assert t.loc[c["id"], "evaluated_a"] == n and t.loc[c["id"], "evaluated_b"] == n
    # Another circuit by name.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", load.SweepWarning)
        t2 = methods.compare_methods(a, b, circuit="top-5")
    assert np.allclose(t2["f_a"], 0.7) and np.allclose(t2["f_b"], 0.6)
    # A file of another cell, of another scoring run, or not an evaluation file: left out, named.
    c = done[0]
    write_evaluation(a, c, 0, [9.0, 9.0, 9.0, 9.0], cell_id="BM9.other")
    write_evaluation(a, c, 1, [9.0, 9.0, 9.0, 9.0], settings_hash="0" * 16)
    with open(os.path.join(a, "evaluation", c["id"], "b00002.h5"), "w") as f:
        f.write("not hdf5")
    with pytest.warns(load.SweepWarning, match="3 evaluation file"):
        f_a, n_a = methods.read_faithfulness(a, c)
    assert n_a == 0 and np.isnan(f_a)


def test_cells_whose_prompts_differ_are_not_compared(tmp_path):
    a, b, cells = two_sweeps(tmp_path)
    path = os.path.join(b, "sweep.json")
    m = json.load(open(path))
    changed = next(c for c in m["cells"] if c["id"] == cells[0]["id"])
    changed["seed"] = 99
    json.dump(m, open(path, "w"))
    with pytest.warns(load.SweepWarning, match=r"differ in seed"):
        t = methods.compare_methods(a, b)
    assert cells[0]["id"] not in set(t["cell_id"])
    assert len(t) == sum(c["status"] == "done" for c in cells) - 1


def test_real_sweeps_eap_and_eap_ig_inputs_with_evaluation(tmp_path):
    model = make_tiny_model(tmp_path / "model")
    outs = {}
    for method in ("eap", "eap-ig-inputs"):
        out = tmp_path / method
        extra = {"method": method, **({"ig_steps": 3} if method == "eap-ig-inputs" else {})}
        job = write_job(tmp_path / f"{method}.toml", out, model, top_n=5, **extra)
        with open(job, "a") as f:
            f.write('\n[evaluate]\ncircuits = ["consistent", "empty", "full"]\n')
        run_teap("run", job, check=0)
        outs[method] = str(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error", load.SweepWarning)
        t = methods.compare_methods(outs["eap"], outs["eap-ig-inputs"])
    assert len(t) == 2
    assert set(t["method_a"]) == {"eap"} and set(t["method_b"]) == {"eap-ig-inputs (m=3)"}
    assert ((t["spearman"] > -1) & (t["spearman"] < 1)).all(), t
    assert (t["evaluated_a"] == 2).all() and (t["evaluated_b"] == 2).all()
    assert np.isfinite(t["f_a"]).all() and np.isfinite(t["f_b"]).all()
    # F as the files hold it, read here with h5py.
    for row in t.itertuples():
        for out, got in ((outs["eap"], row.f_a), (outs["eap-ig-inputs"], row.f_b)):
            vals = []
            for batch in range(2):
                with h5py.File(os.path.join(out, "evaluation", row.cell_id, f"b{batch:05d}.h5"), "r") as f:
                    names = [x.decode() if isinstance(x, bytes) else x for x in f["circuit"][()]]
                    vals.append(f["faithfulness"][()][names.index("consistent")])
            assert got == pytest.approx(np.mean(vals))
    # A sweep against itself: full agreement.
    with warnings.catch_warnings():
        warnings.simplefilter("error", load.SweepWarning)
        same = methods.compare_methods(outs["eap"], outs["eap"])
    assert np.allclose(same["spearman"], 1.0) and np.allclose(same["jaccard"], 1.0)
    assert np.allclose(same["f_a"], same["f_b"])
