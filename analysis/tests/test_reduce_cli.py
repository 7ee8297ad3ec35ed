"""`tinysql-eap reduce` on a synthetic sweep written with h5py: the consistent edges match a plain
recomputation from the raw scores, reruns are byte-identical apart from the timestamp, another
--top-n / --signed only re-reduces, a partial sweep is listed, bad input is one line, exit 2."""

import json
import math
import os
import re
import xml.etree.ElementTree as ET

import pytest

from conftest import make_sweep, run_teap
from tinysql_eap import compare, load, sankey


def result_path(out, c):
    d = os.path.join(out, "cells", c["id"])
    files = [f for f in os.listdir(d) if f.startswith("eap_results.") and f.endswith(".json")]
    assert len(files) == 1, files
    return os.path.join(d, files[0])


def check_against_python(out, cells, top_n, signed_rank=False):
    df = load.load_sweep(out)
    with pytest.warns(load.SweepWarning, match="skipped"):  # the sweep's partial, failed and degenerate cells
        ce = compare.consistent_edges(df, top_n_edges=top_n, signed_rank=signed_rank)
    base = load.baselines(load.load_units(out)).set_index("cell_id")
    for c in cells:
        if c["status"] != "done":
            continue
        with open(result_path(out, c)) as f:
            results = json.load(f)
        want = ce[ce["cell_id"] == c["id"]]
        got = results["edges"]
        assert [(e["from_edge"], e["to_edge"]) for e in got] == list(zip(want["from_edge"], want["to_edge"])), c["id"]
        for e, s in zip(got, want["score"]):
            # Same sums in the same order: equal after the notebook's round(x, 8).
            assert e["score"] == round(s, 8), (e, s)
        p = results["parameters"]
        assert p["top_n_edges"] == top_n
        assert p["signed_rank"] is signed_rank
        assert abs(p["clean_logit_diff"] - base.loc[c["id"], "clean_ld"]) <= 5e-9
        assert abs(p["corrupt_logit_diff"] - base.loc[c["id"], "corrupt_ld"]) <= 5e-9
        assert abs(p["clean_metric"] - 1.0) <= 1e-8  # mean over batches of M on the clean run
        assert abs(p["corrupt_metric"]) <= 1e-8
        assert abs(p["clean_accuracy"] - round(9 / 12, 8)) <= 1e-12
        assert p["cell_id"] == c["id"]


def test_reduce_matches_a_plain_recomputation(sweep):
    out, cells = sweep
    r = run_teap("reduce", out, check=0)
    # stdout: the incomplete cells, then the summary page's path last.
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == os.path.join(out, "index.html")
    for c in cells:
        if c["status"] != "done":
            assert any(l.strip().startswith(c["status"] + ": " + c["id"]) for l in lines), (c, r.stdout)
    assert "missing 1-2" in r.stdout  # the partial cell has batch 0 only
    # One warning line on stderr.
    warn = [l for l in r.stderr.splitlines() if "warn" in l.lower()]
    assert len(warn) == 1 and "not reduced" in warn[0], r.stderr
    check_against_python(out, cells, top_n=5)
    # Degenerate, partial, missing and failed cells have no result file; no NaN anywhere.
    for c in cells:
        d = os.path.join(out, "cells", c["id"])
        if c["status"] != "done":
            assert not os.path.exists(d) or not [f for f in os.listdir(d) if f.endswith(".json")]
    for root, _, files in os.walk(os.path.join(out, "cells")):
        for f in files:
            if f.endswith((".json", ".svg")):
                text = open(os.path.join(root, f)).read()
                assert "NaN" not in text and "nan" not in text and "Infinity" not in text, f
    index = open(os.path.join(out, "index.html")).read()
    assert '<table id="cells">' in index
    flags = load.cell_summary(out).set_index("cell_id")["flags"]
    for c in cells:
        # data-flags: the cell's quality flags (space-separated), those of analysis/ for done cells.
        m = re.search(f'data-status="{c["status"]}"(?: data-flags="([^"]*)")? id="cell-{re.escape(c["id"])}"', index)
        assert m, c["id"]
        if m.group(1) is not None:
            assert m.group(1).split() == load.split_flags(flags[c["id"]]), (c["id"], m.group(1), flags[c["id"]])
    assert ">partial 1 of 3<" in index
    assert "CUDA out of memory (synthetic)" in index
    assert 'id="heatmap"' in index and 'id="recurrence"' in index


