"""scripts/gpu/compare_scores.py and compare_hf.py on CPU results (issue 16): what the GPU check
compares there, exercised here without a GPU and without Hugging Face.

Environment (set by ctest): TEAP_BIN (tinysql-eap), TEAP_DUMP_LOGITS (dump_logits),
TEAP_TOKENIZERS (folder of tokenizer folders).
"""
import copy
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCORES = os.path.join(ROOT, "scripts", "gpu", "compare_scores.py")
HF = os.path.join(ROOT, "scripts", "gpu", "compare_hf.py")
PY = sys.executable


def env(name):
    value = os.environ.get(name)
    assert value and os.path.exists(value), f"{name} is not set or does not exist (run through ctest)"
    return value


def run(cmd):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two CPU attribute runs of one tiny GPT-Neo (same settings, other thread counts)."""
    d = tmp_path_factory.mktemp("gpu_compare")
    model = str(d / "model")
    r = run([env("TEAP_BIN"), "make-model", "--family", "gpt_neo", "--vocab-from",
             os.path.join(env("TEAP_TOKENIZERS"), "gpt2"), "--out", model, "--layers", "2", "--heads", "4",
             "--d-model", "32", "--d-mlp", "64", "--seed", "3"])
    assert r.returncode == 0, r.stderr
    out = []
    for threads in (1, 2):
        path = str(d / f"scores.{threads}.json")
        r = run([env("TEAP_BIN"), "attribute", "--model", model, "--feature", "EngFieldName", "--batches", "2",
                 "--batch-size", "4", "--threads", str(threads), "--scores-out", path])
        assert r.returncode == 0, r.stderr
        out.append(path)
    return dict(dir=d, model=model, a=out[0], b=out[1])


def write(path, j):
    with open(path, "w") as f:
        json.dump(j, f)
    return str(path)


def test_scores_file_has_everything(runs):
    with open(runs["a"]) as f:
        j = json.load(f)
    n = len(j["upstream"]) * len(j["downstream"])
    assert len(j["batches"]) == 2 and all(len(b["scores"]) == n for b in j["batches"])
    assert j["device"] == "cpu" and j["dtype"] == "float32" and "edges" in j
    assert any(abs(s) > 0 for s in j["batches"][0]["scores"])


def test_two_cpu_runs_agree(runs):
    r = run([PY, SCORES, runs["a"], runs["b"]])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("PASS") and "top-10 same in 2/2" in r.stdout


def test_perturbed_scores_fail(runs):
    with open(runs["a"]) as f:
        j = json.load(f)
    bad = copy.deepcopy(j)
    s = bad["batches"][1]["scores"]
    big = max(range(len(s)), key=lambda i: abs(s[i]))
    scale = max(abs(x) for b in j["batches"] for x in b["scores"])
    s[big] += 1e-3 * scale  # ten times the float32 tolerance
    r = run([PY, SCORES, runs["a"], write(runs["dir"] / "perturbed.json", bad)])
    assert r.returncode == 1 and r.stdout.startswith("FAIL") and "max |score diff|" in r.stdout, r.stdout
    # The same perturbation is within a bfloat16-sized tolerance.
    r = run([PY, SCORES, "--tol", "5e-2", runs["a"], str(runs["dir"] / "perturbed.json")])
    assert r.returncode == 0, r.stdout


def test_perturbed_logit_diff_fails(runs):
    with open(runs["a"]) as f:
        bad = json.load(f)
    bad["batches"][0]["clean_ld"][0] += 1.0
    r = run([PY, SCORES, runs["a"], write(runs["dir"] / "ld.json", bad)])
    assert r.returncode == 1 and "LD diff" in r.stdout, r.stdout


def test_top10_swap_fails_unless_tied(runs):
    with open(runs["a"]) as f:
        j = json.load(f)
    valid = j["valid"]
    s = j["batches"][0]["scores"]
    order = sorted((i for i, v in enumerate(valid) if v), key=lambda i: (-abs(s[i]), i))
    tenth, eleventh = order[9], order[10]
    scale = max(abs(x) for b in j["batches"] for x in b["scores"])
    # Move the 11th edge just above the 10th: a swap within tolerance only if they were close.
    swapped = copy.deepcopy(j)
    t = swapped["batches"][0]["scores"]
    t[eleventh] = (abs(s[tenth]) + 1e-6 * scale) * (1 if s[eleventh] >= 0 else -1)
    t[tenth] = (abs(s[tenth]) - 1e-6 * scale) * (1 if s[tenth] >= 0 else -1)
    gap = abs(abs(s[tenth]) - abs(s[eleventh])) / scale
    big_tol = max(2 * gap, 1e-4)
    r = run([PY, SCORES, "--tol", str(big_tol), runs["a"], write(runs["dir"] / "swap.json", swapped)])
    assert r.returncode == 0 and "tied in 1" in r.stdout, r.stdout
    if gap > 2e-4:  # the swap moved a score by more than the tolerance: both checks must see it
        r = run([PY, SCORES, "--tol", "1e-4", runs["a"], str(runs["dir"] / "swap.json")])
        assert r.returncode == 1, r.stdout


def test_bad_inputs_exit_2(runs):
    r = run([PY, SCORES, runs["a"], str(runs["dir"] / "missing.json")])
    assert r.returncode == 2 and "missing.json" in r.stderr and r.stderr.count("\n") == 1
    r = run([PY, SCORES, runs["a"], write(runs["dir"] / "other.json", {"upstream": []})])
    assert r.returncode == 2 and "other.json" in r.stderr
    r = run([PY, SCORES, "--tol", "-1", runs["a"], runs["b"]])
    assert r.returncode == 2


def test_logits_against_project_reference(runs):
    """compare_hf.py's plumbing (our ids, dump_logits, the comparison) with tests/model/reference.py
    in place of transformers, which the build machine lacks."""
    r = run([PY, HF, "logits", runs["model"], "--bin", env("TEAP_BIN"), "--dump-logits", env("TEAP_DUMP_LOGITS"),
             "--reference", "project", "--work", str(runs["dir"] / "logits")])
    assert r.returncode == 0 and r.stdout.startswith("PASS logits"), r.stdout + r.stderr
    r = run([PY, HF, "logits", str(runs["dir"] / "nothing"), "--bin", env("TEAP_BIN"), "--dump-logits",
             env("TEAP_DUMP_LOGITS"), "--reference", "project"])
    assert r.returncode == 2 and "no config.json" in r.stderr


def sweep(runs, name):
    """A 4-unit sweep of the fixture's model on one rank (scripts/gpu/cases.sh's job)."""
    out = str(runs["dir"] / name)
    job = str(runs["dir"] / f"{name}.toml")
    r = run(["bash", "-c", f'source "{ROOT}/scripts/gpu/cases.sh" && write_job "$@"', "write_job", job, out,
             runs["model"], "cpu", "1"])
    assert r.returncode == 0, r.stderr
    r = run([env("TEAP_BIN"), "run", job])
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_sweep_folders(runs):
    h5py = pytest.importorskip("h5py")
    a, b = sweep(runs, "sweep_a"), sweep(runs, "sweep_b")
    r = run([PY, SCORES, a, b])
    assert r.returncode == 0 and "PASS 2/2 cells (4 units) agree" in r.stdout, r.stdout + r.stderr
    unit = os.path.join(b, "units", sorted(os.listdir(os.path.join(b, "units")))[0], "b00001.h5")
    with h5py.File(unit, "r+") as f:
        s = f["scores"][()]
        s.flat[abs(s).argmax()] *= 1.01
        f["scores"][...] = s
    r = run([PY, SCORES, a, b])
    assert r.returncode == 1 and "1/2 cells (4 units) agree" in r.stdout, r.stdout
    r = run([PY, SCORES, a, runs["a"]])
    assert r.returncode == 2 and "not one of each" in r.stderr
