"""Resume: a rerun skips finished units and redoes only missing ones; a rerun with other settings into
the same folder is refused naming what differs; --dry-run lists cells and done counts; `status OUT`
summarises the folder."""
import os
import re
import subprocess

from sweeplib import BIN, run, summary, unit_files, write_job

FEATURES = ("EngTableName", "EngFieldName")


def test_resume_dry_run_status_and_refusal(model, tmp_path):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", out, model, FEATURES)
    # a dry run of a fresh job: every cell 0/2, nothing written
    p = run(job, args=["--dry-run"])
    assert re.search(r"BM1\.CS1\.EngTableName\.novel0\.synfield0\.syntable0 +0/2 batches done", p.stdout), p.stdout
    assert "2 cells, 0 of 4 units done, 4 to do" in p.stdout
    assert not out.exists()

    assert summary(run(job).stdout) == (4, 0, 0, 4)
    assert summary(run(job).stdout) == (0, 4, 0, 4)  # nothing to redo

    # one unit lost: the dry run and status show it, the rerun redoes that one only
    gone = out / "units" / "BM1.CS1.EngFieldName.novel0.synfield0.syntable0" / "b00001.h5"
    os.remove(gone)
    p = run(job, args=["--dry-run"])
    assert re.search(r"EngFieldName\.novel0\.synfield0\.syntable0 +1/2 batches done", p.stdout), p.stdout
    assert re.search(r"EngTableName\.novel0\.synfield0\.syntable0 +2/2 batches done", p.stdout), p.stdout
    assert "2 cells, 3 of 4 units done, 1 to do" in p.stdout
    s = subprocess.run([BIN, "status", str(out)], capture_output=True, text=True)
    assert s.returncode == 0, s.stderr
    assert re.search(r"BM1\.CS1\.EngFieldName\.novel0\.synfield0\.syntable0 +1 +0 +1$", s.stdout, re.M), s.stdout
    assert re.search(r"units: 3 done, 0 failed, 1 missing, of 4; cells complete: 1 of 2; compute time [0-9.]+ s", s.stdout), s.stdout
    assert summary(run(job).stdout) == (1, 3, 0, 4)
    assert gone.exists()
    s = subprocess.run([BIN, "status", str(out)], capture_output=True, text=True)
    assert "units: 4 done, 0 failed, 0 missing, of 4; cells complete: 2 of 2" in s.stdout, s.stdout

    # another seed into the same folder: refused, one line naming the setting, nothing touched
    before = {f: os.stat(out / f).st_mtime_ns for f in unit_files(out)}
    manifest = (out / "sweep.json").read_text()
    other = write_job(tmp_path / "other.toml", out, model, FEATURES, seed=5)
    for args in ([], ["--dry-run"]):
        p = run(other, args=args, check=False)
        assert p.returncode == 2, p
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "sweep.json: this folder holds results of other settings" in p.stderr
        assert "seed '0' -> '5'" in p.stderr, p.stderr
    assert (out / "sweep.json").read_text() == manifest
    assert {f: os.stat(out / f).st_mtime_ns for f in unit_files(out)} == before

    # a status of something that is no sweep folder
    s = subprocess.run([BIN, "status", str(tmp_path)], capture_output=True, text=True)
    assert s.returncode == 2 and "sweep.json" in s.stderr, s
