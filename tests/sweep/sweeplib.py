"""Helpers for the sweep tests: tiny models, job files, runs under mpirun, unit-file comparisons.

The program is $TEAP_BIN, the GPT-2 tokenizer folder $TEAP_TOKENIZERS/gpt2 (set by CMake).
"""
import glob
import json
import os
import re
import signal
import struct
import subprocess
import time

import h5py
import numpy as np

BIN = os.environ.get("TEAP_BIN", "tinysql-eap")
TOKENIZERS = os.environ.get("TEAP_TOKENIZERS", os.path.join(os.path.dirname(__file__), "../../.cache/tokenizers"))
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]

# Attributes that say how a unit was computed, not what it holds.
RUN_ATTRS = {"rank", "threads", "seconds", "group_size"}


def make_model(path, d_model=64, layers=2, heads=4, seed=1):
    subprocess.run([BIN, "make-model", "--family", "gpt_neo", "--layers", str(layers), "--heads", str(heads),
                    "--d-model", str(d_model), "--vocab-from", os.path.join(TOKENIZERS, "gpt2"), "--seed", str(seed),
                    "--out", str(path)], check=True, stdout=subprocess.DEVNULL)
    return str(path)


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return '"' + v + '"'
    return str(v)


def write_job(path, output, model, features=("EngTableName", "EngFieldName"), novel=(False,), batches=2,
              batch_size=8, evaluate=None, **settings):
    """A job of len(features) x len(novel) cells on `model` (a folder); settings override the defaults;
    `evaluate` (a dict) adds an [evaluate] table with its keys."""
    s = {"batch_size": batch_size, "batches": batches, "threads": 1}
    s.update(settings)
    lines = [f"output = {toml_value(str(output))}", "", "[grid]", "models = [1]", "commandsets = [1]",
             f"features = {toml_value(list(features))}", f"use_novel_names = {toml_value(list(novel))}", "",
             "[settings]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in s.items()]
    lines += ["", "[models.BM1]", f"cs1 = {toml_value(str(model))}", f"tokenizer = {toml_value(str(model))}", ""]
    if evaluate is not None:
        lines += ["[evaluate]"] + [f"{k} = {toml_value(v)}" for k, v in evaluate.items()] + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return str(path)


def command(job, np=1, args=()):
    cmd = [BIN, "run", str(job), *args]
    return MPIRUN + ["-np", str(np)] + cmd if np > 1 else cmd


def environment(env):
    """os.environ with `env`'s entries set, or removed where None."""
    e = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return e


def run(job, np=1, args=(), env=None, check=True, timeout=120):
    e = environment(env)
    p = subprocess.run(command(job, np, args), capture_output=True, text=True, env=e, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{command(job, np, args)} exited {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}")
    return p


def start(job, np=1, args=(), env=None):
    e = environment(env)
    return subprocess.Popen(command(job, np, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
                            start_new_session=True)


def summary(stdout):
    """(done now, done before, failed, total) from the run's summary line."""
    m = re.search(r"(\d+) units done now, (\d+) before, (\d+) failed, of (\d+)", stdout)
    assert m, f"no summary line in:\n{stdout}"
    return tuple(int(x) for x in m.groups())


def unit_files(out, folder="units"):
    return sorted(os.path.relpath(p, out) for p in glob.glob(os.path.join(out, folder, "*", "*.h5")))


def evaluation_files(out):
    return unit_files(out, "evaluation")


def all_files(out):
    return sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(os.path.join(out, "units")) for f in fs)


def rank_pids(job):
    """{rank: pid} of the tinysql-eap processes running `job` (found in /proc)."""
    found = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if not argv or os.path.basename(argv[0].decode()) != "tinysql-eap" or str(job).encode() not in argv:
                continue
            with open(f"/proc/{d}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            found[int(env.get(b"OMPI_COMM_WORLD_RANK", b"0"))] = int(d)
        except (OSError, ValueError):
            continue
    return found


def wait_for_units(out, n, proc, timeout=60):
    """Waits until `out` holds at least n unit files; fails if `proc` ends first."""
    t0 = time.time()
    while len(unit_files(out)) < n:
        assert proc.poll() is None, f"the run ended before {n} units were written:\n{proc.communicate()[1]}"
        assert time.time() - t0 < timeout, f"fewer than {n} units after {timeout} s"
        time.sleep(0.02)


def log_lines(out, pattern):
    lines = []
    for p in glob.glob(os.path.join(out, "logs", "*.log")):
        with open(p) as f:
            lines += [l for l in f if re.search(pattern, l)]
    return lines


def read_unit(path):
    """{name: array} of every dataset, and the attributes."""
    with h5py.File(path, "r") as f:
        data = {k: f[k][()] for k in f.keys()}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return data, attrs


def check_complete(path):
    """A unit file under its final name must open and hold every dataset."""
    data, attrs = read_unit(path)
    for k in ("scores", "valid", "upstream", "downstream", "clean_logit_diff", "corrupt_logit_diff", "clean_input_ids",
              "corrupt_input_ids", "clean_word", "corrupt_word"):
        assert k in data, f"{path}: no dataset {k}"
    assert data["scores"].shape == (len(data["upstream"]), len(data["downstream"])), path
    assert data["clean_logit_diff"].shape == (attrs["n_prompts"],), path


FLOAT_DATASETS = ("scores", "clean_logit_diff", "corrupt_logit_diff", "logit_diff", "faithfulness")


def compare_sweeps(a, b, exact=True, rtol=1e-5, atol=1e-6, folder="units", rtol_of=None):
    """Every unit of sweep folder a equals b's: bit for bit (exact), else scores and logit differences to
    float tolerance (`rtol_of`: {dataset: rtol} where another applies) and everything else identical.
    folder="evaluation" compares the evaluation files."""
    fa, fb = unit_files(a, folder), unit_files(b, folder)
    assert fa == fb, f"unit files differ: only in {a}: {sorted(set(fa) - set(fb))}, only in {b}: {sorted(set(fb) - set(fa))}"
    assert fa, f"no unit files in {a}"
    for rel in fa:
        da, aa = read_unit(os.path.join(a, rel))
        db, ab = read_unit(os.path.join(b, rel))
        assert sorted(da) == sorted(db), rel
        for k in da:
            x, y = da[k], db[k]
            assert x.dtype == y.dtype and x.shape == y.shape, f"{rel}/{k}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
            if exact or k not in FLOAT_DATASETS:
                if x.dtype.kind == "O":
                    assert list(x) == list(y), f"{rel}/{k} differs"
                else:
                    assert x.tobytes() == y.tobytes(), f"{rel}/{k} differs (max |diff| {np.max(np.abs(x.astype(float) - y.astype(float)))})"
            else:
                r = (rtol_of or {}).get(k, rtol)
                assert np.allclose(x, y, rtol=r, atol=atol * max(1.0, float(np.nanmax(np.abs(x)))), equal_nan=True), \
                    f"{rel}/{k}: max |diff| {np.max(np.abs(x.astype(float) - y.astype(float)))}"
        ka = {k: v for k, v in aa.items() if k not in RUN_ATTRS}
        kb = {k: v for k, v in ab.items() if k not in RUN_ATTRS}
        if not exact:  # real-valued attributes (an evaluation's baselines) to float tolerance
            for k in set(ka) & set(kb):
                if isinstance(ka[k], (float, np.floating)) and isinstance(kb[k], (float, np.floating)):
                    assert np.isclose(ka[k], kb[k], rtol=rtol, atol=0), f"{rel}: attribute {k}: {ka[k]} vs {kb[k]}"
                    kb[k] = ka[k]
        assert ka == kb, f"{rel}: attributes differ: {set(ka.items()) ^ set(kb.items())}"
    return len(fa)


def patch_tensor(path, tensor, value, count=None):
    """Overwrites `count` float32 values (all when None) of `tensor` in a safetensors file."""
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        t = json.loads(f.read(n))[tensor]
        assert t["dtype"] == "F32", t
        b, e = t["data_offsets"]
        f.seek(8 + n + b)
        f.write(struct.pack("<f", value) * ((e - b) // 4 if count is None else count))


def stop(proc, sig=signal.SIGKILL):
    """Ends a process group started by start() (test cleanup)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.communicate()
