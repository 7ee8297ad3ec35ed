"""Shared helpers: a tiny synthetic sweep folder written with h5py in the layout of
``io::UnitRecord`` (src/io/unit_file.hpp) and the runner's manifest, and the paths of the
programs under test (``TEAP_BIN``: tinysql-eap; ``TEAP_REPORT_FIXTURE``: the folder the
report_fixture test program wrote)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

UNIT_FORMAT = "tinysql-eap unit v1"


def make_graph(n_layers: int, n_heads: int, qkv: bool = True):
    """Node names and edge mask in the notebook's index order (src/eap/graph.cpp)."""
    up, up_layer, up_head = [], [], []
    down, down_layer, down_mlp = [], [], []
    for l in range(n_layers):
        for h in range(n_heads):
            up.append(f"head.{l}.{h}")
            up_layer.append(l)
            up_head.append(True)
        up.append(f"mlp.{l}")
        up_layer.append(l)
        up_head.append(False)
        if qkv:
            for x in "qkv":
                for h in range(n_heads):
                    down.append(f"head.{l}.{h}.{x}")
                    down_layer.append(l)
                    down_mlp.append(False)
        down.append(f"mlp.{l}")
        down_layer.append(l)
        down_mlp.append(True)
    valid = np.zeros((len(up), len(down)), dtype=np.uint8)
    for u in range(len(up)):
        for d in range(len(down)):
            a, b = up_layer[u], down_layer[d]
            valid[u, d] = a < b or (a == b and up_head[u] and down_mlp[d])
    return up, down, valid


CELL_DEFAULTS = dict(model=1, commandset=1, hf_model="synthetic/bm1", feature="EngTableName", use_novel_names=False,
                     use_synonyms_field=False, use_synonyms_table=False, num_fields=2, batch_size=4, n_batches=3,
                     seed=7, dtype="float32", device="cpu", downstream_heads="qkv", metric_pairing="own", top_n=5)


def fnv1a64(text: str) -> str:
    """The runner's settings hash (tinysql::fnv1a64, printed as 16 hex digits)."""
    h = 0xcbf29ce484222325
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def settings_of(c: dict) -> str:
    """The cell's result-changing settings as the runner writes them (src/job/job.cpp)."""
    return (f"weights={c['hf_model']};tokenizer={c['hf_model']};trim_vocab=0;feature={c['feature']};"
            f"novel={int(c['use_novel_names'])};syn_field={int(c['use_synonyms_field'])};"
            f"syn_table={int(c['use_synonyms_table'])};num_fields={c['num_fields']};batch_size={c['batch_size']};"
            f"seed={c['seed']};dtype={c['dtype']};downstream_heads={c['downstream_heads']};"
            f"metric_pairing={c['metric_pairing']}")


def cell_id(c: dict) -> str:
    return (f"BM{c['model']}.CS{c['commandset']}.{c['feature']}.novel{int(c['use_novel_names'])}"
            f".synfield{int(c['use_synonyms_field'])}.syntable{int(c['use_synonyms_table'])}")


