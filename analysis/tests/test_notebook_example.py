"""analysis/examples/sweep_overview.ipynb runs under Debian's jupyter-nbconvert on a small sweep of
two architectures (reduced by `tinysql-eap reduce` when TEAP_BIN is set), and draws what it says:
the seed notebook's Sankey from the recomputed edges and from reduce's JSON, heatmaps per
architecture, the recurrence table."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import make_sweep, run_teap, teap_bin

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "examples", "sweep_overview.ipynb")
CELLS = [dict(status="done"), dict(status="done", feature="DefFieldName"),
         dict(status="done", commandset=2, feature="EngFieldName"), dict(status="done", commandset=0),
         dict(status="partial", feature="DefTableName"), dict(status="done", model=2),
         dict(status="done", model=2, feature="DefFieldName"), dict(status="degenerate", model=2, feature="DefTableName")]


def figures(nb):
    """(trace types, title) of every plotly figure the executed notebook shows, and its text."""
    figs, text = [], []
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            if o["output_type"] == "error":
                raise AssertionError(f"{o['ename']}: {o['evalue']}")
            if o["output_type"] == "stream":
                text.append(o["text"] if isinstance(o["text"], str) else "".join(o["text"]))
            data = o.get("data", {})
            if "application/vnd.plotly.v1+json" in data:
                f = data["application/vnd.plotly.v1+json"]
                title = f.get("layout", {}).get("title", {})
                figs.append(({t["type"] for t in f["data"]}, title.get("text", "") if isinstance(title, dict) else title))
    return figs, "".join(text)


def test_example_notebook_runs_under_nbconvert(tmp_path):
    nbconvert = shutil.which("jupyter-nbconvert")
    assert nbconvert, "jupyter-nbconvert is not installed (scripts/setup.sh installs jupyter-nbconvert and python3-ipykernel)"
    out = str(tmp_path / "sweep")
    os.makedirs(out)
    make_sweep(out, cells=CELLS, n_layers=2, n_heads=3, seed=4)
    reduced = teap_bin() is not None
    if reduced:
        run_teap("reduce", out, check=0)
    env = dict(os.environ, TEAP_SWEEP=out, TEAP_TOP_N="5", PYDEVD_DISABLE_FILE_VALIDATION="1")
    env.pop("PYTHONPATH", None)
    executed = tmp_path / "run.ipynb"
    p = subprocess.run([nbconvert, "--to", "notebook", "--execute", "--ExecutePreprocessor.timeout=300",
                        "--output", str(executed), os.path.abspath(NOTEBOOK)],
                       capture_output=True, text=True, env=env, timeout=600, cwd=os.path.dirname(NOTEBOOK))
    assert p.returncode == 0, f"nbconvert exited {p.returncode}\n{p.stderr[-4000:]}"
    with open(executed) as f:
        nb = json.load(f)
    figs, text = figures(nb)
    kinds = [k for k, _ in figs]
    sankeys = [t for k, t in figs if k == {"sankey"}]
    assert len(sankeys) == (2 if reduced else 1), figs
    assert "recomputed" in sankeys[0]
    if reduced:
        assert sankeys[1].startswith("eap_results.") and "the same edges as recomputed" in text, text
    # The heatmaps are per architecture: BM1 and BM2 cells never share one.
    heat = [t for k, t in figs if k == {"heatmap"}]
    assert any(t.startswith("BM1.2x3: consistent edges") for t in heat), heat
    assert any(t.startswith("BM1.2x3: Jaccard") for t in heat), heat
    assert not any("BM2" in t and "BM1" in t for t in heat)
    assert {"scatter"} in kinds
    assert "rows (cell x batch)" in text and "cells compared per architecture" in text
    # The notebook in the repository holds no outputs (executed copies are not committed).
    with open(NOTEBOOK) as f:
        assert all(not c.get("outputs") for c in json.load(f)["cells"])
