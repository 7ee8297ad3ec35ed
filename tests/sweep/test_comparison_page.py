"""The cross-cell comparison page and the difference Sankey on a real sweep of all three families (issue
14, item 3): random GPT-Neo (BM1), Qwen2 (BM2) and Llama (BM3) checkpoints whose node names overlap
(l0.h1 exists in each), CS0 and CS1 the same checkpoint and CS2 another, reduced. comparison.html has
one section per architecture holding only its own cells; identical base and fine-tune give Jaccard 1
and every fine-tune edge found in CS0; `plot --diff` draws two cells of one architecture and refuses
two of different ones; headless Chromium (when installed) renders every page kind without a console
message."""
import json
import os
import re
import shutil
import subprocess

import pytest

from sweeplib import BIN, TOKENIZERS, run, summary, toml_value

# family, layers, heads, kv heads, tokenizer folder: three architectures
FAMILIES = {1: ("gpt_neo", 2, 4, 4, "gpt2"), 2: ("qwen2", 3, 2, 1, "qwen2"), 3: ("llama", 2, 4, 2, "llama3")}
ARCHS = {1: "BM1.2x4", 2: "BM2.3x2", 3: "BM3.2x4"}
FEATURES = ["EngTableName", "EngFieldName"]
BROWSER_TEST = os.path.join(os.path.dirname(__file__), "..", "report", "browser_test.sh")


