"""Intra-op threads per rank: the job's settings.threads, else SLURM_CPUS_PER_TASK, else the node's cores
divided among its ranks; every rank's log states the count."""
import os
import re

import pytest

from sweeplib import log_lines, run, write_job


def threads_logged(out):
    return sorted(int(re.search(r"(\d+) intra-op threads", l).group(1)) for l in log_lines(out, r"intra-op threads"))


@pytest.mark.parametrize("job_threads,slurm_cpus,ranks,expected", [
    (0, "1", 1, 1),
    (0, "3", 1, 3),
    (2, "1", 1, 2),
    (0, None, 2, max(1, (os.cpu_count() or 1) // 2)),
], ids=["slurm1", "slurm3", "job2", "cores-per-rank"])
def test_threads(model, tmp_path, job_threads, slurm_cpus, ranks, expected):
    job = write_job(tmp_path / "job.toml", tmp_path / "out", model, ("EngTableName",), batches=1, threads=job_threads)
    run(job, np=ranks, env={"SLURM_CPUS_PER_TASK": slurm_cpus})
    assert threads_logged(tmp_path / "out") == [expected] * ranks
