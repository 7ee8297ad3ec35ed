"""Faithfulness in reduce's results (issue 11, item 5): a tiny sweep on the demo model scored, reduced
without evaluation (nothing changes), then run again with an [evaluate] table (only the evaluation
units run) and reduced: each cell's JSON has its `faithfulness` object, its page the F lines and the
F(k) curve, the summary the F columns and the chart of F; an incomplete evaluation gives no F and
says which batches are missing or failed; a damaged or foreign evaluation file is named, exit 2;
reduce --top-n says that the evaluated circuit is the job's. Headless Chromium (when installed)
renders every page without a console message."""
import glob
import json
import math
import os
import re
import shutil
import subprocess

import pytest

from sweeplib import BIN, run, summary, write_job

TOKENIZERS = os.environ["TEAP_TOKENIZERS"]
FEATURES = ["EngTableName", "DefFieldName"]
BATCHES = 3
TOP_N = 10
BROWSER_TEST = os.path.join(os.path.dirname(__file__), "..", "report", "browser_test.sh")


def call(*args, timeout=120):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def reduce(out, *args):
    p = call("reduce", out, *args)
    assert p.returncode == 0, p.stderr
    return p


def cell_jsons(out):
    """{cell id: its result JSON}"""
    found = {}
    for path in glob.glob(os.path.join(out, "cells", "*", "eap_results.*.json")):
        found[os.path.basename(os.path.dirname(path))] = json.load(open(path))
    return found


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """(reduced before evaluation, reduced after): copies of one sweep folder, 2 cells x 3 batches of
    10 prompts (equal batches: the mean over batches of F(full) is exactly 1)."""
    model = os.environ["TEAP_DEMO_MODEL"]
    # Trained once per build folder (about 2 minutes on 2 cores), reused afterwards.
    subprocess.run([BIN, "--log-level", "warn", "train", "--out", model, "--tokenizer", os.path.join(TOKENIZERS, "gpt2"),
                    "--threads", "2"], check=True, timeout=900, stdout=subprocess.DEVNULL)
    tmp = tmp_path_factory.mktemp("faithfulness")
    out = tmp / "out"
    job = write_job(tmp / "job.toml", out, model, FEATURES, batches=BATCHES, batch_size=10, top_n=TOP_N, threads=2)
    assert summary(run(job, timeout=300).stdout)[0] == len(FEATURES) * BATCHES
    reduce(out)
    before = tmp / "before"
    shutil.copytree(out, before)
    with open(job, "a") as f:
        f.write("\n[evaluate]\n")
    done_now, done_before, failed, total = summary(run(job, timeout=300).stdout)
    # Only the evaluation units ran: the scores were kept.
    assert (done_now, done_before, failed, total) == (len(FEATURES) * BATCHES, len(FEATURES) * BATCHES, 0,
                                                      2 * len(FEATURES) * BATCHES)
    reduce(out)
    return before, out


def fresh_copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_without_evaluation_nothing_changes(sweeps):
    before, _ = sweeps
    results = cell_jsons(before)
    assert len(results) == len(FEATURES)
    for r in results.values():
        assert "faithfulness" not in r
    index = (before / "index.html").read_text()
    assert "F consistent" not in index and "faithfulness-plot" not in index and "Faithfulness" not in index
    for page in glob.glob(str(before / "cells" / "*" / "sankey.html")):
        assert "faithfulness" not in open(page).read()


def test_cell_json_has_the_faithfulness_object(sweeps):
    _, out = sweeps
    results = cell_jsons(out)
    assert len(results) == len(FEATURES)
    for cell, r in results.items():
        f = r["faithfulness"]
        assert list(r)[-1] == "faithfulness"  # after the notebook's keys
        assert f["batches"] == f["n_batches"] == BATCHES
        assert f["scored_nodes"] == {"input": False, "logits": False}
        assert f["never_ablated"] == "edges from input and edges into logits"
        assert f["top_n"] == TOP_N and "note" not in f and "incomplete" not in f
        c = f["circuits"]
        assert {"consistent", "empty", "full"} <= set(c)
        # Keeping every edge is the clean run: each batch's F(full) is its LD over the cell's
        # baselines, and with equal batches their mean is the cell's, 1 (JSON rounds to 8 decimals).
        full = c["full"]["per_batch"]
        assert len(full) == BATCHES
        assert sum(full) / BATCHES == pytest.approx(1.0, abs=1e-5), (cell, full)
        assert c["full"]["F"] == pytest.approx(1.0, abs=1e-5)
        for name, x in c.items():
            assert math.isfinite(x["F"]) and math.isfinite(x["spread"]) and x["spread"] >= 0, (cell, name, x)
            assert x["F"] == pytest.approx(sum(x["per_batch"]) / BATCHES, abs=1e-7)
        assert c["empty"]["edges"] == 0
        # The consistent circuit is the reduction's consistent edges (same top_n, |score|, no pruning).
        assert c["consistent"]["edges"] == len(r["edges"])
        ks = [p["k"] for p in f["curve"]]
        assert ks == sorted(set(ks)) and ks[0] == 1, ks
        assert ks[-1] == c["full"]["edges"]  # "all", capped at the valid edges
        for p in f["curve"]:
            assert p["F"] == c[f"top-{p['k']}"]["F"]
        assert math.isfinite(f["auc_log_k"])


