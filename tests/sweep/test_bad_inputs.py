"""Inputs that must fail cleanly (issue 15). Files that are not what they claim: a FIFO, a device or an
oversized file in place of a config, weights, a job, a unit file, a result JSON or a manifest. Models
that cannot give a true result: NaN or Inf weights, logits that overflow, prompts past
max_position_embeddings, sizes too large to allocate. Each is one line naming the file, key or value
(exit 2; exit 1 for an overflow found while computing), within a timeout (a FIFO must not block,
/dev/zero must not fill memory), with no LibTorch stack trace and nothing new written."""
import json
import os
import re
import shutil
import struct
import subprocess

import pytest

from sweeplib import BIN, TOKENIZERS, patch_tensor, write_job

CELL = "BM1.CS1.EngTableName.novel0.synfield0.syntable0"


@pytest.fixture(scope="module")
def done_sweep(model, tmp_path_factory):
    """A finished, reduced one-unit sweep: its job, unit file, manifest and result JSON."""
    base = tmp_path_factory.mktemp("sweep")
    job = write_job(base / "job.toml", base / "out", model, features=("EngTableName",), batches=1)
    subprocess.run([BIN, "run", job], check=True, capture_output=True, timeout=120)
    subprocess.run([BIN, "reduce", str(base / "out")], check=True, capture_output=True, timeout=120)
    return base


def fifo(path):
    os.mkfifo(path)


def dev_zero(path):
    os.symlink("/dev/zero", path)


def oversized(size):
    def make(path):
        with open(path, "w") as f:
            f.write(" " * size)
    return make


def result_json(out):
    d = out / "cells" / CELL
    return d / next(n for n in os.listdir(d) if n.endswith(".json"))


# (name, file replaced (relative to the copied model "m" or sweep "out"), how, command)
CASES = [
    ("config_fifo", "m/config.json", fifo, ["inspect", "{m}"]),
    ("config_dev_zero", "m/config.json", dev_zero, ["inspect", "{m}"]),
    ("config_2MiB", "m/config.json", oversized(2 << 20), ["inspect", "{m}"]),
    ("config_fifo_complete", "m/config.json", fifo, ["complete", "{m}", "SELECT"]),
    ("weights_fifo", "m/model.safetensors", fifo, ["inspect", "{m}"]),
    ("weights_dev_zero", "m/model.safetensors", dev_zero, ["complete", "{m}", "SELECT"]),
    ("vocab_fifo", "m/vocab.json", fifo, ["tokenize", "--tokenizer", "{m}", "x"]),
    ("merges_dev_zero", "m/merges.txt", dev_zero, ["tokenize", "--tokenizer", "{m}", "x"]),
    ("job_fifo", "job.toml", fifo, ["run", "{job}"]),
    ("job_dev_zero", "job.toml", dev_zero, ["run", "{job}"]),
    ("job_2MiB", "job.toml", oversized(2 << 20), ["run", "{job}"]),
    ("unit_fifo", f"out/units/{CELL}/b00000.h5", fifo, ["reduce", "{out}"]),
    ("unit_dev_zero", f"out/units/{CELL}/b00000.h5", dev_zero, ["reduce", "{out}"]),
    ("manifest_fifo", "out/sweep.json", fifo, ["status", "{out}"]),
    ("manifest_dev_zero", "out/sweep.json", dev_zero, ["reduce", "{out}"]),
    ("result_fifo", "RESULT", fifo, ["plot", "{result}"]),
    ("result_dev_zero", "RESULT", dev_zero, ["plot", "{result}"]),
]


def listing(root):
    return sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names)


