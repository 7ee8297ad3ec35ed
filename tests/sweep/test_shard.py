"""`run --shard K/N` (job arrays without a shared MPI world): concurrent shards into one folder take
disjoint shares, together the whole sweep, equal to an unsharded run."""
import re
import subprocess

import pytest

from sweeplib import BIN, compare_sweeps, log_lines, run, start, summary, write_job

FEATURES = ("EngTableName", "EngFieldName", "DefTableName")


def test_three_shards_concurrently(model, tmp_path):
    ref = write_job(tmp_path / "ref.toml", tmp_path / "ref", model, FEATURES, batches=3)
    job = write_job(tmp_path / "job.toml", tmp_path / "out", model, FEATURES, batches=3)
    procs = [start(job, args=["--shard", f"{k}/3"]) for k in range(3)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    for stdout, stderr, rc in results:
        assert rc == 0, stderr
        assert summary(stdout) == (3, 0, 0, 3), stdout  # 9 units: 3 per shard
    # each unit computed once, by the shard that owns its ordinal (cell index x batches + batch)
    done = log_lines(tmp_path / "out", r"unit .* done in")
    assert len(done) == 9
    cells = [f"BM1.CS1.{f}.novel0.synfield0.syntable0" for f in FEATURES]
    for path in (tmp_path / "out" / "logs").glob("rank-0.shard-*.log"):
        k = int(re.search(r"shard-(\d+)", path.name).group(1))
        for m in re.finditer(r"unit (\S+) batch (\d+) done", path.read_text()):
            assert (cells.index(m.group(1)) * 3 + int(m.group(2))) % 3 == k, m.group(0)
    run(ref)
    assert compare_sweeps(tmp_path / "ref", tmp_path / "out", exact=True) == 9
    # the whole sweep is there: an unsharded rerun has nothing to do
    assert summary(run(job).stdout) == (0, 9, 0, 9)


@pytest.mark.parametrize("shard", ["3/3", "-1/2", "1/0", "x", "1/2/3"])
def test_bad_shard(model, tmp_path, shard):
    job = write_job(tmp_path / "job.toml", tmp_path / "out", model)
    p = subprocess.run([BIN, "run", job, "--shard", shard], capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "--shard" in p.stderr, p
    assert not (tmp_path / "out").exists()