def write_unit(path: str, cell: dict, batch: int, up, down, valid, scores, clean_ld, corrupt_ld, n_layers, n_heads,
               n_positions: int = 6, rng=None, clean_correct=None, clean_top=None, corrupt_top=None, compress=False):
    """One unit file as io::write_unit writes it; clean_correct defaults to all prompts but one,
    and the top tokens (clean_top, corrupt_top: [n_prompts]) are written only when given (files
    of earlier versions lack them). `compress`: the score matrix and edge mask shuffled and
    deflated, as io::write_unit stores them (the sizes of bench/bench_folder_size.py)."""
    rng = rng or np.random.default_rng(batch)
    B = len(clean_ld)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    s = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        packed = dict(compression="gzip", compression_opts=4, shuffle=True) if compress else {}
        f.create_dataset("scores", data=np.asarray(scores, dtype=np.float32), **packed)
        f.create_dataset("valid", data=np.asarray(valid, dtype=np.uint8), **packed)
        f.create_dataset("upstream", data=np.array(up, dtype=object), dtype=s)
        f.create_dataset("downstream", data=np.array(down, dtype=object), dtype=s)
        f.create_dataset("clean_logit_diff", data=np.asarray(clean_ld, dtype=np.float64))
        f.create_dataset("corrupt_logit_diff", data=np.asarray(corrupt_ld, dtype=np.float64))
        f.create_dataset("clean_input_ids", data=rng.integers(0, 50000, (B, n_positions), dtype=np.int64))
        f.create_dataset("corrupt_input_ids", data=rng.integers(0, 50000, (B, n_positions), dtype=np.int64))
        for k in ("clean_token_id", "corrupt_token_id", "answer_token_id"):
            f.create_dataset(k, data=rng.integers(0, 50000, B, dtype=np.int64))
        f.create_dataset("clean_word", data=np.array([f"table{i}" for i in range(B)], dtype=object), dtype=s)
        f.create_dataset("corrupt_word", data=np.array([f"other{i}" for i in range(B)], dtype=object), dtype=s)
        if clean_top is not None or corrupt_top is not None:
            f.create_dataset("clean_top_token", data=np.asarray(clean_top, dtype=np.int64))
            f.create_dataset("corrupt_top_token", data=np.asarray(corrupt_top, dtype=np.int64))
        a = f.attrs
        a["format"] = UNIT_FORMAT
        for k in ("hf_model", "feature", "dtype", "device", "downstream_heads", "metric_pairing"):
            a[k] = str(cell[k])
        a["cell_id"] = cell["id"]
        a["seed"] = str(cell["seed"])
        a["settings"] = cell.get("settings", settings_of(cell))
        a["settings_hash"] = cell.get("settings_hash", fnv1a64(a["settings"]))
        a["program_version"] = "synthetic"
        ints = dict(model=cell["model"], commandset=cell["commandset"], batch_index=batch,
                    use_novel_names=int(cell["use_novel_names"]), use_synonyms_field=int(cell["use_synonyms_field"]),
                    use_synonyms_table=int(cell["use_synonyms_table"]), num_fields=cell["num_fields"],
                    batch_size=cell["batch_size"], n_batches=cell["n_batches"], n_layers=n_layers, n_heads=n_heads,
                    rank=0, threads=1, n_prompts=B, n_positions=n_positions,
                    clean_correct=B - 1 if clean_correct is None else clean_correct)
        for k, v in ints.items():
            a.create(k, np.int64(v), dtype=np.int64)
        a.create("seconds", np.float64(0.25), dtype=np.float64)


def make_sweep(out: str, cells=None, n_layers: int = 2, n_heads: int = 3, seed: int = 0):
    """A sweep folder: every cell's settings and what to leave on disk ("done", "partial",
    "missing", "failed", "degenerate"). Returns the manifest cells with their status."""
    rng = np.random.default_rng(seed)
    if cells is None:
        cells = [dict(status="done"),
                 dict(status="done", feature="DefFieldName", use_novel_names=True),
                 dict(status="done", commandset=2, feature="EngFieldName"),
                 dict(status="partial", feature="DefTableName"),
                 dict(status="failed", feature="EngTableName", use_synonyms_table=True),
                 dict(status="missing", feature="EngFieldName", use_synonyms_field=True),
                 dict(status="degenerate", model=2, feature="DefTableName")]
    up, down, valid = make_graph(n_layers, n_heads)
    full = []
    for spec in cells:
        c = dict(CELL_DEFAULTS)
        c.update({k: v for k, v in spec.items() if k != "status"})
        c["id"] = cell_id(c)
        c["settings"] = settings_of(c)
        c["settings_hash"] = fnv1a64(c["settings"])
        c["status"] = spec["status"]
        full.append(c)
        # A few strong edges common to all batches, plus noise: consistent edges exist.
        strong = rng.normal(0, 1.0, valid.shape) * (rng.random(valid.shape) < 0.15)
        for b in range(c["n_batches"]):
            if c["status"] == "missing":
                break
            if c["status"] == "partial" and b >= 1:
                break
            if c["status"] == "failed" and b == 1:
                os.makedirs(os.path.join(out, "failed"), exist_ok=True)
                with open(os.path.join(out, "failed", f"{c['id']}.b{b:05d}.txt"), "w") as f:
                    f.write("RuntimeError: CUDA out of memory (synthetic)\n")
                continue
            B = c["batch_size"]
            scores = (strong + rng.normal(0, 0.05, valid.shape)) * valid
            if c["status"] == "degenerate":
                clean = np.full(B, 2.5)
                corrupt = np.full(B, 2.5)
            else:
                clean = rng.normal(3.0, 0.5, B)
                corrupt = rng.normal(-1.0, 0.5, B)
            write_unit(os.path.join(out, "units", c["id"], f"b{b:05d}.h5"), c, b, up, down, valid, scores, clean,
                       corrupt, n_layers, n_heads, rng=rng)
    manifest = {"version": "synthetic", "job": "synthetic.toml",
                "cells": [{k: v for k, v in c.items() if k != "status"} for c in full]}
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return full


