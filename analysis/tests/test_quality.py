"""Cell quality (issue 13): effect size against |LD_clean| and the spread of LD, clean accuracy and
top-answer flips per cell, with the flags degenerate / low_effect / low_accuracy, computed in
Python from the unit files exactly as src/eap/quality.cpp computes them; thresholds from the
manifest's `quality` object and keyword overrides; flagged cells left out of the cross-cell
comparisons by default, never silently."""

import json
import math
import os
import re
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import (CELL_DEFAULTS, cell_id, fnv1a64, make_graph, make_tiny_model, run_teap, settings_of,
                      write_job, write_unit)
from tinysql_eap import compare, load

N_LAYERS, N_HEADS = 2, 2


def write_cells(out, specs, quality=None, seed=0):
    """A sweep folder from specs {"feature": ..., "batches": [dict(clean=[...], corrupt=[...],
    correct=k, clean_top=[...] or None, corrupt_top=[...] or None)]}; `quality`: the manifest's
    quality object (none when None). Scores: a few strong edges common to all batches."""
    rng = np.random.default_rng(seed)
    up, down, valid = make_graph(N_LAYERS, N_HEADS)
    cells = []
    for spec in specs:
        c = dict(CELL_DEFAULTS)
        c.update(feature=spec["feature"], n_batches=len(spec["batches"]), batch_size=len(spec["batches"][0]["clean"]))
        c.update(spec.get("settings", {}))
        c["id"] = cell_id(c)
        c["settings"] = settings_of(c)
        c["settings_hash"] = fnv1a64(c["settings"])
        strong = rng.normal(0, 1.0, valid.shape) * (rng.random(valid.shape) < 0.3)
        for b, bt in enumerate(spec["batches"]):
            scores = (strong + rng.normal(0, 0.01, valid.shape)) * valid
            write_unit(load.unit_path(out, c["id"], b), c, b, up, down, valid, scores, bt["clean"], bt["corrupt"],
                       N_LAYERS, N_HEADS, rng=rng, clean_correct=bt.get("correct"), clean_top=bt.get("clean_top"),
                       corrupt_top=bt.get("corrupt_top"))
        cells.append(c)
    manifest = {"version": "synthetic", "job": "synthetic.toml", "cells": cells}
    if quality is not None:
        manifest["quality"] = quality
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return {spec["feature"]: c["id"] for spec, c in zip(specs, cells)}


def healthy(rng, n=3, B=4, correct=3, tops=True):
    out = []
    for _ in range(n):
        bt = dict(clean=rng.normal(3.0, 0.5, B), corrupt=rng.normal(-1.0, 0.5, B), correct=correct)
        if tops:
            bt.update(clean_top=rng.integers(0, 5, B), corrupt_top=rng.integers(0, 5, B))
        out.append(bt)
    return out


def near_degenerate(rng, n=3, B=4):
    # The corruption barely moves LD: 2.7439 against 2.7424 (an effect of 0.0015).
    return [dict(clean=2.7439 + rng.normal(0, 0.0002, B), corrupt=2.7424 + rng.normal(0, 0.0002, B), correct=B)
            for _ in range(n)]


@pytest.fixture
def qsweep(tmp_path):
    rng = np.random.default_rng(3)
    out = str(tmp_path / "q")
    os.makedirs(out)
    specs = [dict(feature="EngTableName", batches=healthy(rng)),
             dict(feature="EngFieldName", batches=near_degenerate(rng)),
             dict(feature="DefTableName", batches=healthy(rng, correct=0)),
             dict(feature="DefFieldName", batches=[dict(clean=[1.5] * 4, corrupt=[1.5] * 4, correct=4)] * 2)]
    ids = write_cells(out, specs)
    return out, ids, specs


