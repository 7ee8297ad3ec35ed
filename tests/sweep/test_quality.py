"""Results a researcher can trust (issue 13): cell-quality flags on the demo model's sweep and in
the summary's colour scale, weight identity (a checkpoint replaced at the same path is refused on
resume), and the architecture a BM number stands for."""
import json
import os
import re
import shutil
import subprocess

import pytest

from sweeplib import BIN, MPIRUN, make_model, run, summary, toml_value, unit_files, write_job

TOKENIZERS = os.environ["TEAP_TOKENIZERS"]
FEATURES = ["EngTableName", "EngFieldName", "DefTableName", "DefFieldName"]
# The demo model is sure of novel names whatever the corruption: these cells barely move the metric.
NEAR_DEGENERATE = {f"BM1.CS1.{f}.novel1.synfield{a}.syntable{b}" for f in ("EngTableName", "EngFieldName")
                   for a in (0, 1) for b in (0, 1)} | {f"BM1.CS1.DefTableName.novel1.synfield{a}.syntable0" for a in (0, 1)}


def call(*args, timeout=120):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo grid (32 cells, 2 batches of 30) on the demo's trained model, reduced."""
    model = os.environ["TEAP_DEMO_MODEL"]
    # Trained once per build folder (about 2 minutes on 2 cores), reused afterwards.
    subprocess.run([BIN, "--log-level", "warn", "train", "--out", model, "--tokenizer", os.path.join(TOKENIZERS, "gpt2"),
                    "--threads", "2"], check=True, timeout=900, stdout=subprocess.DEVNULL)
    tmp = tmp_path_factory.mktemp("demo")
    job = write_job(tmp / "job.toml", tmp / "out", model, FEATURES, novel=(False, True), batches=2, batch_size=30)
    text = open(job).read().replace("[settings]", "use_synonyms_field = [false, true]\nuse_synonyms_table = [false, true]\n\n[settings]")
    open(job, "w").write(text)
    run(job, np=2, timeout=600)
    p = call("reduce", tmp / "out")
    assert p.returncode == 0, p.stderr
    return tmp / "out"


def cell_results(out):
    results = {}
    for cell in os.listdir(out / "cells"):
        js = [f for f in os.listdir(out / "cells" / cell) if f.endswith(".json")]
        if js:
            results[cell] = json.loads((out / "cells" / cell / js[0]).read_text())
    return results


def test_demo_near_degenerate_cells_are_flagged(demo):
    results = cell_results(demo)
    assert len(results) == 32
    flagged = {c for c, r in results.items() if r["parameters"]["quality"]["flags"]}
    assert flagged == NEAR_DEGENERATE
    for c, r in results.items():
        q = r["parameters"]["quality"]
        assert q["flags"] == (["low_effect"] if c in NEAR_DEGENERATE else []), (c, q)
        assert q["clean_accuracy"] == pytest.approx(r["parameters"]["clean_accuracy"], rel=1e-5)
        assert 0 <= q["flip_fraction"] <= 1
        # the effect is the cell's LD_clean - LD_corr, its numbers kept whatever the flags
        # (the JSON's numbers are rounded to 6 significant digits, as the notebook's)
        assert q["effect"] == pytest.approx(r["parameters"]["clean_logit_diff"] - r["parameters"]["corrupt_logit_diff"],
                                            rel=1e-4, abs=1e-5)
    # every flagged cell says so on its page and in the summary table
    index = (demo / "index.html").read_text()
    for c in NEAR_DEGENERATE:
        assert "FLAGGED low_effect" in (demo / "cells" / c / "sankey.html").read_text()
        assert re.search(r'id="cell-' + re.escape(c) + '" data-flags="low_effect"', index), c
    # and status lists them
    s = call("status", demo)
    assert s.returncode == 0 and "cells flagged: 10" in s.stdout, s.stdout
    for c in NEAR_DEGENERATE:
        assert f"{c}: flagged low_effect" in s.stdout


