"""Kill test: one rank of a 2-rank sweep killed with SIGKILL mid-sweep. No file under a final name is
incomplete; a rerun completes the sweep, computes only the missing units, and every unit equals an
uninterrupted run's."""
import os
import signal

import pytest

from sweeplib import (all_files, check_complete, compare_sweeps, log_lines, rank_pids, run, start,
                      stop, summary, unit_files, wait_for_units, write_job)

FEATURES = ("EngTableName", "EngFieldName")
BATCHES = 16  # 2 features x 2 novel x 16 = 64 units of ~0.05 s: mpirun takes ~1 s to end the survivor

KW = dict(features=FEATURES, novel=(False, True), batches=BATCHES, batch_size=16)


@pytest.fixture(scope="module")
def reference(big_model, tmp_path_factory):
    """The uninterrupted run (one rank)."""
    d = tmp_path_factory.mktemp("ref")
    run(write_job(d / "ref.toml", d / "ref", big_model, **KW))
    return d / "ref"


# Rank 0 also holds the work counter that the others pull from.
@pytest.mark.parametrize("victim", [1, 0])
def test_sigkill_one_rank_then_rerun(big_model, reference, tmp_path, victim):
    job = write_job(tmp_path / "job.toml", tmp_path / "out", big_model, **KW)
    out = str(tmp_path / "out")
    total = len(FEATURES) * 2 * BATCHES

    proc = start(job, np=2)
    try:
        wait_for_units(out, 4, proc)
        pids = rank_pids(job)
        assert sorted(pids) == [0, 1], f"rank processes of {job}: {pids}"
        os.kill(pids[victim], signal.SIGKILL)
        proc.communicate(timeout=60)  # mpirun notices and ends the other rank
    finally:
        stop(proc)
    assert proc.returncode != 0

    # Whatever the kill interrupted carries a temporary name; every file under a final name is whole.
    finished = unit_files(out)
    assert 4 <= len(finished) < total, f"{len(finished)} of {total} units after the kill: the sweep was not cut mid-way"
    for rel in all_files(out):
        if ".tmp." in os.path.basename(rel):
            continue
        assert rel.endswith(".h5"), f"unexpected file {rel}"
        check_complete(os.path.join(out, rel))
    done_lines = len(log_lines(out, r"unit .* done in"))

    p = run(job, np=2)
    assert summary(p.stdout) == (total - len(finished), len(finished), 0, total)
    # the rerun's own log lines: one per missing unit
    assert len(log_lines(out, r"unit .* done in")) - done_lines == total - len(finished)
    assert not [f for f in all_files(out) if ".tmp." in f], "temporary files left after the rerun"
    assert compare_sweeps(reference, out, exact=True) == total
