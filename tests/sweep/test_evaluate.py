"""Evaluation units in a sweep (issue 11): they run after their cell's scores, give bit-identical files on
1 and 2 ranks, resume after a kill without redoing finished units, are redone alone when the [evaluate]
table changes, and bad [evaluate] values are refused before any work. A cell with no consistent edge
reports F of the empty circuit; a degenerate cell has no F and says why."""
import math
import os
import shutil
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest

from sweeplib import (BIN, compare_sweeps, evaluation_files, log_lines, patch_tensor, rank_pids, run, start, stop,
                      summary, unit_files, write_job)

FEATURES = ("EngTableName", "EngFieldName", "DefFieldName")
EVALUATE = {"top_k": [1, 5, "all"]}


def read_evaluation(path):
    with h5py.File(path, "r") as f:
        data = {k: f[k][()] for k in f.keys()}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    data["circuit"] = [c.decode() if isinstance(c, bytes) else c for c in data["circuit"]]
    return data, attrs


def test_one_and_two_ranks_and_a_group_of_two(model, tmp_path):
    kw = dict(features=FEATURES, evaluate=EVALUATE)
    one = write_job(tmp_path / "one.toml", tmp_path / "one", model, **kw)
    two = write_job(tmp_path / "two.toml", tmp_path / "two", model, **kw)
    grp = write_job(tmp_path / "grp.toml", tmp_path / "grp", model, group_size=2, **kw)
    assert summary(run(one).stdout) == (12, 0, 0, 12)  # 3 cells x 2 batches, scored then evaluated
    assert summary(run(two, np=2).stdout) == (12, 0, 0, 12)
    assert compare_sweeps(tmp_path / "one", tmp_path / "two", exact=True) == 6
    assert compare_sweeps(tmp_path / "one", tmp_path / "two", exact=True, folder="evaluation") == 6
    # A group sums its members' partial scores in another order: equal to float tolerance.
    assert summary(run(grp, np=2).stdout) == (12, 0, 0, 12)
    # F divides by LD_clean - LD_corr, which on this random model is hundreds of times smaller than
    # the logit differences: their float-order differences (within 1e-5) grow by as much in F.
    assert compare_sweeps(tmp_path / "one", tmp_path / "grp", exact=False, folder="evaluation",
                          rtol_of={"faithfulness": 1e-3}) == 6


def test_evaluation_files_hold_what_the_spec_says(model, tmp_path):
    job = write_job(tmp_path / "job.toml", tmp_path / "out", model, features=FEATURES[:1], batches=3, evaluate=EVALUATE)
    run(job)
    files = evaluation_files(tmp_path / "out")
    assert len(files) == 3
    fulls = []
    for rel in files:
        d, a = read_evaluation(tmp_path / "out" / rel)
        n_edges = d["edge_count"][d["circuit"].index("full")]
        assert d["circuit"] == ["consistent", "top-1", "top-5", f"top-{n_edges}", "empty", "full"]
        assert list(d["circuit_k"]) == [-1, 1, 5, n_edges, -1, -1]
        assert d["logit_diff"].shape == (6, a["n_prompts"])
        assert a["no_faithfulness"] == "" and np.all(np.isfinite(d["faithfulness"]))
        # The full circuit is the clean run: its LDs are the batch's clean LDs, and F follows from them.
        full = d["circuit"].index("full")
        assert np.array_equal(d["logit_diff"][full], d["clean_logit_diff"])
        base = a["baseline_clean_ld"] - a["baseline_corrupt_ld"]
        f = [np.mean((ld - a["baseline_corrupt_ld"]) / base) for ld in d["logit_diff"]]
        assert np.allclose(f, d["faithfulness"], rtol=1e-12, atol=1e-12)
        fulls.append(d["faithfulness"][full])
        # top-all keeps every edge: the clean run too.
        assert np.allclose(d["logit_diff"][3], d["clean_logit_diff"], rtol=1e-5, atol=1e-5)
    # Equal batches: the cell's F of the full circuit is 1, up to float order: the baselines come from
    # the score units, whose runs compute the last layer at the last position only (docs/eap.md), the
    # evaluation's clean run at every position; F magnifies their float-order difference (1e-7 of the
    # logit differences) by LD / (LD_clean - LD_corr), hundreds on this random model.
    assert abs(np.mean(fulls) - 1.0) < 1e-4