def heatmap(index):
    cells = re.findall(r'<th class="cell" title="([^"]+)"', index)
    m = re.search(r'<div class="legend"><span>([-0-9.e+]+)</span>.*?<span>([-0-9.e+]+)</span></div>', index)
    return cells, float(m.group(2))


def test_summary_colour_scale_ignores_flagged_cells(demo):
    results = cell_results(demo)
    healthy = max(abs(e[1]) for c, r in results.items() if c not in NEAR_DEGENERATE for e in edges_of(r))
    flagged = max(abs(e[1]) for c, r in results.items() if c in NEAR_DEGENERATE for e in edges_of(r))
    assert flagged > 2 * healthy  # what made the scale useless before
    cells, vmax = heatmap((demo / "index.html").read_text())
    assert cells and not set(cells) & NEAR_DEGENERATE
    assert vmax <= float(f"{healthy:.3g}") * 1.0001  # the legend prints 3 significant digits
    assert 'id="flagged-left-out"' in (demo / "index.html").read_text()
    # --include-flagged puts them back (into a copy: the first summary stays as it was)
    other = demo.parent / "include"
    shutil.copytree(demo, other)
    assert call("reduce", other, "--include-flagged").returncode == 0
    cells, vmax = heatmap((other / "index.html").read_text())
    assert set(cells) & NEAR_DEGENERATE
    assert vmax > healthy * 1.001


def edges_of(result):
    """(name, score) of a result JSON's consistent edges, whatever the edge layout."""
    out = []
    for e in result["edges"]:
        if isinstance(e, dict):
            out.append((json.dumps(e), float(e.get("score", e.get("weight", 0)))))
        else:
            out.append((json.dumps(e[:-1]), float(e[-1])))
    return out


def test_replaced_checkpoint_is_refused_on_resume(tmp_path):
    model = make_model(tmp_path / "m", seed=1)
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", out, model, ["EngTableName"], batches=1)
    assert summary(run(job).stdout) == (1, 0, 0, 1)
    # the same path, another model (retrained, same shapes): adding batches must not mix the two
    shutil.rmtree(model)
    make_model(model, seed=2)
    job = write_job(tmp_path / "job.toml", out, model, ["EngTableName"], batches=2)
    before = {f: os.stat(out / f).st_mtime_ns for f in unit_files(out)}
    manifest = (out / "sweep.json").read_text()
    for args in ([], ["--dry-run"]):
        p = run(job, args=args, check=False)
        assert p.returncode == 2, p
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, p.stderr
        assert f"the checkpoint {model} has changed" in lines[0] and "weights_id" in lines[0], lines[0]
    assert (out / "sweep.json").read_text() == manifest
    assert {f: os.stat(out / f).st_mtime_ns for f in unit_files(out)} == before
    # the unit files record what the weights were
    settings = json.loads(manifest)["cells"][0]["settings"]
    assert re.search(r";weights_id=[0-9a-f]{16}$", settings), settings


def test_architecture_of_a_bm_number_is_checked(tmp_path):
    m = tmp_path / "qwen"
    subprocess.run([BIN, "make-model", "--family", "qwen2", "--layers", "1", "--heads", "2", "--kv-heads", "1",
                    "--d-model", "32", "--vocab-from", os.path.join(TOKENIZERS, "qwen2"), "--out", str(m)],
                   check=True, capture_output=True, timeout=60)
    job = write_job(tmp_path / "job.toml", tmp_path / "out", m, ["EngTableName"], batches=1)
    p = call("run", job, "--dry-run")
    assert p.returncode == 2, p
    assert re.search(r"models\.BM1\.cs1: .* is a qwen2 checkpoint, but BM1 is gpt_neo .*any_architecture", p.stderr), p.stderr
    assert not (tmp_path / "out").exists()
    job = write_job(tmp_path / "job.toml", tmp_path / "out", m, ["EngTableName"], batches=1, any_architecture=True)
    assert call("run", job, "--dry-run").returncode == 0