@pytest.mark.parametrize("name,rel,make,args", CASES, ids=[c[0] for c in CASES])
def test_bad_input_file(model, done_sweep, tmp_path, name, rel, make, args):
    shutil.copytree(model, tmp_path / "m")
    shutil.copytree(done_sweep / "out", tmp_path / "out")
    job = write_job(tmp_path / "job.toml", tmp_path / "new-out", tmp_path / "m", features=("EngTableName",), batches=1)
    target = result_json(tmp_path / "out") if rel == "RESULT" else tmp_path / rel
    os.remove(target)
    make(target)
    before = listing(tmp_path)
    cmd = [BIN] + [a.format(m=tmp_path / "m", job=job, out=tmp_path / "out", result=target) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert str(target) in lines[0], lines[0]
    assert re.search(r"FIFO|character device|more than", lines[0]), lines[0]
    assert listing(tmp_path) == before, "files were written"


# --- Weights and sizes (items 6 and 7): NaN weights, overflowing logits, positions past the limit.

def nan_weight(m):
    patch_tensor(os.path.join(m, "model.safetensors"), "transformer.h.1.mlp.c_fc.weight", float("nan"), 1)


def inf_weight(m):
    patch_tensor(os.path.join(m, "model.safetensors"), "transformer.h.0.ln_1.bias", float("inf"), 1)


def overflow(m):
    # Finite weights whose final norm overflows float32: the logits are Inf, the differences NaN.
    patch_tensor(os.path.join(m, "model.safetensors"), "transformer.ln_f.weight", 3e38)


def max_positions_16(m):
    with open(os.path.join(m, "config.json")) as f:
        c = json.load(f)
    c["max_position_embeddings"] = 16
    with open(os.path.join(m, "config.json"), "w") as f:
        json.dump(c, f)
    # GPT-Neo's learned positions: the table must shrink with the config.
    with open(os.path.join(m, "model.safetensors"), "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    tensors = sorted((k, v) for k, v in header.items() if k != "__metadata__")
    out, parts, offset = {}, [], 0
    if "__metadata__" in header:
        out["__metadata__"] = header["__metadata__"]
    for k, v in tensors:
        b, e = v["data_offsets"]
        blob = body[b:e]
        if k == "transformer.wpe.weight":
            v = dict(v, shape=[16, v["shape"][1]])
            blob = blob[:16 * v["shape"][1] * 4]
        out[k] = dict(v, data_offsets=[offset, offset + len(blob)])
        parts.append(blob)
        offset += len(blob)
    h = json.dumps(out).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(m, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(parts))


LONG_PROMPT = "### Instruction: show me the price and count from the people table ### Context: CREATE TABLE people"

# (name, change to the copied model, command, expected exit, regex of the one line)
MODEL_CASES = [
    ("nan_complete", nan_weight, ["complete", "{m}", "SELECT"], 2,
     r"error: {m}/model\.safetensors: tensor 'transformer\.h\.1\.mlp\.c_fc\.weight' has 1 non-finite"),
    ("inf_inspect", inf_weight, ["inspect", "{m}"], 2,
     r"error: {m}/model\.safetensors: tensor 'transformer\.h\.0\.ln_1\.bias' has 1 non-finite"),
    ("nan_attribute", nan_weight, ["attribute", "--model", "{m}", "--feature", "EngTableName", "--batches", "1"], 2,
     r"error: {m}/model\.safetensors: .*non-finite"),
    ("overflow_complete", overflow, ["complete", "{m}", "SELECT"], 2, r"error: {m}: the model's logits are not finite"),
    ("overflow_attribute", overflow, ["attribute", "--model", "{m}", "--feature", "EngTableName", "--batches", "1"], 1,
     r"failure: {m}: non-finite clean logit difference"),
    ("past_max_positions_complete", max_positions_16, ["complete", "{m}", LONG_PROMPT], 2,
     r"error: {m}/config\.json: max_position_embeddings is 16, less than the [0-9]+ tokens given"),
    ("past_max_positions_attribute", max_positions_16,
     ["attribute", "--model", "{m}", "--feature", "EngTableName", "--batches", "1"], 2,
     r"error: {m}/config\.json: max_position_embeddings is 16"),
]


@pytest.mark.parametrize("name,change,args,code,message", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model(model, tmp_path, name, change, args, code, message):
    m = str(tmp_path / "m")
    shutil.copytree(model, m)
    change(m)
    before = listing(tmp_path)
    p = subprocess.run([BIN] + [a.format(m=m) for a in args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == code, (p.returncode, p.stderr)
    lines = [l for l in p.stderr.strip().splitlines() if "tinysql-eap:" in l or "Exception" in l or "frame" in l]
    assert len(lines) == 1 and lines[0] == p.stderr.strip().splitlines()[-1], p.stderr
    assert re.search(message.format(m=re.escape(m)), lines[0]), lines[0]
    assert listing(tmp_path) == before, "files were written"


def test_short_prompt_stops_at_max_positions(model, tmp_path):
    m = str(tmp_path / "m")
    shutil.copytree(model, m)
    max_positions_16(m)
    p = subprocess.run([BIN, "complete", m, "show me", "--max-tokens", "64"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "stopped at max_position_embeddings (16)" in p.stderr


def test_make_model_too_large(tmp_path):
    out = tmp_path / "huge"
    p = subprocess.run([BIN, "make-model", "--family", "llama", "--layers", "256", "--heads", "256", "--d-model", "65536",
                        "--vocab-from", os.path.join(TOKENIZERS, "llama3"), "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert re.search(r"error: model of 256 layers, d_model 65536, .* parameters, more than the 2147483648", lines[0]), lines[0]
    assert not out.exists()


def test_run_overflow_fails_units_without_storing_them(model, tmp_path):
    m = str(tmp_path / "m")
    shutil.copytree(model, m)
    overflow(m)
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", out, m, features=("EngTableName",), batches=2)
    p = subprocess.run([BIN, "run", job], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert not (out / "units").exists() or not listing(out / "units"), "a non-finite unit was stored as done"
    failed = listing(out / "failed")
    assert len(failed) == 2, failed
    for f in failed:
        assert "non-finite" in open(f).read(), f


def test_reduce_inf_unit_names_the_file(done_sweep, tmp_path):
    import h5py
    out = tmp_path / "out"
    shutil.copytree(done_sweep / "out", out)
    shutil.rmtree(out / "cells")
    os.remove(out / "index.html")
    unit = out / "units" / CELL / "b00000.h5"
    with h5py.File(unit, "r+") as f:
        s = f["scores"][...]
        s[0, 1] = float("inf")
        f["scores"][...] = s
    before = listing(out)
    p = subprocess.run([BIN, "reduce", str(out)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert f"{unit}: dataset 'scores' holds a non-finite value (inf)" in lines[0], lines[0]
    assert listing(out) == before, "files were written"


def test_run_with_nan_weights_exits_2_naming_the_tensor(model, tmp_path):
    # The weights are the input's fault: every unit fails on them, and the run says why with exit 2.
    m = str(tmp_path / "m")
    shutil.copytree(model, m)
    nan_weight(m)
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", out, m, features=("EngTableName",), batches=2)
    p = subprocess.run([BIN, "run", job], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, (p.returncode, p.stderr)
    last = p.stderr.strip().splitlines()[-1]
    assert re.search(r"error: .*model\.safetensors: tensor 'transformer\.h\.1\.mlp\.c_fc\.weight' has 1 non-finite.*"
                     r"\(2 unit\(s\) failed: see .*/failed\)", last), last
    assert not (out / "units").exists() or not listing(out / "units"), "a unit was stored as done"
