"""Two sweeps of the same cells by two methods side by side (issue 12, item 3): `reduce OUT --compare
OTHER` writes OUT/compare-<OTHER>.json and a "Methods compared" section on OUT/index.html, whose
numbers equal analysis/tinysql_eap/methods.py's compare_methods on the same sweeps; cells whose
settings differ beyond the method are listed as not comparable; OTHER missing or not a sweep is exit
2 with one line naming it. `plot` of a reduced result of an evaluated cell shows its F as reduce's
page does."""
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import warnings

import pytest

from sweeplib import BIN, run, write_job

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "analysis"))
from tinysql_eap import load, methods  # noqa: E402

FEATURES = ["EngTableName", "EngFieldName"]


def call(*args, timeout=120):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sweeps(model, tmp_path_factory):
    """(eap, eap-ig-inputs): two evaluated sweeps of the same 2 cells x 2 batches of 8 prompts."""
    tmp = tmp_path_factory.mktemp("compare")
    outs = []
    for name, extra in (("eap", {}), ("ig", {"method": "eap-ig-inputs", "ig_steps": 3})):
        out = tmp / name
        job = write_job(tmp / f"{name}.toml", out, model, FEATURES, batches=2, batch_size=8, top_n=10, evaluate={},
                        **extra)
        run(job, timeout=300)
        outs.append(str(out))
    return outs


def reduce_compare(a, b):
    p = call("reduce", a, "--compare", b)
    assert p.returncode == 0, p.stderr
    return p


def close(x, y):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return y is None or (isinstance(y, float) and math.isnan(y))
    return y is not None and not math.isnan(y) and abs(x - y) <= 1e-9 * max(1.0, abs(y))


def test_numbers_equal_compare_methods(sweeps):
    a, b = sweeps
    reduce_compare(a, b)
    got = json.load(open(os.path.join(a, "compare-ig.json")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", load.SweepWarning)
        want = methods.compare_methods(a, b).set_index("cell_id")
    assert len(got["cells"]) == len(FEATURES) == len(want)
    assert got["not_compared"] == []
    for c in got["cells"]:
        w = want.loc[c["cell_id"]]
        assert c["method_a"] == w["method_a"] == "eap"
        assert c["method_b"] == w["method_b"] == "eap-ig-inputs (m=3)"
        for k in ("n_edges", "consistent_a", "consistent_b", "common", "evaluated_a", "evaluated_b"):
            assert c[k] == int(w[k]), (c["cell_id"], k)
        assert c["evaluated_a"] == c["evaluated_b"] == 2
        for k in ("spearman", "jaccard", "f_a", "f_b"):
            assert close(c[k], float(w[k])), (c["cell_id"], k, c[k], w[k])
        assert c["f_a"] is not None and c["f_b"] is not None
        assert len(c["common_edges"]) == c["common"]
    index = open(os.path.join(a, "index.html")).read()
    assert "<h2>Methods compared</h2>" in index
    table = index[index.index('id="methods-compared"'):]
    for c in got["cells"]:
        assert c["cell_id"] in table
    assert 'href="compare-ig.json"' in index


def test_settings_differ_not_comparable(sweeps, tmp_path):
    a, b = sweeps
    other = tmp_path / "seed2"
    shutil.copytree(b, other)
    m = json.load(open(other / "sweep.json"))
    for c in m["cells"]:
        c["settings"] = re.sub(r"seed=[^;]*", "seed=999", c["settings"])
    json.dump(m, open(other / "sweep.json", "w"))
    p = reduce_compare(a, other)
    assert "no cell is comparable" in p.stderr
    got = json.load(open(os.path.join(a, "compare-seed2.json")))
    assert got["cells"] == []
    assert sorted(x["cell_id"] for x in got["not_compared"]) == sorted(x["id"] for x in json.load(open(os.path.join(a, "sweep.json")))["cells"])
    assert all(x["reason"] == "the sweeps differ in seed" for x in got["not_compared"])
    index = open(os.path.join(a, "index.html")).read()
    assert 'id="no-method-comparison"' in index and "the sweeps differ in seed" in index


@pytest.mark.parametrize("what", ["missing", "not_a_sweep", "bad_manifest"])
def test_bad_other(sweeps, tmp_path, what):
    a, _ = sweeps
    other = tmp_path / what
    if what != "missing":
        other.mkdir()
    if what == "bad_manifest":
        (other / "sweep.json").write_text("{")
    p = call("reduce", a, "--compare", other)
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and str(other) in lines[0], p.stderr


def test_plot_shows_faithfulness(sweeps, tmp_path):
    a, _ = sweeps
    call("reduce", a)
    for path in glob.glob(os.path.join(a, "cells", "*", "eap_results.*.json")):
        assert "faithfulness" in json.load(open(path))
        out = tmp_path / os.path.basename(os.path.dirname(path))
        p = call("plot", path, "--out", out)
        assert p.returncode == 0, p.stderr
        page = open(glob.glob(str(out / "*.html"))[0]).read()
        reduced = open(os.path.join(os.path.dirname(path), "sankey.html")).read()
        assert '<div id="faithfulness">' in page
        assert 'id="faithfulness-curve"' in page
        caption = lambda h: h[h.index('<div id="faithfulness">'):].split("</div>")[0]
        assert caption(page) == caption(reduced)