def call(*args, timeout=120):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("comparison")
    lines = [f"output = {toml_value(str(tmp / 'out'))}", "", "[grid]", "models = [1, 2, 3]", "commandsets = [0, 1, 2]",
             f"features = {toml_value(FEATURES)}", "use_novel_names = [false]", "use_synonyms_field = [false]",
             "use_synonyms_table = [false]", "", "[settings]", "batch_size = 4", "batches = 2", "top_n = 8",
             "threads = 1", "seed = 0", ""]
    for m, (family, layers, heads, kv, tok) in FAMILIES.items():
        for seed in (1, 2):
            p = subprocess.run([BIN, "make-model", "--family", family, "--layers", str(layers), "--heads", str(heads),
                                "--kv-heads", str(kv), "--d-model", "32", "--vocab-from", os.path.join(TOKENIZERS, tok),
                                "--seed", str(seed), "--out", str(tmp / f"m{m}s{seed}")], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
        # CS0 (the base) and CS1 the same checkpoint: their circuits are the same.
        lines += [f"[models.BM{m}]", f"cs0 = {toml_value(str(tmp / f'm{m}s1'))}", f"cs1 = {toml_value(str(tmp / f'm{m}s1'))}",
                  f"cs2 = {toml_value(str(tmp / f'm{m}s2'))}", f"tokenizer = {toml_value(str(tmp / f'm{m}s1'))}", ""]
    (tmp / "job.toml").write_text("\n".join(lines))
    assert summary(run(str(tmp / "job.toml"), timeout=300).stdout)[0] == 3 * 3 * len(FEATURES) * 2
    out = tmp / "out"
    # Random models: every cell may be flagged; --include-flagged compares them all.
    p = call("reduce", out, "--include-flagged")
    assert p.returncode == 0, p.stderr
    return out


def sections(page):
    """{arch: the section's HTML}"""
    page = page[:page.index("<script>\nvar figures")]  # the figures of every section follow the last
    parts = re.split(r'<div class="arch-section" id="[^"]*" data-arch="([^"]*)"', page)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def figures(page):
    """{div id: plotly figure} from the page's figure list."""
    m = re.search(r"var figures = (.*?);\n", page)
    return {f[0]: f[1] for f in json.loads(m.group(1))}


def test_one_section_per_architecture_with_its_own_cells(sweep):
    page = (sweep / "comparison.html").read_text()
    assert 'id="comparison-link" href="comparison.html"' in (sweep / "index.html").read_text()
    secs = sections(page)
    assert list(secs) == [ARCHS[1], ARCHS[2], ARCHS[3]]
    figs = figures(page)
    for m, arch in ARCHS.items():
        assert f'data-cells="{3 * len(FEATURES)}"' in secs[arch][:40]
        # Its figures hold its own cells only: no other model's cell id, anywhere in them.
        for kind in ("heatmap", "jaccard"):
            fig = figs.get(f"{kind}-{arch}")
            if fig is None:  # no edges at all in this architecture
                assert f'id="heatmap-{arch}"' in secs[arch] and 'data-edges="0"' in secs[arch]
                continue
            ids = fig["data"][0]["x"]
            assert len(ids) == 3 * len(FEATURES)
            assert all(i.startswith(f"BM{m}.") for i in ids), ids
        for other in ARCHS:
            if other != m:
                assert f"BM{other}.CS" not in secs[arch]


def test_one_plotly_for_the_folder(sweep):
    """reduce's default: the pages load OUT/plotly.min.js (comparison.html) and ../../plotly.min.js."""
    assert (sweep / "plotly.min.js").stat().st_size > 1_000_000
    assert '<script src="plotly.min.js"></script>' in (sweep / "comparison.html").read_text()
    for page in (sweep / "cells").glob("*/sankey.html"):
        text = page.read_text()
        assert '<script src="../../plotly.min.js"></script>' in text and len(text) < 300_000, page


def test_same_checkpoint_for_base_and_fine_tune(sweep):
    page = (sweep / "comparison.html").read_text()
    figs = figures(page)
    checked = 0
    for arch in ARCHS.values():
        fig = figs.get(f"jaccard-{arch}")
        if fig is None:
            continue
        ids, z = fig["data"][0]["x"], fig["data"][0]["z"]
        for f in FEATURES:
            a, b = ids.index(f"{arch[:3]}.CS0.{f}.novel0.synfield0.syntable0"), ids.index(f"{arch[:3]}.CS1.{f}.novel0.synfield0.syntable0")
            if z[a][a] is not None:  # the cell has edges
                assert z[a][b] == 1.0
                checked += 1
        # Every edge consistent in all fine-tunes is in CS1, hence in CS0 (the same checkpoint).
        for n_edges, in_base in re.findall(r'class="finetunes" id="finetunes-[^"]*" data-edges="(\d+)" data-in-base="(\d+)"',
                                           sections(page)[arch]):
            assert n_edges == in_base
    assert checked > 0


def test_diff_of_two_cells_and_refusal_across_architectures(sweep):
    def result(cell):
        folder = sweep / "cells" / cell
        return str(next(folder.glob("eap_results.*.json")))
    a, b = result("BM1.CS1.EngTableName.novel0.synfield0.syntable0"), result("BM1.CS2.EngTableName.novel0.synfield0.syntable0")
    p = call("plot", "--diff", a, b, "--out", sweep)
    assert p.returncode == 0, p.stderr
    html = [l for l in p.stdout.splitlines() if l.endswith(".html")]
    assert len(html) == 1 and os.path.basename(html[0]).startswith("diff-eap_results.BM1.CS1_cs1")
    assert 'data-diff="1"' in open(html[0]).read()
    c = result("BM2.CS1.EngTableName.novel0.synfield0.syntable0")
    p = call("plot", "--diff", a, c)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1
    assert a in p.stderr and c in p.stderr and "different architectures" in p.stderr, p.stderr


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed")
def test_every_page_kind_renders_in_headless_chromium(sweep):
    test_diff_of_two_cells_and_refusal_across_architectures(sweep)  # the diff page in OUT
    p = subprocess.run(["bash", BROWSER_TEST, shutil.which("chromium"), "--sweep", str(sweep)], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 architecture section(s) BM1.2x4 (6 cells), BM2.3x2 (6 cells), BM3.2x4 (6 cells)" in p.stdout, p.stdout
    assert "ok: 1 difference page(s)" in p.stdout, p.stdout
    assert "ok: 18 cell pages" in p.stdout, p.stdout
