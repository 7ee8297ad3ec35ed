"""SIGTERM (SLURM's pre-emption signal) and SIGUSR1 (what slurm/*.sbatch forward) stop a sweep between
units: the run exits 1 with "stopped by a signal", leaves only whole units, and a rerun completes it."""
import os
import signal

import pytest

from sweeplib import (all_files, check_complete, compare_sweeps, log_lines, rank_pids, run, start, stop, summary,
                      unit_files, wait_for_units, write_job)

KW = dict(features=("EngTableName", "EngFieldName"), novel=(False, True), batches=6, batch_size=16)
TOTAL = 24


@pytest.fixture(scope="module")
def reference(big_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    run(write_job(d / "ref.toml", d / "ref", big_model, **KW))
    return d / "ref"


# SIGTERM to every rank, as SLURM signals every task of a step; SIGUSR1 to a rank alone; SIGUSR1 to
# mpirun, which forwards it to its ranks (slurm/sweep.sbatch with TEAP_LAUNCHER=mpirun).
@pytest.mark.parametrize("ranks,sig,to_mpirun", [(2, signal.SIGTERM, False), (1, signal.SIGUSR1, False),
                                                 (2, signal.SIGUSR1, True)],
                         ids=["2ranks-TERM", "alone-USR1", "mpirun-USR1"])
def test_signal_stops_between_units_and_resume_completes(big_model, reference, tmp_path, ranks, sig, to_mpirun):
    job = write_job(tmp_path / "job.toml", tmp_path / "out", big_model, **KW)
    out = str(tmp_path / "out")
    proc = start(job, np=ranks)
    try:
        wait_for_units(out, 4, proc)
        pids = rank_pids(job)
        assert len(pids) == ranks, pids
        for pid in [proc.pid] if to_mpirun else pids.values():
            os.kill(pid, sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 1, f"exit {proc.returncode}\n{stdout}\n{stderr}"
    assert "stopped by a signal" in stderr, stderr
    now, before, failed, total = summary(stdout)
    assert "(stopped by a signal: run again to resume)" in stdout
    finished = unit_files(out)
    assert (before, failed, total) == (0, 0, TOTAL) and now == len(finished) and 4 <= now < TOTAL, stdout
    # every rank left its loop between units and said so; every unit it finished is whole
    assert len(log_lines(out, r"finished: .* \(stopped by a signal\)")) == ranks
    assert len(log_lines(out, r"unit .* done in")) == len(finished)
    assert not [f for f in all_files(out) if not f.endswith(".h5")], all_files(out)
    for rel in finished:
        check_complete(os.path.join(out, rel))
    assert not os.listdir(os.path.join(out, "failed"))

    p = run(job, np=ranks)
    assert summary(p.stdout) == (TOTAL - len(finished), len(finished), 0, TOTAL)
    assert compare_sweeps(reference, out, exact=True) == TOTAL