def test_sankey_files_agree_with_the_python_port(sweep):
    out, cells = sweep
    run_teap("reduce", out, check=0)
    for c in cells:
        if c["status"] != "done":
            continue
        edges = sankey.results_to_edges(sankey.load_eap_results(result_path(out, c)))
        want = sankey.sankey_data(edges, layer_spacing=True)
        page = open(os.path.join(out, "cells", c["id"], "sankey.html")).read()
        m = re.search(r"^var data = (\[.*\]);$", page, re.M)
        trace = json.loads(m.group(1))[0]
        assert trace["node"]["label"] == want["node_labels"]
        assert trace["node"]["color"] == want["node_colors"]
        assert trace["link"]["source"] == want["sources"] and trace["link"]["target"] == want["targets"]
        assert trace["link"]["label"] == want["labels"] and trace["link"]["color"] == want["colors"]
        # Values: |score| of the unrounded mean in the page, of the rounded one in the JSON.
        assert all(abs(a - b) <= 1e-8 for a, b in zip(trace["link"]["value"], want["values"]))
        assert f'data-links="{len(want["sources"])}"' in page
        root = ET.parse(os.path.join(out, "cells", c["id"], "sankey.svg")).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        paths = [p for p in root.iter("{http://www.w3.org/2000/svg}path") if p.get("class") == "link"]
        rects = [p for p in root.iter("{http://www.w3.org/2000/svg}rect") if p.get("class") == "node"]
        assert len(paths) == len(edges) and len(rects) == len(want["nodes"])


def test_rerun_is_byte_identical_but_the_timestamp(sweep):
    out, cells = sweep
    run_teap("reduce", out, check=0)
    c = next(c for c in cells if c["status"] == "done")
    first = open(result_path(out, c)).read()
    svg1 = open(os.path.join(out, "cells", c["id"], "sankey.svg")).read()
    run_teap("reduce", out, check=0)
    second = open(result_path(out, c)).read()
    strip = lambda t: re.sub(r'"timestamp": "[^"]*"', '"timestamp": ""', t)
    assert strip(first) == strip(second)
    assert svg1 == open(os.path.join(out, "cells", c["id"], "sankey.svg")).read()


def test_other_top_n_and_signed_only_rereduce(sweep):
    out, cells = sweep
    units = os.path.join(out, "units")
    before = {os.path.join(d, f): os.stat(os.path.join(units, d, f)).st_mtime_ns
              for d in os.listdir(units) for f in os.listdir(os.path.join(units, d))}
    run_teap("reduce", out, "--top-n", "3", check=0)
    check_against_python(out, cells, top_n=3)
    run_teap("reduce", out, "--top-n", "8", "--signed", check=0)
    check_against_python(out, cells, top_n=8, signed_rank=True)
    after = {os.path.join(d, f): os.stat(os.path.join(units, d, f)).st_mtime_ns
             for d in os.listdir(units) for f in os.listdir(os.path.join(units, d))}
    assert before == after  # the unit files are read, never rewritten


def test_truncated_unit_file_is_one_line_exit_2(tmp_path):
    out = str(tmp_path / "sweep")
    os.makedirs(out)
    cells = make_sweep(out, cells=[dict(status="done")])
    path = os.path.join(out, "units", cells[0]["id"], "b00001.h5")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    r = run_teap("reduce", out, check=2)
    assert r.stderr.count("\n") == 1, r.stderr
    assert path in r.stderr


def test_foreign_unit_file_is_one_line_exit_2(tmp_path):
    out = str(tmp_path / "sweep")
    os.makedirs(out)
    cells = make_sweep(out, cells=[dict(status="done")])
    path = os.path.join(out, "units", cells[0]["id"], "b00002.h5")
    with open(path, "wb") as f:
        f.write(b"not hdf5 at all")
    r = run_teap("reduce", out, check=2)
    assert r.stderr.count("\n") == 1 and path in r.stderr, r.stderr