@pytest.fixture
def sweep(tmp_path):
    out = str(tmp_path / "sweep")
    os.makedirs(out)
    cells = make_sweep(out)
    return out, cells


def teap_bin():
    p = os.environ.get("TEAP_BIN", "")
    return p if p and os.path.isfile(p) and os.access(p, os.X_OK) else None


def run_teap(*args, check=None):
    """Runs tinysql-eap; skips the test when TEAP_BIN is not set (pytest outside ctest)."""
    b = teap_bin()
    if not b:
        pytest.skip("TEAP_BIN (the tinysql-eap executable) is not set: run through ctest")
    r = subprocess.run([b, *args], capture_output=True, text=True, timeout=300)
    if check is not None:
        assert r.returncode == check, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def tokenizers_dir():
    """The tokenizer folders (TEAP_TOKENIZERS, else the repository's .cache/tokenizers)."""
    return os.environ.get("TEAP_TOKENIZERS") or os.path.join(os.path.dirname(__file__), "..", "..", ".cache",
                                                              "tokenizers")


def make_tiny_model(path, d_model: int = 32, layers: int = 2, heads: int = 4, seed: int = 1) -> str:
    """A random GPT-Neo checkpoint with GPT-2's vocabulary (`tinysql-eap make-model`): units of
    a few milliseconds."""
    if not teap_bin():
        pytest.skip("TEAP_BIN (the tinysql-eap executable) is not set: run through ctest")
    vocab = os.path.join(tokenizers_dir(), "gpt2")
    assert os.path.isdir(vocab), f"{vocab}: no GPT-2 tokenizer folder (scripts/setup.sh fetches it; or set TEAP_TOKENIZERS)"
    run_teap("make-model", "--family", "gpt_neo", "--layers", str(layers), "--heads", str(heads), "--d-model",
             str(d_model), "--vocab-from", vocab, "--seed", str(seed), "--out", str(path), check=0)
    return str(path)


def write_job(path, output, model, features=("EngTableName", "EngFieldName"), quality=None, **settings) -> str:
    """A job of len(features) cells (BM1, CS1, no novel names or synonyms) on the model folder `model`;
    `quality`: the [quality] table's thresholds (a dict), none by default."""
    s = {"batch_size": 4, "batches": 2, "top_n": 10, "threads": 1, "seed": 0}
    s.update(settings)
    q = lambda v: f'"{v}"' if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    lines = [f"output = {q(str(output))}", "", "[grid]", "models = [1]", "commandsets = [1]",
             "features = [" + ", ".join(q(f) for f in features) + "]", "use_novel_names = [false]",
             "use_synonyms_field = [false]", "use_synonyms_table = [false]", "", "[settings]"]
    lines += [f"{k} = {q(v)}" for k, v in s.items()]
    if quality:
        lines += ["", "[quality]"] + [f"{k} = {q(v)}" for k, v in quality.items()]
    lines += ["", "[models.BM1]", f"cs1 = {q(str(model))}", f"tokenizer = {q(str(model))}", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return str(path)


def report_fixture_dir():
    d = os.environ.get("TEAP_REPORT_FIXTURE", "")
    if not d or not os.path.isdir(d):
        pytest.skip("TEAP_REPORT_FIXTURE (the report_fixture output) is not set: run through ctest")
    return d


@pytest.fixture
def have_chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")