def test_pages_show_f_and_the_curve(sweeps):
    _, out = sweeps
    results = cell_jsons(out)
    index = (out / "index.html").read_text()
    assert ">F consistent</th>" in index and ">AUC F(k)</th>" in index and ">F empty</th>" in index
    assert "Faithfulness: circuits consistent, top-k, empty, full" in index
    assert index.count('<circle class="fdot"') == len(FEATURES)
    for cell, r in results.items():
        f = r["faithfulness"]
        consistent = f["circuits"]["consistent"]
        row = re.search(r'<tr class="cell"[^>]*id="cell-' + re.escape(cell) + r'".*?</tr>', index).group(0)
        assert f'>{consistent["F"]:.3f} &plusmn; {consistent["spread"]:.3f}</td>' in row, row
        assert f'{f["auc_log_k"]:.3f}' in row
        page = (out / "cells" / cell / "sankey.html").read_text()
        assert "Faithfulness F of the consistent circuit (edges in the top 10 of every batch): " \
               f'{consistent["F"]:.3f} \u00b1 {consistent["spread"]:.3f} ({consistent["edges"]} edges)' in page
        assert "never ablated (kept in every circuit, as they were never scored): edges from input and edges into logits" in page
        m = re.search(r'id="faithfulness-curve" data-points="(\d+)"', page)
        assert m and int(m.group(1)) == len(f["curve"])
        svg = (out / "cells" / cell / "sankey.svg").read_text()
        assert "F(consistent) = " in svg


def test_top_n_of_the_reduction_and_of_the_evaluation(sweeps, tmp_path):
    _, out = sweeps
    out = fresh_copy(out, tmp_path / "topn")
    reduce(out, "--top-n", 3)
    for cell, r in cell_jsons(out).items():
        f = r["faithfulness"]
        assert r["parameters"]["top_n_edges"] == 3
        assert f["top_n"] == TOP_N  # the consistent circuit the sweep evaluated
        assert "job's top_n 10" in f["note"] and "top_n 3 (reduce --top-n)" in f["note"], f["note"]
        assert "Note: F of the consistent circuit is that of the job&#39;s top_n 10" in \
               (out / "cells" / cell / "sankey.html").read_text()
    assert "not the edges of this reduction (--top-n 3)" in (out / "index.html").read_text()


def test_incomplete_evaluation_gives_no_f(sweeps, tmp_path):
    _, out = sweeps
    out = fresh_copy(out, tmp_path / "incomplete")
    missing, failed = sorted(cell_jsons(out))[:2]
    os.remove(out / "evaluation" / missing / "b00001.h5")
    os.remove(out / "evaluation" / failed / "b00002.h5")
    (out / "failed" / f"{failed}.evaluate.b00002.txt").write_text("CUDA out of memory\nmore\n")
    p = reduce(out)
    assert f"evaluation incomplete: {missing} (2 of 3 batches; missing 1)" in p.stdout, p.stdout
    assert f"evaluation incomplete: {failed} (2 of 3 batches; failed 2)" in p.stdout, p.stdout
    assert "without F: their evaluation is incomplete" in p.stderr
    results = cell_jsons(out)
    for cell, what, batches in ((missing, "missing 1", "missing_batches"), (failed, "failed 2", "failed_batches")):
        f = results[cell]["faithfulness"]
        assert f["incomplete"].startswith(f"evaluation: 2 of 3 batches; {what} (no F"), f
        assert f[batches] == [int(what[-1])]
        assert f["batches"] == 2 and f["n_batches"] == 3
        assert "circuits" not in f and "curve" not in f and "auc_log_k" not in f
        page = (out / "cells" / cell / "sankey.html").read_text()
        assert f"Faithfulness: not yet known: evaluation: 2 of 3 batches; {what}" in page
        assert "faithfulness-curve" not in page
    index = (out / "index.html").read_text()
    assert index.count(">evaluated 2/3</td>") == 2
    assert "evaluation batch 2: CUDA out of memory" in index
    assert 'id="no-faithfulness"' in index  # no cell has an F: no chart


@pytest.mark.parametrize("how", ["damaged", "foreign"])
def test_untrustworthy_evaluation_file_is_named(sweeps, tmp_path, how):
    _, out = sweeps
    out = fresh_copy(out, tmp_path / how)
    cell = sorted(cell_jsons(out))[0]
    path = out / "evaluation" / cell / "b00001.h5"
    if how == "damaged":
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 3])
    else:
        shutil.copyfile(out / "evaluation" / cell / "b00000.h5", path)
    p = call("reduce", out)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], p.stderr
    assert f"({how} evaluation file: run the job again" in lines[0]
    if how == "foreign":
        assert "holds batch 0, not 1" in lines[0]


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed")
def test_pages_render_in_headless_chromium(sweeps):
    _, out = sweeps
    p = subprocess.run(["bash", BROWSER_TEST, shutil.which("chromium"), "--sweep", str(out)], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("F(k) curve rendered") == len(FEATURES), p.stdout
    assert "F columns and 2 cells in the chart of F" in p.stdout
