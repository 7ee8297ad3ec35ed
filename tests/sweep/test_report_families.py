"""Every page kind of a sweep over all three families (issue 14): random GPT-Neo, Qwen2 and Llama
checkpoints (BM1, BM2, BM3) at CS0 and CS1, two features, evaluated; `reduce` writes the cell pages,
the summary and the comparison page, with one plotly.min.js for the folder; `plot --diff` draws two
cells of one architecture and refuses two of different architectures. Headless Chromium (when
installed) renders every page with no console message, and every Sankey node in its layer's column
(tests/report/browser_test.sh)."""
import glob
import json
import os
import shutil
import subprocess

import pytest

from sweeplib import BIN, run

TOKENIZERS = os.environ["TEAP_TOKENIZERS"]
BROWSER_TEST = os.path.join(os.path.dirname(__file__), "..", "report", "browser_test.sh")
FAMILIES = {1: ("gpt_neo", "gpt2", []), 2: ("qwen2", "qwen2", ["--kv-heads", "2"]), 3: ("llama", "llama3", ["--kv-heads", "2"])}


def call(*args, timeout=300):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("families")
    models = []
    for bm, (family, tok, extra) in FAMILIES.items():
        for cs in (0, 1):
            path = tmp / f"bm{bm}cs{cs}"
            p = call("make-model", "--family", family, "--layers", 3, "--heads", 4, *extra, "--d-model", 32,
                     "--vocab-from", os.path.join(TOKENIZERS, tok), "--seed", 10 * bm + cs, "--out", path)
            assert p.returncode == 0, p.stderr
        models += [f"[models.BM{bm}]", f'cs0 = "{tmp}/bm{bm}cs0"', f'cs1 = "{tmp}/bm{bm}cs1"',
                   f'tokenizer = "{os.path.join(TOKENIZERS, tok)}"', ""]
    out = tmp / "out"
    job = tmp / "job.toml"
    job.write_text("\n".join([
        f'output = "{out}"', "", "[grid]", "models = [1, 2, 3]", "commandsets = [0, 1]",
        'features = ["EngTableName", "DefFieldName"]', "use_novel_names = [false]", "",
        "[settings]", "batch_size = 4", "batches = 2", "top_n = 12", "threads = 1", "",
        # Random models barely react to a corruption: no cell is flagged, so all are compared.
        "[quality]", "min_effect_vs_clean = 0", "min_effect_vs_spread = 0", "min_accuracy = 0", "",
        "[evaluate]", 'circuits = ["consistent", "top-k", "empty", "full"]', "top_k = [1, 5]", "",
    ] + models))
    run(str(job), timeout=600)
    p = call("reduce", out)
    assert p.returncode == 0, p.stderr
    return str(out)


def results(out):
    """{cell id: (path, result JSON)}"""
    found = {}
    for path in glob.glob(os.path.join(out, "cells", "*", "eap_results.*.json")):
        found[os.path.basename(os.path.dirname(path))] = (path, json.load(open(path)))
    return found


def test_pages_of_three_families(sweep):
    out = sweep
    found = results(out)
    assert len(found) == 12
    assert {r["metadata"]["model"] for _, r in found.values()} == {1, 2, 3}
    # One plotly for the folder; cell pages load it.
    assert os.path.getsize(os.path.join(out, "plotly.min.js")) > 1_000_000
    for cell in found:
        page = open(os.path.join(out, "cells", cell, "sankey.html")).read()
        assert '<script src="../../plotly.min.js"></script>' in page and len(page) < 300_000, cell
    index = open(os.path.join(out, "index.html")).read()
    assert index.count('<tr class="cell"') == 12
    comparison = os.path.join(out, "comparison.html")
    assert os.path.isfile(comparison)


def test_plot_diff_within_one_architecture_only(sweep, tmp_path):
    found = results(sweep)
    by = {(r["metadata"]["model"], r["metadata"]["commandset"], r["metadata"]["feature_name"]): p
          for p, r in found.values()}
    a, b = by[(2, 0, "EngTableName")], by[(2, 1, "EngTableName")]
    p = call("plot", "--diff", a, b, "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    pages = [line for line in p.stdout.split() if line.endswith(".html")]
    assert len(pages) == 1 and os.path.isfile(pages[0]), p.stdout
    shutil.copy(pages[0], sweep)  # the browser test below opens it beside the sweep's plotly.min.js
    c = by[(3, 0, "EngTableName")]
    p = call("plot", "--diff", a, c, "--out", tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert a in p.stderr and c in p.stderr


def test_every_page_renders_in_chromium(sweep):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    p = subprocess.run(["bash", BROWSER_TEST, chromium, "--sweep", sweep], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "ok: 12 cell pages" in p.stdout, p.stdout[-2000:]
    diffs = glob.glob(os.path.join(sweep, "diff-*.html"))
    assert diffs, "test_plot_diff_within_one_architecture_only did not leave its page"
    for page in diffs:
        p = subprocess.run(["bash", BROWSER_TEST, chromium, "--page", page], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