def plain(spec):
    """The quality numbers with numpy, straight from the spec."""
    bs = spec["batches"]
    clean = np.concatenate([np.asarray(b["clean"], float) for b in bs])
    corrupt = np.concatenate([np.asarray(b["corrupt"], float) for b in bs])
    effects = [np.mean(b["clean"]) - np.mean(b["corrupt"]) for b in bs]
    return dict(effect=clean.mean() - corrupt.mean(), effect_spread=np.std(effects, ddof=1) if len(bs) > 1 else 0.0,
                ld_spread=np.std(clean, ddof=1), clean_accuracy=sum(b["correct"] for b in bs) / len(clean))


def test_numbers_and_flags_of_healthy_near_degenerate_inaccurate_and_degenerate_cells(qsweep):
    out, ids, specs = qsweep
    with warnings.catch_warnings():
        warnings.simplefilter("error", load.SweepWarning)
        q = load.cell_quality(out).set_index("cell_id")
    assert list(q.reset_index().columns) == load.QUALITY_COLUMNS
    assert sorted(q.index) == sorted(ids.values())
    for spec in specs:
        row = q.loc[ids[spec["feature"]]]
        for k, v in plain(spec).items():
            assert abs(row[k] - v) <= 1e-12 * max(1.0, abs(v)), (spec["feature"], k, row[k], v)
        assert row["complete"] and row["n_prompts"] == 4 * len(spec["batches"])
    assert q.loc[ids["EngTableName"], "flags"] == "" and not q.loc[ids["EngTableName"], "flagged"]
    assert q.loc[ids["EngTableName"], "reasons"] == []
    near = q.loc[ids["EngFieldName"]]
    assert near["flags"] == "low_effect" and near["flagged"]
    assert 0.001 < near["effect"] < 0.002
    assert re.match(r"low_effect: \|LD_clean - LD_corr\| = 0\.001\d+ is small against \|LD_clean\| = 2\.74",
                    near["reasons"][0]), near["reasons"]
    bad = q.loc[ids["DefTableName"]]
    assert bad["flags"] == "low_accuracy" and bad["clean_accuracy"] == 0.0
    assert bad["reasons"] == ["low_accuracy: the clean run's top answer is right for 0.0% of prompts (threshold 50%): "
                              "the model does not do this task"]
    deg = q.loc[ids["DefFieldName"]]
    # Degenerate, and no low_effect on top of it.
    assert deg["flags"] == "degenerate" and deg["effect"] == 0.0 and deg["effect_spread"] == 0.0
    assert deg["reasons"] == ["degenerate: LD_clean = 1.5, LD_corr = 1.5 over 8 prompts, so no normalised score exists"]


def test_one_batch_has_no_spread_over_batches(tmp_path):
    out = str(tmp_path / "one")
    os.makedirs(out)
    rng = np.random.default_rng(5)
    ids = write_cells(out, [dict(feature="EngTableName", batches=healthy(rng, n=1))])
    row = load.cell_quality(out).set_index("cell_id").loc[ids["EngTableName"]]
    assert row["effect_spread"] == 0.0 and row["ld_spread"] > 0 and row["flags"] == ""


def test_notebook_pairing_uses_plain_means_for_quality(tmp_path):
    """As the C++: the quality of a metric_pairing "notebook" cell takes the means over every
    prompt, not the notebook's mean of batch means (they differ for batches of unequal size)."""
    out = str(tmp_path / "nb")
    os.makedirs(out)
    bs = [dict(clean=[4.0, 4.0, 4.0, 4.0], corrupt=[0.0, 0.0, 0.0, 0.0], correct=4),
          dict(clean=[1.0, 1.0], corrupt=[0.5, 0.5], correct=2)]
    ids = write_cells(out, [dict(feature="EngTableName", batches=bs, settings={"metric_pairing": "notebook"})])
    row = load.cell_quality(out).set_index("cell_id").loc[ids["EngTableName"]]
    assert row["clean_ld"] == 18 / 6 and row["corrupt_ld"] == 1 / 6 and row["effect"] == 18 / 6 - 1 / 6
    assert row["effect"] != (4.0 + 1.0) / 2 - (0.0 + 0.5) / 2
    assert abs(row["effect_spread"] - np.std([4.0, 0.5], ddof=1)) <= 1e-12


