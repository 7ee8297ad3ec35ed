"""Issue 17 in a sweep: a memory budget scores batches in micro-batches with the same results (to
float tolerance, and the same settings hash, so a sweep resumes across budgets), --dry-run prints
each model's estimated peak per rank, and the ranks of a node share one copy of the weights (mapped
read-only from the checkpoint, or from one conversion in the node's cache)."""
import glob
import os
import re
import subprocess

from sweeplib import BIN, TOKENIZERS, compare_sweeps, log_lines, run, summary, write_job

FEATURES = ("EngTableName", "EngFieldName")


def dry_memory_line(job):
    p = subprocess.run([BIN, "run", str(job), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stdout.splitlines() if l.startswith("memory: ")]
    assert len(lines) == 1, p.stdout
    return lines[0]


def micro_budget(model, tmp_path):
    """The smallest budget (by 256 KiB steps) whose micro-batches hold 2 to 6 of a batch's 8 prompts."""
    for kib in range(512, 64 << 10, 256):
        job = write_job(tmp_path / "probe.toml", tmp_path / "probe", model, FEATURES, memory_budget=f"{kib}KiB")
        p = subprocess.run([BIN, "run", job, "--dry-run"], capture_output=True, text=True, timeout=60)
        m = re.search(r"in micro-batches of (\d+) of the batch's 8 prompts", p.stdout)
        if m and 2 <= int(m.group(1)) <= 6:
            return f"{kib}KiB", int(m.group(1))
        assert "for the batch of 8 prompts" not in p.stdout, "no budget gives micro-batches of 2 to 6 prompts"
    raise AssertionError("no budget gives micro-batches")


def test_dry_run_prints_the_estimated_peak_per_rank(model, tmp_path):
    line = dry_memory_line(write_job(tmp_path / "job.toml", tmp_path / "out", model, FEATURES))
    assert re.match(r"memory: .*m64: about [0-9.]+ MiB resident per rank .* weights [0-9.]+ MiB mapped, shared by the node's "
                    r"ranks, work [0-9.]+ MiB for the batch of 8 prompts; budget [0-9.]+ (M|G)iB per rank$", line), line
    assert not (tmp_path / "out").exists()


def test_micro_batches_give_the_batch_scores(model, tmp_path):
    budget, micro = micro_budget(model, tmp_path)
    whole = write_job(tmp_path / "whole.toml", tmp_path / "whole", model, FEATURES)
    parts = write_job(tmp_path / "parts.toml", tmp_path / "parts", model, FEATURES, memory_budget=budget)
    assert summary(run(whole).stdout) == (4, 0, 0, 4)
    assert summary(run(parts).stdout) == (4, 0, 0, 4)
    assert log_lines(tmp_path / "parts", rf"micro-batches of {micro} of 8 prompts"), "no micro-batches were used"
    assert not log_lines(tmp_path / "whole", "micro-batches")
    # same units (same settings hash: a sweep may resume under another budget), scores to float tolerance
    assert compare_sweeps(tmp_path / "whole", tmp_path / "parts", exact=False) == 4


def test_two_ranks_map_one_copy_of_the_weights(model, tmp_path):
    job = write_job(tmp_path / "job.toml", tmp_path / "out", model, FEATURES)
    run(job, np=2)
    mapped = log_lines(tmp_path / "out", r"MiB of weights mapped read-only from .*model\.safetensors")
    assert len(mapped) == 2, mapped  # both ranks, the checkpoint's own file


def test_two_ranks_share_one_conversion(tmp_path):
    bf16 = tmp_path / "bf16"
    subprocess.run([BIN, "make-model", "--family", "gpt_neo", "--layers", "2", "--heads", "4", "--d-model", "64", "--bf16",
                    "--vocab-from", os.path.join(TOKENIZERS, "gpt2"), "--out", str(bf16)], check=True, stdout=subprocess.DEVNULL)
    cache = tmp_path / "cache"
    job = write_job(tmp_path / "job.toml", tmp_path / "out", bf16, FEATURES)
    run(job, np=2, env={"TEAP_WEIGHTS_CACHE": str(cache)})
    converted = glob.glob(str(cache / "*" / "model.safetensors"))
    assert len(converted) == 1, os.listdir(cache)
    mapped = log_lines(tmp_path / "out", r"MiB of weights mapped read-only from " + re.escape(converted[0]))
    assert len(mapped) == 2, log_lines(tmp_path / "out", "loaded")
    # one rank alone converts privately (nothing written to the cache)
    alone = write_job(tmp_path / "alone.toml", tmp_path / "alone", bf16, FEATURES)
    run(alone, env={"TEAP_WEIGHTS_CACHE": str(tmp_path / "cache1")})
    assert not (tmp_path / "cache1").exists()
    assert log_lines(tmp_path / "alone", r"0 MiB of weights mapped read-only \(private copies\)")
