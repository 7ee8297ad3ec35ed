"""Hostile and clumsy inputs to `run`, `status` and `reduce` (issue 15): foreign and damaged unit files
are detected and recomputed, job values are bounded, problems are found before the first unit (exit 2,
one line each, nothing written), a folder is used by one run at a time, and under mpirun an error is
printed once. Every command runs under a timeout, so a hang fails the test."""
import fcntl
import json
import os
import re
import shutil
import subprocess

import pytest

from sweeplib import BIN, MPIRUN, compare_sweeps, make_model, run, summary, unit_files, write_job

FEATURES = ("EngTableName", "EngFieldName")
CELL = "BM1.CS1.EngTableName.novel0.synfield0.syntable0"


def call(*args, timeout=60):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_error_line(p, code=2):
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("tinysql-eap: error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    """An uninterrupted sweep of the two cells, reduced: what every repaired sweep must equal."""
    tmp = tmp_path_factory.mktemp("reference")
    job = write_job(tmp / "job.toml", tmp / "out", model, FEATURES)
    run(job)
    p = call("reduce", tmp / "out")
    assert p.returncode == 0, p.stderr
    return tmp / "out"


def cell_json(out):
    names = sorted(os.listdir(out / "cells" / CELL))
    js = [n for n in names if n.endswith(".json")]
    assert js, names
    return json.loads((out / "cells" / CELL / js[0]).read_text())


@pytest.mark.parametrize("damage", ["foreign_seed", "truncated", "other_cell"])
def test_bad_unit_file_is_detected_and_recomputed(model, reference, tmp_path, damage):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    target = out / "units" / CELL / "b00000.h5"
    if damage == "foreign_seed":
        other = tmp_path / "other"
        run(write_job(tmp_path / "other.toml", other, model, FEATURES, seed=5))
        shutil.copy(other / "units" / CELL / "b00000.h5", target)
    elif damage == "truncated":
        os.truncate(target, 1000)
    else:
        shutil.copy(out / "units" / "BM1.CS1.EngFieldName.novel0.synfield0.syntable0" / "b00000.h5", target)

    # status: reported, not counted done
    s = call("status", out)
    assert s.returncode == 0, s.stderr
    assert "1 damaged or foreign" in s.stdout and str(target) in s.stdout, s.stdout
    assert "cells complete: 1 of 2" in s.stdout, s.stdout
    # reduce: refuses naming the file, and says how to repair it
    line = one_error_line(call("reduce", out))
    assert str(target) in line and "run the job again" in line, line
    # run: moves it aside, recomputes it, and the results equal the uninterrupted sweep's
    job = write_job(tmp_path / "job.toml", out, model, FEATURES)
    p = run(job)
    assert summary(p.stdout) == (1, 3, 0, 4), p.stdout
    assert "moved aside" in p.stderr and str(target) in p.stderr, p.stderr
    assert (out / "rejected" / "units" / CELL / "b00000.h5").exists()
    compare_sweeps(reference, out)
    assert call("reduce", out).returncode == 0
    assert cell_json(out)["edges"] == cell_json(reference)["edges"]


# (name, settings override or text edit, pattern of the message after "tinysql-eap: error: ")
BAD_JOBS = [
    ("batch_size_int64_max", {"batch_size": 9223372036854775807}, r".*settings\.batch_size: 9223372036854775807 is too large"),
    ("top_n_int64_max", {"top_n": 9223372036854775807}, r".*settings\.top_n: 9223372036854775807 is too large"),
    ("batches_huge", {"batches": 1000000000}, r".*settings\.batches: 1000000000 is too large"),
    ("threads_huge", {"threads": 1000000}, r".*settings\.threads: 1000000 is too large"),
    ("threads_over_cores", {"threads": 4000}, r".*settings\.threads: 4000 threads per rank is more than this node's \d+ cores"),
    # A batch larger than the budget is scored in micro-batches (issue 17); a budget that holds the
    # whole batch but exceeds the node's memory, or that holds not one prompt, is refused.
    ("batch_over_memory", {"batch_size": 100000, "memory_budget": "100TiB"},
     r".*settings\.memory_budget: .* needs about .* GiB on this node \(1 rank\(s\), batches of 100000 prompts\)"),
    ("memory_budget_below_one_prompt", {"memory_budget": "1MiB"},
     r".*settings\.memory_budget: 1\.0 MiB per rank is less than .* needs for one prompt"),
    ("memory_budget_not_a_size", {"memory_budget": "lots"},
     r".*settings\.memory_budget: 'lots' is not \"auto\" or a size"),
    ("device_negative", {"device": "cuda:-1"}, r".*settings\.device: 'cuda:-1' is not cpu, cuda or cuda:N"),
    ("device_absent", {"device": "cuda:99"}, r".*settings\.device: device 'cuda:99'"),
    ("quality_out_of_range", lambda t: t + "\n[quality]\nmin_accuracy = 2\n", r".*quality\.min_accuracy: must be between 0 and 1"),
    ("quality_not_a_number", lambda t: t + '\n[quality]\nmin_effect_vs_clean = "low"\n',
     r".*quality\.min_effect_vs_clean: expected a number"),
    ("quality_unknown_key", lambda t: t + "\n[quality]\nmin_effct = 0.1\n", r".*quality\.min_effct: unknown key"),
    ("duplicate_models", lambda t: t.replace("models = [1]", "models = [1, 1]"), r".*grid\.models: 1 is listed twice"),
    ("duplicate_flags", lambda t: t.replace("use_novel_names = [false]", "use_novel_names = [false, false]"),
     r".*grid\.use_novel_names: false is listed twice"),
]


@pytest.mark.parametrize("name,change,message", BAD_JOBS, ids=[c[0] for c in BAD_JOBS])
@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry_run"])
def test_bad_job_values_refused_before_work(model, tmp_path, name, change, message, dry):
    out = tmp_path / "out"
    if isinstance(change, dict):
        path = write_job(tmp_path / "job.toml", out, model, FEATURES, **change)
    else:
        path = write_job(tmp_path / "job.toml", out, model, FEATURES)
        text = change(open(path).read())
        open(path, "w").write(text)
    p = call("run", path, *(["--dry-run"] if dry else []), timeout=30)
    assert re.match("tinysql-eap: error: " + message, one_error_line(p)), p.stderr
    assert not out.exists()


def test_broken_checkpoint_and_impossible_cell_refused_before_work(model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    weights = broken / "model.safetensors"
    os.truncate(weights, os.path.getsize(weights) // 2)
    for dry in ([], ["--dry-run"]):
        out = tmp_path / "out"
        path = write_job(tmp_path / "job.toml", out, broken, FEATURES)
        line = one_error_line(call("run", path, *dry))
        assert str(weights) in line, line
        assert not out.exists()
        # a cell that cannot be generated: 19 fields and a field feature without novel names
        path = write_job(tmp_path / "job.toml", out, model, ("EngFieldName",), num_fields=19)
        line = one_error_line(call("run", path, *dry))
        assert re.search(r"cell BM1\.CS1\.EngFieldName\.novel0\.synfield0\.syntable0: cannot be generated", line), line
        assert not out.exists()
        # a missing model is refused by a dry run too
        path = write_job(tmp_path / "job.toml", out, tmp_path / "no-such-model", FEATURES)
        line = one_error_line(call("run", path, *dry))
        assert "no-such-model" in line and "models.BM1.cs1" in line, line
        assert not out.exists()


def test_checkpoint_of_another_family_is_refused(tmp_path):
    # qwen2 weights (q/k/v biases) under a config that says llama: refused naming a bias tensor
    m = tmp_path / "q"
    subprocess.run([BIN, "make-model", "--family", "qwen2", "--layers", "1", "--heads", "2", "--kv-heads", "1",
                    "--d-model", "32", "--vocab-from", os.path.join(os.environ["TEAP_TOKENIZERS"], "qwen2"), "--out", str(m)],
                   check=True, capture_output=True, timeout=60)
    cfg = json.loads((m / "config.json").read_text())
    cfg["model_type"] = "llama"
    cfg["architectures"] = ["LlamaForCausalLM"]
    (m / "config.json").write_text(json.dumps(cfg))
    line = one_error_line(call("inspect", m))
    assert re.search(r"tensor 'model\.layers\.0\.self_attn\.[qkv]_proj\.bias' is not a parameter of a llama model", line), line


def test_output_blocked_by_a_file_names_the_path(model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "cells").write_text("in the way\n")
    line = one_error_line(call("run", write_job(tmp_path / "job.toml", out, model, FEATURES)))
    assert str(out / "cells") in line, line
    assert sorted(os.listdir(out)) in (["cells"], [".lock", "cells"]), os.listdir(out)


def test_a_folder_serves_one_run_at_a_time(model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    path = write_job(tmp_path / "job.toml", out, model, FEATURES)
    with open(out / ".lock", "w") as held:
        held.write("otherhost 4242\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = one_error_line(call("run", path))
        assert "in use by a run on host otherhost, pid 4242" in line, line
        assert not (out / "units").exists()
        # a dry run only reads: allowed while another run works
        assert call("run", path, "--dry-run").returncode == 0
    # shards of one job array share the folder, but not one shard
    with open(out / ".lock", "w") as main, open(out / ".lock.shard-0-of-2", "w") as shard0:
        fcntl.flock(main, fcntl.LOCK_SH | fcntl.LOCK_NB)
        shard0.write("arrayhost 7\n")
        shard0.flush()
        fcntl.flock(shard0, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = one_error_line(call("run", path, "--shard", "0/2"))
        assert "shard 0/2 is already being run by a run on host arrayhost, pid 7" in line, line
        p = call("run", path, "--shard", "1/2")
        assert p.returncode == 0, p.stderr
        line = one_error_line(call("run", path))
        assert "in use by" in line, line
    assert summary(run(path).stdout)[0] == 2  # the lock is free again: shard 0's half is done now


def test_error_printed_once_under_mpirun(model, tmp_path):
    out = tmp_path / "out"
    path = write_job(tmp_path / "job.toml", out, model, FEATURES, batches=1000000000)
    p = subprocess.run(MPIRUN + ["-np", "2", BIN, "run", path], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert p.stderr.count("tinysql-eap: error:") == 1, p.stderr
    # an error found by rank 0 while planning (a missing model), agreed by both ranks
    path = write_job(tmp_path / "job.toml", out, tmp_path / "no-such-model", FEATURES)
    p = subprocess.run(MPIRUN + ["-np", "2", BIN, "run", path], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert p.stderr.count("tinysql-eap: error:") == 1, p.stderr
    assert not out.exists()


def test_status_validates_the_manifest(reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    m = json.loads((out / "sweep.json").read_text())
    m["cells"][0]["n_batches"] = 10 ** 12
    (out / "sweep.json").write_text(json.dumps(m))
    line = one_error_line(call("status", out))
    assert re.search(r"sweep\.json: cells\[0\]\.n_batches: 1000000000000 is not a batch count", line), line


def test_paths_in_the_way_are_named(model, reference, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way\n")
    # make-model into a folder under a file
    line = one_error_line(call("make-model", "--family", "gpt_neo", "--layers", "1", "--heads", "2", "--d-model", "16",
                               "--vocab-from", os.path.join(os.environ["TEAP_TOKENIZERS"], "gpt2"), "--out", blocker / "m"))
    assert str(blocker) in line, line
    # reduce where a cell's folder is a file
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "cells" / CELL)
    (out / "cells" / CELL).write_text("in the way\n")
    line = one_error_line(call("reduce", out))
    assert str(out / "cells" / CELL) in line, line
    # plot --out a file, and two inputs whose pictures would overwrite each other
    results = sorted((reference / "cells" / CELL).glob("*.json"))
    assert results
    line = one_error_line(call("plot", "--out", blocker, results[0]))
    assert str(blocker) in line, line
    twin = tmp_path / "twin"
    twin.mkdir()
    shutil.copy(results[0], twin / results[0].name)
    pictures = tmp_path / "pictures"
    line = one_error_line(call("plot", "--out", pictures, results[0], twin / results[0].name))
    assert "would overwrite" in line and str(results[0]) in line, line
    assert not pictures.exists() or not any(pictures.iterdir())


def test_large_datasets_of_unit_files_are_compressed(tmp_path):
    import h5py
    import numpy as np
    # 4 layers x 16 heads: a 68 x 196 score matrix (53 KB) is compressed; small datasets stay plain.
    m = make_model(tmp_path / "m", d_model=64, layers=4, heads=16)
    out = tmp_path / "out"
    run(write_job(tmp_path / "job.toml", out, m, ["EngTableName"], batches=1))
    path = out / "units" / CELL / "b00000.h5"
    with h5py.File(path, "r") as f:
        assert f["scores"].shape == (68, 196)
        assert f["scores"].compression == "gzip" and f["scores"].shuffle
        assert f["clean_logit_diff"].compression is None
        scores, valid = f["scores"][()], f["valid"][()]
        stored = f["scores"].id.get_storage_size()
    assert (scores[valid == 1] != 0).mean() > 0.9 and not scores[valid == 0].any()
    assert stored < 0.9 * scores.nbytes, (stored, scores.nbytes)  # the zeros off the graph's edges compress