def test_flips_from_top_tokens_and_nan_without_them(tmp_path):
    out = str(tmp_path / "flips")
    os.makedirs(out)
    B = 4
    base = dict(clean=[3.0, 3.5, 2.5, 3.2], corrupt=[-1.0, -0.5, -1.5, -1.2], correct=B)
    tops = [dict(base, clean_top=[1, 2, 3, 4], corrupt_top=[1, 9, 3, 8]),   # 2 flips
            dict(base, clean_top=[5, 5, 5, 5], corrupt_top=[6, 6, 6, 5])]   # 3 flips
    old = [dict(base, clean_top=[1, 2, 3, 4], corrupt_top=[4, 3, 2, 1]), dict(base)]  # batch 1 written before tops
    ids = write_cells(out, [dict(feature="EngTableName", batches=tops), dict(feature="EngFieldName", batches=old),
                            dict(feature="DefTableName", batches=[dict(base), dict(base)])])
    q = load.cell_quality(out).set_index("cell_id")
    assert q.loc[ids["EngTableName"], "flip_fraction"] == 5 / 8
    assert math.isnan(q.loc[ids["EngFieldName"], "flip_fraction"])
    assert math.isnan(q.loc[ids["DefTableName"], "flip_fraction"])
    units = load.load_units(out).set_index(["cell_id", "batch"])
    assert units.loc[(ids["EngTableName"], 1), "corrupt_top"] == [6, 6, 6, 5]
    assert units.loc[(ids["EngFieldName"], 1), "clean_top"] is None
    # Top tokens of the wrong size: the file is damaged (as io::read_unit), named, not used.
    path = load.unit_path(out, ids["EngTableName"], 1)
    with h5py.File(path, "r+") as f:
        del f["corrupt_top_token"]
        f.create_dataset("corrupt_top_token", data=np.zeros(3, dtype=np.int64))
    with pytest.warns(load.SweepWarning, match=re.escape(path) + r" \(dataset 'corrupt_top_token' has 3 values"):
        assert load.cell_status(out)[ids["EngTableName"]] == "damaged"


def test_thresholds_from_the_manifest_and_overrides(tmp_path):
    rng = np.random.default_rng(11)
    specs = [dict(feature="EngTableName", batches=healthy(rng, correct=3)),   # accuracy 0.75
             dict(feature="EngFieldName", batches=near_degenerate(rng))]
    out = str(tmp_path / "m")
    os.makedirs(out)
    ids = write_cells(out, specs, quality={"min_accuracy": 0.8, "min_effect_vs_clean": 0.0001})
    assert load.quality_thresholds(out) == {"min_effect_vs_clean": 0.0001, "min_effect_vs_spread": 0.15,
                                            "min_accuracy": 0.8}
    q = load.cell_quality(out).set_index("cell_id")
    assert q.loc[ids["EngTableName"], "flags"] == "low_accuracy"
    assert "(threshold 80%)" in q.loc[ids["EngTableName"], "reasons"][0]
    near = q.loc[ids["EngFieldName"]]
    # 0.0015 is above 0.0001 x 2.74 and above 0.15 x the spread of clean LD (about 0.0002).
    assert near["flags"] == "" and 0.15 * near["ld_spread"] < abs(near["effect"]) < 0.05 * 2.74
    # Overrides win over the manifest.
    q2 = load.cell_quality(out, min_accuracy=0.5, min_effect_vs_clean=0.05).set_index("cell_id")
    assert q2.loc[ids["EngTableName"], "flags"] == "" and q2.loc[ids["EngFieldName"], "flags"] == "low_effect"
    q3 = load.cell_quality(out, min_effect_vs_clean=0, min_effect_vs_spread=0).set_index("cell_id")
    assert q3.loc[ids["EngFieldName"], "flags"] == ""
    # The same thresholds reach cell_summary and load_sweep.
    s = load.cell_summary(out, min_accuracy=0.5).set_index("cell_id")
    assert s.loc[ids["EngTableName"], "flags"] == "" and not s.loc[ids["EngTableName"], "flagged"]
    df = load.load_sweep(out)
    assert set(df[df["cell_id"] == ids["EngTableName"]]["flags"]) == {"low_accuracy"}
    # An older manifest (no quality object): the defaults.
    with open(os.path.join(out, "sweep.json")) as f:
        m = json.load(f)
    del m["quality"]
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump(m, f)
    assert load.quality_thresholds(out) == load.QUALITY_DEFAULTS
    assert load.cell_quality(out).set_index("cell_id").loc[ids["EngTableName"], "flags"] == ""
    m["quality"] = {"min_accuracy": "high"}
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump(m, f)
    with pytest.raises(load.SweepError, match=r"sweep.json: quality.min_accuracy: not a number"):
        load.cell_quality(out)
    with pytest.raises(ValueError, match="min_accuracy"):
        load.quality_thresholds({"cells": []}, min_accuracy=1.5)