def test_empty_and_missing_sweeps(tmp_path):
    r = run_teap("reduce", str(tmp_path / "nothing"), check=2)
    assert r.stderr.count("\n") == 1 and "sweep.json: no such file" in r.stderr
    out = tmp_path / "empty"
    out.mkdir()
    (out / "sweep.json").write_text('{"version": "x", "job": "j", "cells": []}')
    r = run_teap("reduce", str(out), check=2)
    assert r.stderr.count("\n") == 1 and f"{out}/sweep.json: no cells" in r.stderr
    (out / "sweep.json").write_text('{"cells": [')
    r = run_teap("reduce", str(out), check=2)
    assert f"{out}/sweep.json: not valid JSON" in r.stderr
    nounits = tmp_path / "nounits"
    nounits.mkdir()
    make_sweep(str(nounits), cells=[dict(status="missing")])
    r = run_teap("reduce", str(nounits), check=2)
    assert r.stderr.count("\n") == 1 and f"{nounits}/units: no unit files" in r.stderr


def test_one_plotly_per_folder_unless_self_contained(sweep, tmp_path):
    out, cells = sweep
    run_teap("reduce", out, check=0)
    assert os.path.getsize(os.path.join(out, "plotly.min.js")) > 1_000_000
    c = next(c for c in cells if c["status"] == "done")
    page = open(os.path.join(out, "cells", c["id"], "sankey.html")).read()
    assert '<script src="../../plotly.min.js"></script>' in page and len(page) < 200_000
    # --self-contained, into another folder: every page carries plotly, the folder has no copy.
    alone = str(tmp_path / "alone")
    run_teap("reduce", out, "--self-contained", "--out", alone, check=0)
    page = open(os.path.join(alone, "cells", c["id"], "sankey.html")).read()
    assert "<script src=" not in page and len(page) > 1_000_000
    assert not os.path.exists(os.path.join(alone, "plotly.min.js"))
    # The old flag still works (it is the default).
    run_teap("reduce", out, "--shared-plotly", check=0)


def test_reduce_out_keeps_each_top_n(sweep, tmp_path):
    """reduce --out DIR: a second reduce with another top-n does not overwrite the first."""
    out, cells = sweep
    run_teap("reduce", out, check=0)
    c = next(c for c in cells if c["status"] == "done")
    first = open(result_path(out, c)).read()
    top2 = os.path.join(out, "top2")
    r = run_teap("reduce", out, "--top-n", "2", "--out", top2, check=0)
    assert f"{top2}/index.html" in r.stdout
    assert open(result_path(out, c)).read() == first  # the first reduce's results are untouched
    second = json.loads(open(result_path(top2, c)).read())
    assert second["parameters"]["top_n_edges"] == 2 and len(second["edges"]) <= 2
    assert os.path.getsize(os.path.join(top2, "plotly.min.js")) > 1_000_000
    assert os.path.isfile(os.path.join(top2, "index.html"))
    # Refused, one line: a file in the way, another sweep's folder.
    (tmp_path / "file").write_text("x")
    r = run_teap("reduce", out, "--out", str(tmp_path / "file"), check=2)
    assert r.stderr.count("\n") == 1 and f"--out {tmp_path / 'file'}: not a folder" in r.stderr
    r = run_teap("reduce", out, "--out", str(tmp_path / "file" / "sub"), check=2)
    assert r.stderr.count("\n") == 1 and f"--out {tmp_path / 'file' / 'sub'}: cannot be created as a folder" in r.stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / "sweep.json").write_text("{}")
    r = run_teap("reduce", out, "--out", str(other), check=2)
    assert r.stderr.count("\n") == 1 and "holds another sweep" in r.stderr


def test_reduced_pages_render_in_chromium(sweep, have_chromium, tmp_path):
    """The pages `reduce` wrote, opened from disk by headless Chromium with no network."""
    import subprocess
    if not have_chromium:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    out, cells = sweep
    run_teap("reduce", out, check=0)

    def dom(path):
        prof = tmp_path / f"profile{len(os.listdir(tmp_path))}"
        r = subprocess.run([have_chromium, "--headless", "--no-sandbox", "--disable-gpu",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            "--no-first-run", "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                            f"--user-data-dir={prof}", "--virtual-time-budget=10000", "--dump-dom", "file://" + path],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    c = next(c for c in cells if c["status"] == "done")
    page = os.path.join(out, "cells", c["id"], "sankey.html")
    edges = sankey.results_to_edges(sankey.load_eap_results(result_path(out, c)))
    want = sankey.sankey_data(edges, layer_spacing=True)
    d = dom(page)
    assert 'class="main-svg"' in d
    assert d.count('class="sankey-node"') == len(want["nodes"])
    assert d.count('class="sankey-link"') == len(want["sources"])
    d = dom(os.path.join(out, "index.html"))
    assert '<table id="cells">' in d and d.count('<tr class="cell"') == len(cells)