def test_kill_during_evaluation_then_rerun(big_model, tmp_path):
    kw = dict(features=("EngTableName", "EngFieldName"), novel=(False, True), batches=8, batch_size=16,
              evaluate={"top_k": [1, 2, 5, 10, 20, 50, "all"]})
    ref = write_job(tmp_path / "ref.toml", tmp_path / "ref", big_model, **kw)
    run(ref, timeout=600)
    job = write_job(tmp_path / "job.toml", tmp_path / "out", big_model, **kw)
    out = str(tmp_path / "out")
    total = 4 * 8 * 2
    proc = start(job, np=2)
    try:
        t0 = time.time()
        while len(evaluation_files(out)) < 3:
            assert proc.poll() is None, f"the run ended before 3 evaluation units:\n{proc.communicate()[1]}"
            assert time.time() - t0 < 300, "no evaluation units after 300 s"
            time.sleep(0.02)
        pids = rank_pids(job)
        os.kill(pids[1], signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        stop(proc)
    done = len(unit_files(out)) + len(evaluation_files(out))
    assert done < total, "the sweep finished before the kill"
    for rel in evaluation_files(out):  # whole files only under final names
        read_evaluation(os.path.join(out, rel))
    before = len(log_lines(out, r"evaluation .* done in"))
    evaluated = len(evaluation_files(out))
    p = run(job, np=2, timeout=600)
    assert summary(p.stdout) == (total - done, done, 0, total)
    assert len(log_lines(out, r"evaluation .* done in")) - before == 32 - evaluated
    assert compare_sweeps(tmp_path / "ref", out, exact=True) == 32
    assert compare_sweeps(tmp_path / "ref", out, exact=True, folder="evaluation") == 32


def test_evaluation_added_or_changed_later_redoes_only_evaluation(model, tmp_path):
    out = tmp_path / "out"
    plain = write_job(tmp_path / "plain.toml", out, model, features=FEATURES[:2])
    assert summary(run(plain).stdout) == (4, 0, 0, 4)
    with_eval = write_job(tmp_path / "eval.toml", out, model, features=FEATURES[:2], evaluate=EVALUATE)
    assert summary(run(with_eval).stdout) == (4, 4, 0, 8)  # only the evaluation units
    changed = write_job(tmp_path / "changed.toml", out, model, features=FEATURES[:2], evaluate={"top_k": [2, 3]})
    p = run(changed)
    assert summary(p.stdout) == (4, 4, 0, 8)
    assert "evaluation_hash" in p.stderr + p.stdout  # the old files were set aside, saying why
    assert len(os.listdir(out / "rejected")) >= 1
    d, _ = read_evaluation(out / evaluation_files(out)[0])
    assert d["circuit"][1:3] == ["top-2", "top-3"]
    # Turning evaluation off leaves the score units alone and plans nothing.
    off = write_job(tmp_path / "off.toml", out, model, features=FEATURES[:2], evaluate={"enabled": False})
    assert summary(run(off).stdout) == (0, 4, 0, 4)


@pytest.mark.parametrize("table,key,message", [
    ({"top_k": [0]}, "evaluate.top_k", "0 is not an edge count"),
    ({"top_k": [5, -3]}, "evaluate.top_k", "-3 is not an edge count"),
    ({"top_k": ["most"]}, "evaluate.top_k", "'most' is not an edge count"),
    ({"top_k": []}, "evaluate.top_k", "expected a list of edge counts"),
    ({"circuits": ["consistent", "bogus"]}, "evaluate.circuits", "unknown circuit 'bogus'"),
    ({"circuits": []}, "evaluate.circuits", "empty list"),
    ({"prune": 3}, "evaluate.prune", "expected true or false"),
    ({"topk": [1]}, "evaluate.topk", "unknown key"),
])
def test_bad_evaluate_tables_are_refused_before_work(model, tmp_path, table, key, message):
    job = write_job(tmp_path / "job.toml", tmp_path / "out", model, evaluate=table)
    p = run(job, check=False)
    assert p.returncode == 2, p.stderr
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and key in lines[0] and message in lines[0], p.stderr
    assert not os.path.exists(tmp_path / "out" / "units")


def test_bad_method_is_refused(model, tmp_path):
    job = write_job(tmp_path / "job.toml", tmp_path / "out", model, method="gradient")
    p = run(job, check=False)
    assert p.returncode == 2 and "settings.method" in p.stderr and "'gradient'" in p.stderr, p.stderr


def test_no_consistent_edge_reports_the_empty_circuit(model, tmp_path):
    # Top-1 of six batches of a random model: the batches' best edges differ.
    job = write_job(tmp_path / "job.toml", tmp_path / "out", model, features=FEATURES, batches=6, top_n=1,
                    evaluate={"circuits": ["consistent", "empty"]})
    p = run(job)
    assert summary(p.stdout)[2] == 0
    empty_cells = 0
    for rel in evaluation_files(tmp_path / "out"):
        d, _ = read_evaluation(tmp_path / "out" / rel)
        if d["edge_count"][0] == 0:
            empty_cells += 1
            assert np.array_equal(d["logit_diff"][0], d["logit_diff"][1])
            assert d["faithfulness"][0] == d["faithfulness"][1]
    assert empty_cells > 0, "the test needs a cell without consistent edges"


def test_degenerate_cell_has_no_faithfulness_and_says_why(model, tmp_path):
    # Layers that write nothing but biases: the last position's residual stream is its own token's
    # embedding in both runs, so LD_clean == LD_corr exactly.
    m = tmp_path / "flat"
    shutil.copytree(model, m)
    for l in range(2):
        for t in (f"transformer.h.{l}.attn.attention.out_proj.weight", f"transformer.h.{l}.mlp.c_proj.weight"):
            patch_tensor(str(m / "model.safetensors"), t, 0.0)
    job = write_job(tmp_path / "job.toml", tmp_path / "out", m, features=FEATURES[:1], evaluate=EVALUATE)
    p = run(job)
    assert summary(p.stdout) == (4, 0, 0, 4)
    for rel in evaluation_files(tmp_path / "out"):
        d, a = read_evaluation(tmp_path / "out" / rel)
        assert a["no_faithfulness"].startswith("degenerate cell: LD_clean = "), a["no_faithfulness"]
        assert np.all(np.isnan(d["faithfulness"]))
        assert np.all(np.isfinite(d["logit_diff"]))
    assert log_lines(tmp_path / "out", r"evaluation .* \(no F: degenerate cell")