def test_cell_summary_carries_quality_for_done_cells_only(qsweep):
    out, ids, _ = qsweep
    os.remove(load.unit_path(out, ids["EngTableName"], 2))
    s = load.cell_summary(out).set_index("cell_id")
    for col in ("effect", "effect_spread", "ld_spread", "clean_accuracy", "flip_fraction", "flags", "flagged"):
        assert col in s.columns
    part = s.loc[ids["EngTableName"]]
    assert part["status"] == "partial" and math.isnan(part["effect"]) and part["flags"] is None
    assert part["flagged"] is pd.NA
    assert s.loc[ids["EngFieldName"], "flags"] == "low_effect" and s.loc[ids["EngFieldName"], "flagged"]
    assert s.loc[ids["DefTableName"], "flags"] == "low_accuracy"
    assert s.loc[ids["DefFieldName"], "flags"] == "degenerate"
    assert list(s.index[s["flagged"].fillna(False)]) == [ids["EngFieldName"], ids["DefTableName"], ids["DefFieldName"]]
    # cell_quality: complete cells by default, the partial one (provisional numbers) on request.
    assert ids["EngTableName"] not in set(load.cell_quality(out)["cell_id"])
    q = load.cell_quality(out, complete_only=False).set_index("cell_id")
    assert not q.loc[ids["EngTableName"], "complete"] and q.loc[ids["EngTableName"], "n_prompts"] == 8


