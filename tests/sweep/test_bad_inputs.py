"""Files that are not what they claim (issue 15): a FIFO, a device or an oversized file in place of a
config, weights, a job, a unit file, a result JSON or a manifest. Each is exit 2 with one line naming
the file, within a timeout (a FIFO must not block, /dev/zero must not fill memory), and nothing new is
written."""
import os
import re
import shutil
import subprocess

import pytest

from sweeplib import BIN, write_job

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