def test_comparisons_leave_flagged_cells_out_by_default_and_say_so(qsweep):
    out, ids, _ = qsweep
    df = load.load_sweep(out)
    with pytest.warns(load.SweepWarning, match="degenerate"):  # consistent_edges skips the degenerate cell
        ce = compare.consistent_edges(df, top_n_edges=6)
    assert set(ce["cell_id"]) == {ids["EngTableName"], ids["EngFieldName"], ids["DefTableName"]}
    assert dict(zip(ce["cell_id"], ce["flags"]))[ids["EngFieldName"]] == "low_effect"
    with pytest.warns(load.SweepWarning, match=r"edge_sets: 2 flagged cell\(s\) left out \(include_flagged=True") as w:
        sets = compare.edge_sets(ce)
    msg = str(w[0].message)
    assert f"{ids['EngFieldName']} (low_effect)" in msg and f"{ids['DefTableName']} (low_accuracy)" in msg
    assert set(sets) == {ids["EngTableName"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", load.SweepWarning)
        every = compare.edge_sets(ce, include_flagged=True)
    assert set(every) == set(ce["cell_id"])
    q = load.cell_quality(out)
    with pytest.warns(load.SweepWarning, match=r"jaccard_matrix: 2 flagged"):
        m = compare.jaccard_matrix(every, quality=q)
    assert list(m.index) == [ids["EngTableName"]]
    assert compare.jaccard_matrix(every, quality=q, include_flagged=True).shape == (3, 3)
    settings = df[["cell_id", "feature", "commandset", "model", "flags"]]
    with pytest.warns(load.SweepWarning, match=r"recurrence: 2 flagged"):
        r = compare.recurrence(every, settings)
    assert {c for cells in r["cells"] for c in cells} == {ids["EngTableName"]} and (r["share"] == 1.0).all()
    r_all = compare.recurrence(every, settings, include_flagged=True)
    assert {c for cells in r_all["cells"] for c in cells} == set(ce["cell_id"])
    # Overrides through a quality table: nothing flagged, nothing left out.
    lax = load.cell_quality(out, min_effect_vs_clean=0, min_effect_vs_spread=0, min_accuracy=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", load.SweepWarning)
        assert set(compare.edge_sets(ce, quality=lax)) == set(ce["cell_id"])


def test_quality_agrees_with_the_reducer(tmp_path):
    """`tinysql-eap run` on a tiny model and `reduce`: for every reduced cell, the Python quality
    equals the JSON's parameters.quality (numbers after the JSON's round(x, 8), flags, reasons,
    thresholds), under the job's [quality] and under reduce's overrides."""
    model = make_tiny_model(tmp_path / "model")
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", out, model, features=("EngTableName", "EngFieldName", "DefTableName"),
                    batches=3, quality={"min_accuracy": 0.25, "min_effect_vs_spread": 0.5})
    run_teap("run", job, check=0)
    with open(out / "sweep.json") as f:
        assert json.load(f)["quality"] == {"min_effect_vs_clean": 0.05, "min_effect_vs_spread": 0.5,
                                           "min_accuracy": 0.25}
    for args, kw in (([], {}), (["--min-effect-vs-clean", "0.001", "--min-effect-vs-spread", "0", "--min-accuracy",
                                 "0"], dict(min_effect_vs_clean=0.001, min_effect_vs_spread=0, min_accuracy=0))):
        run_teap("reduce", str(out), *args, check=0)
        results = compare.load_results(str(out))
        q = load.cell_quality(str(out), **kw).set_index("cell_id")
        reduced = {c for c in q.index if "degenerate" not in q.loc[c, "flags"]}
        assert reduced and set(results) == reduced, (sorted(results), q)
        jq = compare.results_quality(results).set_index("cell_id")
        for cell, res in results.items():
            want = res["parameters"]["quality"]
            got = q.loc[cell]
            assert want["flip_fraction"] is not None, "the runner records top tokens"
            for mine, theirs in (("effect", "effect"), ("effect_spread", "effect_spread_over_batches"),
                                 ("ld_spread", "ld_spread_over_prompts"), ("clean_accuracy", "clean_accuracy"),
                                 ("flip_fraction", "flip_fraction")):
                # The JSON holds round(x, 8) of the C++ double; the sums are the same, in the same order.
                assert round(float(got[mine]), 8) == want[theirs], (cell, mine, got[mine], want[theirs])
                assert abs(jq.loc[cell, mine] - got[mine]) <= 1e-8 + 1e-9 * abs(got[mine])
            assert load.split_flags(got["flags"]) == want["flags"], (cell, got["flags"], want)
            assert got["reasons"] == want["reasons"]
            assert want["thresholds"] == load.quality_thresholds(str(out), **kw)
            assert jq.loc[cell, "flags"] == got["flags"] and bool(jq.loc[cell, "flagged"]) == bool(got["flagged"])
        # The result JSONs carry the flags: edge_sets leaves the flagged cells out, by name.
        flagged = sorted(c for c in results if q.loc[c, "flagged"])
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            sets = compare.edge_sets(results)
        assert set(sets) == set(results) - set(flagged)
        if flagged:
            assert any(all(c in str(x.message) for c in flagged) for x in w), [str(x.message) for x in w]
